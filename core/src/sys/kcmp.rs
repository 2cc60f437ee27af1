//! kcmp: whether two fds (of one process or two) are one kernel object; and, run in a target,
//! whether it may look at a process at all.

use std::io;
use std::os::fd::RawFd;

use nix::unistd::Pid;

use super::check;

/// `KCMP_FILE` from linux/kcmp.h: compare two fds' open file descriptions.
const KCMP_FILE: libc::c_int = 0;
/// `KCMP_EPOLL_TFD` from linux/kcmp.h.
const KCMP_EPOLL_TFD: libc::c_int = 7;

/// `struct kcmp_epoll_slot` from linux/kcmp.h.
#[repr(C)]
struct KcmpEpollSlot {
    efd: u32,
    tfd: u32,
    toff: u32,
}

/// True if fd `fd1` of `pid1` and fd `fd2` of `pid2` refer to one open file description.
pub(crate) fn kcmp_same_file(pid1: Pid, fd1: RawFd, pid2: Pid, fd2: RawFd) -> io::Result<bool> {
    // SAFETY: kcmp with KCMP_FILE takes pids and fd numbers, no pointers.
    let ret = check(unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            pid1.as_raw(),
            pid2.as_raw(),
            KCMP_FILE,
            fd1 as libc::c_ulong,
            fd2 as libc::c_ulong,
        )
    })?;
    Ok(ret == 0)
}

/// True if fd `fd` of `pid` is the file registered as target `tfd` in epoll `epfd` of the
/// same process (kcmp KCMP_EPOLL_TFD); `toff` picks among several files registered under
/// that number (0: the first, in the order fdinfo lists them). ENOENT: no such registration.
pub(crate) fn kcmp_epoll_target(
    pid: Pid,
    fd: RawFd,
    epfd: RawFd,
    tfd: RawFd,
    toff: u32,
) -> io::Result<bool> {
    kcmp_epoll_target_of(pid, fd, pid, epfd, tfd, toff)
}

/// Whether fd `fd` of `pid` is the file registered in epoll `epfd` of `epoll_pid` as the
/// `toff`-th target numbered `tfd` (kcmp KCMP_EPOLL_TFD across two processes).
pub(crate) fn kcmp_epoll_target_of(
    pid: Pid,
    fd: RawFd,
    epoll_pid: Pid,
    epfd: RawFd,
    tfd: RawFd,
    toff: u32,
) -> io::Result<bool> {
    let slot = KcmpEpollSlot {
        efd: epfd as u32,
        tfd: tfd as u32,
        toff,
    };
    // SAFETY: KCMP_EPOLL_TFD reads one `struct kcmp_epoll_slot` through the pointer, which
    // points at `slot`, alive for the call.
    let ret = check(unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            pid.as_raw(),
            epoll_pid.as_raw(),
            KCMP_EPOLL_TFD,
            fd as libc::c_ulong,
            &slot as *const KcmpEpollSlot,
        )
    })?;
    Ok(ret == 0)
}

/// True if `pid1` and `pid2` have one SysV semaphore undo list (or neither has one).
pub(crate) fn kcmp_same_sysvsem(pid1: Pid, pid2: Pid) -> io::Result<bool> {
    Ok(kcmp_order(pid1, pid2, TaskObject::Sysvsem)? == std::cmp::Ordering::Equal)
}

/// The kcmp call comparing the address spaces of `pid` and itself: run in a target's thread
/// by a remote call, it answers 0 if that thread may look at `pid` (ptrace_may_access,
/// PTRACE_MODE_READ_REALCREDS), EPERM if not, ESRCH if it cannot see `pid`.
pub fn may_access_call(pid: i32) -> (i64, [u64; 6]) {
    (
        libc::SYS_kcmp,
        [pid as u64, pid as u64, TaskObject::Vm as u64, 0, 0, 0],
    )
}

/// What of a task `kcmp_order` compares (the `KCMP_*` types of linux/kcmp.h that take two
/// pids and nothing else): the kernel objects clone flags let tasks share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TaskObject {
    /// The address space (`KCMP_VM`: CLONE_VM, vfork).
    Vm = 1,
    /// The fd table (`KCMP_FILES`: CLONE_FILES).
    Files = 2,
    /// The filesystem information: cwd, root, umask (`KCMP_FS`: CLONE_FS).
    Fs = 3,
    /// The signal handler table (`KCMP_SIGHAND`: CLONE_SIGHAND).
    Sighand = 4,
    /// The SysV semaphore undo list (`KCMP_SYSVSEM`: CLONE_SYSVSEM).
    Sysvsem = 6,
}

/// How `pid1`'s `object` compares with `pid2`'s (kcmp orders the kernel's pointers, each
/// obfuscated the same way, so sorting by it puts tasks that share one object side by side).
/// Either pid may be a thread's id.
pub(crate) fn kcmp_order(
    pid1: Pid,
    pid2: Pid,
    object: TaskObject,
) -> io::Result<std::cmp::Ordering> {
    // SAFETY: kcmp with any `TaskObject` type takes two pids, no pointers.
    let ret = check(unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            pid1.as_raw(),
            pid2.as_raw(),
            object as libc::c_int,
            0,
            0,
        )
    })?;
    // 0: equal, 1: pid1's is less, 2: greater (3, "not equal, no order", is for fds only).
    Ok(match ret {
        0 => std::cmp::Ordering::Equal,
        1 => std::cmp::Ordering::Less,
        _ => std::cmp::Ordering::Greater,
    })
}
