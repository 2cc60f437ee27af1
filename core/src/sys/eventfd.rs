//! eventfd: a new counter, and adding to one.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use super::{check, owned_fd};

/// A new eventfd with counter 0 (`flags`: EFD_*).
pub(crate) fn eventfd(flags: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: eventfd takes an initial value and flags, no pointers.
    owned_fd(libc::c_long::from(unsafe { libc::eventfd(0, flags) }))
}

/// Adds `value` to an eventfd counter (write of 8 bytes).
pub(crate) fn eventfd_add(fd: BorrowedFd<'_>, value: u64) -> io::Result<()> {
    let buf = value.to_ne_bytes();
    // SAFETY: write reads 8 bytes from `buf`, which holds 8 bytes.
    let ret = unsafe { libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
    if check(ret as libc::c_long)? != 8 {
        return Err(io::Error::other("short write to the eventfd"));
    }
    Ok(())
}
