//! The network interfaces of a namespace: read from RTM_GETLINK with what a process sees of
//! each, and made again in a fresh one with their index, name, kind and settings.
//!
//! ```text
//! read_links()   every link, kernel order: index, name, kind, admin flags, MTU, the
//!                attributes it is created with (address, queues, GSO sizes...), its kind's
//!                settable data, its master and its port data, the link it is over (a veth's
//!                peer, a macvlan's lower), and the line a comparison reads (all but the
//!                counters, timers and states the kernel moves by itself)
//! make_links()   those a fresh namespace lacks created (index and name as dumped; a veth
//!                pair once, its peer in the namespace of `outer` when it was outside), in
//!                an order where a link is made after the one it is over; then masters,
//!                port data, aliases and admin flags
//! ```
//!
//! Kinds made again: [`MADE_KINDS`]. A veth whose peer is in another namespace is made again
//! only when that namespace is the one the restore runs in (the host side of a container's
//! veth): the peer comes back there with its name, index, address, state and bridge. A
//! macvlan over a link of that namespace comes back over the link of that name there.

use std::fmt::Write as _;
use std::os::fd::{AsRawFd, BorrowedFd};

use crate::netlink::{NlError, NlSocket};
use crate::nft;
use crate::state::{hex, text_of, u32_of};

pub(crate) const RTM_NEWLINK: u16 = 16;
pub(crate) const RTM_GETLINK: u16 = 18;
const RTM_GETNSID: u16 = 90;

pub(crate) const IFLA_ADDRESS: u16 = 1;
const IFLA_BROADCAST: u16 = 2;
pub(crate) const IFLA_IFNAME: u16 = 3;
pub(crate) const IFLA_MTU: u16 = 4;
const IFLA_LINK: u16 = 5;
const IFLA_STATS: u16 = 7;
const IFLA_MASTER: u16 = 10;
const IFLA_PROTINFO: u16 = 12;
const IFLA_TXQLEN: u16 = 13;
const IFLA_OPERSTATE: u16 = 16;
const IFLA_LINKMODE: u16 = 17;
const IFLA_LINKINFO: u16 = 18;
const IFLA_IFALIAS: u16 = 20;
const IFLA_STATS64: u16 = 23;
const IFLA_AF_SPEC: u16 = 26;
const IFLA_GROUP: u16 = 27;
const IFLA_NET_NS_FD: u16 = 28;
const IFLA_PROMISCUITY: u16 = 30;
const IFLA_NUM_TX_QUEUES: u16 = 31;
const IFLA_NUM_RX_QUEUES: u16 = 32;
const IFLA_CARRIER: u16 = 33;
const IFLA_CARRIER_CHANGES: u16 = 35;
const IFLA_LINK_NETNSID: u16 = 37;
const IFLA_GSO_MAX_SEGS: u16 = 40;
const IFLA_GSO_MAX_SIZE: u16 = 41;
const IFLA_PAD: u16 = 42;
const IFLA_EVENT: u16 = 44;
const IFLA_CARRIER_UP_COUNT: u16 = 47;
const IFLA_CARRIER_DOWN_COUNT: u16 = 48;
const IFLA_GRO_MAX_SIZE: u16 = 58;
const IFLA_ALLMULTI: u16 = 61;
const IFLA_GSO_IPV4_MAX_SIZE: u16 = 63;
const IFLA_GRO_IPV4_MAX_SIZE: u16 = 64;

const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const IFLA_INFO_XSTATS: u16 = 3;
const IFLA_INFO_SLAVE_KIND: u16 = 4;
const IFLA_INFO_SLAVE_DATA: u16 = 5;
const VETH_INFO_PEER: u16 = 1;

const NETNSA_NSID: u16 = 1;
const NETNSA_FD: u16 = 3;

/// Link flags an administrator sets (the others follow them: RUNNING, LOWER_UP...).
pub(crate) const ADMIN_FLAGS: u32 = (libc::IFF_UP
    | libc::IFF_DEBUG
    | libc::IFF_NOARP
    | libc::IFF_PROMISC
    | libc::IFF_ALLMULTI
    | libc::IFF_MULTICAST
    | libc::IFF_DYNAMIC) as u32;

/// The kinds of link made again: virtual ones whose whole state is in their attributes (and
/// a test shows it: dummy, vlan and ipvlan are as simple, but the hosts here have none).
pub const MADE_KINDS: [&str; 4] = ["bridge", "veth", "macvlan", "ifb"];

