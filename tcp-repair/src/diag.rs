//! inet_diag dumps, answered for the caller's network namespace: one request and one reply
//! parser for every question this crate asks (a listener's queues, whether a socket is listed
//! in some states and its shutdown state), and the destruction of one TIME_WAIT entry
//! (SOCK_DESTROY) that holds the address pair of a connection being restored.

use std::os::fd::BorrowedFd;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, Nla as _, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6};
use netlink_packet_sock_diag::inet::{
    nlas::Nla, ExtensionFlags, InetRequest, InetResponse, SocketId, StateFlags,
};
use netlink_packet_sock_diag::{SockDiagDestroy, SockDiagMessage};

/// `TCP_BOUND_INACTIVE` as an inet_diag state bit (linux 6.8): TCP sockets bound to a port
/// but neither listening nor connected, which no other state lists.
pub(crate) const BOUND_INACTIVE: u32 = 1 << 13;

/// Dumps the `protocol` sockets of the family of `ipv6` in `states` (source port
/// `source_port` in the request's socket id), handing every socket listed to `each`.
pub(crate) fn dump(
    ipv6: bool,
    protocol: u8,
    states: StateFlags,
    source_port: u16,
    each: impl FnMut(&InetResponse),
) -> std::io::Result<()> {
    dump_with(
        ipv6,
        protocol,
        states,
        source_port,
        ExtensionFlags::empty(),
        each,
    )
}

/// [`dump`], asking the attributes of `extensions` too.
fn dump_with(
    ipv6: bool,
    protocol: u8,
    states: StateFlags,
    source_port: u16,
    extensions: ExtensionFlags,
    mut each: impl FnMut(&InetResponse),
) -> std::io::Result<()> {
    let mut socket = netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_SOCK_DIAG)?;
    socket.bind_auto()?;
    socket.connect(&netlink_sys::SocketAddr::new(0, 0))?;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let (family, mut id) = if ipv6 {
        (AF_INET6, SocketId::new_v6())
    } else {
        (AF_INET, SocketId::new_v4())
    };
    id.source_port = source_port;
    let mut packet = NetlinkMessage::new(
        header,
        SockDiagMessage::InetRequest(InetRequest {
            family,
            protocol,
            extensions,
            states,
            socket_id: id,
        })
        .into(),
    );
    packet.finalize();
    let mut buf = vec![0u8; packet.buffer_len()];
    packet.serialize(&mut buf);
    socket.send(&buf, 0)?;
    let mut rx = vec![0u8; 64 * 1024];
    loop {
        let size = socket.recv(&mut &mut rx[..], 0)?;
        if parse_answer(&rx[..size], &mut each)? {
            return Ok(());
        }
    }
}

/// `TCP_TIME_WAIT` as an inet_diag state bit.
const TIME_WAIT: u32 = 1 << 6;

/// Destroys the TIME_WAIT entry of the caller's network namespace whose address pair is
/// `local` -> `remote` (TCP; v4-mapped addresses name an IPv4 pair), if there is one: the
/// dump finds it, SOCK_DESTROY names it with its cookie, so only that entry can go (the
/// kernel looks the pair up and refuses with ESTALE a socket of another cookie, such as a
/// listener on the local port). Returns whether one was destroyed. Needs CAP_NET_ADMIN and
/// CONFIG_INET_DIAG_DESTROY (tcp_abort takes TIME_WAIT entries since Linux 4.5).
pub(crate) fn destroy_time_wait(
    local: std::net::SocketAddr,
    remote: std::net::SocketAddr,
) -> std::io::Result<bool> {
    let ipv6 = local.is_ipv6();
    let mut found = None;
    dump(
        ipv6,
        libc::IPPROTO_TCP as u8,
        StateFlags::from_bits_retain(TIME_WAIT),
        local.port(),
        |r| {
            let id = &r.header.socket_id;
            if id.source_port == local.port()
                && id.destination_port == remote.port()
                && id.source_address == local.ip()
                && id.destination_address == remote.ip()
            {
                found = Some(r.header.clone());
            }
        },
    )?;
    let Some(header) = found else {
        return Ok(false);
    };
    let mut socket = netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_SOCK_DIAG)?;
    socket.bind_auto()?;
    socket.connect(&netlink_sys::SocketAddr::new(0, 0))?;
    let mut nl = NetlinkHeader::default();
    nl.flags = NLM_F_REQUEST | netlink_packet_core::NLM_F_ACK;
    let mut packet = NetlinkMessage::new(
        nl,
        SockDiagDestroy::new(SockDiagMessage::InetRequest(InetRequest {
            family: header.family,
            protocol: libc::IPPROTO_TCP as u8,
            extensions: ExtensionFlags::empty(),
            states: StateFlags::from_bits_retain(TIME_WAIT),
            socket_id: header.socket_id,
        }))
        .into(),
    );
    packet.finalize();
    let mut buf = vec![0u8; packet.buffer_len()];
    packet.serialize(&mut buf);
    socket.send(&buf, 0)?;
    let mut rx = vec![0u8; 4096];
    let size = socket.recv(&mut &mut rx[..], 0)?;
    let answer = NetlinkMessage::<SockDiagMessage>::deserialize(&rx[..size])
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
    match answer.payload {
        NetlinkPayload::Error(e) if e.code.is_none() => Ok(true),
        // Gone meanwhile (its timer ran out): the pair is free as well.
        NetlinkPayload::Error(e) if e.raw_code() == -libc::ENOENT => Ok(true),
        NetlinkPayload::Error(e) => Err(std::io::Error::from_raw_os_error(
            e.raw_code().checked_neg().unwrap_or(i32::MAX),
        )),
        _ => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "SOCK_DESTROY: no acknowledgement",
        )),
    }
}

