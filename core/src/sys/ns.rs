//! Reading in another namespace: a short-lived thread of cryo joins it, the others stay out.

use std::io;
use std::os::fd::AsFd;
use std::path::Path;

use nix::sched::CloneFlags;

/// The text of file `path` as a thread in namespace `ns` (an open /proc/PID/ns/KIND of kind
/// `kind`, a per-thread one: UTS, cgroup, IPC, network) reads it.
pub(crate) fn read_in(ns: impl AsFd + Send, kind: CloneFlags, path: &Path) -> io::Result<String> {
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::setns(ns, kind)?;
            std::fs::read_to_string(path)
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the namespace reader panicked")))
    })
}
