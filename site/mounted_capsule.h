// A capsule released as a read-only file tree (Want::Kind::kMount, site/gate.h): exactly what a
// FUSE mount (site/mount.h) needs, and nothing more. Made only by Permit::Mount, after the
// gate decided and recorded the permit; it owns the reader and the data key privately and never
// hands either out.
//
// What a caller may rely on:
//  - The tree holds only the entries the decision permitted: files, symlinks and hard links
//    (a hard link only when the file it names is permitted too, and then as the same inode), and
//    the directories above them. Names of forbidden files and of wholly forbidden directories are
//    absent. Lookup by (parent inode, name) and by inode is O(1) from an index held in memory.
//  - Read() returns bytes only from chunks authenticated against the signed chunk table (and
//    decrypted with the AEAD) at the time they were loaded; a chunk that fails either check is
//    kDataLoss for every read that needs it, and nothing else. Authenticated plaintext chunks
//    are kept in a bounded LRU cache in memory (never on disk); sequential readers get the next
//    chunks decrypted ahead on background threads.
//  - From not_after() on (the closing of the policy's time window that the permit used), Read()
//    is kPermissionDenied.
// Thread-safety: every const method and Read() may be called from many threads at once.
#ifndef BUNKER_SITE_MOUNTED_CAPSULE_H_
#define BUNKER_SITE_MOUNTED_CAPSULE_H_

#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "capsule/file_index.h"
#include "crypto/keys.h"
#include "verifier/audit_log.h"
#include "verifier/verifier.h"

namespace bunker::site {

class OpenCapsule;
class Permit;

// How a mount is served.
struct MountOptions {
  // Bound on the decrypted chunks kept in memory (the default: 256 MiB).
  uint64_t cache_bytes = uint64_t{256} << 20;
  // Chunks decrypted ahead of a sequential reader, and the threads doing it (0: all cores).
  int read_ahead_chunks = 8;
  int threads = 0;
};

class MountedCapsule {
 public:
  static constexpr uint64_t kRootInode = 1;
  static constexpr int64_t kNever = std::numeric_limits<int64_t>::max();

  struct Node {
    enum class Type { kFile, kDirectory, kSymlink };
    uint64_t ino = 0;
    Type type = Type::kFile;
    uint32_t mode = 0;  // permission bits from the index, without setuid and setgid
    int64_t mtime = 0;
    uint64_t size = 0;
    uint32_t nlink = 1;
    std::string link_target;  // symlinks
    // Directories: (name, inode), sorted by name.
    std::vector<std::pair<std::string, uint64_t>> children;
    uint64_t parent = kRootInode;  // directories
  };

  // Usage so far, for the summary and `capsule mounts`. Reads count too: the mounting user can
  // answer a mount's opens himself (spec/VERIFIER.md "Mounts"), so that the server never sees
  // them, but only this object can answer a read with the file's bytes.
  struct Usage {
    uint64_t opens = 0;         // CountOpen calls, plus one per file read before any of them
    uint64_t files_opened = 0;  // distinct files opened or read
    uint64_t bytes_read = 0;    // bytes returned by Read()
  };

  ~MountedCapsule();
  MountedCapsule(const MountedCapsule&) = delete;
  MountedCapsule& operator=(const MountedCapsule&) = delete;

  // The node with inode `ino`, or null.
  const Node* Get(uint64_t ino) const;
  // The child `name` of directory `parent`, or null.
  const Node* Lookup(uint64_t parent, std::string_view name) const;
  // Counts an open of file `ino` (the summary's "files opened").
  void CountOpen(uint64_t ino);
  // The files opened (CountOpen) or read (Read, ReadSlices) so far: those whose bytes the
  // kernel may have cached, in no particular order.
  std::vector<uint64_t> FilesOpened() const;

  // Bytes of a file as read-only views into authenticated, decrypted chunks: what Read() would
  // copy, for a caller that hands them on without copying (a FUSE reply). The views stay valid
  // as long as this object lives (it holds the chunks, even once the cache evicted them).
  class Slices {
   public:
    const std::vector<absl::Span<const uint8_t>>& spans() const { return spans_; }
    size_t size() const { return size_; }

   private:
    friend class MountedCapsule;
    std::vector<std::shared_ptr<const void>> holds_;
    std::vector<absl::Span<const uint8_t>> spans_;
    size_t size_ = 0;
  };

  // Up to `max` bytes of file `ino` from `offset` as Slices; the same contract as Read().
  absl::StatusOr<Slices> ReadSlices(uint64_t ino, uint64_t offset, size_t max, int64_t now,
                                    bool sequential);

  // Up to out.size() bytes of file `ino` from `offset` (fewer at its end; 0 past it). `now`
  // (seconds since the epoch) is checked against not_after(). `sequential`: the reader read the
  // bytes just before `offset` last, so the following chunks are decrypted ahead. The file
  // counts as opened (usage(), FilesOpened()) from its first read on, opened or not.
  // kNotFound for an inode that is not a file, kPermissionDenied once the window closed,
  // kDataLoss when a chunk the range needs does not authenticate, kUnavailable when it cannot
  // be read.
  absl::StatusOr<size_t> Read(uint64_t ino, uint64_t offset, absl::Span<uint8_t> out,
                              int64_t now, bool sequential);

  // When the permit's time window closes (kNever when no rule it used has one).
  int64_t not_after() const;
  const std::string& capsule_id() const;
  Usage usage() const;
  size_t node_count() const;

  // Appends the summary of this mount to the site's audit log (event "mount-ended", uses 0):
  // the permit's capsule, requester, purpose, paths and local client, with `why` it ended and
  // its usage since `started`. OK without doing anything offline.
  absl::Status RecordEnd(const std::string& why, int64_t started, int64_t now) const;

 private:
  friend class Permit;
  struct Impl;
  // For Permit::Mount: `files` are the permitted (non-directory) index paths; `record` is the
  // permit's audit record (null offline); `facts` and `identity` where to record the summary.
  static absl::StatusOr<std::unique_ptr<MountedCapsule>> Create(
      std::unique_ptr<OpenCapsule> capsule, const std::vector<std::string>& files,
      int64_t not_after, std::optional<verifier::AuditRecord> record,
      std::optional<verifier::SiteFacts> facts, const crypto::Identity* identity,
      const MountOptions& options);
  explicit MountedCapsule(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace bunker::site

#endif  // BUNKER_SITE_MOUNTED_CAPSULE_H_
