//! Process-wide attributes outside memory and files: credentials, resource limits, umask,
//! personality, name, working and root directory, session and process group.

use cryo_proto::image::{ProcessEntry, RemovedDir, Rlimit, TaskCore};
use nix::unistd::Pid;

use crate::error::{Error, Result};
use crate::proc;
use crate::restore::error::RestoreError;
use crate::restore::error::{ChildError, ChildStep};
use crate::sys::process::prlimit;

/// RLIMIT_CPU .. RLIMIT_RTTIME.
const RLIMITS: u32 = 16;

/// The process-wide attributes of `pid` (threads, signals and fds are filled in by the caller).
pub fn dump(pid: Pid, stat: &proc::Stat) -> Result<TaskCore> {
    let status = proc::status(pid)?;
    let creds = super::security::creds_from_status(&status);
    let rlimits = parse_limits(&proc::read(pid, "limits")?).ok_or(proc::ProcError::Parse {
        pid,
        file: "limits",
        line: None,
    })?;
    let umask = proc::status_field(&status, "Umask")
        .and_then(|v| u32::from_str_radix(v, 8).ok())
        .unwrap_or(0o022);
    let comm = std::fs::read_to_string(proc::dir(pid).join("comm"))
        .map(|s| s.trim_end_matches('\n').to_string())
        .unwrap_or_else(|_| stat.comm.clone());
    let (cwd, cwd_removed, cwd_gone_process, cwd_gone_proc_mount) = match proc::cwd(pid)? {
        proc::Cwd::Path(cwd, true) => (cwd, Some(removed_dir(pid)?), 0, String::new()),
        proc::Cwd::Path(cwd, false) => (cwd, None, 0, String::new()),
        proc::Cwd::GoneProcess(n) => (format!("/proc/{n}"), None, n, String::new()),
        proc::Cwd::GoneNamespaceProcess(mount, n) => (format!("{mount}/{n}"), None, n, mount),
    };
    Ok(TaskCore {
        pid: pid.as_raw(),
        comm,
        personality: proc::personality(pid)?,
        umask,
        creds: Some(creds),
        rlimits,
        cwd,
        cwd_removed,
        cwd_gone_process,
        cwd_gone_proc_mount,
        root: proc::dir_link(pid, "root")?,
        ..Default::default()
    })
}

/// What a restore needs to make a removed working directory again: its owner, mode, times.
fn removed_dir(pid: Pid) -> Result<RemovedDir> {
    use std::os::unix::fs::MetadataExt;
    let m = proc::stat_link(pid, "cwd")?;
    // Made again by its name with mkdir: a directory of a filesystem that shows kernel state
    // (a proc's process directory gone, a sysfs device's) would come back as one of files.
    let kind = nix::sys::statfs::statfs(&proc::dir(pid).join("cwd")).map(|fs| fs.filesystem_type());
    if !matches!(kind, Ok(t) if t != nix::sys::statfs::PROC_SUPER_MAGIC && t != nix::sys::statfs::SYSFS_MAGIC)
    {
        return Err(Error::target(
            pid,
            "its working directory was removed, on a proc or sysfs (or one that no longer \
             answers statfs): a restore would make a directory of files in its place"
                .to_string(),
        ));
    }
    if crate::sys::mount::on_read_only_mount(&proc::dir(pid).join("cwd")) {
        return Err(Error::target(
            pid,
            "its working directory was removed, on a read-only mount: a restore makes it again \
             by its name, which the mount does not allow"
                .to_string(),
        ));
    }
    let (atime_ns, mtime_ns) = crate::files::times_ns(&m);
    let attrs = crate::files::inode_attrs::read(&proc::dir(pid).join("cwd"), true)
        .map_err(|e| Error::target(pid, format!("its working directory was removed: {e}")))?;
    Ok(RemovedDir {
        attrs: Some(attrs),
        mode: m.mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
        atime_ns,
        mtime_ns,
        dev: m.dev(),
        ino: m.ino(),
    })
}

