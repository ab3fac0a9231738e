// EntryTree: what an archive has put at each path, for the checks extraction makes on every
// entry (capsule/extract.h). No I/O.
#ifndef BUNKER_CAPSULE_ENTRY_TREE_H_
#define BUNKER_CAPSULE_ENTRY_TREE_H_

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace bunker::capsule {

// kInvalidArgument "unsafe entry \"<path>\" in archive: <rule>", the path escaped to one line.
absl::Status UnsafeEntry(std::string_view path, std::string_view rule);

// What the archive has put at each path so far, whether selected or not, so that the archive is
// judged the same way whatever the selection. A trie rather than a set of path strings: memory
// stays linear in the total length of the names, even for a deep tree.
// TODO(perf): one node per entry; a capsule of tens of millions of files costs gigabytes here.
class EntryTree {
 public:
  enum class Kind { kImplicitDir, kDir, kFile, kSymlink };
  struct Node {
    Kind kind = Kind::kImplicitDir;
    bool extracted = false;
    std::map<std::string, std::unique_ptr<Node>, std::less<>> children;
  };

  // Records `path` (normalized) as `kind`. Refuses a second entry at the same path (except an
  // explicit directory over one created implicitly for its children) and any entry below a file
  // or symlink: nothing is ever written through a symlink.
  absl::Status Add(std::string_view path, Kind kind, bool extracted);

  // The node at `path` (normalized), or null.
  const Node* Find(std::string_view path) const;

 private:
  Node root_;
};

}  // namespace bunker::capsule

#endif  // BUNKER_CAPSULE_ENTRY_TREE_H_
