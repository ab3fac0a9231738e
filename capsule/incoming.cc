#include "capsule/incoming.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "capsule/format.h"
#include "capsule/io.h"
#include "capsule/parallel.h"

namespace bunker::capsule {
namespace {

// Empties the journal at `path` (if there is one) and makes that durable.
absl::Status ResetJournal(const std::string& path) {
  Fd journal(::open(path.c_str(), O_WRONLY | O_TRUNC | O_NOFOLLOW | O_CLOEXEC));
  if (!journal.valid()) {
    if (errno == ENOENT) return absl::OkStatus();
    return ErrnoStatus("cannot reset the transfer journal", errno);
  }
  if (::fsync(journal.get()) != 0) return ErrnoStatus("cannot reset the transfer journal", errno);
  return absl::OkStatus();
}

// A journal record with this bit set takes chunk (record & ~bit) back: it is missing again
// (LocalIncoming::Forget). Older readers see an index out of range and reset the journal,
// which costs a resend, never a wrong capsule.
constexpr uint64_t kForgetRecord = uint64_t{1} << 63;

// A capsule file of which only the prelude is known: reads of the header or the tail succeed,
// anything else (the chunks) is out of range. Enough for CapsuleReader's checks, which never
// read a chunk.
class PreludeFile : public RandomAccessFile {
 public:
  PreludeFile(Prelude p, uint64_t tail_offset, uint64_t size)
      : p_(std::move(p)), tail_offset_(tail_offset), size_(size) {}
  uint64_t size() const override { return size_; }
  absl::Status ReadAt(uint64_t offset, absl::Span<uint8_t> out) const override {
    if (offset + out.size() <= p_.header.size()) {
      std::memcpy(out.data(), p_.header.data() + offset, out.size());
      return absl::OkStatus();
    }
    if (offset >= tail_offset_ && offset - tail_offset_ + out.size() <= p_.tail.size()) {
      std::memcpy(out.data(), p_.tail.data() + (offset - tail_offset_), out.size());
      return absl::OkStatus();
    }
    return absl::OutOfRangeError("not part of the prelude");
  }

 private:
  const Prelude p_;
  uint64_t tail_offset_, size_;
};

absl::Status PwriteAll(int fd, absl::Span<const uint8_t> data, uint64_t offset) {
  return capsule::PwriteAll(fd, data, offset, "the incoming capsule");
}

// A short read means the file is not what the journal says it is.
absl::Status PreadAll(int fd, absl::Span<uint8_t> out, uint64_t offset) {
  absl::Status s = capsule::PreadAll(fd, out, offset, "the incoming capsule");
  if (absl::IsOutOfRange(s)) {
    return absl::DataLossError("the incoming capsule file is shorter than expected");
  }
  return s;
}

// The folder of partial capsules and journals must be the daemon's alone (spec/TRANSFER.md
// "Why finish does not re-verify"): whoever else could write there could mark chunks as
// received that never were, or swap the partial file. Texts may reach a peer: no paths.
absl::Status CheckPrivateFolder(const std::string& folder) {
  struct stat st;
  if (::lstat(folder.c_str(), &st) != 0) {
    return ErrnoStatus("cannot use the store's .incoming folder", errno);
  }
  if (!S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError("the store's .incoming is not a folder");
  }
  if (st.st_uid != ::geteuid()) {
    return absl::FailedPreconditionError(
        "the store's .incoming folder belongs to another user; it must be the daemon's own");
  }
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
    return absl::FailedPreconditionError(
        "the store's .incoming folder can be written by other users; it must be the daemon's "
        "own (mode 0700)");
  }
  return absl::OkStatus();
}

// What the capsules this process is receiving may still write: promised to each at its offer,
// given back as its chunks land (the free space then shows them) or when it goes. Without it,
// offers made at once would each see the whole free space and together fill the disk.
std::mutex g_room_mu;
uint64_t g_promised = 0;
std::function<uint64_t(const std::string&)> g_free_space_for_testing;  // guarded by g_room_mu

void GiveBackRoom(uint64_t bytes) {
  if (bytes == 0) return;
  std::lock_guard<std::mutex> lock(g_room_mu);
  g_promised -= std::min(g_promised, bytes);
}

// kResourceExhausted unless `needed` bytes more fit on the file system of `folder` with
// `keep_free` to spare, besides what the other capsules being received were promised; else
// promises them (GiveBackRoom returns them).
absl::StatusOr<uint64_t> FreeSpaceLocked(const std::string& folder) {
  if (g_free_space_for_testing) return g_free_space_for_testing(folder);
  struct statvfs vfs;
  if (::statvfs(folder.c_str(), &vfs) != 0) return ErrnoStatus("cannot check free space", errno);
  return static_cast<uint64_t>(vfs.f_bavail) * vfs.f_frsize;
}

absl::Status PromiseRoom(const std::string& folder, uint64_t needed, uint64_t keep_free,
                         const std::string& id) {
  std::lock_guard<std::mutex> lock(g_room_mu);
  absl::StatusOr<uint64_t> free_space = FreeSpaceLocked(folder);
  if (!free_space.ok()) return free_space.status();
  const uint64_t free_bytes = *free_space;
  const uint64_t avail = free_bytes > g_promised ? free_bytes - g_promised : 0;
  if (needed <= avail && avail - needed >= keep_free) {
    g_promised += needed;
    return absl::OkStatus();
  }
  // The text reaches the peer (transfer/errors.h PeerSafe): what it needs, not what is free.
  return absl::ResourceExhaustedError(absl::StrCat("no room for capsule ", id, ": it needs ",
                                                   needed, " bytes more than the disk can spare"));
}

// The partial files this process created or has checked (by path): their journal is its own
// word. Any other (a resume after a restart) was written by a process it cannot vouch for, or
// restored or edited since: its journaled chunks are checked once before they are trusted.
std::mutex g_vouched_mu;
std::set<std::string> g_vouched;  // guarded by g_vouched_mu

bool Vouched(const std::string& path) {
  std::lock_guard<std::mutex> lock(g_vouched_mu);
  return g_vouched.count(path) != 0;
}

void Vouch(const std::string& path) {
  std::lock_guard<std::mutex> lock(g_vouched_mu);
  g_vouched.insert(path);
}

}  // namespace

