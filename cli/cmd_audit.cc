// capsule audit: review a site's audit log (spec/AUDIT.md). One CommandSpec per subcommand;
// the checking and the proofs are verifier/audit_log.h's. Over 500 lines on purpose: one file per
// command, and audit's subcommands share how a site's log is found and loaded.
#include <unistd.h>

#include <cstdio>
#include <ctime>
#include <utility>
#include <vector>
#include <optional>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "capsule/io.h"
#include "capsule/json_writer.h"
#include "capsule/key_files.h"
#include "cli/context.h"
#include "crypto/merkle.h"
#include "crypto/sha256.h"
#include "verifier/audit_log.h"
#include "verifier/audit_report.h"
#include "site/site_config.h"
#include "capsule/utc.h"

namespace bunker::cli {
namespace {

using verifier::Checkpoint;

// A checkpoint file is six short lines; anything much bigger is not one.
constexpr size_t kMaxCheckpointFile = 4096;

void PrintAuditUsage(std::FILE* out) {
  std::fprintf(out,
               "Usage: capsule audit SUBCOMMAND [options]\n\n"
               "Review a site's tamper-evident audit log (spec/AUDIT.md).\n\nSubcommands:\n"
               "  show         list decisions, with filters (table or JSON lines)\n"
               "  verify       check every entry, the Merkle tree and every signed checkpoint\n"
               "  prove        print an inclusion proof for one entry\n"
               "  consistency  print a consistency proof from an older checkpoint\n"
               "  export       write every entry as JSON lines or CSV\n"
               "  report       one self-contained HTML page over one or more sites' logs\n\n"
               "Run 'capsule audit SUBCOMMAND --help' for its options.\n");
}

std::string Hex(absl::Span<const uint8_t> bytes) { return crypto::ToHex(bytes); }

absl::StatusOr<Checkpoint> LoadCheckpointFile(const std::string& flag, const std::string& path) {
  absl::StatusOr<std::string> text = capsule::ReadSmallFile(path, kMaxCheckpointFile);
  if (!text.ok()) return text.status();
  absl::StatusOr<Checkpoint> c = Checkpoint::Parse(*text);
  if (!c.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, " ", path, " is not an audit checkpoint: ", c.status().message()));
  }
  return c;
}

absl::StatusOr<crypto::PublicIdentity> LoadSiteKey(const Context& ctx) {
  return capsule::LoadPublicIdentity(ctx.args().Get("key"));
}

// `text` as an RFC 3339 time, in seconds.
absl::StatusOr<int64_t> ParseTimeFlag(const std::string& flag, const std::string& text) {
  absl::Time t;
  std::string err;
  if (!absl::ParseTime(absl::RFC3339_full, text, &t, &err)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--", flag, " '", text, "' is not an RFC 3339 time (e.g. 2024-05-01T00:00:00Z)"));
  }
  return absl::ToUnixSeconds(t);
}

// A checkpoint as the next value of `w` (spec/AUDIT.md "Proofs").
void WriteCheckpointJson(capsule::JsonWriter* w, const Checkpoint& c) {
  w->BeginObject()
      .Key("site").String(c.site)
      .Key("size").Number(c.size)
      .Key("root").String(Hex(c.root))
      .Key("time").Number(c.time)
      .Key("timeUtc").String(capsule::FormatUtc(c.time))
      .Key("sig").String(Hex(c.signature))
      .Key("text").String(c.Encode())
      .EndObject();
}

// A proof's path as the next value of `w`: an array of hex hashes.
void WritePathJson(capsule::JsonWriter* w, const std::vector<crypto::Sha256Digest>& path) {
  w->BeginArray();
  for (const crypto::Sha256Digest& h : path) w->String(Hex(h));
  w->EndArray();
}

void PrintPath(const std::vector<crypto::Sha256Digest>& path) {
  std::printf("path %zu\n", path.size());
  for (const crypto::Sha256Digest& h : path) std::printf("  %s\n", Hex(h).c_str());
}

// The checkpoint to prove against: --checkpoint FILE, or the log's latest.
absl::StatusOr<Checkpoint> TargetCheckpoint(const Context& ctx, const std::string& log) {
  if (ctx.args().Has("checkpoint")) {
    return LoadCheckpointFile("checkpoint", ctx.args().Get("checkpoint"));
  }
  return verifier::ReadLatestCheckpoint(log);
}

// --- show ------------------------------------------------------------------------------------

