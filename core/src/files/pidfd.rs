//! pidfds: a pidfd of the process itself comes back on the restored process; a pidfd of any
//! other process is refused at dump, naming it.
//!
//! ```text
//! dump     fdinfo `Pid:` (in cryo's pid namespace; -1 once the process is gone and reaped)
//!          = the holder itself     -> recorded (PIDFD_THREAD is O_EXCL in the file flags)
//!          another pid, -1         -> refused: "pidfd of pid N", "pidfd of an exited process"
//! restore  pidfd_open(getpid(), PIDFD_NONBLOCK|PIDFD_THREAD as dumped), in the restored task
//!          before it is reshaped: the same process, so the same struct pid
//! ```
//!
//! Not yet: pidfds of the other processes of the dump (their pid exists only once their
//! parent forked them, after the holder opened its fds), and of exited processes.

use std::os::fd::OwnedFd;

use cryo_proto::image::{file_desc::Kind, FileDesc, Pidfd};

use super::inspect::{fdinfo, field, OpenFd};
use super::kind::{Dumping, FileKind, Opened, Opening};
use super::{restore_err, FileError};
use crate::sys;

/// pidfd instances.
pub(super) struct Pidfds;

impl FileKind for Pidfds {
    type Record = Pidfd;

    fn record(kind: &Kind) -> Option<&Pidfd> {
        match kind {
            Kind::Pidfd(p) => Some(p),
            _ => None,
        }
    }

    fn claims(&self, fd: &Dumping<'_>) -> bool {
        fd.seen.is_anon("pidfd")
    }

    fn dump(&self, fd: &mut Dumping<'_>) -> Result<Kind, FileError> {
        dump(fd.open).map(Kind::Pidfd)
    }

    fn open(&self, desc: &FileDesc, _p: &Pidfd, _cx: &mut Opening<'_>) -> Result<Opened, FileError> {
        open(desc).map(Opened::Now)
    }

    fn in_flight(&self) -> bool {
        // In a unix socket's queue it has no holder to be the pidfd of.
        false
    }

    fn describe(&self, _desc: &FileDesc, _p: &Pidfd) -> String {
        "pidfd of the process itself".into()
    }
}

/// The record of pidfd `open`: only a pidfd of its holder is dumped.
fn dump(open: &OpenFd) -> Result<Pidfd, FileError> {
    let target = fdinfo(open)
        .ok()
        .and_then(|text| field(&text, "Pid").and_then(|v| v.parse::<i32>().ok()));
    match target {
        Some(pid) if pid == open.pid.as_raw() => Ok(Pidfd { of_itself: true }),
        Some(-1) => Err(open.refuse("pidfd of an exited process", true)),
        Some(pid) => Err(open.refuse(format!("pidfd of pid {pid}"), true)),
        None => Err(open.refuse("pidfd (its fdinfo names no process)", true)),
    }
}

/// A pidfd of the calling (restored) process, with the dumped flags.
fn open(desc: &FileDesc) -> Result<OwnedFd, FileError> {
    let mut flags = 0;
    if desc.flags & libc::O_NONBLOCK as u32 != 0 {
        flags |= libc::O_NONBLOCK as u32;
    }
    // PIDFD_THREAD is O_EXCL: a pidfd of the thread (the main one: its tid is the pid).
    if desc.flags & libc::O_EXCL as u32 != 0 {
        flags |= libc::O_EXCL as u32;
    }
    sys::pidfd::pidfd_open_flags(nix::unistd::getpid(), flags)
        .map_err(|e| restore_err(desc, "pidfd_open of the process itself", e))
}