/// Refuses removed working directories a restore would make apart from what shares them
/// (each process's is made again on its own): one that is the working directory of two
/// processes, or that another process of the dump holds open (`open_removed`: the pid, dev
/// and inode of every removed directory held by an fd). One the process itself holds open is
/// made once, for the fd, and entered ([`enter_removed`]). `cores`: the dump's processes.
pub fn refuse_shared_removed_cwd(
    cores: &[&TaskCore],
    open_removed: &[(i32, u64, u64)],
) -> Result<()> {
    let mut seen: std::collections::HashMap<(u64, u64), i32> = std::collections::HashMap::new();
    for core in cores {
        let Some(r) = &core.cwd_removed else { continue };
        let pid = Pid::from_raw(core.pid);
        let what = format!("its working directory {} was removed", core.cwd);
        if let Some(other) = seen.insert((r.dev, r.ino), core.pid) {
            return Err(Error::target(
                pid,
                format!(
                    "{what} and is pid {other}'s too: a restore makes one removed directory per \
                     process, so they would no longer share it"
                ),
            ));
        }
        if let Some(&(other, _, _)) = open_removed
            .iter()
            .find(|&&(p, dev, ino)| p != core.pid && (dev, ino) == (r.dev, r.ino))
        {
            return Err(Error::target(
                pid,
                format!(
                    "{what} and another process of the dump (pid {other}) holds it open: a \
                     restore would make the two apart"
                ),
            ));
        }
    }
    Ok(())
}

/// The resource limits in `/proc/PID/limits`, which anyone may read: `prlimit(pid)`, even to
/// read, needs the target's uid or CAP_SYS_RESOURCE (missing on these machines). One line per
/// resource in their numbering order after the header; the name column is 26 wide, then the
/// soft and hard limits, a number or `unlimited`.
fn parse_limits(text: &str) -> Option<Vec<Rlimit>> {
    const NAME_WIDTH: usize = 26;
    let value = |v: &str| match v {
        "unlimited" => Some(libc::RLIM_INFINITY),
        n => n.parse().ok(),
    };
    let rlimits: Vec<Rlimit> = text
        .lines()
        .skip(1)
        .zip(0..RLIMITS)
        .map(|(line, resource)| {
            let mut fields = line.get(NAME_WIDTH..)?.split_whitespace();
            let cur = value(fields.next()?)?;
            let max = value(fields.next()?)?;
            Some(Rlimit { resource, cur, max })
        })
        .collect::<Option<_>>()?;
    (rlimits.len() == RLIMITS as usize).then_some(rlimits)
}

/// The pstree record of `pid`.
pub fn process_entry(pid: Pid, stat: &proc::Stat, tids: &[Pid]) -> ProcessEntry {
    ProcessEntry {
        pid: pid.as_raw(),
        ppid: stat.ppid,
        pgid: stat.pgid,
        sid: stat.sid,
        tids: tids.iter().map(|t| t.as_raw()).collect(),
        ..Default::default()
    }
}

/// Session and process group, in the restore child before it forks its own children: a
/// session leader starts its session, a group leader its group, and a process in another
/// group of its session joins it when its leader was restored before it.
pub fn restore_session(entry: &ProcessEntry) -> Result<(), ChildError> {
    let me = nix::unistd::getpid();
    if entry.sid == entry.pid {
        nix::unistd::setsid().map_err(ChildError::sys(ChildStep::Setsid))?;
    } else if entry.pgid == entry.pid {
        nix::unistd::setpgid(me, me).map_err(ChildError::sys(ChildStep::Setpgid))?;
    } else if nix::unistd::getpgrp().as_raw() != entry.pgid {
        // A group led by a process of the image, in this session (the dump refuses any
        // other, and a shell job's groups are cryo's own by now): joined, or the restore
        // fails rather than leave the process in another group.
        nix::unistd::setpgid(me, Pid::from_raw(entry.pgid))
            .map_err(ChildError::sys(ChildStep::Setpgid))?;
    }
    Ok(())
}

/// A shell job (dumped with --shell-job) becomes part of the job `cryo restore` runs as: the
/// process group of every root that was not a session leader (the job's group, whether the
/// root or its shell led it) is replaced by cryo's own. Forked by cryo, the processes are in
/// cryo's session already; in its group they are in the terminal's foreground whenever cryo
/// is, and the restoring shell's job control (Ctrl-C, Ctrl-Z, fg) reaches them with cryo.
pub fn adopt_shell_job(entries: &mut [&mut ProcessEntry], roots: &[i32]) -> Result<()> {
    let ours = nix::unistd::getpgrp().as_raw();
    let jobs: Vec<i32> = entries
        .iter()
        .filter(|e| roots.contains(&e.pid) && e.sid != e.pid)
        .map(|e| e.pgid)
        .collect();
    if let Some(e) = entries
        .iter()
        .find(|e| e.pid == ours || (e.pgid == ours && !jobs.contains(&e.pgid)))
    {
        return Err(RestoreError::ShellJobGroup {
            group: ours,
            pid: e.pid,
        }
        .into());
    }
    for e in entries.iter_mut().filter(|e| jobs.contains(&e.pgid)) {
        tracing::debug!(
            pid = e.pid,
            was = e.pgid,
            now = ours,
            "shell job joins the group of cryo restore"
        );
        e.pgid = ours;
    }
    Ok(())
}

