//! `deleted-sparse`: two deleted-but-open files at known numbers, each with what a ghost copy
//! would lose.
//!
//! ```text
//! fd 70  DIR/sparse: 4 KiB of data at 0 and 8 KiB at 256 MiB, size 1 GiB + 123 (the rest
//!        holes), mode 0640, mtime 1000000000.123456789, atime 1100000000.5; unlinked
//! fd 71  DIR/linked-orig: 10000 bytes, linked as DIR/linked-other, unlinked from its first
//!        name, then cut to 3000 bytes and "resized" written at 0
//!
//! deleted-sparse  stat FD        -> <size> <allocated bytes> <mode octal> <mtime s.ns> <atime s.ns> <nlink>
//!                 map FD         -> <offset>+<len>,...  (SEEK_DATA/SEEK_HOLE)
//!                 sum FD         -> <len> <checksum> of the data extents, end to end
//!                 same FD PATH   -> yes | no  (FD and PATH are one inode)
//!                 write FD TEXT  -> ok  (TEXT written at offset 0)
//! ```

use std::path::Path;

use super::{failed, io_err, sys, unknown, Mode};
use crate::protocol;

const SPARSE_FD: i32 = 70;
const LINKED_FD: i32 = 71;
const MIB: usize = 1 << 20;

/// The times set on the sparse file: (seconds, nanoseconds).
const MTIME: (i64, i64) = (1_000_000_000, 123_456_789);
const ATIME: (i64, i64) = (1_100_000_000, 500_000_000);

struct DeletedSparse;

/// Makes fd 70 (see the module doc).
fn sparse(dir: &Path) -> std::io::Result<()> {
    let path = dir.join("sparse");
    let fd = sys::open_mode(&path, libc::O_RDWR | libc::O_CREAT | libc::O_EXCL, 0o600)?;
    sys::pwrite_at(fd, &protocol::pattern(4096, 1), 0)?;
    sys::pwrite_at(fd, &protocol::pattern(8192, 2), 256 * MIB)?;
    sys::set_len(fd, 1024 * MIB as u64 + 123)?;
    sys::fchmod(fd, 0o640)?;
    sys::set_times(fd, ATIME, MTIME)?;
    std::fs::remove_file(&path)?;
    sys::move_fd(fd, SPARSE_FD).map(drop)
}

/// Makes fd 71 (see the module doc).
fn linked(dir: &Path) -> std::io::Result<()> {
    let path = dir.join("linked-orig");
    let fd = sys::open_mode(&path, libc::O_RDWR | libc::O_CREAT | libc::O_EXCL, 0o644)?;
    sys::write_all(fd, &protocol::pattern(10_000, 3))?;
    std::fs::hard_link(&path, dir.join("linked-other"))?;
    std::fs::remove_file(&path)?;
    sys::set_len(fd, 3000)?;
    sys::pwrite_at(fd, b"resized", 0)?;
    sys::move_fd(fd, LINKED_FD).map(drop)
}

/// `deleted-sparse`
pub fn start(_args: &[String], dir: &Path) -> Result<Box<dyn Mode>, String> {
    sparse(dir).map_err(failed("sparse file"))?;
    linked(dir).map_err(failed("linked file"))?;
    Ok(Box::new(DeletedSparse))
}

/// An fd of the mode.
fn fd_arg(fd: &str) -> Result<i32, String> {
    match fd.parse() {
        Ok(fd @ (SPARSE_FD | LINKED_FD)) => Ok(fd),
        _ => Err(format!("no file at fd {fd:?}")),
    }
}

impl Mode for DeletedSparse {
    fn command(&mut self, verb: &str, args: &[&str]) -> Result<String, String> {
        match (verb, args) {
            ("stat", [fd]) => {
                let st = sys::fstat(fd_arg(fd)?).map_err(io_err)?;
                Ok(format!(
                    "{} {} {:o} {}.{:09} {}.{:09} {}",
                    st.st_size,
                    st.st_blocks * 512,
                    st.st_mode & 0o7777,
                    st.st_mtime,
                    st.st_mtime_nsec,
                    st.st_atime,
                    st.st_atime_nsec,
                    st.st_nlink
                ))
            }
            ("map", [fd]) => {
                let extents = sys::data_extents(fd_arg(fd)?).map_err(io_err)?;
                let list: Vec<String> = extents.iter().map(|(o, l)| format!("{o}+{l}")).collect();
                Ok(list.join(","))
            }
            ("sum", [fd]) => {
                let fd = fd_arg(fd)?;
                let mut data = Vec::new();
                for (off, len) in sys::data_extents(fd).map_err(io_err)? {
                    let mut part = vec![0u8; len as usize];
                    sys::pread_at(fd, &mut part, off as usize).map_err(io_err)?;
                    data.extend_from_slice(&part);
                }
                Ok(protocol::len_and_checksum(&data))
            }
            ("same", [fd, path]) => {
                let st = sys::fstat(fd_arg(fd)?).map_err(io_err)?;
                let at = std::fs::metadata(path).map_err(io_err)?;
                use std::os::unix::fs::MetadataExt;
                let same = (st.st_dev, st.st_ino) == (at.dev(), at.ino());
                Ok(if same { "yes" } else { "no" }.into())
            }
            ("write", [fd, text]) => {
                sys::pwrite_at(fd_arg(fd)?, text.as_bytes(), 0).map_err(io_err)?;
                Ok("ok".into())
            }
            _ => unknown(verb),
        }
    }
}
