// A budget of bytes shared by everything one process does of a kind (the chunks the pushes a
// daemon serves hold in memory: spec/TRANSFER.md "Push"), taken in leases that give the bytes
// back when dropped.
#ifndef BUNKER_TRANSFER_MEMORY_BUDGET_H_
#define BUNKER_TRANSFER_MEMORY_BUDGET_H_

#include <kj/async.h>

#include <cstdint>
#include <list>
#include <memory>

namespace bunker::transfer {

// Threading: the thread of the kj event loop it is used on. Must outlive its leases.
class MemoryBudget {
 public:
  explicit MemoryBudget(uint64_t bytes) : total_(bytes) {}
  ~MemoryBudget() { *alive_ = false; }
  MemoryBudget(const MemoryBudget&) = delete;
  MemoryBudget& operator=(const MemoryBudget&) = delete;

  // Bytes taken from the budget; dropping it gives them back (and grants waiting requests).
  class Lease {
   public:
    Lease(MemoryBudget& budget, uint64_t bytes) : budget_(budget), bytes_(bytes) {}
    ~Lease() { budget_.Release(bytes_); }
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;

   private:
    MemoryBudget& budget_;
    uint64_t bytes_;
  };

  // Resolves with a lease of `bytes` once they fit beside the leases held. Requests are granted
  // in the order they were made (a large one is not passed by smaller ones), and one larger
  // than the whole budget is granted when nothing else is held. Dropping the promise withdraws
  // the request.
  kj::Promise<kj::Own<Lease>> Take(uint64_t bytes);
  // The same lease at once if Take would grant it at once, else null (and nothing is asked).
  kj::Own<Lease> TryTake(uint64_t bytes);

  uint64_t total() const { return total_; }
  uint64_t held() const { return held_; }
  // The most ever held at once.
  uint64_t peak() const { return peak_; }
  // Requests waiting now.
  size_t waiting() const { return waiting_.size(); }

 private:
  struct Waiter {
    uint64_t bytes;
    kj::Own<kj::PromiseFulfiller<kj::Own<Lease>>> fulfiller;
  };
  bool Fits(uint64_t bytes) const { return held_ == 0 || held_ + bytes <= total_; }
  kj::Own<Lease> Grant(uint64_t bytes);
  void Release(uint64_t bytes);
  // Forgets withdrawn requests, then grants those at the front while they fit.
  void Pump();

  const uint64_t total_;
  uint64_t held_ = 0;
  uint64_t peak_ = 0;
  std::list<Waiter> waiting_;
  // False once destroyed: a request's promise that outlives the budget must not touch it.
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace bunker::transfer

#endif  // BUNKER_TRANSFER_MEMORY_BUDGET_H_
