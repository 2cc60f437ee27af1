//! fanotify groups: their flags and marks (on inodes, mounts and whole filesystems), made
//! again with fanotify_init and fanotify_mark, as CRIU does.
//!
//! ```text
//! dump     fdinfo "fanotify flags:F event-flags:E", then one line per mark:
//!            inode       "fanotify ino:I sdev:D mflags:M mask:K ignored_mask:G
//!                         fhandle-bytes:B fhandle-type:T f_handle:H"
//!                        -> its path by handle, as inotify finds a watch's (inotify.rs)
//!            mount       "fanotify mnt_id:N mflags:M mask:K ignored_mask:G" (N in hex)
//!                        -> the mount point of mount N (/proc/PID/mountinfo), which must
//!                        still lead to mount N (not covered by another)
//!            filesystem  "fanotify sdev:D mflags:M mask:K ignored_mask:G"
//!                        -> a mount point of filesystem D that leads to its mount
//!          refused: events queued, not read yet (FIONREAD on a duplicate: a temporary
//!          state), marks asking for permission events (an answer the listener owes cannot
//!          be seen from outside), marks of any other kind (a mount namespace's)
//! restore  fanotify_init(F, E); per mark, oldest first, fanotify_mark(FAN_MARK_ADD [|FAN_MARK_MOUNT
//!          |FAN_MARK_FILESYSTEM] [|FAN_MARK_EVICTABLE], K, path), then its ignored mask
//!          with FAN_MARK_IGNORED_MASK (or FAN_MARK_IGNORE, as it was added)
//!          [|FAN_MARK_IGNORED_SURV_MODIFY]
//!          a group with a mark on a mount of its holder's mount namespace's own (marked at
//!          dump by task/mount_ns.rs mark_files: FileDesc.in_mount_namespace): not checked
//!          by cryo but by the holder, which makes it after making that namespace: each
//!          path leads to the inode marked (on a copied tmpfs: one of its type), or to a
//!          mount's root (check_in_namespace)
//! ```

use std::fs;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use cryo_proto::image::{file_desc::Kind, Fanotify, FanotifyMark, FanotifyMarkKind, FileDesc};
use nix::fcntl::{FcntlArg, OFlag};
use nix::sys::stat::Mode;

use super::inotify::{kdev_name, parse_handle, refuse_queued, resolve_handle, Handle};
use super::inspect::{fdinfo, field, OpenFd};
use super::kind::{Checking, Dumping, FileKind, Opened, Opening};
use super::{restore_err, FileError};
use crate::sys;

/// fanotify groups.
pub(super) struct Fanotifies;

impl FileKind for Fanotifies {
    type Record = Fanotify;

    fn record(kind: &Kind) -> Option<&Fanotify> {
        match kind {
            Kind::Fanotify(f) => Some(f),
            _ => None,
        }
    }

    fn claims(&self, fd: &Dumping<'_>) -> bool {
        fd.seen.is_anon("fanotify")
    }

    fn dump(&self, fd: &mut Dumping<'_>) -> Result<Kind, FileError> {
        refuse_queued(fd, "fanotify")?;
        dump(fd.open).map(Kind::Fanotify)
    }

    fn validate(
        &self,
        desc: &FileDesc,
        f: &Fanotify,
        _cx: &mut Checking<'_>,
    ) -> Result<(), FileError> {
        // A mark's path leads to what it marked only in the mount namespace the restore makes
        // for the holder: checked there when the holder makes the group (check_in_namespace).
        if desc.in_mount_namespace {
            return Ok(());
        }
        for m in &f.marks {
            if m.kind() == FanotifyMarkKind::FanotifyMarkInode {
                // The inode number only, as the dump checked it: st_dev is not always the
                // superblock's dev fdinfo shows (btrfs subvolumes).
                let same = fs::symlink_metadata(&m.path).is_ok_and(|meta| meta.ino() == m.ino);
                if !same {
                    return Err(FileError::Invalid {
                        id: desc.id,
                        detail: format!(
                            "fanotify mark on {}: that path no longer names the inode marked \
                             at dump ({} on {})",
                            m.path,
                            m.ino,
                            kdev_name(m.dev)
                        ),
                    });
                }
            }
        }
        Ok(())
    }

