// Puts a depot's events on record (the site's audit log) off the event loop, and bounds what
// one peer can make the site record (spec/TRANSFER.md "Events on record").
//
// Contract:
// - Add() never waits for a write: it takes a short lock and queues, so a slow or locked audit
//   log (every record is a write, a sync and a signature) never stalls the sessions the loop
//   serves.
// - Identical events (same kind, peer, capsule, issuer and detail) are recorded once per
//   `window`: the first at once, the ones after it within the window as one record that
//   counts them, written when the window ends (or at Stop).
// - A peer makes at most `max_records_per_peer` records per window, and all peers together at
//   most `max_queued` wait at once. Events beyond either are not dropped: they are counted per
//   peer and kind, and written as one record that says how many there were.
// - So every event Add() took is in exactly one record's `count`, once its record is written.
//   A failed write is logged and its records are lost (the log cannot take them).
// - The destructor (Stop) writes what waits, held repeats and counts included, then joins the
//   writer: call it after the last Add().
//
// Threading: Add() from any thread; `write` runs on the recorder's own thread, one batch at a
// time.
#ifndef BUNKER_TRANSFER_EVENT_RECORDER_H_
#define BUNKER_TRANSFER_EVENT_RECORDER_H_

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "transfer/depot.h"

namespace bunker::transfer {

// One record: `count` events (1 or more) that `event` stands for, the first at `first` and
// the last at `last` (seconds since the epoch). With `unitemized`, they were counted rather
// than queued one by one (the queue or the peer's share of it was full): `event` then has their
// kind and peer, and a detail that says so and quotes the last one's.
struct EventRecord {
  DepotEvent event;
  uint64_t count = 1;
  int64_t first = 0;
  int64_t last = 0;
  bool unitemized = false;
};

struct EventRecorderOptions {
  // Puts records on record, in order; on the recorder's thread. Required.
  std::function<absl::Status(const std::vector<EventRecord>&)> write;
  std::function<int64_t()> now;                 // seconds since the epoch; required
  std::function<void(const std::string&)> log;  // a failed write; may be empty
  std::chrono::seconds window{60};
  size_t max_records_per_peer = 32;
  size_t max_queued = 256;
  size_t max_batch = 32;  // records per call of `write`
};

class EventRecorder {
 public:
  explicit EventRecorder(EventRecorderOptions options);
  ~EventRecorder();  // Stop()
  EventRecorder(const EventRecorder&) = delete;
  EventRecorder& operator=(const EventRecorder&) = delete;

  // Queues `event` (or counts it); never waits for the writer.
  void Add(const DepotEvent& event);
  // Writes everything that waits, then ends the writer. Idempotent.
  void Stop();

 private:
  using Clock = std::chrono::steady_clock;
  struct Item {
    EventRecord record;
    Clock::time_point due;
    uint64_t seq = 0;
  };
  // Per peer: records made in its current window.
  struct PeerWindow {
    Clock::time_point start;
    size_t records = 0;
  };
  void Run();
  // Items due now (all of them when stopping), oldest first, at most max_batch; mu_ held.
  std::vector<EventRecord> TakeDue(Clock::time_point now, bool all);

  const EventRecorderOptions o_;
  std::mutex mu_;  // guards what follows
  std::condition_variable cv_;
  bool stopping_ = false;
  uint64_t next_seq_ = 0;
  std::map<std::string, Item> queued_;                 // by event key
  std::map<std::string, Clock::time_point> recorded_;  // by event key: last written
  std::map<std::string, PeerWindow> peers_;            // by peer fingerprint
  std::thread writer_;
};

}  // namespace bunker::transfer

#endif  // BUNKER_TRANSFER_EVENT_RECORDER_H_
