//! TCP sockets neither listening nor connected (state CLOSE): made and left alone, bound, or
//! left behind by a connect that failed and was reported to the application.
//!
//! ```text
//! what the process sees        getsockname      port held   how it is made again
//! made                         0.0.0.0:0        no          socket(), options
//! bound                        ADDR:PORT        yes         options, bind(ADDR:PORT)
//! connect failed (reported)    0.0.0.0:PORT     no          IP_LOCAL_PORT_RANGE PORT-PORT,
//!   (bound to ADDR:0 first:    ADDR:PORT)                   [bind(ADDR:0)], connect to a
//!                                                           local port nobody listens on:
//!                                                           ECONNREFUSED leaves the same name
//! ```
//!
//! Whether the port is held only inet_diag tells: a bound socket is listed as
//! TCP_BOUND_INACTIVE (linux 6.8), a stale port is not. What a socket keeps of a connection
//! attempt not reported yet (a pending SO_ERROR, the "connecting" state in which the next
//! connect() fails) or of a connection reset is read by [`closed_history`], which also
//! tells a socket closed after a connection that can come back closed (see
//! [`PastConnection`]); the engine refuses the others.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::error::{Ctx, Operation, Result, SocketName};
use crate::options;
use crate::repair::{require_state, socket_name};
use crate::state::{SocketOptions, TcpSocketOptions};
use crate::sys;

/// `IP_LOCAL_PORT_RANGE` (linux 6.3): the ports this socket picks from, low | high << 16.
const IP_LOCAL_PORT_RANGE: i32 = 51;

/// A TCP socket in state CLOSE that never connected (or whose failed connect was reported).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UnconnectedState {
    /// getsockname: the wildcard address and port 0 when never bound.
    pub local: SocketAddr,
    /// The port is held (bound). False with a port: a failed connect left it in the name.
    pub bound: bool,
    /// IP_LOCAL_PORT_RANGE (0: the namespace's range).
    pub local_port_range: u32,
    /// Socket-level options.
    pub socket: SocketOptions,
    /// TCP-level options.
    pub tcp: TcpSocketOptions,
    /// A connection (or a socket closed after one) dumped with `--tcp-close`: made again
    /// closed, shut both ways, with its local name (its port held, as after a restore with
    /// `--tcp-close`): reads return end-of-file, writes fail with EPIPE, poll says POLLHUP.
    #[serde(default)]
    pub closed_at_dump: bool,
}

/// What a TCP socket in state CLOSE keeps of its past, read without changing it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClosedHistory {
    /// An error is pending (poll: POLLERR): the next SO_ERROR, read or write returns it.
    pub pending_error: bool,
    /// Shut for reading (poll: POLLRDHUP).
    pub shut_read: bool,
    /// Segments sent and received since the socket was made or last disconnected (TCP_INFO):
    /// not zero after a connect that failed without being reported (the next connect() fails
    /// with ECONNABORTED) or after a connection reset or closed.
    pub segments: u64,
    /// The peer SO_PEERNAME still gives (getpeername says ENOTCONN in CLOSE): kept after a
    /// connection or a connect attempt, none after a disconnect or when never connected.
    pub peer: Option<SocketAddr>,
    /// What the socket had of a connection, by its counters: see [`PastConnection`].
    pub past: PastConnection,
}

