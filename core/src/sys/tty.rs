//! Terminal calls: taking a controlling terminal.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use super::check;

/// Makes terminal `fd` the controlling terminal of the caller's session (TIOCSCTTY with 0:
/// never taken from another session).
pub(crate) fn set_controlling_terminal(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: TIOCSCTTY takes an int argument, no pointers.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSCTTY, 0) };
    check(libc::c_long::from(ret)).map(drop)
}
