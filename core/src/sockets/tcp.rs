//! TCP connections and listeners: identified by their kernel state, connections captured in
//! repair mode (TCP_REPAIR, through cryo-tcp-repair) on every core and restored quietly (or
//! reset with `--tcp-close`), listeners captured and listening again; connects in progress
//! connected again from the same port; sockets neither listening nor connected made again
//! (unbound, bound, or as a reported failed connect left them).
//!
//! ```text
//! identify    TCP_INFO state: LISTEN -> listener; ESTABLISHED and the closing states ->
//!             connection (refused without --tcp-established); SYN_SENT -> a connect in
//!             progress with --tcp-established (made again by a connect from the same port),
//!             refused as temporary without; SYN_RECV, NEW_SYN_RECV -> refused as
//!             temporary; CLOSE -> not connected, or closed after a connection (both
//!             FINs, or a reset read: captured in repair mode as a connection in Close,
//!             restored through LAST_ACK and the peer's ACK), unless it keeps what cannot
//!             be made again (a pending error, a failed connect, a connection whose
//!             connect() answer no call reads: refused); TIME_WAIT -> refused
//! capture     Repair::enter + capture, then hold() (lifecycle.rs owns what happens next)
//! restore     restore + finish_quiet (the lock still drops what the peer sends), or
//!             finish_closed with --tcp-close (TCP_CLOSE, shut both ways: EOF, POLLHUP)
//! ```

use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};

use cryo_proto::image::{FileDesc, Socket};
use cryo_tcp_repair::{self as repair, InFlight, ListenerState, Repair, TcpConnectionState};
use nix::unistd::Pid;
use socket2::SockRef;

use super::lifecycle::Held;
use super::{
    for_errors, repair_err, restore_err, socket_dup, socket_record, Found, SocketDumpOptions,
    SocketError, SocketState,
};
use crate::files::FileError;

/// Default listen() backlog when the dump could not read it.
const DEFAULT_BACKLOG: u32 = 128;

/// A TCP connection of the task, found and checked, to be captured.
pub(super) struct FoundConnection {
    pub fd: RawFd,
    pub ino: u64,
    pub family: u32,
    pub name: repair::SocketName,
    /// Closed at both ends (state CLOSE, its peer from SO_PEERNAME).
    pub closed: bool,
    /// Closed by a reset whose error the process has not read: the capture takes it.
    pub reset: bool,
}

/// What TCP socket `fd` (fd `task_fd` of `pid`) is, by its kernel state: a listener, a
/// connection (refused without `--tcp-established`), or refused.
pub(super) fn identify(
    pid: Pid,
    task_fd: RawFd,
    fd: BorrowedFd<'_>,
    ino: u64,
    opts: &SocketDumpOptions,
) -> Result<Found, FileError> {
    let open = || for_errors(pid, task_fd);
    let s = SockRef::from(&fd);
    let addr = |a: std::io::Result<socket2::SockAddr>| a.ok().and_then(|a| a.as_socket());
    let state = repair::kernel_tcp_state(fd).map_err(repair_err(pid, task_fd))?;
    let (local, remote) = (addr(s.local_addr()), addr(s.peer_addr()));
    let tuple = || match (local, remote) {
        (Some(l), Some(r)) => Ok((l, r)),
        _ => Err(open().dump_err("TCP connection without addresses")),
    };
    match state {
        10 => Ok(Found::Listener),
        1 | 4 | 5 | 8 | 9 | 11 if opts.tcp_close => Ok(Found::TcpClosed),
        1 | 4 | 5 | 8 | 9 | 11 => {
            let (local, remote) = tuple()?;
            if !opts.tcp_established {
                return Err(SocketError::TcpEstablished {
                    pid,
                    fd: task_fd,
                    local,
                    remote,
                    state: repair::state_name(state),
                }
                .into());
            }
            Ok(Found::Connection(local, remote))
        }
        2 if opts.tcp_established => {
            let remote = remote.or_else(|| proc_net_peer(pid, ino));
            match (local, remote) {
                (Some(l), Some(r)) => Ok(Found::Connecting(l, r)),
                _ => Err(open().dump_err("TCP connect in progress without addresses")),
            }
        }
        2 | 3 | 12 => {
            // A connect in progress has no peer address yet (getpeername: ENOTCONN); the
            // kernel's table of the task's namespace has it.
            let remote = remote.or_else(|| proc_net_peer(pid, ino));
            Err(SocketError::TcpTemporary {
                pid,
                fd: task_fd,
                local: show(local),
                remote: show(remote),
                state: repair::state_name(state),
            }
            .into())
        }
        7 => unconnected(pid, task_fd, fd, local, opts),
        other => Err(open().refuse(
            format!(
                "TCP socket in state {} (neither listening nor connected)",
                repair::state_name(other)
            ),
            true,
        )),
    }
}

