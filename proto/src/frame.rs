//! Image file framing: a fixed header outside protobuf, then checksummed records.
//!
//! ```text
//! header (32 bytes, little endian)
//!   0  magic      b"CRYOIMG\0"
//!   8  major u16  format major version (another major is refused)
//!  10  minor u16  format minor version (a newer minor is refused)
//!  12  kind u32   which message type the records hold (ImageKind)
//!  16  count u32  number of records
//!  20  hcrc u32   crc32c of bytes 0..20 and 24..32
//!  24  len u64    length of everything after the header
//! record (repeated `count` times)
//!   0  len u32    length of the encoded message
//!   4  crc u32    crc32c of the encoded message
//!   8  bytes      the protobuf message
//! ```
//!
//! A reader checks size, magic, version, header checksum, then each record's
//! checksum, and only then decodes, so a damaged file is named with its record.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use prost::Message;

/// Format major version written by this build. 2: sockets as native messages (`TcpConnection`,
/// `TcpListener`, `UdpSocket`, `UnixSocket` in a `oneof` of `Socket`, queues as `bytes`) and the
/// resume channel as a `ResumeChannel`, where format 1 stored serde_json; a 1.x image is
/// refused ([`ImageError::OlderFormat`]) and must be dumped again.
pub const FORMAT_MAJOR: u16 = 2;
/// Format minor version written by this build: raised with every change to the messages of
/// image.proto, so that an older cryo, which would ignore fields it does not know (and restore
/// a process without what they hold), refuses the image instead. 1: the fields added up to
/// 2026-12-07 (pipe packets, linked files' other names, futex hash slots, zero pages...). 2:
/// unix sockets' peer credentials (UnixSocket.peer_cred), and the fields added beside them
/// on 2026-12-07 (threads' default timer slack, realtime timer deadlines, VMA flags...). 3:
/// a stopped child's stop its parent had collected (ProcessEntry.stop_collected); mounts of a
/// mount namespace made through their parent's fd (NamespaceMount.parent, .bind_first), the
/// propagation of covered ones (MountPropagation.mount, .covered). 4: removed files a bind of
/// a mount namespace shows and its maker holds (NamespaceMount.removed_held_at,
/// RegularFile.removed_bound); the names `ip netns` gives a network namespace
/// (NetNamespace.handles); the network namespace a socket was made in when not its holder's
/// (Socket.netns_inode, .netns_outer). 5: the peer credentials a connection waiting in a
/// unix listener's accept queue shows once accepted (UnixPendingConnection.peer_cred). 6: the
/// pid_max and last pid of a dumped PID namespace (Inventory.pid_ns_pid_max, .pid_ns_last_pid);
/// a zombie's groups, signal masks and CPU mask (ProcessEntry.zombie_status...). 7: the stop
/// signals pending to a stopped process (ProcessEntry.stop_pending_shared, _threads); the
/// extended attributes and inode flags of what a restore makes again (InodeAttrs), a memfd's
/// owner and times (Memfd.uid...); the write life hint of an inode (FileDesc.rw_hint); the
/// timer id restore mode (ProcessAttrs.timer_create_restore_ids).
pub const FORMAT_MINOR: u16 = 7;

/// The fingerprint of image.proto's declarations (comments and spacing aside) that
/// [`FORMAT_MINOR`] was last raised for: a test fails when they change and it was not raised.
#[cfg(test)]
const SCHEMA_FINGERPRINT: u64 = 0xc454_bc15_9bee_737f;

const MAGIC: &[u8; 8] = b"CRYOIMG\0";
const HEADER_LEN: usize = 32;
const RECORD_HEADER_LEN: usize = 8;
/// No image file is allowed to be larger than this before decoding.
pub const MAX_IMAGE_LEN: u64 = 1 << 32;

/// Which message type an image file holds; 0 is reserved as invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum ImageKind {
    /// inventory.img
    Inventory = 1,
    /// pstree.img
    Pstree = 2,
    /// core-PID.img
    Core = 3,
    /// mm-PID.img
    Mm = 4,
    /// files.img
    Files = 5,
    /// ipc.img (SysV semaphore sets and message queues)
    SysvIpc = 20,
    /// check.img (`cryo dump --check-only`)
    MigrationCheck = 21,
    /// precopy-R-PID.img (a pre-copy round of `dump --to --pre-copy`, merged by the receiver)
    PreCopyRound = 22,
}

