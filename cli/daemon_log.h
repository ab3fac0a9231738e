// The daemon's log: one line per event, written to its stderr by a thread of its own.
#ifndef BUNKER_CLI_DAEMON_LOG_H_
#define BUNKER_CLI_DAEMON_LOG_H_

#include <cstddef>
#include <memory>
#include <string>

namespace bunker::cli {

// Lines handed to Line() are written to `fd` (not owned), each as "PREFIX: LINE\n" with the line
// made terminal safe, by a thread of their own, in the order given. So a reader of the log that
// stops reading (a full pipe, a stalled terminal or journal) never holds the thread that logs:
// the transfer event loop, a verifier-service worker. The writer thread takes no signal. At most `max_queued` lines wait; further
// lines are dropped and counted, and the count is written as a line of its own ("N log lines
// dropped: the log's reader is slow") once the writer is moving again. Line() never blocks on
// the writer. Thread-safe.
//
// The destructor waits up to `drain_ms` for what was queued to be written, then returns; a
// writer still stuck in write(2) then is left to end with the process (it holds only state of
// its own, never the object).
class DaemonLog {
 public:
  DaemonLog(int fd, std::string prefix, size_t max_queued = 4096, int drain_ms = 2000);
  ~DaemonLog();
  DaemonLog(const DaemonLog&) = delete;
  DaemonLog& operator=(const DaemonLog&) = delete;

  void Line(const std::string& line);

  // Waits up to the drain time for every line given so far to be written (e.g. before an error
  // is printed on the same descriptor, so that lines keep their order).
  void Drain();

  struct Shared;  // the queue, shared with the writer thread

 private:
  std::shared_ptr<Shared> shared_;
  int drain_ms_;
};

}  // namespace bunker::cli

#endif  // BUNKER_CLI_DAEMON_LOG_H_
