//! Restore side, before any process is created: every description checked against the image
//! and this machine (by its kind, kind.rs: FileKind::validate), ids unique, every fd of every
//! task referring to a known description.

use std::collections::{HashMap, HashSet};

use cryo_proto::image::{FdEntry, FileDesc, RegularFile};

use super::kind::Checking;
use super::registry;
use super::{FileError, UnixLinks};
use crate::image::ImageDir;

/// Indexes descriptions by id, refusing a duplicate or zero id and a record without kind.
pub(crate) fn index(descs: &[FileDesc]) -> Result<HashMap<u32, &FileDesc>, FileError> {
    let mut by_id = HashMap::with_capacity(descs.len());
    for desc in descs {
        if desc.id == 0 {
            return Err(FileError::Invalid {
                id: 0,
                detail: "id 0 is reserved (no file)".into(),
            });
        }
        registry::of_desc(desc)?;
        if by_id.insert(desc.id, desc).is_some() {
            return Err(FileError::Invalid {
                id: desc.id,
                detail: "two records have this id".into(),
            });
        }
    }
    Ok(by_id)
}

/// Checks the fds of one task against the descriptions: numbers valid and unique, every
/// file id known.
pub(crate) fn check_fds(by_id: &HashMap<u32, &FileDesc>, fds: &[FdEntry]) -> Result<(), FileError> {
    let mut seen = HashSet::with_capacity(fds.len());
    for e in fds {
        if !by_id.contains_key(&e.file_id) {
            return Err(FileError::Dangling {
                fd: e.fd,
                file_id: e.file_id,
            });
        }
        if e.fd < 0 || !seen.insert(e.fd) {
            return Err(FileError::Invalid {
                id: e.file_id,
                detail: format!("fd {} is negative or listed twice", e.fd),
            });
        }
    }
    Ok(())
}

/// Restore side, before any process is created: checks every description (ghost images
/// present with the right size and crc32c, referenced files present and of the right type,
/// ids unique) and that every fd of every task refers to a known description. Returns the
/// unix sockets grouped as the restore makes them (each decoded once here).
#[cfg(any(test, feature = "internals"))]
pub fn validate(
    descs: &[FileDesc],
    fds_of_tasks: &[&[FdEntry]],
    images: &ImageDir,
) -> Result<UnixLinks, FileError> {
    validate_except(descs, fds_of_tasks, images, |_| false)
}

/// [`validate`], but for the descriptions `given(id)` says are taken from fds of cryo's caller
/// (`--inherit-fd`): their file is the one given, not the one at the dumped path.
pub(crate) fn validate_except(
    descs: &[FileDesc],
    fds_of_tasks: &[&[FdEntry]],
    images: &ImageDir,
    given: impl Fn(u32) -> bool,
) -> Result<UnixLinks, FileError> {
    let by_id = index(descs)?;
    let mut cx = Checking::new(images);
    for desc in descs {
        let kind = registry::of_desc(desc)?;
        if !given(desc.id) {
            kind.validate(desc, &mut cx)?;
        }
    }
    for fds in fds_of_tasks {
        check_fds(&by_id, fds)?;
    }
    // Peers, waiting clients and descriptions in flight all in the image.
    UnixLinks::build(descs)
}

/// Which attributes of a path must still be those the dump saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Identity {
    /// A regular file reopened by path: device, inode, type and permissions, owner, size
    /// (unless it is only appended to, as a log) and modification time.
    File,
    /// A directory: device, inode, type and permissions, owner (its size and times change
    /// whenever an entry does).
    Directory,
}

/// Checks that `st`, the stat of the file now at `reg.path` (opened without following a
/// symlink), is the file the dump saw. The refusal names the path and the attributes that
/// differ, never their values (a forged record must learn nothing of the file it names); it
/// is waived, with a warning, when the restore accepts changed files
/// (`--accept-changed-files`, as CRIU's --skip-file-rwx-check).
pub(crate) fn same_file(
    desc: &FileDesc,
    reg: &RegularFile,
    st: &nix::sys::stat::FileStat,
    identity: Identity,
    images: &ImageDir,
) -> Result<(), FileError> {
    let mut differ: Vec<&str> = Vec::new();
    // A copied tmpfs's files are new inodes of a new device (task/mount_ns.rs).
    if st.st_dev != reg.dev && !reg.on_copied_tmpfs {
        differ.push("device");
    }
    // A cgroup made again is a new inode of its hierarchy.
    if st.st_ino != reg.ino && !reg.on_copied_tmpfs && !reg.cgroup_dir {
        differ.push("inode");
    }
    if st.st_mode & libc::S_IFMT != reg.mode & libc::S_IFMT {
        differ.push("type");
    } else if st.st_mode & 0o7777 != reg.mode & 0o7777 {
        differ.push("mode");
    }
    // Seen from a restored process in a user namespace of its own, as it names them.
    if (st.st_uid, st.st_gid) != crate::task::userns::own_ids().shown(reg.uid, reg.gid) {
        differ.push("owner");
    }
    if identity == Identity::File {
        let accmode = desc.flags as i32 & libc::O_ACCMODE;
        let appended = accmode == libc::O_WRONLY && desc.flags as i32 & libc::O_APPEND != 0;
        if !appended {
            if st.st_size as u64 != reg.size {
                differ.push("size");
            }
            let mtime = st.st_mtime * 1_000_000_000 + st.st_mtime_nsec;
            if reg.mtime_ns != 0 && mtime != reg.mtime_ns {
                differ.push("modification time");
            }
        }
    }
    if differ.is_empty() {
        return Ok(());
    }
    let list = differ.join(", ");
    let verb = if differ.len() == 1 { "differs" } else { "differ" };
    if images.accepts_changed_files() {
        tracing::warn!(id = desc.id, path = %reg.path, differ = %list, "file changed since the dump, accepted");
        return Ok(());
    }
    Err(super::error::changed(
        desc,
        format!(
            "{} is not the file the dump saw ({list} {verb}); restore with \
             --accept-changed-files to use it anyway",
            reg.path
        ),
    ))
}
