#include "capsule/file_index.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "capnp/message.h"
#include "capsule/byte_order.h"
#include "capsule/format.h"
#include "capsule/paths.h"
#include "spec/capsule.capnp.h"

namespace bunker::capsule {

const char* TypeName(FileEntry::Type type) {
  switch (type) {
    case FileEntry::Type::kFile:
      return "file";
    case FileEntry::Type::kDirectory:
      return "dir";
    case FileEntry::Type::kSymlink:
      return "symlink";
    case FileEntry::Type::kHardlink:
      return "hardlink";
  }
  return "?";
}

std::vector<uint8_t> EncodeIndexRecord(const FileEntry& e) {
  // The first segment sized for this entry (root pointer, struct, digest, both texts): the
  // default of 8 KiB, zeroed for every record, was most of the time a reader spent on a large
  // index (each record is re-encoded to check it).
  const size_t first_segment_words = 16 + 4 + (e.path.size() + 8) / 8 + (e.link_target.size() + 8) / 8;
  capnp::MallocMessageBuilder builder(static_cast<kj::uint>(first_segment_words),
                                      capnp::AllocationStrategy::FIXED_SIZE);
  auto root = builder.initRoot<schema::IndexEntry>();
  root.setPath(capnp::Text::Reader(e.path.data(), e.path.size()));
  root.setType(static_cast<schema::IndexEntry::Type>(e.type));
  root.setSize(e.size);
  root.setOffset(e.offset);
  if (e.type == FileEntry::Type::kFile) {
    root.setSha256(kj::arrayPtr(reinterpret_cast<const capnp::byte*>(e.sha256.data()),
                                e.sha256.size()));
  }
  root.setMode(e.mode);
  root.setMtime(e.mtime);
  if (!e.link_target.empty()) {
    root.setLinkTarget(capnp::Text::Reader(e.link_target.data(), e.link_target.size()));
  }
  kj::Array<capnp::word> words = capnp::canonicalize(root.asReader());
  auto bytes = words.asBytes();
  std::vector<uint8_t> out(4 + bytes.size());
  const uint32_t n = static_cast<uint32_t>(bytes.size());
  StoreU32Be(n, out.data());
  std::memcpy(out.data() + 4, bytes.begin(), bytes.size());
  return out;
}

namespace {

// The layout of IndexEntry (spec/capsule.capnp; capnp's generated header declares the struct
// as 4 data words and 3 pointers): type u16 at data byte 0, mode u32 at byte 4, size u64 at
// byte 8, offset u64 at byte 16, mtime i64 at byte 24; pointers path, sha256, linkTarget.
constexpr uint64_t kEntryDataWords = 4;
constexpr uint64_t kEntryPointers = 3;
static_assert(schema::IndexEntry::_capnpPrivate::dataWordSize == kEntryDataWords &&
                  schema::IndexEntry::_capnpPrivate::pointerCount == kEntryPointers,
              "IndexEntry's layout changed: update EncodeCanonicalIndexEntry and ParseIndexEntry");

uint64_t LoadU64Le(const uint8_t* in) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | in[i];
  return v;
}

void StoreU64Le(uint64_t v, uint8_t* out) {
  for (int i = 0; i < 8; ++i) out[i] = static_cast<uint8_t>(v >> (8 * i));
}

// A Cap'n Proto list pointer to `count` bytes (element size 2), from the pointer at word
// `pointer_word` of the message to the list at word `target_word` (the offset counts from the
// word after the pointer).
uint64_t BytesPointer(uint64_t pointer_word, uint64_t target_word, uint64_t count) {
  const int64_t offset = static_cast<int64_t>(target_word) - static_cast<int64_t>(pointer_word) - 1;
  return (static_cast<uint64_t>(static_cast<uint32_t>(offset * 4)) | 1) | (uint64_t{2} << 32) |
         (count << 35);
}

uint64_t WordsFor(uint64_t bytes) { return (bytes + 7) / 8; }

}  // namespace

