#include "capsule/s3_client.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "absl/strings/string_view.h"
#include "capsule/fd.h"
#include "capsule/s3_client_internal.h"
#include "capsule/s3_xml.h"
#include "crypto/status_hint.h"
#include "crypto/status_macros.h"

namespace bunker::capsule::s3 {

bool IsS3Url(std::string_view s) {
  return absl::StartsWith(absl::string_view(s.data(), s.size()), kScheme);
}

absl::StatusOr<Location> ParseUrl(std::string_view url_in) {
  const absl::string_view url(url_in.data(), url_in.size());
  if (!IsS3Url(url_in)) return absl::InvalidArgumentError("not an s3:// URL");
  absl::string_view rest = url.substr(kScheme.size());
  const size_t slash = rest.find('/');
  Location at;
  at.bucket = std::string(rest.substr(0, slash));
  if (slash != absl::string_view::npos) at.key = std::string(rest.substr(slash + 1));
  BUNKER_RETURN_IF_ERROR(CheckBucket(at.bucket));
  BUNKER_RETURN_IF_ERROR(CheckKey(at.key));
  return at;
}

std::string ToUrl(const Location& at) { return absl::StrCat(kScheme, at.bucket, "/", at.key); }

Config Config::Clone() const {
  Config c;
  c.endpoint = endpoint;
  c.region = region;
  c.access_key_id = access_key_id;
  c.secret_access_key = secret_access_key.Clone();
  c.session_token = session_token.Clone();
  c.max_attempts = max_attempts;
  c.base_backoff_ms = base_backoff_ms;
  c.max_backoff_ms = max_backoff_ms;
  c.max_retry_after_ms = max_retry_after_ms;
  c.connect_timeout_ms = connect_timeout_ms;
  c.stall_timeout_s = stall_timeout_s;
  c.attempt_timeout_s = attempt_timeout_s;
  return c;
}

absl::Status LoadCredentialsFile(const std::string& path, const std::string& profile,
                                 Config& config) {
  Fd file(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOFOLLOW));
  if (!file.valid()) {
    const int err = errno;
    if (err == ENOENT) {
      return absl::NotFoundError(absl::StrCat("S3 credentials file ", path, " not found"));
    }
    if (err == ELOOP) {
      return absl::PermissionDeniedError(
          absl::StrCat("S3 credentials file ", path, " is a symbolic link (refused)"));
    }
    return absl::PermissionDeniedError(
        absl::StrCat("cannot open S3 credentials file ", path, ": ", std::strerror(err)));
  }
  struct stat st;
  if (::fstat(file.get(), &st) != 0 || !S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(
        absl::StrCat("S3 credentials file ", path, " is not a regular file"));
  }
  if (st.st_uid != ::geteuid()) {
    return absl::PermissionDeniedError(absl::StrFormat(
        "S3 credentials file %s is owned by uid %d, not by you (uid %d)", path, st.st_uid,
        ::geteuid()));
  }
  if ((st.st_mode & 077) != 0) {
    return WithHint(absl::PermissionDeniedError(absl::StrFormat(
                        "S3 credentials file %s is accessible by others (mode %04o)", path,
                        st.st_mode & 07777)),
                    absl::StrCat("run: chmod 600 ", path));
  }
  if (st.st_size > static_cast<off_t>(kMaxCredentialsFile)) {
    return absl::InvalidArgumentError(
        absl::StrCat("S3 credentials file ", path, " is too large (over 64 KiB)"));
  }
  crypto::SecretBytes buf(static_cast<size_t>(st.st_size));
  size_t done = 0;
  while (done < buf.size()) {
    const ssize_t n = ::read(file.get(), buf.data() + done, buf.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    done += static_cast<size_t>(n);
  }
  const absl::string_view text(reinterpret_cast<const char*>(buf.data()), done);
  std::string section;
  bool found_section = false;
  std::string key_id;
  bool have_secret = false;
  size_t line_no = 0;
  for (size_t pos = 0; pos <= text.size();) {
    size_t end = text.find('\n', pos);
    if (end == absl::string_view::npos) end = text.size();
    absl::string_view line = absl::StripAsciiWhitespace(text.substr(pos, end - pos));
    pos = end + 1;
    ++line_no;
    if (line.empty() || line[0] == '#' || line[0] == ';') continue;
    if (line.front() == '[') {
      if (line.back() != ']') {
        return absl::InvalidArgumentError(
            absl::StrCat("S3 credentials file ", path, " line ", line_no, ": bad section"));
      }
      section = std::string(absl::StripAsciiWhitespace(line.substr(1, line.size() - 2)));
      if (section == profile) found_section = true;
      continue;
    }
    const size_t eq = line.find('=');
    if (eq == absl::string_view::npos) {
      // Never quote the line: it may hold a secret.
      return absl::InvalidArgumentError(absl::StrCat("S3 credentials file ", path, " line ",
                                                     line_no, ": expected NAME = VALUE"));
    }
    if (section != profile) continue;
    const std::string name =
        absl::AsciiStrToLower(absl::StripAsciiWhitespace(line.substr(0, eq)));
    const absl::string_view value = absl::StripAsciiWhitespace(line.substr(eq + 1));
    if (name == "aws_access_key_id") {
      key_id = std::string(value);
    } else if (name == "aws_secret_access_key") {
      config.secret_access_key = crypto::SecretBytes::CopyOf(std::string_view(value.data(), value.size()));
      have_secret = !value.empty();
    } else if (name == "aws_session_token") {
      config.session_token = crypto::SecretBytes::CopyOf(std::string_view(value.data(), value.size()));
    }
  }
  if (!found_section) {
    return absl::NotFoundError(
        absl::StrCat("S3 credentials file ", path, " has no profile [", profile, "]"));
  }
  if (key_id.empty() || !have_secret) {
    return absl::InvalidArgumentError(
        absl::StrCat("S3 credentials file ", path, " profile [", profile,
                     "] lacks aws_access_key_id or aws_secret_access_key"));
  }
  config.access_key_id = key_id;
  return absl::OkStatus();
}

absl::StatusOr<Config> ConfigFromEnvironment(const std::string& credentials_file) {
  Config config;
  config.region = Getenv("AWS_REGION");
  if (config.region.empty()) config.region = Getenv("AWS_DEFAULT_REGION");
  if (config.region.empty()) config.region = "us-east-1";
  for (char c : config.region) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '-') {
      return absl::InvalidArgumentError("AWS_REGION must be letters, digits and '-'");
    }
  }
  if (config.region.size() > 64) return absl::InvalidArgumentError("AWS_REGION is too long");
  config.endpoint = Getenv("AWS_ENDPOINT_URL_S3");
  if (config.endpoint.empty()) config.endpoint = Getenv("AWS_ENDPOINT_URL");
  while (!config.endpoint.empty() && config.endpoint.back() == '/') config.endpoint.pop_back();
  if (config.endpoint.empty()) {
    config.endpoint = absl::StrCat("https://s3.", config.region, ".amazonaws.com");
  }
  BUNKER_RETURN_IF_ERROR(CheckEndpoint(config.endpoint));
  const std::string attempts = Getenv("AWS_MAX_ATTEMPTS");
  if (!attempts.empty()) {
    int n = 0;
    if (!absl::SimpleAtoi(attempts, &n) || n < 1 || n > 20) {
      return absl::InvalidArgumentError("AWS_MAX_ATTEMPTS must be a number from 1 to 20");
    }
    config.max_attempts = n;
  }
  std::string profile = Getenv("AWS_PROFILE");
  if (profile.empty()) profile = "default";
  if (!credentials_file.empty()) {
    BUNKER_RETURN_IF_ERROR(LoadCredentialsFile(credentials_file, profile, config));
    return config;
  }
  const std::string id = Getenv("AWS_ACCESS_KEY_ID");
  const char* secret = std::getenv("AWS_SECRET_ACCESS_KEY");
  if (!id.empty() && secret != nullptr && *secret != '\0') {
    config.access_key_id = id;
    config.secret_access_key = crypto::SecretBytes::CopyOf(std::string_view(secret));
    const char* token = std::getenv("AWS_SESSION_TOKEN");
    if (token != nullptr && *token != '\0') {
      config.session_token = crypto::SecretBytes::CopyOf(std::string_view(token));
    }
    return config;
  }
  std::string shared = Getenv("AWS_SHARED_CREDENTIALS_FILE");
  if (shared.empty()) {
    const std::string home = Getenv("HOME");
    if (!home.empty()) shared = home + "/.aws/credentials";
  }
  if (shared.empty() || ::access(shared.c_str(), F_OK) != 0) {
    return WithHint(
        absl::NotFoundError("no S3 credentials found"),
        "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE with ~/.aws/credentials");
  }
  BUNKER_RETURN_IF_ERROR(LoadCredentialsFile(shared, profile, config));
  return config;
}

