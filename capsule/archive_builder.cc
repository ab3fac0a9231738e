#include "capsule/archive_builder.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "capsule/fd.h"
#include "capsule/file_index.h"
#include "capsule/io.h"
#include "capsule/input_archive.h"
#include "capsule/paths.h"
#include "capsule/tree_walk.h"
#include "crypto/sha256.h"

namespace bunker::capsule {
namespace {

struct ArchiveDeleter {
  void operator()(struct archive* a) const { archive_free(a); }
};
using ArchivePtr = std::unique_ptr<struct archive, ArchiveDeleter>;
struct EntryDeleter {
  void operator()(struct archive_entry* e) const { archive_entry_free(e); }
};
using EntryPtr = std::unique_ptr<struct archive_entry, EntryDeleter>;
struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};

std::string ArchiveError(struct archive* a) {
  const char* msg = archive_error_string(a);
  return msg != nullptr ? msg : "unknown libarchive error";
}

// Feeds libarchive's output into the capsule writer, counting payload offsets exactly (the
// archive is written unbuffered, so the count after a header is where the data starts).
struct Sink {
  CapsuleWriter* writer;
  absl::Status status;
  // Set once the build failed: whatever libarchive still wants to write is refused.
  bool closed = false;
};

la_ssize_t WriteCallback(struct archive*, void* client, const void* buf, size_t n) {
  auto* sink = static_cast<Sink*>(client);
  if (sink->closed) return -1;
  absl::Status s = sink->writer->Append(absl::MakeConstSpan(static_cast<const uint8_t*>(buf), n));
  if (!s.ok()) {
    sink->status = s;
    return -1;
  }
  return static_cast<la_ssize_t>(n);
}

// Hashes file contents and writes the file index records on a thread of its own, in archive
// order, so that the per-file SHA-256 pass (FORMAT.md "File index", "Per-file digests") runs
// beside the chunk pass instead of on the thread that reads the dataset. The reading thread
// takes a buffer, fills it, writes it into the archive and hands it over; the buffer comes
// back once hashed. Memory: kBuffers buffers and at most kMaxQueued queued records.
class IndexSpooler {
 public:
  static constexpr size_t kBuffers = 4;
  static constexpr size_t kBufferSize = size_t{1} << 20;
  static constexpr size_t kMaxQueued = 256;

  // Records go to `index`, which must outlive the spooler.
  explicit IndexSpooler(std::FILE* index) : index_(index) {
    buffers_.resize(kBuffers);
    for (auto& b : buffers_) {
      b.resize(kBufferSize);
      free_.push_back(&b);
    }
    thread_ = std::thread([this] { Run(); });
  }
  // Stops after what is queued (e.g. after a failed build) and joins the thread.
  ~IndexSpooler() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  IndexSpooler(const IndexSpooler&) = delete;
  IndexSpooler& operator=(const IndexSpooler&) = delete;

