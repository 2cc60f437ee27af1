//! `cryo dump -t PID[,PID] -D DIR`: checkpoint process trees; `--to ADDR:PORT --name NAME`
//! streams the images to a receiver (`cryo serve`) instead, and the processes die only once
//! it confirmed them.

use std::path::PathBuf;

use anyhow::Context as _;
use cryo_core::Pid;
use cryo_core::{dump, DumpOptions};

use super::{mib, ms, pid_list};

/// Checkpoint the process trees rooted at the given pids into an image directory
#[derive(Debug, clap::Args)]
#[command(args_override_self = true)]
#[command(group(clap::ArgGroup::new("destination").required(true).args(["images_dir", "to"])))]
pub struct Args {
    /// Root pid of a tree to dump; a comma list, and the flag may be repeated
    #[arg(
        short = 't',
        long = "tree",
        value_name = "PID[,PID]",
        required = true,
        value_delimiter = ',',
        value_parser = clap::value_parser!(i32).range(1..),
    )]
    pids: Vec<i32>,

    /// The image directory to write (created 0700; it may hold other files, never an image)
    #[arg(short = 'D', long = "images-dir", value_name = "DIR")]
    images_dir: Option<PathBuf>,

    /// Stream the images to the receiver (`cryo serve`) at this address instead of -D; the
    /// processes are killed only once it confirmed the complete image
    #[arg(long, value_name = "ADDR:PORT", requires = "name")]
    to: Option<String>,

    /// The image's name on the receiver (with --to)
    #[arg(long, value_name = "NAME", requires = "to")]
    name: Option<String>,

    #[command(flatten)]
    stream: super::StreamArgs,

    /// Leave the processes running after the dump (default: kill them)
    #[arg(short = 'R', long)]
    leave_running: bool,

    /// Dump the controlling terminal too (a process started from a shell)
    #[arg(short = 'j', long)]
    shell_job: bool,

    /// Capture established TCP connections (with TCP_REPAIR)
    #[arg(long)]
    tcp_established: bool,

    /// Dump a TCP listener without the connections waiting in its accept queue (handshake
    /// done, not accepted yet) instead of refusing it: their clients are reset when the
    /// dump kills the process, and the restored listener does not have them
    #[arg(long)]
    skip_in_flight: bool,

    /// Dump TCP connections (and sockets closed after one) to come back closed, as CRIU's
    /// dump --tcp-close: nothing of them is captured and no network lock is taken; their
    /// peers see them closed when the dump kills the process; the restored sockets read
    /// end-of-file and fail writes with EPIPE
    #[arg(long)]
    tcp_close: bool,

    #[command(flatten)]
    action_script: super::ActionScriptArgs,
    /// Accept unix sockets connected to a peer outside the dumped trees: they are restored
    /// as broken connections (reads get EOF, writes EPIPE), reported as "external-peer"
    #[arg(long)]
    ext_unix_sk: bool,

    /// Write only what a destination needs to judge whether it can restore these processes
    /// (check.img: files and their hashes, CPU and kernel features, memory, pids, ports,
    /// ids; no pages), for `cryo restore --check-only`; the processes are always left running
    #[arg(long)]
    check_only: bool,

    /// Stream memory while the processes run, round after round (each the pages written
    /// since the last, tracked with userfaultfd write-protect), then freeze and send only
    /// what changed since: a short freeze for a large process (with --to)
    #[arg(long, requires = "to", conflicts_with = "check_only")]
    pre_copy: bool,

    /// Accepted as CRIU's: its dump writes nothing to it either (restore's --pidfile does)
    #[arg(long, value_name = "FILE", hide = true)]
    pidfile: Option<PathBuf>,

    #[command(flatten)]
    criu: super::criu::CriuArgs,
}

impl Args {
    /// The image directory given with -D, if any.
    pub fn images_dir(&self) -> Option<&std::path::Path> {
        self.images_dir.as_deref()
    }

    /// The engine's options for these arguments.
    pub fn options(&self) -> DumpOptions {
        let pids = self.pids.iter().copied().map(Pid::from_raw).collect();
        // With --to, the directory is a scratch one chosen when the dump runs.
        let mut opts = DumpOptions::new(pids, self.images_dir.clone().unwrap_or_default());
        opts.leave_running = self.leave_running;
        opts.shell_job = self.shell_job;
        opts.tcp_established = self.tcp_established;
        opts.tcp_skip_in_flight = self.skip_in_flight;
        opts.tcp_close = self.tcp_close;
        opts.action_script = self.action_script.script();
        opts.ext_unix_sk = self.ext_unix_sk;
        opts.check_only = self.check_only;
        opts.pre_copy = self.pre_copy;
        self.criu.apply_to_dump(&mut opts);
        opts
    }
}

