//! Mount propagation in the dump's mount namespaces: which mounts are shared and with which,
//! which are slaves of which peer group, which are unbindable. Judged at dump (each peer group
//! must be found again: among cryo's mounts, or made anew from a mount of the dump whose root
//! holds every other's); made again by cryo once every mount of every namespace exists, all
//! private until then, with MOVE_MOUNT_SET_GROUP and mount_setattr: nothing is mounted or
//! propagated by it, here or in cryo's namespace. Where a mount is covered (its path leads to
//! another), its namespace's maker sets them all instead, through the fds it made its mounts
//! with ([`by_maker`]; its groups its own alone).
//!
//! ```text
//! dump (frozen)                          restore (cryo; every mount made, all private)
//! mountinfo's optional fields:           an fd on each mount (/proc/PID/root/POINT, its id
//!   shared:N  master:M  unbindable         checked against the key dumped)
//! a group cryo's namespace shows too:    an fd on each mount of cryo's the image names
//!   OuterGroup (found again by key)      until every mount is set:
//! any other: a mount of the dump whose     in a group found in cryo's, or made already:
//!   root holds the others' (its first)       SET_GROUP from a mount of it whose root holds
//! each mount's path must lead to it          its own
//!   (set again through it)                 the first of a group made anew: its master
//!                                            first, then MS_SHARED: a new group
//!                                          a slave: SET_GROUP from a mount of its master
//!                                            group, then MS_SLAVE
//!                                        every table read back: the same groups and
//!                                          masters, numbers apart; the rest private
//! ```

use std::collections::{BTreeSet, HashMap};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use cryo_proto::image::{MountNamespace, MountPropagation, OuterGroup};
use nix::unistd::Pid;

use super::mountinfo::{is_below, parse, unescape, Mount};
use super::MountNsError;
use crate::sys::mount::{self as sys_mount, Propagation};

/// The propagation mountinfo's optional fields give a mount: its peer group (shared:N), the
/// group it is a slave of (master:N), 0 for none, and whether it is unbindable.
/// (propagate_from:N only says which mount of the master group a reader sees: derived.)
fn fields(optional: &str) -> (u32, u32, bool) {
    let mut out = (0, 0, false);
    for field in optional.split_whitespace() {
        if let Some(n) = field.strip_prefix("shared:") {
            out.0 = n.parse().unwrap_or(0);
        } else if let Some(n) = field.strip_prefix("master:") {
            out.1 = n.parse().unwrap_or(0);
        } else if field == "unbindable" {
            out.2 = true;
        }
    }
    out
}

/// How messages name a mount whose propagation is set: "the mount on POINT (shared:N...)".
fn describe(r: &MountPropagation) -> String {
    let mut what = Vec::new();
    if r.shared != 0 {
        what.push(format!("shared:{}", r.shared));
    }
    if r.master != 0 {
        what.push(format!("master:{}", r.master));
    }
    if r.unbindable {
        what.push("unbindable".to_string());
    }
    format!("the mount on {} ({})", r.point, what.join(" "))
}

/// What a namespace's propagation is dumped as: its mounts that are not private, and the
/// mounts of cryo's in the peer groups they use; the mount ids of the first.
type Dumped = (Vec<MountPropagation>, Vec<OuterGroup>, Vec<u32>);