  // A free buffer of kBufferSize bytes, waiting for one if all are queued.
  std::vector<uint8_t>* TakeBuffer() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return !free_.empty(); });
    std::vector<uint8_t>* b = free_.back();
    free_.pop_back();
    return b;
  }
  // Queues the first `n` bytes of `buffer` (from TakeBuffer) as the next bytes of the current
  // file; the buffer belongs to the spooler until it is hashed.
  void Hash(std::vector<uint8_t>* buffer, size_t n) { Push(Item{buffer, n, {}, false}); }
  // Queues the record of the next entry. For a file, `sha256` is set to the digest of the
  // bytes queued since the previous record.
  void Record(FileEntry entry) {
    const bool is_file = entry.type == FileEntry::Type::kFile;
    Push(Item{nullptr, 0, std::move(entry), is_file});
  }
  // Waits until every queued item is done; the first failure to write a record.
  absl::Status Flush() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return queue_.empty() && !busy_; });
    return status_;
  }

 private:
  struct Item {
    std::vector<uint8_t>* buffer = nullptr;  // bytes to hash, or null for a record
    size_t size = 0;
    FileEntry record;
    bool digest = false;  // set the record's sha256 from the bytes hashed since the last one
  };

  void Push(Item item) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return queue_.size() < kMaxQueued; });
      queue_.push_back(std::move(item));
    }
    cv_.notify_all();
  }

  void Run() {
    crypto::Sha256 hash;
    while (true) {
      Item item;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
        if (queue_.empty()) return;  // stopped and drained
        item = std::move(queue_.front());
        queue_.pop_front();
        busy_ = true;
      }
      absl::Status s;
      if (item.buffer != nullptr) {
        hash.Update(absl::MakeConstSpan(item.buffer->data(), item.size));
      } else {
        if (item.digest) {
          item.record.sha256 = hash.Finish();
          hash = crypto::Sha256();
        }
        const std::vector<uint8_t> record = EncodeIndexRecord(item.record);
        errno = 0;
        if (std::fwrite(record.data(), 1, record.size(), index_) != record.size()) {
          s = ErrnoStatus("cannot write the temporary file index", errno != 0 ? errno : EIO);
        }
      }
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (item.buffer != nullptr) free_.push_back(item.buffer);
        if (!s.ok() && status_.ok()) status_ = s;
        busy_ = false;
      }
      cv_.notify_all();
    }
  }

  std::FILE* index_;
  std::vector<std::vector<uint8_t>> buffers_;
  std::mutex mu_;
  std::condition_variable cv_;  // any change: a free buffer, a queued or finished item
  std::vector<std::vector<uint8_t>*> free_;
  std::deque<Item> queue_;
  bool busy_ = false;
  bool stop_ = false;
  absl::Status status_;
  std::thread thread_;
};

// The file the index records wait in until the archive is complete: an unnamed file (O_TMPFILE)
// in $TMPDIR, or /tmp when TMPDIR is unset or empty, that disappears with the process however it
// ends. Where the file system lacks O_TMPFILE, a named file there, removed at once. Failures are
// the errno's status naming the folder (ENOSPC: kResourceExhausted).
absl::StatusOr<std::FILE*> OpenTemporaryIndex() {
  const char* env = std::getenv("TMPDIR");
  const std::string dir = env != nullptr && *env != '\0' ? env : "/tmp";
  const std::string what = absl::StrCat("cannot create the temporary file index in ", dir);
  Fd fd(::open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600));
  if (!fd.valid() && (errno == EOPNOTSUPP || errno == EISDIR)) {
    std::string name = absl::StrCat(dir, "/.bunker-index-XXXXXX");
    fd.Reset(::mkostemp(name.data(), O_CLOEXEC));
    if (fd.valid()) ::unlink(name.c_str());
  }
  if (!fd.valid()) return ErrnoStatus(what, errno);
  std::FILE* f = ::fdopen(fd.get(), "w+b");
  if (f == nullptr) return ErrnoStatus(what, errno);
  fd.release();  // fclose closes it
  return f;
}

class Builder {
 public:
  explicit Builder(CapsuleWriter* writer) : sink_{writer, absl::OkStatus()} {}
  // Freeing an archive that was not closed closes it, and closing pads the unfinished entry
  // with zeros up to the size its header declared (an input tar of 2 KiB may declare 8 GiB)
  // and writes the end-of-archive blocks. After a failure none of that may reach the capsule:
  // what sealing writes stays bounded by the input actually read.
  ~Builder() {
    sink_.closed = true;
    spooler_.reset();  // before index_ closes
  }

  absl::Status Open() {
    out_.reset(archive_write_new());
    if (!out_) return absl::ResourceExhaustedError("cannot start the archive writer");
    absl::StatusOr<std::FILE*> index = OpenTemporaryIndex();
    if (!index.ok()) return index.status();
    index_.reset(*index);
    spooler_ = std::make_unique<IndexSpooler>(index_.get());
    if (archive_write_set_format_pax_restricted(out_.get()) != ARCHIVE_OK ||
        archive_write_set_bytes_per_block(out_.get(), 0) != ARCHIVE_OK ||
        archive_write_set_bytes_in_last_block(out_.get(), 1) != ARCHIVE_OK ||
        archive_write_open2(out_.get(), &sink_, nullptr, WriteCallback, nullptr, nullptr) !=
            ARCHIVE_OK) {
      return absl::InternalError(absl::StrCat("archive writer: ", ArchiveError(out_.get())));
    }
    return absl::OkStatus();
  }

