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
        let act = actions
            .iter()
            .find(|a| a.signo == signo)
            .map(|a| KernelSigaction {
                handler: a.handler,
                flags: a.flags,
                restorer: a.restorer,
                mask: a.mask,
            })
            .unwrap_or_default();
        signal::set_action(signo, &act)?;
    }
    Ok(())
}

/// Queues the dumped pending signals again (process-wide and thread-directed) in the calling
/// process, whose signals are all blocked, so they wait exactly as before.
pub fn requeue(shared: &[SigInfo], thread: &[SigInfo]) -> std::io::Result<()> {
    for (infos, is_thread) in [(shared, false), (thread, true)] {
        for info in infos {
            let raw: [u8; 128] = info.raw.as_slice().try_into().map_err(|_| {
                std::io::Error::other(format!("signal {}: siginfo is not 128 bytes", info.signo))
            })?;
            signal::queue_to_self(&raw, is_thread)?;
        }
    }
    Ok(())
}
