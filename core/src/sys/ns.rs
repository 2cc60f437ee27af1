//! Working in another namespace: a short-lived thread of cryo joins it, the others stay out.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use nix::sched::CloneFlags;

/// Runs `f` on a short-lived thread that joined namespace `ns` (an open /proc/PID/ns/KIND of
/// kind `kind`, a per-thread one: UTS, cgroup, IPC, network, or a mount namespace, which the
/// thread joins with a working directory and root of its own); fails if it cannot join.
pub(crate) fn run_in<T: Send>(
    ns: impl AsFd + Send,
    kind: CloneFlags,
    f: impl FnOnce() -> T + Send,
) -> io::Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            // setns(CLONE_NEWNS) refuses a thread sharing its fs_struct (EINVAL).
            if kind.contains(CloneFlags::CLONE_NEWNS) {
                nix::sched::unshare(CloneFlags::CLONE_FS)?;
            }
            nix::sched::setns(ns, kind)?;
            Ok(f())
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the namespace thread panicked")))
    })
}

/// Runs `f` on a short-lived thread that made itself a new namespace of kind `kind`
/// (unshare: a per-thread one), gone with the thread.
pub(crate) fn run_in_new<T: Send>(kind: CloneFlags, f: impl FnOnce() -> T + Send) -> io::Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::unshare(kind)?;
            Ok(f())
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the namespace thread panicked")))
    })
}

/// [`run_in`] namespace `ns` when given, else [`run_in_new`].
pub(crate) fn run_in_or_new<T: Send>(
    ns: Option<OwnedFd>,
    kind: CloneFlags,
    f: impl FnOnce() -> T + Send,
) -> io::Result<T> {
    match ns {
        Some(ns) => run_in(ns, kind, f),
        None => run_in_new(kind, f),
    }
}

/// ioctl_ns(2) requests (linux/nsfs.h): _IO(0xb7, 1), _IO(0xb7, 2), _IO(0xb7, 4).
const NS_GET_USERNS: libc::c_ulong = 0xb701;
const NS_GET_PARENT: libc::c_ulong = 0xb702;
const NS_GET_OWNER_UID: libc::c_ulong = 0xb704;

/// The inode of the namespace behind nsfs fd `fd`.
fn inode_of(fd: impl AsFd) -> io::Result<u64> {
    Ok(nix::sys::stat::fstat(fd.as_fd())?.st_ino)
}

/// The inode of the user namespace that owns namespace `ns` (an open /proc/PID/ns/KIND):
/// NS_GET_USERNS.
pub(crate) fn owner_inode(ns: impl AsFd) -> io::Result<u64> {
    use std::os::fd::AsRawFd;
    // SAFETY: NS_GET_USERNS takes no argument and answers a new fd, owned by owned_fd.
    let fd = super::owned_fd(libc::c_long::from(unsafe {
        libc::ioctl(ns.as_fd().as_raw_fd(), NS_GET_USERNS)
    }))?;
    inode_of(fd)
}

/// The inode of the parent of user namespace `ns` (an open /proc/PID/ns/user):
/// NS_GET_PARENT (EPERM when the parent is outside the caller's namespace).
pub(crate) fn parent_inode(ns: impl AsFd) -> io::Result<u64> {
    use std::os::fd::AsRawFd;
    // SAFETY: NS_GET_PARENT takes no argument and answers a new fd, owned by owned_fd.
    let fd = super::owned_fd(libc::c_long::from(unsafe {
        libc::ioctl(ns.as_fd().as_raw_fd(), NS_GET_PARENT)
    }))?;
    inode_of(fd)
}

/// The uid (in the caller's view) of the owner of user namespace `ns`: NS_GET_OWNER_UID.
pub(crate) fn owner_uid(ns: impl AsFd) -> io::Result<u32> {
    use std::os::fd::AsRawFd;
    let mut uid: libc::uid_t = 0;
    // SAFETY: NS_GET_OWNER_UID writes one uid_t to the pointer, which is ours and live.
    super::check(libc::c_long::from(unsafe {
        libc::ioctl(
            ns.as_fd().as_raw_fd(),
            NS_GET_OWNER_UID,
            &mut uid as *mut libc::uid_t,
        )
    }))?;
    Ok(uid)
}

/// A new namespace of kind `kind` (CLONE_NEWNET, CLONE_NEWIPC...) owned by a new user
/// namespace below cryo's (without maps): what a process in a user namespace of its own makes
/// with unshare, as a replica to compare with (a network namespace owned by another user
/// namespace than the initial one hides some sysctls and makes others read-only). Made by a
/// forked child that is gone on return; the namespace lives on in the returned nsfs fd.
pub(crate) fn new_in_user_namespace(kind: CloneFlags, link: &str) -> io::Result<OwnedFd> {
    use super::process::Forked;
    let flags = (CloneFlags::CLONE_NEWUSER | kind).bits() as u64;
    let me = nix::unistd::getpid();
    let child = match super::process::fork_into_namespaces(flags)? {
        Forked::Child => super::process::park_child(me),
        Forked::Parent(child) => child,
    };
    // Its namespaces are there from the clone on: no word from it is needed.
    let opened = std::fs::File::open(format!("/proc/{child}/ns/{link}"));
    let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
    let _ = nix::sys::wait::waitpid(child, None);
    Ok(opened?.into())
}
