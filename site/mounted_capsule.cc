#include "site/mounted_capsule.h"

#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <list>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "absl/strings/str_cat.h"
#include "capsule/format.h"
#include "capsule/parallel.h"
#include "crypto/secret.h"
#include "crypto/status_macros.h"
#include "site/gate.h"

namespace bunker::site {
namespace {

using Type = capsule::FileEntry::Type;

// A decrypted, authenticated chunk. The buffer is not value-initialized (the AEAD writes every
// byte before anyone reads it): zero-filling 1 MiB per chunk showed in the profile.
// TODO(perf): a pool of locked buffers; page faults on fresh buffers and mlock per chunk are
// about 5% of the daemon's time on a sequential read (README "Performance").
struct Chunk {
  explicit Chunk(size_t n) : data(new uint8_t[n]), size(n) {}
  ~Chunk() {
    // Plaintext does not outlive its use in freed heap memory (sodium_memzero, not a byte loop
    // through a volatile pointer: that was a tenth of the read path's time).
    crypto::Wipe(absl::MakeSpan(data.get(), size));
    if (locked) ::munlock(data.get(), size);
  }
  absl::Span<const uint8_t> plain() const { return absl::MakeConstSpan(data.get(), size); }
  std::unique_ptr<uint8_t[]> data;
  size_t size;
  bool locked = false;
};
using ChunkPtr = std::shared_ptr<const Chunk>;

std::string ChildKey(uint64_t parent, std::string_view name) {
  std::string key(reinterpret_cast<const char*>(&parent), sizeof parent);
  key.append(name.data(), name.size());
  return key;
}

}  // namespace

struct MountedCapsule::Impl {
  std::unique_ptr<OpenCapsule> capsule;
  std::string id;
  int64_t not_after = kNever;
  std::optional<verifier::AuditRecord> record;
  std::optional<verifier::SiteFacts> facts;
  const crypto::Identity* identity = nullptr;
  MountOptions options;

  std::vector<Node> nodes;  // nodes[ino - 1]
  std::vector<uint64_t> payload_offset;  // per node: where a file's bytes start in the payload
  std::unordered_map<std::string, uint64_t> children;  // ChildKey(parent, name) -> ino

  // Usage.
  std::atomic<uint64_t> opens{0}, bytes_read{0};
  mutable std::mutex opened_mu;
  std::unordered_set<uint64_t> opened;  // files opened or read

  // A read of file `ino`: it counts as an open when no open of it was counted (the user may
  // have answered its opens himself).
  void CountRead(uint64_t ino) {
    std::lock_guard<std::mutex> lock(opened_mu);
    if (opened.insert(ino).second) opens.fetch_add(1);
  }

  // The chunk cache: LRU by bytes, and the loads in flight (so that concurrent readers of one
  // chunk wait for a single decryption).
  struct Pending {
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    absl::StatusOr<ChunkPtr> result = absl::UnknownError("pending");
  };
  std::mutex cache_mu;
  std::list<std::pair<uint64_t, ChunkPtr>> lru;  // most recent first
  std::unordered_map<uint64_t, std::list<std::pair<uint64_t, ChunkPtr>>::iterator> cached;
  std::unordered_map<uint64_t, std::shared_ptr<Pending>> inflight;
  uint64_t cached_bytes = 0;

  // Read-ahead workers.
  std::mutex ahead_mu;
  std::condition_variable ahead_cv;
  std::deque<uint64_t> ahead;
  std::set<uint64_t> ahead_queued;
  bool stopping = false;
  std::vector<std::thread> workers;

  ~Impl() {
    {
      std::lock_guard<std::mutex> lock(ahead_mu);
      stopping = true;
    }
    ahead_cv.notify_all();
    for (std::thread& t : workers) t.join();
  }

  // Reads, authenticates and decrypts chunk `i` (uncached).
  absl::StatusOr<ChunkPtr> LoadChunk(uint64_t i) const {
    const capsule::CapsuleReader& reader = *capsule->reader_;
    const capsule::Geometry& g = reader.geometry();
    if (i >= g.chunk_count) return absl::DataLossError("chunk index out of range");
    // TODO(cleanup): the same steps as PayloadStream's worker (capsule/reader.cc); move both
    // into one CapsuleReader::ReadChunk once the reader's concurrent changes have landed.
    // Ciphertext is not secret: one buffer per thread, reused.
    thread_local std::vector<uint8_t> ct_buffer;
    if (ct_buffer.size() < g.CipherSize(i)) ct_buffer.resize(g.CipherSize(i));
    const absl::Span<uint8_t> ct = absl::MakeSpan(ct_buffer.data(), g.CipherSize(i));
    absl::Status s = reader.ReadRaw(g.ChunkOffset(i), ct);
    if (!s.ok()) {
      return absl::UnavailableError(absl::StrCat("cannot read chunk ", i, ": ", s.message()));
    }
    // The signed table first: the data key alone could forge a chunk that passes the AEAD.
    BUNKER_RETURN_IF_ERROR(reader.CheckChunk(i, ct));
    auto chunk = std::make_shared<Chunk>(g.PlainSize(i));
    const auto nonce = capsule::ChunkNonce(i, i + 1 == g.chunk_count);
    s = capsule->key_->aead().Open(nonce, reader.manifest().capsule_id, ct,
                                   absl::MakeSpan(chunk->data.get(), chunk->size));
    if (!s.ok()) {
      return absl::DataLossError(
          absl::StrCat("chunk ", i, " of ", g.chunk_count, " is corrupt (does not decrypt)"));
    }
    // Keep it out of swap where the limits allow; the cache bound is what the site accepts.
    chunk->locked = ::mlock(chunk->data.get(), chunk->size) == 0;
    return ChunkPtr(std::move(chunk));
  }

