//! The PID namespace of a dump: a tree whose root is PID 1 of a namespace of its own, every
//! process of that namespace in the dump. The images name each process, thread, group,
//! session, fd owner, pidfd target and credential by the pid the processes observe (the
//! namespace's, the last NSpid field); cryo keeps the host pids for its own use. A restore
//! forks the root with CLONE_NEWPID (PID 1 again) and each child with its pid there.
//!
//! Refused: a process in a PID namespace whose init is not the (only) root of the dump, a
//! namespace with processes outside the dump, nested namespaces, and a namespace made for a
//! process's children that it is not in itself (pid_for_children).

use std::collections::HashMap;
use std::io;
use std::path::Path;

use cryo_proto::image::{file_desc::Kind, socket::State, FileDesc, MmCore, ProcessEntry, TaskCore};
use nix::unistd::Pid;

use crate::proc;

/// Why a tree in a PID namespace cannot be dumped; each names the pid (as cryo sees it), the
/// namespace and what is missing.
#[derive(Debug, thiserror::Error)]
pub enum PidNsError {
    /// A namespace link or status could not be read.
    #[error("pid {pid}: read its pid namespace: {errno}")]
    Read {
        /// The process.
        pid: Pid,
        /// The kernel's answer.
        errno: io::Error,
    },
    /// A process of the tree exited while its namespaces were read (its links went with it).
    #[error("pid {pid}: exited while its pid namespace was read")]
    Exited {
        /// The process.
        pid: Pid,
    },
    /// A process is in a PID namespace whose init is not the root of the dump.
    #[error(
        "pid {pid}: in pid namespace pid:[{inode}] whose init (pid 1 there) is not the root \
         of the dump: a PID namespace is restored with its init as the dump's only root \
         (dump its init, host pid {init})"
    )]
    InitNotDumped {
        /// The process.
        pid: Pid,
        /// The namespace's inode.
        inode: u64,
        /// Its init as cryo sees it (0: not found).
        init: i32,
    },
    /// A process of the namespace is not in the dump.
    #[error(
        "pid {pid}: its pid namespace pid:[{inode}] holds pid {other} (pid {inside} there), \
         which is not in the dump: the restored namespace would lack it"
    )]
    ProcessOutside {
        /// The root of the dump.
        pid: Pid,
        /// The namespace's inode.
        inode: u64,
        /// The other process, as cryo sees it.
        other: i32,
        /// Its pid in the namespace.
        inside: i32,
    },
    /// A process is in a PID namespace nested in another one.
    #[error(
        "pid {pid}: in pid namespace pid:[{inode}], {depth} levels below cryo's: nested pid \
         namespaces are not restored"
    )]
    Nested {
        /// The process.
        pid: Pid,
        /// The namespace's inode.
        inode: u64,
        /// How many levels below cryo's.
        depth: usize,
    },
    /// A process unshared CLONE_NEWPID and did not fork since.
    #[error(
        "pid {pid}: made a pid namespace for its children ({}) it is not in: only a pid \
         namespace whose init is the root of the dump is restored",
        match inode { 0 => "pid_for_children, no process in it yet".to_string(),
                      n => format!("pid_for_children:[{n}]") }
    )]
    ForChildren {
        /// The process.
        pid: Pid,
        /// The namespace's inode (0: no process entered it yet).
        inode: u64,
    },
    /// The dump holds more than one tree and one is in a PID namespace of its own.
    #[error(
        "pid {pid}: in pid namespace pid:[{inode}] and the dump has {roots} roots: a dump of a \
         pid namespace has one root, its init"
    )]
    SeveralRoots {
        /// The process.
        pid: Pid,
        /// The namespace's inode.
        inode: u64,
        /// How many roots.
        roots: usize,
    },
    /// Something of the image names a process outside the namespace.
    #[error(
        "pid {pid}: its {what} names pid {other}, outside its pid namespace pid:[{inode}]: \
         inside it reads 0 and no restore makes that again"
    )]
    NamesOutside {
        /// The process.
        pid: Pid,
        /// What names it (session, process group, fd 4 owner, credentials of a message...).
        what: String,
        /// The process named, as cryo sees it.
        other: i32,
        /// The namespace's inode.
        inode: u64,
    },
}

