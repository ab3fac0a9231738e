#include "capsule/s3_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <curl/curl.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <list>
#include <mutex>
#include <random>
#include <thread>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "absl/strings/string_view.h"
#include "capsule/fd.h"
#include "capsule/parallel.h"
#include "capsule/s3_xml.h"
#include "capsule/utf8.h"
#include "crypto/sha256.h"
#include "crypto/status_hint.h"
#include "crypto/status_macros.h"

namespace bunker::capsule::s3 {
namespace {

constexpr absl::string_view kScheme = "s3://";
constexpr size_t kMaxKeySize = 1024;
constexpr size_t kMaxCredentialsFile = 64 * 1024;
constexpr size_t kMaxHeaders = 256;
// Listing pages (1,000 entries) and the parts of an upload (at most 10,000) are bounded so a
// hostile server cannot make a listing loop forever.
constexpr size_t kMaxListPages = 100000;

bool IsBucketChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-';
}

absl::Status CheckBucket(absl::string_view b) {
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("invalid S3 bucket name: ", why));
  };
  if (b.empty()) return bad("empty (expected s3://BUCKET/KEY)");
  if (b.size() < 3 || b.size() > 63) return bad("must be 3 to 63 characters");
  for (char c : b) {
    if (!IsBucketChar(c)) return bad("only lowercase letters, digits, '.' and '-' are allowed");
  }
  if (b.front() == '.' || b.front() == '-' || b.back() == '.' || b.back() == '-') {
    return bad("must start and end with a letter or digit");
  }
  if (absl::StrContains(b, "..")) return bad("must not contain \"..\"");
  bool all_digits_and_dots = true;
  for (char c : b) all_digits_and_dots &= (c == '.' || (c >= '0' && c <= '9'));
  if (all_digits_and_dots) return bad("must not look like an IP address");
  return absl::OkStatus();
}

absl::Status CheckKey(absl::string_view key) {
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("invalid S3 key: ", why));
  };
  if (key.size() > kMaxKeySize) return bad("longer than 1024 bytes");
  for (size_t i = 0; i < key.size();) {
    char32_t cp;
    const size_t n = DecodeUtf8(std::string_view(key.data() + i, key.size() - i), &cp);
    if (n == 0) return bad("not valid UTF-8");
    if (cp < 0x20 || cp == 0x7F || (cp >= 0x80 && cp < 0xA0)) return bad("control character");
    i += n;
  }
  if (key.empty()) return absl::OkStatus();
  size_t start = 0;
  while (true) {
    const size_t slash = key.find('/', start);
    const absl::string_view seg =
        key.substr(start, slash == absl::string_view::npos ? absl::string_view::npos : slash - start);
    const bool last = slash == absl::string_view::npos;
    if (seg == "." || seg == "..") return bad("\".\" and \"..\" segments are not allowed");
    if (seg.empty() && !(last && start > 0)) {
      return bad(start == 0 ? "must not start with '/'" : "empty segment (\"//\")");
    }
    if (last) break;
    start = slash + 1;
  }
  return absl::OkStatus();
}

// S3's URI encoding (SigV4 "UriEncode"): everything but unreserved characters as %XX with
// uppercase hex; '/' kept when `keep_slash` (object keys).
std::string UriEncode(absl::string_view s, bool keep_slash) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size() * 3);
  for (unsigned char c : s) {
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
        c == '_' || c == '.' || c == '~' || (keep_slash && c == '/')) {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

absl::Status CheckEndpoint(absl::string_view e) {
  const bool http = absl::StartsWith(e, "http://");
  const bool https = absl::StartsWith(e, "https://");
  if (!http && !https) {
    return absl::InvalidArgumentError("S3 endpoint must start with http:// or https://");
  }
  const absl::string_view rest = e.substr(http ? 7 : 8);
  if (rest.empty()) return absl::InvalidArgumentError("S3 endpoint has no host");
  for (char c : rest) {
    const bool ok = absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' ||
                    c == ':' || c == '[' || c == ']' || c == '_';
    if (!ok) {
      return absl::InvalidArgumentError(
          "S3 endpoint must be scheme://HOST[:PORT] (no path, user or query)");
    }
  }
  return absl::OkStatus();
}

// True if the endpoint's host is this machine: "localhost", an IPv4 address in 127.0.0.0/8 or
// [::1]. Addresses are parsed with inet_pton, so a name that only looks like one ("127.0.0.999",
// "127.0.0.1.example") is not loopback: curl would look it up in the DNS.
bool IsLoopbackEndpoint(absl::string_view e) {
  absl::string_view host = e.substr(e.find("://") + 3);
  if (absl::StartsWith(host, "[")) {
    const size_t close = host.find(']');
    if (close == absl::string_view::npos) return false;
    const absl::string_view rest = host.substr(close + 1);
    if (!rest.empty() && rest[0] != ':') return false;
    in6_addr a6;
    const std::string inner(host.substr(1, close - 1));
    return inet_pton(AF_INET6, inner.c_str(), &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6);
  }
  host = host.substr(0, host.find(':'));
  if (host == "localhost") return true;
  in_addr a4;
  const std::string name(host);
  return inet_pton(AF_INET, name.c_str(), &a4) == 1 && (ntohl(a4.s_addr) >> 24) == 127;
}

std::string Getenv(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::string(v) : std::string();
}

// ---- Errors -------------------------------------------------------------------------------

struct Response {
  long http = 0;
  std::map<std::string, std::string> headers;  // lowercase names
  std::string body;                            // bounded by kMaxResponseBody
  size_t data_received = 0;                    // bytes written into a GetRange buffer
  bool overflow = false;                       // the server sent more than we accept
  std::string Header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? std::string() : it->second;
  }
};

