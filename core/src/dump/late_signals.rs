//! A killing dump's last read, right before its kill: the signals queued to its frozen
//! processes since their state was collected (kill and sigqueue succeed on a frozen process,
//! and its queues only grow while it is frozen) are taken into their cores, written again, so
//! that none dies with the original. A `--leave-running` dump needs none: the process keeps
//! them.
//!
//! The time between this read and the kill is that of one SIGKILL per process (and, with a
//! network lock, of putting the connections back into repair mode); with a commit hook
//! (`--to`, migrate), the images leave after it: a signal arriving while they are sent dies
//! with the original, and is named in a warning ([`LateSignals::warn_lost`]).

use cryo_proto::image::{ProcessEntry, TaskCore};
use cryo_proto::ImageKind;
use nix::unistd::Pid;
use tracing::{debug, warn};

use crate::error::Result;
use crate::image::{names, ImageDir};
use crate::task::signals::{self, Queued};

/// How many times the queues are read again while signals keep arriving (each time some did,
/// the cores are written again): past the last, what arrives during that last write is lost
/// with the process, as a signal sent to one that dies.
const ROUNDS: u32 = 3;

/// A frozen process of a killing dump, its core as written and its queues as last read.
struct Frozen {
    /// Its pid in cryo's PID namespace.
    pid: Pid,
    tids: Vec<Pid>,
    /// In a group stop when frozen (a SIGCONT would continue it).
    stopped: bool,
    /// Running when frozen, with a SIGSTOP pending its image keeps (a SIGCONT would discard
    /// it).
    stop_pending: bool,
    core: TaskCore,
    seen: Queued,
}

/// The frozen processes of a killing dump, for the last read of their signal queues.
pub(super) struct LateSignals(Vec<Frozen>);

impl LateSignals {
    /// Each process: its pid, its threads, its entry (whether it was stopped, the stop
    /// signals its image keeps pending), its core as written and its queues as read then.
    pub(super) fn new<'a>(
        processes: impl IntoIterator<Item = (Pid, Vec<Pid>, &'a ProcessEntry, TaskCore, Queued)>,
    ) -> Self {
        Self(
            processes
                .into_iter()
                .map(|(pid, tids, entry, core, seen)| Frozen {
                    pid,
                    tids,
                    stopped: entry.stopped,
                    stop_pending: !entry.stopped
                        && (entry.stop_pending_shared != 0
                            || entry.stop_pending_threads.iter().any(|&set| set != 0)),
                    core,
                    seen,
                })
                .collect(),
        )
    }

    /// Reads every queue again; the cores of the processes whose queues took or lost a signal
    /// since are brought up to date and written again, and the queues read once more, up to
    /// [`ROUNDS`] times. Refuses a signal that arrived and would stop or continue a process
    /// ([`signals::take_arrived`]).
    pub(super) fn take(&mut self, images: &ImageDir) -> Result<()> {
        for round in 1..=ROUNDS {
            // Every read first, then the writes: nothing between the last read and the kill.
            let mut changed = Vec::new();
            for (k, p) in self.0.iter_mut().enumerate() {
                let now = signals::read_queued(p.pid, &p.tids)?;
                if now == p.seen {
                    continue;
                }
                if signals::take_arrived(p.pid, &mut p.core, &p.seen, &now, p.stopped, p.stop_pending)? {
                    changed.push(k);
                }
                p.seen = now;
            }
            if changed.is_empty() {
                return Ok(());
            }
            for k in changed {
                let p = &self.0[k];
                debug!(pid = %p.pid, round, "signals queued during the dump: its core written again");
                // Named as its PID namespace names it (the core's pid); read by the host's.
                images.replace(
                    &names::core(Pid::from_raw(p.core.pid)),
                    ImageKind::Core,
                    std::slice::from_ref(&p.core),
                )?;
            }
        }
        Ok(())
    }

    /// After the images left (a commit hook): names, in a warning, the processes that took a
    /// signal since the last read (it dies with them: the image sent does not have it).
    pub(super) fn warn_lost(&self) {
        for p in &self.0 {
            let Ok(now) = signals::read_queued(p.pid, &p.tids) else {
                continue;
            };
            if now == p.seen {
                continue;
            }
            let mut core = p.core.clone();
            if !matches!(
                signals::take_arrived(p.pid, &mut core, &p.seen, &now, p.stopped, p.stop_pending),
                Ok(false)
            ) {
                warn!(
                    pid = %p.pid,
                    "signals were queued to the process while its images were sent: they are \
                     not in the image and die with the original"
                );
            }
        }
    }
}
