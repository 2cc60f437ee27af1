//! Telling restored processes what the restore could not bring back: the notification
//! channel of the cryo-resume library, and `--notify-signal`.
//!
//! The channel convention (format version 1, documented in resume/README.md):
//!
//! ```text
//! application (cryo-resume)                     engine (this module)
//! fd N  pipe, opened O_RDWR|O_NONBLOCK          dump:    find_listener(pid): readlink
//! fd M  memfd "cryo-resume:v1:fd=N", empty               /proc/PID/fd/*, the marker M names N,
//!       (or: fd N is a FIFO named cryo-resume*)          N is a pipe -> ListenerRef { fd: N }
//!                                                        (stored with the image)
//!       fds come back at their numbers          restore: notify(pid, &ListenerRef, &record):
//!       with the pipe's unread lines                     open /proc/PID/fd/N O_WRONLY|O_NONBLOCK
//! poll(N) -> POLLIN, read one JSON line   <------        write one JSON line, whole or nothing
//! ```
//!
//! The record, its wire format and the channel's naming convention are cryo-resume's (the
//! one definition: the library does not depend on the engine, the engine uses the library's
//! types); this module does the /proc work around them. `tests/tests/notify.rs` checks that a
//! record written here is read back by a process linking cryo-resume.

use std::fs;
use std::io;
use std::os::fd::{AsFd, OwnedFd, RawFd};

use cryo_resume::{is_fifo_channel_path, marker_channel};
use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag};
use nix::sys::stat::{Mode, SFlag};
use nix::unistd::Pid;
use tracing::debug;

pub use cryo_resume::{BrokenConnection, BrokenReason, ListenerRef, ResumeEvent};

/// Why a channel could not be found or written, or a signal not queued.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// /proc/PID/fd cannot be listed.
    #[error("pid {pid}: list /proc/{pid}/fd: {source}")]
    ListFds {
        /// The process.
        pid: Pid,
        /// The kernel's answer.
        source: io::Error,
    },
    /// The channel fd cannot be opened for writing.
    #[error("pid {pid}: open notification channel fd {fd} for writing: {source}")]
    Open {
        /// The process.
        pid: Pid,
        /// The channel fd.
        fd: RawFd,
        /// The kernel's answer.
        source: io::Error,
    },
    /// The fd recorded at dump time is not the channel any more.
    #[error("pid {pid}: fd {fd} is not a cryo-resume channel: {detail}")]
    NotAChannel {
        /// The process.
        pid: Pid,
        /// The fd recorded at dump time.
        fd: RawFd,
        /// What was found instead.
        detail: String,
    },
    /// The application did not read earlier records: the new one does not fit.
    #[error("pid {pid}: notification channel fd {fd} is full: {need} bytes to write, {free} free")]
    Full {
        /// The process.
        pid: Pid,
        /// The channel fd.
        fd: RawFd,
        /// The record's length.
        need: usize,
        /// Room left in the pipe.
        free: usize,
    },
    /// Writing the record failed.
    #[error("pid {pid}: write to notification channel fd {fd}: {source}")]
    Write {
        /// The process.
        pid: Pid,
        /// The channel fd.
        fd: RawFd,
        /// The kernel's answer.
        source: io::Error,
    },
    /// The record cannot be encoded.
    #[error("pid {pid}: encode the resume record: {source}")]
    Encode {
        /// The process.
        pid: Pid,
        /// What serde_json said.
        source: serde_json::Error,
    },
    /// sigqueue failed.
    #[error("pid {pid}: queue signal {signo}: {source}")]
    Signal {
        /// The process.
        pid: Pid,
        /// The signal.
        signo: i32,
        /// The kernel's answer.
        source: io::Error,
    },
}

impl NotifyError {
    /// The process the error is about.
    pub fn pid(&self) -> Pid {
        match self {
            Self::ListFds { pid, .. }
            | Self::Open { pid, .. }
            | Self::NotAChannel { pid, .. }
            | Self::Full { pid, .. }
            | Self::Write { pid, .. }
            | Self::Encode { pid, .. }
            | Self::Signal { pid, .. } => *pid,
        }
    }
}

impl From<NotifyError> for crate::Error {
    fn from(e: NotifyError) -> Self {
        crate::Error::Target {
            pid: e.pid(),
            detail: e.to_string(),
        }
    }
}

