//! Regular files, directories and deleted-but-open ("ghost") files.
//!
//! A deleted file's data is copied at dump time into `ghost-ID.img` (ID: the first
//! description that needed it; every description of the same inode, fd or mapping, refers to
//! the same ghost image): only its data extents (SEEK_DATA/SEEK_HOLE), end to end, their
//! offsets in the record, so a sparse file costs the image its data only. At restore the file
//! is recreated ONCE per process: at its original path if that is free (then unlinked at
//! once, so the restored fds read "PATH (deleted)"), else as an unnamed O_TMPFILE in the same
//! directory; the extents are written at their offsets (the holes stay holes), the size set,
//! then owner, mode, access and modification times. Every later open of the same ghost
//! (another fd, a mapping) reopens the recreated inode through /proc/self/fd, found by its
//! dev+ino among the fds the process holds; so the fds and the mappings share one inode.
//! Before the unlink it is linked for an instant at the other deleted names the dump's
//! descriptions of it carry (a file with two hard links, an fd opened by each: zdtm link10),
//! and held there by an O_PATH fd: each description reopens through the fd that reads its
//! own name, so it reads "NAME (deleted)" as at the dump. A set-id one is made at its path
//! too, but given its set-id mode only once unlinked (then never to be linked again).
//! A removed directory is made again at its path, with the directories above it removed too.
//!
//! A deleted name of an inode that still has another link (st_nlink > 0: linked elsewhere,
//! then unlinked) is not copied: the inode lives on, and a copy would part from it. Its file
//! handle (name_to_handle_at) is recorded; the restore opens that very inode again
//! (open_by_handle_at, on the filesystem of the original directory), checks it is the file the
//! dump saw, and links it back at its original path for an instant, so its fds read
//! "PATH (deleted)" again (by another of its names if that path is taken meanwhile).

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use cryo_proto::image::{
    file_desc::Kind, FileDesc, FileExtent, LinkedInode, RawFileRef, RegularFile,
};
use nix::fcntl::{FcntlArg, OFlag};
use nix::sys::stat::Mode;
use nix::sys::time::TimeSpec;
use nix::unistd::Whence;
use tracing::debug;

use super::error::changed;
use super::kind::{Checking, Dumping, FileKind, KindState, MapOpen, Opened, Seen, Opening};
use super::open::{open_flags, open_no_symlinks, set_async};
use super::validate::{same_file, Identity};
use super::{restore_err, shmem, FileError, InodeKey};
use crate::image::{names, ImageDir};
use crate::sys::handle::{self, FileHandle};

/// The RegularFile record of a file, from its stat.
fn record(path: String, meta: &fs::Metadata) -> RegularFile {
    let (atime_ns, mtime_ns) = times_ns(meta);
    RegularFile {
        path,
        dev: meta.dev(),
        ino: meta.ino(),
        mode: meta.mode(),
        size: meta.size(),
        deleted: false,
        contents: None,
        uid: meta.uid(),
        gid: meta.gid(),
        mtime_ns,
        atime_ns,
        sparse: false,
        linked: None,
        extents: Vec::new(),
        in_mount_namespace: false,
        on_copied_tmpfs: false,
        cgroup_dir: false,
        through_parent_namespace: false,
        removed_bound: false,
        attrs: None,
    }
}

/// The ghost images of a dump, by inode: the contents of a deleted file are saved once.
#[derive(Debug, Default)]
struct GhostImages(HashMap<InodeKey, (RawFileRef, Vec<FileExtent>)>);

/// The largest deleted file whose contents a dump copies (`--ghost-limit`); None: any.
#[derive(Debug, Default)]
pub(super) struct GhostLimit(pub Option<u64>);

/// The record of regular file `path` (stat `meta`, inode `key`), first met as description
/// `id`; if it is `deleted`, its contents are saved as a ghost image (once per inode), read
/// through `source` (/proc/PID/fd/N or a map_files link).
#[allow(clippy::too_many_arguments)]
pub(super) fn dump_file(
    state: &mut KindState,
    id: u32,
    key: InodeKey,
    path: String,
    deleted: bool,
    meta: &fs::Metadata,
    source: &Path,
    images: &ImageDir,
) -> Result<RegularFile, FileError> {
    let reg = record(path, meta);
    if !deleted {
        return Ok(reg);
    }
    // Its contents are read (and its handle opened) through its /proc link: not to be seen
    // by a watch on it.
    let _quiet = super::quiet_reads::quiet(state, source, meta);
    if reg.mode & 0o6000 != 0 && !images.only_root_writes() {
        return Err(FileError::Invalid {
            id,
            detail: format!(
                "deleted file {} is set-uid or set-gid (owner uid {}): refused, a restore would \
                 have to create a set-id copy of it (done only from an image only root writes)",
                reg.path, reg.uid
            ),
        });
    }
    // Its contents would come back in a file elsewhere, of base pages (the fds are refused
    // before, naming them; a mapping is by its hugetlb flag).
    if let Ok(Some(_)) = crate::memory::hugetlb::page_size_at(source) {
        return Err(FileError::Invalid {
            id,
            detail: format!(
                "deleted file {} is on a hugetlbfs mount: refused (not supported yet)",
                reg.path
            ),
        });
    }
    if meta.nlink() > 0 {
        let linked = linked_inode(id, &reg, source)?;
        debug!(id, path = %reg.path, nlink = meta.nlink(), "deleted name of a file linked elsewhere");
        return Ok(RegularFile {
            deleted: true,
            linked: Some(linked),
            ..reg
        });
    }
    // A restore makes a deleted file again where it was, through a writable copy of its
    // mount when only the mount is read-only; a read-only filesystem takes no new file.
    if crate::sys::mount::filesystem_read_only(source).unwrap_or(false) {
        return Err(FileError::Invalid {
            id,
            detail: format!(
                "deleted file {} is on a read-only filesystem (its superblock, not only its \
                 mount): a restore could not make it again there",
                reg.path
            ),
        });
    }
    if let Some(limit) = state.get::<GhostLimit>().0.filter(|&limit| reg.size > limit) {
        return Err(FileError::Invalid {
            id,
            detail: format!(
                "deleted file {} holds {} bytes, above --ghost-limit {limit}: its contents are \
                 not copied into the image (raise the limit)",
                reg.path, reg.size
            ),
        });
    }
    let saved = state.get::<GhostImages>();
    let (raw, extents) = match saved.0.get(&key) {
        Some(saved) => saved.clone(),
        None => {
            let saved_now = write_ghost(id, source, reg.size, images).map_err(|e| {
                FileError::SaveGhost {
                    id,
                    path: reg.path.clone(),
                    image: names::ghost(id),
                    source: e,
                }
            })?;
            let (raw, extents) = &saved_now;
            debug!(id, ghost = %raw.name, size = reg.size, data = raw.size, extents = extents.len(), "deleted file contents saved");
            saved.0.insert(key, saved_now.clone());
            saved_now
        }
    };
    let attrs = super::inode_attrs::read(source, true).map_err(|e| FileError::Invalid {
        id,
        detail: format!("deleted file {}: {e}", reg.path),
    })?;
    Ok(RegularFile {
        deleted: true,
        contents: Some(raw),
        sparse: true,
        extents,
        attrs: Some(attrs),
        ..reg
    })
}

/// The handle of the inode behind `source`, a deleted name of file `reg` that has another
/// link, checked to open that inode again from the original directory (what a restore does).
fn linked_inode(id: u32, reg: &RegularFile, source: &Path) -> Result<LinkedInode, FileError> {
    let refuse = |why: String| FileError::Invalid {
        id,
        detail: format!(
            "{} ({}): deleted name of a file linked elsewhere: {why}",
            reg.path,
            source.display()
        ),
    };
    let (h, _mount) = handle::name_to_handle(source)
        .map_err(|e| refuse(format!("its filesystem gives no file handle ({e}): refused")))?;
    let linked = LinkedInode {
        handle_type: h.handle_type,
        handle: h.bytes,
        ..Default::default()
    };
    // The restore opens it in the process's mount namespace (made again): its path is the
    // process's, looked up through its root when that namespace is not cryo's.
    let holder = holder_of(source);
    let (_, st, dir) = open_linked(reg, &linked, holder)
        .map_err(|e| refuse(format!("{e}: a restore could not open it again, refused")))?;
    if (st.st_dev, st.st_ino) != (reg.dev, reg.ino) {
        return Err(refuse("its handle opens another inode: refused".into()));
    }
    // A process in a user namespace of its own opens it at restore from inside, where
    // open_by_handle_at is refused (it needs CAP_DAC_READ_SEARCH over the initial one):
    // another of its names in its directory (or in the nearest one left above it, when that
    // was removed too) leads to it there (zdtm unlink_fstat03).
    if let Some(pid) = holder.filter(|&p| crate::task::namespaces::other_than_cryos(p, "user"))
    {
        // The directory the handle was opened through: its own, or the nearest one left.
        let seen = crate::task::mount_ns::as_seen_by(pid, &dir.to_string_lossy());
        let other = other_name_in(&seen, reg.dev, reg.ino).map(|name| dir.join(name));
        match other {
            Some(other) => {
                return Ok(LinkedInode {
                    other_name: other.to_string_lossy().into_owned(),
                    ..linked
                })
            }
            // In a mount namespace of its own the file may be on a tmpfs the restore copies,
            // where another of its names is found (task::mount_ns): judged there.
            None if crate::task::namespaces::other_than_cryos(pid, "mnt") => {}
            None => {
                return Err(refuse(
                    "its process is in a user namespace of its own, where a restore may not \
                     open it by its handle (open_by_handle_at needs CAP_DAC_READ_SEARCH over \
                     the initial one), and no other name of it is in its directory: refused"
                        .into(),
                ))
            }
        }
    }
    Ok(linked)
}