/// Sets `opts` up for a dump streamed to `peer` (`--to ADDR --name NAME`): the commit hook
/// that sends the images and waits for the receiver's confirmation; with `pre_copy`, the
/// stream opened now (a failure to reach the receiver ends here, nothing touched), the sink
/// the pre-copy rounds go to while the processes run, and the checkpoint id announced first.
/// `opts.images_dir` must be a private scratch directory.
pub fn stream_to(
    opts: &mut DumpOptions,
    peer: cryo_stream::Peer,
    to: &str,
    name: &str,
    pre_copy: bool,
) -> anyhow::Result<()> {
    let (to_text, name) = (to.to_string(), name.to_string());
    // --pre-copy: the stream opens first (the rounds go while the processes run) and the
    // commit hook finishes it.
    let store = match pre_copy {
        true => {
            let id = new_checkpoint_id()?;
            let store = peer
                .open_store(&name, &id)
                .with_context(|| format!("stream to {to} as {name:?}"))?;
            opts.pre_copy = true;
            opts.checkpoint_id = Some(id);
            Some(std::sync::Arc::new(std::sync::Mutex::new(Some(store))))
        }
        false => None,
    };
    if let Some(store) = &store {
        let (store, to_text, name) = (store.clone(), to_text.clone(), name.clone());
        opts.pre_copy_sink = Some(cryo_core::PreCopySink::new(move |file, size, contents| {
            let mut store = store.lock().map_err(|_| "the stream's lock is poisoned")?;
            let store = store.as_mut().ok_or("the stream is closed")?;
            store
                .send_file(file, size, contents)
                .map_err(|e| format!("stream to {to_text} as {name:?}: {e}").into())
        }));
    }
    opts.commit = Some(cryo_core::CommitHook::new(move |dir, checkpoint_id, _| {
        let images = cryo_core::ImageDir::open(dir)?;
        let open = store
            .as_ref()
            .and_then(|s| s.lock().ok().and_then(|mut s| s.take()));
        match open {
            Some(store) => store.finish(&images),
            None => peer.store(&images, &name, checkpoint_id),
        }
        .map(drop)
        .map_err(|e| format!("stream to {to_text} as {name:?}: {e}").into())
    }));
    Ok(())
}

/// " (after N pre-copy rounds: sizes)" of a dump with pre-copy rounds, else nothing.
pub fn pre_copy_rounds(summary: &cryo_core::DumpSummary) -> String {
    if summary.pre_copy_rounds.is_empty() {
        return String::new();
    }
    let each: Vec<String> = summary.pre_copy_rounds.iter().map(|&b| mib(b)).collect();
    format!(
        " (after {} pre-copy round{}: {})",
        each.len(),
        if each.len() == 1 { "" } else { "s" },
        each.join(", ")
    )
}

/// A fresh checkpoint id, given to an image before its dump starts (a stream announces it
/// first).
pub fn new_checkpoint_id() -> anyhow::Result<String> {
    Ok(std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .context("a checkpoint id")?
        .trim()
        .to_string())
}

/// Dumps, then prints a one-line summary on stderr.
pub fn run(args: Args) -> anyhow::Result<i32> {
    args.criu.check_yard(args.images_dir.as_deref())?;
    let mut opts = args.options();
    // --to: the images go to a private scratch directory, and from there to the receiver
    // before the point of no return (the dump's commit hook).
    let mut scratch = None;
    let whereto = match (&args.to, &args.name) {
        (Some(to), Some(name)) => {
            let peer = args.stream.peer(to, "dump --to")?;
            let dir = super::scratch_dir("cryo-dump-")?;
            opts.images_dir = dir.path().to_path_buf();
            scratch = Some(dir);
            stream_to(&mut opts, peer, to, name, args.pre_copy)?;
            format!("{to} as {}", args.name.as_deref().unwrap_or_default())
        }
        _ => opts.images_dir.display().to_string(),
    };
    let dumped = dump(&opts);
    // The scratch copy goes whatever happened (the receiver holds the image, or nothing).
    drop(scratch);
    let dumped = match dumped {
        // A check dump refused for a state of the moment is a temporary finding of its own:
        // exit 2, as `restore --check-only` does (retry the check later).
        Err(e) if opts.check_only && e.is_temporary() => {
            eprintln!(
                "cryo: check of pid {} (temporary, retry later): {e}",
                pid_list(&opts.pids)
            );
            return Ok(2);
        }
        // One no host of this kind can restore (a Landlock domain): a permanent finding,
        // exit 3, as `restore --check-only` exits on one.
        Err(e) if opts.check_only && e.is_permanent() => {
            eprintln!(
                "cryo: check of pid {} (permanent, no restore can bring it back): {e}",
                pid_list(&opts.pids)
            );
            return Ok(3);
        }
        other => other,
    };
    let summary =
        dumped.with_context(|| format!("dump of pid {} into {whereto}", pid_list(&opts.pids)))?;
    let rounds = pre_copy_rounds(&summary);
    let line = format!(
        "{} pid {} into {}: {} of pages{}{rounds}, frozen {}, total {}{}",
        if opts.check_only { "checked" } else { "dumped" },
        pid_list(&summary.pids),
        whereto,
        mib(summary.pages_bytes),
        if opts.check_only {
            " (not written)"
        } else {
            ""
        },
        ms(summary.frozen),
        ms(summary.total),
        if opts.leave_running || opts.check_only {
            " (left running)"
        } else {
            ""
        },
    );
    tracing::info!(
        pids = %pid_list(&summary.pids),
        pages_bytes = summary.pages_bytes,
        frozen_us = summary.frozen.as_micros() as u64,
        total_us = summary.total.as_micros() as u64,
        "dumped"
    );
    eprintln!("cryo: {line}");
    Ok(0)
}
