//! Mount namespaces other than cryo's: dumped as cryo's mounts plus the tmpfs mounts (with
//! their contents, and binds of parts of them), proc, sysfs and mqueue mounts and bind mounts
//! of cryo's paths only the namespace has; made again, private, by the topmost process of the
//! dump in it before it opens its files (the procs, sysfs and mqueues by cryo once every
//! process made its files), their propagation set last (propagation.rs); anything else
//! refused at dump naming pid, the namespace and the mount.
//!
//! ```text
//! dump (frozen)                        restore (the forked process, before its fds)
//! /proc/PID/mountinfo vs cryo's        unshare(CLONE_NEWNS), / made rprivate
//!   same key (root, point, options,    each mount only it had, parents first,
//!   type, source, superblock options)    through an fd on its parent (make_order):
//!                                        tmpfs: mount, fill from the copy, set ro after
//!   = one of cryo's, copied by unshare   bind:  mount --bind SOURCE, remount its flags
//!   the rest: tmpfs (read through      /proc/self/mountinfo compared with the dumped
//!   /proc/PID/root/POINT), binds,      table (procs, sysfs left out): any difference fails
//!   procs (the PID namespace shown),   restore (cryo, every process's files made)
//!   sysfs (the network namespace:        proc: fsopen with pidns; sysfs: fsopen in the
//!   the process's own or cryo's)         network namespace; attached in the namespace,
//!                                        flags; the whole table compared
//! ```

use std::collections::HashSet;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use cryo_proto::image::{
    file_desc, FanotifyMarkKind, FileDesc, MountNamespace, NamespaceMount, TaskCore, TreeEntry,
};
use nix::unistd::Pid;

use crate::proc;
use crate::restore::error::{ChildError, ChildStep};
use crate::sys;
use crate::task::userns::own_ids;

mod external;
pub(crate) mod mountinfo;
mod propagation;
pub(crate) use external::apply as apply_externals;
pub use external::{ExternalMount, ExternalPaths};
mod tmpfs_copy;
pub use propagation::check as check_propagation;

use mountinfo::{
    devpts_options, is_below, mount_flags, parse, proc_options, reached_by, table_keys,
    tmpfs_options, unescape, Mount,
};
use tmpfs_copy::{copy_tree, fill, list_dir};

/// Filesystems whose mount in a namespace is a view of kernel state rather than of files (a
/// proc, a sysfs... mounted there): not taken as a bind mount even on one of cryo's
/// superblocks, refused. (Not devpts: a new mount of it is always a new instance, so one on
/// cryo's instance is a bind of it. Nor cgroup and cgroup2: a new mount of a hierarchy shows
/// the directory of its cgroup namespace's root, which a bind of that directory shows too.)
const PSEUDO: &[&str] = &[
    "proc",
    "sysfs",
    "mqueue",
    "bpf",
    "debugfs",
    "tracefs",
    "securityfs",
    "configfs",
    "fusectl",
    "pstore",
    "binfmt_misc",
    "hugetlbfs",
    "autofs",
    "rpc_pipefs",
    "efivarfs",
    "selinuxfs",
    "nsfs",
];

/// The most bytes of files a dump copies from the tmpfs mounts of one namespace.
pub const CONTENTS_LIMIT: u64 = 64 << 20;

/// Why a mount namespace cannot come back; each names the process, the namespace and the
/// mount.
#[derive(Debug, thiserror::Error)]
pub enum MountNsError {
    /// The mount table or a file of the namespace could not be read.
    #[error("pid {pid}: mount namespace mnt:[{inode}]: read {what}: {errno}")]
    Read {
        /// The process.
        pid: Pid,
        /// The namespace's inode.
        inode: u64,
        /// What was read.
        what: String,
        /// The kernel's answer (in the message, so not chained as a source).
        errno: io::Error,
    },
    /// Something of the namespace the restore would not make again.
    #[error("pid {pid}: mount namespace mnt:[{inode}]: {mount}: {detail}")]
    Refused {
        /// The process.
        pid: Pid,
        /// The namespace's inode.
        inode: u64,
        /// The mount, as "TYPE SOURCE on POINT".
        mount: String,
        /// Why.
        detail: String,
    },
    /// A file of the namespace a restore could not open again.
    #[error("pid {pid}: mount namespace mnt:[{inode}]: {detail}")]
    FileRefused {
        /// The process.
        pid: Pid,
        /// The namespace's inode.
        inode: u64,
        /// The file and why.
        detail: String,
    },
    /// A mount's propagation could not be set again.
    #[error("pid {pid}: mount namespace mnt:[{inode}]: {mount}: {what}: {errno}")]
    Propagation {
        /// The restored process that made the namespace.
        pid: Pid,
        /// The namespace's inode (as dumped).
        inode: u64,
        /// The mount, or cryo's mount of its peer group.
        mount: String,
        /// The step.
        what: String,
        /// The kernel's answer (in the message, so not chained as a source).
        errno: io::Error,
    },
    /// The namespace is shared with a process the dump does not hold.
    #[error(
        "pid {pid}: mount namespace mnt:[{inode}] is shared with pid {other}, which is not in \
         the dump: the restored processes would be in a new namespace without it"
    )]
    Outsider {
        /// The process.
        pid: Pid,
        /// The namespace's inode.
        inode: u64,
        /// The other process.
        other: Pid,
    },
}

