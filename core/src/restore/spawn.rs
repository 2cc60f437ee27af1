//! Creating the processes of a restore: the trees forked with their original pids, each
//! process forked by its restored parent (so parentage, sessions and groups come out right)
//! while it still runs cryo code, opening its fds (inheriting the descriptions it shares with
//! its parent), creating its children and zombies, then stopping for cryo to reshape it.
//!
//! Control fds: every process gets a `sync` pipe (cryo says "go" once it traces it) and an
//! `err` pipe (the process says "r" when it exists, or why it failed). Their child ends sit at
//! fixed numbers above every fd of the image (`base + 2i`, `base + 2i + 1`), so each process
//! keeps its descendants' ends open until it has forked them.
//!
//! Objects of the whole tree: the shared memory objects (memfds, shared anonymous memory) and
//! the terminal of a shell job are made or opened by cryo before the first fork and held at
//! slot fds above all others, which every process inherits and keeps until its children are
//! forked: each fd and VMA of each process reopens them, so there is one object behind all.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Duration;

use cryo_proto::image::{FileDesc, MmCore, ProcessEntry, VmaKind};
use nix::sys::ptrace;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::error::{Error, Result};
use crate::image::{names, ImageDir};
use crate::memory::restore::{needs_writable_file, MappingFds};
use crate::memory::PAGE;
use crate::remote::{BATCH_LOOP, BATCH_LOOP_OFFSET, SYSCALL_INT3};
use crate::restore::TaskImage;
use crate::sys::process::{fork_with_pid, Forked};
use crate::{files, signals, task};

/// How long cryo waits for a process of the tree to show up or stop.
const STEP_TIMEOUT: Duration = Duration::from_secs(20);

/// What every process of the tree needs, computed by cryo before the first fork.
pub struct TreePlan<'a> {
    /// Live processes, parents before children (the order they are created in).
    pub tasks: Vec<&'a TaskImage>,
    zombies: Vec<&'a ProcessEntry>,
    /// The first control fd number.
    base: RawFd,
    /// Per task: its children (task indices) and zombie children.
    children: Vec<Vec<usize>>,
    zombie_children: Vec<Vec<usize>>,
    /// Per task: descriptions it inherits from its parent, id -> the parent's fd number.
    inherited: Vec<HashMap<u32, RawFd>>,
    /// Per task: descriptions it creates without holding them (the other end of a unix pair,
    /// for its children), id -> the fd number it keeps them at until its children are forked.
    extra: Vec<HashMap<u32, RawFd>>,
    /// Per task: the trampoline address and its mapping fds.
    pub tramps: Vec<u64>,
    pub mappings: Vec<MappingFds>,
    roots: Vec<usize>,
    /// Descriptions shared by different roots' trees: cryo makes each set (a unix pair, or
    /// files and pipes) and holds them at these slot numbers while it forks the roots.
    cryo_sets: Vec<CryoSet>,
    cryo_slots: HashMap<u32, RawFd>,
    /// The unix sockets made together and what they carry, worked out once for every task.
    links: files::UnixLinks,
    descs: &'a [FileDesc],
    images: &'a ImageDir,
    tcp_close: bool,
    /// The shared memory objects, made by cryo, and the slot fd of each (dumped inode ->
    /// fd number in the tree).
    shared: files::SharedObjects,
    shared_slots: HashMap<u64, RawFd>,
    /// The terminal of a shell job (cryo's stdin), its slot fd and what each process does
    /// with it.
    terminal: Option<(files::tty::Terminal, RawFd, files::tty::Attach)>,
    /// Tasks (indices) that are to get the terminal as their controlling terminal.
    want_ctty: Vec<usize>,
}