/// An address as messages show it ("?" when there is none).
fn show(a: Option<SocketAddr>) -> String {
    a.map_or("?".to_string(), |a| a.to_string())
}

/// A TCP socket in state CLOSE (fd `task_fd` of `pid`, named `local`): restorable when it
/// keeps nothing of a connection: no pending error, no segment exchanged since it was made
/// or last disconnected, not shut (inet_diag, asked in the task's network namespace:
/// [`super::in_netns_of`], tells later whether its port is held); or when it was closed after
/// a connection whose socket layer state is "connected" (both FINs, or a reset whose error
/// was read: [`repair::PastConnection::Closed`]), which comes back as that connection closed
/// at both ends (captured in repair mode, in [`repair::TcpState::Close`]). What else the
/// kernel keeps (a connect that failed without being reported, a connection whose
/// connect() answer no call reads) is refused.
fn unconnected(
    pid: Pid,
    task_fd: RawFd,
    fd: BorrowedFd<'_>,
    local: Option<SocketAddr>,
    opts: &SocketDumpOptions,
) -> Result<Found, FileError> {
    let refuse = |what: String| Err(for_errors(pid, task_fd).refuse(what, false));
    let h = repair::closed_history(fd).map_err(repair_err(pid, task_fd))?;
    // Closed after a connection (or a reset): with --tcp-close, closed it comes back.
    if opts.tcp_close && (h.pending_error || h.segments != 0) {
        return Ok(Found::TcpClosed);
    }
    if h.pending_error {
        return match (h.past, local, h.peer) {
            // Reset by its peer, the error not read yet: a dump that ends the process takes
            // it (at capture) and the restore resets the connection again.
            (repair::PastConnection::Closed { .. }, Some(local), Some(peer))
                if !opts.leave_running =>
            {
                Ok(Found::ClosedConnection(local, peer, true))
            }
            (repair::PastConnection::Closed { .. }, Some(_), Some(_)) => {
                Err(for_errors(pid, task_fd).refuse(
                    "TCP connection reset by its peer whose error (SO_ERROR) the process has \
                     not read yet: reading it takes it, which a dump that leaves the process \
                     running must not (retry once the process has read it, or dump it \
                     without --leave-running)",
                    true,
                ))
            }
            (repair::PastConnection::Refused(why), local, peer) => refuse(format!(
                "closed TCP connection {} -> {} ended by a reset whose error (SO_ERROR) is \
                     pending, which cannot come back as it is ({why})",
                show(local),
                show(peer)
            )),
            _ => refuse(
                "closed TCP socket with a pending error (SO_ERROR: a failed connect, or a \
                 reset of a connection whose connect() answer no call reads), which cannot \
                 be made again"
                    .into(),
            ),
        };
    }
    if h.segments != 0 {
        return match (h.past, local, h.peer) {
            (repair::PastConnection::Closed { .. }, Some(local), Some(peer)) => {
                Ok(Found::ClosedConnection(local, peer, false))
            }
            (repair::PastConnection::Refused(why), ..) => refuse(format!(
                "closed TCP connection {} -> {} that cannot come back as it is ({why})",
                show(local),
                show(h.peer)
            )),
            (repair::PastConnection::ConnectFailed, ..) => refuse(format!(
                "closed TCP socket {}: a connect attempt to {} that failed without being \
                 reported (the next connect() fails with ECONNABORTED), which cannot be made \
                 again",
                show(local),
                show(h.peer)
            )),
            _ => refuse(format!(
                "closed TCP socket that still holds a connection or connect attempt ({} \
                 segments exchanged, no peer address left), which cannot be made again",
                h.segments
            )),
        };
    }
    if h.shut_read && local.is_some_and(|l| l.port() != 0) {
        // Closed, shut, its name kept and nothing of a connection left: as a restore with
        // --tcp-close makes a connection (zdtm socket-tcp-close2 dumped again after one),
        // and as it comes back again. Shut for writing is not readable in CLOSE: taken with
        // shut for reading, as a closed connection has both.
        return Ok(Found::TcpClosed);
    }
    if h.shut_read {
        return refuse("TCP socket not connected but shut for reading (SHUT_RD)".into());
    }
    Ok(Found::TcpUnconnected)
}

