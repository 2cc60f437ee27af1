//! epoll instances: every registered target as (fd number, events, data).
//!
//! ```text
//! dump     fdinfo "tfd: N events: X data: Y pos:P ino:I sdev:D", one line per target
//!          kcmp(KCMP_EPOLL_TFD, the k-th registration under N): is fd N of the task
//!          the file registered? if not (N closed, or reused by another file, since
//!          the file was added), the fd of the task that is: its holder H; if none,
//!          the fd H of another process P of the dump that is (kcmp across the two):
//!          holder H of holder_pid P (held by no process of the dump, or only by a /proc
//!          file of one: refused)
//! restore  after every other fd of the task is at its number:
//!          epoll_create1, epoll_ctl(ADD, N, {X, Y}) for each target; with a holder,
//!          N is lent for the call: what N holds is set aside, dup3(H, N), ADD, N put
//!          back (or closed); then dup3 onto the epoll's numbers; an epoll watching
//!          another epoll waits for that one; a target of holder_pid P waits until every
//!          process exists, fds placed (restore/finish.rs): by remote calls in a process
//!          holding the epoll, pidfd_open(P), pidfd_getfd(H), F_DUPFD above, N lent as above
//! ```
//!
//!
//! The ready list (nothing shows it but epoll_wait), when a target is EPOLLET or EPOLLONESHOT:
//!
//! ```text
//! dump     epoll_wait(duplicate, timeout 0): the targets on the list, in order (by their
//!          data) -> EpollTarget.ready_rank; the EPOLLET/EPOLLONESHOT ones it took put back
//!          by EPOLL_CTL_MOD (their file at their number, on a thread with its own fd table)
//! restore  ADD the targets off the list; epoll_wait(timeout 0) takes the edges of those
//!          ready (an edge already reported); ADD the others in their order (ADD of a ready
//!          file queues it)
//! ```
//!
//! Not saved (every target ready at restore is queued, an edge already reported reported
//! again) for an epoll in flight, one with a target another process holds, or with an
//! EPOLLET/EPOLLONESHOT target that is EPOLLEXCLUSIVE or has the data of another target.
//! A `--leave-running` dump leaves the list with its level-triggered targets before the
//! edge-triggered ones (the kernel queues them again first).

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsFd, RawFd};

use cryo_proto::image::{file_desc::Kind, Epoll, EpollTarget, FdEntry, FileDesc};

use super::inspect::{fdinfo, OpenFd};
use super::kind::{Checking, Dumping, FileKind, Opened, Opening};
use super::open::{above, place_at};
use super::{restore_err, FileError};
use crate::sys;
use nix::unistd::Pid;

/// epoll instances, made once every other fd of the task is at its number.
pub(super) struct Epolls;

impl FileKind for Epolls {
    type Record = Epoll;

    fn record(kind: &Kind) -> Option<&Epoll> {
        match kind {
            Kind::Epoll(e) => Some(e),
            _ => None,
        }
    }

    fn claims(&self, fd: &Dumping<'_>) -> bool {
        fd.seen.is_anon("epoll")
    }

    fn dump(&self, fd: &mut Dumping<'_>) -> Result<Kind, FileError> {
        let others = super::pidfd::dump_pids(fd.state);
        dump(fd.open, &others).map(Kind::Epoll)
    }

    fn validate(
        &self,
        desc: &FileDesc,
        ep: &Epoll,
        _cx: &mut Checking<'_>,
    ) -> Result<(), FileError> {
        for t in &ep.targets {
            let detail = match t.holder {
                _ if t.tfd < 0 => format!("epoll target number {} is not an fd number", t.tfd),
                Some(h) if h < 0 || (h == t.tfd && t.holder_pid.is_none()) => {
                    format!("epoll target fd {} has holder fd {h}", t.tfd)
                }
                None if t.holder_pid.is_some() => {
                    format!("epoll target fd {} has a holder process but no fd", t.tfd)
                }
                _ => continue,
            };
            return Err(FileError::Invalid {
                id: desc.id,
                detail,
            });
        }
        Ok(())
    }

    fn open(
        &self,
        desc: &FileDesc,
        _ep: &Epoll,
        cx: &mut Opening<'_>,
    ) -> Result<Opened, FileError> {
        if cx.links.is_carried(desc.id) {
            // In flight: made with the unix sockets whose queue carries it (make_in_flight).
            return Ok(Opened::Elsewhere);
        }
        // Registered once every other fd is at its number.
        Ok(Opened::AfterPlacement)
    }

