//! One side of a connection: frames out and in with their sequence numbers, keyed by the
//! handshake, and the handshake itself.

use std::io::{IoSlice, Read, Write};

use prost::Message;
use tracing::debug;

use crate::auth::{self, Psk, SessionKey};
use crate::error::StreamError;
use crate::frame::{self, FrameType, DATA_CHUNK, HEADER_LEN, TAG_LEN};
use crate::msg;

/// The protocol versions this cryo speaks. Version 2 tags frames with keyed BLAKE3 (version
/// 1, HMAC-SHA256, is no longer spoken: a peer of version 1 is answered with this list).
pub const VERSIONS: &[u32] = &[2];

/// A received frame.
#[derive(Debug)]
pub struct Frame {
    /// Its type.
    pub kind: FrameType,
    /// Its payload (checked).
    pub payload: Vec<u8>,
    /// The payload's crc32c (checked on an unkeyed connection, authenticated by the tag on a
    /// keyed one), so a file's checksum is combined from its frames' instead of computed a
    /// second time.
    pub crc: u32,
}

impl Frame {
    /// The payload decoded as control message `M`.
    pub fn decode<M: Message + Default>(&self, step: &str) -> Result<M, StreamError> {
        M::decode(&self.payload[..]).map_err(|e| {
            StreamError::protocol(step, format!("undecodable {:?} message: {e}", self.kind))
        })
    }
}

/// A connection speaking the protocol over `S` (a TCP stream; anything in tests).
pub struct Conn<S> {
    io: S,
    /// Who is at the other end, for messages.
    peer: String,
    send_seq: u64,
    recv_seq: u64,
    key: Option<SessionKey>,
    /// The read and write timeout, for messages.
    timeout_secs: u64,
    /// Bytes of image data (Data payloads) sent so far, and who wants to hear of them.
    data_sent: u64,
    progress: Option<Box<dyn FnMut(u64) + Send>>,
}

impl<S: Read + Write> Conn<S> {
    /// A fresh, unkeyed connection with `peer` (its address, for messages).
    pub fn new(io: S, peer: impl Into<String>, timeout_secs: u64) -> Self {
        Self {
            io,
            peer: peer.into(),
            send_seq: 0,
            recv_seq: 0,
            key: None,
            timeout_secs,
            data_sent: 0,
            progress: None,
        }
    }

    /// The peer's address.
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// Calls `f` with the bytes of image data sent so far after each Data frame (a progress
    /// display).
    pub fn on_data_sent(&mut self, f: impl FnMut(u64) + Send + 'static) {
        self.progress = Some(Box::new(f));
    }

    /// The transport.
    pub fn get_ref(&self) -> &S {
        &self.io
    }

    /// Sends one frame; `step` names what is being done, for the error. Returns the
    /// payload's crc32c.
    pub fn send(
        &mut self,
        kind: FrameType,
        payload: &[u8],
        step: &str,
    ) -> Result<u32, StreamError> {
        let header = frame::encode_header(kind, self.send_seq, payload);
        let crc = u32::from_be_bytes([header[20], header[21], header[22], header[23]]);
        let tag = self.key.as_ref().map(|key| key.tag(&header, payload));
        self.write_frame(
            &header,
            payload,
            tag.as_ref().map_or(&[][..], |t| &t[..]),
            step,
        )?;
        self.sent(kind, payload.len());
        Ok(crc)
    }

