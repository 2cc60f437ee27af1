//! System V semaphore sets: every set of cryo's IPC namespace a process of the dump changed
//! last (the sempid of one of its semaphores), and every set of a namespace dumped whole
//! (namespace.rs), saved with its values (ipc.img),
//! and made again at restore with its id, key, creator, owner, mode and values, unless the
//! very set is still there (then it is left as it is: its live values are the ones the
//! processes would see had they kept running).

use cryo_proto::image::SysvSem;
use nix::unistd::Pid;
use tracing::debug;

use super::{Fate, IpcError, Listed, ObjectKind, Restored};
use crate::sys;

/// The sets of cryo's IPC namespace.
pub(super) fn live() -> Result<Vec<Listed>, IpcError> {
    super::listed("sem", "semid")
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

/// Every semaphore set of `sets` (those of the calling thread's IPC namespace, [`live`]) that
/// a process of `pids` changed last (None: every set, of a namespace dumped whole), with its
/// values.
pub(super) fn dump(pids: Option<&[Pid]>, sets: Vec<Listed>) -> Result<Vec<SysvSem>, IpcError> {
    let mut out = Vec::new();
    for l in sets {
        let what = format!("SysV semaphore set {}", l.id);
        let nsems = l.col("nsems") as usize;
        let mut ours = pids.is_none();
        for num in 0..nsems {
            if ours {
                break;
            }
            let pid = sys::ipc::sem_last_pid(l.id, num).map_err(IpcError::step(&what, "GETPID"))?;
            ours |= pids.is_some_and(|p| p.contains(&Pid::from_raw(pid)));
        }
        if !ours {
            continue;
        }
        let values = sys::ipc::sem_values(l.id, nsems).map_err(IpcError::step(&what, "GETALL"))?;
        debug!(semid = l.id, key = l.key, nsems, "SysV semaphore set");
        out.push(SysvSem {
            id: l.id,
            key: l.key,
            uid: l.uid,
            gid: l.gid,
            cuid: l.cuid,
            cgid: l.cgid,
            mode: l.mode(),
            values: values.into_iter().map(u32::from).collect(),
        });
    }
    Ok(out)
}

fn fate(s: &SysvSem, live: &[Listed]) -> Result<Fate, IpcError> {
    super::fate(
        &describe(s),
        (s.id, s.key),
        live,
        |l| (l.id, l.key),
        |l| {
            l.key == s.key
                && l.col("nsems") as usize == s.values.len()
                && l.cuid == s.cuid
                && l.cgid == s.cgid
        },
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
                let step = |op: &str| IpcError::step(&describe(s), op);
                sys::ipc::sem_set_owner(id, s.uid, s.gid, s.mode).map_err(step("IPC_SET"))?;
                sys::ipc::sem_set_values(id, &values).map_err(step("SETALL"))
            },
        )?;
    }
    Ok(())
}