  absl::StatusOr<ChunkPtr> GetChunk(uint64_t i) {
    std::shared_ptr<Pending> pending;
    bool load = false;
    {
      std::lock_guard<std::mutex> lock(cache_mu);
      if (auto it = cached.find(i); it != cached.end()) {
        lru.splice(lru.begin(), lru, it->second);
        return it->second->second;
      }
      if (auto it = inflight.find(i); it != inflight.end()) {
        pending = it->second;
      } else {
        pending = std::make_shared<Pending>();
        inflight[i] = pending;
        load = true;
      }
    }
    if (!load) {
      std::unique_lock<std::mutex> lock(pending->mu);
      pending->cv.wait(lock, [&] { return pending->done; });
      return pending->result;
    }
    absl::StatusOr<ChunkPtr> result = LoadChunk(i);
    {
      std::lock_guard<std::mutex> lock(cache_mu);
      inflight.erase(i);
      // Failures are not cached: every read that needs a bad chunk checks it again.
      if (result.ok() && options.cache_bytes > 0) {
        lru.emplace_front(i, *result);
        cached[i] = lru.begin();
        cached_bytes += (*result)->size;
        while (cached_bytes > options.cache_bytes && lru.size() > 1) {
          cached_bytes -= lru.back().second->size;
          cached.erase(lru.back().first);
          lru.pop_back();
        }
      }
    }
    {
      std::lock_guard<std::mutex> lock(pending->mu);
      pending->result = result;
      pending->done = true;
    }
    pending->cv.notify_all();
    return result;
  }

  void ReadAhead(uint64_t first, uint64_t last) {
    if (workers.empty()) return;
    {
      std::lock_guard<std::mutex> cache_lock(cache_mu);
      std::lock_guard<std::mutex> lock(ahead_mu);
      for (uint64_t i = first; i <= last; ++i) {
        if (cached.count(i) || inflight.count(i) || ahead_queued.count(i)) continue;
        if (ahead.size() >= 64) break;
        ahead.push_back(i);
        ahead_queued.insert(i);
      }
    }
    ahead_cv.notify_all();
  }

