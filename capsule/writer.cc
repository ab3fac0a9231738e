#include "capsule/writer.h"

#include <algorithm>
#include <new>
#include <cstring>
#include <set>

#include "absl/strings/str_cat.h"
#include "crypto/secret.h"

namespace bunker::capsule {

CapsuleWriter::CapsuleWriter(WriterOptions options, WritableFile* out)
    : options_(std::move(options)), out_(out) {}

CapsuleWriter::~CapsuleWriter() {
  pipeline_.reset();  // waits for jobs that reference our buffers
  if (table_ != nullptr) std::fclose(table_);
}

absl::StatusOr<std::unique_ptr<CapsuleWriter>> CapsuleWriter::Create(WriterOptions options,
                                                                     WritableFile* out) {
  if (options.issuer == nullptr) return absl::InvalidArgumentError("an issuer key is required");
  if (options.recipients.empty()) {
    return absl::InvalidArgumentError("at least one recipient (--to) is required");
  }
  if (options.recipients.size() > kMaxRecipients) {
    return absl::InvalidArgumentError(absl::StrCat("at most ", kMaxRecipients, " recipients"));
  }
  std::set<std::string> seen;
  for (const auto& r : options.recipients) {
    if (!seen.insert(r.fingerprint().ToString()).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("recipient ", r.fingerprint().ToString(), " is given twice"));
    }
  }
  if (options.chunk_size < kMinChunkSize || options.chunk_size > kMaxChunkSize) {
    return absl::InvalidArgumentError(absl::StrCat("chunk size must be between ", kMinChunkSize,
                                                   " and ", kMaxChunkSize, " bytes"));
  }
  if (options.policy.size() > kMaxPolicySize) {
    return absl::InvalidArgumentError(absl::StrCat("policy exceeds ", kMaxPolicySize, " bytes"));
  }

  std::unique_ptr<CapsuleWriter> w(new CapsuleWriter(std::move(options), out));
  Manifest& m = w->manifest_;
  crypto::RandomBytes(absl::MakeSpan(m.capsule_id));
  m.created_at = w->options_.created_at;
  m.issuer = w->options_.issuer->public_identity();
  m.suite = w->options_.suite;
  m.chunk_size = w->options_.chunk_size;
  m.policy = w->options_.policy;

  const crypto::SecretBytes data_key = crypto::SecretBytes::Random(kDataKeySize);
  absl::StatusOr<PayloadKeys> keys = DerivePayloadKeys(data_key, m);
  if (!keys.ok()) return keys.status();
  w->keys_ = std::move(*keys);
  m.key_commitment = w->keys_.commitment;
  const std::vector<uint8_t> context = WrapContext(m);
  for (const auto& r : w->options_.recipients) {
    absl::StatusOr<crypto::WrappedKey> wrapped = crypto::WrapKey(r.box_key, data_key, context);
    if (!wrapped.ok()) return wrapped.status();
    m.recipients.push_back(RecipientEntry{r.fingerprint(), std::move(*wrapped)});
  }

  w->table_ = std::tmpfile();
  if (w->table_ == nullptr) return absl::UnavailableError("cannot create a temporary file");
  w->pool_ = std::make_unique<ThreadPool>(w->options_.threads);
  w->pipeline_ = std::make_unique<OrderedPipeline<ChunkResult>>(
      w->pool_.get(), WindowFor(w->pool_->size(), size_t{m.chunk_size} + kTagSize));
  w->buffers_ = std::make_unique<BufferPool>(size_t{m.chunk_size} + kTagSize);
  w->current_ = w->buffers_->Get();
  const auto header = EncodeHeader();
  absl::Status s = out->Append(header);
  if (!s.ok()) return s;
  return w;
}

absl::Status CapsuleWriter::WriteInOrder(uint64_t index, absl::Status sealed,
                                         absl::Span<const uint8_t> chunk,
                                         const crypto::Sha256Digest& leaf) {
  std::unique_lock<std::mutex> lock(write_mu_);
  // Jobs start in submission order, so the chunk before this one is already on a worker.
  write_cv_.wait(lock, [&] { return write_turn_ == index; });
  absl::Status s = write_status_.ok() ? std::move(sealed) : write_status_;
  if (s.ok()) s = out_->Append(chunk);
  if (s.ok() && std::fwrite(leaf.data(), 1, leaf.size(), table_) != leaf.size()) {
    s = absl::UnavailableError("cannot write the temporary chunk table");
  }
  if (s.ok()) {
    tree_.AddLeafHash(leaf);
  } else if (write_status_.ok()) {
    write_status_ = s;
  }
  ++write_turn_;
  lock.unlock();
  write_cv_.notify_all();
  return s;
}

absl::Status CapsuleWriter::DrainOne() {
  ChunkResult r = pipeline_->Pop();
  if (!r.status.ok()) return r.status;
  encrypted_ += r.size - kTagSize;
  buffers_->Put(std::move(r.buffer));
  if (options_.progress) options_.progress(encrypted_);
  return absl::OkStatus();
}

