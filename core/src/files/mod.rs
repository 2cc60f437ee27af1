//! Open files of a task: dumped once per open file description, restored at their numbers.
//!
//! ```text
//! dump (target frozen, read from outside):
//!   /proc/PID/fd/N      readlink -> kind (path, pipe:[INO], socket:[INO], anon_inode:[KIND])
//!   /proc/PID/fdinfo/N  pos, flags (O_CLOEXEC -> FdEntry.cloexec)
//!   stat of the fd      dev+ino: descriptions of one inode are compared with
//!                       kcmp(KCMP_FILE), across pids too -> one FileDesc per description
//!   pidfd_getfd         a duplicate to tee(2) unread pipe data without consuming it
//!   ghost-ID.img        contents of a deleted-but-open (or mapped) file
//!
//! restore (in the forked child, before it is reshaped):
//!   validate()          every record and raw file checked before any process exists
//!   open every description, each moved above the highest target fd (F_DUPFD_CLOEXEC)
//!   dup3 onto the target numbers (FD_CLOEXEC as dumped), close the temporaries
//!   close_range every other fd except `keep`
//! ```
//!
//! eventfd, timerfd, signalfd (events.rs), epoll (epoll.rs: restored last, once its targets
//! are at their numbers), inotify (inotify.rs), memfd (memfd.rs) and the terminal of a shell
//! job (tty.rs) have a module each; memfds and shared anonymous memory are one object per
//! inode for every fd and VMA of the tree (shmem.rs). Other anonymous inodes (io_uring...),
//! hugetlb memfds, pty masters and block devices are refused with the pid, the fd and the
//! kind named. Descriptions shared between processes get
//! one id at dump (the table compares across pids); restoring them shared (inherited across
//! fork) is the restore pipeline's business: [`restore_task_fds`] works on one task.

mod devices;
mod epoll;
mod eventfd;
pub(crate) mod in_flight;
mod inotify;
mod inspect;
mod memfd;
mod pipes;
mod regular;
mod shmem;
pub mod sockets;
pub(crate) mod sys;
pub mod tty;
mod unix_groups;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use std::net::SocketAddr;

use cryo_proto::image::{
    file_desc::Kind, FdEntry, FileDesc, Memfd, RawFileRef, RegularFile, Socket,
};
use nix::fcntl::{FcntlArg, OFlag};
use nix::unistd::Pid;
use tracing::{debug, instrument};

use crate::image::ImageDir;
pub use inspect::InodeKey;
use inspect::{Link, OpenFd};
pub use shmem::SharedObjects;
pub use unix_groups::UnixLinks;

/// Why a file of a task could not be dumped or restored.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// A kind of file cryo does not dump.
    #[error("pid {pid} fd {fd}: {kind} is not supported ({link})")]
    Unsupported {
        /// The task.
        pid: Pid,
        /// The fd.
        fd: RawFd,
        /// What it is ("io_uring", "block device"...).
        kind: String,
        /// The link text of /proc/PID/fd/N.
        link: String,
    },
    /// A kind of file cryo does not dump yet.
    #[error("pid {pid} fd {fd}: {kind} is not supported yet ({link})")]
    NotYet {
        /// The task.
        pid: Pid,
        /// The fd.
        fd: RawFd,
        /// What it is ("socket", "memfd"...).
        kind: String,
        /// The link text of /proc/PID/fd/N.
        link: String,
    },
    /// A terminal, dumped only for a shell job.
    #[error("pid {pid} fd {fd}: terminal {path} is dumped only with --shell-job")]
    Terminal {
        /// The task.
        pid: Pid,
        /// The fd.
        fd: RawFd,
        /// The terminal device.
        path: String,
    },
    /// The image holds a shell job's terminal but `cryo restore` has none to give it.
    #[error(
        "pid {pid} fd {fd} was on terminal {path} (a shell job, dumped with --shell-job): cryo \
         restore needs a terminal on its stdin to attach it to"
    )]
    NoTerminal {
        /// The task.
        pid: Pid,
        /// The fd.
        fd: RawFd,
        /// The terminal at dump time.
        path: String,
    },
    /// The fds of a task cannot be listed.
    #[error("pid {pid}: list open fds: {source}")]
    ListFds {
        /// The task.
        pid: Pid,
        /// The kernel's answer.
        source: io::Error,
    },
    /// A system call inspecting an fd of a task failed.
    #[error("pid {pid} fd {fd}: {op} {path}: {source}", path = path.display())]
    Inspect {
        /// The task.
        pid: Pid,
        /// The fd.
        fd: RawFd,
        /// The step.
        op: &'static str,
        /// What it was applied to.
        path: PathBuf,
        /// The kernel's answer.
        source: io::Error,
    },
    /// An fd of a task cannot be dumped.
    #[error("pid {pid} fd {fd}: {detail}")]
    Dump {
        /// The task.
        pid: Pid,
        /// The fd.
        fd: RawFd,
        /// Why.
        detail: String,
    },
    /// A file mapped by a task (or its exe) cannot be dumped.
    #[error("pid {pid}: mapped file {link}: {detail}", link = link.display())]
    Mapped {
        /// The task.
        pid: Pid,
        /// /proc/PID/map_files/START-END or /proc/PID/exe.
        link: PathBuf,
        /// Why.
        detail: String,
    },
    /// The contents image of a deleted file cannot be written or is damaged.
    #[error("file {id}: contents of the deleted file: {source}")]
    Ghost {
        /// The description.
        id: u32,
        /// What went wrong.
        source: Box<crate::Error>,
    },
    /// The contents of a deleted file could not be saved.
    #[error("file {id}: save the contents of deleted file {path} into {image}: {source}")]
    SaveGhost {
        /// The description.
        id: u32,
        /// The deleted file.
        path: String,
        /// The ghost image.
        image: String,
        /// What went wrong.
        source: io::Error,
    },
    /// A record of files.img is inconsistent.
    #[error("files.img: file {id}: {detail}")]
    Invalid {
        /// The description.
        id: u32,
        /// What is wrong.
        detail: String,
    },
    /// An fd refers to a description files.img does not hold.
    #[error("fd {fd} refers to file {file_id}, which files.img does not hold")]
    Dangling {
        /// The fd.
        fd: RawFd,
        /// The missing description.
        file_id: u32,
    },
    /// The file on this machine is not what was dumped (gone, truncated, another type).
    #[error("file {id} ({what}): {detail}")]
    Changed {
        /// The description.
        id: u32,
        /// The file, as [`describe`] tells it.
        what: String,
        /// What changed.
        detail: String,
    },
    /// A system call restoring a description failed.
    #[error("file {id} ({what}): {op}: {source}")]
    Restore {
        /// The description.
        id: u32,
        /// The file, as [`describe`] tells it.
        what: String,
        /// The step.
        op: String,
        /// The kernel's answer.
        source: io::Error,
    },
    /// A socket of a task cannot be dumped (its capture failed).
    #[error("pid {pid} fd {fd}: {detail}")]
    Socket {
        /// The task.
        pid: Pid,
        /// The fd.
        fd: RawFd,
        /// What failed (the socket's addresses and the step).
        detail: String,
    },
    /// An established TCP connection met by a dump without `--tcp-established`.
    #[error(
        "pid {pid} fd {fd}: established TCP connection {local} -> {remote} ({state}): dump \
         with --tcp-established to capture it"
    )]
    TcpEstablished {
        /// The task.
        pid: Pid,
        /// The fd.
        fd: RawFd,
        /// The local end.
        local: SocketAddr,
        /// The peer.
        remote: SocketAddr,
        /// The TCP state.
        state: &'static str,
    },
    /// A TCP connection in the middle of its handshake: temporary.
    #[error(
        "pid {pid} fd {fd}: TCP connection {local} -> {remote} is in {state} (handshake in \
         progress): a temporary state, retry later"
    )]
    TcpTemporary {
        /// The task.
        pid: Pid,
        /// The fd.
        fd: RawFd,
        /// The local end.
        local: String,
        /// The peer it is connecting to (the kernel does not tell a connect in progress's).
        remote: String,
        /// The TCP state.
        state: &'static str,
    },
    /// The network lock over the connections of a task could not be installed.
    #[error("pid {pid}: network lock: {source}")]
    NetworkLock {
        /// The task.
        pid: Pid,
        /// What went wrong.
        source: cryo_netns::LockError,
    },
    /// A descriptor in flight (SCM_RIGHTS) in a unix socket's queue cannot be dumped.
    #[error("pid {pid} fd {fd}: a descriptor in flight on socket:[{ino}]: {detail}")]
    InFlight {
        /// The task holding the socket.
        pid: Pid,
        /// Its fd there.
        fd: RawFd,
        /// The socket whose queue carries the descriptor.
        ino: u64,
        /// Why.
        detail: String,
    },
    /// An fd could not be put at its number.
    #[error("fd {fd} (file {id}): {op}: {source}")]
    Place {
        /// The fd number.
        fd: RawFd,
        /// The description.
        id: u32,
        /// The step.
        op: &'static str,
        /// The kernel's answer.
        source: io::Error,
    },
}

