//! POSIX message queues (mq_open): a queue's name, owner, mode, sizes and messages dumped and
//! made again.
//!
//! ```text
//! dump     /proc/PID/fd/N reads "/NAME" (unlinked: "/NAME (deleted)") on the mqueue fs
//!          of cryo's IPC namespace (same st_dev; another namespace's queue is refused)
//!          once per inode: open /proc/PID/fd/N again (O_RDWR|O_NONBLOCK, a description of
//!          cryo's), read(2) it: "QSIZE:.. NOTIFY:.. SIGNO:.. NOTIFY_PID:P" (P != 0: a
//!          registered mq_notify, refused), mq_getattr (maxmsg, msgsize), mq_receive every
//!          message (priority order, oldest first within one), then mq_send each back in
//!          the same order (so the queue is as it was: also on an error, and with
//!          --leave-running); uid, gid, mode from stat
//! restore  before any process (shared.rs): mq_open(NAME, O_CREAT|O_EXCL, mode, sizes) in
//!          cryo (an unlinked queue at its name when free, else under a name of cryo's,
//!          unlinked at once), fchmod,
//!          fchown, the messages sent in order; every description reopens it through its
//!          slot (/proc/self/fd/SLOT) with its own flags (access mode, O_NONBLOCK)
//! ```
//!
//! A named queue still at its name at restore is taken as it is when it is the dumped one
//! (its inode) with the same owner, mode, sizes and messages: a killing dump leaves it there,
//! as a file (the messages it read, given back). Another queue at the name, or this one
//! changed since, is refused before anything is made. A queue made again has the restore's
//! times (atime, mtime, ctime).

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use cryo_proto::image::{file_desc::Kind, FileDesc, PosixMqMessage, PosixMqueue};
use nix::sys::stat::Mode;

use super::inspect::{InodeKey, OpenFd};
use super::kind::{Checking, Dumping, FileKind, Opened, Opening, Seen};
use super::open::{open_flags, set_async};
use super::{restore_err, FileError};
use crate::sys;
use crate::sys::ipc::MqAttr;

/// MQUEUE_MAGIC from linux/magic.h: the filesystem of an fd on a POSIX message queue.
pub(super) const MQUEUE_MAGIC: i64 = 0x1980_0202;

/// POSIX message queues.
pub(super) struct Mqueues;

/// What a dump keeps across fds: the queues read so far (by inode), and the device of the
/// mqueue fs of cryo's IPC namespace.
#[derive(Debug, Default)]
struct Saved {
    queues: HashMap<InodeKey, PosixMqueue>,
    own_dev: Option<u64>,
}

impl FileKind for Mqueues {
    type Record = PosixMqueue;

    fn record(kind: &Kind) -> Option<&PosixMqueue> {
        match kind {
            Kind::PosixMqueue(q) => Some(q),
            _ => None,
        }
    }

    fn claims(&self, fd: &Dumping<'_>) -> bool {
        matches!(fd.seen, Seen::Mqueue { .. })
    }

    fn dump(&self, fd: &mut Dumping<'_>) -> Result<Kind, FileError> {
        let Seen::Mqueue { name, deleted } = &fd.seen else {
            unreachable!("claimed above")
        };
        let saved = fd.state.get::<Saved>();
        if let Some(q) = saved.queues.get(&fd.key) {
            return Ok(Kind::PosixMqueue(q.clone()));
        }
        let own_dev = match saved.own_dev {
            Some(dev) => dev,
            None => {
                let mnt = sys::ipc::mqueue_mount().map_err(|e| {
                    fd.open
                        .inspect_err("mount the mqueue fs of cryo's IPC namespace", "mqueue".into(), e)
                })?;
                let dev = nix::sys::stat::fstat(mnt.as_fd())
                    .map_err(|e| fd.open.inspect_err("fstat", "mqueue".into(), e.into()))?
                    .st_dev;
                saved.own_dev = Some(dev);
                dev
            }
        };
        if fd.meta.dev() != own_dev {
            return Err(fd.open.dump_err(format!(
                "POSIX message queue /{name} is of another IPC namespace than cryo's"
            )));
        }
        let q = dump(fd.open, fd.meta, name, *deleted)?;
        fd.state.get::<Saved>().queues.insert(fd.key, q.clone());
        Ok(Kind::PosixMqueue(q))
    }

