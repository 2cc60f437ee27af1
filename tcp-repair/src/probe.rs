//! Asking the peer of a live connection whether it is still there: a window probe, and what
//! `TCP_INFO` says afterwards.
//!
//! ```text
//! send_probe(fd)        TCP_INFO: ESTABLISHED?  no -> None (nothing sent)
//!                       segs_in and SO_REUSEADDR noted (leaving repair mode clears it: set
//!                       back after); TCP_REPAIR on, TCP_REPAIR_OFF -> the kernel sends a
//!                       segment with an old sequence number (snd_una - 1): a live peer
//!                       answers with an ACK, a host without the connection with a RST
//! probe.answer(fd)      state CLOSE            -> Reset  (the kernel already failed the socket:
//!                                                         a reader gets ECONNRESET)
//!                       segs_in moved          -> Alive  (any segment came back)
//!                       otherwise              -> Waiting
//! ```
//!
//! Toggling repair mode makes the socket refuse the owner's send and recv (EINVAL, EPERM)
//! for a moment: probe a socket whose owner is stopped, or your own.

use std::os::fd::BorrowedFd;

use crate::error::{Ctx, Operation, Result};
use crate::repair::socket_name;
use crate::sys;

/// `tcpi_state` of an established connection.
const ESTABLISHED: u8 = 1;
/// `tcpi_state` of a closed socket (after a reset, for a connection).
const CLOSE: u8 = 7;

/// What the peer did since the probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerAnswer {
    /// Nothing came back yet.
    Waiting,
    /// A segment came back: the peer holds the connection.
    Alive,
    /// The peer answered with a reset: the socket is closed, its owner's next (or pending)
    /// read fails with ECONNRESET.
    Reset,
}

/// A probe sent on one connection: what to compare `TCP_INFO` against.
#[derive(Clone, Copy, Debug)]
pub struct PeerProbe {
    segs_in: u32,
}

/// Sends a window probe on `fd` if it is an established connection (`None` otherwise: a
/// closing or closed socket is not probed). Needs CAP_NET_ADMIN (repair mode).
pub fn send_probe(fd: BorrowedFd<'_>) -> Result<Option<PeerProbe>> {
    // The socket is named only when something fails: naming costs two syscalls.
    let fail = |step| move |e| Ctx::new(Operation::Probe, socket_name(fd)).sys(step)(e);
    let info = sys::tcp_info_full(fd).map_err(fail("getsockopt TCP_INFO"))?;
    if info.tcpi_state != ESTABLISHED {
        return Ok(None);
    }
    // Leaving repair mode clears SO_REUSEADDR: read it first, put it back after.
    let reuse_addr = sys::get_int(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR)
        .map_err(fail("getsockopt SO_REUSEADDR"))?;
    sys::set_int(fd, libc::SOL_TCP, libc::TCP_REPAIR, sys::TCP_REPAIR_ON)
        .map_err(fail("setsockopt TCP_REPAIR (on)"))?;
    sys::set_int(fd, libc::SOL_TCP, libc::TCP_REPAIR, sys::TCP_REPAIR_OFF)
        .map_err(fail("setsockopt TCP_REPAIR (off, with a window probe)"))?;
    if reuse_addr != 0 {
        sys::set_int(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)
            .map_err(fail("setsockopt SO_REUSEADDR"))?;
    }
    Ok(Some(PeerProbe {
        segs_in: info.tcpi_segs_in,
    }))
}

impl PeerProbe {
    /// What the peer of `fd` (the socket probed) did since the probe.
    pub fn answer(&self, fd: BorrowedFd<'_>) -> Result<PeerAnswer> {
        let info = sys::tcp_info_full(fd).map_err(|e| {
            Ctx::new(Operation::Probe, socket_name(fd)).sys("getsockopt TCP_INFO")(e)
        })?;
        Ok(if info.tcpi_state == CLOSE {
            PeerAnswer::Reset
        } else if info.tcpi_segs_in != self.segs_in {
            PeerAnswer::Alive
        } else {
            PeerAnswer::Waiting
        })
    }
}
