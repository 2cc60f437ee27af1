//! Whether a TCP socket is in repair mode (getsockopt TCP_REPAIR), for the dump guardian.

use std::io;
use std::os::fd::BorrowedFd;

/// True when `fd` is a TCP socket in repair mode; an error when it is not a TCP socket.
pub fn in_repair(fd: BorrowedFd<'_>) -> io::Result<bool> {
    Ok(super::sockopt::get_int(fd, libc::SOL_TCP, libc::TCP_REPAIR)? != 0)
}
