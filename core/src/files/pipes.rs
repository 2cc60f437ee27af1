//! Pipes and FIFOs.
//!
//! Every pipe end is a description of its own; the ends of one pipe share `Pipe.ino`. The
//! unread data is captured once per pipe, without consuming it: a duplicate of a readable
//! end (pidfd_getfd, or /proc/PID/fd/N reopened O_RDONLY when only a write end is held) is
//! tee(2)d into a private pipe, whose buffers are read out one by one, each found a packet
//! (pipe(7) packet mode) or a stream. The data is stored on the first description of the
//! pipe; the others carry none.
//!
//! Restore: one pipe(2) per ino (or, for a FIFO, a non-blocking O_RDONLY open of its path,
//! and a writer only when something needs one), resized to the dumped capacity when the
//! kernel allows, refilled packet by packet, then an fd per description: the first read
//! (write) description gets the pipe's own read (write) end, others reopen it through
//! /proc/self/fd; the ends nobody held are closed at the end.
//!
//! A FIFO unlinked while open is made again (mkfifo at its name when free, else at a hidden
//! name beside it), restored as a FIFO, unlinked, then given its owner, mode and times; its
//! descriptions are made together by one process, as an anonymous pipe's are.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use cryo_proto::image::{file_desc::Kind, FileDesc, Pipe, PipePacket};
use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, SpliceFFlags};
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::stat::Mode;
use tracing::debug;

use super::error::changed;
use super::inspect::{InodeKey, OpenFd};
use super::kind::{task_pidfd, Checking, Dumping, FileKind, Opened, Seen, Opening};
use super::{restore_err, FileError};
use crate::sys;

/// Anonymous pipes and FIFOs: one description per end, the unread data once per pipe.
pub(super) struct Pipes;

/// The pipes whose unread data a dump has captured (on their first description).
#[derive(Debug, Default)]
struct Captured(std::collections::HashSet<InodeKey>);

/// The ends of each anonymous pipe the dump holds (by inode), and whether one of them showed
/// the other end open: with no end of that other kind in the dump, a process outside holds
/// it ([`outside_ends`]).
#[derive(Debug, Default)]
struct HeldEnds(BTreeMap<u64, Ends>);

/// What the dump saw of one anonymous pipe's ends.
#[derive(Debug, Clone, Copy)]
struct Ends {
    /// The first holder: (pid, fd).
    first: (i32, i32),
    /// Whether the dump holds a read end, a write end.
    read: bool,
    write: bool,
    /// Whether a read end showed a writer open (no POLLHUP), a write end a reader (no
    /// POLLERR).
    writer_open: bool,
    reader_open: bool,
}

/// The anonymous pipes only one end of which the dump holds while a process outside holds
/// the other (`producer | app`, `app | logger`): (pid, fd, inode, what the outside end does)
/// of the first holder each. The restore makes such a pipe a private one unless given the
/// outside's with `--inherit-fd`.
pub(crate) fn outside_ends(state: &mut super::kind::KindState) -> Vec<(i32, i32, u64, &'static str)> {
    state
        .get::<HeldEnds>()
        .0
        .iter()
        .filter_map(|(&ino, e)| {
            let what = if e.read && !e.write && e.writer_open {
                "writes into it"
            } else if e.write && !e.read && e.reader_open {
                "reads it"
            } else {
                return None;
            };
            Some((e.first.0, e.first.1, ino, what))
        })
        .collect()
}

impl FileKind for Pipes {
    type Record = Pipe;

    fn record(kind: &Kind) -> Option<&Pipe> {
        match kind {
            Kind::Pipe(p) => Some(p),
            _ => None,
        }
    }

    fn claims(&self, fd: &Dumping<'_>) -> bool {
        matches!(fd.seen, Seen::Pipe { .. })
    }