/// What a TCP socket in state CLOSE with a peer had of a connection, told by its TCP_INFO
/// counters (the socket layer's state, which connect() answers from, no call reads).
///
/// The counters, in sequence space:
///
/// ```text
/// tcpi_delivered     segments the peer acknowledged, plus 1 for an accepted socket's
///                    SYN-ACK (counted by hand in SYN_RECV): 0 only when no SYN of ours was
///                    ever acknowledged, a connect refused or timed out
/// tcpi_bytes_acked   sequence numbers the peer acknowledged: the data, plus the SYN of a
///                    connecting socket (an accepted one's snd_una starts past its SYN-ACK),
///                    plus our FIN once acknowledged
/// tcpi_bytes_sent    data bytes sent, retransmissions included (tcpi_bytes_retrans)
/// ```
///
/// With nothing left unacknowledged (SIOCOUTQ 0), `bytes_acked - (bytes_sent -
/// bytes_retrans)` is `connected + fin` (each 0 or 1): 2 is a connecting socket whose FIN was
/// acknowledged, 0 an accepted one whose was not; 1 is either, told apart by `delivered - 1 -
/// tcpi_data_segs_out` (the FIN's segment), exact while nothing was retransmitted. A FIN of
/// ours means shutdown() ran in ESTABLISHED or CLOSE_WAIT, which made the socket layer state
/// "connected" (inet_shutdown); accept() makes it "connected" too. A connecting socket whose
/// connect() was non-blocking and never called again, and that sent no FIN, is still
/// "connecting": its next connect() fails with ECONNABORTED instead of EISCONN, and nothing
/// tells it from one connected by a blocking connect(): refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PastConnection {
    /// No segment exchanged since the socket was made or last disconnected, or no peer.
    Nothing,
    /// A connect whose SYN was never acknowledged (refused or timed out).
    ConnectFailed,
    /// Established, then ended (both FINs, or a reset whose error was read), its socket layer
    /// state "connected": reads return end-of-file, writes EPIPE, connect() EISCONN. Comes
    /// back as a connection closed at both ends ([`crate::TcpState::Close`]).
    Closed {
        /// Accepted (else connected by this socket).
        accepted: bool,
    },
    /// Not restorable as closed, for the reason given.
    Refused(&'static str),
}

/// Reads what TCP socket `fd` in state CLOSE keeps of its past (nothing is consumed).
pub fn closed_history(fd: impl AsFd) -> Result<ClosedHistory> {
    let fd = fd.as_fd();
    let ctx = Ctx::new(Operation::Capture, socket_name(fd));
    let revents = sys::poll_now(fd, libc::POLLIN | libc::POLLOUT | libc::POLLRDHUP)
        .map_err(ctx.io("poll"))?;
    let info = sys::tcp_info_full(fd).map_err(ctx.sys("getsockopt TCP_INFO"))?;
    let segments = u64::from(info.tcpi_segs_out) + u64::from(info.tcpi_segs_in);
    let peer = crate::repair::peer_address(fd);
    let pending_error = revents & libc::POLLERR != 0;
    let past = if segments == 0 || peer.is_none() {
        PastConnection::Nothing
    } else {
        let unacked = sys::ioctl_int(fd, libc::TIOCOUTQ as _).map_err(ctx.sys("ioctl SIOCOUTQ"))?;
        // A reset with its error pending comes back through the reset itself, which purges
        // what was never acknowledged as the original's did: what went out unacknowledged
        // (sent, not merely queued: SIOCOUTQ - tcpi_notsent_bytes) is counted as such.
        let in_flight =
            pending_error.then(|| i64::from(unacked) - i64::from(info.tcpi_notsent_bytes));
        past_connection(&info, unacked, in_flight)
    };
    Ok(ClosedHistory {
        pending_error,
        shut_read: revents & libc::POLLRDHUP != 0,
        segments,
        peer,
        past,
    })
}

/// Judges a closed socket's past from its counters `info` and `unacked` (SIOCOUTQ: sequence
/// numbers sent and never acknowledged); see [`PastConnection`]. `in_flight`: of those, the
/// ones that went out, when they may be (a reset whose error is pending); else any refuses.
fn past_connection(info: &libc::tcp_info, unacked: i32, in_flight: Option<i64>) -> PastConnection {
    if info.tcpi_delivered == 0 {
        return PastConnection::ConnectFailed;
    }
    if unacked != 0 && in_flight.is_none() {
        return PastConnection::Refused(
            "reset with data or a FIN of its own never acknowledged, whose socket layer \
             state no call reads: connect() may answer EISCONN or ECONNABORTED",
        );
    }
    let unique_sent = i128::from(info.tcpi_bytes_sent) - i128::from(info.tcpi_bytes_retrans);
    let fin_acked = || {
        (info.tcpi_total_retrans == 0 && in_flight.unwrap_or(0) == 0)
            .then(|| i64::from(info.tcpi_delivered) - 1 - i64::from(info.tcpi_data_segs_out))
    };
    match i128::from(info.tcpi_bytes_acked) - unique_sent + i128::from(in_flight.unwrap_or(0)) {
        2 => PastConnection::Closed { accepted: false },
        0 => PastConnection::Closed { accepted: true },
        1 => match fin_acked() {
            Some(1) => PastConnection::Closed { accepted: true },
            Some(0) => PastConnection::Refused(
                "connected by this socket and ended by a reset or a timeout before it sent a \
                 FIN: its socket layer state, \"connected\" after a blocking connect() but \
                 still \"connecting\" after a non-blocking one (connect() then answers \
                 ECONNABORTED, not EISCONN), no call reads",
            ),
            _ => PastConnection::Refused(
                "its counters (TCP_INFO) do not tell an accepted socket whose FIN was \
                 acknowledged from a connecting one that sent none (segments were \
                 retransmitted)",
            ),
        },
        _ => PastConnection::Refused(
            "its counters (TCP_INFO: bytes acknowledged against bytes sent) match no ending \
             of a connection",
        ),
    }
}

