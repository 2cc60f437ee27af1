//! `cryo demo` and its hidden workload `cryo __demo-workload`: the arguments; the demo itself
//! is the `cryo-demo` crate, which re-executes this binary as its workload.

use std::path::PathBuf;

/// Checkpoint a live workload, kill it, restore it and watch it continue (no arguments needed)
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Keep the working directory (images and the workload's log) instead of removing it
    #[arg(long)]
    keep: bool,

    /// Rehearse: SIGSTOP and SIGCONT stand in for the dump and the restore (tests the demo
    /// without the engine)
    #[arg(long, hide = true)]
    rehearse: bool,
}

/// Run the demo's workload in DIR (used by `cryo demo`)
#[derive(Debug, clap::Args)]
pub struct WorkloadArgs {
    /// Directory for the log and the input file
    dir: PathBuf,

    /// Say ready after this many ticks
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    ready_after: u64,

    /// Milliseconds between ticks
    #[arg(long, default_value_t = 100)]
    interval_ms: u64,

    /// Exit after this many ticks
    #[arg(long, default_value_t = 3000)]
    max_ticks: u64,
}

/// Runs the demo.
pub fn run(args: Args) -> anyhow::Result<i32> {
    cryo_demo::run(&cryo_demo::Options {
        keep: args.keep,
        rehearse: args.rehearse,
    })
}

/// Runs the demo's workload; returns only on error or after `--max-ticks`.
pub fn run_workload(args: WorkloadArgs) -> anyhow::Result<i32> {
    cryo_demo::workload::run(&cryo_demo::WorkloadOptions {
        dir: args.dir,
        ready_after: args.ready_after,
        interval_ms: args.interval_ms,
        max_ticks: args.max_ticks,
    })
}
