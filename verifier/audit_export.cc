// Audit records as JSON Lines and CSV (spec/AUDIT.md "Export").
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "verifier/audit_log.h"
#include "capsule/utc.h"

namespace bunker::verifier {
namespace {

// --- Export helpers ------------------------------------------------------------------------

// Appends `s` as UTF-8, replacing each byte that does not start a valid sequence with U+FFFD.
// `emit` gets each valid code point's bytes.
template <typename Emit>
void ForEachCodePoint(std::string_view s, Emit emit) {
  static constexpr std::string_view kReplacement = "\xEF\xBF\xBD";
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    size_t len = 0;
    uint32_t cp = 0;
    if (c < 0x80) {
      len = 1;
      cp = c;
    } else if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
      cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      cp = c & 0x07;
    }
    bool ok = len > 0 && i + len <= s.size();
    for (size_t k = 1; ok && k < len; ++k) {
      const unsigned char d = static_cast<unsigned char>(s[i + k]);
      if ((d & 0xC0) != 0x80) ok = false;
      cp = cp << 6 | (d & 0x3F);
    }
    // Overlong forms, surrogates and values past U+10FFFF are not UTF-8.
    if (ok && ((len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
               (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)))) {
      ok = false;
    }
    if (ok) {
      emit(cp, s.substr(i, len));
      i += len;
    } else {
      emit(0xFFFD, kReplacement);
      ++i;
    }
  }
}

void AppendJsonString(std::string& out, std::string_view s) {
  out += '"';
  ForEachCodePoint(s, [&out](uint32_t cp, std::string_view bytes) {
    switch (cp) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        // C0, DEL and C1 controls escaped, so that no line can drive a terminal.
        if (cp < 0x20 || (cp >= 0x7F && cp <= 0x9F)) {
          absl::StrAppendFormat(&out, "\\u%04x", cp);
        } else {
          out.append(bytes.data(), bytes.size());
        }
    }
  });
  out += '"';
}

void AppendJsonList(std::string& out, const std::vector<std::string>& items) {
  out += '[';
  for (size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out += ", ";
    AppendJsonString(out, items[i]);
  }
  out += ']';
}

std::string JsonList(const std::vector<std::string>& items) {
  std::string out;
  AppendJsonList(out, items);
  return out;
}

// A quoted RFC 4180 cell. A cell a spreadsheet would evaluate (=, +, -, @, tab, CR first) is
// prefixed with an apostrophe: requesters choose the purpose text, and auditors open exports
// in spreadsheets.
void AppendCsvCell(std::string& out, std::string_view s) {
  std::string clean;
  ForEachCodePoint(
      s, [&clean](uint32_t, std::string_view bytes) { clean.append(bytes.data(), bytes.size()); });
  out += '"';
  if (!clean.empty() && std::string_view("=+-@\t\r").find(clean[0]) != std::string_view::npos) {
    out += '\'';
  }
  for (char c : clean) {
    if (c == '"') out += '"';
    out += c;
  }
  out += '"';
}

}  // namespace

std::string AuditRecordToJson(uint64_t index, const AuditRecord& r) {
  std::string out = absl::StrCat("{\"index\": ", index, ", \"time\": ", r.time,
                                 ", \"timeUtc\": \"", capsule::FormatUtc(r.time), "\"");
  const std::pair<const char*, const std::string*> texts[] = {
      {"event", &r.event},    {"decision", &r.decision}, {"capsuleId", &r.capsule_id},
      {"issuer", &r.issuer},  {"site", &r.site},         {"requester", &r.requester},
      {"purpose", &r.purpose}};
  for (const auto& [key, value] : texts) {
    absl::StrAppend(&out, ", \"", key, "\": ");
    AppendJsonString(out, *value);
  }
  const std::pair<const char*, const std::vector<std::string>*> lists[] = {
      {"paths", &r.paths}, {"rules", &r.rules}, {"reasons", &r.reasons}};
  for (const auto& [key, value] : lists) {
    absl::StrAppend(&out, ", \"", key, "\": ");
    AppendJsonList(out, *value);
  }
  absl::StrAppend(&out, ", \"uses\": ", r.uses, ", \"uid\": ",
                  r.uid ? absl::StrCat(*r.uid) : "null", ", \"pid\": ",
                  r.pid ? absl::StrCat(*r.pid) : "null", "}");
  return out;
}

std::string AuditCsvHeader() {
  return "index,time,time_utc,event,decision,capsule_id,issuer,site,requester,purpose,paths,"
         "rules,reasons,uses,uid,pid";
}

std::string AuditRecordToCsv(uint64_t index, const AuditRecord& r) {
  std::string out = absl::StrCat(index, ",", r.time, ",", capsule::FormatUtc(r.time));
  for (const std::string* v :
       {&r.event, &r.decision, &r.capsule_id, &r.issuer, &r.site, &r.requester, &r.purpose}) {
    out += ',';
    AppendCsvCell(out, *v);
  }
  for (const std::vector<std::string>* v : {&r.paths, &r.rules, &r.reasons}) {
    out += ',';
    AppendCsvCell(out, JsonList(*v));
  }
  // Numbers, unquoted like the first cells; an absent uid or pid is an empty cell.
  absl::StrAppend(&out, ",", r.uses, ",", r.uid ? absl::StrCat(*r.uid) : "", ",",
                  r.pid ? absl::StrCat(*r.pid) : "");
  return out;
}

}  // namespace bunker::verifier
