#include "capsule/extract.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "capsule/paths.h"
#include "crypto/status_macros.h"

namespace bunker::capsule {
namespace {

// Not ARCHIVE_EXTRACT_OWNER, ACL, XATTR, FFLAGS: none of that is restored (entries are rebuilt
// from path, type, mode and times only, so the archive could not smuggle them in anyway).
// Not ARCHIVE_EXTRACT_SECURE_NOABSOLUTEPATHS: the pathnames handed to libarchive are absolute on
// purpose (staging root + entry path); entry paths themselves were refused if absolute.
// Not ARCHIVE_EXTRACT_NO_OVERWRITE: libarchive then silently keeps the first of two entries
// with the same path and reports success; duplicates are refused by EntryTree instead, and an
// explicit directory entry after its implicitly created directory must still get its mode/time.
constexpr int kWriteFlags = ARCHIVE_EXTRACT_TIME | ARCHIVE_EXTRACT_PERM |
                            ARCHIVE_EXTRACT_SECURE_SYMLINKS | ARCHIVE_EXTRACT_SECURE_NODOTDOT;

struct ReadDeleter {
  void operator()(struct archive* a) const { archive_read_free(a); }
};
struct WriteDeleter {
  void operator()(struct archive* a) const { archive_write_free(a); }
};
struct EntryDeleter {
  void operator()(struct archive_entry* e) const { archive_entry_free(e); }
};
using ArchiveReader = std::unique_ptr<struct archive, ReadDeleter>;
using ArchiveWriter = std::unique_ptr<struct archive, WriteDeleter>;
using ArchiveEntry = std::unique_ptr<struct archive_entry, EntryDeleter>;

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
      return absl::StatusCode::kInvalidArgument;
    default:
      return absl::StatusCode::kUnavailable;
  }
}

absl::Status ErrnoStatus(int err, std::string_view what, const std::string& path) {
  return absl::Status(ErrnoCode(err), absl::StrCat(std::string(what), " ", QuotePath(path), ": ",
                                                   std::strerror(err)));
}

// libarchive messages quote entry names verbatim, so they are escaped like paths (QuotePath
// minus its quotes) to keep the error on one line.
std::string OneLine(const char* text) {
  const std::string quoted = QuotePath(text == nullptr ? "unknown error" : text);
  return quoted.substr(1, quoted.size() - 2);
}

const char* EntryPathname(struct archive_entry* e) {
  const char* p = archive_entry_pathname(e);
  return p != nullptr ? p : archive_entry_pathname_utf8(e);
}
const char* EntrySymlink(struct archive_entry* e) {
  const char* p = archive_entry_symlink(e);
  return p != nullptr ? p : archive_entry_symlink_utf8(e);
}
const char* EntryHardlink(struct archive_entry* e) {
  const char* p = archive_entry_hardlink(e);
  return p != nullptr ? p : archive_entry_hardlink_utf8(e);
}

const char* TypeName(mode_t type) {
  switch (type) {
    case AE_IFCHR:
      return "character device";
    case AE_IFBLK:
      return "block device";
    case AE_IFIFO:
      return "FIFO";
    case AE_IFSOCK:
      return "socket";
    default:
      return "entry of unknown type";
  }
}

absl::Status UnsafeEntry(std::string_view path, std::string_view rule) {
  return absl::InvalidArgumentError(
      absl::StrCat("unsafe entry ", QuotePath(path), " in archive: ", std::string(rule)));
}

// Removes `path` and everything below it, never following a symlink. Hand-rolled rather than
// nftw(3): by the time this runs libarchive has applied the archive's directory modes, and a
// directory of mode 0500 or 0000 can be neither listed nor emptied until it is made u+rwx again,
// which nftw gives no chance to do before it reads a directory. Path-based calls are safe here
// because everything removed lives inside the 0700 staging directory, and staged paths are kept
// under PATH_MAX (see Extraction::Stage).
void RemoveTree(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) return;
  if (!S_ISDIR(st.st_mode)) {
    ::unlink(path.c_str());
    return;
  }
  if ((st.st_mode & S_IRWXU) != S_IRWXU) ::chmod(path.c_str(), S_IRWXU);
  std::vector<std::string> names;
  const int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd >= 0) {
    if (DIR* dir = ::fdopendir(fd)) {
      while (const struct dirent* ent = ::readdir(dir)) {
        const std::string_view name = ent->d_name;
        if (name != "." && name != "..") names.emplace_back(name);
      }
      ::closedir(dir);  // closes fd
    } else {
      ::close(fd);
    }
  }
  // The listing is closed before recursing, so deep trees do not hold one descriptor per level.
  for (const std::string& name : names) RemoveTree(absl::StrCat(path, "/", name));
  ::rmdir(path.c_str());
}

