//! The harness of cryo's integration tests.
//!
//! A [`Workload`] is one `cryo-workload` process in a temp dir of its own
//! (its control directory), driven through two FIFOs there:
//!
//! ```text
//! test                                   workload (cryo-workload DIR MODE ARGS)
//!  open DIR/out  O_RDWR|O_NONBLOCK
//!  open DIR/cmd  O_RDWR, write "#5 tick\n" -> blocked in read(DIR/cmd), held O_RDWR
//!  poll(out, pidfds) until a reply           opens DIR/out O_WRONLY, writes "#5 3\n", closes
//!  read the "#5 ..." line, close both  <---
//! ```
//!
//! Nothing of the test stays open in the workload between commands, so a dump
//! finds it blocked in read() on a FIFO only it holds; every command after a
//! restore therefore also checks that this blocking read resumed. Each wait is
//! bounded ([`CMD_TIMEOUT`], [`CRYO_TIMEOUT`]) and watches the pidfds of the
//! processes that could answer, so a dead workload or a failed restore fails
//! the test at once, with the workload's log and cryo's stderr. No sleeps.
//!
//! Images go to directories inside the control directory; dropping the
//! `Workload` kills whatever it started (original, restored process, cryo)
//! and reaps its own children.
//!
//! The `cryo` binary is found as `target/<profile>/cryo` beside the test
//! executable's directory, or at `$CRYO_BIN`.

#![warn(missing_docs)]

pub mod hosts;
pub mod huge_pages;
pub mod protocol;
pub mod servers;
pub mod servers_pg;
pub mod socks;
pub mod tcp_peer;
pub mod views;

use std::cell::Cell;
use std::collections::BTreeMap;
use std::ffi::{CString, OsStr, OsString};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub use tempfile::TempDir;

/// How long a workload may take to answer one command.
pub const CMD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one `cryo` run may take (dumps of 256 MiB included).
pub const CRYO_TIMEOUT: Duration = Duration::from_secs(120);

/// Finds the `cryo` binary: `override_path` if given, else `target/<profile>/cryo`
/// where `exe` is `target/<profile>/deps/<test>`.
pub fn locate_cryo(override_path: Option<OsString>, exe: &Path) -> Result<PathBuf, String> {
    let path = match override_path {
        Some(p) => PathBuf::from(p),
        None => profile_dir(exe).join("cryo"),
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "cryo binary not found at {}: build it with cargo build -p cryo (or set CRYO_BIN)",
            path.display()
        ))
    }
}

fn profile_dir(exe: &Path) -> PathBuf {
    let deps = exe.parent().unwrap_or(Path::new("."));
    if deps.file_name() == Some(OsStr::new("deps")) {
        deps.parent().unwrap_or(deps).to_path_buf()
    } else {
        deps.to_path_buf()
    }
}

fn current_exe() -> PathBuf {
    std::env::current_exe().expect("current_exe")
}

/// The `cryo` binary; panics with how to build it if it is missing.
///
/// Every test that needs the engine goes through this, so the ones that
/// cannot run yet fail with that message rather than something obscure.
pub fn cryo_bin() -> PathBuf {
    locate_cryo(std::env::var_os("CRYO_BIN"), &current_exe()).unwrap_or_else(|e| panic!("{e}"))
}

/// The `cryo-workload` binary (built by cargo with this crate's tests), or `$CRYO_WORKLOAD_BIN`.
pub fn workload_bin() -> PathBuf {
    let path = std::env::var_os("CRYO_WORKLOAD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| profile_dir(&current_exe()).join("cryo-workload"));
    assert!(
        path.is_file(),
        "workload binary not found at {}: build it with cargo build -p cryo-tests",
        path.display()
    );
    path
}

/// A pidfd: signals and waits that cannot hit a recycled PID.
#[derive(Debug)]
pub struct Pidfd {
    fd: OwnedFd,
    pid: i32,
}

impl AsFd for Pidfd {
    /// The pidfd itself (readable once the process exited: for a poll with other fds).
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Pidfd {
    /// Opens a pidfd for `pid`.
    pub fn open(pid: i32) -> io::Result<Self> {
        // SAFETY: pidfd_open takes a pid and flags, no pointers.
        let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel just returned this fd to us and nobody else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(r as i32) };
        Ok(Self { fd, pid })
    }

    /// The pid this pidfd refers to.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Sends `sig`.
    pub fn signal(&self, sig: i32) -> io::Result<()> {
        // SAFETY: the fd is a live pidfd; a null siginfo is allowed.
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.fd.as_raw_fd(),
                sig,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Whether the process has exited (it may still be an unreaped zombie).
    pub fn exited(&self) -> bool {
        self.wait_exit(Duration::ZERO)
    }

    /// Waits up to `timeout` for the process to exit; returns whether it did.
    pub fn wait_exit(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let mut p = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = remaining_ms(deadline);
            // SAFETY: p is one valid pollfd.
            let r = unsafe { libc::poll(&mut p, 1, ms) };
            if r > 0 {
                return true;
            }
            if r == 0 && ms == 0 {
                return false;
            }
            if r < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                panic!("poll pidfd: {}", io::Error::last_os_error());
            }
            if r == 0 && Instant::now() >= deadline {
                return false;
            }
        }
    }
}

fn remaining_ms(deadline: Instant) -> i32 {
    let left = deadline.saturating_duration_since(Instant::now());
    // Round up, so a wait never ends early.
    (left.as_micros().div_ceil(1000)).min(i32::MAX as u128) as i32
}

/// Waits for our child `child` (whose pidfd is `pidfd`) with a deadline; kills it on timeout.
fn wait_child(child: &mut Child, pidfd: &Pidfd, timeout: Duration) -> Result<ExitStatus, String> {
    if pidfd.wait_exit(timeout) {
        return child.wait().map_err(|e| format!("wait: {e}"));
    }
    let _ = child.kill();
    let _ = child.wait();
    Err(format!(
        "pid {} did not exit within {timeout:?}; killed it",
        child.id()
    ))
}

