//! The dump guardian: a small process forked when a dump with TCP connections starts, that
//! outlives cryo and undoes what a dead cryo left behind.
//!
//! ```text
//! cryo                                   guardian (setsid, SIGINT/SIGTERM/SIGHUP ignored,
//!  fork, keeps the pipe's write end       only the pipe's read end open)
//!  ... dump ...                           blocked in read(pipe)
//!  'R' count inode... (before repair  -->  notes the connections that had SO_REUSEADDR
//!      mode, which loses the flag)         (leaving repair mode clears it)
//!  'D' (done: nothing left to undo)  -->  exits
//!  'C' (cancels a 'K' not yet acted on:   back to undoing if cryo dies
//!       a commit hook failing)
//!  'K' (the images are complete)     -->  waits for the pipe to close, then SIGKILL to
//!  cryo kills the tree in order             every target still there (through pidfds opened
//!  (children reaped by their parents),      at its start: never a process that took a pid
//!  closes the pipe                          since), so a cryo killed before the end of its
//!                                           own kill still ends the dump; exits
//!  cryo dies (EOF, no word)          -->  every TCP socket of the targets still in repair
//!                                          mode leaves it quietly (TCP_REPAIR_OFF_NO_WP, on a
//!                                          pidfd_getfd duplicate, SO_REUSEADDR set back
//!                                          where it was), then the dump's network
//!                                          lock is removed (here and in the targets'
//!                                          other namespaces), and the inventory of a dump that
//!                                          was to kill them (no image of live processes); exits
//! ```
//!
//! The pipe closes when cryo's fds do, before the kernel lets the traced targets go: the
//! guardian is usually at work as they resume (the lock still drops the peers' packets
//! until it has finished, so nothing reaches a socket still in repair mode).
//!
//! Forked only from a single-threaded cryo (the command line is): the child runs ordinary
//! Rust. A multi-threaded caller gets no guardian (logged).

use std::collections::HashSet;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::Path;

use nix::unistd::Pid;
use tracing::{debug, warn};

use crate::sys;
use crate::sys::process::Forked;

/// The word that says the dump ended and nothing is to be undone.
const DONE: u8 = b'D';
/// The word that says the images are complete and the targets are to die.
const KILL: u8 = b'K';
/// The word that takes a [`KILL`] back (a commit hook failing after it armed the kill).
const CANCEL: u8 = b'C';
/// The word before a count (u32) and that many socket inodes (u64, native order): the
/// connections whose SO_REUSEADDR is set, told before repair mode clears it.
const REUSE_ADDR: u8 = b'R';

/// cryo's end of the guardian: dropping it without a word makes the guardian undo.
#[derive(Debug)]
pub struct Guardian {
    pid: Pid,
    pipe: Option<OwnedFd>,
}

impl Guardian {
    /// Forks the guardian of a dump of `targets` whose network lock is `lock_id`; when it
    /// undoes, it removes `inventory` too (a dump that was to kill its targets: a complete
    /// image of processes that run on must not be restored). `None` when cryo runs other
    /// threads (no safe fork) or the fork fails (logged).
    pub fn start(targets: &[Pid], lock_id: &str, inventory: Option<&Path>) -> Option<Self> {
        let me = nix::unistd::getpid();
        match crate::proc::tids(me) {
            Ok(t) if t.len() == 1 => {}
            _ => {
                warn!("cryo runs several threads: no dump guardian (a killed cryo leaves connections in repair mode)");
                return None;
            }
        }
        let (read, write) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
            Ok(p) => p,
            Err(e) => {
                warn!("no dump guardian: pipe: {e}");
                return None;
            }
        };
        match sys::process::fork() {
            Ok(Forked::Child) => {
                drop(write);
                guard(read, targets, lock_id, inventory)
            }
            Ok(Forked::Parent(pid)) => {
                drop(read);
                out_of_cryos_group(pid);
                debug!(%pid, "dump guardian started");
                Some(Self {
                    pid,
                    pipe: Some(write),
                })
            }
            Err(e) => {
                warn!("no dump guardian: fork: {e}");
                None
            }
        }
    }

    /// Tells the guardian which connections (socket inodes) have SO_REUSEADDR set, before
    /// any enters repair mode: it sets the flag back on those it takes out of repair mode.
    pub fn note_reuse_addr(&self, inodes: &[u64]) {
        let Some(pipe) = &self.pipe else {
            return;
        };
        let mut msg = Vec::with_capacity(5 + inodes.len() * 8);
        msg.push(REUSE_ADDR);
        msg.extend_from_slice(&(inodes.len() as u32).to_ne_bytes());
        inodes
            .iter()
            .for_each(|ino| msg.extend_from_slice(&ino.to_ne_bytes()));
        let mut rest = &msg[..];
        while !rest.is_empty() {
            match nix::unistd::write(pipe, rest) {
                Ok(n) => rest = &rest[n..],
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => {
                    warn!("dump guardian: {e}");
                    return;
                }
            }
        }
    }

    /// The dump ended (failed and rolled back by cryo, or left running): nothing to undo.
    pub fn done(self) {
        self.say(DONE);
    }

    /// The images are complete: once the pipe closes (this guardian dropped, or cryo dead),
    /// the guardian kills whatever target is left, so that the dump ends even if cryo dies
    /// before the end of its own kill.
    pub fn commit(&self) {
        self.say_more(KILL);
    }

    /// Takes [`commit`](Self::commit) back: if cryo dies, the guardian undoes again.
    pub fn cancel_commit(&self) {
        self.say_more(CANCEL);
    }

    /// Writes `word`, more to come.
    fn say_more(&self, word: u8) {
        if let Some(pipe) = &self.pipe {
            if let Err(e) = nix::unistd::write(pipe, &[word]) {
                warn!("dump guardian: {e}");
            }
        }
    }

    fn say(mut self, word: u8) {
        if let Some(pipe) = self.pipe.take() {
            if let Err(e) = nix::unistd::write(&pipe, &[word]) {
                warn!("dump guardian: {e}");
            }
        }
        self.reap();
    }

    fn reap(&self) {
        if let Err(e) = nix::sys::wait::waitpid(self.pid, None) {
            debug!(pid = %self.pid, "dump guardian: {e}");
        }
    }
}