absl::StatusOr<uint64_t> FreeSpace(const std::string& folder) {
  std::lock_guard<std::mutex> lock(g_room_mu);
  return FreeSpaceLocked(folder);
}

void ForgetCheckedIncomingForTesting() {
  std::lock_guard<std::mutex> lock(g_vouched_mu);
  g_vouched.clear();
}

void SetFreeSpaceForTesting(std::function<uint64_t(const std::string&)> free_space) {
  std::lock_guard<std::mutex> lock(g_room_mu);
  g_free_space_for_testing = std::move(free_space);
}

absl::StatusOr<Prelude> ReadPrelude(const CapsuleReader& reader) {
  const Geometry& g = reader.geometry();
  Prelude p;
  p.header.resize(kHeaderSize);
  p.tail.resize(g.FileSize() - g.TableOffset());
  absl::Status s = reader.ReadRaw(0, absl::MakeSpan(p.header));
  if (s.ok()) s = reader.ReadRaw(g.TableOffset(), absl::MakeSpan(p.tail));
  if (!s.ok()) return s;
  return p;
}

absl::Status IncomingCapsule::PutChunk(uint64_t index, absl::Span<const uint8_t> ciphertext) {
  // A chunk already received is checked and written again (the same bytes), not journaled.
  const bool received = IsReceived(index);
  absl::Status s = CheckAndWrite(index, ciphertext);
  if (!s.ok() || received) return s;
  MarkWritten(index);
  return absl::OkStatus();
}

LocalIncoming::~LocalIncoming() {
  GiveBackRoom(promised_);
  if (fd_ >= 0) ::close(fd_);
  if (journal_fd_ >= 0) ::close(journal_fd_);
}

absl::StatusOr<std::unique_ptr<CapsuleReader>> CheckPrelude(
    const Prelude& prelude, absl::Span<const crypto::PublicIdentity> trusted) {
  // Find the geometry from the tail alone, then let CapsuleReader check everything.
  const std::vector<uint8_t>& tail = prelude.tail;
  if (prelude.header.size() != kHeaderSize || tail.size() < kSignatureSize + kFooterSize + 8) {
    return absl::DataLossError("capsule prelude is malformed");
  }
  absl::StatusOr<uint64_t> m = DecodeFooter(absl::MakeConstSpan(tail).last(kFooterSize));
  if (!m.ok()) return m.status();
  if (*m > tail.size() - kSignatureSize - kFooterSize) {
    return absl::DataLossError("capsule prelude is truncated");
  }
  absl::StatusOr<Manifest> manifest = DecodeManifest(absl::MakeConstSpan(
      tail.data() + tail.size() - kFooterSize - kSignatureSize - *m, *m));
  if (!manifest.ok()) return manifest.status();
  const Geometry g = manifest->geometry(*m);
  absl::Status s = g.Check();
  if (!s.ok()) return s;
  if (tail.size() != g.FileSize() - g.TableOffset()) {
    return absl::DataLossError("capsule prelude does not match its manifest");
  }
  // The reader keeps its own copy of the prelude; after Open (which loads the table) it is used
  // for CheckChunk alone.
  return CapsuleReader::Open(
      std::make_unique<PreludeFile>(prelude, g.TableOffset(), g.FileSize()), trusted);
}