/// Attributes a link is created with, kept as dumped.
const CREATE_ATTRS: [u16; 13] = [
    IFLA_ADDRESS,
    IFLA_BROADCAST,
    IFLA_MTU,
    IFLA_TXQLEN,
    IFLA_LINKMODE,
    IFLA_GROUP,
    IFLA_NUM_TX_QUEUES,
    IFLA_NUM_RX_QUEUES,
    IFLA_GSO_MAX_SEGS,
    IFLA_GSO_MAX_SIZE,
    IFLA_GRO_MAX_SIZE,
    IFLA_GSO_IPV4_MAX_SIZE,
    IFLA_GRO_IPV4_MAX_SIZE,
];

/// Attributes the kernel moves by itself (counters, carrier events, the operational state
/// linkwatch settles later, the per-family data whose settings are sysctls), that repeat
/// another (a bridge port's protocol info is its port data), or that count references other
/// objects hold (promiscuity and allmulti: a packet socket's membership, a bridge's port; made
/// again with them, the administrator's own setting is in the flags): not compared.
const VOLATILE_ATTRS: [u16; 12] = [
    IFLA_PROMISCUITY,
    IFLA_ALLMULTI,
    IFLA_STATS,
    IFLA_STATS64,
    IFLA_OPERSTATE,
    IFLA_AF_SPEC,
    IFLA_CARRIER_CHANGES,
    IFLA_CARRIER_UP_COUNT,
    IFLA_CARRIER_DOWN_COUNT,
    IFLA_PAD,
    IFLA_EVENT,
    IFLA_PROTINFO,
];

/// A bridge's data the kernel answers but does not take: its and the root's ids, root port
/// and cost, topology change state, timers (hello, tcn, topology change, gc), the flush
/// order, padding, the querier's state.
const BRIDGE_READ_ONLY: [u16; 14] = [10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 21, 40, 47, 48];
/// Of those, what moves by itself: the timers and the querier's state.
const BRIDGE_VOLATILE: [u16; 5] = [16, 17, 18, 19, 47];
/// A bridge port's data the kernel answers but does not take (state is its bridge's:
/// forwarding once up without STP): state, STP ids and costs, timers, counts, padding.
const BRIDGE_PORT_READ_ONLY: [u16; 16] = [
    1, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 26, 38, 41,
];
/// Of those, what moves by itself: the timers and the multicast counts.
const BRIDGE_PORT_VOLATILE: [u16; 5] = [21, 22, 23, 38, 41];
/// A macvlan's data the kernel answers but does not take: its address count and the
/// broadcast queue length in use.
const MACVLAN_READ_ONLY: [u16; 2] = [6, 8];

/// One network interface as RTM_GETLINK shows it, and what makes it again.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Link {
    /// Its index.
    pub index: i32,
    /// Its name.
    pub name: String,
    /// IFLA_INFO_KIND ("" for a device without: lo).
    pub kind: String,
    /// Its admin flags (IFF_UP...).
    pub flags: u32,
    /// Its MTU.
    pub mtu: u32,
    /// The attributes it is created with ([`CREATE_ATTRS`]), encoded.
    pub create_attrs: Vec<u8>,
    /// IFLA_IFALIAS ("" when none).
    pub alias: String,
    /// Its kind's data the kernel takes back (IFLA_INFO_DATA), encoded.
    pub info_data: Vec<u8>,
    /// Its master's index (0: none).
    pub master: i32,
    /// Its port data the kernel takes back (IFLA_INFO_SLAVE_DATA), encoded.
    pub port_data: Vec<u8>,
    /// IFLA_LINK: the link it is over (a veth's peer, a macvlan's lower; 0: none).
    pub link: i32,
    /// IFLA_LINK_NETNSID: the namespace `link` is in, as this one numbers it (None: this).
    pub link_netnsid: Option<i32>,
    /// IFLA_OPERSTATE (RFC 2863: 6 up, 2 down...): not set but waited for, the kernel's link
    /// watch settles it shortly after the link's carrier moves.
    pub operstate: u8,
    /// IFLA_CARRIER: whether its carrier is on (the kernel answers it, up or down).
    pub carrier: bool,
    /// What a comparison reads.
    pub line: String,
}

