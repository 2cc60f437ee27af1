//! Signal dispositions: read from a frozen task by remote rt_sigaction, installed by the
//! restore child itself; queued signals put back with everything blocked.

use cryo_proto::image::{SigAction, SigInfo};
use nix::unistd::Pid;

use crate::error::{Error, Result};
use crate::remote::{Remote, Scratch};
use crate::sys::signal::{self, KernelSigaction};

const NSIG: u32 = 64;

/// Every disposition that is not the default, read in the task itself. Only the signals
/// /proc says are caught or ignored are asked about (each question is a remote syscall),
/// plus SIGCHLD, whose flags matter even with the default handler.
pub fn dump_actions(pid: Pid, remote: &Remote, scratch: &Scratch) -> Result<Vec<SigAction>> {
    let status = crate::proc::status(pid)?;
    let mask = |key: &str| {
        crate::proc::status_field(&status, key)
            .and_then(|v| u64::from_str_radix(v, 16).ok())
            .unwrap_or(!0)
    };
    let set = mask("SigCgt") | mask("SigIgn") | 1 << (libc::SIGCHLD - 1);
    let asked: Vec<u32> = (1..=NSIG)
        .filter(|&signo| {
            signo != libc::SIGKILL as u32
                && signo != libc::SIGSTOP as u32
                && set & (1 << (signo - 1)) != 0
        })
        .collect();
    // struct kernel_sigaction: handler, flags, restorer, mask.
    const ACTION_LEN: usize = 32;
    let raw = scratch
        .batch_reading(remote, asked.len(), ACTION_LEN, |i, slot| {
            (libc::SYS_rt_sigaction, [asked[i] as u64, 0, slot, 8, 0, 0])
        })
        .map_err(|e| {
            let signo = asked.get(e.index).copied().unwrap_or(0);
            Error::sys(pid, format!("rt_sigaction({signo})"), e.error)
        })?;
    let mut out = Vec::new();
    for (&signo, raw) in asked.iter().zip(raw.chunks_exact(ACTION_LEN)) {
        let word =
            |i: usize| u64::from_ne_bytes(raw[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
        let act = SigAction {
            signo,
            handler: word(0),
            flags: word(1),
            restorer: word(2),
            mask: word(3),
        };
        if act.handler != 0 || act.flags != 0 || act.mask != 0 {
            out.push(act);
        }
    }
    Ok(out)
}

/// Installs the dumped dispositions in the calling process (the restore child, signals
/// blocked); every other signal gets its default.
pub fn restore_actions(actions: &[SigAction]) -> std::io::Result<()> {
    for signo in 1..=NSIG {
        if signo == libc::SIGKILL as u32 || signo == libc::SIGSTOP as u32 {
            continue;
        }
        signal::set_action(signo, &action_of(actions, signo))?;
    }
    Ok(())
}

/// Queues the dumped pending signals again (process-wide and thread-directed) in the calling
/// process, whose signals are all blocked, so they wait exactly as before.
pub fn requeue(shared: &[SigInfo], thread: &[SigInfo]) -> std::io::Result<()> {
    for (infos, is_thread) in [(shared, false), (thread, true)] {
        for info in infos {
            let raw: [u8; signal::SIGINFO_LEN] = info.raw.as_slice().try_into().map_err(|_| {
                std::io::Error::other(format!("signal {}: siginfo is not 128 bytes", info.signo))
            })?;
            signal::queue_to_self(&raw, is_thread)?;
        }
    }
    Ok(())
}

/// The disposition of `signo` among the dumped `actions`: SIG_DFL with no flags where they
/// list none.
fn action_of(actions: &[SigAction], signo: u32) -> KernelSigaction {
    actions
        .iter()
        .find(|a| a.signo == signo)
        .map(|a| KernelSigaction {
            handler: a.handler,
            flags: a.flags,
            restorer: a.restorer,
            mask: a.mask,
        })
        .unwrap_or_default()
}

/// The SIGCHLD disposition of a process (its core).
pub fn sigchld_action(core: &cryo_proto::image::TaskCore) -> KernelSigaction {
    action_of(&core.sigactions, libc::SIGCHLD as u32)
}

/// What the SIGCHLD of a child's stop, made again at restore, does to its parent (`parent`,
/// its core as dumped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopNotice {
    /// A SIGCHLD would be queued: the disposition is not SIG_IGN, has no SA_NOCLDSTOP, and
    /// none is pending to the process already (which would absorb it).
    pub sent: bool,
    /// ...and the parent would see it: it is caught (the handler runs again), or blocked in
    /// every thread (it stays pending); SIG_DFL unblocked somewhere drops it unseen.
    pub seen: bool,
    /// The restore can hold it back by giving the disposition SA_NOCLDSTOP meanwhile:
    /// setting SIG_DFL again discards a pending SIGCHLD, so not with one pending to a thread.
    pub suppressible: bool,
}

impl StopNotice {
    /// The notice a stop would give `parent`.
    pub fn of(parent: &cryo_proto::image::TaskCore) -> Self {
        let act = sigchld_action(parent);
        let is = |s: &SigInfo| s.signo == libc::SIGCHLD;
        let shared = parent.shared_pending.iter().any(is);
        let to_thread = parent.threads.iter().flat_map(|t| &t.pending).any(is);
        let caught = act.handler != libc::SIG_DFL as u64 && act.handler != libc::SIG_IGN as u64;
        let sent = act.handler != libc::SIG_IGN as u64
            && act.flags & libc::SA_NOCLDSTOP as u64 == 0
            && !shared;
        let bit = 1u64 << (libc::SIGCHLD - 1);
        let all_block = parent.threads.iter().all(|t| t.blocked & bit != 0);
        StopNotice {
            sent,
            seen: sent && (caught || all_block),
            suppressible: caught || !to_thread,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cryo_proto::image::{TaskCore, ThreadCore};

    /// A parent with SIGCHLD's `handler` and `flags`, threads blocking SIGCHLD as `blocked`
    /// says, and a SIGCHLD pending to the process (`shared`) or to its first thread.
    fn parent(
        handler: u64,
        flags: u64,
        blocked: &[bool],
        shared: bool,
        to_thread: bool,
    ) -> TaskCore {
        let sigchld = || SigInfo {
            signo: libc::SIGCHLD,
            ..Default::default()
        };
        let bit = 1u64 << (libc::SIGCHLD - 1);
        TaskCore {
            sigactions: vec![SigAction {
                signo: libc::SIGCHLD as u32,
                handler,
                flags,
                ..Default::default()
            }],
            shared_pending: if shared { vec![sigchld()] } else { vec![] },
            threads: blocked
                .iter()
                .enumerate()
                .map(|(k, &b)| ThreadCore {
                    blocked: if b { bit } else { 0 },
                    pending: if k == 0 && to_thread {
                        vec![sigchld()]
                    } else {
                        vec![]
                    },
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_stops_sigchld_is_seen_where_caught_or_blocked_everywhere_and_not_absorbed() {
        let handler = 0x40_1000;
        let nocldstop = libc::SA_NOCLDSTOP as u64;
        let notice = |core: &TaskCore| {
            let n = StopNotice::of(core);
            (n.sent, n.seen, n.suppressible)
        };
        // Caught: seen, held back by SA_NOCLDSTOP.
        assert_eq!(
            notice(&parent(handler, 0, &[false], false, false)),
            (true, true, true)
        );
        // SIG_DFL with a thread that does not block it: dropped unseen.
        assert_eq!(
            notice(&parent(0, 0, &[true, false], false, false)),
            (true, false, true)
        );
        // SIG_DFL blocked everywhere: it would stay pending.
        assert_eq!(
            notice(&parent(0, 0, &[true, true], false, false)),
            (true, true, true)
        );
        // ...and with one pending to a thread, SIG_DFL set again would discard it.
        assert_eq!(
            notice(&parent(0, 0, &[true], false, true)),
            (true, true, false)
        );
        // One pending to the process absorbs it; SIG_IGN and SA_NOCLDSTOP send none.
        assert!(!notice(&parent(handler, 0, &[true], true, false)).1);
        assert!(!notice(&parent(1, 0, &[true], false, false)).0);
        assert!(!notice(&parent(handler, nocldstop, &[true], false, false)).0);
    }
}