impl<'a> TreePlan<'a> {
    /// Orders the tree and assigns every control and mapping fd.
    pub fn new(
        roots: &[i32],
        tasks: &'a [TaskImage],
        zombies: &'a [ProcessEntry],
        descs: &'a [FileDesc],
        links: files::UnixLinks,
        images: &'a ImageDir,
        tcp_close: bool,
    ) -> Result<Self> {
        let by_pid: HashMap<i32, usize> = tasks
            .iter()
            .enumerate()
            .map(|(i, t)| (t.entry.pid, i))
            .collect();
        // Breadth first from the roots: parents before children.
        let mut order: Vec<usize> = Vec::new();
        let mut root_idx = Vec::new();
        for &r in roots {
            let i = *by_pid
                .get(&r)
                .ok_or_else(|| Error::Restore(format!("root pid {r} is not in the image")))?;
            root_idx.push(i);
        }
        order.extend(&root_idx);
        let mut k = 0;
        while k < order.len() {
            let pid = tasks[order[k]].entry.pid;
            let mut kids: Vec<usize> = tasks
                .iter()
                .enumerate()
                .filter(|(_, t)| t.entry.ppid == pid && !root_idx.contains(&by_pid[&t.entry.pid]))
                .map(|(i, _)| i)
                .collect();
            kids.sort_by_key(|&i| tasks[i].entry.pid);
            order.extend(kids);
            k += 1;
        }
        if order.len() != tasks.len() {
            return Err(Error::Restore(format!(
                "{} of the image's {} processes are not in the trees of its roots {roots:?}",
                tasks.len() - order.len(),
                tasks.len()
            )));
        }
        let ordered: Vec<&TaskImage> = order.iter().map(|&i| &tasks[i]).collect();
        let pos: HashMap<i32, usize> = ordered
            .iter()
            .enumerate()
            .map(|(i, t)| (t.entry.pid, i))
            .collect();
        let n = ordered.len();
        let mut children = vec![Vec::new(); n];
        let mut zombie_children = vec![Vec::new(); n];
        for (i, t) in ordered.iter().enumerate() {
            if let Some(&p) = pos.get(&t.entry.ppid) {
                if !roots.contains(&t.entry.pid) {
                    children[p].push(i);
                }
            }
        }
        for (z, entry) in zombies.iter().enumerate() {
            let p = *pos.get(&entry.ppid).ok_or_else(|| {
                Error::Restore(format!(
                    "zombie {} has no restored parent ({})",
                    entry.pid, entry.ppid
                ))
            })?;
            zombie_children[p].push(z);
        }
        let together = files::made_together(descs, &links);
        let (inherited, extra_slots, cryo_sets) =
            plan_inheritance(&ordered, &pos, roots, &links, &together, descs)?;
        // The objects of the whole tree, made before the fd numbers are chosen.
        let used: BTreeSet<u32> = ordered
            .iter()
            .flat_map(|t| {
                let fds = t.core.fds.iter().map(|e| e.file_id);
                fds.chain(t.mm.vmas.iter().map(|v| v.file_id))
                    .chain([t.mm.exe_file_id])
            })
            .collect();
        let shared = files::SharedObjects::create(descs, &used, images)?;
        let fds_of: Vec<(i32, &[cryo_proto::image::FdEntry])> = ordered
            .iter()
            .map(|t| (t.entry.pid, t.core.fds.as_slice()))
            .collect();
        let terminal = files::tty::Terminal::open(descs, &fds_of)?;
        // Above every fd of the image and every fd cryo holds now.
        let image_max = ordered
            .iter()
            .flat_map(|t| t.core.fds.iter().map(|e| e.fd))
            .max()
            .unwrap_or(2);
        let ours = std::fs::read_dir("/proc/self/fd")
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<RawFd>().ok()))
                    .max()
                    .unwrap_or(2)
            })
            .unwrap_or(2);
        // Room for the pipes cryo is about to create below the base.
        let base = image_max.max(ours + 4 * n as RawFd + 8) + 1;
        let first_mapping = (base + 2 * n as RawFd) as u64;
        let mappings: Vec<MappingFds> = ordered
            .iter()
            .map(|t| mapping_fds(t, first_mapping))
            .collect();
        // Extra ends: above every control and mapping fd of every task.
        let extra_base = mappings
            .iter()
            .flat_map(|m: &MappingFds| m.all())
            .max()
            .map_or(first_mapping, |m| m + 1) as RawFd;
        let slot_fd = |k: usize| extra_base + k as RawFd;
        let inherited: Vec<HashMap<u32, RawFd>> = inherited
            .into_iter()
            .map(|m| {
                m.into_iter()
                    .map(|(id, at)| match at {
                        Inherit::Fd(fd) => (id, fd),
                        Inherit::Slot(k) => (id, slot_fd(k)),
                    })
                    .collect()
            })
            .collect();
        let shared_base = slot_fd(extra_slots.len());
        let shared_slots: HashMap<u64, RawFd> = shared
            .fds()
            .zip(shared_base..)
            .map(|((ino, _), slot)| (ino, slot))
            .collect();
        let want_ctty = match &terminal {
            Some(t) => (0..n)
                .filter(|&i| t.wants_controlling(&ordered[i].entry))
                .collect(),
            None => Vec::new(),
        };
        let terminal = terminal.map(|t| {
            let attach = t.attach_plan();
            (t, shared_base + shared.len() as RawFd, attach)
        });
        let mut extra = vec![HashMap::new(); n];
        let mut cryo_slots = HashMap::new();
        for (k, &(p, id)) in extra_slots.iter().enumerate() {
            if p == CRYO {
                cryo_slots.insert(id, slot_fd(k));
            } else {
                extra[p].insert(id, slot_fd(k));
            }
        }
        let tramps = ordered
            .iter()
            .map(|t| pick_trampoline(&t.mm))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            tasks: ordered,
            zombies: zombies.iter().collect(),
            base,
            children,
            zombie_children,
            inherited,
            extra,
            tramps,
            mappings,
            roots: (0..root_idx.len()).collect(),
            cryo_slots,
            cryo_sets,
            links,
            descs,
            images,
            tcp_close,
            shared,
            shared_slots,
            terminal,
            want_ctty,
        })
    }

    /// The slot fds of the tree's objects: (cryo's fd, the slot's number).
    fn object_slots(&self) -> Vec<(RawFd, RawFd)> {
        let mut v: Vec<(RawFd, RawFd)> = self
            .shared
            .fds()
            .map(|(ino, fd)| (fd, self.shared_slots[&ino]))
            .collect();
        if let Some((t, slot, _)) = &self.terminal {
            v.push((t.fd(), *slot));
        }
        v
    }

    /// The last step before the processes run, once every one is whole: the memfd seals go
    /// on (every mapping exists now) and the terminal gets the dumped modes.
    pub fn before_run(&self) -> Result<()> {
        self.shared.seal()?;
        if let Some((t, _, _)) = &self.terminal {
            t.set_modes()?;
        }
        Ok(())
    }

    /// The sync and err fd numbers of task `i` inside the tree.
    pub fn ctl(&self, i: usize) -> (RawFd, RawFd) {
        (self.base + 2 * i as RawFd, self.base + 2 * i as RawFd + 1)
    }

    fn descendants(&self, i: usize) -> Vec<usize> {
        let mut out = Vec::new();
        let mut stack = self.children[i].clone();
        while let Some(c) = stack.pop() {
            out.push(c);
            stack.extend(&self.children[c]);
        }
        out
    }
}

