//! Action scripts (`--action-script PATH`): the user's program, run at fixed stages of a dump
//! or a restore with the stage and its context in the environment; one that fails aborts the
//! operation, which then undoes itself as after any other failure.
//!
//! ```text
//! dump:    pre-dump -> [freeze] -> network-lock (only with a lock) -> [images written]
//!          -> post-dump -> [kill or let go]
//! restore: [images checked] -> pre-restore -> [processes created, restored, stopped]
//!          -> post-restore -> [lock released] network-unlock (only with a lock)
//!          -> [processes run] -> post-resume
//! migrate: (source) pre-dump -> network-lock -> post-dump -> [destination restored, locked]
//!          -> migrate-restored -> [destination runs, originals killed, lock removed]
//!          -> migrate-done; or, on any failure, [originals thawed] -> migrate-rollback
//!          (destination) pre-restore -> post-restore -> [told to go] -> network-unlock
//!          -> post-resume; or, without a go, [what it restored killed] -> migrate-rollback
//! ```
//!
//! The stage names are CRIU's, so a script written for CRIU's `CRTOOLS_SCRIPT_ACTION` works.
//! The script is executed directly (no shell), with stdin on /dev/null and stdout and stderr
//! into one memfd: cryo never waits on a pipe that something the script started keeps open,
//! and the last [`OUTPUT_TAIL`] bytes go into the error when it fails. It runs in a process
//! group of its own, killed whole when it outlives its timeout.

use std::io::{Read, Seek, SeekFrom};
use std::os::fd::AsFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tracing::{debug, info};

use crate::proc::join;

/// How long a script may run when no timeout is given.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// How much of a failed script's output (its end) the error carries.
pub const OUTPUT_TAIL: usize = 4096;

/// The variables cryo sets; each is removed from the inherited environment first, so a
/// script never sees a value left by an outer cryo.
pub mod env {
    /// The stage, e.g. `post-dump`.
    pub const STAGE: &str = "CRYO_HOOK_STAGE";
    /// The stage again, under CRIU's name for it.
    pub const CRIU_ACTION: &str = "CRTOOLS_SCRIPT_ACTION";
    /// The image directory, absolute.
    pub const IMAGE_DIR: &str = "CRYO_IMAGE_DIR";
    /// The image directory under CRIU's name for it.
    pub const CRIU_IMAGE_DIR: &str = "CRTOOLS_IMAGE_DIR";
    /// The root pids, comma-separated: the dumped ones, or the restored ones as cryo sees
    /// them (empty at pre-restore: nothing exists yet).
    pub const PIDS: &str = "CRYO_PIDS";
    /// The first of [`PIDS`], CRIU's variable (unset when there is none).
    pub const CRIU_INIT_PID: &str = "CRTOOLS_INIT_PID";
    /// Restore: the root pids recorded in the image (the same as [`PIDS`] unless `--pidns`).
    pub const IMAGE_PIDS: &str = "CRYO_IMAGE_PIDS";
    /// The id of the dump's network lock, from the stage that installs it (dump) or
    /// throughout (restore of an image that left one).
    pub const NETWORK_LOCK: &str = "CRYO_NETWORK_LOCK";
    /// The checkpoint id: from post-dump on (dump), throughout (restore).
    pub const CHECKPOINT_ID: &str = "CRYO_CHECKPOINT_ID";
    /// Migration, on the source: the destination (`ADDR:PORT`).
    pub const MIGRATE_PEER: &str = "CRYO_MIGRATE_PEER";
    /// Migration, on the source from migrate-restored on: the root pids the destination
    /// restored, as it sees them.
    pub const MIGRATE_PIDS: &str = "CRYO_MIGRATE_PIDS";

    /// Every variable above.
    pub const ALL: [&str; 11] = [
        STAGE,
        CRIU_ACTION,
        IMAGE_DIR,
        CRIU_IMAGE_DIR,
        PIDS,
        CRIU_INIT_PID,
        IMAGE_PIDS,
        NETWORK_LOCK,
        CHECKPOINT_ID,
        MIGRATE_PEER,
        MIGRATE_PIDS,
    ];
}

