//! The plan of a restore's tree, worked out before the first fork and without touching
//! anything: the creation order (parents before children), who forks whom, which fd numbers
//! hold the control pipes, the mapping fds and the slots of shared descriptions, which
//! description each process inherits and where, and each process's trampoline address.
//! Pure: every fact about cryo itself (its highest fd, its mappings, the shared objects it
//! made) comes in as [`PlanInput`], so the plan is unit-tested on hand-built images.
//!
//! ```text
//! fd numbers of every process of the tree, from `base` up:
//!   base + 2i, base + 2i + 1    sync and err pipe of task i (kept until i is forked)
//!   first_mapping ..            per task: pages, exe, mapped files (MappingFds)
//!   extra_base ..               slots: descriptions passed down through tasks that do not
//!                               hold them, then the shared objects, then the terminal,
//!                               then the fds of cryo's caller (--inherit-fd),
//!                               then the restore guardian's channel, the pid broker's
//!                               socket, the image directory, the IPC namespaces
//! ```

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ops::Range;
use std::os::fd::RawFd;

use cryo_proto::image::{FileDesc, MmCore, ProcessEntry, VmaKind};

use super::error::RestoreError;
use super::load::{forked_by, TaskImage};
use super::stand_in::StandIns;
use crate::files;
use crate::memory::restore::{needs_writable_file, MappingFds};
use crate::memory::PAGE;

/// What the plan is made from: the images, and the facts about cryo it must avoid.
pub(crate) struct PlanInput<'a> {
    /// The root pids (the inventory's).
    pub roots: &'a [i32],
    /// The live processes of the image, in image order.
    pub tasks: &'a [TaskImage],
    /// The zombies of the image.
    pub zombies: &'a [ProcessEntry],
    /// Every description of the image.
    pub descs: &'a [FileDesc],
    /// The unix sockets made together and what they carry.
    pub links: &'a crate::sockets::UnixLinks,
    /// The highest fd number cryo holds now.
    pub cryo_max_fd: RawFd,
    /// cryo's own mappings.
    pub cryo_maps: &'a [Range<u64>],
    /// The dumped inodes of the shared memory objects cryo made, in slot order.
    pub shared_inodes: &'a [u64],
    /// Whether cryo holds a terminal for a shell job.
    pub terminal: bool,
    /// The descriptions taken from fds of cryo's caller (`--inherit-fd`): made by no process
    /// (each holder opens them from a slot), each fd given held at a slot.
    pub given: &'a files::inherit::Given,
}

/// What every process of the tree needs. Task indices are positions in [`order`]
/// (creation order), not in the image.
///
/// [`order`]: TreePlan::order
#[derive(Debug)]
pub(crate) struct TreePlan {
    /// Creation order: per position, the task's index in the image's list.
    pub order: Vec<usize>,
    /// The first control fd number.
    pub base: RawFd,
    /// Per task: its children (task positions) and zombie children (indices of zombies).
    pub children: Vec<Vec<usize>>,
    pub zombie_children: Vec<Vec<usize>>,
    /// Per task: descriptions it inherits from its parent, id -> the parent's fd number.
    pub inherited: Vec<HashMap<u32, RawFd>>,
    /// Per task: descriptions it creates without holding them (the other end of a unix pair,
    /// for its children), id -> the fd number it keeps them at until its children are forked.
    pub extra: Vec<HashMap<u32, RawFd>>,
    /// Per task: the trampoline address and its mapping fds.
    pub tramps: Vec<u64>,
    pub mappings: Vec<MappingFds>,
    /// The roots' positions.
    pub roots: Vec<usize>,
    /// Descriptions shared by different roots' trees: cryo makes each set (a unix pair, or
    /// files and pipes) and holds them at these slot numbers while it forks the roots.
    pub cryo_sets: Vec<CryoSet>,
    pub cryo_slots: HashMap<u32, RawFd>,
    /// The slot fd of each shared memory object (dumped inode -> fd number in the tree).
    pub shared_slots: HashMap<u64, RawFd>,
    /// The slot fd of the shell job's terminal.
    pub terminal_slot: Option<RawFd>,
    /// The slot fds of the fds of cryo's caller that descriptions are taken from
    /// (`--inherit-fd`), in their order.
    pub given_slots: Vec<RawFd>,
    /// The slot fd of the restore guardian's channel (used when there is a guardian).
    pub guardian_slot: RawFd,
    /// The slot fd of the pid broker's socket (used when there is a broker).
    pub pid_broker_slot: RawFd,
    /// The slot fd of the image directory (a process whose mount namespace does not show
    /// its path reads the image through it).
    pub images_slot: RawFd,
    /// The slot fd where each process holds its parent's root directory, through which it
    /// opens the files its holder had open in its parent's mount namespace before making its
    /// own (files::open::hold_parent_root).
    pub parent_root_slot: RawFd,
    /// The first slot fd of the IPC namespaces cryo made (crate::ipc::Restored::fds).
    pub ipc_slot: RawFd,
    /// The processes that stand in for session and group leaders that had exited.
    pub stand_ins: StandIns,
    /// Per task: its parent's position (None for a root).
    pub parent: Vec<Option<usize>>,
    /// Per task: the task whose fd table it has (itself, or the topmost of a chain of
    /// children sharing their parent's table, CLONE_FILES).
    pub table_owner: Vec<usize>,
}

