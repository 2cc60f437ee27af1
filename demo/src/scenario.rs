//! `cryo demo`: checkpoint a live workload, kill it, restore it, and show it continuing.
//!
//! The workload is this binary re-executed as `cryo __demo-workload DIR` (see
//! [`super::demo_workload`]): a counter, a regular file read one line per tick from its
//! middle, a pipe drained one chunk per tick, and one TCP connection on 127.0.0.1 to which it
//! sends a line per tick. The demo
//!
//! 1. starts it in a temporary directory, connects to it as its TCP client (the demo is not
//!    dumped: it is the peer that must never notice) and waits on a ready pipe until it has
//!    ticked; it answers every tick line on the connection with a line of its own;
//! 2. dumps it with the engine (kill mode, established TCP connections included) into
//!    `DIR/img` and checks its pid is gone;
//! 3. restores it (detached), waits for a few more ticks, on the log and on the connection;
//! 4. checks that the counter, the file offset and the pipe data all continue exactly where
//!    they stopped, that the connection was never reset or closed, that its tick lines go on
//!    without a gap or a repeat and that the workload got every line the demo sent, then
//!    kills it and removes the directory.
//!
//! Everything runs on this one thread (restore forks from this process): the connection is
//! read without blocking, with poll.
//!
//! `cryo demo --rehearse` (hidden) runs the same demo with SIGSTOP and SIGCONT standing in
//! for the dump and the restore, so everything around the engine is tested on its own.

use std::fs;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsFd as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use cryo_core::dump::{dump, DumpOptions, DumpSummary};
use cryo_core::restore::{restore, RestoreOptions, Restored};
use cryo_core::Pid;
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};

use super::demo_workload::{self as workload, TcpTick, Tick, LINE_LEN};
use super::{mib, ms};

/// Ticks the workload logs before the dump.
const TICKS_BEFORE: u64 = 5;
/// Ticks to see after the restore.
const TICKS_AFTER: usize = 5;
/// Longest wait for the workload to be ready, to die, or to tick after the restore.
const TIMEOUT: Duration = Duration::from_secs(10);
/// How often the log is looked at while waiting for ticks.
const POLL: Duration = Duration::from_millis(20);
/// What this demo sends on the connection while the workload is checkpointed.
const MEANWHILE: &str = "sent-while-checkpointed";
/// Lines of the connection shown before the checkpoint.
const TCP_SHOWN_BEFORE: usize = 3;

/// Checkpoint a live workload, kill it, restore it and watch it continue (no arguments needed)
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Keep the working directory (images and the workload's log) instead of removing it
    #[arg(long)]
    keep: bool,

    /// Rehearse: SIGSTOP and SIGCONT stand in for the dump and the restore (tests the demo
    /// without the engine)
    #[arg(long, hide = true)]
    rehearse: bool,
}

/// What checkpoints and restores the workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Engine {
    /// cryo-core: dump (kill mode) and restore (detached).
    Cryo,
    /// SIGSTOP and SIGCONT: the process is never gone, only stopped.
    Rehearsal,
}

impl Engine {
    fn dump(self, pid: Pid, images: &Path) -> anyhow::Result<DumpSummary> {
        match self {
            Self::Cryo => dump(&DumpOptions {
                pids: vec![pid],
                images_dir: images.to_path_buf(),
                tcp_established: true,
                ..Default::default()
            })
            .map_err(Into::into),
            Self::Rehearsal => {
                let start = Instant::now();
                kill(pid, Signal::SIGSTOP).context("SIGSTOP")?;
                match waitpid(pid, Some(WaitPidFlag::WUNTRACED)).context("waitpid")? {
                    WaitStatus::Stopped(..) => {}
                    other => bail!("the workload did not stop: {other:?}"),
                }
                fs::create_dir(images).with_context(|| format!("mkdir {}", images.display()))?;
                Ok(DumpSummary {
                    pids: vec![pid],
                    pages_bytes: 0,
                    frozen: Duration::ZERO,
                    total: start.elapsed(),
                })
            }
        }
    }

