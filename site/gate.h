// The gate: the only code that turns a permit into released bytes (spec/VERIFIER.md "The gate").
//
// A request goes through the gate in this order, and a caller can do nothing else:
//  1. Gate::Open checks the capsule (structure, signature, trusted issuer, chunk table: see
//     capsule/reader.h), unwraps the data key with the site's identity and reads the encrypted
//     file index once. Nothing is decided or released yet.
//  2. Gate::Decide evaluates the policy for what is wanted (a selection to extract, the whole
//     archive, one file) and, at a site, appends the decision to the site's audit log and counts
//     the use (maxOpens) before it returns. A deny is kPermissionDenied with the reasons. A
//     permit is a `Permit`: only the gate can make one, and it owns the reader, the data key and
//     the permitted selection privately.
//  3. The Permit releases exactly what was decided, once: Extract (into a destination, created
//     with no-follow semantics below a directory descriptor, files given to the requester),
//     WriteArchive (an atomic file below a destination), StreamArchive or StreamFile (into a
//     descriptor the requester passed), or Mount (a read-only tree served from memory while the
//     policy's time window lasts: site/mounted_capsule.h). Plaintext leaves only from authenticated chunks; a file
//     streamed to a descriptor is authenticated whole (every chunk, and the index digest) before
//     its first byte is written.
//  4. A release that fails is recorded in the audit log as "release-failed": before any byte
//     left the gate it gives the use back; once a byte has left, the use stays spent and the
//     entry says how much had left.
//
// Explain and List are decisions without a record or a count (policy explain, ls).
// Thread-safety: a Gate may serve many requests at once (each Open is independent; the audit
// log and state database serialize their writers); a Permit is used by one thread.
#ifndef BUNKER_SITE_GATE_H_
#define BUNKER_SITE_GATE_H_

#include <sys/stat.h>
#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "capsule/beneath.h"
#include "capsule/extract.h"
#include "capsule/fd.h"
#include "capsule/file_index.h"
#include "capsule/io.h"
#include "capsule/reader.h"
#include "crypto/keys.h"
#include "site/mounted_capsule.h"
#include "site/site_config.h"
#include "verifier/verifier.h"