/// Dumps mount namespace `inode` of frozen `pid` (not cryo's): every mount of cryo's must be
/// in it; the others must be tmpfs mounts (copied through the process's root) or binds of a
/// path cryo's namespace shows, private, each on the mount its path leads to.
pub fn dump(
    pid: Pid,
    inode: u64,
    externals: &[ExternalMount],
) -> Result<MountNamespace, MountNsError> {
    let read_err = |what: &str| {
        let what = what.to_string();
        move |errno| MountNsError::Read {
            pid,
            inode,
            what,
            errno,
        }
    };
    let refuse = |m: &Mount, detail: String| MountNsError::Refused {
        pid,
        inode,
        mount: m.describe(),
        detail,
    };
    // A filesystem of the namespace's own (a tmpfs, a proc) is made again whole: a mount of
    // a part of it only where the namespace mounts the whole first (a bind of it then).
    let refuse_part = |m: &Mount| {
        if m.root == "/" {
            Ok(())
        } else {
            Err(refuse(
                m,
                format!(
                    "is a part of a {} whose whole the namespace does not mount first: not \
                     made again",
                    m.fstype
                ),
            ))
        }
    };
    // A pseudo filesystem made again by a plain mount: only with a new mount's options.
    let plain_options = |m: &Mount, kind: &str| {
        if m.super_options == "rw" {
            Ok(())
        } else {
            Err(refuse(
                m,
                format!("{kind} options {:?} are not made again", m.super_options),
            ))
        }
    };
    // Read from the namespace's root: a chrooted process's own view shows only its jail
    // (restored by a chroot of its own, task/process.rs).
    let theirs = parse(&namespace_mountinfo(pid).map_err(read_err("its mountinfo"))?);
    let ours = parse(
        &std::fs::read_to_string("/proc/self/mountinfo").map_err(read_err("cryo's mountinfo"))?,
    );
    let root_link = namespace_root(pid).map_err(read_err("its namespace's root"))?;
    let (mut propagation, outer_groups, propagated) =
        propagation::dump(&root_link, &theirs, &ours).map_err(|(m, detail)| refuse(m, detail))?;
    // Its root mount: the one whose parent it does not show. Another than cryo's: a root of
    // its own (pivot_root), every mount then its own, the root first.
    let top = |table: &[Mount]| {
        let ids: HashSet<u32> = table.iter().map(|m| m.id).collect();
        table.iter().find(|m| !ids.contains(&m.parent)).cloned()
    };
    let their_top = top(&theirs);
    // Cryo's root remounted with other flags is still cryo's root.
    let pivoted = their_top
        .as_ref()
        .is_some_and(|t| Some(t.key_but_options()) != top(&ours).map(|o| o.key_but_options()));
    // Cryo's mounts, each matched once (the same key, else the same but for its per-mount
    // flags: remounted); the rest are the namespace's own, in mount order.
    let mut unmatched: Vec<(String, &Mount)> = if pivoted {
        Vec::new()
    } else {
        ours.iter().map(|o| (o.key(), o)).collect()
    };
    let mut inherited: HashSet<u32> = HashSet::new();
    let mut not_exact: Vec<&Mount> = Vec::new();
    for m in &theirs {
        let key = m.key();
        match unmatched.iter().position(|(k, _)| *k == key) {
            Some(i) => {
                unmatched.remove(i);
                inherited.insert(m.id);
            }
            None => not_exact.push(m),
        }
    }
    let mut own: Vec<&Mount> = Vec::new();
    let mut remounts = Vec::new();
    for m in not_exact {
        let key = m.key_but_options();
        match unmatched
            .iter()
            .position(|(_, o)| o.key_but_options() == key)
        {
            Some(i) => {
                let (ours_key, _) = unmatched.remove(i);
                mount_flags(&m.options)
                    .map_err(|opt| refuse(m, format!("mount option {opt:?} is not made again")))?;
                inherited.insert(m.id);
                remounts.push(cryo_proto::image::MountRemount {
                    point: unescape(&m.point),
                    key: m.key(),
                    ours_key,
                    options: m.options.clone(),
                });
            }
            None => own.push(m),
        }
    }
    if let Some(top) = their_top.as_ref().filter(|_| pivoted) {
        if let Some(i) = own.iter().position(|m| m.id == top.id) {
            let root_mount = own.remove(i);
            own.insert(0, root_mount);
        }
    }
    // Cryo's mounts it does not have (unmounted there, or mounted in cryo's since it was
    // made) are unmounted again in the restored one: the table it has is the image's.
    if !unmatched.is_empty() {
        let lacks: Vec<String> = unmatched.iter().map(|(_, o)| o.describe()).collect();
        tracing::debug!(%pid, lacks = ?lacks, "mounts of cryo's the namespace does not have");
    }
    let own_ids: HashSet<u32> = own.iter().map(|m| m.id).collect();
    if let Some(m) = theirs
        .iter()
        .find(|m| inherited.contains(&m.id) && own_ids.contains(&m.parent))
    {
        return Err(refuse(
            m,
            "is one of cryo's moved below a mount of the namespace's own: not made again".into(),
        ));
    }
    external::check_named(externals, &theirs, |detail| {
        refuse(their_top.as_ref().unwrap_or(&theirs[0]), detail)
    })?;
    let our_devs: HashSet<&str> = ours.iter().map(|m| m.dev.as_str()).collect();
    let mut mounts = Vec::new();
    let mut budget = CONTENTS_LIMIT;
    for (n, m) in own.iter().enumerate() {
        mount_flags(&m.options)
            .map_err(|opt| refuse(m, format!("mount option {opt:?} is not made again")))?;
        // Where it lands is judged once every mount is known (make_order); the root of a
        // pivoted namespace is made first, on nothing of the namespace's.
        let at = theirs.iter().position(|t| t.id == m.id).unwrap_or(0);
        if pivoted
            && n == 0
            && (m.point != "/"
                || m.fstype != "tmpfs"
                    && (!our_devs.contains(m.dev.as_str()) || PSEUDO.contains(&m.fstype.as_str())))
        {
            return Err(refuse(
                m,
                "is the root of the namespace (pivot_root): only a tmpfs or a bind of cryo's \
                 path is made again as its root"
                    .into(),
            ));
        }
        let point = unescape(&m.point);
        if let Some(key) = external::key_of(externals, &point) {
            mounts.push(external::record(m, point, key));
            continue;
        }
        let seen_at = PathBuf::from(format!("{}{}", root_link.display(), point));
        // What is read through its path must be it: a covered mount is read so only where it
        // is a tmpfs (copied from a private copy of the namespace) or a bind (found through
        // another mount of its filesystem).
        let covered = !leads_to(&seen_at, m.id);
        let kinds = ["tmpfs", "proc", "sysfs", "mqueue", "devpts", "binfmt_misc"];
        if covered
            && kinds[1..].contains(&m.fstype.as_str())
            && m.root == "/"
            && !our_devs.contains(m.dev.as_str())
        {
            return Err(refuse(
                m,
                format!(
                    "is covered by another mount: a {} mount whose path leads elsewhere is not \
                     read, not made again",
                    m.fstype
                ),
            ));
        }
        // The first mount of the namespace's own of this filesystem (a tmpfs, made and copied
        // before; a proc, sysfs or mqueue, made by cryo late), of which this one is a bind.
        let first_own = own[..n]
            .iter()
            .zip(&mounts)
            .find(|(o, r): &(&&Mount, &NamespaceMount)| {
                o.dev == m.dev && (r.tmpfs || r.devpts || made_by_cryo(r) && !r.late)
            });
        let record = if let Some((first, first_record)) = first_own {
            // Bound again from its path below that one, which must lead to it; or, removed
            // since, made there again for the bind (mountinfo: "PATH//deleted").
            let shown_root = unescape(&m.root);
            let removed_root = shown_root.strip_suffix("//deleted");
            let source = format!(
                "{}{}",
                unescape(&first.point).trim_end_matches('/'),
                if m.root == "/" {
                    ""
                } else {
                    removed_root.unwrap_or(&shown_root)
                }
            );
            let source = if source.is_empty() {
                "/".to_string()
            } else {
                source
            };
            let there = |p: &Path| std::fs::metadata(p).map(|s| (s.dev(), s.ino())).ok();
            let from = PathBuf::from(format!("{}{source}", root_link.display()));
            let bind_removed = match removed_root {
                Some(rel) => Some(
                    removed_bind_source(m, (first, first_record), &from, &seen_at, &mut budget)
                        .map(|entry| TreeEntry {
                            path: rel.trim_start_matches('/').to_string(),
                            ..entry
                        })
                        .map_err(|detail| refuse(m, detail))?,
                ),
                // A part of a tmpfs is bound from a copy of that mount alone, where
                // its path leads to it whatever covers it (NamespaceMount.bind_first).
                None if first_record.tmpfs && first.root == "/" => None,
                None if first.root != "/"
                    || there(&from).is_none()
                    || there(&from) != there(&seen_at) =>
                {
                    return Err(refuse(
                        m,
                        format!(
                            "is a bind of {shown_root} of the {} on {}, whose path no longer \
                                 leads to it: not made again",
                            first.fstype,
                            unescape(&first.point)
                        ),
                    ));
                }
                None => None,
            };
            let bind_first = match own[..n].iter().position(|o| o.id == first.id) {
                Some(i) if first_record.tmpfs && first.root == "/" && bind_removed.is_none() => {
                    i as u32 + 1
                }
                _ => 0,
            };
            NamespaceMount {
                point,
                options: m.options.clone(),
                bind_source: source,
                bind_removed,
                bind_in_namespace: true,
                bind_first,
                // On a devpts of its own: its ptys exist once the processes made their
                // files (a pty bound on /dev/console, as a container's).
                late: made_by_cryo(first_record) || first_record.devpts,
                key: m.key(),
                ..Default::default()
            }
        } else if m.fstype == "tmpfs" && !our_devs.contains(m.dev.as_str()) {
            refuse_part(m)?;
            let (tmpfs_options, read_only) = tmpfs_options(&m.super_options)
                .map_err(|opt| refuse(m, format!("tmpfs option {opt:?} is not made again")))?;
            let files = copy_tmpfs(pid, (&root_link, &seen_at), (&theirs, at), &mut budget)
                .map_err(|detail| refuse(m, detail))?;
            NamespaceMount {
                point,
                options: m.options.clone(),
                tmpfs: true,
                source: unescape(&m.source),
                tmpfs_options,
                tmpfs_read_only: read_only,
                files,
                bind_source: String::new(),
                key: m.key(),
                ..Default::default()
            }
        } else if m.fstype == "proc" && !our_devs.contains(m.dev.as_str()) {
            refuse_part(m)?;
            let proc_options = proc_options(&m.super_options)
                .map_err(|opt| refuse(m, format!("proc option {opt:?} is not made again")))?;
            let own = match proc_shows(pid, &seen_at) {
                Ok(Some(own)) => own,
                Ok(None) => {
                    return Err(refuse(
                        m,
                        "shows a PID namespace that is neither the process's own nor cryo's: \
                         not made again"
                            .into(),
                    ))
                }
                Err(e) => return Err(read_err(&format!("the proc on {point}"))(e)),
            };
            NamespaceMount {
                point,
                options: m.options.clone(),
                source: unescape(&m.source),
                key: m.key(),
                proc: true,
                proc_options,
                proc_own_pidns: own,
                ..Default::default()
            }
        } else if m.fstype == "devpts" && m.root == "/" && !our_devs.contains(m.dev.as_str()) {
            // Mounted whole more than once (binds of its ptys are binds of it).
            if theirs
                .iter()
                .filter(|t| t.dev == m.dev && t.root == "/")
                .count()
                > 1
            {
                return Err(refuse(
                    m,
                    "is a devpts instance mounted more than once: not made again".into(),
                ));
            }
            let devpts_options = devpts_options(&m.super_options)
                .map_err(|opt| refuse(m, format!("devpts option {opt:?} is not made again")))?;
            let ptys: Vec<String> = list_dir(&seen_at)
                .map_err(read_err(&format!("the devpts on {point}")))?
                .into_iter()
                .filter(|n| n != "ptmx")
                .collect();
            // A new instance numbers its ptys from 0 again: each must be one of the
            // dump's, made again in it (checked in mark_files, once the ptys are known).
            let devpts_ptys = ptys
                .iter()
                .map(|n| n.parse::<u32>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| refuse(m, format!("holds a node other than ptys: {ptys:?}")))?;
            NamespaceMount {
                point,
                options: m.options.clone(),
                source: unescape(&m.source),
                key: m.key(),
                devpts: true,
                devpts_options,
                devpts_ptys,
                ..Default::default()
            }
        } else if m.fstype == "binfmt_misc" && m.root == "/" {
            // One instance per user namespace: the one a new mount by cryo shows, or not
            // made again. Its formats end with its last mount: read to be registered
            // again if the instance ended by the time of the restore.
            let fresh = sys::mount::detached("binfmt_misc", "none", None, "")
                .and_then(|made| Ok(nix::sys::stat::fstat(made.as_fd())?.st_dev));
            let shown = std::fs::metadata(&seen_at).map(|s| s.dev());
            match (fresh, shown) {
                (Ok(a), Ok(b)) if a == b => {}
                (Ok(_), Ok(_)) => {
                    return Err(refuse(
                        m,
                        "is the binfmt_misc instance of another user namespace than \
                             cryo's: not made again"
                            .into(),
                    ))
                }
                (Err(e), _) | (_, Err(e)) => {
                    return Err(read_err(&format!("the binfmt_misc on {point}"))(e))
                }
            }
            plain_options(m, "binfmt_misc")?;
            let formats = super::binfmt_misc::read(&seen_at).map_err(|e| match e {
                super::binfmt_misc::BinfmtError::Io { source, .. } => {
                    read_err(&format!("the binfmt_misc on {point}"))(source)
                }
                other => refuse(m, other.to_string()),
            })?;
            NamespaceMount {
                point,
                options: m.options.clone(),
                source: unescape(&m.source),
                key: m.key(),
                binfmt_misc: Some(formats),
                ..Default::default()
            }
        } else if m.fstype == "mqueue" && m.root == "/" {
            // One mqueue superblock per IPC namespace, wherever it is mounted.
            let own = match mqueue_shows(pid, &seen_at) {
                Ok(Some(own)) => own,
                Ok(None) => {
                    return Err(refuse(
                        m,
                        "shows an IPC namespace that is neither the process's own nor cryo's: \
                         not made again"
                            .into(),
                    ))
                }
                Err(e) => return Err(read_err(&format!("the mqueue on {point}"))(e)),
            };
            plain_options(m, "mqueue")?;
            NamespaceMount {
                point,
                options: m.options.clone(),
                source: unescape(&m.source),
                key: m.key(),
                mqueue: true,
                mqueue_own_ipcns: own,
                ..Default::default()
            }
        } else if m.fstype == "sysfs" && m.root == "/" {
            // A sysfs of a network namespace is one superblock wherever it is mounted: on
            // cryo's, it shows cryo's namespace.
            let own = if our_devs.contains(m.dev.as_str()) {
                false
            } else if sysfs_shows_own(pid, &seen_at)
                .map_err(read_err(&format!("the sysfs on {point}")))?
            {
                true
            } else {
                return Err(refuse(
                    m,
                    "shows a network namespace that is neither the process's own nor cryo's: \
                     not made again"
                        .into(),
                ));
            };
            plain_options(m, "sysfs")?;
            NamespaceMount {
                point,
                options: m.options.clone(),
                source: unescape(&m.source),
                key: m.key(),
                sysfs: true,
                sysfs_own_netns: own,
                ..Default::default()
            }
        } else if our_devs.contains(m.dev.as_str())
            && (!PSEUDO.contains(&m.fstype.as_str())
                    // A part of cryo's proc (/proc/sys bound read-only on itself: systemd's
                    // ProtectKernelTunables=): a bind, which no new mount of it shows.
                    || m.fstype == "proc" && m.root != "/")
        {
            if unescape(&m.root).ends_with("//deleted") {
                let (source, entry) = removed_bind_of_ours(m, &ours, &seen_at, &mut budget)
                    .map_err(|detail| refuse(m, detail))?;
                mounts.push(NamespaceMount {
                    point,
                    options: m.options.clone(),
                    bind_source: source,
                    bind_removed: Some(entry),
                    key: m.key(),
                    ..Default::default()
                });
                continue;
            }
            let shown = if covered {
                shown_elsewhere(m, &theirs, &root_link).unwrap_or_else(|| seen_at.clone())
            } else {
                seen_at.clone()
            };
            let source = bind_source(m, &ours, &shown).ok_or_else(|| {
                refuse(
                    m,
                    format!(
                        "is a bind mount of {} of device {}, which cryo's namespace shows at no \
                         path: not made again",
                        unescape(&m.root),
                        m.dev
                    ),
                )
            })?;
            NamespaceMount {
                point,
                options: m.options.clone(),
                bind_source: source,
                key: m.key(),
                ..Default::default()
            }
        } else {
            return Err(refuse(
                m,
                format!(
                    "is a {} mount only the namespace has: only tmpfs, proc, sysfs, mqueue, \
                     devpts and binfmt_misc mounts and bind mounts of cryo's paths are made again",
                    m.fstype
                ),
            ));
        };
        mounts.push(record);
    }
    // What lies on a mount cryo makes late is made by cryo too, after it: binds only.
    let mut late: HashSet<u32> = HashSet::new();
    for (m, r) in own.iter().zip(mounts.iter_mut()) {
        if late.contains(&m.parent) && !made_by_cryo(r) {
            if r.tmpfs {
                return Err(refuse(
                    m,
                    "is a tmpfs mounted on a proc, sysfs or mqueue of the namespace's own: not \
                     made again"
                        .into(),
                ));
            }
            r.late = true;
        }
        if made_by_cryo(r) {
            late.insert(m.id);
        }
    }
    // Each mount on a mount of the namespace's own is made through an fd on that one; the
    // others by their paths, which must lead to their parents when they are made.
    for (n, m) in own.iter().enumerate() {
        let parent = own.iter().position(|p| p.id == m.parent);
        if let Some(p) = parent.filter(|_| !(pivoted && n == 0)) {
            if place_below(&mounts[p].point, &mounts[n].point).is_none() {
                return Err(refuse(
                    m,
                    "is mounted at a path that is not below its parent's: not made again".into(),
                ));
            }
            mounts[n].parent = p as u32 + 1;
        }
    }
    let order = make_order(&mounts).map_err(|i| {
        refuse(
            own[i],
            "is over-mounted in a way no order of making the mounts gives: not made again".into(),
        )
    })?;
    for (k, &i) in order.iter().enumerate() {
        let m = own[i];
        if mounts[i].parent != 0 && !made_by_cryo(&mounts[i]) || pivoted && i == 0 {
            continue;
        }
        // The mounts there when it is made: cryo's the namespace has, then its own in the
        // order they are made.
        let made_before: HashSet<u32> = order[..k].iter().map(|&j| own[j].id).collect();
        let there: Vec<Mount> = theirs
            .iter()
            .filter(|t| inherited.contains(&t.id) || made_before.contains(&t.id))
            .cloned()
            .collect();
        if reached_by(&m.point, &there) != Some(m.parent) {
            return Err(refuse(
                m,
                "is mounted on a mount its path no longer leads to (over-mounted since): not \
                 made again"
                    .into(),
            ));
        }
    }
    if pivoted && !mounts.iter().any(|r| r.proc && r.point == "/proc") {
        // Without a proc on /proc, the restore binds cryo's there while the processes make
        // their files: on its /proc directory, or on one it makes for that in a tmpfs root
        // of its own (removed again).
        let proc_dir = std::fs::symlink_metadata(format!("{}/proc", root_link.display()));
        if !proc_dir.as_ref().is_ok_and(|d| d.is_dir()) && (!mounts[0].tmpfs || proc_dir.is_ok()) {
            return Err(refuse(
                own[0],
                "is the root of the namespace (pivot_root), which has neither a proc on /proc \
                 nor a /proc directory: not made again (the restore reaches cryo's /proc \
                 there until its processes are made)"
                    .into(),
            ));
        }
    }
    for (r, id) in propagation.iter_mut().zip(&propagated) {
        r.mount = own
            .iter()
            .position(|o| o.id == *id)
            .map_or(0, |i| i as u32 + 1);
    }
    let ns = MountNamespace {
        inode,
        mounts,
        table: table_keys(&theirs),
        propagation,
        outer_groups,
        pivoted,
        remounts,
    };
    // A covered mount's propagation is set by the process that makes the namespace.
    let shared_ids: HashSet<u32> = theirs
        .iter()
        .filter(|t| {
            t.optional
                .split_whitespace()
                .any(|f| f.starts_with("shared:"))
        })
        .map(|t| t.id)
        .collect();
    propagation::judge_by_maker(
        &ns,
        |i| made_by_cryo(&ns.mounts[i]),
        |i| shared_ids.contains(&own[i].parent),
    )
    .map_err(|(r, detail)| {
        let id = propagated[r];
        refuse(
            theirs.iter().find(|t| t.id == id).unwrap_or(&theirs[0]),
            detail,
        )
    })?;
    if ns.pivoted && propagation::by_maker(&ns) && shared_ids.contains(&own[0].id) {
        return Err(refuse(
            own[0],
            "is the root of the namespace (pivot_root), shared, in a namespace with a covered \
             mount whose propagation its maker sets: not made again"
                .into(),
        ));
    }
    Ok(ns)
}

/// Which PID namespace the proc process `pid` shows at `seen_at` (/proc/PID/root/POINT) is:
/// the process's own (true) or cryo's (false), told by finding the process itself there under
/// its pid in that namespace (NSpid: cryo's first, its own last) with its start time; `None`
/// for another one.
fn proc_shows(pid: Pid, seen_at: &Path) -> io::Result<Option<bool>> {
    let status = std::fs::read_to_string(proc::dir(pid).join("status"))?;
    let nspid: Vec<&str> = status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .map(|r| r.split_whitespace().collect())
        .unwrap_or_default();
    // Field 22 of stat, the start time, the 20th after the command's closing parenthesis.
    let start = |stat: &str| {
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(19).map(str::to_string))
    };
    let own = start(&std::fs::read_to_string(proc::dir(pid).join("stat"))?);
    let shows = |n: &str| {
        std::fs::read_to_string(seen_at.join(n).join("stat"))
            .ok()
            .and_then(|s| start(&s))
    };
    let (Some(first), Some(last)) = (nspid.first(), nspid.last()) else {
        return Ok(None);
    };
    if own.is_some() && shows(last) == own {
        return Ok(Some(nspid.len() > 1));
    }
    Ok((own.is_some() && shows(first) == own).then_some(false))
}