    fn dump(&self, fd: &mut Dumping<'_>) -> Result<Kind, FileError> {
        let Seen::Pipe {
            ino,
            fifo_path,
            deleted,
        } = &fd.seen
        else {
            return Err(fd.open.refuse("not a pipe", false));
        };
        let with_data = fd.state.get::<Captured>().0.insert(fd.key);
        // A FIFO may be watched by path: the capture's tee (and the open of a write end's
        // pipe for reading) must not show in the watchers' queues.
        let _quiet = (!fifo_path.is_empty())
            .then(|| super::quiet_reads::quiet(fd.state, &fd.open.proc_path(), fd.meta));
        let pidfd = task_pidfd(fd.open, fd.pidfd)?;
        let (mut pipe, other_open) = dump(fd.open, pidfd, *ino, fifo_path.clone(), with_data)?;
        if fifo_path.is_empty() {
            let access = fd.open.flags & libc::O_ACCMODE as u32;
            let first = (fd.open.pid.as_raw(), fd.open.fd);
            let e = fd.state.get::<HeldEnds>().0.entry(*ino).or_insert(Ends {
                first,
                read: false,
                write: false,
                writer_open: false,
                reader_open: false,
            });
            match access {
                a if a == libc::O_RDONLY as u32 => {
                    e.read = true;
                    e.writer_open |= other_open;
                }
                a if a == libc::O_WRONLY as u32 => {
                    e.write = true;
                    e.reader_open |= other_open;
                }
                _ => (e.read, e.write) = (true, true),
            }
        }
        if !fifo_path.is_empty() {
            // Its node's: the refill's writes move the modification time (open_fifo).
            (pipe.atime_ns, pipe.mtime_ns) = super::regular::times_ns(fd.meta);
        }
        if *deleted {
            use std::os::unix::fs::MetadataExt;
            fd.open.refuse_on_read_only_mount("deleted FIFO")?;
            let m = fd.meta;
            pipe.deleted = true;
            pipe.mode = m.mode() & 0o7777;
            pipe.uid = m.uid();
            pipe.gid = m.gid();
            let attrs = super::inode_attrs::read(&fd.open.proc_path(), false)
                .map_err(|e| fd.open.dump_err(format!("deleted FIFO {fifo_path}: {e}")))?;
            pipe.attrs = Some(attrs);
        }
        Ok(Kind::Pipe(pipe))
    }

    fn validate(
        &self,
        desc: &FileDesc,
        pipe: &Pipe,
        cx: &mut Checking<'_>,
    ) -> Result<(), FileError> {
        // On a mount of the holder's own namespace: found when the holder opens it there.
        let here = !pipe.deleted && !pipe.in_mount_namespace && !desc.parent_mount_namespace;
        if !pipe.fifo_path.is_empty() && here && !is_fifo(&pipe.fifo_path) {
            return Err(changed(desc, "the fifo is gone or is no longer a fifo"));
        }
        check_packets(desc, pipe)?;
        if !pipe.data.is_empty() {
            let key = format!("pipe data {} {}", pipe.ino, pipe.fifo_path);
            if let Some(other) = cx.first(key, desc.id) {
                return Err(FileError::Invalid {
                    id: desc.id,
                    detail: format!("file {other} holds the unread data of the same pipe too"),
                });
            }
        }
        Ok(())
    }

    fn open(
        &self,
        _desc: &FileDesc,
        _pipe: &Pipe,
        _cx: &mut Opening<'_>,
    ) -> Result<Opened, FileError> {
        Ok(Opened::Together)
    }

    fn open_together(&self, descs: &[&FileDesc], cx: &mut Opening<'_>) -> Result<(), FileError> {
        let pipes: Vec<(&FileDesc, &Pipe)> = descs
            .iter()
            .filter_map(|d| Some((*d, d.kind.as_ref().and_then(Self::record)?)))
            .collect();
        cx.hold_opened(&pipes, open_all(&pipes)?)
    }

    fn hand_down(&self) -> bool {
        true
    }

    fn made_together(&self, descs: &[FileDesc]) -> Vec<Vec<u32>> {
        components(descs)
    }

    fn describe(&self, _desc: &FileDesc, p: &Pipe) -> String {
        if p.fifo_path.is_empty() {
            format!("pipe:[{}]", p.ino)
        } else {
            format!("fifo {}", p.fifo_path)
        }
    }

    fn show(&self, _desc: &FileDesc, p: &Pipe, flags: &str) -> String {
        let what = if p.fifo_path.is_empty() {
            format!("pipe:[{}]", p.ino)
        } else {
            format!("fifo {} (pipe:[{}])", p.fifo_path, p.ino)
        };
        let packets = match p.packets.len() {
            0 => String::new(),
            n => format!(" in {n} packet(s) and stream"),
        };
        format!(
            "{what}  {} bytes queued{packets} (capacity {})  flags {flags}",
            p.data.len(),
            p.capacity
        )
    }

    fn name(&self, _desc: &FileDesc, p: &Pipe) -> String {
        format!("pipe:[{}]", p.ino)
    }
}

/// Flags F_SETFL can change on a pipe end, and that matter.
const SETFL_PIPE: u32 = (libc::O_NONBLOCK | libc::O_DIRECT | libc::O_ASYNC) as u32;

