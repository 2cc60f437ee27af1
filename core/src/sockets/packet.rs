//! Packet sockets (AF_PACKET, SOCK_RAW and SOCK_DGRAM): protocol, bound interface, the
//! SOL_PACKET options, memberships, fanout group and the SOL_SOCKET options, read from
//! outside (getsockopt on a duplicate, packet_diag) and made again in that order. The
//! obsolete SOCK_PACKET ones (which have none of the SOL_PACKET state): protocol, the device
//! bound by name (getsockname), the SOL_SOCKET options.
//!
//! ```text
//! dump:    SO_TYPE, SO_PROTOCOL; packet_diag (INFO: ifindex, hooked protocol, running;
//!          MCLIST; RX/TX_RING: packet_ring.rs); getsockopt of OPTIONS and PACKET_FANOUT
//! restore: socket(AF_PACKET, type, protocol), SOL_SOCKET options, OPTIONS, the rings
//!          (packet_ring.rs: their frames and RX head back), bind(ifindex, protocol),
//!          memberships (oldest first, each as many times as it was added), fanout; the
//!          filter is the caller's (filter.rs)
//! ```
//!
//! Not carried: frames waiting in the receive queue (dropped, as UDP datagrams are: a packet
//! socket may lose frames anyway), PACKET_STATISTICS (reading them resets them: the restored
//! counters start at zero), a fanout group's max_num_members (the kernel does not show it).
//! A fanout group steered by a BPF program (PACKET_FANOUT_CBPF/EBPF: the kernel does not give
//! it back) is refused, and so are the rings packet_ring.rs cannot bring back exactly.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};

use cryo_proto::image::FileDesc;
use cryo_tcp_repair as tcp;
use cryo_unix_sockets::family_diag;
use nix::unistd::Pid;

use super::packet_ring::{self, Rings};
use super::{restore_err, FamilyErrors, SocketError};
use crate::files::FileError;
use crate::sys::sockopt;

/// `SOL_PACKET`.
const SOL_PACKET: i32 = 263;
/// `SOCK_PACKET`: the obsolete packet interface, bound to a device by name.
pub(crate) const SOCK_PACKET: i32 = 10;
/// `PACKET_ADD_MEMBERSHIP`, `PACKET_FANOUT`.
const PACKET_ADD_MEMBERSHIP: i32 = 1;
const PACKET_FANOUT: i32 = 18;
/// `PACKET_VNET_HDR` and `PACKET_VNET_HDR_SZ` (linux 6.2; the size says all the flag does).
const PACKET_VNET_HDR: i32 = 15;
const PACKET_VNET_HDR_SZ: i32 = 24;
/// `PACKET_VERSION`.
const PACKET_VERSION: i32 = 10;
/// Fanout modes steered by a program the kernel does not give back.
const PACKET_FANOUT_CBPF: u32 = 6;
const PACKET_FANOUT_EBPF: u32 = 7;

/// The integer SOL_PACKET options, in the order they are set again (all 0 on a fresh
/// socket). PACKET_VNET_HDR is read as PACKET_VNET_HDR_SZ where the kernel has it.
const OPTIONS: &[(i32, &str)] = &[
    (10, "PACKET_VERSION"),
    (12, "PACKET_RESERVE"),
    (7, "PACKET_COPY_THRESH"),
    (8, "PACKET_AUXDATA"),
    (9, "PACKET_ORIGDEV"),
    (14, "PACKET_LOSS"),
    (PACKET_VNET_HDR_SZ, "PACKET_VNET_HDR_SZ"),
    (17, "PACKET_TIMESTAMP"),
    (19, "PACKET_TX_HAS_OFF"),
    (20, "PACKET_QDISC_BYPASS"),
    (23, "PACKET_IGNORE_OUTGOING"),
];

/// `MAX_ADDR_LEN`.
const MAX_ADDR_LEN: usize = family_diag::MAX_ADDR_LEN;

/// One PACKET_ADD_MEMBERSHIP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Membership {
    /// The interface.
    pub ifindex: i32,
    /// PACKET_MR_MULTICAST, _PROMISC, _ALLMULTI, _UNICAST.
    pub mr_type: u16,
    /// How many times it was added.
    pub count: u32,
    /// The hardware address (its length is the kernel's `alen`).
    pub address: Vec<u8>,
}

/// A packet socket's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PacketState {
    /// SOCK_RAW, SOCK_DGRAM or SOCK_PACKET.
    pub sock_type: i32,
    /// The protocol given to socket(), host order.
    pub protocol: u16,
    /// The protocol hooked now (bind's), host order.
    pub bound_protocol: u16,
    /// The interface bound (0: every one).
    pub ifindex: i32,
    /// (level, name, value) of the options of [`OPTIONS`] that are not 0.
    pub options: Vec<(i32, i32, i32)>,
    /// PACKET_FANOUT as getsockopt reports it (0: none).
    pub fanout: u32,
    /// Memberships, oldest first.
    pub memberships: Vec<Membership>,
    /// SOL_SOCKET options.
    pub socket: tcp::SocketOptions,
    /// Its rings, if it has one.
    pub rings: Option<Box<Rings>>,
    /// SOCK_PACKET: the device bound, by name ("": none).
    pub spkt_device: String,
}

