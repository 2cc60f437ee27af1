//! The namespaces of a task, judged at dump against cryo's own: a UTS namespace is made
//! again with its host and domain names, an IPC namespace with its objects (crate::ipc); a
//! mount namespace whose mounts are cryo's is taken
//! as cryo's; any other namespace than cryo's is refused, since the task would come back in
//! cryo's and see other pids, interfaces, mounts, IPC objects, cgroups, clocks or ids.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

use cryo_proto::image::{TaskCore, UtsNamespace};
use nix::unistd::Pid;

use crate::proc;
use crate::restore::error::{ChildError, ChildStep};
use crate::sys;

/// Why the namespaces of a task cannot come back; each names the process (and the thread).
#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    /// A namespace link or the mount table could not be read.
    #[error("pid {pid} thread {tid}: read its {kind} namespace: {errno}")]
    Read {
        /// The process.
        pid: Pid,
        /// The thread.
        tid: Pid,
        /// The kind (/proc/PID/ns/KIND).
        kind: &'static str,
        /// The kernel's answer (in the message, so not chained as a source).
        errno: io::Error,
    },
    /// The task is in a namespace of a kind cryo does not make again.
    #[error(
        "pid {pid} thread {tid}: in {what} namespace other than cryo's ({kind}:[{inode}]): \
         namespaces of this kind are not restored, and in cryo's it would see {sees}"
    )]
    Other {
        /// The process.
        pid: Pid,
        /// The thread.
        tid: Pid,
        /// The kind (/proc/PID/ns/KIND).
        kind: &'static str,
        /// The kind as users name it.
        what: &'static str,
        /// What the task would see differently.
        sees: &'static str,
        /// The namespace's inode.
        inode: u64,
    },
    /// The task's mount namespace is not cryo's and its mounts differ from cryo's.
    #[error(
        "pid {pid}: in a mount namespace other than cryo's whose mounts differ ({mount}): \
         mount namespaces are not restored, and in cryo's it would see cryo's mounts"
    )]
    Mounts {
        /// The process.
        pid: Pid,
        /// The first mount found in one table and not the other.
        mount: String,
    },
    /// A thread is in another namespace than its process's main thread.
    #[error(
        "pid {pid} thread {tid}: in another {kind} namespace than its process: namespaces \
         are restored per process"
    )]
    Thread {
        /// The process.
        pid: Pid,
        /// The thread.
        tid: Pid,
        /// The kind.
        kind: &'static str,
    },
    /// A process's UTS namespace cannot be made again by the tree's forks.
    #[error("pid {pid}: {detail}")]
    UtsTree {
        /// The process.
        pid: Pid,
        /// Why.
        detail: String,
    },
}

/// One kind of namespace: its name under /proc/PID/ns, the one of cryo's it is compared with,
/// how users call it, and what a task moved into cryo's would see differently.
struct Kind {
    link: &'static str,
    ours: &'static str,
    what: &'static str,
    sees: &'static str,
}

/// The kinds refused when they differ from cryo's (UTS, IPC and mount are judged apart).
const REFUSED: &[Kind] = &[
    Kind {
        link: "cgroup",
        ours: "cgroup",
        what: "a cgroup",
        sees: "another cgroup root",
    },
    Kind {
        link: "net",
        ours: "net",
        what: "a network",
        sees: "other interfaces, addresses and ports",
    },
    Kind {
        link: "pid",
        ours: "pid",
        what: "a PID",
        sees: "other pids (its own included)",
    },
    Kind {
        link: "pid_for_children",
        ours: "pid",
        what: "a PID (for its children)",
        sees: "its next children forked into cryo's",
    },
    Kind {
        link: "time",
        ours: "time",
        what: "a time",
        sees: "other monotonic and boot clocks",
    },
    Kind {
        link: "time_for_children",
        ours: "time",
        what: "a time (for its children)",
        sees: "its next children forked onto cryo's clocks",
    },
    Kind {
        link: "user",
        ours: "user",
        what: "a user",
        sees: "other ids and capabilities",
    },
];

/// The inode of namespace link `path` (`KIND:[INODE]`).
fn inode(path: &Path) -> io::Result<u64> {
    let target = std::fs::read_link(path)?;
    let text = target.to_string_lossy();
    text.rsplit_once('[')
        .and_then(|(_, rest)| rest.strip_suffix(']'))
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("{text:?}")))
}

