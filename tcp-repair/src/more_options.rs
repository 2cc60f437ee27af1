//! The options beyond the named fields of [`SocketOptions`]/[`TcpSocketOptions`]: one table of
//! (level, name), captured as the bytes getsockopt returns and stored only where they differ
//! from a fresh socket's (so an image lists what the application changed), set back with
//! setsockopt at restore. A few are always stored (their restored value depends on steps
//! of the restore itself: `SO_BUF_LOCK` after the buffer sizes are forced).
//!
//! ```text
//! SOL_SOCKET   SO_MAX_PACING_RATE SO_RESERVE_MEM                      (every inet socket)
//!              SO_TXREHASH SO_PRIORITY SO_RCVLOWAT SO_BINDTODEVICE
//!              SO_DONTROUTE SO_TIMESTAMP(NS) SO_TIMESTAMPING SO_ZEROCOPY SO_TXTIME
//!              SO_BUSY_POLL SO_PREFER_BUSY_POLL SO_RCVMARK SO_NO_CHECK SO_RXQ_OVFL
//!              SO_SELECT_ERR_QUEUE SO_INCOMING_CPU
//!              SO_BUF_LOCK (always)
//!              SO_PEEK_OFF                      (TCP only: other families carry their own)
//!              SO_RCVTIMEO SO_SNDTIMEO SO_OOBINLINE SO_KEEPALIVE SO_WIFI_STATUS SO_NOFCS
//!              SO_PASSCRED SO_PASSSEC SO_PASSPIDFD SO_PASSRIGHTS   (every socket: datagram,
//!              unix, packet, netlink too)
//! IPPROTO_IP   IP_OPTIONS IP_MINTTL IP_UNICAST_IF IP_LOCAL_PORT_RANGE
//!              IP_RECVFRAGSIZE IP_RECVERR_RFC4884               (every inet socket, both
//!                                                                families)
//!              IP_TOS                                       (IPv6 sockets, TCP and datagram:
//!                                                            an IPv4 one's is traffic_class)
//!              IP_TTL IP_RECVTOS IP_PKTINFO IP_RECVTTL IP_RECVOPTS IP_RETOPTS
//!              IP_PASSSEC IP_RECVORIGDSTADDR IP_MULTICAST_LOOP IP_MULTICAST_ALL
//!                                                (TCP, both families: datagram sockets keep
//!                                                 them in udp.rs's integer table)
//!              IP_MTU_DISCOVER IP_RECVERR IP_FREEBIND IP_TRANSPARENT
//!              IP_BIND_ADDRESS_NO_PORT                                   (IPv4 TCP sockets)
//! IPPROTO_IPV6 IPV6_HOPOPTS IPV6_RTHDR IPV6_DSTOPTS IPV6_RTHDRDSTOPTS IPV6_UNICAST_IF
//!              IPV6_MINHOPCOUNT IPV6_AUTOFLOWLABEL IPV6_FLOWINFO IPV6_FLOWINFO_SEND
//!              IPV6_ADDR_PREFERENCES IPV6_RECVERR_RFC4884 IPV6_RECVFRAGSIZE
//!              IPV6_RECVHOPOPTS IPV6_RECVRTHDR IPV6_RECVDSTOPTS IPV6_RECVPATHMTU
//!              IPV6_2292PKTINFO IPV6_2292HOPOPTS IPV6_2292DSTOPTS IPV6_2292RTHDR
//!              IPV6_2292HOPLIMIT                    (IPv6 sockets, TCP and datagram)
//!              IPV6_UNICAST_HOPS IPV6_MTU_DISCOVER IPV6_RECVERR IPV6_DONTFRAG
//!              IPV6_RECVPKTINFO IPV6_RECVHOPLIMIT IPV6_RECVTCLASS   (IPv6 TCP sockets)
//! IPPROTO_TCP  TCP_NOTSENT_LOWAT TCP_LINGER2 TCP_THIN_LINEAR_TIMEOUTS TCP_SYNCNT
//!              TCP_DEFER_ACCEPT TCP_FASTOPEN TCP_SAVE_SYN TCP_TX_DELAY TCP_INQ
//!              TCP_RTO_MAX_MS TCP_RTO_MIN_US TCP_DELACK_MAX_US
//!              TCP_FASTOPEN_NO_COOKIE TCP_FASTOPEN_CONNECT
//!              TCP_FASTOPEN_KEY                                    (listeners and sockets
//!                                                                   not connected only)
//!              TCP_WINDOW_CLAMP (a connection's too: the kernel's own, or the application's,
//!              always differs from a fresh socket's 0: set after TCP_REPAIR_WINDOW)
//!              TCP_QUICKACK (0: in delayed-ACK mode, entered again by setting 0)
//!              TCP_MAXSEG                                                 (listeners only)
//! ```
//!
//! Setting IP_TOS sets SO_PRIORITY from it: [`apply`] puts the priority back after it, so
//! the order of the two in an image does not matter.
//!
//! Not here, on purpose: IP_MULTICAST_TTL / IPV6_MULTICAST_HOPS of a connection (the TTL of the SYN, or of the last
//! segment received, kept there for IP_PKTOPTIONS: setsockopt refuses them on a stream
//! socket),
//! TCP_MAXSEG of a connection (getsockopt shows the MSS in use, which the kernel computes from
//! the handshake: the MSS clamp travels with the repair options; setting it would make it the
//! user MSS). The IPv6 sticky
//! `IPV6_PKTINFO` (no getsockopt: ENOPROTOOPT) and the `SOCK_TXTIME` flag alone (a
//! `SO_TXTIME` of CLOCK_REALTIME without flags reads as a fresh socket's) cannot be read.
//!
//! The byte options (`IP_OPTIONS`, the IPv6 extension headers, `SO_TXTIME`'s struct
//! sock_txtime) are set again as read: on a connection after `TCP_REPAIR_WINDOW`, still in
//! repair mode, where the kernel adds their length to the header and syncs the MSS as it
//! did when the application set them on the connected socket.

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::OnceLock;

