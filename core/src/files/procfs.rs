//! Files of /proc and namespace fds: reopened by the process holding them, by path, once
//! what they name exists again.
//!
//! ```text
//! dump   a path on cryo's /proc mount (the link's pid is then one cryo sees):
//!          /proc/P/REST, /proc/P/task/T/REST  P a process of the dump (pidfd.rs knows them):
//!                                             recorded with P (and T: P's main thread, or a
//!                                             thread of the holder itself); any other pid is
//!                                             refused (it would name another process or none)
//!          /proc/1/REST, 1 outside the dump  recorded with pid 1's identity (boot id and start
//!                                             time): cryo's init, the same process at a
//!                                             restore on this boot, whatever PID namespace
//!                                             the restore makes (the restored process reads
//!                                             cryo's /proc); refused at restore where pid 1 is
//!                                             another process (another host, boot, or a
//!                                             cryo in another PID namespace)
//!          /proc/P/mem                        refused
//!          /proc/REST (meminfo, loadavg...)   recorded by path
//!        a path MOUNT/N/REST on the proc mount of the holder's own mount namespace, of its PID
//!          namespace (one below cryo's, the dump's): N must be a process of the dump there
//!          (its start time read through that mount is the one cryo sees): recorded with that
//!          process and MOUNT (the restore keeps its pid there)
//!          a position other than 0 must be settable again: cryo opens the path and seeks
//!          MOUNT/N (deleted), MOUNT/N/REST with no process N there now (it ended since the
//!          open): recorded with N (gone_pid), its mount table checked to be the holder's
//!        a namespace fd (link `KIND:[INO]`): a process of the dump in it (the holder first)
//!          -> recorded with that process; else cryo's own -> recorded as cryo's; else refused
//!        pids are the image's (task/pidns.rs renames them for a dump of a PID namespace)
//! restore
//!   in the child, with its other fds  /proc/REST, /proc/1/REST: opened by path, position set;
//!                                     cryo's namespace: taken from the slot cryo filled
//!                                     before the first fork (/proc/self/ns/KIND of cryo);
//!                                     the others: a placeholder at their numbers
//!   in finish (restore/finish.rs)     once the process is reshaped and its threads made
//!                                     (every process of the restore exists): by remote
//!                                     calls in the holder, openat of /proc/P'/REST (P' the
//!                                     restored process as cryo's /proc names it) or
//!                                     /proc/P'/ns/KIND (MOUNT/N/REST for a file of the
//!                                     namespace's own proc; MOUNT/N/REST while a process
//!                                     cryo forks holds pid N there), lseek, dup3 over the
//!                                     placeholders;
//!                                     a description held by several processes is opened by
//!                                     the first one finished, the others take it with
//!                                     pidfd_getfd (one description, one offset)
//! ```
//!
//! The restored process must see /proc through cryo's mount (the dump checks that the fd is
//! on it); the contents read from a seq_file after a position were regenerated when the
//! position was set (as any read after a seek does).

use std::collections::HashMap;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use cryo_proto::image::{file_desc::Kind, FdEntry, FileDesc, ProcFile};
use nix::unistd::Pid;

use super::inspect::OpenFd;
use super::kind::{Dumping, FileKind, Opened, Opening, Seen};
use super::open::{open_flags, open_no_symlinks, set_async};
use super::{restore_err, FileError};
use crate::remote::Remote;
use crate::sys;

/// Files of /proc and namespace fds.
pub(super) struct ProcFiles;

/// The namespace kinds a link `KIND:[INO]` of nsfs names.
pub(super) const NAMESPACES: [&str; 8] = ["net", "mnt", "pid", "user", "uts", "ipc", "cgroup", "time"];

impl FileKind for ProcFiles {
    type Record = ProcFile;

    fn record(kind: &Kind) -> Option<&ProcFile> {
        match kind {
            Kind::ProcFile(p) => Some(p),
            _ => None,
        }
    }

    fn claims(&self, fd: &Dumping<'_>) -> bool {
        matches!(fd.seen, Seen::Proc { .. } | Seen::Namespace { .. })
    }

    fn dump(&self, fd: &mut Dumping<'_>) -> Result<Kind, FileError> {
        let pids = super::pidfd::dump_pids(fd.state);
        let rec = match &fd.seen {
            Seen::Proc { path } => dump_file(fd.open, fd.meta, path, &pids)?,
            Seen::Namespace { kind } => dump_namespace(fd.open, kind, fd.meta.ino(), &pids)?,
            _ => unreachable!("claimed"),
        };
        // What the restore's validate would refuse, the dump refuses first.
        check_shape(&rec).map_err(|why| fd.open.refuse(why, false))?;
        Ok(Kind::ProcFile(rec))
    }

    fn validate(
        &self,
        desc: &FileDesc,
        rec: &ProcFile,
        _cx: &mut super::kind::Checking<'_>,
    ) -> Result<(), FileError> {
        // /proc/PID is not there before the restore makes PID: only the record's shape is
        // checked here, the file where it is opened (open_late names pid, fd and path).
        check_shape(rec).map_err(|detail| FileError::Invalid {
            id: desc.id,
            detail,
        })?;
        // (One of the namespace's own proc: free there or not, the holder's fork says.)
        if rec.gone_pid != 0
            && rec.proc_mount.is_empty()
            && crate::proc::dir(Pid::from_raw(rec.gone_pid)).exists()
        {
            return Err(FileError::Invalid {
                id: desc.id,
                detail: format!(
                    "/proc/{n} of a process that had ended: pid {n} is taken here (a process \
                     with that pid is made to end for it)",
                    n = rec.gone_pid
                ),
            });
        }
        if !rec.init.is_empty() {
            let here = init_identity().map_err(|e| restore_err(desc, "read pid 1's identity", e))?;
            if here != rec.init {
                return Err(FileError::Invalid {
                    id: desc.id,
                    detail: format!(
                        "/proc/1{} named pid 1 (boot and start time {}), and pid 1 here is \
                         another process ({here}): it would name another process",
                        rec.rest, rec.init
                    ),
                });
            }
        }
        Ok(())
    }

