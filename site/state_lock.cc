#include "site/state_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <thread>

#include "absl/strings/str_cat.h"
#include "capsule/io.h"
#include "capsule/paths.h"

namespace bunker::site {

absl::StatusOr<capsule::Fd> LockSiteState(const SiteConfig& site, int wait_ms) {
  ::mkdir(site.state.c_str(), 0700);
  const std::string path = site.state + "/capsuled.lock";
  capsule::Fd lock(::open(path.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!lock.valid()) {
    return capsule::ErrnoStatus(absl::StrCat("cannot open ", capsule::QuotePath(path)), errno);
  }
  constexpr int kStepMs = 50;
  for (int waited = 0;; waited += kStepMs) {
    if (::flock(lock.get(), LOCK_EX | LOCK_NB) == 0) return lock;
    if (errno != EWOULDBLOCK && errno != EINTR) {
      return capsule::ErrnoStatus(absl::StrCat("cannot lock ", capsule::QuotePath(path)), errno);
    }
    if (waited >= wait_ms) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(kStepMs));
  }
  return absl::FailedPreconditionError(absl::StrCat(
      "another capsuled serves site ", site.site, " (its state folder ",
      capsule::QuotePath(site.state), " is in use); stop it first"));
}

}  // namespace bunker::site
