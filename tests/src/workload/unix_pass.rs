//! `unix-pass`: a stream socketpair split between this process (end 50) and a child (end
//! 51) that takes one message each time it gets SIGUSR1: descriptors in flight between two
//! processes.
//!
//! ```text
//! unix-pass                  a stream socketpair: this process holds end 50, a child only end
//!                            51; the child takes one message each time it gets SIGUSR1 (as
//!                            `take` of unix-pair) and answers with what it took
//!                            pass WHAT... -> ok (as unix-pair's, from end 50)
//!                            pipe-write DATA -> ok   kid -> <child pid>
//!                            ask -> <the child's answer> (SIGUSR1, then waits up to 10 s)
//! ```

use std::io;
use std::path::Path;

use super::kids::{exit_child, fork_holding};
use super::signal::on_sigusr1;
use super::unix::{self, UNIX_A};
use super::unix_msg::{pass, take, PIPE_WRITER};
use super::{failed, io_err, sys, unknown, Mode};

struct UnixPass {
    kid: i32,
}

/// `unix-pass`
pub fn start(_args: &[String], _dir: &Path) -> Result<Box<dyn Mode>, String> {
    Ok(Box::new(UnixPass {
        kid: start_child().map_err(failed("unix-pass"))?,
    }))
}

/// The socketpair at fds 50 and 51 and the child holding only 51 (this process only 50).
/// Returns the child's pid.
fn start_child() -> io::Result<i32> {
    let (a, b) = unix::socketpair(libc::SOCK_STREAM)?;
    // Blocked before the fork: a SIGUSR1 sent early waits for the child's sigsuspend.
    sys::install_sigusr1(on_sigusr1)?;
    sys::block_signal(libc::SIGUSR1)?;
    fork_holding(a, b, child)
}

/// The child: takes one message (`take` of unix-pair) each time SIGUSR1 arrives and answers
/// with what it took.
fn child(fd: i32) -> ! {
    let run = || -> io::Result<()> {
        loop {
            sys::await_sigusr1();
            let took = take(fd)?;
            unix::send(fd, took.as_bytes())?;
        }
    };
    exit_child("unix-pass child", run())
}

impl Mode for UnixPass {
    fn command(&mut self, verb: &str, args: &[&str]) -> Result<String, String> {
        match (verb, args) {
            ("kid", []) => Ok(self.kid.to_string()),
            ("pass", what) => pass(UNIX_A, what),
            ("pipe-write", [data]) => sys::write_all(PIPE_WRITER, data.as_bytes())
                .map(|()| "ok".into())
                .map_err(io_err),
            ("ask", []) => {
                sys::signal(self.kid, libc::SIGUSR1).map_err(io_err)?;
                unix::wait_readable(UNIX_A, "no answer after 10 s")
                    .and_then(|()| unix::recv_all(UNIX_A))
                    .map_err(io_err)
            }
            _ => unknown(verb),
        }
    }
}
