// capsule verify: signature, trust and every chunk, without any private key.
#include <cstdio>

#include "capsule/json_writer.h"
#include "cli/context.h"

namespace bunker::cli {

int RunVerify(int argc, char** argv) {
  static const CommandSpec kSpec{
      "verify",
      "CAPSULE --trust ISSUER.pub|DIR [--trust ...] [--threads N] [--json]",
      "Check a capsule without opening it: its structure, the issuer's signature, that the\n"
      "issuer is trusted, and every chunk against the signed Merkle root (on all cores).",
      "Exit status 0 means the capsule is intact and from a trusted issuer.",
      {"CAPSULE"},
      {{"trust", true, true, "trusted issuer public key, or a directory of them", "PUB|DIR"},
       {"threads", true, false, "worker threads (default: all cores)", "N"},
       {"json", false, false, "print the result as JSON"}}};
  Context ctx(kSpec, argc, argv);
  if (!ctx.Parse()) return ctx.exit_code();
  absl::StatusOr<int> threads = ctx.Threads();
  if (!threads.ok()) return ctx.UsageError(std::string(threads.status().message()));
  const std::string path = ctx.args().positionals()[0];
  // With --json a refusal is a result too (as for audit verify): {"valid": false, "error"}.
  auto invalid = [&ctx](const absl::Status& s) {
    if (ctx.json() && !IsUsageStatus(s)) {
      capsule::JsonWriter w;
      w.BeginObject()
          .Key("valid").Bool(false)
          .Key("error").String(std::string(s.message()))
          .Key("exitStatus").Number(ctx.ExitStatusFor(s))
          .EndObject();
      ctx.PrintJson(w.text());
    }
    return ctx.Fail(s);
  };
  absl::StatusOr<OpenedCapsule> c = OpenCapsule(ctx, path, /*unlock=*/false);
  if (!c.ok()) return invalid(c.status());
  const capsule::Manifest& m = c->reader->manifest();
  Progress progress("verifying", c->reader->file_size(), !ctx.json());
  absl::Status s =
      c->reader->VerifyChunks(*threads, [&progress](uint64_t n) { progress.Update(n); },
                              [] { return Interrupted(); });
  progress.Finish();
  if (!s.ok()) return invalid(s);
  if (ctx.json()) {
    capsule::JsonWriter w;
    w.BeginObject()
        .Key("capsule").String(m.IdHex())
        .Key("valid").Bool(true)
        .Key("issuer").String(m.issuer.fingerprint().ToString())
        .Key("chunks").Number(m.chunk_count)
        .EndObject();
    ctx.PrintJson(w.text());
  } else {
    std::printf("%s: OK (capsule %s, issuer %s, %llu chunks verified)\n",
                TerminalSafe(path).c_str(),
                m.IdHex().c_str(), m.issuer.fingerprint().ToString().c_str(),
                static_cast<unsigned long long>(m.chunk_count));
  }
  return kExitOk;
}

}  // namespace bunker::cli
