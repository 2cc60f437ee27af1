//! UDP sockets: bound and possibly connected, with their options; and the other datagram
//! sockets of the inet families that restore the same way (UDP-lite, ICMP "ping" sockets,
//! raw sockets: [`UdpExtras::sock_type`] and [`UdpExtras::protocol`] say which).
//!
//! A UDP socket has no connection state to repair: restoring it is
//! `socket()`, options, `bind()`, the datagrams that waited in its receive queue delivered
//! again (udp_queue.rs), and, when it was connected, `connect()`. A raw or ping socket's
//! queue cannot be read without taking it (no SO_PEEK_OFF there): one with datagrams waiting
//! is refused, a temporary state.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::error::{Ctx, Operation, Result, SocketName, TcpRepairError};
use crate::options::{self, IPV6_FREEBIND};
use crate::repair::socket_name;
use crate::state::UdpSocketState;
use crate::sys;

/// Captures a UDP socket (IPv4 or IPv6), or a UDP-lite, ping or raw one. An unbound socket
/// is captured with the wildcard address and port 0 of its family.
pub fn capture_udp(fd: impl AsFd) -> Result<UdpSocketState> {
    let fd = fd.as_fd();
    let name = socket_name(fd);
    let ctx = Ctx::new(Operation::Capture, name);
    let ty =
        sys::get_int(fd, libc::SOL_SOCKET, libc::SO_TYPE).map_err(ctx.sys("getsockopt SO_TYPE"))?;
    let proto = sys::get_int(fd, libc::SOL_SOCKET, libc::SO_PROTOCOL)
        .map_err(ctx.sys("getsockopt SO_PROTOCOL"))?;
    if !is_datagram_kind(ty, proto) {
        return Err(ctx.invalid("SO_TYPE", "not a UDP, UDP-lite, ping or raw socket"));
    }
    let ipv6 = crate::repair::is_ipv6(fd, ctx)?;
    let local = name.local.unwrap_or_else(|| {
        let ip = if ipv6 {
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        } else {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        };
        SocketAddr::new(ip, 0)
    });
    let mut socket = options::capture_socket(fd, ipv6, ctx)?;
    // The byte options (IP_OPTIONS, IPv6 extension headers, SO_TXTIME) from the shared table;
    // set again after bind with the other socket options.
    socket.more = crate::more_options::capture_datagram(fd, ipv6, ctx)?;
    Ok(UdpSocketState {
        local,
        remote: name.remote,
        socket,
        dropped_recv_bytes: 0,
    })
}

/// SIOCINQ / SIOCOUTQ of `fd`; 0 for a kind of socket without them (ping sockets).
fn queue_len(
    fd: BorrowedFd<'_>,
    request: libc::c_ulong,
) -> std::result::Result<i32, nix::errno::Errno> {
    use nix::errno::Errno;
    match sys::ioctl_int(fd, request) {
        Err(Errno::ENOTTY | Errno::EOPNOTSUPP | Errno::EINVAL) => Ok(0),
        other => other,
    }
}

/// Re-creates a UDP socket: options, `bind()` (unless it was never bound),
/// `connect()` when it was connected.
pub fn restore_udp(state: &UdpSocketState) -> Result<OwnedFd> {
    restore_udp_inner(state, None)
}

