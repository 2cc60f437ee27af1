//! System V semaphore sets: every set of cryo's IPC namespace a process of the dump changed
//! last (the sempid of one of its semaphores) saved with its values (ipc.img),
//! and made again at restore with its id, key, creator, owner, mode and values, unless the
//! very set is still there (then it is left as it is: its live values are the ones the
//! processes would see had they kept running).

use cryo_proto::image::SysvSem;
use nix::unistd::Pid;
use tracing::debug;

use super::{Fate, IpcError, ObjectKind, Restored};
use crate::sys;

/// A set of cryo's IPC namespace, as /proc/sysvipc/sem lists it.
#[derive(Debug, Clone)]
struct Live {
    id: i32,
    key: i32,
    perms: i64,
    nsems: usize,
    uid: u32,
    gid: u32,
    cuid: u32,
    cgid: u32,
}

fn live() -> Result<Vec<Live>, IpcError> {
    Ok(super::list("sem")?
        .iter()
        .map(|r| {
            let get = |c: &str| r.get(c).copied().unwrap_or(0);
            Live {
                id: get("semid") as i32,
                key: get("key") as i32,
                perms: get("perms"),
                nsems: get("nsems") as usize,
                uid: get("uid") as u32,
                gid: get("gid") as u32,
                cuid: get("cuid") as u32,
                cgid: get("cgid") as u32,
            }
        })
        .collect())
}

/// A set in words, for messages.
fn describe(s: &SysvSem) -> String {
    format!(
        "SysV semaphore set {} (key {:#x}, {} semaphores)",
        s.id,
        s.key,
        s.values.len()
    )
}

/// Every semaphore set of cryo's IPC namespace that a process of `pids` changed last, with
/// its values.
pub(super) fn dump(pids: &[Pid]) -> Result<Vec<SysvSem>, IpcError> {
    let mut out = Vec::new();
    for l in live()? {
        let mut ours = false;
        for num in 0..l.nsems {
            let pid = sys::ipc::sem_last_pid(l.id, num).map_err(|source| IpcError::Step {
                what: format!("SysV semaphore set {}", l.id),
                op: "GETPID".into(),
                source,
            })?;
            ours |= pids.contains(&Pid::from_raw(pid));
        }
        if !ours {
            continue;
        }
        let values = sys::ipc::sem_values(l.id, l.nsems).map_err(|source| IpcError::Step {
            what: format!("SysV semaphore set {}", l.id),
            op: "GETALL".into(),
            source,
        })?;
        debug!(
            semid = l.id,
            key = l.key,
            nsems = l.nsems,
            "SysV semaphore set"
        );
        out.push(SysvSem {
            id: l.id,
            key: l.key,
            uid: l.uid,
            gid: l.gid,
            cuid: l.cuid,
            cgid: l.cgid,
            mode: (l.perms & 0o777) as u32,
            values: values.into_iter().map(u32::from).collect(),
        });
    }
    Ok(out)
}

fn fate(s: &SysvSem, live: &[Live]) -> Result<Fate, IpcError> {
    super::fate(
        &describe(s),
        (s.id, s.key),
        live,
        |l| (l.id, l.key),
        |l| l.key == s.key && l.nsems == s.values.len() && l.cuid == s.cuid && l.cgid == s.cgid,
    )
}

/// Restore, before anything is made: every set's id and key are free here or hold the very
/// set, and its values fit a semaphore.
pub(super) fn check(sems: &[SysvSem]) -> Result<(), IpcError> {
    let live = live()?;
    for s in sems {
        if s.values.is_empty() || s.values.iter().any(|&v| v > u16::MAX as u32) {
            return Err(IpcError::Taken {
                what: describe(s),
                detail: "an empty set or a value above 65535 in the image".into(),
            });
        }
        fate(s, &live)?;
    }
    Ok(())
}

/// Makes every set of `sems` that is not still here.
pub(super) fn create(sems: &[SysvSem], out: &mut Restored) -> Result<(), IpcError> {
    for s in sems {
        if fate(s, &live()?)? == Fate::Reattach {
            debug!(
                semid = s.id,
                "SysV semaphore set still there: left as it is"
            );
            continue;
        }
        let values: Vec<u16> = s.values.iter().map(|&v| v as u16).collect();
        let flags = libc::IPC_CREAT | libc::IPC_EXCL | (s.mode & 0o777) as i32;
        out.make(
            ObjectKind::Sem,
            describe(s),
            s.id,
            (s.cuid, s.cgid),
            false,
            || sys::ipc::semget(s.key, values.len(), flags),
            |id| {
                let step = |op: &'static str| {
                    move |source| IpcError::Step {
                        what: describe(s),
                        op: op.into(),
                        source,
                    }
                };
                sys::ipc::sem_set_owner(id, s.uid, s.gid, s.mode).map_err(step("IPC_SET"))?;
                sys::ipc::sem_set_values(id, &values).map_err(step("SETALL"))
            },
        )?;
    }
    Ok(())
}