/// The inode of namespace link `path`; 0 when the link is absent (a pid_for_children
/// nobody entered yet).
fn inode(path: &Path) -> io::Result<u64> {
    match super::namespaces::inode(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        other => other,
    }
}

/// The NSpid line of `pid`'s (or a thread's) status: its pid in each namespace, cryo's
/// (outermost cryo can see) first.
pub(crate) fn nspid(pid: Pid) -> Result<Vec<i32>, PidNsError> {
    let status = proc::status(pid).map_err(|e| PidNsError::Read {
        pid,
        errno: io::Error::other(e.to_string()),
    })?;
    Ok(parse_nspid(&status))
}

/// The pids of the NSpid field of a parsed status, outermost first (none when it has none).
fn parse_nspid(status: &[(String, String)]) -> Vec<i32> {
    proc::status_field(status, "NSpid")
        .map(|v| {
            v.split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The PID namespace a dump's tree is in, and the pid there of every process and thread.
#[derive(Debug, Clone)]
pub struct DumpPidNs {
    /// Its inode at dump.
    pub inode: u64,
    /// Host pid (or tid) -> its pid in the namespace.
    map: HashMap<i32, i32>,
    /// Its pid_max when the kernel keeps one per namespace (0: not read, or one for all) and
    /// the last pid it handed out (0: not read), read once the tree is frozen
    /// ([`DumpPidNs::read_numbers`]).
    pub pid_max: u32,
    /// See `pid_max`.
    pub last_pid: i32,
}

impl DumpPidNs {
    /// The pid in the namespace of host pid `host`, if it is a process or thread of it.
    pub fn inside(&self, host: i32) -> Option<i32> {
        self.map.get(&host).copied()
    }

    /// Its init (pid 1 there), as cryo sees it.
    pub fn init(&self) -> Option<Pid> {
        self.map
            .iter()
            .find(|&(_, &inside)| inside == 1)
            .map(|(&host, _)| Pid::from_raw(host))
    }
}

impl PidNsError {
    /// The process whose reading failed because it is gone (exited and reaped since the
    /// tree was read): the tree changed, and a dump reads it again.
    pub fn gone(&self) -> Option<Pid> {
        match self {
            // Whatever the read answered (ESRCH, ENOENT, or /proc's own "no such process"):
            // the process is gone when its /proc directory is.
            PidNsError::Read { pid, .. } if !proc::dir(*pid).exists() => Some(*pid),
            PidNsError::Exited { pid } => Some(*pid),
            _ => None,
        }
    }
}

/// Finds the PID namespace of the tree (`members`: its processes as cryo sees them, `zombie`
/// for the exited ones; `roots`: the -t pids): None when every process is in cryo's, else the
/// namespace whose init is the single root, every process of the host that is in it being in
/// the tree. Threads are added once frozen ([`DumpPidNs::add_threads`]).
pub fn find(members: &[(Pid, bool)], roots: &[Pid]) -> Result<Option<DumpPidNs>, PidNsError> {
    let me = Pid::this();
    let read = |pid: Pid, link: &str| {
        inode(&proc::dir(pid).join("ns").join(link))
            .map_err(|errno| PidNsError::Read { pid, errno })
    };
    let ours = read(me, "pid")?;
    let our_depth = nspid(me)?.len();
    // Each process's pid namespace (None: a zombie's, whose links are gone; its NSpid says
    // whether it is in cryo's, and it is in its parent's otherwise), its NSpid, and the
    // namespace it makes for its children.
    struct Seen {
        pid: Pid,
        ns: Option<u64>,
        levels: Vec<i32>,
        for_children: Option<u64>,
    }
    let see = |pid: Pid, zombie: bool| -> Result<Seen, PidNsError> {
        let levels = nspid(pid)?;
        let (ns, for_children) = if zombie {
            ((levels.len() == our_depth).then_some(ours), None)
        } else {
            let links = (read(pid, "pid")?, read(pid, "pid_for_children")?);
            // An absent link of a process that has exited since the tree was read (its
            // namespaces went at its exit) is no namespace made for its children.
            if links.1 == 0 && !proc::stat(pid).is_ok_and(|s| !matches!(s.state, 'Z' | 'X')) {
                return Err(PidNsError::Exited { pid });
            }
            (Some(links.0), Some(links.1))
        };
        Ok(Seen {
            pid,
            ns,
            levels,
            for_children,
        })
    };
    let mut seen = Vec::with_capacity(members.len());
    for &(pid, zombie) in members {
        match see(pid, zombie) {
            Ok(s) => seen.push(s),
            // A process (not a root) that ended since the tree was read is no longer in it:
            // the freeze that follows finds the tree changed, once the roots are frozen.
            Err(e) if e.gone().is_some() && !roots.contains(&pid) => {}
            Err(e) => return Err(e),
        }
    }
    // Nested namespaces first: their parent's pid_for_children differs from its own too.
    if let Some(s) = seen.iter().find(|s| s.levels.len() > our_depth + 1) {
        return Err(PidNsError::Nested {
            pid: s.pid,
            inode: s.ns.unwrap_or_default(),
            depth: s.levels.len().saturating_sub(our_depth),
        });
    }
    for s in &seen {
        match (s.ns, s.for_children) {
            (Some(ns), Some(for_children)) if for_children != ns => {
                return Err(PidNsError::ForChildren {
                    pid: s.pid,
                    inode: for_children,
                })
            }
            _ => {}
        }
    }
    let mut found: Option<(u64, Pid)> = None;
    let mut map = HashMap::new();
    for s in &seen {
        let pid = s.pid;
        if s.ns == Some(ours) {
            continue;
        }
        let inside = s.levels.last().copied().unwrap_or_default();
        map.insert(pid.as_raw(), inside);
        let ns = s.ns.or(found.map(|f| f.0)).unwrap_or_default();
        match found {
            Some((inode, _)) if inode == ns => {}
            _ if inside == 1 && roots == [pid] => found = Some((ns, pid)),
            _ => {
                if roots.len() > 1 {
                    return Err(PidNsError::SeveralRoots {
                        pid,
                        inode: ns,
                        roots: roots.len(),
                    });
                }
                return Err(PidNsError::InitNotDumped {
                    pid,
                    inode: ns,
                    init: init_of(ns).unwrap_or(0),
                });
            }
        }
    }
    let Some((inode, root)) = found else {
        return Ok(None);
    };
    // Every process of the namespace is in the tree (threads go with their process).
    for other in all_pids() {
        if map.contains_key(&other.as_raw()) {
            continue;
        }
        if read(other, "pid").ok() == Some(inode) {
            // Forked by a process of the tree since it was read (a server's new worker), or
            // gone since: the freeze finds its parent's children changed and reads the tree
            // again (the processes frozen stay frozen, so it settles).
            match proc::stat(other) {
                Err(_) => continue,
                Ok(st) if map.contains_key(&st.ppid) => continue,
                Ok(_) => {}
            }
            let inside = nspid(other)
                .ok()
                .and_then(|l| l.last().copied())
                .unwrap_or(0);
            return Err(PidNsError::ProcessOutside {
                pid: root,
                inode,
                other: other.as_raw(),
                inside,
            });
        }
    }
    Ok(Some(DumpPidNs {
        inode,
        map,
        pid_max: 0,
        last_pid: 0,
    }))
}

/// The most pid_max may be (PID_MAX_LIMIT, 64-bit): what a new PID namespace starts with
/// since Linux 6.14, so its pids may exceed the pid_max of cryo's.
pub const PID_MAX_LIMIT: u32 = 4 * 1024 * 1024;

/// Whether this kernel keeps a pid_max per PID namespace (Linux 6.14 and later: a process
/// reads and sets its own namespace's in /proc/sys/kernel/pid_max; before, one for all).
pub fn pid_max_per_namespace() -> bool {
    nix::sys::utsname::uname()
        .is_ok_and(|u| release_at_least(&u.release().to_string_lossy(), (6, 14)))
}

/// Whether kernel release `release` ("6.18.4-200.fc43.x86_64") is `at_least` (major, minor).
fn release_at_least(release: &str, at_least: (u32, u32)) -> bool {
    let mut parts = release.split(['.', '-']).map(|p| {
        p.chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse::<u32>()
            .ok()
    });
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) >= at_least,
        _ => false,
    }
}

/// Why the numbers of a restored PID namespace cannot be what they were.
#[derive(Debug, thiserror::Error)]
pub enum PidNsNumbersError {
    /// The dumped namespace had a pid_max of its own and this kernel has one for all.
    #[error(
        "the image's pid namespace had pid_max {max} of its own; this kernel keeps one \
         pid_max for every namespace ({here}; one per namespace since Linux 6.14): refused"
    )]
    NotPerNamespace {
        /// The dumped namespace's.
        max: u32,
        /// This machine's.
        here: u32,
    },
    /// Setting one failed.
    #[error("pid {root}: set {what} of its new pid namespace to {value}: {errno}")]
    Set {
        /// The restored init, as cryo sees it.
        root: Pid,
        /// pid_max or ns_last_pid.
        what: &'static str,
        /// The value.
        value: i64,
        /// The kernel's answer.
        errno: io::Error,
    },
}