int RunShow(int argc, char** argv) {
  static const CommandSpec kSpec{
      "audit show",
      "--site SITE.json | --log PATH [--capsule ID] [--requester FP] [--decision permit|deny]\n"
      "       [--since TIME] [--until TIME] [--json]",
      "List the decisions in a site's audit log, oldest first.",
      "TIME is RFC 3339 (2024-05-01T00:00:00Z or 2024-05-01T02:00:00+02:00); --since and\n"
      "--until are inclusive. This only reads the log; 'capsule audit verify' checks it.",
      {},
      {{"site", true, false, "the site's configuration (its state folder holds the log)",
        "SITE.json"},
       {"log", true, false, "the audit log file instead of --site", "PATH"},
       {"capsule", true, false, "only this capsule", "ID"},
       {"requester", true, false, "only this requester", "FP"},
       {"decision", true, false, "only permits or only denials", "permit|deny"},
       {"since", true, false, "only decisions at or after TIME", "TIME"},
       {"until", true, false, "only decisions at or before TIME", "TIME"},
       {"json", false, false, "one JSON object per line"}}};
  Context ctx(kSpec, argc, argv);
  if (!ctx.Parse()) return ctx.exit_code();
  const Args& a = ctx.args();
  if (a.Has("site") == a.Has("log")) return ctx.UsageError("give exactly one of --site or --log");
  std::string log = a.Get("log");
  if (a.Has("site")) {
    absl::StatusOr<site::SiteConfig> site = site::LoadSiteConfig(a.Get("site"));
    if (!site.ok()) return ctx.Fail(site.status());
    log = site->state + "/audit.log";
  }
  verifier::AuditFilter filter;
  filter.capsule_id = a.Get("capsule");
  filter.requester = a.Get("requester");
  filter.decision = a.Get("decision");
  if (!filter.decision.empty() && filter.decision != "permit" && filter.decision != "deny") {
    return ctx.UsageError("--decision must be permit or deny");
  }
  for (const char* flag : {"since", "until"}) {
    if (!a.Has(flag)) continue;
    absl::StatusOr<int64_t> t = ParseTimeFlag(flag, a.Get(flag));
    if (!t.ok()) return ctx.UsageError(std::string(t.status().message()));
    (std::string(flag) == "since" ? filter.since : filter.until) = *t;
  }

  uint64_t shown = 0;
  if (!ctx.json()) {
    std::printf("%-6s %-20s  %-8s  %-8s  %-32s  %-10s  %-30s  %s\n", "#", "TIME", "EVENT",
                "DECISION", "CAPSULE", "UID", "REQUESTER/PEER", "PURPOSE; REASONS");
  }
  uint64_t entries = 0;
  absl::Status s =
      verifier::ForEachAuditRecord(log, [&](uint64_t index, const verifier::AuditRecord& r) {
        entries = index + 1;
        if (!filter.Matches(r)) return true;
        ++shown;
        if (ctx.json()) {
          std::printf("%s\n", verifier::AuditRecordToJson(index, r).c_str());
          return true;
        }
        std::string why = r.purpose.empty() ? "-" : absl::StrCat("\"", r.purpose, "\"");
        for (const std::string& reason : r.reasons) absl::StrAppend(&why, "; ", reason);
        // The local client's uid, or "-" when the request did not come over the site's socket.
        const std::string uid = r.uid ? absl::StrCat(*r.uid) : "-";
        std::printf("%-6llu %-20s  %-8s  %-8s  %-32s  %-10s  %-30s  %s\n",
                    static_cast<unsigned long long>(index), capsule::FormatUtc(r.time).c_str(),
                    TerminalSafe(r.event).c_str(), TerminalSafe(r.decision).c_str(),
                    TerminalSafe(r.capsule_id.empty() ? "-" : r.capsule_id).c_str(), uid.c_str(),
                    r.requester.empty() ? "-" : TerminalSafe(r.requester).c_str(),
                    TerminalSafe(why).c_str());
        return true;
      });
  std::fflush(stdout);
  if (!s.ok()) return ctx.Fail(s, "run 'capsule audit verify' to find what is wrong");
  if (!ctx.json() && shown == 0) std::printf("(no matching entries)\n");
  // Entries past the latest checkpoint were listed, but nothing vouches for them: an append
  // that was interrupted (the site completes or cuts it when it next opens its state) or an
  // entry added without the site's key.
  absl::StatusOr<verifier::Checkpoint> latest = verifier::ReadLatestCheckpoint(log);
  const uint64_t signed_entries = latest.ok() ? latest->size : 0;
  if (entries > signed_entries) {
    std::fprintf(stderr,
                 "warning: audit log entries from %llu on are not covered by a signed checkpoint "
                 "(an interrupted append, or added without the site's key)\n"
                 "hint: run 'capsule audit verify'; the site completes an interrupted append "
                 "when it next opens its state (e.g. capsuled at start)\n",
                 static_cast<unsigned long long>(signed_entries));
  }
  return kExitOk;
}

