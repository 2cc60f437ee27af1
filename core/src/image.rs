//! The image directory: a private (0700) directory of framed record files and raw files (0600),
//! trusted no further than its owner.
//!
//! The directory is opened once (O_DIRECTORY | O_NOFOLLOW) and every file in it is opened
//! relative to that fd by a plain name (no `/`), with O_NOFOLLOW and O_NONBLOCK, then checked
//! through fstat before a byte is read: a regular file (a FIFO or a device never blocks or
//! reads without end), owned by root or by the user running cryo, writable by no one else,
//! no larger than any file cryo writes. A directory owned by another user is refused by dump
//! (it could swap files in) and by restore, unless root trusts it explicitly
//! ([`OwnerTrust::Foreign`], `--trust-image-owner`).

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cryo_proto::frame::{self};
use cryo_proto::image::RawFileRef;
use cryo_proto::{ImageError, ImageKind};
use nix::fcntl::OFlag;
use nix::sys::stat::{FileStat, Mode, SFlag};
use prost::Message;

use crate::sys::mmap::Mapping;

/// A `Result` whose error is an [`ImageDirError`].
pub type Result<T, E = ImageDirError> = std::result::Result<T, E>;

/// Why an image directory, or a file in it, cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ImageDirError {
    /// A record or raw file was refused (bad magic, version, checksum, truncated, bad name).
    #[error(transparent)]
    Image(#[from] ImageError),
    /// A step on the directory itself failed.
    #[error("image directory {}: {step}: {source}", .path.display())]
    Dir {
        /// The directory given with -D.
        path: PathBuf,
        /// What was being done ("cannot create", "is not writable"...).
        step: &'static str,
        /// The kernel's answer.
        source: std::io::Error,
    },
    /// The path exists and is something else than a directory.
    #[error("image directory {}: {what}", .path.display())]
    NotADirectory {
        /// The directory given with -D.
        path: PathBuf,
        /// How it was found ("exists and is not a directory", "is not a directory").
        what: &'static str,
    },
    /// A dump is refused into a directory that holds an image already.
    #[error(
        "image directory {}: holds an image already ({entry}); dump into a directory without \
         one",
        .path.display()
    )]
    NotEmpty {
        /// The directory given with -D.
        path: PathBuf,
        /// One of the files it holds.
        entry: String,
    },
    /// The directory or a file in it belongs to a user cryo does not trust.
    #[error("{}: owned by uid {owner}, not by root or by you (uid {user}): {hint}", .path.display())]
    ForeignOwner {
        /// The directory or file.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// The effective uid of cryo.
        user: u32,
        /// What to do about it.
        hint: &'static str,
    },
    /// The directory or a file in it can be written by group or others.
    #[error("{}: writable by {who} (mode {mode:#o}): an image must be writable by its owner only", .path.display())]
    OpenToOthers {
        /// The directory or file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
        /// "its group", "others" or "its group and others".
        who: &'static str,
    },
    /// A file of the image is not a regular file (a symlink, a FIFO, a device...).
    #[error("image {}: is {found}, not a regular file: refused", .path.display())]
    NotRegular {
        /// The file.
        path: PathBuf,
        /// What it is.
        found: &'static str,
    },
    /// Only root may restore an image another user owns, and only when asked to.
    #[error("image directory {}: trusting an image another user owns needs root (you are uid {user})", .path.display())]
    TrustNeedsRoot {
        /// The directory.
        path: PathBuf,
        /// The effective uid of cryo.
        user: u32,
    },
}

/// Whose image directory cryo reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OwnerTrust {
    /// Only one owned by root or by the user running cryo (the default).
    #[default]
    RootOrSelf,
    /// Also one owned by another user: root restoring a dump another user took, on purpose
    /// (`--trust-image-owner`). Files in it must belong to that user, root or us.
    Foreign,
}

/// File names inside an image directory.
pub mod names {
    use nix::unistd::Pid;

    /// The checkpoint as a whole.
    pub const INVENTORY: &str = "inventory.img";
    /// One record per process.
    pub const PSTREE: &str = "pstree.img";
    /// One record per open file description.
    pub const FILES: &str = "files.img";
    /// What a destination judges (`cryo dump --check-only`).
    pub const CHECK: &str = "check.img";

