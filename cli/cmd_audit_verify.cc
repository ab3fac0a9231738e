// capsule audit verify: check every entry, the Merkle tree and every signed checkpoint of a log
// (spec/AUDIT.md); the checking is verifier/audit_log.h's.
#include "cli/audit_common.h"

#include <cstdio>
#include <optional>
#include <string>

#include "absl/strings/str_cat.h"
#include "capsule/io.h"
#include "capsule/json_writer.h"
#include "crypto/merkle.h"
#include "verifier/audit_log.h"

namespace bunker::cli::audit {

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
          .Key("exitStatus").Number(ctx.ExitStatusFor(r.status()))
          .EndObject();
      ctx.PrintJson(w.text());
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
    ctx.PrintJson(w.text());
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
  if (signed_tree) PrintCheckpoint(r->checkpoint);
  return kExitOk;
}

}  // namespace bunker::cli::audit
