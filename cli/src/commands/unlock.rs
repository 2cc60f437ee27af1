//! `cryo unlock -D DIR`: remove the network lock a dump left installed.

use std::path::PathBuf;

use anyhow::Context as _;

/// Remove the network lock a dump left installed (its connections' packets flow again)
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The image directory of the dump
    #[arg(short = 'D', long = "images-dir", value_name = "DIR")]
    images_dir: PathBuf,
}

/// Removes the lock; prints what was done.
pub fn run(args: Args) -> anyhow::Result<i32> {
    let (id, found) = cryo_core::unlock(&args.images_dir)
        .with_context(|| format!("unlock {}", args.images_dir.display()))?;
    if found {
        println!("network lock {id} removed");
    } else {
        println!("no network lock {id} installed");
    }
    Ok(0)
}