// Owns what this run created on disk until Commit(): parents of `dest` that did not exist and
// the staging directory. Destruction without Commit() removes them, staging first.
class Scratch {
 public:
  Scratch() = default;
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  ~Scratch() {
    if (!staging_.empty()) RemoveTree(staging_);
    if (committed_) return;
    for (auto it = created_parents_.rbegin(); it != created_parents_.rend(); ++it) {
      ::rmdir(it->c_str());
    }
  }
  void AddCreatedParent(std::string dir) { created_parents_.push_back(std::move(dir)); }
  void SetStaging(std::string dir) { staging_ = std::move(dir); }
  // After a successful rename only the (now empty) staging directory is left to remove.
  void Commit() { committed_ = true; }

 private:
  std::vector<std::string> created_parents_;  // outermost first
  std::string staging_;
  bool committed_ = false;
};

struct Destination {
  std::string given;   // as the caller spelled it, for messages
  std::string parent;  // absolute, symlink-free (realpath)
  std::string base;
  std::string path;      // parent + "/" + base
  bool replace = false;  // an empty directory is there already
  mode_t replaced_mode = 0;
};

absl::StatusOr<bool> IsEmptyDirectory(const std::string& path) {
  DIR* dir = ::opendir(path.c_str());
  if (dir == nullptr) return ErrnoStatus(errno, "cannot read destination", path);
  bool empty = true;
  while (const struct dirent* ent = ::readdir(dir)) {
    const std::string_view name = ent->d_name;
    if (name != "." && name != "..") {
      empty = false;
      break;
    }
  }
  ::closedir(dir);
  return empty;
}

// mkdir -p, recording what it created so that a failed extraction can take it back.
absl::Status MakeParents(const std::string& dir, Scratch* scratch) {
  struct stat st;
  if (::stat(dir.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode)) return absl::OkStatus();
    return ErrnoStatus(ENOTDIR, "cannot create directory", dir);
  }
  if (errno != ENOENT) return ErrnoStatus(errno, "cannot create directory", dir);
  const size_t slash = dir.find_last_of('/');
  if (slash != std::string::npos && slash > 0) {
    BUNKER_RETURN_IF_ERROR(MakeParents(dir.substr(0, slash), scratch));
  }
  if (::mkdir(dir.c_str(), 0777) != 0) {
    if (errno == EEXIST) return absl::OkStatus();
    return ErrnoStatus(errno, "cannot create directory", dir);
  }
  scratch->AddCreatedParent(dir);
  return absl::OkStatus();
}

absl::StatusOr<Destination> PrepareDestination(const std::string& dest, Scratch* scratch) {
  Destination d;
  d.given = dest;
  std::string p = dest;
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  const size_t slash = p.find_last_of('/');
  d.base = slash == std::string::npos ? p : p.substr(slash + 1);
  const std::string parent =
      slash == std::string::npos ? "." : (slash == 0 ? "/" : p.substr(0, slash));
  if (d.base.empty() || d.base == "." || d.base == "..") {
    return absl::InvalidArgumentError(
        absl::StrCat("destination ", QuotePath(dest), " must name a new or an empty directory"));
  }

  struct stat st;
  if (::lstat(p.c_str(), &st) == 0) {
    if (!S_ISDIR(st.st_mode)) {
      return absl::AlreadyExistsError(
          absl::StrCat("destination ", QuotePath(dest), " already exists and is not a directory"));
    }
    BUNKER_ASSIGN_OR_RETURN(const bool empty, IsEmptyDirectory(p));
    if (!empty) {
      return absl::AlreadyExistsError(
          absl::StrCat("destination ", QuotePath(dest), " is not empty"));
    }
    d.replace = true;
    d.replaced_mode = st.st_mode & 07777;
  } else if (errno == ENOENT) {
    BUNKER_RETURN_IF_ERROR(MakeParents(parent, scratch));
  } else {
    return ErrnoStatus(errno, "cannot use destination", dest);
  }

  // A canonical parent keeps ".." and symlinks out of the staged pathnames, which libarchive's
  // SECURE_NODOTDOT and SECURE_SYMLINKS checks would otherwise trip over.
  char* real = ::realpath(parent.c_str(), nullptr);
  if (real == nullptr) return ErrnoStatus(errno, "cannot use destination", dest);
  d.parent = real;
  ::free(real);
  d.path = absl::StrCat(d.parent == "/" ? "" : d.parent, "/", d.base);
  return d;
}

