// Extraction (capsule/extract.h). Over 500 lines on purpose: one class reads the archive in stream
// order and judges every entry; what it writes through lives in tree_writer, staging, entry_tree and
// tar_headers, and splitting the judging itself would scatter its rules.
#include "capsule/extract.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "capsule/beneath.h"
#include "capsule/entry_tree.h"
#include "capsule/fd.h"
#include "capsule/paths.h"
#include "capsule/staging.h"
#include "capsule/tar_headers.h"
#include "capsule/tree_writer.h"
#include "crypto/sha256.h"
#include "crypto/status_macros.h"

namespace bunker::capsule {
namespace {

struct ReadDeleter {
  void operator()(struct archive* a) const { archive_read_free(a); }
};
using ArchiveReader = std::unique_ptr<struct archive, ReadDeleter>;

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

// Feeds libarchive from a ByteSource and remembers the source's own error, so that the caller
// gets e.g. the chunk authentication failure rather than libarchive's generic "read error".
struct SourceReader {
  explicit SourceReader(ByteSource* s) : source(s) {}

  ByteSource* source;
  TarHeaderTap tap;  // sees every byte before libarchive does
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
    self->tap.Feed(*piece);
    return static_cast<la_ssize_t>(piece->size());
  }
};

EntryTimes TimesOf(struct archive_entry* e) {
  EntryTimes t;
  if (archive_entry_atime_is_set(e)) {
    t.atime = {archive_entry_atime(e), archive_entry_atime_nsec(e)};
  }
  if (archive_entry_mtime_is_set(e)) {
    t.mtime = {archive_entry_mtime(e), archive_entry_mtime_nsec(e)};
  }
  return t;
}

// One run of reading the archive into the tree of `writer` (an empty directory), or, with a
// null writer, of checking it without writing anything.
class Extraction {
 public:
  Extraction(ByteSource* source, TreeWriter* writer, const std::string& dest,
             const ExtractOptions& options)
      : reader_(source), writer_(writer), dest_(dest), options_(options) {}

  absl::StatusOr<ExtractStats> Run() {
    absl::StatusOr<ExtractStats> result = ReadArchive();
    if (result.ok() || !reader_.status.ok()) return result;
    // FORMAT.md "Error precedence": an archive refused for its content is still authenticated
    // to the end, and an authentication failure there wins, so that a tampered capsule is
    // always reported as tampered wherever the tampering is.
    while (!reader_.at_end) {
      absl::StatusOr<absl::Span<const uint8_t>> piece = reader_.source->Next();
      if (!piece.ok()) return piece.status();
      reader_.at_end = piece->empty();
    }
    return result;
  }

 private:
  absl::StatusOr<ExtractStats> ReadArchive() {
    in_.reset(archive_read_new());
    if (in_ == nullptr) return absl::ResourceExhaustedError("out of memory starting extraction");
    archive_read_support_format_tar(in_.get());  // ustar, pax and GNU tar; no other format
    archive_read_support_filter_none(in_.get());

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
        // The raw header check names a v7 header or a second pax header more plainly than
        // libarchive's warning does.
        if (r == ARCHIVE_WARN) {
          BUNKER_RETURN_IF_ERROR(reader_.tap
                                     .Inspect(static_cast<uint64_t>(
                                         archive_read_header_position(in_.get())))
                                     .status());
        }
        return ReadError(last.empty() ? "" : absl::StrCat(" after ", QuotePath(last)));
      }
      BUNKER_ASSIGN_OR_RETURN(last, ExtractEntry(entry));
      ++entries_;
    }

