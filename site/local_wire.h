// Framing of the local verifier protocol (spec/verifier.capnp, spec/VERIFIER.md "Socket
// protocol") over a connected Unix stream socket: u32 little-endian length, then one Cap'n Proto
// message; descriptors as SCM_RIGHTS on a frame's first byte. Blocking I/O; the socket's
// SO_RCVTIMEO / SO_SNDTIMEO bound how long a peer can stall a call.
#ifndef BUNKER_SITE_LOCAL_WIRE_H_
#define BUNKER_SITE_LOCAL_WIRE_H_

#include <chrono>
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

// When a frame must have arrived whole; kNoDeadline: only the socket's SO_RCVTIMEO bounds each
// wait.
using Deadline = std::chrono::steady_clock::time_point;
inline constexpr Deadline kNoDeadline = Deadline::max();

// One received frame: a message reader over its bytes, and the descriptors that came with it.
struct Frame {
  std::unique_ptr<capnp::FlatArrayMessageReader> reader;
  std::vector<capsule::Fd> fds;
  kj::Array<capnp::word> words;  // owns what `reader` reads
};

// Receives one frame. kUnavailable when the peer closed the connection or timed out;
// kInvalidArgument for a length of 0 or over kMaxFrame, more than `max_fds` descriptors,
// truncated ancillary data, or bytes that are not a Cap'n Proto message. Reading is bounded by
// strict reader limits (traversal of 8x the frame, nesting 16). kUnavailable too when the whole
// frame has not arrived by `deadline`, however the peer spaces its bytes.
absl::StatusOr<Frame> ReceiveFrame(int sock, size_t max_fds, Deadline deadline = kNoDeadline);

}  // namespace bunker::site

#endif  // BUNKER_SITE_LOCAL_WIRE_H_