// What the archive has put at each path so far, whether selected or not, so that the archive is
// judged the same way whatever the selection. A trie rather than a set of path strings: memory
// stays linear in the total length of the names, even for a deep tree.
// TODO(perf): one node per entry; a capsule of tens of millions of files costs gigabytes here.
class EntryTree {
 public:
  enum class Kind { kImplicitDir, kDir, kFile, kSymlink };
  struct Node {
    Kind kind = Kind::kImplicitDir;
    bool extracted = false;
    std::map<std::string, std::unique_ptr<Node>, std::less<>> children;
  };

  // Records `path` (normalized) as `kind`. Refuses a second entry at the same path (except an
  // explicit directory over one created implicitly for its children) and any entry below a file
  // or symlink: nothing is ever written through a symlink.
  absl::Status Add(std::string_view path, Kind kind, bool extracted) {
    Node* node = &root_;
    size_t start = 0;
    while (true) {
      const size_t slash = path.find('/', start);
      const bool last = slash == std::string_view::npos;
      const std::string_view name =
          path.substr(start, last ? std::string_view::npos : slash - start);
      auto it = node->children.find(name);
      if (it == node->children.end()) {
        it = node->children.emplace(std::string(name), std::make_unique<Node>()).first;
        if (last) {
          it->second->kind = kind;
          it->second->extracted = extracted;
          return absl::OkStatus();
        }
      } else if (last) {
        if (kind == Kind::kDir && it->second->kind == Kind::kImplicitDir) {
          it->second->kind = Kind::kDir;
          it->second->extracted = extracted;
          return absl::OkStatus();
        }
        const Kind had = it->second->kind;
        if (kind != Kind::kDir && (had == Kind::kDir || had == Kind::kImplicitDir)) {
          return UnsafeEntry(path, "duplicate entry (a directory already)");
        }
        return UnsafeEntry(path, "duplicate entry");
      } else if (it->second->kind == Kind::kSymlink) {
        return UnsafeEntry(path,
                           absl::StrCat("goes through symlink ", QuotePath(path.substr(0, slash))));
      } else if (it->second->kind == Kind::kFile) {
        return UnsafeEntry(
            path, absl::StrCat("parent ", QuotePath(path.substr(0, slash)), " is not a directory"));
      }
      node = it->second.get();
      start = slash + 1;
    }
  }

  // The node at `path` (normalized), or null.
  const Node* Find(std::string_view path) const {
    const Node* node = &root_;
    size_t start = 0;
    while (node != nullptr) {
      const size_t slash = path.find('/', start);
      const bool last = slash == std::string_view::npos;
      auto it =
          node->children.find(path.substr(start, last ? std::string_view::npos : slash - start));
      if (it == node->children.end()) return nullptr;
      if (last) return it->second.get();
      node = it->second.get();
      start = slash + 1;
    }
    return nullptr;
  }

 private:
  Node root_;
};

// Feeds libarchive from a ByteSource and remembers the source's own error, so that the caller
// gets e.g. the chunk authentication failure rather than libarchive's generic "read error".
struct SourceReader {
  explicit SourceReader(ByteSource* s) : source(s) {}

  ByteSource* source;
  absl::Status status;
  bool at_end = false;

  static la_ssize_t Read(struct archive* a, void* opaque, const void** buffer) {
    auto* self = static_cast<SourceReader*>(opaque);
    *buffer = nullptr;
    if (!self->status.ok()) return ARCHIVE_FATAL;
    if (self->at_end) return 0;
    absl::StatusOr<absl::Span<const uint8_t>> piece = self->source->Next();
    if (!piece.ok()) {
      self->status = piece.status();
      archive_set_error(a, EIO, "source failed");
      return ARCHIVE_FATAL;
    }
    if (piece->empty()) {
      self->at_end = true;
      return 0;
    }
    // libarchive may keep pointing into this piece until its next call here, which is exactly
    // how long ByteSource promises to keep it valid.
    *buffer = piece->data();
    return static_cast<la_ssize_t>(piece->size());
  }
};

