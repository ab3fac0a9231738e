#include "transfer/chunk_memory.h"

#include <malloc.h>

namespace bunker::transfer {

void KeepChunkBuffers() {
  // glibc's default moves its mmap threshold up after the first large free, but keeps trimming
  // the top of the heap once 2x that threshold is free; with a window of 1 MiB messages in flight
  // that happens all the time, and every new message faults its pages in again (perf: 24% of a
  // sender's CPU). Fixed thresholds keep them mapped. Advice only: failures change nothing.
  (void)::mallopt(M_MMAP_THRESHOLD, 32 << 20);
  (void)::mallopt(M_TRIM_THRESHOLD, 64 << 20);
}

}  // namespace bunker::transfer
