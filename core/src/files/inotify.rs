//! inotify instances: their watches, by path, restored with the same watch descriptors.
//!
//! ```text
//! dump     fdinfo "inotify wd:W ino:I sdev:D mask:M ignored_mask:0 fhandle-bytes:B
//!                  fhandle-type:T f_handle:H", one line per watch
//!          path: a mount of filesystem D (from /proc/PID/mountinfo, opened through
//!          /proc/PID/root), open_by_handle_at(handle) -> readlink; the path must still
//!          name inode I
//! restore  inotify_init1, inotify_add_watch in wd order; wds are given out cyclically
//!          (next = last + 1), so a gap is skipped with a placeholder watch added and
//!          removed; the queued IN_IGNORED of the placeholders is drained
//! ```
//!
//! Events queued but not read at dump time are not saved.

use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use cryo_proto::image::{file_desc::Kind, FileDesc, Inotify, InotifyWatch};
use nix::fcntl::{FcntlArg, OFlag};
use nix::sys::stat::Mode;

use super::inspect::{fdinfo, OpenFd};
use super::kind::{Dumping, FileKind, Opened, Opening};
use super::{restore_err, FileError};
use crate::sys;

/// inotify instances.
pub(super) struct Inotifies;

impl FileKind for Inotifies {
    type Record = Inotify;

    fn record(kind: &Kind) -> Option<&Inotify> {
        match kind {
            Kind::Inotify(i) => Some(i),
            _ => None,
        }
    }

    fn claims(&self, fd: &Dumping<'_>) -> bool {
        fd.seen.is_anon("inotify")
    }

    fn dump(&self, fd: &mut Dumping<'_>) -> Result<Kind, FileError> {
        dump(fd.open).map(Kind::Inotify)
    }

    fn open(
        &self,
        desc: &FileDesc,
        i: &Inotify,
        _cx: &mut Opening<'_>,
    ) -> Result<Opened, FileError> {
        open(desc, i).map(Opened::Now)
    }

    fn describe(&self, _desc: &FileDesc, i: &Inotify) -> String {
        format!("inotify ({} watches)", i.watches.len())
    }
}

/// The most placeholder watches one restore adds to skip wd gaps.
const MAX_GAP: i32 = 1 << 16;

/// One `inotify` line of an fdinfo.
#[derive(Debug, PartialEq, Eq)]
struct WatchLine {
    wd: i32,
    ino: u64,
    sdev: u64,
    mask: u32,
    handle_type: i32,
    handle: Vec<u8>,
}

fn parse_line(line: &str) -> Option<WatchLine> {
    let rest = line.strip_prefix("inotify ")?;
    let get = |key: &str| {
        rest.split_whitespace()
            .find_map(|w| w.strip_prefix(key)?.strip_prefix(':'))
    };
    let hex = get("f_handle")?;
    if hex.len() % 2 != 0 {
        return None;
    }
    let handle = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    let bytes: usize = usize::from_str_radix(get("fhandle-bytes")?, 16).ok()?;
    if bytes != handle.len() {
        return None;
    }
    Some(WatchLine {
        wd: get("wd")?.parse().ok()?,
        ino: u64::from_str_radix(get("ino")?, 16).ok()?,
        sdev: u64::from_str_radix(get("sdev")?, 16).ok()?,
        mask: u32::from_str_radix(get("mask")?, 16).ok()?,
        handle_type: i32::from_str_radix(get("fhandle-type")?, 16).ok()?,
        handle,
    })
}

/// A kernel-internal dev_t (major << 20 | minor) as "MAJOR:MINOR" of mountinfo.
fn kdev_name(sdev: u64) -> String {
    format!("{}:{}", sdev >> 20, sdev & 0xf_ffff)
}

/// The mount points of filesystem `dev` ("MAJOR:MINOR") in the mount table of `pid`.
fn mount_points(pid: i32, dev: &str) -> io::Result<Vec<String>> {
    let text = fs::read_to_string(format!("/proc/{pid}/mountinfo"))?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(2) == Some(&dev)).then(|| f.get(4).map(|m| m.to_string()))?
        })
        .collect())
}

