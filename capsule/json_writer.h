// JSON output: the one writer of JSON text (RFC 8259) and the one JSON string escaping, used by
// every command's --json output and the audit export (spec/AUDIT.md "Export").
//
// Keys are camelCase everywhere ("capsuleId", "timeUtc"): one convention for all output.
// Text is written with ", " between items and ": " after a key, on one line, so that JSON Lines
// outputs stay one value per line.
#ifndef BUNKER_CAPSULE_JSON_WRITER_H_
#define BUNKER_CAPSULE_JSON_WRITER_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "absl/strings/str_cat.h"

namespace bunker::capsule {

// Appends `s` to `*out` as a JSON string literal, whatever its bytes: `"` and `\` are
// backslash-escaped; LF, CR and tab become \n, \r and \t; other C0 controls, DEL and the C1
// controls (U+0080-U+009F) become \u00XX; each byte that does not begin a valid UTF-8 sequence
// (capsule/utf8.h) becomes U+FFFD (its UTF-8 bytes, unescaped, as spec/AUDIT.md "Export" has
// it); everything else is copied. So the literal is valid UTF-8,
// valid JSON, and cannot move a terminal's cursor.
void AppendJsonString(std::string* out, std::string_view s);
// The same, as a new string.
std::string JsonString(std::string_view s);

// Builds one JSON value: objects and arrays nested to any depth, strings (escaped once, by
// AppendJsonString), integers, fixed-point numbers, booleans and null.
//
//   JsonWriter w;
//   w.BeginObject().Key("capsule").String(id).Key("files").Number(n).EndObject();
//   std::puts(w.text().c_str());   // {"capsule": "...", "files": 3}
//
// Inside an object every value follows a Key(); inside an array none does. Misuse (a value
// without its key, a key outside an object, unbalanced Begin/End, a key that is not camelCase)
// is a bug in the caller and trips an assert in debug builds. Not thread-safe.
class JsonWriter {
 public:
  JsonWriter& BeginObject();
  JsonWriter& EndObject();
  JsonWriter& BeginArray();
  JsonWriter& EndArray();
  // The next member's key: camelCase, [a-z][A-Za-z0-9]*.
  JsonWriter& Key(std::string_view key);

  JsonWriter& String(std::string_view value);
  // Any integer type, in decimal (bool has its own Bool()).
  template <typename T,
            std::enable_if_t<std::is_integral_v<T> && !std::is_same_v<T, bool>, int> = 0>
  JsonWriter& Number(T value) {
    return Raw(absl::StrCat(value));
  }
  // `value` with `decimals` digits after the point ("%.3f"); null when it is not finite.
  JsonWriter& Fixed(double value, int decimals);
  JsonWriter& Bool(bool value);
  JsonWriter& Null();

  // An array of strings.
  JsonWriter& Strings(const std::vector<std::string>& values);
  // A string, or null.
  JsonWriter& OptionalString(const std::optional<std::string>& value);
  // An integer, or null.
  template <typename T>
  JsonWriter& OptionalNumber(const std::optional<T>& value) {
    return value ? Number(*value) : Null();
  }

  // The text written so far: one complete JSON value once every Begin has its End.
  const std::string& text() const { return out_; }

  // Whether `key` follows the key convention: [a-z][A-Za-z0-9]*.
  static bool IsCamelCase(std::string_view key);

 private:
  // Writes the separator a new value needs at this point, then `json` as is.
  JsonWriter& Raw(std::string_view json);
  void BeforeValue();

  struct Frame {
    bool object;
    bool empty = true;
  };
  std::string out_;
  std::vector<Frame> frames_;
  bool after_key_ = false;
};

}  // namespace bunker::capsule

#endif  // BUNKER_CAPSULE_JSON_WRITER_H_