/// Where in a dump or a restore a script runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Dump: the targets are checked, not frozen yet.
    PreDump,
    /// Dump: the network lock is installed over the captured connections (only when there
    /// are connections).
    NetworkLock,
    /// Dump: the image is complete; the targets are still frozen, not killed or let go (a
    /// killing dump then adds the signals queued to them since to their cores).
    PostDump,
    /// Restore: the image is checked; no process is created yet.
    PreRestore,
    /// Restore: every process exists and is restored, stopped, not yet running.
    PostRestore,
    /// Restore: the dump's network lock was just released (only when the image left one).
    NetworkUnlock,
    /// Restore: the processes run.
    PostResume,
    /// Migration, source: the destination restored every process, stopped, its connections
    /// locked; the originals are frozen. The moment to move the service address.
    MigrateRestored,
    /// Migration, source: the destination's processes run, the originals are killed and the
    /// source's network lock is removed.
    MigrateDone,
    /// Migration, either side: it failed; the source's originals run again (thawed, every
    /// connection intact), the destination killed what it restored. The moment to move the
    /// address back.
    MigrateRollback,
}

impl Stage {
    /// The stage's name, the same as CRIU's.
    pub fn name(self) -> &'static str {
        match self {
            Self::PreDump => "pre-dump",
            Self::NetworkLock => "network-lock",
            Self::PostDump => "post-dump",
            Self::PreRestore => "pre-restore",
            Self::PostRestore => "post-restore",
            Self::NetworkUnlock => "network-unlock",
            Self::PostResume => "post-resume",
            Self::MigrateRestored => "migrate-restored",
            Self::MigrateDone => "migrate-done",
            Self::MigrateRollback => "migrate-rollback",
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The script given with `--action-script`.
#[derive(Debug, Clone)]
pub struct ActionScript {
    /// The program to execute (not through a shell).
    pub path: PathBuf,
    /// How long one run may take before it is killed and counted as failed; `None` waits
    /// forever.
    pub timeout: Option<Duration>,
}

impl ActionScript {
    /// `path`, with the default timeout.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            timeout: Some(DEFAULT_TIMEOUT),
        }
    }
}

/// How a script failed.
#[derive(Debug)]
pub enum HookStatus {
    /// It exited with a non-zero status.
    Exited(i32),
    /// A signal killed it.
    Signaled(i32),
    /// It outlived its timeout and was killed (with its process group).
    TimedOut(Duration),
    /// It could not be executed (missing, not executable, bad interpreter).
    NotStarted(std::io::Error),
    /// cryo could not wait for it.
    Lost(std::io::Error),
}

impl std::fmt::Display for HookStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Exited(code) => write!(f, "exited with status {code}"),
            Self::Signaled(sig) => match Signal::try_from(*sig) {
                Ok(sig) => write!(f, "killed by {sig}"),
                Err(_) => write!(f, "killed by signal {sig}"),
            },
            Self::TimedOut(after) => write!(
                f,
                "still running after {:.1} s: killed (--action-script-timeout)",
                after.as_secs_f64()
            ),
            Self::NotStarted(e) => write!(f, "could not be executed: {e}"),
            Self::Lost(e) => write!(f, "could not be waited for: {e}"),
        }
    }
}

/// The action script failed at a stage; the dump or restore was undone.
#[derive(Debug, thiserror::Error)]
#[error(
    "{stage} action script {} {status}{}",
    .script.display(),
    describe_output(.output)
)]
pub struct HookError {
    /// The stage it ran at.
    pub stage: Stage,
    /// The script (--action-script).
    pub script: PathBuf,
    /// How it failed.
    pub status: HookStatus,
    /// The end of what it wrote on stdout and stderr (interleaved), trimmed.
    pub output: String,
}

/// `, its output:\n...` for an error message, or `, no output`.
pub(crate) fn describe_output(output: &str) -> String {
    if output.is_empty() {
        ", no output".into()
    } else {
        format!(", its output:\n{output}")
    }
}

/// Runs the action script (if any) of one dump or restore at each stage, with the context
/// gathered so far.
#[derive(Debug)]
pub struct Hooks {
    script: Option<ActionScript>,
    /// Variables set at every stage from now on.
    vars: Vec<(&'static str, String)>,
}

impl Hooks {
    /// The hooks of an operation on the image directory `images_dir`; without a script every
    /// [`run`](Self::run) is a no-op.
    pub fn new(script: Option<&ActionScript>, images_dir: &Path) -> Self {
        let dir = std::path::absolute(images_dir)
            .unwrap_or_else(|_| images_dir.to_path_buf())
            .to_string_lossy()
            .into_owned();
        Self {
            script: script.cloned(),
            vars: vec![(env::IMAGE_DIR, dir.clone()), (env::CRIU_IMAGE_DIR, dir)],
        }
    }