/// Before anything is made: refuses an image whose PID namespace had a pid_max of its own
/// (other than the machine's) on a kernel that keeps one for every namespace.
pub fn check_numbers(inventory: &cryo_proto::image::Inventory) -> Result<(), PidNsNumbersError> {
    let max = inventory.pid_ns_pid_max;
    if max == 0 || pid_max_per_namespace() {
        return Ok(());
    }
    let here = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0);
    if here == max {
        return Ok(());
    }
    Err(PidNsNumbersError::NotPerNamespace { max, here })
}

/// Gives the new PID namespace of restored init `root` (as cryo sees it) the pid_max and the
/// last pid the dumped one had, once every process and thread of it is made (a pid_max
/// lowered below pids in use after they were taken comes back the same way); an image
/// without them (an older cryo's, a kernel with one pid_max for all) leaves the new one's.
pub fn restore_numbers(
    inventory: &cryo_proto::image::Inventory,
    root: Pid,
) -> Result<(), PidNsNumbersError> {
    if inventory.pid_ns == 0 {
        return Ok(());
    }
    let fail = |what: &'static str, value: i64| {
        move |errno: io::Error| PidNsNumbersError::Set {
            root,
            what,
            value,
            errno,
        }
    };
    let max = inventory.pid_ns_pid_max;
    let ns = std::fs::File::open(proc::dir(root).join("ns/pid"))
        .map_err(fail("pid_max", i64::from(max)))?;
    let ns = std::os::fd::AsFd::as_fd(&ns);
    if max != 0 && pid_max_per_namespace() {
        crate::sys::pidns::set_pid_max(ns, max).map_err(fail("pid_max", i64::from(max)))?;
    }
    let last = inventory.pid_ns_last_pid;
    if last > 0 {
        crate::sys::pidns::set_last_pid(ns, last).map_err(fail("ns_last_pid", i64::from(last)))?;
    }
    Ok(())
}