/// How fds are dumped.
#[derive(Debug, Clone, Default)]
pub struct FdDumpOptions {
    /// The task is a shell job: its terminal fds are dumped (a pty slave as the shell job's
    /// terminal, restored on the terminal of `cryo restore`; other terminals by path).
    pub shell_job: bool,
}

/// One fd known to hold a description: the representative kcmp compares against.
#[derive(Debug, Clone, Copy)]
struct Holder {
    pid: Pid,
    fd: RawFd,
    id: u32,
}

/// The open file descriptions of a dump, each recorded once however many fds (of however
/// many tasks) refer to it.
///
/// Identity: descriptions are first grouped by inode (dev+ino of the fd's stat); within a
/// group, kcmp(KCMP_FILE) against one holder (pid, fd) of each known description tells
/// whether an fd is a dup of it. Holders keep their pid, so tasks dumped one after the other
/// into one table share descriptions across processes.
#[derive(Debug, Default)]
pub struct FileTable {
    descs: Vec<FileDesc>,
    by_inode: HashMap<InodeKey, Vec<Holder>>,
    mapped: HashMap<InodeKey, u32>,
    ghosts: HashMap<InodeKey, RawFileRef>,
    memfds: HashMap<InodeKey, Memfd>,
    /// The terminal of a shell job, once met: (device, path, pid, fd).
    terminal: Option<(u64, String, Pid, RawFd)>,
    pipes_captured: HashSet<InodeKey>,
    sockets: HashMap<u64, Socket>,
    /// The socket fds of the task being dumped, as its socket pass found them: their link and
    /// inode are known, so only their fdinfo is read.
    task_sockets: HashMap<RawFd, InodeKey>,
}

/// Per-task state of one `dump_task_fds` call.
struct TaskFds {
    pid: Pid,
    pidfd: Option<OwnedFd>,
}

impl TaskFds {
    /// The task's pidfd, opened on first use.
    fn pidfd(&mut self, open: &OpenFd) -> Result<&OwnedFd, FileError> {
        if self.pidfd.is_none() {
            let fd = sys::pidfd_open(self.pid).map_err(|e| {
                open.inspect_err(
                    "pidfd_open",
                    PathBuf::from(format!("/proc/{}", self.pid)),
                    e,
                )
            })?;
            self.pidfd = Some(fd);
        }
        Ok(self.pidfd.as_ref().expect("set above"))
    }
}

/// What an fd is, decided before its description is looked up.
enum Class {
    Regular {
        path: String,
        deleted: bool,
    },
    Directory {
        path: String,
    },
    Pipe {
        ino: u64,
        fifo_path: String,
    },
    CharDevice {
        path: String,
    },
    /// eventfd, timerfd, signalfd, epoll, inotify (the kind as [`Link::AnonInode`] says).
    Anon {
        kind: String,
    },
    Memfd,
    Socket {
        ino: u64,
    },
}