/// Checks the namespaces of every thread of `pid` against cryo's: returns its UTS namespace
/// when that is not cryo's (with its names), refuses any other kind that differs.
pub fn dump(pid: Pid, tids: &[Pid]) -> Result<Option<UtsNamespace>, NamespaceError> {
    let ours = |kind: &'static str| inode(Path::new(&format!("/proc/self/ns/{kind}")));
    let mut main: HashMap<&'static str, u64> = HashMap::new();
    for &tid in tids {
        let dir = proc::dir(pid).join(format!("task/{tid}/ns"));
        let read = |kind: &'static str| {
            inode(&dir.join(kind)).map_err(|errno| NamespaceError::Read {
                pid,
                tid,
                kind,
                errno,
            })
        };
        let kinds = REFUSED.iter().map(|k| k.link).chain(["mnt", "uts", "ipc"]);
        for link in kinds {
            let theirs = match read(link) {
                // A PID namespace made (unshare) that no child entered yet has no link: it is
                // not cryo's either.
                Err(NamespaceError::Read { errno, .. })
                    if link.ends_with("_for_children")
                        && errno.kind() == io::ErrorKind::NotFound =>
                {
                    0
                }
                other => other?,
            };
            match main.get(link) {
                Some(&m) if m != theirs => {
                    return Err(NamespaceError::Thread {
                        pid,
                        tid,
                        kind: link,
                    })
                }
                Some(_) => continue,
                None => {
                    main.insert(link, theirs);
                }
            }
            let Some(kind) = REFUSED.iter().find(|k| k.link == link) else {
                continue;
            };
            let mine = ours(kind.ours).map_err(|errno| NamespaceError::Read {
                pid,
                tid,
                kind: kind.ours,
                errno,
            })?;
            if theirs != mine {
                return Err(NamespaceError::Other {
                    pid,
                    tid,
                    kind: link,
                    what: kind.what,
                    sees: kind.sees,
                    inode: theirs,
                });
            }
        }
    }
    let read_ours = |kind: &'static str| {
        ours(kind).map_err(|errno| NamespaceError::Read {
            pid,
            tid: pid,
            kind,
            errno,
        })
    };
    if main.get("mnt").copied() != Some(read_ours("mnt")?) {
        same_mounts(pid)?;
    }
    let uts = main.get("uts").copied().unwrap_or_default();
    if uts == read_ours("uts")? {
        return Ok(None);
    }
    let path = proc::dir(pid).join("ns/uts");
    let read_err = |errno| NamespaceError::Read {
        pid,
        tid: pid,
        kind: "uts",
        errno,
    };
    let ns = std::fs::File::open(&path).map_err(read_err)?;
    let (hostname, domainname) = sys::uts::names_in(ns).map_err(read_err)?;
    Ok(Some(UtsNamespace {
        inode: uts,
        hostname,
        domainname,
    }))
}

/// The inode of the IPC namespace of `pid` when it is not cryo's (0 when it is): its objects
/// and sysctls are dumped by crate::ipc. [`dump`] checked its threads are all in it.
pub fn ipc_of(pid: Pid) -> Result<u64, NamespaceError> {
    let read = |path: PathBuf| {
        inode(&path).map_err(|errno| NamespaceError::Read {
            pid,
            tid: pid,
            kind: "ipc",
            errno,
        })
    };
    let theirs = read(proc::dir(pid).join("ns/ipc"))?;
    let ours = read(PathBuf::from("/proc/self/ns/ipc"))?;
    Ok(if theirs == ours { 0 } else { theirs })
}

/// A mount as a process sees it, without what differs between two namespaces showing the
/// same mounts (ids, device numbers, propagation peers): root, mount point, mount options,
/// type, source, superblock options.
fn mounts(path: &Path) -> io::Result<Vec<String>> {
    let text = std::fs::read_to_string(path)?;
    let mut out: Vec<String> = text
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let sep = fields.iter().position(|&f| f == "-")?;
            let (fstype, source, options) = (
                fields.get(sep + 1)?,
                fields.get(sep + 2)?,
                fields.get(sep + 3)?,
            );
            // Namespace files bound somewhere (ip netns add) come and go with other tools'
            // namespaces; they are handles, not a view of files.
            if *fstype == "nsfs" {
                return None;
            }
            Some(format!(
                "{} {} ({fstype} {source}, {} {options})",
                fields.get(4)?,
                fields.get(3)?,
                fields.get(5)?
            ))
        })
        .collect();
    out.sort();
    Ok(out)
}

