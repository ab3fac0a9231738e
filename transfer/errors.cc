#include "transfer/errors.h"

#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace bunker::transfer {
namespace {

constexpr char kPrefix[] = "bunker:";
constexpr size_t kPrefixSize = sizeof(kPrefix) - 1;

}  // namespace

kj::Exception ToException(const absl::Status& status) {
  const std::string text = absl::StrCat(kPrefix, absl::StatusCodeToString(status.code()), ": ",
                                        status.message());
  return kj::Exception(kj::Exception::Type::FAILED, __FILE__, __LINE__, kj::heapString(text));
}

absl::Status FromException(const kj::Exception& exception) {
  const std::string d = exception.getDescription().cStr();
  // KJ may prefix the text ("remote exception: "); look for ours anywhere.
  const size_t at = d.find(kPrefix);
  if (at != std::string::npos) {
    const std::string rest = d.substr(at + kPrefixSize);
    const size_t colon = rest.find(": ");
    if (colon != std::string::npos) {
      const std::string code = rest.substr(0, colon);
      const std::string message = rest.substr(colon + 2);
      for (int c = 1; c <= 16; ++c) {
        const auto sc = static_cast<absl::StatusCode>(c);
        if (absl::StatusCodeToString(sc) == code) return absl::Status(sc, message);
      }
    }
  }
  switch (exception.getType()) {
    case kj::Exception::Type::DISCONNECTED:
      return absl::UnavailableError(absl::StrCat("connection lost: ", d));
    case kj::Exception::Type::OVERLOADED:
      return absl::ResourceExhaustedError(absl::StrCat("peer overloaded: ", d));
    case kj::Exception::Type::UNIMPLEMENTED:
      return absl::UnimplementedError(absl::StrCat("peer does not implement this: ", d));
    default:
      return absl::UnavailableError(absl::StrCat("peer failed: ", d));
  }
}

absl::Status PeerSafe(const absl::Status& status, absl::string_view who) {
  switch (status.code()) {
    case absl::StatusCode::kOk:
      return status;
    case absl::StatusCode::kResourceExhausted:
      // Our own refusal (an offer that does not fit) says why; a failed write does not.
      if (absl::StartsWith(status.message(), "no room for capsule ")) return status;
      return absl::ResourceExhaustedError(absl::StrCat(who, " is out of disk space or memory"));
    case absl::StatusCode::kDataLoss:
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kPermissionDenied:
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kCancelled:
      // Our own refusals (trust, policy, corrupt data) say why; a message naming a local path
      // (errno failures do) does not cross.
      if (status.message().find('/') == absl::string_view::npos) return status;
      return absl::Status(status.code(), absl::StrCat(who, " refused the request"));
    default:
      // The peer's own failure (a short read of its store is kOutOfRange, which for the peer
      // would mean "your input is invalid", exit 3): to the peer the far end is unavailable,
      // and a later run may succeed.
      return absl::UnavailableError(absl::StrCat(who, " had a local I/O error"));
  }
}

}  // namespace bunker::transfer
