//! Sockets of a task: TCP connections (TCP_REPAIR, through cryo-tcp-repair), TCP listeners,
//! UDP sockets and unix sockets (through cryo-unix-sockets). Other families are refused.
//!
//! Unix sockets: each end is one record (kind `Unix`, `peer_ino` naming the other end); its
//! receive queue is captured without consuming it (one entry per message, so seqpacket and
//! dgram boundaries are kept) with its options. A peer no dumped process holds is refused
//! ([`check_unix_peers`]), or with `--ext-unix-sk` recorded as external: the socket comes back
//! broken (one end of a socketpair whose other end is closed: its queue, then EOF). At restore, whichever process creates the first end of a pair makes
//! both with socketpair() and refills each end's queue from the other.
//!
//! What a queue carries beyond bytes (descriptors in flight, the connections waiting in a
//! listener's accept queue and what their clients sent) is noted here per task and resolved
//! across the dump by `in_flight`; sockets made together at restore are `unix_groups`' job.
//!
//! ```text
//! dump (task frozen), before the file table is built:
//!   /proc/PID/fd/N = socket:[INO]  pidfd_getfd -> a duplicate (the same socket)
//!   SO_DOMAIN/SO_TYPE/SO_PROTOCOL, TCP_INFO state   -> connection | listener | udp | refused
//!   network lock installed over every connection's 4-tuple (one nftables batch)
//!   connections: Repair::enter + capture, then HELD in repair mode (duplicate kept open)
//!   listeners: capture_listener, udp: capture_udp
//!   -> one `Socket` record per inode (kind + serde_json of the tcp-repair state)
//! end of dump:
//!   killed:          the task dies, then the held duplicates are closed in repair mode:
//!                    nothing is sent; the lock stays (its id goes in the inventory)
//!   left running /   repair left quietly (TCP_REPAIR_OFF_NO_WP), lock released
//!   failed:
//! restore (in the child, before the fds are placed):
//!   listeners, then connections (restore + finish_quiet, or closed with --tcp-close), then udp
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};

use cryo_netns::{ConnTuple, NetworkLock};
use cryo_proto::image::{FileDesc, Socket, SocketKind};
use cryo_tcp_repair::{
    self as tcp, InFlight, ListenerState, Repair, TcpConnectionState, UdpSocketState,
};
use nix::fcntl::{FcntlArg, OFlag};
use nix::unistd::Pid;
use socket2::SockRef;
use tracing::{debug, warn};

use cryo_unix_sockets as unix;
use serde::{Deserialize, Serialize};

use super::inspect::{self, InodeKey, OpenFd};
use super::{sys, FileError};

// The segments tcp-repair injects on restore (the peer's FIN of a half-closed connection)
// must get through the network lock, which is still held then.
const _: () = assert!(cryo_tcp_repair::INJECT_MARK == cryo_netns::BYPASS_MARK);

/// How sockets are dumped.
#[derive(Debug, Clone, Default)]
pub struct SocketDumpOptions {
    /// Capture established TCP connections (otherwise a dump meeting one is refused).
    pub tcp_established: bool,
    /// The id of the network lock to install over the connections.
    pub lock_id: String,
}

/// A connection captured and left in repair mode, known by its fd in the task: when the task
/// is killed, its socket closes in repair mode and sends nothing. No duplicate is kept (a
/// server with 10,000 connections would double cryo's fds); leaving repair mode (dump failed
/// or --leave-running) takes a fresh duplicate.
#[derive(Debug)]
struct Held {
    fd: RawFd,
    local: SocketAddr,
    remote: SocketAddr,
}

/// The sockets of a frozen task, captured before its file table is built.
///
/// Dropping it without [`finish_killed`](Self::finish_killed) (a failed dump) or with
/// [`finish_running`](Self::finish_running) puts every held connection back as it was and
/// releases the network lock.
#[derive(Debug, Default)]
pub struct SocketDump {
    records: HashMap<u64, Socket>,
    /// Unix sockets with a peer: (pid, fd, inode, peer inode), checked across the dump.
    unix_peers: Vec<(Pid, RawFd, u64, u64)>,
    /// Descriptors in flight (SCM_RIGHTS) in the queues captured: duplicates the peek
    /// installed in cryo, resolved into descriptions once every task's fds are dumped.
    pub(super) in_flight: Vec<InFlightFds>,
    /// Listeners with connections waiting in their accept queue.
    pub(super) accept_queues: Vec<AcceptQueue>,
    /// Connected stream/seqpacket unix sockets without a peer inode (pid, fd, inode): clients
    /// waiting in a listener's accept queue, to be found in a dumped listener's.
    pub(super) awaiting_accept: Vec<(Pid, RawFd, u64)>,
    /// Held open until the dump ends: duplicates of descriptors in flight (later descriptions
    /// are compared against them with kcmp) and connections accepted out of a listener's queue
    /// (closing them early would tell their clients).
    pub(super) kept: Vec<OwnedFd>,
    held: Vec<Held>,
    pidfd: Option<OwnedFd>,
    lock: Option<NetworkLock>,
    /// Every socket fd of the task (several may share one socket), with its inode.
    socket_fds: HashMap<RawFd, InodeKey>,
}

/// What one socket fd is.
enum Found {
    Connection(SocketAddr, SocketAddr),
    Listener,
    Udp,
    Unix,
}

/// `SocketKind::Unix` as stored in a `Socket` record.
pub const UNIX_KIND: i32 = SocketKind::Unix as i32;

/// The state of one unix socket (serde_json in its `Socket` record).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UnixSocketState {
    /// SOCK_STREAM, SOCK_DGRAM or SOCK_SEQPACKET.
    pub sock_type: i32,
    /// Listening (bound to `name`, with `backlog`).
    pub listening: bool,
    /// The listen() backlog.
    pub backlog: u32,
    /// The bound name as sun_path bytes (empty: unnamed; leading NUL: abstract).
    pub name: Vec<u8>,
    /// The socket file's mode, owner and group (bound to a path).
    pub file_attrs: Option<(u32, u32, u32)>,
    /// Shutdown state (read, write).
    pub shutdown: (bool, bool),
    /// Unread data, one entry per message (stream: per chunk), in order.
    pub queue: Vec<UnixMessage>,
    /// SO_PASSCRED.
    pub passcred: bool,
    /// SO_SNDBUF and SO_RCVBUF as getsockopt reads them.
    pub sndbuf: i32,
    /// See `sndbuf`.
    pub rcvbuf: i32,
    /// SO_PEEK_OFF (-1: disabled).
    pub peek_off: i32,
    /// A listener: the connections waiting in its accept queue, in queue order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<PendingConnection>,
}

