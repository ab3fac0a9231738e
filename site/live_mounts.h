// The verifier service's live mounts (spec/VERIFIER.md "Mounts"): each is served after the
// request that made it ended, until it is unmounted, its time window closes or the service
// stops. Listed per uid, and bounded per uid: in number (the service checks CountOf) and in
// decrypted-chunk cache (ReserveCache), which is bounded over all uids too. Thread-safe.
#ifndef BUNKER_SITE_LIVE_MOUNTS_H_
#define BUNKER_SITE_LIVE_MOUNTS_H_

#include <sys/types.h>

#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <mutex>
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

  // Takes a mount that is being served.
  void Add(std::unique_ptr<Mount> mount);
  // The live mounts of `uid`: their number, and their descriptions (all uids' for root).
  size_t CountOf(uid_t uid);
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
};

}  // namespace bunker::site

#endif  // BUNKER_SITE_LIVE_MOUNTS_H_
