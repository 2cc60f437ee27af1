//! `cryo show -D DIR [--json]`: print an image directory.

use std::path::PathBuf;

/// Print an image directory: processes, threads, fds, memory
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The image directory to read
    #[arg(short = 'D', long = "images-dir", value_name = "DIR")]
    images_dir: PathBuf,

    /// Print JSON (the records, bytes fields summarised by length) instead of text
    #[arg(long)]
    json: bool,
}

/// Prints the image directory on stdout.
pub fn run(args: Args) -> anyhow::Result<i32> {
    if args.json {
        let value = cryo_core::show::to_json(&args.images_dir)?;
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print!("{}", cryo_core::show::render_text(&args.images_dir)?);
    }
    Ok(0)
}
