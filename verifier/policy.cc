#include "verifier/policy.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <tuple>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "capnp/compat/json.h"
#include "capnp/dynamic.h"
#include "capnp/message.h"
#include "capnp/schema.h"
#include "verifier/json_text.h"
#include "capsule/format.h"
#include "capsule/paths.h"
#include "crypto/keys.h"
#include "crypto/status_macros.h"
#include "kj/exception.h"
#include "spec/policy.capnp.h"

namespace bunker::verifier {
namespace {

// spec/POLICY.md "Versions": the only policy version this verifier reads.
constexpr uint32_t kPolicyVersion = 1;
// Policies are small and flat (three levels); deeper input is refused before it costs anything.
constexpr int kMaxJsonDepth = 16;
// spec/POLICY.md "Validation": rule ids name rules in decisions and audit records.
constexpr size_t kMaxIdSize = 128;
// Evaluate: file-specific reasons are given for this many denied files, then summarized, so a
// million-file request cannot produce a million-line decision (denied_files stays complete).
constexpr size_t kMaxDetailedFiles = 20;
// RFC 3339 UTC with whole seconds; 'd' is a digit, anything else must match exactly.
constexpr std::string_view kTimeShape = "dddd-dd-ddTdd:dd:ddZ";

using JsonReader = capnp::JsonValue::Reader;

std::string ToString(kj::StringPtr s) { return std::string(s.cStr(), s.size()); }

absl::Status PathError(const std::string& path, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", what));
}

// `parent.name`, or `parent["odd name"]` for a key that is not an identifier, so that any key
// the input holds yields an unambiguous one-line path.
std::string MemberPath(const std::string& parent, const std::string& name) {
  bool identifier = !name.empty() && !(name[0] >= '0' && name[0] <= '9');
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_';
    if (!ok) identifier = false;
  }
  if (identifier) return absl::StrCat(parent, ".", name);
  return absl::StrCat(parent, "[", capsule::QuotePath(name), "]");
}

std::string IndexPath(const std::string& parent, size_t index) {
  return absl::StrCat(parent, "[", index, "]");
}

const char* KindOf(JsonReader v) {
  switch (v.which()) {
    case capnp::JsonValue::NULL_: return "null";
    case capnp::JsonValue::BOOLEAN: return "a boolean";
    case capnp::JsonValue::NUMBER: return "a number";
    case capnp::JsonValue::STRING: return "a string";
    case capnp::JsonValue::ARRAY: return "an array";
    case capnp::JsonValue::OBJECT: return "an object";
    case capnp::JsonValue::CALL: return "a call";
  }
  return "an unknown value";
}

absl::Status WrongType(const std::string& path, const char* expected, JsonReader got) {
  return PathError(path, absl::StrCat("expected ", expected, ", got ", KindOf(got)));
}

std::string FieldNames(capnp::StructSchema schema) {
  std::vector<std::string> names;
  for (capnp::StructSchema::Field f : schema.getFields()) {
    names.push_back(ToString(f.getProto().getName()));
  }
  return absl::StrJoin(names, ", ");
}

// An integer JSON number within [min, max]. Doubles represent every integer the schema's
// 32-bit fields can hold exactly; 64-bit fields are limited to the exactly representable range.
absl::Status CheckInteger(JsonReader v, const std::string& path, double min, double max) {
  if (!v.isNumber()) return WrongType(path, "an integer", v);
  const double n = v.getNumber();
  if (!std::isfinite(n) || std::floor(n) != n) {
    return PathError(path, "expected an integer");
  }
  if (n < min || n > max) {
    return PathError(path, absl::StrFormat("%.0f is out of range (%.0f to %.0f)", n, min, max));
  }
  return absl::OkStatus();
}

absl::Status CheckValue(JsonReader v, capnp::Type type, const std::string& path);

// Every member of `v` must name a field of `schema`, once, with a value of the field's type.
absl::Status CheckObject(JsonReader v, capnp::StructSchema schema, const std::string& path) {
  if (!v.isObject()) return WrongType(path, "an object", v);
  std::set<std::string> seen;
  for (capnp::JsonValue::Field::Reader member : v.getObject()) {
    const std::string name = ToString(member.getName());
    const std::string member_path = MemberPath(path, name);
    if (!seen.insert(name).second) return PathError(member_path, "duplicate field");
    KJ_IF_MAYBE(field, schema.findFieldByName(member.getName())) {
      BUNKER_RETURN_IF_ERROR(CheckValue(member.getValue(), field->getType(), member_path));
    } else {
      return PathError(member_path,
                       absl::StrCat("unknown field (known: ", FieldNames(schema), ")"));
    }
  }
  return absl::OkStatus();
}

// Checks `v` against a schema type: the one place that knows how JSON maps onto the schema.
absl::Status CheckValue(JsonReader v, capnp::Type type, const std::string& path) {
  constexpr double kSafe = 9007199254740991.0;  // 2^53 - 1
  switch (type.which()) {
    case capnp::schema::Type::BOOL:
      return v.isBoolean() ? absl::OkStatus() : WrongType(path, "true or false", v);
    case capnp::schema::Type::INT8: return CheckInteger(v, path, -128, 127);
    case capnp::schema::Type::INT16: return CheckInteger(v, path, -32768, 32767);
    case capnp::schema::Type::INT32: return CheckInteger(v, path, -2147483648.0, 2147483647.0);
    case capnp::schema::Type::INT64: return CheckInteger(v, path, -kSafe, kSafe);
    case capnp::schema::Type::UINT8: return CheckInteger(v, path, 0, 255);
    case capnp::schema::Type::UINT16: return CheckInteger(v, path, 0, 65535);
    case capnp::schema::Type::UINT32: return CheckInteger(v, path, 0, 4294967295.0);
    case capnp::schema::Type::UINT64: return CheckInteger(v, path, 0, kSafe);
    case capnp::schema::Type::FLOAT32:
    case capnp::schema::Type::FLOAT64:
      return v.isNumber() ? absl::OkStatus() : WrongType(path, "a number", v);
    case capnp::schema::Type::TEXT:
      return v.isString() ? absl::OkStatus() : WrongType(path, "a string", v);
    case capnp::schema::Type::ENUM: {
      capnp::EnumSchema schema = type.asEnum();
      std::vector<std::string> names;
      for (capnp::EnumSchema::Enumerant e : schema.getEnumerants()) {
        names.push_back(ToString(e.getProto().getName()));
      }
      const std::string expected = absl::StrCat("one of ", absl::StrJoin(names, ", "));
      if (!v.isString()) return WrongType(path, expected.c_str(), v);
      if (schema.findEnumerantByName(v.getString()) == nullptr) {
        return PathError(path, absl::StrCat(capsule::QuotePath(ToString(v.getString())),
                                            " is not ", expected));
      }
      return absl::OkStatus();
    }
    case capnp::schema::Type::LIST: {
      if (!v.isArray()) return WrongType(path, "an array", v);
      const capnp::Type element = type.asList().getElementType();
      capnp::List<capnp::JsonValue>::Reader items = v.getArray();
      for (uint32_t i = 0; i < items.size(); ++i) {
        BUNKER_RETURN_IF_ERROR(CheckValue(items[i], element, IndexPath(path, i)));
      }
      return absl::OkStatus();
    }
    case capnp::schema::Type::STRUCT:
      return CheckObject(v, type.asStruct(), path);
    default:
      // VOID, DATA, interfaces, AnyPointer: no policy field uses them.
      return absl::InternalError(absl::StrCat(path, ": schema type without a JSON mapping"));
  }
}

// The member `name` of object `v`, if present (CheckObject made names unique).
std::optional<JsonReader> Member(JsonReader v, std::string_view name) {
  for (capnp::JsonValue::Field::Reader member : v.getObject()) {
    if (ToString(member.getName()) == name) return member.getValue();
  }
  return std::nullopt;
}

bool HasControl(std::string_view s) {
  return std::any_of(s.begin(), s.end(), [](char c) {
    const unsigned char u = static_cast<unsigned char>(c);
    return u < 0x20 || u == 0x7f;
  });
}

// A non-empty text without control characters (texts end up in one-line reasons and logs).
absl::StatusOr<std::string> CheckText(capnp::Text::Reader text, const std::string& path) {
  std::string s = ToString(text);
  if (s.empty()) return PathError(path, "must not be empty");
  if (HasControl(s)) return PathError(path, "must not contain control characters");
  return s;
}

absl::StatusOr<int64_t> ParseTime(capnp::Text::Reader text, const std::string& path) {
  const std::string s = ToString(text);
  bool shaped = s.size() == kTimeShape.size();
  for (size_t i = 0; shaped && i < s.size(); ++i) {
    shaped = kTimeShape[i] == 'd' ? (s[i] >= '0' && s[i] <= '9') : s[i] == kTimeShape[i];
  }
  if (!shaped) {
    return PathError(path, absl::StrCat(capsule::QuotePath(s),
                                        " is not an RFC 3339 UTC time in whole seconds, "
                                        "like 2026-01-01T00:00:00Z"));
  }
  absl::Time t;
  std::string error;
  if (!absl::ParseTime(absl::RFC3339_full, s, &t, &error)) {
    return PathError(path, absl::StrCat(capsule::QuotePath(s), " is not a valid time (", error,
                                        ")"));
  }
  return absl::ToUnixSeconds(t);
}

// A present list field: non-empty, each element converted by `convert(text, element_path)`.
template <typename T, typename Convert>
absl::StatusOr<std::vector<T>> ParseList(capnp::List<capnp::Text>::Reader list,
                                         const std::string& path, Convert convert) {
  if (list.size() == 0) {
    return PathError(path, "must not be empty (leave the field out to not constrain)");
  }
  std::vector<T> out;
  for (uint32_t i = 0; i < list.size(); ++i) {
    const std::string element_path = IndexPath(path, i);
    absl::StatusOr<std::string> text = CheckText(list[i], element_path);
    if (!text.ok()) return text.status();
    absl::StatusOr<T> value = convert(*text, element_path);
    if (!value.ok()) return value.status();
    out.push_back(std::move(*value));
  }
  return out;
}

absl::StatusOr<std::string> AsIs(const std::string& text, const std::string&) { return text; }

absl::StatusOr<std::string> AsFingerprint(const std::string& text, const std::string& path) {
  absl::StatusOr<crypto::Fingerprint> fp = crypto::Fingerprint::Parse(text);
  if (!fp.ok()) return PathError(path, std::string(fp.status().message()));
  return fp->ToString();  // canonical spelling, so that comparison is plain string equality
}

absl::StatusOr<capsule::PathGlob> AsGlob(const std::string& text, const std::string& path) {
  absl::StatusOr<capsule::PathGlob> glob = capsule::PathGlob::Parse(text);
  if (!glob.ok()) return PathError(path, std::string(glob.status().message()));
  return glob;
}

// Converts one decoded rule. `raw` is the rule's JSON object: it tells which scalar fields were
// present, which the decoded struct cannot (an absent UInt32 reads as 0).
absl::StatusOr<Rule> ConvertRule(schema::Rule::Reader in, JsonReader raw,
                                 const std::string& path) {
  Rule rule;
  const auto has = [&](std::string_view name) { return Member(raw, name).has_value(); };
  const auto field = [&](std::string_view name) { return MemberPath(path, std::string(name)); };

  if (!has("id")) return PathError(field("id"), "required");
  absl::StatusOr<std::string> id = CheckText(in.getId(), field("id"));
  if (!id.ok()) return id.status();
  if (id->size() > kMaxIdSize) {
    return PathError(field("id"), absl::StrCat("longer than ", kMaxIdSize, " bytes"));
  }
  rule.id = std::move(*id);

  if (!has("effect")) return PathError(field("effect"), "required (permit or forbid)");
  rule.effect = in.getEffect() == schema::Rule::Effect::FORBID ? Rule::Effect::kForbid
                                                               : Rule::Effect::kPermit;

  struct TextList {
    const char* name;
    capnp::List<capnp::Text>::Reader list;
    std::optional<std::vector<std::string>>* out;
    absl::StatusOr<std::string> (*convert)(const std::string&, const std::string&);
  };
  const TextList lists[] = {
      {"sites", in.getSites(), &rule.sites, AsIs},
      {"regions", in.getRegions(), &rule.regions, AsIs},
      {"storage", in.getStorage(), &rule.storage, AsIs},
      {"requesters", in.getRequesters(), &rule.requesters, AsFingerprint},
      {"purposes", in.getPurposes(), &rule.purposes, AsIs},
  };
  for (const TextList& l : lists) {
    if (!has(l.name)) continue;
    absl::StatusOr<std::vector<std::string>> values =
        ParseList<std::string>(l.list, field(l.name), l.convert);
    if (!values.ok()) return values.status();
    *l.out = std::move(*values);
  }
  if (has("paths")) {
    absl::StatusOr<std::vector<capsule::PathGlob>> globs =
        ParseList<capsule::PathGlob>(in.getPaths(), field("paths"), AsGlob);
    if (!globs.ok()) return globs.status();
    rule.paths = std::move(*globs);
  }
  if (has("notBefore")) {
    absl::StatusOr<int64_t> t = ParseTime(in.getNotBefore(), field("notBefore"));
    if (!t.ok()) return t.status();
    rule.not_before = *t;
  }
  if (has("notAfter")) {
    absl::StatusOr<int64_t> t = ParseTime(in.getNotAfter(), field("notAfter"));
    if (!t.ok()) return t.status();
    rule.not_after = *t;
  }
  if (rule.not_before && rule.not_after && *rule.not_before >= *rule.not_after) {
    return PathError(field("notAfter"), "must be later than notBefore");
  }
  if (has("maxOpens")) {
    if (in.getMaxOpens() < 1) return PathError(field("maxOpens"), "must be at least 1");
    if (rule.effect == Rule::Effect::kForbid) {
      return PathError(field("maxOpens"), "only a permit rule can limit opens");
    }
    rule.max_opens = in.getMaxOpens();
  }
  return rule;
}

// --- Evaluation ---------------------------------------------------------------------------

std::string FormatTime(int64_t seconds) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::FromUnixSeconds(seconds),
                          absl::UTCTimeZone());
}

