//! One inet_diag question: is socket `inode` of this family and protocol in the states asked
//! for, and what is its shutdown state. Answered for the caller's network namespace.

use std::os::fd::BorrowedFd;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6};
use netlink_packet_sock_diag::inet::{
    nlas::Nla, ExtensionFlags, InetRequest, SocketId, StateFlags,
};
use netlink_packet_sock_diag::SockDiagMessage;

/// `TCP_BOUND_INACTIVE` as an inet_diag state bit (linux 6.8): TCP sockets bound to a port
/// but neither listening nor connected, which no other state lists.
pub(crate) const BOUND_INACTIVE: u32 = 1 << 13;

/// The shutdown state (RCV_SHUTDOWN 1 | SEND_SHUTDOWN 2) of socket `fd` if an inet_diag dump
/// of `protocol` sockets of its family in `states` lists it; `None` when it does not.
pub(crate) fn find(
    fd: BorrowedFd<'_>,
    ipv6: bool,
    protocol: u8,
    states: u32,
) -> std::io::Result<Option<u8>> {
    let inode = crate::listen::inode_of(fd)?;
    let mut socket = netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_SOCK_DIAG)?;
    socket.bind_auto()?;
    socket.connect(&netlink_sys::SocketAddr::new(0, 0))?;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let (family, id) = if ipv6 {
        (AF_INET6, SocketId::new_v6())
    } else {
        (AF_INET, SocketId::new_v4())
    };
    let mut packet = NetlinkMessage::new(
        header,
        SockDiagMessage::InetRequest(InetRequest {
            family,
            protocol,
            extensions: ExtensionFlags::empty(),
            states: StateFlags::from_bits_retain(states),
            socket_id: id,
        })
        .into(),
    );
    packet.finalize();
    let mut buf = vec![0u8; packet.buffer_len()];
    packet.serialize(&mut buf);
    socket.send(&buf, 0)?;
    let mut found = None;
    let mut rx = vec![0u8; 64 * 1024];
    loop {
        let size = socket.recv(&mut &mut rx[..], 0)?;
        let mut offset = 0;
        while offset < size {
            let msg = NetlinkMessage::<SockDiagMessage>::deserialize(&rx[offset..size])
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
            let len = msg.header.length as usize;
            match msg.payload {
                NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r))
                    if u64::from(r.header.inode) == inode =>
                {
                    let mut shutdown = 0;
                    for nla in &r.nlas {
                        if let Nla::Shutdown(s) = nla {
                            shutdown = *s;
                        }
                    }
                    found = Some(shutdown);
                }
                NetlinkPayload::Done(_) => return Ok(found),
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
    }
}