absl::StatusOr<std::unique_ptr<LocalIncoming>> LocalIncoming::Begin(
    const std::string& store, const Prelude& prelude,
    absl::Span<const crypto::PublicIdentity> trusted, std::optional<uint64_t> keep_free,
    uint64_t write_reserve, bool check_resumed) {
  absl::StatusOr<std::unique_ptr<CapsuleReader>> reader = CheckPrelude(prelude, trusted);
  if (!reader.ok()) return reader.status();
  std::unique_ptr<LocalIncoming> in(new LocalIncoming());
  in->write_reserve_ = write_reserve;
  in->reader_ = std::move(*reader);
  const Geometry g = in->reader_->geometry();
  const std::vector<uint8_t>& tail = prelude.tail;
  absl::Status s;
  in->store_ = store;
  in->prelude_ = prelude;
  const std::string id = in->reader_->manifest().IdHex();
  const std::string incoming = store + "/.incoming";
  ::mkdir(store.c_str(), 0700);
  ::mkdir(incoming.c_str(), 0700);
  const std::string final_path = store + "/" + id + ".capsule";
  if (::access(final_path.c_str(), F_OK) == 0) {
    return absl::AlreadyExistsError(absl::StrCat("capsule ", id, " is already in the store"));
  }
  s = CheckPrivateFolder(incoming);
  if (!s.ok()) return s;
  in->path_ = incoming + "/" + id + ".capsule";
  in->journal_path_ = incoming + "/" + id + ".journal";
  const bool fresh = ::access(in->path_.c_str(), F_OK) != 0;
  if (fresh && keep_free) {
    // Before anything is written: the whole file (sparse until the chunks arrive).
    s = PromiseRoom(incoming, g.FileSize(), *keep_free, id);
    if (!s.ok()) return s;
    in->promised_ = g.FileSize();
  }
  in->fd_ = ::open(in->path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (in->fd_ < 0) return ErrnoStatus("cannot create the incoming capsule", errno);
  struct stat st;
  if (::fstat(in->fd_, &st) != 0) return ErrnoStatus("cannot stat the incoming capsule", errno);
  bool resumed = false;
  if (st.st_size != 0) {
    // Resuming: the same capsule, byte for byte. A file whose prelude is not a valid one (a
    // crash while it was being created) is simply started again.
    std::vector<uint8_t> header(kHeaderSize), old_tail(tail.size());
    Prelude on_disk;
    const bool readable = static_cast<uint64_t>(st.st_size) == g.FileSize() &&
                          PreadAll(in->fd_, absl::MakeSpan(header), 0).ok() &&
                          PreadAll(in->fd_, absl::MakeSpan(old_tail), g.TableOffset()).ok();
    if (readable && header == prelude.header && old_tail == tail) {
      resumed = true;  // same capsule: resume below
    } else {
      on_disk.header = std::move(header);
      on_disk.tail = std::move(old_tail);
      if (readable && CheckPrelude(on_disk, trusted).ok()) {
        // The text may reach a peer: no local path in it.
        return absl::DataLossError(absl::StrCat(
            "a different capsule with id ", id,
            " is partly received at the receiving site, which takes no other until its "
            "operator removes that one"));
      }
      if (::ftruncate(in->fd_, 0) != 0) return ErrnoStatus("cannot reset the incoming capsule", errno);
      st.st_size = 0;
    }
  }
  if (st.st_size == 0) {
    // New: a journal left from an earlier file (its capsule file deleted, or a crash between
    // the two unlinks of Finish) speaks of chunks this file does not have. Emptied durably
    // before the file gets its prelude, so that a journal never outlives its chunks.
    s = ResetJournal(in->journal_path_);
    if (!s.ok()) return s;
    // A sparse file of the final size, with the prelude in place.
    if (::ftruncate(in->fd_, static_cast<off_t>(g.FileSize())) != 0) {
      return ErrnoStatus("cannot size the incoming capsule", errno);
    }
    s = PwriteAll(in->fd_, prelude.header, 0);
    if (s.ok()) s = PwriteAll(in->fd_, tail, g.TableOffset());
    if (s.ok() && ::fsync(in->fd_) != 0) s = ErrnoStatus("cannot sync", errno);
    if (s.ok()) s = SyncDirectory(incoming);
    if (!s.ok()) return s;
  }
  in->received_.assign(g.chunk_count, false);
  s = in->LoadJournal();
  if (!s.ok()) return s;
  if (resumed && check_resumed && !Vouched(in->path_)) {
    // Files left by another process (spec/TRANSFER.md "Resume"): Finish trusts the journal,
    // so it is checked against the file once here. Chunks that fail are asked for again.
    s = in->CheckJournaled();
    if (!s.ok()) return s;
  }
  Vouch(in->path_);
  if (!fresh && keep_free) {
    // Resuming: what is still missing (chunks written but not journaled are counted again).
    const uint64_t missing = g.chunk_count - in->received_count_;
    const uint64_t needed = std::min(g.FileSize(), missing * (uint64_t{g.chunk_size} + 16));
    s = PromiseRoom(incoming, needed, *keep_free, id);
    if (!s.ok()) return s;
    in->promised_ = needed;
  }
  if (in->promised_ != 0) in->counted_ = in->received_;
  return in;
}

absl::Status LocalIncoming::CheckJournaled() {
  std::vector<uint64_t> journaled;
  for (uint64_t i = 0; i < received_.size(); ++i) {
    if (received_[i]) journaled.push_back(i);
  }
  if (journaled.empty()) return absl::OkStatus();
  // Read and hashed on all cores, each worker taking every n-th chunk with a buffer of its own
  // (at most one chunk each: kMaxChunkSize).
  std::mutex mu;
  std::vector<uint64_t> bad;
  absl::Status failed;
  {
    ThreadPool pool(0);
    const size_t workers = static_cast<size_t>(pool.size());
    for (size_t w = 0; w < workers; ++w) {
      pool.Submit([this, w, workers, &journaled, &mu, &bad, &failed]() {
        const Geometry& g = reader_->geometry();
        std::vector<uint8_t> buf;
        for (size_t k = w; k < journaled.size(); k += workers) {
          const uint64_t i = journaled[k];
          buf.resize(g.CipherSize(i));
          absl::Status s = PreadAll(fd_, absl::MakeSpan(buf), g.ChunkOffset(i));
          if (s.ok() || absl::IsDataLoss(s)) {
            if (!s.ok() || !reader_->CheckChunk(i, buf).ok()) {
              std::lock_guard<std::mutex> lock(mu);
              bad.push_back(i);
            }
            continue;
          }
          std::lock_guard<std::mutex> lock(mu);
          if (failed.ok()) failed = s;
          return;
        }
      });
    }
  }  // the pool runs every task, then joins
  if (!failed.ok()) return failed;
  if (bad.empty()) return absl::OkStatus();
  std::sort(bad.begin(), bad.end());
  return Forget(bad);
}

absl::Status LocalIncoming::LoadJournal() {
  journal_fd_ = ::open(journal_path_.c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (journal_fd_ < 0) return ErrnoStatus("cannot open the transfer journal", errno);
  struct stat st;
  if (::fstat(journal_fd_, &st) != 0) return ErrnoStatus("cannot stat the journal", errno);
  const uint64_t whole = static_cast<uint64_t>(st.st_size) / 8 * 8;
  if (whole != static_cast<uint64_t>(st.st_size)) {
    // A record torn by a crash: the chunk it named is simply sent again.
    if (::ftruncate(journal_fd_, static_cast<off_t>(whole)) != 0) {
      return ErrnoStatus("cannot repair the journal", errno);
    }
  }
  std::vector<uint8_t> buf(1 << 16);
  for (uint64_t pos = 0; pos < whole;) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), whole - pos));
    absl::Status s = PreadAll(journal_fd_, absl::MakeSpan(buf.data(), n), pos);
    if (!s.ok()) return s;
    for (size_t k = 0; k < n; k += 8) {
      uint64_t i = LoadBigEndian64(buf.data() + k);
      const bool forget = (i & kForgetRecord) != 0;
      i &= ~kForgetRecord;
      if (i >= received_.size()) {
        // A damaged journal costs a resend, not the transfer: forget it and start counting again.
        std::fill(received_.begin(), received_.end(), false);
        received_count_ = 0;
        if (::ftruncate(journal_fd_, 0) != 0) return ErrnoStatus("cannot reset the journal", errno);
        return absl::OkStatus();
      }
      if (forget && received_[i]) {
        received_[i] = false;
        --received_count_;
      } else if (!forget && !received_[i]) {
        received_[i] = true;
        ++received_count_;
      }
    }
    pos += n;
  }
  return absl::OkStatus();
}

