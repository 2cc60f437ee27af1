//! The datagrams waiting in a UDP or UDP-lite socket's receive queue: read at capture without
//! being taken, delivered again at restore from their original source, so that recvfrom,
//! IP_PKTINFO / IPV6_PKTINFO, IP_TTL / IPV6_HOPLIMIT and IP_TOS / IPV6_TCLASS show the
//! receiver what they showed before.
//!
//! ```text
//! capture (on a duplicate: the same socket as the process's, which is frozen)
//!   poll: nothing readable -> nothing to read; POLLERR -> refused while datagrams wait
//!         (every recv, MSG_PEEK too, takes a pending error: sock_error())
//!   SO_PEEK_OFF and the cmsg options read; SO_PEEK_OFF 0, the cmsg options on
//!   recvmsg(MSG_PEEK | MSG_DONTWAIT) until EAGAIN: each call returns the next datagram (the
//!         peek offset moves past what it copied; an empty datagram is marked peeked and
//!         skipped by the next call), with its source and the cmsgs of its headers
//!   SO_PEEK_OFF and the cmsg options put back, also when a step failed (Peeking's drop)
//! restore (after bind, before connect: a connected socket takes only its peer's datagrams)
//!   each destination checked to be an address here (a socket of cryo's binds to it)
//!   per datagram: an IP + UDP (UDP-lite) header with its source, destination, TTL and TOS,
//!         the checksum computed, sent on a raw IPPROTO_RAW socket of cryo (IP_HDRINCL,
//!         IPV6_HDRINCL), then waited for (SO_MEMINFO's receive memory grows: loopback
//!         delivers from a softirq, which may run later and on another CPU)
//!   the queue peeked again and compared: the same datagrams from the same sources
//!   SO_PEEK_OFF set (after connect, with the other extras)
//! ```
//!
//! What differs after a restore: the receive timestamps (SO_TIMESTAMP*: the kernel's, taken
//! when the datagram arrives again), the mark and security label of the packet, and the
//! interface of a datagram that came on another interface than the loopback (refused at
//! capture when the socket asked for IP_PKTINFO / IPV6_RECVPKTINFO, which shows it). Raw
//! IPPROTO_UDP sockets and packet sockets of the restore's network namespace see the
//! datagrams go by on lo. Refused at capture (a temporary state, the process reads them):
//! a datagram to a multicast or broadcast address (delivering it again would send it out),
//! one coalesced by UDP_GRO, datagrams waiting beside a pending socket error.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, SockaddrStorage};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::error::{Ctx, Result, TcpRepairError};
use crate::state::QueuedDatagram;
use crate::sys;

/// `SO_PEEK_OFF` (asm-generic/socket.h).
const SO_PEEK_OFF: i32 = 42;
/// `SO_MEMINFO` (asm-generic/socket.h): `u32[SK_MEMINFO_VARS]`, the receive memory first.
const SO_MEMINFO: i32 = 55;
/// `IPV6_RECVORIGDSTADDR` (linux/in6.h).
const IPV6_RECVORIGDSTADDR: i32 = 74;
/// The largest datagram a queue holds (a UDP payload is at most 65535 - 8 bytes; one
/// coalesced by GRO may be larger and is refused).
const MAX_DATAGRAM: usize = 1 << 17;
/// How long a datagram sent over lo may take to arrive (a softirq, perhaps on another CPU).
const ARRIVAL: Duration = Duration::from_secs(2);

