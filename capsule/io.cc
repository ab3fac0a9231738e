#include "capsule/io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <random>

#include "absl/strings/str_cat.h"
#include "capsule/fd.h"
#include "crypto/secret.h"
#include "crypto/sha256.h"

namespace bunker::capsule {
namespace {

constexpr size_t kWriteBuffer = 1 << 20;


class PosixFile : public RandomAccessFile {
 public:
  PosixFile(Fd fd, uint64_t size) : fd_(std::move(fd)), size_(size) {}
  uint64_t size() const override { return size_; }
  absl::Status ReadAt(uint64_t offset, absl::Span<uint8_t> out) const override {
    if (offset > size_ || out.size() > size_ - offset) {
      return absl::OutOfRangeError("read past the end of the file");
    }
    absl::Status s = PreadAll(fd_.get(), out, offset, "the file");
    if (absl::IsOutOfRange(s)) return absl::OutOfRangeError("file shrank while reading");
    return s;
  }

 private:
  Fd fd_;
  uint64_t size_;
};

class InMemoryFile : public RandomAccessFile {
 public:
  explicit InMemoryFile(std::vector<uint8_t> bytes) : bytes_(std::move(bytes)) {}
  uint64_t size() const override { return bytes_.size(); }
  absl::Status ReadAt(uint64_t offset, absl::Span<uint8_t> out) const override {
    if (offset > bytes_.size() || out.size() > bytes_.size() - offset) {
      return absl::OutOfRangeError("read past the end of the file");
    }
    if (!out.empty()) std::memcpy(out.data(), bytes_.data() + offset, out.size());
    return absl::OkStatus();
  }

 private:
  std::vector<uint8_t> bytes_;
};

}  // namespace

absl::StatusCode ErrnoCode(int err) {
  switch (err) {
    case ENOENT:
      return absl::StatusCode::kNotFound;
    case EEXIST:
    case ENOTEMPTY:
      return absl::StatusCode::kAlreadyExists;
    case EACCES:
    case EPERM:
    case EROFS:
      return absl::StatusCode::kPermissionDenied;
    case ENOSPC:
    case EDQUOT:
    case ENOMEM:
      return absl::StatusCode::kResourceExhausted;
    case ENAMETOOLONG:
    case ENOTDIR:
    case ELOOP:
    case EBADF:  // a caller's descriptor that is not open
      return absl::StatusCode::kInvalidArgument;
    default:
      return absl::StatusCode::kUnavailable;
  }
}

absl::Status ErrnoStatus(const std::string& what, int err) {
  return absl::Status(ErrnoCode(err), absl::StrCat(what, ": ", std::strerror(err)));
}

absl::StatusOr<std::unique_ptr<RandomAccessFile>> OpenFile(const std::string& path) {
  // O_NONBLOCK: a FIFO named by mistake must not hang us before the regular-file check (it
  // changes nothing for a regular file's reads).
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
  if (!fd.valid()) return ErrnoStatus(absl::StrCat("cannot open ", path), errno);
  return OpenFileDescriptor(fd.release(), path);
}

absl::StatusOr<std::unique_ptr<RandomAccessFile>> OpenFileDescriptor(int fd,
                                                                     const std::string& name) {
  Fd owned(fd);
  struct stat st;
  if (::fstat(owned.get(), &st) != 0) {
    return ErrnoStatus(absl::StrCat("cannot stat ", name), errno);
  }
  const int flags = ::fcntl(owned.get(), F_GETFL);
  if (!S_ISREG(st.st_mode) || flags < 0 || (flags & O_ACCMODE) == O_WRONLY ||
      (flags & O_PATH) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(name, " is not a regular file open for reading"));
  }
  return std::unique_ptr<RandomAccessFile>(
      std::make_unique<PosixFile>(std::move(owned), static_cast<uint64_t>(st.st_size)));
}

std::unique_ptr<RandomAccessFile> MemoryFile(std::vector<uint8_t> bytes) {
  return std::make_unique<InMemoryFile>(std::move(bytes));
}

