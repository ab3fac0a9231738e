// What every `capsule` command shares: flag parsing, key loading, output (text or --json),
// terminal progress, and the mapping from library status codes to exit statuses.
// Commands stay thin: parse, call the library, print.
#ifndef BUNKER_CLI_CONTEXT_H_
#define BUNKER_CLI_CONTEXT_H_

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "capsule/reader.h"
#include "crypto/keys.h"
#include "transfer/client.h"
#include "site/site_config.h"
#include "site/request.h"
#include "verifier/verifier.h"

namespace bunker::cli {

// Exit statuses (README "Exit status"). Each bad-input class has its own; ExitCodeFor is the one
// table from status codes to them, one meaning per code.
enum ExitCode : int {
  kExitOk = 0,
  kExitInternal = 1,      // a bug or an unexpected library failure
  kExitUsage = 2,         // bad command line
  kExitInvalid = 3,       // bad input: malformed file, unsafe archive path, bad policy
  kExitCorrupt = 4,       // capsule corrupt, truncated or tampered with
  kExitDenied = 5,        // refused: untrusted issuer, not a recipient, policy denial
  kExitNotFound = 6,      // a named file, path or capsule entry does not exist
  kExitExists = 7,        // the destination or a key file already exists (kAlreadyExists)
  kExitExhausted = 8,     // out of disk space or another resource
  kExitUnavailable = 9,   // I/O or network error
  kExitNotReady = 10,     // not in a state to do this yet (kFailedPrecondition): an operator acts
  kExitInterrupted = 130, // stopped by SIGINT, SIGTERM or SIGHUP, after cleaning up
};

// SIGINT, SIGTERM and SIGHUP set a flag instead of killing the process, so that long operations
// stop at the next piece, remove their staging folders and partial files, and exit 130; SIGPIPE
// is ignored, so a closed pipe is an ordinary write error. Call once, first thing in main.
void InstallInterruptHandlers();
// Whether one of those signals arrived.
bool Interrupted();
// kCancelled "interrupted" once a signal arrived, OK before.
absl::Status CheckInterrupted();

// A usage error (a required flag missing or empty) found below the command: Context::Fail prints
// it as UsageError does and the command exits 2.
absl::Status UsageStatus(const std::string& message);
bool IsUsageStatus(const absl::Status& status);

// Passes a source through, failing with kCancelled as soon as a signal arrived.
class InterruptibleSource : public capsule::ByteSource {
 public:
  explicit InterruptibleSource(capsule::ByteSource* inner) : inner_(inner) {}
  absl::StatusOr<absl::Span<const uint8_t>> Next() override {
    absl::Status s = CheckInterrupted();
    if (!s.ok()) return s;
    return inner_->Next();
  }

 private:
  capsule::ByteSource* inner_;
};

// The exit status for a library status.
int ExitCodeFor(const absl::Status& status);

// One option a command accepts.
struct OptionSpec {
  std::string name;       // without dashes: "to" for --to
  bool takes_value;       // --name VALUE (or --name=VALUE)
  bool repeatable;
  std::string help;       // one line
  std::string value_name = "VALUE";
};

// A command's declared interface, used for parsing and --help.
struct CommandSpec {
  std::string name;        // "seal"
  std::string usage;       // "INPUT -o OUT.capsule --sign KEY --to PUB [--to PUB]..."
  std::string summary;     // one line
  std::string details;     // optional paragraph(s) after the options
  std::vector<std::string> positionals;  // names, for arity checks
  std::vector<OptionSpec> options;
  std::string program = "capsule";  // "capsuled" for the daemon, whose `name` is empty
};

// Parsed command line.
class Args {
 public:
  bool Has(const std::string& name) const { return values_.count(name) > 0; }
  // The single value of --name, or `fallback`.
  std::string Get(const std::string& name, const std::string& fallback = "") const;
  const std::vector<std::string>& GetAll(const std::string& name) const;
  const std::vector<std::string>& positionals() const { return positionals_; }

 private:
  friend class Context;
  std::map<std::string, std::vector<std::string>> values_;
  std::vector<std::string> positionals_;
};

// Thrown nowhere: commands return an exit code.
class Context {
 public:
  Context(const CommandSpec& spec, int argc, char** argv);

  // Parses argv. Returns false when the command should stop at once: after printing --help
  // (exit_code() == 0) or a usage error (exit_code() == kExitUsage).
  bool Parse();
  int exit_code() const { return exit_code_; }
  const Args& args() const { return args_; }
  bool json() const { return args_.Has("json"); }
  // json(), or --json among the arguments when parsing stopped before it (a usage error), for
  // a command that has --json.
  bool AskedForJson() const;
  // The exit status Fail(status) gives: 2 for a usage status, 130 after an interrupt, else the
  // status code's (README "Exit status"). For JSON results that report a failure themselves.
  int ExitStatusFor(const absl::Status& status) const;
  // Prints one JSON document (a line) on stdout. With --json, a command that fails before it
  // printed any gets {"error": MESSAGE, "exitStatus": N} from Fail, so that a script always
  // reads one document.
  void PrintJson(const std::string& text) const;

  // Prints "capsule CMD: <message>" (plus "hint: ..." when given) to stderr and returns the
  // exit status for `status`.
  int Fail(const absl::Status& status, const std::string& hint = "") const;
  // A usage error with a pointer to --help.
  int UsageError(const std::string& message) const;

