//! sock_diag of the two other families a process holds sockets of: packet_diag (AF_PACKET)
//! and netlink_diag (AF_NETLINK). One dump each (neither family filters by inode), the
//! answers decoded by hand (netlink-packet-sock-diag 0.5 knows neither family).
//!
//! ```text
//!  request: nlmsghdr { SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP }
//!           | { family, protocol, 0, ino, show, cookie }          (packet/netlink_diag_req)
//!  packet:  nlmsghdr | packet_diag_msg { family, type, num, ino, cookie }
//!           | INFO { ifindex, version, reserve, copy_thresh, tstamp, flags }
//!           | MCLIST { index, count, type, alen, addr[32] }...  | RX_RING | TX_RING
//!  netlink: nlmsghdr | netlink_diag_msg { family, type, protocol, state, portid,
//!           dst_portid, dst_group, ino, cookie } | MEMINFO { rmem_alloc, ... } | FLAGS
//!  ... NLMSG_DONE (or NLMSG_ERROR: the errno)
//! ```
//!
//! Both list the sockets of the network namespace of the asking socket (the caller's). A
//! netlink socket neither bound nor in a group is not listed at all.

use std::io;
use std::os::fd::AsRawFd;

use nix::sys::socket::{self, AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType};

use crate::error::{Result, UnixSockError};

/// `SOCK_DIAG_BY_FAMILY`.
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// `NLMSG_ERROR`, `NLMSG_DONE`.
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
/// `NLM_F_REQUEST | NLM_F_DUMP`.
const DUMP_FLAGS: u16 = 0x1 | 0x300;
/// The netlink message header's length.
const NLMSG_HDRLEN: usize = 16;

/// packet_diag: `PACKET_SHOW_INFO | PACKET_SHOW_MCLIST | PACKET_SHOW_RING_CFG`.
const PACKET_SHOW: u32 = 0x1 | 0x2 | 0x4;
const PACKET_DIAG_INFO: u16 = 0;
const PACKET_DIAG_MCLIST: u16 = 1;
const PACKET_DIAG_RX_RING: u16 = 2;
const PACKET_DIAG_TX_RING: u16 = 3;
/// `PDI_RUNNING`: the socket's protocol hook is in.
const PDI_RUNNING: u32 = 0x1;
/// `struct packet_diag_msg`, `struct packet_diag_mclist`.
const PACKET_MSG_LEN: usize = 16;
const MCLIST_LEN: usize = 44;
/// `MAX_ADDR_LEN`.
pub const MAX_ADDR_LEN: usize = 32;

/// netlink_diag: `NDIAG_SHOW_MEMINFO | NDIAG_SHOW_FLAGS`.
const NETLINK_SHOW: u32 = 0x1 | 0x8;
const NETLINK_DIAG_MEMINFO: u16 = 0;
const NETLINK_DIAG_FLAGS: u16 = 4;
/// `NDIAG_FLAG_CB_RUNNING`.
const NDIAG_FLAG_CB_RUNNING: u32 = 0x1;
/// `NETLINK_CONNECTED`.
const NETLINK_CONNECTED: u8 = 1;
/// `struct netlink_diag_msg`.
const NETLINK_MSG_LEN: usize = 28;

/// One membership of a packet socket (PACKET_ADD_MEMBERSHIP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacketMembership {
    /// The interface.
    pub ifindex: i32,
    /// PACKET_MR_MULTICAST, _PROMISC, _ALLMULTI, _UNICAST.
    pub mr_type: u16,
    /// How many times it was added.
    pub count: u32,
    /// The hardware address (`alen` bytes, at most [`MAX_ADDR_LEN`]).
    pub address: Vec<u8>,
}