use nix::errno::Errno;
use serde::{Deserialize, Serialize};

use crate::error::{Ctx, Result};
use crate::sys;

/// One option as getsockopt returned it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawOption {
    /// The level (`SOL_SOCKET`, `IPPROTO_IP`...).
    pub level: i32,
    /// The option (`SO_PRIORITY`...).
    pub name: i32,
    /// What getsockopt wrote.
    pub value: Vec<u8>,
}

/// Which sockets an option of the table is read on.
#[derive(Clone, Copy, PartialEq, Eq)]
enum On {
    /// Every TCP socket.
    All,
    /// IPv4 sockets.
    V4,
    /// IPv6 sockets.
    V6,
    /// Listeners (and sockets not connected).
    Listener,
    /// Every inet socket: TCP, and the datagram sockets of udp.rs (UDP, UDP-lite, ping,
    /// raw), whose other options are in its integer table.
    Inet,
    /// IPv6 sockets, TCP and datagram.
    InetV6,
    /// Every socket of every family (TCP, the datagram sockets of udp.rs, unix, packet,
    /// netlink): the generic socket-level options udp.rs's integer table does not hold.
    Any,
    /// TCP sockets only, never the other families [`capture`] reads: a socket-level option
    /// those carry their own way (SO_PEEK_OFF: with their queues).
    Tcp,
}