std::vector<uint64_t> LocalIncoming::Missing() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<uint64_t> out;
  for (uint64_t i = 0; i < received_.size(); ++i) {
    if (!received_[i]) out.push_back(i);
  }
  return out;
}

uint64_t LocalIncoming::received_count() const {
  std::lock_guard<std::mutex> lock(mu_);
  return received_count_;
}

bool LocalIncoming::IsReceived(uint64_t index) const {
  std::lock_guard<std::mutex> lock(mu_);
  return index < received_.size() && received_[index];
}

void LocalIncoming::MarkWritten(uint64_t index) {
  std::lock_guard<std::mutex> lock(mu_);
  pending_.push_back(index);
  // Its bytes are on the disk now: the free space shows them, the promise need not.
  if (promised_ != 0 && index < counted_.size() && !counted_[index]) {
    counted_[index] = true;
    const uint64_t bytes = std::min(promised_, reader_->geometry().CipherSize(index));
    promised_ -= bytes;
    GiveBackRoom(bytes);
  }
}

absl::Status LocalIncoming::CheckAndWrite(uint64_t index,
                                          absl::Span<const uint8_t> ciphertext) const {
  // received_.size() never changes after Begin.
  if (index >= received_.size()) {
    return absl::InvalidArgumentError(absl::StrCat("chunk index ", index, " out of range"));
  }
  absl::Status s = reader_->CheckChunk(index, ciphertext);
  if (!s.ok()) return s;
  if (write_reserve_ > 0) {
    absl::StatusOr<uint64_t> free_bytes = FreeSpace(store_ + "/.incoming");
    if (!free_bytes.ok()) return free_bytes.status();
    if (*free_bytes < write_reserve_ || *free_bytes - write_reserve_ < ciphertext.size()) {
      // The text reaches the peer (transfer/errors.h PeerSafe): nothing of the disk's size.
      return absl::ResourceExhaustedError(absl::StrCat(
          "no room for capsule ", reader_->manifest().IdHex(),
          ": the receiving site's spool is full; send again later"));
    }
  }
  return PwriteAll(fd_, ciphertext, reader_->geometry().ChunkOffset(index));
}