/// The "task" that makes a slot when cryo itself makes it (a pair shared by two roots).
const CRYO: usize = usize::MAX;

/// Where a child finds a description it inherits: at the parent's own fd number, or in the
/// parent's n-th extra slot.
enum Inherit {
    Fd(RawFd),
    Slot(usize),
}

/// What cryo itself makes for trees that share it.
#[derive(Debug)]
enum CryoSet {
    /// Both ends of a connected unix pair.
    UnixPair(u32, u32),
    /// Files, directories, devices, pipes ([`files::can_hand_down`]).
    Plain(Vec<u32>),
}

/// Per task, what it inherits; the extra slots, (parent task or [`CRYO`], description) each;
/// and what cryo makes itself.
type InheritPlan = (Vec<HashMap<u32, Inherit>>, Vec<(usize, u32)>, Vec<CryoSet>);

/// Which descriptions each task inherits from its parent, and the extra slots tasks keep for
/// their descendants (slot k = (task, description), the task holding it at slot fd k).
///
/// A description a task shares with its parent is inherited at the parent's fd number. Unix
/// sockets made together (a pair, a listener and its waiting clients), joined with what their
/// queues carry in flight ([`files::UnixLinks::components`]), are made once, by the lowest
/// common ancestor of every task holding one of them (cryo itself for a plain pair whose
/// holders are in different roots' trees): from there each description travels down to its
/// holders, at the fd number of a task on the way that holds it, else in extra slots (a task
/// on the way that holds none only passes them on).
fn plan_inheritance(
    ordered: &[&TaskImage],
    pos: &HashMap<i32, usize>,
    roots: &[i32],
    links: &files::UnixLinks,
    together: &[Vec<u32>],
    descs: &[FileDesc],
) -> Result<InheritPlan> {
    let n = ordered.len();
    let parent: Vec<Option<usize>> = ordered
        .iter()
        .map(|t| {
            if roots.contains(&t.entry.pid) {
                None
            } else {
                pos.get(&t.entry.ppid).copied()
            }
        })
        .collect();
    // Parents come before their children in `ordered`.
    let mut depth = vec![0usize; n];
    for i in 0..n {
        if let Some(p) = parent[i] {
            depth[i] = depth[p] + 1;
        }
    }
    let fd_of: Vec<HashMap<u32, RawFd>> = ordered
        .iter()
        .map(|t| t.core.fds.iter().map(|e| (e.file_id, e.fd)).collect())
        .collect();
    let mut inherited: Vec<HashMap<u32, Inherit>> = (0..n).map(|_| HashMap::new()).collect();
    // Any description shared with the parent: inherited at the parent's number.
    for i in 0..n {
        if let Some(p) = parent[i] {
            for &id in fd_of[i].keys() {
                if let Some(&fd) = fd_of[p].get(&id) {
                    inherited[i].insert(id, Inherit::Fd(fd));
                }
            }
        }
    }
    let mut slots: Vec<(usize, u32)> = Vec::new();
    let mut slot_of: HashMap<(usize, u32), usize> = HashMap::new();
    let mut cryo_sets = Vec::new();
    let by_id: HashMap<u32, &FileDesc> = descs.iter().map(|d| (d.id, d)).collect();
    let mut holders: HashMap<u32, Vec<usize>> = HashMap::new();
    for (i, fds) in fd_of.iter().enumerate() {
        for &id in fds.keys() {
            holders.entry(id).or_default().push(i);
        }
    }
    // Besides what is made together: a file, device or pipe end held by several processes
    // not all in one line of descent (siblings, two trees) is opened once and handed down.
    let in_sets: HashSet<u32> = together.iter().flatten().copied().collect();
    let mut singles: Vec<Vec<u32>> = holders
        .iter()
        .filter(|&(id, h)| {
            h.len() > 1
                && !in_sets.contains(id)
                && by_id.get(id).is_some_and(|d| files::can_hand_down(d))
        })
        .map(|(&id, _)| vec![id])
        .collect();
    singles.sort_unstable();
    let together: Vec<Vec<u32>> = together.iter().cloned().chain(singles).collect();
    for component in &together {
        let held: Vec<(usize, u32)> = component
            .iter()
            .flat_map(|&x| holders.get(&x).into_iter().flatten().map(move |&h| (h, x)))
            .collect();
        let mut tasks = held.iter().map(|&(h, _)| h);
        let Some(first) = tasks.next() else { continue };
        // The lowest common ancestor; None: the holders are in different roots' trees.
        let mut maker = Some(first);
        for h in tasks {
            maker = maker.and_then(|m| common_ancestor(&parent, &depth, m, h));
        }
        let maker = match maker {
            Some(m) => m,
            None => match links.plain_pair(component) {
                Some((a, b)) => {
                    cryo_sets.push(CryoSet::UnixPair(a, b));
                    CRYO
                }
                None if component
                    .iter()
                    .all(|id| by_id.get(id).is_some_and(|d| files::can_hand_down(d))) =>
                {
                    cryo_sets.push(CryoSet::Plain(component.clone()));
                    CRYO
                }
                None => {
                    let pids: BTreeSet<i32> =
                        held.iter().map(|&(h, _)| ordered[h].entry.pid).collect();
                    return Err(Error::Restore(format!(
                        "descriptions made together (a pipe's ends, a listener and its \
                         clients, descriptors in flight) are held by processes in different \
                         trees {pids:?}: not supported yet"
                    )));
                }
            },
        };
        for (h, x) in held {
            // Walk up from the holder until a task that has x: the maker, or one that holds
            // or already receives it; every step down from there gets it from its parent.
            let mut path = Vec::new();
            let mut at = h;
            while at != maker && !inherited[at].contains_key(&x) {
                path.push(at);
                match parent[at] {
                    Some(p) if p != maker && fd_of[p].contains_key(&x) => {
                        inherited[at].insert(x, Inherit::Fd(fd_of[p][&x]));
                        path.pop();
                        break;
                    }
                    Some(p) => at = p,
                    None => at = CRYO,
                }
            }
            for &q in path.iter().rev() {
                if inherited[q].contains_key(&x) {
                    continue;
                }
                let from = parent[q].unwrap_or(CRYO);
                let inherit = match fd_of.get(from).and_then(|m| m.get(&x)) {
                    Some(&fd) => Inherit::Fd(fd),
                    None => Inherit::Slot(*slot_of.entry((from, x)).or_insert_with(|| {
                        slots.push((from, x));
                        slots.len() - 1
                    })),
                };
                inherited[q].insert(x, inherit);
            }
        }
    }
    Ok((inherited, slots, cryo_sets))
}

