//! `cryo __demo-workload DIR` (hidden): the process `cryo demo` checkpoints.
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
//! connection is left open. It exits by itself after `--max-ticks`, so a workload whose demo died does not
//! linger.

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

/// The log file in the workload's directory.
pub const LOG: &str = "workload.log";
/// The regular file it reads one line of per tick.
pub const INPUT: &str = "input.txt";
/// Lines in the input file; the first half is read before the first tick.
pub const INPUT_LINES: u64 = 1200;
/// Every input line has this length, so a line number and an offset say the same thing.
pub const LINE_LEN: u64 = 16;
/// Chunks queued in the pipe before the first tick.
pub const PIPE_CHUNKS: u64 = 600;
/// Every chunk has this length.
pub const CHUNK_LEN: usize = 10;
/// What the workload writes on its original stdout once ready.
pub const READY: &str = "ready";
/// What the workload writes on its original stdout before its address, first thing.
pub const LISTENING: &str = "listening ";
/// How long the workload waits for its one TCP client.
pub const ACCEPT_TIMEOUT: Duration = Duration::from_secs(10);

/// Run the demo's workload in DIR (used by `cryo demo`)
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory for the log and the input file
    dir: PathBuf,

    /// Say ready after this many ticks
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    ready_after: u64,

    /// Milliseconds between ticks
    #[arg(long, default_value_t = 100)]
    interval_ms: u64,

    /// Exit after this many ticks
    #[arg(long, default_value_t = 3000)]
    max_ticks: u64,
}

/// Line `n` (from 1) of the input file.
pub fn input_line(n: u64) -> String {
    format!("input line {n:04}\n")
}

/// Chunk `n` (from 1) of the pipe.
pub fn pipe_chunk(n: u64) -> String {
    format!("pipe-{n:05}")
}

/// One tick as logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tick {
    /// The counter.
    pub n: u64,
    /// The input line read this tick, without its newline, or `EOF`.
    pub file: String,
    /// The input file's offset after the read.
    pub offset: u64,
    /// The pipe chunk read this tick, or `EMPTY`.
    pub pipe: String,
}

impl Tick {
    /// The log line, with its newline.
    pub fn line(&self) -> String {
        format!(
            "tick={} file=\"{}\" offset={} pipe=\"{}\"\n",
            self.n, self.file, self.offset, self.pipe
        )
    }

    /// Parses a log line written by [`Tick::line`]; other lines give `None`.
    pub fn parse(line: &str) -> Option<Self> {
        let rest = line.trim_end().strip_prefix("tick=")?;
        let (n, rest) = rest.split_once(" file=\"")?;
        let (file, rest) = rest.split_once("\" offset=")?;
        let (offset, rest) = rest.split_once(" pipe=\"")?;
        let pipe = rest.strip_suffix('"')?;
        Some(Self {
            n: n.parse().ok()?,
            file: file.to_string(),
            offset: offset.parse().ok()?,
            pipe: pipe.to_string(),
        })
    }

    /// The number of the input line read, if one was.
    pub fn file_line(&self) -> Option<u64> {
        self.file.strip_prefix("input line ")?.parse().ok()
    }

    /// The number of the pipe chunk read, if one was.
    pub fn pipe_chunk(&self) -> Option<u64> {
        self.pipe.strip_prefix("pipe-")?.parse().ok()
    }
}

/// What the workload sends its TCP client every tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpTick {
    /// The tick's counter.
    pub n: u64,
    /// How many lines the client had sent, as far as the workload has read.
    pub got: u64,
    /// The latest line the client sent (empty if none yet).
    pub last: String,
}

impl TcpTick {
    /// The line sent, with its newline.
    pub fn line(&self) -> String {
        format!("tick={} got={} last=\"{}\"\n", self.n, self.got, self.last)
    }

    /// Parses a line written by [`TcpTick::line`].
    pub fn parse(line: &str) -> Option<Self> {
        let rest = line.trim_end().strip_prefix("tick=")?;
        let (n, rest) = rest.split_once(" got=")?;
        let (got, rest) = rest.split_once(" last=\"")?;
        let last = rest.strip_suffix('"')?;
        Some(Self {
            n: n.parse().ok()?,
            got: got.parse().ok()?,
            last: last.to_string(),
        })
    }
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

/// Every tick in a log's text, in order.
pub fn ticks(log: &str) -> Vec<Tick> {
    log.lines().filter_map(Tick::parse).collect()
}

/// Runs the workload; returns only on error or after `--max-ticks`.
pub fn run(args: Args) -> anyhow::Result<i32> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_widths() {
        assert_eq!(input_line(1).len() as u64, LINE_LEN);
        assert_eq!(input_line(INPUT_LINES).len() as u64, LINE_LEN);
        assert_eq!(pipe_chunk(1).len(), CHUNK_LEN);
        assert_eq!(pipe_chunk(PIPE_CHUNKS).len(), CHUNK_LEN);
    }

    #[test]
    fn tick_round_trip() {
        let tick = Tick {
            n: 7,
            file: "input line 0607".into(),
            offset: 9712,
            pipe: pipe_chunk(7),
        };
        assert_eq!(
            tick.line(),
            "tick=7 file=\"input line 0607\" offset=9712 pipe=\"pipe-00007\"\n"
        );
        assert_eq!(Tick::parse(&tick.line()), Some(tick.clone()));
        assert_eq!(tick.file_line(), Some(607));
        assert_eq!(tick.pipe_chunk(), Some(7));
        let log = format!("workload pid=1 started\n{}garbage\n", tick.line());
        assert_eq!(ticks(&log), [tick]);
    }

    #[test]
    fn tcp_tick_round_trip() {
        let tick = TcpTick {
            n: 7,
            got: 6,
            last: "ack=6".into(),
        };
        assert_eq!(tick.line(), "tick=7 got=6 last=\"ack=6\"\n");
        assert_eq!(TcpTick::parse(&tick.line()), Some(tick));
        assert_eq!(
            TcpTick::parse("tick=1 file=\"x\" offset=1 pipe=\"y\""),
            None
        );
    }

    #[test]
    fn eof_and_empty_parse() {
        let t = Tick::parse("tick=900 file=\"EOF\" offset=19200 pipe=\"EMPTY\"").unwrap();
        assert_eq!((t.file_line(), t.pipe_chunk()), (None, None));
    }
}