fn restore_udp_inner(state: &UdpSocketState, extras: Option<&UdpExtras>) -> Result<OwnedFd> {
    let name = SocketName::new(Some(state.local), state.remote);
    let ctx = Ctx::new(Operation::Restore, name);
    let ipv6 = state.local.is_ipv6();
    let domain = if ipv6 { Domain::IPV6 } else { Domain::IPV4 };
    let (ty, proto) = extras.map_or((libc::SOCK_DGRAM, libc::IPPROTO_UDP), UdpExtras::kind);
    let socket = Socket::new(
        domain,
        Type::from(ty).cloexec(),
        Some(Protocol::from(proto)),
    )
    .map_err(ctx.io("socket"))?;
    let fd = OwnedFd::from(socket);
    let b = fd.as_fd();
    options::apply_pre_bind(b, &state.socket, ctx)?;
    options::apply_buffers_if_changed(b, &state.socket, ctx)?;
    if let Some(extras) = extras {
        apply_pre_bind_extras(b, extras, ctx)?;
    }
    let sref = socket2::SockRef::from(&b);
    if state.local.port() != 0 || !state.local.ip().is_unspecified() {
        options::bind_as_dumped(b, state.local, ctx)?;
    }
    options::apply_socket(b, &state.socket, ipv6, ctx)?;
    if let Some(extras) = extras.filter(|e| !e.queue.is_empty()) {
        // Before connect: a connected socket takes only its peer's datagrams, and the queue
        // may hold others, from before the connect.
        crate::udp_queue::deliver(b, proto, &extras.queue, &extras.bind_device, ctx)?;
    }
    if let Some(remote) = state.remote {
        sref.connect(&SockAddr::from(remote))
            .map_err(ctx.io("connect"))?;
    }
    if let Some(extras) = extras {
        apply_post_connect_extras(b, extras, ctx)?;
    }
    Ok(fd)
}

/// What a UDP socket holds beyond its addresses and the shared socket options: its shutdown
/// state, UDP_CORK, SO_BINDTODEVICE and every integer option of [`INT_OPTIONS`] that differs
/// from a fresh socket's.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UdpExtras {
    /// Shut for reading (SHUT_RD).
    pub shutdown_read: bool,
    /// Shut for writing (SHUT_WR: sends fail with EPIPE).
    pub shutdown_write: bool,
    /// UDP_CORK on (no datagram pending: a pending one is refused at capture).
    pub cork: bool,
    /// SO_BINDTODEVICE: the interface name (empty: none).
    pub bind_device: Vec<u8>,
    /// (level, option, value) of every option of [`INT_OPTIONS`] whose value differs from a
    /// fresh socket's, in table order.
    pub options: Vec<(i32, i32, i32)>,
    /// SOCK_DGRAM or SOCK_RAW; 0 stands for SOCK_DGRAM.
    pub sock_type: i32,
    /// IPPROTO_UDP, IPPROTO_UDPLITE, IPPROTO_ICMP(V6) or a raw socket's protocol; 0 stands
    /// for IPPROTO_UDP on a SOCK_DGRAM socket.
    pub protocol: i32,
    /// The multicast groups joined, with their source filters (read by the caller, which
    /// knows the candidates: see [`crate::multicast_membership`]); joined again after connect.
    pub memberships: Vec<crate::Membership>,
    /// A raw ICMPv6 socket's ICMP6_FILTER (32 bytes, a bit per type blocked) when it blocks
    /// any type; empty otherwise.
    pub icmp6_filter: Vec<u8>,
    /// The datagrams waiting in a UDP or UDP-lite socket's receive queue, oldest first;
    /// delivered again after bind, before connect.
    pub queue: Vec<crate::QueuedDatagram>,
    /// SO_PEEK_OFF of a UDP or UDP-lite socket (`None`: off, -1), set after the queue.
    pub peek_offset: Option<u32>,
}

impl UdpExtras {
    /// (socket type, protocol) as socket(2) takes them.
    pub fn kind(&self) -> (i32, i32) {
        let ty = if self.sock_type == 0 {
            libc::SOCK_DGRAM
        } else {
            self.sock_type
        };
        let proto = if self.protocol == 0 && ty == libc::SOCK_DGRAM {
            libc::IPPROTO_UDP
        } else {
            self.protocol
        };
        (ty, proto)
    }
}

/// Whether (type, protocol) is a socket this module restores: UDP, UDP-lite, ICMP (ping)
/// datagram sockets and raw sockets.
pub fn is_datagram_kind(ty: i32, proto: i32) -> bool {
    match ty {
        libc::SOCK_DGRAM => matches!(
            proto,
            libc::IPPROTO_UDP | libc::IPPROTO_UDPLITE | libc::IPPROTO_ICMP | libc::IPPROTO_ICMPV6
        ),
        libc::SOCK_RAW => true,
        _ => false,
    }
}