/// True if fd `fd` of `pid` is a pipe or a FIFO (stat through /proc follows to the inode).
fn is_pipe(pid: Pid, fd: RawFd) -> bool {
    nix::sys::stat::stat(format!("/proc/{pid}/fd/{fd}").as_str()).is_ok_and(|st| {
        SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFIFO
    })
}

/// Whether fd `fd` of `pid` is open for reading (fdinfo `flags:`, octal).
fn is_readable(pid: Pid, fd: RawFd) -> bool {
    let Ok(info) = fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")) else {
        return false;
    };
    info.lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .and_then(|f| u32::from_str_radix(f.trim(), 8).ok())
        .is_some_and(|flags| flags & libc::O_ACCMODE as u32 != libc::O_WRONLY as u32)
}

#[cfg(any(test, feature = "internals"))]
/// Every notification channel of `pid`, lowest fd first. Reads /proc only: call it at dump
/// time, on the frozen process.
pub fn find_listeners(pid: Pid) -> Result<Vec<ListenerRef>, NotifyError> {
    find_listeners_except(pid, |_| false)
}

/// As [`find_listeners`], not looking at the fds `known_other` says are something else (the
/// sockets a dump has identified already: a server's 10,000 connections are 10,000 readlinks
/// saved).
pub(crate) fn find_listeners_except(
    pid: Pid,
    known_other: impl Fn(RawFd) -> bool,
) -> Result<Vec<ListenerRef>, NotifyError> {
    let dir = format!("/proc/{pid}/fd");
    let list = |source| NotifyError::ListFds { pid, source };
    let mut found = Vec::new();
    for entry in fs::read_dir(&dir).map_err(list)? {
        let entry = entry.map_err(list)?;
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<RawFd>().ok())
        else {
            continue;
        };
        if known_other(fd) {
            continue;
        }
        // An fd closed since the listing is simply not a channel.
        let Ok(link) = fs::read_link(entry.path()) else {
            continue;
        };
        let link = link.to_string_lossy();
        if let Some(target) = marker_channel(&link) {
            if is_pipe(pid, target) && is_readable(pid, target) {
                found.push(ListenerRef {
                    fd: target,
                    marker_fd: Some(fd),
                });
            } else {
                debug!(%pid, marker = fd, target, "cryo-resume marker names no readable pipe");
            }
        } else if is_fifo_channel_path(&link) && is_pipe(pid, fd) && is_readable(pid, fd) {
            found.push(ListenerRef {
                fd,
                marker_fd: None,
            });
        }
    }
    found.sort_by_key(|l| l.fd);
    found.dedup_by_key(|l| l.fd);
    Ok(found)
}

#[cfg(any(test, feature = "internals"))]
/// The notification channel of `pid` (the lowest fd if the application opened several), or
/// `None` if it did not opt in. Call at dump time; store the result with the image.
pub fn find_listener(pid: Pid) -> Result<Option<ListenerRef>, NotifyError> {
    Ok(find_listeners(pid)?.into_iter().next())
}

/// Writes `record` as one line into the channel of the restored process `pid`, from outside
/// (the process may still be stopped). Whole or nothing, never blocks: if the pipe lacks room
/// (the application never read earlier records) nothing is written and `Full` is returned.
pub fn notify(pid: Pid, listener: &ListenerRef, record: &ResumeEvent) -> Result<(), NotifyError> {
    let fd = listener.fd;
    check_still_channel(pid, listener)?;
    let line = record
        .to_line()
        .map_err(|source| NotifyError::Encode { pid, source })?;
    let path = format!("/proc/{pid}/fd/{fd}");
    // For a pipe, opening /proc/PID/fd/N opens the pipe itself, here for writing.
    let wr = nix::fcntl::open(
        path.as_str(),
        OFlag::O_WRONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| NotifyError::Open {
        pid,
        fd,
        source: e.into(),
    })?;
    let st = nix::sys::stat::fstat(&wr).map_err(|e| NotifyError::Open {
        pid,
        fd,
        source: e.into(),
    })?;
    if SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) != SFlag::S_IFIFO {
        return Err(NotifyError::NotAChannel {
            pid,
            fd,
            detail: "not a pipe".into(),
        });
    }
    let write_err = |e: io::Error| NotifyError::Write { pid, fd, source: e };
    let capacity =
        nix::fcntl::fcntl(&wr, FcntlArg::F_GETPIPE_SZ).map_err(|e| write_err(e.into()))? as usize;
    let queued = crate::sys::fd::fionread(wr.as_fd()).map_err(write_err)?;
    let free = capacity.saturating_sub(queued);
    if line.len() > free {
        return Err(NotifyError::Full {
            pid,
            fd,
            need: line.len(),
            free,
        });
    }
    write_all(&wr, &line).map_err(write_err)?;
    debug!(%pid, fd, bytes = line.len(), broken = record.broken.len(), "resume record written");
    Ok(())
}

