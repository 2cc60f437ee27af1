//! Conversions between the engine's socket states and the image's messages (prost types of
//! cryo-proto): one [`SocketState`] per `Socket` record, its kind the `oneof`.
//!
//! ```text
//! dump:     TcpConnectionState | ListenerState | UdpSocketState | UnixSocketState
//!           | UnconnectedState | ConnectingState
//!             -> SocketState -> socket::State (TcpConnection | TcpListener | UdpSocket
//!                | UnixSocket | TcpUnconnected | TcpConnecting)
//! restore:  Socket --TryFrom--> SocketState: every address 4 or 16 bytes, ports and window
//!           shifts in range, the TCP state one a connection is captured in, the unix socket
//!           type known; a failure names the socket inode and the record
//! ```
//!
//! The TCP and UDP states are cryo-tcp-repair's types (foreign to this crate, as the prost
//! types are), so they convert through [`SocketState`], which is this crate's.

use std::net::{IpAddr, SocketAddr, SocketAddrV6};

use cryo_proto::image::{self as pb, socket::State};
use cryo_tcp_repair as tcp;

use super::error::{RecordProblem, SocketError};
use super::netlink::{self, NetlinkState};
use super::packet::{self, Membership, PacketState};
use super::packet_ring::{self, Rings};
use super::udp::UdpState;
use super::unix::{PendingConnection, UnixMessage, UnixSocketState};

/// The captured state of one socket, as the engine uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SocketState {
    /// An established (or closing) TCP connection, captured in repair mode.
    Connection(Box<tcp::TcpConnectionState>),
    /// A listening TCP socket.
    Listener(tcp::ListenerState),
    /// A UDP socket.
    Udp(Box<UdpState>),
    /// An AF_UNIX socket.
    Unix(Box<UnixSocketState>),
    /// An AF_PACKET socket.
    Packet(Box<PacketState>),
    /// An AF_NETLINK socket.
    Netlink(Box<NetlinkState>),
    /// A TCP socket neither listening nor connected.
    TcpUnconnected(Box<tcp::UnconnectedState>),
    /// A TCP socket whose connect is in progress (SYN_SENT).
    TcpConnecting(Box<tcp::ConnectingState>),
}

impl SocketState {
    /// The record's name, for messages.
    pub(crate) fn record_name(&self) -> &'static str {
        match self {
            SocketState::Connection(_) => CONNECTION,
            SocketState::Listener(_) => LISTENER,
            SocketState::Udp(_) => UDP,
            SocketState::Unix(_) => UNIX,
            SocketState::Packet(_) => PACKET,
            SocketState::Netlink(_) => NETLINK,
            SocketState::TcpUnconnected(_) => TCP_UNCONNECTED,
            SocketState::TcpConnecting(_) => TCP_CONNECTING,
        }
    }
}

const CONNECTION: &str = "tcp connection";
const LISTENER: &str = "tcp listener";
const UDP: &str = "udp socket";
const UNIX: &str = "unix socket";
const PACKET: &str = "packet socket";
const NETLINK: &str = "netlink socket";
const TCP_UNCONNECTED: &str = "tcp socket not connected";
const TCP_CONNECTING: &str = "tcp connect in progress";

/// The name of the record `s` holds, for messages ("socket" when it holds none).
pub(crate) fn record_name(s: &pb::Socket) -> &'static str {
    match &s.state {
        Some(State::TcpConnection(_)) => CONNECTION,
        Some(State::TcpListener(_)) => LISTENER,
        Some(State::Udp(_)) => UDP,
        Some(State::Unix(_)) => UNIX,
        Some(State::Packet(_)) => PACKET,
        Some(State::Netlink(_)) => NETLINK,
        Some(State::TcpUnconnected(_)) => TCP_UNCONNECTED,
        Some(State::TcpConnecting(_)) => TCP_CONNECTING,
        None => "socket",
    }
}

impl From<&SocketState> for State {
    fn from(s: &SocketState) -> Self {
        match s {
            SocketState::Connection(c) => State::TcpConnection(connection_to(c)),
            SocketState::Listener(l) => State::TcpListener(pb::TcpListener {
                local: Some(addr_to(&l.local)),
                backlog: l.backlog,
                dropped_pending: l.dropped_pending,
                socket: Some(options_to(&l.socket)),
                tcp: Some(tcp_options_to(&l.tcp)),
                bound_with_reuseport: l.bound_with_reuseport,
            }),
            SocketState::Udp(u) => State::Udp(pb::UdpSocket {
                local: Some(addr_to(&u.socket.local)),
                remote: u.socket.remote.as_ref().map(addr_to),
                socket: Some(options_to(&u.socket.socket)),
                dropped_recv_bytes: u.socket.dropped_recv_bytes,
                shutdown_read: u.extras.shutdown_read,
                shutdown_write: u.extras.shutdown_write,
                cork: u.extras.cork,
                bind_device: u.extras.bind_device.clone(),
                icmp6_filter: u.extras.icmp6_filter.clone(),
                int_options: int_options_to(&u.extras.options),
                sock_type: u.extras.sock_type,
                protocol: u.extras.protocol,
                memberships: u.extras.memberships.iter().map(membership_to).collect(),
                queue: u.extras.queue.iter().map(datagram_to).collect(),
                peek_offset: u.extras.peek_offset,
            }),
            SocketState::Unix(u) => State::Unix(pb::UnixSocket::from(&**u)),
            SocketState::Packet(p) => State::Packet(packet_to(p)),
            SocketState::Netlink(n) => State::Netlink(netlink_to(n)),
            SocketState::TcpUnconnected(t) => State::TcpUnconnected(pb::TcpUnconnected {
                local: Some(addr_to(&t.local)),
                bound: t.bound,
                local_port_range: t.local_port_range,
                socket: Some(options_to(&t.socket)),
                tcp: Some(tcp_options_to(&t.tcp)),
                closed_at_dump: t.closed_at_dump,
            }),
            SocketState::TcpConnecting(c) => State::TcpConnecting(pb::TcpConnecting {
                local: Some(addr_to(&c.local)),
                remote: Some(addr_to(&c.remote)),
                local_port_range: c.local_port_range,
                socket: Some(options_to(&c.socket)),
                tcp: Some(tcp_options_to(&c.tcp)),
            }),
        }
    }
}