    /// Per-process state.
    pub fn core(pid: Pid) -> String {
        format!("core-{pid}.img")
    }
    /// Per-process address space.
    pub fn mm(pid: Pid) -> String {
        format!("mm-{pid}.img")
    }
    /// Per-process raw pages.
    pub fn pages(pid: Pid) -> String {
        format!("pages-{pid}.img")
    }
    /// Contents of the deleted file with description id `id`.
    pub fn ghost(id: u32) -> String {
        format!("ghost-{id}.img")
    }
}

/// Whether `name` is a file of an image (cryo's or CRIU's: `*.img`, or one being replaced).
pub fn is_image_file(name: &std::ffi::OsStr) -> bool {
    let name = name.as_encoded_bytes();
    name.ends_with(b".img") || name.ends_with(b".img.new")
}

/// An image directory being written (by dump) or read (by restore and show), held open.
#[derive(Debug, Clone)]
pub struct ImageDir {
    path: PathBuf,
    /// The directory, opened once without following a symlink; every file is opened
    /// relative to it.
    dir: Arc<OwnedFd>,
    /// Its device and inode: a restore child may find `dir`'s number taken by a restored fd
    /// (or closed), and then reopens the directory, which must still be this one.
    identity: (u64, u64),
    /// The owners whose files are accepted besides root and cryo's user.
    trusted_owner: Option<u32>,
    /// Whether a file the image names may differ from what the dump saw
    /// (`--accept-changed-files`).
    accept_changed_files: bool,
    /// Whether the raw files' checksums were checked by whoever wrote them here (the
    /// receiver of a migration): [`ImageDir::check_raw`] checks their sizes only.
    raw_checked: bool,
    /// The raw files are mapped without reading them in ahead: the restore reads little of
    /// them (a migration's warm memory holds the pages).
    lazy_raw: bool,
    /// A check image (`dump --check-only`): the contents of shared memory, memfds and
    /// deleted files are measured, not copied.
    without_contents: bool,
    /// The fd number a restore's processes keep the directory at too ([`ImageDir::keep_at`]):
    /// one in a mount namespace whose root does not show its path reaches it there.
    slot: Option<RawFd>,
}

/// What `st` is, for a refusal.
fn file_type_name(st: &FileStat) -> &'static str {
    match SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) {
        SFlag::S_IFDIR => "a directory",
        SFlag::S_IFIFO => "a FIFO",
        SFlag::S_IFCHR => "a character device",
        SFlag::S_IFBLK => "a block device",
        SFlag::S_IFSOCK => "a socket",
        SFlag::S_IFLNK => "a symbolic link",
        SFlag::S_IFREG => "a regular file",
        _ => "of an unknown type",
    }
}

fn is_type(st: &FileStat, kind: SFlag) -> bool {
    st.st_mode & SFlag::S_IFMT.bits() == kind.bits()
}

/// Refuses `st` (of `path`) when group or others may write it.
fn private_enough(path: &Path, st: &FileStat) -> Result<()> {
    let who = match (st.st_mode & 0o020 != 0, st.st_mode & 0o002 != 0) {
        (false, false) => return Ok(()),
        (true, false) => "its group",
        (false, true) => "others",
        (true, true) => "its group and others",
    };
    Err(ImageDirError::OpenToOthers {
        path: path.to_owned(),
        mode: st.st_mode & 0o7777,
        who,
    })
}

fn euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// The flags every file of the image is opened with: never through a symlink, never
/// blocking on a FIFO, never inherited by an exec.
fn file_flags() -> OFlag {
    OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC | OFlag::O_NOCTTY
}

/// Opens directory `path` without following a symlink in its last component.
fn open_dir(path: &Path, step: &'static str) -> Result<(OwnedFd, FileStat)> {
    let fd = nix::fcntl::open(
        path,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| match e {
        nix::errno::Errno::ELOOP => ImageDirError::NotADirectory {
            path: path.to_owned(),
            what: "is a symbolic link (refused: give the directory itself)",
        },
        // O_DIRECTORY answers ENOTDIR for a symlink too: say which it is.
        nix::errno::Errno::ENOTDIR => ImageDirError::NotADirectory {
            path: path.to_owned(),
            what: if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
                "is a symbolic link (refused: give the directory itself)"
            } else {
                "is not a directory"
            },
        },
        e => ImageDirError::Dir {
            path: path.to_owned(),
            step,
            source: e.into(),
        },
    })?;
    let st = nix::sys::stat::fstat(&fd).map_err(|e| ImageDirError::Dir {
        path: path.to_owned(),
        step: "cannot stat",
        source: e.into(),
    })?;
    Ok((fd, st))
}

