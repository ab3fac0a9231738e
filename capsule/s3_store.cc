#include "capsule/s3_store.h"

#include <dirent.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include <cerrno>

#include <algorithm>
#include <map>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "capsule/format.h"
#include "capsule/io.h"
#include "capsule/paths.h"
#include "capsule/s3_store_internal.h"
#include "crypto/secret.h"
#include "crypto/sha256.h"

namespace bunker::capsule {

uint64_t ChunksPerPart(const Geometry& g, uint64_t min_part_size) {
  const uint64_t chunk = std::max<uint64_t>(1, g.chunk_size);
  uint64_t n = std::max<uint64_t>(1, (min_part_size + chunk - 1) / chunk);
  // Never more than kMaxParts parts.
  n = std::max<uint64_t>(n, (g.chunk_count + kMaxParts - 1) / kMaxParts);
  return n;
}

namespace internal_s3_store {
namespace {

// What the spool leaves free on its file system (the daemon's own disk, where its state and
// audit log may live too): a twentieth of it, at most 1 GiB.
uint64_t SpoolReserve(const std::string& spool) {
  constexpr uint64_t kMostReserve = uint64_t{1} << 30;
  struct statvfs vfs;
  if (::statvfs(spool.c_str(), &vfs) != 0) return kMostReserve;
  return std::min(kMostReserve, static_cast<uint64_t>(vfs.f_blocks) * vfs.f_frsize / 20);
}

// The log line for a marker object that cannot be read or parsed. Anyone who may write to the
// bucket can put one (too large, unreadable to this account, garbage), so it never stops a
// daemon's start and is never deleted: it is named (its key escaped for a terminal) and skipped,
// and `then` says what follows from that.
std::string MarkerSkipped(const s3::Location& at, absl::string_view why, absl::string_view then) {
  return absl::StrCat("s3: the marker object ", EscapeForTerminal(s3::ToUrl(at), false),
                      " cannot be ", why, ": it is skipped and left in place", then);
}

// Why a marker object could not be read, for MarkerSkipped. The listing before it worked with
// the same credentials, so a refusal is this object's (another account's object, a policy),
// whatever the server's reply suggests (a HEAD's 403 carries no code to tell it apart from a
// wrong secret).
std::string MarkerUnreadable(const absl::Status& status) {
  if (absl::IsPermissionDenied(status)) {
    return "read (the server refuses this account access to it, though it lists the bucket)";
  }
  return absl::StrCat("read (", status.message(), ")");
}

// A marker body's first field ("<upload id or pending> <boot>", or an earlier version's
// "<upload id>"), if it is one: "pending" or an upload id (IsToken). Else "".
std::string MarkerUpload(const std::vector<std::string>& fields) {
  if (fields.empty() || fields.size() > 2) return "";
  return fields[0] == kPending || IsToken(fields[0]) ? fields[0] : "";
}

class S3StoreImpl final : public Store {
 public:
  explicit S3StoreImpl(std::shared_ptr<const Shared> shared) : shared_(std::move(shared)) {}

  std::string Describe() const override {
    return s3::ToUrl({shared_->o.bucket, shared_->o.prefix});
  }

  // Anyone with write access to the bucket may put objects in it.
  bool OnlyItsDaemonWrites() const override { return false; }

  absl::StatusOr<std::unique_ptr<RandomAccessFile>> Open(const std::string& id) override {
    if (!IsCapsuleId(id)) return absl::InvalidArgumentError("a capsule id is 32 hex characters");
    absl::StatusOr<std::unique_ptr<RandomAccessFile>> f =
        s3::OpenObject(shared_->o.client, shared_->KeyOf(id));
    if (absl::IsNotFound(f.status())) {
      return absl::NotFoundError(absl::StrCat("capsule ", id, " is not in the store"));
    }
    return f;
  }

  absl::StatusOr<std::vector<std::string>> List() override {
    absl::StatusOr<std::vector<s3::ObjectInfo>> objects =
        shared_->o.client->List(shared_->o.bucket, shared_->o.prefix);
    if (!objects.ok()) return objects.status();
    std::vector<std::string> ids;
    const std::string suffix = kSuffix;
    for (const s3::ObjectInfo& o : *objects) {
      absl::string_view key = o.key;
      if (!absl::ConsumePrefix(&key, shared_->o.prefix) || !absl::ConsumeSuffix(&key, suffix)) {
        continue;
      }
      std::string id(key);
      if (IsCapsuleId(id)) ids.push_back(std::move(id));
    }
    std::sort(ids.begin(), ids.end());
    return ids;
  }