    fn place_after(
        &self,
        descs: &[&FileDesc],
        fds: &[FdEntry],
        min_high: RawFd,
    ) -> Result<(), FileError> {
        let epolls: Vec<(&FileDesc, &Epoll)> = descs
            .iter()
            .filter_map(|d| Some((*d, d.kind.as_ref().and_then(Self::record)?)))
            .collect();
        place_all(&epolls, fds, min_high)
    }

    fn in_flight(&self) -> bool {
        true
    }

    fn describe(&self, _desc: &FileDesc, e: &Epoll) -> String {
        format!("epoll ({} targets)", e.targets.len())
    }
}

/// Parses one `tfd:` line of an epoll fdinfo.
fn parse_target(line: &str) -> Option<EpollTarget> {
    let mut words = line.split_whitespace();
    let mut next_after = |key: &str| -> Option<String> {
        loop {
            if words.next()? == key {
                return words.next().map(str::to_string);
            }
        }
    };
    let tfd = next_after("tfd:")?.parse().ok()?;
    let events = u32::from_str_radix(&next_after("events:")?, 16).ok()?;
    let data = u64::from_str_radix(&next_after("data:")?, 16).ok()?;
    Some(EpollTarget {
        tfd,
        events,
        data,
        holder: None,
        holder_pid: None,
        ready_rank: None,
    })
}

/// The targets of the epoll `open`, each with the fd of the task that holds its file when
/// its own number no longer does, or else the fd of another process of the dump (`dumped`:
/// their pids) that does.
///
/// An epoll in flight is dumped from cryo's own duplicate (`open.pid` is cryo): its numbers
/// are the numbers of the process that registered them, so every target is looked for in the
/// processes of the dump, never in cryo's own table.
fn dump(open: &OpenFd, dumped: &HashSet<i32>) -> Result<Epoll, FileError> {
    let in_flight = open.pid == nix::unistd::getpid();
    let text = fdinfo(open)?;
    let mut targets = Vec::new();
    // Registrations seen so far per number: the next one's KCMP_EPOLL_TFD offset.
    let mut seen: HashMap<RawFd, u32> = HashMap::new();
    // The task's fds, listed once a registration needs a holder.
    let mut task_fds: Option<Vec<RawFd>> = None;
    for line in text.lines().filter(|l| l.starts_with("tfd:")) {
        let mut t = parse_target(line)
            .ok_or_else(|| open.dump_err(format!("epoll: cannot parse fdinfo line {line:?}")))?;
        let toff = seen.entry(t.tfd).or_default();
        let off = *toff;
        *toff += 1;
        if in_flight || !registered_at(open, t.tfd, t.tfd, off)? {
            let fds: &[RawFd] = match &mut task_fds {
                _ if in_flight => &[],
                Some(fds) => fds,
                None => task_fds.insert(super::inspect::list_fds(open.pid)?),
            };
            let mut holder = None;
            for &fd in fds.iter() {
                if registered_at(open, fd, t.tfd, off)? {
                    holder = Some(fd);
                    break;
                }
            }
            if holder.is_none() {
                let (pid, fd) = held_elsewhere(open, dumped, t.tfd, off)?.ok_or_else(|| {
                    open.dump_err(format!(
                        "epoll: no fd of the task or of another process of the dump holds the \
                         file registered as fd {} (its number was closed or reused, and the \
                         file is only held outside the dump, in flight or by a mapping): not \
                         supported",
                        t.tfd
                    ))
                })?;
                holder = Some(fd);
                t.holder_pid = Some(pid.as_raw());
            }
            t.holder = holder;
        }
        targets.push(t);
    }
    let mut ep = Epoll {
        targets,
        ready_list_saved: false,
    };
    if !in_flight {
        save_ready_list(open, &mut ep)?;
    }
    Ok(ep)
}

/// The bits of an epoll registration that are flags, not events (EP_PRIVATE_BITS).
const PRIVATE_BITS: u32 = (libc::EPOLLWAKEUP
    | libc::EPOLLONESHOT
    | libc::EPOLLET
    | libc::EPOLLEXCLUSIVE) as u32;

/// Whether target `t` keeps an edge: EPOLLET or EPOLLONESHOT, armed (a reported EPOLLONESHOT
/// target shows no event bits until EPOLL_CTL_MOD arms it again).
fn keeps_an_edge(t: &EpollTarget) -> bool {
    t.events & (libc::EPOLLET | libc::EPOLLONESHOT) as u32 != 0 && t.events & !PRIVATE_BITS != 0
}

