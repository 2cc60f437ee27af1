//! The raw calls of the workload, each wrapped once: fds as plain numbers (the modes place
//! them at fixed numbers the tests look for), errors as `io::Error`.

use std::ffi::{CStr, CString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Closes every fd from `first` up.
pub fn close_from(first: u32) {
    // SAFETY: close_range takes no pointers; nothing in this process uses those fds yet.
    unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, 0u32) };
}

/// A session (and process group) of its own.
pub fn setsid() -> io::Result<()> {
    // SAFETY: setsid takes no pointers.
    cvt(unsafe { libc::setsid() }).map(drop)
}

pub fn getppid() -> i32 {
    // SAFETY: getppid takes no arguments.
    unsafe { libc::getppid() }
}

/// Sends `sig` to `pid`.
pub fn signal(pid: i32, sig: i32) -> io::Result<()> {
    // SAFETY: kill takes plain integers.
    cvt(unsafe { libc::kill(pid, sig) }).map(drop)
}

/// `r`, or the errno of a failed call.
pub fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// One non-blocking recv on `fd` into `buf`: the length received, or `None` when nothing
/// waits.
pub fn recv_nowait(fd: i32, buf: &mut [u8]) -> io::Result<Option<usize>> {
    // SAFETY: recv into our own buffer, at most its length.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.kind() {
            io::ErrorKind::WouldBlock => Ok(None),
            _ => Err(e),
        };
    }
    Ok(Some(n as usize))
}

/// getsockopt of up to `len` bytes: the bytes the kernel wrote.
pub fn getsockopt_bytes(fd: i32, level: i32, opt: i32, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mut l = len as libc::socklen_t;
    // SAFETY: buf has l bytes; the kernel writes at most l and updates l.
    cvt(unsafe { libc::getsockopt(fd, level, opt, buf.as_mut_ptr().cast(), &mut l) })?;
    buf.truncate(l as usize);
    Ok(buf)
}

/// setsockopt with `val` as the option's bytes.
pub fn setsockopt_bytes(fd: i32, level: i32, opt: i32, val: &[u8]) -> io::Result<libc::c_int> {
    // SAFETY: val is our buffer of val.len() bytes.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            val.as_ptr().cast(),
            val.len() as libc::socklen_t,
        )
    })
}

/// setsockopt with plain-old-data `value` (an int, a linger, a timeval, a tpacket_req...).
pub fn setsockopt_value<T: Copy>(
    fd: i32,
    level: i32,
    opt: i32,
    value: &T,
) -> io::Result<libc::c_int> {
    // SAFETY: value is a live T of the size given; the kernel only reads it.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    })
}

fn cpath(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).expect("no NUL in paths")
}

pub fn open(path: &Path, flags: i32) -> io::Result<i32> {
    open_mode(path, flags, 0)
}

pub fn open_mode(path: &Path, flags: i32, mode: libc::mode_t) -> io::Result<i32> {
    let p = cpath(path);
    // SAFETY: p is a NUL-terminated path that outlives the call.
    cvt(unsafe { libc::open(p.as_ptr(), flags | libc::O_CLOEXEC, mode) })
}

pub fn close(fd: i32) {
    // SAFETY: fd is one this program opened and no longer uses.
    unsafe { libc::close(fd) };
}

pub fn read(fd: i32, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: buf is valid for buf.len() bytes of writes.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

pub fn write_all(fd: i32, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        // SAFETY: data is valid for data.len() bytes of reads.
        let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        data = &data[n as usize..];
    }
    Ok(())
}

/// Reads from offset 0 until EOF or `buf` is full; returns the length read.
pub fn pread_all(fd: i32, buf: &mut [u8]) -> io::Result<usize> {
    pread_all_at(fd, buf, 0)
}

/// Reads from offset `at` until EOF or `buf` is full; returns the length read.
pub fn pread_all_at(fd: i32, buf: &mut [u8], at: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: rest is valid for rest.len() bytes of writes.
        let n = unsafe {
            libc::pread(
                fd,
                rest.as_mut_ptr().cast(),
                rest.len(),
                (at + done as u64) as libc::off_t,
            )
        };
        match n {
            0 => break,
            n if n < 0 => return Err(io::Error::last_os_error()),
            n => done += n as usize,
        }
    }
    Ok(done)
}

pub fn tell(fd: i32) -> io::Result<u64> {
    // SAFETY: lseek takes no pointers.
    let off = unsafe { libc::lseek(fd, 0, libc::SEEK_CUR) };
    if off < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(off as u64)
    }
}

/// Reads up to `max` bytes without blocking: whatever the pipe holds now.
pub fn read_available(fd: i32, max: usize) -> io::Result<Vec<u8>> {
    // SAFETY: fcntl on our own fd, no pointers.
    let flags = cvt(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
    // SAFETY: as above.
    cvt(unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) })?;
    let mut data = Vec::new();
    let mut chunk = [0u8; 8192];
    let result = loop {
        let want = chunk.len().min(max - data.len());
        if want == 0 {
            break Ok(());
        }
        match read(fd, &mut chunk[..want]) {
            Ok(0) => break Ok(()),
            Ok(n) => data.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    // SAFETY: as above.
    cvt(unsafe { libc::fcntl(fd, libc::F_SETFL, flags) })?;
    result.map(|()| data)
}

pub fn epoll() -> io::Result<i32> {
    // SAFETY: epoll_create1 takes flags, no pointers.
    cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })
}

pub fn epoll_add(epfd: i32, fd: i32, events: u32, data: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event { events, u64: data };
    // SAFETY: epoll_ctl reads one epoll_event from `ev`.
    cvt(unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, fd, &mut ev) }).map(drop)
}

/// The data of the ready targets of one epoll_wait.
pub fn epoll_wait(epfd: i32, timeout_ms: i32) -> io::Result<Vec<u64>> {
    let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 16];
    // SAFETY: evs has room for the 16 events epoll_wait may write.
    let n = cvt(unsafe { libc::epoll_wait(epfd, evs.as_mut_ptr(), 16, timeout_ms) })?;
    Ok(evs[..n as usize].iter().map(|e| e.u64).collect())
}

pub fn eventfd(count: u32, flags: i32) -> io::Result<i32> {
    // SAFETY: eventfd takes numbers, no pointers.
    cvt(unsafe { libc::eventfd(count, flags | libc::EFD_CLOEXEC) })
}

/// A non-blocking CLOCK_MONOTONIC timerfd firing every `ns`.
pub fn timerfd(ns: i64) -> io::Result<i32> {
    // SAFETY: timerfd_create takes numbers, no pointers.
    let fd = cvt(unsafe {
        libc::timerfd_create(
            libc::CLOCK_MONOTONIC,
            libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
        )
    })?;
    let ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: ns,
    };
    let spec = libc::itimerspec {
        it_interval: ts,
        it_value: ts,
    };
    // SAFETY: timerfd_settime reads `spec`; the old value pointer is null.
    cvt(unsafe { libc::timerfd_settime(fd, 0, &spec, std::ptr::null_mut()) })?;
    Ok(fd)
}

