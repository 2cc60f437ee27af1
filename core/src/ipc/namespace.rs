//! IPC namespaces other than cryo's: dumped whole and made again whole.
//!
//! ```text
//! dump     per namespace a process of the dump is in, from a thread that joins it (setns):
//!          every segment (those no process of the dump attaches read through a short
//!          attachment), semaphore set and message queue, and its sysctls (SYSCTLS)
//!          refused: a process outside the dump in it (it would not share the new one), a
//!          POSIX message queue in its mqueue fs (not restored), shm_rmid_forced with a
//!          segment nobody attaches (made again by cryo, it would be destroyed at once)
//! restore  cryo, before the first fork: a thread unshares a new namespace (kept by an fd),
//!          raises the limits its objects need, makes them with their ids (the ipc module's
//!          own code, run in the namespace), writes the dumped sysctls; each process whose
//!          namespace differs from its parent's enters its own (setns) before forking;
//!          once all have attached their segments: IPC_RMID of those marked destroyed,
//!          shm_rmid_forced
//! ```

use std::collections::BTreeSet;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use cryo_proto::image::{IpcNamespace, IpcSysctl, SysvShm};
use nix::sched::CloneFlags;
use nix::unistd::Pid;
use tracing::debug;

use super::{msg, sem, shm, IpcError, Listed, Restored};
use crate::image::ImageDir;

/// The sysctls of an IPC namespace (under /proc/sys), in the order a restore writes them:
/// the ids the next objects get last (they are -1 but after a write not yet used).
pub(crate) const SYSCTLS: &[&str] = &[
    "kernel/shmmax",
    "kernel/shmall",
    "kernel/shmmni",
    "kernel/shm_rmid_forced",
    "kernel/msgmax",
    "kernel/msgmnb",
    "kernel/msgmni",
    "kernel/auto_msgmni",
    "kernel/sem",
    "fs/mqueue/msg_default",
    "fs/mqueue/msg_max",
    "fs/mqueue/msgsize_default",
    "fs/mqueue/msgsize_max",
    "fs/mqueue/queues_max",
    "kernel/shm_next_id",
    "kernel/sem_next_id",
    "kernel/msg_next_id",
];

/// Written once the processes have attached their segments: set before, it would destroy
/// the segments cryo made and left unattached.
const RMID_FORCED: &str = "kernel/shm_rmid_forced";

/// Runs `f` on a short-lived thread that joined the IPC namespace `ns` (an open nsfs file):
/// an IPC namespace is per thread, cryo's other threads stay in theirs.
pub(super) fn run_in<T: Send>(
    ns: BorrowedFd<'_>,
    f: impl FnOnce() -> Result<T, IpcError> + Send,
) -> Result<T, IpcError> {
    crate::sys::ns::run_in(ns, CloneFlags::CLONE_NEWIPC, f)
        .map_err(IpcError::step("cryo", "run in an IPC namespace (setns)"))?
}

/// Runs `f` in the IPC namespace of `pid`.
pub(super) fn run_in_namespace_of<T: Send>(
    pid: Pid,
    f: impl FnOnce() -> Result<T, IpcError> + Send,
) -> Result<T, IpcError> {
    let ns = File::open(crate::proc::dir(pid).join("ns/ipc")).map_err(IpcError::step(
        &format!("pid {pid}"),
        "open its IPC namespace",
    ))?;
    run_in(ns.as_fd(), f)
}

/// The sysctls of the calling thread's IPC namespace.
fn read_sysctls() -> io::Result<Vec<IpcSysctl>> {
    SYSCTLS
        .iter()
        .map(|name| {
            let value = cryo_netns::state::read_sysctl(Path::new(&format!("/proc/sys/{name}")))?;
            Ok(IpcSysctl {
                name: (*name).to_string(),
                value: value.trim().to_string(),
            })
        })
        .collect()
}

