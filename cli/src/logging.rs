//! The tracing subscriber: fmt output to stderr or to a 0600 log file, written in the
//! calling thread (no background writer: restore forks from this process).
//!
//! Restore forks the processes it rebuilds from cryo, and they log while they set up their
//! fds, until their fd table is replaced by the image's. A log line must never land in a fd
//! that now means something else to the restored process (the log file's number reused by a
//! socket it made): every write first checks that the fd is still the file it was.

use std::fs::OpenOptions;
use std::io::{IsTerminal as _, Write};
use std::os::fd::{AsFd, BorrowedFd};
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
                .with_writer(Mutex::new(Guarded::new(file)))
                .try_init()
                .map_err(|e| anyhow::anyhow!("logging: {e}"))?;
            Ok(true)
        }
        None => {
            builder
                .with_ansi(std::io::stderr().is_terminal())
                .with_writer(Mutex::new(Guarded::new(std::io::stderr())))
                .try_init()
                .map_err(|e| anyhow::anyhow!("logging: {e}"))?;
            Ok(false)
        }
    }
}

/// A log destination written only while its fd is still the file it was opened as; after
/// that, lines are dropped.
struct Guarded<W> {
    out: W,
    identity: Option<(u64, u64)>,
}

/// The (device, inode) the fd refers to now: one fstat per log line.
fn identity(fd: BorrowedFd<'_>) -> Option<(u64, u64)> {
    nix::sys::stat::fstat(fd)
        .ok()
        .map(|st| (st.st_dev, st.st_ino))
}

impl<W: AsFd> Guarded<W> {
    fn new(out: W) -> Self {
        let identity = identity(out.as_fd());
        Self { out, identity }
    }

    fn still_ours(&self) -> bool {
        self.identity.is_some() && identity(self.out.as_fd()) == self.identity
    }
}

impl<W: AsFd + Write> Write for Guarded<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.still_ours() {
            self.out.write(buf)
        } else {
            Ok(buf.len())
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;

    #[test]
    fn a_log_fd_taken_over_by_another_file_gets_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let mut w = Guarded::new(File::create(&log).unwrap());
        w.write_all(b"one\n").unwrap();
        // The same number now names another file, as in a restored process.
        let other = File::create(dir.path().join("other")).unwrap();
        let placeholder = File::open("/dev/null").unwrap();
        let mut fd = std::os::fd::OwnedFd::from(std::mem::replace(&mut w.out, placeholder));
        nix::unistd::dup2(&other, &mut fd).unwrap();
        w.out = File::from(fd);
        w.write_all(b"two\n").unwrap();
        assert_eq!(std::fs::read(&log).unwrap(), b"one\n");
        assert_eq!(std::fs::read(dir.path().join("other")).unwrap(), b"");
    }

    #[test]
    fn levels() {
        assert_eq!(
            (0..5).map(level).collect::<Vec<_>>(),
            ["warn", "info", "debug", "trace", "trace"]
        );
    }
}
