// The local verifier protocol's messages (spec/verifier.capnp) as C++ values, and the one
// place that encodes and strictly decodes them. Both the service and the client use this file.
#ifndef BUNKER_SITE_PROTOCOL_H_
#define BUNKER_SITE_PROTOCOL_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "capnp/message.h"
#include "capsule/file_index.h"
#include "crypto/keys.h"
#include "site/local_wire.h"
#include "site/request.h"

namespace bunker::site {

inline constexpr uint32_t kProtocolVersion = 1;
inline constexpr size_t kChallengeSize = 32;

struct Hello {
  uint32_t version = kProtocolVersion;
  std::string site;
  std::vector<uint8_t> challenge;
};

// The request as it crosses the socket (the descriptors travel beside it).
struct WireRequest {
  Command command = Command::kOpen;
  std::optional<std::string> purpose;
  std::vector<std::string> only;
  std::string destination;
  std::string path;
  uint8_t fd_count = 0;
  uint32_t threads = 0;
  std::string mountpoint;    // mount
  uint64_t cache_bytes = 0;  // mount
  std::string capsule_url;   // an object of the site's S3 store instead of a capsule descriptor
};

// One live mount, as `capsule mounts` shows it.
struct MountInfo {
  std::string mountpoint;
  std::string capsule_id;
  uint32_t uid = 0;
  int64_t since = 0;
  int64_t not_after = 0;  // 0: never
  uint64_t files_opened = 0;
  uint64_t bytes_read = 0;
};

// A signed (or anonymous) request: body bytes exactly as signed.
struct SignedRequest {
  std::vector<uint8_t> body;
  std::string requester_pem;  // "" for none
  std::vector<uint8_t> signature;
};

// The final reply: a status and, when there is one, the outcome.
struct WireResult {
  absl::Status status;
  Outcome outcome;
  std::string site, region;
  std::vector<std::string> storage;
};

// What the requester signs: "bunker verifier request v1" || 0x00 || challenge || body.
std::vector<uint8_t> SignedMessage(absl::Span<const uint8_t> challenge,
                                   absl::Span<const uint8_t> body);

absl::Status SendHello(int sock, const Hello& hello);
absl::StatusOr<Hello> ReceiveHello(int sock);

std::vector<uint8_t> EncodeRequestBody(const WireRequest& request);
absl::StatusOr<WireRequest> DecodeRequestBody(absl::Span<const uint8_t> body);

absl::Status SendRequest(int sock, const SignedRequest& request, absl::Span<const int> fds);
// The request and its descriptors (at most kMaxFrameFds), arrived whole by `deadline`.
absl::StatusOr<std::pair<SignedRequest, std::vector<capsule::Fd>>> ReceiveRequest(
    int sock, Deadline deadline = kNoDeadline);

absl::Status SendProgress(int sock, uint64_t done, uint64_t total);
absl::Status SendEntries(int sock, const std::vector<capsule::FileEntry>& entries);
// The result, bounded to fit one frame: the message (4000 bytes) and hint (1000), the decision's
// rules and reasons as in the audit log (verifier::BoundLines), and the first denied files
// (1000, 256 KiB of paths).
absl::Status SendResult(int sock, const WireResult& result);
absl::Status SendMounts(int sock, const std::vector<MountInfo>& mounts);

// One reply: exactly one of the four is set.
struct Reply {
  std::optional<std::pair<uint64_t, uint64_t>> progress;
  std::optional<std::vector<capsule::FileEntry>> entries;
  std::optional<std::vector<MountInfo>> mounts;
  std::optional<WireResult> result;
};
absl::StatusOr<Reply> ReceiveReply(int sock);

}  // namespace bunker::site

#endif  // BUNKER_SITE_PROTOCOL_H_