    fn open(
        &self,
        desc: &FileDesc,
        f: &Fanotify,
        _cx: &mut Opening<'_>,
    ) -> Result<Opened, FileError> {
        open(desc, f).map(Opened::Now)
    }

    fn describe(&self, _desc: &FileDesc, f: &Fanotify) -> String {
        format!("fanotify ({} marks)", f.marks.len())
    }
}

/// The events a listener must answer (FAN_OPEN_PERM, FAN_ACCESS_PERM, FAN_OPEN_EXEC_PERM,
/// FAN_PRE_ACCESS).
const PERMISSION_EVENTS: u32 = 0x0001_0000 | 0x0002_0000 | 0x0004_0000 | 0x0010_0000;

/// The mark flags fdinfo shows (fanotify_mark_user_flags) that the restore passes back.
const KNOWN_MFLAGS: u32 =
    libc::FAN_MARK_IGNORED_SURV_MODIFY | libc::FAN_MARK_EVICTABLE | libc::FAN_MARK_IGNORE;

/// The value of `key:` (hex) among the words of an fdinfo line.
fn hex_of(words: &str, key: &str) -> Option<u64> {
    let v = words
        .split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix(':'))?;
    u64::from_str_radix(v, 16).ok()
}

/// The word value of `key:` among the words of an fdinfo line.
fn word_of<'a>(words: &'a str, key: &str) -> Option<&'a str> {
    words
        .split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix(':'))
}

/// One mark line, parsed (the path not found yet).
#[derive(Debug, PartialEq, Eq)]
enum MarkLine {
    Inode {
        ino: u64,
        sdev: u64,
        handle_type: i32,
        handle: Vec<u8>,
    },
    Mount {
        mnt_id: i32,
    },
    Filesystem {
        sdev: u64,
    },
}

/// A mark line: what it is on, and its mflags, mask and ignored mask.
fn parse_mark(rest: &str) -> Option<(MarkLine, u32, u32, u32)> {
    let mflags = hex_of(rest, "mflags")? as u32;
    let mask = hex_of(rest, "mask")? as u32;
    let ignored = hex_of(rest, "ignored_mask")? as u32;
    let on = if let Some(ino) = hex_of(rest, "ino") {
        MarkLine::Inode {
            ino,
            sdev: hex_of(rest, "sdev")?,
            handle_type: i32::from_str_radix(word_of(rest, "fhandle-type")?, 16).ok()?,
            handle: parse_handle(word_of(rest, "f_handle")?, word_of(rest, "fhandle-bytes")?)?,
        }
    } else if let Some(id) = hex_of(rest, "mnt_id") {
        MarkLine::Mount {
            mnt_id: i32::try_from(id).ok()?,
        }
    } else if rest.starts_with("sdev:") {
        MarkLine::Filesystem {
            sdev: hex_of(rest, "sdev")?,
        }
    } else {
        return None;
    };
    Some((on, mflags, mask, ignored))
}

/// Opens `/proc/PID/root/<mp>` (O_PATH) of the task of `open`: a mount point it sees.
fn open_mount_point(open: &OpenFd, mp: &str) -> nix::Result<OwnedFd> {
    let at = PathBuf::from(format!("/proc/{}/root{mp}", open.pid));
    nix::fcntl::open(
        Path::new(&at),
        OFlag::O_PATH | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// The path (as cryo sees it) of an fd of cryo's.
fn path_of(fd: &OwnedFd) -> Option<String> {
    fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .ok()?
        .into_os_string()
        .into_string()
        .ok()
}

/// The mounts of the task of `open`: (mount id, "MAJOR:MINOR" of its filesystem, mount point).
fn mounts(open: &OpenFd) -> Result<Vec<(i32, String, String)>, FileError> {
    let table = PathBuf::from(format!("/proc/{}/mountinfo", open.pid));
    let text = fs::read_to_string(&table)
        .map_err(|e| open.inspect_err("read the mount table", table, e))?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((f.first()?.parse().ok()?, f.get(2)?.to_string(), f.get(4)?.to_string()))
        })
        .collect())
}

