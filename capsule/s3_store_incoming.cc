// The S3 store's incoming capsule: parts uploaded from the spool, resumed, completed, aborted.
#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "capsule/format.h"
#include "capsule/s3_store_internal.h"

namespace bunker::capsule::internal_s3_store {

absl::Status S3Incoming::StartUpload() {
  // A pending marker first: a crash between creating the upload and journaling it leaves this
  // marker, and the next start aborts the upload it cannot name (spec/STORE.md "Receiving" 6).
  absl::Status marked = PutMarker(kPending);
  if (!marked.ok()) return marked;
  absl::StatusOr<std::string> upload = shared_->o.client->CreateMultipartUpload(
      at_, {{"bunker-capsule", id_}, {"bunker-daemon", shared_->o.daemon_id}});
  if (!upload.ok()) return upload.status();
  if (!IsToken(*upload)) return absl::UnavailableError("S3: the server sent a malformed upload id");
  absl::Status s = journal_.Start(*upload, per_part_);
  if (!s.ok()) return s;
  shared_->Log(absl::StrCat("s3: upload of capsule ", id_, " started (", part_count_, " parts)"));
  return absl::OkStatus();
}

absl::Status S3Incoming::Resume(absl::Span<const crypto::PublicIdentity> trusted) {
  std::lock_guard<std::mutex> lock(mu_);
  absl::Status s = journal_.Load();
  if (!s.ok()) return s;
  s3::Client& client = *shared_->o.client;
  if (!journal_.upload_id().empty()) {
    // Found again through the journal; the server's list of parts must agree with it, else
    // (the upload was aborted, or parts are missing) the capsule is received afresh: chunks of
    // journaled parts were released from the spool.
    // The parts must also have been cut with this daemon's part layout (chunks per part): a
    // part of another layout covers other bytes, and each part's size must be that of the part
    // this layout expects (spec/STORE.md "Receiving").
    const bool same_layout = journal_.chunks_per_part() == per_part_;
    absl::StatusOr<std::vector<s3::Part>> listed =
        same_layout ? client.ListParts(at_, journal_.upload_id())
                    : absl::StatusOr<std::vector<s3::Part>>(absl::FailedPreconditionError(
                          "the upload was cut with another part layout"));
    bool agrees = listed.ok();
    if (listed.ok()) {
      std::map<int, const s3::Part*> on_server;
      for (const s3::Part& p : *listed) on_server[p.number] = &p;
      for (const auto& [n, etag] : journal_.parts()) {
        auto it = on_server.find(n);
        if (static_cast<uint64_t>(n) > part_count_ || it == on_server.end() ||
            it->second->etag != etag || it->second->size != PartEnd(n) - PartBegin(n)) {
          agrees = false;
        }
      }
    } else if (same_layout && !absl::IsNotFound(listed.status())) {
      return listed.status();
    }
    if (!agrees) {
      shared_->Log(absl::StrCat("s3: upload of capsule ", id_,
                                same_layout ? " is gone or disagrees with its journal"
                                            : " was cut with another part layout",
                                "; receiving it afresh"));
      if (listed.ok() || !same_layout) {
        (void)client.AbortMultipartUpload(at_, journal_.upload_id());
      }
      s = spool_->Abandon();  // the spool first: see Cleanup
      if (!s.ok()) return s;
      journal_.Remove();
      // The caller made a fresh spool impossible to reuse: signal it.
      return absl::AbortedError("restart");
    }
    shared_->Log(absl::StrCat("s3: upload of capsule ", id_, " resumed: ", journal_.parts().size(),
                              " of ", part_count_, " parts already stored"));
  } else if (spool_->received_count() > 0) {
    // The journal is written before any chunk is received: a spool with chunks but no upload
    // journal lost it (a crash during cleanup), and chunks of stored parts were released from
    // the spool. It is dropped, so that all chunks are asked for again.
    shared_->Log(absl::StrCat("s3: capsule ", id_, " has a spool without an upload journal; "
                              "receiving it afresh"));
    s = spool_->Abandon();
    if (!s.ok()) return s;
    return absl::AbortedError("restart");
  } else {
    s = StartUpload();
    if (!s.ok()) return s;
  }
  (void)trusted;
  // The marker names this daemon's upload, so that a later start can abort it if its journal
  // is lost (spec/STORE.md "Receiving"). Written again on every resume.
  return PutMarker(journal_.upload_id());
}

absl::Status S3Incoming::PutMarker(const std::string& upload_id) const {
  absl::Status s = shared_->RecordBoot();
  if (!s.ok()) return s;
  const std::string body = shared_->MarkerBody(upload_id);
  return shared_->o.client->Put(
      shared_->MarkerOf(id_),
      absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(body.data()), body.size()));
}

