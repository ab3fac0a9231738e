// InputArchive: the archive `capsule seal --from-tar` reads (tar, pax or zip, optionally
// compressed, from a file or standard input), with the raw tar header check of extraction.
//
// libarchive reads an unknown tar typeflag as a regular file; sealing it would turn it into
// one. So a tar input is decompressed by one libarchive reader (any filter, "raw" format) and
// parsed by a second one (tar or zip, no filter) whose input passes through a TarHeaderTap
// (capsule/tar_headers.h): CheckEntry() then refuses, with kInvalidArgument, what extraction
// refuses (spec/FORMAT.md "Extraction", "Entries"): unknown typeflags, sparse entries,
// hard links, symlinks or directories with a non-zero size, v7 headers and a second pax 'x'
// header before one entry. A zip file named by path is read
// as before, seekable (zip has no typeflags).
// Not thread-safe.
#ifndef BUNKER_CAPSULE_INPUT_ARCHIVE_H_
#define BUNKER_CAPSULE_INPUT_ARCHIVE_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "capsule/tar_headers.h"

struct archive;
struct archive_entry;

namespace bunker::capsule {

class InputArchive {
 public:
  // Opens `input` ("-" for standard input). kInvalidArgument when it cannot be read as an
  // archive.
  static absl::StatusOr<std::unique_ptr<InputArchive>> Open(const std::string& input);
  ~InputArchive();

  // The reader to take headers and data from (archive_read_next_header, archive_read_data).
  struct archive* get() const {
    return in_;
  }

  // Call after each header archive_read_next_header returned for `entry`, before its data.
  // `path` names the entry in errors.
  absl::Status CheckEntry(struct archive_entry* entry, const std::string& path);

 private:
  InputArchive() = default;
  static long Read(struct archive* a, void* self, const void** buffer);

  struct archive* raw_ = nullptr;  // decompresses (tar inputs only)
  struct archive* in_ = nullptr;   // parses
  bool tapped_ = false;
  absl::Status raw_status_;
  std::vector<uint8_t> buffer_;
  TarHeaderTap tap_;
};

}  // namespace bunker::capsule

#endif  // BUNKER_CAPSULE_INPUT_ARCHIVE_H_
