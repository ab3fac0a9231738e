// Internal to the S3 store (s3_store*.cc): the upload journal, the state shared by a store and its
// incoming capsules (markers, boots), and the incoming capsule itself. Not part of the API:
// include capsule/s3_store.h instead.
#ifndef BUNKER_CAPSULE_S3_STORE_INTERNAL_H_
#define BUNKER_CAPSULE_S3_STORE_INTERNAL_H_

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "capsule/incoming.h"
#include "capsule/s3_client.h"
#include "capsule/s3_store.h"

namespace bunker::capsule::internal_s3_store {

inline constexpr char kSuffix[] = ".capsule";
// The most bytes of part buffers one Sync holds at once (more threads for small parts).
inline constexpr uint64_t kMaxPartBufferBytes = uint64_t{256} << 20;

// Upload ids and ETags come from the server: printable, no spaces, bounded, before they go into
// a journal line or a request.
bool IsToken(const std::string& s);

bool IsDaemonId(const std::string& s);

// The journal of one upload, next to the spool's chunk journal: text lines, appended and
// fsynced: "upload <upload id> <chunks per part>" first (the part layout the parts were cut
// with), then "part <number> <etag>" for each part uploaded. A torn last line (no newline) is
// ignored.
class PartsJournal {
 public:
  explicit PartsJournal(std::string path) : path_(std::move(path)) {}

  absl::Status Load();

  const std::string& upload_id() const { return upload_id_; }
  // Chunks per part of the journaled upload; 0 when the journal is unusable (no layout, or
  // damaged), which never equals a real layout.
  uint64_t chunks_per_part() const { return chunks_per_part_; }
  const std::map<int, std::string>& parts() const { return parts_; }

  // Starts the journal afresh for `upload_id`.
  absl::Status Start(const std::string& upload_id, uint64_t chunks_per_part);

  absl::Status Add(int number, const std::string& etag);

  void Remove();

 private:
  absl::StatusOr<std::string> ReadSmall();

  std::string path_;
  std::string upload_id_;
  uint64_t chunks_per_part_ = 0;
  std::map<int, std::string> parts_;
};

// The boots file is read from its end, at most this many lines (the newest runs).
inline constexpr size_t kMaxBoots = 1000;
inline constexpr char kPending[] = "pending";

struct Shared {
  S3StoreOptions o;
  // This process's boot nonce (16 random hex characters), written into every marker it puts;
  // the boots file lists the nonces of this daemon's runs (spec/STORE.md "Receiving" 6).
  std::string boot;
  std::string BootsPath() const {
    return o.boots_file.empty() ? o.spool + ".boots" : o.boots_file;
  }
  // Appends `boot` to the boots file, once per process (before any marker names it).
  absl::Status RecordBoot() const;
  // The nonces of this spool's earlier runs (and this one, once recorded).
  std::set<std::string> Boots() const;
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
  // The claim if no one holds it; else nullptr (a live incoming capsule of this process).
  static std::unique_ptr<Claim> TryTake(std::shared_ptr<const Shared> shared,
                                        const std::string& id) {
    std::lock_guard<std::mutex> lock(shared->live_mu);
    if (!shared->live.insert(id).second) return nullptr;
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

// Reads a small object whole (a marker), again (at most kMarkerRereads times) if it is rewritten
// while read.
inline constexpr int kMarkerRereads = 3;
absl::StatusOr<std::string> GetSmall(s3::Client& client, const s3::Location& at);

// Whether the object at `at` holds, byte for byte, the capsule with `prelude`: its header and
// tail (which carry the signed chunk table) are the same. Its chunks were checked against that
// table by whichever daemon stored it.
absl::StatusOr<bool> SamePreludeStored(s3::Client& client, const s3::Location& at,
                                       const Prelude& prelude, uint64_t size);

// The prelude of a capsule as its spool file `path` holds it (the header and the tail stay in the
// spool until the capsule is stored, capsule/incoming.h): for comparing it with a stored object
// (SamePreludeStored) when no incoming capsule is open. Nothing is checked but the structure the
// tail needs (footer, manifest); kNotFound without the file.
absl::StatusOr<Prelude> SpooledPrelude(const std::string& path, uint64_t* file_size);

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

  // Stops the background uploads: a part upload under way is cancelled (s3::Cancellation), so
  // this returns within about a second whatever the object store does; a part cut short is
  // uploaded again when the capsule is offered again (its chunks stay in the spool until a
  // part is journaled). Callers that serve other work (the transfer daemon's event loop) still
  // destroy it on a thread of their own.
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
  void StopUploaders();  // for good: cancels the uploads under way, joins the uploaders
  // Reads part `n` from the spool and uploads it; its ETag.
  // Chunks that fail their check as they leave the spool are added to `bad` (kDataLoss).
  // `cancel` (may be null) cuts the upload short (kCancelled).
  absl::StatusOr<std::string> UploadOne(int n, const std::string& upload_id,
                                        std::vector<uint8_t>& buf, std::vector<uint64_t>& bad,
                                        const s3::Cancellation* cancel) const;
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
  s3::Cancellation stop_uploads_;  // cancelled by StopUploaders
  PartsJournal journal_;
  const std::string id_;
  const s3::Location at_;
  const uint64_t per_part_;
  const uint64_t part_count_;
  std::string finished_;
  std::mutex refused_mu_;  // a leaf lock: guards refused_
  std::vector<uint64_t> refused_;
};

}  // namespace bunker::capsule::internal_s3_store

#endif  // BUNKER_CAPSULE_S3_STORE_INTERNAL_H_
