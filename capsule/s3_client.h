// A small S3 client (path-style addressing, AWS Signature V4 via libcurl) for capsules kept in
// object storage: AWS S3, Ceph RGW, OpenStack Swift's s3api, Huawei OBS. Only the calls Bunker
// needs: HEAD, ranged GET, PUT, DELETE, listing, and multipart upload. See spec/STORE.md.
//
// Contract:
// - Every call is signed with the configured key; the secret never appears in an error, a log
//   line or an exception text, and is kept in guarded memory (crypto::SecretBytes).
// - Errors are mapped in one place (spec/STORE.md "Errors"): a refused signature or key is
//   kPermissionDenied ("S3: access denied by ENDPOINT (wrong key or secret?)"); an unknown
//   bucket, key or upload kNotFound naming it; a connection failure, a timeout, a 5xx or a
//   503 SlowDown is retried with exponential backoff (Retry-After honoured) and after the last
//   attempt is kUnavailable; an object that changed under an ETag pin is kAborted ("object
//   changed while reading"); a response that breaks the protocol (wrong length, unparsable XML)
//   is kUnavailable from a server we cannot trust to be well-behaved. Redirects are never
//   followed (a 3xx is kInvalidArgument): nothing is sent to any host but the endpoint.
// - Every call ends: a stalled transfer (under 1 KiB/s for stall_timeout_s) and an attempt past
//   its deadline (attempt_timeout_s plus 1 s per 16 KiB moved) are abandoned and retried.
// - A bucket or key that ParseUrl would refuse is kInvalidArgument before anything is sent,
//   whoever built it; ETags and upload ids from the server must be 1 to 1024 printable ASCII
//   characters without spaces (they go into journals and requests), else kUnavailable.
// - Responses are bounded: at most kMaxResponseBody bytes of XML, 256 KiB of headers and
//   1,000,000 entries of a listing are read, and a ranged GET never writes past the caller's
//   buffer. XML is parsed by a small bounded parser that expands
//   no entities other than the five predefined ones and numeric references.
// - A Client is thread-safe: one Client may be used from several threads at once (it keeps a
//   pool of connections, one in use per concurrent call).
#ifndef BUNKER_CAPSULE_S3_CLIENT_H_
#define BUNKER_CAPSULE_S3_CLIENT_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "capsule/io.h"
#include "crypto/secret.h"

namespace bunker::capsule::s3 {

// The most bytes of a (non-GET-data) response body the client reads: XML listings and errors.
inline constexpr size_t kMaxResponseBody = size_t{4} << 20;

// A bucket and a key (or key prefix) in it.
struct Location {
  std::string bucket;
  std::string key;
};

// True if `s` starts with "s3://" (then it must be parsed with ParseUrl, never opened as a path).
bool IsS3Url(std::string_view s);

// Parses "s3://BUCKET/KEY-OR-PREFIX". The bucket must be a valid S3 bucket name (3-63 of
// [a-z0-9.-], starting and ending with a letter or digit, no "..", not an IP address); the key
// may be empty (a bucket or prefix) and must be valid UTF-8 of at most 1024 bytes without control
// characters, with no "." or ".." segment and no empty segment ("//"). kInvalidArgument naming
// what is wrong otherwise.
absl::StatusOr<Location> ParseUrl(std::string_view url);

// "s3://bucket/key" for messages (the key is not escaped: callers escape for a terminal).
std::string ToUrl(const Location& at);

// How to reach and sign for the store.
struct Config {
  // "http://HOST[:PORT]" or "https://HOST[:PORT]" (no path). Requests are path-style:
  // ENDPOINT/BUCKET/KEY.
  std::string endpoint;
  std::string region = "us-east-1";
  std::string access_key_id;
  crypto::SecretBytes secret_access_key;  // never printed
  crypto::SecretBytes session_token;      // optional (AWS_SESSION_TOKEN); never printed
  // Attempts per request (1 = no retry) and the backoff between them: base * 2^attempt with
  // full jitter, capped at max_backoff_ms (a Retry-After from the server is honoured up to
  // max_retry_after_ms).
  int max_attempts = 5;
  int base_backoff_ms = 200;
  int max_backoff_ms = 5000;
  int max_retry_after_ms = 20000;
  // Connection set-up timeout, and the time a transfer may stall (less than 1 KiB/s) before it
  // is abandoned (and retried).
  int connect_timeout_ms = 5000;
  int stall_timeout_s = 30;
  // The deadline of one attempt, whatever pace the server keeps (a trickle just above the
  // stall limit): this many seconds plus one per 16 KiB the request sends or asks for.
  int attempt_timeout_s = 120;