/// Captures capacity and unread data of the pipe behind `open`; the data only if `with_data`
/// (it is stored once per pipe). With it, for an anonymous pipe's read (write) end, whether a
/// writer (reader) is open: poll(2) of the end without POLLHUP (POLLERR).
fn dump(
    open: &OpenFd,
    pidfd: BorrowedFd<'_>,
    ino: u64,
    fifo_path: String,
    with_data: bool,
) -> Result<(Pipe, bool), FileError> {
    let readable = open.flags & libc::O_ACCMODE as u32 != libc::O_WRONLY as u32;
    let anonymous = fifo_path.is_empty();
    let mut other_open = false;
    let src = if readable {
        sys::pidfd::pidfd_getfd(pidfd, open.fd)
            .map_err(|e| open.inspect_err("pidfd_getfd", open.proc_path(), e))?
    } else {
        if anonymous {
            // Before the reader opened below is one.
            let end = sys::pidfd::pidfd_getfd(pidfd, open.fd)
                .map_err(|e| open.inspect_err("pidfd_getfd", open.proc_path(), e))?;
            let mut fds = [PollFd::new(end.as_fd(), PollFlags::POLLOUT)];
            nix::poll::poll(&mut fds, PollTimeout::ZERO)
                .map_err(|e| open.inspect_err("poll", open.proc_path(), e.into()))?;
            other_open = !fds[0]
                .revents()
                .is_some_and(|r| r.contains(PollFlags::POLLERR));
        }
        // Only a write end: a read end of the same pipe, opened anew, sees the same buffers.
        nix::fcntl::open(
            &open.proc_path(),
            OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| open.inspect_err("open for reading", open.proc_path(), e.into()))?
    };
    let capacity = nix::fcntl::fcntl(&src, FcntlArg::F_GETPIPE_SZ)
        .map_err(|e| open.inspect_err("F_GETPIPE_SZ", open.proc_path(), e.into()))?;
    let (data, packets) = if with_data {
        peek(&src)
            .map_err(|e| open.inspect_err("capture the unread data (tee)", open.proc_path(), e))?
    } else {
        Default::default()
    };
    // Only a FIFO's read end opened O_NONBLOCK while no writer was can be without POLLHUP once
    // no writer is open; an anonymous pipe's never is, an O_RDWR end is a writer itself.
    let read_only = open.flags & libc::O_ACCMODE as u32 == libc::O_RDONLY as u32;
    let no_hangup = read_only
        && !hangup(&src).map_err(|e| open.inspect_err("poll", open.proc_path(), e))?;
    if anonymous && read_only {
        other_open = no_hangup;
    }
    let no_hangup = no_hangup && !anonymous;
    debug!(pid = %open.pid, fd = open.fd, ino, capacity, queued = data.len(), packets = packets.len(), no_hangup, fifo = %fifo_path, "pipe");
    Ok((
        Pipe {
            ino,
            capacity: u32::try_from(capacity).unwrap_or(0),
            data,
            fifo_path,
            packets,
            no_hangup,
            ..Default::default()
        },
        other_open,
    ))
}

/// True if poll(2) shows POLLHUP on `fd` (a duplicate of a read end: the same description).
fn hangup(fd: &OwnedFd) -> io::Result<bool> {
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    nix::poll::poll(&mut fds, PollTimeout::ZERO)?;
    Ok(fds[0]
        .revents()
        .is_some_and(|r| r.contains(PollFlags::POLLHUP)))
}

