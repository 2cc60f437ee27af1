//! Stand-ins for session and process group leaders that had exited when the tree was dumped:
//! processes made with the leader's pid that start its session (or lead its group) while the
//! restored processes fork into it or join it, then end.
//!
//! A daemon that forked again after `setsid()` runs in a session, and usually a group, whose
//! leader is gone; a group outlives its leader the same way (a pipeline whose first process
//! exited, zdtm zombie01). Neither can be joined from outside, and `setsid()` names the
//! session after its caller: only a process with that pid can make it again. Every stand-in is
//! a child of cryo (forked with CLONE_PARENT), which ends and reaps it once every process of
//! the tree has joined its session and group: from then on the session and the group live on
//! through their members, as at dump.
//!
//! ```text
//! cryo ── session stand-in (pid = sid, setsid)      forks, CLONE_PARENT, in its session:
//!      ├─ group stand-in (pid = pgid, setpgid)         the groups of the session,
//!      └─ root                                         then its roots
//!
//! leader (a process of the tree that leads its session: a root, a PID namespace's init
//!   │     or a process below them)
//!   ├─ group stand-in (pid = pgid)                  forked and made a group leader by it
//!   └─ children                                     before its children, which join; then
//!                                                   ended and reaped by it
//! ```

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use cryo_proto::image::ProcessEntry;
use nix::unistd::Pid;

use super::error::RestoreError;
use crate::sys::process::{fork_with_pid_sharing, Forked};

/// How long a forker waits for a group stand-in to lead its group.
const GROUP_PATIENCE: Duration = Duration::from_secs(2);

/// A session whose leader had exited: its stand-in's pid and what it forks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SessionStandIn {
    /// The session (the exited leader's pid).
    pub sid: i32,
    /// The groups of the session whose leaders had exited too (other than the session's).
    pub groups: Vec<i32>,
    /// The roots (task positions) forked in the session.
    pub roots: Vec<usize>,
}

/// The stand-ins a restore makes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct StandIns {
    /// Sessions made by stand-ins (cryo forks each).
    pub sessions: Vec<SessionStandIn>,
    /// Per task position: the group stand-ins it forks in its session (a live leader of it,
    /// an ancestor of every member) before its children, and ends once they joined.
    pub groups_of_task: Vec<Vec<i32>>,
}

impl StandIns {
    /// Works out the stand-ins of a tree: `tasks` in creation order, `roots` their positions.
    pub fn plan(
        tasks: &[&ProcessEntry],
        zombies: &[ProcessEntry],
        roots: &[usize],
    ) -> Result<Self, RestoreError> {
        let mut plan = StandIns {
            sessions: Vec::new(),
            groups_of_task: vec![Vec::new(); tasks.len()],
        };
        for &r in roots {
            let e = tasks[r];
            if !e.session_leader_gone {
                continue;
            }
            match plan.sessions.iter_mut().find(|s| s.sid == e.sid) {
                Some(s) => s.roots.push(r),
                None => plan.sessions.push(SessionStandIn {
                    sid: e.sid,
                    groups: Vec::new(),
                    roots: vec![r],
                }),
            }
        }
        let entries = tasks.iter().copied().chain(zombies);
        for e in entries.filter(|e| e.group_leader_gone) {
            if let Some(s) = plan.sessions.iter_mut().find(|s| s.sid == e.sid) {
                if e.pgid != s.sid && !s.groups.contains(&e.pgid) {
                    s.groups.push(e.pgid);
                }
                continue;
            }
            let leader = (0..tasks.len()).find(|&t| tasks[t].pid == e.sid && tasks[t].sid == e.sid);
            match leader {
                Some(r) if !plan.groups_of_task[r].contains(&e.pgid) => {
                    plan.groups_of_task[r].push(e.pgid)
                }
                Some(_) => {}
                None => {
                    return Err(RestoreError::StandInOutsideTree {
                        pid: e.pid,
                        pgid: e.pgid,
                        sid: e.sid,
                    })
                }
            }
        }
        // A stand-in takes a pid no process of the image has.
        let taken: BTreeSet<i32> = tasks
            .iter()
            .flat_map(|e| e.tids.iter().copied().chain([e.pid]))
            .chain(zombies.iter().map(|z| z.pid))
            .collect();
        if let Some(pid) = plan.pids().find(|p| taken.contains(p)) {
            return Err(RestoreError::StandInPidTaken { pid });
        }
        Ok(plan)
    }

    /// Every stand-in's pid: cryo's first ([`StandIns::of_cryo`]).
    pub fn pids(&self) -> impl Iterator<Item = i32> + '_ {
        self.of_cryo()
            .chain(self.groups_of_task.iter().flatten().copied())
    }

    /// The pids of the stand-ins that are cryo's children: each session's and its groups'
    /// (the others are children of leaders of the tree, made inside its PID namespace).
    pub fn of_cryo(&self) -> impl Iterator<Item = i32> + '_ {
        self.sessions
            .iter()
            .flat_map(|s| std::iter::once(s.sid).chain(s.groups.iter().copied()))
    }

    /// The session stand-in that forks root `r`, if one does.
    pub fn session_of(&self, r: usize) -> Option<&SessionStandIn> {
        self.sessions.iter().find(|s| s.roots.contains(&r))
    }
}

/// In a process forked from cryo with the session's pid: starts the session, makes its group
/// stand-ins, then forks each of its roots (`fork_root` runs in the root: it never returns).
/// Parks once they are forked; reports a failure as `Err` (the caller tells the roots' pipes).
pub(super) fn start_session(
    session: &SessionStandIn,
    cryo: Pid,
    mut fork_root: impl FnMut(usize) -> std::io::Result<()>,
) -> std::io::Result<()> {
    park_signals();
    nix::unistd::setsid()?;
    for &pgid in &session.groups {
        lead_group(pgid, cryo)?;
    }
    for &r in &session.roots {
        fork_root(r)?;
    }
    crate::sys::process::park_child(cryo)
}

