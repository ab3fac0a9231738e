// The programs' --version line.
#ifndef BUNKER_CLI_VERSION_H_
#define BUNKER_CLI_VERSION_H_

#include <string>
#include <string_view>

namespace bunker::cli {

// The project version, from CMake's project(VERSION) (e.g. "0.1.0").
std::string_view ProjectVersion();

// "<program> <project version> (capsule format <capsule::kFormatVersion>)", the whole output
// of `capsule --version` and `capsuled --version` (without the newline).
std::string VersionLine(std::string_view program);

}  // namespace bunker::cli

#endif  // BUNKER_CLI_VERSION_H_