    // libarchive reports a clean end of input at an entry boundary as the end of the archive,
    // so a stream cut between two entries would pass; the end-of-archive block is required.
    // Its header position is where the terminating zero block was (or was expected): if nothing
    // was consumed there, the block was missing.
    if (archive_filter_bytes(in_.get(), 0) <= archive_read_header_position(in_.get())) {
      return absl::DataLossError("malformed archive: truncated (no end-of-archive marker)");
    }
    // The tar reader stops at the first zero block, wherever it is; the payload's index follows
    // the archive, and its bytes must not have been taken for entries.
    if (options_.archive_size &&
        static_cast<uint64_t>(archive_read_header_position(in_.get())) + 512 >
            *options_.archive_size) {
      return absl::DataLossError(absl::StrCat(
          "malformed archive: no end-of-archive marker within the archive's ",
          *options_.archive_size, " bytes (the manifest's archiveSize)"));
    }
    if (options_.index != nullptr && entries_ != options_.index->size()) {
      return absl::DataLossError(absl::StrCat("the archive has ", entries_,
                                              " entries but the file index lists ",
                                              options_.index->size()));
    }
    // The source verifies the stream up to its very end (where truncation of the capsule is
    // detected), so it is read to the end even though the archive is complete. What follows
    // the end-of-archive marker is block padding; it is not inspected, since libarchive may
    // already have buffered part of it.
    while (!reader_.at_end) {
      BUNKER_ASSIGN_OR_RETURN(absl::Span<const uint8_t> piece, reader_.source->Next());
      reader_.at_end = piece.empty();
    }
    // The deferred directory modes and mtimes.
    if (writer_ != nullptr) {
      BUNKER_RETURN_IF_ERROR(writer_->Finish());
    }
    return stats_;
  }

  // Extracts one entry (or validates and skips it when not selected); returns its path.
  absl::StatusOr<std::string> ExtractEntry(struct archive_entry* in) {
    const char* raw_path = EntryPathname(in);
    if (raw_path == nullptr) return absl::DataLossError("malformed archive: entry without a path");
    BUNKER_ASSIGN_OR_RETURN(std::string path, NormalizeEntryPath(raw_path));

    // The raw typeflag: libarchive reads unknown ones as regular files.
    BUNKER_ASSIGN_OR_RETURN(
        const TarHeaderTap::Header header,
        reader_.tap.Inspect(static_cast<uint64_t>(archive_read_header_position(in_.get()))));
    const mode_t la_type = archive_entry_filetype(in);
    if (!IsAllowedEntryTypeflag(header.typeflag) &&
        (la_type == AE_IFREG || la_type == AE_IFDIR || la_type == AE_IFLNK)) {
      // An unknown type (libarchive made it a file, or a directory for GNU 'D'). Devices, FIFOs
      // and sockets are named below.
      const unsigned char t = static_cast<unsigned char>(header.typeflag);
      return UnsafeEntry(
          path, absl::StrCat(t >= 0x20 && t < 0x7f
                                 ? absl::StrCat("tar type '", std::string(1, header.typeflag), "'")
                                 : absl::StrCat("tar type 0x", absl::Hex(t)),
                             " (only regular files, directories, symlinks and hard links are "
                             "allowed)"));
    }
    if (archive_entry_sparse_count(in) > 0) return UnsafeEntry(path, "sparse file");
    const bool is_data = header.typeflag == '0' || header.typeflag == '\0';
    // FORMAT.md "Entries": no data follows a hard link, symlink or directory header.
    if (!is_data && (header.size_field != 0 || archive_entry_size(in) != 0)) {
      return UnsafeEntry(path, header.typeflag == '1'
                                   ? "hard link with data"
                                   : absl::StrCat(header.typeflag == '2' ? "symlink" : "directory",
                                                  " with a non-zero size"));
    }
    const uint64_t data_size =
        is_data && archive_entry_size(in) > 0 ? static_cast<uint64_t>(archive_entry_size(in)) : 0;
    reader_.tap.Skip(header.data_start, (data_size + 511) / 512 * 512);

    const char* hardlink = EntryHardlink(in);
    const mode_t type = archive_entry_filetype(in);
    EntryTree::Kind kind;
    if (header.typeflag == '1' && hardlink == nullptr) {
      return absl::DataLossError(
          absl::StrCat("malformed archive: hard link ", QuotePath(path), " has no target"));
    }
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
      if (symlink == nullptr || *symlink == '\0') {
        return UnsafeEntry(path, "symlink without a target");
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
      target_node = tree_.Find(link_target);
      if (target_node == nullptr || target_node->kind != EntryTree::Kind::kFile) {
        return UnsafeEntry(path, absl::StrCat("hard link to ", QuotePath(link_target),
                                              ", which is not a regular file earlier in the "
                                              "archive"));
      }
    }

    const bool selected = writer_ == nullptr              ? true
                          : kind == EntryTree::Kind::kDir ? options_.only.NeedsDirectory(path)
                                                          : options_.only.Selects(path);
    BUNKER_RETURN_IF_ERROR(tree_.Add(path, kind, selected));
    const FileEntry* expected = nullptr;
    if (options_.index != nullptr) {
      BUNKER_ASSIGN_OR_RETURN(
          expected, Agree(path, kind, hardlink != nullptr, perm,
                          hardlink != nullptr ? link_target : std::string(symlink ? symlink : ""),
                          data_size));
    }
    if (!selected) return path;  // libarchive skips the data at the next header
    if (target_node != nullptr && !target_node->extracted) {
      return absl::InvalidArgumentError(
          absl::StrCat("hard link ", QuotePath(path), " is selected but its target ",
                       QuotePath(link_target), " is not; add the target to the selection"));
    }
    if (writer_ != nullptr) {
      BUNKER_RETURN_IF_ERROR(CheckLength(path));
    }

    // Only what the contract restores: no owner, ACL, xattr or file flags from the archive.
    const EntryTimes times = TimesOf(in);
    switch (kind) {
      case EntryTree::Kind::kFile:
        if (hardlink != nullptr) {
          if (writer_ != nullptr) {
            BUNKER_RETURN_IF_ERROR(writer_->MakeHardLink(path, link_target));
          }
        } else {
          Fd file;
          if (writer_ != nullptr) {
            BUNKER_ASSIGN_OR_RETURN(file, writer_->CreateFile(path));
          }
          crypto::Sha256 hash;
          BUNKER_ASSIGN_OR_RETURN(const uint64_t written, CopyData(path, file.get(), &hash));
          if (written != data_size) {
            return absl::DataLossError(
                absl::StrCat("malformed archive: ", QuotePath(path), " is shorter than its size"));
          }
          if (expected != nullptr && hash.Finish() != expected->sha256) {
            return absl::DataLossError(absl::StrCat("the contents of ", QuotePath(path),
                                                    " do not match the file index's digest"));
          }
          if (writer_ != nullptr) {
            BUNKER_RETURN_IF_ERROR(
                writer_->FinishFile(path, file.get(), written, data_size, perm, times));
          }
        }
        ++stats_.files;
        break;
      case EntryTree::Kind::kDir:
        if (writer_ != nullptr) {
          BUNKER_RETURN_IF_ERROR(writer_->MakeDirectory(path, perm, times));
        }
        ++stats_.directories;
        break;
      case EntryTree::Kind::kSymlink:
        if (writer_ != nullptr) {
          BUNKER_RETURN_IF_ERROR(writer_->MakeSymlink(path, symlink, times));
        }
        ++stats_.symlinks;
        break;
      case EntryTree::Kind::kImplicitDir:
        break;
    }
    return path;
  }

  // Archive entry `entries_` against index record `entries_` (ExtractOptions::index); returns
  // the record. `target` is the symlink's target or the hard link's normalized target.
  absl::StatusOr<const FileEntry*> Agree(const std::string& path, EntryTree::Kind kind,
                                         bool hardlink, mode_t perm, const std::string& target,
                                         uint64_t size) const {
    const std::vector<FileEntry>& index = *options_.index;
    auto disagree = [&](absl::string_view what) {
      return absl::DataLossError(absl::StrCat("archive entry ", entries_, " (", QuotePath(path),
                                              ") does not match the file index: ", what));
    };
    if (entries_ >= index.size()) return disagree("the index has no record for it");
    const FileEntry& e = index[entries_];
    FileEntry::Type type = FileEntry::Type::kFile;
    if (hardlink) {
      type = FileEntry::Type::kHardlink;
    } else if (kind == EntryTree::Kind::kDir) {
      type = FileEntry::Type::kDirectory;
    } else if (kind == EntryTree::Kind::kSymlink) {
      type = FileEntry::Type::kSymlink;
    }
    if (e.path != path)
      return disagree(absl::StrCat("the record is for ", QuotePath(e.path)));
    if (e.type != type) return disagree("type");
    if (e.mode != (perm & 0777)) return disagree("mode");
    if (e.size != (type == FileEntry::Type::kFile ? size : 0)) return disagree("size");
    if (e.link_target != (type == FileEntry::Type::kFile || type == FileEntry::Type::kDirectory
                              ? std::string()
                              : target)) {
      return disagree("link target");
    }
    return &e;
  }

  // Writes the entry's data blocks at their offsets (nowhere with fd -1) and hashes them;
  // returns where the last one ended. Blocks must be contiguous (sparse entries are refused).
  absl::StatusOr<uint64_t> CopyData(const std::string& path, int fd, crypto::Sha256* hash) {
    const std::string what = QuotePath(path);
    uint64_t end = 0;
    while (true) {
      const void* buffer;
      size_t size;
      la_int64_t offset;
      const int r = archive_read_data_block(in_.get(), &buffer, &size, &offset);
      if (r == ARCHIVE_EOF) return end;
      if (r != ARCHIVE_OK) return ReadError(absl::StrCat(" in ", what));
      if (offset < 0 || static_cast<uint64_t>(offset) != end) {
        return absl::DataLossError(absl::StrCat("malformed archive in ", what));
      }
      const auto data = absl::MakeConstSpan(static_cast<const uint8_t*>(buffer), size);
      hash->Update(data);
      if (fd >= 0) BUNKER_RETURN_IF_ERROR(PwriteAll(fd, data, static_cast<uint64_t>(offset), what));
      end = std::max(end, static_cast<uint64_t>(offset) + size);
      stats_.bytes += size;
    }
  }

  // Every entry is reached by one openat2 from the extraction root (whose path argument is
  // limited to PATH_MAX), and the kernel refuses a name over NAME_MAX; both are refused up
  // front with a clear message rather than as ENAMETOOLONG halfway through.
  absl::Status CheckLength(const std::string& path) const {
    bool too_long = path.size() >= PATH_MAX;
    for (size_t start = 0; !too_long && start <= path.size();) {
      size_t slash = path.find('/', start);
      if (slash == std::string::npos) slash = path.size();
      too_long = slash - start > NAME_MAX;
      start = slash + 1;
    }
    if (!too_long) return absl::OkStatus();
    return absl::InvalidArgumentError(
        absl::StrCat("path ", QuotePath(path), " is too long to extract under ", QuotePath(dest_),
                     " (at most ", PATH_MAX - 1, " bytes, ", NAME_MAX, " per name)"));
  }

  absl::Status ReadError(std::string_view where) const {
    if (!reader_.status.ok()) return reader_.status;
    if (archive_errno(in_.get()) == ENOMEM) {
      return absl::ResourceExhaustedError("out of memory reading the archive");
    }
    return absl::DataLossError(absl::StrCat("malformed archive", std::string(where), ": ",
                                            OneLine(archive_error_string(in_.get()))));
  }

  SourceReader reader_;
  TreeWriter* writer_;
  const std::string& dest_;
  const ExtractOptions& options_;
  EntryTree tree_;
  ExtractStats stats_;
  uint64_t entries_ = 0;  // archive entries read so far
  ArchiveReader in_;
};

