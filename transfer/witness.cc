#include "transfer/witness.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "capsule/fd.h"
#include "capsule/io.h"
#include "crypto/merkle.h"
#include "capsule/utc.h"

namespace bunker::transfer {
namespace {

std::string ShortRoot(const crypto::Sha256Digest& root) {
  return crypto::ToHex(root).substr(0, 16);
}

absl::Status WriteAll(int fd, const std::string& text, const std::string& path) {
  size_t done = 0;
  while (done < text.size()) {
    ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return capsule::ErrnoStatus(absl::StrCat("cannot write ", path), errno);
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

}  // namespace

// --- WitnessStore ----------------------------------------------------------------------------

WitnessStore::WitnessStore(std::string dir, CheckpointVerifier verify)
    : dir_(std::move(dir)), verify_(std::move(verify)) {}

std::string WitnessStore::PathOf(const crypto::PublicIdentity& peer, const char* suffix) const {
  return absl::StrCat(dir_, "/", peer.fingerprint().ToString(), suffix);
}

absl::StatusOr<std::unique_ptr<WitnessStore>> WitnessStore::Open(
    std::string dir, std::vector<crypto::PublicIdentity> peers, CheckpointVerifier verify) {
  if (!verify) return absl::InvalidArgumentError("a witness store needs a checkpoint verifier");
  // The state folder itself may not exist yet on a new site.
  const size_t slash = dir.rfind('/');
  if (slash != std::string::npos && slash > 0) ::mkdir(dir.substr(0, slash).c_str(), 0700);
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return capsule::ErrnoStatus(absl::StrCat("cannot create ", dir), errno);
  }
  std::unique_ptr<WitnessStore> store(new WitnessStore(std::move(dir), std::move(verify)));
  for (const crypto::PublicIdentity& peer : peers) {
    const std::string path = store->PathOf(peer, ".checkpoint");
    absl::StatusOr<std::string> text = capsule::ReadSmallFile(path, kMaxCheckpointText);
    if (absl::IsNotFound(text.status())) continue;
    if (!text.ok()) return text.status();
    absl::StatusOr<CheckpointFacts> facts = store->verify_(*text, peer);
    if (!facts.ok()) {
      return absl::DataLossError(absl::StrCat("witness file ", path, " is not a checkpoint of ",
                                              peer.fingerprint().ToString(), ": ",
                                              facts.status().message()));
    }
    store->held_[peer.fingerprint().ToString()] = *std::move(facts);
  }
  return store;
}

std::optional<CheckpointFacts> WitnessStore::Newest(const crypto::PublicIdentity& peer) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = held_.find(peer.fingerprint().ToString());
  if (it == held_.end()) return std::nullopt;
  return it->second;
}

absl::StatusOr<CheckpointFacts> WitnessStore::Witness(
    const crypto::PublicIdentity& peer, std::string_view text,
    absl::Span<const crypto::Sha256Digest> consistency, std::string_view acknowledged_loss,
    WitnessOutcome* outcome) {
  if (text.size() > kMaxCheckpointText || acknowledged_loss.size() > kMaxCheckpointText) {
    return absl::InvalidArgumentError(
        absl::StrCat("a checkpoint is at most ", kMaxCheckpointText, " bytes"));
  }
  if (consistency.size() > kMaxConsistencyProof) {
    return absl::InvalidArgumentError(
        absl::StrCat("a consistency proof has at most ", kMaxConsistencyProof, " hashes"));
  }
  absl::StatusOr<CheckpointFacts> offered = verify_(text, peer);
  if (!offered.ok()) return offered.status();
  const std::string fp = peer.fingerprint().ToString();

  std::lock_guard<std::mutex> lock(mu_);
  auto it = held_.find(fp);
  const CheckpointFacts* held = it == held_.end() ? nullptr : &it->second;
  WitnessOutcome result;
  if (!acknowledged_loss.empty()) {
    if (held == nullptr || held->text != acknowledged_loss) {
      return absl::FailedPreconditionError(
          "the checkpoint acknowledged as lost is not the one this witness holds");
    }
    // Kept as evidence before it is replaced: appended and synced first.
    const std::string history = PathOf(peer, ".history");
    capsule::Fd fd(::open(history.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600));
    if (!fd.valid()) return capsule::ErrnoStatus(absl::StrCat("cannot open ", history), errno);
    absl::Status s = WriteAll(fd.get(), held->text, history);
    if (s.ok() && ::fsync(fd.get()) != 0) {
      s = capsule::ErrnoStatus("cannot sync " + history, errno);
    }
    fd.Reset();
    if (!s.ok()) return s;
    result = WitnessOutcome::kReset;
  } else if (held == nullptr) {
    result = WitnessOutcome::kFirst;
  } else if (offered->size < held->size) {
    *outcome = WitnessOutcome::kOlder;
    return *held;
  } else if (offered->size == held->size) {
    if (offered->root != held->root) {
      return absl::DataLossError(absl::StrCat(
          "equivocation: ", fp, " signed two different checkpoints of size ", held->size,
          " (roots ", ShortRoot(held->root), "... and ", ShortRoot(offered->root),
          "...); the witness keeps the first"));
    }
    *outcome = WitnessOutcome::kUnchanged;
    return *held;
  } else {
    if (!crypto::VerifyConsistency(held->size, offered->size, held->root, offered->root,
                                   consistency)) {
      return absl::DataLossError(absl::StrCat(
          "the checkpoint of size ", offered->size, " from ", fp,
          " is not a proven extension of the one of size ", held->size,
          " this witness holds (the log was rewritten?); the witness keeps its own"));
    }
    result = WitnessOutcome::kAdvanced;
  }
  absl::StatusOr<std::unique_ptr<capsule::AtomicFileWriter>> w =
      capsule::AtomicFileWriter::Create(PathOf(peer, ".checkpoint"), 0600, /*overwrite=*/true);
  if (!w.ok()) return w.status();
  absl::Status s = (*w)->Append(absl::MakeConstSpan(
      reinterpret_cast<const uint8_t*>(offered->text.data()), offered->text.size()));
  if (s.ok()) s = (*w)->Commit();
  if (!s.ok()) return s;
  held_[fp] = *offered;
  *outcome = result;
  return *offered;
}

// --- WitnessState ----------------------------------------------------------------------------

absl::Status WitnessState::Check() const {
  std::lock_guard<std::mutex> lock(mu_);
  return bad_;
}

void WitnessState::MarkBad(const absl::Status& status) {
  if (status.ok()) return;
  std::lock_guard<std::mutex> lock(mu_);
  if (bad_.ok()) bad_ = status;
}

absl::StatusOr<std::vector<crypto::Sha256Digest>> WitnessState::Compare(
    const std::string& peer, const std::optional<CheckpointFacts>& ours,
    const CheckpointFacts& held, const OwnLog& own) {
  const uint64_t our_size = ours ? ours->size : 0;
  const std::string tail = absl::StrCat(
      " the checkpoint of size ", held.size, " that peer ", peer, " witnessed at ",
      capsule::FormatUtc(held.time),
      "; refusing to serve until an operator acts (spec/VERIFIER.md \"Witnesses\")");
  if (held.size > our_size) {
    return absl::DataLossError(
        absl::StrCat("the site's audit log (size ", our_size, ") is behind", tail));
  }
  if (!ours) return std::vector<crypto::Sha256Digest>{};  // both empty
  absl::StatusOr<ConsistencyFacts> proof = own.prove(held.size, our_size);
  if (!proof.ok()) return proof.status();
  if (proof->old_root != held.root || proof->new_root != ours->root) {
    return absl::DataLossError(
        absl::StrCat("the site's audit log (size ", our_size, ") does not contain", tail));
  }
  return std::move(proof->path);
}

absl::StatusOr<std::vector<crypto::Sha256Digest>> WitnessState::Judge(
    const std::string& peer, const std::optional<CheckpointFacts>& ours,
    const CheckpointFacts& held, const OwnLog& own) {
  absl::StatusOr<std::vector<crypto::Sha256Digest>> verdict = Compare(peer, ours, held, own);
  if (absl::IsDataLoss(verdict.status())) MarkBad(verdict.status());
  return verdict;
}

void WitnessState::MarkRoundDone() {
  std::lock_guard<std::mutex> lock(mu_);
  round_done_ = true;
}

bool WitnessState::FirstRoundDone() const {
  std::lock_guard<std::mutex> lock(mu_);
  return round_done_;
}

}  // namespace bunker::transfer
