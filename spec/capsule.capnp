# Bunker capsule format v1: the signed manifest and the encrypted file index.
# spec/FORMAT.md describes how these structures sit in a capsule file, byte for byte.
# This file is the one source of truth: the build generates the C++ code from it.
@0xb5200fabdc535c77;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("bunker::schema");

# An identity's public keys (FORMAT.md "Identities").
struct PublicIdentity {
  signKey @0 :Data;   # Ed25519 public key, 32 bytes
  boxKey @1 :Data;    # X25519 public key, 32 bytes
}

# The data key wrapped to one recipient (FORMAT.md "Recipient key wrap").
struct Recipient {
  fingerprint @0 :Data;  # the recipient identity's 16-byte fingerprint
  ephemeral @1 :Data;    # sender's ephemeral X25519 public key, 32 bytes
  wrappedKey @2 :Data;   # ChaCha20-Poly1305(data key) || tag, 48 bytes
}

# Everything a reader learns before holding any key. Encoded in Cap'n Proto canonical form
# and signed by the issuer (FORMAT.md "Manifest", "Signature").
struct Manifest {
  formatVersion @0 :UInt16;        # 1
  capsuleId @1 :Data;              # 16 random bytes
  createdAt @2 :Int64;             # seconds since the Unix epoch, UTC
  issuer @3 :PublicIdentity;
  suite @4 :UInt16;                # 1 = AES-256-GCM, 2 = ChaCha20-Poly1305
  chunkSize @5 :UInt32;            # plaintext bytes per chunk (all but the last)
  chunkCount @6 :UInt64;           # >= 1
  payloadSize @7 :UInt64;          # plaintext bytes over all chunks
  archiveSize @8 :UInt64;          # payload [0, archiveSize) is the pax archive
  indexSize @9 :UInt64;            # payload [archiveSize, payloadSize) is the file index
  indexEntries @10 :UInt64;        # number of records in the file index
  merkleRoot @11 :Data;            # RFC 9162 root over the chunk ciphertexts, 32 bytes
  keyCommitment @12 :Data;         # commits to the data key, 32 bytes
  policy @13 :Text;                # the access policy (JSON) as given; "" for none
  recipients @14 :List(Recipient); # one per recipient, in seal order
}

# One record of the encrypted file index (FORMAT.md "File index").
struct IndexEntry {
  enum Type {
    file @0;
    directory @1;
    symlink @2;
    hardlink @3;
  }
  path @0 :Text;          # relative, '/'-separated, no '.', '..' or empty components
  type @1 :Type;
  size @2 :UInt64;        # contents length (files); 0 otherwise
  offset @3 :UInt64;      # payload offset of the contents (files)
  sha256 @4 :Data;        # SHA-256 of the contents (files), 32 bytes
  mode @5 :UInt32;        # permission bits, 0o777 at most (no setuid/setgid/sticky)
  mtime @6 :Int64;        # seconds since the Unix epoch
  linkTarget @7 :Text;    # symlink target or hard link's target path
}
