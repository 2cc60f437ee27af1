//! `cryo restore -D DIR [--detach]`: bring the processes of an image directory back;
//! `--from ADDR:PORT --name NAME` fetches the image from a receiver (`cryo serve`) first.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use cryo_core::{restore, RestoreOptions};

use super::{ms, pid_list};

/// Restore the processes of an image directory; wait for them unless --detach
#[derive(Debug, clap::Args)]
#[command(args_override_self = true)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["images_dir", "from"])))]
pub struct Args {
    /// The image directory to read
    #[arg(short = 'D', long = "images-dir", value_name = "DIR")]
    images_dir: Option<PathBuf>,

    /// Fetch the image from the receiver (`cryo serve`) at this address, verified against
    /// its manifest, into a private directory on /dev/shm removed after the restore
    #[arg(long, value_name = "ADDR:PORT", requires = "name")]
    from: Option<String>,

    /// The image's name on the receiver (with --from)
    #[arg(long, value_name = "NAME", requires = "from")]
    name: Option<String>,

    /// Have the receiver restore the image itself, on its host, instead of fetching it
    /// (prints the root pids it restored)
    #[arg(long, requires = "from")]
    on_receiver: bool,

    #[command(flatten)]
    stream: super::StreamArgs,

    /// Print the root pid(s), one a line, and exit once they run, instead of waiting for
    /// them and exiting with their status
    #[arg(short = 'd', long, visible_alias = "restore-detached")]
    detach: bool,

    /// Restore into a new PID namespace (the processes keep their pids inside it), so an
    /// image can be restored while its original, or another restore, still runs
    #[arg(long)]
    pidns: bool,

    /// Restore into a new network namespace with loopback up
    #[arg(long)]
    netns: bool,

    /// Restore TCP connections closed instead of live, as CRIU does: the application's reads
    /// return end-of-file, its writes fail with EPIPE, poll reports POLLHUP
    #[arg(long)]
    tcp_close: bool,

    #[command(flatten)]
    action_script: super::ActionScriptArgs,
    /// How long a restored TCP connection's peer has to answer the probe sent once its
    /// packets flow again before cryo fails the connection ("timeout"): 500ms, 2s, or
    /// seconds; 0 sends no probe
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    peer_timeout: Duration,

    /// Queue this signal (name or number: USR1, SIGRTMIN+2, 10) to every restored process
    /// with at least one broken connection once the verdict is in, with sigqueue: si_value
    /// is the number of its broken connections
    #[arg(long, value_name = "SIG", value_parser = parse_signal)]
    notify_signal: Option<i32>,

    /// Restore an image directory owned by another user (root only): without it, a dump
    /// whose directory or files belong to someone else than root or you is refused, since
    /// its owner could have rewritten any record
    #[arg(long)]
    trust_image_owner: bool,

    /// Use a file the processes had open even if it is no longer the one the dump saw
    /// (device, inode, size, modification time, mode or owner differ), with a warning;
    /// without it such a restore is refused, naming the path and what differs
    #[arg(long)]
    accept_changed_files: bool,

    /// Judge whether this host can restore the check image (`cryo dump --check-only`)
    /// without creating anything: exit 0 ok, 2 temporary findings only, 3 a permanent one
    #[arg(long, conflicts_with = "on_receiver")]
    check_only: bool,

    /// With --check-only: print the verdict as JSON
    #[arg(long, requires = "check_only")]
    json: bool,

    /// Write the root pid(s) into this file, one a line, once they run (as CRIU's
    /// --pidfile); a file that cannot be written fails the restore, which kills them
    #[arg(long, value_name = "FILE")]
    pidfile: Option<PathBuf>,

    /// Accepted as CRIU's restore flag: the connections a dump captured come back as the
    /// image holds them (live, or closed with --tcp-close)
    #[arg(long, help_heading = "CRIU's flags")]
    tcp_established: bool,

    /// Accepted as CRIU's restore flag: a shell job's image says so itself; its terminal is
    /// `cryo restore`'s
    #[arg(short = 'j', long, help_heading = "CRIU's flags")]
    shell_job: bool,

    /// Accepted as CRIU's restore flag: a unix socket whose peer was outside the dump is
    /// restored broken whatever the flag (the dump accepted it with --ext-unix-sk)
    #[arg(long, help_heading = "CRIU's flags")]
    ext_unix_sk: bool,

    /// Accepted as CRIU's restore flag: what the dump left out of a listener's accept queue
    /// is not in the image
    #[arg(long, help_heading = "CRIU's flags")]
    skip_in_flight: bool,