/// The path (as cryo sees it) of mount point `mp` of the task of `open`, if it leads to
/// mount `mnt_id` (not to another mount covering it).
fn reach_mount(open: &OpenFd, mnt_id: i32, mp: &str) -> Result<String, String> {
    let fd = open_mount_point(open, mp).map_err(|e| format!("open {mp}: {e}"))?;
    let info = fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd()))
        .map_err(|e| format!("fdinfo of {mp}: {e}"))?;
    let reached = field(&info, "mnt_id").and_then(|v| v.parse::<i32>().ok());
    if reached != Some(mnt_id) {
        return Err(format!(
            "its mount point {mp} leads to another mount (covered): it could not be marked again"
        ));
    }
    path_of(&fd).ok_or_else(|| format!("the path of {mp} is not valid UTF-8"))
}

/// The mount point of mount `mnt_id` of the task of `open`, which must still lead to it.
fn mount_path(open: &OpenFd, mnt_id: i32) -> Result<String, FileError> {
    let bad = |detail: String| open.dump_err(format!("fanotify mark on mount {mnt_id}: {detail}"));
    let mp = mounts(open)?
        .into_iter()
        .find_map(|(id, _, mp)| (id == mnt_id).then_some(mp))
        .ok_or_else(|| bad("the task does not see that mount".into()))?;
    reach_mount(open, mnt_id, &mp).map_err(bad)
}

/// A path on filesystem `sdev` the task of `open` sees (one of its mount points that is not
/// covered).
fn filesystem_path(open: &OpenFd, sdev: u64) -> Result<String, FileError> {
    let dev = kdev_name(sdev);
    let mut last = "no mount of it is visible to the task".to_string();
    for (id, _, mp) in mounts(open)?.into_iter().filter(|(_, d, _)| *d == dev) {
        match reach_mount(open, id, &mp) {
            Ok(path) => return Ok(path),
            Err(e) => last = e,
        }
    }
    Err(open.dump_err(format!("fanotify mark on filesystem {dev}: {last}")))
}

/// The record of fanotify group `open`.
fn dump(open: &OpenFd) -> Result<Fanotify, FileError> {
    let text = fdinfo(open)?;
    let mut group = None;
    let mut marks = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("fanotify ") else {
            continue;
        };
        let unparsed = || open.dump_err(format!("fanotify: cannot parse fdinfo line {line:?}"));
        if rest.starts_with("flags:") {
            let flags = hex_of(rest, "flags").ok_or_else(unparsed)? as u32;
            let event_flags = hex_of(rest, "event-flags").ok_or_else(unparsed)? as u32;
            group = Some((flags, event_flags));
            continue;
        }
        let (on, mflags, mask, ignored_mask) = parse_mark(rest).ok_or_else(|| {
            open.dump_err(format!(
                "fanotify: a mark cryo does not know how to restore: {line:?}"
            ))
        })?;
        if mask & PERMISSION_EVENTS != 0 {
            return Err(open.dump_err(format!(
                "fanotify: a mark asks for permission events (mask {mask:#x}): an answer the \
                 listener owes to a process waiting on one cannot be seen from outside, so it \
                 could not come back: not supported"
            )));
        }
        if mflags & !KNOWN_MFLAGS != 0 {
            return Err(open.dump_err(format!(
                "fanotify: a mark with flags {mflags:#x} cryo does not know: {line:?}"
            )));
        }
        let mark = |kind: FanotifyMarkKind, path: String, dev: u64, ino: u64, mnt_id: i32| {
            FanotifyMark {
                kind: kind as i32,
                path,
                dev,
                ino,
                mnt_id,
                mflags,
                mask,
                ignored_mask,
                // Set for a holder in a mount namespace of its own (task/mount_ns.rs).
                on_copied_tmpfs: false,
                file_type: 0,
            }
        };
        marks.push(match on {
            MarkLine::Inode {
                ino,
                sdev,
                handle_type,
                handle,
            } => {
                let h = Handle {
                    sdev,
                    ino,
                    handle_type,
                    handle: &handle,
                };
                let path = resolve_handle(open, &format!("fanotify mark on inode {ino}"), &h)?;
                mark(FanotifyMarkKind::FanotifyMarkInode, path, sdev, ino, 0)
            }
            MarkLine::Mount { mnt_id } => {
                let path = mount_path(open, mnt_id)?;
                mark(FanotifyMarkKind::FanotifyMarkMount, path, 0, 0, mnt_id)
            }
            MarkLine::Filesystem { sdev } => {
                let path = filesystem_path(open, sdev)?;
                mark(FanotifyMarkKind::FanotifyMarkFilesystem, path, sdev, 0, 0)
            }
        });
    }
    let (flags, event_flags) = group
        .ok_or_else(|| open.dump_err("fanotify: its fdinfo shows no \"fanotify flags:\" line"))?;
    Ok(Fanotify {
        flags,
        event_flags,
        marks,
    })
}

