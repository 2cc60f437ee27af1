//! What checkpoints and restores the demo's workload: the engine, or a rehearsal with
//! SIGSTOP and SIGCONT standing in for it.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use cryo_core::Pid;
use cryo_core::{dump, DumpOptions, DumpSummary};
use cryo_core::{restore, RestoreOptions, Restored};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};

/// What checkpoints and restores the workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Engine {
    /// cryo-core: dump (kill mode) and restore (detached).
    Cryo,
    /// SIGSTOP and SIGCONT: the process is never gone, only stopped.
    Rehearsal,
}

impl Engine {
    /// Checkpoints `pid` into `images`: with the engine in kill mode, established TCP
    /// connections included.
    pub(crate) fn dump(self, pid: Pid, images: &Path) -> anyhow::Result<DumpSummary> {
        match self {
            Self::Cryo => {
                let mut opts = DumpOptions::new(vec![pid], images);
                opts.tcp_established = true;
                dump(&opts).map_err(Into::into)
            }
            Self::Rehearsal => {
                let start = Instant::now();
                kill(pid, Signal::SIGSTOP).context("SIGSTOP")?;
                match waitpid(pid, Some(WaitPidFlag::WUNTRACED)).context("waitpid")? {
                    WaitStatus::Stopped(..) => {}
                    other => bail!("the workload did not stop: {other:?}"),
                }
                fs::create_dir(images).with_context(|| format!("mkdir {}", images.display()))?;
                Ok(DumpSummary {
                    pids: vec![pid],
                    pages_bytes: 0,
                    frozen: Duration::ZERO,
                    total: start.elapsed(),
                    frozen_at: None,
                    ..DumpSummary::default()
                })
            }
        }
    }

    /// Brings `pid` back from `images`: with the engine detached, so the restored process is
    /// this process's child again.
    pub(crate) fn restore(self, pid: Pid, images: &Path) -> anyhow::Result<Restored> {
        match self {
            Self::Cryo => {
                let mut opts = RestoreOptions::new(images);
                opts.detach = true;
                restore(&opts).map_err(Into::into)
            }
            Self::Rehearsal => {
                let start = Instant::now();
                kill(pid, Signal::SIGCONT).context("SIGCONT")?;
                Ok(Restored {
                    init: None,
                    roots: vec![pid],
                    elapsed: start.elapsed(),
                })
            }
        }
    }
}
