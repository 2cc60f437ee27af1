//! The trees of a dump: every process below the roots given with -t, parents before
//! children, zombies included.

use nix::unistd::Pid;

use super::error::DumpError;
use crate::error::{Error, Result};
use crate::freeze::check_target;
use crate::proc;

/// A process of the trees being dumped.
pub(crate) struct Member {
    pub(crate) pid: Pid,
    pub(crate) stat: proc::Stat,
}

impl Member {
    /// Exited, not reaped: dumped as a zombie, never frozen.
    pub(crate) fn is_zombie(&self) -> bool {
        self.stat.state == 'Z'
    }
}

/// Refuses, before anything is touched, a root given twice, pid 1, and cryo itself or any
/// of its ancestors: freezing one of those would freeze (or, once dumped, kill) the process
/// waiting for cryo, or the init of the pid namespace.
fn refuse_roots_up_front(roots: &[Pid]) -> Result<()> {
    for (i, &root) in roots.iter().enumerate() {
        if roots[..i].contains(&root) {
            return Err(Error::target(root, "is given twice with -t"));
        }
        if root.as_raw() == 1 {
            return Err(Error::target(
                root,
                "is the init of this pid namespace: dumping it would stop (and kill) every \
                 process of the namespace; refused",
            ));
        }
    }
    let mut pid = nix::unistd::getpid();
    loop {
        if roots.contains(&pid) {
            return Err(Error::target(
                pid,
                if pid == nix::unistd::getpid() {
                    "is cryo itself: cryo cannot dump itself"
                } else {
                    "is an ancestor of cryo (it waits for cryo): dumping it would freeze the \
                     process cryo reports to; refused"
                },
            ));
        }
        match proc::stat(pid) {
            Ok(stat) if stat.ppid > 1 => pid = Pid::from_raw(stat.ppid),
            _ => return Ok(()),
        }
    }
}

/// Every process of the trees rooted at `roots`, parents before children; zombies included.
/// A root that lies inside another root's tree is refused.
pub(crate) fn resolve_trees(roots: &[Pid]) -> Result<Vec<Member>> {
    refuse_roots_up_front(roots)?;
    let mut out: Vec<Member> = Vec::new();
    for &root in roots {
        let stat = check_target(root)?;
        if let Some(other) = out.iter().find(|m| m.pid == root) {
            return Err(DumpError::RootInsideTree {
                pid: root,
                ancestor: Pid::from_raw(other.stat.ppid),
            }
            .into());
        }
        let first = out.len();
        out.push(Member { pid: root, stat });
        let mut k = first;
        while k < out.len() {
            let (pid, zombie) = (out[k].pid, out[k].is_zombie());
            k += 1;
            if zombie {
                continue;
            }
            // A process that ended since it was listed (the tree runs while it is read) has
            // no children; the freeze finds it gone and reads the tree again.
            let children = match proc::children(pid) {
                Err(e) if e.vanished() && pid != root => Vec::new(),
                other => other?,
            };
            for child in children {
                if roots.contains(&child) {
                    return Err(DumpError::RootInsideTree {
                        pid: child,
                        ancestor: pid,
                    }
                    .into());
                }
                // Reaped since its parent listed it: not in the tree any more.
                let stat = match proc::stat(child) {
                    Err(e) if e.vanished() => continue,
                    other => other?,
                };
                if stat.flags & proc::PF_KTHREAD != 0 {
                    continue;
                }
                out.push(Member { pid: child, stat });
            }
        }
    }
    Ok(out)
}

