#include "transfer/event_recorder.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace bunker::transfer {
namespace {

// Events with the same key are the same event (recorded once with a count).
std::string KeyOf(const DepotEvent& e) {
  return absl::StrCat(e.kind, std::string(1, '\0'), e.peer, std::string(1, '\0'), e.capsule_id,
                      std::string(1, '\0'), e.issuer, std::string(1, '\0'), e.detail);
}

// The counted (unitemized) events of one peer and kind share one record.
std::string UnitemizedKeyOf(const DepotEvent& e) {
  return absl::StrCat("\x01", e.kind, std::string(1, '\0'), e.peer);
}

// recorded_ grows by one entry per key written; entries older than a window are pruned once it
// holds this many.
constexpr size_t kPruneRecordedAt = 1024;

}  // namespace

EventRecorder::EventRecorder(EventRecorderOptions options) : o_(std::move(options)) {
  writer_ = std::thread([this] { Run(); });
}

EventRecorder::~EventRecorder() { Stop(); }

void EventRecorder::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (writer_.joinable()) writer_.join();
}

void EventRecorder::Add(const DepotEvent& event) {
  const int64_t t = o_.now();
  const Clock::time_point now = Clock::now();
  std::lock_guard<std::mutex> lock(mu_);
  const std::string key = KeyOf(event);
  auto it = queued_.find(key);
  if (it != queued_.end()) {
    ++it->second.record.count;
    it->second.record.last = t;
    return;
  }
  // A key recorded within the window waits for the window's end: one record per key and window.
  const auto due_of = [&](const std::string& k) {
    auto r = recorded_.find(k);
    return r != recorded_.end() && r->second + o_.window > now ? r->second + o_.window : now;
  };
  PeerWindow& w = peers_[event.peer];
  if (w.records == 0 || now >= w.start + o_.window) {
    w.start = now;
    w.records = 0;
  }
  const size_t itemized = static_cast<size_t>(
      std::count_if(queued_.begin(), queued_.end(),
                    [](const auto& q) { return !q.second.record.unitemized; }));
  if (w.records >= o_.max_records_per_peer || itemized >= o_.max_queued) {
    const std::string ukey = UnitemizedKeyOf(event);
    auto u = queued_.find(ukey);
    if (u == queued_.end()) {
      Item item;
      item.record.event = {event.kind, "", "", event.peer, ""};
      item.record.count = 0;
      item.record.first = t;
      item.record.unitemized = true;
      item.due = std::max(due_of(ukey), w.start + o_.window);
      item.seq = next_seq_++;
      u = queued_.emplace(ukey, std::move(item)).first;
    }
    EventRecord& r = u->second.record;
    ++r.count;
    r.last = t;
    r.event.detail = absl::StrCat(
        "not itemized: the peer's share of the audit queue was full; the last: ",
        event.capsule_id.empty() ? "" : absl::StrCat("capsule ", event.capsule_id, ": "),
        event.detail);
    cv_.notify_all();
    return;
  }
  ++w.records;
  Item item;
  item.record.event = event;
  item.record.first = t;
  item.record.last = t;
  item.due = due_of(key);
  item.seq = next_seq_++;
  queued_.emplace(key, std::move(item));
  cv_.notify_all();
}

std::vector<EventRecord> EventRecorder::TakeDue(Clock::time_point now, bool all) {
  std::vector<std::pair<uint64_t, std::string>> due;  // (seq, key)
  for (const auto& [key, item] : queued_) {
    if (all || item.due <= now) due.emplace_back(item.seq, key);
  }
  std::sort(due.begin(), due.end());
  if (due.size() > o_.max_batch) due.resize(o_.max_batch);
  if (recorded_.size() >= kPruneRecordedAt) {
    for (auto it = recorded_.begin(); it != recorded_.end();) {
      it = it->second + o_.window <= now ? recorded_.erase(it) : std::next(it);
    }
  }
  std::vector<EventRecord> out;
  for (const auto& [seq, key] : due) {
    auto it = queued_.find(key);
    out.push_back(std::move(it->second.record));
    queued_.erase(it);
    recorded_[key] = now;
  }
  return out;
}

void EventRecorder::Run() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    std::vector<EventRecord> batch = TakeDue(Clock::now(), stopping_);
    if (!batch.empty()) {
      lock.unlock();
      absl::Status s = o_.write(batch);
      if (!s.ok() && o_.log) {
        uint64_t events = 0;
        for (const EventRecord& r : batch) events += r.count;
        o_.log(absl::StrCat("cannot write the audit log (", batch.size(), " records of ", events,
                            " events lost): ", s.message()));
      }
      lock.lock();
      continue;
    }
    if (stopping_) return;
    if (queued_.empty()) {
      cv_.wait(lock);
      continue;
    }
    Clock::time_point next = Clock::time_point::max();
    for (const auto& [key, item] : queued_) next = std::min(next, item.due);
    cv_.wait_until(lock, next);
  }
}

}  // namespace bunker::transfer