    fn open(
        &self,
        desc: &FileDesc,
        rec: &ProcFile,
        cx: &mut Opening<'_>,
    ) -> Result<Opened, FileError> {
        if rec.pid != 0 || !rec.proc_mount.is_empty() {
            // Opened in finish, once what it names exists (the namespace's own proc is
            // mounted then): a placeholder meanwhile.
            return placeholder(desc).map(Opened::Now);
        }
        if !rec.namespace.is_empty() {
            let slot = cx
                .opts
                .shared
                .get(&slot_key(desc))
                .copied()
                .ok_or_else(|| FileError::Invalid {
                    id: desc.id,
                    detail: format!("cryo's {} namespace: cryo opened none for it", rec.namespace),
                })?;
            return sys::fd::dup_at_least(sys::fd::borrow_raw(slot), 3)
                .map(Opened::Now)
                .map_err(|e| restore_err(desc, "dup cryo's namespace", e));
        }
        if rec.gone_pid != 0 {
            let flags = open_flags(desc.flags);
            let fd = crate::task::process::in_gone_process_dir(Pid::from_raw(rec.gone_pid), |dir| {
                nix::fcntl::open(dir, flags, nix::sys::stat::Mode::empty())
            })
            .map_err(|e| restore_err(desc, "open /proc/N of a process made to end", e.into()))?;
            set_async(desc, &fd)?;
            return Ok(Opened::Now(fd));
        }
        let path = if rec.init.is_empty() {
            rec.rest.clone()
        } else {
            format!("/proc/1{}", rec.rest)
        };
        let fd = open_no_symlinks(&path, open_flags(desc.flags))
            .map_err(|e| restore_err(desc, "open", e.into()))?;
        if desc.pos != 0 {
            nix::unistd::lseek(&fd, desc.pos as i64, nix::unistd::Whence::SeekSet)
                .map_err(|e| restore_err(desc, "lseek to its position", e.into()))?;
        }
        set_async(desc, &fd)?;
        Ok(Opened::Now(fd))
    }

    fn in_flight(&self) -> bool {
        // In a unix socket's queue it has no holder to reopen it.
        false
    }

    fn describe(&self, _desc: &FileDesc, p: &ProcFile) -> String {
        match (p.namespace.is_empty(), p.pid) {
            (true, 0) if p.gone_pid != 0 && !p.proc_mount.is_empty() => format!(
                "proc file {}/{}{} (its namespace's proc; its process had ended)",
                p.proc_mount, p.gone_pid, p.rest
            ),
            (true, 0) if p.gone_pid != 0 => {
                format!("proc file /proc/{} (deleted: its process had ended)", p.gone_pid)
            }
            (true, 0) if !p.init.is_empty() => format!("proc file /proc/1{} (pid 1)", p.rest),
            (true, 0) if !p.proc_mount.is_empty() => {
                format!("proc file {}{} (its namespace's proc)", p.proc_mount, p.rest)
            }
            (true, 0) => format!("proc file {}", p.rest),
            (true, pid) if p.tid != 0 => format!("proc file /proc/{pid}/task/{}{}", p.tid, p.rest),
            (true, pid) if !p.proc_mount.is_empty() => {
                format!("proc file {}/{pid}{} (its namespace's proc)", p.proc_mount, p.rest)
            }
            (true, pid) => format!("proc file /proc/{pid}{}", p.rest),
            (false, 0) => format!("cryo's {} namespace {}:[{}]", p.namespace, p.namespace, p.ns_inode),
            (false, pid) => format!(
                "{} namespace {}:[{}] of pid {pid}",
                p.namespace, p.namespace, p.ns_inode
            ),
        }
    }
}

/// Whether `below` (a path below a proc mount, without its leading '/') is a file of proc
/// itself, not of a process: its first name no pid, self or thread-self.
fn of_proc_itself(below: &str) -> bool {
    !below.is_empty()
        && !below.starts_with(|c: char| c.is_ascii_digit())
        && !below.starts_with("self")
        && !below.starts_with("thread-self")
}

/// Whether `rest` (what follows /N) names a file of /proc/N that, N ended, reads the same
/// whichever process N was (an error, an end of file: what it holds of N went with it), or a
/// mount table (what it shows is the mount namespace and root of N at the open: the dump
/// checks they are the holder's, where the restore makes N): not its network files (they keep
/// its network namespace), a thread's directory or its memory (refused as for any process).
fn of_gone_process(rest: &str) -> bool {
    let first = rest.split('/').nth(1).unwrap_or_default();
    (rest.is_empty() || rest.starts_with('/')) && !matches!(first, "net" | "task" | "mem")
}