    /// Sends `size` bytes read from `contents` as Data frames of [`DATA_CHUNK`] bytes (the
    /// last one shorter); returns the crc32c of all of them. `keep_going` is asked before
    /// each frame is read.
    ///
    /// On a keyed connection with more than one frame to send, the frames' checksums and
    /// tags are computed on a second thread while this one writes the previous frame to the
    /// socket: the two largest costs of the sender overlap instead of adding up. The frames
    /// on the wire are the same as [`Conn::send`]'s.
    pub fn send_data(
        &mut self,
        contents: &mut dyn Read,
        size: u64,
        step: &str,
        keep_going: &dyn Fn(&str) -> Result<(), StreamError>,
    ) -> Result<u32, StreamError> {
        let read = |buf: &mut [u8], contents: &mut dyn Read| {
            contents
                .read_exact(buf)
                .map_err(|e| StreamError::io(format!("{step}: read"), e, 0))
        };
        let mut crc = 0u32;
        let Some(key) = self.key.clone().filter(|_| size > DATA_CHUNK as u64) else {
            let mut buf = vec![0u8; DATA_CHUNK.min(size as usize)];
            let mut sent = 0u64;
            while sent < size {
                keep_going(step)?;
                let want = DATA_CHUNK.min((size - sent) as usize);
                read(&mut buf[..want], contents)?;
                let part = self.send(FrameType::Data, &buf[..want], step)?;
                crc = frame::crc_combine(crc, part, want);
                sent += want as u64;
            }
            return Ok(crc);
        };
        // Buffers go: this thread (read) -> hasher (header with crc32c, tag) -> this thread
        // (write), then back to be read into again. Two in flight: the hasher works on one
        // while this thread writes the other.
        type Hashed = (Vec<u8>, usize, [u8; HEADER_LEN], [u8; TAG_LEN]);
        let (to_hasher, hasher_in) = std::sync::mpsc::sync_channel::<(Vec<u8>, usize, u64)>(2);
        let (hasher_out, from_hasher) = std::sync::mpsc::sync_channel::<Hashed>(2);
        std::thread::scope(|scope| {
            scope.spawn(move || {
                for (buf, len, seq) in hasher_in {
                    let header = frame::encode_header(FrameType::Data, seq, &buf[..len]);
                    let tag = key.tag(&header, &buf[..len]);
                    if hasher_out.send((buf, len, header, tag)).is_err() {
                        return;
                    }
                }
            });
            // Owned by this closure: dropped when it returns (an error too), which stops the
            // hasher before the scope waits for it.
            let (to_hasher, from_hasher) = (to_hasher, from_hasher);
            let mut free: Vec<Vec<u8>> = (0..2).map(|_| vec![0u8; DATA_CHUNK]).collect();
            let (mut read_bytes, mut queued, mut seq) = (0u64, 0usize, self.send_seq);
            loop {
                while read_bytes < size {
                    let Some(mut buf) = free.pop() else { break };
                    keep_going(step)?;
                    let want = DATA_CHUNK.min((size - read_bytes) as usize);
                    read(&mut buf[..want], contents)?;
                    // The hasher only stops when this side dropped its end.
                    let _ = to_hasher.send((buf, want, seq));
                    read_bytes += want as u64;
                    seq += 1;
                    queued += 1;
                }
                if queued == 0 {
                    return Ok(crc);
                }
                let (buf, len, header, tag) = from_hasher
                    .recv()
                    .map_err(|_| StreamError::protocol(step, "the frame hasher stopped"))?;
                queued -= 1;
                let part = u32::from_be_bytes([header[20], header[21], header[22], header[23]]);
                self.write_frame(&header, &buf[..len], &tag, step)?;
                self.sent(FrameType::Data, len);
                crc = frame::crc_combine(crc, part, len);
                free.push(buf);
            }
        })
    }

    /// Sends `data` (a file's contents mapped into memory) as Data frames of [`DATA_CHUNK`]
    /// bytes, the last one shorter; returns the crc32c of all of them. `keep_going` is asked
    /// before each frame is sent.
    ///
    /// The frames are written from `data` itself: no copy into a buffer first (the reading
    /// of [`Conn::send_data`]). On a keyed connection with more than one frame, a second
    /// thread computes the frames' checksums and tags while this one writes the frames
    /// before them. The frames on the wire are the same as [`Conn::send`]'s.
    pub fn send_slice(
        &mut self,
        data: &[u8],
        step: &str,
        keep_going: &dyn Fn(&str) -> Result<(), StreamError>,
    ) -> Result<u32, StreamError> {
        let mut crc = 0u32;
        let Some(key) = self.key.clone().filter(|_| data.len() > DATA_CHUNK) else {
            for chunk in data.chunks(DATA_CHUNK) {
                keep_going(step)?;
                let part = self.send(FrameType::Data, chunk, step)?;
                crc = frame::crc_combine(crc, part, chunk.len());
            }
            return Ok(crc);
        };
        let first_seq = self.send_seq;
        // Two frames hashed ahead at most: the hasher stays just ahead of the writes, so the
        // bytes it read are still in the cache when the socket copies them.
        let (hasher_out, from_hasher) =
            std::sync::mpsc::sync_channel::<([u8; HEADER_LEN], [u8; TAG_LEN])>(2);
        std::thread::scope(|scope| {
            scope.spawn(move || {
                for (i, chunk) in data.chunks(DATA_CHUNK).enumerate() {
                    let header = frame::encode_header(FrameType::Data, first_seq + i as u64, chunk);
                    let tag = key.tag(&header, chunk);
                    // Stops when the writer below returned (an error too).
                    if hasher_out.send((header, tag)).is_err() {
                        return;
                    }
                }
            });
            // Owned by this closure: dropped when it returns, which stops the hasher before
            // the scope waits for it.
            let from_hasher = from_hasher;
            for chunk in data.chunks(DATA_CHUNK) {
                keep_going(step)?;
                let (header, tag) = from_hasher
                    .recv()
                    .map_err(|_| StreamError::protocol(step, "the frame hasher stopped"))?;
                let part = u32::from_be_bytes([header[20], header[21], header[22], header[23]]);
                self.write_frame(&header, chunk, &tag, step)?;
                self.sent(FrameType::Data, chunk.len());
                crc = frame::crc_combine(crc, part, chunk.len());
            }
            Ok(crc)
        })
    }