/// In the holder, in the mount namespace the restore made for it (`desc.in_mount_namespace`):
/// each mark's path leads to what it marked. An inode mark's to inode `ino`, or on a tmpfs
/// made again from its copy (new inode numbers) to an inode of the type marked; a mount or
/// filesystem mark's to the root of a mount (the one the namespace made at its mount point).
fn check_in_namespace(desc: &FileDesc, m: &FanotifyMark) -> Result<(), FileError> {
    let bad = |detail: String| FileError::Invalid {
        id: desc.id,
        detail: format!(
            "fanotify mark on {} (in the mount namespace made again): {detail}",
            m.path
        ),
    };
    match m.kind() {
        FanotifyMarkKind::FanotifyMarkInode => {
            let meta = fs::symlink_metadata(&m.path).map_err(|e| bad(format!("stat: {e}")))?;
            let file_type = meta.mode() & libc::S_IFMT;
            if m.on_copied_tmpfs && file_type != m.file_type {
                return Err(bad(format!(
                    "an inode of type {file_type:o} is there, not of the type marked ({:o})",
                    m.file_type
                )));
            }
            if !m.on_copied_tmpfs && meta.ino() != m.ino {
                return Err(bad(format!(
                    "that path no longer names the inode marked at dump ({} on {})",
                    m.ino,
                    kdev_name(m.dev)
                )));
            }
        }
        FanotifyMarkKind::FanotifyMarkMount | FanotifyMarkKind::FanotifyMarkFilesystem => {
            let open_path = |p: &str| {
                nix::fcntl::open(p, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty())
                    .map_err(|e| bad(format!("open {p}: {e}")))
            };
            let here = open_path(&m.path)?;
            let above = open_path(&format!("{}/..", m.path.trim_end_matches('/')))?;
            let id = |fd: &OwnedFd| {
                sys::mount::mount_id(fd.as_fd()).map_err(|e| bad(format!("its mount id: {e}")))
            };
            // The root's ".." is itself: always a mount's root.
            if m.path != "/" && id(&here)? == id(&above)? {
                return Err(bad("it is no longer a mount point".into()));
            }
        }
    }
    Ok(())
}