impl FileTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes the sockets captured by `dump` known: their fds are dumped from these records
    /// (without it, every socket fd is refused).
    pub fn add_sockets(&mut self, dump: &sockets::SocketDump) {
        for (ino, rec) in dump.records() {
            self.sockets.insert(ino, rec.clone());
        }
        self.task_sockets = dump.socket_fds().clone();
    }

    /// Dumps one of cryo's own fds (a descriptor in flight, duplicated into cryo by a peek)
    /// as a description no fd of a task points to, unless kcmp finds a task's fd (or an
    /// earlier one of cryo's) on the same description. Returns its id.
    pub(crate) fn dump_own_fd(
        &mut self,
        fd: std::os::fd::BorrowedFd<'_>,
        images: &ImageDir,
    ) -> Result<u32, FileError> {
        let me = nix::unistd::getpid();
        let mut task = TaskFds {
            pid: me,
            pidfd: None,
        };
        let raw = fd.as_raw_fd();
        let entry = self.dump_fd(&mut task, raw, None, images, &FdDumpOptions::default())?;
        let kind = self
            .descs
            .iter()
            .find(|d| d.id == entry.file_id)
            .and_then(|d| d.kind.as_ref());
        if matches!(kind, Some(Kind::Epoll(_))) {
            return Err(FileError::Dump {
                pid: me,
                fd: raw,
                detail: "an epoll in flight: not supported yet".into(),
            });
        }
        Ok(entry.file_id)
    }

    /// Replaces the record of socket `rec.ino` (known through [`Self::add_sockets`]), in the
    /// descriptions already dumped too.
    pub(crate) fn update_socket(&mut self, rec: &Socket) {
        self.sockets.insert(rec.ino, rec.clone());
        for d in &mut self.descs {
            if let Some(Kind::Socket(s)) = &mut d.kind {
                if s.ino == rec.ino {
                    *s = rec.clone();
                }
            }
        }
    }

    /// Marks the unix sockets whose peer is outside the dump (accepted with `--ext-unix-sk`)
    /// in the descriptions built so far: they are restored broken.
    pub fn mark_external_peers(&mut self, external: &[sockets::ExternalPeer]) {
        if external.is_empty() {
            return;
        }
        let by_ino: HashMap<u64, &str> = external
            .iter()
            .map(|e| (e.ino, e.peer_name.as_str()))
            .collect();
        for desc in &mut self.descs {
            if let Some(Kind::Socket(s)) = &mut desc.kind {
                if let Some(name) = by_ino.get(&s.ino) {
                    s.external_peer = true;
                    s.peer_name = (*name).to_string();
                }
            }
        }
    }

    /// Dumps every fd of the frozen task `pid` (read from /proc/PID/fd, /proc/PID/fdinfo and
    /// through pidfd_getfd; the task is not touched). Returns the task's fd entries sorted by
    /// fd. Contents of deleted files are written into `images` as ghost-ID.img.
    #[instrument(skip_all, fields(pid = pid.as_raw()))]
    pub fn dump_task_fds(
        &mut self,
        pid: Pid,
        images: &ImageDir,
        opts: &FdDumpOptions,
    ) -> Result<Vec<FdEntry>, FileError> {
        let mut task = TaskFds { pid, pidfd: None };
        let fds = inspect::list_fds(pid)?;
        let mut socket_fdinfo = self.socket_fdinfo(pid, &fds)?;
        let mut entries = Vec::with_capacity(fds.len());
        for fd in fds {
            let known = self.task_sockets.get(&fd).copied();
            let known = known.zip(socket_fdinfo.remove(&fd));
            entries.push(self.dump_fd(&mut task, fd, known, images, opts)?);
        }
        debug!(
            fds = entries.len(),
            descriptions = self.descs.len(),
            "fds dumped"
        );
        Ok(entries)
    }

    /// The fdinfo of the task's socket fds (already identified by the socket pass: only
    /// their fdinfo is read), on every core when there are many (a server's connections:
    /// each is an open, a read and a close of a /proc file).
    fn socket_fdinfo(&self, pid: Pid, fds: &[RawFd]) -> Result<HashMap<RawFd, OpenFd>, FileError> {
        /// Below this many, a thread costs more than it saves.
        const PER_THREAD_MIN: usize = 512;
        let sockets: Vec<(RawFd, u64)> = fds
            .iter()
            .filter_map(|fd| self.task_sockets.get(fd).map(|key| (*fd, key.ino)))
            .collect();
        let read =
            |&(fd, ino): &(RawFd, u64)| OpenFd::with_link(pid, fd, format!("socket:[{ino}]"));
        let read =
            crate::parallel::map_on_cores(&sockets, PER_THREAD_MIN, read).ok_or_else(|| {
                FileError::Dump {
                    pid,
                    fd: -1,
                    detail: "a thread reading fdinfo panicked".into(),
                }
            })?;
        read.into_iter()
            .map(|open| open.map(|open| (open.fd, open)))
            .collect()
    }

    /// Dumps fd `fd` of `task`; `known_socket` is the inode and fdinfo of a socket fd the
    /// task's socket pass identified (then nothing else is read).
    fn dump_fd(
        &mut self,
        task: &mut TaskFds,
        fd: RawFd,
        known_socket: Option<(InodeKey, OpenFd)>,
        images: &ImageDir,
        opts: &FdDumpOptions,
    ) -> Result<FdEntry, FileError> {
        let (open, key, classified) = match known_socket {
            Some((key, open)) => (open, key, None),
            None => {
                let open = OpenFd::read(task.pid, fd)?;
                let (class, meta) = classify(&open)?;
                (open, InodeKey::of(&meta), Some((class, meta)))
            }
        };
        let entry = |file_id| FdEntry {
            fd,
            file_id,
            cloexec: open.cloexec,
        };
        if let Some(id) = self.shared_with(&open, key)? {
            debug!(fd, id, link = %open.link, "fd shares a description");
            return Ok(entry(id));
        }
        let id = self.next_id();
        let kind = match classified {
            None => self.socket_kind(&open, key.ino)?,
            Some((class, meta)) => {
                self.file_kind(task, &open, class, &meta, id, key, images, opts)?
            }
        };
        debug!(
            fd,
            id,
            link = %open.link,
            flags = format_args!("{:o}", open.flags),
            pos = open.pos,
            cloexec = open.cloexec,
            "fd dumped"
        );
        self.descs.push(FileDesc {
            id,
            flags: open.flags,
            pos: open.pos,
            kind: Some(kind),
        });
        self.by_inode.entry(key).or_default().push(Holder {
            pid: open.pid,
            fd,
            id,
        });
        Ok(entry(id))
    }

    /// The record of socket `ino`, captured by the task's socket pass.
    fn socket_kind(&self, open: &OpenFd, ino: u64) -> Result<Kind, FileError> {
        match self.sockets.get(&ino) {
            Some(rec) => Ok(Kind::Socket(rec.clone())),
            None => Err(open.refuse("socket", true)),
        }
    }

    /// What description `id` of a file other than a known socket is.
    #[allow(clippy::too_many_arguments)]
    fn file_kind(
        &mut self,
        task: &mut TaskFds,
        open: &OpenFd,
        class: Class,
        meta: &fs::Metadata,
        id: u32,
        key: InodeKey,
        images: &ImageDir,
        opts: &FdDumpOptions,
    ) -> Result<Kind, FileError> {
        Ok(match class {
            Class::Regular { path, deleted } => Kind::Regular(if deleted {
                let raw = self.ghost(id, key, &path, &open.proc_path(), images)?;
                reg_deleted(regular::record(path, meta), raw)
            } else {
                regular::record(path, meta)
            }),
            Class::Directory { path } => Kind::Directory(regular::record(path, meta)),
            Class::Pipe { ino, fifo_path } => {
                let with_data = self.pipes_captured.insert(key);
                let pidfd = task.pidfd(open)?;
                Kind::Pipe(pipes::dump(open, pidfd.as_fd(), ino, fifo_path, with_data)?)
            }
            Class::CharDevice { path } if opts.shell_job && tty::is_pty_slave(meta.rdev()) => {
                let pidfd = task.pidfd(open)?;
                let t = tty::dump(open, &path, meta, pidfd.as_fd(), &mut self.terminal)?;
                Kind::Tty(t)
            }
            Class::CharDevice { path } => Kind::CharDevice(devices::dump(open, &path, meta, opts)?),
            Class::Anon { kind } => match kind.as_str() {
                "eventfd" => Kind::Eventfd(eventfd::dump_eventfd(open)?),
                "timerfd" => Kind::Timerfd(eventfd::dump_timerfd(open)?),
                "signalfd" => Kind::Signalfd(eventfd::dump_signalfd(open)?),
                "epoll" => Kind::Epoll(epoll::dump(open)?),
                "inotify" => Kind::Inotify(inotify::dump(open)?),
                other => return Err(open.refuse(other, false)),
            },
            Class::Memfd => Kind::Memfd(memfd::dump(id, open, meta, images, &mut self.memfds)?),
            Class::Socket { ino } => self.socket_kind(open, ino)?,
        })
    }

    /// The id of a known description `open` refers to, if any (kcmp among the holders of
    /// descriptions of the same inode).
    fn shared_with(&self, open: &OpenFd, key: InodeKey) -> Result<Option<u32>, FileError> {
        let Some(holders) = self.by_inode.get(&key) else {
            return Ok(None);
        };
        for h in holders {
            let same = sys::kcmp_same_file(open.pid, open.fd, h.pid, h.fd).map_err(|e| {
                open.inspect_err(
                    "kcmp",
                    PathBuf::from(format!("/proc/{}/fd/{}", h.pid, h.fd)),
                    e,
                )
            })?;
            if same {
                return Ok(Some(h.id));
            }
        }
        Ok(None)
    }

    fn next_id(&self) -> u32 {
        self.descs.len() as u32 + 1
    }

    /// The contents image of deleted inode `key`, written once (as ghost-`id`.img).
    fn ghost(
        &mut self,
        id: u32,
        key: InodeKey,
        path: &str,
        source: &Path,
        images: &ImageDir,
    ) -> Result<RawFileRef, FileError> {
        if let Some(raw) = self.ghosts.get(&key) {
            return Ok(raw.clone());
        }
        let raw = regular::write_ghost(id, source, images).map_err(|e| FileError::SaveGhost {
            id,
            path: path.to_string(),
            image: crate::image::names::ghost(id),
            source: e,
        })?;
        debug!(id, ghost = %raw.name, size = raw.size, "deleted file contents saved");
        self.ghosts.insert(key, raw.clone());
        Ok(raw)
    }

    /// Registers a file mapped into memory (`link` is /proc/PID/map_files/START-END) or the
    /// exe (/proc/PID/exe); returns its description id (a regular file, O_RDONLY, pos 0). One
    /// file (dev+ino) gets one id however often it is mapped. A deleted file's contents go to
    /// a ghost image, shared with the fds open on the same file.
    #[instrument(skip_all, fields(pid = pid.as_raw()))]
    pub fn add_mapped_file(
        &mut self,
        pid: Pid,
        link: &Path,
        images: &ImageDir,
    ) -> Result<u32, FileError> {
        let bad = mapped_err(pid, link);
        let meta = fs::metadata(link).map_err(|e| bad(format!("stat: {e}")))?;
        let key = InodeKey::of(&meta);
        if let Some(&id) = self.mapped.get(&key) {
            return Ok(id);
        }
        let text = fs::read_link(link).map_err(|e| bad(format!("readlink: {e}")))?;
        let text = text
            .into_os_string()
            .into_string()
            .map_err(|raw| bad(format!("path {raw:?} is not valid UTF-8 (not supported)")))?;
        if Link::parse(&text) == Link::Memfd {
            return self.add_mapped_memfd(pid, link, &text, &meta, images);
        }
        if !meta.is_file() || !text.starts_with('/') {
            return Err(bad(format!("{text} is not a regular file (not supported)")));
        }
        let (path, deleted) = inspect::resolve_deleted(&text, &meta);
        let id = self.next_id();
        let reg = if deleted {
            let raw = self.ghost(id, key, &path, link, images)?;
            reg_deleted(regular::record(path, &meta), raw)
        } else {
            regular::record(path, &meta)
        };
        debug!(id, link = %link.display(), path = %reg.path, deleted, "mapped file");
        Ok(self.push_mapped(key, id, libc::O_RDONLY, Kind::Regular(reg)))
    }

    /// A memfd mapped by a task: the description of an fd open on it if there is one (fds
    /// are dumped before memory), else one of its own; either way the mapping and the fds
    /// come back on one memfd.
    fn add_mapped_memfd(
        &mut self,
        pid: Pid,
        link: &Path,
        text: &str,
        meta: &fs::Metadata,
        images: &ImageDir,
    ) -> Result<u32, FileError> {
        let key = InodeKey::of(meta);
        if let Some(held) = self.by_inode.get(&key).and_then(|h| h.first()) {
            self.mapped.insert(key, held.id);
            return Ok(held.id);
        }
        let id = self.next_id();
        let m = memfd::dump_mapped(id, pid, link, text, meta, images, &mut self.memfds)?;
        debug!(id, link = %link.display(), name = %m.name, "mapped memfd");
        Ok(self.push_mapped(key, id, libc::O_RDWR, Kind::Memfd(m)))
    }

    /// Registers shared anonymous memory a task maps (`link`: /proc/PID/map_files/START-END);
    /// returns its description id, one per object however often and by whom it is mapped
    /// (a parent and its child after fork share one). Its contents are saved once.
    #[instrument(skip_all, fields(pid = pid.as_raw()))]
    pub fn add_shmem(
        &mut self,
        pid: Pid,
        link: &Path,
        images: &ImageDir,
    ) -> Result<u32, FileError> {
        let bad = mapped_err(pid, link);
        let meta = fs::metadata(link).map_err(|e| bad(format!("stat: {e}")))?;
        let key = InodeKey::of(&meta);
        if let Some(&id) = self.mapped.get(&key) {
            return Ok(id);
        }
        let id = self.next_id();
        let s = shmem::dump(id, link, images)
            .map_err(|e| bad(format!("save the shared memory: {e}")))?;
        debug!(id, link = %link.display(), ino = s.ino, size = s.size, "shared anonymous memory");
        Ok(self.push_mapped(key, id, libc::O_RDWR, Kind::Shmem(s)))
    }

    /// Adds the description `id` of an object mapped into memory (inode `key`), opened with
    /// `flags` at position 0, for every later mapping of the same inode; returns `id`.
    fn push_mapped(&mut self, key: InodeKey, id: u32, flags: i32, kind: Kind) -> u32 {
        self.descs.push(FileDesc {
            id,
            flags: flags as u32,
            pos: 0,
            kind: Some(kind),
        });
        self.mapped.insert(key, id);
        id
    }

    /// The descriptions collected, in id order.
    pub fn into_descs(self) -> Vec<FileDesc> {
        self.descs
    }
}

