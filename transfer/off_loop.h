// Running blocking work (disk, object store) off a KJ event loop's thread.
#ifndef BUNKER_TRANSFER_OFF_LOOP_H_
#define BUNKER_TRANSFER_OFF_LOOP_H_

#include <kj/async.h>

#include <functional>
#include <memory>
#include <optional>

#include "capsule/parallel.h"

namespace bunker::transfer {

// Runs `job` on `pool` and resolves with its result on the calling event loop's thread (which
// must be the thread that waits on the promise). The job must own (or share) everything it
// touches: dropping the promise does not stop it.
template <typename T>
kj::Promise<T> OffLoop(capsule::ThreadPool& pool, std::function<T()> job) {
  auto done = kj::newPromiseAndCrossThreadFulfiller<void>();
  auto fulfiller =
      std::make_shared<kj::Own<kj::CrossThreadPromiseFulfiller<void>>>(kj::mv(done.fulfiller));
  // The result travels in `result`; fulfilling the cross-thread promise publishes it.
  auto result = std::make_shared<std::optional<T>>();
  pool.Submit([job = std::move(job), fulfiller, result]() {
    result->emplace(job());
    (*fulfiller)->fulfill();
  });
  return done.promise.then([result]() { return std::move(**result); });
}

}  // namespace bunker::transfer

#endif  // BUNKER_TRANSFER_OFF_LOOP_H_