/// (level, name, name in messages, sockets, always stored).
type Entry = (i32, i32, &'static str, On, bool);

/// TCP_TX_DELAY (linux 5.6, not in libc).
const TCP_TX_DELAY: i32 = 37;

/// TCP_INQ (linux 4.18): the bytes queued reported in a cmsg of each recvmsg.
const TCP_INQ: i32 = 36;
/// TCP_FASTOPEN_NO_COOKIE (linux 4.15): a fast open without a cookie.
const TCP_FASTOPEN_NO_COOKIE: i32 = 34;
/// TCP_RTO_MAX_MS (linux 6.15), TCP_RTO_MIN_US and TCP_DELACK_MAX_US (linux 6.16): the
/// retransmission timeout's bounds and the longest delayed ACK of the socket.
const TCP_RTO_MAX_MS: i32 = 44;
const TCP_RTO_MIN_US: i32 = 45;
const TCP_DELACK_MAX_US: i32 = 46;
/// SO_MAX_PACING_RATE (linux 3.13; read as 8 bytes), SO_RESERVE_MEM (linux 5.16), SO_TXREHASH
/// (linux 5.18).
const SO_MAX_PACING_RATE: i32 = 47;
const SO_RESERVE_MEM: i32 = 73;
const SO_TXREHASH: i32 = 74;
/// IPV6_MINHOPCOUNT (linux 4.16), IPV6_AUTOFLOWLABEL (linux 4.4).
const IPV6_MINHOPCOUNT: i32 = 73;
const IPV6_AUTOFLOWLABEL: i32 = 70;

/// SO_BUF_LOCK (linux 5.14): the SOCK_SNDBUF_LOCK/SOCK_RCVBUF_LOCK bits.
const SO_BUF_LOCK: i32 = 72;

/// IP_UNICAST_IF (linux 3.4: the ifindex, in network byte order), IP_LOCAL_PORT_RANGE
/// (linux 6.3: two u16 bounds), IP_RECVFRAGSIZE (linux 4.14), IP_RECVERR_RFC4884 (linux
/// 5.9): not in libc for every target.
const IP_UNICAST_IF: i32 = 50;
const IP_LOCAL_PORT_RANGE: i32 = 51;
const IP_RECVFRAGSIZE: i32 = 25;
const IP_RECVERR_RFC4884: i32 = 26;
/// The IPv6 flags and values beside them: IPV6_FLOWINFO, IPV6_FLOWINFO_SEND,
/// IPV6_RECVERR_RFC4884 (linux 5.9), IPV6_RECVFRAGSIZE (linux 4.14), IPV6_ADDR_PREFERENCES
/// (linux 2.6.26), the RFC 3542 receive flags and their RFC 2292 forms.
const IPV6_FLOWINFO: i32 = 11;
const IPV6_FLOWINFO_SEND: i32 = 33;
const IPV6_RECVERR_RFC4884: i32 = 31;
const IPV6_RECVFRAGSIZE: i32 = 77;
const IPV6_ADDR_PREFERENCES: i32 = 72;
const IPV6_RECVHOPOPTS: i32 = 53;
const IPV6_RECVRTHDR: i32 = 56;
const IPV6_RECVDSTOPTS: i32 = 58;
const IPV6_RECVPATHMTU: i32 = 60;
const IPV6_2292PKTINFO: i32 = 2;
const IPV6_2292HOPOPTS: i32 = 3;
const IPV6_2292DSTOPTS: i32 = 4;
const IPV6_2292RTHDR: i32 = 5;
const IPV6_2292HOPLIMIT: i32 = 8;
const IPV6_RECVPKTINFO: i32 = 49;
const IPV6_RECVHOPLIMIT: i32 = 51;
const IPV6_RECVTCLASS: i32 = 66;
/// IPV6_UNICAST_IF (linux 3.4): the ifindex, in network byte order.
const IPV6_UNICAST_IF: i32 = 76;
/// TCP_FASTOPEN_KEY (linux 4.20 per socket): the listener's own cookie key(s), 16 or 32
/// bytes; a socket without one reads its network namespace's.
const TCP_FASTOPEN_KEY: i32 = 33;

/// SO_TXTIME (linux 4.19): struct sock_txtime {clockid, flags}.
const SO_TXTIME: i32 = 61;
/// `SO_PREFER_BUSY_POLL` (linux 5.11) and `SO_RCVMARK` (linux 5.19): not in libc for every target.
const SO_PREFER_BUSY_POLL: i32 = 69;
const SO_RCVMARK: i32 = 75;
/// `SO_PASSSEC`, `SO_PASSPIDFD` (linux 6.5) and `SO_PASSRIGHTS` (linux 6.16: a unix socket
/// that refuses SCM_RIGHTS).
const SO_PASSSEC: i32 = 34;
const SO_PASSPIDFD: i32 = 76;
const SO_PASSRIGHTS: i32 = 83;

const TABLE: &[Entry] = &[
    // IP_TOS of an IPv6 socket (its IPv4-mapped traffic; an IPv4 socket's is
    // SocketOptions::traffic_class). Setting it sets SO_PRIORITY too: [`apply`] puts the
    // priority back ([`crate::options::set_tos_keeping_priority`]).
    (libc::IPPROTO_IP, libc::IP_TOS, "IP_TOS", On::InetV6, false),
    (
        libc::SOL_SOCKET,
        libc::SO_PRIORITY,
        "SO_PRIORITY",
        On::All,
        false,
    ),
    (
        libc::SOL_SOCKET,
        libc::SO_RCVLOWAT,
        "SO_RCVLOWAT",
        On::All,
        false,
    ),
    (
        libc::SOL_SOCKET,
        libc::SO_RCVTIMEO,
        "SO_RCVTIMEO",
        On::Any,
        false,
    ),
    (
        libc::SOL_SOCKET,
        libc::SO_SNDTIMEO,
        "SO_SNDTIMEO",
        On::Any,
        false,
    ),
    (
        libc::SOL_SOCKET,
        libc::SO_BINDTODEVICE,
        "SO_BINDTODEVICE",
        On::All,
        false,
    ),
    (
        libc::SOL_SOCKET,
        libc::SO_OOBINLINE,
        "SO_OOBINLINE",
        On::Any,
        false,
    ),
    (
        libc::SOL_SOCKET,
        libc::SO_DONTROUTE,
        "SO_DONTROUTE",
        On::All,
        false,
    ),
    (
        libc::SOL_SOCKET,
        libc::SO_TIMESTAMP,
        "SO_TIMESTAMP",
        On::All,
        false,
    ),
    (
        libc::SOL_SOCKET,
        libc::SO_TIMESTAMPNS,
        "SO_TIMESTAMPNS",
        On::All,
        false,
    ),
    (
        libc::SOL_SOCKET,
        libc::SO_ZEROCOPY,
        "SO_ZEROCOPY",
        On::All,
        false,
    ),
    (
        libc::SOL_SOCKET,
        libc::SO_BUSY_POLL,
        "SO_BUSY_POLL",
        On::All,
        false,
    ),
    (
        libc::SOL_SOCKET,
        SO_PREFER_BUSY_POLL,
        "SO_PREFER_BUSY_POLL",
        On::All,
        false,
    ),
    (libc::SOL_SOCKET, SO_RCVMARK, "SO_RCVMARK", On::All, false),
    // Flags and values udp.rs's integer table keeps for datagram sockets.
    (
        libc::SOL_SOCKET,
        libc::SO_NO_CHECK,
        "SO_NO_CHECK",
        On::All,
        false,
    ),
    (
        libc::SOL_SOCKET,
        libc::SO_RXQ_OVFL,
        "SO_RXQ_OVFL",
        On::All,
        false,
    ),
    (
        libc::SOL_SOCKET,
        libc::SO_SELECT_ERR_QUEUE,
        "SO_SELECT_ERR_QUEUE",
        On::All,
        false,
    ),
    (
        libc::SOL_SOCKET,
        libc::SO_INCOMING_CPU,
        "SO_INCOMING_CPU",
        On::All,
        false,
    ),
    (
        libc::SOL_SOCKET,
        libc::SO_KEEPALIVE,
        "SO_KEEPALIVE",
        On::Any,
        false,
    ),
    (
        libc::SOL_SOCKET,
        libc::SO_WIFI_STATUS,
        "SO_WIFI_STATUS",
        On::Any,
        false,
    ),
    (libc::SOL_SOCKET, libc::SO_NOFCS, "SO_NOFCS", On::Any, false),
    // Unix, netlink (and bluetooth) sockets only since linux 6.16: EOPNOTSUPP elsewhere.
    (
        libc::SOL_SOCKET,
        libc::SO_PASSCRED,
        "SO_PASSCRED",
        On::Any,
        false,
    ),
    (libc::SOL_SOCKET, SO_PASSSEC, "SO_PASSSEC", On::Any, false),
    (
        libc::SOL_SOCKET,
        SO_PASSPIDFD,
        "SO_PASSPIDFD",
        On::Any,
        false,
    ),
    // On by default on a unix socket (a fresh TCP socket has none: always stored there).
    (
        libc::SOL_SOCKET,
        SO_PASSRIGHTS,
        "SO_PASSRIGHTS",
        On::Any,
        false,
    ),
    // struct so_timestamping {flags, bind_phc}; what cannot be set again is refused
    // (check_timestamping). Datagram sockets keep it in udp.rs's integer table.
    (
        libc::SOL_SOCKET,
        libc::SO_TIMESTAMPING,
        "SO_TIMESTAMPING",
        On::All,
        false,
    ),
    (libc::SOL_SOCKET, SO_TXTIME, "SO_TXTIME", On::Inet, false),
    (libc::SOL_SOCKET, SO_BUF_LOCK, "SO_BUF_LOCK", On::All, true),
    // An IPv6 socket keeps IP options for its IPv4-mapped traffic: read on both families.
    (
        libc::IPPROTO_IP,
        libc::IP_OPTIONS,
        "IP_OPTIONS",
        On::Inet,
        false,
    ),
    (libc::IPPROTO_IP, libc::IP_TTL, "IP_TTL", On::All, false),
    (
        libc::IPPROTO_IP,
        libc::IP_MTU_DISCOVER,
        "IP_MTU_DISCOVER",
        On::V4,
        false,
    ),
    (
        libc::IPPROTO_IP,
        libc::IP_RECVERR,
        "IP_RECVERR",
        On::V4,
        false,
    ),
    (
        libc::IPPROTO_IP,
        libc::IP_FREEBIND,
        "IP_FREEBIND",
        On::V4,
        false,
    ),
    (
        libc::IPPROTO_IP,
        libc::IP_TRANSPARENT,
        "IP_TRANSPARENT",
        On::V4,
        false,
    ),
    (
        libc::IPPROTO_IP,
        libc::IP_BIND_ADDRESS_NO_PORT,
        "IP_BIND_ADDRESS_NO_PORT",
        On::V4,
        false,
    ),
    (
        libc::IPPROTO_IP,
        libc::IP_RECVTOS,
        "IP_RECVTOS",
        On::All,
        false,
    ),
    (
        libc::IPPROTO_IP,
        libc::IP_PKTINFO,
        "IP_PKTINFO",
        On::All,
        false,
    ),
    (
        libc::IPPROTO_IPV6,
        libc::IPV6_UNICAST_HOPS,
        "IPV6_UNICAST_HOPS",
        On::V6,
        false,
    ),
    (
        libc::IPPROTO_IPV6,
        libc::IPV6_MTU_DISCOVER,
        "IPV6_MTU_DISCOVER",
        On::V6,
        false,
    ),
    (
        libc::IPPROTO_IPV6,
        libc::IPV6_RECVERR,
        "IPV6_RECVERR",
        On::V6,
        false,
    ),
    (
        libc::IPPROTO_IPV6,
        libc::IPV6_HOPOPTS,
        "IPV6_HOPOPTS",
        On::InetV6,
        false,
    ),
    (
        libc::IPPROTO_IPV6,
        libc::IPV6_RTHDR,
        "IPV6_RTHDR",
        On::InetV6,
        false,
    ),
    (
        libc::IPPROTO_IPV6,
        libc::IPV6_DSTOPTS,
        "IPV6_DSTOPTS",
        On::InetV6,
        false,
    ),
    (
        libc::IPPROTO_IPV6,
        libc::IPV6_RTHDRDSTOPTS,
        "IPV6_RTHDRDSTOPTS",
        On::InetV6,
        false,
    ),
    (
        libc::IPPROTO_TCP,
        libc::TCP_NOTSENT_LOWAT,
        "TCP_NOTSENT_LOWAT",
        On::All,
        false,
    ),
    (
        libc::IPPROTO_TCP,
        libc::TCP_LINGER2,
        "TCP_LINGER2",
        On::All,
        false,
    ),
    (
        libc::IPPROTO_TCP,
        libc::TCP_THIN_LINEAR_TIMEOUTS,
        "TCP_THIN_LINEAR_TIMEOUTS",
        On::All,
        false,
    ),
    (
        libc::IPPROTO_TCP,
        libc::TCP_SYNCNT,
        "TCP_SYNCNT",
        On::All,
        false,
    ),
    (
        libc::IPPROTO_TCP,
        libc::TCP_DEFER_ACCEPT,
        "TCP_DEFER_ACCEPT",
        On::All,
        false,
    ),
    (
        libc::IPPROTO_TCP,
        libc::TCP_FASTOPEN,
        "TCP_FASTOPEN",
        On::Listener,
        false,
    ),
    (
        libc::IPPROTO_TCP,
        libc::TCP_SAVE_SYN,
        "TCP_SAVE_SYN",
        On::All,
        false,
    ),
    (
        libc::IPPROTO_TCP,
        TCP_TX_DELAY,
        "TCP_TX_DELAY",
        On::All,
        false,
    ),
    (libc::IPPROTO_TCP, TCP_INQ, "TCP_INQ", On::All, false),
    (
        libc::IPPROTO_TCP,
        TCP_RTO_MAX_MS,
        "TCP_RTO_MAX_MS",
        On::All,
        false,
    ),
    (
        libc::IPPROTO_TCP,
        TCP_RTO_MIN_US,
        "TCP_RTO_MIN_US",
        On::All,
        false,
    ),
    (
        libc::IPPROTO_TCP,
        TCP_DELACK_MAX_US,
        "TCP_DELACK_MAX_US",
        On::All,
        false,
    ),
    (
        libc::SOL_SOCKET,
        SO_MAX_PACING_RATE,
        "SO_MAX_PACING_RATE",
        On::Inet,
        false,
    ),
    (
        libc::SOL_SOCKET,
        SO_RESERVE_MEM,
        "SO_RESERVE_MEM",
        On::Inet,
        false,
    ),
    // TCP's only (setsockopt answers EOPNOTSUPP on other sockets).
    (libc::SOL_SOCKET, SO_TXREHASH, "SO_TXREHASH", On::All, false),
    (
        libc::IPPROTO_IP,
        libc::IP_MINTTL,
        "IP_MINTTL",
        On::Inet,
        false,
    ),
    (
        libc::IPPROTO_IPV6,
        IPV6_MINHOPCOUNT,
        "IPV6_MINHOPCOUNT",
        On::InetV6,
        false,
    ),
    (
        libc::IPPROTO_IPV6,
        IPV6_AUTOFLOWLABEL,
        "IPV6_AUTOFLOWLABEL",
        On::InetV6,
        false,
    ),
    (
        libc::IPPROTO_IPV6,
        libc::IPV6_DONTFRAG,
        "IPV6_DONTFRAG",
        On::V6,
        false,
    ),
    (
        libc::IPPROTO_TCP,
        TCP_FASTOPEN_NO_COOKIE,
        "TCP_FASTOPEN_NO_COOKIE",
        On::Listener,
        false,
    ),
    // Settable only in state CLOSE: a connection made with it keeps it, and cannot be given
    // it again (before a connect in repair mode it would defer the connect).
    (
        libc::IPPROTO_TCP,
        libc::TCP_FASTOPEN_CONNECT,
        "TCP_FASTOPEN_CONNECT",
        On::Listener,
        false,
    ),
    (
        libc::IPPROTO_TCP,
        libc::TCP_WINDOW_CLAMP,
        "TCP_WINDOW_CLAMP",
        On::All,
        false,
    ),
    // 0: the connection is in the delayed-ACK ("pingpong") mode the kernel enters on
    // interactive traffic or the application asks for; setting 0 enters it again (a fresh
    // socket reads 1: never stored then).
    (
        libc::IPPROTO_TCP,
        libc::TCP_QUICKACK,
        "TCP_QUICKACK",
        On::All,
        false,
    ),
    (
        libc::IPPROTO_TCP,
        libc::TCP_MAXSEG,
        "TCP_MAXSEG",
        On::Listener,
        false,
    ),
    // IPv4 options of every inet socket, both families (an IPv6 socket's act on its
    // IPv4-mapped traffic); datagram sockets' too (not in udp.rs's integer table).
    (
        libc::IPPROTO_IP,
        IP_UNICAST_IF,
        "IP_UNICAST_IF",
        On::Inet,
        false,
    ),
    (
        libc::IPPROTO_IP,
        IP_LOCAL_PORT_RANGE,
        "IP_LOCAL_PORT_RANGE",
        On::Inet,
        false,
    ),
    (
        libc::IPPROTO_IP,
        IP_RECVFRAGSIZE,
        "IP_RECVFRAGSIZE",
        On::Inet,
        false,
    ),
    (
        libc::IPPROTO_IP,
        IP_RECVERR_RFC4884,
        "IP_RECVERR_RFC4884",
        On::Inet,
        false,
    ),
    // IPv4 flags udp.rs's integer table keeps for datagram sockets: TCP's here, both families.
    (
        libc::IPPROTO_IP,
        libc::IP_RECVTTL,
        "IP_RECVTTL",
        On::All,
        false,
    ),
    (
        libc::IPPROTO_IP,
        libc::IP_RECVOPTS,
        "IP_RECVOPTS",
        On::All,
        false,
    ),
    (
        libc::IPPROTO_IP,
        libc::IP_RETOPTS,
        "IP_RETOPTS",
        On::All,
        false,
    ),
    (
        libc::IPPROTO_IP,
        libc::IP_PASSSEC,
        "IP_PASSSEC",
        On::All,
        false,
    ),
    (
        libc::IPPROTO_IP,
        libc::IP_RECVORIGDSTADDR,
        "IP_RECVORIGDSTADDR",
        On::All,
        false,
    ),
    (
        libc::IPPROTO_IP,
        libc::IP_MULTICAST_LOOP,
        "IP_MULTICAST_LOOP",
        On::All,
        false,
    ),
    (
        libc::IPPROTO_IP,
        libc::IP_MULTICAST_ALL,
        "IP_MULTICAST_ALL",
        On::All,
        false,
    ),
    // IPv6 flags and values of every IPv6 socket, TCP and datagram.
    (
        libc::IPPROTO_IPV6,
        IPV6_UNICAST_IF,
        "IPV6_UNICAST_IF",
        On::InetV6,
        false,
    ),
    (
        libc::IPPROTO_IPV6,
        IPV6_FLOWINFO,
        "IPV6_FLOWINFO",
        On::InetV6,
        false,
    ),
    (
        libc::IPPROTO_IPV6,
        IPV6_FLOWINFO_SEND,
        "IPV6_FLOWINFO_SEND",
        On::InetV6,
        false,
    ),
    (
        libc::IPPROTO_IPV6,
        IPV6_RECVERR_RFC4884,
        "IPV6_RECVERR_RFC4884",
        On::InetV6,
        false,
    ),
    (
        libc::IPPROTO_IPV6,
        IPV6_RECVFRAGSIZE,
        "IPV6_RECVFRAGSIZE",
        On::InetV6,
        false,
    ),
    (
        libc::IPPROTO_IPV6,
        IPV6_ADDR_PREFERENCES,
        "IPV6_ADDR_PREFERENCES",
        On::InetV6,
        false,
    ),
    (
        libc::IPPROTO_IPV6,
        IPV6_RECVHOPOPTS,
        "IPV6_RECVHOPOPTS",
        On::InetV6,
        false,
    ),
    (
        libc::IPPROTO_IPV6,
        IPV6_RECVRTHDR,
        "IPV6_RECVRTHDR",
        On::InetV6,
        false,
    ),
    (
        libc::IPPROTO_IPV6,
        IPV6_RECVDSTOPTS,
        "IPV6_RECVDSTOPTS",
        On::InetV6,
        false,
    ),
    (
        libc::IPPROTO_IPV6,
        IPV6_RECVPATHMTU,
        "IPV6_RECVPATHMTU",
        On::InetV6,
        false,
    ),
    (
        libc::IPPROTO_IPV6,
        IPV6_2292PKTINFO,
        "IPV6_2292PKTINFO",
        On::InetV6,
        false,
    ),
    (
        libc::IPPROTO_IPV6,
        IPV6_2292HOPOPTS,
        "IPV6_2292HOPOPTS",
        On::InetV6,
        false,
    ),
    (
        libc::IPPROTO_IPV6,
        IPV6_2292DSTOPTS,
        "IPV6_2292DSTOPTS",
        On::InetV6,
        false,
    ),
    (
        libc::IPPROTO_IPV6,
        IPV6_2292RTHDR,
        "IPV6_2292RTHDR",
        On::InetV6,
        false,
    ),
    (
        libc::IPPROTO_IPV6,
        IPV6_2292HOPLIMIT,
        "IPV6_2292HOPLIMIT",
        On::InetV6,
        false,
    ),
    // IPv6 flags udp.rs's integer table keeps for datagram sockets: TCP's here.
    (
        libc::IPPROTO_IPV6,
        IPV6_RECVPKTINFO,
        "IPV6_RECVPKTINFO",
        On::V6,
        false,
    ),
    (
        libc::IPPROTO_IPV6,
        IPV6_RECVHOPLIMIT,
        "IPV6_RECVHOPLIMIT",
        On::V6,
        false,
    ),
    (
        libc::IPPROTO_IPV6,
        IPV6_RECVTCLASS,
        "IPV6_RECVTCLASS",
        On::V6,
        false,
    ),
    // TCP's (udp_queue.rs carries a datagram socket's with its queue). Set after the
    // receive queue is refilled; the capture reads the queue with it off and puts it back
    // (repair.rs).
    (
        libc::SOL_SOCKET,
        libc::SO_PEEK_OFF,
        "SO_PEEK_OFF",
        On::Tcp,
        false,
    ),
    // A listener's own fast open key (the network namespace's when it has none: read the
    // same on a fresh socket, so not stored).
    (
        libc::IPPROTO_TCP,
        TCP_FASTOPEN_KEY,
        "TCP_FASTOPEN_KEY",
        On::Listener,
        false,
    ),
];

/// The longest value of the table: an IPv6 extension header, (255 + 1) * 8 bytes (IP
/// options take 40, a struct timeval 16).
const MAX_VALUE: usize = 2048;

/// The table's entries read on a socket of this kind.
fn entries(ipv6: bool, listener: bool) -> impl Iterator<Item = &'static Entry> {
    TABLE.iter().filter(move |e| match e.3 {
        On::All | On::Inet | On::Any | On::Tcp => true,
        On::V4 => !ipv6,
        On::V6 | On::InetV6 => ipv6,
        On::Listener => listener,
    })
}

