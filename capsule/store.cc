#include "capsule/store.h"

#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>

#include "absl/strings/str_cat.h"
#include "capsule/format.h"

namespace bunker::capsule {

bool IsCapsuleId(const std::string& id) {
  return id.size() == 2 * kCapsuleIdSize && id.find_first_not_of("0123456789abcdef") == std::string::npos;
}

namespace {

class LocalStore final : public Store {
 public:
  LocalStore(std::string folder, uint64_t keep_free)
      : folder_(std::move(folder)), keep_free_(keep_free) {}

  std::string Describe() const override { return folder_; }

  absl::StatusOr<std::unique_ptr<RandomAccessFile>> Open(const std::string& id) override {
    if (!IsCapsuleId(id)) return absl::InvalidArgumentError("a capsule id is 32 hex characters");
    absl::StatusOr<std::unique_ptr<RandomAccessFile>> file = OpenFile(PathOf(id));
    if (absl::IsNotFound(file.status())) {
      return absl::NotFoundError(absl::StrCat("capsule ", id, " is not in the store"));
    }
    return file;
  }

  absl::StatusOr<std::vector<std::string>> List() override {
    std::vector<std::string> ids;
    DIR* dir = ::opendir(folder_.c_str());
    if (dir == nullptr) {
      if (errno == ENOENT) return ids;  // no store yet: nothing stored
      return ErrnoStatus(absl::StrCat("cannot list ", folder_), errno);
    }
    const std::string suffix = ".capsule";
    while (struct dirent* e = ::readdir(dir)) {
      const std::string name = e->d_name;
      if (name.size() <= suffix.size() ||
          name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0) {
        continue;
      }
      std::string id = name.substr(0, name.size() - suffix.size());
      if (IsCapsuleId(id)) ids.push_back(std::move(id));
    }
    ::closedir(dir);
    std::sort(ids.begin(), ids.end());
    return ids;
  }

  absl::StatusOr<std::unique_ptr<IncomingCapsule>> Begin(
      const Prelude& prelude, absl::Span<const crypto::PublicIdentity> trusted) override {
    absl::StatusOr<std::unique_ptr<LocalIncoming>> in =
        LocalIncoming::Begin(folder_, prelude, trusted, keep_free_);
    if (!in.ok()) return in.status();
    return std::unique_ptr<IncomingCapsule>(std::move(*in));
  }

 private:
  std::string PathOf(const std::string& id) const { return folder_ + "/" + id + ".capsule"; }
  const std::string folder_;
  const uint64_t keep_free_;
};

}  // namespace

std::shared_ptr<Store> MakeLocalStore(std::string folder, uint64_t keep_free) {
  return std::make_shared<LocalStore>(std::move(folder), keep_free);
}

}  // namespace bunker::capsule