/// The marker (if any) still names `listener.fd`.
fn check_still_channel(pid: Pid, listener: &ListenerRef) -> Result<(), NotifyError> {
    let fd = listener.fd;
    let not = |detail: String| NotifyError::NotAChannel { pid, fd, detail };
    match listener.marker_fd {
        Some(marker) => {
            let link = fs::read_link(format!("/proc/{pid}/fd/{marker}"))
                .map_err(|e| not(format!("marker fd {marker}: {e}")))?;
            let link = link.to_string_lossy();
            if marker_channel(&link) != Some(fd) {
                return Err(not(format!("marker fd {marker} is {link}")));
            }
        }
        None => {
            let link =
                fs::read_link(format!("/proc/{pid}/fd/{fd}")).map_err(|e| not(e.to_string()))?;
            let link = link.to_string_lossy();
            if !is_fifo_channel_path(&link) {
                return Err(not(format!("it is {link}")));
            }
        }
    }
    Ok(())
}

/// Writes all of `data` (known to fit) through the non-blocking `wr`.
fn write_all(wr: &OwnedFd, data: &[u8]) -> io::Result<()> {
    let mut done = 0;
    while done < data.len() {
        match nix::unistd::write(wr, &data[done..]) {
            Ok(n) => done += n,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Queues `signo` to process `pid` with sigqueue(3), `si_value.sival_int = count` (the number
/// of broken connections, for `--notify-signal`). `si_code` is SI_QUEUE.
pub fn queue_signal(pid: Pid, signo: i32, count: i32) -> Result<(), NotifyError> {
    crate::sys::signal::sigqueue(pid, signo, count).map_err(|source| NotifyError::Signal {
        pid,
        signo,
        source,
    })
}


/// The image record of a resume channel (`TaskCore.resume_channel`).
pub(crate) fn channel_record(l: &ListenerRef) -> cryo_proto::image::ResumeChannel {
    cryo_proto::image::ResumeChannel {
        fd: l.fd,
        marker_fd: l.marker_fd,
    }
}

/// The resume channel an image record names.
pub(crate) fn channel_from_record(c: &cryo_proto::image::ResumeChannel) -> ListenerRef {
    ListenerRef {
        fd: c.fd,
        marker_fd: c.marker_fd,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cryo_resume::MARKER_PREFIX;
    use std::os::fd::{AsRawFd, IntoRawFd};

    /// A channel made by hand, following the documented convention.
    struct Channel {
        chan: OwnedFd,
        _marker: OwnedFd,
    }

    fn channel() -> Channel {
        let (rd, _wr) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).unwrap();
        let chan = nix::fcntl::open(
            format!("/proc/self/fd/{}", rd.as_raw_fd()).as_str(),
            OFlag::O_RDWR | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .unwrap();
        let name = format!("{MARKER_PREFIX}{}", chan.as_raw_fd());
        let marker = nix::sys::memfd::memfd_create(
            std::ffi::CString::new(name).unwrap().as_c_str(),
            nix::sys::memfd::MFdFlags::MFD_CLOEXEC,
        )
        .unwrap();
        Channel {
            chan,
            _marker: marker,
        }
    }

    fn record(n: usize) -> ResumeEvent {
        ResumeEvent {
            checkpoint_id: "ck-1".into(),
            downtime_ms: 42,
            broken: (0..n)
                .map(|i| BrokenConnection {
                    fd: 10 + i as RawFd,
                    local: "127.0.0.1:8080".into(),
                    remote: format!("127.0.0.1:{}", 40000 + i),
                    reason: BrokenReason::Reset,
                })
                .collect(),
        }
    }

    fn read_all(fd: &OwnedFd) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = [0u8; 65536];
        loop {
            match nix::unistd::read(fd, &mut buf) {
                Ok(0) | Err(Errno::EAGAIN) => return out,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    #[test]
    fn finds_a_channel_made_by_the_convention() {
        let ch = channel();
        let me = nix::unistd::getpid();
        let found = find_listeners(me).unwrap();
        let mine = found
            .iter()
            .find(|l| l.fd == ch.chan.as_raw_fd())
            .expect("channel found");
        assert_eq!(mine.marker_fd, Some(ch._marker.as_raw_fd()));
        let stored = serde_json::to_string(mine).unwrap();
        assert_eq!(serde_json::from_str::<ListenerRef>(&stored).unwrap(), *mine);
    }

    #[test]
    fn a_marker_naming_a_non_pipe_is_ignored() {
        let file = tempfile::tempfile().unwrap();
        let name = format!("{MARKER_PREFIX}{}", file.as_raw_fd());
        let _marker = nix::sys::memfd::memfd_create(
            std::ffi::CString::new(name).unwrap().as_c_str(),
            nix::sys::memfd::MFdFlags::MFD_CLOEXEC,
        )
        .unwrap();
        let found = find_listeners(nix::unistd::getpid()).unwrap();
        assert!(found.iter().all(|l| l.fd != file.as_raw_fd()));
    }

    #[test]
    fn notify_writes_one_line() {
        let ch = channel();
        let me = nix::unistd::getpid();
        let l = ListenerRef {
            fd: ch.chan.as_raw_fd(),
            marker_fd: Some(ch._marker.as_raw_fd()),
        };
        notify(me, &l, &record(2)).unwrap();
        notify(me, &l, &record(0)).unwrap();
        let text = String::from_utf8(read_all(&ch.chan)).unwrap();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let first: ResumeEvent = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(first, record(2));
        assert!(lines[0].contains(r#""reason":"reset""#));
        assert_eq!(
            lines[1],
            r#"{"checkpoint_id":"ck-1","downtime_ms":42,"broken":[]}"#
        );
    }

    #[test]
    fn a_full_channel_gets_nothing_rather_than_half_a_line() {
        let ch = channel();
        let me = nix::unistd::getpid();
        let l = ListenerRef {
            fd: ch.chan.as_raw_fd(),
            marker_fd: Some(ch._marker.as_raw_fd()),
        };
        // Fill the pipe to within a few bytes.
        let cap = nix::fcntl::fcntl(&ch.chan, FcntlArg::F_GETPIPE_SZ).unwrap() as usize;
        write_all(&ch.chan, &vec![b'x'; cap - 10]).unwrap();
        let err = notify(me, &l, &record(1)).unwrap_err();
        assert!(matches!(err, NotifyError::Full { free: 10, .. }), "{err}");
        assert_eq!(read_all(&ch.chan).len(), cap - 10);
        // A record larger than PIPE_BUF still arrives whole when it fits.
        notify(me, &l, &record(100)).unwrap();
        let got = read_all(&ch.chan);
        assert!(got.len() > 4096);
        let back: ResumeEvent = serde_json::from_slice(&got[..got.len() - 1]).unwrap();
        assert_eq!(back.broken.len(), 100);
    }

    #[test]
    fn a_stale_reference_is_refused() {
        let ch = channel();
        let me = nix::unistd::getpid();
        let wrong = ListenerRef {
            fd: ch.chan.as_raw_fd(),
            marker_fd: Some(ch.chan.as_raw_fd()),
        };
        let err = notify(me, &wrong, &record(0)).unwrap_err();
        assert!(matches!(err, NotifyError::NotAChannel { .. }), "{err}");
        let file = tempfile::tempfile().unwrap().into_raw_fd();
        let fifo_ref = ListenerRef {
            fd: file,
            marker_fd: None,
        };
        let err = notify(me, &fifo_ref, &record(0)).unwrap_err();
        assert!(matches!(err, NotifyError::NotAChannel { .. }), "{err}");
        nix::unistd::close(file).unwrap();
    }

    #[test]
    fn resume_channel_round_trips() {
        for l in [
            ListenerRef {
                fd: 7,
                marker_fd: Some(8),
            },
            ListenerRef {
                fd: 9,
                marker_fd: None,
            },
        ] {
            assert_eq!(channel_from_record(&channel_record(&l)), l);
        }
    }
}