/// One message of a unix socket's receive queue.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UnixMessage {
    /// Its bytes.
    pub data: Vec<u8>,
    /// SCM_CREDENTIALS (pid, uid, gid), when they were attached.
    pub creds: Option<(i32, u32, u32)>,
    /// Descriptors in flight with it (SCM_RIGHTS), in order: ids of descriptions of files.img
    /// (the same id as a task's fd when a task holds the same description).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fds: Vec<u32>,
}

impl UnixMessage {
    /// The message as cryo-unix-sockets sends it, with `fds` (its descriptions, open here).
    pub(super) fn to_queued(&self, fds: Vec<OwnedFd>) -> unix::QueuedMessage {
        unix::QueuedMessage {
            data: self.data.clone(),
            fds,
            creds: self
                .creds
                .map(|(pid, uid, gid)| unix::Creds { pid, uid, gid }),
            sender: unix::UnixName::Unnamed,
        }
    }
}

/// A connection waiting in a listener's accept queue (not accepted yet).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingConnection {
    /// The client socket (connected, held by a dumped process or in flight).
    pub client_ino: u64,
    /// What the client sent before being accepted (the embryo's queue), in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queue: Vec<UnixMessage>,
}

/// Descriptors in flight in one message of a captured queue (duplicates installed in cryo).
#[derive(Debug)]
pub(super) struct InFlightFds {
    /// The task holding the socket (cryo itself for a socket that is in flight too).
    pub pid: Pid,
    /// Its fd there.
    pub fd: RawFd,
    /// The socket whose queue holds the message.
    pub ino: u64,
    /// The waiting connection whose queue it is (index in `pending`), or `None`: the
    /// socket's own queue.
    pub pending: Option<usize>,
    /// The message's index in that queue.
    pub message: usize,
    /// The descriptors, in order.
    pub fds: Vec<OwnedFd>,
}

/// A dumped listener with connections waiting in its accept queue.
#[derive(Debug, Clone)]
pub(super) struct AcceptQueue {
    /// The task holding it.
    pub pid: Pid,
    /// Its fd there.
    pub fd: RawFd,
    /// The listener.
    pub ino: u64,
    /// Each waiting client in queue order: its inode and the bytes it sent before being
    /// accepted (sock_diag's count of its unread output).
    pub clients: Vec<(u64, u32)>,
}

/// The messages of a captured queue and the descriptors in flight in them, by message index.
pub(super) type Messages = (Vec<UnixMessage>, Vec<(usize, Vec<OwnedFd>)>);

/// Splits a captured queue into its messages and the descriptors they carry.
pub(super) fn split_queue(q: unix::CapturedQueue) -> Messages {
    let mut fds = Vec::new();
    let messages = q
        .messages
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            if !m.fds.is_empty() {
                fds.push((i, m.fds));
            }
            UnixMessage {
                data: m.data,
                creds: m.creds.map(|c| (c.pid, c.uid, c.gid)),
                fds: Vec::new(),
            }
        })
        .collect();
    (messages, fds)
}

impl UnixSocketState {
    pub(super) fn sock_type(&self) -> Result<unix::SockType, String> {
        unix::SockType::from_raw(self.sock_type)
            .ok_or_else(|| format!("unix socket of type {}", self.sock_type))
    }

    pub(super) fn name(&self) -> unix::UnixName {
        unix::UnixName::from_sun_path(&self.name)
    }

    /// The socket file's mode and owner (bound to a path).
    pub(super) fn attrs(&self) -> Option<unix::restore::SocketFileAttrs> {
        self.file_attrs
            .map(|(mode, uid, gid)| unix::restore::SocketFileAttrs { mode, uid, gid })
    }

    pub(super) fn shutdown(&self) -> unix::Shutdown {
        unix::Shutdown {
            read: self.shutdown.0,
            write: self.shutdown.1,
        }
    }

    /// The queue without its descriptors in flight (`unix_groups` sends those).
    fn captured(&self) -> Result<unix::CapturedQueue, String> {
        Ok(unix::CapturedQueue {
            sock_type: self.sock_type()?,
            messages: self.queue.iter().map(|m| m.to_queued(Vec::new())).collect(),
            pending_error: None,
        })
    }

    /// The ids of every description in flight in its queues (its own, its waiting
    /// connections').
    pub(super) fn carried(&self) -> impl Iterator<Item = u32> + '_ {
        self.queue
            .iter()
            .chain(self.pending.iter().flat_map(|p| &p.queue))
            .flat_map(|m| m.fds.iter().copied())
    }

    pub(super) fn options(&self) -> unix::restore::SockOptions {
        unix::restore::SockOptions {
            passcred: self.passcred,
            sndbuf: self.sndbuf,
            rcvbuf: self.rcvbuf,
            peek_off: self.peek_off,
        }
    }
}

/// What [`capture_unix`] found beyond the state.
pub(super) struct UnixCapture {
    /// The state.
    pub state: UnixSocketState,
    /// The peer inode (0: none).
    pub peer: u64,
    /// Descriptors in flight in its queue, by message index.
    pub in_flight: Vec<(usize, Vec<OwnedFd>)>,
    /// A listener: its waiting clients (inode, bytes each sent before being accepted).
    pub waiting: Vec<(u64, u32)>,
    /// Connected (stream or seqpacket) without a peer inode and not shut down: a client
    /// waiting in some listener's accept queue.
    pub awaiting_accept: bool,
}