void ScrubCredentialsFromEnvironment() {
  for (const char* name : {"AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"}) {
    const size_t name_size = std::strlen(name);
    // Through `environ` rather than getenv: getenv finds the first of duplicate entries only,
    // and unsetenv removes them all.
    for (char** entry = environ; entry != nullptr && *entry != nullptr; ++entry) {
      char* var = *entry;
      if (std::strncmp(var, name, name_size) != 0 || var[name_size] != '=') continue;
      char* value = var + name_size + 1;
      crypto::Wipe(absl::MakeSpan(reinterpret_cast<uint8_t*>(value), std::strlen(value)));
    }
    ::unsetenv(name);
  }
}

// ---- The client -----------------------------------------------------------------------------

Client::Client(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Client::~Client() = default;

absl::StatusOr<std::unique_ptr<Client>> Client::Create(Config config) {
  BUNKER_RETURN_IF_ERROR(CheckEndpoint(config.endpoint));
  // SigV4 never sends the secret, but the key id and a session token (a bearer credential)
  // travel in headers: in clear text only to this machine.
  if (absl::StartsWith(config.endpoint, "http://") && !IsLoopbackEndpoint(config.endpoint)) {
    return WithHint(absl::InvalidArgumentError(absl::StrCat(
                        "S3 endpoint ", config.endpoint,
                        " is plain http: credentials are sent only over https:// (or http:// "
                        "to this machine)")),
                    "use an https:// endpoint");
  }
  if (config.access_key_id.empty() || config.secret_access_key.empty()) {
    return absl::InvalidArgumentError("S3 configuration lacks an access key or secret");
  }
  for (char c : config.access_key_id) {
    if (c < 0x21 || c > 0x7E) {
      return absl::InvalidArgumentError("S3 access key id must be printable ASCII");
    }
  }
  for (char c : config.region) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '-') {
      return absl::InvalidArgumentError("S3 region must be letters, digits and '-'");
    }
  }
  for (uint8_t c : config.secret_access_key.span()) {
    if (c < 0x20 || c > 0x7E) {
      return absl::InvalidArgumentError("S3 secret must be printable ASCII");
    }
  }
  // The token travels as a header of our own: a line break in it would add headers.
  for (uint8_t c : config.session_token.span()) {
    if (c < 0x21 || c > 0x7E) {
      return absl::InvalidArgumentError("S3 session token must be printable ASCII");
    }
  }
  // libcurl is loaded here, on the first client: a program that never names an s3:// location
  // never loads it (curl_api.h).
  BUNKER_ASSIGN_OR_RETURN(const CurlApi* curl, Curl());
  auto impl = std::make_unique<Impl>();
  impl->curl = curl;
  impl->secret_cstr = crypto::SecretBytes(config.secret_access_key.size() + 1);
  std::memcpy(impl->secret_cstr.data(), config.secret_access_key.data(),
              config.secret_access_key.size());
  impl->sigv4 = absl::StrCat("aws:amz:", config.region, ":s3");
  impl->config = std::move(config);
  return std::unique_ptr<Client>(new Client(std::move(impl)));
}

