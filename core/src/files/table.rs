//! The dump side of files: the table of open file descriptions of a dump, each recorded
//! once however many fds (of however many tasks) refer to it, and the classification of an
//! fd that picks the kind (kind.rs) that dumps it.
//!
//! ```text
//!   /proc/PID/fd/N      readlink -> what it is (path, pipe:[INO], socket:[INO], anon_inode:[KIND])
//!   /proc/PID/fdinfo/N  pos, flags (O_CLOEXEC -> FdEntry.cloexec)
//!   stat of the fd      dev+ino: descriptions of one inode are compared with
//!                       kcmp(KCMP_FILE), across pids too -> one FileDesc per description
//!   the kind claiming it  its record (kind.rs: FileKind::dump)
//! ```

use std::collections::{HashMap, HashSet};
use std::fs;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use cryo_proto::image::{file_desc::Kind, FdEntry, FdOwner, FileDesc, FileLock, Socket};
use nix::unistd::Pid;
use tracing::{debug, instrument};

use super::error::mapped_step;
use super::inspect::{self, InodeKey, Link, OpenFd};
use super::kind::{Dumping, KindState, Seen};
use super::registry;
use super::{locks, memfd, regular, shmem, FileError};
use crate::image::ImageDir;
use crate::sockets::{self, kind as kind_socket};
use crate::sys;

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
    /// The SysV segments attached, by IPC namespace (0: cryo's) and id.
    sysv: HashMap<(u64, i32), u32>,
    /// What the kinds remember across the fds of the dump (ghost images, memfd contents,
    /// the shell job's terminal, pipes whose data is captured, the sockets captured).
    state: KindState,
    /// The socket fds of the task being dumped, as its socket pass found them: their link and
    /// inode are known, so only their fdinfo is read.
    task_sockets: HashMap<RawFd, InodeKey>,
    /// The locks the fds of the task being dumped showed, with their description's id.
    task_locks: Vec<(u32, locks::HeldLock)>,
    /// The signal owners of the task's fds, with their description's id.
    task_owners: Vec<(u32, FdOwner)>,
    /// The descriptions whose signal owner an earlier task recorded (it is the
    /// description's: set again once, by that task).
    owners_recorded: HashSet<u32>,
}