/// The name of an entry of directory `dir` that is inode `ino` of device `dev`.
fn other_name_in(dir: &Path, dev: u64, ino: u64) -> Option<std::ffi::OsString> {
    fs::read_dir(dir).ok()?.flatten().find_map(|entry| {
        let meta = entry.metadata().ok()?;
        ((meta.dev(), meta.ino()) == (dev, ino)).then(|| entry.file_name())
    })
}

/// The process whose fd `source` (/proc/PID/fd/N) is.
fn holder_of(source: &Path) -> Option<nix::unistd::Pid> {
    let rest = source.strip_prefix("/proc").ok()?;
    let pid = rest.components().next()?.as_os_str().to_str()?.parse().ok()?;
    Some(nix::unistd::Pid::from_raw(pid))
}

/// Opens (O_PATH) the inode `linked` names, on the filesystem of the directory of `reg.path`
/// (or of the nearest directory above it left: the deleted name's own directory may have
/// been removed too, zdtm unlink_regular00); with its stat. The path is `holder`'s (at dump:
/// its fd's link names it as its mount namespace shows it), else the caller's.
fn open_linked(
    reg: &RegularFile,
    linked: &LinkedInode,
    holder: Option<nix::unistd::Pid>,
) -> io::Result<(OwnedFd, nix::sys::stat::FileStat, PathBuf)> {
    let dir = Path::new(&reg.path).parent().unwrap_or(Path::new("/"));
    let open_dir = |d: &Path| {
        let seen = match holder {
            Some(pid) => crate::task::mount_ns::as_seen_by(pid, &d.to_string_lossy()),
            None => crate::task::mount_ns::NamespacePath::plain(d.to_path_buf()),
        };
        nix::fcntl::open(&*seen, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
    };
    let mount = dir
        .ancestors()
        .find_map(|d| match open_dir(d) {
            Err(nix::errno::Errno::ENOENT) => None,
            other => Some((d, other)),
        })
        .ok_or_else(|| io::Error::other(format!("directory {}: gone", dir.display())))
        .and_then(|(d, opened)| {
            let fd = opened.map_err(|e| io::Error::other(format!("directory {}: {e}", d.display())))?;
            let on = nix::sys::stat::fstat(&fd)?.st_dev;
            if d != dir && on != reg.dev {
                return Err(io::Error::other(format!(
                    "directory {} is gone, and {} above it is on another filesystem",
                    dir.display(),
                    d.display()
                )));
            }
            Ok((fd, d.to_path_buf()))
        })?;
    let (mount, found_in) = mount;
    let h = FileHandle {
        handle_type: linked.handle_type,
        bytes: linked.handle.clone(),
    };
    let fd = handle::open_by_handle(mount.as_fd(), &h, libc::O_PATH | libc::O_CLOEXEC)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ESTALE) => io::Error::other("the file is gone (its other links were removed)"),
            _ => io::Error::other(format!("open_by_handle_at: {e}")),
        })?;
    let st = nix::sys::stat::fstat(&fd)?;
    Ok((fd, st, found_in))
}

/// The inode of deleted file `reg` (linked elsewhere) opened again (O_PATH) and checked to be
/// the file the dump saw.
fn reopen_linked(
    desc: &FileDesc,
    reg: &RegularFile,
    linked: &LinkedInode,
    images: &ImageDir,
) -> Result<OwnedFd, FileError> {
    if !linked.path_in_namespace.is_empty() {
        // On the namespace's own tmpfs, made again (new inodes): another of its names there.
        let fd = nix::fcntl::open(
            Path::new(&linked.path_in_namespace),
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| changed(desc, format!("its other name {}: {e}", linked.path_in_namespace)))?;
        let st = nix::sys::stat::fstat(&fd).map_err(|e| restore_err(desc, "fstat", e.into()))?;
        same_file(desc, reg, &st, Identity::File, images)?;
        return Ok(fd);
    }
    let (fd, st) = match open_linked(reg, linked, None).map(|(fd, st, _)| (fd, st)) {
        // In a user namespace of its own (its handle is refused there): its other name.
        Err(e) if !linked.other_name.is_empty() => {
            let fd = open_no_symlinks(
                &linked.other_name,
                OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            )
            .map_err(|n| {
                changed(desc, format!("{e}; its other name {}: {n}", linked.other_name))
            })?;
            let st = nix::sys::stat::fstat(&fd).map_err(|e| restore_err(desc, "fstat", e.into()))?;
            (fd, st)
        }
        opened => opened.map_err(|e| changed(desc, e.to_string()))?,
    };
    if (st.st_dev, st.st_ino) != (reg.dev, reg.ino) {
        return Err(changed(desc, "its file handle or other name opens another inode"));
    }
    same_file(desc, reg, &st, Identity::File, images)?;
    Ok(fd)
}

/// Puts the inode `inode` (linked elsewhere) under its original name `reg.path` for an
/// instant and returns an O_PATH fd on that name, unlinked: its fds read "PATH (deleted)" as
/// at the dump. If the path is taken, `inode` itself (named by another of its links).
fn renamed_deleted(desc: &FileDesc, reg: &RegularFile, inode: OwnedFd) -> Result<OwnedFd, FileError> {
    let path = Path::new(&reg.path);
    // Its directory removed too (zdtm unlink_regular00): made for the instant, removed after
    // (in the uns flavour its fd read the other name, not deleted, before 2026-12-07).
    let Ok((named, unlinked)) = hold_by_name(desc, reg, &self_fd(inode.as_raw_fd()), path, true)
    else {
        debug!(id = desc.id, path = %reg.path, "original name not free: the fds name the file by another link");
        return Ok(inode);
    };
    let named = named.map_err(|e| restore_err(desc, "open the file linked back", e.into()))?;
    unlinked.map_err(|e| restore_err(desc, "unlink the file linked back", e))?;
    // The inode linked (on a copied tmpfs a new one: not the dump's device and inode).
    let stat = |fd: &OwnedFd| nix::sys::stat::fstat(fd).map_err(|e| restore_err(desc, "fstat", e.into()));
    let (st, linked) = (stat(&named)?, stat(&inode)?);
    if (st.st_dev, st.st_ino) != (linked.st_dev, linked.st_ino) {
        return Err(changed(desc, format!("{} was replaced while linked back", reg.path)));
    }
    Ok(named)
}

/// Links the file `from` (/proc/self/fd/N of an fd on it: AT_SYMLINK_FOLLOW, where
/// AT_EMPTY_PATH would need CAP_DAC_READ_SEARCH over the initial user namespace) at `path`
/// for an instant, opens it there O_PATH and unlinks the name at once, whatever the open did
/// (the name was free before the link): the fd reads "PATH (deleted)". With `make_dirs`, the
/// missing directories above `path` are made for the instant too (removed after: the fd
/// reads the name through them, as when they were removed with it). Link and directories are
/// made as `reg`'s owner can be given them: in a user namespace where cryo's root is
/// unmapped, ones made by cryo's root on the namespace's tmpfs fail EOVERFLOW. Err: the link
/// failed (the name not free, its directory gone), nothing is left; else the open's and the
/// unlink's outcomes.
fn hold_by_name(
    desc: &FileDesc,
    reg: &RegularFile,
    from: &Path,
    path: &Path,
    make_dirs: bool,
) -> Result<(nix::Result<OwnedFd>, io::Result<()>), nix::Error> {
    let (made, linked) = crate::task::userns::make_for(reg.uid, reg.gid, || {
        let made = if make_dirs {
            make_missing_dirs(path.parent().unwrap_or(Path::new("/")))
        } else {
            Vec::new()
        };
        let linked = nix::unistd::linkat(
            nix::fcntl::AT_FDCWD,
            from,
            nix::fcntl::AT_FDCWD,
            path,
            nix::fcntl::AtFlags::AT_SYMLINK_FOLLOW,
        );
        (made, linked)
    });
    let remove_made = || {
        for d in made.iter().rev() {
            if let Err(e) = fs::remove_dir(d) {
                debug!(id = desc.id, dir = %d.display(), error = %e, "directory made for a deleted name not removed");
            }
        }
    };
    if let Err(e) = linked {
        remove_made();
        debug!(id = desc.id, path = %path.display(), error = %e, "deleted name not free");
        return Err(e);
    }
    let named = nix::fcntl::open(path, OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty());
    let unlinked = fs::remove_file(path);
    remove_made();
    Ok((named, unlinked))
}