/// Refuses a process whose session or process group a restore could not make again: each is
/// forked by its restored parent (a root by cryo), so it is in its parent's session unless it
/// leads its own, and joins a group whose leader was restored in its session. A leader that
/// had exited (`gone`: its pid is free but for the session or group it left behind) gets a
/// stand-in at restore, made with its pid: the session of a root (a daemon that forked again
/// after setsid), and a group in a session a stand-in or a root of the dump leads; the entries
/// say so (`session_leader_gone`, `group_leader_gone`). A shell's job (`shell_job`) comes back
/// in the session and group of `cryo restore` instead: its roots' sessions and groups are not
/// checked.
pub(crate) fn check_sessions(
    entries: &mut [cryo_proto::image::ProcessEntry],
    roots: &[Pid],
    shell_job: bool,
    gone: impl Fn(i32) -> bool,
    has_ctty: impl Fn(i32) -> bool,
    pidns_init: bool,
) -> Result<(), DumpError> {
    let is_root = |pid: i32| roots.iter().any(|r| r.as_raw() == pid);
    if pidns_init {
        forked_by_session_leaders(entries, roots);
    }
    // The groups a shell job's restore replaces by its own: those of its roots.
    let job_groups: Vec<i32> = entries
        .iter()
        .filter(|e| shell_job && is_root(e.pid) && e.sid != e.pid)
        .map(|e| e.pgid)
        .collect();
    for k in 0..entries.len() {
        let e = &entries[k];
        let pid = Pid::from_raw(e.pid);
        if e.sid != e.pid {
            let parent = (!is_root(e.pid))
                .then(|| entries.iter().find(|p| p.pid == e.ppid))
                .flatten();
            match parent {
                // Forked before its parent's setsid, perhaps: born_before_setsid judges.
                Some(_) => {}
                None if shell_job => {}
                None if !e.zombie && gone(e.sid) => entries[k].session_leader_gone = true,
                None => return Err(DumpError::SessionOutside { pid, sid: e.sid }),
            }
        }
    }
    born_before_setsid(entries, &is_root, has_ctty)?;
    for k in 0..entries.len() {
        let e = &entries[k];
        if e.pgid == e.pid || job_groups.contains(&e.pgid) {
            continue;
        }
        let find = |pid: i32| entries.iter().find(|x| x.pid == pid);
        if find(e.pgid).is_some_and(|l| l.sid == e.sid) {
            continue;
        }
        // Its session's leader forks it in the leader's group.
        if e.forked_by_session_leader && e.pgid == e.sid {
            continue;
        }
        // A stand-in for the group is forked in its session by that session's stand-in, or
        // by the session's leader, alive in the dump, when it is an ancestor of every member
        // (it reaps the stand-in once they joined). Inside a PID namespace of the dump's own,
        // a pid no process of the dump has is free there.
        let leader_gone = if pidns_init {
            find(e.pgid).is_none()
        } else {
            gone(e.pgid)
        };
        let session_stands_in = entries
            .iter()
            .any(|x| x.sid == e.sid && x.session_leader_gone);
        let leader_alive = find(e.sid).is_some_and(|l| l.sid == l.pid && !l.zombie);
        let leader_forks = leader_alive
            && if e.forked_by_session_leader {
                e.fork_parent == e.sid
            } else {
                descends_from(entries, e, e.sid)
            };
        if (session_stands_in || leader_forks) && leader_gone {
            entries[k].group_leader_gone = true;
            continue;
        }
        if pidns_init && leader_gone {
            return Err(DumpError::GroupLeaderGoneInPidns {
                pid: Pid::from_raw(e.pid),
                pgid: e.pgid,
                sid: e.sid,
            });
        }
        return Err(DumpError::GroupOutside {
            pid: Pid::from_raw(e.pid),
            pgid: e.pgid,
        });
    }
    Ok(())
}

/// Whether `ancestor` is an ancestor of `e` among `entries` (by their parents' pids).
fn descends_from(
    entries: &[cryo_proto::image::ProcessEntry],
    e: &cryo_proto::image::ProcessEntry,
    ancestor: i32,
) -> bool {
    let mut ppid = e.ppid;
    // Each step goes to another entry: at most one per entry.
    for _ in 0..entries.len() {
        if ppid == ancestor {
            return true;
        }
        match entries.iter().find(|x| x.pid == ppid && !x.zombie) {
            Some(p) => ppid = p.ppid,
            None => return false,
        }
    }
    false
}