/// The options that make the kernel report a datagram's headers, per family of the socket:
/// (level, option, name). An IPv6 socket reports an IPv4 datagram (v4-mapped) through the
/// IPv4 ones.
const CMSG_OPTIONS_V4: &[(i32, i32, &str)] = &[
    (libc::SOL_IP, libc::IP_PKTINFO, "IP_PKTINFO"),
    (libc::SOL_IP, libc::IP_RECVTTL, "IP_RECVTTL"),
    (libc::SOL_IP, libc::IP_RECVTOS, "IP_RECVTOS"),
    (libc::SOL_IP, libc::IP_RECVORIGDSTADDR, "IP_RECVORIGDSTADDR"),
];
const CMSG_OPTIONS_V6: &[(i32, i32, &str)] = &[
    (libc::SOL_IPV6, libc::IPV6_RECVPKTINFO, "IPV6_RECVPKTINFO"),
    (libc::SOL_IPV6, libc::IPV6_RECVHOPLIMIT, "IPV6_RECVHOPLIMIT"),
    (libc::SOL_IPV6, libc::IPV6_RECVTCLASS, "IPV6_RECVTCLASS"),
    (libc::SOL_IPV6, IPV6_RECVORIGDSTADDR, "IPV6_RECVORIGDSTADDR"),
];

/// The cmsg options of a socket of family `ipv6`.
fn cmsg_options(ipv6: bool) -> impl Iterator<Item = &'static (i32, i32, &'static str)> {
    let v6: &[_] = if ipv6 { CMSG_OPTIONS_V6 } else { &[] };
    CMSG_OPTIONS_V4.iter().chain(v6)
}

/// A refusal of the queue: a state of the moment, which the process's reading ends.
fn temporary(ctx: Ctx, what: String) -> TcpRepairError {
    TcpRepairError::QueueTemporary {
        op: ctx.op,
        sock: ctx.sock,
        what,
    }
}

/// The socket's SO_PEEK_OFF and cmsg options as the process left them, put back on drop.
struct Peeking<'a> {
    fd: BorrowedFd<'a>,
    peek_off: i32,
    /// (level, option, value) of each cmsg option before it was turned on.
    options: Vec<(i32, i32, i32)>,
}

impl Peeking<'_> {
    /// Whether the process asked for the interface of its datagrams (IP_PKTINFO,
    /// IPV6_RECVPKTINFO).
    fn process_reads_ifindex(&self) -> bool {
        self.options.iter().any(|&(level, opt, v)| {
            v != 0
                && ((level, opt) == (libc::SOL_IP, libc::IP_PKTINFO)
                    || (level, opt) == (libc::SOL_IPV6, libc::IPV6_RECVPKTINFO))
        })
    }
}

impl Drop for Peeking<'_> {
    fn drop(&mut self) {
        // Best effort: these set back values the kernel accepted before.
        let _ = sys::set_int(self.fd, libc::SOL_SOCKET, SO_PEEK_OFF, self.peek_off);
        for &(level, opt, value) in &self.options {
            let _ = sys::set_int(self.fd, level, opt, value);
        }
    }
}

