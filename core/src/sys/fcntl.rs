//! The fcntl state of an open file description that fdinfo does not show: its signal owner
//! (F_GETOWN_EX) and signal (F_GETSIG), read on a duplicate (they live on the description);
//! and `struct flock` in the kernel's layout, for a lock taken by a remote call.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use super::check;

/// fcntl commands and owner types libc does not name (asm-generic/fcntl.h).
pub(crate) const F_SETSIG: u64 = 10;
const F_GETSIG: libc::c_int = 11;
pub(crate) const F_SETOWN_EX: u64 = 15;
const F_GETOWN_EX: libc::c_int = 16;
/// `struct f_owner_ex.type`: a thread, a process, a process group.
pub(crate) const F_OWNER_TID: i32 = 0;
pub(crate) const F_OWNER_PID: i32 = 1;
pub(crate) const F_OWNER_PGRP: i32 = 2;

/// F_GETOWN_EX of `fd`: (owner type F_OWNER_TID/PID/PGRP, the id; 0 for none).
pub(crate) fn owner(fd: BorrowedFd<'_>) -> io::Result<(i32, i32)> {
    // struct f_owner_ex { int type; pid_t pid; }
    let mut own = [0 as libc::c_int; 2];
    // SAFETY: F_GETOWN_EX writes one struct f_owner_ex (two ints) through the pointer, which
    // points at `own`, two ints.
    let ret = unsafe { libc::fcntl(fd.as_raw_fd(), F_GETOWN_EX, own.as_mut_ptr()) };
    check(libc::c_long::from(ret))?;
    Ok((own[0], own[1]))
}

/// F_GETSIG of `fd`: 0 for SIGIO.
pub(crate) fn signal(fd: BorrowedFd<'_>) -> io::Result<i32> {
    // SAFETY: F_GETSIG takes no argument.
    let ret = unsafe { libc::fcntl(fd.as_raw_fd(), F_GETSIG) };
    check(libc::c_long::from(ret)).map(|s| s as i32)
}

/// Registers fd `fd` again as the one its description's SIGIO names (`si_fd`): O_ASYNC
/// cleared then set (the kernel keeps the number the flag was last set through, and calls
/// the file's fasync only when the flag changes). Nothing is done if O_ASYNC is not set.
pub(crate) fn renumber_async(fd: BorrowedFd<'_>) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = OFlag::from_bits_retain(fcntl(fd, FcntlArg::F_GETFL)?);
    if !flags.contains(OFlag::O_ASYNC) {
        return Ok(());
    }
    fcntl(fd, FcntlArg::F_SETFL(flags - OFlag::O_ASYNC))?;
    fcntl(fd, FcntlArg::F_SETFL(flags))?;
    Ok(())
}

/// F_OFD_SETLK (not in every libc's constants).
pub(crate) const F_OFD_SETLK: u64 = 37;

/// `struct flock` of x86_64 (l_type, l_whence, l_start, l_len, l_pid, padding): a lock on
/// `start..start+len` from the start of the file (`len` 0: to the end), as bytes to write
/// into the task that takes it.
pub(crate) fn flock_bytes(write: bool, start: i64, len: i64) -> [u8; 32] {
    let mut raw = [0u8; 32];
    let kind = if write { libc::F_WRLCK } else { libc::F_RDLCK } as i16;
    raw[0..2].copy_from_slice(&kind.to_ne_bytes());
    raw[2..4].copy_from_slice(&(libc::SEEK_SET as i16).to_ne_bytes());
    raw[8..16].copy_from_slice(&start.to_ne_bytes());
    raw[16..24].copy_from_slice(&len.to_ne_bytes());
    raw
}

/// FS_IOC_GETFLAGS (linux/fs.h: _IOR('f', 1, long)) and the inode attributes a write open
/// of the file must respect: FS_IMMUTABLE_FL (no write open), FS_APPEND_FL (only O_APPEND).
const FS_IOC_GETFLAGS: libc::c_ulong = 0x8008_6601;
pub(crate) const FS_IMMUTABLE_FL: i32 = 0x10;
pub(crate) const FS_APPEND_FL: i32 = 0x20;

