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

/// How a restored process in user namespace `.0` (None: cryo's) names ids the image holds
/// in cryo's view, when it passes them to the kernel (chown, a tmpfs's uid= option).
#[derive(Debug, Clone, Copy)]
pub(crate) struct IdsInside<'a>(pub(crate) Option<&'a UserNamespace>);

impl IdsInside<'_> {
    /// User id `outside` as the process names it; EOVERFLOW when its namespace does not map it.
    pub(crate) fn uid(&self, outside: u32) -> io::Result<u32> {
        self.inside(outside, |ns| &ns.uid_map)
    }

    /// Group id `outside` as the process names it, as [`IdsInside::uid`].
    pub(crate) fn gid(&self, outside: u32) -> io::Result<u32> {
        self.inside(outside, |ns| &ns.gid_map)
    }

    fn inside(&self, outside: u32, map: impl Fn(&UserNamespace) -> &String) -> io::Result<u32> {
        match self.0 {
            None => Ok(outside),
            Some(ns) => to_inside(map(ns), outside)
                .ok_or_else(|| io::Error::from_raw_os_error(libc::EOVERFLOW)),
        }
    }

    /// Owner `uid`, `gid` (cryo's view) as the process is shown it: an id its namespace does
    /// not map as the overflow id.
    pub(crate) fn shown(&self, uid: u32, gid: u32) -> (u32, u32) {
        (
            self.uid(uid).unwrap_or(OVERFLOW_ID),
            self.gid(gid).unwrap_or(OVERFLOW_ID),
        )
    }

    /// Mount options `options` (a tmpfs's, a devpts's) with their `uid=` and `gid=` values
    /// as the process names them.
    pub(crate) fn mount_options(&self, options: &str) -> io::Result<String> {
        if self.0.is_none() || options.is_empty() {
            return Ok(options.to_owned());
        }
        let mut out = Vec::new();
        for opt in options.split(',') {
            let translated = match opt.split_once('=') {
                Some(("uid", v)) => v.parse().ok().map(|id| self.uid(id)),
                Some(("gid", v)) => v.parse().ok().map(|id| self.gid(id)),
                _ => None,
            };
            match (translated, opt.split_once('=')) {
                (Some(id), Some((key, _))) => out.push(format!("{key}={}", id?)),
                _ => out.push(opt.to_owned()),
            }
        }
        Ok(out.join(","))
    }
}

/// The user namespace of this process of a restore (unset in cryo: its own), set once at the
/// start of its cryo phase: what it inherits from cryo's image, the maps, is all it needs.
static OWN: std::sync::OnceLock<UserNamespace> = std::sync::OnceLock::new();

/// In a forked process of a restore: the user namespace it is restored in (None: cryo's).
pub(crate) fn set_own(ns: Option<&UserNamespace>) {
    if let Some(ns) = ns {
        let _ = OWN.set(ns.clone());
    }
}

/// The user namespace of this process of a restore, as [`set_own`] said (None in cryo).
pub(crate) fn own_ns() -> Option<&'static UserNamespace> {
    OWN.get()
}

/// How this process names ids of cryo's view: as [`set_own`] said (cryo's ids in cryo).
pub(crate) fn own_ids() -> IdsInside<'static> {
    IdsInside(OWN.get())
}

/// Owner `uid`, `gid` of the image (cryo's view) as this process names it for chown: in a
/// user namespace of its own ([`set_own`]), translated; None when the file is to keep the
/// owner it was made with ([`make_for`]: cryo's, which its namespace does not map);
/// EOVERFLOW when the namespace maps neither.
pub(crate) fn own_owner(
    uid: u32,
    gid: u32,
) -> nix::Result<Option<(nix::unistd::Uid, nix::unistd::Gid)>> {
    if made_as_cryo(uid, gid) {
        return Ok(None);
    }
    let ids = own_ids();
    let unmapped = |_| nix::Error::EOVERFLOW;
    Ok(Some((
        nix::unistd::Uid::from_raw(ids.uid(uid).map_err(unmapped)?),
        nix::unistd::Gid::from_raw(ids.gid(gid).map_err(unmapped)?),
    )))
}

/// fchown of `fd` to owner `uid`, `gid` of the image, as [`own_owner`] says.
pub(crate) fn chown_as_dumped(
    fd: std::os::fd::BorrowedFd<'_>,
    uid: u32,
    gid: u32,
) -> nix::Result<()> {
    match own_owner(uid, gid)? {
        Some((uid, gid)) => nix::unistd::fchown(fd, Some(uid), Some(gid)),
        None => Ok(()),
    }
}

