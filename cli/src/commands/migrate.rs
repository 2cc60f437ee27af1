//! `cryo migrate -t PID --to ADDR:PORT`: move process trees to the host of a `cryo serve`,
//! their TCP connections included: the destination judges a check dump first, then the dump
//! is streamed (the path of `dump --to`: its commit hook), restored there with its
//! connections locked, and a two-phase commit lets exactly one side run (the sequence is
//! drawn in cryo-stream's `migrate` module).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use cryo_core::{dump, hook_env, CommitError, CommitHook, DumpOptions, Hooks, Pid, Stage};
use cryo_stream::Migration;

use super::{mib, ms, pid_list};

/// Move the process trees rooted at the given pids to another host (`cryo serve` there):
/// checked there first, frozen, streamed, restored there, killed here only once they run
/// there
#[derive(Debug, clap::Args)]
#[command(args_override_self = true)]
pub struct Args {
    /// Root pid of a tree to move; a comma list, and the flag may be repeated
    #[arg(
        short = 't',
        long = "tree",
        value_name = "PID[,PID]",
        required = true,
        value_delimiter = ',',
        value_parser = clap::value_parser!(i32).range(1..),
    )]
    pids: Vec<i32>,

    /// The destination: a `cryo serve` listening there
    #[arg(long, value_name = "ADDR:PORT")]
    to: String,

    /// A name for the migration in the destination's logs (default: pid-PID)
    #[arg(long, value_name = "NAME")]
    name: Option<String>,

    #[command(flatten)]
    stream: super::StreamArgs,

    /// Move established TCP connections too (with TCP_REPAIR)
    #[arg(long)]
    tcp_established: bool,

    /// Move a TCP listener without the connections waiting in its accept queue instead of
    /// refusing it: their clients are reset when the source processes die
    #[arg(long)]
    skip_in_flight: bool,

    /// Stream memory while the processes run, then only what changed, before the final
    /// freeze (passed to the streamed dump)
    #[arg(long)]
    pre_copy: bool,

    /// Dump the controlling terminal too (a process started from a shell)
    #[arg(short = 'j', long)]
    shell_job: bool,

    /// Accept unix sockets connected to a peer outside the dumped trees (restored broken)
    #[arg(long)]
    ext_unix_sk: bool,

    #[command(flatten)]
    action_script: super::ActionScriptArgs,
}

/// A failed step of the migration, named (the commit hook's error).
fn step(name: &str, e: impl std::fmt::Display) -> CommitError {
    format!("step {name}: {e}").into()
}

/// When each phase ended, for the summary.
#[derive(Debug, Default)]
struct Timings {
    hook_started: Option<Instant>,
    restored: Option<Instant>,
    running: Option<Instant>,
    there: Vec<i32>,
}

/// The migration's connection, shared by the two dumps' commit hooks.
type Slot = Arc<Mutex<Option<Migration>>>;

fn with_migration<T>(
    slot: &Slot,
    f: impl FnOnce(&mut Migration) -> Result<T, CommitError>,
) -> Result<T, CommitError> {
    let mut guard = slot.lock().unwrap_or_else(|p| p.into_inner());
    let m = guard
        .as_mut()
        .ok_or_else(|| CommitError::from("the connection to the destination is gone"))?;
    f(m)
}

