//! Capture of a unix socket's receive queue without consuming it.
//!
//! The engine hands over a duplicate of the target's socket (pidfd_getfd):
//! the same kernel socket, so every option changed here is the target's.
//! [`capture_queue`] sets `SO_PEEK_OFF` to 0, peeks message after message
//! with `MSG_PEEK | MSG_DONTWAIT`, and puts `SO_PEEK_OFF` and `SO_PASSCRED`
//! back to their exact earlier values, also when it fails.
//!
//! How the kernel behaves (net/unix/af_unix.c, checked on 6.18 by the tests):
//! - dgram and seqpacket (`__unix_dgram_recvmsg`): one peek returns one
//!   datagram from the peek offset and moves the offset by the bytes copied;
//!   `MSG_TRUNC` makes the call return the full length, so a too-small
//!   buffer is detected and the peek repeated at the same offset.
//! - stream (`unix_stream_read_generic`): one peek glues consecutive skbs
//!   and stops right AFTER an skb that carries SCM_RIGHTS, and, when the
//!   reader has SO_PASSCRED, before an skb from another writer (other
//!   pid/uid/gid). KERNEL TRAP: with MSG_PEEK the loop goes on to the next
//!   skb even when the requested size is used up (copying 0 bytes of it),
//!   so a peek of ANY size from an offset returns the descriptors of the
//!   first fd-carrying skb ahead. Where that skb starts inside the glued
//!   run cannot be seen with MSG_PEEK. So a stream entry is such a run, its
//!   descriptors attached to its first byte: the bytes and the descriptors
//!   come back in order, but a reader whose recv() ends before the fd skb
//!   gets the descriptors one read earlier than it would have (CRIU has
//!   the same limit). An entry ends exactly where the fd skb ends.
//! - credentials are only shown to a reader with SO_PASSCRED: it is turned
//!   on for the capture and put back. An skb sent while neither end had
//!   SO_PASSCRED carries none (pid 0 in the cmsg): recorded as `None`.
//! - peeking installs duplicates of in-flight descriptors in THIS process;
//!   they are returned as `OwnedFd`s (close-on-exec).
//! - a peek that finds the queue empty calls `sock_error()`, which CLEARS a
//!   pending `sk_err` (ECONNRESET from a dead dgram peer...). Stream
//!   capture never peeks past the `SIOCINQ` byte count; dgram capture checks
//!   `poll(POLLERR)` first and, if an error is pending, takes it with
//!   `SO_ERROR` and reports it in [`CapturedQueue::pending_error`] (the
//!   running target loses it: only a dump that kills the target is exact).
//! - stream MSG_OOB data (CONFIG_AF_UNIX_OOB) is not captured: a byte not read yet
//!   (poll's POLLPRI) fails the capture, naming it (a peek would read it as an ordinary
//!   byte); one read out of band already is not seen (KNOWN GAP: the restored stream
//!   reads across its mark in one call).
//! - a zero-length datagram does not move the peek offset; the kernel marks
//!   it peeked and an offset peek skips it from then on. The head of the
//!   queue is therefore peeked with SO_PEEK_OFF disabled (-1), which returns
//!   it anyway; a zero-length datagram further in that was ALREADY peeked
//!   (by an earlier capture, or by the target) is skipped and not seen.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use tracing::{debug, warn};

use crate::diag::{SockType, UnixName};
use crate::error::{Result, UnixSockError};
use crate::sys;

/// Credentials attached to a message (SCM_CREDENTIALS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Creds {
    /// Sender's pid (in the receiver's pid namespace).
    pub pid: i32,
    /// Sender's uid.
    pub uid: u32,
    /// Sender's gid.
    pub gid: u32,
}

/// One entry of a receive queue: a datagram or seqpacket record, or, for a
/// stream, a run of bytes that ends with an skb carrying descriptors, or
/// where the writer (credentials) changes, or at the end of the queue.
#[derive(Debug)]
pub struct QueuedMessage {
    /// The bytes.
    pub data: Vec<u8>,
    /// SCM_RIGHTS descriptors (duplicates installed in this process by the
    /// peek); a refill attaches them to the entry's first byte.
    pub fds: Vec<OwnedFd>,
    /// SCM_CREDENTIALS, when the message carries any.
    pub creds: Option<Creds>,
    /// Dgram only: the sender's bound name at capture time.
    pub sender: UnixName,
}

