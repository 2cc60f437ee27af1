//! `setsid-after-fork`: children left in this process's session by parents that started
//! sessions of their own after forking them (zdtm session00's CHANGESID and DOUBLE_CHANGESID
//! shapes).
//!
//! ```text
//! setsid-after-fork          kids -> <a> <a1> <a2> <b> <b1> <b2>
//!                            (this process leads its session; child a forked a1 (pauses)
//!                            and a2 (exits with 3, left a zombie), then called setsid; child
//!                            b forked b1, b1 forked b2, then b1 and b called setsid: a1, a2
//!                            and b2 are in this process's session, a, b and b1 lead their
//!                            own)
//! ```

use std::io;
use std::path::Path;

use super::{failed, sys, unknown, Mode};

/// `setsid-after-fork`
pub fn start(_args: &[String], _dir: &Path) -> Result<Box<dyn Mode>, String> {
    Ok(Box::new(
        SetsidAfterFork::start().map_err(failed("setsid-after-fork"))?,
    ))
}

/// The `setsid-after-fork` mode.
struct SetsidAfterFork {
    kids: [i32; 6],
}

impl Mode for SetsidAfterFork {
    fn command(&mut self, verb: &str, args: &[&str]) -> Result<String, String> {
        match (verb, args) {
            ("kids", []) => Ok(self.kids.map(|k| k.to_string()).join(" ")),
            _ => unknown(verb),
        }
    }
}

/// In a forked child: pauses forever.
fn pause_forever() -> ! {
    loop {
        // SAFETY: pause takes nothing.
        unsafe { libc::pause() };
    }
}

/// In a forked child: forks a child that pauses; its pid (the child never returns).
fn fork_pauser() -> i32 {
    match sys::fork() {
        Ok(0) => pause_forever(),
        Ok(pid) => pid,
        // SAFETY: ends the forked child.
        Err(_) => unsafe { libc::_exit(1) },
    }
}

/// In a forked child: writes `pids` to `wr`, space separated, then closes it.
fn tell(wr: i32, pids: &[i32]) {
    let text: Vec<String> = pids.iter().map(i32::to_string).collect();
    let _ = sys::write_all(wr, format!("{} ", text.join(" ")).as_bytes());
    sys::close(wr);
}

impl SetsidAfterFork {
    fn start() -> io::Result<Self> {
        let (rd, wr) = sys::pipe()?;
        // The workload is single-threaded here; the children only make syscalls.
        let a = sys::fork()?;
        if a == 0 {
            sys::close(rd);
            let a1 = fork_pauser();
            let a2 = match sys::fork() {
                // SAFETY: ends the forked child.
                Ok(0) => unsafe { libc::_exit(3) },
                Ok(pid) => pid,
                // SAFETY: ends the forked child.
                Err(_) => unsafe { libc::_exit(1) },
            };
            let _ = sys::setsid();
            tell(wr, &[a1, a2]);
            pause_forever();
        }
        let b = sys::fork()?;
        if b == 0 {
            sys::close(rd);
            // SAFETY: ends the forked child.
            let (brd, bwr) = sys::pipe().unwrap_or_else(|_| unsafe { libc::_exit(1) });
            let b1 = match sys::fork() {
                Ok(0) => {
                    sys::close(brd);
                    let b2 = fork_pauser();
                    let _ = sys::setsid();
                    tell(bwr, &[b2]);
                    pause_forever();
                }
                Ok(pid) => pid,
                // SAFETY: ends the forked child.
                Err(_) => unsafe { libc::_exit(1) },
            };
            sys::close(bwr);
            let mut buf = [0u8; 32];
            let n = sys::read(brd, &mut buf).unwrap_or(0);
            let _ = sys::setsid();
            let b2 = String::from_utf8_lossy(&buf[..n]).trim().to_string();
            let _ = sys::write_all(wr, format!("{b1} {b2} ").as_bytes());
            sys::close(wr);
            pause_forever();
        }
        sys::close(wr);
        // Both children write once, after their setsid, two pids each (their paused
        // children hold the pipe too: no end of file).
        let mut text = String::new();
        let mut buf = [0u8; 128];
        while text.split_whitespace().count() < 4 || !text.ends_with(' ') {
            let n = sys::read(rd, &mut buf)?;
            if n == 0 {
                break;
            }
            text.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        sys::close(rd);
        let pids: Vec<i32> = text
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        // a's pids come first or b's: a's are two (a1 a2), b's two (b1 b2), told in one write
        // each; tell them apart by parent.
        let ppid = |pid: i32| -> i32 {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    s[s.rfind(')')? + 2..]
                        .split(' ')
                        .nth(1)
                        .and_then(|p| p.parse().ok())
                })
                .unwrap_or(0)
        };
        let of = |parent: i32| pids.iter().copied().filter(move |&p| ppid(p) == parent);
        // In the order told: a1, then a2.
        let a_kids: Vec<i32> = of(a).collect();
        let b1 = of(b).next().unwrap_or(0);
        let b2 = of(b1).next().unwrap_or(0);
        if a_kids.len() != 2 || b1 == 0 || b2 == 0 {
            return Err(io::Error::other(format!("kids told: {text:?}")));
        }
        Ok(Self {
            kids: [a, a_kids[0], a_kids[1], b, b1, b2],
        })
    }
}