/// Captures TCP socket `dup` (fd `fd` of `pid`), neither listening nor connected.
pub(super) fn capture_unconnected(
    pid: Pid,
    fd: RawFd,
    dup: BorrowedFd<'_>,
) -> Result<SocketState, SocketError> {
    repair::capture_unconnected(dup)
        .map(|u| SocketState::TcpUnconnected(Box::new(u)))
        .map_err(repair_err(pid, fd))
}

/// Captures TCP socket `dup` (fd `fd` of `pid`), a connection or closed after one, to come
/// back closed (`--tcp-close`).
pub(super) fn capture_closed(
    pid: Pid,
    fd: RawFd,
    dup: BorrowedFd<'_>,
) -> Result<SocketState, SocketError> {
    repair::capture_closed(dup)
        .map(|u| SocketState::TcpUnconnected(Box::new(u)))
        .map_err(repair_err(pid, fd))
}

/// Captures TCP socket `dup` (fd `fd` of `pid`) connecting to `remote` (SYN_SENT).
pub(super) fn capture_connecting(
    pid: Pid,
    fd: RawFd,
    dup: BorrowedFd<'_>,
    remote: SocketAddr,
) -> Result<SocketState, SocketError> {
    repair::capture_connecting(dup, remote)
        .map(|c| SocketState::TcpConnecting(Box::new(c)))
        .map_err(repair_err(pid, fd))
}

/// Connect in progress `c` made again: a new SYN from the same port.
pub(super) fn restore_connecting(
    desc: &FileDesc,
    c: &repair::ConnectingState,
) -> Result<OwnedFd, SocketError> {
    repair::restore_connecting(c).map_err(|e| restore_err(desc, "restore socket", e))
}

/// Socket `u` made again: unbound, bound, or as its reported failed connect left it.
pub(super) fn restore_unconnected(
    desc: &FileDesc,
    u: &repair::UnconnectedState,
) -> Result<OwnedFd, SocketError> {
    repair::restore_unconnected(u).map_err(|e| restore_err(desc, "restore socket", e))
}

/// A socket neither listening nor connected in words.
pub(super) fn describe_unconnected(u: &repair::UnconnectedState) -> String {
    if u.closed_at_dump {
        return format!("tcp {} closed (--tcp-close)", u.local);
    }
    match (u.bound, u.local.port()) {
        (true, _) => format!("tcp bound to {} (not listening)", u.local),
        (false, 0) if u.local.ip().is_unspecified() => "tcp not bound".into(),
        (false, 0) => format!("tcp bound to {} without a port", u.local.ip()),
        (false, _) => format!("tcp not connected, {} left by a failed connect", u.local),
    }
}

/// Captures TCP connections (the network lock installed, the owner frozen) on up to one
/// thread per core, returning each result in the order given. A connection captured leaves
/// repair mode at once, quietly (the lock drops what it would send), and comes back with its
/// [`Held`]: a dump that kills its process puts it back in repair mode just before the kill
/// (DumpSockets::silence_before_kill). Out of repair mode meanwhile, it is as the process
/// left it should cryo die (a blocking read resumed in repair mode fails EPERM). One that
/// fails is put back as it was.
pub(super) fn capture_connections(
    pid: Pid,
    pidfd: BorrowedFd<'_>,
    connections: Vec<FoundConnection>,
) -> Vec<Result<(Held, Socket), SocketError>> {
    /// Below this many, a thread costs more than it saves.
    const PER_THREAD_MIN: usize = 256;
    let capture_one = |f: &FoundConnection| -> Result<(Held, Socket), SocketError> {
        let fd = f.fd;
        let dup = socket_dup(pid, pidfd, fd)?;
        let bad = repair_err(pid, fd);
        let repair = if f.reset {
            Repair::enter_reset(dup.as_fd(), f.name)
        } else if f.closed {
            Repair::enter_closed(dup.as_fd(), f.name)
        } else {
            Repair::enter_named(dup.as_fd(), f.name)
        }
        .map_err(bad)?;
        let state = repair.capture().map_err(bad)?;
        // Out of repair mode, SO_REUSEADDR as it was.
        drop(repair);
        let held = Held {
            fd,
            local: state.local,
            remote: state.remote,
            reuse_addr: state.socket.reuse_addr,
            in_repair: false,
        };
        let state = SocketState::Connection(Box::new(state));
        Ok((held, socket_record(f.ino, f.family, &state)))
    };
    crate::parallel::map_on_cores(&connections, PER_THREAD_MIN, capture_one).unwrap_or_else(|| {
        vec![Err(SocketError::Panicked {
            pid,
            pass: "capturing connections",
        })]
    })
}

