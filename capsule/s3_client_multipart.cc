// The S3 client's multipart upload calls (spec/STORE.md "Receiving").
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "capsule/s3_client_internal.h"
#include "capsule/s3_xml.h"
#include "crypto/status_macros.h"

namespace bunker::capsule::s3 {

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
  if (!IsServerToken(id)) {
    return Malformed(impl_->config.endpoint, "no usable UploadId");
  }
  return id;
}

absl::StatusOr<std::string> Client::UploadPart(const Location& at, const std::string& upload_id,
                                               int part_number, absl::Span<const uint8_t> body,
                                               const Cancellation* cancel) {
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
  req.cancel = cancel;
  Response r;
  BUNKER_RETURN_IF_ERROR(impl_->Do(req, r, impl_->About(at, upload_id)));
  std::string etag = r.Header("etag");
  if (etag.empty()) return Malformed(impl_->config.endpoint, "part uploaded without an ETag");
  if (!IsServerToken(etag)) return Malformed(impl_->config.endpoint, "an unusable part ETag");
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
      if (!IsServerToken(part.etag)) {
        return Malformed(impl_->config.endpoint, "bad part ETag in a listing");
      }
      out.push_back(std::move(part));
    }
    if (xml->ChildText("IsTruncated") != "true") return out;
    int next = 0;
    if (!absl::SimpleAtoi(xml->ChildText("NextPartNumberMarker"), &next) || next <= marker ||
        next >= 10000) {
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
    as_error.error_in_ok_reply = true;
    return StatusFromResponse(as_error, what);
  }
  if (xml->name != "CompleteMultipartUploadResult") {
    return Malformed(impl_->config.endpoint, "not a CompleteMultipartUploadResult");
  }
  std::string etag = xml->ChildText("ETag");
  if (!etag.empty() && etag.front() != '"') etag = absl::StrCat("\"", etag, "\"");
  if (!etag.empty() && !IsServerToken(etag)) {
    return Malformed(impl_->config.endpoint, "an unusable ETag in a CompleteMultipartUploadResult");
  }
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
      if (up.key.empty() || !IsServerToken(up.upload_id) || !absl::StartsWith(up.key, prefix)) {
        return Malformed(impl_->config.endpoint, "bad upload in a listing");
      }
      if (out.size() >= kMaxListEntries) {
        return Malformed(impl_->config.endpoint, "listing of over 1,000,000 uploads");
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

}  // namespace bunker::capsule::s3