absl::Status SyncDirectory(int dirfd, const std::string& what) {
  if (::fsync(dirfd) != 0) return ErrnoStatus(absl::StrCat("cannot sync ", what), errno);
  return absl::OkStatus();
}

absl::Status SyncDirectory(const std::string& dir) {
  Fd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.valid()) return ErrnoStatus(absl::StrCat("cannot open ", dir), errno);
  return SyncDirectory(fd.get(), dir);
}

absl::Status PreadAll(int fd, absl::Span<uint8_t> out, uint64_t offset, const std::string& what) {
  size_t done = 0;
  while (done < out.size()) {
    const ssize_t n =
        ::pread(fd, out.data() + done, out.size() - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(absl::StrCat("cannot read ", what), errno);
    }
    if (n == 0) return absl::OutOfRangeError(absl::StrCat(what, " ends early"));
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

absl::Status PwriteAll(int fd, absl::Span<const uint8_t> data, uint64_t offset,
                       const std::string& what) {
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n =
        ::pwrite(fd, data.data() + done, data.size() - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(absl::StrCat("cannot write ", what), errno);
    }
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

absl::Status WriteAll(int fd, absl::Span<const uint8_t> data) {
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus("write error", errno);
    }
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<AtomicFileWriter>> AtomicFileWriter::Create(
    const std::string& path, int mode, bool overwrite) {
  // lstat, not access: a dangling symlink at `path` is there too, and Commit (which never
  // follows or replaces it) would fail only after all the data was written.
  struct stat existing;
  if (!overwrite && ::lstat(path.c_str(), &existing) == 0) {
    return absl::AlreadyExistsError(absl::StrCat(path, " already exists"));
  }
  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "" : path.substr(0, slash + 1);
  const std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
  if (!overwrite && ::access("/proc/self/fd", F_OK) == 0) {
    // An unnamed file in the target's folder: if the process dies, even by SIGKILL, nothing
    // is left behind. Commit() gives it its name with linkat(2).
    Fd fd(::open(dir.empty() ? "." : dir.c_str(), O_TMPFILE | O_WRONLY | O_CLOEXEC, mode));
    if (fd.valid()) {
      ::fchmod(fd.get(), static_cast<mode_t>(mode));  // not subject to the umask, as asked
      return std::unique_ptr<AtomicFileWriter>(
          new AtomicFileWriter(path, "", std::move(fd), overwrite));
    }
    // Filesystems without O_TMPFILE: fall back to a hidden named file.
  }
  uint8_t rnd[6];
  crypto::RandomBytes(absl::MakeSpan(rnd));
  const std::string tmp = absl::StrCat(dir, ".", base, ".", crypto::ToHex(rnd), ".partial");
  Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode));
  if (!fd.valid()) return ErrnoStatus(absl::StrCat("cannot create ", path), errno);
  ::fchmod(fd.get(), static_cast<mode_t>(mode));  // not subject to the umask, as asked
  return std::unique_ptr<AtomicFileWriter>(
      new AtomicFileWriter(path, tmp, std::move(fd), overwrite));
}

AtomicFileWriter::AtomicFileWriter(std::string path, std::string tmp, Fd fd, bool overwrite)
    : path_(std::move(path)), tmp_(std::move(tmp)), fd_(std::move(fd)), overwrite_(overwrite) {
  buffer_.reserve(kWriteBuffer);
}

absl::StatusOr<std::pair<dev_t, ino_t>> AtomicFileWriter::FileId() const {
  struct stat st;
  if (::fstat(fd_.get(), &st) != 0) return ErrnoStatus(absl::StrCat("cannot stat ", path_), errno);
  return std::make_pair(st.st_dev, st.st_ino);
}

AtomicFileWriter::~AtomicFileWriter() {
  fd_.Reset();
  if (!committed_ && !tmp_.empty()) ::unlink(tmp_.c_str());
}

absl::Status AtomicFileWriter::Flush() {
  absl::Status s = WriteAll(fd_.get(), buffer_);
  buffer_.clear();
  if (!s.ok()) return absl::Status(s.code(), absl::StrCat("writing ", path_, ": ", s.message()));
  return s;
}

absl::Status AtomicFileWriter::Append(absl::Span<const uint8_t> data) {
  if (committed_ || !fd_.valid()) return absl::FailedPreconditionError("file already committed");
  if (buffer_.size() + data.size() > kWriteBuffer) {
    absl::Status s = Flush();
    if (!s.ok()) return s;
    if (data.size() >= kWriteBuffer) {
      s = WriteAll(fd_.get(), data);
      if (!s.ok()) return absl::Status(s.code(), absl::StrCat("writing ", path_, ": ", s.message()));
      return s;
    }
  }
  buffer_.insert(buffer_.end(), data.begin(), data.end());
  return absl::OkStatus();
}

absl::Status AtomicFileWriter::Commit() {
  absl::Status s = Flush();
  if (!s.ok()) return s;
  if (::fsync(fd_.get()) != 0) return ErrnoStatus(absl::StrCat("cannot sync ", path_), errno);
  if (tmp_.empty()) {
    // The unnamed file gets its name; linkat fails if the name appeared meanwhile.
    const std::string self = absl::StrCat("/proc/self/fd/", fd_.get());
    if (::linkat(AT_FDCWD, self.c_str(), AT_FDCWD, path_.c_str(), AT_SYMLINK_FOLLOW) != 0) {
      return ErrnoStatus(absl::StrCat("cannot create ", path_), errno);
    }
    fd_.Reset();
  } else if (overwrite_) {
    fd_.Reset();
    if (::rename(tmp_.c_str(), path_.c_str()) != 0) {
      return ErrnoStatus(absl::StrCat("cannot create ", path_), errno);
    }
  } else {
    fd_.Reset();
    // link() fails if the target appeared meanwhile, so an existing file is never replaced.
    if (::link(tmp_.c_str(), path_.c_str()) != 0) {
      return ErrnoStatus(absl::StrCat("cannot create ", path_), errno);
    }
    ::unlink(tmp_.c_str());
  }
  committed_ = true;
  const size_t slash = path_.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : path_.substr(0, slash + 1);
  // The new name is durable only with its directory.
  return SyncDirectory(dir);
}

FdWriter::~FdWriter() { (void)Flush(); }

absl::Status FdWriter::Flush() {
  absl::Status s = WriteAll(fd_, buffer_);
  buffer_.clear();
  return s;
}

absl::Status FdWriter::Append(absl::Span<const uint8_t> data) {
  if (buffer_.size() + data.size() > kWriteBuffer) {
    absl::Status s = Flush();
    if (!s.ok()) return s;
    if (data.size() >= kWriteBuffer) return WriteAll(fd_, data);
  }
  buffer_.insert(buffer_.end(), data.begin(), data.end());
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadSmallFile(const std::string& path, size_t max_size) {
  // O_NONBLOCK: a FIFO named by mistake must not hang us before the regular-file check.
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
  if (!fd.valid()) return ErrnoStatus(absl::StrCat("cannot open ", path), errno);
  struct stat st;
  if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(path, " is not a regular file"));
  }
  std::string out;
  char buf[8192];
  while (true) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(absl::StrCat("cannot read ", path), errno);
    }
    if (n == 0) break;
    if (out.size() + static_cast<size_t>(n) > max_size) {
      crypto::Wipe(absl::MakeSpan(reinterpret_cast<uint8_t*>(buf), sizeof buf));
      return absl::InvalidArgumentError(
          absl::StrCat(path, " is larger than ", max_size, " bytes"));
    }
    out.append(buf, static_cast<size_t>(n));
  }
  fd.Reset();
  crypto::Wipe(absl::MakeSpan(reinterpret_cast<uint8_t*>(buf), sizeof buf));
  return out;
}

}  // namespace bunker::capsule