std::vector<int> S3Incoming::ReadyParts() const {
  const std::vector<uint64_t> missing = spool_->Missing();
  std::vector<bool> have(spool_->chunk_count(), true);
  for (uint64_t i : missing) have[i] = false;
  std::vector<int> ready;
  for (uint64_t p = 1; p <= part_count_; ++p) {
    const int n = static_cast<int>(p);
    if (journal_.parts().count(n) != 0 || queued_.count(n) != 0) continue;
    bool complete = true;
    for (uint64_t i = FirstChunk(n); i < EndChunk(n) && complete; ++i) complete = have[i];
    if (complete) ready.push_back(n);
  }
  return ready;
}

absl::StatusOr<std::string> S3Incoming::UploadOne(int n, const std::string& upload_id,
                                                  std::vector<uint8_t>& buf,
                                                  std::vector<uint64_t>& bad,
                                                  const s3::Cancellation* cancel) const {
  buf.resize(PartEnd(n) - PartBegin(n));
  absl::Status s = spool_->ReadAt(PartBegin(n), absl::MakeSpan(buf));
  if (!s.ok()) return s;
  // Each chunk was checked when it arrived; it is checked again as it leaves the spool, so that
  // nothing but chunks of the signed table ever goes into the object (a spool damaged on disk
  // fails the upload instead of storing a corrupt capsule). The bytes are in memory anyway.
  const Geometry& g = spool_->geometry();
  for (uint64_t i = FirstChunk(n); i < EndChunk(n); ++i) {
    s = spool_->CheckChunk(i, absl::MakeConstSpan(buf).subspan(g.ChunkOffset(i) - PartBegin(n),
                                                               g.CipherSize(i)));
    if (!s.ok()) bad.push_back(i);
  }
  if (!bad.empty()) {
    return absl::DataLossError(absl::StrCat("chunk ", bad.front(), " of capsule ", id_,
                                            " changed in the spool after it was received"));
  }
  absl::StatusOr<std::string> etag = shared_->o.client->UploadPart(at_, upload_id, n, buf, cancel);
  if (etag.ok() && !IsToken(*etag)) return absl::UnavailableError("S3: the server sent a malformed ETag");
  return etag;
}

absl::Status S3Incoming::Refuse(const std::vector<uint64_t>& bad) {
  absl::Status s = spool_->Forget(bad);
  shared_->Log(absl::StrCat("s3: ", bad.size(), " chunk(s) of capsule ", id_, " (first: ",
                            bad.front(), ") changed in the spool after they were received",
                            s.ok() ? "; asked for again" : "; taking them back failed"));
  if (!s.ok()) return s;
  std::lock_guard<std::mutex> lock(refused_mu_);
  refused_.insert(refused_.end(), bad.begin(), bad.end());
  return absl::OkStatus();
}

absl::Status S3Incoming::Stored(int n, const std::string& etag) {
  // Journal what is stored, then free its chunks from the spool. The header and the tail stay
  // (a resume compares the prelude).
  absl::Status s = journal_.Add(n, etag);
  if (!s.ok()) return s;
  const Geometry& g = spool_->geometry();
  spool_->Release(g.ChunkOffset(FirstChunk(n)),
                  g.ChunkOffset(EndChunk(n)) - g.ChunkOffset(FirstChunk(n)));
  shared_->Log(absl::StrCat("s3: part ", n, " of ", part_count_, " of capsule ", id_, " uploaded"));
  return absl::OkStatus();
}

void S3Incoming::QueueReadyParts() {
  for (int n : ReadyParts()) {
    queue_.push_back(n);
    queued_.insert(n);
  }
  if (queue_.empty()) return;
  // Part buffers in flight stay under kMaxPartBufferBytes.
  const uint64_t largest = PartEnd(1) - PartBegin(1);
  const size_t want = static_cast<size_t>(std::max<uint64_t>(
      1, std::min<uint64_t>(static_cast<uint64_t>(std::max(1, shared_->o.upload_threads)),
                            kMaxPartBufferBytes / std::max<uint64_t>(1, largest))));
  while (uploaders_.size() < want) uploaders_.emplace_back([this] { Uploader(); });
  work_cv_.notify_all();
}

