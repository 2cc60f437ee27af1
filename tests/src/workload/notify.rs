//! `notify KIND`: a notification fd at 47, with what it watches in the control dir: a
//! fanotify group with marks of every kind, or an inotify instance.
//!
//! ```text
//! notify fanotify   fd 47: fanotify_init(FAN_CLASS_NOTIF|FAN_NONBLOCK, O_RDONLY|O_LARGEFILE)
//!                   inode mark on DIR/marked: FAN_MODIFY|FAN_CLOSE_WRITE, ignored FAN_MODIFY
//!                   (FAN_MARK_IGNORED_SURV_MODIFY): a write shows as FAN_CLOSE_WRITE only;
//!                   a tmpfs mounted at DIR/fs (the test unmounts it): a mount mark
//!                   FAN_CLOSE_WRITE and a filesystem mark FAN_MODIFY on it
//! notify fanotify-perm
//!                   fd 47: fanotify_init(FAN_CLASS_CONTENT), a FAN_OPEN_PERM mark on DIR/marked
//!                   (nobody opens it: nobody waits for an answer)
//! notify inotify    fd 47: inotify_init1(IN_NONBLOCK), watch 1 on DIR/marked (IN_CLOSE_WRITE)
//! notify inotify-many
//!                   fd 47: inotify_init1(IN_NONBLOCK), watches 1 to 20 on DIR/w1 to DIR/w20
//!                   (IN_CLOSE_WRITE), then watches 2 to 9 removed: watch descriptors past 9
//!                   (fdinfo shows them in hex) with a gap below
//! notify inotify-unlinked
//!                   watch 1 on DIR/watched/marked (IN_CLOSE_WRITE|IN_DELETE_SELF), watch 2
//!                   on DIR/watched (IN_CREATE|IN_DELETE); DIR/watched/marked, written
//!                   "hello", open read-write at fd 48, then unlinked (its IN_DELETE read):
//!                   watch 1 holds an inode with no name
//! notify inotify-unlinked-mapped
//!                   as inotify-unlinked, DIR/marked mapped instead of open (fd 48 closed)
//! notify inotify-reads
//!                   what a dump reads, watched for every event (IN_ALL_EVENTS, and
//!                   IN_ONESHOT on watch 2): watch 1 on
//!                   DIR/watched/marked, written "hello", open read-write at fd 48 and
//!                   unlinked; watch 2 on FIFO DIR/watched/fifo, open read-write at fd 49
//!                   with "queued" in it; the events of setting them up read
//!
//! notify dnotify   fd 47: DIR/watched open, fcntl(F_NOTIFY, DN_CREATE|DN_MULTISHOT): its
//!                   owner (F_GETOWN) is this process
//!
//! write NAME        -> ok                       (writes "x" to DIR/NAME; nothing read)
//! events            -> <mask hex> <path>,...    (every event queued, one per file: masks
//!                                                ORed; fanotify: the event fd's path)
//! touch NAME        -> as write, then events (waiting up to 2 s for the first)
//! close-held        -> closed                   (closes fd 48)
//! await MS          -> events, once one is queued (waiting up to MS ms)
//! ```

use std::path::{Path, PathBuf};

use super::{failed, io_err, sys, unknown, Mode};

const FD: i32 = 47;
const HELD: i32 = 48;

struct Notify {
    dir: PathBuf,
    fanotify: bool,
}