const std::string& Client::endpoint() const { return impl_->config.endpoint; }

Stats Client::stats() const {
  Stats s;
  s.requests = impl_->requests.load();
  s.get_requests = impl_->get_requests.load();
  s.bytes_received = impl_->bytes_received.load();
  return s;
}

absl::Status Client::CreateBucket(const std::string& bucket) {
  BUNKER_RETURN_IF_ERROR(CheckBucket(bucket));
  Request req;
  req.method = "PUT";
  req.bucket = bucket;
  Response r;
  absl::Status s = impl_->Do(req, r, impl_->About(Location{bucket, ""}));
  if (!s.ok() && r.body.find("<Code>BucketAlreadyOwnedByYou</Code>") != std::string::npos) {
    return absl::OkStatus();
  }
  return s;
}

absl::StatusOr<ObjectInfo> Client::Head(const Location& at, const Cancellation* cancel) {
  Request req;
  req.method = "HEAD";
  req.bucket = at.bucket;
  req.key = at.key;
  req.cancel = cancel;
  Response r;
  BUNKER_RETURN_IF_ERROR(impl_->Do(req, r, impl_->About(at)));
  ObjectInfo info;
  info.key = at.key;
  if (!ParseU64(r.Header("content-length"), &info.size)) {
    return Malformed(impl_->config.endpoint, "HEAD without a Content-Length");
  }
  info.etag = r.Header("etag");
  if (!info.etag.empty() && !IsServerToken(info.etag)) {
    return Malformed(impl_->config.endpoint, "an unusable ETag");
  }
  for (const auto& [name, value] : r.headers) {
    if (absl::StartsWith(name, "x-amz-meta-")) info.metadata[name.substr(11)] = value;
  }
  return info;
}

