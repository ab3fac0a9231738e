#include "capsule/s3_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <set>
#include <cerrno>
#include <map>
#include <mutex>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "capsule/format.h"
#include "capsule/io.h"
#include "crypto/secret.h"
#include "crypto/sha256.h"

namespace bunker::capsule {

uint64_t ChunksPerPart(const Geometry& g, uint64_t min_part_size) {
  const uint64_t chunk = std::max<uint64_t>(1, g.chunk_size);
  uint64_t n = std::max<uint64_t>(1, (min_part_size + chunk - 1) / chunk);
  // Never more than kMaxParts parts.
  n = std::max<uint64_t>(n, (g.chunk_count + kMaxParts - 1) / kMaxParts);
  return n;
}

namespace {

constexpr char kSuffix[] = ".capsule";
// The most bytes of part buffers one Sync holds at once (more threads for small parts).
constexpr uint64_t kMaxPartBufferBytes = uint64_t{256} << 20;

// Upload ids and ETags come from the server: printable, no spaces, bounded, before they go into
// a journal line or a request.
bool IsToken(const std::string& s) {
  if (s.empty() || s.size() > 1024) return false;
  for (char c : s) {
    if (c < 0x21 || c > 0x7e) return false;
  }
  return true;
}

bool IsDaemonId(const std::string& s) {
  if (s.empty() || s.size() > 64) return false;
  return s.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789-") == std::string::npos;
}

// The journal of one upload, next to the spool's chunk journal: text lines, appended and
// fsynced: "upload <upload id> <chunks per part>" first (the part layout the parts were cut
// with), then "part <number> <etag>" for each part uploaded. A torn last line (no newline) is
// ignored.
class PartsJournal {
 public:
  explicit PartsJournal(std::string path) : path_(std::move(path)) {}

  absl::Status Load() {
    upload_id_.clear();
    chunks_per_part_ = 0;
    parts_.clear();
    absl::StatusOr<std::string> text = ReadSmall();
    if (absl::IsNotFound(text.status())) return absl::OkStatus();
    if (!text.ok()) return text.status();
    size_t end = text->rfind('\n');
    if (end == std::string::npos) return absl::OkStatus();
    for (absl::string_view line : absl::StrSplit(absl::string_view(*text).substr(0, end), '\n')) {
      std::vector<std::string> f = absl::StrSplit(line, ' ');
      int n = 0;
      uint64_t per_part = 0;
      if ((f.size() == 2 || f.size() == 3) && f[0] == "upload" && IsToken(f[1]) &&
          upload_id_.empty()) {
        // Without a layout (a journal of an earlier version) the upload is only aborted.
        upload_id_ = f[1];
        if (f.size() == 3 && absl::SimpleAtoi(f[2], &per_part) && per_part >= 1) {
          chunks_per_part_ = per_part;
        }
      } else if (f.size() == 3 && f[0] == "part" && absl::SimpleAtoi(f[1], &n) && n >= 1 &&
                 static_cast<uint64_t>(n) <= kMaxParts && IsToken(f[2]) && !upload_id_.empty()) {
        parts_[n] = f[2];
      } else {
        // A damaged journal (or one without a part layout) costs the upload, not the capsule:
        // start over. The upload id, if read, is kept so that the upload can be aborted.
        chunks_per_part_ = 0;
        parts_.clear();
        return absl::OkStatus();
      }
    }
    return absl::OkStatus();
  }

  const std::string& upload_id() const { return upload_id_; }
  // Chunks per part of the journaled upload; 0 when the journal is unusable (no layout, or
  // damaged), which never equals a real layout.
  uint64_t chunks_per_part() const { return chunks_per_part_; }
  const std::map<int, std::string>& parts() const { return parts_; }

  // Starts the journal afresh for `upload_id`.
  absl::Status Start(const std::string& upload_id, uint64_t chunks_per_part) {
    int fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return ErrnoStatus("cannot create the upload journal", errno);
    Fd closer(fd);
    const std::string line = absl::StrCat("upload ", upload_id, " ", chunks_per_part, "\n");
    absl::Status s = WriteAll(fd, absl::MakeConstSpan(
                                      reinterpret_cast<const uint8_t*>(line.data()), line.size()));
    if (s.ok() && ::fsync(fd) != 0) s = ErrnoStatus("cannot sync the upload journal", errno);
    if (!s.ok()) return s;
    upload_id_ = upload_id;
    chunks_per_part_ = chunks_per_part;
    parts_.clear();
    return SyncDirectory(path_.substr(0, path_.rfind('/')));
  }

