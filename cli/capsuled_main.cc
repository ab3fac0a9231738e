// capsuled: a site's transfer daemon (spec/TRANSFER.md). Thin: flags, keys, then
// transfer::RunDaemon; transfer events also go to the site's audit log.
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <unistd.h>

#include <clocale>
#include <cstdio>
#include <ctime>
#include <string_view>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "capsule/key_files.h"
#include "capsule/s3_client.h"
#include "cli/context.h"
#include "cli/daemon_log.h"
#include "cli/version.h"
#include "crypto/secret.h"
#include "site/admission.h"
#include "site/receipts.h"
#include "site/service.h"
#include "transfer/chunk_memory.h"
#include "transfer/daemon.h"
#include "site/site_config.h"
#include "site/state_lock.h"
#include "site/site_store.h"
#include "site/transfer_events.h"
#include "site/witnessing.h"
#include "transfer/witness.h"

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
  // The daemon's malloc policy, before any thread starts (a site that runs only the verifier
  // service never reaches transfer::RunDaemon, which sets it too).
  transfer::KeepChunkBuffers();
  if (argc == 2 && std::string_view(argv[1]) == "--version") {
    std::printf("%s\n", cli::VersionLine("capsuled").c_str());
    return 0;
  }
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
      "alone (no \"listen\").\n"
      "\"witnesses\" (\"KEY.pub@host:port\") are peers the daemon hands its audit checkpoints\n"
      "to every few seconds; it keeps theirs in <state>/witness. If a witness holds a newer\n"
      "checkpoint of this site than its log (the state folder was replaced or emptied), the\n"
      "daemon refuses to serve until an operator acts (spec/VERIFIER.md \"Witnesses\"):\n"
      "restore the newest backup of the state folder, or run once with\n"
      "--accept-witnessed-loss to record the loss in the log and let the witnesses start over.",
      {},
      {{"site", true, false, "the site configuration", "FILE"},
       {"accept-witnessed-loss", false, false,
        "record in the audit log that the checkpoints the witnesses hold are lost, tell them, "
        "and exit"},
       {"witness-interval-ms", true, false, "how often to hand checkpoints to witnesses "
        "(default 5000)", "MS"},
       {"mount-cache-mib", true, false, "the decrypted-chunk cache one uid's capsule mounts may "
        "hold together, in MiB (default: the site file's \"mountCacheMiB\", else 256); all "
        "uids' mounts hold at most four times it", "N"},
       {"version", false, false, "print the version and exit (alone)"}},
      "capsuled"};
  cli::Context ctx(kSpec, argc - 1, argv + 1);
  if (!ctx.Parse()) return ctx.exit_code();
  if (ctx.args().Has("version")) return ctx.UsageError("--version is given alone");
  if (!ctx.args().Has("site")) return ctx.UsageError("--site SITE.json is required");
  absl::StatusOr<site::SiteConfig> site = site::LoadSiteConfig(ctx.args().Get("site"));
  if (!site.ok()) return ctx.Fail(site.status());
  const bool transfers = !site->listen.empty();
  if (!transfers && site->socket.empty()) {
    return ctx.Fail(absl::InvalidArgumentError(absl::StrCat(
        site->path, ": a daemon needs \"listen\", \"peers\" and \"store\" (transfers), or "
                    "\"socket\" (the verifier service), or both")));
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

  absl::StatusOr<std::vector<transfer::WitnessPeer>> witnesses =
      site::WitnessPeersOf(*site, *peers);
  if (!witnesses.ok()) return ctx.Fail(witnesses.status());
  int64_t interval_ms = 5000;
  if (ctx.args().Has("witness-interval-ms") &&
      (!absl::SimpleAtoi(ctx.args().Get("witness-interval-ms"), &interval_ms) ||
       interval_ms < 10 || interval_ms > 3600000)) {
    return ctx.UsageError("--witness-interval-ms must be from 10 to 3600000");
  }

  // One mount's decrypted-chunk cache: the flag, else the site file, else 256 MiB.
  uint64_t mount_cache_mib = site->mount_cache_mib != 0 ? site->mount_cache_mib : 256;
  if (ctx.args().Has("mount-cache-mib") &&
      (!absl::SimpleAtoi(ctx.args().Get("mount-cache-mib"), &mount_cache_mib) ||
       mount_cache_mib < 1 || mount_cache_mib > site::kMaxMountCacheMiB)) {
    return ctx.UsageError(absl::StrCat("--mount-cache-mib must be from 1 to ",
                                       site::kMaxMountCacheMiB));
  }

  // Once the command line is checked, before anything of the site is touched (socket, staging
  // sweep, store, state).
  // First, that this process is the site's user: state written as another (root) would shut the
  // service out of it.
  absl::Status own = site::CheckRunsAsStateOwner(
      *site, "capsuled", absl::StrCat("capsuled --site ", site->path));
  if (!own.ok()) return ctx.Fail(own);
  absl::StatusOr<capsule::Fd> state_lock = site::LockSiteState(*site);
  if (!state_lock.ok()) return ctx.Fail(state_lock.status());

  // From here on events are logged by a thread of their own (a stalled reader of stderr never
  // holds the event loop or a service worker); an error is printed after what was logged.
  cli::DaemonLog daemon_log(STDERR_FILENO, "capsuled");
  auto fail = [&](const absl::Status& status, const std::string& hint = "") {
    daemon_log.Drain();
    return ctx.Fail(status, hint);
  };
  auto log = [&daemon_log](const std::string& line) { daemon_log.Line(line); };

  transfer::DaemonOptions options;
  options.site = site->site;
  options.listen = site->listen;
  // One S3 client, with the site file's "s3" settings, for the store and for the verifier
  // service's reads of store objects.
  std::shared_ptr<capsule::s3::Client> s3_client;
  if (capsule::s3::IsS3Url(site->store) && (transfers || !site->socket.empty())) {
    absl::StatusOr<std::shared_ptr<capsule::s3::Client>> made = site::SiteS3Client(*site);
    if (made.ok()) {
      s3_client = std::move(*made);
    } else if (transfers) {
      return fail(made.status());
    } else {
      // Without transfers the store is only read for the verifier service: it refuses such
      // requests ("does not read capsules from S3") and says why here.
      log(absl::StrCat("the verifier service reads no S3 objects: ", made.status().message()));
    }
  }
  absl::StatusOr<std::shared_ptr<capsule::Store>> store =
      transfers ? site::OpenSiteStore(*site, log, s3_client)
                : absl::StatusOr<std::shared_ptr<capsule::Store>>(nullptr);
  if (!store.ok()) return fail(store.status());
  // The S3 client holds what it needs: no secret stays in the environment children inherit,
  // nor in the environment block /proc/PID/environ shows while the daemon runs.
  capsule::s3::ScrubCredentialsFromEnvironment();
  options.store = *store;
  options.admit = site::AdmissionFor(*site);
  options.identity = &*identity;
  options.peers = *peers;
  options.trusted = *trusted;
  options.log = log;
  // Witnessing: the standing lives here, so that whatever else in this process decides (the
  // site's verifier service) can check it too.
  transfer::WitnessState witness_state;
  options.witness_dir = site::WitnessDir(*site);
  options.verify_checkpoint = site::VerifyCheckpoint();
  options.own_log = site::OwnLogOf(*site, identity->public_identity());
  options.witnesses = *witnesses;
  options.witness_state = &witness_state;
  options.witness_interval = interval_ms * kj::MILLISECONDS;
  // Receipts go on record before a capsule gets its name in the store (site/receipts.h).
  std::unique_ptr<site::Receipts> receipts;
  if (transfers && !ctx.args().Has("accept-witnessed-loss")) {
    absl::StatusOr<std::unique_ptr<site::Receipts>> loaded =
        site::Receipts::Load(*site, *identity, static_cast<int64_t>(std::time(nullptr)));
    if (!loaded.ok()) return fail(loaded.status());
    receipts = std::move(*loaded);
    options.record_receipt = [&receipts](const transfer::DepotEvent& e) {
      return receipts->Ensure(e, static_cast<int64_t>(std::time(nullptr)));
    };
  }
  // Outcomes go into the audit log off the event loop, identical ones counted
  // (site/transfer_events.h, spec/TRANSFER.md "Events on record").
  options.on_record = site::TransferEventOnRecord;
  options.record_events = [&](const std::vector<transfer::EventRecord>& records) {
    return site::RecordTransferEvents(*site, *identity, records,
                                      static_cast<int64_t>(std::time(nullptr)));
  };
  if (ctx.args().Has("accept-witnessed-loss")) {
    if (witnesses->empty()) {
      return fail(absl::FailedPreconditionError(
          absl::StrCat(site->path, ": the site names no \"witnesses\"")));
    }
    absl::Status s = transfer::AcceptWitnessedLoss(
        options, [&](const std::string& peer, const transfer::CheckpointFacts& lost) {
          options.log(absl::StrCat("recording the loss of the checkpoint of size ", lost.size,
                                   " held by ", peer));
          return site::RecordWitnessedLoss(*site, *identity, peer, lost,
                                           static_cast<int64_t>(std::time(nullptr)));
        });
    if (!s.ok()) return fail(s, "run it again once every witness is reachable");
    std::printf("every witness holds this site's newest checkpoint; start the daemon again\n");
    return cli::kExitOk;
  }
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
    if (!users.ok()) return fail(users.status());
    site::ServiceOptions service;
    service.site = &*site;
    service.identity = &*identity;
    service.trusted = *trusted;
    service.users = std::move(*users);
    service.log = options.log;
    service.mount_cache_bytes = mount_cache_mib << 20;
    if (s3_client != nullptr) {
      // Requests may name a capsule of the store (the service checks it is one), read with the
      // store's own client: the site file's "s3" settings.
      service.open_store_object = [s3_client](const capsule::s3::Location& at,
                                              std::function<bool()> cancelled)
          -> absl::StatusOr<std::unique_ptr<capsule::RandomAccessFile>> {
        return capsule::s3::OpenObject(s3_client, at, std::move(cancelled));
      };
    }
    options.log(absl::StrCat("mounts: decrypted-chunk cache up to ", mount_cache_mib,
                             " MiB per uid, ", 4 * mount_cache_mib, " MiB for all uids"));
    // A site that a witness caught behind serves nobody until an operator acts.
    const bool witnessed = !witnesses->empty() && transfers;
    service.healthy = [&witness_state, witnessed]() -> absl::Status {
      if (witnessed && !witness_state.FirstRoundDone()) {
        return absl::UnavailableError(
            "the site is checking its audit log with its witnesses; try again in a moment");
      }
      return witness_state.Check();
    };
    absl::StatusOr<std::unique_ptr<site::VerifierService>> started =
        site::VerifierService::Start(std::move(service));
    if (!started.ok()) return fail(started.status());
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
  if (!s.ok()) return fail(s);
  return cli::kExitOk;
}