/// Which IPC namespace the mqueue process `pid` shows at `seen_at` (/proc/PID/root/POINT)
/// is: the process's own (true) or cryo's (false), told by the device of the superblock a new
/// mqueue mount gets in each (one per namespace); `None` for another one.
fn mqueue_shows(pid: Pid, seen_at: &Path) -> io::Result<Option<bool>> {
    let dev = std::fs::metadata(seen_at)?.dev();
    let dev_in = |ns: PathBuf| -> io::Result<u64> {
        let ns = std::fs::File::open(ns)?;
        let made = detached_in(
            &ns,
            nix::sched::CloneFlags::CLONE_NEWIPC,
            "mqueue",
            "mqueue",
        )?;
        Ok(nix::sys::stat::fstat(made.as_fd())?.st_dev)
    };
    if dev_in(proc::dir(pid).join("ns/ipc"))? == dev {
        return Ok(Some(true));
    }
    Ok((dev_in(PathBuf::from("/proc/self/ns/ipc"))? == dev).then_some(false))
}

/// A new mount (detached) of `fstype` named `source`, made by a thread that joined namespace
/// `ns` of kind `kind`: an mqueue shows the IPC namespace of the thread that makes it, a sysfs
/// its network namespace.
fn detached_in(
    ns: &std::fs::File,
    kind: nix::sched::CloneFlags,
    fstype: &str,
    source: &str,
) -> io::Result<std::os::fd::OwnedFd> {
    crate::sys::ns::run_in(ns, kind, || sys::mount::detached(fstype, source, None, ""))?
}

/// Whether the sysfs process `pid` shows at `seen_at` (/proc/PID/root/POINT) is of the
/// process's network namespace: it lists the interfaces that namespace has (class/net
/// against /proc/PID/net/dev).
fn sysfs_shows_own(pid: Pid, seen_at: &Path) -> io::Result<bool> {
    let dev = std::fs::read_to_string(proc::dir(pid).join("net/dev"))?;
    let mut theirs: Vec<String> = dev
        .lines()
        .skip(2)
        .filter_map(|l| Some(l.split(':').next()?.trim().to_string()))
        .collect();
    let mut shown: Vec<String> = list_dir(&seen_at.join("class/net"))?;
    theirs.sort();
    shown.sort();
    Ok(theirs == shown)
}

/// Whether path `path` leads to mount `id` (a mount over it, or over a directory above it,
/// leads it elsewhere).
fn leads_to(path: &Path, id: u32) -> bool {
    nix::fcntl::open(
        path,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .ok()
    .and_then(|fd| sys::mount::mount_id(fd.as_fd()).ok())
        == Some(id)
}

/// For covered mount `m` of the namespace whose table is `theirs` and root `root`: a path of
/// the namespace through another mount of its filesystem (one its path leads to) that shows
/// the root of `m`, the same file.
fn shown_elsewhere(m: &Mount, theirs: &[Mount], root: &Path) -> Option<PathBuf> {
    theirs
        .iter()
        .filter(|t| t.id != m.id && t.dev == m.dev && is_below(&m.root, &t.root))
        .find_map(|t| {
            let (t_root, m_root) = (unescape(&t.root), unescape(&m.root));
            let rest = if t_root == "/" {
                m_root.as_str()
            } else {
                &m_root[t_root.len()..]
            };
            let point = unescape(&t.point);
            let path = PathBuf::from(format!(
                "{}{}{rest}",
                root.display(),
                point.trim_end_matches('/')
            ));
            // Reached through `t` itself, not a mount below the path.
            leads_to(&path, t.id).then_some(path)
        })
}

/// The path in cryo's namespace of what bind mount `m` shows (seen by the process at
/// `seen_at`): a mount of cryo's of the same filesystem whose root holds `m`'s, the path
/// leading to the same inode.
fn bind_source(m: &Mount, ours: &[Mount], seen_at: &Path) -> Option<String> {
    let target = std::fs::metadata(seen_at).ok()?;
    ours.iter()
        .filter(|o| o.dev == m.dev && o.fstype == m.fstype && o.super_options == m.super_options)
        .filter(|o| is_below(&m.root, &o.root))
        .map(|o| {
            let rest = if o.root == "/" {
                m.root.as_str()
            } else {
                &m.root[o.root.len()..]
            };
            let point = unescape(&o.point);
            let joined = format!("{}{}", point.trim_end_matches('/'), unescape(rest));
            if joined.is_empty() {
                "/".to_string()
            } else {
                joined
            }
        })
        .find(|source| {
            std::fs::metadata(source)
                .is_ok_and(|s| (s.dev(), s.ino()) == (target.dev(), target.ino()))
        })
}

/// For bind `m` of a file or directory of one of cryo's mounts (`ours`) removed since (root
/// "PATH//deleted"): its path in cryo's namespace, where the restore makes it again, binds it
/// and removes it, and what it makes there (read through `seen_at`, from `budget`). That path
/// must be free and its directory on that filesystem.
fn removed_bind_of_ours(
    m: &Mount,
    ours: &[Mount],
    seen_at: &Path,
    budget: &mut u64,
) -> Result<(String, TreeEntry), String> {
    let shown_root = unescape(&m.root);
    let removed = shown_root.trim_end_matches("//deleted");
    let what = format!("is a bind of {removed}, removed from device {}", m.dev);
    let not_made = |why: &str| format!("{what}, {why}: not made again");
    let path = ours
        .iter()
        .filter(|o| o.dev == m.dev && o.fstype == m.fstype && o.super_options == m.super_options)
        .filter(|o| is_below(removed, &unescape(&o.root)))
        .map(|o| {
            let root = unescape(&o.root);
            let rest = if root == "/" {
                removed
            } else {
                &removed[root.len()..]
            };
            PathBuf::from(format!(
                "{}{rest}",
                unescape(&o.point).trim_end_matches('/')
            ))
        })
        .find(|p| {
            p.parent()
                .and_then(|d| std::fs::metadata(d).ok())
                .is_some_and(|d| {
                    d.is_dir()
                        && format!("{}:{}", libc::major(d.dev()), libc::minor(d.dev())) == m.dev
                })
        })
        .ok_or_else(|| not_made("whose directory cryo's namespace shows at no path"))?;
    if std::fs::symlink_metadata(&path).is_ok() {
        return Err(not_made(&format!(
            "where another file has its path {} now",
            path.display()
        )));
    }
    let entry = removed_entry(m, seen_at, &what, budget)?;
    Ok((path.to_string_lossy().into_owned(), entry))
}

/// Absolute `path` as process `pid` finds it: below the root of its mount namespace when it
/// is in another than cryo's (its fds' paths are that namespace's, from its root, even when
/// the process is chrooted), else `path` itself.
pub(crate) fn as_seen_by(pid: Pid, path: &str) -> NamespacePath {
    if super::namespaces::other_than_cryos(pid, "mnt") {
        // Unreachable, the path leads nowhere, as /proc/PID/root would for a process gone.
        namespace_root(pid)
            .unwrap_or_else(|_| NamespacePath::plain(proc::dir(pid).join("root")))
            .below(path)
    } else {
        NamespacePath::plain(PathBuf::from(path))
    }
}

/// A path in a mount namespace as cryo reaches it; below an fd on the namespace's root, held
/// as long as the path, for a process whose own root is elsewhere (chrooted).
#[derive(Debug)]
pub(crate) struct NamespacePath {
    path: PathBuf,
    _root: Option<OwnedFd>,
}

impl NamespacePath {
    /// `path` itself, reached without a namespace's root.
    pub(crate) fn plain(path: PathBuf) -> Self {
        Self { path, _root: None }
    }

    /// Absolute `path` below this one.
    pub(crate) fn below(self, path: &str) -> Self {
        Self {
            path: PathBuf::from(format!("{}{path}", self.path.display())),
            _root: self._root,
        }
    }
}

impl std::ops::Deref for NamespacePath {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.path
    }
}

impl AsRef<Path> for NamespacePath {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

/// Whether process `pid` is chrooted: its root another directory than its mount namespace's
/// (/proc/PID/root, read from another namespace, shows its path from that namespace's root).
fn chrooted(pid: Pid) -> io::Result<bool> {
    Ok(std::fs::read_link(proc::dir(pid).join("root"))? != Path::new("/"))
}

/// The root of the mount namespace of `pid` (not cryo's) as cryo reaches it: /proc/PID/root,
/// or for a chrooted process an fd on the namespace's root taken by a thread that joined it.
pub(crate) fn namespace_root(pid: Pid) -> io::Result<NamespacePath> {
    let root = proc::dir(pid).join("root");
    if !chrooted(pid)? {
        return Ok(NamespacePath::plain(root));
    }
    let fd = in_namespace_of(pid, || {
        // Joined, the thread's root is the namespace's.
        nix::fcntl::open(
            "/",
            nix::fcntl::OFlag::O_PATH
                | nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(io::Error::from)
    })?;
    Ok(NamespacePath {
        path: PathBuf::from(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&fd)
        )),
        _root: Some(fd),
    })
}

/// The mountinfo of the calling thread, read through `procfs` (cryo's /proc, opened before the
/// thread joined another namespace, whose own /proc may show another PID namespace or none).
fn own_mountinfo(procfs: &std::fs::File) -> io::Result<String> {
    use std::io::Read;
    let fd = nix::fcntl::openat(
        procfs.as_fd(),
        "thread-self/mountinfo",
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
    let mut text = String::new();
    std::fs::File::from(fd).read_to_string(&mut text)?;
    Ok(text)
}

/// The mount table of the namespace of `pid` (not cryo's) from its root: /proc/PID/mountinfo,
/// or for a chrooted process (whose mountinfo shows only what its root reaches) that of a
/// thread that joined the namespace, read through cryo's /proc.
pub(crate) fn namespace_mountinfo(pid: Pid) -> io::Result<String> {
    if !chrooted(pid)? {
        return std::fs::read_to_string(proc::dir(pid).join("mountinfo"));
    }
    // Opened before: the namespace's own /proc may show another PID namespace, or none.
    let procfs = std::fs::File::open("/proc")?;
    in_namespace_of(pid, || own_mountinfo(&procfs))
}

/// Runs `f` on a thread of cryo that joined the mount namespace of `pid` (its root and
/// working directory the namespace's root).
fn in_namespace_of<T: Send>(pid: Pid, f: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
    let ns = std::fs::File::open(proc::dir(pid).join("ns/mnt"))?;
    sys::ns::run_in(&ns, nix::sched::CloneFlags::CLONE_NEWNS, f)?
}

/// What of namespace `ns` this host lacks to make it again (for `restore --check-only`):
/// each bind's source path in cryo's namespace, each mount of cryo's whose peer group its
/// mounts join; (subject, reason) for each missing one.
pub fn missing_here(ns: &MountNamespace) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for m in ns
        .mounts
        .iter()
        .filter(|m| !m.bind_source.is_empty() && !m.bind_in_namespace)
    {
        if std::fs::symlink_metadata(&m.bind_source).is_err() {
            out.push((
                m.bind_source.clone(),
                format!("no such path here: {} binds it", mount_name(m)),
            ));
        }
    }
    let ours = std::fs::read_to_string("/proc/self/mountinfo")
        .map(|t| parse(&t))
        .unwrap_or_default();
    for a in &ns.outer_groups {
        if !ours
            .iter()
            .any(|o| o.key() == a.key && !o.optional.is_empty())
        {
            out.push((
                a.point.clone(),
                format!(
                    "no mount here that is shared or a slave as the dumped host's was ({}): \
                     the namespace's mounts in its peer group {} could not join it",
                    a.key, a.group
                ),
            ));
        }
    }
    out
}

/// Refuses, before a restore that moves cgroups below new roots (`--cgroup-root`) creates
/// anything, a mount namespace holding a cgroup hierarchy's directory: it is bound again from
/// its dumped path, not the moved one.
pub(crate) fn refuse_cgroup_binds_moved(
    tasks: &[crate::restore::load::TaskImage],
) -> Result<(), MountNsError> {
    for task in tasks {
        let Some(ns) = &task.core.mnt else { continue };
        // The key: "POINT ROOT (TYPE SOURCE, OPTIONS SUPER)", point and root escaped.
        let fstype = |key: &str| {
            key.split(" (")
                .nth(1)?
                .split(' ')
                .next()
                .map(str::to_string)
        };
        if let Some(m) = ns
            .mounts
            .iter()
            .find(|m| matches!(fstype(&m.key).as_deref(), Some("cgroup" | "cgroup2")))
        {
            return Err(MountNsError::Refused {
                pid: Pid::from_raw(task.entry.pid),
                inode: ns.inode,
                mount: mount_name(m),
                detail: "a cgroup directory bound again from its dumped path: not with \
                         --cgroup-root, which moves the cgroups"
                    .into(),
            });
        }
    }
    Ok(())
}

/// At dump, for each mount namespace made inside its parent's pivoted one and sharing its
/// root (`tasks`: each process's pid, its parent's and its namespace): its binds of cryo's
/// paths become binds of their place below that root, the only way the kernel binds them in
/// there (from the namespace's own mounts); one of a path outside the root is refused.
pub fn bind_below_shared_roots(
    tasks: &mut [(Pid, Pid, Option<&mut MountNamespace>)],
) -> Result<(), MountNsError> {
    // Each pivoted namespace's inode, root mount and mounts' keys.
    let roots: Vec<Option<(u64, NamespaceMount, HashSet<String>)>> = tasks
        .iter()
        .map(|(_, _, ns)| {
            let ns = ns.as_deref().filter(|n| n.pivoted)?;
            let keys = ns.mounts.iter().map(|m| m.key.clone()).collect();
            Some((ns.inode, ns.mounts.first()?.clone(), keys))
        })
        .collect();
    let parents: Vec<Option<usize>> = tasks
        .iter()
        .map(|(_, ppid, _)| tasks.iter().position(|t| t.0 == *ppid))
        .collect();
    for (i, (pid, _, ns)) in tasks.iter_mut().enumerate() {
        let Some(ns) = ns.as_deref_mut().filter(|n| n.pivoted) else {
            continue;
        };
        let Some((inode, root, theirs)) = parents[i].and_then(|p| roots[p].as_ref()) else {
            continue;
        };
        if *inode == ns.inode || ns.mounts.first().map(|m| &m.key) != Some(&root.key) {
            continue;
        }
        // The parent's mounts it still has are found there, not made.
        for m in ns.mounts.iter_mut().filter(|m| !theirs.contains(&m.key)) {
            if m.tmpfs
                || m.devpts
                || m.bind_in_namespace
                || made_by_cryo(m)
                || !m.external.is_empty()
            {
                continue;
            }
            let Some(inside) = below_root(std::slice::from_ref(root), &m.bind_source) else {
                return Err(MountNsError::Refused {
                    pid: *pid,
                    inode: ns.inode,
                    mount: mount_name(m),
                    detail: format!(
                        "made inside its parent's namespace mnt:[{inode}] (pivoted): a bind of \
                         a path outside their root is not made again"
                    ),
                });
            };
            m.bind_source = inside;
            m.bind_in_namespace = true;
        }
    }
    Ok(())
}