/// `notify KIND`
pub fn start(args: &[String], dir: &Path) -> Result<Box<dyn Mode>, String> {
    let kind = args.first().map(String::as_str).unwrap_or("fanotify");
    let marked = dir.join("marked");
    std::fs::write(&marked, b"").map_err(failed("create marked"))?;
    let fd = match kind {
        "fanotify" => {
            let fd = sys::fanotify_init(
                libc::FAN_CLASS_NOTIF | libc::FAN_NONBLOCK,
                (libc::O_RDONLY | libc::O_LARGEFILE) as u32,
            )
            .map_err(failed("fanotify_init"))?;
            let mark = |flags: u32, mask: u64, path: &Path| {
                sys::fanotify_mark(fd, libc::FAN_MARK_ADD | flags, mask, path)
            };
            mark(0, libc::FAN_MODIFY | libc::FAN_CLOSE_WRITE, &marked)
                .map_err(failed("inode mark"))?;
            mark(
                libc::FAN_MARK_IGNORED_MASK | libc::FAN_MARK_IGNORED_SURV_MODIFY,
                libc::FAN_MODIFY,
                &marked,
            )
            .map_err(failed("ignored mask"))?;
            let fs = dir.join("fs");
            std::fs::create_dir(&fs).map_err(failed("mkdir fs"))?;
            sys::mount_tmpfs(&fs).map_err(failed("mount tmpfs"))?;
            mark(libc::FAN_MARK_MOUNT, libc::FAN_CLOSE_WRITE, &fs).map_err(failed("mount mark"))?;
            mark(libc::FAN_MARK_FILESYSTEM, libc::FAN_MODIFY, &fs)
                .map_err(failed("filesystem mark"))?;
            fd
        }
        "fanotify-perm" => {
            let fd = sys::fanotify_init(libc::FAN_CLASS_CONTENT, libc::O_RDONLY as u32)
                .map_err(failed("fanotify_init"))?;
            sys::fanotify_mark(fd, libc::FAN_MARK_ADD, libc::FAN_OPEN_PERM, &marked)
                .map_err(failed("permission mark"))?;
            fd
        }
        "inotify" => {
            let fd = sys::inotify().map_err(failed("inotify_init1"))?;
            sys::add_watch(fd, &marked, libc::IN_CLOSE_WRITE).map_err(failed("add_watch"))?;
            fd
        }
        "inotify-many" => {
            let fd = sys::inotify().map_err(failed("inotify_init1"))?;
            for n in 1..=20 {
                let file = dir.join(format!("w{n}"));
                std::fs::write(&file, b"").map_err(failed("create wN"))?;
                sys::add_watch(fd, &file, libc::IN_CLOSE_WRITE).map_err(failed("add_watch"))?;
            }
            for wd in 2..=9 {
                sys::rm_watch(fd, wd).map_err(failed("rm_watch"))?;
            }
            // The IN_IGNORED of each removal: read, so that nothing is queued.
            sys::read_available(fd, 1 << 16).map_err(failed("read the removals' events"))?;
            fd
        }
        "inotify-unlinked" | "inotify-unlinked-mapped" => {
            let fd = sys::inotify().map_err(failed("inotify_init1"))?;
            let (watched, marked, held) = watched_file(dir)?;
            let dir = watched.as_path();
            sys::add_watch(fd, &marked, libc::IN_CLOSE_WRITE | libc::IN_DELETE_SELF)
                .map_err(failed("add_watch"))?;
            sys::add_watch(fd, dir, libc::IN_CREATE | libc::IN_DELETE)
                .map_err(failed("add_watch dir"))?;
            if kind == "inotify-unlinked-mapped" {
                // SAFETY: a fresh shared mapping of the file's first page, never unmapped.
                let at = unsafe {
                    libc::mmap(
                        std::ptr::null_mut(),
                        4096,
                        libc::PROT_READ,
                        libc::MAP_SHARED,
                        held,
                        0,
                    )
                };
                if at == libc::MAP_FAILED {
                    return Err(format!("mmap marked: {}", std::io::Error::last_os_error()));
                }
                sys::close(held);
            } else {
                sys::move_fd(held, HELD).map_err(failed("dup2"))?;
            }
            std::fs::remove_file(&marked).map_err(failed("unlink marked"))?;
            // The IN_DELETE of the unlink, on watch 2: read, so that nothing is queued.
            sys::read_available(fd, 1 << 16).map_err(failed("read the unlink's event"))?;
            fd
        }
        "inotify-reads" => {
            let fd = sys::inotify().map_err(failed("inotify_init1"))?;
            let (watched, marked, held) = watched_file(dir)?;
            let dir = watched.as_path();
            sys::add_watch(fd, &marked, libc::IN_ALL_EVENTS).map_err(failed("add_watch marked"))?;
            sys::move_fd(held, HELD).map_err(failed("dup2"))?;
            let fifo = dir.join("fifo");
            sys::mkfifo(&fifo).map_err(failed("mkfifo"))?;
            let end = sys::open_mode(&fifo, libc::O_RDWR, 0).map_err(failed("open fifo"))?;
            sys::write_all(end, b"queued").map_err(failed("write fifo"))?;
            sys::add_watch(fd, &fifo, libc::IN_ALL_EVENTS | libc::IN_ONESHOT)
                .map_err(failed("add_watch fifo"))?;
            sys::move_fd(end, HELD + 1).map_err(failed("dup2"))?;
            std::fs::remove_file(&marked).map_err(failed("unlink marked"))?;
            // The unlink's IN_ATTRIB on watch 1: read, so that nothing is queued.
            sys::read_available(fd, 1 << 16).map_err(failed("read the set-up's events"))?;
            fd
        }
        "dnotify" => {
            let watched = dir.join("watched");
            std::fs::create_dir(&watched).map_err(failed("mkdir watched"))?;
            let fd = sys::open_mode(&watched, libc::O_RDONLY | libc::O_DIRECTORY, 0)
                .map_err(failed("open watched"))?;
            // DN_CREATE | DN_MULTISHOT (linux/fcntl.h; not in libc).
            let mask: libc::c_int = 0x4 | 0x8000_0000_u32 as libc::c_int;
            // SAFETY: F_NOTIFY takes an int mask.
            if unsafe { libc::fcntl(fd, libc::F_NOTIFY, mask) } < 0 {
                return Err(format!("F_NOTIFY: {}", std::io::Error::last_os_error()));
            }
            fd
        }
        other => return Err(format!("unknown notify kind {other:?}")),
    };
    sys::move_fd(fd, FD).map_err(failed("dup2"))?;
    Ok(Box::new(Notify {
        dir: dir.to_owned(),
        fanotify: kind.starts_with("fanotify"),
    }))
}

