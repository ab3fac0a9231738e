// capsule keygen -o NAME: a new identity in NAME.key (0600) and NAME.pub.
#include <cstdio>

#include "capsule/json_writer.h"
#include "capsule/key_files.h"
#include "cli/context.h"

namespace bunker::cli {

int RunKeygen(int argc, char** argv) {
  static const CommandSpec kSpec{
      "keygen",
      "-o NAME [--json]",
      "Create an identity (Ed25519 signing key + X25519 encryption key): NAME.key, private, mode\n"
      "0600, and NAME.pub, to share. Refuses to overwrite existing files.",
      "Both files are PEM: `openssl pkey -in NAME.key -noout` accepts them.",
      {},
      {{"output", true, false, "base name of the key files", "NAME"},
       {"json", false, false, "print the result as JSON"}}};
  Context ctx(kSpec, argc, argv);
  if (!ctx.Parse()) return ctx.exit_code();
  const std::string base = ctx.args().Get("output");
  if (base.empty()) return ctx.UsageError("-o NAME is required");
  const crypto::Identity id = crypto::Identity::Generate();
  absl::Status s = capsule::WriteIdentityFiles(id, base);
  if (!s.ok()) {
    return ctx.Fail(s, absl::IsAlreadyExists(s) ? "choose another name or move the existing key away"
                                                : "");
  }
  const std::string fp = id.fingerprint().ToString();
  if (ctx.json()) {
    capsule::JsonWriter w;
    w.BeginObject()
        .Key("fingerprint").String(fp)
        .Key("private").String(base + ".key")
        .Key("public").String(base + ".pub")
        .EndObject();
    ctx.PrintJson(w.text());
  } else {
    const std::string shown = TerminalSafe(base);
    std::printf("%s\nwrote %s.key (private, keep it secret) and %s.pub\n", fp.c_str(),
                shown.c_str(), shown.c_str());
  }
  return kExitOk;
}

}  // namespace bunker::cli