  absl::StatusOr<std::unique_ptr<IncomingCapsule>> Begin(
      const Prelude& prelude, absl::Span<const crypto::PublicIdentity> trusted) override {
    absl::StatusOr<std::unique_ptr<CapsuleReader>> checked = CheckPrelude(prelude, trusted);
    if (!checked.ok()) return checked.status();
    const std::string id = (*checked)->manifest().IdHex();
    absl::StatusOr<s3::ObjectInfo> stored = shared_->o.client->Head(shared_->KeyOf(id));
    if (stored.ok()) {
      // What a completion whose check failed, or a crash before its cleanup, left here is of
      // no use now: removed if its upload is gone.
      absl::StatusOr<std::string> cleared = ClearLeftover(id);
      if (!cleared.ok()) {
        shared_->Log(absl::StrCat("s3: capsule ", id, " is stored; checking what this daemon "
                                  "may have left of it failed: ", cleared.status().message()));
      } else if (!cleared->empty()) {
        shared_->Log(*cleared);
      }
      return absl::AlreadyExistsError(absl::StrCat("capsule ", id, " is already in the store"));
    }
    if (!absl::IsNotFound(stored.status())) return stored.status();
    for (int attempt = 0;; ++attempt) {
      absl::StatusOr<std::unique_ptr<Claim>> claim = Claim::Take(shared_, id);
      if (!claim.ok()) return claim.status();
      // Not checked on resume: chunks uploaded already were released from the spool (holes),
      // and each chunk is checked again as it leaves it (S3Incoming::UploadOne).
      absl::StatusOr<std::unique_ptr<LocalIncoming>> spool =
          LocalIncoming::Begin(shared_->o.spool, prelude, trusted, std::nullopt,
                               SpoolReserve(shared_->o.spool), /*check_resumed=*/false);
      if (!spool.ok()) return spool.status();
      const std::string journal = (*spool)->incoming_folder() + "/" + id + ".parts";
      auto in = std::make_unique<S3Incoming>(std::move(*claim), shared_, std::move(*spool), journal);
      absl::Status s = in->Resume(trusted);
      if (absl::IsAborted(s) && attempt == 0) continue;  // the upload was gone: afresh, once
      if (!s.ok()) return s;
      return std::unique_ptr<IncomingCapsule>(std::move(in));
    }
  }