/// Whether `ns`, made inside `parent`, shares its parent's root of its own (pivot_root): both
/// pivoted, on the same root mount (its per-mount flags changed or not: a root remounted
/// read-only in the inner one).
fn shares_pivoted_root(ns: &MountNamespace, parent: &MountNamespace) -> bool {
    let root = |n: &MountNamespace| n.mounts.first().map(key_but_options);
    parent.pivoted && ns.pivoted && root(parent) == root(ns)
}

/// The key of mount `m` but for its per-mount options (mountinfo::Mount::key_but_options).
fn key_but_options(m: &NamespaceMount) -> String {
    m.key.replacen(&format!(", {} ", m.options), ", ", 1)
}

/// Refuses a mount namespace made inside another of the dump when either has a root of its
/// own (pivot_root) but for an inner one sharing its parent's root (made from the parent's),
/// or an inner one with a root of its own and no bind of cryo's paths (a nested container
/// pivoted into a tmpfs of its own: nothing of it depends on where it is made): the inner
/// one's binds of cryo's paths would be bound from its parent's namespace, not cryo's.
/// `tasks`: each process's pid, its parent's and its namespace.
pub fn refuse_nested_pivoted(
    tasks: &[(Pid, Pid, Option<&MountNamespace>)],
) -> Result<(), MountNsError> {
    for &(pid, ppid, ns) in tasks {
        let Some(ns) = ns else { continue };
        let parent = tasks.iter().find(|t| t.0 == ppid).and_then(|t| t.2);
        // One made inside a pivoted one without a pivot of its own shares its root: made
        // from its parent's (restore_nested_pivoted).
        let binds_cryos = ns
            .mounts
            .iter()
            .any(|m| !m.bind_source.is_empty() && !m.bind_in_namespace);
        if let Some(p) = parent.filter(|p| {
            p.inode != ns.inode
                && (p.pivoted || ns.pivoted)
                && !shares_pivoted_root(ns, p)
                && (!ns.pivoted || binds_cryos)
        }) {
            return Err(MountNsError::Refused {
                pid,
                inode: ns.inode,
                mount: "its mount table".into(),
                detail: format!(
                    "made inside its parent's namespace mnt:[{}], one of the two with a root of \
                     its own (pivot_root): not made again",
                    p.inode
                ),
            });
        }
    }
    Ok(())
}

/// Refuses a mount namespace of the dump that a process outside it (`members`: every pid of
/// the dump) is in: the restored copy would not be shared with it.
pub fn refuse_outsiders(namespaces: &[(Pid, u64)], members: &[Pid]) -> Result<(), MountNsError> {
    let mut seen = HashSet::new();
    for &(pid, inode) in namespaces.iter().filter(|(_, i)| seen.insert(*i)) {
        if let Some(other) = proc::outsider_in_namespace("mnt", inode, members) {
            return Err(MountNsError::Outsider { pid, inode, other });
        }
    }
    Ok(())
}

/// The file or directory removed from its path on `first` (a tmpfs of the namespace's own,
/// whose record is `first_record`) that bind `m` shows at `seen_at` (mountinfo root
/// "PATH//deleted"): its attributes and a file's contents (from `budget`), for the restore to
/// make it again at `from` (that path, as the process sees it), bind it and remove it. What it
/// cannot make so is refused: the tmpfs read-only, another file at the path now, the path's
/// directory gone too, another link to it.
fn removed_bind_source(
    m: &Mount,
    (first, first_record): (&Mount, &NamespaceMount),
    from: &Path,
    seen_at: &Path,
    budget: &mut u64,
) -> Result<TreeEntry, String> {
    let what = format!(
        "is a bind of {} removed from the {} on {}",
        unescape(&m.root),
        first.fstype,
        unescape(&first.point)
    );
    let not_made = |why: &str| format!("{what}, {why}: not made again");
    if !first_record.tmpfs || first.root != "/" {
        return Err(not_made("which is not a tmpfs the namespace mounts whole"));
    }
    let read_only = mount_flags(&first.options)
        .map(|f| f.contains(nix::mount::MsFlags::MS_RDONLY))
        .unwrap_or(true);
    if first_record.tmpfs_read_only || read_only {
        return Err(not_made(
            "which is read-only (the restore makes it there for the bind)",
        ));
    }
    if std::fs::symlink_metadata(from).is_ok() {
        return Err(not_made("where another file has that path now"));
    }
    if !from
        .parent()
        .is_some_and(|d| std::fs::metadata(d).is_ok_and(|d| d.is_dir()))
    {
        return Err(not_made("whose directory is gone too"));
    }
    removed_entry(m, seen_at, &what, budget)
}

/// The removed file or directory bind `m` shows at `seen_at` (`what` it is, for errors):
/// its attributes and a file's contents (from `budget`). Refused: covered by another mount,
/// of another type, linked elsewhere.
fn removed_entry(
    m: &Mount,
    seen_at: &Path,
    what: &str,
    budget: &mut u64,
) -> Result<TreeEntry, String> {
    let not_made = |why: &str| format!("{what}, {why}: not made again");
    let shown = nix::fcntl::open(
        seen_at,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| format!("{what}: open its mount point: {e}"))?;
    let id =
        sys::mount::mount_id(shown.as_fd()).map_err(|e| format!("{what}: its mount id: {e}"))?;
    if id != m.id {
        return Err(not_made("covered by another mount"));
    }
    let meta = std::fs::metadata(seen_at).map_err(|e| format!("{what}: read it: {e}"))?;
    if !meta.is_dir() && !meta.is_file() {
        return Err(not_made("neither a regular file nor a directory"));
    }
    if meta.nlink() != 0 {
        return Err(not_made("with another link elsewhere"));
    }
    let mut entries = copy_tree(seen_at, budget).map_err(|detail| format!("{what}: {detail}"))?;
    entries.truncate(1);
    entries
        .pop()
        .ok_or_else(|| format!("{what}: nothing read at its mount point"))
}