/// The lowest common ancestor of tasks `a` and `b` (a task is its own ancestor), or `None`
/// when they are in different trees.
fn common_ancestor(
    parent: &[Option<usize>],
    depth: &[usize],
    mut a: usize,
    mut b: usize,
) -> Option<usize> {
    while depth[a] > depth[b] {
        a = parent[a]?;
    }
    while depth[b] > depth[a] {
        b = parent[b]?;
    }
    while a != b {
        a = parent[a]?;
        b = parent[b]?;
    }
    Some(a)
}

/// The mapping fds of a task from fd number `first` on: pages, exe, then mapped files.
fn mapping_fds(task: &TaskImage, first: u64) -> MappingFds {
    let wanted: BTreeSet<(u32, bool)> = task
        .mm
        .vmas
        .iter()
        .filter(|v| match VmaKind::try_from(v.kind) {
            Ok(VmaKind::FilePrivate | VmaKind::FileShared) => true,
            Ok(VmaKind::ShmemAnon) => v.file_id != 0,
            _ => false,
        })
        .map(|v| (v.file_id, needs_writable_file(v)))
        .collect();
    MappingFds {
        pages: first,
        exe: first + 1,
        files: wanted
            .into_iter()
            .zip(first + 2..)
            .map(|((id, writable), fd)| (id, writable, fd))
            .collect(),
    }
}