impl TryFrom<&pb::Socket> for SocketState {
    type Error = SocketError;

    fn try_from(s: &pb::Socket) -> Result<Self, SocketError> {
        let record = record_name(s);
        let fail = |problem| SocketError::Record {
            ino: s.ino,
            record,
            problem,
        };
        match &s.state {
            Some(State::TcpConnection(c)) => connection_from(c)
                .map(|c| SocketState::Connection(Box::new(c)))
                .map_err(fail),
            Some(State::TcpListener(l)) => {
                listener_from(l).map(SocketState::Listener).map_err(fail)
            }
            Some(State::Udp(u)) => udp_from(u)
                .map(|u| SocketState::Udp(Box::new(u)))
                .map_err(fail),
            Some(State::Unix(u)) => UnixSocketState::try_from(u)
                .map(|u| SocketState::Unix(Box::new(u)))
                .map_err(fail),
            Some(State::Packet(p)) => packet_from(p)
                .map(|p| SocketState::Packet(Box::new(p)))
                .map_err(fail),
            Some(State::Netlink(n)) => netlink_from(n)
                .map(|n| SocketState::Netlink(Box::new(n)))
                .map_err(fail),
            Some(State::TcpUnconnected(t)) => Ok(SocketState::TcpUnconnected(Box::new(
                tcp::UnconnectedState {
                    local: addr_from("local", t.local.as_ref()).map_err(fail)?,
                    bound: t.bound,
                    local_port_range: t.local_port_range,
                    socket: options_from(t.socket.as_ref()),
                    tcp: tcp_options_from(t.tcp.as_ref()),
                    closed_at_dump: t.closed_at_dump,
                },
            ))),
            Some(State::TcpConnecting(c)) => {
                let local = addr_from("local", c.local.as_ref()).map_err(fail)?;
                let remote = addr_from("remote", c.remote.as_ref()).map_err(fail)?;
                if local.is_ipv4() != remote.is_ipv4() {
                    return Err(fail(RecordProblem::Families));
                }
                Ok(SocketState::TcpConnecting(Box::new(tcp::ConnectingState {
                    local,
                    remote,
                    local_port_range: c.local_port_range,
                    socket: options_from(c.socket.as_ref()),
                    tcp: tcp_options_from(c.tcp.as_ref()),
                })))
            }
            None => Err(fail(RecordProblem::NoState)),
        }
    }
}

fn connection_to(c: &tcp::TcpConnectionState) -> pb::TcpConnection {
    pb::TcpConnection {
        local: Some(addr_to(&c.local)),
        remote: Some(addr_to(&c.remote)),
        state: tcp_state_to(c.state) as i32,
        send_seq: c.send_seq,
        recv_seq: c.recv_seq,
        send_queue_sent: c.send_queue_sent.clone(),
        send_queue_unsent: c.send_queue_unsent.clone(),
        recv_queue: c.recv_queue.clone(),
        mss: c.handshake.mss,
        window_scale: c.handshake.window_scale.map(|w| pb::WindowScale {
            send: w.send.into(),
            receive: w.receive.into(),
        }),
        sack: c.handshake.sack,
        timestamps: c.handshake.timestamps,
        timestamp: c.timestamp,
        window: c.window.as_ref().map(window_to),
        socket: Some(options_to(&c.socket)),
        tcp: Some(tcp_options_to(&c.tcp)),
        reset_error: c.reset_error,
        shut_read: c.shut_read,
    }
}

fn connection_from(c: &pb::TcpConnection) -> Result<tcp::TcpConnectionState, RecordProblem> {
    let local = addr_from("local", c.local.as_ref())?;
    let remote = addr_from("remote", c.remote.as_ref())?;
    if local.is_ipv4() != remote.is_ipv4() {
        return Err(RecordProblem::Families);
    }
    /// The largest window shift TCP allows (RFC 7323).
    const MAX_SHIFT: u32 = 14;
    let shift = |field, v: u32| {
        u8::try_from(v)
            .ok()
            .filter(|_| v <= MAX_SHIFT)
            .ok_or(RecordProblem::Range {
                field,
                value: v.into(),
            })
    };
    let window_scale = match &c.window_scale {
        Some(w) => Some(tcp::WindowScale {
            send: shift("window_scale.send", w.send)?,
            receive: shift("window_scale.receive", w.receive)?,
        }),
        None => None,
    };
    Ok(tcp::TcpConnectionState {
        local,
        remote,
        state: tcp_state_from(c.state)?,
        send_seq: c.send_seq,
        recv_seq: c.recv_seq,
        send_queue_sent: c.send_queue_sent.clone(),
        send_queue_unsent: c.send_queue_unsent.clone(),
        recv_queue: c.recv_queue.clone(),
        handshake: tcp::HandshakeOptions {
            mss: c.mss,
            window_scale,
            sack: c.sack,
            timestamps: c.timestamps,
        },
        timestamp: c.timestamp,
        window: c.window.as_ref().map(window_of),
        socket: options_from(c.socket.as_ref()),
        tcp: tcp_options_from(c.tcp.as_ref()),
        reset_error: match c.reset_error {
            0 | libc::ECONNRESET | libc::EPIPE => c.reset_error,
            other => {
                return Err(RecordProblem::Range {
                    field: "reset_error",
                    value: other.into(),
                })
            }
        },
        shut_read: c.shut_read,
    })
}