    fn validate(
        &self,
        desc: &FileDesc,
        q: &PosixMqueue,
        cx: &mut Checking<'_>,
    ) -> Result<(), FileError> {
        if q.maxmsg <= 0 || q.msgsize <= 0 || q.messages.len() as i64 > q.maxmsg {
            return Err(FileError::Invalid {
                id: desc.id,
                detail: format!(
                    "POSIX message queue /{}: {} messages for at most {} of {} bytes",
                    q.name,
                    q.messages.len(),
                    q.maxmsg,
                    q.msgsize
                ),
            });
        }
        if let Some(m) = q.messages.iter().find(|m| m.data.len() as i64 > q.msgsize) {
            return Err(FileError::Invalid {
                id: desc.id,
                detail: format!(
                    "POSIX message queue /{}: a message of {} bytes, above its size {}",
                    q.name,
                    m.data.len(),
                    q.msgsize
                ),
            });
        }
        if q.deleted || cx.first(format!("mqueue {}", q.ino), desc.id).is_some() {
            return Ok(());
        }
        // Before anything is made: the name free in cryo's IPC namespace, or the dumped queue
        // itself still there as it was.
        dumped_one_still_there(desc, q).map(drop)
    }

    fn open(&self, desc: &FileDesc, q: &PosixMqueue, cx: &mut Opening<'_>) -> Result<Opened, FileError> {
        let flags = open_flags(desc.flags);
        let fd = match cx.opts.shared.get(&slot_key(q)) {
            Some(&slot) => reopen(desc, &PathBuf::from(format!("/proc/self/fd/{slot}")), flags)?,
            None => {
                // A restore of one task on its own: the queue is made here, once per inode.
                let made = &mut cx.state.get::<Made>().0;
                let holder = match made.entry(q.ino) {
                    std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::hash_map::Entry::Vacant(v) => v.insert(recreate(desc, q)?.0),
                };
                let path = PathBuf::from(format!("/proc/self/fd/{}", holder.as_raw_fd()));
                reopen(desc, &path, flags)?
            }
        };
        set_async(desc, &fd)?;
        Ok(Opened::Now(fd))
    }

    fn describe(&self, _desc: &FileDesc, q: &PosixMqueue) -> String {
        let deleted = if q.deleted { " (deleted)" } else { "" };
        format!(
            "POSIX message queue /{}{deleted} ({} messages)",
            q.name,
            q.messages.len()
        )
    }
}

/// The queues made by one restore call on its own, by dumped inode.
#[derive(Debug, Default)]
struct Made(HashMap<u64, OwnedFd>);

/// The slot of queue `q` among the objects cryo makes before the tree (shared.rs): apart from
/// the memfd inodes (low numbers) and the exited pidfds (near u64::MAX).
pub(super) fn slot_key(q: &PosixMqueue) -> u64 {
    (1 << 62) | q.ino
}

/// Opens the queue held at `path` (a /proc/self/fd link) again, with `flags`.
fn reopen(desc: &FileDesc, path: &Path, flags: nix::fcntl::OFlag) -> Result<OwnedFd, FileError> {
    nix::fcntl::open(path, flags, Mode::empty())
        .map_err(|e| restore_err(desc, "reopen the message queue", e.into()))
}

