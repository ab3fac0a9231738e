// Errors across the wire (STYLE.md "transfer/"): the one place an absl::Status becomes a
// kj::Exception for the peer, and the one place a peer's kj::Exception becomes a Status again.
// Exception texts reach the peer, so callers pass only texts fit for it: no secrets, no local
// paths (PeerSafe() replaces the messages of local I/O failures).
#ifndef BUNKER_TRANSFER_ERRORS_H_
#define BUNKER_TRANSFER_ERRORS_H_

#include <kj/exception.h>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace bunker::transfer {

// "bunker:<CODE>: <message>", so that the peer recovers the code.
kj::Exception ToException(const absl::Status& status);

// The inverse of ToException; a foreign exception (a cut connection, a protocol error) becomes
// kUnavailable naming what happened.
absl::Status FromException(const kj::Exception& exception);

// `status` as it may reach a peer: the message of a refusal (trust, policy, corrupt data) is
// kept unless it names a path ('/'); local failures get a generic text naming `who` had it
// ("the receiver", or "the sending site" serving a fetch), with the code of the refusals above
// kept and any other (I/O, out of range, internal) made kUnavailable: the peer can only retry.
absl::Status PeerSafe(const absl::Status& status, absl::string_view who = "the receiver");

}  // namespace bunker::transfer

#endif  // BUNKER_TRANSFER_ERRORS_H_
