//! pidfds: a pidfd of the process itself comes back on the restored process; a pidfd of
//! another process of the dump (a zombie too) comes back on that process (same pid), once
//! every process of the restore exists; a pidfd of a process that exited and was reaped
//! comes back as one of a process cryo made die the same way (same wait status) and reaped;
//! a pidfd of a process outside the dump is refused at dump, naming it.
//!
//! ```text
//! dump     fdinfo `Pid:` (in cryo's pid namespace; -1 once the process is gone and reaped)
//!          = the holder itself          -> recorded (PIDFD_THREAD is O_EXCL in the file flags)
//!          = another process of the dump -> recorded with its pid
//!          = -1                         -> recorded as exited: the pidfs inode (the pidfds
//!                                          of one process share it), the wait status
//!                                          (PIDFD_GET_INFO, PIDFD_INFO_EXIT)
//!          another thread of the dump   -> refused: "pidfd of thread T of the dump"
//!          another pid                  -> refused: "pidfd of pid N outside the dump"
//! restore  of an exited process: made by cryo before the first fork (shared.rs), one
//!          process per dumped inode that dies with the dumped status, a pidfd_open of it per
//!          description, then reaped; each holder takes its description from the slot
//! restore  of itself: pidfd_open(getpid(), PIDFD_NONBLOCK|PIDFD_THREAD as dumped), in the
//!          restored task before it is reshaped: the same process, so the same struct pid
//!          of another: the same placeholder at its numbers while the task opens its fds (the
//!          other process may not exist yet: a child is forked after its parent's fds are
//!          placed); once every process exists and before any is reshaped, by remote calls
//!          in the holder (parents first): pidfd_open(pid, flags) in the first holder of the
//!          description, pidfd_getfd of that one in the others (one description), dup3 over
//!          the placeholders (FD_CLOEXEC as dumped); an epoll of the holder that watched
//!          the pidfd (it watched the placeholder, gone with it) registers it again
//! ```

use std::collections::{HashMap, HashSet};
use std::io;
use std::os::fd::OwnedFd;

use cryo_proto::image::{file_desc::Kind, FdEntry, FileDesc, Pidfd};
use nix::unistd::Pid;

use super::inspect::{fdinfo, field, OpenFd};
use super::kind::{Dumping, FileKind, KindState, Opened, Opening};
use super::{restore_err, FileError};
use crate::remote::Remote;
use crate::sys;

/// pidfd instances.
pub(super) struct Pidfds;

/// The processes of the dump and their threads (pids and tids as cryo sees them): a pidfd of
/// one of the processes comes back.
#[derive(Debug, Default)]
struct DumpProcesses {
    pids: HashSet<i32>,
    tids: HashSet<i32>,
}

/// Makes the processes `pids` of the dump and their threads `tids` known to the dump of the
/// fds: a pidfd of one of the processes is restored (without this, only a pidfd of its
/// holder is); one of another thread is refused, named as such.
pub(crate) fn add_processes(
    state: &mut KindState,
    pids: impl IntoIterator<Item = Pid>,
    tids: impl IntoIterator<Item = Pid>,
) {
    let known = state.get::<DumpProcesses>();
    known.pids.extend(pids.into_iter().map(Pid::as_raw));
    known.tids.extend(tids.into_iter().map(Pid::as_raw));
}

/// The pids of the processes of the dump, as [`add_processes`] made them known.
pub(super) fn dump_pids(state: &mut KindState) -> HashSet<i32> {
    state.get::<DumpProcesses>().pids.clone()
}

impl FileKind for Pidfds {
    type Record = Pidfd;

    fn record(kind: &Kind) -> Option<&Pidfd> {
        match kind {
            Kind::Pidfd(p) => Some(p),
            _ => None,
        }
    }

    fn claims(&self, fd: &Dumping<'_>) -> bool {
        fd.seen.is_anon("pidfd")
    }

    fn dump(&self, fd: &mut Dumping<'_>) -> Result<Kind, FileError> {
        if target_of(fd.open) == Some(-1) {
            return dump_exited(fd).map(Kind::Pidfd);
        }
        let known = fd.state.get::<DumpProcesses>();
        dump(fd.open, known).map(Kind::Pidfd)
    }

