// capsule audit prove and consistency: inclusion and consistency proofs (spec/AUDIT.md
// "Proofs"); the proofs are verifier/audit_log.h's.
#include "cli/audit_common.h"

#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "capsule/io.h"
#include "capsule/json_writer.h"
#include "crypto/merkle.h"
#include "verifier/audit_log.h"

namespace bunker::cli::audit {

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
  // The signature first: only a checkpoint the site signed makes a log shorter than it a loss.
  if (key) {
    absl::Status sig = cp->Verify(*key);
    if (!sig.ok()) return ctx.Fail(sig);
  }
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
    ctx.PrintJson(w.text());
    return kExitOk;
  }
  std::printf("inclusion proof (RFC 9162 section 2.1.3)\n");
  std::printf("entry %llu\nsize %llu\nleaf %s\nroot %s\n",
              static_cast<unsigned long long>(p->index), static_cast<unsigned long long>(p->size),
              Hex(p->leaf).c_str(), Hex(p->root).c_str());
  PrintPath(p->path);
  std::printf("entry-bytes %s\n", Hex(bytes).c_str());
  std::printf("record %s\n", TerminalSafe(verifier::AuditRecordToJson(index, *record)).c_str());
  std::printf("checkpoint\n");
  PrintCheckpoint(*cp);
  std::printf("%s\n", verdict.c_str());
  return kExitOk;
}

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
  // Signatures first: a forged --old (or a log's forged checkpoint) is named as such, never
  // taken for the site's rollback or inconsistency.
  if (key) {
    for (const Checkpoint* c : {&*old_cp, &*new_cp}) {
      absl::Status sig = c->Verify(*key);
      if (!sig.ok()) {
        return ctx.Fail(absl::DataLossError(absl::StrCat("the checkpoint of size ", c->size,
                                                         " does not verify under the site key")));
      }
    }
  }
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
    ctx.PrintJson(w.text());
    return kExitOk;
  }
  std::printf("consistency proof (RFC 9162 section 2.1.4)\n");
  std::printf("old-size %llu\nold-root %s\nnew-size %llu\nnew-root %s\n",
              static_cast<unsigned long long>(p->old_size), Hex(p->old_root).c_str(),
              static_cast<unsigned long long>(p->new_size), Hex(p->new_root).c_str());
  PrintPath(p->path);
  std::printf("checkpoint\n");
  PrintCheckpoint(*new_cp);
  std::printf("%s\n", verdict.c_str());
  return kExitOk;
}

}  // namespace bunker::cli::audit
