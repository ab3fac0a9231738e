# Bunker site-to-site transfer protocol (spec/TRANSFER.md). Served over the mutually
# authenticated TLS channel; the bootstrap capability of every connection is a Transfer.
# The receiver never needs a capsule's data key: it checks every chunk against the signed chunk
# table (spec/FORMAT.md "Receiving in pieces").
@0xfd28c496730ab139;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("bunker::schema");

interface Transfer {
  # Echoes `nonce` unchanged. Proves that an RPC round trip works over an authenticated
  # channel; carries no authority.
  ping @0 (nonce :Data) -> (nonce :Data);

  # Push. The caller offers a capsule by its prelude. The callee checks structure, signature,
  # trust, and that the capsule's policy admits the callee's site (site, region, storage, time);
  # otherwise the call fails before any chunk moves. Offering a capsule again (after a cut
  # connection or a crash of either side) resumes: `missing` names only the chunks the callee
  # has not durably received.
  offer @1 (prelude :Prelude) -> (upload :Upload, missing :List(ChunkRange));

  # Pull. Asks the callee to push capsule `capsuleId` (32 hex characters) from its store to
  # `receiver`, a Transfer the caller serves on this same connection.
  fetch @2 (capsuleId :Text, receiver :Transfer) -> (summary :Summary);

  # Witnessing (TRANSFER.md "Witnessing"). The newest checkpoint of the caller's audit log that
  # the callee holds (the six lines of AUDIT.md "Checkpoints"), or "" if it holds none.
  newestOf @3 () -> (checkpoint :Text);

  # The caller hands the callee its newest signed checkpoint. `consistency` proves (RFC 9162
  # section 2.1.4) that it extends the one the callee holds (as newestOf answered); empty when
  # the callee holds none or one of the same size. `acknowledgedLoss` is "" or, to start a new
  # sequence after the caller lost its state, the exact text the callee holds (VERIFIER.md
  # "Witnesses"). Returns the newest checkpoint the callee holds of the caller after the call.
  witness @4 (checkpoint :Text, consistency :List(Data), acknowledgedLoss :Text)
      -> (newest :Text);
}

# A capsule's header and its tail from the chunk table to the end (FORMAT.md "Receiving in
# pieces").
struct Prelude {
  header @0 :Data;
  tail @1 :Data;
}

# Chunks first .. first+count-1.
struct ChunkRange {
  first @0 :UInt64;
  count @1 :UInt64;
}

interface Upload {
  # One chunk's ciphertext, `data` at most the capsule's chunk size + 16 bytes. Flow control
  # comes from the RPC system. A chunk that does not match the signed chunk table is not
  # written; the next commit() reports it for resending.
  put @0 (index :UInt64, data :Data) -> stream;

  # Makes every chunk put so far durable (data, then journal). Returns the chunks that became
  # durable with this call and those refused since the last commit.
  commit @1 () -> (durable :List(ChunkRange), rejected :List(UInt64));

  # Verifies the complete capsule and stores it under its id, atomically. Fails while chunks are
  # missing.
  finish @2 () -> (capsuleId :Text);
}

struct Summary {
  capsuleId @0 :Text;
  chunksTotal @1 :UInt64;
  chunksSent @2 :UInt64;
  chunksSkipped @3 :UInt64;
  bytesSent @4 :UInt64;
  seconds @5 :Float64;
}
