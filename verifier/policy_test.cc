// Tests of verifier/policy.h. Over 500 lines on purpose: one file per unit under test; each
// policy rule's cases sit next to the others so the language's edges can be read in one place.
#include "verifier/policy.h"

#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "crypto/keys.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace bunker::verifier {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

constexpr int64_t k2026 = 1767225600;  // 2026-01-01T00:00:00Z
constexpr int64_t k2027 = 1798761600;  // 2027-01-01T00:00:00Z

// A fixed, valid fingerprint: "bk1:" + base32 of 16 bytes of `fill`.
std::string Fp(uint8_t fill) {
  crypto::Fingerprint fp;
  fp.bytes.fill(fill);
  return fp.ToString();
}

// The issue's example policy, with `{ALICE}` standing for a requester fingerprint.
std::string ExampleJson() {
  return absl::StrReplaceAll(R"({ "version": 1, "rules": [
    { "id": "east-training", "effect": "permit", "sites": ["site-b"], "regions": ["cn-east-1"],
      "storage": ["encrypted-at-rest"], "requesters": ["{ALICE}"], "purposes": ["training"],
      "paths": ["train/**"], "notBefore": "2026-01-01T00:00:00Z",
      "notAfter": "2027-01-01T00:00:00Z", "maxOpens": 3 },
    { "id": "no-pii", "effect": "forbid", "paths": ["pii/**"] } ] })",
                             {{"{ALICE}", Fp(1)}});
}

Policy MustParse(const std::string& json) {
  absl::StatusOr<Policy> p = ParsePolicy(json);
  EXPECT_TRUE(p.ok()) << p.status() << "\n" << json;
  return p.ok() ? *p : Policy{};
}

// A request that satisfies every condition of the example's permit rule.
Request ExampleRequest() {
  Request r;
  r.site = "site-b";
  r.region = "cn-east-1";
  r.storage = std::vector<std::string>{"encrypted-at-rest", "ssd"};
  r.requester = Fp(1);
  r.purpose = "training";
  r.files = {"train/a.txt"};
  r.now = k2026 + 100;
  r.opens_so_far = 0;
  return r;
}

// --- Parsing ------------------------------------------------------------------------------

TEST(PolicyParseTest, ParsesTheExample) {
  const Policy p = MustParse(ExampleJson());
  ASSERT_EQ(p.rules.size(), 2u);
  const Rule& r = p.rules[0];
  EXPECT_EQ(r.id, "east-training");
  EXPECT_EQ(r.effect, Rule::Effect::kPermit);
  EXPECT_EQ(r.sites, std::vector<std::string>{"site-b"});
  EXPECT_EQ(r.regions, std::vector<std::string>{"cn-east-1"});
  EXPECT_EQ(r.storage, std::vector<std::string>{"encrypted-at-rest"});
  EXPECT_EQ(r.requesters, std::vector<std::string>{Fp(1)});
  EXPECT_EQ(r.purposes, std::vector<std::string>{"training"});
  ASSERT_TRUE(r.paths.has_value());
  ASSERT_EQ(r.paths->size(), 1u);
  EXPECT_EQ((*r.paths)[0].pattern(), "train/**");
  EXPECT_EQ(r.not_before, k2026);
  EXPECT_EQ(r.not_after, k2027);
  EXPECT_EQ(r.max_opens, 3u);
  EXPECT_TRUE(r.NeedsSite());

  const Rule& f = p.rules[1];
  EXPECT_EQ(f.id, "no-pii");
  EXPECT_EQ(f.effect, Rule::Effect::kForbid);
  EXPECT_FALSE(f.sites || f.regions || f.storage || f.requesters || f.purposes);
  EXPECT_FALSE(f.not_before || f.not_after || f.max_opens);
  EXPECT_FALSE(f.NeedsSite());
}

TEST(PolicyParseTest, AbsentFieldsStayUnset) {
  const Policy p = MustParse(R"({"version": 1, "rules": [{"id": "r", "effect": "permit"}]})");
  ASSERT_EQ(p.rules.size(), 1u);
  const Rule& r = p.rules[0];
  EXPECT_FALSE(r.sites || r.regions || r.storage || r.requesters || r.purposes || r.paths);
  EXPECT_FALSE(r.not_before || r.not_after || r.max_opens);
}

TEST(PolicyParseTest, RequestersAreStoredInCanonicalSpelling) {
  const std::string upper = absl::AsciiStrToUpper(Fp(7));
  const Policy p = MustParse(absl::StrCat(
      R"({"version": 1, "rules": [{"id": "r", "effect": "permit", "requesters": [")", upper,
      R"("]}]})"));
  ASSERT_EQ(p.rules.size(), 1u);
  EXPECT_EQ(p.rules[0].requesters, std::vector<std::string>{Fp(7)});
}

TEST(PolicyParseTest, NeedsSiteForEachSiteCondition) {
  for (const char* field : {R"("sites": ["s"])", R"("regions": ["r"])",
                            R"("storage": ["x"])", R"("maxOpens": 1)"}) {
    const Policy p = MustParse(absl::StrCat(
        R"({"version": 1, "rules": [{"id": "r", "effect": "permit", )", field, "}]}"));
    ASSERT_EQ(p.rules.size(), 1u);
    EXPECT_TRUE(p.rules[0].NeedsSite()) << field;
  }
  for (const std::string& field :
       {absl::StrCat(R"("requesters": [")", Fp(1), R"("])"), std::string(R"("purposes": ["p"])"),
        std::string(R"("paths": ["a"])"),
        std::string(R"("notBefore": "2026-01-01T00:00:00Z")")}) {
    const Policy p = MustParse(absl::StrCat(
        R"({"version": 1, "rules": [{"id": "r", "effect": "permit", )", field, "}]}"));
    ASSERT_EQ(p.rules.size(), 1u);
    EXPECT_FALSE(p.rules[0].NeedsSite()) << field;
  }
}

TEST(PolicyParseTest, TimesAndIntegersEdgeCases) {
  const Policy p = MustParse(R"({"version": 1.0, "rules": [{"id": "r", "effect": "permit",
      "notBefore": "2026-12-31T23:59:60Z", "notAfter": "9999-12-31T23:59:59Z",
      "maxOpens": 4294967295}]})");
  ASSERT_EQ(p.rules.size(), 1u);
  EXPECT_EQ(p.rules[0].not_before, k2027) << "a leap second reads as the next second";
  EXPECT_EQ(p.rules[0].not_after, int64_t{253402300799});
  EXPECT_EQ(p.rules[0].max_opens, 4294967295u);
}

