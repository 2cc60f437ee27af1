//! `unix-tree`: a stream socketpair split between this process and its child, each holding
//! one end only.
//!
//! ```text
//! unix-tree                  a child talking over a stream socketpair: this process holds
//!                            only end 50, the child only end 51 (both closed the other)
//!                            push MSG -> ok (the child answers "got MSG", left unread)
//!                            recv -> <what waits on 50> | empty   kid -> <child pid>
//!                            recv-wait -> <what waits on 50> (waits up to 10 s for something)
//!                            ready -> ready (waits up to 10 s for something, reads nothing)
//! ```

use std::path::Path;

use super::kids::fork_holding;
use super::unix;
use super::{failed, unknown, Mode};

struct UnixTree {
    kid: i32,
}

/// `unix-tree`
pub fn start(_args: &[String], _dir: &Path) -> Result<Box<dyn Mode>, String> {
    let (a, b) = unix::socketpair(libc::SOCK_STREAM).map_err(failed("socketpair"))?;
    let kid = fork_holding(a, b, child).map_err(failed("fork"))?;
    Ok(Box::new(UnixTree { kid }))
}

impl Mode for UnixTree {
    fn command(&mut self, verb: &str, args: &[&str]) -> Result<String, String> {
        match (verb, args) {
            ("kid", []) => Ok(self.kid.to_string()),
            _ => unix::end_command(verb, args).unwrap_or_else(|| unknown(verb)),
        }
    }
}

/// The `unix-tree` child: answers every message on `fd` with "got MSG".
fn child(fd: i32) -> ! {
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: recv into our own buffer.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n <= 0 {
            // SAFETY: ends the forked child.
            unsafe { libc::_exit(3) };
        }
        let reply = format!("got {}", String::from_utf8_lossy(&buf[..n as usize]));
        let _ = unix::send(fd, reply.as_bytes());
    }
}
