// libFuzzer target: safe extraction of an arbitrary (decrypted) archive stream. Whatever the
// input, extraction must either fail leaving nothing, or produce a tree inside the destination.
#include <ftw.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <string>

#include "capsule/extract.h"
#include "capsule/file_index.h"

namespace {

class BytesSource : public bunker::capsule::ByteSource {
 public:
  BytesSource(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  absl::StatusOr<absl::Span<const uint8_t>> Next() override {
    const size_t n = std::min<size_t>(size_ - pos_, 777);  // odd piece size on purpose
    auto out = absl::MakeConstSpan(data_ + pos_, n);
    pos_ += n;
    return out;
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

int Remove(const char* p, const struct stat*, int, struct FTW*) { return ::remove(p); }

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // A folder of its own for each input, gone before the next: nothing is left in /tmp when the
  // process ends (a replay run of the corpus is an ordinary test).
  char root[] = "/tmp/bunker-fuzz-XXXXXX";
  if (::mkdtemp(root) == nullptr) std::abort();
  const std::string dest = std::string(root) + "/out";
  BytesSource source(data, size);
  auto stats = bunker::capsule::ExtractArchive(&source, dest, {});
  ::nftw(root, Remove, 16, FTW_DEPTH | FTW_PHYS);
  // The index parser too, on the same bytes.
  BytesSource index_source(data, size);
  bunker::capsule::IndexReader index(&index_source, 1000);
  for (int i = 0; i < 1000; ++i) {
    auto e = index.Next();
    if (!e.ok() || !e->has_value()) break;
  }
  return 0;
}