void EncodeCanonicalIndexEntry(const FileEntry& e, std::vector<uint8_t>* out) {
  // Canonical form (capnp::canonicalize): the root struct pointer, then the data section
  // without its trailing zero words, the pointer section without its trailing null pointers,
  // then each pointer's target in pointer order, every byte list padded with zeros to a word.
  // A Text holds its bytes and a NUL. EncodeIndexRecord sets `sha256` only for files and
  // `linkTarget` only when non-empty; `path` always (an empty path is a 1-byte list).
  const uint64_t data[kEntryDataWords] = {
      static_cast<uint64_t>(e.type) | (static_cast<uint64_t>(e.mode) << 32), e.size, e.offset,
      static_cast<uint64_t>(e.mtime)};
  uint64_t data_words = kEntryDataWords;
  while (data_words > 0 && data[data_words - 1] == 0) --data_words;
  const bool has_digest = e.type == FileEntry::Type::kFile;
  const bool has_target = !e.link_target.empty();
  const uint64_t pointers = has_target ? 3 : has_digest ? 2 : 1;
  const uint64_t path_words = WordsFor(e.path.size() + 1);
  const uint64_t digest_words = has_digest ? WordsFor(e.sha256.size()) : 0;
  const uint64_t target_words = has_target ? WordsFor(e.link_target.size() + 1) : 0;
  const uint64_t total = 1 + data_words + pointers + path_words + digest_words + target_words;
  out->assign(total * 8, 0);
  uint8_t* w = out->data();
  StoreU64Le((data_words << 32) | (pointers << 48), w);  // struct pointer, offset 0
  for (uint64_t i = 0; i < data_words; ++i) StoreU64Le(data[i], w + 8 * (1 + i));
  const uint64_t first_pointer = 1 + data_words;
  uint64_t next = first_pointer + pointers;
  StoreU64Le(BytesPointer(first_pointer, next, e.path.size() + 1), w + 8 * first_pointer);
  std::memcpy(w + 8 * next, e.path.data(), e.path.size());
  next += path_words;
  if (has_digest) {
    StoreU64Le(BytesPointer(first_pointer + 1, next, e.sha256.size()), w + 8 * (first_pointer + 1));
    std::memcpy(w + 8 * next, e.sha256.data(), e.sha256.size());
    next += digest_words;
  }
  if (has_target) {
    StoreU64Le(BytesPointer(first_pointer + 2, next, e.link_target.size() + 1),
               w + 8 * (first_pointer + 2));
    std::memcpy(w + 8 * next, e.link_target.data(), e.link_target.size());
  }
}

absl::StatusOr<FileEntry> ParseIndexEntry(absl::Span<const uint8_t> record, uint64_t number,
                                          std::vector<uint8_t>* scratch) {
  auto malformed = [number] {
    return absl::DataLossError(absl::StrCat("file index record ", number, " is malformed"));
  };
  auto not_canonical = [number] {
    return absl::DataLossError(absl::StrCat("file index record ", number, " is not canonical"));
  };
  if (record.empty() || record.size() % 8 != 0 || record.size() > kMaxIndexRecordSize) {
    return absl::DataLossError(absl::StrCat("file index record ", number, " has a bad length"));
  }
  // Step 1: read the fields where a canonical encoding puts them, bounds-checked; anything
  // that is not a struct at offset 0 with byte lists behind its pointers is refused here.
  const uint8_t* bytes = record.data();
  const uint64_t words = record.size() / 8;
  const uint64_t root = LoadU64Le(bytes);
  if ((root & 3) != 0) return malformed();
  if ((root & 0xffffffffu) != 0) return not_canonical();  // a struct right after the root
  const uint64_t data_words = (root >> 32) & 0xffff;
  const uint64_t pointers = root >> 48;
  if (data_words > kEntryDataWords || pointers > kEntryPointers) return not_canonical();
  if (1 + data_words + pointers > words) return malformed();
  uint8_t data[kEntryDataWords * 8] = {};
  std::memcpy(data, bytes + 8, data_words * 8);
  absl::string_view blobs[kEntryPointers];
  bool present[kEntryPointers] = {false, false, false};
  for (uint64_t i = 0; i < pointers; ++i) {
    const uint64_t at = 1 + data_words + i;
    const uint64_t p = LoadU64Le(bytes + 8 * at);
    if (p == 0) continue;
    if ((p & 3) != 1 || ((p >> 32) & 7) != 2) return malformed();  // a list of bytes
    const int64_t offset = static_cast<int32_t>(static_cast<uint32_t>(p) & ~uint32_t{3}) / 4;
    const int64_t target = static_cast<int64_t>(at) + 1 + offset;
    const uint64_t count = p >> 35;
    if (target < 0 || static_cast<uint64_t>(target) > words ||
        count > (words - static_cast<uint64_t>(target)) * 8) {
      return malformed();
    }
    const char* start = reinterpret_cast<const char*>(bytes) + 8 * target;
    if (i != 1) {  // Text: its bytes, then a NUL
      if (count == 0 || start[count - 1] != '\0') return malformed();
      blobs[i] = absl::string_view(start, count - 1);
    } else {
      blobs[i] = absl::string_view(start, count);
    }
    present[i] = true;
  }
  FileEntry e;
  const uint16_t type = static_cast<uint16_t>(data[0] | (data[1] << 8));
  if (type > static_cast<uint16_t>(FileEntry::Type::kHardlink)) {
    return absl::DataLossError(absl::StrCat("file index record ", number, " has a bad type"));
  }
  e.type = static_cast<FileEntry::Type>(type);
  e.mode = LoadU32Le(data + 4);
  e.size = LoadU64Le(data + 8);
  e.offset = LoadU64Le(data + 16);
  e.mtime = static_cast<int64_t>(LoadU64Le(data + 24));
  e.path.assign(blobs[0].data(), blobs[0].size());
  if (e.type == FileEntry::Type::kFile) {
    if (!present[1] || blobs[1].size() != e.sha256.size()) {
      return absl::DataLossError(absl::StrCat("file index record ", number, " has no digest"));
    }
    std::memcpy(e.sha256.data(), blobs[1].data(), e.sha256.size());
  }
  e.link_target.assign(blobs[2].data(), blobs[2].size());
  // Step 2, which decides: the value read must encode back to exactly the record (no field
  // this version does not know, no padding or slack, nulls where FORMAT.md says null, no
  // second spelling of any value).
  EncodeCanonicalIndexEntry(e, scratch);
  if (scratch->size() != record.size() ||
      std::memcmp(scratch->data(), record.data(), record.size()) != 0) {
    return not_canonical();
  }
  return e;
}

