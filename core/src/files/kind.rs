//! The contract of one kind of open file (dump, validate, open, describe) and the contexts a
//! kind is handed (Dumping, Checking, Opening, MapOpen, KindState). The kinds import this and
//! open.rs; the registry (registry.rs) imports the kinds; the orchestrators (table.rs,
//! validate.rs, place.rs) dispatch through the registry, so no kind imports them back.
//!
//! Adding a kind of file takes exactly three things, and nothing else in files/, show/ or
//! the pipelines names a kind:
//!
//! 1. a message for its state in proto/proto/image.proto, as a variant of `FileDesc.kind`;
//! 2. one module in files/ whose unit type implements [`FileKind`] for that message
//!    (`record` picks its variant, `claims` recognises its fds, then dump, validate, open,
//!    describe);
//! 3. one line in `KINDS` (registry.rs).
//!
//! ```text
//! dump      table.rs   classify the fd (link, stat) -> Seen -> the kind that claims it
//!                      -> FileKind::dump -> FileDesc.kind
//! validate  validate.rs  FileDesc.kind -> its kind -> FileKind::validate
//! restore   place.rs   FileDesc.kind -> its kind -> FileKind::open: an fd now, or later
//!                      with the others of its kind (pipes, sockets), or after every other
//!                      fd is at its number (epoll)
//! show      show/      FileKind::describe, FileKind::show
//! ```
//!
//! A kind that needs to remember something across the fds of one dump, or across the
//! descriptions of one restore call, keeps it in [`KindState`] under a type of its own.

use std::any::{Any, TypeId};
use std::collections::{HashMap, HashSet};
use std::fs;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};
use std::path::PathBuf;

use cryo_proto::image::{file_desc::Kind, FdEntry, FileDesc};

use super::inspect::{InodeKey, OpenFd};
use super::open::{above, place_at, FdRestoreOptions};
use super::{FileError, UnixLinks};
use crate::sys;
use crate::image::ImageDir;