// A path or value for a reason line: as is when plainly printable, quoted and escaped otherwise.
std::string Printable(std::string_view s) {
  const bool plain = !s.empty() && !HasControl(s) &&
                     s.find_first_of("\"\\ ") == std::string_view::npos;
  return plain ? std::string(s) : capsule::QuotePath(s);
}

std::string ListText(const std::vector<std::string>& values) {
  std::vector<std::string> shown;
  for (const std::string& v : values) shown.push_back(Printable(v));
  return absl::StrCat("[", absl::StrJoin(shown, ", "), "]");
}

std::string GlobsText(const std::vector<capsule::PathGlob>& globs) {
  std::vector<std::string> patterns;
  for (const capsule::PathGlob& g : globs) patterns.push_back(g.pattern());
  return ListText(patterns);
}

bool Contains(const std::vector<std::string>& values, const std::string& v) {
  return std::find(values.begin(), values.end(), v) != values.end();
}

std::string Reason(const Rule& rule, std::string_view what) {
  return absl::StrCat("rule ", Printable(rule.id), ": ", std::string(what));
}

// A "one of" condition on a single request value.
void CheckOneOf(const Rule& rule, const char* name,
                const std::optional<std::vector<std::string>>& allowed,
                const std::optional<std::string>& value, std::vector<std::string>* failures) {
  if (!allowed) return;
  if (!value) {
    failures->push_back(Reason(
        rule, absl::StrCat("no ", name, " given; the rule requires one of ", ListText(*allowed))));
  } else if (!Contains(*allowed, *value)) {
    failures->push_back(Reason(rule, absl::StrCat(name, " ", capsule::QuotePath(*value),
                                                  " is not one of ", ListText(*allowed))));
  }
}