/// Reads every datagram waiting on UDP or UDP-lite socket `fd` (IPv6: `ipv6`) without taking
/// any, and the socket's SO_PEEK_OFF (`None`: off). The socket is left as it was.
pub(crate) fn capture(
    fd: BorrowedFd<'_>,
    ipv6: bool,
    ctx: Ctx,
) -> Result<(Vec<QueuedDatagram>, Option<u32>)> {
    let peek_off = sys::get_int(fd, libc::SOL_SOCKET, SO_PEEK_OFF)
        .map_err(ctx.sys("getsockopt SO_PEEK_OFF"))?;
    let peek_offset = u32::try_from(peek_off).ok();
    let revents = sys::poll_now(fd, libc::POLLIN | libc::POLLRDHUP)
        .map_err(ctx.io("poll (receive queue)"))?;
    // Shut for reading, a socket polls readable whatever its queue holds.
    let maybe_data = revents & libc::POLLIN != 0;
    if !maybe_data {
        return Ok((Vec::new(), peek_offset));
    }
    if revents & libc::POLLERR != 0 {
        return Err(temporary(
            ctx,
            "datagrams (or a shutdown) wait beside a pending socket error, which reading \
             them (MSG_PEEK too) would take"
                .into(),
        ));
    }
    let mut options = Vec::new();
    for &(level, opt, what) in cmsg_options(ipv6) {
        let value = sys::get_int(fd, level, opt).map_err(ctx.sys(what))?;
        options.push((level, opt, value));
    }
    let peeking = Peeking {
        fd,
        peek_off,
        options,
    };
    // The first peek without an offset (peek_all).
    sys::set_int(fd, libc::SOL_SOCKET, SO_PEEK_OFF, -1)
        .map_err(ctx.sys("setsockopt SO_PEEK_OFF"))?;
    for &(level, opt, what) in cmsg_options(ipv6) {
        sys::set_int(fd, level, opt, 1).map_err(ctx.sys(what))?;
    }
    let queue = peek_all(fd, ctx)?;
    for (i, d) in queue.iter().enumerate() {
        let n = i + 1;
        if is_multicast_or_broadcast(d.destination.ip()) {
            return Err(temporary(
                ctx,
                format!(
                    "datagram {n} of {} (from {}) was sent to {}, a multicast or broadcast \
                     address: delivering it again would send it out",
                    queue.len(),
                    d.source,
                    d.destination
                ),
            ));
        }
        // Delivered again, a datagram comes on lo (1); 0: its interface was not noted on
        // arrival (IPv4, the option off then), and would be now.
        if peeking.process_reads_ifindex() && d.ifindex != 1 {
            return Err(temporary(
                ctx,
                format!(
                    "datagram {n} of {} (from {}) came on interface {} (0: not noted on \
                     arrival) and the socket reads it (IP_PKTINFO / IPV6_RECVPKTINFO): \
                     delivered again, it would come on lo (1)",
                    queue.len(),
                    d.source,
                    d.ifindex
                ),
            ));
        }
    }
    drop(peeking);
    Ok((queue, peek_offset))
}

/// Whether a datagram to `ip` reached the socket as a group's or a broadcast's member.
fn is_multicast_or_broadcast(ip: IpAddr) -> bool {
    match ip {
        // A subnet's broadcast address is not told apart here: the raw socket, without
        // SO_BROADCAST, refuses to send to it (EACCES) and the restore fails naming it.
        IpAddr::V4(v4) => v4.is_multicast() || v4.is_broadcast(),
        IpAddr::V6(v6) => v6.is_multicast(),
    }
}

/// The datagrams of the queue, peeked one after the other (cmsg options on). The first is
/// peeked without an offset, then SO_PEEK_OFF is set to 0 and moves on with each peek: an
/// empty datagram the process peeked already carries the kernel's "peeked" mark and an
/// offset peek skips it, so an empty head is taken from the first peek (which marks it,
/// whoever peeked it first).
fn peek_all(fd: BorrowedFd<'_>, ctx: Ctx) -> Result<Vec<QueuedDatagram>> {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut cmsg = vec![0u8; 1024];
    let head = peek_next(fd, &mut buf, &mut cmsg, 0, ctx)?;
    sys::set_int(fd, libc::SOL_SOCKET, SO_PEEK_OFF, 0)
        .map_err(ctx.sys("setsockopt SO_PEEK_OFF"))?;
    let mut out: Vec<QueuedDatagram> = head.into_iter().filter(|h| h.payload.is_empty()).collect();
    while let Some(d) = peek_next(fd, &mut buf, &mut cmsg, out.len(), ctx)? {
        out.push(d);
    }
    Ok(out)
}

