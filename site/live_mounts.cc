#include "site/live_mounts.h"

#include <algorithm>
#include <utility>

namespace bunker::site {

uint64_t LiveMounts::ReserveCache(uid_t uid, uint64_t asked) {
  std::lock_guard<std::mutex> lock(mu_);
  uint64_t used = 0, used_total = 0;
  for (const auto& [who, bytes] : reserved_) {
    used_total += bytes;
    if (who == uid) used += bytes;
  }
  for (const auto& m : mounts_) {
    if (m->server->ended()) continue;
    used_total += m->cache_bytes;
    if (m->uid == uid) used += m->cache_bytes;
  }
  const uint64_t left = used < cache_budget_ ? cache_budget_ - used : 0;
  const uint64_t left_total = used_total < total_budget_ ? total_budget_ - used_total : 0;
  const uint64_t grant = std::min({asked == 0 ? cache_budget_ : asked, left, left_total});
  if (grant == 0) return 0;
  reserved_[uid] += grant;
  return grant;
}

void LiveMounts::ReleaseCache(uid_t uid, uint64_t granted) {
  if (granted == 0) return;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = reserved_.find(uid);
  if (it == reserved_.end()) return;
  it->second -= std::min(it->second, granted);
  if (it->second == 0) reserved_.erase(it);
}

LiveMounts::Slot& LiveMounts::Slot::operator=(Slot&& other) noexcept {
  if (this != &other) {
    GiveBack();
    owner_ = other.owner_;
    uid_ = other.uid_;
    other.owner_ = nullptr;
  }
  return *this;
}

void LiveMounts::Slot::GiveBack() {
  if (owner_ == nullptr) return;
  std::lock_guard<std::mutex> lock(owner_->mu_);
  owner_->ReleaseSlotLocked(uid_);
  owner_ = nullptr;
}

void LiveMounts::ReleaseSlotLocked(uid_t uid) {
  auto it = slots_.find(uid);
  if (it == slots_.end()) return;
  if (--it->second == 0) slots_.erase(it);
}

size_t LiveMounts::LiveOfLocked(uid_t uid) const {
  size_t n = 0;
  for (const auto& m : mounts_) n += (m->uid == uid && !m->server->ended()) ? 1 : 0;
  return n;
}

std::optional<LiveMounts::Slot> LiveMounts::ReserveSlot(uid_t uid, size_t max) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = slots_.find(uid);
  const size_t held = it == slots_.end() ? 0 : it->second;
  if (LiveOfLocked(uid) + held >= max) return std::nullopt;
  ++slots_[uid];
  return Slot(this, uid);
}

void LiveMounts::Add(Slot slot, std::unique_ptr<Mount> mount) {
  std::lock_guard<std::mutex> lock(mu_);
  // The slot becomes the live mount in one step: never counted twice, never not at all.
  if (slot.owner_ == this) {
    ReleaseSlotLocked(slot.uid_);
    slot.owner_ = nullptr;
  }
  mounts_.push_back(std::move(mount));
}

std::vector<MountInfo> LiveMounts::Of(uid_t uid) {
  Reap();
  std::vector<MountInfo> out;
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& m : mounts_) {
    if (m->server->ended() || (uid != 0 && m->uid != uid)) continue;
    MountInfo i;
    i.mountpoint = m->mountpoint;
    i.capsule_id = m->capsule_id;
    i.uid = m->uid;
    i.since = m->since;
    i.not_after = m->not_after;
    const MountedCapsule::Usage u = m->server->capsule().usage();
    i.files_opened = u.files_opened;
    i.bytes_read = u.bytes_read;
    out.push_back(std::move(i));
  }
  return out;
}

void LiveMounts::Reap() {
  std::list<std::unique_ptr<Mount>> gone;  // destroyed outside the lock
  std::lock_guard<std::mutex> lock(mu_);
  for (auto it = mounts_.begin(); it != mounts_.end();) {
    if ((*it)->server->ended()) {
      gone.push_back(std::move(*it));
      it = mounts_.erase(it);
    } else {
      ++it;
    }
  }
}

void LiveMounts::EndAll(const std::string& why) {
  std::list<std::unique_ptr<Mount>> all;
  {
    std::lock_guard<std::mutex> lock(mu_);
    all.swap(mounts_);
  }
  for (auto& m : all) m->server->End(why);
  all.clear();
}

}  // namespace bunker::site