/// A timespec of `ns` nanoseconds.
fn timespec_ns(ns: u64) -> libc::timespec {
    libc::timespec {
        tv_sec: (ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (ns % 1_000_000_000) as libc::c_long,
    }
}

/// A timerfd on `clock` (non-blocking), armed with `flags` (TFD_TIMER_*): first expiration at
/// `value_ns` (relative, or absolute on the clock), then every `interval_ns`.
pub fn timerfd_armed(clock: i32, flags: i32, value_ns: u64, interval_ns: u64) -> io::Result<i32> {
    // SAFETY: timerfd_create takes numbers, no pointers.
    let fd = cvt(unsafe { libc::timerfd_create(clock, libc::TFD_NONBLOCK | libc::TFD_CLOEXEC) })?;
    let spec = libc::itimerspec {
        it_interval: timespec_ns(interval_ns),
        it_value: timespec_ns(value_ns),
    };
    // SAFETY: timerfd_settime reads `spec`; the old value pointer is null.
    cvt(unsafe { libc::timerfd_settime(fd, flags, &spec, std::ptr::null_mut()) })?;
    Ok(fd)
}

/// timerfd_gettime: (time left, interval) in nanoseconds.
pub fn timerfd_get(fd: i32) -> io::Result<(u64, u64)> {
    let mut cur = libc::itimerspec {
        it_interval: timespec_ns(0),
        it_value: timespec_ns(0),
    };
    // SAFETY: timerfd_gettime writes one itimerspec into `cur`.
    cvt(unsafe { libc::timerfd_gettime(fd, &mut cur) })?;
    let ns = |t: libc::timespec| t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64;
    Ok((ns(cur.it_value), ns(cur.it_interval)))
}

/// The time of `clock` in nanoseconds.
pub fn clock_ns(clock: i32) -> io::Result<u64> {
    let mut ts = timespec_ns(0);
    // SAFETY: clock_gettime writes one timespec into `ts`.
    cvt(unsafe { libc::clock_gettime(clock, &mut ts) })?;
    Ok(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

/// Waits up to `timeout_ms` for `fd` to be readable; true if it is.
pub fn poll_in(fd: i32, timeout_ms: i32) -> io::Result<bool> {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll reads and writes one pollfd, `p`.
    Ok(cvt(unsafe { libc::poll(&mut p, 1, timeout_ms) })? == 1)
}

/// Whether `fd` polls writable now.
pub fn poll_out_now(fd: i32) -> io::Result<bool> {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: poll reads and writes one pollfd, `p`.
    cvt(unsafe { libc::poll(&mut p, 1, 0) })?;
    Ok(p.revents & libc::POLLOUT != 0)
}

/// fstat of `fd`.
pub fn fstat(fd: i32) -> io::Result<libc::stat> {
    // SAFETY: stat is plain data, filled by fstat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: st is valid for the write.
    cvt(unsafe { libc::fstat(fd, &mut st) })?;
    Ok(st)
}

/// ftruncate.
pub fn set_len(fd: i32, len: u64) -> io::Result<()> {
    // SAFETY: ftruncate takes numbers, no pointers.
    cvt(unsafe { libc::ftruncate(fd, len as libc::off_t) }).map(drop)
}

/// fchmod.
pub fn fchmod(fd: i32, mode: libc::mode_t) -> io::Result<()> {
    // SAFETY: fchmod takes numbers, no pointers.
    cvt(unsafe { libc::fchmod(fd, mode) }).map(drop)
}

/// futimens: access and modification times as (seconds, nanoseconds).
pub fn set_times(fd: i32, atime: (i64, i64), mtime: (i64, i64)) -> io::Result<()> {
    let ts = |(s, ns): (i64, i64)| libc::timespec {
        tv_sec: s as libc::time_t,
        tv_nsec: ns as libc::c_long,
    };
    let times = [ts(atime), ts(mtime)];
    // SAFETY: futimens reads two timespecs from `times`.
    cvt(unsafe { libc::futimens(fd, times.as_ptr()) }).map(drop)
}

/// The data extents (offset, length) of a file, by SEEK_DATA / SEEK_HOLE.
pub fn data_extents(fd: i32) -> io::Result<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    let mut at: libc::off_t = 0;
    loop {
        // SAFETY: lseek takes numbers, no pointers.
        let start = unsafe { libc::lseek(fd, at, libc::SEEK_DATA) };
        if start < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENXIO) {
                return Ok(out);
            }
            return Err(e);
        }
        // SAFETY: as above.
        let end = unsafe { libc::lseek(fd, start, libc::SEEK_HOLE) };
        if end < 0 {
            return Err(io::Error::last_os_error());
        }
        out.push((start as u64, (end - start) as u64));
        at = end;
    }
}

/// mkfifo, mode 0600.
pub fn mkfifo(path: &Path) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes()).expect("no NUL");
    // SAFETY: c is NUL-terminated and outlives the call.
    cvt(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }).map(drop)
}

/// mknod of a character device MAJOR:MINOR, mode 0600.
pub fn mknod_char(path: &Path, major: u32, minor: u32) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes()).expect("no NUL");
    // SAFETY: c is NUL-terminated and outlives the call.
    cvt(unsafe {
        libc::mknod(
            c.as_ptr(),
            libc::S_IFCHR | 0o600,
            libc::makedev(major, minor),
        )
    })
    .map(drop)
}

/// The target of the symlink an O_PATH fd holds (readlinkat(fd, "")).
pub fn readlink_fd(fd: i32) -> io::Result<String> {
    let mut buf = [0u8; 4096];
    // SAFETY: the path is an empty NUL-terminated string; buf is valid for its length.
    let n = unsafe { libc::readlinkat(fd, c"".as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(String::from_utf8_lossy(&buf[..n as usize]).into_owned())
}

/// pidfd_open(pid, 0).
pub fn pidfd_open(pid: i32) -> io::Result<i32> {
    pidfd_open_flags(pid, 0)
}

/// pidfd_open(pid, flags).
pub fn pidfd_open_flags(pid: i32, flags: u32) -> io::Result<i32> {
    // SAFETY: pidfd_open takes numbers, no pointers.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, flags) };
    cvt(r as libc::c_int)
}

/// fcntl(fd, F_GETFL).
pub fn file_flags(fd: i32) -> io::Result<i32> {
    // SAFETY: fcntl on a number, no pointers.
    cvt(unsafe { libc::fcntl(fd, libc::F_GETFL) })
}

/// fcntl(fd, F_SETFL, flags).
pub fn set_file_flags(fd: i32, flags: i32) -> io::Result<()> {
    // SAFETY: fcntl on a number, no pointers.
    cvt(unsafe { libc::fcntl(fd, libc::F_SETFL, flags) }).map(drop)
}

/// The revents poll(2) gives `fd` for POLLIN|POLLOUT now.
pub fn poll_revents(fd: i32) -> io::Result<i16> {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN | libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: poll reads and writes one pollfd, `p`.
    cvt(unsafe { libc::poll(&mut p, 1, 0) })?;
    Ok(p.revents)
}

/// fanotify_init(flags, event_flags).
pub fn fanotify_init(flags: u32, event_flags: u32) -> io::Result<i32> {
    // SAFETY: fanotify_init takes two numbers.
    cvt(unsafe { libc::fanotify_init(flags, event_flags) })
}

/// fanotify_mark(fd, flags, mask, AT_FDCWD, path).
pub fn fanotify_mark(fd: i32, flags: u32, mask: u64, path: &Path) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: the kernel reads the NUL-terminated path `c` owns, alive for the call.
    cvt(unsafe { libc::fanotify_mark(fd, flags, mask, libc::AT_FDCWD, c.as_ptr()) }).map(drop)
}

/// Mounts a small tmpfs at `path`.
pub fn mount_tmpfs(path: &Path) -> io::Result<()> {
    let target = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let fstype = c"tmpfs";
    let data = c"size=1m";
    // SAFETY: every pointer is a NUL-terminated string alive for the call.
    cvt(unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            data.as_ptr().cast(),
        )
    })
    .map(drop)
}

/// The mount fd `fd` of this process was opened through (`mnt_id:` of its fdinfo), as the
/// first column of a mountinfo line shows it.
pub fn mount_id_of(fd: i32) -> Result<String, String> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))
        .map_err(|e| format!("fdinfo of fd {fd}: {e}"))?;
    info.lines()
        .find_map(|l| l.strip_prefix("mnt_id:"))
        .map(|id| id.trim().to_string())
        .ok_or_else(|| format!("no mnt_id in the fdinfo of fd {fd}"))
}

/// Makes the mount at `path` read-only, the filesystem under it left writable (a bind
/// remount: MS_REMOUNT | MS_BIND | MS_RDONLY).
pub fn remount_bind_read_only(path: &Path) -> io::Result<()> {
    let target = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let flags = libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY;
    // SAFETY: `target` is a NUL-terminated string alive for the call; the others are null.
    cvt(unsafe {
        libc::mount(
            std::ptr::null(),
            target.as_ptr(),
            std::ptr::null(),
            flags,
            std::ptr::null(),
        )
    })
    .map(drop)
}

/// pidfd_send_signal(pidfd, sig).
pub fn pidfd_signal(pidfd: i32, sig: i32) -> io::Result<()> {
    // SAFETY: a null siginfo is allowed; the other arguments are numbers.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd,
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    cvt(r as libc::c_int).map(drop)
}

/// Forks: the child's pid here, 0 in the child. Only for a workload that runs one thread when
/// it forks (every mode that forks does), so that the child may go on running Rust.
pub fn fork() -> io::Result<i32> {
    // SAFETY: fork takes no arguments; the callers are single-threaded (see above).
    cvt(unsafe { libc::fork() })
}

/// Forks a child that waits in pause() until killed; returns its pid.
pub fn fork_paused() -> io::Result<i32> {
    // The child only calls pause() until it dies.
    match fork()? {
        0 => loop {
            // SAFETY: pause takes no arguments.
            unsafe { libc::pause() };
        },
        pid => Ok(pid),
    }
}

/// Forks a child sharing with this process what `flags` says (CLONE_FILES, CLONE_FS): a
/// clone without CLONE_VM or a stack of its own, so the child goes on here in a copy of the
/// memory, as after fork. Returns 0 in the child, its pid in the parent.
pub fn fork_sharing(flags: libc::c_int) -> io::Result<i32> {
    // SAFETY: clone without CLONE_VM and with no new stack behaves like fork (the arguments
    // are numbers); the callers are single-threaded (see fork).
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    cvt(r as libc::c_int)
}

