//! The raw system calls of the files module. Every `unsafe` block of the module lives here;
//! everything else works with `BorrowedFd` / `OwnedFd` and typed results.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::unistd::Pid;

/// `KCMP_FILE` from linux/kcmp.h: compare two fds' open file descriptions.
const KCMP_FILE: libc::c_int = 0;

/// Turns a syscall's fd result into an [`OwnedFd`] (the one place that does).
fn owned(ret: libc::c_long) -> io::Result<OwnedFd> {
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = RawFd::try_from(ret).map_err(|_| io::Error::other("fd out of range"))?;
    // SAFETY: the kernel just returned `fd` as a new descriptor of this process; nothing else
    // owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A pidfd of process `pid` (close-on-exec).
pub(crate) fn pidfd_open(pid: Pid) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags, no pointers.
    let ret = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    owned(ret)
}

/// A duplicate, in this process, of fd `fd` of the process behind `pidfd`: the same open file
/// description (offset, flags, pipe buffers). The new fd is close-on-exec.
pub(crate) fn pidfd_getfd(pidfd: BorrowedFd<'_>, fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_getfd takes two fds and flags (0), no pointers.
    let ret = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    owned(ret)
}

/// True if fd `fd1` of `pid1` and fd `fd2` of `pid2` refer to one open file description.
pub(crate) fn kcmp_same_file(pid1: Pid, fd1: RawFd, pid2: Pid, fd2: RawFd) -> io::Result<bool> {
    // SAFETY: kcmp with KCMP_FILE takes pids and fd numbers, no pointers.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            pid1.as_raw(),
            pid2.as_raw(),
            KCMP_FILE,
            fd1 as libc::c_ulong,
            fd2 as libc::c_ulong,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ret == 0)
}

/// Bytes queued in a pipe (FIONREAD).
pub(crate) fn fionread(fd: BorrowedFd<'_>) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer, which points at `n`.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n as *mut libc::c_int) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(usize::try_from(n).unwrap_or(0))
}

/// A close-on-exec duplicate of `fd` numbered `min` or above (F_DUPFD_CLOEXEC).
pub(crate) fn dup_at_least(fd: BorrowedFd<'_>, min: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: fcntl F_DUPFD_CLOEXEC takes an fd and an int, no pointers.
    let ret = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, min) };
    owned(libc::c_long::from(ret))
}

/// Makes fd number `target` of this process refer to the description of `fd` (dup3), with
/// FD_CLOEXEC set or not. `target` is not returned as an [`OwnedFd`]: it belongs to the
/// process being restored, not to cryo.
pub(crate) fn dup_to(fd: BorrowedFd<'_>, target: RawFd, cloexec: bool) -> io::Result<()> {
    let flags = if cloexec { libc::O_CLOEXEC } else { 0 };
    // SAFETY: dup3 takes fd numbers and flags, no pointers. Replacing whatever `target` held is
    // the point: the caller guarantees no live OwnedFd of this process is numbered `target`.
    let ret = unsafe { libc::dup3(fd.as_raw_fd(), target, flags) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Closes every fd from `first` to `last` inclusive (close_range).
pub(crate) fn close_range(first: u32, last: u32) -> io::Result<()> {
    // SAFETY: close_range takes numbers, no pointers. The caller guarantees no live OwnedFd of
    // this process lies in the range.
    let ret = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// connect(2) with an AF_UNSPEC address: dissolves the association of a socket (for TCP,
/// tcp_disconnect: a RST to the peer, ECONNRESET for the owner).
pub(crate) fn connect_unspec(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: an all-zero sockaddr_storage is a valid value; sa_family = AF_UNSPEC.
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    addr.ss_family = libc::AF_UNSPEC as libc::sa_family_t;
    // SAFETY: the pointer and length describe `addr`, which lives across the call.
    let ret = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_storage).cast(),
            std::mem::size_of::<libc::sockaddr>() as libc::socklen_t,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// True if `fd` is an open descriptor of this process (F_GETFD).
pub(crate) fn fd_is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD takes no argument and only reads the fd table.
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
}
