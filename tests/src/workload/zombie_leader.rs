//! `zombie-leader`: a zombie child that led a session whose other member, its own child, was
//! reparented out of the tree when it exited (zdtm zombie_leader's shape).
//!
//! ```text
//! zombie-leader              kids -> <zombie> <orphan>
//!                            (a child called setsid, forked a child that pauses, and exited,
//!                            left unreaped: the orphan went to init or a subreaper above,
//!                            still in the zombie's session and group)
//! ```

use std::io;
use std::path::Path;

use super::{failed, sys, unknown, Mode};

/// `zombie-leader`
pub fn start(_args: &[String], _dir: &Path) -> Result<Box<dyn Mode>, String> {
    Ok(Box::new(
        ZombieLeader::start().map_err(failed("zombie-leader"))?,
    ))
}

/// The `zombie-leader` mode.
struct ZombieLeader {
    kids: [i32; 2],
}

impl Mode for ZombieLeader {
    fn command(&mut self, verb: &str, args: &[&str]) -> Result<String, String> {
        match (verb, args) {
            ("kids", []) => Ok(self.kids.map(|k| k.to_string()).join(" ")),
            _ => unknown(verb),
        }
    }
}

impl ZombieLeader {
    fn start() -> io::Result<Self> {
        let (rd, wr) = sys::pipe()?;
        // The workload is single-threaded here; the children only make syscalls.
        let zombie = sys::fork()?;
        if zombie == 0 {
            sys::close(rd);
            let _ = sys::setsid();
            match sys::fork() {
                Ok(0) => {
                    sys::close(wr);
                    loop {
                        // SAFETY: pause takes nothing.
                        unsafe { libc::pause() };
                    }
                }
                Ok(orphan) => {
                    let _ = sys::write_all(wr, orphan.to_string().as_bytes());
                }
                Err(_) => {}
            }
            // SAFETY: ends the forked child.
            unsafe { libc::_exit(0) };
        }
        sys::close(wr);
        let mut buf = [0u8; 32];
        let n = sys::read(rd, &mut buf)?;
        sys::close(rd);
        let orphan: i32 = String::from_utf8_lossy(&buf[..n])
            .trim()
            .parse()
            .map_err(|_| io::Error::other("no orphan pid"))?;
        Ok(Self {
            kids: [zombie, orphan],
        })
    }
}