/// One kind of open file, on the model of firecracker's `Persist`: saved from the fd to its
/// proto message, checked against the image, opened again from it, told in words.
pub(crate) trait FileKind: Sync + 'static {
    /// Its message in `FileDesc.kind`.
    type Record;

    /// Its record, if `kind` is its variant.
    fn record(kind: &Kind) -> Option<&Self::Record>;

    /// Dump: whether this kind handles the fd `fd` is about (what its link and stat say).
    fn claims(&self, fd: &Dumping<'_>) -> bool;

    /// Dump: the record of the fd (the target is frozen; read from outside).
    fn dump(&self, fd: &mut Dumping<'_>) -> Result<Kind, FileError>;

    /// Restore, before any process exists: the record against the image (references,
    /// sizes, checksums) and this machine (the file is still there, of the same type).
    fn validate(
        &self,
        _desc: &FileDesc,
        _rec: &Self::Record,
        _cx: &mut Checking<'_>,
    ) -> Result<(), FileError> {
        Ok(())
    }

    /// Restore, in the forked child: the description opened with its flags and position.
    fn open(
        &self,
        desc: &FileDesc,
        rec: &Self::Record,
        cx: &mut Opening<'_>,
    ) -> Result<Opened, FileError>;

    /// Restore: the descriptions this kind answered [`Opened::Together`] for, opened at once
    /// (into `cx`, see [`Opening::hold`]).
    fn open_together(&self, descs: &[&FileDesc], _cx: &mut Opening<'_>) -> Result<(), FileError> {
        Err(not_here(self, descs, "opened one by one"))
    }

    /// Restore: the descriptions this kind answered [`Opened::AfterPlacement`] for, made and
    /// placed once every other fd of the task (`fds`) is at its number. `min_high` is above
    /// every target number.
    fn place_after(
        &self,
        descs: &[&FileDesc],
        _fds: &[FdEntry],
        _min_high: RawFd,
    ) -> Result<(), FileError> {
        Err(not_here(self, descs, "placed with the others"))
    }

    /// Whether a process that does not hold it (or cryo itself) can open it and hand it
    /// down: it does not depend on the process that makes it.
    fn hand_down(&self) -> bool {
        false
    }

    /// The sets of this kind's descriptions among `descs` that one process must make
    /// together and hand down to the others holding them (the ends of one pipe).
    fn made_together(&self, _descs: &[FileDesc]) -> Vec<Vec<u32>> {
        Vec::new()
    }

    /// The processes (dumped pids) besides its holders that need set `set` (one of
    /// [`FileKind::made_together`]'s) to exist before they go on: it is made by one of them or
    /// an ancestor of them all (a session leader that takes a pty it holds no fd on as its
    /// controlling terminal).
    fn needed_by(&self, _descs: &[FileDesc], _set: &[u32]) -> Vec<i32> {
        Vec::new()
    }

    /// Whether a description of this kind can be restored in flight, inside a unix socket's
    /// queue (it is then made before the queue is refilled, not after placement).
    fn in_flight(&self) -> bool {
        true
    }

    /// Restore: the object opened for a mapping (O_RDWR if `writable`, else O_RDONLY).
    fn open_for_mapping(
        &self,
        desc: &FileDesc,
        _rec: &Self::Record,
        _to: &MapOpen<'_>,
    ) -> Result<OwnedFd, FileError> {
        Err(FileError::Invalid {
            id: desc.id,
            detail: format!(
                "{} cannot be mapped: not a regular file",
                self.describe(desc, _rec)
            ),
        })
    }

    /// One line for messages and logs: "regular file /x", "pipe:[123]".
    fn describe(&self, desc: &FileDesc, rec: &Self::Record) -> String;

    /// The line of `cryo show` for an fd on it, ending with the open flags (`flags`, in
    /// words); more detail than [`FileKind::describe`] where there is some to give.
    fn show(&self, desc: &FileDesc, rec: &Self::Record, flags: &str) -> String {
        format!("{}  flags {flags}", self.describe(desc, rec))
    }

    /// What a mapping or the exe of a process names it by in `cryo show`.
    fn name(&self, desc: &FileDesc, rec: &Self::Record) -> String {
        self.describe(desc, rec)
    }
}

/// What [`FileKind::open`] made of a description.
pub(crate) enum Opened {
    /// Open, at some temporary number (place.rs moves it above the targets).
    Now(OwnedFd),
    /// Opened with the other descriptions of its kind: [`FileKind::open_together`].
    Together,
    /// Made once every other fd is at its number: [`FileKind::place_after`].
    AfterPlacement,
    /// Made elsewhere in place.rs (a unix socket, with its group) or by no one here.
    Elsewhere,
}

/// The error for a description of kind `kind` handed to a step the kind does not take part
/// in.
fn not_here<K: FileKind + ?Sized>(kind: &K, descs: &[&FileDesc], how: &str) -> FileError {
    let id = descs.first().map_or(0, |d| d.id);
    FileError::Invalid {
        id,
        detail: format!(
            "{} is {how}",
            descs
                .first()
                .map_or("no file".into(), |d| describe_own(kind, d))
        ),
    }
}

/// Description `desc` of kind `kind` in words ([`FileKind::describe`]).
fn describe_own<K: FileKind + ?Sized>(kind: &K, desc: &FileDesc) -> String {
    match record::<K>(desc) {
        Ok(rec) => kind.describe(desc, rec),
        Err(_) => "no kind".into(),
    }
}

/// What an fd is, from its link and stat, before any kind looks at it.
#[derive(Debug)]
pub(crate) enum Seen {
    /// A regular file (or an O_PATH fd on anything), `deleted` if unlinked.
    Regular {
        /// Its path (without " (deleted)").
        path: String,
        /// Unlinked while open.
        deleted: bool,
    },
    /// A directory.
    Directory {
        /// Its path (without " (deleted)").
        path: String,
        /// Removed while open.
        deleted: bool,
        /// A cgroup's (on a cgroup or cgroup2 filesystem).
        cgroup: bool,
    },
    /// An anonymous pipe (`fifo_path` empty) or a FIFO.
    Pipe {
        /// The pipe's inode.
        ino: u64,
        /// The FIFO's path, empty for an anonymous pipe.
        fifo_path: String,
        /// A FIFO unlinked while open.
        deleted: bool,
    },
    /// Shared anonymous memory (MAP_SHARED|MAP_ANONYMOUS) held by an fd: its map_files link
    /// opened ("/dev/zero (deleted)", a file of the kernel's internal shmem mount).
    SharedAnon,
    /// A character device.
    CharDevice {
        /// Its path.
        path: String,
    },
    /// A character device, or a symbolic link held open itself, removed while open.
    RemovedNode {
        /// Its path (without " (deleted)").
        path: String,
    },
    /// An anonymous inode, by the name its link gives ("eventfd", "epoll"...).
    Anon {
        /// The name.
        kind: String,
    },
    /// A memfd.
    Memfd,
    /// A POSIX message queue.
    Mqueue {
        /// Its name, without the leading '/' and " (deleted)".
        name: String,
        /// Unlinked while open.
        deleted: bool,
    },
    /// A socket.
    Socket {
        /// Its inode.
        ino: u64,
    },
    /// A file or directory of a proc mount (procfs.rs).
    Proc {
        /// Its path.
        path: String,
    },
    /// A namespace (nsfs: /proc/PID/ns/KIND opened), by its kind ("net", "uts"...).
    Namespace {
        /// The kind its link names.
        kind: String,
    },
}

impl Seen {
    /// True for an anonymous inode named `name`.
    pub(crate) fn is_anon(&self, name: &str) -> bool {
        matches!(self, Seen::Anon { kind } if kind == name)
    }
}

/// One fd being dumped, as a kind sees it.
pub(crate) struct Dumping<'a> {
    /// Its link and fdinfo.
    pub open: &'a OpenFd,
    /// What it is.
    pub seen: Seen,
    /// stat of the file behind it.
    pub meta: &'a fs::Metadata,
    /// The id its new description gets.
    pub id: u32,
    /// The inode.
    pub key: InodeKey,
    /// Where raw contents (ghost, memfd) go.
    pub images: &'a ImageDir,
    /// The dump is of a shell job (terminals are dumped).
    pub shell_job: bool,
    /// What the kinds remember across the fds of the dump.
    pub state: &'a mut KindState,
    /// The task's pidfd, opened on first use ([`task_pidfd`]).
    pub pidfd: &'a mut Option<OwnedFd>,
}