/// Forks, as a child of cryo (CLONE_PARENT) in the caller's session, the stand-in leader of
/// group `pgid`, and returns once the group exists. `cryo` is the caller's parent.
fn lead_group(pgid: i32, cryo: Pid) -> std::io::Result<()> {
    match fork_with_pid_sharing(Pid::from_raw(pgid), libc::CLONE_PARENT as u64)? {
        Forked::Child => {
            park_signals();
            if nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0)).is_err() {
                crate::sys::process::exit_child(70);
            }
            crate::sys::process::park_child(cryo)
        }
        Forked::Parent(_) => {}
    }
    // Not the caller's child: the stand-in makes its group itself, seen here once done.
    let pgid = Pid::from_raw(pgid);
    await_in_group(pgid, pgid, Instant::now(), false)
}

/// Waits until process `pid` is in group `pgid`, until [`GROUP_PATIENCE`] after `started`
/// (ETIMEDOUT then). `not_yet`: a process not there yet (ESRCH) is waited for too, one its
/// forker makes meanwhile.
fn await_in_group(pid: Pid, pgid: Pid, started: Instant, not_yet: bool) -> std::io::Result<()> {
    loop {
        match nix::unistd::getpgid(Some(pid)) {
            Ok(g) if g == pgid => return Ok(()),
            Ok(_) if started.elapsed() < GROUP_PATIENCE => std::thread::yield_now(),
            Err(nix::errno::Errno::ESRCH) if not_yet && started.elapsed() < GROUP_PATIENCE => {
                std::thread::yield_now()
            }
            Ok(_) => return Err(std::io::Error::from_raw_os_error(libc::ETIMEDOUT)),
            Err(e) => return Err(e.into()),
        }
    }
}

/// In a process just forked by a leader of its session, as the stand-in leader of a group of
/// that session (the leader made it one): waits to be ended by `leader`
/// ([`end_own_group`]).
pub(super) fn stand_in_for_group(leader: Pid) -> ! {
    park_signals();
    crate::sys::process::park_child(leader)
}

/// In the leader that forked `stand_in` (a group's stand-in, its child): waits until every
/// process of `members` is in the group (they join it as they start, forked by this leader
/// or its descendants), then ends and reaps the stand-in: the group lives on through them.
pub(super) fn end_own_group(stand_in: Pid, members: &[i32]) -> std::io::Result<()> {
    let started = Instant::now();
    for &m in members {
        await_in_group(Pid::from_raw(m), stand_in, started, true)?;
    }
    nix::sys::signal::kill(stand_in, nix::sys::signal::Signal::SIGKILL)?;
    nix::sys::wait::waitpid(stand_in, Some(nix::sys::wait::WaitPidFlag::__WALL))?;
    Ok(())
}

/// A stand-in answers no signal but SIGKILL (cryo's handlers came with the fork).
fn park_signals() {
    let _ = crate::sys::signal::set_mask(!0);
}

/// Ends and reaps the stand-ins among `pids` (those made: children of cryo): every process of
/// the tree is in its session and group by now, which live on through them.
pub(super) fn end(pids: impl Iterator<Item = i32>) {
    let cryo = nix::unistd::getpid().as_raw();
    for pid in pids.map(Pid::from_raw) {
        if crate::proc::stat(pid).is_ok_and(|s| s.ppid == cryo) {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::__WALL));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(pid: i32, pgid: i32, sid: i32) -> ProcessEntry {
        ProcessEntry {
            pid,
            pgid,
            sid,
            tids: vec![pid],
            ..Default::default()
        }
    }

    #[test]
    fn a_daemon_and_a_group_in_a_root_session_get_their_stand_ins() {
        // A daemon (session and group 5 gone) with a child in group 6 (gone); a second root
        // leading session 20, with a zombie in group 21 (gone).
        let mut daemon = entry(10, 5, 5);
        daemon.session_leader_gone = true;
        daemon.group_leader_gone = true;
        let mut child = entry(11, 6, 5);
        child.group_leader_gone = true;
        let leader = entry(20, 20, 20);
        let mut zombie = entry(22, 21, 20);
        zombie.group_leader_gone = true;
        let tasks = [&daemon, &leader, &child];
        let plan = StandIns::plan(&tasks, &[zombie], &[0, 1]).unwrap();
        assert_eq!(
            plan.sessions,
            [SessionStandIn {
                sid: 5,
                groups: vec![6],
                roots: vec![0],
            }]
        );
        assert_eq!(plan.groups_of_task, [vec![], vec![21], vec![]]);
        assert_eq!(plan.pids().collect::<Vec<_>>(), [5, 6, 21]);
        assert_eq!(plan.session_of(0).map(|s| s.sid), Some(5));
        assert!(plan.session_of(1).is_none());
    }

    #[test]
    fn a_stand_in_with_a_pid_of_the_image_or_no_session_to_be_made_in_is_refused() {
        let mut daemon = entry(10, 5, 5);
        daemon.session_leader_gone = true;
        let other = entry(5, 5, 5);
        let err = StandIns::plan(&[&daemon, &other], &[], &[0, 1]).unwrap_err();
        assert!(
            matches!(err, RestoreError::StandInPidTaken { pid: 5 }),
            "{err}"
        );
        let mut lost = entry(10, 7, 3);
        lost.group_leader_gone = true;
        let err = StandIns::plan(&[&lost], &[], &[0]).unwrap_err();
        assert!(
            matches!(err, RestoreError::StandInOutsideTree { pgid: 7, .. }),
            "{err}"
        );
    }
}