/// The next datagram a MSG_PEEK returns (`None`: the queue has no more), `before` of them
/// peeked already.
fn peek_next(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    cmsg: &mut Vec<u8>,
    before: usize,
    ctx: Ctx,
) -> Result<Option<QueuedDatagram>> {
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let msg = match recvmsg::<SockaddrStorage>(
        fd.as_raw_fd(),
        &mut iov,
        Some(cmsg.as_mut_slice()),
        MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
    ) {
        Ok(msg) => msg,
        Err(Errno::EAGAIN) => return Ok(None),
        Err(e) => return Err(ctx.sys("recvmsg MSG_PEEK (receive queue)")(e)),
    };
    if msg.flags.contains(MsgFlags::MSG_TRUNC) || msg.flags.contains(MsgFlags::MSG_CTRUNC) {
        return Err(ctx.invalid(
            "recvmsg MSG_PEEK (receive queue)",
            format!("datagram {} larger than {MAX_DATAGRAM} bytes", before + 1),
        ));
    }
    let len = msg.bytes;
    let source = msg
        .address
        .as_ref()
        .and_then(socket_addr)
        .map(unmapped)
        .ok_or_else(|| {
            ctx.invalid(
                "recvmsg MSG_PEEK (receive queue)",
                format!("datagram {} without a source address", before + 1),
            )
        })?;
    let mut d = QueuedDatagram {
        payload: Vec::new(),
        source,
        destination: source,
        ttl: 64,
        tos: 0,
        ifindex: 0,
    };
    let mut destination = None;
    let cmsgs = msg
        .cmsgs()
        .map_err(ctx.sys("recvmsg MSG_PEEK (control messages)"))?;
    for c in cmsgs {
        match c {
            ControlMessageOwned::Ipv4PacketInfo(p) => d.ifindex = p.ipi_ifindex as u32,
            ControlMessageOwned::Ipv6PacketInfo(p) => d.ifindex = p.ipi6_ifindex,
            ControlMessageOwned::Ipv4Ttl(t) => d.ttl = t as u8,
            ControlMessageOwned::Ipv6HopLimit(t) => d.ttl = t as u8,
            ControlMessageOwned::Ipv4Tos(t) => d.tos = t,
            ControlMessageOwned::Ipv6TClass(t) => d.tos = t as u8,
            ControlMessageOwned::Ipv4OrigDstAddr(a) => {
                destination = Some(SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                    u16::from_be(a.sin_port),
                )));
            }
            ControlMessageOwned::Ipv6OrigDstAddr(a) => {
                destination = Some(unmapped(SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(a.sin6_addr.s6_addr),
                    u16::from_be(a.sin6_port),
                    0,
                    a.sin6_scope_id,
                ))));
            }
            ControlMessageOwned::UdpGroSegments(size) => {
                return Err(temporary(
                    ctx,
                    format!(
                        "datagram {} coalesced by UDP_GRO (segments of {size} bytes): it \
                         cannot be delivered again as one",
                        before + 1
                    ),
                ))
            }
            _ => {}
        }
    }
    d.destination = destination.ok_or_else(|| {
        ctx.invalid(
            "recvmsg MSG_PEEK (receive queue)",
            format!(
                "datagram {} without its destination (IP_ORIGDSTADDR)",
                before + 1
            ),
        )
    })?;
    d.payload = buf[..len].to_vec();
    Ok(Some(d))
}

/// A socket address of the kernel's as std's.
fn socket_addr(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::new(v4.ip(), v4.port())));
    }
    a.as_sockaddr_in6().map(|v6| {
        SocketAddr::V6(SocketAddrV6::new(
            v6.ip(),
            v6.port(),
            v6.flowinfo(),
            v6.scope_id(),
        ))
    })
}

/// An IPv4-mapped address as the IPv4 address its datagram's header carries.
fn unmapped(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => a,
        },
        v4 => v4,
    }
}

/// The receive memory of socket `fd` (SO_MEMINFO's first entry).
pub(crate) fn receive_memory(fd: BorrowedFd<'_>) -> std::result::Result<u32, Errno> {
    let mut info = [0u8; 64];
    let n = sys::get_bytes(fd, libc::SOL_SOCKET, SO_MEMINFO, &mut info)?;
    if n < 4 {
        return Err(Errno::EINVAL);
    }
    Ok(u32::from_ne_bytes([info[0], info[1], info[2], info[3]]))
}

