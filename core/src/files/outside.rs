//! Who outside the dump holds a file the dump holds: the fds of every other process of the
//! host on the same inode (stat through /proc/PID/fd), or on the same open file description
//! (kcmp KCMP_FILE); the walk of every fd outside the dump is [`fds_outside`] (BPF maps use
//! it too). Read only when the dump holds something such a holder would change (a flock or
//! OFD lock, a pty slave, a BPF map), as it walks every process of the host.

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
    for (other, n) in fds_outside(members)? {
        let Ok(m) = std::fs::metadata(format!("/proc/{other}/fd/{n}")) else {
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
    Ok(None)
}

/// Every fd of every process of the host other than the dump's `members` and cryo itself, as
/// (pid, fd), read as it is walked; processes that vanish or cannot be read are passed over.
pub(crate) fn fds_outside(
    members: &HashSet<i32>,
) -> std::io::Result<impl Iterator<Item = (i32, RawFd)> + '_> {
    let me = std::process::id() as i32;
    let processes = std::fs::read_dir("/proc")?.flatten().filter_map(move |entry| {
        let pid = entry.file_name().to_str()?.parse::<i32>().ok()?;
        (pid != me && !members.contains(&pid)).then_some(pid)
    });
    Ok(processes.flat_map(|pid| {
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).into_iter().flatten();
        fds.flatten().filter_map(move |f| {
            let fd = f.file_name().to_str()?.parse::<RawFd>().ok()?;
            Some((pid, fd))
        })
    }))
}
