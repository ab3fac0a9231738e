// One daemon per site state: the lock a `capsuled` holds on its state folder for its whole life.
#ifndef BUNKER_SITE_STATE_LOCK_H_
#define BUNKER_SITE_STATE_LOCK_H_

#include <sys/types.h>

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "capsule/fd.h"
#include "site/site_config.h"

namespace bunker::site {

// Whether this process (its effective uid) is the user the site's state belongs to: the owner of
// the state folder, or, before the folder exists, of the site key. A daemon run once as another
// user (root, say) would leave state files (audit log, lock, witness folder) that the site's own
// user can no longer open. kPermissionDenied naming both users and the folder or key otherwise
// ("capsuled runs as root but the state folder \"/var/lib/bunker\" belongs to bunker"), with a
// hint (crypto/status_hint.h) to run it as that user. OK when neither exists. Creates nothing.
// Every entry directly in an existing state folder must be this user's too (a file another user
// wrote, such as root's `capsule ... --direct`, is kPermissionDenied naming it, with a chown
// hint). `who` names the caller in the message ("capsuled", "capsule open --direct"), `rerun`
// what to run instead in the hint ("capsuled --site site.json").
absl::Status CheckRunsAsStateOwner(const SiteConfig& site, const std::string& who,
                                   const std::string& rerun);

// Takes the exclusive lock (flock) of `<state>/capsuled.lock` (made 0600, never through a
// symlink; the state folder is made 0700 if missing; a lock file this user cannot open is
// kPermissionDenied with a hint to chown the folder's files), waiting up to `wait_ms` for a daemon
// that is just ending. The lock lasts as long as the returned descriptor. A second daemon of
// the same state (the same site file, or another naming the same state folder) would unbind
// the first one's socket and sweep the staging folders of its running releases: it gets
// kFailedPrecondition "another capsuled serves site ..." before it touches anything.
absl::StatusOr<capsule::Fd> LockSiteState(const SiteConfig& site, int wait_ms = 3000);

}  // namespace bunker::site

#endif  // BUNKER_SITE_STATE_LOCK_H_
