//! Working in another namespace: a short-lived thread of cryo joins it, the others stay out.

use std::io;
use std::os::fd::AsFd;

use nix::sched::CloneFlags;

/// Runs `f` on a short-lived thread that joined namespace `ns` (an open /proc/PID/ns/KIND of
/// kind `kind`, a per-thread one: UTS, cgroup, IPC, network); fails if it cannot join.
pub(crate) fn run_in<T: Send>(
    ns: impl AsFd + Send,
    kind: CloneFlags,
    f: impl FnOnce() -> T + Send,
) -> io::Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::setns(ns, kind)?;
            Ok(f())
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the namespace thread panicked")))
    })
}

/// Runs `f` on a short-lived thread that made itself a new namespace of kind `kind`
/// (unshare: a per-thread one), gone with the thread.
pub(crate) fn run_in_new<T: Send>(kind: CloneFlags, f: impl FnOnce() -> T + Send) -> io::Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::unshare(kind)?;
            Ok(f())
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the namespace thread panicked")))
    })
}