/// The propagation of the mounts of `theirs` (the table of frozen `pid`'s namespace) that are
/// not private, and the mounts of cryo's namespace (`ours`) in the peer groups they use: a
/// group cryo shows a mount of is joined again there. Or the mount refused and why.
pub(super) fn dump<'a>(
    root: &Path,
    theirs: &'a [Mount],
    ours: &[Mount],
) -> Result<Dumped, (&'a Mount, String)> {
    let mut records = Vec::new();
    let mut ids = Vec::new();
    for m in theirs {
        let (shared, master, unbindable) = fields(&m.optional);
        if shared == 0 && master == 0 && !unbindable {
            continue;
        }
        let point = unescape(&m.point);
        // Set again by cryo through its path where that leads to it; else by the process
        // that makes the namespace, through the fd it made it with (mount_ns::dump judges).
        let reached =
            sys_mount::open_point(root, &point).and_then(|fd| sys_mount::mount_id(fd.as_fd()));
        let covered = match reached {
            Ok(id) => id != m.id,
            // A mount over a directory above it hides its path.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => true,
            Err(e) => {
                return Err((
                    m,
                    format!("propagation {:?}: open its mount point: {e}", m.optional),
                ))
            }
        };
        records.push(MountPropagation {
            key: m.key(),
            point,
            root: unescape(&m.root),
            shared,
            master,
            unbindable,
            mount: 0,
            covered,
        });
        ids.push(m.id);
    }
    let groups: BTreeSet<u32> = records
        .iter()
        .flat_map(|r| [r.shared, r.master])
        .filter(|&g| g != 0)
        .collect();
    let mut outer = Vec::new();
    for g in groups {
        let anchor = |o: &Mount, peer: bool| OuterGroup {
            group: g,
            key: o.key(),
            point: unescape(&o.point),
            root: unescape(&o.root),
            peer,
        };
        let peers: Vec<OuterGroup> = ours
            .iter()
            .filter(|o| fields(&o.optional).0 == g)
            .map(|o| anchor(o, true))
            .collect();
        if !peers.is_empty() {
            outer.extend(peers);
        } else if !records.iter().any(|r| r.shared == g) {
            // A slave of a group neither namespace holds a mount of: a slave of it that is
            // not shared itself passes its master on (unless the dump holds the group).
            outer.extend(
                ours.iter()
                    .filter(|o| matches!(fields(&o.optional), (0, m, _) if m == g))
                    .map(|o| anchor(o, false)),
            );
        }
    }
    Ok((records, outer, ids))
}

/// Whether the propagation of namespace `ns` is set by the process that makes it (a mount of
/// it is covered: only an fd held from its making reaches it), not by cryo.
pub(crate) fn by_maker(ns: &MountNamespace) -> bool {
    ns.propagation.iter().any(|r| r.covered)
}

/// Why the propagation of namespace `ns` (a mount of it covered) could not be set by the
/// process that makes it, if it could not: what that process reaches and does is its own
/// mounts alone, with nothing mounted after it sets them on a shared mount (it would
/// propagate). `made_late(i)`: mount `i` is made by cryo after; `shared_parent(i)`: the parent
/// of mount `i` is shared; the first covered record names the refusal.
pub(super) fn judge_by_maker(
    ns: &MountNamespace,
    made_late: impl Fn(usize) -> bool,
    shared_parent: impl Fn(usize) -> bool,
) -> Result<(), (usize, String)> {
    let Some(first) = ns.propagation.iter().position(|r| r.covered) else {
        return Ok(());
    };
    let why = |what: String| {
        Err((
            first,
            format!(
                "propagation {}: its mount point leads to another mount (covered), and {what}: \
                 its propagation could not be set again",
                describe(&ns.propagation[first])
            ),
        ))
    };
    if let Some(r) = ns.propagation.iter().find(|r| r.mount == 0) {
        return why(format!("{} is one of cryo's mounts", describe(r)));
    }
    if let Some(r) = ns
        .propagation
        .iter()
        .find(|r| made_late(r.mount as usize - 1))
    {
        return why(format!("{} is made by cryo after the others", describe(r)));
    }
    if let Some(a) = ns.outer_groups.first() {
        return why(format!(
            "its peer group {} is also cryo's namespace's (on {})",
            a.group, a.point
        ));
    }
    if let Some(i) = (0..ns.mounts.len()).find(|&i| made_late(i) && shared_parent(i)) {
        return why(format!(
            "the mount on {}, made by cryo after, is on a shared mount (it would propagate)",
            ns.mounts[i].point
        ));
    }
    Ok(())
}

/// How the restore makes a peer group used by the dump's mounts again.
#[derive(Debug, Clone, PartialEq)]
enum Source {
    /// Joined through mounts of cryo's namespace (`peer`: members; else slaves of it).
    Outer { peer: bool },
    /// Made anew by this mount of the dump (namespace, record), whose root holds the others'.
    First(usize, usize),
}

