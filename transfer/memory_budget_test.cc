#include "transfer/memory_budget.h"

#include <gtest/gtest.h>
#include <kj/async.h>

namespace bunker::transfer {
namespace {

// Requests are granted in order; a large one is not passed by smaller ones.
TEST(MemoryBudgetTest, RequestsAreGrantedInOrderAsLeasesGo) {
  kj::EventLoop loop;
  kj::WaitScope ws(loop);
  MemoryBudget budget(10);
  kj::Own<MemoryBudget::Lease> a = budget.Take(6).wait(ws);
  auto big = budget.Take(8);
  EXPECT_EQ(budget.TryTake(1).get(), nullptr) << "a small request passed a waiting large one";
  auto small = budget.Take(2);
  EXPECT_FALSE(big.poll(ws));
  EXPECT_FALSE(small.poll(ws));
  a = nullptr;
  kj::Own<MemoryBudget::Lease> b = big.wait(ws);
  kj::Own<MemoryBudget::Lease> c = small.wait(ws);
  EXPECT_EQ(budget.held(), 10u);
  EXPECT_EQ(budget.waiting(), 0u);
}

// A waiting request that is withdrawn (its promise dropped) lets the ones behind it through at
// once. Before: they stayed queued behind it until some lease was given back, which a holder
// that never finishes never does.
TEST(MemoryBudgetTest, AWithdrawnRequestDoesNotStrandTheOnesBehindIt) {
  kj::EventLoop loop;
  kj::WaitScope ws(loop);
  MemoryBudget budget(10);
  kj::Own<MemoryBudget::Lease> held = budget.Take(6).wait(ws);
  auto big = kj::heap<kj::Promise<kj::Own<MemoryBudget::Lease>>>(budget.Take(8));
  auto small = budget.Take(3);
  auto middle_withdrawn = kj::heap<kj::Promise<kj::Own<MemoryBudget::Lease>>>(budget.Take(1));
  auto last = budget.Take(1);
  EXPECT_FALSE(small.poll(ws));
  big = nullptr;  // withdrawn: `small` fits beside `held`
  ASSERT_TRUE(small.poll(ws));
  kj::Own<MemoryBudget::Lease> s = small.wait(ws);
  middle_withdrawn = nullptr;
  ASSERT_TRUE(last.poll(ws));
  kj::Own<MemoryBudget::Lease> l = last.wait(ws);
  EXPECT_EQ(budget.held(), 10u);
  EXPECT_EQ(budget.waiting(), 0u);
}

}  // namespace
}  // namespace bunker::transfer
