//! UDP sockets: bound address, connected peer, options (the shared ones, every integer
//! option of cryo-tcp-repair's table that differs from a fresh socket's, SO_BINDTODEVICE,
//! UDP_CORK), shutdown state. A datagram held back by UDP_CORK or MSG_MORE is refused (the
//! kernel cannot give it back); the datagrams waiting in the receive queue are not captured
//! (only counted: UDP may lose them anyway).

use std::os::fd::{BorrowedFd, OwnedFd, RawFd};

use cryo_proto::image::FileDesc;
use cryo_tcp_repair::{self as repair, UdpExtras, UdpSocketState};
use nix::unistd::Pid;

use super::{repair_err, restore_err, SocketError, SocketState};

/// A UDP socket's state: what cryo-tcp-repair captures of it, and the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpState {
    /// Addresses and the options shared with TCP sockets.
    pub socket: UdpSocketState,
    /// Shutdown state, cork, device, the other options.
    pub extras: UdpExtras,
}

/// Captures UDP socket `dup` (fd `fd` of `pid`).
pub(super) fn capture(
    pid: Pid,
    fd: RawFd,
    dup: BorrowedFd<'_>,
) -> Result<SocketState, SocketError> {
    let socket = repair::capture_udp(dup).map_err(repair_err(pid, fd))?;
    let extras = repair::capture_udp_extras(dup).map_err(repair_err(pid, fd))?;
    Ok(SocketState::Udp(Box::new(UdpState { socket, extras })))
}

/// A UDP socket in words, for messages and `cryo show`.
pub(super) fn describe(u: &UdpState) -> String {
    let s = &u.socket;
    let mut out = match s.remote {
        Some(r) => format!("udp {} -> {r}", s.local),
        None => format!("udp {}", s.local),
    };
    let e = &u.extras;
    if e.shutdown_read || e.shutdown_write {
        out += &format!(
            " (shut: read {}, write {})",
            e.shutdown_read, e.shutdown_write
        );
    }
    if !e.bind_device.is_empty() {
        out += &format!(" on {}", String::from_utf8_lossy(&e.bind_device));
    }
    out
}

/// Socket `u` made again: options, bound (and connected), corked and shut as it was.
pub(super) fn restore(desc: &FileDesc, u: &UdpState) -> Result<OwnedFd, SocketError> {
    repair::restore_udp_with(&u.socket, &u.extras)
        .map_err(|e| restore_err(desc, "restore socket", e))
}
