//! Restore side, in the forked child: every description of a task opened by its kind
//! (kind.rs: FileKind::open), moved above the highest target number, then dup3'd onto the
//! target numbers, and every other fd closed.
//!
//! ```text
//!   inherited descriptions      F_DUPFD_CLOEXEC of the parent's fd, above the targets
//!   each other description      FileKind::open -> an fd now (moved above the targets),
//!                               or with the others of its kind (pipes, sockets: open_together),
//!                               or after placement (epoll: place_after)
//!   unix sockets made together  pairs and listeners with their waiting connections, queues
//!                               refilled once what they carry in flight is open
//!   placing                     dup3 onto the target numbers (FD_CLOEXEC as dumped), the
//!                               temporaries closed, close_range every other fd except `keep`
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use cryo_proto::image::{FdEntry, FileDesc};
use nix::fcntl::{FcntlArg, OFlag};
use tracing::debug;

use super::error::restore_err;
use super::kind::{self, KindState, MapOpen, Opened};
use super::validate::{check_fds, index};
use super::{sys, FileError, UnixLinks};
use crate::image::ImageDir;

#[cfg(any(test, feature = "internals"))]
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

/// One restore call's work in progress, as the kinds see it: what is open so far, above
/// every target number, and where.
pub(crate) struct Opening<'a> {
    /// The image directory (ghost and memfd contents).
    pub images: &'a ImageDir,
    /// How fds are restored (shared objects, the terminal, --tcp-close).
    pub opts: &'a FdRestoreOptions,
    /// The unix sockets made together.
    pub links: &'a UnixLinks,
    /// What the kinds keep for this call (recreated ghosts, memfds): dropped before placing,
    /// since its fds may sit on target numbers.
    pub state: KindState,
    /// The descriptions open so far, at or above `min_high`.
    opened: HashMap<u32, OwnedFd>,
    /// Above every target number.
    min_high: RawFd,
    /// The fds of the task using each description.
    uses: HashMap<u32, Vec<&'a FdEntry>>,
    /// Target numbers already placed.
    placed: HashSet<RawFd>,
}

