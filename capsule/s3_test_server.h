// Test-only: an HTTP server on loopback that plays an S3 endpoint badly on purpose, for the S3
// client's and store's unit tests (the real server is tests/tools/swift_s3.sh).
#ifndef BUNKER_CAPSULE_S3_TEST_SERVER_H_
#define BUNKER_CAPSULE_S3_TEST_SERVER_H_

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cinttypes>
#include <cstdio>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "capsule/s3_client.h"
#include "crypto/secret.h"
#include "gtest/gtest.h"

namespace bunker::capsule::s3 {

// Answers each request (one per connection) with what `handler` returns for it (request line,
// headers, and the body read whole by its Content-Length), then closes the connection.
class FakeServer {
 public:
  explicit FakeServer(std::string reply)
      : FakeServer([reply = std::move(reply)](const std::string&) { return reply; }) {}
  explicit FakeServer(std::function<std::string(const std::string& request)> handler)
      : handler_(std::move(handler)) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&addr), len) != 0 || ::listen(fd_, 8) != 0 ||
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      ADD_FAILURE() << "cannot listen on loopback";
      return;
    }
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] {
      while (true) {
        const int c = ::accept(fd_, nullptr, nullptr);
        if (c < 0 || stop_) {
          if (c >= 0) ::close(c);
          return;
        }
        const std::string request = ReadRequest(c);
        const std::string reply = handler_(request);
        {
          std::lock_guard<std::mutex> lock(mu_);
          last_request_ = request.substr(0, request.find("\r\n\r\n") + 4);
        }
        WriteAll(c, reply);
        ::close(c);
      }
    });
  }
  ~FakeServer() {
    stop_ = true;
    // Wake accept() with one last connection.
    const int c = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(port_);
    (void)::connect(c, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    ::close(c);
    if (thread_.joinable()) thread_.join();
    ::close(fd_);
  }
  std::string endpoint() const { return "http://127.0.0.1:" + std::to_string(port_); }

  // The value of header `name` (lowercase) in a request's head; "" if absent.
  static std::string HeaderOf(const std::string& request, const std::string& name) {
    const std::string head = request.substr(0, request.find("\r\n\r\n") + 2);
    size_t at = head.find("\r\n");
    while (at != std::string::npos && at + 2 < head.size()) {
      const size_t end = head.find("\r\n", at + 2);
      const std::string line = head.substr(at + 2, end - at - 2);
      const size_t colon = line.find(':');
      std::string key = line.substr(0, colon);
      for (char& ch : key) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
      if (colon != std::string::npos && key == name) {
        const size_t v = line.find_first_not_of(' ', colon + 1);
        return v == std::string::npos ? "" : line.substr(v);
      }
      at = end;
    }
    return "";
  }
  // The last request's head.
  std::string last_request() const {
    std::lock_guard<std::mutex> lock(mu_);
    return last_request_;
  }

 private:
  // The most body bytes a request may carry here (parts of the tests' capsules are small).
  static constexpr size_t kMaxBody = size_t{16} << 20;

  static void WriteAll(int c, const std::string& data) {
    size_t done = 0;
    while (done < data.size()) {
      const ssize_t n = ::write(c, data.data() + done, data.size() - done);
      if (n <= 0) return;
      done += static_cast<size_t>(n);
    }
  }

  // The head, then the body read whole by its Content-Length (after a "100 Continue" when the
  // client waits for one): a server that closes with unread bytes resets the connection.
  static std::string ReadRequest(int c) {
    std::string request;
    char buf[65536];
    while (request.find("\r\n\r\n") == std::string::npos) {
      const ssize_t n = ::read(c, buf, sizeof(buf));
      if (n <= 0) return request;
      request.append(buf, static_cast<size_t>(n));
    }
    const size_t body_at = request.find("\r\n\r\n") + 4;
    size_t length = 0;
    const std::string declared = HeaderOf(request, "content-length");
    if (!declared.empty()) length = std::min<size_t>(std::stoull(declared), kMaxBody);
    if (request.size() - body_at < length &&
        HeaderOf(request, "expect").find("100-continue") != std::string::npos) {
      WriteAll(c, "HTTP/1.1 100 Continue\r\n\r\n");
    }
    while (request.size() - body_at < length) {
      const ssize_t n = ::read(c, buf, sizeof(buf));
      if (n <= 0) break;
      request.append(buf, static_cast<size_t>(n));
    }
    return request;
  }

  std::function<std::string(const std::string&)> handler_;
  int fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  mutable std::mutex mu_;
  std::string last_request_;
  std::thread thread_;
};