  // Adds one entry whose metadata is in `entry` (pathname already normalized). For regular
  // files, `read` fills a buffer and returns bytes read (0 at end, <0 on error).
  template <typename ReadFn>
  absl::Status Add(struct archive_entry* entry, const std::string& path, ReadFn read) {
    FileEntry fe;
    fe.path = path;
    fe.mode = archive_entry_perm(entry) & 0777;
    fe.mtime = archive_entry_mtime(entry);
    archive_entry_set_pathname(entry, path.c_str());
    archive_entry_set_perm(entry, fe.mode);
    archive_entry_set_uid(entry, 0);
    archive_entry_set_gid(entry, 0);
    archive_entry_set_uname(entry, nullptr);
    archive_entry_set_gname(entry, nullptr);
    archive_entry_sparse_clear(entry);
    archive_entry_xattr_clear(entry);
    archive_entry_acl_clear(entry);
    archive_entry_set_fflags(entry, 0, 0);

    const char* hardlink = archive_entry_hardlink(entry);
    const mode_t type = archive_entry_filetype(entry);
    if (hardlink != nullptr) {
      absl::StatusOr<std::string> target = NormalizeEntryPath(hardlink);
      if (!target.ok()) return target.status();
      if (regular_files_.count(crypto::Sha256::Hash(*target)) == 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            "hard link ", QuotePath(path), " points to ", QuotePath(*target),
            ", which is not an earlier regular file in the archive"));
      }
      archive_entry_set_hardlink(entry, target->c_str());
      archive_entry_set_size(entry, 0);
      fe.type = FileEntry::Type::kHardlink;
      fe.link_target = *target;
      ++stats_.hardlinks;
    } else if (type == AE_IFREG) {
      fe.type = FileEntry::Type::kFile;
      fe.size = static_cast<uint64_t>(archive_entry_size(entry));
      ++stats_.files;
    } else if (type == AE_IFDIR) {
      fe.type = FileEntry::Type::kDirectory;
      archive_entry_set_size(entry, 0);
      ++stats_.directories;
    } else if (type == AE_IFLNK) {
      const char* target = archive_entry_symlink(entry);
      fe.type = FileEntry::Type::kSymlink;
      fe.link_target = target != nullptr ? target : "";
      // Refuse now what every reader would refuse at open.
      absl::Status s = CheckSymlinkTarget(path, fe.link_target);
      if (!s.ok()) return s;
      archive_entry_set_size(entry, 0);
      ++stats_.symlinks;
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("unsupported file type at ", QuotePath(path),
                       " (only files, directories and symlinks can be sealed)"));
    }

    if (archive_write_header(out_.get(), entry) < ARCHIVE_WARN) return WriteError(path);
    if (fe.type == FileEntry::Type::kFile) {
      fe.offset = sink_.writer->payload_size();
      uint64_t total = 0;
      while (true) {
        std::vector<uint8_t>* buf = spooler_->TakeBuffer();
        const la_ssize_t n = read(buf->data(), buf->size());
        if (n > 0) total += static_cast<uint64_t>(n);
        if (n <= 0 || total > fe.size) {
          spooler_->Hash(buf, 0);  // gives the buffer back
          if (n < 0) return read_status_;
          break;
        }
        const bool written =
            archive_write_data(out_.get(), buf->data(), static_cast<size_t>(n)) >= 0;
        spooler_->Hash(buf, static_cast<size_t>(n));
        if (!written) return WriteError(path);
      }
      if (total != fe.size) {
        return absl::AbortedError(
            absl::StrCat(QuotePath(path), " changed size while it was being sealed"));
      }
      stats_.content_bytes += total;
      if (track_regular_files_) regular_files_.insert(crypto::Sha256::Hash(path));
    }
    if (archive_write_finish_entry(out_.get()) < ARCHIVE_WARN) return WriteError(path);
    spooler_->Record(std::move(fe));  // a file's digest is filled in there
    return absl::OkStatus();
  }

  // Closes the archive and appends the index to the payload.
  absl::StatusOr<BuildStats> Finish() {
    if (archive_write_close(out_.get()) != ARCHIVE_OK) return WriteError("end of archive");
    CapsuleWriter* writer = sink_.writer;
    writer->MarkArchiveEnd();
    if (absl::Status s = spooler_->Flush(); !s.ok()) return s;
    // The index's last records reach the file here: a full disk shows now (ENOSPC).
    if (std::fflush(index_.get()) != 0) {
      return ErrnoStatus("cannot write the temporary file index", errno);
    }
    if (std::fseek(index_.get(), 0, SEEK_SET) != 0) {
      return ErrnoStatus("cannot read back the temporary file index", errno);
    }
    std::vector<uint8_t> buf(1 << 16);
    while (true) {
      const size_t n = std::fread(buf.data(), 1, buf.size(), index_.get());
      if (n == 0) {
        if (std::ferror(index_.get())) {
          return ErrnoStatus("cannot read back the temporary file index", errno);
        }
        break;
      }
      absl::Status s = writer->Append(absl::MakeConstSpan(buf.data(), n));
      if (!s.ok()) return s;
    }
    return stats_;
  }

  void set_read_status(absl::Status s) { read_status_ = std::move(s); }
  // Hard links are possible (an imported archive): remember the regular files added, for
  // checking that a link names an earlier one. A directory walk never makes hard links, so it
  // keeps nothing per file.
  void track_regular_files() { track_regular_files_ = true; }

 private:
  absl::Status WriteError(const std::string& what) {
    if (!sink_.status.ok()) return sink_.status;
    return absl::InternalError(
        absl::StrCat("archive writer failed at ", QuotePath(what), ": ", ArchiveError(out_.get())));
  }

  Sink sink_;
  ArchivePtr out_;
  std::unique_ptr<std::FILE, FileCloser> index_;
  std::unique_ptr<IndexSpooler> spooler_;  // writes to index_
  BuildStats stats_;
  // The SHA-256 of each regular file's path (32 bytes however long the path), only with
  // track_regular_files_.
  struct DigestHash {
    size_t operator()(const crypto::Sha256Digest& d) const {
      size_t h;
      std::memcpy(&h, d.data(), sizeof(h));
      return h;
    }
  };
  std::unordered_set<crypto::Sha256Digest, DigestHash> regular_files_;
  bool track_regular_files_ = false;
  absl::Status read_status_;
};