  Config() = default;
  Config(Config&&) = default;
  Config& operator=(Config&&) = default;
  Config Clone() const;
};

// Builds a Config from the AWS conventions:
// - endpoint: AWS_ENDPOINT_URL_S3, else AWS_ENDPOINT_URL, else https://s3.REGION.amazonaws.com;
// - region: AWS_REGION, else AWS_DEFAULT_REGION, else us-east-1;
// - credentials, first found: the file `credentials_file` if not empty (a site file names it);
//   else AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY (+ AWS_SESSION_TOKEN); else the profile
//   AWS_PROFILE (default "default") of AWS_SHARED_CREDENTIALS_FILE (default ~/.aws/credentials);
// - attempts: AWS_MAX_ATTEMPTS (1..20) if set.
// A credentials file (either kind) is the AWS INI format (`[profile]`, `aws_access_key_id = `,
// `aws_secret_access_key = `, `aws_session_token = `); it must be a regular file owned by the
// caller (effective uid) and not readable or writable by group or others (like key files),
// else kPermissionDenied with the chmod to run. kNotFound if no credentials are found anywhere;
// kInvalidArgument for a malformed endpoint, region or file. Errors never quote a secret.
absl::StatusOr<Config> ConfigFromEnvironment(const std::string& credentials_file);

// Removes AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN from this process's environment, first
// overwriting their values with zeros where they lie: unsetenv alone only unlinks them from
// `environ`, and the bytes stay in the environment block the kernel shows in /proc/PID/environ
// (to the process's own user and root) for as long as the process runs. Every copy is wiped, also
// a name that appears twice. Not thread-safe: call it while no other thread reads or changes the
// environment.
void ScrubCredentialsFromEnvironment();

// Reads credentials (profile `profile`) from an AWS INI credentials file into `config`, with the
// rules above. Exposed for tests.
absl::Status LoadCredentialsFile(const std::string& path, const std::string& profile,
                                 Config& config);

struct ObjectInfo {
  std::string key;
  uint64_t size = 0;
  std::string etag;  // as the server sent it, quotes included
  std::map<std::string, std::string> metadata;  // x-amz-meta-NAME (lowercase NAME) -> value
};

struct Part {
  int number = 0;
  std::string etag;
  uint64_t size = 0;
};

struct Upload {
  std::string key;
  std::string upload_id;
};

// Counters of what a Client did, for tests and benchmarks (requests sent, including retries,
// and bytes of object data received by GetRange).
struct Stats {
  uint64_t requests = 0;
  uint64_t get_requests = 0;
  uint64_t bytes_received = 0;
};

// A way to stop calls from another thread (a daemon dropping the work they serve, or
// stopping), or from a condition that is polled (an interrupt a signal handler flagged, a
// client that hung up). Once Cancel() was called, or `also` answers true, a call given this
// token ends soon with kCancelled: its transfer is abandoned within about a second (libcurl's
// progress callback), it is not retried, and a backoff between attempts is cut short (a polled
// condition is looked at every kCancellationPoll); a call that starts afterwards fails at once.
// Cancelling cannot be undone. Thread-safe, if `also` is.
inline constexpr std::chrono::milliseconds kCancellationPoll{100};
class Cancellation {
 public:
  Cancellation() = default;
  // `also` is called from any thread that uses the token, often: it must be thread-safe and
  // cheap. Null: only Cancel() cancels.
  explicit Cancellation(std::function<bool()> also) : also_(std::move(also)) {}

  void Cancel() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      cancelled_.store(true, std::memory_order_relaxed);
    }
    cv_.notify_all();
  }
  bool cancelled() const {
    return cancelled_.load(std::memory_order_relaxed) || (also_ && also_());
  }
  // Waits up to `d` (a backoff); true once cancelled.
  bool WaitFor(std::chrono::milliseconds d) const {
    std::unique_lock<std::mutex> lock(mu_);
    if (!also_) return cv_.wait_for(lock, d, [this] { return cancelled(); });
    const auto until = std::chrono::steady_clock::now() + d;
    while (!cancelled()) {
      const auto now = std::chrono::steady_clock::now();
      if (now >= until) return false;
      cv_.wait_for(lock, std::min<std::chrono::steady_clock::duration>(until - now,
                                                                        kCancellationPoll));
    }
    return true;
  }

 private:
  const std::function<bool()> also_;
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  std::atomic<bool> cancelled_{false};
};

class Client {
 public:
  // kInvalidArgument if `config` is incomplete (no endpoint or key), or if the endpoint is
  // plain http:// to another machine (credentials only travel over https://, or http:// to
  // loopback: localhost, 127.0.0.0/8, [::1]). The first client loads libcurl (curl_api.h):
  // kFailedPrecondition if it cannot be loaded.
  static absl::StatusOr<std::unique_ptr<Client>> Create(Config config);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // The endpoint, for messages.
  const std::string& endpoint() const;

  // Creates a bucket (no error if this account already owns it).
  absl::Status CreateBucket(const std::string& bucket);

  // Size, ETag and metadata of an object. kNotFound if it (or its bucket) does not exist.
  // With `cancel`, kCancelled soon once it is cancelled (Cancellation).
  absl::StatusOr<ObjectInfo> Head(const Location& at, const Cancellation* cancel = nullptr);