/// The bytes queued in the pipe `src` (a readable end), left in place, and the packets among
/// them. A tee(2) copy holds the same buffers, each with its packet flag (tee drops only the
/// flags that let a write append to a buffer's page); each buffer of the copy is then moved
/// alone into a pipe of one slot (splice moves a whole buffer, flags and all) and read with
/// one byte written behind it in a second slot: the read of a packet stops at its end, that
/// of a stream goes on into the byte.
fn peek(src: &OwnedFd) -> io::Result<(Vec<u8>, Vec<PipePacket>)> {
    let queued = sys::fd::fionread(src.as_fd())?;
    if queued == 0 {
        return Ok(Default::default());
    }
    let (rd, wr) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
    // Room for every buffer of the source (best effort: limited by pipe-max-size).
    let want = nix::fcntl::fcntl(src, FcntlArg::F_GETPIPE_SZ)?;
    if let Err(e) = nix::fcntl::fcntl(&wr, FcntlArg::F_SETPIPE_SZ(want)) {
        debug!(capacity = want, error = %e, "capture pipe not resized");
    }
    // tee always starts at the head of the source: one call must take everything.
    let teed = nix::fcntl::tee(src, &wr, queued, SpliceFFlags::SPLICE_F_NONBLOCK)?;
    if teed < queued {
        return Err(io::Error::other(format!(
            "tee duplicated {teed} of {queued} queued bytes"
        )));
    }
    drop(wr);
    let (one_rd, one_wr) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
    let mut data = Vec::with_capacity(teed);
    let mut packets = Vec::new();
    let mut buf = Vec::new();
    while data.len() < teed {
        // The smallest size is one page, one slot; the pipe is empty here.
        let page = nix::fcntl::fcntl(&one_wr, FcntlArg::F_SETPIPE_SZ(1))?;
        let len = nix::fcntl::splice(
            &rd,
            None,
            &one_wr,
            None,
            teed - data.len(),
            SpliceFFlags::SPLICE_F_NONBLOCK,
        )?;
        if len == 0 {
            break;
        }
        nix::fcntl::fcntl(&one_wr, FcntlArg::F_SETPIPE_SZ(2 * page))?;
        if nix::unistd::write(&one_wr, b"-")? != 1 {
            return Err(io::Error::other("the byte behind a buffer was not written"));
        }
        buf.resize(len + 1, 0);
        let got = uninterrupted(|| nix::unistd::read(&one_rd, &mut buf))?;
        let packet = if got == len {
            // The byte behind stayed: the pipe must be empty for the next buffer.
            uninterrupted(|| nix::unistd::read(&one_rd, &mut buf[len..]))?;
            true
        } else if got == len + 1 {
            false
        } else {
            return Err(io::Error::other(format!(
                "a queued buffer of {len} bytes read back as {got}"
            )));
        };
        if packet {
            packets.push(PipePacket {
                offset: data.len() as u64,
                len: len as u32,
            });
        }
        data.extend_from_slice(&buf[..len]);
    }
    if data.len() < teed {
        return Err(io::Error::other(format!(
            "read {} of {teed} duplicated bytes",
            data.len()
        )));
    }
    Ok((data, packets))
}

/// `call` (one read(2) or write(2)), made again when interrupted (EINTR).
fn uninterrupted(mut call: impl FnMut() -> nix::Result<usize>) -> nix::Result<usize> {
    loop {
        match call() {
            Err(Errno::EINTR) => continue,
            r => return r,
        }
    }
}

/// The packets of `pipe` must lie in its data, in order, apart, none empty.
fn check_packets(desc: &FileDesc, pipe: &Pipe) -> Result<(), FileError> {
    let mut end = 0u64;
    for p in &pipe.packets {
        let next = p.offset.checked_add(u64::from(p.len));
        if p.len == 0 || p.offset < end || next.is_none_or(|n| n > pipe.data.len() as u64) {
            return Err(FileError::Invalid {
                id: desc.id,
                detail: format!(
                    "pipe packet of {} bytes at {} out of order or outside its {} bytes of data",
                    p.len,
                    p.offset,
                    pipe.data.len()
                ),
            });
        }
        end = next.unwrap_or(end);
    }
    Ok(())
}

/// The descriptions of each anonymous pipe (or deleted FIFO) that has more than one (its
/// read and write ends, opened apart): made together, by one process, so both ends stay one
/// pipe. Likewise those of a FIFO with a read end dumped without POLLHUP: one process orders
/// the opens (see [`open_fifo`]), so no writer another process opens meanwhile gives that end
/// a writer it never saw. FIFO ends opened in a mount namespace of their own are left out.
fn components(descs: &[FileDesc]) -> Vec<Vec<u32>> {
    let mut by_pipe: BTreeMap<(u64, &str), (Vec<u32>, bool)> = BTreeMap::new();
    for d in descs {
        if let Some(Kind::Pipe(p)) = &d.kind {
            let named = !p.fifo_path.is_empty() && !p.deleted;
            if named && (p.in_mount_namespace || d.parent_mount_namespace) {
                continue;
            }
            let path = if named { p.fifo_path.as_str() } else { "" };
            let (ids, together) = by_pipe.entry((p.ino, path)).or_default();
            ids.push(d.id);
            *together |= !named || p.no_hangup;
        }
    }
    by_pipe
        .into_values()
        .filter(|(ids, together)| *together && ids.len() > 1)
        .map(|(ids, _)| ids)
        .collect()
}