absl::StatusOr<std::vector<uint64_t>> LocalIncoming::Sync() {
  std::lock_guard<std::mutex> sync_lock(sync_mu_);
  std::vector<uint64_t> done;
  {
    std::lock_guard<std::mutex> lock(mu_);
    std::sort(pending_.begin(), pending_.end());
    pending_.erase(std::unique(pending_.begin(), pending_.end()), pending_.end());
    for (uint64_t i : pending_) {
      if (!received_[i]) done.push_back(i);
    }
    pending_.clear();
  }
  if (done.empty()) return done;
  // Data first, journal second: a journaled chunk is always on disk. (Puts that complete
  // meanwhile are in pending_ again: they are journaled by the next Sync.)
  if (::fdatasync(fd_) != 0) return ErrnoStatus("cannot sync the incoming capsule", errno);
  std::vector<uint8_t> records(8 * done.size());
  for (size_t k = 0; k < done.size(); ++k) StoreBigEndian64(done[k], records.data() + 8 * k);
  struct stat before;
  const bool sized = ::fstat(journal_fd_, &before) == 0;
  absl::Status s = WriteAll(journal_fd_, records);
  if (s.ok() && ::fsync(journal_fd_) != 0) s = ErrnoStatus("cannot sync the journal", errno);
  if (!s.ok()) {
    // Cut a partly written record (e.g. a full disk) so later records stay aligned; these
    // chunks count as not received and will be sent again.
    if (sized && ::ftruncate(journal_fd_, before.st_size) != 0) {
      return ErrnoStatus("cannot repair the journal", errno);
    }
    return s;
  }
  std::lock_guard<std::mutex> lock(mu_);
  for (uint64_t i : done) {
    received_[i] = true;
    ++received_count_;
  }
  return done;
}

