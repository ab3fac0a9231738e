// Framing of the local verifier protocol (spec/verifier.capnp, spec/VERIFIER.md "Socket
// protocol") over a connected Unix stream socket: u32 little-endian length, then one Cap'n Proto
// message; descriptors as SCM_RIGHTS on a frame's first byte. Blocking I/O; the socket's
// SO_RCVTIMEO / SO_SNDTIMEO bound how long a peer can stall a call.
#ifndef BUNKER_SITE_LOCAL_WIRE_H_
#define BUNKER_SITE_LOCAL_WIRE_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "capnp/message.h"
#include "capnp/serialize.h"
#include "capsule/fd.h"

namespace bunker::site {

// The largest frame either side accepts (spec/verifier.capnp).
inline constexpr size_t kMaxFrame = 1 << 20;
// The most descriptors a frame may carry.
inline constexpr size_t kMaxFrameFds = 3;

// Sends `message` as one frame, with `fds` (at most kMaxFrameFds) attached.
absl::Status SendFrame(int sock, capnp::MessageBuilder& message, absl::Span<const int> fds = {});

// One received frame: a message reader over its bytes, and the descriptors that came with it.
struct Frame {
  std::unique_ptr<capnp::FlatArrayMessageReader> reader;
  std::vector<capsule::Fd> fds;
  kj::Array<capnp::word> words;  // owns what `reader` reads
};

// Receives one frame. kUnavailable when the peer closed the connection or timed out;
// kInvalidArgument for a length of 0 or over kMaxFrame, more than `max_fds` descriptors,
// truncated ancillary data, or bytes that are not a Cap'n Proto message. Reading is bounded by
// strict reader limits (traversal of 8x the frame, nesting 16).
absl::StatusOr<Frame> ReceiveFrame(int sock, size_t max_fds);

}  // namespace bunker::site

#endif  // BUNKER_SITE_LOCAL_WIRE_H_