// One run of reading the archive into `root` (an empty directory). The libarchive handles are
// released in the destructor; that must happen before the staging tree is removed, because
// freeing the writer applies pending directory modes and times.
class Extraction {
 public:
  Extraction(ByteSource* source, std::string root, const std::string& dest,
             const ExtractOptions& options)
      : reader_(source), root_(std::move(root)), dest_(dest), options_(options) {}

  absl::StatusOr<ExtractStats> Run() {
    in_.reset(archive_read_new());
    // Beware: archive_write_disk_new() reads the umask by setting it to 0 and back, process-wide.
    out_.reset(archive_write_disk_new());
    if (in_ == nullptr || out_ == nullptr) {
      return absl::ResourceExhaustedError("out of memory starting extraction");
    }
    archive_read_support_format_tar(in_.get());  // ustar, pax and GNU tar; no other format
    archive_read_support_filter_none(in_.get());
    archive_write_disk_set_options(out_.get(), kWriteFlags);
    // No user/group lookup is installed: owners are never restored.

    if (archive_read_open(in_.get(), &reader_, nullptr, &SourceReader::Read, nullptr) !=
        ARCHIVE_OK) {
      return ReadError("");
    }
    std::string last;  // the previous entry, to locate errors in the stream
    while (true) {
      struct archive_entry* entry;
      const int r = archive_read_next_header(in_.get(), &entry);
      if (r == ARCHIVE_EOF) break;
      // ARCHIVE_WARN too: for tar it means an undecodable pathname charset or a damaged pax
      // record, i.e. an archive our sealer did not write.
      if (r != ARCHIVE_OK) {
        return ReadError(last.empty() ? "" : absl::StrCat(" after ", QuotePath(last)));
      }
      BUNKER_ASSIGN_OR_RETURN(last, ExtractEntry(entry));
    }

    // libarchive reports a clean end of input at an entry boundary as the end of the archive,
    // so a stream cut between two entries would pass; the end-of-archive block is required.
    // Its header position is where the terminating zero block was (or was expected): if nothing
    // was consumed there, the block was missing.
    if (archive_filter_bytes(in_.get(), 0) <= archive_read_header_position(in_.get())) {
      return absl::DataLossError("malformed archive: truncated (no end-of-archive marker)");
    }
    // The source verifies the stream up to its very end (where truncation of the capsule is
    // detected), so it is read to the end even though the archive is complete. What follows
    // the end-of-archive marker is block padding; it is not inspected, since libarchive may
    // already have buffered part of it.
    while (!reader_.at_end) {
      BUNKER_ASSIGN_OR_RETURN(absl::Span<const uint8_t> piece, reader_.source->Next());
      reader_.at_end = piece.empty();
    }
    // Applies the deferred directory modes and mtimes.
    if (archive_write_close(out_.get()) != ARCHIVE_OK) {
      return absl::Status(
          WriteErrorCode(),
          absl::StrCat("cannot finish extraction: ", StripRoot(archive_error_string(out_.get()))));
    }
    return stats_;
  }