// The conditions of `rule` that do not depend on the file, each failing one as a reason line.
std::vector<std::string> FileIndependentFailures(const Rule& rule, const Request& request,
                                                 const std::optional<std::string>& requester) {
  std::vector<std::string> failures;
  CheckOneOf(rule, "site", rule.sites, request.site, &failures);
  CheckOneOf(rule, "region", rule.regions, request.region, &failures);
  if (rule.storage) {
    if (!request.storage) {
      failures.push_back(Reason(rule, absl::StrCat("no storage labels given; the rule requires ",
                                                   ListText(*rule.storage))));
    } else {
      std::vector<std::string> missing;
      for (const std::string& label : *rule.storage) {
        if (!Contains(*request.storage, label)) missing.push_back(label);
      }
      if (!missing.empty()) {
        failures.push_back(Reason(rule, absl::StrCat("storage lacks ", ListText(missing),
                                                     " (site has ",
                                                     ListText(*request.storage), ")")));
      }
    }
  }
  CheckOneOf(rule, "requester", rule.requesters, requester, &failures);
  CheckOneOf(rule, "purpose", rule.purposes, request.purpose, &failures);
  if (rule.not_before && request.now < *rule.not_before) {
    failures.push_back(
        Reason(rule, absl::StrCat("not valid until ", FormatTime(*rule.not_before))));
  }
  if (rule.not_after && request.now >= *rule.not_after) {
    failures.push_back(Reason(rule, absl::StrCat("expired at ", FormatTime(*rule.not_after))));
  }
  if (rule.effect == Rule::Effect::kPermit && rule.max_opens &&
      request.opens_so_far >= *rule.max_opens) {
    failures.push_back(Reason(rule, absl::StrCat("maxOpens ", *rule.max_opens, " reached")));
  }
  return failures;
}

