#include "verifier/json_text.h"

#include <cstdint>

namespace bunker::verifier {
namespace {

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// The code unit of the 4 hex digits at s[i..i+3], or -1.
int32_t Hex4(std::string_view s, size_t i) {
  if (i + 4 > s.size()) return -1;
  int32_t v = 0;
  for (size_t k = 0; k < 4; ++k) {
    const int h = HexValue(s[i + k]);
    if (h < 0) return -1;
    v = v * 16 + h;
  }
  return v;
}

void AppendUtf8(uint32_t cp, std::string& out) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xc0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xe0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else {
    out += static_cast<char>(0xf0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  }
}

bool DigitsOnly(std::string_view s, size_t i) {
  for (size_t k = 0; k < 4; ++k) {
    if (s[i + k] < '0' || s[i + k] > '9') return false;
  }
  return true;
}

}  // namespace

absl::StatusOr<std::string> DecodeUnicodeEscapes(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  bool in_string = false;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (!in_string) {
      if (c == '"') in_string = true;
      out += c;
      continue;
    }
    if (c == '"') {
      in_string = false;
      out += c;
      continue;
    }
    if (c != '\\') {
      out += c;
      continue;
    }
    if (i + 1 >= s.size()) return absl::InvalidArgumentError("unterminated escape in JSON");
    if (s[i + 1] != 'u') {
      out += c;
      out += s[++i];  // \" \\ \n ...: the decoder reads these right
      continue;
    }
    const int32_t unit = Hex4(s, i + 2);
    if (unit < 0) return absl::InvalidArgumentError("malformed \\u escape in JSON");
    uint32_t cp = static_cast<uint32_t>(unit);
    size_t consumed = 6;
    if (cp >= 0xd800 && cp <= 0xdbff) {
      const int32_t low = (i + 7 < s.size() && s[i + 6] == '\\' && s[i + 7] == 'u')
                              ? Hex4(s, i + 8)
                              : -1;
      if (low < 0xdc00 || low > 0xdfff) {
        return absl::InvalidArgumentError("lone surrogate in a \\u escape in JSON");
      }
      cp = 0x10000 + ((cp - 0xd800) << 10) + (static_cast<uint32_t>(low) - 0xdc00);
      consumed = 12;
    } else if (cp >= 0xdc00 && cp <= 0xdfff) {
      return absl::InvalidArgumentError("lone surrogate in a \\u escape in JSON");
    }
    if (cp < 0x20 || cp == '"' || cp == '\\') {
      // Must stay an escape; safe only when the decoder will read it right.
      if (!DigitsOnly(s, i + 2)) {
        return absl::InvalidArgumentError(
            "\\u escape of a control character with hex letters is not supported");
      }
      out.append(s.substr(i, 6));
    } else {
      AppendUtf8(cp, out);
    }
    i += consumed - 1;
  }
  return out;
}

std::string OneLine(std::string_view text) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : text) {
    if (c < 0x20 || c == 0x7f) {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

}  // namespace bunker::verifier
