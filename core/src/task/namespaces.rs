//! The namespaces of a task, judged at dump against cryo's own: a UTS namespace is made
//! again with its host and domain names, a time namespace with its clocks where they were at
//! the freeze, a cgroup namespace with its root cgroups (task/cgroups.rs), an IPC namespace
//! with its objects and sysctls (crate::ipc), a network namespace with loopback only with
//! its state (task/netns.rs), a mount namespace with the mounts it has beyond cryo's
//! (task/mount_ns.rs), a user namespace one level below cryo's with its maps
//! (task/userns.rs); every namespace made again must be owned by the user namespace the
//! restore makes it in; any other namespace than cryo's is refused, since the task would
//! come back in cryo's and see other pids.

use std::collections::HashMap;
use std::io;
use std::path::Path;

use cryo_proto::image::{TaskCore, TimeNamespace, UserNamespace, UtsNamespace};
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
    /// The task made a time namespace for its children that it is not in itself, while in a
    /// time namespace of its own, or with threads.
    #[error(
        "pid {pid} thread {tid}: made a time namespace for its children (time:[{inode}]) it \
         is not in, {why}: not restored"
    )]
    TimeForChildren {
        /// The process.
        pid: Pid,
        /// The thread.
        tid: Pid,
        /// The namespace's inode.
        inode: u64,
        /// What makes it impossible.
        why: &'static str,
    },
    /// A user namespace (or the ownership of another namespace by one) the restore cannot
    /// make again as it is.
    #[error("pid {pid} thread {tid}: in user namespace user:[{inode}]: {reason}")]
    User {
        /// The process.
        pid: Pid,
        /// The thread.
        tid: Pid,
        /// The user namespace's inode.
        inode: u64,
        /// Why.
        reason: String,
    },
    /// A process's UTS or time namespace cannot be made again by the tree's forks.
    #[error("pid {pid}: {detail}")]
    NamespaceTree {
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

/// The kinds refused when they differ from cryo's (UTS, time, cgroup, IPC, network, mount
/// and user are judged apart).
const REFUSED: &[Kind] = &[
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
];

/// Whether `pid` is in a namespace of `kind` (a /proc/PID/ns link name: "user", "mnt"...)
/// other than cryo's (false when that cannot be read).
pub(crate) fn other_than_cryos(pid: Pid, kind: &str) -> bool {
    let of = |dir: &Path| inode(&dir.join("ns").join(kind)).ok();
    let theirs = of(&crate::proc::dir(pid));
    theirs.is_some() && theirs != of(Path::new("/proc/self"))
}

/// The inode of namespace link `path` (`KIND:[INODE]`).
pub(crate) fn inode(path: &Path) -> io::Result<u64> {
    let target = std::fs::read_link(path)?;
    let text = target.to_string_lossy();
    text.rsplit_once('[')
        .and_then(|(_, rest)| rest.strip_suffix(']'))
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("{text:?}")))
}

/// The namespaces of a process that the restore makes again (None: cryo's).
#[derive(Debug, Default)]
pub struct MadeAgain {
    /// Its UTS namespace, with its names.
    pub uts: Option<UtsNamespace>,
    /// Its time namespace, with its clocks at the freeze.
    pub time: Option<TimeNamespace>,
    /// The time namespace it made for its children and is not in, with their clocks.
    pub time_for_children: Option<TimeNamespace>,
    /// The inode of its cgroup namespace (read by [`crate::task::cgroups::namespace`]).
    pub cgroup: Option<u64>,
    /// The inode of its network namespace (read once per namespace by
    /// [`crate::task::netns::dump`]).
    pub net: Option<u64>,
    /// The inode of its mount namespace (read by [`crate::task::mount_ns::dump`]).
    pub mnt: Option<u64>,
    /// Its user namespace, with its maps.
    pub user: Option<UserNamespace>,
}

