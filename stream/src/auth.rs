//! The pre-shared key and what is derived from it: the mutual challenge-response of the
//! handshake and the per-session key that tags every frame after it.
//!
//! ```text
//! client nonce cn, server nonce sn (32 random bytes each, fresh per connection)
//! server proof  = HMAC-SHA256(psk, "cryo-stream server" || cn || sn)
//! client proof  = HMAC-SHA256(psk, "cryo-stream client" || cn || sn)
//! session key   = HMAC-SHA256(psk, "cryo-stream session" || cn || sn)
//! frame tag     = BLAKE3-keyed(session key, header || payload)  (the header holds the
//!                                                                 sequence number)
//! ```
//!
//! The frame tag is keyed BLAKE3 since protocol version 2 (version 1 used HMAC-SHA256): it
//! runs over every byte of the image on both sides, and BLAKE3's keyed mode is a MAC at
//! several times SHA-256's speed (the SIMD of this CPU: AVX-512, AVX2, SSE4.1), where
//! HMAC-SHA256 alone held the stream to a third of a plain TCP copy.
//!
//! The role is in every proof, so neither side can be used to answer the other's challenge;
//! both nonces are, so a recorded handshake proves nothing later; the tag covers the sequence
//! number, so a frame cannot be replayed, dropped or moved without the next check failing.

use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::frame::TAG_LEN;

type HmacSha256 = Hmac<Sha256>;

/// The size of a nonce.
pub const NONCE_LEN: usize = 32;
/// The shortest key accepted.
pub const MIN_KEY_LEN: usize = 16;
/// The longest key file read.
const MAX_KEY_FILE: u64 = 4096;

/// Why a key file is refused.
#[derive(Debug, thiserror::Error)]
pub enum PskError {
    /// It cannot be opened or read.
    #[error("psk file {}: {step}: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        step: &'static str,
        /// The kernel's answer.
        source: std::io::Error,
    },
    /// It is not something a key may be kept in.
    #[error("psk file {}: {why}: refused", .path.display())]
    Unsafe {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
}

/// A pre-shared key, read from a file only its owner (root or us) can read.
#[derive(Clone)]
pub struct Psk(Vec<u8>);

impl std::fmt::Debug for Psk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Psk(..)")
    }
}

impl Psk {
    /// Reads the key in `path`: a regular file (not followed through a symlink) owned by root
    /// or the user running cryo, mode 0600 or stricter, holding at least [`MIN_KEY_LEN`]
    /// bytes (surrounding whitespace ignored, so `head -c 32 /dev/urandom | base64` works).
    pub fn load(path: &Path) -> Result<Self, PskError> {
        let unsafe_ = |why: String| PskError::Unsafe {
            path: path.to_owned(),
            why,
        };
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
            .map_err(|source| match source.raw_os_error() {
                Some(libc::ELOOP) => unsafe_("is a symbolic link".into()),
                _ => PskError::Io {
                    path: path.to_owned(),
                    step: "open",
                    source,
                },
            })?;
        let meta = file.metadata().map_err(|source| PskError::Io {
            path: path.to_owned(),
            step: "stat",
            source,
        })?;
        if !meta.file_type().is_file() {
            return Err(unsafe_("is not a regular file".into()));
        }
        let me = nix::unistd::geteuid().as_raw();
        if meta.uid() != 0 && meta.uid() != me {
            return Err(unsafe_(format!(
                "owned by uid {}, not by root or by you (uid {me})",
                meta.uid()
            )));
        }
        if meta.mode() & 0o077 != 0 {
            return Err(unsafe_(format!(
                "mode {:#o}: a key file must be 0600 or stricter",
                meta.mode() & 0o7777
            )));
        }
        if meta.len() > MAX_KEY_FILE {
            return Err(unsafe_(format!(
                "{} bytes: larger than a key ({MAX_KEY_FILE} at most)",
                meta.len()
            )));
        }
        let mut raw = Vec::new();
        file.by_ref()
            .take(MAX_KEY_FILE)
            .read_to_end(&mut raw)
            .map_err(|source| PskError::Io {
                path: path.to_owned(),
                step: "read",
                source,
            })?;
        let key = raw.trim_ascii().to_vec();
        if key.len() < MIN_KEY_LEN {
            return Err(unsafe_(format!(
                "holds {} bytes: a key needs at least {MIN_KEY_LEN}",
                key.len()
            )));
        }
        Ok(Self(key))
    }

    /// A key from bytes (tests).
    pub fn from_bytes(key: &[u8]) -> Self {
        Self(key.to_vec())
    }

    fn mac(&self, label: &[u8], cn: &[u8], sn: &[u8]) -> [u8; 32] {
        let mut m = HmacSha256::new_from_slice(&self.0).expect("HMAC takes any key length");
        m.update(label);
        m.update(cn);
        m.update(sn);
        m.finalize().into_bytes().into()
    }