/// The inode attributes (chattr's flags) of the file behind `fd`; `None` where its filesystem
/// keeps none (ENOTTY, EINVAL, EOPNOTSUPP).
pub(crate) fn inode_flags(fd: BorrowedFd<'_>) -> io::Result<Option<i32>> {
    let mut flags: libc::c_long = 0;
    // SAFETY: FS_IOC_GETFLAGS writes one long (the kernel reads and writes an int's worth)
    // through the pointer, which points at `flags`.
    let r = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            FS_IOC_GETFLAGS,
            &mut flags as *mut libc::c_long,
        )
    };
    unless_unsupported(r).map(|kept| kept.then_some(flags as i32))
}

/// A filesystem ioctl's result: whether it answered (false where the filesystem keeps no such
/// attribute: ENOTTY, EINVAL, EOPNOTSUPP).
fn unless_unsupported(r: libc::c_int) -> io::Result<bool> {
    match check(libc::c_long::from(r)) {
        Ok(_) => Ok(true),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ENOTTY | libc::EINVAL | libc::EOPNOTSUPP)
            ) =>
        {
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// F_GET_RW_HINT / F_SET_RW_HINT (linux/fcntl.h, 4.13): the write life time hint of the
/// file's inode (RWH_WRITE_LIFE_*), a u64 passed by pointer.
const F_GET_RW_HINT: libc::c_int = 1035;
const F_SET_RW_HINT: libc::c_int = 1036;

/// F_GET_RW_HINT of `fd`'s inode (0: none).
pub(crate) fn rw_hint(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let mut hint: u64 = 0;
    // SAFETY: F_GET_RW_HINT writes one u64 through the pointer, which points at `hint`.
    let ret = unsafe { libc::fcntl(fd.as_raw_fd(), F_GET_RW_HINT, &mut hint as *mut u64) };
    check(libc::c_long::from(ret))?;
    Ok(hint)
}

/// F_SET_RW_HINT of `fd`'s inode to `hint`.
pub(crate) fn set_rw_hint(fd: BorrowedFd<'_>, hint: u64) -> io::Result<()> {
    // SAFETY: F_SET_RW_HINT reads one u64 through the pointer, which points at `hint`.
    let ret = unsafe { libc::fcntl(fd.as_raw_fd(), F_SET_RW_HINT, &hint as *const u64) };
    check(libc::c_long::from(ret)).map(drop)
}

/// FS_IOC_SETFLAGS (linux/fs.h: _IOW('f', 2, long)).
const FS_IOC_SETFLAGS: libc::c_ulong = 0x4008_6602;

/// Sets the inode attributes (chattr's flags) of the file behind `fd` to `flags`.
pub(crate) fn set_inode_flags(fd: BorrowedFd<'_>, flags: i32) -> io::Result<()> {
    let value = libc::c_long::from(flags);
    // SAFETY: FS_IOC_SETFLAGS reads one int through the pointer, which points at a long.
    let r = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            FS_IOC_SETFLAGS,
            &value as *const libc::c_long,
        )
    };
    check(libc::c_long::from(r)).map(drop)
}

/// FS_IOC_FSGETXATTR (linux/fs.h: _IOR('X', 31, struct fsxattr), 28 bytes).
const FS_IOC_FSGETXATTR: libc::c_ulong = 0x801c_581f;

/// The project id (struct fsxattr's fsx_projid: project quotas) of the file behind `fd`;
/// `None` where its filesystem keeps none.
pub(crate) fn project_id(fd: BorrowedFd<'_>) -> io::Result<Option<u32>> {
    // fsx_xflags, fsx_extsize, fsx_nextents, fsx_projid, fsx_cowextsize, 8 bytes of padding.
    let mut raw = [0u32; 7];
    // SAFETY: FS_IOC_FSGETXATTR writes a 28-byte struct fsxattr through the pointer, which
    // points at 28 writable bytes.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), FS_IOC_FSGETXATTR, raw.as_mut_ptr()) };
    unless_unsupported(r).map(|kept| kept.then_some(raw[3]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flock_layout_matches_libc() {
        assert_eq!(std::mem::size_of::<libc::flock>(), 32);
        let raw = flock_bytes(true, 5, 10);
        assert_eq!(i16::from_ne_bytes([raw[0], raw[1]]), libc::F_WRLCK as i16);
        assert_eq!(i64::from_ne_bytes(raw[8..16].try_into().unwrap()), 5);
        assert_eq!(i64::from_ne_bytes(raw[16..24].try_into().unwrap()), 10);
    }
}
