//! pidfds: a stable handle on a process, and through it a duplicate of any of its fds.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};

use nix::unistd::Pid;

use super::owned_fd;

/// A pidfd of process `pid` (close-on-exec).
pub(crate) fn pidfd_open(pid: Pid) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags, no pointers.
    owned_fd(unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) })
}

/// A pidfd of process `pid` with `flags` (PIDFD_NONBLOCK, PIDFD_THREAD); close-on-exec.
pub(crate) fn pidfd_open_flags(pid: Pid, flags: u32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags, no pointers.
    owned_fd(unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), flags) })
}

/// A duplicate, in this process, of fd `fd` of the process behind `pidfd`: the same open file
/// description (offset, flags, pipe buffers). The new fd is close-on-exec.
pub(crate) fn pidfd_getfd(pidfd: BorrowedFd<'_>, fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_getfd takes two fds and flags (0), no pointers.
    owned_fd(unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) })
}

/// SIGKILL to the process behind `pidfd`: never to another process that took its pid since.
pub(crate) fn pidfd_kill(pidfd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: pidfd_send_signal takes an fd, a signal number, a null siginfo and flags.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
