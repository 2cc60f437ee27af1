//! `cryo serve --listen ADDR:PORT --images-dir ROOT [--once]`: the receiver of streamed
//! images (cryo-stream's server).

use std::path::PathBuf;

use anyhow::Context as _;

use super::StreamArgs;

/// Receive images streamed by `cryo dump --to`, keep them under ROOT/NAME, serve them to
/// `cryo restore --from`, and restore them when asked
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The address to listen on; port 0 picks a free one (printed on stdout:
    /// `listening ADDR:PORT`)
    #[arg(long, value_name = "ADDR:PORT")]
    listen: String,

    /// Where images are kept, each under its name (created 0700 if absent)
    #[arg(short = 'D', long = "images-dir", value_name = "ROOT")]
    images_dir: PathBuf,

    /// Handle one connection, then exit: 0 when it committed, served or restored an image,
    /// 1 otherwise
    #[arg(long)]
    once: bool,

    #[command(flatten)]
    stream: StreamArgs,

    #[command(flatten)]
    action_script: super::ActionScriptArgs,
}

/// Binds, says where, serves.
pub fn run(args: Args) -> anyhow::Result<i32> {
    let psk = args.stream.psk("serve")?;
    // Tests pretend to be a receiver of another protocol version.
    let versions = match std::env::var("CRYO_TEST_STREAM_VERSIONS") {
        Ok(v) => v
            .split(',')
            .map(|n| n.trim().parse::<u32>())
            .collect::<Result<Vec<_>, _>>()
            .context("CRYO_TEST_STREAM_VERSIONS")?,
        Err(_) => cryo_stream::server::versions(),
    };
    let server = cryo_stream::Server::bind(cryo_stream::ServeOptions {
        listen: args.listen.clone(),
        root: args.images_dir.clone(),
        once: args.once,
        psk,
        timeout: std::time::Duration::from_secs(args.stream.stream_timeout.max(1)),
        versions,
        action_script: args.action_script.script(),
    })?;
    let addr = server.local_addr()?;
    println!("listening {addr}");
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    eprintln!(
        "cryo: serving images under {} on {addr}{}",
        args.images_dir.display(),
        if args.once { " (one connection)" } else { "" }
    );
    let outcome = server.run()?;
    eprintln!("cryo: {outcome}");
    Ok(0)
}
