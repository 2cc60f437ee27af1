//! The kernel objects clone flags let two processes share: fd tables (CLONE_FILES),
//! filesystem information (CLONE_FS: working directory, root, umask), address spaces
//! (CLONE_VM, vfork) and signal handler tables (CLONE_SIGHAND); and the fd table or
//! filesystem information a thread took for itself (unshare). A child sharing its parent's fd
//! table or fs_struct is cloned so at restore (restore/child.rs); everything else is refused
//! at dump, naming both tasks: restored apart, a change one makes (an fd opened, a chdir, a
//! write to memory, a handler set) would no longer be seen by the other.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::io;

use nix::unistd::Pid;

use crate::sys::kcmp::{kcmp_order, TaskObject};

/// Why a dump refused shared task objects.
#[derive(Debug, thiserror::Error)]
pub enum SharingError {
    /// A parent waits in vfork for its child, which runs on the parent's memory.
    #[error(
        "pid {pid}: waits in vfork for its child {child}, which runs in its address space until \
         it calls exec or exits: a temporary state, retry"
    )]
    Vfork {
        /// The parent.
        pid: Pid,
        /// The child.
        child: Pid,
    },
    /// Two processes share one object.
    #[error(
        "pid {pid}: shares its {} with pid {other}{} ({}): a restore gives each process its own \
         (only a child sharing its parent's fd table or working directory is cloned so); refused",
        .object.what(),
        if *.outside { " (outside the dump)" } else { "" },
        .object.flag()
    )]
    Shared {
        /// A process of the dump.
        pid: Pid,
        /// The process it shares the object with.
        other: Pid,
        /// What they share.
        object: Shareable,
        /// Whether `other` is outside the dump (the parent of a root).
        outside: bool,
    },
    /// A thread has an object of its own that its process's main thread does not share.
    #[error(
        "pid {pid} thread {tid}: has a {} of its own (unshare({})): a restore gives the threads \
         of a process one; refused",
        .object.what(),
        .object.flag()
    )]
    ThreadOwn {
        /// The process.
        pid: Pid,
        /// The thread.
        tid: Pid,
        /// What the thread has of its own.
        object: Shareable,
    },
    /// kcmp failed.
    #[error("pid {pid}: compare its {} with task {other} (kcmp): {source}", .object.what())]
    Compare {
        /// The task compared.
        pid: Pid,
        /// The task it was compared with.
        other: Pid,
        /// What was compared.
        object: Shareable,
        /// The error.
        source: io::Error,
    },
}

/// An object clone flags share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shareable(TaskObject);

impl Shareable {
    /// What users call it.
    fn what(self) -> &'static str {
        match self.0 {
            TaskObject::Vm => "address space",
            TaskObject::Files => "fd table",
            TaskObject::Fs => "working directory, root and umask (fs_struct)",
            TaskObject::Sighand => "signal handler table",
            TaskObject::Sysvsem => "SysV semaphore undo list",
        }
    }

    /// The clone flag that shares it.
    fn flag(self) -> &'static str {
        match self.0 {
            TaskObject::Vm => "CLONE_VM",
            TaskObject::Files => "CLONE_FILES",
            TaskObject::Fs => "CLONE_FS",
            TaskObject::Sighand => "CLONE_SIGHAND",
            TaskObject::Sysvsem => "CLONE_SYSVSEM",
        }
    }
}

/// The objects two processes may share, the address space first (a process sharing its
/// signal handlers shares its memory too, and that is the more telling name).
const BETWEEN_PROCESSES: [TaskObject; 4] = [
    TaskObject::Vm,
    TaskObject::Sighand,
    TaskObject::Files,
    TaskObject::Fs,
];

/// The objects a thread may take for itself with unshare(2) (threads always share memory and
/// signal handlers).
const OF_A_THREAD: [TaskObject; 2] = [TaskObject::Files, TaskObject::Fs];

/// Whether `a` and `b` have one `object`.
fn same(a: Pid, b: Pid, object: TaskObject) -> Result<bool, SharingError> {
    kcmp_order(a, b, object)
        .map(|o| o == Ordering::Equal)
        .map_err(|source| SharingError::Compare {
            pid: a,
            other: b,
            object: Shareable(object),
            source,
        })
}