bool PathMatches(const Rule& rule, const std::string& file) {
  if (!rule.paths) return true;
  return std::any_of(rule.paths->begin(), rule.paths->end(),
                     [&](const capsule::PathGlob& g) { return g.MatchesPathOrAncestor(file); });
}

// Ordered, duplicate-free lines.
class Lines {
 public:
  void Add(std::string line) {
    if (seen_.insert(line).second) lines_.push_back(std::move(line));
  }
  std::vector<std::string> Take() { return std::move(lines_); }

 private:
  std::set<std::string> seen_;
  std::vector<std::string> lines_;
};

Decision DenyWith(std::string reason) {
  Decision d;
  d.reasons.push_back(std::move(reason));
  return d;
}

// --- Warnings -----------------------------------------------------------------------------

bool HasGlobMeta(std::string_view s) { return s.find_first_of("*?[\\") != std::string_view::npos; }

// The literal directory a pattern covers entirely, when it is one: the pattern without trailing
// "**" components, if no glob character remains ("" for "**": everything). Paths match through
// their ancestors, so "pii" and "pii/**" both cover pii and everything below it.
std::optional<std::string> CoveredPrefix(const capsule::PathGlob& glob) {
  std::string prefix = glob.pattern();
  while (true) {
    while (!prefix.empty() && prefix.back() == '/') prefix.pop_back();
    if (prefix == "**") {
      prefix.clear();
    } else if (absl::EndsWith(prefix, "/**")) {
      prefix.resize(prefix.size() - 3);
      continue;
    }
    break;
  }
  if (HasGlobMeta(prefix)) return std::nullopt;
  return prefix;
}