/// getsockopt of one entry; `None` when the kernel does not know the option.
fn read(fd: BorrowedFd<'_>, e: &Entry) -> std::result::Result<Option<Vec<u8>>, Errno> {
    let mut buf = [0u8; MAX_VALUE];
    match sys::get_bytes(fd, e.0, e.1, &mut buf) {
        Ok(n) => Ok(Some(buf[..n].to_vec())),
        Err(Errno::ENOPROTOOPT | Errno::EOPNOTSUPP) => Ok(None),
        Err(e) => Err(e),
    }
}

/// What a fresh TCP socket of the family reports for every entry, read once per process.
fn defaults(ipv6: bool) -> &'static HashMap<(i32, i32), Vec<u8>> {
    static V4: OnceLock<HashMap<(i32, i32), Vec<u8>>> = OnceLock::new();
    static V6: OnceLock<HashMap<(i32, i32), Vec<u8>>> = OnceLock::new();
    let cell = if ipv6 { &V6 } else { &V4 };
    cell.get_or_init(|| {
        let domain = if ipv6 {
            socket2::Domain::IPV6
        } else {
            socket2::Domain::IPV4
        };
        let Ok(s) = socket2::Socket::new(domain, socket2::Type::STREAM, None) else {
            return HashMap::new();
        };
        let fd = OwnedFd::from(s);
        entries(ipv6, true)
            .filter_map(|e| read(fd.as_fd(), e).ok().flatten().map(|v| ((e.0, e.1), v)))
            .collect()
    })
}