std::string TrimTrailingSlashes(std::string p) {
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  return p;
}

// Adds the entry described by `entry` at `path`; a regular file's contents are read from
// `file`, straight into the builder's buffer (through archive_read_data they would be copied
// once more, in pieces of 64 KiB).
absl::Status AddFromDisk(Builder& builder, struct archive_entry* entry, const std::string& path,
                         const Fd& file) {
  return builder.Add(entry, path, [&](uint8_t* buf, size_t n) -> la_ssize_t {
    while (true) {
      const ssize_t got = ::read(file.get(), buf, n);
      if (got >= 0) return static_cast<la_ssize_t>(got);
      if (errno == EINTR) continue;
      builder.set_read_status(ErrnoStatus(absl::StrCat("cannot read ", QuotePath(path)), errno));
      return -1;
    }
  });
}

// The input is opened once and everything below it is reached through descriptors
// (capsule/tree_walk.h): a folder swapped for a symlink while we walk is refused, never followed
// out of the tree. Each entry gets the metadata libarchive's disk reader gave it (the lstat,
// and a symlink's target), so the archive is the one that reader produced.
absl::Status BuildFromPath(const std::string& input, const SkipFile& skip_file,
                           Builder& builder) {
  struct stat st;
  if (::lstat(input.c_str(), &st) != 0) {
    if (errno == ENOENT || errno == ENOTDIR) {
      return absl::NotFoundError(absl::StrCat("input ", input, " does not exist"));
    }
    return ErrnoStatus(absl::StrCat("cannot read input ", input), errno);
  }
  const bool is_dir = S_ISDIR(st.st_mode);
  if (!is_dir && !S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(
        absl::StrCat("input ", input, " is neither a directory nor a regular file"));
  }
  // O_NOFOLLOW keeps a symlink named as the input refused, as lstat refused it, should one be
  // swapped in now; "link/" (a trailing slash) names the directory the link points to, for
  // lstat as for open, and that directory is sealed.
  Fd root(::open(input.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC |
                                    (is_dir ? O_DIRECTORY : 0)));
  const absl::Status changed =
      absl::AbortedError(absl::StrCat("input ", input, " changed while it was being sealed"));
  if (!root.valid()) {
    if (errno == ELOOP || errno == ENOTDIR || errno == ENOENT) return changed;
    return ErrnoStatus(absl::StrCat("cannot read input ", input), errno);
  }
  struct stat opened;
  if (::fstat(root.get(), &opened) != 0) {
    return ErrnoStatus(absl::StrCat("cannot read input ", input), errno);
  }
  if ((opened.st_mode & S_IFMT) != (st.st_mode & S_IFMT) || opened.st_dev != st.st_dev ||
      opened.st_ino != st.st_ino) {
    return changed;
  }
  EntryPtr entry(archive_entry_new());
  if (!is_dir) {
    const std::string root_name = TrimTrailingSlashes(input);
    const size_t slash = root_name.rfind('/');
    absl::StatusOr<std::string> path =
        NormalizeEntryPath(slash == std::string::npos ? root_name : root_name.substr(slash + 1));
    if (!path.ok()) return path.status();
    archive_entry_copy_stat(entry.get(), &opened);
    ::posix_fadvise(root.get(), 0, 0, POSIX_FADV_SEQUENTIAL);  // a hint: failing is harmless
    return AddFromDisk(builder, entry.get(), *path, root);
  }
  return WalkTree(root.get(), [&](const WalkEntry& e) -> absl::Status {
    if (skip_file && S_ISREG(e.st.st_mode) && e.st.st_dev == skip_file->first &&
        e.st.st_ino == skip_file->second) {
      return absl::OkStatus();  // the capsule being written, inside the tree
    }
    absl::StatusOr<std::string> path = NormalizeEntryPath(e.path);
    if (!path.ok()) return path.status();
    archive_entry_clear(entry.get());
    archive_entry_copy_stat(entry.get(), &e.st);
    Fd file;
    if (S_ISREG(e.st.st_mode)) {
      absl::StatusOr<Fd> opened_file = OpenListedFile(e);
      if (!opened_file.ok()) return opened_file.status();
      file = std::move(*opened_file);
    } else if (S_ISLNK(e.st.st_mode)) {
      absl::StatusOr<std::string> target = ReadListedLink(e);
      if (!target.ok()) return target.status();
      archive_entry_set_symlink(entry.get(), target->c_str());
    }
    return AddFromDisk(builder, entry.get(), *path, file);
  });
}