// What a request was about, for error texts.
struct Subject {
  const std::string* endpoint;
  std::string bucket;
  std::string key;
  std::string upload_id;
};

// The one mapping from an S3 response to a status (spec/STORE.md "Errors").
absl::Status StatusFromResponse(const Response& r, const Subject& what) {
  std::string code;
  if (!r.body.empty()) {
    absl::StatusOr<XmlElement> xml = ParseXml(r.body);
    if (xml.ok() && xml->name == "Error") code = xml->ChildText("Code");
  }
  const std::string object =
      what.key.empty() ? absl::StrCat("bucket ", what.bucket)
                       : absl::StrCat("s3://", what.bucket, "/", what.key);
  const std::string shown_code =
      code.empty() ? "" : absl::StrCat(" (", ToValidUtf8(code.substr(0, 64)), ")");
  if (code == "NoSuchBucket") {
    return absl::NotFoundError(absl::StrCat("S3: no bucket ", what.bucket, " at ", *what.endpoint));
  }
  if (code == "NoSuchKey") return absl::NotFoundError(absl::StrCat("S3: ", object, " not found"));
  if (code == "NoSuchUpload") {
    return absl::NotFoundError(absl::StrCat("S3: no multipart upload ", what.upload_id, " for ",
                                            object, " (completed or aborted?)"));
  }
  if (r.http == 412 || code == "PreconditionFailed") {
    return absl::AbortedError(absl::StrCat("S3: ", object, " changed while reading"));
  }
  if (r.http == 403 || code == "SignatureDoesNotMatch" || code == "InvalidAccessKeyId" ||
      code == "AccessDenied") {
    return WithHint(absl::PermissionDeniedError(absl::StrCat(
                        "S3: access denied by ", *what.endpoint, " (wrong key or secret?)",
                        shown_code)),
                    "check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or the credentials file");
  }
  if (r.http == 404) {
    return absl::NotFoundError(absl::StrCat("S3: ", object, " not found at ", *what.endpoint));
  }
  if (r.http == 416 || code == "InvalidRange") {
    return absl::OutOfRangeError(absl::StrCat("S3: read past the end of ", object));
  }
  if (r.http == 409 && code == "BucketAlreadyOwnedByYou") return absl::OkStatus();
  if (r.http >= 500 || r.http == 429 || code == "SlowDown" || code == "RequestTimeout") {
    return absl::UnavailableError(absl::StrCat("S3: ", *what.endpoint, " is unavailable (HTTP ",
                                               r.http, shown_code, ")"));
  }
  if (r.http == 501 || code == "NotImplemented") {
    return absl::UnimplementedError(
        absl::StrCat("S3: ", *what.endpoint, " does not implement this request", shown_code));
  }
  return absl::InvalidArgumentError(absl::StrCat("S3: request for ", object, " refused (HTTP ",
                                                 r.http, shown_code, ")"));
}

bool Retryable(const Response& r) {
  if (r.http >= 500 || r.http == 429) return r.http != 501;
  if (r.http == 400 && r.body.find("<Code>RequestTimeout</Code>") != std::string::npos) return true;
  return false;
}

bool RetryableCurl(CURLcode c) {
  switch (c) {
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_SSL_CONNECT_ERROR:
      return true;
    default:
      return false;
  }
}

// ---- Credentials ----------------------------------------------------------------------------

void InitCurlOnce() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

}  // namespace

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

// ---- The client -----------------------------------------------------------------------------

namespace {

// One HTTP exchange: what to send and where the answer goes.
struct Request {
  std::string method = "GET";
  std::string bucket;
  std::string key;                                          // raw (encoded here)
  std::vector<std::pair<std::string, std::string>> query;  // raw (encoded here)
  std::vector<std::string> headers;                         // "Name: value"
  absl::Span<const uint8_t> body;
  absl::Span<uint8_t> data_out;  // GetRange: object bytes go here on a 2xx
};

struct Transfer {
  Response* response;
  absl::Span<uint8_t> data_out;
  CURL* curl;
};

size_t OnHeader(char* buffer, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const size_t len = size * n;
  absl::string_view line(buffer, len);
  if (absl::StartsWith(line, "HTTP/")) {
    t->response->headers.clear();  // a new response (after 100 Continue)
    return len;
  }
  const size_t colon = line.find(':');
  if (colon == absl::string_view::npos) return len;
  if (t->response->headers.size() >= kMaxHeaders) return 0;
  std::string name = absl::AsciiStrToLower(absl::StripAsciiWhitespace(line.substr(0, colon)));
  std::string value(absl::StripAsciiWhitespace(line.substr(colon + 1)));
  t->response->headers[std::move(name)] = std::move(value);
  return len;
}

size_t OnData(char* buffer, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const size_t len = size * n;
  long http = 0;
  curl_easy_getinfo(t->curl, CURLINFO_RESPONSE_CODE, &http);
  if ((http == 200 || http == 206) && t->data_out.data() != nullptr) {
    Response& r = *t->response;
    if (r.data_received + len > t->data_out.size()) {
      r.overflow = true;
      return 0;
    }
    std::memcpy(t->data_out.data() + r.data_received, buffer, len);
    r.data_received += len;
    return len;
  }
  if (t->response->body.size() + len > kMaxResponseBody) {
    t->response->overflow = true;
    return 0;
  }
  t->response->body.append(buffer, len);
  return len;
}

std::string HexSha256(absl::Span<const uint8_t> body) {
  return crypto::ToHex(crypto::Sha256::Hash(body));
}

// "-" = empty body's hash, computed once.
const std::string& EmptySha256() {
  static const std::string* h = new std::string(HexSha256({}));
  return *h;
}

std::string XmlEscape(absl::string_view s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '&': out += "&amp;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&apos;"; break;
      default: out.push_back(c);
    }
  }
  return out;
}

