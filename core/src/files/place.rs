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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::fd::{AsFd, OwnedFd, RawFd};

use cryo_proto::image::{file_desc::Kind, FdEntry, FileDesc};
use tracing::debug;

use super::error::restore_err;
use super::kind::{MapOpen, Opened, Opening};
use super::open::{above, place_at, FdRestoreOptions};
use super::registry;
use super::validate::{check_fds, index};
use super::{FileError, UnixLinks};
use crate::sys;
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

/// Opens `desc` by its kind into `cx`; files the descriptions left for a later step, by the
/// place of their kind in the registry.
fn open_by_kind<'a>(
    cx: &mut Opening<'a>,
    desc: &'a FileDesc,
    together: &mut BTreeMap<usize, Vec<&'a FileDesc>>,
    after: &mut BTreeMap<usize, Vec<&'a FileDesc>>,
) -> Result<(), FileError> {
    let (at, k) = registry::position_of(desc)?;
    if let Some(&from) = cx.opts.given.get(&desc.id) {
        // Taken from an fd of cryo's caller (`--inherit-fd`), not made.
        let fd = super::inherit::open(desc, from)?;
        return cx.hold(desc, fd);
    }
    match k.open(desc, cx)? {
        Opened::Now(fd) => {
            debug!(id = desc.id, what = %k.describe(desc), "description opened");
            super::write_hint::restore(desc, fd.as_fd())?;
            cx.hold(desc, fd)?;
        }
        Opened::Together => together.entry(at).or_default().push(desc),
        Opened::AfterPlacement => after.entry(at).or_default().push(desc),
        Opened::Elsewhere => {}
    }
    Ok(())
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
    // (An end taken from an fd of cryo's caller is not made: it is no member.)
    for ends in registry::made_together(descs) {
        let ends: Vec<u32> = ends
            .into_iter()
            .filter(|id| !opts.given.contains_key(id))
            .collect();
        if ends
            .iter()
            .any(|id| to_open.contains(id) && !opts.inherited.contains_key(id))
        {
            to_open.extend(ends);
        }
    }
    if to_open.len() > used.len() {
        sys::fd::raise_nofile();
    }
    let mut cx = Opening::new(images, opts, links, descs, fds, min_high);
    cx.opened.reserve(to_open.len());
    let mut together = BTreeMap::new();
    let mut after = BTreeMap::new();
    // inotify and fanotify instances are made last: each open, read and write of the others
    // (a watched FIFO opened and refilled, a deleted file made again) would queue an event
    // in them, and consume an IN_ONESHOT watch.
    let mut watching = Vec::new();
    for id in &to_open {
        let desc = by_id[id];
        if matches!(desc.kind, Some(Kind::Inotify(_) | Kind::Fanotify(_)))
            && !opts.inherited.contains_key(id)
        {
            watching.push(desc);
            continue;
        }
        if let Some(&parent_fd) = opts.inherited.get(id) {
            // An fd this process inherited and keeps open until placing is over.
            let fd = sys::fd::dup_at_least(sys::fd::borrow_raw(parent_fd), min_high)
                .map_err(|e| restore_err(desc, "F_DUPFD_CLOEXEC (inherited)", e))?;
            debug!(id, what = %registry::describe(desc), "description inherited");
            cx.opened.insert(*id, fd);
            continue;
        }
        open_by_kind(&mut cx, desc, &mut together, &mut after)?;
    }
    // In the order of the registry: pipes, then sockets (listeners, connections, udp).
    for (at, group) in &together {
        registry::KINDS[*at].open_together(group, &mut cx)?;
    }
    // Unix sockets made together, their queues refilled with what they carry in flight.
    links.make_all(
        &by_id,
        &to_open,
        &mut cx.opened,
        fds,
        min_high,
        opts.homes.as_deref(),
    )?;
    for desc in watching {
        open_by_kind(&mut cx, desc, &mut together, &mut after)?;
    }
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
        registry::KINDS[*at].place_after(group, fds, min_high)?;
    }
    let mut keep = keep.to_vec();
    for (fd, at) in &extras {
        sys::fd::dup_to(fd.as_fd(), *at, true).map_err(|source| FileError::Place {
            fd: *at,
            id: 0,
            op: "dup3 (a description kept for a child)",
            source,
        })?;
        keep.push(*at);
    }
    drop(extras);
    close_others(fds, &keep)?;
    renumber_async(fds, &by_id)
}

/// Makes each O_ASYNC description's signal name (si_fd) the number the task holds it at,
/// not the temporary number it was opened at: its lowest fd.
fn renumber_async(fds: &[FdEntry], by_id: &HashMap<u32, &FileDesc>) -> Result<(), FileError> {
    let mut done = BTreeSet::new();
    let mut sorted: Vec<&FdEntry> = fds.iter().collect();
    sorted.sort_by_key(|e| e.fd);
    for e in sorted {
        let is_async = by_id
            .get(&e.file_id)
            .is_some_and(|d| d.flags & libc::O_ASYNC as u32 != 0);
        if !is_async || !done.insert(e.file_id) {
            continue;
        }
        sys::fcntl::renumber_async(sys::fd::borrow_raw(e.fd)).map_err(|source| FileError::Place {
            fd: e.fd,
            id: e.file_id,
            op: "F_SETFL O_ASYNC (its signal's fd number)",
            source,
        })?;
    }
    Ok(())
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
    // cryo makes it in its own namespace, the roots' (one made elsewhere has no maker).
    let homes = crate::sockets::home::Homes::in_roots();
    links.make_all(&by_id, &both, &mut opened, &[], 0, Some(&homes))?;
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
    sets.extend(registry::made_together(descs));
    join_overlapping(sets)
}

/// The processes (dumped pids) besides its holders that need set `set` of
/// [`made_together`] made before they go on: the set is made at or above them.
pub(crate) fn needed_by(descs: &[FileDesc], set: &[u32]) -> Vec<i32> {
    registry::needed_by(descs, set)
}

/// Whether a description of this kind can be opened by a process that does not hold it (or
/// by cryo itself) and handed down: files, directories, devices, pipes and FIFOs. Others
/// (epoll, signalfd, sockets...) depend on the process that makes them.
pub(crate) fn can_hand_down(desc: &FileDesc) -> bool {
    registry::of_desc(desc).is_ok_and(|k| k.hand_down())
}

/// Opens, in cryo itself, the descriptions of `ids` (all of kinds [`can_hand_down`]) for
/// processes in different trees that share them: (id, fd) each. `given`: those taken from
/// cryo's own fds (`--inherit-fd`), at those fds.
pub(crate) fn open_in_cryo(
    descs: &[FileDesc],
    ids: &[u32],
    images: &ImageDir,
    given: &super::inherit::Given,
) -> Result<Vec<(u32, OwnedFd)>, FileError> {
    let by_id = index(descs)?;
    let opts = FdRestoreOptions {
        given: given.at(|k| given.fds()[k]),
        ..FdRestoreOptions::default()
    };
    let links = UnixLinks::default();
    let mut cx = Opening::new(images, &opts, &links, descs, &[], 0);
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
                    registry::describe(desc)
                ),
            });
        }
        open_by_kind(&mut cx, desc, &mut together, &mut after)?;
    }
    for (at, group) in &together {
        registry::KINDS[*at].open_together(group, &mut cx)?;
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
    sys::fd::close_range(first, last).map_err(|source| FileError::Place {
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
        descs,
        shared,
    };
    registry::of_desc(desc)?.open_for_mapping(desc, &to)
}