/// Delivers `queue` to UDP or UDP-lite socket `fd` (protocol `protocol`, bound, not
/// connected yet), each datagram from its source to its destination, in order, and checks
/// the socket holds them all.
pub(crate) fn deliver(
    fd: BorrowedFd<'_>,
    protocol: i32,
    queue: &[QueuedDatagram],
    bind_device: &[u8],
    ctx: Ctx,
) -> Result<()> {
    let mut raw4 = None;
    let mut raw6 = None;
    let mut local: Vec<IpAddr> = Vec::new();
    for (i, d) in queue.iter().enumerate() {
        let v6 = d.destination.is_ipv6();
        if !local.contains(&d.destination.ip()) {
            check_local(d, i, ctx)?;
            local.push(d.destination.ip());
        }
        let slot = if v6 { &mut raw6 } else { &mut raw4 };
        let raw = match slot {
            Some(raw) => raw,
            None => slot.insert(raw_socket(v6, bind_device, ctx)?),
        };
        let packet = packet(d, protocol).ok_or_else(|| {
            ctx.invalid(
                "deliver queued datagram",
                format!(
                    "datagram {} from {} to {}: mixed families or too long",
                    i + 1,
                    d.source,
                    d.destination
                ),
            )
        })?;
        let before = receive_memory(fd).map_err(ctx.sys("getsockopt SO_MEMINFO"))?;
        let to = match d.destination {
            SocketAddr::V6(a) => {
                // A link-local destination needs its interface.
                let scope = if a.scope_id() == 0 && a.ip().is_unicast_link_local() {
                    d.ifindex
                } else {
                    a.scope_id()
                };
                SocketAddr::V6(SocketAddrV6::new(*a.ip(), 0, 0, scope))
            }
            SocketAddr::V4(a) => SocketAddr::new(IpAddr::V4(*a.ip()), 0),
        };
        let raw_sock = socket2::SockRef::from(&*raw);
        raw_sock
            .send_to(&packet, &SockAddr::from(to))
            .map_err(ctx.io("sendto (raw socket delivering a queued datagram)"))?;
        let start = Instant::now();
        while receive_memory(fd).map_err(ctx.sys("getsockopt SO_MEMINFO"))? == before {
            if start.elapsed() > ARRIVAL {
                return Err(ctx.invalid(
                    "deliver queued datagram",
                    format!(
                        "datagram {} of {} from {} to {} did not arrive in {ARRIVAL:?} (the \
                         destination is not an address of this host, or another socket took \
                         it)",
                        i + 1,
                        queue.len(),
                        d.source,
                        d.destination
                    ),
                ));
            }
            // Loopback hands the packet to a softirq: it runs at once on this CPU almost
            // always, else soon after on another.
            std::thread::sleep(Duration::from_micros(50));
        }
    }
    check_delivered(fd, queue, ctx)
}

/// Fails unless the destination of datagram `d` (the `i`th) is an address of this host:
/// sent elsewhere, the packet cryo makes would leave for the network with another's source.
/// A socket of cryo's binds to it (EADDRNOTAVAIL: not one of ours).
fn check_local(d: &QueuedDatagram, i: usize, ctx: Ctx) -> Result<()> {
    let ip = d.destination.ip();
    let domain = if ip.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let probe = Socket::new(domain, Type::DGRAM.cloexec(), None)
        .map_err(ctx.io("socket (checking a queued datagram's destination)"))?;
    let scope = match d.destination {
        SocketAddr::V6(a) if a.scope_id() == 0 && a.ip().is_unicast_link_local() => d.ifindex,
        SocketAddr::V6(a) => a.scope_id(),
        SocketAddr::V4(_) => 0,
    };
    let at = match ip {
        IpAddr::V6(v6) => SocketAddr::V6(SocketAddrV6::new(v6, 0, 0, scope)),
        IpAddr::V4(v4) => SocketAddr::new(IpAddr::V4(v4), 0),
    };
    match probe.bind(&SockAddr::from(at)) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => Err(ctx.invalid(
            "deliver queued datagram",
            format!(
                "datagram {} (from {}) was sent to {ip}, which is not an address of this host \
                 (or of the restore's network namespace): it cannot be delivered again here",
                i + 1,
                d.source
            ),
        )),
        Err(e) => Err(ctx.io("bind (checking a queued datagram's destination)")(e)),
    }
}

