#include "site/staging_sweep.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "capsule/beneath.h"
#include "capsule/fd.h"

namespace bunker::site {

void SweepStaging(int dir, int depth, size_t* removed) {
  capsule::Fd listing(::openat(dir, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!listing.valid()) return;
  DIR* d = ::fdopendir(listing.release());
  if (d == nullptr) return;
  std::vector<std::string> stale, below;
  while (const struct dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    struct stat st;
    if (::fstatat(dir, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISDIR(st.st_mode)) {
      continue;
    }
    const size_t tag = name.rfind(".bunker-");
    if (name[0] == '.' && tag != std::string::npos && name.size() == tag + 14 &&
        st.st_uid == ::geteuid() && (st.st_mode & 07777) == 0700) {
      stale.push_back(name);
    } else if (depth > 0) {
      below.push_back(name);
    }
  }
  ::closedir(d);
  for (const std::string& name : stale) {
    capsule::RemoveTreeBeneath(dir, name);
    ++*removed;
  }
  for (const std::string& name : below) {
    capsule::Fd sub(::openat(dir, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (sub.valid()) SweepStaging(sub.get(), depth - 1, removed);
  }
}

}  // namespace bunker::site