/// The pidfd of the task of `open`, kept in `slot` once opened.
pub(crate) fn task_pidfd<'p>(
    open: &OpenFd,
    slot: &'p mut Option<OwnedFd>,
) -> Result<BorrowedFd<'p>, FileError> {
    if slot.is_none() {
        let pid = open.pid;
        let fd = sys::pidfd::pidfd_open(pid).map_err(|e| {
            open.inspect_err("pidfd_open", PathBuf::from(format!("/proc/{pid}")), e)
        })?;
        *slot = Some(fd);
    }
    Ok(slot.as_ref().expect("set above").as_fd())
}

/// Restore side, before any process exists: what validation shares across descriptions.
pub(crate) struct Checking<'a> {
    /// The image directory the records refer into.
    pub images: &'a ImageDir,
    /// Things checked or claimed once per image: key -> the first description with it.
    once: HashMap<String, u32>,
}

impl<'a> Checking<'a> {
    /// A fresh check of the image in `images`.
    pub(crate) fn new(images: &'a ImageDir) -> Self {
        Self {
            images,
            once: HashMap::new(),
        }
    }

    /// Records that description `id` has `key` (a raw image checked, a pipe's data held);
    /// returns the description that had it first, if another did.
    pub(crate) fn first(&mut self, key: String, id: u32) -> Option<u32> {
        match self.once.entry(key) {
            std::collections::hash_map::Entry::Occupied(e) => Some(*e.get()),
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(id);
                None
            }
        }
    }
}

/// One restore call's work in progress, as the kinds see it: what is open so far, above
/// every target number, and where.
pub(crate) struct Opening<'a> {
    /// The image directory (ghost and memfd contents).
    pub images: &'a ImageDir,
    /// How fds are restored (shared objects, the terminal, --tcp-close).
    pub opts: &'a FdRestoreOptions,
    /// The unix sockets made together.
    pub links: &'a UnixLinks,
    /// Every description of the dump (the deleted names of a ghost: regular.rs).
    pub descs: &'a [FileDesc],
    /// What the kinds keep for this call (recreated ghosts, memfds): dropped before placing,
    /// since its fds may sit on target numbers.
    pub state: KindState,
    /// The descriptions open so far, at or above `min_high`.
    pub(super) opened: HashMap<u32, OwnedFd>,
    /// Above every target number.
    min_high: RawFd,
    /// The fds of the task using each description.
    uses: HashMap<u32, Vec<&'a FdEntry>>,
    /// Target numbers already placed.
    pub(super) placed: HashSet<RawFd>,
}