// Whether every path `permit` can match is also matched by `forbid`. Conservative: false when
// unsure.
bool GlobCovers(const capsule::PathGlob& forbid, const capsule::PathGlob& permit) {
  if (forbid.pattern() == permit.pattern()) return true;
  const std::optional<std::string> prefix = CoveredPrefix(forbid);
  if (!prefix) return false;
  if (prefix->empty()) return true;
  const std::string& p = permit.pattern();
  return p == *prefix || absl::StartsWith(p, *prefix + "/");
}

// Whether forbid rule `f` states no condition but paths, so it applies always.
bool OnlyPaths(const Rule& f) {
  return !f.sites && !f.regions && !f.storage && !f.requesters && !f.purposes && !f.not_before &&
         !f.not_after;
}

bool RuleCovers(const Rule& forbid, const Rule& permit) {
  if (!OnlyPaths(forbid)) return false;
  if (!forbid.paths) return true;
  if (!permit.paths) {
    return std::any_of(forbid.paths->begin(), forbid.paths->end(), [](const capsule::PathGlob& g) {
      const std::optional<std::string> prefix = CoveredPrefix(g);
      return prefix && prefix->empty();
    });
  }
  return std::all_of(permit.paths->begin(), permit.paths->end(), [&](const capsule::PathGlob& p) {
    return std::any_of(forbid.paths->begin(), forbid.paths->end(),
                       [&](const capsule::PathGlob& f) { return GlobCovers(f, p); });
  });
}

}  // namespace

