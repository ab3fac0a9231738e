// The gate tests' shared set-up (site/gate_test.cc, site/chunk_spool_test.cc): a site with one
// sealed capsule of a small dataset, its gate, and a capsule with one chunk damaged.
#ifndef BUNKER_SITE_GATE_TEST_FIXTURE_H_
#define BUNKER_SITE_GATE_TEST_FIXTURE_H_

#include <sys/stat.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "capsule/capsule_test_util.h"
#include "gtest/gtest.h"
#include "site/gate.h"
#include "site/request.h"
#include "verifier/audit_log.h"

namespace bunker::site::gate_testing {

struct Fixture {
  capsule::testing::Keys keys;
  std::string root = capsule::testing::MakeTempDir();
  std::vector<uint8_t> capsule;
  SiteConfig site;

  Fixture() {
    ::mkdir((root + "/data").c_str(), 0755);
    ::mkdir((root + "/data/train").c_str(), 0755);
    capsule::testing::WriteFile(root + "/data/train/a.csv", "row 1\n");
    // Spans several 4 KiB chunks.
    const std::vector<uint8_t> big = capsule::testing::PatternBytes(40000, 7);
    capsule::testing::WriteFile(root + "/data/train/big.bin", std::string(big.begin(), big.end()));
    capsule = capsule::testing::SealDirectory(keys, root + "/data");
    ::mkdir((root + "/landing").c_str(), 0777);
    ::mkdir((root + "/outside").c_str(), 0755);
    site.site = "site-b";
    site.state = root + "/state";
    site.destinations = {root + "/landing"};
  }

  Gate SiteGate() const { return Gate(site, keys.alice, {keys.issuer.public_identity()}); }

  absl::StatusOr<Permit> Decide(const Gate& gate, const Want& want,
                                std::vector<uint8_t> bytes = {}) {
    absl::StatusOr<std::unique_ptr<OpenCapsule>> c =
        gate.Open(capsule::MemoryFile(bytes.empty() ? capsule : bytes), "d.capsule", 2);
    if (!c.ok()) return c.status();
    return gate.Decide(std::move(*c), Requester{}, want, 1800000000);
  }

  uint64_t LoggedEntries() {
    uint64_t n = 0;
    absl::Status s = verifier::ForEachAuditRecord(
        site.state + "/audit.log", [&n](uint64_t, const verifier::AuditRecord&) {
          ++n;
          return true;
        });
    return s.ok() ? n : 0;
  }
};

// Chunk `chunk` (of 4 KiB) flipped: the table still verifies, the chunk not.
inline std::vector<uint8_t> FlipChunkAt(const std::vector<uint8_t>& capsule, size_t chunk) {
  capsule::testing::Parts p = capsule::testing::MustSplit(capsule);
  const size_t at = chunk * (4096 + 16) + 100;
  EXPECT_LT(at, p.chunks.size());
  p.chunks[at] ^= 0x40;
  return capsule::testing::Join(p);
}

}  // namespace bunker::site::gate_testing

#endif  // BUNKER_SITE_GATE_TEST_FIXTURE_H_
