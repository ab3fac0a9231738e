// Output helpers: progress, sizes, terminal-safe text.
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

}  // namespace bunker::cli