    fn restore(self, pid: Pid, images: &Path) -> anyhow::Result<Restored> {
        match self {
            Self::Cryo => restore(&RestoreOptions {
                images_dir: images.to_path_buf(),
                detach: true,
                ..Default::default()
            })
            .map_err(Into::into),
            Self::Rehearsal => {
                let start = Instant::now();
                kill(pid, Signal::SIGCONT).context("SIGCONT")?;
                Ok(Restored {
                    init: None,
                    roots: vec![pid],
                    elapsed: start.elapsed(),
                })
            }
        }
    }
}

/// Runs the demo; any failure comes back as an error saying which step failed and why.
pub fn run(args: Args) -> anyhow::Result<i32> {
    let mut tmp = tempfile::Builder::new()
        .prefix("cryo-demo.")
        .tempdir()
        .context("create a temporary directory")?;
    tmp.disable_cleanup(args.keep);
    let dir = tmp.path().to_path_buf();
    println!("cryo demo: checkpoint a live process, kill it, restore it, watch it continue");
    println!("  working directory {}", dir.display());
    let engine = if args.rehearse {
        println!("  rehearsal: SIGSTOP and SIGCONT stand in for the dump and the restore");
        Engine::Rehearsal
    } else {
        Engine::Cryo
    };
    let result = demo(&dir, engine);
    if args.keep {
        println!(
            "  kept {} (see the images with: cryo show -D {})",
            dir.display(),
            dir.join("img").display()
        );
    }
    result.map(|()| 0)
}

fn demo(dir: &Path, engine: Engine) -> anyhow::Result<()> {
    let log_path = dir.join(workload::LOG);
    let log = || read_log(&log_path);

    // 1. The workload, and the demo as its TCP client.
    let exe = std::env::current_exe().context("find the cryo binary")?;
    let (mut task, mut client) = Workload::start(&exe, dir)?;
    let pid = task.pid;
    println!();
    println!(
        "1. started the workload: pid {pid}, `{} __demo-workload {}`",
        exe.display(),
        dir.display()
    );
    println!(
        "   in a session of its own with no terminal, it ticks every 100 ms: it counts, reads the \
         next line of {} (opened, already read halfway), drains one chunk of a pipe it holds \
         both ends of, and sends a line to its TCP client",
        workload::INPUT
    );
    println!(
        "   this demo is that client: connected {} -> {}, it answers every tick line with one \
         of its own",
        client.local, client.peer
    );
    // Every tick line up to the one the workload was ready at, each answered.
    client
        .wait(&mut task, &log_path, 0, TICKS_BEFORE)
        .context("before the checkpoint")?;
    let before = log()?;
    for line in before.lines() {
        println!("   | {line}");
    }

    // 2. Checkpoint, in kill mode, with the established connection.
    client.at_checkpoint = (client.bytes_in, client.bytes_out);
    let images = dir.join("img");
    let summary = engine
        .dump(pid, &images)
        .with_context(|| format!("checkpoint of the workload (pid {pid}) failed"))?;
    if engine == Engine::Cryo {
        task.wait_gone()
            .context("after the checkpoint the workload should be gone")?;
    }
    let (size, files) = dir_size(&images)?;
    println!();
    println!(
        "2. checkpointed pid {pid} into {}: {files} files, {} ({} of pages), frozen {}, total {}",
        images.display(),
        mib(size),
        mib(summary.pages_bytes),
        ms(summary.frozen),
        ms(summary.total)
    );
    if engine == Engine::Cryo {
        println!(
            "   the dump killed it: pid {pid} is gone; its end of the connection is in the images"
        );
    } else {
        println!("   rehearsal: pid {pid} is stopped, not gone");
    }
    let dumped = log()?;
    let before_ticks = workload::ticks(&dumped);
    let last = before_ticks
        .last()
        .cloned()
        .context("the workload's log has no tick")?;
    println!("   its last tick: {}", last.line().trim_end());
    // The client end is still open and unreset while the workload is gone, and a line sent
    // now waits for the restored workload (the network lock drops it, TCP sends it again).
    client
        .pump()
        .context("the TCP connection while the workload was checkpointed")?;
    let meanwhile = client
        .send(MEANWHILE.to_string())
        .context("while the workload was checkpointed")?;
    println!("   sent it {meanwhile:?} on the connection meanwhile");

    // 3. Restore, detached: the restored process is our child again.
    let restored = engine
        .restore(pid, &images)
        .with_context(|| format!("restore of the workload from {} failed", images.display()))?;
    // Every restored process is killed on the way out, whatever happens next. The
    // rehearsal's workload is the same process, still in `task`.
    let mut others = Vec::new();
    if engine == Engine::Cryo {
        for &root in &restored.roots {
            if root == pid {
                task = Workload::adopt(root);
            } else {
                others.push(Workload::adopt(root));
            }
        }
    }
    if restored.roots != [pid] {
        bail!(
            "restore brought back pid(s) {}, expected {pid}",
            super::pid_list(&restored.roots)
        );
    }
    println!();
    println!("3. restored pid {pid} in {}", ms(restored.elapsed));
    // A few more ticks, all answered but the last: the one after shows the workload's count.
    let answer_until = last.n + TICKS_AFTER as u64;
    client.answer_until = answer_until;
    let after = client
        .wait(
            &mut task,
            &log_path,
            before_ticks.len() + TICKS_AFTER,
            answer_until + 1,
        )
        .context("after the restore")?;
    let new_ticks = &after[before_ticks.len()..][..TICKS_AFTER];
    println!("   its log around the checkpoint:");
    println!("   | {}", last.line().trim_end());
    println!("   | ---- checkpoint, kill, restore ----");
    for tick in new_ticks {
        println!("   | {}", tick.line().trim_end());
    }
    println!(
        "   the TCP connection around the checkpoint (<- from the workload, -> from this demo):"
    );
    let shown_from = client
        .lines
        .iter()
        .position(|l| l.tick.n + TCP_SHOWN_BEFORE as u64 > last.n)
        .unwrap_or(0);
    for line in &client.lines[shown_from..] {
        if line.tick.n == last.n + 1 {
            println!("   | ---- checkpoint, kill, restore: same connection, never closed ----");
            println!("   | {:<33} -> {MEANWHILE}", "");
        }
        let tick = line.tick.line();
        match &line.answer {
            Some(answer) => println!("   | <- {:<30} -> {answer}", tick.trim_end()),
            None => println!("   | <- {}", tick.trim_end()),
        }
    }

    // 4. It went on where it stopped.
    let verdict = verify(&last, new_ticks)?;
    let tcp_verdict = client.verify()?;
    task.stop();
    println!();
    println!("4. ok: {verdict}");
    println!("   {tcp_verdict}");
    println!("   stopped the restored workload");
    Ok(())
}