  absl::Status Add(int number, const std::string& etag) {
    int fd = ::open(path_.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
    if (fd < 0) return ErrnoStatus("cannot open the upload journal", errno);
    Fd closer(fd);
    const std::string line = absl::StrCat("part ", number, " ", etag, "\n");
    absl::Status s = WriteAll(fd, absl::MakeConstSpan(
                                      reinterpret_cast<const uint8_t*>(line.data()), line.size()));
    if (s.ok() && ::fsync(fd) != 0) s = ErrnoStatus("cannot sync the upload journal", errno);
    if (!s.ok()) return s;
    parts_[number] = etag;
    return absl::OkStatus();
  }

  void Remove() {
    ::unlink(path_.c_str());
    upload_id_.clear();
    chunks_per_part_ = 0;
    parts_.clear();
  }

 private:
  absl::StatusOr<std::string> ReadSmall() {
    int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) return ErrnoStatus("cannot open the upload journal", errno);
    Fd closer(fd);
    std::string out;
    char buf[65536];
    for (;;) {
      ssize_t n = ::read(fd, buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return ErrnoStatus("cannot read the upload journal", errno);
      if (n == 0) break;
      out.append(buf, static_cast<size_t>(n));
      // At most kMaxParts lines of bounded length.
      if (out.size() > kMaxParts * 1100 + 2048) {
        return absl::DataLossError("the upload journal is too large");
      }
    }
    return out;
  }

  std::string path_;
  std::string upload_id_;
  uint64_t chunks_per_part_ = 0;
  std::map<int, std::string> parts_;
};

// The boots file is read from its end, at most this many lines (the newest runs).
constexpr size_t kMaxBoots = 1000;
constexpr char kPending[] = "pending";

struct Shared {
  S3StoreOptions o;
  // This process's boot nonce (16 random hex characters), written into every marker it puts;
  // the boots file lists the nonces of this daemon's runs (spec/STORE.md "Receiving" 6).
  std::string boot;
  std::string BootsPath() const {
    return o.boots_file.empty() ? o.spool + ".boots" : o.boots_file;
  }
  // Appends `boot` to the boots file, once per process (before any marker names it).
  absl::Status RecordBoot() const {
    std::call_once(boot_once, [this] {
      int fd = ::open(BootsPath().c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW,
                      0600);
      if (fd < 0) {
        boot_status = ErrnoStatus("cannot record this start in the S3 store's boots file", errno);
        return;
      }
      Fd closer(fd);
      const std::string line = boot + "\n";
      boot_status = WriteAll(fd, absl::MakeConstSpan(
                                     reinterpret_cast<const uint8_t*>(line.data()), line.size()));
      if (boot_status.ok() && ::fsync(fd) != 0) {
        boot_status = ErrnoStatus("cannot sync the S3 store's boots file", errno);
      }
    });
    return boot_status;
  }
  // The nonces of this spool's earlier runs (and this one, once recorded).
  std::set<std::string> Boots() const {
    std::set<std::string> out;
    int fd = ::open(BootsPath().c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) return out;
    Fd closer(fd);
    std::string text(kMaxBoots * 17, '\0');
    struct stat st;
    if (::fstat(fd, &st) == 0 && static_cast<uint64_t>(st.st_size) > text.size()) {
      (void)::lseek(fd, st.st_size - static_cast<off_t>(text.size()), SEEK_SET);
    }
    size_t done = 0;
    for (;;) {
      const ssize_t n = ::read(fd, text.data() + done, text.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      done += static_cast<size_t>(n);
      if (done == text.size()) break;
    }
    text.resize(done);
    for (absl::string_view line : absl::StrSplit(text, '\n')) {
      if (line.size() == 16) out.insert(std::string(line));
    }
    return out;
  }
  // A marker's body: "<upload id or pending> <boot>".
  std::string MarkerBody(const std::string& upload_id) const {
    return absl::StrCat(upload_id, " ", boot);
  }
  mutable std::once_flag boot_once;
  mutable absl::Status boot_status;
  std::string MarkerPrefix() const { return absl::StrCat(o.prefix, ".incoming/", o.daemon_id, "/"); }
  s3::Location KeyOf(const std::string& id) const { return {o.bucket, o.prefix + id + kSuffix}; }
  s3::Location MarkerOf(const std::string& id) const {
    return {o.bucket, absl::StrCat(MarkerPrefix(), id, ".upload")};
  }
  void Log(const std::string& line) const {
    if (o.log) o.log(line);
  }
  // Capsules with a live incoming object in this process, one per capsule: an incoming capsule
  // that is still being destroyed (its uploaders finishing a part) and a new one for the same
  // capsule must never share the spool and journals.
  mutable std::mutex live_mu;
  mutable std::condition_variable live_cv;
  mutable std::set<std::string> live;
};

// Holds the claim on one capsule id of a store while it lives.
class Claim {
 public:
  // Waits (at most a minute) for an earlier holder to let go; kUnavailable after that.
  static absl::StatusOr<std::unique_ptr<Claim>> Take(std::shared_ptr<const Shared> shared,
                                                     const std::string& id) {
    std::unique_lock<std::mutex> lock(shared->live_mu);
    if (!shared->live_cv.wait_for(lock, std::chrono::seconds(60),
                                  [&] { return shared->live.count(id) == 0; })) {
      return absl::UnavailableError(
          absl::StrCat("capsule ", id, " is still being stored by an earlier session"));
    }
    shared->live.insert(id);
    return std::unique_ptr<Claim>(new Claim(std::move(shared), id));
  }
  ~Claim() {
    {
      std::lock_guard<std::mutex> lock(shared_->live_mu);
      shared_->live.erase(id_);
    }
    shared_->live_cv.notify_all();
  }