/// The peer of a veth, or the link a macvlan is over, in the namespace the dump ran in (not
/// the link's own): what makes it again there, or finds it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OuterPeer {
    /// Its name.
    pub name: String,
    /// Its index there.
    pub index: i32,
    /// The attributes it is created with, encoded.
    pub create_attrs: Vec<u8>,
    /// Its admin flags.
    pub flags: u32,
    /// The name of its master there ("" when none).
    pub master: String,
}

/// Appends attribute `ty` of `value` to `msg`, padded to 4 bytes.
pub(crate) fn push_attr(msg: &mut Vec<u8>, ty: u16, value: &[u8]) {
    msg.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
    msg.extend_from_slice(&ty.to_ne_bytes());
    msg.extend_from_slice(value);
    msg.resize(msg.len().next_multiple_of(4), 0);
}

/// The attributes of `attrs` whose type `keep` keeps, encoded again.
fn filtered(attrs: &[u8], keep: impl Fn(u16) -> bool) -> Vec<u8> {
    nft::attrs(attrs)
        .filter(|(ty, _)| keep(*ty))
        .fold(Vec::new(), |mut out, (ty, v)| {
            push_attr(&mut out, ty, v);
            out
        })
}

/// The attributes of `wanted` that `made` lacks or has with another value, encoded.
fn differing(wanted: &[u8], made: &[u8]) -> Vec<u8> {
    nft::attrs(wanted)
        .filter(|(ty, v)| !nft::attrs(made).any(|(t, w)| t == *ty && w == *v))
        .fold(Vec::new(), |mut out, (ty, v)| {
            push_attr(&mut out, ty, v);
            out
        })
}

fn attrs_text(attrs: &[u8]) -> String {
    nft::attrs(attrs).fold(String::new(), |mut s, (ty, v)| {
        let _ = write!(s, " {ty}={}", hex(v));
        s
    })
}

/// A netlink request: header, the family's fixed struct, then `attrs` (encoded).
pub(crate) fn message(ty: u16, flags: u16, seq: u32, fixed: &[u8], attrs: &[u8]) -> Vec<u8> {
    let mut msg = vec![0u8; 16];
    msg[4..6].copy_from_slice(&ty.to_ne_bytes());
    msg[6..8].copy_from_slice(&flags.to_ne_bytes());
    msg[8..12].copy_from_slice(&seq.to_ne_bytes());
    msg.extend_from_slice(fixed);
    msg.resize(msg.len().next_multiple_of(4), 0);
    msg.extend_from_slice(attrs);
    let len = msg.len() as u32;
    msg[0..4].copy_from_slice(&len.to_ne_bytes());
    msg
}

/// Dumps `ty` with fixed struct `fixed`: the payloads answered.
pub(crate) fn dump(sock: &NlSocket, ty: u16, fixed: &[u8]) -> Result<Vec<(u16, Vec<u8>)>, NlError> {
    let seq = sock.next_seq();
    sock.dump(
        &message(ty, nft::NLM_F_REQUEST | nft::NLM_F_DUMP, seq, fixed, &[]),
        seq,
    )
}

/// `struct ifinfomsg` for link `index`: flags `flags` of those in `change`.
fn ifinfo(index: i32, flags: u32, change: u32) -> [u8; 16] {
    let mut f = [0u8; 16];
    f[4..8].copy_from_slice(&index.to_ne_bytes());
    f[8..12].copy_from_slice(&flags.to_ne_bytes());
    f[12..16].copy_from_slice(&change.to_ne_bytes());
    f
}

/// Sends one RTM_NEWLINK and waits for its ACK.
fn new_link(
    sock: &NlSocket,
    flags: u16,
    fixed: &[u8],
    attrs: &[u8],
    step: String,
) -> Result<(), NlError> {
    let seq = sock.next_seq();
    let msg = message(
        RTM_NEWLINK,
        nft::NLM_F_REQUEST | nft::NLM_F_ACK | flags,
        seq,
        fixed,
        attrs,
    );
    sock.transact(&msg, None, &[(seq, step)])
}

/// Changes link `index` by `attrs` (RTM_NEWLINK on an existing link).
fn change_link(sock: &NlSocket, index: i32, attrs: &[u8], step: String) -> Result<(), NlError> {
    new_link(sock, 0, &ifinfo(index, 0, 0), attrs, step)
}

/// Every link of the namespace of `sock`, in the kernel's order.
pub(crate) fn read_links(sock: &NlSocket) -> Result<Vec<Link>, NlError> {
    let answers = dump(sock, RTM_GETLINK, &[0u8; 16])?;
    Ok(answers.iter().filter_map(|(_, p)| parse_link(p)).collect())
}

