// Checks every capsule in spec/vectors/ against its expected outcome in vectors.txt, through
// the full reader path (structure, trust, unlock, authenticated extraction), and that a
// failing vector releases nothing.
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <map>
#include <sstream>

#include "absl/strings/str_split.h"
#include "capsule/extract.h"
#include "capsule/file_index.h"
#include "capsule/io.h"
#include "capsule/key_files.h"
#include "capsule/reader.h"
#include "crypto/sha256.h"
#include "gtest/gtest.h"
#include "tests/temp_dir.h"

namespace bunker::capsule {
namespace {

const std::string kDir = BUNKER_VECTORS_DIR;

struct Vector {
  std::string file, expected, description;
};

std::vector<Vector> LoadVectors() {
  std::ifstream in(kDir + "/vectors.txt");
  std::vector<Vector> out;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::vector<std::string> parts = absl::StrSplit(line, absl::MaxSplits(' ', 2));
    if (parts.size() == 3) out.push_back({parts[0], parts[1], parts[2]});
  }
  return out;
}

std::string CodeName(const absl::Status& s) {
  switch (s.code()) {
    case absl::StatusCode::kOk: return "ok";
    case absl::StatusCode::kDataLoss: return "DATA_LOSS";
    case absl::StatusCode::kPermissionDenied: return "PERMISSION_DENIED";
    case absl::StatusCode::kInvalidArgument: return "INVALID_ARGUMENT";
    default: return absl::StatusCodeToString(s.code());
  }
}

std::vector<uint8_t> FromHex(const std::string& hex) {
  std::vector<uint8_t> out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) {
    out.push_back(static_cast<uint8_t>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  }
  return out;
}

// keys/secrets.txt: "NAME SEED-HEX SCALAR-HEX" lines (the published test-only secrets).
absl::StatusOr<crypto::Identity> VectorIdentity(const std::string& name) {
  std::ifstream in(kDir + "/keys/secrets.txt");
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::vector<std::string> f = absl::StrSplit(line, ' ');
    if (f.size() == 3 && f[0] == name) {
      return crypto::Identity::FromSecrets(FromHex(f[1]), FromHex(f[2]));
    }
  }
  return absl::NotFoundError("no secrets for " + name);
}

// What a conforming reader does (FORMAT.md "Test vectors"), as the gate does it: open, trust,
// unlock, read the file index, then extract the archive, which must agree with the index.
absl::Status OpenAndExtract(const std::string& path, const std::string& dest) {
  auto trust = LoadTrust({kDir + "/keys/issuer.pub"});
  if (!trust.ok()) return trust.status();
  auto alice = VectorIdentity("alice");
  if (!alice.ok()) return alice.status();
  auto file = OpenFile(path);
  if (!file.ok()) return file.status();
  auto reader = CapsuleReader::Open(std::move(*file), *trust);
  if (!reader.ok()) return reader.status();
  auto key = (*reader)->Unlock(*alice);
  if (!key.ok()) return key.status();
  const Manifest& m = (*reader)->manifest();
  std::vector<FileEntry> index;
  {
    auto stream = (*reader)->Stream(**key, m.archive_size, m.payload_size, 2);
    if (!stream.ok()) return stream.status();
    IndexReader entries(stream->get(), m.index_entries);
    while (true) {
      auto e = entries.Next();
      if (!e.ok()) return e.status();
      if (!e->has_value()) break;
      index.push_back(std::move(**e));
    }
  }
  auto stream = (*reader)->Stream(**key, 0, m.payload_size, 2);
  if (!stream.ok()) return stream.status();
  ExtractOptions options;
  options.index = &index;
  return ExtractArchive(stream->get(), dest, options).status();
}