namespace bunker::site {

// Who asks. `key` must already be proven by the caller: possession of the private key in
// process, or a signature over the verifier service's fresh challenge.
struct Requester {
  std::optional<crypto::PublicIdentity> key;
  std::optional<std::string> purpose;
  std::optional<uint32_t> uid;  // a local client of the verifier service (peer credentials)
  std::optional<int32_t> pid;
};

// What is wanted.
struct Want {
  enum class Kind {
    kExtract,  // files selected by `only` (all when empty), into a new directory
    kArchive,  // the whole decrypted pax archive
    kFile,     // one file's contents (`path`, hard links followed)
    kMount,    // the permitted files among `only` (all when empty), as a read-only tree
  };
  Kind kind = Kind::kExtract;
  std::vector<std::string> only;  // kExtract, kMount: globs (capsule/glob.h)
  std::string path;               // kFile
};

// A place below one of the site's destinations, resolved once: the destination's directory
// descriptor and the path below it, which every release creates with no-follow semantics.
struct Destination {
  capsule::Fd root;
  std::string relative;  // non-empty
  std::string shown;     // as the requester named it, for messages
};

// The rights of the user a daemon acts for (SO_PEERCRED, SO_PEERGROUPS of its socket).
struct Rights {
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;  // supplementary groups
};

// Whether `rights` allow all of `want` (R_OK | W_OK | X_OK) on the file of `st` (`fd`, any
// descriptor of it), by its mode bits as the kernel checks them: the owner's bits for its
// owner, else the group's for a member of its group, else the others'. uid 0 may do anything.
// A file with an access ACL grants nothing beyond its owner's bits to its owner: the ACL's
// entries are not read, so nothing is allowed that the ACL would deny.
bool MayAccess(int fd, const struct stat& st, const Rights& rights, int want);

// Resolves `path` (absolute, or relative to the current directory) against the site's
// destinations, lexically: no symlink is followed or trusted. kInvalidArgument for "..",
// kPermissionDenied naming it when it lies under no destination (or is one), kNotFound or
// kUnavailable when the destination itself cannot be opened.
//
// `acting_for`: the daemon releases for another user, and does in the destination only what
// that user could do there (spec/VERIFIER.md "Destinations"): the destination's parent must
// exist (nothing is created above the destination), every folder from the site's destination
// down to it must be searchable by the user, and the parent writable; an existing (empty)
// directory at the destination must be the user's. kNotFound, kPermissionDenied otherwise.
// The returned Destination is then the parent's descriptor and the destination's name.
absl::StatusOr<Destination> ResolveDestination(const SiteConfig& site, const std::string& path,
                                               const std::optional<Rights>& acting_for =
                                                   std::nullopt);

// For callers without a site (offline): `path`'s nearest existing ancestor, resolved with
// realpath (the caller's own tree), and the rest below it, created no-follow.
absl::StatusOr<Destination> LocalDestination(const std::string& path);

// OK when nothing is at `to` yet or an empty directory is (what a release accepts), so that a
// request that would fail is refused before it is decided and counted; kAlreadyExists otherwise.
absl::Status CheckDestinationFree(const Destination& to);

// How a release reports and stops.
struct ReleaseOptions {
  std::optional<capsule::FileOwner> owner;       // give created files to this user
  std::function<void(uint64_t done)> progress;   // bytes processed so far; may be empty
  std::function<bool()> cancelled;               // polled per piece; true stops (kCancelled)
  int threads = 0;                               // 0: all cores
  // Where a release from a remote capsule keeps the chunks of its checking pass for its writing
  // pass (site/chunk_spool.h); "": $TMPDIR, else /tmp. A daemon uses its state folder.
  std::string spool_dir;
  // Files up to this size are checked in memory and written from there; larger ones are read
  // twice (site/release_io.h). Bounds the memory of a release; tests lower it.
  uint64_t held_in_memory = kHeldInMemory;
  static constexpr uint64_t kHeldInMemory = uint64_t{8} << 20;
};

// The result of a decision that records nothing.
struct Explanation {
  verifier::Decision decision;
  uint64_t files = 0;  // requested files
};

// A capsule checked and unlocked at the gate (Gate::Open), its index read. Opaque: only the
// gate and its permits read what it holds.
class OpenCapsule {
 public:
  ~OpenCapsule();

 private:
  friend class Gate;
  friend class Permit;
  friend class MountedCapsule;
  friend std::string CapsuleId(const OpenCapsule& capsule);
  OpenCapsule();
  std::unique_ptr<capsule::CapsuleReader> reader_;
  std::unique_ptr<capsule::PayloadKey> key_;
  std::vector<capsule::FileEntry> entries_;
  std::string name_;
};
// Its id (hex), for messages.
std::string CapsuleId(const OpenCapsule& capsule);

// A permitted release. Move-only; made only by Gate::Decide.
class Permit {
 public:
  Permit(Permit&&) noexcept;
  Permit& operator=(Permit&&) noexcept;
  ~Permit();

  const verifier::Decision& decision() const;
  const capsule::Manifest& manifest() const;
  // kFile: the file that will be streamed (after hard links).
  const capsule::FileEntry* file() const;

