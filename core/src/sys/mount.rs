//! Mounts: a private copy of cryo's mount namespace for the calling process, tmpfs and bind
//! mounts in it with their flags, proc mounts of a given PID namespace, and whether a file
//! carries extended attributes.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::mount::MsFlags;
use nix::sched::CloneFlags;

/// Moves the calling process into a new mount namespace, a copy of its current one, with every
/// mount made private there (nothing mounted in it reaches cryo's, nor the reverse).
pub(crate) fn enter_new_private() -> io::Result<()> {
    nix::sched::unshare(CloneFlags::CLONE_NEWNS)?;
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )?;
    Ok(())
}

/// Mounts a new filesystem of type `fstype` (a tmpfs, a devpts instance) named `source` on
/// `point` with per-mount `flags` and superblock options `data` (size=, mode=...), writable.
pub(crate) fn new_filesystem(
    fstype: &str,
    source: &str,
    point: &Path,
    flags: MsFlags,
    data: &str,
) -> io::Result<()> {
    let flags = flags & !MsFlags::MS_RDONLY;
    nix::mount::mount(Some(source), point, Some(fstype), flags, Some(data))?;
    Ok(())
}

/// Makes the superblock of the tmpfs on `point` read-only (keeping `data`).
pub(crate) fn tmpfs_read_only(point: &Path, flags: MsFlags, data: &str) -> io::Result<()> {
    remount_tmpfs(point, flags | MsFlags::MS_RDONLY, data)
}

/// Remounts the superblock of the tmpfs on `point` with `flags` (read-only with MS_RDONLY,
/// else writable), `data` its options.
pub(crate) fn remount_tmpfs(point: &Path, flags: MsFlags, data: &str) -> io::Result<()> {
    nix::mount::mount(
        None::<&str>,
        point,
        None::<&str>,
        flags | MsFlags::MS_REMOUNT,
        Some(data),
    )?;
    Ok(())
}

/// Binds `source` (a directory or file) on `point`.
pub(crate) fn bind(source: &Path, point: &Path) -> io::Result<()> {
    nix::mount::mount(
        Some(source),
        point,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )?;
    Ok(())
}

/// Binds the mount tree at `source` (with its submounts) on `point`: MS_BIND | MS_REC. In a
/// mount namespace owned by a user namespace, a mount with submounts locked to it (copied
/// from a more privileged namespace) can be bound only so.
pub(crate) fn bind_tree(source: &Path, point: &Path) -> io::Result<()> {
    nix::mount::mount(
        Some(source),
        point,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )?;
    Ok(())
}

/// Gives the mount on `point` exactly the per-mount `flags` (ro, nosuid, nodev, noexec, atime).
pub(crate) fn set_mount_flags(point: &Path, flags: MsFlags) -> io::Result<()> {
    let flags = flags | MsFlags::MS_REMOUNT | MsFlags::MS_BIND;
    nix::mount::mount(None::<&str>, point, None::<&str>, flags, None::<&str>)?;
    Ok(())
}

/// Unmounts the mount on `point` (the topmost), lazily (MNT_DETACH).
pub(crate) fn detach(point: &Path) -> io::Result<()> {
    nix::mount::umount2(point, nix::mount::MntFlags::MNT_DETACH)?;
    Ok(())
}

/// Whether `path` (not followed if a symlink) has extended attributes.
pub(crate) fn has_xattrs(path: &Path) -> io::Result<bool> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: `c` is a NUL-terminated path; a null buffer of size 0 asks only for the size.
    let len = unsafe { libc::llistxattr(c.as_ptr(), std::ptr::null_mut(), 0) };
    if len < 0 {
        let e = io::Error::last_os_error();
        // A filesystem without xattr support has none.
        if e.raw_os_error() == Some(libc::EOPNOTSUPP) {
            return Ok(false);
        }
        return Err(e);
    }
    Ok(len > 0)
}

/// fsconfig(2) commands and fsopen/fsmount/move_mount flags (linux/mount.h).
const FSCONFIG_SET_FLAG: libc::c_uint = 0;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_SET_FD: libc::c_uint = 5;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;

