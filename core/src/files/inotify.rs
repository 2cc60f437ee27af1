//! inotify instances: their watches, by path, restored with the same watch descriptors.
//!
//! ```text
//! dump     fdinfo "inotify wd:W ino:I sdev:D mask:M ignored_mask:0 fhandle-bytes:B
//!                  fhandle-type:T f_handle:H", one line per watch
//!          path: a mount of filesystem D (from /proc/PID/mountinfo, opened through
//!          /proc/PID/root), open_by_handle_at(handle) -> readlink; the path must still
//!          name inode I. An unlinked inode (the watch holds it): its contents saved as a
//!          deleted file's (regular.rs, one copy per inode with the fds on it)
//!          FIONREAD on a duplicate (pidfd_getfd): events queued, not read yet -> refused,
//!          a temporary state (the process reads them; a retry then succeeds)
//! restore  inotify_init1, the unlinked inodes made again first (regular.rs Ghosts: the
//!          same inode as the process's fds on it get), then inotify_add_watch in wd order
//!          (an unlinked one through /proc/self/fd/N); wds are given out cyclically
//!          (next = last + 1), so a gap is skipped with a placeholder watch added and
//!          removed; the events of the restore's own doing (the placeholders' IN_IGNORED)
//!          are drained: the queue was empty at dump
//! ```
//!
//! fanotify (fanotify.rs) finds the inodes of its marks the same way ([`resolve_handle`]).

use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use cryo_proto::image::{file_desc::Kind, FileDesc, Inotify, InotifyWatch, RegularFile};
use nix::fcntl::{FcntlArg, OFlag};
use nix::sys::stat::Mode;

use super::inspect::{fdinfo, resolve_deleted, OpenFd};
use super::kind::{task_pidfd, Checking, Dumping, FileKind, Opened, Opening};
use super::regular::{self, Ghosts};
use super::{restore_err, FileError, InodeKey};
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
        refuse_queued(fd, "inotify")?;
        dump(fd).map(Kind::Inotify)
    }

    fn validate(
        &self,
        desc: &FileDesc,
        i: &Inotify,
        cx: &mut Checking<'_>,
    ) -> Result<(), FileError> {
        for removed in i.watches.iter().filter_map(|w| w.removed.as_ref()) {
            regular::validate_ghost(desc, removed, cx)?;
        }
        Ok(())
    }

    fn open(
        &self,
        desc: &FileDesc,
        i: &Inotify,
        cx: &mut Opening<'_>,
    ) -> Result<Opened, FileError> {
        let images = cx.images;
        let descs = cx.descs;
        open(desc, i, cx.state.get::<Ghosts>(), images, descs).map(Opened::Now)
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

/// The value of field `key` ("key:value") of an fdinfo line.
pub(super) fn fdinfo_field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix(':'))
}

fn parse_line(line: &str) -> Option<WatchLine> {
    let rest = line.strip_prefix("inotify ")?;
    let get = |key: &str| fdinfo_field(rest, key);
    let handle = parse_handle(get("f_handle")?, get("fhandle-bytes")?)?;
    Some(WatchLine {
        wd: i32::from_str_radix(get("wd")?, 16).ok()?,
        ino: u64::from_str_radix(get("ino")?, 16).ok()?,
        sdev: u64::from_str_radix(get("sdev")?, 16).ok()?,
        mask: u32::from_str_radix(get("mask")?, 16).ok()?,
        handle_type: i32::from_str_radix(get("fhandle-type")?, 16).ok()?,
        handle,
    })
}

/// A kernel-internal dev_t (major << 20 | minor) as "MAJOR:MINOR" of mountinfo.
pub(super) fn kdev_name(sdev: u64) -> String {
    format!("{}:{}", sdev >> 20, sdev & 0xf_ffff)
}

/// The mount points of filesystem `dev` ("MAJOR:MINOR") in the mount table of `pid`.
pub(super) fn mount_points(pid: i32, dev: &str) -> io::Result<Vec<String>> {
    let text = fs::read_to_string(format!("/proc/{pid}/mountinfo"))?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(2) == Some(&dev)).then(|| f.get(4).map(|m| m.to_string()))?
        })
        .collect())
}

