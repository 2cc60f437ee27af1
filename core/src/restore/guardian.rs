//! The restore guardian: a small process forked when a restore of TCP connections starts,
//! that holds a duplicate of every connection the restored processes re-create, so that
//! whatever ends the restore (a failure, SIGINT, SIGTERM, SIGKILL of cryo) ends those
//! connections silently: put back in repair mode and disconnected, no FIN or RST sent, the
//! address pair free at once for a retry, and the network lock in place.
//!
//! ```text
//! cryo                                      guardian (setsid, SIGINT/SIGTERM/SIGHUP ignored)
//!  fork; a datagram socket at a slot fd      receives every fd sent on the socket
//!  that every process of the tree inherits   and keeps it
//!  child: socket restored (repair mode)  --> fd received (before the socket leaves repair
//!         sent here, then leaves repair         mode: a process dying later closes nothing)
//!  'U' (the lock is about to be released) --> on an undo: the lock is installed again first
//!  'R' + pids (they are about to run)     --> on cryo's death: undo only if one of them is
//!                                             dying; else, after 'U', release the lock
//!                                             (the restore went forward)
//!  'D' (the processes run)                --> drops its duplicates, exits
//!  'X' (the restore failed, rolled back)  --> undo: every duplicate put in repair mode and
//!  cryo dies (its pidfd, or EOF)              disconnected (close_silently); exits
//! ```
//!
//! Forked only from a single-threaded cryo (the command line is): the child runs ordinary
//! Rust. A multi-threaded caller gets no guardian (logged): a killed restore then leaves
//! connections that left repair mode to close as usual (FIN, dropped by the lock).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};

use cryo_netns::{ConnTuple, NetworkLock};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use nix::unistd::Pid;
use tracing::{debug, warn};

use crate::dump::guardian::{become_guardian, out_of_cryos_group};
use crate::sys;
use crate::sys::process::Forked;

const UNLOCKING: u8 = b'U';
const RUNNING: u8 = b'R';
const DONE: u8 = b'D';
const UNDO: u8 = b'X';

/// The slot fd, in every process of the tree, of the socket that carries connections to the
/// guardian; -1 without a guardian. Set in cryo before the first fork, so that the forked
/// processes read it from their copy of cryo's memory.
static CHANNEL_SLOT: AtomicI32 = AtomicI32::new(-1);

/// Hands `fd` (a TCP connection just re-created, still in repair mode) to the guardian, if
/// there is one. Called in the process that restores it, before it leaves repair mode.
pub(crate) fn entrust(fd: BorrowedFd<'_>) -> io::Result<()> {
    match CHANNEL_SLOT.load(Ordering::Relaxed) {
        slot if slot < 0 => Ok(()),
        slot => sys::scm::send_fd(slot, fd),
    }
}

/// cryo's end of the restore guardian; dropped without [`done`](Self::done), it undoes.
#[derive(Debug)]
pub(crate) struct RestoreGuardian {
    pid: Pid,
    words: Option<OwnedFd>,
    /// The sending end of the channel, placed at the tree's slot while it is forked.
    channel: OwnedFd,
}

impl RestoreGuardian {
    /// Forks the guardian of a restore whose network lock is `lock_id` over `conns`. `None`
    /// when cryo runs other threads (no safe fork) or a step fails (logged).
    pub fn start(lock_id: &str, conns: Vec<ConnTuple>) -> Option<Self> {
        let me = nix::unistd::getpid();
        match crate::proc::tids(me) {
            Ok(t) if t.len() == 1 => {}
            _ => {
                warn!("cryo runs several threads: no restore guardian (a killed restore leaves its connections closing)");
                return None;
            }
        }
        let fail = |what: &str, e: &dyn std::fmt::Display| -> Option<Self> {
            warn!("no restore guardian: {what}: {e}");
            None
        };
        let (ours, theirs) = match socketpair(
            AddressFamily::Unix,
            SockType::Datagram,
            None,
            SockFlag::SOCK_CLOEXEC,
        ) {
            Ok(p) => p,
            Err(e) => return fail("socketpair", &e),
        };
        let (read, write) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
            Ok(p) => p,
            Err(e) => return fail("pipe", &e),
        };
        let cryo = match sys::pidfd::pidfd_open(me) {
            Ok(p) => p,
            Err(e) => return fail("pidfd", &e),
        };
        match sys::process::fork() {
            Ok(Forked::Child) => {
                drop(write);
                drop(ours);
                guard(read, theirs, cryo, lock_id, &conns)
            }
            Ok(Forked::Parent(pid)) => {
                out_of_cryos_group(pid);
                debug!(%pid, "restore guardian started");
                Some(Self {
                    pid,
                    words: Some(write),
                    channel: ours,
                })
            }
            Err(e) => fail("fork", &e),
        }
    }

    /// cryo's end of the channel, for the tree's slot `slot`; from here on every connection
    /// restored is handed over.
    pub fn channel_at(&self, slot: RawFd) -> BorrowedFd<'_> {
        CHANNEL_SLOT.store(slot, Ordering::Relaxed);
        self.channel.as_fd()
    }

    /// The lock is about to be released: an undo from here on installs it again first.
    pub fn unlocking(&self) {
        self.say(&[UNLOCKING]);
    }

    /// `pids` are about to run: if cryo dies from here on, the guardian undoes only if one of
    /// them is dying.
    pub fn running(&self, pids: &[Pid]) {
        let mut word = vec![RUNNING];
        word.extend((pids.len() as u32).to_le_bytes());
        for p in pids {
            word.extend(p.as_raw().to_le_bytes());
        }
        self.say(&word);
    }

    /// The processes run: the guardian lets go of its duplicates and exits.
    pub fn done(mut self) {
        self.say(&[DONE]);
        self.words = None;
        self.reap();
    }

    fn say(&self, word: &[u8]) {
        if let Some(words) = &self.words {
            if let Err(e) = nix::unistd::write(words, word) {
                warn!("restore guardian: {e}");
            }
        }
    }

    fn reap(&self) {
        if let Err(e) = nix::sys::wait::waitpid(self.pid, None) {
            debug!(pid = %self.pid, "restore guardian: {e}");
        }
    }
}

