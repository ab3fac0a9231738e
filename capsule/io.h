// The small file interfaces capsule/ reads and writes through, so tests can run in memory.
#ifndef BUNKER_CAPSULE_IO_H_
#define BUNKER_CAPSULE_IO_H_

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "capsule/fd.h"

namespace bunker::capsule {

// A read-only file of fixed size. ReadAt() is safe to call from many threads at once.
class RandomAccessFile {
 public:
  virtual ~RandomAccessFile() = default;
  virtual uint64_t size() const = 0;
  // Fills `out` exactly from `offset`. kOutOfRange past the end; kUnavailable on an I/O error.
  virtual absl::Status ReadAt(uint64_t offset, absl::Span<uint8_t> out) const = 0;
  // How many reads at once suit this file when a caller lets the reader choose its thread
  // count: 0 means one per core (local files); a remote object (capsule/s3_client.h) answers
  // more, since its reads mostly wait on the network.
  virtual int parallelism() const { return 0; }
  // A hint, like posix_fadvise(SEQUENTIAL): the caller is about to read all of [begin, end),
  // mostly in ascending order and in pieces of any size. A remote object (capsule/s3_client.h)
  // then fetches that range in large windows ahead of the reads; reads outside every hinted
  // range still fetch only what they ask for. Changes no result, only how reads are made.
  virtual void WillRead(uint64_t begin, uint64_t end) const {
    (void)begin;
    (void)end;
  }
  // True only for a private copy of chunks that this process already checked against the
  // signed chunk table of the capsule it reads them for, kept where only this process's user
  // can reach it (site/chunk_spool.h). CapsuleReader::Stream then authenticates the chunks it
  // reads through it by their AEAD tag alone (spec/STORE.md "The release spool").
  virtual bool holds_checked_chunks() const { return false; }
};

// A pull source of bytes, read in pieces of any size.
class ByteSource {
 public:
  virtual ~ByteSource() = default;
  // The next piece; an empty span at the end. The span stays valid until the next call.
  virtual absl::StatusOr<absl::Span<const uint8_t>> Next() = 0;
};

// A sequential sink.
class WritableFile {
 public:
  virtual ~WritableFile() = default;
  virtual absl::Status Append(absl::Span<const uint8_t> data) = 0;
};

// Opens a file on disk for ReadAt (pread). kNotFound when absent, kInvalidArgument when not a
// regular file. The error names the path the caller gave.
absl::StatusOr<std::unique_ptr<RandomAccessFile>> OpenFile(const std::string& path);

// The same over a descriptor someone else opened (the verifier service never opens a path a
// user names): takes ownership of `fd` (closed on error too); it must be a regular file open
// for reading, else kInvalidArgument. `name` is how errors name it.
absl::StatusOr<std::unique_ptr<RandomAccessFile>> OpenFileDescriptor(int fd,
                                                                     const std::string& name);

// A RandomAccessFile over bytes in memory (tests, vectors).
std::unique_ptr<RandomAccessFile> MemoryFile(std::vector<uint8_t> bytes);

// A WritableFile appending to a vector (tests).
class MemorySink : public WritableFile {
 public:
  absl::Status Append(absl::Span<const uint8_t> data) override {
    bytes.insert(bytes.end(), data.begin(), data.end());
    return absl::OkStatus();
  }
  std::vector<uint8_t> bytes;
};

// Writes a file atomically: data goes to an unnamed O_TMPFILE file in `path`'s folder (or, where
// the filesystem lacks O_TMPFILE, or with `overwrite`, a hidden named temporary file); Commit()
// fsyncs it and gives it its name (refusing to replace an existing file unless `overwrite`).
// Destroying the writer without Commit() discards the data, so a failed or interrupted write
// leaves nothing at `path`, and with O_TMPFILE nothing at all even after SIGKILL.
class AtomicFileWriter : public WritableFile {
 public:
  // `mode` is applied to the temporary file at creation (e.g. 0600 for keys).
  static absl::StatusOr<std::unique_ptr<AtomicFileWriter>> Create(const std::string& path,
                                                                  int mode = 0644,
                                                                  bool overwrite = false);
  ~AtomicFileWriter() override;
  absl::Status Append(absl::Span<const uint8_t> data) override;
  absl::Status Commit();
  // The device and inode of the file being written, for a caller that must not read it back
  // (sealing a tree that holds it: the fallback's temporary file has a name there).
  absl::StatusOr<std::pair<dev_t, ino_t>> FileId() const;

 private:
  AtomicFileWriter(std::string path, std::string tmp, Fd fd, bool overwrite);
  absl::Status Flush();
  std::string path_;
  std::string tmp_;
  Fd fd_;
  bool overwrite_;
  bool committed_ = false;
  std::vector<uint8_t> buffer_;
};

// A writer to an already-open descriptor (stdout), buffered. Does not close it.
class FdWriter : public WritableFile {
 public:
  explicit FdWriter(int fd) : fd_(fd) {}
  ~FdWriter() override;
  absl::Status Append(absl::Span<const uint8_t> data) override;
  absl::Status Flush();

 private:
  int fd_;
  std::vector<uint8_t> buffer_;
};

// The one mapping from an errno to a canonical code, for every file and socket operation in
// Bunker: kNotFound (ENOENT), kAlreadyExists (EEXIST, ENOTEMPTY), kPermissionDenied (EACCES,
// EPERM, EROFS), kResourceExhausted (ENOSPC, EDQUOT, ENOMEM), kInvalidArgument (ENAMETOOLONG,
// ENOTDIR, ELOOP, EBADF), kUnavailable otherwise.
absl::StatusCode ErrnoCode(int err);

// "what: strerror(err)" with ErrnoCode(err).
absl::Status ErrnoStatus(const std::string& what, int err);

// fsyncs the directory open as `dirfd`, so that the names created or removed in it are durable;
// an errno failure as ErrnoStatus("cannot sync <what>").
absl::Status SyncDirectory(int dirfd, const std::string& what);

// Opens the directory `dir` and fsyncs it, as above; `dir` names it in errors.
absl::Status SyncDirectory(const std::string& dir);

// Reads exactly `out.size()` bytes of `fd` at `offset`, retrying on EINTR and short reads.
// kOutOfRange if the file ends first (callers say what that means for them); an errno failure
// as ErrnoStatus("cannot read <what>").
absl::Status PreadAll(int fd, absl::Span<uint8_t> out, uint64_t offset, const std::string& what);

// Writes all of `data` to `fd` at `offset`, retrying on EINTR and short writes; an errno failure
// as ErrnoStatus("cannot write <what>").
absl::Status PwriteAll(int fd, absl::Span<const uint8_t> data, uint64_t offset,
                       const std::string& what);

// Writes all of `data` to `fd`, retrying on EINTR and short writes.
absl::Status WriteAll(int fd, absl::Span<const uint8_t> data);

// Reads a whole small file (keys, policies) up to `max_size` bytes; kInvalidArgument beyond.
absl::StatusOr<std::string> ReadSmallFile(const std::string& path, size_t max_size);

}  // namespace bunker::capsule

#endif  // BUNKER_CAPSULE_IO_H_