// --- verify ----------------------------------------------------------------------------------

int RunVerifyLog(int argc, char** argv) {
  static const CommandSpec kSpec{
      "audit verify",
      "--log PATH --key SITE.pub [--checkpoint FILE] [--witness FILE | --witness-dir DIR]\n"
      "       [--json]",
      "Check an audit log without trusting the site: every entry, the Merkle tree over them,\n"
      "and every checkpoint's signature under the site's public key.",
      "On success prints 'N/N entries valid' and then the latest checkpoint (the last six\n"
      "lines). Keep those lines: given back as --checkpoint next time, they also catch a log\n"
      "that was cut short or replaced by an older copy. On failure names the first bad entry\n"
      "and exits with status 4.\n"
      "--witness takes a witness's copy of the site's newest checkpoint (a peer keeps it in\n"
      "<state>/witness/<fingerprint>.checkpoint, spec/TRANSFER.md \"Witnessing\"); --witness-dir\n"
      "reads <fingerprint of SITE.pub>.checkpoint from that folder. Its signature must verify\n"
      "under SITE.pub and the log must reach its size and reproduce its root: a state folder\n"
      "replaced by an older copy fails here.",
      {},
      {{"log", true, false, "the audit log (audit.checkpoints must be beside it)", "PATH"},
       {"key", true, false, "the site's public key", "SITE.pub"},
       {"checkpoint", true, false, "a checkpoint you kept from before", "FILE"},
       {"witness", true, false, "a witness's copy of the site's checkpoint", "FILE"},
       {"witness-dir", true, false, "a witness folder holding <fingerprint>.checkpoint", "DIR"},
       {"json", false, false, "print the result as JSON"}}};
  Context ctx(kSpec, argc, argv);
  if (!ctx.Parse()) return ctx.exit_code();
  if (!ctx.args().Has("log")) return ctx.UsageError("--log is required");
  if (!ctx.args().Has("key")) return ctx.UsageError("--key is required (the site's public key)");
  absl::StatusOr<crypto::PublicIdentity> key = LoadSiteKey(ctx);
  if (!key.ok()) return ctx.Fail(key.status());
  std::optional<Checkpoint> trusted;
  bool witnessed = false;
  if (ctx.args().Has("checkpoint")) {
    absl::StatusOr<Checkpoint> c = LoadCheckpointFile("checkpoint", ctx.args().Get("checkpoint"));
    if (!c.ok()) return ctx.Fail(c.status());
    trusted = *c;
  }
  if (ctx.args().Has("witness") || ctx.args().Has("witness-dir")) {
    if (trusted || (ctx.args().Has("witness") && ctx.args().Has("witness-dir"))) {
      return ctx.UsageError("give at most one of --checkpoint, --witness and --witness-dir");
    }
    const bool dir = ctx.args().Has("witness-dir");
    const std::string path =
        dir ? absl::StrCat(ctx.args().Get("witness-dir"), "/",
                           key->fingerprint().ToString(), ".checkpoint")
            : ctx.args().Get("witness");
    absl::StatusOr<Checkpoint> c = LoadCheckpointFile(dir ? "witness-dir" : "witness", path);
    if (!c.ok()) return ctx.Fail(c.status());
    absl::Status sig = c->Verify(*key);
    if (!sig.ok()) {
      return ctx.Fail(absl::DataLossError(absl::StrCat(
          "the witnessed checkpoint ", path, " does not verify under the site key")));
    }
    trusted = *c;
    witnessed = true;
  }
  absl::StatusOr<verifier::AuditVerifyResult> r =
      verifier::VerifyAuditLog(ctx.args().Get("log"), *key, trusted);
  if (!r.ok()) {
    if (ctx.json()) {
      capsule::JsonWriter w;
      w.BeginObject()
          .Key("valid").Bool(false)
          .Key("error").String(std::string(r.status().message()))
          .EndObject();
      std::printf("%s\n", w.text().c_str());
    }
    std::string hint;
    if (r.status().code() == absl::StatusCode::kNotFound) {
      hint = "audit verify reads audit.log and audit.checkpoints from the same folder";
    }
    return ctx.Fail(r.status(), hint);
  }
  const bool signed_tree = r->entries > 0;
  if (ctx.json()) {
    capsule::JsonWriter w;
    w.BeginObject()
        .Key("valid").Bool(true)
        .Key("entries").Number(r->entries)
        .Key("trustedSize");
    if (trusted) {
      w.Number(trusted->size);
    } else {
      w.Null();
    }
    w.Key("checkpoint");
    if (signed_tree) {
      WriteCheckpointJson(&w, r->checkpoint);
    } else {
      w.Null();
    }
    w.EndObject();
    std::printf("%s\n", w.text().c_str());
    return kExitOk;
  }
  std::printf("%llu/%llu entries valid%s\n", static_cast<unsigned long long>(r->entries),
              static_cast<unsigned long long>(r->entries),
              signed_tree ? "" : " (no checkpoint yet)");
  if (trusted) {
    std::printf("consistent with the %s checkpoint of size %llu\n",
                witnessed ? "witnessed" : "trusted",
                static_cast<unsigned long long>(trusted->size));
  }
  if (signed_tree) std::fputs(r->checkpoint.Encode().c_str(), stdout);
  return kExitOk;
}