  // Key loading from flags, with errors naming the flag.
  absl::StatusOr<crypto::Identity> LoadIdentity(const std::string& flag) const;
  absl::StatusOr<std::vector<crypto::PublicIdentity>> LoadPublicKeys(const std::string& flag) const;
  // --threads N (0 or absent: all cores).
  absl::StatusOr<int> Threads() const;

  const std::string& command() const { return spec_.name; }
  // "capsule seal", "capsuled": how messages name the program.
  std::string Who() const {
    return spec_.name.empty() ? spec_.program : spec_.program + " " + spec_.name;
  }

 private:
  void PrintHelp() const;
  const CommandSpec& spec_;
  int argc_;
  char** argv_;
  Args args_;
  int exit_code_ = kExitOk;
  mutable bool json_printed_ = false;
};

// A capsule opened for reading: structure and signature checked, issuer trusted, and, when
// unlocked, the data key unwrapped with the identity (kept: a site signs its audit log with it).
struct OpenedCapsule {
  std::unique_ptr<capsule::CapsuleReader> reader;
  std::unique_ptr<capsule::PayloadKey> key;  // null unless unlocked
  std::optional<crypto::Identity> identity;  // set when unlocked
};
// Opens `path` trusting the keys at `trust_paths` and, when `identity_path` is given, unlocks
// it with that private key.
absl::StatusOr<OpenedCapsule> OpenCapsuleWith(const std::string& path,
                                              const std::vector<std::string>& trust_paths,
                                              const std::optional<std::string>& identity_path);
// The same with --trust and (when `unlock`) --identity from the command line.
absl::StatusOr<OpenedCapsule> OpenCapsule(const Context& ctx, const std::string& path,
                                          bool unlock);
// The options of every command that releases capsule contents or names: --site (with
// --direct), or --identity with --trust; --as; --purpose.
std::vector<OptionSpec> ReleaseOptions();
// A usage problem with the release flags, or "".
std::string ReleaseUsageProblem(const Args& args);

// What a request to a verifier came back with: its own status (a deny is kPermissionDenied;
// an explain carries its decision with OK), the outcome, and the site it was decided at.
struct SiteRun {
  absl::Status status;
  site::Outcome outcome;
  std::string site, region;
  std::vector<std::string> storage;
};
// Runs `request` (command, selection, destination, path, output, callbacks filled in by the
// command) for the capsule at `capsule_path`: through the site's verifier service when the site
// file names a socket (unless --direct), else in this process with the site key or, without
// --site, offline with --identity and --trust. --as and --purpose are read here. An error is
// about reaching a verifier or loading keys; the request's own failure is SiteRun::status.
absl::StatusOr<SiteRun> RunSiteRequest(const Context& ctx, const std::string& capsule_path,
                                       site::SiteRequest request);

// The transfer client options for this site: its identity, its peers, --peer, interrupts.
absl::StatusOr<transfer::ClientOptions> TransferClientOptions(const Context& ctx,
                                                              const site::SiteConfig& site,
                                                              crypto::Identity* identity);

// The one-line JSON summary of a transfer (the shape: capsule, chunksTotal, chunksSent,
// chunksSkipped, bytesSent, seconds), written by capsule::JsonWriter like all --json output.
std::string TransferSummaryJson(const transfer::SendSummary& summary);

// Terminal progress on stderr: bytes, rate, ETA; silent when stderr is not a terminal or when
// disabled (--json). Redraws at most 5 times a second.
class Progress {
 public:
  Progress(std::string label, uint64_t total, bool enabled);
  ~Progress();
  void Update(uint64_t done);
  // For work whose size is learnt once it started.
  void SetTotal(uint64_t total);
  void SetLabel(std::string label) { label_ = std::move(label); }
  // Clears the line.
  void Finish();

 private:
  std::string label_;
  uint64_t total_;
  bool enabled_;
  bool drawn_ = false;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_;
};

// "1.5 GiB", "512 B".
std::string HumanBytes(uint64_t bytes);
// Parses "1M", "64K", "1048576", "2MiB" into bytes (K/M/G = 1024 multiples).
absl::StatusOr<uint64_t> ParseSize(const std::string& text);
// `text` (from a capsule, a requester or a peer: untrusted) made safe to print on a terminal,
// so no escape sequence can rewrite what the user sees and no bidi or zero-width character can
// disguise it: capsule::EscapeForTerminal (C0 except, when `keep_newlines`, newline and tab, DEL
// and invalid UTF-8 as \xNN; C1 and the disguising code points as \uXXXX).
std::string TerminalSafe(std::string_view text, bool keep_newlines = false);
// Parses a rate: "50M" is 50,000,000 bytes per second (K, M, G: powers of 1000).
absl::StatusOr<uint64_t> ParseRate(const std::string& text);

// Command entry points, one file each.
int RunKeygen(int argc, char** argv);
int RunSeal(int argc, char** argv);
int RunInspect(int argc, char** argv);
int RunVerify(int argc, char** argv);
int RunOpen(int argc, char** argv);
int RunLs(int argc, char** argv);
int RunCat(int argc, char** argv);
int RunPolicy(int argc, char** argv);
int RunSend(int argc, char** argv);
int RunFetch(int argc, char** argv);
int RunAudit(int argc, char** argv);
int RunMount(int argc, char** argv);
int RunUmount(int argc, char** argv);
int RunMounts(int argc, char** argv);

}  // namespace bunker::cli

#endif  // BUNKER_CLI_CONTEXT_H_
