// libcurl, loaded at run time: the S3 client (s3_client*.cc) reaches libcurl only through the
// table of function pointers defined here, so that no Bunker program links libcurl at load time.
// Its dependency tree (GnuTLS, Kerberos, LDAP, SSH, ...) cost every process start about 3.5 ms of
// wall time, for the few commands that name an s3:// location (README "Performance").
//
// Contract:
// - Curl() loads libcurl.so.4 (dlopen, RTLD_NOW | RTLD_LOCAL) on its first call, resolves every
//   function of CurlApi and runs curl_global_init(CURL_GLOBAL_DEFAULT) once, under
//   std::call_once: thread-safe, and every later call returns the same table or the same error.
// - A missing library, a missing symbol, a libcurl older than kMinCurlVersionNum or a failed
//   curl_global_init is kFailedPrecondition ("S3: cannot load libcurl.so.4 (...)", hint
//   "install libcurl4"): nothing is half-loaded, no request is sent. Error texts name the library and the symbol only (no local paths).
// - A loaded library is never unloaded: the pointers stay valid for the life of the process.
// - <curl/curl.h> is still included for types and constants; the table's types are those of
//   its declarations (decltype), so a call through the table is checked like a direct call.
#ifndef BUNKER_CAPSULE_CURL_API_H_
#define BUNKER_CAPSULE_CURL_API_H_

#include <curl/curl.h>

#include "absl/status/statusor.h"

namespace bunker::capsule::s3 {

// The soname Debian's libcurl4 (and libcurl4-openssl-dev's libcurl.so link) provides.
inline constexpr char kCurlSoname[] = "libcurl.so.4";

// Every libcurl function the S3 client calls. Each member has the type of the function of the
// same name in <curl/curl.h> (curl_easy_init -> easy_init, ...).
struct CurlApi {
  decltype(&curl_global_init) global_init = nullptr;
  decltype(&curl_easy_init) easy_init = nullptr;
  decltype(&curl_easy_reset) easy_reset = nullptr;
  decltype(&curl_easy_setopt) easy_setopt = nullptr;
  decltype(&curl_easy_getinfo) easy_getinfo = nullptr;
  decltype(&curl_easy_perform) easy_perform = nullptr;
  decltype(&curl_easy_cleanup) easy_cleanup = nullptr;
  decltype(&curl_easy_strerror) easy_strerror = nullptr;
  decltype(&curl_slist_append) slist_append = nullptr;
  decltype(&curl_slist_free_all) slist_free_all = nullptr;
  decltype(&curl_version_info) version_info = nullptr;
};

// The oldest libcurl the S3 client accepts: 7.85.0, the first with CURLOPT_PROTOCOLS_STR (7.75.0
// brought CURLOPT_AWS_SIGV4). An older one would ignore the option that keeps requests to http
// and https, and the client does not check each curl_easy_setopt's result.
inline constexpr unsigned int kMinCurlVersionNum = 0x075500;

// Loads `soname` and resolves every member of CurlApi from it; does not call curl_global_init
// and caches nothing (use Curl()). On success the library stays loaded for good; on failure it
// is unloaded again and the status is kFailedPrecondition naming `soname` (and the symbol
// missing, if the library loaded). Exposed so tests can exercise the failure paths.
absl::StatusOr<CurlApi> LoadCurlApi(const char* soname);

// The process's libcurl, loaded and initialised on the first call (see the contract above).
// The table is owned by this module and valid until the process exits.
absl::StatusOr<const CurlApi*> Curl();

}  // namespace bunker::capsule::s3

#endif  // BUNKER_CAPSULE_CURL_API_H_
