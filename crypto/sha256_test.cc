#include "crypto/sha256.h"

#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"

namespace bunker::crypto {
namespace {

// FIPS 180-2 appendix B and the NIST "example values" document.
constexpr char kEmptyHex[] = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
constexpr char kAbcHex[] = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
constexpr char kTwoBlockMsg[] = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
constexpr char kTwoBlockHex[] = "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1";
constexpr char kMillionAHex[] = "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0";

TEST(Sha256Test, KnownAnswersOneShot) {
  EXPECT_EQ(ToHex(Sha256::Hash(std::string_view(""))), kEmptyHex);
  EXPECT_EQ(ToHex(Sha256::Hash(std::string_view("abc"))), kAbcHex);
  EXPECT_EQ(ToHex(Sha256::Hash(std::string_view(kTwoBlockMsg))), kTwoBlockHex);
  EXPECT_EQ(ToHex(Sha256::Hash(absl::Span<const uint8_t>())), kEmptyHex);
}

TEST(Sha256Test, SpanAndStringOverloadsAgree) {
  const std::vector<uint8_t> abc = {'a', 'b', 'c'};
  EXPECT_EQ(Sha256::Hash(abc), Sha256::Hash(std::string_view("abc")));
}

TEST(Sha256Test, KnownAnswerIncrementalMillionA) {
  Sha256 h;
  const std::string chunk(1000, 'a');
  for (int i = 0; i < 1000; ++i) h.Update(chunk);
  EXPECT_EQ(ToHex(h.Finish()), kMillionAHex);
}

TEST(Sha256Test, IncrementalMatchesOneShotAtEverySplit) {
  const std::string msg = kTwoBlockMsg;
  const Sha256Digest want = Sha256::Hash(msg);
  for (size_t split = 0; split <= msg.size(); ++split) {
    Sha256 h;
    h.Update(std::string_view(msg).substr(0, split));
    h.Update(std::string_view(msg).substr(split));
    EXPECT_EQ(h.Finish(), want) << "split at " << split;
  }
}

TEST(Sha256Test, EmptyUpdatesChangeNothing) {
  Sha256 h;
  h.Update(std::string_view());
  h.Update(absl::Span<const uint8_t>());
  h.Update(std::string_view("abc"));
  h.Update(std::string_view());
  EXPECT_EQ(ToHex(h.Finish()), kAbcHex);
}

TEST(Sha256Test, ResetAfterFinishStartsOver) {
  Sha256 h;
  h.Update(std::string_view("abc"));
  EXPECT_EQ(ToHex(h.Finish()), kAbcHex);
  h.Reset();
  EXPECT_EQ(ToHex(h.Finish()), kEmptyHex);
  h.Reset();
  h.Update(std::string_view("abc"));
  EXPECT_EQ(ToHex(h.Finish()), kAbcHex);
}

TEST(Sha256Test, ResetDiscardsPendingInput) {
  Sha256 h;
  h.Update(std::string_view("garbage"));
  h.Reset();
  h.Update(std::string_view("abc"));
  EXPECT_EQ(ToHex(h.Finish()), kAbcHex);
}

TEST(Sha256Test, MoveKeepsState) {
  Sha256 a;
  a.Update(std::string_view("ab"));
  Sha256 b(std::move(a));
  b.Update(std::string_view("c"));
  EXPECT_EQ(ToHex(b.Finish()), kAbcHex);

  Sha256 c;
  c.Update(std::string_view("a"));
  c = std::move(b);
  c.Update(std::string_view("abc"));
  EXPECT_EQ(ToHex(c.Finish()), kAbcHex);
}

TEST(ToHexTest, LowercaseTwoDigitsPerByte) {
  EXPECT_EQ(ToHex({}), "");
  const std::vector<uint8_t> bytes = {0x00, 0x01, 0x0a, 0x7f, 0x80, 0xab, 0xff};
  EXPECT_EQ(ToHex(bytes), "00010a7f80abff");
}

}  // namespace
}  // namespace bunker::crypto