absl::Status IndexReader::Fill(size_t n) {
  if (pos_ > 0 && pos_ >= buf_.size() / 2) {
    buf_.erase(buf_.begin(), buf_.begin() + static_cast<std::ptrdiff_t>(pos_));
    pos_ = 0;
  }
  while (buf_.size() - pos_ < n && !eof_) {
    absl::StatusOr<absl::Span<const uint8_t>> piece = source_->Next();
    if (!piece.ok()) return piece.status();
    if (piece->empty()) {
      eof_ = true;
      break;
    }
    buf_.insert(buf_.end(), piece->begin(), piece->end());
  }
  return absl::OkStatus();
}

absl::StatusOr<std::optional<FileEntry>> IndexReader::Next() {
  absl::Status s = Fill(4);
  if (!s.ok()) return s;
  const size_t avail = buf_.size() - pos_;
  if (avail == 0) {
    if (seen_ != expected_) {
      return absl::DataLossError(absl::StrCat("file index has ", seen_, " entries, manifest says ",
                                              expected_));
    }
    return std::optional<FileEntry>();
  }
  if (avail < 4) return absl::DataLossError("file index is truncated");
  const uint8_t* p = buf_.data() + pos_;
  const uint32_t n = LoadU32Be(p);
  if (n == 0 || n % 8 != 0 || n > kMaxIndexRecordSize) {
    return absl::DataLossError(absl::StrCat("file index record ", seen_, " has a bad length"));
  }
  if (seen_ >= expected_) return absl::DataLossError("file index has more entries than declared");
  s = Fill(4 + size_t{n});
  if (!s.ok()) return s;
  if (buf_.size() - pos_ < 4 + size_t{n}) return absl::DataLossError("file index is truncated");

  const absl::Span<const uint8_t> record(buf_.data() + pos_ + 4, n);
  absl::StatusOr<FileEntry> decoded = ParseIndexEntry(record, seen_, &scratch_);
  pos_ += 4 + n;
  if (!decoded.ok()) return decoded.status();
  FileEntry e = *std::move(decoded);
  absl::StatusOr<std::string> normalized = NormalizeEntryPath(e.path);
  if (!normalized.ok() || *normalized != e.path) {
    return absl::DataLossError(
        absl::StrCat("file index record ", seen_, " has an unsafe path ", QuotePath(e.path)));
  }
  // Fields must fit the entry's type (FORMAT.md "File index"), as a writer produces them.
  const bool is_file = e.type == FileEntry::Type::kFile;
  const bool is_link = e.type == FileEntry::Type::kSymlink || e.type == FileEntry::Type::kHardlink;
  if ((!is_file && (e.size != 0 || e.offset != 0)) || is_link == e.link_target.empty() ||
      e.mode > 0777) {
    return absl::DataLossError(
        absl::StrCat("file index record ", seen_, " has fields that do not fit its type"));
  }
  if (e.type == FileEntry::Type::kHardlink) {
    absl::StatusOr<std::string> target = NormalizeEntryPath(e.link_target);
    if (!target.ok() || *target != e.link_target) {
      return absl::DataLossError(
          absl::StrCat("file index record ", seen_, " has an unsafe hard link target"));
    }
  }
  ++seen_;
  return std::optional<FileEntry>(std::move(e));
}

}  // namespace bunker::capsule
