//! fanotify: a notification group made again with its flags, and its marks added by path.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use super::{check, owned_fd};

/// A new fanotify group: `flags` (FAN_CLASS_*, FAN_REPORT_*, FAN_NONBLOCK...) and the open
/// flags of the event files it hands out (`event_flags`).
pub(crate) fn fanotify_init(flags: u32, event_flags: u32) -> io::Result<OwnedFd> {
    // SAFETY: fanotify_init takes two flag words, no pointers.
    owned_fd(libc::c_long::from(unsafe {
        libc::fanotify_init(flags, event_flags)
    }))
}

/// fanotify_mark(fd, `flags`, `mask`, AT_FDCWD, `path`).
pub(crate) fn fanotify_mark(
    fd: BorrowedFd<'_>,
    flags: u32,
    mask: u64,
    path: &str,
) -> io::Result<()> {
    let path = std::ffi::CString::new(path).map_err(io::Error::other)?;
    // SAFETY: the kernel reads the NUL-terminated path `path` owns, alive for the call.
    let ret =
        unsafe { libc::fanotify_mark(fd.as_raw_fd(), flags, mask, libc::AT_FDCWD, path.as_ptr()) };
    check(libc::c_long::from(ret)).map(drop)
}
