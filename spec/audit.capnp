# Bunker audit log entries (spec/AUDIT.md). Each entry is stored as canonical Cap'n Proto.
@0xb8f4581a98d75001;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("bunker::schema");

struct AuditEntry {
  time @0 :Int64;                 # seconds since the Unix epoch, UTC
  event @1 :Text;                 # "open", "release-failed", "received", "refused", "sent"
  decision @2 :Text;              # "permit", "deny" or "failed"
  capsuleId @3 :Text;             # 32 hex characters
  issuer @4 :Text;                # issuer fingerprint
  site @5 :Text;
  requester @6 :Text;             # requester fingerprint, "" when none was given
  purpose @7 :Text;
  paths @8 :List(Text);           # requested paths (files), or the --only globs
  rules @9 :List(Text);           # deciding rule ids
  reasons @10 :List(Text);        # why, one line each
  uses @11 :Int8;                 # change to the capsule's use count: 1, -1 (refund) or 0
  localUid @12 :Int64 = -1;       # uid of the local client (Unix socket peer); -1: none
  localPid @13 :Int64 = -1;       # pid of that client; -1: none
}