/// Every process of the host cryo sees.
fn all_pids() -> Vec<Pid> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
                .map(Pid::from_raw)
                .collect()
        })
        .unwrap_or_default()
}

/// The process that is PID 1 of namespace `ns`, as cryo sees it.
fn init_of(ns: u64) -> Option<i32> {
    all_pids().into_iter().find_map(|p| {
        let same = inode(&proc::dir(p).join("ns/pid")).ok() == Some(ns);
        let one = nspid(p).ok().and_then(|l| l.last().copied()) == Some(1);
        (same && one).then_some(p.as_raw())
    })
}

impl DumpPidNs {
    /// Reads the namespace's pid_max (where the kernel keeps one per namespace) and the last
    /// pid it handed out, the tree frozen (none of it forks meanwhile), by a child forked into
    /// it that puts that last pid back (sys/pidns.rs): the next process there gets the pid it
    /// would have had, after a `--leave-running` dump too.
    pub fn read_numbers(&mut self) -> Result<(), PidNsError> {
        let Some(init) = self.init() else {
            return Ok(());
        };
        let read = |errno: io::Error| PidNsError::Read { pid: init, errno };
        let ns = std::fs::File::open(proc::dir(init).join("ns/pid")).map_err(read)?;
        let (max, last) =
            crate::sys::pidns::numbers(std::os::fd::AsFd::as_fd(&ns)).map_err(read)?;
        self.pid_max = if pid_max_per_namespace() { max } else { 0 };
        self.last_pid = last;
        Ok(())
    }

