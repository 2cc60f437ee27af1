//! The mount namespace a description reached by path was opened in: its holder's own, or
//! the one of the process that forked the holder (opened before the holder unshared its
//! mount namespace, or before a clone(CLONE_NEWNS)): fdinfo `mnt_id` then names a mount only
//! that other namespace has.
//!
//! ```text
//! dump     the holder's namespace and its parent's (its parent of the dump's, or cryo's for
//!          a root: the process that forks it at restore) compared by inode; the same (the
//!          common case): its own. Else mnt_id looked up in the mountinfo of each (read once
//!          per namespace): the holder's -> its own; the parent's -> the parent's
//!          (FileDesc.parent_mount_namespace, set by table.rs); neither -> refused
//! restore  open.rs (open_in_parent_namespace) opens the path through /proc/PARENT/root,
//!          the parent as /proc shows it (PPid of /proc/self/status): the file on the
//!          parent's namespace's mount
//! ```

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;

use nix::unistd::Pid;

use super::inspect::OpenFd;
use super::kind::KindState;
use super::FileError;

/// Where the mount of a description is, seen from its holder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OpenedIn {
    /// A mount of the holder's namespace.
    Own,
    /// A mount of the namespace of the process that forks the holder at restore.
    Parent,
}

/// What the dump learnt of mount namespaces, across the fds of a dump.
#[derive(Default)]
struct MountViews {
    /// Mount namespace inode -> the ids of its mounts.
    ids: HashMap<u64, HashSet<u64>>,
    /// Holder pid -> its namespace, its parent's, and whose /proc shows the parent's.
    spaces: HashMap<i32, (u64, u64, String)>,
}

/// The mount namespace inode of the process whose /proc directory is `who` (a pid, "self").
pub(crate) fn namespace_of(who: &str) -> std::io::Result<u64> {
    std::fs::metadata(format!("/proc/{who}/ns/mnt")).map(|m| m.ino())
}

/// The parent pid of `pid` (field 4 of /proc/PID/stat).
fn parent_of(pid: Pid) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
}

/// The mount ids of the namespace of the process whose /proc directory is `who` (the whole
/// namespace's, a chrooted process's too).
fn mount_ids(who: &str) -> std::io::Result<HashSet<u64>> {
    let text = match who.parse() {
        Ok(pid) => crate::task::mount_ns::namespace_mountinfo(Pid::from_raw(pid))?,
        Err(_) => std::fs::read_to_string(format!("/proc/{who}/mountinfo"))?,
    };
    Ok(text
        .lines()
        .filter_map(|l| l.split(' ').next()?.parse().ok())
        .collect())
}

/// The process whose mount namespace is the holder of `open`'s parent's ([`opened_in`] read
/// it): a pid, or None for cryo (the holder is a root). None when not known.
pub(super) fn parent_of_holder(state: &mut KindState, open: &OpenFd) -> Option<Option<Pid>> {
    let views = state.get::<MountViews>();
    let (_, _, parent) = views.spaces.get(&open.pid.as_raw())?;
    Some(parent.parse().ok().map(Pid::from_raw))
}

/// Which namespace the mount of `open` (a description reached by path) is in: its holder's,
/// or its parent's. Refused when neither has it.
pub(super) fn opened_in(state: &mut KindState, open: &OpenFd) -> Result<OpenedIn, FileError> {
    let pid = open.pid;
    let inspect = |path: String| {
        move |e: std::io::Error| open.inspect_err("read", std::path::PathBuf::from(path), e)
    };
    if open.mnt_id == 0 {
        return Ok(OpenedIn::Own);
    }
    if !state.get::<MountViews>().spaces.contains_key(&pid.as_raw()) {
        let own = namespace_of(&pid.to_string()).map_err(inspect(format!("/proc/{pid}/ns/mnt")))?;
        let pids = super::pidfd::dump_pids(state);
        let parent = parent_of(pid)
            .filter(|p| pids.contains(p))
            .map_or_else(|| "self".to_string(), |p| p.to_string());
        let theirs = namespace_of(&parent).map_err(inspect(format!("/proc/{parent}/ns/mnt")))?;
        state
            .get::<MountViews>()
            .spaces
            .insert(pid.as_raw(), (own, theirs, parent));
    }
    let views = state.get::<MountViews>();
    let (own, theirs, parent) = views.spaces[&pid.as_raw()].clone();
    if own == theirs {
        return Ok(OpenedIn::Own);
    }
    for (ns, who) in [(own, pid.to_string()), (theirs, parent.clone())] {
        if let std::collections::hash_map::Entry::Vacant(e) = views.ids.entry(ns) {
            e.insert(mount_ids(&who).map_err(inspect(format!("/proc/{who}/mountinfo")))?);
        }
    }
    if views.ids[&own].contains(&open.mnt_id) {
        return Ok(OpenedIn::Own);
    }
    if views.ids[&theirs].contains(&open.mnt_id) {
        return Ok(OpenedIn::Parent);
    }
    let whose = if parent == "self" {
        "cryo's (the namespace its restore is forked in)".to_string()
    } else {
        format!("its parent's (pid {parent})")
    };
    Err(open.refuse(
        format!(
            "opened through mount {} of a mount namespace neither its own (mnt:[{own}]) nor \
             {whose}: reopened by its path, it would be on another mount",
            open.mnt_id
        ),
        false,
    ))
}
