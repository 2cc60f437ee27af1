//! Keeping the dump's own reads of a file (a FIFO's queued bytes, a deleted file's contents)
//! out of the inotify queues of the dump's processes: an open, a read (tee too) and a close
//! queue IN_OPEN, IN_ACCESS and IN_CLOSE_NOWRITE on every watch of the file, which a process
//! left running would read as if something had used its file, and which a killing dump
//! would refuse as events queued.
//!
//! ```text
//! first use   every inotify fd of the dump's processes, its fdinfo's watches by inode
//! quiet()     each watch on the file: inotify_add_watch through a duplicate of its
//!             instance (pidfd_getfd) and the file's /proc/self/fd link (an O_PATH fd: no
//!             event), its mask without those three events (IN_DELETE_SELF alone where
//!             nothing else is left: it cannot fire while the O_PATH fd holds the inode)
//! drop        the same call with the mask fdinfo showed (flags IN_ONESHOT and
//!             IN_EXCL_UNLINK included): the watch as it was, same wd
//! ```
//!
//! The processes are frozen throughout; only an outside process's use of the file in that
//! window goes unreported on the lowered events.

use std::collections::HashMap;
use std::fs;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use nix::unistd::Pid;
use tracing::{debug, warn};

use super::kind::KindState;
use crate::sys;

/// The events a read of a file by the dump queues.
const READ_EVENTS: u32 = libc::IN_OPEN | libc::IN_ACCESS | libc::IN_CLOSE_NOWRITE;

/// The inotify watches of the dump's processes by watched inode (kernel dev_t, inode), read
/// on first use, once per dump.
#[derive(Debug, Default)]
pub(super) struct DumpWatches(Option<HashMap<(u64, u64), Vec<HeldWatch>>>);

/// A watch of an inotify fd of a process of the dump.
#[derive(Debug, Clone, Copy)]
struct HeldWatch {
    pid: i32,
    fd: i32,
    mask: u32,
}

/// Watches on one file lowered by [`quiet`], given back their masks when dropped.
pub(super) struct Quiet {
    /// An O_PATH fd on the file: its /proc/self/fd link leads inotify_add_watch to it.
    file: Option<OwnedFd>,
    /// A duplicate of each inotify instance with a watch on it, and that watch's mask.
    lowered: Vec<(OwnedFd, u32)>,
}

impl Drop for Quiet {
    fn drop(&mut self) {
        let Some(file) = &self.file else { return };
        let link = format!("/proc/self/fd/{}", file.as_raw_fd());
        for (instance, mask) in &self.lowered {
            if let Err(e) = sys::inotify::inotify_add_watch(instance.as_fd(), &link, *mask) {
                warn!(error = %e, mask, "an inotify watch muted during a read could not be given its mask back");
            }
        }
    }
}

/// Mutes the read events of the watches the dump's processes hold on `file` (a path that
/// leads to it: /proc/PID/fd/N), of inode `meta`, until the returned guard drops. Best
/// effort: what cannot be muted is left as it is (the events are then queued, and an inotify
/// fd dumped later refuses them).
pub(super) fn quiet(state: &mut KindState, file: &Path, meta: &fs::Metadata) -> Quiet {
    let mut quiet = Quiet {
        file: None,
        lowered: Vec::new(),
    };
    let key = (kernel_dev(meta.dev()), meta.ino());
    let pids = super::pidfd::dump_pids(state);
    let watches = state
        .get::<DumpWatches>()
        .0
        .get_or_insert_with(|| read_watches(&pids));
    let Some(on_file) = watches.get(&key).filter(|w| !w.is_empty()) else {
        return quiet;
    };
    let on_file = on_file.clone();
    let file = match nix::fcntl::open(file, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty()) {
        Ok(fd) => fd,
        Err(e) => {
            debug!(path = %file.display(), error = %e, "not muted: the file cannot be opened O_PATH");
            return quiet;
        }
    };
    let link = format!("/proc/self/fd/{}", file.as_raw_fd());
    quiet.file = Some(file);
    for w in on_file.iter().filter(|w| w.mask & READ_EVENTS != 0) {
        let instance = sys::pidfd::pidfd_open(Pid::from_raw(w.pid))
            .and_then(|pidfd| sys::pidfd::pidfd_getfd(pidfd.as_fd(), w.fd));
        let instance = match instance {
            Ok(fd) => fd,
            Err(e) => {
                debug!(pid = w.pid, fd = w.fd, error = %e, "not muted: no duplicate of the inotify fd");
                continue;
            }
        };
        let mut lowered = w.mask & !READ_EVENTS;
        if lowered & libc::IN_ALL_EVENTS == 0 {
            lowered |= libc::IN_DELETE_SELF;
        }
        match sys::inotify::inotify_add_watch(instance.as_fd(), &link, lowered) {
            Ok(_) => quiet.lowered.push((instance, w.mask)),
            Err(e) => debug!(pid = w.pid, fd = w.fd, error = %e, "not muted"),
        }
    }
    quiet
}

/// A user dev_t (stat's) as the kernel's internal one fdinfo shows (major << 20 | minor).
fn kernel_dev(dev: u64) -> u64 {
    (u64::from(libc::major(dev)) << 20) | u64::from(libc::minor(dev))
}

/// Every watch of every inotify fd of processes `pids`, by watched inode.
fn read_watches(pids: &std::collections::HashSet<i32>) -> HashMap<(u64, u64), Vec<HeldWatch>> {
    let mut by_inode: HashMap<(u64, u64), Vec<HeldWatch>> = HashMap::new();
    for &pid in pids {
        let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for entry in fds.flatten() {
            let is_inotify = fs::read_link(entry.path())
                .is_ok_and(|l| l.as_os_str() == "anon_inode:inotify");
            let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
                continue;
            };
            if !is_inotify {
                continue;
            }
            let Ok(info) = fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")) else {
                continue;
            };
            for line in info.lines().filter(|l| l.starts_with("inotify ")) {
                if let Some((sdev, ino, mask)) = watch_of(line) {
                    by_inode
                        .entry((sdev, ino))
                        .or_default()
                        .push(HeldWatch { pid, fd, mask });
                }
            }
        }
    }
    by_inode
}

/// The inode (kernel dev, number) and mask of an fdinfo `inotify` line.
fn watch_of(line: &str) -> Option<(u64, u64, u32)> {
    let get = |key: &str| super::inotify::fdinfo_field(line, key);
    Some((
        u64::from_str_radix(get("sdev")?, 16).ok()?,
        u64::from_str_radix(get("ino")?, 16).ok()?,
        u32::from_str_radix(get("mask")?, 16).ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watch_line_gives_its_inode_and_mask() {
        let line = "inotify wd:1 ino:98d0ae sdev:800001 mask:fff ignored_mask:0 \
                    fhandle-bytes:8 fhandle-type:1 f_handle:ae d0 98 00 00 00 00 00";
        assert_eq!(watch_of(line), Some((0x80_0001, 0x98_d0ae, 0xfff)));
    }

    #[test]
    fn the_kernel_dev_is_major_shifted_20() {
        assert_eq!(kernel_dev(libc::makedev(8, 1)), (8 << 20) | 1);
        assert_eq!(kernel_dev(libc::makedev(259, 70000)), (259 << 20) | 70000);
    }
}
