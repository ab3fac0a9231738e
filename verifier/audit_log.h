// The tamper-evident audit log (spec/AUDIT.md; entries: spec/audit.capnp).
//
// A site's state folder holds:
//   audit.log          entries, each u32 big-endian length || canonical AuditEntry, append-only
//   audit.checkpoints  one signed checkpoint per append, in order, append-only
// The leaves of an RFC 9162 Merkle tree (crypto/merkle.h) are the entries' bytes. After each
// append the site signs a checkpoint (site, size, root, time) with its identity's Ed25519 key.
// Because every size has a signed checkpoint, a verifier can name the first entry that no longer
// matches: flipped, deleted, inserted, reordered or forged entries and truncation all show up as
// the first checkpoint whose root the log no longer reproduces.
#ifndef BUNKER_VERIFIER_AUDIT_LOG_H_
#define BUNKER_VERIFIER_AUDIT_LOG_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "capsule/json_writer.h"
#include "crypto/keys.h"
#include "crypto/sha256.h"

namespace bunker::verifier {

// The largest encoded entry (spec/AUDIT.md "Entries"): Append refuses a larger record
// (kInvalidArgument) and readers reject one (kDataLoss).
inline constexpr size_t kMaxAuditEntrySize = 65536;

// One decision, as logged. Mirrors spec/audit.capnp AuditEntry. Text fields are byte strings:
// they may hold anything a requester typed, so printers must escape them.
struct AuditRecord {
  int64_t time = 0;
  std::string event = "open";  // "open" | "release-failed" | a transfer event
  std::string decision;        // "permit" | "deny" | "failed"
  std::string capsule_id;
  std::string issuer;
  std::string site;
  std::string requester;
  std::string purpose;
  std::vector<std::string> paths;
  std::vector<std::string> rules;
  std::vector<std::string> reasons;
  // The change this entry makes to the use count of (issuer, capsule_id): +1 for a permit that
  // counts a maxOpens use, -1 for the refund of a release that failed, 0 otherwise
  // (spec/POLICY.md "Use counting").
  int8_t uses = 0;
  // The local client that asked, when the request came over the site's Unix socket (its
  // SO_PEERCRED); nullopt otherwise. Encoded as -1 (spec/AUDIT.md "Entries").
  std::optional<uint32_t> uid;
  std::optional<int32_t> pid;
};

// Canonical Cap'n Proto bytes of an entry, and strict decoding (kDataLoss unless re-encoding
// the decoded record gives the same bytes, or localUid/localPid is neither -1 nor a uid/pid).
// Empty texts and lists are null pointers; fields at their default are absent.
std::vector<uint8_t> EncodeAuditEntry(const AuditRecord& record);
absl::StatusOr<AuditRecord> DecodeAuditEntry(absl::Span<const uint8_t> bytes);

// A signed tree head. Text form (spec/AUDIT.md "Checkpoints"), one per line:
//   bunker audit checkpoint v1
//   site <name>
//   size <decimal>
//   root <64 hex>
//   time <decimal seconds>
//   sig <128 hex: Ed25519 over every byte of the lines above, newlines included>
struct Checkpoint {
  std::string site;
  uint64_t size = 0;
  crypto::Sha256Digest root{};
  int64_t time = 0;
  crypto::Ed25519Signature signature{};