    /// Adds the threads of frozen `pid` (their tids there).
    pub fn add_threads(&mut self, pid: Pid, tids: &[Pid]) -> Result<(), PidNsError> {
        for &tid in tids {
            let levels = nspid_of_thread(pid, tid)?;
            if let Some(&inside) = levels.last() {
                self.map.insert(tid.as_raw(), inside);
            }
        }
        Ok(())
    }

    /// `host` as the namespace names it, or refused naming `pid` and `what`.
    fn name(&self, pid: i32, what: impl Fn() -> String, host: i32) -> Result<i32, PidNsError> {
        self.inside(host).ok_or_else(|| PidNsError::NamesOutside {
            pid: Pid::from_raw(pid),
            what: what(),
            other: host,
            inode: self.inode,
        })
    }

    /// Session or group `id` of process `pid` (`what`; `field` its NS line of the process's
    /// status) as the namespace names it: a group or session whose leader has exited (no
    /// process of the dump) is named by the process's own status; one of another namespace
    /// (its number there 0) is refused.
    fn name_group(&self, pid: i32, what: &str, field: &str, id: i32) -> Result<i32, PidNsError> {
        if let Some(inside) = self.inside(id) {
            return Ok(inside);
        }
        let seen = proc::status(Pid::from_raw(pid))
            .ok()
            .and_then(|status| {
                proc::status_field(&status, field)?
                    .split_whitespace()
                    .last()?
                    .parse::<i32>()
                    .ok()
            })
            .filter(|&n| n > 0 && !proc::dir(Pid::from_raw(id)).exists());
        seen.ok_or_else(|| PidNsError::NamesOutside {
            pid: Pid::from_raw(pid),
            what: what.into(),
            other: id,
            inode: self.inode,
        })
    }

    /// Rewrites the pids of a process's entry, core and memory record as the namespace names
    /// them; `root`: the root of the dump (its parent is outside: 0 there).
    pub fn translate_task(
        &self,
        entry: &mut ProcessEntry,
        task: Option<(&mut TaskCore, &mut MmCore)>,
        root: bool,
    ) -> Result<(), PidNsError> {
        let host = entry.pid;
        entry.pid = self.name(host, || "pid".into(), host)?;
        entry.ppid = if root {
            0
        } else {
            self.name(host, || "parent".into(), entry.ppid)?
        };
        entry.pgid = self.name_group(host, "process group", "NSpgid", entry.pgid)?;
        entry.sid = self.name_group(host, "session", "NSsid", entry.sid)?;
        for t in &mut entry.tids {
            *t = self.name(host, || "thread".into(), *t)?;
        }
        let Some((core, mm)) = task else {
            return Ok(());
        };
        core.pid = entry.pid;
        mm.pid = entry.pid;
        for th in &mut core.threads {
            th.tid = self.name(host, || "thread".into(), th.tid)?;
        }
        for timer in core.posix_timers.iter_mut().filter(|t| t.notify_tid != 0) {
            let id = timer.id;
            timer.notify_tid = self.name(
                host,
                || format!("POSIX timer {id} (SIGEV_THREAD_ID)"),
                timer.notify_tid,
            )?;
        }
        for owner in &mut core.fd_owners {
            if owner.owner != 0 {
                let fd = owner.fd;
                owner.owner =
                    self.name(host, || format!("fd {fd} owner (F_SETOWN)"), owner.owner)?;
            }
        }
        Ok(())
    }

