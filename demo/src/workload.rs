//! `cryo __demo-workload DIR` (hidden): the process `cryo demo` checkpoints, the calling
//! binary re-executed (see [`crate::WORKLOAD_COMMAND`]).
//!
//! It puts itself in a session of its own with no terminal (stdin /dev/null, stderr and,
//! once ready, stdout to `DIR/workload.log`), then every tick (~100 ms) appends one line:
//!
//! ```text
//! tick=7 file="input line 0607" offset=9712 pipe="pipe-00007"
//! ```
//!
//! - `tick`: a counter kept in memory;
//! - `file`, `offset`: the next line of `DIR/input.txt`, a regular file it opened and read
//!   halfway before the first tick, and the kernel's file offset after reading it (lseek);
//! - `pipe`: the next chunk drained from a pipe whose two ends it holds, filled with all its
//!   chunks before the first tick (`EMPTY` once drained; the read end is non-blocking).
//!
//! It also serves one TCP client: before the first tick it listens on 127.0.0.1 (an
//! ephemeral port), says `listening 127.0.0.1:PORT` on its original stdout, accepts ONE
//! client (within 10 s) and closes the listener. Every tick it then sends that client
//!
//! ```text
//! tick=7 got=6 last="ack=6"
//! ```
//!
//! where `got` counts the lines the client has sent so far and `last` echoes the latest one
//! (read without blocking at each tick). Its log says when the connection ends.
//!
//! After `--ready-after` ticks it writes `ready` on its original stdout (a pipe from the
//! demo) and replaces that stdout with the log, so nothing outside its own files and the
//! connection is left open. It exits by itself after `--max-ticks`, so a workload whose demo
//! died does not linger.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, Write as _};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::fd::{AsFd as _, AsRawFd as _};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{recv, MsgFlags};
use nix::unistd::{dup2_stderr, dup2_stdin, dup2_stdout, pipe2, setsid};

use crate::ticks::{
    input_line, pipe_chunk, TcpTick, Tick, CHUNK_LEN, INPUT, INPUT_LINES, LINE_LEN, LISTENING, LOG,
    PIPE_CHUNKS, READY,
};

/// How long the workload waits for its one TCP client.
pub const ACCEPT_TIMEOUT: Duration = Duration::from_secs(10);

/// How the workload runs (`__demo-workload DIR [--ready-after N] [--interval-ms MS]
/// [--max-ticks N]`).
#[derive(Debug, Clone)]
pub struct WorkloadOptions {
    /// Directory for the log and the input file.
    pub dir: PathBuf,
    /// Say ready after this many ticks (at least 1).
    pub ready_after: u64,
    /// Milliseconds between ticks.
    pub interval_ms: u64,
    /// Exit after this many ticks.
    pub max_ticks: u64,
}

/// The one TCP client, as the workload sees it.
struct Client {
    stream: TcpStream,
    /// Bytes of an unfinished line.
    partial: Vec<u8>,
    got: u64,
    last: String,
}

impl Client {
    /// Reads whatever the client has sent, without blocking; counts the whole lines.
    fn receive(&mut self) -> anyhow::Result<()> {
        let mut buf = [0u8; 4096];
        loop {
            match recv(self.stream.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
                Ok(0) => bail!("the client closed the connection (EOF)"),
                Ok(len) => self.partial.extend_from_slice(&buf[..len]),
                Err(Errno::EAGAIN) => return Ok(()),
                Err(Errno::EINTR) => {}
                Err(e) => return Err(e).context("recv from the client"),
            }
            while let Some(end) = self.partial.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.partial.drain(..=end).collect();
                self.got += 1;
                self.last = String::from_utf8_lossy(&line[..end]).into_owned();
            }
        }
    }

    /// Sends tick `n`.
    fn send(&mut self, n: u64) -> anyhow::Result<()> {
        let tick = TcpTick {
            n,
            got: self.got,
            last: self.last.clone(),
        };
        self.stream
            .write_all(tick.line().as_bytes())
            .context("send to the client")
    }
}

/// Accepts one connection on `listener`, waiting at most [`ACCEPT_TIMEOUT`].
fn accept_one(listener: &TcpListener) -> anyhow::Result<TcpStream> {
    let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
    let timeout = PollTimeout::try_from(ACCEPT_TIMEOUT).unwrap_or(PollTimeout::MAX);
    if poll(&mut fds, timeout).context("poll the listener")? == 0 {
        bail!("no client connected within {ACCEPT_TIMEOUT:?}");
    }
    let (stream, _) = listener.accept().context("accept")?;
    Ok(stream)
}