absl::StatusOr<std::string> LocalIncoming::Finish(
    const std::function<absl::Status()>& before_name) {
  std::lock_guard<std::mutex> sync_lock(sync_mu_);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!finished_path_.empty()) return finished_path_;
    if (received_count_ != received_.size()) {
      return absl::FailedPreconditionError(absl::StrCat(
          received_.size() - received_count_, " of ", received_.size(), " chunks are missing"));
    }
  }
  // No re-verification: every journaled chunk was checked before it was written and synced
  // before it was journaled (spec/TRANSFER.md "Push"). The whole file is made durable (the
  // prelude was synced at Begin, the chunks at each Sync; this is cheap) before it is named.
  const std::string final_path = store_ + "/" + manifest().IdHex() + ".capsule";
  if (::fsync(fd_) != 0) return ErrnoStatus("cannot sync the incoming capsule", errno);
  if (before_name) {
    absl::Status recorded = before_name();
    if (!recorded.ok()) return recorded;
  }
  // link(2) never replaces: a capsule already in the store stays as it is.
  if (::link(path_.c_str(), final_path.c_str()) != 0) {
    return ErrnoStatus(absl::StrCat("cannot move the capsule into ", store_), errno);
  }
  // The journal first: a partial file without its journal is received again, a journal
  // without its file must never be (see Begin).
  ::unlink(journal_path_.c_str());
  ::unlink(path_.c_str());
  absl::Status synced = SyncDirectory(store_);
  if (!synced.ok()) return synced;
  std::lock_guard<std::mutex> lock(mu_);
  finished_path_ = final_path;
  // Complete: nothing more will be written (the peer may hold the upload a while yet).
  GiveBackRoom(promised_);
  promised_ = 0;
  return final_path;
}

absl::Status LocalIncoming::Abandon() {
  std::lock_guard<std::mutex> sync_lock(sync_mu_);
  absl::Status s;
  // The journal first (see Finish).
  if (::unlink(journal_path_.c_str()) != 0 && errno != ENOENT) {
    s = ErrnoStatus("cannot remove the transfer journal", errno);
  }
  if (::unlink(path_.c_str()) != 0 && errno != ENOENT && s.ok()) {
    s = ErrnoStatus("cannot remove the incoming capsule", errno);
  }
  std::lock_guard<std::mutex> lock(mu_);
  std::fill(received_.begin(), received_.end(), false);
  received_count_ = 0;
  pending_.clear();
  GiveBackRoom(promised_);  // its files are gone
  promised_ = 0;
  return s;
}

absl::Status LocalIncoming::ReadAt(uint64_t offset, absl::Span<uint8_t> out) const {
  return PreadAll(fd_, out, offset);
}

absl::Status LocalIncoming::Forget(const std::vector<uint64_t>& indexes) {
  std::lock_guard<std::mutex> sync_lock(sync_mu_);
  std::vector<uint8_t> records;
  for (uint64_t i : indexes) {
    if (i >= received_.size()) return absl::InvalidArgumentError("chunk index out of range");
    records.resize(records.size() + 8);
    StoreBigEndian64(i | kForgetRecord, records.data() + records.size() - 8);
  }
  if (records.empty()) return absl::OkStatus();
  struct stat before;
  const bool sized = ::fstat(journal_fd_, &before) == 0;
  absl::Status s = WriteAll(journal_fd_, records);
  if (s.ok() && ::fsync(journal_fd_) != 0) s = ErrnoStatus("cannot sync the journal", errno);
  if (!s.ok()) {
    if (sized) (void)::ftruncate(journal_fd_, before.st_size);
    return s;
  }
  std::lock_guard<std::mutex> lock(mu_);
  for (uint64_t i : indexes) {
    if (received_[i]) {
      received_[i] = false;
      --received_count_;
    }
  }
  return absl::OkStatus();
}

void LocalIncoming::Release(uint64_t offset, uint64_t length) {
  // Best effort: EOPNOTSUPP on file systems without holes costs disk space, nothing else.
  (void)::fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(offset),
                    static_cast<off_t>(length));
}

}  // namespace bunker::capsule
