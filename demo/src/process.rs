//! The workload process as the demo sees it: started (this binary re-executed), connected
//! to and waited for until ready, watched while it ticks, and killed and reaped on the way
//! out, whatever happened.

use std::fs;
use std::io::Read as _;
use std::net::SocketAddr;
use std::os::fd::AsFd as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context as _};
use cryo_core::Pid;
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};

use crate::client::Client;
use crate::ticks::{ticks, Tick, LISTENING, LOG, READY};
use crate::{POLL, TIMEOUT, WORKLOAD_COMMAND};

/// The workload process, killed and reaped on drop unless already gone.
pub(crate) struct Workload {
    pub(crate) pid: Pid,
    gone: bool,
}

impl Workload {
    /// Starts the workload (saying ready after `ready_after` ticks), connects to it, and waits (bounded) until it says it is ready.
    pub(crate) fn start(
        exe: &Path,
        dir: &Path,
        ready_after: u64,
    ) -> anyhow::Result<(Self, Client)> {
        let mut child = Command::new(exe)
            .arg(WORKLOAD_COMMAND)
            .arg(dir)
            .arg("--ready-after")
            .arg(ready_after.to_string())
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
            .and_then(|l| l.strip_prefix(LISTENING))
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
        if text.trim() != READY {
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
            read_log(&dir.join(LOG)).unwrap_or_else(|e| format!("{e:#}"))
        )
    }

    /// Takes charge of a restored workload.
    pub(crate) fn adopt(pid: Pid) -> Self {
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
    pub(crate) fn wait_gone(&mut self) -> anyhow::Result<String> {
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

    /// Waits (bounded) until the log holds `count` ticks and `client`'s connection brought tick
    /// line `tcp_n`, failing early if the process ends or the connection breaks. Returns the log's
    /// ticks.
    pub(crate) fn wait_ticks(
        &mut self,
        client: &mut Client,
        log: &Path,
        count: usize,
        tcp_n: u64,
    ) -> anyhow::Result<Vec<Tick>> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let pumped = client.pump();
            let text = read_log(log)?;
            let ticks = ticks(&text);
            if let Some(how) = self.ended()? {
                self.gone = true;
                bail!(
                    "the workload (pid {}) {how} after {} ticks; its log:\n{text}",
                    self.pid,
                    ticks.len()
                );
            }
            if let Err(e) = pumped {
                return Err(e.context(format!("the workload's log:\n{text}")));
            }
            if ticks.len() >= count && client.last_n() >= tcp_n {
                return Ok(ticks);
            }
            if Instant::now() > deadline {
                bail!(
                    "the workload (pid {}) logged {} of {count} ticks and sent {} of {tcp_n} tick \
                     lines in {TIMEOUT:?}; its log:\n{text}",
                    self.pid,
                    ticks.len(),
                    client.last_n()
                );
            }
            let mut fds = [PollFd::new(client.stream.as_fd(), PollFlags::POLLIN)];
            let wait = PollTimeout::try_from(POLL).unwrap_or(PollTimeout::MAX);
            match poll(&mut fds, wait) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return Err(e).context("poll the TCP connection"),
            }
        }
    }

    /// Kills and reaps it.
    pub(crate) fn stop(&mut self) {
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

/// The workload's log, whole.
pub(crate) fn read_log(path: &Path) -> anyhow::Result<String> {
    fs::read_to_string(path).with_context(|| format!("read the workload's log {}", path.display()))
}