absl::StatusOr<Policy> ParsePolicy(std::string_view json) {
  if (json.empty()) {
    return PathError("$", "policy is empty (a capsule without a policy carries no text at all)");
  }
  if (json.size() > capsule::kMaxPolicySize) {
    return PathError("$", absl::StrCat("policy is larger than ", capsule::kMaxPolicySize,
                                       " bytes"));
  }
  // Cap'n Proto 0.9.2 misreads \u escapes with hex letters (json_text.h): decode them first.
  absl::StatusOr<std::string> unescaped = DecodeUnicodeEscapes(json);
  if (!unescaped.ok()) {
    return PathError("$", absl::StrCat("policy is not valid JSON (", unescaped.status().message(),
                                       ")"));
  }
  capnp::JsonCodec codec;
  codec.setMaxNestingDepth(kMaxJsonDepth);
  capnp::MallocMessageBuilder raw_message;
  capnp::JsonValue::Builder raw = raw_message.initRoot<capnp::JsonValue>();
  KJ_IF_MAYBE(e, kj::runCatchingExceptions([&] {
                codec.decodeRaw(kj::ArrayPtr<const char>(unescaped->data(), unescaped->size()),
                                raw);
              })) {
    // KJ's descriptions read "expected <condition>; <message>": keep the message.
    std::string why = e->getDescription().cStr();
    const size_t semicolon = why.find("; ");
    if (absl::StartsWith(why, "expected ") && semicolon != std::string::npos) {
      why.erase(0, semicolon + 2);
    }
    while (!why.empty() && why.back() == '.') why.pop_back();
    // KJ echoes a piece of the input, which may hold control characters: keep one line.
    return PathError("$", absl::StrCat("policy is not valid JSON (", OneLine(why), ")"));
  }
  const JsonReader root = raw.asReader();
  BUNKER_RETURN_IF_ERROR(
      CheckValue(root, capnp::Type(capnp::Schema::from<schema::Policy>()), "$"));

  // The JSON now fits the schema, so the codec's own decoding cannot fail on it.
  capnp::MallocMessageBuilder message;
  schema::Policy::Builder decoded = message.initRoot<schema::Policy>();
  KJ_IF_MAYBE(e, kj::runCatchingExceptions(
                     [&] { codec.decode(root, capnp::toDynamic(decoded)); })) {
    return absl::InternalError(
        absl::StrCat("$: policy fits the schema but does not decode (",
                     e->getDescription().cStr(), ")"));
  }
  const schema::Policy::Reader in = decoded.asReader();

  if (!Member(root, "version")) return PathError("$.version", "required (1)");
  if (in.getVersion() != kPolicyVersion) {
    return PathError("$.version", absl::StrCat("unsupported policy version ", in.getVersion(),
                                               " (this verifier reads version ", kPolicyVersion,
                                               ")"));
  }
  const std::optional<JsonReader> raw_rules = Member(root, "rules");
  if (!raw_rules) return PathError("$.rules", "required");
  if (in.getRules().size() == 0) return PathError("$.rules", "must contain at least one rule");

  Policy policy;
  std::set<std::string> ids;
  for (uint32_t i = 0; i < in.getRules().size(); ++i) {
    const std::string path = IndexPath("$.rules", i);
    absl::StatusOr<Rule> rule = ConvertRule(in.getRules()[i], raw_rules->getArray()[i], path);
    if (!rule.ok()) return rule.status();
    if (!ids.insert(rule->id).second) {
      return PathError(absl::StrCat(path, ".id"),
                       absl::StrCat("duplicate rule id ", capsule::QuotePath(rule->id)));
    }
    policy.rules.push_back(std::move(*rule));
  }
  return policy;
}

