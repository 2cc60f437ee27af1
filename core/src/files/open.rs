//! The toolkit of the kinds on the restore side: the options of a restore call
//! ([`FdRestoreOptions`]), the open(2) and create flags of a description, and the moves that
//! keep an fd above the targets or put it at its number. Which kind opens what is place.rs's
//! business (through the registry); nothing here names a kind.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicI32, Ordering};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use cryo_proto::image::{FdEntry, FileDesc};
use nix::fcntl::{FcntlArg, OFlag};

use super::error::restore_err;
use super::FileError;
use crate::sys;

/// How fds are restored.
#[derive(Debug, Clone, Default)]
pub struct FdRestoreOptions {
    /// TCP connections come back reset (`--tcp-close`): the application sees ECONNRESET.
    pub tcp_close: bool,
    /// Descriptions this process shares with its parent, already open at these numbers
    /// (inherited through fork): placed from there instead of being created again.
    pub inherited: HashMap<u32, RawFd>,
    /// Descriptions this process creates without holding them (the other end of a unix pair
    /// it holds one end of, for a child), placed at these numbers (above every fd of the
    /// image and every control and mapping fd) and kept open for the children to inherit.
    pub extra: HashMap<u32, RawFd>,
    /// The shared memory objects cryo made for the tree, by dumped inode: the fd (inherited)
    /// each memfd description and each mapping reopens.
    pub shared: HashMap<u64, RawFd>,
    /// The terminal of `cryo restore` (inherited), which the shell job's terminal fds reopen.
    pub terminal: Option<RawFd>,
    /// Descriptions taken from an fd of cryo's caller (`--inherit-fd`, files/inherit.rs):
    /// id -> the fd number this process holds that fd at.
    pub(crate) given: HashMap<u32, RawFd>,
    /// The network namespaces its sockets of another namespace than its own are made in
    /// (sockets/home.rs).
    pub homes: Option<std::sync::Arc<crate::sockets::home::Homes>>,
}

/// Puts `fd` at the number of fd entry `e`, with its FD_CLOEXEC.
pub(crate) fn place_at(fd: BorrowedFd<'_>, e: &FdEntry) -> Result<(), FileError> {
    sys::fd::dup_to(fd, e.fd, e.cloexec).map_err(|source| FileError::Place {
        fd: e.fd,
        id: e.file_id,
        op: "dup3",
        source,
    })
}

/// `fd` moved to a number at or above `min` (it may already be there).
pub(crate) fn above(desc: &FileDesc, fd: OwnedFd, min: RawFd) -> Result<OwnedFd, FileError> {
    if fd.as_raw_fd() >= min {
        return Ok(fd);
    }
    sys::fd::dup_at_least(fd.as_fd(), min).map_err(|e| restore_err(desc, "F_DUPFD_CLOEXEC", e))
}

/// open(2) flags to reopen a description with: the dumped ones without creation flags, with
/// O_NOCTTY (the controlling terminal is the session's business) and O_CLOEXEC (the fd is a
/// temporary; the target fd gets its own FD_CLOEXEC). O_ASYNC is set after (see [`set_async`]).
pub(crate) fn open_flags(flags: u32) -> OFlag {
    let drop = libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC | libc::O_CLOEXEC | libc::O_ASYNC;
    OFlag::from_bits_retain((flags as i32 & !drop) | libc::O_NOCTTY | libc::O_CLOEXEC)
}

/// Sets the file status flags of `settable` (a subset of what F_SETFL changes) on `fd` as
/// description `desc` had them, set or cleared; the others left as they are.
pub(crate) fn set_status_flags(desc: &FileDesc, fd: &OwnedFd, settable: u32) -> Result<(), FileError> {
    let old = nix::fcntl::fcntl(fd, FcntlArg::F_GETFL)
        .map_err(|e| restore_err(desc, "F_GETFL", e.into()))?;
    let new = (old as u32 & !settable) | (desc.flags & settable);
    if new != old as u32 {
        nix::fcntl::fcntl(fd, FcntlArg::F_SETFL(OFlag::from_bits_retain(new as i32)))
            .map_err(|e| restore_err(desc, "F_SETFL", e.into()))?;
    }
    Ok(())
}

/// Sets O_ASYNC through F_SETFL (open(2) ignores it) when the description had it.
pub(crate) fn set_async(desc: &FileDesc, fd: &OwnedFd) -> Result<(), FileError> {
    if desc.flags & libc::O_ASYNC as u32 == 0 {
        return Ok(());
    }
    let old = nix::fcntl::fcntl(fd, FcntlArg::F_GETFL)
        .map_err(|e| restore_err(desc, "F_GETFL", e.into()))?;
    nix::fcntl::fcntl(
        fd,
        FcntlArg::F_SETFL(OFlag::from_bits_retain(old | libc::O_ASYNC)),
    )
    .map_err(|e| restore_err(desc, "F_SETFL O_ASYNC", e.into()))?;
    Ok(())
}

