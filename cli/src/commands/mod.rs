//! One module per subcommand: each turns its arguments into the engine's options, calls the
//! engine and prints; `run` returns the exit status.

pub mod check;
pub mod demo;
pub mod dump;
pub mod kill;
pub mod restore;
pub mod show;
pub mod unlock;

use std::path::PathBuf;
use std::time::Duration;

/// `--action-script PATH [--action-script-timeout SECS]`, shared by dump and restore.
#[derive(Debug, clap::Args)]
pub struct ActionScriptArgs {
    /// Run this program at each stage (pre-dump, network-lock, post-dump; pre-restore,
    /// post-restore, network-unlock, post-resume), the stage in CRYO_HOOK_STAGE; a non-zero
    /// exit aborts the operation
    #[arg(long, value_name = "PATH")]
    action_script: Option<PathBuf>,

    /// Kill the action script (and fail) when one run takes longer than this; 0: no limit
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = cryo_core::DEFAULT_HOOK_TIMEOUT.as_secs(),
        requires = "action_script"
    )]
    action_script_timeout: u64,
}

impl ActionScriptArgs {
    /// The engine's form: the path made absolute (it runs from wherever cryo runs).
    pub fn script(&self) -> Option<cryo_core::ActionScript> {
        let path = self.action_script.as_ref()?;
        Some(cryo_core::ActionScript {
            path: std::path::absolute(path).unwrap_or_else(|_| path.clone()),
            timeout: (self.action_script_timeout > 0)
                .then(|| Duration::from_secs(self.action_script_timeout)),
        })
    }
}

/// `1.5 MiB`, for summaries.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// `12.3 ms`, for summaries.
pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// `1,2,3`.
pub fn pid_list(pids: &[cryo_core::Pid]) -> String {
    pids.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}