/// A record's shape: a known namespace kind, or a path that stays below /proc (a file of
/// /proc itself, not of a process) or below /proc/PID.
fn check_shape(rec: &ProcFile) -> Result<(), String> {
    if !rec.init.is_empty() && (rec.pid != 0 || rec.tid != 0 || !rec.namespace.is_empty()) {
        return Err("a file of pid 1 outside the dump that names another process".into());
    }
    if !rec.proc_mount.is_empty()
        && (rec.pid < 0
            || rec.tid != 0
            || !rec.namespace.is_empty()
            || !rec.init.is_empty()
            || (rec.gone_pid != 0 && (rec.pid != 0 || !of_gone_process(&rec.rest)))
            || !rec.proc_mount.starts_with('/')
            || rec.proc_mount.split('/').any(|c| c == "." || c == ".."))
    {
        return Err(format!(
            "a file of the proc mount at {:?} of its namespace without a process of it",
            rec.proc_mount
        ));
    }
    if rec.gone_pid != 0 && !rec.proc_mount.is_empty() {
        // Below the namespace's own proc: /N (deleted) or /N/REST, checked above.
        if rec.gone_pid < 0 {
            return Err(format!("/{} of a process that had ended", rec.gone_pid));
        }
        if rec.rest.split('/').skip(1).any(|c| c.is_empty() || c == "." || c == "..") {
            return Err(format!("{:?} leaves its directory", rec.rest));
        }
        return Ok(());
    }
    if rec.gone_pid != 0 {
        if rec.gone_pid < 0 || rec.pid != 0 || rec.tid != 0 || !rec.rest.is_empty() || !rec.namespace.is_empty() || !rec.init.is_empty() {
            return Err(format!("/proc/{} of a process that had ended, with a path or pid", rec.gone_pid));
        }
        return Ok(());
    }
    if !rec.namespace.is_empty() {
        if !NAMESPACES.contains(&rec.namespace.as_str()) || !rec.rest.is_empty() {
            return Err(format!("namespace fd of unknown kind {:?}", rec.namespace));
        }
        return Ok(());
    }
    let not_of_proc = || format!("{:?} is no file of /proc itself", rec.rest);
    let path = if rec.pid == 0 && rec.init.is_empty() {
        // Below cryo's /proc, or below the namespace's own proc mount.
        let below = if rec.proc_mount.is_empty() {
            rec.rest.strip_prefix("/proc")
        } else {
            Some(rec.rest.as_str())
        };
        match below {
            // /proc itself (a directory fd on it).
            Some("") if rec.proc_mount.is_empty() => "",
            Some(below) => match below.strip_prefix('/') {
                Some(below) if of_proc_itself(below) => below,
                _ => return Err(not_of_proc()),
            },
            None => return Err(not_of_proc()),
        }
    } else if rec.rest.is_empty() {
        ""
    } else {
        rec.rest
            .strip_prefix('/')
            .ok_or_else(|| format!("{:?} is no path below /proc/PID", rec.rest))?
    };
    if !path.is_empty() && path.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        return Err(format!("{:?} leaves its directory", rec.rest));
    }
    Ok(())
}

/// The device of cryo's /proc: the fds reopened by path must be on it.
fn cryos_proc_dev() -> Option<u64> {
    std::fs::metadata("/proc").ok().map(|m| m.dev())
}

/// The record of an fd on a file of /proc at `path`, held by `open.pid`.
fn dump_file(
    open: &OpenFd,
    meta: &std::fs::Metadata,
    path: &str,
    pids: &std::collections::HashSet<i32>,
) -> Result<ProcFile, FileError> {
    if cryos_proc_dev() != Some(meta.dev()) {
        return dump_namespace_proc_file(open, path, pids);
    }
    let below = path.strip_prefix("/proc").unwrap_or(path);
    let mut parts = below.splitn(3, '/').skip(1);
    let first = parts.next().unwrap_or("");
    // The directory of a process that ended and was reaped (the link "/proc/N (deleted)").
    if let Some(n) = first.strip_suffix(" (deleted)") {
        let gone = crate::proc::gone_process_dir(open.pid, path).filter(|_| parts.next().is_none());
        return match gone {
            Some(_) if open.pos != 0 && open.flags & libc::O_PATH as u32 == 0 => Err(open.refuse(
                format!("/proc/{n} of a process that has ended, at position {}", open.pos),
                false,
            )),
            Some(gone_pid) => Ok(ProcFile {
                gone_pid,
                ..Default::default()
            }),
            None => Err(open.refuse(
                format!(
                    "/proc/{n} of a process that has ended, seen from a PID namespace other \
                     than cryo's (the pid is not cryo's to make again)"
                ),
                false,
            )),
        };
    }
    let Ok(pid) = first.parse::<i32>() else {
        refuse_pressure_trigger(open, first, path)?;
        check_position(open, path)?;
        return Ok(ProcFile {
            rest: path.to_string(),
            ..Default::default()
        });
    };
    if pid == 1 && !pids.contains(&pid) {
        return dump_init_file(open, path, parts.next());
    }
    if !pids.contains(&pid) {
        let whose = if crate::proc::dir(Pid::from_raw(pid)).exists() {
            "a process outside the dump (it would name another process or none)"
        } else {
            // What it reads depends on the process it was opened on (mountinfo: its mount
            // namespace), which is gone.
            "a process that has ended (only its directory itself is made again)"
        };
        return Err(open.refuse(format!("file of /proc/{pid}, {whose}"), false));
    }
    let mut rest = parts.next().map(|r| format!("/{r}")).unwrap_or_default();
    let mut tid = 0;
    if let Some(in_task) = rest.strip_prefix("/task/") {
        let (t, after) = in_task.split_once('/').unwrap_or((in_task, ""));
        if let Ok(t) = t.parse::<i32>() {
            if t != pid && pid != open.pid.as_raw() {
                return Err(open.refuse(
                    format!("file of thread {t} of pid {pid} (another process's thread)"),
                    true,
                ));
            }
            tid = t;
            rest = if after.is_empty() { String::new() } else { format!("/{after}") };
        }
    }
    if rest == "/mem" {
        return Err(open.refuse(
            format!("{path} (a process's memory, bound to the address space at open)"),
            true,
        ));
    }
    check_position(open, path)?;
    Ok(ProcFile {
        pid,
        tid,
        rest,
        ..Default::default()
    })
}