/// A packet ring's geometry (`struct packet_diag_ring`: the request it was set up with; the
/// last three are TPACKET_V3's, 0 before).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PacketRing {
    /// tp_block_size: bytes per block (a multiple of the page size).
    pub block_size: u32,
    /// tp_block_nr.
    pub block_nr: u32,
    /// tp_frame_size.
    pub frame_size: u32,
    /// tp_frame_nr.
    pub frame_nr: u32,
    /// tp_retire_blk_tov (ms).
    pub retire_blk_tov: u32,
    /// tp_sizeof_priv.
    pub sizeof_priv: u32,
    /// tp_feature_req_word.
    pub features: u32,
}

impl PacketRing {
    /// The ring decoded from a PACKET_DIAG_RX_RING/TX_RING attribute.
    fn decode(b: &[u8]) -> Result<Self> {
        let w = |i: usize| u32_at(b, i * 4).ok_or_else(|| bad("packet_diag_ring", "short"));
        Ok(Self {
            block_size: w(0)?,
            block_nr: w(1)?,
            frame_size: w(2)?,
            frame_nr: w(3)?,
            retire_blk_tov: w(4)?,
            sizeof_priv: w(5)?,
            features: w(6)?,
        })
    }
}

/// What packet_diag tells of one packet socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacketDiag {
    /// The socket's inode.
    pub ino: u32,
    /// The interface bound (0: every one).
    pub ifindex: i32,
    /// The protocol hooked (bind's, host order; 0: none).
    pub protocol: u16,
    /// The hook is in (PDI_RUNNING).
    pub running: bool,
    /// The receive ring (PACKET_RX_RING), if one is set up.
    pub rx_ring: Option<PacketRing>,
    /// The transmit ring (PACKET_TX_RING), if one is set up.
    pub tx_ring: Option<PacketRing>,
    /// The memberships, newest first (as the kernel keeps them).
    pub memberships: Vec<PacketMembership>,
}

/// What netlink_diag tells of one netlink socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetlinkDiag {
    /// The socket's inode.
    pub ino: u32,
    /// NETLINK_ROUTE, NETLINK_GENERIC...
    pub protocol: u8,
    /// The port id bound.
    pub portid: u32,
    /// connect()ed (NETLINK_CONNECTED), to `dst_portid` and `dst_group`.
    pub connected: bool,
    /// The destination port id.
    pub dst_portid: u32,
    /// The destination group (0: none).
    pub dst_group: u32,
    /// Bytes charged to its receive queue (SK_MEMINFO_RMEM_ALLOC): > 0 while messages wait.
    pub rmem_alloc: u32,
    /// A dump is in progress on it (NDIAG_FLAG_CB_RUNNING).
    pub cb_running: bool,
}

/// A native u32 at `at` of `b`.
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

/// A native u16 at `at` of `b`.
fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(
        b.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}

fn bad(step: &'static str, detail: &str) -> UnixSockError {
    UnixSockError::Decode {
        step,
        detail: detail.into(),
    }
}

/// The packet socket of inode `ino` as packet_diag tells it (`None`: not in the caller's
/// network namespace).
pub fn packet_diag(ino: u64) -> Result<Option<PacketDiag>> {
    let mut found = None;
    dump(libc::AF_PACKET as u8, 0, PACKET_SHOW, |b| {
        parse_packet_answer(b, |d| {
            if u64::from(d.ino) == ino {
                found = Some(d);
            }
        })
    })?;
    Ok(found)
}

/// The netlink socket of inode `ino` and `protocol` as netlink_diag tells it (`None`: not
/// listed: unbound and in no group, or in another network namespace).
pub fn netlink_diag(protocol: u8, ino: u64) -> Result<Option<NetlinkDiag>> {
    let mut found = None;
    dump(libc::AF_NETLINK as u8, protocol, NETLINK_SHOW, |b| {
        parse_netlink_answer(b, |d| {
            if u64::from(d.ino) == ino {
                found = Some(d);
            }
        })
    })?;
    Ok(found)
}

