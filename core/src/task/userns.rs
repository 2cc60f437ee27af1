//! User namespaces one level below cryo's, owned by cryo's uid: read at dump (maps,
//! setgroups, owner), made again at restore by the topmost process of the dump in one.
//!
//! ```text
//! dump     per process in one: its parent must be cryo's (NS_GET_PARENT), its owner cryo's
//!          uid (NS_GET_OWNER_UID); uid_map, gid_map, projid_map and setgroups as cryo reads
//!          them (outside ids in cryo's view); every namespace of the process other than
//!          cryo's must be owned by the user namespace the restore makes it in
//!          (task/namespaces.rs); refused: a process outside the dump in it
//! restore  the topmost process is cloned into a new one (CLONE_NEWUSER, with CLONE_NEWPID
//!          for the init of the tree's own PID namespace, which the user namespace then
//!          owns); between its hello and cryo's go, cryo writes setgroups, uid_map, gid_map
//!          and projid_map; its children are forked inside it; the ids are set from inside,
//!          translated by the maps (task/security.rs); namespaces it makes are its own.
//!          In cryo's PID namespace no process in it may choose pids (clone3 set_tid needs
//!          CAP_CHECKPOINT_RESTORE over the PID namespace): cryo sets ns_last_pid for it,
//!          for its threads (task/threads.rs) and its children (restore/pid_broker.rs)
//! ```

use std::io;
use std::path::Path;

use cryo_proto::image::UserNamespace;
use nix::unistd::Pid;

use super::namespaces::NamespaceError;
use crate::proc;
use crate::sys;

/// The maps as cryo writes them, in the order the kernel wants: setgroups before gid_map.
const MAP_FILES: [&str; 3] = ["uid_map", "gid_map", "projid_map"];

/// The user namespace `inode` of `pid` (not cryo's), read as the restore makes it again;
/// refused when the restore cannot make it so.
pub(crate) fn dump(pid: Pid, inode: u64) -> Result<UserNamespace, NamespaceError> {
    let dir = proc::dir(pid);
    let read_err = |errno| NamespaceError::Read {
        pid,
        tid: pid,
        kind: "user",
        errno,
    };
    let refuse = |reason: String| NamespaceError::User {
        pid,
        tid: pid,
        inode,
        reason,
    };
    let ns = std::fs::File::open(dir.join("ns/user")).map_err(read_err)?;
    let ours = super::namespaces::inode(Path::new("/proc/self/ns/user")).map_err(read_err)?;
    match sys::ns::parent_inode(&ns) {
        Ok(parent) if parent == ours => {}
        Ok(parent) => {
            return Err(refuse(format!(
                "nested: its parent is user:[{parent}], not cryo's user:[{ours}]; only a user \
                 namespace one level below cryo's is restored"
            )))
        }
        Err(errno) => return Err(read_err(errno)),
    }
    let owner_uid = sys::ns::owner_uid(&ns).map_err(read_err)?;
    let euid = nix::unistd::geteuid().as_raw();
    if owner_uid != euid {
        return Err(refuse(format!(
            "owned by uid {owner_uid}: the restore makes it owned by cryo's uid {euid}"
        )));
    }
    let text = |name: &str| std::fs::read_to_string(dir.join(name)).map_err(read_err);
    let [uid_map, gid_map, projid_map] = MAP_FILES.map(|name| text(name).map(|t| normalized(&t)));
    Ok(UserNamespace {
        inode,
        uid_map: uid_map?,
        gid_map: gid_map?,
        projid_map: projid_map?,
        setgroups_deny: text("setgroups")?.trim() == "deny",
        owner_uid,
    })
}

/// A map as /proc shows it (columns padded) as the kernel takes it: `A B C` lines.
fn normalized(map: &str) -> String {
    map.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ") + "\n")
        .collect()
}

/// Id `outside` (cryo's view) as map `map` (one of [`UserNamespace`]'s) shows it inside the
/// namespace, if it maps it.
pub(crate) fn to_inside(map: &str, outside: u32) -> Option<u32> {
    map.lines().find_map(|line| {
        let mut n = line.split_whitespace().map(|w| w.parse::<u64>().ok());
        let (first, lower, count) = (n.next()??, n.next()??, n.next()??);
        let id = u64::from(outside);
        (lower <= id && id < lower + count).then(|| (first + id - lower) as u32)
    })
}

/// The first id of `ids` (cryo's view) that `map` does not map.
pub(crate) fn first_unmapped(map: &str, ids: &[u32]) -> Option<u32> {
    ids.iter().copied().find(|&id| to_inside(map, id).is_none())
}

/// Writes the maps of `ns` into the new user namespace of `pid` (as cryo sees it), which has
/// none yet: setgroups first ("deny" goes before gid_map), then uid_map, gid_map, projid_map.
pub(crate) fn write_maps(pid: Pid, ns: &UserNamespace) -> io::Result<()> {
    let dir = proc::dir(pid);
    let write = |name: &str, text: &str| {
        std::fs::write(dir.join(name), text)
            .map_err(|e| io::Error::new(e.kind(), format!("write {name} of pid {pid}: {e}")))
    };
    if ns.setgroups_deny {
        write("setgroups", "deny")?;
    }
    for (name, map) in MAP_FILES
        .iter()
        .zip([&ns.uid_map, &ns.gid_map, &ns.projid_map])
    {
        if !map.is_empty() {
            write(name, map)?;
        }
    }
    Ok(())
}

/// Refuses a user namespace of the dump that a process outside it is in (`tasks`: each
/// process of the dump in one, with its inode; `members`: every process of the dump).
pub(crate) fn refuse_outsiders(
    tasks: &[(Pid, u64)],
    members: &[Pid],
) -> Result<(), NamespaceError> {
    let mut seen = Vec::new();
    for &(pid, inode) in tasks {
        if seen.contains(&inode) {
            continue;
        }
        seen.push(inode);
        if let Some(other) = proc::outsider_in_namespace("user", inode, members) {
            return Err(NamespaceError::User {
                pid,
                tid: pid,
                inode,
                reason: format!(
                    "shared with pid {other}, which is not in the dump: the restored processes \
                     would be in a new namespace without it"
                ),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_read_from_proc_translate_ids() {
        let map =
            normalized("         0          0          1\n         1     100000      65536\n");
        assert_eq!(map, "0 0 1\n1 100000 65536\n");
        assert_eq!(to_inside(&map, 0), Some(0));
        assert_eq!(to_inside(&map, 100_000), Some(1));
        assert_eq!(to_inside(&map, 165_535), Some(65_536));
        assert_eq!(to_inside(&map, 165_536), None);
        assert_eq!(to_inside(&map, 5), None);
        assert_eq!(first_unmapped(&map, &[0, 100_001, 7]), Some(7));
        assert_eq!(to_inside("", 0), None);
    }
}
