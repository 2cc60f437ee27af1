//! UDP sockets, and the datagram sockets restored the same way (UDP-lite, ICMP "ping"
//! sockets, raw sockets): bound address, connected peer, options (the shared ones, every
//! integer option of cryo-tcp-repair's table that differs from a fresh socket's,
//! SO_BINDTODEVICE, UDP_CORK), shutdown state, multicast memberships (multicast.rs), the
//! datagrams waiting in a UDP or UDP-lite socket's receive queue with their sources and
//! SO_PEEK_OFF (cryo-tcp-repair's udp_queue.rs: peeked at dump, delivered again at restore
//! before the BPF filter is attached). A datagram held back by UDP_CORK or MSG_MORE is
//! refused (the kernel cannot give it back), so is a raw or ping socket with datagrams
//! waiting (a temporary state). A ping or raw socket's peer is not in getpeername (no
//! port): it is read from /proc/PID/net/{icmp,icmp6,raw,raw6}.

use std::os::fd::{BorrowedFd, OwnedFd, RawFd};

use cryo_proto::image::FileDesc;
use cryo_tcp_repair::{self as repair, UdpExtras, UdpSocketState};
use nix::unistd::Pid;

use super::{multicast, repair_err, restore_err, SocketDump, SocketError, SocketState};

/// A UDP socket's state: what cryo-tcp-repair captures of it, and the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpState {
    /// Addresses and the options shared with TCP sockets.
    pub socket: UdpSocketState,
    /// Shutdown state, cork, device, the other options.
    pub extras: UdpExtras,
}

/// Captures datagram socket `dup` (fd `fd` of `pid`, inode `ino`); `groups` are the
/// multicast groups of its network namespace (multicast::candidates), `at` the /proc entry
/// whose net/ shows that namespace (a pid, or "thread-self").
pub(super) fn capture(
    pid: Pid,
    fd: RawFd,
    ino: u64,
    dup: BorrowedFd<'_>,
    groups: &[(u32, std::net::IpAddr)],
    at: &str,
) -> Result<SocketState, SocketError> {
    let mut socket = repair::capture_udp(dup).map_err(repair_err(pid, fd))?;
    // The restore makes it (a ping socket is checked against ping_group_range) as its user
    // namespace's root group (userns::as_root_group): so does the probe here.
    let probe = || repair::capture_udp_extras(dup);
    let mut extras = match crate::task::userns::root_group_of(pid) {
        Some(gid) => {
            crate::sys::ipc::as_creator(0, gid, || Ok(probe())).map_err(|e| SocketError::Sys {
                pid,
                fd,
                step: "take its user namespace's root group",
                source: e,
            })?
        }
        None => probe(),
    }
    .map_err(repair_err(pid, fd))?;
    let (ty, proto) = extras.kind();
    if ty == libc::SOCK_RAW || proto == libc::IPPROTO_ICMP || proto == libc::IPPROTO_ICMPV6 {
        let table = match (ty == libc::SOCK_RAW, socket.local.is_ipv6()) {
            (true, false) => "raw",
            (true, true) => "raw6",
            (false, false) => "icmp",
            (false, true) => "icmp6",
        };
        socket.remote = super::tcp::proc_net_entry(at, ino, &[(table, socket.local.is_ipv6())])
            .filter(|&(_, state)| state == 1)
            .map(|(remote, _)| remote);
    }
    let v4_only: Vec<_> = groups.iter().copied().filter(|g| g.1.is_ipv4()).collect();
    let groups = if socket.local.is_ipv6() {
        groups
    } else {
        &v4_only
    };
    extras.memberships = multicast::capture(pid, fd, dup, groups)?;
    Ok(SocketState::Udp(Box::new(UdpState { socket, extras })))
}

