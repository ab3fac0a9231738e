// Generates spec/vectors/: valid and deliberately broken capsules, each with its expected
// outcome in vectors.txt. Run via `make vectors`; the output is committed and checked by
// tests/vectors/vectors_test.cc. The keys it writes are for tests only.
#include <archive.h>
#include <archive_entry.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <clocale>
#include <cstdio>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "capsule/archive_builder.h"
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
};

std::vector<uint8_t> RawTar(const std::vector<RawEntry>& entries) {
  std::vector<uint8_t> out;
  struct archive* a = archive_write_new();
  archive_write_set_format_pax_restricted(a);
  archive_write_open2(
      a, &out, nullptr,
      [](struct archive*, void* c, const void* b, size_t n) -> la_ssize_t {
        auto* v = static_cast<std::vector<uint8_t>*>(c);
        v->insert(v->end(), static_cast<const uint8_t*>(b), static_cast<const uint8_t*>(b) + n);
        return static_cast<la_ssize_t>(n);
      },
      nullptr, nullptr);
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
    if (r.type == AE_IFREG && !r.hardlink) archive_write_data(a, r.body.data(), r.body.size());
    archive_entry_free(e);
  }
  archive_write_close(a);
  archive_write_free(a);
  return out;
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
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_vectors OUTPUT_DIR\n");
    return 2;
  }
  std::setlocale(LC_CTYPE, "C.UTF-8");
  const std::string out = argv[1];
  ::nftw(out.c_str(), Remove, 16, FTW_DEPTH | FTW_PHYS);
  ::mkdir(out.c_str(), 0755);
  ::mkdir((out + "/keys").c_str(), 0755);

  Keys k{Identity::Generate(), Identity::Generate(), Identity::Generate()};
  for (auto [id, name] : {std::pair<const Identity*, const char*>{&k.issuer, "issuer"},
                          {&k.alice, "alice"},
                          {&k.mallory, "mallory"}}) {
    const absl::Status s = WriteIdentityFiles(*id, out + "/keys/" + name);
    if (!s.ok()) Die("keys", s);
  }

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
      "# keys/issuer.pub, unlocks it with keys/alice.key and extracts it; on any failure no\n"
      "# file may be released. `ok` vectors extract to the tree in sample.tree.\n";
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
  PutText(out + "/vectors.txt", listing);
  ::nftw(tmp.c_str(), Remove, 16, FTW_DEPTH | FTW_PHYS);
  std::printf("wrote %s\n", out.c_str());
  return 0;
}
