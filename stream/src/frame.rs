//! The frame: a fixed 24-byte header, a bounded payload, and (once the session is keyed) a
//! 32-byte tag over header and payload (keyed BLAKE3 since protocol version 2: auth.rs).
//!
//! ```text
//! offset  size  field
//!  0       4    magic "CRYS"
//!  4       2    type (u16, big-endian; 0 is invalid, see FrameType)
//!  6       2    flags (reserved: 0)
//!  8       8    sequence number (u64 BE): 0, 1, 2... per direction from the first frame
//! 16       4    payload length (u32 BE), at most MAX_PAYLOAD
//! 20       4    crc32c of the payload (u32 BE)
//! 24       len  payload (a protobuf control message, or raw bytes for Data)
//! 24+len  32    BLAKE3-keyed(session key, header || payload), after the handshake only
//! ```
//!
//! The checks run in that order, before any payload byte is interpreted: magic, type known,
//! flags zero, length bounded, sequence the expected one, then, once the payload is read, the
//! tag on a keyed session (it authenticates the header's crc32c with the rest: the receiver
//! does not compute the crc32c again) or the checksum before the handshake keyed it.

/// The frame magic.
pub const MAGIC: [u8; 4] = *b"CRYS";
/// The header's size.
pub const HEADER_LEN: usize = 24;
/// The largest payload a frame may carry (a data frame carries up to [`DATA_CHUNK`]).
pub const MAX_PAYLOAD: u32 = (1 << 20) + 4096;
/// How many bytes of an image file a data frame carries at most.
pub const DATA_CHUNK: usize = 1 << 20;
/// The size of the tag after each frame once the session is keyed.
pub const TAG_LEN: usize = 32;

/// What a frame carries. 0 is reserved as invalid, so a zeroed header never parses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum FrameType {
    /// Client's first frame: [`Hello`](crate::msg::Hello) (the protocol version).
    Hello = 1,
    /// [`ServerHello`](crate::msg::ServerHello).
    ServerHello = 2,
    /// [`Unsupported`](crate::msg::Unsupported): the versions the server speaks.
    Unsupported = 3,
    /// [`ClientProof`](crate::msg::ClientProof).
    ClientProof = 4,
    /// [`Start`](crate::msg::Start).
    Start = 5,
    /// [`Accept`](crate::msg::Accept).
    Accept = 6,
    /// [`Refuse`](crate::msg::Refuse).
    Refuse = 7,
    /// [`FileOpen`](crate::msg::FileOpen).
    FileOpen = 8,
    /// Raw bytes of the file opened last.
    Data = 9,
    /// [`FileClose`](crate::msg::FileClose).
    FileClose = 10,
    /// [`End`](crate::msg::End) with the manifest.
    End = 11,
    /// [`Committed`](crate::msg::Committed).
    Committed = 12,
    /// [`Failed`](crate::msg::Failed).
    Failed = 13,
    /// [`Restored`](crate::msg::Restored).
    Restored = 14,
    /// [`Verdict`](crate::msg::Verdict): a migration's check judged.
    Verdict = 20,
    /// [`Go`](crate::msg::Go): a migration's restored processes may run.
    Go = 21,
    /// [`Running`](crate::msg::Running): they run.
    Running = 22,
    /// [`Heard`](crate::msg::Heard): the source got the Running.
    Heard = 23,
    /// [`Absorbed`](crate::msg::Absorbed): a pre-copy round in place on the receiver.
    Absorbed = 24,
}

impl FrameType {
    /// The type numbered `n`, if any (0 never is).
    pub fn from_u16(n: u16) -> Option<Self> {
        use FrameType::*;
        Some(match n {
            1 => Hello,
            2 => ServerHello,
            3 => Unsupported,
            4 => ClientProof,
            5 => Start,
            6 => Accept,
            7 => Refuse,
            8 => FileOpen,
            9 => Data,
            10 => FileClose,
            11 => End,
            12 => Committed,
            13 => Failed,
            14 => Restored,
            20 => Verdict,
            21 => Go,
            22 => Running,
            23 => Heard,
            24 => Absorbed,
            _ => return None,
        })
    }
}

