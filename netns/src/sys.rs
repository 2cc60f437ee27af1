//! The crate's only raw system calls.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use nix::errno::Errno;

/// `NETLINK_CAP_ACK`: error replies carry only the header of the refused message.
pub(crate) const NETLINK_CAP_ACK: libc::c_int = 10;
/// `NETLINK_EXT_ACK`: error replies carry the kernel's explanation.
pub(crate) const NETLINK_EXT_ACK: libc::c_int = 11;

/// Turns a boolean `SOL_NETLINK` socket option on (nix has no wrapper for these).
pub(crate) fn netlink_flag_on(fd: BorrowedFd<'_>, opt: libc::c_int) -> Result<(), Errno> {
    let one: libc::c_int = 1;
    // SAFETY: `fd` is an open socket for the duration of the borrow; the option value points to
    // a live c_int and the length passed is exactly its size; the kernel only reads it.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_NETLINK,
            opt,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    Errno::result(r).map(drop)
}

/// A raw netlink socket of `protocol` (close-on-exec).
pub(crate) fn netlink_socket(protocol: libc::c_int) -> Result<OwnedFd, Errno> {
    // SAFETY: socket() takes plain integers and returns a new fd or -1.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            protocol,
        )
    };
    let fd = Errno::result(fd)?;
    // SAFETY: `fd` was just returned by socket() and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