// --- prove -----------------------------------------------------------------------------------

int RunProve(int argc, char** argv) {
  static const CommandSpec kSpec{
      "audit prove",
      "--log PATH --entry N [--checkpoint FILE] [--key SITE.pub] [--json]",
      "Print an RFC 9162 inclusion proof that entry N (from 0) is in the log's signed tree.",
      "The proof is for the tree of the latest checkpoint, or of --checkpoint FILE. With --key\n"
      "the checkpoint's signature and the proof are also checked here. To check it yourself:\n"
      "leaf = SHA-256(00 || entry-bytes); fold the path as in RFC 9162 section 2.1.3.2 to get\n"
      "root; check the checkpoint's signature over its first five lines (spec/AUDIT.md).",
      {},
      {{"log", true, false, "the audit log", "PATH"},
       {"entry", true, false, "the entry's index, from 0", "N"},
       {"checkpoint", true, false, "prove against this checkpoint instead of the latest", "FILE"},
       {"key", true, false, "the site's public key: verify the signature and the proof",
        "SITE.pub"},
       {"json", false, false, "print the proof as JSON"}}};
  Context ctx(kSpec, argc, argv);
  if (!ctx.Parse()) return ctx.exit_code();
  const Args& a = ctx.args();
  if (!a.Has("log") || !a.Has("entry")) return ctx.UsageError("--log and --entry are required");
  uint64_t index = 0;
  if (!absl::SimpleAtoi(a.Get("entry"), &index)) {
    return ctx.UsageError("--entry must be an entry number (0 is the first)");
  }
  const std::string log = a.Get("log");
  std::optional<crypto::PublicIdentity> key;
  if (a.Has("key")) {
    absl::StatusOr<crypto::PublicIdentity> k = LoadSiteKey(ctx);
    if (!k.ok()) return ctx.Fail(k.status());
    key = *k;
  }
  absl::StatusOr<Checkpoint> cp = TargetCheckpoint(ctx, log);
  if (!cp.ok()) return ctx.Fail(cp.status());
  if (index >= cp->size) {
    return ctx.Fail(absl::InvalidArgumentError(absl::StrCat(
        "entry ", index, " is not in the checkpoint's tree of ", cp->size, " entries")));
  }
  absl::StatusOr<verifier::InclusionProof> p = verifier::ProveInclusion(log, index, cp->size);
  if (!p.ok()) return ctx.Fail(p.status());
  if (p->root != cp->root) {
    return ctx.Fail(absl::DataLossError(
        absl::StrCat("the log's first ", cp->size,
                     " entries do not give the checkpoint's root (run 'capsule audit verify')")));
  }
  // The entry itself, so the reader can see what is proven and hash it.
  std::optional<verifier::AuditRecord> record;
  absl::Status s =
      verifier::ForEachAuditRecord(log, [&](uint64_t i, const verifier::AuditRecord& r) {
        if (i < index) return true;
        record = r;
        return false;
      });
  if (!s.ok()) return ctx.Fail(s);
  if (!record) return ctx.Fail(absl::DataLossError("the log shrank while proving"));
  const std::vector<uint8_t> bytes = verifier::EncodeAuditEntry(*record);
  if (crypto::MerkleLeafHash(bytes) != p->leaf) {
    return ctx.Fail(absl::DataLossError("the log changed while proving"));
  }
  std::string verdict = "not verified: pass --key SITE.pub to check the signature and the proof";
  bool verified = false;
  if (key) {
    absl::Status sig = cp->Verify(*key);
    if (!sig.ok()) return ctx.Fail(sig);
    if (!crypto::VerifyInclusion(p->index, p->size, p->leaf, p->path, cp->root)) {
      return ctx.Fail(absl::DataLossError("the inclusion proof does not verify"));
    }
    verified = true;
    verdict = absl::StrCat("verified: entry ", index, " is in the tree of size ", cp->size,
                           " signed by ", key->fingerprint().ToString());
  }
  if (ctx.json()) {
    capsule::JsonWriter w;
    w.BeginObject()
        .Key("entry").Number(p->index)
        .Key("size").Number(p->size)
        .Key("leaf").String(Hex(p->leaf))
        .Key("root").String(Hex(p->root))
        .Key("path");
    WritePathJson(&w, p->path);
    w.Key("entryBytes").String(Hex(bytes)).Key("record");
    verifier::WriteAuditRecordJson(&w, index, *record);
    w.Key("checkpoint");
    WriteCheckpointJson(&w, *cp);
    w.Key("verified").Bool(verified).EndObject();
    std::printf("%s\n", w.text().c_str());
    return kExitOk;
  }
  std::printf("inclusion proof (RFC 9162 section 2.1.3)\n");
  std::printf("entry %llu\nsize %llu\nleaf %s\nroot %s\n",
              static_cast<unsigned long long>(p->index), static_cast<unsigned long long>(p->size),
              Hex(p->leaf).c_str(), Hex(p->root).c_str());
  PrintPath(p->path);
  std::printf("entry-bytes %s\n", Hex(bytes).c_str());
  std::printf("record %s\n", TerminalSafe(verifier::AuditRecordToJson(index, *record)).c_str());
  std::printf("checkpoint\n%s", cp->Encode().c_str());
  std::printf("%s\n", verdict.c_str());
  return kExitOk;
}