/// DIR/watched (apart from the control files and the images the test writes into DIR) and
/// in it `marked`, written "hello", open read-write: the directory, the file and its fd.
fn watched_file(dir: &Path) -> Result<(PathBuf, PathBuf, i32), String> {
    let dir = dir.join("watched");
    std::fs::create_dir(&dir).map_err(failed("mkdir watched"))?;
    let marked = dir.join("marked");
    let held = sys::open_mode(&marked, libc::O_RDWR | libc::O_CREAT, 0o644)
        .map_err(failed("open marked"))?;
    sys::write_all(held, b"hello").map_err(failed("write marked"))?;
    Ok((dir, marked, held))
}

/// Every event queued now on fanotify group `fd`, one entry per file (masks ORed, each with
/// the path of its event fd, which is closed), sorted: "<mask hex> <path>,...".
pub(super) fn fanotify_events(fd: i32) -> Result<String, String> {
    let data = sys::read_available(fd, 1 << 16).map_err(io_err)?;
    let mut per_file: std::collections::BTreeMap<String, u64> = Default::default();
    let mut off = 0;
    // struct fanotify_event_metadata: event_len u32, vers u8, reserved u8, metadata_len u16,
    // mask u64, fd i32, pid i32.
    while off + 24 <= data.len() {
        let len = u32::from_ne_bytes(data[off..off + 4].try_into().expect("4")) as usize;
        let mask = u64::from_ne_bytes(data[off + 8..off + 16].try_into().expect("8"));
        let event_fd = i32::from_ne_bytes(data[off + 16..off + 20].try_into().expect("4"));
        let path = if event_fd >= 0 {
            let p = std::fs::read_link(format!("/proc/self/fd/{event_fd}"))
                .map_or_else(|e| format!("?{e}"), |p| p.display().to_string());
            sys::close(event_fd);
            p
        } else {
            format!("fd{event_fd}")
        };
        *per_file.entry(path).or_default() |= mask;
        off += len.max(24);
    }
    Ok(joined(&per_file))
}

/// "<mask hex> <name>,..." of `per_file`.
fn joined(per_file: &std::collections::BTreeMap<String, u64>) -> String {
    let list: Vec<String> = per_file.iter().map(|(p, m)| format!("{m:x} {p}")).collect();
    list.join(",")
}

impl Notify {
    /// Every event queued now, one entry per file (masks ORed), sorted.
    fn events(&self) -> Result<String, String> {
        if self.fanotify {
            return fanotify_events(FD);
        }
        let data = sys::read_available(FD, 1 << 16).map_err(io_err)?;
        let mut per_file: std::collections::BTreeMap<String, u64> = Default::default();
        let mut off = 0;
        while off + 16 <= data.len() {
            let wd = i32::from_ne_bytes(data[off..off + 4].try_into().expect("4"));
            let mask = u32::from_ne_bytes(data[off + 4..off + 8].try_into().expect("4"));
            let len = u32::from_ne_bytes(data[off + 12..off + 16].try_into().expect("4"));
            *per_file.entry(format!("wd{wd}")).or_default() |= u64::from(mask);
            off += 16 + len as usize;
        }
        Ok(joined(&per_file))
    }

    fn write(&self, name: &str) -> Result<(), String> {
        std::fs::write(self.dir.join(name), b"x").map_err(io_err)
    }
}

impl Mode for Notify {
    fn command(&mut self, verb: &str, args: &[&str]) -> Result<String, String> {
        match (verb, args) {
            ("fd", []) => Ok(FD.to_string()),
            ("write", [name]) => self.write(name).map(|()| "ok".into()),
            ("close-held", []) => {
                sys::close(HELD);
                Ok("closed".into())
            }
            ("events", []) => self.events(),
            ("await", [ms]) => {
                let ms: i32 = ms.parse().map_err(|_| format!("bad number {ms:?}"))?;
                sys::poll_in(FD, ms).map_err(io_err)?;
                self.events()
            }
            ("touch", [name]) => {
                self.write(name)?;
                sys::poll_in(FD, 2000).map_err(io_err)?;
                self.events()
            }
            _ => unknown(verb),
        }
    }
}