/// Checks, dumps, streams, commits; returns 0 once the processes run on the destination,
/// 3 when the destination cannot take them (nothing done here).
pub fn run(args: Args) -> anyhow::Result<i32> {
    let started = Instant::now();
    let pids: Vec<Pid> = args.pids.iter().copied().map(Pid::from_raw).collect();
    let to = args.to.clone();
    let what = format!("migrate of pid {} to {to}", pid_list(&pids));
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| format!("pid-{}", pids[0]));
    let peer = args.stream.peer(&to, "migrate")?;
    let script = args.action_script.script();
    let mut migration = peer
        .migrate(&name)
        .with_context(|| format!("{what}: step 1, the check: connect"))?;
    let progress = progress_bar();
    if let Some(bar) = &progress {
        let bar = bar.clone();
        migration.on_data_sent(move |bytes| bar.set_position(bytes));
    }
    let slot: Slot = Arc::new(Mutex::new(Some(migration)));
    let abort = |why: &str| {
        if let Some(m) = slot.lock().unwrap_or_else(|p| p.into_inner()).take() {
            m.abort(why);
        }
    };

    // 1. The check dump (frozen for a moment, left running), judged by the destination.
    let verdict = Arc::new(Mutex::new(None));
    let check_dir = super::scratch_dir("cryo-migrate-check-")?;
    let mut check = base_options(&args, &pids, check_dir.path().to_path_buf());
    check.check_only = true;
    check.commit = Some(CommitHook::new({
        let slot = Arc::clone(&slot);
        let verdict = Arc::clone(&verdict);
        move |dir, checkpoint_id, _| {
            let images = cryo_core::ImageDir::open(dir)?;
            let v = with_migration(&slot, |m| {
                m.check(&images, checkpoint_id)
                    .map_err(|e| step("1, the check", e))
            })?;
            *verdict.lock().unwrap_or_else(|p| p.into_inner()) = Some(v);
            Ok(())
        }
    }));
    let checked = dump(&check);
    drop(check_dir);
    if let Err(e) = checked {
        abort(&format!("the source's check failed: {e}"));
        return Err(anyhow::Error::new(e).context(format!("{what}: step 1, the check dump")));
    }
    let verdict = verdict
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
        .ok_or_else(|| anyhow::anyhow!("{what}: step 1, the check: no verdict"))?;
    let mut permanent = 0;
    for f in &verdict.findings {
        permanent += usize::from(f.kind == "permanent");
        let line = format!(
            "cryo: {to}: {} {} {}: {} ({})",
            f.kind, f.what, f.subject, f.reason, f.action
        );
        match &progress {
            Some(bar) => bar.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }
    if permanent > 0 {
        if let Some(bar) = &progress {
            bar.finish_and_clear();
        }
        abort("permanent findings on the destination");
        eprintln!(
            "cryo: {what}: stopped at step 1, the check: {permanent} permanent finding(s) on \
             {to}; pid {} runs on here, untouched",
            pid_list(&pids)
        );
        return Ok(3);
    }

    // 2-3. The dump, streamed by its commit hook, which also runs the two-phase commit: it
    // returns (and the dump kills the originals) only once the destination runs them.
    let timings = Arc::new(Mutex::new(Timings::default()));
    let images_dir = super::scratch_dir("cryo-migrate-")?;
    let mut opts = base_options(&args, &pids, images_dir.path().to_path_buf());
    opts.action_script = script.clone();
    if args.pre_copy {
        // The rounds go on the migration's connection while the processes run; the commit
        // hook sends the rest, and the destination merges them before it restores.
        opts.pre_copy = true;
        opts.checkpoint_id = Some(super::dump::new_checkpoint_id()?);
        let slot = Arc::clone(&slot);
        opts.pre_copy_sink = Some(cryo_core::PreCopySink::new(move |file, size, contents| {
            with_migration(&slot, |m| {
                m.send_file(file, size, contents)
                    .map_err(|e| step("2, a pre-copy round", e))
            })
        }));
    }
    opts.commit = Some(CommitHook::new({
        let slot = Arc::clone(&slot);
        let timings = Arc::clone(&timings);
        let (script, pids, to) = (script.clone(), pids.clone(), to.clone());
        move |dir, checkpoint_id, commitment| {
            let note = |f: &dyn Fn(&mut Timings)| {
                f(&mut timings.lock().unwrap_or_else(|p| p.into_inner()))
            };
            note(&|t| t.hook_started = Some(Instant::now()));
            let images = cryo_core::ImageDir::open(dir)?;
            with_migration(&slot, |m| {
                m.send(&images, checkpoint_id)
                    .map_err(|e| step("2, the image stream", e))?;
                let there = m
                    .wait_restored()
                    .map_err(|e| step("3a, the restore on the destination", e))?;
                note(&|t| {
                    t.restored = Some(Instant::now());
                    t.there = there.clone();
                });
                let mut hooks = Hooks::new(script.as_ref(), dir);
                hooks.set(hook_env::CHECKPOINT_ID, checkpoint_id);
                hooks.set(hook_env::MIGRATE_PEER, to.as_str());
                hooks.set(hook_env::MIGRATE_PIDS, join(&there));
                hooks
                    .run(Stage::MigrateRestored, &pids)
                    .map_err(|e| step("3b, the action script", e))?;
                // Past the go the destination runs them: a source dying from here kills its
                // originals (its dump guardian) rather than thaw them beside those.
                commitment.arm();
                let running = m.go().map_err(|e| {
                    commitment.disarm();
                    step("3c, the go (the destination's resume)", e)
                })?;
                note(&|t| {
                    t.running = Some(Instant::now());
                    t.there = running.clone();
                });
                Ok(())
            })
        }
    }));
    let mut hooks = Hooks::new(script.as_ref(), images_dir.path());
    hooks.set(hook_env::MIGRATE_PEER, to.as_str());
    let dumped = dump(&opts);
    if let Some(bar) = &progress {
        bar.finish_and_clear();
    }
    let summary = match dumped {
        Ok(summary) => summary,
        Err(e) => {
            // Rolled back by the dump: the originals run, their connections intact. The
            // address goes back (the script) before the destination lets go of its lock.
            drop(images_dir);
            let there =
                std::mem::take(&mut timings.lock().unwrap_or_else(|p| p.into_inner()).there);
            hooks.set(hook_env::MIGRATE_PIDS, join(&there));
            let rollback = hooks.run(Stage::MigrateRollback, &pids);
            abort(&format!("the source rolled back: {e}"));
            // The commit hook's errors name their step; any other is the dump's own.
            let step = match &e {
                cryo_core::Error::Dump(cryo_core::DumpError::Commit { .. }) => what.clone(),
                _ => format!("{what}: step 2, the dump"),
            };
            let err = anyhow::Error::new(e).context(step);
            return Err(match rollback {
                Ok(()) => err,
                Err(h) => err.context(format!("and then: {h}")),
            });
        }
    };
    // 3d. The originals are gone; their connections live on the destination: the lock here
    // has nothing left to hold.
    let unlocked = cryo_core::unlock(images_dir.path());
    drop(images_dir);
    let t = std::mem::take(&mut *timings.lock().unwrap_or_else(|p| p.into_inner()));
    hooks.set(hook_env::MIGRATE_PIDS, join(&t.there));
    if let Err(e) = unlocked {
        tracing::warn!("the network lock here: {e}");
    }
    let since = |a: Option<Instant>, b: Option<Instant>| match (a, b) {
        (Some(a), Some(b)) => b.saturating_duration_since(a),
        _ => Duration::ZERO,
    };
    eprintln!(
        "cryo: migrated pid {} to {to} (pids there {}): {} of pages{}, running there {} after \
         the freeze (image written {}, sent and restored there {}, script and go {}), \
         originals killed after {}, total {}",
        pid_list(&summary.pids),
        join(&t.there),
        mib(summary.pages_bytes),
        super::dump::pre_copy_rounds(&summary),
        ms(since(summary.frozen_at, t.running)),
        ms(since(summary.frozen_at, t.hook_started)),
        ms(since(t.hook_started, t.restored)),
        ms(since(t.restored, t.running)),
        ms(summary.frozen),
        ms(started.elapsed()),
    );
    hooks
        .run(Stage::MigrateDone, &pids)
        .with_context(|| format!("{what}: done (the processes run on {to}), but"))?;
    Ok(0)
}

/// Bytes sent and the rate, on stderr when it is a terminal (nothing on a pipe or a file).
fn progress_bar() -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal as _;
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar =
        indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "cryo: migrate: {binary_bytes} sent ({binary_bytes_per_sec}), {elapsed}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    Some(bar)
}

/// The dump options every dump of this migration shares.
fn base_options(args: &Args, pids: &[Pid], dir: PathBuf) -> DumpOptions {
    let mut opts = DumpOptions::new(pids.to_vec(), dir);
    opts.tcp_established = args.tcp_established;
    opts.tcp_skip_in_flight = args.skip_in_flight;
    opts.shell_job = args.shell_job;
    opts.ext_unix_sk = args.ext_unix_sk;
    opts
}

/// `1,2,3`.
fn join(pids: &[i32]) -> String {
    pids.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}
