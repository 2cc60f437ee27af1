//! Process-level system calls: clone3 with a chosen pid, pidfds, robust lists, rlimits,
//! cross-process memory reads.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

use nix::unistd::Pid;

fn cvt(r: libc::c_long) -> io::Result<libc::c_long> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// The kernel's struct clone_args (version 2, with set_tid; CLONE_ARGS_SIZE_VER2, 88 bytes).
#[repr(C)]
#[derive(Default)]
pub(crate) struct CloneArgs {
    pub(crate) flags: u64,
    pub(crate) pidfd: u64,
    pub(crate) child_tid: u64,
    pub(crate) parent_tid: u64,
    pub(crate) exit_signal: u64,
    pub(crate) stack: u64,
    pub(crate) stack_size: u64,
    pub(crate) tls: u64,
    pub(crate) set_tid: u64,
    pub(crate) set_tid_size: u64,
    pub(crate) cgroup: u64,
}

/// Which side of [`fork_with_pid`] we are on.
pub enum Forked {
    /// In the parent: the child's pid.
    Parent(Pid),
    /// In the child.
    Child,
}

/// Forks this (single-threaded) process into a child with pid `pid` (clone3 with set_tid).
///
/// The caller must be single-threaded: the child runs ordinary Rust code.
///
/// EEXIST is retried for a moment: a pid number stays allocated a little after its process
/// is gone from /proc (the kernel frees it after dropping tasklist_lock), and as long as a
/// dying process still has it as its process group or session id.
pub fn fork_with_pid(pid: Pid) -> io::Result<Forked> {
    const PATIENCE: std::time::Duration = std::time::Duration::from_secs(2);
    let tid: libc::pid_t = pid.as_raw();
    let args = CloneArgs {
        exit_signal: libc::SIGCHLD as u64,
        set_tid: &tid as *const libc::pid_t as u64,
        set_tid_size: 1,
        ..Default::default()
    };
    let started = std::time::Instant::now();
    loop {
        match clone3(&args) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) && started.elapsed() < PATIENCE => {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            done => return done,
        }
    }
}

/// clone3 without CLONE_VM: a fork, shaped by `args`.
fn clone3(args: &CloneArgs) -> io::Result<Forked> {
    // SAFETY: clone3 without CLONE_VM behaves like fork: the child gets a copy of our address
    // space and continues here with a return value of 0; `args` and what it points to (a
    // set_tid array on the caller's stack) outlive the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match cvt(r)? {
        0 => Ok(Forked::Child),
        child => Ok(Forked::Parent(Pid::from_raw(child as i32))),
    }
}

/// Forks this (single-threaded) process into a child that is the first process of new
/// namespaces (`flags`: CLONE_NEWPID, CLONE_NEWNET).
pub fn fork_into_namespaces(flags: u64) -> io::Result<Forked> {
    clone3(&CloneArgs {
        flags,
        exit_signal: libc::SIGCHLD as u64,
        ..Default::default()
    })
}

/// Brings the loopback interface of the calling process's network namespace up.
pub fn loopback_up() -> io::Result<()> {
    // SAFETY: a plain datagram socket, closed below; used only for interface ioctls.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if sock < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd; we own it.
    let sock = unsafe { OwnedFd::from_raw_fd(sock) };
    // SAFETY: ifreq is plain data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    let fd = std::os::fd::AsRawFd::as_raw_fd(&sock);
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq we own.
    unsafe {
        if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(fd, libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// A pidfd for `pid`.
pub fn pidfd_open(pid: Pid) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes plain integers.
    let fd = cvt(unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) })?;
    // SAFETY: the kernel just gave us this fd; nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// The robust futex list head and length of thread `tid`.
pub fn get_robust_list(tid: Pid) -> io::Result<(u64, u64)> {
    let mut head: u64 = 0;
    let mut len: libc::size_t = 0;
    // SAFETY: the kernel writes one pointer and one size_t into our locals.
    cvt(unsafe {
        libc::syscall(
            libc::SYS_get_robust_list,
            tid.as_raw(),
            &mut head as *mut u64,
            &mut len as *mut libc::size_t,
        )
    })?;
    Ok((head, len as u64))
}

/// One resource limit of `pid` (get), or set it when `new` is given.
pub fn prlimit(pid: Pid, resource: u32, new: Option<(u64, u64)>) -> io::Result<(u64, u64)> {
    let new_lim = new.map(|(cur, max)| libc::rlimit64 {
        rlim_cur: cur,
        rlim_max: max,
    });
    let mut old = libc::rlimit64 {
        rlim_cur: 0,
        rlim_max: 0,
    };
    let new_ptr = new_lim
        .as_ref()
        .map_or(std::ptr::null(), |l| l as *const libc::rlimit64);
    // SAFETY: new_ptr is null or points at a local rlimit64; old is a local the kernel fills.
    cvt(unsafe {
        libc::syscall(
            libc::SYS_prlimit64,
            pid.as_raw(),
            resource,
            new_ptr,
            &mut old as *mut libc::rlimit64,
        )
    })?;
    Ok((old.rlim_cur, old.rlim_max))
}

/// Copies `len` bytes at `remote` in `pid` to `local` (process_vm_readv, many ranges per call).
/// Returns how many bytes were copied (short at the first unreadable page).
pub fn vm_read(pid: Pid, ranges: &[(u64, *mut u8, usize)]) -> io::Result<usize> {
    let mut total = 0usize;
    // IOV_MAX per call.
    for chunk in ranges.chunks(1024) {
        let local: Vec<libc::iovec> = chunk
            .iter()
            .map(|&(_, ptr, len)| libc::iovec {
                iov_base: ptr.cast(),
                iov_len: len,
            })
            .collect();
        let remote: Vec<libc::iovec> = chunk
            .iter()
            .map(|&(addr, _, len)| libc::iovec {
                iov_base: addr as *mut libc::c_void,
                iov_len: len,
            })
            .collect();
        let want: usize = chunk.iter().map(|r| r.2).sum();
        // SAFETY: every local iovec points into memory the caller owns and sized by it; the
        // remote ones are only read by the kernel from the other process.
        let n = unsafe {
            libc::process_vm_readv(
                pid.as_raw(),
                local.as_ptr(),
                local.len() as libc::c_ulong,
                remote.as_ptr(),
                remote.len() as libc::c_ulong,
                0,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        total += n as usize;
        if (n as usize) < want {
            break;
        }
    }
    Ok(total)
}

/// Closes every fd from `first` up.
pub fn close_from(first: u32) -> io::Result<()> {
    // SAFETY: close_range takes integers; the caller owns no OwnedFd in this range (it is the
    // restore child dropping what it inherited).
    cvt(unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, 0) })?;
    Ok(())
}