/// Reads the ready list of the epoll `open` (its process stopped) into `ep`: which targets
/// are on it, in what order (EpollTarget.ready_rank), so that an EPOLLET target whose edge
/// was reported and not read is not reported again after the restore.
///
/// Nothing shows the list but epoll_wait, on a duplicate (pidfd_getfd): it takes the reported
/// EPOLLET targets off the list and disarms EPOLLONESHOT ones, so each is put back by
/// EPOLL_CTL_MOD with its own events and data (re-armed, queued again at the tail: ready),
/// made with the target's file at its number, on a thread with an fd table of its own.
/// Level-triggered targets are queued again by the kernel, before the ones put back.
///
/// Left as before (every target ready at restore queued as it is registered) for an epoll
/// with no armed EPOLLET/EPOLLONESHOT target, or one of them with EPOLLEXCLUSIVE (MOD
/// refuses it) or with the data of another target (the reported one unknown), or with a
/// target another process holds (registered late by the restore).
fn save_ready_list(open: &OpenFd, ep: &mut Epoll) -> Result<(), FileError> {
    let edged: Vec<&EpollTarget> = ep.targets.iter().filter(|t| keeps_an_edge(t)).collect();
    if edged.is_empty() {
        return Ok(());
    }
    let why_not = if edged.iter().any(|t| t.events & libc::EPOLLEXCLUSIVE as u32 != 0) {
        Some("an EPOLLET/EPOLLONESHOT target is EPOLLEXCLUSIVE".to_string())
    } else if ep.targets.iter().any(|t| t.holder_pid.is_some()) {
        Some("a target is held by another process".to_string())
    } else {
        edged
            .iter()
            .find(|t| ep.targets.iter().filter(|o| o.data == t.data).count() > 1)
            .map(|t| format!("target fd {} has the data {:#x} of another target", t.tfd, t.data))
    };
    if let Some(why) = why_not {
        tracing::warn!(
            pid = open.pid.as_raw(),
            fd = open.fd,
            "epoll: ready list not saved ({why}): an EPOLLET edge already reported comes \
             back reported again"
        );
        return Ok(());
    }
    let pidfd =
        sys::pidfd::pidfd_open(open.pid).map_err(|e| open.inspect_err("pidfd_open", open.proc_path(), e))?;
    let dup = sys::pidfd::pidfd_getfd(pidfd.as_fd(), open.fd)
        .map_err(|e| open.inspect_err("pidfd_getfd", open.proc_path(), e))?;
    let reported = sys::epoll::epoll_wait_now(dup.as_fd(), ep.targets.len() + 1)
        .map_err(|e| open.inspect_err("epoll_wait", open.proc_path(), e))?;
    let mut put_back = Vec::new();
    let mut unmatched = Vec::new();
    for (rank, &(data, _)) in reported.iter().enumerate() {
        // Level-triggered targets may share data: they are alike to a reader.
        let Some(t) = ep.targets.iter_mut().find(|t| t.data == data && t.ready_rank.is_none())
        else {
            unmatched.push(data);
            continue;
        };
        t.ready_rank = Some(rank as u32);
        if keeps_an_edge(t) {
            put_back.push(*t);
        }
    }
    put_back_reported(open, pidfd.as_fd(), dup.as_fd(), &put_back)?;
    if let Some(data) = unmatched.first() {
        return Err(open.dump_err(format!(
            "epoll: epoll_wait reported data {data:#x}, which no target of its fdinfo has"
        )));
    }
    ep.ready_list_saved = true;
    Ok(())
}

/// Puts the EPOLLET/EPOLLONESHOT targets `reported` (in their order) back on the ready list
/// of the epoll `dup` (a duplicate of `open`) after an epoll_wait took them:
/// EPOLL_CTL_MOD with their events and data, each target's file (from the process of
/// `pidfd`) at its number on a thread with an fd table of its own.
fn put_back_reported(
    open: &OpenFd,
    pidfd: std::os::fd::BorrowedFd<'_>,
    dup: std::os::fd::BorrowedFd<'_>,
    reported: &[EpollTarget],
) -> Result<(), FileError> {
    if reported.is_empty() {
        return Ok(());
    }
    let mut files = Vec::new();
    for t in reported {
        let fd = holder_of(t);
        let file = sys::pidfd::pidfd_getfd(pidfd, fd).map_err(|e| {
            open.inspect_err("pidfd_getfd", super::inspect::proc_fd(open.pid, fd), e)
        })?;
        files.push(file);
    }
    let high = reported
        .iter()
        .map(|t| t.tfd)
        .chain(files.iter().map(std::os::fd::AsRawFd::as_raw_fd))
        .chain([std::os::fd::AsRawFd::as_raw_fd(&dup)])
        .max()
        .unwrap_or(0)
        .saturating_add(1);
    let borrowed: Vec<_> = files.iter().map(|f| f.as_fd()).collect();
    sys::fd::with_own_fd_table(|| {
        // Above every number put to use: placing a file at one closes nothing needed.
        let ep = sys::fd::dup_at_least(dup, high)?;
        let moved = borrowed
            .iter()
            .map(|f| sys::fd::dup_at_least(*f, high))
            .collect::<std::io::Result<Vec<_>>>()?;
        for (t, file) in reported.iter().zip(&moved) {
            sys::fd::dup_to(file.as_fd(), t.tfd, true)?;
            sys::epoll::epoll_modify(ep.as_fd(), t.tfd, t.events, t.data)?;
        }
        Ok(())
    })
    .map_err(|e| {
        open.dump_err(format!(
            "epoll: put back on its ready list the EPOLLET/EPOLLONESHOT targets epoll_wait \
             reported (EPOLL_CTL_MOD): {e}"
        ))
    })
}

