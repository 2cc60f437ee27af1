//! System V IPC objects of a dump: what the kernel lists of them (/proc/sysvipc/*), the IPC
//! namespace they live in, what a restore does with each (make it again, or find the very
//! one still there), and one module per object: shm.rs (segments, attached: files.img),
//! sem.rs (semaphore sets) and msg.rs (message queues) (ipc.img).
//!
//! ```text
//! which      segments: those a process of the dump attaches; semaphore sets and message
//!            queues: those a process of the dump changed last (sempid of a semaphore,
//!            lspid or lrpid of a queue). The others of the host's namespace are the host's,
//!            as files on its disks are: a process reaches them by key or id, holds nothing
//! namespace  cryo's: the objects above; another one a process of the dump is in is
//!            dumped whole, objects and sysctls, and made again whole (namespace.rs)
//! SEM_UNDO   a process with a semaphore undo list is refused (kcmp KCMP_SYSVSEM against
//!            cryo's, which has none): the kernel does not show its adjustments
//! restore    per object, at validation and again when made (Fate): the very object is
//!            still here (same id, key, creator...: a dump kills processes, not their IPC
//!            objects) -> left as it is, live state included; its id or key held by another
//!            -> refused before anything is made; else made again with its id
//!            (/proc/sys/kernel/{shm,sem,msg}_next_id), as its creator (cuid/cgid), then
//!            owner, mode and contents set; a failed restore removes what it made
//! ```
//!
//! Not restorable (the kernel sets them, no call changes them): the pids and times of the
//! last operations (shm_cpid/lpid, sempid, msg_lspid/lrpid, the a/d/c/o/s/r times) of an
//! object made again.

pub(crate) mod msg;
pub(crate) mod namespace;
pub(crate) mod sem;
pub(crate) mod shm;

use std::cell::Cell;
use std::collections::BTreeSet;

use cryo_proto::image::{FileDesc, SysvIpc};
use cryo_proto::ImageKind;
use tracing::debug;

use crate::image::ImageDir;

/// The image of the semaphore sets and message queues.
pub(crate) const IMAGE: &str = "ipc.img";

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use nix::unistd::Pid;

/// Why a SysV IPC object could not be dumped or restored.
#[derive(Debug, thiserror::Error)]
pub enum IpcError {
    /// A process of the dump holds an object cryo cannot bring back.
    #[error("pid {pid}: {what}: {detail}")]
    Refused {
        /// The process.
        pid: Pid,
        /// The object ("SysV shared memory segment 3 (key 0x1234) at 0x7f...").
        what: String,
        /// Why.
        detail: String,
    },
    /// At restore, this machine has another object where the image's must go.
    #[error("{what}: {detail}")]
    Taken {
        /// The object of the image.
        what: String,
        /// What holds its id or key here.
        detail: String,
    },
    /// A list of /proc/sysvipc could not be read or parsed.
    #[error("read {path}: {source}", path = path.display())]
    List {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: io::Error,
    },
    /// A step making or attaching an object failed.
    #[error("{what}: {op}: {source}")]
    Step {
        /// The object.
        what: String,
        /// The step.
        op: String,
        /// The kernel's answer.
        source: io::Error,
    },
}

/// One row of a /proc/sysvipc list: column name -> value.
type Row = HashMap<String, i64>;

impl IpcError {
    /// The error of step `op` on object `what`, for `map_err`.
    fn step(what: &str, op: &str) -> impl FnOnce(io::Error) -> Self {
        let (what, op) = (what.to_string(), op.to_string());
        move |source| Self::Step { what, op, source }
    }
}

/// An object of cryo's IPC namespace as /proc/sysvipc lists it: what every kind shows (id,
/// key, mode, owner, creator), and its row for the columns of its kind.
#[derive(Debug, Clone)]
struct Listed {
    id: i32,
    key: i32,
    perms: i64,
    uid: u32,
    gid: u32,
    cuid: u32,
    cgid: u32,
    row: Row,
}

