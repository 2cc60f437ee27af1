//! The dump pipeline: resolve, freeze, collect, write, then kill or release.

use std::path::PathBuf;

use nix::unistd::Pid;

use crate::error::Result;

/// What `cryo dump` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct DumpOptions {
    /// The root pids (-t).
    pub pids: Vec<Pid>,
    /// The image directory (-D).
    pub images_dir: PathBuf,
    /// Leave the target running after the dump.
    pub leave_running: bool,
    /// Dump the controlling terminal too.
    pub shell_job: bool,
    /// Capture established TCP connections.
    pub tcp_established: bool,
}

/// What a dump did, for the command line to print.
#[derive(Debug, Clone, Default)]
pub struct DumpSummary {
    /// Every pid dumped.
    pub pids: Vec<Pid>,
    /// Bytes of pages written.
    pub pages_bytes: u64,
    /// How long the target was frozen.
    pub frozen: std::time::Duration,
    /// How long the whole dump took.
    pub total: std::time::Duration,
}

/// Dumps the trees rooted at `opts.pids` into `opts.images_dir`.
pub fn dump(opts: &DumpOptions) -> Result<DumpSummary> {
    let _ = opts;
    Err(crate::Error::Restore("dump: not yet".into()))
}