/// One RTM_NEWLINK answer.
fn parse_link(p: &[u8]) -> Option<Link> {
    if p.len() < 16 {
        return None;
    }
    let mut link = Link {
        index: i32::from_ne_bytes(p[4..8].try_into().expect("4 bytes")),
        flags: u32_of(&p[8..12]) & ADMIN_FLAGS,
        ..Link::default()
    };
    let mut line = String::new();
    let mut info = String::new();
    let attrs = &p[16..];
    for (ty, v) in nft::attrs(attrs) {
        match ty {
            IFLA_IFNAME => link.name = text_of(v),
            IFLA_MTU => link.mtu = u32_of(v),
            IFLA_IFALIAS => link.alias = text_of(v),
            IFLA_MASTER => link.master = u32_of(v) as i32,
            IFLA_LINK => link.link = u32_of(v) as i32,
            IFLA_LINK_NETNSID => link.link_netnsid = Some(u32_of(v) as i32),
            IFLA_OPERSTATE => link.operstate = v.first().copied().unwrap_or_default(),
            IFLA_CARRIER => link.carrier = v.first().is_some_and(|c| *c != 0),
            IFLA_LINKINFO => {
                let (mut kind, mut data, mut port_kind, mut port) =
                    (String::new(), &[][..], String::new(), &[][..]);
                for (t, w) in nft::attrs(v) {
                    match t {
                        IFLA_INFO_KIND => kind = text_of(w),
                        IFLA_INFO_DATA => data = w,
                        IFLA_INFO_SLAVE_KIND => port_kind = text_of(w),
                        IFLA_INFO_SLAVE_DATA => port = w,
                        // Statistics.
                        IFLA_INFO_XSTATS => {}
                        _ => {
                            let _ = write!(info, " info{t}={}", hex(w));
                        }
                    }
                }
                let (read_only, volatile): (&[u16], &[u16]) = match kind.as_str() {
                    "bridge" => (&BRIDGE_READ_ONLY, &BRIDGE_VOLATILE),
                    "macvlan" => (&MACVLAN_READ_ONLY, &[]),
                    _ => (&[], &[]),
                };
                link.info_data = filtered(data, |t| !read_only.contains(&t));
                let _ = write!(
                    info,
                    " kind {kind} data{}",
                    attrs_text(&filtered(data, |t| !volatile.contains(&t)))
                );
                let (read_only, volatile): (&[u16], &[u16]) = match port_kind.as_str() {
                    "bridge" => (&BRIDGE_PORT_READ_ONLY, &BRIDGE_PORT_VOLATILE),
                    _ => (&[], &[]),
                };
                link.port_data = filtered(port, |t| !read_only.contains(&t));
                if !port_kind.is_empty() {
                    let _ = write!(
                        info,
                        " port {port_kind} data{}",
                        attrs_text(&filtered(port, |t| !volatile.contains(&t)))
                    );
                }
                link.kind = kind;
            }
            _ => {}
        }
    }
    link.create_attrs = filtered(attrs, |t| CREATE_ATTRS.contains(&t));
    let _ = write!(
        line,
        "interface {} index {} flags {:#x}{info}{}",
        link.name,
        link.index,
        link.flags,
        attrs_text(&filtered(attrs, |t| {
            !VOLATILE_ATTRS.contains(&t) && t != IFLA_LINKINFO && t != IFLA_IFNAME
        }))
    );
    link.line = line;
    Some(link)
}

/// The number the namespace of `sock` gives the network namespace of `ns` (None: none yet,
/// so no link of it is over one there).
pub(crate) fn nsid_of(sock: &NlSocket, ns: BorrowedFd<'_>) -> Result<Option<i32>, NlError> {
    let mut attrs = Vec::new();
    push_attr(
        &mut attrs,
        NETNSA_FD,
        &(ns.as_raw_fd() as u32).to_ne_bytes(),
    );
    let seq = sock.next_seq();
    let answers = sock.get(
        &message(
            RTM_GETNSID,
            nft::NLM_F_REQUEST | nft::NLM_F_ACK,
            seq,
            &[libc::AF_UNSPEC as u8, 0, 0, 0],
            &attrs,
        ),
        seq,
    )?;
    let nsid = answers
        .iter()
        .flat_map(|(_, p)| nft::attrs(p.get(4..).unwrap_or_default()))
        .find(|(ty, _)| *ty == NETNSA_NSID)
        .map(|(_, v)| u32_of(v) as i32);
    // NETNSA_NSID_NOT_ASSIGNED
    Ok(nsid.filter(|id| *id >= 0))
}