  // The signed part (the first five lines).
  std::string SignedText() const;
  // All six lines.
  std::string Encode() const;
  // kInvalidArgument for malformed text (not checking the signature). Strict: exactly the six
  // lines Encode() writes, so Parse(x).Encode() == x.
  static absl::StatusOr<Checkpoint> Parse(std::string_view text);
  // kDataLoss unless the signature verifies under `key` (its Ed25519 half).
  absl::Status Verify(const crypto::PublicIdentity& key) const;
};

// Whether `name` can name a site in its checkpoints (spec/AUDIT.md "Checkpoints"): 1 to 256
// bytes of valid UTF-8 without C0 or C1 controls, DEL, or bidi and zero-width characters
// (capsule::IsPlainText), because auditors' terminals and pages show it.
bool IsValidSiteName(std::string_view name);

// The writer side, used by the verifier. Not thread-safe; across processes, Append holds an
// exclusive lock (flock) on the log, so concurrent opens serialize their records.
class AuditLog {
 public:
  // Opens (creating if absent) the log in `state_dir`. Before anything is appended, checks the
  // log against its own latest checkpoint and against `last_signed` (the checkpoint this site
  // last signed, kept by the caller elsewhere, or nullopt): the log must reproduce that root at
  // that size and not be shorter. kDataLoss "audit log ... rolled back / tampered" otherwise;
  // kFailedPrecondition if the checkpoints name another site.
  // `signer` must be non-null and outlive the AuditLog; every checkpoint must verify under it.
  // Crash recovery: an append interrupted before its checkpoint was durable leaves at most one
  // entry (perhaps partial) past the latest checkpoint and perhaps a partial checkpoint; that
  // tail was never acknowledged. With UnsignedTail::kCut, Open and Append cut it off
  // (spec/AUDIT.md "Crash recovery"); with kRefuse, such a tail is kDataLoss, because the
  // caller knows that no append was under way (the site's state database holds no pending
  // entry: cutting would erase a decision that was made). Any larger unsigned tail is kDataLoss.
  // Open reads the whole log: O(entries).
  enum class UnsignedTail { kCut, kRefuse };
  static absl::StatusOr<std::unique_ptr<AuditLog>> Open(
      const std::string& state_dir, const crypto::Identity* signer, std::string site,
      const std::optional<Checkpoint>& last_signed, UnsignedTail tail = UnsignedTail::kCut);

  // Appends `record`, fsyncs, then appends and fsyncs a new signed checkpoint. Returns it. On
  // any failure the record must be treated as not written (the caller denies).
  // kInvalidArgument if the encoded record exceeds kMaxAuditEntrySize.
  absl::StatusOr<Checkpoint> Append(const AuditRecord& record, int64_t now);

  // Entries in the log as of the last Open or Append (other processes may have added more).
  uint64_t size() const;
  // The latest checkpoint as of the last Open or Append (nullopt for an empty log).
  const std::optional<Checkpoint>& latest() const;

  ~AuditLog();

