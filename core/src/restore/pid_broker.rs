//! The pid broker: the pid of each child a process of the tree forks where it may not choose
//! it itself. A process in a user namespace below cryo's, in cryo's PID namespace, gets
//! EPERM from clone3 set_tid (it needs CAP_CHECKPOINT_RESTORE over the PID namespace); a
//! thread of cryo, which has it, sets ns_last_pid for it under the lock other cryos take,
//! and keeps the lock until the process says it forked.
//!
//! ```text
//! process of the tree                          broker (a thread of cryo)
//! socketpair; PID and one end ─── slot ──────▶ lock ns_last_pid; last pid = PID - 1
//!                              ◀── that end ── "y"
//! clone3 without set_tid; "d" ───────────────▶ unlock; the next request
//! a child born with another pid (something took PID between) exits at once, is reaped,
//! and the process asks again
//! ```

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::thread::JoinHandle;

use nix::sys::socket::{socketpair, AddressFamily, Shutdown, SockFlag, SockType};
use nix::unistd::Pid;

use crate::sys::process::{Forked, LastPid};
use crate::sys::scm;

/// How many times a process asks again when its child was born with another pid.
const ATTEMPTS: usize = 8;

/// What the broker answers when the last pid is set; what the process says once it forked.
const SET: &[u8] = b"y";
const FORKED: &[u8] = b"d";
/// What the broker answers, followed by why, when it cannot set the last pid.
const FAILED: char = 'n';

/// The broker thread, and the end of its socket the tree's processes hold (at a slot).
pub(crate) struct PidBroker {
    ours: OwnedFd,
    tree: OwnedFd,
    thread: Option<JoinHandle<()>>,
}

impl PidBroker {
    /// Starts the broker thread.
    pub fn start() -> io::Result<Self> {
        let (ours, tree) = seqpacket_pair()?;
        let serving = ours.try_clone()?;
        let thread = std::thread::Builder::new()
            .name("cryo-pid-broker".into())
            .spawn(move || serve(&serving))?;
        Ok(Self {
            ours,
            tree,
            thread: Some(thread),
        })
    }

    /// The end the tree's processes ask on (placed at their slot while they fork).
    pub fn tree_end(&self) -> RawFd {
        self.tree.as_raw_fd()
    }
}

impl Drop for PidBroker {
    /// Stops the broker (a process still asking then finds its socket closed) and waits for it.
    fn drop(&mut self) {
        let _ = nix::sys::socket::shutdown(self.ours.as_raw_fd(), Shutdown::Both);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(io::Error::from)
}

/// Answers requests until every holder of the tree's end is gone, or cryo shuts it down.
fn serve(sock: &OwnedFd) {
    loop {
        let mut buf = [0u8; 4];
        let (len, reply) = match scm::recv_with_fd(sock.as_fd(), &mut buf) {
            Ok((0, None)) | Err(_) => return,
            Ok(got) => got,
        };
        let (Some(reply), 4) = (reply, len) else {
            continue;
        };
        let pid = Pid::from_raw(i32::from_ne_bytes(buf));
        if let Err(e) = set_for(pid, &reply) {
            // The process reports it, with the pid it was forking.
            tracing::debug!(%pid, "pid broker: {e}");
            let _ = nix::unistd::write(&reply, format!("{FAILED}{e}").as_bytes());
        }
    }
}

/// Sets the last pid for `pid`, says so on `reply`, and holds the lock until the process
/// said it forked (or is gone).
fn set_for(pid: Pid, reply: &OwnedFd) -> io::Result<()> {
    let last = LastPid::lock()?;
    last.set_next(pid)?;
    nix::unistd::write(reply, SET)?;
    let mut said = [0u8; 1];
    let _ = nix::unistd::read(reply, &mut said);
    drop(last);
    Ok(())
}

/// In a process of the tree: forks a child with pid `pid` (sharing what `share` says, as
/// [`crate::sys::process::fork_with_pid_sharing`]) through the broker at fd `slot`.
pub(super) fn fork_asking(slot: RawFd, pid: Pid, share: u64) -> io::Result<Forked> {
    for _ in 0..ATTEMPTS {
        let (mine, theirs) = seqpacket_pair()?;
        scm::send_with_fd(slot, &pid.as_raw().to_ne_bytes(), theirs.as_fd())?;
        drop(theirs);
        let mut said = [0u8; 512];
        let len = nix::unistd::read(&mine, &mut said)?;
        if &said[..len] != SET {
            let why = String::from_utf8_lossy(&said[..len]);
            return Err(io::Error::other(match why.strip_prefix(FAILED) {
                Some(why) => format!("cryo's pid broker could not set the last pid: {why}"),
                None => "cryo's pid broker did not set the last pid".into(),
            }));
        }
        let forked = crate::sys::process::fork_sharing(share);
        match forked {
            Ok(Forked::Child) => {
                // Born with another pid: gone before it does anything (its parent asks again).
                if nix::unistd::getpid() != pid {
                    crate::sys::process::exit_child(0);
                }
                if share & libc::CLONE_FILES as u64 != 0 {
                    // The parent's table too: the parent closes it.
                    std::mem::forget(mine);
                }
                return Ok(Forked::Child);
            }
            Ok(Forked::Parent(child)) => {
                let _ = nix::unistd::write(&mine, FORKED);
                if child == pid {
                    return Ok(Forked::Parent(child));
                }
                let _ = nix::sys::wait::waitpid(child, None);
                // Its SIGCHLD (held: every signal is blocked here) belongs to no past.
                let _ = crate::sys::signal::drain(libc::SIGCHLD);
            }
            Err(e) => {
                let _ = nix::unistd::write(&mine, FORKED);
                return Err(e);
            }
        }
    }
    // Reported as clone3 set_tid would: the pid is taken.
    Err(io::Error::from_raw_os_error(libc::EEXIST))
}
