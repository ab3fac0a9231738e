// Errors across the wire (STYLE.md "transfer/"): the one place an absl::Status becomes a
// kj::Exception for the peer, and the one place a peer's kj::Exception becomes a Status again.
// Exception texts reach the peer, so callers pass only texts fit for it: no secrets, no local
// paths (PeerSafe() replaces the messages of local I/O failures).
#ifndef BUNKER_TRANSFER_ERRORS_H_
#define BUNKER_TRANSFER_ERRORS_H_

#include <kj/exception.h>

#include "absl/status/status.h"

namespace bunker::transfer {

// "bunker:<CODE>: <message>", so that the peer recovers the code.
kj::Exception ToException(const absl::Status& status);

// The inverse of ToException; a foreign exception (a cut connection, a protocol error) becomes
// kUnavailable naming what happened.
absl::Status FromException(const kj::Exception& exception);

// `status` with its message replaced by a generic one for codes whose messages come from local
// I/O and may name local paths (kInternal, kUnavailable, kResourceExhausted, kAborted).
absl::Status PeerSafe(const absl::Status& status);

}  // namespace bunker::transfer

#endif  // BUNKER_TRANSFER_ERRORS_H_