/// Refuses a process below a root (or a zombie) made by clone with an exit signal other
/// than SIGCHLD (another signal, or none: its parent waits for it with __WALL/__WCLONE only):
/// a restore forks it with SIGCHLD, and its parent would be told of its end otherwise. A
/// root's goes to a parent outside the dump, which the restore replaces anyway.
pub(crate) fn refuse_other_exit_signals(tree: &[Member], roots: &[Pid]) -> Result<()> {
    match tree
        .iter()
        .find(|m| !roots.contains(&m.pid) && m.stat.exit_signal != libc::SIGCHLD)
    {
        Some(m) => Err(Error::target(
            m.pid,
            format!(
                "its exit signal (clone's: what its parent gets when it ends) is {}, not \
                 SIGCHLD: a restore would fork it with SIGCHLD",
                match m.stat.exit_signal {
                    0 => "none".to_string(),
                    n => nix::sys::signal::Signal::try_from(n)
                        .map_or_else(|_| format!("signal {n}"), |s| s.as_str().to_string()),
                }
            ),
        )),
        None => Ok(()),
    }
}

/// The core-dump flag of a wait status (WCOREDUMP).
const WAIT_CORE_DUMPED: i32 = 0x80;

/// Refuses a zombie whose wait status shows a core dump (killed by a signal, WCOREDUMP): the
/// kernel sets that flag only when a core file was written (coredump_finish), and the zombie
/// made again at restore dies by its signal without one, so its parent's wait would read
/// CLD_KILLED instead of CLD_DUMPED. Making the stand-in really dump a core depends on the
/// host's core_pattern (a pipe or a path elsewhere), its limits and suid_dumpable: refused.
pub(crate) fn refuse_core_dumped_zombies(tree: &[Member]) -> Result<()> {
    match tree
        .iter()
        .find(|m| m.is_zombie() && m.stat.exit_code & WAIT_CORE_DUMPED != 0)
    {
        Some(m) => Err(Error::target(
            m.pid,
            format!(
                "zombie (killed by signal {}) whose wait status ({:#x}) shows a core dump: a \
                 restore makes it die again without writing a core, and its parent would read \
                 it killed, not dumped",
                m.stat.exit_code & 0x7f,
                m.stat.exit_code
            ),
        )),
        None => Ok(()),
    }
}

/// Refuses child `pid` (not a root) of `ppid` forked by a thread of its parent other than the
/// main one while a thread of it has a parent-death signal (`core`'s PR_SET_PDEATHSIG): the
/// kernel sends it when that forking thread exits (its real parent is the thread), but a
/// restore forks the child from the parent's main thread, which sends it only when the main
/// thread exits. Without a parent-death signal which thread forked it is not observable.
pub(crate) fn refuse_pdeath_of_thread_child(
    pid: Pid,
    ppid: Pid,
    core: &cryo_proto::image::TaskCore,
) -> Result<()> {
    let Some((_, signal)) = crate::task::attrs::death_signal(core) else {
        return Ok(());
    };
    for tid in proc::tids(ppid)?.into_iter().filter(|&t| t != ppid) {
        // A thread that ended meanwhile has handed its children on (the parent is frozen:
        // none can end now, but read the tree as it is).
        let Ok(children) = proc::read(ppid, &format!("task/{tid}/children")) else {
            continue;
        };
        if children.split_whitespace().any(|c| c == pid.as_raw().to_string()) {
            return Err(Error::target(
                pid,
                format!(
                    "it has a parent-death signal ({signal}) and was forked by thread {tid} of \
                     its parent {ppid}, not by the main one: the kernel sends that signal when \
                     thread {tid} exits, and a restore forks it from the main thread"
                ),
            ));
        }
    }
    Ok(())
}