 private:
  Claim(std::shared_ptr<const Shared> shared, std::string id)
      : shared_(std::move(shared)), id_(std::move(id)) {}
  std::shared_ptr<const Shared> shared_;
  std::string id_;
};

// Reads a small object whole (a marker).
absl::StatusOr<std::string> GetSmall(s3::Client& client, const s3::Location& at) {
  absl::StatusOr<s3::ObjectInfo> info = client.Head(at);
  if (!info.ok()) return info.status();
  if (info->size > 4096) return absl::DataLossError("marker object is too large");
  std::string out(info->size, '\0');
  absl::Status s = client.GetRange(
      at, 0, absl::MakeSpan(reinterpret_cast<uint8_t*>(out.data()), out.size()), info->etag);
  if (!s.ok()) return s;
  return out;
}

// Whether the object at `at` holds, byte for byte, the capsule with `prelude`: its header and
// tail (which carry the signed chunk table) are the same. Its chunks were checked against that
// table by whichever daemon stored it.
absl::StatusOr<bool> SamePreludeStored(s3::Client& client, const s3::Location& at,
                                       const Prelude& prelude, uint64_t size) {
  absl::StatusOr<s3::ObjectInfo> info = client.Head(at);
  if (!info.ok()) return info.status();
  if (info->size != size) return false;
  std::vector<uint8_t> header(prelude.header.size()), tail(prelude.tail.size());
  absl::Status s = client.GetRange(at, 0, absl::MakeSpan(header), info->etag);
  if (s.ok()) s = client.GetRange(at, size - tail.size(), absl::MakeSpan(tail), info->etag);
  if (!s.ok()) return s;
  return header == prelude.header && tail == prelude.tail;
}

class S3Incoming final : public IncomingCapsule {
 public:
  S3Incoming(std::unique_ptr<Claim> claim, std::shared_ptr<const Shared> shared,
             std::unique_ptr<LocalIncoming> spool, std::string journal_path)
      : claim_(std::move(claim)),
        shared_(std::move(shared)),
        spool_(std::move(spool)),
        journal_(std::move(journal_path)),
        id_(spool_->manifest().IdHex()),
        at_(shared_->KeyOf(id_)),
        per_part_(ChunksPerPart(spool_->geometry(), shared_->o.min_part_size)),
        part_count_((spool_->geometry().chunk_count + per_part_ - 1) / per_part_) {}