  absl::StatusOr<std::vector<std::string>> Recover() override {
    std::vector<std::string> lines;
    s3::Client& client = *shared_->o.client;
    absl::Status booted = shared_->RecordBoot();
    if (!booted.ok()) return booted;
    const std::string incoming = shared_->o.spool + "/.incoming";
    // Local state of capsules that are stored and whose upload is gone (a completion whose
    // check failed, a crash before its cleanup) goes first, and with it its marker.
    for (const std::string& id : SpooledIds()) {
      absl::StatusOr<std::string> cleared = ClearLeftover(id);
      if (!cleared.ok()) return cleared.status();
      if (!cleared->empty()) lines.push_back(*cleared);
    }
    // Upload ids our journals name.
    std::map<std::string, std::string> ours;  // upload id -> capsule id
    if (DIR* dir = ::opendir(incoming.c_str())) {
      while (struct dirent* e = ::readdir(dir)) {
        std::string name = e->d_name;
        const std::string suffix = ".parts";
        if (name.size() <= suffix.size() ||
            name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0) {
          continue;
        }
        PartsJournal j(incoming + "/" + name);
        if (j.Load().ok() && !j.upload_id().empty()) {
          ours[j.upload_id()] = name.substr(0, name.size() - suffix.size());
        }
      }
      ::closedir(dir);
    }
    // Our markers: uploads this daemon started. One no journal names is abandoned, if this
    // spool's own runs wrote it: a copy of the state folder (the same daemon id) running
    // elsewhere writes markers with boot nonces this daemon never had, and they are left alone.
    const std::set<std::string> boots = shared_->Boots();
    absl::StatusOr<std::vector<s3::ObjectInfo>> markers =
        client.List(shared_->o.bucket, shared_->MarkerPrefix());
    if (!markers.ok()) return markers.status();
    for (const s3::ObjectInfo& m : *markers) {
      absl::string_view key = m.key;
      if (!absl::ConsumePrefix(&key, shared_->MarkerPrefix()) ||
          !absl::ConsumeSuffix(&key, ".upload")) {
        continue;
      }
      const std::string id(key);
      if (!IsCapsuleId(id)) continue;
      const s3::Location at{shared_->o.bucket, m.key};
      absl::StatusOr<std::string> body = GetSmall(client, at);
      if (absl::IsNotFound(body.status())) continue;
      // Only the listing (above) stops the start: a wrong key or secret fails it already.
      if (!body.ok()) {
        lines.push_back(MarkerSkipped(at, MarkerUnreadable(body.status()),
                                      ""));
        continue;
      }
      // "<upload id> <boot>", or (an earlier version) "<upload id>".
      std::vector<std::string> fields = absl::StrSplit(*body, ' ');
      const std::string upload = MarkerUpload(fields);
      if (upload.empty()) {
        lines.push_back(MarkerSkipped(at, "parsed (not \"<upload id> <boot>\")", ""));
        continue;
      }
      if (fields.size() == 2) {
        if (fields[1] == shared_->boot) continue;  // this run's own: live
        if (boots.count(fields[1]) == 0) {
          lines.push_back(absl::StrCat("s3: the marker of capsule ", id,
                                       " was written by another daemon with this daemon's id "
                                       "(a copied state folder?); its upload is left alone"));
          continue;
        }
      }
      if (upload == kPending) {
        absl::StatusOr<std::vector<std::string>> aborted = AbortUnnamed(id, ours);
        if (!aborted.ok()) return aborted.status();
        lines.insert(lines.end(), aborted->begin(), aborted->end());
        absl::Status d = client.Delete({shared_->o.bucket, m.key});
        if (!d.ok()) return d;
        continue;
      }
      if (ours.count(upload) != 0) continue;  // resumable: kept
      absl::Status s = client.AbortMultipartUpload(shared_->KeyOf(id), upload);
      if (!s.ok() && !absl::IsNotFound(s)) return s;
      if (s.ok()) {
        lines.push_back(absl::StrCat("s3: aborted an abandoned upload of capsule ", id,
                                     " (no journal names it)"));
      }
      absl::Status d = client.Delete({shared_->o.bucket, m.key});
      if (!d.ok()) return d;
    }
    return lines;
  }

 private:
  // The capsule ids this daemon's spool holds files of (partial capsule, journals).
  std::vector<std::string> SpooledIds() const {
    std::set<std::string> ids;
    const std::string incoming = shared_->o.spool + "/.incoming";
    if (DIR* dir = ::opendir(incoming.c_str())) {
      while (struct dirent* e = ::readdir(dir)) {
        absl::string_view name = e->d_name;
        if (absl::ConsumeSuffix(&name, kSuffix) || absl::ConsumeSuffix(&name, ".journal") ||
            absl::ConsumeSuffix(&name, ".parts")) {
          if (IsCapsuleId(std::string(name))) ids.insert(std::string(name));
        }
      }
      ::closedir(dir);
    }
    return std::vector<std::string>(ids.begin(), ids.end());
  }