/// Checks that the ticks after the restore continue `last` exactly: counter, input line and
/// offset, pipe chunk. Returns a one-line summary.
fn verify(last: &Tick, after: &[Tick]) -> anyhow::Result<String> {
    let Some(first) = after.first() else {
        bail!("no tick after the restore");
    };
    let mut problems = Vec::new();
    if first.n != last.n + 1 {
        problems.push(format!(
            "the counter went from {} to {} (expected {})",
            last.n,
            first.n,
            last.n + 1
        ));
    }
    match (last.file_line(), first.file_line()) {
        (Some(a), Some(b)) if b == a + 1 => {}
        _ => problems.push(format!(
            "the input file went from {:?} to {:?} (expected the next line)",
            last.file, first.file
        )),
    }
    if first.offset != last.offset + LINE_LEN {
        problems.push(format!(
            "the input offset went from {} to {} (expected {})",
            last.offset,
            first.offset,
            last.offset + LINE_LEN
        ));
    }
    match (last.pipe_chunk(), first.pipe_chunk()) {
        (Some(a), Some(b)) if b == a + 1 => {}
        _ => problems.push(format!(
            "the pipe went from {:?} to {:?} (expected the next chunk)",
            last.pipe, first.pipe
        )),
    }
    for pair in after.windows(2) {
        if pair[1].n != pair[0].n + 1 {
            problems.push(format!(
                "after the restore the counter jumped from {} to {}",
                pair[0].n, pair[1].n
            ));
        }
    }
    if !problems.is_empty() {
        bail!(
            "the restored workload did not continue where it stopped: {}",
            problems.join("; ")
        );
    }
    Ok(format!(
        "the counter went on {} -> {}, {} went on at line {} (offset {} -> {}), the pipe at {}",
        last.n,
        first.n,
        workload::INPUT,
        first.file_line().unwrap_or_default(),
        last.offset,
        first.offset,
        first.pipe
    ))
}