/// Clones a child with `flags` (besides SIGCHLD) that waits in pause() until killed, on a
/// stack of its own; returns its pid. With CLONE_VFORK this returns once the child is gone.
pub fn clone_paused(flags: libc::c_int) -> io::Result<i32> {
    extern "C" fn paused(_: *mut libc::c_void) -> libc::c_int {
        loop {
            // SAFETY: pause takes no arguments.
            unsafe { libc::pause() };
        }
    }
    // Leaked: the child may run on it (in this process's memory with CLONE_VM) until it dies.
    let stack: &'static mut [u8] = Box::leak(vec![0u8; 64 * 1024].into_boxed_slice());
    // SAFETY: the child runs `paused` on its own stack (its top, 16-byte aligned, passed as
    // the stack pointer) and only calls pause(); the stack is never freed.
    let top = unsafe { stack.as_mut_ptr().add(stack.len()) };
    // SAFETY: as above; the argument pointer is not used.
    cvt(unsafe {
        libc::clone(
            paused,
            top.cast(),
            flags | libc::SIGCHLD,
            std::ptr::null_mut(),
        )
    })
}

/// Forks a child that exits at once with `code`; returns its pid, not reaped.
pub fn fork_exiting_with(code: i32) -> io::Result<i32> {
    match fork()? {
        // SAFETY: _exit takes a number and does not return.
        0 => unsafe { libc::_exit(code) },
        pid => Ok(pid),
    }
}

/// The wait status PIDFD_GET_INFO (PIDFD_INFO_EXIT) reports for the exited process behind
/// pidfd `fd`, or `None`.
pub fn pidfd_exit_status(fd: i32) -> io::Result<Option<i32>> {
    // struct pidfd_info, 64 bytes: mask first, exit_code at byte 60.
    let mut info = [0u64; 8];
    info[0] = 8; // PIDFD_INFO_EXIT
                 // SAFETY: PIDFD_GET_INFO (_IOWR(0xFF, 11), 64 bytes) writes at most 64 bytes to `info`.
    let r = unsafe { libc::ioctl(fd, 0xC040_FF0B, info.as_mut_ptr()) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::ESRCH) {
            Ok(None)
        } else {
            Err(e)
        };
    }
    let code = (info[7] >> 32) as u32 as i32;
    Ok((info[0] & 8 != 0).then_some(code))
}

/// st_ino of fd `fd`.
pub fn fstat_ino(fd: i32) -> io::Result<u64> {
    // SAFETY: stat is plain data; fstat fills it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: st is a valid stat buffer.
    cvt(unsafe { libc::fstat(fd, &mut st) })?;
    Ok(st.st_ino)
}

/// waitid(P_PIDFD, fd, WEXITED): the wait status of the child behind pidfd `fd`, reaped.
pub fn waitid_pidfd(fd: i32) -> io::Result<i32> {
    // SAFETY: siginfo_t is plain data; waitid fills it.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: info is a valid siginfo_t.
    cvt(unsafe { libc::waitid(libc::P_PIDFD, fd as libc::id_t, &mut info, libc::WEXITED) })?;
    // SAFETY: waitid filled a SIGCHLD siginfo.
    let (code, status) = unsafe { (info.si_code, info.si_status()) };
    Ok(if code == libc::CLD_EXITED {
        status << 8
    } else {
        status
    })
}

/// Reaps the child `pid` (waits for it to exit).
pub fn reap(pid: i32) -> io::Result<()> {
    let mut status = 0;
    // SAFETY: waitpid writes the status into `status`.
    cvt(unsafe { libc::waitpid(pid, &mut status, 0) }).map(drop)
}

fn sigset(sig: i32) -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it right after.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: set is a valid sigset_t.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
    }
    set
}

/// Waits until a handler ran, with no signal blocked meanwhile: SIGUSR1, kept blocked
/// outside this wait, is never lost between two waits.
pub fn await_sigusr1() {
    // SAFETY: sigset_t is plain data, emptied by sigemptyset before use.
    let mut none: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: none is a valid sigset_t; sigsuspend returns once a handler ran.
    unsafe {
        libc::sigemptyset(&mut none);
        libc::sigsuspend(&none);
    }
}

pub fn block_signal(sig: i32) -> io::Result<()> {
    let set = sigset(sig);
    // SAFETY: sigprocmask reads `set`; the old set pointer is null.
    cvt(unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) }).map(drop)
}

/// nanosleep for `secs` seconds, with a `rem` (as glibc's sleep passes one).
pub fn nanosleep_secs(secs: i64) -> io::Result<()> {
    let mut ts = libc::timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    let req: *const libc::timespec = &ts;
    // SAFETY: the kernel reads the request and may write the time left into the same live
    // timespec.
    cvt(unsafe { libc::nanosleep(req, &mut ts) }).map(drop)
}

/// A POSIX semaphore (unnamed, process-private), for waits in sem_timedwait.
pub struct Semaphore(Box<std::cell::UnsafeCell<libc::sem_t>>);

// SAFETY: a semaphore is made to be used by several threads at once (sem_overview(7)).
unsafe impl Sync for Semaphore {}
// SAFETY: as above; it lives in a box that does not move.
unsafe impl Send for Semaphore {}

impl Semaphore {
    /// A semaphore at 0.
    pub fn new() -> io::Result<Self> {
        // SAFETY: sem_t is plain data that sem_init fills.
        let sem = Self(Box::new(unsafe { std::mem::zeroed() }));
        // SAFETY: the semaphore lives in its box as long as `sem`.
        cvt(unsafe { libc::sem_init(sem.0.get(), 0, 0) })?;
        Ok(sem)
    }

    /// sem_timedwait until CLOCK_REALTIME reads `secs` more than now (glibc waits in futex
    /// FUTEX_WAIT_BITSET with that absolute deadline).
    pub fn timed_wait_secs(&self, secs: i64) -> io::Result<()> {
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes `now`.
        cvt(unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut now) })?;
        now.tv_sec += secs;
        // SAFETY: the semaphore was initialised; the deadline is read.
        cvt(unsafe { libc::sem_timedwait(self.0.get(), &now) }).map(drop)
    }

    /// sem_post.
    pub fn post(&self) -> io::Result<()> {
        // SAFETY: the semaphore was initialised.
        cvt(unsafe { libc::sem_post(self.0.get()) }).map(drop)
    }
}

/// sigwaitinfo for `sig` (blocked): the signal taken.
pub fn sigwaitinfo(sig: i32) -> io::Result<i32> {
    let set = sigset(sig);
    // SAFETY: sigwaitinfo reads `set`; the info pointer may be null.
    cvt(unsafe { libc::sigwaitinfo(&set, std::ptr::null_mut()) })
}

/// Sends `sig` to thread `tid` of process `pid`.
pub fn tgkill(pid: i32, tid: i32, sig: i32) -> io::Result<()> {
    // SAFETY: numbers only.
    cvt(unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, sig) } as i32).map(drop)
}

pub fn signalfd(sig: i32) -> io::Result<i32> {
    let set = sigset(sig);
    // SAFETY: signalfd reads `set`.
    cvt(unsafe { libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) })
}

pub fn memfd(name: &str) -> io::Result<i32> {
    let name = CString::new(name).expect("no NUL");
    // SAFETY: name is NUL-terminated and outlives the call.
    cvt(unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) })
}

/// waitid(P_PID, `pid`, WSTOPPED | WNOWAIT | WNOHANG): the signal that stopped it (si_status),
/// or None when it is not stopped (the stop stays to be waited for).
pub fn stop_signal_of(pid: i32) -> io::Result<Option<i32>> {
    // SAFETY: siginfo_t is plain data the kernel fills.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: waitid writes `info`.
    cvt(unsafe {
        libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WSTOPPED | libc::WNOWAIT | libc::WNOHANG,
        )
    })?;
    // SAFETY: si_pid and si_status are set by waitid when a child was found (0 when not).
    Ok(unsafe { (info.si_pid() != 0).then(|| info.si_status()) })
}

/// munmap of `len` bytes at `addr`.
pub fn munmap(addr: usize, len: usize) -> io::Result<()> {
    // SAFETY: the caller names a range of this process that nothing of its own uses any more.
    cvt(unsafe { libc::munmap(addr as *mut libc::c_void, len) }).map(drop)
}