fn listener_from(l: &pb::TcpListener) -> Result<tcp::ListenerState, RecordProblem> {
    Ok(tcp::ListenerState {
        local: addr_from("local", l.local.as_ref())?,
        backlog: l.backlog,
        dropped_pending: l.dropped_pending,
        socket: options_from(l.socket.as_ref()),
        tcp: tcp_options_from(l.tcp.as_ref()),
        bound_with_reuseport: l.bound_with_reuseport,
    })
}

fn udp_from(u: &pb::UdpSocket) -> Result<UdpState, RecordProblem> {
    let local = addr_from("local", u.local.as_ref())?;
    let remote = match &u.remote {
        Some(r) => Some(addr_from("remote", Some(r))?),
        None => None,
    };
    if remote.is_some_and(|r| r.is_ipv4() != local.is_ipv4()) {
        return Err(RecordProblem::Families);
    }
    let kind = tcp::UdpExtras {
        sock_type: u.sock_type,
        protocol: u.protocol,
        ..tcp::UdpExtras::default()
    }
    .kind();
    if !tcp::is_datagram_kind(kind.0, kind.1) {
        return Err(RecordProblem::Range {
            field: "sock_type",
            value: u.sock_type.into(),
        });
    }
    Ok(UdpState {
        socket: tcp::UdpSocketState {
            local,
            remote,
            socket: options_from(u.socket.as_ref()),
            dropped_recv_bytes: u.dropped_recv_bytes,
        },
        extras: tcp::UdpExtras {
            shutdown_read: u.shutdown_read,
            shutdown_write: u.shutdown_write,
            cork: u.cork,
            bind_device: u.bind_device.clone(),
            icmp6_filter: u.icmp6_filter.clone(),
            options: u
                .int_options
                .iter()
                .map(|o| (o.level, o.name, o.value))
                .collect(),
            sock_type: u.sock_type,
            protocol: u.protocol,
            memberships: u
                .memberships
                .iter()
                .map(membership_from)
                .collect::<Result<_, _>>()?,
            queue: u
                .queue
                .iter()
                .map(datagram_from)
                .collect::<Result<_, _>>()?,
            peek_offset: u.peek_offset,
        },
    })
}

fn datagram_to(d: &tcp::QueuedDatagram) -> pb::QueuedDatagram {
    pb::QueuedDatagram {
        payload: d.payload.clone(),
        source: Some(addr_to(&d.source)),
        destination: Some(addr_to(&d.destination)),
        ttl: d.ttl.into(),
        tos: d.tos.into(),
        ifindex: d.ifindex,
    }
}

/// A queued datagram of the image: its two addresses of one family, TTL and TOS bytes, a
/// payload a UDP datagram can carry.
fn datagram_from(d: &pb::QueuedDatagram) -> Result<tcp::QueuedDatagram, RecordProblem> {
    let source = addr_from("queue.source", d.source.as_ref())?;
    let destination = addr_from("queue.destination", d.destination.as_ref())?;
    if source.is_ipv4() != destination.is_ipv4() {
        return Err(RecordProblem::Families);
    }
    let byte = |field, v: u32| {
        u8::try_from(v).map_err(|_| RecordProblem::Range {
            field,
            value: v.into(),
        })
    };
    /// The largest UDP payload (a 16-bit length, 8 bytes of which the header's).
    const MAX_PAYLOAD: usize = 65535 - 8;
    if d.payload.len() > MAX_PAYLOAD {
        return Err(RecordProblem::Range {
            field: "queue.payload",
            value: d.payload.len() as i64,
        });
    }
    Ok(tcp::QueuedDatagram {
        payload: d.payload.clone(),
        source,
        destination,
        ttl: byte("queue.ttl", d.ttl)?,
        tos: byte("queue.tos", d.tos)?,
        ifindex: d.ifindex,
    })
}

fn int_options_to(options: &[(i32, i32, i32)]) -> Vec<pb::SocketIntOption> {
    options
        .iter()
        .map(|&(level, name, value)| pb::SocketIntOption { level, name, value })
        .collect()
}

/// The integer options of a record, each one `known` says restore sets.
fn int_options_from(
    options: &[pb::SocketIntOption],
    known: fn(i32, i32) -> bool,
) -> Result<Vec<(i32, i32, i32)>, RecordProblem> {
    options
        .iter()
        .map(|o| {
            if known(o.level, o.name) {
                Ok((o.level, o.name, o.value))
            } else {
                Err(RecordProblem::Range {
                    field: "options",
                    value: i64::from(o.name),
                })
            }
        })
        .collect()
}

/// SOCK_RAW or SOCK_DGRAM, the types packet and netlink sockets are restored with.
fn raw_or_dgram(sock_type: i32) -> Result<i32, RecordProblem> {
    if sock_type == libc::SOCK_RAW || sock_type == libc::SOCK_DGRAM {
        Ok(sock_type)
    } else {
        Err(RecordProblem::Range {
            field: "sock_type",
            value: sock_type.into(),
        })
    }
}