/// Link `index` of `links` (those of the namespace a dump runs in), as an [`OuterPeer`];
/// None when there is no such link.
pub fn outer_peer(links: &[Link], index: i32) -> Option<OuterPeer> {
    let peer = links.iter().find(|l| l.index == index)?;
    let master = links
        .iter()
        .find(|l| peer.master != 0 && l.index == peer.master)
        .map(|l| l.name.clone())
        .unwrap_or_default();
    Some(OuterPeer {
        name: peer.name.clone(),
        index: peer.index,
        create_attrs: peer.create_attrs.clone(),
        flags: peer.flags,
        master,
    })
}

/// Where a veth's peer, outside, is made and a macvlan's link found: the namespace of the
/// restore (`ns`) or a dump's stand-in for it, and a socket of it (a peer's bridge is found
/// there by name).
pub(crate) struct Outer<'a> {
    /// The namespace.
    pub ns: BorrowedFd<'a>,
    /// An rtnetlink socket opened in it.
    pub sock: &'a NlSocket,
    /// Whether the peer gets its master there (not in a dump's stand-in).
    pub with_master: bool,
}

/// How long a restore waits for the name of a veth's peer to be free where it goes back: the
/// dumped namespace, its processes gone, is torn down by a worker of the kernel's, which
/// deletes the old pair shortly after.
const NAME_FREE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Waits until the namespace of `sock` has no link named `name`.
fn wait_name_free(sock: &NlSocket, name: &str) -> Result<(), NlError> {
    let taken = poll(NAME_FREE_TIMEOUT, || {
        Ok(read_links(sock)?
            .iter()
            .any(|l| l.name == name)
            .then_some(()))
    })?;
    match taken {
        None => Ok(()),
        Some(()) => Err(NlError::Protocol(
            "make a veth's peer again",
            format!(
                "the namespace it goes back to still has a link named {name} after {} s \
                 (the dumped process still runs, or another took the name)",
                NAME_FREE_TIMEOUT.as_secs()
            ),
        )),
    }
}

/// Calls `check` until it finds nothing left to wait for (None) or `timeout` passed, and
/// returns what it found last then: for kernel state that settles by itself, after a worker
/// of the kernel's ran, with no event to wait on.
pub(crate) fn poll<T, E>(
    timeout: std::time::Duration,
    mut check: impl FnMut() -> Result<Option<T>, E>,
) -> Result<Option<T>, E> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match check()? {
            None => return Ok(None),
            Some(left) if std::time::Instant::now() > deadline => return Ok(Some(left)),
            Some(_) => std::thread::sleep(std::time::Duration::from_millis(1)),
        }
    }
}