/// A line the workload sent on the connection, and this demo's answer to it, if any.
#[derive(Debug, Clone)]
struct Exchange {
    tick: TcpTick,
    answer: Option<String>,
}

/// This demo as the workload's TCP client: a non-blocking socket read with poll.
struct Client {
    stream: TcpStream,
    local: SocketAddr,
    peer: SocketAddr,
    /// Bytes of an unfinished line.
    partial: Vec<u8>,
    /// Every line received, in order, with the answer sent.
    lines: Vec<Exchange>,
    /// Tick lines up to this one are answered.
    answer_until: u64,
    /// Bytes received and sent.
    bytes_in: usize,
    bytes_out: usize,
    /// `(bytes_in, bytes_out)` when the checkpoint started.
    at_checkpoint: (usize, usize),
    /// Lines sent, and the latest.
    sent: u64,
    last_sent: String,
}

impl Client {
    fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        let stream = TcpStream::connect_timeout(&addr, TIMEOUT)
            .with_context(|| format!("connect to the workload at {addr}"))?;
        stream.set_nodelay(true).context("TCP_NODELAY")?;
        stream.set_nonblocking(true).context("O_NONBLOCK")?;
        let local = stream.local_addr().context("the client's address")?;
        Ok(Self {
            stream,
            local,
            peer: addr,
            partial: Vec::new(),
            lines: Vec::new(),
            answer_until: u64::MAX,
            bytes_in: 0,
            bytes_out: 0,
            at_checkpoint: (0, 0),
            sent: 0,
            last_sent: String::new(),
        })
    }

    /// The last tick received on the connection (0 if none).
    fn last_n(&self) -> u64 {
        self.lines.last().map_or(0, |l| l.tick.n)
    }

    /// Reads whatever has arrived, without blocking; checks every line follows the one before
    /// and answers it. An EOF or an error (a reset) fails.
    fn pump(&mut self) -> anyhow::Result<()> {
        let mut buf = [0u8; 4096];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => bail!(
                    "the workload closed the TCP connection (EOF) after {} tick lines",
                    self.last_n()
                ),
                Ok(len) => {
                    self.bytes_in += len;
                    self.partial.extend_from_slice(&buf[..len]);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(e).context(format!(
                        "the TCP connection failed after {} tick lines",
                        self.last_n()
                    ))
                }
            }
            while let Some(end) = self.partial.iter().position(|&b| b == b'\n') {
                let raw: Vec<u8> = self.partial.drain(..=end).collect();
                let text = String::from_utf8_lossy(&raw);
                let tick = TcpTick::parse(&text)
                    .with_context(|| format!("unexpected line on the TCP connection: {text:?}"))?;
                let want = self.last_n() + 1;
                if tick.n != want {
                    let what = if tick.n < want { "a repeat" } else { "a gap" };
                    bail!(
                        "the TCP tick lines went from tick={} to tick={} ({what}; expected tick={want})",
                        self.last_n(),
                        tick.n
                    );
                }
                let answer = (tick.n <= self.answer_until)
                    .then(|| self.answer(tick.n))
                    .transpose()?;
                self.lines.push(Exchange { tick, answer });
            }
        }
    }

    /// Sends this demo's line for tick `n`.
    fn answer(&mut self, n: u64) -> anyhow::Result<String> {
        self.send(format!("ack={n}"))
    }

    /// Sends `line` (and a newline).
    fn send(&mut self, line: String) -> anyhow::Result<String> {
        self.stream
            .write_all(format!("{line}\n").as_bytes())
            .with_context(|| format!("send {line:?} on the TCP connection"))?;
        self.bytes_out += line.len() + 1;
        self.sent += 1;
        self.last_sent.clone_from(&line);
        Ok(line)
    }

    /// Waits (bounded) until the log holds `count` ticks and the connection brought tick line
    /// `tcp_n`, failing early if the process ends or the connection breaks. Returns the log's
    /// ticks.
    fn wait(
        &mut self,
        task: &mut Workload,
        log: &Path,
        count: usize,
        tcp_n: u64,
    ) -> anyhow::Result<Vec<Tick>> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let pumped = self.pump();
            let text = read_log(log)?;
            let ticks = workload::ticks(&text);
            if let Some(how) = task.ended()? {
                task.gone = true;
                bail!(
                    "the workload (pid {}) {how} after {} ticks; its log:\n{text}",
                    task.pid,
                    ticks.len()
                );
            }
            if let Err(e) = pumped {
                return Err(e.context(format!("the workload's log:\n{text}")));
            }
            if ticks.len() >= count && self.last_n() >= tcp_n {
                return Ok(ticks);
            }
            if Instant::now() > deadline {
                bail!(
                    "the workload (pid {}) logged {} of {count} ticks and sent {} of {tcp_n} tick \
                     lines in {TIMEOUT:?}; its log:\n{text}",
                    task.pid,
                    ticks.len(),
                    self.last_n()
                );
            }
            let mut fds = [PollFd::new(self.stream.as_fd(), PollFlags::POLLIN)];
            let wait = PollTimeout::try_from(POLL).unwrap_or(PollTimeout::MAX);
            match poll(&mut fds, wait) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return Err(e).context("poll the TCP connection"),
            }
        }
    }

    /// Checks, once the answers stopped, that the workload got every line sent; says what
    /// went over the connection before and after the checkpoint `last`.
    fn verify(&self) -> anyhow::Result<String> {
        let Some(end) = self.lines.last() else {
            bail!("no line on the TCP connection");
        };
        if end.tick.got != self.sent || end.tick.last != self.last_sent {
            bail!(
                "the workload did not get every line this demo sent on the TCP connection: it \
                 counts {} (latest {:?}), this demo sent {} (latest {:?})",
                end.tick.got,
                end.tick.last,
                self.sent,
                self.last_sent
            );
        }
        let (before_in, before_out) = self.at_checkpoint;
        Ok(format!(
            "the TCP connection {} -> {} went on, never reset or closed: tick lines 1..={} \
             without a gap or a repeat, and the workload got all {} lines this demo sent (latest \
             {:?}); bytes received/sent by this demo: {before_in}/{before_out} before the \
             checkpoint, {}/{} since",
            self.local,
            self.peer,
            end.tick.n,
            self.sent,
            self.last_sent,
            self.bytes_in - before_in,
            self.bytes_out - before_out,
        ))
    }
}

