#include "site/release_io.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "capsule/paths.h"
#include "site/chunk_spool.h"
#include "crypto/sha256.h"
#include "crypto/status_hint.h"
#include "crypto/status_macros.h"
#include "crypto/secret.h"

namespace bunker::site {
namespace {

constexpr size_t kSinkBuffer = 1 << 20;

// Drains `source`, handing each piece to `fn`.
template <typename Fn>
absl::Status Drain(capsule::ByteSource* source, Fn fn) {
  while (true) {
    BUNKER_ASSIGN_OR_RETURN(absl::Span<const uint8_t> piece, source->Next());
    if (piece.empty()) return absl::OkStatus();
    BUNKER_RETURN_IF_ERROR(fn(piece));
  }
}

}  // namespace

absl::StatusOr<absl::Span<const uint8_t>> CancellableSource::Next() {
  if (cancelled_ && cancelled_()) return absl::CancelledError("interrupted");
  return inner_->Next();
}

absl::Status CountingFdSink::Append(absl::Span<const uint8_t> data) {
  if (buffer_.size() + data.size() <= kSinkBuffer) {
    if (buffer_.capacity() < kSinkBuffer) buffer_.reserve(kSinkBuffer);
    buffer_.insert(buffer_.end(), data.begin(), data.end());
    if (buffer_.size() == kSinkBuffer) return Flush();
    return absl::OkStatus();
  }
  // A large piece (a file checked in memory) goes out from where it is, not through a copy.
  BUNKER_RETURN_IF_ERROR(Flush());
  if (data.size() < kSinkBuffer) {
    buffer_.insert(buffer_.end(), data.begin(), data.end());
    return absl::OkStatus();
  }
  size_t done = 0;
  return WriteAll(data, &done);
}

CountingFdSink::CountingFdSink(int fd, std::function<bool()> cancelled)
    : fd_(fd), cancelled_(std::move(cancelled)) {
  struct stat st;
  const int flags = ::fcntl(fd, F_GETFL);
  const bool writable = flags >= 0 && (flags & O_PATH) == 0 &&
                        ((flags & O_ACCMODE) == O_WRONLY || (flags & O_ACCMODE) == O_RDWR);
  if (writable && ::fstat(fd, &st) == 0 && S_ISFIFO(st.st_mode)) {
    // A new open file description of the same pipe: O_NONBLOCK on it leaves the caller's
    // description as it was. Only from a description open for writing: the reopening is done
    // with this process's rights, which must not stand in for a right the caller lacked.
    const std::string proc = absl::StrCat("/proc/self/fd/", fd);
    nonblocking_.Reset(::open(proc.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC));
    if (nonblocking_.valid()) fd_ = nonblocking_.get();
  } else if (::fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode)) {
    socket_ = true;
  }
}

absl::Status CountingFdSink::Flush() {
  size_t done = 0;
  absl::Status s = WriteAll(buffer_, &done);
  buffer_.erase(buffer_.begin(), buffer_.begin() + done);
  return s;
}

absl::Status CountingFdSink::WriteAll(absl::Span<const uint8_t> data, size_t* done) {
  while (*done < data.size()) {
    const ssize_t n =
        socket_ ? ::send(fd_, data.data() + *done, data.size() - *done, MSG_DONTWAIT | MSG_NOSIGNAL)
                : ::write(fd_, data.data() + *done, data.size() - *done);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        if (cancelled_ && cancelled_()) return absl::CancelledError("interrupted");
        struct pollfd p {fd_, POLLOUT, 0};
        ::poll(&p, 1, 200);
        continue;
      }
      return capsule::ErrnoStatus("cannot write the output", errno);
    }
    *done += static_cast<size_t>(n);
    written_ += static_cast<uint64_t>(n);
  }
  return absl::OkStatus();
}