/// The process among `dumped` (other than the epoll's own) and its fd that holds the file
/// registered in the epoll `open` as the `off`-th target numbered `tfd`, the lowest pid first.
fn held_elsewhere(
    open: &OpenFd,
    dumped: &HashSet<i32>,
    tfd: RawFd,
    off: u32,
) -> Result<Option<(Pid, RawFd)>, FileError> {
    let mut pids: Vec<i32> = dumped.iter().copied().filter(|&p| p != open.pid.as_raw()).collect();
    pids.sort_unstable();
    for pid in pids.into_iter().map(Pid::from_raw) {
        for fd in super::inspect::list_fds(pid)? {
            match sys::kcmp::kcmp_epoll_target_of(pid, fd, open.pid, open.fd, tfd, off) {
                Ok(true) if on_procfs(pid, fd) => {
                    // Its /proc files are opened after the targets are registered (procfs.rs).
                    return Err(open.dump_err(format!(
                        "epoll: the file registered as fd {tfd} is held only by fd {fd} of pid \
                         {pid}, a /proc file, which the restore opens after registering the \
                         targets: not supported"
                    )));
                }
                Ok(true) => return Ok(Some((pid, fd))),
                Ok(false) => {}
                Err(e) if e.raw_os_error() == Some(libc::EBADF) => {}
                Err(e) => {
                    return Err(open.inspect_err(
                        "kcmp KCMP_EPOLL_TFD",
                        super::inspect::proc_fd(pid, fd),
                        e,
                    ))
                }
            }
        }
    }
    Ok(None)
}

/// Whether fd `fd` of process `pid` is a file of /proc.
fn on_procfs(pid: Pid, fd: RawFd) -> bool {
    nix::sys::statfs::statfs(&super::inspect::proc_fd(pid, fd))
        .is_ok_and(|fs| fs.filesystem_type().0 == super::table::PROC_SUPER_MAGIC)
}

/// Restore side, before any process is made: every target another process holds
/// (EpollTarget.holder_pid) names a process of the image (`tasks`: image pid and fds) and
/// one of its fds, not a /proc file of a process (opened after the targets are registered).
pub(crate) fn check_holders(
    descs: &[FileDesc],
    tasks: &[(i32, &[FdEntry])],
) -> Result<(), FileError> {
    let by_id: HashMap<u32, &FileDesc> = descs.iter().map(|d| (d.id, d)).collect();
    for desc in descs {
        let Some(Kind::Epoll(ep)) = &desc.kind else {
            continue;
        };
        for t in &ep.targets {
            let (Some(pid), Some(fd)) = (t.holder_pid, t.holder) else {
                continue;
            };
            let detail = match holder_kind(tasks, &by_id, pid, fd) {
                None => format!(
                    "epoll target fd {} is held by fd {fd} of pid {pid}, not an fd of a process \
                     of the image",
                    t.tfd
                ),
                Some(Some(Kind::ProcFile(p))) if p.pid != 0 || !p.proc_mount.is_empty() => format!(
                    "epoll target fd {} is held by fd {fd} of pid {pid}, a /proc file opened \
                     after the targets are registered",
                    t.tfd
                ),
                Some(_) => continue,
            };
            return Err(FileError::Invalid {
                id: desc.id,
                detail,
            });
        }
    }
    Ok(())
}

/// The kind of the description that fd `fd` of process `pid` holds (`tasks`: pid and fds of
/// the image's processes, `by_id`: the descriptions): None when that is no fd of a process of
/// the image.
fn holder_kind<'a>(
    tasks: &[(i32, &[FdEntry])],
    by_id: &HashMap<u32, &'a FileDesc>,
    pid: i32,
    fd: RawFd,
) -> Option<Option<&'a Kind>> {
    let (_, fds) = tasks.iter().find(|(p, _)| *p == pid)?;
    let entry = fds.iter().find(|e| e.fd == fd)?;
    Some(by_id.get(&entry.file_id).and_then(|d| d.kind.as_ref()))
}

