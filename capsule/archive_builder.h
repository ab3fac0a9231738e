// Builds a capsule's payload from a dataset: a pax archive (POSIX.1-2001, readable by GNU tar)
// followed by the file index, streamed into a CapsuleWriter.
//
// Kept: regular files, directories, symlinks (not followed), hard links from imported archives,
// permission bits (masked to 0777: setuid/setgid/sticky are dropped), mtimes.
// Dropped: owners, ACLs, extended attributes, file flags, sparse maps (holes become zeros).
// A directory is walked through descriptors (capsule/tree_walk.h): nothing outside it is read,
// and a folder or file swapped for another (or for a symlink) while it is sealed fails with
// kAborted "... changed while it was being sealed", as a file that changes size does. An input
// named "link/" is the directory the symlink names; "link" is refused as a symlink.
// Refused with kInvalidArgument naming the path: unsafe paths, symlinks whose target is absolute
// or climbs out of the tree, device nodes, FIFOs, sockets, hard links to anything but an earlier
// regular file.
#ifndef BUNKER_CAPSULE_ARCHIVE_BUILDER_H_
#define BUNKER_CAPSULE_ARCHIVE_BUILDER_H_

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "capsule/writer.h"

namespace bunker::capsule {

struct DatasetSource {
  enum class Kind { kPath, kArchive };
  Kind kind = Kind::kPath;
  // kPath: a directory (its contents become the archive's top level) or a single file.
  // kArchive: a tar/pax/zip file (optionally compressed), or "-" for standard input.
  std::string path;
};

// A file (device, inode) that a directory walk leaves out.
using SkipFile = std::optional<std::pair<dev_t, ino_t>>;

struct BuildStats {
  uint64_t files = 0;
  uint64_t directories = 0;
  uint64_t symlinks = 0;
  uint64_t hardlinks = 0;
  uint64_t content_bytes = 0;
  uint64_t entries() const { return files + directories + symlinks + hardlinks; }
};

// The bytes of file contents under `source` (for progress; 0 when unknown, e.g. stdin).
uint64_t EstimateContentBytes(const DatasetSource& source);

// Streams `source` into `writer` as the archive, marks the archive end, then appends the file
// index. The caller calls writer->Finish(stats.entries()) afterwards.
// `skip_file` (kPath only): a regular file the walk leaves out, by device and inode: the capsule
// being written, whose temporary file may have a name inside the tree (capsule/io.h
// AtomicFileWriter).
absl::StatusOr<BuildStats> BuildPayload(const DatasetSource& source, CapsuleWriter* writer,
                                        const SkipFile& skip_file = std::nullopt);

}  // namespace bunker::capsule

#endif  // BUNKER_CAPSULE_ARCHIVE_BUILDER_H_