// Regression: second 60 was accepted at any minute (absl normalizes 12:30:60 to 12:31:00),
// though the spec allows only the leap second 23:59:60.
TEST(PolicyParseTest, SecondSixtyOnlyAtTheDaysLastMinute) {
  for (const char* time : {"2026-06-30T12:30:60Z", "2026-12-31T22:59:60Z", "2026-12-31T00:59:60Z"}) {
    absl::StatusOr<Policy> p = ParsePolicy(absl::StrCat(
        R"({"version": 1, "rules": [{"id": "r", "effect": "permit", "notBefore": ")", time,
        R"("}]})"));
    ASSERT_FALSE(p.ok()) << time;
    EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(p.status().message()),
                HasSubstr("$.rules[0].notBefore: \"" + std::string(time) + "\" is not a valid time"));
  }
  EXPECT_TRUE(ParsePolicy(R"({"version": 1, "rules": [{"id": "r", "effect": "permit",
      "notAfter": "2026-06-30T23:59:60Z"}]})").ok());
}

TEST(PolicyParseTest, EmptyTextIsNotAPolicy) {
  // A capsule sealed without --policy carries "": callers check for it before parsing.
  absl::StatusOr<Policy> p = ParsePolicy("");
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(p.status().message()), HasSubstr("$: policy is empty"));
}

// Regression: Cap'n Proto's JSON decoder stops at a NUL byte as if the text ended there, so a
// valid policy followed by a NUL and another policy was accepted (and `inspect` showed both).
TEST(PolicyParseTest, NulByteAnywhereIsRefused) {
  const std::string good = R"({"version": 1, "rules": [{"id": "a", "effect": "permit"}]})";
  const std::string other =
      R"({"version": 1, "rules": [{"id": "b", "effect": "permit", "maxOpens": 1}]})";
  for (const std::string& json : {good + std::string(1, '\0') + other,
                                  good + std::string(1, '\0'),
                                  std::string(1, '\0') + good,
                                  R"({"version": 1, "rules": [{"id": "a)" + std::string(1, '\0') +
                                      R"(", "effect": "permit"}]})"}) {
    absl::StatusOr<Policy> p = ParsePolicy(json);
    ASSERT_FALSE(p.ok());
    EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(p.status().message()),
                HasSubstr("$: policy is not valid JSON (NUL byte at byte "));
  }
  // The escaped NUL is JSON; in a text it is a control character.
  absl::StatusOr<Policy> escaped =
      ParsePolicy(R"({"version": 1, "rules": [{"id": "a\u0000b", "effect": "permit"}]})");
  EXPECT_EQ(escaped.status().message(), "$.rules[0].id: must not contain control characters");
}

// Regression: numbers that RFC 8259 does not allow (`1.`, `1.e0`) were read, and
// 0.99999999999999999, which reads as the double 1, was taken as maxOpens 1.
TEST(PolicyParseTest, NumbersFollowRfc8259AndIntegersAreExact) {
  const auto with_max_opens = [](const std::string& n) {
    return absl::StrCat(
        R"({"version": 1, "rules": [{"id": "a", "effect": "permit", "maxOpens": )", n, "}]}");
  };
  for (const char* n :
       {"1.", "1.e0", "01", "-01", "+1", ".5", "1e", "1e+", "--1", "1.2.3", "-", "1E+-2"}) {
    absl::StatusOr<Policy> p = ParsePolicy(with_max_opens(n));
    ASSERT_FALSE(p.ok()) << n;
    EXPECT_THAT(std::string(p.status().message()),
                HasSubstr("$: policy is not valid JSON (number \""))
        << n;
  }
  for (const char* n : {"0.99999999999999999", "1.00000000000000001", "2.5e0", "25e-1", "1e-400",
                        "4294967295.0000000001"}) {
    absl::StatusOr<Policy> p = ParsePolicy(with_max_opens(n));
    ASSERT_FALSE(p.ok()) << n;
    EXPECT_EQ(p.status().message(), "$.rules[0].maxOpens: expected an integer") << n;
  }
  // Exactly integers, however written.
  for (const auto& [n, want] : std::vector<std::pair<std::string, uint32_t>>{
           {"3", 3}, {"3.0", 3}, {"3.000e0", 3}, {"0.3e1", 3}, {"30e-1", 3}, {"3E0", 3},
           {"1e2", 100}, {"1.5e1", 15}, {"4294967295", 4294967295u}}) {
    absl::StatusOr<Policy> p = ParsePolicy(with_max_opens(n));
    ASSERT_TRUE(p.ok()) << n << ": " << p.status();
    EXPECT_EQ(p->rules[0].max_opens, want) << n;
  }
  // Numbers in strings are text, and strings with escaped quotes do not start numbers.
  absl::StatusOr<Policy> p = ParsePolicy(
      R"({"version": 1, "rules": [{"id": "1.\" 01", "effect": "permit", "maxOpens": 2}]})");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->rules[0].max_opens, 2u);
}

struct BadPolicy {
  std::string name;
  std::string json;
  std::string message;  // the exact error message (or its start, when `prefix`)
  bool prefix = false;
};

// A policy whose second rule has `rule_fields` (its first is a valid permit rule), so that
// error paths show the rule index.
std::string WithRule(const std::string& rule_fields) {
  return absl::StrCat(R"({"version": 1, "rules": [{"id": "ok", "effect": "permit"}, {)",
                      rule_fields, "}]}");
}

