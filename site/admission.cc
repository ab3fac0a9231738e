#include "site/admission.h"

#include <ctime>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "verifier/policy.h"

namespace bunker::site {

absl::Status AdmitCapsule(const SiteConfig& site, const capsule::Manifest& manifest,
                          int64_t now) {
  if (manifest.policy.empty()) return absl::OkStatus();
  absl::StatusOr<verifier::Policy> policy = verifier::ParsePolicy(manifest.policy);
  verifier::Request here;
  here.site = site.site;
  if (!site.region.empty()) here.region = site.region;
  here.storage = site.storage;
  here.now = now;
  verifier::Decision d;
  if (policy.ok()) {
    d = verifier::AdmitsSite(*policy, here);
  } else {
    d.reasons.push_back("the capsule's policy is invalid");
  }
  if (d.permit) return absl::OkStatus();
  return absl::PermissionDeniedError(absl::StrCat("the capsule's policy does not admit site ",
                                                  site.site, ": ",
                                                  absl::StrJoin(d.reasons, "; ")));
}

std::function<absl::Status(const capsule::Manifest&)> AdmissionFor(const SiteConfig& site) {
  return [&site](const capsule::Manifest& m) {
    return AdmitCapsule(site, m, static_cast<int64_t>(std::time(nullptr)));
  };
}

}  // namespace bunker::site
