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

/// A borrowed view of fd number `fd`, which the caller knows is open (inherited through
/// fork) and stays open for the borrow's use.
pub(crate) fn borrow_raw(fd: RawFd) -> BorrowedFd<'static> {
    // SAFETY: the caller guarantees `fd` is open; the view is only used for an immediate dup.
    unsafe { BorrowedFd::borrow_raw(fd) }
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

/// Checks a syscall's integer result.
fn check(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ret)
}

/// `KCMP_EPOLL_TFD` from linux/kcmp.h.
const KCMP_EPOLL_TFD: libc::c_int = 7;

/// `struct kcmp_epoll_slot` from linux/kcmp.h.
#[repr(C)]
struct KcmpEpollSlot {
    efd: u32,
    tfd: u32,
    toff: u32,
}

/// True if fd `fd` of `pid` is the file registered as target `tfd` (its first registration)
/// in epoll `epfd` of the same process (kcmp KCMP_EPOLL_TFD).
pub(crate) fn kcmp_epoll_target(pid: Pid, fd: RawFd, epfd: RawFd, tfd: RawFd) -> io::Result<bool> {
    let slot = KcmpEpollSlot {
        efd: epfd as u32,
        tfd: tfd as u32,
        toff: 0,
    };
    // SAFETY: KCMP_EPOLL_TFD reads one `struct kcmp_epoll_slot` through the pointer, which
    // points at `slot`, alive for the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            pid.as_raw(),
            pid.as_raw(),
            KCMP_EPOLL_TFD,
            fd as libc::c_ulong,
            &slot as *const KcmpEpollSlot,
        )
    };
    Ok(check(ret)? == 0)
}

/// A new eventfd with counter 0 (`flags`: EFD_*).
pub(crate) fn eventfd(flags: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: eventfd takes an initial value and flags, no pointers.
    let ret = unsafe { libc::eventfd(0, flags) };
    owned(libc::c_long::from(ret))
}

/// Adds `value` to an eventfd counter (write of 8 bytes).
pub(crate) fn eventfd_add(fd: BorrowedFd<'_>, value: u64) -> io::Result<()> {
    let buf = value.to_ne_bytes();
    // SAFETY: write reads 8 bytes from `buf`, which holds 8 bytes.
    let ret = unsafe { libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
    if check(ret as libc::c_long)? != 8 {
        return Err(io::Error::other("short write to the eventfd"));
    }
    Ok(())
}

/// A new timerfd on `clockid` (`flags`: TFD_*).
pub(crate) fn timerfd_create(clockid: libc::c_int, flags: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: timerfd_create takes a clock id and flags, no pointers.
    let ret = unsafe { libc::timerfd_create(clockid, flags) };
    owned(libc::c_long::from(ret))
}

/// A timespec of `ns` nanoseconds.
fn timespec(ns: u64) -> libc::timespec {
    libc::timespec {
        tv_sec: (ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (ns % 1_000_000_000) as libc::c_long,
    }
}

/// Arms (or disarms, `value_ns` 0) a timerfd: first expiration at `value_ns` (relative, or
/// absolute on its clock with TFD_TIMER_ABSTIME in `flags`), then every `interval_ns`.
pub(crate) fn timerfd_settime(
    fd: BorrowedFd<'_>,
    flags: libc::c_int,
    value_ns: u64,
    interval_ns: u64,
) -> io::Result<()> {
    let new = libc::itimerspec {
        it_interval: timespec(interval_ns),
        it_value: timespec(value_ns),
    };
    // SAFETY: timerfd_settime reads one itimerspec through `&new` and writes nothing (old
    // value pointer is null).
    let ret = unsafe { libc::timerfd_settime(fd.as_raw_fd(), flags, &new, std::ptr::null_mut()) };
    check(libc::c_long::from(ret)).map(drop)
}

/// `TFD_IOC_SET_TICKS` (`_IOW('T', 0, u64)`): sets the expirations a timerfd reports unread.
const TFD_IOC_SET_TICKS: libc::c_ulong = 0x4008_5400;

/// Sets the unread expirations of a timerfd (kernels with CONFIG_CHECKPOINT_RESTORE).
pub(crate) fn timerfd_set_ticks(fd: BorrowedFd<'_>, ticks: u64) -> io::Result<()> {
    // SAFETY: TFD_IOC_SET_TICKS reads one u64 through the pointer, which points at `ticks`.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), TFD_IOC_SET_TICKS, &ticks as *const u64) };
    check(libc::c_long::from(ret)).map(drop)
}

/// The current time of `clockid` in nanoseconds.
pub(crate) fn clock_now_ns(clockid: libc::c_int) -> io::Result<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through the pointer, which points at `ts`.
    let ret = unsafe { libc::clock_gettime(clockid, &mut ts) };
    check(libc::c_long::from(ret))?;
    Ok(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

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
    let ret = unsafe { libc::signalfd(-1, &set, flags) };
    owned(libc::c_long::from(ret))
}

/// A new epoll instance (close-on-exec).
pub(crate) fn epoll_create() -> io::Result<OwnedFd> {
    // SAFETY: epoll_create1 takes flags, no pointers.
    let ret = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    owned(libc::c_long::from(ret))
}

/// Registers fd NUMBER `target` of this process in `epoll` with `events` and `data`. The
/// number is used as is: the epoll remembers it (fdinfo `tfd:`, EPOLL_CTL_MOD/DEL by number).
pub(crate) fn epoll_add(
    epoll: BorrowedFd<'_>,
    target: RawFd,
    events: u32,
    data: u64,
) -> io::Result<()> {
    let mut ev = libc::epoll_event { events, u64: data };
    // SAFETY: epoll_ctl reads one epoll_event through the pointer, which points at `ev`.
    let ret = unsafe { libc::epoll_ctl(epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, target, &mut ev) };
    check(libc::c_long::from(ret)).map(drop)
}

/// A new inotify instance (`flags`: IN_NONBLOCK, IN_CLOEXEC).
pub(crate) fn inotify_init(flags: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: inotify_init1 takes flags, no pointers.
    let ret = unsafe { libc::inotify_init1(flags) };
    owned(libc::c_long::from(ret))
}

/// Adds a watch on `path`; returns its watch descriptor.
pub(crate) fn inotify_add_watch(fd: BorrowedFd<'_>, path: &str, mask: u32) -> io::Result<i32> {
    let path = std::ffi::CString::new(path).map_err(io::Error::other)?;
    // SAFETY: the kernel reads the NUL-terminated path `path` owns, alive for the call.
    let ret = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), path.as_ptr(), mask) };
    Ok(check(libc::c_long::from(ret))? as i32)
}

