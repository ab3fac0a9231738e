#include "site/state_lock.h"

#include <dirent.h>
#include <fcntl.h>
#include <pwd.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <thread>

#include "absl/strings/str_cat.h"
#include "capsule/io.h"
#include "capsule/paths.h"
#include "crypto/status_hint.h"

namespace bunker::site {

namespace {

// The name of user `uid`, or "uid N" when it has none.
std::string UserName(uid_t uid) {
  struct passwd pw, *found = nullptr;
  char buf[4096];
  if (::getpwuid_r(uid, &pw, buf, sizeof buf, &found) == 0 && found != nullptr) {
    return found->pw_name;
  }
  return absl::StrCat("uid ", uid);
}

}  // namespace

absl::Status CheckRunsAsStateOwner(const SiteConfig& site, const std::string& who,
                                   const std::string& rerun) {
  struct stat st {};
  std::string what;
  const bool have_state = ::stat(site.state.c_str(), &st) == 0;
  if (have_state) {
    what = absl::StrCat("the state folder ", capsule::QuotePath(site.state));
  } else if (errno == ENOENT && !site.identity.empty() && ::stat(site.identity.c_str(), &st) == 0) {
    what = absl::StrCat("the site key ", capsule::QuotePath(site.identity));
  } else {
    return absl::OkStatus();  // nothing of the site's yet, or what fails is said by its reader
  }
  const uid_t me = ::geteuid();
  const std::string chown_hint = absl::StrCat("give the site's files back to the site's user: "
                                              "chown -R ", UserName(me), ": ", site.state);
  if (st.st_uid != me) {
    const std::string owner = UserName(st.st_uid);
    absl::Status refused = absl::PermissionDeniedError(
        absl::StrCat(who, " runs as ", UserName(me), " but ", what, " belongs to ", owner));
    // Root owning it is itself the mistake (the site runs as its own user): never hint to run
    // as root.
    if (st.st_uid == 0) return WithHint(refused, chown_hint);
    return WithHint(refused, absl::StrCat("run it as that user: sudo -u ", owner, " ", rerun));
  }
  if (!have_state) return absl::OkStatus();
  // The files in it too: one written by another user (say root, running `capsule ... --direct`)
  // would shut this user out of its own state later, on some request, with EACCES.
  capsule::Fd dir(::open(site.state.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir.valid()) return absl::OkStatus();  // said by its reader
  DIR* d = ::fdopendir(::dup(dir.get()));
  if (d == nullptr) return absl::OkStatus();
  absl::Status result = absl::OkStatus();
  while (struct dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    struct stat est {};
    if (::fstatat(dir.get(), e->d_name, &est, AT_SYMLINK_NOFOLLOW) != 0) continue;
    if (est.st_uid == me) continue;
    result = WithHint(
        absl::PermissionDeniedError(absl::StrCat(
            who, " runs as ", UserName(me), " but ",
            capsule::QuotePath(site.state + "/" + name), " in its state folder belongs to ",
            UserName(est.st_uid))),
        absl::StrCat("give the site's files back to the site's user: chown -R ", UserName(me),
                     ": ", site.state));
    break;
  }
  ::closedir(d);
  return result;
}

absl::StatusOr<capsule::Fd> LockSiteState(const SiteConfig& site, int wait_ms) {
  ::mkdir(site.state.c_str(), 0700);
  const std::string path = site.state + "/capsuled.lock";
  capsule::Fd lock(::open(path.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!lock.valid()) {
    const int err = errno;
    absl::Status s =
        capsule::ErrnoStatus(absl::StrCat("cannot open ", capsule::QuotePath(path)), err);
    if (err != EACCES) return s;
    // The folder is this user's but not what is in it: left by a run as another user.
    return WithHint(s, absl::StrCat("the state's files must be the daemon's user's: chown -R ",
                                    UserName(::geteuid()), ": ", site.state));
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