/// The record of the queue open at `open` (stat `meta`), named `name` (`deleted` if
/// unlinked): its messages read and given back.
fn dump(open: &OpenFd, meta: &fs::Metadata, name: &str, deleted: bool) -> Result<PosixMqueue, FileError> {
    let path = open.proc_path();
    let what = format!("POSIX message queue /{name}");
    let fd: OwnedFd = nix::fcntl::open(
        &path,
        nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| open.inspect_err("open the message queue again", path.clone(), e.into()))?;
    let notify_pid = notify_pid(fd.as_fd())
        .map_err(|e| open.inspect_err("read the message queue's state", path.clone(), e))?;
    if notify_pid != 0 {
        return Err(open.dump_err(format!(
            "{what}: a notification is registered (mq_notify, by pid {notify_pid}): it cannot \
             be registered again"
        )));
    }
    let attr = sys::ipc::mq_getattr(fd.as_fd())
        .map_err(|e| open.inspect_err("mq_getattr", path.clone(), e))?;
    let messages = take_and_give_back(fd.as_fd(), attr)
        .map_err(|e| open.inspect_err("read the messages of the queue", path.clone(), e))?;
    Ok(PosixMqueue {
        name: name.to_string(),
        deleted,
        ino: meta.ino(),
        uid: meta.uid(),
        gid: meta.gid(),
        mode: meta.mode() & 0o7777,
        maxmsg: attr.maxmsg,
        msgsize: attr.msgsize,
        messages,
    })
}