impl Drop for RestoreGuardian {
    fn drop(&mut self) {
        CHANNEL_SLOT.store(-1, Ordering::Relaxed);
        if self.words.is_some() {
            // The restore failed: the guardian undoes; wait so that it is done on return.
            self.say(&[UNDO]);
            self.words = None;
            self.reap();
        }
    }
}

/// What the guardian has heard.
#[derive(Default)]
struct Heard {
    unlocking: bool,
    running: Option<Vec<Pid>>,
}

/// The guardian's life (in the child).
fn guard(words: OwnedFd, channel: OwnedFd, cryo: OwnedFd, lock_id: &str, conns: &[ConnTuple]) -> ! {
    crate::interrupt::guardian_late();
    become_guardian(&[words.as_raw_fd(), channel.as_raw_fd(), cryo.as_raw_fd()]);
    let mut held: Vec<OwnedFd> = Vec::new();
    let mut heard = Heard::default();
    let mut buf = [0u8; 4096];
    let mut pending: Vec<u8> = Vec::new();
    let undo = loop {
        let mut fds = [
            PollFd::new(channel.as_fd(), PollFlags::POLLIN),
            PollFd::new(words.as_fd(), PollFlags::POLLIN),
            PollFd::new(cryo.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => break true,
        }
        let ready = |i: usize, fds: &[PollFd]| fds[i].revents().is_some_and(|r| !r.is_empty());
        let (on_channel, on_words, cryo_gone) = (ready(0, &fds), ready(1, &fds), ready(2, &fds));
        if on_channel {
            held.extend(sys::scm::recv_fds(channel.as_fd()).unwrap_or_default());
        }
        if on_words {
            match sys::spawn::read_raw(words.as_raw_fd(), &mut buf) {
                Ok(0) | Err(_) => break true,
                Ok(n) => pending.extend_from_slice(&buf[..n]),
            }
            match parse(&mut pending, &mut heard) {
                Some(DONE) => break false,
                Some(_) => break true,
                None => {}
            }
        }
        if cryo_gone {
            break true;
        }
    };
    // What is still on its way was sent before the processes died: ours too.
    held.extend(sys::scm::recv_fds(channel.as_fd()).unwrap_or_default());
    if undo {
        let run_on = heard
            .running
            .as_ref()
            .is_some_and(|pids| pids.iter().all(|&p| runs(p)));
        if !run_on {
            if let Some(pids) = &heard.running {
                for &p in pids {
                    let _ = nix::sys::signal::kill(p, nix::sys::signal::Signal::SIGKILL);
                }
            }
            if heard.unlocking && !conns.is_empty() {
                if let Ok(lock) = NetworkLock::install(lock_id, conns) {
                    lock.keep();
                }
            }
            for fd in held.drain(..) {
                let _ = cryo_tcp_repair::close_silently(fd);
            }
        } else if heard.unlocking {
            // Past the point of no return (restore/mod.rs): cryo died before it released the
            // lock, or as it did; the processes run on, so their connections must flow.
            let _ = NetworkLock::release_by_id(lock_id);
        }
    }
    drop(held);
    sys::process::exit_child(0)
}

/// Takes the words complete in `pending`; returns DONE or UNDO when one came.
fn parse(pending: &mut Vec<u8>, heard: &mut Heard) -> Option<u8> {
    loop {
        let (&word, rest) = pending.split_first()?;
        match word {
            UNLOCKING => {
                heard.unlocking = true;
                pending.drain(..1);
            }
            RUNNING => {
                let n = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
                let body = rest.get(4..4 + 4 * n)?;
                heard.running = Some(
                    body.chunks_exact(4)
                        .map(|c| Pid::from_raw(i32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                        .collect(),
                );
                pending.drain(..1 + 4 + 4 * n);
            }
            DONE => return Some(DONE),
            _ => return Some(UNDO),
        }
    }
}

/// Whether `pid` runs on after cryo's death: alive and not dying (a process cryo still
/// traced got SIGKILL, PTRACE_O_EXITKILL, before cryo's exit was seen).
fn runs(pid: Pid) -> bool {
    let Ok(status) = crate::proc::status(pid) else {
        return false;
    };
    let kill = 1u64 << (libc::SIGKILL - 1);
    let mask = |name: &str| {
        crate::proc::status_field(&status, name)
            .and_then(|v| u64::from_str_radix(v, 16).ok())
            .unwrap_or(0)
    };
    let state = crate::proc::status_field(&status, "State").unwrap_or("");
    !state.starts_with('Z')
        && !state.starts_with('X')
        && (mask("SigPnd") | mask("ShdPnd")) & kill == 0
}