/// Captures TCP socket `fd` in state CLOSE: its name, whether its port is held, its options
/// (those of a listener's table: what a later listen() or connect() uses). The caller has
/// checked [`closed_history`] and that inet_diag answers for the socket's namespace.
pub fn capture_unconnected(fd: impl AsFd) -> Result<UnconnectedState> {
    let fd = fd.as_fd();
    let name = socket_name(fd);
    let ctx = Ctx::new(Operation::Capture, name);
    require_state(fd, ctx, name, 7, "not a TCP socket in state CLOSE")?;
    let ipv6 = crate::repair::is_ipv6(fd, ctx)?;
    let local = name
        .local
        .unwrap_or_else(|| SocketAddr::new(unspecified(ipv6), 0));
    let diag = bound_shutdown(fd, ipv6, local, ctx)?;
    // A bound socket's shutdown state is in its diag entry (an unbound one has none: shut
    // for reading, poll tells, see closed_history; shut for writing only, nothing does).
    if diag.is_some_and(|shutdown| shutdown != 0) {
        return Err(ctx.invalid(
            "sock_diag (shutdown state)",
            "a bound TCP socket shut down before any connection: not restored",
        ));
    }
    let bound = diag.is_some();
    let local_port_range = local_port_range(fd, ctx)?;
    Ok(UnconnectedState {
        local,
        bound,
        local_port_range,
        socket: options::capture_tcp_socket(fd, ipv6, true, ctx)?,
        tcp: options::capture_tcp(fd, ctx)?,
        closed_at_dump: false,
    })
}

/// The shutdown state (SHUT_RD 1, SHUT_WR 2) inet_diag gives for TCP socket `fd` named
/// `local` when its port is bound and it is not connected (the bound-inactive table); None
/// when it is not listed there.
fn bound_shutdown(
    fd: BorrowedFd<'_>,
    ipv6: bool,
    local: SocketAddr,
    ctx: Ctx,
) -> Result<Option<u8>> {
    if local.port() == 0 {
        return Ok(None);
    }
    crate::diag::find(
        fd,
        ipv6,
        libc::IPPROTO_TCP as u8,
        crate::diag::BOUND_INACTIVE,
    )
    .map_err(ctx.io("sock_diag (bound port)"))
}

/// Captures TCP socket `fd`, connected or closed after a connection, to be made again closed
/// (`--tcp-close`): its name and options as a connection's (not TCP_MAXSEG: it reads the MSS
/// the handshake set); nothing of the connection itself.
pub fn capture_closed(fd: impl AsFd) -> Result<UnconnectedState> {
    let fd = fd.as_fd();
    let name = socket_name(fd);
    let ctx = Ctx::new(Operation::Capture, name);
    let ipv6 = crate::repair::is_ipv6(fd, ctx)?;
    let local = name
        .local
        .unwrap_or_else(|| SocketAddr::new(unspecified(ipv6), 0));
    // A socket closed (as a restore with `--tcp-close` leaves one) is shut both ways; a bound
    // one shut one way only before any connection is not that (its diag entry tells).
    if bound_shutdown(fd, ipv6, local, ctx)?.is_some_and(|shutdown| shutdown != 3) {
        return Err(ctx.invalid(
            "sock_diag (shutdown state)",
            "a bound TCP socket shut one way only before any connection: not restored",
        ));
    }
    Ok(UnconnectedState {
        local,
        bound: false,
        local_port_range: local_port_range(fd, ctx)?,
        socket: options::capture_tcp_socket(fd, ipv6, false, ctx)?,
        tcp: options::capture_tcp(fd, ctx)?,
        closed_at_dump: true,
    })
}

fn unspecified(ipv6: bool) -> IpAddr {
    if ipv6 {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    }
}