/// Captures unix socket `ino` of `pid` (its duplicate `dup`): diag, queue (with the
/// descriptors in flight, duplicated into cryo), options, accept queue.
pub(super) fn capture_unix(
    pid: Pid,
    fd: RawFd,
    ino: u64,
    dup: BorrowedFd<'_>,
    diag: &mut Option<unix::DiagSocket>,
) -> Result<UnixCapture, FileError> {
    let bad = |detail: String| FileError::Socket { pid, fd, detail };
    if diag.is_none() {
        *diag = Some(unix::DiagSocket::new().map_err(|e| bad(format!("sock_diag: {e}")))?);
    }
    let diag = diag.as_mut().expect("set above");
    let inode = u32::try_from(ino).map_err(|_| bad(format!("socket inode {ino} above 2^32")))?;
    let info = diag
        .query(inode)
        .map_err(|e| bad(format!("sock_diag query of socket:[{ino}]: {e}")))?
        .ok_or_else(|| bad(format!("unix socket socket:[{ino}] unknown to sock_diag")))?;
    let not_yet = |what: &str| {
        bad(format!(
            "unix socket socket:[{ino}]: {what}: not supported yet"
        ))
    };
    let listening = info.state == unix::SockState::Listen;
    if info.state == unix::SockState::Connecting {
        return Err(not_yet("connect in progress"));
    }
    // A waiting client's unread output is what it sent the embryo: counted here, captured
    // (by accepting) only by a dump that ends the listener's owner.
    let mut waiting = Vec::with_capacity(info.pending.len());
    for &client in &info.pending {
        let sent = diag
            .query(client)
            .map_err(|e| bad(format!("sock_diag query of socket:[{client}]: {e}")))?
            .map_or(0, |c| c.wqueue);
        waiting.push((u64::from(client), sent));
    }
    let (queue, in_flight) = if listening {
        (Vec::new(), Vec::new())
    } else {
        let q = unix::capture_queue(dup)
            .map_err(|e| bad(format!("capture the queue of socket:[{ino}]: {e}")))?;
        split_queue(q)
    };
    let awaiting_accept = info.state == unix::SockState::Established
        && info.peer.is_none()
        && info.sock_type != unix::SockType::Dgram
        && !(info.shutdown.read && info.shutdown.write);
    let opts = unix::restore::read_options(dup)
        .map_err(|e| bad(format!("options of socket:[{ino}]: {e}")))?;
    let file_attrs = match &info.name {
        unix::UnixName::Path(p) if info.peer.is_none() => {
            unix::restore::SocketFileAttrs::of_path(p)
                .ok()
                .map(|a| (a.mode, a.uid, a.gid))
        }
        _ => None,
    };
    let state = UnixSocketState {
        sock_type: info.sock_type.raw(),
        listening,
        backlog: if listening { info.wqueue } else { 0 },
        name: info.name.to_sun_path(),
        file_attrs,
        shutdown: (info.shutdown.read, info.shutdown.write),
        queue,
        passcred: opts.passcred,
        sndbuf: opts.sndbuf,
        rcvbuf: opts.rcvbuf,
        peek_off: opts.peek_off,
        pending: waiting
            .iter()
            .map(|&(client_ino, _)| PendingConnection {
                client_ino,
                queue: Vec::new(),
            })
            .collect(),
    };
    Ok(UnixCapture {
        state,
        peer: info.peer.map_or(0, u64::from),
        in_flight,
        waiting,
        awaiting_accept,
    })
}

/// A unix socket whose peer no dumped process holds, accepted with `--ext-unix-sk`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalPeer {
    /// The dumped socket's inode.
    pub ino: u64,
    /// The peer's bound name as sock_diag shows it (empty: unnamed or unknown).
    pub peer_name: String,
}

/// Every unix socket with a peer must find it among the sockets of the dump, connected back
/// to it. Refuses naming pid, fd, inode and the peer otherwise; with `allow_external`
/// (`--ext-unix-sk`) a peer outside the dump is accepted instead and returned: the socket is
/// restored broken.
pub fn check_unix_peers(
    dumps: &[SocketDump],
    allow_external: bool,
) -> Result<Vec<ExternalPeer>, FileError> {
    let mut peer_of: HashMap<u64, u64> = HashMap::new();
    for d in dumps {
        for (ino, rec) in &d.records {
            if rec.kind == SocketKind::Unix as i32 {
                peer_of.insert(*ino, rec.peer_ino);
            }
        }
    }
    let mut external = Vec::new();
    for d in dumps {
        for &(pid, fd, ino, peer) in &d.unix_peers {
            match peer_of.get(&peer) {
                Some(&back) if back == ino => {}
                Some(_) => {
                    return Err(FileError::Socket {
                        pid,
                        fd,
                        detail: format!(
                            "unix socket socket:[{ino}] sends to socket:[{peer}], which is not \
                             connected back (one-way dgram): not supported yet"
                        ),
                    })
                }
                None => {
                    let name = unix::query_inode(peer as u32)
                        .ok()
                        .flatten()
                        .map(|i| i.name);
                    if allow_external {
                        debug!(%pid, fd, ino, peer, "unix peer outside the dump: restored broken");
                        external.push(ExternalPeer {
                            ino,
                            peer_name: name
                                .filter(unix::UnixName::is_bound)
                                .map(|n| n.to_string())
                                .unwrap_or_default(),
                        });
                        continue;
                    }
                    return Err(FileError::Socket {
                        pid,
                        fd,
                        detail: format!(
                            "unix socket socket:[{ino}] is connected to socket:[{peer}] {}, \
                             which no dumped process holds (external peer: dump with \
                             --ext-unix-sk to restore it as a broken connection)",
                            name.map_or("(unknown)".to_string(), |n| n.to_string())
                        ),
                    });
                }
            }
        }
    }
    Ok(external)
}

/// One socket of the task, identified: its fd, inode, address family and kind.
struct FoundSocket {
    fd: RawFd,
    ino: u64,
    family: u32,
    kind: Found,
}

