// The plumbing of a release (site/gate.h): payload copies that authenticate what they do not
// write, a descriptor sink that counts what actually left, and a new file created below a
// destination descriptor that appears under its name only when complete. Used only by the gate.
#ifndef BUNKER_SITE_RELEASE_IO_H_
#define BUNKER_SITE_RELEASE_IO_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "capsule/beneath.h"
#include "capsule/fd.h"
#include "capsule/file_index.h"
#include "capsule/io.h"
#include "capsule/reader.h"
#include "site/chunk_spool.h"
#include "site/gate.h"

namespace bunker::site {

// Passes a source through, failing with kCancelled once `cancelled` says so.
class CancellableSource : public capsule::ByteSource {
 public:
  CancellableSource(capsule::ByteSource* inner, std::function<bool()> cancelled)
      : inner_(inner), cancelled_(std::move(cancelled)) {}
  absl::StatusOr<absl::Span<const uint8_t>> Next() override;

 private:
  capsule::ByteSource* inner_;
  std::function<bool()> cancelled_;
};

// Writes to a descriptor it does not own, buffered, counting the bytes the kernel accepted.
// A pipe or FIFO is written through a non-blocking description of its own (reopened via
// /proc/self/fd, only from a description open for writing), and a socket with MSG_DONTWAIT, so
// that a reader who never reads cannot hold the writer: it waits in slices and stops with
// kCancelled as soon as `cancelled` says so.
class CountingFdSink : public capsule::WritableFile {
 public:
  explicit CountingFdSink(int fd, std::function<bool()> cancelled = nullptr);
  absl::Status Append(absl::Span<const uint8_t> data) override;
  absl::Status Flush();
  uint64_t written() const { return written_; }

 private:
  // Writes data[*done, size) (counting), advancing *done, also on failure.
  absl::Status WriteAll(absl::Span<const uint8_t> data, size_t* done);

  int fd_;
  capsule::Fd nonblocking_;  // our own description of a pipe, when there is one
  bool socket_ = false;       // written with send(MSG_DONTWAIT)
  std::function<bool()> cancelled_;
  std::vector<uint8_t> buffer_;
  uint64_t written_ = 0;
};

// Streams payload bytes [begin, end) into `sink` (none: authenticate only), then reads on to
// `authenticate_to` so that nothing is committed from a payload with a bad chunk after `end`.
// Chunks are read from `chunks_from` when given (a ChunkSpool's view), else the capsule.
absl::Status CopyPayload(const capsule::CapsuleReader* reader, const capsule::PayloadKey& key,
                         uint64_t begin, uint64_t end, uint64_t authenticate_to,
                         capsule::WritableFile* sink, const ReleaseOptions& options,
                         const capsule::RandomAccessFile* chunks_from = nullptr);

// For a stream output (a descriptor, where nothing can be taken back): OK when the capsule is
// local or `spool` was made; else kResourceExhausted ("no room in DIR to keep N bytes of a
// remote capsule while they are checked before release"). Without a spool the writing pass
// would fetch a remote object again, and an object changed between the passes would cut the
// output short after part of it was written; so nothing is written instead.
absl::Status RemoteNeedsSpool(const capsule::CapsuleReader& reader, const ChunkSpool* spool,
                              uint64_t bytes, const std::string& spool_dir);

// Writes file `f`'s contents to `sink` only after all of its chunks authenticated and its bytes
// matched the index digest: files up to options.held_in_memory from memory, larger ones by a
// checking pass first (from a remote capsule, through a ChunkSpool, so that each chunk is
// fetched once).
absl::Status StreamAuthenticatedFile(const capsule::CapsuleReader* reader,
                                     const capsule::PayloadKey& key, const capsule::FileEntry& f,
                                     capsule::WritableFile* sink, const ReleaseOptions& options);

// A new file at a Destination: missing parents are created no-follow (the process's own),
// data goes to an unnamed O_TMPFILE file (or a hidden temporary one), and Commit() fsyncs it
// and links it under its name, refusing to replace anything (kAlreadyExists). Destroyed
// without Commit(), it leaves nothing named. Everything Commit() needs after the link (the
// folder, opened for its sync) is opened by Create(), so that a failure after the link is rare;
// named() tells whether it happened before or after (a file once named was released).
class NewFileBeneath : public capsule::WritableFile {
 public:
  static absl::StatusOr<std::unique_ptr<NewFileBeneath>> Create(
      const Destination& to, mode_t mode, const std::optional<capsule::FileOwner>& owner);
  ~NewFileBeneath() override;
  absl::Status Append(absl::Span<const uint8_t> data) override;
  absl::Status Commit();
  bool named() const { return committed_; }

 private:
  NewFileBeneath() = default;
  capsule::Fd parent_;
  capsule::Fd parent_dir_;  // the parent opened for reading, for its fsync
  capsule::Fd file_;
  std::string base_;
  std::string temp_name_;  // when O_TMPFILE is not available
  std::string shown_;
  std::optional<capsule::FileOwner> owner_;
  capsule::CreatedDirs created_;
  CountingFdSink* sink_ = nullptr;
  std::unique_ptr<CountingFdSink> owned_sink_;
  bool committed_ = false;
};

}  // namespace bunker::site

#endif  // BUNKER_SITE_RELEASE_IO_H_
