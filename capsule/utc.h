// Times as text: the one formatter of a Unix time, for manifests, policies, audit records and
// checkpoints, reasons and logs.
#ifndef BUNKER_CAPSULE_UTC_H_
#define BUNKER_CAPSULE_UTC_H_

#include <cstdint>
#include <string>

namespace bunker::capsule {

// `seconds` since the Unix epoch as RFC 3339 UTC with whole seconds, "2026-01-31T23:59:59Z".
// A time the C library cannot break down (far outside years 0-9999) comes back as its decimal
// number of seconds, so that nothing is lost.
std::string FormatUtc(int64_t seconds);

}  // namespace bunker::capsule

#endif  // BUNKER_CAPSULE_UTC_H_
