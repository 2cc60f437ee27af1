//! Character device nodes, and symbolic links held open themselves (O_PATH|O_NOFOLLOW),
//! removed while open: made again (mknod with the dumped device number, symlink to the
//! dumped target) at their name when it is free, else at a hidden name beside it
//! (regular.rs: make_beside), given their owner, mode and times, opened with the dumped flags
//! (a device at its position), then removed. Terminals are refused as for any device.

use std::fs;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use cryo_proto::image::{file_desc::Kind, FileDesc, RemovedNode};
use nix::fcntl::AtFlags;
use nix::sys::stat::{Mode, SFlag};
use tracing::debug;

use super::kind::{task_pidfd, Dumping, FileKind, Opened, Opening, Seen};
use super::open::open_flags;
use super::regular::timespec_of_ns;
use super::{devices, restore_err, FileError};
use crate::sys;

/// Device nodes and symbolic links removed while held open.
pub(super) struct RemovedNodes;

impl FileKind for RemovedNodes {
    type Record = RemovedNode;

    fn record(kind: &Kind) -> Option<&RemovedNode> {
        match kind {
            Kind::RemovedNode(n) => Some(n),
            _ => None,
        }
    }

    fn claims(&self, fd: &Dumping<'_>) -> bool {
        matches!(fd.seen, Seen::RemovedNode { .. })
    }

    fn dump(&self, fd: &mut Dumping<'_>) -> Result<Kind, FileError> {
        let Seen::RemovedNode { path } = &fd.seen else {
            return Err(fd.open.refuse("not a removed node", false));
        };
        let m = fd.meta;
        let open = fd.open;
        let symlink = m.file_type().is_symlink();
        open.refuse_on_read_only_mount(if symlink { "removed symbolic link" } else { "removed device" })?;
        if !symlink && devices::is_terminal(path, m.rdev()) {
            return Err(FileError::Terminal {
                pid: open.pid,
                fd: open.fd,
                path: path.clone(),
            });
        }
        let target = if symlink {
            let task = task_pidfd(open, fd.pidfd)?;
            let dup = sys::pidfd::pidfd_getfd(task, open.fd)
                .map_err(|e| open.inspect_err("pidfd_getfd", open.proc_path(), e))?;
            nix::fcntl::readlinkat(dup.as_fd(), "")
                .map_err(|e| open.inspect_err("readlinkat", open.proc_path(), e.into()))?
                .to_string_lossy()
                .into_owned()
        } else {
            String::new()
        };
        debug!(pid = %open.pid, fd = open.fd, path, symlink, "removed node");
        let (atime_ns, mtime_ns) = super::regular::times_ns(m);
        let attrs = super::inode_attrs::read(&open.proc_path(), false)
            .map_err(|e| open.dump_err(format!("removed node {path}: {e}")))?;
        Ok(Kind::RemovedNode(RemovedNode {
            attrs: Some(attrs),
            path: path.clone(),
            rdev: if symlink { 0 } else { m.rdev() },
            target,
            mode: m.mode() & 0o7777,
            uid: m.uid(),
            gid: m.gid(),
            atime_ns,
            mtime_ns,
        }))
    }

    fn open(
        &self,
        desc: &FileDesc,
        node: &RemovedNode,
        _cx: &mut Opening<'_>,
    ) -> Result<Opened, FileError> {
        open(desc, node).map(Opened::Now)
    }

    fn describe(&self, _desc: &FileDesc, n: &RemovedNode) -> String {
        if n.target.is_empty() {
            format!("removed character device {}", n.path)
        } else {
            format!("removed symbolic link {} -> {}", n.path, n.target)
        }
    }
}

/// Makes the node of `node` again, opens it for `desc`, removes it.
fn open(desc: &FileDesc, node: &RemovedNode) -> Result<OwnedFd, FileError> {
    let symlink = !node.target.is_empty();
    let owner = (node.uid, node.gid);
    let path = super::regular::make_beside(Path::new(&node.path), owner, |p| {
        if symlink {
            nix::unistd::symlinkat(node.target.as_str(), nix::fcntl::AT_FDCWD, p)
        } else {
            nix::sys::stat::mknod(p, SFlag::S_IFCHR, Mode::from_bits_truncate(0o600), node.rdev)
        }
    })
    .map_err(|e| restore_err(desc, "make the removed node again", e))?;
    let opened = give_attrs(&path, node, symlink)
        .map_err(|e| restore_err(desc, "give the node made again its owner, mode and times", e.into()))
        .and_then(|()| match &node.attrs {
            Some(attrs) => super::inode_attrs::give_at(&path, attrs)
                .map_err(|e| restore_err(desc, "give the node made again its extended attributes", e)),
            None => Ok(()),
        })
        .and_then(|()| {
            if symlink {
                nix::fcntl::open(&path, open_flags(desc.flags), Mode::empty())
                    .map_err(|e| restore_err(desc, "open the symbolic link made again", e.into()))
            } else {
                devices::open(desc, &path.to_string_lossy())
            }
        });
    // Removed whatever happened: it never outlives the restore.
    let _ = fs::remove_file(&path);
    debug!(id = desc.id, path = %node.path, at = %path.display(), "removed node made again");
    opened
}

/// Owner, mode (not a symbolic link's: it has none) and times of the node at `path`.
fn give_attrs(path: &Path, node: &RemovedNode, symlink: bool) -> nix::Result<()> {
    if let Some((uid, gid)) = crate::task::userns::own_owner(node.uid, node.gid)? {
        nix::unistd::fchownat(
            nix::fcntl::AT_FDCWD,
            path,
            Some(uid),
            Some(gid),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )?;
    }
    if !symlink {
        nix::sys::stat::fchmodat(
            nix::fcntl::AT_FDCWD,
            path,
            Mode::from_bits_truncate(node.mode),
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        )?;
    }
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &timespec_of_ns(node.atime_ns),
        &timespec_of_ns(node.mtime_ns),
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
}
