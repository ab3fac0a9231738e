// The libcurl loader (curl_api.h): the process starts without libcurl, the first Curl() loads it
// whole, and a missing library or symbol is one clear error, not a crash.
#include "capsule/curl_api.h"

#include <dlfcn.h>

#include "crypto/status_hint.h"
#include "gtest/gtest.h"

namespace bunker::capsule::s3 {
namespace {

// True if libcurl is mapped into this process (RTLD_NOLOAD loads nothing).
bool CurlIsLoaded() {
  void* lib = ::dlopen(kCurlSoname, RTLD_NOW | RTLD_NOLOAD);
  if (lib == nullptr) return false;
  ::dlclose(lib);
  return true;
}

TEST(CurlApiTest, AMissingLibraryIsAClearErrorNamingIt) {
  auto api = LoadCurlApi("libbunker-no-such-library.so.4");
  ASSERT_FALSE(api.ok());
  EXPECT_EQ(api.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(api.status().message(), "S3: cannot load libbunker-no-such-library.so.4");
  EXPECT_EQ(HintOf(api.status()), "install libcurl4");
}

TEST(CurlApiTest, ALibraryWithoutLibcurlsFunctionsIsRefused) {
  // libc loads, but has none of libcurl's functions: the first one looked up is named.
  auto api = LoadCurlApi("libc.so.6");
  ASSERT_FALSE(api.ok());
  EXPECT_EQ(api.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(api.status().message(), "S3: cannot load libc.so.6 (it lacks curl_global_init)");
  EXPECT_EQ(HintOf(api.status()), "install libcurl4");
}

// ctest runs each test in a process of its own; run by hand after another test, libcurl may
// already be loaded, and this test cannot tell when it was.
TEST(CurlApiTest, LibcurlIsLoadedOnlyByTheFirstCurlCall) {
  if (CurlIsLoaded()) GTEST_SKIP() << "libcurl was loaded earlier in this process (run alone)";
  auto first = Curl();
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_TRUE(CurlIsLoaded());
  const CurlApi& api = **first;
  for (const void* fn : {reinterpret_cast<const void*>(api.global_init),
                         reinterpret_cast<const void*>(api.easy_init),
                         reinterpret_cast<const void*>(api.easy_reset),
                         reinterpret_cast<const void*>(api.easy_setopt),
                         reinterpret_cast<const void*>(api.easy_getinfo),
                         reinterpret_cast<const void*>(api.easy_perform),
                         reinterpret_cast<const void*>(api.easy_cleanup),
                         reinterpret_cast<const void*>(api.easy_strerror),
                         reinterpret_cast<const void*>(api.slist_append),
                         reinterpret_cast<const void*>(api.slist_free_all),
                         reinterpret_cast<const void*>(api.version_info)}) {
    EXPECT_NE(fn, nullptr);
  }
  EXPECT_GE(api.version_info(CURLVERSION_NOW)->version_num, kMinCurlVersionNum);
  // Every later call returns the same table; the library works through it.
  auto again = Curl();
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, *first);
  CURL* handle = api.easy_init();
  ASSERT_NE(handle, nullptr);
  EXPECT_EQ(api.easy_setopt(handle, CURLOPT_URL, "http://127.0.0.1:1/"), CURLE_OK);
  api.easy_cleanup(handle);
  EXPECT_STREQ(api.easy_strerror(CURLE_OK), "No error");
}

}  // namespace
}  // namespace bunker::capsule::s3