    fn open(&self, desc: &FileDesc, p: &Pidfd, cx: &mut Opening<'_>) -> Result<Opened, FileError> {
        if p.exited {
            return open_exited(desc, &cx.opts.shared).map(Opened::Now);
        }
        // A pidfd of another process starts as one of this process: replaced once that one
        // exists (point_at_processes).
        open(desc).map(Opened::Now)
    }

    fn in_flight(&self) -> bool {
        // In a unix socket's queue it has no holder to be the pidfd of.
        false
    }

    fn describe(&self, _desc: &FileDesc, p: &Pidfd) -> String {
        if p.exited {
            format!("pidfd of an exited process (wait status {:#x})", p.exit_status)
        } else if p.pid != 0 {
            format!("pidfd of pid {}", p.pid)
        } else {
            "pidfd of the process itself".into()
        }
    }
}

/// The process pidfd `open` refers to (fdinfo `Pid:`, -1 once it is reaped).
fn target_of(open: &OpenFd) -> Option<i32> {
    fdinfo(open)
        .ok()
        .and_then(|text| field(&text, "Pid").and_then(|v| v.parse::<i32>().ok()))
}

/// The record of pidfd `fd`, of a process that exited and was reaped: its pidfs inode and
/// its wait status (read through a duplicate).
fn dump_exited(fd: &mut Dumping<'_>) -> Result<Pidfd, FileError> {
    use std::os::unix::fs::MetadataExt;
    let open = fd.open;
    let task = super::kind::task_pidfd(open, fd.pidfd)?;
    let dup = sys::pidfd::pidfd_getfd(task, open.fd)
        .map_err(|e| open.inspect_err("pidfd_getfd", open.proc_path(), e))?;
    let status = sys::pidfd::exit_status(std::os::fd::AsFd::as_fd(&dup))
        .map_err(|e| open.inspect_err("ioctl PIDFD_GET_INFO", open.proc_path(), e))?;
    Ok(Pidfd {
        exited: true,
        exited_ino: fd.meta.ino(),
        // Unknown (no pidfd was open when it exited, on an older kernel): as if it exited 0.
        exit_status: status.unwrap_or(0),
        ..Default::default()
    })
}

/// The key of the slot of the pidfd of an exited process that cryo made for description
/// `desc` (shared.rs): above any inode number a memory object may have.
pub(crate) fn exited_slot_key(desc: &FileDesc) -> Option<u64> {
    match &desc.kind {
        Some(Kind::Pidfd(p)) if p.exited => Some(u64::MAX - u64::from(desc.id)),
        _ => None,
    }
}

/// Makes, in cryo before the first fork, the pidfds of exited processes among `descs` that
/// `used` refers to: per dumped process (inode), one process that dies with its status, a
/// pidfd of it per description, then reaped. (description, fd) each.
pub(crate) fn make_exited<'d>(
    descs: &'d [FileDesc],
    used: &std::collections::BTreeSet<u32>,
) -> Result<Vec<(&'d FileDesc, OwnedFd)>, FileError> {
    let mut by_process: std::collections::BTreeMap<u64, Vec<&FileDesc>> = Default::default();
    for d in descs.iter().filter(|d| used.contains(&d.id)) {
        if let Some(Kind::Pidfd(p)) = &d.kind {
            if p.exited {
                by_process.entry(p.exited_ino).or_default().push(d);
            }
        }
    }
    let mut made = Vec::new();
    for group in by_process.values() {
        let status = match &group[0].kind {
            Some(Kind::Pidfd(p)) => p.exit_status,
            _ => unreachable!("grouped pidfds"),
        };
        let err = |op: &'static str| move |e: io::Error| restore_err(group[0], op, e);
        let child = match sys::process::fork().map_err(err("fork the process to end"))? {
            sys::process::Forked::Child => sys::process::exit_as(status),
            sys::process::Forked::Parent(child) => child,
        };
        let opened: Result<Vec<_>, FileError> = group
            .iter()
            .map(|&d| {
                sys::pidfd::pidfd_open_flags(child, pidfd_flags(d))
                    .map(|fd| (d, fd))
                    .map_err(|e| restore_err(d, "pidfd_open of the process made to end", e))
            })
            .collect();
        // Reaped in every case: the pidfds now name an exited process, as the dumped ones did.
        let reaped = nix::sys::wait::waitpid(child, None);
        made.extend(opened?);
        reaped.map_err(|e| err("reap the process made to end")(e.into()))?;
    }
    Ok(made)
}

