//! Mounts: a private copy of cryo's mount namespace for the calling process, tmpfs and bind
//! mounts in it with their flags, and whether a file carries extended attributes.

use std::ffi::CString;
use std::io;
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

/// Mounts a new tmpfs named `source` on `point` with per-mount `flags` and superblock options
/// `data` (size=, mode=...), writable.
pub(crate) fn tmpfs(source: &str, point: &Path, flags: MsFlags, data: &str) -> io::Result<()> {
    let flags = flags & !MsFlags::MS_RDONLY;
    nix::mount::mount(Some(source), point, Some("tmpfs"), flags, Some(data))?;
    Ok(())
}

/// Makes the superblock of the tmpfs on `point` read-only (keeping `data`).
pub(crate) fn tmpfs_read_only(point: &Path, flags: MsFlags, data: &str) -> io::Result<()> {
    let flags = flags | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
    nix::mount::mount(None::<&str>, point, None::<&str>, flags, Some(data))?;
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
