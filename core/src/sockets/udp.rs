//! UDP sockets: bound address, connected peer and options captured; the datagrams waiting
//! in the receive queue are not (only counted: UDP may lose them anyway).

use std::os::fd::{BorrowedFd, OwnedFd, RawFd};

use cryo_proto::image::FileDesc;
use cryo_tcp_repair::{self as repair, UdpSocketState};
use nix::unistd::Pid;

use super::{repair_err, restore_err, SocketError, SocketState};

/// Captures UDP socket `dup` (fd `fd` of `pid`).
pub(super) fn capture(
    pid: Pid,
    fd: RawFd,
    dup: BorrowedFd<'_>,
) -> Result<SocketState, SocketError> {
    repair::capture_udp(dup)
        .map(SocketState::Udp)
        .map_err(repair_err(pid, fd))
}

/// A UDP socket in words, for messages and `cryo show`.
pub(super) fn describe(u: &UdpSocketState) -> String {
    match u.remote {
        Some(r) => format!("udp {} -> {r}", u.local),
        None => format!("udp {}", u.local),
    }
}

/// Socket `u` bound (and connected) again.
pub(super) fn restore(desc: &FileDesc, u: &UdpSocketState) -> Result<OwnedFd, SocketError> {
    repair::restore_udp(u).map_err(|e| restore_err(desc, "restore socket", e))
}
