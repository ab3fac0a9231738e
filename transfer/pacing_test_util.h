// What the pacing tests (receiver_pacing_test.cc, sender_pacing_test.cc) share: a small
// sealed capsule and the bounds they wait within.
#ifndef BUNKER_TRANSFER_PACING_TEST_UTIL_H_
#define BUNKER_TRANSFER_PACING_TEST_UTIL_H_

#include <kj/async-io.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "capsule/capsule_test_util.h"
#include "capsule/reader.h"
#include "gtest/gtest.h"

namespace bunker::transfer::testing {

using capsule::testing::Keys;

constexpr uint32_t kChunk = 4096;
constexpr kj::Duration kBound = 20 * kj::SECONDS;

// A capsule of `chunks` chunks of kChunk bytes, sealed in memory.
struct Sealed {
  Keys keys;
  std::vector<uint8_t> capsule;
  std::shared_ptr<const capsule::CapsuleReader> reader;

  explicit Sealed(size_t chunks) {
    capsule = capsule::testing::SealRaw(keys, capsule::testing::PatternBytes(chunks * kChunk, 7),
                                        kChunk, crypto::Suite::kAes256Gcm, 2, "");
    auto r = capsule::CapsuleReader::OpenUntrusted(capsule::MemoryFile(capsule));
    EXPECT_TRUE(r.ok()) << r.status();
    reader = std::move(*r);
  }
  kj::ArrayPtr<const kj::byte> Chunk(uint64_t i) const {
    const capsule::Geometry& g = reader->geometry();
    return kj::arrayPtr(capsule.data() + g.ChunkOffset(i), g.CipherSize(i));
  }
};

}  // namespace bunker::transfer::testing

#endif  // BUNKER_TRANSFER_PACING_TEST_UTIL_H_