/// Opens every pipe description of one task: `(desc, pipe)` pairs. Returns an fd per id.
fn open_all(pipes: &[(&FileDesc, &Pipe)]) -> Result<Vec<(u32, OwnedFd)>, FileError> {
    let mut anon: BTreeMap<u64, Vec<(&FileDesc, &Pipe)>> = BTreeMap::new();
    let mut fifos: BTreeMap<&str, Vec<(&FileDesc, &Pipe)>> = BTreeMap::new();
    let mut deleted: BTreeMap<u64, Vec<(&FileDesc, &Pipe)>> = BTreeMap::new();
    for &(desc, pipe) in pipes {
        if pipe.deleted {
            deleted.entry(pipe.ino).or_default().push((desc, pipe));
        } else if pipe.fifo_path.is_empty() {
            anon.entry(pipe.ino).or_default().push((desc, pipe));
        } else {
            fifos
                .entry(pipe.fifo_path.as_str())
                .or_default()
                .push((desc, pipe));
        }
    }
    let mut out = Vec::new();
    for group in anon.values() {
        open_anon(group, &mut out)?;
    }
    for (path, group) in &fifos {
        open_fifo(path, group, &mut out)?;
    }
    for group in deleted.values() {
        open_deleted_fifo(group, &mut out)?;
    }
    Ok(out)
}

/// One FIFO unlinked while open: made again (at its name if free, else at a hidden name
/// beside it), restored as a FIFO, unlinked, then given its owner, mode and times.
fn open_deleted_fifo(
    group: &[(&FileDesc, &Pipe)],
    out: &mut Vec<(u32, OwnedFd)>,
) -> Result<(), FileError> {
    let (first, pipe) = group[0];
    let path = make_fifo(Path::new(&pipe.fifo_path), (pipe.uid, pipe.gid))
        .map_err(|e| restore_err(first, "make the deleted fifo again", e))?;
    let from = out.len();
    let opened = open_fifo(&path.to_string_lossy(), group, out);
    // Unlinked whatever happened: it never outlives the restore.
    let _ = fs::remove_file(&path);
    opened?;
    // After the refill, which moved the modification time.
    super::regular::set_owner_mode_times(
        &out[from].1,
        pipe.mode,
        pipe.uid,
        pipe.gid,
        pipe.atime_ns,
        pipe.mtime_ns,
    )
    .map_err(|e| {
        restore_err(
            first,
            "give the deleted fifo made again its owner, mode and times",
            e.into(),
        )
    })?;
    if let Some(attrs) = &pipe.attrs {
        super::inode_attrs::give_xattrs(out[from].1.as_fd(), attrs)
            .map_err(|e| restore_err(first, "give the deleted fifo made again its extended attributes", e))?;
    }
    debug!(path = %pipe.fifo_path, at = %path.display(), "deleted fifo made again");
    Ok(())
}

/// A new FIFO for a deleted one named `original`, to be owned by `owner` (regular.rs:
/// make_beside).
fn make_fifo(original: &Path, owner: (u32, u32)) -> io::Result<PathBuf> {
    super::regular::make_beside(original, owner, |path| {
        nix::unistd::mkfifo(path, Mode::from_bits_truncate(0o600))
    })
}

/// The data of a pipe and its packets (stored on one of its descriptions), and its largest
/// capacity.
fn queued_and_capacity<'a>(group: &[(&FileDesc, &'a Pipe)]) -> (Queued<'a>, u32) {
    let queued = group
        .iter()
        .find(|(_, p)| !p.data.is_empty())
        .map(|(_, p)| Queued {
            data: &p.data,
            packets: &p.packets,
        })
        .unwrap_or_default();
    let capacity = group.iter().map(|(_, p)| p.capacity).max().unwrap_or(0);
    (queued, capacity)
}

/// A pipe's unread data as dumped.
#[derive(Debug, Default, Clone, Copy)]
struct Queued<'a> {
    data: &'a [u8],
    /// The packets among `data`, in order.
    packets: &'a [PipePacket],
}

impl<'a> Queued<'a> {
    /// `data` cut into stream runs and packets, in order: `(bytes, packet)`.
    fn runs(&self) -> Vec<(&'a [u8], bool)> {
        let mut runs = Vec::new();
        let mut at = 0;
        for p in self.packets {
            let (start, end) = (p.offset as usize, p.offset as usize + p.len as usize);
            if start > at {
                runs.push((&self.data[at..start], false));
            }
            runs.push((&self.data[start..end], true));
            at = end;
        }
        if at < self.data.len() {
            runs.push((&self.data[at..], false));
        }
        runs
    }
}

