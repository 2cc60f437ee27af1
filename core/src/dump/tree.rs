//! The trees of a dump: every process below the roots given with -t, parents before
//! children, zombies included.

use nix::unistd::Pid;

use super::error::DumpError;
use crate::error::Result;
use crate::freeze::check_target;
use crate::proc;

/// A process of the trees being dumped.
pub(crate) struct Member {
    pub(crate) pid: Pid,
    pub(crate) stat: proc::Stat,
}

/// Every process of the trees rooted at `roots`, parents before children; zombies included.
/// A root that lies inside another root's tree is refused.
pub(crate) fn resolve_trees(roots: &[Pid]) -> Result<Vec<Member>> {
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
