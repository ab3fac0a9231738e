// Safe, atomic extraction of a capsule's pax archive into a new directory.
//
// Guarantees (spec/FORMAT.md "Extraction"):
//  - Nothing appears at the destination unless the whole archive (or the whole selection)
//    extracted and the source reported no error: entries go to a private (0700) staging
//    directory created beside the destination, which is renamed into place at the end; on any
//    failure it is removed, and so are the parents of the destination that this call created.
//  - The destination must not exist, or be an empty directory (which is replaced; its mode is
//    kept).
//  - Race-free below the destination's anchor: everything from ExtractTarget::root_fd down (the
//    destination's missing parents, the staging directory, every entry) is created relative to
//    directory descriptors, never following a symlink (capsule/beneath.h, capsule/tree_writer.h),
//    and the final rename goes between descriptors. Someone who can write to the destination's
//    parent can make extraction fail, never make it write elsewhere.
//  - Every entry path goes through NormalizeEntryPath; absolute paths and ".." are refused.
//  - Only regular files, directories and symlinks are created. Hard links are accepted only to a
//    regular file already extracted in this run; device nodes, FIFOs, sockets are refused.
//  - A symlink whose target escapes the tree (CheckSymlinkTarget) is refused, and no entry is
//    ever written through a symlink.
//  - setuid, setgid and sticky bits are refused; owners in the archive are never restored;
//    modes are masked to 0777 (not umasked) and mtimes restored.
//  - Errors are one line naming the offending path and the rule.
//  - No process-wide state is touched (no chdir, no umask change): extractions may run
//    concurrently from several threads, each with its own source and destination.
#ifndef BUNKER_CAPSULE_EXTRACT_H_
#define BUNKER_CAPSULE_EXTRACT_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "capsule/beneath.h"
#include "capsule/file_index.h"
#include "capsule/glob.h"
#include "capsule/io.h"

namespace bunker::capsule {

struct ExtractOptions {
  // Entries to extract; empty selects all. Directories that are ancestors of selected entries
  // are created as needed.
  PathSelection only;
  // Every created entry (files, directories, symlinks, the destination itself and the parents
  // of it that extraction creates) is given to this user and group. A process may give files
  // to another uid only with CAP_CHOWN (a verifier service running as root); otherwise
  // extraction fails with kPermissionDenied. Unset: files belong to the process, no chown.
  std::optional<FileOwner> owner;
  // The capsule's file index, in index order, when the caller decided over it (the gate does):
  // the archive must then agree with it (spec/FORMAT.md "Extraction", "Agreement with the
  // index"). Archive entry i (extension headers excluded) must have index record i's path,
  // type, mode & 0777, size and link target, a file extracted must hash to the record's
  // sha256, and the archive must have exactly as many entries as the index; any disagreement
  // is kDataLoss. Null: the archive is read on its own (section 13 rules only). Not owned;
  // must outlive the call.
  const std::vector<FileEntry>* index = nullptr;
  // The manifest's archiveSize, when `source` gives the whole payload (archive, then index):
  // the end-of-archive block must then lie within the first `archive_size` bytes, or kDataLoss
  // (spec/FORMAT.md "Extraction", "End of archive"), so that no index byte is ever read as
  // part of the archive. Unset: the archive may run to the end of `source`.
  std::optional<uint64_t> archive_size;
  // Set to true once the tree is in place at the destination. An error after that (giving
  // its root to `owner`) leaves the tree released: a caller that counts releases counts it.
  bool* in_place = nullptr;
};

// Where to extract: the directory `relative` below the directory `root_fd` (any descriptor of
// a directory, O_PATH is enough; not closed). `relative` is one or more names separated by '/'
// (no "", "." or "..", not absolute; see CheckRelativePath). Nothing above `root_fd` is ever
// touched, and no symlink below it is ever followed.
struct ExtractTarget {
  int root_fd = -1;
  std::string relative;
};

struct ExtractStats {
  uint64_t files = 0;
  uint64_t directories = 0;
  uint64_t symlinks = 0;
  uint64_t bytes = 0;  // regular file contents written
};

// Reads a tar/pax archive from `source` (which authenticates each piece before returning it)
// and extracts it into `target` as described above. Precedence (FORMAT.md "Error
// precedence"): when an entry is refused, the rest of `source` is still read to its end, and
// a failure of the source there (an authentication failure) is reported instead. On error nothing
// is left at the destination (an empty destination directory given by the caller is left as it
// was), no staging directory remains and the parents it created are gone. Codes: kInvalidArgument
// for unsafe entries, a bad destination, or an entry path too long (PATH_MAX bytes or more below
// the destination, or a name over NAME_MAX); kAlreadyExists for a destination that exists and is
// not an empty directory; kPermissionDenied for a symlink on the way to the destination or a
// refused chown to `options.owner`; the source's own code when it fails (e.g. kDataLoss);
// kResourceExhausted for a full disk; kDataLoss for a malformed archive. Errors name the
// destination as `target.relative`.
absl::StatusOr<ExtractStats> ExtractArchiveAt(ByteSource* source, const ExtractTarget& target,
                                              const ExtractOptions& options);

// Reads the archive from `source` to its end and applies every rule ExtractArchiveAt applies
// (section 13, and the agreement with `options.index` when set, for every file's digest), with
// the same codes and the same precedence, but writes nothing; `options.only` and `owner` are
// ignored. For a release of the archive itself (open --to-tar), checked before it is written.
absl::Status CheckArchive(ByteSource* source, const ExtractOptions& options);

// ExtractArchiveAt for a caller that names the destination by path (the CLI): the longest
// existing ancestor of `dest`'s parent is resolved with realpath(3) (symlinks there are the
// caller's own tree and are followed) and opened; the rest of the path, which extraction
// creates, is handled by ExtractArchiveAt, so no symlink is followed there. A missing part may
// not contain "..". Errors name `dest` as given.
absl::StatusOr<ExtractStats> ExtractArchive(ByteSource* source, const std::string& dest,
                                            const ExtractOptions& options);

}  // namespace bunker::capsule

#endif  // BUNKER_CAPSULE_EXTRACT_H_
