// Whether a capsule may be stored at this site at all (spec/TRANSFER.md "Admission"): its policy
// must admit the site's name, region and storage now. Used by the transfer daemon and by fetch,
// which ask it through DepotOptions::admit before a byte is written.
#ifndef BUNKER_SITE_ADMISSION_H_
#define BUNKER_SITE_ADMISSION_H_

#include <cstdint>
#include <functional>

#include "absl/status/status.h"
#include "capsule/manifest.h"
#include "site/site_config.h"

namespace bunker::site {

// OK when the capsule carries no policy or its policy admits `site` at `now`; kPermissionDenied
// "the capsule's policy does not admit site NAME: reasons" otherwise (an invalid policy is
// refused). The message is sent to the peer: it names no local path.
absl::Status AdmitCapsule(const SiteConfig& site, const capsule::Manifest& manifest, int64_t now);

// AdmitCapsule bound to `site` (which must outlive the function) and the current time.
std::function<absl::Status(const capsule::Manifest&)> AdmissionFor(const SiteConfig& site);

}  // namespace bunker::site

#endif  // BUNKER_SITE_ADMISSION_H_