// --- consistency -----------------------------------------------------------------------------

int RunConsistency(int argc, char** argv) {
  static const CommandSpec kSpec{
      "audit consistency",
      "--log PATH --old CHECKPOINT [--key SITE.pub] [--json]",
      "Print an RFC 9162 consistency proof that the log's latest checkpoint extends an older\n"
      "one: the log was only appended to since.",
      "With --key both checkpoints' signatures and the proof are also checked here. To check\n"
      "it yourself, apply RFC 9162 section 2.1.4.2 to the old and new sizes and roots and the\n"
      "path, and check the new checkpoint's signature (spec/AUDIT.md).",
      {},
      {{"log", true, false, "the audit log", "PATH"},
       {"old", true, false, "the older checkpoint (e.g. kept from 'audit verify')", "CHECKPOINT"},
       {"key", true, false, "the site's public key: verify signatures and the proof", "SITE.pub"},
       {"json", false, false, "print the proof as JSON"}}};
  Context ctx(kSpec, argc, argv);
  if (!ctx.Parse()) return ctx.exit_code();
  const Args& a = ctx.args();
  if (!a.Has("log") || !a.Has("old")) return ctx.UsageError("--log and --old are required");
  const std::string log = a.Get("log");
  std::optional<crypto::PublicIdentity> key;
  if (a.Has("key")) {
    absl::StatusOr<crypto::PublicIdentity> k = LoadSiteKey(ctx);
    if (!k.ok()) return ctx.Fail(k.status());
    key = *k;
  }
  absl::StatusOr<Checkpoint> old_cp = LoadCheckpointFile("old", a.Get("old"));
  if (!old_cp.ok()) return ctx.Fail(old_cp.status());
  absl::StatusOr<Checkpoint> new_cp = verifier::ReadLatestCheckpoint(log);
  if (!new_cp.ok()) return ctx.Fail(new_cp.status());
  if (old_cp->size > new_cp->size) {
    return ctx.Fail(absl::DataLossError(absl::StrCat("the log's latest checkpoint (size ",
                                                     new_cp->size, ") is older than --old (size ",
                                                     old_cp->size, "): the log was rolled back")));
  }
  absl::StatusOr<verifier::ConsistencyProof> p =
      verifier::ProveConsistency(log, old_cp->size, new_cp->size);
  if (!p.ok()) return ctx.Fail(p.status());
  if (p->old_root != old_cp->root) {
    return ctx.Fail(absl::DataLossError(
        absl::StrCat("the log is not consistent with --old: its first ", old_cp->size,
                     " entries are not the ones that checkpoint covers")));
  }
  if (p->new_root != new_cp->root) {
    return ctx.Fail(absl::DataLossError(
        "the log does not match its latest checkpoint (run 'capsule audit verify')"));
  }
  std::string verdict = "not verified: pass --key SITE.pub to check the signatures and the proof";
  bool verified = false;
  if (key) {
    for (const Checkpoint* c : {&*old_cp, &*new_cp}) {
      absl::Status sig = c->Verify(*key);
      if (!sig.ok()) {
        return ctx.Fail(absl::DataLossError(absl::StrCat("the checkpoint of size ", c->size,
                                                         " does not verify under the site key")));
      }
    }
    if (!crypto::VerifyConsistency(p->old_size, p->new_size, old_cp->root, new_cp->root, p->path)) {
      return ctx.Fail(absl::DataLossError("the consistency proof does not verify"));
    }
    verified = true;
    verdict =
        absl::StrCat("verified: the tree of size ", new_cp->size, " extends the tree of size ",
                     old_cp->size, ", both signed by ", key->fingerprint().ToString());
  }
  if (ctx.json()) {
    capsule::JsonWriter w;
    w.BeginObject()
        .Key("oldSize").Number(p->old_size)
        .Key("oldRoot").String(Hex(p->old_root))
        .Key("newSize").Number(p->new_size)
        .Key("newRoot").String(Hex(p->new_root))
        .Key("path");
    WritePathJson(&w, p->path);
    w.Key("checkpoint");
    WriteCheckpointJson(&w, *new_cp);
    w.Key("verified").Bool(verified).EndObject();
    std::printf("%s\n", w.text().c_str());
    return kExitOk;
  }
  std::printf("consistency proof (RFC 9162 section 2.1.4)\n");
  std::printf("old-size %llu\nold-root %s\nnew-size %llu\nnew-root %s\n",
              static_cast<unsigned long long>(p->old_size), Hex(p->old_root).c_str(),
              static_cast<unsigned long long>(p->new_size), Hex(p->new_root).c_str());
  PrintPath(p->path);
  std::printf("checkpoint\n%s", new_cp->Encode().c_str());
  std::printf("%s\n", verdict.c_str());
  return kExitOk;
}