absl::Status CheckMetadata(const std::map<std::string, std::string>& metadata) {
  for (const auto& [name, value] : metadata) {
    if (name.empty() || name.size() > 128) {
      return absl::InvalidArgumentError("S3 metadata name must be 1 to 128 characters");
    }
    for (char c : name) {
      if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) {
        return absl::InvalidArgumentError(
            absl::StrCat("S3 metadata name ", name, " must be lowercase [a-z0-9-]"));
      }
    }
    for (char c : value) {
      if (c < 0x20 || c > 0x7E) {
        return absl::InvalidArgumentError(
            absl::StrCat("S3 metadata ", name, " must be printable ASCII"));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status Malformed(const std::string& endpoint, absl::string_view what) {
  return absl::UnavailableError(
      absl::StrCat("S3: malformed response from ", endpoint, " (", what, ")"));
}

bool ParseU64(absl::string_view s, uint64_t* out) { return absl::SimpleAtoi(s, out); }

}  // namespace

struct Client::Impl {
  Config config;
  crypto::SecretBytes secret_cstr;  // the secret with a NUL, for CURLOPT_PASSWORD
  std::string sigv4;                // "aws:amz:REGION:s3"
  std::mutex mu;
  std::vector<CURL*> idle;
  std::atomic<uint64_t> requests{0};
  std::atomic<uint64_t> get_requests{0};
  std::atomic<uint64_t> bytes_received{0};

  ~Impl() {
    for (CURL* c : idle) curl_easy_cleanup(c);
  }

  CURL* Acquire() {
    {
      std::lock_guard<std::mutex> lock(mu);
      if (!idle.empty()) {
        CURL* c = idle.back();
        idle.pop_back();
        return c;
      }
    }
    return curl_easy_init();
  }
  void Release(CURL* c) {
    std::lock_guard<std::mutex> lock(mu);
    if (idle.size() < 64) {
      idle.push_back(c);
    } else {
      curl_easy_cleanup(c);
    }
  }

  std::string Url(const Request& req) const {
    std::string url = absl::StrCat(config.endpoint, "/", req.bucket);
    if (!req.key.empty()) absl::StrAppend(&url, "/", UriEncode(req.key, true));
    // Query parameters sorted by name, as SigV4's canonical form has them (libcurl sorts too).
    std::vector<std::pair<std::string, std::string>> q = req.query;
    std::sort(q.begin(), q.end());
    for (size_t i = 0; i < q.size(); ++i) {
      absl::StrAppend(&url, i == 0 ? "?" : "&", UriEncode(q[i].first, false), "=",
                      UriEncode(q[i].second, false));
    }
    return url;
  }

  // One attempt. Returns the curl code; fills `r`.
  CURLcode Once(const Request& req, Response& r) {
    CURL* c = Acquire();
    if (c == nullptr) return CURLE_OUT_OF_MEMORY;
    curl_easy_reset(c);
    Transfer t{&r, req.data_out, c};
    const std::string url = Url(req);
    curl_easy_setopt(c, CURLOPT_URL, url.c_str());
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    // Plain http goes to this machine only (Client::Create): never through a proxy named by
    // http_proxy or ALL_PROXY, which would carry the key id and a session token in clear text.
    if (absl::StartsWith(url, "http://")) curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(config.connect_timeout_ms));
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1024L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, static_cast<long>(config.stall_timeout_s));
    curl_easy_setopt(c, CURLOPT_AWS_SIGV4, sigv4.c_str());
    curl_easy_setopt(c, CURLOPT_USERNAME, config.access_key_id.c_str());
    curl_easy_setopt(c, CURLOPT_PASSWORD, reinterpret_cast<const char*>(secret_cstr.data()));
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, &OnHeader);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &t);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, &OnData);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &t);
    curl_slist* headers = nullptr;
    const std::string sha = req.body.empty() ? EmptySha256() : HexSha256(req.body);
    headers = curl_slist_append(headers, ("x-amz-content-sha256: " + sha).c_str());
    std::string token_header;
    if (!config.session_token.empty()) {
      token_header = "x-amz-security-token: ";
      token_header.append(reinterpret_cast<const char*>(config.session_token.data()),
                          config.session_token.size());
      headers = curl_slist_append(headers, token_header.c_str());
      crypto::Wipe(absl::MakeSpan(reinterpret_cast<uint8_t*>(token_header.data()),
                                  token_header.size()));
    }
    for (const std::string& h : req.headers) headers = curl_slist_append(headers, h.c_str());
    if (req.method == "HEAD") {
      curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    } else if (req.method == "GET") {
      curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
    } else {
      curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, req.method.c_str());
      if (req.method == "PUT" || req.method == "POST") {
        static const uint8_t kNothing = 0;
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(req.body.size()));
        curl_easy_setopt(c, CURLOPT_POSTFIELDS,
                         req.body.empty() ? &kNothing : req.body.data());
        // No "Expect:" override: libcurl 7.88 would sign the emptied header and the server
        // would refuse the signature. Large bodies wait for 100 Continue instead (capped).
        curl_easy_setopt(c, CURLOPT_EXPECT_100_TIMEOUT_MS, 200L);
      }
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
    requests.fetch_add(1, std::memory_order_relaxed);
    if (req.method == "GET") get_requests.fetch_add(1, std::memory_order_relaxed);
    CURLcode code = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.http);
    // Drop the copies libcurl keeps of the credentials before the handle goes back to the pool.
    // (libcurl frees its copy of the password without wiping it: spec/STORE.md "Credentials".)
    curl_easy_setopt(c, CURLOPT_USERNAME, nullptr);
    curl_easy_setopt(c, CURLOPT_PASSWORD, nullptr);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, nullptr);
    // The header list is ours: its copy of the session token is wiped before it is freed.
    for (curl_slist* h = headers; h != nullptr; h = h->next) {
      if (h->data != nullptr) {
        crypto::Wipe(absl::MakeSpan(reinterpret_cast<uint8_t*>(h->data), std::strlen(h->data)));
      }
    }
    curl_slist_free_all(headers);
    if (code != CURLE_OK && code != CURLE_WRITE_ERROR) {
      // The connection is in an unknown state: do not reuse it.
      curl_easy_cleanup(c);
    } else {
      Release(c);
    }
    return code;
  }

  void Backoff(int attempt, const Response& r) {
    thread_local std::mt19937 rng{std::random_device{}()};
    const int64_t cap = std::min<int64_t>(
        config.max_backoff_ms, int64_t{config.base_backoff_ms} << std::min(attempt, 20));
    int64_t delay = cap / 2 + std::uniform_int_distribution<int64_t>(0, cap / 2)(rng);
    uint64_t retry_after = 0;
    if (ParseU64(r.Header("retry-after"), &retry_after)) {
      delay = std::max<int64_t>(
          delay, std::min<int64_t>(config.max_retry_after_ms,
                                   static_cast<int64_t>(std::min<uint64_t>(retry_after, 3600)) *
                                       1000));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(delay));
  }

  // Sends `req`, retrying what may succeed on another try. On return `r` is a 2xx response,
  // or the status says why not.
  absl::Status Do(const Request& req, Response& r, const Subject& what) {
    absl::Status last;
    for (int attempt = 0; attempt < std::max(1, config.max_attempts); ++attempt) {
      if (attempt > 0) Backoff(attempt - 1, r);
      r = Response();
      const CURLcode code = Once(req, r);
      if (code == CURLE_WRITE_ERROR && r.overflow) {
        return Malformed(config.endpoint, "response larger than expected");
      }
      if (code != CURLE_OK) {
        last = absl::UnavailableError(absl::StrCat("S3: cannot reach ", config.endpoint, " (",
                                                   curl_easy_strerror(code), ")"));
        if (RetryableCurl(code)) continue;
        return last;
      }
      if (r.http >= 200 && r.http < 300) return absl::OkStatus();
      last = StatusFromResponse(r, what);
      if (!Retryable(r)) return last;
    }
    if (config.max_attempts > 1) {
      return absl::UnavailableError(
          absl::StrCat(last.message(), "; gave up after ", config.max_attempts, " attempts"));
    }
    return last;
  }

  Subject About(const Location& at, const std::string& upload_id = "") const {
    return Subject{&config.endpoint, at.bucket, at.key, upload_id};
  }
};

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
  InitCurlOnce();
  auto impl = std::make_unique<Impl>();
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