/// Refuses a file of /proc/pressure (`first` the name below /proc) open for writing: a PSI
/// trigger written to it lives with the description, and a reopen by path has none.
fn refuse_pressure_trigger(open: &OpenFd, first: &str, path: &str) -> Result<(), FileError> {
    if first == "pressure" && open.flags as i32 & libc::O_ACCMODE != libc::O_RDONLY {
        return Err(open.refuse(
            format!("{path} open for writing (a PSI trigger written to it would be lost)"),
            false,
        ));
    }
    Ok(())
}

/// The record of an fd on a file of another proc mount than cryo's at `path`: one of the
/// holder's own mount namespace, of its PID namespace (a container's /proc, zdtm shm's
/// /proc/self/maps), naming a process of the dump.
fn dump_namespace_proc_file(
    open: &OpenFd,
    path: &str,
    pids: &std::collections::HashSet<i32>,
) -> Result<ProcFile, FileError> {
    let refuse = |why: String| {
        open.refuse(
            format!("file {path} of a proc mount other than cryo's /proc: {why}"),
            true,
        )
    };
    let ns_pids = crate::task::pidns::nspid(open.pid).map_err(|e| refuse(e.to_string()))?;
    if ns_pids.len() != 2 {
        return Err(refuse(
            "the holder is not in a PID namespace one below cryo's (the pids it names are \
             another namespace's)"
                .into(),
        ));
    }
    let table = format!("/proc/{}/mountinfo", open.pid);
    let mounts = std::fs::read_to_string(&table)
        .map_err(|e| open.inspect_err("read the mount table", table.into(), e))?;
    let mount = crate::task::mount_ns::mountinfo::parse(&mounts)
        .into_iter()
        .find(|m| u64::from(m.id) == open.mnt_id && m.fstype == "proc")
        .map(|m| crate::task::mount_ns::mountinfo::unescape(&m.point));
    let Some(mount) = mount else {
        return Err(refuse("not a proc mount of the holder's mount namespace".into()));
    };
    let below = if mount == "/" {
        Some(path)
    } else {
        path.strip_prefix(mount.as_str()).filter(|b| b.starts_with('/'))
    };
    let Some(below) = below else {
        return Err(refuse(format!("not below its mount point {mount}")));
    };
    let mut parts = below.splitn(3, '/').skip(1);
    let first = parts.next().unwrap_or_default();
    if of_proc_itself(first) {
        // A file of that proc itself (/sys/..., meminfo...): reopened there by its path.
        check_position(open, &format!("/proc/{}/root{path}", open.pid))?;
        return Ok(ProcFile {
            rest: below.to_string(),
            proc_mount: mount,
            ..Default::default()
        });
    }
    if let Some(n) = first.strip_suffix(" (deleted)").and_then(|n| n.parse::<i32>().ok()) {
        if parts.next().is_none() {
            // The directory of a process that ended and was reaped.
            return dump_gone_process_file(open, path, &mount, n, String::new(), ns_pids[1]);
        }
    }
    let Some(n) = first.parse::<i32>().ok() else {
        return Err(refuse(
            "neither a file of a process (/PID/...) nor of that proc itself".into(),
        ));
    };
    let rest = parts.next().map(|r| format!("/{r}")).unwrap_or_default();
    if rest.starts_with("/task/") || rest == "/mem" {
        return Err(refuse("a thread's directory or a process's memory".into()));
    }
    let ns_inode = |pid: i32| crate::proc::stat_link(Pid::from_raw(pid), "ns/pid").map(|m| m.ino()).ok();
    let ours = ns_inode(open.pid.as_raw());
    let named = pids.iter().copied().find(|&p| {
        ns_inode(p) == ours
            && crate::task::pidns::nspid(Pid::from_raw(p)).is_ok_and(|ns| ns.last() == Some(&n))
    });
    let through = |n: i32| PathBuf::from(format!("/proc/{}/root{mount}/{n}", open.pid));
    if named.is_none() && through(n).symlink_metadata().is_err() {
        // No process N there now: one that ended since the holder opened the file.
        return dump_gone_process_file(open, path, &mount, n, rest, ns_pids[1]);
    }
    let Some(host_pid) = named else {
        return Err(refuse(format!(
            "pid {n} there is no process of the dump in the holder's PID namespace"
        )));
    };
    // The mount is of that namespace if pid N through it is the process cryo knows as
    // host_pid: the same start.
    let through_mount = PathBuf::from(format!("/proc/{}/root{mount}/{n}/stat", open.pid));
    let there = crate::proc::task_stat::read_at(&through_mount).map(|s| s.start_ticks);
    let here = crate::proc::task_stat::read(Pid::from_raw(host_pid)).map(|s| s.start_ticks);
    if there.is_err() || there.ok() != here.ok() {
        return Err(refuse(format!(
            "pid {n} through {mount} is not the process of the dump with that pid (a proc \
             mount of another PID namespace)"
        )));
    }
    check_position(open, &format!("/proc/{}/root{path}", open.pid))?;
    Ok(ProcFile {
        pid: host_pid,
        rest,
        proc_mount: mount,
        ..Default::default()
    })
}