/// An epoll in flight (carried by a unix queue) is made by the process that makes that
/// queue's sockets, before any fd is placed, its targets lent the files that process opened
/// for its own fds ([`make_in_flight`]). That process is the lowest common ancestor of the
/// holders of what is made with it (restore/plan.rs), so the epoll is refused unless one
/// process holds all of that and every target, each a file opened before the queues are
/// refilled (not an epoll or a /proc file of a process). Checked by the dump before its
/// images are written and by the restore before anything is made. `tasks`: pid and fds.
pub(crate) fn check_in_flight(
    descs: &[FileDesc],
    tasks: &[(i32, &[FdEntry])],
    links: &super::UnixLinks,
) -> Result<(), FileError> {
    let carried: Vec<(&FileDesc, &Epoll)> = descs
        .iter()
        .filter(|d| links.is_carried(d.id))
        .filter_map(|d| match &d.kind {
            Some(Kind::Epoll(ep)) => Some((d, ep)),
            _ => None,
        })
        .collect();
    if carried.is_empty() {
        return Ok(());
    }
    let by_id: HashMap<u32, &FileDesc> = descs.iter().map(|d| (d.id, d)).collect();
    let mut holders: HashMap<u32, std::collections::BTreeSet<i32>> = HashMap::new();
    for (pid, fds) in tasks {
        for e in *fds {
            holders.entry(e.file_id).or_default().insert(*pid);
        }
    }
    let sets = super::made_together(descs, links);
    for (desc, ep) in carried {
        let made_with: Vec<u32> = sets
            .iter()
            .find(|s| s.contains(&desc.id))
            .cloned()
            .unwrap_or_default();
        // Where it is: the fds of the sockets made with it.
        let at: Vec<String> = tasks
            .iter()
            .flat_map(|(pid, fds)| fds.iter().map(move |e| (pid, e)))
            .filter(|(_, e)| made_with.contains(&e.file_id) && e.file_id != desc.id)
            .map(|(pid, e)| format!("pid {pid} fd {}", e.fd))
            .collect();
        let refuse = |detail: String| FileError::Invalid {
            id: desc.id,
            detail: format!(
                "epoll ({} targets) in flight on the unix socket of {}: {detail}: not supported",
                ep.targets.len(),
                at.join(", ")
            ),
        };
        let mut pids: std::collections::BTreeSet<i32> =
            made_with.iter().filter_map(|id| holders.get(id)).flatten().copied().collect();
        for t in &ep.targets {
            let (Some(pid), Some(fd)) = (t.holder_pid, t.holder) else {
                return Err(refuse(format!("its target fd {} has no holder process", t.tfd)));
            };
            pids.insert(pid);
            match holder_kind(tasks, &by_id, pid, fd) {
                None => {
                    return Err(refuse(format!(
                        "its target fd {} is held by fd {fd} of pid {pid}, not an fd of a \
                         process of the image",
                        t.tfd
                    )))
                }
                Some(Some(Kind::Epoll(_))) => {
                    return Err(refuse(format!(
                        "its target fd {} (fd {fd} of pid {pid}) is an epoll, made after the \
                         queues are refilled",
                        t.tfd
                    )))
                }
                Some(Some(Kind::ProcFile(p))) if p.pid != 0 || !p.proc_mount.is_empty() => {
                    return Err(refuse(format!(
                        "its target fd {} (fd {fd} of pid {pid}) is a /proc file, opened after \
                         the queues are refilled",
                        t.tfd
                    )))
                }
                Some(_) => {}
            }
        }
        if pids.len() > 1 {
            return Err(refuse(format!(
                "its targets and the sockets made with it are held by several processes \
                 {pids:?}; the restore registers the targets in the one process that makes \
                 those sockets"
            )));
        }
    }
    Ok(())
}

