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
//!              SO_RCVTIMEO SO_SNDTIMEO SO_OOBINLINE SO_KEEPALIVE SO_WIFI_STATUS SO_NOFCS
//!              SO_PASSCRED SO_PASSSEC SO_PASSPIDFD SO_PASSRIGHTS   (every socket: datagram,
//!              unix, packet, netlink too)
//! IPPROTO_IP   IP_OPTIONS                                          (every inet socket)
//!              IP_TTL IP_MTU_DISCOVER IP_RECVERR IP_FREEBIND IP_TRANSPARENT
//!              IP_BIND_ADDRESS_NO_PORT IP_RECVTOS IP_PKTINFO IP_MINTTL (IPv4 sockets)
//! IPPROTO_IPV6 IPV6_UNICAST_HOPS IPV6_MTU_DISCOVER IPV6_RECVERR
//!              IPV6_HOPOPTS IPV6_RTHDR IPV6_DSTOPTS IPV6_RTHDRDSTOPTS
//!              IPV6_MINHOPCOUNT IPV6_AUTOFLOWLABEL IPV6_DONTFRAG      (IPv6 sockets)
//! IPPROTO_TCP  TCP_NOTSENT_LOWAT TCP_LINGER2 TCP_THIN_LINEAR_TIMEOUTS TCP_SYNCNT
//!              TCP_DEFER_ACCEPT TCP_FASTOPEN TCP_SAVE_SYN TCP_TX_DELAY TCP_INQ
//!              TCP_RTO_MAX_MS TCP_RTO_MIN_US TCP_DELACK_MAX_US
//!              TCP_FASTOPEN_NO_COOKIE TCP_FASTOPEN_CONNECT         (listeners and sockets
//!                                                                   not connected only)
//!              TCP_WINDOW_CLAMP (a connection's too: the kernel's own, or the application's,
//!              always differs from a fresh socket's 0: set after TCP_REPAIR_WINDOW)
//!              TCP_MAXSEG                                                 (listeners only)
//! ```
//!
//! Not here, on purpose: TCP_QUICKACK (a transient mode the kernel leaves by itself),
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
    (libc::IPPROTO_IP, libc::IP_TTL, "IP_TTL", On::V4, false),
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
        On::V4,
        false,
    ),
    (
        libc::IPPROTO_IP,
        libc::IP_PKTINFO,
        "IP_PKTINFO",
        On::V4,
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
        On::V4,
        false,
    ),
    (
        libc::IPPROTO_IPV6,
        IPV6_MINHOPCOUNT,
        "IPV6_MINHOPCOUNT",
        On::V6,
        false,
    ),
    (
        libc::IPPROTO_IPV6,
        IPV6_AUTOFLOWLABEL,
        "IPV6_AUTOFLOWLABEL",
        On::V6,
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
    (
        libc::IPPROTO_TCP,
        libc::TCP_MAXSEG,
        "TCP_MAXSEG",
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
        On::All | On::Inet | On::Any => true,
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
    collect(fd, ipv6, entries(ipv6, listener), ctx)
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
/// udp.rs cannot hold. A fresh TCP socket's defaults serve: these options start empty (or
/// zero) on every kind of inet socket.
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
        sys::set_bytes(fd, o.level, o.name, &o.value).map_err(ctx.sys(step))?;
    }
    Ok(())
}

/// Whether (level, name) is an option of the table (an image naming another is refused).
pub fn is_known(level: i32, name: i32) -> bool {
    TABLE.iter().any(|e| e.0 == level && e.1 == name)
}