/// Captures listener `dup` (fd `fd` of `pid`). Connections waiting in its accept queue
/// refuse it (a temporary state), or with `skip_in_flight` are left out: they stay in the
/// original's queue, reset when the dump kills it (a `--leave-running` dump leaves them be).
pub(super) fn capture_listener(
    pid: Pid,
    fd: RawFd,
    dup: BorrowedFd<'_>,
    skip_in_flight: bool,
) -> Result<SocketState, SocketError> {
    let in_flight = if skip_in_flight {
        InFlight::Skip
    } else {
        InFlight::Refuse
    };
    let l = repair::capture_listener(dup, in_flight).map_err(repair_err(pid, fd))?;
    if l.dropped_pending > 0 {
        tracing::warn!(
            pid = pid.as_raw(),
            fd,
            local = %l.local,
            skipped = l.dropped_pending,
            "listener dumped without the connections waiting in its accept queue \
             (--skip-in-flight): they are reset when the process is killed"
        );
    }
    Ok(SocketState::Listener(l))
}

/// A connection in words, for messages and `cryo show`.
pub(super) fn describe_connection(c: &TcpConnectionState) -> String {
    if c.state == repair::TcpState::Close && c.reset_error != 0 {
        return format!(
            "tcp {} -> {} (reset by its peer, {} not read yet, {} bytes to read)",
            c.local,
            c.remote,
            if c.reset_error == libc::EPIPE {
                "EPIPE"
            } else {
                "ECONNRESET"
            },
            c.recv_queue.len()
        );
    }
    if c.state == repair::TcpState::Close {
        return format!(
            "tcp {} -> {} (closed at both ends, {} bytes to read)",
            c.local,
            c.remote,
            c.recv_queue.len()
        );
    }
    format!(
        "tcp {} -> {} ({:?}, {} bytes to send, {} to read)",
        c.local,
        c.remote,
        c.state,
        c.send_queue_len(),
        c.recv_queue.len()
    )
}

/// Listener `l` listening again.
pub(super) fn restore_listener(desc: &FileDesc, l: &ListenerState) -> Result<OwnedFd, SocketError> {
    repair::restore_listener(l, DEFAULT_BACKLOG).map_err(|e| restore_err(desc, "restore socket", e))
}

/// Connection `c` back from repair mode, quietly; with `tcp_close`, closed as CRIU does
/// (TCP_CLOSE, shut both ways: reads return EOF, poll reports POLLHUP, nothing sent).
pub(super) fn restore_connection(
    desc: &FileDesc,
    c: &TcpConnectionState,
    tcp_close: bool,
) -> Result<OwnedFd, SocketError> {
    let fail = |e| restore_err(desc, "restore socket", e);
    let restored = repair::restore(c).map_err(fail)?;
    // Still in repair mode: from here on, whatever ends the restore closes it silently.
    crate::restore::guardian::entrust(restored.as_fd())
        .map_err(|e| restore_err(desc, "hand the socket to the restore guardian", e))?;
    // Closed at both ends already: as it was, with or without --tcp-close.
    if tcp_close && c.state != repair::TcpState::Close {
        return restored
            .finish_closed()
            .map_err(|e| restore_err(desc, "--tcp-close", e));
    }
    restored.finish_quiet().map_err(fail)
}

/// How the live connection `live` differs from the image's record of it, if it does: the
/// bytes exchanged since the dump (sequence numbers, queues) or its state. Options and timers
/// may differ: only what the peer has seen matters for restoring the image against it.
pub(crate) fn connection_moved(live: &Socket, image: &Socket) -> Option<String> {
    let decode = |s: &Socket| match SocketState::try_from(s) {
        Ok(SocketState::Connection(c)) => Some(c),
        _ => None,
    };
    let (Some(now), Some(then)) = (decode(live), decode(image)) else {
        return Some("its state cannot be read".into());
    };
    let was = |what: &str, a: &dyn std::fmt::Display, b: &dyn std::fmt::Display| {
        Some(format!("{what} was {b} in the image, is {a} now"))
    };
    if now.state != then.state {
        return was(
            "state",
            &format!("{:?}", now.state),
            &format!("{:?}", then.state),
        );
    }
    if now.send_seq != then.send_seq || now.send_queue_len() != then.send_queue_len() {
        return was(
            "the send side (first unacknowledged byte, queued bytes)",
            &format!("({}, {})", now.send_seq, now.send_queue_len()),
            &format!("({}, {})", then.send_seq, then.send_queue_len()),
        );
    }
    if now.recv_seq != then.recv_seq || now.recv_queue != then.recv_queue {
        return was(
            "the receive side (next byte to read, unread bytes)",
            &format!("({}, {})", now.recv_seq, now.recv_queue.len()),
            &format!("({}, {})", then.recv_seq, then.recv_queue.len()),
        );
    }
    None
}