fn packet_to(p: &PacketState) -> pb::PacketSocket {
    pb::PacketSocket {
        sock_type: p.sock_type,
        protocol: p.protocol.into(),
        bound_protocol: p.bound_protocol.into(),
        ifindex: p.ifindex,
        options: int_options_to(&p.options),
        fanout: p.fanout,
        memberships: p
            .memberships
            .iter()
            .map(|m| pb::PacketMembership {
                ifindex: m.ifindex,
                mr_type: m.mr_type.into(),
                count: m.count,
                address: m.address.clone(),
            })
            .collect(),
        socket: Some(options_to(&p.socket)),
        rx_ring: p.rings.as_ref().and_then(|r| r.rx.as_ref()).map(ring_to),
        tx_ring: p.rings.as_ref().and_then(|r| r.tx.as_ref()).map(ring_to),
        ring_frames: p
            .rings
            .as_ref()
            .map(|r| r.frames.clone())
            .unwrap_or_default(),
        rx_head: p.rings.as_ref().map_or(0, |r| r.rx_head),
        spkt_device: p.spkt_device.clone(),
    }
}

fn ring_to(r: &packet_ring::Ring) -> pb::PacketRing {
    pb::PacketRing {
        block_size: r.block_size,
        block_nr: r.block_nr,
        frame_size: r.frame_size,
        frame_nr: r.frame_nr,
        retire_blk_tov: r.retire_blk_tov,
        sizeof_priv: r.sizeof_priv,
        feature_req_word: r.features,
    }
}

fn ring_from(r: &pb::PacketRing) -> packet_ring::Ring {
    packet_ring::Ring {
        block_size: r.block_size,
        block_nr: r.block_nr,
        frame_size: r.frame_size,
        frame_nr: r.frame_nr,
        retire_blk_tov: r.retire_blk_tov,
        sizeof_priv: r.sizeof_priv,
        features: r.feature_req_word,
    }
}

/// The rings of packet socket record `p`, checked (None: it has none).
fn rings_from(p: &pb::PacketSocket) -> Result<Option<Box<Rings>>, RecordProblem> {
    if p.rx_ring.is_none() && p.tx_ring.is_none() {
        if !p.ring_frames.is_empty() || p.rx_head != 0 {
            return Err(RecordProblem::Missing { field: "rx_ring" });
        }
        return Ok(None);
    }
    let rings = Rings {
        rx: p.rx_ring.as_ref().map(ring_from),
        tx: p.tx_ring.as_ref().map(ring_from),
        frames: p.ring_frames.clone(),
        rx_head: p.rx_head,
    };
    packet_ring::check(&rings).map_err(|_| RecordProblem::Range {
        field: "rx_ring/tx_ring",
        value: p.ring_frames.len() as i64,
    })?;
    Ok(Some(Box::new(rings)))
}

fn packet_from(p: &pb::PacketSocket) -> Result<PacketState, RecordProblem> {
    let u16_of = |field, v: u32| {
        u16::try_from(v).map_err(|_| RecordProblem::Range {
            field,
            value: v.into(),
        })
    };
    let memberships = p
        .memberships
        .iter()
        .map(|m| {
            if m.address.len() > 32 {
                return Err(RecordProblem::Range {
                    field: "memberships.address",
                    value: m.address.len() as i64,
                });
            }
            Ok(Membership {
                ifindex: m.ifindex,
                mr_type: u16_of("memberships.mr_type", m.mr_type)?,
                count: m.count,
                address: m.address.clone(),
            })
        })
        .collect::<Result<_, _>>()?;
    let sock_type = match p.sock_type {
        packet::SOCK_PACKET => packet::SOCK_PACKET,
        t => raw_or_dgram(t)?,
    };
    if p.spkt_device.len() >= 14 || (sock_type != packet::SOCK_PACKET && !p.spkt_device.is_empty())
    {
        return Err(RecordProblem::Range {
            field: "spkt_device",
            value: p.spkt_device.len() as i64,
        });
    }
    Ok(PacketState {
        sock_type,
        protocol: u16_of("protocol", p.protocol)?,
        bound_protocol: u16_of("bound_protocol", p.bound_protocol)?,
        ifindex: p.ifindex,
        options: int_options_from(&p.options, packet::is_known_option)?,
        fanout: p.fanout,
        memberships,
        socket: options_from(p.socket.as_ref()),
        rings: rings_from(p)?,
        spkt_device: p.spkt_device.clone(),
    })
}

fn netlink_to(n: &NetlinkState) -> pb::NetlinkSocket {
    let (dst_portid, dst_group) = n.dst.unwrap_or_default();
    pb::NetlinkSocket {
        sock_type: n.sock_type,
        protocol: n.protocol,
        portid: n.portid,
        groups: n.groups.clone(),
        connected: n.dst.is_some(),
        dst_portid,
        dst_group,
        options: int_options_to(&n.options),
        socket: Some(options_to(&n.socket)),
    }
}

fn netlink_from(n: &pb::NetlinkSocket) -> Result<NetlinkState, RecordProblem> {
    if n.dst_group > netlink::MAX_DST_GROUP {
        return Err(RecordProblem::Range {
            field: "dst_group",
            value: n.dst_group.into(),
        });
    }
    if !(0..=i32::from(u8::MAX)).contains(&n.protocol) {
        return Err(RecordProblem::Range {
            field: "protocol",
            value: n.protocol.into(),
        });
    }
    Ok(NetlinkState {
        sock_type: raw_or_dgram(n.sock_type)?,
        protocol: n.protocol,
        portid: n.portid,
        groups: n.groups.clone(),
        dst: n.connected.then_some((n.dst_portid, n.dst_group)),
        options: int_options_from(&n.options, netlink::is_known_option)?,
        socket: options_from(n.socket.as_ref()),
    })
}