/// One fsconfig(2) call on filesystem context `fs`.
fn fsconfig(
    fs: BorrowedFd<'_>,
    cmd: libc::c_uint,
    key: Option<&CString>,
    value: Option<&CString>,
    aux: libc::c_int,
) -> io::Result<()> {
    let ptr = |s: Option<&CString>| s.map_or(std::ptr::null(), |s| s.as_ptr());
    // SAFETY: `fs` is an open filesystem context for the duration of the borrow; `key` and
    // `value` are NUL-terminated strings that outlive the call, or null where the command
    // takes none; the kernel only reads them.
    let r = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            cmd,
            ptr(key),
            ptr(value),
            aux,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A new filesystem of type `fstype` named `source`, mounted nowhere yet (an fd of
/// fsmount(2)), with superblock options `options` (`hidepid=invisible,subset=pid`:
/// `key=value`, or `key` alone for a flag); a proc showing PID namespace `pidns` (an open
/// /proc/PID/ns/pid: the `pidns` option of linux 6.15) where one is given, else the calling
/// thread's namespaces' view (a sysfs shows its network namespace).
pub(crate) fn detached(
    fstype: &str,
    source: &str,
    pidns: Option<BorrowedFd<'_>>,
    options: &str,
) -> io::Result<OwnedFd> {
    let c = |s: &str| CString::new(s).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL));
    let name = c(fstype)?;
    // SAFETY: `name` is a NUL-terminated string the kernel only reads; fsopen returns a new
    // fd or -1.
    let fs = unsafe { libc::syscall(libc::SYS_fsopen, name.as_ptr(), FSOPEN_CLOEXEC) };
    if fs < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fs` was just returned by fsopen and is owned by nothing else.
    let fs = unsafe { OwnedFd::from_raw_fd(fs as RawFd) };
    if let Some(pidns) = pidns {
        fsconfig(
            fs.as_fd(),
            FSCONFIG_SET_FD,
            Some(&c("pidns")?),
            None,
            pidns.as_raw_fd(),
        )?;
    }
    fsconfig(
        fs.as_fd(),
        FSCONFIG_SET_STRING,
        Some(&c("source")?),
        Some(&c(source)?),
        0,
    )?;
    for option in options.split(',').filter(|o| !o.is_empty()) {
        match option.split_once('=') {
            Some((key, value)) => fsconfig(
                fs.as_fd(),
                FSCONFIG_SET_STRING,
                Some(&c(key)?),
                Some(&c(value)?),
                0,
            )?,
            None => fsconfig(fs.as_fd(), FSCONFIG_SET_FLAG, Some(&c(option)?), None, 0)?,
        }
    }
    fsconfig(fs.as_fd(), FSCONFIG_CMD_CREATE, None, None, 0)?;
    // SAFETY: `fs` is an open, created filesystem context; fsmount returns a new fd or -1.
    let m = unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, 0) };
    if m < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `m` was just returned by fsmount and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(m as RawFd) })
}

/// A private, writable view of directory `dir` (an fd on it): a detached copy of the mount it
/// is on (open_tree OPEN_TREE_CLONE, rooted at `dir`) with MOUNT_ATTR_RDONLY cleared on the
/// copy alone, the mount itself left read-only. Writes through it fail EROFS where the
/// filesystem itself is read-only. Dropped, the copy is unmounted.
pub(crate) fn writable_clone(dir: &Path) -> io::Result<OwnedFd> {
    const MOUNT_ATTR_RDONLY: u64 = 0x1;
    let clone = clone_tree(dir)?;
    mount_setattr(
        clone.as_fd(),
        &MountAttr {
            attr_set: 0,
            attr_clr: MOUNT_ATTR_RDONLY,
            propagation: 0,
            userns_fd: 0,
        },
    )?;
    Ok(clone)
}

/// A detached bind of `dir` alone (open_tree OPEN_TREE_CLONE, not its submounts), to attach
/// ([`attach`]); unmounted when dropped unattached.
pub(crate) fn clone_tree(dir: &Path) -> io::Result<OwnedFd> {
    let path = CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    open_tree_clone(libc::AT_FDCWD, &path, 0)
}

/// A detached copy of the mount `at` (an fd on its root, O_PATH will do) is, alone: none of
/// its submounts, so what they cover shows. The calling thread must be in the mount namespace
/// of that mount (open_tree refuses another's: EINVAL).
pub(crate) fn clone_mount_alone(at: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    open_tree_clone(at.as_raw_fd(), c"", libc::AT_EMPTY_PATH as libc::c_uint)
}

/// open_tree(dirfd, path, OPEN_TREE_CLONE | O_CLOEXEC | flags).
fn open_tree_clone(
    dirfd: RawFd,
    path: &std::ffi::CStr,
    flags: libc::c_uint,
) -> io::Result<OwnedFd> {
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    // SAFETY: `path` is a NUL-terminated string the kernel only reads; open_tree returns a
    // new fd or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            dirfd,
            path.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | flags,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by open_tree and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Makes the working directory (the root of a mount) the root of the calling process's mount
/// namespace: pivot_root(".", "."), the old root (stacked on it by that call) detached, then
/// chdir("/").
pub(crate) fn pivot_here() -> io::Result<()> {
    // SAFETY: two NUL-terminated paths the kernel only reads.
    let r = unsafe { libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    nix::mount::umount2(".", nix::mount::MntFlags::MNT_DETACH)?;
    nix::unistd::chdir("/")?;
    Ok(())
}

/// struct mount_attr (linux/mount.h, MOUNT_ATTR_SIZE_VER0).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// mount_setattr(2) on the mount `mount` is the root of (an fd on it), not recursive.
fn mount_setattr(mount: BorrowedFd<'_>, attr: &MountAttr) -> io::Result<()> {
    // SAFETY: `mount` is an open fd for the duration of the borrow; the empty path and
    // `attr` (of the size passed) are only read by the kernel.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            mount.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The kind of propagation a mount is given alone (not its children).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Propagation {
    /// In a peer group of its own, or kept in the one it is in (MS_SHARED).
    Shared,
    /// Out of its peer group, a slave of it (MS_SLAVE).
    Slave,
    /// Private and not to be bound (MS_UNBINDABLE).
    Unbindable,
}

/// Gives mount `mount` (an fd on its root) propagation `kind`.
pub(crate) fn set_propagation(mount: BorrowedFd<'_>, kind: Propagation) -> io::Result<()> {
    let flag = match kind {
        Propagation::Shared => MsFlags::MS_SHARED,
        Propagation::Slave => MsFlags::MS_SLAVE,
        Propagation::Unbindable => MsFlags::MS_UNBINDABLE,
    };
    mount_setattr(
        mount,
        &MountAttr {
            attr_set: 0,
            attr_clr: 0,
            propagation: flag.bits(),
            userns_fd: 0,
        },
    )
}

/// Puts private mount `to` in the peer group of `from` and under its master
/// (MOVE_MOUNT_SET_GROUP, linux 5.15): both fds on mount roots of one filesystem, `from`'s root
/// holding `to`'s. Nothing is mounted or propagated by it.
pub(crate) fn set_group(from: BorrowedFd<'_>, to: BorrowedFd<'_>) -> io::Result<()> {
    const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;
    const MOVE_MOUNT_SET_GROUP: libc::c_uint = 0x100;
    // SAFETY: both fds are open for the duration of the borrows; the empty paths are
    // NUL-terminated strings the kernel only reads.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            from.as_raw_fd(),
            c"".as_ptr(),
            to.as_raw_fd(),
            c"".as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH | MOVE_MOUNT_SET_GROUP,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// An O_PATH fd on `point` (absolute, free of symlinks, as mountinfo shows a mount point)
/// below directory `root` (a mount namespace's root as cryo reaches it, or "/"): the topmost
/// mount there.
pub(crate) fn open_point(root: &std::path::Path, point: &str) -> io::Result<OwnedFd> {
    use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
    let root = nix::fcntl::open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
    let relative = point.trim_start_matches('/');
    let relative = if relative.is_empty() { "." } else { relative };
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_SYMLINKS);
    Ok(nix::fcntl::openat2(&root, relative, how)?)
}

/// The id of the mount `fd` was opened through (fdinfo's mnt_id, mountinfo's first field).
pub(crate) fn mount_id(fd: BorrowedFd<'_>) -> io::Result<u32> {
    // statx, not /proc/self/fdinfo: a thread in another mount namespace may see no /proc of
    // cryo's.
    const STATX_MNT_ID: libc::c_uint = 0x1000;
    let mut stx = std::mem::MaybeUninit::<libc::statx>::zeroed();
    // SAFETY: an empty NUL-terminated path with AT_EMPTY_PATH names `fd` itself; the kernel
    // writes at most one `struct statx` into `stx`, which is that large.
    let r = unsafe {
        libc::statx(
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            STATX_MNT_ID,
            stx.as_mut_ptr(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statx succeeded: it filled the zeroed struct.
    let stx = unsafe { stx.assume_init() };
    if stx.stx_mask & STATX_MNT_ID == 0 {
        return Err(io::Error::from_raw_os_error(libc::ENOTSUP));
    }
    u32::try_from(stx.stx_mnt_id).map_err(|_| io::Error::from_raw_os_error(libc::EOVERFLOW))
}

/// Whether `path` is reached through a read-only mount, or is on a read-only filesystem
/// (statvfs ST_RDONLY, which says either); false when it cannot be told.
pub(crate) fn on_read_only_mount(path: &Path) -> bool {
    nix::sys::statvfs::statvfs(path)
        .is_ok_and(|s| s.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
}

/// Whether the filesystem `path` is on is read-only itself (its superblock), not only the
/// mount `path` is reached through: a file can then be made on it by no mount.
pub(crate) fn filesystem_read_only(path: &Path) -> io::Result<bool> {
    if !on_read_only_mount(path) {
        return Ok(false);
    }
    // A copy of the mount with MOUNT_ATTR_RDONLY cleared: a write access check through it
    // says EROFS only for a read-only superblock.
    let clone = writable_clone(path)?;
    match nix::unistd::faccessat(
        &clone,
        "",
        nix::unistd::AccessFlags::W_OK,
        nix::fcntl::AtFlags::AT_EMPTY_PATH,
    ) {
        Err(nix::errno::Errno::EROFS) => Ok(true),
        _ => Ok(false),
    }
}

/// Attaches detached mount `mount` (an fd of fsmount(2)) on `point` in the calling thread's
/// mount namespace.
pub(crate) fn attach(mount: BorrowedFd<'_>, point: &Path) -> io::Result<()> {
    let to = CString::new(point.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let empty = c"";
    // SAFETY: `mount` is an open mount fd for the duration of the borrow; `empty` and `to`
    // are NUL-terminated strings the kernel only reads.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mount.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
