# Bunker access policy v1 (spec/POLICY.md). Policies are written as JSON; this schema is the
# one definition of their fields: the parser reads JSON through it (Cap'n Proto's JSON codec
# and schema reflection), refusing any field it does not name.
@0xfcdf24eccfbc2adc;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("bunker::schema");

struct Policy {
  version @0 :UInt32;        # must be 1
  rules @1 :List(Rule);      # at least one; order never matters
}

struct Rule {
  enum Effect {
    permit @0;
    forbid @1;
  }
  id @0 :Text;               # unique within the policy; names the rule in decisions and logs
  effect @1 :Effect;         # "permit" or "forbid"
  # Each list below, when present, must be non-empty; a request matches it when its value is
  # one of the listed ones. An absent list does not constrain.
  sites @2 :List(Text);      # site names (site configuration "site")
  regions @3 :List(Text);    # site regions
  storage @4 :List(Text);    # storage labels; the site must carry every listed label
  requesters @5 :List(Text); # requester key fingerprints ("bk1:...")
  purposes @6 :List(Text);   # declared purposes
  paths @7 :List(Text);      # path globs (capsule/glob.h) of the files the rule covers
  notBefore @8 :Text;        # RFC 3339 UTC time, inclusive
  notAfter @9 :Text;         # RFC 3339 UTC time, exclusive
  maxOpens @10 :UInt32;      # key releases per capsule at one site; absent: unlimited; >= 1
}