/// The table's options of `fd` that differ from a fresh socket's (and those always kept).
pub(crate) fn capture(
    fd: BorrowedFd<'_>,
    ipv6: bool,
    listener: bool,
    ctx: Ctx,
) -> Result<Vec<RawOption>> {
    let table = entries(ipv6, listener).filter(|e| e.3 != On::Tcp);
    collect(fd, ipv6, table, ctx)
}

/// [`capture`] of a TCP socket: what a fresh TCP socket of the family refuses (ENOPROTOOPT,
/// EOPNOTSUPP) every TCP socket refuses, so it is not asked again of each one (SO_PASSCRED
/// and its kind since linux 6.16: four calls of a connection's dozens).
pub(crate) fn capture_tcp(
    fd: BorrowedFd<'_>,
    ipv6: bool,
    listener: bool,
    ctx: Ctx,
) -> Result<Vec<RawOption>> {
    let known = defaults(ipv6);
    if !listener && known.contains_key(&(libc::IPPROTO_TCP, libc::TCP_FASTOPEN_CONNECT)) {
        let on = sys::get_int(fd, libc::IPPROTO_TCP, libc::TCP_FASTOPEN_CONNECT)
            .map_err(ctx.sys("getsockopt TCP_FASTOPEN_CONNECT"))?;
        if on != 0 {
            return Err(ctx.invalid(
                "TCP_FASTOPEN_CONNECT",
                "set on a connection, which keeps it: the kernel takes it only before a \
                 connect, which it would defer (a connect in repair mode included): not \
                 restored",
            ));
        }
    }
    let table = entries(ipv6, listener).filter(|e| known.contains_key(&(e.0, e.1)));
    collect(fd, ipv6, table, ctx)
}

