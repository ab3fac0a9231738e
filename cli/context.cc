#include "cli/context.h"

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <signal.h>

#include <csignal>

#include <cstdio>
#include <cstdlib>
#include <algorithm>
#include <ctime>
#include <iostream>
#include <optional>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/str_join.h"
#include "absl/strings/match.h"
#include "capsule/key_files.h"
#include "capsule/json_writer.h"
#include "capsule/paths.h"
#include "capsule/s3_client.h"
#include "crypto/status_hint.h"
#include "transfer/client.h"

namespace bunker::cli {

std::string Args::Get(const std::string& name, const std::string& fallback) const {
  auto it = values_.find(name);
  if (it == values_.end() || it->second.empty()) return fallback;
  return it->second.back();
}

const std::vector<std::string>& Args::GetAll(const std::string& name) const {
  static const std::vector<std::string>* const kEmpty = new std::vector<std::string>();
  auto it = values_.find(name);
  return it == values_.end() ? *kEmpty : it->second;
}

Context::Context(const CommandSpec& spec, int argc, char** argv)
    : spec_(spec), argc_(argc), argv_(argv) {}

namespace {

// One option's lines of --help: the flag in a 22-column field (alone on its line when longer),
// the text after it wrapped at word boundaries to 80 columns.
void AppendOptionHelp(std::string* out, const std::string& flag, const std::string& text) {
  constexpr size_t kIndent = 25, kWidth = 80;
  std::string line = absl::StrFormat("  %-22s ", flag);
  if (line.size() > kIndent) {
    absl::StrAppend(out, absl::StripTrailingAsciiWhitespace(line), "\n");
    line = std::string(kIndent, ' ');
  }
  bool first = true;
  for (absl::string_view word : absl::StrSplit(text, ' ', absl::SkipEmpty())) {
    if (!first && line.size() + 1 + word.size() > kWidth) {
      absl::StrAppend(out, line, "\n");
      line = std::string(kIndent, ' ');
      first = true;
    }
    absl::StrAppend(&line, first ? "" : " ", word);
    first = false;
  }
  absl::StrAppend(out, line, "\n");
}

}  // namespace

void Context::PrintHelp() const {
  std::string out = absl::StrCat("Usage: ", Who(), " ", spec_.usage, "\n\n",
                                 spec_.summary, "\n\nOptions:\n");
  for (const OptionSpec& o : spec_.options) {
    std::string flag = absl::StrCat("--", o.name);
    if (o.takes_value) absl::StrAppend(&flag, " ", o.value_name);
    AppendOptionHelp(&out, flag, absl::StrCat(o.help, o.repeatable ? " (repeatable)" : ""));
  }
  AppendOptionHelp(&out, "-h, --help", "show this help");
  if (!spec_.details.empty()) absl::StrAppend(&out, "\n", spec_.details, "\n");
  std::fputs(out.c_str(), stdout);
}

bool Context::Parse() {
  bool only_positionals = false;
  for (int i = 0; i < argc_; ++i) {
    std::string arg = argv_[i];
    if (only_positionals || arg == "-" || arg.size() < 2 || arg[0] != '-') {
      // An empty argument names nothing (a capsule "", a path ""): a bad command line.
      if (arg.empty()) {
        const size_t at = args_.positionals_.size();
        UsageError(at < spec_.positionals.size()
                       ? absl::StrCat(spec_.positionals[at], " is empty")
                       : std::string("unexpected empty argument"));
        return false;
      }
      args_.positionals_.push_back(arg);
      continue;
    }
    if (arg == "--") {
      only_positionals = true;
      continue;
    }
    if (arg == "-h" || arg == "--help") {
      PrintHelp();
      exit_code_ = kExitOk;
      return false;
    }
    std::string name, value;
    bool has_inline = false;
    if (absl::StartsWith(arg, "--")) {
      name = arg.substr(2);
      const size_t eq = name.find('=');
      if (eq != std::string::npos) {
        value = name.substr(eq + 1);
        name = name.substr(0, eq);
        has_inline = true;
      }
    } else {
      // Single-letter aliases: -o is --output everywhere it exists.
      name = arg.substr(1);
      if (name == "o") name = "output";
    }
    const OptionSpec* spec = nullptr;
    for (const OptionSpec& o : spec_.options) {
      if (o.name == name) spec = &o;
    }
    if (spec == nullptr) {
      UsageError(absl::StrCat("unknown option ", arg));
      return false;
    }
    if (spec->takes_value) {
      if (!has_inline) {
        if (i + 1 >= argc_) {
          UsageError(absl::StrCat("option --", name, " needs a value"));
          return false;
        }
        value = argv_[++i];
      }
      // No option of ours takes an empty value: a required one would otherwise be "given"
      // and fail later as a file "" not found (exit 6) or an empty destination (exit 3).
      if (value.empty()) {
        UsageError(absl::StrCat("option --", name, " needs a value (it is empty)"));
        return false;
      }
    } else if (has_inline) {
      UsageError(absl::StrCat("option --", name, " takes no value"));
      return false;
    }
    // No command writes its -o FILE to standard output: "-" would be a file named "-".
    if (name == "output" && value == "-") {
      UsageError("-o - (standard output) is not supported here: name a file");
      return false;
    }
    auto& slot = args_.values_[name];
    if (!slot.empty() && !spec->repeatable) {
      UsageError(absl::StrCat("option --", name, " given more than once"));
      return false;
    }
    slot.push_back(value);
  }
  if (args_.positionals_.size() != spec_.positionals.size()) {
    if (args_.positionals_.size() < spec_.positionals.size()) {
      UsageError(absl::StrCat("missing ", spec_.positionals[args_.positionals_.size()]));
    } else {
      UsageError(absl::StrCat("unexpected argument ",
                              args_.positionals_[spec_.positionals.size()]));
    }
    return false;
  }
  return true;
}

int Context::UsageError(const std::string& message) const {
  // Messages quote the arguments given: no terminal escapes, whatever they hold.
  std::fprintf(stderr, "%s: %s\nhint: see '%s --help'\n", Who().c_str(),
               TerminalSafe(message).c_str(), Who().c_str());
  const_cast<Context*>(this)->exit_code_ = kExitUsage;
  // With --json a script reads one document whatever failed, a bad command line included
  // (Parse may not have reached --json yet: look for it among the arguments).
  if (!json_printed_ && AskedForJson()) {
    capsule::JsonWriter w;
    w.BeginObject()
        .Key("error").String(message)
        .Key("exitStatus").Number(static_cast<int>(kExitUsage))
        .EndObject();
    PrintJson(w.text());
  }
  return kExitUsage;
}

bool Context::AskedForJson() const {
  if (json()) return true;
  bool supported = false;
  for (const OptionSpec& o : spec_.options) supported = supported || o.name == "json";
  if (!supported) return false;
  for (int i = 0; i < argc_; ++i) {
    const std::string_view arg = argv_[i];
    if (arg == "--") return false;
    if (arg == "--json") return true;
    // An option's value is not an option: `--purpose --json` asked for no JSON.
    if (arg.size() > 2 && arg.substr(0, 2) == "--" && arg.find('=') == std::string_view::npos) {
      for (const OptionSpec& o : spec_.options) {
        if (o.takes_value && arg.substr(2) == o.name) ++i;
      }
    }
  }
  return false;
}

namespace {
constexpr char kUsageTypeUrl[] = "type.bunker/usage";
}  // namespace

absl::Status UsageStatus(const std::string& message) {
  absl::Status s = absl::InvalidArgumentError(message);
  s.SetPayload(kUsageTypeUrl, absl::Cord("1"));
  return s;
}

bool IsUsageStatus(const absl::Status& status) {
  return status.GetPayload(kUsageTypeUrl).has_value();
}

int Context::Fail(const absl::Status& status, const std::string& hint) const {
  if (IsUsageStatus(status)) {
    return UsageError(std::string(status.message()));
  }
  // One line, and no terminal escapes, whatever a library (or a capsule) put in the message.
  std::string msg = TerminalSafe(std::string_view(status.message().data(),
                                                  status.message().size()));
  // After an interrupt, whatever failed failed because of it (a wait cut short by EINTR, a
  // step that stopped): the command was interrupted, exit 130.
  const bool interrupted = Interrupted() && !status.ok() && !absl::IsCancelled(status);
  if (interrupted) msg = absl::StrCat("interrupted (", msg, ")");
  std::fprintf(stderr, "%s: %s\n", Who().c_str(), msg.c_str());
  const int code = ExitStatusFor(status);
  if (json() && !json_printed_) {
    capsule::JsonWriter w;
    w.BeginObject()
        .Key("error").String(std::string(status.message()))
        .Key("exitStatus").Number(code)
        .EndObject();
    PrintJson(w.text());
  }
  // A hint given here (the command knows best) wins over one the error carries.
  const std::string shown = hint.empty() ? HintOf(status) : hint;
  if (!shown.empty() && !interrupted) {
    std::fprintf(stderr, "hint: %s\n", TerminalSafe(shown).c_str());
  }
  return code;
}

int Context::ExitStatusFor(const absl::Status& status) const {
  if (IsUsageStatus(status)) return kExitUsage;
  if (Interrupted() && !status.ok() && !absl::IsCancelled(status)) return kExitInterrupted;
  return ExitCodeFor(status);
}

void Context::PrintJson(const std::string& text) const {
  std::printf("%s\n", text.c_str());
  json_printed_ = true;
}

absl::StatusOr<crypto::Identity> Context::LoadIdentity(const std::string& flag) const {
  const std::string path = args_.Get(flag);
  if (path.empty()) return UsageStatus(absl::StrCat("--", flag, " is required"));
  return capsule::LoadIdentity(path);
}

absl::StatusOr<std::vector<crypto::PublicIdentity>> Context::LoadPublicKeys(
    const std::string& flag) const {
  std::vector<crypto::PublicIdentity> out;
  for (const std::string& p : args_.GetAll(flag)) {
    absl::StatusOr<crypto::PublicIdentity> pub = capsule::LoadPublicIdentity(p);
    if (!pub.ok()) return pub.status();
    out.push_back(*pub);
  }
  return out;
}

absl::StatusOr<int> Context::Threads() const {
  if (!args_.Has("threads")) return 0;
  int n = 0;
  if (!absl::SimpleAtoi(args_.Get("threads"), &n) || n < 0 || n > 64) {
    return absl::InvalidArgumentError("--threads must be a number from 0 (all cores) to 64");
  }
  return n;
}

}  // namespace bunker::cli

