//! `epoll-edges`: an epoll (fd 70) whose ready list holds less than what is ready: an
//! edge-triggered target whose edge was reported and not read.
//!
//! ```text
//! epoll-edges   pipe E1 (read 50, write 51, one byte) ADD 50 EPOLLIN|EPOLLET data 0xe1;
//!               pipe L (52, 53, one byte) ADD 52 EPOLLIN data 0x1f; one epoll_wait
//!               reports both (E1's edge is taken, its byte left); then an eventfd at 54
//!               (count 1) as 61: ADD 61 EPOLLIN|EPOLLET data 0xe2, ready: queued, 61
//!               closed; pipe O (55, 56, one byte) ADD 55 EPOLLIN|EPOLLONESHOT data 0x5,
//!               queued. The ready list is then [0x1f, 0xe2, 0x5], 0xe1 ready and off it
//!   wait  -> ready <data hex,...> (one epoll_wait, timeout 0, in the order reported)
//! ```

use std::io;
use std::path::Path;

use super::{failed, io_err, sys, unknown, Mode};

const EPOLL: i32 = 70;
const ET: u32 = (libc::EPOLLIN | libc::EPOLLET) as u32;

fn setup() -> io::Result<()> {
    sys::move_fd(sys::epoll()?, EPOLL)?;
    for (read, write, events, data) in [(50, 51, ET, 0xe1), (52, 53, libc::EPOLLIN as u32, 0x1f)] {
        let (r, w) = sys::pipe()?;
        sys::move_fd(r, read)?;
        sys::move_fd(w, write)?;
        sys::write_all(write, b"x")?;
        sys::epoll_add(EPOLL, read, events, data)?;
    }
    let mut first = sys::epoll_wait(EPOLL, 0)?;
    first.sort_unstable();
    if first != [0x1f, 0xe1] {
        return Err(io::Error::other(format!("first epoll_wait: {first:x?}")));
    }
    // Registered as 61, then 61 closed: the eventfd's file is 54's.
    sys::move_fd(sys::eventfd(1, libc::EFD_NONBLOCK)?, 54)?;
    sys::dup_to(54, 61)?;
    sys::epoll_add(EPOLL, 61, ET, 0xe2)?;
    sys::close(61);
    let (r, w) = sys::pipe()?;
    sys::move_fd(r, 55)?;
    sys::move_fd(w, 56)?;
    sys::write_all(56, b"x")?;
    sys::epoll_add(EPOLL, 55, (libc::EPOLLIN | libc::EPOLLONESHOT) as u32, 0x5)
}

struct EpollEdges;

/// `epoll-edges`
pub fn start(args: &[String], _dir: &Path) -> Result<Box<dyn Mode>, String> {
    if !args.is_empty() {
        return Err("usage: epoll-edges".into());
    }
    setup().map_err(failed("epoll-edges"))?;
    Ok(Box::new(EpollEdges))
}

impl Mode for EpollEdges {
    fn command(&mut self, verb: &str, args: &[&str]) -> Result<String, String> {
        match (verb, args) {
            ("wait", []) => {
                let ready = sys::epoll_wait(EPOLL, 0).map_err(io_err)?;
                let list: Vec<String> = ready.iter().map(|d| format!("{d:x}")).collect();
                Ok(format!("ready {}", list.join(",")))
            }
            _ => unknown(verb),
        }
    }
}
