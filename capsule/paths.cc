#include "capsule/paths.h"

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "capsule/format.h"
#include "capsule/utf8.h"

// Debian's Abseil is built with its own absl::string_view, which absl::StrCat needs; hence the
// std::string(...) around std::string_view arguments below (error paths only).

namespace bunker::capsule {
namespace {

// Errors echo at most this much of a path: an archive can carry a megabyte-long pax path, and
// an error line is not the place to print it.
constexpr size_t kEchoLimit = 256;

std::string Echo(std::string_view path) {
  if (path.size() <= kEchoLimit) return QuotePath(path);
  return absl::StrCat(QuotePath(path.substr(0, kEchoLimit)), "... (", path.size(), " bytes)");
}

absl::Status UnsafePath(std::string_view path, std::string_view rule) {
  return absl::InvalidArgumentError(
      absl::StrCat("unsafe path ", Echo(path), " in archive: ", std::string(rule)));
}

absl::Status UnsafeSymlink(std::string_view link, std::string_view target, std::string_view rule) {
  return absl::InvalidArgumentError(absl::StrCat("unsafe symlink ", Echo(link), " -> ",
                                                 Echo(target), " in archive: ", std::string(rule)));
}

// Code points that are valid UTF-8 yet would let a name break or disguise an error line on a
// terminal: C1 controls (0x9b is CSI), line/paragraph separators, zero-width and bidirectional
// formatting characters ("Trojan Source"), the BOM.
bool IsDisguising(char32_t cp) {
  return (cp >= 0x80 && cp <= 0x9f) || (cp >= 0x200b && cp <= 0x200f) ||
         (cp >= 0x2028 && cp <= 0x202e) || (cp >= 0x2060 && cp <= 0x2069) || cp == 0xfeff;
}

// Appends s[i...] as one escaped unit: a C0 control or DEL as \xNN, a byte that does not
// begin a valid UTF-8 sequence as \xNN, a disguising code point as \uXXXX, anything else as
// is. Returns the number of bytes consumed.
size_t AppendEscapedUnit(std::string_view s, size_t i, std::string& out) {
  const unsigned char c = static_cast<unsigned char>(s[i]);
  if (c < 0x20 || c == 0x7f) {
    absl::StrAppendFormat(&out, "\\x%02x", c);
    return 1;
  }
  char32_t cp;
  const size_t len = DecodeUtf8(s.substr(i), &cp);
  if (len == 0) {
    absl::StrAppendFormat(&out, "\\x%02x", c);
    return 1;
  }
  if (IsDisguising(cp)) {
    absl::StrAppendFormat(&out, "\\u%04x", static_cast<uint32_t>(cp));
  } else {
    out.append(s.substr(i, len));
  }
  return len;
}

}  // namespace

std::string EscapeForTerminal(std::string_view text, bool keep_newlines) {
  std::string out;
  out.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    if (keep_newlines && (text[i] == '\n' || text[i] == '\t')) {
      out += text[i++];
      continue;
    }
    i += AppendEscapedUnit(text, i, out);
  }
  return out;
}

bool IsPlainText(std::string_view text) {
  size_t i = 0;
  while (i < text.size()) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (c < 0x20 || c == 0x7f) return false;
    char32_t cp;
    const size_t len = DecodeUtf8(text.substr(i), &cp);
    if (len == 0 || IsDisguising(cp)) return false;
    i += len;
  }
  return true;
}

std::string QuotePath(std::string_view path) {
  std::string out = "\"";
  size_t i = 0;
  while (i < path.size()) {
    const unsigned char c = static_cast<unsigned char>(path[i]);
    switch (c) {
      case '"':
        out += "\\\"";
        ++i;
        continue;
      case '\\':
        out += "\\\\";
        ++i;
        continue;
      case '\n':
        out += "\\n";
        ++i;
        continue;
      case '\r':
        out += "\\r";
        ++i;
        continue;
      case '\t':
        out += "\\t";
        ++i;
        continue;
      default:
        break;
    }
    i += AppendEscapedUnit(path, i, out);
  }
  out += '"';
  return out;
}

absl::StatusOr<std::string> NormalizeEntryPath(std::string_view path) {
  if (path.find('\0') != std::string_view::npos) return UnsafePath(path, "NUL byte");
  std::string_view p = path;
  while (p.substr(0, 2) == "./") p.remove_prefix(2);
  if (!p.empty() && p.back() == '/') p.remove_suffix(1);
  if (p.empty()) return UnsafePath(path, "empty path");
  if (p.front() == '/') return UnsafePath(path, "absolute path");
  if (p.size() > kMaxPathSize) {
    return UnsafePath(path, absl::StrCat("longer than ", kMaxPathSize, " bytes"));
  }
  size_t start = 0;
  while (true) {
    const size_t slash = p.find('/', start);
    const std::string_view part =
        p.substr(start, slash == std::string_view::npos ? std::string_view::npos : slash - start);
    if (part.empty()) return UnsafePath(path, "empty component");
    if (part == ".") return UnsafePath(path, "'.' component");
    if (part == "..") return UnsafePath(path, "'..' component");
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  return std::string(p);
}

absl::Status CheckSymlinkTarget(std::string_view link_path, std::string_view target) {
  if (target.find('\0') != std::string_view::npos) {
    return UnsafeSymlink(link_path, target, "NUL byte in target");
  }
  if (target.empty()) return UnsafeSymlink(link_path, target, "empty target");
  if (target.size() > kMaxPathSize) {
    return UnsafeSymlink(link_path, target,
                         absl::StrCat("target longer than ", kMaxPathSize, " bytes"));
  }
  if (target.front() == '/') return UnsafeSymlink(link_path, target, "absolute target");

  // Depth of the directory holding the link. Every component of link_path is a real directory:
  // the extractor never creates an entry below a symlink.
  int64_t depth = 0;
  for (char c : link_path) depth += c == '/';

  // ".." is accepted only as a leading run. Lexical resolution is exact for that run, because it
  // climbs through the link's real parent directories. A ".." after a name would step back out
  // of whatever that name resolves to, and if the name is itself a symlink (say "l1 -> ..") the
  // result climbs higher than the lexical count says: "l2 -> l1/.." would reach the parent of
  // the root. With ".." only in front, every name that follows moves down from a point inside
  // the tree, into a directory or into a symlink that was itself checked the same way.
  bool seen_name = false;
  size_t start = 0;
  while (start <= target.size()) {
    size_t slash = target.find('/', start);
    if (slash == std::string_view::npos) slash = target.size();
    const std::string_view part = target.substr(start, slash - start);
    start = slash + 1;
    if (part.empty() || part == ".") continue;
    if (part == "..") {
      if (seen_name) {
        return UnsafeSymlink(link_path, target,
                             "'..' after a name in target (it could climb out through another "
                             "symlink)");
      }
      if (--depth < 0) return UnsafeSymlink(link_path, target, "target climbs above the root");
    } else {
      seen_name = true;
    }
  }
  return absl::OkStatus();
}

}  // namespace bunker::capsule