impl ImageKind {
    fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            1 => Self::Inventory,
            2 => Self::Pstree,
            3 => Self::Core,
            4 => Self::Mm,
            5 => Self::Files,
            20 => Self::SysvIpc,
            21 => Self::MigrationCheck,
            22 => Self::PreCopyRound,
            _ => return None,
        })
    }
}

/// Why an image file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The file could not be read or written.
    #[error("image {path}: {op}: {source}")]
    Io {
        /// The image file.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is shorter than its header says, or than a header.
    #[error("image {path}: truncated: {detail}")]
    Truncated {
        /// The image file.
        path: PathBuf,
        /// What is missing.
        detail: String,
    },
    /// Not a cryo image at all.
    #[error("image {path}: bad magic (not a cryo image)")]
    BadMagic {
        /// The image file.
        path: PathBuf,
    },
    /// Written by a format this build does not read.
    #[error("image {path}: format version {found_major}.{found_minor} is not supported (this cryo reads {FORMAT_MAJOR}.0 to {FORMAT_MAJOR}.{FORMAT_MINOR})")]
    Version {
        /// The image file.
        path: PathBuf,
        /// Major version found.
        found_major: u16,
        /// Minor version found.
        found_minor: u16,
    },
    /// Written by an older cryo in a format this build no longer reads.
    #[error("image {path}: a format-{found_major} image (version {found_major}.{found_minor}) from an older cryo; this cryo reads format {FORMAT_MAJOR} only: dump the process again with this cryo")]
    OlderFormat {
        /// The image file.
        path: PathBuf,
        /// Major version found.
        found_major: u16,
        /// Minor version found.
        found_minor: u16,
    },
    /// The file holds another kind of record than expected.
    #[error("image {path}: holds {found} records, expected {expected:?}")]
    WrongKind {
        /// The image file.
        path: PathBuf,
        /// Kind number found.
        found: u32,
        /// Kind expected.
        expected: ImageKind,
    },
    /// Header or record checksum mismatch.
    #[error("image {path}: {what}: checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    Checksum {
        /// The image file.
        path: PathBuf,
        /// "header" or "record N".
        what: String,
        /// Checksum stored in the file.
        stored: u32,
        /// Checksum of the bytes found.
        computed: u32,
    },
    /// A raw file's contents do not match the checksum its reference records (the checksum
    /// found is not said: it would help forge a reference).
    #[error("image {path}: contents: checksum mismatch")]
    ContentsChecksum {
        /// The raw file.
        path: PathBuf,
    },
    /// The file is not a regular file (a FIFO, a device, a directory): refused before a byte
    /// is read, so it can neither block nor read without end.
    #[error("image {path}: is not a regular file: refused")]
    NotRegular {
        /// The image file.
        path: PathBuf,
    },
    /// A record passed its checksum but does not decode.
    #[error("image {path}: record {index}: {source}")]
    Decode {
        /// The image file.
        path: PathBuf,
        /// Index of the record.
        index: usize,
        /// The decode error.
        source: prost::DecodeError,
    },
    /// A record's contents are inconsistent (a dangling reference, a bad range).
    #[error("image {path}: record {index}: {detail}")]
    Invalid {
        /// The image file.
        path: PathBuf,
        /// Index of the record.
        index: usize,
        /// What is wrong.
        detail: String,
    },
}

impl ImageError {
    /// An I/O error on `path`.
    pub fn io(path: &Path, op: &'static str, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_owned(),
            op,
            source,
        }
    }
}

/// Creates a file private to its owner (0600), failing if it exists.
pub fn create_private(path: &Path) -> Result<File, ImageError> {
    OpenOptions::new()
        .write(true)
        .read(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc_o_cloexec())
        .open(path)
        .map_err(|e| ImageError::io(path, "create", e))
}

const fn libc_o_cloexec() -> i32 {
    0o2000000
}

/// O_NOFOLLOW on x86_64, the one architecture cryo runs on (this crate does not link libc).
const O_NOFOLLOW: i32 = 0o400000;
/// O_NONBLOCK.
const O_NONBLOCK: i32 = 0o4000;