/// Makes the directories of `dir` that are missing (mode 0700, root's: for an instant), the
/// topmost first; those made.
fn make_missing_dirs(dir: &Path) -> Vec<std::path::PathBuf> {
    let missing: Vec<&Path> = dir.ancestors().take_while(|d| !d.exists()).collect();
    let mut made = Vec::new();
    for d in missing.into_iter().rev() {
        if fs::DirBuilder::new().mode(0o700).create(d).is_err() {
            break;
        }
        made.push(d.to_path_buf());
    }
    made
}

/// The message about an offset beyond the end of a file truncated since the dump.
fn truncated(desc: &FileDesc, reg: &RegularFile, now: u64) -> String {
    // The size now is not said: a forged record must learn nothing of the file it names.
    let _ = now;
    format!(
        "offset {} is beyond the end: the file was truncated since the dump ({} bytes then)",
        desc.pos, reg.size
    )
}

/// Checks the contents image of a deleted file (once per image).
pub(super) fn validate_ghost(
    desc: &FileDesc,
    reg: &RegularFile,
    cx: &mut Checking<'_>,
) -> Result<(), FileError> {
    if let Some(linked) = &reg.linked {
        if !Path::new(&reg.path).is_absolute() {
            return Err(FileError::Invalid {
                id: desc.id,
                detail: format!("path {:?} is not absolute", reg.path),
            });
        }
        // On the namespace's own tmpfs, made by the restore: checked when the process opens
        // it there.
        if !linked.path_in_namespace.is_empty() {
            return Ok(());
        }
        return reopen_linked(desc, reg, linked, cx.images).map(drop);
    }
    let raw = reg.contents.as_ref().ok_or_else(|| FileError::Invalid {
        id: desc.id,
        detail: format!("deleted file {} has no contents image", reg.path),
    })?;
    if reg.sparse {
        // Checked with its raw image (once per image, below).
    } else if raw.size != reg.size {
        return Err(FileError::Invalid {
            id: desc.id,
            detail: format!(
                "deleted file {} was {} bytes but its contents image {} holds {}",
                reg.path, reg.size, raw.name, raw.size
            ),
        });
    }
    // Made unnamed (no name ever leads to it), it is reached as the original was: through
    // the process's fds, by whoever may reach those.
    if reg.mode & 0o6000 != 0 && !cx.images.only_root_writes() {
        return Err(FileError::Invalid {
            id: desc.id,
            detail: format!(
                "deleted file {} is set-uid or set-gid (owner uid {}): its copy is made only \
                 from an image only root writes (restored by root)",
                reg.path, reg.uid
            ),
        });
    }
    if !Path::new(&reg.path).is_absolute() {
        return Err(FileError::Invalid {
            id: desc.id,
            detail: format!("path {:?} is not absolute", reg.path),
        });
    }
    if cx.first(format!("raw {}", raw.name), desc.id).is_none() {
        if reg.sparse {
            shmem::check_extents(desc, reg.size, raw, &reg.extents, cx.images)?;
        } else {
            cx.images.check_raw(raw).map_err(|e| FileError::Contents {
                id: desc.id,
                source: Box::new(e),
            })?;
        }
    }
    Ok(())
}

/// Regular files (and O_PATH fds on anything), deleted ones with their contents.
pub(super) struct Regular;

impl FileKind for Regular {
    type Record = RegularFile;

    fn record(kind: &Kind) -> Option<&RegularFile> {
        match kind {
            Kind::Regular(r) => Some(r),
            _ => None,
        }
    }

    fn claims(&self, fd: &Dumping<'_>) -> bool {
        matches!(fd.seen, Seen::Regular { .. })
    }

    fn dump(&self, fd: &mut Dumping<'_>) -> Result<Kind, FileError> {
        let Seen::Regular { path, deleted } = &fd.seen else {
            return Err(fd.open.refuse("not a regular file", false));
        };
        let source = fd.open.proc_path();
        // Its contents would come back in a file elsewhere, of base pages.
        if *deleted && matches!(crate::memory::hugetlb::page_size_at(&source), Ok(Some(_))) {
            return Err(fd.open.refuse("a deleted file on a hugetlbfs mount", true));
        }
        let (path, deleted) = (path.clone(), *deleted);
        // A deleted file's copy gets its inode flags before its descriptions are opened.
        refuse_write_open_denied(fd)?;
        let reg = dump_file(
            fd.state,
            fd.id,
            fd.key,
            path,
            deleted,
            fd.meta,
            &source,
            fd.images,
        )?;
        Ok(Kind::Regular(reg))
    }

    fn validate(
        &self,
        desc: &FileDesc,
        reg: &RegularFile,
        cx: &mut Checking<'_>,
    ) -> Result<(), FileError> {
        if reg.deleted {
            return validate_ghost(desc, reg, cx);
        }
        // Its path leads to it only in the mount namespace the restore makes: checked when
        // the process opens it there.
        // Its path leads to it in the parent's mount namespace, which the restore may make
        // (a process of the dump's): checked when the process opens it.
        if reg.in_mount_namespace || desc.parent_mount_namespace {
            return Ok(());
        }
        let o_path = desc.flags & libc::O_PATH as u32 != 0;
        if o_path {
            fs::symlink_metadata(&reg.path).map_err(|_| changed(desc, "the file is gone"))?;
            return Ok(());
        }
        let st = identify(desc, reg)?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err(changed(desc, "is no longer a regular file"));
        }
        let size = st.st_size as u64;
        if desc.pos > size && size < reg.size {
            return Err(changed(desc, truncated(desc, reg, size)));
        }
        same_file(desc, reg, &st, Identity::File, cx.images)
    }

    fn open(
        &self,
        desc: &FileDesc,
        reg: &RegularFile,
        cx: &mut Opening<'_>,
    ) -> Result<Opened, FileError> {
        let (images, descs) = (cx.images, cx.descs);
        open(desc, reg, false, cx.state.get::<Ghosts>(), images, descs).map(Opened::Now)
    }

    fn hand_down(&self) -> bool {
        true
    }

    fn open_for_mapping(
        &self,
        desc: &FileDesc,
        reg: &RegularFile,
        to: &MapOpen<'_>,
    ) -> Result<OwnedFd, FileError> {
        open_for_mapping(desc, reg, to)
    }

    fn describe(&self, _desc: &FileDesc, r: &RegularFile) -> String {
        if r.deleted {
            format!("deleted file {}", r.path)
        } else {
            format!("regular file {}", r.path)
        }
    }

    fn show(&self, desc: &FileDesc, r: &RegularFile, flags: &str) -> String {
        let mut s = format!("{}  pos {}  flags {flags}", r.path, desc.pos);
        if r.deleted {
            let contents = r
                .contents
                .as_ref()
                .map(|c| format!(", contents in {} ({} bytes)", c.name, c.size))
                .unwrap_or_default();
            s.push_str(&format!("  (deleted{contents})"));
        }
        s
    }

    fn name(&self, _desc: &FileDesc, r: &RegularFile) -> String {
        r.path.clone()
    }
}

/// Directories, reopened by path (their position is best effort).
pub(super) struct Directory;

impl FileKind for Directory {
    type Record = RegularFile;

    fn record(kind: &Kind) -> Option<&RegularFile> {
        match kind {
            Kind::Directory(r) => Some(r),
            _ => None,
        }
    }

    fn claims(&self, fd: &Dumping<'_>) -> bool {
        matches!(fd.seen, Seen::Directory { .. })
    }

    fn dump(&self, fd: &mut Dumping<'_>) -> Result<Kind, FileError> {
        let Seen::Directory {
            path,
            deleted,
            cgroup,
        } = &fd.seen
        else {
            return Err(fd.open.refuse("not a directory", false));
        };
        let attrs = if *deleted {
            fd.open.refuse_on_read_only_mount("removed directory")?;
            let source = fd.open.proc_path();
            // Read through an open of its own: not to be seen by a watch on it.
            let _quiet = super::quiet_reads::quiet(fd.state, &source, fd.meta);
            let attrs = super::inode_attrs::read(&source, true)
                .map_err(|e| fd.open.refuse(format!("removed directory {path}: {e}"), false))?;
            Some(attrs)
        } else {
            None
        };
        Ok(Kind::Directory(RegularFile {
            deleted: *deleted,
            cgroup_dir: *cgroup,
            attrs,
            ..record(path.clone(), fd.meta)
        }))
    }

