//! Listening TCP sockets.
//!
//! A listener has no sequence numbers or queues of its own: it is captured
//! by address and options, and restored with `bind()` and `listen()`. Two
//! things need the kernel's help:
//!
//! - the backlog passed to `listen()` is not readable with `getsockopt`, nor
//!   from /proc/net/tcp; sock_diag reports it (`idiag_wqueue` is
//!   `sk_max_ack_backlog` for a listener, `idiag_rqueue` the accept queue
//!   length). sock_diag answers for the CALLER's network namespace, so a
//!   listener in another namespace is not found: the backlog is then `None`
//!   and the restore uses the `default_backlog` it is given.
//! - connections that completed the handshake but were not `accept()`ed yet
//!   sit in the listener's accept queue. CRIU refuses to dump such a
//!   listener ("In-flight connection (l)") unless `--skip-in-flight`,
//!   which drops them. Accepting them in the dumper and dumping them as
//!   established sockets does not help: userspace cannot put a socket back
//!   into an accept queue, and the application would never `accept()` them.
//!   So this crate does the same as CRIU: [`InFlight::Refuse`] (the default;
//!   a temporary error, retry once the application has accepted them) or
//!   [`InFlight::Skip`] (they are dropped, counted in
//!   `ListenerState::dropped_pending`; their peers get a RST when the
//!   original listener is closed). Half-open connections (SYN_RECV request
//!   socks) are not captured either way: their peers retransmit the SYN and
//!   the restored listener answers.

use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;

use netlink_packet_sock_diag::constants::IPPROTO_TCP;
use netlink_packet_sock_diag::inet::{InetResponse, StateFlags};

use crate::error::{Ctx, Operation, Result, SocketName, TcpRepairError};
use crate::options;
use crate::repair::{require_state, socket_name};
use crate::state::ListenerState;
use crate::sys;

/// What to do with connections waiting in a listener's accept queue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum InFlight {
    /// Refuse the capture with [`TcpRepairError::PendingConnections`]
    /// (temporary: retry later).
    #[default]
    Refuse,
    /// Capture anyway; the pending connections are lost.
    Skip,
}

/// What sock_diag says about one listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenerDiag {
    /// Connections in the accept queue.
    pub accept_queue: u32,
    /// The backlog given to `listen()` (capped by `somaxconn`).
    pub backlog: u32,
    /// Another listener (another inode) has the same address and port.
    pub shares_port: bool,
}

/// Looks a listening TCP socket up by inode with sock_diag (in the caller's
/// network namespace), and whether another listens on its address and port.
/// `Ok(None)` when it is not found there.
pub fn listener_diag(local: SocketAddr, inode: u64) -> std::io::Result<Option<ListenerDiag>> {
    let mut found = None;
    let mut shares_port = false;
    crate::diag::dump(
        local.is_ipv6(),
        IPPROTO_TCP,
        StateFlags::LISTEN,
        local.port(),
        |r| {
            record_listener(r, inode, &mut found);
            shares_port |= r.header.inode as u64 != inode
                && r.header.socket_id.source_address == local.ip()
                && r.header.socket_id.source_port == local.port();
        },
    )?;
    Ok(found.map(|d| ListenerDiag { shares_port, ..d }))
}

fn record_listener(r: &InetResponse, inode: u64, found: &mut Option<ListenerDiag>) {
    if r.header.inode as u64 == inode {
        *found = Some(ListenerDiag {
            accept_queue: r.header.recv_queue,
            backlog: r.header.send_queue,
            shares_port: false,
        });
    }
}

/// Reads one received datagram of an inet_diag dump of listeners (no socket: bytes in, typed
/// answer out): records in `found` the listener with inode `inode` if the datagram describes
/// it, and returns true once the dump is complete (NLMSG_DONE). A refusal by the kernel or
/// a malformed message is an error.
pub fn parse_listener_answer(
    datagram: &[u8],
    inode: u64,
    found: &mut Option<ListenerDiag>,
) -> std::io::Result<bool> {
    crate::diag::parse_answer(datagram, |r| record_listener(r, inode, found))
}

