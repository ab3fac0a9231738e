// The verifier service's live mounts (spec/VERIFIER.md "Mounts"): each is served after the
// request that made it ended, until it is unmounted, its time window closes or the service
// stops. Listed per uid, and bounded per uid: in number (ReserveSlot) and in decrypted-chunk
// cache (ReserveCache), which is bounded over all uids too. Thread-safe.
#ifndef BUNKER_SITE_LIVE_MOUNTS_H_
#define BUNKER_SITE_LIVE_MOUNTS_H_

#include <sys/types.h>

#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "site/mount.h"
#include "site/protocol.h"

namespace bunker::site {

class LiveMounts {
 public:
  struct Mount {
    std::unique_ptr<FuseServer> server;
    uid_t uid = 0;
    std::string mountpoint;
    std::string capsule_id;
    int64_t since = 0;
    int64_t not_after = 0;
    uint64_t cache_bytes = 0;  // its share of its uid's budget
  };

  // `cache_budget`: the decrypted-chunk cache all live mounts of one uid may hold together;
  // `total_budget`: what the live mounts of all uids may hold together (0: 4 x cache_budget).
  explicit LiveMounts(uint64_t cache_budget, uint64_t total_budget = 0)
      : cache_budget_(cache_budget), total_budget_(total_budget != 0 ? total_budget
                                                                     : 4 * cache_budget) {}

  // A share of `uid`'s cache budget for a mount being made: what it asked for (0: the whole
  // budget), at most what the uid's live mounts and other reservations leave, and at most what
  // all uids' leave of the total; possibly 0 (a mount without a cache still serves every read,
  // decrypting each chunk it needs). Without this, 16 mounts of one uid could hold 16 times the
  // bound in the daemon's memory, and 100 uids 100 times. The caller
  // gives it back with ReleaseCache when its request ends (a live mount counts its own).
  uint64_t ReserveCache(uid_t uid, uint64_t asked);
  void ReleaseCache(uid_t uid, uint64_t granted);

  // A place for one more live mount of a uid, held by a mount request from its check to its
  // end: given back when destroyed, or taken over by the mount (Add). Must not outlive the
  // LiveMounts that made it.
  class Slot {
   public:
    Slot(Slot&& other) noexcept : owner_(other.owner_), uid_(other.uid_) {
      other.owner_ = nullptr;
    }
    Slot& operator=(Slot&& other) noexcept;
    ~Slot() { GiveBack(); }

   private:
    friend class LiveMounts;
    Slot(LiveMounts* owner, uid_t uid) : owner_(owner), uid_(uid) {}
    void GiveBack();
    LiveMounts* owner_;  // null once given back or taken over
    uid_t uid_;
  };

  // A slot for a mount of `uid` when its live mounts and the slots its requests hold are fewer
  // than `max`; nullopt otherwise. Counted and taken under one lock, so that requests running
  // at once cannot all pass the check before any of them is counted.
  std::optional<Slot> ReserveSlot(uid_t uid, size_t max);

  // Takes a mount that is being served, in the place `slot` held for it (of the same uid).
  void Add(Slot slot, std::unique_ptr<Mount> mount);
  // The descriptions of the live mounts of `uid` (all uids' for root).
  std::vector<MountInfo> Of(uid_t uid);
  // Destroys the mounts that ended (their servers' threads are done).
  void Reap();
  // Ends every mount with `why` and destroys it.
  void EndAll(const std::string& why);

 private:
  const uint64_t cache_budget_;
  const uint64_t total_budget_;
  std::mutex mu_;
  std::list<std::unique_ptr<Mount>> mounts_;
  std::map<uid_t, uint64_t> reserved_;  // granted to mounts not yet live
  std::map<uid_t, size_t> slots_;       // held by requests for mounts not yet live

  size_t LiveOfLocked(uid_t uid) const;
  void ReleaseSlotLocked(uid_t uid);
};

}  // namespace bunker::site

#endif  // BUNKER_SITE_LIVE_MOUNTS_H_