/// The queue of `fd` peeked again (and the socket put back) and compared with `queue`.
fn check_delivered(fd: BorrowedFd<'_>, queue: &[QueuedDatagram], ctx: Ctx) -> Result<()> {
    let ipv6 = crate::repair::is_ipv6(fd, ctx)?;
    let (now, _) = capture(fd, ipv6, ctx)?;
    let same = now.len() == queue.len()
        && now
            .iter()
            .zip(queue)
            .all(|(a, b)| a.payload == b.payload && a.source == b.source);
    if !same {
        return Err(ctx.invalid(
            "deliver queued datagrams",
            format!(
                "{} datagrams of {} bytes delivered, the socket holds {} of {} bytes",
                queue.len(),
                queue.iter().map(|d| d.payload.len()).sum::<usize>(),
                now.len(),
                now.iter().map(|d| d.payload.len()).sum::<usize>()
            ),
        ));
    }
    Ok(())
}

/// A raw IPPROTO_RAW socket of cryo's (the headers are ours: IP_HDRINCL, IPV6_HDRINCL),
/// bound to the restored socket's device if it has one (it takes only what comes on it).
fn raw_socket(v6: bool, bind_device: &[u8], ctx: Ctx) -> Result<OwnedFd> {
    let domain = if v6 { Domain::IPV6 } else { Domain::IPV4 };
    let s = Socket::new(
        domain,
        Type::RAW.cloexec(),
        Some(Protocol::from(libc::IPPROTO_RAW)),
    )
    .map_err(ctx.io("socket (raw, delivering queued datagrams)"))?;
    let fd = OwnedFd::from(s);
    if !bind_device.is_empty() {
        sys::set_bytes(
            fd.as_fd(),
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            bind_device,
        )
        .map_err(ctx.sys("setsockopt SO_BINDTODEVICE (raw socket)"))?;
    }
    Ok(fd)
}

/// The IP packet of datagram `d`: IP header, UDP (UDP-lite: `protocol`) header with its
/// checksum, payload. `None` when its addresses are of two families or it is too long.
fn packet(d: &QueuedDatagram, protocol: i32) -> Option<Vec<u8>> {
    let udp_len = u16::try_from(8 + d.payload.len()).ok()?;
    let mut udp = Vec::with_capacity(usize::from(udp_len));
    udp.extend_from_slice(&d.source.port().to_be_bytes());
    udp.extend_from_slice(&d.destination.port().to_be_bytes());
    // UDP-lite's length field is its checksum coverage: 0, the whole datagram, passes
    // any UDPLITE_RECV_CSCOV minimum.
    let len_field = if protocol == libc::IPPROTO_UDPLITE {
        0
    } else {
        udp_len
    };
    udp.extend_from_slice(&len_field.to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(&d.payload);
    let proto = protocol as u8;
    let mut pseudo = Vec::with_capacity(40);
    let mut out = Vec::with_capacity(40 + udp.len());
    match (d.source.ip(), d.destination.ip()) {
        (IpAddr::V4(s), IpAddr::V4(t)) => {
            pseudo.extend_from_slice(&s.octets());
            pseudo.extend_from_slice(&t.octets());
            pseudo.extend_from_slice(&[0, proto]);
            pseudo.extend_from_slice(&udp_len.to_be_bytes());
            // Version 4, 5 words; the kernel fills the total length, id and checksum.
            out.extend_from_slice(&[0x45, d.tos, 0, 0, 0, 0, 0, 0, d.ttl, proto, 0, 0]);
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&t.octets());
        }
        (IpAddr::V6(s), IpAddr::V6(t)) => {
            pseudo.extend_from_slice(&s.octets());
            pseudo.extend_from_slice(&t.octets());
            pseudo.extend_from_slice(&u32::from(udp_len).to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, proto]);
            // Version 6, traffic class, flow label 0.
            let first = 0x6000_0000u32 | u32::from(d.tos) << 20;
            out.extend_from_slice(&first.to_be_bytes());
            out.extend_from_slice(&udp_len.to_be_bytes());
            out.extend_from_slice(&[proto, d.ttl]);
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&t.octets());
        }
        _ => return None,
    }
    let mut sum = checksum(&pseudo, &udp);
    // 0 means "no checksum" in UDP over IPv4, and is not allowed over IPv6.
    if sum == 0 {
        sum = 0xffff;
    }
    udp[6..8].copy_from_slice(&sum.to_be_bytes());
    out.extend_from_slice(&udp);
    Some(out)
}