// An in-memory bucket behind a FakeServer, speaking the part of S3 an S3 store's incoming
// capsule uses: HEAD, ranged GET (If-Match honoured), PUT, DELETE of objects, and the multipart
// flow (POST ?uploads, PUT ?partNumber&uploadId, POST ?uploadId, DELETE ?uploadId, GET ?uploads
// listing them: one page). Paths are
// /BUCKET/KEY (one bucket; the bucket name is not checked). Its completion can be told to
// misbehave (set_completion), and what happens to the object right after it is assembled can
// be changed (set_after_complete: another writer's doing).
class FakeBucket {
 public:
  struct Object {
    std::string bytes;
    std::string etag;  // quotes included
  };
  // What a completion (POST ?uploadId) answers.
  enum class Completion {
    kResult,            // 200 CompleteMultipartUploadResult naming the object's ETag
    kResultWithoutETag, // 200 CompleteMultipartUploadResult without an ETag
    kErrorInA200,       // 200 with <Error> InternalError; nothing is assembled
    kNoSuchUpload,      // assembled, then 404 NoSuchUpload (the first reply was lost)
  };

  FakeBucket() : server_([this](const std::string& request) { return Handle(request); }) {}

  std::string endpoint() const { return server_.endpoint(); }

  // Set before the completion; `assemble` false: the completion makes no object (for
  // kNoSuchUpload: the upload was aborted by someone else, not completed).
  void set_completion(Completion c, bool assemble = true) {
    std::lock_guard<std::mutex> lock(mu_);
    completion_ = c;
    assemble_ = assemble;
  }
  // Called with the object a completion just assembled, before the reply.
  void set_after_complete(std::function<void(Object&)> f) {
    std::lock_guard<std::mutex> lock(mu_);
    after_complete_ = std::move(f);
  }

  // "METHOD /BUCKET/KEY?QUERY" of every request so far, in order (the path decoded).
  std::vector<std::string> requests() const {
    std::lock_guard<std::mutex> lock(mu_);
    return requests_;
  }
  // Stores `bytes` under `key` (another writer's PUT).
  void Put(const std::string& key, const std::string& bytes, const std::string& etag) {
    std::lock_guard<std::mutex> lock(mu_);
    objects_[key] = {bytes, etag};
  }
  bool Has(const std::string& key) const {
    std::lock_guard<std::mutex> lock(mu_);
    return objects_.count(key) != 0;
  }
  Object Get(const std::string& key) const {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = objects_.find(key);
    return it == objects_.end() ? Object() : it->second;
  }
  // After the next completion, the next `n` HEAD requests answer 503 (the endpoint throttled
  // past the client's retries).
  void set_failing_heads_after_complete(int n) {
    std::lock_guard<std::mutex> lock(mu_);
    heads_to_fail_after_complete_ = n;
  }
  // HEAD and GET of `key` answer 403 AccessDenied from now on (an object another account wrote
  // and this one may not read); listings still show it.
  void Deny(const std::string& key) {
    std::lock_guard<std::mutex> lock(mu_);
    denied_.insert(key);
  }
  // Starts a multipart upload of `key` as another daemon would; its upload id.
  std::string StartUpload(const std::string& key) {
    std::lock_guard<std::mutex> lock(mu_);
    const std::string id = "upload-" + std::to_string(++next_upload_);
    uploads_[id].key = key;
    return id;
  }
  // Multipart uploads neither completed nor aborted.
  size_t open_uploads() const {
    std::lock_guard<std::mutex> lock(mu_);
    return uploads_.size();
  }

 private:
  using Query = std::map<std::string, std::string>;

  static std::string Decode(const std::string& s) {
    std::string out;
    for (size_t i = 0; i < s.size(); ++i) {
      if (s[i] == '%' && i + 2 < s.size()) {
        out.push_back(static_cast<char>(std::stoi(s.substr(i + 1, 2), nullptr, 16)));
        i += 2;
      } else {
        out.push_back(s[i]);
      }
    }
    return out;
  }
  static std::string Tag(const std::string& bytes, const std::string& suffix = "") {
    char hex[17];
    std::snprintf(hex, sizeof(hex), "%016zx", std::hash<std::string>()(bytes));
    return "\"" + std::string(hex) + suffix + "\"";
  }
  static std::string Reply(int code, const std::string& reason, const std::string& headers,
                           const std::string& body, bool head = false) {
    return "HTTP/1.1 " + std::to_string(code) + " " + reason + "\r\n" + headers +
           (head ? "" : "Content-Length: " + std::to_string(body.size()) + "\r\n") +
           "Connection: close\r\n\r\n" + body;
  }
  static std::string Error(int code, const std::string& reason, const std::string& s3_code) {
    return Reply(code, reason, "Content-Type: application/xml\r\n",
                 "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>" + s3_code +
                     "</Code><Message>fake</Message></Error>");
  }