/// Removes watch `wd`.
pub(crate) fn inotify_rm_watch(fd: BorrowedFd<'_>, wd: i32) -> io::Result<()> {
    // SAFETY: inotify_rm_watch takes an fd and a number, no pointers.
    let ret = unsafe { libc::inotify_rm_watch(fd.as_raw_fd(), wd) };
    check(libc::c_long::from(ret)).map(drop)
}

/// Opens (O_PATH) the file of an inotify file handle on the filesystem of `mount`.
pub(crate) fn open_by_handle(
    mount: BorrowedFd<'_>,
    handle_type: i32,
    handle: &[u8],
) -> io::Result<OwnedFd> {
    // struct file_handle { u32 handle_bytes; int handle_type; unsigned char f_handle[]; }
    let mut buf = Vec::with_capacity(8 + handle.len());
    buf.extend_from_slice(&(handle.len() as u32).to_ne_bytes());
    buf.extend_from_slice(&handle_type.to_ne_bytes());
    buf.extend_from_slice(handle);
    // u32-aligned storage for the header.
    let mut words = vec![0u32; buf.len().div_ceil(4)];
    for (i, b) in buf.iter().enumerate() {
        words[i / 4] |= u32::from(*b) << (8 * (i % 4));
    }
    // SAFETY: open_by_handle_at reads a `struct file_handle` (header + handle_bytes bytes)
    // from `words`, which holds exactly that (little-endian x86 layout), 4-byte aligned.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_open_by_handle_at,
            mount.as_raw_fd(),
            words.as_ptr(),
            libc::O_PATH | libc::O_CLOEXEC,
        )
    };
    owned(ret)
}

/// A new memfd named `name` (`flags`: MFD_*).
pub(crate) fn memfd_create(name: &str, flags: libc::c_uint) -> io::Result<OwnedFd> {
    let name = std::ffi::CString::new(name).map_err(io::Error::other)?;
    // SAFETY: the kernel reads the NUL-terminated name `name` owns, alive for the call.
    let ret = unsafe { libc::memfd_create(name.as_ptr(), flags) };
    owned(libc::c_long::from(ret))
}

/// New shared anonymous memory of `size` bytes, as an fd on its shmem file: a
/// MAP_SHARED|MAP_ANONYMOUS mapping is made, its /proc/self/map_files link opened O_RDWR and
/// the mapping removed (the fd keeps the object; the kernel names it "/dev/zero").
pub(crate) fn shmem_anon(size: u64) -> io::Result<OwnedFd> {
    let page = 4096u64;
    let len = usize::try_from(size.div_ceil(page) * page).map_err(io::Error::other)?;
    // SAFETY: a fresh mapping at an address the kernel picks; nothing refers to it.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if addr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let start = addr as usize;
    let link = format!("/proc/self/map_files/{start:x}-{:x}", start + len);
    let opened = nix::fcntl::open(
        link.as_str(),
        nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    );
    // SAFETY: unmapping exactly the mapping made above, which nothing else uses.
    unsafe { libc::munmap(addr, len) };
    let fd = opened?;
    if size != len as u64 {
        // A SysV segment's size need not be a page multiple.
        nix::unistd::ftruncate(&fd, size as libc::off_t)?;
    }
    Ok(fd)
}

/// Makes terminal `fd` the controlling terminal of the caller's session (TIOCSCTTY with 0:
/// never taken from another session).
pub(crate) fn set_controlling_terminal(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: TIOCSCTTY takes an int argument, no pointers.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSCTTY, 0) };
    check(libc::c_long::from(ret)).map(drop)
}

/// The seals of a memfd (F_GET_SEALS).
pub(crate) fn get_seals(fd: BorrowedFd<'_>) -> io::Result<u32> {
    // SAFETY: fcntl F_GET_SEALS takes an fd, no pointers.
    let ret = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
    Ok(check(libc::c_long::from(ret))? as u32)
}

/// Adds seals to a memfd (F_ADD_SEALS).
pub(crate) fn add_seals(fd: BorrowedFd<'_>, seals: u32) -> io::Result<()> {
    // SAFETY: fcntl F_ADD_SEALS takes an fd and an int, no pointers.
    let ret = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals as libc::c_int) };
    check(libc::c_long::from(ret)).map(drop)
}

/// True if `fd` is an open descriptor of this process (F_GETFD).
pub(crate) fn fd_is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD takes no argument and only reads the fd table.
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
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
