# Bunker site configuration (spec/POLICY.md "Site configuration"). Written as JSON; relative
# paths resolve against the folder of the configuration file.
@0xfd1348c45f0f52ae;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("bunker::schema");

struct Site {
  site @0 :Text;                 # this site's name, matched by policy "sites"
  region @1 :Text;               # matched by policy "regions"
  storage @2 :List(Text);        # labels of this site's storage, matched by policy "storage"
  identity @3 :Text;             # the site's private key file (signs audit checkpoints)
  trust @4 :List(Text);          # trusted issuer public keys, or folders of them
  destinations @5 :List(Text);   # folders under which `open --to` may extract
  state @6 :Text;                # folder for the use counter and the audit log
  # Used by the transfer daemon (issue 4); accepted and kept here so one file serves both.
  listen @7 :Text;               # address:port
  peers @8 :List(Text);          # public keys of sites allowed to connect
  store @9 :Text;                # where received capsules live
  # Peers the daemon hands its audit checkpoints to (TRANSFER.md "Witnessing"), each
  # "KEY.pub@host:port": a public key file that is also in `peers`, and where that peer listens.
  witnesses @10 :List(Text);
  # The local verifier service (spec/VERIFIER.md): the Unix socket `capsuled` listens on for
  # the site's users. When set, `capsule open/ls/cat/policy explain --site` ask it.
  socket @11 :Text;
  # Local users and the requester key each one stands for when it gives no --as: a JSON
  # object {"alice": "keys/alice.pub"}; keys resolve like `trust`.
  users @12 :List(Text);
  # Mounts (spec/VERIFIER.md "Mounts"): the largest decrypted-chunk cache, in MiB, that one
  # uid's `capsule mount`s may have together in the daemon's memory (1 to 1048576; absent or 0:
  # 256; all uids' at most four times it). The daemon's --mount-cache-mib overrides it; a mount
  # may ask for less with --cache-mib.
  mountCacheMiB @13 :UInt32;
  # With "store": "s3://BUCKET/PREFIX" (spec/STORE.md): how to reach the bucket. Endpoint,
  # region and credentials otherwise follow the AWS conventions (AWS_ENDPOINT_URL, AWS_REGION,
  # AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE of the shared credentials file). A
  # secret never goes in a site file: name a credentials file (0600, owned by the daemon's user).
  s3 @14 :S3Settings;
}

struct S3Settings {
  credentialsFile @0 :Text;  # an AWS INI credentials file (its [default] or AWS_PROFILE)
  endpoint @1 :Text;         # http(s)://host[:port], path-style requests
  region @2 :Text;
  partMiB @3 :UInt32;        # the least part size of an upload, in MiB (5 to 512; default 8)
}
