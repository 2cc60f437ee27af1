//! `cryo demo`: checkpoint a live workload, kill it, restore it, and show it continuing.
//!
//! The workload is the calling binary re-executed as `BINARY __demo-workload DIR` (see
//! [`workload`] and [`WORKLOAD_COMMAND`]): a counter, a regular file read one line per tick
//! from its middle, a pipe drained one chunk per tick, and one TCP connection on 127.0.0.1 to
//! which it sends a line per tick. The demo
//!
//! 1. starts it in a temporary directory, connects to it as its TCP client (the demo is not
//!    dumped: it is the peer that must never notice) and waits on a ready pipe until it has
//!    ticked; it answers every tick line on the connection with a line of its own;
//! 2. dumps it with the engine (kill mode, established TCP connections included) into
//!    `DIR/img` and checks its pid is gone;
//! 3. restores it (detached), waits for a few more ticks, on the log and on the connection;
//! 4. checks that the counter, the file offset and the pipe data all continue exactly where
//!    they stopped, that the connection was never reset or closed, that its tick lines go on
//!    without a gap or a repeat and that the workload got every line the demo sent, then
//!    kills it and removes the directory.
//!
//! Everything runs on the caller's one thread (restore forks from this process): the
//! connection is read without blocking, with poll.
//!
//! With [`Options::rehearse`] the same demo runs with SIGSTOP and SIGCONT standing in for the
//! dump and the restore, so everything around the engine is tested on its own.
//!
//! ```text
//! scenario   the four steps, printed as they happen
//!  ├─ engine     dump/restore with cryo-core, or the SIGSTOP/SIGCONT rehearsal
//!  ├─ process    the workload process: start, ready handshake, wait for ticks, kill
//!  ├─ client     this demo as the workload's TCP client
//!  └─ report     the verdicts (the workload went on where it stopped) and the figures
//! workload   the re-executed process itself       ticks   the lines both sides agree on
//! ```

#![warn(missing_docs)]

mod client;
mod engine;
mod process;
mod report;
mod scenario;
mod ticks;
pub mod workload;

use std::time::Duration;

use anyhow::Context as _;

pub use workload::WorkloadOptions;

/// The hidden subcommand of the calling binary that runs [`workload::run`]: the demo starts
/// its workload as `current_exe() __demo-workload DIR ...`.
pub const WORKLOAD_COMMAND: &str = "__demo-workload";

/// Longest wait for the workload to be ready, to die, or to tick after the restore.
const TIMEOUT: Duration = Duration::from_secs(10);
/// How often the log is looked at while waiting for ticks.
const POLL: Duration = Duration::from_millis(20);

/// How the demo runs.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Keep the working directory (images and the workload's log) instead of removing it.
    pub keep: bool,
    /// SIGSTOP and SIGCONT stand in for the dump and the restore (tests the demo without the
    /// engine).
    pub rehearse: bool,
}

/// Runs the demo; any failure comes back as an error saying which step failed and why. The
/// `Ok` value is the exit status.
///
/// The calling binary must run [`workload::run`] when started as
/// `BINARY` [`WORKLOAD_COMMAND`] `DIR --ready-after N`.
pub fn run(options: &Options) -> anyhow::Result<i32> {
    let mut tmp = tempfile::Builder::new()
        .prefix("cryo-demo.")
        .tempdir()
        .context("create a temporary directory")?;
    tmp.disable_cleanup(options.keep);
    let dir = tmp.path().to_path_buf();
    println!("cryo demo: checkpoint a live process, kill it, restore it, watch it continue");
    println!("  working directory {}", dir.display());
    let engine = if options.rehearse {
        println!("  rehearsal: SIGSTOP and SIGCONT stand in for the dump and the restore");
        engine::Engine::Rehearsal
    } else {
        engine::Engine::Cryo
    };
    let result = scenario::demo(&dir, engine);
    if options.keep {
        println!(
            "  kept {} (see the images with: cryo show -D {})",
            dir.display(),
            dir.join("img").display()
        );
    }
    result.map(|()| 0)
}
