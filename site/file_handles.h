// The file handles of one mount (site/mount.h, spec/VERIFIER.md "Mounts"). FUSE hands a file's
// handle (fuse_file_info::fh) back with every read and release of it; here the handle is only a
// number naming read-ahead state kept in this table, never a pointer.
//
// Why: the number comes back through the kernel, and the mounting user can read and answer the
// mount's requests himself (he can keep a copy of the mount's /dev/fuse descriptor, which
// fusermount3 hands to his process first). A user who answers an open chooses the handle that
// the kernel then sends with that file's reads and release. So every handle is looked up:
//  - A handle that names nothing here (forged, 0, released already) names no state: a read
//    through it is served as a read without history, and releasing it frees nothing.
//  - Handles are numbered from 1 and never reused, so a stale handle never names a later open.
//  - A handle names state only for the file it was opened for: a handle of one file sent with
//    another file's read is unknown for that read.
// The table is bounded (kMaxHandles): a user who answers releases himself never frees a handle,
// so beyond the bound an open gets kNone and its reads go without read-ahead state (still
// served). A handle gives no right: what may be read is decided per inode by the mount's tree.
// Thread-safe.
#ifndef BUNKER_SITE_FILE_HANDLES_H_
#define BUNKER_SITE_FILE_HANDLES_H_

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <unordered_map>

namespace bunker::site {

class FileHandles {
 public:
  // The handle of no state (what Open gives when the table is full).
  static constexpr uint64_t kNone = 0;
  // Open handles one mount keeps at most (a few dozen bytes each).
  static constexpr size_t kMaxHandles = 16384;

  // A new handle for an open of file `ino`, or kNone when kMaxHandles are open.
  uint64_t Open(uint64_t ino);

  // Whether a read of file `ino` at `offset` through `fh` is sequential: at the start, or within
  // `window` bytes of where the last read through `fh` ended (the kernel's read-ahead sends
  // several requests at once, which the worker threads may take out of order). A handle that
  // names no open handle of `ino` has no history: only offset 0 is sequential.
  bool Sequential(uint64_t fh, uint64_t ino, uint64_t offset, uint64_t window) const;

  // Notes that a read through `fh` of file `ino` ended at `end`; nothing when `fh` names no open
  // handle of `ino`.
  void ReadEnded(uint64_t fh, uint64_t ino, uint64_t end);

  // Forgets `fh`. False, and nothing freed, when it names no open handle.
  bool Release(uint64_t fh);

  // How many handles are open.
  size_t size() const;

 private:
  struct State {
    uint64_t ino = 0;
    uint64_t last_end = 0;
  };
  mutable std::mutex mu_;
  uint64_t last_handle_ = kNone;  // 64 bits: never wraps
  std::unordered_map<uint64_t, State> open_;
};

}  // namespace bunker::site

#endif  // BUNKER_SITE_FILE_HANDLES_H_