/// Restore side, in the process that makes the unix sockets whose queue carries epoll `desc`,
/// before any fd is placed: the epoll made, each target registered under its number, lent
/// the file that the target's holder fd (an fd of this task: `fds`) is opened at in `opened`
/// ([`check_in_flight`] made sure each holder is this task's). `min_high` is above every fd
/// of the task.
pub(crate) fn make_in_flight(
    desc: &FileDesc,
    ep: &Epoll,
    fds: &[FdEntry],
    opened: &HashMap<u32, std::os::fd::OwnedFd>,
    min_high: RawFd,
) -> Result<std::os::fd::OwnedFd, FileError> {
    // Above every temporary's number too: the numbers lent may be any of them.
    let high = ep
        .targets
        .iter()
        .map(|t| t.tfd.saturating_add(1))
        .chain(opened.values().map(|f| std::os::fd::AsRawFd::as_raw_fd(f) + 1))
        .fold(min_high, RawFd::max);
    let fd = sys::epoll::epoll_create().map_err(|e| restore_err(desc, "epoll_create1", e))?;
    let fd = above(desc, fd, high)?;
    for t in &ep.targets {
        let file = t
            .holder
            .and_then(|h| fds.iter().find(|e| e.fd == h))
            .and_then(|e| opened.get(&e.file_id));
        let Some(file) = file else {
            return Err(FileError::Invalid {
                id: desc.id,
                detail: format!(
                    "epoll in flight: its target fd {} (fd {:?} of pid {:?}) is not open in the \
                     process that makes it",
                    t.tfd, t.holder, t.holder_pid
                ),
            });
        };
        let add = || sys::epoll::epoll_add(fd.as_fd(), t.tfd, t.events, t.data);
        let added = if std::os::fd::AsRawFd::as_raw_fd(file) == t.tfd {
            add()
        } else {
            sys::fd::lend_number(file.as_fd(), t.tfd, high, add)
        };
        added.map_err(|e| {
            restore_err(
                desc,
                format!("epoll_ctl ADD fd {} (in flight) events {:#x}", t.tfd, t.events),
                e,
            )
        })?;
    }
    Ok(fd)
}

/// Whether fd `fd` of the task holds the file registered in the epoll `open` as the `off`-th
/// target numbered `tfd` (kcmp KCMP_EPOLL_TFD); a closed `fd` holds nothing.
fn registered_at(open: &OpenFd, fd: RawFd, tfd: RawFd, off: u32) -> Result<bool, FileError> {
    match sys::kcmp::kcmp_epoll_target(open.pid, fd, open.fd, tfd, off) {
        Ok(same) => Ok(same),
        Err(e) if e.raw_os_error() == Some(libc::EBADF) => Ok(false),
        Err(e) => Err(open.inspect_err(
            "kcmp KCMP_EPOLL_TFD",
            super::inspect::proc_fd(open.pid, fd),
            e,
        )),
    }
}

/// Restore side, once every non-epoll fd of the task is at its number: creates each epoll,
/// registers its targets by number and places it. `min_high` is above every fd of the task.
fn place_all(
    epolls: &[(&FileDesc, &Epoll)],
    fds: &[FdEntry],
    min_high: RawFd,
) -> Result<(), FileError> {
    let epoll_ids: HashSet<u32> = epolls.iter().map(|(d, _)| d.id).collect();
    let mut placed: HashSet<RawFd> = fds
        .iter()
        .filter(|e| !epoll_ids.contains(&e.file_id))
        .map(|e| e.fd)
        .collect();
    let numbers: HashSet<RawFd> = fds.iter().map(|e| e.fd).collect();
    let mut numbers_of: HashMap<u32, Vec<&FdEntry>> = HashMap::new();
    for e in fds {
        numbers_of.entry(e.file_id).or_default().push(e);
    }
    // Above every fd of the task and every registered number (a closed one may be higher):
    // the temporaries stay clear of the numbers lent to holders.
    let high = epolls
        .iter()
        .flat_map(|(_, ep)| &ep.targets)
        .map(|t| t.tfd.saturating_add(1))
        .fold(min_high, RawFd::max);
    let mut pending: Vec<&(&FileDesc, &Epoll)> = epolls.iter().collect();
    while !pending.is_empty() {
        let ready = pending
            .iter()
            .position(|(_, ep)| own_targets(ep).all(|t| placed.contains(&holder_of(t))));
        let Some(i) = ready else {
            let (desc, ep) = pending[0];
            let missing = own_targets(ep).find(|t| !placed.contains(&holder_of(t)));
            let detail = match missing {
                Some(t) if !numbers.contains(&holder_of(t)) => {
                    format!("epoll target fd {} is not an fd of the task", holder_of(t))
                }
                _ => "epoll instances watch each other in a cycle".to_string(),
            };
            return Err(FileError::Invalid {
                id: desc.id,
                detail,
            });
        };
        let (desc, ep) = *pending.swap_remove(i);
        let fd = sys::epoll::epoll_create().map_err(|e| restore_err(desc, "epoll_create1", e))?;
        let fd = above(desc, fd, high)?;
        // The kernel keys a registration by file and number: a holder's file is registered
        // (or changed) under the number it was added with, lent for the call.
        let ctl = |t: &EpollTarget, op: &str| {
            let call = || match op {
                "ADD" => sys::epoll::epoll_add(fd.as_fd(), t.tfd, t.events, t.data),
                _ => sys::epoll::epoll_modify(fd.as_fd(), t.tfd, t.events, t.data),
            };
            let done = match t.holder {
                None => call(),
                Some(h) => sys::fd::lend_number(sys::fd::borrow_raw(h), t.tfd, high, call),
            };
            done.map_err(|e| {
                let by = t.holder.map(|h| format!(" (the file of fd {h})")).unwrap_or_default();
                restore_err(
                    desc,
                    format!("epoll_ctl {op} fd {}{by} events {:#x}", t.tfd, t.events),
                    e,
                )
            })
        };
        if ep.ready_list_saved && ep.targets.iter().all(|t| t.holder_pid.is_none()) {
            remake_ready_list(desc, fd.as_fd(), ep, ctl)?;
        } else {
            for t in own_targets(ep) {
                ctl(t, "ADD")?;
            }
        }
        for e in numbers_of.get(&desc.id).into_iter().flatten() {
            place_at(fd.as_fd(), e)?;
            placed.insert(e.fd);
        }
    }
    Ok(())
}