impl Listed {
    /// The object of `row`, whose id is in column `id_col` (shmid, semid, msqid).
    fn of(row: Row, id_col: &str) -> Self {
        let get = |c: &str| row.get(c).copied().unwrap_or(0);
        Self {
            id: get(id_col) as i32,
            key: get("key") as i32,
            perms: get("perms"),
            uid: get("uid") as u32,
            gid: get("gid") as u32,
            cuid: get("cuid") as u32,
            cgid: get("cgid") as u32,
            row,
        }
    }

    /// Column `c` of its kind (0 if absent).
    fn col(&self, c: &str) -> i64 {
        self.row.get(c).copied().unwrap_or(0)
    }

    /// The permission bits.
    fn mode(&self) -> u32 {
        (self.perms & 0o777) as u32
    }
}

/// Every object of /proc/sysvipc/`name` (shm, sem, msg), its id in column `id_col`.
fn listed(name: &str, id_col: &str) -> Result<Vec<Listed>, IpcError> {
    Ok(list(name)?
        .into_iter()
        .map(|r| Listed::of(r, id_col))
        .collect())
}

/// The rows of /proc/sysvipc/`name` (shm, sem, msg) of cryo's IPC namespace, by column name
/// (the header line names them; perms are octal there).
fn list(name: &str) -> Result<Vec<Row>, IpcError> {
    let path = PathBuf::from(format!("/proc/sysvipc/{name}"));
    let text = std::fs::read_to_string(&path).map_err(|source| IpcError::List {
        path: path.clone(),
        source,
    })?;
    parse_list(&text).map_err(|detail| IpcError::List {
        path,
        source: io::Error::new(io::ErrorKind::InvalidData, detail),
    })
}

fn parse_list(text: &str) -> Result<Vec<Row>, String> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .ok_or("no header line")?
        .split_whitespace()
        .collect();
    let mut rows = Vec::new();
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let mut row = Row::new();
        for (col, value) in header.iter().zip(line.split_whitespace()) {
            let radix = if *col == "perms" { 8 } else { 10 };
            let v = i64::from_str_radix(value, radix)
                .map_err(|e| format!("column {col} value {value:?}: {e}"))?;
            row.insert((*col).to_string(), v);
        }
        rows.push(row);
    }
    Ok(rows)
}

/// The inode of the IPC namespace of `pid`, 0 when it is the one cryo runs in.
fn namespace_of(pid: Pid) -> io::Result<u64> {
    let theirs = std::fs::metadata(crate::proc::dir(pid).join("ns/ipc"))?;
    let ours = std::fs::metadata("/proc/self/ns/ipc")?;
    let same = (theirs.dev(), theirs.ino()) == (ours.dev(), ours.ino());
    Ok(if same { 0 } else { theirs.ino() })
}

/// The inode of the IPC namespace of `pid` when it is not cryo's (0 when it is): the
/// namespace [`dump`] dumps whole. (task/namespaces.rs checked its threads are all in it.)
pub(crate) fn namespace_of_task(pid: Pid) -> Result<u64, IpcError> {
    namespace_of(pid).map_err(IpcError::step(
        &format!("pid {pid}"),
        "read its IPC namespace",
    ))
}

/// Makes the next object of `kind` (shm, sem, msg) created in the caller's IPC namespace get
/// `id`, under an exclusive flock of that sysctl held until the returned file is dropped (once
/// the object is made): cryos restoring at once never interleave one's write with another's
/// creation (two restores of segments in one namespace took each other's ids).
fn claim_next_id(kind: &str, id: i32) -> io::Result<nix::fcntl::Flock<std::fs::File>> {
    use std::io::Write;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/sys/kernel/{kind}_next_id"))?;
    let file = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, errno)| io::Error::from(errno))?;
    (&*file).write_all(id.to_string().as_bytes())?;
    Ok(file)
}