/// Checks the namespaces of every thread of `pid` against cryo's: returns its UTS and time
/// namespaces (and the inodes of its cgroup and network ones) when they are not cryo's,
/// refuses any other kind that differs. `pidns`: the PID namespace of the dump's tree,
/// restored with it (task/pidns.rs), when not cryo's.
pub fn dump(pid: Pid, tids: &[Pid], pidns: Option<u64>) -> Result<MadeAgain, NamespaceError> {
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
        let kinds = REFUSED.iter().map(|k| k.link).chain([
            "mnt",
            "uts",
            "time",
            "time_for_children",
            "cgroup",
            "ipc",
            "net",
            "user",
        ]);
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
            let restored = kind.ours == "pid" && pidns == Some(theirs);
            if theirs != mine && !restored {
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
    let mnt = main.get("mnt").copied().unwrap_or_default();
    let mnt = (mnt != read_ours("mnt")?).then_some(mnt);
    let ns_of = |kind| main.get(kind).copied().unwrap_or_default();
    let uts = ns_of("uts");
    let uts = if uts == read_ours("uts")? {
        None
    } else {
        Some(uts_names(pid, uts)?)
    };
    let (time, for_children) = (ns_of("time"), ns_of("time_for_children"));
    let refuse_for_children = |why| NamespaceError::TimeForChildren {
        pid,
        tid: pid,
        inode: for_children,
        why,
    };
    let in_ours = time == read_ours("time")?;
    // A namespace made for its children: its offsets are what timens_offsets shows (those of
    // its own are then not shown: only cryo's is supported). No thread can be cloned then
    // (CLONE_VM across two time namespaces is EINVAL), so neither can the restore's.
    let time_for_children = if for_children != time {
        if !in_ours {
            return Err(refuse_for_children(
                "while in a time namespace of its own (whose offsets /proc then does not show)",
            ));
        }
        if tids.len() > 1 {
            return Err(refuse_for_children(
                "with threads (the restore makes them after its namespaces)",
            ));
        }
        Some(time_clocks(pid, for_children)?)
    } else {
        None
    };
    let time = if in_ours {
        None
    } else {
        Some(time_clocks(pid, time)?)
    };
    let cgroup = ns_of("cgroup");
    let cgroup = (cgroup != read_ours("cgroup")?).then_some(cgroup);
    let net = ns_of("net");
    let net = (net != read_ours("net")?).then_some(net);
    let user = ns_of("user");
    let own_user = user != read_ours("user")?;
    check_owners(pid, user, own_user, pidns)?;
    let user = own_user
        .then(|| crate::task::userns::dump(pid, user))
        .transpose()?;
    Ok(MadeAgain {
        uts,
        time,
        time_for_children,
        cgroup,
        net,
        mnt,
        user,
    })
}

/// Refuses a namespace of `pid` other than cryo's whose owner is not the user namespace the
/// restore makes it in: the process's own (`user`, cryo's unless `own_user`: its topmost
/// process makes its UTS, time, network, mount and PID namespaces, and its IPC namespace is
/// made by a clone inside it, crate::ipc::Restored::fill), cryo's for an IPC namespace of a
/// process in cryo's user namespace (cryo makes those), the tree's own PID namespace
/// (`pidns`) by its init's. A cgroup namespace inside a user namespace is refused (its
/// cgroups are entered by cryo's root, which that namespace does not see as its owner).
fn check_owners(
    pid: Pid,
    user: u64,
    own_user: bool,
    pidns: Option<u64>,
) -> Result<(), NamespaceError> {
    let read_err = |kind| {
        move |errno| NamespaceError::Read {
            pid,
            tid: pid,
            kind,
            errno,
        }
    };
    let cryos_user = inode(Path::new("/proc/self/ns/user")).map_err(read_err("user"))?;
    for kind in ["uts", "ipc", "net", "mnt", "cgroup", "time", "pid"] {
        let path = proc::dir(pid).join("ns").join(kind);
        let theirs = inode(&path).map_err(read_err(kind))?;
        let mine = inode(Path::new(&format!("/proc/self/ns/{kind}"))).map_err(read_err(kind))?;
        if theirs == mine || (kind == "pid" && pidns != Some(theirs)) {
            continue;
        }
        let ns = std::fs::File::open(&path).map_err(read_err(kind))?;
        let owner = sys::ns::owner_inode(&ns).map_err(read_err(kind))?;
        let (want, maker) = match kind {
            "ipc" if !own_user => (cryos_user, "cryo makes it in its own"),
            _ if own_user => (user, "the restore makes it in the process's own"),
            _ => (user, "the restore makes it in cryo's"),
        };
        if own_user && kind == "cgroup" {
            return Err(NamespaceError::User {
                pid,
                tid: pid,
                inode: user,
                reason: format!(
                    "its cgroup namespace cgroup:[{theirs}] is not cryo's: a cgroup namespace \
                     is not made again inside a user namespace"
                ),
            });
        }
        if owner != want {
            return Err(NamespaceError::User {
                pid,
                tid: pid,
                inode: user,
                reason: format!(
                    "its {kind} namespace {kind}:[{theirs}] is owned by user namespace \
                     user:[{owner}], not user:[{want}]: {maker} (user:[{want}])"
                ),
            });
        }
    }
    Ok(())
}

/// The host and domain names of UTS namespace `inode`, the one of `pid`.
fn uts_names(pid: Pid, inode: u64) -> Result<UtsNamespace, NamespaceError> {
    let read_err = |errno| NamespaceError::Read {
        pid,
        tid: pid,
        kind: "uts",
        errno,
    };
    let ns = std::fs::File::open(proc::dir(pid).join("ns/uts")).map_err(read_err)?;
    let (hostname, domainname) = sys::uts::names_in(ns).map_err(read_err)?;
    Ok(UtsNamespace {
        inode,
        hostname,
        domainname,
    })
}

/// The clocks of time namespace `inode`, the one of frozen `pid` (which is in it, so its
/// timens_offsets, those of the namespace its children get, are the namespace's): cryo's
/// clocks now plus the offsets.
fn time_clocks(pid: Pid, inode: u64) -> Result<TimeNamespace, NamespaceError> {
    let read_err = |errno| NamespaceError::Read {
        pid,
        tid: pid,
        kind: "time",
        errno,
    };
    let text = std::fs::read_to_string(proc::dir(pid).join("timens_offsets")).map_err(read_err)?;
    let (monotonic, boottime) = sys::timens::parse_offsets(&text).map_err(read_err)?;
    let (host_monotonic, host_boottime) = sys::timens::clocks_now().map_err(read_err)?;
    Ok(TimeNamespace {
        inode,
        monotonic_ns: host_monotonic + monotonic,
        boottime_ns: host_boottime + boottime,
    })
}

/// A kind of namespace (or other object a process inherits at fork) the restore makes again:
/// what users call it, its /proc/PID/ns link (the tag of its ids), and what a process not in
/// one of its own is in, and whether a process can go back to cryo's.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MadeKind {
    name: &'static str,
    link: &'static str,
    none: &'static str,
    /// A process below one in another namespace can go back to cryo's (it joins it again).
    goes_back: bool,
    /// A process below one in another namespace can be in an ancestor's (it joins that one
    /// with setns through the ancestor, made before it: [`ancestor_in`]).
    joins_ancestor: bool,
}