impl<'a> Opening<'a> {
    fn new(
        images: &'a ImageDir,
        opts: &'a FdRestoreOptions,
        links: &'a UnixLinks,
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

    /// Puts `fd`, open for `desc`, at the number of the one fd that uses it when that number
    /// is free and nothing carries `desc` in flight (a server with thousands of connections
    /// then never holds twice as many fds); else holds it.
    pub(crate) fn place_or_hold(&mut self, desc: &FileDesc, fd: OwnedFd) -> Result<(), FileError> {
        match self.uses.get(&desc.id).map(Vec::as_slice) {
            Some([e]) if e.fd > 2 && !sys::fd_is_open(e.fd) && !self.links.is_carried(desc.id) => {
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

    /// Opens `desc` by its kind; returns the descriptions left for a later step.
    fn open(
        &mut self,
        desc: &'a FileDesc,
        together: &mut BTreeMap<usize, Vec<&'a FileDesc>>,
        after: &mut BTreeMap<usize, Vec<&'a FileDesc>>,
    ) -> Result<(), FileError> {
        let (at, k) = kind::position_of(desc)?;
        match k.open(desc, self)? {
            Opened::Now(fd) => {
                debug!(id = desc.id, what = %k.describe(desc), "description opened");
                self.hold(desc, fd)?;
            }
            Opened::Together => together.entry(at).or_default().push(desc),
            Opened::AfterPlacement => after.entry(at).or_default().push(desc),
            Opened::Elsewhere => {}
        }
        Ok(())
    }
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
    // What is made together here is made whole (the ends of an anonymous pipe): its other
    // members go to whoever holds them.
    for ends in kind::made_together(descs) {
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
    let mut cx = Opening::new(images, opts, links, fds, min_high);
    cx.opened.reserve(to_open.len());
    let mut together = BTreeMap::new();
    let mut after = BTreeMap::new();
    for id in &to_open {
        let desc = by_id[id];
        if let Some(&parent_fd) = opts.inherited.get(id) {
            // An fd this process inherited and keeps open until placing is over.
            let fd = sys::dup_at_least(sys::borrow_raw(parent_fd), min_high)
                .map_err(|e| restore_err(desc, "F_DUPFD_CLOEXEC (inherited)", e))?;
            debug!(id, what = %kind::describe(desc), "description inherited");
            cx.opened.insert(*id, fd);
            continue;
        }
        cx.open(desc, &mut together, &mut after)?;
    }
    // In the order of the registry: pipes, then sockets (listeners, connections, udp).
    for (at, group) in &together {
        kind::KINDS[*at].open_together(group, &mut cx)?;
    }
    // Unix sockets made together, their queues refilled with what they carry in flight.
    links.make_all(&by_id, &to_open, &mut cx.opened, min_high)?;
    let Opening {
        state,
        mut opened,
        placed,
        ..
    } = cx;
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
    drop(state);
    debug!(fds = fds.len(), descriptions = opened.len(), "placing fds");
    // From here on: no logging (fd 2 is being replaced).
    for e in fds {
        if placed.contains(&e.fd) {
            continue;
        }
        let Some(src) = opened.get(&e.file_id) else {
            continue; // placed after the others, below
        };
        place_at(src.as_fd(), e)?;
    }
    drop(opened);
    for (at, group) in &after {
        kind::KINDS[*at].place_after(group, fds, min_high)?;
    }
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

/// The sets of descriptions that one process must make together and hand down to the others
/// holding them: unix sockets made together with what their queues carry in flight, and the
/// ends of an anonymous pipe. Overlapping sets are joined; each set sorted, the sets in order.
pub(crate) fn made_together(descs: &[FileDesc], links: &UnixLinks) -> Vec<Vec<u32>> {
    let mut sets: Vec<Vec<u32>> = links.group_sets().collect();
    sets.extend(kind::made_together(descs));
    join_overlapping(sets)
}

/// Whether a description of this kind can be opened by a process that does not hold it (or
/// by cryo itself) and handed down: files, directories, devices, pipes and FIFOs. Others
/// (epoll, signalfd, sockets...) depend on the process that makes them.
pub(crate) fn can_hand_down(desc: &FileDesc) -> bool {
    kind::of_desc(desc).is_ok_and(|k| k.hand_down())
}

/// Opens, in cryo itself, the descriptions of `ids` (all of kinds [`can_hand_down`]) for
/// processes in different trees that share them: (id, fd) each.
pub(crate) fn open_in_cryo(
    descs: &[FileDesc],
    ids: &[u32],
    images: &ImageDir,
) -> Result<Vec<(u32, OwnedFd)>, FileError> {
    let by_id = index(descs)?;
    let opts = FdRestoreOptions::default();
    let links = UnixLinks::default();
    let mut cx = Opening::new(images, &opts, &links, &[], 0);
    let mut together = BTreeMap::new();
    let mut after = BTreeMap::new();
    for id in ids {
        let desc = by_id.get(id).copied().ok_or(FileError::Invalid {
            id: *id,
            detail: "no such description".into(),
        })?;
        if !can_hand_down(desc) {
            return Err(FileError::Invalid {
                id: *id,
                detail: format!(
                    "{} cannot be made by cryo for two trees",
                    kind::describe(desc)
                ),
            });
        }
        cx.open(desc, &mut together, &mut after)?;
    }
    for (at, group) in &together {
        kind::KINDS[*at].open_together(group, &mut cx)?;
    }
    Ok(ids
        .iter()
        .filter_map(|id| cx.opened.remove(id).map(|fd| (*id, fd)))
        .collect())
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

/// Puts `fd` at the number of fd entry `e`, with its FD_CLOEXEC.
pub(crate) fn place_at(fd: BorrowedFd<'_>, e: &FdEntry) -> Result<(), FileError> {
    sys::dup_to(fd, e.fd, e.cloexec).map_err(|source| FileError::Place {
        fd: e.fd,
        id: e.file_id,
        op: "dup3",
        source,
    })
}

/// `fd` moved to a number at or above `min` (it may already be there).
pub(crate) fn above(desc: &FileDesc, fd: OwnedFd, min: RawFd) -> Result<OwnedFd, FileError> {
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

#[cfg(any(test, feature = "internals"))]
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
    let to = MapOpen {
        writable,
        images,
        shared,
    };
    kind::of_desc(desc)?.open_for_mapping(desc, &to)
}

/// open(2) flags to reopen a description with: the dumped ones without creation flags, with
/// O_NOCTTY (the controlling terminal is the session's business) and O_CLOEXEC (the fd is a
/// temporary; the target fd gets its own FD_CLOEXEC). O_ASYNC is set after (see [`set_async`]).
pub(crate) fn open_flags(flags: u32) -> OFlag {
    let drop = libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC | libc::O_CLOEXEC | libc::O_ASYNC;
    OFlag::from_bits_retain((flags as i32 & !drop) | libc::O_NOCTTY | libc::O_CLOEXEC)
}

/// Sets O_ASYNC through F_SETFL (open(2) ignores it) when the description had it.
pub(crate) fn set_async(desc: &FileDesc, fd: &OwnedFd) -> Result<(), FileError> {
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

/// The O_NONBLOCK of a description as the *_NONBLOCK flag of the call that creates its kind
/// (eventfd, timerfd, signalfd: they are all O_NONBLOCK), plus close-on-exec for the temporary.
pub(crate) fn create_flags(desc: &FileDesc) -> libc::c_int {
    let nonblock = desc.flags & libc::O_NONBLOCK as u32 != 0;
    libc::O_CLOEXEC | if nonblock { libc::O_NONBLOCK } else { 0 }
}
