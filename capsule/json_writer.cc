#include "capsule/json_writer.h"

#include <cassert>
#include <cmath>

#include "absl/strings/str_format.h"
#include "capsule/utf8.h"

namespace bunker::capsule {

void AppendJsonString(std::string* out, std::string_view s) {
  *out += '"';
  size_t i = 0;
  while (i < s.size()) {
    char32_t cp;
    const size_t len = DecodeUtf8(s.substr(i), &cp);
    if (len == 0) {
      *out += "\xef\xbf\xbd";  // U+FFFD: not UTF-8, so the output stays valid UTF-8
      ++i;
      continue;
    }
    switch (cp) {
      case '"': *out += "\\\""; break;
      case '\\': *out += "\\\\"; break;
      case '\n': *out += "\\n"; break;
      case '\r': *out += "\\r"; break;
      case '\t': *out += "\\t"; break;
      default:
        // C0, DEL and C1 controls escaped, so that no output can drive a terminal.
        if (cp < 0x20 || (cp >= 0x7f && cp <= 0x9f)) {
          absl::StrAppendFormat(out, "\\u%04x", static_cast<uint32_t>(cp));
        } else {
          out->append(s.substr(i, len));
        }
    }
    i += len;
  }
  *out += '"';
}

std::string JsonString(std::string_view s) {
  std::string out;
  AppendJsonString(&out, s);
  return out;
}

bool JsonWriter::IsCamelCase(std::string_view key) {
  if (key.empty() || !(key[0] >= 'a' && key[0] <= 'z')) return false;
  for (char c : key) {
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))) {
      return false;
    }
  }
  return true;
}

void JsonWriter::BeforeValue() {
  if (frames_.empty()) {
    assert(out_.empty() && "one JsonWriter writes one value");
    return;
  }
  Frame& f = frames_.back();
  if (f.object) {
    assert(after_key_ && "a value inside an object needs its Key() first");
    after_key_ = false;
    return;
  }
  if (!f.empty) out_ += ", ";
  f.empty = false;
}

JsonWriter& JsonWriter::Raw(std::string_view json) {
  BeforeValue();
  out_.append(json);
  return *this;
}

JsonWriter& JsonWriter::BeginObject() {
  BeforeValue();
  out_ += '{';
  frames_.push_back({/*object=*/true});
  return *this;
}

JsonWriter& JsonWriter::EndObject() {
  assert(!frames_.empty() && frames_.back().object && !after_key_);
  frames_.pop_back();
  out_ += '}';
  return *this;
}

JsonWriter& JsonWriter::BeginArray() {
  BeforeValue();
  out_ += '[';
  frames_.push_back({/*object=*/false});
  return *this;
}

JsonWriter& JsonWriter::EndArray() {
  assert(!frames_.empty() && !frames_.back().object);
  frames_.pop_back();
  out_ += ']';
  return *this;
}

JsonWriter& JsonWriter::Key(std::string_view key) {
  assert(!frames_.empty() && frames_.back().object && !after_key_);
  assert(IsCamelCase(key) && "JSON keys are camelCase");
  Frame& f = frames_.back();
  if (!f.empty) out_ += ", ";
  f.empty = false;
  AppendJsonString(&out_, key);
  out_ += ": ";
  after_key_ = true;
  return *this;
}

JsonWriter& JsonWriter::String(std::string_view value) {
  BeforeValue();
  AppendJsonString(&out_, value);
  return *this;
}

JsonWriter& JsonWriter::Fixed(double value, int decimals) {
  if (!std::isfinite(value)) return Null();
  return Raw(absl::StrFormat("%.*f", decimals, value));
}

JsonWriter& JsonWriter::Bool(bool value) { return Raw(value ? "true" : "false"); }

JsonWriter& JsonWriter::Null() { return Raw("null"); }

JsonWriter& JsonWriter::Strings(const std::vector<std::string>& values) {
  BeginArray();
  for (const std::string& v : values) String(v);
  return EndArray();
}

JsonWriter& JsonWriter::OptionalString(const std::optional<std::string>& value) {
  return value ? String(*value) : Null();
}

}  // namespace bunker::capsule