absl::Status Client::GetRange(const Location& at, uint64_t offset, absl::Span<uint8_t> out,
                              const std::string& if_match, const Cancellation* cancel) {
  if (out.empty()) return absl::OkStatus();
  Request req;
  req.bucket = at.bucket;
  req.key = at.key;
  req.data_out = out;
  req.cancel = cancel;
  const uint64_t last = offset + out.size() - 1;
  req.headers.push_back(absl::StrCat("Range: bytes=", offset, "-", last));
  if (!if_match.empty()) req.headers.push_back(absl::StrCat("If-Match: ", if_match));
  Response r;
  absl::Status s = impl_->Do(req, r, impl_->About(at));
  if (!s.ok()) return s;
  if (r.http == 206) {
    // "bytes FIRST-LAST/TOTAL" must be exactly what we asked for; a server clamps a range that
    // runs past the end to the object's size.
    const std::string range = r.Header("content-range");
    const size_t slash = range.rfind('/');
    uint64_t total = 0;
    if (slash == std::string::npos ||
        !ParseU64(absl::string_view(range).substr(slash + 1), &total)) {
      return Malformed(impl_->config.endpoint, "Content-Range without the object's size");
    }
    if (absl::StartsWith(range, absl::StrCat("bytes ", offset, "-")) && total <= last) {
      return absl::OutOfRangeError(absl::StrCat("S3: read past the end of ", ToUrl(at)));
    }
    if (range.substr(0, slash + 1) != absl::StrCat("bytes ", offset, "-", last, "/")) {
      return Malformed(impl_->config.endpoint, "Content-Range is not the range asked for");
    }
  } else if (!(r.http == 200 && offset == 0)) {
    return Malformed(impl_->config.endpoint, absl::StrCat("HTTP ", r.http, " to a ranged GET"));
  }
  if (r.data_received != out.size()) {
    return Malformed(impl_->config.endpoint,
                     absl::StrCat("got ", r.data_received, " bytes of ", out.size()));
  }
  // A server (or a proxy before it) that ignores If-Match must not slip another version in:
  // the reply names the version it is, and it must be the one pinned.
  if (!if_match.empty()) {
    const std::string etag = r.Header("etag");
    if (etag.empty()) return Malformed(impl_->config.endpoint, "no ETag on a pinned ranged GET");
    if (etag != if_match) {
      return absl::AbortedError(absl::StrCat("S3: ", ToUrl(at), " changed while reading"));
    }
  }
  impl_->bytes_received.fetch_add(out.size(), std::memory_order_relaxed);
  return absl::OkStatus();
}

