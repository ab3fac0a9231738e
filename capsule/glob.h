// Path globs for --only selections and policy path rules.
//
// A pattern is matched against a normalized relative path ("train/a/b.txt"), component by
// component:
//   "**"  as a whole component matches zero or more components;
//   "*"   matches any run of characters within one component (not '/');
//   "?"   matches one character (not '/');
//   "[...]" a character class, as fnmatch(3) without FNM_PATHNAME crossing '/'.
// A trailing "/" on the pattern is ignored. Matching is case-sensitive.
#ifndef BUNKER_CAPSULE_GLOB_H_
#define BUNKER_CAPSULE_GLOB_H_

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace bunker::capsule {

class PathGlob {
 public:
  // kInvalidArgument for an empty pattern, an absolute one, or one with a ".." component.
  static absl::StatusOr<PathGlob> Parse(std::string_view pattern);

  // Whether the pattern matches `path` exactly.
  bool Matches(std::string_view path) const;
  // Whether the pattern matches `path` or one of its ancestor directories, so that selecting a
  // directory selects everything under it ("--only train" extracts train/**).
  bool MatchesPathOrAncestor(std::string_view path) const;
  // Whether some descendant of directory `dir` could match (so the directory must be kept as a
  // parent of selected entries).
  bool MayMatchBelow(std::string_view dir) const;

  const std::string& pattern() const { return pattern_; }

 private:
  std::string pattern_;
  std::vector<std::string> parts_;
};

// `path` with the glob metacharacters * ? [ ] and \ escaped, so that it parses to a glob
// matching exactly that path (e.g. to select one file whose name contains '[').
std::string EscapeGlob(std::string_view path);

// A set of globs; an empty set selects everything.
class PathSelection {
 public:
  static absl::StatusOr<PathSelection> Parse(const std::vector<std::string>& patterns);
  bool empty() const { return globs_.empty(); }
  // Whether `path` is selected: some glob MatchesPathOrAncestor(path).
  bool Selects(std::string_view path) const;
  // Whether directory `dir` is needed as an ancestor of a selected path (or is selected).
  bool NeedsDirectory(std::string_view dir) const;
  const std::vector<PathGlob>& globs() const { return globs_; }

 private:
  std::vector<PathGlob> globs_;
};

}  // namespace bunker::capsule

#endif  // BUNKER_CAPSULE_GLOB_H_