absl::StatusOr<ExtractStats> Extract(ByteSource* source, const ExtractTarget& target,
                                     const std::string& display, const ExtractOptions& options) {
  // Destroyed last: parents of the destination that this call made, removed on failure after
  // the staging directory in the last of them.
  CreatedDirs created;
  // Everything about the destination is settled before the first byte is read.
  BUNKER_ASSIGN_OR_RETURN(
      const Destination d,
      PrepareDestination(target.root_fd, target.relative, display, &created, options.owner));
  Staging staging;
  BUNKER_RETURN_IF_ERROR(staging.Create(d, display, options.owner));
  Extraction extraction(source, staging.writer(), display, options);
  BUNKER_ASSIGN_OR_RETURN(const ExtractStats stats, extraction.Run());
  BUNKER_RETURN_IF_ERROR(staging.Commit(d, display));
  created.Keep();
  if (options.in_place != nullptr) *options.in_place = true;
  // The caller's empty directory may have been made private on purpose; keep its mode.
  BUNKER_RETURN_IF_ERROR(staging.writer()->FinishRoot(
      d.replace ? std::optional<mode_t>(d.replaced_mode) : std::nullopt));
  return stats;
}

}  // namespace

absl::StatusOr<ExtractStats> ExtractArchiveAt(ByteSource* source, const ExtractTarget& target,
                                              const ExtractOptions& options) {
  return Extract(source, target, target.relative, options);
}

