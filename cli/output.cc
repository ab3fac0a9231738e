// Output helpers: progress, sizes, terminal-safe text, JSON values, times.
#include <unistd.h>

#include <cstdio>
#include <ctime>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "capsule/paths.h"
#include "cli/context.h"

namespace bunker::cli {

Progress::Progress(std::string label, uint64_t total, bool enabled)
    : label_(std::move(label)),
      total_(total),
      enabled_(enabled && ::isatty(STDERR_FILENO) == 1),
      start_(std::chrono::steady_clock::now()),
      last_(start_) {}

Progress::~Progress() { Finish(); }

void Progress::Update(uint64_t done) {
  if (!enabled_) return;
  const auto now = std::chrono::steady_clock::now();
  if (drawn_ && now - last_ < std::chrono::milliseconds(200)) return;
  last_ = now;
  const double secs = std::chrono::duration<double>(now - start_).count();
  const double rate = secs > 0 ? static_cast<double>(done) / secs : 0;
  std::string line = absl::StrCat(label_, "  ", HumanBytes(done));
  if (total_ > 0) absl::StrAppend(&line, " / ", HumanBytes(total_));
  absl::StrAppend(&line, "  ", HumanBytes(static_cast<uint64_t>(rate)), "/s");
  if (total_ > done && rate > 0) {
    const uint64_t eta = static_cast<uint64_t>(static_cast<double>(total_ - done) / rate);
    absl::StrAppend(&line, absl::StrFormat("  ETA %d:%02d", eta / 60, eta % 60));
  }
  std::fprintf(stderr, "\r\033[K%s", line.c_str());
  std::fflush(stderr);
  drawn_ = true;
}

void Progress::SetTotal(uint64_t total) { total_ = total; }

void Progress::Finish() {
  if (drawn_) {
    std::fprintf(stderr, "\r\033[K");
    std::fflush(stderr);
    drawn_ = false;
  }
}

std::string HumanBytes(uint64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 5) {
    v /= 1024;
    ++u;
  }
  if (u == 0) return absl::StrCat(bytes, " B");
  return absl::StrFormat("%.1f %s", v, units[u]);
}

absl::StatusOr<uint64_t> ParseSize(const std::string& text) {
  std::string t = absl::AsciiStrToUpper(text);
  uint64_t mult = 1;
  for (const char* suffix : {"IB", "B"}) {
    if (absl::EndsWith(t, suffix) && t.size() > strlen(suffix)) {
      t.resize(t.size() - strlen(suffix));
      break;
    }
  }
  if (!t.empty()) {
    switch (t.back()) {
      case 'K': mult = uint64_t{1} << 10; t.pop_back(); break;
      case 'M': mult = uint64_t{1} << 20; t.pop_back(); break;
      case 'G': mult = uint64_t{1} << 30; t.pop_back(); break;
      default: break;
    }
  }
  uint64_t n = 0;
  if (t.empty() || !absl::SimpleAtoi(t, &n) || n > (~uint64_t{0}) / mult) {
    return absl::InvalidArgumentError(absl::StrCat("bad size '", text, "' (e.g. 1M, 256K)"));
  }
  return n * mult;
}

std::string TerminalSafe(std::string_view text, bool keep_newlines) {
  return capsule::EscapeForTerminal(text, keep_newlines);
}

namespace {

// The length of the well-formed UTF-8 sequence at s[i] (RFC 3629), or 0 if there is none.
size_t Utf8SequenceLength(std::string_view s, size_t i) {
  const unsigned char c = static_cast<unsigned char>(s[i]);
  size_t n = 0;
  uint32_t min = 0;
  if (c < 0x80) return 1;
  if ((c & 0xe0) == 0xc0) {
    n = 2;
    min = 0x80;
  } else if ((c & 0xf0) == 0xe0) {
    n = 3;
    min = 0x800;
  } else if ((c & 0xf8) == 0xf0) {
    n = 4;
    min = 0x10000;
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  uint32_t cp = c & (0x7f >> n);
  for (size_t k = 1; k < n; ++k) {
    const unsigned char cc = static_cast<unsigned char>(s[i + k]);
    if ((cc & 0xc0) != 0x80) return 0;
    cp = (cp << 6) | (cc & 0x3f);
  }
  if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
  return n;
}

}  // namespace

std::string JsonString(std::string_view s) {
  std::string out = "\"";
  for (size_t i = 0; i < s.size();) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    const size_t n = Utf8SequenceLength(s, i);
    if (n == 0) {
      out += "\\ufffd";  // not UTF-8: keep the output valid JSON
      ++i;
      continue;
    }
    if (n > 1) {
      out.append(s.substr(i, n));
      i += n;
      continue;
    }
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20 || c == 0x7f) {
          out += absl::StrFormat("\\u%04x", c);
        } else {
          out += static_cast<char>(c);
        }
    }
    ++i;
  }
  out += "\"";
  return out;
}

std::string JsonList(const std::vector<std::string>& values) {
  std::string out = "[";
  for (size_t i = 0; i < values.size(); ++i) {
    if (i > 0) out += ", ";
    out += JsonString(values[i]);
  }
  return out + "]";
}

std::string JsonOptional(const std::optional<std::string>& value) {
  return value ? JsonString(*value) : "null";
}

}  // namespace bunker::cli
