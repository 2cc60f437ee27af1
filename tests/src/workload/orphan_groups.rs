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
//! orphan-groups below        kids -> <member> <zombie in the group> <the session's leader>
//!                            <the group's exited leader>
//!                            (the same group made one generation down, by a child that
//!                            called setsid and then waits: the group's session is led by a
//!                            process that is not a root of the dump; zdtm session01)
//! ```

use std::io;
use std::path::Path;

use super::{failed, sys, unknown, Mode};

/// `orphan-groups`
pub fn start(args: &[String], _dir: &Path) -> Result<Box<dyn Mode>, String> {
    let below = match args {
        [] => false,
        [a] if a == "below" => true,
        _ => return Err(format!("orphan-groups: unknown arguments {args:?}")),
    };
    let made = if below {
        OrphanGroups::start_below()
    } else {
        OrphanGroups::start()
    };
    Ok(Box::new(made.map_err(failed("orphan-groups"))?))
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

/// Reads the pids a child wrote on `rd` (then closed).
fn read_pids(rd: i32) -> io::Result<Vec<i32>> {
    let mut buf = [0u8; 64];
    let n = sys::read(rd, &mut buf)?;
    sys::close(rd);
    Ok(String::from_utf8_lossy(&buf[..n])
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
        .collect())
}

impl OrphanGroups {
    fn start() -> io::Result<Self> {
        let (member, zombie, leader) = Self::orphan_group()?;
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

    fn start_below() -> io::Result<Self> {
        let (rd, wr) = sys::pipe()?;
        let session_leader = sys::fork()?;
        if session_leader == 0 {
            sys::close(rd);
            let _ = sys::setsid();
            let made = Self::orphan_group()
                .map(|(member, zombie, leader)| format!("{member} {zombie} {leader}"));
            let _ = sys::write_all(wr, made.unwrap_or_default().as_bytes());
            sys::close(wr);
            loop {
                // SAFETY: pause takes no arguments.
                unsafe { libc::pause() };
            }
        }
        sys::close(wr);
        match read_pids(rd)?[..] {
            [member, zombie, leader] => Ok(Self {
                kids: [member, zombie, session_leader, leader],
            }),
            _ => Err(io::Error::other("the session leader made no group")),
        }
    }

    /// Forks a child that makes a group of its own, forks into it a living member and one
    /// that exits with 9 (siblings: CLONE_PARENT), and exits; reaped here. Its member, its
    /// zombie and its pid.
    fn orphan_group() -> io::Result<(i32, i32, i32)> {
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
        let pids = read_pids(rd)?;
        sys::reap(leader)?;
        match pids[..] {
            [member, zombie] => Ok((member, zombie, leader)),
            _ => Err(io::Error::other("the group's leader forked no members")),
        }
    }
}
