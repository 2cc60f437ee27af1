//! Every option an application sets on a TCP socket, set to a value no socket has by default
//! (`setopts`), and read back with getsockopt from inside the process (`opts`), so a test
//! compares what the original and the restored process observe.

use std::io;

use super::sys;

/// (name, level, option, the value set), for every TCP socket.
type Opt = (&'static str, i32, i32, Value);

/// A value to set.
#[derive(Clone, Copy)]
enum Value {
    Int(i32),
    Linger(i32),
    Timeval(i64),
    Bytes(&'static [u8]),
    /// Only read (it cannot change once the socket is bound).
    ReadOnly,
}

/// SO_BUF_LOCK (linux 5.14): the buffer sizes' lock bits (set by SO_SNDBUF/SO_RCVBUF).
const SO_BUF_LOCK: i32 = 72;

/// SO_TXTIME (linux 4.19): struct sock_txtime {clockid, flags}.
const SO_TXTIME: i32 = 61;

/// struct sock_txtime {CLOCK_MONOTONIC, SOF_TXTIME_REPORT_ERRORS}.
const TXTIME: &[u8] = &[1, 0, 0, 0, 2, 0, 0, 0];

/// An IPv6 extension header holding one PadN option (next header, length 0, PadN of 4).
const PADN_HEADER: &[u8] = &[0, 0, 1, 4, 0, 0, 0, 0];

const COMMON: &[Opt] = &[
    (
        "SO_REUSEADDR",
        libc::SOL_SOCKET,
        libc::SO_REUSEADDR,
        Value::Int(1),
    ),
    (
        "SO_KEEPALIVE",
        libc::SOL_SOCKET,
        libc::SO_KEEPALIVE,
        Value::Int(1),
    ),
    (
        "TCP_KEEPIDLE",
        libc::IPPROTO_TCP,
        libc::TCP_KEEPIDLE,
        Value::Int(77),
    ),
    (
        "TCP_KEEPINTVL",
        libc::IPPROTO_TCP,
        libc::TCP_KEEPINTVL,
        Value::Int(13),
    ),
    (
        "TCP_KEEPCNT",
        libc::IPPROTO_TCP,
        libc::TCP_KEEPCNT,
        Value::Int(5),
    ),
    (
        "TCP_NODELAY",
        libc::IPPROTO_TCP,
        libc::TCP_NODELAY,
        Value::Int(1),
    ),
    ("TCP_CORK", libc::IPPROTO_TCP, libc::TCP_CORK, Value::Int(1)),
    (
        "TCP_USER_TIMEOUT",
        libc::IPPROTO_TCP,
        libc::TCP_USER_TIMEOUT,
        Value::Int(12345),
    ),
    (
        "TCP_CONGESTION",
        libc::IPPROTO_TCP,
        libc::TCP_CONGESTION,
        Value::Bytes(b"reno"),
    ),
    (
        "SO_LINGER",
        libc::SOL_SOCKET,
        libc::SO_LINGER,
        Value::Linger(7),
    ),
    (
        "SO_SNDBUF",
        libc::SOL_SOCKET,
        libc::SO_SNDBUF,
        Value::Int(131072),
    ),
    (
        "SO_RCVBUF",
        libc::SOL_SOCKET,
        libc::SO_RCVBUF,
        Value::Int(65536),
    ),
    ("SO_BUF_LOCK", libc::SOL_SOCKET, SO_BUF_LOCK, Value::Int(3)),
    (
        "SO_TXTIME",
        libc::SOL_SOCKET,
        SO_TXTIME,
        Value::Bytes(TXTIME),
    ),
    // Software receive timestamps (read back as struct so_timestamping {flags, bind_phc}).
    (
        "SO_TIMESTAMPING",
        libc::SOL_SOCKET,
        libc::SO_TIMESTAMPING,
        Value::Int((libc::SOF_TIMESTAMPING_RX_SOFTWARE | libc::SOF_TIMESTAMPING_SOFTWARE) as i32),
    ),
    ("SO_MARK", libc::SOL_SOCKET, libc::SO_MARK, Value::Int(0x77)),
    (
        "SO_PRIORITY",
        libc::SOL_SOCKET,
        libc::SO_PRIORITY,
        Value::Int(5),
    ),
    (
        "SO_RCVLOWAT",
        libc::SOL_SOCKET,
        libc::SO_RCVLOWAT,
        Value::Int(1),
    ),
    (
        "SO_RCVTIMEO",
        libc::SOL_SOCKET,
        libc::SO_RCVTIMEO,
        Value::Timeval(5),
    ),
    (
        "SO_SNDTIMEO",
        libc::SOL_SOCKET,
        libc::SO_SNDTIMEO,
        Value::Timeval(6),
    ),
    (
        "SO_BINDTODEVICE",
        libc::SOL_SOCKET,
        libc::SO_BINDTODEVICE,
        Value::Bytes(b"lo"),
    ),
    (
        "SO_OOBINLINE",
        libc::SOL_SOCKET,
        libc::SO_OOBINLINE,
        Value::Int(1),
    ),
    (
        "SO_TIMESTAMP",
        libc::SOL_SOCKET,
        libc::SO_TIMESTAMP,
        Value::Int(1),
    ),
    (
        "SO_BUSY_POLL",
        libc::SOL_SOCKET,
        libc::SO_BUSY_POLL,
        Value::Int(50),
    ),
    ("SO_PREFER_BUSY_POLL", libc::SOL_SOCKET, 69, Value::Int(1)),
    ("SO_RCVMARK", libc::SOL_SOCKET, 75, Value::Int(1)),
    (
        "TCP_NOTSENT_LOWAT",
        libc::IPPROTO_TCP,
        libc::TCP_NOTSENT_LOWAT,
        Value::Int(16384),
    ),
    (
        "TCP_LINGER2",
        libc::IPPROTO_TCP,
        libc::TCP_LINGER2,
        Value::Int(17),
    ),
    (
        "TCP_THIN_LINEAR_TIMEOUTS",
        libc::IPPROTO_TCP,
        libc::TCP_THIN_LINEAR_TIMEOUTS,
        Value::Int(1),
    ),
    (
        "TCP_SYNCNT",
        libc::IPPROTO_TCP,
        libc::TCP_SYNCNT,
        Value::Int(3),
    ),
    (
        "SO_DONTROUTE",
        libc::SOL_SOCKET,
        libc::SO_DONTROUTE,
        Value::Int(1),
    ),
    // After SO_TIMESTAMP: nanosecond stamps, which SO_TIMESTAMP then reads as off.
    (
        "SO_TIMESTAMPNS",
        libc::SOL_SOCKET,
        libc::SO_TIMESTAMPNS,
        Value::Int(1),
    ),
    (
        "SO_ZEROCOPY",
        libc::SOL_SOCKET,
        libc::SO_ZEROCOPY,
        Value::Int(1),
    ),
    (
        "TCP_SAVE_SYN",
        libc::IPPROTO_TCP,
        libc::TCP_SAVE_SYN,
        Value::Int(1),
    ),
    // Microseconds added to every segment's departure (CAP_NET_ADMIN).
    ("TCP_TX_DELAY", libc::IPPROTO_TCP, 37, Value::Int(50)),
    // The bytes queued, in a cmsg of every recvmsg.
    ("TCP_INQ", libc::IPPROTO_TCP, 36, Value::Int(1)),
    // The retransmission timeout's bounds and the longest delayed ACK (linux 6.15, 6.16).
    ("TCP_RTO_MAX_MS", libc::IPPROTO_TCP, 44, Value::Int(30_000)),
    ("TCP_RTO_MIN_US", libc::IPPROTO_TCP, 45, Value::Int(100_000)),
    (
        "TCP_DELACK_MAX_US",
        libc::IPPROTO_TCP,
        46,
        Value::Int(30_000),
    ),
    // Bytes per second (read back as 8 bytes).
    (
        "SO_MAX_PACING_RATE",
        libc::SOL_SOCKET,
        47,
        Value::Int(1_000_000),
    ),
    ("SO_TXREHASH", libc::SOL_SOCKET, 74, Value::Int(0)),
];

const V4: &[Opt] = &[
    (
        "IP_MINTTL",
        libc::IPPROTO_IP,
        libc::IP_MINTTL,
        Value::Int(5),
    ),
    ("IP_TOS", libc::IPPROTO_IP, libc::IP_TOS, Value::Int(0x10)),
    ("IP_TTL", libc::IPPROTO_IP, libc::IP_TTL, Value::Int(33)),
    (
        "IP_MTU_DISCOVER",
        libc::IPPROTO_IP,
        libc::IP_MTU_DISCOVER,
        Value::Int(0),
    ),
    (
        "IP_RECVERR",
        libc::IPPROTO_IP,
        libc::IP_RECVERR,
        Value::Int(1),
    ),
    (
        "IP_FREEBIND",
        libc::IPPROTO_IP,
        libc::IP_FREEBIND,
        Value::Int(1),
    ),
    // Three no-operations and an end of options: carried in every segment's IP header.
    (
        "IP_OPTIONS",
        libc::IPPROTO_IP,
        libc::IP_OPTIONS,
        Value::Bytes(&[1, 1, 1, 0]),
    ),
    (
        "IP_TRANSPARENT",
        libc::IPPROTO_IP,
        libc::IP_TRANSPARENT,
        Value::Int(1),
    ),
    (
        "IP_BIND_ADDRESS_NO_PORT",
        libc::IPPROTO_IP,
        libc::IP_BIND_ADDRESS_NO_PORT,
        Value::Int(1),
    ),
    (
        "IP_RECVTOS",
        libc::IPPROTO_IP,
        libc::IP_RECVTOS,
        Value::Int(1),
    ),
    (
        "IP_PKTINFO",
        libc::IPPROTO_IP,
        libc::IP_PKTINFO,
        Value::Int(1),
    ),
];

/// The IPv6 options; the sticky ones put a hop-by-hop and a destination options header in
/// every segment (no routing header: it would send the segments elsewhere; and no
/// IPV6_RTHDRDSTOPTS: without a routing header the kernel counts its length in the headers
/// without sending it, and the peer drops every segment: sockets_udp tests it).
const V6: &[Opt] = &[
    ("IPV6_MINHOPCOUNT", libc::IPPROTO_IPV6, 73, Value::Int(5)),
    ("IPV6_AUTOFLOWLABEL", libc::IPPROTO_IPV6, 70, Value::Int(0)),
    (
        "IPV6_DONTFRAG",
        libc::IPPROTO_IPV6,
        libc::IPV6_DONTFRAG,
        Value::Int(1),
    ),
    (
        "IPV6_HOPOPTS",
        libc::IPPROTO_IPV6,
        libc::IPV6_HOPOPTS,
        Value::Bytes(PADN_HEADER),
    ),
    (
        "IPV6_DSTOPTS",
        libc::IPPROTO_IPV6,
        libc::IPV6_DSTOPTS,
        Value::Bytes(PADN_HEADER),
    ),
    (
        "IPV6_TCLASS",
        libc::IPPROTO_IPV6,
        libc::IPV6_TCLASS,
        Value::Int(0x10),
    ),
    (
        "IPV6_UNICAST_HOPS",
        libc::IPPROTO_IPV6,
        libc::IPV6_UNICAST_HOPS,
        Value::Int(33),
    ),
    (
        "IPV6_RECVERR",
        libc::IPPROTO_IPV6,
        libc::IPV6_RECVERR,
        Value::Int(1),
    ),
    (
        "IPV6_MTU_DISCOVER",
        libc::IPPROTO_IPV6,
        libc::IPV6_MTU_DISCOVER,
        Value::Int(libc::IPV6_PMTUDISC_DO),
    ),
    (
        "IPV6_V6ONLY",
        libc::IPPROTO_IPV6,
        libc::IPV6_V6ONLY,
        Value::ReadOnly,
    ),
];

const LISTENER: &[Opt] = &[
    (
        "TCP_FASTOPEN_NO_COOKIE",
        libc::IPPROTO_TCP,
        34,
        Value::Int(1),
    ),
    (
        "TCP_DEFER_ACCEPT",
        libc::IPPROTO_TCP,
        libc::TCP_DEFER_ACCEPT,
        Value::Int(5),
    ),
    (
        "TCP_FASTOPEN",
        libc::IPPROTO_TCP,
        libc::TCP_FASTOPEN,
        Value::Int(16),
    ),
    (
        "TCP_WINDOW_CLAMP",
        libc::IPPROTO_TCP,
        libc::TCP_WINDOW_CLAMP,
        Value::Int(40000),
    ),
    (
        "TCP_MAXSEG",
        libc::IPPROTO_TCP,
        libc::TCP_MAXSEG,
        Value::Int(1200),
    ),
];

/// A connection's own (a listener's are in [`LISTENER`]): a window clamp the application set
/// on the established connection, and its delayed-ACK mode (TCP_QUICKACK 0).
const CONNECTION: &[Opt] = &[
    (
        "TCP_WINDOW_CLAMP",
        libc::IPPROTO_TCP,
        libc::TCP_WINDOW_CLAMP,
        Value::Int(30000),
    ),
    (
        "TCP_QUICKACK",
        libc::IPPROTO_TCP,
        libc::TCP_QUICKACK,
        Value::Int(0),
    ),
];

/// Whether socket `fd` is IPv6.
fn is_v6(fd: i32) -> io::Result<bool> {
    let domain = sys::getsockopt_bytes(fd, libc::SOL_SOCKET, libc::SO_DOMAIN, 4)?;
    Ok(domain.len() == 4
        && i32::from_ne_bytes([domain[0], domain[1], domain[2], domain[3]]) == libc::AF_INET6)
}

fn table(fd: i32, listener: bool) -> Result<Vec<&'static Opt>, String> {
    let v6 = is_v6(fd).map_err(|e| format!("SO_DOMAIN: {e}"))?;
    let mut out: Vec<&Opt> = COMMON.iter().collect();
    out.extend(if v6 { V6 } else { V4 });
    out.extend(if listener { LISTENER } else { CONNECTION });
    Ok(out)
}

/// Sets every option of the table on socket `fd` (a listener's own too with `listener`).
pub fn set_all(fd: i32, listener: bool) -> Result<(), String> {
    for &(name, level, opt, value) in table(fd, listener)? {
        let set = match value {
            Value::Int(v) => sys::setsockopt_value(fd, level, opt, &v),
            Value::Linger(secs) => sys::setsockopt_value(
                fd,
                level,
                opt,
                &libc::linger {
                    l_onoff: 1,
                    l_linger: secs,
                },
            ),
            Value::Timeval(secs) => sys::setsockopt_value(
                fd,
                level,
                opt,
                &libc::timeval {
                    tv_sec: secs,
                    tv_usec: 0,
                },
            ),
            Value::Bytes(b) => sys::setsockopt_bytes(fd, level, opt, b),
            Value::ReadOnly => continue,
        };
        set.map_err(|e| format!("setsockopt {name}: {e}"))?;
    }
    Ok(())
}

/// Every option of the table as getsockopt reads it on `fd`: `NAME=hex ...`.
pub fn read_all(fd: i32, listener: bool) -> Result<String, String> {
    let mut out = Vec::new();
    for &(name, level, opt, _) in table(fd, listener)? {
        let value = sys::getsockopt_bytes(fd, level, opt, 64)
            .map_err(|e| format!("getsockopt {name}: {e}"))?;
        let hex: String = value.iter().map(|b| format!("{b:02x}")).collect();
        out.push(format!("{name}={hex}"));
    }
    Ok(out.join(" "))
}
