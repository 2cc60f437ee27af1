//! Netlink sockets (AF_NETLINK, any protocol): the port id bound (kernel-assigned ones too:
//! the process may have cached it, so it is bound again explicitly), multicast groups, the
//! connected destination, the SOL_NETLINK options and the SOL_SOCKET ones.
//!
//! ```text
//! dump:    SO_TYPE, SO_PROTOCOL, getsockname (port id), NETLINK_LIST_MEMBERSHIPS,
//!          getsockopt of OPTIONS; netlink_diag (MEMINFO, FLAGS: unread messages or a dump
//!          in progress are refused; state and destination of a connected socket)
//! restore: socket(AF_NETLINK, type, protocol), SOL_SOCKET options, OPTIONS,
//!          bind(port id, no group), NETLINK_ADD_MEMBERSHIP per group, connect
//! ```
//!
//! Unread messages are refused (for now): a dump racing a reply must not lose it. Not
//! carried: a pending overrun error (ENOBUFS; reading it clears it, nothing else shows it).
//! A restore beside the running original (`--leave-running`, same network namespace) finds
//! the port id taken and fails naming it.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use cryo_proto::image::FileDesc;
use cryo_tcp_repair as tcp;
use cryo_unix_sockets::family_diag;
use nix::sys::socket::{self, NetlinkAddr};
use nix::unistd::Pid;

use super::{restore_err, FamilyErrors, SocketError};
use crate::files::FileError;
use crate::sys::sockopt;

/// `SOL_NETLINK`.
const SOL_NETLINK: i32 = 270;
/// `NETLINK_ADD_MEMBERSHIP`, `NETLINK_LIST_MEMBERSHIPS`.
const NETLINK_ADD_MEMBERSHIP: i32 = 1;
const NETLINK_LIST_MEMBERSHIPS: i32 = 9;
/// `SO_PASSSEC`.
const SO_PASSSEC: i32 = 34;

/// The integer options, in the order they are set again (all 0 on a fresh socket).
const OPTIONS: &[(i32, i32, &str)] = &[
    (libc::SOL_SOCKET, libc::SO_PASSCRED, "SO_PASSCRED"),
    (libc::SOL_SOCKET, SO_PASSSEC, "SO_PASSSEC"),
    (SOL_NETLINK, 3, "NETLINK_PKTINFO"),
    (SOL_NETLINK, 4, "NETLINK_BROADCAST_ERROR"),
    (SOL_NETLINK, 5, "NETLINK_NO_ENOBUFS"),
    (SOL_NETLINK, 8, "NETLINK_LISTEN_ALL_NSID"),
    (SOL_NETLINK, 10, "NETLINK_CAP_ACK"),
    (SOL_NETLINK, 11, "NETLINK_EXT_ACK"),
    (SOL_NETLINK, 12, "NETLINK_GET_STRICT_CHK"),
];

/// The most group words read (32 each).
const MAX_GROUP_WORDS: usize = 1024;

/// A netlink socket's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NetlinkState {
    /// SOCK_RAW or SOCK_DGRAM.
    pub sock_type: i32,
    /// NETLINK_ROUTE, NETLINK_GENERIC...
    pub protocol: i32,
    /// The port id bound (0: unbound).
    pub portid: u32,
    /// The groups joined, 32 a word, without trailing zero words.
    pub groups: Vec<u32>,
    /// connect()ed to (port id, group): `None` when not connected.
    pub dst: Option<(u32, u32)>,
    /// (level, name, value) of the options of [`OPTIONS`] that are not 0.
    pub options: Vec<(i32, i32, i32)>,
    /// SOL_SOCKET options.
    pub socket: tcp::SocketOptions,
}