/// One anonymous pipe: created, resized, refilled, its ends handed out.
fn open_anon(group: &[(&FileDesc, &Pipe)], out: &mut Vec<(u32, OwnedFd)>) -> Result<(), FileError> {
    let first = group[0].0;
    let (rd, wr) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| restore_err(first, "pipe2", e.into()))?;
    let (queued, capacity) = queued_and_capacity(group);
    let data = queued.data;
    resize(first, &wr, capacity, data.len());
    refill(first, &wr, queued, capacity)?;
    let (mut rd_used, mut wr_used) = (false, false);
    for &(desc, _) in group {
        let fd = match desc.flags & libc::O_ACCMODE as u32 {
            m if m == libc::O_RDONLY as u32 && !rd_used => {
                rd_used = true;
                rd.try_clone().map_err(|e| restore_err(desc, "dup", e))?
            }
            m if m == libc::O_WRONLY as u32 && !wr_used => {
                wr_used = true;
                wr.try_clone().map_err(|e| restore_err(desc, "dup", e))?
            }
            // A second description of one end, or an O_RDWR one: a new open of the pipe.
            m => {
                let access = OFlag::from_bits_retain(m as i32);
                let end = if m == libc::O_WRONLY as u32 { &wr } else { &rd };
                let path = PathBuf::from(format!("/proc/self/fd/{}", end.as_raw_fd()));
                nix::fcntl::open(&path, access | OFlag::O_CLOEXEC, Mode::empty())
                    .map_err(|e| restore_err(desc, "reopen the pipe", e.into()))?
            }
        };
        set_flags(desc, &fd)?;
        out.push((desc.id, fd));
    }
    debug!(
        ino = group[0].1.ino,
        ends = group.len(),
        queued = data.len(),
        "pipe restored"
    );
    // rd and wr are dropped here: an end the task did not hold is closed after the refill.
    Ok(())
}

/// One FIFO: held open by a reader (a non-blocking O_RDONLY open, which neither blocks nor
/// counts as a writer), resized and refilled through a writer opened for that if it is empty,
/// then opened by path once per description with its own access mode. A read end dumped
/// without POLLHUP is opened last, once no writer but the dump's own is open: a non-blocking
/// reader opened with no writer shows no POLLHUP until a writer comes (the kernel keeps the
/// writer count it saw, f_pipe); any other read end is opened while a writer is, as it shows
/// POLLHUP once the writers are gone.
fn open_fifo(
    path: &str,
    group: &[(&FileDesc, &Pipe)],
    out: &mut Vec<(u32, OwnedFd)>,
) -> Result<(), FileError> {
    let first = group[0].0;
    let open = |desc: &FileDesc, access: OFlag| {
        super::open::open_as_dumped(desc, path, access | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)
    };
    let keeper = open(first, OFlag::O_RDONLY).map_err(|e| {
        if e == Errno::ENOENT {
            changed(first, "the fifo is gone")
        } else {
            restore_err(first, "open", e.into())
        }
    })?;
    let meta = nix::sys::stat::fstat(&keeper).map_err(|e| restore_err(first, "fstat", e.into()))?;
    if meta.st_mode & libc::S_IFMT != libc::S_IFIFO {
        return Err(changed(first, "is no longer a fifo"));
    }
    let (queued, capacity) = queued_and_capacity(group);
    let data = queued.data;
    let access = |desc: &FileDesc| desc.flags & libc::O_ACCMODE as u32;
    let last = |desc: &FileDesc, pipe: &Pipe| {
        pipe.no_hangup && access(desc) == libc::O_RDONLY as u32
    };
    let now = sys::fd::fionread(keeper.as_fd()).map_err(|e| restore_err(first, "FIONREAD", e))?;
    let refilled = now == 0 && !data.is_empty();
    let writer = if refilled || group.iter().any(|&(d, p)| access(d) == libc::O_RDONLY as u32 && !last(d, p)) {
        // The keeper reads: a non-blocking writer opens at once.
        Some(open(first, OFlag::O_WRONLY).map_err(|e| restore_err(first, "open for writing", e.into()))?)
    } else {
        None
    };
    if now == 0 {
        resize(first, &keeper, capacity, data.len());
    }
    if let (true, Some(wr)) = (refilled, &writer) {
        refill(first, wr, queued, capacity)?;
        // The writes moved the node's modification time to now: put back what the dump read
        // (an image of before 2026-12-07 has none). Its change time stays moved: no call sets
        // it.
        let pipe = group[0].1;
        if pipe.mtime_ns != 0 {
            let time = super::regular::timespec_of_ns;
            nix::sys::stat::futimens(&keeper, &time(pipe.atime_ns), &time(pipe.mtime_ns))
                .map_err(|e| restore_err(first, "give the fifo its times back", e.into()))?;
        }
    } else if now != 0 && !data.is_empty() {
        // Someone else kept the fifo open: its buffers (and the data) outlived the dump.
        debug!(
            path,
            queued = now,
            dumped = data.len(),
            "fifo still holds data, not refilled"
        );
    }
    let (early, late): (Vec<_>, Vec<_>) = group.iter().partition(|&&(d, p)| !last(d, p));
    for &(desc, _) in &early {
        let fd = open(desc, OFlag::from_bits_retain(access(desc) as i32))
            .map_err(|e| restore_err(desc, "open", e.into()))?;
        set_flags(desc, &fd)?;
        out.push((desc.id, fd));
    }
    drop(writer);
    for &(desc, _) in &late {
        let fd = open(desc, OFlag::O_RDONLY).map_err(|e| restore_err(desc, "open", e.into()))?;
        set_flags(desc, &fd)?;
        out.push((desc.id, fd));
    }
    debug!(
        path,
        descriptions = group.len(),
        queued = data.len(),
        packets = queued.packets.len(),
        without_hangup = late.len(),
        "fifo restored"
    );
    Ok(())
}