/// The pidfd of an exited process for `desc`: the description cryo made, from its slot.
fn open_exited(
    desc: &FileDesc,
    slots: &std::collections::HashMap<u64, std::os::fd::RawFd>,
) -> Result<OwnedFd, FileError> {
    let slot = exited_slot_key(desc)
        .and_then(|key| slots.get(&key))
        .copied()
        .ok_or_else(|| FileError::Invalid {
            id: desc.id,
            detail: "pidfd of an exited process: cryo made none for it".into(),
        })?;
    sys::fd::dup_at_least(sys::fd::borrow_raw(slot), 3)
        .map_err(|e| restore_err(desc, "dup the pidfd of the exited process", e))
}

/// The record of pidfd `open`: a pidfd of its holder or of another process of the dump
/// (`known`).
fn dump(open: &OpenFd, known: &DumpProcesses) -> Result<Pidfd, FileError> {
    match target_of(open) {
        Some(pid) if pid == open.pid.as_raw() => Ok(Pidfd {
            of_itself: true,
            ..Default::default()
        }),
        Some(pid) if known.pids.contains(&pid) => Ok(Pidfd {
            pid,
            ..Default::default()
        }),
        // PIDFD_THREAD on a thread that is not its process's main one: threads are made
        // once their process is whole, after the pidfds are pointed.
        Some(tid) if known.tids.contains(&tid) => Err(open.refuse(
            format!("pidfd of thread {tid} of the dump (not a process's main thread)"),
            true,
        )),
        Some(pid) => Err(open.refuse(format!("pidfd of pid {pid} outside the dump"), true)),
        None => Err(open.refuse("pidfd (its fdinfo names no process)", true)),
    }
}

/// The pidfd flags of description `desc` (PIDFD_NONBLOCK, PIDFD_THREAD = O_EXCL).
fn pidfd_flags(desc: &FileDesc) -> u32 {
    desc.flags & (libc::O_NONBLOCK | libc::O_EXCL) as u32
}

/// A pidfd of the calling (restored) process, with the dumped flags.
fn open(desc: &FileDesc) -> Result<OwnedFd, FileError> {
    sys::pidfd::pidfd_open_flags(nix::unistd::getpid(), pidfd_flags(desc))
        .map_err(|e| restore_err(desc, "pidfd_open of the process itself", e))
}

/// One stopped process of a restore, for [`point_at_processes`].
pub(crate) struct Holder<'a> {
    /// Its pid as cryo sees it.
    pub pid: Pid,
    /// Its pid in the image (and in its own pid namespace).
    pub image_pid: i32,
    /// Its fds.
    pub fds: &'a [FdEntry],
    /// Where `syscall; int3` is mapped in it (the restore trampoline); a writable page
    /// follows.
    pub site: u64,
}

/// The epolls among fds `fds` of a process (an fd of each) with their records.
pub(super) fn epolls_of<'a>(
    fds: &[FdEntry],
    by_id: &HashMap<u32, &'a FileDesc>,
) -> Vec<(u32, i32, &'a cryo_proto::image::Epoll)> {
    let mut seen = HashSet::new();
    fds.iter()
        .filter_map(|e| match by_id.get(&e.file_id).and_then(|d| d.kind.as_ref()) {
            Some(Kind::Epoll(ep)) if seen.insert(e.file_id) => Some((e.file_id, e.fd, ep)),
            _ => None,
        })
        .collect()
}

