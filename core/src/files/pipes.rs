//! Pipes and FIFOs.
//!
//! Every pipe end is a description of its own; the ends of one pipe share `Pipe.ino`. The
//! unread data is captured once per pipe, without consuming it: a duplicate of a readable
//! end (pidfd_getfd, or /proc/PID/fd/N reopened O_RDONLY when only a write end is held) is
//! tee(2)d into a private pipe, which is read out. The data is stored on the first
//! description of the pipe; the others carry none.
//!
//! Restore: one pipe(2) per ino (or, for a FIFO, one O_RDWR open of its path, which never
//! blocks), resized to the dumped capacity when the kernel allows, refilled, then an fd per
//! description: the first read (write) description gets the pipe's own read (write) end,
//! others reopen it through /proc/self/fd; the ends nobody held are closed at the end.
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

use cryo_proto::image::{file_desc::Kind, FileDesc, Pipe};
use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, SpliceFFlags};
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
        let pidfd = task_pidfd(fd.open, fd.pidfd)?;
        let mut pipe = dump(fd.open, pidfd, *ino, fifo_path.clone(), with_data)?;
        if *deleted {
            use std::os::unix::fs::MetadataExt;
            fd.open.refuse_on_read_only_mount("deleted FIFO")?;
            let m = fd.meta;
            pipe.deleted = true;
            pipe.mode = m.mode() & 0o7777;
            pipe.uid = m.uid();
            pipe.gid = m.gid();
            (pipe.atime_ns, pipe.mtime_ns) = super::regular::times_ns(m);
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
        format!(
            "{what}  {} bytes queued (capacity {})  flags {flags}",
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
/// (it is stored once per pipe).
fn dump(
    open: &OpenFd,
    pidfd: BorrowedFd<'_>,
    ino: u64,
    fifo_path: String,
    with_data: bool,
) -> Result<Pipe, FileError> {
    let readable = open.flags & libc::O_ACCMODE as u32 != libc::O_WRONLY as u32;
    let src = if readable {
        sys::pidfd::pidfd_getfd(pidfd, open.fd)
            .map_err(|e| open.inspect_err("pidfd_getfd", open.proc_path(), e))?
    } else {
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
    let data = if with_data {
        peek(&src)
            .map_err(|e| open.inspect_err("capture the unread data (tee)", open.proc_path(), e))?
    } else {
        Vec::new()
    };
    debug!(pid = %open.pid, fd = open.fd, ino, capacity, queued = data.len(), fifo = %fifo_path, "pipe");
    Ok(Pipe {
        ino,
        capacity: u32::try_from(capacity).unwrap_or(0),
        data,
        fifo_path,
        ..Default::default()
    })
}

/// The bytes queued in the pipe `src` (a readable end), left in place.
fn peek(src: &OwnedFd) -> io::Result<Vec<u8>> {
    let queued = sys::fd::fionread(src.as_fd())?;
    if queued == 0 {
        return Ok(Vec::new());
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
    let mut data = vec![0u8; teed];
    let mut got = 0;
    while got < teed {
        match nix::unistd::read(&rd, &mut data[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    data.truncate(got);
    Ok(data)
}

/// The descriptions of each anonymous pipe (or deleted FIFO) that has more than one (its
/// read and write ends, opened apart): made together, by one process, so both ends stay one
/// pipe.
fn components(descs: &[FileDesc]) -> Vec<Vec<u32>> {
    let mut by_ino: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
    for d in descs {
        if let Some(Kind::Pipe(p)) = &d.kind {
            if p.fifo_path.is_empty() || p.deleted {
                by_ino.entry(p.ino).or_default().push(d.id);
            }
        }
    }
    by_ino.into_values().filter(|ids| ids.len() > 1).collect()
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

/// The data of a pipe (stored on one of its descriptions) and its largest capacity.
fn data_and_capacity<'a>(group: &[(&FileDesc, &'a Pipe)]) -> (&'a [u8], u32) {
    let data = group
        .iter()
        .map(|(_, p)| p.data.as_slice())
        .find(|d| !d.is_empty())
        .unwrap_or(&[]);
    let capacity = group.iter().map(|(_, p)| p.capacity).max().unwrap_or(0);
    (data, capacity)
}

/// One anonymous pipe: created, resized, refilled, its ends handed out.
fn open_anon(group: &[(&FileDesc, &Pipe)], out: &mut Vec<(u32, OwnedFd)>) -> Result<(), FileError> {
    let first = group[0].0;
    let (rd, wr) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| restore_err(first, "pipe2", e.into()))?;
    let (data, capacity) = data_and_capacity(group);
    resize(first, &wr, capacity, data.len());
    refill(first, &wr, data, capacity)?;
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

/// One FIFO: held open O_RDWR (never blocks), refilled if empty, then opened by path once per
/// description with its own access mode.
fn open_fifo(
    path: &str,
    group: &[(&FileDesc, &Pipe)],
    out: &mut Vec<(u32, OwnedFd)>,
) -> Result<(), FileError> {
    let first = group[0].0;
    let holder = super::open::open_as_dumped(
        first,
        path,
        OFlag::O_RDWR | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
    )
    .map_err(|e| {
        if e == Errno::ENOENT {
            changed(first, "the fifo is gone")
        } else {
            restore_err(first, "open", e.into())
        }
    })?;
    let meta = nix::sys::stat::fstat(&holder).map_err(|e| restore_err(first, "fstat", e.into()))?;
    if meta.st_mode & libc::S_IFMT != libc::S_IFIFO {
        return Err(changed(first, "is no longer a fifo"));
    }
    let (data, capacity) = data_and_capacity(group);
    let queued = sys::fd::fionread(holder.as_fd()).map_err(|e| restore_err(first, "FIONREAD", e))?;
    if queued == 0 {
        resize(first, &holder, capacity, data.len());
        refill(first, &holder, data, capacity)?;
    } else if !data.is_empty() {
        // Someone else kept the fifo open: its buffers (and the data) outlived the dump.
        debug!(
            path,
            queued,
            dumped = data.len(),
            "fifo still holds data, not refilled"
        );
    }
    for &(desc, _) in group {
        let access = OFlag::from_bits_retain((desc.flags & libc::O_ACCMODE as u32) as i32);
        // Non-blocking open: the holder is both a reader and a writer, so it succeeds at once.
        let fd = super::open::open_as_dumped(desc, path, access | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)
            .map_err(|e| restore_err(desc, "open", e.into()))?;
        set_flags(desc, &fd)?;
        out.push((desc.id, fd));
    }
    debug!(
        path,
        descriptions = group.len(),
        queued = data.len(),
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

/// Writes `data` into the pipe through `wr` without ever blocking.
fn refill(desc: &FileDesc, wr: &OwnedFd, data: &[u8], capacity: u32) -> Result<(), FileError> {
    if data.is_empty() {
        return Ok(());
    }
    let old = nix::fcntl::fcntl(wr, FcntlArg::F_GETFL)
        .map_err(|e| restore_err(desc, "F_GETFL", e.into()))?;
    let nonblock = OFlag::from_bits_retain(old) | OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(wr, FcntlArg::F_SETFL(nonblock))
        .map_err(|e| restore_err(desc, "F_SETFL", e.into()))?;
    let mut done = 0;
    while done < data.len() {
        match nix::unistd::write(wr, &data[done..]) {
            Ok(n) => done += n,
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) => {
                let now = nix::fcntl::fcntl(wr, FcntlArg::F_GETPIPE_SZ).unwrap_or(0);
                let max = fs::read_to_string("/proc/sys/fs/pipe-max-size").unwrap_or_default();
                return Err(changed(
                    desc,
                    format!(
                        "{} unread bytes do not fit: the pipe held up to {capacity} bytes, here \
                         it holds {now} (pipe-max-size {}, and no CAP_SYS_RESOURCE to exceed it)",
                        data.len(),
                        max.trim()
                    ),
                ));
            }
            Err(e) => return Err(restore_err(desc, "refill", e.into())),
        }
    }
    nix::fcntl::fcntl(wr, FcntlArg::F_SETFL(OFlag::from_bits_retain(old)))
        .map_err(|e| restore_err(desc, "F_SETFL", e.into()))?;
    Ok(())
}

/// Sets the dumped O_NONBLOCK / O_DIRECT / O_ASYNC of a pipe end, clearing the others.
fn set_flags(desc: &FileDesc, fd: &OwnedFd) -> Result<(), FileError> {
    let old = nix::fcntl::fcntl(fd, FcntlArg::F_GETFL)
        .map_err(|e| restore_err(desc, "F_GETFL", e.into()))?;
    let new = (old as u32 & !SETFL_PIPE) | (desc.flags & SETFL_PIPE);
    if new != old as u32 {
        nix::fcntl::fcntl(fd, FcntlArg::F_SETFL(OFlag::from_bits_retain(new as i32)))
            .map_err(|e| restore_err(desc, "F_SETFL", e.into()))?;
    }
    Ok(())
}

/// True if `path` is a FIFO now.
fn is_fifo(path: &str) -> bool {
    fs::metadata(path).is_ok_and(|m| m.file_type().is_fifo())
}