namespace bunker::cli {

absl::StatusOr<OpenedCapsule> OpenCapsuleWith(const std::string& path,
                                              const std::vector<std::string>& trust_paths,
                                              const std::optional<std::string>& identity_path) {
  absl::StatusOr<std::vector<crypto::PublicIdentity>> trust = capsule::LoadTrust(trust_paths);
  if (!trust.ok()) return trust.status();
  OpenedCapsule out;
  if (identity_path) {
    absl::StatusOr<crypto::Identity> id = capsule::LoadIdentity(*identity_path);
    if (!id.ok()) return id.status();
    out.identity.emplace(std::move(*id));
  }
  // An interrupt ends a read of a slow S3 server too (exit 130), not only the next check.
  absl::StatusOr<std::unique_ptr<capsule::RandomAccessFile>> file =
      capsule::s3::OpenFileOrObject(path, "", [] { return Interrupted(); });
  if (!file.ok()) return file.status();
  absl::StatusOr<std::unique_ptr<capsule::CapsuleReader>> reader =
      capsule::CapsuleReader::Open(std::move(*file), *trust);
  if (!reader.ok()) {
    return absl::Status(reader.status().code(),
                        absl::StrCat(path, ": ", reader.status().message()));
  }
  out.reader = std::move(*reader);
  if (out.identity) {
    absl::StatusOr<std::unique_ptr<capsule::PayloadKey>> key = out.reader->Unlock(*out.identity);
    if (!key.ok()) return key.status();
    out.key = std::move(*key);
  }
  return out;
}

absl::StatusOr<OpenedCapsule> OpenCapsule(const Context& ctx, const std::string& path,
                                          bool unlock) {
  const std::vector<std::string>& trust = ctx.args().GetAll("trust");
  if (trust.empty() || std::any_of(trust.begin(), trust.end(),
                                   [](const std::string& t) { return t.empty(); })) {
    return UsageStatus("--trust is required: name the issuer public keys you trust");
  }
  std::optional<std::string> identity;
  if (unlock) {
    if (ctx.args().Get("identity").empty()) return UsageStatus("--identity is required");
    identity = ctx.args().Get("identity");
  }
  return OpenCapsuleWith(path, ctx.args().GetAll("trust"), identity);
}

}  // namespace bunker::cli

