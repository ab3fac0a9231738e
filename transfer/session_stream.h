// The stream a served RPC session reads and writes through (transfer/secure_channel.h's
// RpcServer): it notes when the session was last used, holds back reads while an answer of
// ours is unwritten, and reads a message's body only once its size fits the memory budgets
// (spec/TRANSFER.md 2). Split out of secure_channel.cc; only RpcServer and tests use it.
#ifndef BUNKER_TRANSFER_SESSION_STREAM_H_
#define BUNKER_TRANSFER_SESSION_STREAM_H_

#include <kj/async-io.h>
#include <kj/timer.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "transfer/memory_budget.h"

namespace bunker::transfer {

// Follows the framing of the Cap'n Proto messages in a byte stream (spec/TRANSFER.md 2: each
// message is a segment table, a count and sizes in little-endian 32-bit words, then its
// segments), so that a reader knows when a message's body starts, how long it is, and when it
// ends. It only looks: nothing is allocated from what a peer declares.
class MessageFraming {
 public:
  // Bytes left in the current part: the first word, the other sizes, or the body. Never 0.
  uint64_t PartLeft() const;
  bool InBody() const { return state_ == State::kBody; }
  // A segment table no valid message has: the stream must not go on.
  bool malformed() const { return malformed_; }
  uint64_t body_left() const { return body_left_; }
  // Takes `n` bytes (at most PartLeft()); true when they end a message.
  bool Consume(const kj::byte* p, uint64_t n);

 private:
  enum class State { kFirstWord, kSizes, kBody };
  bool StartBody();

  State state_ = State::kFirstWord;
  bool malformed_ = false;
  kj::byte first_[8] = {};
  size_t have_ = 0;
  kj::byte size_[4] = {};
  size_t size_have_ = 0;
  uint64_t segments_ = 0, sized_ = 0, sizes_left_ = 0, total_words_ = 0, body_left_ = 0;
};

// Passes a stream through, noting when it was last used, so an idle session can be dropped,
// and reading nothing while a write of ours is unfinished. Cap'n Proto queues the messages it
// sends in memory, one write after the other, without a bound; a peer that asks and never
// reads would make that queue grow for as long as it keeps sending. Writes finish as soon as
// the socket (and CoalescingStream's 64 KiB) take them, so a peer that reads is never held up;
// one that does not stops being read once the socket buffers are full, and its session then
// holds about one answer and ends at the idle timeout.
//
// With budgets, it also reads a message's body only once the body's size was taken from them
// (the peer's first, then the daemon's), and gives it back when the body was read. Cap'n
// Proto takes a message whole before it decodes it, so without this every session could hold
// a message of up to its size limit (64 MiB) half-sent: 256 sessions, 16 GiB. A complete
// message that is a call is then bounded by the session's call window (RpcServer::Rebalance).
// A segment table Cap'n Proto would refuse or mishandle ends the stream (DISCONNECTED).
class WatchedStream final : public kj::AsyncIoStream {
 public:
  // The budgets, if given, must outlive the stream.
  WatchedStream(kj::AsyncIoStream& inner, kj::Timer& timer, kj::Duration idle,
                MemoryBudget* peer_budget = nullptr, MemoryBudget* budget = nullptr)
      : inner_(inner),
        timer_(timer),
        idle_(idle),
        last_(timer.now()),
        peer_budget_(peer_budget),
        budget_(budget) {}

  kj::Promise<size_t> tryRead(void* buffer, size_t min_bytes, size_t max_bytes) override;
  kj::Promise<void> write(const void* buffer, size_t size) override {
    return Written(inner_.write(buffer, size));
  }
  kj::Promise<void> write(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces) override {
    return Written(inner_.write(pieces));
  }
  kj::Promise<void> whenWriteDisconnected() override { return inner_.whenWriteDisconnected(); }
  void shutdownWrite() override { inner_.shutdownWrite(); }
  void abortRead() override { inner_.abortRead(); }
  void getsockopt(int level, int option, void* value, kj::uint* length) override {
    inner_.getsockopt(level, option, value, length);  // the flow window (WindowedStream)
  }
  // Breaks (DISCONNECTED) once the stream was idle for the whole idle period. Waiting for the
  // memory budgets to take a message's body is not idleness: the peer sent what it had to.
  kj::Promise<void> Watch();

 private:
  void Touch() { last_ = timer_.now(); }
  // Reads into buffer[done, max) until at least `min` bytes are there (or the stream ends),
  // never across the start of a message's body without its leases.
  kj::Promise<size_t> ReadFramed(kj::byte* buffer, size_t min, size_t max, size_t done);
  void Consumed(const kj::byte* bytes, size_t n);
  // Takes both leases if both budgets grant them at once (the common case: no turn of the
  // event loop per message), else neither.
  bool TryTakeLeases(uint64_t bytes);
  kj::Promise<void> TakeLeases(uint64_t bytes);
  kj::Promise<void> Written(kj::Promise<void> write);
  void Done();
  // Resolves once no write is unfinished.
  kj::Promise<void> WhenWritten();

  kj::AsyncIoStream& inner_;
  kj::Timer& timer_;
  kj::Duration idle_;
  kj::TimePoint last_;
  size_t writing_ = 0;
  std::vector<kj::Own<kj::PromiseFulfiller<void>>> readers_;
  MemoryBudget* peer_budget_;
  MemoryBudget* budget_;
  MessageFraming framing_;
  bool leased_ = false;  // the current body's leases are held
  bool waiting_for_lease_ = false;
  kj::Own<MemoryBudget::Lease> peer_lease_;
  kj::Own<MemoryBudget::Lease> lease_;
};

}  // namespace bunker::transfer

#endif  // BUNKER_TRANSFER_SESSION_STREAM_H_