/// Encodes `records` of `kind` into one framed buffer.
pub fn encode<M: Message>(kind: ImageKind, records: &[M]) -> Vec<u8> {
    let body_len: usize = records
        .iter()
        .map(|r| RECORD_HEADER_LEN + r.encoded_len())
        .sum();
    let mut buf = Vec::with_capacity(HEADER_LEN + body_len);
    buf.extend_from_slice(MAGIC);
    buf.extend_from_slice(&FORMAT_MAJOR.to_le_bytes());
    buf.extend_from_slice(&FORMAT_MINOR.to_le_bytes());
    buf.extend_from_slice(&(kind as u32).to_le_bytes());
    buf.extend_from_slice(&(records.len() as u32).to_le_bytes());
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(&(body_len as u64).to_le_bytes());
    let hcrc = header_crc(&buf[..HEADER_LEN]);
    buf[20..24].copy_from_slice(&hcrc.to_le_bytes());
    for r in records {
        let start = buf.len();
        buf.extend_from_slice(&[0; RECORD_HEADER_LEN]);
        r.encode(&mut buf).expect("Vec grows as needed");
        let len = buf.len() - start - RECORD_HEADER_LEN;
        let crc = crc32c::crc32c(&buf[start + RECORD_HEADER_LEN..]);
        buf[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
        buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    }
    buf
}

fn header_crc(header: &[u8]) -> u32 {
    let c = crc32c::crc32c(&header[..20]);
    crc32c::crc32c_append(c, &header[24..HEADER_LEN])
}

/// Writes `records` to a new private image file at `path`.
pub fn write_image<M: Message>(
    path: &Path,
    kind: ImageKind,
    records: &[M],
) -> Result<(), ImageError> {
    let buf = encode(kind, records);
    let mut f = create_private(path)?;
    f.write_all(&buf)
        .map_err(|e| ImageError::io(path, "write", e))?;
    Ok(())
}

/// Decodes a framed buffer read from `path`, checking everything before decoding.
pub fn decode<M: Message + Default>(
    path: &Path,
    kind: ImageKind,
    buf: &[u8],
) -> Result<Vec<M>, ImageError> {
    let truncated = |detail: String| ImageError::Truncated {
        path: path.to_owned(),
        detail,
    };
    if buf.len() < HEADER_LEN {
        return Err(truncated(format!(
            "{} bytes, shorter than the {HEADER_LEN}-byte header",
            buf.len()
        )));
    }
    if &buf[..8] != MAGIC {
        return Err(ImageError::BadMagic {
            path: path.to_owned(),
        });
    }
    let u16_at = |o: usize| u16::from_le_bytes([buf[o], buf[o + 1]]);
    let u32_at = |b: &[u8], o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
    let (major, minor) = (u16_at(8), u16_at(10));
    // Format 1 is the only older format there was; a 0 is no format at all.
    if (1..FORMAT_MAJOR).contains(&major) {
        return Err(ImageError::OlderFormat {
            path: path.to_owned(),
            found_major: major,
            found_minor: minor,
        });
    }
    if major != FORMAT_MAJOR || minor > FORMAT_MINOR {
        return Err(ImageError::Version {
            path: path.to_owned(),
            found_major: major,
            found_minor: minor,
        });
    }
    let stored = u32_at(buf, 20);
    let computed = header_crc(&buf[..HEADER_LEN]);
    if stored != computed {
        return Err(ImageError::Checksum {
            path: path.to_owned(),
            what: "header".into(),
            stored,
            computed,
        });
    }
    let found_kind = u32_at(buf, 12);
    if ImageKind::from_u32(found_kind) != Some(kind) {
        return Err(ImageError::WrongKind {
            path: path.to_owned(),
            found: found_kind,
            expected: kind,
        });
    }
    let count = u32_at(buf, 16) as usize;
    let mut len_bytes = [0u8; 8];
    len_bytes.copy_from_slice(&buf[24..32]);
    let body_len = u64::from_le_bytes(len_bytes);
    let body = &buf[HEADER_LEN..];
    if (body.len() as u64) < body_len {
        return Err(truncated(format!(
            "{} cut short: header announces {body_len} bytes of records, file has {}",
            cut_record(body, count),
            body.len()
        )));
    }
    if (body.len() as u64) > body_len {
        return Err(ImageError::Invalid {
            path: path.to_owned(),
            index: count,
            detail: format!(
                "{} bytes after the last record (header announces {body_len} bytes of records)",
                body.len() as u64 - body_len
            ),
        });
    }
    let mut records = Vec::with_capacity(count.min(1 << 16));
    let mut off = 0usize;
    for index in 0..count {
        if body.len() - off < RECORD_HEADER_LEN {
            return Err(truncated(format!("record {index}: header cut short")));
        }
        let len = u32_at(body, off) as usize;
        let stored = u32_at(body, off + 4);
        off += RECORD_HEADER_LEN;
        if body.len() - off < len {
            return Err(truncated(format!(
                "record {index}: {len} bytes announced, {} left",
                body.len() - off
            )));
        }
        let bytes = &body[off..off + len];
        let computed = crc32c::crc32c(bytes);
        if stored != computed {
            return Err(ImageError::Checksum {
                path: path.to_owned(),
                what: format!("record {index}"),
                stored,
                computed,
            });
        }
        let msg = M::decode(bytes).map_err(|source| ImageError::Decode {
            path: path.to_owned(),
            index,
            source,
        })?;
        records.push(msg);
        off += len;
    }
    if off != body.len() {
        return Err(ImageError::Invalid {
            path: path.to_owned(),
            index: count,
            detail: format!("{} bytes after the last record", body.len() - off),
        });
    }
    Ok(records)
}

/// Which record a body shorter than announced is cut in ("record N"), walking the record
/// headers that are there; "record N" past the last complete one if they all fit.
fn cut_record(body: &[u8], count: usize) -> String {
    let mut off = 0usize;
    for index in 0..count {
        let Some(head) = body.get(off..off + RECORD_HEADER_LEN) else {
            return format!("record {index}");
        };
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        off += RECORD_HEADER_LEN;
        if body.len() - off < len {
            return format!("record {index}");
        }
        off += len;
    }
    format!("record {count}")
}

/// Reads and checks the image file at `path`: opened without following a symlink and without
/// blocking, refused unless it is a regular file no larger than [`MAX_IMAGE_LEN`].
pub fn read_image<M: Message + Default>(
    path: &Path,
    kind: ImageKind,
) -> Result<Vec<M>, ImageError> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc_o_cloexec() | O_NOFOLLOW | O_NONBLOCK)
        .open(path)
        .map_err(|e| ImageError::io(path, "open", e))?;
    let meta = f.metadata().map_err(|e| ImageError::io(path, "stat", e))?;
    if !meta.is_file() {
        return Err(ImageError::NotRegular {
            path: path.to_owned(),
        });
    }
    read_open_image(f, meta.len(), path, kind)
}