  // Loads the journal and finds the upload again (ListParts), or starts one.
  absl::Status Resume(absl::Span<const crypto::PublicIdentity> trusted);

  const Manifest& manifest() const override { return spool_->manifest(); }
  bool SamePrelude(const Prelude& p) const override { return spool_->SamePrelude(p); }
  uint64_t chunk_count() const override { return spool_->chunk_count(); }
  std::vector<uint64_t> Missing() const override { return spool_->Missing(); }
  uint64_t received_count() const override { return spool_->received_count(); }
  bool IsReceived(uint64_t index) const override { return spool_->IsReceived(index); }
  absl::Status CheckAndWrite(uint64_t index, absl::Span<const uint8_t> c) const override {
    return spool_->CheckAndWrite(index, c);
  }
  void MarkWritten(uint64_t index) override { spool_->MarkWritten(index); }
  std::vector<uint64_t> TakeRefused() override {
    std::lock_guard<std::mutex> lock(refused_mu_);
    std::vector<uint64_t> out;
    out.swap(refused_);
    return out;
  }

  ~S3Incoming() override { StopUploaders(); }

  // Chunks are durable once in the spool; the parts they complete are queued for upload in the
  // background, so that receiving never waits for the object store. A failed upload is
  // reported by the next Sync (and its part queued again later) or retried by Finish.
  absl::StatusOr<std::vector<uint64_t>> Sync() override {
    absl::StatusOr<std::vector<uint64_t>> done = spool_->Sync();
    if (!done.ok()) return done;
    std::lock_guard<std::mutex> lock(mu_);
    if (!finished_.empty()) return done;
    if (!upload_error_.ok()) {
      absl::Status failed = upload_error_;
      upload_error_ = absl::OkStatus();
      return failed;
    }
    QueueReadyParts();
    return done;
  }

  absl::StatusOr<std::string> Finish(const std::function<absl::Status()>& before_name) override;
  absl::Status Abandon() override;

 private:
  // First and last chunk (exclusive) of part `p` (1-based), and its byte range in the capsule.
  uint64_t FirstChunk(int p) const { return (static_cast<uint64_t>(p) - 1) * per_part_; }
  uint64_t EndChunk(int p) const {
    return std::min<uint64_t>(static_cast<uint64_t>(p) * per_part_, spool_->chunk_count());
  }
  uint64_t PartBegin(int p) const {
    return p == 1 ? 0 : spool_->geometry().ChunkOffset(FirstChunk(p));
  }
  uint64_t PartEnd(int p) const {
    const Geometry& g = spool_->geometry();
    return static_cast<uint64_t>(p) == part_count_ ? g.FileSize() : g.ChunkOffset(EndChunk(p));
  }

  absl::Status UploadReadyParts();  // mu_ held, uploaders idle: uploads here and now
  std::vector<int> ReadyParts() const;  // mu_ held: complete, not stored, not queued
  void QueueReadyParts();               // mu_ held
  void Uploader();                      // a background uploader's loop
  void StopUploaders();
  // Reads part `n` from the spool and uploads it; its ETag.
  // Chunks that fail their check as they leave the spool are added to `bad` (kDataLoss).
  absl::StatusOr<std::string> UploadOne(int n, const std::string& upload_id,
                                        std::vector<uint8_t>& buf,
                                        std::vector<uint64_t>& bad) const;
  // Takes `bad` chunks back from the spool so that they are received again (TakeRefused);
  // mu_ not held.
  absl::Status Refuse(const std::vector<uint64_t>& bad);
  // Journals a stored part and frees its chunks from the spool. mu_ held.
  absl::Status Stored(int n, const std::string& etag);
  absl::Status Cleanup();           // after completion: spool, journal, marker
  absl::Status StartUpload();
  // Puts this daemon's marker for the capsule: `upload_id` (or kPending) and the boot nonce.
  absl::Status PutMarker(const std::string& upload_id) const;

