//! File locks and leases a process holds, and the signal owner of its fds: read at dump from
//! fdinfo (`lock:` lines) and fcntl on a duplicate, taken back at restore by remote calls in
//! the restored process itself, so each lock has the same owner as before.
//!
//! ```text
//! fdinfo lock: line                    owner               taken back with
//!   POSIX  ADVISORY  WRITE pid d:i s e   the process          fcntl(fd, F_SETLK)
//!   OFDLCK ADVISORY  READ  -1  d:i s e   the description      fcntl(fd, F_OFD_SETLK)
//!   FLOCK  ADVISORY  WRITE pid d:i 0 EOF the description      flock(fd, LOCK_EX|LOCK_NB)
//!   LEASE  ACTIVE    READ  pid d:i 0 EOF the description      fcntl(fd, F_SETLEASE)
//!   LEASE  BREAKING  UNLCK pid d:i 0 EOF the description      F_SETLEASE, then an open
//!                                                           O_NONBLOCK that breaks it
//! F_GETOWN_EX / F_GETSIG (a duplicate)   the description      fcntl(fd, F_SETOWN_EX / F_SETSIG)
//! ```
//!
//! fdinfo of an fd lists the locks taken through its description (and, for POSIX locks, by
//! the process reading it): each lock is recorded once per process, with the first fd that
//! shows it. A POSIX lock goes away when its process closes ANY fd of the file, so locks are
//! taken back after every temporary fd of the restore (mappings, control pipes) is closed.
//! A lease being broken comes back being broken: fdinfo shows what it is being broken to
//! (UNLCK, READ), not what it was; a downgrade (READ) was a write lease, so was an unlock on
//! a writable fd (a read lease needs a read-only one); on a read-only fd, an open for reading
//! (O_NONBLOCK) tells them apart (a write lease conflicts, and being broken already stays as
//! it was: EWOULDBLOCK). The restore takes the lease, then opens the file in the breaking mode
//! with O_NONBLOCK from cryo, which starts the break again (the break time starts again too).
//! The break signal is not sent again: the process got it at the time, and the lease's owner
//! is cleared (F_SETOWN 0) before the break and set back afterwards ([`set_owners`]).
//! A mandatory lock, a lease breaker or a delegation cannot be taken back: the dump refuses
//! it. A signal owner is a process, thread or process group of the dump (a server's
//! master owning the channel its workers share, say): the pids come back, so the same
//! process gets the signal. An owner outside the dump is refused: the restore could not
//! promise it. The owner belongs to the description: it is recorded once, with the first
//! process of the dump (parents first) holding the description, and set again by that
//! process at restore (the kernel keeps the setter's credentials for the permission check of
//! each signal: for a description its owner set itself, as nginx's master does, the same).

use std::collections::{HashMap, HashSet};
use std::io;
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use cryo_proto::image::file_desc::Kind;
use cryo_proto::image::{
    FdOwner, FileDesc, FileLock, FileLockKind, LeaseBreak, MmCore, TaskCore,
};
use nix::unistd::Pid;

use super::inspect::OpenFd;
use super::kind::task_pidfd;
use super::FileError;
use crate::remote::Remote;
use crate::sys;
use crate::sys::fcntl;
use crate::sys::ptrace as pt;

/// One `lock:` line of an fdinfo, as the kernel prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LockLine<'a> {
    /// POSIX, OFDLCK, FLOCK, LEASE, DELEG...
    kind: &'a str,
    /// ADVISORY / MANDATORY for locks; ACTIVE / BREAKING / BREAKER for leases.
    state: &'a str,
    /// READ, WRITE or UNLCK.
    mode: &'a str,
    pid: i32,
    start: u64,
    /// None: to the end of the file (EOF).
    end: Option<u64>,
}

/// Parses the value of a `lock:` line: `1: POSIX  ADVISORY  WRITE 20554 fe:00:1098 5 14`.
fn parse_line(value: &str) -> Option<LockLine<'_>> {
    let mut words = value.split_whitespace();
    words.next()?.strip_suffix(':')?;
    let kind = words.next()?;
    let state = words.next()?;
    let mode = words.next()?;
    let pid = words.next()?.parse().ok()?;
    let _inode = words.next()?;
    let start = words.next()?.parse().ok()?;
    let end = match words.next()? {
        "EOF" => None,
        n => Some(n.parse().ok()?),
    };
    Some(LockLine {
        kind,
        state,
        mode,
        pid,
        start,
        end,
    })
}