/// The record of an fd on `path`, file `rest` (or the directory itself: "") of process `n` of
/// the proc mount `mount` of the holder's own PID namespace (`ns_pid`: the holder's pid there),
/// `n` having ended since it was opened: the restore makes `n` again for the open, in the
/// holder's mount namespace under its root, then ends it. A mount table read through the fd
/// must be the holder's (the mount namespace and root of `n` are then the ones made again);
/// files that keep more of `n` (its network namespace) are refused.
fn dump_gone_process_file(
    open: &OpenFd,
    path: &str,
    mount: &str,
    n: i32,
    rest: String,
    ns_pid: i32,
) -> Result<ProcFile, FileError> {
    let refuse = |why: String| {
        open.refuse(
            format!("file {path} of a process that has ended, of its namespace's proc: {why}"),
            false,
        )
    };
    if !of_gone_process(&rest) {
        return Err(refuse(format!(
            "{rest} keeps its network namespace, thread or memory, which went with it"
        )));
    }
    if rest.is_empty() && open.pos != 0 && open.flags & libc::O_PATH as u32 == 0 {
        return Err(refuse(format!("a directory at position {}", open.pos)));
    }
    if !shows_own_pid_namespace(open.pid, mount, ns_pid) {
        return Err(refuse(format!(
            "{mount} is not a proc of the holder's PID namespace (pid {n} would be made in \
             another)"
        )));
    }
    if matches!(rest.as_str(), "/mountinfo" | "/mounts" | "/mountstats") {
        let read_err = |what: &'static str, at: PathBuf| move |e| open.inspect_err(what, at, e);
        let holders = PathBuf::from(format!("/proc/{}{rest}", open.pid));
        let its = read_held_file(open).map_err(read_err("read through the fd", open.proc_path()))?;
        let holders_table =
            std::fs::read(&holders).map_err(read_err("read the holder's mount table", holders.clone()))?;
        if its != holders_table {
            return Err(refuse(format!(
                "it shows another mount namespace or root than the holder's {} (the one pid \
                 {n} would be made in)",
                holders.display()
            )));
        }
    }
    Ok(ProcFile {
        gone_pid: n,
        rest,
        proc_mount: mount.to_string(),
        ..Default::default()
    })
}

/// Whether the proc mounted at `mount` (as process `pid` sees it) is of its PID namespace:
/// its pid there (`ns_pid`) is it (the same start time).
fn shows_own_pid_namespace(pid: Pid, mount: &str, ns_pid: i32) -> bool {
    let witness = PathBuf::from(format!("/proc/{pid}/root{mount}/{ns_pid}/stat"));
    let there = crate::proc::task_stat::read_at(&witness).map(|s| s.start_ticks);
    let here = crate::proc::task_stat::read(pid).map(|s| s.start_ticks);
    there.is_ok() && there.ok() == here.ok()
}

/// (MOUNT, N) when `path`, the working directory of `pid` (a process in a PID namespace one
/// below cryo's), reads "MOUNT/N (deleted)": /proc/N of the proc mounted at MOUNT, of its own
/// PID namespace, N having ended since it entered it (zdtm unhashed_proc in the ns flavour).
/// The restore enters it in finish ([`enter_gone_dir`]).
pub(crate) fn gone_namespace_process_dir(pid: Pid, path: &str) -> Option<(String, i32)> {
    let (mount, n) = path.strip_suffix(" (deleted)")?.rsplit_once('/')?;
    let n = n.parse::<i32>().ok().filter(|&n| n > 0)?;
    let ns_pids = crate::task::pidns::nspid(pid).ok()?;
    let [_, ns_pid] = ns_pids[..] else {
        return None;
    };
    let table = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).ok()?;
    let mounts = crate::task::mount_ns::mountinfo::parse(&table);
    let is_proc_mount = mounts
        .iter()
        .any(|m| m.fstype == "proc" && crate::task::mount_ns::mountinfo::unescape(&m.point) == mount);
    let free = PathBuf::from(format!("/proc/{pid}/root{mount}/{n}")).symlink_metadata().is_err();
    (is_proc_mount && free && shows_own_pid_namespace(pid, mount, ns_pid))
        .then(|| (mount.to_string(), n))
}

/// Makes the working directory of the stopped process traced by `remote` the directory of
/// process `n` of the proc mounted at `mount`, unhashed: a holder of pid `n` cryo forks lives
/// while the process opens it (remote openat, `scratch` a writable page of it) and enters it.
pub(crate) fn enter_gone_dir(
    remote: &Remote,
    pid: Pid,
    scratch: u64,
    mount: &str,
    n: i32,
) -> io::Result<()> {
    let path = format!("{}/{n}", mount.trim_end_matches('/'));
    let mut bytes = path.into_bytes();
    bytes.push(0);
    sys::ptrace::write_mem(pid, scratch, &bytes)?;
    let holder = sys::process::PidHolder::new(pid, Pid::from_raw(n))?;
    let flags = (libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64;
    let fd = remote.call(libc::SYS_openat, &[libc::AT_FDCWD as u64, scratch, flags, 0])?;
    let entered = remote.call(libc::SYS_fchdir, &[fd]);
    let _ = remote.call(libc::SYS_close, &[fd]);
    drop(holder);
    entered.map(drop)
}

/// What the description behind `open` reads from its start, through a duplicate of it (pread:
/// its position stays; a seq_file reads its records again at the position it is at).
fn read_held_file(open: &OpenFd) -> io::Result<Vec<u8>> {
    let pidfd = sys::pidfd::pidfd_open(open.pid)?;
    let fd = sys::pidfd::pidfd_getfd(std::os::fd::AsFd::as_fd(&pidfd), open.fd)?;
    let mut all = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let got = nix::sys::uio::pread(&fd, &mut buf, all.len() as i64)?;
        if got == 0 {
            return Ok(all);
        }
        all.extend_from_slice(&buf[..got]);
    }
}

