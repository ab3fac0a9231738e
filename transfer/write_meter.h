// What a connection has written, and the stream that counts it and opens the flow control
// window as it does (transfer/secure_channel.h SecureConnection).
#ifndef BUNKER_TRANSFER_WRITE_METER_H_
#define BUNKER_TRANSFER_WRITE_METER_H_

#include <kj/async-io.h>
#include <kj/refcount.h>

#include <cstddef>
#include <cstdint>
#include <map>

namespace bunker::transfer {

// The plaintext bytes a connection's stream has written so far. A sender that must keep what
// waits in its own memory short (transfer/sender.h SendOptions::meters) waits on it: a message
// sent is held by Cap'n Proto until the stream has written it, and the flow control window,
// which a long link needs large, would otherwise let that much pile up in the sender's heap
// whenever the far end or the path is the slower side. Shared by the stream, which counts, and
// whoever waits; waits break when the connection's writes fail or the stream is gone.
class WriteMeter final : public kj::Refcounted {
 public:
  uint64_t written() const { return written_; }
  // Resolves once `bytes` were written in all (at once if they were).
  kj::Promise<void> WhenWritten(uint64_t bytes);
  void Wrote(uint64_t bytes);
  void Fail(const kj::Exception& why);

 private:
  uint64_t written_ = 0;
  kj::Maybe<kj::Exception> failed_;
  std::multimap<uint64_t, kj::Own<kj::PromiseFulfiller<void>>> waiters_;
};

// `inner` (a connection's TLS stream) reporting a flow control window (SO_SNDBUF) that opens
// as bytes are written, up to `window`, and counting what it writes on `meter`. When the stream
// is gone or a write fails, the meter's waits break.
kj::Own<kj::AsyncIoStream> NewWindowedStream(kj::Own<kj::AsyncIoStream> inner, size_t window,
                                             WriteMeter& meter);

}  // namespace bunker::transfer

#endif  // BUNKER_TRANSFER_WRITE_METER_H_