 private:
  // Extracts one entry (or validates and skips it when not selected); returns its path.
  absl::StatusOr<std::string> ExtractEntry(struct archive_entry* in) {
    const char* raw_path = EntryPathname(in);
    if (raw_path == nullptr) return absl::DataLossError("malformed archive: entry without a path");
    BUNKER_ASSIGN_OR_RETURN(std::string path, NormalizeEntryPath(raw_path));

    const char* hardlink = EntryHardlink(in);
    const mode_t type = archive_entry_filetype(in);
    EntryTree::Kind kind;
    if (hardlink != nullptr) {
      kind = EntryTree::Kind::kFile;
    } else if (type == AE_IFREG) {
      kind = EntryTree::Kind::kFile;
    } else if (type == AE_IFDIR) {
      kind = EntryTree::Kind::kDir;
    } else if (type == AE_IFLNK) {
      kind = EntryTree::Kind::kSymlink;
    } else {
      return UnsafeEntry(path, absl::StrCat(TypeName(type),
                                            " (only regular files, directories "
                                            "and symlinks are allowed)"));
    }

    const mode_t perm = archive_entry_perm(in);
    if (perm & S_ISUID) return UnsafeEntry(path, "setuid bit");
    if (perm & S_ISGID) return UnsafeEntry(path, "setgid bit");
    if (perm & S_ISVTX) return UnsafeEntry(path, "sticky bit");

    const char* symlink = nullptr;
    if (kind == EntryTree::Kind::kSymlink) {
      symlink = EntrySymlink(in);
      if (symlink == nullptr) {
        return absl::DataLossError(
            absl::StrCat("malformed archive: symlink ", QuotePath(path), " has no target"));
      }
      BUNKER_RETURN_IF_ERROR(CheckSymlinkTarget(path, symlink));
    }

    std::string link_target;
    const EntryTree::Node* target_node = nullptr;
    if (hardlink != nullptr) {
      absl::StatusOr<std::string> target = NormalizeEntryPath(hardlink);
      if (!target.ok()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "hard link ", QuotePath(path), " points to an ", target.status().message()));
      }
      link_target = *std::move(target);
      // Our sealer never writes one; libarchive would write the data into the target's inode.
      if (archive_entry_size(in) > 0) return UnsafeEntry(path, "hard link with data");
      target_node = tree_.Find(link_target);
      if (target_node == nullptr || target_node->kind != EntryTree::Kind::kFile) {
        return UnsafeEntry(path, absl::StrCat("hard link to ", QuotePath(link_target),
                                              ", which is not a regular file earlier in the "
                                              "archive"));
      }
    }

    const bool selected = kind == EntryTree::Kind::kDir ? options_.only.NeedsDirectory(path)
                                                        : options_.only.Selects(path);
    BUNKER_RETURN_IF_ERROR(tree_.Add(path, kind, selected));
    if (!selected) return path;  // libarchive skips the data at the next header
    if (target_node != nullptr && !target_node->extracted) {
      return absl::InvalidArgumentError(
          absl::StrCat("hard link ", QuotePath(path), " is selected but its target ",
                       QuotePath(link_target), " is not; add the target to the selection"));
    }

    BUNKER_ASSIGN_OR_RETURN(const std::string staged, Stage(path));
    ArchiveEntry out(archive_entry_new());
    if (out == nullptr) return absl::ResourceExhaustedError("out of memory during extraction");
    // A fresh entry carries only what the contract restores: no owner, ACL, xattr, file flags.
    archive_entry_copy_pathname(out.get(), staged.c_str());
    if (hardlink != nullptr) {
      BUNKER_ASSIGN_OR_RETURN(const std::string staged_target, Stage(link_target));
      archive_entry_set_filetype(out.get(), AE_IFREG);
      archive_entry_copy_hardlink(out.get(), staged_target.c_str());
      archive_entry_set_size(out.get(), 0);
    } else {
      archive_entry_set_filetype(out.get(), type);
      if (kind == EntryTree::Kind::kFile) archive_entry_set_size(out.get(), archive_entry_size(in));
      if (symlink != nullptr) archive_entry_copy_symlink(out.get(), symlink);
    }
    archive_entry_set_perm(out.get(), perm & 0777);
    if (archive_entry_mtime_is_set(in)) {
      archive_entry_set_mtime(out.get(), archive_entry_mtime(in), archive_entry_mtime_nsec(in));
    }
    if (archive_entry_atime_is_set(in)) {
      archive_entry_set_atime(out.get(), archive_entry_atime(in), archive_entry_atime_nsec(in));
    }

    if (archive_write_header(out_.get(), out.get()) != ARCHIVE_OK) return WriteError(path);
    if (kind == EntryTree::Kind::kFile && hardlink == nullptr) {
      BUNKER_RETURN_IF_ERROR(CopyData(path));
    }
    if (archive_write_finish_entry(out_.get()) != ARCHIVE_OK) return WriteError(path);

    switch (kind) {
      case EntryTree::Kind::kFile:
        ++stats_.files;
        break;
      case EntryTree::Kind::kDir:
        ++stats_.directories;
        break;
      case EntryTree::Kind::kSymlink:
        ++stats_.symlinks;
        break;
      case EntryTree::Kind::kImplicitDir:
        break;
    }
    return path;
  }

  absl::Status CopyData(const std::string& path) {
    while (true) {
      const void* buffer;
      size_t size;
      la_int64_t offset;
      const int r = archive_read_data_block(in_.get(), &buffer, &size, &offset);
      if (r == ARCHIVE_EOF) return absl::OkStatus();
      if (r != ARCHIVE_OK) return ReadError(absl::StrCat(" in ", QuotePath(path)));
      if (archive_write_data_block(out_.get(), buffer, size, offset) != ARCHIVE_OK) {
        return WriteError(path);
      }
      stats_.bytes += size;
    }
  }

  // The absolute name under which `path` is created. Kept under PATH_MAX: beyond it libarchive
  // chdir()s through the tree (edit_deep_directories), which changes the working directory of
  // the whole process, and RemoveTree relies on path-based calls.
  absl::StatusOr<std::string> Stage(const std::string& path) const {
    std::string staged = absl::StrCat(root_, "/", path);
    if (staged.size() >= PATH_MAX) {
      return absl::InvalidArgumentError(absl::StrCat(
          "path ", QuotePath(path), " is too long to extract under ", QuotePath(dest_)));
    }
    return staged;
  }

  absl::Status ReadError(std::string_view where) const {
    if (!reader_.status.ok()) return reader_.status;
    if (archive_errno(in_.get()) == ENOMEM) {
      return absl::ResourceExhaustedError("out of memory reading the archive");
    }
    return absl::DataLossError(absl::StrCat("malformed archive", std::string(where), ": ",
                                            OneLine(archive_error_string(in_.get()))));
  }

  absl::StatusCode WriteErrorCode() const {
    const int err = archive_errno(out_.get());
    // Positive values are errno; libarchive's own refusals (SECURE_* checks) use
    // ARCHIVE_ERRNO_MISC (-1) or 0.
    if (err <= 0) return absl::StatusCode::kInvalidArgument;
    return ErrnoCode(err);
  }

  absl::Status WriteError(const std::string& path) const {
    return absl::Status(WriteErrorCode(),
                        absl::StrCat("cannot extract ", QuotePath(path), ": ",
                                     StripRoot(archive_error_string(out_.get()))));
  }

  // libarchive names the staged file; the user knows the entry path, not the staging directory.
  std::string StripRoot(const char* text) const {
    return OneLine(absl::StrReplaceAll(text == nullptr ? "unknown error" : text,
                                       {{absl::StrCat(root_, "/"), ""}})
                       .c_str());
  }

  SourceReader reader_;
  const std::string root_;
  const std::string& dest_;
  const ExtractOptions& options_;
  EntryTree tree_;
  ExtractStats stats_;
  // Declared after everything they use; the writer is freed first (it may still touch files).
  ArchiveReader in_;
  ArchiveWriter out_;
};

}  // namespace