/// Refuses a parent of the tree waiting in vfork for a child of the tree, before the tree is
/// frozen: such a parent sleeps uninterruptibly (state D) until the child execs or exits, so
/// its freeze would wait as long. `members`: each live process with its parent and state.
pub(crate) fn refuse_vfork(members: &[(Pid, Pid, char)]) -> Result<(), SharingError> {
    for &(pid, _, _) in members.iter().filter(|m| m.2 == 'D') {
        for &(child, _, _) in members.iter().filter(|m| m.1 == pid) {
            match same(pid, child, TaskObject::Vm) {
                Ok(true) => return Err(SharingError::Vfork { pid, child }),
                Ok(false) => {}
                // The child exec'd or exited meanwhile: the freeze will tell.
                Err(SharingError::Compare { source, .. })
                    if source.raw_os_error() == Some(libc::ESRCH) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// The processes whose fd table (CLONE_FILES) or working directory, root and umask
/// (CLONE_FS) are their parent's: the restore clones them so.
#[derive(Debug, Default)]
pub(crate) struct SharedWithParent {
    /// Their fd table is their parent's.
    pub files: HashSet<Pid>,
    /// Their fs_struct is their parent's.
    pub fs: HashSet<Pid>,
}

/// Judges, in a frozen tree, what its live processes share. A process's fd table or fs_struct
/// shared with its parent in the dump (not a root) is restored by cloning it so (returned);
/// any other sharing of an object of `BETWEEN_PROCESSES` is refused: between processes
/// neither of which is the other's parent in the chain of sharers, by a root and its parent
/// outside the dump (`roots`: each root with its parent), of memory or signal handlers at
/// all; and a thread whose fd table or filesystem information is not its main thread's.
/// `processes`: each live process with its parent and its threads (the main one included).
pub(crate) fn judge_shared(
    processes: &[(Pid, Pid, &[Pid])],
    roots: &[(Pid, Pid)],
) -> Result<SharedWithParent, SharingError> {
    for &(pid, _, tids) in processes {
        for &tid in tids.iter().filter(|&&t| t != pid) {
            for object in OF_A_THREAD {
                if !same(pid, tid, object)? {
                    return Err(SharingError::ThreadOwn {
                        pid,
                        tid,
                        object: Shareable(object),
                    });
                }
            }
        }
    }
    // A root's parent is not frozen: it may be gone, or beyond what cryo may inspect (the
    // init of a container's host): then only what the dump holds is compared. Init shares
    // nothing with its children.
    for &(root, parent) in roots.iter().filter(|r| r.1.as_raw() > 1) {
        for object in BETWEEN_PROCESSES {
            match same(root, parent, object) {
                Ok(true) => {
                    return Err(SharingError::Shared {
                        pid: root,
                        other: parent,
                        object: Shareable(object),
                        outside: true,
                    })
                }
                Ok(false) => {}
                Err(SharingError::Compare { source, .. })
                    if matches!(source.raw_os_error(), Some(libc::ESRCH | libc::EPERM)) =>
                {
                    break
                }
                Err(e) => return Err(e),
            }
        }
    }
    let mut shared = SharedWithParent::default();
    let mut tasks: Vec<Pid> = processes.iter().map(|&(pid, _, _)| pid).collect();
    if tasks.len() < 2 {
        return Ok(shared);
    }
    // A root is forked by cryo at restore: it cannot get its parent's objects.
    let parent_of: HashMap<Pid, Pid> = processes
        .iter()
        .filter(|p| !roots.iter().any(|r| r.0 == p.0))
        .map(|&(pid, ppid, _)| (pid, ppid))
        .collect();
    for object in BETWEEN_PROCESSES {
        for group in sharing_groups(&mut tasks, object)? {
            // Each sharer but one (the group's top) must have its parent in the group.
            let mut tops = group
                .iter()
                .filter(|m| parent_of.get(m).is_none_or(|p| !group.contains(p)));
            let Some(&top) = tops.next() else {
                continue;
            };
            let restorable = matches!(object, TaskObject::Files | TaskObject::Fs);
            let refused = match tops.next() {
                Some(&second) => Some(second),
                None if !restorable => group.iter().copied().find(|&m| m != top),
                None => None,
            };
            if let Some(pid) = refused {
                return Err(SharingError::Shared {
                    pid,
                    other: top,
                    object: Shareable(object),
                    outside: false,
                });
            }
            let set = match object {
                TaskObject::Files => &mut shared.files,
                _ => &mut shared.fs,
            };
            set.extend(group.iter().filter(|&&m| m != top));
        }
    }
    Ok(shared)
}

/// The groups (two or more) of `tasks` that share one `object`: sorted by the order kcmp
/// gives their objects, tasks sharing one lie side by side.
fn sharing_groups(tasks: &mut [Pid], object: TaskObject) -> Result<Vec<Vec<Pid>>, SharingError> {
    let mut failed = None;
    tasks.sort_by(|&a, &b| {
        kcmp_order(a, b, object).unwrap_or_else(|e| {
            failed.get_or_insert((a, b, e));
            Ordering::Equal
        })
    });
    if let Some((pid, other, source)) = failed {
        return Err(SharingError::Compare {
            pid,
            other,
            object: Shareable(object),
            source,
        });
    }
    let mut groups: Vec<Vec<Pid>> = Vec::new();
    let mut run = vec![tasks[0]];
    for pair in tasks.windows(2) {
        if same(pair[0], pair[1], object)? {
            run.push(pair[1]);
        } else {
            if run.len() > 1 {
                groups.push(std::mem::take(&mut run));
            }
            run = vec![pair[1]];
        }
    }
    if run.len() > 1 {
        groups.push(run);
    }
    Ok(groups)
}