impl ImageDir {
    /// Makes `path` ready to receive a dump: created 0700 if absent; if present it must be an
    /// empty, writable directory that the user running cryo owns (then its mode is set to
    /// 0700). A directory another user made is refused: its owner could swap files in.
    pub fn create(path: &Path) -> Result<Self> {
        let bad = |step: &'static str| {
            move |source| ImageDirError::Dir {
                path: path.to_owned(),
                step,
                source,
            }
        };
        match std::fs::symlink_metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut builder = std::fs::DirBuilder::new();
                std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
                builder.create(path).map_err(bad("cannot create"))?;
            }
            Err(e) => return Err(bad("cannot stat")(e)),
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(ImageDirError::NotADirectory {
                    path: path.to_owned(),
                    what: "is a symbolic link (refused: give the directory itself)",
                })
            }
            Ok(meta) if !meta.is_dir() => {
                return Err(ImageDirError::NotADirectory {
                    path: path.to_owned(),
                    what: "exists and is not a directory",
                })
            }
            Ok(_) => {}
        }
        let (fd, st) = open_dir(path, "cannot open")?;
        if st.st_uid != euid() {
            return Err(ImageDirError::ForeignOwner {
                path: path.to_owned(),
                owner: st.st_uid,
                user: euid(),
                hint: "dump into a directory you own, or a new one",
            });
        }
        let images = Self {
            path: path.to_owned(),
            dir: Arc::new(fd),
            identity: (st.st_dev, st.st_ino),
            trusted_owner: None,
            accept_changed_files: false,
            raw_checked: false,
            lazy_raw: false,
            without_contents: false,
            slot: None,
        };
        // Other files may stay (a log, CRIU's dump.cropt: CRIU dumps beside them); an image
        // of cryo's or CRIU's (*.img) is never mixed with another.
        let entries = std::fs::read_dir(images.proc_path()).map_err(bad("cannot list"))?;
        for entry in entries {
            let name = entry.map_err(bad("cannot list"))?.file_name();
            if is_image_file(&name) {
                return Err(ImageDirError::NotEmpty {
                    path: path.to_owned(),
                    entry: name.to_string_lossy().into_owned(),
                });
            }
        }
        nix::sys::stat::fchmod(images.dir.as_fd(), Mode::from_bits_truncate(0o700))
            .map_err(|e| bad("cannot make private (0700)")(e.into()))?;
        // Root passes permission checks, so probe for real: a read-only mount or an immutable
        // directory must fail now, before the target is frozen.
        let probe = ".cryo-write-probe";
        images
            .create_raw(probe)
            .map_err(|e| bad("is not writable")(std::io::Error::other(e)))?;
        nix::unistd::unlinkat(
            images.dir.as_fd(),
            probe,
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        )
        .map_err(|e| bad("is not writable")(e.into()))?;
        Ok(images)
    }

    /// Opens an existing image directory for reading: owned by root or by the user running
    /// cryo, writable by no one else.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_trusting(path, OwnerTrust::RootOrSelf)
    }

    /// Opens an existing image directory for reading, trusting its owner as `trust` says.
    pub fn open_trusting(path: &Path, trust: OwnerTrust) -> Result<Self> {
        let (fd, st) = open_dir(path, "cannot open")?;
        let user = euid();
        let trusted_owner = if st.st_uid == 0 || st.st_uid == user {
            None
        } else if trust == OwnerTrust::Foreign {
            if user != 0 {
                return Err(ImageDirError::TrustNeedsRoot {
                    path: path.to_owned(),
                    user,
                });
            }
            Some(st.st_uid)
        } else {
            return Err(ImageDirError::ForeignOwner {
                path: path.to_owned(),
                owner: st.st_uid,
                user,
                hint: if user == 0 {
                    "a dump another user took is restored only with --trust-image-owner"
                } else {
                    "restore images you or root took"
                },
            });
        };
        private_enough(path, &st)?;
        Ok(Self {
            path: path.to_owned(),
            dir: Arc::new(fd),
            identity: (st.st_dev, st.st_ino),
            trusted_owner,
            accept_changed_files: false,
            raw_checked: false,
            lazy_raw: false,
            without_contents: false,
            slot: None,
        })
    }

    /// Lets a file the image names differ from what the dump saw (device, inode, size,
    /// mtime, mode, owner): it is used with a warning instead of refused.
    pub fn accept_changed_files(&mut self) {
        self.accept_changed_files = true;
    }

    /// Takes the raw files' checksums as checked already: by the receiver of a migration,
    /// which checked each file's checksum as it arrived and computed the merged pages
    /// file's from those, in a private directory of its own. [`ImageDir::check_raw`] and
    /// [`ImageDir::map_raw`] then check sizes only: the restore does not read a large pages
    /// image one more time while its processes are frozen (0.2-0.5 s for 1.3 GiB here).
    pub fn raw_checked(&mut self) {
        self.raw_checked = true;
    }

    /// [`ImageDir::raw_checked`], and the pages are mapped without being read in: the
    /// restore reads few of them (a migration's warm memory, memory/warm.rs, holds the
    /// rest), and populating 1.3 GiB took 0.1 s of the downtime.
    pub fn raw_checked_lazily(&mut self) {
        self.raw_checked = true;
        self.lazy_raw = true;
    }

    /// Makes this a check image: raw contents (shared memory, memfds, deleted files) are
    /// not written, their records name what a full dump would write.
    pub(crate) fn without_contents(&mut self) {
        self.without_contents = true;
    }

    /// Whether [`ImageDir::without_contents`] was called.
    pub(crate) fn writes_contents(&self) -> bool {
        !self.without_contents
    }

    /// Whether [`ImageDir::accept_changed_files`] was called.
    pub fn accepts_changed_files(&self) -> bool {
        self.accept_changed_files
    }

    /// Whether only root could have written the image: the directory (the one opened) belongs
    /// to root and cryo runs as root, so every file read from it belongs to root too
    /// ([`ImageDir::open_file`]).
    pub fn only_root_writes(&self) -> bool {
        euid() == 0
            && self.trusted_owner.is_none()
            && nix::sys::stat::fstat(self.dir.as_fd()).is_ok_and(|st| st.st_uid == 0)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path of file `name` inside the directory (for messages and for programs run on
    /// the images; cryo itself opens files with [`ImageDir::open_file`]).
    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// The directory fd, for a restore to keep it at [`ImageDir::keep_at`]'s slot.
    pub(crate) fn dir_fd(&self) -> RawFd {
        self.dir.as_raw_fd()
    }

    /// Says the restore's processes hold the directory at fd `slot` too (until they close
    /// their slots): one whose own number for it was reused reopens it from there.
    pub(crate) fn keep_at(&mut self, slot: RawFd) {
        self.slot = Some(slot);
    }

    /// /proc/self/fd/N of the directory fd: the directory cryo opened, whatever is at its
    /// path now.
    fn proc_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.dir.as_raw_fd()))
    }

    /// The directory fd: the one opened first if its number still holds it, else the
    /// directory reopened (without following a symlink) and checked to be the same one.
    /// (None: the first one is still good.)
    fn reopened_dir(&self) -> Result<Option<OwnedFd>> {
        let same = |st: &FileStat| {
            is_type(st, SFlag::S_IFDIR) && (st.st_dev, st.st_ino) == self.identity
        };
        if nix::sys::stat::fstat(self.dir.as_fd()).is_ok_and(|st| same(&st)) {
            return Ok(None);
        }
        if let Some(slot) = self.slot {
            let at = crate::sys::fd::borrow_raw(slot);
            if nix::sys::stat::fstat(at).is_ok_and(|st| same(&st)) {
                let fd = crate::sys::fd::dup_at_least(at, 0)
                    .map_err(|e| ImageError::io(&self.path, "duplicate its slot", e))?;
                return Ok(Some(fd));
            }
        }
        let (fd, st) = open_dir(&self.path, "cannot reopen")?;
        if !same(&st) {
            return Err(ImageDirError::NotADirectory {
                path: self.path.clone(),
                what: "was replaced by another directory during the restore",
            });
        }
        Ok(Some(fd))
    }

    /// Refuses a name that is not a plain file name of the directory.
    fn plain(&self, name: &str) -> Result<()> {
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(ImageError::Invalid {
                path: self.file(name),
                index: 0,
                detail: format!("file name {name:?} is not a plain file name"),
            }
            .into());
        }
        Ok(())
    }

    /// Opens file `name` of the image for reading and checks it before a byte is read: a
    /// regular file (not a symlink, FIFO or device), owned by root, cryo's user (or the
    /// trusted owner), writable by no one else. Returns it with its stat.
    pub fn open_file(&self, name: &str) -> Result<(File, FileStat)> {
        self.plain(name)?;
        let path = self.file(name);
        let reopened = self.reopened_dir()?;
        let dir = reopened.as_ref().unwrap_or(&self.dir);
        let fd = nix::fcntl::openat(
            dir.as_fd(),
            name,
            OFlag::O_RDONLY | file_flags(),
            Mode::empty(),
        )
        .map_err(|e| match e {
            nix::errno::Errno::ELOOP => ImageDirError::NotRegular {
                path: path.clone(),
                found: "a symbolic link",
            },
            e => ImageError::io(&path, "open", e.into()).into(),
        })?;
        let st = nix::sys::stat::fstat(&fd).map_err(|e| ImageError::io(&path, "stat", e.into()))?;
        if !is_type(&st, SFlag::S_IFREG) {
            return Err(ImageDirError::NotRegular {
                path,
                found: file_type_name(&st),
            });
        }
        let user = euid();
        if st.st_uid != 0 && st.st_uid != user && Some(st.st_uid) != self.trusted_owner {
            return Err(ImageDirError::ForeignOwner {
                path,
                owner: st.st_uid,
                user,
                hint: "a file of the image was replaced by another user",
            });
        }
        private_enough(&path, &st)?;
        Ok((File::from(fd), st))
    }

    /// Creates a new private (0600) file `name` in the directory, failing if it exists.
    fn create_file(&self, name: &str) -> Result<File> {
        self.plain(name)?;
        let reopened = self.reopened_dir()?;
        let dir = reopened.as_ref().unwrap_or(&self.dir);
        let fd = nix::fcntl::openat(
            dir.as_fd(),
            name,
            OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL | file_flags(),
            Mode::from_bits_truncate(0o600),
        )
        .map_err(|e| ImageError::io(&self.file(name), "create", e.into()))?;
        Ok(File::from(fd))
    }

    /// Writes a framed record file.
    pub fn write<M: Message>(&self, name: &str, kind: ImageKind, records: &[M]) -> Result<()> {
        let mut file = self.create_file(name)?;
        file.write_all(&frame::encode(kind, records))
            .map_err(|e| ImageError::io(&self.file(name), "write", e))?;
        Ok(())
    }

    /// Replaces a framed record file: written beside it, then renamed over it, so a reader
    /// sees the old file or the new one, whole.
    pub fn replace<M: Message>(&self, name: &str, kind: ImageKind, records: &[M]) -> Result<()> {
        let new = format!("{name}.new");
        let _ = nix::unistd::unlinkat(
            self.dir.as_fd(),
            new.as_str(),
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        );
        self.write(&new, kind, records)?;
        nix::fcntl::renameat(self.dir.as_fd(), new.as_str(), self.dir.as_fd(), name)
            .map_err(|e| ImageError::io(&self.file(name), "rename", e.into()))?;
        Ok(())
    }

    /// Reads and checks a framed record file (its size bounded before it is read).
    pub fn read<M: Message + Default>(&self, name: &str, kind: ImageKind) -> Result<Vec<M>> {
        let (file, st) = self.open_file(name)?;
        Ok(frame::read_open_image(
            file,
            st.st_size as u64,
            &self.file(name),
            kind,
        )?)
    }

    /// Reads a framed record file that holds exactly one record.
    pub fn read_single<M: Message + Default>(&self, name: &str, kind: ImageKind) -> Result<M> {
        let mut records = self.read::<M>(name, kind)?;
        if records.len() != 1 {
            return Err(ImageError::Invalid {
                path: self.file(name),
                index: 0,
                detail: format!("expected exactly one record, found {}", records.len()),
            }
            .into());
        }
        Ok(records.remove(0))
    }

    /// Creates a new private raw file.
    pub fn create_raw(&self, name: &str) -> Result<File> {
        self.create_file(name)
    }

    /// Opens raw file `name` for reading, checked as [`ImageDir::open_file`] does.
    pub fn open_raw(&self, name: &str) -> Result<File> {
        self.open_file(name).map(|(file, _)| file)
    }

    /// Opens file `name` as [`ImageDir::open_file`] does and maps its contents read-only (None
    /// when empty): a sender reads them where they lie instead of copying them into a buffer
    /// first. Returns the mapping with the file's stat.
    pub fn map_file(&self, name: &str) -> Result<(Option<Mapping>, FileStat)> {
        let (file, st) = self.open_file(name)?;
        let len = usize::try_from(st.st_size).map_err(|_| ImageError::Invalid {
            path: self.file(name),
            index: 0,
            detail: "larger than this machine can map".into(),
        })?;
        if len == 0 {
            return Ok((None, st));
        }
        let map = Mapping::map_file(&file, len, false)
            .map_err(|e| ImageError::io(&self.file(name), "map", e))?;
        Ok((Some(map), st))
    }

    /// Opens a raw file after checking it against its reference (size and crc32c), so a
    /// truncated or corrupted raw file is refused before anything is restored.
    pub fn check_raw(&self, raw: &RawFileRef) -> Result<File> {
        self.checked(raw).map(|(file, _)| file)
    }

    /// Like [`ImageDir::check_raw`], keeping the checked contents mapped (None when empty):
    /// the restore copies pages out of this same mapping, so they are read only once.
    pub fn map_raw(&self, raw: &RawFileRef) -> Result<Option<Mapping>> {
        self.checked(raw).map(|(_, map)| map)
    }

    /// The raw file of `raw`, checked. The refusals never say the size or checksum the file
    /// has: they would tell whoever forges a record what to write in it.
    fn checked(&self, raw: &RawFileRef) -> Result<(File, Option<Mapping>)> {
        let (file, st) = self.open_file(&raw.name)?;
        let path = self.file(&raw.name);
        if st.st_size as u64 != raw.size {
            return Err(ImageError::Truncated {
                path,
                detail: "its size is not the size the image records".into(),
            }
            .into());
        }
        let len = usize::try_from(raw.size).map_err(|_| ImageError::Invalid {
            path: path.clone(),
            index: 0,
            detail: "larger than this machine can map".into(),
        })?;
        let map = if len == 0 {
            None
        } else if self.raw_checked && !self.lazy_raw {
            // Not read here: populated, so that the restore's copies out of it take no
            // fault per page (a UFFDIO_COPY whose source faults copies each page twice).
            Some(
                Mapping::map_file_populated(&file, len)
                    .map_err(|e| ImageError::io(&path, "map", e))?,
            )
        } else {
            Some(Mapping::map_file(&file, len, false).map_err(|e| ImageError::io(&path, "map", e))?)
        };
        if self.raw_checked {
            return Ok((file, map));
        }
        let computed = crc_of_bytes(map.as_ref().map_or(&[][..], |m| m.as_slice()));
        if computed != raw.crc32c {
            return Err(ImageError::ContentsChecksum { path }.into());
        }
        Ok((file, map))
    }
}