/// The files of the tmpfs mounted at `seen_at` (through /proc/PID/root) in the mount
/// namespace of `pid`, what its submounts cover included (a file a test made under a
/// directory before mounting over it is found again once that is unmounted): read from a
/// detached copy of that mount alone, made by a thread of cryo in the namespace. An
/// unbindable mount cannot be copied so: read through `seen_at`, where a submount's point is
/// an empty placeholder. A mount covered by another (`mount`: the table and its position
/// there; stacked on the same point, or below one mounted over a directory above it) is
/// read through another mount of the whole tmpfs its path leads to (`root`: the namespace's
/// root as cryo reaches it), else reached in a private copy of the namespace the thread makes,
/// with what covers it unmounted there ([`uncovered`]; in a namespace of a user namespace of
/// its own the copy's mounts are locked: refused).
fn copy_tmpfs(
    pid: Pid,
    (root, seen_at): (&Path, &Path),
    mount: (&[Mount], usize),
    budget: &mut u64,
) -> Result<Vec<TreeEntry>, String> {
    use std::os::fd::AsRawFd;
    let (table, index) = mount;
    let at = match nix::fcntl::open(
        seen_at,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    ) {
        Ok(fd) => {
            let id = sys::mount::mount_id(fd.as_fd()).map_err(|e| format!("its mount id: {e}"))?;
            Some(fd).filter(|_| id == table[index].id)
        }
        // Hidden by a mount over a directory above it.
        Err(nix::errno::Errno::ENOENT) => None,
        Err(e) => return Err(format!("open its root: {e}")),
    };
    // Covered: another mount of the whole tmpfs its path leads to shows the same files.
    let mut read_at = seen_at.to_path_buf();
    let at = match at {
        Some(fd) => Some(fd),
        None => shown_elsewhere(&table[index], table, root).and_then(|path| {
            let fd = nix::fcntl::open(
                &path,
                nix::fcntl::OFlag::O_PATH
                    | nix::fcntl::OFlag::O_DIRECTORY
                    | nix::fcntl::OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .ok()?;
            read_at = path;
            Some(fd)
        }),
    };
    let ns = std::fs::File::open(proc::dir(pid).join("ns/mnt"))
        .map_err(|e| format!("open its mount namespace: {e}"))?;
    let Some(at) = at else {
        let procfs = std::fs::File::open("/proc").map_err(|e| format!("open /proc: {e}"))?;
        let copy = sys::ns::run_in(&ns, nix::sched::CloneFlags::CLONE_NEWNS, || {
            uncovered(table, index, &procfs)
        })
        .map_err(|e| format!("join its mount namespace: {e}"))??;
        return copy_tree(
            Path::new(&format!("/proc/self/fd/{}/.", copy.as_raw_fd())),
            budget,
        );
    };
    let alone = sys::ns::run_in(&ns, nix::sched::CloneFlags::CLONE_NEWNS, || {
        sys::mount::clone_mount_alone(at.as_fd())
    })
    .map_err(|e| format!("join its mount namespace: {e}"))?;
    match alone {
        Ok(copy) => copy_tree(
            // "/." follows the magic link (its own lstat would describe the link).
            Path::new(&format!("/proc/self/fd/{}/.", copy.as_raw_fd())),
            budget,
        ),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => copy_tree(&read_at, budget),
        Err(e) => Err(format!("copy its mount alone (open_tree): {e}")),
    }
}

/// In a thread that joined a mount namespace whose table is `table`: a detached copy of mount
/// `table[index]`, which others cover, reached in a private copy of the namespace the thread
/// makes (unshare), where whatever its path leads to instead is unmounted, the topmost first.
/// The namespace itself is not touched: the copy goes with the thread. `procfs`: cryo's /proc.
fn uncovered(table: &[Mount], index: usize, procfs: &std::fs::File) -> Result<OwnedFd, String> {
    use nix::mount::{umount2, MntFlags};
    // Private: an unmount in the copy must not reach the namespace's peers.
    sys::mount::enter_new_private()
        .map_err(|e| format!("make a private copy of its mount namespace: {e}"))?;
    let text = own_mountinfo(procfs).map_err(|e| format!("read the copy's mountinfo: {e}"))?;
    // The copy has the same mounts under new ids, in the order of its tree: each found by its
    // key below the copy of its parent.
    let copy = parse(&text);
    let mut copy_of: std::collections::HashMap<u32, u32> = std::collections::HashMap::new();
    let ids: HashSet<u32> = table.iter().map(|m| m.id).collect();
    let copy_ids: HashSet<u32> = copy.iter().map(|m| m.id).collect();
    for m in table {
        let parent = copy_of.get(&m.parent).copied();
        let found = copy.iter().find(|c| {
            c.key() == m.key()
                && !copy_of.values().any(|&v| v == c.id)
                && match parent {
                    Some(p) => c.parent == p,
                    None => !ids.contains(&m.parent) && !copy_ids.contains(&c.parent),
                }
        });
        if let Some(c) = found {
            copy_of.insert(m.id, c.id);
        }
    }
    let target = copy_of
        .get(&table[index].id)
        .and_then(|id| copy.iter().find(|c| c.id == *id))
        .ok_or_else(|| "its copy is not found in the namespace's copy".to_string())?;
    let point = unescape(&target.point);
    // The mounts its path must go through: those below which it is.
    let mut below = HashSet::new();
    let mut at = target.parent;
    while let Some(p) = copy.iter().find(|c| c.id == at) {
        below.insert(p.id);
        at = p.parent;
    }
    let open = |path: &Path| {
        nix::fcntl::open(
            path,
            nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
    };
    let id_of =
        |fd: &OwnedFd| sys::mount::mount_id(fd.as_fd()).map_err(|e| format!("its mount id: {e}"));
    for _ in 0..=copy.len() {
        // What its path reaches; where the path leads nowhere (a mount over a directory
        // above it hides the directory), the mount of the deepest part that is there.
        let reached = match open(Path::new(&point)) {
            Ok(fd) => {
                let id = id_of(&fd)?;
                if id == target.id {
                    return sys::mount::clone_mount_alone(fd.as_fd())
                        .map_err(|e| format!("copy its mount alone (open_tree): {e}"));
                }
                id
            }
            Err(nix::errno::Errno::ENOENT) => {
                let fd = Path::new(&point)
                    .ancestors()
                    .skip(1)
                    .find_map(|a| open(a).ok())
                    .ok_or_else(|| "none of its path is there in the copy".to_string())?;
                id_of(&fd)?
            }
            Err(e) => return Err(format!("open its point in the copy: {e}")),
        };
        let top = copy
            .iter()
            .find(|c| c.id == reached)
            .filter(|c| !below.contains(&c.id))
            .ok_or_else(|| format!("its path reaches mount {reached} of the copy, not it"))?;
        umount2(unescape(&top.point).as_str(), MntFlags::MNT_DETACH)
            .map_err(|e| format!("unmount what covers it in the copy: {e}"))?;
    }
    Err("still covered in the copy".into())
}

/// Marks the files of a process in mount namespace `ns` that lie on mounts of its own: their
/// paths lead there only in the namespace made again, so they are checked when the process
/// opens them, and those on a copied tmpfs are a new inode of the same type, mode, owner, size
/// and times. `ids`: the descriptions its fds and mappings use. A file its path no longer leads
/// to in the namespace (none there) but in its parent's (`parent`, None: cryo) is opened
/// there; one that path leads to another file is refused. Returns the removed objects its
/// binds show that it holds (the bind's index in `ns.mounts`, the path it holds each at), for
/// NamespaceMount.removed_held_at.
pub fn mark_files(
    pid: Pid,
    parent: Option<Pid>,
    ns: &MountNamespace,
    ids: &HashSet<u32>,
    descs: &mut [FileDesc],
) -> Result<Vec<(usize, String)>, MountNsError> {
    // The removed objects its binds show that it holds: (the bind's index, the path).
    let mut held = Vec::new();
    if ns.mounts.is_empty() {
        return Ok(held);
    }
    let root = namespace_root(pid).map_err(|errno| MountNsError::Read {
        pid,
        inode: ns.inode,
        what: "its namespace's root".into(),
        errno,
    })?;
    let own_mount = |path: &str| ns.mounts.iter().rev().find(|m| is_below(path, &m.point));
    let refused = |m: &NamespaceMount, detail: String| MountNsError::Refused {
        pid,
        inode: ns.inode,
        mount: mount_name(m),
        detail,
    };
    // A deleted name of a file linked elsewhere is opened at restore by its holder: in a user
    // namespace of its own not by its handle (open_by_handle_at needs CAP_DAC_READ_SEARCH over
    // the initial one), only by another name, in its directory (files/regular.rs) or on the
    // namespace's own tmpfs (found below).
    let in_own_user_namespace = crate::task::namespaces::other_than_cryos(pid, "user");
    let unreachable_in_user_namespace = |reg: &cryo_proto::image::RegularFile| {
        in_own_user_namespace
            && reg.deleted
            && reg
                .linked
                .as_ref()
                .is_some_and(|l| l.other_name.is_empty() && l.path_in_namespace.is_empty())
    };
    let linked_refused =
        |reg: &cryo_proto::image::RegularFile, id: u32| MountNsError::FileRefused {
            pid,
            inode: ns.inode,
            detail: format!(
            "{} (description {id}): deleted name of a file linked elsewhere: its process is in \
             a user namespace of its own, where a restore may not open it by its handle, and \
             no other name of it is in its directory or on the namespace's own tmpfs: refused",
            reg.path
        ),
        };
    // A devpts of its own comes back new, holding only the ptys the dump makes again there.
    for m in ns.mounts.iter().filter(|m| m.devpts) {
        let made_again = |index: u32| {
            descs.iter().any(|d| {
                matches!(&d.kind, Some(file_desc::Kind::Pty(p))
                    if p.index == index && p.namespace_devpts)
            })
        };
        if let Some(index) = m.devpts_ptys.iter().copied().find(|&i| !made_again(i)) {
            return Err(refused(
                m,
                format!(
                    "holds pty {index}, which no process of the dump holds (an instance made \
                     again would not have it)"
                ),
            ));
        }
    }
    // Those opened in the parent's namespace are found there again (open.rs).
    for desc in descs
        .iter_mut()
        .filter(|d| ids.contains(&d.id) && !d.parent_mount_namespace)
    {
        let reg = match desc.kind.as_mut() {
            Some(file_desc::Kind::Regular(r)) | Some(file_desc::Kind::Directory(r)) => r,
            // A FIFO the holder opens by its path in the namespace made again: it must lead
            // to the FIFO there now (a copied tmpfs's holds a new one, refilled).
            Some(file_desc::Kind::Pipe(p)) if !p.fifo_path.is_empty() && !p.deleted => {
                let Some(m) = own_mount(&p.fifo_path) else {
                    continue;
                };
                let seen = std::fs::symlink_metadata(format!("{}{}", root.display(), p.fifo_path));
                if !seen.is_ok_and(|s| s.file_type().is_fifo() && s.ino() == p.ino) {
                    return Err(refused(
                        m,
                        format!(
                            "FIFO {} (description {}) is no longer at its path in the namespace",
                            p.fifo_path, desc.id
                        ),
                    ));
                }
                p.in_mount_namespace = true;
                continue;
            }
            // A FIFO, device node or symlink removed while open: made again by its holder
            // beside its path in the namespace made again (pipes.rs, removed_nodes.rs).
            Some(file_desc::Kind::Pipe(p)) if p.deleted => continue,
            Some(file_desc::Kind::RemovedNode(_)) => continue,
            // Watches added again by the holder, by their paths in the namespace made again
            // (inotify.rs found each there at dump), before cryo makes the proc, sysfs and
            // mqueue mounts: one on those would be added on what is there meanwhile.
            Some(file_desc::Kind::Inotify(i)) => {
                let late = i.watches.iter().find_map(|w| {
                    own_mount(&w.path)
                        .filter(|m| made_by_cryo(m))
                        .map(|m| (m, &w.path))
                });
                if let Some((m, path)) = late {
                    return Err(refused(
                        m,
                        format!(
                            "inotify watch on {path} (description {}) is on it: made after the \
                             watches are added again, so not restored",
                            desc.id
                        ),
                    ));
                }
                continue;
            }
            // Reopened by path in the holder once the namespace is made: that path must lead
            // to cryo's /proc there too.
            // On the namespace's own proc mount (made again with it): opened there.
            Some(file_desc::Kind::ProcFile(p)) if !p.proc_mount.is_empty() => continue,
            // A namespace of its own: opened as /proc/self/ns/KIND, on any proc it sees
            // (every holder of the description must be that process: another one would name
            // it by cryo's pid, refused below).
            Some(file_desc::Kind::ProcFile(p))
                if !p.namespace.is_empty() && p.pid == pid.as_raw() =>
            {
                continue
            }
            Some(file_desc::Kind::ProcFile(p)) => {
                let path = match (p.pid, p.namespace.is_empty()) {
                    (0, true) => p.rest.clone(),
                    (pid, true) => format!("/proc/{pid}{}", p.rest),
                    (pid, false) => format!("/proc/{pid}/ns/{}", p.namespace),
                };
                if let Some(m) = own_mount(&path) {
                    return Err(refused(
                        m,
                        format!(
                            "file {path} of cryo's /proc (description {}) is under it: \
                             reopened by its path, it would be found on this mount",
                            desc.id
                        ),
                    ));
                }
                continue;
            }
            // Opened by its holder by path in the namespace made again: it must lead to a
            // character device there now (the dump found the fd's device at that path).
            Some(file_desc::Kind::CharDevice(path)) if own_mount(path).is_some() => {
                let seen = std::fs::metadata(format!("{}{}", root.display(), path));
                if !seen.is_ok_and(|s| s.file_type().is_char_device()) {
                    let m = own_mount(path).expect("matched above");
                    return Err(refused(
                        m,
                        format!(
                            "device {path} (description {}) is no longer at its path in the \
                             namespace",
                            desc.id
                        ),
                    ));
                }
                desc.in_mount_namespace = true;
                continue;
            }
            // Marks added again by the holder, by their paths in the namespace made again
            // (fanotify.rs found each there at dump), before cryo makes the proc, sysfs and
            // mqueue mounts; checked there by the holder (fanotify.rs check_in_namespace).
            Some(file_desc::Kind::Fanotify(f)) => {
                let mut on_own = false;
                for k in &mut f.marks {
                    let Some(m) = own_mount(&k.path) else {
                        continue;
                    };
                    let refuse = |detail: &str| {
                        refused(
                            m,
                            format!(
                                "fanotify mark on {} (description {}): {detail}",
                                k.path, desc.id
                            ),
                        )
                    };
                    if made_by_cryo(m) {
                        return Err(refuse(
                            "made after the marks are added again, so not restored",
                        ));
                    }
                    on_own = true;
                    if k.kind() != FanotifyMarkKind::FanotifyMarkInode {
                        // On the mount the namespace makes at that point (its own mount, or a
                        // filesystem it has a mount of: the one made again there).
                        if unescape(&m.point) != k.path {
                            return Err(refuse(
                                "its path is not the mount point of a mount the namespace makes \
                                 again, so not restored",
                            ));
                        }
                        continue;
                    }
                    let seen = std::fs::symlink_metadata(format!("{}{}", root.display(), k.path));
                    match seen {
                        Ok(s) if s.ino() == k.ino => {
                            k.on_copied_tmpfs = m.tmpfs || m.bind_in_namespace && !m.late;
                            k.file_type = s.mode() & libc::S_IFMT;
                        }
                        _ => {
                            return Err(refuse(
                                "the inode marked is no longer at its path in the namespace",
                            ))
                        }
                    }
                }
                if on_own {
                    desc.in_mount_namespace = true;
                }
                continue;
            }
            _ => continue,
        };
        // A removed file or directory a bind shows is made again for the bind: the process
        // making the namespace opens its descriptions of it through that one.
        let bound = ns.mounts.iter().enumerate().find(|(_, b)| {
            reg.deleted
                && b.bind_removed.is_some()
                && std::fs::metadata(format!("{}{}", root.display(), b.point))
                    .is_ok_and(|s| (s.dev(), s.ino()) == (reg.dev, reg.ino))
        });
        if let Some((index, b)) = bound {
            let why = held_through_bind(&root, b, reg, desc.flags);
            if let Some(why) = why {
                return Err(refused(
                    b,
                    format!(
                        "shows removed {} the process holds too (description {}): {why}: not \
                         made again",
                        reg.path, desc.id
                    ),
                ));
            }
            if reg
                .attrs
                .as_ref()
                .is_some_and(crate::files::inode_attrs::any)
            {
                return Err(refused(
                    b,
                    format!(
                        "shows removed {} the process holds too (description {}), which has \
                         extended attributes or inode flags: the copy made for the bind would \
                         not have them",
                        reg.path, desc.id
                    ),
                ));
            }
            reg.removed_bound = true;
            if !held.contains(&(index, reg.path.clone())) {
                held.push((index, reg.path.clone()));
            }
        }
        let Some(m) = own_mount(&reg.path) else {
            if unreachable_in_user_namespace(reg) {
                return Err(linked_refused(reg, desc.id));
            }
            continue;
        };
        reg.in_mount_namespace = true;
        let on_copied_tmpfs = m.tmpfs || m.bind_in_namespace && !m.late;
        let refuse = |detail: String| refused(m, detail);
        if reg.deleted {
            reg.on_copied_tmpfs = on_copied_tmpfs;
            // On a mount of a filesystem the namespace made again shares (a bind of cryo's
            // path): its inode found again by its handle, by its holder, as in cryo's.
            if let Some(linked) = reg.linked.as_mut().filter(|_| reg.on_copied_tmpfs) {
                // Its inode comes back on the copy under another of its names, opened there at
                // restore (a new tmpfs: its handle would not open it).
                let other = m
                    .tmpfs
                    .then(|| {
                        let base = root.join(m.point.trim_start_matches('/'));
                        tmpfs_copy::other_name(&base, reg.dev, reg.ino)
                    })
                    .flatten();
                let Some(rel) = other else {
                    return Err(refuse(format!(
                        "deleted file {} has another link, not found on the namespace's own \
                         tmpfs (it is copied: a new one's handles differ)",
                        reg.path
                    )));
                };
                linked.path_in_namespace = format!("{}/{rel}", m.point.trim_end_matches('/'));
            }
            if unreachable_in_user_namespace(reg) {
                return Err(linked_refused(reg, desc.id));
            }
            continue;
        }
        let seen = std::fs::symlink_metadata(format!("{}{}", root.display(), reg.path));
        let is_it = |s: &std::fs::Metadata| (s.dev(), s.ino()) == (reg.dev, reg.ino);
        match seen {
            Ok(s) if is_it(&s) => reg.on_copied_tmpfs = on_copied_tmpfs,
            // Not there at all (a root of its own pivoted into since): where its parent is.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let there = match parent {
                    Some(p) => std::fs::symlink_metadata(&*as_seen_by(p, &reg.path)),
                    None => std::fs::symlink_metadata(&reg.path),
                };
                if !there.is_ok_and(|s| is_it(&s)) {
                    return Err(refuse(format!(
                        "{} (description {}) is no longer at its path in the namespace, nor in \
                         its parent's",
                        reg.path, desc.id
                    )));
                }
                // As its parent's namespace has it (marked with that namespace's processes).
                reg.through_parent_namespace = true;
            }
            _ => {
                return Err(refuse(format!(
                    "{} (description {}) is no longer at its path in the namespace",
                    reg.path, desc.id
                )))
            }
        }
    }
    Ok(held)
}

/// Why a process of a mount namespace (its root as cryo reaches it: `root`) cannot hold
/// removed `reg` (a description of it with open flags `flags`) through the object the restore
/// makes again for bind `b`, which shows it; None when it can: `reg`'s path is where that
/// object is made (the bind's source, in the same directory under the same name) or the
/// bind's own point, where the process making the namespace takes an fd on it for itself and
/// the processes it forks (restore/child.rs).
fn held_through_bind(
    root: &Path,
    b: &NamespaceMount,
    reg: &cryo_proto::image::RegularFile,
    flags: u32,
) -> Option<String> {
    if flags & (libc::O_TMPFILE & !libc::O_DIRECTORY) as u32 != 0 {
        return Some("it was made by open(O_TMPFILE), which a reopen does not show".into());
    }
    if reg.path == b.point {
        return None;
    }
    let source = if b.bind_in_namespace {
        format!("{}{}", root.display(), b.bind_source)
    } else {
        b.bind_source.clone()
    };
    let held = PathBuf::from(format!("{}{}", root.display(), reg.path));
    let source = Path::new(&source);
    let dir = |p: &Path| {
        p.parent()
            .and_then(|d| std::fs::metadata(d).ok())
            .map(|d| (d.dev(), d.ino()))
    };
    if held.file_name() != source.file_name() || dir(&held).is_none() || dir(&held) != dir(source) {
        return Some(format!(
            "its path is neither where the object is made again for the bind ({}) nor the \
             bind's point",
            b.bind_source
        ));
    }
    None
}

/// A mount of the image as messages name it: "tmpfs SOURCE on POINT" or "bind SOURCE on
/// POINT".
fn mount_name(m: &NamespaceMount) -> String {
    if !m.external.is_empty() {
        format!("external mount {} on {}", m.external, m.point)
    } else if m.proc {
        format!("proc on {}", m.point)
    } else if m.mqueue {
        format!("mqueue on {}", m.point)
    } else if m.devpts {
        format!("devpts {} on {}", m.source, m.point)
    } else if m.sysfs {
        format!("sysfs on {}", m.point)
    } else if m.tmpfs {
        format!("tmpfs {} on {}", m.source, m.point)
    } else {
        format!("bind {} on {}", m.bind_source, m.point)
    }
}

