//! signalfd: a new fd reading a set of signals.

use std::io;
use std::os::fd::OwnedFd;

use super::owned_fd;

/// A new signalfd reading the signals of `mask` (bit N-1 for signal N).
pub(crate) fn signalfd(mask: u64, flags: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: sigset_t is plain data; all zeroes is a valid (empty) set, filled just below.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    for bit in 0..64 {
        if mask & (1u64 << bit) != 0 {
            // SAFETY: sigaddset writes into `set`, a valid sigset_t; an invalid signal number
            // only fails with EINVAL.
            unsafe { libc::sigaddset(&mut set, bit + 1) };
        }
    }
    // SAFETY: the kernel reads the 8-byte signal set from `set` (libc passes _NSIG/8).
    owned_fd(libc::c_long::from(unsafe {
        libc::signalfd(-1, &set, flags)
    }))
}
