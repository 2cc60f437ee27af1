//! The tracing subscriber: fmt output to stderr or to a 0600 log file, written in the
//! calling thread (no background writer: restore forks from this process).

use std::fs::OpenOptions;
use std::io::IsTerminal as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Mutex;

use anyhow::Context as _;
use tracing_subscriber::EnvFilter;

/// The level for a count of `-v`: warn, info, debug, trace.
fn level(verbose: u8) -> &'static str {
    match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    }
}

/// Installs the global subscriber. RUST_LOG, when set, wins over `-v`. Returns whether logs
/// go to a file (then errors are logged there too, besides stderr).
pub fn init(verbose: u8, log_file: Option<&Path>) -> anyhow::Result<bool> {
    let filter = if std::env::var_os(EnvFilter::DEFAULT_ENV).is_some() {
        EnvFilter::try_from_default_env().context("RUST_LOG")?
    } else {
        EnvFilter::new(level(verbose))
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match log_file {
        Some(path) => {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(path)
                .with_context(|| format!("log file {}", path.display()))?;
            builder
                .with_ansi(false)
                .with_writer(Mutex::new(file))
                .try_init()
                .map_err(|e| anyhow::anyhow!("logging: {e}"))?;
            Ok(true)
        }
        None => {
            builder
                .with_ansi(std::io::stderr().is_terminal())
                .with_writer(std::io::stderr)
                .try_init()
                .map_err(|e| anyhow::anyhow!("logging: {e}"))?;
            Ok(false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels() {
        assert_eq!(
            (0..5).map(level).collect::<Vec<_>>(),
            ["warn", "info", "debug", "trace", "trace"]
        );
    }
}