/// Forks a child that runs the file open as `fd` (execveat with AT_EMPTY_PATH, no
/// arguments beyond its name, no environment); returns its wait status, or the errno of the
/// failed execveat as its exit code.
pub fn run_fd(fd: i32) -> io::Result<i32> {
    let name = c"run";
    let argv = [name.as_ptr(), std::ptr::null()];
    let envp = [std::ptr::null::<libc::c_char>()];
    match fork()? {
        0 => {
            // SAFETY: fcntl takes numbers (the child's own fd table: the script's interpreter
            // opens /dev/fd/N, which must stay open across the exec); execveat reads the
            // NUL-terminated strings and arrays above, which live until it replaces the
            // process; on failure only _exit follows.
            unsafe {
                libc::fcntl(fd, libc::F_SETFD, 0);
                libc::syscall(
                    libc::SYS_execveat,
                    fd,
                    c"".as_ptr(),
                    argv.as_ptr(),
                    envp.as_ptr(),
                    libc::AT_EMPTY_PATH,
                );
                libc::_exit(*libc::__errno_location());
            }
        }
        pid => {
            let mut status = 0;
            // SAFETY: waitpid writes the status into `status`.
            cvt(unsafe { libc::waitpid(pid, &mut status, 0) })?;
            Ok(status)
        }
    }
}

/// A memfd in 2 MiB huge pages (MFD_HUGETLB | MFD_HUGE_2MB).
pub fn memfd_hugetlb(name: &str) -> io::Result<i32> {
    let name = CString::new(name).expect("no NUL");
    let flags = libc::MFD_CLOEXEC | libc::MFD_HUGETLB | libc::MFD_HUGE_2MB;
    // SAFETY: name is NUL-terminated and outlives the call.
    cvt(unsafe { libc::memfd_create(name.as_ptr(), flags) })
}

pub fn add_seals(fd: i32, seals: i32) -> io::Result<()> {
    // SAFETY: fcntl F_ADD_SEALS takes numbers.
    cvt(unsafe { libc::fcntl(fd, libc::F_ADD_SEALS, seals) }).map(drop)
}

pub fn get_seals(fd: i32) -> io::Result<i32> {
    // SAFETY: fcntl F_GET_SEALS takes numbers.
    cvt(unsafe { libc::fcntl(fd, libc::F_GET_SEALS) })
}

pub fn inotify() -> io::Result<i32> {
    // SAFETY: inotify_init1 takes flags.
    cvt(unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) })
}

pub fn add_watch(fd: i32, path: &Path, mask: u32) -> io::Result<i32> {
    let p = cpath(path);
    // SAFETY: p is NUL-terminated and outlives the call.
    cvt(unsafe { libc::inotify_add_watch(fd, p.as_ptr(), mask) })
}

pub fn rm_watch(fd: i32, wd: i32) -> io::Result<()> {
    // SAFETY: numbers only.
    cvt(unsafe { libc::inotify_rm_watch(fd, wd) }).map(drop)
}

pub fn pipe() -> io::Result<(i32, i32)> {
    let mut fds = [0i32; 2];
    // SAFETY: fds has room for the two fds pipe2 writes.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    Ok((fds[0], fds[1]))
}

/// Makes number `want` a duplicate of `fd` (close-on-exec), keeping `fd`.
pub fn dup_to(fd: i32, want: i32) -> io::Result<()> {
    // SAFETY: dup3 on fds we own, no pointers.
    cvt(unsafe { libc::dup3(fd, want, libc::O_CLOEXEC) }).map(drop)
}

/// Moves `fd` to number `want` (closing the old number); returns `want`.
pub fn move_fd(fd: i32, want: i32) -> io::Result<i32> {
    if fd == want {
        return Ok(fd);
    }
    // SAFETY: dup3 on fds we own, no pointers.
    cvt(unsafe { libc::dup3(fd, want, libc::O_CLOEXEC) })?;
    close(fd);
    Ok(want)
}

/// A read-write mapping of `len` bytes of `fd` (or anonymous memory), kept for the
/// program's life.
pub fn map(len: usize, flags: i32, fd: i32) -> io::Result<&'static mut [u8]> {
    map_at(len, flags, fd, 0)
}

/// As [`map`], from byte `offset` of `fd`.
pub fn map_at(len: usize, flags: i32, fd: i32, offset: usize) -> io::Result<&'static mut [u8]> {
    // SAFETY: a fresh mapping at an address the kernel picks; nothing else refers to it.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            flags,
            fd,
            offset as libc::off_t,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the mapping is len bytes, readable and writable, and never unmapped.
    Ok(unsafe { std::slice::from_raw_parts_mut(p.cast(), len) })
}

pub fn pwrite_at(fd: i32, data: &[u8], off: usize) -> io::Result<()> {
    // SAFETY: data is valid for data.len() bytes of reads.
    let n = unsafe { libc::pwrite(fd, data.as_ptr().cast(), data.len(), off as libc::off_t) };
    if n as usize == data.len() {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

pub fn pread_at(fd: i32, buf: &mut [u8], off: usize) -> io::Result<()> {
    // SAFETY: buf is valid for buf.len() bytes of writes.
    let n = unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), buf.len(), off as libc::off_t) };
    if n as usize == buf.len() {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

pub fn fd_size(fd: i32) -> io::Result<u64> {
    // SAFETY: stat is plain data, filled by fstat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: st is valid for the write.
    cvt(unsafe { libc::fstat(fd, &mut st) })?;
    Ok(st.st_size as u64)
}

/// Makes terminal `fd` the controlling terminal of this session (a session leader's).
pub fn set_ctty(fd: i32) -> io::Result<()> {
    // SAFETY: TIOCSCTTY takes an int argument, no pointers.
    cvt(unsafe { libc::ioctl(fd, libc::TIOCSCTTY, 0) }).map(drop)
}

/// One line from `fd`, read a byte at a time (nothing after the newline is consumed).
pub fn read_line(fd: i32) -> io::Result<String> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    loop {
        match read(fd, &mut b)? {
            0 => break,
            _ if b[0] == b'\n' => break,
            _ => line.push(b[0]),
        }
    }
    Ok(String::from_utf8_lossy(&line)
        .trim_end_matches('\r')
        .to_string())
}

/// A read-only shared mapping of the first `len` bytes of `fd`, kept for the program's life.
pub fn map_shared_read_only(len: usize, fd: i32) -> io::Result<*mut u8> {
    // SAFETY: a fresh mapping at an address the kernel picks; nothing else refers to it.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            fd,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(p.cast())
}

pub fn protect(addr: *mut u8, len: usize, prot: i32) -> io::Result<()> {
    // SAFETY: addr..addr+len is a mapping of ours; only its protection changes.
    cvt(unsafe { libc::mprotect(addr.cast(), len, prot) })?;
    Ok(())
}

pub fn mmap_anon(len: usize) -> io::Result<*mut u8> {
    // SAFETY: a fresh private anonymous mapping; no existing memory is affected.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        Err(io::Error::last_os_error())
    } else {
        Ok(p.cast())
    }
}

/// A read-write anonymous mapping of `len` bytes with `flags` exactly at `addr`, which must be
/// free (MAP_FIXED_NOREPLACE).
pub fn map_fixed(addr: *mut u8, len: usize, flags: i32) -> io::Result<*mut u8> {
    // SAFETY: MAP_FIXED_NOREPLACE fails rather than replace any existing mapping.
    let p = unsafe {
        libc::mmap(
            addr.cast(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            flags | libc::MAP_FIXED_NOREPLACE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        Err(io::Error::last_os_error())
    } else {
        Ok(p.cast())
    }
}

/// ITIMER_REAL every 20 ms (SIGALRM to `alarm`) and a POSIX timer every 15 ms
/// (SIGRTMIN with `value` to `timer`); returns the timer's id.
pub fn start_timers(
    alarm: extern "C" fn(libc::c_int),
    timer: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void),
    value: usize,
) -> io::Result<i32> {
    for (sig, handler, flags) in [
        (libc::SIGALRM, alarm as usize, libc::SA_RESTART),
        (
            libc::SIGRTMIN(),
            timer as usize,
            libc::SA_RESTART | libc::SA_SIGINFO,
        ),
    ] {
        // SAFETY: sigaction is plain data; zeroed is a valid starting value.
        let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
        sa.sa_sigaction = handler;
        sa.sa_flags = flags;
        // SAFETY: sa is fully initialised; the handlers only touch atomics.
        cvt(unsafe { libc::sigaction(sig, &sa, std::ptr::null_mut()) })?;
    }
    let every = |ms: i64| libc::itimerval {
        it_interval: libc::timeval {
            tv_sec: 0,
            tv_usec: ms * 1000,
        },
        it_value: libc::timeval {
            tv_sec: 0,
            tv_usec: ms * 1000,
        },
    };
    // SAFETY: a valid itimerval; no old value wanted.
    cvt(unsafe { libc::setitimer(libc::ITIMER_REAL, &every(20), std::ptr::null_mut()) })?;
    // SAFETY: sigevent is plain data; zeroed is a valid starting value.
    let mut ev: libc::sigevent = unsafe { std::mem::zeroed() };
    ev.sigev_notify = libc::SIGEV_SIGNAL;
    ev.sigev_signo = libc::SIGRTMIN();
    ev.sigev_value = libc::sigval {
        sival_ptr: value as *mut libc::c_void,
    };
    let mut id: libc::timer_t = std::ptr::null_mut();
    // SAFETY: ev and id are valid for the call.
    cvt(unsafe { libc::timer_create(libc::CLOCK_MONOTONIC, &mut ev, &mut id) })?;
    let spec = libc::itimerspec {
        it_interval: libc::timespec {
            tv_sec: 0,
            tv_nsec: 15_000_000,
        },
        it_value: libc::timespec {
            tv_sec: 0,
            tv_nsec: 15_000_000,
        },
    };
    // SAFETY: id was just created; spec is valid.
    cvt(unsafe { libc::timer_settime(id, 0, &spec, std::ptr::null_mut()) })?;
    Ok(id as usize as i32)
}

pub fn install_sigusr1(handler: extern "C" fn(libc::c_int)) -> io::Result<()> {
    // SAFETY: sigaction is plain data; zeroed is a valid starting value.
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    sa.sa_sigaction = handler as usize;
    sa.sa_flags = libc::SA_RESTART;
    // SAFETY: sa.sa_mask is a valid sigset_t to initialise.
    unsafe { libc::sigemptyset(&mut sa.sa_mask) };
    // SAFETY: sa is fully initialised; the handler only touches an atomic.
    cvt(unsafe { libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()) })?;
    Ok(())
}

