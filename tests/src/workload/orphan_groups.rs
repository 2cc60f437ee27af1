//! `orphan-groups`: children in a process group whose leader has exited (zdtm zombie01's
//! shape), and a zombie that led a session of its own.
//!
//! ```text
//! orphan-groups              kids -> <member> <zombie in the group> <zombie leading its
//!                            session> <the group's exited leader>
//!                            (this process leads its session; a child made a group of its
//!                            own, forked two siblings into it with CLONE_PARENT, one living
//!                            and one that exited with 9, and exited itself (reaped); another
//!                            child called setsid and exited with 5; zombies left unreaped)
//! ```

use std::io;
use std::path::Path;

use super::{failed, sys, unknown, Mode};

/// `orphan-groups`
pub fn start(_args: &[String], _dir: &Path) -> Result<Box<dyn Mode>, String> {
    Ok(Box::new(
        OrphanGroups::start().map_err(failed("orphan-groups"))?,
    ))
}

/// The `orphan-groups` mode.
struct OrphanGroups {
    kids: [i32; 4],
}

impl Mode for OrphanGroups {
    fn command(&mut self, verb: &str, args: &[&str]) -> Result<String, String> {
        match (verb, args) {
            ("kids", []) => Ok(self.kids.map(|k| k.to_string()).join(" ")),
            _ => unknown(verb),
        }
    }
}

impl OrphanGroups {
    fn start() -> io::Result<Self> {
        let (rd, wr) = sys::pipe()?;
        // the workload is single-threaded here; the children only make syscalls.
        let leader = sys::fork()?;
        if leader == 0 {
            sys::close(rd);
            // SAFETY: plain syscalls in the forked child; the siblings (clone with
            // CLONE_PARENT and no new stack: a fork) only pause or exit.
            unsafe {
                libc::setpgid(0, 0);
                let sibling = || {
                    let flags = (libc::CLONE_PARENT | libc::SIGCHLD) as libc::c_ulong;
                    libc::syscall(libc::SYS_clone, flags, 0, 0, 0, 0) as i32
                };
                let member = sibling();
                if member == 0 {
                    loop {
                        libc::pause();
                    }
                }
                let zombie = sibling();
                if zombie == 0 {
                    libc::_exit(9);
                }
                let _ = sys::write_all(wr, format!("{member} {zombie}").as_bytes());
                libc::_exit(0);
            }
        }
        sys::close(wr);
        let mut buf = [0u8; 64];
        let n = sys::read(rd, &mut buf)?;
        sys::close(rd);
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        let mut it = text
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok());
        let (member, zombie) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
        sys::reap(leader)?;
        let session_zombie = sys::fork()?;
        if session_zombie == 0 {
            let _ = sys::setsid();
            // SAFETY: ends the forked child.
            unsafe { libc::_exit(5) };
        }
        Ok(Self {
            kids: [member, zombie, session_zombie, leader],
        })
    }
}