/// The remote address of TCP socket `ino` as /proc/PID/net/tcp{,6} lists it.
fn proc_net_peer(pid: Pid, ino: u64) -> Option<SocketAddr> {
    proc_net_entry(&pid.to_string(), ino, &[("tcp", false), ("tcp6", true)])
        .map(|(remote, _)| remote)
}

/// The remote address and state ("st") of socket `ino` in the first of the tables
/// /proc/AT/net/NAME (IPv6 or not) that lists it (`at`: a pid, or "thread-self" on a thread
/// in the socket's network namespace).
pub(super) fn proc_net_entry(
    at: &str,
    ino: u64,
    tables: &[(&str, bool)],
) -> Option<(SocketAddr, u8)> {
    for &(file, v6) in tables {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{at}/net/{file}")) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.get(9).and_then(|i| i.parse::<u64>().ok()) != Some(ino) {
                continue;
            }
            let state = u8::from_str_radix(f.get(3)?, 16).ok()?;
            return Some((parse_proc_addr(f.get(2)?, v6)?, state));
        }
    }
    None
}

/// "0100007F:1F90" (IPv4) or 32 hex digits (IPv6), each 32-bit word in host order.
fn parse_proc_addr(text: &str, v6: bool) -> Option<SocketAddr> {
    let (host, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words: Vec<u32> = (0..host.len() / 8)
        .map(|i| u32::from_str_radix(&host[i * 8..i * 8 + 8], 16).map(u32::from_be))
        .collect::<Result<_, _>>()
        .ok()?;
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_be_bytes()).collect();
    let ip: std::net::IpAddr = if v6 {
        <[u8; 16]>::try_from(bytes.as_slice()).ok()?.into()
    } else {
        <[u8; 4]>::try_from(bytes.as_slice()).ok()?.into()
    };
    Some(SocketAddr::new(ip, port))
}

/// Refuses a TCP socket holding MD5 signature keys (TCP_MD5SIG, RFC 2385: BGP sessions): no
/// getsockopt gives them back, so its restored copy would sign nothing and its peer drop
/// every segment. inet_diag lists them: asked once per network namespace holding a TCP socket
/// of the dump, in that namespace.
pub(super) fn refuse_md5_keys(identified: &[super::Identified]) -> Result<(), FileError> {
    let mut keyed_in: std::collections::HashMap<Option<u64>, std::collections::HashSet<u64>> =
        std::collections::HashMap::new();
    for task in identified {
        let tcp = task.found.iter().filter(|f| {
            matches!(
                f.kind,
                Found::Connection(..)
                    | Found::ClosedConnection(..)
                    | Found::Listener
                    | Found::TcpUnconnected
                    | Found::Connecting(..)
            )
        });
        for f in tcp {
            // A socket of another namespace than its task's is listed in its own (home.rs).
            let ns = f.foreign.as_ref().map_or(task.netns, |h| Some(h.inode));
            let keyed = match keyed_in.entry(ns) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    let (pid, fd) = (task.pid, f.fd);
                    let ask = || -> Result<_, FileError> {
                        repair::md5_keyed_sockets().map_err(|source| {
                            SocketError::Sys {
                                pid,
                                fd,
                                step: "inet_diag dump (TCP MD5 signature keys)",
                                source,
                            }
                            .into()
                        })
                    };
                    let keyed = match &f.foreign {
                        Some(h) => h.run_in(pid, fd, ask)??,
                        None => super::in_netns_of(pid, ask)?,
                    };
                    e.insert(keyed)
                }
            };
            if keyed.contains(&f.ino) {
                return Err(SocketError::FamilyRefused {
                    pid: task.pid,
                    fd: f.fd,
                    family: "TCP",
                    ino: f.ino,
                    what: "holds TCP MD5 signature keys (TCP_MD5SIG), which cannot be read back: \
                           not restored"
                        .into(),
                }
                .into());
            }
        }
    }
    Ok(())
}