/// Runs the workload; returns only on error or after `--max-ticks`.
pub fn run(args: &WorkloadOptions) -> anyhow::Result<i32> {
    // Nothing inherited beyond stdio (a build tool's jobserver pipe, ...): the checkpoint
    // must hold only what the workload opens itself.
    close_inherited_fds()?;
    // A session of its own: no controlling terminal, and the demo's signals don't reach it.
    let session = setsid();
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(args.dir.join(LOG))
        .with_context(|| format!("open {}", args.dir.join(LOG).display()))?;
    let null = File::open("/dev/null").context("open /dev/null")?;
    dup2_stdin(&null).context("stdin from /dev/null")?;
    drop(null);
    dup2_stderr(&log).context("stderr to the log")?;
    if let Err(e) = session {
        // Started by hand as a process group leader: keep going in the caller's session.
        writeln!(log, "setsid: {e} (staying in the caller's session)")?;
    }

    let mut input = open_half_read(&args.dir.join(INPUT))?;
    let (pipe_r, pipe_w) = pipe2(OFlag::O_CLOEXEC).context("pipe2")?;
    fcntl(&pipe_r, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).context("pipe: O_NONBLOCK")?;
    let mut pipe_r = File::from(pipe_r);
    // Both ends stay open for the life of the workload.
    let mut pipe_w = File::from(pipe_w);
    let queued: String = (1..=PIPE_CHUNKS).map(pipe_chunk).collect();
    pipe_w
        .write_all(queued.as_bytes())
        .context("fill the pipe")?;
    writeln!(
        log,
        "workload pid={} started: read {} of {INPUT_LINES} lines of {INPUT}, queued {} bytes \
         ({PIPE_CHUNKS} chunks) in a pipe",
        std::process::id(),
        INPUT_LINES / 2,
        queued.len(),
    )?;

    // The TCP client: listen, say where, accept one, stop listening.
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("listen on 127.0.0.1")?;
    let addr = listener.local_addr().context("the listener's address")?;
    {
        let mut out = std::io::stdout();
        writeln!(out, "{LISTENING}{addr}")
            .and_then(|()| out.flush())
            .context("say where it listens")?;
    }
    let stream = accept_one(&listener).with_context(|| format!("on {addr}"))?;
    drop(listener);
    stream.set_nodelay(true).context("TCP_NODELAY")?;
    let peer = stream.peer_addr().context("the client's address")?;
    writeln!(
        log,
        "tcp: accepted a client from {peer} on {addr} (no longer listening)"
    )?;
    let mut client = Some(Client {
        stream,
        partial: Vec::new(),
        got: 0,
        last: String::new(),
    });

    let interval = Duration::from_millis(args.interval_ms);
    for n in 1..=args.max_ticks {
        if n > 1 {
            std::thread::sleep(interval);
        }
        let mut line = [0u8; LINE_LEN as usize];
        let file = match input.read_exact(&mut line) {
            Ok(()) => String::from_utf8_lossy(&line).trim_end().to_string(),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => "EOF".to_string(),
            Err(e) => format!("error: {e}"),
        };
        let offset = input.stream_position().context("lseek the input file")?;
        let mut chunk = [0u8; CHUNK_LEN];
        let pipe = match pipe_r.read(&mut chunk) {
            Ok(len) => String::from_utf8_lossy(&chunk[..len]).into_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => "EMPTY".to_string(),
            Err(e) => format!("error: {e}"),
        };
        let tick = Tick {
            n,
            file,
            offset,
            pipe,
        };
        // One write per line: a line is in the log whole or not at all.
        log.write_all(tick.line().as_bytes())
            .context("write the log")?;
        if let Some(c) = client.as_mut() {
            if let Err(e) = c.receive().and_then(|()| c.send(n)) {
                // The ticks go on; the log says why the connection is gone.
                log.write_all(format!("tcp: {e:#} at tick {n}\n").as_bytes())
                    .context("write the log")?;
                client = None;
            }
        }
        if n == args.ready_after {
            // The demo may be gone; the workload goes on regardless.
            let mut out = std::io::stdout();
            let _ = writeln!(out, "{READY}").and_then(|()| out.flush());
            dup2_stdout(&log).context("stdout to the log")?;
        }
    }
    drop(pipe_w);
    Ok(0)
}

/// Closes every fd above 2.
fn close_inherited_fds() -> anyhow::Result<()> {
    let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .context("list /proc/self/fd")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&fd| fd > 2)
        .collect();
    for fd in fds {
        // The directory listing's own fd is already closed: EBADF.
        match nix::unistd::close(fd) {
            Ok(()) | Err(nix::errno::Errno::EBADF) => {}
            Err(e) => return Err(e).with_context(|| format!("close inherited fd {fd}")),
        }
    }
    Ok(())
}

/// Writes the input file (fixed-width lines) and opens it with the first half already read.
fn open_half_read(path: &Path) -> anyhow::Result<File> {
    let text: String = (1..=INPUT_LINES).map(input_line).collect();
    std::fs::write(path, text).with_context(|| format!("write {}", path.display()))?;
    let mut file = File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut half = vec![0u8; (INPUT_LINES / 2 * LINE_LEN) as usize];
    file.read_exact(&mut half)
        .with_context(|| format!("read {}", path.display()))?;
    Ok(file)
}