/// Registers the targets of `ep` (by `ctl`: EPOLL_CTL_ADD or MOD of a target) in the new epoll
/// `fd` so that its ready list holds what it held at dump (EpollTarget.ready_rank), in that
/// order: ADD of a ready file queues it at the tail. First the targets that were not on it,
/// then one epoll_wait without waiting takes off the edges of those that are ready (an
/// EPOLLET edge already reported; an EPOLLONESHOT target it disarms, armed at dump, is armed
/// again by MOD), then the others in their order.
fn remake_ready_list(
    desc: &FileDesc,
    fd: std::os::fd::BorrowedFd<'_>,
    ep: &Epoll,
    ctl: impl Fn(&EpollTarget, &str) -> Result<(), FileError>,
) -> Result<(), FileError> {
    let (mut on_list, off_list): (Vec<&EpollTarget>, Vec<&EpollTarget>) =
        ep.targets.iter().partition(|t| t.ready_rank.is_some());
    for t in &off_list {
        ctl(t, "ADD")?;
    }
    let taken = sys::epoll::epoll_wait_now(fd, ep.targets.len() + 1)
        .map_err(|e| restore_err(desc, "epoll_wait", e))?;
    for (data, _) in taken {
        // The dump saved no list when an EPOLLET/EPOLLONESHOT target shares its data.
        let disarmed = off_list
            .iter()
            .find(|t| t.data == data && t.events & libc::EPOLLONESHOT as u32 != 0);
        if let Some(t) = disarmed.filter(|t| keeps_an_edge(t)) {
            ctl(t, "MOD")?;
        }
    }
    on_list.sort_by_key(|t| t.ready_rank);
    for t in on_list {
        ctl(t, "ADD")?;
    }
    Ok(())
}