absl::StatusOr<ObjectInfo> Client::Head(const Location& at) {
  Request req;
  req.method = "HEAD";
  req.bucket = at.bucket;
  req.key = at.key;
  Response r;
  BUNKER_RETURN_IF_ERROR(impl_->Do(req, r, impl_->About(at)));
  ObjectInfo info;
  info.key = at.key;
  if (!ParseU64(r.Header("content-length"), &info.size)) {
    return Malformed(impl_->config.endpoint, "HEAD without a Content-Length");
  }
  info.etag = r.Header("etag");
  for (const auto& [name, value] : r.headers) {
    if (absl::StartsWith(name, "x-amz-meta-")) info.metadata[name.substr(11)] = value;
  }
  return info;
}

absl::Status Client::GetRange(const Location& at, uint64_t offset, absl::Span<uint8_t> out,
                              const std::string& if_match) {
  if (out.empty()) return absl::OkStatus();
  Request req;
  req.bucket = at.bucket;
  req.key = at.key;
  req.data_out = out;
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
    if (slash != std::string::npos && ParseU64(absl::string_view(range).substr(slash + 1), &total) &&
        absl::StartsWith(range, absl::StrCat("bytes ", offset, "-")) && total <= last) {
      return absl::OutOfRangeError(absl::StrCat("S3: read past the end of ", ToUrl(at)));
    }
    const std::string expected = absl::StrCat("bytes ", offset, "-", last, "/");
    if (!absl::StartsWith(range, expected)) {
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

absl::StatusOr<std::string> Client::CreateMultipartUpload(
    const Location& at, const std::map<std::string, std::string>& metadata) {
  BUNKER_RETURN_IF_ERROR(CheckMetadata(metadata));
  Request req;
  req.method = "POST";
  req.bucket = at.bucket;
  req.key = at.key;
  req.query = {{"uploads", ""}};
  req.headers.push_back("Content-Type: application/octet-stream");
  for (const auto& [name, value] : metadata) {
    req.headers.push_back(absl::StrCat("x-amz-meta-", name, ": ", value));
  }
  Response r;
  BUNKER_RETURN_IF_ERROR(impl_->Do(req, r, impl_->About(at)));
  absl::StatusOr<XmlElement> xml = ParseXml(r.body);
  if (!xml.ok() || xml->name != "InitiateMultipartUploadResult") {
    return Malformed(impl_->config.endpoint, "not an InitiateMultipartUploadResult");
  }
  std::string id = xml->ChildText("UploadId");
  if (id.empty() || id.size() > 1024) {
    return Malformed(impl_->config.endpoint, "no usable UploadId");
  }
  return id;
}

absl::StatusOr<std::string> Client::UploadPart(const Location& at, const std::string& upload_id,
                                               int part_number, absl::Span<const uint8_t> body) {
  if (part_number < 1 || part_number > 10000) {
    return absl::InvalidArgumentError("S3 part number must be 1 to 10000");
  }
  Request req;
  req.method = "PUT";
  req.bucket = at.bucket;
  req.key = at.key;
  req.body = body;
  req.query = {{"partNumber", std::to_string(part_number)}, {"uploadId", upload_id}};
  req.headers.push_back("Content-Type: application/octet-stream");
  Response r;
  BUNKER_RETURN_IF_ERROR(impl_->Do(req, r, impl_->About(at, upload_id)));
  std::string etag = r.Header("etag");
  if (etag.empty()) return Malformed(impl_->config.endpoint, "part uploaded without an ETag");
  return etag;
}

absl::StatusOr<std::vector<Part>> Client::ListParts(const Location& at,
                                                    const std::string& upload_id) {
  std::vector<Part> out;
  int marker = 0;
  for (size_t page = 0; page < kMaxListPages; ++page) {
    Request req;
    req.bucket = at.bucket;
    req.key = at.key;
    req.query = {{"uploadId", upload_id}};
    if (marker > 0) req.query.emplace_back("part-number-marker", std::to_string(marker));
    Response r;
    BUNKER_RETURN_IF_ERROR(impl_->Do(req, r, impl_->About(at, upload_id)));
    absl::StatusOr<XmlElement> xml = ParseXml(r.body);
    if (!xml.ok() || xml->name != "ListPartsResult") {
      return Malformed(impl_->config.endpoint, "not a ListPartsResult");
    }
    for (const XmlElement* p : xml->Children("Part")) {
      Part part;
      if (!absl::SimpleAtoi(p->ChildText("PartNumber"), &part.number) ||
          !ParseU64(p->ChildText("Size"), &part.size) || part.number < 1 ||
          part.number > 10000 || part.number <= marker ||
          (!out.empty() && part.number <= out.back().number)) {
        return Malformed(impl_->config.endpoint, "bad part in a listing");
      }
      part.etag = p->ChildText("ETag");
      out.push_back(std::move(part));
    }
    if (xml->ChildText("IsTruncated") != "true") return out;
    int next = 0;
    if (!absl::SimpleAtoi(xml->ChildText("NextPartNumberMarker"), &next) || next <= marker) {
      return Malformed(impl_->config.endpoint, "truncated part listing that does not advance");
    }
    marker = next;
  }
  return Malformed(impl_->config.endpoint, "part listing too long");
}

absl::StatusOr<std::string> Client::CompleteMultipartUpload(const Location& at,
                                                            const std::string& upload_id,
                                                            const std::vector<Part>& parts) {
  std::string body = "<CompleteMultipartUpload>";
  for (const Part& p : parts) {
    absl::StrAppend(&body, "<Part><PartNumber>", p.number, "</PartNumber><ETag>",
                    XmlEscape(p.etag), "</ETag></Part>");
  }
  body += "</CompleteMultipartUpload>";
  Request req;
  req.method = "POST";
  req.bucket = at.bucket;
  req.key = at.key;
  req.query = {{"uploadId", upload_id}};
  req.body = absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(body.data()), body.size());
  req.headers.push_back("Content-Type: application/xml");
  Response r;
  const Subject what = impl_->About(at, upload_id);
  BUNKER_RETURN_IF_ERROR(impl_->Do(req, r, what));
  // S3 may answer 200 and report the failure in the body (it keeps the connection alive with
  // whitespace while it assembles the object).
  absl::StatusOr<XmlElement> xml = ParseXml(r.body);
  if (!xml.ok()) return Malformed(impl_->config.endpoint, "unparsable CompleteMultipartUpload");
  if (xml->name == "Error") {
    Response as_error = r;
    as_error.http = 500;
    return StatusFromResponse(as_error, what);
  }
  if (xml->name != "CompleteMultipartUploadResult") {
    return Malformed(impl_->config.endpoint, "not a CompleteMultipartUploadResult");
  }
  std::string etag = xml->ChildText("ETag");
  if (!etag.empty() && etag.front() != '"') etag = absl::StrCat("\"", etag, "\"");
  return etag;
}

absl::Status Client::AbortMultipartUpload(const Location& at, const std::string& upload_id) {
  Request req;
  req.method = "DELETE";
  req.bucket = at.bucket;
  req.key = at.key;
  req.query = {{"uploadId", upload_id}};
  Response r;
  return impl_->Do(req, r, impl_->About(at, upload_id));
}

absl::StatusOr<std::vector<Upload>> Client::ListMultipartUploads(const std::string& bucket,
                                                                 const std::string& prefix) {
  std::vector<Upload> out;
  std::string key_marker, id_marker;
  for (size_t page = 0; page < kMaxListPages; ++page) {
    Request req;
    req.bucket = bucket;
    req.query = {{"uploads", ""}, {"prefix", prefix}};
    if (!key_marker.empty()) req.query.emplace_back("key-marker", key_marker);
    if (!id_marker.empty()) req.query.emplace_back("upload-id-marker", id_marker);
    Response r;
    BUNKER_RETURN_IF_ERROR(impl_->Do(req, r, impl_->About(Location{bucket, ""})));
    absl::StatusOr<XmlElement> xml = ParseXml(r.body);
    if (!xml.ok() || xml->name != "ListMultipartUploadsResult") {
      return Malformed(impl_->config.endpoint, "not a ListMultipartUploadsResult");
    }
    for (const XmlElement* u : xml->Children("Upload")) {
      Upload up{u->ChildText("Key"), u->ChildText("UploadId")};
      if (up.key.empty() || up.upload_id.empty() || !absl::StartsWith(up.key, prefix)) {
        return Malformed(impl_->config.endpoint, "bad upload in a listing");
      }
      out.push_back(std::move(up));
    }
    if (xml->ChildText("IsTruncated") != "true") return out;
    std::string next_key = xml->ChildText("NextKeyMarker");
    std::string next_id = xml->ChildText("NextUploadIdMarker");
    if (std::make_pair(next_key, next_id) <= std::make_pair(key_marker, id_marker)) {
      return Malformed(impl_->config.endpoint, "truncated upload listing that does not advance");
    }
    key_marker = std::move(next_key);
    id_marker = std::move(next_id);
  }
  return Malformed(impl_->config.endpoint, "upload listing too long");
}

// ---- OpenObject -----------------------------------------------------------------------------

namespace {

// Reads below kSmallRead are served from kBlockSize-aligned blocks kept in a small LRU cache
// (at most kCachedBlocks, so 2 MiB per open object): opening a capsule reads its header, footer,
// signature and manifest, a few bytes each, in two requests instead of four or more.
constexpr size_t kBlockSize = size_t{256} << 10;
constexpr size_t kSmallRead = size_t{64} << 10;
constexpr size_t kCachedBlocks = 8;

// Large reads inside a range announced with WillRead are served from read-ahead windows:
// kWindowSize-aligned pieces of the object (clipped to the announced range), each one ranged GET,
// fetched by kFetchThreads threads of the object's own, at most kMaxWindows alive at once
// (so at most 24 MiB per open object). A window is dropped once every byte of it was read; one
// that is done and lies behind the read position, or outside every announced range, gives way
// to a new one. When no window can be had, the read goes straight to one GET of its own.
// Per-request cost dominates on servers like Swift's proxy: 8 MiB GETs (the part size `aws s3
// cp` uses) cost 1/8 of the requests of 1 MiB chunk reads.
constexpr uint64_t kWindowSize = uint64_t{8} << 20;
constexpr size_t kMaxWindows = 3;
constexpr size_t kWindowsAhead = 2;  // windows started past the one a read waits for
constexpr int kFetchThreads = 3;
constexpr size_t kMaxPlans = 4;  // announced ranges remembered (LRU)

class S3Object : public RandomAccessFile {
 public:
  S3Object(std::shared_ptr<Client> client, Location at, ObjectInfo info)
      : client_(std::move(client)), at_(std::move(at)), info_(std::move(info)) {}

  ~S3Object() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      closing_ = true;
    }
    fetchers_.reset();  // queued fetches see closing_ and skip; running ones finish
  }

  uint64_t size() const override { return info_.size; }
  int parallelism() const override { return kObjectParallelism; }

  void WillRead(uint64_t begin, uint64_t end) const override {
    end = std::min(end, info_.size);
    if (begin >= end || end - begin < kSmallRead) return;
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = plans_.begin(); it != plans_.end(); ++it) {
      if (it->first == begin && it->second == end) {
        plans_.erase(it);
        break;
      }
    }
    plans_.emplace_back(begin, end);
    if (plans_.size() > kMaxPlans) plans_.erase(plans_.begin());
  }

  absl::Status ReadAt(uint64_t offset, absl::Span<uint8_t> out) const override {
    if (offset > info_.size || out.size() > info_.size - offset) {
      return absl::OutOfRangeError(absl::StrCat("read past the end of ", ToUrl(at_)));
    }
    if (out.empty()) return absl::OkStatus();
    if (out.size() >= kSmallRead || Announced(offset, out.size())) return LargeRead(offset, out);
    // Small reads: block by block from the cache.
    size_t done = 0;
    while (done < out.size()) {
      const uint64_t pos = offset + done;
      const uint64_t block = pos / kBlockSize;
      absl::StatusOr<std::shared_ptr<const std::vector<uint8_t>>> b = Block(block);
      if (!b.ok()) return b.status();
      const size_t in_block = static_cast<size_t>(pos - block * kBlockSize);
      if (in_block >= (*b)->size()) return absl::OutOfRangeError("short block");
      const size_t n = std::min(out.size() - done, (*b)->size() - in_block);
      std::memcpy(out.data() + done, (*b)->data() + in_block, n);
      done += n;
    }
    return absl::OkStatus();
  }

 private:
  struct Window {
    uint64_t begin = 0, end = 0;  // the bytes of the object it holds
    std::vector<uint8_t> data;
    bool done = false;
    absl::Status status;
    uint64_t consumed = 0;
  };

  absl::Status Fetch(uint64_t offset, absl::Span<uint8_t> out) const {
    absl::Status s = client_->GetRange(at_, offset, out, info_.etag);
    if (absl::IsAborted(s)) {
      return absl::AbortedError(
          absl::StrCat("S3: ", ToUrl(at_), " changed while reading (its ETag no longer matches)"));
    }
    return s;
  }

  // Keeps the buffer of a dropped window for the next one, unless a reader still holds the
  // window (it copies from it outside the lock). Requires mu_.
  void Recycle(std::shared_ptr<Window> win) const {
    if (win.use_count() == 1 && win->done && spare_.size() < kMaxWindows) {
      spare_.push_back(std::move(win->data));
    }
  }

  // Whether [offset, offset + n) lies in an announced range (then even a small read, such as
  // a short last chunk, comes from a window).
  bool Announced(uint64_t offset, size_t n) const {
    std::lock_guard<std::mutex> lock(mu_);
    return PlanFor(offset, offset + n) != nullptr;
  }

  // The announced range holding all of [begin, end), if any. Requires mu_.
  const std::pair<uint64_t, uint64_t>* PlanFor(uint64_t begin, uint64_t end) const {
    for (auto it = plans_.rbegin(); it != plans_.rend(); ++it) {
      if (it->first <= begin && end <= it->second) return &*it;
    }
    return nullptr;
  }

  // Window `w` of `plan`, started if it is not there and fits; null if it cannot be had. Only
  // a window a read waits for (`demand`) may push out another; read-ahead uses free room only.
  // Requires mu_.
  std::shared_ptr<Window> WindowLocked(uint64_t w, const std::pair<uint64_t, uint64_t>& plan,
                                       uint64_t reading_at, bool demand) const {
    auto it = windows_.find(w);
    if (it != windows_.end()) return it->second;
    const uint64_t begin = std::max(w * kWindowSize, plan.first);
    const uint64_t end = std::min((w + 1) * kWindowSize, plan.second);
    if (begin >= end || closing_) return nullptr;
    if (windows_.size() >= kMaxWindows && demand) {
      // Make room: a finished window behind the read position, or outside every plan.
      for (auto v = windows_.begin(); v != windows_.end(); ++v) {
        const Window& old = *v->second;
        if (old.done && (old.end <= reading_at || PlanFor(old.begin, old.begin + 1) == nullptr)) {
          std::shared_ptr<Window> dropped = std::move(v->second);
          windows_.erase(v);
          Recycle(std::move(dropped));
          break;
        }
      }
      if (windows_.size() >= kMaxWindows) return nullptr;
    }
    auto win = std::make_shared<Window>();
    win->begin = begin;
    win->end = end;
    windows_.emplace(w, win);
    if (!fetchers_) fetchers_ = std::make_unique<ThreadPool>(kFetchThreads);
    fetchers_->Submit([this, win] {
      absl::Status s;
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (closing_) s = absl::CancelledError("S3: object closed");
      }
      if (s.ok()) {
        try {
          {
            // A buffer of a dropped window, if any: at most kMaxWindows buffers ever exist, so
            // memory stays bounded (and is not left to the allocator's per-thread arenas).
            std::lock_guard<std::mutex> lock(mu_);
            if (!spare_.empty()) {
              win->data = std::move(spare_.back());
              spare_.pop_back();
            }
          }
          win->data.resize(win->end - win->begin);
          s = Fetch(win->begin, absl::MakeSpan(win->data));
        } catch (const std::bad_alloc&) {
          s = absl::ResourceExhaustedError("out of memory");
        }
      }
      std::lock_guard<std::mutex> lock(mu_);
      win->status = std::move(s);
      win->done = true;
      fetched_.notify_all();
    });
    return win;
  }

  absl::Status LargeRead(uint64_t offset, absl::Span<uint8_t> out) const {
    const uint64_t end = offset + out.size();
    uint64_t pos = offset;
    while (pos < end) {
      std::shared_ptr<Window> win;
      {
        std::unique_lock<std::mutex> lock(mu_);
        const std::pair<uint64_t, uint64_t>* plan = PlanFor(pos, end);
        if (plan != nullptr) {
          const std::pair<uint64_t, uint64_t> p = *plan;
          const uint64_t w = pos / kWindowSize;
          win = WindowLocked(w, p, pos, /*demand=*/true);
          if (win != nullptr && (pos < win->begin || pos >= win->end)) win = nullptr;
          if (win != nullptr) {
            for (uint64_t a = w + 1; a <= w + kWindowsAhead && a * kWindowSize < p.second; ++a) {
              if (WindowLocked(a, p, pos, /*demand=*/false) == nullptr) break;
            }
            fetched_.wait(lock, [&] { return win->done; });
          }
        }
      }
      if (win == nullptr) {
        // Not announced, or no window to be had: exactly the bytes asked for, one GET.
        return Fetch(pos, out.subspan(static_cast<size_t>(pos - offset)));
      }
      if (!win->status.ok()) return win->status;
      const uint64_t n = std::min(end, win->end) - pos;
      std::memcpy(out.data() + (pos - offset), win->data.data() + (pos - win->begin),
                  static_cast<size_t>(n));
      pos += n;
      std::lock_guard<std::mutex> lock(mu_);
      win->consumed += n;
      if (win->consumed >= win->end - win->begin) {
        auto it = windows_.find((win->begin) / kWindowSize);
        if (it != windows_.end() && it->second == win) {
          windows_.erase(it);
          Recycle(std::move(win));
        }
      }
    }
    return absl::OkStatus();
  }

  absl::StatusOr<std::shared_ptr<const std::vector<uint8_t>>> Block(uint64_t block) const {
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (auto it = cache_.begin(); it != cache_.end(); ++it) {
        if (it->first == block) {
          cache_.splice(cache_.begin(), cache_, it);
          return cache_.front().second;
        }
      }
    }
    const uint64_t start = block * kBlockSize;
    const size_t n = static_cast<size_t>(std::min<uint64_t>(kBlockSize, info_.size - start));
    auto data = std::make_shared<std::vector<uint8_t>>(n);
    BUNKER_RETURN_IF_ERROR(Fetch(start, absl::MakeSpan(*data)));
    std::lock_guard<std::mutex> lock(mu_);
    cache_.emplace_front(block, data);
    if (cache_.size() > kCachedBlocks) cache_.pop_back();
    return std::shared_ptr<const std::vector<uint8_t>>(data);
  }

  std::shared_ptr<Client> client_;
  Location at_;
  ObjectInfo info_;
  mutable std::mutex mu_;
  mutable std::condition_variable fetched_;
  mutable std::list<std::pair<uint64_t, std::shared_ptr<const std::vector<uint8_t>>>> cache_;
  mutable std::vector<std::pair<uint64_t, uint64_t>> plans_;  // oldest first
  mutable std::map<uint64_t, std::shared_ptr<Window>> windows_;  // by window index
  mutable std::vector<std::vector<uint8_t>> spare_;  // buffers of dropped windows
  mutable bool closing_ = false;
  // Last: destroyed first, while what its tasks use is still there.
  mutable std::unique_ptr<ThreadPool> fetchers_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<RandomAccessFile>> OpenObject(std::shared_ptr<Client> client,
                                                             Location at) {
  if (at.key.empty() || at.key.back() == '/') {
    return absl::InvalidArgumentError(
        absl::StrCat(ToUrl(at), " names a bucket or prefix, not an object"));
  }
  absl::StatusOr<ObjectInfo> info = client->Head(at);
  if (!info.ok()) return info.status();
  if (info->etag.empty()) {
    return absl::UnavailableError(absl::StrCat("S3: ", client->endpoint(),
                                               " sent no ETag for ", ToUrl(at),
                                               " (cannot pin the version read)"));
  }
  return std::unique_ptr<RandomAccessFile>(
      new S3Object(std::move(client), std::move(at), std::move(*info)));
}

absl::StatusOr<std::unique_ptr<RandomAccessFile>> OpenFileOrObject(
    const std::string& path_or_url, const std::string& credentials_file) {
  if (!IsS3Url(path_or_url)) return OpenFile(path_or_url);
  BUNKER_ASSIGN_OR_RETURN(Location at, ParseUrl(path_or_url));
  BUNKER_ASSIGN_OR_RETURN(Config config, ConfigFromEnvironment(credentials_file));
  BUNKER_ASSIGN_OR_RETURN(std::unique_ptr<Client> client, Client::Create(std::move(config)));
  return OpenObject(std::shared_ptr<Client>(std::move(client)), std::move(at));
}

}  // namespace bunker::capsule::s3
