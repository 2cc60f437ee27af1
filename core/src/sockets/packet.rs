//! Packet sockets (AF_PACKET, SOCK_RAW and SOCK_DGRAM): protocol, bound interface, the
//! SOL_PACKET options, memberships, fanout group and the SOL_SOCKET options, read from
//! outside (getsockopt on a duplicate, packet_diag) and made again in that order.
//!
//! ```text
//! dump:    SO_TYPE, SO_PROTOCOL; packet_diag (INFO: ifindex, hooked protocol, running;
//!          MCLIST; RX/TX_RING: refused); getsockopt of OPTIONS and PACKET_FANOUT
//! restore: socket(AF_PACKET, type, protocol), SOL_SOCKET options, OPTIONS,
//!          bind(ifindex, protocol), memberships (oldest first, each as many times as it
//!          was added), fanout; the filter is the caller's (filter.rs)
//! ```
//!
//! Not carried: frames waiting in the receive queue (dropped, as UDP datagrams are: a packet
//! socket may lose frames anyway), PACKET_STATISTICS (reading them resets them: the restored
//! counters start at zero), a fanout group's max_num_members (the kernel does not show it).
//! A ring (PACKET_RX_RING/PACKET_TX_RING, mmapped) is refused, and so is a fanout group
//! steered by a BPF program (PACKET_FANOUT_CBPF/EBPF: the kernel does not give it back).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};

use cryo_proto::image::FileDesc;
use cryo_tcp_repair as tcp;
use nix::unistd::Pid;

use super::diag::{self, u16_at, u32_at};
use super::{for_errors, restore_err, SocketError};
use crate::files::FileError;
use crate::sys::sockopt;

/// `SOL_PACKET`.
const SOL_PACKET: i32 = 263;
/// `PACKET_ADD_MEMBERSHIP`, `PACKET_FANOUT`.
const PACKET_ADD_MEMBERSHIP: i32 = 1;
const PACKET_FANOUT: i32 = 18;
/// `PACKET_VNET_HDR` and `PACKET_VNET_HDR_SZ` (linux 6.2; the size says all the flag does).
const PACKET_VNET_HDR: i32 = 15;
const PACKET_VNET_HDR_SZ: i32 = 24;
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

/// packet_diag: `PACKET_SHOW_INFO | PACKET_SHOW_MCLIST | PACKET_SHOW_RING_CFG`.
const SHOW: u32 = 0x1 | 0x2 | 0x4;
/// packet_diag attributes.
const PACKET_DIAG_INFO: u16 = 0;
const PACKET_DIAG_MCLIST: u16 = 1;
const PACKET_DIAG_RX_RING: u16 = 2;
const PACKET_DIAG_TX_RING: u16 = 3;
/// `PDI_RUNNING`: the socket's protocol hook is in.
const PDI_RUNNING: u32 = 0x1;
/// `struct packet_diag_msg`, `struct packet_diag_mclist` sizes.
const DIAG_MSG_LEN: usize = 16;
const MCLIST_LEN: usize = 44;
/// `MAX_ADDR_LEN`.
const MAX_ADDR_LEN: usize = 32;

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
    /// SOCK_RAW or SOCK_DGRAM.
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
}

/// What packet_diag tells of one socket.
struct Diag {
    ifindex: i32,
    bound_protocol: u16,
    running: bool,
    ring: bool,
    /// Newest first, as the kernel keeps them.
    memberships: Vec<Membership>,
}

