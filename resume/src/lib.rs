//! The library an application links to learn that cryo restored it.
//!
//! The application opens a [`Listener`]: an fd it can poll, epoll or hand to an event loop.
//! cryo recognises it at dump time and, after every restore, writes one JSON line into it
//! ([`ResumeEvent`]): the checkpoint id, the downtime, and the connections that did not
//! survive (their fd, addresses and why). A restore with nothing broken still writes a line.
//!
//! ```text
//! application                                   cryo
//! -----------                                   ----
//! Listener::open()
//!   pipe2 -> reopen /proc/self/fd/R O_RDWR      dump:    readlink /proc/PID/fd/*
//!         -> channel fd N (O_RDWR|O_NONBLOCK)            "/memfd:cryo-resume:v1:fd=N (deleted)"
//!   memfd_create("cryo-resume:v1:fd=N")                  -> records fd N in the image
//!         -> marker fd M (empty, never read)    restore: fds come back at their numbers
//! poll(N) ...                                            open /proc/PID/fd/N O_WRONLY,
//!   <- {"checkpoint_id":...,"broken":[...]}\n            write one line (<= PIPE_BUF: atomic)
//! ```
//!
//! The channel is a pipe opened read-write: it is its own writer, so it never reports
//! POLLHUP, and cryo writes into it from outside without the application doing anything.
//! The marker is an empty memfd whose name carries the channel's fd number: that is how cryo
//! tells this pipe from every other one. Both fds are close-on-exec and must stay at their
//! numbers (do not dup2 the channel elsewhere and close the original). The full convention,
//! for other languages, is in README.md; [`ffi`] is the C API.
#![warn(missing_docs)]

pub mod ffi;
mod record;
mod sys;

pub use record::{
    is_fifo_channel_path, marker_channel, parse_record, BrokenConnection, BrokenReason,
    ListenerRef, ResumeEvent, FIFO_PREFIX, FORMAT_VERSION, MARKER_PREFIX,
};

use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, IntoRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// Why reading an event failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call on the channel failed.
    #[error("cryo-resume channel: {0}")]
    Io(#[from] io::Error),
    /// A line was not a valid record (it is consumed; the next call reads the next one).
    #[error("cryo-resume record {line:?}: {source}")]
    Record {
        /// The line, as read.
        line: String,
        /// What serde_json said.
        source: serde_json::Error,
    },
}

/// The application's end of the notification channel.
#[derive(Debug)]
pub struct Listener {
    /// The pipe, opened O_RDWR | O_NONBLOCK.
    channel: OwnedFd,
    /// The empty memfd whose name points cryo at `channel`.
    marker: OwnedFd,
    /// Bytes read but not yet returned (a partial line).
    buf: Vec<u8>,
}

impl Listener {
    /// Creates the channel and its marker. Call it once, early; keep the listener alive.
    pub fn open() -> io::Result<Self> {
        let (rd, wr) = sys::pipe2(libc::O_CLOEXEC | libc::O_NONBLOCK)?;
        // The read-write description is a reader and a writer: no POLLHUP, no SIGPIPE for cryo.
        let channel = sys::open(
            &format!("/proc/self/fd/{}", rd.as_raw_fd()),
            libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )?;
        drop((rd, wr));
        let name = format!("{MARKER_PREFIX}{}", channel.as_raw_fd());
        let marker = sys::memfd_create(&name, libc::MFD_CLOEXEC)?;
        Ok(Self {
            channel,
            marker,
            buf: Vec::new(),
        })
    }

    /// The next event if one is waiting; `Ok(None)` when nothing is (never blocks).
    pub fn next_event(&mut self) -> Result<Option<ResumeEvent>, Error> {
        loop {
            if let Some(event) = self.take_line()? {
                return Ok(Some(event));
            }
            let mut chunk = [0u8; 4096];
            match sys::read(self.channel.as_fd(), &mut chunk) {
                Ok(0) => return Ok(None),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Waits up to `timeout` (forever if `None`) for the next event.
    pub fn wait_event(&mut self, timeout: Option<Duration>) -> Result<Option<ResumeEvent>, Error> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if let Some(event) = self.next_event()? {
                return Ok(Some(event));
            }
            let wait_ms = match deadline {
                None => -1,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(None);
                    }
                    libc::c_int::try_from(left.as_millis().max(1)).unwrap_or(libc::c_int::MAX)
                }
            };
            match sys::poll_in(self.channel.as_fd(), wait_ms) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Gives up the channel fd to the caller (an event loop that owns it from now on). The
    /// marker stays open for as long as the process lives, so cryo keeps finding the channel.
    pub fn into_raw_fd(self) -> RawFd {
        let fd = self.channel.into_raw_fd();
        // The marker must outlive this value: it is what cryo looks for.
        let _ = self.marker.into_raw_fd();
        fd
    }

    /// The marker memfd's fd number.
    pub fn marker_fd(&self) -> RawFd {
        self.marker.as_raw_fd()
    }

    /// One complete buffered line, parsed; blank lines are skipped.
    fn take_line(&mut self) -> Result<Option<ResumeEvent>, Error> {
        while let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=pos).collect();
            let line = &line[..pos];
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return parse_record(line).map(Some);
        }
        Ok(None)
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.channel.as_fd()
    }
}