/// UTS namespaces.
pub(crate) const UTS: MadeKind = MadeKind {
    name: "UTS namespace",
    link: "uts",
    none: "in cryo's UTS namespace",
    goes_back: false,
    joins_ancestor: false,
};
/// Time namespaces.
pub(crate) const TIME: MadeKind = MadeKind {
    name: "time namespace",
    link: "time",
    none: "in cryo's time namespace",
    goes_back: false,
    joins_ancestor: false,
};
/// The IPC namespace (inode) of a process (`core`) when a user namespace the restore makes
/// owns it: one other than cryo's of a process in a user namespace of its own (the dump
/// refuses any other owner).
pub(crate) fn ipc_in_user_namespace(core: &TaskCore) -> Option<u64> {
    (core.userns.is_some() && core.ipc_ns != 0).then_some(core.ipc_ns)
}

/// IPC namespaces owned by a user namespace the restore makes: made by the clone of their
/// topmost process, which the others inherit (crate::ipc::Restored::fill).
pub(crate) const IPC_IN_USER: MadeKind = MadeKind {
    name: "IPC namespace owned by its user namespace",
    link: "ipc",
    none: "in another IPC namespace",
    goes_back: false,
    joins_ancestor: false,
};
/// Network namespaces (task/netns.rs).
pub(crate) const NET: MadeKind = MadeKind {
    name: "network namespace",
    link: "net",
    none: "in cryo's network namespace",
    goes_back: true,
    joins_ancestor: true,
};
/// Mount namespaces.
pub(crate) const MNT: MadeKind = MadeKind {
    name: "mount namespace",
    link: "mnt",
    none: "in cryo's mount namespace",
    goes_back: false,
    joins_ancestor: true,
};
/// Cgroup namespaces.
pub(crate) const CGROUP: MadeKind = MadeKind {
    name: "cgroup namespace",
    link: "cgroup",
    none: "in cryo's cgroup namespace",
    goes_back: false,
    joins_ancestor: false,
};
/// User namespaces (task/userns.rs).
pub(crate) const USER: MadeKind = MadeKind {
    name: "user namespace",
    link: "user",
    none: "in cryo's user namespace",
    goes_back: false,
    joins_ancestor: false,
};
/// Session keyrings (task/keyrings.rs): made again by the fork that starts one, as these.
pub(crate) const SESSION_KEYRING: MadeKind = MadeKind {
    name: "session keyring",
    link: "keyring",
    none: "without a session keyring of its own",
    goes_back: false,
    joins_ancestor: false,
};