/// pid 1 of cryo's PID namespace as "BOOT_ID START_TIME": the same process has the same.
fn init_identity() -> io::Result<String> {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")?;
    let stat = std::fs::read_to_string("/proc/1/stat")?;
    // After the command name's closing parenthesis: field 3 (state) on; start time is 22.
    let start = stat
        .rsplit_once(')')
        .and_then(|(_, after)| after.split_whitespace().nth(22 - 3))
        .ok_or_else(|| io::Error::other("cannot parse /proc/1/stat"))?;
    Ok(format!("{} {start}", boot.trim()))
}

/// The record of an fd on `path`, a file of /proc/1 (`rest`: what follows "/proc/1/"), pid 1
/// being outside the dump: recorded with its identity. Its threads' directories are refused.
fn dump_init_file(open: &OpenFd, path: &str, rest: Option<&str>) -> Result<ProcFile, FileError> {
    let rest = rest.map(|r| format!("/{r}")).unwrap_or_default();
    if rest == "/task" || rest.starts_with("/task/") {
        return Err(open.refuse(
            format!("{path} (a thread of pid 1, outside the dump: it may be gone at restore)"),
            false,
        ));
    }
    if rest == "/mem" {
        return Err(open.refuse(
            format!("{path} (a process's memory, bound to the address space at open)"),
            true,
        ));
    }
    check_position(open, path)?;
    let init = init_identity()
        .map_err(|e| open.inspect_err("read pid 1's identity", PathBuf::from("/proc/1/stat"), e))?;
    Ok(ProcFile {
        rest,
        init,
        ..Default::default()
    })
}

/// A position other than 0 must be one a reopened file can be put at again: cryo opens the
/// path itself (with the fd's access mode) and seeks there.
fn check_position(open: &OpenFd, path: &str) -> Result<(), FileError> {
    if open.pos == 0 || open.flags & libc::O_PATH as u32 != 0 {
        return Ok(());
    }
    let mode = open.flags as i32 & libc::O_ACCMODE;
    let flags = nix::fcntl::OFlag::from_bits_retain(mode | libc::O_CLOEXEC | libc::O_NONBLOCK);
    let fd = nix::fcntl::open(path, flags, nix::sys::stat::Mode::empty())
        .map_err(|e| open.inspect_err("open to check its position", PathBuf::from(path), e.into()))?;
    match nix::unistd::lseek(&fd, open.pos as i64, nix::unistd::Whence::SeekSet) {
        Ok(at) if at as u64 == open.pos => Ok(()),
        Ok(at) => Err(open.refuse(
            format!("{path} at position {} (a reopened one reaches only {at})", open.pos),
            false,
        )),
        Err(e) => Err(open.refuse(
            format!("{path} at position {} (a reopened one cannot be put there: {e})", open.pos),
            false,
        )),
    }
}

/// The record of a namespace fd of kind `kind`, inode `ino`: a process of the dump in it
/// (the holder first), else cryo's own; any other is refused.
fn dump_namespace(
    open: &OpenFd,
    kind: &str,
    ino: u64,
    pids: &std::collections::HashSet<i32>,
) -> Result<ProcFile, FileError> {
    let ino_of = |who: &str| std::fs::metadata(format!("/proc/{who}/ns/{kind}")).ok().map(|m| m.ino());
    let holder = open.pid.as_raw();
    let mut candidates: Vec<i32> = pids.iter().copied().filter(|&p| p != holder).collect();
    candidates.sort_unstable();
    candidates.insert(0, holder);
    let rec = |pid| ProcFile {
        pid,
        namespace: kind.to_string(),
        ns_inode: ino,
        ..Default::default()
    };
    if let Some(&pid) = candidates.iter().find(|p| ino_of(&p.to_string()) == Some(ino)) {
        return Ok(rec(pid));
    }
    if ino_of("self") == Some(ino) {
        return Ok(rec(0));
    }
    Err(open.refuse(
        format!(
            "{kind} namespace {kind}:[{ino}] that no process of the dump is in and that is not \
             cryo's (it would not exist after a restore)"
        ),
        false,
    ))
}

/// What the restored process holds at the numbers of a description reopened in finish: a
/// pidfd of itself, which an epoll can watch until the file is put over it (pidfd.rs does the
/// same).
fn placeholder(desc: &FileDesc) -> Result<OwnedFd, FileError> {
    sys::pidfd::pidfd_open(nix::unistd::getpid())
        .map_err(|e| restore_err(desc, "open a placeholder (pidfd of itself)", e))
}

/// The key of the slot of cryo's namespace opened for description `desc` (shared.rs): above
/// any inode number a memory object may have, below the pidfds' (pidfd.rs).
fn slot_key(desc: &FileDesc) -> u64 {
    u64::MAX / 2 - u64::from(desc.id)
}

/// Opens, in cryo before the first fork, cryo's own namespaces that descriptions of `descs`
/// in `used` name. (slot key, description, fd) each.
pub(crate) fn make_cryos_namespaces<'d>(
    descs: &'d [FileDesc],
    used: &std::collections::BTreeSet<u32>,
) -> Result<Vec<(u64, &'d FileDesc, OwnedFd)>, FileError> {
    let mut made = Vec::new();
    for d in descs.iter().filter(|d| used.contains(&d.id)) {
        let Some(Kind::ProcFile(p)) = &d.kind else { continue };
        if p.pid != 0 || p.namespace.is_empty() {
            continue;
        }
        if !NAMESPACES.contains(&p.namespace.as_str()) {
            return Err(FileError::Invalid {
                id: d.id,
                detail: format!("unknown namespace kind {:?}", p.namespace),
            });
        }
        let path = format!("/proc/self/ns/{}", p.namespace);
        // With the description's flags (O_PATH, say).
        let fd = nix::fcntl::open(path.as_str(), open_flags(d.flags), nix::sys::stat::Mode::empty())
        .map_err(|e| restore_err(d, "open cryo's namespace", e.into()))?;
        made.push((slot_key(d), d, fd));
    }
    Ok(made)
}