    /// Writes the bytes of one frame (tag empty on an unkeyed connection).
    fn write_frame(
        &mut self,
        header: &[u8; HEADER_LEN],
        payload: &[u8],
        tag: &[u8],
        step: &str,
    ) -> Result<(), StreamError> {
        // Header, payload and tag in one gathered write: the payload is not copied again.
        let mut parts = [
            IoSlice::new(header),
            IoSlice::new(payload),
            IoSlice::new(tag),
        ];
        write_all_vectored(&mut self.io, &mut parts).map_err(|e| {
            StreamError::io(
                format!("{step}: send to {}", self.peer),
                e,
                self.timeout_secs,
            )
        })
    }

    /// Counts a frame of `kind` with `len` bytes of payload as sent.
    fn sent(&mut self, kind: FrameType, len: usize) {
        self.send_seq += 1;
        if kind == FrameType::Data {
            self.data_sent += len as u64;
            if let Some(progress) = &mut self.progress {
                progress(self.data_sent);
            }
        }
    }

    /// Sends control message `m` in a frame of `kind`.
    pub fn send_msg<M: Message>(
        &mut self,
        kind: FrameType,
        m: &M,
        step: &str,
    ) -> Result<(), StreamError> {
        self.send(kind, &m.encode_to_vec(), step).map(drop)
    }

    /// Receives the next frame, checked (header, order, checksum, tag).
    pub fn recv(&mut self, step: &str) -> Result<Frame, StreamError> {
        let mut payload = Vec::new();
        let (kind, crc) = self.recv_into(step, &mut payload)?;
        Ok(Frame { kind, payload, crc })
    }

    /// Receives the next frame, checked (header, order, checksum, tag), its payload into
    /// `payload` (resized to it; its allocation is kept from frame to frame, so the data
    /// frames of a file are not each a new, zeroed buffer). Returns its type and crc32c.
    pub fn recv_into(
        &mut self,
        step: &str,
        payload: &mut Vec<u8>,
    ) -> Result<(FrameType, u32), StreamError> {
        let unchecked = self.recv_unchecked(step, payload)?;
        self.checker(step).check(&unchecked, payload)?;
        Ok((unchecked.kind(), unchecked.crc()))
    }

    /// Reads the next frame: its header checked (magic, type, flags, length, order), its
    /// payload into `payload` (as [`Conn::recv_into`]) and its tag, NOT checked: the caller
    /// checks checksum and tag with [`Checker::check`] before it uses the payload (on
    /// another thread, while this one reads the next frame).
    pub fn recv_unchecked(
        &mut self,
        step: &str,
        payload: &mut Vec<u8>,
    ) -> Result<Unchecked, StreamError> {
        let from = |s: &Self| format!("{step}: receive from {}", s.peer);
        let mut h = [0u8; HEADER_LEN];
        self.io
            .read_exact(&mut h)
            .map_err(|e| StreamError::io(from(self), e, self.timeout_secs))?;
        let bad = |s: &Self, source| StreamError::Frame {
            step: from(s),
            source,
        };
        let header = frame::decode_header(&h).map_err(|e| bad(self, e))?;
        if header.seq != self.recv_seq {
            return Err(bad(
                self,
                frame::FrameError::OutOfOrder {
                    expected: self.recv_seq,
                    found: header.seq,
                },
            ));
        }
        // Sized without zeroing what the last frame left (it is all overwritten by the read).
        payload.truncate(header.len as usize);
        payload.resize(header.len as usize, 0);
        self.io
            .read_exact(payload)
            .map_err(|e| StreamError::io(from(self), e, self.timeout_secs))?;
        let mut tag = [0u8; TAG_LEN];
        if self.key.is_some() {
            self.io
                .read_exact(&mut tag)
                .map_err(|e| StreamError::io(from(self), e, self.timeout_secs))?;
        }
        self.recv_seq += 1;
        Ok(Unchecked {
            header,
            raw: h,
            tag,
        })
    }