/// Where the trampoline goes: two pages used neither by the image nor by cryo.
fn pick_trampoline(mm: &MmCore) -> Result<u64> {
    const GUARD: u64 = 4 << 20;
    let ours = crate::proc::maps(nix::unistd::getpid())?;
    let free = |a: u64| {
        let b = a + 2 * PAGE;
        !mm.vmas
            .iter()
            .any(|v| v.start < b + GUARD && a < v.end + GUARD)
            && !ours
                .iter()
                .any(|m| m.start < b + GUARD && a < m.end + GUARD)
    };
    (1u64..1 << 16)
        .map(|i| i << 30)
        .find(|&a| free(a))
        .ok_or_else(|| Error::Restore("no free address for the restore trampoline".into()))
}

/// The tree's processes, created and stopped, traced by cryo; pids as cryo sees them.
pub struct Spawned {
    /// Per task of the plan (same order): its pid as cryo sees it.
    pub pids: Vec<Pid>,
    /// The init of new namespaces, if the tree was restored under one.
    pub init: Option<Pid>,
}

/// cryo's ends of the control pipes of one task.
struct Ctl {
    sync: Option<OwnedFd>,
    err: OwnedFd,
}

/// Creates every process of `plan` and waits until each one has stopped itself, ready for
/// reshaping. With `ns`, the (single) root is created by an init in new namespaces.
/// On failure every process created so far is killed.
pub fn spawn_tree(plan: &TreePlan, ns: Option<(bool, bool)>) -> Result<Spawned> {
    let n = plan.tasks.len();
    let mut ours: Vec<Ctl> = Vec::with_capacity(n);
    let mut theirs: Vec<RawFd> = Vec::with_capacity(2 * n);
    for i in 0..n {
        let pid = Pid::from_raw(plan.tasks[i].entry.pid);
        let (sync_rd, sync_wr) = nix::unistd::pipe().map_err(|e| Error::sys(pid, "pipe", e))?;
        let (err_rd, err_wr) = nix::unistd::pipe().map_err(|e| Error::sys(pid, "pipe", e))?;
        let (s, e) = plan.ctl(i);
        for (fd, at) in [(sync_rd, s), (err_wr, e)] {
            move_fd(std::os::fd::IntoRawFd::into_raw_fd(fd), at)
                .map_err(|e| Error::sys(pid, "place a control pipe", e))?;
            theirs.push(at);
        }
        ours.push(Ctl {
            sync: Some(sync_wr),
            err: err_rd,
        });
    }
    let mut created: Vec<Option<Pid>> = vec![None; n];
    let mut init = None;
    // The objects at their slots while the roots are forked; closed then (or on a failure).
    let mut object_slots = Slots(Vec::new());
    for (fd, slot) in plan.object_slots() {
        files::sys::dup_to(files::sys::borrow_raw(fd), slot, false)
            .map_err(|e| Error::Restore(format!("place a shared object at fd {slot}: {e}")))?;
        object_slots.0.push(slot);
    }
    let result = (|| -> Result<()> {
        match ns {
            Some((new_pid, new_net)) => {
                if plan.roots.len() != 1 || n != 1 || !plan.zombies.is_empty() {
                    return Err(Error::Restore(
                        "--pidns/--netns restore a single process for now".into(),
                    ));
                }
                let pid = Pid::from_raw(plan.tasks[0].entry.pid);
                let spawned =
                    crate::namespaces::spawn_init(pid, new_pid, new_net, &theirs, || {
                        child_main(plan, 0)
                    })?;
                init = Some(spawned.init);
                created[0] = Some(spawned.child);
            }
            None => {
                for set in &plan.cryo_sets {
                    let made = match set {
                        CryoSet::UnixPair(a, b) => {
                            let (fa, fb) =
                                files::open_unix_pair_by_ids(plan.descs, &plan.links, *a, *b)?;
                            vec![(*a, fa), (*b, fb)]
                        }
                        CryoSet::Plain(ids) => files::open_in_cryo(plan.descs, ids, plan.images)?,
                    };
                    for (id, fd) in made {
                        if let Some(&at) = plan.cryo_slots.get(&id) {
                            move_fd(std::os::fd::IntoRawFd::into_raw_fd(fd), at).map_err(|e| {
                                Error::Restore(format!(
                                    "place a description shared by two trees: {e}"
                                ))
                            })?;
                        }
                    }
                }
                for &r in &plan.roots {
                    let pid = Pid::from_raw(plan.tasks[r].entry.pid);
                    match fork_with_pid(pid) {
                        Ok(Forked::Child) => child_main(plan, r),
                        Ok(Forked::Parent(child)) => created[r] = Some(child),
                        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                            return Err(Error::Restore(format!(
                                "pid {pid} is taken: a process created meanwhile holds it, or a dying one as its group id"
                            )))
                        }
                        Err(e) => return Err(Error::sys(pid, "clone3 with set_tid", e)),
                    }
                }
            }
        }
        for fd in theirs.iter().chain(plan.cryo_slots.values()) {
            let _ = nix::unistd::close(*fd);
        }
        object_slots.close();
        // Parents first: each is told to go once traced, then creates its children.
        for i in 0..n {
            let pid = Pid::from_raw(plan.tasks[i].entry.pid);
            let hello = read_ctl(&ours[i].err, pid, 1)?;
            if hello != "r" {
                return Err(Error::Restore(format!("pid {pid}: {hello}")));
            }
            let seen = match created[i] {
                Some(p) => p,
                None => {
                    // Created by its restored parent; outside a new PID namespace the pid is
                    // the image's.
                    created[i] = Some(pid);
                    pid
                }
            };
            ptrace::seize(seen, ptrace::Options::PTRACE_O_EXITKILL)
                .map_err(|e| Error::sys(seen, "seize the new process", e))?;
            let sync = ours[i].sync.take().map(std::fs::File::from);
            if let Some(mut sync) = sync {
                std::io::Write::write_all(&mut sync, b"g")
                    .map_err(|e| Error::sys(seen, "start the new process", e))?;
            }
        }
        for i in 0..n {
            let pid = created[i].unwrap_or(Pid::from_raw(plan.tasks[i].entry.pid));
            wait_stopped(pid, &ours[i].err)?;
        }
        if let Some((t, _, _)) = &plan.terminal {
            for &i in &plan.want_ctty {
                let seen = created[i].unwrap_or(Pid::from_raw(plan.tasks[i].entry.pid));
                t.check_controlling(plan.tasks[i].entry.pid, seen);
            }
        }
        Ok(())
    })();
    if let Err(e) = result {
        for pid in created.iter().flatten().rev() {
            let _ = nix::sys::signal::kill(*pid, Signal::SIGKILL);
            let _ = waitpid(*pid, Some(WaitPidFlag::__WALL));
        }
        if let Some(init) = init {
            let _ = nix::sys::signal::kill(init, Signal::SIGKILL);
            let _ = waitpid(init, None);
        }
        return Err(e);
    }
    Ok(Spawned {
        pids: created.into_iter().flatten().collect(),
        init,
    })
}