void S3Incoming::Uploader() {
  std::vector<uint8_t> buf;
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    work_cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
    if (stopping_) return;
    const int n = queue_.front();
    queue_.pop_front();
    ++busy_;
    const std::string upload_id = journal_.upload_id();
    lock.unlock();
    std::vector<uint64_t> bad;
    absl::StatusOr<std::string> etag = UploadOne(n, upload_id, buf, bad, &stop_uploads_);
    // Damaged chunks are taken back and asked for again; the part waits for them.
    absl::Status refused = bad.empty() ? absl::OkStatus() : Refuse(bad);
    lock.lock();
    --busy_;
    queued_.erase(n);
    absl::Status s = etag.ok() ? Stored(n, *etag) : bad.empty() ? etag.status() : refused;
    if (!s.ok() && upload_error_.ok()) upload_error_ = s;
    if (queue_.empty() && busy_ == 0) idle_cv_.notify_all();
  }
}

void S3Incoming::StopUploaders() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    queue_.clear();
    queued_.clear();
  }
  // An upload the object store holds (a stalled server, minutes of timeouts and retries) must
  // not hold up whoever drops the capsule, nor a daemon that stops.
  stop_uploads_.Cancel();
  work_cv_.notify_all();
  for (std::thread& t : uploaders_) t.join();
  uploaders_.clear();
}