    /// What the server sends to prove it holds the key.
    pub fn server_proof(&self, cn: &[u8], sn: &[u8]) -> [u8; 32] {
        self.mac(b"cryo-stream server", cn, sn)
    }

    /// What the client sends to prove it holds the key.
    pub fn client_proof(&self, cn: &[u8], sn: &[u8]) -> [u8; 32] {
        self.mac(b"cryo-stream client", cn, sn)
    }

    /// The key that tags the frames of the session these nonces began.
    pub fn session_key(&self, cn: &[u8], sn: &[u8]) -> SessionKey {
        SessionKey(self.mac(b"cryo-stream session", cn, sn))
    }
}

/// Compares a received proof with the expected one in constant time.
pub fn proof_matches(expected: &[u8; 32], received: &[u8]) -> bool {
    use subtle_eq::ct_eq;
    ct_eq(expected, received)
}

mod subtle_eq {
    /// Constant-time equality (no early exit on the first differing byte).
    pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
        if a.len() != b.len() {
            return false;
        }
        a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

/// The key that tags every frame of one session.
#[derive(Clone)]
pub struct SessionKey([u8; 32]);

impl SessionKey {
    /// The keyed hash of a frame.
    fn mac(&self, header: &[u8], payload: &[u8]) -> blake3::Hash {
        let mut m = blake3::Hasher::new_keyed(&self.0);
        m.update(header);
        m.update(payload);
        m.finalize()
    }

    /// The tag of a frame.
    pub fn tag(&self, header: &[u8], payload: &[u8]) -> [u8; TAG_LEN] {
        *self.mac(header, payload).as_bytes()
    }

    /// Whether `tag` authenticates the frame (checked in constant time).
    pub fn verify(&self, header: &[u8], payload: &[u8], tag: &[u8]) -> bool {
        // blake3::Hash compares in constant time.
        <[u8; TAG_LEN]>::try_from(tag)
            .is_ok_and(|t| self.mac(header, payload) == blake3::Hash::from_bytes(t))
    }
}

/// 32 fresh random bytes.
pub fn nonce() -> std::io::Result<[u8; NONCE_LEN]> {
    let mut n = [0u8; NONCE_LEN];
    getrandom::fill(&mut n).map_err(|e| std::io::Error::other(format!("getrandom: {e}")))?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn proofs_depend_on_key_role_and_both_nonces() {
        let k = Psk::from_bytes(b"0123456789abcdef");
        let other = Psk::from_bytes(b"0123456789abcdeX");
        let (cn, sn) = (nonce().unwrap(), nonce().unwrap());
        let sp = k.server_proof(&cn, &sn);
        assert_ne!(sp, k.client_proof(&cn, &sn), "roles differ");
        assert_ne!(sp, other.server_proof(&cn, &sn), "keys differ");
        assert_ne!(sp, k.server_proof(&nonce().unwrap(), &sn), "client nonce");
        assert_ne!(sp, k.server_proof(&cn, &nonce().unwrap()), "server nonce");
        assert!(proof_matches(&sp, &sp));
        assert!(!proof_matches(&sp, &sp[..31]));
        let s = k.session_key(&cn, &sn);
        let t = s.tag(b"head", b"body");
        assert!(s.verify(b"head", b"body", &t));
        assert!(!s.verify(b"head", b"bodY", &t));
        assert!(!other.session_key(&cn, &sn).verify(b"head", b"body", &t));
        assert!(!s.verify(b"head", b"body", &t[..31]), "a short tag");
        // The tag is keyed BLAKE3 of header || payload (protocol version 2).
        let key = k.session_key(&cn, &sn).0;
        let mut both = b"head".to_vec();
        both.extend_from_slice(b"body");
        assert_eq!(&t, blake3::keyed_hash(&key, &both).as_bytes());
    }

    #[test]
    fn key_file_rules() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("key");
        std::fs::write(&p, "  0123456789abcdef0123\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(Psk::load(&p).is_ok());
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = Psk::load(&p).unwrap_err().to_string();
        assert!(e.contains("key") && e.contains("0o640"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o400)).unwrap();
        assert!(Psk::load(&p).is_ok(), "stricter is fine");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&p, &link).unwrap();
        assert!(Psk::load(&link)
            .unwrap_err()
            .to_string()
            .contains("symbolic link"));
        let short = dir.path().join("short");
        std::fs::write(&short, "abc").unwrap();
        std::fs::set_permissions(&short, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(Psk::load(&short)
            .unwrap_err()
            .to_string()
            .contains("at least"));
        assert!(Psk::load(dir.path())
            .unwrap_err()
            .to_string()
            .contains("regular file"));
    }
}
