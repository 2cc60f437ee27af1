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

/// `struct pidfd_info` (linux/pidfd.h, PIDFD_INFO_SIZE_VER0 = 64 bytes).
#[repr(C)]
#[derive(Default)]
struct PidfdInfo {
    mask: u64,
    cgroupid: u64,
    ids: [u32; 11],
    exit_code: i32,
}

/// `PIDFD_GET_INFO`: _IOWR(0xFF, 11, struct pidfd_info) for the 64-byte version.
const PIDFD_GET_INFO: libc::c_ulong = 0xC040_FF0B;
/// `PIDFD_INFO_EXIT`: the exit status of a process that exited and was reaped.
const PIDFD_INFO_EXIT: u64 = 8;

/// The wait status (exit code << 8, or the signal) of the exited, reaped process behind
/// `pidfd`; `None` where the kernel kept none (linux 6.15 keeps it when a pidfd was open
/// at the exit).
pub(crate) fn exit_status(pidfd: BorrowedFd<'_>) -> io::Result<Option<i32>> {
    let mut info = PidfdInfo {
        mask: PIDFD_INFO_EXIT,
        ..Default::default()
    };
    // SAFETY: the kernel writes at most the 64 bytes the request's size names into `info`,
    // a live, properly aligned struct of that size.
    let r = unsafe {
        libc::ioctl(
            pidfd.as_raw_fd(),
            PIDFD_GET_INFO,
            &mut info as *mut PidfdInfo,
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ESRCH) => Ok(None),
            _ => Err(e),
        };
    }
    Ok((info.mask & PIDFD_INFO_EXIT != 0).then_some(info.exit_code))
}