/// A deleted file's record, its contents in `raw`.
fn reg_deleted(reg: RegularFile, raw: RawFileRef) -> RegularFile {
    RegularFile {
        deleted: true,
        contents: Some(raw),
        ..reg
    }
}

/// True if fd `fd1` of `pid1` and fd `fd2` of `pid2` refer to one open file description
/// (kcmp KCMP_FILE).
pub fn same_description(pid1: Pid, fd1: RawFd, pid2: Pid, fd2: RawFd) -> io::Result<bool> {
    sys::kcmp_same_file(pid1, fd1, pid2, fd2)
}

/// The anonymous-inode files cryo dumps, as [`Link::AnonInode`] names them.
const ANON_KINDS: &[&str] = &["eventfd", "timerfd", "signalfd", "epoll", "inotify"];

/// Decides what an fd is (refusing what cryo cannot dump) and stats it.
fn classify(open: &OpenFd) -> Result<(Class, fs::Metadata), FileError> {
    let path = match Link::parse(&open.link) {
        Link::Socket => {
            let meta = open.stat()?;
            return Ok((Class::Socket { ino: meta.ino() }, meta));
        }
        Link::AnonInode(kind) => {
            if !ANON_KINDS.contains(&kind.as_str()) {
                return Err(open.refuse(kind, false));
            }
            return Ok((Class::Anon { kind }, open.stat()?));
        }
        Link::Memfd => {
            return Ok((Class::Memfd, open.stat()?));
        }
        Link::Other(kind) => {
            let kind = match kind {
                "net" | "mnt" | "pid" | "user" | "uts" | "ipc" | "cgroup" | "time" => {
                    format!("{kind} namespace")
                }
                other => format!("{other} file"),
            };
            return Err(open.refuse(kind, false));
        }
        Link::Pipe(ino) => {
            let meta = open.stat()?;
            let class = Class::Pipe {
                ino,
                fifo_path: String::new(),
            };
            return Ok((class, meta));
        }
        Link::Path(path) => path,
    };
    let meta = open.stat()?;
    let (path, deleted) = inspect::resolve_deleted(path, &meta);
    let file_type = meta.file_type();
    let o_path = open.flags & libc::O_PATH as u32 != 0;
    let class = if file_type.is_dir() {
        if deleted {
            return Err(open.refuse("deleted directory", true));
        }
        Class::Directory { path }
    } else if file_type.is_file() {
        Class::Regular { path, deleted }
    } else if deleted {
        return Err(open.refuse(format!("deleted {}", type_name(&meta)), true));
    } else if o_path {
        // An O_PATH fd only names the file: reopened by path, whatever it is.
        Class::Regular {
            path,
            deleted: false,
        }
    } else if file_type.is_fifo() {
        Class::Pipe {
            ino: meta.ino(),
            fifo_path: path,
        }
    } else if file_type.is_char_device() {
        Class::CharDevice { path }
    } else {
        return Err(open.refuse(type_name(&meta), false));
    };
    if !deleted {
        check_reachable(open, &class, &meta)?;
    }
    Ok((class, meta))
}