/// A lock an fd showed, with the pid that took it (POSIX locks; 0 for the others, which belong
/// to the description).
pub(super) type HeldLock = (i32, FileLock);

/// The locks an fdinfo text (of fd `open`) shows, refused where they cannot be taken back.
pub(super) fn from_fdinfo(open: &OpenFd, text: &str) -> Result<Vec<HeldLock>, FileError> {
    let mut locks = Vec::new();
    for line in text.lines() {
        let Some(value) = line.strip_prefix("lock:") else {
            continue;
        };
        let l = parse_line(value)
            .ok_or_else(|| open.dump_err(format!("cannot parse fdinfo line {line:?}")))?;
        let refuse = |why: &str| open.dump_err(format!("{why} ({}): not supported", value.trim()));
        let kind = match (l.kind, l.state) {
            ("POSIX", "ADVISORY") => FileLockKind::Posix,
            ("OFDLCK", "ADVISORY") => FileLockKind::Ofd,
            ("FLOCK", "ADVISORY") => FileLockKind::Flock,
            ("LEASE", "ACTIVE" | "BREAKING") => FileLockKind::Lease,
            ("LEASE", _) => return Err(refuse("a lease breaker")),
            (_, "MANDATORY") => return Err(refuse("a mandatory lock")),
            _ => return Err(refuse("a lock of this kind")),
        };
        let (write, lease_break) = match (l.state, l.mode) {
            ("BREAKING", "READ") => (true, LeaseBreak::Downgrade),
            ("BREAKING", "UNLCK") => (breaking_lease_was_write(open)?, LeaseBreak::Unlock),
            ("BREAKING", _) => return Err(refuse("a lease being broken to this mode")),
            (_, "WRITE") => (true, LeaseBreak::None),
            (_, "READ") => (false, LeaseBreak::None),
            _ => return Err(refuse("a lock being released")),
        };
        // Its owner is an fd table; the line names the process that took it: judged with the
        // processes sharing the table ([`for_task`]).
        let holder = if kind == FileLockKind::Posix { l.pid } else { 0 };
        locks.push((
            holder,
            FileLock {
                fd: open.fd,
                kind: kind as i32,
                write,
                start: l.start,
                end: l.end.unwrap_or(u64::MAX),
                lease_break: lease_break as i32,
            },
        ));
    }
    Ok(locks)
}

/// Whether the lease on fd `open`, being given up (fdinfo UNLCK), was a write lease. A read
/// lease needs a read-only fd, so a writable one held a write lease. On a read-only one, an
/// open for reading with O_NONBLOCK conflicts with a write lease only: EWOULDBLOCK (the lease,
/// already being broken, is left as it was); through a read lease it opens (closed at once).
fn breaking_lease_was_write(open: &OpenFd) -> Result<bool, FileError> {
    if open.flags & libc::O_ACCMODE as u32 != libc::O_RDONLY as u32 {
        return Ok(true);
    }
    let path = open.proc_path();
    match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(&path)
    {
        Ok(_) => Ok(false),
        Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => Ok(true),
        Err(e) => Err(open.inspect_err("open for reading (which lease is broken)", path, e)),
    }
}