/// Why bytes are not a frame (each with its own variant: every one has a test).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The first four bytes are not [`MAGIC`].
    #[error("bad frame magic {0:02x?} (not a cryo stream)")]
    BadMagic([u8; 4]),
    /// Type 0 or a number no version defines.
    #[error("invalid frame type {0}")]
    BadType(u16),
    /// Reserved flags set.
    #[error("frame flags {0:#x} set (reserved)")]
    BadFlags(u16),
    /// A payload longer than [`MAX_PAYLOAD`].
    #[error("frame payload of {0} bytes exceeds the limit of {MAX_PAYLOAD}")]
    TooLong(u32),
    /// Not the next sequence number.
    #[error("frame out of order: sequence {found}, expected {expected}")]
    OutOfOrder {
        /// The number expected.
        expected: u64,
        /// The number found.
        found: u64,
    },
    /// The payload's crc32c is not the header's.
    #[error("frame {seq} checksum mismatch (corrupted in transit)")]
    Checksum {
        /// The frame's sequence number.
        seq: u64,
    },
    /// The tag does not authenticate the frame.
    #[error("frame {seq} fails authentication (corrupted in transit, altered or injected)")]
    BadTag {
        /// The frame's sequence number.
        seq: u64,
    },
    /// Fewer bytes than the header says.
    #[error("frame truncated: {need} bytes needed, {have} present")]
    Truncated {
        /// Bytes needed.
        need: usize,
        /// Bytes present.
        have: usize,
    },
}

/// A parsed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The frame type.
    pub kind: FrameType,
    /// Its sequence number.
    pub seq: u64,
    /// The payload's length.
    pub len: u32,
    /// The payload's crc32c.
    pub crc: u32,
}

/// The header of a frame of `kind` carrying `payload`.
pub fn encode_header(kind: FrameType, seq: u64, payload: &[u8]) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..4].copy_from_slice(&MAGIC);
    h[4..6].copy_from_slice(&(kind as u16).to_be_bytes());
    h[8..16].copy_from_slice(&seq.to_be_bytes());
    h[16..20].copy_from_slice(&(payload.len() as u32).to_be_bytes());
    h[20..24].copy_from_slice(&crc32c::crc32c(payload).to_be_bytes());
    h
}

/// Parses a header, checking everything it alone can tell (magic, type, flags, length).
pub fn decode_header(h: &[u8; HEADER_LEN]) -> Result<Header, FrameError> {
    let magic: [u8; 4] = h[0..4].try_into().unwrap_or_default();
    if magic != MAGIC {
        return Err(FrameError::BadMagic(magic));
    }
    let kind_n = u16::from_be_bytes([h[4], h[5]]);
    let kind = FrameType::from_u16(kind_n).ok_or(FrameError::BadType(kind_n))?;
    let flags = u16::from_be_bytes([h[6], h[7]]);
    if flags != 0 {
        return Err(FrameError::BadFlags(flags));
    }
    let seq = u64::from_be_bytes(h[8..16].try_into().unwrap_or_default());
    let len = u32::from_be_bytes(h[16..20].try_into().unwrap_or_default());
    if len > MAX_PAYLOAD {
        return Err(FrameError::TooLong(len));
    }
    let crc = u32::from_be_bytes(h[20..24].try_into().unwrap_or_default());
    Ok(Header {
        kind,
        seq,
        len,
        crc,
    })
}

/// Checks `payload` against its header's checksum.
pub fn check_payload(header: &Header, payload: &[u8]) -> Result<(), FrameError> {
    if crc32c::crc32c(payload) != header.crc {
        return Err(FrameError::Checksum { seq: header.seq });
    }
    Ok(())
}

/// One whole frame parsed from a buffer (no tag): the pure entry point of the fuzz target.
/// Returns the header, the payload and the bytes used.
pub fn decode(bytes: &[u8], expected_seq: u64) -> Result<(Header, &[u8], usize), FrameError> {
    let h: &[u8; HEADER_LEN] = bytes
        .get(..HEADER_LEN)
        .and_then(|h| h.try_into().ok())
        .ok_or(FrameError::Truncated {
            need: HEADER_LEN,
            have: bytes.len(),
        })?;
    let header = decode_header(h)?;
    if header.seq != expected_seq {
        return Err(FrameError::OutOfOrder {
            expected: expected_seq,
            found: header.seq,
        });
    }
    let end = HEADER_LEN + header.len as usize;
    let payload = bytes.get(HEADER_LEN..end).ok_or(FrameError::Truncated {
        need: end,
        have: bytes.len(),
    })?;
    check_payload(&header, payload)?;
    Ok((header, payload, end))
}

