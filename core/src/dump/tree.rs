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
            for child in proc::children(pid)? {
                if roots.contains(&child) {
                    return Err(DumpError::RootInsideTree {
                        pid: child,
                        ancestor: pid,
                    }
                    .into());
                }
                let stat = proc::stat(child)?;
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
/// leads its own, and joins a group whose leader was restored in its session. A shell's job
/// (`shell_job`) comes back in the session and group of `cryo restore` instead: its roots'
/// sessions and groups are not checked.
pub(crate) fn check_sessions(
    entries: &[cryo_proto::image::ProcessEntry],
    roots: &[Pid],
    shell_job: bool,
) -> Result<(), DumpError> {
    let find = |pid: i32| entries.iter().find(|e| e.pid == pid);
    let is_root = |pid: i32| roots.iter().any(|r| r.as_raw() == pid);
    // The groups a shell job's restore replaces by its own: those of its roots.
    let job_groups: Vec<i32> = entries
        .iter()
        .filter(|e| shell_job && is_root(e.pid) && e.sid != e.pid)
        .map(|e| e.pgid)
        .collect();
    for e in entries {
        let pid = Pid::from_raw(e.pid);
        if e.sid != e.pid {
            match find(e.ppid).filter(|_| !is_root(e.pid)) {
                Some(parent) if parent.sid != e.sid => {
                    return Err(DumpError::SessionNotInherited {
                        pid,
                        sid: e.sid,
                        ppid: e.ppid,
                        parent_sid: parent.sid,
                    })
                }
                Some(_) => {}
                None if shell_job => {}
                None => return Err(DumpError::SessionOutside { pid, sid: e.sid }),
            }
        }
        if e.pgid != e.pid && !job_groups.contains(&e.pgid) {
            let leader_here = find(e.pgid).is_some_and(|l| l.sid == e.sid);
            if !leader_here {
                return Err(DumpError::GroupOutside { pid, pgid: e.pgid });
            }
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

    #[test]
    fn sessions_and_groups_a_restore_can_make() {
        let root = [Pid::from_raw(10)];
        // A session leader, a child in its group, a child leading a group of its own and a
        // grandchild in that group.
        let tree = [
            entry(10, 1, 10, 10),
            entry(11, 10, 10, 10),
            entry(12, 10, 12, 10),
            entry(13, 12, 12, 10),
        ];
        check_sessions(&tree, &root, false).unwrap();
        // A root in the session and group of its shell.
        let job = [entry(10, 5, 10, 5), entry(11, 10, 10, 5)];
        let err = check_sessions(&job, &root, false).unwrap_err();
        assert!(matches!(err, DumpError::SessionOutside { sid: 5, .. }), "{err}");
        assert!(err.to_string().contains("--shell-job"), "{err}");
        check_sessions(&job, &root, true).unwrap();
        let job = [entry(10, 5, 4, 5)];
        check_sessions(&job, &root, true).unwrap();
        // A group led outside the dump, in the root's session.
        let tree = [entry(10, 1, 10, 10), entry(11, 10, 7, 10)];
        let err = check_sessions(&tree, &root, false).unwrap_err();
        assert!(matches!(err, DumpError::GroupOutside { pgid: 7, .. }), "{err}");
        // A child left in the old session by a parent that started a new one.
        let tree = [entry(10, 1, 10, 10), entry(11, 10, 11, 11), entry(12, 11, 10, 10)];
        let err = check_sessions(&tree, &root, false).unwrap_err();
        assert!(
            matches!(err, DumpError::SessionNotInherited { parent_sid: 11, .. }),
            "{err}"
        );
    }
}
