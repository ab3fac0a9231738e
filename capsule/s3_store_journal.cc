// The S3 store's records: the upload journal in the spool, the boots file, marker objects.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "capsule/format.h"
#include "capsule/io.h"
#include "capsule/manifest.h"
#include "capsule/s3_store_internal.h"

namespace bunker::capsule::internal_s3_store {

bool IsToken(const std::string& s) {
  if (s.empty() || s.size() > 1024) return false;
  for (char c : s) {
    if (c < 0x21 || c > 0x7e) return false;
  }
  return true;
}

bool IsDaemonId(const std::string& s) {
  if (s.empty() || s.size() > 64) return false;
  return s.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789-") == std::string::npos;
}

absl::Status PartsJournal::Load() {
  upload_id_.clear();
  chunks_per_part_ = 0;
  parts_.clear();
  absl::StatusOr<std::string> text = ReadSmall();
  if (absl::IsNotFound(text.status())) return absl::OkStatus();
  if (!text.ok()) return text.status();
  size_t end = text->rfind('\n');
  if (end == std::string::npos) return absl::OkStatus();
  for (absl::string_view line : absl::StrSplit(absl::string_view(*text).substr(0, end), '\n')) {
    std::vector<std::string> f = absl::StrSplit(line, ' ');
    int n = 0;
    uint64_t per_part = 0;
    if ((f.size() == 2 || f.size() == 3) && f[0] == "upload" && IsToken(f[1]) &&
        upload_id_.empty()) {
      // Without a layout (a journal of an earlier version) the upload is only aborted.
      upload_id_ = f[1];
      if (f.size() == 3 && absl::SimpleAtoi(f[2], &per_part) && per_part >= 1) {
        chunks_per_part_ = per_part;
      }
    } else if (f.size() == 3 && f[0] == "part" && absl::SimpleAtoi(f[1], &n) && n >= 1 &&
               static_cast<uint64_t>(n) <= kMaxParts && IsToken(f[2]) && !upload_id_.empty()) {
      parts_[n] = f[2];
    } else {
      // A damaged journal (or one without a part layout) costs the upload, not the capsule:
      // start over. The upload id, if read, is kept so that the upload can be aborted.
      chunks_per_part_ = 0;
      parts_.clear();
      return absl::OkStatus();
    }
  }
  return absl::OkStatus();
}

absl::Status PartsJournal::Start(const std::string& upload_id, uint64_t chunks_per_part) {
  int fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return ErrnoStatus("cannot create the upload journal", errno);
  Fd closer(fd);
  const std::string line = absl::StrCat("upload ", upload_id, " ", chunks_per_part, "\n");
  absl::Status s = WriteAll(fd, absl::MakeConstSpan(
                                    reinterpret_cast<const uint8_t*>(line.data()), line.size()));
  if (s.ok() && ::fsync(fd) != 0) s = ErrnoStatus("cannot sync the upload journal", errno);
  if (!s.ok()) return s;
  upload_id_ = upload_id;
  chunks_per_part_ = chunks_per_part;
  parts_.clear();
  return SyncDirectory(path_.substr(0, path_.rfind('/')));
}

absl::Status PartsJournal::Add(int number, const std::string& etag) {
  int fd = ::open(path_.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus("cannot open the upload journal", errno);
  Fd closer(fd);
  const std::string line = absl::StrCat("part ", number, " ", etag, "\n");
  absl::Status s = WriteAll(fd, absl::MakeConstSpan(
                                    reinterpret_cast<const uint8_t*>(line.data()), line.size()));
  if (s.ok() && ::fsync(fd) != 0) s = ErrnoStatus("cannot sync the upload journal", errno);
  if (!s.ok()) return s;
  parts_[number] = etag;
  return absl::OkStatus();
}

void PartsJournal::Remove() {
  ::unlink(path_.c_str());
  upload_id_.clear();
  chunks_per_part_ = 0;
  parts_.clear();
}

absl::StatusOr<std::string> PartsJournal::ReadSmall() {
  int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return ErrnoStatus("cannot open the upload journal", errno);
  Fd closer(fd);
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoStatus("cannot read the upload journal", errno);
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
    // At most kMaxParts lines of bounded length.
    if (out.size() > kMaxParts * 1100 + 2048) {
      return absl::DataLossError("the upload journal is too large");
    }
  }
  return out;
}

absl::Status Shared::RecordBoot() const {
  std::call_once(boot_once, [this] {
    int fd = ::open(BootsPath().c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW,
                    0600);
    if (fd < 0) {
      boot_status = ErrnoStatus("cannot record this start in the S3 store's boots file", errno);
      return;
    }
    Fd closer(fd);
    const std::string line = boot + "\n";
    boot_status = WriteAll(fd, absl::MakeConstSpan(
                                   reinterpret_cast<const uint8_t*>(line.data()), line.size()));
    if (boot_status.ok() && ::fsync(fd) != 0) {
      boot_status = ErrnoStatus("cannot sync the S3 store's boots file", errno);
    }
  });
  return boot_status;
}

std::set<std::string> Shared::Boots() const {
  std::set<std::string> out;
  int fd = ::open(BootsPath().c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return out;
  Fd closer(fd);
  std::string text(kMaxBoots * 17, '\0');
  struct stat st;
  if (::fstat(fd, &st) == 0 && static_cast<uint64_t>(st.st_size) > text.size()) {
    (void)::lseek(fd, st.st_size - static_cast<off_t>(text.size()), SEEK_SET);
  }
  size_t done = 0;
  for (;;) {
    const ssize_t n = ::read(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    done += static_cast<size_t>(n);
    if (done == text.size()) break;
  }
  text.resize(done);
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (line.size() == 16) out.insert(std::string(line));
  }
  return out;
}

absl::StatusOr<std::string> GetSmall(s3::Client& client, const s3::Location& at) {
  // A marker rewritten between the HEAD and the GET (its daemon moving it from "pending" to its
  // upload id) fails the pinned GET with kAborted: it is read again, whole.
  for (int attempt = 0;; ++attempt) {
    absl::StatusOr<s3::ObjectInfo> info = client.Head(at);
    if (!info.ok()) return info.status();
    if (info->size > 4096) {
      return absl::DataLossError(
          absl::StrCat("an object of ", info->size, " bytes is no marker (at most 4096)"));
    }
    std::string out(info->size, '\0');
    absl::Status s = client.GetRange(
        at, 0, absl::MakeSpan(reinterpret_cast<uint8_t*>(out.data()), out.size()), info->etag);
    if (absl::IsAborted(s) && attempt < kMarkerRereads) continue;
    if (!s.ok()) return s;
    if (info->etag.empty()) {
      // Unpinned (a server that gives no ETag): a marker rewritten meanwhile could have been
      // read in part ("pending <boot>" is shorter than "<upload id> <boot>"), so it counts only
      // if its size still is the one read.
      absl::StatusOr<s3::ObjectInfo> again = client.Head(at);
      if (!again.ok()) return again.status();
      if (again->size != info->size || !again->etag.empty()) {
        if (attempt < kMarkerRereads) continue;
        return absl::AbortedError("a marker object kept changing while it was read");
      }
    }
    return out;
  }
}

absl::StatusOr<bool> SamePreludeStored(s3::Client& client, const s3::Location& at,
                                       const Prelude& prelude, uint64_t size) {
  absl::StatusOr<s3::ObjectInfo> info = client.Head(at);
  if (!info.ok()) return info.status();
  if (info->size != size) return false;
  std::vector<uint8_t> header(prelude.header.size()), tail(prelude.tail.size());
  absl::Status s = client.GetRange(at, 0, absl::MakeSpan(header), info->etag);
  if (s.ok()) s = client.GetRange(at, size - tail.size(), absl::MakeSpan(tail), info->etag);
  if (!s.ok()) return s;
  return header == prelude.header && tail == prelude.tail;
}

absl::StatusOr<Prelude> SpooledPrelude(const std::string& path, uint64_t* file_size) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return ErrnoStatus("cannot open the spooled capsule", errno);
  Fd closer(fd);
  struct stat st;
  if (::fstat(fd, &st) != 0) return ErrnoStatus("cannot stat the spooled capsule", errno);
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (!S_ISREG(st.st_mode) || size < kHeaderSize + kSignatureSize + kFooterSize + 8) {
    return absl::DataLossError("the spooled capsule is too short");
  }
  std::vector<uint8_t> footer(kFooterSize);
  absl::Status s = PreadAll(fd, absl::MakeSpan(footer), size - kFooterSize, "the spooled capsule");
  if (!s.ok()) return s;
  absl::StatusOr<uint64_t> m = DecodeFooter(footer);
  if (!m.ok()) return m.status();
  if (*m > size - kHeaderSize - kSignatureSize - kFooterSize) {
    return absl::DataLossError("the spooled capsule's manifest is too large");
  }
  std::vector<uint8_t> manifest_bytes(*m);
  s = PreadAll(fd, absl::MakeSpan(manifest_bytes), size - kFooterSize - kSignatureSize - *m,
               "the spooled capsule");
  if (!s.ok()) return s;
  absl::StatusOr<Manifest> manifest = DecodeManifest(manifest_bytes);
  if (!manifest.ok()) return manifest.status();
  const Geometry g = manifest->geometry(*m);
  s = g.Check();
  if (!s.ok()) return s;
  if (g.FileSize() != size) return absl::DataLossError("the spooled capsule has another size");
  // The tail is held in memory, as an incoming capsule holds it (capsule/incoming.h).
  Prelude p;
  p.header.resize(kHeaderSize);
  p.tail.resize(size - g.TableOffset());
  s = PreadAll(fd, absl::MakeSpan(p.header), 0, "the spooled capsule");
  if (s.ok()) s = PreadAll(fd, absl::MakeSpan(p.tail), g.TableOffset(), "the spooled capsule");
  if (!s.ok()) return s;
  *file_size = size;
  return p;
}

}  // namespace bunker::capsule::internal_s3_store
