#include "capsule/utc.h"

#include <ctime>

#include "absl/strings/str_cat.h"

namespace bunker::capsule {

std::string FormatUtc(int64_t seconds) {
  const std::time_t t = static_cast<std::time_t>(seconds);
  std::tm tm{};
  if (::gmtime_r(&t, &tm) == nullptr) return absl::StrCat(seconds);
  char buf[64];
  if (std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0) {
    return absl::StrCat(seconds);
  }
  return buf;
}

}  // namespace bunker::capsule
