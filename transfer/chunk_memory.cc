#include "transfer/chunk_memory.h"

#include <malloc.h>

namespace bunker::transfer {

void KeepChunkBuffers() {
  // glibc's default moves its mmap threshold up after the first large free, but keeps trimming
  // the top of the heap once 2x that threshold is free; with a window of 1 MiB messages in flight
  // that happens all the time, and every new message faults its pages in again (perf: 24% of a
  // sender's CPU). Fixed thresholds keep them mapped. Advice only: failures change nothing.
  // The mmap threshold sits above a chunk message (1 MiB and a little) but below an S3
  // read-ahead window (8 MiB, capsule/s3_object.cc): those are mapped on their own and go
  // back to the system when freed, so a release from an S3 store does not leave 16 MiB in an
  // arena of the daemon.
  (void)::mallopt(M_MMAP_THRESHOLD, 4 << 20);
  (void)::mallopt(M_TRIM_THRESHOLD, 64 << 20);
  // Two arenas, as `capsule` has (cli/capsule_main.cc): glibc gives each new thread an arena
  // of its own up to 8 per core, and malloc_trim cannot shrink the top of a thread's arena, so
  // the daemon's short-lived request threads would each leave their peak behind in a fresh
  // arena and the next request would start a new one (its peak resident size grew with each
  // release from an S3 store, 52 -> 61 -> 70 MiB). Sharing two, a release reuses what the
  // last one freed.
  (void)::mallopt(M_ARENA_MAX, 2);
}

}  // namespace bunker::transfer
