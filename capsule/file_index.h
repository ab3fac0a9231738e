// The encrypted file index (FORMAT.md "File index"): after the pax archive in the payload, a
// sequence of records, each a u32 big-endian length followed by that many bytes of a canonical
// Cap'n Proto IndexEntry (spec/capsule.capnp). It lets a reader find one file's contents
// (payload offset and size) without decrypting the archive.
#ifndef BUNKER_CAPSULE_FILE_INDEX_H_
#define BUNKER_CAPSULE_FILE_INDEX_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "capsule/io.h"
#include "crypto/sha256.h"

namespace bunker::capsule {

struct FileEntry {
  enum class Type : uint16_t { kFile = 0, kDirectory = 1, kSymlink = 2, kHardlink = 3 };
  std::string path;
  Type type = Type::kFile;
  uint64_t size = 0;
  uint64_t offset = 0;
  crypto::Sha256Digest sha256{};
  uint32_t mode = 0;
  int64_t mtime = 0;
  std::string link_target;
};

// "file", "dir", "symlink", "hardlink".
const char* TypeName(FileEntry::Type type);

// One record: u32 BE length || canonical IndexEntry.
std::vector<uint8_t> EncodeIndexRecord(const FileEntry& entry);

// The canonical Cap'n Proto encoding of `entry` as an IndexEntry (no length prefix), written
// directly: byte for byte what EncodeIndexRecord produces after its 4-byte length (a test
// holds the two equal), without building a message. Replaces `*out`.
void EncodeCanonicalIndexEntry(const FileEntry& entry, std::vector<uint8_t>* out);

// Decodes one record (without its length prefix; `number` names it in errors) the way
// FORMAT.md "File index" requires: it reads the fields where the canonical encoding puts them,
// with every offset and length bounds-checked, then accepts only when
// EncodeCanonicalIndexEntry of the value gives `record` back exactly. kDataLoss ("is
// malformed", "is not canonical", "has a bad type", "has no digest", "has a bad length")
// otherwise. Checks nothing about paths or field combinations (IndexReader does). `scratch` is
// reused between calls to avoid an allocation per record.
absl::StatusOr<FileEntry> ParseIndexEntry(absl::Span<const uint8_t> record, uint64_t number,
                                          std::vector<uint8_t>* scratch);

// Parses records from a stream of index bytes (already authenticated by the payload stream).
// Strict (ParseIndexEntry, then FORMAT.md's rules on paths and fields): records over
// kMaxIndexRecordSize, records that do not re-encode to the same bytes, bad digest lengths,
// unsafe paths, a count other than `expected_entries`, or trailing bytes are kDataLoss.
class IndexReader {
 public:
  IndexReader(ByteSource* source, uint64_t expected_entries)
      : source_(source), expected_(expected_entries) {}
  // The next entry, or nullopt after the last one (having checked the count and the end).
  absl::StatusOr<std::optional<FileEntry>> Next();

 private:
  absl::Status Fill(size_t n);
  ByteSource* source_;
  uint64_t expected_;
  uint64_t seen_ = 0;
  std::vector<uint8_t> buf_;
  std::vector<uint8_t> scratch_;
  size_t pos_ = 0;
  bool eof_ = false;
};

}  // namespace bunker::capsule

#endif  // BUNKER_CAPSULE_FILE_INDEX_H_