/// The internet checksum of `pseudo` followed by `data`.
fn checksum(pseudo: &[u8], data: &[u8]) -> u16 {
    let mut sum: u64 = 0;
    for part in [pseudo, data] {
        let mut chunks = part.chunks_exact(2);
        for c in &mut chunks {
            sum += u64::from(u16::from_be_bytes([c[0], c[1]]));
        }
        if let [last] = chunks.remainder() {
            sum += u64::from(u16::from_be_bytes([*last, 0]));
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// SO_PEEK_OFF of `fd` set to `offset` (what the process had).
pub(crate) fn set_peek_offset(fd: BorrowedFd<'_>, offset: u32, ctx: Ctx) -> Result<()> {
    let value = i32::try_from(offset).map_err(|_| ctx.invalid("SO_PEEK_OFF", "out of range"))?;
    sys::set_int(fd, libc::SOL_SOCKET, SO_PEEK_OFF, value)
        .map_err(ctx.sys("setsockopt SO_PEEK_OFF"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn datagram(from: &str, to: &str, payload: &[u8]) -> QueuedDatagram {
        QueuedDatagram {
            payload: payload.to_vec(),
            source: from.parse().unwrap(),
            destination: to.parse().unwrap(),
            ttl: 64,
            tos: 0,
            ifindex: 0,
        }
    }

    /// The checksum over the pseudo-header and the UDP datagram with its checksum in
    /// place sums to 0 (RFC 768), odd lengths included.
    #[test]
    fn udp_checksums_verify() {
        for (from, to, payload) in [
            ("10.0.0.1:5000", "127.0.0.1:53", &b"odd"[..]),
            ("[2001:db8::1]:5000", "[::1]:53", &b"even!!"[..]),
        ] {
            let d = datagram(from, to, payload);
            let p = packet(&d, libc::IPPROTO_UDP).unwrap();
            let (hdr, pseudo_len) = if d.source.is_ipv4() {
                (20, 12)
            } else {
                (40, 40)
            };
            let udp = &p[hdr..];
            let mut pseudo = Vec::new();
            match (d.source.ip(), d.destination.ip()) {
                (IpAddr::V4(s), IpAddr::V4(t)) => {
                    pseudo.extend_from_slice(&s.octets());
                    pseudo.extend_from_slice(&t.octets());
                    pseudo.extend_from_slice(&[0, 17]);
                    pseudo.extend_from_slice(&(udp.len() as u16).to_be_bytes());
                }
                (IpAddr::V6(s), IpAddr::V6(t)) => {
                    pseudo.extend_from_slice(&s.octets());
                    pseudo.extend_from_slice(&t.octets());
                    pseudo.extend_from_slice(&(udp.len() as u32).to_be_bytes());
                    pseudo.extend_from_slice(&[0, 0, 0, 17]);
                }
                _ => unreachable!(),
            }
            assert_eq!(pseudo.len(), pseudo_len);
            assert_eq!(checksum(&pseudo, udp), 0, "{from} -> {to}");
            assert_eq!(&udp[8..], payload);
        }
    }

    #[test]
    fn mixed_families_make_no_packet() {
        let d = datagram("10.0.0.1:5000", "[::1]:53", b"x");
        assert!(packet(&d, libc::IPPROTO_UDP).is_none());
    }
}
