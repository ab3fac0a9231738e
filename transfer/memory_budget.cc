#include "transfer/memory_budget.h"

#include <algorithm>

namespace bunker::transfer {

kj::Own<MemoryBudget::Lease> MemoryBudget::Grant(uint64_t bytes) {
  held_ += bytes;
  peak_ = std::max(peak_, held_);
  return kj::heap<Lease>(*this, bytes);
}

kj::Own<MemoryBudget::Lease> MemoryBudget::TryTake(uint64_t bytes) {
  Pump();
  if (waiting_.empty() && Fits(bytes)) return Grant(bytes);
  return kj::Own<Lease>();
}

kj::Promise<kj::Own<MemoryBudget::Lease>> MemoryBudget::Take(uint64_t bytes) {
  if (kj::Own<Lease> now = TryTake(bytes)) return kj::mv(now);
  auto paf = kj::newPromiseAndFulfiller<kj::Own<Lease>>();
  waiting_.push_back(Waiter{bytes, kj::mv(paf.fulfiller)});
  // A request withdrawn (its promise dropped) may have held up smaller ones behind it: they
  // are granted at once, not at the next release (which may never come).
  return paf.promise.attach(kj::defer([this, alive = alive_]() {
    if (*alive) Pump();
  }));
}

void MemoryBudget::Release(uint64_t bytes) {
  held_ -= bytes;
  Pump();
}

void MemoryBudget::Pump() {
  for (auto it = waiting_.begin(); it != waiting_.end();) {
    it = it->fulfiller->isWaiting() ? std::next(it) : waiting_.erase(it);
  }
  while (!waiting_.empty() && Fits(waiting_.front().bytes)) {
    Waiter next = std::move(waiting_.front());
    waiting_.pop_front();
    next.fulfiller->fulfill(Grant(next.bytes));
  }
}

}  // namespace bunker::transfer
