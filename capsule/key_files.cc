#include "capsule/key_files.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/match.h"
#include "capsule/fd.h"
#include "capsule/io.h"
#include "crypto/secret.h"
#include "crypto/status_hint.h"

namespace bunker::capsule {
namespace {

constexpr size_t kMaxKeyFileSize = 16 << 10;

absl::Status Annotate(const absl::Status& s, const std::string& path) {
  return absl::Status(s.code(), absl::StrCat(path, ": ", s.message()));
}

}  // namespace

absl::Status WriteIdentityFiles(const crypto::Identity& identity, const std::string& base) {
  const std::string key_path = base + ".key";
  const std::string pub_path = base + ".pub";
  for (const std::string& p : {key_path, pub_path}) {
    if (::access(p.c_str(), F_OK) == 0) {
      return absl::AlreadyExistsError(absl::StrCat(p, " already exists; not overwriting a key"));
    }
  }
  absl::StatusOr<std::unique_ptr<AtomicFileWriter>> key = AtomicFileWriter::Create(key_path, 0600);
  if (!key.ok()) return key.status();
  absl::StatusOr<std::unique_ptr<AtomicFileWriter>> pub = AtomicFileWriter::Create(pub_path, 0644);
  if (!pub.ok()) return pub.status();
  const crypto::SecretBytes pem = identity.ToPem();
  absl::Status s = (*key)->Append(pem.span());
  if (!s.ok()) return s;
  const std::string pub_pem = identity.public_identity().ToPem();
  s = (*pub)->Append(absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(pub_pem.data()),
                                         pub_pem.size()));
  if (!s.ok()) return s;
  s = (*key)->Commit();
  if (!s.ok()) return s;
  s = (*pub)->Commit();
  if (!s.ok()) {
    ::unlink(key_path.c_str());
    return s;
  }
  return absl::OkStatus();
}

absl::StatusOr<crypto::Identity> LoadIdentity(const std::string& path) {
  Fd file(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));  // a FIFO must not hang us
  const int fd = file.get();
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT) return absl::NotFoundError(absl::StrCat("key file ", path, " not found"));
    return absl::PermissionDeniedError(
        absl::StrCat("cannot open key file ", path, ": ", std::strerror(err)));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(path, " is not a regular file"));
  }
  if (st.st_size > static_cast<off_t>(kMaxKeyFileSize)) {
    return absl::InvalidArgumentError(absl::StrCat(path, " is too large to be a key file"));
  }
  crypto::SecretBytes buf(static_cast<size_t>(st.st_size));
  size_t done = 0;
  while (done < buf.size()) {
    ssize_t n = ::read(fd, buf.data() + done, buf.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    done += static_cast<size_t>(n);
  }
  file.Reset();
  const std::string_view text(reinterpret_cast<const char*>(buf.data()), done);
  if (text.find("PRIVATE KEY") == std::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, " is not a private key", text.find("PUBLIC KEY") != std::string_view::npos
                                           ? " (it is a public key; pass the .key file)"
                                           : ""));
  }
  // Refuse, as ssh does, a private key others can read: it may already be compromised.
  if ((st.st_mode & 077) != 0) {
    return WithHint(absl::PermissionDeniedError(
                        absl::StrFormat("key file %s is accessible by others (mode %04o)", path,
                                        st.st_mode & 07777)),
                    absl::StrCat("run: chmod 600 ", path));
  }
  absl::StatusOr<crypto::Identity> id = crypto::Identity::FromPem(text);
  if (!id.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, " is not a Bunker private key (", id.status().message(), ")"));
  }
  return id;
}

absl::StatusOr<crypto::PublicIdentity> LoadPublicIdentity(const std::string& path) {
  absl::StatusOr<std::string> text = ReadSmallFile(path, kMaxKeyFileSize);
  if (!text.ok()) {
    if (absl::IsNotFound(text.status())) {
      return absl::NotFoundError(absl::StrCat("public key file ", path, " not found"));
    }
    return text.status();
  }
  absl::StatusOr<crypto::PublicIdentity> pub = crypto::PublicIdentity::FromPem(*text);
  if (!pub.ok()) {
    if (absl::StrContains(*text, "PRIVATE KEY")) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, " is a private key; pass the .pub file instead"));
    }
    return Annotate(pub.status(), path);
  }
  return pub;
}

absl::StatusOr<std::vector<crypto::PublicIdentity>> LoadTrust(
    const std::vector<std::string>& paths) {
  std::vector<crypto::PublicIdentity> out;
  for (const std::string& p : paths) {
    struct stat st;
    if (::stat(p.c_str(), &st) != 0) {
      return absl::NotFoundError(absl::StrCat("trust path ", p, " not found"));
    }
    if (!S_ISDIR(st.st_mode)) {
      absl::StatusOr<crypto::PublicIdentity> pub = LoadPublicIdentity(p);
      if (!pub.ok()) return pub.status();
      out.push_back(*pub);
      continue;
    }
    DIR* dir = ::opendir(p.c_str());
    if (dir == nullptr) return absl::UnavailableError(absl::StrCat("cannot read directory ", p));
    std::vector<std::string> names;
    while (struct dirent* d = ::readdir(dir)) {
      const std::string name = d->d_name;
      if (absl::EndsWith(name, ".pub")) names.push_back(name);
    }
    ::closedir(dir);
    std::sort(names.begin(), names.end());
    if (names.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("trust directory ", p, " has no .pub files"));
    }
    for (const std::string& name : names) {
      absl::StatusOr<crypto::PublicIdentity> pub = LoadPublicIdentity(p + "/" + name);
      if (!pub.ok()) return pub.status();
      out.push_back(*pub);
    }
  }
  return out;
}

}  // namespace bunker::capsule
