//! System V message queues: every queue of cryo's IPC namespace a process of the dump sent to
//! or received from last (lspid, lrpid), and every queue of a namespace dumped whole
//! (namespace.rs), saved with its messages
//! (types and texts, oldest first, read with MSG_COPY: nothing is taken off the queue) in
//! ipc.img, and made again at restore with its id, key, creator, owner, mode, size limit and
//! messages, unless the very queue is still there (then it is left as it is).

use cryo_proto::image::{SysvMessage, SysvMsgQueue};
use nix::unistd::Pid;
use tracing::debug;

use super::{Fate, IpcError, Listed, ObjectKind, Restored};
use crate::sys;

/// The queues of cryo's IPC namespace.
fn live() -> Result<Vec<Listed>, IpcError> {
    super::listed("msg", "msqid")
}

/// A queue in words, for messages.
fn describe(q: &SysvMsgQueue) -> String {
    format!(
        "SysV message queue {} (key {:#x}, {} messages)",
        q.id,
        q.key,
        q.messages.len()
    )
}

/// Every message queue of the calling thread's IPC namespace that a process of `pids` sent
/// to or received from last (None: every queue, of a namespace dumped whole), with its
/// messages.
pub(super) fn dump(pids: Option<&[Pid]>) -> Result<Vec<SysvMsgQueue>, IpcError> {
    let mut out = Vec::new();
    for l in live()? {
        let by = |c: &str| pids.is_none_or(|p| p.contains(&Pid::from_raw(l.col(c) as i32)));
        if !by("lspid") && !by("lrpid") {
            continue;
        }
        let what = format!("SysV message queue {}", l.id);
        let step = |op: &str| IpcError::step(&what, op);
        let qbytes = sys::ipc::msg_qbytes(l.id).map_err(step("IPC_STAT"))?;
        let mut messages = Vec::new();
        // No message is longer than all of them together.
        let max = l.col("cbytes").max(1) as usize;
        while let Some((mtype, text)) =
            sys::ipc::msg_peek(l.id, messages.len(), max).map_err(step("msgrcv MSG_COPY"))?
        {
            messages.push(SysvMessage { mtype, text });
        }
        debug!(
            msqid = l.id,
            key = l.key,
            messages = messages.len(),
            "SysV message queue"
        );
        out.push(SysvMsgQueue {
            id: l.id,
            key: l.key,
            uid: l.uid,
            gid: l.gid,
            cuid: l.cuid,
            cgid: l.cgid,
            mode: l.mode(),
            qbytes,
            messages,
        });
    }
    Ok(out)
}

fn fate(q: &SysvMsgQueue, live: &[Listed]) -> Result<Fate, IpcError> {
    super::fate(
        &describe(q),
        (q.id, q.key),
        live,
        |l| (l.id, l.key),
        |l| l.key == q.key && l.cuid == q.cuid && l.cgid == q.cgid,
    )
}

/// The most bytes a queue made here may hold without CAP_SYS_RESOURCE (msgmnb).
fn msgmnb() -> u64 {
    std::fs::read_to_string("/proc/sys/kernel/msgmnb")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(16384)
}

/// Restore, before anything is made: every queue's id and key are free here or hold the very
/// queue, and a queue to make fits this machine's limits.
pub(super) fn check(queues: &[SysvMsgQueue]) -> Result<(), IpcError> {
    let live = live()?;
    let limit = msgmnb();
    for q in queues {
        let held: u64 = q.messages.iter().map(|m| m.text.len() as u64).sum();
        if fate(q, &live)? == Fate::Create && (q.qbytes > limit || held > q.qbytes) {
            return Err(IpcError::Taken {
                what: describe(q),
                detail: format!(
                    "its size limit of {} bytes ({held} held) is above this machine's msgmnb \
                     ({limit}), which only CAP_SYS_RESOURCE may exceed",
                    q.qbytes
                ),
            });
        }
    }
    Ok(())
}

/// Makes every queue of `queues` that is not still here, its messages sent in order.
pub(super) fn create(queues: &[SysvMsgQueue], out: &mut Restored) -> Result<(), IpcError> {
    for q in queues {
        if fate(q, &live()?)? == Fate::Reattach {
            debug!(
                msqid = q.id,
                "SysV message queue still there: left as it is"
            );
            continue;
        }
        let flags = libc::IPC_CREAT | libc::IPC_EXCL | (q.mode & 0o777) as i32;
        out.make(
            ObjectKind::Msg,
            describe(q),
            q.id,
            (q.cuid, q.cgid),
            false,
            || sys::ipc::msgget(q.key, flags),
            |id| {
                let step = |op: &str| IpcError::step(&describe(q), op);
                sys::ipc::msg_set(id, q.uid, q.gid, q.mode, q.qbytes).map_err(step("IPC_SET"))?;
                for m in &q.messages {
                    sys::ipc::msg_send(id, m.mtype, &m.text).map_err(step("msgsnd"))?;
                }
                Ok(())
            },
        )?;
    }
    Ok(())
}