/// Decides where each peer group the mounts of `namespaces` (each with the pid of its topmost
/// process) use comes from, or refuses the mount whose group cannot be made again.
fn sources(namespaces: &[(Pid, &MountNamespace)]) -> Result<HashMap<u32, Source>, MountNsError> {
    let mut out = HashMap::new();
    let all = || {
        namespaces.iter().enumerate().flat_map(|(n, (pid, ns))| {
            ns.propagation
                .iter()
                .enumerate()
                .map(move |(i, r)| (n, i, *pid, *ns, r))
        })
    };
    for (_, _, pid, ns, user) in all() {
        for g in [user.shared, user.master] {
            if g == 0 || out.contains_key(&g) {
                continue;
            }
            let refuse = |detail: String| MountNsError::Refused {
                pid,
                inode: ns.inode,
                mount: describe(user),
                detail,
            };
            let users: Vec<&MountPropagation> = all()
                .map(|(_, _, _, _, r)| r)
                .filter(|r| r.shared == g || r.master == g)
                .collect();
            let anchors: Vec<&OuterGroup> = namespaces
                .iter()
                .flat_map(|(_, ns)| &ns.outer_groups)
                .filter(|a| a.group == g)
                .collect();
            let member = all().find(|(.., r)| r.shared == g);
            let peer = anchors.iter().any(|a| a.peer);
            if peer || (member.is_none() && !anchors.is_empty()) {
                // Each joins through a mount whose root holds its own: one of cryo's, or one
                // of the dump that joined through such a mount before.
                let kind: Vec<&&OuterGroup> = anchors.iter().filter(|a| a.peer == peer).collect();
                if let Some(u) = users
                    .iter()
                    .find(|u| !kind.iter().any(|a| is_below(&u.root, &a.root)))
                {
                    return Err(refuse(format!(
                        "peer group {g}: no mount of it in cryo's namespace shows a part of its \
                         filesystem holding {} (the root of {}): not joined again",
                        u.root,
                        describe(u)
                    )));
                }
                out.insert(g, Source::Outer { peer });
                continue;
            }
            let Some(_) = member else {
                return Err(refuse(format!(
                    "is a slave of peer group {g}, of which neither the dump's mount namespaces \
                     nor cryo's hold a mount: not made again"
                )));
            };
            // Made anew: by a member whose root holds every other user's.
            let first = all()
                .filter(|(.., r)| r.shared == g)
                .find(|(.., r)| users.iter().all(|u| is_below(&u.root, &r.root)));
            let Some((n, i, ..)) = first else {
                return Err(refuse(format!(
                    "peer group {g}: none of its mounts shows a part of the filesystem holding \
                     the others': not made again"
                )));
            };
            out.insert(g, Source::First(n, i));
        }
    }
    Ok(out)
}

/// Refuses, at dump, a mount of `namespaces` (each with the pid of its topmost process) whose
/// propagation the restore could not make again.
pub fn check(namespaces: &[(Pid, &MountNamespace)]) -> Result<(), MountNsError> {
    let namespaces = dedup(namespaces);
    // A namespace whose maker sets its propagation holds its groups alone.
    for (pid, ns) in namespaces.iter().filter(|(_, ns)| by_maker(ns)) {
        let groups: BTreeSet<u32> = ns
            .propagation
            .iter()
            .flat_map(|r| [r.shared, r.master])
            .filter(|&g| g != 0)
            .collect();
        let other = namespaces.iter().find_map(|(_, o)| {
            let r = o
                .propagation
                .iter()
                .find(|r| groups.contains(&r.shared) || groups.contains(&r.master))?;
            (o.inode != ns.inode).then_some((o.inode, r))
        });
        if let Some((inode, r)) = other {
            let covered = ns.propagation.iter().find(|r| r.covered).expect("by_maker");
            return Err(MountNsError::Refused {
                pid: *pid,
                inode: ns.inode,
                mount: describe(covered),
                detail: format!(
                    "its mount point leads to another mount (covered), and a peer group of the \
                     namespace is also namespace mnt:[{inode}]'s ({}): its propagation could not \
                     be set again",
                    describe(r)
                ),
            });
        }
    }
    sources(&namespaces).map(drop)
}

