#include "capsule/curl_api.h"

#include <dlfcn.h>

#include <mutex>

#include "absl/strings/str_cat.h"
#include "crypto/status_hint.h"

namespace bunker::capsule::s3 {
namespace {

absl::Status CannotLoad(const char* soname, absl::string_view why) {
  // dlerror()'s text is left out: for a library found but broken it names local paths.
  return WithHint(absl::FailedPreconditionError(absl::StrCat("S3: cannot load ", soname, why)),
                  "install libcurl4");
}

// Resolves `name` into `*out`. `F` is spelt from the declaration of `name` (decltype), and `out`
// must point to a member of that very type: a table entry of the wrong type does not compile.
template <typename F>
bool Resolve(void* lib, const char* name, F* out) {
  *out = reinterpret_cast<F>(::dlsym(lib, name));
  return *out != nullptr;
}

}  // namespace

absl::StatusOr<CurlApi> LoadCurlApi(const char* soname) {
  // RTLD_NOW: a library that cannot resolve its own dependencies fails here, not mid-request.
  // RTLD_LOCAL: its symbols (and those of GnuTLS, Kerberos, ...) stay out of the global scope.
  void* lib = ::dlopen(soname, RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) return CannotLoad(soname, "");
  CurlApi api;
  const char* missing = nullptr;
#define BUNKER_CURL_RESOLVE(fn, member) \
  if (missing == nullptr && !Resolve<decltype(&fn)>(lib, #fn, &api.member)) missing = #fn
  BUNKER_CURL_RESOLVE(curl_global_init, global_init);
  BUNKER_CURL_RESOLVE(curl_easy_init, easy_init);
  BUNKER_CURL_RESOLVE(curl_easy_reset, easy_reset);
  BUNKER_CURL_RESOLVE(curl_easy_setopt, easy_setopt);
  BUNKER_CURL_RESOLVE(curl_easy_getinfo, easy_getinfo);
  BUNKER_CURL_RESOLVE(curl_easy_perform, easy_perform);
  BUNKER_CURL_RESOLVE(curl_easy_cleanup, easy_cleanup);
  BUNKER_CURL_RESOLVE(curl_easy_strerror, easy_strerror);
  BUNKER_CURL_RESOLVE(curl_slist_append, slist_append);
  BUNKER_CURL_RESOLVE(curl_slist_free_all, slist_free_all);
  BUNKER_CURL_RESOLVE(curl_version_info, version_info);
#undef BUNKER_CURL_RESOLVE
  if (missing != nullptr) {
    ::dlclose(lib);
    return CannotLoad(soname, absl::StrCat(" (it lacks ", missing, ")"));
  }
  const curl_version_info_data* version = api.version_info(CURLVERSION_NOW);
  if (version == nullptr || version->version_num < kMinCurlVersionNum) {
    ::dlclose(lib);
    return CannotLoad(soname, " (libcurl 7.85.0 or newer is needed)");
  }
  return api;  // `lib` stays loaded: the pointers in `api` point into it.
}

absl::StatusOr<const CurlApi*> Curl() {
  // Allocated once and never freed, so no static destructor races a thread still in a request.
  static std::once_flag once;
  static absl::StatusOr<CurlApi>* loaded = nullptr;
  std::call_once(once, [] {
    loaded = new absl::StatusOr<CurlApi>(LoadCurlApi(kCurlSoname));
    if (!loaded->ok()) return;
    const CURLcode code = (*loaded)->global_init(CURL_GLOBAL_DEFAULT);
    if (code != CURLE_OK) {
      *loaded = CannotLoad(kCurlSoname, absl::StrCat(" (curl_global_init: error ",
                                                     static_cast<int>(code), ")"));
    }
  });
  if (!loaded->ok()) return loaded->status();
  return &loaded->value();
}

}  // namespace bunker::capsule::s3
