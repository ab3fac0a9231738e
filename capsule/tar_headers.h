// TarHeaderTap: the raw tar header bytes behind each entry libarchive reports.
//
// libarchive reads any typeflag it does not know as a regular file ("per POSIX"), and exposes
// no raw header. So that a reader refuses unknown types (spec/FORMAT.md "Extraction",
// "Entries") instead of writing them as files, the bytes fed to libarchive also pass through
// this tap, which keeps the bytes of the entry being read and, given the position libarchive
// reports for an entry's first header (archive_read_header_position), reads the chain of
// headers there itself: zero or more extension headers (typeflag 'x', 'g', 'L', 'K'; each
// followed by its ustar-size bytes, rounded up to 512) and then the entry's own header.
// Framing stays libarchive's: the tap only reads the bytes libarchive says an entry starts at.
//
// Contract:
//  - Feed() every byte, in order, before libarchive sees it.
//  - Inspect(position) returns the entry's own typeflag and the raw ustar size field of that
//    header; kDataLoss when the bytes at `position` are no longer (or not yet) held, when a
//    header's checksum or size field is malformed, when a header lacks the ustar or GNU magic
//    (v7), when the chain holds a second pax 'x' header, or when the chain is over kMaxChain
//    headers (the entry's own included: at most 15 extension headers).
//  - Skip(from, bytes): the caller knows that `bytes` bytes of entry data start at `from`;
//    those are not held (a file's contents never accumulate here). Bytes before `from` are
//    dropped. If the next Inspect() asks for a dropped byte it fails (kDataLoss), never
//    reads other bytes.
// Memory: at most what libarchive read ahead beyond the current entry's headers.
// Not thread-safe.
#ifndef BUNKER_CAPSULE_TAR_HEADERS_H_
#define BUNKER_CAPSULE_TAR_HEADERS_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace bunker::capsule {

// The entry typeflags a Bunker reader accepts (FORMAT.md "Entries"): '0' and NUL (regular
// file), '1' (hard link), '2' (symbolic link), '5' (directory).
bool IsAllowedEntryTypeflag(char typeflag);
// Extension headers that may precede an entry: pax 'x' and 'g', GNU long names 'L' and 'K'.
bool IsExtensionTypeflag(char typeflag);

class TarHeaderTap {
 public:
  static constexpr int kMaxChain = 16;

  struct Header {
    char typeflag = 0;
    uint64_t size_field = 0;  // the ustar size field of the entry's own header
    uint64_t data_start = 0;  // stream offset just after the entry's own header
  };

  void Feed(absl::Span<const uint8_t> bytes);
  absl::StatusOr<Header> Inspect(uint64_t position) const;
  void Skip(uint64_t from, uint64_t bytes);

 private:
  std::vector<uint8_t> held_;
  uint64_t held_from_ = 0;    // stream offset of held_[0]
  uint64_t fed_ = 0;          // bytes fed so far
  uint64_t ignore_from_ = 0;  // [ignore_from_, ignore_to_) is not held
  uint64_t ignore_to_ = 0;
};

// Parses a tar numeric field: octal digits (leading spaces/NULs allowed, terminated by a space
// or NUL) or GNU base-256 (high bit of the first byte set, positive only). kDataLoss when
// malformed.
absl::StatusOr<uint64_t> ParseTarNumber(absl::Span<const uint8_t> field);

}  // namespace bunker::capsule

#endif  // BUNKER_CAPSULE_TAR_HEADERS_H_