absl::Status CopyPayload(const capsule::CapsuleReader* reader, const capsule::PayloadKey& key,
                         uint64_t begin, uint64_t end, uint64_t authenticate_to,
                         capsule::WritableFile* sink, const ReleaseOptions& options,
                         const capsule::RandomAccessFile* chunks_from) {
  if (end > begin) {
    BUNKER_ASSIGN_OR_RETURN(
        std::unique_ptr<capsule::PayloadStream> stream,
        reader->Stream(key, begin, end, options.threads, options.progress, chunks_from));
    CancellableSource source(stream.get(), options.cancelled);
    BUNKER_RETURN_IF_ERROR(Drain(&source, [sink](absl::Span<const uint8_t> piece) {
      return sink == nullptr ? absl::OkStatus() : sink->Append(piece);
    }));
  }
  if (authenticate_to > end) {
    BUNKER_ASSIGN_OR_RETURN(std::unique_ptr<capsule::PayloadStream> rest,
                            reader->Stream(key, end, authenticate_to, options.threads,
                                           nullptr, chunks_from));
    CancellableSource source(rest.get(), options.cancelled);
    BUNKER_RETURN_IF_ERROR(
        Drain(&source, [](absl::Span<const uint8_t>) { return absl::OkStatus(); }));
  }
  return absl::OkStatus();
}

absl::Status RemoteNeedsSpool(const capsule::CapsuleReader& reader, const ChunkSpool* spool,
                              uint64_t bytes, const std::string& spool_dir) {
  if (spool != nullptr || reader.file().parallelism() == 0) return absl::OkStatus();
  const std::string where = ChunkSpool::FolderFor(spool_dir);
  return WithHint(
      absl::ResourceExhaustedError(absl::StrCat(
          "no room in ", capsule::QuotePath(where), " to keep the ", bytes,
          " bytes of a remote capsule while they are checked before release; nothing was "
          "written")),
      "free space there (or point TMPDIR at a folder with room), or release into a folder "
      "with --to");
}

absl::Status StreamAuthenticatedFile(const capsule::CapsuleReader* reader,
                                     const capsule::PayloadKey& key, const capsule::FileEntry& f,
                                     capsule::WritableFile* sink, const ReleaseOptions& options) {
  const absl::Status mismatch =
      absl::DataLossError("file contents do not match the index digest");
  if (f.size <= options.held_in_memory) {
    capsule::MemorySink held;
    held.bytes.reserve(f.size);
    BUNKER_RETURN_IF_ERROR(
        CopyPayload(reader, key, f.offset, f.offset + f.size, f.offset + f.size, &held, options));
    if (crypto::Sha256::Hash(held.bytes) != f.sha256) return mismatch;
    absl::Status s = sink->Append(held.bytes);
    crypto::Wipe(absl::MakeSpan(held.bytes));
    return s;
  }
  // Large: a checking pass, then the writing pass (which authenticates each chunk again). From
  // a remote capsule the checking pass keeps the chunks in a local spool for the writing pass.
  const std::unique_ptr<ChunkSpool> spool =
      ChunkSpool::Create(*reader, f.offset, f.offset + f.size, options.spool_dir);
  BUNKER_RETURN_IF_ERROR(RemoteNeedsSpool(*reader, spool.get(), f.size, options.spool_dir));
  class Hasher : public capsule::WritableFile {
   public:
    absl::Status Append(absl::Span<const uint8_t> data) override {
      hash.Update(data);
      return absl::OkStatus();
    }
    crypto::Sha256 hash;
  } check;
  BUNKER_RETURN_IF_ERROR(CopyPayload(reader, key, f.offset, f.offset + f.size, f.offset + f.size,
                                     &check, options, spool ? spool->recording() : nullptr));
  if (check.hash.Finish() != f.sha256) return mismatch;
  if (spool) spool->FirstPassSucceeded();
  ReleaseOptions quiet = options;
  quiet.progress = nullptr;
  return CopyPayload(reader, key, f.offset, f.offset + f.size, f.offset + f.size, sink, quiet,
                     spool ? spool->replay() : nullptr);
}