/// Reads and checks an image file opened already (as `path`), whose stat gave `len` bytes:
/// `len` is bounded first, and never more than `len` bytes are read, whatever the file does.
pub fn read_open_image<M: Message + Default>(
    f: File,
    len: u64,
    path: &Path,
    kind: ImageKind,
) -> Result<Vec<M>, ImageError> {
    if len > MAX_IMAGE_LEN {
        return Err(ImageError::Invalid {
            path: path.to_owned(),
            index: 0,
            detail: "larger than any image file cryo writes".into(),
        });
    }
    let mut buf = Vec::with_capacity(len as usize);
    // One byte more than announced, to see a file that grows under us.
    f.take(len + 1)
        .read_to_end(&mut buf)
        .map_err(|e| ImageError::io(path, "read", e))?;
    if buf.len() as u64 != len {
        return Err(ImageError::Truncated {
            path: path.to_owned(),
            detail: "the file changed size while it was read".into(),
        });
    }
    decode(path, kind, &buf)
}

/// Reads an image file that must hold exactly one record.
pub fn read_single<M: Message + Default>(path: &Path, kind: ImageKind) -> Result<M, ImageError> {
    let mut v = read_image::<M>(path, kind)?;
    if v.len() != 1 {
        return Err(ImageError::Invalid {
            path: path.to_owned(),
            index: 0,
            detail: format!("expected exactly one record, found {}", v.len()),
        });
    }
    Ok(v.remove(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::{ProcessEntry, Rlimit};

    fn sample() -> Vec<ProcessEntry> {
        (1..4)
            .map(|pid| ProcessEntry {
                pid,
                ppid: 1,
                pgid: pid,
                sid: pid,
                tids: vec![pid],
                ..Default::default()
            })
            .collect()
    }

    fn p() -> &'static Path {
        Path::new("pstree.img")
    }

    #[test]
    fn round_trip() {
        let buf = encode(ImageKind::Pstree, &sample());
        let back: Vec<ProcessEntry> = decode(p(), ImageKind::Pstree, &buf).unwrap();
        assert_eq!(back, sample());
    }

    #[test]
    fn empty_round_trip() {
        let buf = encode::<ProcessEntry>(ImageKind::Pstree, &[]);
        let back: Vec<ProcessEntry> = decode(p(), ImageKind::Pstree, &buf).unwrap();
        assert!(back.is_empty());
    }

    #[test]
    fn bad_magic() {
        let mut buf = encode(ImageKind::Pstree, &sample());
        buf[0] = b'X';
        let err = decode::<ProcessEntry>(p(), ImageKind::Pstree, &buf).unwrap_err();
        assert!(matches!(err, ImageError::BadMagic { .. }), "{err}");
    }

    #[test]
    fn other_major_and_newer_minor_refused() {
        for (o, v) in [(8, FORMAT_MAJOR + 1), (10, FORMAT_MINOR + 1)] {
            let mut buf = encode(ImageKind::Pstree, &sample());
            buf[o..o + 2].copy_from_slice(&v.to_le_bytes());
            let err = decode::<ProcessEntry>(p(), ImageKind::Pstree, &buf).unwrap_err();
            assert!(matches!(err, ImageError::Version { .. }), "{err}");
            assert!(err.to_string().contains("pstree.img"));
        }
    }

    /// image.proto without its comments, its declarations one space apart.
    fn declarations(proto: &str) -> String {
        proto
            .lines()
            .map(|l| l.split("//").next().unwrap_or(""))
            .flat_map(str::split_whitespace)
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn a_change_to_the_image_messages_raises_the_format_minor() {
        let text = declarations(include_str!("../proto/image.proto"));
        // FNV-1a: stable across builds and toolchains, unlike std's hasher.
        let fingerprint = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        assert_eq!(
            fingerprint, SCHEMA_FINGERPRINT,
            "image.proto's messages changed: raise FORMAT_MINOR (an older cryo must refuse \
             images it would restore without the new fields) and set SCHEMA_FINGERPRINT to \
             {fingerprint:#x}"
        );
    }

    #[test]
    fn declarations_ignore_comments_and_spacing() {
        assert_eq!(
            declarations("message A { // why\n  uint32 x = 1;  \n}\n"),
            "message A { uint32 x = 1; }"
        );
    }

    #[test]
    fn format_1_image_refused_as_older() {
        for minor in [0u16, 1] {
            let mut buf = encode(ImageKind::Pstree, &sample());
            buf[8..10].copy_from_slice(&1u16.to_le_bytes());
            buf[10..12].copy_from_slice(&minor.to_le_bytes());
            let err = decode::<ProcessEntry>(p(), ImageKind::Pstree, &buf).unwrap_err();
            assert!(matches!(err, ImageError::OlderFormat { .. }), "{err}");
            let text = err.to_string();
            assert!(text.contains("pstree.img"), "{text}");
            assert!(text.contains("format-1 image"), "{text}");
            assert!(text.contains("older cryo"), "{text}");
            assert!(text.contains("dump the process again"), "{text}");
        }
    }

    #[test]
    fn wrong_kind_refused() {
        let buf = encode(ImageKind::Pstree, &sample());
        let err = decode::<Rlimit>(p(), ImageKind::Core, &buf).unwrap_err();
        assert!(matches!(err, ImageError::WrongKind { .. }), "{err}");
    }

    #[test]
    fn every_truncation_refused() {
        let buf = encode(ImageKind::Pstree, &sample());
        for len in 0..buf.len() {
            assert!(
                decode::<ProcessEntry>(p(), ImageKind::Pstree, &buf[..len]).is_err(),
                "accepted a file cut at {len} of {}",
                buf.len()
            );
        }
    }

    #[test]
    fn every_bit_flip_refused() {
        let buf = encode(ImageKind::Pstree, &sample());
        for byte in 0..buf.len() {
            for bit in 0..8 {
                let mut b = buf.clone();
                b[byte] ^= 1 << bit;
                assert!(
                    decode::<ProcessEntry>(p(), ImageKind::Pstree, &b).is_err(),
                    "accepted a flip of bit {bit} in byte {byte}"
                );
            }
        }
    }

    #[test]
    fn record_flip_names_record() {
        let buf = encode(ImageKind::Pstree, &sample());
        let mut b = buf.clone();
        let last = b.len() - 1;
        b[last] ^= 0x40;
        let err = decode::<ProcessEntry>(p(), ImageKind::Pstree, &b).unwrap_err();
        assert!(err.to_string().contains("record 2"), "{err}");
    }
}