/// In a forked process of the restore, before it opens its files and forks: a new mount
/// namespace with the mounts its process's had beyond cryo's, where its process was in one
/// other than its parent's (`parent`: the parent's core, None for a root).
pub fn restore_in_child(
    core: &TaskCore,
    parent: Option<&TaskCore>,
    joined: Option<usize>,
) -> Result<(), ChildError> {
    let failed = |what: String| ChildError::sys_on(ChildStep::MountNamespace, what);
    if let Some(generations) = joined {
        return join_ancestors(generations).map_err(failed(format!(
            "join the namespace of its ancestor {generations} generations up"
        )));
    }
    let Some(ns) = made_by(core, parent) else {
        return Ok(());
    };
    if ns.pivoted {
        let parent_ns = parent.and_then(|p| p.mnt.as_ref());
        if let Some(p) = parent_ns.filter(|p| shares_pivoted_root(ns, p)) {
            return restore_nested_pivoted(ns, p);
        }
        return restore_pivoted(ns);
    }
    sys::mount::enter_new_private().map_err(failed("unshare".into()))?;
    // The copy holds cryo's mounts of now: those the dumped namespace did not have go, the
    // latest first (one mounted on another before it).
    let text = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(failed("read the mountinfo copied".into()))?;
    // Proc and sysfs mounts are made by cryo later (mount_procs_and_sysfs), once every
    // process made its files (through cryo's /proc, which such a mount may cover).
    let later = later_keys(ns);
    let mut wanted = without_keys(&ns.table, &later);
    // Mounts of its own already there: a namespace made inside its parent's made one shares
    // the parent's own mounts (the same superblocks, as the dumped ones did).
    let parent_own: Vec<&str> = parent
        .and_then(|p| p.mnt.as_ref())
        .map(|p| p.mounts.iter().map(|m| m.key.as_str()).collect())
        .unwrap_or_default();
    let made = reshape_copy(parse(&text), &mut wanted, ns, &parent_own, "cryo's")?;
    let text = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(failed("read the mountinfo made".into()))?;
    // A namespace made inside this one shares its proc mounts, which are not there yet.
    let inner_later: Vec<&str> = parent_own
        .iter()
        .copied()
        .filter(|k| ns.mounts.iter().any(|m| made_by_cryo(m) && m.key == *k))
        .collect();
    compare_table(
        &text,
        &without_keys(&ns.table, &[later, inner_later].concat()),
        true,
    )
    .map_err(|detail| ChildError::Mounts { detail })?;
    set_propagation_by_maker(ns, &made)
}

/// Makes the mounts of `ns` its restoring process makes (not those cryo makes later) below
/// `base` ("/", or "." for the tree of a pivoted one, built in the working directory, whose
/// root mount, made already, is `root`), in [`make_order`]. One on a mount made before is
/// made through an O_PATH fd on that mount, held from when it was made, at its place below
/// it (/proc/self/fd/N/PLACE): a mount over its path since does not hide it; a bind of a part
/// of a tmpfs of its own from a copy of that mount alone. The others by their paths below
/// `base`. `found(m)`: one of its parent's namespace already there, not made (its fd taken
/// through its path). Then every mount made through its parent is checked to be on it.
fn make_own_mounts(
    ns: &MountNamespace,
    base: &Path,
    root: Option<OwnedFd>,
    found: &mut dyn FnMut(&NamespaceMount) -> bool,
) -> Result<Made, ChildError> {
    use std::os::fd::AsRawFd;
    let failed = |what: String| ChildError::sys_on(ChildStep::MountNamespace, what);
    let order = make_order(&ns.mounts).map_err(|i| ChildError::Mounts {
        detail: format!(
            "{}: no order of making the mounts gives it",
            ns.mounts[i].point
        ),
    })?;
    let open = |path: &Path| {
        nix::fcntl::open(
            path,
            nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(io::Error::from)
    };
    let mut made: Vec<Option<(OwnedFd, u32)>> = ns.mounts.iter().map(|_| None).collect();
    if let Some(fd) = root {
        let id = sys::mount::mount_id(fd.as_fd()).map_err(failed("its root's mount id".into()))?;
        made[0] = Some((fd, id));
    }
    let below = |path: &str| base.join(path.trim_start_matches('/'));
    // Made through its parent: (its index, its parent's).
    let mut placed = Vec::new();
    for i in order.into_iter().filter(|&i| !made_by_cryo(&ns.mounts[i])) {
        if made[i].is_some() {
            continue;
        }
        let m = &ns.mounts[i];
        let through = |index: u32| {
            let j = index.checked_sub(1)? as usize;
            let (fd, _) = made.get(j)?.as_ref()?;
            Some((j, format!("/proc/self/fd/{}", fd.as_raw_fd())))
        };
        if let Some((p, _)) = through(m.parent) {
            placed.push((i, p));
        }
        // The path to its place: below its parent's fd; on its parent's root (which that fd
        // reaches, not what is on it), the place of the lowest of the mounts it is stacked on,
        // where the topmost is reached: the one made last.
        let mut k = i;
        let point = loop {
            let at = &ns.mounts[k];
            match through(at.parent) {
                Some((p, fd)) => match place_below(&ns.mounts[p].point, &at.point) {
                    Some("") => k = p,
                    place => break PathBuf::from(fd).join(place.unwrap_or_default()),
                },
                None => break below(&at.point),
            }
        };
        if !found(m) {
            // A copy of the tmpfs's mount alone, where the part's path leads to it.
            let alone = through(m.bind_first)
                .map(|(f, _)| {
                    let (fd, _) = made[f].as_ref().expect("through found it");
                    let copy = sys::mount::clone_mount_alone(fd.as_fd())?;
                    let base = ns.mounts[f].point.trim_end_matches('/');
                    let part = m.bind_source.strip_prefix(base).unwrap_or_default();
                    let source = PathBuf::from(format!("/proc/self/fd/{}", copy.as_raw_fd()))
                        .join(part.trim_start_matches('/'));
                    Ok::<_, io::Error>((copy, source))
                })
                .transpose()
                .map_err(failed(format!(
                    "copy the mount {} binds a part of",
                    m.point
                )))?;
            make_mount(
                m,
                base,
                &point,
                alone.as_ref().map(|(_, source)| source.as_path()),
            )?;
        }
        let fd = open(&point).map_err(failed(format!("open the mount on {}", m.point)))?;
        let id = sys::mount::mount_id(fd.as_fd())
            .map_err(failed(format!("the mount id of {}", m.point)))?;
        made[i] = Some((fd, id));
    }
    if placed.is_empty() {
        return Ok(made);
    }
    let text = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(failed("read the mountinfo made".into()))?;
    let table = parse(&text);
    for (i, p) in placed {
        let id_of = |j: usize| made[j].as_ref().map(|(_, id)| *id);
        let on = table
            .iter()
            .find(|t| Some(t.id) == id_of(i))
            .map(|t| t.parent);
        if on.is_none() || on != id_of(p) {
            return Err(ChildError::Mounts {
                detail: format!(
                    "{} came out on another mount than the one on {} (mount {:?}, not {:?})",
                    ns.mounts[i].point,
                    ns.mounts[p].point,
                    on,
                    id_of(p)
                ),
            });
        }
    }
    Ok(made)
}

/// An O_PATH fd on each mount of a namespace's `mounts` its maker made or found, and its id.
type Made = Vec<Option<(OwnedFd, u32)>>;

/// In the process that made `ns`, its table checked: the propagation of its mounts, when it
/// is the one to set it (propagation::by_maker), through `made`.
fn set_propagation_by_maker(ns: &MountNamespace, made: &Made) -> Result<(), ChildError> {
    if !propagation::by_maker(ns) {
        return Ok(());
    }
    let table = || std::fs::read_to_string("/proc/self/mountinfo").map(|t| parse(&t));
    propagation::set_by_maker(nix::unistd::getpid(), ns, made, table).map_err(|e| {
        ChildError::Mounts {
            detail: e.to_string(),
        }
    })
}

/// Makes mount `m` (a tmpfs, filled, or a bind) of a namespace being made again at `point`:
/// a bind's source within the namespace is taken below `base` ("/", or "." for the tree of a
/// pivoted one), a bind of cryo's path as it is; a bind from `alone` (a path in a detached
/// copy of the mount it binds a part of) is copied from there and attached. Then its
/// per-mount flags.
fn make_mount(
    m: &NamespaceMount,
    base: &Path,
    point: &Path,
    alone: Option<&Path>,
) -> Result<(), ChildError> {
    let failed = |what: String| ChildError::sys_on(ChildStep::MountNamespace, what);
    // Ids in options as the process names them (in a user namespace of its own).
    let options = |opts: &str| {
        own_ids()
            .mount_options(opts)
            .map_err(failed(format!("the ids of the options of {}", m.point)))
    };
    let below = |path: &str| base.join(path.trim_start_matches('/'));
    let flags = flags_to_make(&m.point, &m.options)?;
    if m.devpts {
        sys::mount::new_filesystem(
            "devpts",
            &m.source,
            point,
            flags,
            &options(&m.devpts_options)?,
        )
        .map_err(failed(format!("mount a devpts on {}", m.point)))?;
    } else if let Some(formats) = &m.binfmt_misc {
        sys::mount::new_filesystem("binfmt_misc", &m.source, point, flags, "")
            .map_err(failed(format!("mount a binfmt_misc on {}", m.point)))?;
        super::binfmt_misc::restore(point, formats).map_err(|e| ChildError::Mounts {
            detail: format!("the binfmt_misc on {}: {e}", m.point),
        })?;
    } else if m.tmpfs {
        let tmpfs_options = options(&m.tmpfs_options)?;
        sys::mount::new_filesystem("tmpfs", &m.source, point, flags, &tmpfs_options)
            .map_err(failed(format!("mount a tmpfs on {}", m.point)))?;
        fill(point, &m.files).map_err(|(path, e)| failed(format!("make {path}"))(e))?;
        if m.tmpfs_read_only {
            sys::mount::tmpfs_read_only(point, flags, &tmpfs_options)
                .map_err(failed(format!("make the tmpfs on {} read-only", m.point)))?;
        }
    } else {
        let source = if let Some(alone) = alone {
            alone.to_path_buf()
        } else if m.bind_in_namespace {
            below(&m.bind_source)
        } else {
            PathBuf::from(&m.bind_source)
        };
        let removed = m
            .bind_removed
            .as_ref()
            .map(|entry| {
                crate::task::userns::make_for(entry.uid, entry.gid, || make_removed(&source, entry))
            })
            .transpose()
            .map_err(failed(format!("make {} again for its bind", m.bind_source)))?;
        // A detached copy's part cannot be bound (mount(2) takes only the caller's
        // namespace's mounts): copied (open_tree) and attached.
        let bound = match alone {
            Some(_) => sys::mount::clone_tree(&source)
                .and_then(|copy| sys::mount::attach(copy.as_fd(), point)),
            None => sys::mount::bind(&source, point),
        }
        .map_err(failed(format!("bind {} on {}", m.bind_source, m.point)));
        // Its holder's descriptions are opened through the object made now, where they
        // were opened: taken there before it is removed again.
        let held = match bound {
            Ok(()) if removed.is_some() => hold_removed(m, base, point),
            _ => Ok(()),
        };
        if let Some(removed) = removed {
            removed
                .finish()
                .map_err(failed(format!("remove {} once bound", m.bind_source)))?;
        }
        bound?;
        held?;
    }
    sys::mount::set_mount_flags(point, flags)
        .map_err(failed(format!("set the flags of {}", m.point)))
}

/// For bind `m` of a removed object made again and bound on `point`: an O_PATH fd taken at
/// each path in the namespace (below `base`) where the process holds it
/// (NamespaceMount.removed_held_at), checked to be the inode the bind shows, kept for the
/// descriptions opened through it (files/regular.rs).
fn hold_removed(m: &NamespaceMount, base: &Path, point: &Path) -> Result<(), ChildError> {
    let failed = |what: String| ChildError::sys_on(ChildStep::MountNamespace, what);
    let shown = nix::sys::stat::stat(point)
        .map_err(|e| failed(format!("stat the bind on {}", m.point))(e.into()))?;
    for path in &m.removed_held_at {
        let at = base.join(path.trim_start_matches('/'));
        let fd = nix::fcntl::open(
            &at,
            nix::fcntl::OFlag::O_PATH
                | nix::fcntl::OFlag::O_NOFOLLOW
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| {
            failed(format!(
                "open {path}, made again for the bind on {}",
                m.point
            ))(e.into())
        })?;
        let held =
            nix::sys::stat::fstat(&fd).map_err(|e| failed(format!("stat {path}"))(e.into()))?;
        if (held.st_dev, held.st_ino) != (shown.st_dev, shown.st_ino) {
            return Err(ChildError::Mounts {
                detail: format!(
                    "{path}, where the process held the removed object the bind on {} shows, \
                     leads to another file than the one made again for it",
                    m.point
                ),
            });
        }
        crate::files::hold_removed_bound(path, fd)
            .map_err(failed(format!("hold {path} for the descriptions of it")))?;
    }
    Ok(())
}

/// A file or directory removed at dump made again at its path for a bind of it.
struct Removed<'a> {
    path: &'a Path,
    dir: bool,
    /// Its directory's access and modification times before it was made.
    times: (nix::sys::time::TimeSpec, nix::sys::time::TimeSpec),
}

impl Removed<'_> {
    /// Removes it again, and puts its directory's times back.
    fn finish(self) -> io::Result<()> {
        if self.dir {
            std::fs::remove_dir(self.path)?;
        } else {
            std::fs::remove_file(self.path)?;
        }
        let parent = self.path.parent().unwrap_or(Path::new("/"));
        nix::sys::stat::utimensat(
            nix::fcntl::AT_FDCWD,
            parent,
            &self.times.0,
            &self.times.1,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )?;
        Ok(())
    }
}

