//! The control channel every mode shares: command lines read from `DIR/cmd`, one reply line
//! each written into `DIR/out`, and the commands every mode answers (see the binary's doc).

use std::io::{self, Write};
use std::path::Path;

use super::{sys, Mode};
use crate::{protocol, workload_peers};

/// Leaves the test's process: closes every inherited fd above 2 and starts a session of its
/// own.
pub fn isolate() {
    close_inherited();
    // Own session and process group: the workload is a tree of its own. Failure (already a
    // group leader) is harmless.
    let _ = sys::setsid();
}

/// Closes every inherited fd above 2: whatever the test process inherited and leaked (a
/// jobserver pipe...) must not follow the workload into its images.
pub fn close_inherited() {
    sys::close_from(3);
}

/// Opens the command FIFO `DIR/cmd` O_RDWR, kept for the workload's life; fatal if it cannot.
pub fn open_commands(dir: &Path) -> i32 {
    match sys::open(&dir.join(protocol::CMD_FIFO), libc::O_RDWR) {
        Ok(fd) => fd,
        Err(e) => fatal(&format!("open cmd fifo: {e}")),
    }
}

/// Answers the commands read from `cmd_fd` forever: the common ones here, the others by
/// `mode`.
pub fn serve(dir: &Path, cmd_fd: i32, mut mode: Box<dyn Mode>) -> ! {
    let out = dir.join(protocol::OUT_FIFO);
    let mut counter: u64 = 0;
    let mut peers = workload_peers::Peers::default();
    let mut lines = LineReader::new(cmd_fd);
    loop {
        let line = match lines.next_line() {
            Ok(l) => l,
            Err(e) => fatal(&format!("read cmd fifo: {e}")),
        };
        let mut words: Vec<&str> = line.split_whitespace().collect();
        // An optional leading `#TAG` is echoed in front of the reply, so the
        // test can tell its reply from a late one to an earlier command.
        let tag = match words.first() {
            Some(w) if w.starts_with('#') => Some(words.remove(0).to_string()),
            _ => None,
        };
        let out_line = |reply: &str| match &tag {
            Some(t) => format!("{t} {reply}"),
            None => reply.to_string(),
        };
        let Some(&verb) = words.first() else { continue };
        let reply = match (verb, &words[1..]) {
            ("ping", []) => "pong".to_string(),
            ("pid", []) => std::process::id().to_string(),
            ("ppid", []) => sys::getppid().to_string(),
            // SAFETY: getpgrp and getsid take no pointers.
            ("session", []) => unsafe { format!("{} {}", libc::getpgrp(), libc::getsid(0)) },
            ("tick", []) => {
                counter += 1;
                counter.to_string()
            }
            ("get", []) => counter.to_string(),
            ("fds", []) => fds().unwrap_or_else(|e| format!("err fds: {e}")),
            ("inode", [fd]) => match fd.parse() {
                Ok(fd) => sys::inode_line(fd).unwrap_or_else(|e| format!("err inode: {e}")),
                Err(_) => format!("err inode: bad fd {fd}"),
            },
            ("exit", [code]) => {
                let code: i32 = code.parse().unwrap_or(1);
                reply_line(&out, &out_line("bye"));
                std::process::exit(code);
            }
            _ => peers
                .command(verb, &words[1..])
                .unwrap_or_else(|| mode.command(verb, &words[1..]))
                .unwrap_or_else(|e| format!("err {e}")),
        };
        reply_line(&out, &out_line(&reply));
    }
}

/// Logs `msg` (the log is stderr) and exits with status 3.
pub fn fatal(msg: &str) -> ! {
    eprintln!("cryo-workload {}: {msg}", std::process::id());
    std::process::exit(3);
}

/// Writes one reply line into the `out` FIFO, then closes it. If no test
/// listens (it gave up), the reply is dropped instead of blocking forever.
fn reply_line(out: &Path, reply: &str) {
    let fd = match sys::open(out, libc::O_WRONLY | libc::O_NONBLOCK) {
        Ok(fd) => fd,
        Err(e) => {
            eprintln!("reply {reply:?} dropped: open out fifo: {e}");
            return;
        }
    };
    // A reply is one line: a newline in it (a received IP header's checksum, say) would cut it
    // and leave the rest to be taken for the reply to a later command.
    let mut line = reply
        .trim_end_matches('\n')
        .replace('\n', "\\n")
        .into_bytes();
    line.push(b'\n');
    if let Err(e) = sys::write_all(fd, &line) {
        eprintln!("reply {reply:?} dropped: write: {e}");
    }
    sys::close(fd);
    let _ = io::stderr().flush();
}

/// Reads newline-terminated commands from a fd, keeping what follows a line.
struct LineReader {
    fd: i32,
    buf: Vec<u8>,
}

impl LineReader {
    fn new(fd: i32) -> Self {
        Self {
            fd,
            buf: Vec::new(),
        }
    }

    fn next_line(&mut self) -> io::Result<String> {
        loop {
            if let Some(nl) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=nl).collect();
                return Ok(String::from_utf8_lossy(&line[..nl]).into_owned());
            }
            let mut chunk = [0u8; 512];
            // Deliberately no EINTR retry: see the module docs.
            let n = sys::read(self.fd, &mut chunk)?;
            if n == 0 {
                // Cannot happen while we hold the FIFO O_RDWR ourselves.
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "eof"));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// `N=target` for every open fd, sorted by number.
fn fds() -> io::Result<String> {
    let mut entries = Vec::new();
    let (dir_fd, names) = sys::list_dir(c"/proc/self/fd")?;
    for name in names {
        let Ok(n) = name.parse::<i32>() else { continue };
        if n == dir_fd {
            continue;
        }
        let target = std::fs::read_link(format!("/proc/self/fd/{n}"))?;
        entries.push((n, target.to_string_lossy().into_owned()));
    }
    entries.sort();
    Ok(entries
        .iter()
        .map(|(n, t)| format!("{n}={t}"))
        .collect::<Vec<_>>()
        .join("\t"))
}
