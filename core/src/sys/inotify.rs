//! inotify: instances and watches by raw descriptor number, and reopening a watched file from
//! the file handle fdinfo shows.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use super::{check, owned_fd};

/// A new inotify instance (`flags`: IN_NONBLOCK, IN_CLOEXEC).
pub(crate) fn inotify_init(flags: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: inotify_init1 takes flags, no pointers.
    owned_fd(libc::c_long::from(unsafe { libc::inotify_init1(flags) }))
}

/// Adds a watch on `path`; returns its watch descriptor.
pub(crate) fn inotify_add_watch(fd: BorrowedFd<'_>, path: &str, mask: u32) -> io::Result<i32> {
    let path = std::ffi::CString::new(path).map_err(io::Error::other)?;
    // SAFETY: the kernel reads the NUL-terminated path `path` owns, alive for the call.
    let ret = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), path.as_ptr(), mask) };
    Ok(check(libc::c_long::from(ret))? as i32)
}

/// Removes watch `wd`.
pub(crate) fn inotify_rm_watch(fd: BorrowedFd<'_>, wd: i32) -> io::Result<()> {
    // SAFETY: inotify_rm_watch takes an fd and a number, no pointers.
    let ret = unsafe { libc::inotify_rm_watch(fd.as_raw_fd(), wd) };
    check(libc::c_long::from(ret)).map(drop)
}

/// Opens (O_PATH) the file of an inotify file handle on the filesystem of `mount`.
pub(crate) fn open_by_handle(
    mount: BorrowedFd<'_>,
    handle_type: i32,
    handle: &[u8],
) -> io::Result<OwnedFd> {
    // struct file_handle { u32 handle_bytes; int handle_type; unsigned char f_handle[]; }
    let mut buf = Vec::with_capacity(8 + handle.len());
    buf.extend_from_slice(&(handle.len() as u32).to_ne_bytes());
    buf.extend_from_slice(&handle_type.to_ne_bytes());
    buf.extend_from_slice(handle);
    // u32-aligned storage for the header.
    let mut words = vec![0u32; buf.len().div_ceil(4)];
    for (i, b) in buf.iter().enumerate() {
        words[i / 4] |= u32::from(*b) << (8 * (i % 4));
    }
    // SAFETY: open_by_handle_at reads a `struct file_handle` (header + handle_bytes bytes)
    // from `words`, which holds exactly that (little-endian x86 layout), 4-byte aligned.
    owned_fd(unsafe {
        libc::syscall(
            libc::SYS_open_by_handle_at,
            mount.as_raw_fd(),
            words.as_ptr(),
            libc::O_PATH | libc::O_CLOEXEC,
        )
    })
}
