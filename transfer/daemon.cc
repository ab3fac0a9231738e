#include "transfer/daemon.h"

#include <kj/async-io.h>
#include <kj/async-unix.h>

#include <csignal>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "transfer/chunk_memory.h"
#include "transfer/errors.h"
#include "transfer/secure_channel.h"

namespace bunker::transfer {
namespace {

WitnessClientOptions ClientOptionsFor(const DaemonOptions& o) {
  WitnessClientOptions w;
  w.self = o.identity->public_identity();
  w.verify = o.verify_checkpoint;
  w.own = o.own_log;
  w.state = o.witness_state;
  return w;
}

// Rounds of exchanges with every witness, `interval` apart, forever. Logs a witness's outcome
// when it changes, and the moment our standing goes bad.
class WitnessLoop {
 public:
  WitnessLoop(const DaemonOptions& o, SecureChannel& channel, kj::Network& network,
              std::function<void(const std::string&)> log)
      : o_(o), channel_(channel), network_(network), log_(std::move(log)),
        client_(ClientOptionsFor(o)), last_(o.witnesses.size()) {}

  kj::Promise<void> Run() {
    auto round = kj::heapArrayBuilder<kj::Promise<void>>(o_.witnesses.size());
    for (size_t i = 0; i < o_.witnesses.size(); ++i) {
      round.add(WitnessAt(channel_, network_, o_.witnesses[i], client_)
                    .then([this, i](WitnessResult r) { Report(i, r); }));
    }
    return kj::joinPromises(round.finish()).then([this]() {
      o_.witness_state->MarkRoundDone();
      absl::Status standing = o_.witness_state->Check();
      if (!standing.ok() && !reported_bad_) {
        reported_bad_ = true;
        log_(absl::StrCat("witness: ", standing.message()));
      }
      return channel_.timer().afterDelay(o_.witness_interval).then([this]() { return Run(); });
    });
  }

 private:
  void Report(size_t i, const WitnessResult& r) {
    const WitnessPeer& w = o_.witnesses[i];
    std::string line = !r.status.ok()      ? std::string(r.status.message())
                       : r.held_size == 0 ? std::string("nothing to hand over yet (empty log)")
                                          : absl::StrCat("holds our checkpoint of size ",
                                                         r.held_size);
    if (line == last_[i]) return;
    last_[i] = line;
    log_(absl::StrCat("witness peer=", w.key.fingerprint().ToString(), " at ", w.address, ": ",
                      line));
  }

