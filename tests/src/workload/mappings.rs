//! `mappings`: one memory region of each kind a dump must treat differently (shared
//! anonymous, shared file, private file with a page written, PROT_NONE).
//!
//! ```text
//! mappings                   check  -> ok | bad <region>     bump -> <byte 0 of shared.dat>
//!                            unmap-vclock -> ok (munmap of [vvar_vclock], as a process
//!                            that drops the vDSO blobs does; the clocks still read TSC)
//!                            special -> the [vvar*]/[vdso] names of /proc/self/maps, in order
//!                            (shared anonymous, shared file DIR/shared.dat, private file
//!                            DIR/private.dat with one page written, a PROT_NONE region)
//! ```

use std::io;
use std::path::Path;

use super::{failed, sys, unknown, Mode, PAGE};
use crate::protocol;

/// `mappings`
pub fn start(_args: &[String], dir: &Path) -> Result<Box<dyn Mode>, String> {
    Ok(Box::new(Mappings::new(dir).map_err(failed("mappings"))?))
}

impl Mode for Mappings {
    fn command(&mut self, verb: &str, args: &[&str]) -> Result<String, String> {
        match (verb, args) {
            ("check", []) => Ok(self.check()),
            ("bump", []) => Ok(self.bump().to_string()),
            ("unmap-vclock", []) => {
                let maps = std::fs::read_to_string("/proc/self/maps").map_err(|e| e.to_string())?;
                let line = maps
                    .lines()
                    .find(|l| l.ends_with("[vvar_vclock]"))
                    .ok_or("no [vvar_vclock]")?;
                let (start, end) = line
                    .split_whitespace()
                    .next()
                    .and_then(|r| r.split_once('-'))
                    .ok_or("bad maps line")?;
                let start = usize::from_str_radix(start, 16).map_err(|e| e.to_string())?;
                let end = usize::from_str_radix(end, 16).map_err(|e| e.to_string())?;
                sys::munmap(start, end - start).map_err(|e| e.to_string())?;
                Ok("ok".into())
            }
            ("special", []) => {
                let maps = std::fs::read_to_string("/proc/self/maps").map_err(|e| e.to_string())?;
                Ok(maps
                    .lines()
                    .filter_map(|l| l.split_whitespace().nth(5))
                    .filter(|n| n.starts_with("[vvar") || *n == "[vdso]")
                    .collect::<Vec<_>>()
                    .join(" "))
            }
            _ => unknown(verb),
        }
    }
}

/// One region of each kind a dump must treat differently.
struct Mappings {
    shared_anon: &'static mut [u8],
    shared_file: &'static mut [u8],
    private_file: &'static mut [u8],
    hidden: *mut u8,
}

const MAP_LEN: usize = 4 * PAGE;

impl Mappings {
    fn new(dir: &Path) -> io::Result<Self> {
        let shared_anon = sys::map(MAP_LEN, libc::MAP_SHARED | libc::MAP_ANONYMOUS, -1)?;
        shared_anon.copy_from_slice(&protocol::pattern(MAP_LEN, 1));

        let fd = sys::open_mode(&dir.join("shared.dat"), libc::O_RDWR | libc::O_CREAT, 0o600)?;
        sys::write_all(fd, &vec![0u8; MAP_LEN])?;
        let shared_file = sys::map(MAP_LEN, libc::MAP_SHARED, fd)?;
        sys::close(fd);
        shared_file.copy_from_slice(&protocol::pattern(MAP_LEN, 2));

        let fd = sys::open_mode(
            &dir.join("private.dat"),
            libc::O_RDWR | libc::O_CREAT,
            0o600,
        )?;
        sys::write_all(fd, &protocol::pattern(MAP_LEN, 3))?;
        let private_file = sys::map(MAP_LEN, libc::MAP_PRIVATE, fd)?;
        sys::close(fd);
        private_file[PAGE..2 * PAGE].copy_from_slice(&protocol::pattern(PAGE, 4));

        let hidden = sys::map(2 * PAGE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1)?;
        hidden.copy_from_slice(&protocol::pattern(2 * PAGE, 5));
        let hidden = hidden.as_mut_ptr();
        sys::protect(hidden, 2 * PAGE, libc::PROT_NONE)?;
        Ok(Self {
            shared_anon,
            shared_file,
            private_file,
            hidden,
        })
    }

    fn check(&self) -> String {
        let mut private = protocol::pattern(MAP_LEN, 3);
        private[PAGE..2 * PAGE].copy_from_slice(&protocol::pattern(PAGE, 4));
        if self.shared_anon[..] != protocol::pattern(MAP_LEN, 1)[..] {
            return "bad shared-anon".into();
        }
        if self.shared_file[1..] != protocol::pattern(MAP_LEN, 2)[1..] {
            return "bad shared-file".into();
        }
        if self.private_file[..] != private[..] {
            return "bad private-file".into();
        }
        if sys::protect(self.hidden, 2 * PAGE, libc::PROT_READ).is_err() {
            return "bad hidden (mprotect)".into();
        }
        // SAFETY: the region is 2 pages, mapped by us and readable for this moment.
        let hidden = unsafe { std::slice::from_raw_parts(self.hidden, 2 * PAGE) }.to_vec();
        let _ = sys::protect(self.hidden, 2 * PAGE, libc::PROT_NONE);
        if hidden != protocol::pattern(2 * PAGE, 5) {
            return "bad hidden".into();
        }
        "ok".into()
    }

    fn bump(&mut self) -> u8 {
        self.shared_file[0] = self.shared_file[0].wrapping_add(1);
        self.shared_file[0]
    }
}
