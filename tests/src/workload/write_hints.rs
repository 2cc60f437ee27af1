//! `write-hints`: inodes with a write life hint (F_SET_RW_HINT), which the kernel keeps in the
//! inode in memory only, at known numbers: a memfd, a file of the control directory, a deleted
//! one and a pipe.
//!
//! ```text
//! fd 60  memfd "cryo-hint": 5 bytes, hint 2 (RWH_WRITE_LIFE_SHORT)
//! fd 61  DIR/plain, hint 3 (RWH_WRITE_LIFE_MEDIUM)
//! fd 62  DIR/deleted, unlinked, hint 4 (RWH_WRITE_LIFE_LONG)
//! fd 63  a pipe's read end, fd 64 its write end: hint 5 (RWH_WRITE_LIFE_EXTREME)
//!
//! write-hints   hint FD  -> <F_GET_RW_HINT>
//! ```

use std::path::Path;

use super::{failed, io_err, sys, unknown, Mode};

/// F_GET_RW_HINT / F_SET_RW_HINT (linux/fcntl.h).
const F_GET_RW_HINT: i32 = 1035;
const F_SET_RW_HINT: i32 = 1036;

struct WriteHints;

fn set_hint(fd: i32, hint: u64) -> std::io::Result<()> {
    // SAFETY: F_SET_RW_HINT reads one u64 through the pointer, which points at `hint`.
    sys::cvt(unsafe { libc::fcntl(fd, F_SET_RW_HINT, &hint as *const u64) }).map(drop)
}

fn hint(fd: i32) -> std::io::Result<u64> {
    let mut hint: u64 = 99;
    // SAFETY: F_GET_RW_HINT writes one u64 through the pointer, which points at `hint`.
    sys::cvt(unsafe { libc::fcntl(fd, F_GET_RW_HINT, &mut hint as *mut u64) })?;
    Ok(hint)
}

/// `write-hints`
pub fn start(_args: &[String], dir: &Path) -> Result<Box<dyn Mode>, String> {
    let setup = || -> std::io::Result<()> {
        let m = sys::move_fd(sys::memfd("cryo-hint")?, 60)?;
        sys::write_all(m, b"hello")?;
        set_hint(m, 2)?;
        let flags = libc::O_RDWR | libc::O_CREAT;
        let plain = sys::open_mode(&dir.join("plain"), flags, 0o644)?;
        set_hint(sys::move_fd(plain, 61)?, 3)?;
        let deleted = sys::move_fd(sys::open_mode(&dir.join("deleted"), flags, 0o644)?, 62)?;
        sys::write_all(deleted, b"deleted")?;
        std::fs::remove_file(dir.join("deleted"))?;
        set_hint(deleted, 4)?;
        let mut ends = [0; 2];
        // SAFETY: pipe2 writes two fds into `ends`.
        sys::cvt(unsafe { libc::pipe2(ends.as_mut_ptr(), libc::O_CLOEXEC) })?;
        sys::move_fd(ends[0], 63)?;
        set_hint(sys::move_fd(ends[1], 64)?, 5)?;
        Ok(())
    };
    setup().map_err(failed("write-hints"))?;
    Ok(Box::new(WriteHints))
}

impl Mode for WriteHints {
    fn command(&mut self, verb: &str, args: &[&str]) -> Result<String, String> {
        match (verb, args) {
            ("hint", [fd]) => {
                let fd: i32 = fd.parse().map_err(|_| format!("bad fd {fd:?}"))?;
                hint(fd).map(|h| h.to_string()).map_err(io_err)
            }
            _ => unknown(verb),
        }
    }
}