  // Removes what this daemon's spool holds of capsule `id` (partial capsule, chunk and upload
  // journals) and this daemon's marker naming its upload, if an object is stored under its key
  // and the upload its journal names no longer exists (or none is journaled: the spool cannot be
  // resumed). Such state is left when a completion succeeded but its check failed, or the
  // daemon stopped between completion and cleanup; Begin refuses every new offer of the capsule
  // (the key is taken), so nothing else would ever remove it. Kept: the state of a capsule whose
  // key is free, of an upload that still exists, of an incoming capsule live in this process,
  // and markers of other daemons or of a copy of this one (another boot nonce). Returns the log
  // line, or "" when nothing was removed.
  absl::StatusOr<std::string> ClearLeftover(const std::string& id) {
    const std::string base = absl::StrCat(shared_->o.spool, "/.incoming/", id);
    struct stat st;
    if (::lstat((base + kSuffix).c_str(), &st) != 0 &&
        ::lstat((base + ".journal").c_str(), &st) != 0 &&
        ::lstat((base + ".parts").c_str(), &st) != 0) {
      return std::string();
    }
    std::unique_ptr<Claim> claim = Claim::TryTake(shared_, id);
    if (claim == nullptr) return std::string();  // being received in this process
    s3::Client& client = *shared_->o.client;
    const s3::Location key = shared_->KeyOf(id);
    absl::StatusOr<s3::ObjectInfo> stored = client.Head(key);
    if (absl::IsNotFound(stored.status())) return std::string();  // resumable, or afresh
    if (!stored.ok()) return stored.status();
    PartsJournal journal(base + ".parts");
    absl::Status s = journal.Load();
    if (!s.ok()) {
      return absl::StrCat("s3: capsule ", id, " is stored, but its upload journal here cannot "
                          "be read (", s.message(), "): what this daemon has of it is kept");
    }
    if (!journal.upload_id().empty()) {
      absl::StatusOr<std::vector<s3::Part>> parts = client.ListParts(key, journal.upload_id());
      if (parts.ok()) return std::string();  // the upload exists: never removed here
      if (!absl::IsNotFound(parts.status())) return parts.status();
    }
    // Only to say which it is: the decision does not depend on it.
    std::string what = " (the spool held no prelude to compare the object with)";
    uint64_t size = 0;
    absl::StatusOr<Prelude> prelude = SpooledPrelude(base + kSuffix, &size);
    if (prelude.ok()) {
      absl::StatusOr<bool> same = SamePreludeStored(client, key, *prelude, size);
      if (!same.ok() && !absl::IsNotFound(same.status())) return same.status();
      what = !same.ok() ? " (the object is gone meanwhile)"
             : *same    ? " (the object has this capsule's size, header and tail)"
                        : " (the object there is not this capsule)";
    }
    // The spool before its upload journal (S3Incoming::Cleanup says why).
    for (const char* ext : {kSuffix, ".journal", ".parts"}) {
      if (::unlink((base + ext).c_str()) != 0 && errno != ENOENT) {
        const int err = errno;
        return ErrnoStatus(absl::StrCat("cannot remove the leftover spool of capsule ", id), err);
      }
    }
    s = SyncDirectory(shared_->o.spool + "/.incoming");
    if (!s.ok()) return s;
    std::string marker = "";
    std::string skipped = "";  // why the marker was not read
    if (!journal.upload_id().empty()) {
      absl::StatusOr<std::string> body = GetSmall(client, shared_->MarkerOf(id));
      if (!body.ok() && !absl::IsNotFound(body.status())) {
        skipped = absl::StrCat("; ", MarkerSkipped(shared_->MarkerOf(id),
                                                   MarkerUnreadable(body.status()),
                                                   ""));
      } else if (body.ok()) {
        // "<upload id> <boot>" of one of this state folder's runs, or "<upload id>".
        std::vector<std::string> f = absl::StrSplit(*body, ' ');
        const std::set<std::string> boots = shared_->Boots();
        if (f[0] == journal.upload_id() &&
            (f.size() == 1 || (f.size() == 2 && boots.count(f[1]) != 0))) {
          s = client.Delete(shared_->MarkerOf(id));
          if (!s.ok()) return s;
          marker = " and its marker";
        }
      }
    }
    return absl::StrCat("s3: capsule ", id, " is stored", what, " and ",
                        journal.upload_id().empty() ? "no upload of it is journaled"
                                                    : "its upload is gone",
                        ": removed what this daemon had left of it (its spool and journals",
                        marker, "); no receipt is recorded for it", skipped);
  }