/// Registers again, in the epolls of process `pid` (fds `all`, stopped, taken as `remote`),
/// the fds `fds` put over placeholders the epolls watched, under their own numbers or, as
/// holders, under numbers closed or reused since (each (epoll, number, holder) once: `done`),
/// with the dumped events and data; `scratch` is a writable page of the process, `what` the
/// fds in words for errors.
#[allow(clippy::too_many_arguments)]
pub(crate) fn watch_again(
    pid: Pid,
    remote: &Remote,
    scratch: u64,
    by_id: &HashMap<u32, &FileDesc>,
    all: &[FdEntry],
    fds: &[&FdEntry],
    done: &mut HashSet<(u32, i32, i32)>,
    what: &str,
) -> Result<(), FileError> {
    // Above every fd of the process and every registered number: where what a number lent
    // to a holder held waits.
    let high = epolls_of(all, by_id)
        .iter()
        .flat_map(|(_, _, ep)| &ep.targets)
        .map(|t| t.tfd)
        .chain(all.iter().map(|e| e.fd))
        .max()
        .map_or(0, |m| m.saturating_add(1)) as u64;
    for (ep_id, epfd, ep) in epolls_of(all, by_id) {
        let holder_of = |t: &cryo_proto::image::EpollTarget| t.holder.unwrap_or(t.tfd);
        let own = |t: &&cryo_proto::image::EpollTarget| t.holder_pid.is_none();
        for t in ep.targets.iter().filter(own).filter(|t| fds.iter().any(|e| e.fd == holder_of(t))) {
            if !done.insert((ep_id, t.tfd, holder_of(t))) {
                continue;
            }
            let fail = |step: String| {
                move |source| FileError::TakeBack {
                    pid,
                    fd: epfd,
                    what: format!("{step} ({what})"),
                    source,
                }
            };
            add_remote(pid, remote, scratch, epfd, t, t.holder, high)
                .map_err(|(step, e)| fail(step)(e))?;
        }
    }
    Ok(())
}

/// Registers target `t` in epoll `epfd` of process `pid` (stopped, taken as `remote`): fd
/// `t.tfd` itself, or the file of its fd `holder` under number `t.tfd`, lent for the call
/// (what the number holds waits at `high` or above and is put back, as files/epoll.rs does
/// at placement); `scratch` is a writable page of the process. A failure says its step.
pub(crate) fn add_remote(
    pid: Pid,
    remote: &Remote,
    scratch: u64,
    epfd: i32,
    t: &cryo_proto::image::EpollTarget,
    holder: Option<i32>,
    high: u64,
) -> Result<(), (String, io::Error)> {
    let step = |what: String| move |e: io::Error| (what, e);
    // struct epoll_event, packed on x86_64: events u32, data u64.
    let mut ev = [0u8; 12];
    ev[..4].copy_from_slice(&t.events.to_ne_bytes());
    ev[4..].copy_from_slice(&t.data.to_ne_bytes());
    crate::sys::ptrace::write_mem(pid, scratch, &ev)
        .map_err(step(format!("write the event of fd {}", t.tfd)))?;
    let add = || {
        remote.call(
            libc::SYS_epoll_ctl,
            &[epfd as u64, libc::EPOLL_CTL_ADD as u64, t.tfd as u64, scratch],
        )
    };
    let Some(h) = holder else {
        return add().map(drop).map_err(step(format!("epoll_ctl ADD of fd {}", t.tfd)));
    };
    let tfd = t.tfd as u64;
    let held = match remote.call(libc::SYS_fcntl, &[tfd, libc::F_GETFD as u64]) {
        Ok(flags) => {
            let copy = remote
                .call(libc::SYS_fcntl, &[tfd, libc::F_DUPFD_CLOEXEC as u64, high])
                .map_err(step(format!("set fd {} aside", t.tfd)))?;
            let cloexec = flags & libc::FD_CLOEXEC as u64 != 0;
            Some((copy, if cloexec { libc::O_CLOEXEC as u64 } else { 0 }))
        }
        Err(e) if e.raw_os_error() == Some(libc::EBADF) => None,
        Err(e) => return Err(step(format!("F_GETFD of fd {}", t.tfd))(e)),
    };
    remote
        .call(libc::SYS_dup3, &[h as u64, tfd, libc::O_CLOEXEC as u64])
        .map_err(step(format!("dup3 fd {h} onto fd {}", t.tfd)))?;
    let added = add();
    let back = match held {
        Some((copy, flags)) => remote
            .call(libc::SYS_dup3, &[copy, tfd, flags])
            .and_then(|_| remote.call(libc::SYS_close, &[copy])),
        None => remote.call(libc::SYS_close, &[tfd]),
    };
    added.map_err(step(format!("epoll_ctl ADD of fd {} (the file of fd {h})", t.tfd)))?;
    back.map(drop).map_err(step(format!("put fd {} back", t.tfd)))
}