impl Drop for Guardian {
    fn drop(&mut self) {
        if self.pipe.take().is_some() {
            // Closed without a word the guardian undoes; after 'K' it kills what is left:
            // wait so that it is done on return.
            self.reap();
        }
    }
}

/// The guardian's life (in the child).
fn guard(pipe: OwnedFd, targets: &[Pid], lock_id: &str, inventory: Option<&Path>) -> ! {
    let keep = pipe.as_raw_fd();
    crate::interrupt::guardian_late();
    become_guardian(&[keep]);
    // Handles on the targets, opened as the dump starts: a later kill never hits a process
    // that took one of their pids since.
    let pidfds: Vec<OwnedFd> = targets
        .iter()
        .filter_map(|&pid| sys::pidfd::pidfd_open(pid).ok())
        .collect();
    let mut reusing = HashSet::new();
    let mut armed = false;
    let word = loop {
        let mut word = [0u8; 1];
        if read_exact(keep, &mut word).is_err() {
            break None;
        }
        match word[0] {
            KILL => {
                armed = true;
                continue;
            }
            CANCEL => {
                armed = false;
                continue;
            }
            REUSE_ADDR => {}
            other => break Some(other),
        }
        let mut count = [0u8; 4];
        if read_exact(keep, &mut count).is_err() {
            break None;
        }
        for _ in 0..u32::from_ne_bytes(count) {
            let mut ino = [0u8; 8];
            if read_exact(keep, &mut ino).is_err() {
                break;
            }
            reusing.insert(u64::from_ne_bytes(ino));
        }
    };
    match word {
        Some(DONE) => {}
        None if armed => {
            // cryo kills the tree itself, in order; whatever is left once it is gone dies.
            for pidfd in &pidfds {
                let _ = sys::pidfd::pidfd_kill(pidfd.as_fd());
            }
        }
        _ => {
            if let Some(inventory) = inventory {
                let _ = std::fs::remove_file(inventory);
            }
            undo(targets, lock_id, &reusing)
        }
    }
    sys::process::exit_child(0)
}

/// Fills `buf` from `fd` (EOF or an error: Err).
fn read_exact(fd: i32, mut buf: &mut [u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match sys::spawn::read_raw(fd, buf) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => buf = &mut buf[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Takes every connection of `targets` out of repair mode (SO_REUSEADDR set back on the
/// inodes of `reusing`), then removes the lock.
fn undo(targets: &[Pid], lock_id: &str, reusing: &HashSet<u64>) {
    for &pid in targets {
        let Ok(pidfd) = sys::pidfd::pidfd_open(pid) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for entry in fds.flatten() {
            let Some(fd) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            let Ok(dup) = sys::pidfd::pidfd_getfd(pidfd.as_fd(), fd) else {
                continue;
            };
            if matches!(sys::repair::in_repair(dup.as_fd()), Ok(true)) {
                let reuse_addr = nix::sys::stat::fstat(dup.as_fd())
                    .is_ok_and(|st| reusing.contains(&st.st_ino));
                let _ = cryo_tcp_repair::leave_repair(dup.as_fd(), false, reuse_addr);
            }
        }
    }
    let _ = cryo_netns::NetworkLock::release_by_id(lock_id);
    // And in the targets' other network namespaces, where the dump installed it too.
    let mut done = HashSet::new();
    for &pid in targets {
        let Ok(Some((inode, ns))) = crate::sockets::foreign_netns(pid) else {
            continue;
        };
        if !done.insert(inode) {
            continue;
        }
        let _ = sys::ns::run_in(&ns, nix::sched::CloneFlags::CLONE_NEWNET, || {
            cryo_netns::NetworkLock::release_by_id(lock_id)
        });
    }
}

/// In cryo, just after forking guardian `pid`: the guardian in a process group of its own
/// before cryo goes on, so that a signal to cryo's group (a Ctrl-C, a kill of the group) can
/// never reach it, even before it runs [`become_guardian`]'s setsid (on a loaded machine it
/// may not have run at all yet). Whichever of the two comes first, the other fails, harmlessly.
pub(crate) fn out_of_cryos_group(pid: nix::unistd::Pid) {
    let _ = nix::unistd::setpgid(pid, pid);
}

/// In a freshly forked guardian (dump's or restore's): a session of its own (a Ctrl-C to
/// cryo's group does not reach it), SIGINT, SIGTERM, SIGHUP and SIGPIPE ignored, no signal
/// blocked, and every fd inherited from cryo closed but `keep` (image files, sockets, locks).
pub(crate) fn become_guardian(keep: &[RawFd]) {
    let _ = nix::unistd::setsid();
    let ignore = sys::signal::KernelSigaction {
        handler: 1,
        ..Default::default()
    };
    for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGPIPE] {
        let _ = sys::signal::set_action(s as u32, &ignore);
    }
    let _ = sys::signal::set_mask(0);
    let mut keep = keep.to_vec();
    keep.sort_unstable();
    let mut first = 0u32;
    for fd in keep {
        let fd = fd as u32;
        if fd > first {
            let _ = sys::fd::close_range(first, fd - 1);
        }
        first = fd + 1;
    }
    let _ = sys::process::close_from(first);
}