impl<'a> Opening<'a> {
    /// A fresh restore call: `fds` are the task's targets, `min_high` above every one.
    pub(super) fn new(
        images: &'a ImageDir,
        opts: &'a FdRestoreOptions,
        links: &'a UnixLinks,
        descs: &'a [FileDesc],
        fds: &'a [FdEntry],
        min_high: RawFd,
    ) -> Self {
        let mut uses: HashMap<u32, Vec<&FdEntry>> = HashMap::new();
        for e in fds {
            uses.entry(e.file_id).or_default().push(e);
        }
        Self {
            images,
            opts,
            links,
            descs,
            state: KindState::default(),
            opened: HashMap::new(),
            min_high,
            uses,
            placed: HashSet::new(),
        }
    }

    /// Holds `fd`, open for `desc`, above every target number until placing.
    pub(crate) fn hold(&mut self, desc: &FileDesc, fd: OwnedFd) -> Result<(), FileError> {
        let fd = above(desc, fd, self.min_high)?;
        self.opened.insert(desc.id, fd);
        Ok(())
    }

    /// Holds every fd of `opened` (description id, fd), made together for the descriptions of
    /// `group` (a pipe's ends, a pty pair).
    pub(crate) fn hold_opened<R>(
        &mut self,
        group: &[(&FileDesc, &R)],
        opened: Vec<(u32, OwnedFd)>,
    ) -> Result<(), FileError> {
        for (id, fd) in opened {
            let desc = group
                .iter()
                .find(|(d, _)| d.id == id)
                .expect("opened from the group")
                .0;
            super::write_hint::restore(desc, fd.as_fd())?;
            self.hold(desc, fd)?;
        }
        Ok(())
    }

    /// Puts `fd`, open for `desc`, at the number of the one fd that uses it when that number
    /// is free and nothing carries `desc` in flight (a server with thousands of connections
    /// then never holds twice as many fds); else holds it.
    pub(crate) fn place_or_hold(&mut self, desc: &FileDesc, fd: OwnedFd) -> Result<(), FileError> {
        match self.uses.get(&desc.id).map(Vec::as_slice) {
            Some([e]) if e.fd > 2 && !sys::fd::fd_is_open(e.fd) && !self.links.is_carried(desc.id) => {
                place_at(fd.as_fd(), e)?;
                self.placed.insert(e.fd);
                Ok(())
            }
            _ => self.hold(desc, fd),
        }
    }

    /// How many target numbers [`Self::place_or_hold`] placed.
    pub(crate) fn placed(&self) -> usize {
        self.placed.len()
    }
}

/// Restore side: how a mapping wants its object opened.
pub(crate) struct MapOpen<'a> {
    /// O_RDWR, else O_RDONLY.
    pub writable: bool,
    /// The image directory (ghost contents).
    pub images: &'a ImageDir,
    /// Every description of the dump (the deleted names of a ghost: regular.rs).
    pub descs: &'a [FileDesc],
    /// The shared memory objects cryo made for the tree: dumped inode -> fd.
    pub shared: &'a HashMap<u64, RawFd>,
}

/// What the kinds keep across the fds of one dump or the descriptions of one restore call:
/// one value per type, made on first use.
#[derive(Default)]
pub(crate) struct KindState(HashMap<TypeId, Box<dyn Any + Send>>);

impl KindState {
    /// The value of type `T`, made with `T::default()` on first use.
    pub(crate) fn get<T: Default + Send + 'static>(&mut self) -> &mut T {
        self.0
            .entry(TypeId::of::<T>())
            .or_insert_with(|| Box::new(T::default()))
            .downcast_mut()
            .expect("stored under its own TypeId")
    }
}

impl std::fmt::Debug for KindState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KindState({} values)", self.0.len())
    }
}