/// Makes `link`, one of `links`, in the calling thread's namespace; `peer`: its veth peer
/// outside, made in `outer`, or the link outside it is over, found there.
fn create(
    sock: &NlSocket,
    link: &Link,
    links: &[Link],
    peer: Option<&OuterPeer>,
    outer: Option<&Outer<'_>>,
) -> Result<(), NlError> {
    let mut attrs = Vec::new();
    push_attr(
        &mut attrs,
        IFLA_IFNAME,
        &[link.name.as_bytes(), &[0]].concat(),
    );
    attrs.extend_from_slice(&link.create_attrs);
    // A link over one outside (a macvlan on the host's bridge) is asked for from there, over
    // that one's index there, and sent here.
    let mut asked_from = sock;
    let lower_outside = link.kind != "veth" && link.link_netnsid.is_some();
    let here = if lower_outside {
        let (Some(p), Some(o)) = (peer, outer) else {
            return Err(NlError::Protocol(
                "make a link",
                format!(
                    "{}: the link it is over is outside and not described",
                    link.name
                ),
            ));
        };
        asked_from = o.sock;
        let lower = lower_index(o, p)?;
        push_attr(&mut attrs, IFLA_LINK, &(lower as u32).to_ne_bytes());
        let here = std::fs::File::open("/proc/thread-self/ns/net").map_err(|e| {
            NlError::Socket(
                "open this namespace",
                nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
            )
        })?;
        push_attr(
            &mut attrs,
            IFLA_NET_NS_FD,
            &(here.as_raw_fd() as u32).to_ne_bytes(),
        );
        Some(here)
    } else {
        if link.link != 0 && link.kind != "veth" {
            push_attr(&mut attrs, IFLA_LINK, &(link.link as u32).to_ne_bytes());
        }
        None
    };
    let mut info = Vec::new();
    push_attr(&mut info, IFLA_INFO_KIND, link.kind.as_bytes());
    // A bridge's data is set once it exists, only what differs from a new one's: a kernel
    // without VLAN filtering or multicast snooping refuses even their defaults.
    let mut data = if link.kind == "bridge" {
        Vec::new()
    } else {
        link.info_data.clone()
    };
    if link.kind == "veth" {
        let mut peer_msg = Vec::new();
        match (link.link_netnsid, peer, outer) {
            (None, _, _) => {
                let inside = links.iter().find(|l| l.index == link.link);
                let (index, name, create_attrs) = inside
                    .map(|l| (l.index, l.name.as_str(), l.create_attrs.as_slice()))
                    .unwrap_or((0, "", &[][..]));
                peer_msg.extend_from_slice(&ifinfo(index, 0, 0));
                if !name.is_empty() {
                    push_attr(
                        &mut peer_msg,
                        IFLA_IFNAME,
                        &[name.as_bytes(), &[0]].concat(),
                    );
                }
                peer_msg.extend_from_slice(create_attrs);
            }
            (Some(_), Some(p), Some(o)) => {
                peer_msg.extend_from_slice(&ifinfo(p.index, 0, 0));
                push_attr(
                    &mut peer_msg,
                    IFLA_IFNAME,
                    &[p.name.as_bytes(), &[0]].concat(),
                );
                peer_msg.extend_from_slice(&p.create_attrs);
                push_attr(
                    &mut peer_msg,
                    IFLA_NET_NS_FD,
                    &(o.ns.as_raw_fd() as u32).to_ne_bytes(),
                );
            }
            (Some(_), _, _) => {
                return Err(NlError::Protocol(
                    "make a veth",
                    format!("{}: its peer is outside and not described", link.name),
                ))
            }
        }
        push_attr(&mut data, VETH_INFO_PEER, &peer_msg);
    }
    if !data.is_empty() {
        push_attr(&mut info, IFLA_INFO_DATA, &data);
    }
    push_attr(&mut attrs, IFLA_LINKINFO, &info);
    let made = new_link(
        asked_from,
        nft::NLM_F_CREATE | nft::NLM_F_EXCL,
        &ifinfo(link.index, 0, 0),
        &attrs,
        format!(
            "create {} ({}, index {}{})",
            link.name,
            link.kind,
            link.index,
            peer.map_or(String::new(), |p| format!(
                ", {} {} index {} outside",
                if lower_outside { "over" } else { "its peer" },
                p.name,
                p.index
            ))
        ),
    );
    drop(here);
    made
}

/// The index, in `outer`, of the link `lower` a link is over: in a restore, the one of that
/// name there; in a dump's stand-in, a bridge made there with its name and index.
fn lower_index(outer: &Outer<'_>, lower: &OuterPeer) -> Result<i32, NlError> {
    let found = read_links(outer.sock)?
        .into_iter()
        .find(|l| l.name == lower.name)
        .map(|l| l.index);
    match found {
        Some(index) => Ok(index),
        None if !outer.with_master => {
            let mut attrs = Vec::new();
            push_attr(
                &mut attrs,
                IFLA_IFNAME,
                &[lower.name.as_bytes(), &[0]].concat(),
            );
            let mut info = Vec::new();
            push_attr(&mut info, IFLA_INFO_KIND, b"bridge");
            push_attr(&mut attrs, IFLA_LINKINFO, &info);
            new_link(
                outer.sock,
                nft::NLM_F_CREATE | nft::NLM_F_EXCL,
                &ifinfo(lower.index, 0, 0),
                &attrs,
                format!("make a stand-in for {}", lower.name),
            )?;
            Ok(lower.index)
        }
        None => Err(NlError::Protocol(
            "make a link over one outside",
            format!("there is no link named {} to be over", lower.name),
        )),
    }
}

