#include "capsule/entry_tree.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "capsule/paths.h"

namespace bunker::capsule {

absl::Status UnsafeEntry(std::string_view path, std::string_view rule) {
  return absl::InvalidArgumentError(
      absl::StrCat("unsafe entry ", QuotePath(path), " in archive: ", std::string(rule)));
}

absl::Status EntryTree::Add(std::string_view path, Kind kind, bool extracted) {
  Node* node = &root_;
  size_t start = 0;
  while (true) {
    const size_t slash = path.find('/', start);
    const bool last = slash == std::string_view::npos;
    const std::string_view name = path.substr(start, last ? std::string_view::npos : slash - start);
    auto it = node->children.find(name);
    if (it == node->children.end()) {
      it = node->children.emplace(std::string(name), std::make_unique<Node>()).first;
      if (last) {
        it->second->kind = kind;
        it->second->extracted = extracted;
        return absl::OkStatus();
      }
    } else if (last) {
      if (kind == Kind::kDir && it->second->kind == Kind::kImplicitDir) {
        it->second->kind = Kind::kDir;
        it->second->extracted = extracted;
        return absl::OkStatus();
      }
      const Kind had = it->second->kind;
      if (kind != Kind::kDir && (had == Kind::kDir || had == Kind::kImplicitDir)) {
        return UnsafeEntry(path, "duplicate entry (a directory already)");
      }
      return UnsafeEntry(path, "duplicate entry");
    } else if (it->second->kind == Kind::kSymlink) {
      return UnsafeEntry(path,
                         absl::StrCat("goes through symlink ", QuotePath(path.substr(0, slash))));
    } else if (it->second->kind == Kind::kFile) {
      return UnsafeEntry(
          path, absl::StrCat("parent ", QuotePath(path.substr(0, slash)), " is not a directory"));
    }
    node = it->second.get();
    start = slash + 1;
  }
}

const EntryTree::Node* EntryTree::Find(std::string_view path) const {
  const Node* node = &root_;
  size_t start = 0;
  while (node != nullptr) {
    const size_t slash = path.find('/', start);
    const bool last = slash == std::string_view::npos;
    auto it =
        node->children.find(path.substr(start, last ? std::string_view::npos : slash - start));
    if (it == node->children.end()) return nullptr;
    if (last) return it->second.get();
    node = it->second.get();
    start = slash + 1;
  }
  return nullptr;
}

}  // namespace bunker::capsule