/// Applies the attributes to the calling process (the restore child, still running cryo code).
pub fn restore_in_child(core: &TaskCore) -> Result<(), ChildError> {
    use nix::sys::stat::{umask, Mode};
    let me = nix::unistd::getpid();
    // A process sharing its parent's fs_struct (CLONE_FS) has it from the parent, which sets
    // it (the same values) once its children are forked.
    if !core.fs_of_parent {
        // The working directory first: both paths are as cryo sees them (from the real
        // root), and chroot keeps the working directory.
        match (&core.cwd_removed, core.cwd_gone_process) {
            // Entered in finish, once the namespace's proc is mounted (files::procfs).
            (_, n) if n > 0 && !core.cwd_gone_proc_mount.is_empty() => Ok(()),
            (_, n) if n > 0 => in_gone_process_dir(Pid::from_raw(n), nix::unistd::chdir::<str>),
            (None, _) => nix::unistd::chdir(core.cwd.as_str()),
            (Some(removed), _) => enter_removed(&core.cwd, removed),
        }
        .map_err(|e| ChildError::sys_on(ChildStep::Chdir, &core.cwd)(e.into()))?;
        if core.root != "/" {
            nix::unistd::chroot(core.root.as_str())
                .map_err(|e| ChildError::sys_on(ChildStep::Chroot, &core.root)(e.into()))?;
        }
        umask(Mode::from_bits_truncate(core.umask));
    }
    // Exactly, or the restore fails: a hard limit above cryo's needs CAP_SYS_RESOURCE (the
    // dump refuses it when its cryo lacked that; an image from elsewhere may still have one).
    // The address-space and fd limits once its memory is mapped and the restore's own fds
    // are closed (finish: set_late_limits).
    for lim in core
        .rlimits
        .iter()
        .filter(|l| !LATE_LIMITS.contains(&l.resource))
    {
        prlimit(me, lim.resource, Some((lim.cur, lim.max)))
            .map_err(ChildError::sys_on(ChildStep::Prlimit, lim.resource))?;
    }
    nix::sys::personality::set(nix::sys::personality::Persona::from_bits_retain(
        core.personality as i32,
    ))
    .map_err(ChildError::sys(ChildStep::Personality))?;
    let name = std::ffi::CString::new(core.comm.as_bytes()).unwrap_or_default();
    nix::sys::prctl::set_name(&name).map_err(ChildError::sys(ChildStep::SetComm))?;
    Ok(())
}