/// A duplicate of socket fd `fd` of `pid`, to capture it through.
fn socket_dup(pid: Pid, pidfd: BorrowedFd<'_>, fd: RawFd) -> Result<OwnedFd, FileError> {
    sys::pidfd_getfd(pidfd, fd).map_err(|e| FileError::Socket {
        pid,
        fd,
        detail: format!("pidfd_getfd: {e}"),
    })
}

/// Maps a capture error of socket fd `fd` of `pid` to this crate's error.
fn repair_err(pid: Pid, fd: RawFd) -> impl Fn(tcp::TcpRepairError) -> FileError + Copy {
    move |e| FileError::Socket {
        pid,
        fd,
        detail: e.to_string(),
    }
}

/// A socket record as the capture makes it (its peer, for unix sockets, comes later).
fn socket_record(ino: u64, kind: SocketKind, family: u32, state_json: Vec<u8>) -> Socket {
    Socket {
        ino,
        kind: kind as i32,
        family,
        state_json,
        peer_ino: 0,
        ..Socket::default()
    }
}

/// Captures TCP connections (the network lock installed, the owner frozen) on up to one
/// thread per core, returning each result in the order given. A connection captured is left
/// in repair mode and comes back with its [`Held`]; one that fails is put back as it was.
fn capture_connections(
    pid: Pid,
    pidfd: BorrowedFd<'_>,
    connections: Vec<FoundConnection>,
) -> Vec<Result<(Held, Socket), FileError>> {
    /// Below this many, a thread costs more than it saves.
    const PER_THREAD_MIN: usize = 256;
    let capture_one = |f: &FoundConnection| -> Result<(Held, Socket), FileError> {
        let fd = f.fd;
        let dup = socket_dup(pid, pidfd, fd)?;
        let bad = repair_err(pid, fd);
        let repair = Repair::enter_named(dup.as_fd(), f.name).map_err(bad)?;
        let state = repair.capture().map_err(bad)?;
        let json = to_json(pid, fd, &state)?;
        repair.hold();
        let held = Held {
            fd,
            local: state.local,
            remote: state.remote,
        };
        Ok((
            held,
            socket_record(f.ino, SocketKind::TcpConnection, f.family, json),
        ))
    };
    crate::parallel::map_on_cores(&connections, PER_THREAD_MIN, capture_one).unwrap_or_else(|| {
        vec![Err(FileError::Socket {
            pid,
            fd: -1,
            detail: "a capture thread panicked".into(),
        })]
    })
}

/// A TCP connection of the task, found and checked, to be captured.
struct FoundConnection {
    fd: RawFd,
    ino: u64,
    family: u32,
    name: tcp::SocketName,
}

/// Fd `fd` of `pid` for error messages: its link is read only then.
fn for_errors(pid: Pid, fd: RawFd) -> OpenFd {
    let link = std::fs::read_link(inspect::proc_fd(pid, fd))
        .map(|l| l.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "?".into());
    OpenFd {
        pid,
        fd,
        link,
        flags: 0,
        cloexec: false,
        pos: 0,
    }
}

/// The socket inode behind `dup` (a duplicate of a task's fd), `None` if it is no socket.
fn socket_inode(dup: BorrowedFd<'_>) -> std::io::Result<Option<InodeKey>> {
    let st = nix::sys::stat::fstat(dup)?;
    Ok(
        (st.st_mode & libc::S_IFMT == libc::S_IFSOCK).then_some(InodeKey {
            dev: st.st_dev,
            ino: st.st_ino,
        }),
    )
}