/// Takes one pending `sig` (blocked), without waiting: its siginfo, or None.
pub fn take_pending(sig: i32) -> Option<libc::siginfo_t> {
    let set = sigset(sig);
    let zero = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: siginfo_t is plain data that sigtimedwait fills.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: a valid set, a live siginfo_t and timespec.
    let got = unsafe { libc::sigtimedwait(&set, &mut info, &zero) };
    (got == sig).then_some(info)
}

pub fn sigusr2_pending() -> bool {
    // SAFETY: sigset_t is plain data, filled by sigpending.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: set is a valid sigset_t to write.
    unsafe {
        libc::sigpending(&mut set);
        libc::sigismember(&set, libc::SIGUSR2) == 1
    }
}

pub fn io_uring() -> io::Result<i32> {
    // struct io_uring_params is 120 bytes; all zero asks for defaults.
    let mut params = [0u8; 120];
    // SAFETY: params is a zeroed io_uring_params the kernel fills in.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 4u32, params.as_mut_ptr()) };
    cvt(fd as libc::c_int)
}

/// Lists a directory; returns the fd the listing used (so it can be
/// told apart from the process's own fds) and the entry names.
pub fn list_dir(path: &CStr) -> io::Result<(i32, Vec<String>)> {
    // SAFETY: path is NUL-terminated.
    let d = unsafe { libc::opendir(path.as_ptr()) };
    if d.is_null() {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: d is a live DIR*.
    let dfd = unsafe { libc::dirfd(d) };
    let mut names = Vec::new();
    loop {
        // SAFETY: d is a live DIR*; the entry is valid until the next readdir.
        let ent = unsafe { libc::readdir(d) };
        if ent.is_null() {
            break;
        }
        // SAFETY: d_name is NUL-terminated inside the entry.
        let name = unsafe { CStr::from_ptr((*ent).d_name.as_ptr()) };
        names.push(name.to_string_lossy().into_owned());
    }
    // SAFETY: d is live and not used after this.
    unsafe { libc::closedir(d) };
    Ok((dfd, names))
}

// Process and thread attributes (the attrs mode). Every call here acts on the calling thread
// (pid 0 = "me"), which is how a test sets one thread apart from the others.

/// The calling thread's id.
pub fn gettid() -> i32 {
    // SAFETY: gettid takes no arguments.
    unsafe { libc::gettid() }
}

/// `prctl(op, a2, a3)` with integer arguments; the call's result.
pub fn prctl(op: i32, a2: u64, a3: u64) -> io::Result<i32> {
    // SAFETY: every prctl this mode makes takes integers only (no pointers).
    cvt(unsafe { libc::prctl(op, a2, a3, 0u64, 0u64) })
}

/// The calling thread's nice value.
pub fn set_nice(nice: i32) -> io::Result<()> {
    // SAFETY: numbers only; PRIO_PROCESS with who 0 is the calling thread on Linux.
    cvt(unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) }).map(drop)
}

pub fn nice() -> io::Result<i32> {
    // getpriority may legitimately return -1: errno tells an error apart.
    // SAFETY: __errno_location is the calling thread's errno.
    unsafe { *libc::__errno_location() = 0 };
    // SAFETY: numbers only.
    let n = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
    let e = io::Error::last_os_error();
    if n == -1 && e.raw_os_error() != Some(0) {
        return Err(e);
    }
    Ok(n)
}

/// The calling thread's scheduling policy (flags such as SCHED_RESET_ON_FORK or'ed in) and
/// static priority.
pub fn set_scheduler(policy: i32, priority: i32) -> io::Result<()> {
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: sched_setscheduler reads one sched_param.
    cvt(unsafe { libc::sched_setscheduler(0, policy, &param) }).map(drop)
}

/// (policy with its flags, static priority) of the calling thread.
pub fn scheduler() -> io::Result<(i32, i32)> {
    // SAFETY: numbers only.
    let policy = cvt(unsafe { libc::sched_getscheduler(0) })?;
    let mut param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_getparam writes one sched_param.
    cvt(unsafe { libc::sched_getparam(0, &mut param) })?;
    Ok((policy, param.sched_priority))
}

/// Puts the calling thread under SCHED_DEADLINE (sched_setattr) with `flags` (SCHED_FLAG_*).
pub fn set_deadline(runtime: u64, deadline: u64, period: u64, flags: u64) -> io::Result<()> {
    let mut attr = [0u8; 56];
    attr[0..4].copy_from_slice(&56u32.to_ne_bytes());
    attr[4..8].copy_from_slice(&(libc::SCHED_DEADLINE as u32).to_ne_bytes());
    attr[8..16].copy_from_slice(&flags.to_ne_bytes());
    attr[24..32].copy_from_slice(&runtime.to_ne_bytes());
    attr[32..40].copy_from_slice(&deadline.to_ne_bytes());
    attr[40..48].copy_from_slice(&period.to_ne_bytes());
    // SAFETY: the kernel reads the 56 bytes of `attr` its size field names.
    cvt(unsafe { libc::syscall(libc::SYS_sched_setattr, 0, attr.as_ptr(), 0u32) } as i32).map(drop)
}

/// SCHED_DEADLINE's parameters of the calling thread (sched_getattr): runtime, deadline,
/// period (ns) and flags.
pub fn deadline_params() -> io::Result<(u64, u64, u64, u64)> {
    // struct sched_attr (VER1, 56 bytes): size, policy, flags, nice, priority, runtime,
    // deadline, period, util_min, util_max.
    let mut attr = [0u8; 56];
    let ptr = attr.as_mut_ptr();
    // SAFETY: the kernel writes at most 56 bytes (the size passed) into `attr`.
    let ret = unsafe { libc::syscall(libc::SYS_sched_getattr, 0, ptr, 56u32, 0u32) };
    cvt(ret as i32)?;
    let u64_at = |off: usize| u64::from_ne_bytes(attr[off..off + 8].try_into().unwrap());
    Ok((u64_at(24), u64_at(32), u64_at(40), u64_at(8)))
}

pub fn set_affinity(cpus: &[usize]) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain data; all zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &cpu in cpus {
        // SAFETY: CPU_SET checks cpu against the set's size.
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    // SAFETY: the kernel reads size_of(set) bytes from set.
    cvt(unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) }).map(drop)
}

/// The CPUs the calling thread may run on.
pub fn affinity() -> io::Result<Vec<usize>> {
    // SAFETY: cpu_set_t is plain data, filled by sched_getaffinity.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: the kernel writes at most size_of(set) bytes into set.
    cvt(unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) })?;
    Ok((0..libc::CPU_SETSIZE as usize)
        // SAFETY: CPU_ISSET checks cpu against the set's size.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect())
}

const IOPRIO_WHO_PROCESS: u64 = 1;

/// The calling thread's I/O priority, `class << 13 | level`.
pub fn set_ioprio(prio: u32) -> io::Result<()> {
    // SAFETY: numbers only; who 0 is the calling thread.
    let r = unsafe { libc::syscall(libc::SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0u64, prio as u64) };
    cvt(r as libc::c_int).map(drop)
}

pub fn ioprio() -> io::Result<u32> {
    // SAFETY: numbers only.
    let r = unsafe { libc::syscall(libc::SYS_ioprio_get, IOPRIO_WHO_PROCESS, 0u64) };
    cvt(r as libc::c_int).map(|p| p as u32)
}