/// `UDP_SEGMENT`.
const UDP_SEGMENT: i32 = 103;
/// `UDP_GRO`.
const UDP_GRO: i32 = 104;
/// `SOL_UDPLITE` and its checksum coverage options (linux/udp.h).
const SOL_UDPLITE: i32 = 136;
const UDPLITE_SEND_CSCOV: i32 = 10;
const UDPLITE_RECV_CSCOV: i32 = 11;
/// `SOL_RAW` / `ICMP_FILTER` (linux/icmp.h): the ICMP types a raw ICMP socket drops.
const SOL_RAW: i32 = 255;
const ICMP_FILTER: i32 = 1;
/// `ICMP6_FILTER` (linux/icmpv6.h), at level IPPROTO_ICMPV6.
const ICMP6_FILTER: i32 = 1;
/// `UDP_ENCAP_ESPINUDP` (linux/udp.h): the only encapsulation setsockopt makes whole
/// (ESP in UDP for IPsec NAT traversal, with the xfrm receive hook).
const UDP_ENCAP_ESPINUDP: i32 = 2;
/// `SO_PREFER_BUSY_POLL`, `SO_RCVMARK` (asm-generic/socket.h; not in libc for every target).
const SO_PREFER_BUSY_POLL: i32 = 69;
const SO_RCVMARK: i32 = 75;
/// `UDP_NO_CHECK6_TX` / `UDP_NO_CHECK6_RX`.
const UDP_NO_CHECK6_TX: i32 = 101;
const UDP_NO_CHECK6_RX: i32 = 102;