absl::StatusOr<ExtractStats> ExtractArchive(ByteSource* source, const std::string& dest,
                                            const ExtractOptions& options) {
  Scratch scratch;
  // Everything about `dest` is settled before the first byte is read.
  BUNKER_ASSIGN_OR_RETURN(const Destination d, PrepareDestination(dest, &scratch));

  // The staging directory is 0700 for the whole run, so no other user can look into or race
  // with a half-written tree; the tree itself is a subdirectory made with mkdir(2), so that it
  // ends up with the ordinary umask-derived mode, which mkdtemp(3) would not give.
  // The base name is shortened so that the staging name stays within NAME_MAX.
  std::string tmpl =
      absl::StrCat(d.parent == "/" ? "" : d.parent, "/.", d.base.substr(0, 128), ".bunker-XXXXXX");
  if (::mkdtemp(tmpl.data()) == nullptr) {
    return ErrnoStatus(errno, "cannot create a staging directory beside", d.given);
  }
  scratch.SetStaging(tmpl);
  const std::string root = absl::StrCat(tmpl, "/root");
  if (::mkdir(root.c_str(), 0777) != 0) {
    return ErrnoStatus(errno, "cannot create a staging directory beside", d.given);
  }

  ExtractStats stats;
  {
    Extraction extraction(source, root, d.given, options);
    BUNKER_ASSIGN_OR_RETURN(stats, extraction.Run());
  }

  // rename(2) replaces an empty directory atomically and refuses a non-empty one, so a
  // destination that changed since the check above is never clobbered.
  if (::rename(root.c_str(), d.path.c_str()) != 0) {
    const int err = errno;
    if (err == ENOTEMPTY || err == EEXIST) {
      return absl::AlreadyExistsError(
          absl::StrCat("destination ", QuotePath(d.given), " is not empty"));
    }
    if (err == ENOTDIR) {
      return absl::AlreadyExistsError(absl::StrCat("destination ", QuotePath(d.given),
                                                   " already exists and is not a directory"));
    }
    return ErrnoStatus(err, "cannot move the extracted tree to", d.given);
  }
  scratch.Commit();
  // The caller's empty directory may have been made private on purpose; keep its mode. This
  // comes after the rename, which needs write permission on the directory being moved.
  if (d.replace && ::chmod(d.path.c_str(), d.replaced_mode) != 0) {
    return ErrnoStatus(errno, "cannot set the mode of", d.given);
  }
  return stats;
}

}  // namespace bunker::capsule