const CAP_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// The calling thread's (permitted, effective, inheritable) capability sets.
pub fn capget() -> io::Result<(u64, u64, u64)> {
    let mut header = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: version 3 reads the header and writes two CapData.
    let r = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
    cvt(r as libc::c_int)?;
    let wide = |f: fn(&CapData) -> u32| f(&data[0]) as u64 | (f(&data[1]) as u64) << 32;
    Ok((
        wide(|d| d.permitted),
        wide(|d| d.effective),
        wide(|d| d.inheritable),
    ))
}

/// Sets the calling thread's capability sets (the raw call: this thread only).
pub fn capset(permitted: u64, effective: u64, inheritable: u64) -> io::Result<()> {
    let mut header = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let half = |v: u64, i: usize| (v >> (32 * i)) as u32;
    let data: [CapData; 2] = std::array::from_fn(|i| CapData {
        effective: half(effective, i),
        permitted: half(permitted, i),
        inheritable: half(inheritable, i),
    });
    // SAFETY: version 3 reads the header and two CapData.
    let r = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
    cvt(r as libc::c_int).map(drop)
}

/// Sets the calling thread's fsuid (glibc's setfsuid is the raw call: this thread only);
/// returns the previous one. The kernel reports no error: read it back to know.
/// setresgid(id, id, id) then setresuid(id, id, id) of the calling thread alone (the raw
/// system calls: glibc's wrappers set every thread of the process).
pub fn set_thread_ids(id: u32) -> io::Result<()> {
    // SAFETY: numbers only.
    cvt(unsafe { libc::syscall(libc::SYS_setresgid, id, id, id) } as i32)?;
    // SAFETY: numbers only.
    cvt(unsafe { libc::syscall(libc::SYS_setresuid, id, id, id) } as i32)?;
    Ok(())
}

pub fn setfsuid(uid: u32) -> u32 {
    // SAFETY: numbers only.
    unsafe { libc::setfsuid(uid) as u32 }
}

/// Installs a seccomp filter on the calling thread (`flags`: SECCOMP_FILTER_FLAG_TSYNC to
/// put it on every thread of the process).
pub fn seccomp_filter(prog: &[libc::sock_filter], flags: u32) -> io::Result<()> {
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr().cast_mut(),
    };
    // SAFETY: the kernel copies the program that fprog describes; prog outlives the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
            &fprog,
        )
    };
    // TSYNC reports a thread it could not synchronise as a positive tid; NEW_LISTENER
    // answers the listener's fd (left open: the process holds it).
    match r {
        0 => Ok(()),
        r if r > 0 && flags & libc::SECCOMP_FILTER_FLAG_NEW_LISTENER as u32 != 0 => Ok(()),
        r if r > 0 => Err(io::Error::other(format!("tsync failed on thread {r}"))),
        _ => Err(io::Error::last_os_error()),
    }
}

/// Puts the calling thread in seccomp strict mode: from then on it may only read, write,
/// exit and return from signals.
pub fn seccomp_strict() -> io::Result<()> {
    prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_STRICT as u64, 0).map(drop)
}

/// The raw getcpu call (the one the attrs mode's seccomp filters answer).
pub fn getcpu() -> io::Result<()> {
    let mut cpu = 0u32;
    // SAFETY: getcpu writes one u32; the node and cache pointers may be null.
    let r = unsafe {
        libc::syscall(
            libc::SYS_getcpu,
            &mut cpu,
            std::ptr::null_mut::<u32>(),
            std::ptr::null_mut::<u8>(),
        )
    };
    cvt(r as libc::c_int).map(drop)
}

/// The raw brk(0): asks for the program break, changes nothing.
pub fn brk0() -> io::Result<()> {
    // SAFETY: brk(0) only reports the current break.
    let r = unsafe { libc::syscall(libc::SYS_brk, 0u64) };
    // The break is an address: only -1 is an error.
    if r == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

pub fn setrlimit(resource: u32, soft: u64, hard: u64) -> io::Result<()> {
    let lim = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: setrlimit reads one rlimit.
    cvt(unsafe { libc::setrlimit(resource as _, &lim) }).map(drop)
}

/// (soft, hard) of a resource limit.
pub fn getrlimit(resource: u32) -> io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit.
    cvt(unsafe { libc::getrlimit(resource as _, &mut lim) })?;
    Ok((lim.rlim_cur, lim.rlim_max))
}