/// In the process that made namespace `ns` (its propagation [`by_maker`]), once every mount
/// of it is made (all private) and the table checked: the propagation of each as dumped, set
/// through `made` (an O_PATH fd on each mount of `ns.mounts` it made, and its id), then its
/// table read back (`table`) and checked. Nothing else is mounted in it after but mounts on
/// private ones (judge_by_maker).
pub(crate) fn set_by_maker(
    pid: Pid,
    ns: &MountNamespace,
    made: &[Option<(OwnedFd, u32)>],
    table: impl Fn() -> std::io::Result<Vec<Mount>>,
) -> Result<(), MountNsError> {
    let namespaces = [(pid, ns)];
    let sources = sources(&namespaces)?;
    let mut fds = Vec::new();
    for r in &ns.propagation {
        let Some((fd, id)) = (r.mount as usize)
            .checked_sub(1)
            .and_then(|i| made.get(i)?.as_ref())
        else {
            return Err(MountNsError::Refused {
                pid,
                inode: ns.inode,
                mount: describe(r),
                detail: "not made by the process that made the namespace".into(),
            });
        };
        fds.push((fd.as_fd(), *id));
    }
    let targets = vec![fds.iter().map(|(fd, _)| *fd).collect::<Vec<_>>()];
    set_all(
        &namespaces,
        &sources,
        &targets,
        HashMap::new(),
        HashMap::new(),
        &|_, to, kind| sys_mount::set_propagation(to, kind),
    )?;
    let read = table().map_err(|errno| MountNsError::Read {
        pid,
        inode: ns.inode,
        what: "its mountinfo".into(),
        errno,
    })?;
    let ids: Vec<(BorrowedFd<'_>, u32)> = fds;
    verify(&namespaces, &[read], &[ids], &HashMap::new())
}

/// `namespaces` with each namespace once (its first process).
fn dedup<'a>(namespaces: &[(Pid, &'a MountNamespace)]) -> Vec<(Pid, &'a MountNamespace)> {
    let mut seen = BTreeSet::new();
    namespaces
        .iter()
        .filter(|(_, ns)| seen.insert(ns.inode))
        .copied()
        .collect()
}