/// One process of a restore whose /proc files and namespace fds [`open_late`] opens.
pub(crate) struct Late<'a> {
    /// The process as cryo sees it.
    pub pid: Pid,
    /// Its pid in the image.
    pub image_pid: i32,
    /// Its fds.
    pub fds: &'a [FdEntry],
    /// Its threads: image tid -> tid as cryo sees it.
    pub threads: HashMap<i32, Pid>,
    /// Every process of the restore: image pid -> pid as cryo sees it.
    pub pids: &'a HashMap<i32, Pid>,
    /// A writable page of the process (the trampoline's scratch page).
    pub scratch: u64,
}

/// Descriptions already opened by a process of the restore: id -> (its image pid, its fd).
pub(crate) type OpenedLate = HashMap<u32, (i32, i32)>;

/// The path the holder `h` opens for `p`, with the pids cryo's /proc names.
fn late_path(h: &Late<'_>, desc: &FileDesc, p: &ProcFile) -> Result<String, FileError> {
    let invalid = |detail: String| FileError::Invalid { id: desc.id, detail };
    if p.gone_pid != 0 && !p.proc_mount.is_empty() {
        // Of a process that had ended: made again (open_late) while it is opened.
        let mount = p.proc_mount.trim_end_matches('/');
        return Ok(format!("{mount}/{}{}", p.gone_pid, p.rest));
    }
    if p.pid == 0 && !p.proc_mount.is_empty() {
        // A file of the namespace's own proc itself.
        return Ok(format!("{}{}", p.proc_mount.trim_end_matches('/'), p.rest));
    }
    let pid = h
        .pids
        .get(&p.pid)
        .ok_or_else(|| invalid(format!("names pid {}, which the restore did not make", p.pid)))?;
    if !p.namespace.is_empty() {
        if !NAMESPACES.contains(&p.namespace.as_str()) {
            return Err(invalid(format!("unknown namespace kind {:?}", p.namespace)));
        }
        // Its own through /proc/self, which every proc of its PID namespace (or of one above)
        // resolves: its /proc may be its namespace's own, which names it otherwise than cryo.
        if p.pid == h.image_pid {
            return Ok(format!("/proc/self/ns/{}", p.namespace));
        }
        return Ok(format!("/proc/{pid}/ns/{}", p.namespace));
    }
    if !p.proc_mount.is_empty() {
        // The namespace's own proc: the pid there, the image's (the restore kept it).
        let mount = p.proc_mount.trim_end_matches('/');
        return Ok(format!("{mount}/{}{}", p.pid, p.rest));
    }
    if p.tid == 0 {
        return Ok(format!("/proc/{pid}{}", p.rest));
    }
    let tid = if p.tid == p.pid {
        *pid
    } else if p.pid == h.image_pid {
        *h.threads
            .get(&p.tid)
            .ok_or_else(|| invalid(format!("names thread {} of pid {}, which the restore did not make", p.tid, p.pid)))?
    } else {
        return Err(invalid(format!("names thread {} of another process, pid {}", p.tid, p.pid)));
    };
    Ok(format!("/proc/{pid}/task/{tid}{}", p.rest))
}

