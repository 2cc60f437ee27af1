//! `cryo kill -D DIR`: end the processes a `--leave-running` dump left running, without a
//! FIN or RST to their TCP peers, so the image restores against live connections.

use std::path::PathBuf;

use anyhow::Context as _;

/// Kill what a --leave-running dump left running, silently for its TCP peers
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The image directory of the --leave-running dump
    #[arg(short = 'D', long = "images-dir", value_name = "DIR")]
    images_dir: PathBuf,
}

/// Kills them; prints what was done.
pub fn run(args: Args) -> anyhow::Result<i32> {
    let retired = cryo_core::kill(&args.images_dir)
        .with_context(|| format!("kill the processes of {}", args.images_dir.display()))?;
    println!("killed {}", super::pid_list(&retired.pids));
    if !retired.network_lock.is_empty() {
        println!(
            "{} connections held silent by network lock {} until `cryo restore -D {}`",
            retired.connections,
            retired.network_lock,
            args.images_dir.display()
        );
    }
    Ok(0)
}
