// Process-wide memory tuning for programs that move capsule chunks over RPC (the sender and the
// site daemon).
#ifndef BUNKER_TRANSFER_CHUNK_MEMORY_H_
#define BUNKER_TRANSFER_CHUNK_MEMORY_H_

namespace bunker::transfer {

// Makes the C allocator keep and reuse the chunk-sized blocks that every put message needs (a
// sender builds one message of a chunk's size per put; a receiver reads each into one buffer of
// that size), instead of mapping fresh zero pages for each and returning them right after: the
// page faults that cost were a quarter of a sender's CPU. Blocks below 32 MiB come from the
// heap, and up to 64 MiB of free heap is kept rather than trimmed. What a process holds stays
// bounded by its peak use (the RPC windows bound that). Call once, early; idempotent.
void KeepChunkBuffers();

}  // namespace bunker::transfer

#endif  // BUNKER_TRANSFER_CHUNK_MEMORY_H_