/// The object-safe face of [`FileKind`], which the registry (registry.rs) holds: each call
/// finds the record of the description's variant and hands it to the kind.
pub(crate) trait AnyKind: Sync {
    /// Whether `kind` is this kind's variant.
    fn owns(&self, kind: &Kind) -> bool;
    /// [`FileKind::claims`].
    fn claims(&self, fd: &Dumping<'_>) -> bool;
    /// [`FileKind::dump`].
    fn dump(&self, fd: &mut Dumping<'_>) -> Result<Kind, FileError>;
    /// [`FileKind::validate`].
    fn validate(&self, desc: &FileDesc, cx: &mut Checking<'_>) -> Result<(), FileError>;
    /// [`FileKind::open`].
    fn open(&self, desc: &FileDesc, cx: &mut Opening<'_>) -> Result<Opened, FileError>;
    /// [`FileKind::open_together`].
    fn open_together(&self, descs: &[&FileDesc], cx: &mut Opening<'_>) -> Result<(), FileError>;
    /// [`FileKind::place_after`].
    fn place_after(
        &self,
        descs: &[&FileDesc],
        fds: &[FdEntry],
        min_high: RawFd,
    ) -> Result<(), FileError>;
    /// [`FileKind::hand_down`].
    fn hand_down(&self) -> bool;
    /// [`FileKind::made_together`].
    fn made_together(&self, descs: &[FileDesc]) -> Vec<Vec<u32>>;
    /// [`FileKind::needed_by`].
    fn needed_by(&self, descs: &[FileDesc], set: &[u32]) -> Vec<i32>;
    /// [`FileKind::in_flight`].
    fn in_flight(&self) -> bool;
    /// [`FileKind::open_for_mapping`].
    fn open_for_mapping(&self, desc: &FileDesc, to: &MapOpen<'_>) -> Result<OwnedFd, FileError>;
    /// [`FileKind::describe`].
    fn describe(&self, desc: &FileDesc) -> String;
    /// [`FileKind::show`].
    fn show(&self, desc: &FileDesc, flags: &str) -> String;
    /// [`FileKind::name`].
    fn name(&self, desc: &FileDesc) -> String;
}

/// The record of `desc` for kind `K` (the registry only hands a kind its own descriptions).
fn record<K: FileKind + ?Sized>(desc: &FileDesc) -> Result<&K::Record, FileError> {
    desc.kind
        .as_ref()
        .and_then(K::record)
        .ok_or_else(|| FileError::Invalid {
            id: desc.id,
            detail: "record without a kind (written by a newer cryo?)".into(),
        })
}

impl<K: FileKind> AnyKind for K {
    fn owns(&self, kind: &Kind) -> bool {
        K::record(kind).is_some()
    }
    fn claims(&self, fd: &Dumping<'_>) -> bool {
        FileKind::claims(self, fd)
    }
    fn dump(&self, fd: &mut Dumping<'_>) -> Result<Kind, FileError> {
        FileKind::dump(self, fd)
    }
    fn validate(&self, desc: &FileDesc, cx: &mut Checking<'_>) -> Result<(), FileError> {
        FileKind::validate(self, desc, record::<K>(desc)?, cx)
    }
    fn open(&self, desc: &FileDesc, cx: &mut Opening<'_>) -> Result<Opened, FileError> {
        FileKind::open(self, desc, record::<K>(desc)?, cx)
    }
    fn open_together(&self, descs: &[&FileDesc], cx: &mut Opening<'_>) -> Result<(), FileError> {
        FileKind::open_together(self, descs, cx)
    }
    fn place_after(
        &self,
        descs: &[&FileDesc],
        fds: &[FdEntry],
        min_high: RawFd,
    ) -> Result<(), FileError> {
        FileKind::place_after(self, descs, fds, min_high)
    }
    fn hand_down(&self) -> bool {
        FileKind::hand_down(self)
    }
    fn made_together(&self, descs: &[FileDesc]) -> Vec<Vec<u32>> {
        FileKind::made_together(self, descs)
    }
    fn needed_by(&self, descs: &[FileDesc], set: &[u32]) -> Vec<i32> {
        FileKind::needed_by(self, descs, set)
    }
    fn in_flight(&self) -> bool {
        FileKind::in_flight(self)
    }
    fn open_for_mapping(&self, desc: &FileDesc, to: &MapOpen<'_>) -> Result<OwnedFd, FileError> {
        FileKind::open_for_mapping(self, desc, record::<K>(desc)?, to)
    }
    fn describe(&self, desc: &FileDesc) -> String {
        describe_own(self, desc)
    }
    fn show(&self, desc: &FileDesc, flags: &str) -> String {
        match record::<K>(desc) {
            Ok(rec) => FileKind::show(self, desc, rec, flags),
            Err(_) => format!("(file {} of unknown kind)  flags {flags}", desc.id),
        }
    }
    fn name(&self, desc: &FileDesc) -> String {
        match record::<K>(desc) {
            Ok(rec) => FileKind::name(self, desc, rec),
            Err(_) => format!("file {}", desc.id),
        }
    }
}
