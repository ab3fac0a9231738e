#include "verifier/policy.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <tuple>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "capnp/compat/json.h"
#include "capnp/dynamic.h"
#include "capnp/message.h"
#include "capnp/schema.h"
#include "verifier/json_text.h"
#include "verifier/policy_internal.h"
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
// RFC 3339 UTC with whole seconds; 'd' is a digit, anything else must match exactly.
constexpr std::string_view kTimeShape = "dddd-dd-ddTdd:dd:ddZ";

using JsonReader = capnp::JsonValue::Reader;

using policy_internal::HasControl;
using policy_internal::ToString;

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

// The text's number tokens (CheckJsonText), taken in document order as CheckValue meets the
// numbers of the decoded value: that value holds doubles only, and a double cannot tell 1 from
// 0.99999999999999999. CheckValue walks the value in document order and stops at the first
// error, so the n-th number it meets is the n-th token; Next checks that it reads as the same
// double, so a walk out of step fails closed.
class NumberTokens {
 public:
  explicit NumberTokens(std::vector<std::string_view> tokens) : tokens_(std::move(tokens)) {}
  absl::StatusOr<std::string_view> Next(double value, const std::string& path) {
    double parsed = 0;
    if (next_ == tokens_.size() ||
        !absl::SimpleAtod(absl::string_view(tokens_[next_].data(), tokens_[next_].size()),
                          &parsed) ||
        (std::isfinite(parsed) && parsed != value)) {
      return absl::InternalError(absl::StrCat(path, ": the policy's numbers are out of step"));
    }
    return tokens_[next_++];
  }

 private:
  std::vector<std::string_view> tokens_;
  size_t next_ = 0;
};

// An integer JSON number within [min, max]: its text must stand for an integer exactly. Doubles
// represent every integer the schema's 32-bit fields can hold exactly; 64-bit fields are limited
// to the exactly representable range.
absl::Status CheckInteger(JsonReader v, const std::string& path, double min, double max,
                          NumberTokens& numbers) {
  if (!v.isNumber()) return WrongType(path, "an integer", v);
  const double n = v.getNumber();
  absl::StatusOr<std::string_view> token = numbers.Next(n, path);
  if (!token.ok()) return token.status();
  if (!JsonNumberIsInteger(*token) || !std::isfinite(n) || std::floor(n) != n) {
    return PathError(path, "expected an integer");
  }
  if (n < min || n > max) {
    return PathError(path, absl::StrFormat("%.0f is out of range (%.0f to %.0f)", n, min, max));
  }
  return absl::OkStatus();
}

absl::Status CheckValue(JsonReader v, capnp::Type type, const std::string& path,
                        NumberTokens& numbers);

// Every member of `v` must name a field of `schema`, once, with a value of the field's type.
absl::Status CheckObject(JsonReader v, capnp::StructSchema schema, const std::string& path,
                         NumberTokens& numbers) {
  if (!v.isObject()) return WrongType(path, "an object", v);
  std::set<std::string> seen;
  for (capnp::JsonValue::Field::Reader member : v.getObject()) {
    const std::string name = ToString(member.getName());
    const std::string member_path = MemberPath(path, name);
    if (!seen.insert(name).second) return PathError(member_path, "duplicate field");
    KJ_IF_MAYBE(field, schema.findFieldByName(member.getName())) {
      BUNKER_RETURN_IF_ERROR(
          CheckValue(member.getValue(), field->getType(), member_path, numbers));
    } else {
      return PathError(member_path,
                       absl::StrCat("unknown field (known: ", FieldNames(schema), ")"));
    }
  }
  return absl::OkStatus();
}

// Checks `v` against a schema type: the one place that knows how JSON maps onto the schema.
absl::Status CheckValue(JsonReader v, capnp::Type type, const std::string& path,
                        NumberTokens& numbers) {
  constexpr double kSafe = 9007199254740991.0;  // 2^53 - 1
  switch (type.which()) {
    case capnp::schema::Type::BOOL:
      return v.isBoolean() ? absl::OkStatus() : WrongType(path, "true or false", v);
    case capnp::schema::Type::INT8: return CheckInteger(v, path, -128, 127, numbers);
    case capnp::schema::Type::INT16: return CheckInteger(v, path, -32768, 32767, numbers);
    case capnp::schema::Type::INT32:
      return CheckInteger(v, path, -2147483648.0, 2147483647.0, numbers);
    case capnp::schema::Type::INT64: return CheckInteger(v, path, -kSafe, kSafe, numbers);
    case capnp::schema::Type::UINT8: return CheckInteger(v, path, 0, 255, numbers);
    case capnp::schema::Type::UINT16: return CheckInteger(v, path, 0, 65535, numbers);
    case capnp::schema::Type::UINT32: return CheckInteger(v, path, 0, 4294967295.0, numbers);
    case capnp::schema::Type::UINT64: return CheckInteger(v, path, 0, kSafe, numbers);
    case capnp::schema::Type::FLOAT32:
    case capnp::schema::Type::FLOAT64:
      if (!v.isNumber()) return WrongType(path, "a number", v);
      return numbers.Next(v.getNumber(), path).status();
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
        BUNKER_RETURN_IF_ERROR(CheckValue(items[i], element, IndexPath(path, i), numbers));
      }
      return absl::OkStatus();
    }
    case capnp::schema::Type::STRUCT:
      return CheckObject(v, type.asStruct(), path, numbers);
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
  // absl reads second 60 at any minute as the next minute's first second; only 23:59:60 can be
  // a leap second (spec/POLICY.md), so any other :60 is a typo, not a time.
  if (s.compare(17, 2, "60") == 0 && s.compare(11, 5, "23:59") != 0) {
    return PathError(path, absl::StrCat(capsule::QuotePath(s),
                                        " is not a valid time (second 60 is only 23:59:60)"));
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
  // The decoder would stop at a NUL and take `1.`: refuse both first (json_text.h).
  absl::StatusOr<std::vector<std::string_view>> tokens = CheckJsonText(*unescaped);
  if (!tokens.ok()) {
    return PathError("$", absl::StrCat("policy is not valid JSON (", tokens.status().message(),
                                       ")"));
  }
  NumberTokens numbers(std::move(*tokens));
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
      CheckValue(root, capnp::Type(capnp::Schema::from<schema::Policy>()), "$", numbers));

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

}  // namespace bunker::verifier