    /// The connection keyed with `key` as a handshake would (tests).
    #[cfg(test)]
    pub(crate) fn keyed(mut self, key: SessionKey) -> Self {
        self.key = Some(key);
        self
    }

    /// What checks the frames [`Conn::recv_unchecked`] read (the session key), anywhere.
    pub fn checker(&self, step: &str) -> Checker {
        Checker {
            key: self.key.clone(),
            step: format!("{step}: receive from {}", self.peer),
        }
    }

    /// Receives a frame that must be `kind` (a Refuse or Failed in its place is told as such).
    pub fn expect<M: Message + Default>(
        &mut self,
        kind: FrameType,
        step: &str,
    ) -> Result<M, StreamError> {
        let f = self.recv(step)?;
        if f.kind == kind {
            return f.decode(step);
        }
        Err(unexpected(&f, step, &format!("{kind:?}")))
    }

    /// The client's side of the handshake: Hello, the server's proof checked, ours sent.
    pub fn client_handshake(&mut self, psk: &Psk) -> Result<(), StreamError> {
        let step = "handshake";
        let cn = auth::nonce().map_err(|e| StreamError::io(step, e, 0))?;
        self.send_msg(
            FrameType::Hello,
            &msg::Hello {
                version: VERSIONS[VERSIONS.len() - 1],
                nonce: cn.to_vec(),
            },
            step,
        )?;
        let f = self.recv(step)?;
        let hello: msg::ServerHello = match f.kind {
            FrameType::ServerHello => f.decode(step)?,
            FrameType::Unsupported => {
                let u: msg::Unsupported = f.decode(step)?;
                return Err(StreamError::Version {
                    peer: format!("the receiver at {}", self.peer),
                    theirs: u.supported,
                    ours: VERSIONS.to_vec(),
                });
            }
            _ => return Err(unexpected(&f, step, "ServerHello")),
        };
        if !VERSIONS.contains(&hello.version) {
            return Err(StreamError::Version {
                peer: format!("the receiver at {}", self.peer),
                theirs: vec![hello.version],
                ours: VERSIONS.to_vec(),
            });
        }
        if hello.nonce.len() != auth::NONCE_LEN
            || !auth::proof_matches(&psk.server_proof(&cn, &hello.nonce), &hello.proof)
        {
            return Err(StreamError::Auth {
                step: format!("{step} with {}", self.peer),
                why: "the receiver does not prove it holds our key (different --psk-file?)".into(),
            });
        }
        let proof = psk.client_proof(&cn, &hello.nonce);
        self.send_msg(
            FrameType::ClientProof,
            &msg::ClientProof {
                proof: proof.to_vec(),
            },
            step,
        )?;
        self.key = Some(psk.session_key(&cn, &hello.nonce));
        debug!(peer = %self.peer, "authenticated");
        Ok(())
    }