/// Refuses a tree whose `kind` namespaces its forks cannot make again: a process makes a new
/// one when its parent (or, for a root, cryo) is in another, so each namespace other than
/// cryo's must have one topmost process in the dump, and no process may be back in cryo's
/// below one in another. `tasks`: pid, parent pid, namespace inode (None: cryo's) of each
/// live one.
pub(crate) fn check_tree(
    kind: MadeKind,
    tasks: &[(i32, i32, Option<u64>)],
) -> Result<(), NamespaceError> {
    check_tree_given(kind, tasks, |pid| {
        tasks.iter().find(|t| t.0 == pid).map(|t| t.2)
    })
}

/// The time namespace (inode) a process's children get: the one it made for them, or its own
/// (None: cryo's).
pub(crate) fn children_time(core: &TaskCore) -> Option<u64> {
    core.time_for_children
        .as_ref()
        .or(core.time.as_ref())
        .map(|t| t.inode)
}

/// [`check_tree`] where a process's children get the namespace `ns_of(pid)` says (None: not
/// a process of the dump): a time namespace made for them.
pub(crate) fn check_tree_given(
    kind: MadeKind,
    tasks: &[(i32, i32, Option<u64>)],
    ns_of: impl Fn(i32) -> Option<Option<u64>>,
) -> Result<(), NamespaceError> {
    let MadeKind {
        name,
        link,
        none,
        goes_back,
        joins_ancestor,
    } = kind;
    let mut tops: HashMap<u64, i32> = HashMap::new();
    let parent_of = |pid: i32| tasks.iter().find(|t| t.0 == pid).map(|t| t.1);
    for &(pid, ppid, ns) in tasks {
        let parent = ns_of(ppid);
        match (ns, parent) {
            (Some(ns), Some(p)) if p == Some(ns) => {}
            (Some(ns), Some(_))
                if joins_ancestor && ancestor_in(ppid, &ns_of, parent_of, ns).is_some() => {}
            (Some(ns), _) => {
                if let Some(other) = tops.insert(ns, pid) {
                    return Err(NamespaceError::NamespaceTree {
                        pid: Pid::from_raw(pid),
                        detail: format!(
                            "shares its {name} ({link}:[{ns}]) with pid {other}, which is not \
                             its ancestor in it: a restore makes a new one for each process that \
                             starts one"
                        ),
                    });
                }
            }
            (None, Some(Some(ns))) if !goes_back => {
                return Err(NamespaceError::NamespaceTree {
                    pid: Pid::from_raw(pid),
                    detail: format!(
                        "is {none} below its parent {ppid} in another {name} \
                         ({link}:[{ns}]): a restored process cannot go back"
                    ),
                })
            }
            (None, _) => {}
        }
    }
    Ok(())
}

/// How many generations above a process whose parent is `ppid` the nearest ancestor in
/// namespace `ns` is (2: its grandparent), walking the dump's parents (`parent_of`) while
/// `ns_of` knows them (processes of the dump); None without one.
pub(crate) fn ancestor_in(
    ppid: i32,
    ns_of: impl Fn(i32) -> Option<Option<u64>>,
    parent_of: impl Fn(i32) -> Option<i32>,
    ns: u64,
) -> Option<usize> {
    let mut at = ppid;
    let mut generations = 1;
    loop {
        if ns_of(at)? == Some(ns) {
            return Some(generations);
        }
        at = parent_of(at)?;
        generations += 1;
    }
}