    /// CRIU's: take the dumped description RESOURCE names from fd N of `cryo restore` (the
    /// caller's) instead of making it, for an object the processes shared with one outside
    /// the dump (`producer | app`, a container's stdio): `pipe:[INODE]`, the end of that
    /// anonymous pipe the image held, or a regular file by the path the dump saw (`tmp/log`
    /// for /tmp/log). Each holder gets a duplicate of N (its flags set as dumped); a pipe's
    /// queue is the live one (the dumped bytes are not written back), a file's offset N's. N
    /// must have the dumped access mode; cryo closes it when the restore ends. Repeatable
    #[arg(long, value_name = "fd[N]:RESOURCE", value_parser = cryo_core::parse_inherit_fd, conflicts_with = "on_receiver", help_heading = "CRIU's flags")]
    inherit_fd: Vec<cryo_core::InheritFd>,

    #[command(flatten)]
    criu: super::criu::CriuArgs,
}

impl Args {
    /// The image directory given with -D, if any.
    pub fn images_dir(&self) -> Option<&std::path::Path> {
        self.images_dir.as_deref()
    }

    /// The engine's options for these arguments.
    pub fn options(&self) -> RestoreOptions {
        // With --from, the directory is a scratch one chosen when the restore runs.
        let mut opts = RestoreOptions::new(self.images_dir.clone().unwrap_or_default());
        opts.detach = self.detach;
        opts.pidns = self.pidns;
        opts.netns = self.netns;
        opts.tcp_close = self.tcp_close;
        opts.action_script = self.action_script.script();
        opts.peer_timeout = Some(self.peer_timeout);
        opts.notify_signal = self.notify_signal;
        opts.trust_image_owner = self.trust_image_owner;
        opts.accept_changed_files = self.accept_changed_files;
        opts.inherit_fds = self.inherit_fd.clone();
        self.criu.apply_to_restore(&mut opts);
        opts
    }
}

/// Restores; detached, prints the root pids; otherwise waits and returns the first root's
/// exit status (128 + signal when it was killed).
pub fn run(args: Args) -> anyhow::Result<i32> {
    args.criu.check_yard(args.images_dir.as_deref())?;
    let mut opts = args.options();
    // --from: the image comes into a private scratch directory, kept until the processes run.
    let mut scratch = None;
    if let (Some(from), Some(name)) = (&args.from, &args.name) {
        let peer = args.stream.peer(from, "restore --from")?;
        if args.on_receiver {
            let pids = peer
                .restore_there(name)
                .with_context(|| format!("restore of {name:?} on {from}"))?;
            for pid in &pids {
                println!("{pid}");
            }
            eprintln!("cryo: {from} restored image {name:?}: pids {pids:?}");
            return Ok(0);
        }
        let dir = super::scratch_dir("cryo-restore-")?;
        let images = cryo_core::ImageDir::create(dir.path())?;
        let manifest = peer
            .fetch(name, &images)
            .with_context(|| format!("fetch of image {name:?} from {from}"))?;
        tracing::info!(
            name,
            files = manifest.files.len(),
            bytes = manifest.files.iter().map(|f| f.size).sum::<u64>(),
            "fetched"
        );
        opts.images_dir = dir.path().to_path_buf();
        scratch = Some(dir);
    }
    let dir = match (&args.from, &args.name) {
        (Some(from), Some(name)) => format!("image {name:?} of {from}"),
        _ => opts.images_dir.display().to_string(),
    };
    if args.check_only {
        let check = cryo_core::precheck::CheckOptions {
            pidns: opts.pidns,
            netns: opts.netns,
            accept_changed_files: opts.accept_changed_files,
            detach: opts.detach,
            inherit_fds: opts.inherit_fds.clone(),
        };
        let verdict = cryo_core::precheck::check_only(&opts.images_dir, check)
            .with_context(|| format!("check of {dir}"))?;
        drop(scratch);
        print_verdict(&verdict, args.json)?;
        return Ok(verdict.exit_code());
    }
    let restored = restore(&opts);
    // The processes run (or the restore failed): the fetched copy is not needed any more
    // (the receiver keeps the image, so a retry works).
    drop(scratch);
    let restored = restored.with_context(|| {
        // A failed restore keeps the dump's network lock: say so, with the way out.
        match cryo_core::network_lock_installed(&opts.images_dir) {
            Some(id) => format!(
                "restore from {dir} (network lock {id} kept: the connections wait for a \
                 restore that succeeds; retry, or give them up with `cryo unlock -D {dir}`)"
            ),
            None => format!("restore from {dir}"),
        }
    })?;
    tracing::info!(
        pids = %pid_list(&restored.roots),
        elapsed = %ms(restored.elapsed),
        "restored"
    );
    if let Some(file) = &args.pidfile {
        let text: String = restored.roots.iter().map(|p| format!("{p}\n")).collect();
        if let Err(e) = std::fs::write(file, text) {
            for &pid in &restored.roots {
                // The restore failed: what it created goes.
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            }
            return Err(e).with_context(|| {
                format!("write the restored pids into --pidfile {}", file.display())
            });
        }
    }
    if opts.detach {
        for pid in &restored.roots {
            println!("{pid}");
        }
        return Ok(0);
    }
    let roots = pid_list(&restored.roots);
    let code = restored
        .wait()
        .with_context(|| format!("waiting for restored pid {roots}"))?;
    tracing::info!(pids = %roots, code, "restored process ended");
    Ok(code)
}