/// The integer options a UDP application sets, carried over when they differ from a fresh
/// socket's: (level, option, name, IPv6 sockets only / IPv4 only / both). Set before bind,
/// so IP_FREEBIND and IP_TRANSPARENT let a bind to an address the host lacks succeed again.
/// The IPv4 options of an IPv6 socket act on its IPv4-mapped traffic (an IPv6 raw socket
/// has none: ENOPROTOOPT, skipped); the other integer options of both families (IP_TOS of
/// an IPv6 socket, IP_UNICAST_IF, the IPv6 receive flags...) are in the table of
/// more_options.rs, set after bind.
pub const INT_OPTIONS: &[(i32, i32, &str, Family)] = &[
    (
        libc::SOL_SOCKET,
        libc::SO_PRIORITY,
        "SO_PRIORITY",
        Family::Both,
    ),
    (
        libc::SOL_SOCKET,
        libc::SO_TIMESTAMP,
        "SO_TIMESTAMP",
        Family::Both,
    ),
    (
        libc::SOL_SOCKET,
        libc::SO_TIMESTAMPNS,
        "SO_TIMESTAMPNS",
        Family::Both,
    ),
    (
        libc::SOL_SOCKET,
        libc::SO_TIMESTAMPING,
        "SO_TIMESTAMPING",
        Family::Both,
    ),
    (
        libc::SOL_SOCKET,
        libc::SO_RCVLOWAT,
        "SO_RCVLOWAT",
        Family::Both,
    ),
    (
        libc::SOL_SOCKET,
        libc::SO_RXQ_OVFL,
        "SO_RXQ_OVFL",
        Family::Both,
    ),
    (
        libc::SOL_SOCKET,
        libc::SO_NO_CHECK,
        "SO_NO_CHECK",
        Family::Both,
    ),
    (
        libc::SOL_SOCKET,
        libc::SO_DONTROUTE,
        "SO_DONTROUTE",
        Family::Both,
    ),
    (
        libc::SOL_SOCKET,
        libc::SO_BUSY_POLL,
        "SO_BUSY_POLL",
        Family::Both,
    ),
    (
        libc::SOL_SOCKET,
        SO_PREFER_BUSY_POLL,
        "SO_PREFER_BUSY_POLL",
        Family::Both,
    ),
    (libc::SOL_SOCKET, SO_RCVMARK, "SO_RCVMARK", Family::Both),
    (
        libc::SOL_SOCKET,
        libc::SO_INCOMING_CPU,
        "SO_INCOMING_CPU",
        Family::Both,
    ),
    (
        libc::SOL_SOCKET,
        libc::SO_SELECT_ERR_QUEUE,
        "SO_SELECT_ERR_QUEUE",
        Family::Both,
    ),
    (
        libc::SOL_SOCKET,
        libc::SO_ZEROCOPY,
        "SO_ZEROCOPY",
        Family::Both,
    ),
    (libc::SOL_IP, libc::IP_FREEBIND, "IP_FREEBIND", Family::Both),
    (
        libc::SOL_IP,
        libc::IP_TRANSPARENT,
        "IP_TRANSPARENT",
        Family::Both,
    ),
    (
        libc::SOL_IP,
        libc::IP_BIND_ADDRESS_NO_PORT,
        "IP_BIND_ADDRESS_NO_PORT",
        Family::Both,
    ),
    (libc::SOL_IP, libc::IP_TTL, "IP_TTL", Family::Both),
    (
        libc::SOL_IP,
        libc::IP_MULTICAST_TTL,
        "IP_MULTICAST_TTL",
        Family::Both,
    ),
    (
        libc::SOL_IP,
        libc::IP_MULTICAST_LOOP,
        "IP_MULTICAST_LOOP",
        Family::Both,
    ),
    (
        libc::SOL_IP,
        libc::IP_MULTICAST_ALL,
        "IP_MULTICAST_ALL",
        Family::Both,
    ),
    (
        libc::SOL_IP,
        libc::IP_MULTICAST_IF,
        "IP_MULTICAST_IF",
        Family::Both,
    ),
    (libc::SOL_IP, libc::IP_PKTINFO, "IP_PKTINFO", Family::Both),
    (libc::SOL_IP, libc::IP_RECVERR, "IP_RECVERR", Family::Both),
    (libc::SOL_IP, libc::IP_RECVTTL, "IP_RECVTTL", Family::Both),
    (libc::SOL_IP, libc::IP_RECVTOS, "IP_RECVTOS", Family::Both),
    (libc::SOL_IP, libc::IP_RECVOPTS, "IP_RECVOPTS", Family::Both),
    (libc::SOL_IP, libc::IP_RETOPTS, "IP_RETOPTS", Family::Both),
    (
        libc::SOL_IP,
        libc::IP_RECVORIGDSTADDR,
        "IP_RECVORIGDSTADDR",
        Family::Both,
    ),
    (
        libc::SOL_IP,
        libc::IP_MTU_DISCOVER,
        "IP_MTU_DISCOVER",
        Family::Both,
    ),
    (libc::SOL_IP, libc::IP_PASSSEC, "IP_PASSSEC", Family::Both),
    (libc::SOL_IP, libc::IP_CHECKSUM, "IP_CHECKSUM", Family::Both),
    (libc::SOL_IP, libc::IP_NODEFRAG, "IP_NODEFRAG", Family::Both),
    (libc::SOL_IPV6, IPV6_FREEBIND, "IPV6_FREEBIND", Family::V6),
    (
        libc::SOL_IPV6,
        libc::IPV6_TRANSPARENT,
        "IPV6_TRANSPARENT",
        Family::V6,
    ),
    (
        libc::SOL_IPV6,
        libc::IPV6_UNICAST_HOPS,
        "IPV6_UNICAST_HOPS",
        Family::V6,
    ),
    (
        libc::SOL_IPV6,
        libc::IPV6_MULTICAST_HOPS,
        "IPV6_MULTICAST_HOPS",
        Family::V6,
    ),
    (
        libc::SOL_IPV6,
        libc::IPV6_MULTICAST_LOOP,
        "IPV6_MULTICAST_LOOP",
        Family::V6,
    ),
    (
        libc::SOL_IPV6,
        libc::IPV6_MULTICAST_IF,
        "IPV6_MULTICAST_IF",
        Family::V6,
    ),
    (
        libc::SOL_IPV6,
        libc::IPV6_MULTICAST_ALL,
        "IPV6_MULTICAST_ALL",
        Family::V6,
    ),
    (
        libc::SOL_IPV6,
        libc::IPV6_RECVPKTINFO,
        "IPV6_RECVPKTINFO",
        Family::V6,
    ),
    (
        libc::SOL_IPV6,
        libc::IPV6_RECVERR,
        "IPV6_RECVERR",
        Family::V6,
    ),
    (
        libc::SOL_IPV6,
        libc::IPV6_RECVHOPLIMIT,
        "IPV6_RECVHOPLIMIT",
        Family::V6,
    ),
    (
        libc::SOL_IPV6,
        libc::IPV6_RECVTCLASS,
        "IPV6_RECVTCLASS",
        Family::V6,
    ),
    (
        libc::SOL_IPV6,
        libc::IPV6_MTU_DISCOVER,
        "IPV6_MTU_DISCOVER",
        Family::V6,
    ),
    (
        libc::SOL_IPV6,
        libc::IPV6_DONTFRAG,
        "IPV6_DONTFRAG",
        Family::V6,
    ),
    (
        libc::SOL_IPV6,
        libc::IPV6_RECVORIGDSTADDR,
        "IPV6_RECVORIGDSTADDR",
        Family::V6,
    ),
    (libc::SOL_UDP, UDP_SEGMENT, "UDP_SEGMENT", Family::Both),
    (
        SOL_UDPLITE,
        UDPLITE_SEND_CSCOV,
        "UDPLITE_SEND_CSCOV",
        Family::Both,
    ),
    (
        SOL_UDPLITE,
        UDPLITE_RECV_CSCOV,
        "UDPLITE_RECV_CSCOV",
        Family::Both,
    ),
    (libc::SOL_IP, libc::IP_HDRINCL, "IP_HDRINCL", Family::V4),
    (SOL_RAW, ICMP_FILTER, "ICMP_FILTER", Family::V4),
    (
        libc::SOL_IPV6,
        libc::IPV6_CHECKSUM,
        "IPV6_CHECKSUM",
        Family::V6,
    ),
    (libc::SOL_UDP, UDP_GRO, "UDP_GRO", Family::Both),
    (libc::SOL_UDP, libc::UDP_ENCAP, "UDP_ENCAP", Family::Both),
    (
        libc::SOL_UDP,
        UDP_NO_CHECK6_TX,
        "UDP_NO_CHECK6_TX",
        Family::V6,
    ),
    (
        libc::SOL_UDP,
        UDP_NO_CHECK6_RX,
        "UDP_NO_CHECK6_RX",
        Family::V6,
    ),
];