absl::Status Client::Put(const Location& at, absl::Span<const uint8_t> body,
                         const std::map<std::string, std::string>& metadata) {
  BUNKER_RETURN_IF_ERROR(CheckMetadata(metadata));
  Request req;
  req.method = "PUT";
  req.bucket = at.bucket;
  req.key = at.key;
  req.body = body;
  req.headers.push_back("Content-Type: application/octet-stream");
  for (const auto& [name, value] : metadata) {
    req.headers.push_back(absl::StrCat("x-amz-meta-", name, ": ", value));
  }
  Response r;
  return impl_->Do(req, r, impl_->About(at));
}

absl::Status Client::Delete(const Location& at) {
  Request req;
  req.method = "DELETE";
  req.bucket = at.bucket;
  req.key = at.key;
  Response r;
  absl::Status s = impl_->Do(req, r, impl_->About(at));
  if (absl::IsNotFound(s) && !at.key.empty()) {
    // An absent key is fine; an absent bucket is not.
    return r.body.find("NoSuchBucket") != std::string::npos ? s : absl::OkStatus();
  }
  return s;
}

absl::StatusOr<std::vector<ObjectInfo>> Client::List(const std::string& bucket,
                                                     const std::string& prefix) {
  std::vector<ObjectInfo> out;
  std::string marker;
  for (size_t page = 0; page < kMaxListPages; ++page) {
    Request req;
    req.bucket = bucket;
    req.query = {{"prefix", prefix}};
    if (!marker.empty()) req.query.emplace_back("marker", marker);
    Response r;
    BUNKER_RETURN_IF_ERROR(impl_->Do(req, r, impl_->About(Location{bucket, ""})));
    absl::StatusOr<XmlElement> xml = ParseXml(r.body);
    if (!xml.ok() || xml->name != "ListBucketResult") {
      return Malformed(impl_->config.endpoint, "not a ListBucketResult");
    }
    std::string last_key;
    for (const XmlElement* c : xml->Children("Contents")) {
      ObjectInfo info;
      info.key = c->ChildText("Key");
      info.etag = c->ChildText("ETag");
      if (info.key.empty() || !ParseU64(c->ChildText("Size"), &info.size)) {
        return Malformed(impl_->config.endpoint, "listing entry without a key or size");
      }
      if (!absl::StartsWith(info.key, prefix) || info.key <= marker) {
        return Malformed(impl_->config.endpoint, "listing out of order or outside the prefix");
      }
      last_key = info.key;
      if (out.size() >= kMaxListEntries) {
        return Malformed(impl_->config.endpoint, "listing of over 1,000,000 objects");
      }
      out.push_back(std::move(info));
    }
    if (xml->ChildText("IsTruncated") != "true") return out;
    std::string next = xml->ChildText("NextMarker");
    if (next.empty()) next = last_key;
    if (next.empty() || next <= marker) {
      return Malformed(impl_->config.endpoint, "truncated listing that does not advance");
    }
    marker = next;
  }
  return Malformed(impl_->config.endpoint, "listing too long");
}

}  // namespace bunker::capsule::s3
