//! One module per subcommand: each turns its arguments into the engine's options, calls the
//! engine and prints; `run` returns the exit status.

pub mod check;
pub mod criu;
pub mod demo;
pub mod dump;
pub mod kill;
pub mod migrate;
pub mod restore;
pub mod serve;
pub mod show;
pub mod unlock;

use std::path::PathBuf;
use std::time::Duration;

/// `--action-script PATH [--action-script-timeout SECS]`, shared by dump and restore.
#[derive(Debug, clap::Args)]
pub struct ActionScriptArgs {
    /// Run this program at each stage (pre-dump, network-lock, post-dump; pre-restore,
    /// post-restore, network-unlock, post-resume; migrate-restored, migrate-done,
    /// migrate-rollback), the stage in CRYO_HOOK_STAGE; a non-zero exit aborts the operation
    #[arg(long, value_name = "PATH")]
    action_script: Option<PathBuf>,

    /// Kill the action script (and fail) when one run takes longer than this; 0: no limit
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = cryo_core::DEFAULT_HOOK_TIMEOUT.as_secs(),
        requires = "action_script"
    )]
    action_script_timeout: u64,
}

impl ActionScriptArgs {
    /// The engine's form: the path made absolute (it runs from wherever cryo runs).
    pub fn script(&self) -> Option<cryo_core::ActionScript> {
        let path = self.action_script.as_ref()?;
        Some(cryo_core::ActionScript {
            path: std::path::absolute(path).unwrap_or_else(|_| path.clone()),
            timeout: (self.action_script_timeout > 0)
                .then(|| Duration::from_secs(self.action_script_timeout)),
        })
    }
}

/// `--psk-file PATH [--stream-timeout SECS]`: how `dump --to`, `restore --from` and `serve`
/// authenticate and how long they wait for their peer.
#[derive(Debug, clap::Args)]
pub struct StreamArgs {
    /// The pre-shared key both ends of a stream hold: a regular file owned by root or you,
    /// mode 0600 or stricter, at least 16 bytes (e.g. `head -c 32 /dev/urandom | base64`)
    #[arg(long, value_name = "PATH")]
    pub psk_file: Option<PathBuf>,

    /// Give up on a peer silent for this many seconds
    #[arg(long, value_name = "SECS", default_value_t = cryo_stream::DEFAULT_TIMEOUT.as_secs())]
    pub stream_timeout: u64,
}

impl StreamArgs {
    /// The key, read by the key file rules; `what` says which flag needs it.
    pub fn psk(&self, what: &str) -> anyhow::Result<cryo_stream::Psk> {
        let path = self.psk_file.as_ref().ok_or_else(|| {
            anyhow::anyhow!("{what} needs --psk-file PATH (a key both ends hold)")
        })?;
        Ok(cryo_stream::Psk::load(path)?)
    }

    /// The peer at `addr`.
    pub fn peer(&self, addr: &str, what: &str) -> anyhow::Result<cryo_stream::Peer> {
        Ok(cryo_stream::Peer {
            addr: addr.to_string(),
            psk: self.psk(what)?,
            timeout: Duration::from_secs(self.stream_timeout.max(1)),
        })
    }
}

/// A private (0700) scratch directory for images passing through this host: on a memory
/// filesystem (/dev/shm) where there is one, else in TMPDIR. Removed when dropped.
pub fn scratch_dir(prefix: &str) -> anyhow::Result<cryo_stream::scratch::ScratchDir> {
    // What a killed run of the same kind left goes first.
    cryo_stream::scratch::sweep(prefix);
    cryo_stream::scratch::ScratchDir::new(prefix)
        .map_err(|e| anyhow::anyhow!("scratch directory {prefix}...: {e}"))
}

/// `1.5 MiB`, for summaries.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// `12.3 ms`, for summaries.
pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// `1,2,3`.
pub fn pid_list(pids: &[cryo_core::Pid]) -> String {
    pids.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}
