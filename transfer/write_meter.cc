#include "transfer/write_meter.h"

#include <sys/socket.h>

#include <algorithm>
#include <cstring>

namespace bunker::transfer {
namespace {

// The TLS stream of an authenticated connection, reporting ChannelOptions::rpc_window as its
// send buffer (SO_SNDBUF) so that Cap'n Proto's flow control keeps that much in flight.
//
// The window opens as the connection's bytes leave the process, not all at once: Cap'n Proto
// holds a message sent until the stream has written it, and with the whole window open from
// the first call a sender with 8 streams built 48 MiB of put messages within 50 ms of
// connecting, all in its own heap (peak RSS 75 MiB). Here what may be in flight is what was
// written so far, up to the window (Cap'n Proto lets one message past it, so the first call
// goes out).
class WindowedStream final : public kj::AsyncIoStream {
 public:
  WindowedStream(kj::Own<kj::AsyncIoStream> inner, size_t window, WriteMeter& meter)
      : inner_(kj::mv(inner)), window_(window), meter_(kj::addRef(meter)) {}
  ~WindowedStream() noexcept(false) {
    meter_->Fail(kj::Exception(kj::Exception::Type::DISCONNECTED, __FILE__, __LINE__,
                               kj::heapString("connection closed")));
  }

  kj::Promise<size_t> tryRead(void* buffer, size_t min_bytes, size_t max_bytes) override {
    return inner_->tryRead(buffer, min_bytes, max_bytes);
  }
  kj::Promise<void> write(const void* buffer, size_t size) override {
    return Count(inner_->write(buffer, size), size);
  }
  kj::Promise<void> write(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces) override {
    size_t size = 0;
    for (const auto& piece : pieces) size += piece.size();
    return Count(inner_->write(pieces), size);
  }
  kj::Promise<void> whenWriteDisconnected() override { return inner_->whenWriteDisconnected(); }
  void shutdownWrite() override { inner_->shutdownWrite(); }
  void abortRead() override { inner_->abortRead(); }
  void getsockopt(int level, int option, void* value, kj::uint* length) override {
    if (level == SOL_SOCKET && option == SO_SNDBUF && *length >= sizeof(int)) {
      const size_t open = std::min<uint64_t>(window_, meter_->written());
      const int window = static_cast<int>(std::min<size_t>(open, INT32_MAX));
      std::memcpy(value, &window, sizeof(int));
      *length = sizeof(int);
      return;
    }
    inner_->getsockopt(level, option, value, length);
  }

 private:
  kj::Promise<void> Count(kj::Promise<void> write, size_t size) {
    WriteMeter* meter = meter_.get();
    return write.then([meter, size]() { meter->Wrote(size); },
                      [meter](kj::Exception&& e) {
                        meter->Fail(e);
                        kj::throwFatalException(kj::mv(e));
                      });
  }

  kj::Own<kj::AsyncIoStream> inner_;
  size_t window_;
  kj::Own<WriteMeter> meter_;  // counts the bytes the inner stream took
};

}  // namespace

kj::Own<kj::AsyncIoStream> NewWindowedStream(kj::Own<kj::AsyncIoStream> inner, size_t window,
                                             WriteMeter& meter) {
  return kj::heap<WindowedStream>(kj::mv(inner), window, meter);
}

kj::Promise<void> WriteMeter::WhenWritten(uint64_t bytes) {
  if (written_ >= bytes) return kj::READY_NOW;
  KJ_IF_MAYBE(e, failed_) { return kj::cp(*e); }
  auto paf = kj::newPromiseAndFulfiller<void>();
  waiters_.emplace(bytes, kj::mv(paf.fulfiller));
  return kj::mv(paf.promise);
}

void WriteMeter::Wrote(uint64_t bytes) {
  written_ += bytes;
  while (!waiters_.empty() && waiters_.begin()->first <= written_) {
    waiters_.begin()->second->fulfill();
    waiters_.erase(waiters_.begin());
  }
}

void WriteMeter::Fail(const kj::Exception& why) {
  if (failed_ == nullptr) failed_ = kj::cp(why);
  for (auto& [bytes, waiter] : waiters_) waiter->reject(kj::cp(why));
  waiters_.clear();
}

}  // namespace bunker::transfer