/// Makes TCP socket `state` again: options, then bound, or with the name a failed connect
/// left, or as made.
pub fn restore_unconnected(state: &UnconnectedState) -> Result<OwnedFd> {
    let ctx = Ctx::new(Operation::Restore, SocketName::new(Some(state.local), None));
    let ipv6 = state.local.is_ipv6();
    let fd = options::new_socket(ipv6, &state.socket, ctx)?;
    let b = fd.as_fd();
    let local = state.local;
    if state.closed_at_dump {
        // Its port is shared with its listener (an accepted end) or still held by the
        // closing original: bound in repair mode, which takes a port whatever holds it, as
        // the restore of a connection with `--tcp-close` does.
        sys::set_int(b, libc::SOL_TCP, libc::TCP_REPAIR, sys::TCP_REPAIR_ON)
            .map_err(ctx.sys("setsockopt TCP_REPAIR"))?;
        options::bind_as_dumped(b, local, ctx)?;
        crate::repair::leave(
            b,
            sys::TCP_REPAIR_OFF,
            SocketName::new(Some(local), None),
            state.socket.reuse_addr,
        )?;
    } else if state.bound {
        options::bind_as_dumped(b, local, ctx)?;
    } else if local.port() != 0 {
        replay_failed_connect(b, local, ctx)?;
    } else if !local.ip().is_unspecified() {
        // Bound to an address without a port (IP_BIND_ADDRESS_NO_PORT): set again below.
        sys::set_int(b, libc::SOL_IP, libc::IP_BIND_ADDRESS_NO_PORT, 1)
            .map_err(ctx.sys("setsockopt IP_BIND_ADDRESS_NO_PORT"))?;
        options::bind_as_dumped(b, local, ctx)?;
    }
    if state.local_port_range != 0 {
        set_local_port_range(b, state.local_port_range, ctx)?;
    }
    options::apply_socket(b, &state.socket, ipv6, ctx)?;
    options::apply_tcp(b, &state.tcp, ctx)?;
    if state.closed_at_dump {
        // On a closed socket shutdown() only marks both directions shut (and says ENOTCONN).
        match nix::sys::socket::shutdown(b.as_raw_fd(), nix::sys::socket::Shutdown::Both) {
            Ok(()) | Err(nix::errno::Errno::ENOTCONN) => {}
            Err(e) => return Err(ctx.sys("shutdown")(e)),
        }
    }
    let now = socket_name(b).local;
    if now != Some(local) {
        return Err(ctx.invalid(
            "getsockname",
            format!(
                "the socket came back as {} instead of {local}",
                now.map_or("?".into(), |a| a.to_string())
            ),
        ));
    }
    Ok(fd)
}

/// Leaves on `fd` the name a failed connect left: the port `local.port()` in the name but
/// not held (and `local.ip()` bound when it is not the wildcard). The port is the only one
/// IP_LOCAL_PORT_RANGE offers; the connect goes to a local port bound (not listening) by a
/// socket made for it, which answers with a reset at once.
fn replay_failed_connect(fd: BorrowedFd<'_>, local: SocketAddr, ctx: Ctx) -> Result<()> {
    let ipv6 = local.is_ipv6();
    let sref = socket2::SockRef::from(&fd);
    set_local_port_range(fd, only_port(local.port()), ctx)?;
    let to_ip = if local.ip().is_unspecified() {
        if ipv6 {
            IpAddr::V6(Ipv6Addr::LOCALHOST)
        } else {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        }
    } else {
        options::bind_as_dumped(fd, SocketAddr::new(local.ip(), 0), ctx)?;
        local.ip()
    };
    let domain = if ipv6 { Domain::IPV6 } else { Domain::IPV4 };
    let closed = Socket::new(domain, Type::STREAM.cloexec(), Some(Protocol::TCP))
        .map_err(ctx.io("socket (a port nobody listens on)"))?;
    closed
        .bind(&SockAddr::from(SocketAddr::new(to_ip, 0)))
        .map_err(ctx.io("bind (a port nobody listens on)"))?;
    let to = closed
        .local_addr()
        .map_err(ctx.io("getsockname (a port nobody listens on)"))?;
    match sref.connect(&to) {
        Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {}
        Err(e) => return Err(ctx.io("connect (failed connect made again)")(e)),
        Ok(()) => {
            return Err(ctx.invalid(
                "connect (failed connect made again)",
                "a port nobody listens on accepted the connection",
            ))
        }
    }
    set_local_port_range(fd, 0, ctx)
}

