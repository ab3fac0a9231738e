#include "capsule/mapped_read.h"

#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <mutex>

namespace bunker::capsule {
namespace {

// The range this thread is reading through WithMappedRange, if any. Initial-exec TLS: the
// signal handler reads it, and must not be the first to touch (and so allocate) it.
struct GuardedRange {
  uintptr_t begin = 0;
  uintptr_t end = 0;  // page-aligned
  volatile sig_atomic_t faulted = 0;
};
thread_local GuardedRange* tls_range __attribute__((tls_model("initial-exec"))) = nullptr;

// Set once, before the handler is installed; read-only afterwards.
struct sigaction g_previous {};
uintptr_t g_page_size = 4096;
std::atomic<void (*)(int, uint64_t)> g_hook{nullptr};

void ChainToPrevious(int sig, siginfo_t* info, void* context) {
  if ((g_previous.sa_flags & SA_SIGINFO) != 0 && g_previous.sa_sigaction != nullptr) {
    g_previous.sa_sigaction(sig, info, context);
    return;
  }
  if (g_previous.sa_handler != SIG_DFL && g_previous.sa_handler != SIG_IGN) {
    g_previous.sa_handler(sig);
    return;
  }
  // The default action (an ignored SIGBUS from a fault would loop forever, so it is the default
  // too): restore it. A fault then recurs when the instruction runs again and kills the
  // process; a SIGBUS sent with kill(2) is raised again, pending until this handler returns.
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  ::sigaction(SIGBUS, &dfl, nullptr);
  if (info == nullptr || info->si_code <= 0) ::raise(SIGBUS);
}

// Async-signal-safe: reads this thread's range, calls mmap(2) and sigaction(2) only.
void OnSigbus(int sig, siginfo_t* info, void* context) {
  GuardedRange* r = tls_range;
  if (r != nullptr && info != nullptr && info->si_code > 0) {  // > 0: raised by the kernel
    const uintptr_t addr = reinterpret_cast<uintptr_t>(info->si_addr);
    if (addr >= r->begin && addr < r->end) {
      const uintptr_t page = addr & ~(g_page_size - 1);
      // Zeros over the rest of the range, so one fault covers it all.
      void* p = ::mmap(reinterpret_cast<void*>(page), r->end - page, PROT_READ,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
      if (p != MAP_FAILED) {
        r->faulted = 1;
        return;
      }
    }
  }
  ChainToPrevious(sig, info, context);
}

bool InstallHandler() {
  g_page_size = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  struct sigaction sa {};
  sa.sa_sigaction = OnSigbus;
  sa.sa_flags = SA_SIGINFO;
  sigemptyset(&sa.sa_mask);
  return ::sigaction(SIGBUS, &sa, &g_previous) == 0;
}

bool HandlerInstalled() {
  static std::once_flag once;
  static bool installed = false;
  std::call_once(once, [] { installed = InstallHandler(); });
  return installed;
}

}  // namespace

absl::Status WithMappedRange(int fd, uint64_t offset, size_t size, const VisitFn& fn) {
  if (size == 0) return fn(absl::Span<const uint8_t>());
  if (!HandlerInstalled() || tls_range != nullptr) {
    return absl::UnimplementedError("cannot map the file safely");
  }
  const uint64_t map_offset = offset & ~uint64_t{g_page_size - 1};
  const size_t lead = static_cast<size_t>(offset - map_offset);
  const size_t length = lead + size;
  void* base = ::mmap(nullptr, length, PROT_READ, MAP_SHARED, fd, static_cast<off_t>(map_offset));
  if (base == MAP_FAILED) return absl::UnimplementedError("cannot map the file");
  // Read-ahead of the whole range now, as one pread would ask for (a no-op for cached pages).
  ::madvise(base, length, MADV_WILLNEED);
  GuardedRange range;
  range.begin = reinterpret_cast<uintptr_t>(base);
  range.end = (range.begin + length + g_page_size - 1) & ~(g_page_size - 1);
  tls_range = &range;
  std::atomic_signal_fence(std::memory_order_seq_cst);
  if (auto hook = g_hook.load(std::memory_order_relaxed)) hook(fd, offset);
  absl::Status s = fn(absl::MakeConstSpan(static_cast<const uint8_t*>(base) + lead, size));
  std::atomic_signal_fence(std::memory_order_seq_cst);
  tls_range = nullptr;
  ::munmap(base, length);
  if (range.faulted) return absl::OutOfRangeError("file shrank while being read");
  return s;
}

void SetMappedRangeHookForTesting(void (*hook)(int fd, uint64_t offset)) {
  g_hook.store(hook, std::memory_order_relaxed);
}

}  // namespace bunker::capsule
