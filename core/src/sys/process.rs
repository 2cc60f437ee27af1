//! Process-level system calls: clone3 (a chosen pid, new namespaces), what a child forked
//! from a multi-threaded cryo may still do, robust lists, rlimits, cross-process memory.

use std::io;

use nix::unistd::Pid;

use super::{check as cvt, owned_fd};

/// The kernel's struct clone_args (version 2, with set_tid; CLONE_ARGS_SIZE_VER2, 88 bytes).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// How long a pid still held by a dying process (the dumped one, killed) is waited for.
const PATIENCE: std::time::Duration = std::time::Duration::from_secs(2);

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
    fork_with_pid_sharing(pid, 0)
}

/// [`fork_with_pid`], the child sharing what `share` says with this process (CLONE_FILES:
/// the fd table, CLONE_FS: working directory, root and umask), or in a new user namespace
/// (CLONE_NEWUSER: its pid is still given here, where this process has the capability), or
/// a child of this process's parent (CLONE_PARENT).
pub fn fork_with_pid_sharing(pid: Pid, share: u64) -> io::Result<Forked> {
    clone_with_pid(pid, sharing(share))
}

/// clone3 of `args` with pid `pid` (set_tid), EEXIST retried for a moment (see
/// [`fork_with_pid`]).
fn clone_with_pid(pid: Pid, args: CloneArgs) -> io::Result<Forked> {
    let tid: libc::pid_t = pid.as_raw();
    let args = CloneArgs {
        set_tid: &tid as *const libc::pid_t as u64,
        set_tid_size: 1,
        ..args
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

/// [`fork_with_pid_sharing`] without choosing the pid: the next one the PID namespace hands
/// out (for a process that may not choose it: see [`LastPid`]).
pub fn fork_sharing(share: u64) -> io::Result<Forked> {
    clone3(&sharing(share))
}

/// The clone_args of a fork sharing what `share` says (CLONE_FILES, CLONE_FS, CLONE_NEWUSER,
/// CLONE_NEWIPC, CLONE_NEWNET, CLONE_PARENT; nothing else of it is taken).
fn sharing(share: u64) -> CloneArgs {
    CloneArgs {
        flags: share
            & (libc::CLONE_FILES
                | libc::CLONE_FS
                | libc::CLONE_NEWUSER
                | libc::CLONE_NEWIPC
                | libc::CLONE_NEWNET
                | libc::CLONE_PARENT) as u64,
        // A sibling (CLONE_PARENT) signals its parent as the caller does: clone3 takes no
        // signal of its own with it.
        exit_signal: if share & libc::CLONE_PARENT as u64 != 0 {
            0
        } else {
            libc::SIGCHLD as u64
        },
        ..Default::default()
    }
}

/// A plain fork through clone3 (no glibc fork handlers run). From a multi-threaded process,
/// the child may only make raw system calls: [`park_child`], [`exit_child`].
pub fn fork() -> io::Result<Forked> {
    fork_into_namespaces(0)
}

/// The pid of the process that made the last fork, as it saw itself: the child's copy is
/// what its getppid() says while that parent lives ([`die_with_parent`]).
static FORKED_BY: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// In a child of [`fork_with_pid`] (single-threaded): sets its real, effective and saved
/// gids, then uids, by the raw calls. glibc's wrappers make every thread it knows of change
/// too, and the thread list this child inherited from cryo names cryo's other threads: one
/// that was being started at the fork (the pid broker's) is waited for forever.
pub fn set_own_ids(gids: [u32; 3], uids: [u32; 3]) -> io::Result<()> {
    let [rg, eg, sg] = gids;
    let [ru, eu, su] = uids;
    // SAFETY: setresgid and setresuid take plain integers, no pointers.
    let set = unsafe {
        libc::syscall(libc::SYS_setresgid, rg, eg, sg) == 0
            && libc::syscall(libc::SYS_setresuid, ru, eu, su) == 0
    };
    if set {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// In a child of [`fork_with_pid`] or [`fork_into_namespaces`]: dies (SIGKILL) when its
/// parent does, and at once if the parent is already gone. A process of a restore that
/// cryo has not traced yet thus never outlives a killed cryo (PR_SET_PDEATHSIG, which the
/// restore sets to the dumped value later).
pub fn die_with_parent() {
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
    let parent = FORKED_BY.load(std::sync::atomic::Ordering::Relaxed);
    if nix::unistd::getppid().as_raw() != parent {
        exit_child(1);
    }
}

/// clone3 without CLONE_VM: a fork, shaped by `args`.
fn clone3(args: &CloneArgs) -> io::Result<Forked> {
    // The parent as the child sees it: from a new PID namespace's init, the parent is
    // outside, getppid() 0 (PR_SET_PDEATHSIG still covers its death from then on).
    let parent = if args.flags & libc::CLONE_NEWPID as u64 != 0 {
        0
    } else if args.flags & libc::CLONE_PARENT as u64 != 0 {
        // A sibling of the caller: its parent is the caller's.
        nix::unistd::getppid().as_raw()
    } else {
        nix::unistd::getpid().as_raw()
    };
    FORKED_BY.store(parent, std::sync::atomic::Ordering::Relaxed);
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

/// A process of cryo's holding a pid of another process's PID namespace, in that process's
/// mount namespace under its root, until dropped (killed and reaped): what the other process
/// opens of /proc/PID meanwhile names a process that ends, as one it held open of a process
/// gone since did at dump (a mountinfo read through it shows the mount namespace it had).
pub struct PidHolder {
    pid: Pid,
}

impl PidHolder {
    /// Forks the holder of pid `pid` of the PID namespace of process `of` (clone3 with set_tid
    /// from this thread, its children's PID namespace set to that one for the fork and back);
    /// returns once it is in `of`'s mount namespace and root. From the thread that traces
    /// `of` (a long-lived one: the holder dies with it).
    pub fn new(of: Pid, pid: Pid) -> io::Result<Self> {
        use std::os::fd::AsRawFd;
        let open = |path: String, flags: i32| {
            nix::fcntl::open(
                path.as_str(),
                nix::fcntl::OFlag::from_bits_retain(flags | libc::O_CLOEXEC),
                nix::sys::stat::Mode::empty(),
            )
            .map_err(io::Error::from)
        };
        let pid_ns = open(format!("/proc/{of}/ns/pid"), libc::O_RDONLY)?;
        let mount_ns = open(format!("/proc/{of}/ns/mnt"), libc::O_RDONLY)?;
        let root = open(format!("/proc/{of}/root"), libc::O_PATH | libc::O_DIRECTORY)?;
        let own_pid_ns = open(
            "/proc/thread-self/ns/pid_for_children".into(),
            libc::O_RDONLY,
        )?;
        let (ready_read, ready_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        nix::sched::setns(&pid_ns, nix::sched::CloneFlags::CLONE_NEWPID)?;
        let forked = fork_with_pid(pid);
        let back = nix::sched::setns(&own_pid_ns, nix::sched::CloneFlags::CLONE_NEWPID);
        match forked {
            Ok(Forked::Child) => {
                // Raw system calls only: cryo may have other threads. Failing, the errno
                // goes up the pipe; done, a 0.
                // SAFETY: setns, fchdir and chroot take fds and a static C string.
                let errno = unsafe {
                    let done = libc::setns(mount_ns.as_raw_fd(), libc::CLONE_NEWNS) == 0
                        && libc::fchdir(root.as_raw_fd()) == 0
                        && libc::chroot(c".".as_ptr()) == 0;
                    if done {
                        0
                    } else {
                        *libc::__errno_location()
                    }
                };
                let _ = super::spawn::write_raw(ready_write.as_raw_fd(), &errno.to_ne_bytes());
                if errno != 0 {
                    exit_child(1);
                }
                // Its parent is outside its PID namespace: getppid() says 0 while it lives,
                // the namespace's reaper once it is gone.
                let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
                if nix::unistd::getppid().as_raw() != 0 {
                    exit_child(1);
                }
                loop {
                    nix::unistd::pause();
                }
            }
            Ok(Forked::Parent(child)) => {
                let holder = PidHolder { pid: child };
                back?;
                drop(ready_write);
                let mut errno = [0u8; 4];
                let got = nix::unistd::read(&ready_read, &mut errno)?;
                match (got, i32::from_ne_bytes(errno)) {
                    (4, 0) => Ok(holder),
                    (4, e) => Err(io::Error::from_raw_os_error(e)),
                    _ => Err(io::Error::other(
                        "the pid's holder ended before it was ready",
                    )),
                }
            }
            Err(e) => {
                back?;
                Err(e)
            }
        }
    }
}

impl Drop for PidHolder {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(self.pid, nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(self.pid, None);
    }
}

/// Brings the loopback interface of the calling process's network namespace up.
pub fn loopback_up() -> io::Result<()> {
    // SAFETY: a plain datagram socket, closed on drop; used only for interface ioctls.
    let sock = owned_fd(libc::c_long::from(unsafe {
        libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0)
    }))?;
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

/// Reads `buf.len()` bytes at `addr` of process `pid` (process_vm_readv); returns how many
/// were read (short at the first unreadable page).
pub fn vm_read(pid: Pid, addr: u64, buf: &mut [u8]) -> io::Result<usize> {
    let remote = [nix::sys::uio::RemoteIoVec {
        base: addr as usize,
        len: buf.len(),
    }];
    Ok(nix::sys::uio::process_vm_readv(
        pid,
        &mut [io::IoSliceMut::new(buf)],
        &remote,
    )?)
}

/// Writes `data` at `addr` of process `pid` (process_vm_writev); returns how many bytes were
/// written.
pub fn vm_write(pid: Pid, addr: u64, data: &[u8]) -> io::Result<usize> {
    let remote = [nix::sys::uio::RemoteIoVec {
        base: addr as usize,
        len: data.len(),
    }];
    Ok(nix::sys::uio::process_vm_writev(
        pid,
        &[io::IoSlice::new(data)],
        &remote,
    )?)
}

/// Closes every fd from `first` up.
pub fn close_from(first: u32) -> io::Result<()> {
    super::fd::close_range(first, u32::MAX)
}

/// In a child forked from a (possibly multi-threaded) cryo: dies with the thread that forked
/// it, exits at once if that is already gone, and otherwise waits for signals forever. Only
/// raw system calls: nothing that could take a lock another thread held at the fork.
pub fn park_child(parent: Pid) -> ! {
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
    if nix::unistd::getppid() != parent {
        exit_child(1);
    }
    loop {
        nix::unistd::pause();
    }
}

/// Sets the filesystem group and user ids of the calling thread only (the raw setfsgid and
/// setfsuid: credentials are per thread in the kernel), named as its user namespace names
/// them; an id the caller may not take leaves that one as it was (as the calls do).
pub fn set_thread_fs_ids(uid: u32, gid: u32) {
    // SAFETY: setfsgid and setfsuid take ids, no pointers, and change this thread only.
    unsafe {
        libc::syscall(libc::SYS_setfsgid, libc::c_long::from(gid));
        libc::syscall(libc::SYS_setfsuid, libc::c_long::from(uid));
    }
}

/// Sets the effective group id of the calling thread only (the raw setresgid, real and saved
/// ones unchanged; glibc's wrapper would change every thread).
pub fn set_thread_effective_gid(gid: u32) -> io::Result<()> {
    let keep: libc::c_long = -1;
    // SAFETY: setresgid takes ids, no pointers, and changes this thread only.
    cvt(unsafe { libc::syscall(libc::SYS_setresgid, keep, libc::c_long::from(gid), keep) })
        .map(drop)
}

/// Sets the effective user id of the calling thread only (the raw setresuid, as
/// [`set_thread_effective_gid`]).
fn set_thread_effective_uid(uid: u32) -> io::Result<()> {
    let keep: libc::c_long = -1;
    // SAFETY: setresuid takes ids, no pointers, and changes this thread only.
    cvt(unsafe { libc::syscall(libc::SYS_setresuid, keep, libc::c_long::from(uid), keep) })
        .map(drop)
}

/// In a forked child: exits at once with `code` (no atexit handlers, no flushing).
pub fn exit_child(code: i32) -> ! {
    // SAFETY: _exit ends the process without touching any state shared with the parent.
    unsafe { libc::_exit(code) }
}

/// Ends this forked process the way wait status `status` says (exit code or signal), as a
/// dumped process died: a zombie of the image, the process behind a pidfd of an exited one.
/// Only async-signal-safe calls: the parent may have threads.
pub fn exit_as(status: i32) -> ! {
    end_as(status, None)
}

/// [`exit_as`] with signal mask `blocked` set last, as a zombie's /proc shows it (its death
/// signal left out: a blocked one would not kill).
pub fn exit_as_blocking(status: i32, blocked: u64) -> ! {
    end_as(status, Some(blocked))
}

fn end_as(status: i32, blocked: Option<u64>) -> ! {
    let sig = status & 0x7f;
    if sig != 0 {
        // No core dump (a file, or a core_pattern handler): only the status is wanted.
        // SAFETY: PR_SET_DUMPABLE takes integers, no pointers.
        unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
        let _ = super::signal::set_action(sig as u32, &Default::default());
        let _ = super::signal::set_mask(blocked.unwrap_or(0) & !(1u64 << (sig - 1)));
        // SAFETY: kill takes a pid and a signal number, no pointers.
        unsafe { libc::kill(libc::getpid(), sig) };
    } else if let Some(blocked) = blocked {
        let _ = super::signal::set_mask(blocked);
    }
    exit_child((status >> 8) & 0xff)
}

/// The last pid handed out in cryo's PID namespace (/proc/sys/kernel/ns_last_pid), held
/// under an exclusive flock while it lives, so that cryos restoring at once never interleave
/// one's write with another's clone. For a process that may not choose its pids itself
/// (clone3 set_tid needs CAP_CHECKPOINT_RESTORE over the PID namespace): cryo sets the last
/// pid, the process clones, and gets the next one unless something else took it between.
pub struct LastPid {
    file: nix::fcntl::Flock<std::fs::File>,
    /// The last pid when the lock was taken, put back when it is let go ([`Drop`]).
    found: Option<i32>,
}

impl LastPid {
    /// Opens ns_last_pid and takes its lock (waiting for another cryo to let it go).
    pub fn lock() -> io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/proc/sys/kernel/ns_last_pid")?;
        let file = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, errno)| io::Error::from(errno))?;
        let found = Self::read(&file);
        Ok(Self { file, found })
    }

    fn read(file: &std::fs::File) -> Option<i32> {
        use std::os::unix::fs::FileExt;
        let mut text = [0u8; 16];
        let len = file.read_at(&mut text, 0).ok()?;
        std::str::from_utf8(&text[..len]).ok()?.trim().parse().ok()
    }

    /// Makes `pid` the next pid handed out, if it is free when the next process is made: a
    /// process still holding it (the dumped one, dying) is waited for a moment first. One
    /// that holds it longer is named in the error: a clone now would only take the next free
    /// pid, which may be one another restore is about to need.
    pub fn set_next(&self, pid: Pid) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        let started = std::time::Instant::now();
        while nix::sys::signal::kill(pid, None).is_ok() {
            if started.elapsed() >= PATIENCE {
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                return Err(io::Error::other(format!(
                    "pid {pid} is taken by {} (still after {PATIENCE:?})",
                    comm.trim_end()
                )));
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let text = (pid.as_raw() - 1).to_string();
        self.file.write_all_at(text.as_bytes(), 0)
    }
}

impl Drop for LastPid {
    /// Puts the last pid back where it was, if cryo's writes left it lower: else every
    /// process made afterwards, anywhere in the namespace, takes the pids just above the one
    /// restored, freed a moment ago (a dumped process's, another restore's to come).
    fn drop(&mut self) {
        use std::os::unix::fs::FileExt;
        if let (Some(found), Some(now)) = (self.found, Self::read(&self.file)) {
            if now < found {
                let _ = self.file.write_all_at(found.to_string().as_bytes(), 0);
            }
        }
    }
}

/// The ids a system call that stamps credentials on an object (a unix socket's listen,
/// connect, socketpair) is issued under: the effective uid and gid and the supplementary
/// groups, as this process's user namespace names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallIds {
    /// The effective uid.
    pub uid: u32,
    /// The effective gid.
    pub gid: u32,
    /// The supplementary groups.
    pub groups: Vec<u32>,
}

/// SECBIT_NO_SETUID_FIXUP (linux/securebits.h): a change of uid leaves the capabilities.
const SECBIT_NO_SETUID_FIXUP: libc::c_ulong = 1 << 2;

/// The effective ids of this thread now.
pub fn effective_ids() -> io::Result<CallIds> {
    let groups = nix::unistd::getgroups().map_err(io::Error::from)?;
    Ok(CallIds {
        uid: nix::unistd::geteuid().as_raw(),
        gid: nix::unistd::getegid().as_raw(),
        groups: groups.into_iter().map(|g| g.as_raw()).collect(),
    })
}

/// setgroups of this thread only (the raw call: glibc's would change every thread).
pub fn set_thread_groups(groups: &[u32]) -> io::Result<()> {
    // SAFETY: setgroups reads groups.len() gids from a live slice.
    cvt(unsafe {
        libc::syscall(
            libc::SYS_setgroups,
            groups.len() as libc::c_long,
            groups.as_ptr(),
        )
    })
    .map(drop)
}

/// Sets this thread's effective uid and gid and groups to `ids` (real and saved ids kept),
/// securebits to `bits` first: raw calls on this thread only.
fn set_thread_effective(ids: &CallIds, bits: libc::c_ulong) -> io::Result<()> {
    // SAFETY: prctl PR_SET_SECUREBITS takes an integer.
    cvt(unsafe { libc::prctl(libc::PR_SET_SECUREBITS, bits, 0, 0, 0) }.into())?;
    set_thread_groups(&ids.groups)?;
    set_thread_effective_gid(ids.gid)?;
    set_thread_effective_uid(ids.uid)
}

/// Runs `call` in this (single-threaded, privileged) process with its effective uid, gid and
/// groups set to `ids`, its capabilities kept (SECBIT_NO_SETUID_FIXUP for the time of the
/// call: it still reaches what cryo reaches), then puts its ids and securebits back.
pub fn with_effective_ids<R>(ids: &CallIds, call: impl FnOnce() -> io::Result<R>) -> io::Result<R> {
    let before = effective_ids()?;
    if before == *ids {
        return call();
    }
    // SAFETY: prctl PR_GET_SECUREBITS takes no pointer.
    let bits =
        cvt(unsafe { libc::prctl(libc::PR_GET_SECUREBITS, 0, 0, 0, 0) }.into())? as libc::c_ulong;
    let switched = set_thread_effective(ids, bits | SECBIT_NO_SETUID_FIXUP);
    let r = switched.and_then(|()| call());
    // Back, the uid first (the capabilities kept all along allow the rest).
    let back =
        set_thread_effective_uid(before.uid).and_then(|()| set_thread_effective(&before, bits));
    match (r, back) {
        (Ok(v), Ok(())) => Ok(v),
        (Err(e), _) | (Ok(_), Err(e)) => Err(e),
    }
}

/// Runs `call` in a short-lived child of this (single-threaded, privileged) process whose
/// pid is `pid` (clone3 with set_tid: a pid no process holds now) and whose effective ids are
/// `ids`, and waits for it: what `call` does to objects the child inherited (a socket's
/// listen, connect) is stamped with that pid and those ids. The child sends no SIGCHLD and is
/// reaped here, so its pid is free again on return. `call`'s error comes back as its errno
/// (EIO when it has none).
pub fn in_stand_in(
    pid: Pid,
    ids: &CallIds,
    call: impl FnOnce() -> io::Result<()>,
) -> io::Result<()> {
    in_stand_in_sharing(pid, ids, 0, call)
}

/// [`in_stand_in`], the stand-in sharing this process's fd table when `share` has
/// CLONE_FILES: the descriptors `call` makes there stay here (a socketpair it stamps).
pub fn in_stand_in_sharing(
    pid: Pid,
    ids: &CallIds,
    share: u64,
    call: impl FnOnce() -> io::Result<()>,
) -> io::Result<()> {
    // No exit signal (0): nothing of it is left pending for the restored process.
    let args = CloneArgs {
        flags: share & libc::CLONE_FILES as u64,
        ..CloneArgs::default()
    };
    match clone_with_pid(pid, args)? {
        Forked::Child => {
            let r = with_effective_ids(ids, call);
            exit_child(match r {
                Ok(()) => 0,
                Err(e) => e.raw_os_error().unwrap_or(libc::EIO),
            })
        }
        Forked::Parent(child) => {
            let status = loop {
                match nix::sys::wait::waitpid(child, Some(nix::sys::wait::WaitPidFlag::__WALL)) {
                    Err(nix::errno::Errno::EINTR) => continue,
                    r => break r.map_err(io::Error::from)?,
                }
            };
            match status {
                nix::sys::wait::WaitStatus::Exited(_, 0) => Ok(()),
                nix::sys::wait::WaitStatus::Exited(_, code) => {
                    Err(io::Error::from_raw_os_error(code))
                }
                other => Err(io::Error::other(format!(
                    "the stand-in with pid {pid} ended: {other:?}"
                ))),
            }
        }
    }
}

/// Whether a process (or thread) `pid` of this PID namespace exists: kill(pid, 0) does not
/// fail ESRCH (EPERM: it exists, another user's).
pub fn exists(pid: i32) -> bool {
    nix::sys::signal::kill(Pid::from_raw(pid), None) != Err(nix::errno::Errno::ESRCH)
}

/// CAP_SYS_NICE's bit (linux/capability.h).
pub const CAP_SYS_NICE: u32 = 23;
/// CAP_SYS_RESOURCE's bit.
pub const CAP_SYS_RESOURCE: u32 = 24;

/// Whether this thread has capability `cap` (a CAP_* bit) in its effective set (CapEff of
/// /proc/thread-self/status).
pub fn has_effective_cap(cap: u32) -> bool {
    std::fs::read_to_string("/proc/thread-self/status")
        .ok()
        .and_then(|s| {
            let eff = s
                .lines()
                .find_map(|l| l.strip_prefix("CapEff:"))?
                .trim()
                .to_string();
            u64::from_str_radix(&eff, 16).ok()
        })
        .is_some_and(|eff| eff & (1 << cap) != 0)
}