absl::Status CheckArchive(ByteSource* source, const ExtractOptions& options) {
  const std::string display = "the archive";
  Extraction check(source, nullptr, display, options);
  return check.Run().status();
}

absl::StatusOr<ExtractStats> ExtractArchive(ByteSource* source, const std::string& dest,
                                            const ExtractOptions& options) {
  std::string p = dest;
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  size_t slash = p.find_last_of('/');
  const std::string base = slash == std::string::npos ? p : p.substr(slash + 1);
  if (base.empty() || base == "." || base == "..") {
    return absl::InvalidArgumentError(
        absl::StrCat("destination ", QuotePath(dest), " must name a new or an empty directory"));
  }
  // The longest existing ancestor of the parent is the caller's own tree: resolved by path.
  // What is missing below it is created by ExtractArchiveAt, without following symlinks.
  std::string anchor = slash == std::string::npos ? "." : (slash == 0 ? "/" : p.substr(0, slash));
  std::vector<std::string> missing{base};  // innermost first
  std::string real;
  while (true) {
    if (char* resolved = ::realpath(anchor.c_str(), nullptr)) {
      real = resolved;
      ::free(resolved);
      break;
    }
    if (errno != ENOENT || anchor == "." || anchor == "/") {
      return PathError("cannot use destination", dest, errno);
    }
    while (anchor.size() > 1 && anchor.back() == '/') anchor.pop_back();
    slash = anchor.find_last_of('/');
    const std::string name = slash == std::string::npos ? anchor : anchor.substr(slash + 1);
    anchor = slash == std::string::npos ? "." : (slash == 0 ? "/" : anchor.substr(0, slash));
    if (name == "..") {
      return absl::InvalidArgumentError(absl::StrCat(
          "destination ", QuotePath(dest), " has '..' after a directory that does not exist"));
    }
    if (!name.empty() && name != ".") missing.push_back(name);
  }
  Fd root(::open(real.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!root.valid()) return PathError("cannot use destination", dest, errno);
  ExtractTarget target;
  target.root_fd = root.get();
  target.relative = absl::StrJoin(missing.rbegin(), missing.rend(), "/");
  return Extract(source, target, dest, options);
}

}  // namespace bunker::capsule