/// The table's options of datagram socket `fd` (those marked [`On::Inet`], [`On::InetV6`]
/// and [`On::Any`]) that differ from a fresh socket's: the byte options the integer table of
/// udp.rs cannot hold, and the integer ones it does not (IP_UNICAST_IF, an IPv6 socket's
/// IP_TOS, the IPv6 receive flags...). A fresh TCP socket's defaults serve: these options
/// start the same (empty, zero, or the namespace's default) on every kind of inet socket.
pub(crate) fn capture_datagram(fd: BorrowedFd<'_>, ipv6: bool, ctx: Ctx) -> Result<Vec<RawOption>> {
    let datagram = TABLE.iter().filter(move |e| match e.3 {
        On::Inet | On::Any => true,
        On::InetV6 => ipv6,
        _ => false,
    });
    collect(fd, ipv6, datagram, ctx)
}

/// Refuses the SO_TIMESTAMPING state of `fd` that setsockopt cannot make again: the counter
/// of SOF_TIMESTAMPING_OPT_ID (it starts again from the sequence number, or from 0, when the
/// flag is set; the kernel does not tell where it is) and a bound PHC (a virtual clock of
/// the bound device, not carried).
pub(crate) fn check_timestamping(fd: BorrowedFd<'_>, ctx: Ctx) -> Result<()> {
    let mut ts = [0u8; 8];
    let n = match sys::get_bytes(fd, libc::SOL_SOCKET, libc::SO_TIMESTAMPING, &mut ts) {
        Ok(n) => n,
        Err(Errno::ENOPROTOOPT | Errno::EOPNOTSUPP) => return Ok(()),
        Err(e) => return Err(ctx.sys("getsockopt SO_TIMESTAMPING")(e)),
    };
    let flags = u32::from_ne_bytes([ts[0], ts[1], ts[2], ts[3]]);
    if flags & libc::SOF_TIMESTAMPING_OPT_ID != 0 {
        return Err(ctx.invalid(
            "SO_TIMESTAMPING",
            "SOF_TIMESTAMPING_OPT_ID: the kernel does not tell the counter of the timestamps' \
             ids, so it would start again",
        ));
    }
    if n == 8 && flags & libc::SOF_TIMESTAMPING_BIND_PHC != 0 {
        let phc = i32::from_ne_bytes([ts[4], ts[5], ts[6], ts[7]]);
        return Err(ctx.invalid(
            "SO_TIMESTAMPING",
            format!("timestamps bound to PHC {phc} (SOF_TIMESTAMPING_BIND_PHC): not restored"),
        ));
    }
    Ok(())
}