/// Refuses notification fd `fd` (an inotify or fanotify instance, `what`) while events are
/// queued on it, not read yet: they cannot be put back. A temporary state: once the process
/// has read them, a retry succeeds.
pub(super) fn refuse_queued(fd: &mut Dumping<'_>, what: &str) -> Result<(), FileError> {
    let open = fd.open;
    let pidfd = task_pidfd(open, fd.pidfd)?;
    let dup = sys::pidfd::pidfd_getfd(pidfd, open.fd)
        .map_err(|e| open.inspect_err("pidfd_getfd", open.proc_path(), e))?;
    let queued = sys::fd::fionread(dup.as_fd())
        .map_err(|e| open.inspect_err("FIONREAD", open.proc_path(), e))?;
    if queued > 0 {
        return Err(open.dump_err(format!(
            "{what}: {queued} bytes of events queued, not read yet (they cannot be put back): \
             a temporary state, retry once the process has read them"
        )));
    }
    Ok(())
}

/// The inode a file handle names, as fdinfo shows it for an inotify watch or a fanotify mark.
pub(super) struct Handle<'a> {
    /// The filesystem (kernel dev_t).
    pub sdev: u64,
    /// The inode.
    pub ino: u64,
    /// The handle's type.
    pub handle_type: i32,
    /// The handle's bytes.
    pub handle: &'a [u8],
}

/// Parses the hex bytes of an fdinfo `f_handle:`, checked against `fhandle-bytes:` (hex).
pub(super) fn parse_handle(hex: &str, bytes: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    let handle = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    (usize::from_str_radix(bytes, 16).ok()? == handle.len()).then_some(handle)
}

/// The inode a file handle names, found.
pub(super) enum Found {
    /// By this path.
    Path(String),
    /// Linked nowhere any more (a watch holds it): an fd on it.
    Unlinked(OwnedFd),
}

/// The path of the inode `h` names (`what` says whose it is in errors: "inotify watch 2"),
/// found through its file handle on a mount of its filesystem the task sees. An inode no
/// longer linked anywhere is refused: it has no path to come back by.
pub(super) fn resolve_handle(open: &OpenFd, what: &str, h: &Handle<'_>) -> Result<String, FileError> {
    match find_handle(open, what, h)? {
        Found::Path(path) => Ok(path),
        Found::Unlinked(_) => Err(open.dump_err(format!(
            "{what}: its inode {} is unlinked (no name left to find it by): not supported",
            h.ino
        ))),
    }
}

/// The inode `h` names ([`resolve_handle`]): its path, or an fd on it if it is unlinked.
pub(super) fn find_handle(open: &OpenFd, what: &str, h: &Handle<'_>) -> Result<Found, FileError> {
    let dev = kdev_name(h.sdev);
    let bad = |detail: String| open.dump_err(format!("{what}: {detail}"));
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
        let fd = match sys::inotify::open_by_handle(mount.as_fd(), h.handle_type, h.handle) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ESTALE) => {
                last_err = format!(
                    "its inode {} is unlinked (no name left to find it by): not supported",
                    h.ino
                );
                continue;
            }
            Err(e) => {
                last_err = format!("open_by_handle_at on mount {mp}: {e}");
                continue;
            }
        };
        let unlinked = fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd()))
            .is_ok_and(|m| m.nlink() == 0);
        if unlinked {
            return Ok(Found::Unlinked(fd));
        }
        let link = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
        let path = fs::read_link(&link)
            .map_err(|e| bad(format!("readlink: {e}")))?
            .into_os_string()
            .into_string()
            .map_err(|p| bad(format!("path {p:?} is not valid UTF-8 (not supported)")))?;
        // The kernel shows the path from the root of the mount's namespace: the task's.
        let seen = crate::task::mount_ns::as_seen_by(open.pid, &path);
        match fs::symlink_metadata(&seen) {
            Ok(meta) if meta.ino() == h.ino => return Ok(Found::Path(path)),
            _ => last_err = format!("the inode {} is not reachable by path", h.ino),
        }
    }
    Err(bad(last_err))
}