    /// The server's side of the handshake, speaking `versions`. Nothing but the handshake is
    /// read until the client proved it holds the key.
    pub fn server_handshake(&mut self, psk: &Psk, versions: &[u32]) -> Result<(), StreamError> {
        let step = "handshake";
        let f = self.recv(step)?;
        if f.kind != FrameType::Hello {
            return Err(unexpected(&f, step, "Hello"));
        }
        let hello: msg::Hello = f.decode(step)?;
        if !versions.contains(&hello.version) {
            self.send_msg(
                FrameType::Unsupported,
                &msg::Unsupported {
                    supported: versions.to_vec(),
                },
                step,
            )?;
            return Err(StreamError::Version {
                peer: format!("the client at {}", self.peer),
                theirs: vec![hello.version],
                ours: versions.to_vec(),
            });
        }
        if hello.nonce.len() != auth::NONCE_LEN {
            return Err(StreamError::protocol(
                step,
                "client nonce of the wrong size",
            ));
        }
        let sn = auth::nonce().map_err(|e| StreamError::io(step, e, 0))?;
        self.send_msg(
            FrameType::ServerHello,
            &msg::ServerHello {
                version: hello.version,
                nonce: sn.to_vec(),
                proof: psk.server_proof(&hello.nonce, &sn).to_vec(),
            },
            step,
        )?;
        let f = self.recv(step).map_err(|e| match e {
            StreamError::Closed { .. } => StreamError::Auth {
                step: format!("{step} with {}", self.peer),
                why: "the client left without proving it holds the key (different --psk-file?)"
                    .into(),
            },
            e => e,
        })?;
        if f.kind != FrameType::ClientProof {
            return Err(unexpected(&f, step, "ClientProof"));
        }
        let proof: msg::ClientProof = f.decode(step)?;
        if !auth::proof_matches(&psk.client_proof(&hello.nonce, &sn), &proof.proof) {
            return Err(StreamError::Auth {
                step: format!("{step} with {}", self.peer),
                why: "the client does not prove it holds the key".into(),
            });
        }
        self.key = Some(psk.session_key(&hello.nonce, &sn));
        debug!(peer = %self.peer, "authenticated");
        Ok(())
    }

    /// Tells the peer this side failed (best effort: the connection may be gone already).
    pub fn send_failed(&mut self, why: &str) {
        let _ = self.send_msg(
            FrameType::Failed,
            &msg::Failed { why: why.into() },
            "report the failure",
        );
    }
}

/// A frame read whose checksum and tag are still to be checked ([`Conn::recv_unchecked`]).
#[derive(Debug)]
pub struct Unchecked {
    header: frame::Header,
    raw: [u8; HEADER_LEN],
    tag: [u8; TAG_LEN],
}

impl Unchecked {
    /// Its type (the header is checked).
    pub fn kind(&self) -> FrameType {
        self.header.kind
    }

    /// The crc32c its header announces for the payload.
    pub fn crc(&self) -> u32 {
        self.header.crc
    }
}

/// Checks a frame's checksum and tag (the session's key, if keyed), on any thread.
#[derive(Clone)]
pub struct Checker {
    key: Option<SessionKey>,
    /// The step and peer, for the error.
    step: String,
}

impl Checker {
    /// Checks `payload` against the tag read with it on a keyed connection, against the
    /// header's checksum on an unkeyed one.
    pub fn check(&self, frame: &Unchecked, payload: &[u8]) -> Result<(), StreamError> {
        let bad = |source| StreamError::Frame {
            step: self.step.clone(),
            source,
        };
        let Some(key) = &self.key else {
            return frame::check_payload(&frame.header, payload).map_err(bad);
        };
        // Keyed: the tag authenticates header and payload as the sender wrote them, the
        // header's crc32c included (the sender computed it from the payload): computing it
        // again here would check nothing the tag did not. One pass over the payload, not two.
        if !key.verify(&frame.raw, payload, &frame.tag) {
            return Err(bad(frame::FrameError::BadTag {
                seq: frame.header.seq,
            }));
        }
        Ok(())
    }
}

