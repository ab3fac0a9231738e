// Fixed-width integers in a byte order the bytes name, for length framing: the one place that
// shifts bytes into and out of a u32. Big-endian frames the file index records (spec/FORMAT.md
// "File index") and the audit log entries (spec/AUDIT.md "Entries"); little-endian frames the
// verifier service's messages on its Unix socket (site/local_wire.h, as Cap'n Proto's own
// segment table). No alignment is needed; the caller provides four bytes.
#ifndef BUNKER_CAPSULE_BYTE_ORDER_H_
#define BUNKER_CAPSULE_BYTE_ORDER_H_

#include <cstdint>

namespace bunker::capsule {

// Writes `v` to out[0..3], most significant byte first.
inline void StoreU32Be(uint32_t v, uint8_t* out) {
  out[0] = static_cast<uint8_t>(v >> 24);
  out[1] = static_cast<uint8_t>(v >> 16);
  out[2] = static_cast<uint8_t>(v >> 8);
  out[3] = static_cast<uint8_t>(v);
}

// The u32 at in[0..3], most significant byte first.
inline uint32_t LoadU32Be(const uint8_t* in) {
  return uint32_t{in[0]} << 24 | uint32_t{in[1]} << 16 | uint32_t{in[2]} << 8 | uint32_t{in[3]};
}

// Writes `v` to out[0..3], least significant byte first.
inline void StoreU32Le(uint32_t v, uint8_t* out) {
  out[0] = static_cast<uint8_t>(v);
  out[1] = static_cast<uint8_t>(v >> 8);
  out[2] = static_cast<uint8_t>(v >> 16);
  out[3] = static_cast<uint8_t>(v >> 24);
}

// The u32 at in[0..3], least significant byte first.
inline uint32_t LoadU32Le(const uint8_t* in) {
  return uint32_t{in[0]} | uint32_t{in[1]} << 8 | uint32_t{in[2]} << 16 | uint32_t{in[3]} << 24;
}

}  // namespace bunker::capsule

#endif  // BUNKER_CAPSULE_BYTE_ORDER_H_