/// Captures a listening TCP socket: address, backlog (via sock_diag), socket
/// and TCP options. With [`InFlight::Refuse`], a non-empty accept queue is a
/// temporary error. Does not need repair mode and does not disturb the
/// listener.
pub fn capture_listener(fd: impl AsFd, in_flight: InFlight) -> Result<ListenerState> {
    let fd = fd.as_fd();
    let name = socket_name(fd);
    let ctx = Ctx::new(Operation::Capture, name);
    require_state(fd, ctx, name, 10, "not a listening socket")?;
    let local = name
        .local
        .ok_or_else(|| ctx.invalid("getsockname", "listener without an address"))?;
    let inode = inode_of(fd).map_err(ctx.io("fstat"))?;
    let diag = listener_diag(local, inode).map_err(ctx.io("sock_diag"))?;
    let pending = diag.map(|d| d.accept_queue).unwrap_or(0);
    if pending > 0 && in_flight == InFlight::Refuse {
        return Err(TcpRepairError::PendingConnections {
            op: Operation::Capture,
            sock: name,
            pending,
        });
    }
    if in_flight == InFlight::Refuse
        && sys::get_int(fd, libc::SOL_TCP, libc::TCP_DEFER_ACCEPT)
            .map_err(ctx.sys("getsockopt TCP_DEFER_ACCEPT"))?
            > 0
    {
        let waiting = request_sockets(local).map_err(ctx.io("sock_diag"))?;
        if waiting > 0 {
            return Err(TcpRepairError::DeferredConnections {
                op: Operation::Capture,
                sock: name,
                waiting,
            });
        }
    }
    let socket = options::capture_tcp_socket(fd, local.is_ipv6(), true, ctx)?;
    Ok(ListenerState {
        local,
        backlog: diag.map(|d| d.backlog),
        dropped_pending: pending,
        bound_with_reuseport: diag.is_some_and(|d| d.shares_port) && !socket.reuse_port,
        socket,
        tcp: options::capture_tcp(fd, ctx)?,
    })
}

/// How many request sockets (SYN_RECV: a handshake under way, or done and waiting for data
/// under TCP_DEFER_ACCEPT) the listener on `local` has, by sock_diag in the caller's network
/// namespace.
fn request_sockets(local: SocketAddr) -> std::io::Result<u32> {
    let mut count = 0;
    crate::diag::dump(
        local.is_ipv6(),
        IPPROTO_TCP,
        StateFlags::SYN_RECV,
        local.port(),
        |r| {
            let id = &r.header.socket_id;
            if id.source_port == local.port()
                && (local.ip().is_unspecified() || id.source_address == local.ip())
            {
                count += 1;
            }
        },
    )?;
    Ok(count)
}

pub(crate) fn inode_of(fd: BorrowedFd<'_>) -> std::io::Result<u64> {
    let file = std::fs::File::from(fd.try_clone_to_owned()?);
    Ok(file.metadata()?.ino())
}

/// Re-creates a listening socket: options, `bind()`, `listen()` with the
/// captured backlog or `default_backlog` when it was not known.
pub fn restore_listener(state: &ListenerState, default_backlog: u32) -> Result<OwnedFd> {
    let name = SocketName::new(Some(state.local), None);
    let ctx = Ctx::new(Operation::Restore, name);
    let ipv6 = state.local.is_ipv6();
    let fd = options::new_socket(ipv6, &state.socket, ctx)?;
    let b = fd.as_fd();
    let sref = socket2::SockRef::from(&b);
    let set_reuseport = |on: bool| {
        sys::set_int(b, libc::SOL_SOCKET, libc::SO_REUSEPORT, on as i32)
            .map_err(ctx.sys("setsockopt SO_REUSEPORT"))
    };
    if state.bound_with_reuseport {
        set_reuseport(true)?;
    }
    options::bind_as_dumped(b, state.local, ctx)?;
    options::apply_socket(b, &state.socket, ipv6, ctx)?;
    options::apply_tcp(b, &state.tcp, ctx)?;
    let backlog = state
        .backlog
        .unwrap_or(default_backlog)
        .min(i32::MAX as u32) as i32;
    sref.listen(backlog).map_err(ctx.io("listen"))?;
    if state.bound_with_reuseport {
        // In the group now, as the original stayed after clearing it.
        set_reuseport(false)?;
    }
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the inet_diag fuzz target: NLMSG_ERROR with code i32::MIN panicked
    /// (netlink-packet-core's `to_io` negates it).
    #[test]
    fn an_error_code_of_i32_min_is_an_error() {
        let msg: Vec<u8> = [36u32, 2, 7, 0, 0x8000_0000, 16, 0x0005_0a00, 7, 0]
            .iter()
            .flat_map(|w| w.to_ne_bytes())
            .collect();
        assert!(parse_listener_answer(&msg, 1, &mut None).is_err());
    }
}