/// The packet_diag answer for socket `ino` (`None`: not in cryo's network namespace).
fn diag_of(ino: u64) -> std::io::Result<Option<Diag>> {
    let mut req = Vec::with_capacity(20);
    req.extend_from_slice(&[libc::AF_PACKET as u8, 0, 0, 0]);
    req.extend_from_slice(&0u32.to_ne_bytes());
    req.extend_from_slice(&SHOW.to_ne_bytes());
    req.extend_from_slice(&[0xff; 8]);
    let answers = diag::dump(&req, DIAG_MSG_LEN)?;
    let bad = |what: &str| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("packet_diag: {what}"),
        )
    };
    for a in answers {
        if u64::from(u32_at(&a.head, 4).unwrap_or(0)) != ino {
            continue;
        }
        let bound_protocol = u16_at(&a.head, 2).ok_or_else(|| bad("short message"))?;
        let info = a
            .attr(PACKET_DIAG_INFO)
            .ok_or_else(|| bad("no PACKET_DIAG_INFO"))?;
        let ifindex = u32_at(info, 0).ok_or_else(|| bad("short PACKET_DIAG_INFO"))? as i32;
        let flags = u32_at(info, 20).ok_or_else(|| bad("short PACKET_DIAG_INFO"))?;
        let mut memberships = Vec::new();
        for m in a.attr(PACKET_DIAG_MCLIST).unwrap_or(&[]).chunks(MCLIST_LEN) {
            let (Some(index), Some(count), Some(mr_type), Some(alen)) =
                (u32_at(m, 0), u32_at(m, 4), u16_at(m, 8), u16_at(m, 10))
            else {
                return Err(bad("short PACKET_DIAG_MCLIST"));
            };
            let alen = usize::from(alen).min(MAX_ADDR_LEN);
            memberships.push(Membership {
                ifindex: index as i32,
                mr_type,
                count,
                address: m.get(12..12 + alen).unwrap_or(&[]).to_vec(),
            });
        }
        return Ok(Some(Diag {
            ifindex,
            bound_protocol,
            running: flags & PDI_RUNNING != 0,
            ring: a.attr(PACKET_DIAG_RX_RING).is_some() || a.attr(PACKET_DIAG_TX_RING).is_some(),
            memberships,
        }));
    }
    Ok(None)
}

/// Captures packet socket `dup` (fd `fd` of `pid`, inode `ino`), refusing what cannot come
/// back: touches nothing of it.
pub(super) fn capture(
    pid: Pid,
    fd: RawFd,
    dup: BorrowedFd<'_>,
    ino: u64,
) -> Result<PacketState, FileError> {
    let open = || for_errors(pid, fd);
    let err = |op: &'static str| {
        move |e: std::io::Error| {
            let open = for_errors(pid, fd);
            open.inspect_err(op, open.proc_path(), e)
        }
    };
    let sock_type = sockopt::get_int(dup, libc::SOL_SOCKET, libc::SO_TYPE)
        .map_err(err("getsockopt SO_TYPE"))?;
    if sock_type != libc::SOCK_RAW && sock_type != libc::SOCK_DGRAM {
        return Err(open().refuse(
            format!("packet socket of type {sock_type} (SOCK_PACKET)"),
            false,
        ));
    }
    let protocol = sockopt::get_int(dup, libc::SOL_SOCKET, libc::SO_PROTOCOL)
        .map_err(err("getsockopt SO_PROTOCOL"))?;
    let Some(d) = diag_of(ino).map_err(err("packet_diag"))? else {
        return Err(open().refuse(
            "packet socket that packet_diag does not list (in another network namespace?)",
            true,
        ));
    };
    if d.ring {
        return Err(open().refuse("packet ring (PACKET_RX_RING/PACKET_TX_RING)", true));
    }
    if d.bound_protocol != 0 && !d.running {
        return Err(open().refuse(
            "packet socket not receiving (its interface is down or gone)",
            true,
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
        return Err(open().refuse(
            "packet fanout steered by a BPF program (PACKET_FANOUT_CBPF/EBPF)",
            true,
        ));
    }
    let socket = tcp::capture_socket_level(dup).map_err(|e| {
        let open = for_errors(pid, fd);
        open.inspect_err(
            "socket options",
            open.proc_path(),
            std::io::Error::other(e.to_string()),
        )
    })?;
    let mut memberships = d.memberships;
    memberships.reverse();
    Ok(PacketState {
        sock_type,
        protocol: u16::from_be(protocol as u16),
        bound_protocol: d.bound_protocol,
        ifindex: d.ifindex,
        options,
        fanout,
        memberships,
        socket,
    })
}

/// A packet socket in words, for messages and `cryo show`.
pub(super) fn describe(p: &PacketState) -> String {
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
    out
}

/// Packet socket `p` made again (see the module's order).
pub(super) fn restore(desc: &FileDesc, p: &PacketState) -> Result<OwnedFd, SocketError> {
    let fd = sockopt::socket(libc::AF_PACKET, p.sock_type, i32::from(p.protocol.to_be()))
        .map_err(|e| restore_err(desc, "socket", e))?;
    let b = fd.as_fd();
    tcp::apply_socket_level(b, &p.socket).map_err(|e| restore_err(desc, "socket options", e))?;
    for &(level, name, value) in &p.options {
        sockopt::set_int(b, level, name, value)
            .map_err(|e| restore_err(desc, option_name(name), e))?;
    }
    if p.ifindex != 0 || p.bound_protocol != p.protocol {
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