/// One finished run of `cryo`.
#[derive(Debug)]
pub struct CryoOutput {
    /// The arguments it was given.
    pub args: Vec<String>,
    /// How it exited.
    pub status: ExitStatus,
    /// What it printed on stdout.
    pub stdout: String,
    /// What it printed on stderr.
    pub stderr: String,
}

impl fmt::Display for CryoOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "cryo {}: {}", self.args.join(" "), self.status)?;
        writeln!(f, "--- stdout\n{}", self.stdout.trim_end())?;
        write!(f, "--- stderr\n{}", self.stderr.trim_end())
    }
}

impl CryoOutput {
    /// Exited with status 0.
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Panics unless cryo exited 0.
    #[track_caller]
    pub fn assert_success(&self) -> &Self {
        assert!(self.success(), "cryo failed:\n{self}");
        self
    }

    /// Panics unless cryo exited with a non-zero code (a crash by signal is no clean refusal)
    /// and said something on stderr.
    #[track_caller]
    pub fn assert_refused(&self) -> &Self {
        match self.status.code() {
            Some(0) => panic!("cryo should have failed:\n{self}"),
            Some(_) => {}
            None => panic!("cryo crashed instead of refusing:\n{self}"),
        }
        assert!(
            !self.stderr.trim().is_empty(),
            "cryo failed without a message:\n{self}"
        );
        self
    }

    /// Panics unless stderr contains `needle` (case-insensitive).
    #[track_caller]
    pub fn assert_stderr_mentions(&self, needle: &str) -> &Self {
        assert!(
            self.stderr.to_lowercase().contains(&needle.to_lowercase()),
            "cryo's stderr should mention {needle:?}:\n{self}"
        );
        self
    }

    /// Panics unless stderr contains `word` as a whole word (e.g. a number not inside another).
    #[track_caller]
    pub fn assert_stderr_has_word(&self, word: &str) -> &Self {
        assert!(
            has_word(&self.stderr, word),
            "cryo's stderr should name {word:?} (as a word):\n{self}"
        );
        self
    }
}

/// Whether `word` occurs in `text` not surrounded by alphanumeric characters.
pub fn has_word(text: &str, word: &str) -> bool {
    text.match_indices(word).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + word.len()..].chars().next();
        !before.is_some_and(|c| c.is_ascii_alphanumeric())
            && !after.is_some_and(|c| c.is_ascii_alphanumeric())
    })
}

/// Runs `cryo ARGS` with a deadline; stdout and stderr go to files in `log_dir`
/// named after `tag` (files, not pipes: a process cryo creates can never hold
/// the test's pipes open).
pub fn run_cryo<I, S>(log_dir: &Path, tag: &str, args: I) -> CryoOutput
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run_cryo_with(log_dir, tag, args, |_| {})
}

/// As [`run_cryo`], with cryo's command adjusted by `configure` first (an fd given it on its
/// stdin, say).
pub fn run_cryo_with<I, S>(
    log_dir: &Path,
    tag: &str,
    args: I,
    configure: impl FnOnce(&mut Command),
) -> CryoOutput
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let (mut child, out_path, err_path) = spawn_cryo_with(log_dir, tag, &args, configure);
    let pidfd = Pidfd::open(child.id() as i32).expect("pidfd of cryo");
    let waited = wait_child(&mut child, &pidfd, CRYO_TIMEOUT);
    let output = CryoOutput {
        args: args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
        status: waited.as_ref().copied().unwrap_or(ExitStatus::from_raw(9)),
        stdout: read_lossy(&out_path),
        stderr: read_lossy(&err_path),
    };
    if let Err(e) = waited {
        panic!("cryo hung: {e}\n{output}");
    }
    output
}

fn spawn_cryo_with(
    log_dir: &Path,
    tag: &str,
    args: &[OsString],
    configure: impl FnOnce(&mut Command),
) -> (Child, PathBuf, PathBuf) {
    let out_path = log_dir.join(format!("{tag}.stdout"));
    let err_path = log_dir.join(format!("{tag}.stderr"));
    let mut command = Command::new(cryo_bin());
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).expect("cryo stdout file"))
        .stderr(File::create(&err_path).expect("cryo stderr file"));
    configure(&mut command);
    let child = command.spawn().expect("spawn cryo");
    (child, out_path, err_path)
}

