// Safe, atomic extraction of a capsule's pax archive into a new directory.
//
// Guarantees (spec/FORMAT.md "Extraction"):
//  - Nothing appears at `dest` unless the whole archive (or the whole selection) extracted and
//    the source reported no error: entries go to a staging directory created beside `dest` on
//    the same filesystem, which is renamed to `dest` at the end and removed on any failure.
//  - `dest` must not exist, or be an empty directory (which is replaced).
//  - Every entry path goes through NormalizeEntryPath; absolute paths and ".." are refused.
//  - Only regular files, directories and symlinks are created. Hard links are accepted only to a
//    regular file already extracted in this run; device nodes, FIFOs, sockets are refused.
//  - A symlink whose target escapes the tree (CheckSymlinkTarget) is refused, and no entry is
//    ever written through a symlink (libarchive's ARCHIVE_EXTRACT_SECURE_* flags as a second
//    line of defence).
//  - setuid, setgid and sticky bits are refused; owners are never restored; modes are masked
//    to 0777 and mtimes restored.
//  - Errors are one line naming the offending path and the rule.
#ifndef BUNKER_CAPSULE_EXTRACT_H_
#define BUNKER_CAPSULE_EXTRACT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "capsule/glob.h"
#include "capsule/io.h"

namespace bunker::capsule {

struct ExtractOptions {
  // Entries to extract; empty selects all. Directories that are ancestors of selected entries
  // are created as needed.
  PathSelection only;
};

struct ExtractStats {
  uint64_t files = 0;
  uint64_t directories = 0;
  uint64_t symlinks = 0;
  uint64_t bytes = 0;  // regular file contents written
};

// Reads a tar/pax archive from `source` (which authenticates each piece before returning it)
// and extracts it into `dest` as described above. On error nothing is left at `dest` (an empty
// `dest` directory given by the caller is left as it was) and no staging directory remains.
// Codes: kInvalidArgument for unsafe entries or a bad destination, kAlreadyExists for a
// non-empty `dest`, the source's own code when it fails (e.g. kDataLoss), kResourceExhausted
// for a full disk, kDataLoss for a malformed archive.
absl::StatusOr<ExtractStats> ExtractArchive(ByteSource* source, const std::string& dest,
                                            const ExtractOptions& options);

}  // namespace bunker::capsule

#endif  // BUNKER_CAPSULE_EXTRACT_H_