  // After a crash between a pending marker and the journal line of its upload: the uploads of
  // capsule `id` that no journal of ours (`ours`) and no marker of any daemon names are ours,
  // unless another daemon is itself starting an upload of that capsule (its marker is pending):
  // then nothing is aborted, since the two cannot be told apart.
  absl::StatusOr<std::vector<std::string>> AbortUnnamed(
      const std::string& id, const std::map<std::string, std::string>& ours) {
    s3::Client& client = *shared_->o.client;
    const s3::Location key = shared_->KeyOf(id);
    std::vector<std::string> lines;
    // Uploads first, markers second: a daemon writes its pending marker before it creates its
    // upload, so every upload listed here already has a marker (pending or naming it) when the
    // markers are listed. The other order could see a new upload whose marker it missed.
    absl::StatusOr<std::vector<s3::Upload>> uploads =
        client.ListMultipartUploads(shared_->o.bucket, key.key);
    if (!uploads.ok()) return uploads.status();
    absl::StatusOr<std::vector<s3::ObjectInfo>> all =
        client.List(shared_->o.bucket, shared_->o.prefix + ".incoming/");
    if (!all.ok()) return all.status();
    std::set<std::string> named;
    const std::string suffix = absl::StrCat("/", id, ".upload");
    for (const s3::ObjectInfo& m : *all) {
      // Only PREFIX.incoming/<daemon id>/<id>.upload of another daemon: a key of another form
      // (anyone with write access to the bucket may put one there) is no marker.
      absl::string_view daemon = m.key;
      if (!absl::ConsumePrefix(&daemon, shared_->o.prefix + ".incoming/") ||
          !absl::ConsumeSuffix(&daemon, suffix) || !IsDaemonId(std::string(daemon)) ||
          daemon == shared_->o.daemon_id) {
        continue;
      }
      const s3::Location at{shared_->o.bucket, m.key};
      absl::StatusOr<std::string> body = GetSmall(client, at);
      if (absl::IsNotFound(body.status())) continue;
      // A marker that cannot be read or parsed might name any upload of the capsule, or be
      // pending: as with a pending one, nothing can be told apart and nothing is aborted.
      const std::string upload =
          body.ok() ? MarkerUpload(std::vector<std::string>(absl::StrSplit(*body, ' ')))
                    : std::string();
      if (upload.empty()) {
        lines.push_back(MarkerSkipped(
            at,
            body.ok() ? std::string("parsed (not \"<upload id> <boot>\")")
                      : MarkerUnreadable(body.status()),
            absl::StrCat("; an upload of capsule ", id,
                         " that this daemon may have left is kept")));
        return lines;
      }
      if (upload == kPending) {
        lines.push_back(absl::StrCat("s3: an upload of capsule ", id, " that this daemon may "
                                     "have left is kept: another daemon is starting one"));
        return lines;
      }
      named.insert(upload);
    }
    for (const s3::Upload& u : *uploads) {
      if (u.key != key.key || ours.count(u.upload_id) != 0 || named.count(u.upload_id) != 0 ||
          !IsToken(u.upload_id)) {
        continue;
      }
      absl::Status s = client.AbortMultipartUpload(key, u.upload_id);
      if (!s.ok() && !absl::IsNotFound(s)) return s;
      if (s.ok()) {
        lines.push_back(absl::StrCat("s3: aborted an abandoned upload of capsule ", id,
                                     " (started before a crash, never journaled)"));
      }
    }
    return lines;
  }

  std::shared_ptr<const Shared> shared_;
};

}  // namespace
}  // namespace internal_s3_store

absl::StatusOr<std::shared_ptr<Store>> MakeS3Store(S3StoreOptions options) {
  if (options.client == nullptr) return absl::InvalidArgumentError("no S3 client");
  if (!options.prefix.empty() && options.prefix.back() != '/') {
    return absl::InvalidArgumentError("an S3 store prefix is empty or ends with \"/\"");
  }
  // The longest key the store makes, PREFIX.incoming/<daemon id: 64>/<id: 32>.upload, must
  // stay within S3's 1024 bytes.
  if (options.prefix.size() > kMaxPrefixSize) {
    return absl::InvalidArgumentError(
        absl::StrCat("an S3 store prefix is at most ", kMaxPrefixSize, " bytes"));
  }
  if (!internal_s3_store::IsDaemonId(options.daemon_id)) {
    return absl::InvalidArgumentError("a daemon id is 1 to 64 of [a-z0-9-]");
  }
  if (options.spool.empty()) return absl::InvalidArgumentError("no spool folder");
  if (options.min_part_size < (uint64_t{5} << 20)) {
    return absl::InvalidArgumentError("S3 parts are at least 5 MiB");
  }
  auto shared = std::make_shared<internal_s3_store::Shared>();
  shared->o = std::move(options);
  uint8_t nonce[8];
  crypto::RandomBytes(absl::MakeSpan(nonce));
  shared->boot = crypto::ToHex(absl::MakeConstSpan(nonce));
  return std::shared_ptr<Store>(
      std::make_shared<internal_s3_store::S3StoreImpl>(std::move(shared)));
}

}  // namespace bunker::capsule