// --- export ----------------------------------------------------------------------------------

int RunExport(int argc, char** argv) {
  static const CommandSpec kSpec{
      "audit export",
      "--log PATH --format jsonl|csv",
      "Write every entry of an audit log to stdout, as JSON lines or CSV.",
      "This only reads the log; 'capsule audit verify' checks it. JSON lines keep every\n"
      "field (invalid UTF-8 becomes U+FFFD). CSV is for spreadsheets: lists are JSON arrays,\n"
      "and a cell starting with = + - @ gets a leading apostrophe so it is not run as a formula.",
      {},
      {{"log", true, false, "the audit log", "PATH"},
       {"format", true, false, "jsonl or csv", "FORMAT"}}};
  Context ctx(kSpec, argc, argv);
  if (!ctx.Parse()) return ctx.exit_code();
  const Args& a = ctx.args();
  if (!a.Has("log")) return ctx.UsageError("--log is required");
  const std::string format = a.Get("format");
  if (format != "jsonl" && format != "csv") return ctx.UsageError("--format must be jsonl or csv");
  capsule::FdWriter out(STDOUT_FILENO);
  absl::Status write_status;
  auto emit = [&out, &write_status](const std::string& line) {
    if (!write_status.ok()) return false;
    write_status =
        out.Append(absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(line.data()), line.size()));
    return write_status.ok();
  };
  if (format == "csv") emit(verifier::AuditCsvHeader() + "\r\n");
  absl::Status s = verifier::ForEachAuditRecord(
      a.Get("log"), [&](uint64_t index, const verifier::AuditRecord& r) {
        return format == "csv" ? emit(verifier::AuditRecordToCsv(index, r) + "\r\n")
                               : emit(verifier::AuditRecordToJson(index, r) + "\n");
      });
  if (write_status.ok()) write_status = out.Flush();
  if (!s.ok()) return ctx.Fail(s, "run 'capsule audit verify' to find what is wrong");
  if (!write_status.ok()) return ctx.Fail(write_status);
  return kExitOk;
}

// --- report ----------------------------------------------------------------------------------

