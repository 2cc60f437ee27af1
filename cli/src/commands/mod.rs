//! One module per subcommand: each turns its arguments into the engine's options, calls the
//! engine and prints; `run` returns the exit status.

pub mod check;
pub mod demo;
pub mod demo_workload;
pub mod dump;
pub mod kill;
pub mod restore;
pub mod show;
pub mod unlock;

use std::time::Duration;

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
