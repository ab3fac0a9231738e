// The S3 client's request plumbing: one signed HTTP exchange over libcurl, retries and backoff.
#include <curl/curl.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <random>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "capsule/s3_client_internal.h"
#include "crypto/sha256.h"
#include "crypto/status_macros.h"

namespace bunker::capsule::s3 {

namespace {

struct Transfer {
  Response* response;
  absl::Span<uint8_t> data_out;
  const CurlApi* api;
  CURL* curl;
  size_t header_bytes = 0;  // of every response of the exchange (1xx included)
};

size_t OnHeader(char* buffer, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const size_t len = size * n;
  absl::string_view line(buffer, len);
  // Bounded whatever the server sends: endless 1xx responses, headers repeated under one name
  // (the map would keep one), or many names.
  t->header_bytes += len;
  if (t->header_bytes > kMaxHeaderBytes) {
    t->response->overflow = true;
    return 0;
  }
  if (absl::StartsWith(line, "HTTP/")) {
    t->response->headers.clear();  // a new response (after 100 Continue)
    return len;
  }
  const size_t colon = line.find(':');
  if (colon == absl::string_view::npos) return len;
  if (t->response->headers.size() >= kMaxHeaders) {
    t->response->overflow = true;
    return 0;
  }
  std::string name = absl::AsciiStrToLower(absl::StripAsciiWhitespace(line.substr(0, colon)));
  std::string value(absl::StripAsciiWhitespace(line.substr(colon + 1)));
  t->response->headers[std::move(name)] = std::move(value);
  return len;
}

size_t OnData(char* buffer, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const size_t len = size * n;
  long http = 0;
  t->api->easy_getinfo(t->curl, CURLINFO_RESPONSE_CODE, &http);
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

// libcurl's progress callback: a non-zero answer abandons the transfer
// (CURLE_ABORTED_BY_CALLBACK). libcurl calls it often while data moves and about once a second
// while nothing does (a server that holds a request), so a cancelled call ends within about a
// second.
int OnProgress(void* user, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  return static_cast<const Cancellation*>(user)->cancelled() ? 1 : 0;
}

// "-" = empty body's hash, computed once.
const std::string& EmptySha256() {
  static const std::string* h = new std::string(HexSha256({}));
  return *h;
}

}  // namespace

std::string Client::Impl::Url(const Request& req) const {
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

CURLcode Client::Impl::Once(const Request& req, Response& r) {
  CURL* c = Acquire();
  if (c == nullptr) return CURLE_OUT_OF_MEMORY;
  curl->easy_reset(c);
  Transfer t{&r, req.data_out, curl, c};
  const std::string url = Url(req);
  curl->easy_setopt(c, CURLOPT_URL, url.c_str());
  curl->easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl->easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
  // Redirects are never followed (a 3xx is an error: StatusFromResponse), so a signed request,
  // the key id and a session token never go to a host other than the endpoint; should
  // following ever be turned on, only to http(s) and never more than none.
  curl->easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
  curl->easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  curl->easy_setopt(c, CURLOPT_MAXREDIRS, 0L);
  // Plain http goes to this machine only (Client::Create): never through a proxy named by
  // http_proxy or ALL_PROXY, which would carry the key id and a session token in clear text.
  if (absl::StartsWith(url, "http://")) curl->easy_setopt(c, CURLOPT_NOPROXY, "*");
  curl->easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(config.connect_timeout_ms));
  curl->easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1024L);
  curl->easy_setopt(c, CURLOPT_LOW_SPEED_TIME, static_cast<long>(config.stall_timeout_s));
  // A server that trickles just above the stall limit (an endless header, an endless body at
  // 2 KiB/s) still ends: every attempt has a deadline, its base plus the time the bytes it
  // sends or asks for take at kMinAttemptRate.
  const uint64_t moved = req.body.size() + req.data_out.size();
  curl->easy_setopt(c, CURLOPT_TIMEOUT_MS,
                    static_cast<long>(int64_t{config.attempt_timeout_s} * 1000 +
                                      static_cast<int64_t>(moved * 1000 / kMinAttemptRate)));
  curl->easy_setopt(c, CURLOPT_AWS_SIGV4, sigv4.c_str());
  curl->easy_setopt(c, CURLOPT_USERNAME, config.access_key_id.c_str());
  curl->easy_setopt(c, CURLOPT_PASSWORD, reinterpret_cast<const char*>(secret_cstr.data()));
  curl->easy_setopt(c, CURLOPT_HEADERFUNCTION, &OnHeader);
  curl->easy_setopt(c, CURLOPT_HEADERDATA, &t);
  curl->easy_setopt(c, CURLOPT_WRITEFUNCTION, &OnData);
  curl->easy_setopt(c, CURLOPT_WRITEDATA, &t);
  if (req.cancel != nullptr) {
    curl->easy_setopt(c, CURLOPT_XFERINFOFUNCTION, &OnProgress);
    curl->easy_setopt(c, CURLOPT_XFERINFODATA, req.cancel);
    curl->easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
  }
  curl_slist* headers = nullptr;
  const std::string sha = req.body.empty() ? EmptySha256() : HexSha256(req.body);
  headers = curl->slist_append(headers, ("x-amz-content-sha256: " + sha).c_str());
  std::string token_header;
  if (!config.session_token.empty()) {
    token_header = "x-amz-security-token: ";
    token_header.append(reinterpret_cast<const char*>(config.session_token.data()),
                        config.session_token.size());
    headers = curl->slist_append(headers, token_header.c_str());
    crypto::Wipe(absl::MakeSpan(reinterpret_cast<uint8_t*>(token_header.data()),
                                token_header.size()));
  }
  for (const std::string& h : req.headers) headers = curl->slist_append(headers, h.c_str());
  if (req.method == "HEAD") {
    curl->easy_setopt(c, CURLOPT_NOBODY, 1L);
  } else if (req.method == "GET") {
    curl->easy_setopt(c, CURLOPT_HTTPGET, 1L);
  } else {
    curl->easy_setopt(c, CURLOPT_CUSTOMREQUEST, req.method.c_str());
    if (req.method == "PUT" || req.method == "POST") {
      static const uint8_t kNothing = 0;
      curl->easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(req.body.size()));
      curl->easy_setopt(c, CURLOPT_POSTFIELDS,
                       req.body.empty() ? &kNothing : req.body.data());
      // No "Expect:" override: libcurl 7.88 would sign the emptied header and the server
      // would refuse the signature. Large bodies wait for 100 Continue instead (capped).
      curl->easy_setopt(c, CURLOPT_EXPECT_100_TIMEOUT_MS, 200L);
    }
  }
  curl->easy_setopt(c, CURLOPT_HTTPHEADER, headers);
  requests.fetch_add(1, std::memory_order_relaxed);
  if (req.method == "GET") get_requests.fetch_add(1, std::memory_order_relaxed);
  CURLcode code = curl->easy_perform(c);
  curl->easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.http);
  // Drop the copies libcurl keeps of the credentials before the handle goes back to the pool.
  // (libcurl frees its copy of the password without wiping it: spec/STORE.md "Credentials".)
  curl->easy_setopt(c, CURLOPT_USERNAME, nullptr);
  curl->easy_setopt(c, CURLOPT_PASSWORD, nullptr);
  curl->easy_setopt(c, CURLOPT_HTTPHEADER, nullptr);
  // The header list is ours: its copy of the session token is wiped before it is freed.
  for (curl_slist* h = headers; h != nullptr; h = h->next) {
    if (h->data != nullptr) {
      crypto::Wipe(absl::MakeSpan(reinterpret_cast<uint8_t*>(h->data), std::strlen(h->data)));
    }
  }
  curl->slist_free_all(headers);
  if (code != CURLE_OK && code != CURLE_WRITE_ERROR) {
    // The connection is in an unknown state: do not reuse it.
    curl->easy_cleanup(c);
  } else {
    Release(c);
  }
  return code;
}