/// The crc32c of `a || b` from `crc32c(a)`, `crc32c(b)` and `b`'s length: a file's checksum
/// from its frames'. `crc32c::crc32c_combine` builds its shift operator anew at each call
/// (thousands of operations: a few percent of a stream's time at one call per frame); the
/// operator for a full data frame, [`DATA_CHUNK`] bytes, is built once here.
pub fn crc_combine(crc_a: u32, crc_b: u32, len_b: usize) -> u32 {
    static CHUNK_SHIFT: std::sync::OnceLock<[u32; 32]> = std::sync::OnceLock::new();
    if len_b != DATA_CHUNK {
        return crc32c::crc32c_combine(crc_a, crc_b, len_b);
    }
    // Shifting a crc by n zero bytes is linear over GF(2): its operator is the image of
    // each bit.
    let shift = CHUNK_SHIFT
        .get_or_init(|| std::array::from_fn(|bit| crc32c::crc32c_combine(1 << bit, 0, DATA_CHUNK)));
    let mut out = crc_b;
    for (bit, column) in shift.iter().enumerate() {
        if crc_a >> bit & 1 == 1 {
            out ^= column;
        }
    }
    out
}

/// A whole frame without a tag, for tests and the fuzz seeds.
pub fn encode(kind: FrameType, seq: u64, payload: &[u8]) -> Vec<u8> {
    let mut v = encode_header(kind, seq, payload).to_vec();
    v.extend_from_slice(payload);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let f = encode(FrameType::Data, 7, b"hello");
        let (h, p, used) = decode(&f, 7).unwrap();
        assert_eq!(h.kind, FrameType::Data);
        assert_eq!((h.seq, h.len, p, used), (7, 5, &b"hello"[..], f.len()));
    }

    #[test]
    fn bad_magic() {
        let mut f = encode(FrameType::Start, 0, b"x");
        f[0] = b'X';
        assert!(matches!(decode(&f, 0), Err(FrameError::BadMagic(_))));
    }

    #[test]
    fn type_zero_and_unknown_are_invalid() {
        for n in [0u16, 15, 0xffff] {
            let mut f = encode(FrameType::Start, 0, b"");
            f[4..6].copy_from_slice(&n.to_be_bytes());
            assert_eq!(decode(&f, 0), Err(FrameError::BadType(n)));
        }
    }

    #[test]
    fn reserved_flags() {
        let mut f = encode(FrameType::Start, 0, b"");
        f[7] = 1;
        assert_eq!(decode(&f, 0), Err(FrameError::BadFlags(1)));
    }

    #[test]
    fn payload_bounded_before_reading() {
        let mut f = encode(FrameType::Data, 0, b"");
        f[16..20].copy_from_slice(&(MAX_PAYLOAD + 1).to_be_bytes());
        assert_eq!(decode(&f, 0), Err(FrameError::TooLong(MAX_PAYLOAD + 1)));
    }

    #[test]
    fn out_of_order() {
        let f = encode(FrameType::Data, 3, b"a");
        assert_eq!(
            decode(&f, 2),
            Err(FrameError::OutOfOrder {
                expected: 2,
                found: 3
            })
        );
    }

    #[test]
    fn checksum_mismatch() {
        let mut f = encode(FrameType::Data, 0, b"abc");
        f[HEADER_LEN + 1] ^= 0x10;
        assert_eq!(decode(&f, 0), Err(FrameError::Checksum { seq: 0 }));
    }

    #[test]
    fn crc_combine_is_the_crc_of_both() {
        let a: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
        let b: Vec<u8> = (0..DATA_CHUNK as u32).map(|i| (i ^ i >> 9) as u8).collect();
        for (x, y) in [
            (&a[..], &b[..]),
            (&b[..], &a[..]),
            (&b[..], &b[..]),
            (&a[..], &[][..]),
        ] {
            let mut both = x.to_vec();
            both.extend_from_slice(y);
            assert_eq!(
                crc_combine(crc32c::crc32c(x), crc32c::crc32c(y), y.len()),
                crc32c::crc32c(&both)
            );
        }
    }

    #[test]
    fn truncated() {
        let f = encode(FrameType::Data, 0, b"abcdef");
        assert!(matches!(
            decode(&f[..10], 0),
            Err(FrameError::Truncated { need: 24, .. })
        ));
        assert!(matches!(
            decode(&f[..HEADER_LEN + 2], 0),
            Err(FrameError::Truncated { need: 30, .. })
        ));
    }
}