impl FileTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Refuses a deleted file above `bytes` instead of copying its contents into the image
    /// (`--ghost-limit`).
    pub fn limit_ghosts(&mut self, bytes: u64) {
        self.state.get::<regular::GhostLimit>().0 = Some(bytes);
    }

    /// Makes the sockets captured by `dump` known: their fds are dumped from these records
    /// (without it, every socket fd is refused).
    pub fn add_sockets(&mut self, dump: &sockets::SocketDump) {
        kind_socket::add_known(&mut self.state, dump);
        self.task_sockets = dump.socket_fds().clone();
    }

    /// Dumps one of cryo's own fds (a descriptor in flight, duplicated into cryo by a peek)
    /// as a description no fd of a task points to, unless kcmp finds a task's fd (or an
    /// earlier one of cryo's) on the same description. Returns its id.
    pub(crate) fn dump_own_fd(
        &mut self,
        fd: BorrowedFd<'_>,
        images: &ImageDir,
    ) -> Result<u32, FileError> {
        let me = nix::unistd::getpid();
        let mut pidfd = None;
        let raw = fd.as_raw_fd();
        // A description in flight has no process: no lock or owner of cryo's is the task's.
        let marks = (self.task_locks.len(), self.task_owners.len());
        let entry = self.dump_fd(me, &mut pidfd, raw, None, images, &FdDumpOptions::default());
        self.task_locks.truncate(marks.0);
        self.task_owners.truncate(marks.1);
        let entry = entry?;
        let desc = self.descs.iter().find(|d| d.id == entry.file_id);
        if let Some(k) = desc.and_then(|d| d.kind.as_ref()).map(registry::of) {
            if !k.in_flight() {
                return Err(FileError::Dump {
                    pid: me,
                    fd: raw,
                    detail: format!(
                        "{} in flight: not supported yet",
                        k.describe(desc.expect("found above"))
                    ),
                });
            }
        }
        Ok(entry.file_id)
    }

    /// Makes the processes of the dump (their pids) and their threads known: a pidfd of one
    /// of the processes is dumped (and comes back on it); a pidfd of any other process or
    /// thread is refused.
    pub fn add_processes(
        &mut self,
        pids: impl IntoIterator<Item = Pid>,
        tids: impl IntoIterator<Item = Pid>,
    ) {
        super::pidfd::add_processes(&mut self.state, pids, tids);
    }

    /// Replaces the record of socket `rec.ino` (known through [`Self::add_sockets`]), in the
    /// descriptions already dumped too.
    pub(crate) fn update_socket(&mut self, rec: &Socket) {
        kind_socket::update(&mut self.state, &mut self.descs, rec);
    }

    /// Marks the unix sockets whose peer is outside the dump (accepted with `--ext-unix-sk`)
    /// in the descriptions built so far: they are restored broken.
    pub fn mark_external_peers(&mut self, external: &[sockets::ExternalPeer]) {
        kind_socket::mark_external_peers(&mut self.descs, external);
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
        let mut pidfd = None;
        let fds = inspect::list_fds(pid)?;
        let mut socket_fdinfo = self.socket_fdinfo(pid, &fds)?;
        let mut entries = Vec::with_capacity(fds.len());
        for fd in fds {
            let known = self.task_sockets.get(&fd).copied();
            let known = known.zip(socket_fdinfo.remove(&fd));
            entries.push(self.dump_fd(pid, &mut pidfd, fd, known, images, opts)?);
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

    /// Dumps fd `fd` of `pid`; `known_socket` is the inode and fdinfo of a socket fd the
    /// task's socket pass identified (then nothing else is read).
    fn dump_fd(
        &mut self,
        pid: Pid,
        pidfd: &mut Option<OwnedFd>,
        fd: RawFd,
        known_socket: Option<(InodeKey, OpenFd)>,
        images: &ImageDir,
        opts: &FdDumpOptions,
    ) -> Result<FdEntry, FileError> {
        let (open, key, classified) = match known_socket {
            Some((key, open)) => (open, key, None),
            None => {
                let open = OpenFd::read(pid, fd)?;
                let (seen, meta) = classify(&open)?;
                (open, InodeKey::of(&meta), Some((seen, meta)))
            }
        };
        let entry = |file_id| FdEntry {
            fd,
            file_id,
            cloexec: open.cloexec,
        };
        if let Some(id) = self.shared_with(&open, key)? {
            debug!(fd, id, link = %open.link, "fd shares a description");
            self.note_locks_and_owner(&open, id, pidfd)?;
            return Ok(entry(id));
        }
        let id = self.next_id();
        let parent_mount_namespace = match &classified {
            Some((seen, meta)) => {
                let parent = opened_in_parent_namespace(&mut self.state, &open, seen)?;
                // Found where the restore opens it: in the holder's namespace, or in the
                // parent's (a file inherited from before the holder made its own, which a
                // pivoted root may not show at all).
                let root_of = parent
                    .then(|| super::mount_views::parent_of_holder(&mut self.state, &open))
                    .flatten();
                check_reachable(&open, seen, meta, root_of)?;
                parent
            }
            None => false,
        };
        let kind = match classified {
            None => kind_socket::known(&mut self.state, &open, key.ino)?,
            Some((seen, meta)) => {
                let mut dumping = Dumping {
                    open: &open,
                    seen,
                    meta: &meta,
                    id,
                    key,
                    images,
                    shell_job: opts.shell_job,
                    state: &mut self.state,
                    pidfd,
                };
                match registry::claiming(&dumping) {
                    Some(k) => k.dump(&mut dumping)?,
                    None => return Err(refusal(&open, &dumping.seen)),
                }
            }
        };
        let rw_hint = super::write_hint::dump(&open, &kind, pidfd)?;
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
            parent_mount_namespace,
            in_mount_namespace: false,
            rw_hint,
            kind: Some(kind),
        });
        self.by_inode.entry(key).or_default().push(Holder {
            pid: open.pid,
            fd,
            id,
        });
        self.note_locks_and_owner(&open, id, pidfd)?;
        Ok(entry(id))
    }

    /// Keeps the locks fd `open` (of description `id`) shows and its signal owner, for
    /// [`Self::take_locks_and_owners`].
    fn note_locks_and_owner(
        &mut self,
        open: &OpenFd,
        id: u32,
        pidfd: &mut Option<OwnedFd>,
    ) -> Result<(), FileError> {
        self.task_locks
            .extend(open.locks.iter().map(|l| (id, *l)));
        if self.owners_recorded.contains(&id) {
            return Ok(());
        }
        if let Some(owner) = locks::owner_of(open, pidfd)? {
            self.task_owners.push((id, owner));
        }
        Ok(())
    }

    /// The file locks and fd signal owners of the task whose fds were just dumped
    /// ([`Self::dump_task_fds`]), each once, and each description's owner once in the dump;
    /// an owner outside the dump's processes, threads and groups `members` is refused.
    pub fn take_locks_and_owners(
        &mut self,
        pid: Pid,
        members: &locks::DumpMembers,
    ) -> Result<(Vec<FileLock>, Vec<FdOwner>), FileError> {
        let (found, owners) = locks::for_task(
            pid,
            members,
            std::mem::take(&mut self.task_locks),
            std::mem::take(&mut self.task_owners),
        )?;
        let owners = owners
            .into_iter()
            .map(|(id, o)| {
                self.owners_recorded.insert(id);
                o
            })
            .collect();
        Ok((found, owners))
    }

    /// The id of a known description `open` refers to, if any (kcmp among the holders of
    /// descriptions of the same inode).
    fn shared_with(&self, open: &OpenFd, key: InodeKey) -> Result<Option<u32>, FileError> {
        let Some(holders) = self.by_inode.get(&key) else {
            return Ok(None);
        };
        for h in holders {
            let same = sys::kcmp::kcmp_same_file(open.pid, open.fd, h.pid, h.fd).map_err(|e| {
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
        let (meta, key) = match self.mapped_inode(pid, link)? {
            Mapped::Known(id) => return Ok(id),
            Mapped::New(meta, key) => (meta, key),
        };
        let text = fs::read_link(link).map_err(mapped_step(pid, link, "readlink"))?;
        let bad = |detail: String| FileError::Mapped {
            pid,
            link: link.to_owned(),
            detail,
        };
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
        let reg = regular::dump_file(&mut self.state, id, key, path, deleted, &meta, link, images)?;
        debug!(id, link = %link.display(), path = %reg.path, deleted, "mapped file");
        Ok(self.push_mapped(key, id, libc::O_RDONLY, Kind::Regular(reg)))
    }

    /// The rings of a packet socket mapped by `pid` (`link`: /proc/PID/map_files/START-END,
    /// `len` bytes at page offset `pgoff`): the id of the socket's description (fds are
    /// dumped before memory). The restore maps the ring it made again through the process's
    /// own fd on the socket, so `pid` must hold one, and the mapping must be whole (as mmap
    /// made it: every ring, from offset 0).
    pub fn add_packet_ring(
        &mut self,
        pid: Pid,
        link: &Path,
        len: u64,
        pgoff: u64,
    ) -> Result<u32, FileError> {
        let bad = |detail: String| FileError::Mapped {
            pid,
            link: link.to_owned(),
            detail,
        };
        let meta = fs::metadata(link).map_err(mapped_step(pid, link, "stat"))?;
        let key = InodeKey::of(&meta);
        let held = self.by_inode.get(&key).and_then(|h| h.first()).map(|h| h.id);
        let record = held
            .and_then(|id| self.descs.iter().find(|d| d.id == id))
            .and_then(|d| match &d.kind {
                Some(Kind::Socket(Socket {
                    state: Some(cryo_proto::image::socket::State::Packet(p)),
                    ..
                })) => Some(p),
                _ => None,
            });
        let (Some(id), Some(p)) = (held, record) else {
            return Err(bad(format!(
                "a mapping of socket:[{}] that is no packet ring held at an fd of the dump \
                 (not supported)",
                meta.ino()
            )));
        };
        // The process's own fd on the socket: the restore maps the ring through it.
        let target = format!("socket:[{}]", meta.ino());
        let fd = fs::read_dir(crate::proc::dir(pid).join("fd"))
            .map_err(mapped_step(pid, link, "list the fds"))?
            .filter_map(|e| e.ok())
            .find(|e| fs::read_link(e.path()).is_ok_and(|l| l.as_os_str() == target.as_str()))
            .map(|e| e.file_name().to_string_lossy().into_owned());
        let Some(fd) = fd else {
            return Err(bad(format!(
                "packet ring of {target}, which the process holds at no fd: the restore maps \
                 the ring through one (not supported)"
            )));
        };
        let rings = sockets::packet_ring::record_len(p);
        if pgoff != 0 || len != rings {
            return Err(bad(format!(
                "packet ring of {target} (fd {fd}): {len} bytes mapped at offset {pgoff} of \
                 rings of {rings} bytes; only a whole mapping comes back (not supported)"
            )));
        }
        Ok(id)
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
        let m = memfd::dump_mapped(id, pid, link, text, meta, images, &mut self.state)?;
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
        let key = match self.mapped_inode(pid, link)? {
            Mapped::Known(id) => return Ok(id),
            Mapped::New(_, key) => key,
        };
        // Held by an fd too (fds are dumped before memory): the mapping and the fds come
        // back on one object.
        if let Some(held) = self.by_inode.get(&key).and_then(|h| h.first()) {
            self.mapped.insert(key, held.id);
            return Ok(held.id);
        }
        let id = self.next_id();
        let s = shmem::dump(id, pid, link, images).map_err(mapped_step(
            pid,
            link,
            "save the shared memory",
        ))?;
        debug!(id, link = %link.display(), ino = s.ino, size = s.size, "shared anonymous memory");
        Ok(self.push_mapped(key, id, libc::O_RDWR, Kind::Shmem(s)))
    }

    /// What the kinds remember across the fds and mappings of the dump.
    pub(crate) fn kind_state(&mut self) -> &mut KindState {
        &mut self.state
    }

    /// Adds the description of SysV shared memory segment `shmid` of IPC namespace `ns` (0:
    /// cryo's), `dump` making its record at its first attachment; returns its id. The
    /// segments of every namespace share one device and take their id as inode number, so
    /// the namespace keys them, not the inode.
    pub(crate) fn add_sysv_segment(
        &mut self,
        ns: u64,
        shmid: i32,
        dump: impl FnOnce() -> Result<Kind, FileError>,
    ) -> Result<u32, FileError> {
        if let Some(&id) = self.sysv.get(&(ns, shmid)) {
            return Ok(id);
        }
        let id = self.next_id();
        let kind = dump()?;
        self.descs.push(FileDesc {
            id,
            flags: libc::O_RDWR as u32,
            pos: 0,
            parent_mount_namespace: false,
            in_mount_namespace: false,
            rw_hint: 0,
            kind: Some(kind),
        });
        self.sysv.insert((ns, shmid), id);
        Ok(id)
    }

    /// The inode a mapping (`link`: /proc/PID/map_files/START-END or /proc/PID/exe) opens:
    /// the description of an earlier mapping of it, or its stat.
    fn mapped_inode(&self, pid: Pid, link: &Path) -> Result<Mapped, FileError> {
        let meta = fs::metadata(link).map_err(mapped_step(pid, link, "stat"))?;
        let key = InodeKey::of(&meta);
        Ok(match self.mapped.get(&key) {
            Some(&id) => Mapped::Known(id),
            None => Mapped::New(meta, key),
        })
    }

    /// Adds the description `id` of an object mapped into memory (inode `key`), opened with
    /// `flags` at position 0, for every later mapping of the same inode; returns `id`.
    fn push_mapped(&mut self, key: InodeKey, id: u32, flags: i32, kind: Kind) -> u32 {
        self.descs.push(FileDesc {
            id,
            flags: flags as u32,
            pos: 0,
            parent_mount_namespace: false,
            in_mount_namespace: false,
            rw_hint: 0,
            kind: Some(kind),
        });
        self.mapped.insert(key, id);
        id
    }

    /// Once every process is dumped: the pty pairs and the controlling terminals of
    /// `procs` checked against the whole dump (pty.rs), the pairs' state on their
    /// descriptions; returns the line terminals that are sessions' controlling terminals, by
    /// session.
    pub fn finish_terminals(
        &mut self,
        procs: &[super::pty::TtyProcess],
        opts: &FdDumpOptions,
    ) -> Result<std::collections::BTreeMap<i32, cryo_proto::image::LineTerminal>, FileError> {
        super::pty::finish_dump(&mut self.descs, &mut self.state, procs, opts.shell_job)
    }

    /// Once every process is dumped: the anonymous pipes only one end of which the dump
    /// holds, the other held by a process outside, each warned about with its first holder
    /// and the `--inherit-fd` that keeps it connected at restore (else it comes back a
    /// private pipe).
    pub fn warn_pipes_shared_outside(&mut self) {
        for (pid, fd, ino, what) in super::pipes::outside_ends(&mut self.state) {
            tracing::warn!(
                "pid {pid} fd {fd}: pipe:[{ino}] is shared with a process outside the dump, which {what}: \
                 restore with --inherit-fd fd[N]:pipe:[{ino}] (N: an fd of `cryo restore` on \
                 that pipe, the same end) to keep it connected; without, it comes back a \
                 pipe of its own"
            );
        }
    }

    /// The descriptions collected so far, in id order.
    pub fn descs(&self) -> &[FileDesc] {
        &self.descs
    }

    /// The descriptions collected, in id order.
    pub fn into_descs(self) -> Vec<FileDesc> {
        self.descs
    }
}

#[cfg(any(test, feature = "internals"))]
/// True if fd `fd1` of `pid1` and fd `fd2` of `pid2` refer to one open file description
/// (kcmp KCMP_FILE).
pub fn same_description(pid1: Pid, fd1: RawFd, pid2: Pid, fd2: RawFd) -> std::io::Result<bool> {
    sys::kcmp::kcmp_same_file(pid1, fd1, pid2, fd2)
}

/// Decides what an fd is (refusing what cryo cannot dump) and stats it.
fn classify(open: &OpenFd) -> Result<(Seen, fs::Metadata), FileError> {
    let path = match Link::parse(&open.link) {
        Link::Socket => {
            let meta = open.stat()?;
            return Ok((Seen::Socket { ino: meta.ino() }, meta));
        }
        Link::AnonInode(kind) => {
            return Ok((Seen::Anon { kind }, open.stat()?));
        }
        Link::Memfd => {
            return Ok((Seen::Memfd, open.stat()?));
        }
        Link::Other(kind) if super::procfs::NAMESPACES.contains(&kind) => {
            let kind = kind.to_string();
            return Ok((Seen::Namespace { kind }, open.stat()?));
        }
        Link::Other(other) => {
            return Err(open.refuse(format!("{other} file"), false));
        }
        Link::Pipe(ino) => {
            let meta = open.stat()?;
            let seen = Seen::Pipe {
                ino,
                fifo_path: String::new(),
                deleted: false,
            };
            return Ok((seen, meta));
        }
        Link::Path(path) => path,
    };
    let meta = open.stat()?;
    // One statfs for the three filesystems told apart by it.
    let magic = nix::sys::statfs::statfs(&open.proc_path())
        .ok()
        .map(|fs| fs.filesystem_type().0);
    if magic == Some(super::mqueue::MQUEUE_MAGIC) {
        let (path, deleted) = inspect::resolve_deleted(path, &meta);
        let name = path.strip_prefix('/').unwrap_or(&path).to_string();
        return Ok((Seen::Mqueue { name, deleted }, meta));
    }
    if let Some(kind) = magic.and_then(unreachable_by_path) {
        return Err(open.refuse(kind, true));
    }
    if magic == Some(PROC_SUPER_MAGIC) {
        // Reopened by the process itself once what it names exists (procfs.rs), whatever it
        // is (a file, a directory, an O_PATH fd).
        let path = path.to_string();
        return Ok((Seen::Proc { path }, meta));
    }
    let (path, deleted) = inspect::resolve_deleted(path, &meta);
    let file_type = meta.file_type();
    let o_path = open.flags & libc::O_PATH as u32 != 0;
    let seen = if file_type.is_dir() {
        // A cgroup's directory: made again, a new inode, by the restore's cgroup step.
        let cgroup = matches!(magic, Some(CGROUP_SUPER_MAGIC | CGROUP2_SUPER_MAGIC));
        Seen::Directory {
            path,
            deleted,
            cgroup,
        }
    } else if file_type.is_file() && deleted && shmem::is_shared_anon(&path, &meta) {
        Seen::SharedAnon
    } else if file_type.is_file() {
        Seen::Regular { path, deleted }
    } else if deleted && o_path && (file_type.is_fifo() || file_type.is_socket()) {
        // Names a node no path leads to any more: no FIFO or socket of it can be opened.
        return Err(open.refuse(
            format!("an O_PATH fd on a removed {}", type_name(&meta)),
            true,
        ));
    } else if deleted && file_type.is_fifo() {
        Seen::Pipe {
            ino: meta.ino(),
            fifo_path: path,
            deleted: true,
        }
    } else if deleted && (file_type.is_char_device() || (o_path && file_type.is_symlink())) {
        Seen::RemovedNode { path }
    } else if deleted {
        return Err(open.refuse(format!("deleted {}", type_name(&meta)), true));
    } else if o_path {
        // An O_PATH fd only names the file: reopened by path, whatever it is.
        Seen::Regular {
            path,
            deleted: false,
        }
    } else if file_type.is_fifo() {
        Seen::Pipe {
            ino: meta.ino(),
            fifo_path: path,
            deleted: false,
        }
    } else if file_type.is_char_device() {
        Seen::CharDevice { path }
    } else {
        return Err(open.refuse(type_name(&meta), false));
    };
    Ok((seen, meta))
}

/// Whether fd `open`, seen as `seen`, was opened through a mount of its holder's parent's
/// mount namespace (mount_views.rs): a regular file, directory, character device or FIFO is
/// then opened there at restore; what the restore makes again by its name (a removed file,
/// directory, node or FIFO) would be made in the holder's own: refused.
fn opened_in_parent_namespace(
    state: &mut KindState,
    open: &OpenFd,
    seen: &Seen,
) -> Result<bool, FileError> {
    let made_again = match seen {
        Seen::Regular { deleted, .. } | Seen::Directory { deleted, .. } => *deleted,
        Seen::CharDevice { .. } => false,
        Seen::Pipe {
            fifo_path, deleted, ..
        } if !fifo_path.is_empty() => *deleted,
        Seen::RemovedNode { .. } => true,
        _ => return Ok(false),
    };
    let parent = super::mount_views::opened_in(state, open)? == super::mount_views::OpenedIn::Parent;
    if parent && made_again {
        return Err(open.refuse(
            "a removed file, directory, node or FIFO opened in its parent's mount \
             namespace (before its own was made): made again in its own, it would be on \
             another mount",
            false,
        ));
    }
    Ok(parent)
}

/// PROC_SUPER_MAGIC from linux/magic.h: a file of /proc (procfs.rs).
pub(super) const PROC_SUPER_MAGIC: i64 = 0x9fa0;
/// CGROUP_SUPER_MAGIC and CGROUP2_SUPER_MAGIC from linux/magic.h: a cgroup's directory.
const CGROUP_SUPER_MAGIC: i64 = 0x27e0eb;
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// The kind of a file with a path that is no file of the process's tree (secret memory, a
/// pinned BPF object), told by its filesystem's magic; None for the others.
fn unreachable_by_path(magic: i64) -> Option<&'static str> {
    /// SECRETMEM_MAGIC, BPF_FS_MAGIC from linux/magic.h.
    const KINDS: [(i64, &str); 2] = [
        (0x5345_434d, "secret memory (memfd_secret)"),
        (0xcafe_4a11, "pinned BPF object (bpf filesystem)"),
    ];
    KINDS.iter().find(|(m, _)| *m == magic).map(|&(_, kind)| kind)
}

/// A path-based file must still be found at its path, or a restore would open another one:
/// in its holder's mount namespace, or in that of `parent` (a pid, or None for cryo) when it
/// was opened there.
fn check_reachable(
    open: &OpenFd,
    seen: &Seen,
    meta: &fs::Metadata,
    parent: Option<Option<Pid>>,
) -> Result<(), FileError> {
    let path = match seen {
        Seen::Regular { deleted: true, .. } | Seen::Directory { deleted: true, .. } => {
            return Ok(())
        }
        Seen::Pipe { deleted: true, .. } => return Ok(()),
        Seen::Regular { path, .. } | Seen::Directory { path, .. } => path,
        // An anonymous pipe has no path.
        Seen::Pipe { fifo_path, .. } if fifo_path.is_empty() => return Ok(()),
        Seen::Pipe { fifo_path, .. } => fifo_path,
        Seen::CharDevice { .. }
        | Seen::RemovedNode { .. }
        | Seen::Anon { .. }
        | Seen::Memfd
        | Seen::SharedAnon
        | Seen::Mqueue { .. }
        | Seen::Socket { .. }
        | Seen::Proc { .. }
        | Seen::Namespace { .. } => {
            return Ok(())
        }
    };
    if let Some(of) = proc_pid_dir(path) {
        // Validated before any process exists, opened again by path: /proc/PID is not there
        // until the restore has made PID.
        return Err(open.refuse(format!("file of {of}"), true));
    }
    // As the process finds it: in its own mount namespace, if it has one; or its parent's.
    let seen = match parent {
        None => crate::task::mount_ns::as_seen_by(open.pid, path),
        Some(Some(pid)) => crate::task::mount_ns::as_seen_by(pid, path),
        Some(None) => crate::task::mount_ns::NamespacePath::plain(PathBuf::from(path)),
    };
    // An O_PATH|O_NOFOLLOW fd may hold a symlink itself.
    let at_path = if meta.file_type().is_symlink() {
        fs::symlink_metadata(&seen)
    } else {
        fs::metadata(&seen)
    };
    if at_path
        .as_ref()
        .map_or(true, |at| InodeKey::of(at) != InodeKey::of(meta))
        && open.mnt_id != 0
        && !mount_listed(open.pid, open.mnt_id)
    {
        return Err(open.dump_err(format!(
            "{path} is on mount {}, which is not in its mount namespace (unmounted lazily, \
             MNT_DETACH, while the file was open, or of another namespace): no path leads to \
             it, not supported",
            open.mnt_id
        )));
    }
    match at_path {
        Ok(at_path) if InodeKey::of(&at_path) == InodeKey::of(meta) => Ok(()),
        Ok(_) => Err(open.dump_err(format!(
            "{path} now names another file than the one open (renamed or overmounted)"
        ))),
        Err(e) => Err(open.inspect_err("find it by its path", PathBuf::from(path), e)),
    }
}

/// Whether mount `mnt_id` is in the mount table of `pid` (/proc/PID/mountinfo); true when
/// the table cannot be read (the caller's own error then tells what is wrong).
fn mount_listed(pid: Pid, mnt_id: u64) -> bool {
    crate::proc::read(pid, "mountinfo").map_or(true, |table| {
        crate::task::mount_ns::mountinfo::parse_with_nsfs(&table)
            .iter()
            .any(|m| u64::from(m.id) == mnt_id)
    })
}

/// `/proc/PID` if `path` lies in the /proc directory of a process.
fn proc_pid_dir(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/proc/")?;
    let pid = rest.split('/').next()?;
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    path.get(..6 + pid.len())
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
    } else if t.is_symlink() {
        "symbolic link"
    } else {
        "file of unknown type"
    }
}

/// What [`FileTable::mapped_inode`] found.
enum Mapped {
    /// The description of an earlier mapping of the inode.
    Known(u32),
    /// An inode not mapped before: its stat and key.
    New(fs::Metadata, InodeKey),
}

/// The refusal of an fd no kind claims.
fn refusal(open: &OpenFd, seen: &Seen) -> FileError {
    match seen {
        Seen::Anon { kind } => open.refuse(kind.clone(), false),
        Seen::Memfd => open.refuse("memfd", true),
        Seen::Socket { .. } => open.refuse("socket", true),
        _ => open.refuse("file", false),
    }
}