impl TreePlan {
    /// Orders the tree and assigns every control, mapping and slot fd.
    pub fn new(input: &PlanInput<'_>) -> Result<Self, RestoreError> {
        let PlanInput {
            roots,
            tasks,
            zombies,
            descs,
            links,
            ..
        } = *input;
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
                .ok_or(RestoreError::RootNotInImage { pid: r })?;
            root_idx.push(i);
        }
        order.extend(&root_idx);
        let mut k = 0;
        while k < order.len() {
            let pid = tasks[order[k]].entry.pid;
            let mut kids: Vec<usize> = tasks
                .iter()
                .enumerate()
                .filter(|(_, t)| {
                    forked_by(&t.entry) == pid && !root_idx.contains(&by_pid[&t.entry.pid])
                })
                .map(|(i, _)| i)
                .collect();
            kids.sort_by_key(|&i| tasks[i].entry.pid);
            order.extend(kids);
            k += 1;
        }
        if order.len() != tasks.len() {
            return Err(RestoreError::Unreached {
                unreached: tasks.len().abs_diff(order.len()),
                total: tasks.len(),
                roots: roots.to_vec(),
            });
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
            if let Some(&p) = pos.get(&forked_by(&t.entry)) {
                if !roots.contains(&t.entry.pid) {
                    children[p].push(i);
                }
            }
        }
        for (z, entry) in zombies.iter().enumerate() {
            let p = *pos.get(&entry.ppid).ok_or(RestoreError::OrphanZombie {
                pid: entry.pid,
                ppid: entry.ppid,
            })?;
            zombie_children[p].push(z);
        }
        let parent: Vec<Option<usize>> = ordered
            .iter()
            .map(|t| {
                if roots.contains(&t.entry.pid) {
                    None
                } else {
                    pos.get(&forked_by(&t.entry)).copied()
                }
            })
            .collect();
        // The process whose fd table each has: itself, or its parent's table's owner when it
        // shares its parent's (CLONE_FILES).
        let mut table_owner: Vec<usize> = (0..n).collect();
        for (i, t) in ordered.iter().enumerate() {
            if t.core.files_of_parent || t.core.fs_of_parent {
                let Some(p) = parent[i] else {
                    return Err(RestoreError::SharesWithoutParent { pid: t.entry.pid });
                };
                if t.core.files_of_parent {
                    table_owner[i] = table_owner[p];
                }
            }
        }
        // An end of a pipe taken from an fd of cryo's caller is made by nobody: no member of
        // a set made together (it is handed down as a single when several processes share it).
        let together: Vec<Vec<u32>> = files::made_together(descs, links)
            .into_iter()
            .map(|set| {
                set.into_iter()
                    .filter(|&id| !input.given.contains(id))
                    .collect::<Vec<u32>>()
            })
            .filter(|set| !set.is_empty())
            .collect();
        let (inherited, extra_slots, cryo_sets) =
            plan_inheritance(&ordered, &parent, &table_owner, links, &together, descs)?;
        // Above every fd of the image and every fd cryo holds now.
        let image_max = ordered
            .iter()
            .flat_map(|t| t.core.fds.iter().map(|e| e.fd))
            .max()
            .unwrap_or(2);
        // Room for the pipes cryo is about to create below the base.
        let base = image_max.max(input.cryo_max_fd + 4 * n as RawFd + 8) + 1;
        // Above the control pipes and the "done" pipes.
        let first_mapping = (base + 4 * n as RawFd) as u64;
        // Processes sharing one fd table place their mapping fds one after the other in it.
        let mut next_mapping: HashMap<usize, u64> = HashMap::new();
        let mappings: Vec<MappingFds> = ordered
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let first = next_mapping
                    .get(&table_owner[i])
                    .copied()
                    .unwrap_or(first_mapping);
                let m = mapping_fds(t, first);
                let end = m.all().into_iter().max().map_or(first, |fd| fd + 1);
                next_mapping.insert(table_owner[i], end);
                m
            })
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
        let shared_slots: HashMap<u64, RawFd> = input
            .shared_inodes
            .iter()
            .copied()
            .zip(shared_base..)
            .collect();
        let terminal_slot = input
            .terminal
            .then_some(shared_base + input.shared_inodes.len() as RawFd);
        let given_base = shared_base + input.shared_inodes.len() as RawFd + 1;
        let given_slots: Vec<RawFd> = (0..input.given.fds().len() as RawFd)
            .map(|k| given_base + k)
            .collect();
        let guardian_slot = given_base + given_slots.len() as RawFd;
        let mut extra = vec![HashMap::new(); n];
        let mut cryo_slots = HashMap::new();
        for (k, &(p, id)) in extra_slots.iter().enumerate() {
            if p == CRYO {
                cryo_slots.insert(id, slot_fd(k));
            } else {
                extra[p].insert(id, slot_fd(k));
            }
        }
        let entries: Vec<&ProcessEntry> = ordered.iter().map(|t| &t.entry).collect();
        let stand_ins =
            StandIns::plan(&entries, zombies, &(0..root_idx.len()).collect::<Vec<_>>())?;
        let tramps = ordered
            .iter()
            .map(|t| {
                pick_trampoline(&t.mm, input.cryo_maps)
                    .ok_or(RestoreError::NoTrampolineAddress { pid: t.entry.pid })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            order,
            base,
            children,
            zombie_children,
            inherited,
            extra,
            tramps,
            mappings,
            roots: (0..root_idx.len()).collect(),
            stand_ins,
            parent,
            table_owner,
            cryo_sets,
            cryo_slots,
            shared_slots,
            terminal_slot,
            given_slots,
            guardian_slot,
            pid_broker_slot: guardian_slot + 1,
            images_slot: guardian_slot + 2,
            parent_root_slot: guardian_slot + 3,
            ipc_slot: guardian_slot + 4,
        })
    }

    /// The sync and err fd numbers of task `i` inside the tree.
    pub fn ctl(&self, i: usize) -> (RawFd, RawFd) {
        (self.base + 2 * i as RawFd, self.base + 2 * i as RawFd + 1)
    }

    /// The read and write ends of the pipe on which task `i`'s children that share its fd
    /// table or fs_struct say they have forked theirs.
    pub fn done_pipe(&self, i: usize) -> (RawFd, RawFd) {
        let n = self.order.len() as RawFd;
        (
            self.base + 2 * n + 2 * i as RawFd,
            self.base + 2 * n + 2 * i as RawFd + 1,
        )
    }

    /// Every task below task `i` whose control fds task `i` closes once its children are
    /// forked: the ones below a child sharing its fd table close their own (that child
    /// forks them, from the same table).
    pub fn closes_ctl_of(&self, i: usize) -> Vec<usize> {
        let mut out = Vec::new();
        let mut stack: Vec<usize> = self.children[i]
            .iter()
            .copied()
            .filter(|&c| self.table_owner[c] != self.table_owner[i])
            .collect();
        while let Some(c) = stack.pop() {
            out.push(c);
            stack.extend(&self.children[c]);
        }
        out
    }

    /// Every task below task `i`.
    pub fn descendants(&self, i: usize) -> Vec<usize> {
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
pub(crate) const CRYO: usize = usize::MAX;

/// Where a child finds a description it inherits: at the parent's own fd number, or in the
/// parent's n-th extra slot.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Inherit {
    Fd(RawFd),
    Slot(usize),
}