    /// Rewrites the pids of the tree's records (`pstree`: the live processes first, as in
    /// `cores`, then the zombies) as the namespace names them, and renames the pages files
    /// in `dir` after them; returns the roots (`roots`: as cryo sees them) there.
    pub fn translate_tree(
        &self,
        roots: &[Pid],
        pstree: &mut [ProcessEntry],
        cores: &mut [(TaskCore, MmCore)],
        dir: &Path,
    ) -> crate::error::Result<Vec<Pid>> {
        let root = roots.first().map_or(0, |p| p.as_raw());
        for (i, e) in pstree.iter_mut().enumerate() {
            let is_root = e.pid == root;
            let task = cores.get_mut(i).map(|(c, m)| (c, m));
            self.translate_task(e, task, is_root)?;
        }
        // The pages files go by the pid of the image too, through a temporary name each (a
        // host pid of one process may be another's pid in the namespace).
        let aside = |name: &str| dir.join(format!("{name}.pidns"));
        let failed = |pid: i32| {
            move |e| crate::error::Error::sys(Pid::from_raw(pid), "rename the pages file", e)
        };
        for (_, mm) in cores.iter() {
            if let Some(f) = &mm.pages_file {
                std::fs::rename(dir.join(&f.name), aside(&f.name)).map_err(failed(mm.pid))?;
            }
        }
        for (_, mm) in cores.iter_mut() {
            let pid = mm.pid;
            if let Some(f) = &mut mm.pages_file {
                let name = crate::image::names::pages(Pid::from_raw(pid));
                std::fs::rename(aside(&f.name), dir.join(&name)).map_err(failed(pid))?;
                f.name = name;
            }
        }
        Ok(roots
            .iter()
            .filter_map(|p| self.inside(p.as_raw()))
            .map(Pid::from_raw)
            .collect())
    }