/// Points every pidfd of another process of the dump held by `holders` (parents first, all
/// stopped, fds placed) at that process, by remote calls in each holder: the first holder of
/// a description opens it, the others take that very description with pidfd_getfd.
pub(crate) fn point_at_processes(descs: &[FileDesc], holders: &[Holder<'_>]) -> Result<(), FileError> {
    let others: HashMap<u32, (&FileDesc, i32)> = descs
        .iter()
        .filter_map(|d| match &d.kind {
            Some(Kind::Pidfd(p)) if p.pid != 0 => Some((d.id, (d, p.pid))),
            _ => None,
        })
        .collect();
    if others.is_empty() {
        return Ok(());
    }
    let by_id: HashMap<u32, &FileDesc> = descs.iter().map(|d| (d.id, d)).collect();
    // Description -> (image pid, fd) of the holder that opened it.
    let mut first: HashMap<u32, (i32, i32)> = HashMap::new();
    // (epoll description, target fd) registered again.
    let mut registered: HashSet<(u32, i32, i32)> = HashSet::new();
    for h in holders {
        let mine = held_descriptions(h.fds, |id| others.contains_key(&id));
        if mine.is_empty() {
            continue;
        }
        let err = |fd: i32, what: String| move |source: io::Error| FileError::TakeBack {
            pid: h.pid,
            fd,
            what,
            source,
        };
        let remote = Remote::at_site(h.pid, h.site)
            .map_err(err(-1, "take the process to point its pidfds".into()))?;
        for id in mine {
            let (desc, target) = others[&id];
            let fds: Vec<&FdEntry> = h.fds.iter().filter(|e| e.file_id == id).collect();
            let at = fds[0].fd;
            let fd = match first.get(&id) {
                None => remote
                    .call(
                        libc::SYS_pidfd_open,
                        &[target as u64, u64::from(pidfd_flags(desc))],
                    )
                    .map_err(err(at, format!("pidfd_open of pid {target}")))?,
                Some(&(from, from_fd)) => {
                    let of = remote
                        .call(libc::SYS_pidfd_open, &[from as u64, 0])
                        .map_err(err(at, format!("pidfd_open of pid {from}")))?;
                    let got = remote.call(libc::SYS_pidfd_getfd, &[of, from_fd as u64, 0]);
                    let _ = remote.call(libc::SYS_close, &[of]);
                    got.map_err(err(
                        at,
                        format!("pidfd_getfd of fd {from_fd} of pid {from} (its pidfd of pid {target})"),
                    ))?
                }
            };
            for e in &fds {
                let flags = if e.cloexec { libc::O_CLOEXEC as u64 } else { 0 };
                remote
                    .call(libc::SYS_dup3, &[fd, e.fd as u64, flags])
                    .map_err(err(e.fd, format!("dup3 its pidfd of pid {target}")))?;
            }
            let _ = remote.call(libc::SYS_close, &[fd]);
            first.entry(id).or_insert((h.image_pid, at));
            // Its epolls watched the placeholder, which went with its last fd.
            let what = format!("its pidfd of pid {target}");
            watch_again(h.pid, &remote, h.site + crate::memory::PAGE, &by_id, h.fds, &fds, &mut registered, &what)?;
        }
        remote
            .release()
            .map_err(err(-1, "put the process back after pointing its pidfds".into()))?;
    }
    Ok(())
}

/// The descriptions among `fds` (a holder's table) that `wanted` picks, each once, in id order:
/// the ones a late pass (pidfds, /proc files) opens or takes for that holder.
pub(super) fn held_descriptions(fds: &[FdEntry], wanted: impl Fn(u32) -> bool) -> Vec<u32> {
    let mut ids: Vec<u32> = fds
        .iter()
        .map(|e| e.file_id)
        .filter(|&id| wanted(id))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}
