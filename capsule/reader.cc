#include "capsule/reader.h"

#include <algorithm>
#include <new>

#include "absl/strings/str_cat.h"
#include "crypto/merkle.h"
#include "crypto/secret.h"
#include "crypto/status_hint.h"

namespace bunker::capsule {
namespace {

absl::Status ReadError(const absl::Status& s, const char* what) {
  if (absl::IsOutOfRange(s)) {
    return absl::DataLossError(absl::StrCat("capsule is truncated (", what, ")"));
  }
  return absl::Status(s.code(), absl::StrCat("reading ", what, ": ", s.message()));
}

// A chunk read that ends early: the file's size was checked against the signed manifest when
// it was opened, so it shrank since (a writer racing the reader), which "truncated" would hide.
absl::Status ChunkReadError(const absl::Status& s, uint64_t index) {
  if (absl::IsOutOfRange(s)) {
    return absl::DataLossError(absl::StrCat(
        "capsule file changed while being read (it ends before chunk ", index, " now)"));
  }
  return ReadError(s, "chunk");
}

absl::Status BadChunk(uint64_t index, uint64_t count, absl::string_view why) {
  return absl::DataLossError(
      absl::StrCat("chunk ", index, " of ", count, " is corrupt (", why, ")"));
}

// Workers for a pipeline over `file`: the caller's count, or when it lets us choose (0), one per
// core or the file's own parallelism if higher (an S3 object, whose reads wait on the network).
int ReaderThreads(int requested, const RandomAccessFile& file) {
  if (requested > 0) return requested;
  return std::max(ResolveThreads(0), file.parallelism());
}

// The pipeline's depth: two chunks per worker (WindowFor); for a remote object, whose reads
// are served from read-ahead windows it holds apart from these (capsule/s3_client.h, up to
// 16 MiB), one per worker plus two, which keeps the workers busy without buffering twice what
// the object already holds (peak RSS under 64 MiB, README "Object storage").
size_t PipelineWindow(int workers, const RandomAccessFile& file, size_t buffer_size) {
  const size_t window = WindowFor(workers, buffer_size);
  if (file.parallelism() == 0) return window;
  return std::min(window, std::max<size_t>(2, static_cast<size_t>(workers) + 2));
}

}  // namespace

absl::StatusOr<std::unique_ptr<CapsuleReader>> CapsuleReader::Open(
    std::unique_ptr<RandomAccessFile> file, absl::Span<const crypto::PublicIdentity> trusted) {
  absl::StatusOr<std::unique_ptr<CapsuleReader>> r = OpenUntrusted(std::move(file));
  if (!r.ok()) return r;
  absl::Status s = (*r)->CheckTrusted(trusted);
  if (!s.ok()) return s;
  s = (*r)->LoadTable();
  if (!s.ok()) return s;
  return r;
}

absl::StatusOr<std::unique_ptr<CapsuleReader>> CapsuleReader::OpenUntrusted(
    std::unique_ptr<RandomAccessFile> file) {
  std::unique_ptr<CapsuleReader> r(new CapsuleReader());
  r->file_ = std::move(file);
  const uint64_t size = r->file_->size();
  if (size < kHeaderSize + 8 + kSignatureSize + kFooterSize) {
    // Tell "some other file" from "a capsule cut short" by the magic prefix we have.
    std::array<uint8_t, kHeaderSize> head{};
    const size_t n = static_cast<size_t>(std::min<uint64_t>(size, kMagic.size()));
    if (n == 0 || (r->file_->ReadAt(0, absl::MakeSpan(head.data(), n)).ok() &&
                   !std::equal(kMagic.begin(), kMagic.begin() + n, head.begin()))) {
      return absl::DataLossError("not a capsule (bad magic)");
    }
    return absl::DataLossError(absl::StrCat("capsule is truncated (", size, " bytes)"));
  }
  std::array<uint8_t, kHeaderSize> header{};
  absl::Status s = r->file_->ReadAt(0, absl::MakeSpan(header));
  if (!s.ok()) return ReadError(s, "header");
  s = CheckHeader(header);
  if (!s.ok()) return s;

  std::array<uint8_t, kFooterSize> footer{};
  s = r->file_->ReadAt(size - kFooterSize, absl::MakeSpan(footer));
  if (!s.ok()) return ReadError(s, "footer");
  absl::StatusOr<uint64_t> manifest_size = DecodeFooter(footer);
  if (!manifest_size.ok()) return manifest_size.status();
  if (*manifest_size > size - (kHeaderSize + kSignatureSize + kFooterSize)) {
    return absl::DataLossError("capsule is truncated (manifest length exceeds the file)");
  }
  const uint64_t manifest_offset = size - kFooterSize - kSignatureSize - *manifest_size;
  std::vector<uint8_t> manifest_bytes(*manifest_size);
  s = r->file_->ReadAt(manifest_offset, absl::MakeSpan(manifest_bytes));
  if (!s.ok()) return ReadError(s, "manifest");
  std::array<uint8_t, kSignatureSize> signature{};
  s = r->file_->ReadAt(size - kFooterSize - kSignatureSize, absl::MakeSpan(signature));
  if (!s.ok()) return ReadError(s, "signature");

  absl::StatusOr<Manifest> manifest = DecodeManifest(manifest_bytes);
  if (!manifest.ok()) return manifest.status();
  r->manifest_ = std::move(*manifest);
  s = crypto::VerifySignature(r->manifest_.issuer.sign_key,
                              SignatureInput(header, manifest_bytes), signature);
  if (!s.ok()) {
    return absl::DataLossError("manifest signature does not verify (capsule was modified)");
  }
  r->geometry_ = r->manifest_.geometry(*manifest_size);
  s = r->geometry_.Check();
  if (!s.ok()) return s;
  if (r->geometry_.FileSize() != size) {
    return absl::DataLossError(absl::StrCat(
        "capsule size ", size, " does not match its manifest (", r->geometry_.FileSize(),
        "): chunks were removed, added or the file was truncated"));
  }
  return r;
}

absl::Status CapsuleReader::LoadTable() {
  const uint64_t n = geometry_.chunk_count;
  table_.resize(n);
  crypto::MerkleTreeBuilder tree;
  constexpr uint64_t kBatch = 4096;
  for (uint64_t i = 0; i < n; i += kBatch) {
    const uint64_t count = std::min(kBatch, n - i);
    absl::Span<uint8_t> out(reinterpret_cast<uint8_t*>(table_.data() + i), count * kLeafHashSize);
    absl::Status s = file_->ReadAt(geometry_.TableOffset() + i * kLeafHashSize, out);
    if (!s.ok()) return ReadError(s, "chunk table");
    for (uint64_t j = 0; j < count; ++j) tree.AddLeafHash(table_[i + j]);
  }
  if (tree.Root() != manifest_.merkle_root) {
    table_.clear();
    return absl::DataLossError("chunk table does not match the signed Merkle root");
  }
  table_loaded_ = true;
  return absl::OkStatus();
}

absl::Status CapsuleReader::CheckTrusted(
    absl::Span<const crypto::PublicIdentity> trusted) const {
  for (const auto& t : trusted) {
    if (t == manifest_.issuer) return absl::OkStatus();
  }
  return WithHint(absl::PermissionDeniedError(absl::StrCat(
                      "issuer ", manifest_.issuer.fingerprint().ToString(), " is not trusted")),
                  "if you trust this issuer, pass its public key with --trust ISSUER.pub");
}

absl::Status CapsuleReader::CheckChunk(uint64_t index, absl::Span<const uint8_t> ciphertext) const {
  if (!table_loaded_) return absl::FailedPreconditionError("capsule issuer not trusted yet");
  if (index >= geometry_.chunk_count) {
    return absl::InvalidArgumentError(absl::StrCat("chunk index ", index, " out of range"));
  }
  if (ciphertext.size() != geometry_.CipherSize(index)) {
    return BadChunk(index, geometry_.chunk_count, "wrong length");
  }
  if (crypto::MerkleLeafHash(ciphertext) != table_[index]) {
    return BadChunk(index, geometry_.chunk_count, "hash does not match the signed chunk table");
  }
  return absl::OkStatus();
}

absl::Status CapsuleReader::VerifyChunks(int threads, const ProgressFn& progress,
                                         const std::function<bool()>& cancelled) const {
  if (!table_loaded_) return absl::FailedPreconditionError("capsule issuer not trusted yet");
  ThreadPool pool(ReaderThreads(threads, *file_));
  BufferPool buffers(size_t{geometry_.chunk_size} + kTagSize);
  OrderedPipeline<absl::Status> pipeline(
      &pool, PipelineWindow(pool.size(), *file_, size_t{geometry_.chunk_size} + kTagSize));
  const uint64_t n = geometry_.chunk_count;
  if (n > 0) {
    file_->WillRead(geometry_.ChunkOffset(0),
                    geometry_.ChunkOffset(n - 1) + geometry_.CipherSize(n - 1));
  }
  uint64_t next = 0, done = 0, bytes = 0;
  while (done < n) {
    while (next < n && !pipeline.full()) {
      const uint64_t i = next++;
      pipeline.Submit([this, i, &buffers]() -> absl::Status {
        std::vector<uint8_t> buf;
        try {
          buf = buffers.Get();
        } catch (const std::bad_alloc&) {
          return absl::ResourceExhaustedError("out of memory");
        }
        const absl::Span<uint8_t> ct(buf.data(), geometry_.CipherSize(i));
        absl::Status s = file_->ReadAt(geometry_.ChunkOffset(i), ct);
        if (s.ok()) s = CheckChunk(i, ct);
        if (absl::IsOutOfRange(s)) s = ChunkReadError(s, i);
        buffers.Put(std::move(buf));
        return s;
      });
    }
    absl::Status s = pipeline.Pop();
    if (!s.ok()) return s;  // the pipeline's destructor waits for the rest
    bytes += geometry_.CipherSize(done);
    ++done;
    if (progress) progress(bytes);
    if (cancelled && cancelled()) return absl::CancelledError("interrupted");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<PayloadKey>> CapsuleReader::Unlock(
    const crypto::Identity& identity) const {
  if (!table_loaded_) return absl::FailedPreconditionError("capsule issuer not trusted yet");
  const crypto::Fingerprint fp = identity.fingerprint();
  const RecipientEntry* entry = nullptr;
  for (const auto& r : manifest_.recipients) {
    if (r.fingerprint == fp) entry = &r;
  }
  if (entry == nullptr) {
    return WithHint(
        absl::PermissionDeniedError(absl::StrCat("capsule is not addressed to ", fp.ToString())),
        "this capsule was sealed for other recipients; use one of their identities "
        "(capsule inspect lists them)");
  }
  absl::StatusOr<crypto::SecretBytes> data_key =
      crypto::UnwrapKey(identity, entry->wrapped, WrapContext(manifest_));
  if (!data_key.ok()) {
    return absl::DataLossError(absl::StrCat("the recipient entry for ", fp.ToString(),
                                            " does not unwrap (tampered or moved)"));
  }
  absl::StatusOr<PayloadKeys> keys = DerivePayloadKeys(*data_key, manifest_);
  if (!keys.ok()) return keys.status();
  if (!crypto::ConstantTimeEquals(keys->commitment, manifest_.key_commitment)) {
    return absl::DataLossError("key commitment does not match (recipient entry was forged)");
  }
  auto key = std::make_unique<PayloadKey>();
  key->keys_ = std::move(*keys);
  return key;
}

absl::StatusOr<std::unique_ptr<PayloadStream>> CapsuleReader::Stream(
    const PayloadKey& key, uint64_t begin, uint64_t end, int threads, ProgressFn progress,
    const RandomAccessFile* chunks_from) const {
  if (!table_loaded_) return absl::FailedPreconditionError("capsule issuer not trusted yet");
  if (begin > end || end > manifest_.payload_size) {
    return absl::InvalidArgumentError("payload range out of bounds");
  }
  std::unique_ptr<PayloadStream> s(new PayloadStream());
  s->reader_ = this;
  s->file_ = chunks_from != nullptr ? chunks_from : file_.get();
  s->key_ = &key;
  s->begin_ = begin;
  s->end_ = end;
  s->progress_ = std::move(progress);
  if (begin == end) {
    s->next_submit_ = s->next_pop_ = 1;
    s->last_chunk_ = 0;  // nothing to read
  } else {
    s->next_submit_ = s->next_pop_ = begin / manifest_.chunk_size;
    s->last_chunk_ = (end - 1) / manifest_.chunk_size;
    s->file_->WillRead(
        geometry_.ChunkOffset(s->next_submit_),
        geometry_.ChunkOffset(s->last_chunk_) + geometry_.CipherSize(s->last_chunk_));
  }
  s->pool_ = std::make_unique<ThreadPool>(ReaderThreads(threads, *s->file_));
  s->buffers_ = std::make_unique<BufferPool>(size_t{manifest_.chunk_size} + kTagSize);
  s->pipeline_ = std::make_unique<OrderedPipeline<PayloadStream::ChunkResult>>(
      s->pool_.get(),
      PipelineWindow(s->pool_->size(), *s->file_, size_t{manifest_.chunk_size} + kTagSize));
  return s;
}

PayloadStream::~PayloadStream() { pipeline_.reset(); }

void PayloadStream::Fill() {
  const Geometry& g = reader_->geometry_;
  while (next_submit_ <= last_chunk_ && !pipeline_->full()) {
    const uint64_t i = next_submit_++;
    const CapsuleReader* reader = reader_;
    const RandomAccessFile* file = file_;
    const crypto::Aead* aead = &key_->aead();
    BufferPool* buffers = buffers_.get();
    const bool checked = file != &reader->file() && file->holds_checked_chunks();
    pipeline_->Submit([reader, file, aead, buffers, i, checked, &g]() -> ChunkResult {
      ChunkResult r;
      try {
        r.buffer = buffers->Get();
      } catch (const std::bad_alloc&) {
        r.status = absl::ResourceExhaustedError("out of memory");
        return r;
      }
      const absl::Span<uint8_t> ct(r.buffer.data(), g.CipherSize(i));
      r.status = file->ReadAt(g.ChunkOffset(i), ct);
      if (!r.status.ok()) {
        r.status = ChunkReadError(r.status, i);
        return r;
      }
      // Authenticate against the signed table first: a recipient holds the data key and could
      // forge a chunk that passes the AEAD, but not one that matches the issuer's signature.
      // (A private copy of chunks this process checked already is held to the AEAD alone: who
      // could change it runs as this process, and anyone else fails the tag.)
      if (!checked) {
        r.status = reader->CheckChunk(i, ct);
        if (!r.status.ok()) return r;
      }
      const auto nonce = ChunkNonce(i, i + 1 == g.chunk_count);
      r.size = ct.size() - kTagSize;
      r.status = aead->Open(nonce, reader->manifest_.capsule_id, ct,
                            absl::MakeSpan(r.buffer.data(), r.size));
      if (!r.status.ok()) r.status = BadChunk(i, g.chunk_count, "does not decrypt");
      return r;
    });
  }
}

absl::StatusOr<absl::Span<const uint8_t>> PayloadStream::Next() {
  if (failed_) return absl::FailedPreconditionError("payload stream already failed");
  if (next_pop_ > last_chunk_) return absl::Span<const uint8_t>();
  Fill();
  ChunkResult r = pipeline_->Pop();
  if (!r.status.ok()) {
    failed_ = true;
    return r.status;
  }
  const uint64_t i = next_pop_++;
  if (!current_.empty()) buffers_->Put(std::move(current_));
  current_ = std::move(r.buffer);
  const uint64_t chunk_begin = reader_->geometry_.PayloadOffset(i);
  const uint64_t lo = std::max(begin_, chunk_begin) - chunk_begin;
  const uint64_t hi = std::min<uint64_t>(end_, chunk_begin + r.size) - chunk_begin;
  delivered_ += hi - lo;
  if (progress_) progress_(delivered_);
  Fill();
  return absl::MakeConstSpan(current_.data() + lo, hi - lo);
}

}  // namespace bunker::capsule