    /// Rewrites the pids the descriptions name: pidfds' targets, the sessions and foreground
    /// groups of terminals, the credentials of queued unix messages. `holder`: a process
    /// holding description `id`, for the refusal.
    pub fn translate_descs(
        &self,
        descs: &mut [FileDesc],
        holder: impl Fn(u32) -> i32,
    ) -> Result<(), PidNsError> {
        for d in descs {
            let (id, pid) = (d.id, holder(d.id));
            let one = |what: &str, v: &mut i32| -> Result<(), PidNsError> {
                if *v != 0 {
                    *v = self.name(pid, || format!("file {id}: {what}"), *v)?;
                }
                Ok(())
            };
            match &mut d.kind {
                Some(Kind::Pidfd(p)) => one("pidfd target", &mut p.pid)?,
                Some(Kind::Epoll(e)) => {
                    for t in &mut e.targets {
                        if let Some(holder) = &mut t.holder_pid {
                            one("epoll target's holder", holder)?;
                        }
                    }
                }
                Some(Kind::ProcFile(p)) => {
                    one("/proc directory or namespace", &mut p.pid)?;
                    one("/proc/PID/task directory", &mut p.tid)?;
                }
                Some(Kind::Tty(t)) => {
                    one("terminal session", &mut t.sid)?;
                    one("terminal foreground group", &mut t.foreground_pgid)?;
                }
                Some(Kind::Pty(t)) => {
                    one("terminal session", &mut t.sid)?;
                    one("terminal foreground group", &mut t.foreground_pgid)?;
                }
                Some(Kind::Socket(s)) => {
                    if let Some(State::Unix(u)) = &mut s.state {
                        // A peer the namespace cannot see reads as pid 0 inside it.
                        let creds = std::iter::once(&mut u.peer_cred)
                            .chain(u.pending.iter_mut().map(|p| &mut p.peer_cred));
                        for c in creds.flatten() {
                            c.pid = self.inside(c.pid).unwrap_or(0);
                        }
                        let queues = std::iter::once(&mut u.queue)
                            .chain(u.pending.iter_mut().map(|p| &mut p.queue));
                        for m in queues.flatten() {
                            if let Some(c) = &mut m.creds {
                                one(
                                    "credentials (SCM_CREDENTIALS) of a queued message",
                                    &mut c.pid,
                                )?;
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// The NSpid line of thread `tid` of `pid`.
fn nspid_of_thread(pid: Pid, tid: Pid) -> Result<Vec<i32>, PidNsError> {
    let status = proc::thread_status(pid, tid).map_err(|e| PidNsError::Read {
        pid,
        errno: io::Error::other(e.to_string()),
    })?;
    Ok(parse_nspid(&status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_releases_are_compared_by_major_and_minor() {
        assert!(release_at_least("6.18.44-fc-v1300", (6, 14)));
        assert!(release_at_least("6.14.0", (6, 14)));
        assert!(release_at_least("7.0.1-200.fc45.x86_64", (6, 14)));
        assert!(!release_at_least("6.13.12-arch1", (6, 14)));
        assert!(!release_at_least("5.15.0-91-generic", (6, 14)));
        assert!(!release_at_least("garbage", (6, 14)));
    }

    #[test]
    fn a_tree_is_renamed_as_its_namespace_sees_it() {
        let ns = DumpPidNs {
            inode: 7,
            map: HashMap::from([(100, 1), (101, 2), (102, 3)]),
            pid_max: 0,
            last_pid: 0,
        };
        let mut root = ProcessEntry {
            pid: 100,
            ppid: 50,
            pgid: 100,
            sid: 100,
            tids: vec![100],
            ..Default::default()
        };
        let (mut core, mut mm) = (TaskCore::default(), MmCore::default());
        ns.translate_task(&mut root, Some((&mut core, &mut mm)), true)
            .unwrap();
        assert_eq!((root.pid, root.ppid, root.pgid, root.sid), (1, 0, 1, 1));
        assert_eq!((core.pid, mm.pid), (1, 1));
        let mut child = ProcessEntry {
            pid: 102,
            ppid: 101,
            pgid: 101,
            sid: 100,
            tids: vec![102],
            ..Default::default()
        };
        ns.translate_task(&mut child, None, false).unwrap();
        // What a process's core names: threads, fd owners, SIGEV_THREAD_ID timers.
        let mut core = TaskCore {
            fd_owners: vec![cryo_proto::image::FdOwner {
                fd: 4,
                owner: 102,
                ..Default::default()
            }],
            posix_timers: vec![cryo_proto::image::PosixTimer {
                notify_tid: 101,
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut entry = ProcessEntry {
            pid: 101,
            ppid: 100,
            pgid: 101,
            sid: 100,
            ..Default::default()
        };
        ns.translate_task(&mut entry, Some((&mut core, &mut MmCore::default())), false)
            .unwrap();
        assert_eq!(
            (core.fd_owners[0].owner, core.posix_timers[0].notify_tid),
            (3, 2)
        );
        // A pidfd of a process outside the namespace.
        let mut descs = vec![FileDesc {
            id: 9,
            kind: Some(Kind::Pidfd(cryo_proto::image::Pidfd {
                pid: 55,
                ..Default::default()
            })),
            ..Default::default()
        }];
        let err = ns.translate_descs(&mut descs, |_| 100).unwrap_err();
        assert!(
            err.to_string()
                .contains("pid 100: its file 9: pidfd target names pid 55, outside"),
            "{err}"
        );
        assert_eq!((child.pid, child.ppid, child.pgid, child.sid), (3, 2, 2, 1));
        // A session led outside the namespace.
        let mut outside = ProcessEntry {
            pid: 101,
            ppid: 100,
            pgid: 101,
            sid: 9,
            ..Default::default()
        };
        let err = ns.translate_task(&mut outside, None, false).unwrap_err();
        assert!(
            err.to_string()
                .contains("pid 101: its session names pid 9, outside its pid namespace pid:[7]"),
            "{err}"
        );
    }
}
