//! `cryo restore -D DIR [--detach]`: bring the processes of an image directory back.

use std::path::PathBuf;

use anyhow::Context as _;
use cryo_core::restore::{restore, RestoreOptions};

use super::{ms, pid_list};

/// Restore the processes of an image directory; wait for them unless --detach
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The image directory to read
    #[arg(short = 'D', long = "images-dir", value_name = "DIR")]
    images_dir: PathBuf,

    /// Print the root pid(s), one a line, and exit once they run, instead of waiting for
    /// them and exiting with their status
    #[arg(short = 'd', long, visible_alias = "restore-detached")]
    detach: bool,

    /// Restore into a new PID namespace (the processes keep their pids inside it), so an
    /// image can be restored while its original, or another restore, still runs
    #[arg(long)]
    pidns: bool,

    /// Restore into a new network namespace with loopback up
    #[arg(long)]
    netns: bool,

    /// Restore TCP connections reset instead of live: the application's next read or write
    /// on them fails with ECONNRESET
    #[arg(long)]
    tcp_close: bool,

    #[command(flatten)]
    action_script: super::ActionScriptArgs,
}

impl Args {
    /// The engine's options for these arguments.
    pub fn options(&self) -> RestoreOptions {
        RestoreOptions {
            images_dir: self.images_dir.clone(),
            detach: self.detach,
            pidns: self.pidns,
            netns: self.netns,
            tcp_close: self.tcp_close,
            action_script: self.action_script.script(),
        }
    }
}

/// Restores; detached, prints the root pids; otherwise waits and returns the first root's
/// exit status (128 + signal when it was killed).
pub fn run(args: Args) -> anyhow::Result<i32> {
    let opts = args.options();
    let restored =
        restore(&opts).with_context(|| format!("restore from {}", opts.images_dir.display()))?;
    tracing::info!(
        pids = %pid_list(&restored.roots),
        elapsed = %ms(restored.elapsed),
        "restored"
    );
    if opts.detach {
        for pid in &restored.roots {
            println!("{pid}");
        }
        return Ok(0);
    }
    let roots = pid_list(&restored.roots);
    let code = restored
        .wait()
        .with_context(|| format!("waiting for restored pid {roots}"))?;
    tracing::info!(pids = %roots, code, "restored process ended");
    Ok(code)
}