/// The O_NONBLOCK of a description as the *_NONBLOCK flag of the call that creates its kind
/// (eventfd, timerfd, signalfd: they are all O_NONBLOCK), plus close-on-exec for the temporary.
pub(crate) fn create_flags(desc: &FileDesc) -> libc::c_int {
    let nonblock = desc.flags & libc::O_NONBLOCK as u32 != 0;
    libc::O_CLOEXEC | if nonblock { libc::O_NONBLOCK } else { 0 }
}

/// Opens `path` (absolute, as the dump recorded it) with `flags`, refusing a symlink anywhere
/// on the way (openat2 RESOLVE_NO_SYMLINKS). The dump took the path from the kernel (the
/// /proc/PID/fd link, d_path), which never holds a symlink, so one found now was swapped in
/// after the dump: following it could hand the process a file it never had.
pub(crate) fn open_no_symlinks(path: &str, flags: OFlag) -> nix::Result<OwnedFd> {
    use nix::fcntl::{OpenHow, ResolveFlag};
    nix::fcntl::openat2(
        nix::fcntl::AT_FDCWD,
        path,
        OpenHow::new()
            .flags(flags)
            .resolve(ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_NO_MAGICLINKS),
    )
}

/// The fd of its parent's root directory a process of a restore holds (the plan's slot), and
/// that process's pid ([`hold_parent_root`]): its children inherit the values, not the fd's
/// meaning. Atomics: a lock could be held by another thread of cryo at a fork.
static PARENT_ROOT_FD: AtomicI32 = AtomicI32::new(-1);
static PARENT_ROOT_HOLDER: AtomicI32 = AtomicI32::new(0);

/// In a process of a restore, first thing (its root still the one it inherited, its
/// parent's): holds its root directory at fd `slot`, for [`open_in_parent_namespace`].
/// /proc/PARENT/root would need ptrace access to the parent, which a process in a user
/// namespace of its own has not (to cryo, or to a parent whose memory cryo made).
pub(crate) fn hold_parent_root(slot: RawFd) -> io::Result<()> {
    let root = nix::fcntl::open(
        "/",
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
    sys::fd::dup_to(root.as_fd(), slot, true)?;
    PARENT_ROOT_FD.store(slot, Ordering::Relaxed);
    PARENT_ROOT_HOLDER.store(nix::unistd::getpid().as_raw(), Ordering::Relaxed);
    Ok(())
}

/// Opens absolute `path` as the parent of this process finds it (the parent as cryo's /proc
/// shows it: PPid of /proc/self/status), through its root held at a slot
/// ([`hold_parent_root`]), else /proc/PARENT/root: the file on a mount of the parent's mount
/// namespace, as the description the holder took along when it made its own. No symlink is
/// followed on the way (as [`open_no_symlinks`]) but for an O_PATH one.
pub(crate) fn open_in_parent_namespace(path: &str, flags: OFlag, o_path: bool) -> nix::Result<OwnedFd> {
    use nix::fcntl::{OpenHow, ResolveFlag};
    let held = PARENT_ROOT_HOLDER.load(Ordering::Relaxed) == nix::unistd::getpid().as_raw();
    let root = match held.then(|| PARENT_ROOT_FD.load(Ordering::Relaxed)) {
        Some(slot) => sys::fd::borrow_raw(slot).try_clone_to_owned().map_err(|e| {
            nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EBADF))
        })?,
        None => {
            let status = std::fs::read_to_string("/proc/self/status")
                .map_err(|_| nix::errno::Errno::EIO)?;
            let parent = status
                .lines()
                .find_map(|l| l.strip_prefix("PPid:"))
                .map(str::trim)
                .ok_or(nix::errno::Errno::EIO)?;
            nix::fcntl::open(
                format!("/proc/{parent}/root").as_str(),
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )?
        }
    };
    let relative = path.trim_start_matches('/');
    let relative = if relative.is_empty() { "." } else { relative };
    let resolve = if o_path {
        ResolveFlag::RESOLVE_IN_ROOT
    } else {
        ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_NO_MAGICLINKS
    };
    nix::fcntl::openat2(&root, relative, OpenHow::new().flags(flags).resolve(resolve))
}

/// Opens `path` (absolute, as the dump recorded it) with `flags` for description `desc` where
/// its holder had it: through the parent's mount namespace when the dump saw it opened there
/// ([`open_in_parent_namespace`]), else in this process's own.
pub(crate) fn open_as_dumped(desc: &FileDesc, path: &str, flags: OFlag) -> nix::Result<OwnedFd> {
    if desc.parent_mount_namespace {
        let o_path = desc.flags & libc::O_PATH as u32 != 0;
        open_in_parent_namespace(path, flags, o_path)
    } else {
        nix::fcntl::open(std::path::Path::new(path), flags, nix::sys::stat::Mode::empty())
    }
}