    fn validate(
        &self,
        desc: &FileDesc,
        reg: &RegularFile,
        cx: &mut Checking<'_>,
    ) -> Result<(), FileError> {
        if reg.deleted || reg.in_mount_namespace || desc.parent_mount_namespace || reg.cgroup_dir
        {
            // Made again at restore (a cgroup's by the cgroup step, after this check), or
            // found in the process's mount namespace: nothing on this host to check now.
            return Ok(());
        }
        let st = identify(desc, reg)?;
        if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
            return Err(changed(desc, "is no longer a directory"));
        }
        same_file(desc, reg, &st, Identity::Directory, cx.images)
    }

    fn open(
        &self,
        desc: &FileDesc,
        reg: &RegularFile,
        cx: &mut Opening<'_>,
    ) -> Result<Opened, FileError> {
        let (images, descs) = (cx.images, cx.descs);
        open(desc, reg, true, cx.state.get::<Ghosts>(), images, descs).map(Opened::Now)
    }

    fn hand_down(&self) -> bool {
        true
    }

    fn describe(&self, _desc: &FileDesc, r: &RegularFile) -> String {
        format!("directory {}", r.path)
    }

    fn show(&self, _desc: &FileDesc, r: &RegularFile, flags: &str) -> String {
        format!("{} (directory)  flags {flags}", r.path)
    }

    fn name(&self, _desc: &FileDesc, r: &RegularFile) -> String {
        r.path.clone()
    }
}

/// Copies the data extents of a deleted file of `size` bytes, read through `source`
/// (/proc/PID/fd/N or a map_files link: a description of cryo's own, so the process's offset
/// does not move), back to back into the ghost image of description `id`.
fn write_ghost(
    id: u32,
    source: &Path,
    size: u64,
    images: &ImageDir,
) -> Result<(RawFileRef, Vec<FileExtent>), io::Error> {
    // O_NOATIME: the copy leaves the access time as the process left it (--leave-running).
    let src = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOATIME)
        .open(source)?;
    let saved = shmem::save_extents(&src, size, names::ghost(id), images)?;
    if let Ok(out) = images.open_raw(&saved.0.name) {
        out.sync_data().ok();
    }
    Ok(saved)
}

thread_local! {
    /// Ghost files recreated by this process: (image dir, ghost name) -> dev+ino of the
    /// recreated inode. A restored task recreates each ghost once, for its fds and its maps.
    static RECREATED: RefCell<HashMap<(PathBuf, String), InodeKey>> =
        RefCell::new(HashMap::new());
}

thread_local! {
    /// Removed files and directories a bind of this process's mount namespace shows, made
    /// again for the bind by this process (task/mount_ns.rs): the path in the namespace of each
    /// description of them it holds -> the fd number it holds it at (O_PATH, taken at that path
    /// while the object was there), its inode and its mount's id.
    static REMOVED_BOUND: RefCell<HashMap<String, (i32, InodeKey, u32)>> =
        RefCell::new(HashMap::new());
}

/// Takes `fd` (O_PATH on a removed object a bind shows, opened at `path` in the mount
/// namespace being made while it was made again there) as the one through which this
/// process opens its descriptions of `path` marked `removed_bound`. The fd stays open on
/// purpose, unowned (restore/child.rs moves it above every slot, keeps it while the process
/// and its children open their fds, then closes it), and checked to be still the same when
/// used.
pub(crate) fn hold_removed_bound(path: &str, fd: OwnedFd) -> io::Result<()> {
    use std::os::fd::IntoRawFd;
    let meta = fs::metadata(self_fd(fd.as_raw_fd()))?;
    let mount = crate::sys::mount::mount_id(fd.as_fd())?;
    let raw = fd.into_raw_fd();
    REMOVED_BOUND.with(|r| {
        r.borrow_mut()
            .insert(path.to_owned(), (raw, InodeKey::of(&meta), mount))
    });
    Ok(())
}

/// Moves the fds [`hold_removed_bound`] took to numbers at least `min` (above every fd and
/// slot of the restore's tree), where no process of it places anything: each process keeps
/// them ([`removed_bound_fds`]) until it opened its own fds and forked its children, which
/// open theirs through the copies they inherit.
pub(crate) fn raise_removed_bound(min: RawFd) -> io::Result<()> {
    use std::os::fd::IntoRawFd;
    REMOVED_BOUND.with(|r| {
        for (raw, _, _) in r.borrow_mut().values_mut().filter(|(raw, _, _)| *raw < min) {
            let moved = crate::sys::fd::dup_at_least(crate::sys::fd::borrow_raw(*raw), min)?;
            let _ = nix::unistd::close(*raw);
            *raw = moved.into_raw_fd();
        }
        Ok(())
    })
}

/// The fd numbers [`hold_removed_bound`] took (here or in an ancestor of the restore).
pub(crate) fn removed_bound_fds() -> Vec<RawFd> {
    REMOVED_BOUND.with(|r| r.borrow().values().map(|(raw, _, _)| *raw).collect())
}

/// Closes the fds [`hold_removed_bound`] took, once the process and its children are done
/// with them.
pub(crate) fn close_removed_bound() {
    REMOVED_BOUND.with(|r| {
        for (_, (raw, _, _)) in r.borrow_mut().drain() {
            let _ = nix::unistd::close(raw);
        }
    });
}

/// /proc/self/fd/N of the fd [`hold_removed_bound`] took for `reg` (`removed_bound`), checked
/// to be still open on that inode and mount.
fn removed_bound_handle(desc: &FileDesc, reg: &RegularFile) -> Result<PathBuf, FileError> {
    let held = REMOVED_BOUND.with(|r| r.borrow().get(&reg.path).copied());
    let refused = |why: &str| FileError::Invalid {
        id: desc.id,
        detail: format!(
            "removed {} shown by a bind of its mount namespace: {why}",
            reg.path
        ),
    };
    let (raw, inode, mount) =
        held.ok_or_else(|| refused("not made again for the bind by this process"))?;
    let path = self_fd(raw);
    let still = fs::metadata(&path).ok().map(|m| InodeKey::of(&m))
        == Some(inode)
        // Open (stat found it): borrowed for the statx alone.
        && crate::sys::mount::mount_id(crate::sys::fd::borrow_raw(raw)).ok() == Some(mount);
    if !still {
        return Err(refused("the fd held on it since it was made is gone"));
    }
    debug!(id = desc.id, path = %reg.path, via = %path.display(), "removed file opened through the bind's");
    Ok(path)
}

/// The ghost files one restore call is working with; created files are held open here until
/// the call is done (they are already unlinked).
#[derive(Debug, Default)]
pub(super) struct Ghosts {
    /// By ghost: O_PATH fds on its recreated inode, the one it was made through first, then
    /// one on each other deleted name of it the dump saw (made for an instant, see
    /// [`link_other_names`]): a description reopens through the one that reads its own name.
    made: HashMap<String, Vec<OwnedFd>>,
}

impl Ghosts {
    /// A path through which the recreated ghost of `reg` can be opened: /proc/self/fd/N of an
    /// fd holding it (recreating it first if this process holds none), by the deleted name of
    /// `reg` when one can be had. `descs`: every description of the dump, whose other deleted
    /// names of the same file the recreation gives it too.
    pub(super) fn handle(
        &mut self,
        desc: &FileDesc,
        reg: &RegularFile,
        images: &ImageDir,
        descs: &[FileDesc],
    ) -> Result<PathBuf, FileError> {
        self.handle_or_tmpfile(desc, reg, images, None, descs)
            .map(|(path, _)| path)
    }

