#include "site/protocol.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "capnp/serialize.h"
#include "capsule/strict_decode.h"
#include "crypto/status_hint.h"
#include "crypto/status_macros.h"
#include "spec/verifier.capnp.h"
#include "verifier/policy.h"

namespace bunker::site {
namespace {

constexpr char kSignContext[] = "bunker verifier request v1";
constexpr size_t kMaxEntriesPerReply = 4096;
// A result's denied files, in bytes of path (with the other fields, well within kMaxFrame).
constexpr size_t kMaxDeniedFilesBytes = 256 * 1024;

kj::ArrayPtr<const kj::byte> Bytes(absl::Span<const uint8_t> s) {
  return kj::ArrayPtr<const kj::byte>(s.data(), s.size());
}
std::vector<uint8_t> Vec(capnp::Data::Reader d) { return std::vector<uint8_t>(d.begin(), d.end()); }
std::string Str(capnp::Text::Reader t) { return std::string(t.cStr(), t.size()); }

absl::Status Malformed(const char* what) {
  return absl::InvalidArgumentError(absl::StrCat("malformed ", what, " from the peer"));
}

template <typename T>
void SetTextList(T builder_init, const std::vector<std::string>& items) {
  for (size_t i = 0; i < items.size(); ++i) builder_init.set(i, items[i]);
}

std::vector<std::string> TextList(capnp::List<capnp::Text>::Reader list) {
  std::vector<std::string> out;
  for (auto t : list) out.push_back(Str(t));
  return out;
}

schema::RequestBody::Command ToWire(Command c) {
  switch (c) {
    case Command::kOpen:
      return schema::RequestBody::Command::OPEN;
    case Command::kToTar:
      return schema::RequestBody::Command::TO_TAR;
    case Command::kCat:
      return schema::RequestBody::Command::CAT;
    case Command::kLs:
      return schema::RequestBody::Command::LS;
    case Command::kExplain:
      return schema::RequestBody::Command::EXPLAIN;
    case Command::kMount:
      return schema::RequestBody::Command::MOUNT;
    case Command::kMounts:
      return schema::RequestBody::Command::MOUNTS;
  }
  return schema::RequestBody::Command::OPEN;
}

std::optional<capsule::FileEntry::Type> TypeFromName(const std::string& name) {
  for (auto t : {capsule::FileEntry::Type::kFile, capsule::FileEntry::Type::kDirectory,
                 capsule::FileEntry::Type::kSymlink, capsule::FileEntry::Type::kHardlink}) {
    if (name == capsule::TypeName(t)) return t;
  }
  return std::nullopt;
}

}  // namespace

std::vector<uint8_t> SignedMessage(absl::Span<const uint8_t> challenge,
                                   absl::Span<const uint8_t> body) {
  std::vector<uint8_t> m(kSignContext, kSignContext + sizeof kSignContext);  // with its NUL
  m.insert(m.end(), challenge.begin(), challenge.end());
  m.insert(m.end(), body.begin(), body.end());
  return m;
}

absl::Status SendHello(int sock, const Hello& hello) {
  capnp::MallocMessageBuilder message;
  auto h = message.initRoot<schema::Hello>();
  h.setVersion(hello.version);
  h.setSite(hello.site);
  h.setChallenge(Bytes(hello.challenge));
  return SendFrame(sock, message);
}

absl::StatusOr<Hello> ReceiveHello(int sock) {
  BUNKER_ASSIGN_OR_RETURN(Frame f, ReceiveFrame(sock, 0));
  try {
    auto h = f.reader->getRoot<schema::Hello>();
    Hello out;
    out.version = h.getVersion();
    out.site = Str(h.getSite());
    out.challenge = Vec(h.getChallenge());
    if (out.challenge.size() != kChallengeSize) return Malformed("greeting");
    return out;
  } catch (const kj::Exception&) {
    return Malformed("greeting");
  }
}

std::vector<uint8_t> EncodeRequestBody(const WireRequest& r) {
  capnp::MallocMessageBuilder message;
  auto b = message.initRoot<schema::RequestBody>();
  b.setCommand(ToWire(r.command));
  if (r.purpose) {
    b.setPurpose(*r.purpose);
    b.setHasPurpose(true);
  }
  SetTextList(b.initOnly(r.only.size()), r.only);
  b.setDestination(r.destination);
  b.setPath(r.path);
  b.setFdCount(r.fd_count);
  b.setThreads(r.threads);
  b.setMountpoint(r.mountpoint);
  b.setCacheBytes(r.cache_bytes);
  b.setCapsuleUrl(r.capsule_url);
  kj::Array<capnp::word> words =
      capnp::canonicalize(b.asReader());
  const kj::ArrayPtr<const kj::byte> bytes = words.asBytes();
  return std::vector<uint8_t>(bytes.begin(), bytes.end());
}

namespace {

// The fields of a canonical RequestBody (a kj::Exception escapes for a malformed one).
absl::StatusOr<WireRequest> ReadRequestBody(schema::RequestBody::Reader b) {
  WireRequest r;
  switch (b.getCommand()) {
    case schema::RequestBody::Command::OPEN:
      r.command = Command::kOpen;
      break;
    case schema::RequestBody::Command::TO_TAR:
      r.command = Command::kToTar;
      break;
    case schema::RequestBody::Command::CAT:
      r.command = Command::kCat;
      break;
    case schema::RequestBody::Command::LS:
      r.command = Command::kLs;
      break;
    case schema::RequestBody::Command::EXPLAIN:
      r.command = Command::kExplain;
      break;
    case schema::RequestBody::Command::MOUNT:
      r.command = Command::kMount;
      break;
    case schema::RequestBody::Command::MOUNTS:
      r.command = Command::kMounts;
      break;
    default:
      return Malformed("request (unknown command)");
  }
  if (b.getHasPurpose()) r.purpose = Str(b.getPurpose());
  r.only = TextList(b.getOnly());
  r.destination = Str(b.getDestination());
  r.path = Str(b.getPath());
  r.fd_count = b.getFdCount();
  r.threads = b.getThreads();
  r.mountpoint = Str(b.getMountpoint());
  r.cache_bytes = b.getCacheBytes();
  r.capsule_url = Str(b.getCapsuleUrl());
  return r;
}

}  // namespace

absl::StatusOr<WireRequest> DecodeRequestBody(absl::Span<const uint8_t> body) {
  // Checked for canonical form (one segment, no segment table) only, not re-encoded
  // (encode = nullptr), as this decoder always was.
  return capsule::StrictDecode<schema::RequestBody>(
      body, capsule::StrictDecodeLimits{kMaxFrame, /*traversal_factor=*/8, /*nesting=*/8},
      ReadRequestBody, nullptr, [](capsule::StrictDecodeFailure failure) {
        return failure == capsule::StrictDecodeFailure::kNotCanonical
                   ? Malformed("request (not canonical)")
                   : Malformed("request");
      });
}

absl::Status SendRequest(int sock, const SignedRequest& request, absl::Span<const int> fds) {
  capnp::MallocMessageBuilder message;
  auto r = message.initRoot<schema::Request>();
  r.setBody(Bytes(request.body));
  r.setRequesterKey(request.requester_pem);
  r.setSignature(Bytes(request.signature));
  return SendFrame(sock, message, fds);
}

absl::StatusOr<std::pair<SignedRequest, std::vector<capsule::Fd>>> ReceiveRequest(
    int sock, Deadline deadline) {
  BUNKER_ASSIGN_OR_RETURN(Frame f, ReceiveFrame(sock, kMaxFrameFds, deadline));
  try {
    auto r = f.reader->getRoot<schema::Request>();
    SignedRequest out;
    out.body = Vec(r.getBody());
    out.requester_pem = Str(r.getRequesterKey());
    out.signature = Vec(r.getSignature());
    return std::make_pair(std::move(out), std::move(f.fds));
  } catch (const kj::Exception&) {
    return Malformed("request");
  }
}

absl::Status SendProgress(int sock, uint64_t done, uint64_t total) {
  capnp::MallocMessageBuilder message;
  auto p = message.initRoot<schema::Reply>().initProgress();
  p.setDone(done);
  p.setTotal(total);
  return SendFrame(sock, message);
}

absl::Status SendEntries(int sock, const std::vector<capsule::FileEntry>& entries) {
  capnp::MallocMessageBuilder message;
  auto list = message.initRoot<schema::Reply>().initEntries(entries.size());
  for (size_t i = 0; i < entries.size(); ++i) {
    const capsule::FileEntry& e = entries[i];
    auto w = list[i];
    w.setPath(e.path);
    w.setType(capsule::TypeName(e.type));
    w.setSize(e.size);
    w.setMode(e.mode);
    w.setMtime(e.mtime);
    if (e.type == capsule::FileEntry::Type::kFile) {
      w.setSha256(kj::ArrayPtr<const kj::byte>(e.sha256.data(), e.sha256.size()));
    }
    w.setTarget(e.link_target);
  }
  return SendFrame(sock, message);
}

absl::Status SendResult(int sock, const WireResult& result) {
  capnp::MallocMessageBuilder message;
  auto r = message.initRoot<schema::Reply>().initDone();
  const Outcome& o = result.outcome;
  r.setCode(static_cast<uint32_t>(result.status.code()));
  // One line, bounded: the message crosses to another user's terminal.
  r.setMessage(std::string(result.status.message()).substr(0, 4000));
  r.setHint(HintOf(result.status).substr(0, 1000));
  r.setCapsuleId(o.capsule_id);
  r.setPermit(o.decision.permit);
  // Every list bounded, so that the reply always fits in one frame (kMaxFrame): a reply too
  // large to send would leave the client waiting for it. The audit log has the same bounds.
  const std::vector<std::string> rules =
      verifier::BoundLines(o.decision.rules, verifier::kMaxReasonsSize / 2, "rules");
  const std::vector<std::string> reasons =
      verifier::BoundLines(o.decision.reasons, verifier::kMaxReasonsSize, "reasons");
  SetTextList(r.initRules(rules.size()), rules);
  SetTextList(r.initReasons(reasons.size()), reasons);
  // The first 1000 denied files, and at most kMaxDeniedFilesBytes of them, whole.
  std::vector<std::string> denied;
  size_t denied_bytes = 0;
  for (const std::string& f : o.decision.denied_files) {
    if (denied.size() == 1000 || denied_bytes + f.size() > kMaxDeniedFilesBytes) break;
    denied_bytes += f.size();
    denied.push_back(f);
  }
  SetTextList(r.initDeniedFiles(denied.size()), denied);
  r.setCountsUse(o.decision.counts_use);
  r.setFiles(o.files);
  r.setDirectories(o.directories);
  r.setSymlinks(o.symlinks);
  r.setBytes(o.bytes);
  r.setRequester(o.requester);
  r.setSite(result.site);
  r.setRegion(result.region);
  SetTextList(r.initStorage(result.storage.size()), result.storage);
  r.setNotAfter(o.not_after);
  return SendFrame(sock, message);
}

absl::Status SendMounts(int sock, const std::vector<MountInfo>& mounts) {
  capnp::MallocMessageBuilder message;
  const size_t n = std::min(mounts.size(), kMaxEntriesPerReply);
  auto list = message.initRoot<schema::Reply>().initMounts(n);
  for (size_t i = 0; i < n; ++i) {
    const MountInfo& m = mounts[i];
    auto w = list[i];
    w.setMountpoint(m.mountpoint);
    w.setCapsuleId(m.capsule_id);
    w.setUid(m.uid);
    w.setSince(m.since);
    w.setNotAfter(m.not_after);
    w.setFilesOpened(m.files_opened);
    w.setBytesRead(m.bytes_read);
  }
  return SendFrame(sock, message);
}

absl::StatusOr<Reply> ReceiveReply(int sock) {
  BUNKER_ASSIGN_OR_RETURN(Frame f, ReceiveFrame(sock, 0));
  try {
    auto r = f.reader->getRoot<schema::Reply>();
    Reply out;
    switch (r.which()) {
      case schema::Reply::PROGRESS:
        out.progress = std::make_pair(r.getProgress().getDone(), r.getProgress().getTotal());
        return out;
      case schema::Reply::ENTRIES: {
        auto list = r.getEntries();
        if (list.size() > kMaxEntriesPerReply) return Malformed("listing");
        std::vector<capsule::FileEntry> entries;
        for (auto w : list) {
          capsule::FileEntry e;
          e.path = Str(w.getPath());
          std::optional<capsule::FileEntry::Type> t = TypeFromName(Str(w.getType()));
          if (!t) return Malformed("listing");
          e.type = *t;
          e.size = w.getSize();
          e.mode = w.getMode();
          e.mtime = w.getMtime();
          auto digest = w.getSha256();
          if (digest.size() == e.sha256.size()) {
            std::memcpy(e.sha256.data(), digest.begin(), digest.size());
          }
          e.link_target = Str(w.getTarget());
          entries.push_back(std::move(e));
        }
        out.entries = std::move(entries);
        return out;
      }
      case schema::Reply::DONE: {
        auto d = r.getDone();
        WireResult w;
        const uint32_t code = d.getCode();
        if (code > 16) return Malformed("result");
        w.status = absl::Status(static_cast<absl::StatusCode>(code), Str(d.getMessage()));
        if (d.hasHint()) w.status = WithHint(std::move(w.status), Str(d.getHint()));
        Outcome& o = w.outcome;
        o.capsule_id = Str(d.getCapsuleId());
        o.decision.permit = d.getPermit();
        o.decision.rules = TextList(d.getRules());
        o.decision.reasons = TextList(d.getReasons());
        o.decision.denied_files = TextList(d.getDeniedFiles());
        o.decision.counts_use = d.getCountsUse();
        o.files = d.getFiles();
        o.directories = d.getDirectories();
        o.symlinks = d.getSymlinks();
        o.bytes = d.getBytes();
        o.requester = Str(d.getRequester());
        w.site = Str(d.getSite());
        w.region = Str(d.getRegion());
        w.storage = TextList(d.getStorage());
        o.not_after = d.getNotAfter();
        out.result = std::move(w);
        return out;
      }
      case schema::Reply::MOUNTS: {
        auto list = r.getMounts();
        if (list.size() > kMaxEntriesPerReply) return Malformed("mount list");
        std::vector<MountInfo> mounts;
        for (auto w : list) {
          MountInfo m;
          m.mountpoint = Str(w.getMountpoint());
          m.capsule_id = Str(w.getCapsuleId());
          m.uid = w.getUid();
          m.since = w.getSince();
          m.not_after = w.getNotAfter();
          m.files_opened = w.getFilesOpened();
          m.bytes_read = w.getBytesRead();
          mounts.push_back(std::move(m));
        }
        out.mounts = std::move(mounts);
        return out;
      }
      default:
        return Malformed("reply");
    }
  } catch (const kj::Exception&) {
    return Malformed("reply");
  }
}

}  // namespace bunker::site
