//! `cryo check [--json] [--no-cache]`: probe the kernel features cryo needs.

use std::path::Path;

use cryo_core::check::{self, DEFAULT_CACHE_PATH};

/// Probe every kernel feature cryo uses (cached per boot); exit 1 if a required one is missing
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print a JSON array of probes instead of a table
    #[arg(long)]
    json: bool,

    /// Probe again even if this boot's result is cached (and refresh the cache)
    #[arg(long)]
    no_cache: bool,
}

/// Probes (or reads the cache), prints, and returns 1 when a required feature is missing.
pub fn run(args: Args) -> anyhow::Result<i32> {
    let cache = Path::new(DEFAULT_CACHE_PATH);
    let probes = if args.no_cache {
        let probes = check::run_all();
        // Same rule as `cached`: a failed run is not remembered, it is probed again.
        if check::all_required_found(&probes) {
            if let Err(err) = check::store(cache, &probes) {
                tracing::warn!(path = %cache.display(), %err, "could not refresh the check cache");
            }
        }
        probes
    } else {
        check::cached(cache)
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&probes)?);
    } else {
        print!("{}", check::render_table(&probes));
    }
    Ok(if check::all_required_found(&probes) {
        0
    } else {
        1
    })
}