 private:
  AuditLog() = default;
  struct State;
  std::unique_ptr<State> state_;
};

// The reader side, for auditors: needs no private key.
struct AuditVerifyResult {
  uint64_t entries = 0;
  uint64_t checkpoints = 0;  // signed checkpoints verified
  Checkpoint checkpoint;  // the latest, verified; for an empty log (no checkpoint yet) a
                          // default one with root SHA-256("") and no signature
};

// `<log_path minus .log>.checkpoints`: where a log's checkpoints live.
std::string AuditCheckpointsPath(const std::string& log_path);

// The last checkpoint in the log's checkpoints file, parsed but NOT verified (call Verify).
// kNotFound when there is none yet; kDataLoss when the file ends in a malformed checkpoint.
absl::StatusOr<Checkpoint> ReadLatestCheckpoint(const std::string& log_path);

// Verifies the log at `log_path` with its checkpoints file beside it (`<log_path minus .log>.
// checkpoints`, i.e. audit.checkpoints): every entry decodes, every checkpoint verifies under
// `site_key` and matches the tree over the entries up to its size, sizes strictly increase,
// the latest covers the whole log. With `trusted`, an auditor's own earlier checkpoint, also
// checks that the log is consistent with it and not shorter (replacement by an older copy).
// kDataLoss naming the first bad entry ("audit log entry 17 does not match the signed checkpoint
// of size 18 ..."); kNotFound when either file is missing. Streams: O(log entries) memory.
// With `every_signature` false, only the latest checkpoint's signature is verified, as the
// writer does when it opens the log (spec/AUDIT.md "Opening"): every earlier root is still
// checked against the tree and is bound to the latest through it, so every entry is vouched
// for, at one signature verification instead of one per checkpoint (the bulk of the time for
// a large log).
absl::StatusOr<AuditVerifyResult> VerifyAuditLog(const std::string& log_path,
                                                 const crypto::PublicIdentity& site_key,
                                                 const std::optional<Checkpoint>& trusted,
                                                 bool every_signature = true);

// All records of a log, in order (kDataLoss for a malformed log). Streams: `fn` is called per
// record and may return false to stop. Checks no checkpoint or signature.
absl::Status ForEachAuditRecord(const std::string& log_path,
                                const std::function<bool(uint64_t, const AuditRecord&)>& fn);

// The first `size` records of the log at `log_path`, for a reader that must show exactly the
// entries a verification vouched for (spec/AUDIT.md "Reading a verified log"): `size` and
// `root` are AuditVerifyResult::entries and its checkpoint's root. The log is opened anew, so
// it may have been replaced (renamed over) or rewritten in place since it was verified: the
// RFC 9162 root over these records' bytes must be `root`, and kDataLoss otherwise (also when
// the log holds fewer than `size` records). `fn` sees each record before that root can be
// known: a caller MUST throw away whatever it made of them unless the call returns OK. Returns
// how many records the log holds now (at least `size`; more when some were appended since; the
// ones past `size` are framed, not decoded). Streams: O(log size) memory.
absl::StatusOr<uint64_t> ForEachVerifiedAuditRecord(
    const std::string& log_path, uint64_t size, const crypto::Sha256Digest& root,
    const std::function<void(uint64_t, const AuditRecord&)>& fn);

// Which records `capsule audit show` lists. Empty strings and nullopt match everything.
struct AuditFilter {
  std::string capsule_id;  // compared case-insensitively
  std::string requester;   // a fingerprint (compared in canonical form) or the exact text
  std::string decision;    // "permit" | "deny"
  std::optional<int64_t> since, until;  // inclusive bounds on AuditRecord::time
  bool Matches(const AuditRecord& record) const;
};

// Export formats (spec/AUDIT.md "Export"), each a line without its line end. JSON: one object
// per record, written by capsule::JsonWriter (camelCase keys; invalid UTF-8 becomes U+FFFD).
// CSV (RFC 4180): lists as JSON arrays in one cell; cells that a spreadsheet would run as a
// formula get a leading apostrophe.
std::string AuditRecordToJson(uint64_t index, const AuditRecord& record);
// The same object written into `w` as its next value, for outputs that nest a record.
void WriteAuditRecordJson(capsule::JsonWriter* w, uint64_t index, const AuditRecord& record);
std::string AuditCsvHeader();
std::string AuditRecordToCsv(uint64_t index, const AuditRecord& record);

// RFC 9162 inclusion proof of entry `index` in the tree of the log's first `size` entries, with
// the entry's leaf hash and that tree's root. kInvalidArgument unless index < size; kDataLoss
// ("truncated or rolled back") if the log holds fewer than `size` entries (a size is a signed
// checkpoint's: the caller checks its signature first).
// Reads the log twice; memory O(size / 1024).
struct InclusionProof {
  uint64_t index = 0, size = 0;
  crypto::Sha256Digest leaf{}, root{};
  std::vector<crypto::Sha256Digest> path;
};
absl::StatusOr<InclusionProof> ProveInclusion(const std::string& log_path, uint64_t index,
                                              uint64_t size);

// RFC 9162 consistency proof between the trees of the first `old_size` and `new_size` entries.
// kInvalidArgument unless old_size <= new_size; kDataLoss if the log holds fewer than new_size.
struct ConsistencyProof {
  uint64_t old_size = 0, new_size = 0;
  crypto::Sha256Digest old_root{}, new_root{};
  std::vector<crypto::Sha256Digest> path;
};
absl::StatusOr<ConsistencyProof> ProveConsistency(const std::string& log_path, uint64_t old_size,
                                                  uint64_t new_size);

}  // namespace bunker::verifier

#endif  // BUNKER_VERIFIER_AUDIT_LOG_H_