/// crc32c of the first `len` bytes of `file`, read through a mapping (no copy).
pub fn crc_of_file(file: &File, len: u64) -> std::io::Result<u32> {
    if len == 0 {
        return Ok(crc_of_bytes(&[]));
    }
    let map = Mapping::map_file(file, len as usize, false)?;
    Ok(crc_of_bytes(map.as_slice()))
}

/// crc32c of `data`, split over the machine's cores: on the 1 GiB pages of a large process
/// this is a fifth of the dump. The threads are joined before returning, so callers that fork
/// later are single-threaded again.
pub fn crc_of_bytes(data: &[u8]) -> u32 {
    /// Below this, one thread is faster than starting another.
    const SPLIT_MIN: usize = 16 << 20;
    if data.len() < SPLIT_MIN {
        return crc32c::crc32c(data);
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if threads < 2 {
        return crc32c::crc32c(data);
    }
    let part = data.len().div_ceil(threads);
    let crcs: Vec<(u32, usize)> = std::thread::scope(|scope| {
        let handles: Vec<_> = data
            .chunks(part)
            .map(|chunk| scope.spawn(move || (crc32c::crc32c(chunk), chunk.len())))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or((0, 0)))
            .collect()
    });
    crcs.into_iter()
        .fold(0, |acc, (crc, n)| crc32c::crc32c_combine(acc, crc, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_checked_skips_the_checksum_not_the_size() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("img");
        let images = ImageDir::create(&dir).unwrap();
        images
            .create_raw("pages-1.img")
            .unwrap()
            .write_all(&[7u8; 8192])
            .unwrap();
        let wrong_crc = RawFileRef {
            name: "pages-1.img".into(),
            size: 8192,
            crc32c: crc_of_bytes(&[7u8; 8192]) ^ 1,
        };
        let wrong_size = RawFileRef {
            size: 4096,
            crc32c: crc_of_bytes(&[7u8; 4096]),
            ..wrong_crc.clone()
        };
        let mut images = ImageDir::open(&dir).unwrap();
        assert!(images.check_raw(&wrong_crc).is_err());
        images.raw_checked();
        assert!(images.check_raw(&wrong_crc).is_ok());
        assert!(images.map_raw(&wrong_size).is_err());
    }
}