/// A captured receive queue.
#[derive(Debug)]
pub struct CapturedQueue {
    /// The socket's type.
    pub sock_type: SockType,
    /// The entries in queue order.
    pub messages: Vec<QueuedMessage>,
    /// A pending socket error (errno) that had to be taken with SO_ERROR
    /// to peek a dgram queue.
    pub pending_error: Option<i32>,
}

impl CapturedQueue {
    /// Total bytes queued.
    pub fn total_bytes(&self) -> usize {
        self.messages.iter().map(|m| m.data.len()).sum()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// Number of descriptors in flight.
    pub fn fd_count(&self) -> usize {
        self.messages.iter().map(|m| m.fds.len()).sum()
    }
}

/// The socket type of `fd` (SO_TYPE).
pub fn socket_type(fd: BorrowedFd<'_>) -> Result<SockType> {
    let raw = sys::get_int(fd, libc::SOL_SOCKET, libc::SO_TYPE)
        .map_err(|e| UnixSockError::fd("getsockopt SO_TYPE", fd.as_raw_fd(), e))?;
    SockType::from_raw(raw).ok_or_else(|| UnixSockError::Invalid {
        step: "getsockopt SO_TYPE",
        fd: fd.as_raw_fd(),
        detail: format!("unsupported socket type {raw}"),
    })
}

/// Options changed for the capture, put back by `finish` (or, on an early
/// return, by `Drop`, which can only log a failure).
struct Saved<'a> {
    fd: BorrowedFd<'a>,
    peek_off: i32,
    passcred: i32,
    done: bool,
}

impl<'a> Saved<'a> {
    fn take(fd: BorrowedFd<'a>) -> Result<Self> {
        let raw = fd.as_raw_fd();
        let peek_off = sys::get_int(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF)
            .map_err(|e| UnixSockError::fd("getsockopt SO_PEEK_OFF", raw, e))?;
        let passcred = sys::get_int(fd, libc::SOL_SOCKET, libc::SO_PASSCRED)
            .map_err(|e| UnixSockError::fd("getsockopt SO_PASSCRED", raw, e))?;
        let saved = Self {
            fd,
            peek_off,
            passcred,
            done: false,
        };
        if passcred == 0 {
            sys::set_int(fd, libc::SOL_SOCKET, libc::SO_PASSCRED, 1)
                .map_err(|e| UnixSockError::fd("setsockopt SO_PASSCRED", raw, e))?;
        }
        Ok(saved)
    }

    fn put_back(&mut self) -> Result<()> {
        self.done = true;
        let raw = self.fd.as_raw_fd();
        sys::set_int(self.fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF, self.peek_off)
            .map_err(|e| UnixSockError::fd("restore SO_PEEK_OFF", raw, e))?;
        if self.passcred == 0 {
            sys::set_int(self.fd, libc::SOL_SOCKET, libc::SO_PASSCRED, 0)
                .map_err(|e| UnixSockError::fd("restore SO_PASSCRED", raw, e))?;
        }
        Ok(())
    }
}

impl Drop for Saved<'_> {
    fn drop(&mut self) {
        if !self.done {
            if let Err(e) = self.put_back() {
                warn!(error = %e, "could not put socket options back after a failed capture");
            }
        }
    }
}

fn set_peek_off(fd: BorrowedFd<'_>, off: usize) -> Result<()> {
    let val = i32::try_from(off).map_err(|_| UnixSockError::Invalid {
        step: "setsockopt SO_PEEK_OFF",
        fd: fd.as_raw_fd(),
        detail: format!("queue offset {off} beyond i32"),
    })?;
    sys::set_int(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF, val)
        .map_err(|e| UnixSockError::fd("setsockopt SO_PEEK_OFF", fd.as_raw_fd(), e))
}

/// A message read off a queue: its bytes `data` and what came with them in `got`.
fn queued(data: Vec<u8>, got: sys::Received) -> QueuedMessage {
    QueuedMessage {
        data,
        fds: got.fds,
        creds: creds_of(got.creds),
        sender: got
            .addr
            .map(|a| UnixName::from_sun_path(&a))
            .unwrap_or_default(),
    }
}

fn creds_of(raw: Option<sys::RawCreds>) -> Option<Creds> {
    // pid 0: the skb carries no credentials (the kernel shows overflow ids).
    raw.filter(|c| c.pid != 0).map(|c| Creds {
        pid: c.pid,
        uid: c.uid,
        gid: c.gid,
    })
}

const PEEK: i32 = libc::MSG_PEEK | libc::MSG_DONTWAIT;
/// Bound on entries, against a kernel that would not move on.
const MAX_MESSAGES: usize = 1 << 22;

