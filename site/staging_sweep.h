// The startup sweep of the verifier service: staging directories that a crash (kill -9 in the
// middle of a release) left below the site's destinations are removed before anyone is served.
#ifndef BUNKER_SITE_STAGING_SWEEP_H_
#define BUNKER_SITE_STAGING_SWEEP_H_

#include <cstddef>

namespace bunker::site {

// Removes, below the directory `dir` and at most `depth` levels down, every directory named
// ".<name>.bunker-XXXXXX" that belongs to this process's user and has mode 0700 (a staging
// directory, capsule/staging.h), counting them in `removed`. Never follows a symlink.
void SweepStaging(int dir, int depth, size_t* removed);

}  // namespace bunker::site

#endif  // BUNKER_SITE_STAGING_SWEEP_H_
