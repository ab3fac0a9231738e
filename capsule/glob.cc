#include "capsule/glob.h"

#include <fnmatch.h>

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "capsule/paths.h"

namespace bunker::capsule {
namespace {

constexpr std::string_view kAnyDepth = "**";

absl::Status BadPattern(std::string_view pattern, std::string_view rule) {
  return absl::InvalidArgumentError(
      absl::StrCat("invalid path pattern ", QuotePath(pattern), ": ", std::string(rule)));
}

// fnmatch(3) wants NUL-terminated strings, hence std::string rather than views.
std::vector<std::string> SplitPath(std::string_view path) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (start < path.size()) {
    size_t slash = path.find('/', start);
    if (slash == std::string_view::npos) slash = path.size();
    parts.emplace_back(path.substr(start, slash - start));
    start = slash + 1;
  }
  return parts;
}

// reach[i][j]: the first i pattern parts match the first j path components. A table rather than
// backtracking, so that patterns like "**/**/**/x" stay linear in the path length.
using Table = std::vector<std::vector<bool>>;

Table Reach(const std::vector<std::string>& parts, const std::vector<std::string>& comps) {
  Table reach(parts.size() + 1, std::vector<bool>(comps.size() + 1, false));
  reach[0][0] = true;
  for (size_t i = 0; i < parts.size(); ++i) {
    const bool any_depth = parts[i] == kAnyDepth;
    for (size_t j = 0; j <= comps.size(); ++j) {
      if (any_depth) {
        reach[i + 1][j] = reach[i][j] || (j > 0 && reach[i + 1][j - 1]);
      } else {
        reach[i + 1][j] =
            j > 0 && reach[i][j - 1] && ::fnmatch(parts[i].c_str(), comps[j - 1].c_str(), 0) == 0;
      }
    }
  }
  return reach;
}

}  // namespace

absl::StatusOr<PathGlob> PathGlob::Parse(std::string_view pattern) {
  if (pattern.empty()) return BadPattern(pattern, "empty pattern");
  if (pattern.find('\0') != std::string_view::npos) return BadPattern(pattern, "NUL byte");
  if (pattern.front() == '/') return BadPattern(pattern, "absolute pattern");
  PathGlob glob;
  glob.pattern_ = std::string(pattern);
  for (std::string& part : SplitPath(pattern)) {
    // Empty and "." parts ("./train", "train//x", a trailing "/") can never match a normalized
    // path component, so they are dropped rather than left to silently select nothing.
    if (part.empty() || part == ".") continue;
    if (part == "..") return BadPattern(pattern, "'..' component");
    glob.parts_.push_back(std::move(part));
  }
  if (glob.parts_.empty()) return BadPattern(pattern, "selects nothing");
  return glob;
}

bool PathGlob::Matches(std::string_view path) const {
  const std::vector<std::string> comps = SplitPath(path);
  return Reach(parts_, comps)[parts_.size()][comps.size()];
}

bool PathGlob::MatchesPathOrAncestor(std::string_view path) const {
  const std::vector<std::string> comps = SplitPath(path);
  const Table reach = Reach(parts_, comps);
  for (size_t j = 1; j <= comps.size(); ++j) {
    if (reach[parts_.size()][j]) return true;
  }
  return false;
}

bool PathGlob::MayMatchBelow(std::string_view dir) const {
  const std::vector<std::string> comps = SplitPath(dir);
  const Table reach = Reach(parts_, comps);
  // Some prefix of the pattern consumes all of `dir` and what is left of the pattern can take
  // at least one more component: either parts remain, or the last part is "**".
  for (size_t i = 0; i <= parts_.size(); ++i) {
    if (!reach[i][comps.size()]) continue;
    if (i < parts_.size() || (i > 0 && parts_[i - 1] == kAnyDepth)) return true;
  }
  return false;
}

absl::StatusOr<PathSelection> PathSelection::Parse(const std::vector<std::string>& patterns) {
  PathSelection selection;
  for (const std::string& pattern : patterns) {
    absl::StatusOr<PathGlob> glob = PathGlob::Parse(pattern);
    if (!glob.ok()) return glob.status();
    selection.globs_.push_back(*std::move(glob));
  }
  return selection;
}

bool PathSelection::Selects(std::string_view path) const {
  if (globs_.empty()) return true;
  for (const PathGlob& glob : globs_) {
    if (glob.MatchesPathOrAncestor(path)) return true;
  }
  return false;
}

bool PathSelection::NeedsDirectory(std::string_view dir) const {
  if (Selects(dir)) return true;
  for (const PathGlob& glob : globs_) {
    if (glob.MayMatchBelow(dir)) return true;
  }
  return false;
}

std::string EscapeGlob(std::string_view path) {
  std::string out;
  for (char c : path) {
    if (c == '*' || c == '?' || c == '[' || c == ']' || c == '\\') out += '\\';
    out += c;
  }
  return out;
}

}  // namespace bunker::capsule