/// Once every mount of every mount namespace of the restore is made (all private): the
/// propagation of each as dumped (`namespaces`: each made namespace with the pid of the
/// restored process that made it), then every table checked.
pub(crate) fn restore(namespaces: &[(Pid, &MountNamespace)]) -> Result<(), MountNsError> {
    // Those whose maker set theirs (with groups of their own alone) are left out.
    let namespaces: Vec<(Pid, &MountNamespace)> = dedup(namespaces)
        .into_iter()
        .filter(|(_, ns)| !by_maker(ns))
        .collect();
    if namespaces.iter().all(|(_, ns)| ns.propagation.is_empty()) {
        return Ok(());
    }
    let sources = sources(&namespaces)?;
    // The mounts of cryo's the image names, as cryo's namespace shows them now.
    let cryos = match namespaces
        .iter()
        .find(|(_, ns)| !ns.outer_groups.is_empty())
    {
        Some((pid, ns)) => std::fs::read_to_string("/proc/self/mountinfo")
            .map(|t| parse(&t))
            .map_err(|errno| MountNsError::Read {
                pid: *pid,
                inode: ns.inode,
                what: "cryo's mountinfo".into(),
                errno,
            })?,
        None => Vec::new(),
    };
    let mut anchors: HashMap<u32, Vec<(String, OwnedFd, u32)>> = HashMap::new();
    for (pid, ns) in &namespaces {
        for a in &ns.outer_groups {
            if anchors
                .get(&a.group)
                .is_some_and(|v| v.iter().any(|(root, ..)| *root == a.root))
            {
                continue;
            }
            let mount = format!("cryo's mount on {} (peer group {})", a.point, a.group);
            let failed = |what: &str| set_err(*pid, ns.inode, mount.clone(), what);
            let wanted = |m: &&Mount| {
                let (shared, master, _) = fields(&m.optional);
                m.key() == a.key
                    && if a.peer {
                        shared != 0
                    } else {
                        shared == 0 && master != 0
                    }
            };
            let Some(m) = cryos.iter().find(wanted) else {
                return Err(MountNsError::Refused {
                    pid: *pid,
                    inode: ns.inode,
                    mount,
                    detail: format!(
                        "cryo's namespace has no such mount {} now ({}): its peer group is not \
                         joined again",
                        if a.peer { "shared" } else { "a slave" },
                        a.key
                    ),
                });
            };
            let fd = sys_mount::open_point(Path::new("/"), &a.point).map_err(failed("open it"))?;
            let id = sys_mount::mount_id(fd.as_fd()).map_err(failed("read its mount id"))?;
            if id != m.id {
                return Err(failed("its mount point leads to another mount")(
                    std::io::Error::from_raw_os_error(libc::EBUSY),
                ));
            }
            let (shared, master, _) = fields(&m.optional);
            let actual = if a.peer { shared } else { master };
            anchors
                .entry(a.group)
                .or_default()
                .push((a.root.clone(), fd, actual));
        }
    }
    // An fd on each mount to set, reached by its path, its key checked; each namespace's own
    // (mount_setattr acts only on mounts of the caller's namespace).
    let mut targets: Vec<Vec<(OwnedFd, u32)>> = Vec::new();
    let mut joined = Vec::new();
    for (pid, ns) in &namespaces {
        let mnt = std::fs::File::open(crate::proc::dir(*pid).join("ns/mnt")).map_err(|errno| {
            MountNsError::Read {
                pid: *pid,
                inode: ns.inode,
                what: "its mount namespace".into(),
                errno,
            }
        })?;
        joined.push(mnt);
        let failed = |r: &MountPropagation, what: &str| set_err(*pid, ns.inode, describe(r), what);
        let table = table_of(*pid, ns)?;
        let root = super::namespace_root(*pid).map_err(set_err(
            *pid,
            ns.inode,
            "its root".into(),
            "reach it",
        ))?;
        let mut fds = Vec::new();
        for r in &ns.propagation {
            let fd = sys_mount::open_point(&root, &r.point).map_err(failed(r, "open it"))?;
            let id = sys_mount::mount_id(fd.as_fd()).map_err(failed(r, "read its mount id"))?;
            if !table.iter().any(|m| m.id == id && m.key() == r.key) {
                return Err(MountNsError::Refused {
                    pid: *pid,
                    inode: ns.inode,
                    mount: describe(r),
                    detail: "its mount point leads to another mount than the one dumped".into(),
                });
            }
            fds.push((fd, id));
        }
        targets.push(fds);
    }
    // Members of each group set so far (root, fd); cryo's pure slaves of a group.
    let mut members: Groups<'_> = HashMap::new();
    let mut slaves: Groups<'_> = HashMap::new();
    for (g, list) in &anchors {
        let peer = sources.get(g) == Some(&Source::Outer { peer: true });
        let into = if peer { &mut members } else { &mut slaves };
        into.entry(*g)
            .or_default()
            .extend(list.iter().map(|(root, fd, _)| (root.clone(), fd.as_fd())));
    }
    let fds: Vec<Vec<BorrowedFd<'_>>> = targets
        .iter()
        .map(|t| t.iter().map(|(fd, _)| fd.as_fd()).collect())
        .collect();
    set_all(
        &namespaces,
        &sources,
        &fds,
        members,
        slaves,
        &|n, to, kind| set_in(&joined[n], to, kind),
    )?;
    let mut tables = Vec::new();
    for (pid, ns) in &namespaces {
        tables.push(table_of(*pid, ns)?);
    }
    let ids: Vec<Vec<(BorrowedFd<'_>, u32)>> = targets
        .iter()
        .map(|t| t.iter().map(|(fd, id)| (fd.as_fd(), *id)).collect())
        .collect();
    verify(&namespaces, &tables, &ids, &anchors)
}

/// Members of each peer group set so far (their roots and fds).
type Groups<'a> = HashMap<u32, Vec<(String, BorrowedFd<'a>)>>;