/// The path of the watched inode, found through its file handle.
fn resolve(open: &OpenFd, w: &WatchLine) -> Result<String, FileError> {
    let dev = kdev_name(w.sdev);
    let bad = |detail: String| open.dump_err(format!("inotify watch {}: {detail}", w.wd));
    let mounts = mount_points(open.pid.as_raw(), &dev).map_err(|e| {
        let table = PathBuf::from(format!("/proc/{}/mountinfo", open.pid));
        open.inspect_err("read the mount table", table, e)
    })?;
    let mut last_err = format!("no mount of filesystem {dev} is visible to the task");
    for mp in mounts {
        let at = PathBuf::from(format!("/proc/{}/root{mp}", open.pid));
        let mount = match nix::fcntl::open(
            Path::new(&at),
            // Not O_PATH: open_by_handle_at wants a real file (fdget).
            OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(e) => {
                last_err = format!("open mount {mp}: {e}");
                continue;
            }
        };
        let fd = match sys::inotify::open_by_handle(mount.as_fd(), w.handle_type, &w.handle) {
            Ok(fd) => fd,
            Err(e) => {
                last_err = format!("open_by_handle_at on mount {mp}: {e}");
                continue;
            }
        };
        let link = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
        let path = fs::read_link(&link)
            .map_err(|e| bad(format!("readlink: {e}")))?
            .into_os_string()
            .into_string()
            .map_err(|p| bad(format!("path {p:?} is not valid UTF-8 (not supported)")))?;
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.ino() == w.ino => return Ok(path),
            _ => last_err = format!("the watched inode {} is not reachable by path", w.ino),
        }
    }
    Err(bad(last_err))
}

/// The watches of inotify `open`, in wd order.
fn dump(open: &OpenFd) -> Result<Inotify, FileError> {
    let text = fdinfo(open)?;
    let mut watches = Vec::new();
    for line in text.lines().filter(|l| l.starts_with("inotify ")) {
        let w = parse_line(line)
            .ok_or_else(|| open.dump_err(format!("inotify: cannot parse fdinfo line {line:?}")))?;
        let path = resolve(open, &w)?;
        watches.push(InotifyWatch {
            wd: w.wd,
            path,
            mask: w.mask,
            dev: w.sdev,
            ino: w.ino,
        });
    }
    watches.sort_by_key(|w| w.wd);
    Ok(Inotify { watches })
}

/// Recreates an inotify instance with its watches at their wds.
fn open(desc: &FileDesc, ino: &Inotify) -> Result<OwnedFd, FileError> {
    let fd = sys::inotify::inotify_init(libc::IN_CLOEXEC | libc::IN_NONBLOCK)
        .map_err(|e| restore_err(desc, "inotify_init1", e))?;
    let invalid = |detail: String| FileError::Invalid {
        id: desc.id,
        detail,
    };
    let placeholder = ["/", "/proc", "/dev", "/sys"]
        .into_iter()
        .find(|p| ino.watches.iter().all(|w| w.path != *p))
        .ok_or_else(|| invalid("no free placeholder path to skip wd gaps with".into()))?;
    let mut next = 1;
    let mut skipped = 0;
    for w in &ino.watches {
        while next < w.wd {
            let gap = sys::inotify::inotify_add_watch(
                fd.as_fd(),
                placeholder,
                libc::IN_ACCESS | libc::IN_MASK_CREATE,
            )
            .map_err(|e| restore_err(desc, format!("placeholder watch on {placeholder}"), e))?;
            sys::inotify::inotify_rm_watch(fd.as_fd(), gap)
                .map_err(|e| restore_err(desc, "inotify_rm_watch", e))?;
            next = gap + 1;
            skipped += 1;
            if skipped > MAX_GAP {
                return Err(invalid(format!("wd {} is too far to reach", w.wd)));
            }
        }
        let got = sys::inotify::inotify_add_watch(fd.as_fd(), &w.path, w.mask)
            .map_err(|e| restore_err(desc, format!("inotify_add_watch {}", w.path), e))?;
        if got != w.wd {
            return Err(invalid(format!(
                "inotify watch on {} got wd {got}, it was {} (two watches on one file?)",
                w.path, w.wd
            )));
        }
        next = got + 1;
    }
    if skipped > 0 {
        // The IN_IGNORED events of the placeholders.
        let mut buf = [0u8; 4096];
        while matches!(nix::unistd::read(&fd, &mut buf), Ok(n) if n > 0) {}
    }
    if desc.flags & libc::O_NONBLOCK as u32 == 0 {
        nix::fcntl::fcntl(&fd, FcntlArg::F_SETFL(OFlag::empty()))
            .map_err(|e| restore_err(desc, "F_SETFL", e.into()))?;
    }
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_line_is_parsed() {
        let line = "inotify wd:2 ino:1a2b sdev:800001 mask:fc6 ignored_mask:0 fhandle-bytes:8 \
                    fhandle-type:1 f_handle:2b1a000011223344";
        let w = parse_line(line).unwrap();
        assert_eq!(w.wd, 2);
        assert_eq!(w.ino, 0x1a2b);
        assert_eq!(kdev_name(w.sdev), "8:1");
        assert_eq!(w.mask, 0xfc6);
        assert_eq!(w.handle_type, 1);
        assert_eq!(w.handle, vec![0x2b, 0x1a, 0, 0, 0x11, 0x22, 0x33, 0x44]);
        assert!(parse_line("inotify wd:1 f_handle:abc").is_none());
    }
}
