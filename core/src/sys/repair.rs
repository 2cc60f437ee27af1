//! Whether a TCP socket is in repair mode (getsockopt TCP_REPAIR), for the dump guardian.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// True when `fd` is a TCP socket in repair mode; an error when it is not a TCP socket.
pub fn in_repair(fd: BorrowedFd<'_>) -> io::Result<bool> {
    let mut val: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into our local int and updates `len`.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_TCP,
            libc::TCP_REPAIR,
            &mut val as *mut libc::c_int as *mut libc::c_void,
            &mut len,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(val != 0)
}