  // Fills `out` exactly with the object's bytes from `offset`. If `if_match` is not empty the
  // read is pinned to that ETag: it is sent as If-Match and the reply's ETag must be that same
  // value (a server or proxy that ignores If-Match is caught too); a rewritten object fails with
  // kAborted, a reply without an ETag with kUnavailable. kOutOfRange if the range
  // reaches past the end of the object; kUnavailable if the server sends more or fewer bytes.
  // With `cancel`, kCancelled soon once it is cancelled (a server trickling the bytes holds the
  // call no longer than about a second after that).
  absl::Status GetRange(const Location& at, uint64_t offset, absl::Span<uint8_t> out,
                        const std::string& if_match = "", const Cancellation* cancel = nullptr);

  // Stores `body` as the object (replacing any), with x-amz-meta-* `metadata` (names lowercase
  // [a-z0-9-], values printable ASCII).
  absl::Status Put(const Location& at, absl::Span<const uint8_t> body,
                   const std::map<std::string, std::string>& metadata = {});

  // Deletes the object (no error if it does not exist, as S3 does).
  absl::Status Delete(const Location& at);

  // Every object whose key starts with `prefix` (all pages), in key order.
  absl::StatusOr<std::vector<ObjectInfo>> List(const std::string& bucket,
                                               const std::string& prefix);

  // Starts a multipart upload; returns its upload id.
  absl::StatusOr<std::string> CreateMultipartUpload(
      const Location& at, const std::map<std::string, std::string>& metadata = {});
  // Uploads part `part_number` (1..10000); returns its ETag. With `cancel`, the upload ends
  // soon (kCancelled) once it is cancelled (Cancellation).
  absl::StatusOr<std::string> UploadPart(const Location& at, const std::string& upload_id,
                                         int part_number, absl::Span<const uint8_t> body,
                                         const Cancellation* cancel = nullptr);
  // The parts uploaded so far (all pages), by number. kNotFound if the upload is unknown.
  absl::StatusOr<std::vector<Part>> ListParts(const Location& at, const std::string& upload_id);
  // Makes the object from `parts` (in ascending number order); returns the new object's ETag
  // as the reply names it (quotes included; "" if the server names none). Checks the response
  // body, since S3 may report a failure inside a 200.
  absl::StatusOr<std::string> CompleteMultipartUpload(const Location& at,
                                                      const std::string& upload_id,
                                                      const std::vector<Part>& parts);
  // Abandons the upload and frees its parts. kNotFound if it is unknown.
  absl::Status AbortMultipartUpload(const Location& at, const std::string& upload_id);
  // Uploads in progress under `prefix` (all pages).
  absl::StatusOr<std::vector<Upload>> ListMultipartUploads(const std::string& bucket,
                                                           const std::string& prefix);

  // What this client has done so far.
  Stats stats() const;

  struct Impl;

 private:
  explicit Client(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// A capsule object read with ranged GETs: the size and ETag come from one HEAD, and every GET
// carries If-Match with that ETag and has its reply's ETag compared, so an object rewritten while
// it is read fails (kAborted) instead of mixing two versions. Small reads (the header, the table,
// the index) are served from a bounded cache of aligned blocks so that a reader walking the
// table issues few requests. Large reads inside a range announced with WillRead (a reader
// streaming chunks) are served from read-ahead windows: 8 MiB ranged GETs, several in flight on
// threads of the object's own, at most 16 MiB held per object, each window dropped once read;
// large reads outside every announced range (random access: the mount, one small file) fetch
// exactly the bytes asked for, one GET each. The bytes are only transport: readers check every
// chunk against the signed table as they do for a local file. ReadAt is safe from many threads
// at once. kNotFound if the object does not exist.
// With `cancelled` (thread-safe and cheap: it is polled from the object's fetch threads and from
// every read that waits), the HEAD and every read end soon with kCancelled once it answers true
// (an interrupt, a client that hung up, a daemon stopping), however slowly the server sends.
absl::StatusOr<std::unique_ptr<RandomAccessFile>> OpenObject(
    std::shared_ptr<Client> client, Location at, std::function<bool()> cancelled = nullptr);

// How many ranged GETs a reader keeps in flight on one object when it chooses its own thread
// count (RandomAccessFile::parallelism()).
inline constexpr int kObjectParallelism = 4;

// Opens a capsule wherever it is: an s3:// URL (IsS3Url) as OpenObject with a Client built by
// ConfigFromEnvironment(credentials_file); anything else as a local file (OpenFile). Errors name
// the path or URL. `cancelled` as for OpenObject (unused for a local file).
absl::StatusOr<std::unique_ptr<RandomAccessFile>> OpenFileOrObject(
    const std::string& path_or_url, const std::string& credentials_file = "",
    std::function<bool()> cancelled = nullptr);

}  // namespace bunker::capsule::s3

#endif  // BUNKER_CAPSULE_S3_CLIENT_H_