/// Makes the calling thread's namespace, a fresh one, have `links` (lo and those every
/// fresh namespace has are changed, not created), all down: created, given their masters,
/// port data and aliases. `peers`: by the link's index, the outside peer of each veth end
/// whose peer was outside (made in `outer`) and the outside link of each macvlan over one
/// (found there). Links are brought up by [`set_flags`].
pub(crate) fn make_links(
    sock: &NlSocket,
    links: &[Link],
    peers: &[(i32, OuterPeer)],
    outer: Option<&Outer<'_>>,
) -> Result<(), NlError> {
    let mut present: Vec<i32> = read_links(sock)?.iter().map(|l| l.index).collect();
    let mut pending: Vec<&Link> = links
        .iter()
        .filter(|l| !present.contains(&l.index))
        .collect();
    while !pending.is_empty() {
        let mut waiting = Vec::new();
        for link in pending.iter().copied() {
            if present.contains(&link.index) {
                // The peer of a veth made earlier in this round.
                continue;
            }
            let over_missing = link.link != 0
                && link.link_netnsid.is_none()
                && link.kind != "veth"
                && !present.contains(&link.link);
            if over_missing {
                waiting.push(link);
                continue;
            }
            let peer = peers.iter().find(|(i, _)| *i == link.index).map(|(_, p)| p);
            if let (Some(p), Some(o), "veth") = (peer, outer, link.kind.as_str()) {
                wait_name_free(o.sock, &p.name)?;
            }
            // A veth pair registers its peer first, which took the lower index: the end of
            // the higher one is the one asked for, so both come back in the kernel's lists
            // (qdiscs, ...) in the same order.
            let asked = match links.iter().find(|l| l.index == link.link) {
                Some(other) if link.kind == "veth" && link.link_netnsid.is_none() => {
                    if other.index > link.index {
                        other
                    } else {
                        link
                    }
                }
                _ => link,
            };
            create(sock, asked, links, peer, outer)?;
            present.push(link.index);
            if link.kind == "veth" && link.link_netnsid.is_none() {
                present.push(link.link);
            }
            if let (Some(p), Some(o), "veth") = (peer, outer, link.kind.as_str()) {
                if o.with_master && !p.master.is_empty() {
                    let master = read_links(o.sock)?
                        .into_iter()
                        .find(|l| l.name == p.master)
                        .ok_or_else(|| {
                            NlError::Protocol(
                                "attach a veth's peer to its bridge",
                                format!("{} has no bridge {} here", p.name, p.master),
                            )
                        })?;
                    let mut attrs = Vec::new();
                    push_attr(
                        &mut attrs,
                        IFLA_MASTER,
                        &(master.index as u32).to_ne_bytes(),
                    );
                    change_link(
                        o.sock,
                        p.index,
                        &attrs,
                        format!("attach {} to {}", p.name, p.master),
                    )?;
                }
                let up = p.flags & libc::IFF_UP as u32;
                new_link(
                    o.sock,
                    0,
                    &ifinfo(p.index, up, libc::IFF_UP as u32),
                    &[],
                    format!("set {} up", p.name),
                )?;
            }
        }
        if waiting.len() == pending.len() {
            return Err(NlError::Protocol(
                "make links",
                format!(
                    "{} is over link {}, which is not made",
                    waiting[0].name, waiting[0].link
                ),
            ));
        }
        pending = waiting;
    }
    for link in links
        .iter()
        .filter(|l| l.master != 0 || !l.alias.is_empty())
    {
        let mut attrs = Vec::new();
        if link.master != 0 {
            push_attr(&mut attrs, IFLA_MASTER, &(link.master as u32).to_ne_bytes());
        }
        if !link.alias.is_empty() {
            push_attr(&mut attrs, IFLA_IFALIAS, link.alias.as_bytes());
        }
        change_link(
            sock,
            link.index,
            &attrs,
            format!("set {}'s master and alias", link.name),
        )?;
    }
    // A bridge's data and its ports' set where they differ from what the kernel gave them.
    let now = read_links(sock)?;
    for link in links {
        let Some(made) = now.iter().find(|n| n.index == link.index) else {
            continue;
        };
        let data = differing(&link.info_data, &made.info_data);
        let port = differing(&link.port_data, &made.port_data);
        if data.is_empty() && port.is_empty() {
            continue;
        }
        let mut info = Vec::new();
        if !data.is_empty() {
            push_attr(&mut info, IFLA_INFO_KIND, link.kind.as_bytes());
            push_attr(&mut info, IFLA_INFO_DATA, &data);
        }
        if !port.is_empty() {
            push_attr(&mut info, IFLA_INFO_SLAVE_DATA, &port);
        }
        let mut attrs = Vec::new();
        push_attr(&mut attrs, IFLA_LINKINFO, &info);
        change_link(
            sock,
            link.index,
            &attrs,
            format!(
                "set {}'s data{}{}",
                link.name,
                attrs_text(&data),
                attrs_text(&port)
            ),
        )?;
    }
    // An MTU set only where it differs: a bridge given one keeps it whatever its ports'.
    let now = read_links(sock)?;
    for link in links {
        if now
            .iter()
            .any(|l| l.index == link.index && l.mtu != link.mtu)
        {
            let mut attrs = Vec::new();
            push_attr(&mut attrs, IFLA_MTU, &link.mtu.to_ne_bytes());
            change_link(sock, link.index, &attrs, format!("set {}'s MTU", link.name))?;
        }
    }
    Ok(())
}

