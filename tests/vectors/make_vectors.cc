// Generates spec/vectors/: valid and deliberately broken capsules, each with its expected
// outcome in vectors.txt. Run via `make vectors`; the output is committed and checked by
// tests/vectors/vectors_test.cc. The keys it writes are for tests only. Over 500 lines on purpose:
// one generator function per vector family, in the order FORMAT.md presents the rules.
#include <archive.h>
#include <archive_entry.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <clocale>
#include <cstring>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <functional>
#include <string>
#include <vector>

#include <sodium.h>

#include "capsule/archive_builder.h"
#include "capsule/file_index.h"
#include "capsule/manifest.h"
#include "capsule/io.h"
#include "capsule/key_files.h"
#include "capsule/tamper_for_testing.h"
#include "capsule/writer.h"
#include "crypto/keys.h"

namespace bunker::capsule {
namespace {

constexpr uint32_t kChunk = 4096;
constexpr int64_t kCreatedAt = 1790000000;  // 2026-09-21T14:13:20Z

[[noreturn]] void Die(const std::string& what, const absl::Status& s = absl::OkStatus()) {
  std::fprintf(stderr, "make_vectors: %s %s\n", what.c_str(), s.ToString().c_str());
  std::exit(1);
}

template <typename T>
T Check(absl::StatusOr<T> v, const std::string& what) {
  if (!v.ok()) Die(what, v.status());
  return std::move(*v);
}

void Put(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  if (!f) Die("cannot write " + path);
}

void PutText(const std::string& path, const std::string& text) {
  Put(path, std::vector<uint8_t>(text.begin(), text.end()));
}

int Remove(const char* p, const struct stat*, int, struct FTW*) { return ::remove(p); }

struct Keys {
  crypto::Identity issuer, alice, mallory;
};

// Seals `feed`'s payload with the low-level writer (no archive validation: the point of the
// malicious-archive vectors is that the reader must not trust the sealer).
std::vector<uint8_t> SealWith(const Keys& k, const std::function<void(CapsuleWriter*)>& feed,
                              crypto::Suite suite = crypto::Suite::kAes256Gcm,
                              const crypto::Identity* issuer = nullptr,
                              const crypto::Identity* recipient = nullptr,
                              uint64_t index_entries = 0) {
  WriterOptions o;
  o.issuer = issuer != nullptr ? issuer : &k.issuer;
  o.recipients = {(recipient != nullptr ? recipient : &k.alice)->public_identity()};
  o.chunk_size = kChunk;
  o.suite = suite;
  o.threads = 1;
  o.created_at = kCreatedAt;
  MemorySink sink;
  auto w = Check(CapsuleWriter::Create(std::move(o), &sink), "writer");
  feed(w.get());
  Check(w->Finish(index_entries), "finish");
  return sink.bytes;
}

// A raw tar stream built with libarchive's writer, which does not police paths.
struct RawEntry {
  std::string path;
  unsigned type;
  std::string body;  // contents, or link target
  unsigned perm = 0644;
  bool hardlink = false;
  char typeflag = 0;       // when set, written over the entry's ustar typeflag
  uint64_t size_field = 0; // when set, written over the entry's ustar size field
};

// A ustar header patched after libarchive wrote it: typeflag and/or size, checksum redone.
void PatchHeader(std::vector<uint8_t>& tar, size_t at, char typeflag, uint64_t size) {
  uint8_t* h = tar.data() + at;
  if (typeflag != 0) h[156] = static_cast<uint8_t>(typeflag);
  if (size != 0) {
    char field[32];
    std::snprintf(field, sizeof field, "%011llo", static_cast<unsigned long long>(size));
    std::memcpy(h + 124, field, 12);  // 11 octal digits and the NUL
  }
  std::memset(h + 148, ' ', 8);
  unsigned sum = 0;
  for (int i = 0; i < 512; ++i) sum += h[i];
  std::snprintf(reinterpret_cast<char*>(h + 148), 8, "%06o", sum);
}

// A tar built with libarchive's writer (which does not police paths), unblocked, and the file
// index that describes it (FORMAT.md "File index"): offsets are where each file's data is.
struct Tar {
  std::vector<uint8_t> bytes;
  std::vector<FileEntry> index;
  std::vector<uint8_t> IndexBytes() const {
    std::vector<uint8_t> out;
    for (const FileEntry& e : index) {
      const std::vector<uint8_t> r = EncodeIndexRecord(e);
      out.insert(out.end(), r.begin(), r.end());
    }
    return out;
  }
};

Tar BuildTar(const std::vector<RawEntry>& entries) {
  Tar t;
  std::vector<uint8_t>& out = t.bytes;
  struct archive* a = archive_write_new();
  archive_write_set_format_pax_restricted(a);
  archive_write_set_bytes_per_block(a, 0);
  archive_write_open2(
      a, &out, nullptr,
      [](struct archive*, void* c, const void* b, size_t n) -> la_ssize_t {
        auto* v = static_cast<std::vector<uint8_t>*>(c);
        v->insert(v->end(), static_cast<const uint8_t*>(b), static_cast<const uint8_t*>(b) + n);
        return static_cast<la_ssize_t>(n);
      },
      nullptr, nullptr);
  std::vector<std::pair<size_t, const RawEntry*>> patches;
  for (const RawEntry& r : entries) {
    struct archive_entry* e = archive_entry_new();
    archive_entry_set_pathname(e, r.path.c_str());
    archive_entry_set_filetype(e, r.type);
    archive_entry_set_perm(e, r.perm);
    archive_entry_set_mtime(e, kCreatedAt, 0);
    if (r.hardlink) {
      archive_entry_set_hardlink(e, r.body.c_str());
    } else if (r.type == AE_IFLNK) {
      archive_entry_set_symlink(e, r.body.c_str());
    } else if (r.type == AE_IFREG) {
      archive_entry_set_size(e, static_cast<la_int64_t>(r.body.size()));
    }
    archive_write_header(a, e);
    const uint64_t data_at = static_cast<uint64_t>(archive_filter_bytes(a, -1));
    if (r.typeflag != 0 || r.size_field != 0) patches.push_back({data_at - 512, &r});
    if (r.type == AE_IFREG && !r.hardlink) archive_write_data(a, r.body.data(), r.body.size());
    archive_entry_free(e);
    FileEntry f;
    f.path = r.path;
    f.mode = r.perm & 0777;
    f.mtime = kCreatedAt;
    if (r.hardlink) {
      f.type = FileEntry::Type::kHardlink;
      f.link_target = r.body;
    } else if (r.type == AE_IFDIR) {
      f.type = FileEntry::Type::kDirectory;
      while (!f.path.empty() && f.path.back() == '/') f.path.pop_back();
    } else if (r.type == AE_IFLNK) {
      f.type = FileEntry::Type::kSymlink;
      f.link_target = r.body;
    } else {
      f.size = r.body.size();
      f.offset = data_at;
      f.sha256 = crypto::Sha256::Hash(r.body);
    }
    t.index.push_back(f);
  }
  archive_write_close(a);
  archive_write_free(a);
  for (const auto& [at, r] : patches) PatchHeader(out, at, r->typeflag, r->size_field);
  for (const FileEntry& f : t.index) {
    if (f.type == FileEntry::Type::kFile && f.size > 0 &&
        crypto::Sha256::Hash(absl::MakeConstSpan(out.data() + f.offset, f.size)) != f.sha256) {
      Die("index offset of " + f.path + " does not point at its data");
    }
  }
  return t;
}

std::vector<uint8_t> RawTar(const std::vector<RawEntry>& entries) {
  return BuildTar(entries).bytes;
}

// Seals `archive` followed by `index` (indexEntries = `entries`).
std::vector<uint8_t> SealPayload(const Keys& k, const std::vector<uint8_t>& archive,
                                 const std::vector<uint8_t>& index, uint64_t entries) {
  return SealWith(
      k,
      [&](CapsuleWriter* w) {
        if (!w->Append(archive).ok()) Die("append");
        w->MarkArchiveEnd();
        if (!w->Append(index).ok()) Die("append");
      },
      crypto::Suite::kAes256Gcm, nullptr, nullptr, entries);
}

std::vector<uint8_t> SealTar(const Keys& k, const Tar& t) {
  return SealPayload(k, t.bytes, t.IndexBytes(), t.index.size());
}

// Replaces the signature (and, when given, the issuer's signing key) of `capsule`'s manifest
// with chosen bytes: an Ed25519 signature that a lax verifier would accept.
std::vector<uint8_t> WithSignature(const std::vector<uint8_t>& capsule,
                                   const std::function<void(Manifest&)>& mutate,
                                   const std::function<std::array<uint8_t, 64>(
                                       const std::vector<uint8_t>& message,
                                       const Manifest& m)>& sign) {
  testing::Parts p = Check(testing::Split(capsule), "split");
  Manifest m = Check(DecodeManifest(p.manifest), "decode");
  mutate(m);
  p.manifest = Check(EncodeManifest(m), "encode");
  const std::array<uint8_t, 64> sig = sign(SignatureInput(p.header, p.manifest), m);
  p.signature.assign(sig.begin(), sig.end());
  StoreBigEndian64(p.manifest.size(), p.footer.data());
  return testing::Join(p);
}

// A manifest with other bytes, validly signed by `signer` (a non-canonical encoding).
std::vector<uint8_t> ResignBytes(const std::vector<uint8_t>& capsule,
                                 const crypto::Identity& signer,
                                 const std::function<void(std::vector<uint8_t>&)>& edit) {
  testing::Parts p = Check(testing::Split(capsule), "split");
  edit(p.manifest);
  const auto sig = signer.Sign(SignatureInput(p.header, p.manifest));
  p.signature.assign(sig.begin(), sig.end());
  StoreBigEndian64(p.manifest.size(), p.footer.data());
  return testing::Join(p);
}

// Ed25519 scalar helpers (libsodium): x mod L for 32 little-endian bytes; k = H(R||A||M) mod L.
std::array<uint8_t, 32> Reduce32(const uint8_t* x) {
  uint8_t wide[64] = {0};
  std::memcpy(wide, x, 32);
  std::array<uint8_t, 32> out;
  crypto_core_ed25519_scalar_reduce(out.data(), wide);
  return out;
}
std::array<uint8_t, 32> Challenge(const uint8_t* r, const uint8_t* a,
                                  const std::vector<uint8_t>& msg) {
  uint8_t h[64];
  crypto_hash_sha512_state st;
  crypto_hash_sha512_init(&st);
  crypto_hash_sha512_update(&st, r, 32);
  crypto_hash_sha512_update(&st, a, 32);
  crypto_hash_sha512_update(&st, msg.data(), msg.size());
  crypto_hash_sha512_final(&st, h);
  std::array<uint8_t, 32> k;
  crypto_core_ed25519_scalar_reduce(k.data(), h);
  return k;
}

std::vector<uint8_t> SealRawTar(const Keys& k, const std::vector<RawEntry>& entries) {
  const std::vector<uint8_t> tar = RawTar(entries);
  return SealWith(k, [&](CapsuleWriter* w) {
    if (!w->Append(tar).ok()) Die("append");
    w->MarkArchiveEnd();
  });
}

std::string Sha256Hex(const std::string& s) { return crypto::ToHex(crypto::Sha256::Hash(s)); }

}  // namespace
}  // namespace bunker::capsule

