// The site verifier: decides whether a capsule may be opened for a request, and records every
// decision in the site's audit log before anything is released (spec/POLICY.md "Opening under a
// policy").
//
// Order: the caller has checked the signature and trust (CapsuleReader::Open) and unwrapped the
// data key (CapsuleReader::Unlock). Authorize then reads the file index (paths only: no file
// content is decrypted), evaluates the policy over the requested files, and with a site appends
// the decision to the audit log and, on a permit that uses a maxOpens rule, counts the release
// (write-ahead through the site's state database: verifier/state_binding.h). Only a permit
// returned from here lets the caller decrypt contents.
#ifndef BUNKER_VERIFIER_VERIFIER_H_
#define BUNKER_VERIFIER_VERIFIER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "capsule/glob.h"
#include "capsule/reader.h"
#include "crypto/keys.h"
#include "verifier/audit_log.h"
#include "verifier/policy.h"
#include "verifier/state_binding.h"

namespace bunker::verifier {

// What a decision needs to know about the site it is made at (site/site_config.h loads it).
struct SiteFacts {
  std::string site;                  // the site's name
  std::string region;                // "" when the site names none
  std::vector<std::string> storage;  // storage classes
  std::string state;                 // folder of the audit log and the state database
  // The newest checkpoint of `state` that this process signed or saw, shared by every copy of
  // these facts (verifier/state_binding.h CheckpointMark); null in a one-shot command.
  std::shared_ptr<CheckpointMark> mark;
};

// Who asked, when the request came over the site's Unix socket (SO_PEERCRED).
struct LocalClient {
  uint32_t uid = 0;
  std::optional<int32_t> pid;
};

struct OpenRequest {
  // The site, with its private identity (signs audit checkpoints). Null: offline mode, which
  // denies any policy with conditions that need a site and writes no audit record.
  const SiteFacts* site = nullptr;
  const crypto::Identity* site_identity = nullptr;
  std::optional<crypto::PublicIdentity> requester;  // --as
  std::optional<std::string> purpose;               // --purpose
  capsule::PathSelection only;                      // --only; empty: the whole capsule
  std::vector<std::string> only_patterns;           // as typed, for the audit record
  int64_t now = 0;
  // Evaluate and explain only: no audit record, no count (`capsule policy explain`).
  bool dry_run = false;
  // The local client, recorded in the audit entry; nullopt for a command-line open.
  std::optional<LocalClient> client;
};

struct Authorization {
  Decision decision;
  std::vector<std::string> files;        // the requested files (index paths)
  std::optional<Checkpoint> checkpoint;  // the audit checkpoint that covers the decision
  // With a site: the entry that was logged, and whether this permit counted a maxOpens use
  // (what RecordReleaseFailed gives back).
  std::optional<AuditRecord> record;
  bool counted_use = false;
};

// Returns the decision (a deny is a value, not an error). An error means no decision could be
// made or recorded; the caller must then release nothing. kDataLoss if the audit log is
// inconsistent with the checkpoint the site last signed (rollback), or the state database does
// not match the log (verifier/state_binding.h): the site refuses to decide until an operator
// has looked. The use count a maxOpens rule sees is the one the log records.
absl::StatusOr<Authorization> Authorize(const capsule::CapsuleReader& reader,
                                        const capsule::PayloadKey& key,
                                        const OpenRequest& request, int threads);

// The same for a caller that has read the file index already: `files` are the requested files
// (index paths of non-directories that the request's selection keeps). `request.only` is not
// consulted.
absl::StatusOr<Authorization> AuthorizeFiles(const capsule::Manifest& manifest,
                                             std::vector<std::string> files,
                                             const OpenRequest& request);

// Appends an event that is not an open decision (e.g. a capsule received, refused or sent by
// the transfer daemon) to the site's audit log, checked and kept in step with the state
// database exactly as Authorize does.
absl::Status RecordSiteEvent(const SiteFacts& site, const crypto::Identity& identity,
                             const AuditRecord& record);

// The same for several events, in order, with the state opened (locked, checked against the
// log) once for all of them rather than once each. Stops at the first error: the records
// before it are on record, the rest are not.
absl::Status RecordSiteEvents(const SiteFacts& site, const crypto::Identity& identity,
                              const std::vector<AuditRecord>& records, int64_t now);

// Records that the release `permit` allowed failed before anything was released (a corrupt
// chunk, a full disk): appends a "release-failed" entry, decision "failed", with the permit's
// capsule, issuer, requester, purpose, paths and local client, `reason`, and uses = -1 when the
// permit counted a use, which gives that use back (spec/POLICY.md "Use counting"). Call it at
// most once per permit, and only when NOTHING was released: a partial release spent the use.
// kInvalidArgument unless `permit` is a permit that Authorize recorded at `site`;
// kFailedPrecondition if the use was already given back; errors as Authorize's otherwise.
absl::Status RecordReleaseFailed(const SiteFacts& site, const crypto::Identity& identity,
                                 const Authorization& permit, std::string reason, int64_t now);

// Records that the release `permit` allowed failed AFTER part of it was released (a stream cut
// short by a hang-up, a full pipe or a changed store object; a tree or archive in place when a
// later step failed): a "release-failed" entry like RecordReleaseFailed's, but uses = 0 (the use
// stays spent) and the second reason says what had left, `released` (e.g. "4096 bytes were
// written"). Without it, such a release would be on record only as its permit. Same errors.
absl::Status RecordReleaseCutShort(const SiteFacts& site, const crypto::Identity& identity,
                                   const Authorization& permit, std::string reason,
                                   const std::string& released, int64_t now);

}  // namespace bunker::verifier

#endif  // BUNKER_VERIFIER_VERIFIER_H_