/// Once every process of the restore exists with its fds placed (all stopped: `holders`):
/// registers in each epoll the targets whose file another process of the dump holds
/// (EpollTarget.holder_pid), through a duplicate of that process's fd taken in the epoll's
/// task (pidfd_open, pidfd_getfd) and lent the target's number for the call, then closed.
pub(crate) fn register_held_elsewhere(
    descs: &[FileDesc],
    holders: &[super::pidfd::Holder<'_>],
) -> Result<(), FileError> {
    let by_id: HashMap<u32, &FileDesc> = descs.iter().map(|d| (d.id, d)).collect();
    // Epoll descriptions done: one shared by several processes is registered once.
    let mut done: HashSet<u32> = HashSet::new();
    for h in holders {
        let epolls: Vec<_> = super::pidfd::epolls_of(h.fds, &by_id)
            .into_iter()
            .filter(|(id, _, ep)| {
                !done.contains(id) && ep.targets.iter().any(|t| t.holder_pid.is_some())
            })
            .collect();
        if epolls.is_empty() {
            continue;
        }
        let err = |fd: RawFd, what: String| {
            move |source: std::io::Error| FileError::TakeBack {
                pid: h.pid,
                fd,
                what,
                source,
            }
        };
        let remote = crate::remote::Remote::at_site(h.pid, h.site)
            .map_err(err(-1, "take the process to register its epoll targets".into()))?;
        // Above every fd of the process and every registered number.
        let high = epolls
            .iter()
            .flat_map(|(_, _, ep)| &ep.targets)
            .map(|t| t.tfd)
            .chain(h.fds.iter().map(|e| e.fd))
            .max()
            .map_or(0, |m| m.saturating_add(1)) as u64;
        for (id, epfd, ep) in epolls {
            done.insert(id);
            for t in &ep.targets {
                let (Some(from), Some(fd)) = (t.holder_pid, t.holder) else {
                    continue;
                };
                let what = format!("epoll target fd {} (the file of fd {fd} of pid {from})", t.tfd);
                let call = |nr: libc::c_long, args: &[u64], step: &str| {
                    remote.call(nr, args).map_err(err(epfd, format!("{step} ({what})")))
                };
                let of = call(libc::SYS_pidfd_open, &[from as u64, 0], "pidfd_open")?;
                let got = call(libc::SYS_pidfd_getfd, &[of, fd as u64, 0], "pidfd_getfd");
                let _ = remote.call(libc::SYS_close, &[of]);
                let got = got?;
                // Above the numbers lent (the lowest free one may be the target's).
                let dup = call(
                    libc::SYS_fcntl,
                    &[got, libc::F_DUPFD_CLOEXEC as u64, high],
                    "move the duplicate up",
                );
                let _ = remote.call(libc::SYS_close, &[got]);
                let dup = dup?;
                let scratch = h.site + crate::memory::PAGE;
                let added =
                    super::pidfd::add_remote(h.pid, &remote, scratch, epfd, t, Some(dup as RawFd), high + 1);
                let _ = remote.call(libc::SYS_close, &[dup]);
                added.map_err(|(step, e)| err(epfd, format!("{step} ({what})"))(e))?;
            }
        }
        remote
            .release()
            .map_err(err(-1, "put the process back after registering its epoll targets".into()))?;
    }
    Ok(())
}

/// The targets of `ep` whose file the epoll's own task holds: the others are registered
/// once every process of the restore exists ([`register_held_elsewhere`]).
fn own_targets(ep: &Epoll) -> impl Iterator<Item = &EpollTarget> {
    ep.targets.iter().filter(|t| t.holder_pid.is_none())
}

/// The fd number of the task that holds the file of target `t`.
fn holder_of(t: &EpollTarget) -> RawFd {
    t.holder.unwrap_or(t.tfd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_line_is_parsed() {
        let line = "tfd:        3 events: 80000019 data:                3  pos:0 ino:40e sdev:10";
        let t = parse_target(line).unwrap();
        assert_eq!((t.tfd, t.events, t.data), (3, 0x8000_0019, 3));
        let line = "tfd:       12 events:       19 data: ffffffffffffffff  pos:0 ino:1 sdev:f";
        let t = parse_target(line).unwrap();
        assert_eq!((t.tfd, t.events, t.data), (12, 0x19, u64::MAX));
        assert_eq!(t.holder, None);
        assert!(parse_target("tfd: x events: 1 data: 1").is_none());
    }

    #[test]
    fn only_armed_edge_triggered_and_oneshot_targets_keep_an_edge() {
        let target = |events: i32| EpollTarget {
            events: events as u32,
            ..Default::default()
        };
        assert!(keeps_an_edge(&target(libc::EPOLLIN | libc::EPOLLET)));
        assert!(keeps_an_edge(&target(libc::EPOLLIN | libc::EPOLLONESHOT)));
        assert!(!keeps_an_edge(&target(libc::EPOLLIN | libc::EPOLLERR | libc::EPOLLHUP)));
        // A reported EPOLLONESHOT target: only its flags left until MOD arms it.
        assert!(!keeps_an_edge(&target(libc::EPOLLONESHOT)));
    }

    #[test]
    fn a_target_held_elsewhere_names_a_process_and_fd_of_the_image() {
        let target = |pid: i32, fd: i32| EpollTarget {
            tfd: 63,
            events: 0x19,
            data: 0xe63,
            holder: Some(fd),
            holder_pid: Some(pid),
            ready_rank: None,
        };
        let descs = |t: EpollTarget| {
            vec![
                FileDesc {
                    id: 1,
                    kind: Some(Kind::Epoll(Epoll {
                        targets: vec![t],
                        ready_list_saved: false,
                    })),
                    ..Default::default()
                },
                FileDesc {
                    id: 2,
                    kind: Some(Kind::Eventfd(Default::default())),
                    ..Default::default()
                },
                FileDesc {
                    id: 3,
                    kind: Some(Kind::ProcFile(cryo_proto::image::ProcFile {
                        pid: 20,
                        ..Default::default()
                    })),
                    ..Default::default()
                },
            ]
        };
        let fd = |fd: i32, file_id: u32| FdEntry {
            fd,
            file_id,
            ..Default::default()
        };
        let (epoll_fds, other_fds) = ([fd(70, 1)], [fd(58, 2), fd(59, 3)]);
        let tasks: [(i32, &[FdEntry]); 2] = [(10, &epoll_fds), (20, &other_fds)];
        assert!(check_holders(&descs(target(20, 58)), &tasks).is_ok());
        for (pid, fd, says) in [
            (21, 58, "not an fd of a process of the image"),
            (20, 57, "not an fd of a process of the image"),
            (20, 59, "a /proc file opened after"),
        ] {
            let err = check_holders(&descs(target(pid, fd)), &tasks).unwrap_err();
            assert!(err.to_string().contains(says), "{err}");
        }
    }
}