/// One dump of `family` (`protocol`, `show`): each datagram of answers to `parse`, until
/// it says NLMSG_DONE was met.
fn dump(
    family: u8,
    protocol: u8,
    show: u32,
    mut parse: impl FnMut(&[u8]) -> Result<bool>,
) -> Result<()> {
    let nl = |step| {
        move |e: nix::Error| UnixSockError::Netlink {
            step,
            source: io::Error::from(e),
        }
    };
    let fd = socket::socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkSockDiag,
    )
    .map_err(nl("open netlink socket"))?;
    let mut msg = Vec::with_capacity(NLMSG_HDRLEN + 20);
    msg.extend_from_slice(&((NLMSG_HDRLEN + 20) as u32).to_ne_bytes());
    msg.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    msg.extend_from_slice(&DUMP_FLAGS.to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(&[family, protocol, 0, 0]);
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(&show.to_ne_bytes());
    msg.extend_from_slice(&[0xff; 8]);
    socket::send(fd.as_raw_fd(), &msg, MsgFlags::empty()).map_err(nl("send request"))?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = socket::recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty())
            .map_err(nl("receive answer"))?;
        if n == 0 {
            return Err(bad("answer", "end of stream before NLMSG_DONE"));
        }
        if parse(&buf[..n])? {
            return Ok(());
        }
    }
}

/// The messages of one datagram: (fixed part, attributes) of each answer to `each`; true
/// once NLMSG_DONE is met.
fn messages(
    mut b: &[u8],
    head_len: usize,
    mut each: impl FnMut(&[u8], Vec<(u16, &[u8])>) -> Result<()>,
) -> Result<bool> {
    while b.len() >= NLMSG_HDRLEN {
        let len = u32_at(b, 0).unwrap_or(0) as usize;
        let ty = u16_at(b, 4).unwrap_or(0);
        if len < NLMSG_HDRLEN || len > b.len() {
            return Err(bad("nlmsghdr", "message length out of range"));
        }
        let body = &b[NLMSG_HDRLEN..len];
        match ty {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR => {
                let code = u32_at(body, 0).ok_or_else(|| bad("NLMSG_ERROR", "short"))? as i32;
                return Err(UnixSockError::Netlink {
                    step: "dump",
                    source: io::Error::from_raw_os_error(code.checked_neg().unwrap_or(libc::EIO)),
                });
            }
            _ => {
                let head = body
                    .get(..head_len)
                    .ok_or_else(|| bad("diag message", "shorter than its fixed part"))?;
                each(head, attributes(&body[head_len..])?)?;
            }
        }
        b = b.get((len + 3) & !3..).unwrap_or(&[]);
    }
    Ok(false)
}

/// The attributes of `b`, each (type without the nested/byte-order bits, value).
fn attributes(mut b: &[u8]) -> Result<Vec<(u16, &[u8])>> {
    let mut out = Vec::new();
    while b.len() >= 4 {
        let len = usize::from(u16_at(b, 0).unwrap_or(0));
        let ty = u16_at(b, 2).unwrap_or(0) & 0x3fff;
        if len < 4 || len > b.len() {
            return Err(bad("nlattr", "attribute length out of range"));
        }
        out.push((ty, &b[4..len]));
        b = b.get((len + 3) & !3..).unwrap_or(&[]);
    }
    Ok(out)
}

fn attr<'a>(attrs: &[(u16, &'a [u8])], ty: u16) -> Option<&'a [u8]> {
    attrs.iter().find(|(t, _)| *t == ty).map(|(_, v)| *v)
}