/// The findings of `restore --check-only`: one line each (or JSON) on stdout, the summary
/// on stderr.
fn print_verdict(verdict: &cryo_core::precheck::Verdict, json: bool) -> anyhow::Result<()> {
    use cryo_core::precheck::FindingKind;
    if json {
        println!("{}", serde_json::to_string_pretty(verdict)?);
    } else {
        for f in &verdict.findings {
            let kind = match f.kind {
                FindingKind::Temporary => "temporary",
                FindingKind::Permanent => "permanent",
            };
            println!(
                "{kind} {} {}: {} ({})",
                f.what, f.subject, f.reason, f.action
            );
        }
    }
    let temporary = verdict
        .findings
        .iter()
        .filter(|f| f.kind == FindingKind::Temporary)
        .count();
    let permanent = verdict.findings.len() - temporary;
    eprintln!(
        "cryo: check of checkpoint {}: {}",
        verdict.checkpoint_id,
        match (temporary, permanent) {
            (0, 0) => "this host can restore it".to_string(),
            (t, 0) => format!("{t} temporary finding(s): retry later"),
            (t, p) => format!("{p} permanent and {t} temporary finding(s): not on this host"),
        }
    );
    Ok(())
}

/// `500ms`, `2s`, `1.5s`, `2m` or plain seconds (`3`, `0.25`).
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (e.g. 500ms, 2s, 1)"))?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1e3,
        "us" => value / 1e6,
        "m" | "min" => value * 60.0,
        other => return Err(format!("unknown unit {other:?} in {text:?} (ms, s, m)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}

/// A signal by number (`10`) or name (`USR1`, `SIGUSR1`, `SIGRTMIN+2`, `RTMAX-1`).
fn parse_signal(text: &str) -> Result<i32, String> {
    let text = text.trim();
    let (min, max) = (libc::SIGRTMIN(), libc::SIGRTMAX());
    let bad = || format!("{text:?} is not a signal (a number 1-{max} or a name like USR1)");
    if let Ok(n) = text.parse::<i32>() {
        return (1..=max).contains(&n).then_some(n).ok_or_else(bad);
    }
    let upper = text.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    let offset = |rest: &str| -> Result<i32, String> {
        match rest {
            "" => Ok(0),
            _ => rest.parse::<i32>().map_err(|_| bad()),
        }
    };
    let n = if let Some(rest) = name.strip_prefix("RTMIN") {
        min + offset(rest.strip_prefix('+').unwrap_or(rest))?
    } else if let Some(rest) = name.strip_prefix("RTMAX") {
        max + offset(rest)?
    } else {
        format!("SIG{name}")
            .parse::<nix::sys::signal::Signal>()
            .map_err(|_| bad())? as i32
    };
    (1..=max).contains(&n).then_some(n).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("0.25"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        for bad in ["", "ms", "2h", "-1s", "1..2s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn signals() {
        assert_eq!(parse_signal("10"), Ok(libc::SIGUSR1));
        assert_eq!(parse_signal("USR1"), Ok(libc::SIGUSR1));
        assert_eq!(parse_signal("sigusr2"), Ok(libc::SIGUSR2));
        assert_eq!(parse_signal("SIGRTMIN"), Ok(libc::SIGRTMIN()));
        assert_eq!(parse_signal("SIGRTMIN+2"), Ok(libc::SIGRTMIN() + 2));
        assert_eq!(parse_signal("RTMAX-1"), Ok(libc::SIGRTMAX() - 1));
        for bad in ["0", "65", "SIGNOPE", "RTMIN+x", "RTMAX+1"] {
            assert!(parse_signal(bad).is_err(), "{bad:?} accepted");
        }
    }
}