  // kExtract: a new directory at `to` (which must not exist, or be empty). Atomic.
  absl::StatusOr<capsule::ExtractStats> Extract(const Destination& to,
                                                const ReleaseOptions& options);
  // kArchive: a new file at `to`, 0600 (owned by options.owner). Atomic. Returns its size.
  absl::StatusOr<uint64_t> WriteArchive(const Destination& to, const ReleaseOptions& options);
  // kArchive: the archive into `fd`, after the whole payload authenticated.
  absl::StatusOr<uint64_t> StreamArchive(int fd, const ReleaseOptions& options);
  // kFile: the file into `fd`, after all of its chunks and its index digest authenticated.
  absl::StatusOr<uint64_t> StreamFile(int fd, const ReleaseOptions& options);
  // kMount: the permitted tree, served from memory (site/mounted_capsule.h). The permit (and
  // its use) was recorded by Decide; the caller records the summary when the mount ends.
  absl::StatusOr<std::unique_ptr<MountedCapsule>> Mount(const MountOptions& options);

 private:
  friend class Gate;
  struct State;
  explicit Permit(std::unique_ptr<State> state);
  // Records a failure as "release-failed": with nothing released (`released` empty), gives the
  // use back; otherwise says what had left ("N bytes were written") and the use stays spent.
  absl::Status Failed(const absl::Status& cause, const std::string& released);
  std::unique_ptr<State> state_;
};

class Gate {
 public:
  // At a site: decisions are recorded in its audit log and counted. `site` and `identity` must
  // outlive the gate. `trusted` are the issuers whose capsules open here.
  Gate(const SiteConfig& site, const crypto::Identity& identity,
       std::vector<crypto::PublicIdentity> trusted);
  // Offline: a recipient's own identity; policies with site conditions are denied and nothing
  // is recorded.
  Gate(const crypto::Identity& identity, std::vector<crypto::PublicIdentity> trusted);

  const SiteConfig* site() const { return site_; }

  // Step 1 (see the top of this file). `name` is how errors name the capsule.
  absl::StatusOr<std::unique_ptr<OpenCapsule>> Open(std::unique_ptr<capsule::RandomAccessFile> file,
                                                    const std::string& name, int threads) const;

  // Step 2: decide and record. kPermissionDenied (DenialMessage) for a deny; kNotFound for a
  // kFile path that is not in the capsule, kInvalidArgument for one that is not a file.
  absl::StatusOr<Permit> Decide(std::unique_ptr<OpenCapsule> capsule, const Requester& who,
                                const Want& want, int64_t now) const;

  // A decision over the selection `only`, neither recorded nor counted (policy explain).
  absl::StatusOr<Explanation> Explain(const OpenCapsule& capsule, const Requester& who,
                                      const std::vector<std::string>& only, int64_t now) const;

  // The index entries `who` may open, in index order, directories only when a permitted file
  // lies below them (ls). kPermissionDenied when nothing is permitted. Neither recorded nor
  // counted.
  absl::StatusOr<std::vector<capsule::FileEntry>> List(const OpenCapsule& capsule,
                                                       const Requester& who, int64_t now) const;

 private:
  static std::vector<std::string> SelectedFiles(const OpenCapsule& capsule,
                                                const capsule::PathSelection& selection);
  static std::vector<std::string> FilesAtOrBelow(const OpenCapsule& capsule,
                                                 const std::vector<std::string>& paths);
  static const capsule::FileEntry* FindEntry(const OpenCapsule& capsule, const std::string& path);
  absl::StatusOr<verifier::Authorization> AuthorizeList(const OpenCapsule& capsule,
                                                        const Requester& who,
                                                        std::vector<std::string> files,
                                                        std::vector<std::string> patterns,
                                                        int64_t now, bool dry_run) const;
  absl::StatusOr<verifier::Authorization> Authorize(const OpenCapsule& capsule,
                                                    const Requester& who,
                                                    const capsule::PathSelection& selection,
                                                    std::vector<std::string> patterns,
                                                    int64_t now, bool dry_run) const;
  const SiteConfig* site_ = nullptr;
  std::optional<verifier::SiteFacts> facts_;
  const crypto::Identity* identity_;
  std::vector<crypto::PublicIdentity> trusted_;
};

// One line saying why a request was denied.
std::string DenialMessage(const verifier::Decision& decision);

}  // namespace bunker::site

#endif  // BUNKER_SITE_GATE_H_