std::vector<BadPolicy> BadPolicies() {
  const std::string kRule = R"("id": "r", "effect": "permit")";
  return {
      {"not_json", "{", "$: policy is not valid JSON", true},
      {"trailing_garbage", R"({"version": 1, "rules": []} x)", "$: policy is not valid JSON",
       true},
      {"too_deep", std::string(200, '[') + std::string(200, ']'),
       "$: policy is not valid JSON", true},
      {"not_an_object", "[1, 2]", "$: expected an object, got an array"},
      {"top_level_string", R"("policy")", "$: expected an object, got a string"},
      {"unknown_top_field", R"({"version": 1, "rules": [{"id": "a", "effect": "permit"}],
                                "comment": "x"})",
       "$.comment: unknown field (known: version, rules)"},
      {"duplicate_top_field", R"({"version": 1, "version": 1, "rules": []})",
       "$.version: duplicate field"},
      {"version_missing", R"({"rules": [{"id": "a", "effect": "permit"}]})",
       "$.version: required (1)"},
      {"version_string", R"({"version": "1", "rules": []})",
       "$.version: expected an integer, got a string"},
      {"version_fraction", R"({"version": 1.5, "rules": []})", "$.version: expected an integer"},
      {"version_negative", R"({"version": -1, "rules": []})",
       "$.version: -1 is out of range (0 to 4294967295)"},
      {"version_2", R"({"version": 2, "rules": [{"id": "a", "effect": "permit"}]})",
       "$.version: unsupported policy version 2 (this verifier reads version 1)"},
      {"rules_missing", R"({"version": 1})", "$.rules: required"},
      {"rules_empty", R"({"version": 1, "rules": []})", "$.rules: must contain at least one rule"},
      {"rules_object", R"({"version": 1, "rules": {}})",
       "$.rules: expected an array, got an object"},
      {"rules_null", R"({"version": 1, "rules": null})", "$.rules: expected an array, got null"},
      {"rule_not_object", R"({"version": 1, "rules": [{"id": "a", "effect": "permit"}, 7]})",
       "$.rules[1]: expected an object, got a number"},
      {"unknown_rule_field", WithRule(kRule + R"(, "color": "red")"),
       "$.rules[1].color: unknown field (known: id, effect, sites, regions, storage, "
       "requesters, purposes, paths, notBefore, notAfter, maxOpens)"},
      {"misspelled_field", WithRule(kRule + R"(, "maxopens": 3)"),
       "$.rules[1].maxopens: unknown field", true},
      {"odd_field_name", WithRule(kRule + R"(, "a b": 1)"),
       R"($.rules[1]["a b"]: unknown field)", true},
      {"duplicate_rule_field", WithRule(kRule + R"(, "id": "s")"),
       "$.rules[1].id: duplicate field"},
      {"id_missing", WithRule(R"("effect": "permit")"), "$.rules[1].id: required"},
      {"id_empty", WithRule(R"("id": "", "effect": "permit")"),
       "$.rules[1].id: must not be empty"},
      {"id_number", WithRule(R"("id": 5, "effect": "permit")"),
       "$.rules[1].id: expected a string, got a number"},
      {"id_control", WithRule(R"("id": "a\nb", "effect": "permit")"),
       "$.rules[1].id: must not contain control characters"},
      {"id_too_long", WithRule(absl::StrCat(R"("id": ")", std::string(129, 'x'),
                                            R"(", "effect": "permit")")),
       "$.rules[1].id: longer than 128 bytes"},
      {"id_duplicate", WithRule(R"("id": "ok", "effect": "forbid")"),
       "$.rules[1].id: duplicate rule id \"ok\""},
      {"effect_missing", WithRule(R"("id": "r")"),
       "$.rules[1].effect: required (permit or forbid)"},
      {"effect_unknown", WithRule(R"("id": "r", "effect": "allow")"),
       "$.rules[1].effect: \"allow\" is not one of permit, forbid"},
      {"effect_number", WithRule(R"("id": "r", "effect": 0)"),
       "$.rules[1].effect: expected one of permit, forbid, got a number"},
      {"sites_empty", WithRule(kRule + R"(, "sites": [])"),
       "$.rules[1].sites: must not be empty (leave the field out to not constrain)"},
      {"sites_string", WithRule(kRule + R"(, "sites": "site-b")"),
       "$.rules[1].sites: expected an array, got a string"},
      {"sites_element_number", WithRule(kRule + R"(, "sites": ["a", 1])"),
       "$.rules[1].sites[1]: expected a string, got a number"},
      {"sites_element_empty", WithRule(kRule + R"(, "sites": [""])"),
       "$.rules[1].sites[0]: must not be empty"},
      {"regions_empty", WithRule(kRule + R"(, "regions": [])"),
       "$.rules[1].regions: must not be empty", true},
      {"storage_empty", WithRule(kRule + R"(, "storage": [])"),
       "$.rules[1].storage: must not be empty", true},
      {"storage_element_control", WithRule(kRule + R"(, "storage": ["a\u0001"])"),
       "$.rules[1].storage[0]: must not contain control characters"},
      {"purposes_empty", WithRule(kRule + R"(, "purposes": [])"),
       "$.rules[1].purposes: must not be empty", true},
      {"purposes_null", WithRule(kRule + R"(, "purposes": null)"),
       "$.rules[1].purposes: expected an array, got null"},
      {"requesters_empty", WithRule(kRule + R"(, "requesters": [])"),
       "$.rules[1].requesters: must not be empty", true},
      {"requester_bad", WithRule(kRule + R"(, "requesters": ["alice"])"),
       "$.rules[1].requesters[0]: fingerprint must be \"bk1:\" followed by 26 base32 characters"},
      {"requester_second_bad",
       WithRule(absl::StrCat(kRule, R"(, "requesters": [")", Fp(1), R"(", "bk1:zz"])")),
       "$.rules[1].requesters[1]: fingerprint must be", true},
      {"paths_empty", WithRule(kRule + R"(, "paths": [])"),
       "$.rules[1].paths: must not be empty", true},
      {"path_absolute", WithRule(kRule + R"(, "paths": ["/etc/**"])"),
       "$.rules[1].paths[0]: invalid path pattern \"/etc/**\": absolute pattern"},
      {"path_dotdot", WithRule(kRule + R"(, "paths": ["train/../pii"])"),
       "$.rules[1].paths[0]: invalid path pattern \"train/../pii\": '..' component"},
      {"path_empty", WithRule(kRule + R"(, "paths": ["train", ""])"),
       "$.rules[1].paths[1]: must not be empty"},
      {"not_before_date_only", WithRule(kRule + R"(, "notBefore": "2026-01-01")"),
       "$.rules[1].notBefore: \"2026-01-01\" is not an RFC 3339 UTC time in whole seconds, "
       "like 2026-01-01T00:00:00Z"},
      {"not_before_offset", WithRule(kRule + R"(, "notBefore": "2026-01-01T00:00:00+01:00")"),
       "$.rules[1].notBefore: \"2026-01-01T00:00:00+01:00\" is not an RFC 3339 UTC time", true},
      {"not_before_fraction", WithRule(kRule + R"(, "notBefore": "2026-01-01T00:00:00.5Z")"),
       "$.rules[1].notBefore: \"2026-01-01T00:00:00.5Z\" is not an RFC 3339 UTC time", true},
      {"not_before_lowercase", WithRule(kRule + R"(, "notBefore": "2026-01-01t00:00:00z")"),
       "$.rules[1].notBefore: \"2026-01-01t00:00:00z\" is not an RFC 3339 UTC time", true},
      {"not_before_padded", WithRule(kRule + R"(, "notBefore": " 2026-01-01T00:00:00Z")"),
       "$.rules[1].notBefore: \" 2026-01-01T00:00:00Z\" is not an RFC 3339 UTC time", true},
      {"not_before_infinite", WithRule(kRule + R"(, "notBefore": "infinite-past")"),
       "$.rules[1].notBefore: \"infinite-past\" is not an RFC 3339 UTC time", true},
      {"not_before_bad_month", WithRule(kRule + R"(, "notBefore": "2026-13-01T00:00:00Z")"),
       "$.rules[1].notBefore: \"2026-13-01T00:00:00Z\" is not a valid time", true},
      {"not_before_bad_day", WithRule(kRule + R"(, "notBefore": "2026-02-30T00:00:00Z")"),
       "$.rules[1].notBefore: \"2026-02-30T00:00:00Z\" is not a valid time", true},
      {"not_before_bad_hour", WithRule(kRule + R"(, "notBefore": "2026-01-01T24:00:00Z")"),
       "$.rules[1].notBefore: \"2026-01-01T24:00:00Z\" is not a valid time", true},
      {"not_before_number", WithRule(kRule + R"(, "notBefore": 1767225600)"),
       "$.rules[1].notBefore: expected a string, got a number"},
      {"not_after_bad", WithRule(kRule + R"(, "notAfter": "tomorrow")"),
       "$.rules[1].notAfter: \"tomorrow\" is not an RFC 3339 UTC time", true},
      {"window_reversed", WithRule(kRule + R"(, "notBefore": "2027-01-01T00:00:00Z",
                                              "notAfter": "2026-01-01T00:00:00Z")"),
       "$.rules[1].notAfter: must be later than notBefore"},
      {"window_empty", WithRule(kRule + R"(, "notBefore": "2026-01-01T00:00:00Z",
                                           "notAfter": "2026-01-01T00:00:00Z")"),
       "$.rules[1].notAfter: must be later than notBefore"},
      {"max_opens_zero", WithRule(kRule + R"(, "maxOpens": 0)"),
       "$.rules[1].maxOpens: must be at least 1"},
      {"max_opens_negative", WithRule(kRule + R"(, "maxOpens": -1)"),
       "$.rules[1].maxOpens: -1 is out of range (0 to 4294967295)"},
      {"max_opens_too_big", WithRule(kRule + R"(, "maxOpens": 4294967296)"),
       "$.rules[1].maxOpens: 4294967296 is out of range (0 to 4294967295)"},
      {"max_opens_fraction", WithRule(kRule + R"(, "maxOpens": 2.5)"),
       "$.rules[1].maxOpens: expected an integer"},
      {"max_opens_string", WithRule(kRule + R"(, "maxOpens": "3")"),
       "$.rules[1].maxOpens: expected an integer, got a string"},
      {"max_opens_bool", WithRule(kRule + R"(, "maxOpens": true)"),
       "$.rules[1].maxOpens: expected an integer, got a boolean"},
      {"max_opens_on_forbid", WithRule(R"("id": "f", "effect": "forbid", "maxOpens": 2)"),
       "$.rules[1].maxOpens: only a permit rule can limit opens"},
  };
}

class PolicyParseErrorTest : public ::testing::TestWithParam<BadPolicy> {};

TEST_P(PolicyParseErrorTest, RejectsWithJsonPath) {
  const BadPolicy& bad = GetParam();
  absl::StatusOr<Policy> p = ParsePolicy(bad.json);
  ASSERT_FALSE(p.ok()) << bad.json;
  EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
  const std::string message(p.status().message());
  if (bad.prefix) {
    EXPECT_TRUE(absl::StartsWith(message, bad.message)) << message;
  } else {
    EXPECT_EQ(message, bad.message);
  }
  EXPECT_EQ(message.find('\n'), std::string::npos) << "error must be one line: " << message;
}

INSTANTIATE_TEST_SUITE_P(Policy, PolicyParseErrorTest, ::testing::ValuesIn(BadPolicies()),
                         [](const ::testing::TestParamInfo<BadPolicy>& info) {
                           return info.param.name;
                         });

TEST(PolicyParseTest, RejectsOversizedText) {
  const std::string json = absl::StrCat(R"({"version": 1, "rules": [{"id": "a", "effect": "permit",
      "purposes": [")", std::string(300 << 10, 'x'), R"("]}]})");
  absl::StatusOr<Policy> p = ParsePolicy(json);
  ASSERT_FALSE(p.ok());
  EXPECT_THAT(std::string(p.status().message()), HasSubstr("$: policy is larger than"));
}

TEST(PolicyParseTest, EveryTruncationIsRejectedCleanly) {
  const std::string json = ExampleJson();
  for (size_t n = 0; n < json.size(); ++n) {
    absl::StatusOr<Policy> p = ParsePolicy(json.substr(0, n));
    // A prefix ending right after the closing brace would be the whole policy.
    if (json.find_first_not_of(" \n", n) == std::string::npos) continue;
    ASSERT_FALSE(p.ok()) << "prefix of " << n << " bytes parsed";
    EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(absl::StartsWith(p.status().message(), "$")) << p.status();
  }
}

TEST(PolicyParseTest, ByteFlipsParseOrFailWithAPath) {
  const std::string json = ExampleJson();
  for (size_t i = 0; i < json.size(); ++i) {
    for (unsigned char flip : {0x01, 0x20, 0x80}) {
      std::string bad = json;
      bad[i] = static_cast<char>(static_cast<unsigned char>(bad[i]) ^ flip);
      absl::StatusOr<Policy> p = ParsePolicy(bad);
      if (p.ok()) continue;  // e.g. a changed purpose text is still a valid policy
      EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument) << p.status();
      EXPECT_TRUE(absl::StartsWith(p.status().message(), "$")) << p.status();
    }
  }
}

// --- Evaluation ---------------------------------------------------------------------------

TEST(PolicyEvaluateTest, PermitsTheExampleRequest) {
  const Decision d = Evaluate(MustParse(ExampleJson()), ExampleRequest());
  EXPECT_TRUE(d.permit);
  EXPECT_THAT(d.rules, ElementsAre("east-training"));
  EXPECT_THAT(d.reasons, IsEmpty());
  EXPECT_THAT(d.denied_files, IsEmpty());
  EXPECT_TRUE(d.counts_use);
}

TEST(PolicyEvaluateTest, DefaultDeny) {
  const Policy p = MustParse(
      R"({"version": 1, "rules": [{"id": "no-pii", "effect": "forbid", "paths": ["pii/**"]}]})");
  Request r;
  r.files = {"train/a.txt"};
  const Decision d = Evaluate(p, r);
  EXPECT_FALSE(d.permit);
  EXPECT_THAT(d.rules, IsEmpty());
  EXPECT_THAT(d.reasons, ElementsAre("no rule permits: the policy has no permit rule"));
  EXPECT_THAT(d.denied_files, ElementsAre("train/a.txt"));
  EXPECT_FALSE(d.counts_use);
}

TEST(PolicyEvaluateTest, DefaultDenyWhenNoPermitRuleMatches) {
  Request r = ExampleRequest();
  r.purpose = "eval";
  const Decision d = Evaluate(MustParse(ExampleJson()), r);
  EXPECT_FALSE(d.permit);
  EXPECT_THAT(d.rules, IsEmpty());
  EXPECT_THAT(d.reasons,
              ElementsAre("rule east-training: purpose \"eval\" is not one of [training]"));
  EXPECT_FALSE(d.counts_use);
}

TEST(PolicyEvaluateTest, ForbidWins) {
  const Policy p = MustParse(R"({"version": 1, "rules": [
      {"id": "all", "effect": "permit"},
      {"id": "no-pii", "effect": "forbid", "paths": ["pii/**"]}]})");
  Request r;
  r.files = {"pii/names.csv"};
  const Decision d = Evaluate(p, r);
  EXPECT_FALSE(d.permit);
  EXPECT_THAT(d.rules, ElementsAre("no-pii"));
  EXPECT_THAT(d.reasons, ElementsAre("rule no-pii: forbids pii/names.csv"));
  EXPECT_THAT(d.denied_files, ElementsAre("pii/names.csv"));

  r.files = {"train/a.txt"};
  const Decision ok = Evaluate(p, r);
  EXPECT_TRUE(ok.permit);
  EXPECT_THAT(ok.rules, ElementsAre("all"));
  EXPECT_FALSE(ok.counts_use);
}

TEST(PolicyEvaluateTest, ForbidWithConditionsAppliesOnlyWhenAllHold) {
  const Policy p = MustParse(R"({"version": 1, "rules": [
      {"id": "all", "effect": "permit"},
      {"id": "no-us", "effect": "forbid", "regions": ["us-east-1"], "paths": ["pii"]}]})");
  Request r;
  r.region = "us-east-1";
  r.files = {"pii/names.csv", "train/a"};
  Decision d = Evaluate(p, r);
  EXPECT_FALSE(d.permit);
  EXPECT_THAT(d.denied_files, ElementsAre("pii/names.csv"));
  r.region = "eu-west-1";
  d = Evaluate(p, r);
  EXPECT_TRUE(d.permit);
  EXPECT_THAT(d.rules, ElementsAre("all"));
}

TEST(PolicyEvaluateTest, AbsentFieldsDoNotConstrain) {
  const Policy p = MustParse(R"({"version": 1, "rules": [{"id": "any", "effect": "permit"}]})");
  Request r;  // nothing known but the file
  r.files = {"x"};
  EXPECT_TRUE(Evaluate(p, r).permit);
  Request full = ExampleRequest();
  full.opens_so_far = 1000000;
  full.now = -5;
  EXPECT_TRUE(Evaluate(p, full).permit);
}

TEST(PolicyEvaluateTest, UnsetRequestFieldsNeverMatchARuleThatConstrainsThem) {
  struct Case {
    const char* field;
    void (*unset)(Request*);
    const char* reason;
  };
  const Case cases[] = {
      {R"("sites": ["site-b"])", [](Request* r) { r->site.reset(); },
       "rule r: no site given; the rule requires one of [site-b]"},
      {R"("regions": ["cn-east-1"])", [](Request* r) { r->region.reset(); },
       "rule r: no region given; the rule requires one of [cn-east-1]"},
      {R"("storage": ["encrypted-at-rest"])", [](Request* r) { r->storage.reset(); },
       "rule r: no storage labels given; the rule requires [encrypted-at-rest]"},
      {R"("requesters": ["{ALICE}"])", [](Request* r) { r->requester.reset(); },
       "rule r: no requester given; the rule requires one of [{ALICE}]"},
      {R"("purposes": ["training"])", [](Request* r) { r->purpose.reset(); },
       "rule r: no purpose given; the rule requires one of [training]"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.field);
    const std::string field = absl::StrReplaceAll(c.field, {{"{ALICE}", Fp(1)}});
    const Policy permit = MustParse(absl::StrCat(
        R"({"version": 1, "rules": [{"id": "r", "effect": "permit", )", field, "}]}"));
    Request r = ExampleRequest();
    EXPECT_TRUE(Evaluate(permit, r).permit) << "the set field matches";
    c.unset(&r);
    const Decision d = Evaluate(permit, r);
    EXPECT_FALSE(d.permit);
    EXPECT_THAT(d.reasons, ElementsAre(absl::StrReplaceAll(c.reason, {{"{ALICE}", Fp(1)}})));

    // Nor does a forbid rule on an unset field match: the caller decides what it cannot know
    // (open without a site denies any policy with site conditions).
    const Policy forbid = MustParse(absl::StrCat(
        R"({"version": 1, "rules": [{"id": "all", "effect": "permit"},
                                    {"id": "f", "effect": "forbid", )",
        field, "}]}"));
    EXPECT_TRUE(Evaluate(forbid, r).permit);
    EXPECT_FALSE(Evaluate(forbid, ExampleRequest()).permit) << "the set field matches";
  }
}

TEST(PolicyEvaluateTest, FailingConditionReasons) {
  Request r = ExampleRequest();
  r.site = "site-a";
  r.region = "us-east-1";
  r.storage = std::vector<std::string>{"plain"};
  r.requester = Fp(2);
  r.purpose = "eval";
  r.files = {"README"};
  r.now = k2026 - 1;
  r.opens_so_far = 3;
  const Decision d = Evaluate(MustParse(ExampleJson()), r);
  EXPECT_FALSE(d.permit);
  EXPECT_THAT(
      d.reasons,
      ElementsAre("rule east-training: site \"site-a\" is not one of [site-b]",
                  "rule east-training: region \"us-east-1\" is not one of [cn-east-1]",
                  "rule east-training: storage lacks [encrypted-at-rest] (site has [plain])",
                  absl::StrCat("rule east-training: requester \"", Fp(2), "\" is not one of [",
                               Fp(1), "]"),
                  "rule east-training: purpose \"eval\" is not one of [training]",
                  "rule east-training: not valid until 2026-01-01T00:00:00Z",
                  "rule east-training: maxOpens 3 reached"));
  EXPECT_THAT(d.denied_files, ElementsAre("README"));
}

TEST(PolicyEvaluateTest, TimeWindowIsInclusiveThenExclusive) {
  const Policy p = MustParse(ExampleJson());
  Request r = ExampleRequest();
  r.now = k2026 - 1;
  Decision d = Evaluate(p, r);
  EXPECT_FALSE(d.permit);
  EXPECT_THAT(d.reasons, ElementsAre("rule east-training: not valid until 2026-01-01T00:00:00Z"));
  r.now = k2026;
  EXPECT_TRUE(Evaluate(p, r).permit) << "notBefore is inclusive";
  r.now = k2027 - 1;
  EXPECT_TRUE(Evaluate(p, r).permit);
  r.now = k2027;
  d = Evaluate(p, r);
  EXPECT_FALSE(d.permit) << "notAfter is exclusive";
  EXPECT_THAT(d.reasons, ElementsAre("rule east-training: expired at 2027-01-01T00:00:00Z"));
}

TEST(PolicyEvaluateTest, ForbidTimeWindowLimitsTheForbid) {
  const Policy p = MustParse(R"({"version": 1, "rules": [
      {"id": "all", "effect": "permit"},
      {"id": "embargo", "effect": "forbid", "notAfter": "2026-01-01T00:00:00Z"}]})");
  Request r;
  r.files = {"a"};
  r.now = k2026 - 1;
  const Decision d = Evaluate(p, r);
  EXPECT_FALSE(d.permit);
  EXPECT_THAT(d.reasons, ElementsAre("rule embargo: forbids a"));
  r.now = k2026;
  EXPECT_TRUE(Evaluate(p, r).permit);
}

TEST(PolicyEvaluateTest, StorageRequiresEveryListedLabel) {
  const Policy p = MustParse(R"({"version": 1, "rules": [
      {"id": "s", "effect": "permit", "storage": ["encrypted-at-rest", "eu-only"]}]})");
  Request r;
  r.files = {"a"};
  r.storage = std::vector<std::string>{"encrypted-at-rest"};
  Decision d = Evaluate(p, r);
  EXPECT_FALSE(d.permit);
  EXPECT_THAT(d.reasons, ElementsAre("rule s: storage lacks [eu-only] (site has "
                                     "[encrypted-at-rest])"));
  r.storage = std::vector<std::string>{};
  d = Evaluate(p, r);
  EXPECT_THAT(d.reasons,
              ElementsAre("rule s: storage lacks [encrypted-at-rest, eu-only] (site has [])"));
  r.storage = std::vector<std::string>{"ssd", "eu-only", "encrypted-at-rest"};
  EXPECT_TRUE(Evaluate(p, r).permit) << "extra labels and order do not matter";
}

TEST(PolicyEvaluateTest, RequesterMatchesAnySpellingOfTheFingerprint) {
  const Policy p = MustParse(ExampleJson());
  Request r = ExampleRequest();
  r.requester = absl::AsciiStrToUpper(Fp(1));
  EXPECT_TRUE(Evaluate(p, r).permit);
}

TEST(PolicyEvaluateTest, MalformedRequesterDenies) {
  const Policy p = MustParse(R"({"version": 1, "rules": [{"id": "any", "effect": "permit"}]})");
  Request r;
  r.files = {"a"};
  r.requester = "alice";
  const Decision d = Evaluate(p, r);
  EXPECT_FALSE(d.permit);
  EXPECT_THAT(d.reasons, ElementsAre("requester \"alice\" is not a key fingerprint"));
}

TEST(PolicyEvaluateTest, RequestWithoutFilesDenies) {
  const Policy p = MustParse(R"({"version": 1, "rules": [{"id": "any", "effect": "permit"}]})");
  const Decision d = Evaluate(p, Request{});
  EXPECT_FALSE(d.permit);
  EXPECT_THAT(d.reasons, ElementsAre("the request names no files"));
}

TEST(PolicyEvaluateTest, UnnormalizedPathIsDenied) {
  const Policy p = MustParse(R"({"version": 1, "rules": [{"id": "any", "effect": "permit"}]})");
  Request r;
  r.files = {"ok.txt", "../etc/passwd", "/abs", "a//b"};
  const Decision d = Evaluate(p, r);
  EXPECT_FALSE(d.permit);
  EXPECT_THAT(d.denied_files, ElementsAre("../etc/passwd", "/abs", "a//b"));
  EXPECT_THAT(d.reasons[0], HasSubstr("is not a normalized relative path"));
}

TEST(PolicyEvaluateTest, MaxOpensCountsOnlyBelowTheLimit) {
  const Policy p = MustParse(ExampleJson());
  Request r = ExampleRequest();
  for (uint64_t opens : {0, 1, 2}) {
    r.opens_so_far = opens;
    const Decision d = Evaluate(p, r);
    EXPECT_TRUE(d.permit) << opens;
    EXPECT_TRUE(d.counts_use) << opens;
  }
  for (uint64_t opens : {3, 4, 1000}) {
    r.opens_so_far = opens;
    const Decision d = Evaluate(p, r);
    EXPECT_FALSE(d.permit) << opens;
    EXPECT_FALSE(d.counts_use) << opens;
    EXPECT_THAT(d.reasons, ElementsAre("rule east-training: maxOpens 3 reached"));
  }
}

TEST(PolicyEvaluateTest, UnlimitedRuleSparesTheLimitedOnesBudget) {
  const std::string json = absl::StrReplaceAll(R"({"version": 1, "rules": [
      {"id": "alice-always", "effect": "permit", "requesters": ["{ALICE}"]},
      {"id": "three-times", "effect": "permit", "maxOpens": 3},
      {"id": "five-times", "effect": "permit", "maxOpens": 5, "paths": ["train"]}]})",
                                               {{"{ALICE}", Fp(1)}});
  const Policy p = MustParse(json);
  Request r;
  r.files = {"train/a"};
  r.requester = Fp(1);
  Decision d = Evaluate(p, r);
  EXPECT_TRUE(d.permit);
  EXPECT_THAT(d.rules, ElementsAre("alice-always"));
  EXPECT_FALSE(d.counts_use);

  r.requester = Fp(2);
  d = Evaluate(p, r);
  EXPECT_TRUE(d.permit);
  EXPECT_THAT(d.rules, ElementsAre("five-times", "three-times"));
  EXPECT_TRUE(d.counts_use);

  r.opens_so_far = 4;  // three-times is spent, five-times still has one
  d = Evaluate(p, r);
  EXPECT_TRUE(d.permit);
  EXPECT_THAT(d.rules, ElementsAre("five-times"));
  EXPECT_TRUE(d.counts_use);

  r.files = {"README"};  // five-times does not cover it
  d = Evaluate(p, r);
  EXPECT_FALSE(d.permit);
  EXPECT_THAT(d.reasons,
              ElementsAre(absl::StrCat("rule alice-always: requester \"", Fp(2),
                                       "\" is not one of [", Fp(1), "]"),
                          "rule five-times: path README is not matched by [train]",
                          "rule three-times: maxOpens 3 reached"));
}

TEST(PolicyEvaluateTest, CountsUseWhenAnyFileNeedsALimitedRule) {
  const Policy p = MustParse(R"({"version": 1, "rules": [
      {"id": "docs", "effect": "permit", "paths": ["docs"]},
      {"id": "data", "effect": "permit", "paths": ["data"], "maxOpens": 2}]})");
  Request r;
  r.files = {"docs/a"};
  EXPECT_FALSE(Evaluate(p, r).counts_use);
  r.files = {"docs/a", "data/b"};
  const Decision d = Evaluate(p, r);
  EXPECT_TRUE(d.permit);
  EXPECT_THAT(d.rules, ElementsAre("data", "docs"));
  EXPECT_TRUE(d.counts_use);
}

TEST(PolicyEvaluateTest, MultiFileRequestListsDeniedFiles) {
  const Policy p = MustParse(ExampleJson());
  Request r = ExampleRequest();
  r.files = {"train/a.txt", "pii/names.csv", "README", "train/deep/b.bin"};
  const Decision d = Evaluate(p, r);
  EXPECT_FALSE(d.permit);
  EXPECT_THAT(d.denied_files, ElementsAre("pii/names.csv", "README"));
  EXPECT_THAT(d.rules, ElementsAre("no-pii"));
  EXPECT_THAT(d.reasons,
              ElementsAre("rule no-pii: forbids pii/names.csv",
                          "rule east-training: path README is not matched by [train/**]"));
  EXPECT_FALSE(d.counts_use) << "nothing is released on a deny";

  r.files = {"train/a.txt", "train/deep/b.bin"};
  const Decision ok = Evaluate(p, r);
  EXPECT_TRUE(ok.permit);
  EXPECT_THAT(ok.denied_files, IsEmpty());
}

TEST(PolicyEvaluateTest, PathsMatchAncestors) {
  const Policy p = MustParse(R"({"version": 1, "rules": [
      {"id": "train", "effect": "permit", "paths": ["train", "docs/*.md"]},
      {"id": "no-secret", "effect": "forbid", "paths": ["train/secret"]}]})");
  Request r;
  r.files = {"train", "train/deep/x/y.bin", "docs/a.md"};
  EXPECT_TRUE(Evaluate(p, r).permit);
  r.files = {"training/x", "docs/sub/a.md", "train/secret/key", "train/secretive"};
  const Decision d = Evaluate(p, r);
  EXPECT_THAT(d.denied_files, ElementsAre("training/x", "docs/sub/a.md", "train/secret/key"));
}

TEST(PolicyEvaluateTest, ManyDeniedFilesKeepReasonsShort) {
  const Policy p = MustParse(
      R"({"version": 1, "rules": [{"id": "t", "effect": "permit", "paths": ["train"]}]})");
  Request r;
  for (int i = 0; i < 1000; ++i) r.files.push_back(absl::StrCat("other/", i));
  const Decision d = Evaluate(p, r);
  EXPECT_FALSE(d.permit);
  EXPECT_EQ(d.denied_files.size(), 1000u);
  ASSERT_EQ(d.reasons.size(), 21u);
  EXPECT_EQ(d.reasons.back(), "... and 980 more denied files (see the denied file list)");
}

TEST(PolicyEvaluateTest, OddTextIsEscapedInReasons) {
  const Policy p = MustParse(
      R"({"version": 1, "rules": [{"id": "p", "effect": "permit", "purposes": ["x"]}]})");
  Request r;
  r.files = {"a"};
  r.purpose = "evil\nrule p: permitted";
  const Decision d = Evaluate(p, r);
  ASSERT_EQ(d.reasons.size(), 1u);
  EXPECT_EQ(d.reasons[0].find('\n'), std::string::npos) << d.reasons[0];
}

bool SameDecision(const Decision& a, const Decision& b) {
  return a.permit == b.permit && a.rules == b.rules && a.reasons == b.reasons &&
         a.denied_files == b.denied_files && a.counts_use == b.counts_use;
}

TEST(PolicyEvaluateTest, RuleOrderNeverMatters) {
  const std::string json = absl::StrReplaceAll(R"({"version": 1, "rules": [
      {"id": "east-training", "effect": "permit", "sites": ["site-b"], "purposes": ["training"],
       "paths": ["train/**"], "maxOpens": 3},
      {"id": "alice", "effect": "permit", "requesters": ["{ALICE}"], "paths": ["train", "docs"]},
      {"id": "eval", "effect": "permit", "purposes": ["eval"], "notBefore": "2026-01-01T00:00:00Z"},
      {"id": "no-pii", "effect": "forbid", "paths": ["pii/**"]},
      {"id": "no-us", "effect": "forbid", "regions": ["us-east-1"]},
      {"id": "embargo", "effect": "forbid", "paths": ["docs"], "notAfter": "2026-06-01T00:00:00Z"}
      ]})",
                                               {{"{ALICE}", Fp(1)}});
  const Policy policy = MustParse(json);
  std::vector<Request> requests;
  for (const char* purpose : {"training", "eval", "other"}) {
    for (int requester = 0; requester < 3; ++requester) {
      for (const char* region : {"cn-east-1", "us-east-1"}) {
        for (int64_t now : {k2026 - 1, k2026 + 1, k2027}) {
          for (uint64_t opens : {0, 3}) {
            Request r;
            r.site = "site-b";
            r.region = region;
            r.storage = std::vector<std::string>{};
            if (requester > 0) r.requester = Fp(static_cast<uint8_t>(requester));
            r.purpose = purpose;
            r.files = {"train/a", "docs/readme", "pii/x", "README"};
            r.now = now;
            r.opens_so_far = opens;
            requests.push_back(r);
            r.files = {"train/a"};
            requests.push_back(r);
          }
        }
      }
    }
  }
  std::vector<Decision> expected;
  int permits = 0;
  for (const Request& r : requests) {
    expected.push_back(Evaluate(policy, r));
    permits += expected.back().permit ? 1 : 0;
  }
  ASSERT_GT(permits, 0) << "the fixture must exercise both outcomes";
  ASSERT_LT(permits, static_cast<int>(requests.size()));

  std::mt19937 rng(20260101);
  Policy shuffled = policy;
  for (int round = 0; round < 20; ++round) {
    std::shuffle(shuffled.rules.begin(), shuffled.rules.end(), rng);
    for (size_t i = 0; i < requests.size(); ++i) {
      ASSERT_TRUE(SameDecision(Evaluate(shuffled, requests[i]), expected[i]))
          << "round " << round << " request " << i;
    }
  }
}

// --- Warnings -----------------------------------------------------------------------------

TEST(PolicyWarningsTest, NoneForAnOrdinaryPolicy) {
  EXPECT_THAT(PolicyWarnings(MustParse(ExampleJson())), IsEmpty());
  EXPECT_THAT(PolicyWarnings(MustParse(
                  R"({"version": 1, "rules": [{"id": "any", "effect": "permit"}]})")),
              IsEmpty());
}

TEST(PolicyWarningsTest, NoPermitRule) {
  EXPECT_THAT(PolicyWarnings(MustParse(
                  R"({"version": 1, "rules": [{"id": "f", "effect": "forbid", "paths": ["a"]}]})")),
              ElementsAre("no rule can ever permit: the policy has no permit rule"));
}

TEST(PolicyWarningsTest, UnconditionalForbidBlocksEverything) {
  EXPECT_THAT(PolicyWarnings(MustParse(R"({"version": 1, "rules": [
                  {"id": "p", "effect": "permit", "purposes": ["x"]},
                  {"id": "f", "effect": "forbid"}]})")),
              ElementsAre("rule p can never permit: rule f forbids every path it covers",
                          "no rule can ever permit: every permit rule is blocked (see above)"));
  EXPECT_THAT(PolicyWarnings(MustParse(R"({"version": 1, "rules": [
                  {"id": "p", "effect": "permit"},
                  {"id": "f", "effect": "forbid", "paths": ["**"]}]})")),
              ElementsAre("rule p can never permit: rule f forbids every path it covers",
                          "no rule can ever permit: every permit rule is blocked (see above)"));
}

TEST(PolicyWarningsTest, ForbiddenPathsBlockARule) {
  const Policy p = MustParse(R"({"version": 1, "rules": [
      {"id": "pii", "effect": "permit", "paths": ["pii/names.csv", "pii/x/**"]},
      {"id": "train", "effect": "permit", "paths": ["train"]},
      {"id": "no-pii", "effect": "forbid", "paths": ["pii/**"]}]})");
  EXPECT_THAT(PolicyWarnings(p),
              ElementsAre("rule pii can never permit: rule no-pii forbids every path it covers"));
}

TEST(PolicyWarningsTest, ConditionalOrPartialForbidsDoNotWarn) {
  for (const char* forbid : {R"({"id": "f", "effect": "forbid", "sites": ["x"]})",
                             R"({"id": "f", "effect": "forbid", "paths": ["pii"],
                                 "notBefore": "2026-01-01T00:00:00Z"})",
                             R"({"id": "f", "effect": "forbid", "paths": ["pii/*.csv"]})",
                             R"({"id": "f", "effect": "forbid", "paths": ["pi"]})"}) {
    const Policy p = MustParse(absl::StrCat(
        R"({"version": 1, "rules": [{"id": "p", "effect": "permit", "paths": ["pii"]}, )", forbid,
        "]}"));
    EXPECT_THAT(PolicyWarnings(p), IsEmpty()) << forbid;
  }
}

TEST(PolicyWarningsTest, EmptyWindowInAHandBuiltPolicy) {
  Policy p;
  Rule r;
  r.id = "r";
  r.not_before = k2027;
  r.not_after = k2026;
  p.rules.push_back(r);
  EXPECT_THAT(PolicyWarnings(p),
              ElementsAre("rule r can never permit: its time window is empty",
                          "no rule can ever permit: every permit rule is blocked (see above)"));
}

}  // namespace
}  // namespace bunker::verifier

namespace bunker::verifier {
namespace {

// Regression: with more denied files than the detail cap, a forbid rule that decides for a
// file past the cap must still be named in the reasons.
TEST(PolicyEvaluateTest, ForbidRuleIsNamedEvenPastTheDetailCap) {
  auto policy = ParsePolicy(R"({"version": 1, "rules": [
      {"id": "train", "effect": "permit", "purposes": ["training"], "paths": ["train/**"]},
      {"id": "no-pii", "effect": "forbid", "paths": ["pii/**"]}]})");
  ASSERT_TRUE(policy.ok()) << policy.status();
  Request r;
  r.purpose = "eval";
  for (int i = 0; i < 40; ++i) r.files.push_back("train/f" + std::to_string(i));
  r.files.push_back("pii/names.csv");
  const Decision d = Evaluate(*policy, r);
  EXPECT_FALSE(d.permit);
  EXPECT_EQ(d.denied_files.size(), 41u);
  bool named = false;
  for (const std::string& reason : d.reasons) named |= reason == "rule no-pii: forbids pii/names.csv";
  EXPECT_TRUE(named);
}

}  // namespace
}  // namespace bunker::verifier

namespace bunker::verifier {
namespace {

TEST(PolicyAdmitsSiteTest, OnlySiteRegionStorageAndTimeCount) {
  auto policy = ParsePolicy(R"({"version": 1, "rules": [
      {"id": "east", "effect": "permit", "sites": ["site-b"], "regions": ["eu"],
       "storage": ["enc"], "purposes": ["training"], "maxOpens": 1, "paths": ["a/**"],
       "notAfter": "2030-01-01T00:00:00Z"},
      {"id": "no-pii", "effect": "forbid", "paths": ["pii/**"]}]})");
  ASSERT_TRUE(policy.ok()) << policy.status();
  Request r;
  r.site = "site-b";
  r.region = "eu";
  r.storage = std::vector<std::string>{"enc", "other"};
  r.now = 1800000000;  // 2027
  Decision d = AdmitsSite(*policy, r);
  EXPECT_TRUE(d.permit);
  EXPECT_EQ(d.rules, std::vector<std::string>{"east"});
  r.site = "site-c";
  d = AdmitsSite(*policy, r);
  EXPECT_FALSE(d.permit);
  EXPECT_FALSE(d.reasons.empty());
  r.site = "site-b";
  r.now = 1900000000;  // 2030-03: expired
  EXPECT_FALSE(AdmitsSite(*policy, r).permit);
  r.now = 1800000000;
  r.storage = std::vector<std::string>{"other"};
  EXPECT_FALSE(AdmitsSite(*policy, r).permit);
}

}  // namespace
}  // namespace bunker::verifier

namespace bunker::verifier {
namespace {

TEST(PolicyWarningsTest, ForbidOnRequesterOrPurposeIsFlagged) {
  auto policy = ParsePolicy(R"({"version": 1, "rules": [
      {"id": "all", "effect": "permit"},
      {"id": "no-marketing", "effect": "forbid", "purposes": ["marketing"]}]})");
  ASSERT_TRUE(policy.ok()) << policy.status();
  const std::vector<std::string> w = PolicyWarnings(*policy);
  ASSERT_EQ(w.size(), 1u);
  EXPECT_NE(w[0].find("no-marketing"), std::string::npos);
  EXPECT_NE(w[0].find("purpose"), std::string::npos);
}

}  // namespace
}  // namespace bunker::verifier