  const DaemonOptions& o_;
  SecureChannel& channel_;
  kj::Network& network_;
  std::function<void(const std::string&)> log_;
  WitnessClientOptions client_;
  std::vector<std::string> last_;
  bool reported_bad_ = false;
};

}  // namespace

absl::Status RunDaemon(const DaemonOptions& o) {
  if (o.identity == nullptr) return absl::InvalidArgumentError("no site identity");
  if (o.store == nullptr) return absl::InvalidArgumentError("no store");
  auto log = [&o](const std::string& line) {
    if (o.log) o.log(line);
  };
  // Signals become events of the loop; they must be blocked before any thread starts.
  kj::UnixEventPort::captureSignal(SIGTERM);
  kj::UnixEventPort::captureSignal(SIGINT);
  KeepChunkBuffers();
  try {
    kj::AsyncIoContext io = kj::setupAsyncIo();
    absl::StatusOr<kj::Own<SecureChannel>> channel =
        SecureChannel::Create(*o.identity, o.peers, io.provider->getTimer(), absl::Now());
    if (!channel.ok()) return channel.status();

    DepotOptions d;
    d.store = o.store;
    d.trusted = o.trusted;
    d.admit = o.admit;
    d.now = [] { return static_cast<int64_t>(absl::ToUnixSeconds(absl::Now())); };
    // Outlives the depot and the sessions (declared before them): what waits is written when
    // the daemon stops.
    std::unique_ptr<EventRecorder> recorder;
    if (o.record_events) {
      EventRecorderOptions r;
      r.write = o.record_events;
      r.now = d.now;
      r.log = log;
      recorder = std::make_unique<EventRecorder>(std::move(r));
    }
    d.on_event = [&](const DepotEvent& e) {
      log(absl::StrCat(e.kind, " capsule=", e.capsule_id.empty() ? "-" : e.capsule_id,
                       " peer=", e.peer, " ", e.detail));
      if (recorder != nullptr && (!o.on_record || o.on_record(e))) recorder->Add(e);
    };
    std::unique_ptr<WitnessStore> witness_store;
    if (!o.witness_dir.empty()) {
      absl::StatusOr<std::unique_ptr<WitnessStore>> ws =
          WitnessStore::Open(o.witness_dir, o.peers, o.verify_checkpoint);
      if (!ws.ok()) return ws.status();
      witness_store = *std::move(ws);
    }
    d.witness_store = witness_store.get();
    d.witness_state = o.witness_state;
    d.record_receipt = o.record_receipt;
    Depot depot(d);
    // Before serving: what a crash left is cleaned up (abandoned uploads), and every capsule in
    // the store has its receipt. A store that cannot be reached stops the start.
    absl::StatusOr<std::vector<std::string>> recovered = o.store->Recover();
    if (!recovered.ok()) return recovered.status();
    for (const std::string& line : *recovered) log(line);
    absl::Status receipts = depot.RecordStoredReceipts();
    if (!receipts.ok()) return receipts;
    RpcServer server(**channel, [&depot, &log](const crypto::PublicIdentity& peer,
                                               WriteMeter& connection) {
      log(absl::StrCat("connection peer=", peer.fingerprint().ToString()));
      return depot.ServeFor(peer, &connection);
    });
    server.set_on_refused([&log](const std::string& why) {
      // The description comes from the TLS layer: keep one line.
      std::string line = why;
      for (char& c : line) {
        if (c == '\n' || c == '\r') c = ' ';
      }
      log(absl::StrCat("refused connection: ", line.substr(0, 200)));
    });

    kj::Own<kj::NetworkAddress> address;
    try {
      address = io.provider->getNetwork().parseAddress(o.listen).wait(io.waitScope);
    } catch (const kj::Exception&) {
      return absl::InvalidArgumentError(
          absl::StrCat("bad listen address \"", o.listen, "\" (want host:port)"));
    }
    kj::Own<kj::ConnectionReceiver> listener;
    try {
      listener = address->listen();
    } catch (const kj::Exception& e) {
      return absl::UnavailableError(absl::StrCat("cannot listen on ", o.listen, ": ",
                                                 e.getDescription().cStr()));
    }
    std::string host = o.listen.substr(0, o.listen.rfind(':'));
    log(absl::StrCat("site ", o.site, " listening on ", host, ":", listener->getPort(),
                     " (", o.peers.size(), " peers, store ", o.store->Describe(), ")"));
    auto stop = io.unixEventPort.onSignal(SIGTERM)
                    .exclusiveJoin(io.unixEventPort.onSignal(SIGINT))
                    .then([&log](siginfo_t info) {
                      log(absl::StrCat("stopping on signal ", info.si_signo));
                    });
    kj::Promise<void> witnessing = kj::READY_NOW;
    if (o.witness_state != nullptr && !o.witnesses.empty()) {
      auto loop = kj::heap<WitnessLoop>(o, **channel, io.provider->getNetwork(), log);
      witnessing = loop->Run().attach(kj::mv(loop)).eagerlyEvaluate([&log](kj::Exception&& e) {
        log(absl::StrCat("witnessing stopped: ", e.getDescription().cStr()));
      });
    }
    server.Listen(*listener).exclusiveJoin(kj::mv(stop)).wait(io.waitScope);
    log("stopped");
    return absl::OkStatus();
  } catch (const kj::Exception& e) {
    return FromException(e);
  }
}

absl::Status AcceptWitnessedLoss(
    const DaemonOptions& o,
    std::function<absl::Status(const std::string& peer, const CheckpointFacts& lost)> record_loss) {
  if (o.identity == nullptr) return absl::InvalidArgumentError("no site identity");
  if (o.witnesses.empty()) {
    return absl::FailedPreconditionError("the site names no witnesses");
  }
  auto log = [&o](const std::string& line) {
    if (o.log) o.log(line);
  };
  try {
    kj::AsyncIoContext io = kj::setupAsyncIo();
    absl::StatusOr<kj::Own<SecureChannel>> channel =
        SecureChannel::Create(*o.identity, o.peers, io.provider->getTimer(), absl::Now());
    if (!channel.ok()) return channel.status();
    WitnessState state;  // this process's own; nothing else reads it
    WitnessClientOptions w = ClientOptionsFor(o);
    w.state = &state;
    w.accept_loss = std::move(record_loss);
    absl::Status first;
    // One witness at a time: each acknowledgement is recorded in our log before the next.
    for (const WitnessPeer& peer : o.witnesses) {
      WitnessResult r =
          WitnessAt(**channel, io.provider->getNetwork(), peer, w).wait(io.waitScope);
      const std::string who =
          absl::StrCat("witness peer=", peer.key.fingerprint().ToString(), " at ", peer.address);
      if (r.status.ok()) {
        log(absl::StrCat(who, ": ", r.loss_accepted ? "loss acknowledged; " : "",
                         "holds our checkpoint of size ", r.held_size));
      } else {
        log(absl::StrCat(who, ": ", r.status.message()));
        if (first.ok()) first = r.status;
      }
    }
    return first;
  } catch (const kj::Exception& e) {
    return FromException(e);
  }
}

}  // namespace bunker::transfer