impl PacketState {
    /// Its PACKET_VERSION (TPACKET_V1 unless set).
    pub(crate) fn version(&self) -> i32 {
        self.options
            .iter()
            .find(|&&(level, name, _)| level == SOL_PACKET && name == PACKET_VERSION)
            .map_or(packet_ring::TPACKET_V1, |o| o.2)
    }
}

/// Captures packet socket `dup` (fd `fd` of `pid`, inode `ino`), refusing what cannot come
/// back: touches nothing of it.
pub(super) fn capture(
    pid: Pid,
    fd: RawFd,
    dup: BorrowedFd<'_>,
    ino: u64,
) -> Result<PacketState, FileError> {
    let errors = FamilyErrors {
        pid,
        fd,
        family: "packet",
        ino,
    };
    let refuse = |what: &str| errors.refuse(what);
    let err = |op: &'static str| errors.inspect(op);
    let sock_type = sockopt::get_int(dup, libc::SOL_SOCKET, libc::SO_TYPE)
        .map_err(err("getsockopt SO_TYPE"))?;
    let protocol = sockopt::get_int(dup, libc::SOL_SOCKET, libc::SO_PROTOCOL)
        .map_err(err("getsockopt SO_PROTOCOL"))?;
    if ![libc::SOCK_RAW, libc::SOCK_DGRAM, SOCK_PACKET].contains(&sock_type) {
        return Err(refuse(&format!("of type {sock_type}: not supported")));
    }
    let d = family_diag::packet_diag(ino)
        .map_err(|e| err("packet_diag")(std::io::Error::other(e.to_string())))?;
    let Some(d) = d else {
        return Err(refuse(
            "packet_diag does not list it (in another network namespace than cryo's?)",
        ));
    };
    let socket = tcp::capture_socket_level(dup)
        .map_err(|e| err("socket options")(std::io::Error::other(e.to_string())))?;
    if sock_type == SOCK_PACKET {
        // SO_PROTOCOL reads 0 for these: the protocol hooked is packet_diag's.
        return Ok(PacketState {
            sock_type,
            protocol: d.protocol,
            bound_protocol: 0,
            ifindex: 0,
            options: Vec::new(),
            fanout: 0,
            memberships: Vec::new(),
            socket,
            rings: None,
            spkt_device: sockopt::packet_device(dup).map_err(err("getsockname"))?,
        });
    }
    if d.protocol != 0 && !d.running {
        return Err(refuse(
            "bound but not receiving (its interface is down or gone): a temporary state, retry later",
        ));
    }
    let mut options = Vec::new();
    for &(name, step) in OPTIONS {
        let value = match sockopt::get_int(dup, SOL_PACKET, name) {
            Ok(v) => v,
            Err(e) if name == PACKET_VNET_HDR_SZ && e.raw_os_error() == Some(libc::ENOPROTOOPT) => {
                // An older kernel: the flag alone.
                let v = sockopt::get_int(dup, SOL_PACKET, PACKET_VNET_HDR)
                    .map_err(err("getsockopt PACKET_VNET_HDR"))?;
                if v != 0 {
                    options.push((SOL_PACKET, PACKET_VNET_HDR, v));
                }
                continue;
            }
            Err(e) => return Err(err(step)(e)),
        };
        if value != 0 {
            options.push((SOL_PACKET, name, value));
        }
    }
    let fanout = sockopt::get_int(dup, SOL_PACKET, PACKET_FANOUT)
        .map_err(err("getsockopt PACKET_FANOUT"))? as u32;
    let mode = (fanout >> 16) & 0xff;
    if fanout != 0 && (mode == PACKET_FANOUT_CBPF || mode == PACKET_FANOUT_EBPF) {
        return Err(refuse(
            "packet fanout steered by a BPF program (PACKET_FANOUT_CBPF/EBPF), which the kernel cannot give back",
        ));
    }
    let version = options
        .iter()
        .find(|o| o.1 == PACKET_VERSION)
        .map_or(packet_ring::TPACKET_V1, |o| o.2);
    let rings = match (d.rx_ring, d.tx_ring) {
        (None, None) => None,
        (rx, tx) => Some(Box::new(
            packet_ring::capture(dup, version, rx, tx).map_err(|w| refuse(&w))?,
        )),
    };
    // Oldest first: added again in that order, they come out in the kernel's order.
    let memberships = d
        .memberships
        .into_iter()
        .rev()
        .map(|m| Membership {
            ifindex: m.ifindex,
            mr_type: m.mr_type,
            count: m.count,
            address: m.address,
        })
        .collect();
    Ok(PacketState {
        sock_type,
        protocol: u16::from_be(protocol as u16),
        bound_protocol: d.protocol,
        ifindex: d.ifindex,
        options,
        fanout,
        memberships,
        socket,
        rings,
        spkt_device: String::new(),
    })
}

