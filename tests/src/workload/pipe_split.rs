//! `pipe-split`: a pipe split between this process (the read end only) and a child (the
//! write end only).
//!
//! ```text
//! pipe-split                 a pipe split between this process (read end only) and a child
//!                            (write end only) that writes "early" at once, "late" on SIGUSR1
//!                            read-wait -> <what the pipe holds> (waits up to 10 s)
//!                            kid -> <child pid>
//! ```

use std::io;
use std::path::Path;

use super::kids::{exit_child, fork_holding};
use super::signal::on_sigusr1;
use super::unix::read_when_readable;
use super::{failed, io_err, sys, unknown, Mode};

struct PipeSplit {
    kid: i32,
    rd: i32,
}

/// `pipe-split`
pub fn start(_args: &[String], _dir: &Path) -> Result<Box<dyn Mode>, String> {
    let (rd, wr) = sys::pipe().map_err(failed("pipe"))?;
    let kid = fork_holding(rd, wr, child).map_err(failed("fork"))?;
    Ok(Box::new(PipeSplit { kid, rd }))
}

impl Mode for PipeSplit {
    fn command(&mut self, verb: &str, args: &[&str]) -> Result<String, String> {
        match (verb, args) {
            ("kid", []) => Ok(self.kid.to_string()),
            ("read-wait", []) => read_when_readable(self.rd).map_err(io_err),
            _ => unknown(verb),
        }
    }
}

/// The `pipe-split` child: holds only the write end of its parent's pipe; writes "early" at
/// once, then "late" each time SIGUSR1 arrives (blocked outside sigsuspend, none lost).
fn child(wr: i32) -> ! {
    let run = || -> io::Result<()> {
        sys::install_sigusr1(on_sigusr1)?;
        sys::block_signal(libc::SIGUSR1)?;
        sys::write_all(wr, b"early")?;
        loop {
            sys::await_sigusr1();
            sys::write_all(wr, b"late")?;
        }
    };
    exit_child("pipe-split child", run())
}
