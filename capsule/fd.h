// Fd: the one owner of a POSIX file descriptor in Bunker (lowest layer with file I/O).
#ifndef BUNKER_CAPSULE_FD_H_
#define BUNKER_CAPSULE_FD_H_

#include <unistd.h>

#include <utility>

namespace bunker::capsule {

// Owns a file descriptor and closes it when destroyed or reassigned. Move-only; an Fd that was
// moved from, released, or default-constructed holds -1 and closes nothing. close(2) errors are
// ignored: callers that need durability fsync before letting go. Not thread-safe (like an int).
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  Fd(Fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  Fd& operator=(Fd&& other) noexcept {
    if (this != &other) Reset(std::exchange(other.fd_, -1));
    return *this;
  }
  ~Fd() { Reset(); }

  // The descriptor (-1 if none); still owned by this Fd.
  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  // Gives up ownership: returns the descriptor without closing it and leaves -1 behind.
  int release() { return std::exchange(fd_, -1); }
  // Closes the current descriptor (if any) and takes ownership of `fd`.
  void Reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

}  // namespace bunker::capsule

#endif  // BUNKER_CAPSULE_FD_H_
