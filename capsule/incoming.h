// Receiving a capsule chunk by chunk without any key, as the transfer service does
// (spec/FORMAT.md "Checking one chunk without a key").
//
// The sender first sends the capsule's prelude: the 16-byte header and its tail, from the chunk
// table to the end of the file. From it the receiver checks structure, signature, trust and the
// chunk table exactly as CapsuleReader does. Then chunks arrive in any order; each is checked
// against the signed table before it is written. A journal records the chunks made durable, so
// after a crash of either side Missing() names exactly what must be sent again; the capsule
// appears in its store (capsule/store.h) under its final name only complete.
#ifndef BUNKER_CAPSULE_INCOMING_H_
#define BUNKER_CAPSULE_INCOMING_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "capsule/reader.h"
#include "crypto/keys.h"

namespace bunker::capsule {

// The prelude of a capsule file: header and tail, as a sender extracts them.
struct Prelude {
  std::vector<uint8_t> header;  // kHeaderSize bytes
  std::vector<uint8_t> tail;    // chunk table, manifest, signature, footer
};

// Reads the prelude of a capsule (for the sender). Structural checks are the receiver's job.
absl::StatusOr<Prelude> ReadPrelude(const CapsuleReader& reader);

// Every check Begin() makes on a prelude (structure, signature, trust, chunk table), touching
// no file: for a receiver that must decide more (e.g. a policy) before it stores anything.
absl::StatusOr<std::unique_ptr<CapsuleReader>> CheckPrelude(
    const Prelude& prelude, absl::Span<const crypto::PublicIdentity> trusted);

// A capsule being received into a store (capsule/store.h), chunk by chunk.
//
// Threading: CheckAndWrite may run on several threads at once; every other method may be
// called from any thread, and they lock what they share. Sync and Finish may take long (data
// sync, uploads): callers run them off an event loop.
class IncomingCapsule {
 public:
  virtual ~IncomingCapsule() = default;

  virtual const Manifest& manifest() const = 0;
  // Whether `prelude` is, byte for byte, the one this capsule is being received with.
  virtual bool SamePrelude(const Prelude& prelude) const = 0;
  virtual uint64_t chunk_count() const = 0;
  // Chunks not yet durably received, in increasing order.
  virtual std::vector<uint64_t> Missing() const = 0;
  virtual uint64_t received_count() const = 0;
  virtual bool IsReceived(uint64_t index) const = 0;

  // Checks chunk `index` against the signed table and writes it (not yet durable). kDataLoss
  // for a chunk that does not match (nothing is written), kInvalidArgument for an index out of
  // range, kResourceExhausted for a full disk. A chunk already received is checked and skipped.
  absl::Status PutChunk(uint64_t index, absl::Span<const uint8_t> ciphertext);

  // The two halves of PutChunk, for receivers that check and write on worker threads:
  // CheckAndWrite changes no state of this object; MarkWritten must then be called for each
  // chunk written.
  virtual absl::Status CheckAndWrite(uint64_t index, absl::Span<const uint8_t> ciphertext) const = 0;
  virtual void MarkWritten(uint64_t index) = 0;

  // Makes every chunk put so far durable, then journals them. Returns their indexes (what a
  // receiver may now acknowledge).
  virtual absl::StatusOr<std::vector<uint64_t>> Sync() = 0;

  // Chunks that were durably received but found damaged later (an object store's receiver
  // checks each chunk again as it leaves its local spool) and are missing again, since the last
  // call: a receiver reports them as refused so that the sender sends them again.
  virtual std::vector<uint64_t> TakeRefused() { return {}; }

  // When every chunk is durably received: calls `before_name` (if any) and only if that
  // returns OK makes the capsule appear under its final name in the store: e.g. to put the
  // receipt on record first, so that no capsule is ever in the store unaccounted for. An error
  // from `before_name` is returned and leaves the capsule complete but unnamed (a later Finish
  // calls `before_name` again). Returns where the capsule now is (a path, an s3:// URL); again
  // on a repeated call, without calling `before_name`. kFailedPrecondition while chunks are
  // missing.
  //
  // The capsule is not read again: every chunk was checked against the signed table before it
  // was written, and the journal names only chunks made durable after that check
  // (spec/TRANSFER.md "Push" says what this relies on).
  virtual absl::StatusOr<std::string> Finish(
      const std::function<absl::Status()>& before_name = nullptr) = 0;