/// What parent `ppid` (frozen, `remote` its main thread, `scratch` mapped) sees of the stops
/// of its children (`children`: each with its pid as the parent sees it, in its PID
/// namespace, and whether it was stopped when dumped), as its own
/// waitid (WNOHANG|WNOWAIT, which changes nothing) reads them: the stopped children whose
/// stop it already collected (waitid WSTOPPED, waitpid WUNTRACED), which the restore stops
/// again and has it collect. Refuses a child stopped and continued whose continue it has not
/// collected (waitid WCONTINUED would report it): a restored child runs without that report.
pub(crate) fn collected_stops(
    ppid: Pid,
    remote: &crate::remote::Remote,
    scratch: &crate::remote::Scratch,
    children: &[(Pid, i32, bool)],
) -> Result<Vec<Pid>> {
    if children.is_empty() {
        return Ok(Vec::new());
    }
    use crate::sys::signal::{SIGINFO_LEN, SIGINFO_PID_OFFSET as SI_PID};
    let flags = |stopped: bool| {
        let report = if stopped {
            libc::WSTOPPED
        } else {
            libc::WCONTINUED
        };
        (report | libc::WNOHANG | libc::WNOWAIT | libc::__WALL) as u32 as u64
    };
    let raw = scratch
        .batch_reading(remote, children.len(), SIGINFO_LEN, |i, slot| {
            let (_, seen_as, stopped) = children[i];
            (
                libc::SYS_waitid,
                [libc::P_PID as u64, seen_as as u64, slot, flags(stopped), 0, 0],
            )
        })
        .map_err(|e| {
            let child = children.get(e.index).map_or(0, |c| c.0.as_raw());
            Error::sys(ppid, format!("waitid(WNOWAIT) for its child {child}"), e.error)
        })?;
    let mut collected = Vec::new();
    for (&(child, seen_as, stopped), info) in children.iter().zip(raw.chunks_exact(SIGINFO_LEN)) {
        let reported = info[SI_PID..SI_PID + 4] == seen_as.to_ne_bytes();
        match (stopped, reported) {
            (true, false) => collected.push(child),
            (false, true) => {
                return Err(Error::target(
                    child,
                    format!(
                        "it was stopped and continued, and its parent {ppid} has not collected \
                         the continue (waitid WCONTINUED would report it): a restore makes it \
                         running without that report"
                    ),
                ))
            }
            _ => {}
        }
    }
    Ok(collected)
}

/// Refuses stopped child `pid` whose stop the restore could not make again as its parent
/// sees it: one its parent collected (`collected`), or one whose SIGCHLD its parent would see
/// again (`notice`, its parent's), is stopped again while the parent is still being
/// restored, by SIGSTOP only (another stop signal a restored process group may discard), and
/// the SIGCHLD held back by SA_NOCLDSTOP meanwhile, which a parent with SIG_DFL and a SIGCHLD
/// pending to one of its threads cannot be given (that would discard it).
pub(crate) fn refuse_unrepeatable_stop(
    pid: Pid,
    stop_signal: i32,
    collected: bool,
    notice: crate::task::signals::StopNotice,
) -> Result<()> {
    let how = if collected {
        "its parent already collected that stop (waitid WSTOPPED, waitpid WUNTRACED)"
    } else {
        "its parent took that stop's SIGCHLD but catches or blocks SIGCHLD"
    };
    if !(collected || notice.seen) {
        return Ok(());
    }
    if stop_signal != libc::SIGSTOP {
        return Err(Error::target(
            pid,
            format!(
                "it is stopped by signal {stop_signal}, not SIGSTOP, and {how}: a restore makes \
                 such a stop again with SIGSTOP only"
            ),
        ));
    }
    if notice.seen && !notice.suppressible {
        return Err(Error::target(
            pid,
            format!(
                "it is stopped and {how}, and a SIGCHLD is pending to a thread of its parent \
                 (SIG_DFL): a restore could not keep the stop made again from signalling it"
            ),
        ));
    }
    Ok(())
}