/// Starts again the break of the lease `l` that `pid` holds on its fd `l.fd`: an open of the
/// file in the mode that broke it (for writing: to be given up; for reading: to become a read
/// lease), O_NONBLOCK, which fails with EWOULDBLOCK once the break has begun.
fn start_break(pid: Pid, l: &FileLock) -> io::Result<()> {
    let write = match LeaseBreak::try_from(l.lease_break) {
        Ok(LeaseBreak::None) => return Ok(()),
        Ok(LeaseBreak::Unlock) => true,
        Ok(LeaseBreak::Downgrade) => false,
        Err(_) => return Err(io::Error::from_raw_os_error(libc::EINVAL)),
    };
    match std::fs::OpenOptions::new()
        .read(!write)
        .write(write)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(super::inspect::proc_fd(pid, l.fd))
    {
        Ok(_) => Err(io::Error::other("the open went through: no lease to break")),
        Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The signal owner and signal of fd `open` (F_GETOWN_EX, F_GETSIG on a duplicate taken
/// through the task's pidfd), None when neither was set.
pub(super) fn owner_of(
    open: &OpenFd,
    pidfd: &mut Option<OwnedFd>,
) -> Result<Option<FdOwner>, FileError> {
    if open.flags & libc::O_PATH as u32 != 0 {
        return Ok(None); // an O_PATH fd has no owner: fcntl refuses to look (EBADF)
    }
    let pidfd = task_pidfd(open, pidfd)?;
    let proc_path = || open.proc_path();
    let dup = sys::pidfd::pidfd_getfd(pidfd, open.fd)
        .map_err(|e| open.inspect_err("pidfd_getfd", proc_path(), e))?;
    let (owner_type, owner) = fcntl::owner(dup.as_fd())
        .map_err(|e| open.inspect_err("F_GETOWN_EX", proc_path(), e))?;
    let signal = fcntl::signal(dup.as_fd())
        .map_err(|e| open.inspect_err("F_GETSIG", proc_path(), e))?;
    if owner == 0 && signal == 0 {
        return Ok(None);
    }
    // fcntl(F_NOTIFY) makes its caller the directory's owner (dnotify signals it), and
    // nothing reads its mask back: an owner of a directory is taken for a dnotify watch
    // (F_SETOWN on a directory does nothing else).
    let directory = nix::sys::stat::fstat(dup.as_fd())
        .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR);
    if directory && owner != 0 {
        return Err(open.refuse(
            "a directory with a signal owner: a dnotify watch (fcntl F_NOTIFY), whose events \
             mask cannot be read back",
            false,
        ));
    }
    Ok(Some(FdOwner {
        fd: open.fd,
        owner_type,
        owner,
        signal,
    }))
}

/// The processes, threads and process groups of a dump: the signal owners a restore can
/// give back (their pids come back).
#[derive(Debug, Default, Clone)]
pub struct DumpMembers {
    pids: HashSet<i32>,
    tids: HashSet<i32>,
    pgids: HashSet<i32>,
    /// Each process whose fd table is its parent's, with that parent.
    table_of_parent: HashMap<i32, i32>,
}

impl DumpMembers {
    /// Records that `pid` has its parent `ppid`'s fd table (task/sharing.rs).
    pub fn add_table_of_parent(&mut self, pid: Pid, ppid: Pid) {
        self.table_of_parent.insert(pid.as_raw(), ppid.as_raw());
    }

    /// The process whose fd table `pid` has first: the top of its chain of sharers.
    fn table_owner(&self, mut pid: i32) -> i32 {
        while let Some(&p) = self.table_of_parent.get(&pid) {
            pid = p;
        }
        pid
    }

    /// Adds process `pid` of process group `pgid`, with its threads `tids`.
    pub fn add(&mut self, pid: Pid, pgid: i32, tids: &[Pid]) {
        self.pids.insert(pid.as_raw());
        self.pgids.insert(pgid);
        self.tids.extend(tids.iter().map(|t| t.as_raw()));
    }

    /// Whether the owner `o` names one of them (or nobody).
    fn holds(&self, o: &FdOwner) -> bool {
        o.owner == 0
            || match o.owner_type {
                fcntl::F_OWNER_TID => self.tids.contains(&o.owner),
                fcntl::F_OWNER_PID => self.pids.contains(&o.owner),
                fcntl::F_OWNER_PGRP => self.pgids.contains(&o.owner),
                _ => false,
            }
    }
}

/// A task's locks, and its fds' signal owners with their description's id.
pub(super) type TaskLocks = (Vec<FileLock>, Vec<(u32, FdOwner)>);

/// The locks and owners one task's fds showed, each once: `found` holds (description id,
/// lock) for every fd (a description's locks show on each of its fds), `owners` likewise.
/// An owner outside the dump's processes, threads and groups `members` is refused. A POSIX
/// lock is the task's when it took it; one taken by a process sharing its fd table is that
/// process's (taken back by it, so the lock names it again); any other is refused.
pub(super) fn for_task(
    pid: Pid,
    members: &DumpMembers,
    found: Vec<(u32, HeldLock)>,
    owners: Vec<(u32, FdOwner)>,
) -> Result<TaskLocks, FileError> {
    let mut seen = HashSet::new();
    let mut locks = Vec::new();
    for (id, (holder, l)) in found {
        if holder != 0 && holder != pid.as_raw() {
            if members.table_owner(holder) == members.table_owner(pid.as_raw()) {
                continue;
            }
            return Err(FileError::Dump {
                pid,
                fd: l.fd,
                detail: format!(
                    "a POSIX lock of another process (pid {holder}: its {}): not supported",
                    describe(&l)
                ),
            });
        }
        if seen.insert((id, l.kind, l.write, l.start, l.end)) {
            locks.push(l);
        }
    }
    let mut seen = HashSet::new();
    let mut kept = Vec::new();
    for (id, o) in owners {
        if !seen.insert(id) {
            continue;
        }
        if !members.holds(&o) {
            return Err(FileError::Dump {
                pid,
                fd: o.fd,
                detail: format!(
                    "its signal owner ({}) is not a process, thread or process group of the \
                     dump: not supported yet",
                    describe_owner(&o)
                ),
            });
        }
        kept.push((id, o));
    }
    Ok((locks, kept))
}

/// Refuses a flock, OFD lock or lease whose open file description a process outside the
/// dump (`members`) also holds: the lock stays with that description while any fd on it
/// lives, so the restored one, on a new description, would conflict with it.
pub(crate) fn refuse_held_outside(
    tasks: &[(Pid, &[FileLock])],
    members: &HashSet<i32>,
) -> Result<(), FileError> {
    for (pid, locks) in tasks {
        for l in locks.iter().filter(|l| {
            matches!(
                FileLockKind::try_from(l.kind),
                Ok(FileLockKind::Flock | FileLockKind::Ofd | FileLockKind::Lease)
            )
        }) {
            let err = |detail: String| FileError::Dump {
                pid: *pid,
                fd: l.fd,
                detail,
            };
            let found = super::outside::holder(*pid, l.fd, members, true)
                .map_err(|e| err(format!("look for holders of its description: {e}")))?;
            if let Some(h) = found {
                return Err(err(format!(
                    "its {} is on an open file description also held by pid {} (fd {}), \
                     outside the dump: the lock stays with that description, and the restored \
                     one would conflict with it; dump that process too",
                    describe(l),
                    h.pid,
                    h.fd
                )));
            }
        }
    }
    Ok(())
}

/// Refuses a POSIX lock that a process sharing its parent's fd table took on a file one of
/// its ancestors in that table maps. The restore opens each mapped file in the process that
/// maps it and closes that fd once its memory is made; a POSIX lock belongs to the fd table
/// and goes with any close of an fd on its file, and the ancestors are made whole after their
/// children: the lock the child took back would be dropped. `tasks`: each live process's
/// parent, core and memory record.
pub(crate) fn refuse_dropped_in_shared_tables(
    tasks: &[(i32, &TaskCore, &MmCore)],
    descs: &[FileDesc],
) -> Result<(), FileError> {
    let inode = |id: u32| -> Option<(u64, u64)> {
        match descs.iter().find(|d| d.id == id)?.kind.as_ref()? {
            Kind::Regular(r) => Some((r.dev, r.ino)),
            _ => None,
        }
    };
    let by_pid: HashMap<i32, (i32, &TaskCore, &MmCore)> =
        tasks.iter().map(|&(p, c, m)| (c.pid, (p, c, m))).collect();
    for &(ppid, core, _) in tasks.iter().filter(|(_, c, _)| c.files_of_parent) {
        for l in core
            .file_locks
            .iter()
            .filter(|l| l.kind == FileLockKind::Posix as i32)
        {
            let Some(locked) = core
                .fds
                .iter()
                .find(|e| e.fd == l.fd)
                .and_then(|e| inode(e.file_id))
            else {
                continue;
            };
            let (mut at, mut up) = (core, ppid);
            while at.files_of_parent {
                let Some(&(next_up, parent, mm)) = by_pid.get(&up) else {
                    break;
                };
                let maps = std::iter::once(mm.exe_file_id)
                    .chain(mm.vmas.iter().map(|v| v.file_id))
                    .filter(|&id| id != 0)
                    .any(|id| inode(id) == Some(locked));
                if maps {
                    return Err(FileError::Dump {
                        pid: Pid::from_raw(core.pid),
                        fd: l.fd,
                        detail: format!(
                            "its {} is on a file pid {} maps, which shares its fd table: the \
                             restore's own fd on that file in pid {} would drop the lock; not \
                             supported",
                            describe(l),
                            parent.pid,
                            parent.pid
                        ),
                    });
                }
                (at, up) = (parent, next_up);
            }
        }
    }
    Ok(())
}

/// A lock in words: "POSIX write lock on bytes 5-14".
pub(crate) fn describe(l: &FileLock) -> String {
    let mode = if l.write { "write" } else { "read" };
    let kind = match FileLockKind::try_from(l.kind) {
        Ok(FileLockKind::Posix) => "POSIX",
        Ok(FileLockKind::Ofd) => "OFD",
        Ok(FileLockKind::Flock) => "flock",
        Ok(FileLockKind::Lease) => {
            return match LeaseBreak::try_from(l.lease_break) {
                Ok(LeaseBreak::Unlock) => format!("{mode} lease being given up"),
                Ok(LeaseBreak::Downgrade) => format!("{mode} lease being downgraded"),
                _ => format!("{mode} lease"),
            }
        }
        _ => "unknown",
    };
    let end = if l.end == u64::MAX {
        "EOF".to_string()
    } else {
        l.end.to_string()
    };
    format!("{kind} {mode} lock on bytes {}-{end}", l.start)
}

/// An owner in words: "pid 12", "thread 13", "process group 12", and its signal.
fn describe_owner(o: &FdOwner) -> String {
    let who = match o.owner_type {
        fcntl::F_OWNER_TID => "thread",
        fcntl::F_OWNER_PGRP => "process group",
        _ => "pid",
    };
    match o.signal {
        0 => format!("{who} {}", o.owner),
        s => format!("{who} {}, signal {s}", o.owner),
    }
}

/// F_SETLEASE of `lock_type` on `fd` in restored process `pid`. A lease needs the file's
/// owner as fsuid or CAP_LEASE in the initial user namespace: a process in a user namespace
/// of its own, still root there, takes it as the owner (setfsuid around the call; the stat
/// read through `scratch`, as the process sees the owner).
fn set_lease(pid: Pid, remote: &Remote, scratch: u64, fd: u64, lock_type: u64) -> io::Result<u64> {
    let setlease = || remote.call(libc::SYS_fcntl, &[fd, libc::F_SETLEASE as u64, lock_type]);
    match setlease() {
        Err(e) if e.raw_os_error() == Some(libc::EACCES) => {}
        other => return other,
    }
    // struct stat's st_uid, x86_64: after st_dev, st_ino, st_nlink (8 bytes each), st_mode.
    const ST_UID: u64 = 28;
    remote.call(libc::SYS_fstat, &[fd, scratch])?;
    let mut uid = [0u8; 4];
    pt::read_mem(pid, scratch + ST_UID, &mut uid)?;
    let before = remote.call(libc::SYS_setfsuid, &[u64::from(u32::from_ne_bytes(uid))])?;
    let taken = setlease();
    remote.call(libc::SYS_setfsuid, &[before])?;
    taken
}

/// Takes every lock of `locks` back in the restored process `pid` (stopped under `remote`,
/// `scratch` a writable page of it), through the fds they were recorded with.
pub(crate) fn take_back(
    pid: Pid,
    remote: &Remote,
    scratch: u64,
    locks: &[FileLock],
) -> Result<(), FileError> {
    for l in locks {
        let fd = l.fd as u64;
        let len = if l.end == u64::MAX {
            0
        } else {
            l.end.saturating_sub(l.start).saturating_add(1) as i64
        };
        let setlk = |cmd: u64| -> io::Result<u64> {
            pt::write_mem(pid, scratch, &fcntl::flock_bytes(l.write, l.start as i64, len))?;
            remote.call(libc::SYS_fcntl, &[fd, cmd, scratch])
        };
        let lock_type = if l.write { libc::F_WRLCK } else { libc::F_RDLCK } as u64;
        let done = match FileLockKind::try_from(l.kind) {
            Ok(FileLockKind::Posix) => setlk(libc::F_SETLK as u64),
            Ok(FileLockKind::Ofd) => setlk(fcntl::F_OFD_SETLK),
            Ok(FileLockKind::Flock) => {
                let op = if l.write { libc::LOCK_EX } else { libc::LOCK_SH } | libc::LOCK_NB;
                remote.call(libc::SYS_flock, &[fd, op as u64])
            }
            // F_SETLEASE makes the process the owner of the file's signals: cleared, so that
            // a break started again sends no second signal (the owner of the dump is set
            // back afterwards, by set_owners).
            Ok(FileLockKind::Lease) => set_lease(pid, remote, scratch, fd, lock_type)
                .and_then(|_| remote.call(libc::SYS_fcntl, &[fd, libc::F_SETOWN as u64, 0]))
                .and_then(|_| start_break(pid, l).map(|()| 0)),
            _ => Err(io::Error::from_raw_os_error(libc::EINVAL)),
        };
        done.map_err(|source| {
            let held = matches!(
                source.raw_os_error(),
                Some(libc::EAGAIN) | Some(libc::EACCES)
            );
            let what = if held {
                format!(
                    "take back its {} (another process holds a conflicting lock)",
                    describe(l)
                )
            } else {
                format!("take back its {}", describe(l))
            };
            FileError::TakeBack {
                pid,
                fd: l.fd as RawFd,
                what,
                source,
            }
        })?;
    }
    Ok(())
}

/// Gives every fd of `owners` its signal owner and signal again in the restored process `pid`
/// (after its leases: F_SETLEASE makes the caller the owner).
pub(crate) fn set_owners(
    pid: Pid,
    remote: &Remote,
    scratch: u64,
    owners: &[FdOwner],
) -> Result<(), FileError> {
    for o in owners {
        let fd = o.fd as u64;
        let err = |what: &str| {
            let what = format!("{what} ({})", describe_owner(o));
            move |source| FileError::TakeBack {
                pid,
                fd: o.fd,
                what,
                source,
            }
        };
        if o.owner != 0 {
            let mut raw = [0u8; 8];
            raw[..4].copy_from_slice(&o.owner_type.to_ne_bytes());
            raw[4..].copy_from_slice(&o.owner.to_ne_bytes());
            pt::write_mem(pid, scratch, &raw)
                .and_then(|()| {
                    remote.call(libc::SYS_fcntl, &[fd, fcntl::F_SETOWN_EX, scratch])
                })
                .map_err(err("set its signal owner"))?;
        }
        if o.signal != 0 {
            remote
                .call(libc::SYS_fcntl, &[fd, fcntl::F_SETSIG, o.signal as u64])
                .map_err(err("set its signal"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_lines_are_parsed() {
        let l = parse_line("\t1: POSIX  ADVISORY  WRITE 20554 fe:00:10010986 5 14").unwrap();
        assert_eq!(
            (l.kind, l.state, l.mode, l.pid, l.start, l.end),
            ("POSIX", "ADVISORY", "WRITE", 20554, 5, Some(14))
        );
        let l = parse_line("1: OFDLCK ADVISORY  READ -1 fe:00:1 0 EOF").unwrap();
        assert_eq!((l.kind, l.pid, l.end), ("OFDLCK", -1, None));
        let l = parse_line("2: LEASE  BREAKING  READ 7 fe:00:1 0 EOF").unwrap();
        assert_eq!(l.state, "BREAKING");
        assert!(parse_line("1: POSIX ADVISORY").is_none());
    }

    #[test]
    fn locks_are_described() {
        let l = FileLock {
            fd: 3,
            kind: FileLockKind::Posix as i32,
            write: true,
            start: 5,
            end: u64::MAX,
            lease_break: 0,
        };
        assert_eq!(describe(&l), "POSIX write lock on bytes 5-EOF");
    }
}