/// Slot fds cryo placed for the tree, closed once (explicitly, or when dropped).
struct Slots(Vec<RawFd>);

impl Slots {
    fn close(&mut self) {
        for fd in self.0.drain(..) {
            let _ = nix::unistd::close(fd);
        }
    }
}

impl Drop for Slots {
    fn drop(&mut self) {
        self.close();
    }
}

/// Reads what a process said on its err pipe: `want` bytes, or its error text up to EOF.
fn read_ctl(fd: &OwnedFd, pid: Pid, want: usize) -> Result<String> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one pollfd that lives across the call.
    let r = unsafe { libc::poll(&mut pfd, 1, STEP_TIMEOUT.as_millis() as i32) };
    if r == 0 {
        return Err(Error::Restore(format!(
            "pid {pid} was not created within {STEP_TIMEOUT:?}"
        )));
    }
    // The hello is read alone, so an error text written right after it stays in the pipe.
    let mut buf = vec![0u8; want.min(4096)];
    // SAFETY: reading into our own buffer.
    let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    if n <= 0 {
        return Err(Error::Restore(format!(
            "pid {pid}: died before it could say why"
        )));
    }
    buf.truncate(n as usize);
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Waits until traced `pid` stops itself (SIGSTOP); if it died instead, its err pipe says why.
fn wait_stopped(pid: Pid, err: &OwnedFd) -> Result<()> {
    loop {
        match waitpid(pid, Some(WaitPidFlag::__WALL)) {
            Ok(WaitStatus::Stopped(_, Signal::SIGSTOP)) => return Ok(()),
            Ok(WaitStatus::Exited(..)) | Ok(WaitStatus::Signaled(..)) => {
                let why = read_ctl(err, pid, 4096).unwrap_or_else(|e| e.to_string());
                return Err(Error::Restore(format!("pid {pid}: {why}")));
            }
            Ok(WaitStatus::Stopped(_, sig)) => {
                ptrace::cont(pid, sig).map_err(|e| Error::sys(pid, "continue", e))?;
            }
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(Error::sys(pid, "wait for the new process", e)),
        }
    }
}