std::vector<std::string> PolicyWarnings(const Policy& policy) {
  std::vector<std::string> warnings;
  size_t permits = 0, dead = 0;
  for (const Rule& p : policy.rules) {
    if (p.effect != Rule::Effect::kPermit) continue;
    ++permits;
    if (p.not_before && p.not_after && *p.not_before >= *p.not_after) {
      warnings.push_back(absl::StrCat("rule ", Printable(p.id),
                                      " can never permit: its time window is empty"));
      ++dead;
      continue;
    }
    for (const Rule& f : policy.rules) {
      if (f.effect == Rule::Effect::kForbid && RuleCovers(f, p)) {
        warnings.push_back(absl::StrCat("rule ", Printable(p.id), " can never permit: rule ",
                                        Printable(f.id), " forbids every path it covers"));
        ++dead;
        break;
      }
    }
  }
  // A request that does not state a requester or purpose matches no rule that names one, forbid
  // rules included (POLICY.md "Evaluation"): such a forbid rule only binds honest requests.
  for (const Rule& f : policy.rules) {
    if (f.effect != Rule::Effect::kForbid) continue;
    if (f.requesters || f.purposes) {
      warnings.push_back(absl::StrCat(
          "rule ", Printable(f.id), " forbids only requests that name ",
          f.requesters ? "a listed requester" : "a listed purpose",
          "; one that names none is not forbidden by it (forbid by path, or permit narrowly)"));
    }
  }
  if (permits == 0) {
    warnings.push_back("no rule can ever permit: the policy has no permit rule");
  } else if (dead == permits) {
    warnings.push_back("no rule can ever permit: every permit rule is blocked (see above)");
  }
  return warnings;
}

