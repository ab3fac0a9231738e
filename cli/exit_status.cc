// Interrupts, exit codes and hints: how a command ends (README "Exit status").
#include <signal.h>
#include <unistd.h>

#include <csignal>

#include "cli/context.h"

namespace bunker::cli {

namespace {
volatile std::sig_atomic_t g_interrupted = 0;

// The first interrupt asks the command to stop: it checks Interrupted() between steps, cleans up
// what it started and exits 130. What it waits on may not move (a FIFO with no writer, a stalled
// peer or store), so the first interrupt also arms a last resort: if the command is still there
// after kGraceSeconds, or on a second interrupt, the process ends at once.
constexpr unsigned kGraceSeconds = 5;

void OnGraceOver(int) {
  static const char kLine[] = "capsule: interrupted; stopped without waiting any longer\n";
  [[maybe_unused]] const ssize_t n = ::write(STDERR_FILENO, kLine, sizeof kLine - 1);
  ::_exit(130);  // kExitInterrupted
}

void OnSignal(int sig) {
  if (g_interrupted) {  // a second interrupt: the default action (the shell sees the signal)
    ::signal(sig, SIG_DFL);
    ::raise(sig);
    return;
  }
  g_interrupted = 1;
  ::alarm(kGraceSeconds);
}
}  // namespace

void InstallInterruptHandlers() {
  struct sigaction sa {};
  sa.sa_handler = OnSignal;
  sigemptyset(&sa.sa_mask);
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) ::sigaction(sig, &sa, nullptr);
  struct sigaction grace {};
  grace.sa_handler = OnGraceOver;
  sigemptyset(&grace.sa_mask);
  ::sigaction(SIGALRM, &grace, nullptr);
  std::signal(SIGPIPE, SIG_IGN);
}

bool Interrupted() { return g_interrupted != 0; }

absl::Status CheckInterrupted() {
  return Interrupted() ? absl::CancelledError("interrupted; nothing was written")
                       : absl::OkStatus();
}

int ExitCodeFor(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kCancelled:
      return kExitInterrupted;
    case absl::StatusCode::kOk:
      return kExitOk;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
      return kExitInvalid;
    case absl::StatusCode::kDataLoss:
      return kExitCorrupt;
    case absl::StatusCode::kPermissionDenied:
    case absl::StatusCode::kUnauthenticated:
      return kExitDenied;
    case absl::StatusCode::kNotFound:
      return kExitNotFound;
    case absl::StatusCode::kAlreadyExists:
      return kExitExists;
    case absl::StatusCode::kFailedPrecondition:
      return kExitNotReady;
    case absl::StatusCode::kResourceExhausted:
      return kExitExhausted;
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kDeadlineExceeded:
    case absl::StatusCode::kAborted:
      return kExitUnavailable;
    default:
      return kExitInternal;
  }
}

}  // namespace bunker::cli