impl SocketDump {
    /// Finds, checks and captures every socket of the frozen task `pid`: refusals first
    /// (nothing is touched if any socket cannot be dumped), then the network lock over the
    /// connections, then the captures.
    ///
    /// Per fd: a duplicate (pidfd_getfd) and its fstat (no /proc lookup: a readlink of
    /// /proc/PID/fd/N costs more than both); a socket is identified on that duplicate, closed
    /// at once, and captured on a second one after the lock is installed (keeping the first
    /// would double cryo's fds); thousands of fds are spread over the cores. The fd's flags
    /// are the file table's business.
    pub fn collect(pid: Pid, opts: &SocketDumpOptions) -> Result<SocketDump, FileError> {
        /// Below this many fds, a thread costs more than it saves.
        const PER_THREAD_MIN: usize = 512;
        let fds = inspect::list_fds(pid)?;
        let Some(&first_fd) = fds.first() else {
            return Ok(SocketDump::default());
        };
        let pidfd = sys::pidfd_open(pid).map_err(|e| {
            for_errors(pid, first_fd).inspect_err("pidfd_open", format!("/proc/{pid}").into(), e)
        })?;
        // Each fd on its own (a server has thousands): duplicated, checked for a socket and,
        // if it is one, identified, on every core.
        let identify_fd = |&fd: &RawFd| -> Result<Option<(InodeKey, u32, Found)>, FileError> {
            let dup = match sys::pidfd_getfd(pidfd.as_fd(), fd) {
                Ok(dup) => dup,
                Err(e) => {
                    // Not this module's business unless it is a socket.
                    let open = for_errors(pid, fd);
                    if !open.link.starts_with("socket:[") {
                        return Ok(None);
                    }
                    return Err(open.inspect_err("pidfd_getfd", open.proc_path(), e));
                }
            };
            let inode = socket_inode(dup.as_fd()).map_err(|e| {
                let open = for_errors(pid, fd);
                open.inspect_err("fstat", open.proc_path(), e)
            })?;
            let Some(inode) = inode else {
                return Ok(None);
            };
            let (family, kind) = identify(pid, fd, dup.as_fd(), inode.ino, opts)?;
            Ok(Some((inode, family, kind)))
        };
        let identified = crate::parallel::map_on_cores(&fds, PER_THREAD_MIN, identify_fd)
            .ok_or_else(|| FileError::Socket {
                pid,
                fd: -1,
                detail: "a thread identifying sockets panicked".into(),
            })?;
        let mut found: Vec<FoundSocket> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut socket_fds = HashMap::new();
        for (&fd, identified) in fds.iter().zip(identified) {
            let Some((inode, family, kind)) = identified? else {
                continue;
            };
            socket_fds.insert(fd, inode);
            if seen.insert(inode.ino) {
                found.push(FoundSocket {
                    fd,
                    ino: inode.ino,
                    family,
                    kind,
                });
            }
        }
        let mut out = SocketDump::default();
        out.records.reserve(found.len());
        out.socket_fds = socket_fds;
        let mut diag = None;
        let tuples: Vec<ConnTuple> = found
            .iter()
            .filter_map(|f| match f.kind {
                Found::Connection(l, r) => Some(ConnTuple::new(l, r)),
                _ => None,
            })
            .collect();
        if !tuples.is_empty() {
            let lock = NetworkLock::install(&opts.lock_id, &tuples)
                .map_err(|source| FileError::NetworkLock { pid, source })?;
            debug!(
                id = opts.lock_id,
                conns = tuples.len(),
                "network lock installed"
            );
            out.lock = Some(lock);
            out.held.reserve(tuples.len());
        }
        // Connections are captured on every core: each costs some 40 syscalls and none
        // depends on another. The rest (listeners, UDP, unix) is captured here in order.
        let mut connections = Vec::new();
        let mut others = Vec::new();
        for f in found {
            match f.kind {
                Found::Connection(local, remote) => connections.push(FoundConnection {
                    fd: f.fd,
                    ino: f.ino,
                    family: f.family,
                    name: tcp::SocketName::new(Some(local), Some(remote)),
                }),
                _ => others.push(f),
            }
        }
        // Kept in `out` from here on: dropping it on an error puts the captured back.
        let captured = capture_connections(pid, out.pidfd.insert(pidfd).as_fd(), connections);
        let mut first_err = None;
        for captured in captured {
            match captured {
                Ok((held, rec)) => {
                    out.held.push(held);
                    out.records.insert(rec.ino, rec);
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        // Captured connections stay held in `out`: dropping it on error puts them back.
        if let Some(e) = first_err {
            return Err(e);
        }
        for FoundSocket {
            fd,
            ino,
            family,
            kind,
        } in others
        {
            let pidfd = out.pidfd.as_ref().expect("set before the captures");
            let dup = socket_dup(pid, pidfd.as_fd(), fd)?;
            let bad = repair_err(pid, fd);
            let (kind, json) = match kind {
                Found::Unix => {
                    out.record_unix(pid, fd, ino, family, dup.as_fd(), &mut diag)?;
                    continue;
                }
                // Split out and captured above.
                Found::Connection(..) => continue,
                Found::Listener => {
                    let state =
                        tcp::capture_listener(dup.as_fd(), InFlight::Refuse).map_err(bad)?;
                    (SocketKind::TcpListener, to_json(pid, fd, &state)?)
                }
                Found::Udp => {
                    let state = tcp::capture_udp(dup.as_fd()).map_err(bad)?;
                    (SocketKind::Udp, to_json(pid, fd, &state)?)
                }
            };
            out.records
                .insert(ino, socket_record(ino, kind, family, json));
        }
        debug!(
            sockets = out.records.len(),
            held = out.held.len(),
            "sockets captured"
        );
        Ok(out)
    }

    /// True if fd `fd` of the task is a socket.
    pub fn is_socket_fd(&self, fd: RawFd) -> bool {
        self.socket_fds.contains_key(&fd)
    }

    /// Every socket fd of the task, with the inode behind it.
    pub(super) fn socket_fds(&self) -> &HashMap<RawFd, InodeKey> {
        &self.socket_fds
    }

    /// The records captured, by socket inode.
    pub(super) fn records(&self) -> impl Iterator<Item = (u64, &Socket)> {
        self.records.iter().map(|(&ino, rec)| (ino, rec))
    }

    /// Captures unix socket `ino` (fd `fd` of `pid`, duplicated as `dup`) and notes what it
    /// holds for the dump-wide passes: its peer, its descriptors in flight, its accept queue.
    pub(super) fn record_unix(
        &mut self,
        pid: Pid,
        fd: RawFd,
        ino: u64,
        family: u32,
        dup: BorrowedFd<'_>,
        diag: &mut Option<unix::DiagSocket>,
    ) -> Result<(), FileError> {
        sys::raise_nofile();
        let c = capture_unix(pid, fd, ino, dup, diag)?;
        if c.peer != 0 {
            self.unix_peers.push((pid, fd, ino, c.peer));
        }
        if c.awaiting_accept {
            self.awaiting_accept.push((pid, fd, ino));
        }
        if !c.waiting.is_empty() {
            self.accept_queues.push(AcceptQueue {
                pid,
                fd,
                ino,
                clients: c.waiting,
            });
        }
        for (message, fds) in c.in_flight {
            self.in_flight.push(InFlightFds {
                pid,
                fd,
                ino,
                pending: None,
                message,
                fds,
            });
        }
        let json = to_json(pid, fd, &c.state)?;
        self.records.insert(
            ino,
            Socket {
                ino,
                kind: SocketKind::Unix as i32,
                family,
                state_json: json,
                peer_ino: c.peer,
                ..Socket::default()
            },
        );
        Ok(())
    }

    /// Whether a record of socket `ino` is here.
    pub(super) fn has_record(&self, ino: u64) -> bool {
        self.records.contains_key(&ino)
    }

    /// Rewrites the state of unix socket `ino` with `change`; returns the new record (`None`
    /// when this dump does not hold it).
    pub(super) fn patch_unix(
        &mut self,
        ino: u64,
        change: impl FnOnce(&mut UnixSocketState) -> Result<(), String>,
    ) -> Result<Option<Socket>, FileError> {
        let Some(rec) = self.records.get_mut(&ino) else {
            return Ok(None);
        };
        let bad = |detail: String| FileError::Dump {
            pid: Pid::from_raw(0),
            fd: -1,
            detail: format!("unix socket socket:[{ino}]: {detail}"),
        };
        let mut state: UnixSocketState = serde_json::from_slice(&rec.state_json)
            .map_err(|e| bad(format!("decode its state: {e}")))?;
        change(&mut state).map_err(bad)?;
        rec.state_json =
            serde_json::to_vec(&state).map_err(|e| bad(format!("encode its state: {e}")))?;
        Ok(Some(rec.clone()))
    }

    /// True when connections were captured (and the network lock installed).
    pub fn has_connections(&self) -> bool {
        !self.held.is_empty()
    }

    /// The task was killed: close the held connections in repair mode (nothing reaches the
    /// peers) and leave the network lock installed for the restore to remove. Returns its id.
    pub fn finish_killed(mut self) -> Option<String> {
        // The task's sockets closed in repair mode: no FIN, no RST.
        self.held.clear();
        self.lock.take().map(NetworkLock::keep)
    }

    /// The task goes on running: leave repair mode quietly and release the lock.
    pub fn finish_running(self) -> Result<(), FileError> {
        drop(self);
        Ok(())
    }
}

impl Drop for SocketDump {
    fn drop(&mut self) {
        for held in self.held.drain(..) {
            let Some(pidfd) = &self.pidfd else { break };
            let left = sys::pidfd_getfd(pidfd.as_fd(), held.fd)
                .map_err(|e| e.to_string())
                .and_then(|dup| tcp::leave_repair(dup.as_fd(), false).map_err(|e| e.to_string()));
            if let Err(e) = left {
                warn!(
                    fd = held.fd,
                    local = %held.local,
                    remote = %held.remote,
                    error = %e,
                    "connection left in repair mode"
                );
            }
        }
        if let Some(mut lock) = self.lock.take() {
            if let Err(e) = lock.release() {
                warn!(lock = lock.id(), error = %e, "network lock not released");
            }
        }
    }
}

fn to_json<T: serde::Serialize>(pid: Pid, fd: RawFd, state: &T) -> Result<Vec<u8>, FileError> {
    serde_json::to_vec(state).map_err(|e| FileError::Socket {
        pid,
        fd,
        detail: format!("encode the socket state: {e}"),
    })
}

/// The remote address of TCP socket `ino` as /proc/PID/net/tcp{,6} lists it.
fn proc_net_peer(pid: Pid, ino: u64) -> Option<SocketAddr> {
    for (file, v6) in [("tcp", false), ("tcp6", true)] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{file}")).ok()?;
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.get(9).and_then(|i| i.parse::<u64>().ok()) != Some(ino) {
                continue;
            }
            return parse_proc_addr(f.get(2)?, v6);
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

/// Decides what a socket is, refusing what cannot be dumped: its address family (what the
/// record stores) and its kind.
fn identify(
    pid: Pid,
    task_fd: RawFd,
    fd: BorrowedFd<'_>,
    ino: u64,
    opts: &SocketDumpOptions,
) -> Result<(u32, Found), FileError> {
    let s = SockRef::from(&fd);
    // The link is read for the messages only.
    let open = || for_errors(pid, task_fd);
    let err = |op: &'static str, e: std::io::Error| {
        let open = open();
        open.inspect_err(op, open.proc_path(), e)
    };
    let domain = i32::from(s.domain().map_err(|e| err("getsockopt SO_DOMAIN", e))?);
    let ty = i32::from(s.r#type().map_err(|e| err("getsockopt SO_TYPE", e))?);
    let proto = s
        .protocol()
        .map_err(|e| err("getsockopt SO_PROTOCOL", e))?
        .map_or(0, i32::from);
    let refuse = |kind: String| open().refuse(kind, true);
    match domain {
        libc::AF_UNIX => return Ok((domain as u32, Found::Unix)),
        libc::AF_INET | libc::AF_INET6 => {}
        libc::AF_NETLINK => return Err(refuse("netlink socket".into())),
        libc::AF_PACKET => return Err(refuse("packet socket".into())),
        other => return Err(refuse(format!("socket of family {other}"))),
    }
    let addr = |a: std::io::Result<socket2::SockAddr>| a.ok().and_then(|a| a.as_socket());
    let kind = match (ty, proto) {
        (libc::SOCK_STREAM, libc::IPPROTO_TCP) => {
            let state = tcp::kernel_tcp_state(fd).map_err(|e| FileError::Socket {
                pid,
                fd: task_fd,
                detail: e.to_string(),
            })?;
            let (local, remote) = (addr(s.local_addr()), addr(s.peer_addr()));
            let tuple = || match (local, remote) {
                (Some(l), Some(r)) => Ok((l, r)),
                _ => Err(open().dump_err("TCP connection without addresses")),
            };
            match state {
                10 => Ok(Found::Listener),
                1 | 4 | 5 | 8 | 9 | 11 => {
                    let (local, remote) = tuple()?;
                    if !opts.tcp_established {
                        return Err(FileError::TcpEstablished {
                            pid,
                            fd: task_fd,
                            local,
                            remote,
                            state: tcp::state_name(state),
                        });
                    }
                    Ok(Found::Connection(local, remote))
                }
                2 | 3 | 12 => {
                    // A connect in progress has no peer address yet (getpeername: ENOTCONN);
                    // the kernel's table of the task's namespace has it.
                    let remote = remote.or_else(|| proc_net_peer(pid, ino));
                    let show = |a: Option<SocketAddr>| a.map_or("?".to_string(), |a| a.to_string());
                    Err(FileError::TcpTemporary {
                        pid,
                        fd: task_fd,
                        local: show(local),
                        remote: show(remote),
                        state: tcp::state_name(state),
                    })
                }
                other => Err(refuse(format!(
                    "TCP socket in state {} (neither listening nor connected)",
                    tcp::state_name(other)
                ))),
            }
        }
        (libc::SOCK_DGRAM, libc::IPPROTO_UDP) => Ok(Found::Udp),
        _ => Err(refuse(format!(
            "inet socket of type {ty} protocol {proto} (raw, sctp...)"
        ))),
    }?;
    Ok((domain as u32, kind))
}

/// A socket record in words, for messages and `cryo show`.
pub fn describe(s: &Socket) -> String {
    match SocketKind::try_from(s.kind) {
        Ok(SocketKind::TcpConnection) => {
            match serde_json::from_slice::<TcpConnectionState>(&s.state_json) {
                Ok(c) => format!(
                    "tcp {} -> {} ({:?}, {} bytes to send, {} to read)",
                    c.local,
                    c.remote,
                    c.state,
                    c.send_queue_len(),
                    c.recv_queue.len()
                ),
                Err(_) => format!("tcp connection socket:[{}] (undecodable state)", s.ino),
            }
        }
        Ok(SocketKind::TcpListener) => match serde_json::from_slice::<ListenerState>(&s.state_json)
        {
            Ok(l) => format!("tcp listening on {}", l.local),
            Err(_) => format!("tcp listener socket:[{}] (undecodable state)", s.ino),
        },
        Ok(SocketKind::Udp) => match serde_json::from_slice::<UdpSocketState>(&s.state_json) {
            Ok(u) => match u.remote {
                Some(r) => format!("udp {} -> {r}", u.local),
                None => format!("udp {}", u.local),
            },
            Err(_) => format!("udp socket:[{}] (undecodable state)", s.ino),
        },
        Ok(SocketKind::Unix) => match serde_json::from_slice::<UnixSocketState>(&s.state_json) {
            Ok(u) => {
                let ty = u.sock_type().unwrap_or(unix::SockType::Stream);
                let bytes: usize = u.queue.iter().map(|m| m.data.len()).sum();
                let mut out = format!("unix {ty:?} socket:[{}]", s.ino);
                if !u.name.is_empty() {
                    out += &format!(" {}", u.name());
                }
                if u.listening {
                    out += " listening";
                }
                if s.peer_ino != 0 {
                    out += &format!(" <-> socket:[{}]", s.peer_ino);
                }
                if !u.pending.is_empty() {
                    out += &format!(" ({} waiting to be accepted)", u.pending.len());
                }
                let carried = u.carried().count();
                if carried > 0 {
                    out += &format!(" ({carried} descriptors in flight)");
                }
                if s.external_peer {
                    out += &format!(" {} outside the dump (restored broken)", s.peer_name);
                }
                out + &format!(" ({} messages, {bytes} bytes to read)", u.queue.len())
            }
            Err(_) => format!("unix socket:[{}] (undecodable state)", s.ino),
        },
        _ => format!("socket:[{}] of unknown kind {}", s.ino, s.kind),
    }
}

/// A decoded socket record, ready to restore.
pub(super) enum Decoded {
    Connection(Box<TcpConnectionState>),
    Listener(ListenerState),
    Udp(UdpSocketState),
    Unix(Box<UnixSocketState>),
    /// A unix socket whose peer was outside the dump (`--ext-unix-sk`): restored broken.
    BrokenUnix(Box<UnixSocketState>),
}

impl Decoded {
    /// Restore order: listeners, then connections (which share the listeners' ports), then
    /// udp.
    pub(super) fn order(&self) -> u8 {
        match self {
            Decoded::Listener(_) => 0,
            Decoded::Connection(_) => 1,
            Decoded::Udp(_) => 2,
            Decoded::Unix(_) | Decoded::BrokenUnix(_) => 3,
        }
    }
}

/// Decodes the state of a socket record (checked at validation, before any process exists).
pub(super) fn decode(desc: &FileDesc, s: &Socket) -> Result<Decoded, FileError> {
    let invalid = |detail: String| FileError::Invalid {
        id: desc.id,
        detail,
    };
    let bad = |e: serde_json::Error| invalid(format!("socket state cannot be decoded: {e}"));
    match SocketKind::try_from(s.kind) {
        Ok(SocketKind::TcpConnection) => Ok(Decoded::Connection(Box::new(
            serde_json::from_slice(&s.state_json).map_err(bad)?,
        ))),
        Ok(SocketKind::TcpListener) => Ok(Decoded::Listener(
            serde_json::from_slice(&s.state_json).map_err(bad)?,
        )),
        Ok(SocketKind::Udp) => Ok(Decoded::Udp(
            serde_json::from_slice(&s.state_json).map_err(bad)?,
        )),
        Ok(SocketKind::Unix) => {
            let u: UnixSocketState = serde_json::from_slice(&s.state_json).map_err(bad)?;
            u.sock_type().map_err(invalid)?;
            Ok(if s.external_peer {
                Decoded::BrokenUnix(Box::new(u))
            } else {
                Decoded::Unix(Box::new(u))
            })
        }
        _ => Err(invalid(format!("socket of unknown kind {}", s.kind))),
    }
}

/// Default listen() backlog when the dump could not read it.
const DEFAULT_BACKLOG: u32 = 128;

/// Restore side, in the child: re-creates one socket, with the file status flags of the
/// description (O_NONBLOCK...). With `tcp_close`, a connection comes back reset: its first
/// read fails with ECONNRESET.
pub(super) fn open(
    desc: &FileDesc,
    decoded: &Decoded,
    tcp_close: bool,
) -> Result<OwnedFd, FileError> {
    // Described only on failure: describing a connection decodes its state once more.
    let fail = |e: tcp::TcpRepairError| FileError::Restore {
        id: desc.id,
        what: super::describe(desc),
        op: "restore socket".into(),
        source: std::io::Error::other(e.to_string()),
    };
    let fd = match decoded {
        Decoded::Unix(u) => open_unix(desc, u)?,
        Decoded::BrokenUnix(u) => open_unix_broken(desc, u)?,
        Decoded::Listener(l) => tcp::restore_listener(l, DEFAULT_BACKLOG).map_err(fail)?,
        Decoded::Udp(u) => tcp::restore_udp(u).map_err(fail)?,
        Decoded::Connection(c) => {
            let fd = tcp::restore(c)
                .map_err(fail)?
                .finish_quiet()
                .map_err(fail)?;
            if tcp_close {
                tcp::disconnect(&fd).map_err(|e| {
                    super::restore_err(desc, "--tcp-close", std::io::Error::other(e.to_string()))
                })?;
            }
            fd
        }
    };
    set_flags(desc, &fd)?;
    Ok(fd)
}

/// The file status flags of the description (O_NONBLOCK, O_ASYNC) on a new socket.
pub(super) fn set_flags(desc: &FileDesc, fd: &OwnedFd) -> Result<(), FileError> {
    let flags = OFlag::from_bits_retain(desc.flags as i32) & (OFlag::O_NONBLOCK | OFlag::O_ASYNC);
    if !flags.is_empty() {
        let old = nix::fcntl::fcntl(fd, FcntlArg::F_GETFL)
            .map_err(|e| super::restore_err(desc, "F_GETFL", e.into()))?;
        nix::fcntl::fcntl(fd, FcntlArg::F_SETFL(OFlag::from_bits_retain(old) | flags))
            .map_err(|e| super::restore_err(desc, "F_SETFL", e.into()))?;
    }
    Ok(())
}

pub(super) fn unix_err(desc: &FileDesc, op: &str, e: impl std::fmt::Display) -> FileError {
    super::restore_err(desc, op.to_string(), std::io::Error::other(e.to_string()))
}

/// A unix socket without a peer: a listener bound and listening again (a stale socket file
/// at its path removed first), or a socket bound to its name (if any).
fn open_unix(desc: &FileDesc, u: &UnixSocketState) -> Result<OwnedFd, FileError> {
    let fd = make_unix(desc, u, u.backlog)?;
    let q = u.captured().map_err(|e| unix_err(desc, "queue", e))?;
    finish_unix(desc, u, &fd, &q)?;
    Ok(fd)
}

/// A unix socket whose peer stayed outside the dump: one end of a fresh socketpair whose
/// other end is closed once the captured queue went through it. The application reads what
/// was waiting, then EOF (a datagram socket: its reads end too); writes fail with EPIPE.
fn open_unix_broken(desc: &FileDesc, u: &UnixSocketState) -> Result<OwnedFd, FileError> {
    let ty = u
        .sock_type()
        .map_err(|e| unix_err(desc, "socket type", e))?;
    let (fd, gone) = unix::restore::socketpair(ty).map_err(|e| unix_err(desc, "socketpair", e))?;
    let q = u.captured().map_err(|e| unix_err(desc, "queue", e))?;
    unix::restore::refill_queue(&gone, None, &q)
        .map_err(|e| unix_err(desc, "refill the queue", e))?;
    drop(gone);
    let shutdown = if ty == unix::SockType::Dgram {
        // A datagram socket sees no EOF when its peer closes: shut it, as the peer did.
        unix::Shutdown {
            read: true,
            write: true,
        }
    } else {
        u.shutdown()
    };
    unix::restore::restore_shutdown(&fd, shutdown).map_err(|e| unix_err(desc, "shutdown", e))?;
    unix::restore::apply_options(&fd, &u.options())
        .map_err(|e| unix_err(desc, "socket options", e))?;
    Ok(fd)
}

/// The local and remote address of a socket record as a resume record lists them: `ip:port`
/// (`[v6]:port`) for TCP; for unix the bound names (the peer's as the dump saw it). Empty
/// when unknown or unnamed.
pub(crate) fn record_addresses(s: &Socket) -> (String, String) {
    match SocketKind::try_from(s.kind) {
        Ok(SocketKind::TcpConnection) => {
            serde_json::from_slice::<TcpConnectionState>(&s.state_json)
                .map(|c| (c.local.to_string(), c.remote.to_string()))
                .unwrap_or_default()
        }
        Ok(SocketKind::Unix) => {
            let local = serde_json::from_slice::<UnixSocketState>(&s.state_json)
                .ok()
                .map(|u| u.name())
                .filter(unix::UnixName::is_bound)
                .map_or_else(String::new, |n| n.to_string());
            (local, s.peer_name.clone())
        }
        _ => Default::default(),
    }
}

/// Creates a unix socket without a peer: a listener (with `backlog`) or a socket bound to its
/// name (if any).
pub(super) fn make_unix(
    desc: &FileDesc,
    u: &UnixSocketState,
    backlog: u32,
) -> Result<OwnedFd, FileError> {
    let ty = u
        .sock_type()
        .map_err(|e| unix_err(desc, "socket type", e))?;
    if u.listening {
        return unix::restore::make_listener(ty, &u.name(), u.attrs(), backlog.max(1))
            .map_err(|e| unix_err(desc, "unix listener", e));
    }
    let fd = unix::restore::socket(ty).map_err(|e| unix_err(desc, "socket", e))?;
    unix::restore::bind_name(&fd, &u.name(), u.attrs()).map_err(|e| unix_err(desc, "bind", e))?;
    Ok(fd)
}

/// Completes a socket made by [`make_unix`]: its queue `q` refilled (a bound dgram socket, from
/// itself), shutdown state, options.
pub(super) fn finish_unix(
    desc: &FileDesc,
    u: &UnixSocketState,
    fd: &OwnedFd,
    q: &unix::CapturedQueue,
) -> Result<(), FileError> {
    if !u.listening {
        if !q.is_empty() && q.sock_type == unix::SockType::Dgram && u.name().is_bound() {
            // Sent to itself by name: the senders are not known, the data is.
            unix::restore::refill_queue(fd, Some(&u.name()), q)
                .map_err(|e| unix_err(desc, "refill the queue", e))?;
        }
        unix::restore::restore_shutdown(fd, u.shutdown())
            .map_err(|e| unix_err(desc, "shutdown", e))?;
    }
    unix::restore::apply_options(fd, &u.options()).map_err(|e| unix_err(desc, "socket options", e))
}

/// How the live connection `live` differs from the image's record of it, if it does: the
/// bytes exchanged since the dump (sequence numbers, queues) or its state. Options and timers
/// may differ: only what the peer has seen matters for restoring the image against it.
pub(crate) fn connection_moved(live: &Socket, image: &Socket) -> Option<String> {
    let decode = |s: &Socket| serde_json::from_slice::<TcpConnectionState>(&s.state_json).ok();
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

impl SocketDump {
    /// The established connections captured, by socket inode.
    pub(crate) fn connections(&self) -> impl Iterator<Item = (u64, &Socket)> {
        self.records
            .iter()
            .filter(|(_, r)| r.kind == SocketKind::TcpConnection as i32)
            .map(|(&ino, rec)| (ino, rec))
    }
}
