#include "capsule/input_archive.h"

#include <archive.h>
#include <archive_entry.h>

#include "absl/strings/str_cat.h"
#include "capsule/paths.h"

namespace bunker::capsule {
namespace {

constexpr size_t kBlockSize = 1 << 16;

std::string Where(const std::string& input) { return input == "-" ? "from standard input" : input; }

std::string ErrorOf(struct archive* a) {
  const char* e = archive_error_string(a);
  return e != nullptr ? e : "unknown error";
}

int OpenInput(struct archive* a, const std::string& input) {
  return input == "-" ? archive_read_open_fd(a, 0, kBlockSize)
                      : archive_read_open_filename(a, input.c_str(), kBlockSize);
}

// Whether the file `input` is a zip archive (read directly, seekable, as before).
bool IsZipFile(const std::string& input) {
  if (input == "-") return false;
  struct archive* probe = archive_read_new();
  if (probe == nullptr) return false;
  archive_read_support_format_tar(probe);
  archive_read_support_format_zip(probe);
  archive_read_support_filter_all(probe);
  bool zip = false;
  struct archive_entry* e;
  if (OpenInput(probe, input) == ARCHIVE_OK &&
      archive_read_next_header(probe, &e) >= ARCHIVE_WARN) {
    zip = (archive_format(probe) & ARCHIVE_FORMAT_BASE_MASK) == ARCHIVE_FORMAT_ZIP;
  }
  archive_read_free(probe);
  return zip;
}

}  // namespace

InputArchive::~InputArchive() {
  if (in_ != nullptr) archive_read_free(in_);
  if (raw_ != nullptr) archive_read_free(raw_);
}

long InputArchive::Read(struct archive*, void* opaque, const void** buffer) {
  auto* self = static_cast<InputArchive*>(opaque);
  const la_ssize_t n = archive_read_data(self->raw_, self->buffer_.data(), self->buffer_.size());
  if (n < 0) {
    self->raw_status_ = absl::InvalidArgumentError(
        absl::StrCat("cannot decompress the input archive: ", ErrorOf(self->raw_)));
    return -1;
  }
  *buffer = self->buffer_.data();
  self->tap_.Feed(absl::MakeConstSpan(self->buffer_.data(), static_cast<size_t>(n)));
  return n;
}

absl::StatusOr<std::unique_ptr<InputArchive>> InputArchive::Open(const std::string& input) {
  std::unique_ptr<InputArchive> a(new InputArchive());
  a->in_ = archive_read_new();
  if (a->in_ == nullptr) return absl::InternalError("cannot start the archive reader");
  archive_read_support_format_tar(a->in_);
  archive_read_support_format_zip(a->in_);
  if (IsZipFile(input)) {
    archive_read_support_filter_all(a->in_);
    if (OpenInput(a->in_, input) != ARCHIVE_OK) {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot read archive ", Where(input), ": ", ErrorOf(a->in_)));
    }
    return a;
  }
  a->raw_ = archive_read_new();
  if (a->raw_ == nullptr) return absl::InternalError("cannot start the archive reader");
  archive_read_support_filter_all(a->raw_);
  archive_read_support_format_raw(a->raw_);
  struct archive_entry* e;
  if (OpenInput(a->raw_, input) != ARCHIVE_OK ||
      archive_read_next_header(a->raw_, &e) != ARCHIVE_OK) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot read archive ", Where(input), ": ", ErrorOf(a->raw_)));
  }
  a->buffer_.resize(kBlockSize);
  a->tapped_ = true;
  archive_read_support_filter_none(a->in_);
  if (archive_read_open(a->in_, a.get(), nullptr, &InputArchive::Read, nullptr) != ARCHIVE_OK) {
    if (!a->raw_status_.ok()) return a->raw_status_;
    return absl::InvalidArgumentError(
        absl::StrCat("cannot read archive ", Where(input), ": ", ErrorOf(a->in_)));
  }
  return a;
}

absl::Status InputArchive::CheckEntry(struct archive_entry* entry, const std::string& path) {
  if (!tapped_ || (archive_format(in_) & ARCHIVE_FORMAT_BASE_MASK) != ARCHIVE_FORMAT_TAR) {
    return absl::OkStatus();
  }
  auto refuse = [&](const std::string& why) {
    return absl::InvalidArgumentError(
        absl::StrCat("input archive entry ", QuotePath(path), ": ", why));
  };
  absl::StatusOr<TarHeaderTap::Header> h =
      tap_.Inspect(static_cast<uint64_t>(archive_read_header_position(in_)));
  if (!h.ok())
    return absl::InvalidArgumentError(
        absl::StrCat("malformed input archive at ", QuotePath(path), ": ", h.status().message()));
  const mode_t type = archive_entry_filetype(entry);
  // Devices, FIFOs and sockets keep the builder's own message.
  if (!IsAllowedEntryTypeflag(h->typeflag) &&
      (type == AE_IFREG || type == AE_IFDIR || type == AE_IFLNK)) {
    const unsigned char t = static_cast<unsigned char>(h->typeflag);
    return refuse(absl::StrCat(
        t >= 0x20 && t < 0x7f ? absl::StrCat("tar type '", std::string(1, h->typeflag), "'")
                              : absl::StrCat("tar type 0x", absl::Hex(t)),
        " (only regular files, directories, symlinks and hard links can be sealed)"));
  }
  if (archive_entry_sparse_count(entry) > 0) return refuse("sparse entries cannot be sealed");
  const bool is_data = h->typeflag == '0' || h->typeflag == '\0';
  if (!is_data && (h->size_field != 0 || archive_entry_size(entry) != 0)) {
    return refuse("a hard link, symlink or directory with a non-zero size");
  }
  const uint64_t size = is_data && archive_entry_size(entry) > 0
                            ? static_cast<uint64_t>(archive_entry_size(entry))
                            : 0;
  tap_.Skip(h->data_start, (size + 511) / 512 * 512);
  return absl::OkStatus();
}

}  // namespace bunker::capsule
