// The gate tests' shared set-up (site/gate_test.cc, site/chunk_spool_test.cc): a site with one
// sealed capsule of a small dataset, its gate, and a capsule with one chunk damaged.
#ifndef BUNKER_SITE_GATE_TEST_FIXTURE_H_
#define BUNKER_SITE_GATE_TEST_FIXTURE_H_

#include <sys/stat.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
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

// A policy of 20 permit rules of 40 long globs each (about 90 KiB) that matches no file of the
// fixtures: each denied file gets one reason per rule naming all its globs (about 4.5 KiB), so a
// denial explains itself in far more than an audit entry (64 KiB) can hold, and with 20 files
// in more than a reply frame (1 MiB).
inline std::string PolicyWithLongReasons() {
  std::vector<std::string> rules;
  for (int r = 0; r < 20; ++r) {
    std::vector<std::string> globs;
    for (int g = 0; g < 40; ++g) {
      globs.push_back(absl::StrCat("\"elsewhere/", std::string(90, static_cast<char>('a' + g % 26)),
                                   r, "-", g, "/**\""));
    }
    rules.push_back(absl::StrCat("{\"id\": \"r", r, "\", \"effect\": \"permit\", \"paths\": [",
                                 absl::StrJoin(globs, ", "), "]}"));
  }
  return absl::StrCat("{\"version\": 1, \"rules\": [", absl::StrJoin(rules, ", "), "]}");
}

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