/// Captures everything queued for reading on `fd` without consuming it.
///
/// `fd` must be a unix socket; a listener or an unconnected stream socket
/// yields an empty queue. `SO_PEEK_OFF` and `SO_PASSCRED` are the same after
/// the call as before it; the target sees the same queue.
pub fn capture_queue(fd: impl AsFd) -> Result<CapturedQueue> {
    let fd = fd.as_fd();
    let sock_type = socket_type(fd)?;
    let mut saved = Saved::take(fd)?;
    let result = match sock_type {
        SockType::Stream => capture_stream(fd).map(|messages| (messages, None)),
        SockType::Dgram | SockType::SeqPacket => capture_dgram(fd, sock_type),
    };
    let restored = saved.put_back();
    let (messages, pending_error) = result?;
    restored?;
    debug!(
        fd = fd.as_raw_fd(),
        messages = messages.len(),
        "captured unix socket queue"
    );
    Ok(CapturedQueue {
        sock_type,
        messages,
        pending_error,
    })
}

fn capture_stream(fd: BorrowedFd<'_>) -> Result<Vec<QueuedMessage>> {
    let raw = fd.as_raw_fd();
    let total = match sys::inq(fd) {
        Ok(n) => usize::try_from(n).unwrap_or(0),
        // A listener: its queue holds embryos, not data.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => 0,
        Err(e) => return Err(UnixSockError::fd("ioctl SIOCINQ", raw, e)),
    };
    let mut messages = Vec::new();
    if total == 0 {
        return Ok(messages);
    }
    // A peek reads the MSG_OOB byte as an ordinary one: restored, it would be.
    if sys::poll_pri(fd).map_err(|e| UnixSockError::fd("poll", raw, e))? {
        return Err(UnixSockError::Invalid {
            step: "poll POLLPRI",
            fd: raw,
            detail: "a MSG_OOB byte is queued, not read yet: a restored queue would hold it as \
                     an ordinary byte"
                .into(),
        });
    }
    let mut buf = vec![0u8; total];
    let mut offset = 0usize;
    while offset < total {
        set_peek_off(fd, offset)?;
        let got = sys::recvmsg(fd, &mut buf[offset..], PEEK, false)
            .map_err(|e| UnixSockError::fd("recvmsg MSG_PEEK", raw, e))?;
        let n = got.len;
        if n == 0 {
            return Err(UnixSockError::Invalid {
                step: "recvmsg MSG_PEEK",
                fd: raw,
                detail: format!(
                    "peek stopped at byte {offset} of {total} (MSG_OOB data or a queue changing under capture)"
                ),
            });
        }
        check_ctrunc(raw, got.flags)?;
        messages.push(QueuedMessage {
            data: buf[offset..offset + n].to_vec(),
            fds: got.fds,
            creds: creds_of(got.creds),
            sender: UnixName::Unnamed,
        });
        offset += n;
    }
    Ok(messages)
}

fn capture_dgram(
    fd: BorrowedFd<'_>,
    sock_type: SockType,
) -> Result<(Vec<QueuedMessage>, Option<i32>)> {
    let raw = fd.as_raw_fd();
    let mut pending_error = None;
    if sys::poll_err(fd).map_err(|e| UnixSockError::fd("poll", raw, e))? {
        let err = sys::get_int(fd, libc::SOL_SOCKET, libc::SO_ERROR)
            .map_err(|e| UnixSockError::fd("getsockopt SO_ERROR", raw, e))?;
        if err != 0 {
            warn!(
                fd = raw,
                errno = err,
                "pending socket error taken to peek the queue"
            );
            pending_error = Some(err);
        }
    }
    let want_addr = sock_type == SockType::Dgram;
    let mut messages = Vec::new();
    // SIOCINQ of a dgram socket is the first datagram's length: a good
    // first guess; MSG_TRUNC tells when a later one needs more.
    let first = sys::inq(fd).map_err(|e| UnixSockError::fd("ioctl SIOCINQ", raw, e))?;
    let mut buf = vec![0u8; usize::try_from(first).unwrap_or(0).max(4096)];
    let mut offset = 0usize;
    // The head is peeked with SO_PEEK_OFF disabled: that path returns it
    // even when it is a zero-length datagram already peeked before (which
    // an offset peek skips); from then on the offset walks the queue.
    sys::set_int(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF, -1)
        .map_err(|e| UnixSockError::fd("setsockopt SO_PEEK_OFF", raw, e))?;
    while messages.len() < MAX_MESSAGES {
        if !messages.is_empty() {
            set_peek_off(fd, offset)?;
        }
        let got = match sys::recvmsg(fd, &mut buf, PEEK | libc::MSG_TRUNC, want_addr) {
            Ok(got) => got,
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => break,
            // An unconnected seqpacket socket has no queue to read.
            Err(e)
                if e.raw_os_error() == Some(libc::ENOTCONN) && sock_type == SockType::SeqPacket =>
            {
                break
            }
            Err(e) => return Err(UnixSockError::fd("recvmsg MSG_PEEK", raw, e)),
        };
        if got.len == 0 && sock_type == SockType::SeqPacket && seqpacket_end(fd, offset)? {
            // A seqpacket socket shut for reading (its peer closed): past its last record a
            // peek reads EOF (0) again and again, as a zero-length record would once; every
            // queued byte was seen, so this is the end (LIMIT: zero-length records after the
            // last byte of a shut seqpacket socket are not told from EOF, and not captured).
            break;
        }
        if got.len > buf.len() {
            // Truncated: the offset moved by what was copied; go back.
            buf.resize(got.len, 0);
            continue;
        }
        check_ctrunc(raw, got.flags)?;
        let len = got.len;
        messages.push(queued(buf[..len].to_vec(), got));
        offset += len;
    }
    Ok((messages, pending_error))
}