void Client::Impl::Backoff(int attempt, const Response& r, const Cancellation* cancel) {
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
  if (cancel != nullptr) {
    cancel->WaitFor(std::chrono::milliseconds(delay));
  } else {
    std::this_thread::sleep_for(std::chrono::milliseconds(delay));
  }
}

absl::Status Client::Impl::Do(const Request& req, Response& r, const Subject& what) {
  // Whoever built the location (a caller, a prefix, a listing), nothing goes on the wire that
  // ParseUrl would refuse: a ".." segment would be resolved by the URL into another bucket's
  // path, a control character would break the request line.
  if (!req.bucket.empty()) BUNKER_RETURN_IF_ERROR(CheckBucket(req.bucket));
  BUNKER_RETURN_IF_ERROR(CheckKey(req.key));
  const auto cancelled = [&] {
    return absl::CancelledError(
        absl::StrCat("S3: the request to ", config.endpoint, " was cancelled"));
  };
  absl::Status last;
  for (int attempt = 0; attempt < std::max(1, config.max_attempts); ++attempt) {
    if (attempt > 0) Backoff(attempt - 1, r, req.cancel);
    if (req.cancel != nullptr && req.cancel->cancelled()) return cancelled();
    r = Response();
    const CURLcode code = Once(req, r);
    if (code == CURLE_ABORTED_BY_CALLBACK) return cancelled();
    if (code == CURLE_WRITE_ERROR && r.overflow) {
      return Malformed(config.endpoint, "response larger than expected");
    }
    if (code == CURLE_OUT_OF_MEMORY) {
      // libcurl refuses a header line over 100 KiB (CURL_MAX_HTTP_HEADER) this way.
      return Malformed(config.endpoint, "a header line over 100 KiB (or libcurl out of memory)");
    }
    if (code != CURLE_OK) {
      last = absl::UnavailableError(absl::StrCat("S3: cannot reach ", config.endpoint, " (",
                                                 curl->easy_strerror(code), ")"));
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

}  // namespace bunker::capsule::s3
