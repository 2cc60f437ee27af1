//! Descriptor-table calls: duplicates (at a minimum number, or onto an exact one, or lent a
//! number for one call), closing ranges, the open check, FIONREAD, and cryo's own
//! RLIMIT_NOFILE.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use super::{check, owned_fd};

/// A borrowed view of fd number `fd`, which the caller knows is open (inherited through
/// fork) and stays open for the borrow's use.
pub(crate) fn borrow_raw(fd: RawFd) -> BorrowedFd<'static> {
    // SAFETY: the caller guarantees `fd` is open; the view is only used for an immediate dup.
    unsafe { BorrowedFd::borrow_raw(fd) }
}

/// A close-on-exec duplicate of `fd` numbered `min` or above (F_DUPFD_CLOEXEC).
pub(crate) fn dup_at_least(fd: BorrowedFd<'_>, min: RawFd) -> io::Result<OwnedFd> {
    let ret = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(min))?;
    owned_fd(libc::c_long::from(ret))
}

/// Makes fd number `target` of this process refer to the description of `fd` (dup3), with
/// FD_CLOEXEC set or not. `target` is not returned as an [`OwnedFd`]: it belongs to the
/// process being restored, not to cryo.
pub(crate) fn dup_to(fd: BorrowedFd<'_>, target: RawFd, cloexec: bool) -> io::Result<()> {
    let flags = if cloexec { libc::O_CLOEXEC } else { 0 };
    // SAFETY: dup3 takes fd numbers and flags, no pointers. Replacing whatever `target` held is
    // the point: the caller guarantees no live OwnedFd of this process is numbered `target`.
    let ret = unsafe { libc::dup3(fd.as_raw_fd(), target, flags) };
    check(libc::c_long::from(ret)).map(drop)
}

/// Closes every fd from `first` to `last` inclusive (close_range).
pub(crate) fn close_range(first: u32, last: u32) -> io::Result<()> {
    // SAFETY: close_range takes numbers, no pointers. The caller guarantees no live OwnedFd of
    // this process lies in the range.
    check(unsafe { libc::syscall(libc::SYS_close_range, first, last, 0) }).map(drop)
}

/// True if `fd` is an open descriptor of this process (F_GETFD).
pub(crate) fn fd_is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD takes no argument and only reads the fd table.
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
}

/// Runs `f` while fd number `number` of this process is a duplicate of `fd`, then puts back
/// what `number` held before (the same description, the same FD_CLOEXEC) or closes it if it
/// held nothing. The copy of what it held is numbered `min` or above. `fd` is not `number`.
pub(crate) fn lend_number<T>(
    fd: BorrowedFd<'_>,
    number: RawFd,
    min: RawFd,
    f: impl FnOnce() -> io::Result<T>,
) -> io::Result<T> {
    let held = if fd_is_open(number) {
        let flags = nix::fcntl::fcntl(borrow_raw(number), nix::fcntl::FcntlArg::F_GETFD)?;
        let copy = dup_at_least(borrow_raw(number), min)?;
        Some((copy, flags & libc::FD_CLOEXEC != 0))
    } else {
        None
    };
    dup_to(fd, number, true)?;
    let out = f();
    let back = match held {
        Some((copy, cloexec)) => dup_to(copy.as_fd(), number, cloexec),
        // SAFETY: close takes a number, no pointers. `number` is the duplicate made above,
        // which no OwnedFd of this process owns.
        None => check(libc::c_long::from(unsafe { libc::close(number) })).map(drop),
    };
    let out = out?;
    back?;
    Ok(out)
}

/// Runs `f` on a short-lived thread with an fd table of its own (unshare CLONE_FILES: a copy
/// of this process's), so that it may put any file at any number (an epoll target's) without
/// touching this process's fds. What `f` opens or places is closed with that table when the
/// thread ends; `f` must not close fds it borrows (their numbers stay open here).
pub(crate) fn with_own_fd_table<T: Send>(
    f: impl FnOnce() -> io::Result<T> + Send,
) -> io::Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: unshare takes flags, no pointers; CLONE_FILES gives this thread a copy of
            // the fd table, which the thread's exit drops.
            check(libc::c_long::from(unsafe {
                libc::unshare(libc::CLONE_FILES)
            }))?;
            f()
        })
        .join()
        .map_err(|_| io::Error::other("the thread with an fd table of its own panicked"))?
    })
}

/// Bytes queued in a pipe or socket (FIONREAD).
pub(crate) fn fionread(fd: BorrowedFd<'_>) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer, which points at `n`.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n as *mut libc::c_int) };
    check(libc::c_long::from(ret))?;
    Ok(usize::try_from(n).unwrap_or(0))
}

/// The fds a restore places above a process's highest (control pipes: two per process;
/// shared objects: at most one per description; namespaces and roots held: a few), for a dump
/// of `processes` processes and `descriptions` open file descriptions.
pub(crate) fn restore_fd_room(processes: usize, descriptions: usize) -> u64 {
    64 + 2 * processes as u64 + descriptions as u64
}

/// The highest fd number plus one this process can reach: fs.nr_open with CAP_SYS_RESOURCE
/// (it may raise its hard RLIMIT_NOFILE that far), else its hard limit.
pub(crate) fn fd_ceiling() -> u64 {
    use nix::sys::resource::{getrlimit, Resource};
    let hard = getrlimit(Resource::RLIMIT_NOFILE).map_or(1024, |(_, hard)| hard);
    let read = |path: &str| std::fs::read_to_string(path).ok();
    let nr_open = read("/proc/sys/fs/nr_open")
        .and_then(|t| t.trim().parse::<u64>().ok())
        .unwrap_or(hard);
    if super::process::has_effective_cap(super::process::CAP_SYS_RESOURCE) {
        nr_open.max(hard)
    } else {
        hard
    }
}

/// Raises this process's RLIMIT_NOFILE, hard limit too where it may ([`fd_ceiling`]), so
/// that fds numbered up to `highest` and the restore's own above them fit: a restored process
/// may hold fds just below a hard limit as high as cryo's, and its children inherit this
/// limit until theirs is set, once those fds are closed.
pub(crate) fn make_room_above(highest: u64, room: u64) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    if highest + room <= soft {
        return;
    }
    let want = (highest + room).min(fd_ceiling()).max(hard);
    if setrlimit(Resource::RLIMIT_NOFILE, want, want).is_err() {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

/// Raises this process's soft RLIMIT_NOFILE to its hard limit, once: descriptors in flight
/// arrive in cryo as duplicates (a peek installs them) and stay open while the dump lasts, and
/// a restoring task holds them until its queues are refilled.
pub(crate) fn raise_nofile() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        use nix::sys::resource::{getrlimit, setrlimit, Resource};
        if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
            if soft < hard {
                let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
            }
        }
    });
}