/// Decodes one datagram of packet_diag answers, each socket to `each`; true once NLMSG_DONE
/// is met.
pub fn parse_packet_answer(b: &[u8], mut each: impl FnMut(PacketDiag)) -> Result<bool> {
    messages(b, PACKET_MSG_LEN, |head, attrs| {
        let info = attr(&attrs, PACKET_DIAG_INFO)
            .ok_or_else(|| bad("packet_diag", "no PACKET_DIAG_INFO"))?;
        let (Some(ifindex), Some(flags)) = (u32_at(info, 0), u32_at(info, 20)) else {
            return Err(bad("PACKET_DIAG_INFO", "short"));
        };
        let mclist = attr(&attrs, PACKET_DIAG_MCLIST).unwrap_or(&[]);
        if !mclist.len().is_multiple_of(MCLIST_LEN) {
            return Err(bad("PACKET_DIAG_MCLIST", "not a whole number of entries"));
        }
        let memberships = mclist
            .chunks_exact(MCLIST_LEN)
            .map(|m| {
                let alen = usize::from(u16_at(m, 10).unwrap_or(0));
                if alen > MAX_ADDR_LEN {
                    return Err(bad(
                        "PACKET_DIAG_MCLIST",
                        "address longer than MAX_ADDR_LEN",
                    ));
                }
                Ok(PacketMembership {
                    ifindex: u32_at(m, 0).unwrap_or(0) as i32,
                    count: u32_at(m, 4).unwrap_or(0),
                    mr_type: u16_at(m, 8).unwrap_or(0),
                    address: m[12..12 + alen].to_vec(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let ring = |ty| attr(&attrs, ty).map(PacketRing::decode).transpose();
        let (rx_ring, tx_ring) = (ring(PACKET_DIAG_RX_RING)?, ring(PACKET_DIAG_TX_RING)?);
        each(PacketDiag {
            ino: u32_at(head, 4).unwrap_or(0),
            ifindex: ifindex as i32,
            protocol: u16_at(head, 2).unwrap_or(0),
            running: flags & PDI_RUNNING != 0,
            rx_ring,
            tx_ring,
            memberships,
        });
        Ok(())
    })
}

/// Decodes one datagram of netlink_diag answers, each socket to `each`; true once
/// NLMSG_DONE is met.
pub fn parse_netlink_answer(b: &[u8], mut each: impl FnMut(NetlinkDiag)) -> Result<bool> {
    messages(b, NETLINK_MSG_LEN, |head, attrs| {
        let rmem_alloc = match attr(&attrs, NETLINK_DIAG_MEMINFO) {
            Some(m) => u32_at(m, 0).ok_or_else(|| bad("NETLINK_DIAG_MEMINFO", "short"))?,
            None => return Err(bad("netlink_diag", "no NETLINK_DIAG_MEMINFO")),
        };
        let flags = match attr(&attrs, NETLINK_DIAG_FLAGS) {
            Some(f) => u32_at(f, 0).ok_or_else(|| bad("NETLINK_DIAG_FLAGS", "short"))?,
            None => 0,
        };
        each(NetlinkDiag {
            ino: u32_at(head, 16).unwrap_or(0),
            protocol: head[2],
            portid: u32_at(head, 4).unwrap_or(0),
            connected: head[3] == NETLINK_CONNECTED,
            dst_portid: u32_at(head, 8).unwrap_or(0),
            dst_group: u32_at(head, 12).unwrap_or(0),
            rmem_alloc,
            cb_running: flags & NDIAG_FLAG_CB_RUNNING != 0,
        });
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(ty: u16, body: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&ty.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(body);
        while m.len() % 4 != 0 {
            m.push(0);
        }
        m
    }

    fn nlattr(ty: u16, value: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        a.extend_from_slice(&ty.to_ne_bytes());
        a.extend_from_slice(value);
        while a.len() % 4 != 0 {
            a.push(0);
        }
        a
    }

    fn packet_answer(mclist: &[u8]) -> Vec<u8> {
        let mut body = vec![libc::AF_PACKET as u8, 2];
        body.extend_from_slice(&0x0800u16.to_ne_bytes());
        body.extend_from_slice(&4242u32.to_ne_bytes());
        body.extend_from_slice(&[0; 8]);
        let mut info = Vec::new();
        for v in [1u32, 0, 0, 0, 0, PDI_RUNNING] {
            info.extend_from_slice(&v.to_ne_bytes());
        }
        body.extend(nlattr(PACKET_DIAG_INFO, &info));
        body.extend(nlattr(PACKET_DIAG_MCLIST | 0x8000, mclist));
        let mut ring = Vec::new();
        for v in [4096u32, 2, 2048, 4, 0, 0, 0] {
            ring.extend_from_slice(&v.to_ne_bytes());
        }
        body.extend(nlattr(PACKET_DIAG_RX_RING, &ring));
        let mut dgram = message(SOCK_DIAG_BY_FAMILY, &body);
        dgram.extend(message(NLMSG_DONE, &[0; 4]));
        dgram
    }

    #[test]
    fn a_packet_answer_decodes_with_its_memberships() {
        let mut entry = Vec::new();
        entry.extend_from_slice(&1u32.to_ne_bytes());
        entry.extend_from_slice(&2u32.to_ne_bytes());
        entry.extend_from_slice(&1u16.to_ne_bytes());
        entry.extend_from_slice(&6u16.to_ne_bytes());
        entry.extend_from_slice(&[1, 2, 3, 4, 5, 6]);
        entry.resize(MCLIST_LEN, 0);
        let mut got = Vec::new();
        assert!(parse_packet_answer(&packet_answer(&entry), |d| got.push(d)).unwrap());
        assert_eq!(
            got,
            [PacketDiag {
                ino: 4242,
                ifindex: 1,
                protocol: 0x0800,
                running: true,
                rx_ring: Some(PacketRing {
                    block_size: 4096,
                    block_nr: 2,
                    frame_size: 2048,
                    frame_nr: 4,
                    ..PacketRing::default()
                }),
                tx_ring: None,
                memberships: vec![PacketMembership {
                    ifindex: 1,
                    mr_type: 1,
                    count: 2,
                    address: vec![1, 2, 3, 4, 5, 6],
                }],
            }]
        );
        // A list cut inside an entry, an address past MAX_ADDR_LEN.
        assert!(parse_packet_answer(&packet_answer(&entry[..40]), |_| ()).is_err());
        entry[10] = 33;
        assert!(parse_packet_answer(&packet_answer(&entry), |_| ()).is_err());
    }

    #[test]
    fn a_netlink_answer_decodes_its_state_queue_and_flags() {
        let mut body = vec![libc::AF_NETLINK as u8, 3, 0, NETLINK_CONNECTED];
        for v in [77u32, 0, 1, 999, 0, 0] {
            body.extend_from_slice(&v.to_ne_bytes());
        }
        body.extend(nlattr(NETLINK_DIAG_MEMINFO, &[0x80, 0, 0, 0, 0, 0, 0, 0]));
        body.extend(nlattr(
            NETLINK_DIAG_FLAGS,
            &NDIAG_FLAG_CB_RUNNING.to_ne_bytes(),
        ));
        let dgram = message(SOCK_DIAG_BY_FAMILY, &body);
        let mut got = Vec::new();
        assert!(!parse_netlink_answer(&dgram, |d| got.push(d)).unwrap());
        assert_eq!(
            got,
            [NetlinkDiag {
                ino: 999,
                protocol: 0,
                portid: 77,
                connected: true,
                dst_portid: 0,
                dst_group: 1,
                rmem_alloc: 0x80,
                cb_running: true,
            }]
        );
    }

    #[test]
    fn errors_and_broken_lengths_are_refused() {
        let err = message(NLMSG_ERROR, &(-libc::EPERM).to_ne_bytes());
        match parse_netlink_answer(&err, |_| ()) {
            Err(UnixSockError::Netlink { source, .. }) => {
                assert_eq!(source.raw_os_error(), Some(libc::EPERM))
            }
            other => panic!("{other:?}"),
        }
        let mut broken = message(SOCK_DIAG_BY_FAMILY, &[0; 28]);
        broken[0] = 200;
        assert!(parse_netlink_answer(&broken, |_| ()).is_err());
        let mut body = vec![0u8; 28];
        body.extend_from_slice(&[99, 0, 1, 0]);
        assert!(parse_netlink_answer(&message(SOCK_DIAG_BY_FAMILY, &body), |_| ()).is_err());
        assert!(parse_packet_answer(&message(SOCK_DIAG_BY_FAMILY, &[0; 8]), |_| ()).is_err());
    }
}
