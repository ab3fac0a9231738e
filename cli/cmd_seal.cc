// capsule seal: encrypt and sign a dataset with its policy into one capsule.
#include <cstdio>
#include <ctime>

#include "absl/strings/str_cat.h"
#include "capsule/archive_builder.h"
#include "capsule/io.h"
#include "capsule/json_writer.h"
#include "capsule/writer.h"
#include "cli/context.h"
#include "verifier/policy.h"

namespace bunker::cli {

int RunSeal(int argc, char** argv) {
  static const CommandSpec kSpec{
      "seal",
      "INPUT -o OUT.capsule --sign ISSUER.key --to RECIPIENT.pub [--to ...] [options]",
      "Seal a directory or file (or, with --from-tar, a tar/pax/zip archive or - for stdin)\n"
      "into a signed, encrypted capsule that only the recipients can open.",
      "The capsule file appears only when sealing succeeded.",
      {"INPUT"},
      {{"output", true, false, "capsule file to create (-o)", "FILE"},
       {"sign", true, false, "issuer private key that signs the capsule", "KEY"},
       {"to", true, true, "recipient public key", "PUB"},
       {"policy", true, false, "access policy (JSON) to bind into the capsule", "FILE"},
       {"from-tar", false, false, "INPUT is an archive (tar, pax, zip; - for stdin)"},
       {"chunk-size", true, false, "plaintext bytes per chunk (default 1M; 4K..16M)", "SIZE"},
       {"suite", true, false, "aes-256-gcm (default) or chacha20-poly1305", "NAME"},
       {"threads", true, false, "worker threads (default: all cores)", "N"},
       {"json", false, false, "print the result as JSON"}}};
  Context ctx(kSpec, argc, argv);
  if (!ctx.Parse()) return ctx.exit_code();
  const Args& a = ctx.args();
  const std::string out_path = a.Get("output");
  if (out_path.empty()) return ctx.UsageError("-o OUT.capsule is required");
  if (!a.Has("sign")) return ctx.UsageError("--sign ISSUER.key is required");
  if (!a.Has("to")) return ctx.UsageError("at least one --to RECIPIENT.pub is required");

  capsule::WriterOptions opts;
  absl::StatusOr<crypto::Identity> issuer = ctx.LoadIdentity("sign");
  if (!issuer.ok()) return ctx.Fail(issuer.status());
  opts.issuer = &*issuer;
  absl::StatusOr<std::vector<crypto::PublicIdentity>> to = ctx.LoadPublicKeys("to");
  if (!to.ok()) return ctx.Fail(to.status());
  opts.recipients = std::move(*to);
  if (a.Has("policy")) {
    absl::StatusOr<std::string> policy =
        capsule::ReadSmallFile(a.Get("policy"), capsule::kMaxPolicySize);
    if (!policy.ok()) return ctx.Fail(policy.status());
    absl::StatusOr<verifier::Policy> parsed = verifier::ParsePolicy(*policy);
    if (!parsed.ok()) {
      return ctx.Fail(absl::InvalidArgumentError(
                          absl::StrCat(a.Get("policy"), ": ", parsed.status().message())),
                      "the policy language is described in spec/POLICY.md");
    }
    for (const std::string& w : verifier::PolicyWarnings(*parsed)) {
      std::fprintf(stderr, "capsule seal: warning: %s\n", TerminalSafe(w).c_str());
    }
    opts.policy = std::move(*policy);
  }
  if (a.Has("chunk-size")) {
    absl::StatusOr<uint64_t> size = ParseSize(a.Get("chunk-size"));
    if (!size.ok()) return ctx.UsageError(std::string(size.status().message()));
    if (*size < capsule::kMinChunkSize || *size > capsule::kMaxChunkSize) {
      return ctx.UsageError("--chunk-size must be between 4K and 16M");
    }
    opts.chunk_size = static_cast<uint32_t>(*size);
  }
  if (a.Has("suite")) {
    absl::StatusOr<crypto::Suite> suite = crypto::ParseSuite(a.Get("suite"));
    if (!suite.ok()) return ctx.UsageError(std::string(suite.status().message()));
    opts.suite = *suite;
  }
  absl::StatusOr<int> threads = ctx.Threads();
  if (!threads.ok()) return ctx.UsageError(std::string(threads.status().message()));
  opts.threads = *threads;
  opts.created_at = static_cast<int64_t>(std::time(nullptr));

  capsule::DatasetSource source;
  source.kind = a.Has("from-tar") ? capsule::DatasetSource::Kind::kArchive
                                  : capsule::DatasetSource::Kind::kPath;
  source.path = a.positionals()[0];
  Progress progress("sealing", capsule::EstimateContentBytes(source), !ctx.json());
  opts.progress = [&progress](uint64_t n) { progress.Update(n); };
  opts.cancelled = [] { return Interrupted(); };

  absl::StatusOr<std::unique_ptr<capsule::AtomicFileWriter>> out =
      capsule::AtomicFileWriter::Create(out_path, 0644);
  if (!out.ok()) return ctx.Fail(out.status(), "choose another output name");
  // With -o inside the input folder, the capsule being written is not part of the dataset.
  absl::StatusOr<std::pair<dev_t, ino_t>> out_id = (*out)->FileId();
  if (!out_id.ok()) return ctx.Fail(out_id.status());
  absl::StatusOr<std::unique_ptr<capsule::CapsuleWriter>> writer =
      capsule::CapsuleWriter::Create(std::move(opts), out->get());
  if (!writer.ok()) return ctx.Fail(writer.status());
  absl::StatusOr<capsule::BuildStats> stats =
      capsule::BuildPayload(source, writer->get(), *out_id);
  if (!stats.ok()) return ctx.Fail(stats.status());
  absl::StatusOr<capsule::Manifest> manifest = (*writer)->Finish(stats->entries());
  if (!manifest.ok()) return ctx.Fail(manifest.status());
  writer->reset();
  absl::Status s = (*out)->Commit();
  if (!s.ok()) return ctx.Fail(s);
  progress.Finish();

  if (ctx.json()) {
    capsule::JsonWriter w;
    w.BeginObject()
        .Key("capsule").String(manifest->IdHex())
        .Key("path").String(out_path)
        .Key("issuer").String(manifest->issuer.fingerprint().ToString())
        .Key("files").Number(stats->files)
        .Key("directories").Number(stats->directories)
        .Key("symlinks").Number(stats->symlinks)
        .Key("contentBytes").Number(stats->content_bytes)
        .Key("payloadBytes").Number(manifest->payload_size)
        .Key("chunks").Number(manifest->chunk_count)
        .EndObject();
    ctx.PrintJson(w.text());
  } else {
    std::printf("sealed %s: capsule %s, %llu files, %s in %llu chunks, %zu recipient(s)\n",
                TerminalSafe(out_path).c_str(), manifest->IdHex().c_str(),
                static_cast<unsigned long long>(stats->files),
                HumanBytes(stats->content_bytes).c_str(),
                static_cast<unsigned long long>(manifest->chunk_count),
                manifest->recipients.size());
  }
  return kExitOk;
}

}  // namespace bunker::cli