/// F_SETPIPE_SZ to the dumped capacity, best effort (without CAP_SYS_RESOURCE nothing above
/// /proc/sys/fs/pipe-max-size); the refill tells whether the data fits.
fn resize(desc: &FileDesc, fd: &OwnedFd, capacity: u32, queued: usize) {
    let Ok(capacity) = i32::try_from(capacity) else {
        return;
    };
    if capacity == 0 {
        return;
    }
    match nix::fcntl::fcntl(fd, FcntlArg::F_GETPIPE_SZ) {
        Ok(now) if now == capacity => return,
        _ => {}
    }
    if let Err(e) = nix::fcntl::fcntl(fd, FcntlArg::F_SETPIPE_SZ(capacity)) {
        debug!(id = desc.id, capacity, queued, error = %e, "pipe capacity not restored");
    }
}

/// Writes the unread data into the pipe through `wr` without ever blocking: each packet by a
/// write(2) of its own with the end in packet mode (O_DIRECT), the stream between them
/// without. A stream followed by a packet goes in by tee(2) from a staging pipe: the kernel
/// appends a write (packet or not) to the page of a stream buffer written before it, never to
/// a buffer tee made.
fn refill(desc: &FileDesc, wr: &OwnedFd, queued: Queued<'_>, capacity: u32) -> Result<(), FileError> {
    let data = queued.data;
    if data.is_empty() {
        return Ok(());
    }
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .unwrap_or(4096) as usize;
    if let Some(p) = queued.packets.iter().find(|p| p.len as usize > page) {
        return Err(changed(
            desc,
            format!(
                "a queued packet of {} bytes is larger than a page here ({page}): a write \
                 would queue it as several",
                p.len
            ),
        ));
    }
    let old = nix::fcntl::fcntl(wr, FcntlArg::F_GETFL)
        .map_err(|e| restore_err(desc, "F_GETFL", e.into()))?;
    let stream = (OFlag::from_bits_retain(old) | OFlag::O_NONBLOCK) - OFlag::O_DIRECT;
    let setfl = |flags: OFlag| {
        nix::fcntl::fcntl(wr, FcntlArg::F_SETFL(flags))
            .map(drop)
            .map_err(|e| restore_err(desc, "F_SETFL", e.into()))
    };
    let full = || {
        let now = nix::fcntl::fcntl(wr, FcntlArg::F_GETPIPE_SZ).unwrap_or(0);
        let max = fs::read_to_string("/proc/sys/fs/pipe-max-size").unwrap_or_default();
        changed(
            desc,
            format!(
                "{} unread bytes do not fit: the pipe held up to {capacity} bytes, here it \
                 holds {now} (pipe-max-size {}, and no CAP_SYS_RESOURCE to exceed it)",
                data.len(),
                max.trim()
            ),
        )
    };
    let runs = queued.runs();
    let mut mode = None;
    for (i, &(bytes, packet)) in runs.iter().enumerate() {
        let want = if packet { stream | OFlag::O_DIRECT } else { stream };
        if mode != Some(want) {
            setfl(want)?;
            mode = Some(want);
        }
        let written = if packet {
            // At most a page: one write, one buffer.
            uninterrupted(|| nix::unistd::write(wr, bytes))
        } else if runs.get(i + 1).is_some_and(|&(_, next)| next) {
            tee_in(wr, bytes)
        } else {
            write_all(wr, bytes)
        };
        match written {
            Ok(n) if n == bytes.len() => {}
            Ok(_) | Err(Errno::EAGAIN) => return Err(full()),
            Err(e) => return Err(restore_err(desc, "refill", e.into())),
        }
    }
    setfl(OFlag::from_bits_retain(old))
}


