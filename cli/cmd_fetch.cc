// capsule fetch: pull a capsule from another site's daemon into a file.
#include <cstdio>

#include "capsule/key_files.h"
#include "cli/context.h"
#include "transfer/client.h"
#include "site/admission.h"
#include "site/site_config.h"

namespace bunker::cli {

int RunFetch(int argc, char** argv) {
  static const CommandSpec kSpec{
      "fetch",
      "CAPSULE_ID --from HOST:PORT --site SITE.json -o FILE [--peer PEER.pub] [--json]",
      "Pull capsule CAPSULE_ID from another site's daemon into FILE, checking it as a receiving\n"
      "site does: a trusted issuer, a policy that admits this site, every chunk against the\n"
      "signed chunk table. FILE appears only complete; re-running resumes.",
      "",
      {"CAPSULE_ID"},
      {{"from", true, false, "the site's daemon", "HOST:PORT"},
       {"site", true, false, "this site's configuration (identity, peers, trust)", "FILE"},
       {"output", true, false, "the capsule file to create (-o)", "FILE"},
       {"peer", true, false, "the sender's public key, when the site has several peers", "PUB"},
       {"json", false, false, "print a JSON summary"}}};
  Context ctx(kSpec, argc, argv);
  if (!ctx.Parse()) return ctx.exit_code();
  const Args& a = ctx.args();
  if (!a.Has("from")) return ctx.UsageError("--from HOST:PORT is required");
  if (!a.Has("site")) return ctx.UsageError("--site SITE.json is required");
  if (!a.Has("output")) return ctx.UsageError("-o FILE is required");
  absl::StatusOr<site::SiteConfig> site = site::LoadSiteConfig(a.Get("site"));
  if (!site.ok()) return ctx.Fail(site.status());
  absl::StatusOr<crypto::Identity> identity = capsule::LoadIdentity(site->identity);
  if (!identity.ok()) return ctx.Fail(identity.status());
  absl::StatusOr<transfer::ClientOptions> options = TransferClientOptions(ctx, *site, &*identity);
  if (!options.ok()) return ctx.Fail(options.status());
  absl::StatusOr<std::vector<crypto::PublicIdentity>> trusted = capsule::LoadTrust(site->trust);
  if (!trusted.ok()) return ctx.Fail(trusted.status());
  Progress progress("receiving", 0, !ctx.json());
  options->progress = [&progress](const transfer::SendProgress& p) {
    progress.SetTotal(p.total_bytes);
    progress.Update(p.sent_bytes);
  };
  absl::StatusOr<transfer::SendSummary> s = transfer::FetchCapsule(
      a.positionals()[0], a.Get("from"), a.Get("output"), *options, *trusted, site::AdmissionFor(*site));
  progress.Finish();
  if (!s.ok()) return ctx.Fail(s.status());
  if (ctx.json()) {
    ctx.PrintJson(TransferSummaryJson(*s));
  } else {
    std::printf("fetched capsule %s into %s: %llu of %llu chunks received\n", s->capsule_id.c_str(),
                a.Get("output").c_str(), static_cast<unsigned long long>(s->chunks_sent),
                static_cast<unsigned long long>(s->chunks_total));
  }
  return kExitOk;
}

}  // namespace bunker::cli
