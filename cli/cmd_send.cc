// capsule send: push a capsule to another site's daemon, resuming where it stopped.
#include <cstdio>
#include <ctime>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "capsule/key_files.h"
#include "cli/context.h"
#include "transfer/client.h"
#include "site/site_config.h"
#include "verifier/verifier.h"

namespace bunker::cli {

int RunSend(int argc, char** argv) {
  static const CommandSpec kSpec{
      "send",
      "CAPSULE --to HOST:PORT --site SITE.json [--peer PEER.pub] [--streams N] [--rate LIMIT] "
      "[--json]",
      "Push a capsule to another site's daemon over mutually authenticated TLS. Only the chunks\n"
      "the receiver lacks are sent: re-running the same command after a cut connection or a\n"
      "crash of either side resumes.",
      "The receiver checks the issuer, the capsule's policy (it must admit the receiving site)\n"
      "and every chunk against the signed chunk table; the capsule appears in its store only\n"
      "complete. --rate 50M limits to 50 MB/s (K, M, G: powers of 1000). --json ends with one\n"
      "summary line.",
      {"CAPSULE"},
      {{"to", true, false, "the receiving site's daemon", "HOST:PORT"},
       {"site", true, false, "this site's configuration (identity, peers)", "FILE"},
       {"peer", true, false, "the receiver's public key, when the site has several peers",
        "PUB"},
       {"streams", true, false, "concurrent chunk streams (default 4)", "N"},
       {"rate", true, false, "bandwidth limit in bytes per second", "LIMIT"},
       {"json", false, false, "print a JSON summary"}}};
  Context ctx(kSpec, argc, argv);
  if (!ctx.Parse()) return ctx.exit_code();
  const Args& a = ctx.args();
  if (!a.Has("to")) return ctx.UsageError("--to HOST:PORT is required");
  if (!a.Has("site")) return ctx.UsageError("--site SITE.json is required");
  int streams = 4;
  if (a.Has("streams") && (!absl::SimpleAtoi(a.Get("streams"), &streams) || streams < 1 ||
                           streams > 64)) {
    return ctx.UsageError("--streams must be a number from 1 to 64");
  }
  uint64_t rate = 0;
  if (a.Has("rate")) {
    absl::StatusOr<uint64_t> r = ParseRate(a.Get("rate"));
    if (!r.ok()) return ctx.UsageError(std::string(r.status().message()));
    rate = *r;
  }
  absl::StatusOr<site::SiteConfig> site = site::LoadSiteConfig(a.Get("site"));
  if (!site.ok()) return ctx.Fail(site.status());
  absl::StatusOr<crypto::Identity> identity = capsule::LoadIdentity(site->identity);
  if (!identity.ok()) return ctx.Fail(identity.status());
  absl::StatusOr<transfer::ClientOptions> options = TransferClientOptions(ctx, *site, &*identity);
  if (!options.ok()) return ctx.Fail(options.status());
  options->streams = streams;
  options->rate = rate;
  Progress progress("sending", 0, !ctx.json());
  options->progress = [&progress](const transfer::SendProgress& p) {
    progress.SetTotal(p.total_bytes);
    if (p.skipped_bytes > 0) {
      progress.SetLabel(absl::StrCat("sending (", HumanBytes(p.skipped_bytes), " resumed)"));
    }
    progress.Update(p.skipped_bytes + p.sent_bytes);
  };
  absl::StatusOr<transfer::SendSummary> s =
      transfer::SendCapsule(a.positionals()[0], a.Get("to"), *options);
  progress.Finish();
  if (!s.ok()) return ctx.Fail(s.status());
  // A site that sends (or forwards from its store) records it in its own audit log.
  verifier::AuditRecord rec;
  rec.time = static_cast<int64_t>(std::time(nullptr));
  rec.event = "sent";
  rec.decision = "permit";
  rec.capsule_id = s->capsule_id;
  rec.site = site->site;
  rec.requester = options->server ? options->server->fingerprint().ToString()
                                  : options->peers[0].fingerprint().ToString();
  rec.reasons = {absl::StrCat("to ", a.Get("to"), ": ", s->chunks_sent, " chunks sent, ",
                              s->chunks_skipped, " already there")};
  absl::Status logged = verifier::RecordSiteEvent(site->Facts(), *identity, rec);
  if (!logged.ok()) {
    std::fprintf(stderr, "capsule send: warning: not recorded in the audit log: %s\n",
                 TerminalSafe(std::string(logged.message())).c_str());
  }
  if (ctx.json()) {
    ctx.PrintJson(TransferSummaryJson(*s));
  } else {
    std::printf("sent capsule %s to %s: %llu of %llu chunks sent (%llu already there), %s in "
                "%.1f s\n",
                s->capsule_id.c_str(), a.Get("to").c_str(),
                static_cast<unsigned long long>(s->chunks_sent),
                static_cast<unsigned long long>(s->chunks_total),
                static_cast<unsigned long long>(s->chunks_skipped),
                HumanBytes(s->bytes_sent).c_str(), s->seconds);
  }
  return kExitOk;
}

}  // namespace bunker::cli
