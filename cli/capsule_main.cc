// The `capsule` program: dispatches to one command per file.
#include <malloc.h>
#include <poll.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>
#include <clocale>
#include <cstdio>
#include <cstring>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "capsule/io.h"
#include "cli/context.h"
#include "cli/version.h"
#include "crypto/secret.h"

namespace {

struct Command {
  const char* name;
  int (*run)(int, char**);
  const char* summary;
};

constexpr Command kCommands[] = {
    {"keygen", bunker::cli::RunKeygen, "create an identity (NAME.key, NAME.pub)"},
    {"seal", bunker::cli::RunSeal, "seal a dataset and its policy into a capsule"},
    {"inspect", bunker::cli::RunInspect, "show a capsule's public facts"},
    {"verify", bunker::cli::RunVerify, "check signature, trust and every chunk, keyless"},
    {"open", bunker::cli::RunOpen, "decrypt and extract a capsule atomically"},
    {"ls", bunker::cli::RunLs, "list the files in a capsule"},
    {"cat", bunker::cli::RunCat, "write one file of a capsule to stdout"},
    {"mount", bunker::cli::RunMount, "serve a capsule's permitted files read-only (FUSE)"},
    {"umount", bunker::cli::RunUmount, "end a mount made by capsule mount"},
    {"mounts", bunker::cli::RunMounts, "list your live mounts at a site"},
    {"send", bunker::cli::RunSend, "push a capsule to another site's daemon (resumable)"},
    {"fetch", bunker::cli::RunFetch, "pull a capsule from another site's daemon"},
    {"policy", bunker::cli::RunPolicy, "check a policy, or explain a decision (check|explain)"},
    {"audit", bunker::cli::RunAudit, "review a site's audit log (show|verify|prove|consistency|export|report)"},
};

void PrintUsage(std::FILE* out) {
  std::fprintf(out,
               "Usage: capsule COMMAND [options]\n\n"
               "Bunker capsules: datasets sealed with their access policy.\n\nCommands:\n");
  for (const Command& c : kCommands) std::fprintf(out, "  %-9s %s\n", c.name, c.summary);
  std::fprintf(out,
               "\nRun 'capsule COMMAND --help' for a command's options, 'capsule --version' for "
               "the version.\n");
}

// The errno of a failed write to stdout that stdio latched without keeping it: a pipe whose
// reader went away is EPIPE (poll reports POLLERR on its write end), else EIO.
int LostStdoutErrno() {
  struct pollfd p {STDOUT_FILENO, POLLOUT, 0};
  if (::poll(&p, 1, 0) == 1 && (p.revents & (POLLERR | POLLHUP)) != 0) return EPIPE;
  return EIO;
}

// What a command printed must have reached its output: a full disk, a closed stdout or a
// reader gone turn a success into the error they are (one line, the errno's exit status),
// never into exit 0 with the output cut short. `who`: the command, as its errors name it.
int FinishStdout(int rc, const std::string& who) {
  errno = 0;
  const bool failed = std::fflush(stdout) != 0 || std::ferror(stdout) != 0;
  if (!failed || rc != 0) return rc;
  const int err = errno != 0 ? errno : LostStdoutErrno();
  std::fprintf(stderr, "%s: cannot write the output: %s\n", who.c_str(),
               err == EPIPE ? "its reader went away (broken pipe)" : std::strerror(err));
  return bunker::cli::ExitCodeFor(absl::Status(bunker::capsule::ErrnoCode(err), ""));
}

}  // namespace

int main(int argc, char** argv) {
  // No core dumps: they could hold key material outside libsodium's guarded pages.
  struct rlimit no_core = {0, 0};
  ::setrlimit(RLIMIT_CORE, &no_core);
  // Memory: large buffers (chunks, S3 read-ahead windows) are mapped and unmapped on their own
  // rather than kept in per-thread malloc arenas, so peak RSS stays near what is in use
  // (spec/STORE.md "Reading": the read-ahead is bounded, the allocator should not multiply it).
  ::mallopt(M_MMAP_THRESHOLD, 256 * 1024);
  ::mallopt(M_ARENA_MAX, 2);
  // Archive paths are UTF-8; libarchive converts through the C library's locale.
  if (std::setlocale(LC_CTYPE, "C.UTF-8") == nullptr) std::setlocale(LC_CTYPE, "");
  bunker::crypto::EnsureInitialized();
  bunker::cli::InstallInterruptHandlers();

  if (argc < 2) {
    PrintUsage(stderr);
    return bunker::cli::kExitUsage;
  }
  const std::string cmd = argv[1];
  if (cmd == "-h" || cmd == "--help" || cmd == "help") {
    PrintUsage(stdout);
    return FinishStdout(0, "capsule");
  }
  if (cmd == "--version" || cmd == "version") {
    std::printf("%s\n", bunker::cli::VersionLine("capsule").c_str());
    return FinishStdout(0, "capsule");
  }
  for (const Command& c : kCommands) {
    if (cmd != c.name) continue;
    // "capsule audit show": a command with subcommands names the one that ran.
    std::string who = absl::StrCat("capsule ", cmd);
    if (argc > 2 && argv[2][0] != '-' && (cmd == "audit" || cmd == "policy")) {
      absl::StrAppend(&who, " ", bunker::cli::TerminalSafe(argv[2]));
    }
    return FinishStdout(c.run(argc - 2, argv + 2), who);
  }
  std::fprintf(stderr, "capsule: unknown command '%s'\nhint: see 'capsule --help'\n",
               bunker::cli::TerminalSafe(cmd).c_str());
  return bunker::cli::kExitUsage;
}