    /// [`Self::handle`]; when `tmpfile` (the open flags of description `desc`, which was
    /// made by open(O_TMPFILE)) is given and this call recreates the ghost, it is made by
    /// such an open in the same directory and that fd is returned too: the description's
    /// own, whose F_GETFL shows O_TMPFILE as the original's did (no reopen can).
    fn handle_or_tmpfile(
        &mut self,
        desc: &FileDesc,
        reg: &RegularFile,
        images: &ImageDir,
        tmpfile: Option<OFlag>,
        descs: &[FileDesc],
    ) -> Result<(PathBuf, Option<OwnedFd>), FileError> {
        if reg.removed_bound {
            return removed_bound_handle(desc, reg).map(|path| (path, None));
        }
        let directory = reg.mode & libc::S_IFMT == libc::S_IFDIR;
        let name = match (&reg.linked, &reg.contents) {
            _ if directory => format!("directory {}:{}", reg.dev, reg.ino),
            (Some(_), _) => format!("linked {}:{}", reg.dev, reg.ino),
            (None, Some(raw)) => raw.name.clone(),
            (None, None) => {
                return Err(FileError::Invalid {
                    id: desc.id,
                    detail: "deleted file without contents".into(),
                })
            }
        };
        // A file linked elsewhere can be linked back at each of its deleted names, whenever:
        // one this process holds by another name is not taken for it.
        let any_name = reg.linked.is_none();
        if let Some(held) = self.made.get(&name) {
            let named = held
                .iter()
                .map(|fd| self_fd(fd.as_raw_fd()))
                .find(|path| reads_deleted(path, &reg.path));
            match named {
                Some(path) => return Ok((path, None)),
                None if any_name => return Ok((self_fd(held[0].as_raw_fd()), None)),
                None => {}
            }
        }
        let key = (images.path().to_owned(), name.clone());
        if let Some(inode) = RECREATED.with(|r| r.borrow().get(&key).copied()) {
            match find_open(inode, &reg.path) {
                Some((path, named)) if named || any_name => {
                    debug!(id = desc.id, ghost = %name, via = %path.display(), named, "ghost file reused");
                    return Ok((path, None));
                }
                _ => {}
            }
        }
        let mut own = None;
        let mut others = Vec::new();
        let fd = match (&reg.linked, &reg.contents) {
            _ if directory => recreate_dir(desc, reg)?,
            (Some(linked), _) => {
                let inode = reopen_linked(desc, reg, linked, images)?;
                renamed_deleted(desc, reg, inode)?
            }
            (None, Some(raw)) if reg.mode & 0o6000 != 0 => {
                let names = other_names(descs, reg, raw);
                let (fd, also) = recreate_set_id(desc, reg, raw, images, &names)?;
                others = also;
                fd
            }
            (None, Some(raw)) => match tmpfile.map(|flags| recreate_tmpfile(desc, reg, raw, images, flags)) {
                Some(Ok((fd, desc_fd))) => {
                    own = Some(desc_fd);
                    fd
                }
                Some(Err(e)) => {
                    debug!(id = desc.id, path = %reg.path, error = %e, "no O_TMPFILE in the directory: a ghost made elsewhere");
                    recreate(desc, reg, raw, images, &[])?.0
                }
                None => {
                    let names = other_names(descs, reg, raw);
                    let (fd, also) = recreate(desc, reg, raw, images, &names)?;
                    others = also;
                    fd
                }
            },
            (None, None) => unreachable!("refused above"),
        };
        // Last, once it is filled, named and unlinked: an immutable or append-only inode
        // takes none of that. (One held O_PATH on a read-only mount was given them through
        // its writable copy: recreate_on_read_only_mount.)
        let held_by_path = nix::fcntl::fcntl(&fd, FcntlArg::F_GETFL)
            .is_ok_and(|f| f & libc::O_PATH != 0);
        if let Some(attrs) = reg.attrs.as_ref().filter(|_| !held_by_path) {
            super::inode_attrs::give_flags(fd.as_fd(), attrs)
                .map_err(|e| restore_err(desc, "give the recreated file its inode flags", e))?;
        }
        // Held as O_PATH until the call is done: its close then sends no event (an inotify
        // watch on it or on its directory would see an IN_CLOSE_WRITE no process did).
        let fd = nix::fcntl::open(
            &self_fd(fd.as_raw_fd()),
            OFlag::O_PATH | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| restore_err(desc, "hold the recreated file", e.into()))?;
        let meta = fs::metadata(self_fd(fd.as_raw_fd()))
            .map_err(|e| restore_err(desc, "stat the recreated file", e))?;
        RECREATED.with(|r| r.borrow_mut().insert(key, InodeKey::of(&meta)));
        let path = self_fd(fd.as_raw_fd());
        let held = self.made.entry(name).or_default();
        held.push(fd);
        held.extend(others);
        Ok((path, own))
    }
}

/// Whether the fd at `fd_path` (/proc/self/fd/N) reads "`path` (deleted)": it holds the
/// removed dentry of that name.
fn reads_deleted(fd_path: &Path, path: &str) -> bool {
    fs::read_link(fd_path).is_ok_and(|text| {
        text.as_os_str().as_encoded_bytes().strip_suffix(b" (deleted)") == Some(path.as_bytes())
    })
}

/// The other deleted names of the file of `reg` (a ghost, contents image `raw`) the dump saw:
/// the paths of its other descriptions (fds, mappings, in any process), each once.
fn other_names<'d>(descs: &'d [FileDesc], reg: &RegularFile, raw: &RawFileRef) -> Vec<&'d str> {
    let mut names: Vec<&str> = descs
        .iter()
        // One made by open(O_TMPFILE) has no name, but "#INO".
        .filter(|d| d.flags & TMPFILE_BIT == 0)
        .filter_map(|d| match &d.kind {
            Some(Kind::Regular(r))
                if r.deleted
                    && r.linked.is_none()
                    && !r.removed_bound
                    && r.path != reg.path
                    && r.contents.as_ref().is_some_and(|c| c.name == raw.name) =>
            {
                Some(r.path.as_str())
            }
            _ => None,
        })
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// Links the recreated file `file`, still linked at its first name, at each of `names` that
/// is free, opens it there (O_PATH) and unlinks that name again at once: a description of
/// that deleted name reopens through that fd and reads "NAME (deleted)", as at the dump (zdtm
/// link10: two hard links, an fd opened by each, both unlinked). A name that is taken, or
/// whose directory is gone, is left: its descriptions read the first name. Returns the fds.
fn link_other_names(desc: &FileDesc, reg: &RegularFile, file: &File, names: &[&str]) -> Vec<OwnedFd> {
    let from = self_fd(file.as_raw_fd());
    let inode = file.metadata().ok().map(|m| (m.dev(), m.ino()));
    let mut held = Vec::new();
    for &name in names {
        let Ok((opened, unlinked)) = hold_by_name(desc, reg, &from, Path::new(name), false) else {
            debug!(id = desc.id, name, "its descriptions read the first name");
            continue;
        };
        if let Err(e) = unlinked {
            debug!(id = desc.id, name, error = %e, "other deleted name not unlinked");
        }
        match opened {
            Ok(fd)
                if fs::metadata(self_fd(fd.as_raw_fd()))
                    .is_ok_and(|m| Some((m.dev(), m.ino())) == inode) =>
            {
                held.push(fd)
            }
            _ => debug!(id = desc.id, name, "other deleted name not held: replaced meanwhile"),
        }
    }
    held
}

/// /proc/self/fd/N of an fd of this process on the removed directory `dev`:`ino` of the dump,
/// made again by this restore for the process's fds (or its parent's, inherited), if any: its
/// working directory, removed too, is that same directory.
pub(crate) fn removed_dir_made(dev: u64, ino: u64) -> Option<PathBuf> {
    let name = format!("directory {dev}:{ino}");
    let inode = RECREATED.with(|r| {
        r.borrow()
            .iter()
            .find_map(|((_, n), inode)| (*n == name).then_some(*inode))
    })?;
    find_open(inode, "").map(|(path, _)| path)
}

/// /proc/self/fd/N.
fn self_fd(fd: i32) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{fd}"))
}

/// /proc/self/fd/N of an fd of this process open on `inode`, if any: one that reads
/// "`name` (deleted)" if there is one (then true), else any.
fn find_open(inode: InodeKey, name: &str) -> Option<(PathBuf, bool)> {
    let entries = fs::read_dir("/proc/self/fd").ok()?;
    let mut any = None;
    for entry in entries.flatten() {
        let path = entry.path();
        if fs::metadata(&path).ok().map(|m| InodeKey::of(&m)) != Some(inode) {
            continue;
        }
        if reads_deleted(&path, name) {
            return Some((path, true));
        }
        any.get_or_insert(path);
    }
    any.map(|path| (path, false))
}

/// Recreates the deleted file of `reg` with its contents, owner and mode, unlinked; returns
/// an O_RDWR fd on it, and O_PATH fds on it by each of `others` (its other deleted names:
/// [`link_other_names`]) that was free.
fn recreate(
    desc: &FileDesc,
    reg: &RegularFile,
    raw: &RawFileRef,
    images: &ImageDir,
    others: &[&str],
) -> Result<(OwnedFd, Vec<OwnedFd>), FileError> {
    let original = Path::new(&reg.path);
    // Made as its owner can be given it (in a user namespace: userns::make_for).
    let made = crate::task::userns::make_for(reg.uid, reg.gid, || {
        create_somewhere(original, images.path())
    });
    let (mut file, linked) = match made {
        Err(e) if e.raw_os_error() == Some(libc::EROFS) => {
            return recreate_on_read_only_mount(desc, reg, raw, images).map(|fd| (fd, Vec::new()))
        }
        made => made.map_err(|e| restore_err(desc, "recreate the deleted file", e))?,
    };
    let unlink = |linked: &Option<PathBuf>| {
        if let Some(path) = linked {
            let _ = fs::remove_file(path);
        }
    };
    let filled = fill(&mut file, reg, raw, images);
    // Its other names while it still has one (an unnamed one can get none).
    let held = match (&filled, &linked) {
        (Ok(()), Some(_)) => link_other_names(desc, reg, &file, others),
        _ => Vec::new(),
    };
    // Unlinked as soon as it is filled (or failed): it never outlives the restore.
    unlink(&linked);
    filled.map_err(|e| restore_err(desc, "fill the recreated deleted file", e))?;
    debug!(
        id = desc.id,
        path = %reg.path,
        at = %linked.as_deref().map_or("O_TMPFILE".into(), |p| p.display().to_string()),
        size = raw.size,
        other_names = held.len(),
        "deleted file recreated"
    );
    Ok((file.into(), held))
}