/// The workload's log, whole.
fn read_log(path: &Path) -> anyhow::Result<String> {
    fs::read_to_string(path).with_context(|| format!("read the workload's log {}", path.display()))
}

/// Total size and number of the files in `dir`.
fn dir_size(dir: &Path) -> anyhow::Result<(u64, usize)> {
    let mut total = (0, 0);
    for entry in fs::read_dir(dir).with_context(|| format!("list {}", dir.display()))? {
        let meta = entry
            .and_then(|e| e.metadata())
            .with_context(|| format!("list {}", dir.display()))?;
        total.0 += meta.len();
        total.1 += 1;
    }
    Ok(total)
}

/// The workload process, killed and reaped on drop unless already gone.
struct Workload {
    pid: Pid,
    gone: bool,
}

impl Workload {
    /// Starts the workload, connects to it, and waits (bounded) until it says it is ready.
    fn start(exe: &Path, dir: &Path) -> anyhow::Result<(Self, Client)> {
        let mut child = Command::new(exe)
            .arg("__demo-workload")
            .arg(dir)
            .arg("--ready-after")
            .arg(TICKS_BEFORE.to_string())
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("start the workload {}", exe.display()))?;
        let mut task = Self {
            pid: Pid::from_raw(child.id() as i32),
            gone: false,
        };
        let mut stdout = child.stdout.take().context("the workload's stdout")?;
        // The child handle is not needed: the workload is waited for by pid.
        drop(child);
        let deadline = Instant::now() + TIMEOUT;
        let mut said = Vec::new();
        // First where it listens, then (once connected and ticked) ready and EOF.
        read_pipe(&mut stdout, &mut said, true, deadline, None)
            .context("waiting for the workload to listen")?;
        let text = String::from_utf8_lossy(&said).into_owned();
        let addr = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix(workload::LISTENING))
            .and_then(|a| a.parse::<SocketAddr>().ok());
        let Some(addr) = addr else {
            return Err(task.not_ready(dir, &text));
        };
        let mut client = Client::connect(addr)?;
        said.clear();
        // The tick lines are answered as they come meanwhile.
        read_pipe(&mut stdout, &mut said, false, deadline, Some(&mut client))
            .context("waiting for the workload to be ready")?;
        let text = String::from_utf8_lossy(&said).into_owned();
        if text.trim() != workload::READY {
            return Err(task.not_ready(dir, &text));
        }
        Ok((task, client))
    }

    /// The error for a workload that did not say what it should have.
    fn not_ready(&mut self, dir: &Path, said: &str) -> anyhow::Error {
        let status = self
            .wait_gone()
            .map(|s| format!(" ({s})"))
            .unwrap_or_default();
        anyhow::anyhow!(
            "the workload stopped before it was ready{status}; it said {said:?}; its log:\n{}",
            read_log(&dir.join(workload::LOG)).unwrap_or_else(|e| format!("{e:#}"))
        )
    }

    /// Takes charge of a restored workload.
    fn adopt(pid: Pid) -> Self {
        Self { pid, gone: false }
    }

    /// Whether it has ended, with how, without waiting. Reaps it if it is our child.
    fn ended(&mut self) -> anyhow::Result<Option<String>> {
        match waitpid(self.pid, Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL)) {
            Ok(WaitStatus::Exited(_, code)) => Ok(Some(format!("exited with status {code}"))),
            Ok(WaitStatus::Signaled(_, sig, _)) => Ok(Some(format!("killed by {sig}"))),
            Ok(_) => Ok(None),
            // Not our child (or already reaped by the engine): look whether the pid exists.
            Err(Errno::ECHILD) => match kill(self.pid, None) {
                Err(Errno::ESRCH) => Ok(Some("gone".to_string())),
                _ => Ok(None),
            },
            Err(e) => Err(e).with_context(|| format!("waitpid {}", self.pid)),
        }
    }

    /// Waits (bounded) until the process has ended and its pid is free; says how it ended.
    fn wait_gone(&mut self) -> anyhow::Result<String> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(how) = self.ended()? {
                self.gone = true;
                return Ok(how);
            }
            if Instant::now() > deadline {
                bail!("pid {} is still there after {TIMEOUT:?}", self.pid);
            }
            std::thread::sleep(POLL);
        }
    }

    /// Kills and reaps it.
    fn stop(&mut self) {
        if self.gone {
            return;
        }
        let _ = kill(self.pid, Signal::SIGKILL);
        let _ = self.wait_gone();
        self.gone = true;
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Reads `pipe` into `text` until EOF, or until a whole line if `line`, before `deadline`;
/// meanwhile reads and answers what comes on the connection of `client`, if any.
fn read_pipe(
    pipe: &mut std::process::ChildStdout,
    text: &mut Vec<u8>,
    line: bool,
    deadline: Instant,
    mut client: Option<&mut Client>,
) -> anyhow::Result<()> {
    loop {
        if line && text.contains(&b'\n') {
            return Ok(());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let left_ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        if left_ms == 0 {
            bail!("nothing after {TIMEOUT:?}");
        }
        let mut fds = vec![PollFd::new(pipe.as_fd(), PollFlags::POLLIN)];
        if let Some(c) = client.as_deref() {
            fds.push(PollFd::new(c.stream.as_fd(), PollFlags::POLLIN));
        }
        let ready = poll(&mut fds, PollTimeout::from(left_ms)).context("poll")?;
        let pipe_ready = fds[0].any().unwrap_or(true);
        drop(fds);
        if let Some(c) = client.as_deref_mut() {
            c.pump()?;
        }
        if ready == 0 || !pipe_ready {
            continue;
        }
        let mut buf = [0u8; 256];
        match pipe.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => text.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context("read"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::demo_workload::{input_line, pipe_chunk};

    fn tick(n: u64) -> Tick {
        let line = 600 + n;
        Tick {
            n,
            file: input_line(line).trim_end().to_string(),
            offset: line * LINE_LEN,
            pipe: pipe_chunk(n),
        }
    }

    #[test]
    fn continuing_ticks_pass() {
        let verdict = verify(&tick(7), &[tick(8), tick(9)]).unwrap();
        assert!(verdict.contains("7 -> 8"), "{verdict}");
    }

    #[test]
    fn restarted_counter_fails() {
        let err = verify(&tick(7), &[tick(1), tick(2)])
            .unwrap_err()
            .to_string();
        assert!(err.contains("from 7 to 1"), "{err}");
    }

    #[test]
    fn lost_pipe_and_rewound_file_fail() {
        let mut t = tick(8);
        t.pipe = "EMPTY".into();
        t.offset = 0;
        t.file = input_line(1).trim_end().to_string();
        let err = verify(&tick(7), &[t]).unwrap_err().to_string();
        assert!(
            err.contains("pipe") && err.contains("input file") && err.contains("offset"),
            "{err}"
        );
    }

    /// A client connected to a listener of this test, which writes the workload's side.
    fn client_and_server() -> (Client, TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = Client::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (client, server)
    }

    /// Pumps until `n` tick lines arrived or the pump fails.
    fn pump_until(client: &mut Client, n: u64) -> anyhow::Result<()> {
        let deadline = Instant::now() + TIMEOUT;
        while client.last_n() < n {
            client.pump()?;
            assert!(Instant::now() < deadline, "timed out");
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    fn tcp_tick(n: u64, got: u64) -> String {
        TcpTick {
            n,
            got,
            last: if got == 0 {
                String::new()
            } else {
                format!("ack={got}")
            },
        }
        .line()
    }

    #[test]
    fn tcp_ticks_are_answered_and_counted() {
        let (mut client, mut server) = client_and_server();
        client.answer_until = 2;
        server
            .write_all((tcp_tick(1, 0) + &tcp_tick(2, 1)).as_bytes())
            .unwrap();
        pump_until(&mut client, 2).unwrap();
        server.write_all(tcp_tick(3, 2).as_bytes()).unwrap();
        pump_until(&mut client, 3).unwrap();
        let mut got = [0u8; 12];
        server.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ack=1\nack=2\n");
        assert!(client.verify().unwrap().contains("got all 2 lines"));
    }

    #[test]
    fn tcp_gap_repeat_and_eof_fail() {
        let (mut client, mut server) = client_and_server();
        server
            .write_all((tcp_tick(1, 0) + &tcp_tick(3, 1)).as_bytes())
            .unwrap();
        let err = format!("{:#}", pump_until(&mut client, 3).unwrap_err());
        assert!(err.contains("a gap"), "{err}");

        let (mut client, mut server) = client_and_server();
        server
            .write_all((tcp_tick(1, 0) + &tcp_tick(1, 0)).as_bytes())
            .unwrap();
        let err = format!("{:#}", pump_until(&mut client, 2).unwrap_err());
        assert!(err.contains("a repeat"), "{err}");

        let (mut client, server) = client_and_server();
        drop(server);
        let err = format!("{:#}", pump_until(&mut client, 1).unwrap_err());
        assert!(err.contains("EOF"), "{err}");
    }

    #[test]
    fn tcp_lost_line_fails() {
        let (mut client, mut server) = client_and_server();
        client.answer_until = 1;
        server.write_all(tcp_tick(1, 0).as_bytes()).unwrap();
        pump_until(&mut client, 1).unwrap();
        // The workload says it got nothing.
        server.write_all(tcp_tick(2, 0).as_bytes()).unwrap();
        pump_until(&mut client, 2).unwrap();
        let err = client.verify().unwrap_err().to_string();
        assert!(err.contains("did not get every line"), "{err}");
    }

    #[test]
    fn nothing_after_fails() {
        assert!(verify(&tick(7), &[]).is_err());
    }
}
