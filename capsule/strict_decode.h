// Strict Cap'n Proto decoding: the one place that turns untrusted bytes into a value only when
// they are the value's single canonical encoding (the manifest, file index records, audit
// entries, the verifier service's request body).
//
// StrictDecode checks, in this order, and stops at the first failure:
//   1. the length: not empty, a whole number of 8-byte words, at most `limits.max_bytes`
//      (Failure::kBadLength);
//   2. that the bytes are one canonical segment (capnp::MessageReader::isCanonical: no segment
//      table, far pointers, slack or unreachable words) (Failure::kNotCanonical);
//   3. that the caller's `read` gets its value out of the root without a Cap'n Proto exception
//      (Failure::kMalformed); an error `read` returns is passed through as it is;
//   4. unless `encode` is nullptr, that encoding the value again gives the input byte for byte:
//      no field this version does not know, no second spelling of a value (Failure::kNotReencoded).
// The caller names the Status of each failure (`fail`), so that each keeps its own code
// (kDataLoss for stored data, kInvalidArgument for a peer's message) and its own words.
//
// Work is bounded: the reader's traversal limit is `limits.traversal_factor` times the words
// plus 64 (it is cumulative over the canonical check and `read`), nesting `limits.nesting`.
#ifndef BUNKER_CAPSULE_STRICT_DECODE_H_
#define BUNKER_CAPSULE_STRICT_DECODE_H_

#include <capnp/message.h>
#include <kj/array.h>
#include <kj/exception.h>

#include <cstdint>
#include <cstring>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace bunker::capsule {

// Why StrictDecode refused its input (see the order above).
enum class StrictDecodeFailure { kBadLength, kNotCanonical, kMalformed, kNotReencoded };

// Bounds on the input and on the work of reading it.
struct StrictDecodeLimits {
  size_t max_bytes;
  uint64_t traversal_factor = 4;
  int nesting = 8;
};

// Decodes `bytes` as the root struct `Schema` into a T (see the contract at the top).
//   read:   absl::StatusOr<T>(typename Schema::Reader root), run inside the reader's lifetime;
//   encode: T -> std::vector<uint8_t> or absl::StatusOr<std::vector<uint8_t>> (an encoding
//           error counts as kNotReencoded), or nullptr to skip step 4;
//   fail:   absl::Status(StrictDecodeFailure).
// The input needs no alignment: it is copied into words first.
template <typename Schema, typename Read, typename Encode, typename Fail>
auto StrictDecode(absl::Span<const uint8_t> bytes, const StrictDecodeLimits& limits, Read read,
                  Encode encode, Fail fail)
    -> decltype(read(std::declval<typename Schema::Reader>())) {
  using Result = decltype(read(std::declval<typename Schema::Reader>()));
  if (bytes.empty() || bytes.size() % sizeof(capnp::word) != 0 || bytes.size() > limits.max_bytes) {
    return Result(fail(StrictDecodeFailure::kBadLength));
  }
  kj::Array<capnp::word> words = kj::heapArray<capnp::word>(bytes.size() / sizeof(capnp::word));
  std::memcpy(words.begin(), bytes.data(), bytes.size());
  capnp::ReaderOptions options;
  options.traversalLimitInWords = limits.traversal_factor * words.size() + 64;
  options.nestingLimit = limits.nesting;
  std::optional<Result> value;
  try {
    kj::ArrayPtr<const capnp::word> segments[1] = {words.asPtr()};
    capnp::SegmentArrayMessageReader reader(kj::arrayPtr(segments, 1), options);
    if (!reader.isCanonical()) return Result(fail(StrictDecodeFailure::kNotCanonical));
    value.emplace(read(reader.getRoot<Schema>()));
  } catch (const kj::Exception&) {
    // Cap'n Proto's message names internals only; the caller's words say what was wrong.
    return Result(fail(StrictDecodeFailure::kMalformed));
  }
  if (!value->ok()) return std::move(*value);
  if constexpr (!std::is_same_v<Encode, std::nullptr_t>) {
    const auto again = encode(**value);
    bool same;
    if constexpr (std::is_same_v<std::decay_t<decltype(again)>, std::vector<uint8_t>>) {
      same = again.size() == bytes.size() &&
             std::memcmp(again.data(), bytes.data(), bytes.size()) == 0;
    } else {
      same = again.ok() && again->size() == bytes.size() &&
             std::memcmp(again->data(), bytes.data(), bytes.size()) == 0;
    }
    if (!same) return Result(fail(StrictDecodeFailure::kNotReencoded));
  }
  return std::move(*value);
}

}  // namespace bunker::capsule

#endif  // BUNKER_CAPSULE_STRICT_DECODE_H_
