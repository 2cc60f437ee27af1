//! The restore pipeline: validate every image, recreate the processes, reshape, resume.

use std::path::PathBuf;

use nix::unistd::Pid;

use crate::error::Result;

/// What `cryo restore` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// The image directory (-D).
    pub images_dir: PathBuf,
    /// Return once the processes run, instead of waiting for them.
    pub detach: bool,
}

/// The processes a restore created, running.
#[derive(Debug)]
pub struct Restored {
    /// The root pids, children of this process.
    pub roots: Vec<Pid>,
    /// How long the restore took until the processes ran.
    pub elapsed: std::time::Duration,
}

impl Restored {
    /// Waits for the first root to end and returns the exit code cryo should exit with:
    /// its status, or 128 + the signal that killed it.
    pub fn wait(self) -> Result<i32> {
        Err(crate::Error::Restore("wait: not yet".into()))
    }
}

/// Restores the image directory `opts.images_dir`; the processes run when this returns.
pub fn restore(opts: &RestoreOptions) -> Result<Restored> {
    let _ = opts;
    Err(crate::Error::Restore("restore: not yet".into()))
}
