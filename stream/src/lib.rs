//! Image streaming with confirmed delivery: a receiver (`cryo serve`), the sender of a dump
//! (`cryo dump --to`) and the fetch of a restore (`cryo restore --from`), over one framed,
//! versioned, authenticated protocol.
//!
//! ```text
//! frame.rs     the frame: fixed header (magic, type, sequence, length, crc32c), payload, tag
//! auth.rs      the pre-shared key file, the challenge-response, the session key
//! conn.rs      one side of a connection: frames in order, keyed; the handshake
//! manifest.rs  the manifest's hash and check
//! transfer.rs  an image's files on the wire, and the receiving side's checks
//! client.rs    store (dump --to), fetch (restore --from), restore on the receiver
//! migrate.rs   a migration (`cryo migrate`): check, image, restore locked, two-phase commit
//! server.rs    the receiver
//! ```
//!
//! Without the default `engine` feature only `frame`, `manifest` and `msg` are built (no
//! engine, no I/O): what the fuzz target needs.
//!
//! # The protocol (version 2)
//!
//! Every frame has the header of [`frame`]; every control message is a protobuf message
//! (proto/stream.proto) alone in its frame, the frame type saying which. Sequence numbers
//! count from 0 in each direction. Frames after the handshake carry a keyed BLAKE3 tag under
//! a key derived from the pre-shared key and both nonces ([`auth`]). Version 1 differed only
//! in that tag (HMAC-SHA256); a peer of another version is answered with the versions this
//! one speaks, and nothing else.
//!
//! ```text
//! client (dump --to)                              server (cryo serve)
//!   Hello{version, client nonce}          ---->
//!                                          <----  ServerHello{version, server nonce, proof}
//!                                                 or Unsupported{versions supported}, close
//!   (checks the server's proof)
//!   ClientProof{proof}                    ---->   (checks it; closes if wrong)
//!   ==== every frame from here on is tagged with the session key ====
//!   Start{version, checkpoint id, name,   ---->
//!         purpose STORE | FETCH | RESTORE | MIGRATE}
//!                                          <----  Accept | Refuse{reason}
//! STORE:
//!   FileOpen{name, size, mode}            ---->   ROOT/.NAME.partial-XXXX/name (0600)
//!   Data{bytes} ... (seq n, n+1, ...)     ---->
//!   FileClose{crc32c}                     ---->   size and crc checked, fsync
//!   ... every file, inventory.img last ...
//!   End{manifest: name, size, crc32c each}---->   checked against what came, fsync dir,
//!                                                 rename to ROOT/NAME, fsync ROOT
//!                                          <----  Committed{manifest hash} | Failed{why}
//!   (kills the target only now, if the
//!    hash is the one of what it sent)
//! FETCH: the same file frames and End from the server; the client answers Committed.
//! RESTORE: the server restores ROOT/NAME  <----  Restored{pids} | Failed{why}
//! MIGRATE: a check image (files, End)     ---->  <---- Verdict{findings}; then Accept and
//!   the image as for STORE (Committed), Restored{pids} (locked), Go, Running{pids}: the
//!   sequence and its failures are drawn in [`migrate`]
//! ```
//!
//! Anything else is never taken for a complete image: a dropped connection, a timeout, a
//! frame out of order, a bad checksum or tag, a name with `/` or `..`, a file larger or
//! smaller than announced, a manifest that differs from what came, a missing End. The
//! receiver then removes the partial directory and answers Failed (if it still can); the
//! sender of a dump rolls it back.
#![warn(missing_docs)]

#[cfg(feature = "engine")]
pub mod auth;
#[cfg(feature = "engine")]
pub mod client;
#[cfg(feature = "engine")]
pub mod conn;
#[cfg(feature = "engine")]
pub mod error;
pub mod frame;
pub mod manifest;
#[cfg(feature = "engine")]
pub mod migrate;
#[cfg(feature = "engine")]
pub mod scratch;
#[cfg(feature = "engine")]
pub mod server;
#[cfg(feature = "engine")]
pub mod transfer;

/// The protocol's control messages (generated from proto/stream.proto).
#[allow(missing_docs, clippy::all)]
pub mod msg {
    include!(concat!(env!("OUT_DIR"), "/cryo.stream.rs"));
}

#[cfg(feature = "engine")]
pub use auth::Psk;
#[cfg(feature = "engine")]
pub use client::{Peer, Store, DEFAULT_TIMEOUT};
#[cfg(feature = "engine")]
pub use conn::VERSIONS;
#[cfg(feature = "engine")]
pub use error::StreamError;
#[cfg(feature = "engine")]
pub use migrate::Migration;
#[cfg(feature = "engine")]
pub use server::{Outcome, ServeOptions, Server};
