//! Interruption of a dump or restore by SIGINT or SIGTERM: both are held pending while the
//! operation runs ([`Held`]), and the pipeline looks for them between steps ([`check`]): it
//! then fails with [`Interrupted`] and every guard it holds rolls back in order (connections
//! out of repair mode, network lock removed, target resumed).
//!
//! Tests reach a given instant through `CRYO_TEST_PAUSE_AT=<point>`: cryo prints
//! `cryo: paused at <point>` on stderr there and waits (up to 30 s) for SIGINT or SIGTERM,
//! so that a signal, SIGKILL included, lands exactly there. Points of a dump: `frozen`,
//! `locked`, `collected`, `written`; of a restore: `child-fds` (in a process of the tree, its
//! fds open, before it stops), `spawned`, `reshaped`, `unlocked`; of both: `call:<n>` (before
//! the nth remote call of the run, the thread holding our registers) and `exit:<n>` (the
//! thread stopped at the exit of that call).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::sys::termination;

/// The operation was interrupted by a signal between two of its steps.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("interrupted by {} {stage}", signal_name(*.signal))]
pub struct Interrupted {
    /// The signal (SIGINT or SIGTERM).
    pub signal: i32,
    /// Where the operation was.
    pub stage: &'static str,
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        _ => "a signal",
    }
}

/// SIGINT and SIGTERM held pending for as long as it lives; dropping it discards the ones
/// still pending (the operation has answered them) and restores the mask.
#[derive(Debug)]
pub struct Held {
    old_mask: Option<u64>,
}

impl Held {
    /// Holds SIGINT and SIGTERM in the calling thread (a failure to is logged: the operation
    /// then simply dies on them, as before).
    pub fn new() -> Self {
        match termination::hold() {
            Ok(old) => Self {
                old_mask: Some(old),
            },
            Err(e) => {
                tracing::warn!("cannot hold SIGINT and SIGTERM: {e}");
                Self { old_mask: None }
            }
        }
    }
}

impl Default for Held {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(old) = self.old_mask {
            if let Err(e) = termination::release(old) {
                tracing::warn!("cannot restore the signal mask: {e}");
            }
        }
    }
}

/// Fails with [`Interrupted`] if SIGINT or SIGTERM is pending; `stage` says where we are.
pub fn check(stage: &'static str) -> Result<(), Interrupted> {
    match termination::pending() {
        Ok(Some(signal)) => Err(Interrupted { signal, stage }),
        _ => Ok(()),
    }
}

fn pause_at() -> Option<&'static str> {
    static AT: OnceLock<Option<String>> = OnceLock::new();
    AT.get_or_init(|| std::env::var("CRYO_TEST_PAUSE_AT").ok())
        .as_deref()
}

/// The test hook for a guardian slow to start (a loaded machine): in a freshly forked
/// guardian, waits `CRYO_TEST_GUARDIAN_LATE_MS` milliseconds before anything else.
pub(crate) fn guardian_late() {
    if let Some(ms) = std::env::var("CRYO_TEST_GUARDIAN_LATE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        std::thread::sleep(Duration::from_millis(ms));
    }
}

/// The test hook: waits at `point` when `CRYO_TEST_PAUSE_AT` names it, until a termination
/// signal, 30 s, or (with `CRYO_TEST_RESUME_FILE`) until that file exists.
pub fn pause_point(point: &str) {
    if pause_at() != Some(point) {
        return;
    }
    eprintln!("cryo: paused at {point}");
    let resume = std::env::var_os("CRYO_TEST_RESUME_FILE").map(std::path::PathBuf::from);
    let until = Instant::now() + Duration::from_secs(30);
    while Instant::now() < until
        && !matches!(termination::pending(), Ok(Some(_)))
        && !resume.as_ref().is_some_and(|f| f.exists())
    {
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The test hook around remote call number n of this run: `call:<n>` before the thread
/// runs it, `exit:<n>` once it stopped at its exit. Costs nothing without the variable.
pub(crate) fn pause_at_call(before: bool) {
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    let Some(at) = pause_at() else { return };
    let n = if before {
        CALLS.fetch_add(1, Ordering::Relaxed) + 1
    } else {
        CALLS.load(Ordering::Relaxed)
    };
    let point = if before {
        format!("call:{n}")
    } else {
        format!("exit:{n}")
    };
    if at == point {
        pause_point(&point);
    }
}