absl::Status CapsuleWriter::SubmitChunk(std::vector<uint8_t> buffer, size_t plain_size,
                                        bool last) {
  if (next_index_ >= kMaxChunkCount) {
    return absl::ResourceExhaustedError("payload exceeds the maximum chunk count");
  }
  if (options_.cancelled && options_.cancelled()) {
    return absl::CancelledError("interrupted; nothing was written");
  }
  while (pipeline_->full()) {
    absl::Status s = DrainOne();
    if (!s.ok()) return s;
  }
  const uint64_t index = next_index_++;
  const crypto::Aead* aead = keys_.aead.get();
  const CapsuleId id = manifest_.capsule_id;
  pipeline_->Submit([this, aead, id, index, last, plain_size,
                      buf = std::move(buffer)]() mutable {
    ChunkResult r;
    r.size = plain_size + kTagSize;  // the pool's buffers have room for the tag
    const auto nonce = ChunkNonce(index, last);
    r.status = aead->Seal(nonce, id, absl::MakeConstSpan(buf.data(), plain_size),
                          absl::MakeSpan(buf.data(), r.size));
    crypto::Sha256Digest leaf{};
    if (r.status.ok()) {
      try {
        leaf = crypto::MerkleLeafHash(absl::MakeConstSpan(buf.data(), r.size));
      } catch (const std::bad_alloc&) {
        r.status = absl::ResourceExhaustedError("out of memory");
      }
    }
    // Always take the turn, even after a failure, so that later chunks are not left waiting.
    r.status = WriteInOrder(index, r.status, absl::MakeConstSpan(buf.data(), r.size), leaf);
    r.buffer = std::move(buf);
    return r;
  });
  return absl::OkStatus();
}

absl::Status CapsuleWriter::Append(absl::Span<const uint8_t> data) {
  if (failed_) return absl::FailedPreconditionError("capsule writer already failed");
  const size_t chunk = manifest_.chunk_size;
  while (!data.empty()) {
    if (current_size_ == chunk) {
      // A full chunk is only known not to be the last once more data arrives.
      if (pending_.has_value()) {
        absl::Status s = SubmitChunk(std::move(*pending_), chunk, /*last=*/false);
        pending_.reset();
        if (!s.ok()) {
          failed_ = true;
          return s;
        }
      }
      pending_ = std::move(current_);
      current_ = buffers_->Get();
      current_size_ = 0;
    }
    const size_t take = std::min<size_t>(data.size(), chunk - current_size_);
    std::memcpy(current_.data() + current_size_, data.data(), take);
    current_size_ += take;
    data.remove_prefix(take);
    appended_ += take;
  }
  return absl::OkStatus();
}

absl::StatusOr<Manifest> CapsuleWriter::Finish(uint64_t index_entries) {
  if (failed_) return absl::FailedPreconditionError("capsule writer already failed");
  failed_ = true;  // single use
  absl::Status s;
  const size_t chunk = manifest_.chunk_size;
  if (pending_.has_value()) {
    if (current_size_ == 0) {
      s = SubmitChunk(std::move(*pending_), chunk, /*last=*/true);
    } else {
      s = SubmitChunk(std::move(*pending_), chunk, /*last=*/false);
      if (s.ok()) s = SubmitChunk(std::move(current_), current_size_, /*last=*/true);
    }
  } else {
    // Possibly the empty payload's single empty chunk.
    s = SubmitChunk(std::move(current_), current_size_, /*last=*/true);
  }
  if (!s.ok()) return s;
  while (!pipeline_->empty()) {
    s = DrainOne();
    if (!s.ok()) return s;
  }

  Manifest& m = manifest_;
  m.chunk_count = next_index_;
  m.payload_size = appended_;
  m.archive_size = archive_size_;
  m.index_size = appended_ - archive_size_;
  m.index_entries = index_entries;
  m.merkle_root = tree_.Root();

  // Copy the spooled chunk table after the chunks.
  if (std::fflush(table_) != 0 || std::fseek(table_, 0, SEEK_SET) != 0) {
    return absl::UnavailableError("cannot read back the temporary chunk table");
  }
  std::vector<uint8_t> buf(1 << 16);
  uint64_t copied = 0;
  while (true) {
    const size_t n = std::fread(buf.data(), 1, buf.size(), table_);
    if (n == 0) break;
    s = out_->Append(absl::MakeConstSpan(buf.data(), n));
    if (!s.ok()) return s;
    copied += n;
  }
  if (copied != kLeafHashSize * m.chunk_count) {
    return absl::UnavailableError("temporary chunk table is incomplete");
  }

  absl::StatusOr<std::vector<uint8_t>> manifest_bytes = EncodeManifest(m);
  if (!manifest_bytes.ok()) return manifest_bytes.status();
  const auto header = EncodeHeader();
  const crypto::Ed25519Signature sig =
      options_.issuer->Sign(SignatureInput(header, *manifest_bytes));
  s = out_->Append(*manifest_bytes);
  if (s.ok()) s = out_->Append(sig);
  if (s.ok()) s = out_->Append(EncodeFooter(manifest_bytes->size()));
  if (!s.ok()) return s;
  return m;
}

}  // namespace bunker::capsule