/// Dumps IPC namespace `inode`, which `pids` of the dump (`members`: all of them) are in:
/// every object of it (`attached`: the segments the dump's processes attach, already in
/// files.img) and its sysctls. Returns the record and its semaphore sets as listed.
pub(super) fn dump(
    inode: u64,
    pids: &[Pid],
    members: &[Pid],
    attached: &BTreeSet<i32>,
    images: &ImageDir,
) -> Result<(IpcNamespace, Vec<Listed>), IpcError> {
    let pid = pids[0];
    let what = format!("its IPC namespace (ipc:[{inode}])");
    let refuse = |detail: String| IpcError::Refused {
        pid,
        what: what.clone(),
        detail,
    };
    if let Some(other) = crate::proc::outsider_in_namespace("ipc", inode, members) {
        return Err(refuse(format!(
            "is shared with pid {other}, which is not in the dump: the restored processes \
             would be in a new namespace without it"
        )));
    }
    let step = |op: &str| IpcError::step(&format!("pid {pid}: {what}"), op);
    run_in_namespace_of(pid, || {
        let queues = crate::sys::ipc::mqueue_names().map_err(step("list its mqueue fs"))?;
        if let Some(q) = queues.first() {
            return Err(refuse(format!(
                "holds POSIX message queue /{q}: POSIX message queues are not restored"
            )));
        }
        let sysctls = read_sysctls().map_err(step("read its sysctls"))?;
        let rmid_forced = sysctls
            .iter()
            .any(|s| s.name == RMID_FORCED && s.value != "0");
        let mut segments = Vec::new();
        for seg in shm::listed()?.iter().filter(|l| !attached.contains(&l.id)) {
            if rmid_forced {
                return Err(refuse(format!(
                    "sets kernel.shm_rmid_forced and holds SysV shared memory segment {} that \
                     no process of the dump attaches: made again by cryo, it would be \
                     destroyed at once",
                    seg.id
                )));
            }
            segments.push(shm::dump_unattached(seg, inode, images, pid)?);
        }
        let sets = sem::live()?;
        let ns = IpcNamespace {
            inode,
            segments,
            sems: sem::dump(None, sets.clone())?,
            queues: msg::dump(None)?,
            sysctls,
        };
        debug!(
            inode,
            segments = ns.segments.len(),
            sems = ns.sems.len(),
            queues = ns.queues.len(),
            "IPC namespace"
        );
        Ok((ns, sets))
    })
}

/// Restore, before anything is made: the sysctls of the image are IPC namespace ones.
pub(super) fn check(ns: &IpcNamespace) -> Result<(), IpcError> {
    match ns
        .sysctls
        .iter()
        .find(|s| !SYSCTLS.contains(&s.name.as_str()))
    {
        Some(s) => Err(IpcError::Taken {
            what: format!("IPC namespace ipc:[{}]", ns.inode),
            detail: format!(
                "sysctl {:?} in the image is not one of an IPC namespace",
                s.name
            ),
        }),
        None => Ok(()),
    }
}

/// An IPC namespace a restore made, held by an fd until its processes are in it.
#[derive(Debug)]
pub(super) struct Made {
    /// Its inode at dump.
    pub inode: u64,
    pub fd: OwnedFd,
    /// The segments to mark destroyed once attached.
    destroyed: Vec<i32>,
    /// kernel.shm_rmid_forced, when set at dump.
    rmid_forced: Option<String>,
    /// The uid and gid its sysctls are written as: its user namespace's root (0, 0: cryo's).
    root: (u32, u32),
}

/// Raises sysctl `name` of the calling thread's namespace to `need` if it is below: the
/// limits checked when an object is made or filled (without CAP_SYS_RESOURCE).
fn raise(name: &str, need: u64) -> io::Result<()> {
    let path = format!("/proc/sys/{name}");
    let now: u64 = std::fs::read_to_string(&path)?
        .trim()
        .parse()
        .unwrap_or(u64::MAX);
    if now < need {
        std::fs::write(&path, need.to_string())?;
    }
    Ok(())
}

/// Makes IPC namespace `ns` again, with its segments (`attached`: those in files.img, plus
/// the record's) and other objects, and its sysctls: a new namespace of cryo's.
pub(super) fn create(
    ns: &IpcNamespace,
    attached: &[&SysvShm],
    images: &ImageDir,
) -> Result<Made, IpcError> {
    make_whole(ns, attached, images, None)
}

/// [`create`] into `empty`, the new namespace a restored process was cloned into in its user
/// namespace (which owns it), whose root is `root` (uid, gid as cryo sees them): the sysctls,
/// which only that root may write, written as it.
pub(super) fn fill(
    ns: &IpcNamespace,
    attached: &[&SysvShm],
    images: &ImageDir,
    empty: OwnedFd,
    root: (u32, u32),
) -> Result<Made, IpcError> {
    make_whole(ns, attached, images, Some((empty, root)))
}