/// A packet socket in words, for messages and `cryo show`.
pub(super) fn describe(p: &PacketState) -> String {
    if p.sock_type == SOCK_PACKET {
        return match p.spkt_device.as_str() {
            "" => format!("packet SOCK_PACKET protocol 0x{:04x}", p.protocol),
            dev => format!("packet SOCK_PACKET protocol 0x{:04x} on {dev}", p.protocol),
        };
    }
    let ty = if p.sock_type == libc::SOCK_DGRAM {
        "dgram"
    } else {
        "raw"
    };
    let mut out = format!("packet {ty} protocol 0x{:04x}", p.bound_protocol);
    if p.ifindex != 0 {
        out += &format!(" on ifindex {}", p.ifindex);
    }
    if p.fanout != 0 {
        out += &format!(" fanout group {}", p.fanout & 0xffff);
    }
    if let Some(r) = &p.rings {
        let ring = |r: &packet_ring::Ring| format!("{}x{}", r.frame_nr, r.frame_size);
        if let Some(rx) = &r.rx {
            out += &format!(" rx ring {} head {}", ring(rx), r.rx_head);
        }
        if let Some(tx) = &r.tx {
            out += &format!(" tx ring {}", ring(tx));
        }
    }
    out
}

/// Packet socket `p` made again (see the module's order).
pub(super) fn restore(desc: &FileDesc, p: &PacketState) -> Result<OwnedFd, SocketError> {
    let fd = sockopt::socket(libc::AF_PACKET, p.sock_type, i32::from(p.protocol.to_be()))
        .map_err(|e| restore_err(desc, "socket", e))?;
    let b = fd.as_fd();
    tcp::apply_socket_level(b, &p.socket).map_err(|e| restore_err(desc, "socket options", e))?;
    if p.sock_type == SOCK_PACKET {
        if !p.spkt_device.is_empty() {
            sockopt::bind_packet_device(b, &p.spkt_device)
                .map_err(|e| restore_err(desc, "bind", e))?;
        }
        return Ok(fd);
    }
    for &(level, name, value) in &p.options {
        sockopt::set_int(b, level, name, value)
            .map_err(|e| restore_err(desc, option_name(name), e))?;
    }
    // The rings before bind: frames reach them from then on.
    let hooked = p.protocol != 0 || p.bound_protocol != 0;
    if let Some(r) = &p.rings {
        packet_ring::restore(b, p.version(), r, hooked)
            .map_err(|(step, e)| restore_err(desc, step, e))?;
    }
    // A ring held its hook on lo meanwhile: bound again whatever it was.
    let moved = hooked && p.rings.as_ref().is_some_and(|r| r.rx.is_some());
    if p.ifindex != 0 || p.bound_protocol != p.protocol || moved {
        sockopt::bind_packet(b, p.ifindex, p.bound_protocol)
            .map_err(|e| restore_err(desc, "bind", e))?;
    }
    for m in &p.memberships {
        // struct packet_mreq_max: the address may be up to MAX_ADDR_LEN bytes.
        let mut mreq = Vec::with_capacity(8 + MAX_ADDR_LEN);
        mreq.extend_from_slice(&m.ifindex.to_ne_bytes());
        mreq.extend_from_slice(&m.mr_type.to_ne_bytes());
        mreq.extend_from_slice(&(m.address.len() as u16).to_ne_bytes());
        mreq.extend_from_slice(&m.address);
        mreq.resize(8 + MAX_ADDR_LEN, 0);
        for _ in 0..m.count {
            sockopt::set_bytes(b, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mreq)
                .map_err(|e| restore_err(desc, "PACKET_ADD_MEMBERSHIP", e))?;
        }
    }
    if p.fanout != 0 {
        sockopt::set_int(b, SOL_PACKET, PACKET_FANOUT, p.fanout as i32)
            .map_err(|e| restore_err(desc, "PACKET_FANOUT", e))?;
    }
    Ok(fd)
}

/// The name of option `name` of the table, for messages.
fn option_name(name: i32) -> &'static str {
    if name == PACKET_VNET_HDR {
        return "PACKET_VNET_HDR";
    }
    OPTIONS
        .iter()
        .find(|(n, _)| *n == name)
        .map_or("SOL_PACKET option", |(_, s)| s)
}

/// Whether `name` is an option restore sets (an image naming another is refused).
pub(super) fn is_known_option(level: i32, name: i32) -> bool {
    level == SOL_PACKET && (name == PACKET_VNET_HDR || OPTIONS.iter().any(|(n, _)| *n == name))
}