/// Makes `entry` (NamespaceMount.bind_removed) at `path`, with its attributes and contents.
fn make_removed<'a>(path: &'a Path, entry: &TreeEntry) -> io::Result<Removed<'a>> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let parent = path
        .parent()
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
    let (atime, mtime) = crate::files::times_ns(&std::fs::metadata(parent)?);
    let dir = match entry.mode & libc::S_IFMT {
        libc::S_IFDIR => true,
        libc::S_IFREG => false,
        _ => return Err(io::Error::from_raw_os_error(libc::EINVAL)),
    };
    // Made here (never over anything: a path of cryo's namespace may be taken since), so
    // removed again on any failure from here on.
    let opened = if dir {
        std::fs::DirBuilder::new().mode(0o700).create(path)?;
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
            .open(path)
    } else {
        Ok(std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)?)
    };
    let made = Removed {
        path,
        dir,
        times: (
            crate::files::timespec_of_ns(atime),
            crate::files::timespec_of_ns(mtime),
        ),
    };
    // Contents, then owner, mode and times (set last: the others move the change time only).
    let filled = opened.and_then(|mut file| {
        if !dir {
            std::io::Write::write_all(&mut file, &entry.data)?;
        }
        let fd = std::os::fd::OwnedFd::from(file);
        let (mode, uid, gid) = (entry.mode, entry.uid, entry.gid);
        crate::files::set_owner_mode_times(&fd, mode, uid, gid, entry.atime_ns, entry.mtime_ns)
            .map_err(io::Error::from)
    });
    match filled {
        Ok(()) => Ok(made),
        Err(e) => {
            let _ = made.finish();
            Err(e)
        }
    }
}

/// [`restore_in_child`] for a namespace whose root is a mount of its own (pivot_root): a
/// private copy of cryo's first, its root mount (the first, a tmpfs or a bind of cryo's path)
/// attached on top of / and made the working directory, every other mount made below it, then
/// pivot_root(".", ".") and the old root detached. Cryo's /proc is bound on /proc meanwhile
/// (this process still reads its own there while it makes its files); cryo replaces it with
/// the namespace's own (mount_procs_and_sysfs).
fn restore_pivoted(ns: &MountNamespace) -> Result<(), ChildError> {
    let failed = |what: String| ChildError::sys_on(ChildStep::MountNamespace, what);
    let Some((root, _)) = ns.mounts.split_first() else {
        return Err(ChildError::Mounts {
            detail: "a pivoted namespace without its root mount".into(),
        });
    };
    sys::mount::enter_new_private().map_err(failed("unshare".into()))?;
    let ids = own_ids();
    let root_options = ids
        .mount_options(&root.tmpfs_options)
        .map_err(failed("the ids of its root's options".into()))?;
    let made = if root.tmpfs {
        sys::mount::detached("tmpfs", &root.source, None, &root_options)
    } else {
        sys::mount::clone_tree(Path::new(&root.bind_source))
    }
    .map_err(failed("make its root mount".into()))?;
    sys::mount::attach(made.as_fd(), Path::new("/"))
        .and_then(|()| Ok(nix::unistd::fchdir(&made)?))
        .map_err(failed("enter its root mount".into()))?;
    let here = Path::new(".");
    let flags = flags_to_make(&root.point, &root.options)?;
    if root.tmpfs {
        fill(here, &root.files).map_err(|(path, e)| failed(format!("make {path}"))(e))?;
        // A /proc directory for cryo's /proc, removed late (end_cryos_proc).
        if proc_dir_made(ns) {
            // Owned by its root (in a user namespace of its own: made as that root).
            let (uid, gid) = crate::task::userns::root_outside(crate::task::userns::own_ns());
            crate::task::userns::make_for(uid, gid, || {
                nix::unistd::mkdir("proc", nix::sys::stat::Mode::from_bits_truncate(0o555))
            })
            .map_err(|e| failed("make /proc for cryo's".into())(e.into()))?;
        }
        if root.tmpfs_read_only {
            sys::mount::tmpfs_read_only(here, flags, &root_options)
                .map_err(failed("make its root tmpfs read-only".into()))?;
        }
    }
    sys::mount::set_mount_flags(here, flags).map_err(failed("set the flags of its root".into()))?;
    let root_fd = nix::fcntl::open(
        here,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| failed("open its root mount".into())(e.into()))?;
    let made = make_own_mounts(ns, here, Some(root_fd), &mut |_| false)?;
    // In a user namespace of its own cryo's /proc comes with its submounts, locked to it.
    let bind = match ids.0 {
        None => sys::mount::bind,
        Some(_) => sys::mount::bind_tree,
    };
    bind(Path::new("/proc"), Path::new("./proc"))
        .map_err(failed("bind cryo's /proc for the restore".into()))?;
    sys::mount::pivot_here().map_err(failed("pivot_root into its root".into()))?;
    compare_without_cryos_proc(ns)?;
    set_propagation_by_maker(ns, &made)
}

/// The mountinfo of the calling process's namespace, a pivoted one made again, without
/// cryo's /proc bound on its /proc meanwhile, compared with `ns`'s table without what cryo
/// makes later.
fn compare_without_cryos_proc(ns: &MountNamespace) -> Result<(), ChildError> {
    let failed = |what: String| ChildError::sys_on(ChildStep::MountNamespace, what);
    let cryos_proc = std::fs::File::open("/proc")
        .and_then(|f| sys::mount::mount_id(f.as_fd()))
        .map_err(failed("find cryo's /proc".into()))?
        .to_string();
    let text = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(failed("read the mountinfo made".into()))?;
    let text = without_tree_of(&text, &cryos_proc);
    compare_table(&text, &without_keys(&ns.table, &later_keys(ns)), true)
        .map_err(|detail| ChildError::Mounts { detail })
}

/// Mountinfo `text` without mount `id` and the mounts below it (cryo's /proc bound with its
/// submounts, in a user namespace: listed after it).
fn without_tree_of(text: &str, id: &str) -> String {
    let mut tree = vec![id.to_owned()];
    text.lines()
        .filter(|l| {
            let mut ids = l.split(' ');
            let (id, parent) = (ids.next().unwrap_or(""), ids.next().unwrap_or(""));
            if tree.iter().any(|t| t == id || t == parent) {
                tree.push(id.to_owned());
                return false;
            }
            true
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

/// The per-mount flags of options `options` of the mount on `point`, for a restore child to
/// set; an option it does not make fails it naming the mount.
fn flags_to_make(point: &str, options: &str) -> Result<nix::mount::MsFlags, ChildError> {
    mount_flags(options).map_err(|opt| ChildError::Mounts {
        detail: format!("{point}: option {opt:?}"),
    })
}

/// Whether the restore of pivoted `ns` makes a /proc directory in its root for cryo's /proc
/// (bound there while the processes make their files): a tmpfs root without one, the
/// namespace without a proc on /proc. Removed again by [`end_cryos_proc`].
fn proc_dir_made(ns: &MountNamespace) -> bool {
    let Some(root) = ns.mounts.first().filter(|_| ns.pivoted) else {
        return false;
    };
    root.tmpfs
        && !root.files.iter().any(|e| e.path == "proc")
        && !ns.mounts.iter().any(|m| m.proc && m.point == "/proc")
}

/// In a thread joined to pivoted namespace `ns` made again, once its processes made their
/// files: cryo's /proc unmounted from its /proc; the directory made for it removed (its root
/// writable meanwhile), the root's times put back (the removal moved them), its flags as
/// dumped.
fn end_cryos_proc(ns: &MountNamespace) -> std::io::Result<()> {
    let root = Path::new("/");
    sys::mount::detach(Path::new("/proc"))?;
    let Some(top) = ns.mounts.first().filter(|_| proc_dir_made(ns)) else {
        return Ok(());
    };
    let flags = mount_flags(&top.options).map_err(|opt| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, format!("option {opt:?}"))
    })?;
    let writable = flags - nix::mount::MsFlags::MS_RDONLY;
    sys::mount::set_mount_flags(root, writable)?;
    if top.tmpfs_read_only {
        sys::mount::remount_tmpfs(root, writable, &top.tmpfs_options)?;
    }
    // Gone already where a namespace made inside this one shares its root.
    match std::fs::remove_dir("/proc") {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        other => other?,
    }
    if let Some(e) = top.files.iter().find(|e| e.path.is_empty()) {
        nix::sys::stat::utimensat(
            nix::fcntl::AT_FDCWD,
            root,
            &crate::files::timespec_of_ns(e.atime_ns),
            &crate::files::timespec_of_ns(e.mtime_ns),
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )?;
    }
    if top.tmpfs_read_only {
        sys::mount::tmpfs_read_only(root, flags, &top.tmpfs_options)?;
    }
    sys::mount::set_mount_flags(root, flags)
}

/// The keys of the mounts of `ns` cryo makes once every process made its files.
fn later_keys(ns: &MountNamespace) -> Vec<&str> {
    ns.mounts
        .iter()
        .filter(|m| made_by_cryo(m))
        .map(|m| m.key.as_str())
        .collect()
}

/// [`restore_in_child`] for a namespace made inside its parent's pivoted one, sharing its
/// root (zdtm's ns flavour: a test that unshares in its container): a copy of the parent's
/// as made so far (cryo's /proc on its /proc kept, replaced later as the parent's is), the
/// mounts it lacks unmounted, the latest first, its own made below / (its binds of cryo's
/// paths were made binds of their place below the shared root at dump:
/// [`bind_below_shared_roots`]).
fn restore_nested_pivoted(ns: &MountNamespace, parent: &MountNamespace) -> Result<(), ChildError> {
    let failed = |what: String| ChildError::sys_on(ChildStep::MountNamespace, what);
    sys::mount::enter_new_private().map_err(failed("unshare".into()))?;
    let cryos_proc = std::fs::File::open("/proc")
        .and_then(|f| sys::mount::mount_id(f.as_fd()))
        .map_err(failed("find cryo's /proc".into()))?;
    let text = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(failed("read the mountinfo copied".into()))?;
    let mut wanted = without_keys(&ns.table, &later_keys(ns));
    let mut parent_own: Vec<&str> = parent.mounts.iter().map(|m| m.key.as_str()).collect();
    // The shared root remounted with other flags: set so on the copy, then it is its own.
    let text = match (ns.mounts.first(), parent.mounts.first()) {
        (Some(root), Some(theirs)) if root.key != theirs.key => {
            let flags = flags_to_make(&root.point, &root.options)?;
            sys::mount::set_mount_flags(Path::new("/"), flags)
                .map_err(failed("set the flags of its root (remounted)".into()))?;
            parent_own.push(root.key.as_str());
            std::fs::read_to_string("/proc/self/mountinfo")
                .map_err(failed("read the mountinfo copied".into()))?
        }
        _ => text,
    };
    let copied = parse(&without_tree_of(&text, &cryos_proc.to_string()));
    let made = reshape_copy(copied, &mut wanted, ns, &parent_own, "its parent's")?;
    compare_without_cryos_proc(ns)?;
    set_propagation_by_maker(ns, &made)
}

/// In a namespace just copied (unshare) from cryo's or its parent's, whose mounts are
/// `copied`: the ones not among the `wanted` keys unmounted, the latest first (one mounted on
/// another before it), then `ns`'s own made but those of its parent's (`parent_own`) found
/// there. `whose`: where the copy came from, for messages. `wanted` keeps the keys not found.
fn reshape_copy(
    copied: Vec<Mount>,
    wanted: &mut Vec<String>,
    ns: &MountNamespace,
    parent_own: &[&str],
    whose: &str,
) -> Result<Made, ChildError> {
    let failed = |what: String| ChildError::sys_on(ChildStep::MountNamespace, what);
    let mut there = Vec::new();
    let mut excess = Vec::new();
    let mut remount = Vec::new();
    for m in copied {
        let key = m.key();
        match wanted.iter().position(|k| *k == key) {
            Some(i) => {
                wanted.swap_remove(i);
                there.push(key);
            }
            None => {
                // One of cryo's the namespace has with other per-mount flags.
                let r = ns
                    .remounts
                    .iter()
                    .find(|r| r.ours_key == key && wanted.contains(&r.key) && !remount.contains(r));
                match r {
                    Some(r) => {
                        let i = wanted.iter().position(|k| *k == r.key).expect("contained");
                        wanted.swap_remove(i);
                        there.push(r.key.clone());
                        remount.push(r);
                    }
                    None => excess.push(m),
                }
            }
        }
    }
    for m in excess.iter().rev() {
        sys::mount::detach(Path::new(&unescape(&m.point))).map_err(failed(format!(
            "unmount {} ({whose}, not the namespace's)",
            m.describe()
        )))?;
    }
    // Before its own mounts, which may cover them.
    for r in &remount {
        let flags = flags_to_make(&r.point, &r.options)?;
        sys::mount::set_mount_flags(Path::new(&r.point), flags)
            .map_err(failed(format!("set the flags of {} (remounted)", r.point)))?;
    }
    make_own_mounts(ns, Path::new("/"), None, &mut |m| {
        if parent_own.contains(&m.key.as_str()) {
            if let Some(i) = there.iter().position(|k| *k == m.key) {
                there.swap_remove(i);
                return true;
            }
        }
        false
    })
}

/// Path `source` of cryo's namespace as a pivoted namespace whose mounts are `mounts` shows
/// it: below the directory its root mount binds (None: elsewhere, or its root is a tmpfs).
fn below_root(mounts: &[NamespaceMount], source: &str) -> Option<String> {
    let root = mounts
        .first()
        .filter(|r| !r.tmpfs && !r.bind_source.is_empty())?;
    let base = root.bind_source.trim_end_matches('/');
    match source.strip_prefix(base)? {
        "" => Some("/".into()),
        rest if rest.starts_with('/') => Some(rest.to_string()),
        _ => None,
    }
}

/// The place of mount point `point` below its parent's `parent` (both as mountinfo shows
/// them, unescaped): "" for a mount on its parent's root, else the path from there without a
/// leading "/"; None when it is not below it.
fn place_below<'a>(parent: &str, point: &'a str) -> Option<&'a str> {
    match point.strip_prefix(parent.trim_end_matches('/'))? {
        "" => Some(""),
        rest => rest.strip_prefix('/'),
    }
}