/// NOTIFY_PID of the state line a read(2) of a queue gives ("QSIZE:.. NOTIFY:.. SIGNO:..
/// NOTIFY_PID:P").
fn notify_pid(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<i64> {
    let mut file = fs::File::from(fd.try_clone_to_owned()?);
    let mut text = String::new();
    file.read_to_string(&mut text)?;
    parse_notify_pid(&text)
        .ok_or_else(|| io::Error::other(format!("no NOTIFY_PID in {text:?}")))
}

/// The pid after "NOTIFY_PID:" in `text`.
fn parse_notify_pid(text: &str) -> Option<i64> {
    let rest = text.split("NOTIFY_PID:").nth(1)?;
    rest.split_whitespace().next()?.parse().ok()
}

/// Every message of the queue open at `fd` (O_NONBLOCK), received in order and then sent
/// back in that order: the kernel has no read that leaves them. Whatever was received is
/// sent back even when a receive fails.
fn take_and_give_back(fd: std::os::fd::BorrowedFd<'_>, attr: MqAttr) -> io::Result<Vec<PosixMqMessage>> {
    let mut buf = vec![0u8; attr.msgsize.max(1) as usize];
    let mut taken = Vec::new();
    let end = loop {
        match sys::ipc::mq_receive(fd, &mut buf) {
            Ok((n, priority)) => taken.push(PosixMqMessage {
                priority,
                data: buf[..n].to_vec(),
            }),
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    for m in &taken {
        sys::ipc::mq_send(fd, &m.data, m.priority)
            .map_err(|e| io::Error::new(e.kind(), format!("give a message back: {e}")))?;
    }
    end.map(|()| taken)
}

/// The named queue `q` when it is still at its name as the dump left it: a killing dump
/// leaves a named queue in place (it lives in the filesystem, as a file does), with the
/// messages it read and gave back. The same queue (its inode) with the same owner, mode, sizes
/// and messages (each received and sent back, in order) is taken as it is; `None` where the
/// name is free; another queue there, or this one changed since, fails the restore.
fn dumped_one_still_there(desc: &FileDesc, q: &PosixMqueue) -> Result<Option<OwnedFd>, FileError> {
    if q.deleted {
        return Ok(None);
    }
    let fd = match sys::ipc::mq_open(&q.name, libc::O_RDWR | libc::O_NONBLOCK, 0, None) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
        Err(e) => return Err(restore_err(desc, format!("look for /{}", q.name), e)),
    };
    let err = |what: &'static str| move |e: io::Error| restore_err(desc, format!("{what} /{}", q.name), e);
    let meta = nix::sys::stat::fstat(fd.as_fd()).map_err(|e| err("fstat")(e.into()))?;
    let attr = sys::ipc::mq_getattr(fd.as_fd()).map_err(err("mq_getattr"))?;
    let same_queue = meta.st_ino == q.ino
        && meta.st_uid == q.uid
        && meta.st_gid == q.gid
        && meta.st_mode & 0o7777 == q.mode
        && attr.maxmsg == q.maxmsg
        && attr.msgsize == q.msgsize
        && notify_pid(fd.as_fd()).map_err(err("read the state of"))? == 0;
    if same_queue && take_and_give_back(fd.as_fd(), attr).map_err(err("read the messages of"))? == q.messages {
        return Ok(Some(fd));
    }
    Err(FileError::Invalid {
        id: desc.id,
        detail: format!(
            "POSIX message queue /{} exists already and is not the one dumped as it was (another \
             queue, or the same changed since: its messages, sizes, owner or mode): remove it \
             first",
            q.name
        ),
    })
}

/// Makes queue `q` again (described by `desc`) in the calling process's IPC namespace, with
/// its owner, mode and messages; unlinked at once if it was; or takes the named one the dump
/// left, as it was ([`dumped_one_still_there`]: `false`, not made). The fd is O_RDWR.
pub(super) fn recreate(desc: &FileDesc, q: &PosixMqueue) -> Result<(OwnedFd, bool), FileError> {
    if let Some(fd) = dumped_one_still_there(desc, q)? {
        return Ok((fd, false));
    }
    let attr = MqAttr {
        flags: 0,
        maxmsg: q.maxmsg,
        msgsize: q.msgsize,
        curmsgs: 0,
    };
    let make = |name: &str| {
        sys::ipc::mq_open(
            name,
            libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_NONBLOCK,
            q.mode & 0o777,
            Some(attr),
        )
    };
    // An unlinked queue is made at its old name when that is free (its fd's link then reads
    // "/NAME (deleted)" again), else under a name of cryo's.
    let (name, made) = match make(&q.name) {
        Err(e) if q.deleted && e.raw_os_error() == Some(libc::EEXIST) => {
            let hidden = format!("cryo-{}-{}", std::process::id(), q.ino);
            let made = make(&hidden);
            (hidden, made)
        }
        made => (q.name.clone(), made),
    };
    let fd = made.map_err(|e| restore_err(desc, format!("mq_open /{name}"), e))?;
    let unlink = q.deleted;
    let fill = || -> Result<(), FileError> {
        let file = fs::File::from(fd.try_clone().map_err(|e| restore_err(desc, "dup", e))?);
        // mq_open's mode went through cryo's umask.
        file.set_permissions(fs::Permissions::from_mode(q.mode & 0o7777))
            .map_err(|e| restore_err(desc, "fchmod", e))?;
        crate::task::userns::chown_as_dumped(fd.as_fd(), q.uid, q.gid)
            .map_err(|e| restore_err(desc, "fchown", e.into()))?;
        for m in &q.messages {
            sys::ipc::mq_send(fd.as_fd(), &m.data, m.priority)
                .map_err(|e| restore_err(desc, "mq_send a message back", e))?;
        }
        Ok(())
    };
    let filled = fill();
    if unlink || filled.is_err() {
        sys::ipc::mq_unlink(&name).map_err(|e| restore_err(desc, format!("mq_unlink /{name}"), e))?;
    }
    filled.map(|()| (fd, true))
}

/// Unlinks the named queues of `descs` cryo made (a restore that failed).
pub(super) fn unlink_made(names: &[String]) {
    for name in names {
        if let Err(e) = sys::ipc::mq_unlink(name) {
            tracing::warn!(name, error = %e, "unlink a message queue made by a failed restore");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_notifying_pid_is_read_from_the_state_line() {
        let line = "QSIZE:11         NOTIFY:0     SIGNO:0     NOTIFY_PID:0     \n";
        assert_eq!(parse_notify_pid(line), Some(0));
        let line = "QSIZE:0          NOTIFY:2     SIGNO:10    NOTIFY_PID:4242  \n";
        assert_eq!(parse_notify_pid(line), Some(4242));
        assert_eq!(parse_notify_pid("QSIZE:0"), None);
    }
}
