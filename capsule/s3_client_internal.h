// Internal to the S3 client (s3_client*.cc, s3_object.cc): the request plumbing and the checks
// its parts share. Not part of the API: include capsule/s3_client.h instead.
#ifndef BUNKER_CAPSULE_S3_CLIENT_INTERNAL_H_
#define BUNKER_CAPSULE_S3_CLIENT_INTERNAL_H_

#include <curl/curl.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "capsule/curl_api.h"
#include "capsule/s3_client.h"
#include "crypto/secret.h"

namespace bunker::capsule::s3 {

constexpr absl::string_view kScheme = "s3://";
constexpr size_t kMaxKeySize = 1024;
constexpr size_t kMaxCredentialsFile = 64 * 1024;
constexpr size_t kMaxHeaders = 256;
// The most header bytes of one exchange (every response in it, 1xx included). S3's own are a
// few KiB (user metadata is at most 2 KiB).
constexpr size_t kMaxHeaderBytes = size_t{256} << 10;
// The slowest transfer an attempt's deadline allows for the bytes it sends or asks for
// (Config::attempt_timeout_s).
constexpr uint64_t kMinAttemptRate = 16 << 10;  // bytes per second
// Listing pages (1,000 entries) and the parts of an upload (at most 10,000) are bounded so a
// hostile server cannot make a listing loop forever.
constexpr size_t kMaxListPages = 100000;
// The most entries one listing returns (objects or uploads), so that a server paging forever
// cannot exhaust memory (about 200 bytes each).
constexpr size_t kMaxListEntries = 1000000;

// ---- Checks (s3_client_checks.cc) ------------------------------------------------------

absl::Status CheckBucket(absl::string_view b);
absl::Status CheckKey(absl::string_view key);

// S3's URI encoding (SigV4 "UriEncode"): everything but unreserved characters as %XX with
// uppercase hex; '/' kept when `keep_slash` (object keys).
std::string UriEncode(absl::string_view s, bool keep_slash);

absl::Status CheckEndpoint(absl::string_view e);

// True if the endpoint's host is this machine: "localhost", an IPv4 address in 127.0.0.0/8 or
// [::1]. Addresses are parsed with inet_pton, so a name that only looks like one ("127.0.0.999",
// "127.0.0.1.example") is not loopback: curl would look it up in the DNS.
bool IsLoopbackEndpoint(absl::string_view e);

std::string Getenv(const char* name);

std::string XmlEscape(absl::string_view s);

absl::Status CheckMetadata(const std::map<std::string, std::string>& metadata);

absl::Status Malformed(const std::string& endpoint, absl::string_view what);

bool ParseU64(absl::string_view s, uint64_t* out);

// True if `s` is a usable ETag or upload id from the server: 1 to 1024 printable ASCII
// characters without spaces. They go back into requests (If-Match, queries, the completion's
// XML) and into the store's journals and markers, where a space or a line break would forge a
// record.
bool IsServerToken(absl::string_view s);

// ---- Errors -------------------------------------------------------------------------------

struct Response {
  long http = 0;
  std::map<std::string, std::string> headers;  // lowercase names
  std::string body;                            // bounded by kMaxResponseBody
  size_t data_received = 0;                    // bytes written into a GetRange buffer
  bool overflow = false;                       // the server sent more than we accept
  // An <Error> document the server sent with HTTP 200 (S3 does that for a completion that
  // failed after its reply began): judged as a 500, told as what it was.
  bool error_in_ok_reply = false;
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
absl::Status StatusFromResponse(const Response& r, const Subject& what);

bool Retryable(const Response& r);

bool RetryableCurl(CURLcode c);

// ---- Requests (s3_client_request.cc) -----------------------------------------------------

// One HTTP exchange: what to send and where the answer goes.
struct Request {
  std::string method = "GET";
  std::string bucket;
  std::string key;                                          // raw (encoded here)
  std::vector<std::pair<std::string, std::string>> query;  // raw (encoded here)
  std::vector<std::string> headers;                         // "Name: value"
  absl::Span<const uint8_t> body;
  absl::Span<uint8_t> data_out;  // GetRange: object bytes go here on a 2xx
  const Cancellation* cancel = nullptr;  // may stop the exchange (and its retries)
};
struct Client::Impl {
  const CurlApi* curl = nullptr;    // libcurl, loaded (curl_api.h); every call goes through it
  Config config;
  crypto::SecretBytes secret_cstr;  // the secret with a NUL, for CURLOPT_PASSWORD
  std::string sigv4;                // "aws:amz:REGION:s3"
  std::mutex mu;
  std::vector<CURL*> idle;
  std::atomic<uint64_t> requests{0};
  std::atomic<uint64_t> get_requests{0};
  std::atomic<uint64_t> bytes_received{0};

  ~Impl() {
    for (CURL* c : idle) curl->easy_cleanup(c);
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
    return curl->easy_init();
  }
  void Release(CURL* c) {
    std::lock_guard<std::mutex> lock(mu);
    if (idle.size() < 64) {
      idle.push_back(c);
    } else {
      curl->easy_cleanup(c);
    }
  }

  std::string Url(const Request& req) const;

  // One attempt. Returns the curl code; fills `r`.
  CURLcode Once(const Request& req, Response& r);

  // Sleeps before attempt `attempt` + 1; cut short when `cancel` is cancelled.
  void Backoff(int attempt, const Response& r, const Cancellation* cancel);

  // Sends `req`, retrying what may succeed on another try. On return `r` is a 2xx response,
  // or the status says why not.
  absl::Status Do(const Request& req, Response& r, const Subject& what);

  Subject About(const Location& at, const std::string& upload_id = "") const {
    return Subject{&config.endpoint, at.bucket, at.key, upload_id};
  }
};

}  // namespace bunker::capsule::s3

#endif  // BUNKER_CAPSULE_S3_CLIENT_INTERNAL_H_