/// Reads `table` on `fd`, keeping what differs from a fresh socket's (and what is always kept).
fn collect<'a>(
    fd: BorrowedFd<'_>,
    ipv6: bool,
    table: impl Iterator<Item = &'a Entry>,
    ctx: Ctx,
) -> Result<Vec<RawOption>> {
    let defaults = defaults(ipv6);
    let mut out = Vec::new();
    for e in table {
        let Some(value) = read(fd, e).map_err(ctx.sys(e.2))? else {
            continue;
        };
        if e.4 || defaults.get(&(e.0, e.1)) != Some(&value) {
            if e.1 == libc::SO_TIMESTAMPING && e.0 == libc::SOL_SOCKET {
                check_timestamping(fd, ctx)?;
            }
            out.push(RawOption {
                level: e.0,
                name: e.1,
                value,
            });
        }
    }
    Ok(out)
}

/// Sets `options` on `fd`, in the table's order.
pub(crate) fn apply(fd: BorrowedFd<'_>, options: &[RawOption], ctx: Ctx) -> Result<()> {
    for o in options {
        let Some(step) = TABLE
            .iter()
            .find(|e| e.0 == o.level && e.1 == o.name)
            .map(|e| e.2)
        else {
            return Err(ctx.invalid("setsockopt", "an option outside the table (not restored)"));
        };
        if (o.level, o.name) == (libc::IPPROTO_IP, libc::IP_TOS) {
            crate::options::set_tos_keeping_priority(fd, &o.value, ctx)?;
        } else {
            sys::set_bytes(fd, o.level, o.name, &o.value).map_err(ctx.sys(step))?;
        }
    }
    Ok(())
}