/// arch_prctl(code, arg) with an integer argument: its result.
pub fn arch_prctl(code: i32, arg: u64) -> io::Result<i64> {
    // SAFETY: ARCH_GET_CPUID and ARCH_SET_CPUID take an integer, no pointer.
    let r = unsafe { libc::syscall(libc::SYS_arch_prctl, code, arg) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// A new POSIX message queue `name` (no slash), opened read-write and unlinked at once.
pub fn mq_open_unlinked(name: &str) -> io::Result<i32> {
    let fd = mq_open(name, libc::O_RDWR | libc::O_CREAT | libc::O_EXCL, None)?;
    // The queue lives on while `fd` is open.
    mq_unlink(name)?;
    Ok(fd)
}

/// mq_open(2) of queue `name` (without the leading '/': the system call's form) with `flags`,
/// mode 0640 and `attr` (None: the defaults).
pub fn mq_open(name: &str, flags: i32, attr: Option<&libc::mq_attr>) -> io::Result<i32> {
    let c = std::ffi::CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let attr = attr.map_or(std::ptr::null(), |a| a as *const libc::mq_attr);
    // SAFETY: `c` is NUL-terminated and `attr` null or a valid mq_attr, alive for the call.
    let fd = unsafe { libc::syscall(libc::SYS_mq_open, c.as_ptr(), flags, 0o640, attr) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd as i32)
}

/// mq_unlink(2) of queue `name` (without the leading '/').
pub fn mq_unlink(name: &str) -> io::Result<()> {
    let c = std::ffi::CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: `c` is NUL-terminated, alive for the call.
    if unsafe { libc::syscall(libc::SYS_mq_unlink, c.as_ptr()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A memfd_secret fd.
pub fn memfd_secret() -> io::Result<i32> {
    // SAFETY: flags only.
    let fd = unsafe { libc::syscall(libc::SYS_memfd_secret, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd as i32)
}

/// Sets the NIS domain name of the UTS namespace.
pub fn setdomainname(name: &str) -> io::Result<()> {
    // SAFETY: `name` is a live buffer of the length passed; the kernel copies it.
    cvt(unsafe { libc::setdomainname(name.as_ptr().cast(), name.len()) }).map(drop)
}

/// Sets the umask; returns the previous one.
pub fn umask(mask: u32) -> u32 {
    // SAFETY: numbers only.
    unsafe { libc::umask(mask as libc::mode_t) as u32 }
}

/// Sets the personality (0xffffffff only reads it); returns the previous one.
pub fn personality(persona: u32) -> io::Result<u32> {
    // SAFETY: numbers only.
    cvt(unsafe { libc::personality(persona as libc::c_ulong) }).map(|p| p as u32)
}

/// Becomes `uid`:`gid` with no supplementary groups, in every thread (glibc's wrappers
/// apply credentials to all threads of the process).
pub fn become_user(uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: no groups: a null list of length 0.
    cvt(unsafe { libc::setgroups(0, std::ptr::null()) })?;
    // SAFETY: numbers only.
    cvt(unsafe { libc::setresgid(gid, gid, gid) })?;
    // SAFETY: numbers only.
    cvt(unsafe { libc::setresuid(uid, uid, uid) }).map(drop)
}

pub fn chmod(path: &Path, mode: u32) -> io::Result<()> {
    let p = cpath(path);
    // SAFETY: p is NUL-terminated and outlives the call.
    cvt(unsafe { libc::chmod(p.as_ptr(), mode as libc::mode_t) }).map(drop)
}

/// A prctl getter that writes its answer to an `int *` (PR_GET_PDEATHSIG,
/// PR_GET_CHILD_SUBREAPER).
pub fn prctl_get_int(op: i32) -> io::Result<i32> {
    let mut value: libc::c_int = 0;
    // SAFETY: these getters write one int through their second argument.
    cvt(unsafe { libc::prctl(op, &mut value as *mut libc::c_int, 0u64, 0u64, 0u64) })?;
    Ok(value)
}

/// Installs `handler` for `sig` (SA_RESTART).
pub fn install_handler(sig: i32, handler: extern "C" fn(libc::c_int)) -> io::Result<()> {
    // SAFETY: sigaction is plain data; zeroed is a valid starting value.
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    sa.sa_sigaction = handler as usize;
    sa.sa_flags = libc::SA_RESTART;
    // SAFETY: sa.sa_mask is a valid sigset_t to initialise.
    unsafe { libc::sigemptyset(&mut sa.sa_mask) };
    // SAFETY: sa is fully initialised; the handlers given only touch atomics.
    cvt(unsafe { libc::sigaction(sig, &sa, std::ptr::null_mut()) }).map(drop)
}

/// Sends `sig` to the calling thread.
pub fn raise(sig: i32) -> io::Result<()> {
    // SAFETY: raise takes a signal number.
    cvt(unsafe { libc::raise(sig) }).map(drop)
}

/// Unblocks `sig` in the calling thread.
pub fn unblock_signal(sig: i32) -> io::Result<()> {
    let set = sigset(sig);
    // SAFETY: sigprocmask reads `set`; the old set pointer is null.
    cvt(unsafe { libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()) }).map(drop)
}

/// Whether `sig` is pending for the calling thread or its process.
pub fn signal_pending(sig: i32) -> bool {
    // SAFETY: sigset_t is plain data, filled by sigpending.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: set is a valid sigset_t to write.
    unsafe {
        libc::sigpending(&mut set);
        libc::sigismember(&set, sig) == 1
    }
}

/// membarrier(cmd, 0, 0): its raw result (a mask for MEMBARRIER_CMD_GET_REGISTRATIONS).
pub fn membarrier(cmd: u32) -> io::Result<i64> {
    // SAFETY: membarrier takes integers only.
    let r = unsafe { libc::syscall(libc::SYS_membarrier, cmd, 0u32, 0i32) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// `len` bytes of fresh anonymous memory (shared or private) filled with `fill`, named `name`
/// with prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME); returns its address, and whether the kernel
/// could name it (EINVAL: built without CONFIG_ANON_VMA_NAME).
pub fn named_anon(len: usize, shared: bool, fill: u8, name: &str) -> io::Result<(usize, bool)> {
    const PR_SET_VMA: i32 = 0x53564d41;
    const PR_SET_VMA_ANON_NAME: u64 = 0;
    let visibility = if shared {
        libc::MAP_SHARED
    } else {
        libc::MAP_PRIVATE
    };
    let c = std::ffi::CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: a fresh anonymous mapping; no existing memory is affected.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            visibility | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: p..p+len was just mapped read-write, and is ours alone.
    unsafe { std::ptr::write_bytes(p.cast::<u8>(), fill, len) };
    // SAFETY: the name is a NUL-terminated string that lives across the call.
    let named = unsafe {
        libc::prctl(
            PR_SET_VMA,
            PR_SET_VMA_ANON_NAME,
            p as u64,
            len as u64,
            c.as_ptr(),
        )
    };
    match cvt(named) {
        Ok(_) => Ok((p as usize, true)),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok((p as usize, false)),
        Err(e) => Err(e),
    }
}

/// Whether every byte of `addr..addr+len` (a mapping of ours) is `fill`.
pub fn all_bytes(addr: usize, len: usize, fill: u8) -> bool {
    // SAFETY: the caller mapped addr..addr+len readable and keeps it mapped.
    let bytes = unsafe { std::slice::from_raw_parts(addr as *const u8, len) };
    bytes.iter().all(|&b| b == fill)
}

thread_local! {
    /// The calling thread's syscall user dispatch selector: 0 ALLOW, 1 BLOCK.
    static DISPATCH_SELECTOR: std::sync::atomic::AtomicU8 = const { std::sync::atomic::AtomicU8::new(0) };
}

/// How many system calls syscall user dispatch turned into SIGSYS.
pub static DISPATCHED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// The SIGSYS of a dispatched call: counted, and the selector set to ALLOW so the return
/// from the handler (rt_sigreturn, outside the allowed range) is not dispatched in turn.
extern "C" fn on_dispatched(_sig: libc::c_int) {
    DISPATCHED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    DISPATCH_SELECTOR.with(|s| s.store(0, std::sync::atomic::Ordering::SeqCst));
}

/// Turns syscall user dispatch on in the calling thread (PR_SET_SYSCALL_USER_DISPATCH), its
/// selector the thread's own byte, only the calls made through libc's `syscall()` exempt;
/// SIGSYS is counted in [`DISPATCHED`].
pub fn dispatch_on() -> io::Result<()> {
    const PR_SET_SYSCALL_USER_DISPATCH: i32 = 59;
    const PR_SYS_DISPATCH_ON: u64 = 1;
    install_handler(libc::SIGSYS, on_dispatched)?;
    let exempt = libc::syscall as *const () as u64;
    let selector = DISPATCH_SELECTOR.with(|s| s.as_ptr() as u64);
    // SAFETY: the selector is this thread's own byte, alive as long as the thread; the
    // exempt range is code of libc's syscall().
    cvt(unsafe {
        libc::prctl(
            PR_SET_SYSCALL_USER_DISPATCH,
            PR_SYS_DISPATCH_ON,
            exempt,
            64u64,
            selector,
        )
    })
    .map(drop)
}

/// Sets the calling thread's selector: BLOCK (every call outside libc's `syscall()` raises
/// SIGSYS) or ALLOW.
pub fn dispatch_block(block: bool) {
    DISPATCH_SELECTOR.with(|s| s.store(u8::from(block), std::sync::atomic::Ordering::SeqCst));
}

/// read(2) and write(2) through libc's `syscall()`, exempt from dispatch.
pub fn exempt_read(fd: i32, buf: &mut [u8]) -> i64 {
    // SAFETY: buf is ours and writable for its length.
    unsafe { libc::syscall(libc::SYS_read, fd, buf.as_mut_ptr(), buf.len()) }
}

pub fn exempt_write(fd: i32, buf: &[u8]) -> i64 {
    // SAFETY: buf is ours and readable for its length.
    unsafe { libc::syscall(libc::SYS_write, fd, buf.as_ptr(), buf.len()) }
}

/// Installs one 32-bit data segment as entry 0 of the process's LDT (modify_ldt(1)).
pub fn ldt_entry() -> io::Result<()> {
    // struct user_desc: entry_number, base_addr, limit, then the flag bits: seg_32bit (bit 0),
    // limit_in_pages (bit 4).
    let desc: [u32; 4] = [0, 0, 0xfffff, 0x11];
    // SAFETY: desc is a live user_desc of the size given.
    let r = unsafe { libc::syscall(libc::SYS_modify_ldt, 1, desc.as_ptr(), 16usize) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// set_mempolicy(MPOL_BIND, node 0) for the calling thread.
pub fn bind_thread_to_node0() -> io::Result<()> {
    const MPOL_BIND: i32 = 2;
    let mask: u64 = 1;
    // SAFETY: mask is a live nodemask of 64 bits, as maxnode says.
    let r = unsafe {
        libc::syscall(
            libc::SYS_set_mempolicy,
            MPOL_BIND,
            &mask as *const u64,
            64u64,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Two fresh pages of anonymous memory bound to node 0 with mbind(MPOL_BIND).
pub fn bound_mapping() -> io::Result<usize> {
    const MPOL_BIND: i32 = 2;
    let addr = mmap_anon(2 * 4096)? as usize;
    let mask: u64 = 1;
    // SAFETY: addr..addr+2 pages is our fresh mapping; mask is a live 64-bit nodemask.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mbind,
            addr,
            2 * 4096usize,
            MPOL_BIND,
            &mask as *const u64,
            64u64,
            0u32,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(addr)
    }
}

/// keyctl(2) operations and special keyrings (linux/keyctl.h) the keyring settings use.
const KEYCTL_GET_KEYRING_ID: libc::c_long = 0;
const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
const KEYCTL_SETPERM: libc::c_long = 5;
const KEYCTL_DESCRIBE: libc::c_long = 6;
const KEYCTL_READ: libc::c_long = 11;
pub const KEY_SPEC_THREAD_KEYRING: i32 = -1;
pub const KEY_SPEC_PROCESS_KEYRING: i32 = -2;
pub const KEY_SPEC_SESSION_KEYRING: i32 = -3;
pub const KEY_SPEC_USER_SESSION_KEYRING: i32 = -5;

/// The serial of special keyring `spec` of this thread, made if `create`.
pub fn keyring_id(spec: i32, create: bool) -> io::Result<i32> {
    // SAFETY: integer arguments only.
    let r = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_GET_KEYRING_ID,
            spec as libc::c_long,
            create as libc::c_long,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r as i32)
}

/// Joins a new anonymous session keyring (this thread) with permissions `perm` (if given).
pub fn join_new_session_keyring(perm: Option<u32>) -> io::Result<()> {
    // SAFETY: a null name asks for a new anonymous keyring.
    let id = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_JOIN_SESSION_KEYRING,
            std::ptr::null::<libc::c_char>(),
        )
    };
    if id < 0 {
        return Err(io::Error::last_os_error());
    }
    if let Some(perm) = perm {
        // SAFETY: integer arguments only.
        if unsafe { libc::syscall(libc::SYS_keyctl, KEYCTL_SETPERM, id, perm as libc::c_long) } < 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Joins (makes) the session keyring named `name` (this thread).
pub fn join_session_keyring(name: &str) -> io::Result<()> {
    let name = CString::new(name)?;
    // SAFETY: a live NUL-terminated name.
    let id = unsafe { libc::syscall(libc::SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, name.as_ptr()) };
    if id < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Adds a key of type `ty` ("user", "logon") `desc` holding `payload` to this thread's
/// session keyring.
pub fn add_key(ty: &str, desc: &str, payload: &[u8]) -> io::Result<i32> {
    let (ty, desc) = (CString::new(ty)?, CString::new(desc)?);
    // SAFETY: live NUL-terminated strings and a payload of the length given.
    let r = unsafe {
        libc::syscall(
            libc::SYS_add_key,
            ty.as_ptr(),
            desc.as_ptr(),
            payload.as_ptr(),
            payload.len(),
            KEY_SPEC_SESSION_KEYRING as libc::c_long,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r as i32)
}

/// Makes key `serial` expire `secs` seconds from now (KEYCTL_SET_TIMEOUT).
pub fn set_key_timeout(serial: i32, secs: u32) -> io::Result<()> {
    const KEYCTL_SET_TIMEOUT: libc::c_long = 15;
    // SAFETY: integer arguments only.
    let r = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_SET_TIMEOUT,
            serial as libc::c_long,
            secs as libc::c_long,
        )
    };
    cvt(r as i32).map(drop)
}

/// The keys (serials) keyring `spec` links, and each one's KEYCTL_DESCRIBE and payload.
pub fn keys_of(spec: i32) -> io::Result<Vec<(String, Vec<u8>)>> {
    let read = |id: i32, buf: &mut [u8]| -> io::Result<usize> {
        // SAFETY: the kernel writes at most buf.len() bytes into the live buffer.
        let n = unsafe {
            libc::syscall(
                libc::SYS_keyctl,
                KEYCTL_READ,
                id as libc::c_long,
                buf.as_mut_ptr(),
                buf.len(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    };
    let mut list = vec![0u8; 1024];
    let n = read(spec, &mut list)?;
    let mut keys = Vec::new();
    for id in list[..n.min(list.len())].chunks_exact(4) {
        let id = i32::from_ne_bytes([id[0], id[1], id[2], id[3]]);
        let (text, _) = describe_keyring(id)?;
        let mut payload = vec![0u8; 4096];
        let len = read(id, &mut payload)?;
        payload.truncate(len);
        keys.push((text, payload));
    }
    Ok(keys)
}

/// KEYCTL_DESCRIBE of keyring `spec` ("type;uid;gid;perm;description") and how many keys it
/// links.
pub fn describe_keyring(spec: i32) -> io::Result<(String, usize)> {
    let mut buf = vec![0u8; 256];
    // SAFETY: the kernel writes at most buf.len() bytes into the live buffer.
    let n = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_DESCRIBE,
            spec as libc::c_long,
            buf.as_mut_ptr(),
            buf.len(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let text = CStr::from_bytes_until_nul(&buf)
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?
        .to_string_lossy()
        .into_owned();
    // SAFETY: a null buffer of length 0: the kernel only answers the length it needs.
    let len = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_READ,
            spec as libc::c_long,
            std::ptr::null_mut::<u8>(),
            0usize,
        )
    };
    if len < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((text, len as usize / 4))
}

/// `struct landlock_ruleset_attr` (linux/landlock.h, ABI 6).
#[repr(C)]
struct LandlockRulesetAttr {
    handled_access_fs: u64,
    handled_access_net: u64,
    scoped: u64,
}

/// `struct landlock_path_beneath_attr` (packed in linux/landlock.h).
#[repr(C, packed)]
struct LandlockPathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

/// Confines the calling thread in a new Landlock domain (no_new_privs set first) that
/// handles reading files (LANDLOCK_ACCESS_FS_READ_FILE), allowed only beneath each of
/// `readable`; `scoped`: LANDLOCK_SCOPE_* bits; `flags`: landlock_restrict_self's.
pub fn landlock(readable: &[&str], scoped: u64, flags: u32) -> io::Result<()> {
    const READ_FILE: u64 = 1 << 2;
    const RULE_PATH_BENEATH: libc::c_long = 1;
    let attr = LandlockRulesetAttr {
        handled_access_fs: READ_FILE,
        handled_access_net: 0,
        scoped,
    };
    // SAFETY: the kernel reads `attr`, alive for the call, of the size given.
    let ruleset = cvt(unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            &attr as *const LandlockRulesetAttr,
            std::mem::size_of::<LandlockRulesetAttr>(),
            0u32,
        )
    } as libc::c_int)?;
    let result = (|| {
        for path in readable {
            let dir = std::ffi::CString::new(*path).map_err(io::Error::other)?;
            // SAFETY: a NUL-terminated path of ours.
            let fd = cvt(unsafe { libc::open(dir.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) })?;
            let beneath = LandlockPathBeneathAttr {
                allowed_access: READ_FILE,
                parent_fd: fd,
            };
            // SAFETY: the kernel reads `beneath`, alive for the call.
            let added = cvt(unsafe {
                libc::syscall(
                    libc::SYS_landlock_add_rule,
                    ruleset,
                    RULE_PATH_BENEATH,
                    &beneath as *const LandlockPathBeneathAttr,
                    0u32,
                )
            } as libc::c_int);
            close(fd);
            added?;
        }
        prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0)?;
        // SAFETY: a ruleset fd and flags.
        cvt(
            unsafe { libc::syscall(libc::SYS_landlock_restrict_self, ruleset, flags) }
                as libc::c_int,
        )
        .map(drop)
    })();
    close(ruleset);
    result
}

/// Makes `/` and every mount below it private in the calling process's mount namespace (one
/// of its own): its mounts from now on stay its own, none goes back to the host's.
pub fn make_mounts_private() -> io::Result<()> {
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(io::Error::from)
}

/// The inode of the network namespace socket `fd` was made in (SIOCGSKNS).
pub fn socket_netns(fd: i32) -> io::Result<u64> {
    const SIOCGSKNS: libc::c_ulong = 0x894C;
    // SAFETY: SIOCGSKNS takes no argument and answers a new fd, closed below.
    let ns = cvt(unsafe { libc::ioctl(fd, SIOCGSKNS) })?;
    // SAFETY: `ns` is the fd the ioctl just made, owned here.
    let ns = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(ns) };
    Ok(std::os::unix::fs::MetadataExt::ino(&ns.metadata()?))
}

/// What fd `fd` shows of its inode: `<uid> <gid> <mode, octal> <atime ns> <mtime ns>
/// flags=<FS_IOC_GETFLAGS, hex, or -> <name>=<value, hex>...` (its extended attributes in
/// listxattr's order, read through /proc/self/fd/N: an O_PATH fd's too).
pub fn inode_line(fd: i32) -> io::Result<String> {
    use std::os::unix::fs::MetadataExt;
    let link = std::ffi::CString::new(format!("/proc/self/fd/{fd}")).expect("no NUL");
    let meta = std::fs::metadata(format!("/proc/self/fd/{fd}"))?;
    let mut flags: libc::c_long = 0;
    // SAFETY: FS_IOC_GETFLAGS writes one long through the pointer, which points at `flags`.
    let flags = match unsafe { libc::ioctl(fd, 0x8008_6601, &mut flags as *mut libc::c_long) } {
        0 => format!("{flags:#x}"),
        _ => "-".to_string(),
    };
    let mut line = format!(
        "{} {} {:o} {} {} flags={flags}",
        meta.uid(),
        meta.gid(),
        meta.mode() & 0o7777,
        meta.atime() * 1_000_000_000 + meta.atime_nsec(),
        meta.mtime() * 1_000_000_000 + meta.mtime_nsec()
    );
    let mut names = vec![0u8; 65536];
    // SAFETY: `link` is NUL-terminated; `names` has the length given.
    let len = unsafe { libc::listxattr(link.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    let len = usize::try_from(len).map_err(|_| io::Error::last_os_error())?;
    for name in names[..len].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let c = std::ffi::CString::new(name).expect("no NUL");
        let mut value = vec![0u8; 65536];
        // SAFETY: `link` and `c` are NUL-terminated; `value` has the length given.
        let n = unsafe {
            libc::getxattr(
                link.as_ptr(),
                c.as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
        let hex: String = value[..n].iter().map(|b| format!("{b:02x}")).collect();
        line.push_str(&format!(" {}={hex}", String::from_utf8_lossy(name)));
    }
    Ok(line)
}