/// [`recreate`] in a directory on a mount that is read-only where its filesystem is not (a
/// bind mount remounted read-only after the file was opened): the file is made, filled and
/// unlinked through a writable copy of the mount (`sys::mount::writable_clone`), and held by
/// its name on the read-only mount itself before the unlink (O_PATH): the description is
/// opened there, on the mount the original's was on. Returns that O_PATH fd.
fn recreate_on_read_only_mount(
    desc: &FileDesc,
    reg: &RegularFile,
    raw: &RawFileRef,
    images: &ImageDir,
) -> Result<OwnedFd, FileError> {
    let err = |step: &'static str| move |e: io::Error| restore_err(desc, step, e);
    let original = Path::new(&reg.path);
    let dir = original.parent().unwrap_or(Path::new("/"));
    let base = original
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let writable = crate::sys::mount::writable_clone(dir)
        .map_err(err("recreate the deleted file (a writable copy of its read-only mount)"))?;
    let names = std::iter::once(base.clone())
        .chain((0..100).map(|n| hidden_name(&base, n)));
    // Made as its owner can be given it (in a user namespace: userns::make_for).
    let made = crate::task::userns::make_for(reg.uid, reg.gid, || {
        for name in names {
            match nix::fcntl::openat(
                &writable,
                name.as_str(),
                OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_RDWR | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o600),
            ) {
                Ok(fd) => return Ok(Some((File::from(fd), name))),
                Err(nix::errno::Errno::EEXIST) => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    })
    .map_err(|e| err("recreate the deleted file on its read-only mount")(e.into()))?;
    let (mut file, name) = made.ok_or_else(|| {
        err("recreate the deleted file")(io::Error::other("no free temporary name"))
    })?;
    let held = fill(&mut file, reg, raw, images)
        .map_err(err("fill the recreated deleted file"))
        .and_then(|()| {
            let held = nix::fcntl::open(&dir.join(&name), OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty())
                .map_err(|e| err("hold the recreated deleted file on its read-only mount")(e.into()))?;
            let (a, b) = (fs::metadata(self_fd(held.as_raw_fd())), file.metadata());
            match (a, b) {
                (Ok(a), Ok(b)) if (a.dev(), a.ino()) == (b.dev(), b.ino()) => Ok(held),
                _ => Err(err("hold the recreated deleted file on its read-only mount")(
                    io::Error::other("its name leads to another file"),
                )),
            }
        });
    // Unlinked as soon as it is filled (or failed): it never outlives the restore.
    let _ = nix::unistd::unlinkat(&writable, name.as_str(), nix::unistd::UnlinkatFlags::NoRemoveDir);
    let held = held?;
    if let Some(attrs) = &reg.attrs {
        super::inode_attrs::give_flags(file.as_fd(), attrs).map_err(err("give the recreated deleted file its inode flags"))?;
    }
    debug!(id = desc.id, path = %reg.path, size = raw.size, "deleted file recreated through a writable copy of its read-only mount");
    Ok(held)
}

/// Recreates the deleted file of `reg`, which description `desc` made with open(O_TMPFILE),
/// the same way: an open of its directory with O_TMPFILE and `flags` (the description's, O_APPEND
/// set once it is filled), then filled through a read-write reopen of it. Returns that
/// read-write fd (the ghost's handle) and the description's fd.
fn recreate_tmpfile(
    desc: &FileDesc,
    reg: &RegularFile,
    raw: &RawFileRef,
    images: &ImageDir,
    flags: OFlag,
) -> io::Result<(OwnedFd, OwnedFd)> {
    let dir = Path::new(&reg.path).parent().unwrap_or(Path::new("/"));
    let append = flags.contains(OFlag::O_APPEND);
    // Made as its owner can be given it (in a user namespace that does not map cryo's root,
    // an inode of cryo's ids cannot be made there: EOVERFLOW, zdtm fd01 and unlink_fstat041
    // in the uns flavour came back reopened, without O_TMPFILE).
    let own = crate::task::userns::make_for(reg.uid, reg.gid, || {
        nix::fcntl::open(dir, (flags - OFlag::O_APPEND) | OFlag::O_TMPFILE, Mode::from_bits_truncate(0o600))
    })?;
    let mut file: File = nix::fcntl::open(&self_fd(own.as_raw_fd()), OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty())?.into();
    fill(&mut file, reg, raw, images)?;
    if append {
        let now = nix::fcntl::fcntl(&own, FcntlArg::F_GETFL)?;
        nix::fcntl::fcntl(&own, FcntlArg::F_SETFL(OFlag::from_bits_retain(now) | OFlag::O_APPEND))?;
    }
    debug!(id = desc.id, path = %reg.path, size = raw.size, "deleted file recreated with O_TMPFILE");
    Ok((file.into(), own))
}

/// Recreates the deleted set-uid or set-gid file of `reg` (root's, from an image only root
/// writes: checked by validate_ghost) so that no name ever leads to it while it is set-id: at
/// its original path when that is free (O_CREAT|O_EXCL, mode 0600, its maker's), filled,
/// linked at its other deleted names `others` for an instant ([`link_other_names`]), unlinked
/// (checked: no link left; an unlinked inode can never be linked again, linkat gives ENOENT),
/// and only then given its owner and its mode with the set-id bits, through the fd: its fds
/// read "PATH (deleted)" as at the dump. The path taken or its directory gone: unnamed with
/// O_TMPFILE|O_EXCL (never to be linked) in its directory, or in the image directory if that is
/// gone. Its mode is checked: never a copy that lost its set-id bits. Returns an O_RDWR fd on
/// it and the O_PATH fds on its other names.
fn recreate_set_id(
    desc: &FileDesc,
    reg: &RegularFile,
    raw: &RawFileRef,
    images: &ImageDir,
    others: &[&str],
) -> Result<(OwnedFd, Vec<OwnedFd>), FileError> {
    let err = |step: &'static str| move |e: io::Error| restore_err(desc, step, e);
    let original = Path::new(&reg.path);
    let unnamed = |dir: &Path| {
        OpenOptions::new()
            .read(true)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_TMPFILE | libc::O_EXCL)
            .open(dir)
    };
    let dir = original.parent().unwrap_or(Path::new("/"));
    // Made as its owner can be given it (in a user namespace: userns::make_for).
    let (mut file, named) = crate::task::userns::make_for(reg.uid, reg.gid, || {
        // O_EXCL: never through a symbolic link put there.
        let at_its_path = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(original);
        match at_its_path {
            Ok(file) => Ok((file, true)),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EEXIST | libc::ENOENT)) => {
                if dir.is_dir() {
                    unnamed(dir)
                } else {
                    unnamed(images.path())
                }
                .map(|file| (file, false))
            }
            Err(e) => Err(e),
        }
    })
    .map_err(err("make the set-id deleted file again"))?;
    let mut held = Vec::new();
    if named {
        let filled = fill_data(&mut file, reg, raw, images);
        if filled.is_ok() {
            held = link_other_names(desc, reg, &file, others);
        }
        // Unlinked as soon as it is filled (or failed), before it is set-id: it never
        // outlives the restore.
        let unlinked = fs::remove_file(original);
        filled.map_err(err("fill the recreated set-id deleted file"))?;
        unlinked.map_err(err("unlink the recreated set-id deleted file"))?;
        let links = file
            .metadata()
            .map_err(err("stat the recreated set-id deleted file"))?
            .nlink();
        if links != 0 {
            return Err(restore_err(
                desc,
                "unlink the recreated set-id deleted file",
                io::Error::other(format!("it has {links} links left: linked by another meanwhile")),
            ));
        }
        give_attrs(&file, reg).map_err(err("give the recreated set-id deleted file its owner and mode"))?;
    } else {
        fill(&mut file, reg, raw, images).map_err(err("fill the recreated set-id deleted file"))?;
    }
    let mode = file
        .metadata()
        .map_err(err("stat the recreated set-id deleted file"))?
        .mode();
    if mode & 0o7777 != reg.mode & 0o7777 {
        return Err(restore_err(
            desc,
            "give the recreated set-id deleted file its owner and mode",
            io::Error::other(format!("its mode is {:o}, not {:o}", mode & 0o7777, reg.mode & 0o7777)),
        ));
    }
    debug!(id = desc.id, path = %reg.path, named, mode = format!("{:o}", reg.mode & 0o7777), "set-id deleted file recreated");
    Ok((file.into(), held))
}

/// The `n`th hidden name for an object made again beside a name (`base`) that is taken.
fn hidden_name(base: &str, n: u32) -> String {
    format!(".cryo-ghost-{}-{n}-{base}", std::process::id())
}

