#include "transfer/session_stream.h"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <vector>

#include "spec/transfer.capnp.h"

namespace bunker::transfer {
namespace {

// A serialized message holding two blobs of `data` bytes each (an offer's prelude), in as many
// segments as the builder makes when its segments hold `first_words` (with 16, three: the
// root, then one per blob).
std::vector<kj::byte> Message(size_t data, unsigned first_words, size_t* segments) {
  capnp::MallocMessageBuilder builder(first_words, capnp::AllocationStrategy::FIXED_SIZE);
  auto prelude = builder.initRoot<schema::Transfer::OfferParams>().initPrelude();
  auto header = prelude.initHeader(static_cast<unsigned>(data));
  auto tail = prelude.initTail(static_cast<unsigned>(data));
  for (size_t i = 0; i < data; ++i) {
    header[i] = static_cast<kj::byte>(i * 13 + 1);
    tail[i] = static_cast<kj::byte>(i * 7 + 3);
  }
  *segments = builder.getSegmentsForOutput().size();
  kj::Array<capnp::word> flat = capnp::messageToFlatArray(builder);
  auto bytes = flat.asBytes();
  return std::vector<kj::byte>(bytes.begin(), bytes.end());
}

// Messages of 1 to several segments, back to back, fed in pieces of random sizes (as a
// stream may deliver them): each end is reported exactly where the message ends, and a body
// is announced with its exact size.
TEST(MessageFramingTest, FindsEveryMessageEndWhateverThePieces) {
  std::vector<kj::byte> stream;
  std::vector<size_t> ends;
  std::vector<size_t> counts;
  for (size_t data : {size_t{0}, size_t{1}, size_t{100}, size_t{5000}, size_t{70000}}) {
    for (unsigned first : {1024u, 16u}) {
      size_t segments = 0;
      std::vector<kj::byte> m = Message(data, first, &segments);
      counts.push_back(segments);
      stream.insert(stream.end(), m.begin(), m.end());
      ends.push_back(stream.size());
    }
  }
  EXPECT_GT(*std::max_element(counts.begin(), counts.end()), 2u) << "no message of 3+ segments";
  std::mt19937 rng(7);
  for (int round = 0; round < 20; ++round) {
    MessageFraming framing;
    std::vector<size_t> found;
    size_t pos = 0;
    while (pos < stream.size()) {
      const uint64_t left = framing.PartLeft();
      ASSERT_GT(left, 0u);
      const size_t n = static_cast<size_t>(
          std::min<uint64_t>({left, stream.size() - pos, 1 + rng() % (round < 10 ? 9 : 70000)}));
      if (framing.InBody()) {
        ASSERT_EQ(framing.body_left(), left);
      }
      const bool ended = framing.Consume(stream.data() + pos, n);
      ASSERT_FALSE(framing.malformed());
      pos += n;
      if (ended) found.push_back(pos);
    }
    EXPECT_EQ(found, ends) << "round " << round;
  }
}

TEST(MessageFramingTest, SegmentCountsCapnProtoRefusesAreMalformed) {
  for (uint32_t count_minus_one : {0xffffffffu, 511u, 0x10000u}) {
    MessageFraming framing;
    const kj::byte table[8] = {static_cast<kj::byte>(count_minus_one),
                               static_cast<kj::byte>(count_minus_one >> 8),
                               static_cast<kj::byte>(count_minus_one >> 16),
                               static_cast<kj::byte>(count_minus_one >> 24), 1, 0, 0, 0};
    framing.Consume(table, 8);
    EXPECT_TRUE(framing.malformed()) << count_minus_one;
  }
  MessageFraming ok;
  const kj::byte table[8] = {254, 1, 0, 0, 1, 0, 0, 0};  // 511 segments: the most accepted
  ok.Consume(table, 8);
  EXPECT_FALSE(ok.malformed());
  EXPECT_EQ(ok.PartLeft(), 4u * 510);
}

}  // namespace
}  // namespace bunker::transfer