absl::StatusOr<std::unique_ptr<NewFileBeneath>> NewFileBeneath::Create(
    const Destination& to, mode_t mode, const std::optional<capsule::FileOwner>& owner) {
  std::unique_ptr<NewFileBeneath> f(new NewFileBeneath());
  f->shown_ = to.shown;
  const size_t slash = to.relative.rfind('/');
  f->base_ = slash == std::string::npos ? to.relative : to.relative.substr(slash + 1);
  BUNKER_RETURN_IF_ERROR(capsule::CheckRelativePath(to.relative));
  if (slash == std::string::npos) {
    const int dup = ::fcntl(to.root.get(), F_DUPFD_CLOEXEC, 0);
    if (dup < 0) return capsule::ErrnoStatus(absl::StrCat("cannot use ", to.shown), errno);
    f->parent_ = capsule::Fd(dup);
  } else {
    BUNKER_ASSIGN_OR_RETURN(f->parent_,
                            capsule::MakeDirsBeneath(to.root.get(), to.relative.substr(0, slash),
                                                     0755, &f->created_, std::nullopt));
  }
  struct stat st;
  if (::fstatat(f->parent_.get(), f->base_.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) {
    return absl::AlreadyExistsError(absl::StrCat(capsule::QuotePath(to.shown), " already exists"));
  }
  // The new name is made durable with its folder, which must be readable to be synced: found
  // out now, before anything is written, not after the file is named.
  f->parent_dir_.Reset(::openat(f->parent_.get(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!f->parent_dir_.valid()) {
    return capsule::ErrnoStatus(
        absl::StrCat("cannot open the folder of ", capsule::QuotePath(to.shown)), errno);
  }
  int fd = ::openat(f->parent_.get(), ".", O_TMPFILE | O_WRONLY | O_CLOEXEC, mode);
  if (fd < 0 && (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL)) {
    uint8_t rnd[8];
    crypto::RandomBytes(absl::MakeSpan(rnd));
    f->temp_name_ = absl::StrCat(".", f->base_.substr(0, 128), ".bunker-", crypto::ToHex(rnd));
    fd = ::openat(f->parent_.get(), f->temp_name_.c_str(),
                  O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
    if (fd < 0) f->temp_name_.clear();
  }
  if (fd < 0) {
    return capsule::ErrnoStatus(absl::StrCat("cannot create ", capsule::QuotePath(to.shown)), errno);
  }
  f->file_ = capsule::Fd(fd);
  // Whether the file can be given away at all, before a byte is written: to the owner and back
  // (it is given for good only once named: a file we do not own could not be linked under
  // fs.protected_hardlinks, and a named temporary file must not be readable early).
  if (owner) {
    if (::fchown(fd, owner->uid, owner->gid) != 0 || ::fchown(fd, ::geteuid(), ::getegid()) != 0) {
      return absl::PermissionDeniedError(
          absl::StrCat("this process cannot give files to uid ", owner->uid,
                       " (a verifier service needs CAP_CHOWN)"));
    }
    f->owner_ = owner;
  }
  f->owned_sink_ = std::make_unique<CountingFdSink>(fd);
  f->sink_ = f->owned_sink_.get();
  return f;
}

NewFileBeneath::~NewFileBeneath() {
  if (!committed_ && !temp_name_.empty()) ::unlinkat(parent_.get(), temp_name_.c_str(), 0);
}

absl::Status NewFileBeneath::Append(absl::Span<const uint8_t> data) { return sink_->Append(data); }

absl::Status NewFileBeneath::Commit() {
  const std::string what = capsule::QuotePath(shown_);
  BUNKER_RETURN_IF_ERROR(sink_->Flush());
  if (::fsync(file_.get()) != 0) {
    return capsule::ErrnoStatus(absl::StrCat("cannot write ", what), errno);
  }
  int r;
  if (temp_name_.empty()) {
    const std::string proc = absl::StrCat("/proc/self/fd/", file_.get());
    r = ::linkat(AT_FDCWD, proc.c_str(), parent_.get(), base_.c_str(), AT_SYMLINK_FOLLOW);
  } else {
    r = ::linkat(parent_.get(), temp_name_.c_str(), parent_.get(), base_.c_str(), 0);
  }
  if (r != 0) {
    if (errno == EEXIST) return absl::AlreadyExistsError(absl::StrCat(what, " already exists"));
    return capsule::ErrnoStatus(absl::StrCat("cannot create ", what), errno);
  }
  if (!temp_name_.empty()) ::unlinkat(parent_.get(), temp_name_.c_str(), 0);
  committed_ = true;
  created_.Keep();
  // Given away through the descriptor, after the name exists (see Create).
  if (owner_ && ::fchown(file_.get(), owner_->uid, owner_->gid) != 0) {
    return capsule::ErrnoStatus(absl::StrCat("cannot give ", what, " to its requester"), errno);
  }
  // The new name is made durable with its directory.
  return capsule::SyncDirectory(parent_dir_.get(), absl::StrCat("the folder of ", what));
}

}  // namespace bunker::site