/// Sets the propagation of every mount of `namespaces` (`targets`: an fd on each, record by
/// record), each group from `sources`, `members` and `slaves` of it found so far (cryo's),
/// `set_in(n, fd, kind)` giving the mount `fd` of namespace `n` propagation `kind`: a group's
/// master before it, a group's first mount before its peers.
fn set_all<'a>(
    namespaces: &[(Pid, &MountNamespace)],
    sources: &HashMap<u32, Source>,
    targets: &[Vec<BorrowedFd<'a>>],
    mut members: Groups<'a>,
    slaves: Groups<'a>,
    set_in: &dyn Fn(usize, BorrowedFd<'_>, Propagation) -> std::io::Result<()>,
) -> Result<(), MountNsError> {
    let mut pending: Vec<(usize, usize)> = namespaces
        .iter()
        .enumerate()
        .flat_map(|(n, (_, ns))| (0..ns.propagation.len()).map(move |i| (n, i)))
        .collect();
    while !pending.is_empty() {
        let before = pending.len();
        let mut waiting = Vec::new();
        for (n, i) in pending {
            let (pid, ns) = namespaces[n];
            let r = &ns.propagation[i];
            let to = targets[n][i];
            let failed = |what: &str| set_err(pid, ns.inode, describe(r), what);
            // Joins the group `from` is a member (else a pure slave) of, and leaves it for
            // a slave of it.
            let join_master = |(from, member): (BorrowedFd<'_>, bool)| {
                sys_mount::set_group(from, to).map_err(failed("join its master's group"))?;
                if member {
                    set_in(n, to, Propagation::Slave).map_err(failed("make it a slave"))?;
                }
                Ok::<(), MountNsError>(())
            };
            // Its master group must exist first, and its own group unless it makes it.
            let master_from = (r.master != 0).then(|| {
                pick(members.get(&r.master), &r.root)
                    .map(|f| (f, true))
                    .or_else(|| pick(slaves.get(&r.master), &r.root).map(|f| (f, false)))
            });
            if matches!(master_from, Some(None)) {
                waiting.push((n, i));
                continue;
            }
            if r.shared != 0 {
                if let Some(from) = pick(members.get(&r.shared), &r.root) {
                    // A peer has its group's master too.
                    sys_mount::set_group(from, to).map_err(failed("join its peer group"))?;
                } else if sources.get(&r.shared) == Some(&Source::First(n, i)) {
                    if let Some(Some(master)) = master_from {
                        join_master(master)?;
                    }
                    set_in(n, to, Propagation::Shared).map_err(failed("make it shared"))?;
                } else {
                    waiting.push((n, i));
                    continue;
                }
                members
                    .entry(r.shared)
                    .or_default()
                    .push((r.root.clone(), to));
            } else if let Some(Some(master)) = master_from {
                join_master(master)?;
            }
            if r.unbindable {
                set_in(n, to, Propagation::Unbindable).map_err(failed("make it unbindable"))?;
            }
        }
        if waiting.len() == before {
            let (n, i) = waiting[0];
            let (pid, ns) = namespaces[n];
            return Err(MountNsError::Refused {
                pid,
                inode: ns.inode,
                mount: describe(&ns.propagation[i]),
                detail: "its peer group or master could not be made before it".into(),
            });
        }
        pending = waiting;
    }
    Ok(())
}

/// Gives mount `to` of the namespace `ns` (an open /proc/PID/ns/mnt) propagation `kind`,
/// from a thread in that namespace.
fn set_in(ns: &std::fs::File, to: BorrowedFd<'_>, kind: Propagation) -> std::io::Result<()> {
    crate::sys::ns::run_in(ns, nix::sched::CloneFlags::CLONE_NEWNS, || {
        sys_mount::set_propagation(to, kind)
    })
    .and_then(|r| r)
}

/// A mount of `list` (root, fd) whose root holds `root`.
fn pick<'a>(list: Option<&Vec<(String, BorrowedFd<'a>)>>, root: &str) -> Option<BorrowedFd<'a>> {
    list.and_then(|l| l.iter().find(|(r, _)| is_below(root, r)).map(|(_, fd)| *fd))
}

/// The mount table of restored `pid`'s namespace `ns`.
fn table_of(pid: Pid, ns: &MountNamespace) -> Result<Vec<Mount>, MountNsError> {
    super::namespace_mountinfo(pid)
        .map(|t| parse(&t))
        .map_err(|errno| MountNsError::Read {
            pid,
            inode: ns.inode,
            what: "its mountinfo".into(),
            errno,
        })
}

/// The error of step `what` setting the propagation of `mount` in namespace `inode` (made by
/// restored `pid`).
fn set_err(
    pid: Pid,
    inode: u64,
    mount: String,
    what: &str,
) -> impl FnOnce(std::io::Error) -> MountNsError {
    let what = what.to_string();
    move |errno| MountNsError::Propagation {
        pid,
        inode,
        mount,
        what,
        errno,
    }
}