Decision Evaluate(const Policy& policy, const Request& request) {
  if (request.files.empty()) return DenyWith("the request names no files");
  std::optional<std::string> requester;
  if (request.requester) {
    absl::StatusOr<crypto::Fingerprint> fp = crypto::Fingerprint::Parse(*request.requester);
    if (!fp.ok()) {
      return DenyWith(absl::StrCat("requester ", capsule::QuotePath(*request.requester),
                                   " is not a key fingerprint"));
    }
    requester = fp->ToString();
  }

  // Rule order never matters: rules are visited by id, so the decision, including the order
  // of its lines, is the same for any order of the same rules.
  struct Checked {
    const Rule* rule;
    std::vector<std::string> failures;  // file-independent
  };
  std::vector<Checked> checked;
  for (const Rule& rule : policy.rules) {
    checked.push_back({&rule, FileIndependentFailures(rule, request, requester)});
  }
  std::stable_sort(checked.begin(), checked.end(), [](const Checked& a, const Checked& b) {
    return std::tie(a.rule->id, a.rule->effect) < std::tie(b.rule->id, b.rule->effect);
  });
  const bool any_permit_rule =
      std::any_of(policy.rules.begin(), policy.rules.end(),
                  [](const Rule& r) { return r.effect == Rule::Effect::kPermit; });

  Decision d;
  Lines reasons;
  std::set<std::string> permit_ids, forbid_ids;
  bool counts_use = false;
  size_t detailed = 0;
  for (const std::string& file : request.files) {
    const bool detail = detailed < kMaxDetailedFiles;
    absl::StatusOr<std::string> normalized = capsule::NormalizeEntryPath(file);
    if (!normalized.ok() || *normalized != file) {
      d.denied_files.push_back(file);
      if (detail) {
        ++detailed;
        reasons.Add(absl::StrCat("requested path ", capsule::QuotePath(file),
                                 " is not a normalized relative path"));
      }
      continue;
    }
    std::vector<const Rule*> unlimited, limited, forbidders;
    for (const Checked& c : checked) {
      if (!c.failures.empty() || !PathMatches(*c.rule, file)) continue;
      if (c.rule->effect == Rule::Effect::kForbid) {
        forbidders.push_back(c.rule);
      } else {
        (c.rule->max_opens ? limited : unlimited).push_back(c.rule);
      }
    }
    if (forbidders.empty() && (!unlimited.empty() || !limited.empty())) {
      // Use rules without maxOpens when they suffice, so that a file anyone may open
      // anyway does not spend a limited rule's budget.
      const std::vector<const Rule*>& used = unlimited.empty() ? limited : unlimited;
      for (const Rule* r : used) permit_ids.insert(r->id);
      if (unlimited.empty()) counts_use = true;
      continue;
    }
    d.denied_files.push_back(file);
    if (detail) ++detailed;
    if (!forbidders.empty()) {
      for (const Rule* f : forbidders) {
        // Past the detail cap, each deciding forbid rule is still named once, with a file.
        if (forbid_ids.insert(f->id).second || detail) {
          reasons.Add(Reason(*f, absl::StrCat("forbids ", Printable(file))));
        }
      }
      continue;
    }
    if (!any_permit_rule) {
      reasons.Add("no rule permits: the policy has no permit rule");
      continue;
    }
    for (const Checked& c : checked) {
      if (c.rule->effect != Rule::Effect::kPermit) continue;
      for (const std::string& f : c.failures) reasons.Add(f);
      if (c.failures.empty() && detail) {
        // Only the path can have failed.
        reasons.Add(Reason(*c.rule, absl::StrCat("path ", Printable(file), " is not matched by ",
                                                 GlobsText(*c.rule->paths))));
      }
    }
  }
  if (d.denied_files.empty()) {
    d.permit = true;
    d.rules.assign(permit_ids.begin(), permit_ids.end());
    d.counts_use = counts_use;
    return d;
  }
  d.rules.assign(forbid_ids.begin(), forbid_ids.end());
  if (d.denied_files.size() > detailed) {
    reasons.Add(absl::StrCat("... and ", d.denied_files.size() - detailed,
                             " more denied files (see the denied file list)"));
  }
  d.reasons = reasons.Take();
  return d;
}

Decision AdmitsSite(const Policy& policy, const Request& request) {
  Decision d;
  std::vector<const Rule*> rules;
  for (const Rule& rule : policy.rules) rules.push_back(&rule);
  std::sort(rules.begin(), rules.end(), [](const Rule* a, const Rule* b) { return a->id < b->id; });
  for (const Rule* rule : rules) {
    if (rule->effect != Rule::Effect::kPermit) continue;
    // Only the conditions about the site and the time: the rest is the open's business.
    Rule site_only = *rule;
    site_only.requesters.reset();
    site_only.purposes.reset();
    site_only.max_opens.reset();
    const std::vector<std::string> failures =
        FileIndependentFailures(site_only, request, std::nullopt);
    if (failures.empty()) {
      d.rules.push_back(rule->id);
    } else {
      d.reasons.insert(d.reasons.end(), failures.begin(), failures.end());
    }
  }
  d.permit = !d.rules.empty();
  if (d.permit) d.reasons.clear();
  if (!d.permit && d.reasons.empty()) d.reasons.push_back("the policy has no permit rule");
  return d;
}

}  // namespace bunker::verifier