namespace bunker::cli {

absl::StatusOr<transfer::ClientOptions> TransferClientOptions(const Context& ctx,
                                                              const site::SiteConfig& site,
                                                              crypto::Identity* identity) {
  transfer::ClientOptions o;
  o.self = identity;
  absl::StatusOr<std::vector<crypto::PublicIdentity>> peers = capsule::LoadTrust(site.peers);
  if (!peers.ok()) return peers.status();
  o.peers = *peers;
  if (ctx.args().Has("peer")) {
    absl::StatusOr<crypto::PublicIdentity> peer = capsule::LoadPublicIdentity(ctx.args().Get("peer"));
    if (!peer.ok()) return peer.status();
    o.server = *peer;
  }
  o.cancelled = [] { return Interrupted(); };
  // For tests only (not documented as an interface): a shorter wait for an idle peer than the
  // default, which matches the daemon's.
  if (const char* idle = ::getenv("BUNKER_TEST_PEER_IDLE_SECONDS"); idle != nullptr) {
    int seconds = 0;
    if (absl::SimpleAtoi(idle, &seconds) && seconds > 0) o.idle_seconds = seconds;
  }
  return o;
}

absl::StatusOr<uint64_t> ParseRate(const std::string& text) {
  std::string t = absl::AsciiStrToUpper(text);
  uint64_t mult = 1;
  if (!t.empty()) {
    switch (t.back()) {
      case 'K': mult = 1000; t.pop_back(); break;
      case 'M': mult = 1000 * 1000; t.pop_back(); break;
      case 'G': mult = 1000 * 1000 * 1000; t.pop_back(); break;
      default: break;
    }
  }
  uint64_t n = 0;
  if (t.empty() || !absl::SimpleAtoi(t, &n) || n == 0 || n > (~uint64_t{0}) / mult) {
    return absl::InvalidArgumentError(absl::StrCat("bad rate '", text, "' (e.g. 50M for 50 MB/s)"));
  }
  return n * mult;
}

std::string TransferSummaryJson(const transfer::SendSummary& s) {
  capsule::JsonWriter w;
  w.BeginObject()
      .Key("capsule").String(s.capsule_id)
      .Key("chunksTotal").Number(s.chunks_total)
      .Key("chunksSent").Number(s.chunks_sent)
      .Key("chunksSkipped").Number(s.chunks_skipped)
      .Key("bytesSent").Number(s.bytes_sent)
      .Key("seconds").Fixed(s.seconds, 3)
      .EndObject();
  return w.text();
}

}  // namespace bunker::cli
