// The gate and its permits in one file, over 500 lines on purpose: Permit::State (the reader,
// the data key, the decided selection) is defined here and nowhere else, so that no other
// code can make or fill a permit (site/gate.h, step 2). Its sections: the permit's releases,
// then the gate's decisions.
#include "site/gate.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <memory>
#include <set>
#include <string_view>
#include <unordered_set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "capsule/glob.h"
#include "capsule/paths.h"
#include "crypto/sha256.h"
#include "crypto/status_hint.h"
#include "crypto/status_macros.h"
#include "site/chunk_spool.h"
#include "site/release_io.h"
#include "verifier/policy.h"
#include "verifier/state_binding.h"

namespace bunker::site {

OpenCapsule::OpenCapsule() = default;
OpenCapsule::~OpenCapsule() = default;

std::string CapsuleId(const OpenCapsule& capsule) { return capsule.reader_->manifest().IdHex(); }

// A denial's hint: where to read the whole decision.
constexpr char kExplainHint[] = "see why with: capsule policy explain CAPSULE --site SITE.json";

std::string DenialMessage(const verifier::Decision& d) {
  std::string msg = "denied by the capsule's policy";
  if (!d.denied_files.empty()) {
    const size_t shown = std::min<size_t>(d.denied_files.size(), 5);
    std::vector<std::string> names;
    for (size_t i = 0; i < shown; ++i) names.push_back(capsule::QuotePath(d.denied_files[i]));
    absl::StrAppend(&msg, " for ", d.denied_files.size(), " file(s): ", absl::StrJoin(names, ", "),
                    d.denied_files.size() > shown ? ", ..." : "");
  }
  if (!d.reasons.empty()) absl::StrAppend(&msg, " (", absl::StrJoin(d.reasons, "; "), ")");
  return msg;
}

// ---------------------------------------------------------------------------------------------
// Permit

struct Permit::State {
  std::unique_ptr<OpenCapsule> capsule;
  Want::Kind kind;
  capsule::PathSelection selection;
  verifier::Authorization authorization;
  const capsule::FileEntry* file = nullptr;
  // Where the decision was recorded (null offline), to record a failed release.
  const SiteConfig* site = nullptr;
  std::optional<verifier::SiteFacts> facts;
  const crypto::Identity* identity = nullptr;
  Requester who;
  int64_t not_after = 0;  // kMount
  bool used = false;
};

Permit::Permit(std::unique_ptr<State> state) : state_(std::move(state)) {}
Permit::Permit(Permit&&) noexcept = default;
Permit& Permit::operator=(Permit&&) noexcept = default;
Permit::~Permit() = default;

const verifier::Decision& Permit::decision() const { return state_->authorization.decision; }
const capsule::Manifest& Permit::manifest() const { return state_->capsule->reader_->manifest(); }
const capsule::FileEntry* Permit::file() const { return state_->file; }

absl::Status Permit::Failed(const absl::Status& cause, const std::string& released) {
  if (state_->facts) {
    const std::string reason = std::string(cause.message()).substr(0, 1000);
    const int64_t now = static_cast<int64_t>(::time(nullptr));
    absl::Status recorded =
        released.empty()
            ? verifier::RecordReleaseFailed(*state_->facts, *state_->identity,
                                            state_->authorization, reason, now)
            : verifier::RecordReleaseCutShort(*state_->facts, *state_->identity,
                                              state_->authorization, reason, released, now);
    if (!recorded.ok()) {
      return absl::Status(cause.code(),
                          absl::StrCat(cause.message(), " (and the failure could not be "
                                                        "recorded: ", recorded.message(), ")"));
    }
  }
  return cause;
}

namespace {

// The archive checked as extraction would check it (FORMAT.md "Extraction", including the
// agreement with the index the decision was made over), reading the whole payload, so that
// every chunk authenticates first; nothing is written.
absl::Status CheckWholeArchive(const capsule::CapsuleReader& reader,
                               const capsule::PayloadKey& key,
                               const std::vector<capsule::FileEntry>& entries,
                               const ReleaseOptions& options,
                               const capsule::RandomAccessFile* chunks_from) {
  const capsule::Manifest& m = reader.manifest();
  BUNKER_ASSIGN_OR_RETURN(std::unique_ptr<capsule::PayloadStream> stream,
                          reader.Stream(key, 0, m.payload_size, options.threads, options.progress,
                                        chunks_from));
  CancellableSource source(stream.get(), options.cancelled);
  capsule::ExtractOptions check;
  check.index = &entries;
  check.archive_size = m.archive_size;
  return capsule::CheckArchive(&source, check);
}

// What a stream had given out when it failed; empty when nothing.
std::string WrittenSoFar(const CountingFdSink& sink) {
  return sink.written() > 0 ? absl::StrCat(sink.written(), " bytes were written") : std::string();
}

absl::Status Once(bool* used, Want::Kind have, Want::Kind want) {
  if (have != want) return absl::FailedPreconditionError("the permit is for another release");
  if (*used) return absl::FailedPreconditionError("the permit was used already");
  *used = true;
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<capsule::ExtractStats> Permit::Extract(const Destination& to,
                                                      const ReleaseOptions& options) {
  BUNKER_RETURN_IF_ERROR(Once(&state_->used, state_->kind, Want::Kind::kExtract));
  const OpenCapsule& c = *state_->capsule;
  const capsule::Manifest& m = c.reader_->manifest();
  absl::StatusOr<std::unique_ptr<capsule::PayloadStream>> stream =
      c.reader_->Stream(*c.key_, 0, m.payload_size, options.threads, options.progress);
  if (!stream.ok()) return Failed(stream.status(), "");
  CancellableSource source(stream->get(), options.cancelled);
  capsule::ExtractOptions extract;
  extract.only = state_->selection;
  extract.owner = options.owner;
  // The decision was made over the index: the archive must agree with it.
  extract.index = &c.entries_;
  extract.archive_size = m.archive_size;
  bool in_place = false;
  extract.in_place = &in_place;
  absl::StatusOr<capsule::ExtractStats> stats = capsule::ExtractArchiveAt(
      &source, capsule::ExtractTarget{to.root.get(), to.relative}, extract);
  // A tree already in place was released, whatever failed after it.
  if (!stats.ok()) return Failed(stats.status(), in_place ? "the tree was in place" : "");
  return stats;
}

absl::StatusOr<uint64_t> Permit::WriteArchive(const Destination& to,
                                              const ReleaseOptions& options) {
  BUNKER_RETURN_IF_ERROR(Once(&state_->used, state_->kind, Want::Kind::kArchive));
  const OpenCapsule& c = *state_->capsule;
  const capsule::Manifest& m = c.reader_->manifest();
  const std::unique_ptr<ChunkSpool> spool =
      ChunkSpool::Create(*c.reader_, 0, m.payload_size, options.spool_dir);
  absl::Status s = CheckWholeArchive(*c.reader_, *c.key_, c.entries_, options,
                                     spool ? spool->recording() : nullptr);
  if (!s.ok()) return Failed(s, "");
  if (spool) spool->FirstPassSucceeded();
  absl::StatusOr<std::unique_ptr<NewFileBeneath>> out =
      NewFileBeneath::Create(to, 0600, options.owner);
  if (!out.ok()) return Failed(out.status(), "");
  ReleaseOptions quiet = options;
  quiet.progress = nullptr;
  s = CopyPayload(c.reader_.get(), *c.key_, 0, m.archive_size, m.payload_size, out->get(),
                  quiet, spool ? spool->replay() : nullptr);
  if (s.ok()) s = (*out)->Commit();
  // A file already named was released, whatever failed after it.
  if (!s.ok()) return Failed(s, (*out)->named() ? "the archive was in place" : "");
  return m.archive_size;
}

absl::StatusOr<uint64_t> Permit::StreamArchive(int fd, const ReleaseOptions& options) {
  BUNKER_RETURN_IF_ERROR(Once(&state_->used, state_->kind, Want::Kind::kArchive));
  const OpenCapsule& c = *state_->capsule;
  const capsule::Manifest& m = c.reader_->manifest();
  // The first pass authenticates every chunk and checks the archive as extraction would (and
  // discards the plaintext), so that a corrupt or disagreeing capsule releases nothing; the
  // second writes. A file changed between the passes fails at its first changed chunk, after
  // the bytes before it (all authentic) were written. From a remote capsule the first pass
  // keeps the chunks in a local spool for the second (site/chunk_spool.h).
  const std::unique_ptr<ChunkSpool> spool =
      ChunkSpool::Create(*c.reader_, 0, m.payload_size, options.spool_dir);
  absl::Status s = RemoteNeedsSpool(*c.reader_, spool.get(), m.payload_size, options.spool_dir);
  if (s.ok()) {
    s = CheckWholeArchive(*c.reader_, *c.key_, c.entries_, options,
                          spool ? spool->recording() : nullptr);
  }
  if (!s.ok()) return Failed(s, "");
  if (spool) spool->FirstPassSucceeded();
  CountingFdSink sink(fd, options.cancelled);
  ReleaseOptions quiet = options;
  quiet.progress = nullptr;
  s = CopyPayload(c.reader_.get(), *c.key_, 0, m.archive_size, m.archive_size, &sink, quiet,
                  spool ? spool->replay() : nullptr);
  if (s.ok()) s = sink.Flush();
  if (!s.ok()) return Failed(s, WrittenSoFar(sink));
  return m.archive_size;
}

absl::StatusOr<uint64_t> Permit::StreamFile(int fd, const ReleaseOptions& options) {
  BUNKER_RETURN_IF_ERROR(Once(&state_->used, state_->kind, Want::Kind::kFile));
  const OpenCapsule& c = *state_->capsule;
  const capsule::Manifest& m = c.reader_->manifest();
  const capsule::FileEntry& f = *state_->file;
  if (f.offset > m.archive_size || f.size > m.archive_size - f.offset) {
    return Failed(absl::DataLossError("file index entry points outside the archive"), "");
  }
  CountingFdSink sink(fd, options.cancelled);
  absl::Status s = StreamAuthenticatedFile(c.reader_.get(), *c.key_, f, &sink, options);
  if (s.ok()) s = sink.Flush();
  if (!s.ok()) return Failed(s, WrittenSoFar(sink));
  return f.size;
}

absl::StatusOr<std::unique_ptr<MountedCapsule>> Permit::Mount(const MountOptions& options) {
  BUNKER_RETURN_IF_ERROR(Once(&state_->used, state_->kind, Want::Kind::kMount));
  absl::StatusOr<std::unique_ptr<MountedCapsule>> mounted = MountedCapsule::Create(
      std::move(state_->capsule), state_->authorization.files, state_->not_after,
      state_->authorization.record, state_->facts, state_->identity, options);
  if (!mounted.ok()) return Failed(mounted.status(), "");
  return mounted;
}

namespace {

// When the permit stops holding by the clock alone: the earliest notAfter of the permit rules
// it used, or notBefore of a forbid rule that starts later. Conservative (a file another rule
// would still permit is closed too), so that the mount never outlives its decision.
int64_t PermitClosesAt(const capsule::Manifest& m, const verifier::Decision& d, int64_t now) {
  int64_t closes = MountedCapsule::kNever;
  if (m.policy.empty()) return closes;  // no policy: its recipients may open it, for good
  absl::StatusOr<verifier::Policy> policy = verifier::ParsePolicy(m.policy);
  if (!policy.ok()) return now;  // cannot happen for a permit; close at once if it does
  const std::set<std::string> used(d.rules.begin(), d.rules.end());
  for (const verifier::Rule& r : policy->rules) {
    if (r.effect == verifier::Rule::Effect::kPermit && used.count(r.id) && r.not_after) {
      closes = std::min(closes, *r.not_after);
    }
    if (r.effect == verifier::Rule::Effect::kForbid && r.not_before && *r.not_before > now) {
      closes = std::min(closes, *r.not_before);
    }
  }
  return closes;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Gate

// Files (non-directories) of the index that `selection` keeps (all when empty).
std::vector<std::string> Gate::SelectedFiles(const OpenCapsule& c,
                                       const capsule::PathSelection& selection) {
  std::vector<std::string> files;
  for (const capsule::FileEntry& e : c.entries_) {
    if (e.type == capsule::FileEntry::Type::kDirectory) continue;
    if (selection.empty() || selection.Selects(e.path)) files.push_back(e.path);
  }
  return files;
}

// Files (non-directories) of the index at one of `paths` (normalized) or below one, in index
// order: what PathSelection of the escaped `paths` selects (a literal glob matches a path and
// everything below it), without matching a glob against every entry.
std::vector<std::string> Gate::FilesAtOrBelow(const OpenCapsule& c,
                                              const std::vector<std::string>& paths) {
  std::vector<std::string> files;
  for (const capsule::FileEntry& e : c.entries_) {
    if (e.type == capsule::FileEntry::Type::kDirectory) continue;
    for (const std::string& p : paths) {
      if (e.path.size() >= p.size() && e.path.compare(0, p.size(), p) == 0 &&
          (e.path.size() == p.size() || e.path[p.size()] == '/')) {
        files.push_back(e.path);
        break;
      }
    }
  }
  return files;
}

// The last entry for `path` (as in tar, a later entry replaces an earlier one), or null.
const capsule::FileEntry* Gate::FindEntry(const OpenCapsule& c, const std::string& path) {
  const capsule::FileEntry* found = nullptr;
  for (const capsule::FileEntry& e : c.entries_) {
    if (e.path == path) found = &e;
  }
  return found;
}


Gate::Gate(const SiteConfig& site, const crypto::Identity& identity,
           std::vector<crypto::PublicIdentity> trusted)
    : site_(&site), facts_(site.Facts()), identity_(&identity), trusted_(std::move(trusted)) {
  // What this gate's decisions signed: a state folder put back under it is caught.
  facts_->mark = std::make_shared<verifier::CheckpointMark>();
}

Gate::Gate(const crypto::Identity& identity, std::vector<crypto::PublicIdentity> trusted)
    : identity_(&identity), trusted_(std::move(trusted)) {}

absl::StatusOr<std::unique_ptr<OpenCapsule>> Gate::Open(
    std::unique_ptr<capsule::RandomAccessFile> file, const std::string& name, int threads) const {
  std::unique_ptr<OpenCapsule> c(new OpenCapsule());
  c->name_ = name;
  absl::StatusOr<std::unique_ptr<capsule::CapsuleReader>> reader =
      capsule::CapsuleReader::Open(std::move(file), trusted_);
  if (!reader.ok()) {
    return absl::Status(reader.status().code(),
                        absl::StrCat(name, ": ", reader.status().message()));
  }
  c->reader_ = std::move(*reader);
  absl::StatusOr<std::unique_ptr<capsule::PayloadKey>> key = c->reader_->Unlock(*identity_);
  if (!key.ok()) return key.status();
  c->key_ = std::move(*key);
  // The index, once: names only, no file content is decrypted.
  const capsule::Manifest& m = c->reader_->manifest();
  absl::StatusOr<std::unique_ptr<capsule::PayloadStream>> stream =
      c->reader_->Stream(*c->key_, m.archive_size, m.payload_size, threads);
  if (!stream.ok()) return stream.status();
  capsule::IndexReader index(stream->get(), m.index_entries);
  // Room for the records up front, so that an index of tens of thousands of files is not
  // copied as the vector grows: as many as the manifest declares, but no more than the index
  // can hold (a record takes at least 28 bytes) and never more than kReservedEntries, so that
  // a signed but false count reserves nothing large before any record is read.
  constexpr uint64_t kReservedEntries = 1 << 16;
  c->entries_.reserve(static_cast<size_t>(
      std::min({m.index_entries, m.index_size / 28, kReservedEntries})));
  while (true) {
    absl::StatusOr<std::optional<capsule::FileEntry>> e = index.Next();
    if (!e.ok()) return e.status();
    if (!e->has_value()) break;
    c->entries_.push_back(std::move(**e));
  }
  return c;
}

absl::StatusOr<verifier::Authorization> Gate::Authorize(const OpenCapsule& c, const Requester& who,
                                                        const capsule::PathSelection& selection,
                                                        std::vector<std::string> patterns,
                                                        int64_t now, bool dry_run) const {
  return AuthorizeList(c, who, SelectedFiles(c, selection), std::move(patterns), now, dry_run);
}

absl::StatusOr<verifier::Authorization> Gate::AuthorizeList(const OpenCapsule& c,
                                                            const Requester& who,
                                                            std::vector<std::string> files,
                                                            std::vector<std::string> patterns,
                                                            int64_t now, bool dry_run) const {
  verifier::OpenRequest request;
  request.site = facts_ ? &*facts_ : nullptr;
  request.site_identity = identity_;
  request.requester = who.key;
  request.purpose = who.purpose;
  if (who.uid) request.client = verifier::LocalClient{*who.uid, who.pid};
  request.only_patterns = std::move(patterns);
  request.now = now;
  request.dry_run = dry_run;
  return verifier::AuthorizeFiles(c.reader_->manifest(), std::move(files), request);
}

namespace {

// kNotFound, before anything is decided, for an --only pattern that selects nothing in the
// capsule (a typo would otherwise release an empty tree and spend a use on it).
absl::Status EachGlobSelects(const std::vector<capsule::FileEntry>& entries,
                             const capsule::PathSelection& selection) {
  for (const capsule::PathGlob& g : selection.globs()) {
    bool found = false;
    for (const capsule::FileEntry& e : entries) {
      if (g.MatchesPathOrAncestor(e.path)) {
        found = true;
        break;
      }
    }
    if (!found) {
      return WithHint(absl::NotFoundError(absl::StrCat("--only ", capsule::QuotePath(g.pattern()),
                                                       " matches nothing in the capsule")),
                      "list the files with: capsule ls");
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Permit> Gate::Decide(std::unique_ptr<OpenCapsule> c, const Requester& who,
                                    const Want& want, int64_t now) const {
  auto state = std::make_unique<Permit::State>();
  state->kind = want.kind;
  std::vector<std::string> patterns;
  switch (want.kind) {
    case Want::Kind::kExtract:
      patterns = want.only;
      break;
    case Want::Kind::kArchive:
      break;
    case Want::Kind::kMount: {
      // Like ls: the files the policy does not permit are left out (names too), and the
      // recorded decision is over exactly the files that will be served.
      BUNKER_ASSIGN_OR_RETURN(state->selection, capsule::PathSelection::Parse(want.only));
      BUNKER_RETURN_IF_ERROR(EachGlobSelects(c->entries_, state->selection));
      std::vector<std::string> files = SelectedFiles(*c, state->selection);
      BUNKER_ASSIGN_OR_RETURN(verifier::Authorization dry,
                              AuthorizeList(*c, who, files, want.only, now, /*dry_run=*/true));
      if (!dry.decision.permit && !dry.decision.denied_files.empty()) {
        const std::set<std::string> denied(dry.decision.denied_files.begin(),
                                           dry.decision.denied_files.end());
        std::vector<std::string> permitted;
        for (std::string& f : files) {
          if (denied.count(f) == 0) permitted.push_back(std::move(f));
        }
        // Nothing permitted: decide (and record the deny) over the whole selection.
        if (!permitted.empty()) files = std::move(permitted);
      }
      BUNKER_ASSIGN_OR_RETURN(state->authorization,
                              AuthorizeList(*c, who, std::move(files), want.only, now, false));
      if (!state->authorization.decision.permit) {
        return absl::PermissionDeniedError(DenialMessage(state->authorization.decision));
      }
      state->not_after = PermitClosesAt(c->reader_->manifest(), state->authorization.decision, now);
      state->capsule = std::move(c);
      state->site = site_;
      state->facts = facts_;
      state->identity = identity_;
      state->who = who;
      return Permit(std::move(state));
    }
    case Want::Kind::kFile: {
      // Follow hard links, so that the decision covers every path whose content is served.
      BUNKER_ASSIGN_OR_RETURN(std::string path, capsule::NormalizeEntryPath(want.path));
      const capsule::FileEntry* entry = FindEntry(*c, path);
      if (entry == nullptr) {
        return WithHint(absl::NotFoundError(
                            absl::StrCat(capsule::QuotePath(path), " is not in the capsule")),
                        "list the files with: capsule ls");
      }
      patterns.push_back(path);
      for (int hops = 0; entry->type == capsule::FileEntry::Type::kHardlink; ++hops) {
        if (hops == 8) return absl::DataLossError("hard link chain too long");
        patterns.push_back(entry->link_target);
        entry = FindEntry(*c, entry->link_target);
        if (entry == nullptr) return absl::DataLossError("hard link to a missing file");
      }
      if (entry->type != capsule::FileEntry::Type::kFile) {
        return absl::InvalidArgumentError(absl::StrCat(
            capsule::QuotePath(path), " is a ", capsule::TypeName(entry->type),
            entry->link_target.empty()
                ? ""
                : absl::StrCat(" to ", capsule::QuotePath(entry->link_target)),
            ", not a file"));
      }
      state->file = entry;
      break;
    }
  }
  std::vector<std::string> exact = patterns;
  if (want.kind == Want::Kind::kFile) {
    for (std::string& p : exact) p = capsule::EscapeGlob(p);
  }
  BUNKER_ASSIGN_OR_RETURN(state->selection, capsule::PathSelection::Parse(exact));
  if (want.kind == Want::Kind::kExtract) {
    BUNKER_RETURN_IF_ERROR(EachGlobSelects(c->entries_, state->selection));
  }
  if (want.kind == Want::Kind::kFile) {
    // The same files the escaped globs select, found by comparing strings.
    BUNKER_ASSIGN_OR_RETURN(state->authorization,
                            AuthorizeList(*c, who, FilesAtOrBelow(*c, patterns), patterns, now,
                                          false));
  } else {
    BUNKER_ASSIGN_OR_RETURN(state->authorization,
                            Authorize(*c, who, state->selection, patterns, now, false));
  }
  if (!state->authorization.decision.permit) {
    return WithHint(absl::PermissionDeniedError(DenialMessage(state->authorization.decision)),
                    kExplainHint);
  }
  state->capsule = std::move(c);
  state->site = site_;
  state->facts = facts_;
  state->identity = identity_;
  state->who = who;
  return Permit(std::move(state));
}

absl::StatusOr<Explanation> Gate::Explain(const OpenCapsule& c, const Requester& who,
                                          const std::vector<std::string>& only,
                                          int64_t now) const {
  BUNKER_ASSIGN_OR_RETURN(capsule::PathSelection selection, capsule::PathSelection::Parse(only));
  BUNKER_ASSIGN_OR_RETURN(verifier::Authorization auth,
                          Authorize(c, who, selection, only, now, /*dry_run=*/true));
  Explanation out;
  out.files = auth.files.size();
  out.decision = std::move(auth.decision);
  return out;
}

absl::StatusOr<std::vector<capsule::FileEntry>> Gate::List(const OpenCapsule& c,
                                                           const Requester& who,
                                                           int64_t now) const {
  BUNKER_ASSIGN_OR_RETURN(verifier::Authorization auth,
                          Authorize(c, who, capsule::PathSelection(), {}, now, true));
  const std::set<std::string> denied(auth.decision.denied_files.begin(),
                                     auth.decision.denied_files.end());
  // A deny that names no files (invalid policy, offline with site conditions, ...) denies all.
  if (!auth.decision.permit && (denied.empty() || denied.size() == auth.files.size())) {
    return WithHint(absl::PermissionDeniedError(DenialMessage(auth.decision)),
                    kExplainHint);
  }
  // A directory is listed only when a permitted file lies below it, so that the names of
  // wholly forbidden trees stay hidden too. Those directories are the proper ancestors of the
  // permitted files, collected in one pass (linear in the index, no sort): a file's ancestors
  // are added from the nearest up, stopping at the first one already known (its own ancestors
  // are then known too). The views point into auth.files, which outlives the set.
  std::unordered_set<std::string_view> dirs_with_permitted;
  for (const std::string& f : auth.files) {
    if (!denied.empty() && denied.count(f) != 0) continue;
    std::string_view dir = f;
    for (size_t slash = dir.rfind('/'); slash != std::string_view::npos; slash = dir.rfind('/')) {
      dir = dir.substr(0, slash);
      if (!dirs_with_permitted.insert(dir).second) break;
    }
  }
  std::vector<capsule::FileEntry> out;
  out.reserve(c.entries_.size());
  for (const capsule::FileEntry& f : c.entries_) {
    if (!denied.empty() && denied.count(f.path) > 0) continue;
    if (f.type == capsule::FileEntry::Type::kDirectory &&
        dirs_with_permitted.count(std::string_view(f.path)) == 0) {
      continue;
    }
    out.push_back(f);
  }
  return out;
}

}  // namespace bunker::site
