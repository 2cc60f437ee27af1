//! `cryo dump -t PID[,PID] -D DIR`: checkpoint process trees.

use std::path::PathBuf;

use anyhow::Context as _;
use cryo_core::Pid;
use cryo_core::{dump, DumpOptions};

use super::{mib, ms, pid_list};

/// Checkpoint the process trees rooted at the given pids into an image directory
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Root pid of a tree to dump; a comma list, and the flag may be repeated
    #[arg(
        short = 't',
        long = "tree",
        value_name = "PID[,PID]",
        required = true,
        value_delimiter = ',',
        value_parser = clap::value_parser!(i32).range(1..),
    )]
    pids: Vec<i32>,

    /// The image directory to write (created 0700; must be new or empty)
    #[arg(short = 'D', long = "images-dir", value_name = "DIR")]
    images_dir: PathBuf,

    /// Leave the processes running after the dump (default: kill them)
    #[arg(short = 'R', long)]
    leave_running: bool,

    /// Dump the controlling terminal too (a process started from a shell)
    #[arg(short = 'j', long)]
    shell_job: bool,

    /// Capture established TCP connections (with TCP_REPAIR)
    #[arg(long)]
    tcp_established: bool,

    #[command(flatten)]
    action_script: super::ActionScriptArgs,
    /// Accept unix sockets connected to a peer outside the dumped trees: they are restored
    /// as broken connections (reads get EOF, writes EPIPE), reported as "external-peer"
    #[arg(long)]
    ext_unix_sk: bool,
}

impl Args {
    /// The engine's options for these arguments.
    pub fn options(&self) -> DumpOptions {
        let pids = self.pids.iter().copied().map(Pid::from_raw).collect();
        let mut opts = DumpOptions::new(pids, self.images_dir.clone());
        opts.leave_running = self.leave_running;
        opts.shell_job = self.shell_job;
        opts.tcp_established = self.tcp_established;
        opts.action_script = self.action_script.script();
        opts.ext_unix_sk = self.ext_unix_sk;
        opts
    }
}

/// Dumps, then prints a one-line summary on stderr.
pub fn run(args: Args) -> anyhow::Result<i32> {
    let opts = args.options();
    let summary = dump(&opts).with_context(|| {
        format!(
            "dump of pid {} into {}",
            pid_list(&opts.pids),
            opts.images_dir.display()
        )
    })?;
    let line = format!(
        "dumped pid {} into {}: {} of pages, frozen {}, total {}{}",
        pid_list(&summary.pids),
        opts.images_dir.display(),
        mib(summary.pages_bytes),
        ms(summary.frozen),
        ms(summary.total),
        if opts.leave_running {
            " (left running)"
        } else {
            ""
        },
    );
    tracing::info!(
        pids = %pid_list(&summary.pids),
        pages_bytes = summary.pages_bytes,
        frozen_us = summary.frozen.as_micros() as u64,
        total_us = summary.total.as_micros() as u64,
        "dumped"
    );
    eprintln!("cryo: {line}");
    Ok(0)
}