absl::Status BuildFromArchive(const std::string& input, Builder& builder) {
  builder.track_regular_files();
  // Unknown tar typeflags are refused as extraction refuses them (capsule/input_archive.h).
  absl::StatusOr<std::unique_ptr<InputArchive>> in = InputArchive::Open(input);
  if (!in.ok()) return in.status();
  struct archive_entry* entry = nullptr;
  while (true) {
    const int h = archive_read_next_header((*in)->get(), &entry);
    if (h == ARCHIVE_EOF) break;
    // For tar, ARCHIVE_WARN too, as extraction refuses it (capsule/extract.cc): a pax path
    // that is not UTF-8, or a damaged or second pax header whose records libarchive dropped.
    // Sealed, either would be a capsule that does not open, or holds other names.
    const bool tar =
        (archive_format((*in)->get()) & ARCHIVE_FORMAT_BASE_MASK) == ARCHIVE_FORMAT_TAR;
    // Except a name that is not UTF-8 in a pax record without hdrcharset (GNU tar
    // --format=posix writes raw bytes so): its bytes are the name, as for a folder sealed with
    // such names, and seal writes them with hdrcharset=BINARY, which extraction takes.
    const bool only_charset =
        h == ARCHIVE_WARN && tar &&
        absl::StrContains(ArchiveError((*in)->get()), "can't be converted from UTF-8");
    if (h < ARCHIVE_WARN || (h == ARCHIVE_WARN && tar && !only_charset)) {
      // The raw header check names a second pax header more plainly than libarchive does.
      const char* named = h == ARCHIVE_WARN ? archive_entry_pathname(entry) : nullptr;
      if (named != nullptr) {
        if (absl::Status s = (*in)->CheckEntry(entry, named); !s.ok()) return s;
      }
      return absl::InvalidArgumentError(
          absl::StrCat("malformed input archive: ", ArchiveError((*in)->get())));
    }
    const char* raw = archive_entry_pathname(entry);
    if (raw == nullptr) return absl::InvalidArgumentError("input archive entry has no path");
    if (absl::Status s = (*in)->CheckEntry(entry, raw); !s.ok()) return s;
    // `tar -C dir .` starts with the root itself ("." or "./"): not an entry of the dataset.
    if (archive_entry_filetype(entry) == AE_IFDIR &&
        std::string_view(raw).find_first_not_of("./") == std::string_view::npos &&
        std::string_view(raw).find("..") == std::string_view::npos && raw[0] == '.') {
      archive_read_data_skip((*in)->get());
      continue;
    }
    absl::StatusOr<std::string> path = NormalizeEntryPath(raw);
    if (!path.ok()) return path.status();
    struct archive* a = (*in)->get();
    absl::Status s = builder.Add(entry, *path, [&](uint8_t* buf, size_t n) -> la_ssize_t {
      const la_ssize_t got = archive_read_data(a, buf, n);
      if (got < 0) {
        builder.set_read_status(absl::InvalidArgumentError(
            absl::StrCat("malformed input archive at ", QuotePath(*path), ": ", ArchiveError(a))));
      }
      return got;
    });
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

}  // namespace

uint64_t EstimateContentBytes(const DatasetSource& source) {
  struct stat st;
  if (source.kind == DatasetSource::Kind::kArchive) {
    if (source.path == "-" || ::stat(source.path.c_str(), &st) != 0) return 0;
    return static_cast<uint64_t>(st.st_size);
  }
  // Through descriptors like the seal's own walk (capsule/tree_walk.h), never by path: a folder
  // swapped for a symlink must not lead even this count out of the tree. 0 if it fails.
  Fd root(::open(source.path.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC));
  if (!root.valid() || ::fstat(root.get(), &st) != 0) return 0;
  if (S_ISREG(st.st_mode)) return static_cast<uint64_t>(st.st_size);
  if (!S_ISDIR(st.st_mode)) return 0;
  uint64_t total = 0;
  const absl::Status walked = WalkTree(root.get(), [&total](const WalkEntry& e) {
    if (S_ISREG(e.st.st_mode)) total += static_cast<uint64_t>(e.st.st_size);
    return absl::OkStatus();
  });
  return walked.ok() ? total : 0;
}

absl::StatusOr<BuildStats> BuildPayload(const DatasetSource& source, CapsuleWriter* writer,
                                        const SkipFile& skip_file) {
  Builder builder(writer);
  absl::Status s = builder.Open();
  if (!s.ok()) return s;
  s = source.kind == DatasetSource::Kind::kPath ? BuildFromPath(source.path, skip_file, builder)
                                                : BuildFromArchive(source.path, builder);
  if (!s.ok()) return s;
  return builder.Finish();
}

}  // namespace bunker::capsule
