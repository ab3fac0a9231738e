#include "verifier/json_text.h"

#include <algorithm>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "capsule/utf8.h"

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

namespace {

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

// The end of the run of digits from s[i].
size_t Digits(std::string_view s, size_t i) {
  while (i < s.size() && IsDigit(s[i])) ++i;
  return i;
}

// RFC 8259 section 6: number = [ minus ] int [ frac ] [ exp ].
bool IsJsonNumber(std::string_view s) {
  size_t i = 0;
  if (i < s.size() && s[i] == '-') ++i;
  if (i >= s.size() || !IsDigit(s[i])) return false;
  if (s[i] == '0') {
    ++i;
  } else {
    i = Digits(s, i);
  }
  if (i < s.size() && s[i] == '.') {
    const size_t start = ++i;
    i = Digits(s, i);
    if (i == start) return false;
  }
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    if (i < s.size() && (s[i] == '+' || s[i] == '-')) ++i;
    const size_t start = i;
    i = Digits(s, i);
    if (i == start) return false;
  }
  return i == s.size();
}

// Whatever the decoder might read as part of a number, so that a token here is never shorter
// than the decoder's (and `+1`, `.5` are tokens, refused).
bool IsNumberByte(char c) {
  return IsDigit(c) || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E';
}

// A number as an error shows it: at most 40 bytes of it.
std::string Echo(std::string_view token) {
  if (token.size() <= 40) return std::string(token);
  return std::string(token.substr(0, 40)) + "...";
}

}  // namespace

absl::StatusOr<std::vector<std::string_view>> CheckJsonText(std::string_view s) {
  const size_t nul = s.find('\0');
  if (nul != std::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat("NUL byte at byte ", nul));
  }
  // RFC 8259 section 8.1: UTF-8. The decoder takes any bytes, and two different ids or
  // purposes that are not UTF-8 would print alike in every JSON output and audit record.
  for (size_t i = 0; i < s.size();) {
    char32_t cp;
    const size_t n = capsule::DecodeUtf8(s.substr(i), &cp);
    if (n == 0) {
      return absl::InvalidArgumentError(absl::StrCat("the text is not valid UTF-8 at byte ", i));
    }
    i += n;
  }
  std::vector<std::string_view> numbers;
  bool in_string = false;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (in_string) {
      if (c == '\\') {
        ++i;  // the escaped byte
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
      continue;
    }
    // 'e' and 'E' only continue a number: outside strings they begin no value but `true` and
    // `false`, which are not numbers.
    if (IsNumberByte(c) && c != 'e' && c != 'E') {
      size_t end = i;
      while (end < s.size() && IsNumberByte(s[end])) ++end;
      const std::string_view token = s.substr(i, end - i);
      if (!IsJsonNumber(token)) {
        return absl::InvalidArgumentError(
            absl::StrCat("number \"", Echo(token), "\" at byte ", i, " does not follow RFC 8259"));
      }
      numbers.push_back(token);
      i = end - 1;
    }
  }
  return numbers;
}

bool JsonNumberIsInteger(std::string_view s) {
  if (!s.empty() && s[0] == '-') s.remove_prefix(1);
  const size_t int_end = Digits(s, 0);
  std::string_view digits_int = s.substr(0, int_end), frac, exp;
  size_t i = int_end;
  if (i < s.size() && s[i] == '.') {
    const size_t end = Digits(s, i + 1);
    frac = s.substr(i + 1, end - i - 1);
    i = end;
  }
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) exp = s.substr(i + 1);
  // The value is D * 10^(E - |frac|), D the digits of int and frac together.
  int64_t e = 0;
  bool negative = false;
  if (!exp.empty() && (exp[0] == '+' || exp[0] == '-')) {
    negative = exp[0] == '-';
    exp.remove_prefix(1);
  }
  for (char c : exp) {
    // Saturates: a policy is at most 262144 bytes, so no D has 10^9 digits.
    e = std::min<int64_t>(e * 10 + (c - '0'), 1000000000);
  }
  if (negative) e = -e;
  const std::string digits = std::string(digits_int) + std::string(frac);
  if (digits.find_first_not_of('0') == std::string::npos) return true;  // zero
  const size_t trailing_zeros = digits.size() - 1 - digits.find_last_not_of('0');
  return e - static_cast<int64_t>(frac.size()) + static_cast<int64_t>(trailing_zeros) >= 0;
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
