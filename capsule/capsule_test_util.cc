#include "capsule/capsule_test_util.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "capsule/archive_builder.h"
#include "capsule/io.h"
#include "gtest/gtest.h"
#include "tests/temp_dir.h"

namespace bunker::capsule::testing {

std::string MakeTempDir() {
  return test_temp::MakeTempDir("bunker-test");
}

void WriteFile(const std::string& path, const std::string& contents, int mode) {
  std::ofstream f(path, std::ios::binary);
  f << contents;
  f.close();
  ::chmod(path.c_str(), static_cast<mode_t>(mode));
}

std::string ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

bool Exists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

std::vector<std::string> ListDir(const std::string& path) {
  std::vector<std::string> out;
  DIR* d = ::opendir(path.c_str());
  if (d == nullptr) return out;
  while (struct dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") out.push_back(n);
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<uint8_t> PatternBytes(size_t n, uint32_t seed) {
  std::vector<uint8_t> out(n);
  uint32_t x = seed * 2654435761u + 1;
  for (size_t i = 0; i < n; ++i) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    out[i] = static_cast<uint8_t>(x);
  }
  return out;
}

std::vector<uint8_t> SealRaw(const Keys& keys, const std::vector<uint8_t>& payload,
                             uint32_t chunk_size, crypto::Suite suite, int threads,
                             const std::string& policy) {
  WriterOptions opts;
  opts.issuer = &keys.issuer;
  opts.recipients = {keys.alice.public_identity(), keys.bob.public_identity()};
  opts.chunk_size = chunk_size;
  opts.suite = suite;
  opts.threads = threads;
  opts.created_at = 1790000000;
  opts.policy = policy;
  MemorySink sink;
  auto w = CapsuleWriter::Create(std::move(opts), &sink);
  EXPECT_TRUE(w.ok()) << w.status();
  // Feed in uneven pieces to exercise chunk boundaries.
  size_t pos = 0, step = 1;
  while (pos < payload.size()) {
    const size_t n = std::min(step, payload.size() - pos);
    EXPECT_TRUE((*w)->Append(absl::MakeConstSpan(payload.data() + pos, n)).ok());
    pos += n;
    step = step * 3 + 1;
  }
  (*w)->MarkArchiveEnd();
  auto m = (*w)->Finish(0);
  EXPECT_TRUE(m.ok()) << m.status();
  return sink.bytes;
}

std::vector<uint8_t> SealDirectory(const Keys& keys, const std::string& dir, uint32_t chunk_size,
                                   const std::string& policy) {
  WriterOptions opts;
  opts.policy = policy;
  opts.issuer = &keys.issuer;
  opts.recipients = {keys.alice.public_identity()};
  opts.chunk_size = chunk_size;
  opts.created_at = 1790000000;
  MemorySink sink;
  auto w = CapsuleWriter::Create(std::move(opts), &sink);
  EXPECT_TRUE(w.ok()) << w.status();
  DatasetSource src{DatasetSource::Kind::kPath, dir};
  auto stats = BuildPayload(src, w->get());
  EXPECT_TRUE(stats.ok()) << stats.status();
  auto m = (*w)->Finish(stats.ok() ? stats->entries() : 0);
  EXPECT_TRUE(m.ok()) << m.status();
  return sink.bytes;
}

Parts MustSplit(const std::vector<uint8_t>& capsule) {
  absl::StatusOr<Parts> p = testing::Split(capsule);
  EXPECT_TRUE(p.ok()) << p.status();
  return p.ok() ? *p : Parts();
}

std::vector<uint8_t> MustResign(const std::vector<uint8_t>& capsule, const crypto::Identity& signer,
                            const std::function<void(Manifest&)>& mutate) {
  absl::StatusOr<std::vector<uint8_t>> out = testing::Resign(capsule, signer, mutate);
  EXPECT_TRUE(out.ok()) << out.status();
  return out.ok() ? *out : std::vector<uint8_t>();
}

}  // namespace bunker::capsule::testing