  void AheadWorker() {
    while (true) {
      uint64_t i;
      {
        std::unique_lock<std::mutex> lock(ahead_mu);
        ahead_cv.wait(lock, [&] { return stopping || !ahead.empty(); });
        if (stopping) return;
        i = ahead.front();
        ahead.pop_front();
        ahead_queued.erase(i);
      }
      (void)GetChunk(i);
    }
  }
};

MountedCapsule::MountedCapsule(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
MountedCapsule::~MountedCapsule() = default;

absl::StatusOr<std::unique_ptr<MountedCapsule>> MountedCapsule::Create(
    std::unique_ptr<OpenCapsule> capsule, const std::vector<std::string>& files,
    int64_t not_after, std::optional<verifier::AuditRecord> record,
    std::optional<verifier::SiteFacts> facts, const crypto::Identity* identity,
    const MountOptions& options) {
  auto impl = std::make_unique<Impl>();
  const capsule::Manifest& m = capsule->reader_->manifest();
  impl->id = m.IdHex();
  impl->not_after = not_after;
  impl->record = std::move(record);
  impl->facts = std::move(facts);
  impl->identity = identity;
  impl->options = options;

  // The last entry for each path wins, as in tar (and as Gate::Decide's lookups).
  std::unordered_map<std::string, const capsule::FileEntry*> last;
  for (const capsule::FileEntry& e : capsule->entries_) last[e.path] = &e;
  const std::unordered_set<std::string> permitted(files.begin(), files.end());

  auto add_node = [&impl](Node n, uint64_t payload_offset) {
    n.ino = impl->nodes.size() + 1;
    impl->nodes.push_back(std::move(n));
    impl->payload_offset.push_back(payload_offset);
    return impl->nodes.back().ino;
  };
  Node root;
  root.type = Node::Type::kDirectory;
  root.mode = 0555;
  root.nlink = 2;
  add_node(root, 0);

  // Directories by path, created on demand with the index's metadata when it has some.
  std::unordered_map<std::string, uint64_t> dirs = {{"", kRootInode}};
  std::function<uint64_t(const std::string&)> dir_for = [&](const std::string& path) -> uint64_t {
    if (auto it = dirs.find(path); it != dirs.end()) return it->second;
    const size_t slash = path.rfind('/');
    const uint64_t parent = dir_for(slash == std::string::npos ? "" : path.substr(0, slash));
    Node d;
    d.type = Node::Type::kDirectory;
    d.mode = 0555;
    d.nlink = 2;
    d.parent = parent;
    if (auto it = last.find(path); it != last.end() && it->second->type == Type::kDirectory) {
      d.mode = it->second->mode & 01777;
      d.mtime = it->second->mtime;
    }
    const uint64_t ino = add_node(d, 0);
    dirs[path] = ino;
    const std::string name = slash == std::string::npos ? path : path.substr(slash + 1);
    impl->nodes[parent - 1].children.emplace_back(name, ino);
    impl->nodes[parent - 1].nlink++;
    impl->children[ChildKey(parent, name)] = ino;
    return ino;
  };
  auto link_name = [&](const std::string& path, uint64_t ino) {
    const size_t slash = path.rfind('/');
    const uint64_t parent = dir_for(slash == std::string::npos ? "" : path.substr(0, slash));
    const std::string name = slash == std::string::npos ? path : path.substr(slash + 1);
    const std::string key = ChildKey(parent, name);
    if (impl->children.count(key)) return;  // a directory of the same name came first
    impl->nodes[parent - 1].children.emplace_back(name, ino);
    impl->children[key] = ino;
  };

  // Files and symlinks first, then hard links to them (only when their target is permitted).
  std::vector<std::string> sorted(permitted.begin(), permitted.end());
  std::sort(sorted.begin(), sorted.end());
  std::unordered_map<std::string, uint64_t> file_inode;
  for (const std::string& path : sorted) {
    auto it = last.find(path);
    if (it == last.end()) continue;
    const capsule::FileEntry& e = *it->second;
    Node n;
    n.mode = e.mode & 01777;  // as sealed, without setuid or setgid (the mount is read-only)
    n.mtime = e.mtime;
    if (e.type == Type::kFile) {
      if (e.offset > m.archive_size || e.size > m.archive_size - e.offset) {
        return absl::DataLossError("file index entry points outside the archive");
      }
      n.type = Node::Type::kFile;
      n.size = e.size;
      const uint64_t ino = add_node(n, e.offset);
      file_inode[path] = ino;
      link_name(path, ino);
    } else if (e.type == Type::kSymlink) {
      n.type = Node::Type::kSymlink;
      n.mode = 0777;
      n.link_target = e.link_target;
      n.size = e.link_target.size();
      link_name(path, add_node(n, 0));
    }
  }
  for (const std::string& path : sorted) {
    auto it = last.find(path);
    if (it == last.end() || it->second->type != Type::kHardlink) continue;
    // Follow the chain to a file; every name on it must be permitted.
    const capsule::FileEntry* e = it->second;
    bool ok = true;
    for (int hops = 0; e->type == Type::kHardlink; ++hops) {
      auto next = last.find(e->link_target);
      if (hops == 8 || next == last.end() || permitted.count(e->link_target) == 0) {
        ok = false;
        break;
      }
      e = next->second;
    }
    if (!ok || e->type != Type::kFile) continue;
    auto target = file_inode.find(e->path);
    if (target == file_inode.end()) continue;
    impl->nodes[target->second - 1].nlink++;
    link_name(path, target->second);
  }
  for (Node& n : impl->nodes) std::sort(n.children.begin(), n.children.end());

  impl->capsule = std::move(capsule);
  if (options.read_ahead_chunks > 0) {
    const int threads = std::min(capsule::ResolveThreads(options.threads), 16);
    Impl* raw = impl.get();
    for (int i = 0; i < threads; ++i) raw->workers.emplace_back([raw] { raw->AheadWorker(); });
  }
  return std::unique_ptr<MountedCapsule>(new MountedCapsule(std::move(impl)));
}

const MountedCapsule::Node* MountedCapsule::Get(uint64_t ino) const {
  if (ino == 0 || ino > impl_->nodes.size()) return nullptr;
  return &impl_->nodes[ino - 1];
}

const MountedCapsule::Node* MountedCapsule::Lookup(uint64_t parent, std::string_view name) const {
  auto it = impl_->children.find(ChildKey(parent, name));
  return it == impl_->children.end() ? nullptr : Get(it->second);
}

void MountedCapsule::CountOpen(uint64_t ino) {
  impl_->opens.fetch_add(1);
  std::lock_guard<std::mutex> lock(impl_->opened_mu);
  impl_->opened.insert(ino);
}

std::vector<uint64_t> MountedCapsule::FilesOpened() const {
  std::lock_guard<std::mutex> lock(impl_->opened_mu);
  return std::vector<uint64_t>(impl_->opened.begin(), impl_->opened.end());
}

absl::StatusOr<MountedCapsule::Slices> MountedCapsule::ReadSlices(uint64_t ino, uint64_t offset,
                                                                   size_t max, int64_t now,
                                                                   bool sequential) {
  if (now >= impl_->not_after) {
    return absl::PermissionDeniedError("the policy's time window has closed");
  }
  const Node* n = Get(ino);
  if (n == nullptr || n->type != Node::Type::kFile) return absl::NotFoundError("not a file");
  impl_->CountRead(ino);
  Slices out;
  if (offset >= n->size) return out;
  const size_t len = static_cast<size_t>(std::min<uint64_t>(max, n->size - offset));
  const uint64_t chunk_size = impl_->capsule->reader_->geometry().chunk_size;
  const uint64_t begin = impl_->payload_offset[ino - 1] + offset;
  const uint64_t end = begin + len;
  // Read-ahead is queued before this read's own chunks are loaded, so that the workers decrypt
  // the next chunks while this thread decrypts the current one.
  if (sequential && impl_->options.read_ahead_chunks > 0) {
    const uint64_t file_end = impl_->payload_offset[ino - 1] + n->size;
    const uint64_t next = end / chunk_size + (end % chunk_size == 0 ? 0 : 1);
    const uint64_t last_needed = (file_end - 1) / chunk_size;
    if (next <= last_needed && end < file_end) {
      impl_->ReadAhead(next, std::min<uint64_t>(last_needed,
                                                next + impl_->options.read_ahead_chunks - 1));
    }
  }
  for (uint64_t i = begin / chunk_size; i * chunk_size < end; ++i) {
    BUNKER_ASSIGN_OR_RETURN(ChunkPtr chunk, impl_->GetChunk(i));
    const uint64_t chunk_begin = i * chunk_size;
    const uint64_t lo = std::max(begin, chunk_begin) - chunk_begin;
    const uint64_t hi = std::min<uint64_t>(end, chunk_begin + chunk->size) - chunk_begin;
    if (hi <= lo) return absl::DataLossError("file extends past the payload");
    out.spans_.push_back(chunk->plain().subspan(lo, hi - lo));
    out.size_ += hi - lo;
    out.holds_.push_back(std::move(chunk));
  }
  impl_->bytes_read.fetch_add(out.size_);
  return out;
}

absl::StatusOr<size_t> MountedCapsule::Read(uint64_t ino, uint64_t offset,
                                            absl::Span<uint8_t> out, int64_t now,
                                            bool sequential) {
  BUNKER_ASSIGN_OR_RETURN(Slices slices, ReadSlices(ino, offset, out.size(), now, sequential));
  size_t done = 0;
  for (absl::Span<const uint8_t> s : slices.spans()) {
    std::copy(s.begin(), s.end(), out.begin() + done);
    done += s.size();
  }
  return done;
}

int64_t MountedCapsule::not_after() const { return impl_->not_after; }
const std::string& MountedCapsule::capsule_id() const { return impl_->id; }
size_t MountedCapsule::node_count() const { return impl_->nodes.size(); }

MountedCapsule::Usage MountedCapsule::usage() const {
  Usage u;
  u.opens = impl_->opens.load();
  u.bytes_read = impl_->bytes_read.load();
  std::lock_guard<std::mutex> lock(impl_->opened_mu);
  u.files_opened = impl_->opened.size();
  return u;
}

absl::Status MountedCapsule::RecordEnd(const std::string& why, int64_t started,
                                       int64_t now) const {
  if (!impl_->facts || !impl_->record || impl_->identity == nullptr) return absl::OkStatus();
  const Usage u = usage();
  verifier::AuditRecord rec = *impl_->record;
  rec.time = now;
  rec.event = "mount-ended";
  rec.decision = "permit";
  rec.uses = 0;
  rec.rules.clear();
  rec.reasons = {absl::StrCat("ended: ", why.substr(0, 200)),
                 absl::StrCat("files opened: ", u.files_opened, " (opens: ", u.opens, ")"),
                 absl::StrCat("bytes read: ", u.bytes_read),
                 absl::StrCat("duration: ", std::max<int64_t>(0, now - started), " s")};
  return verifier::RecordSiteEvent(*impl_->facts, *impl_->identity, rec);
}

}  // namespace bunker::site