/// How long a restore waits for the kernel's link watch to settle the links' operational
/// states (it runs at once for an urgent event, a second later at most otherwise).
const SETTLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// Waits until each link of `links` is in its operational state as dumped (up once its
/// carrier is, a qdisc attached: until then what it sends is dropped); an error names the
/// first one that did not settle.
pub(crate) fn wait_operstates(sock: &NlSocket, links: &[Link]) -> Result<(), NlError> {
    let unsettled = poll(SETTLE_TIMEOUT, || {
        let now = read_links(sock)?;
        Ok(links.iter().find_map(|l| {
            now.iter()
                .find(|n| n.index == l.index && n.operstate != l.operstate)
                .map(|n| (l, n.operstate))
        }))
    })?;
    match unsettled {
        None => Ok(()),
        Some((link, state)) => Err(NlError::Protocol(
            "wait for the links' operational states",
            format!(
                "{} stays in state {state}, not {} as dumped",
                link.name, link.operstate
            ),
        )),
    }
}

/// Sets the admin flags of `link` as dumped (promisc and allmulti as the administrator set
/// them: the kernel shows those, not the references of a port or a socket).
pub(crate) fn set_flags(sock: &NlSocket, link: &Link) -> Result<(), NlError> {
    let change = ADMIN_FLAGS;
    let deadline = std::time::Instant::now() + NAME_FREE_TIMEOUT;
    loop {
        let set = new_link(
            sock,
            0,
            &ifinfo(link.index, link.flags & change, change),
            &[],
            format!("set {}'s flags", link.name),
        );
        match set {
            // A macvlan over a link outside takes its address there: the dumped one keeps
            // it until its namespace is torn down, shortly after its processes are gone.
            Err(NlError::Kernel { errno, .. })
                if errno == nix::errno::Errno::EADDRINUSE
                    && link.link_netnsid.is_some()
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bridge_keeps_its_settings_and_leaves_its_timers() {
        let mut data = Vec::new();
        push_attr(&mut data, 1, &1500u32.to_ne_bytes()); // forward delay
        push_attr(&mut data, 16, &7u64.to_ne_bytes()); // hello timer
        push_attr(&mut data, 11, &[0u8; 8]); // bridge id
        let mut info = Vec::new();
        push_attr(&mut info, IFLA_INFO_KIND, b"bridge");
        push_attr(&mut info, IFLA_INFO_DATA, &data);
        let mut attrs = Vec::new();
        push_attr(&mut attrs, IFLA_IFNAME, b"br0\0");
        push_attr(&mut attrs, IFLA_MTU, &1500u32.to_ne_bytes());
        push_attr(&mut attrs, IFLA_STATS64, &[0u8; 16]);
        push_attr(&mut attrs, IFLA_LINKINFO, &info);
        let mut p = ifinfo(5, libc::IFF_UP as u32 | libc::IFF_RUNNING as u32, 0).to_vec();
        p.extend_from_slice(&attrs);
        let link = parse_link(&p).unwrap();
        assert_eq!(
            (link.index, link.name.as_str(), link.kind.as_str()),
            (5, "br0", "bridge")
        );
        assert_eq!(link.flags, libc::IFF_UP as u32);
        let kept: Vec<u16> = nft::attrs(&link.info_data).map(|(t, _)| t).collect();
        assert_eq!(kept, [1]);
        assert!(
            link.line.contains(" kind bridge data 1=dc050000 11="),
            "{}",
            link.line
        );
        assert!(!link.line.contains(" 16="), "{}", link.line);
        assert!(!link.line.contains(" 23="), "{}", link.line);
    }
}