/// A directory made again for a removed one ([`make_dir_again`]), with the directories above
/// it made for it.
#[derive(Debug)]
pub(crate) struct DirMadeAgain {
    /// Where it was made.
    pub(crate) path: PathBuf,
    /// The missing directories above it made for it, the topmost first.
    above: Vec<PathBuf>,
}

impl DirMadeAgain {
    /// Removes it, then the directories made for it, the lowest first: an fd on it then
    /// reads "PATH (deleted)" through them, as one on the original did.
    pub(crate) fn remove(&self) {
        for d in std::iter::once(&self.path).chain(self.above.iter().rev()) {
            if let Err(e) = fs::remove_dir(d) {
                debug!(dir = %d.display(), error = %e, "directory made again not removed");
            }
        }
    }
}

/// A new directory for a removed one named `original`, to be owned by `owner`: at its path
/// when that is free, the missing directories above it made too when they were removed as
/// well (zdtm rmdir_open: mode 0700, to be removed right after, [`DirMadeAgain::remove`]);
/// else [`make_beside`].
pub(crate) fn make_dir_again(original: &Path, (uid, gid): (u32, u32)) -> io::Result<DirMadeAgain> {
    let mkdir = |path: &Path| nix::unistd::mkdir(path, Mode::from_bits_truncate(0o700));
    crate::task::userns::make_for(uid, gid, || {
        let parent = original.parent().unwrap_or(Path::new("/"));
        let above = make_missing_dirs(parent);
        if mkdir(original).is_ok() {
            return Ok(DirMadeAgain {
                path: original.to_owned(),
                above,
            });
        }
        for d in above.iter().rev() {
            let _ = fs::remove_dir(d);
        }
        make_beside_here(original, &mkdir).map(|path| DirMadeAgain {
            path,
            above: Vec::new(),
        })
    })
}

/// Makes (with `made`) a new file of a kind for a removed one named `original`: there if
/// nothing is, else at a hidden name beside it; its directory gone too, in the nearest
/// directory on the way to it that is still there (on the filesystem the original was on,
/// as its holders saw it: a mount namespace of its own may have no temporary directory),
/// else in the temporary directory. Returns its path. Made as its `owner` (uid, gid) can be
/// given it from inside a user namespace (userns::make_for).
pub(crate) fn make_beside(
    original: &Path,
    (uid, gid): (u32, u32),
    made: impl Fn(&Path) -> nix::Result<()> + Sync,
) -> io::Result<PathBuf> {
    crate::task::userns::make_for(uid, gid, || make_beside_here(original, &made))
}