/// Runs `f` on /proc/N of a process N that is gone: a child forked with pid N exits at once,
/// `f` gets its directory (a zombie's), and the child is reaped, which unhashes it: what `f`
/// made of it (a working directory, an fd) reads "/proc/N (deleted)" and lists nothing, as
/// at dump. The /proc this process sees must be of its own PID namespace (not under `restore
/// --pidns`, where it shows the host's pids): else EXDEV. The caller blocks SIGCHLD (the
/// restored process does, until its own mask): the reap takes the one the child sends.
pub(crate) fn in_gone_process_dir<T>(
    n: Pid,
    f: impl FnOnce(&str) -> nix::Result<T>,
) -> nix::Result<T> {
    let me = nix::unistd::getpid();
    if std::fs::read_link("/proc/self").ok().as_deref()
        != Some(std::path::Path::new(&me.to_string()))
    {
        return Err(nix::errno::Errno::EXDEV);
    }
    let helper = match crate::sys::process::fork_with_pid(n)
        .map_err(|e| nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?
    {
        crate::sys::process::Forked::Child => crate::sys::process::exit_child(0),
        crate::sys::process::Forked::Parent(helper) => helper,
    };
    let made = f(&format!("/proc/{n}"));
    nix::sys::wait::waitpid(helper, None)?;
    made
}

/// RLIMIT_DATA and RLIMIT_AS, set once the process's memory is mapped again (the restore maps
/// its areas one by one, with the trampoline's beside them: a limit just above what the
/// process used refused the last ones); RLIMIT_NOFILE too, once the restore's own fds, placed
/// above the process's highest, are closed (a limit just above its highest fd left them no
/// room).
const LATE_LIMITS: [u32; 3] = [libc::RLIMIT_DATA, libc::RLIMIT_AS, libc::RLIMIT_NOFILE];

/// Sets the limits of `core` kept for the end ([`LATE_LIMITS`]) on restored process `pid`,
/// its memory mapped and the restore's own fds closed.
pub(crate) fn set_late_limits(pid: Pid, core: &TaskCore) -> Result<()> {
    for lim in core
        .rlimits
        .iter()
        .filter(|l| LATE_LIMITS.contains(&l.resource))
    {
        prlimit(pid, lim.resource, Some((lim.cur, lim.max)))
            .map_err(|e| Error::sys(pid, format!("prlimit({})", lim.resource), e))?;
    }
    Ok(())
}

/// Makes the removed working directory `path` again (files/regular.rs: at its path when free,
/// else beside it), enters it, removes it, then gives it its owner, mode and times. One the
/// process also holds open was made again for that fd (with its owner, mode and times): it
/// enters that one, so the fd and the working directory are one directory, as at dump.
fn enter_removed(path: &str, removed: &RemovedDir) -> nix::Result<()> {
    if let Some(held) = crate::files::removed_dir_made(removed.dev, removed.ino) {
        return nix::unistd::chdir(&held);
    }
    let made = crate::files::make_dir_again(std::path::Path::new(path), (removed.uid, removed.gid))
        .map_err(|e| nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
    let entered = nix::unistd::chdir(&made.path);
    made.remove();
    entered?;
    let here = nix::fcntl::open(
        ".",
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
    crate::files::set_owner_mode_times(
        &here,
        removed.mode,
        removed.uid,
        removed.gid,
        removed.atime_ns,
        removed.mtime_ns,
    )?;
    match &removed.attrs {
        Some(attrs) => crate::files::inode_attrs::give(std::os::fd::AsFd::as_fd(&here), attrs)
            .map_err(|e| nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(pid: i32, pgid: i32, sid: i32) -> ProcessEntry {
        ProcessEntry {
            pid,
            ppid: 1,
            pgid,
            sid,
            ..Default::default()
        }
    }

    #[test]
    fn limits_read_from_proc_match_prlimit() {
        let me = nix::unistd::getpid();
        let text = std::fs::read_to_string("/proc/self/limits").unwrap();
        let parsed = parse_limits(&text).expect("our own limits parse");
        for lim in parsed {
            let (cur, max) = prlimit(me, lim.resource, None).unwrap();
            assert_eq!((lim.cur, lim.max), (cur, max), "resource {}", lim.resource);
        }
        assert!(parse_limits("Limit\nMax cpu time    x").is_none());
    }

    #[test]
    fn a_shell_job_joins_the_group_of_cryo() {
        let ours = nix::unistd::getpgrp().as_raw();
        // Pids far from ours: a job led by its root 1000 (a child in its group, another in a
        // group of its own), and a session leader restored as it was.
        let (mut root, mut kid, mut own, mut leader) = (
            entry(1_000_001, 1_000_001, 7),
            entry(1_000_002, 1_000_001, 7),
            entry(1_000_003, 1_000_003, 7),
            entry(1_000_010, 1_000_010, 1_000_010),
        );
        let mut all = [&mut root, &mut kid, &mut own, &mut leader];
        adopt_shell_job(&mut all, &[1_000_001, 1_000_010]).unwrap();
        assert_eq!((root.pgid, kid.pgid), (ours, ours));
        assert_eq!((own.pgid, leader.pgid), (1_000_003, 1_000_010));
        // A process of the image already in a group numbered like cryo's: refused.
        let (mut root, mut other) = (entry(1_000_001, 1_000_001, 7), entry(1_000_002, ours, 7));
        let err = adopt_shell_job(&mut [&mut root, &mut other], &[1_000_001]).unwrap_err();
        assert!(err.to_string().contains("process group"), "{err}");
    }
}
