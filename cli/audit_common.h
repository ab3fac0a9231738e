// The pieces `capsule audit`'s subcommands share (cli/cmd_audit*.cc): checkpoint files, the
// site key, time flags and the JSON and text shapes of checkpoints and proof paths.
#ifndef BUNKER_CLI_AUDIT_COMMON_H_
#define BUNKER_CLI_AUDIT_COMMON_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "capsule/json_writer.h"
#include "cli/context.h"
#include "crypto/keys.h"
#include "crypto/sha256.h"
#include "verifier/audit_log.h"

namespace bunker::cli::audit {

using verifier::Checkpoint;

std::string Hex(absl::Span<const uint8_t> bytes);

// The checkpoint in the file at `path`, named by `flag` (without "--") in errors.
absl::StatusOr<Checkpoint> LoadCheckpointFile(const std::string& flag, const std::string& path);

// The public key named by --key.
absl::StatusOr<crypto::PublicIdentity> LoadSiteKey(const Context& ctx);

// `text` as an RFC 3339 time, in seconds.
absl::StatusOr<int64_t> ParseTimeFlag(const std::string& flag, const std::string& text);

// A checkpoint as the next value of `w` (spec/AUDIT.md "Proofs").
void WriteCheckpointJson(capsule::JsonWriter* w, const Checkpoint& c);

// A proof's path as the next value of `w`: an array of hex hashes.
void WritePathJson(capsule::JsonWriter* w, const std::vector<crypto::Sha256Digest>& path);

void PrintPath(const std::vector<crypto::Sha256Digest>& path);

// A checkpoint's six lines on stdout, terminal-safe: its site name came from the log's files,
// and a parser is not the only thing that should stand between it and the auditor's terminal.
void PrintCheckpoint(const Checkpoint& c);

// The checkpoint to prove against: --checkpoint FILE, or the log's latest.
absl::StatusOr<Checkpoint> TargetCheckpoint(const Context& ctx, const std::string& log);

// Warns on stderr when the log at `log_path`, of which `entries` were read, has entries past
// its latest checkpoint: they were listed, but nothing vouches for them (an interrupted append,
// or entries added without the site's key). For the commands that only read (show, export).
void WarnIfUnsigned(const std::string& log_path, uint64_t entries);

// The subcommands, each in its own cli/cmd_audit_NAME.cc.
int RunShow(int argc, char** argv);
int RunVerifyLog(int argc, char** argv);
int RunProve(int argc, char** argv);
int RunConsistency(int argc, char** argv);
int RunExport(int argc, char** argv);
int RunReport(int argc, char** argv);

}  // namespace bunker::cli::audit

#endif  // BUNKER_CLI_AUDIT_COMMON_H_
