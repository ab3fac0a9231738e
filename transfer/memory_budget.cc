#include "transfer/memory_budget.h"

#include <algorithm>

namespace bunker::transfer {

kj::Own<MemoryBudget::Lease> MemoryBudget::Grant(uint64_t bytes) {
  held_ += bytes;
  peak_ = std::max(peak_, held_);
  return kj::heap<Lease>(*this, bytes);
}

kj::Own<MemoryBudget::Lease> MemoryBudget::TryTake(uint64_t bytes) {
  while (!waiting_.empty() && !waiting_.front().fulfiller->isWaiting()) waiting_.pop_front();
  if (waiting_.empty() && Fits(bytes)) return Grant(bytes);
  return kj::Own<Lease>();
}

kj::Promise<kj::Own<MemoryBudget::Lease>> MemoryBudget::Take(uint64_t bytes) {
  if (kj::Own<Lease> now = TryTake(bytes)) return kj::mv(now);
  auto paf = kj::newPromiseAndFulfiller<kj::Own<Lease>>();
  waiting_.push_back(Waiter{bytes, kj::mv(paf.fulfiller)});
  return kj::mv(paf.promise);
}

void MemoryBudget::Release(uint64_t bytes) {
  held_ -= bytes;
  while (!waiting_.empty()) {
    Waiter& next = waiting_.front();
    if (!next.fulfiller->isWaiting()) {  // withdrawn: its promise was dropped
      waiting_.pop_front();
      continue;
    }
    if (!Fits(next.bytes)) break;
    next.fulfiller->fulfill(Grant(next.bytes));
    waiting_.pop_front();
  }
}

}  // namespace bunker::transfer
