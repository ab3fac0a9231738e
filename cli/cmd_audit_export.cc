// capsule audit export: every entry as JSON lines or CSV.
#include "cli/audit_common.h"

#include <string>
#include <unistd.h>

#include "capsule/io.h"
#include "verifier/audit_log.h"

namespace bunker::cli::audit {

int RunExport(int argc, char** argv) {
  static const CommandSpec kSpec{
      "audit export",
      "--log PATH --format jsonl|csv",
      "Write every entry of an audit log to stdout, as JSON lines or CSV.",
      "This only reads the log; 'capsule audit verify' checks it. JSON lines keep every\n"
      "field (invalid UTF-8 becomes U+FFFD). CSV is for spreadsheets: lists are JSON arrays,\n"
      "and a cell starting with = + - @ gets a leading apostrophe so it is not run as a formula.",
      {},
      {{"log", true, false, "the audit log", "PATH"},
       {"format", true, false, "jsonl or csv", "FORMAT"}}};
  Context ctx(kSpec, argc, argv);
  if (!ctx.Parse()) return ctx.exit_code();
  const Args& a = ctx.args();
  if (!a.Has("log")) return ctx.UsageError("--log is required");
  const std::string format = a.Get("format");
  if (format != "jsonl" && format != "csv") return ctx.UsageError("--format must be jsonl or csv");
  capsule::FdWriter out(STDOUT_FILENO);
  absl::Status write_status;
  auto emit = [&out, &write_status](const std::string& line) {
    if (!write_status.ok()) return false;
    write_status =
        out.Append(absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(line.data()), line.size()));
    return write_status.ok();
  };
  // The CSV header goes out with the first record (or at the end, for a log with none): a log
  // that cannot be read leaves stdout empty.
  bool header_due = format == "csv";
  auto header = [&] {
    if (header_due) emit(verifier::AuditCsvHeader() + "\r\n");
    header_due = false;
  };
  uint64_t entries = 0;
  absl::Status s = verifier::ForEachAuditRecord(
      a.Get("log"), [&](uint64_t index, const verifier::AuditRecord& r) {
        header();
        entries = index + 1;
        return format == "csv" ? emit(verifier::AuditRecordToCsv(index, r) + "\r\n")
                               : emit(verifier::AuditRecordToJson(index, r) + "\n");
      });
  if (s.ok()) header();
  if (write_status.ok()) write_status = out.Flush();
  if (!s.ok()) {
    return ctx.Fail(s, absl::IsDataLoss(s) ? "run 'capsule audit verify' to find what is wrong"
                                           : "");
  }
  if (!write_status.ok()) return ctx.Fail(write_status);
  WarnIfUnsigned(a.Get("log"), entries);
  return kExitOk;
}

}  // namespace bunker::cli::audit