/// A path-based file must still be found at its path, or a restore would open another one.
fn check_reachable(open: &OpenFd, class: &Class, meta: &fs::Metadata) -> Result<(), FileError> {
    let path = match class {
        Class::Regular { path, .. } | Class::Directory { path } => path,
        Class::Pipe { fifo_path, .. } => fifo_path,
        Class::CharDevice { .. } | Class::Anon { .. } | Class::Memfd | Class::Socket { .. } => {
            return Ok(())
        }
    };
    // An O_PATH|O_NOFOLLOW fd may hold a symlink itself.
    let at_path = if meta.file_type().is_symlink() {
        fs::symlink_metadata(path)
    } else {
        fs::metadata(path)
    };
    match at_path {
        Ok(at_path) if InodeKey::of(&at_path) == InodeKey::of(meta) => Ok(()),
        Ok(_) => Err(open.dump_err(format!(
            "{path} now names another file than the one open (renamed or overmounted)"
        ))),
        Err(e) => Err(open.dump_err(format!("{path} cannot be found by its path: {e}"))),
    }
}

/// The file type of `meta` in words.
fn type_name(meta: &fs::Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_block_device() {
        "block device"
    } else if t.is_socket() {
        "unix socket file"
    } else if t.is_fifo() {
        "fifo"
    } else if t.is_char_device() {
        "character device"
    } else if t.is_dir() {
        "directory"
    } else if t.is_file() {
        "regular file"
    } else {
        "file of unknown type"
    }
}

/// A description in words, for messages: "regular file /x", "pipe:[123]"...
pub fn describe(desc: &FileDesc) -> String {
    match &desc.kind {
        Some(Kind::Regular(r)) if r.deleted => format!("deleted file {}", r.path),
        Some(Kind::Regular(r)) => format!("regular file {}", r.path),
        Some(Kind::Directory(r)) => format!("directory {}", r.path),
        Some(Kind::Pipe(p)) if p.fifo_path.is_empty() => format!("pipe:[{}]", p.ino),
        Some(Kind::Pipe(p)) => format!("fifo {}", p.fifo_path),
        Some(Kind::CharDevice(path)) => format!("char device {path}"),
        Some(Kind::Eventfd(e)) => format!("eventfd (count {})", e.count),
        Some(Kind::Timerfd(t)) => format!("timerfd (clock {})", t.clockid),
        Some(Kind::Signalfd(s)) => format!("signalfd (mask {:#x})", s.sigmask),
        Some(Kind::Epoll(e)) => format!("epoll ({} targets)", e.targets.len()),
        Some(Kind::Inotify(i)) => format!("inotify ({} watches)", i.watches.len()),
        Some(Kind::Memfd(m)) => format!("memfd:{}", m.name),
        Some(Kind::Shmem(s)) => format!("shared anonymous memory ({} bytes)", s.size),
        Some(Kind::Tty(t)) => format!("terminal {} (the shell job's)", t.path),
        Some(Kind::Socket(s)) => sockets::describe(s),
        None => "no kind".into(),
    }
}

/// A [`FileError::Restore`] for `desc`.
fn restore_err(desc: &FileDesc, op: impl Into<String>, source: io::Error) -> FileError {
    FileError::Restore {
        id: desc.id,
        what: describe(desc),
        op: op.into(),
        source,
    }
}

/// open(2) flags to reopen a description with: the dumped ones without creation flags, with
/// O_NOCTTY (the controlling terminal is the session's business) and O_CLOEXEC (the fd is a
/// temporary; the target fd gets its own FD_CLOEXEC). O_ASYNC is set after (see [`set_async`]).
fn open_flags(flags: u32) -> OFlag {
    let drop = libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC | libc::O_CLOEXEC | libc::O_ASYNC;
    OFlag::from_bits_retain((flags as i32 & !drop) | libc::O_NOCTTY | libc::O_CLOEXEC)
}

/// Sets O_ASYNC through F_SETFL (open(2) ignores it) when the description had it.
fn set_async(desc: &FileDesc, fd: &OwnedFd) -> Result<(), FileError> {
    if desc.flags & libc::O_ASYNC as u32 == 0 {
        return Ok(());
    }
    let old = nix::fcntl::fcntl(fd, FcntlArg::F_GETFL)
        .map_err(|e| restore_err(desc, "F_GETFL", e.into()))?;
    nix::fcntl::fcntl(
        fd,
        FcntlArg::F_SETFL(OFlag::from_bits_retain(old | libc::O_ASYNC)),
    )
    .map_err(|e| restore_err(desc, "F_SETFL O_ASYNC", e.into()))?;
    Ok(())
}

