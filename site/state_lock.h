// One daemon per site state: the lock a `capsuled` holds on its state folder for its whole life.
#ifndef BUNKER_SITE_STATE_LOCK_H_
#define BUNKER_SITE_STATE_LOCK_H_

#include "absl/status/statusor.h"
#include "capsule/fd.h"
#include "site/site_config.h"

namespace bunker::site {

// Takes the exclusive lock (flock) of `<state>/capsuled.lock` (made 0600, never through a
// symlink; the state folder is made 0700 if missing), waiting up to `wait_ms` for a daemon
// that is just ending. The lock lasts as long as the returned descriptor. A second daemon of
// the same state (the same site file, or another naming the same state folder) would unbind
// the first one's socket and sweep the staging folders of its running releases: it gets
// kFailedPrecondition "another capsuled serves site ..." before it touches anything.
absl::StatusOr<capsule::Fd> LockSiteState(const SiteConfig& site, int wait_ms = 3000);

}  // namespace bunker::site

#endif  // BUNKER_SITE_STATE_LOCK_H_
