//! UDP sockets: bound and possibly connected, with their options.
//!
//! A UDP socket has no connection state to repair: restoring it is
//! `socket()`, options, `bind()` and, when it was connected, `connect()`.
//! Datagrams waiting in the receive queue are not restored (CRIU drops them
//! too; UDP may lose datagrams anyway); their byte count is reported in
//! `UdpSocketState::dropped_recv_bytes`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, OwnedFd};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::error::{Ctx, Operation, Result, SocketName};
use crate::options;
use crate::repair::socket_name;
use crate::state::UdpSocketState;
use crate::sys;

/// Captures a UDP socket (IPv4 or IPv6). An unbound socket is captured with
/// the wildcard address and port 0 of its family.
pub fn capture_udp(fd: impl AsFd) -> Result<UdpSocketState> {
    let fd = fd.as_fd();
    let name = socket_name(fd);
    let ctx = Ctx::new(Operation::Capture, name);
    let ty =
        sys::get_int(fd, libc::SOL_SOCKET, libc::SO_TYPE).map_err(ctx.sys("getsockopt SO_TYPE"))?;
    let proto = sys::get_int(fd, libc::SOL_SOCKET, libc::SO_PROTOCOL)
        .map_err(ctx.sys("getsockopt SO_PROTOCOL"))?;
    if ty != libc::SOCK_DGRAM || proto != libc::IPPROTO_UDP {
        return Err(ctx.invalid("SO_TYPE", "not a UDP socket"));
    }
    let domain = sys::get_int(fd, libc::SOL_SOCKET, libc::SO_DOMAIN)
        .map_err(ctx.sys("getsockopt SO_DOMAIN"))?;
    let ipv6 = domain == libc::AF_INET6;
    let local = name.local.unwrap_or_else(|| {
        let ip = if ipv6 {
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        } else {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        };
        SocketAddr::new(ip, 0)
    });
    let inq = sys::ioctl_int(fd, libc::FIONREAD as _).map_err(ctx.sys("ioctl SIOCINQ"))?;
    Ok(UdpSocketState {
        local,
        remote: name.remote,
        socket: options::capture_socket(fd, ipv6, ctx)?,
        dropped_recv_bytes: inq.max(0) as u32,
    })
}

/// Re-creates a UDP socket: options, `bind()` (unless it was never bound),
/// `connect()` when it was connected.
pub fn restore_udp(state: &UdpSocketState) -> Result<OwnedFd> {
    let name = SocketName::new(Some(state.local), state.remote);
    let ctx = Ctx::new(Operation::Restore, name);
    let ipv6 = state.local.is_ipv6();
    let domain = if ipv6 { Domain::IPV6 } else { Domain::IPV4 };
    let socket = Socket::new(domain, Type::DGRAM.cloexec(), Some(Protocol::UDP))
        .map_err(ctx.io("socket"))?;
    let fd = OwnedFd::from(socket);
    let b = fd.as_fd();
    options::apply_pre_bind(b, &state.socket, ctx)?;
    options::apply_buffers_if_changed(b, &state.socket, ctx)?;
    let sref = socket2::SockRef::from(&b);
    if state.local.port() != 0 || !state.local.ip().is_unspecified() {
        sref.bind(&SockAddr::from(state.local))
            .map_err(ctx.io("bind"))?;
    }
    options::apply_socket(b, &state.socket, ipv6, ctx)?;
    if let Some(remote) = state.remote {
        sref.connect(&SockAddr::from(remote))
            .map_err(ctx.io("connect"))?;
    }
    Ok(fd)
}