  std::string Handle(const std::string& request) {
    const size_t sp1 = request.find(' '), sp2 = request.find(' ', sp1 + 1);
    if (sp1 == std::string::npos || sp2 == std::string::npos) return Error(400, "Bad", "Bad");
    const std::string method = request.substr(0, sp1);
    const std::string target = request.substr(sp1 + 1, sp2 - sp1 - 1);
    const std::string body = request.substr(request.find("\r\n\r\n") + 4);
    const size_t q = target.find('?');
    const std::string path = Decode(target.substr(0, q));
    Query query;
    if (q != std::string::npos) {
      std::stringstream in(target.substr(q + 1));
      for (std::string kv; std::getline(in, kv, '&');) {
        const size_t eq = kv.find('=');
        query[Decode(kv.substr(0, eq))] = eq == std::string::npos ? "" : Decode(kv.substr(eq + 1));
      }
    }
    const size_t slash = path.find('/', 1);
    const std::string key = slash == std::string::npos ? "" : path.substr(slash + 1);
    std::lock_guard<std::mutex> lock(mu_);
    requests_.push_back(method + " " + path + (q == std::string::npos ? "" : target.substr(q)));
    if (query.count("uploadId") != 0 && uploads_.count(query["uploadId"]) == 0) {
      return Error(404, "Not Found", "NoSuchUpload");
    }
    if (method == "POST" && query.count("uploads") != 0) {
      const std::string id = "upload-" + std::to_string(++next_upload_);
      uploads_[id].key = key;
      return Reply(200, "OK", "", "<InitiateMultipartUploadResult><UploadId>" + id +
                                      "</UploadId></InitiateMultipartUploadResult>");
    }
    if (method == "POST" && query.count("uploadId") != 0) return Complete(key, query, body);
    if (method == "PUT" && query.count("partNumber") != 0) {
      const std::string etag = Tag(body);
      uploads_[query["uploadId"]].parts[std::stoi(query["partNumber"])] = {body, etag};
      return Reply(200, "OK", "ETag: " + etag + "\r\n", "");
    }
    if (method == "GET" && query.count("uploadId") != 0) {  // ListParts, one page
      std::string parts;
      for (const auto& [n, part] : uploads_[query["uploadId"]].parts) {
        parts += "<Part><PartNumber>" + std::to_string(n) + "</PartNumber><ETag>" + part.etag +
                 "</ETag><Size>" + std::to_string(part.bytes.size()) + "</Size></Part>";
      }
      return Reply(200, "OK", "", "<ListPartsResult>" + parts + "</ListPartsResult>");
    }
    if (method == "GET" && key.empty() && query.count("uploads") != 0) {
      std::string uploads;  // ListMultipartUploads, one page
      for (const auto& [id, up] : uploads_) {
        if (up.key.compare(0, query["prefix"].size(), query["prefix"]) != 0) continue;
        uploads += "<Upload><Key>" + up.key + "</Key><UploadId>" + id + "</UploadId></Upload>";
      }
      return Reply(200, "OK", "", "<ListMultipartUploadsResult>" + uploads +
                                      "</ListMultipartUploadsResult>");
    }
    if (method == "GET" && key.empty() && query.size() == 1 && query.count("prefix") != 0) {
      std::string contents;  // ListObjects, one page
      for (const auto& [k, o] : objects_) {
        if (k.compare(0, query["prefix"].size(), query["prefix"]) != 0) continue;
        contents += "<Contents><Key>" + k + "</Key><ETag>" + o.etag + "</ETag><Size>" +
                    std::to_string(o.bytes.size()) + "</Size></Contents>";
      }
      return Reply(200, "OK", "", "<ListBucketResult>" + contents + "</ListBucketResult>");
    }
    if (method == "HEAD" && completed_ && heads_to_fail_after_complete_ > 0) {
      --heads_to_fail_after_complete_;
      return Reply(503, "Slow Down", "Content-Length: 0\r\n", "", true);
    }
    if (method == "DELETE" && query.count("uploadId") != 0) {
      uploads_.erase(query["uploadId"]);
      return Reply(204, "No Content", "", "");
    }
    if (!query.empty() || key.empty()) return Error(501, "Not Implemented", "NotImplemented");
    if (method == "PUT") {
      objects_[key] = {body, Tag(body)};
      return Reply(200, "OK", "ETag: " + objects_[key].etag + "\r\n", "");
    }
    if (method == "DELETE") {
      objects_.erase(key);
      return Reply(204, "No Content", "", "");
    }
    if (denied_.count(key) != 0) {
      return method == "HEAD" ? Reply(403, "Forbidden", "Content-Length: 0\r\n", "", true)
                              : Error(403, "Forbidden", "AccessDenied");
    }
    auto it = objects_.find(key);
    if (it == objects_.end()) {
      return method == "HEAD" ? Reply(404, "Not Found", "Content-Length: 0\r\n", "", true)
                              : Error(404, "Not Found", "NoSuchKey");
    }
    const Object& o = it->second;
    if (method == "HEAD") {
      return Reply(200, "OK",
                   "Content-Length: " + std::to_string(o.bytes.size()) + "\r\nETag: " + o.etag +
                       "\r\n",
                   "", true);
    }
    const std::string if_match = FakeServer::HeaderOf(request, "if-match");
    if (!if_match.empty() && if_match != o.etag) {
      return Error(412, "Precondition Failed", "PreconditionFailed");
    }
    uint64_t first = 0, last = 0;
    if (std::sscanf(FakeServer::HeaderOf(request, "range").c_str(), "bytes=%" SCNu64 "-%" SCNu64,
                    &first, &last) != 2 ||
        first > last || first >= o.bytes.size()) {
      return Error(416, "Range Not Satisfiable", "InvalidRange");
    }
    last = std::min<uint64_t>(last, o.bytes.size() - 1);
    return Reply(206, "Partial Content",
                 "Content-Range: bytes " + std::to_string(first) + "-" + std::to_string(last) +
                     "/" + std::to_string(o.bytes.size()) + "\r\nETag: " + o.etag + "\r\n",
                 o.bytes.substr(first, last - first + 1));
  }