/// Runs `cryo ARGS` as [`run_cryo`] does, in a new anonymous session keyring of its own
/// (keyctl KEYCTL_JOIN_SESSION_KEYRING, as pam_keyinit gives a login shell).
pub fn run_cryo_in_a_session_keyring(log_dir: &Path, tag: &str, args: &[&str]) -> CryoOutput {
    use std::os::unix::process::CommandExt;
    let args: Vec<OsString> = args.iter().map(OsString::from).collect();
    let (mut child, out_path, err_path) = spawn_cryo_with(log_dir, tag, &args, |command| {
        // SAFETY: keyctl is a plain system call, and the closure touches nothing else.
        unsafe {
            command.pre_exec(|| {
                if libc::syscall(
                    libc::SYS_keyctl,
                    1 as libc::c_long,
                    std::ptr::null::<libc::c_char>(),
                ) < 0
                {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
    });
    let pidfd = Pidfd::open(child.id() as i32).expect("pidfd of cryo");
    let waited = wait_child(&mut child, &pidfd, CRYO_TIMEOUT).expect("cryo hung");
    CryoOutput {
        args: args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
        status: waited,
        stdout: read_lossy(&out_path),
        stderr: read_lossy(&err_path),
    }
}

fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// Makes `command` start its process in a session of its own, as a service manager or a
/// daemon does: the process then leads its session and group, which a dump of its tree holds
/// (a process in the test's session is refused without --shell-job).
pub fn own_session(command: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: setsid is async-signal-safe, and the closure touches nothing else.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

/// A field of /proc/PID/status (`TracerPid`, `State`, `SigBlk`...), trimmed.
pub fn status_field(pid: i32, field: &str) -> Option<String> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k == field).then(|| v.trim().to_string())
    })
}

/// Whether a signal number's bit is set in a /proc/PID/status mask (`SigBlk`, `SigCgt`...).
pub fn mask_has(mask_hex: &str, sig: i32) -> bool {
    let mask = u64::from_str_radix(mask_hex, 16).expect("hex signal mask");
    mask & (1u64 << (sig - 1)) != 0
}

/// The children of process `pid` (its main thread's), from /proc; none when it is gone.
pub fn children_of(pid: u32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// A `counter` workload that ticked once, dumped (and so killed, reaped) into its `img`.
pub fn dumped_counter() -> (Workload, PathBuf) {
    let mut w = Workload::spawn("counter", &[]);
    assert_eq!(w.cmd("tick"), "1");
    let img = w.path("img");
    w.dump_ok(&img);
    (w, img)
}

/// Kills (SIGKILL) the processes of its list when dropped: what a test leaves behind outside
/// its workload (workers, copies restored detached).
pub struct Reaper(pub Vec<i32>);

impl Drop for Reaper {
    fn drop(&mut self) {
        for &pid in &self.0 {
            // SAFETY: kill takes plain integers.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// Whether some process has `pid` right now.
pub fn pid_exists(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Parses a `fds` reply into fd number -> link target.
pub fn parse_fds(reply: &str) -> BTreeMap<i32, String> {
    reply
        .split('\t')
        .filter(|e| !e.is_empty())
        .map(|e| {
            let (n, t) = e.split_once('=').expect("N=target");
            (n.parse().expect("fd number"), t.to_string())
        })
        .collect()
}

/// Cryo's mount table, which the tests share (one test binary): a test that mounts in cryo's
/// namespace holds it changing, one whose workload makes a mount namespace holds it kept. A
/// namespace made while such a mount exists holds a copy of it, which becomes one of its own
/// once cryo's is gone (and its mount point with it), so no restore could make it again.
static CRYOS_MOUNTS: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// Holds cryo's mount table unchanged by the other tests while it lives ([`CRYOS_MOUNTS`]).
pub fn cryos_mounts_kept() -> std::sync::RwLockReadGuard<'static, ()> {
    CRYOS_MOUNTS.read().unwrap_or_else(|e| e.into_inner())
}

/// Lets this test mount in cryo's namespace while it lives, no mount namespace being made by
/// another test meanwhile ([`CRYOS_MOUNTS`]).
pub fn cryos_mounts_changing() -> std::sync::RwLockWriteGuard<'static, ()> {
    CRYOS_MOUNTS.write().unwrap_or_else(|e| e.into_inner())
}

/// The tests that open ptys of the host's devpts take turns: a restore makes a pty again at
/// its index, which the dump freed, and a pty opened meanwhile by another test (they run in
/// one test binary) would take it.
pub fn pty_turn() -> std::sync::MutexGuard<'static, ()> {
    static PTYS: std::sync::Mutex<()> = std::sync::Mutex::new(());
    PTYS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Makes a fresh control directory (a temp dir of the test's own).
pub fn control_dir() -> TempDir {
    tempfile::Builder::new()
        .prefix("cryo-test-")
        .tempdir()
        .expect("temp dir")
}

/// How the restored process of a workload is held.
enum Restored {
    /// `cryo restore` without --detach, still running as our child; the
    /// restored process is its child.
    Background {
        cryo: Child,
        cryo_pidfd: Pidfd,
        stderr: PathBuf,
        pidfd: Option<Pidfd>,
    },
    /// `cryo restore --detach` returned; the restored process is nobody we can reap.
    Detached { pidfd: Pidfd },
}

/// One workload process (then its restored self), its control dir and images.
pub struct Workload {
    dir: TempDir,
    mode: String,
    pid: i32,
    original: Option<Child>,
    original_pidfd: Pidfd,
    restored: Option<Restored>,
    runs: Cell<u32>,
    serial: Cell<u64>,
}

impl fmt::Debug for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "workload {} pid {} in {}",
            self.mode,
            self.pid,
            self.dir.path().display()
        )
    }
}

impl Workload {
    /// Spawns `cryo-workload DIR MODE ARGS` in a fresh control dir and waits until it answers.
    pub fn spawn(mode: &str, args: &[&str]) -> Self {
        Self::spawn_in(control_dir(), mode, args)
    }

    /// As [`Workload::spawn`], in a control dir the test prepared (e.g. with a data file).
    pub fn spawn_in(dir: TempDir, mode: &str, args: &[&str]) -> Self {
        Self::spawn_configured(dir, mode, args, |_| {})
    }

    /// As [`Workload::spawn_in`], with the command adjusted by `configure` first (its stdio,
    /// say). The workload's pid is the one that answers `pid`: it may be a descendant of the
    /// process spawned (a job of `cryo-workload DIR job-shell MODE`), which then stands for it.
    pub fn spawn_configured(
        dir: TempDir,
        mode: &str,
        args: &[&str],
        configure: impl FnOnce(&mut Command),
    ) -> Self {
        for fifo in [protocol::CMD_FIFO, protocol::OUT_FIFO] {
            mkfifo(&dir.path().join(fifo)).expect("mkfifo");
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.path().join(protocol::LOG_FILE))
            .expect("workload log");
        let mut command = Command::new(workload_bin());
        command
            .arg(dir.path())
            .arg(mode)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log);
        configure(&mut command);
        let child = command.spawn().expect("spawn cryo-workload");
        let pid = child.id() as i32;
        let original_pidfd = Pidfd::open(pid).expect("pidfd of the workload");
        let mut w = Self {
            dir,
            mode: format!("{mode} {}", args.join(" ")).trim().to_string(),
            pid,
            original: Some(child),
            original_pidfd,
            restored: None,
            runs: Cell::new(0),
            serial: Cell::new(0),
        };
        assert_eq!(w.cmd("ping"), "pong", "{w:?}");
        w.pid = w.cmd("pid").parse().expect("the workload's pid");
        w
    }

    /// The workload's pid (the original's, which the restored process keeps).
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The control dir.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A path inside the control dir (for image dirs: not created).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The workload's stdout and stderr so far.
    pub fn log(&self) -> String {
        read_lossy(&self.path(protocol::LOG_FILE))
    }

    /// Sends one command and returns the reply; panics (with the workload's
    /// log and any restore's stderr) if none comes within [`CMD_TIMEOUT`].
    #[track_caller]
    pub fn cmd(&self, line: &str) -> String {
        self.try_cmd(line, CMD_TIMEOUT)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Sends one command; an error describes why no reply came.
    pub fn try_cmd(&self, line: &str, timeout: Duration) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        let fail = |why: String| Err(self.describe_failure(line, &why));
        let serial = self.serial.get() + 1;
        self.serial.set(serial);
        let tag = format!("#{serial}");
        // The reader first, so the workload's non-blocking open finds it;
        // O_RDWR so it never sees EOF between two writers.
        let mut out = match open_fifo(
            &self.path(protocol::OUT_FIFO),
            libc::O_RDWR | libc::O_NONBLOCK,
        ) {
            Ok(f) => f,
            Err(e) => return fail(format!("open out fifo: {e}")),
        };
        // O_RDWR never blocks and keeps the command in the FIFO even while no
        // workload holds it (yet: during a restore).
        let mut cmd = match open_fifo(&self.path(protocol::CMD_FIFO), libc::O_RDWR) {
            Ok(f) => f,
            Err(e) => return fail(format!("open cmd fifo: {e}")),
        };
        if let Err(e) = cmd.write_all(format!("{tag} {line}\n").as_bytes()) {
            return fail(format!("write cmd fifo: {e}"));
        }
        let watched = self.watched();
        let mut pending = Vec::new();
        loop {
            let mut fds = vec![libc::pollfd {
                fd: out.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            }];
            fds.extend(watched.iter().map(|(p, _)| libc::pollfd {
                fd: p.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            }));
            let ms = remaining_ms(deadline);
            // SAFETY: fds is a valid array of fds.len() pollfds.
            let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return fail(format!("poll: {e}"));
            }
            if fds[0].revents != 0 {
                let mut buf = [0u8; 4096];
                match out.read(&mut buf) {
                    Ok(n) => pending.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return fail(format!("read out fifo: {e}")),
                }
                while let Some(nl) = pending.iter().position(|&b| b == b'\n') {
                    let l: Vec<u8> = pending.drain(..=nl).collect();
                    let l = String::from_utf8_lossy(&l[..nl]).into_owned();
                    match l.split_once(' ') {
                        Some((t, reply)) if t == tag => return Ok(reply.to_string()),
                        _ if l == tag => return Ok(String::new()),
                        // A late reply to an earlier command that timed out.
                        _ => {}
                    }
                }
                continue;
            }
            if let Some((_, who)) = watched
                .iter()
                .zip(&fds[1..])
                .find(|(_, p)| p.revents != 0)
                .map(|(w, _)| w)
            {
                return fail(format!("{who} exited before replying"));
            }
            if r == 0 && Instant::now() >= deadline {
                return fail(format!("no reply within {timeout:?}"));
            }
        }
    }

    /// The processes whose exit means no reply will come.
    fn watched(&self) -> Vec<(&Pidfd, String)> {
        match &self.restored {
            None => vec![(&self.original_pidfd, "the workload".to_string())],
            Some(Restored::Background {
                cryo_pidfd, pidfd, ..
            }) => {
                let mut v = vec![(cryo_pidfd, "cryo restore".to_string())];
                if let Some(p) = pidfd {
                    v.push((p, "the restored workload".to_string()));
                }
                v
            }
            Some(Restored::Detached { pidfd }) => {
                vec![(pidfd, "the restored workload (detached)".to_string())]
            }
        }
    }

    fn describe_failure(&self, line: &str, why: &str) -> String {
        let mut s = format!(
            "command {line:?} to {self:?}: {why}\n--- workload log\n{}",
            self.log()
        );
        if let Some(Restored::Background { stderr, .. }) = &self.restored {
            s.push_str(&format!(
                "\n--- cryo restore stderr\n{}",
                read_lossy(stderr).trim_end()
            ));
        }
        s
    }

    fn next_tag(&self, verb: &str) -> String {
        let n = self.runs.get() + 1;
        self.runs.set(n);
        format!("cryo-{n}-{verb}")
    }

    /// Runs `cryo ARGS` with its output logged in the control dir.
    pub fn cryo<S: AsRef<OsStr>>(&self, args: &[S]) -> CryoOutput {
        let verb = args
            .first()
            .map(|a| a.as_ref().to_string_lossy().into_owned())
            .unwrap_or_default();
        run_cryo(self.dir(), &self.next_tag(&verb), args)
    }

    /// As [`Workload::cryo`], with cryo's command adjusted by `configure` first.
    pub fn cryo_with<S: AsRef<OsStr>>(
        &self,
        args: &[S],
        configure: impl FnOnce(&mut Command),
    ) -> CryoOutput {
        let verb = args
            .first()
            .map(|a| a.as_ref().to_string_lossy().into_owned())
            .unwrap_or_default();
        run_cryo_with(self.dir(), &self.next_tag(&verb), args, configure)
    }

    /// `cryo dump -t PID -D IMG EXTRA...`, whatever its outcome.
    pub fn dump(&self, img: &Path, extra: &[&str]) -> CryoOutput {
        let mut args: Vec<OsString> = vec![
            "dump".into(),
            "-t".into(),
            self.pid.to_string().into(),
            "-D".into(),
            img.into(),
        ];
        args.extend(extra.iter().map(OsString::from));
        self.cryo(&args)
    }

    /// `cryo show -D IMG [--json]`, whatever its outcome.
    pub fn show(&self, img: &Path, json: bool) -> CryoOutput {
        let mut args: Vec<&OsStr> = vec!["show".as_ref(), "-D".as_ref(), img.as_ref()];
        if json {
            args.push("--json".as_ref());
        }
        self.cryo(&args)
    }

    /// A dump that must succeed and kill the workload (the original or a
    /// restored one), which is then reaped (or, detached, seen to exit).
    #[track_caller]
    pub fn dump_ok(&mut self, img: &Path) -> CryoOutput {
        let out = self.dump(img, &[]);
        out.assert_success();
        self.reap_dumped(&out);
        out
    }

    /// After a killing dump that succeeded (`out`): reaps the workload it killed (the
    /// original or a restored one), or, detached, sees it exit.
    #[track_caller]
    pub fn reap_dumped(&mut self, out: &CryoOutput) {
        if self.original.is_some() {
            let status = self.wait_original();
            assert!(
                status.signal().is_some(),
                "the dumped workload should have been killed, it exited with {status}\n{out}"
            );
        } else {
            match self.restored.take() {
                Some(Restored::Background {
                    mut cryo,
                    cryo_pidfd,
                    stderr,
                    ..
                }) => {
                    // cryo restore reaps the dumped process, then exits.
                    wait_child(&mut cryo, &cryo_pidfd, CRYO_TIMEOUT).unwrap_or_else(|e| {
                        panic!("cryo restore after the dump: {e}\n{}", read_lossy(&stderr))
                    });
                }
                Some(Restored::Detached { pidfd }) => assert!(
                    pidfd.wait_exit(CMD_TIMEOUT),
                    "the dumped workload should have been killed\n{out}"
                ),
                None => panic!("dumped a workload that was not running\n{out}"),
            }
        }
    }

    /// Waits for the original workload to end and reaps it.
    pub fn wait_original(&mut self) -> ExitStatus {
        let mut child = self
            .original
            .take()
            .expect("the original was already reaped");
        wait_child(&mut child, &self.original_pidfd, CMD_TIMEOUT)
            .unwrap_or_else(|e| panic!("the original workload: {e}"))
    }

    /// Kills the original workload and reaps it.
    pub fn kill_original(&mut self) -> ExitStatus {
        let mut child = self
            .original
            .take()
            .expect("the original was already reaped");
        let _ = child.kill();
        child.wait().expect("wait for the original workload")
    }

    /// Whether the original workload is still our unreaped child.
    pub fn original_alive(&self) -> bool {
        self.original.is_some() && !self.original_pidfd.exited()
    }

    /// Starts `cryo restore -D IMG` (no --detach) as our child and waits until
    /// the restored workload answers, with its original pid.
    #[track_caller]
    pub fn restore_background(&mut self, img: &Path) {
        self.start_restore(img);
        self.await_restored();
    }

    /// Starts `cryo restore -D IMG` as our child without waiting for anything.
    pub fn start_restore(&mut self, img: &Path) {
        self.start_restore_with(img, |_| {});
    }

    /// As [`Workload::start_restore`], with cryo's command adjusted by `configure` first (its
    /// stdio on a terminal, say: its stdout and stderr files are then empty).
    pub fn start_restore_with(&mut self, img: &Path, configure: impl FnOnce(&mut Command)) {
        assert!(
            self.restored.is_none(),
            "a restored workload is still running: kill_restored() first"
        );
        assert!(
            !self.original_alive(),
            "the original workload still runs: dump it or kill it first"
        );
        let tag = self.next_tag("restore");
        let args = [OsString::from("restore"), "-D".into(), img.into()];
        let (cryo, _, stderr) = spawn_cryo_with(self.dir(), &tag, &args, configure);
        let cryo_pidfd = Pidfd::open(cryo.id() as i32).expect("pidfd of cryo");
        self.restored = Some(Restored::Background {
            cryo,
            cryo_pidfd,
            stderr,
            pidfd: None,
        });
    }

    /// Waits until the restored workload answers and checks its pid.
    #[track_caller]
    pub fn await_restored(&mut self) {
        let pid = self.cmd("pid");
        assert_eq!(pid, self.pid.to_string(), "restored with another pid");
        let pidfd = Pidfd::open(self.pid).expect("pidfd of the restored workload");
        match &mut self.restored {
            Some(Restored::Background { pidfd: p, .. }) => *p = Some(pidfd),
            _ => panic!("no background restore"),
        }
    }

    /// The pid of the running `cryo restore` (without --detach).
    pub fn restore_cryo_pid(&self) -> Option<i32> {
        match &self.restored {
            Some(Restored::Background { cryo, .. }) => Some(cryo.id() as i32),
            _ => None,
        }
    }

    /// `cryo restore -D IMG --detach`: must exit 0 with the workload answering, its pid kept.
    #[track_caller]
    pub fn restore_detached(&mut self, img: &Path) -> CryoOutput {
        self.restore_detached_with(img, &[])
    }

    /// `cryo restore -D IMG --detach EXTRA...`: must exit 0 with the workload answering.
    #[track_caller]
    pub fn restore_detached_with(&mut self, img: &Path, extra: &[&str]) -> CryoOutput {
        assert!(
            self.restored.is_none() && !self.original_alive(),
            "something of this workload still runs"
        );
        let mut args: Vec<&OsStr> = vec![
            OsStr::new("restore"),
            "-D".as_ref(),
            img.as_ref(),
            "--detach".as_ref(),
        ];
        args.extend(extra.iter().map(OsStr::new));
        let out = self.cryo(&args);
        out.assert_success();
        let pidfd = Pidfd::open(self.pid).unwrap_or_else(|e| {
            panic!("no process {} after restore --detach: {e}\n{out}", self.pid)
        });
        self.restored = Some(Restored::Detached { pidfd });
        assert_eq!(self.cmd("pid"), self.pid.to_string());
        out
    }

    /// Takes the process running with our pid as this workload restored, detached: for a
    /// restore this harness did not start (`cryo restore --from`, a receiver's restore).
    #[track_caller]
    pub fn adopt_restored(&mut self) {
        self.adopt_restored_at(self.pid);
    }

    /// As [`Workload::adopt_restored`], for a process restored in another PID namespace (a
    /// migration's destination): `here` is its pid as this test sees it; it must answer
    /// with the original pid.
    #[track_caller]
    pub fn adopt_restored_at(&mut self, here: i32) {
        assert!(
            self.restored.is_none() && !self.original_alive(),
            "something of this workload still runs"
        );
        let pidfd = Pidfd::open(here).unwrap_or_else(|e| panic!("no process {here} to adopt: {e}"));
        self.restored = Some(Restored::Detached { pidfd });
        assert_eq!(self.cmd("pid"), self.pid.to_string());
    }

    /// Waits for a background `cryo restore` to exit (after the restored
    /// workload was told to `exit`) and returns cryo's status.
    pub fn wait_restore(&mut self) -> ExitStatus {
        match self.restored.take() {
            Some(Restored::Background {
                mut cryo,
                cryo_pidfd,
                stderr,
                ..
            }) => wait_child(&mut cryo, &cryo_pidfd, CRYO_TIMEOUT).unwrap_or_else(|e| {
                panic!("cryo restore: {e}\n--- stderr\n{}", read_lossy(&stderr))
            }),
            _ => panic!("no background restore"),
        }
    }

    /// Waits until the restored workload a killing dump ended is gone: its background `cryo
    /// restore` exited, or the detached (adopted) process itself.
    pub fn wait_restored_gone(&mut self) {
        match self.restored.take() {
            Some(Restored::Detached { pidfd }) => assert!(
                pidfd.wait_exit(CMD_TIMEOUT),
                "the detached restored workload did not end"
            ),
            other => {
                self.restored = other;
                self.wait_restore();
            }
        }
    }

    /// Kills the restored workload; for a background restore, also waits for
    /// cryo (which reaps it) and returns cryo's status.
    pub fn kill_restored(&mut self) -> Option<ExitStatus> {
        match self.restored.take() {
            None => panic!("nothing restored"),
            Some(Restored::Detached { pidfd }) => {
                let _ = pidfd.signal(libc::SIGKILL);
                assert!(
                    pidfd.wait_exit(CMD_TIMEOUT),
                    "detached restored workload survived SIGKILL"
                );
                None
            }
            Some(Restored::Background {
                mut cryo,
                cryo_pidfd,
                stderr,
                pidfd,
            }) => {
                self.kill_restored_root(pidfd.as_ref());
                let status = wait_child(&mut cryo, &cryo_pidfd, CRYO_TIMEOUT).unwrap_or_else(|e| {
                    panic!("cryo restore: {e}\n--- stderr\n{}", read_lossy(&stderr))
                });
                Some(status)
            }
        }
    }

    /// Whether a process runs with our pid and our control dir in its command line.
    pub fn pid_is_ours(&self) -> bool {
        let Ok(cmdline) = fs::read(format!("/proc/{}/cmdline", self.pid)) else {
            return false;
        };
        let dir = self.dir().as_os_str().as_bytes();
        cmdline.windows(dir.len()).any(|w| w == dir)
    }

    /// SIGKILLs every process whose command line names this workload's dir.
    fn kill_every_process_of_ours(&self) {
        let dir = self.dir().as_os_str().as_bytes().to_vec();
        let Ok(entries) = fs::read_dir("/proc") else {
            return;
        };
        for pid in entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        {
            let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
                continue;
            };
            if cmdline.windows(dir.len()).any(|w| w == dir.as_slice()) {
                if let Ok(p) = Pidfd::open(pid) {
                    let _ = p.signal(libc::SIGKILL);
                }
            }
        }
    }

    /// [`dump_and_restore`](Self::dump_and_restore) with its TCP connections
    /// (`--tcp-established`).
    #[track_caller]
    pub fn dump_and_restore_established(&mut self) {
        let img = self.path("img");
        self.dump(&img, &["--tcp-established"]).assert_success();
        self.wait_original();
        self.restore_background(&img);
    }

    /// Dumps the workload into `img` under its control dir (killing it), then restores it in
    /// the background: the round trip most tests check the restored process after.
    #[track_caller]
    pub fn dump_and_restore(&mut self) {
        let img = self.path("img");
        self.dump_ok(&img);
        self.restore_background(&img);
    }

    /// Restores image `img` detached as a copy in new PID and network namespaces
    /// (`--pidns --netns`), beside the workload: the copy's root pid, as seen from here.
    #[track_caller]
    pub fn restore_copy_in_namespaces(&self, img: &Path) -> i32 {
        let out = self.cryo(&[
            "restore".as_ref(),
            "-D".as_ref(),
            img.as_os_str(),
            "--detach".as_ref(),
            "--pidns".as_ref(),
            "--netns".as_ref(),
        ]);
        out.assert_success();
        out.stdout.trim().parse().unwrap()
    }

    /// `cryo dump` of the workload while this test thread traces it (PTRACE_SEIZE: a tracer
    /// cryo must not steal), whatever its outcome; the workload is let go after (interrupted,
    /// its stop collected, detached).
    pub fn dump_while_traced(&self) -> CryoOutput {
        use nix::sys::{ptrace, wait};
        let pid = nix::unistd::Pid::from_raw(self.pid);
        ptrace::seize(pid, ptrace::Options::empty()).unwrap();
        let out = self.dump(&self.path("img"), &[]);
        // Detaching needs the tracee stopped: interrupt it, collect the stop, let go.
        ptrace::interrupt(pid).unwrap();
        wait::waitpid(pid, Some(wait::WaitPidFlag::__WALL)).unwrap();
        ptrace::detach(pid, None).unwrap();
        out
    }

    /// The pids of the workload's forked processes, as its `kids` command lists them.
    #[track_caller]
    pub fn kids(&self) -> Vec<i32> {
        let reply = self.cmd("kids");
        reply
            .split(' ')
            .map(|p| {
                p.parse()
                    .unwrap_or_else(|_| panic!("kids: not pids: {reply:?}"))
            })
            .collect()
    }

    /// Asks `verb` until `ok` accepts the reply (bounded by [`CMD_TIMEOUT`]): for a state the
    /// workload reaches on its own (a timer's expiry, an event delivered).
    #[track_caller]
    pub fn await_reply(&self, verb: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + CMD_TIMEOUT;
        loop {
            let r = self.cmd(verb);
            if ok(&r) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "{verb}: last reply {r:?}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stops (SIGSTOP) the workload's original process and waits until it is stopped: a copy
    /// restored beside it reads the same command FIFO, and kill() returns before the stop
    /// takes effect (a command written meanwhile could be read by the original, which would
    /// then stop before answering). SIGCONT through the returned pidfd lets it go on.
    #[track_caller]
    pub fn stop_original(&self) -> Pidfd {
        let original = Pidfd::open(self.pid).unwrap();
        original.signal(libc::SIGSTOP).unwrap();
        let deadline = Instant::now() + CMD_TIMEOUT;
        while !status_field(self.pid, "State").is_some_and(|s| s.starts_with('T')) {
            assert!(Instant::now() < deadline, "the original did not stop");
            std::thread::yield_now();
        }
        original
    }

    /// A dump that must be refused with an error naming this workload's pid, `fd FD` and
    /// `attribute`, and leave the workload as it was.
    #[track_caller]
    pub fn assert_dump_refused(&self, fd: &str, attribute: &str) {
        self.dump(&self.path("img"), &[])
            .assert_refused()
            .assert_stderr_has_word(&self.pid.to_string())
            .assert_stderr_mentions(&format!("fd {fd}"))
            .assert_stderr_mentions(attribute);
        self.assert_untouched();
    }

    /// SIGKILLs a restored root: through its pidfd when the restore gave one, else by pid if
    /// the process there is ours.
    fn kill_restored_root(&self, pidfd: Option<&Pidfd>) {
        match pidfd {
            Some(p) => {
                let _ = p.signal(libc::SIGKILL);
            }
            None => self.kill_if_ours(),
        }
    }

    fn kill_if_ours(&self) {
        if self.pid_is_ours() {
            if let Ok(p) = Pidfd::open(self.pid) {
                let _ = p.signal(libc::SIGKILL);
            }
        }
    }

    /// A field of this workload's /proc/PID/status.
    pub fn status(&self, field: &str) -> String {
        status_field(self.pid, field)
            .unwrap_or_else(|| panic!("no {field} in /proc/{}/status", self.pid))
    }

    /// Checks the workload runs as before a failed operation: not traced, not
    /// stopped, and answering.
    #[track_caller]
    pub fn assert_untouched(&self) {
        assert_eq!(self.status("TracerPid"), "0", "left traced: {self:?}");
        let state = self.status("State");
        assert!(
            !state.starts_with('t') && !state.starts_with('T') && !state.starts_with('Z'),
            "left in state {state}: {self:?}"
        );
        assert_eq!(self.cmd("ping"), "pong");
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        match self.restored.take() {
            Some(Restored::Detached { pidfd }) => {
                let _ = pidfd.signal(libc::SIGKILL);
            }
            Some(Restored::Background {
                mut cryo,
                cryo_pidfd,
                pidfd,
                ..
            }) => {
                self.kill_restored_root(pidfd.as_ref());
                if wait_child(&mut cryo, &cryo_pidfd, CMD_TIMEOUT).is_err() {
                    self.kill_if_ours();
                }
            }
            None => {}
        }
        if let Some(mut child) = self.original.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Whatever else runs under our pid from our dir (a restore that was
        // refused too late, say) goes too.
        self.kill_if_ours();
        // And every process the workload forked (its children carry its command line, our
        // dir in it): killing a restored root leaves them to init otherwise.
        self.kill_every_process_of_ours();
        release_network_locks_under(self.dir());
    }
}

/// Removes the network lock of every dump into a directory directly below `dir` that is still
/// installed (`cryo unlock`): a failed restore keeps its lock for a retry, as it should, and a
/// test that ends there must not leave rules behind that every later loopback packet goes
/// through.
pub fn release_network_locks_under(dir: &Path) {
    let images = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("inventory.img").is_file());
    let Ok(cryo) = locate_cryo(std::env::var_os("CRYO_BIN"), &current_exe()) else {
        return;
    };
    for images in images {
        let _ = Command::new(&cryo)
            .arg("unlock")
            .arg("-D")
            .arg(&images)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn mkfifo(path: &Path) -> io::Result<()> {
    let p = CString::new(path.as_os_str().as_bytes()).expect("no NUL in paths");
    // SAFETY: p is a NUL-terminated path that outlives the call.
    if unsafe { libc::mkfifo(p.as_ptr(), 0o600) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn open_fifo(path: &Path, flags: i32) -> io::Result<File> {
    let mut o = OpenOptions::new();
    if flags & libc::O_ACCMODE == libc::O_RDWR {
        o.read(true).write(true);
    } else {
        o.read(true);
    }
    o.custom_flags(flags & !libc::O_ACCMODE).open(path)
}

/// A tmpfs (or hugetlbfs) mounted for one test, unmounted on drop (declare it after the
/// `Workload` whose dir holds it, so it goes first).
#[derive(Debug)]
pub struct Mount {
    path: PathBuf,
}

impl Mount {
    /// Mounts a tmpfs with `options` (e.g. `size=1M`, `ro`) at `path`, creating the directory.
    pub fn tmpfs(path: &Path, options: &str) -> Self {
        Self::new("tmpfs", path, options)
    }

    /// Mounts a hugetlbfs with `options` (e.g. `pagesize=2M`) at `path`, creating the
    /// directory.
    pub fn hugetlbfs(path: &Path, options: &str) -> Self {
        Self::new("hugetlbfs", path, options)
    }

    /// Mounts a BPF filesystem (a new instance: its pins are its own) at `path`, creating the
    /// directory.
    pub fn bpffs(path: &Path) -> Self {
        Self::new("bpf", path, "mode=0700")
    }

    fn new(kind: &str, path: &Path, options: &str) -> Self {
        fs::create_dir_all(path).expect("mount point");
        let c = |s: &[u8]| CString::new(s).expect("no NUL");
        let (src, target, fstype) = (
            c(kind.as_bytes()),
            c(path.as_os_str().as_bytes()),
            c(kind.as_bytes()),
        );
        let mut flags: libc::c_ulong = libc::MS_NOSUID | libc::MS_NODEV;
        let mut data = Vec::new();
        for opt in options.split(',').filter(|o| !o.is_empty()) {
            match opt {
                "ro" => flags |= libc::MS_RDONLY,
                other => data.push(other),
            }
        }
        let data = c(data.join(",").as_bytes());
        // SAFETY: all four strings are NUL-terminated and outlive the call.
        let r = unsafe {
            libc::mount(
                src.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                flags,
                data.as_ptr().cast(),
            )
        };
        assert!(
            r == 0,
            "mount {kind} -o {options} {}: {}",
            path.display(),
            io::Error::last_os_error()
        );
        Self {
            path: path.to_path_buf(),
        }
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let p = CString::new(self.path.as_os_str().as_bytes()).expect("no NUL");
        // SAFETY: p is NUL-terminated; unmounting our own mount point.
        if unsafe { libc::umount2(p.as_ptr(), 0) } != 0 {
            // SAFETY: as above; lazily, if something still uses it.
            unsafe { libc::umount2(p.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

/// Writes `data` to `path` (a helper for tests preparing files).
pub fn write_file(path: &Path, data: &[u8]) {
    let mut f = File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    f.write_all(data).expect("write");
}

/// Sets (or clears, with 0) the inode attributes of `path` (chattr's flags; a /proc/PID/fd/N
/// link leads to the process's file).
pub fn set_inode_flags(path: &Path, flags: libc::c_long) {
    let file = OpenOptions::new().read(true).open(path).unwrap();
    let mut value = flags;
    // SAFETY: FS_IOC_SETFLAGS (_IOW('f', 2, long)) reads one long through the pointer.
    let r = unsafe {
        libc::ioctl(
            file.as_raw_fd(),
            0x4008_6602,
            &mut value as *mut libc::c_long,
        )
    };
    assert_eq!(
        r,
        0,
        "FS_IOC_SETFLAGS {flags:#x} on {}: {}",
        path.display(),
        io::Error::last_os_error()
    );
}

/// The inode flags a workload's `inode N` line shows (`flags=0x...`; 0 for `-`).
pub fn inode_flags_in(line: &str) -> u32 {
    let flags = line
        .split(" flags=0x")
        .nth(1)
        .and_then(|f| f.split(' ').next());
    flags
        .and_then(|f| u32::from_str_radix(f, 16).ok())
        .unwrap_or(0)
}

/// Sets extended attribute `name` of the file at `path` (followed: a /proc/PID/fd/N link
/// leads to the process's file) to `value`.
pub fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    let (p, n) = (
        CString::new(path.as_os_str().as_bytes()).unwrap(),
        CString::new(name).unwrap(),
    );
    // SAFETY: both strings are NUL-terminated; `value` is read for its length.
    let r = unsafe {
        libc::setxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(
        r,
        0,
        "setxattr {name} on {}: {}",
        path.display(),
        io::Error::last_os_error()
    );
}

/// A pre-shared key file for `--psk-file`: `key` written to `dir/name`, mode 0600.
pub fn key_file(dir: &Path, name: &str, key: &str) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, key).unwrap();
    fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    p
}

/// The address a `cryo serve` started with its stdout piped says it listens on (its first
/// line, `listening ADDR`); Err with what it said instead.
pub fn serve_address(serve: &mut std::process::Child) -> Result<String, String> {
    let mut line = String::new();
    let stdout = serve.stdout.take().ok_or("serve's stdout is not piped")?;
    io::BufRead::read_line(&mut io::BufReader::new(stdout), &mut line)
        .map_err(|e| format!("read serve's stdout: {e}"))?;
    line.trim()
        .strip_prefix("listening ")
        .map(str::to_string)
        .ok_or_else(|| format!("serve said {line:?}"))
}

/// Moves the calling test thread into a network namespace of its own with lo up: what it
/// starts (workloads, cryo) inherits it, so raw and packet sockets hear no other test's
/// traffic.
pub fn own_netns() {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare CLONE_NEWNET");
    let out = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .output()
        .expect("run ip");
    assert!(out.status.success(), "ip link set lo up");
}

/// Unmounts (lazily) a mount a test or its workload made at the path, when dropped.
pub struct Unmount(pub std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}