/// Which sockets an option of [`INT_OPTIONS`] applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// IPv4 and IPv6 sockets (an IPv6 socket's IPv4 options act on mapped traffic).
    Both,
    /// IPv4 sockets only.
    V4,
    /// IPv6 sockets only.
    V6,
}

impl Family {
    fn applies(self, ipv6: bool) -> bool {
        match self {
            Family::Both => true,
            Family::V4 => !ipv6,
            Family::V6 => ipv6,
        }
    }
}

/// Reads an option of the table: `None` when this kernel does not know it.
fn read_opt(
    fd: BorrowedFd<'_>,
    level: i32,
    name: i32,
) -> std::result::Result<Option<i32>, nix::errno::Errno> {
    match sys::get_int(fd, level, name) {
        Ok(v) => Ok(Some(v)),
        Err(nix::errno::Errno::ENOPROTOOPT | nix::errno::Errno::EOPNOTSUPP) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Captures [`UdpExtras`] of UDP socket `fd`. A datagram pending under UDP_CORK or MSG_MORE
/// (bytes in its send queue) is refused: the kernel gives no way to read it back; so are
/// SO_TIMESTAMPING's counter and bound PHC and an encapsulation other than ESP in UDP
/// (UDP_ENCAP), which setsockopt cannot make again.
pub fn capture_udp_extras(fd: impl AsFd) -> Result<UdpExtras> {
    let fd = fd.as_fd();
    let name = socket_name(fd);
    let ctx = Ctx::new(Operation::Capture, name);
    let ipv6 = crate::repair::is_ipv6(fd, ctx)?;
    let outq = queue_len(fd, libc::TIOCOUTQ as _).map_err(ctx.sys("ioctl SIOCOUTQ"))?;
    if outq > 0 {
        return Err(ctx.invalid(
            "SIOCOUTQ",
            format!(
                "{outq} bytes of a datagram held back (UDP_CORK or MSG_MORE) or still in the \
                 send queue: the kernel cannot give them back, so they cannot be restored"
            ),
        ));
    }
    let ty =
        sys::get_int(fd, libc::SOL_SOCKET, libc::SO_TYPE).map_err(ctx.sys("getsockopt SO_TYPE"))?;
    let proto = sys::get_int(fd, libc::SOL_SOCKET, libc::SO_PROTOCOL)
        .map_err(ctx.sys("getsockopt SO_PROTOCOL"))?;
    let domain = if ipv6 { Domain::IPV6 } else { Domain::IPV4 };
    // The defaults of a socket of the same kind. A restore makes the socket as this process
    // does (root, before the task's credentials are set): a ping socket this process may
    // not make (its group outside net.ipv4.ping_group_range) could not come back.
    let fresh = Socket::new(
        domain,
        Type::from(ty).cloexec(),
        Some(Protocol::from(proto)),
    )
    .map_err(|e| match e.raw_os_error() {
        Some(libc::EACCES | libc::EPERM) => ctx.invalid(
            "socket",
            format!(
                "a socket of type {ty} protocol {proto} cannot be made by cryo here ({e}; a \
                 ping socket needs cryo's group in net.ipv4.ping_group_range): it could not \
                 be restored"
            ),
        ),
        _ => ctx.io("socket")(e),
    })?;
    let fresh_fd = fresh.as_fd();
    let mut options = Vec::new();
    for &(level, opt, what, family) in INT_OPTIONS {
        if !family.applies(ipv6) {
            continue;
        }
        let Some(value) = read_opt(fd, level, opt).map_err(ctx.sys(what))? else {
            continue;
        };
        if read_opt(fresh_fd, level, opt).map_err(ctx.sys(what))? != Some(value) {
            options.push((level, opt, value));
        }
    }
    // The integer table keeps SO_TIMESTAMPING's flags; what it cannot carry is refused.
    crate::more_options::check_timestamping(fd, ctx)?;
    // An encapsulation other than ESP in UDP is a kernel tunnel's (L2TP, GTP...: their
    // receive hook and tunnel live in the kernel); setsockopt would give back the type only.
    if let Some(&(_, _, encap)) = options
        .iter()
        .find(|o| o.0 == libc::SOL_UDP && o.1 == libc::UDP_ENCAP)
    {
        if encap != UDP_ENCAP_ESPINUDP {
            return Err(ctx.invalid(
                "UDP_ENCAP",
                format!(
                    "encapsulation type {encap} (a kernel tunnel such as L2TP or GTP may hold                      the socket): only ESP in UDP ({UDP_ENCAP_ESPINUDP}) can be set again"
                ),
            ));
        }
    }
    let mut icmp6_filter = Vec::new();
    // An IPv4 raw socket of protocol 58 has no such filter (EOPNOTSUPP): ICMPv6 is IPv6's.
    if ty == libc::SOCK_RAW && proto == libc::IPPROTO_ICMPV6 && ipv6 {
        // struct icmp6_filter: 256 bits, one per ICMPv6 type (set: blocked).
        let mut filter = [0u8; 32];
        let n = sys::get_bytes(fd, libc::IPPROTO_ICMPV6, ICMP6_FILTER, &mut filter)
            .map_err(ctx.sys("getsockopt ICMP6_FILTER"))?;
        if filter[..n].iter().any(|&b| b != 0) {
            icmp6_filter = filter[..n].to_vec();
        }
    }
    let mut dev = [0u8; libc::IFNAMSIZ];
    let n = sys::get_bytes(fd, libc::SOL_SOCKET, libc::SO_BINDTODEVICE, &mut dev)
        .map_err(ctx.sys("getsockopt SO_BINDTODEVICE"))?;
    let end = dev[..n].iter().position(|&b| b == 0).unwrap_or(n);
    let shutdown = udp_shutdown(fd, ipv6, proto).map_err(ctx.io("sock_diag (shutdown state)"))?;
    let (queue, peek_offset) = if ty == libc::SOCK_DGRAM
        && (proto == libc::IPPROTO_UDP || proto == libc::IPPROTO_UDPLITE)
    {
        let (queue, peek_offset) = crate::udp_queue::capture(fd, ipv6, ctx)?;
        // In a SO_REUSEPORT group, a datagram delivered again goes to the member its
        // addresses hash to, maybe another one.
        if !queue.is_empty()
            && sys::get_int(fd, libc::SOL_SOCKET, libc::SO_REUSEPORT)
                .map_err(ctx.sys("getsockopt SO_REUSEPORT"))?
                != 0
        {
            return Err(TcpRepairError::QueueTemporary {
                op: ctx.op,
                sock: ctx.sock,
                what: format!(
                    "{} datagrams wait in a socket with SO_REUSEPORT: delivered again, each \
                     would go to the member of its group its addresses hash to",
                    queue.len()
                ),
            });
        }
        (queue, peek_offset)
    } else {
        refuse_raw_queue(fd, ty, proto, ctx)?;
        (Vec::new(), None)
    };
    Ok(UdpExtras {
        queue,
        peek_offset,
        shutdown_read: shutdown & 1 != 0,
        shutdown_write: shutdown & 2 != 0,
        cork: read_opt(fd, libc::SOL_UDP, libc::UDP_CORK)
            .map_err(ctx.sys("getsockopt UDP_CORK"))?
            .is_some_and(|v| v != 0),
        bind_device: dev[..end].to_vec(),
        icmp6_filter,
        options,
        sock_type: if ty == libc::SOCK_DGRAM { 0 } else { ty },
        protocol: if ty == libc::SOCK_DGRAM && proto == libc::IPPROTO_UDP {
            0
        } else {
            proto
        },
        memberships: Vec::new(),
    })
}

/// Refuses a raw or ping socket with datagrams waiting: raw_recvmsg and ping_recvmsg read
/// the first datagram only (no SO_PEEK_OFF on these sockets: EOPNOTSUPP), so the others
/// cannot be read without being taken. Poll tells a queue that holds any (a socket shut for
/// reading polls readable anyway: there its receive memory tells).
fn refuse_raw_queue(fd: BorrowedFd<'_>, ty: i32, proto: i32, ctx: Ctx) -> Result<()> {
    let revents = sys::poll_now(fd, libc::POLLIN | libc::POLLRDHUP)
        .map_err(ctx.io("poll (receive queue)"))?;
    let waiting = if revents & libc::POLLRDHUP == 0 {
        revents & libc::POLLIN != 0
    } else {
        crate::udp_queue::receive_memory(fd).map_err(ctx.sys("getsockopt SO_MEMINFO"))? > 0
    };
    if !waiting {
        return Ok(());
    }
    // SIOCINQ: the first datagram's length (raw sockets; ping sockets have no such ioctl).
    let first = queue_len(fd, libc::FIONREAD as _).map_err(ctx.sys("ioctl SIOCINQ"))?;
    let memory = crate::udp_queue::receive_memory(fd).map_err(ctx.sys("getsockopt SO_MEMINFO"))?;
    let kind = if ty == libc::SOCK_RAW {
        format!("raw socket (protocol {proto})")
    } else {
        "ping socket".to_string()
    };
    Err(TcpRepairError::QueueTemporary {
        op: ctx.op,
        sock: ctx.sock,
        what: format!(
            "datagrams wait in the {kind}'s receive queue ({memory} bytes of receive memory, \
             the first datagram {first} bytes): the kernel reads such a queue back only by \
             taking it"
        ),
    })
}

/// The shutdown state of datagram socket `fd` (RCV_SHUTDOWN 1 | SEND_SHUTDOWN 2), which only
/// inet_diag tells (INET_DIAG_SHUTDOWN) for UDP and UDP-lite; for raw and ping sockets (no
/// diag here) poll tells a socket shut for reading (POLLRDHUP) or both ways (POLLHUP), and
/// nothing tells one shut for writing only.
fn udp_shutdown(fd: BorrowedFd<'_>, ipv6: bool, protocol: i32) -> std::io::Result<u8> {
    if protocol == libc::IPPROTO_UDP || protocol == libc::IPPROTO_UDPLITE {
        return Ok(crate::diag::find(fd, ipv6, protocol as u8, u32::MAX)?.unwrap_or(0));
    }
    let revents = sys::poll_now(fd, libc::POLLIN | libc::POLLRDHUP)?;
    Ok(if revents & libc::POLLHUP != 0 {
        3
    } else if revents & libc::POLLRDHUP != 0 {
        1
    } else {
        0
    })
}

/// [`restore_udp`] with `extras`: its options and device set before bind, UDP_CORK and the
/// shutdown state after connect.
pub fn restore_udp_with(state: &UdpSocketState, extras: &UdpExtras) -> Result<OwnedFd> {
    restore_udp_inner(state, Some(extras))
}

/// Sets what [`UdpExtras`] holds that must be in place before bind.
fn apply_pre_bind_extras(fd: BorrowedFd<'_>, extras: &UdpExtras, ctx: Ctx) -> Result<()> {
    for &(level, opt, value) in &extras.options {
        let what = INT_OPTIONS
            .iter()
            .find(|o| o.0 == level && o.1 == opt)
            .map_or("setsockopt", |o| o.2);
        sys::set_int(fd, level, opt, value).map_err(ctx.sys(what))?;
    }
    if !extras.bind_device.is_empty() {
        sys::set_bytes(
            fd,
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            &extras.bind_device,
        )
        .map_err(ctx.sys("setsockopt SO_BINDTODEVICE"))?;
    }
    if !extras.icmp6_filter.is_empty() {
        sys::set_bytes(fd, libc::IPPROTO_ICMPV6, ICMP6_FILTER, &extras.icmp6_filter)
            .map_err(ctx.sys("setsockopt ICMP6_FILTER"))?;
    }
    Ok(())
}

/// Sets what [`UdpExtras`] holds that comes after connect: the multicast memberships,
/// UDP_CORK, then the shutdown state (an unconnected socket's shutdown(2) fails with ENOTCONN
/// but takes effect all the same).
fn apply_post_connect_extras(fd: BorrowedFd<'_>, extras: &UdpExtras, ctx: Ctx) -> Result<()> {
    for m in &extras.memberships {
        crate::multicast::join(fd, m).map_err(ctx.sys("MCAST_JOIN_GROUP / MCAST_MSFILTER"))?;
    }
    if let Some(offset) = extras.peek_offset {
        crate::udp_queue::set_peek_offset(fd, offset, ctx)?;
    }
    if extras.cork {
        sys::set_int(fd, libc::SOL_UDP, libc::UDP_CORK, 1)
            .map_err(ctx.sys("setsockopt UDP_CORK"))?;
    }
    let how = match (extras.shutdown_read, extras.shutdown_write) {
        (false, false) => return Ok(()),
        (true, false) => std::net::Shutdown::Read,
        (false, true) => std::net::Shutdown::Write,
        (true, true) => std::net::Shutdown::Both,
    };
    match socket2::SockRef::from(&fd).shutdown(how) {
        Err(e) if e.raw_os_error() != Some(libc::ENOTCONN) => Err(ctx.io("shutdown")(e)),
        _ => Ok(()),
    }
}