/// Captures netlink socket `dup` (fd `fd` of `pid`, inode `ino`), refusing what cannot come
/// back: touches nothing of it (its queue is judged by netlink_diag, not by a peek, which
/// would take a pending error).
pub(super) fn capture(
    pid: Pid,
    fd: RawFd,
    dup: BorrowedFd<'_>,
    ino: u64,
) -> Result<NetlinkState, FileError> {
    let errors = FamilyErrors {
        pid,
        fd,
        family: "netlink",
        ino,
    };
    let refuse = |what: &str| errors.refuse(what);
    let err = |op: &'static str| errors.inspect(op);
    let sock_type = sockopt::get_int(dup, libc::SOL_SOCKET, libc::SO_TYPE)
        .map_err(err("getsockopt SO_TYPE"))?;
    let protocol = sockopt::get_int(dup, libc::SOL_SOCKET, libc::SO_PROTOCOL)
        .map_err(err("getsockopt SO_PROTOCOL"))?;
    let name: NetlinkAddr = socket::getsockname(dup.as_raw_fd())
        .map_err(|e| err("getsockname")(std::io::Error::from(e)))?;
    let mut groups = sockopt::get_bytes(
        dup,
        SOL_NETLINK,
        NETLINK_LIST_MEMBERSHIPS,
        4 * MAX_GROUP_WORDS,
    )
    .map_err(err("getsockopt NETLINK_LIST_MEMBERSHIPS"))?
    .chunks_exact(4)
    .map(|w| u32::from_ne_bytes(w.try_into().expect("4 bytes")))
    .collect::<Vec<u32>>();
    while groups.last() == Some(&0) {
        groups.pop();
    }
    let d = family_diag::netlink_diag(protocol as u8, ino)
        .map_err(|e| err("netlink_diag")(std::io::Error::other(e.to_string())))?;
    let dst = match &d {
        Some(d) if d.rmem_alloc > 0 || d.cb_running => {
            return Err(refuse(if d.cb_running {
                "unread netlink messages (a dump in progress): a temporary state, retry once read"
            } else {
                "unread netlink messages: a temporary state, retry once read"
            }));
        }
        Some(d) => d.connected.then_some((d.dst_portid, d.dst_group)),
        None if name.pid() == 0 && groups.is_empty() => None,
        None => {
            return Err(refuse(
                "netlink_diag does not list it (in another network namespace than cryo's?)",
            ))
        }
    };
    let mut options = Vec::new();
    for &(level, name, step) in OPTIONS {
        match sockopt::get_int(dup, level, name) {
            Ok(0) => {}
            Ok(v) => options.push((level, name, v)),
            // An option this kernel does not have for netlink sockets is off.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOPROTOOPT | libc::EOPNOTSUPP)) => {}
            Err(e) => return Err(err(step)(e)),
        }
    }
    let socket = tcp::capture_socket_level(dup)
        .map_err(|e| err("socket options")(std::io::Error::other(e.to_string())))?;
    Ok(NetlinkState {
        sock_type,
        protocol,
        portid: name.pid(),
        groups,
        dst,
        options,
        socket,
    })
}

/// A netlink socket in words, for messages and `cryo show`.
pub(super) fn describe(n: &NetlinkState) -> String {
    let mut out = format!("netlink protocol {} port {}", n.protocol, n.portid);
    let joined: Vec<String> = group_numbers(&n.groups).map(|g| g.to_string()).collect();
    if !joined.is_empty() {
        out += &format!(" groups {}", joined.join(","));
    }
    if let Some((port, group)) = n.dst {
        out += &format!(" -> port {port} group {group}");
    }
    out
}

/// The group numbers (from 1) set in `words`.
fn group_numbers(words: &[u32]) -> impl Iterator<Item = u32> + '_ {
    words.iter().enumerate().flat_map(|(i, &w)| {
        (0..32)
            .filter(move |b| w & (1 << b) != 0)
            .map(move |b| i as u32 * 32 + b + 1)
    })
}

/// Netlink socket `n` made again (see the module's order).
pub(super) fn restore(desc: &FileDesc, n: &NetlinkState) -> Result<OwnedFd, SocketError> {
    let fd = sockopt::socket(libc::AF_NETLINK, n.sock_type, n.protocol)
        .map_err(|e| restore_err(desc, "socket", e))?;
    let b = fd.as_fd();
    tcp::apply_socket_level(b, &n.socket).map_err(|e| restore_err(desc, "socket options", e))?;
    for &(level, name, value) in &n.options {
        sockopt::set_int(b, level, name, value)
            .map_err(|e| restore_err(desc, option_name(level, name), e))?;
    }
    if n.portid != 0 {
        // No group here: bind sets the first 32 groups to its mask (and then NETLINK_ADD_MEMBERSHIP would
        // be undone by a later bind).
        socket::bind(b.as_raw_fd(), &NetlinkAddr::new(n.portid, 0))
            .map_err(|e| restore_err(desc, "bind (the port id)", e))?;
    }
    for g in group_numbers(&n.groups) {
        sockopt::set_int(b, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, g as i32)
            .map_err(|e| restore_err(desc, "NETLINK_ADD_MEMBERSHIP", e))?;
    }
    if let Some((port, group)) = n.dst {
        let mask = if group == 0 { 0 } else { 1u32 << (group - 1) };
        socket::connect(b.as_raw_fd(), &NetlinkAddr::new(port, mask))
            .map_err(|e| restore_err(desc, "connect", e))?;
    }
    Ok(fd)
}

/// The name of option (level, name), for messages.
fn option_name(level: i32, name: i32) -> &'static str {
    OPTIONS
        .iter()
        .find(|(l, n, _)| *l == level && *n == name)
        .map_or("netlink option", |(_, _, s)| s)
}

/// Whether (level, name) is an option restore sets (an image naming another is refused).
pub(super) fn is_known_option(level: i32, name: i32) -> bool {
    OPTIONS.iter().any(|(l, n, _)| *l == level && *n == name)
}

/// The largest destination group connect can name (its address carries a 32-bit mask).
pub(super) const MAX_DST_GROUP: u32 = 32;