/// [`ancestor_in`] over the restore's `tasks`, their forkers as parents: how many generations
/// up from the child of `forker` (1: `forker` itself) the nearest task whose namespace
/// `inode_of` tells is `ns`.
pub(crate) fn task_ancestor_in(
    tasks: &[crate::restore::load::TaskImage],
    forker: i32,
    inode_of: impl Fn(&TaskCore) -> Option<u64>,
    ns: u64,
) -> Option<usize> {
    use crate::restore::load::forked_by;
    let task = |pid: i32| tasks.iter().find(|t| t.entry.pid == pid);
    ancestor_in(
        forker,
        |pid| task(pid).map(|t| inode_of(&t.core)),
        |pid| task(pid).map(|t| forked_by(&t.entry)),
        ns,
    )
}

/// In a forked process of the restore, before its children: a new UTS namespace with the
/// dumped names, and a new time namespace with the clocks of the freeze, where its process was
/// in one other than its parent's (`parent`: the parent's core, None for a root).
pub fn restore_in_child(core: &TaskCore, parent: Option<&TaskCore>) -> Result<(), ChildError> {
    let failed = |step| {
        move |e: io::Error| ChildError::Sys {
            step,
            errno: e.raw_os_error().unwrap_or(libc::EIO),
        }
    };
    let parent_uts = parent.and_then(|p| p.uts.as_ref()).map(|u| u.inode);
    match &core.uts {
        Some(uts) if parent_uts != Some(uts.inode) => {
            sys::uts::make_new(&uts.hostname, &uts.domainname)
                .map_err(failed(ChildStep::UtsNamespace))?
        }
        _ => {}
    }
    let parent_time = parent.and_then(children_time);
    match &core.time {
        Some(time) if parent_time != Some(time.inode) => {
            sys::timens::enter_new(time.monotonic_ns, time.boottime_ns)
                .map_err(failed(ChildStep::TimeNamespace))?
        }
        _ => {}
    }
    if let Some(kids) = &core.time_for_children {
        sys::timens::make_for_children(kids.monotonic_ns, kids.boottime_ns)
            .map_err(failed(ChildStep::TimeNamespace))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_a_tree_can_make() {
        // A root in a namespace of its own, its child inheriting it, a grandchild in another.
        check_tree(
            UTS,
            &[(10, 1, Some(7)), (11, 10, Some(7)), (12, 11, Some(8))],
        )
        .unwrap();
        // Two roots in one namespace: each would make its own.
        let err = check_tree(UTS, &[(10, 1, Some(7)), (20, 1, Some(7))]).unwrap_err();
        assert!(err.to_string().contains("pid 20: shares its UTS"), "{err}");
        // A child back in cryo's.
        let err = check_tree(TIME, &[(10, 1, Some(7)), (11, 10, None)]).unwrap_err();
        assert!(
            err.to_string()
                .contains("pid 11: is in cryo's time namespace"),
            "{err}"
        );
        check_tree(TIME, &[(10, 1, None), (11, 10, None)]).unwrap();
        // A child back in cryo's network namespace: it joins it again.
        check_tree(NET, &[(10, 1, Some(7)), (11, 10, None)]).unwrap();
        // A grandchild in its grandparent's mount namespace, its parent in another: it joins
        // that one; not so for a UTS namespace, made by each process that starts one.
        let left_behind = [(10, 1, Some(7)), (11, 10, Some(8)), (12, 11, Some(7))];
        check_tree(MNT, &left_behind).unwrap();
        let err = check_tree(UTS, &left_behind).unwrap_err();
        assert!(err.to_string().contains("pid 12: shares its UTS"), "{err}");
        assert_eq!(
            ancestor_in(
                11,
                |p| left_behind.iter().find(|t| t.0 == p).map(|t| t.2),
                |p| left_behind.iter().find(|t| t.0 == p).map(|t| t.1),
                7
            ),
            Some(2)
        );
    }
}