/// Makes the group again with its marks.
fn open(desc: &FileDesc, f: &Fanotify) -> Result<OwnedFd, FileError> {
    if desc.in_mount_namespace {
        for m in &f.marks {
            check_in_namespace(desc, m)?;
        }
    }
    let fd = sys::fanotify::fanotify_init(f.flags, f.event_flags)
        .map_err(|e| restore_err(desc, "fanotify_init", e))?;
    // fdinfo lists the newest mark first: added oldest first, they list as they did.
    for m in f.marks.iter().rev() {
        let on = match m.kind() {
            FanotifyMarkKind::FanotifyMarkInode => 0,
            FanotifyMarkKind::FanotifyMarkMount => libc::FAN_MARK_MOUNT,
            FanotifyMarkKind::FanotifyMarkFilesystem => libc::FAN_MARK_FILESYSTEM,
        };
        let base = libc::FAN_MARK_ADD
            | libc::FAN_MARK_DONT_FOLLOW
            | on
            | (m.mflags & libc::FAN_MARK_EVICTABLE);
        let mark = |flags: u32, mask: u32, what: &str| {
            sys::fanotify::fanotify_mark(fd.as_fd(), flags, u64::from(mask), &m.path)
                .map_err(|e| restore_err(desc, format!("fanotify_mark ({what}) {}", m.path), e))
        };
        if m.mask != 0 {
            mark(base, m.mask, "mask")?;
        }
        if m.ignored_mask != 0 {
            let how = if m.mflags & libc::FAN_MARK_IGNORE != 0 {
                libc::FAN_MARK_IGNORE
            } else {
                libc::FAN_MARK_IGNORED_MASK
            };
            let surv = m.mflags & libc::FAN_MARK_IGNORED_SURV_MODIFY;
            mark(base | how | surv, m.ignored_mask, "ignored mask")?;
        }
    }
    let nonblock = f.flags & libc::FAN_NONBLOCK != 0;
    if nonblock != (desc.flags & libc::O_NONBLOCK as u32 != 0) {
        let fl = if nonblock {
            OFlag::empty()
        } else {
            OFlag::O_NONBLOCK
        };
        nix::fcntl::fcntl(&fd, FcntlArg::F_SETFL(fl))
            .map_err(|e| restore_err(desc, "F_SETFL", e.into()))?;
    }
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The holder's checks of its marks' paths in the namespace made again: an inode mark by
    /// its inode (by its type on a copied tmpfs), a mount mark by its path being a mount's
    /// root.
    #[test]
    fn marks_are_checked_by_their_paths_in_the_namespace() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("marked");
        fs::write(&file, b"").unwrap();
        let ino = fs::metadata(&file).unwrap().ino();
        let desc = FileDesc {
            id: 7,
            in_mount_namespace: true,
            ..Default::default()
        };
        let mark = |kind: FanotifyMarkKind, path: &Path| FanotifyMark {
            kind: kind as i32,
            path: path.to_str().unwrap().into(),
            ino,
            ..Default::default()
        };
        let inode = mark(FanotifyMarkKind::FanotifyMarkInode, &file);
        assert!(check_in_namespace(&desc, &inode).is_ok());
        let other = FanotifyMark {
            ino: ino + 1,
            ..inode.clone()
        };
        let err = check_in_namespace(&desc, &other).unwrap_err().to_string();
        assert!(err.contains("no longer names the inode marked"), "{err}");
        let copied = |file_type: u32| FanotifyMark {
            on_copied_tmpfs: true,
            file_type,
            ..other.clone()
        };
        assert!(check_in_namespace(&desc, &copied(libc::S_IFREG)).is_ok());
        let err = check_in_namespace(&desc, &copied(libc::S_IFDIR)).unwrap_err().to_string();
        assert!(err.contains("not of the type marked"), "{err}");
        let mount = mark(FanotifyMarkKind::FanotifyMarkMount, Path::new("/proc"));
        assert!(check_in_namespace(&desc, &mount).is_ok());
        let not_mount = mark(FanotifyMarkKind::FanotifyMarkMount, dir.path());
        let err = check_in_namespace(&desc, &not_mount).unwrap_err().to_string();
        assert!(err.contains("no longer a mount point"), "{err}");
    }

    #[test]
    fn mark_lines_are_parsed() {
        let inode = "ino:98c1b2 sdev:fe00000 mflags:40 mask:a ignored_mask:20 fhandle-bytes:8 \
                     fhandle-type:1 f_handle:b2c198007fa5a80b";
        let (on, mflags, mask, ignored) = parse_mark(inode).unwrap();
        assert_eq!(
            on,
            MarkLine::Inode {
                ino: 0x98c1b2,
                sdev: 0xfe00000,
                handle_type: 1,
                handle: vec![0xb2, 0xc1, 0x98, 0, 0x7f, 0xa5, 0xa8, 0x0b],
            }
        );
        assert_eq!((mflags, mask, ignored), (0x40, 0xa, 0x20));
        let (on, ..) = parse_mark("mnt_id:1b mflags:0 mask:20 ignored_mask:0").unwrap();
        assert_eq!(on, MarkLine::Mount { mnt_id: 27 });
        let (on, ..) = parse_mark("sdev:15 mflags:0 mask:8 ignored_mask:0").unwrap();
        assert_eq!(on, MarkLine::Filesystem { sdev: 0x15 });
        assert!(parse_mark("mntns:4026531841 mflags:0 mask:8 ignored_mask:0").is_none());
        assert_eq!(kdev_name(0xfe00000), "254:0");
    }
}
