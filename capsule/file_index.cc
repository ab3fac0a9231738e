#include "capsule/file_index.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "capnp/message.h"
#include "capsule/byte_order.h"
#include "capsule/format.h"
#include "capsule/paths.h"
#include "capsule/strict_decode.h"
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
  const uint64_t seen = seen_;
  auto read = [seen](schema::IndexEntry::Reader root) -> absl::StatusOr<FileEntry> {
    FileEntry e;
    auto path = root.getPath();
    e.path.assign(path.begin(), path.size());
    const uint16_t type = static_cast<uint16_t>(root.getType());
    if (type > static_cast<uint16_t>(FileEntry::Type::kHardlink)) {
      return absl::DataLossError(absl::StrCat("file index record ", seen, " has a bad type"));
    }
    e.type = static_cast<FileEntry::Type>(type);
    e.size = root.getSize();
    e.offset = root.getOffset();
    auto digest = root.getSha256();
    if (e.type == FileEntry::Type::kFile) {
      if (digest.size() != e.sha256.size()) {
        return absl::DataLossError(absl::StrCat("file index record ", seen, " has no digest"));
      }
      std::memcpy(e.sha256.data(), digest.begin(), digest.size());
    }
    e.mode = root.getMode();
    e.mtime = root.getMtime();
    auto target = root.getLinkTarget();
    e.link_target.assign(target.begin(), target.size());
    return e;
  };
  // As for the manifest: re-encoding the decoded entry must give the record back exactly.
  auto encode = [](const FileEntry& e) {
    std::vector<uint8_t> again = EncodeIndexRecord(e);
    again.erase(again.begin(), again.begin() + 4);  // the length, checked above
    return again;
  };
  // The traversal limit is cumulative over the canonical check and the field reads (see
  // manifest.cc).
  absl::StatusOr<FileEntry> decoded = StrictDecode<schema::IndexEntry>(
      record, StrictDecodeLimits{kMaxIndexRecordSize, /*traversal_factor=*/4, /*nesting=*/8}, read,
      encode, [seen](StrictDecodeFailure failure) {
        switch (failure) {
          case StrictDecodeFailure::kBadLength:
            return absl::DataLossError(
                absl::StrCat("file index record ", seen, " has a bad length"));
          case StrictDecodeFailure::kMalformed:
            return absl::DataLossError(absl::StrCat("file index record ", seen, " is malformed"));
          case StrictDecodeFailure::kNotCanonical:
          case StrictDecodeFailure::kNotReencoded:
            break;
        }
        return absl::DataLossError(absl::StrCat("file index record ", seen, " is not canonical"));
      });
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