    /// Sets `name` to `value` for every later stage (an empty value: left unset).
    pub fn set(&mut self, name: &'static str, value: impl Into<String>) {
        let value = value.into();
        self.vars.retain(|(n, _)| *n != name);
        if !value.is_empty() {
            self.vars.push((name, value));
        }
    }

    /// Runs the script for `stage`, about the root processes `pids`, and waits for it.
    /// A failure carries the stage, the script, how it ended and the end of its output.
    pub fn run(&self, stage: Stage, pids: &[Pid]) -> Result<(), HookError> {
        let Some(script) = &self.script else {
            return Ok(());
        };
        let started = Instant::now();
        let mut vars = self.vars.clone();
        vars.push((env::STAGE, stage.name().into()));
        vars.push((env::CRIU_ACTION, stage.name().into()));
        vars.push((env::PIDS, join(pids)));
        if let Some(first) = pids.first() {
            vars.push((env::CRIU_INIT_PID, first.to_string()));
        }
        info!(%stage, script = %script.path.display(), "running the action script");
        let (status, output) = execute(script, &vars);
        let Some(status) = status else {
            debug!(
                %stage,
                ms = started.elapsed().as_secs_f64() * 1e3,
                output = output.trim_end(),
                "action script done"
            );
            return Ok(());
        };
        Err(HookError {
            stage,
            script: script.path.clone(),
            status,
            output: output.trim_end().to_string(),
        })
    }
}

/// Executes `script` with `vars` and waits (bounded) for it: `None` when it exited 0, and
/// the end of what it wrote.
fn execute(script: &ActionScript, vars: &[(&str, String)]) -> (Option<HookStatus>, String) {
    let output = match memfd_create("cryo-action-script", MFdFlags::MFD_CLOEXEC) {
        Ok(fd) => std::fs::File::from(fd),
        Err(e) => return (Some(HookStatus::NotStarted(e.into())), String::new()),
    };
    let status = spawn_and_wait(script, vars, &output);
    let tail = read_tail(output).unwrap_or_else(|e| format!("(output unreadable: {e})"));
    (status, tail)
}

fn spawn_and_wait(
    script: &ActionScript,
    vars: &[(&str, String)],
    output: &std::fs::File,
) -> Option<HookStatus> {
    let mut cmd = Command::new(&script.path);
    for name in env::ALL {
        cmd.env_remove(name);
    }
    let (stdout, stderr) = match (output.try_clone(), output.try_clone()) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => return Some(HookStatus::NotStarted(e)),
    };
    cmd.envs(vars.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        // Its own group, so a timeout kills what it started in the foreground too.
        .process_group(0);
    // ETXTBSY: the script was just written and a process forked meanwhile (by any thread)
    // still holds it open for writing until its own exec: a moment later it runs.
    let mut busy = 0;
    let mut child = loop {
        match cmd.spawn() {
            Ok(child) => break child,
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && busy < 100 => {
                busy += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => return Some(HookStatus::NotStarted(e)),
        }
    };
    let pid = Pid::from_raw(child.id() as i32);
    if let Some(limit) = script.timeout {
        match wait_exit(pid, limit) {
            Ok(true) => {}
            Ok(false) => {
                let _ = killpg(pid, Signal::SIGKILL);
                let _ = child.wait();
                return Some(HookStatus::TimedOut(limit));
            }
            Err(e) => {
                let _ = killpg(pid, Signal::SIGKILL);
                let _ = child.wait();
                return Some(HookStatus::Lost(e));
            }
        }
    }
    match child.wait() {
        Ok(status) if status.success() => None,
        Ok(status) => Some(match (status.code(), status.signal()) {
            (Some(code), _) => HookStatus::Exited(code),
            (None, Some(sig)) => HookStatus::Signaled(sig),
            (None, None) => HookStatus::Exited(-1),
        }),
        Err(e) => Some(HookStatus::Lost(e)),
    }
}

/// Waits until `pid` has exited (without reaping it) or `limit` passed: true when it
/// exited.
fn wait_exit(pid: Pid, limit: Duration) -> std::io::Result<bool> {
    let pidfd = crate::sys::pidfd::pidfd_open(pid)?;
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        // Rounded up, so the wait never ends before the deadline.
        let ms = left.as_micros().div_ceil(1000);
        let timeout = PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
        match nix::poll::poll(&mut fds, timeout) {
            Ok(0) if left.is_zero() => return Ok(false),
            Ok(0) => continue,
            Ok(_) => return Ok(true),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// The last [`OUTPUT_TAIL`] bytes written into `output`, as text.
fn read_tail(mut output: std::fs::File) -> std::io::Result<String> {
    let len = output.seek(SeekFrom::End(0))?;
    let from = len.saturating_sub(OUTPUT_TAIL as u64);
    output.seek(SeekFrom::Start(from))?;
    let mut bytes = Vec::with_capacity((len - from) as usize);
    output.read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes);
    Ok(if from > 0 {
        format!("[... {from} bytes before]\n{text}")
    } else {
        text.into_owned()
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn script(dir: &Path, body: &str) -> ActionScript {
        let path = dir.join("hook");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)).unwrap();
        ActionScript::new(path)
    }

    fn failure(hooks: &Hooks, stage: Stage) -> (String, HookStatus) {
        match hooks.run(stage, &[Pid::from_raw(1)]) {
            Err(HookError {
                stage: s,
                output,
                status,
                ..
            }) if s == stage => (output, status),
            other => panic!("not a hook failure: {other:?}"),
        }
    }

    #[test]
    fn environment_and_success() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let s = script(
            dir.path(),
            &format!(
                "echo \"$CRYO_HOOK_STAGE $CRTOOLS_SCRIPT_ACTION $CRYO_PIDS $CRTOOLS_INIT_PID \
                 $CRYO_IMAGE_DIR $CRYO_NETWORK_LOCK\" >> {}",
                log.display()
            ),
        );
        let mut hooks = Hooks::new(Some(&s), Path::new("/img"));
        hooks.set(env::NETWORK_LOCK, "lock-1");
        hooks
            .run(Stage::NetworkLock, &[Pid::from_raw(7), Pid::from_raw(9)])
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            "network-lock network-lock 7,9 7 /img lock-1\n"
        );
    }

    #[test]
    fn failures_carry_status_and_output() {
        let dir = tempfile::tempdir().unwrap();
        let s = script(dir.path(), "echo out; echo err >&2; exit 3");
        let (output, status) = failure(&Hooks::new(Some(&s), dir.path()), Stage::PostDump);
        assert_eq!(output, "out\nerr");
        assert!(matches!(status, HookStatus::Exited(3)), "{status}");

        let s = script(dir.path(), "kill -9 $$");
        let (_, status) = failure(&Hooks::new(Some(&s), dir.path()), Stage::PreDump);
        assert!(matches!(status, HookStatus::Signaled(9)), "{status}");

        let missing = ActionScript::new(dir.path().join("missing"));
        let (_, status) = failure(&Hooks::new(Some(&missing), dir.path()), Stage::PreDump);
        assert!(matches!(status, HookStatus::NotStarted(_)), "{status}");

        let s = script(dir.path(), "exit 0");
        std::fs::set_permissions(&s.path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let (_, status) = failure(&Hooks::new(Some(&s), dir.path()), Stage::PreDump);
        assert!(matches!(status, HookStatus::NotStarted(_)), "{status}");
    }

    #[test]
    fn only_the_tail_of_a_long_output() {
        let dir = tempfile::tempdir().unwrap();
        let s = script(dir.path(), "seq 1 100000; echo last; exit 1");
        let (output, _) = failure(&Hooks::new(Some(&s), dir.path()), Stage::PostRestore);
        assert!(output.len() < OUTPUT_TAIL + 64, "{} bytes", output.len());
        assert!(output.ends_with("100000\nlast"), "{output}");
        assert!(output.starts_with("[... "), "{output}");
    }

    #[test]
    fn a_script_that_never_ends_is_killed_with_what_it_started() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("child");
        let mut s = script(
            dir.path(),
            &format!("sleep 1000 & echo $! > {}; wait", pidfile.display()),
        );
        s.timeout = Some(Duration::from_millis(300));
        let started = Instant::now();
        let (_, status) = failure(&Hooks::new(Some(&s), dir.path()), Stage::PostResume);
        assert!(matches!(status, HookStatus::TimedOut(_)), "{status}");
        assert!(started.elapsed() < Duration::from_secs(10));
        let child: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // Killed with its group (already reaped when the pidfd cannot be opened).
        assert!(
            wait_exit(Pid::from_raw(child), Duration::from_secs(10)).unwrap_or(true),
            "the script's child survived"
        );
    }
}
