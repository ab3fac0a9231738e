// A site's store in an S3 bucket (spec/STORE.md "Layout", "Receiving", "Scaling out").
//
// Capsules are objects PREFIX<id>.capsule, written only by CompleteMultipartUpload: an object
// under that key is always a whole capsule. A capsule being received is a multipart upload to
// that key plus, on the receiving daemon's own disk (`spool`), a partial file and journals
// (capsule/incoming.h LocalIncoming): chunks are checked against the signed chunk table before
// they are written to the spool; a part (whole chunks, >= min_part_size except the last) is
// uploaded once all its chunks are durable in the spool, its number and ETag journaled, and
// its bytes released from the spool. Finish puts the receipt on record (before_name), then
// completes the upload. Several daemons may share one bucket and prefix (each with its own
// spool and `daemon_id`); the same capsule received by two of them at once ends as one object.
//
// Threading: as capsule/store.h; the client must be thread-safe (capsule/s3_client.h is).
#ifndef BUNKER_CAPSULE_S3_STORE_H_
#define BUNKER_CAPSULE_S3_STORE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "capsule/s3_client.h"
#include "capsule/store.h"

namespace bunker::capsule {

struct S3StoreOptions {
  std::shared_ptr<s3::Client> client;
  std::string bucket;
  std::string prefix;     // "" or ending in "/"
  std::string spool;      // local folder of partial capsules and journals (the daemon's own)
  std::string daemon_id;  // this daemon among those sharing the bucket: [a-z0-9-]{1,64}
  // The file listing the boot nonces of this daemon's runs (kept apart from the spool, which
  // may be lost): markers carrying another nonce are not this daemon's to abort. Default:
  // `spool`.boots.
  std::string boots_file;
  // Parts are whole chunks and at least this large, except the last (S3 and Swift refuse
  // smaller ones); more chunks per part when the capsule would need over kMaxParts parts.
  uint64_t min_part_size = uint64_t{8} << 20;
  int upload_threads = 8;  // parts uploaded at once, in the background
  // One line per part uploaded, upload created, completed or aborted (the daemon's log). May
  // be called from several threads at once. May be empty.
  std::function<void(const std::string&)> log;
};

// The most parts of one upload (AWS S3's limit; Swift's max_upload_part_num must allow it).
inline constexpr uint64_t kMaxParts = 10000;
// The longest store prefix: its longest key, PREFIX.incoming/<daemon id>/<id>.upload (114 bytes
// after the prefix), stays within S3's 1024 bytes (spec/STORE.md "Layout").
inline constexpr size_t kMaxPrefixSize = 900;

// kInvalidArgument for a bad prefix or daemon id. Touches nothing remote. Its Recover()
// aborts the multipart uploads of this daemon that no journal of its spool names (a crash
// between creating an upload and journaling it, a lost spool), found by the daemon's marker
// objects (spec/STORE.md "Receiving"); uploads of other daemons are left alone. Before that,
// Recover (and Begin, for a capsule it finds stored) removes what the spool holds of a capsule
// that is stored and whose journaled upload is gone (a completion whose check failed, a crash
// before its cleanup), with this daemon's marker naming that upload; never the state of an
// upload that still exists or of an incoming capsule open in this process (Receiving 6).
absl::StatusOr<std::shared_ptr<Store>> MakeS3Store(S3StoreOptions options);

// The part layout of a capsule of geometry `g`: chunks per part.
uint64_t ChunksPerPart(const Geometry& g, uint64_t min_part_size);

}  // namespace bunker::capsule

#endif  // BUNKER_CAPSULE_S3_STORE_H_