/// Checks every table made against the dumped propagation: each dumped group is one group of
/// the restore and each restored group one dumped (numbers apart), the groups found in cryo's
/// namespace those of its mounts, the masters the same, every other mount private.
fn verify(
    namespaces: &[(Pid, &MountNamespace)],
    tables: &[Vec<Mount>],
    targets: &[Vec<(BorrowedFd<'_>, u32)>],
    anchors: &HashMap<u32, Vec<(String, OwnedFd, u32)>>,
) -> Result<(), MountNsError> {
    // Dumped group -> restored group, and back.
    let mut to: HashMap<u32, u32> = anchors
        .iter()
        .filter_map(|(g, list)| Some((*g, list.first()?.2)))
        .collect();
    let mut back: HashMap<u32, u32> = to.iter().map(|(a, b)| (*b, *a)).collect();
    for (((pid, ns), fds), table) in namespaces.iter().zip(targets).zip(tables) {
        let set: HashMap<u32, &MountPropagation> = fds
            .iter()
            .zip(&ns.propagation)
            .map(|((_, id), r)| (*id, r))
            .collect();
        for m in table {
            let made = fields(&m.optional);
            let dumped = set
                .get(&m.id)
                .map_or((0, 0, false), |r| (r.shared, r.master, r.unbindable));
            let mut same = (made.0 == 0) == (dumped.0 == 0)
                && (made.1 == 0) == (dumped.1 == 0)
                && made.2 == dumped.2;
            for (d, a) in [(dumped.0, made.0), (dumped.1, made.1)] {
                if d != 0 && a != 0 {
                    same &= *to.entry(d).or_insert(a) == a && *back.entry(a).or_insert(d) == d;
                }
            }
            if !same {
                return Err(MountNsError::Refused {
                    pid: *pid,
                    inode: ns.inode,
                    mount: m.describe(),
                    detail: format!(
                        "its propagation came out {:?}, not as dumped ({})",
                        m.optional,
                        set.get(&m.id)
                            .map_or("private".to_string(), |r| describe(r))
                    ),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(point: &str, root: &str, shared: u32, master: u32) -> MountPropagation {
        MountPropagation {
            key: point.into(),
            point: point.into(),
            root: root.into(),
            shared,
            master,
            unbindable: false,
            mount: 0,
            covered: false,
        }
    }

    #[test]
    fn optional_fields_read_as_groups() {
        assert_eq!(fields("shared:4 master:2"), (4, 2, false));
        assert_eq!(fields("master:7 propagate_from:3"), (0, 7, false));
        assert_eq!(fields("unbindable"), (0, 0, true));
        assert_eq!(fields(""), (0, 0, false));
    }

    #[test]
    fn a_group_is_made_by_the_mount_whose_root_holds_the_others() {
        let ns = MountNamespace {
            inode: 1,
            propagation: vec![
                record("/peer", "/a/sub", 9, 0),
                record("/whole", "/a", 9, 0),
                record("/slave", "/a/sub/x", 0, 9),
            ],
            ..Default::default()
        };
        let pid = Pid::from_raw(1);
        let made = sources(&[(pid, &ns)]).unwrap();
        assert_eq!(made[&9], Source::First(0, 1));
        // No member holds the others: refused, naming the mount.
        let split = MountNamespace {
            inode: 1,
            propagation: vec![record("/x", "/a", 9, 0), record("/y", "/b", 9, 0)],
            ..Default::default()
        };
        let err = sources(&[(pid, &split)]).unwrap_err().to_string();
        assert!(err.contains("none of its mounts shows"), "{err}");
        // A slave of a group no one holds.
        let orphan = MountNamespace {
            inode: 1,
            propagation: vec![record("/s", "/", 0, 3)],
            ..Default::default()
        };
        let err = sources(&[(pid, &orphan)]).unwrap_err().to_string();
        assert!(err.contains("is a slave of peer group 3"), "{err}");
        // Found in cryo's namespace: joined there, if its root holds the mounts'.
        let outer = MountNamespace {
            inode: 1,
            propagation: vec![record("/", "/", 4, 0)],
            outer_groups: vec![OuterGroup {
                group: 4,
                key: "k".into(),
                point: "/".into(),
                root: "/".into(),
                peer: true,
            }],
            ..Default::default()
        };
        assert_eq!(
            sources(&[(pid, &outer)]).unwrap()[&4],
            Source::Outer { peer: true }
        );
    }
}