/// [`create`] (`into` None) or [`fill`].
fn make_whole(
    ns: &IpcNamespace,
    attached: &[&SysvShm],
    images: &ImageDir,
    into: Option<(OwnedFd, (u32, u32))>,
) -> Result<Made, IpcError> {
    let what = format!("IPC namespace ipc:[{}]", ns.inode);
    let step = |op: &str| IpcError::step(&what, op);
    std::thread::scope(|s| {
        s.spawn(|| {
            // This thread only: cryo's others stay in cryo's namespace.
            let (root_uid, root_gid) = match &into {
                Some((empty, root)) => {
                    nix::sched::setns(empty, CloneFlags::CLONE_NEWIPC)
                        .map_err(|e| step("enter the new namespace (setns)")(e.into()))?;
                    *root
                }
                None => {
                    nix::sched::unshare(CloneFlags::CLONE_NEWIPC)
                        .map_err(|e| step("unshare CLONE_NEWIPC")(e.into()))?;
                    (0, 0)
                }
            };
            let as_root =
                |f: &dyn Fn() -> io::Result<()>| crate::sys::ipc::as_creator(root_uid, root_gid, f);
            let fd = OwnedFd::from(
                File::open("/proc/thread-self/ns/ipc").map_err(step("open the new namespace"))?,
            );
            let longest = ns.queues.iter().flat_map(|q| &q.messages);
            let needs = [
                ("kernel/msgmax", longest.map(|m| m.text.len() as u64).max()),
                ("kernel/msgmnb", ns.queues.iter().map(|q| q.qbytes).max()),
                ("kernel/msgmni", Some(ns.queues.len() as u64)),
                (
                    "kernel/shmmni",
                    Some((ns.segments.len() + attached.len()) as u64),
                ),
            ];
            for (name, need) in needs {
                as_root(&|| raise(name, need.unwrap_or(0)))
                    .map_err(step(&format!("raise {name}")))?;
            }
            let mut made = Restored::default();
            shm::create(
                attached.iter().copied().chain(&ns.segments),
                images,
                &mut made,
            )?;
            sem::create(&ns.sems, &mut made)?;
            msg::create(&ns.queues, &mut made)?;
            let mut rmid_forced = None;
            for s in &ns.sysctls {
                if s.name == RMID_FORCED {
                    rmid_forced = (s.value != "0").then(|| s.value.clone());
                    continue;
                }
                let path = format!("/proc/sys/{}", s.name);
                let now = cryo_netns::state::read_sysctl(Path::new(&path))
                    .map_err(step(&format!("read {}", s.name)))?;
                // Tabs (kernel.sem) read back as written; only a change is written.
                let same = now.split_whitespace().eq(s.value.split_whitespace());
                if !same {
                    as_root(&|| std::fs::write(&path, &s.value))
                        .map_err(step(&format!("write {} = {}", s.name, s.value)))?;
                }
            }
            debug!(inode = ns.inode, "IPC namespace made");
            Ok(Made {
                inode: ns.inode,
                fd,
                destroyed: made.keep(),
                rmid_forced,
                root: (root_uid, root_gid),
            })
        })
        .join()
        .unwrap_or_else(|_| Err(step("make it")(io::Error::other("panicked"))))
    })
}

impl Made {
    /// Once every process is in it and has attached its segments: the segments marked
    /// destroyed are marked again, kernel.shm_rmid_forced set again.
    pub(super) fn finish(&self) -> Result<(), IpcError> {
        let what = format!("IPC namespace ipc:[{}]", self.inode);
        run_in(self.fd.as_fd(), || {
            for &id in &self.destroyed {
                crate::sys::ipc::shm_command(id, libc::IPC_RMID).map_err(IpcError::step(
                    &format!("{what}: SysV shared memory segment {id}"),
                    "IPC_RMID",
                ))?;
            }
            if let Some(v) = &self.rmid_forced {
                let (uid, gid) = self.root;
                crate::sys::ipc::as_creator(uid, gid, || {
                    std::fs::write(format!("/proc/sys/{RMID_FORCED}"), v)
                })
                .map_err(IpcError::step(&what, "write kernel.shm_rmid_forced"))?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_names_only_the_sysctls_of_an_ipc_namespace() {
        let sysctl = |name: &str| IpcSysctl {
            name: name.into(),
            value: "1".into(),
        };
        let mut ns = IpcNamespace {
            inode: 7,
            sysctls: SYSCTLS.iter().map(|n| sysctl(n)).collect(),
            ..Default::default()
        };
        check(&ns).unwrap();
        for name in [
            "kernel/core_pattern",
            "kernel/../kernel/msgmax",
            "/kernel/msgmax",
        ] {
            ns.sysctls.push(sysctl(name));
            let err = check(&ns).unwrap_err().to_string();
            assert!(err.contains("is not one of an IPC namespace"), "{err}");
            ns.sysctls.pop();
        }
    }
}
