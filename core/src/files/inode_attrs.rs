//! Extended attributes and inode flags of the inodes a restore makes again (a deleted file, a
//! removed directory, FIFO, device node or symbolic link, a memfd): read at dump through the
//! holder's /proc link, given back to the copy at restore.
//!
//! ```text
//! dump     listxattr + getxattr through /proc/PID/fd/N (the magic link leads to the inode,
//!          deleted or not; root sees the user, trusted, security and system namespaces);
//!          FS_IOC_GETFLAGS on a read-only open of it (regular files, directories, memfds);
//!          a project id (FS_IOC_FSGETXATTR) refused: no copy is given one
//! restore  after the copy's owner, mode and times (setxattr moves only its change time):
//!          every attribute set again, in the dump's order (an ACL after the mode it agrees
//!          with, file capabilities after the chown that would clear them), then the flags,
//!          last since an immutable or append-only inode takes no other change; read back
//!          and compared: a copy that differs fails the restore, naming the file
//! ```

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use cryo_proto::image::{InodeAttrs, Xattr};

use crate::sys;

/// Why the attributes of an inode were not read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadAttrsError {
    #[error("{step}: {source}")]
    Read {
        step: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("has project id {0} (FS_IOC_FSGETXATTR), which a copy made again would not have")]
    ProjectId(u32),
}

/// The extended attributes of the inode behind `source` (a /proc link of its holder, or of
/// cryo's own fd on it) and, when `with_flags` (a regular file, directory or memfd), its inode
/// flags, read on an open of its own (O_NOATIME: the access time stays as it was).
pub(crate) fn read(source: &Path, with_flags: bool) -> Result<InodeAttrs, ReadAttrsError> {
    let step = |step: &'static str| move |source: io::Error| ReadAttrsError::Read { step, source };
    let mut attrs = InodeAttrs::default();
    for name in sys::xattr::list(source).map_err(step("listxattr"))? {
        match sys::xattr::get(source, &name) {
            Ok(value) => attrs.xattrs.push(Xattr { name, value }),
            // Removed between the list and the read.
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => {}
            Err(e) => return Err(step("getxattr")(e)),
        }
    }
    if with_flags {
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOATIME | libc::O_NONBLOCK)
            .open(source)
            .map_err(step("open it to read its inode flags"))?;
        if let Some(flags) = sys::fcntl::inode_flags(file.as_fd()).map_err(step("ioctl FS_IOC_GETFLAGS"))? {
            attrs.has_flags = true;
            attrs.flags = flags as u32;
        }
        match sys::fcntl::project_id(file.as_fd()).map_err(step("ioctl FS_IOC_FSGETXATTR"))? {
            Some(id) if id != 0 => return Err(ReadAttrsError::ProjectId(id)),
            _ => {}
        }
    }
    Ok(attrs)
}

/// The inode flags chattr(1) sets (linux/fs.h FS_*_FL): secure deletion, undelete, compress,
/// sync, immutable, append-only, no dump, no atime, data journalling, no tail merging, dirsync,
/// top of a directory hierarchy, no copy on write, project inheritance, casefold. The others
/// (extents, inline data, verity, encryption...) are the filesystem's own.
const CHATTR_FLAGS: u32 = 0x1 | 0x2 | 0x4 | 0x8 | 0x10 | 0x20 | 0x40 | 0x80 | 0x4000 | 0x8000 | 0x1_0000
    | 0x2_0000 | 0x80_0000 | 0x2000_0000 | 0x4000_0000;

/// Whether `attrs` holds anything a new inode would not have: an extended attribute or a flag
/// chattr sets.
pub(crate) fn any(attrs: &InodeAttrs) -> bool {
    !attrs.xattrs.is_empty() || attrs.flags & CHATTR_FLAGS != 0
}

/// Gives the copy behind `fd` the extended attributes and then the inode flags of `attrs`
/// ([`give_xattrs`], [`give_flags`]).
pub(crate) fn give(fd: BorrowedFd<'_>, attrs: &InodeAttrs) -> io::Result<()> {
    give_xattrs(fd, attrs)?;
    give_flags(fd, attrs)
}

/// Gives the copy behind `fd` the extended attributes of `attrs`.
pub(crate) fn give_xattrs(fd: BorrowedFd<'_>, attrs: &InodeAttrs) -> io::Result<()> {
    for x in &attrs.xattrs {
        sys::xattr::set_fd(fd, &x.name, &x.value).map_err(|e| set_err(x, e))?;
    }
    Ok(())
}

/// Gives the node at `path` (not followed: a symbolic link's own) the extended attributes of
/// `attrs` (a node has no inode flags).
pub(crate) fn give_at(path: &Path, attrs: &InodeAttrs) -> io::Result<()> {
    for x in &attrs.xattrs {
        sys::xattr::set_path(path, &x.name, &x.value).map_err(|e| set_err(x, e))?;
    }
    Ok(())
}

fn set_err(x: &Xattr, e: io::Error) -> io::Error {
    io::Error::new(
        e.kind(),
        format!("set its extended attribute {}: {e}", String::from_utf8_lossy(&x.name)),
    )
}

/// Sets the inode flags of the copy behind `fd` to those of `attrs` unless it has them
/// already (a flag its directory passes on), and checks them: the last change made to it, as
/// an immutable inode can no longer be linked, unlinked, written or given attributes.
pub(crate) fn give_flags(fd: BorrowedFd<'_>, attrs: &InodeAttrs) -> io::Result<()> {
    if !attrs.has_flags {
        return Ok(());
    }
    let flags = attrs.flags as i32;
    let now = sys::fcntl::inode_flags(fd)?;
    if now == Some(flags) || (now.is_none() && flags == 0) {
        return Ok(());
    }
    let context = |e: io::Error| io::Error::new(e.kind(), format!("set its inode flags {flags:#x} (chattr): {e}"));
    sys::fcntl::set_inode_flags(fd, flags).map_err(context)?;
    match sys::fcntl::inode_flags(fd).map_err(context)? {
        Some(got) if got == flags => Ok(()),
        got => Err(io::Error::other(format!(
            "its inode flags read {:#x} once set, not {flags:#x} as dumped",
            got.unwrap_or(0)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn attributes_and_flags_read_through_a_deleted_files_link_are_given_to_a_copy() {
        let dir = tempfile::tempdir().unwrap();
        let file = std::fs::File::create(dir.path().join("f")).unwrap();
        if sys::xattr::set_fd(file.as_fd(), b"user.k", b"v").is_err() {
            return;
        }
        // FS_NODUMP_FL.
        let flags = sys::fcntl::set_inode_flags(file.as_fd(), 0x40).is_ok();
        let link = Path::new("/proc/self/fd").join(file.as_raw_fd().to_string());
        std::fs::remove_file(dir.path().join("f")).unwrap();
        let attrs = read(&link, true).unwrap();
        assert_eq!(attrs.xattrs, vec![Xattr { name: b"user.k".to_vec(), value: b"v".to_vec() }]);
        let copy = std::fs::File::create(dir.path().join("g")).unwrap();
        give(copy.as_fd(), &attrs).unwrap();
        assert_eq!(sys::xattr::get(&dir.path().join("g"), b"user.k").unwrap(), b"v");
        if flags {
            assert_eq!(sys::fcntl::inode_flags(copy.as_fd()).unwrap().map(|f| f & 0x40), Some(0x40));
        }
    }
}