/// What a restore does with an object of the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// The very object is still there: left as it is.
    Reattach,
    /// Neither its id nor its key is in use: made again.
    Create,
}

/// Decides what becomes of the object `what` (`id`, `key`) among the objects `live` of its
/// kind here (`ident`: their id and key; `same`: whether one is this very object), refusing
/// an id or key held by another object.
fn fate<L>(
    what: &str,
    (id, key): (i32, i32),
    live: &[L],
    ident: impl Fn(&L) -> (i32, i32),
    same: impl Fn(&L) -> bool,
) -> Result<Fate, IpcError> {
    let taken = |detail: String| IpcError::Taken {
        what: what.to_string(),
        detail,
    };
    if let Some(l) = live.iter().find(|l| ident(l).0 == id) {
        if same(l) {
            return Ok(Fate::Reattach);
        }
        return Err(taken(format!(
            "its id is held here by another object (key {:#x})",
            ident(l).1
        )));
    }
    if key != libc::IPC_PRIVATE {
        if let Some(l) = live.iter().find(|l| ident(l).1 == key) {
            return Err(taken(format!(
                "its key is held here by object {}",
                ident(l).0
            )));
        }
    }
    Ok(Fate::Create)
}

/// The kinds of objects, for their /proc/sys/kernel/*_next_id and their removal.
#[derive(Debug, Clone, Copy)]
enum ObjectKind {
    Shm,
    Sem,
    Msg,
}

impl ObjectKind {
    fn name(self) -> &'static str {
        match self {
            Self::Shm => "shm",
            Self::Sem => "sem",
            Self::Msg => "msg",
        }
    }

    fn remove(self, id: i32) -> io::Result<()> {
        match self {
            Self::Shm => crate::sys::ipc::shm_command(id, libc::IPC_RMID),
            Self::Sem => crate::sys::ipc::sem_remove(id),
            Self::Msg => crate::sys::ipc::msg_remove(id),
        }
    }
}

/// One object a restore made.
#[derive(Debug)]
struct Made {
    kind: ObjectKind,
    id: i32,
    /// IPC_RMID'd at dump (a segment still attached): marked so again before the processes
    /// run.
    destroyed: bool,
    what: String,
}

/// The IPC objects a restore made before the tree is forked, removed again if it fails
/// before [`Restored::finish`].
#[derive(Debug, Default)]
pub(crate) struct Restored {
    made: Vec<Made>,
    /// Set once the processes have attached: the objects stay.
    finished: Cell<bool>,
    /// The IPC namespaces made again, with their objects (gone with the last fd and process).
    namespaces: Vec<namespace::Made>,
    /// cryo's own IPC namespace, for a process back in it below one in another.
    own: Option<std::os::fd::OwnedFd>,
    /// The IPC namespaces of the dump owned by a user namespace the restore makes: each
    /// made by the clone of its topmost process (CLONE_NEWIPC), then filled by
    /// [`Restored::fill`]: each with the segments the processes attach.
    in_user_namespaces: Vec<(
        cryo_proto::image::IpcNamespace,
        Vec<cryo_proto::image::SysvShm>,
    )>,
    /// Those filled so far.
    filled: std::cell::RefCell<Vec<namespace::Made>>,
}