/// Whether a peek of seqpacket socket `fd` at `offset` is past its queue (SIOCINQ counts
/// every queued byte of a seqpacket socket) with the read side shut: it reads EOF.
fn seqpacket_end(fd: BorrowedFd<'_>, offset: usize) -> Result<bool> {
    let raw = fd.as_raw_fd();
    let bytes = sys::inq(fd).map_err(|e| UnixSockError::fd("ioctl SIOCINQ", raw, e))?;
    let past = usize::try_from(bytes).map_or(true, |b| offset >= b);
    Ok(past && sys::read_hup(fd).map_err(|e| UnixSockError::fd("poll", raw, e))?)
}

/// Whether an error waits on `fd` (ECONNRESET: a stream or seqpacket peer closed with data
/// it had not read), seen by poll without taking it.
pub fn error_pending(fd: impl AsFd) -> Result<bool> {
    let fd = fd.as_fd();
    sys::poll_err(fd).map_err(|e| UnixSockError::fd("poll", fd.as_raw_fd(), e))
}

fn check_ctrunc(fd: i32, flags: i32) -> Result<()> {
    if flags & libc::MSG_CTRUNC != 0 {
        return Err(UnixSockError::Invalid {
            step: "recvmsg MSG_PEEK",
            fd,
            detail: "control data truncated (descriptors lost: RLIMIT_NOFILE?)".into(),
        });
    }
    Ok(())
}

/// Takes the next connection waiting in the accept queue of listener `fd`
/// (a duplicate of the owner's), without blocking: `None` when none waits.
/// The listener's O_NONBLOCK is left alone (it is the owner's too).
///
/// Unlike the rest of this module this CONSUMES: the connection leaves the
/// owner's accept queue for good. It is the only way to reach what a client
/// sent before being accepted (the embryo socket has no fd and no inode), so
/// a dump uses it only once it is committed to end the owner.
pub fn accept_waiting(fd: impl AsFd) -> Result<Option<OwnedFd>> {
    let fd = fd.as_fd();
    let raw = fd.as_raw_fd();
    if !sys::poll_in(fd).map_err(|e| UnixSockError::fd("poll", raw, e))? {
        return Ok(None);
    }
    sys::accept(fd)
        .map(Some)
        .map_err(|e| UnixSockError::fd("accept", raw, e))
}

/// Receives (consumes) one message from `fd`, at most `max` bytes, with its
/// descriptors, credentials and (dgram) sender, without blocking; `None`
/// when nothing is queued. The counterpart of a capture, for checks.
pub fn recv_message(fd: impl AsFd, max: usize) -> Result<Option<QueuedMessage>> {
    let fd = fd.as_fd();
    let want_addr = socket_type(fd)? == SockType::Dgram;
    let mut buf = vec![0u8; max];
    match sys::recvmsg(fd, &mut buf, libc::MSG_DONTWAIT, want_addr) {
        Ok(got) => {
            buf.truncate(got.len.min(max));
            Ok(Some(queued(buf, got)))
        }
        Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => Ok(None),
        Err(e) => Err(UnixSockError::fd("recvmsg", fd.as_raw_fd(), e)),
    }
}
