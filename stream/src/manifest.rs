//! The manifest: every file of an image with its size and checksum, its hash (what the
//! receiver's "committed" names), and the check of a received image against it.

use prost::Message;
use sha2::{Digest, Sha256};

use crate::msg::{Manifest, ManifestEntry};

/// The hash a receiver answers "committed" with: SHA-256 over a label and the manifest's
/// protobuf encoding (prost writes fields in order: one manifest, one encoding), in hex.
pub fn hash(m: &Manifest) -> String {
    let mut h = Sha256::new();
    h.update(b"cryo-stream manifest v1\0");
    h.update(m.encode_to_vec());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks the manifest the sender announced against the files received, in order: the same
/// files, sizes and checksums, nothing more, nothing less. The error says the first
/// difference.
pub fn verify(announced: &Manifest, received: &[ManifestEntry]) -> Result<(), String> {
    for (i, want) in announced.files.iter().enumerate() {
        let Some(got) = received.get(i) else {
            return Err(format!(
                "the manifest lists {} files, {} were received (first missing: {:?})",
                announced.files.len(),
                received.len(),
                want.name
            ));
        };
        if got.name != want.name {
            return Err(format!(
                "file {i} is {:?} in the manifest, {:?} was received",
                want.name, got.name
            ));
        }
        if got.size != want.size || got.crc32c != want.crc32c {
            return Err(format!(
                "file {:?}: the manifest says {} bytes crc32c {:#010x}, received {} bytes \
                 crc32c {:#010x}",
                want.name, want.size, want.crc32c, got.size, got.crc32c
            ));
        }
    }
    if received.len() > announced.files.len() {
        return Err(format!(
            "{} files received that the manifest does not list (first: {:?})",
            received.len() - announced.files.len(),
            received[announced.files.len()].name
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, size: u64, crc: u32) -> ManifestEntry {
        ManifestEntry {
            name: name.into(),
            size,
            crc32c: crc,
        }
    }

    fn manifest() -> Manifest {
        Manifest {
            checkpoint_id: "id".into(),
            files: vec![entry("a.img", 3, 1), entry("inventory.img", 9, 2)],
        }
    }

    #[test]
    fn hash_is_stable_and_covers_everything() {
        let m = manifest();
        assert_eq!(hash(&m), hash(&m.clone()));
        assert_eq!(hash(&m).len(), 64);
        let mut other = m.clone();
        other.files[1].crc32c = 3;
        assert_ne!(hash(&m), hash(&other));
        let mut other = m.clone();
        other.checkpoint_id = "id2".into();
        assert_ne!(hash(&m), hash(&other));
    }

    #[test]
    fn verify_finds_each_difference() {
        let m = manifest();
        assert_eq!(verify(&m, &m.files), Ok(()));
        let e = verify(&m, &m.files[..1]).unwrap_err();
        assert!(e.contains("missing") && e.contains("inventory.img"), "{e}");
        let mut more = m.files.clone();
        more.push(entry("x", 1, 1));
        assert!(verify(&m, &more).unwrap_err().contains("does not list"));
        let mut renamed = m.files.clone();
        renamed[0].name = "b.img".into();
        assert!(verify(&m, &renamed).unwrap_err().contains("b.img"));
        let mut resized = m.files.clone();
        resized[0].size = 4;
        assert!(verify(&m, &resized).unwrap_err().contains("4 bytes"));
        let mut crc = m.files.clone();
        crc[1].crc32c = 7;
        assert!(verify(&m, &crc).unwrap_err().contains("0x00000007"));
    }
}