impl Restored {
    /// Makes (or finds again) every segment that description ids `used` refer to, and every
    /// semaphore set and message queue of `ipc`; makes again each IPC namespace of `ipc`
    /// with its objects. `wanted`: the namespaces the processes are in (0: cryo's);
    /// `in_user_namespaces`: those of them a user namespace the restore makes owns, left to
    /// [`Restored::fill`].
    pub(crate) fn create(
        descs: &[FileDesc],
        used: &BTreeSet<u32>,
        ipc: &SysvIpc,
        images: &ImageDir,
        wanted: &BTreeSet<u64>,
        in_user_namespaces: &BTreeSet<u64>,
    ) -> Result<Self, IpcError> {
        let segments: Vec<(u64, &cryo_proto::image::SysvShm)> = descs
            .iter()
            .filter(|d| used.contains(&d.id))
            .filter_map(|d| match &d.kind {
                Some(cryo_proto::image::file_desc::Kind::SysvShm(s)) => Some((s.ipc_ns, s)),
                _ => None,
            })
            .collect();
        let of = |ns: u64| -> Vec<&cryo_proto::image::SysvShm> {
            segments
                .iter()
                .filter(|(n, _)| *n == ns)
                .map(|&(_, s)| s)
                .collect()
        };
        let mut out = Self::default();
        shm::create(of(0), images, &mut out)?;
        sem::create(&ipc.sems, &mut out)?;
        msg::create(&ipc.queues, &mut out)?;
        let record = |inode: u64| {
            ipc.namespaces
                .iter()
                .find(|n| n.inode == inode)
                .ok_or_else(|| IpcError::Taken {
                    what: format!("IPC namespace ipc:[{inode}]"),
                    detail: "a process is in it and ipc.img does not hold it".into(),
                })
        };
        for &inode in wanted.iter().filter(|&&n| n != 0) {
            let ns = record(inode)?;
            if in_user_namespaces.contains(&inode) {
                let attached = of(inode).into_iter().cloned().collect();
                out.in_user_namespaces.push((ns.clone(), attached));
            } else {
                out.namespaces
                    .push(namespace::create(ns, &of(inode), images)?);
            }
        }
        if !out.namespaces.is_empty() {
            let own = std::fs::File::open("/proc/self/ns/ipc")
                .map_err(IpcError::step("cryo", "open its IPC namespace"))?;
            out.own = Some(own.into());
        }
        Ok(out)
    }