/// A UDP socket in words, for messages and `cryo show`.
pub(super) fn describe(u: &UdpState) -> String {
    let s = &u.socket;
    let e = &u.extras;
    let kind = match e.kind() {
        (libc::SOCK_DGRAM, libc::IPPROTO_UDP) => "udp".to_string(),
        (libc::SOCK_DGRAM, libc::IPPROTO_UDPLITE) => "udp-lite".to_string(),
        (libc::SOCK_DGRAM, libc::IPPROTO_ICMP | libc::IPPROTO_ICMPV6) => "ping".to_string(),
        (libc::SOCK_RAW, proto) => format!("raw (protocol {proto})"),
        (ty, proto) => format!("inet socket of type {ty} protocol {proto}"),
    };
    let mut out = match s.remote {
        Some(r) => format!("{kind} {} -> {r}", s.local),
        None => format!("{kind} {}", s.local),
    };
    for m in &e.memberships {
        out += &format!(" member of {} on interface {}", m.group, m.ifindex);
    }
    if !e.queue.is_empty() {
        let bytes: usize = e.queue.iter().map(|d| d.payload.len()).sum();
        out += &format!(" ({} datagrams of {bytes} bytes queued)", e.queue.len());
    }
    if e.shutdown_read || e.shutdown_write {
        out += &format!(
            " (shut: read {}, write {})",
            e.shutdown_read, e.shutdown_write
        );
    }
    if !e.bind_device.is_empty() {
        out += &format!(" on {}", String::from_utf8_lossy(&e.bind_device));
    }
    out
}

/// Socket `u` made again: options, bound (and connected), corked and shut as it was.
pub(super) fn restore(desc: &FileDesc, u: &UdpState) -> Result<OwnedFd, SocketError> {
    // As its user namespace's root group (a ping socket is checked against ping_group_range,
    // in that namespace's ids).
    crate::task::userns::as_root_group(|| repair::restore_udp_with(&u.socket, &u.extras))
        .map_err(|e| restore_err(desc, "restore socket", e))
}

/// Refuses the queued datagrams of a UDP or UDP-lite socket when another socket of the dump
/// would hear them delivered again over lo at restore and keep a copy the original never
/// had: a raw socket of protocol UDP or UDP-lite, a packet socket on every interface or on
/// lo (interface 1) hooking IP, IPv6 or every protocol. `pids` are the tasks', in order.
pub(super) fn refuse_queues_others_would_hear(
    pids: &[Pid],
    tasks: &[SocketDump],
) -> Result<(), SocketError> {
    use cryo_proto::image::socket::State;
    /// ETH_P_ALL, ETH_P_IP, ETH_P_IPV6.
    const HEARS_IP: [u32; 3] = [0x0003, 0x0800, 0x86dd];
    let records = || tasks.iter().flat_map(|t| t.records());
    let hearing = records().find_map(|(ino, r)| match &r.state {
        Some(State::Udp(u))
            if u.sock_type == libc::SOCK_RAW
                && (u.protocol == libc::IPPROTO_UDP || u.protocol == libc::IPPROTO_UDPLITE) =>
        {
            Some(format!(
                "raw socket socket:[{ino}] (protocol {})",
                u.protocol
            ))
        }
        Some(State::Packet(p))
            if (p.ifindex == 0 || p.ifindex == 1) && HEARS_IP.contains(&p.bound_protocol) =>
        {
            Some(format!("packet socket socket:[{ino}]"))
        }
        _ => None,
    });
    let Some(hearing) = hearing else {
        return Ok(());
    };
    for (&pid, task) in pids.iter().zip(tasks) {
        for (ino, r) in task.records() {
            let Some(State::Udp(u)) = &r.state else {
                continue;
            };
            if u.queue.is_empty() {
                continue;
            }
            let fd = task
                .socket_fds()
                .iter()
                .filter(|(_, key)| key.ino == ino)
                .map(|(&fd, _)| fd)
                .min()
                .unwrap_or(-1);
            return Err(SocketError::FamilyRefused {
                pid,
                fd,
                family: "udp",
                ino,
                what: format!(
                    "{} datagrams wait in its receive queue, and the {hearing} of the dump \
                     would hear them delivered again at restore: a temporary state, retry \
                     once the process has read them",
                    u.queue.len()
                ),
            });
        }
    }
    Ok(())
}