/// [`make_beside`] by this thread.
fn make_beside_here(
    original: &Path,
    made: &(impl Fn(&Path) -> nix::Result<()> + Sync),
) -> io::Result<PathBuf> {
    match made(original) {
        Ok(()) => return Ok(original.to_owned()),
        // Taken, or its directory was removed too.
        Err(nix::errno::Errno::EEXIST | nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(e.into()),
    }
    let nearest = original.ancestors().skip(1).find(|d| d.is_dir());
    let base = original
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    nearest
        .map(Path::to_path_buf)
        .into_iter()
        .chain([std::env::temp_dir()])
        .flat_map(|dir| {
            let base = &base;
            (0..100).map(move |n| dir.join(hidden_name(base, n)))
        })
        .find(|p| made(p).is_ok())
        .ok_or_else(|| io::Error::other("no free temporary name"))
}

/// The access and modification times of `meta`, in nanoseconds since the epoch.
pub(crate) fn times_ns(meta: &fs::Metadata) -> (i64, i64) {
    (
        meta.atime() * 1_000_000_000 + meta.atime_nsec(),
        meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
    )
}

/// A time in nanoseconds since the epoch, as the calls that set file times take it.
pub(crate) fn timespec_of_ns(ns: i64) -> TimeSpec {
    TimeSpec::new(ns.div_euclid(1_000_000_000), ns.rem_euclid(1_000_000_000))
}

/// Gives the file open as `fd` (a ghost made again: a directory, a FIFO) its owner, mode and
/// access and modification times (ns), in that order: the times last, as the others move
/// its change time only.
pub(crate) fn set_owner_mode_times(
    fd: &OwnedFd,
    mode: u32,
    uid: u32,
    gid: u32,
    atime_ns: i64,
    mtime_ns: i64,
) -> nix::Result<()> {
    crate::task::userns::chown_as_dumped(fd.as_fd(), uid, gid)?;
    nix::sys::stat::fchmod(fd, Mode::from_bits_truncate(mode & 0o7777))?;
    nix::sys::stat::futimens(fd, &timespec_of_ns(atime_ns), &timespec_of_ns(mtime_ns))
}

/// Makes the directory of `reg`, removed while open, again ([`make_dir_again`]); opened,
/// removed, then given its owner, mode and times. Returns the fd.
fn recreate_dir(desc: &FileDesc, reg: &RegularFile) -> Result<OwnedFd, FileError> {
    let made = make_dir_again(Path::new(&reg.path), (reg.uid, reg.gid))
        .map_err(|e| restore_err(desc, "make the removed directory again", e))?;
    let path = &made.path;
    let opened = nix::fcntl::open(
        path,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    );
    // Removed whatever happened: it never outlives the restore.
    made.remove();
    let fd = opened.map_err(|e| restore_err(desc, "open the directory made again", e.into()))?;
    set_owner_mode_times(&fd, reg.mode, reg.uid, reg.gid, reg.atime_ns, reg.mtime_ns)
        .map_err(|e| restore_err(desc, "give the directory made again its owner, mode and times", e.into()))?;
    if let Some(attrs) = &reg.attrs {
        super::inode_attrs::give_xattrs(fd.as_fd(), attrs)
            .map_err(|e| restore_err(desc, "give the directory made again its extended attributes", e))?;
    }
    debug!(id = desc.id, path = %reg.path, at = %path.display(), "removed directory made again");
    Ok(fd)
}

/// Writes the ghost contents (its extents at their offsets, the holes left holes), size,
/// owner, mode and times into `file`.
fn fill(file: &mut File, reg: &RegularFile, raw: &RawFileRef, images: &ImageDir) -> io::Result<()> {
    fill_data(file, reg, raw, images)?;
    give_attrs(file, reg)
}

/// Writes the ghost contents (its extents at their offsets, the holes left holes) and size
/// into `file`.
fn fill_data(file: &mut File, reg: &RegularFile, raw: &RawFileRef, images: &ImageDir) -> io::Result<()> {
    if reg.sparse {
        shmem::write_extents(file, raw, &reg.extents, images)?;
    } else {
        let mut src = images.open_raw(&raw.name).map_err(io::Error::other)?;
        let copied = io::copy(&mut src, file)?;
        if copied != raw.size {
            return Err(io::Error::other(format!(
                "ghost image {} holds {copied} bytes, the image says {}",
                raw.name, raw.size
            )));
        }
    }
    // The holes at the end, if any.
    file.set_len(reg.size)
}

/// Gives `file` (a ghost made again and filled) the owner, mode and times of `reg`.
fn give_attrs(file: &File, reg: &RegularFile) -> io::Result<()> {
    // Owner first: chown clears set-id bits. A copy owned by another than the recorded owner
    // would be a silent difference (and a set-id one a hole): the restore fails instead.
    crate::task::userns::chown_as_dumped(file.as_fd(), reg.uid, reg.gid).map_err(|e| {
        io::Error::new(
            io::Error::from(e).kind(),
            format!("give it its owner {}:{}: {e}", reg.uid, reg.gid),
        )
    })?;
    file.set_permissions(fs::Permissions::from_mode(reg.mode & 0o7777))?;
    // Last: every write above moved the modification time (chown and chmod move only ctime).
    let time = |ns: i64| {
        if ns == 0 {
            TimeSpec::UTIME_OMIT
        } else {
            TimeSpec::new(ns.div_euclid(1_000_000_000), ns.rem_euclid(1_000_000_000))
        }
    };
    nix::sys::stat::futimens(file.as_fd(), &time(reg.atime_ns), &time(reg.mtime_ns))?;
    // Its inode flags once it has its names: Ghosts::handle_or_tmpfile.
    match &reg.attrs {
        Some(attrs) => super::inode_attrs::give_xattrs(file.as_fd(), attrs),
        None => Ok(()),
    }
}

/// Refuses a description open for writing on a file made immutable since (chattr +i), or
/// append-only (+a) without O_APPEND: the restore's open of it would fail (EPERM), even as
/// root, after the dump killed the process; and on a cgroup's pressure file (a PSI trigger).
fn refuse_write_open_denied(fd: &mut Dumping<'_>) -> Result<(), FileError> {
    let mode = fd.open.flags as i32 & (libc::O_ACCMODE | libc::O_PATH);
    if mode == libc::O_RDONLY || mode & libc::O_PATH != 0 {
        return Ok(());
    }
    // A cgroup's cpu/memory/io/irq.pressure: a PSI trigger written to it lives with the
    // description.
    if let Seen::Regular { path, .. } = &fd.seen {
        if path.ends_with(".pressure")
            && nix::sys::statfs::statfs(&fd.open.proc_path())
                .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        {
            return Err(fd.open.refuse(
                format!("{path} open for writing (a PSI trigger written to it would be lost)"),
                false,
            ));
        }
    }
    let pidfd = super::kind::task_pidfd(fd.open, fd.pidfd)?;
    let dup = crate::sys::pidfd::pidfd_getfd(pidfd, fd.open.fd)
        .map_err(|e| fd.open.inspect_err("pidfd_getfd", fd.open.proc_path(), e))?;
    let attrs = crate::sys::fcntl::inode_flags(dup.as_fd())
        .map_err(|e| fd.open.inspect_err("ioctl FS_IOC_GETFLAGS", fd.open.proc_path(), e))?
        .unwrap_or(0);
    let append = fd.open.flags & libc::O_APPEND as u32 != 0;
    let why = if attrs & crate::sys::fcntl::FS_IMMUTABLE_FL != 0 {
        "open for writing on a file made immutable since (chattr +i)"
    } else if attrs & crate::sys::fcntl::FS_APPEND_FL != 0 && !append {
        "open for writing without O_APPEND on a file made append-only since (chattr +a)"
    } else {
        return Ok(());
    };
    Err(fd.open.refuse(
        format!("{why}: a restore could not open it again"),
        false,
    ))
}

/// Creates a new empty file for a ghost: at `original` if nothing is there (returned as the
/// path to unlink), else unnamed (O_TMPFILE|O_EXCL) in the same directory, else a hidden temporary
/// name there, and if the directory is gone, unnamed in the image directory.
fn create_somewhere(original: &Path, images: &Path) -> io::Result<(File, Option<PathBuf>)> {
    let new = |path: &Path| {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
    };
    // O_EXCL: never to be linked, as a removed file cannot be (linkat of its fd: ENOENT).
    let tmpfile = |dir: &Path| {
        OpenOptions::new()
            .read(true)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_TMPFILE | libc::O_EXCL)
            .open(dir)
    };
    if let Ok(file) = new(original) {
        return Ok((file, Some(original.to_owned())));
    }
    let dir = original.parent().unwrap_or(Path::new("/"));
    if !dir.is_dir() {
        return Ok((tmpfile(images)?, None));
    }
    if let Ok(file) = tmpfile(dir) {
        return Ok((file, None));
    }
    let base = original
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut last = None;
    for n in 0..100 {
        let path = dir.join(hidden_name(&base, n));
        match new(&path) {
            Ok(file) => return Ok((file, Some(path))),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no free temporary name")))
}

/// Opens the description `desc` of a regular file or directory, at its offset.
fn open(
    desc: &FileDesc,
    reg: &RegularFile,
    directory: bool,
    ghosts: &mut Ghosts,
    images: &ImageDir,
    descs: &[FileDesc],
) -> Result<OwnedFd, FileError> {
    let flags = open_flags(desc.flags);
    let o_path = desc.flags & libc::O_PATH as u32 != 0;
    let fd = if reg.deleted {
        let made_by_tmpfile = desc.flags & TMPFILE_BIT != 0 && !directory;
        let (handle, own) =
            ghosts.handle_or_tmpfile(desc, reg, images, made_by_tmpfile.then_some(flags), descs)?;
        match own {
            Some(fd) => fd,
            // The magic link is followed on purpose, whatever O_NOFOLLOW said. A description
            // made by O_TMPFILE whose inode another description recreated first is reopened
            // without it: KNOWN GAP (its F_GETFL lacks O_TMPFILE).
            None => nix::fcntl::open(&handle, reopen_flags(flags), Mode::empty())
                .map_err(|e| restore_err(desc, "open the recreated file", e.into()))?,
        }
    } else {
        open_at_its_path(desc, reg, flags, o_path)?
    };
    if o_path {
        return Ok(fd);
    }
    let meta = nix::sys::stat::fstat(&fd).map_err(|e| restore_err(desc, "fstat", e.into()))?;
    if !reg.deleted {
        let identity = if directory {
            Identity::Directory
        } else {
            Identity::File
        };
        same_file(desc, reg, &meta, identity, images)?;
    }
    if !directory && !reg.deleted {
        let size = meta.st_size as u64;
        if desc.pos > size && size < reg.size {
            return Err(changed(desc, truncated(desc, reg, size)));
        }
        if size != reg.size {
            debug!(id = desc.id, path = %reg.path, was = reg.size, now = size, "file size changed since the dump");
        }
    }
    if desc.pos != 0 {
        let pos = i64::try_from(desc.pos).unwrap_or(i64::MAX);
        match nix::unistd::lseek(&fd, pos, Whence::SeekSet) {
            Ok(_) => {}
            Err(e) if directory => {
                debug!(id = desc.id, path = %reg.path, error = %e, "directory position not restored");
            }
            Err(e) => return Err(restore_err(desc, "lseek", e.into())),
        }
    }
    set_async(desc, &fd)?;
    Ok(fd)
}

/// The flag open(O_TMPFILE) leaves in a description's flags beside O_DIRECTORY (glibc's
/// tmpfile() makes such descriptions).
const TMPFILE_BIT: u32 = (libc::O_TMPFILE & !libc::O_DIRECTORY) as u32;

/// The flags that reopen a recreated file through its magic link: without O_NOFOLLOW (the
/// link is followed on purpose) and without O_TMPFILE (which would make another file).
fn reopen_flags(flags: OFlag) -> OFlag {
    let flags = flags - OFlag::O_NOFOLLOW;
    if flags.bits() as u32 & TMPFILE_BIT != 0 {
        flags - OFlag::O_TMPFILE
    } else {
        flags
    }
}

/// Opens the regular file `reg` of description `desc` for a mapping.
fn open_for_mapping(desc: &FileDesc, reg: &RegularFile, to: &MapOpen<'_>) -> Result<OwnedFd, FileError> {
    let images = to.images;
    let flags = if to.writable {
        OFlag::O_RDWR
    } else {
        OFlag::O_RDONLY
    } | OFlag::O_CLOEXEC;
    if reg.deleted {
        let mut ghosts = Ghosts::default();
        let handle = ghosts.handle(desc, reg, images, to.descs)?;
        return nix::fcntl::open(&handle, flags, Mode::empty())
            .map_err(|e| restore_err(desc, "open the recreated file", e.into()));
    }
    let fd = open_at_its_path(desc, reg, flags, false)?;
    let st = nix::sys::stat::fstat(&fd).map_err(|e| restore_err(desc, "fstat", e.into()))?;
    same_file(desc, reg, &st, Identity::File, images)?;
    Ok(fd)
}

/// Opens `reg.path` (not deleted) with `flags` where its holder had it: in its parent's mount
/// namespace when it was opened there, else in its own, without following symlinks (but an
/// O_PATH one), and in its parent's again when its own does not show it and the dump found it
/// there ([`RegularFile::through_parent_namespace`]: a root pivoted into since).
fn open_at_its_path(
    desc: &FileDesc,
    reg: &RegularFile,
    flags: OFlag,
    o_path: bool,
) -> Result<OwnedFd, FileError> {
    let in_parents = |e| opened_err(desc, reg, "open in its parent's mount namespace", e);
    if desc.parent_mount_namespace {
        return super::open::open_in_parent_namespace(&reg.path, flags, o_path).map_err(in_parents);
    }
    let opened = if o_path {
        nix::fcntl::open(Path::new(&reg.path), flags, Mode::empty())
    } else {
        open_no_symlinks(&reg.path, flags)
    };
    match opened {
        Err(nix::errno::Errno::ENOENT) if reg.through_parent_namespace => {
            super::open::open_in_parent_namespace(&reg.path, flags, o_path).map_err(in_parents)
        }
        other => other.map_err(|e| opened_err(desc, reg, "open", e)),
    }
}

/// The error of opening `reg.path` without following symlinks.
fn opened_err(desc: &FileDesc, reg: &RegularFile, op: &str, e: nix::errno::Errno) -> FileError {
    match e {
        nix::errno::Errno::ENOENT => changed(desc, "the file is gone"),
        nix::errno::Errno::ELOOP => changed(
            desc,
            format!(
                "{} now goes through a symbolic link the dump did not see: refused",
                reg.path
            ),
        ),
        e => restore_err(desc, op, e.into()),
    }
}

/// The stat of `reg.path` now, found without following a symlink.
fn identify(desc: &FileDesc, reg: &RegularFile) -> Result<nix::sys::stat::FileStat, FileError> {
    let fd = open_no_symlinks(&reg.path, OFlag::O_PATH | OFlag::O_CLOEXEC)
        .map_err(|e| opened_err(desc, reg, "open", e))?;
    nix::sys::stat::fstat(&fd).map_err(|e| restore_err(desc, "fstat", e.into()))
}
