// Audit records as JSON Lines and CSV (spec/AUDIT.md "Export").
#include <utility>

#include "absl/strings/str_cat.h"
#include "capsule/json_writer.h"
#include "capsule/utc.h"
#include "capsule/utf8.h"
#include "verifier/audit_log.h"

namespace bunker::verifier {
namespace {

// --- Export helpers ------------------------------------------------------------------------

std::string JsonList(const std::vector<std::string>& items) {
  capsule::JsonWriter w;
  w.Strings(items);
  return w.text();
}

// A quoted RFC 4180 cell. A cell a spreadsheet would evaluate (=, +, -, @, tab, CR first) is
// prefixed with an apostrophe: requesters choose the purpose text, and auditors open exports
// in spreadsheets.
void AppendCsvCell(std::string& out, std::string_view s) {
  const std::string clean = capsule::ToValidUtf8(s);
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

void WriteAuditRecordJson(capsule::JsonWriter* w, uint64_t index, const AuditRecord& r) {
  w->BeginObject();
  w->Key("index").Number(index);
  w->Key("time").Number(r.time);
  w->Key("timeUtc").String(capsule::FormatUtc(r.time));
  const std::pair<const char*, const std::string*> texts[] = {
      {"event", &r.event},    {"decision", &r.decision}, {"capsuleId", &r.capsule_id},
      {"issuer", &r.issuer},  {"site", &r.site},         {"requester", &r.requester},
      {"purpose", &r.purpose}};
  for (const auto& [key, value] : texts) w->Key(key).String(*value);
  const std::pair<const char*, const std::vector<std::string>*> lists[] = {
      {"paths", &r.paths}, {"rules", &r.rules}, {"reasons", &r.reasons}};
  for (const auto& [key, value] : lists) w->Key(key).Strings(*value);
  w->Key("uses").Number(r.uses);
  w->Key("uid").OptionalNumber(r.uid);
  w->Key("pid").OptionalNumber(r.pid);
  w->EndObject();
}

std::string AuditRecordToJson(uint64_t index, const AuditRecord& r) {
  capsule::JsonWriter w;
  WriteAuditRecordJson(&w, index, r);
  return w.text();
}

std::string AuditCsvHeader() {
  return "index,time,timeUtc,event,decision,capsuleId,issuer,site,requester,purpose,paths,"
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