// The witnessed checkpoint of `key` that the folders hold (<dir>/<fingerprint>.checkpoint, as
// `audit verify --witness-dir` reads it), the largest when several do; nullopt when none does.
absl::StatusOr<std::optional<std::pair<Checkpoint, std::string>>> FindWitnessed(
    const std::vector<std::string>& dirs, const crypto::PublicIdentity& key) {
  std::optional<std::pair<Checkpoint, std::string>> best;
  for (const std::string& dir : dirs) {
    const std::string path = absl::StrCat(dir, "/", key.fingerprint().ToString(), ".checkpoint");
    if (access(path.c_str(), F_OK) != 0) continue;
    absl::StatusOr<Checkpoint> c = LoadCheckpointFile("witness-dir", path);
    if (!c.ok()) return c.status();
    if (!c->Verify(key).ok()) {
      return absl::DataLossError(absl::StrCat("the witnessed checkpoint ", path,
                                              " does not verify under the site key"));
    }
    if (!best || c->size > best->first.size) best = std::make_pair(*c, path);
  }
  return best;
}

int RunReport(int argc, char** argv) {
  static const CommandSpec kSpec{
      "audit report",
      "(--site SITE.json | --log PATH --key SITE.pub)... -o REPORT.html [--witness-dir DIR]...\n"
      "       [--every-signature] [--force] [--json]",
      "Write one self-contained HTML page for an auditor over one or more sites' audit logs.",
      "Each log is verified first, as 'capsule audit verify' does (against a witnessed\n"
      "checkpoint when a --witness-dir holds one, and, with several --site, when another of\n"
      "those sites witnesses it), except that only the latest checkpoint's signature is checked\n"
      "unless --every-signature: every root still is, and the latest signature vouches for every\n"
      "entry through the tree. A log that does not verify writes no report (exit 4). The page\n"
      "shows the verdict, decisions over time, denials by reason, each capsule's history and\n"
      "uses against maxOpens (read from the site's store), what each requester opened for which\n"
      "purpose, the journey of each capsule across the sites given, and every entry in a table\n"
      "to filter, sort and prove. Its figures are counts over the entries 'capsule audit show\n"
      "--json' prints. It loads nothing from anywhere and runs only its own script.",
      {},
      {{"site", true, true, "a site's configuration: its log, key and store", "SITE.json"},
       {"log", true, true, "an audit log (give --key for each, in the same order)", "PATH"},
       {"key", true, true, "the public key of the site whose --log comes at the same place",
        "SITE.pub"},
       {"witness-dir", true, true, "a folder of witnessed checkpoints (<fingerprint>.checkpoint)",
        "DIR"},
       {"output", true, false, "the page to write (-o)", "REPORT.html"},
       {"every-signature", false, false,
        "verify every checkpoint's signature, not only the latest (slower)"},
       {"force", false, false, "replace REPORT.html if it exists"},
       {"json", false, false, "print a JSON summary of what was written"}}};
  Context ctx(kSpec, argc, argv);
  if (!ctx.Parse()) return ctx.exit_code();
  const Args& a = ctx.args();
  const std::vector<std::string> logs = a.Has("log") ? a.GetAll("log") : std::vector<std::string>{};
  const std::vector<std::string> keys = a.Has("key") ? a.GetAll("key") : std::vector<std::string>{};
  if (logs.size() != keys.size()) return ctx.UsageError("give one --key for each --log");
  if (logs.empty() && !a.Has("site")) return ctx.UsageError("give --site or --log with --key");
  if (!a.Has("output")) return ctx.UsageError("-o REPORT.html is required");
  std::vector<std::string> witness_dirs =
      a.Has("witness-dir") ? a.GetAll("witness-dir") : std::vector<std::string>{};

  std::vector<verifier::ReportLogInput> inputs;
  if (a.Has("site")) {
    for (const std::string& path : a.GetAll("site")) {
      absl::StatusOr<site::SiteConfig> site = site::LoadSiteConfig(path);
      if (!site.ok()) return ctx.Fail(site.status());
      // The site key's public half: from the key, or, for an auditor who may not read it, from
      // the public key file kept beside it.
      std::string pub;
      if (absl::EndsWith(site->identity, ".key")) {
        pub = site->identity.substr(0, site->identity.size() - 4) + ".pub";
        if (access(pub.c_str(), R_OK) != 0) pub.clear();
      }
      absl::StatusOr<crypto::PublicIdentity> key = absl::UnknownError("");
      absl::StatusOr<crypto::Identity> id = capsule::LoadIdentity(site->identity);
      if (id.ok()) {
        key = id->public_identity();
      } else if (!pub.empty()) {
        key = capsule::LoadPublicIdentity(pub);
      } else {
        return ctx.Fail(id.status(), "an auditor without the site key gives --log and --key");
      }
      if (!key.ok()) return ctx.Fail(key.status());
      if (id.ok() && !pub.empty()) {
        // The proof command names that file: it must be this site's key.
        absl::StatusOr<crypto::PublicIdentity> beside = capsule::LoadPublicIdentity(pub);
        if (!beside.ok() || !(*beside == *key)) pub.clear();
      }
      verifier::ReportLogInput in{site->state + "/audit.log", pub, *key, site->store,
                                  std::nullopt, ""};
      inputs.push_back(std::move(in));
      // A site keeps its peers' checkpoints: a witness for the other logs of this report.
      witness_dirs.push_back(site->state + "/witness");
    }
  }
  for (size_t i = 0; i < logs.size(); ++i) {
    absl::StatusOr<crypto::PublicIdentity> key = capsule::LoadPublicIdentity(keys[i]);
    if (!key.ok()) return ctx.Fail(key.status());
    inputs.push_back({logs[i], keys[i], *key, "", std::nullopt, ""});
  }
  for (verifier::ReportLogInput& in : inputs) {
    absl::StatusOr<std::optional<std::pair<Checkpoint, std::string>>> w =
        FindWitnessed(witness_dirs, in.key);
    if (!w.ok()) return ctx.Fail(w.status());
    if (*w) {
      in.witnessed = (*w)->first;
      in.witness_source = (*w)->second;
    }
  }
  absl::StatusOr<verifier::AuditReport> report =
      verifier::BuildAuditReport(std::move(inputs), static_cast<int64_t>(std::time(nullptr)),
                                 a.Has("every-signature"));
  if (!report.ok()) return ctx.Fail(report.status(), "run 'capsule audit verify' on that log");
  const std::string output = a.Get("output");
  absl::StatusOr<std::unique_ptr<capsule::AtomicFileWriter>> out =
      capsule::AtomicFileWriter::Create(output, 0644, a.Has("force"));
  if (!out.ok()) {
    return ctx.Fail(out.status(), absl::IsAlreadyExists(out.status())
                                      ? "pass --force to replace it"
                                      : "");
  }
  absl::Status s = verifier::WriteAuditReportHtml(*report, out->get());
  if (s.ok()) s = (*out)->Commit();
  if (!s.ok()) return ctx.Fail(s);
  if (ctx.json()) {
    capsule::JsonWriter w;
    w.BeginObject().Key("output").String(output).Key("entries").Number(report->total);
    w.Key("sites").BeginArray();
    for (const verifier::ReportSite& site : report->sites) {
      w.BeginObject()
          .Key("site").String(site.name)
          .Key("log").String(site.log_path)
          .Key("entries").Number(site.entries)
          .Key("checkpoints").Number(site.checkpoints)
          .Key("witnessedSize").OptionalNumber(site.witnessed_size)
          .Key("leftOut").Number(site.left_out)
          .EndObject();
    }
    w.EndArray().EndObject();
    std::printf("%s\n", w.text().c_str());
    return kExitOk;
  }
  std::printf("wrote %s: %llu entries from %zu verified log%s\n", TerminalSafe(output).c_str(),
              static_cast<unsigned long long>(report->total), report->sites.size(),
              report->sites.size() == 1 ? "" : "s");
  return kExitOk;
}

}  // namespace

int RunAudit(int argc, char** argv) {
  struct Sub {
    const char* name;
    int (*run)(int, char**);
  };
  static constexpr Sub kSubs[] = {{"show", RunShow},
                                  {"verify", RunVerifyLog},
                                  {"prove", RunProve},
                                  {"consistency", RunConsistency},
                                  {"export", RunExport},
                                  {"report", RunReport}};
  if (argc < 1) {
    PrintAuditUsage(stderr);
    return kExitUsage;
  }
  const std::string sub = argv[0];
  if (sub == "-h" || sub == "--help" || sub == "help") {
    PrintAuditUsage(stdout);
    return kExitOk;
  }
  for (const Sub& s : kSubs) {
    if (sub == s.name) return s.run(argc - 1, argv + 1);
  }
  std::fprintf(stderr, "capsule audit: unknown subcommand '%s'\n", TerminalSafe(sub).c_str());
  PrintAuditUsage(stderr);
  return kExitUsage;
}

}  // namespace bunker::cli