/// A process of the tree in its cryo phase. Never returns: it stops itself for cryo to reshape
/// it, or reports why it could not and exits.
fn child_main(plan: &TreePlan, i: usize) -> ! {
    let err_fd = plan.ctl(i).1;
    match child_setup(plan, i) {
        Ok(()) => {
            let _ = nix::sys::signal::raise(Signal::SIGSTOP);
            // SAFETY: cryo rewrote this process; reaching here means it let go early.
            unsafe { libc::_exit(71) }
        }
        Err(msg) => {
            let msg = msg.into_bytes();
            // SAFETY: writing our own buffer to the error pipe, then ending the process.
            unsafe {
                libc::write(err_fd, msg.as_ptr().cast(), msg.len());
                libc::_exit(70)
            }
        }
    }
}

fn child_setup(plan: &TreePlan, i: usize) -> std::result::Result<(), String> {
    crate::sys::signal::set_mask(!0).map_err(|e| format!("block signals: {e}"))?;
    let (sync, err) = plan.ctl(i);
    // SAFETY: one byte from/to our own buffers on our control pipes.
    unsafe {
        if libc::write(err, b"r".as_ptr().cast(), 1) != 1 {
            libc::_exit(72);
        }
        let mut go = [0u8; 1];
        if libc::read(sync, go.as_mut_ptr().cast(), 1) != 1 {
            return Err("cryo went away".into());
        }
    }
    let t = plan.tasks[i];
    let pid = Pid::from_raw(t.entry.pid);
    task::restore_session(&t.entry)?;
    if let Some((_, slot, attach)) = &plan.terminal {
        files::tty::attach(*slot, &t.entry, attach);
    }

    let mapping = &plan.mappings[i];
    let pages = std::fs::File::open(plan.images.file(&names::pages(pid)))
        .map_err(|e| format!("open {}: {e}", names::pages(pid)))?;
    place(OwnedFd::from(pages), mapping.pages)?;
    let exe = files::open_for_mapping_with(
        plan.descs,
        t.mm.exe_file_id,
        false,
        plan.images,
        &plan.shared_slots,
    )
    .map_err(|e| format!("executable: {e}"))?;
    place(exe, mapping.exe)?;
    for &(id, writable, fd) in &mapping.files {
        let file =
            files::open_for_mapping_with(plan.descs, id, writable, plan.images, &plan.shared_slots)
                .map_err(|e| format!("mapped file: {e}"))?;
        place(file, fd)?;
    }
    let descendants = plan.descendants(i);
    let mut keep: Vec<RawFd> = vec![sync, err];
    for &d in &descendants {
        let (s, e) = plan.ctl(d);
        keep.extend([s, e]);
    }
    keep.extend(mapping.all().iter().map(|&fd| fd as RawFd));
    let object_slots: Vec<RawFd> = plan.object_slots().iter().map(|&(_, s)| s).collect();
    keep.extend(&object_slots);
    files::restore_task_fds_with(
        plan.descs,
        &t.core.fds,
        plan.images,
        &keep,
        &files::FdRestoreOptions {
            tcp_close: plan.tcp_close,
            inherited: plan.inherited[i].clone(),
            extra: plan.extra[i].clone(),
            shared: plan.shared_slots.clone(),
            terminal: plan.terminal.as_ref().map(|(_, slot, _)| *slot),
        },
        &plan.links,
    )
    .map_err(|e| e.to_string())?;

    // Children, each forked by its parent with its pid; zombies die at once.
    for &c in &plan.children[i] {
        let cpid = Pid::from_raw(plan.tasks[c].entry.pid);
        match fork_with_pid(cpid) {
            Ok(Forked::Child) => child_main(plan, c),
            Ok(Forked::Parent(_)) => {}
            Err(e) => return Err(format!("fork child {cpid}: {e}")),
        }
    }
    let zombies = &plan.zombie_children[i];
    for &z in zombies {
        let entry = plan.zombies[z];
        let zpid = Pid::from_raw(entry.pid);
        match fork_with_pid(zpid) {
            Ok(Forked::Child) => become_zombie(entry.exit_status),
            Ok(Forked::Parent(_)) => {}
            Err(e) => return Err(format!("fork zombie {zpid}: {e}")),
        }
        // Dead, left unreaped for the restored parent.
        let id = nix::sys::wait::Id::Pid(zpid);
        nix::sys::wait::waitid(
            id,
            nix::sys::wait::WaitPidFlag::WEXITED | nix::sys::wait::WaitPidFlag::WNOWAIT,
        )
        .map_err(|e| format!("wait for zombie {zpid}: {e}"))?;
    }
    if !zombies.is_empty() {
        // Their SIGCHLD belonged to the past the image already holds.
        crate::sys::signal::drain(libc::SIGCHLD).map_err(|e| format!("SIGCHLD: {e}"))?;
    }
    for &d in &descendants {
        let (s, e) = plan.ctl(d);
        let _ = nix::unistd::close(s);
        let _ = nix::unistd::close(e);
    }
    // The unix ends and the objects kept for the children: they have them now.
    for &fd in plan.extra[i].values().chain(&object_slots) {
        let _ = nix::unistd::close(fd);
    }

    signals::restore_actions(&t.core.sigactions).map_err(|e| format!("signal handlers: {e}"))?;
    signals::requeue(&t.core.shared_pending, &t.core.threads[0].pending)
        .map_err(|e| format!("pending signals: {e}"))?;
    map_trampoline(plan.tramps[i]).map_err(|e| format!("trampoline: {e}"))?;
    task::restore_in_child(&t.core)?;
    Ok(())
}