    /// cryo's fds of the IPC namespaces: its own, then each made (none without any), held
    /// by the processes at consecutive slots while they fork.
    pub(crate) fn fds(&self) -> Vec<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        self.own
            .iter()
            .chain(self.namespaces.iter().map(|m| &m.fd))
            .map(|fd| fd.as_raw_fd())
            .collect()
    }

    /// In a forked process of the restore, before its children: enters the IPC namespace
    /// `inode` of the dump (0: cryo's) that [`Restored::create`] made, whose fd it holds
    /// at its slot (the [`Restored::fds`] from `first_slot` on).
    pub(crate) fn enter(&self, inode: u64, first_slot: std::os::fd::RawFd) -> io::Result<()> {
        let k = match inode {
            0 => Some(0),
            n => self
                .namespaces
                .iter()
                .position(|m| m.inode == n)
                .map(|k| k + 1),
        }
        .filter(|_| self.own.is_some())
        .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))?;
        let fd = crate::sys::fd::borrow_raw(first_slot + k as std::os::fd::RawFd);
        nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWIPC)?;
        Ok(())
    }

    /// Fills IPC namespace `inode` of the dump, made empty by the clone of `pid` in its user
    /// namespace (whose root is `root`, as cryo sees it), with its objects and sysctls.
    pub(crate) fn fill(
        &self,
        inode: u64,
        pid: Pid,
        root: (u32, u32),
        images: &ImageDir,
    ) -> Result<(), IpcError> {
        let what = format!("IPC namespace ipc:[{inode}]");
        let (ns, attached) = self
            .in_user_namespaces
            .iter()
            .find(|(n, _)| n.inode == inode)
            .ok_or_else(|| IpcError::Taken {
                what: what.clone(),
                detail: "not one the restore makes in a user namespace".into(),
            })?;
        let empty = std::fs::File::open(crate::proc::dir(pid).join("ns/ipc"))
            .map_err(IpcError::step(&what, &format!("open that of pid {pid}")))?;
        let attached: Vec<&cryo_proto::image::SysvShm> = attached.iter().collect();
        let made = namespace::fill(ns, &attached, images, empty.into(), root)?;
        self.filled.borrow_mut().push(made);
        Ok(())
    }

    /// The objects made are kept (a namespace made whole): the ids of the segments to mark
    /// destroyed once attached.
    fn keep(self) -> Vec<i32> {
        self.finished.set(true);
        self.made
            .iter()
            .filter(|m| m.destroyed)
            .map(|m| m.id)
            .collect()
    }

    /// Makes object `what` of `kind` with id `want` as its creator (`cuid`, `cgid`) through
    /// `get`, then `set` (owner, mode, contents); a failure removes it. The object is
    /// remembered (and removed if the restore fails) once whole.
    #[allow(clippy::too_many_arguments)]
    fn make(
        &mut self,
        kind: ObjectKind,
        what: String,
        want: i32,
        (cuid, cgid): (u32, u32),
        destroyed: bool,
        get: impl FnOnce() -> io::Result<i32>,
        set: impl FnOnce(i32) -> Result<(), IpcError>,
    ) -> Result<(), IpcError> {
        let next_id = format!("write {}_next_id", kind.name());
        let claimed = claim_next_id(kind.name(), want).map_err(IpcError::step(&what, &next_id))?;
        let id = crate::sys::ipc::as_creator(cuid, cgid, get)
            .map_err(IpcError::step(&what, "create"))?;
        drop(claimed);
        let made = if id != want {
            Err(IpcError::Taken {
                what: what.clone(),
                detail: format!("the kernel gave id {id} (its slot is held by another object)"),
            })
        } else {
            set(id)
        };
        if let Err(e) = made {
            let _ = kind.remove(id);
            return Err(e);
        }
        debug!(kind = kind.name(), id, "SysV object made");
        self.made.push(Made {
            kind,
            id,
            destroyed,
            what,
        });
        Ok(())
    }

    /// Once every process has attached its segments, before any runs: the segments that were
    /// marked destroyed are marked again; every object made stays.
    pub(crate) fn finish(&self) -> Result<(), IpcError> {
        for m in self.made.iter().filter(|m| m.destroyed) {
            m.kind
                .remove(m.id)
                .map_err(IpcError::step(&m.what, "IPC_RMID"))?;
        }
        for ns in &self.namespaces {
            ns.finish()?;
        }
        for ns in self.filled.borrow().iter() {
            ns.finish()?;
        }
        self.finished.set(true);
        Ok(())
    }
}

impl Drop for Restored {
    fn drop(&mut self) {
        if self.finished.get() {
            return;
        }
        for m in &self.made {
            let _ = m.kind.remove(m.id);
        }
    }
}

/// A child of cryo forked without CLONE_SYSVSEM, so without a semaphore undo list: what
/// kcmp compares a target with. Killed and reaped when dropped.
struct NoUndoList(Pid);

impl NoUndoList {
    fn fork() -> std::io::Result<Self> {
        let me = nix::unistd::getpid();
        match crate::sys::process::fork()? {
            crate::sys::process::Forked::Child => crate::sys::process::park_child(me),
            crate::sys::process::Forked::Parent(pid) => Ok(Self(pid)),
        }
    }
}

impl Drop for NoUndoList {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(self.0, nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(self.0, None);
    }
}

