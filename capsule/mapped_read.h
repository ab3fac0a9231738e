// Reading a local file through a memory mapping without copying it, made safe against the file
// shrinking under the reader.
//
// A page of a mapping past the end of its file raises SIGBUS when touched, which would kill the
// process: the CLI, and a daemon reading a file that a hostile local user handed it and then
// truncated. WithMappedRange() therefore installs, once per process, a SIGBUS handler (the
// same technique as systemd's src/basic/sigbus.c): a fault inside a range that a thread of this
// process is reading through WithMappedRange() is answered by mapping anonymous zero pages over
// the rest of that range and recording the fault, and the read then fails closed; every other
// SIGBUS goes to the disposition that was in place before (the default action kills the
// process, as without this handler). Zeroed bytes can never authenticate anyway, but the caller
// never even sees a result computed from them.
//
// The bytes of a mapping are the file's live contents: a writer changing the file in place is
// seen mid-read. So a mapping suits only one-pass consumers (hashing), never a check-then-use
// pair over the same bytes (hash then decrypt); those must read into a buffer of their own.
#ifndef BUNKER_CAPSULE_MAPPED_READ_H_
#define BUNKER_CAPSULE_MAPPED_READ_H_

#include <cstdint>
#include <functional>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace bunker::capsule {

// What a caller does with bytes it is given in place.
using VisitFn = std::function<absl::Status(absl::Span<const uint8_t>)>;

// Maps [offset, offset + size) of `fd` (open for reading) read-only and calls `fn` once with it,
// on this thread; unmaps it before returning. Returns fn's result, except:
//  - kOutOfRange "file shrank while being read" when any page of the range was past the end of
//    the file while `fn` read it (fn's result does not count then);
//  - kUnimplemented, without calling `fn`, when the file cannot be mapped (the caller reads it
//    another way).
// `fn` must not call WithMappedRange itself. Safe to call from many threads at once.
absl::Status WithMappedRange(int fd, uint64_t offset, size_t size, const VisitFn& fn);

// Test only: when set, called with (fd, offset) after the range is mapped and before `fn`
// reads it, on the reading thread; a test truncates the file there to model a writer racing
// the reader, deterministically. Not thread-safe against concurrent reads; set it before them.
void SetMappedRangeHookForTesting(void (*hook)(int fd, uint64_t offset));

}  // namespace bunker::capsule

#endif  // BUNKER_CAPSULE_MAPPED_READ_H_