/// Refuses a leader of a session or process group of the dump (`tree`) whose session or
/// group also holds a process outside the dump: an orphan of the tree, reparented to init or
/// to a subreaper above it, or a sibling of a root in its group (a shell's pipeline). Once the
/// dump ends the tree, that process keeps the leader's pid taken (as its session or group
/// id): a restore could not make the leader again. Such a process is a child of an ancestor
/// of a root (orphans go up the ancestors), so only those are read.
pub(crate) fn refuse_leaders_held_outside(tree: &[Member], roots: &[Pid]) -> Result<()> {
    let leaders: std::collections::HashSet<i32> = tree
        .iter()
        .filter(|m| m.stat.sid == m.pid.as_raw() || m.stat.pgid == m.pid.as_raw())
        .map(|m| m.pid.as_raw())
        .collect();
    if leaders.is_empty() {
        return Ok(());
    }
    let inside: std::collections::HashSet<Pid> = tree.iter().map(|m| m.pid).collect();
    let mut ancestors: Vec<Pid> = Vec::new();
    for &root in roots {
        let mut at = tree
            .iter()
            .find(|m| m.pid == root)
            .map_or(0, |m| m.stat.ppid);
        while at > 0 && !ancestors.contains(&Pid::from_raw(at)) {
            ancestors.push(Pid::from_raw(at));
            at = match proc::stat(Pid::from_raw(at)) {
                Ok(stat) if at != 1 => stat.ppid,
                _ => 0,
            };
        }
    }
    for ancestor in ancestors {
        // An ancestor that ended meanwhile has no children to read.
        let Ok(children) = proc::children(ancestor) else {
            continue;
        };
        for child in children.into_iter().filter(|c| !inside.contains(c)) {
            let Ok(stat) = proc::stat(child) else {
                continue;
            };
            let held = [("session", stat.sid), ("process group", stat.pgid)]
                .into_iter()
                .find(|&(_, id)| leaders.contains(&id));
            if let Some((what, leader)) = held {
                return Err(DumpError::LeaderHeldOutside {
                    pid: Pid::from_raw(leader),
                    what,
                    outside: child.as_raw(),
                }
                .into());
            }
        }
    }
    Ok(())
}

/// Marks the children of a PID namespace's init (the one root; `entries` name processes as
/// the namespace does) in a session whose leader is a zombie or had exited (a daemon's
/// double fork inside a container; zdtm zombie_leader) or another process of the dump (zdtm
/// session00) as `forked_by_session_leader`: at restore that leader (a helper it forks and
/// reaps, `fork_parent` the leader; the zombie, forked by its parent, their `fork_parent`; a
/// stand-in with its pid forked by the init) forks them and ends, and the init inherits
/// them, as the orphans the originals were. The leader leads its group; they are in that
/// group or one of their own; a zombie only in a session whose leader had exited.
fn forked_by_session_leaders(entries: &mut [cryo_proto::image::ProcessEntry], roots: &[Pid]) {
    let [init] = roots else {
        return;
    };
    let init = init.as_raw();
    let Some(init_sid) = entries.iter().find(|e| e.pid == init).map(|e| e.sid) else {
        return;
    };
    // The process whose fork it is: the leader itself (alive: through a helper it forks and
    // reaps), the zombie leader's parent, or the init (for a stand-in).
    let forker = |entries: &[cryo_proto::image::ProcessEntry], sid: i32| {
        match entries.iter().find(|x| x.pid == sid) {
            Some(l) if l.sid != sid || l.pgid != sid => None,
            Some(l) if l.zombie => Some(l.ppid),
            Some(l) => Some(l.pid),
            // Every process of the namespace is in the dump: the leader had exited.
            None => Some(init),
        }
    };
    for k in 0..entries.len() {
        let e = &entries[k];
        let candidate = e.ppid == init && e.sid != e.pid && e.sid != init_sid;
        // In its own group, its leader's, or (forked by the live leader, which then forks a
        // stand-in for it: check_sessions) a group whose leader had exited (zdtm
        // sk-unix-restore-fs-share: the leader's child made a group, forked it, and exited).
        let group_made = |by: i32| {
            e.pgid == e.pid
                || e.pgid == e.sid
                || by == e.sid && !entries.iter().any(|x| x.pid == e.pgid)
        };
        // A zombie only by a stand-in (forked by the init: zdtm helper_zombie_child).
        let by = forker(entries, e.sid)
            .filter(|&by| candidate && group_made(by) && (!e.zombie || by == init));
        if let Some(by) = by {
            entries[k].forked_by_session_leader = true;
            if by != init {
                entries[k].fork_parent = by;
            }
        }
    }
}