/// Whether this process is in a user namespace of its own that does not map cryo's root, which
/// it still is outside (its credentials are set last): what it makes is owned by ids its
/// namespace does not map, and cannot be given to another owner from inside.
fn cryos_root_unmapped() -> bool {
    OWN.get().is_some_and(|ns| {
        to_inside(&ns.uid_map, 0).is_none() || to_inside(&ns.gid_map, 0).is_none()
    })
}

/// Whether a file for owner `uid`, `gid` (cryo's view) is made as this process is (cryo's
/// root) and kept so: that owner is cryo's root, unmapped in its user namespace.
fn made_as_cryo(uid: u32, gid: u32) -> bool {
    cryos_root_unmapped() && (uid, gid) == (0, 0)
}

/// Runs `f`, which makes a file for owner `uid`, `gid` (cryo's view) that is then given
/// that owner ([`own_owner`]). In a user namespace that does not map cryo's root, a file this
/// process makes is owned by ids the namespace does not map, which no one inside may give
/// away: made on a short-lived thread whose filesystem ids are the namespace's root
/// (setfsuid and setfsgid are per thread), unless it is to keep cryo's.
pub(crate) fn make_for<T: Send>(uid: u32, gid: u32, f: impl FnOnce() -> T + Send) -> T {
    if !cryos_root_unmapped() || made_as_cryo(uid, gid) {
        return f();
    }
    std::thread::scope(|s| {
        s.spawn(|| {
            // 0: the namespace's root, which its maps map.
            crate::sys::process::set_thread_fs_ids(0, 0);
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// The id a process is shown for an id its user namespace does not map (kernel.overflowuid
/// and overflowgid, at their defaults).
pub(crate) const OVERFLOW_ID: u32 = 65534;

/// The root (uid, gid 0) of user namespace `ns` (None: cryo's) as cryo sees it; cryo's root
/// when the maps leave it unmapped.
pub(crate) fn root_outside(ns: Option<&UserNamespace>) -> (u32, u32) {
    let outside = |map: &str| {
        map.lines().find_map(|line| {
            let mut n = line.split_whitespace().map(|w| w.parse::<u32>().ok());
            let (first, lower) = (n.next()??, n.next()??);
            (first == 0).then_some(lower)
        })
    };
    ns.map_or((0, 0), |ns| {
        (
            outside(&ns.uid_map).unwrap_or(0),
            outside(&ns.gid_map).unwrap_or(0),
        )
    })
}

/// The group of the root of `pid`'s user namespace as cryo sees it, when that namespace is
/// not cryo's (and maps a root).
pub(crate) fn root_group_of(pid: Pid) -> Option<u32> {
    if !super::namespaces::other_than_cryos(pid, "user") {
        return None;
    }
    let dir = proc::dir(pid);
    let gid_map = normalized(&std::fs::read_to_string(dir.join("gid_map")).ok()?);
    let ns = UserNamespace {
        gid_map,
        ..Default::default()
    };
    to_inside(&ns.gid_map, 0)
        .is_none()
        .then(|| root_outside(Some(&ns)).1)
}

/// Runs `f` on a short-lived thread whose effective group is its user namespace's root's
/// (setresgid is per thread), in a process of a restore in one (else here): what the kernel
/// checks against net.ipv4.ping_group_range when a ping socket is made, which the namespace
/// writes in its own ids.
pub(crate) fn as_root_group<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    if OWN.get().is_none() {
        return f();
    }
    std::thread::scope(|s| {
        s.spawn(|| {
            // 0: the namespace's root group.
            let _ = crate::sys::process::set_thread_effective_gid(0);
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
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

    #[test]
    fn mount_options_name_ids_as_the_namespace_does() {
        let ns = UserNamespace {
            uid_map: "0 20000 20000\n".into(),
            gid_map: "0 400000 50000\n".into(),
            ..Default::default()
        };
        let inside = IdsInside(Some(&ns));
        assert_eq!(
            inside
                .mount_options("size=4k,uid=20000,gid=400005,mode=755")
                .unwrap(),
            "size=4k,uid=0,gid=5,mode=755"
        );
        assert_eq!(
            inside.mount_options("uid=7").unwrap_err().raw_os_error(),
            Some(libc::EOVERFLOW)
        );
        assert_eq!(IdsInside(None).mount_options("uid=7").unwrap(), "uid=7");
    }
}
