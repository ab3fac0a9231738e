#include "cli/version.h"

#include "absl/strings/str_cat.h"
#include "capsule/format.h"

#ifndef BUNKER_VERSION
#error "BUNKER_VERSION comes from the top-level CMakeLists.txt project(VERSION)"
#endif

namespace bunker::cli {

std::string_view ProjectVersion() { return BUNKER_VERSION; }

std::string VersionLine(std::string_view program) {
  // Debian's Abseil has its own string_view, so std::string_view goes in as std::string.
  return absl::StrCat(std::string(program), " ", std::string(ProjectVersion()),
                      " (capsule format ", capsule::kFormatVersion, ")");
}

}  // namespace bunker::cli
