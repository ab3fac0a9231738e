#include "site/site_config.h"

#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdlib>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "capnp/compat/json.h"
#include "capnp/message.h"
#include "capnp/schema.h"
#include "capsule/io.h"
#include "spec/site.capnp.h"
#include "verifier/audit_log.h"
#include "verifier/json_text.h"

namespace bunker::site {
using verifier::DecodeUnicodeEscapes;
using verifier::OneLine;
namespace {

constexpr size_t kMaxSiteFileSize = 1 << 20;

// Lexical normalization of an absolute path: collapses "//", "." and ".." without touching the
// filesystem.
std::string NormalizeAbsolute(const std::string& path) {
  std::vector<std::string> parts;
  for (absl::string_view p : absl::StrSplit(path, '/', absl::SkipEmpty())) {
    if (p == ".") continue;
    if (p == "..") {
      if (!parts.empty()) parts.pop_back();
      continue;
    }
    parts.emplace_back(p);
  }
  return "/" + absl::StrJoin(parts, "/");
}

std::string CurrentDir() {
  char buf[PATH_MAX];
  return ::getcwd(buf, sizeof buf) != nullptr ? std::string(buf) : std::string("/");
}

std::string Resolve(const std::string& base_dir, const std::string& p) {
  return NormalizeAbsolute(!p.empty() && p[0] == '/' ? p : base_dir + "/" + p);
}

absl::Status FieldError(const std::string& file, const std::string& field, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(file, ": $.", field, ": ", what));
}

// "s3": {"credentialsFile", "endpoint", "region", "partMiB"}; anything that looks like a secret
// is refused with the way to give it.
absl::Status ParseS3(const std::string& path, const std::string& base_dir,
                     capnp::JsonValue::Reader value, SiteConfig& site) {
  if (!value.isObject()) return FieldError(path, "s3", "must be an object");
  for (auto f : value.getObject()) {
    const std::string name = f.getName().cStr();
    const std::string field = absl::StrCat("s3.", name);
    const std::string lower = absl::AsciiStrToLower(name);
    if (lower.find("secret") != std::string::npos || lower.find("token") != std::string::npos ||
        lower.find("password") != std::string::npos || lower.find("accesskey") != std::string::npos ||
        lower.find("access_key") != std::string::npos) {
      return FieldError(path, field,
                        "a site file never holds credentials: put them in a credentials file "
                        "(mode 0600) and name it in \"s3\": {\"credentialsFile\": ...}, or use "
                        "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY");
    }
    const auto v = f.getValue();
    if (name == "partMiB") {
      const double mib = v.isNumber() ? v.getNumber() : -1;
      if (!v.isNumber() || mib < 5 || mib > 512 || mib != static_cast<double>(static_cast<uint64_t>(mib))) {
        return FieldError(path, field, "must be a whole number of MiB from 5 to 512");
      }
      site.s3_part_mib = static_cast<uint64_t>(mib);
      continue;
    }
    if (name != "credentialsFile" && name != "endpoint" && name != "region") {
      return FieldError(path, field, "unknown field");
    }
    if (!v.isString()) return FieldError(path, field, "must be a string");
    const std::string text = v.getString().cStr();
    if (name == "credentialsFile") site.s3_credentials_file = Resolve(base_dir, text);
    if (name == "endpoint") site.s3_endpoint = text;
    if (name == "region") site.s3_region = text;
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<SiteConfig> LoadSiteConfig(const std::string& path) {
  absl::StatusOr<std::string> text = capsule::ReadSmallFile(path, kMaxSiteFileSize);
  if (!text.ok()) {
    if (absl::IsNotFound(text.status())) {
      return absl::NotFoundError(absl::StrCat("site configuration ", path, " not found"));
    }
    return text.status();
  }
  SiteConfig site;
  site.path = path;
  const std::string abs = Resolve(CurrentDir(), path);
  const std::string base_dir = abs.substr(0, abs.rfind('/'));
  try {
    capnp::JsonCodec codec;
    codec.setMaxNestingDepth(8);
    capnp::MallocMessageBuilder message;
    auto root = message.initRoot<capnp::JsonValue>();
    // Cap'n Proto 0.9.2 misreads \u escapes with hex letters (json_text.h): decode them first.
    absl::StatusOr<std::string> unescaped = DecodeUnicodeEscapes(*text);
    if (!unescaped.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": not valid JSON (", unescaped.status().message(), ")"));
    }
    // The decoder would stop at a NUL and take `1.` (json_text.h); and a double cannot tell 1
    // from 0.99999999999999999, so a number that reads as a whole one must be written as one.
    absl::StatusOr<std::vector<std::string_view>> numbers = verifier::CheckJsonText(*unescaped);
    if (!numbers.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": not valid JSON (", numbers.status().message(), ")"));
    }
    for (std::string_view token : *numbers) {
      double value = 0;
      if (!verifier::JsonNumberIsInteger(token) &&
          absl::SimpleAtod(absl::string_view(token.data(), token.size()), &value) &&
          std::floor(value) == value) {
        return absl::InvalidArgumentError(absl::StrCat(path, ": $: ", std::string(token),
                                                       " is not a whole number, though it reads "
                                                       "as ", value));
      }
    }
    codec.decodeRaw(kj::ArrayPtr<const char>(unescaped->data(), unescaped->size()), root);
    if (!root.isObject()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": $: must be a JSON object"));
    }
    // Every field must be one the schema names, with the schema's type.
    const capnp::StructSchema schema = capnp::Schema::from<schema::Site>();
    for (auto field : root.asReader().getObject()) {
      const std::string name = field.getName().cStr();
      KJ_IF_MAYBE(f, schema.findFieldByName(field.getName())) {
        const auto value = field.getValue();
        if (f->getType().isText()) {
          if (!value.isString()) return FieldError(path, name, "must be a string");
          const capnp::Text::Reader text = value.getString();
          std::string v(text.begin(), text.size());
          // An escaped NUL ("\u0000") would cut the text wherever it is used as a C string.
          if (v.find('\0') != std::string::npos) {
            return FieldError(path, name, "must not contain a NUL character");
          }
          if (name == "site") {
            // It goes into signed checkpoints that auditors print (spec/AUDIT.md "Checkpoints").
            if (!verifier::IsValidSiteName(v)) {
              return FieldError(path, name,
                                "must be 1 to 256 bytes of UTF-8 without control, bidi or "
                                "zero-width characters");
            }
            site.site = v;
          }
          if (name == "region") site.region = v;
          if (name == "identity") site.identity = Resolve(base_dir, v);
          if (name == "state") site.state = Resolve(base_dir, v);
          if (name == "listen") site.listen = v;
          if (name == "store") site.store = v.rfind("s3://", 0) == 0 ? v : Resolve(base_dir, v);
          if (name == "socket") site.socket = Resolve(base_dir, v);
        } else if (name == "mountCacheMiB") {
          // A whole number of MiB; JSON numbers are doubles, so check that it is one.
          const double mib = value.isNumber() ? value.getNumber() : -1;
          if (!value.isNumber() || mib < 0 || mib > static_cast<double>(kMaxMountCacheMiB) ||
              mib != static_cast<double>(static_cast<uint64_t>(mib))) {
            return FieldError(path, name,
                              absl::StrCat("must be a whole number of MiB from 0 to ",
                                           kMaxMountCacheMiB));
          }
          site.mount_cache_mib = static_cast<uint64_t>(mib);
        } else if (name == "s3") {
          absl::Status s = ParseS3(path, base_dir, value, site);
          if (!s.ok()) return s;
        } else if (name == "users") {
          if (!value.isObject()) {
            return FieldError(path, name, "must be an object of user names to public key files");
          }
          for (auto user : value.getObject()) {
            if (!user.getValue().isString()) {
              return FieldError(path, absl::StrCat(name, ".", user.getName().cStr()),
                                "must be a string");
            }
            site.users.emplace_back(user.getName().cStr(),
                                    Resolve(base_dir, user.getValue().getString().cStr()));
          }
        } else {
          if (!value.isArray()) return FieldError(path, name, "must be an array of strings");
          std::vector<std::string> items;
          size_t i = 0;
          for (auto item : value.getArray()) {
            if (!item.isString()) {
              return FieldError(path, absl::StrCat(name, "[", i, "]"), "must be a string");
            }
            items.push_back(item.getString().cStr());
            ++i;
          }
          if (name == "storage") site.storage = items;
          if (name == "trust" || name == "destinations" || name == "peers") {
            for (auto& it : items) it = Resolve(base_dir, it);
          }
          if (name == "trust") site.trust = items;
          if (name == "destinations") site.destinations = items;
          if (name == "peers") site.peers = items;
          if (name == "witnesses") {
            for (size_t k = 0; k < items.size(); ++k) {
              // KEY.pub@host:port; a key path may contain '@', an address cannot.
              const size_t at = items[k].rfind('@');
              if (at == std::string::npos || at == 0 || at + 1 == items[k].size()) {
                return FieldError(path, absl::StrCat(name, "[", k, "]"),
                                  "must be \"KEY.pub@host:port\"");
              }
              site.witnesses.push_back(
                  {Resolve(base_dir, items[k].substr(0, at)), items[k].substr(at + 1)});
            }
          }
        }
      } else {
        return FieldError(path, name, "unknown field");
      }
    }
  } catch (const kj::Exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": not valid JSON (", OneLine(e.getDescription().cStr()), ")"));
  }
  if (site.site.empty()) return FieldError(path, "site", "is required");
  if (site.identity.empty()) return FieldError(path, "identity", "is required");
  if (site.state.empty()) return FieldError(path, "state", "is required");
  if (site.trust.empty()) return FieldError(path, "trust", "needs at least one key or folder");
  if (site.destinations.empty()) {
    return FieldError(path, "destinations", "needs at least one folder");
  }
  if (!site.StoreIsS3() && (!site.s3_credentials_file.empty() || !site.s3_endpoint.empty() ||
                            !site.s3_region.empty() || site.s3_part_mib != 0)) {
    return FieldError(path, "s3", "is for a \"store\" of the form \"s3://BUCKET/PREFIX\"");
  }
  return site;
}


}  // namespace bunker::site
