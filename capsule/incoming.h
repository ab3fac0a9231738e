// Receiving a capsule chunk by chunk without any key, as the transfer service does
// (spec/FORMAT.md "Checking one chunk without a key").
//
// The sender first sends the capsule's prelude: the 16-byte header and its tail, from the chunk
// table to the end of the file. From it the receiver checks structure, signature, trust and the
// chunk table exactly as CapsuleReader does. Then chunks arrive in any order; each is checked
// against the signed table before it is written at its place in a pre-sized file. Sync() makes
// the written chunks durable (data fsync) and only then records their indexes in a journal, so
// after a crash of either side Missing() names exactly what must be sent again. Finish()
// re-verifies the whole file and moves it into the store with a name only when complete.
//
// Files, in `store`/.incoming/: ID.capsule (the file being assembled) and ID.journal (u64
// big-endian chunk indexes, appended; a torn last record is ignored).
#ifndef BUNKER_CAPSULE_INCOMING_H_
#define BUNKER_CAPSULE_INCOMING_H_

#include <cstdint>
#include <functional>
#include <memory>
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

class IncomingCapsule {
 public:
  // Checks the prelude (kDataLoss, kInvalidArgument, kPermissionDenied for an untrusted issuer,
  // as CapsuleReader::Open) and creates or resumes the capsule's files under `store`. Resuming
  // requires the same prelude byte for byte (kDataLoss otherwise). kAlreadyExists if the store
  // already holds the capsule.
  static absl::StatusOr<std::unique_ptr<IncomingCapsule>> Begin(
      const std::string& store, const Prelude& prelude,
      absl::Span<const crypto::PublicIdentity> trusted);
  ~IncomingCapsule();

  const Manifest& manifest() const { return reader_->manifest(); }
  // Whether `prelude` is, byte for byte, the one this capsule is being received with.
  bool SamePrelude(const Prelude& prelude) const {
    return prelude.header == prelude_.header && prelude.tail == prelude_.tail;
  }
  uint64_t chunk_count() const { return received_.size(); }
  // Chunks not yet durably received, in increasing order.
  std::vector<uint64_t> Missing() const;
  uint64_t received_count() const { return received_count_; }

  // Checks chunk `index` against the signed table and writes it (not yet durable). kDataLoss
  // for a chunk that does not match (nothing is written), kInvalidArgument for an index out of
  // range, kResourceExhausted for a full disk. A chunk already received is checked and skipped.
  absl::Status PutChunk(uint64_t index, absl::Span<const uint8_t> ciphertext);

  // The two halves of PutChunk, for receivers that check and write on worker threads:
  // CheckAndWrite is safe to call from several threads at once (it changes no state of this
  // object); MarkWritten must then be called, from the owning thread, for each chunk written.
  absl::Status CheckAndWrite(uint64_t index, absl::Span<const uint8_t> ciphertext) const;
  void MarkWritten(uint64_t index) { pending_.push_back(index); }
  bool IsReceived(uint64_t index) const { return index < received_.size() && received_[index]; }

  // Makes every chunk put so far durable, then journals them. Returns their indexes (what a
  // receiver may now acknowledge).
  absl::StatusOr<std::vector<uint64_t>> Sync();

  // When every chunk is received: verifies the whole file, makes it durable, calls
  // `before_name` (if any) and only if that returns OK gives it its name in the store: e.g. to
  // put the receipt on record first, so that no capsule is ever in the store unaccounted for. An
  // error from `before_name` is returned and leaves the complete file unnamed in .incoming (a
  // later Finish verifies it and calls `before_name` again). Returns the capsule's path; again
  // on a repeated call, without calling `before_name`. kFailedPrecondition while chunks are
  // missing.
  absl::StatusOr<std::string> Finish(const std::function<absl::Status()>& before_name = nullptr);

 private:
  IncomingCapsule() = default;
  absl::Status LoadJournal();

  std::string store_, path_, journal_path_;
  std::vector<crypto::PublicIdentity> trusted_;
  std::unique_ptr<CapsuleReader> reader_;  // over the prelude only: for CheckChunk
  int fd_ = -1;
  int journal_fd_ = -1;
  std::vector<bool> received_;
  uint64_t received_count_ = 0;
  std::vector<uint64_t> pending_;
  Prelude prelude_;
  std::string finished_path_;  // set once Finish succeeded
};

}  // namespace bunker::capsule

#endif  // BUNKER_CAPSULE_INCOMING_H_