/// A TCP socket whose connect is in progress (SYN_SENT): its name, the peer it connects to,
/// its options. Repair mode cannot be entered in SYN_SENT: the restore connects again from
/// the same port (a new SYN, with a new initial sequence number: the peer has accepted
/// nothing yet).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConnectingState {
    /// getsockname: the address and port the connect took.
    pub local: SocketAddr,
    /// The peer it connects to.
    pub remote: SocketAddr,
    /// IP_LOCAL_PORT_RANGE (0: the namespace's range).
    pub local_port_range: u32,
    /// Socket-level options.
    pub socket: SocketOptions,
    /// TCP-level options.
    pub tcp: TcpSocketOptions,
}

/// Captures TCP socket `fd` in SYN_SENT, connecting to `remote` (getpeername has no peer
/// before the handshake: the caller reads it from /proc/net/tcp). Nothing is changed.
pub fn capture_connecting(fd: impl AsFd, remote: SocketAddr) -> Result<ConnectingState> {
    let fd = fd.as_fd();
    let name = socket_name(fd);
    let ctx = Ctx::new(
        Operation::Capture,
        SocketName::new(name.local, Some(remote)),
    );
    require_state(fd, ctx, name, 2, "not a TCP socket in SYN_SENT")?;
    let local = name
        .local
        .ok_or_else(|| ctx.invalid("getsockname", "a connect in progress without an address"))?;
    let ipv6 = local.is_ipv6();
    Ok(ConnectingState {
        local,
        remote,
        local_port_range: local_port_range(fd, ctx)?,
        socket: options::capture_tcp_socket(fd, ipv6, false, ctx)?,
        tcp: options::capture_tcp(fd, ctx)?,
    })
}

/// Sets IP_LOCAL_PORT_RANGE of `fd` to `range` (low | high << 16; 0: the namespace's).
fn set_local_port_range(fd: BorrowedFd<'_>, range: u32, ctx: Ctx) -> Result<()> {
    sys::set_int(fd, libc::SOL_IP, IP_LOCAL_PORT_RANGE, range as i32)
        .map_err(ctx.sys("setsockopt IP_LOCAL_PORT_RANGE"))
}

/// The IP_LOCAL_PORT_RANGE that offers `port` alone.
fn only_port(port: u16) -> u32 {
    let port = u32::from(port);
    port | port << 16
}

fn local_port_range(fd: BorrowedFd<'_>, ctx: Ctx) -> Result<u32> {
    Ok(sys::get_int(fd, libc::SOL_IP, IP_LOCAL_PORT_RANGE)
        .or_else(|e| match e {
            nix::errno::Errno::ENOPROTOOPT => Ok(0),
            e => Err(e),
        })
        .map_err(ctx.sys("getsockopt IP_LOCAL_PORT_RANGE"))? as u32)
}

/// Makes connect in progress `state` again: options, then a non-blocking connect from the
/// same port (the only one IP_LOCAL_PORT_RANGE offers), the range put back; the socket is
/// left blocking (the caller sets the description's flags) in SYN_SENT, as a connect() that
/// returned EINPROGRESS leaves it: a blocking connect() restarted on it waits for the
/// handshake, a poll for POLLOUT sees it complete.
pub fn restore_connecting(state: &ConnectingState) -> Result<OwnedFd> {
    let ctx = Ctx::new(
        Operation::Restore,
        SocketName::new(Some(state.local), Some(state.remote)),
    );
    let ipv6 = state.local.is_ipv6();
    let fd = options::new_socket(ipv6, &state.socket, ctx)?;
    let b = fd.as_fd();
    options::apply_socket(b, &state.socket, ipv6, ctx)?;
    options::apply_tcp(b, &state.tcp, ctx)?;
    set_local_port_range(b, only_port(state.local.port()), ctx)?;
    let sref = socket2::SockRef::from(&b);
    sref.set_nonblocking(true)
        .map_err(ctx.io("O_NONBLOCK (to connect)"))?;
    match sref.connect(&SockAddr::from(state.remote)) {
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(ctx.io("connect")(e)),
        Ok(()) => {}
    }
    sref.set_nonblocking(false)
        .map_err(ctx.io("O_NONBLOCK (after connect)"))?;
    set_local_port_range(b, state.local_port_range, ctx)?;
    let now = socket_name(b).local;
    if now != Some(state.local) {
        return Err(ctx.invalid(
            "getsockname",
            format!(
                "the connect came from {} instead of {}",
                now.map_or("?".into(), |a| a.to_string()),
                state.local
            ),
        ));
    }
    Ok(fd)
}
