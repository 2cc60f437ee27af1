//! Regular files, directories and deleted-but-open ("ghost") files.
//!
//! A deleted file's contents are copied at dump time into `ghost-ID.img` (ID: the first
//! description that needed it; every description of the same inode, fd or mapping, refers to
//! the same ghost image). At restore the file is recreated ONCE per process: at its original
//! path if that is free (then unlinked at once, so the restored fds read "PATH (deleted)"),
//! else as an unnamed O_TMPFILE in the same directory. Every later open of the same ghost
//! (another fd, a mapping) reopens the recreated inode through /proc/self/fd, found by its
//! dev+ino among the fds the process holds; so the fds and the mappings share one inode.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use cryo_proto::image::{FileDesc, RawFileRef, RegularFile};
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use nix::unistd::{Gid, Uid, Whence};
use tracing::debug;

use super::{describe, open_flags, restore_err, set_async, FileError, InodeKey};
use crate::image::{names, ImageDir};

/// The RegularFile record of a file, from its stat.
pub(super) fn record(path: String, meta: &fs::Metadata) -> RegularFile {
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
    }
}

/// Copies the contents of a deleted file, read through `source` (/proc/PID/fd/N or a
/// map_files link), into the ghost image of description `id`.
pub(super) fn write_ghost(
    id: u32,
    source: &Path,
    images: &ImageDir,
) -> Result<RawFileRef, io::Error> {
    let name = names::ghost(id);
    let mut src = File::open(source)?;
    let mut out = images.create_raw(&name).map_err(io::Error::other)?;
    // A kernel-side copy (copy_file_range) where the filesystems allow it.
    let size = io::copy(&mut src, &mut out)?;
    let crc32c = crate::image::crc_of_file(&out, size)?;
    out.sync_data().ok();
    Ok(RawFileRef { name, size, crc32c })
}

thread_local! {
    /// Ghost files recreated by this process: (image dir, ghost name) -> dev+ino of the
    /// recreated inode. A restored task recreates each ghost once, for its fds and its maps.
    static RECREATED: RefCell<HashMap<(PathBuf, String), InodeKey>> =
        RefCell::new(HashMap::new());
}

/// The ghost files one restore call is working with; created files are held open here until
/// the call is done (they are already unlinked).
#[derive(Debug, Default)]
pub(super) struct Ghosts {
    made: HashMap<String, OwnedFd>,
}

impl Ghosts {
    /// A path through which the recreated ghost of `reg` can be opened: /proc/self/fd/N of an
    /// fd holding it (recreating it first if this process holds none).
    fn handle(
        &mut self,
        desc: &FileDesc,
        reg: &RegularFile,
        images: &ImageDir,
    ) -> Result<PathBuf, FileError> {
        let raw = reg.contents.as_ref().ok_or_else(|| FileError::Invalid {
            id: desc.id,
            detail: "deleted file without contents".into(),
        })?;
        if let Some(fd) = self.made.get(&raw.name) {
            return Ok(self_fd(fd.as_raw_fd()));
        }
        let key = (images.path().to_owned(), raw.name.clone());
        if let Some(inode) = RECREATED.with(|r| r.borrow().get(&key).copied()) {
            if let Some(path) = find_open(inode) {
                debug!(id = desc.id, ghost = %raw.name, via = %path.display(), "ghost file reused");
                return Ok(path);
            }
        }
        let fd = recreate(desc, reg, raw, images)?;
        let meta = fs::metadata(self_fd(fd.as_raw_fd()))
            .map_err(|e| restore_err(desc, "stat the recreated file", e))?;
        RECREATED.with(|r| r.borrow_mut().insert(key, InodeKey::of(&meta)));
        let path = self_fd(fd.as_raw_fd());
        self.made.insert(raw.name.clone(), fd);
        Ok(path)
    }
}

/// /proc/self/fd/N.
fn self_fd(fd: i32) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{fd}"))
}

/// /proc/self/fd/N of an fd of this process open on `inode`, if any.
fn find_open(inode: InodeKey) -> Option<PathBuf> {
    let entries = fs::read_dir("/proc/self/fd").ok()?;
    entries.flatten().find_map(|entry| {
        let path = entry.path();
        let meta = fs::metadata(&path).ok()?;
        (InodeKey::of(&meta) == inode).then_some(path)
    })
}

