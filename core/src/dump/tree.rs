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
            let (pid, zombie) = (out[k].pid, out[k].stat.state == 'Z');
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