/// The watched inode, found through its file handle: its path, and for an unlinked one its
/// record as a deleted file (contents saved).
fn resolve(fd: &mut Dumping<'_>, w: &WatchLine) -> Result<(String, Option<RegularFile>), FileError> {
    let h = Handle {
        sdev: w.sdev,
        ino: w.ino,
        handle_type: w.handle_type,
        handle: &w.handle,
    };
    let open = fd.open;
    let what = format!("inotify watch {}", w.wd);
    let held = match find_handle(open, &what, &h)? {
        Found::Path(path) => return Ok((path, None)),
        Found::Unlinked(held) => held,
    };
    let source = PathBuf::from(format!("/proc/self/fd/{}", held.as_raw_fd()));
    let bad = |e: io::Error| open.dump_err(format!("{what}: its unlinked inode {}: {e}", w.ino));
    let meta = fs::metadata(&source).map_err(bad)?;
    let link = fs::read_link(&source)
        .map_err(bad)?
        .into_os_string()
        .into_string()
        .map_err(|p| open.dump_err(format!("{what}: path {p:?} is not valid UTF-8 (not supported)")))?;
    let (path, _) = resolve_deleted(&link, &meta);
    if meta.file_type().is_dir() || !meta.file_type().is_file() {
        return Err(open.dump_err(format!(
            "{what}: its inode {} ({path}) is removed and not a regular file: not supported",
            w.ino
        )));
    }
    // The restore makes the file again for the process's own fds on it and the watch goes on
    // that copy; held by nothing else (a mapping, a cwd, another process), the copy would be
    // gone at the end of the restore, and the watch with it (IN_DELETE_SELF).
    let key = InodeKey::of(&meta);
    let fds = PathBuf::from(format!("/proc/{}/fd", open.pid));
    let held_by_fd = fs::read_dir(&fds)
        .map_err(|e| open.inspect_err("list the fds", fds.clone(), e))?
        .flatten()
        .any(|e| fs::metadata(e.path()).is_ok_and(|m| InodeKey::of(&m) == key));
    if !held_by_fd {
        return Err(open.dump_err(format!(
            "{what}: its inode {} ({path}) is unlinked and no fd of the process holds it: \
             not supported (the copy a restore makes would be gone, and the watch with it)",
            w.ino
        )));
    }
    let reg = regular::dump_file(
        fd.state,
        fd.id,
        key,
        path.clone(),
        true,
        &meta,
        &source,
        fd.images,
    )
    .map_err(|e| open.dump_err(format!("{what}: {e}")))?;
    Ok((path, Some(reg)))
}

/// The watches of inotify `fd`, in wd order.
fn dump(fd: &mut Dumping<'_>) -> Result<Inotify, FileError> {
    let open = fd.open;
    let text = fdinfo(open)?;
    let mut watches = Vec::new();
    for line in text.lines().filter(|l| l.starts_with("inotify ")) {
        let w = parse_line(line)
            .ok_or_else(|| open.dump_err(format!("inotify: cannot parse fdinfo line {line:?}")))?;
        let (path, removed) = resolve(fd, &w)?;
        watches.push(InotifyWatch {
            wd: w.wd,
            path,
            mask: w.mask,
            dev: w.sdev,
            ino: w.ino,
            removed,
        });
    }
    watches.sort_by_key(|w| w.wd);
    Ok(Inotify { watches })
}

/// Recreates an inotify instance with its watches at their wds; the unlinked inodes are made
/// again (`ghosts`, from `images`) before any watch is added.
fn open(
    desc: &FileDesc,
    ino: &Inotify,
    ghosts: &mut Ghosts,
    images: &crate::image::ImageDir,
    descs: &[FileDesc],
) -> Result<OwnedFd, FileError> {
    let fd = sys::inotify::inotify_init(libc::IN_CLOEXEC | libc::IN_NONBLOCK)
        .map_err(|e| restore_err(desc, "inotify_init1", e))?;
    let mut paths = Vec::with_capacity(ino.watches.len());
    for w in &ino.watches {
        paths.push(match &w.removed {
            Some(reg) => ghosts.handle(desc, reg, images, descs)?.display().to_string(),
            None => w.path.clone(),
        });
    }
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
    for (w, path) in ino.watches.iter().zip(&paths) {
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
        let got = sys::inotify::inotify_add_watch(fd.as_fd(), path, w.mask)
            .map_err(|e| restore_err(desc, format!("inotify_add_watch {}", w.path), e))?;
        if got != w.wd {
            return Err(invalid(format!(
                "inotify watch on {} got wd {got}, it was {} (two watches on one file?)",
                w.path, w.wd
            )));
        }
        next = got + 1;
    }
    if skipped > 0 || ino.watches.iter().any(|w| w.removed.is_some()) {
        // The IN_IGNORED events of the placeholders, anything the making of the unlinked
        // inodes did in a watched directory.
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
