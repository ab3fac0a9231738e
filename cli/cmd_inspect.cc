// capsule inspect: everything about a capsule that is not secret, without any key.
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "capsule/io.h"
#include "capsule/json_writer.h"
#include "capsule/reader.h"
#include "capsule/s3_client.h"
#include "cli/context.h"
#include "crypto/sha256.h"
#include "capsule/utc.h"

namespace bunker::cli {

int RunInspect(int argc, char** argv) {
  static const CommandSpec kSpec{
      "inspect",
      "CAPSULE [--json]",
      "Show a capsule's public facts: id, issuer, creation time, suite, sizes, chunk count,\n"
      "recipients and policy. Needs no key; checks the structure and the issuer's signature\n"
      "(but not whether you trust the issuer: use `capsule verify --trust` for that).",
      "",
      {"CAPSULE"},
      {{"json", false, false, "print as JSON"}}};
  Context ctx(kSpec, argc, argv);
  if (!ctx.Parse()) return ctx.exit_code();
  const std::string path = ctx.args().positionals()[0];
  absl::StatusOr<std::unique_ptr<capsule::RandomAccessFile>> file =
      capsule::s3::OpenFileOrObject(path, "", [] { return Interrupted(); });
  if (!file.ok()) return ctx.Fail(file.status());
  absl::StatusOr<std::unique_ptr<capsule::CapsuleReader>> reader =
      capsule::CapsuleReader::OpenUntrusted(std::move(*file));
  if (!reader.ok()) {
    return ctx.Fail(absl::Status(reader.status().code(),
                                 absl::StrCat(path, ": ", reader.status().message())));
  }
  const capsule::Manifest& m = (*reader)->manifest();
  const std::string issuer = m.issuer.fingerprint().ToString();
  const std::string policy_hash = crypto::ToHex(m.PolicyHash());
  if (ctx.json()) {
    capsule::JsonWriter w;
    w.BeginObject()
        .Key("capsule").String(m.IdHex())
        .Key("formatVersion").Number(m.format_version)
        .Key("issuer").String(issuer)
        .Key("createdAt").String(capsule::FormatUtc(m.created_at))
        .Key("suite").String(crypto::SuiteName(m.suite))
        .Key("chunkSize").Number(m.chunk_size)
        .Key("chunkCount").Number(m.chunk_count)
        .Key("payloadBytes").Number(m.payload_size)
        .Key("archiveBytes").Number(m.archive_size)
        .Key("indexEntries").Number(m.index_entries)
        .Key("fileBytes").Number((*reader)->file_size())
        .Key("merkleRoot").String(crypto::ToHex(m.merkle_root))
        .Key("recipients")
        .BeginArray();
    for (const auto& r : m.recipients) w.String(r.fingerprint.ToString());
    w.EndArray().Key("policySha256").String(policy_hash).Key("policy");
    if (m.policy.empty()) {
      w.Null();
    } else {
      w.String(m.policy);
    }
    w.EndObject();
    ctx.PrintJson(w.text());
    return kExitOk;
  }
  std::printf("capsule      %s\n", m.IdHex().c_str());
  std::printf("format       v%u, %s, %s chunks (%llu)\n", m.format_version,
              std::string(crypto::SuiteName(m.suite)).c_str(), HumanBytes(m.chunk_size).c_str(),
              static_cast<unsigned long long>(m.chunk_count));
  std::printf("issuer       %s (signature valid; trust not checked)\n", issuer.c_str());
  std::printf("created      %s\n", capsule::FormatUtc(m.created_at).c_str());
  std::printf("size         %s file, %s payload (%s archive + %s index, %llu entries)\n",
              HumanBytes((*reader)->file_size()).c_str(), HumanBytes(m.payload_size).c_str(),
              HumanBytes(m.archive_size).c_str(), HumanBytes(m.index_size).c_str(),
              static_cast<unsigned long long>(m.index_entries));
  std::printf("merkle root  %s\n", crypto::ToHex(m.merkle_root).c_str());
  for (size_t i = 0; i < m.recipients.size(); ++i) {
    std::printf("%s %s\n", i == 0 ? "recipients  " : "            ",
                m.recipients[i].fingerprint.ToString().c_str());
  }
  if (m.policy.empty()) {
    std::printf("policy       none\n");
  } else {
    // The policy is untrusted text until the issuer is: print it defanged.
    const std::string policy = TerminalSafe(m.policy, /*keep_newlines=*/true);
    std::printf("policy       sha256 %s\n%s%s", policy_hash.c_str(), policy.c_str(),
                policy.back() == '\n' ? "" : "\n");
  }
  return kExitOk;
}

}  // namespace bunker::cli
