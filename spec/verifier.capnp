# Bunker local verifier protocol (spec/VERIFIER.md "Socket protocol"): what a user's `capsule`
# process and the site's verifier service (capsuled) say over the site's Unix socket.
#
# Framing: every message is a u32 little-endian byte count N (1 <= N <= 1 MiB) followed by N
# bytes of one Cap'n Proto message in the standard unpacked stream encoding (segment table,
# then segments). File descriptors travel as SCM_RIGHTS ancillary data attached to the first
# byte of the Request frame, and only there (at most 3).
#
# A connection carries one request:
#   service -> client   Hello
#   client  -> service  Request (+ descriptors)
#   service -> client   Reply* (progress, listing batches), ending with exactly one Reply.done
@0x94363e3877ae4168;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("bunker::schema");

struct Hello {
  version @0 :UInt32;        # 1
  site @1 :Text;             # the site's name
  challenge @2 :Data;        # 32 fresh random bytes, never reused
}

struct Request {
  # A canonical RequestBody (capnp::canonicalize), as signed.
  body @0 :Data;
  # With --as: the requester's public key (PEM, crypto/keys.h) and an Ed25519 signature by it
  # over "bunker verifier request v1" || 0x00 || Hello.challenge || body. `policy explain` may
  # name a public key without a signature (it releases nothing); every other command must sign.
  requesterKey @1 :Text;
  signature @2 :Data;
}

struct RequestBody {
  command @0 :Command;
  enum Command {
    open @0;        # extract the selection into `destination` (a new directory)
    toTar @1;       # the decrypted pax archive: into `destination` (a new file) or fd[1]
    cat @2;         # one file (`path`) into fd[1]
    ls @3;          # the permitted index entries, in Reply.entries batches
    explain @4;     # the decision over the selection, recording nothing
    mount @5;       # serve the permitted files of the selection on fd[1] (/dev/fuse of a mount
                    # the client made; fd[2] is fusermount3's auto-unmount socket)
    mounts @6;      # the caller's live mounts (every mount for root), in Reply.mounts; no fds
  }
  purpose @1 :Text;
  hasPurpose @2 :Bool;
  only @3 :List(Text);       # globs (open, explain)
  destination @4 :Text;      # absolute path (open, toTar to a file)
  path @5 :Text;             # cat
  # Descriptors: fd[0] is the capsule, opened by the client for reading (the service never
  # opens a path a user names); fd[1] is the output of cat and `toTar` to a stream.
  fdCount @6 :UInt8;
  threads @7 :UInt32;        # 0: the service's choice
  mountpoint @8 :Text;       # mount: absolute path, as the client names it (shown, not used)
  cacheBytes @9 :UInt64;     # mount: the decrypted-chunk cache wanted (0: the service's)
  # Instead of fd[0]: a capsule of the site's own store, which the service reads with its own
  # rights after checking that it lies inside the site file's "store": an S3 object,
  # "s3://BUCKET/KEY", or, for a store folder, exactly "<id>.capsule", opened directly in that
  # folder without following a link (spec/VERIFIER.md "Capsules in the site's store"). The
  # descriptors then start with the output: fd[0] is the output of cat and `toTar` to a stream;
  # for mount fd[0] is /dev/fuse, fd[1] the socket.
  capsuleUrl @10 :Text;
}

struct MountInfo {
  mountpoint @0 :Text;
  capsuleId @1 :Text;
  uid @2 :UInt32;
  since @3 :Int64;           # seconds since the epoch
  notAfter @4 :Int64;        # when the mount ends by itself (0: never)
  filesOpened @5 :UInt64;
  bytesRead @6 :UInt64;
}

struct Entry {
  path @0 :Text;
  type @1 :Text;             # "file", "dir", "symlink", "hardlink"
  size @2 :UInt64;
  mode @3 :UInt32;
  mtime @4 :Int64;
  sha256 @5 :Data;
  target @6 :Text;
}

struct Result {
  code @0 :UInt32;           # absl::StatusCode: 0 OK, 7 PERMISSION_DENIED, 15 DATA_LOSS, ...
  message @1 :Text;          # one line
  capsuleId @2 :Text;
  permit @3 :Bool;
  rules @4 :List(Text);
  reasons @5 :List(Text);
  deniedFiles @6 :List(Text);
  countsUse @7 :Bool;
  files @8 :UInt64;          # open: files written; explain: files requested
  directories @9 :UInt64;
  symlinks @10 :UInt64;
  bytes @11 :UInt64;
  requester @12 :Text;       # the requester the decision was made for ("" for none)
  site @13 :Text;
  region @14 :Text;
  storage @15 :List(Text);
  hint @16 :Text;            # what the user can do about the error, one line ("" for none):
                             # the status's "type.bunker/hint" payload (crypto/status_hint.h)
  notAfter @17 :Int64;       # mount: when it ends by itself (0: never)
}

struct Reply {
  union {
    progress @0 :Progress;
    entries @1 :List(Entry);
    done @2 :Result;
    mounts @3 :List(MountInfo);
  }
  struct Progress {
    done @0 :UInt64;
    total @1 :UInt64;
  }
}
