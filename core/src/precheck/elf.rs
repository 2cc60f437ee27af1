//! The GNU build-id of an ELF file (its NT_GNU_BUILD_ID note), read through the program
//! headers: what identifies a library or executable build independently of its path.

use std::fs::File;
use std::os::unix::fs::FileExt;

const PT_NOTE: u32 = 4;
const NT_GNU_BUILD_ID: u32 = 3;
/// Notes read at most (a build-id note is 36 bytes; other notes are small too).
const MAX_NOTES: u64 = 64 << 10;

fn u16_at(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 2)
        .map_or(0, |s| u16::from_le_bytes([s[0], s[1]]) as u64)
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .map_or(0, |s| u32::from_le_bytes(s.try_into().unwrap_or([0; 4])))
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8)
        .map_or(0, |s| u64::from_le_bytes(s.try_into().unwrap_or([0; 8])))
}

/// The build-id of `file` when it is a little-endian ELF64 file with one, else empty.
pub(super) fn build_id(file: &File) -> Vec<u8> {
    let mut ehdr = [0u8; 64];
    if file.read_exact_at(&mut ehdr, 0).is_err() || &ehdr[..6] != b"\x7fELF\x02\x01" {
        return Vec::new();
    }
    let (phoff, phentsize, phnum) = (u64_at(&ehdr, 32), u16_at(&ehdr, 54), u16_at(&ehdr, 56));
    if phentsize < 56 || phnum > 256 {
        return Vec::new();
    }
    let mut phdrs = vec![0u8; (phentsize * phnum) as usize];
    if file.read_exact_at(&mut phdrs, phoff).is_err() {
        return Vec::new();
    }
    for ph in phdrs.chunks_exact(phentsize as usize) {
        if u32_at(ph, 0) != PT_NOTE {
            continue;
        }
        let (offset, size) = (u64_at(ph, 8), u64_at(ph, 32).min(MAX_NOTES));
        let mut notes = vec![0u8; size as usize];
        if file.read_exact_at(&mut notes, offset).is_err() {
            continue;
        }
        if let Some(id) = find_build_id(&notes) {
            return id;
        }
    }
    Vec::new()
}

/// The build-id among a PT_NOTE segment's notes (namesz, descsz, type, name, desc; 4-aligned).
fn find_build_id(notes: &[u8]) -> Option<Vec<u8>> {
    let align = |n: usize| (n + 3) & !3;
    let mut at = 0;
    while at + 12 <= notes.len() {
        let namesz = u32_at(notes, at) as usize;
        let descsz = u32_at(notes, at + 4) as usize;
        let kind = u32_at(notes, at + 8);
        let name = notes.get(at + 12..at + 12 + namesz)?;
        let desc_at = at + 12 + align(namesz);
        let desc = notes.get(desc_at..desc_at + descsz)?;
        if kind == NT_GNU_BUILD_ID && name == b"GNU\0" {
            return Some(desc.to_vec());
        }
        at = desc_at + align(descsz);
    }
    None
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_build_id_of_this_test_binary_is_found() {
        // The system linker gives every binary built here a GNU build-id note (readelf -n).
        let exe = std::fs::File::open("/proc/self/exe").expect("open self");
        assert_eq!(super::build_id(&exe).len(), 20);
        let text = std::fs::File::open("/proc/self/cmdline").expect("open a non-ELF file");
        assert!(super::build_id(&text).is_empty());
    }

    #[test]
    fn the_build_id_note_is_found_after_another_note() {
        let note = |name: &[u8], kind: u32, desc: &[u8]| {
            let mut n = Vec::new();
            n.extend((name.len() as u32).to_le_bytes());
            n.extend((desc.len() as u32).to_le_bytes());
            n.extend(kind.to_le_bytes());
            n.extend(name);
            n.resize(n.len().next_multiple_of(4), 0);
            n.extend(desc);
            n.resize(n.len().next_multiple_of(4), 0);
            n
        };
        let mut notes = note(b"GNU\0", 1, &[0, 0, 0, 0, 3, 2, 0, 0]);
        notes.extend(note(b"GNU\0", 3, &[0xab; 20]));
        assert_eq!(super::find_build_id(&notes), Some(vec![0xab; 20]));
        assert_eq!(super::find_build_id(&notes[..notes.len() - 4]), None);
    }
}