absl::Status S3Incoming::UploadReadyParts() {
  const std::vector<int> ready = ReadyParts();
  if (ready.empty()) return absl::OkStatus();
  std::vector<uint8_t> buf;
  for (int n : ready) {
    std::vector<uint64_t> bad;
    absl::StatusOr<std::string> etag = UploadOne(n, journal_.upload_id(), buf, bad, nullptr);
    if (!bad.empty()) {
      // Not fatal to the capsule: those chunks are missing again, and a resend completes it.
      absl::Status refused = Refuse(bad);
      if (!refused.ok()) return refused;
      return absl::UnavailableError(absl::StrCat(
          bad.size(), " chunk(s) of capsule ", id_,
          " were damaged in the spool before upload; they are asked for again"));
    }
    if (!etag.ok()) return etag.status();
    absl::Status s = Stored(n, *etag);
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> S3Incoming::Finish(const std::function<absl::Status()>& before_name) {
  std::unique_lock<std::mutex> lock(mu_);
  if (!finished_.empty()) return finished_;
  // Parts being uploaded in the background land first; what failed there is tried again here.
  idle_cv_.wait(lock, [this] { return queue_.empty() && busy_ == 0; });
  upload_error_ = absl::OkStatus();
  if (spool_->received_count() != spool_->chunk_count()) {
    return absl::FailedPreconditionError(
        absl::StrCat(spool_->chunk_count() - spool_->received_count(), " of ",
                     spool_->chunk_count(), " chunks are missing"));
  }
  // No chunk is read back: each was checked before it was written to the spool, and a part is
  // uploaded only from chunks journaled as durable there (spec/TRANSFER.md "Push").
  absl::Status s = UploadReadyParts();
  if (!s.ok()) return s;
  if (journal_.parts().size() != part_count_) {
    return absl::InternalError("parts are missing from a complete upload");
  }
  s3::Client& client = *shared_->o.client;
  const std::string url = s3::ToUrl(at_);
  // Swift has no conditional PUT: look first. An object under the key that is another capsule
  // claiming this id is refused. One that is the very same capsule (another daemon stored it
  // meanwhile) does not stop us: this daemon completes its own upload, which it verified chunk
  // by chunk, so that its receipt names what it verified; the object is replaced with identical
  // bytes (spec/STORE.md "Scaling out").
  absl::StatusOr<bool> same =
      SamePreludeStored(client, at_, spool_->prelude(), spool_->geometry().FileSize());
  if (!same.ok() && !absl::IsNotFound(same.status())) return same.status();
  if (same.ok() && !*same) {
    // Refused: this upload can never complete; it is aborted rather than left behind.
    (void)client.AbortMultipartUpload(at_, journal_.upload_id());
    (void)Cleanup();
    shared_->Log(absl::StrCat("s3: upload of capsule ", id_, " aborted: another capsule with "
                              "that id is stored"));
    return absl::DataLossError(
        absl::StrCat("a different capsule with id ", id_, " is already stored here"));
  }
  if (before_name) {
    s = before_name();
    if (!s.ok()) return s;
  }
  std::vector<s3::Part> parts;
  for (const auto& [n, etag] : journal_.parts()) parts.push_back({n, etag, 0});
  absl::StatusOr<std::string> completed =
      client.CompleteMultipartUpload(at_, journal_.upload_id(), parts);
  std::string our_etag;
  if (completed.ok()) {
    our_etag = *completed;
  } else if (absl::IsNotFound(completed.status())) {
    // A completion that succeeded but whose reply was lost is retried and finds the upload
    // gone: accepted if the object under the key is this capsule (same size, header, tail).
    absl::StatusOr<bool> mine =
        SamePreludeStored(client, at_, spool_->prelude(), spool_->geometry().FileSize());
    if (mine.ok() && !*mine) {
      // Another object holds the key: this upload can never be completed, nor the capsule be
      // received again (Begin finds the key taken), so nothing local is of use any more. As
      // for a lost race, nothing is deleted.
      (void)Cleanup();
      shared_->Log(absl::StrCat("s3: the upload of capsule ", id_, " is gone (NoSuchUpload) and "
                                "the object under its key is not this capsule"));
      return absl::DataLossError(absl::StrCat("the upload of capsule ", id_, " is gone and "
                                              "another object is stored under its key (its "
                                              "receipt is void)"));
    }
    // Nothing there (the upload was aborted): the spool and journals stay, and a re-offer finds
    // the upload gone and receives the capsule afresh.
    if (!mine.ok()) return completed.status();
  } else {
    return completed.status();
  }
  // The object must be ours: the ETag the completion named (another daemon's completion just
  // after ours replaces it), and exactly the capsule's size; an object of ours of another size
  // (parts of another layout) is deleted. The receipt is already on record: a failure names
  // that.
  absl::StatusOr<s3::ObjectInfo> info = client.Head(at_);
  if (!info.ok()) {
    return absl::Status(info.status().code(),
                        absl::StrCat("capsule ", id_, " was completed but cannot be checked "
                                     "(its receipt is void): ", info.status().message()));
  }
  if (our_etag.empty() || info->etag != our_etag) {
    // Lost a race: the object under the key is not the one this daemon just completed. Or the
    // completion named no ETag (a lost reply, or a server that sends none): then which
    // completion made the object cannot be told, and it is accepted only as a lost race is, if
    // it is this capsule (fail closed).
    absl::StatusOr<bool> theirs =
        SamePreludeStored(client, at_, spool_->prelude(), spool_->geometry().FileSize());
    if (!theirs.ok() || !*theirs) {
      (void)Cleanup();
      shared_->Log(absl::StrCat("s3: capsule ", id_, " was replaced right after this daemon "
                                "completed it, by an object that is not this capsule"));
      return absl::DataLossError(absl::StrCat(
          "capsule ", id_, " was replaced in the store right after it was completed, by "
          "another object (its receipt is void)"));
    }
    shared_->Log(absl::StrCat("s3: capsule ", id_, " stored as ", url,
                              our_etag.empty() ? " (the completion named no ETag; the object "
                                                 "has this capsule's size, header and tail)"
                                               : "; another receiver completed an identical "
                                                 "copy right after"));
  } else if (info->size != spool_->geometry().FileSize()) {
    absl::Status d = client.Delete(at_);
    (void)Cleanup();
    shared_->Log(absl::StrCat("s3: capsule ", id_, " was assembled as ", info->size,
                              " bytes instead of ", spool_->geometry().FileSize(),
                              d.ok() ? "; the object was deleted" : "; deleting it failed"));
    return absl::DataLossError(absl::StrCat(
        "the object store assembled capsule ", id_, " as ", info->size, " bytes instead of ",
        spool_->geometry().FileSize(), " (its receipt is void)",
        d.ok() ? "; the object was deleted" : "; deleting the object failed"));
  } else {
    shared_->Log(absl::StrCat("s3: capsule ", id_, " stored as ", url,
                              same.ok() ? " (replacing an identical copy another receiver "
                                          "stored meanwhile)"
                                        : ""));
  }
  // Stored: a failed cleanup (spool, journal, marker) is only logged; a later start aborts
  // what is left behind.
  finished_ = url;
  s = Cleanup();
  if (!s.ok()) {
    shared_->Log(absl::StrCat("s3: capsule ", id_, " stored, but cleaning up after it failed: ",
                              s.message()));
  }
  return url;
}

absl::Status S3Incoming::Cleanup() {
  // The spool goes first: a spool left without its parts journal (a crash in between) would
  // claim chunks that were released from it; Resume drops such a spool.
  absl::Status s = spool_->Abandon();
  journal_.Remove();
  absl::Status d = shared_->o.client->Delete(shared_->MarkerOf(id_));
  return s.ok() ? d : s;
}

absl::Status S3Incoming::Abandon() {
  StopUploaders();
  std::lock_guard<std::mutex> lock(mu_);
  absl::Status s;
  if (!journal_.upload_id().empty()) {
    s = shared_->o.client->AbortMultipartUpload(at_, journal_.upload_id());
    if (absl::IsNotFound(s)) s = absl::OkStatus();
    shared_->Log(absl::StrCat("s3: upload of capsule ", id_, " aborted"));
  }
  absl::Status c = Cleanup();
  return s.ok() ? c : s;
}

}  // namespace bunker::capsule::internal_s3_store