/// Writes `bytes` to the non-blocking `wr`; EAGAIN when full.
fn write_all(wr: &OwnedFd, bytes: &[u8]) -> nix::Result<usize> {
    let mut done = 0;
    while done < bytes.len() {
        done += uninterrupted(|| nix::unistd::write(wr, &bytes[done..]))?;
    }
    Ok(done)
}

/// Puts `bytes` into the pipe of `wr` as a stream no later write appends to: written into a
/// staging pipe, tee(2)d from it (tee clears the buffers' merge flag), drained from it, as
/// often as the staging pipe's room needs. EAGAIN when the pipe is full.
fn tee_in(wr: &OwnedFd, bytes: &[u8]) -> nix::Result<usize> {
    let (st_rd, st_wr) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
    let mut scratch = vec![0u8; bytes.len().min(1 << 16)];
    let mut done = 0;
    while done < bytes.len() {
        let n = uninterrupted(|| nix::unistd::write(&st_wr, &bytes[done..]))?;
        let teed = nix::fcntl::tee(&st_rd, wr, n, SpliceFFlags::SPLICE_F_NONBLOCK)?;
        if teed < n {
            return Err(Errno::EAGAIN);
        }
        let mut drained = 0;
        while drained < n {
            let want = (n - drained).min(scratch.len());
            match nix::unistd::read(&st_rd, &mut scratch[..want]) {
                Ok(0) => return Err(Errno::EIO),
                Ok(k) => drained += k,
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e),
            }
        }
        done += n;
    }
    Ok(done)
}

/// Sets the dumped O_NONBLOCK / O_DIRECT / O_ASYNC of a pipe end, clearing the others.
fn set_flags(desc: &FileDesc, fd: &OwnedFd) -> Result<(), FileError> {
    super::open::set_status_flags(desc, fd, SETFL_PIPE)
}

/// True if `path` is a FIFO now.
fn is_fifo(path: &str) -> bool {
    fs::metadata(path).is_ok_and(|m| m.file_type().is_fifo())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(id: u32, flags: i32, pipe: Pipe) -> FileDesc {
        FileDesc {
            id,
            flags: flags as u32,
            kind: Some(Kind::Pipe(pipe)),
            ..Default::default()
        }
    }

    #[test]
    fn queued_data_is_cut_into_streams_and_packets_in_order() {
        let data: Vec<u8> = (0..10).collect();
        let packets = [
            PipePacket { offset: 0, len: 2 },
            PipePacket { offset: 5, len: 1 },
            PipePacket { offset: 6, len: 2 },
        ];
        let q = Queued {
            data: &data,
            packets: &packets,
        };
        let runs: Vec<(Vec<u8>, bool)> = q.runs().into_iter().map(|(b, p)| (b.to_vec(), p)).collect();
        assert_eq!(
            runs,
            vec![
                (vec![0, 1], true),
                (vec![2, 3, 4], false),
                (vec![5], true),
                (vec![6, 7], true),
                (vec![8, 9], false),
            ]
        );
    }

    #[test]
    fn packets_outside_the_data_or_out_of_order_are_invalid() {
        let pipe = |packets: Vec<(u64, u32)>| Pipe {
            data: vec![0; 8],
            packets: packets.into_iter().map(|(offset, len)| PipePacket { offset, len }).collect(),
            ..Default::default()
        };
        let d = FileDesc::default();
        assert!(check_packets(&d, &pipe(vec![(0, 3), (3, 5)])).is_ok());
        for bad in [vec![(0, 9)], vec![(2, 2), (1, 1)], vec![(0, 0)], vec![(u64::MAX, 2)]] {
            assert!(check_packets(&d, &pipe(bad.clone())).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_ends_of_a_fifo_with_an_end_without_pollhup_are_made_together() {
        let fifo = |path: &str, no_hangup: bool| Pipe {
            ino: 9,
            fifo_path: path.into(),
            no_hangup,
            ..Default::default()
        };
        let descs = [
            desc(1, libc::O_RDONLY, fifo("/a", true)),
            desc(2, libc::O_RDONLY, fifo("/a", false)),
            desc(3, libc::O_RDONLY, fifo("/b", false)),
            desc(4, libc::O_WRONLY, fifo("/b", false)),
            desc(5, libc::O_RDONLY, Pipe { ino: 7, ..Default::default() }),
            desc(6, libc::O_WRONLY, Pipe { ino: 7, ..Default::default() }),
        ];
        assert_eq!(components(&descs), vec![vec![5, 6], vec![1, 2]]);
    }
}