  // Gives up: removes the partial capsule and its journal (or aborts the upload). Best effort;
  // the first error.
  virtual absl::Status Abandon() = 0;
};

// An incoming capsule in a local folder: files `folder`/.incoming/ID.capsule (the file being
// assembled, pre-sized, chunks written at their place) and ID.journal (u64 big-endian chunk
// indexes, appended; a torn last record is ignored; an index with its top bit set takes that
// chunk back, see Forget). Sync makes written chunks durable (data
// fsync) and only then journals their indexes. Finish links the file to `folder`/ID.capsule
// (never replacing one) and removes the partial files.
// For tests: what LocalIncoming::Begin reads as a folder's free space (empty: statvfs).
void SetFreeSpaceForTesting(std::function<uint64_t(const std::string&)> free_space);
// For tests: forgets which partial files this process wrote or checked, as a restart does
// (LocalIncoming::Begin's `check_resumed`).
void ForgetCheckedIncomingForTesting();

class LocalIncoming final : public IncomingCapsule {
 public:
  // Checks the prelude and creates or resumes the capsule's files under `folder`, as
  // Store::Begin says. kAlreadyExists if `folder` already holds ID.capsule.
  // kFailedPrecondition if `folder`/.incoming is not a folder of this process's user that no
  // other user may write to (it holds the journal, which Finish trusts). With `keep_free`,
  // kResourceExhausted, before anything is written, if the file system lacks room for what
  // is still missing of the capsule with `keep_free` bytes to spare, besides what capsules this
  // process is receiving at once may still write (each is promised its missing bytes at its
  // offer, given back as its chunks are written or when it goes). A disk that fills anyway
  // (other writers) fails the write that finds it full, with kResourceExhausted.
  //
  // With `write_reserve` (a spool whose chunks leave as they are uploaded, so that no promise
  // of the whole file fits): each chunk is written only while the file system keeps
  // `write_reserve` bytes free besides it, else kResourceExhausted "no room for capsule ...",
  // so that a peer that never completes what it sends cannot fill the disk the site's state
  // and audit log live on.
  //
  // Partial files this process did not create or check already (a resume after a restart, or
  // files restored or edited meanwhile) are not taken at their journal's word: with
  // `check_resumed`, every journaled chunk is read back and checked against the signed table
  // first (on all cores), and those that fail are forgotten (Forget), so they are received
  // again. A spool whose chunks are checked as they leave it and released once uploaded
  // (capsule/s3_store.h) passes false.
  static absl::StatusOr<std::unique_ptr<LocalIncoming>> Begin(
      const std::string& folder, const Prelude& prelude,
      absl::Span<const crypto::PublicIdentity> trusted,
      std::optional<uint64_t> keep_free = std::nullopt, uint64_t write_reserve = 0,
      bool check_resumed = true);
  ~LocalIncoming() override;

  const Manifest& manifest() const override { return reader_->manifest(); }
  bool SamePrelude(const Prelude& prelude) const override {
    return prelude.header == prelude_.header && prelude.tail == prelude_.tail;
  }
  uint64_t chunk_count() const override { return received_.size(); }
  std::vector<uint64_t> Missing() const override;
  uint64_t received_count() const override;
  bool IsReceived(uint64_t index) const override;
  absl::Status CheckAndWrite(uint64_t index, absl::Span<const uint8_t> ciphertext) const override;
  void MarkWritten(uint64_t index) override;
  absl::StatusOr<std::vector<uint64_t>> Sync() override;
  absl::StatusOr<std::string> Finish(
      const std::function<absl::Status()>& before_name = nullptr) override;
  absl::Status Abandon() override;

  // For a store that uses this as a local spool (capsule/s3_store.h):
  // Reads bytes of the partial file (durably received chunks, the prelude).
  absl::Status ReadAt(uint64_t offset, absl::Span<uint8_t> out) const;
  // Checks `ciphertext` as chunk `index` against the signed table (kDataLoss if it differs).
  absl::Status CheckChunk(uint64_t index, absl::Span<const uint8_t> ciphertext) const {
    return reader_->CheckChunk(index, ciphertext);
  }
  // Frees the disk space of a byte range that is kept elsewhere now; best effort (file systems
  // without hole punching keep the bytes).
  void Release(uint64_t offset, uint64_t length);
  // Takes durably received chunks back (they were found damaged): journals them as missing
  // again, so that they are received anew, also after a restart.
  absl::Status Forget(const std::vector<uint64_t>& indexes);
  const Geometry& geometry() const { return reader_->geometry(); }
  const Prelude& prelude() const { return prelude_; }
  // The folder holding the partial files (`folder`/.incoming).
  std::string incoming_folder() const { return store_ + "/.incoming"; }

 private:
  LocalIncoming() = default;
  absl::Status LoadJournal();
  // Reads back every journaled chunk and forgets those that do not match the signed table.
  absl::Status CheckJournaled();

  std::string store_, path_, journal_path_;
  std::unique_ptr<CapsuleReader> reader_;  // over the prelude only: for CheckChunk
  int fd_ = -1;
  int journal_fd_ = -1;
  Prelude prelude_;
  std::mutex sync_mu_;  // one Sync or Finish at a time; taken before mu_
  mutable std::mutex mu_;  // guards what follows
  std::vector<bool> received_;
  uint64_t received_count_ = 0;
  std::vector<uint64_t> pending_;
  std::string finished_path_;  // set once Finish succeeded
  // With `keep_free`: the room promised at Begin not yet written, and the chunks whose bytes
  // were taken off it.
  uint64_t promised_ = 0;
  std::vector<bool> counted_;
  uint64_t write_reserve_ = 0;  // set at Begin
};

// The bytes free for this process's user on the file system of `folder` (the testing hook's
// answer when one is set); kUnavailable if it cannot be found.
absl::StatusOr<uint64_t> FreeSpace(const std::string& folder);

}  // namespace bunker::capsule

#endif  // BUNKER_CAPSULE_INCOMING_H_