/// Indexes descriptions by id, refusing a duplicate or zero id and a record without kind.
fn index(descs: &[FileDesc]) -> Result<HashMap<u32, &FileDesc>, FileError> {
    let mut by_id = HashMap::with_capacity(descs.len());
    for desc in descs {
        if desc.id == 0 {
            return Err(FileError::Invalid {
                id: 0,
                detail: "id 0 is reserved (no file)".into(),
            });
        }
        if desc.kind.is_none() {
            return Err(FileError::Invalid {
                id: desc.id,
                detail: "record without a kind (written by a newer cryo?)".into(),
            });
        }
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
fn check_fds(by_id: &HashMap<u32, &FileDesc>, fds: &[FdEntry]) -> Result<(), FileError> {
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
pub fn validate(
    descs: &[FileDesc],
    fds_of_tasks: &[&[FdEntry]],
    images: &ImageDir,
) -> Result<UnixLinks, FileError> {
    let by_id = index(descs)?;
    let mut ghosts_checked = HashSet::new();
    let mut pipe_data: HashMap<(u64, &str), (u32, &[u8])> = HashMap::new();
    for desc in descs {
        let changed = |detail: &str| FileError::Changed {
            id: desc.id,
            what: describe(desc),
            detail: detail.to_string(),
        };
        match desc.kind.as_ref().expect("checked by index") {
            Kind::Regular(reg) if reg.deleted => {
                validate_ghost(desc, reg, images, &mut ghosts_checked)?;
            }
            Kind::Regular(reg) => {
                let o_path = desc.flags & libc::O_PATH as u32 != 0;
                let meta = if o_path {
                    fs::symlink_metadata(&reg.path)
                } else {
                    fs::metadata(&reg.path)
                }
                .map_err(|_| changed("the file is gone"))?;
                if !o_path && !meta.is_file() {
                    return Err(changed("is no longer a regular file"));
                }
                if !o_path && desc.pos > meta.size() && meta.size() < reg.size {
                    return Err(changed(&format!(
                        "offset {} is beyond the end: the file was truncated since the dump \
                         ({} bytes then, {} now)",
                        desc.pos,
                        reg.size,
                        meta.size()
                    )));
                }
            }
            Kind::Directory(reg) => {
                let meta = fs::metadata(&reg.path).map_err(|_| changed("the directory is gone"))?;
                if !meta.is_dir() {
                    return Err(changed("is no longer a directory"));
                }
            }
            Kind::Pipe(pipe) => {
                if !pipe.fifo_path.is_empty() && !pipes::is_fifo(&pipe.fifo_path) {
                    return Err(changed("the fifo is gone or is no longer a fifo"));
                }
                if !pipe.data.is_empty() {
                    let key = (pipe.ino, pipe.fifo_path.as_str());
                    if let Some((other, _)) = pipe_data.insert(key, (desc.id, &pipe.data)) {
                        return Err(FileError::Invalid {
                            id: desc.id,
                            detail: format!(
                                "file {other} holds the unread data of the same pipe too"
                            ),
                        });
                    }
                }
            }
            Kind::CharDevice(path) => {
                let meta = fs::metadata(path).map_err(|_| changed("the device node is gone"))?;
                if !meta.file_type().is_char_device() {
                    return Err(changed("is no longer a character device"));
                }
            }
            Kind::Memfd(m) => memfd::validate(desc, m, images)?,
            Kind::Shmem(s) => shmem::validate(desc, s, images)?,
            Kind::Tty(_) => {}
            Kind::Eventfd(_)
            | Kind::Timerfd(_)
            | Kind::Signalfd(_)
            | Kind::Epoll(_)
            | Kind::Inotify(_) => {}
            // Unix sockets are decoded (and checked) by UnixLinks::build below.
            Kind::Socket(s) if s.kind == sockets::UNIX_KIND => {}
            Kind::Socket(s) => {
                sockets::decode(desc, s)?;
            }
        }
    }
    for fds in fds_of_tasks {
        check_fds(&by_id, fds)?;
    }
    // Peers, waiting clients and descriptions in flight all in the image.
    UnixLinks::build(descs)
}

/// Checks the contents image of a deleted file (once per image).
fn validate_ghost<'a>(
    desc: &FileDesc,
    reg: &'a RegularFile,
    images: &ImageDir,
    checked: &mut HashSet<&'a str>,
) -> Result<(), FileError> {
    let raw = reg.contents.as_ref().ok_or_else(|| FileError::Invalid {
        id: desc.id,
        detail: format!("deleted file {} has no contents image", reg.path),
    })?;
    if raw.size != reg.size {
        return Err(FileError::Invalid {
            id: desc.id,
            detail: format!(
                "deleted file {} was {} bytes but its contents image {} holds {}",
                reg.path, reg.size, raw.name, raw.size
            ),
        });
    }
    if !Path::new(&reg.path).is_absolute() {
        return Err(FileError::Invalid {
            id: desc.id,
            detail: format!("path {:?} is not absolute", reg.path),
        });
    }
    if checked.insert(&raw.name) {
        images.check_raw(raw).map_err(|e| FileError::Ghost {
            id: desc.id,
            source: Box::new(e),
        })?;
    }
    Ok(())
}

/// Restore side, in the freshly forked child (single-threaded, all signals blocked): opens
/// every fd of the task at its original number, with its flags, offset and FD_CLOEXEC; pipes
/// refilled; descriptions shared by several fds restored as dups. `keep` (numbered above
/// every fd of `fds`) survive; every other fd of the process is closed at the end. The caller
/// must hold no `OwnedFd` of its own outside `keep`: the numbers below are overwritten and
/// the rest closed.
///
/// Nothing is logged once fds start being placed: fd 2 may then be the task's own stderr.
pub fn restore_task_fds(
    descs: &[FileDesc],
    fds: &[FdEntry],
    images: &ImageDir,
    keep: &[RawFd],
) -> Result<(), FileError> {
    let links = UnixLinks::build(descs)?;
    restore_task_fds_with(
        descs,
        fds,
        images,
        keep,
        &FdRestoreOptions::default(),
        &links,
    )
}

/// How fds are restored.
#[derive(Debug, Clone, Default)]
pub struct FdRestoreOptions {
    /// TCP connections come back reset (`--tcp-close`): the application sees ECONNRESET.
    pub tcp_close: bool,
    /// Descriptions this process shares with its parent, already open at these numbers
    /// (inherited through fork): placed from there instead of being created again.
    pub inherited: HashMap<u32, RawFd>,
    /// Descriptions this process creates without holding them (the other end of a unix pair
    /// it holds one end of, for a child), placed at these numbers (above every fd of the
    /// image and every control and mapping fd) and kept open for the children to inherit.
    pub extra: HashMap<u32, RawFd>,
    /// The shared memory objects cryo made for the tree, by dumped inode: the fd (inherited)
    /// each memfd description and each mapping reopens.
    pub shared: HashMap<u64, RawFd>,
    /// The terminal of `cryo restore` (inherited), which the shell job's terminal fds reopen.
    pub terminal: Option<RawFd>,
}

/// [`restore_task_fds`] with options. Sockets are re-created before any fd is placed:
/// listeners, then connections, then UDP sockets, then the unix sockets made together (pairs,
/// listeners with waiting connections), whose queues are refilled once every description they
/// carry in flight is open. `links` is [`UnixLinks::build`] of `descs`, built once for every
/// process of a tree.
pub(crate) fn restore_task_fds_with(
    descs: &[FileDesc],
    fds: &[FdEntry],
    images: &ImageDir,
    keep: &[RawFd],
    opts: &FdRestoreOptions,
    links: &UnixLinks,
) -> Result<(), FileError> {
    let by_id = index(descs)?;
    check_fds(&by_id, fds)?;
    // Every temporary lives above the highest target, so placing never overwrites one.
    let min_high = fds.iter().map(|e| e.fd).max().map_or(0, |m| m + 1);
    let used: BTreeSet<u32> = fds.iter().map(|e| e.file_id).collect();
    // Besides its own: what it keeps for its descendants (inherited and passed on, or made
    // here), the other members of the unix groups it makes, and what their queues carry.
    let wanted: BTreeSet<u32> = used.iter().chain(opts.extra.keys()).copied().collect();
    let mut to_open = links.to_open(&wanted, |id| opts.inherited.contains_key(&id));
    // An anonymous pipe made here is made whole: its other ends go to whoever holds them.
    for ends in pipes::components(descs) {
        if ends
            .iter()
            .any(|id| to_open.contains(id) && !opts.inherited.contains_key(id))
        {
            to_open.extend(ends);
        }
    }
    if to_open.len() > used.len() {
        sys::raise_nofile();
    }
    let mut opened: HashMap<u32, OwnedFd> = HashMap::with_capacity(to_open.len());
    let mut ghosts = regular::Ghosts::default();
    let mut pipe_descs = Vec::new();
    let mut epolls = Vec::new();
    let mut memfds = memfd::Made::default();
    let mut socket_descs = Vec::new();
    for id in &to_open {
        let desc = by_id[id];
        if let Some(&parent_fd) = opts.inherited.get(id) {
            // An fd this process inherited and keeps open until placing is over.
            let fd = sys::dup_at_least(sys::borrow_raw(parent_fd), min_high)
                .map_err(|e| restore_err(desc, "F_DUPFD_CLOEXEC (inherited)", e))?;
            debug!(id, what = %describe(desc), "description inherited");
            opened.insert(*id, fd);
            continue;
        }
        let fd = match desc.kind.as_ref().expect("checked by index") {
            Kind::Regular(reg) => regular::open(desc, reg, false, &mut ghosts, images)?,
            Kind::Directory(reg) => regular::open(desc, reg, true, &mut ghosts, images)?,
            Kind::CharDevice(path) => devices::open(desc, path)?,
            Kind::Pipe(pipe) => {
                pipe_descs.push((desc, pipe));
                continue;
            }
            Kind::Eventfd(ev) => eventfd::open_eventfd(desc, ev)?,
            Kind::Timerfd(t) => eventfd::open_timerfd(desc, t)?,
            Kind::Signalfd(s) => eventfd::open_signalfd(desc, s)?,
            Kind::Inotify(i) => inotify::open(desc, i)?,
            Kind::Memfd(m) => memfds.open(desc, m, images, &opts.shared)?,
            Kind::Tty(t) => tty::open(desc, t, opts.terminal)?,
            Kind::Shmem(_) => {
                return Err(FileError::Invalid {
                    id: desc.id,
                    detail: "shared anonymous memory is mapped, never held by an fd".into(),
                })
            }
            Kind::Epoll(ep) => {
                // Registered once every other fd is at its number.
                epolls.push((desc, ep));
                continue;
            }
            Kind::Socket(s) => {
                if !links.is_member(*id) {
                    socket_descs.push((desc, sockets::decode(desc, s)?));
                }
                continue; // a unix socket made with its group, below
            }
        };
        debug!(id, what = %describe(desc), "description opened");
        opened.insert(*id, above(desc, fd, min_high)?);
    }
    for (id, fd) in pipes::open_all(&pipe_descs)? {
        let desc = by_id[&id];
        opened.insert(id, above(desc, fd, min_high)?);
    }
    socket_descs.sort_by_key(|(_, d)| d.order());
    // A socket used by one fd whose number is free goes there at once: a server with
    // thousands of connections then never holds twice as many fds.
    let mut uses: HashMap<u32, Vec<&FdEntry>> = HashMap::new();
    for e in fds {
        uses.entry(e.file_id).or_default().push(e);
    }
    let mut placed: HashSet<RawFd> = HashSet::new();
    for (desc, decoded) in &socket_descs {
        let fd = sockets::open(desc, decoded, opts.tcp_close)?;
        match uses.get(&desc.id).map(Vec::as_slice) {
            Some([e]) if e.fd > 2 && !sys::fd_is_open(e.fd) && !links.is_carried(desc.id) => {
                sys::dup_to(fd.as_fd(), e.fd, e.cloexec).map_err(|source| FileError::Place {
                    fd: e.fd,
                    id: e.file_id,
                    op: "dup3",
                    source,
                })?;
                placed.insert(e.fd);
            }
            _ => {
                opened.insert(desc.id, above(desc, fd, min_high)?);
            }
        }
    }
    if !socket_descs.is_empty() {
        debug!(
            sockets = socket_descs.len(),
            placed = placed.len(),
            "sockets restored"
        );
    }
    // Unix sockets made together, their queues refilled with what they carry in flight.
    links.make_all(&by_id, &to_open, &mut opened, min_high)?;
    // What this process made for its children (the other end of a pair, a description in
    // flight a child holds too): above every extra slot until placing is over.
    let extra_top = opts
        .extra
        .values()
        .max()
        .map_or(min_high, |&m| m.max(min_high) + 1);
    let mut extras: Vec<(OwnedFd, RawFd)> = Vec::new();
    for (id, &at) in &opts.extra {
        if used.contains(id) {
            continue;
        }
        if let Some(fd) = opened.remove(id) {
            extras.push((above(by_id[id], fd, extra_top)?, at));
        }
    }
    drop(ghosts);
    drop(memfds);
    debug!(fds = fds.len(), descriptions = opened.len(), "placing fds");
    // From here on: no logging (fd 2 is being replaced).
    for e in fds {
        if placed.contains(&e.fd) {
            continue;
        }
        let Some(src) = opened.get(&e.file_id) else {
            continue; // an epoll, placed below
        };
        sys::dup_to(src.as_fd(), e.fd, e.cloexec).map_err(|source| FileError::Place {
            fd: e.fd,
            id: e.file_id,
            op: "dup3",
            source,
        })?;
    }
    drop(opened);
    epoll::place_all(&epolls, fds, min_high)?;
    let mut keep = keep.to_vec();
    for (fd, at) in &extras {
        sys::dup_to(fd.as_fd(), *at, true).map_err(|source| FileError::Place {
            fd: *at,
            id: 0,
            op: "dup3 (a description kept for a child)",
            source,
        })?;
        keep.push(*at);
    }
    drop(extras);
    close_others(fds, &keep)
}

/// Both ends of the connected unix pair whose ends are descriptions `a` and `b`, made by cryo
/// itself for two root processes that share it (each inherits one end from cryo). Their
/// queues must carry no descriptors in flight (the plan refuses that).
pub(crate) fn open_unix_pair_by_ids(
    descs: &[FileDesc],
    links: &UnixLinks,
    a: u32,
    b: u32,
) -> Result<(OwnedFd, OwnedFd), FileError> {
    let by_id = index(descs)?;
    let both: BTreeSet<u32> = [a, b].into();
    let mut opened = HashMap::new();
    links.make_all(&by_id, &both, &mut opened, 0)?;
    let mut end = |id: u32| {
        opened.remove(&id).ok_or(FileError::Invalid {
            id,
            detail: "not one end of a unix pair".into(),
        })
    };
    Ok((end(a)?, end(b)?))
}

/// The error about mapping `link` (/proc/PID/map_files/START-END) of `pid`.
fn mapped_err(pid: Pid, link: &Path) -> impl Fn(String) -> FileError + '_ {
    move |detail| FileError::Mapped {
        pid,
        link: link.to_owned(),
        detail,
    }
}

/// The sets of descriptions that one process must make together and hand down to the others
/// holding them: unix sockets made together with what their queues carry in flight, and the
/// ends of an anonymous pipe. Overlapping sets are joined; each set sorted, the sets in order.
pub(crate) fn made_together(descs: &[FileDesc], links: &UnixLinks) -> Vec<Vec<u32>> {
    let mut sets: Vec<Vec<u32>> = links.group_sets().collect();
    sets.extend(pipes::components(descs));
    join_overlapping(sets)
}

/// Whether a description of this kind can be opened by a process that does not hold it (or
/// by cryo itself) and handed down: files, directories, devices, pipes and FIFOs. Others
/// (epoll, signalfd, sockets...) depend on the process that makes them.
pub(crate) fn can_hand_down(desc: &FileDesc) -> bool {
    matches!(
        desc.kind,
        Some(Kind::Regular(_) | Kind::Directory(_) | Kind::CharDevice(_) | Kind::Pipe(_))
    )
}

/// Opens, in cryo itself, the descriptions of `ids` (all of kinds [`can_hand_down`]) for
/// processes in different trees that share them: (id, fd) each.
pub(crate) fn open_in_cryo(
    descs: &[FileDesc],
    ids: &[u32],
    images: &ImageDir,
) -> Result<Vec<(u32, OwnedFd)>, FileError> {
    let by_id = index(descs)?;
    let mut ghosts = regular::Ghosts::default();
    let mut pipe_descs = Vec::new();
    let mut out = Vec::new();
    for id in ids {
        let desc = by_id.get(id).copied().ok_or(FileError::Invalid {
            id: *id,
            detail: "no such description".into(),
        })?;
        let fd = match desc.kind.as_ref() {
            Some(Kind::Regular(reg)) => regular::open(desc, reg, false, &mut ghosts, images)?,
            Some(Kind::Directory(reg)) => regular::open(desc, reg, true, &mut ghosts, images)?,
            Some(Kind::CharDevice(path)) => devices::open(desc, path)?,
            Some(Kind::Pipe(pipe)) => {
                pipe_descs.push((desc, pipe));
                continue;
            }
            _ => {
                return Err(FileError::Invalid {
                    id: *id,
                    detail: format!("{} cannot be made by cryo for two trees", describe(desc)),
                })
            }
        };
        out.push((*id, fd));
    }
    out.extend(pipes::open_all(&pipe_descs)?);
    Ok(out)
}

/// The union of every chain of sets that share an element.
fn join_overlapping(sets: Vec<Vec<u32>>) -> Vec<Vec<u32>> {
    fn root(up: &HashMap<u32, u32>, mut id: u32) -> u32 {
        while let Some(&p) = up.get(&id) {
            if p == id {
                break;
            }
            id = p;
        }
        id
    }
    let mut up: HashMap<u32, u32> = HashMap::new();
    for set in &sets {
        let Some(&first) = set.first() else { continue };
        let top = root(&up, first);
        up.insert(top, top);
        for &id in &set[1..] {
            let r = root(&up, id);
            up.insert(r, top);
        }
    }
    let mut joined: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for &id in up.keys() {
        joined.entry(root(&up, id)).or_default().push(id);
    }
    let mut out: Vec<Vec<u32>> = joined
        .into_values()
        .map(|mut v| {
            v.sort_unstable();
            v
        })
        .collect();
    out.sort_unstable();
    out
}

/// `fd` moved to a number at or above `min` (it may already be there).
fn above(desc: &FileDesc, fd: OwnedFd, min: RawFd) -> Result<OwnedFd, FileError> {
    if fd.as_raw_fd() >= min {
        return Ok(fd);
    }
    sys::dup_at_least(fd.as_fd(), min).map_err(|e| restore_err(desc, "F_DUPFD_CLOEXEC", e))
}

/// Closes every fd of this process that is neither a target of `fds` nor in `keep`.
fn close_others(fds: &[FdEntry], keep: &[RawFd]) -> Result<(), FileError> {
    let kept: BTreeSet<u32> = fds
        .iter()
        .map(|e| e.fd)
        .chain(keep.iter().copied())
        .filter_map(|fd| u32::try_from(fd).ok())
        .collect();
    let mut next = 0u32;
    for &fd in &kept {
        if fd > next {
            close_gap(next, fd - 1)?;
        }
        next = fd.saturating_add(1);
    }
    if next < u32::MAX {
        close_gap(next, u32::MAX)?;
    }
    Ok(())
}

fn close_gap(first: u32, last: u32) -> Result<(), FileError> {
    sys::close_range(first, last).map_err(|source| FileError::Place {
        fd: first as RawFd,
        id: 0,
        op: "close_range",
        source,
    })
}

/// Restore side, in the child: opens the file of description `id` for a mapping (O_RDWR if
/// `writable`, else O_RDONLY), for the caller to place at a high fd. A deleted file is the
/// same recreated inode the fds use, whichever of the two is opened first; a memfd or shared
/// anonymous memory only through [`open_for_mapping_with`].
pub fn open_for_mapping(
    descs: &[FileDesc],
    id: u32,
    writable: bool,
    images: &ImageDir,
) -> Result<OwnedFd, FileError> {
    open_for_mapping_with(descs, id, writable, images, &HashMap::new())
}

/// [`open_for_mapping`] in a process of a restored tree: a memfd or shared anonymous memory
/// is the object cryo made for the tree (`shared`: dumped inode -> the fd holding it).
pub fn open_for_mapping_with(
    descs: &[FileDesc],
    id: u32,
    writable: bool,
    images: &ImageDir,
    shared: &HashMap<u64, RawFd>,
) -> Result<OwnedFd, FileError> {
    let desc = descs
        .iter()
        .find(|d| d.id == id)
        .ok_or_else(|| FileError::Invalid {
            id,
            detail: "a mapping refers to it but files.img does not hold it".into(),
        })?;
    match &desc.kind {
        Some(Kind::Regular(reg)) => regular::open_for_mapping(desc, reg, writable, images),
        Some(Kind::Memfd(_) | Kind::Shmem(_)) => shmem::open_for_mapping(desc, writable, shared),
        _ => Err(FileError::Invalid {
            id,
            detail: format!("{} cannot be mapped: not a regular file", describe(desc)),
        }),
    }
}
