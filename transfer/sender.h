// The sending side of the transfer protocol (spec/TRANSFER.md "Push"): offers a capsule by its
// prelude, then sends only the chunks the receiver lacks, over `streams` concurrent chains of
// streaming calls (flow control from the RPC system), committing every few MiB so the receiver
// makes them durable, resending any chunk the receiver refused, and finishing. Re-running a
// push after a cut connection or a crash of either side sends only what the receiver has not
// durably acknowledged.
#ifndef BUNKER_TRANSFER_SENDER_H_
#define BUNKER_TRANSFER_SENDER_H_

#include <kj/async.h>
#include <kj/timer.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "capsule/parallel.h"
#include "capsule/reader.h"
#include "spec/transfer.capnp.h"

namespace bunker::transfer {

class MemoryBudget;  // transfer/memory_budget.h
class WriteMeter;    // transfer/write_meter.h

struct SendProgress {
  uint64_t total_bytes = 0;    // all chunks' ciphertext
  uint64_t skipped_bytes = 0;  // already at the receiver when the offer was answered
  uint64_t sent_bytes = 0;     // sent in this run (resends included)
};

// The most an offer's prelude (header and chunk table: 32 bytes a chunk) may hold: an offer is
// one Cap'n Proto message, which the receiver reads within the default traversal limit of
// 64 MiB (ReaderOptions::traversalLimitInWords), less room for the call around it. So about
// 2 million chunks; a capsule with more is refused before anything is sent (seal it with larger
// chunks). The receiver's answer names the missing chunks as ranges of 16 bytes, at worst one
// for every other chunk: 8 bytes a chunk, so it always fits when the offer did.
inline constexpr uint64_t kMaxOfferPreludeBytes = (uint64_t{64} << 20) - (uint64_t{64} << 10);

struct SendOptions {
  int streams = 1;            // concurrent chains of put calls (1..64)
  uint64_t rate = 0;          // bytes per second; 0: unlimited
  kj::Timer* timer = nullptr; // required when rate > 0
  // A durable commit after this many bytes or this much time, whichever comes first: what a
  // crash can make the sender resend.
  uint64_t commit_every = 16u << 20;
  double commit_seconds = 1.0;
  // What may go out beyond `commit_every` while the last commit is still unanswered, before
  // the chains wait for it. A commit is answered only after the puts sent before it are
  // written, so it comes back a round trip plus the data in flight later; with no slack a
  // link whose round trip holds more than an interval would stall once per interval. The
  // client sets it to its RPC window, what is in flight anyway.
  uint64_t commit_slack = 0;
  int max_rejections = 3;     // refusals of one chunk that make the push fail with kDataLoss
  // Serving a fetch: that failure then speaks to the fetching site, of the sending site's copy.
  bool for_fetch = false;
  uint64_t max_prelude = kMaxOfferPreludeBytes;  // a larger capsule: kInvalidArgument at once
  // When set, chunks are read on these threads instead of the event loop's (a capsule in an
  // object store, whose reads wait on the network); must outlive the promise.
  capsule::ThreadPool* read_pool = nullptr;
  // When set (one per connection, in the order of the connections; they must outlive the
  // promise), a chain builds the next put of a connection only once all but `max_unwritten`
  // bytes of the puts before it on that connection were written: what waits in the sender's
  // memory is then at most that plus the message being built, per connection, however large
  // the flow control window (write_meter.h).
  std::vector<WriteMeter*> meters;
  uint64_t max_unwritten = 1u << 20;
  // When set (it must outlive the promise), each chunk takes its size from this budget before
  // it is read and gives it back once its put was written to the connection (with `meters`),
  // or once the put was sent (without): what all the pushes sharing the budget hold in memory
  // stays within it (a chunk larger than the budget goes alone).
  MemoryBudget* budget = nullptr;
  // When set too, each chunk first takes its size from this one (one peer's share of `budget`:
  // a peer that stops reading holds at most this much of it).
  MemoryBudget* peer_budget = nullptr;
  std::function<void(const SendProgress&)> progress;
};

struct SendSummary {
  std::string capsule_id;
  uint64_t chunks_total = 0;
  uint64_t chunks_sent = 0;
  uint64_t chunks_skipped = 0;
  uint64_t bytes_sent = 0;
  double seconds = 0;
};

// Pushes the capsule `reader` reads to `peer`. The push shares ownership of `reader`: reads
// still running on `options.read_pool` when the promise is dropped (a cancelled call) keep it
// alive. With a read_pool, the prelude (header and tail) is read there too, so a reader whose
// reads wait on the network never blocks the event loop. The promise breaks with the peer's
// exception (see transfer/errors.h to turn it into a Status); kInvalidArgument for a null reader.
kj::Promise<SendSummary> Push(std::shared_ptr<const capsule::CapsuleReader> reader,
                              schema::Transfer::Client peer, SendOptions options);

// The same over several connections to one receiver (long links: one TCP flow window each);
// the `streams` chains are spread over them.
kj::Promise<SendSummary> Push(std::shared_ptr<const capsule::CapsuleReader> reader,
                              kj::Array<schema::Transfer::Client> peers, SendOptions options);

}  // namespace bunker::transfer

#endif  // BUNKER_TRANSFER_SENDER_H_