int main(int argc, char** argv) {
  using namespace bunker::capsule;
  using bunker::crypto::Identity;
  if (argc == 4 && std::string(argv[1]) == "--keys") {
    // make_vectors --keys SECRETS OUTPUT_DIR: the CLI's key files (.key 0600, .pub) for the
    // published test-only secrets (`make vectors-keys`).
    std::ifstream in(argv[2]);
    std::string name, seed, scalar;
    ::mkdir(argv[3], 0700);
    auto hex = [](const std::string& h) {
      std::vector<uint8_t> v;
      for (size_t i = 0; i + 1 < h.size(); i += 2) {
        v.push_back(static_cast<uint8_t>(std::stoi(h.substr(i, 2), nullptr, 16)));
      }
      return v;
    };
    int written = 0;
    for (std::string line; std::getline(in, line);) {
      if (line.empty() || line[0] == '#') continue;
      std::istringstream fields(line);
      if (!(fields >> name >> seed >> scalar)) Die("bad line in " + std::string(argv[2]));
      const Identity id = Check(Identity::FromSecrets(hex(seed), hex(scalar)), "identity");
      const std::string base = std::string(argv[3]) + "/" + name;
      ::unlink((base + ".key").c_str());
      ::unlink((base + ".pub").c_str());
      const absl::Status s = WriteIdentityFiles(id, base);
      if (!s.ok()) Die("keys", s);
      ++written;
    }
    if (written == 0) Die("no secrets in " + std::string(argv[2]));
    std::printf("wrote %d test-only identities to %s (NEVER trust them)\n", written, argv[3]);
    return 0;
  }
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_vectors OUTPUT_DIR | make_vectors --keys SECRETS DIR\n");
    return 2;
  }
  std::setlocale(LC_CTYPE, "C.UTF-8");
  const std::string out = argv[1];
  ::nftw(out.c_str(), Remove, 16, FTW_DEPTH | FTW_PHYS);
  ::mkdir(out.c_str(), 0755);
  ::mkdir((out + "/keys").c_str(), 0755);

  // The secrets are published in hex (keys/secrets.txt), which is what an independent reader
  // needs; the .key files the CLI reads are made from them, mode 0600, by `make vectors-keys`
  // (git cannot keep a 0600 mode). Only the public files are committed as PEM.
  std::string secrets =
      "# Test-only identities of spec/vectors (FORMAT.md \"Test vectors\"). NEVER trust them.\n"
      "# NAME ED25519-SEED-HEX X25519-SCALAR-HEX\n";
  std::vector<Identity> ids;
  std::array<uint8_t, 32> issuer_seed{};
  for (const char* name : {"issuer", "alice", "mallory"}) {
    std::array<uint8_t, 32> seed, scalar;
    randombytes_buf(seed.data(), seed.size());
    randombytes_buf(scalar.data(), scalar.size());
    if (std::string(name) == "issuer") issuer_seed = seed;
    ids.push_back(Check(Identity::FromSecrets(seed, scalar), "identity"));
    secrets += std::string(name) + " " + bunker::crypto::ToHex(seed) + " " +
               bunker::crypto::ToHex(scalar) + "\n";
    PutText(out + "/keys/" + name + ".pub", ids.back().public_identity().ToPem());
  }
  PutText(out + "/keys/secrets.txt", secrets);
  Keys k{std::move(ids[0]), std::move(ids[1]), std::move(ids[2])};

  // The sample dataset.
  char tmpl[] = "/tmp/bunker-vectors-XXXXXX";
  const std::string tmp = ::mkdtemp(tmpl);
  const std::string data = tmp + "/data";
  ::mkdir(data.c_str(), 0755);
  ::mkdir((data + "/train").c_str(), 0755);
  const std::string hello = "hello, bunker\n";
  std::string csv = "id,value\n";
  for (int i = 0; i < 400; ++i) csv += std::to_string(i) + "," + std::to_string(i * i) + "\n";
  std::string blob;
  for (int i = 0; i < 10000; ++i) blob.push_back(static_cast<char>((i * 131) & 0xff));
  PutText(data + "/hello.txt", hello);
  PutText(data + "/train/numbers.csv", csv);
  PutText(data + "/train/blob.bin", blob);
  ::symlink("hello.txt", (data + "/link").c_str());
  std::vector<std::string> tree_lines = {
      "dir - train", "file " + Sha256Hex(hello) + " hello.txt",
      "file " + Sha256Hex(blob) + " train/blob.bin", "file " + Sha256Hex(csv) + " train/numbers.csv",
      "symlink hello.txt link"};
  std::sort(tree_lines.begin(), tree_lines.end());
  std::string tree;
  for (const std::string& l : tree_lines) tree += l + "\n";

  // The sample dataset sealed exactly as `capsule seal` does.
  auto seal_sample = [&](bunker::crypto::Suite suite, const Identity* issuer,
                         const Identity* recipient) {
    WriterOptions o;
    o.issuer = issuer;
    o.recipients = {recipient->public_identity()};
    o.chunk_size = kChunk;
    o.suite = suite;
    o.threads = 1;
    o.created_at = kCreatedAt;
    MemorySink sink;
    auto w = Check(CapsuleWriter::Create(std::move(o), &sink), "writer");
    auto stats = Check(BuildPayload({DatasetSource::Kind::kPath, data}, w.get()), "build");
    Check(w->Finish(stats.entries()), "finish");
    return sink.bytes;
  };

  std::string listing =
      "# Bunker capsule test vectors (spec/FORMAT.md \"Test vectors\").\n"
      "# Each line: FILE EXPECTED DESCRIPTION. EXPECTED is `ok` or the error class a reader\n"
      "# must report: DATA_LOSS (corrupt/tampered), PERMISSION_DENIED (trust or recipient),\n"
      "# INVALID_ARGUMENT (unsupported or unsafe content). A reader opens each capsule trusting\n"
      "# keys/issuer.pub, unlocks it as alice (keys/secrets.txt), reads the file index and\n"
      "# extracts the archive against it; on any failure no file may be released, and the class\n"
      "# follows FORMAT.md \"Error precedence\". `ok` vectors extract to NAME.tree if present,\n"
      "# else to sample.tree.\n";
  auto add = [&](const std::string& name, const std::vector<uint8_t>& bytes,
                 const std::string& expected, const std::string& why) {
    Put(out + "/" + name + ".capsule", bytes);
    listing += name + ".capsule " + expected + " " + why + "\n";
  };

  const auto basic = seal_sample(bunker::crypto::Suite::kAes256Gcm, &k.issuer, &k.alice);
  add("valid_aes256gcm", basic, "ok", "the sample dataset, AES-256-GCM, 4 KiB chunks");
  add("valid_chacha20poly1305",
      seal_sample(bunker::crypto::Suite::kChaCha20Poly1305, &k.issuer, &k.alice), "ok",
      "the sample dataset, ChaCha20-Poly1305");
  PutText(out + "/sample.tree", tree);

  const testing::Parts p = Check(testing::Split(basic), "split");
  const uint64_t chunks_at = kHeaderSize;
  const uint64_t table_at = chunks_at + p.chunks.size();
  const uint64_t manifest_at = table_at + p.table.size();
  const uint64_t sig_at = manifest_at + p.manifest.size();
  auto flip = [&](uint64_t at) {
    auto b = basic;
    b[at] ^= 0x01;
    return b;
  };
  add("flip_magic", flip(1), "DATA_LOSS", "a flipped byte in the magic");
  {
    auto b = basic;
    b[9] = 2;
    add("other_version", b, "INVALID_ARGUMENT", "header version 2");
  }
  add("flip_reserved", flip(12), "DATA_LOSS", "a non-zero reserved header byte");
  add("flip_chunk_first", flip(chunks_at + 5), "DATA_LOSS", "a flipped byte in chunk 0");
  add("flip_chunk_tag", flip(table_at - 1), "DATA_LOSS", "a flipped byte in the last chunk's tag");
  add("flip_table", flip(table_at + 40), "DATA_LOSS", "a flipped byte in the chunk table");
  add("flip_manifest", flip(manifest_at + p.manifest.size() / 2), "DATA_LOSS",
      "a flipped byte in the manifest");
  add("flip_signature", flip(sig_at + 10), "DATA_LOSS", "a flipped byte in the signature");
  add("flip_footer_length", flip(basic.size() - 9), "DATA_LOSS",
      "a flipped bit in the footer's manifest length");
  add("flip_end_magic", flip(basic.size() - 1), "DATA_LOSS", "a flipped byte in the end magic");
  add("truncated_mid_chunk",
      std::vector<uint8_t>(basic.begin(), basic.begin() + chunks_at + 1000), "DATA_LOSS",
      "cut inside chunk 0");
  add("truncated_at_chunk_boundary",
      std::vector<uint8_t>(basic.begin(),
                           basic.begin() + static_cast<std::ptrdiff_t>(chunks_at + kChunk + 16)),
      "DATA_LOSS", "cut right after chunk 0");
  add("truncated_footer", std::vector<uint8_t>(basic.begin(), basic.end() - 1), "DATA_LOSS",
      "last byte missing");
  {
    auto b = basic;
    b.push_back(0);
    add("appended_byte", b, "DATA_LOSS", "one byte appended");
  }
  {
    testing::Parts q = p;
    q.chunks.resize(kChunk + 16);  // keep chunk 0 only, keep table/manifest/signature
    add("chunks_removed", testing::Join(q), "DATA_LOSS", "all chunks after chunk 0 removed");
  }
  {
    testing::Parts q = p;
    std::swap_ranges(q.chunks.begin(), q.chunks.begin() + kChunk + 16,
                     q.chunks.begin() + kChunk + 16);
    add("chunks_swapped", testing::Join(q), "DATA_LOSS", "chunks 0 and 1 swapped");
  }
  {
    testing::Parts q = p;
    std::copy(q.chunks.begin(), q.chunks.begin() + kChunk + 16, q.chunks.begin() + kChunk + 16);
    add("chunk_duplicated", testing::Join(q), "DATA_LOSS", "chunk 0 copied over chunk 1");
  }
  {
    const auto other = seal_sample(bunker::crypto::Suite::kAes256Gcm, &k.issuer, &k.alice);
    testing::Parts o = Check(testing::Split(other), "split");
    testing::Parts q = p;
    q.manifest = o.manifest;
    q.signature = o.signature;
    q.footer = o.footer;
    add("manifest_from_other_capsule", testing::Join(q), "DATA_LOSS",
        "manifest and signature of another capsule of the same data and size");
    auto om = Check(DecodeManifest(o.manifest), "decode");
    add("recipient_moved_resigned",
        Check(testing::Resign(basic, k.issuer,
                              [&](Manifest& m) { m.recipients[0] = om.recipients[0]; }),
              "resign"),
        "DATA_LOSS", "alice's entry from another capsule, re-signed by the issuer");
  }
  add("policy_swapped_resigned",
      Check(testing::Resign(basic, k.issuer, [](Manifest& m) { m.policy = "{\"version\": 1}"; }),
            "resign"),
      "DATA_LOSS", "policy changed after sealing, re-signed by the issuer");
  add("suite_downgraded_resigned",
      Check(testing::Resign(basic, k.issuer,
                            [](Manifest& m) { m.suite = bunker::crypto::Suite::kChaCha20Poly1305; }),
            "resign"),
      "DATA_LOSS", "suite changed after sealing, re-signed by the issuer");
  add("forged_recipient_resigned",
      Check(testing::Resign(basic, k.issuer,
                            [&](Manifest& m) {
                              const auto other = bunker::crypto::SecretBytes::Random(kDataKeySize);
                              auto w = bunker::crypto::WrapKey(k.alice.public_identity().box_key,
                                                               other, WrapContext(m));
                              m.recipients[0].wrapped = *w;
                            }),
            "resign"),
      "DATA_LOSS", "alice's entry wraps a different key (fails the key commitment)");
  {
    auto b = basic;
    StoreBigEndian64(uint64_t{1} << 40, b.data() + b.size() - kFooterSize);
    add("oversized_manifest_length", b, "DATA_LOSS", "footer claims a 1 TiB manifest");
  }
  add("untrusted_issuer", seal_sample(bunker::crypto::Suite::kAes256Gcm, &k.mallory, &k.alice),
      "PERMISSION_DENIED", "valid capsule signed by mallory, who is not trusted");
  add("not_for_alice", seal_sample(bunker::crypto::Suite::kAes256Gcm, &k.issuer, &k.mallory),
      "PERMISSION_DENIED", "valid capsule sealed for mallory only");
  add("path_dotdot", SealRawTar(k, {{"../evil.txt", AE_IFREG, "x"}}), "INVALID_ARGUMENT",
      "archive entry ../evil.txt");
  add("path_absolute", SealRawTar(k, {{"/tmp/evil.txt", AE_IFREG, "x"}}), "INVALID_ARGUMENT",
      "archive entry with an absolute path");
  add("path_inner_dotdot", SealRawTar(k, {{"a/../../evil.txt", AE_IFREG, "x"}}),
      "INVALID_ARGUMENT", "archive entry a/../../evil.txt");
  add("symlink_then_file",
      SealRawTar(k, {{"escape", AE_IFLNK, "/tmp"}, {"escape/evil.txt", AE_IFREG, "x"}}),
      "INVALID_ARGUMENT", "symlink to /tmp followed by a file written through it");
  add("symlink_relative_escape", SealRawTar(k, {{"up", AE_IFLNK, "../../.."}}),
      "INVALID_ARGUMENT", "symlink whose target climbs out of the tree");
  add("hardlink_escape",
      SealRawTar(k, {{"h", AE_IFREG, "/etc/passwd", 0644, /*hardlink=*/true}}),
      "INVALID_ARGUMENT", "hard link to /etc/passwd");
  add("device_node", SealRawTar(k, {{"dev", AE_IFCHR, ""}}), "INVALID_ARGUMENT",
      "character device entry");
  add("setuid_file", SealRawTar(k, {{"suid", AE_IFREG, "x", 04755}}), "INVALID_ARGUMENT",
      "regular file with the setuid bit");

  // ---- Added for issue 10 ("one truth"): every rule gets a vector. ----
  auto tree_of = [](std::vector<std::string> lines) {
    std::sort(lines.begin(), lines.end());
    std::string t;
    for (const std::string& l : lines) t += l + "\n";
    return t;
  };
  auto add_tree = [&](const std::string& name, const std::vector<uint8_t>& bytes,
                      const std::string& tree_text, const std::string& why) {
    add(name, bytes, "ok", why);
    PutText(out + "/" + name + ".tree", tree_text);
  };

  // Empty payloads and archives (FORMAT.md "Archive").
  add("empty_payload", SealPayload(k, {}, {}, 0), "DATA_LOSS",
      "payloadSize 0: no archive at all (not even the end-of-archive marker)");
  add_tree("empty_archive", SealPayload(k, std::vector<uint8_t>(1024, 0), {}, 0), "",
           "an archive of only the end-of-archive marker, empty index: an empty tree");

  // The sample dataset as a hand-built archive whose payload fills its last chunk exactly.
  const std::vector<RawEntry> sample_entries = {{"train/", AE_IFDIR, "", 0755},
                                                {"hello.txt", AE_IFREG, hello},
                                                {"train/numbers.csv", AE_IFREG, csv},
                                                {"train/blob.bin", AE_IFREG, blob},
                                                {"link", AE_IFLNK, "hello.txt", 0777}};
  {
    Tar t = BuildTar(sample_entries);
    const std::vector<uint8_t> index = t.IndexBytes();
    // Zero blocks after the end-of-archive marker are part of the archive (not inspected, but
    // authenticated): they make the payload a whole number of chunks.
    while ((t.bytes.size() + index.size()) % kChunk != 0) t.bytes.push_back(0);
    const auto b = SealPayload(k, t.bytes, index, t.index.size());
    add("full_last_chunk", b, "ok",
        "the sample dataset; the payload is a multiple of the chunk size (a full last chunk)");
  }
  add_tree("hardlink_ok",
           SealTar(k, BuildTar({{"hello.txt", AE_IFREG, hello},
                                {"again.txt", AE_IFREG, "hello.txt", 0644, /*hardlink=*/true}})),
           tree_of({"file " + Sha256Hex(hello) + " hello.txt",
                    "file " + Sha256Hex(hello) + " again.txt"}),
           "a hard link (size 0) to an earlier regular file, listed in the index");

  // Raw tar headers (FORMAT.md "Entries").
  {
    RawEntry z{"z.bin", AE_IFREG, "data"};
    z.typeflag = 'Z';
    add("tar_unknown_type", SealTar(k, BuildTar({z})), "INVALID_ARGUMENT",
        "an entry of tar typeflag 'Z' (libarchive would read it as a regular file)");
    RawEntry h{"h", AE_IFREG, "hello.txt", 0644, true};
    h.size_field = 5;
    add("hardlink_with_size", SealTar(k, BuildTar({{"hello.txt", AE_IFREG, "hello"}, h})),
        "INVALID_ARGUMENT", "a hard link whose ustar size field is 5");
    // No index: an index cannot list it (a symlink record needs a target), and the archive's
    // own rules are checked before the agreement with the index.
    add("symlink_no_target", SealRawTar(k, {{"l", AE_IFLNK, "", 0777}}), "INVALID_ARGUMENT",
        "a symbolic link with an empty target (and no index)");
  }

  // The file index (FORMAT.md "File index") and its agreement with the archive.
  {
    const Tar t = BuildTar({{"a.txt", AE_IFREG, "alpha\n"}});
    const std::vector<uint8_t> good = t.IndexBytes();
    auto with_index = [&](const std::vector<uint8_t>& index, uint64_t entries) {
      return SealPayload(k, t.bytes, index, entries);
    };
    auto record = [&](const std::function<void(FileEntry&)>& edit) {
      FileEntry e = t.index[0];
      edit(e);
      return EncodeIndexRecord(e);
    };
    add("index_missing", with_index({}, 0), "DATA_LOSS",
        "indexEntries 0 with a non-empty archive: the archive has an entry the index lacks");
    add("index_len_zero", with_index({0, 0, 0, 0}, 1), "DATA_LOSS", "an index record of length 0");
    {
      auto b = good;
      b[3] = static_cast<uint8_t>(b[3] + 4);
      b.insert(b.end(), 4, 0);
      add("index_len_unaligned", with_index(b, 1), "DATA_LOSS",
          "an index record length that is not a multiple of 8");
    }
    add("index_len_too_big", with_index({0, 1, 0, 8}, 1), "DATA_LOSS",
        "an index record length of 65544");
    {
      auto b = good;
      b.insert(b.end(), {0, 0, 0});
      add("index_trailing_bytes", with_index(b, 1), "DATA_LOSS",
          "3 stray bytes after the last index record");
    }
    add("index_fewer_records", with_index(good, 2), "DATA_LOSS",
        "indexEntries 2 with one record");
    add("index_more_records", with_index(good, 0), "DATA_LOSS",
        "indexEntries 0 with one record");
    {
      auto b = good;
      const uint32_t n = (uint32_t{b[0]} << 24 | uint32_t{b[1]} << 16 | uint32_t{b[2]} << 8 | b[3]);
      b[3] = static_cast<uint8_t>(n + 8);
      b.insert(b.end(), 8, 0);
      add("index_noncanonical", with_index(b, 1), "DATA_LOSS",
          "an index record with an extra zero word (not canonical)");
    }
    add("index_bad_type", with_index(record([](FileEntry& e) {
          e.type = static_cast<FileEntry::Type>(4);
        }), 1),
        "DATA_LOSS", "an index record of type 4");
    add("index_path_not_normalized",
        with_index(record([](FileEntry& e) { e.path = "./a.txt"; }), 1), "DATA_LOSS",
        "an index path that is not in normalized form");
    add("index_dir_with_size",
        with_index(record([](FileEntry& e) {
          e.type = FileEntry::Type::kDirectory;
          e.size = 6;
          e.offset = 0;
        }), 1),
        "DATA_LOSS", "a directory record with size 6 (size and offset are 0 for non-files)");
    add("index_path_mismatch", with_index(record([](FileEntry& e) { e.path = "b.txt"; }), 1),
        "DATA_LOSS", "the index names b.txt where the archive has a.txt");
    add("index_digest_mismatch",
        with_index(record([](FileEntry& e) { e.sha256 = bunker::crypto::Sha256::Hash(std::string("x")); }),
                   1),
        "DATA_LOSS", "the index digest of a.txt is not the digest of its contents");
    {
      auto b = good;
      FileEntry extra;
      extra.path = "b.txt";
      extra.sha256 = bunker::crypto::Sha256::Hash(std::string());
      extra.mode = 0644;
      const auto r = EncodeIndexRecord(extra);
      b.insert(b.end(), r.begin(), r.end());
      add("index_extra_entry", with_index(b, 2), "DATA_LOSS",
          "the index lists b.txt, which the archive does not have");
    }
  }

  // Error precedence (FORMAT.md "Error precedence"): authentication before content.
  {
    const auto b = SealRawTar(k, {{"../evil.txt", AE_IFREG, "x"},
                                  {"big.bin", AE_IFREG, std::string(16000, 'b')}});
    auto c = b;
    c[chunks_at + 2 * (kChunk + 16) + 10] ^= 0x01;
    add("precedence_dotdot_then_corrupt_chunk", c, "DATA_LOSS",
        "../evil.txt in chunk 0 and a corrupt chunk 2: authentication failures win");
  }

  // Ed25519 strictness (FORMAT.md "Signature").
  {
    const std::array<uint8_t, 32> identity = {1};  // the neutral point, order 1
    std::array<uint8_t, 32> identity_noncanonical;   // y = p + 1: the neutral point again
    identity_noncanonical.fill(0xff);
    identity_noncanonical[0] = 0xee;
    identity_noncanonical[31] = 0x7f;
    auto r_identity_s_zero = [&](const std::vector<uint8_t>&, const Manifest&) {
      std::array<uint8_t, 64> sig{};
      std::memcpy(sig.data(), identity.data(), 32);
      return sig;
    };
    add("sig_small_order_key",
        WithSignature(basic, [&](Manifest& m) { m.issuer.sign_key = identity; },
                      r_identity_s_zero),
        "DATA_LOSS",
        "issuer signKey is the neutral point, signature R = neutral point, S = 0 (OpenSSL 3.0 "
        "accepts it)");
    add("sig_noncanonical_key",
        WithSignature(basic, [&](Manifest& m) { m.issuer.sign_key = identity_noncanonical; },
                      r_identity_s_zero),
        "DATA_LOSS", "issuer signKey is a non-canonical encoding (y = p + 1), R = neutral, S = 0");
    add("sig_small_order_r",
        WithSignature(basic, [](Manifest&) {},
                      [&](const std::vector<uint8_t>& msg, const Manifest& m) {
                        // S = k * a: [S]B = [k]A = R + [k]A with R the neutral point, which a
                        // verifier that does not refuse small-order R accepts.
                        uint8_t h[64];
                        crypto_hash_sha512(h, issuer_seed.data(), 32);
                        h[0] &= 248;
                        h[31] &= 127;
                        h[31] |= 64;
                        const auto a = Reduce32(h);
                        const auto kk = Challenge(identity.data(), m.issuer.sign_key.data(), msg);
                        std::array<uint8_t, 64> sig{};
                        std::memcpy(sig.data(), identity.data(), 32);
                        crypto_core_ed25519_scalar_mul(sig.data() + 32, kk.data(), a.data());
                        return sig;
                      }),
        "DATA_LOSS", "the issuer's key, signature R = neutral point (small order), S = k*a");
    add("sig_noncanonical_s",
        WithSignature(basic, [](Manifest&) {},
                      [&](const std::vector<uint8_t>& msg, const Manifest&) {
                        const auto good_sig = k.issuer.Sign(msg);
                        std::array<uint8_t, 64> sig;
                        std::memcpy(sig.data(), good_sig.data(), 64);
                        // S + L, where L = 2^252 + 27742317777372353535851937790883648493.
                        static const uint8_t kL[32] = {
                            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7,
                            0xa2, 0xde, 0xf9, 0xde, 0x14, 0,    0,    0,    0,    0,    0,
                            0,    0,    0,    0,    0,    0,    0,    0,    0,    0x10};
                        unsigned carry = 0;
                        for (int i = 0; i < 32; ++i) {
                          carry += sig[32 + i] + kL[i];
                          sig[32 + i] = static_cast<uint8_t>(carry);
                          carry >>= 8;
                        }
                        return sig;
                      }),
        "DATA_LOSS", "a valid signature with S replaced by S + L (non-canonical S)");
  }

  // Non-canonical manifests with a valid signature (FORMAT.md "Decoding", rule 2).
  add("manifest_trailing_word",
      ResignBytes(basic, k.issuer, [](std::vector<uint8_t>& m) { m.insert(m.end(), 8, 0); }),
      "DATA_LOSS", "a validly signed manifest with an extra zero word at its end");
  add("manifest_nonzero_padding",
      ResignBytes(basic, k.issuer,
                  [](std::vector<uint8_t>& m) {
                    // Root pointer section word 4 (policy) is word 1 + 7 + 4 = 12.
                    uint32_t lo;
                    std::memcpy(&lo, m.data() + 12 * 8, 4);
                    const int32_t offset = static_cast<int32_t>(lo) >> 2;
                    const size_t text = (13 + static_cast<size_t>(offset)) * 8;
                    if ((lo & 3) != 1 || m[text] != 0 || m[text + 1] != 0) Die("policy layout");
                    m[text + 1] = 'x';  // padding after the empty Text's terminator
                  }),
      "DATA_LOSS", "a validly signed manifest whose empty policy Text has a non-zero padding byte");
  PutText(out + "/vectors.txt", listing);
  ::nftw(tmp.c_str(), Remove, 16, FTW_DEPTH | FTW_PHYS);
  std::printf("wrote %s\n", out.c_str());
  return 0;
}