// "file <sha256> path" / "dir - path" / "symlink target path" lines, sorted.
void ListTree(const std::string& root, const std::string& rel, std::vector<std::string>& out) {
  DIR* d = ::opendir((root + "/" + rel).c_str());
  ASSERT_NE(d, nullptr);
  while (struct dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    const std::string r = rel.empty() ? name : rel + "/" + name;
    const std::string full = root + "/" + r;
    struct stat st;
    ::lstat(full.c_str(), &st);
    if (S_ISDIR(st.st_mode)) {
      out.push_back("dir - " + r);
      ListTree(root, r, out);
    } else if (S_ISLNK(st.st_mode)) {
      char buf[4096];
      const ssize_t n = ::readlink(full.c_str(), buf, sizeof buf);
      out.push_back("symlink " + std::string(buf, n > 0 ? static_cast<size_t>(n) : 0) + " " + r);
    } else {
      std::ifstream f(full, std::ios::binary);
      std::stringstream ss;
      ss << f.rdbuf();
      out.push_back("file " + crypto::ToHex(crypto::Sha256::Hash(ss.str())) + " " + r);
    }
  }
  ::closedir(d);
}

std::string TempDir() {
  return bunker::test_temp::MakeTempDir("vectors");
}

// The published secrets are the identities of the published public keys, and give key files
// the CLI accepts once written with mode 0600 (what `make vectors-keys` does).
TEST(VectorsTest, PublishedSecretsMatchThePublicKeysAndMakeUsableKeyFiles) {
  for (const char* name : {"issuer", "alice", "mallory"}) {
    SCOPED_TRACE(name);
    auto id = VectorIdentity(name);
    ASSERT_TRUE(id.ok()) << id.status();
    auto pub = LoadTrust({kDir + "/keys/" + name + ".pub"});
    ASSERT_TRUE(pub.ok()) << pub.status();
    EXPECT_TRUE((*pub)[0] == id->public_identity());
    const std::string d = bunker::test_temp::MakeTempDir("vector-keys");
    ASSERT_TRUE(WriteIdentityFiles(*id, d + "/" + name).ok());
    auto loaded = LoadIdentity(d + "/" + name + ".key");
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    EXPECT_TRUE(loaded->public_identity() == id->public_identity());
  }
  // No private key file is published: git would make it 0644, which the CLI refuses.
  EXPECT_NE(::access((kDir + "/keys/alice.key").c_str(), F_OK), 0);
}

TEST(VectorsTest, ThereAreVectorsOfEveryClass) {
  const auto vectors = LoadVectors();
  std::map<std::string, int> classes;
  for (const auto& v : vectors) ++classes[v.expected];
  EXPECT_GE(vectors.size(), 30u);
  EXPECT_GE(classes["ok"], 2);
  EXPECT_GE(classes["DATA_LOSS"], 15);
  EXPECT_GE(classes["PERMISSION_DENIED"], 2);
  EXPECT_GE(classes["INVALID_ARGUMENT"], 5);
}

std::string ReadText(const std::string& path) {
  std::ifstream f(path);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

TEST(VectorsTest, EveryVectorHasItsExpectedOutcome) {
  for (const Vector& v : LoadVectors()) {
    // An `ok` vector extracts to NAME.tree when there is one, else to sample.tree.
    const std::string own_tree =
        kDir + "/" + v.file.substr(0, v.file.size() - std::string(".capsule").size()) + ".tree";
    const std::string expected_tree =
        ReadText(::access(own_tree.c_str(), F_OK) == 0 ? own_tree : kDir + "/sample.tree");
    SCOPED_TRACE(v.file + " (" + v.description + ")");
    const std::string parent = TempDir();
    const std::string dest = parent + "/out";
    absl::Status s = OpenAndExtract(kDir + "/" + v.file, dest);
    EXPECT_EQ(CodeName(s), v.expected) << s;
    if (v.expected == "ok") {
      std::vector<std::string> lines;
      ListTree(dest, "", lines);
      std::sort(lines.begin(), lines.end());
      std::string got;
      for (const auto& l : lines) got += l + "\n";
      EXPECT_EQ(got, expected_tree);
    } else {
      // Nothing released: no destination and no staging directory left beside it.
      DIR* d = ::opendir(parent.c_str());
      int entries = 0;
      while (struct dirent* e = ::readdir(d)) {
        if (std::string(e->d_name) != "." && std::string(e->d_name) != "..") ++entries;
      }
      ::closedir(d);
      EXPECT_EQ(entries, 0) << "something was left in the destination's folder";
    }
  }
}

}  // namespace
}  // namespace bunker::capsule