  // POST ?uploadId: the listed parts, each with the ETag it was stored with, in order.
  std::string Complete(const std::string& key, Query& query, std::string body) {
    for (size_t at; (at = body.find("&quot;")) != std::string::npos;) body.replace(at, 6, "\"");
    if (completion_ == Completion::kErrorInA200) {
      return Reply(200, "OK", "", "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\n  <Error><Code>"
                                  "InternalError</Code><Message>fake</Message></Error>");
    }
    const Upload& up = uploads_[query["uploadId"]];
    Object assembled;
    size_t at = 0;
    int count = 0;
    for (const auto& [n, part] : up.parts) {
      const std::string listed = "<PartNumber>" + std::to_string(n) + "</PartNumber><ETag>" +
                                 part.etag + "</ETag>";
      if ((at = body.find(listed, at)) == std::string::npos) {
        return Error(400, "Bad Request", "InvalidPart");
      }
      assembled.bytes += part.bytes;
      ++count;
    }
    if (up.key != key || count == 0) return Error(400, "Bad Request", "InvalidPart");
    assembled.etag = Tag(assembled.bytes, "-" + std::to_string(count));
    uploads_.erase(query["uploadId"]);
    completed_ = true;
    const std::string ours = assembled.etag;
    if (assemble_) {
      objects_[key] = std::move(assembled);
      if (after_complete_) after_complete_(objects_[key]);
    }
    if (completion_ == Completion::kNoSuchUpload) return Error(404, "Not Found", "NoSuchUpload");
    const std::string etag =
        completion_ == Completion::kResult
            ? "<ETag>&quot;" + ours.substr(1, ours.size() - 2) + "&quot;</ETag>"
            : "";
    return Reply(200, "OK", "", "<CompleteMultipartUploadResult><Key>" + key + "</Key>" + etag +
                                    "</CompleteMultipartUploadResult>");
  }

  struct Upload {
    std::string key;
    std::map<int, Object> parts;
  };
  mutable std::mutex mu_;  // guards what follows; the server thread holds it per request
  std::map<std::string, Object> objects_;
  std::map<std::string, Upload> uploads_;
  std::set<std::string> denied_;
  std::vector<std::string> requests_;
  int next_upload_ = 0;
  Completion completion_ = Completion::kResult;
  bool assemble_ = true;
  bool completed_ = false;
  int heads_to_fail_after_complete_ = 0;
  std::function<void(Object&)> after_complete_;
  FakeServer server_;  // last: its thread stops before the state it uses goes
};

// A client configuration for a FakeServer: one attempt per request (no retries).
inline Config FakeConfig(const std::string& endpoint) {
  Config c;
  c.endpoint = endpoint;
  c.access_key_id = "AKID";
  c.secret_access_key = crypto::SecretBytes::CopyOf(std::string_view("secret"));
  c.max_attempts = 1;
  return c;
}

}  // namespace bunker::capsule::s3

#endif  // BUNKER_CAPSULE_S3_TEST_SERVER_H_
