#include "transfer/session_stream.h"

#include <capnp/common.h>
#include <kj/debug.h>

#include <algorithm>
#include <cstring>
#include <utility>

namespace bunker::transfer {

namespace {

uint32_t Le32(const kj::byte* p) {
  return uint32_t{p[0]} | uint32_t{p[1]} << 8 | uint32_t{p[2]} << 16 | uint32_t{p[3]} << 24;
}

// Cap'n Proto's default limit on one message (ReaderOptions::traversalLimitInWords).
constexpr uint64_t kMaxMessageBytes = uint64_t{8} * 1024 * 1024 * sizeof(capnp::word);

}  // namespace

// ---------------------------------------------------------------------------------------------
// MessageFraming

uint64_t MessageFraming::PartLeft() const {
  switch (state_) {
    case State::kFirstWord:
      return 8 - have_;
    case State::kSizes:
      return sizes_left_;
    case State::kBody:
      return body_left_;
  }
  return 1;
}

bool MessageFraming::Consume(const kj::byte* p, uint64_t n) {
  switch (state_) {
    case State::kFirstWord: {
      std::memcpy(first_ + have_, p, static_cast<size_t>(n));
      have_ += static_cast<size_t>(n);
      if (have_ < 8) return false;
      have_ = 0;
      // A 32-bit count: 0xffffffff + 1 wraps to no segment at all, which Cap'n Proto 0.9
      // mishandles, and it refuses 512 or more. Both end the session before it sees them.
      segments_ = static_cast<uint32_t>(Le32(first_) + 1);
      if (segments_ == 0 || segments_ >= 512) {
        malformed_ = true;
        segments_ = 0;
      }
      total_words_ = malformed_ ? 0 : Le32(first_ + 4);
      sized_ = 1;
      // The sizes of segments 1..n-1, padded to a whole word.
      sizes_left_ = 4 * (segments_ & ~uint64_t{1});
      if (sizes_left_ == 0) return StartBody();
      state_ = State::kSizes;
      return false;
    }
    case State::kSizes:
      for (uint64_t i = 0; i < n; ++i) {
        size_[size_have_++] = p[i];
        if (size_have_ == 4) {
          size_have_ = 0;
          if (sized_++ < segments_) total_words_ += Le32(size_);
        }
      }
      sizes_left_ -= n;
      return sizes_left_ == 0 ? StartBody() : false;
    case State::kBody:
      body_left_ -= n;
      if (body_left_ > 0) return false;
      state_ = State::kFirstWord;
      return true;
  }
  return false;
}

bool MessageFraming::StartBody() {
  body_left_ = total_words_ * 8;
  state_ = body_left_ == 0 ? State::kFirstWord : State::kBody;
  return body_left_ == 0;
}

// ---------------------------------------------------------------------------------------------
// WatchedStream

kj::Promise<size_t> WatchedStream::tryRead(void* buffer, size_t min_bytes, size_t max_bytes) {
  Touch();
  return WhenWritten().then([this, buffer, min_bytes, max_bytes]() {
    return ReadFramed(static_cast<kj::byte*>(buffer), min_bytes, max_bytes, 0);
  });
}

kj::Promise<void> WatchedStream::Watch() {
  return timer_.afterDelay(idle_).then([this]() -> kj::Promise<void> {
    if (waiting_for_lease_) Touch();
    if (timer_.now() - last_ >= idle_) return KJ_EXCEPTION(DISCONNECTED, "idle timeout");
    return Watch();
  });
}

kj::Promise<size_t> WatchedStream::ReadFramed(kj::byte* buffer, size_t min, size_t max,
                                              size_t done) {
  if (done >= max || (done >= min && done > 0)) return done;
  if (framing_.InBody() && !leased_ && (peer_budget_ != nullptr || budget_ != nullptr) &&
      !TryTakeLeases(framing_.body_left())) {
    waiting_for_lease_ = true;
    return TakeLeases(framing_.body_left()).then([this, buffer, min, max, done]() {
      waiting_for_lease_ = false;
      Touch();
      return ReadFramed(buffer, min, max, done);
    });
  }
  const size_t want_max = static_cast<size_t>(std::min<uint64_t>(max - done, framing_.PartLeft()));
  const size_t want_min = std::min(done < min ? min - done : size_t{1}, want_max);
  if (done + want_min >= min) {
    // This read completes the caller's (as Cap'n Proto's reads, one part at a time, always
    // do): a plain continuation, not a chained promise, so no extra turn of the event loop.
    return inner_.tryRead(buffer + done, want_min, want_max)
        .then([this, buffer, done](size_t n) -> size_t {
          Touch();
          if (n > 0) Consumed(buffer + done, n);
          return done + n;
        });
  }
  return inner_.tryRead(buffer + done, want_min, want_max)
      .then([this, buffer, min, max, done, want_min](size_t n) -> kj::Promise<size_t> {
        Touch();
        if (n == 0) return done;  // the stream ended
        Consumed(buffer + done, n);
        if (n < want_min) return done + n;  // the stream ended within
        return ReadFramed(buffer, min, max, done + n);
      });
}

void WatchedStream::Consumed(const kj::byte* bytes, size_t n) {
  const bool ended = framing_.Consume(bytes, n);
  if (framing_.malformed()) {
    kj::throwFatalException(KJ_EXCEPTION(DISCONNECTED, "malformed message: bad segment count"));
  }
  if (ended) {
    // The body was read: its bytes are the message's now.
    peer_lease_ = nullptr;
    lease_ = nullptr;
    leased_ = false;
  }
}

bool WatchedStream::TryTakeLeases(uint64_t bytes) {
  bytes = std::min<uint64_t>(bytes, kMaxMessageBytes);
  kj::Own<MemoryBudget::Lease> mine;
  if (peer_budget_ != nullptr && !(mine = peer_budget_->TryTake(bytes))) return false;
  kj::Own<MemoryBudget::Lease> all;
  if (budget_ != nullptr && !(all = budget_->TryTake(bytes))) return false;
  peer_lease_ = kj::mv(mine);
  lease_ = kj::mv(all);
  leased_ = true;
  return true;
}

kj::Promise<void> WatchedStream::TakeLeases(uint64_t bytes) {
  // No more than Cap'n Proto would accept: a larger message is refused before its body.
  bytes = std::min<uint64_t>(bytes, kMaxMessageBytes);
  using Lease = kj::Own<MemoryBudget::Lease>;
  kj::Promise<Lease> peer =
      peer_budget_ != nullptr ? peer_budget_->Take(bytes) : kj::Promise<Lease>(Lease());
  return peer.then([this, bytes](Lease mine) {
    peer_lease_ = kj::mv(mine);
    kj::Promise<Lease> all =
        budget_ != nullptr ? budget_->Take(bytes) : kj::Promise<Lease>(Lease());
    return all.then([this](Lease lease) {
      lease_ = kj::mv(lease);
      leased_ = true;
    });
  });
}

kj::Promise<void> WatchedStream::Written(kj::Promise<void> write) {
  Touch();
  ++writing_;
  return write.then(
      [this]() {
        Touch();
        Done();
      },
      [this](kj::Exception&& e) {
        Done();
        kj::throwFatalException(kj::mv(e));
      });
}

void WatchedStream::Done() {
  if (--writing_ > 0) return;
  for (auto& w : readers_) w->fulfill();
  readers_.clear();
}

kj::Promise<void> WatchedStream::WhenWritten() {
  if (writing_ == 0) return kj::READY_NOW;
  auto paf = kj::newPromiseAndFulfiller<void>();
  readers_.push_back(kj::mv(paf.fulfiller));
  return kj::mv(paf.promise);
}

}  // namespace bunker::transfer