/// Marks the processes forked before their parent's setsid (`forked_before_parent_setsid`):
/// one in another session than its parent's, or a session leader whose own such children
/// need it born in another, was forked while the parent was still in the session the parent
/// was born in. That parent must lead its session (it left by setsid), not be a root (cryo
/// forks roots in its own session) nor have a controlling terminal (the restore takes it
/// before forking), and its children so forked must agree on the session (it was born in
/// one). Refuses the rest, naming the process.
fn born_before_setsid(
    entries: &mut [cryo_proto::image::ProcessEntry],
    is_root: &impl Fn(i32) -> bool,
    has_ctty: impl Fn(i32) -> bool,
) -> Result<(), DumpError> {
    // The session each leader must have been born in, for children forked before its setsid.
    let mut born_in: std::collections::HashMap<i32, (i32, i32)> = Default::default();
    // Deepest first: a leader learns its birth session from its children before its own
    // parent is judged. Depth by walking parents (bounded by the tree's size).
    let index: std::collections::HashMap<i32, usize> =
        entries.iter().enumerate().map(|(k, e)| (e.pid, k)).collect();
    let depth = |mut k: usize| {
        let mut d = 0;
        while !is_root(entries[k].pid) && d <= entries.len() {
            let Some(&parent) = index.get(&entries[k].ppid) else {
                break;
            };
            k = parent;
            d += 1;
        }
        d
    };
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.sort_by_cached_key(|&k| std::cmp::Reverse(depth(k)));
    for k in order {
        let e = &entries[k];
        if is_root(e.pid) || e.forked_by_session_leader {
            continue;
        }
        let Some(parent) = index.get(&e.ppid).map(|&p| &entries[p]) else {
            continue;
        };
        // The session it was forked in.
        let needs = if e.sid != e.pid {
            Some(e.sid)
        } else {
            born_in.get(&e.pid).map(|&(sid, _)| sid)
        };
        let Some(needs) = needs.filter(|&s| s != parent.sid) else {
            continue;
        };
        let refused = || DumpError::SessionNotInherited {
            pid: Pid::from_raw(e.pid),
            sid: needs,
            ppid: e.ppid,
            parent_sid: parent.sid,
        };
        if parent.sid != parent.pid || is_root(parent.pid) || parent.zombie {
            return Err(refused());
        }
        match born_in.get(&parent.pid) {
            Some(&(sid, _)) if sid != needs => return Err(refused()),
            Some(_) => {}
            None => {
                born_in.insert(parent.pid, (needs, e.pid));
            }
        }
        entries[k].forked_before_parent_setsid = true;
    }
    for (&leader, &(sid, child)) in &born_in {
        if has_ctty(leader) {
            return Err(DumpError::ChildrenBeforeSetsidWithTerminal {
                pid: Pid::from_raw(leader),
                sid,
                child,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cryo_proto::image::ProcessEntry;

    fn entry(pid: i32, ppid: i32, pgid: i32, sid: i32) -> ProcessEntry {
        ProcessEntry {
            pid,
            ppid,
            pgid,
            sid,
            ..Default::default()
        }
    }

    /// No leader outside the dump has exited.
    fn alive(_: i32) -> bool {
        false
    }

    /// No process has a controlling terminal.
    fn no_tty(_: i32) -> bool {
        false
    }

    #[test]
    fn orphans_of_a_pid_namespace_init_in_others_sessions_are_forked_by_their_leaders() {
        let root = [Pid::from_raw(1)];
        let zombie = |pid, ppid| ProcessEntry {
            zombie: true,
            ..entry(pid, ppid, pid, pid)
        };
        let mut tree = [
            entry(1, 0, 1, 1),
            entry(5, 1, 1, 1),
            // The child of zombie leader 6 (whose parent is 5).
            zombie(6, 5),
            entry(7, 1, 6, 6),
            // A daemon whose leader 8 exited; a zombie likewise.
            entry(9, 1, 8, 8),
            ProcessEntry {
                zombie: true,
                ..entry(11, 1, 11, 8)
            },
            // The grandchild of live leader 10, in a group of its own; another in group 13,
            // whose leader (its parent) exited.
            entry(10, 1, 10, 10),
            entry(12, 1, 12, 10),
            entry(14, 1, 13, 10),
        ];
        check_sessions(&mut tree, &root, false, alive, no_tty, true).unwrap();
        let marked: Vec<(i32, i32)> = tree
            .iter()
            .filter(|e| e.forked_by_session_leader)
            .map(|e| (e.pid, e.fork_parent))
            .collect();
        assert_eq!(marked, [(7, 5), (9, 0), (11, 0), (12, 10), (14, 10)]);
        // Leader 10 forks the stand-in of group 13.
        assert!(tree.iter().all(|e| e.group_leader_gone == (e.pid == 14)));
        // Outside a PID namespace of its own: the same tree is refused.
        let mut plain = tree.clone().map(|e| ProcessEntry {
            forked_by_session_leader: false,
            fork_parent: 0,
            ..e
        });
        assert!(check_sessions(&mut plain, &root, false, alive, no_tty, false).is_err());
        // A zombie in a live leader's session: no helper forks a zombie.
        let mut live = [
            entry(1, 0, 1, 1),
            entry(10, 1, 10, 10),
            ProcessEntry {
                zombie: true,
                ..entry(12, 1, 10, 10)
            },
        ];
        assert!(check_sessions(&mut live, &root, false, alive, no_tty, true).is_err());
        // A group whose leader 3 exited, in the init's session: the init forks its stand-in;
        // one in the session of a live leader below the init too (zdtm session01's group 17).
        let mut group = [
            entry(1, 0, 1, 1),
            entry(4, 1, 3, 1),
            entry(5, 1, 5, 5),
            entry(6, 5, 6, 5),
            entry(7, 6, 9, 5),
        ];
        check_sessions(&mut group, &root, false, alive, no_tty, true).unwrap();
        let stood_in: Vec<i32> = group
            .iter()
            .filter(|e| e.group_leader_gone)
            .map(|e| e.pid)
            .collect();
        assert_eq!(stood_in, [4, 7]);
        // A group whose leader 7 exited in the session of zombie leader 5: no stand-in makes
        // the group there.
        let mut group = [
            entry(1, 0, 1, 1),
            zombie(5, 1),
            entry(6, 1, 6, 5),
            entry(8, 6, 7, 5),
        ];
        let err = check_sessions(&mut group, &root, false, alive, no_tty, true).unwrap_err();
        assert!(
            matches!(err, DumpError::GroupLeaderGoneInPidns { pgid: 7, sid: 5, .. }),
            "{err}"
        );
    }

    #[test]
    fn sessions_and_groups_a_restore_can_make() {
        let root = [Pid::from_raw(10)];
        // A session leader, a child in its group, a child leading a group of its own and a
        // grandchild in that group.
        let mut tree = [
            entry(10, 1, 10, 10),
            entry(11, 10, 10, 10),
            entry(12, 10, 12, 10),
            entry(13, 12, 12, 10),
        ];
        check_sessions(&mut tree, &root, false, alive, no_tty, false).unwrap();
        // A root in the session and group of its shell.
        let mut job = [entry(10, 5, 10, 5), entry(11, 10, 10, 5)];
        let err = check_sessions(&mut job, &root, false, alive, no_tty, false).unwrap_err();
        assert!(matches!(err, DumpError::SessionOutside { sid: 5, .. }), "{err}");
        assert!(err.to_string().contains("--shell-job"), "{err}");
        check_sessions(&mut job, &root, true, alive, no_tty, false).unwrap();
        let mut job = [entry(10, 5, 4, 5)];
        check_sessions(&mut job, &root, true, alive, no_tty, false).unwrap();
        // A group led outside the dump, in the root's session.
        let mut tree = [entry(10, 1, 10, 10), entry(11, 10, 7, 10)];
        let err = check_sessions(&mut tree, &root, false, alive, no_tty, false).unwrap_err();
        assert!(matches!(err, DumpError::GroupOutside { pgid: 7, .. }), "{err}");
        // A child in a session neither its parent is in nor its parent was born in.
        let mut tree = [
            entry(10, 1, 10, 10),
            entry(11, 10, 11, 11),
            entry(12, 11, 12, 12),
            entry(13, 12, 10, 10),
            entry(14, 12, 11, 11),
        ];
        let err = check_sessions(&mut tree, &root, false, alive, no_tty, false).unwrap_err();
        assert!(
            matches!(err, DumpError::SessionNotInherited { parent_sid: 12, .. }),
            "{err}"
        );
        // One whose parent, not leading a session, is in another.
        let mut tree = [entry(10, 1, 10, 10), entry(11, 10, 10, 10), entry(12, 11, 12, 9)];
        let err = check_sessions(&mut tree, &root, false, alive, no_tty, false).unwrap_err();
        assert!(matches!(err, DumpError::SessionNotInherited { .. }), "{err}");
    }

    #[test]
    fn children_forked_before_their_parents_setsid_are_marked_to_be_forked_so_again() {
        let root = [Pid::from_raw(10)];
        // zdtm session00: 11 forked 12, then left for a session of its own; 13 forked 14,
        // which forked 15, then both left for sessions of their own (14 born before 13's
        // setsid, so 15 too is in the root's session).
        let mut tree = [
            entry(10, 1, 10, 10),
            entry(11, 10, 11, 11),
            entry(12, 11, 12, 10),
            entry(13, 10, 13, 13),
            entry(14, 13, 14, 14),
            entry(15, 14, 15, 10),
        ];
        check_sessions(&mut tree, &root, false, alive, no_tty, false).unwrap();
        let early: Vec<i32> = tree
            .iter()
            .filter(|e| e.forked_before_parent_setsid)
            .map(|e| e.pid)
            .collect();
        assert_eq!(early, [12, 14, 15]);
        // A root leading its session cannot have been born in another of the dump's.
        let mut tree = [entry(10, 1, 10, 10), entry(11, 10, 11, 4)];
        assert!(check_sessions(&mut tree, &root, false, alive, no_tty, false).is_err());
        // With a controlling terminal the leader takes it before forking: refused.
        let mut tree = [
            entry(10, 1, 10, 10),
            entry(11, 10, 11, 11),
            entry(12, 11, 12, 10),
        ];
        let err = check_sessions(&mut tree, &root, false, alive, |p| p == 11, false).unwrap_err();
        assert!(
            matches!(err, DumpError::ChildrenBeforeSetsidWithTerminal { child: 12, .. }),
            "{err}"
        );
    }

    #[test]
    fn leaders_that_exited_get_stand_ins_where_a_restore_can_make_them() {
        let root = [Pid::from_raw(10)];
        let gone = |pid: i32| pid < 10;
        // A daemon: its session and group led by the parent that exited after setsid; a child
        // in a group whose leader exited too.
        let mut tree = [entry(10, 1, 5, 5), entry(11, 10, 6, 5)];
        check_sessions(&mut tree, &root, false, gone, no_tty, false).unwrap();
        assert!(tree[0].session_leader_gone && tree[0].group_leader_gone);
        assert!(!tree[1].session_leader_gone && tree[1].group_leader_gone);
        // A group whose leader exited, in the session the root leads (zdtm zombie01).
        let mut tree = [entry(10, 1, 10, 10), entry(11, 10, 7, 10)];
        tree[1].zombie = true;
        check_sessions(&mut tree, &root, false, gone, no_tty, false).unwrap();
        assert!(tree[1].group_leader_gone && !tree[1].session_leader_gone);
        // A leader still running outside is refused, as is a group whose session nothing of
        // the restore leads (a shell job's).
        let mut tree = [entry(10, 1, 5, 5)];
        let err = check_sessions(&mut tree, &root, false, |p| p != 5, no_tty, false).unwrap_err();
        assert!(matches!(err, DumpError::SessionOutside { sid: 5, .. }), "{err}");
        let mut tree = [entry(10, 1, 10, 5), entry(11, 10, 7, 5)];
        let err = check_sessions(&mut tree, &root, true, gone, no_tty, false).unwrap_err();
        assert!(matches!(err, DumpError::GroupOutside { pgid: 7, .. }), "{err}");
    }
}