impl AsRawFd for Listener {
    fn as_raw_fd(&self) -> RawFd {
        self.channel.as_raw_fd()
    }
}

/// The marker fds of this process that name `channel`.
fn markers_of(channel: RawFd) -> Vec<RawFd> {
    let Ok(dir) = fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<RawFd>().ok())
        .filter(|fd| {
            fs::read_link(format!("/proc/self/fd/{fd}"))
                .is_ok_and(|l| marker_channel(&l.to_string_lossy()) == Some(channel))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write_to(listener: &Listener, data: &[u8]) {
        let path = format!("/proc/self/fd/{}", listener.as_raw_fd());
        let mut f = fs::OpenOptions::new().write(true).open(path).unwrap();
        f.write_all(data).unwrap();
    }

    #[test]
    fn marker_names_the_channel() {
        let listener = Listener::open().unwrap();
        let link = fs::read_link(format!("/proc/self/fd/{}", listener.marker_fd())).unwrap();
        assert_eq!(
            link.to_string_lossy(),
            format!(
                "/memfd:cryo-resume:v1:fd={} (deleted)",
                listener.as_raw_fd()
            )
        );
        assert_eq!(markers_of(listener.as_raw_fd()), vec![listener.marker_fd()]);
    }

    #[test]
    fn empty_channel_is_not_readable_and_never_hangs_up() {
        let mut listener = Listener::open().unwrap();
        assert!(listener.next_event().unwrap().is_none());
        assert!(!sys::poll_in(listener.as_fd(), 0).unwrap());
        let t = Instant::now();
        let got = listener
            .wait_event(Some(Duration::from_millis(50)))
            .unwrap();
        assert!(got.is_none());
        assert!(t.elapsed() >= Duration::from_millis(50));
    }

    #[test]
    fn reads_records_written_from_outside() {
        let mut listener = Listener::open().unwrap();
        write_to(
            &listener,
            br#"{"checkpoint_id":"c1","downtime_ms":12,"broken":[{"fd":5,"local":"127.0.0.1:80","remote":"127.0.0.1:4000","reason":"reset"},{"fd":6,"local":"","remote":"","reason":"closed-by-policy"}]}
{"checkpoint_id":"c2","downtime_ms":0,"broken":[],"future_field":1}
"#,
        );
        assert!(sys::poll_in(listener.as_fd(), 0).unwrap());
        let first = listener.next_event().unwrap().unwrap();
        assert_eq!(first.checkpoint_id, "c1");
        assert_eq!(first.downtime_ms, 12);
        assert_eq!(first.broken.len(), 2);
        assert_eq!(first.broken[0].fd, 5);
        assert_eq!(first.broken[0].reason, BrokenReason::Reset);
        assert_eq!(first.broken[1].reason, BrokenReason::ClosedByPolicy);
        let second = listener.next_event().unwrap().unwrap();
        assert_eq!(second.checkpoint_id, "c2");
        assert!(second.broken.is_empty());
        assert!(listener.next_event().unwrap().is_none());
    }

    #[test]
    fn partial_line_waits_for_its_end_and_bad_line_is_skipped() {
        let mut listener = Listener::open().unwrap();
        write_to(&listener, b"not json\n{\"checkpoint_id\":\"x\",");
        assert!(matches!(
            listener.next_event(),
            Err(Error::Record { ref line, .. }) if line == "not json"
        ));
        assert!(listener.next_event().unwrap().is_none());
        write_to(&listener, b"\"downtime_ms\":3}\n");
        let ev = listener.next_event().unwrap().unwrap();
        assert_eq!(ev.checkpoint_id, "x");
        assert!(ev.broken.is_empty());
    }

    #[test]
    fn reasons_round_trip_and_unknown_ones_are_other() {
        for (reason, text) in [
            (BrokenReason::Reset, "\"reset\""),
            (BrokenReason::Timeout, "\"timeout\""),
            (BrokenReason::ExternalPeer, "\"external-peer\""),
            (BrokenReason::ClosedByPolicy, "\"closed-by-policy\""),
        ] {
            assert_eq!(serde_json::to_string(&reason).unwrap(), text);
            assert_eq!(serde_json::from_str::<BrokenReason>(text).unwrap(), reason);
        }
        assert_eq!(
            serde_json::from_str::<BrokenReason>("\"eaten-by-grue\"").unwrap(),
            BrokenReason::Other
        );
    }

    #[test]
    fn channel_survives_reads_by_poll_in_another_thread() {
        let mut listener = Listener::open().unwrap();
        let fd = listener.as_raw_fd();
        let waiter = std::thread::spawn(move || {
            // cryo's side: a write-only open of the channel through /proc.
            let path = format!("/proc/self/fd/{fd}");
            std::thread::sleep(Duration::from_millis(20));
            let mut f = fs::OpenOptions::new().write(true).open(path).unwrap();
            f.write_all(b"{\"checkpoint_id\":\"late\",\"downtime_ms\":1}\n")
                .unwrap();
        });
        let ev = listener.wait_event(Some(Duration::from_secs(5))).unwrap();
        waiter.join().unwrap();
        assert_eq!(ev.unwrap().checkpoint_id, "late");
    }
}
