//! `unix-split`: a stream socketpair split between two trees: this process holds one end, a
//! grandchild D that is no descendant (its parent exited) the other, and they also share a
//! pipe and a file.
//!
//! ```text
//! unix-split                 a stream socketpair split between two trees: this process holds
//!                            end 50; a child forks a grandchild D holding end 51 and exits, so
//!                            D is no descendant. D sends "hello-from-D" at once, then answers
//!                            every waiting message with "got MSG" each time it gets SIGUSR1,
//!                            then reads one byte of DIR/split.txt (fd 54 in both: one offset)
//!                            and writes "p" into a pipe (fd 53; this process reads fd 52).
//!                            push MSG -> ok   recv -> <what waits on 50> | empty
//!                            recv-wait, ready (as unix-tree)   kid -> <D's pid>
//!                            pipe-read -> <what the pipe holds> (waits up to 10 s)
//!                            file-pos -> <offset of fd 54>
//!                            peer-pid -> <SO_PEERCRED pid of end 50: the pair's maker>
//! ```

use std::io;
use std::path::Path;

use super::kids::exit_child;
use super::signal::on_sigusr1;
use super::unix::{self, read_when_readable, UNIX_A};
use super::{failed, io_err, sys, unknown, Mode};

/// The fds `unix-split` shares between its two trees besides the pair: a pipe, a file.
const SPLIT_PIPE_RD: i32 = 52;
/// The write end of the pipe, D's.
const SPLIT_PIPE_WR: i32 = 53;
/// The file, open in both trees (one offset).
const SPLIT_FILE: i32 = 54;

struct UnixSplit {
    /// D's pid.
    kid: i32,
}

/// `unix-split`
pub fn start(_args: &[String], dir: &Path) -> Result<Box<dyn Mode>, String> {
    let (a, b) = unix::socketpair(libc::SOCK_STREAM).map_err(failed("socketpair"))?;
    // Shared with D too: a pipe (D writes, this process reads) and a file (one
    // offset for both).
    let (prd, pwr) = sys::pipe().map_err(failed("pipe"))?;
    let prd = sys::move_fd(prd, SPLIT_PIPE_RD).map_err(failed("dup2"))?;
    let pwr = sys::move_fd(pwr, SPLIT_PIPE_WR).map_err(failed("dup2"))?;
    let path = dir.join("split.txt");
    std::fs::write(&path, b"abcdefgh").map_err(failed("split.txt"))?;
    let file = sys::open(&path, libc::O_RDONLY).map_err(failed("split.txt"))?;
    let file = sys::move_fd(file, SPLIT_FILE).map_err(failed("dup2"))?;
    let (rd, wr) = sys::pipe().map_err(failed("pipe"))?;
    // SAFETY: single-threaded here; the child only makes syscalls.
    let child = unsafe { libc::fork() };
    if child < 0 {
        return Err(failed("fork")(io::Error::last_os_error()));
    }
    if child == 0 {
        // SAFETY: still single-threaded in the child.
        let grandchild = unsafe { libc::fork() };
        if grandchild == 0 {
            // D keeps only stdio, its end and the report pipe: nothing else
            // of this tree (the command FIFO stays the root's alone).
            for fd in 3..1024 {
                if ![b, wr, pwr, file].contains(&fd) {
                    // SAFETY: closing fds this new process does not use.
                    unsafe { libc::close(fd) };
                }
            }
            // D leads a session of its own, as a daemon does: a root of a dump is forked
            // by cryo at restore, so it cannot come back in another root's session.
            // SAFETY: setsid takes no argument.
            unsafe { libc::setsid() };
            run_d(b, wr);
        }
        // SAFETY: ends the child; D is reparented away from this tree.
        unsafe { libc::_exit(if grandchild < 0 { 3 } else { 0 }) };
    }
    sys::close(b);
    sys::close(wr);
    sys::close(pwr);
    let _ = prd;
    let mut status = 0;
    // SAFETY: reaps our own child.
    if unsafe { libc::waitpid(child, &mut status, 0) } != child || status != 0 {
        return Err(format!("the unix-split child failed: status {status}"));
    }
    // D reports once its hello is sent; the pipe ends when it closes its end.
    let mut report = Vec::new();
    let mut chunk = [0u8; 64];
    loop {
        match sys::read(rd, &mut chunk).map_err(failed("report pipe"))? {
            0 => break,
            n => report.extend_from_slice(&chunk[..n]),
        }
    }
    sys::close(rd);
    let kid = String::from_utf8_lossy(&report)
        .parse()
        .map_err(|_| "the grandchild did not report its pid".to_string())?;
    debug_assert_eq!(a, UNIX_A);
    Ok(Box::new(UnixSplit { kid }))
}

impl Mode for UnixSplit {
    fn command(&mut self, verb: &str, args: &[&str]) -> Result<String, String> {
        match (verb, args) {
            ("kid", []) => Ok(self.kid.to_string()),
            ("pipe-read", []) => read_when_readable(SPLIT_PIPE_RD).map_err(io_err),
            ("file-pos", []) => Ok(sys::tell(SPLIT_FILE).map_err(io_err)?.to_string()),
            ("peer-pid", []) => {
                let cred = sys::getsockopt_bytes(UNIX_A, libc::SOL_SOCKET, libc::SO_PEERCRED, 12)
                    .map_err(io_err)?;
                let pid: [u8; 4] = cred
                    .get(..4)
                    .and_then(|b| b.try_into().ok())
                    .ok_or("short")?;
                Ok(i32::from_ne_bytes(pid).to_string())
            }
            _ => unix::end_command(verb, args).unwrap_or_else(|| unknown(verb)),
        }
    }
}

/// The `unix-split` grandchild: says hello on `fd`, reports its pid on `report`, then answers
/// what waits on `fd` each time SIGUSR1 arrives (blocked outside sigsuspend, so none is lost).
fn run_d(fd: i32, report: i32) -> ! {
    let run = || -> io::Result<()> {
        sys::install_sigusr1(on_sigusr1)?;
        sys::block_signal(libc::SIGUSR1)?;
        unix::send(fd, b"hello-from-D")?;
        sys::write_all(report, std::process::id().to_string().as_bytes())?;
        sys::close(report);
        loop {
            sys::await_sigusr1();
            let waiting = unix::recv_all_raw(fd)?;
            for msg in waiting {
                unix::send(fd, format!("got {msg}").as_bytes())?;
            }
            // The file and the pipe it shares with the other tree; the file first, so that
            // "p" in the pipe tells the reader the offset has moved already.
            sys::read(SPLIT_FILE, &mut [0u8; 1])?;
            sys::write_all(SPLIT_PIPE_WR, b"p")?;
        }
    };
    exit_child("unix-split grandchild", run())
}