/// What cryo itself makes for trees that share it.
#[derive(Debug)]
pub(crate) enum CryoSet {
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
/// queues carry in flight ([`crate::sockets::UnixLinks::components`]), are made once, by the lowest
/// common ancestor of every task holding one of them (cryo itself for a plain pair whose
/// holders are in different roots' trees): from there each description travels down to its
/// holders, at the fd number of a task on the way that holds it, else in extra slots (a task
/// on the way that holds none only passes them on).
fn plan_inheritance(
    ordered: &[&TaskImage],
    parent: &[Option<usize>],
    table_owner: &[usize],
    links: &crate::sockets::UnixLinks,
    together: &[Vec<u32>],
    descs: &[FileDesc],
) -> Result<InheritPlan, RestoreError> {
    let n = ordered.len();
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
    let index_of: HashMap<i32, usize> = ordered
        .iter()
        .enumerate()
        .map(|(i, t)| (t.entry.pid, i))
        .collect();
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
        // Besides the holders, a process that needs the set made before it goes on (a session
        // leader taking a pty it holds no fd on): made at or above it too.
        let needing = files::needed_by(descs, component)
            .into_iter()
            .filter_map(|pid| index_of.get(&pid).copied());
        let mut tasks = held.iter().map(|&(h, _)| h).chain(needing);
        let Some(first) = tasks.next() else { continue };
        // The lowest common ancestor; None: the holders are in different roots' trees.
        let mut maker = Some(first);
        for h in tasks {
            maker = maker.and_then(|m| common_ancestor(parent, &depth, m, h));
        }
        let maker = match maker {
            // A task sharing its parent's fd table restores no fd of its own: the table's
            // owner makes what it would (its children find it in the same table).
            Some(m) => table_owner[m],
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
                    return Err(RestoreError::SharedAcrossTrees {
                        pids: pids.into_iter().collect(),
                    });
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
                let passed_on = (from != CRYO && table_owner[from] != from)
                    .then(|| inherited[from].get(&x).copied())
                    .flatten();
                let inherit = match (fd_of.get(from).and_then(|m| m.get(&x)), passed_on) {
                    (Some(&fd), _) => Inherit::Fd(fd),
                    // In its parent's table, where that parent's parent put it.
                    (None, Some(at)) => at,
                    (None, None) => Inherit::Slot(*slot_of.entry((from, x)).or_insert_with(|| {
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
        sockets: task
            .mm
            .vmas
            .iter()
            .filter(|v| v.kind == VmaKind::PacketRing as i32)
            .filter_map(|v| {
                let held = task.core.fds.iter().find(|e| e.file_id == v.file_id)?;
                Some((v.file_id, held.fd as u64))
            })
            .collect(),
    }
}

/// Where the trampoline goes: two pages used neither by the image (`mm`) nor by cryo (its
/// mappings `ours`), 4 MiB away from both.
pub(crate) fn pick_trampoline(mm: &MmCore, ours: &[Range<u64>]) -> Option<u64> {
    const GUARD: u64 = 4 << 20;
    let free = |a: u64| {
        let b = a + 2 * PAGE;
        !mm.vmas
            .iter()
            .any(|v| v.start < b + GUARD && a < v.end + GUARD)
            && !ours
                .iter()
                .any(|m| m.start < b + GUARD && a < m.end + GUARD)
    };
    (1u64..1 << 16).map(|i| i << 30).find(|&a| free(a))
}

#[cfg(test)]
mod tests {
    use cryo_proto::image::file_desc::Kind;
    use cryo_proto::image::{FdEntry, Pipe, RegularFile, TaskCore, Vma};

    use super::*;

    /// A live process of a hand-built image: `pid` child of `ppid`, holding `fds`
    /// ((fd, description id) each).
    fn task(pid: i32, ppid: i32, fds: &[(i32, u32)]) -> TaskImage {
        TaskImage {
            entry: ProcessEntry {
                pid,
                ppid,
                pgid: pid,
                sid: pid,
                ..Default::default()
            },
            core: TaskCore {
                pid,
                fds: fds
                    .iter()
                    .map(|&(fd, file_id)| FdEntry {
                        fd,
                        file_id,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            },
            mm: MmCore {
                pid,
                ..Default::default()
            },
            pages: None,
        }
    }

    fn zombie(pid: i32, ppid: i32) -> ProcessEntry {
        ProcessEntry {
            pid,
            ppid,
            zombie: true,
            ..Default::default()
        }
    }

    fn regular(id: u32) -> FileDesc {
        FileDesc {
            id,
            kind: Some(Kind::Regular(RegularFile {
                path: format!("/tmp/file-{id}"),
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    fn pipe_end(id: u32, ino: u64) -> FileDesc {
        FileDesc {
            id,
            kind: Some(Kind::Pipe(Pipe {
                ino,
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    struct Image {
        roots: Vec<i32>,
        tasks: Vec<TaskImage>,
        zombies: Vec<ProcessEntry>,
        descs: Vec<FileDesc>,
        links: crate::sockets::UnixLinks,
    }

    impl Image {
        fn new(roots: &[i32], tasks: Vec<TaskImage>, descs: Vec<FileDesc>) -> Self {
            Self {
                roots: roots.to_vec(),
                tasks,
                zombies: Vec::new(),
                descs,
                links: crate::sockets::UnixLinks::default(),
            }
        }

        fn plan(&self) -> Result<TreePlan, RestoreError> {
            self.plan_with(10, &[], &[], false)
        }

        fn plan_with(
            &self,
            cryo_max_fd: RawFd,
            cryo_maps: &[Range<u64>],
            shared_inodes: &[u64],
            terminal: bool,
        ) -> Result<TreePlan, RestoreError> {
            TreePlan::new(&PlanInput {
                roots: &self.roots,
                tasks: &self.tasks,
                zombies: &self.zombies,
                descs: &self.descs,
                links: &self.links,
                cryo_max_fd,
                cryo_maps,
                shared_inodes,
                terminal,
                given: &files::inherit::Given::default(),
            })
        }
    }

    #[test]
    fn parents_come_before_children_roots_first() {
        // 100 -> {120, 110 -> 111}; 200 a second root. Image order shuffled.
        let image = Image::new(
            &[100, 200],
            vec![
                task(111, 110, &[]),
                task(200, 1, &[]),
                task(120, 100, &[]),
                task(100, 1, &[]),
                task(110, 100, &[]),
            ],
            Vec::new(),
        );
        let plan = image.plan().unwrap();
        let pids: Vec<i32> = plan
            .order
            .iter()
            .map(|&i| image.tasks[i].entry.pid)
            .collect();
        assert_eq!(pids, [100, 200, 110, 120, 111]);
        assert_eq!(plan.roots, [0, 1]);
        assert_eq!(plan.children, [vec![2, 3], vec![], vec![4], vec![], vec![]]);
        let mut below: Vec<usize> = plan.descendants(0);
        below.sort();
        assert_eq!(below, [2, 3, 4]);
    }

    #[test]
    fn zombies_go_to_their_restored_parent() {
        let mut image = Image::new(
            &[100],
            vec![task(100, 1, &[]), task(110, 100, &[])],
            Vec::new(),
        );
        image.zombies = vec![zombie(111, 110), zombie(101, 100)];
        let plan = image.plan().unwrap();
        assert_eq!(plan.zombie_children, [vec![1], vec![0]]);
        image.zombies.push(zombie(300, 299));
        assert!(matches!(
            image.plan(),
            Err(RestoreError::OrphanZombie {
                pid: 300,
                ppid: 299
            })
        ));
    }

    #[test]
    fn a_tree_that_does_not_add_up_is_refused() {
        let missing_root = Image::new(&[5], vec![task(100, 1, &[])], Vec::new());
        assert!(matches!(
            missing_root.plan(),
            Err(RestoreError::RootNotInImage { pid: 5 })
        ));
        let unreached = Image::new(
            &[100],
            vec![task(100, 1, &[]), task(300, 1, &[])],
            Vec::new(),
        );
        assert!(matches!(
            unreached.plan(),
            Err(RestoreError::Unreached {
                unreached: 1,
                total: 2,
                ..
            })
        ));
    }

    #[test]
    fn control_and_mapping_fds_sit_above_everything() {
        let mut parent = task(100, 1, &[(3, 1), (40, 2)]);
        parent.mm.vmas = vec![
            Vma {
                start: 0x1000,
                end: 0x2000,
                kind: VmaKind::FilePrivate as i32,
                file_id: 1,
                ..Default::default()
            },
            Vma {
                start: 0x3000,
                end: 0x4000,
                kind: VmaKind::FileShared as i32,
                map_flags: libc::MAP_SHARED as u32,
                prot: (libc::PROT_READ | libc::PROT_WRITE) as u32,
                file_id: 2,
                ..Default::default()
            },
            Vma {
                start: 0x5000,
                end: 0x6000,
                kind: VmaKind::Anon as i32,
                ..Default::default()
            },
        ];
        let image = Image::new(
            &[100],
            vec![parent, task(110, 100, &[])],
            vec![regular(1), regular(2)],
        );
        // cryo's highest fd (10) + room for 4 pipe fds per task + 8 stays under the image's 40.
        let plan = image.plan_with(10, &[], &[77, 78], true).unwrap();
        assert_eq!(plan.base, 41);
        assert_eq!((plan.ctl(0), plan.ctl(1)), ((41, 42), (43, 44)));
        assert_eq!((plan.done_pipe(0), plan.done_pipe(1)), ((45, 46), (47, 48)));
        let m = &plan.mappings[0];
        assert_eq!((m.pages, m.exe), (49, 50));
        assert_eq!(m.files, [(1, false, 51), (2, true, 52)]);
        let m = &plan.mappings[1];
        assert_eq!((m.pages, m.exe, m.files.len()), (49, 50, 0));
        // Shared objects after the last mapping fd, then the terminal.
        assert_eq!(plan.shared_slots[&77], 53);
        assert_eq!(plan.shared_slots[&78], 54);
        assert_eq!(plan.terminal_slot, Some(55));
        // A cryo holding many fds pushes the base up.
        let plan = image.plan_with(100, &[], &[], false).unwrap();
        assert_eq!(plan.base, 100 + 4 * 2 + 8 + 1);
        assert_eq!(plan.terminal_slot, None);
    }

    #[test]
    fn children_sharing_the_fd_table_place_their_mapping_fds_apart_and_close_their_own() {
        // 100 -> 110 (its table) -> 120 (its own), 100 -> 130 (its own).
        let mut b = task(110, 100, &[(3, 1)]);
        b.core.files_of_parent = true;
        let image = Image::new(
            &[100],
            vec![
                task(100, 1, &[(3, 1)]),
                b,
                task(120, 110, &[(3, 1)]),
                task(130, 100, &[]),
            ],
            vec![regular(1)],
        );
        let plan = image.plan_with(10, &[], &[], false).unwrap();
        assert_eq!(plan.table_owner, [0, 0, 2, 3], "order: 100, 110, 130, 120");
        let first = |i: usize| plan.mappings[i].pages;
        // In one table: one after the other; in their own: the same numbers.
        assert_eq!(first(1), first(0) + 2);
        assert_eq!((first(2), first(3)), (first(0), first(0)));
        // 100 closes 130's control fds (its table is a copy), not 120's: 110 forks 120 from
        // the shared table and closes them.
        assert_eq!(plan.closes_ctl_of(0), [2]);
        assert_eq!(plan.closes_ctl_of(1), [3]);
    }

    #[test]
    fn a_root_said_to_share_its_parents_table_is_refused() {
        let mut root = task(100, 1, &[]);
        root.core.files_of_parent = true;
        let image = Image::new(&[100], vec![root], vec![]);
        let err = image.plan_with(10, &[], &[], false).unwrap_err();
        assert!(err.to_string().contains("pid 100 is a root"), "{err}");
    }

    #[test]
    fn a_description_shared_with_the_parent_is_inherited_at_its_number() {
        let image = Image::new(
            &[100],
            vec![task(100, 1, &[(3, 1)]), task(110, 100, &[(7, 1)])],
            vec![regular(1)],
        );
        let plan = image.plan().unwrap();
        assert_eq!(plan.inherited[1], HashMap::from([(1, 3)]));
        assert!(plan.inherited[0].is_empty());
        assert!(plan.extra.iter().all(HashMap::is_empty));
        assert!(plan.cryo_sets.is_empty());
    }

    #[test]
    fn pipe_ends_of_siblings_are_made_by_their_parent() {
        // 110 reads, 120 writes; the parent 100 holds neither end: it makes the pipe, keeps
        // both ends in slots until its children are forked, each child inherits its end.
        let image = Image::new(
            &[100],
            vec![
                task(100, 1, &[]),
                task(110, 100, &[(3, 10)]),
                task(120, 100, &[(4, 11)]),
            ],
            vec![pipe_end(10, 7), pipe_end(11, 7)],
        );
        let plan = image.plan().unwrap();
        let slots = &plan.extra[0];
        assert_eq!(slots.len(), 2);
        assert_eq!(plan.inherited[1], HashMap::from([(10, slots[&10])]));
        assert_eq!(plan.inherited[2], HashMap::from([(11, slots[&11])]));
        // The slots lie above every control and mapping fd.
        let highest = plan.mappings.iter().flat_map(|m| m.all()).max().unwrap();
        assert!(slots.values().all(|&s| s as u64 > highest));
    }

    #[test]
    fn a_pipe_end_given_by_cryos_caller_is_handed_down_from_a_slot_after_the_terminal() {
        // 110 and 120 share the read end 10, which stands for an fd of cryo's caller
        // (--inherit-fd): their parent takes it from the slot every process holds and hands
        // it down as any description siblings share.
        let image = Image::new(
            &[100],
            vec![
                task(100, 1, &[]),
                task(110, 100, &[(3, 10)]),
                task(120, 100, &[(4, 10)]),
            ],
            vec![pipe_end(10, 7)],
        );
        let given = files::inherit::Given::for_tests(&[(10, 0)], &[0]);
        let plan = TreePlan::new(&PlanInput {
            roots: &image.roots,
            tasks: &image.tasks,
            zombies: &image.zombies,
            descs: &image.descs,
            links: &image.links,
            cryo_max_fd: 10,
            cryo_maps: &[],
            shared_inodes: &[77],
            terminal: true,
            given: &given,
        })
        .unwrap();
        let slot = plan.extra[0][&10];
        assert_eq!(plan.inherited[1], HashMap::from([(10, slot)]));
        assert_eq!(plan.inherited[2], HashMap::from([(10, slot)]));
        // After the shared object and the terminal; the guardian's channel after it.
        let terminal = plan.terminal_slot.unwrap();
        assert_eq!(plan.shared_slots[&77], terminal - 1);
        assert_eq!(plan.given_slots, [terminal + 1]);
        assert_eq!(plan.guardian_slot, terminal + 2);
    }

    #[test]
    fn a_file_shared_by_two_trees_is_opened_by_cryo() {
        let image = Image::new(
            &[100, 200],
            vec![task(100, 1, &[(3, 1)]), task(200, 1, &[(5, 1)])],
            vec![regular(1)],
        );
        let plan = image.plan().unwrap();
        assert!(matches!(&plan.cryo_sets[..], [CryoSet::Plain(ids)] if ids == &[1]));
        let slot = plan.cryo_slots[&1];
        assert_eq!(plan.inherited[0], HashMap::from([(1, slot)]));
        assert_eq!(plan.inherited[1], HashMap::from([(1, slot)]));
    }

    #[test]
    fn common_ancestors() {
        // 0 -> {1 -> 3, 2}; 4 another tree.
        let parent = [None, Some(0), Some(0), Some(1), None];
        let depth = [0, 1, 1, 2, 0];
        assert_eq!(common_ancestor(&parent, &depth, 3, 2), Some(0));
        assert_eq!(common_ancestor(&parent, &depth, 3, 1), Some(1));
        assert_eq!(common_ancestor(&parent, &depth, 3, 3), Some(3));
        assert_eq!(common_ancestor(&parent, &depth, 3, 4), None);
    }

    #[test]
    fn the_trampoline_keeps_clear_of_the_image_and_of_cryo() {
        const GIB: u64 = 1 << 30;
        let mut mm = MmCore::default();
        assert_eq!(pick_trampoline(&mm, &[]), Some(GIB));
        mm.vmas.push(Vma {
            start: GIB + (8 << 20),
            end: GIB + (9 << 20),
            ..Default::default()
        });
        // Within 4 MiB of a VMA's end counts as taken.
        mm.vmas.push(Vma {
            start: GIB,
            end: 2 * GIB - (2 << 20),
            ..Default::default()
        });
        assert_eq!(pick_trampoline(&mm, &[]), Some(3 * GIB));
        let cryo = vec![Range {
            start: 3 * GIB,
            end: 3 * GIB + 1,
        }];
        assert_eq!(pick_trampoline(&mm, &cryo), Some(4 * GIB));
    }
}