/// The order the mounts of a namespace (`mounts`, NamespaceMount.parent and .bind_first set)
/// are made in at restore: first those its process makes, each after its parent, after the
/// tmpfs it binds a part of and after the mounts on the same parent whose places are below
/// its own (made after it, they would be reached through it), otherwise by index; then those
/// cryo makes, by index. Err: the index of a mount no order makes.
fn make_order(mounts: &[NamespaceMount]) -> Result<Vec<usize>, usize> {
    let by_process: Vec<usize> = (0..mounts.len())
        .filter(|&i| !made_by_cryo(&mounts[i]))
        .collect();
    let place = |i: usize| {
        let p = mounts[i].parent.checked_sub(1)? as usize;
        place_below(&mounts.get(p)?.point, &mounts[i].point)
    };
    let waits_for = |i: usize, j: usize| {
        let (m, other) = (&mounts[i], &mounts[j]);
        if m.parent as usize == j + 1 || m.bind_first as usize == j + 1 {
            return true;
        }
        m.parent != 0
            && other.parent == m.parent
            && match (place(i), place(j)) {
                (Some(a), Some(b)) => !a.is_empty() && b.starts_with(&format!("{a}/")),
                _ => false,
            }
    };
    let mut done = vec![false; mounts.len()];
    let mut out = Vec::with_capacity(mounts.len());
    while out.len() < by_process.len() {
        let next = by_process.iter().copied().find(|&i| {
            !done[i]
                && by_process
                    .iter()
                    .all(|&j| done[j] || j == i || !waits_for(i, j))
        });
        let Some(i) = next else {
            return Err(by_process
                .iter()
                .copied()
                .find(|&i| !done[i])
                .unwrap_or_default());
        };
        done[i] = true;
        out.push(i);
    }
    out.extend((0..mounts.len()).filter(|&i| made_by_cryo(&mounts[i])));
    Ok(out)
}

/// Whether mount `m` is made by cryo once every process made its files (a proc or a sysfs:
/// they may cover cryo's /proc, through which the processes open theirs), not by the process
/// that makes the namespace.
fn made_by_cryo(m: &NamespaceMount) -> bool {
    m.proc || m.sysfs || m.mqueue || m.late
}

/// `table` without one occurrence of each key of `keys`.
fn without_keys(table: &[String], keys: &[&str]) -> Vec<String> {
    let mut out = table.to_vec();
    for k in keys {
        if let Some(i) = out.iter().position(|t| t == k) {
            out.remove(i);
        }
    }
    out
}

/// Compares mountinfo `text` with the keys `wanted` (sorted): the first difference, or (with
/// `private`: its propagation is not set yet) a mount that is not private.
fn compare_table(text: &str, wanted: &[String], private: bool) -> Result<(), String> {
    let made = parse(text);
    let keys = table_keys(&made);
    if keys != wanted {
        let only = |a: &[String], b: &[String], whose: &str| {
            a.iter()
                .find(|k| !b.contains(k))
                .map(|k| format!("{k} is {whose} only"))
        };
        return Err(only(wanted, &keys, "the dumped namespace's")
            .or_else(|| only(&keys, wanted, "the restored namespace's"))
            .unwrap_or_else(|| "a mount is there more times in one table".into()));
    }
    if let Some(m) = made.iter().find(|m| private && !m.optional.is_empty()) {
        return Err(format!(
            "{} came out {:?}, not private",
            m.describe(),
            m.optional
        ));
    }
    Ok(())
}

/// Once every process of the restore has made its files: the proc and sysfs mounts of each
/// mount namespace made again, by a thread of cryo that joins it (through the topmost process
/// of the dump in it, `tasks` and `pids`: the plan's tasks and their pids), each showing that
/// process's PID or network namespace, or cryo's, as at dump; then the namespace's whole
/// table compared with the dumped one.
pub(crate) fn mount_procs_and_sysfs(
    tasks: &[crate::restore::load::TaskImage],
    pids: &[Pid],
) -> Result<(), MountNsError> {
    for (pid, ns) in made_namespaces(tasks, pids) {
        if !ns.pivoted && !ns.mounts.iter().any(made_by_cryo) {
            continue;
        }
        let failed = |what: String| {
            move |errno| MountNsError::Read {
                pid,
                inode: ns.inode,
                what,
                errno,
            }
        };
        let dir = proc::dir(pid);
        let mnt = std::fs::File::open(dir.join("ns/mnt"))
            .map_err(failed("its mount namespace".into()))?;
        // The namespace (of kind `kind`) of the restored process, or cryo's.
        let ns_of = |own: bool, kind: &str| {
            if own {
                dir.join("ns").join(kind)
            } else {
                PathBuf::from("/proc/self/ns").join(kind)
            }
        };
        if ns.pivoted {
            // Cryo's /proc, bound there while the processes made their files.
            crate::sys::ns::run_in(&mnt, nix::sched::CloneFlags::CLONE_NEWNS, || {
                end_cryos_proc(ns)
            })
            .and_then(|r| r)
            .map_err(failed("unmount cryo's /proc from it".into()))?;
        }
        for m in ns.mounts.iter().filter(|m| made_by_cryo(m)) {
            let made = detached_by_cryo(m, &mnt, &ns_of).map_err(|(what, e)| failed(what)(e))?;
            let flags = mount_flags(&m.options).map_err(|opt| MountNsError::Refused {
                pid,
                inode: ns.inode,
                mount: mount_name(m),
                detail: format!("option {opt:?} is not made again"),
            })?;
            let point = Path::new(&m.point);
            crate::sys::ns::run_in(&mnt, nix::sched::CloneFlags::CLONE_NEWNS, || {
                sys::mount::attach(made.as_fd(), point)?;
                sys::mount::set_mount_flags(point, flags)
            })
            .and_then(|r| r)
            .map_err(failed(format!("attach the {}", mount_name(m))))?;
        }
        // Its whole table: the process may be chrooted by now.
        let text = namespace_mountinfo(pid).map_err(failed("its mountinfo".into()))?;
        // Its propagation set already where its maker set it.
        let private = !propagation::by_maker(ns);
        compare_table(&text, &ns.table, private).map_err(|detail| MountNsError::Refused {
            pid,
            inode: ns.inode,
            mount: "its mount table".into(),
            detail: format!("made otherwise than dumped: {detail}"),
        })?;
    }
    Ok(())
}

/// A mount of a namespace made again that cryo makes itself (`made_by_cryo`), detached, for
/// the namespace `mnt`: a late bind (cloned from its source; in the namespace when the source
/// is one of its own), or a proc, mqueue or sysfs showing the namespace `ns_of(own, kind)`
/// names. On failure: what failed, and why.
fn detached_by_cryo(
    m: &NamespaceMount,
    mnt: &std::fs::File,
    ns_of: &dyn Fn(bool, &str) -> PathBuf,
) -> Result<OwnedFd, (String, std::io::Error)> {
    use nix::sched::CloneFlags;
    if m.late {
        let what = format!("bind {} on {}", m.bind_source, m.point);
        let source = Path::new(&m.bind_source);
        return if m.bind_in_namespace {
            crate::sys::ns::run_in(mnt, CloneFlags::CLONE_NEWNS, || {
                sys::mount::clone_tree(source)
            })
            .and_then(|r| r)
        } else {
            sys::mount::clone_tree(source)
        }
        .map_err(|e| (what, e));
    }
    let (fstype, shows, kind) = if m.proc {
        (
            "proc",
            ns_of(m.proc_own_pidns, "pid"),
            CloneFlags::CLONE_NEWPID,
        )
    } else if m.mqueue {
        (
            "mqueue",
            ns_of(m.mqueue_own_ipcns, "ipc"),
            CloneFlags::CLONE_NEWIPC,
        )
    } else {
        (
            "sysfs",
            ns_of(m.sysfs_own_netns, "net"),
            CloneFlags::CLONE_NEWNET,
        )
    };
    let what = format!("mount a {fstype} on {} ({})", m.point, shows.display());
    std::fs::File::open(&shows)
        .and_then(|shows| {
            if m.proc {
                // A proc is told its PID namespace (linux 6.15's pidns option).
                let pidns = Some(shows.as_fd());
                sys::mount::detached("proc", &m.source, pidns, &m.proc_options)
            } else {
                detached_in(&shows, kind, fstype, &m.source)
            }
        })
        .map_err(|e| (what, e))
}

/// Once every mount of every mount namespace of the restore is made: the propagation of each
/// as dumped, set by cryo (`tasks` and `pids`: the plan's tasks and their pids; each namespace
/// through the topmost process in it).
pub(crate) fn set_propagation(
    tasks: &[crate::restore::load::TaskImage],
    pids: &[Pid],
) -> Result<(), MountNsError> {
    let made: Vec<(Pid, &MountNamespace)> = made_namespaces(tasks, pids).collect();
    propagation::restore(&made)
}

/// The mount namespace a process makes at restore: its own, when its parent (`parent`; None
/// for a root) is in another.
fn made_by<'a>(core: &'a TaskCore, parent: Option<&TaskCore>) -> Option<&'a MountNamespace> {
    let ns = core.mnt.as_ref()?;
    let parent_ns = parent.and_then(|p| p.mnt.as_ref());
    (parent_ns.map(|n| n.inode) != Some(ns.inode)).then_some(ns)
}

/// For the process at `i` of the plan's `tasks`: how many generations above it (2 or more) is
/// the ancestor whose mount namespace it is in, not its parent's (a child forked before its
/// parent made a namespace of its own, zdtm tempfs_subns), if it is so: it joins that one
/// ([`join_ancestors`]) instead of making one.
pub(crate) fn joined_ancestor(
    tasks: &[crate::restore::load::TaskImage],
    i: usize,
) -> Option<usize> {
    // In cryo's namespace below a parent in another: refused at dump (check_tree).
    let ns = tasks[i].core.mnt.as_ref()?.inode;
    crate::task::namespaces::task_ancestor_in(
        tasks,
        crate::restore::load::forked_by(&tasks[i].entry),
        |core| core.mnt.as_ref().map(|m| m.inode),
        ns,
    )
    .filter(|&generations| generations > 1)
}

/// Joins (setns) the mount namespace of the calling process's ancestor `generations` up,
/// found by the parent pids cryo's /proc shows (each made before its children, and running).
/// Its root and working directory become the namespace's root; they are set later.
fn join_ancestors(generations: usize) -> io::Result<()> {
    let handle = crate::proc::ancestors_namespace(generations, "mnt")?;
    nix::sched::setns(handle, nix::sched::CloneFlags::CLONE_NEWNS)?;
    Ok(())
}

/// Refuses a process in a user namespace of its own (`in_user_ns`) that is back in the mount
/// namespace of an ancestor other than its parent (`tasks`: pid, parent pid, mount namespace
/// inode, None for cryo's): the restore joins it through /proc/ANCESTOR/ns/mnt, which a
/// process inside a user namespace may not reach once that ancestor is whole.
pub(crate) fn refuse_rejoined_in_user_namespace(
    tasks: &[(i32, i32, Option<u64>)],
    in_user_ns: impl Fn(i32) -> bool,
) -> Result<(), super::namespaces::NamespaceError> {
    let ns_of = |pid: i32| tasks.iter().find(|t| t.0 == pid).map(|t| t.2);
    let parent_of = |pid: i32| tasks.iter().find(|t| t.0 == pid).map(|t| t.1);
    for &(pid, ppid, ns) in tasks {
        let Some(ns) = ns else { continue };
        if !in_user_ns(pid) || ns_of(ppid) == Some(Some(ns)) {
            continue;
        }
        if let Some(generations) = super::namespaces::ancestor_in(ppid, ns_of, parent_of, ns) {
            return Err(super::namespaces::NamespaceError::NamespaceTree {
                pid: Pid::from_raw(pid),
                detail: format!(
                    "is back in the mount namespace mnt:[{ns}] of its ancestor {generations} \
                     generations up, below a parent in another, inside a user namespace: not \
                     made again (that ancestor is out of its reach at restore)"
                ),
            });
        }
    }
    Ok(())
}

/// Each mount namespace the restore made, with the pid of the process that made it (`tasks`
/// and `pids`: the plan's tasks and their pids).
fn made_namespaces<'a>(
    tasks: &'a [crate::restore::load::TaskImage],
    pids: &'a [Pid],
) -> impl Iterator<Item = (Pid, &'a MountNamespace)> + 'a {
    tasks
        .iter()
        .zip(pids)
        .enumerate()
        .filter(|&(i, _)| joined_ancestor(tasks, i).is_none())
        .filter_map(|(_, (task, &pid))| Some((pid, made_by(&task.core, task.parent_core(tasks))?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(point: &str, parent: u32) -> NamespaceMount {
        NamespaceMount {
            point: point.into(),
            parent,
            tmpfs: true,
            ..Default::default()
        }
    }

    #[test]
    fn a_place_is_the_path_below_the_parents_point() {
        assert_eq!(place_below("/", "/a/b"), Some("a/b"));
        assert_eq!(place_below("/a", "/a"), Some(""));
        assert_eq!(place_below("/a", "/a/c"), Some("c"));
        assert_eq!(place_below("/a", "/ab"), None);
        assert_eq!(place_below("/", "/"), Some(""));
    }

    #[test]
    fn mounts_are_made_parents_first_and_below_a_siblings_path_before_it() {
        // zdtm tempfs_overmounted01: a bind (2) on the bind (3) made after it, on the
        // tmpfs (1) at its root.
        let mut mounts = vec![
            mount("/d", 0),
            mount("/d/a", 1),
            mount("/d/a/c", 4),
            mount("/d/a", 2),
        ];
        assert_eq!(make_order(&mounts), Ok(vec![0, 1, 3, 2]));
        // Two on one parent, one below the other's path: the deeper first.
        mounts = vec![mount("/d", 0), mount("/d/x", 1), mount("/d/x/y", 1)];
        assert_eq!(make_order(&mounts), Ok(vec![0, 2, 1]));
        // A bind of a part of a tmpfs made after it; cryo's own (a proc) last.
        mounts = vec![
            NamespaceMount {
                bind_first: 3,
                tmpfs: false,
                ..mount("/b", 0)
            },
            NamespaceMount {
                proc: true,
                tmpfs: false,
                ..mount("/proc", 0)
            },
            mount("/t", 0),
        ];
        assert_eq!(make_order(&mounts), Ok(vec![2, 0, 1]));
        // A loop: none gives it.
        mounts = vec![mount("/a", 2), mount("/a", 1)];
        assert!(make_order(&mounts).is_err());
    }
}