/// Opens, by remote calls in the stopped, reshaped process `h` (its threads made), every
/// /proc file and namespace fd of a process of the restore it holds, and puts each over its
/// placeholders; a description an earlier process opened (`first`) is taken from it.
pub(crate) fn open_late(
    descs: &[FileDesc],
    h: &Late<'_>,
    remote: &Remote,
    first: &mut OpenedLate,
) -> Result<(), FileError> {
    let by_id: HashMap<u32, (&FileDesc, &ProcFile)> = descs
        .iter()
        .filter_map(|d| match &d.kind {
            Some(Kind::ProcFile(p)) if p.pid != 0 || !p.proc_mount.is_empty() => {
                Some((d.id, (d, p)))
            }
            _ => None,
        })
        .collect();
    let mine = super::pidfd::held_descriptions(h.fds, |id| by_id.contains_key(&id));
    let all: HashMap<u32, &FileDesc> = descs.iter().map(|d| (d.id, d)).collect();
    // (epoll description, target fd) registered again.
    let mut watched = std::collections::HashSet::new();
    for id in mine {
        let (desc, p) = by_id[&id];
        let fds: Vec<&FdEntry> = h.fds.iter().filter(|e| e.file_id == id).collect();
        let at = fds[0].fd;
        let what = super::registry::describe(desc);
        let err = |fd: i32, step: String| move |source: io::Error| FileError::TakeBack {
            pid: h.pid,
            fd,
            what: step,
            source,
        };
        let fd = match first.get(&id) {
            None => {
                let path = late_path(h, desc, p)?;
                let mut bytes = path.clone().into_bytes();
                bytes.push(0);
                sys::ptrace::write_mem(h.pid, h.scratch, &bytes)
                    .map_err(err(at, format!("write the path of its {what}")))?;
                let flags = open_flags(desc.flags).bits() as u64;
                // A process that had ended lives while it is opened (and sought), then ends.
                let _gone = match p.gone_pid {
                    0 => None,
                    n => Some(sys::process::PidHolder::new(h.pid, Pid::from_raw(n)).map_err(
                        err(at, format!("make pid {n}, ended at dump, for its {what}")),
                    )?),
                };
                let fd = remote
                    .call(
                        libc::SYS_openat,
                        &[libc::AT_FDCWD as u64, h.scratch, flags, 0],
                    )
                    .map_err(err(at, format!("open {path} (its {what})")))?;
                if desc.pos != 0 {
                    let to = remote
                        .call(libc::SYS_lseek, &[fd, desc.pos, libc::SEEK_SET as u64])
                        .map_err(err(at, format!("lseek {path} to {} (its {what})", desc.pos)));
                    if let Err(e) = to {
                        let _ = remote.call(libc::SYS_close, &[fd]);
                        return Err(e);
                    }
                    // A seq_file's seek makes its records up to the offset now, with the
                    // trampoline still mapped (/proc/self/maps read at 200 gave bytes 122
                    // on: two lines more before it), and keeps the one it ends in for the
                    // next read at that offset. A pread elsewhere moves the offset the file
                    // has read to off the one it is at: its first read makes them again, then,
                    // as the process sees them. (Not a seq_file, or a directory: nothing.)
                    let away = if desc.pos == 1 { 2 } else { 1 };
                    let _ = remote.call(libc::SYS_pread64, &[fd, h.scratch, away, 0]);
                }
                if desc.flags & libc::O_ASYNC as u32 != 0 {
                    // open(2) ignores O_ASYNC (open.rs: set_async).
                    let set = remote.call(libc::SYS_fcntl, &[fd, libc::F_GETFL as u64]).and_then(|fl| {
                        remote.call(libc::SYS_fcntl, &[fd, libc::F_SETFL as u64, fl | libc::O_ASYNC as u64])
                    });
                    if let Err(e) = set {
                        let _ = remote.call(libc::SYS_close, &[fd]);
                        return Err(err(at, format!("F_SETFL O_ASYNC on {path} (its {what})"))(e));
                    }
                }
                fd
            }
            Some(&(from, from_fd)) => {
                let of = remote
                    .call(libc::SYS_pidfd_open, &[from as u64, 0])
                    .map_err(err(at, format!("pidfd_open of pid {from}")))?;
                let got = remote.call(libc::SYS_pidfd_getfd, &[of, from_fd as u64, 0]);
                let _ = remote.call(libc::SYS_close, &[of]);
                got.map_err(err(at, format!("pidfd_getfd of fd {from_fd} of pid {from} (its {what})")))?
            }
        };
        for e in &fds {
            let flags = if e.cloexec { libc::O_CLOEXEC as u64 } else { 0 };
            remote
                .call(libc::SYS_dup3, &[fd, e.fd as u64, flags])
                .map_err(err(e.fd, format!("dup3 its {what}")))?;
        }
        let _ = remote.call(libc::SYS_close, &[fd]);
        first.entry(id).or_insert((h.image_pid, at));
        // Its epolls watched the placeholder, which went with its last fd.
        super::pidfd::watch_again(h.pid, remote, h.scratch, &all, h.fds, &fds, &mut watched, &format!("its {what}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(pid: i32, rest: &str) -> ProcFile {
        ProcFile {
            pid,
            rest: rest.into(),
            ..Default::default()
        }
    }

    #[test]
    fn records_stay_below_proc() {
        for ok in [
            file(0, "/proc/meminfo"),
            file(0, "/proc"),
            file(0, "/proc/sys/kernel/hostname"),
            file(7, "/stat"),
            file(7, ""),
            file(7, "/net/tcp"),
        ] {
            assert_eq!(check_shape(&ok), Ok(()), "{ok:?}");
        }
        for bad in [
            file(0, "/etc/shadow"),
            file(0, "/proc/1/stat"),
            file(0, "/proc/self/stat"),
            file(0, "/proc/../etc/shadow"),
            file(7, "stat"),
            file(7, "/../1/stat"),
            file(7, "/fd//x"),
        ] {
            assert!(check_shape(&bad).is_err(), "{bad:?}");
        }
        let ns = |kind: &str| ProcFile {
            pid: 7,
            namespace: kind.into(),
            ..Default::default()
        };
        assert_eq!(check_shape(&ns("uts")), Ok(()));
        assert!(check_shape(&ns("../x")).is_err());
        let init = |rest: &str| ProcFile {
            rest: rest.into(),
            init: "b00t 1".into(),
            ..Default::default()
        };
        assert_eq!(check_shape(&init("/status")), Ok(()));
        assert_eq!(check_shape(&init("")), Ok(()));
        assert!(check_shape(&init("/../2/status")).is_err());
        assert!(check_shape(&ProcFile { pid: 7, ..init("/status") }).is_err());
        // Of a process of the namespace's own proc that had ended: its directory or a file
        // reading the same whoever it was, or its mount table; not its network files, threads,
        // memory, nor a path out.
        let gone = |rest: &str| ProcFile {
            gone_pid: 6,
            rest: rest.into(),
            proc_mount: "/proc".into(),
            ..Default::default()
        };
        for ok in ["", "/mountinfo", "/status", "/fd", "/ns"] {
            assert_eq!(check_shape(&gone(ok)), Ok(()), "{ok:?}");
        }
        for bad in ["/net/tcp", "/net", "/task/6/stat", "/mem", "/../1/stat", "mountinfo"] {
            assert!(check_shape(&gone(bad)).is_err(), "{bad:?}");
        }
        assert!(check_shape(&ProcFile { pid: 7, ..gone("") }).is_err());
        assert!(check_shape(&ProcFile { gone_pid: -6, ..gone("") }).is_err());
    }
}
