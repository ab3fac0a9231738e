// Checks of names and responses shared by the S3 client's parts (s3_client_internal.h).
#include <arpa/inet.h>
#include <netinet/in.h>

#include <cstdlib>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "capsule/s3_client_internal.h"
#include "capsule/s3_xml.h"
#include "capsule/utf8.h"
#include "crypto/status_hint.h"

namespace bunker::capsule::s3 {

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

bool IsServerToken(absl::string_view s) {
  if (s.empty() || s.size() > 1024) return false;
  for (char c : s) {
    if (c < 0x21 || c > 0x7E) return false;
  }
  return true;
}

// ---- Errors -------------------------------------------------------------------------------

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
  // The server's code is shown only if it looks like one (S3's are letters and digits): no
  // server text of other kinds reaches an error line, a log or a terminal.
  bool plain_code = !code.empty() && code.size() <= 64;
  for (char c : code) plain_code &= absl::ascii_isalnum(static_cast<unsigned char>(c)) != 0;
  const std::string shown_code = plain_code ? absl::StrCat(" (", code, ")") : "";
  const std::string http = r.error_in_ok_reply ? std::string("HTTP 200 with an error")
                                               : absl::StrCat("HTTP ", r.http);
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
  // An explicit AccessDenied for one object is that object's policy, not the credentials:
  // they signed well enough for the server to decide (a wrong key or secret is
  // SignatureDoesNotMatch or InvalidAccessKeyId; a HEAD's 403 carries no code at all).
  if (code == "AccessDenied" && !what.key.empty()) {
    return WithHint(absl::PermissionDeniedError(absl::StrCat(
                        "S3: access to ", object, " denied by ", *what.endpoint, shown_code)),
                    "the credentials may not use this object (a bucket policy or ACL?)");
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
  if (r.http >= 300 && r.http < 400) {
    // Never followed (s3_client_request.cc); its Location is the server's text, not quoted.
    return WithHint(absl::InvalidArgumentError(absl::StrCat(
                        "S3: ", *what.endpoint, " redirected the request for ", object, " (",
                        http, shown_code, "); redirects are not followed")),
                    "use the bucket's own endpoint and region (AWS_ENDPOINT_URL, AWS_REGION)");
  }
  // Before the 5xx below: a server that lacks a feature is not down, and retrying cannot help.
  if (r.http == 501 || code == "NotImplemented") {
    return WithHint(absl::InvalidArgumentError(absl::StrCat(
                        "S3: ", *what.endpoint, " does not implement the request for ", object,
                        " (", http, shown_code, ")")),
                    "this object store lacks an S3 feature Bunker needs (spec/STORE.md)");
  }
  if (r.http >= 500 || r.http == 429 || code == "SlowDown" || code == "RequestTimeout") {
    return absl::UnavailableError(
        absl::StrCat("S3: ", *what.endpoint, " is unavailable (", http, shown_code, ")"));
  }
  absl::Status refused = absl::InvalidArgumentError(
      absl::StrCat("S3: request for ", object, " refused (", http, shown_code, ")"));
  // The signature names a region; a server in another one refuses its scope this way.
  if (code == "AuthorizationHeaderMalformed" || code == "AuthorizationQueryParametersError") {
    return WithHint(refused,
                    "the region the request was signed for (AWS_REGION, or the site file's "
                    "\"region\") may not be the server's");
  }
  return refused;
}

bool Retryable(const Response& r) {
  if (r.body.find("<Code>NotImplemented</Code>") != std::string::npos) return false;
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

}  // namespace bunker::capsule::s3