/// Whether (level, name) is an option of the table (an image naming another is refused).
pub fn is_known(level: i32, name: i32) -> bool {
    TABLE.iter().any(|e| e.0 == level && e.1 == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An option read twice for one socket would be set twice at restore, in two places of
    /// its order: once in the table, and for a datagram socket not also in udp.rs's integer
    /// table.
    #[test]
    fn no_option_is_carried_twice() {
        let mut seen = std::collections::HashSet::new();
        for e in TABLE {
            assert!(seen.insert((e.0, e.1)), "{} twice in the table", e.2);
        }
        for &(level, name, what, _) in crate::udp::INT_OPTIONS {
            let both = TABLE.iter().any(|e| {
                (e.0, e.1) == (level, name) && matches!(e.3, On::Inet | On::InetV6 | On::Any)
            });
            assert!(!both, "{what} of datagram sockets in both tables");
        }
    }

    /// Setting IP_TOS sets the priority from it (TOS 0x10: 6); an IP_TOS of the table is set
    /// keeping the priority the socket had, before or after SO_PRIORITY in an image.
    #[test]
    fn ip_tos_of_the_table_keeps_the_priority() {
        let ctx = Ctx::new(crate::error::Operation::Restore, Default::default());
        let a = std::net::UdpSocket::bind("[::1]:0").unwrap();
        let b = std::net::UdpSocket::bind("[::1]:0").unwrap();
        let tos = RawOption {
            level: libc::IPPROTO_IP,
            name: libc::IP_TOS,
            value: 0x10i32.to_ne_bytes().to_vec(),
        };
        let priority = RawOption {
            level: libc::SOL_SOCKET,
            name: libc::SO_PRIORITY,
            value: 2i32.to_ne_bytes().to_vec(),
        };
        let read = |fd: BorrowedFd<'_>| {
            (
                sys::get_int(fd, libc::IPPROTO_IP, libc::IP_TOS).unwrap(),
                sys::get_int(fd, libc::SOL_SOCKET, libc::SO_PRIORITY).unwrap(),
            )
        };
        apply(a.as_fd(), std::slice::from_ref(&tos), ctx).unwrap();
        assert_eq!(read(a.as_fd()), (0x10, 0), "the fresh socket's priority");
        apply(b.as_fd(), &[priority, tos], ctx).unwrap();
        assert_eq!(read(b.as_fd()), (0x10, 2), "the priority set before");
    }
}
