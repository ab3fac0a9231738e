// capsuled: a site's transfer daemon (spec/TRANSFER.md). Thin: flags, keys, then
// transfer::RunDaemon; transfer events also go to the site's audit log.
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>

#include <clocale>
#include <cstdio>
#include <ctime>

#include "absl/strings/str_cat.h"
#include "capsule/key_files.h"
#include "cli/context.h"
#include "crypto/secret.h"
#include "site/admission.h"
#include "site/service.h"
#include "transfer/daemon.h"
#include "verifier/audit_log.h"
#include "site/site_config.h"
#include "verifier/verifier.h"

int main(int argc, char** argv) {
  using namespace bunker;
  struct rlimit no_core = {0, 0};
  ::setrlimit(RLIMIT_CORE, &no_core);
  // Room for the connections the server admits (transfer::RpcServer caps them).
  struct rlimit files;
  if (::getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
    files.rlim_cur = files.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &files);
  }
  if (std::setlocale(LC_CTYPE, "C.UTF-8") == nullptr) std::setlocale(LC_CTYPE, "");
  crypto::EnsureInitialized();
  static const cli::CommandSpec kSpec{
      "",
      "--site SITE.json",
      "Run a site's transfer daemon: receive capsules from the site's peers over mutually\n"
      "authenticated TLS, check every chunk against the capsule's signed chunk table without\n"
      "any key, resume interrupted transfers, and serve stored capsules to peers that fetch\n"
      "them.",
      "The site file (spec/POLICY.md \"Site configuration\") gives \"listen\" (host:port),\n"
      "\"peers\" (public keys of the sites allowed to connect), \"store\" (received capsules),\n"
      "\"identity\", \"trust\" (issuers whose capsules are accepted) and \"state\" (the audit\n"
      "log). Logs one line per event on stderr; stops cleanly on SIGTERM or SIGINT.\n"
      "With \"socket\", it is also the site's verifier service (spec/VERIFIER.md): local users'\n"
      "capsule open/ls/cat/policy explain --site ask it over that Unix socket, and only the\n"
      "daemon's user reads the site key and the state folder. A site may run the service\n"
      "alone (no \"listen\").",
      {},
      {{"site", true, false, "the site configuration", "FILE"}},
      "capsuled"};
  cli::Context ctx(kSpec, argc - 1, argv + 1);
  if (!ctx.Parse()) return ctx.exit_code();
  if (!ctx.args().Has("site")) return ctx.UsageError("--site SITE.json is required");
  absl::StatusOr<site::SiteConfig> site = site::LoadSiteConfig(ctx.args().Get("site"));
  if (!site.ok()) return ctx.Fail(site.status());
  const bool transfers = !site->listen.empty();
  if (!transfers && site->socket.empty()) {
    return ctx.Fail(absl::InvalidArgumentError(absl::StrCat(
        site->path, ": a daemon needs \"socket\" (the verifier service), or \"listen\", "
                    "\"peers\" and \"store\" (transfers), or both")));
  }
  if (transfers && (site->peers.empty() || site->store.empty())) {
    return ctx.Fail(absl::InvalidArgumentError(absl::StrCat(
        site->path, ": a transfer daemon needs \"listen\", \"peers\" and \"store\"")));
  }
  absl::StatusOr<crypto::Identity> identity = capsule::LoadIdentity(site->identity);
  if (!identity.ok()) return ctx.Fail(identity.status());
  absl::StatusOr<std::vector<crypto::PublicIdentity>> peers = capsule::LoadTrust(site->peers);
  if (!peers.ok()) return ctx.Fail(peers.status());
  absl::StatusOr<std::vector<crypto::PublicIdentity>> trusted = capsule::LoadTrust(site->trust);
  if (!trusted.ok()) return ctx.Fail(trusted.status());

  transfer::DaemonOptions options;
  options.site = site->site;
  options.listen = site->listen;
  options.store = site->store;
  options.admit = site::AdmissionFor(*site);
  options.identity = &*identity;
  options.peers = *peers;
  options.trusted = *trusted;
  options.log = [](const std::string& line) {
    std::fprintf(stderr, "capsuled: %s\n", cli::TerminalSafe(line).c_str());
    std::fflush(stderr);
  };
  options.on_event = [&](const transfer::DepotEvent& e) {
    if (e.kind == "offer") return;  // the outcome (received/refused) is what is recorded
    verifier::AuditRecord rec;
    rec.time = static_cast<int64_t>(std::time(nullptr));
    rec.event = e.kind;
    rec.decision = e.kind == "refused" ? "deny" : "permit";
    rec.capsule_id = e.capsule_id;
    rec.issuer = e.issuer;
    rec.site = site->site;
    rec.requester = e.peer;
    rec.reasons = {e.detail.substr(0, 1000)};
    absl::Status s = verifier::RecordSiteEvent(site->Facts(), *identity, rec);
    if (!s.ok()) options.log(absl::StrCat("cannot write the audit log: ", s.message()));
  };
  // The signals that stop the daemon are blocked in every thread (the service's threads inherit
  // this mask) and taken by the transfer loop or by sigwait below.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  // The verifier service for the site's local users (spec/VERIFIER.md).
  std::unique_ptr<site::VerifierService> verifier_service;
  if (!site->socket.empty()) {
    absl::StatusOr<std::map<uid_t, crypto::PublicIdentity>> users = site::LoadUsers(*site);
    if (!users.ok()) return ctx.Fail(users.status());
    site::ServiceOptions service;
    service.site = &*site;
    service.identity = &*identity;
    service.trusted = *trusted;
    service.users = std::move(*users);
    service.log = options.log;
    absl::StatusOr<std::unique_ptr<site::VerifierService>> started =
        site::VerifierService::Start(std::move(service));
    if (!started.ok()) return ctx.Fail(started.status());
    verifier_service = std::move(*started);
  }
  if (!transfers) {
    int signo = 0;
    sigwait(&stop_signals, &signo);
    options.log(absl::StrCat("stopping on signal ", signo));
    verifier_service.reset();
    options.log("stopped");
    return cli::kExitOk;
  }
  absl::Status s = transfer::RunDaemon(options);
  verifier_service.reset();
  if (!s.ok()) return ctx.Fail(s);
  return cli::kExitOk;
}