/// Refuses `pid` when its mount table differs from cryo's.
fn same_mounts(pid: Pid) -> Result<(), NamespaceError> {
    let read = |path: PathBuf| {
        mounts(&path).map_err(|errno| NamespaceError::Read {
            pid,
            tid: pid,
            kind: "mnt",
            errno,
        })
    };
    let theirs = read(proc::dir(pid).join("mountinfo"))?;
    let ours = read(PathBuf::from("/proc/self/mountinfo"))?;
    if theirs == ours {
        return Ok(());
    }
    let only = |a: &[String], b: &[String], whose: &str| {
        a.iter()
            .find(|m| !b.contains(m))
            .map(|m| format!("{m} is {whose} only"))
    };
    let mount = only(&theirs, &ours, "its")
        .or_else(|| only(&ours, &theirs, "cryo's"))
        .unwrap_or_else(|| "a mount is there more times in one table".into());
    Err(NamespaceError::Mounts { pid, mount })
}

/// Refuses a tree whose UTS namespaces its forks cannot make again: a process makes a new one
/// when its parent (or, for a root, cryo) is in another, so each namespace other than cryo's
/// must have one topmost process in the dump, and no process may be back in cryo's below one
/// in another. `tasks`: pid, parent pid, UTS namespace inode (None: cryo's) of each live one.
pub(crate) fn check_uts_tree(tasks: &[(i32, i32, Option<u64>)]) -> Result<(), NamespaceError> {
    let uts_of = |pid: i32| tasks.iter().find(|t| t.0 == pid).map(|t| t.2);
    let mut tops: HashMap<u64, i32> = HashMap::new();
    for &(pid, ppid, uts) in tasks {
        let parent = uts_of(ppid);
        match (uts, parent) {
            (Some(ns), Some(p)) if p == Some(ns) => {}
            (Some(ns), _) => {
                if let Some(other) = tops.insert(ns, pid) {
                    return Err(NamespaceError::UtsTree {
                        pid: Pid::from_raw(pid),
                        detail: format!(
                            "shares its UTS namespace (uts:[{ns}]) with pid {other}, which is not \
                             its ancestor in that namespace: a restore makes one namespace per \
                             process that starts one"
                        ),
                    });
                }
            }
            (None, Some(Some(ns))) => {
                return Err(NamespaceError::UtsTree {
                    pid: Pid::from_raw(pid),
                    detail: format!(
                        "is in cryo's UTS namespace below its parent {ppid} in another \
                         (uts:[{ns}]): a restored process cannot go back to it"
                    ),
                })
            }
            (None, _) => {}
        }
    }
    Ok(())
}

/// In a forked process of the restore, before its children: a new UTS namespace with the
/// dumped names when its process was in one other than its parent's (`parent`: the parent's
/// namespace inode, None for cryo's or a root).
pub fn restore_in_child(core: &TaskCore, parent: Option<u64>) -> Result<(), ChildError> {
    match &core.uts {
        Some(uts) if parent != Some(uts.inode) => {
            sys::uts::make_new(&uts.hostname, &uts.domainname).map_err(|e| ChildError::Sys {
                step: ChildStep::UtsNamespace,
                errno: e.raw_os_error().unwrap_or(libc::EIO),
            })
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uts_namespaces_a_tree_can_make() {
        // A root in a namespace of its own, its child inheriting it, a grandchild in another.
        check_uts_tree(&[(10, 1, Some(7)), (11, 10, Some(7)), (12, 11, Some(8))]).unwrap();
        // Two roots in one namespace: each would make its own.
        let err = check_uts_tree(&[(10, 1, Some(7)), (20, 1, Some(7))]).unwrap_err();
        assert!(err.to_string().contains("pid 20: shares"), "{err}");
        // A child back in cryo's.
        let err = check_uts_tree(&[(10, 1, Some(7)), (11, 10, None)]).unwrap_err();
        assert!(err.to_string().contains("pid 11: is in cryo's"), "{err}");
        check_uts_tree(&[(10, 1, None), (11, 10, None)]).unwrap();
    }

    #[test]
    fn a_mount_table_reads_as_a_view() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mountinfo");
        std::fs::write(
            &path,
            "30 1 0:27 / /sys rw,relatime shared:7 - sysfs sysfs rw\n\
             21 30 0:4 net:[4026532174] /run/netns/x rw shared:5 - nsfs nsfs rw\n\
             22 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n",
        )
        .unwrap();
        assert_eq!(
            mounts(&path).unwrap(),
            [
                "/ / (ext4 /dev/vda, rw,relatime rw)",
                "/sys / (sysfs sysfs, rw,relatime rw)"
            ]
        );
    }
}