fn membership_to(m: &tcp::Membership) -> pb::McastMembership {
    let bytes = |a: &IpAddr| match a {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    pb::McastMembership {
        group: bytes(&m.group),
        ifindex: m.ifindex,
        include: m.include,
        sources: m.sources.iter().map(bytes).collect(),
    }
}

fn membership_from(m: &pb::McastMembership) -> Result<tcp::Membership, RecordProblem> {
    let ip = |field, b: &[u8]| -> Result<IpAddr, RecordProblem> {
        if let Ok(v4) = <[u8; 4]>::try_from(b) {
            return Ok(v4.into());
        }
        <[u8; 16]>::try_from(b)
            .map(IpAddr::from)
            .map_err(|_| RecordProblem::Address {
                field,
                len: b.len(),
            })
    };
    let group = ip("memberships.group", &m.group)?;
    if !group.is_multicast() {
        return Err(RecordProblem::Range {
            field: "memberships.group",
            value: 0,
        });
    }
    Ok(tcp::Membership {
        group,
        ifindex: m.ifindex,
        include: m.include,
        sources: m
            .sources
            .iter()
            .map(|s| ip("memberships.sources", s))
            .collect::<Result<_, _>>()?,
    })
}

fn tcp_state_to(s: tcp::TcpState) -> pb::TcpState {
    match s {
        tcp::TcpState::Established => pb::TcpState::Established,
        tcp::TcpState::FinWait1 => pb::TcpState::FinWait1,
        tcp::TcpState::FinWait2 => pb::TcpState::FinWait2,
        tcp::TcpState::CloseWait => pb::TcpState::CloseWait,
        tcp::TcpState::LastAck => pb::TcpState::LastAck,
        tcp::TcpState::Closing => pb::TcpState::Closing,
        tcp::TcpState::Close => pb::TcpState::Close,
    }
}

fn tcp_state_from(raw: i32) -> Result<tcp::TcpState, RecordProblem> {
    Ok(match pb::TcpState::try_from(raw) {
        Ok(pb::TcpState::Established) => tcp::TcpState::Established,
        Ok(pb::TcpState::FinWait1) => tcp::TcpState::FinWait1,
        Ok(pb::TcpState::FinWait2) => tcp::TcpState::FinWait2,
        Ok(pb::TcpState::CloseWait) => tcp::TcpState::CloseWait,
        Ok(pb::TcpState::LastAck) => tcp::TcpState::LastAck,
        Ok(pb::TcpState::Closing) => tcp::TcpState::Closing,
        Ok(pb::TcpState::Close) => tcp::TcpState::Close,
        Ok(pb::TcpState::Invalid) | Err(_) => {
            return Err(RecordProblem::Range {
                field: "state",
                value: raw.into(),
            })
        }
    })
}

fn addr_to(a: &SocketAddr) -> pb::InetAddr {
    match a {
        SocketAddr::V4(v4) => pb::InetAddr {
            ip: v4.ip().octets().to_vec(),
            port: v4.port().into(),
            ..pb::InetAddr::default()
        },
        SocketAddr::V6(v6) => pb::InetAddr {
            ip: v6.ip().octets().to_vec(),
            port: v6.port().into(),
            scope_id: v6.scope_id(),
            flowinfo: v6.flowinfo(),
        },
    }
}

fn addr_from(field: &'static str, a: Option<&pb::InetAddr>) -> Result<SocketAddr, RecordProblem> {
    let a = a.ok_or(RecordProblem::Missing { field })?;
    let port = u16::try_from(a.port).map_err(|_| RecordProblem::Range {
        field,
        value: a.port.into(),
    })?;
    if let Ok(v4) = <[u8; 4]>::try_from(a.ip.as_slice()) {
        return Ok(SocketAddr::new(IpAddr::from(v4), port));
    }
    let v6 = <[u8; 16]>::try_from(a.ip.as_slice()).map_err(|_| RecordProblem::Address {
        field,
        len: a.ip.len(),
    })?;
    Ok(SocketAddr::V6(SocketAddrV6::new(
        v6.into(),
        port,
        a.flowinfo,
        a.scope_id,
    )))
}

/// The two conversions between an engine struct and a message with the same fields, one for
/// one (the message's optional fields are the struct's `Option`s); the lists after `each`
/// are converted element by element with the two functions named.
macro_rules! field_for_field {
    (
        $to:ident, $from:ident, $engine:path, $message:path, [$($field:ident),* $(,)?]
        $(, each [$($list:ident: $list_to:ident, $list_of:ident),* $(,)?])?
    ) => {
        fn $to(o: &$engine) -> $message {
            $message {
                $($field: o.$field.clone(),)*
                $($($list: o.$list.iter().map($list_to).collect(),)*)?
            }
        }

        fn $from(o: &$message) -> $engine {
            $engine {
                $($field: o.$field.clone(),)*
                $($($list: o.$list.iter().map($list_of).collect(),)*)?
            }
        }
    };
}

// Socket options and their message: the table's options one for one, the others as raw
// (level, name, bytes) records.
field_for_field!(
    raw_option_to,
    raw_option_of,
    tcp::RawOption,
    pb::RawSocketOption,
    [level, name, value]
);

field_for_field!(
    options_to,
    options_of,
    tcp::SocketOptions,
    pb::SocketOptions,
    [
        reuse_addr,
        reuse_port,
        send_buffer,
        recv_buffer,
        linger,
        mark,
        traffic_class,
        v6_only,
        broadcast,
    ],
    each [more: raw_option_to, raw_option_of]
);

field_for_field!(
    tcp_options_to,
    tcp_options_of,
    tcp::TcpSocketOptions,
    pb::TcpOptions,
    [
        keepalive,
        keep_idle,
        keep_interval,
        keep_count,
        no_delay,
        cork,
        user_timeout,
        congestion,
    ]
);

field_for_field!(
    window_to,
    window_of,
    tcp::TcpWindow,
    pb::TcpWindow,
    [snd_wl1, snd_wnd, max_window, rcv_wnd, rcv_wup]
);

/// Socket options of a record; absent, the defaults (nothing set).
fn options_from(o: Option<&pb::SocketOptions>) -> tcp::SocketOptions {
    o.map_or_else(tcp::SocketOptions::default, options_of)
}

/// TCP options of a record; absent, the defaults (nothing set).
fn tcp_options_from(o: Option<&pb::TcpOptions>) -> tcp::TcpSocketOptions {
    o.map_or_else(tcp::TcpSocketOptions::default, tcp_options_of)
}

impl From<&UnixSocketState> for pb::UnixSocket {
    fn from(u: &UnixSocketState) -> Self {
        pb::UnixSocket {
            sock_type: u.sock_type.raw(),
            listening: u.listening,
            backlog: u.backlog,
            name: u.name.clone(),
            file_attrs: u
                .file_attrs
                .map(|(mode, uid, gid)| pb::SocketFileAttrs { mode, uid, gid }),
            shutdown_read: u.shutdown.0,
            shutdown_write: u.shutdown.1,
            queue: u.queue.iter().map(pb::UnixMessage::from).collect(),
            passcred: u.passcred,
            sndbuf: u.sndbuf,
            rcvbuf: u.rcvbuf,
            peek_off: u.peek_off,
            pending: u
                .pending
                .iter()
                .map(|p| pb::UnixPendingConnection {
                    client_ino: p.client_ino,
                    queue: p.queue.iter().map(pb::UnixMessage::from).collect(),
                    peer_cred: p.peer_cred.as_ref().map(peer_cred_to),
                })
                .collect(),
            peer_closed: u.peer_closed,
            reset_pending: u.reset_pending,
            connect_to: u.connect_to.clone(),
            bind_dir: u.bind_dir.clone(),
            unlinked: u.unlinked,
            name_shared: u.name_shared,
            socket: u.socket.as_ref().map(options_to),
            peer_cred: u.peer_cred.as_ref().map(peer_cred_to),
        }
    }
}

impl TryFrom<&pb::UnixSocket> for UnixSocketState {
    type Error = RecordProblem;

    fn try_from(u: &pb::UnixSocket) -> Result<Self, RecordProblem> {
        let sock_type =
            cryo_unix_sockets::SockType::from_raw(u.sock_type).ok_or(RecordProblem::Range {
                field: "sock_type",
                value: u.sock_type.into(),
            })?;
        Ok(UnixSocketState {
            sock_type,
            listening: u.listening,
            backlog: u.backlog,
            name: u.name.clone(),
            file_attrs: u.file_attrs.map(|a| (a.mode, a.uid, a.gid)),
            shutdown: (u.shutdown_read, u.shutdown_write),
            queue: u.queue.iter().map(UnixMessage::from).collect(),
            passcred: u.passcred,
            sndbuf: u.sndbuf,
            rcvbuf: u.rcvbuf,
            peek_off: u.peek_off,
            pending: u
                .pending
                .iter()
                .map(|p| PendingConnection {
                    client_ino: p.client_ino,
                    queue: p.queue.iter().map(UnixMessage::from).collect(),
                    peer_cred: p.peer_cred.as_ref().map(peer_cred_of),
                })
                .collect(),
            peer_closed: u.peer_closed,
            reset_pending: u.reset_pending,
            connect_to: u.connect_to.clone(),
            bind_dir: u.bind_dir.clone(),
            unlinked: u.unlinked,
            name_shared: u.name_shared,
            socket: u.socket.as_ref().map(options_of),
            peer_cred: u.peer_cred.as_ref().map(peer_cred_of),
        })
    }
}

/// The image's record of peer credentials `c`.
fn peer_cred_to(c: &cryo_unix_sockets::restore::PeerCred) -> pb::UnixPeerCred {
    pb::UnixPeerCred {
        pid: c.pid,
        uid: c.uid,
        gid: c.gid,
        groups: c.groups.clone(),
    }
}

/// The peer credentials image record `c` holds.
fn peer_cred_of(c: &pb::UnixPeerCred) -> cryo_unix_sockets::restore::PeerCred {
    cryo_unix_sockets::restore::PeerCred {
        pid: c.pid,
        uid: c.uid,
        gid: c.gid,
        groups: c.groups.clone(),
    }
}

impl From<&UnixMessage> for pb::UnixMessage {
    fn from(m: &UnixMessage) -> Self {
        pb::UnixMessage {
            data: m.data.clone(),
            creds: m
                .creds
                .map(|(pid, uid, gid)| pb::UnixCreds { pid, uid, gid }),
            fds: m.fds.clone(),
            from_unnamed: m.from_unnamed,
            from_name: m.from_name.clone(),
        }
    }
}

impl From<&pb::UnixMessage> for UnixMessage {
    fn from(m: &pb::UnixMessage) -> Self {
        UnixMessage {
            data: m.data.clone(),
            creds: m.creds.map(|c| (c.pid, c.uid, c.gid)),
            fds: m.fds.clone(),
            from_unnamed: m.from_unnamed,
            from_name: m.from_name.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> tcp::SocketOptions {
        tcp::SocketOptions {
            reuse_addr: true,
            send_buffer: 4608,
            recv_buffer: 131072,
            linger: Some(3),
            v6_only: Some(false),
            ..tcp::SocketOptions::default()
        }
    }

    fn connection(local: &str, remote: &str) -> tcp::TcpConnectionState {
        tcp::TcpConnectionState {
            local: local.parse().unwrap(),
            remote: remote.parse().unwrap(),
            state: tcp::TcpState::FinWait1,
            send_seq: 0xfff0_0000,
            recv_seq: 7,
            send_queue_sent: b"sent".to_vec(),
            send_queue_unsent: b"unsent".to_vec(),
            recv_queue: vec![0, 255, 1],
            handshake: tcp::HandshakeOptions {
                mss: 1448,
                window_scale: Some(tcp::WindowScale {
                    send: 7,
                    receive: 14,
                }),
                sack: true,
                timestamps: true,
            },
            timestamp: Some(123),
            window: Some(tcp::TcpWindow {
                snd_wl1: 1,
                snd_wnd: 2,
                max_window: 3,
                rcv_wnd: 4,
                rcv_wup: 5,
            }),
            socket: options(),
            tcp: tcp::TcpSocketOptions {
                keepalive: true,
                congestion: "cubic".into(),
                ..tcp::TcpSocketOptions::default()
            },
            reset_error: 0,
            shut_read: true,
        }
    }

    fn record(state: &SocketState) -> pb::Socket {
        pb::Socket {
            ino: 42,
            state: Some(state.into()),
            ..pb::Socket::default()
        }
    }

    fn round_trip(state: SocketState) {
        let back = SocketState::try_from(&record(&state)).unwrap();
        assert_eq!(back, state);
    }

    #[test]
    fn every_kind_round_trips() {
        round_trip(SocketState::Connection(Box::new(connection(
            "10.0.0.1:80",
            "10.0.0.2:5000",
        ))));
        round_trip(SocketState::Connection(Box::new(connection(
            "[fe80::1%3]:80",
            "[::ffff:1.2.3.4]:5000",
        ))));
        round_trip(SocketState::Connection(Box::new(tcp::TcpConnectionState {
            state: tcp::TcpState::Close,
            send_queue_sent: Vec::new(),
            send_queue_unsent: Vec::new(),
            ..connection("127.0.0.1:4000", "127.0.0.1:5000")
        })));
        round_trip(SocketState::Connection(Box::new(tcp::TcpConnectionState {
            state: tcp::TcpState::Close,
            reset_error: libc::EPIPE,
            ..connection("127.0.0.1:4000", "127.0.0.1:5000")
        })));
        round_trip(SocketState::Listener(tcp::ListenerState {
            local: "[::]:8080".parse().unwrap(),
            backlog: None,
            dropped_pending: 0,
            socket: options(),
            tcp: tcp::TcpSocketOptions::default(),
            bound_with_reuseport: true,
        }));
        round_trip(SocketState::Udp(Box::new(UdpState {
            socket: tcp::UdpSocketState {
                local: "127.0.0.1:53".parse().unwrap(),
                remote: Some("127.0.0.1:9".parse().unwrap()),
                socket: options(),
                dropped_recv_bytes: 12,
            },
            extras: tcp::UdpExtras {
                shutdown_read: false,
                shutdown_write: true,
                cork: true,
                bind_device: b"lo".to_vec(),
                icmp6_filter: vec![1; 32],
                options: vec![(libc::SOL_IP, libc::IP_TTL, 7)],
                sock_type: libc::SOCK_RAW,
                protocol: libc::IPPROTO_ICMP,
                memberships: vec![tcp::Membership {
                    group: "239.1.2.3".parse().unwrap(),
                    ifindex: 1,
                    include: true,
                    sources: vec!["10.0.0.1".parse().unwrap(), "::1".parse().unwrap()],
                }],
                queue: vec![
                    tcp::QueuedDatagram {
                        payload: b"first".to_vec(),
                        source: "10.0.0.2:4000".parse().unwrap(),
                        destination: "127.0.0.1:53".parse().unwrap(),
                        ttl: 64,
                        tos: 0x10,
                        ifindex: 1,
                    },
                    tcp::QueuedDatagram {
                        payload: Vec::new(),
                        source: "[fe80::1%2]:4001".parse().unwrap(),
                        destination: "[::1]:53".parse().unwrap(),
                        ttl: 1,
                        tos: 0,
                        ifindex: 0,
                    },
                ],
                peek_offset: Some(3),
            },
        })));
        round_trip(SocketState::TcpConnecting(Box::new(tcp::ConnectingState {
            local: "10.0.0.1:40000".parse().unwrap(),
            remote: "10.0.0.2:80".parse().unwrap(),
            local_port_range: 0,
            socket: options(),
            tcp: tcp::TcpSocketOptions::default(),
        })));
        round_trip(SocketState::TcpUnconnected(Box::new(
            tcp::UnconnectedState {
                local: "[::]:40001".parse().unwrap(),
                bound: false,
                local_port_range: 7 | 9 << 16,
                socket: options(),
                tcp: tcp::TcpSocketOptions::default(),
                closed_at_dump: true,
            },
        )));
        let message = UnixMessage {
            data: b"hello".to_vec(),
            creds: Some((1, 2, 3)),
            fds: vec![4, 5],
            from_unnamed: false,
            from_name: b"/run/sender".to_vec(),
        };
        round_trip(SocketState::Unix(Box::new(UnixSocketState {
            sock_type: cryo_unix_sockets::SockType::SeqPacket,
            listening: true,
            backlog: 5,
            name: b"\0abstract".to_vec(),
            file_attrs: Some((0o755, 1, 2)),
            shutdown: (true, false),
            queue: vec![message.clone()],
            passcred: true,
            sndbuf: 1,
            rcvbuf: 2,
            peek_off: -1,
            socket: Some(options()),
            pending: vec![PendingConnection {
                client_ino: 9,
                queue: vec![message],
                peer_cred: Some(cryo_unix_sockets::restore::PeerCred {
                    pid: 8,
                    uid: 65534,
                    gid: 65534,
                    groups: vec![65534],
                }),
            }],
            peer_closed: true,
            reset_pending: true,
            connect_to: b"/dev/log".to_vec(),
            bind_dir: b"/run".to_vec(),
            unlinked: true,
            name_shared: true,
            peer_cred: Some(cryo_unix_sockets::restore::PeerCred {
                pid: 7,
                uid: 1000,
                gid: 100,
                groups: vec![100, 2000],
            }),
        })));
        round_trip(SocketState::Packet(Box::new(PacketState {
            spkt_device: String::new(),
            sock_type: libc::SOCK_DGRAM,
            protocol: 3,
            bound_protocol: 0x800,
            ifindex: 1,
            options: vec![(263, 23, 1), (263, 8, 1)],
            fanout: 7 | (1 << 16),
            memberships: vec![Membership {
                ifindex: 1,
                mr_type: 1,
                count: 2,
                address: vec![1, 2, 3, 4, 5, 6],
            }],
            socket: options(),
            rings: None,
        })));
        let ring = packet_ring::Ring {
            block_size: 4096,
            block_nr: 2,
            frame_size: 2048,
            frame_nr: 4,
            ..packet_ring::Ring::default()
        };
        round_trip(SocketState::Packet(Box::new(PacketState {
            spkt_device: String::new(),
            sock_type: libc::SOCK_RAW,
            protocol: 0x800,
            bound_protocol: 0x800,
            ifindex: 1,
            options: vec![(263, 10, 1)],
            fanout: 0,
            memberships: Vec::new(),
            socket: options(),
            rings: Some(Box::new(Rings {
                rx: Some(ring),
                tx: Some(ring),
                frames: vec![1, 0, 0, 0, 9],
                rx_head: 3,
            })),
        })));
        round_trip(SocketState::Netlink(Box::new(NetlinkState {
            sock_type: libc::SOCK_RAW,
            protocol: 0,
            portid: 0x9a1b_2c3d,
            groups: vec![1, 1 << 2],
            dst: Some((0, 0)),
            options: vec![(270, 11, 1), (libc::SOL_SOCKET, libc::SO_PASSCRED, 1)],
            socket: options(),
        })));
    }

    #[test]
    fn broken_records_are_refused_naming_the_socket() {
        let state = SocketState::Connection(Box::new(connection("10.0.0.1:80", "10.0.0.2:5")));
        let good = record(&state);
        let refuse = |change: &dyn Fn(&mut pb::TcpConnection), want: RecordProblem| {
            let mut bad = good.clone();
            let Some(State::TcpConnection(c)) = &mut bad.state else {
                unreachable!()
            };
            change(c);
            let err = SocketState::try_from(&bad).unwrap_err();
            let text = err.to_string();
            assert!(
                text.contains("socket:[42]") && text.contains("tcp connection"),
                "{text}"
            );
            assert!(
                matches!(err, SocketError::Record { problem, .. } if problem == want),
                "{text}"
            );
        };
        refuse(
            &|c| c.local.as_mut().unwrap().ip = vec![1, 2, 3],
            RecordProblem::Address {
                field: "local",
                len: 3,
            },
        );
        refuse(
            &|c| c.remote = None,
            RecordProblem::Missing { field: "remote" },
        );
        // A reset leaves ECONNRESET or EPIPE; any other error cannot be made again.
        refuse(
            &|c| c.reset_error = libc::ETIMEDOUT,
            RecordProblem::Range {
                field: "reset_error",
                value: libc::ETIMEDOUT.into(),
            },
        );
        refuse(
            &|c| c.remote.as_mut().unwrap().port = 70000,
            RecordProblem::Range {
                field: "remote",
                value: 70000,
            },
        );
        refuse(
            &|c| c.state = 2,
            RecordProblem::Range {
                field: "state",
                value: 2,
            },
        );
        refuse(
            &|c| c.window_scale.as_mut().unwrap().send = 15,
            RecordProblem::Range {
                field: "window_scale.send",
                value: 15,
            },
        );
        refuse(
            &|c| c.remote.as_mut().unwrap().ip = vec![0; 16],
            RecordProblem::Families,
        );
        let empty = pb::Socket {
            ino: 42,
            ..pb::Socket::default()
        };
        assert!(matches!(
            SocketState::try_from(&empty),
            Err(SocketError::Record {
                problem: RecordProblem::NoState,
                ..
            })
        ));
        let unix = pb::Socket {
            ino: 42,
            state: Some(State::Unix(pb::UnixSocket {
                sock_type: 99,
                ..pb::UnixSocket::default()
            })),
            ..pb::Socket::default()
        };
        let err = SocketState::try_from(&unix).unwrap_err().to_string();
        assert!(
            err.contains("unix socket") && err.contains("sock_type"),
            "{err}"
        );
    }
}
