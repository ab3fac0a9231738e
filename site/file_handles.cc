#include "site/file_handles.h"

namespace bunker::site {

uint64_t FileHandles::Open(uint64_t ino) {
  std::lock_guard<std::mutex> lock(mu_);
  if (open_.size() >= kMaxHandles) return kNone;
  const uint64_t fh = ++last_handle_;
  open_.emplace(fh, State{ino, 0});
  return fh;
}

bool FileHandles::Sequential(uint64_t fh, uint64_t ino, uint64_t offset, uint64_t window) const {
  if (offset == 0) return true;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = open_.find(fh);
  if (it == open_.end() || it->second.ino != ino) return false;
  const uint64_t last = it->second.last_end;
  // Written so that no sum wraps (the offset is the kernel's, the state ours).
  return (offset >= last ? offset - last : last - offset) <= window;
}

void FileHandles::ReadEnded(uint64_t fh, uint64_t ino, uint64_t end) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = open_.find(fh);
  if (it == open_.end() || it->second.ino != ino) return;
  it->second.last_end = end;
}

bool FileHandles::Release(uint64_t fh) {
  std::lock_guard<std::mutex> lock(mu_);
  return open_.erase(fh) != 0;
}

size_t FileHandles::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return open_.size();
}

}  // namespace bunker::site
