//! Who outside the dump holds a file the dump holds: the fds of every other process of the
//! host on the same inode (stat through /proc/PID/fd), or on the same open file description
//! (kcmp KCMP_FILE). Read only when the dump holds something such a holder would change (a
//! flock or OFD lock, a pty slave), as it walks every process of the host.

use std::collections::HashSet;
use std::os::fd::RawFd;
use std::os::unix::fs::MetadataExt;

use nix::unistd::Pid;

use crate::sys::kcmp::kcmp_same_file;

/// A process outside the dump and its fd on the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Holder {
    /// The process.
    pub pid: Pid,
    /// Its fd.
    pub fd: RawFd,
}

/// The first process of the host, other than the dump's `members` and cryo itself, with an
/// fd on the inode fd `fd` of `pid` is open on; with `same_description`, only one on the same
/// open file description. Processes that vanish or cannot be read meanwhile are passed over.
pub(crate) fn holder(
    pid: Pid,
    fd: RawFd,
    members: &HashSet<i32>,
    same_description: bool,
) -> std::io::Result<Option<Holder>> {
    let target = std::fs::metadata(format!("/proc/{pid}/fd/{fd}"))?;
    let me = std::process::id() as i32;
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Some(other) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        if other == me || members.contains(&other) {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(format!("/proc/{other}/fd")) else {
            continue;
        };
        for f in fds.flatten() {
            let Some(n) = f.file_name().to_str().and_then(|n| n.parse::<RawFd>().ok()) else {
                continue;
            };
            let Ok(m) = std::fs::metadata(f.path()) else {
                continue;
            };
            if m.dev() != target.dev() || m.ino() != target.ino() {
                continue;
            }
            let other = Pid::from_raw(other);
            if !same_description || kcmp_same_file(pid, fd, other, n).unwrap_or(false) {
                return Ok(Some(Holder { pid: other, fd: n }));
            }
        }
    }
    Ok(None)
}