/// `INET_DIAG_MD5SIG` (linux/inet_diag.h): the TCP MD5 signature keys of a socket, listed
/// for a CAP_NET_ADMIN caller that asks INET_DIAG_INFO.
const INET_DIAG_MD5SIG: u16 = 18;

/// The inodes of the TCP sockets of cryo's network namespace that hold TCP MD5 signature
/// keys (setsockopt TCP_MD5SIG: no getsockopt reads them back). Two dumps (IPv4, IPv6) of
/// every state.
pub fn md5_keyed_sockets() -> std::io::Result<std::collections::HashSet<u64>> {
    let mut keyed = std::collections::HashSet::new();
    for ipv6 in [false, true] {
        dump_with(
            ipv6,
            libc::IPPROTO_TCP as u8,
            StateFlags::all(),
            0,
            ExtensionFlags::INFO,
            |r| {
                let has_keys = r.nlas.iter().any(|nla| nla.kind() == INET_DIAG_MD5SIG);
                if has_keys {
                    keyed.insert(u64::from(r.header.inode));
                }
            },
        )?;
    }
    Ok(keyed)
}

/// Reads one received datagram of an inet_diag dump (no socket: bytes in, typed answer out):
/// hands every socket it lists to `each`, and returns true once the dump is complete
/// (NLMSG_DONE). A refusal by the kernel or a malformed message is an error.
pub(crate) fn parse_answer(
    datagram: &[u8],
    mut each: impl FnMut(&InetResponse),
) -> std::io::Result<bool> {
    let mut offset = 0;
    while offset < datagram.len() {
        let msg = NetlinkMessage::<SockDiagMessage>::deserialize(&datagram[offset..])
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
        let len = msg.header.length as usize;
        match msg.payload {
            NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => each(&r),
            NetlinkPayload::Done(_) => return Ok(true),
            // Not `e.to_io()`: it negates the code, which overflows on i32::MIN.
            NetlinkPayload::Error(e) => {
                let errno = e.raw_code().checked_neg().unwrap_or(i32::MAX);
                return Err(std::io::Error::from_raw_os_error(errno));
            }
            _ => {}
        }
        if len == 0 {
            break;
        }
        offset += len;
    }
    Ok(false)
}

/// The shutdown state (RCV_SHUTDOWN 1 | SEND_SHUTDOWN 2) of socket `fd` if an inet_diag dump
/// of `protocol` sockets of its family in `states` lists it; `None` when it does not.
pub(crate) fn find(
    fd: BorrowedFd<'_>,
    ipv6: bool,
    protocol: u8,
    states: u32,
) -> std::io::Result<Option<u8>> {
    let inode = crate::listen::inode_of(fd)?;
    let mut found = None;
    dump(
        ipv6,
        protocol,
        StateFlags::from_bits_retain(states),
        0,
        |r| {
            if u64::from(r.header.inode) == inode {
                let mut shutdown = 0;
                for nla in &r.nlas {
                    if let Nla::Shutdown(s) = nla {
                        shutdown = *s;
                    }
                }
                found = Some(shutdown);
            }
        },
    )?;
    Ok(found)
}
