#include "cli/daemon_log.h"

#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "cli/context.h"

namespace bunker::cli {

struct DaemonLog::Shared {
  int fd;
  std::string prefix;
  size_t max_queued;
  std::mutex mu;
  std::condition_variable changed;
  std::deque<std::string> queue;  // whole lines, newline included
  uint64_t dropped = 0;           // since the last count was queued
  bool writing = false;           // the writer holds lines taken from the queue
  bool stop = false;
};

namespace {

void WriteAll(int fd, const std::string& text) {
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // nowhere to log to: the line is lost, the daemon goes on
    done += static_cast<size_t>(n);
  }
}

void Writer(std::shared_ptr<DaemonLog::Shared> s) {
  std::unique_lock<std::mutex> lock(s->mu);
  for (;;) {
    s->changed.wait(lock, [&] { return s->stop || !s->queue.empty() || s->dropped > 0; });
    if (s->queue.empty() && s->dropped == 0) return;  // stopped, and all written
    std::string batch;
    while (!s->queue.empty() && batch.size() < (64u << 10)) {
      batch += s->queue.front();
      s->queue.pop_front();
    }
    if (s->dropped > 0) {
      batch += absl::StrCat(s->prefix, ": ", s->dropped,
                            " log lines dropped: the log's reader is slow\n");
      s->dropped = 0;
    }
    s->writing = true;
    lock.unlock();
    WriteAll(s->fd, batch);
    lock.lock();
    s->writing = false;
    s->changed.notify_all();
  }
}

}  // namespace

DaemonLog::DaemonLog(int fd, std::string prefix, size_t max_queued, int drain_ms)
    : shared_(std::make_shared<Shared>()), drain_ms_(drain_ms) {
  shared_->fd = fd;
  shared_->prefix = std::move(prefix);
  shared_->max_queued = max_queued == 0 ? 1 : max_queued;
  // The writer takes no signal: a daemon blocks its stop signals in the threads that should
  // not take them, and this thread may start before it does. Created with every signal blocked
  // (a new thread inherits the mask), then the caller's mask is restored.
  sigset_t all;
  sigset_t before;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &before);
  std::thread(Writer, shared_).detach();
  pthread_sigmask(SIG_SETMASK, &before, nullptr);
}

DaemonLog::~DaemonLog() {
  Drain();
  std::lock_guard<std::mutex> lock(shared_->mu);
  shared_->stop = true;
  shared_->changed.notify_all();
}

void DaemonLog::Drain() {
  std::unique_lock<std::mutex> lock(shared_->mu);
  shared_->changed.wait_for(lock, std::chrono::milliseconds(drain_ms_), [&] {
    return shared_->queue.empty() && shared_->dropped == 0 && !shared_->writing;
  });
}

void DaemonLog::Line(const std::string& line) {
  std::string text = absl::StrCat(shared_->prefix, ": ", TerminalSafe(line), "\n");
  std::lock_guard<std::mutex> lock(shared_->mu);
  if (shared_->queue.size() >= shared_->max_queued) {
    ++shared_->dropped;
    return;
  }
  shared_->queue.push_back(std::move(text));
  shared_->changed.notify_all();
}

}  // namespace bunker::cli