  const std::unique_ptr<Claim> claim_;  // released last
  const std::shared_ptr<const Shared> shared_;
  const std::unique_ptr<LocalIncoming> spool_;
  std::mutex mu_;  // guards what follows
  std::condition_variable work_cv_;  // queue_ not empty, or stopping_
  std::condition_variable idle_cv_;  // queue_ empty and busy_ == 0
  std::deque<int> queue_;
  std::set<int> queued_;  // in queue_ or being uploaded
  int busy_ = 0;
  bool stopping_ = false;
  absl::Status upload_error_;
  std::vector<std::thread> uploaders_;
  PartsJournal journal_;
  const std::string id_;
  const s3::Location at_;
  const uint64_t per_part_;
  const uint64_t part_count_;
  std::string finished_;
  std::mutex refused_mu_;  // a leaf lock: guards refused_
  std::vector<uint64_t> refused_;
};

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
                                                  std::vector<uint64_t>& bad) const {
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
  absl::StatusOr<std::string> etag = shared_->o.client->UploadPart(at_, upload_id, n, buf);
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
    absl::StatusOr<std::string> etag = UploadOne(n, upload_id, buf, bad);
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
    absl::StatusOr<std::string> etag = UploadOne(n, journal_.upload_id(), buf, bad);
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
    if (!mine.ok() || !*mine) return completed.status();
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
  if (!our_etag.empty() && info->etag != our_etag) {
    // Lost a race: the object under the key is not the one this daemon just completed.
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
    shared_->Log(absl::StrCat("s3: capsule ", id_, " stored as ", url, "; another receiver "
                              "completed an identical copy right after"));
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

class S3StoreImpl final : public Store {
 public:
  explicit S3StoreImpl(std::shared_ptr<const Shared> shared) : shared_(std::move(shared)) {}

  std::string Describe() const override {
    return s3::ToUrl({shared_->o.bucket, shared_->o.prefix});
  }

  // Anyone with write access to the bucket may put objects in it.
  bool OnlyItsDaemonWrites() const override { return false; }

  absl::StatusOr<std::unique_ptr<RandomAccessFile>> Open(const std::string& id) override {
    if (!IsCapsuleId(id)) return absl::InvalidArgumentError("a capsule id is 32 hex characters");
    absl::StatusOr<std::unique_ptr<RandomAccessFile>> f =
        s3::OpenObject(shared_->o.client, shared_->KeyOf(id));
    if (absl::IsNotFound(f.status())) {
      return absl::NotFoundError(absl::StrCat("capsule ", id, " is not in the store"));
    }
    return f;
  }

  absl::StatusOr<std::vector<std::string>> List() override {
    absl::StatusOr<std::vector<s3::ObjectInfo>> objects =
        shared_->o.client->List(shared_->o.bucket, shared_->o.prefix);
    if (!objects.ok()) return objects.status();
    std::vector<std::string> ids;
    const std::string suffix = kSuffix;
    for (const s3::ObjectInfo& o : *objects) {
      absl::string_view key = o.key;
      if (!absl::ConsumePrefix(&key, shared_->o.prefix) || !absl::ConsumeSuffix(&key, suffix)) {
        continue;
      }
      std::string id(key);
      if (IsCapsuleId(id)) ids.push_back(std::move(id));
    }
    std::sort(ids.begin(), ids.end());
    return ids;
  }

  absl::StatusOr<std::unique_ptr<IncomingCapsule>> Begin(
      const Prelude& prelude, absl::Span<const crypto::PublicIdentity> trusted) override {
    absl::StatusOr<std::unique_ptr<CapsuleReader>> checked = CheckPrelude(prelude, trusted);
    if (!checked.ok()) return checked.status();
    const std::string id = (*checked)->manifest().IdHex();
    absl::StatusOr<s3::ObjectInfo> stored = shared_->o.client->Head(shared_->KeyOf(id));
    if (stored.ok()) {
      return absl::AlreadyExistsError(absl::StrCat("capsule ", id, " is already in the store"));
    }
    if (!absl::IsNotFound(stored.status())) return stored.status();
    for (int attempt = 0;; ++attempt) {
      absl::StatusOr<std::unique_ptr<Claim>> claim = Claim::Take(shared_, id);
      if (!claim.ok()) return claim.status();
      absl::StatusOr<std::unique_ptr<LocalIncoming>> spool =
          LocalIncoming::Begin(shared_->o.spool, prelude, trusted);
      if (!spool.ok()) return spool.status();
      const std::string journal = (*spool)->incoming_folder() + "/" + id + ".parts";
      auto in = std::make_unique<S3Incoming>(std::move(*claim), shared_, std::move(*spool), journal);
      absl::Status s = in->Resume(trusted);
      if (absl::IsAborted(s) && attempt == 0) continue;  // the upload was gone: afresh, once
      if (!s.ok()) return s;
      return std::unique_ptr<IncomingCapsule>(std::move(in));
    }
  }

  absl::StatusOr<std::vector<std::string>> Recover() override {
    std::vector<std::string> lines;
    s3::Client& client = *shared_->o.client;
    // Upload ids our journals name.
    std::map<std::string, std::string> ours;  // upload id -> capsule id
    const std::string incoming = shared_->o.spool + "/.incoming";
    if (DIR* dir = ::opendir(incoming.c_str())) {
      while (struct dirent* e = ::readdir(dir)) {
        std::string name = e->d_name;
        const std::string suffix = ".parts";
        if (name.size() <= suffix.size() ||
            name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0) {
          continue;
        }
        PartsJournal j(incoming + "/" + name);
        if (j.Load().ok() && !j.upload_id().empty()) {
          ours[j.upload_id()] = name.substr(0, name.size() - suffix.size());
        }
      }
      ::closedir(dir);
    }
    // Our markers: uploads this daemon started. One no journal names is abandoned, if this
    // spool's own runs wrote it: a copy of the state folder (the same daemon id) running
    // elsewhere writes markers with boot nonces this daemon never had, and they are left alone.
    absl::Status booted = shared_->RecordBoot();
    if (!booted.ok()) return booted;
    const std::set<std::string> boots = shared_->Boots();
    absl::StatusOr<std::vector<s3::ObjectInfo>> markers =
        client.List(shared_->o.bucket, shared_->MarkerPrefix());
    if (!markers.ok()) return markers.status();
    for (const s3::ObjectInfo& m : *markers) {
      absl::string_view key = m.key;
      if (!absl::ConsumePrefix(&key, shared_->MarkerPrefix()) ||
          !absl::ConsumeSuffix(&key, ".upload")) {
        continue;
      }
      const std::string id(key);
      if (!IsCapsuleId(id)) continue;
      absl::StatusOr<std::string> body = GetSmall(client, {shared_->o.bucket, m.key});
      if (absl::IsNotFound(body.status())) continue;
      if (!body.ok()) return body.status();
      // "<upload id> <boot>", or (an earlier version) "<upload id>".
      std::vector<std::string> fields = absl::StrSplit(*body, ' ');
      absl::StatusOr<std::string> upload = fields[0];
      if (fields.size() == 2) {
        if (fields[1] == shared_->boot) continue;  // this run's own: live
        if (boots.count(fields[1]) == 0) {
          lines.push_back(absl::StrCat("s3: the marker of capsule ", id,
                                       " was written by another daemon with this daemon's id "
                                       "(a copied state folder?); its upload is left alone"));
          continue;
        }
      } else if (fields.size() != 1) {
        continue;  // not a marker of ours
      }
      if (*upload == kPending) {
        absl::StatusOr<std::vector<std::string>> aborted = AbortUnnamed(id, ours);
        if (!aborted.ok()) return aborted.status();
        lines.insert(lines.end(), aborted->begin(), aborted->end());
        absl::Status d = client.Delete({shared_->o.bucket, m.key});
        if (!d.ok()) return d;
        continue;
      }
      if (ours.count(*upload) != 0) continue;  // resumable: kept
      if (IsToken(*upload)) {
        absl::Status s = client.AbortMultipartUpload(shared_->KeyOf(id), *upload);
        if (!s.ok() && !absl::IsNotFound(s)) return s;
        if (s.ok()) {
          lines.push_back(absl::StrCat("s3: aborted an abandoned upload of capsule ", id,
                                       " (no journal names it)"));
        }
      }
      absl::Status d = client.Delete({shared_->o.bucket, m.key});
      if (!d.ok()) return d;
    }
    return lines;
  }

 private:
  // After a crash between a pending marker and the journal line of its upload: the uploads of
  // capsule `id` that no journal of ours (`ours`) and no marker of any daemon names are ours,
  // unless another daemon is itself starting an upload of that capsule (its marker is pending):
  // then nothing is aborted, since the two cannot be told apart.
  absl::StatusOr<std::vector<std::string>> AbortUnnamed(
      const std::string& id, const std::map<std::string, std::string>& ours) {
    s3::Client& client = *shared_->o.client;
    const s3::Location key = shared_->KeyOf(id);
    std::vector<std::string> lines;
    // Uploads first, markers second: a daemon writes its pending marker before it creates its
    // upload, so every upload listed here already has a marker (pending or naming it) when the
    // markers are listed. The other order could see a new upload whose marker it missed.
    absl::StatusOr<std::vector<s3::Upload>> uploads =
        client.ListMultipartUploads(shared_->o.bucket, key.key);
    if (!uploads.ok()) return uploads.status();
    absl::StatusOr<std::vector<s3::ObjectInfo>> all =
        client.List(shared_->o.bucket, shared_->o.prefix + ".incoming/");
    if (!all.ok()) return all.status();
    std::set<std::string> named;
    const std::string suffix = absl::StrCat("/", id, ".upload");
    for (const s3::ObjectInfo& m : *all) {
      if (!absl::EndsWith(m.key, suffix) || absl::StartsWith(m.key, shared_->MarkerPrefix())) {
        continue;
      }
      absl::StatusOr<std::string> body = GetSmall(client, {shared_->o.bucket, m.key});
      if (absl::IsNotFound(body.status())) continue;
      if (!body.ok()) return body.status();
      const std::string upload = std::vector<std::string>(absl::StrSplit(*body, ' '))[0];
      if (upload == kPending) {
        lines.push_back(absl::StrCat("s3: an upload of capsule ", id, " that this daemon may "
                                     "have left is kept: another daemon is starting one"));
        return lines;
      }
      named.insert(upload);
    }
    for (const s3::Upload& u : *uploads) {
      if (u.key != key.key || ours.count(u.upload_id) != 0 || named.count(u.upload_id) != 0 ||
          !IsToken(u.upload_id)) {
        continue;
      }
      absl::Status s = client.AbortMultipartUpload(key, u.upload_id);
      if (!s.ok() && !absl::IsNotFound(s)) return s;
      if (s.ok()) {
        lines.push_back(absl::StrCat("s3: aborted an abandoned upload of capsule ", id,
                                     " (started before a crash, never journaled)"));
      }
    }
    return lines;
  }

  std::shared_ptr<const Shared> shared_;
};

}  // namespace

absl::StatusOr<std::shared_ptr<Store>> MakeS3Store(S3StoreOptions options) {
  if (options.client == nullptr) return absl::InvalidArgumentError("no S3 client");
  if (!options.prefix.empty() && options.prefix.back() != '/') {
    return absl::InvalidArgumentError("an S3 store prefix is empty or ends with \"/\"");
  }
  if (!IsDaemonId(options.daemon_id)) {
    return absl::InvalidArgumentError("a daemon id is 1 to 64 of [a-z0-9-]");
  }
  if (options.spool.empty()) return absl::InvalidArgumentError("no spool folder");
  if (options.min_part_size < (uint64_t{5} << 20)) {
    return absl::InvalidArgumentError("S3 parts are at least 5 MiB");
  }
  auto shared = std::make_shared<Shared>();
  shared->o = std::move(options);
  uint8_t nonce[8];
  crypto::RandomBytes(absl::MakeSpan(nonce));
  shared->boot = crypto::ToHex(absl::MakeConstSpan(nonce));
  return std::shared_ptr<Store>(std::make_shared<S3StoreImpl>(std::move(shared)));
}

}  // namespace bunker::capsule