/// Dumps ipc.img (the semaphore sets and message queues of cryo's IPC namespace, and every
/// other IPC namespace a process of `pids` is in, whole), refusing a process of `pids` whose
/// SysV state cannot come back (a semaphore undo list that may hold adjustments).
/// `attached`: the segments the processes attach (namespace inode, 0 for cryo's; id), in
/// files.img already.
pub(crate) fn dump(
    pids: &[Pid],
    attached: &[(u64, i32)],
    images: &ImageDir,
) -> crate::error::Result<()> {
    let mut spaces: std::collections::BTreeMap<u64, Vec<Pid>> = Default::default();
    for &pid in pids {
        let ns = namespace_of(pid).map_err(IpcError::step(
            &format!("pid {pid}"),
            "read its IPC namespace",
        ))?;
        spaces.entry(ns).or_default().push(pid);
    }
    let mut namespaces = Vec::new();
    let mut sets_of: HashMap<u64, Vec<Listed>> = HashMap::new();
    sets_of.insert(0, sem::live()?);
    for (&inode, members) in spaces.iter().filter(|(&n, _)| n != 0) {
        let ids: BTreeSet<i32> = attached
            .iter()
            .filter(|(n, _)| *n == inode)
            .map(|&(_, id)| id)
            .collect();
        let (ns, sets) = namespace::dump(inode, members, pids, &ids, images)?;
        namespaces.push(ns);
        sets_of.insert(inode, sets);
    }
    // An undo list is also made, empty, for every process that starts a thread
    // (pthread_create passes CLONE_SYSVSEM; cryo's own threads give cryo one), and it
    // outlives the sets it had adjustments for: its entries go with their sets. It is told by
    // comparing with a process that has none. The kernel does not show what a list holds, but
    // an adjustment is only made by a semop that succeeds, which sets the set's otime, and a
    // list is never inherited (fork makes none; threads share their process's) and is left
    // when a process changes IPC namespace: a set of its namespace not operated on since the
    // process started holds no adjustment of its.
    let reference = if sets_of.values().all(|s| s.is_empty()) {
        None
    } else {
        Some(NoUndoList::fork().map_err(IpcError::step("cryo", "fork a reference process"))?)
    };
    for (&inode, members) in &spaces {
        let sets = &sets_of[&inode];
        for &pid in members {
            let step = |op: &str| IpcError::step(&format!("pid {pid}"), op);
            let Some(reference) = reference.as_ref().filter(|_| !sets.is_empty()) else {
                continue;
            };
            if crate::sys::kcmp::kcmp_same_sysvsem(pid, reference.0)
                .map_err(step("kcmp KCMP_SYSVSEM"))?
            {
                continue;
            }
            let started = crate::proc::started_at(pid).map_err(step("read its start time"))?;
            // One second of margin each way for the rounding of both clocks.
            let operated: Vec<String> = sets
                .iter()
                .filter(|s| s.col("otime") + 1 >= started)
                .map(|s| s.id.to_string())
                .collect();
            if !operated.is_empty() {
                return Err(IpcError::Refused {
                    pid,
                    what: "its SysV semaphore undo list (semop with SEM_UNDO, or threads)".into(),
                    detail: format!(
                        "semaphore set {} was operated on since it started: the kernel does \
                         not show the adjustments, so they cannot come back",
                        operated.join(", ")
                    ),
                }
                .into());
            }
        }
    }
    let sets = sets_of.remove(&0).unwrap_or_default();
    let ipc = SysvIpc {
        sems: sem::dump(Some(pids), sets)?,
        queues: msg::dump(Some(pids))?,
        namespaces,
    };
    Ok(images.write(IMAGE, ImageKind::SysvIpc, &[ipc])?)
}

/// Reads ipc.img (none in an image without it: no objects) and checks every object against
/// this machine, before anything is made.
pub(crate) fn read(images: &ImageDir) -> crate::error::Result<SysvIpc> {
    if !images.file(IMAGE).exists() {
        return Ok(SysvIpc::default());
    }
    let ipc: SysvIpc = images.read_single(IMAGE, ImageKind::SysvIpc)?;
    sem::check(&ipc.sems)?;
    msg::check(&ipc.queues)?;
    for ns in &ipc.namespaces {
        namespace::check(ns)?;
    }
    Ok(ipc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_sysvipc_list() {
        let text = "       key      shmid perms                  size  cpid  lpid nattch   uid   gid\n\
                    \x20   4660         3  1600                  8192   100   101      2     0     0\n";
        let rows = parse_list(text).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0]["key"], 4660);
        assert_eq!(rows[0]["shmid"], 3);
        assert_eq!(rows[0]["perms"], 0o1600);
        assert_eq!(rows[0]["nattch"], 2);
    }
}
