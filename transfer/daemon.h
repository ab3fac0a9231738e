// capsuled's service loop: listens on the site's address, serves the transfer protocol to
// authenticated peers (transfer/depot.h), logs one line per event, and stops cleanly on
// SIGTERM or SIGINT.
#ifndef BUNKER_TRANSFER_DAEMON_H_
#define BUNKER_TRANSFER_DAEMON_H_

#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "crypto/keys.h"
#include "transfer/depot.h"

namespace bunker::transfer {

struct DaemonOptions {
  std::string site;    // the site's name, for the log
  std::string listen;  // host:port
  std::string store;   // folder of received capsules
  std::function<absl::Status(const capsule::Manifest&)> admit;  // DepotOptions::admit
  const crypto::Identity* identity = nullptr;
  std::vector<crypto::PublicIdentity> peers;    // who may connect
  std::vector<crypto::PublicIdentity> trusted;  // whose capsules are accepted
  std::function<void(const std::string&)> log;  // one line per event
  std::function<void(const DepotEvent&)> on_event;  // e.g. the audit log
};

// Blocks the signals it stops on before anything else (call it before starting threads), then
// serves until SIGTERM or SIGINT. kInvalidArgument for a bad listen address, kUnavailable if it
// cannot listen.
absl::Status RunDaemon(const DaemonOptions& options);

}  // namespace bunker::transfer

#endif  // BUNKER_TRANSFER_DAEMON_H_
