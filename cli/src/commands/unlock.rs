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
    // A typo must not read as "nothing was locked": the lock id is derived from the path.
    if !args.images_dir.is_dir() {
        anyhow::bail!(
            "unlock {}: no such image directory (give the -D of the dump)",
            args.images_dir.display()
        );
    }
    let (id, found) = cryo_core::unlock(&args.images_dir)
        .with_context(|| format!("unlock {}", args.images_dir.display()))?;
    if found {
        println!("network lock {id} removed");
    } else {
        println!("no network lock {id} installed");
    }
    Ok(0)
}