/// A zombie of the image: dies at once the way it died (exit code or signal).
fn become_zombie(status: i32) -> ! {
    let sig = status & 0x7f;
    if sig != 0 {
        let _ = crate::sys::signal::set_action(sig as u32, &Default::default());
        let _ = crate::sys::signal::set_mask(0);
        // SAFETY: sending ourselves the signal that killed the original.
        unsafe { libc::kill(libc::getpid(), sig) };
    }
    // SAFETY: ends this forked process with the original's exit code.
    unsafe { libc::_exit((status >> 8) & 0xff) }
}

fn move_fd(from: RawFd, to: RawFd) -> std::io::Result<()> {
    if from == to {
        return Ok(());
    }
    // SAFETY: dup2/close on fd numbers this process owns; no OwnedFd refers to them any more.
    unsafe {
        if libc::dup2(from, to) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        libc::close(from);
    }
    Ok(())
}

fn place(fd: OwnedFd, at: u64) -> std::result::Result<(), String> {
    let raw = std::os::fd::IntoRawFd::into_raw_fd(fd);
    move_fd(raw, at as RawFd).map_err(|e| format!("fd {at}: {e}"))
}

/// Two pages at `addr`: `syscall; int3` and the batch loop (read-execute), then a writable
/// scratch page.
fn map_trampoline(addr: u64) -> std::io::Result<()> {
    use nix::sys::mman::{mmap_anonymous, mprotect, MapFlags, ProtFlags};
    let len =
        std::num::NonZeroUsize::new(2 * PAGE as usize).ok_or(std::io::ErrorKind::InvalidInput)?;
    let at = std::num::NonZeroUsize::new(addr as usize);
    // SAFETY: a fixed mapping at an address cryo checked is unused in this process
    // (MAP_FIXED_NOREPLACE fails rather than replace anything).
    let ptr = unsafe {
        mmap_anonymous(
            at,
            len,
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            MapFlags::MAP_PRIVATE | MapFlags::MAP_FIXED_NOREPLACE,
        )
    }?;
    // SAFETY: bytes at the start of the page we just mapped (the loop ends well inside it),
    // owned by nobody else.
    unsafe {
        std::ptr::copy_nonoverlapping(
            SYSCALL_INT3.as_ptr(),
            ptr.as_ptr().cast(),
            SYSCALL_INT3.len(),
        );
        std::ptr::copy_nonoverlapping(
            BATCH_LOOP.as_ptr(),
            ptr.as_ptr().cast::<u8>().add(BATCH_LOOP_OFFSET as usize),
            BATCH_LOOP.len(),
        );
        mprotect(
            ptr,
            PAGE as usize,
            ProtFlags::PROT_READ | ProtFlags::PROT_EXEC,
        )?;
    }
    Ok(())
}
