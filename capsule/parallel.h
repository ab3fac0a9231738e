// A fixed thread pool and an ordered pipeline over it: jobs run on all cores, results come back
// in submission order, and at most `window` jobs are in flight, which bounds memory.
#ifndef BUNKER_CAPSULE_PARALLEL_H_
#define BUNKER_CAPSULE_PARALLEL_H_

#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace bunker::capsule {

// The number of worker threads to use for `requested` (<= 0 means all cores).
int ResolveThreads(int requested);

class ThreadPool {
 public:
  // Starts ResolveThreads(threads) workers.
  explicit ThreadPool(int threads);
  // Runs every task already submitted, then joins the workers.
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  // Queues `task`; it must not throw.
  void Submit(std::function<void()> task);
  int size() const { return static_cast<int>(workers_.size()); }

 private:
  void Run();
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  bool stop_ = false;
  std::vector<std::thread> workers_;
};

// Ordered results over a pool. Not thread-safe: one producer/consumer thread drives it.
template <typename T>
class OrderedPipeline {
 public:
  OrderedPipeline(ThreadPool* pool, size_t window) : pool_(pool), window_(window) {}
  // Waits for every job still in flight: jobs may reference buffers the caller owns.
  ~OrderedPipeline() {
    for (auto& f : inflight_) f.wait();
  }

  bool full() const { return inflight_.size() >= window_; }
  bool empty() const { return inflight_.empty(); }

  void Submit(std::function<T()> job) {
    auto task = std::make_shared<std::packaged_task<T()>>(std::move(job));
    inflight_.push_back(task->get_future());
    pool_->Submit([task] { (*task)(); });
  }

  // The oldest job's result, waiting for it. Requires !empty().
  T Pop() {
    T result = inflight_.front().get();
    inflight_.pop_front();
    return result;
  }

 private:
  ThreadPool* pool_;
  size_t window_;
  std::deque<std::future<T>> inflight_;
};

}  // namespace bunker::capsule

#endif  // BUNKER_CAPSULE_PARALLEL_H_
