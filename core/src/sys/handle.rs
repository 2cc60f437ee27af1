//! File handles: an inode named by its filesystem, not by a path (name_to_handle_at), and
//! opened again from that name on the same filesystem (open_by_handle_at, which needs
//! CAP_DAC_READ_SEARCH). A handle outlives every path of its inode, not the inode itself.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::{check, owned_fd};

/// MAX_HANDLE_SZ of linux/exportfs.h: the largest handle a filesystem gives.
pub(crate) const MAX_HANDLE_SZ: usize = 128;

/// `struct file_handle` with room for the largest handle.
#[repr(C)]
struct RawHandle {
    handle_bytes: libc::c_uint,
    handle_type: libc::c_int,
    f_handle: [u8; MAX_HANDLE_SZ],
}

/// A file handle: its type and opaque bytes, as the filesystem made them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileHandle {
    /// `handle_type`.
    pub handle_type: i32,
    /// `f_handle`, `handle_bytes` long.
    pub bytes: Vec<u8>,
}

/// The handle of the inode `path` leads to (the last symlink followed: a /proc/PID/fd/N link
/// names the open file) and the id of the mount it was found on.
pub(crate) fn name_to_handle(path: &Path) -> io::Result<(FileHandle, i32)> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let mut raw = RawHandle {
        handle_bytes: MAX_HANDLE_SZ as libc::c_uint,
        handle_type: 0,
        f_handle: [0; MAX_HANDLE_SZ],
    };
    let mut mount_id: libc::c_int = 0;
    // SAFETY: `c_path` is NUL-terminated; `raw` is a file_handle whose handle_bytes says how
    // much room follows it (the kernel writes at most that); `mount_id` is one int.
    let ret = unsafe {
        libc::name_to_handle_at(
            libc::AT_FDCWD,
            c_path.as_ptr(),
            (&mut raw as *mut RawHandle).cast(),
            &mut mount_id,
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    check(libc::c_long::from(ret))?;
    let len = (raw.handle_bytes as usize).min(MAX_HANDLE_SZ);
    Ok((
        FileHandle {
            handle_type: raw.handle_type,
            bytes: raw.f_handle[..len].to_vec(),
        },
        mount_id,
    ))
}

/// Opens the inode of `handle` with `flags`; `mount` is any fd on its filesystem. ESTALE
/// once the inode is gone.
pub(crate) fn open_by_handle(
    mount: BorrowedFd<'_>,
    handle: &FileHandle,
    flags: libc::c_int,
) -> io::Result<OwnedFd> {
    if handle.bytes.len() > MAX_HANDLE_SZ {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let mut raw = RawHandle {
        handle_bytes: handle.bytes.len() as libc::c_uint,
        handle_type: handle.handle_type,
        f_handle: [0; MAX_HANDLE_SZ],
    };
    raw.f_handle[..handle.bytes.len()].copy_from_slice(&handle.bytes);
    // SAFETY: `raw` is a file_handle whose handle_bytes (checked above) fits the bytes after
    // it; the kernel only reads it.
    let ret = unsafe {
        libc::open_by_handle_at(
            mount.as_raw_fd(),
            (&mut raw as *mut RawHandle).cast(),
            flags,
        )
    };
    owned_fd(libc::c_long::from(ret))
}
