//! The write life hint of an inode (F_SET_RW_HINT, RWH_WRITE_LIFE_*), which the kernel keeps
//! in the inode in memory only: a memfd, a pipe or a deleted file's copy is a new inode, and a
//! file's inode may be dropped from memory once the dump ends its holders.
//!
//! ```text
//! dump     F_GET_RW_HINT on a duplicate (pidfd_getfd) of each regular file, directory,
//!          memfd, removed node and pipe -> FileDesc.rw_hint
//! restore  F_SET_RW_HINT when not 0, on the description opened (by its kind alone, or with
//!          the others of its pipe)
//! ```

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use cryo_proto::image::{file_desc::Kind, FileDesc};

use super::inspect::OpenFd;
use super::kind::task_pidfd;
use super::{restore_err, FileError};
use crate::sys;

/// Whether the hint of a description of this kind is kept. F_GET_RW_HINT works on any
/// inode; the anonymous inode (eventfd, epoll, timerfd...) is one for the whole system, not
/// made again; a socket's is not kept (a call per socket in a migration's downtime for a hint
/// no program sets on a socket).
fn keeps_hint(kind: &Kind) -> bool {
    matches!(
        kind,
        Kind::Regular(_) | Kind::Directory(_) | Kind::Memfd(_) | Kind::RemovedNode(_) | Kind::Pipe(_)
    )
}

/// The write life hint of the inode behind fd `open` (recorded as `kind`), read on a
/// duplicate; 0 for a kind whose hint is not kept, or an O_PATH fd (fcntl: EBADF).
pub(super) fn dump(open: &OpenFd, kind: &Kind, pidfd: &mut Option<OwnedFd>) -> Result<u32, FileError> {
    if !keeps_hint(kind) || open.flags & libc::O_PATH as u32 != 0 {
        return Ok(0);
    }
    let pidfd = task_pidfd(open, pidfd)?;
    let dup = sys::pidfd::pidfd_getfd(pidfd, open.fd)
        .map_err(|e| open.inspect_err("pidfd_getfd", open.proc_path(), e))?;
    let hint = sys::fcntl::rw_hint(dup.as_fd())
        .map_err(|e| open.inspect_err("F_GET_RW_HINT", open.proc_path(), e))?;
    Ok(hint as u32)
}

/// Gives the description `desc` opened as `fd` its inode's write life hint back.
pub(super) fn restore(desc: &FileDesc, fd: BorrowedFd<'_>) -> Result<(), FileError> {
    if desc.rw_hint != 0 {
        sys::fcntl::set_rw_hint(fd, u64::from(desc.rw_hint))
            .map_err(|e| restore_err(desc, format!("F_SET_RW_HINT {}", desc.rw_hint), e))?;
    }
    Ok(())
}
