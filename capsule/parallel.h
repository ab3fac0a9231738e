// A fixed thread pool and an ordered pipeline over it: jobs run on all cores, results come back
// in submission order, and at most `window` jobs are in flight, which bounds memory.
#ifndef BUNKER_CAPSULE_PARALLEL_H_
#define BUNKER_CAPSULE_PARALLEL_H_

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <thread>
#include <cstdint>
#include <vector>

namespace bunker::capsule {

// The number of worker threads to use for `requested` (<= 0 means all cores).
int ResolveThreads(int requested);

// At most this many bytes of chunk buffers are in flight in one pipeline, whatever the thread
// count and the (sealer-chosen) chunk size.
inline constexpr size_t kMaxInflightBytes = size_t{64} << 20;

// The pipeline window for `threads` workers and buffers of `buffer_size` bytes: two jobs per
// worker plus two, capped by kMaxInflightBytes, and never below 2.
inline size_t WindowFor(int threads, size_t buffer_size) {
  const size_t by_threads = 2 * static_cast<size_t>(threads) + 2;
  const size_t by_bytes = kMaxInflightBytes / (buffer_size == 0 ? 1 : buffer_size);
  return std::max<size_t>(2, std::min(by_threads, by_bytes));
}

// Recycles large byte buffers between pipeline stages, so a stream of 1 MiB chunks costs no
// allocation, page faults or zero-filling per chunk. Thread-safe.
class BufferPool {
 public:
  explicit BufferPool(size_t buffer_size) : buffer_size_(buffer_size) {}
  // A buffer of size() == buffer_size (contents unspecified).
  std::vector<uint8_t> Get() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!free_.empty()) {
        std::vector<uint8_t> b = std::move(free_.back());
        free_.pop_back();
        return b;
      }
    }
    return std::vector<uint8_t>(buffer_size_);
  }
  // Returns a buffer for reuse (any size; it is restored to buffer_size).
  void Put(std::vector<uint8_t> buffer) {
    if (buffer.capacity() < buffer_size_) return;
    buffer.resize(buffer_size_);  // no-op for pool buffers, which never shrink below it
    std::lock_guard<std::mutex> lock(mu_);
    free_.push_back(std::move(buffer));
  }

 private:
  const size_t buffer_size_;
  std::mutex mu_;
  std::vector<std::vector<uint8_t>> free_;
};

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