/// Recreates the deleted file of `reg` with its contents, owner and mode, unlinked; returns
/// an O_RDWR fd on it.
fn recreate(
    desc: &FileDesc,
    reg: &RegularFile,
    raw: &RawFileRef,
    images: &ImageDir,
) -> Result<OwnedFd, FileError> {
    let original = Path::new(&reg.path);
    let (mut file, linked) = create_somewhere(original, images.path())
        .map_err(|e| restore_err(desc, "recreate the deleted file", e))?;
    let unlink = |linked: &Option<PathBuf>| {
        if let Some(path) = linked {
            let _ = fs::remove_file(path);
        }
    };
    let filled = fill(&mut file, reg, raw, images);
    // Unlinked as soon as it is filled (or failed): it never outlives the restore.
    unlink(&linked);
    filled.map_err(|e| restore_err(desc, "fill the recreated deleted file", e))?;
    debug!(
        id = desc.id,
        path = %reg.path,
        at = %linked.as_deref().map_or("O_TMPFILE".into(), |p| p.display().to_string()),
        size = raw.size,
        "deleted file recreated"
    );
    Ok(file.into())
}

/// Writes the ghost contents, owner and mode into `file`.
fn fill(file: &mut File, reg: &RegularFile, raw: &RawFileRef, images: &ImageDir) -> io::Result<()> {
    let mut src = File::open(images.file(&raw.name))?;
    let copied = io::copy(&mut src, file)?;
    if copied != raw.size {
        return Err(io::Error::other(format!(
            "ghost image {} holds {copied} bytes, the image says {}",
            raw.name, raw.size
        )));
    }
    // Owner first: chown clears set-id bits.
    if let Err(e) = nix::unistd::fchown(
        file.as_fd(),
        Some(Uid::from_raw(reg.uid)),
        Some(Gid::from_raw(reg.gid)),
    ) {
        debug!(path = %reg.path, error = %e, "chown of the recreated file failed, kept cryo's owner");
    }
    file.set_permissions(fs::Permissions::from_mode(reg.mode & 0o7777))?;
    Ok(())
}

/// Creates a new empty file for a ghost: at `original` if nothing is there (returned as the
/// path to unlink), else unnamed (O_TMPFILE) in the same directory, else a hidden temporary
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
    let tmpfile = |dir: &Path| {
        OpenOptions::new()
            .read(true)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_TMPFILE)
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
        let path = dir.join(format!(".cryo-ghost-{}-{n}-{base}", std::process::id()));
        match new(&path) {
            Ok(file) => return Ok((file, Some(path))),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no free temporary name")))
}

/// Opens the description `desc` of a regular file or directory, at its offset.
pub(super) fn open(
    desc: &FileDesc,
    reg: &RegularFile,
    directory: bool,
    ghosts: &mut Ghosts,
    images: &ImageDir,
) -> Result<OwnedFd, FileError> {
    let flags = open_flags(desc.flags);
    let o_path = desc.flags & libc::O_PATH as u32 != 0;
    let fd = if reg.deleted {
        let handle = ghosts.handle(desc, reg, images)?;
        // The magic link is followed on purpose, whatever O_NOFOLLOW said.
        nix::fcntl::open(&handle, flags & !OFlag::O_NOFOLLOW, Mode::empty())
            .map_err(|e| restore_err(desc, "open the recreated file", e.into()))?
    } else {
        nix::fcntl::open(Path::new(&reg.path), flags, Mode::empty()).map_err(|e| {
            if e == nix::errno::Errno::ENOENT {
                FileError::Changed {
                    id: desc.id,
                    what: describe(desc),
                    detail: "the file is gone".into(),
                }
            } else {
                restore_err(desc, "open", e.into())
            }
        })?
    };
    if o_path {
        return Ok(fd);
    }
    let meta = nix::sys::stat::fstat(&fd).map_err(|e| restore_err(desc, "fstat", e.into()))?;
    if !directory && !reg.deleted {
        let size = meta.st_size as u64;
        if desc.pos > size && size < reg.size {
            return Err(FileError::Changed {
                id: desc.id,
                what: describe(desc),
                detail: format!(
                    "offset {} is beyond the end: the file was truncated since the dump \
                     ({} bytes then, {size} now)",
                    desc.pos, reg.size
                ),
            });
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

/// Opens the regular file `reg` of description `desc` for a mapping.
pub(super) fn open_for_mapping(
    desc: &FileDesc,
    reg: &RegularFile,
    writable: bool,
    images: &ImageDir,
) -> Result<OwnedFd, FileError> {
    let flags = if writable {
        OFlag::O_RDWR
    } else {
        OFlag::O_RDONLY
    } | OFlag::O_CLOEXEC;
    if reg.deleted {
        let mut ghosts = Ghosts::default();
        let handle = ghosts.handle(desc, reg, images)?;
        return nix::fcntl::open(&handle, flags, Mode::empty())
            .map_err(|e| restore_err(desc, "open the recreated file", e.into()));
    }
    nix::fcntl::open(Path::new(&reg.path), flags, Mode::empty()).map_err(|e| {
        if e == nix::errno::Errno::ENOENT {
            FileError::Changed {
                id: desc.id,
                what: describe(desc),
                detail: "the file is gone".into(),
            }
        } else {
            restore_err(desc, "open for mapping", e.into())
        }
    })
}