/// `write_all` of several buffers: `writev` until every byte is out.
fn write_all_vectored(io: &mut impl Write, mut parts: &mut [IoSlice<'_>]) -> std::io::Result<()> {
    IoSlice::advance_slices(&mut parts, 0);
    while !parts.is_empty() {
        match io.write_vectored(parts) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut parts, n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The error for frame `f` arriving where `wanted` was expected: a Refuse or Failed is the
/// peer's own word.
pub fn unexpected(f: &Frame, step: &str, wanted: &str) -> StreamError {
    match f.kind {
        FrameType::Refuse => StreamError::Refused {
            step: step.into(),
            reason: f
                .decode::<msg::Refuse>(step)
                .map(|r| r.reason)
                .unwrap_or_else(|e| e.to_string()),
        },
        FrameType::Failed => StreamError::PeerFailed {
            step: step.into(),
            why: f
                .decode::<msg::Failed>(step)
                .map(|r| r.why)
                .unwrap_or_else(|e| e.to_string()),
        },
        k => StreamError::protocol(step, format!("{k:?} frame where {wanted} was expected")),
    }
}

/// Whether `fd` becomes readable (data, a connection to accept, or the peer closed) within
/// `wait`, without reading it.
pub(crate) fn readable_within(fd: impl std::os::fd::AsFd, wait: std::time::Duration) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let ms = PollTimeout::try_from(wait.as_millis().min(i32::MAX as u128) as i32)
        .unwrap_or(PollTimeout::MAX);
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    matches!(poll(&mut fds, ms), Ok(n) if n > 0)
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixStream;

    use super::*;

    fn pair() -> (Conn<UnixStream>, Conn<UnixStream>) {
        let (a, b) = UnixStream::pair().unwrap();
        (Conn::new(a, "server", 5), Conn::new(b, "client", 5))
    }

    #[test]
    fn handshake_keys_both_sides() {
        let (mut c, mut s) = pair();
        let psk = Psk::from_bytes(b"0123456789abcdef");
        let p2 = psk.clone();
        let t = std::thread::spawn(move || {
            s.server_handshake(&p2, VERSIONS).unwrap();
            let got: msg::Start = s.expect(FrameType::Start, "start").unwrap();
            assert_eq!(got.name, "x");
        });
        c.client_handshake(&psk).unwrap();
        c.send_msg(
            FrameType::Start,
            &msg::Start {
                name: "x".into(),
                ..Default::default()
            },
            "start",
        )
        .unwrap();
        t.join().unwrap();
    }

    #[test]
    fn wrong_key_fails_on_both_sides() {
        let (mut c, mut s) = pair();
        let t = std::thread::spawn(move || {
            s.server_handshake(&Psk::from_bytes(b"server-key-000000"), VERSIONS)
                .unwrap_err()
        });
        let e = c
            .client_handshake(&Psk::from_bytes(b"client-key-000000"))
            .unwrap_err();
        assert!(matches!(e, StreamError::Auth { .. }), "{e}");
        drop(c);
        let e = t.join().unwrap();
        assert!(matches!(e, StreamError::Auth { .. }), "{e}");
    }

    #[test]
    fn version_mismatch_lists_both() {
        let (mut c, mut s) = pair();
        let psk = Psk::from_bytes(b"0123456789abcdef");
        let p2 = psk.clone();
        let t = std::thread::spawn(move || s.server_handshake(&p2, &[7, 8]).unwrap_err());
        let e = c.client_handshake(&psk).unwrap_err();
        assert!(
            matches!(&e, StreamError::Version { theirs, .. } if theirs == &[7, 8]),
            "{e}"
        );
        assert!(e.to_string().contains("[7, 8]") && e.to_string().contains("[2]"));
        assert!(matches!(t.join().unwrap(), StreamError::Version { .. }));
    }

    #[test]
    fn keyed_frames_reject_tampering_and_reordering() {
        let (a, b) = UnixStream::pair().unwrap();
        let key = Psk::from_bytes(b"0123456789abcdef").session_key(b"c", b"s");
        let mut tx = Conn::new(a.try_clone().unwrap(), "rx", 5);
        tx.key = Some(key.clone());
        let mut rx = Conn::new(b, "tx", 5);
        rx.key = Some(key.clone());
        tx.send(FrameType::Data, b"one", "t").unwrap();
        assert_eq!(rx.recv("t").unwrap().payload, b"one");
        // An injected frame: right checksum and sequence, no valid tag.
        let mut forged = frame::encode(FrameType::Data, 1, b"evil");
        forged.extend_from_slice(&[0u8; TAG_LEN]);
        (&a).write_all(&forged).unwrap();
        let e = rx.recv("t").unwrap_err();
        assert!(
            matches!(
                e,
                StreamError::Frame {
                    source: frame::FrameError::BadTag { seq: 1 },
                    ..
                }
            ),
            "{e}"
        );
        // A replayed frame (an old sequence number) is out of order.
        let (a, b) = UnixStream::pair().unwrap();
        let mut rx = Conn::new(b, "tx", 5);
        rx.key = Some(key.clone());
        let first = frame::encode(FrameType::Data, 0, b"x");
        let tag = key.tag(&first[..HEADER_LEN], b"x");
        for _ in 0..2 {
            (&a).write_all(&first).unwrap();
            (&a).write_all(&tag).unwrap();
        }
        rx.recv("t").unwrap();
        assert!(matches!(
            rx.recv("t").unwrap_err(),
            StreamError::Frame {
                source: frame::FrameError::OutOfOrder { .. },
                ..
            }
        ));
    }
}
