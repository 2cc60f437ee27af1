//! Unix sockets: one socket captured and re-created. Each end is one record (`peer_ino`
//! naming the other end); its receive queue is captured without consuming it (one entry per
//! message, so seqpacket and dgram boundaries are kept) with its options. A peer no dumped
//! process holds is refused ([`check_unix_peers`]), or with `--ext-unix-sk` recorded as
//! external: the socket comes back broken (one end of a socketpair whose other end is closed:
//! its queue, then EOF).
//!
//! What a queue carries beyond bytes (descriptors in flight, the connections waiting in a
//! listener's accept queue and what their clients sent) is noted here per task and resolved
//! across the dump by [`in_flight`]; sockets made together at restore (the two ends of a
//! pair, a listener and its waiting clients) are [`groups`]' job.
//!
//! ```text
//! capture   sock_diag (state, peer, name, accept queue), queue peeked (descriptors in
//!           flight arrive in cryo as duplicates), options, peer credentials (SO_PEERCRED,
//!           SO_PEERGROUPS), the socket file of a bound path (SIOCUNIXFILE: where it is,
//!           unlinked or not, its mode)
//! restore   alone: bound (or listening) again, a dgram queue refilled from itself
//!           broken:  one end of a socketpair, the other closed once the queue went through
//!           a name whose file is gone: bound without a file, peers reach it through the
//!           socket file kept open O_PATH (cryo_unix_sockets::unlinked)
//!           with a peer or waiting clients: groups.rs
//! ```

pub(crate) mod groups;
pub(crate) mod in_flight;
pub(crate) mod names;
pub(crate) mod peers;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::fd::{BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use cryo_proto::image::{socket::State, FileDesc, Socket};
use cryo_tcp_repair as tcp;
use cryo_unix_sockets as unix;
use nix::unistd::Pid;
use tracing::debug;

use super::{restore_err, SocketDump, SocketError};
use crate::sys;

/// The state of one unix socket (a `UnixSocket` message in its record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixSocketState {
    /// Stream, datagram or seqpacket.
    pub sock_type: unix::SockType,
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
    /// The other socket-level options (None: an image made before they were kept).
    pub socket: Option<tcp::SocketOptions>,
    /// A listener: the connections waiting in its accept queue, in queue order.
    pub pending: Vec<PendingConnection>,
    /// Its peer is closed: restored as one end of a pair whose other end is closed.
    pub peer_closed: bool,
    /// ECONNRESET waits to be read.
    pub reset_pending: bool,
    /// A dgram socket connected to a socket not connected back: that socket's name (sun_path
    /// bytes; empty: none).
    pub connect_to: Vec<u8>,
    /// Bound to a relative path: the absolute directory it is relative to (empty: not).
    pub bind_dir: Vec<u8>,
    /// Bound to a path, bound again without a file ([`unix::unlinked`]): its socket file was
    /// unlinked since, or it is a connected stream or seqpacket socket.
    pub unlinked: bool,
    /// A connected stream or seqpacket socket whose abstract name is its listener's (an
    /// accepted socket): made again by an accept, never bound ([`shared_name`]).
    pub name_shared: bool,
    /// SO_PEERCRED and SO_PEERGROUPS (a listener: its own, its listen() caller's; a connected
    /// end: its peer's); None: an image made before they were kept.
    pub peer_cred: Option<unix::restore::PeerCred>,
}

/// One message of a unix socket's receive queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixMessage {
    /// Its bytes.
    pub data: Vec<u8>,
    /// SCM_CREDENTIALS (pid, uid, gid), when they were attached.
    pub creds: Option<(i32, u32, u32)>,
    /// Descriptors in flight with it (SCM_RIGHTS), in order: ids of descriptions of files.img
    /// (the same id as a task's fd when a task holds the same description).
    pub fds: Vec<u32>,
    /// A datagram an unnamed socket sent (its recvfrom shows no name): refilled from an
    /// unnamed socket, not from the receiver itself.
    pub from_unnamed: bool,
    /// A datagram another named socket sent (not the receiver itself): its name as sun_path
    /// bytes (empty: none), refilled from a socket bound to it out of sight
    /// ([`unix::restore::sender_named`]).
    pub from_name: Vec<u8>,
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

/// What a listener's waiting connection whose client closed since it connected (inode 0) is
/// counted as having sent: unknown, only accepting it tells (its embryo's queue).
pub(crate) const CLOSED_CLIENT: u32 = u32::MAX;

/// A connection waiting in a listener's accept queue (not accepted yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingConnection {
    /// The client socket (connected, held by a dumped process or in flight); 0: closed since
    /// it connected (a transient client connects, sends the queue and closes at restore).
    pub client_ino: u64,
    /// What the client sent before being accepted (the embryo's queue), in order.
    pub queue: Vec<UnixMessage>,
    /// SO_PEERCRED and SO_PEERGROUPS its accepted end shows (the client's connect() caller),
    /// read by a dump that ends the processes once it accepted it; None: not read (a
    /// `--leave-running` dump cannot accept it, an image made before they were kept).
    pub peer_cred: Option<unix::restore::PeerCred>,
}

/// Descriptors in flight in one message of a captured queue (duplicates installed in cryo).
#[derive(Debug)]
pub(crate) struct InFlightFds {
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
pub(crate) struct AcceptQueue {
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
type Messages = (Vec<UnixMessage>, Vec<(usize, Vec<OwnedFd>)>);

/// Splits a captured queue of a socket named `own` into its messages and the descriptors
/// they carry.
fn split_queue(q: unix::CapturedQueue, own: &unix::UnixName) -> Messages {
    let dgram = q.sock_type == unix::SockType::Dgram;
    let mut fds = Vec::new();
    let messages = q
        .messages
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            if !m.fds.is_empty() {
                fds.push((i, m.fds));
            }
            let named_other = dgram && m.sender.is_bound() && m.sender != *own;
            UnixMessage {
                data: m.data,
                creds: m.creds.map(|c| (c.pid, c.uid, c.gid)),
                fds: Vec::new(),
                from_unnamed: dgram && m.sender == unix::UnixName::Unnamed,
                from_name: if named_other {
                    m.sender.to_sun_path()
                } else {
                    Vec::new()
                },
            }
        })
        .collect();
    (messages, fds)
}

impl UnixSocketState {
    pub(super) fn name(&self) -> unix::UnixName {
        unix::UnixName::from_sun_path(&self.name)
    }

    /// The directory a relative name was bound in.
    fn bind_dir(&self) -> Option<&Path> {
        (!self.bind_dir.is_empty()).then(|| Path::new(OsStr::from_bytes(&self.bind_dir)))
    }

    /// The name to reach it by from anywhere in the task that made it: through `file`, its
    /// socket file kept open O_PATH when that was unlinked at once; else its own name, a
    /// relative path joined to the directory it was bound in.
    pub(super) fn reach(&self, file: Option<&OwnedFd>) -> unix::UnixName {
        if let Some(file) = file {
            return unix::unlinked::reach(file);
        }
        match (self.name(), self.bind_dir()) {
            (unix::UnixName::Path(p), Some(dir)) => unix::UnixName::Path(dir.join(p)),
            (name, _) => name,
        }
    }

    /// A dgram socket connected one way to a bound name outside the dump that can be
    /// connected to again from anywhere: an absolute path or an abstract name.
    fn reconnect_to(&self) -> Option<unix::UnixName> {
        let to = unix::UnixName::from_sun_path(&self.connect_to);
        let reachable = match &to {
            unix::UnixName::Path(p) => p.is_absolute(),
            unix::UnixName::Abstract(_) => true,
            unix::UnixName::Unnamed => false,
        };
        (self.sock_type == unix::SockType::Dgram && reachable).then_some(to)
    }

    /// A bound dgram socket connected to its own name (its peer is itself): its sends come
    /// back to it, and a plain send fails ENOTCONN unless it is connected again.
    fn connected_to_itself(&self) -> bool {
        self.sock_type == unix::SockType::Dgram
            && !self.connect_to.is_empty()
            && self.connect_to == self.name
    }

    /// The socket file's mode and owner (bound to a path), the owner as the restored process
    /// names it (in a user namespace of its own: its ids; one it does not map cannot be its).
    pub(super) fn attrs(&self) -> Option<unix::restore::SocketFileAttrs> {
        // Kept as made (-1: chown leaves it) where userns::own_owner says so; an id the
        // namespace does not map as the kernel shows it (the chown then fails).
        let owner = |uid, gid| match crate::task::userns::own_owner(uid, gid) {
            Ok(Some((uid, gid))) => (uid.as_raw(), gid.as_raw()),
            Ok(None) => (u32::MAX, u32::MAX),
            Err(_) => crate::task::userns::own_ids().shown(uid, gid),
        };
        self.file_attrs.map(|(mode, uid, gid)| {
            let (uid, gid) = owner(uid, gid);
            unix::restore::SocketFileAttrs { mode, uid, gid }
        })
    }

    pub(super) fn shutdown(&self) -> unix::Shutdown {
        unix::Shutdown {
            read: self.shutdown.0,
            write: self.shutdown.1,
        }
    }

    /// The queue without its descriptors in flight (`groups` sends those).
    fn captured(&self) -> unix::CapturedQueue {
        unix::CapturedQueue {
            sock_type: self.sock_type,
            messages: self.queue.iter().map(|m| m.to_queued(Vec::new())).collect(),
            pending_error: None,
        }
    }

    /// The ids of every description in flight in its queues (its own, its waiting
    /// connections').
    pub(super) fn carried(&self) -> impl Iterator<Item = u32> + '_ {
        self.queue
            .iter()
            .chain(self.pending.iter().flat_map(|p| &p.queue))
            .flat_map(|m| m.fds.iter().copied())
    }

    /// Sets its options on `fd` (made again for `desc`), once its queue is refilled: the
    /// socket-level ones, then those of the unix layer (buffers forced, SO_PEEK_OFF,
    /// SO_PASSCRED).
    pub(super) fn apply_options(
        &self,
        desc: &FileDesc,
        fd: impl std::os::fd::AsFd,
    ) -> Result<(), SocketError> {
        let fd = fd.as_fd();
        if let Some(socket) = &self.socket {
            tcp::apply_socket_level(fd, socket).map_err(unix_err(desc, "socket options"))?;
        }
        let unix_layer = unix::restore::SockOptions {
            passcred: self.passcred,
            sndbuf: self.sndbuf,
            rcvbuf: self.rcvbuf,
            peek_off: self.peek_off,
        };
        unix::restore::apply_options(fd, &unix_layer).map_err(unix_err(desc, "socket options"))
    }
}

/// A unix socket in words, for messages and `cryo show`.
pub(super) fn describe(s: &Socket, u: &UnixSocketState) -> String {
    let ty = u.sock_type;
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

/// What [`capture`] found beyond the state.
struct UnixCapture {
    /// The state.
    state: UnixSocketState,
    /// The peer inode (0: none).
    peer: u64,
    /// Descriptors in flight in its queue, by message index.
    in_flight: Vec<(usize, Vec<OwnedFd>)>,
    /// A listener: its waiting clients (inode, bytes each sent before being accepted).
    waiting: Vec<(u64, u32)>,
    /// Connected (stream or seqpacket) without a peer inode and not shut down: a client
    /// waiting in some listener's accept queue.
    awaiting_accept: bool,
    /// Its abstract name is that of this listener, which holds it (an accepted socket).
    name_listener: Option<u64>,
}

/// The error of `step` failing on unix socket `ino` (fd `fd` of `pid`).
fn step_failed(
    pid: Pid,
    fd: RawFd,
    ino: u64,
    step: &'static str,
) -> impl FnOnce(unix::UnixSockError) -> SocketError {
    move |source| SocketError::Unix {
        pid,
        fd,
        ino,
        step,
        source,
    }
}

/// Captures unix socket `ino` of `pid` (its duplicate `dup`): diag, queue (with the
/// descriptors in flight, duplicated into cryo), options, accept queue. With
/// `leave_running`, a pending error that peeking the queue would take is refused.
fn capture(
    pid: Pid,
    fd: RawFd,
    ino: u64,
    dup: BorrowedFd<'_>,
    diag: &mut Option<unix::DiagSocket>,
    leave_running: bool,
) -> Result<UnixCapture, SocketError> {
    let bad = |step| step_failed(pid, fd, ino, step);
    let not_yet = |what: &'static str| SocketError::UnixNotYet { pid, fd, ino, what };
    if diag.is_none() {
        *diag = Some(unix::DiagSocket::new().map_err(bad("sock_diag"))?);
    }
    let diag = diag.as_mut().expect("set above");
    let inode = u32::try_from(ino).map_err(|_| not_yet("an inode above 2^32"))?;
    let info = diag
        .query(inode)
        .map_err(bad("sock_diag query"))?
        .ok_or_else(|| not_yet("unknown to sock_diag"))?;
    let listening = info.state == unix::SockState::Listen;
    if info.state == unix::SockState::Connecting {
        return Err(not_yet("connect in progress"));
    }
    // A waiting client's unread output is what it sent the embryo: counted here, captured
    // (by accepting) only by a dump that ends the listener's owner.
    // A client closed since it connected shows as inode 0: what it sent is only in the
    // embryo ([`CLOSED_CLIENT`]).
    let mut waiting = Vec::with_capacity(info.pending.len());
    for &client in &info.pending {
        let sent = match client {
            0 => CLOSED_CLIENT,
            _ => diag
                .query(client)
                .map_err(bad("sock_diag query of a waiting client"))?
                .map_or(0, |c| c.wqueue),
        };
        waiting.push((u64::from(client), sent));
    }
    // Seen before the capture: peeking a seqpacket queue takes the error.
    let error_pending = !listening && unix::error_pending(dup).map_err(bad("poll"))?;
    let dgram = info.sock_type == unix::SockType::Dgram;
    // A datagram or seqpacket receive takes the pending error (ECONNRESET, the only one a
    // unix socket gets) before any record, a peek too; a stream one reaches it only past
    // the last byte, where the capture stops. An empty seqpacket queue (SIOCINQ counts
    // every queued byte) is not peeked at all.
    let empty_seqpacket = info.sock_type == unix::SockType::SeqPacket && info.rqueue == 0;
    if error_pending
        && info.sock_type != unix::SockType::Stream
        && !empty_seqpacket
        && leave_running
    {
        return Err(SocketError::UnixRefused {
            pid,
            fd,
            ino,
            what: "an ECONNRESET waits to be read before its queue, which capturing the queue \
                   would take from the process left running (--leave-running): a temporary \
                   state, retry once it has read it"
                .into(),
        });
    }
    let both_shut = info.shutdown.read && info.shutdown.write;
    // Connected with no peer inode: the peer is closed (its sock orphaned: inode 0), or (a
    // stream or seqpacket client not shut down) it is an embryo in a listener's accept queue.
    let connected_alone = info.state == unix::SockState::Established && info.peer_without_inode;
    let awaiting_accept = connected_alone && !dgram && !both_shut;
    let peer_closed = connected_alone && (dgram || both_shut);
    // Only a stream or seqpacket peer's close with data unread can be made again.
    let reset_by_closed_peer = peer_closed && !dgram;
    // Before the queue is captured: the capture takes a pending error to peek (a refused
    // dump would leave the process without it).
    if error_pending && !reset_by_closed_peer {
        return Err(not_yet(
            "a pending socket error other than a closed peer's reset",
        ));
    }
    let (queue, in_flight) = if listening || (error_pending && empty_seqpacket) {
        (Vec::new(), Vec::new())
    } else {
        let captured = unix::capture_queue(dup).map_err(bad("capture the queue"))?;
        // Unconnected, it is refilled from itself or from an unnamed socket: a datagram
        // another named socket sent would come back showing its name.
        if dgram
            && info.peer.is_none()
            && captured
                .messages
                .iter()
                .any(|m| m.sender != unix::UnixName::Unnamed && m.sender != info.name)
        {
            return Err(not_yet(
                "datagrams queued from another named socket (their sender's name would not \
                 come back: a temporary state, retry once the process has read them)",
            ));
        }
        split_queue(captured, &info.name)
    };
    let connect_to = match info.peer {
        Some(peer) if dgram => diag
            .query(peer)
            .map_err(bad("sock_diag query of its peer"))?
            .map_or_else(Vec::new, |p| p.name.to_sun_path()),
        _ => Vec::new(),
    };
    let opts = unix::restore::read_options(dup).map_err(bad("options"))?;
    let peer_cred = unix::restore::peer_cred(dup).map_err(bad("peer credentials"))?;
    let socket =
        tcp::capture_socket_level(dup).map_err(|source| SocketError::Repair { pid, fd, source })?;
    // Connected (an accepted socket, a client, a pair end): not listening, it can never be
    // connected to by its name, so the file at its name (its listener's, or its own) is not
    // made again: left as it is, the socket bound without a file.
    let connected_stream = !dgram && info.state == unix::SockState::Established;
    let place = placement(pid, fd, ino, dup, &info, connected_stream)?;
    let owner = match &info.name {
        unix::UnixName::Abstract(_) if connected_stream => name_owner(pid, fd, ino, &info)?,
        _ => NameOwner::Itself,
    };
    let file_attrs = place.attrs.filter(|_| info.peer.is_none() || dgram);
    let state = UnixSocketState {
        sock_type: info.sock_type,
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
        socket: Some(socket),
        pending: waiting
            .iter()
            .map(|&(client_ino, _)| PendingConnection {
                client_ino,
                queue: Vec::new(),
                peer_cred: None,
            })
            .collect(),
        peer_closed,
        reset_pending: error_pending,
        connect_to,
        bind_dir: place.bind_dir,
        unlinked: place.unlinked,
        name_shared: owner != NameOwner::Itself,
        peer_cred: Some(peer_cred),
    };
    Ok(UnixCapture {
        state,
        peer: info.peer.map_or(0, u64::from),
        in_flight,
        waiting,
        awaiting_accept,
        name_listener: match owner {
            NameOwner::Listener(l) => Some(l),
            _ => None,
        },
    })
}

/// Who holds the abstract name a connected stream or seqpacket socket shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NameOwner {
    /// It does: it bound the name, then connected (a client, a socketpair end).
    Itself,
    /// The listener it was accepted from (that socket's inode), which still listens.
    Listener(u64),
    /// Nothing: it was accepted from a listener closed since.
    Nobody,
}

/// Who holds the abstract name of `info`, a connected stream or seqpacket socket (fd `fd` of
/// `pid`). sock_diag shows the name, not its holder: the holder is the one socket of that name
/// and type (abstract names are per type) that is not connected, a listener; with none, a
/// probe bind tells whether anything holds it, and then the socket is the holder when it is
/// the only one showing the name. Refused when the holder is another connected socket, or a
/// bound socket not listening (the name could not be given to it by an accept again).
fn name_owner(
    pid: Pid,
    fd: RawFd,
    ino: u64,
    info: &unix::UnixSockInfo,
) -> Result<NameOwner, SocketError> {
    let bad = |step| step_failed(pid, fd, ino, step);
    let refused = |what: String| SocketError::UnixRefused { pid, fd, ino, what };
    let all = unix::dump_all().map_err(bad("sock_diag dump"))?;
    let same: Vec<&unix::UnixSockInfo> = all
        .values()
        .filter(|s| s.name == info.name && s.sock_type == info.sock_type)
        .collect();
    if let Some(h) = same
        .iter()
        .find(|s| s.state != unix::SockState::Established)
    {
        if h.state == unix::SockState::Listen {
            return Ok(NameOwner::Listener(u64::from(h.inode)));
        }
        return Err(refused(format!(
            "its abstract name {} is its listener's, and socket:[{}], which does not listen, \
             holds it now: an accept could not give it the name again",
            info.name, h.inode
        )));
    }
    let held = unix::diag::abstract_name_held(info.sock_type, &info.name)
        .map_err(bad("probe its abstract name"))?;
    match (held, same.len()) {
        (false, _) => Ok(NameOwner::Nobody),
        (true, 1) => Ok(NameOwner::Itself),
        (true, n) => Err(refused(format!(
            "its abstract name {} is shown by {n} connected sockets, one of which holds it: \
             which one cannot be told",
            info.name
        ))),
    }
}

/// Where a path-bound socket's file is, as [`placement`] found it.
#[derive(Debug, Default)]
struct Placement {
    /// Bound to a relative path: the absolute directory its file is in (empty: not).
    bind_dir: Vec<u8>,
    /// Its file was unlinked since: bound again without a file.
    unlinked: bool,
    /// Its file's mode, owner and group (still linked).
    attrs: Option<(u32, u32, u32)>,
}

/// For a socket bound to a path: its file, found through the socket itself (SIOCUNIXFILE).
/// Still linked, it must be at the name (relative: in some directory, whatever the process's
/// cwd is now), else refused (moved: not supported). Unlinked (its path perhaps taken by
/// another file, or its directory removed, since), or `without_file` (a connected stream or
/// seqpacket socket: nothing can tell its file from a stale one, an accepted socket's is its
/// listener's), it is bound again without a file; refused when the restore could not do that
/// ([`unix::unlinked::check_rebind`]).
fn placement(
    pid: Pid,
    fd: RawFd,
    ino: u64,
    dup: BorrowedFd<'_>,
    info: &unix::UnixSockInfo,
    without_file: bool,
) -> Result<Placement, SocketError> {
    let unix::UnixName::Path(name) = &info.name else {
        return Ok(Placement::default());
    };
    let refused = |what: String| SocketError::UnixRefused { pid, fd, ino, what };
    let file = unix::unlinked::socket_file(dup)
        .map_err(|e| refused(format!("bound to {}: its socket file: {e}", name.display())))?
        .ok_or_else(|| {
            refused(format!(
                "bound to {}, but the kernel shows no socket file for it",
                name.display()
            ))
        })?;
    if file.unlinked || without_file {
        if name.is_absolute() {
            unix::unlinked::check_rebind(name).map_err(|why| {
                let whose = if file.unlinked {
                    "whose socket file was unlinked since"
                } else {
                    "connected (bound again without a file)"
                };
                refused(format!("bound to {}, {whose}: {why}", name.display()))
            })?;
        }
        return Ok(Placement {
            unlinked: true,
            ..Placement::default()
        });
    }
    // Still linked: at its name (a relative one, in the directory its file is in).
    let dir = if name.is_absolute() {
        Some(Path::new(""))
    } else {
        let depth = name.components().count();
        file.path.ancestors().nth(depth)
    };
    // The process's view of the name (in a mount namespace of its own the kernel shows the
    // file's path from that namespace's root): the restore binds it there again.
    let is_its_file = |p: &Path| {
        std::fs::symlink_metadata(p)
            .is_ok_and(|md| info.vfs.is_some_and(|v| v.matches(md.dev(), md.ino())))
    };
    let full = dir.map(|d| d.join(name));
    let theirs = full
        .as_ref()
        .map(|f| crate::task::mount_ns::as_seen_by(pid, &f.to_string_lossy()));
    if !theirs.as_deref().is_some_and(is_its_file) {
        // A mount of its own over the directory, made after the bind, would take the new
        // file: it came back there silently before.
        if full
            .as_ref()
            .is_some_and(|f| theirs.as_deref() != Some(f.as_path()) && is_its_file(f))
        {
            return Err(refused(format!(
                "bound to {} before its mount namespace was made, where that path leads to \
                 another file now (a mount of its own over it): a restore would bind it there, \
                 not supported",
                name.display()
            )));
        }
        if full.as_ref() == Some(&file.path) {
            return Err(refused(format!(
                "bound to {}, whose socket file is not the file at that path as the process \
                 sees it: not supported",
                name.display()
            )));
        }
        return Err(refused(format!(
            "bound to {}, whose socket file was moved to {} since: not supported",
            name.display(),
            file.path.display()
        )));
    }
    let theirs = theirs.expect("the file was found at it");
    if crate::sys::mount::on_read_only_mount(&theirs) {
        return Err(refused(format!(
            "bound to {}, on a read-only mount: a restore binds it again (making its socket \
             file), which the mount does not allow",
            name.display()
        )));
    }
    let bind_dir = match dir {
        Some(d) if !name.is_absolute() => d.as_os_str().as_bytes().to_vec(),
        _ => Vec::new(),
    };
    Ok(Placement {
        bind_dir,
        unlinked: false,
        attrs: Some((file.mode, file.uid, file.gid)),
    })
}

impl SocketDump {
    /// Captures unix socket `ino` (fd `fd` of `pid`, duplicated as `dup`) and notes what it
    /// holds for the dump-wide passes: its peer, its descriptors in flight, its accept queue.
    pub(super) fn record_unix(
        &mut self,
        pid: Pid,
        fd: RawFd,
        ino: u64,
        dup: BorrowedFd<'_>,
        diag: &mut Option<unix::DiagSocket>,
        leave_running: bool,
    ) -> Result<(), SocketError> {
        let family = libc::AF_UNIX as u32;
        sys::fd::raise_nofile();
        let c = capture(pid, fd, ino, dup, diag, leave_running)?;
        if let Some(why) = lost_senders(&c.state).filter(|_| c.state.peer_closed) {
            return Err(SocketError::UnixRefused {
                pid,
                fd,
                ino,
                what: format!("its peer is closed: {why}"),
            });
        }
        if c.peer != 0 {
            self.unix_peers.push((pid, fd, ino, c.peer));
        }
        if c.awaiting_accept {
            self.awaiting_accept.push((pid, fd, ino));
        }
        if let Some(listener) = c.name_listener {
            self.name_listeners.push((pid, fd, ino, listener));
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
        self.records.insert(
            ino,
            Socket {
                ino,
                family,
                state: Some(State::Unix((&c.state).into())),
                peer_ino: c.peer,
                ..Socket::default()
            },
        );
        Ok(())
    }

    /// Rewrites the state of unix socket `ino` with `change`; returns the new record (`None`
    /// when this dump does not hold it).
    fn patch_unix<E>(
        &mut self,
        ino: u64,
        change: impl FnOnce(&mut UnixSocketState) -> Result<(), E>,
    ) -> Result<Option<Socket>, SocketError>
    where
        SocketError: From<E>,
    {
        let Some(rec) = self.records.get_mut(&ino) else {
            return Ok(None);
        };
        let mut state = match super::SocketState::try_from(&*rec)? {
            super::SocketState::Unix(u) => u,
            other => {
                return Err(SocketError::Record {
                    ino,
                    record: other.record_name(),
                    problem: super::RecordProblem::Missing {
                        field: "unix socket state",
                    },
                })
            }
        };
        change(&mut state)?;
        rec.state = Some(State::Unix((&*state).into()));
        Ok(Some(rec.clone()))
    }
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
) -> Result<Vec<ExternalPeer>, SocketError> {
    let mut peer_of: HashMap<u64, u64> = HashMap::new();
    let mut states: HashMap<u64, Box<UnixSocketState>> = HashMap::new();
    for d in dumps {
        for (ino, rec) in &d.records {
            if let Ok(super::SocketState::Unix(u)) = super::SocketState::try_from(rec) {
                peer_of.insert(*ino, rec.peer_ino);
                states.insert(*ino, u);
            }
        }
    }
    for &(pid, fd, ino, listener) in dumps.iter().flat_map(|d| &d.name_listeners) {
        if !states.get(&listener).is_some_and(|l| l.listening) {
            let name = states
                .get(&ino)
                .map(|u| u.name().to_string())
                .unwrap_or_default();
            return Err(SocketError::UnixRefused {
                pid,
                fd,
                ino,
                what: format!(
                    "its abstract name {name} is that of the listener it was accepted from, \
                     socket:[{listener}], which is outside the dump and holds it: an accept \
                     could not give it the name again"
                ),
            });
        }
    }
    let mut external = Vec::new();
    for d in dumps {
        for &(pid, fd, ino, peer) in &d.unix_peers {
            match peer_of.get(&peer) {
                Some(&back) if back == ino => {}
                Some(&back) => {
                    check_one_way(&states, back, (pid, fd, ino, peer))?;
                }
                None => {
                    let name = unix::query_inode(peer as u32)
                        .ok()
                        .flatten()
                        .map(|i| i.name);
                    if allow_external {
                        if let Some(why) = states.get(&ino).and_then(|u| lost_senders(u)) {
                            return Err(SocketError::UnixRefused {
                                pid,
                                fd,
                                ino,
                                what: format!("its peer is outside the dump: {why}"),
                            });
                        }
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
                    return Err(SocketError::ExternalPeer {
                        pid,
                        fd,
                        ino,
                        peer,
                        name: name.map_or("(unknown)".to_string(), |n| n.to_string()),
                    });
                }
            }
        }
    }
    Ok(external)
}

/// A socket accepted from a dumped listener whose abstract name it shares is made with that
/// listener at restore, by one process (`groups`), and across the trees of a dump only plain
/// pairs are made: the processes holding the listener, the socket and its peer must be in one
/// tree, else refused. `dumps` are the tasks' of `pids`, in order (then the dumps of sockets
/// only in flight); `tree_of` is the root of a dumped process's tree.
pub fn check_accepted_in_one_tree(
    dumps: &[SocketDump],
    pids: &[Pid],
    tree_of: impl Fn(Pid) -> Option<Pid>,
) -> Result<(), SocketError> {
    let holders = |ino: u64| {
        dumps
            .iter()
            .zip(pids)
            .filter(move |(d, _)| d.has_record(ino))
            .map(|(_, &p)| p)
    };
    for d in dumps {
        for &(pid, fd, ino, listener) in &d.name_listeners {
            let peer = dumps
                .iter()
                .flat_map(|d| &d.unix_peers)
                .find(|p| p.2 == ino)
                .map_or(0, |p| p.3);
            let trees: std::collections::BTreeSet<Option<Pid>> = [listener, ino, peer]
                .into_iter()
                .filter(|&i| i != 0)
                .flat_map(holders)
                .map(&tree_of)
                .collect();
            if trees.len() > 1 {
                return Err(SocketError::UnixRefused {
                    pid,
                    fd,
                    ino,
                    what: format!(
                        "its abstract name is that of the listener it was accepted from, \
                         socket:[{listener}], which the restore would make with it and its \
                         peer in one process, but they are in different trees of the dump"
                    ),
                });
            }
        }
    }
    Ok(())
}

/// What of the senders of the datagrams queued on `u`, a socket restored without its peer
/// ([`make_broken`]), recvfrom would not show again, in words (`None`: each comes back from
/// its sender's name). Reconnected by name, its queue is refilled by name from each sender's
/// name ([`refill_own`]): an abstract sender's from another network namespace, which reaches
/// a receiver bound to a path only. One end of a socketpair, from the other end, unnamed.
fn lost_senders(u: &UnixSocketState) -> Option<String> {
    if u.sock_type != unix::SockType::Dgram {
        return None;
    }
    if u.peer_closed || u.reconnect_to().is_none() {
        return u.queue.iter().any(|m| !m.from_unnamed).then(|| {
            "datagrams queued from a named socket, which would come back from an unnamed \
                 one (it is restored as one end of a socketpair)"
                .to_string()
        });
    }
    let abstract_sender = u.queue.iter().any(|m| m.from_name.first() == Some(&0));
    (abstract_sender && matches!(u.name(), unix::UnixName::Abstract(_))).then(|| {
        "datagrams queued from a socket bound to an abstract name on a socket bound to an \
         abstract name (a sender holding that name again, out of sight, could not reach it)"
            .to_string()
    })
}

/// A dgram socket `ino` (fd `fd` of `pid`) connected to `peer`, a socket of the dump that is
/// connected to `back` (0: nothing): restored by connecting to `peer`'s name again, which
/// needs `peer` bound and not connected itself, and the sender bound if datagrams wait for it
/// (they are sent to it again by name). Refused otherwise.
fn check_one_way(
    states: &HashMap<u64, Box<UnixSocketState>>,
    back: u64,
    (pid, fd, ino, peer): (Pid, RawFd, u64, u64),
) -> Result<(), SocketError> {
    let one_way = || SocketError::OneWayPeer { pid, fd, ino, peer };
    let (Some(sender), Some(receiver)) = (states.get(&ino), states.get(&peer)) else {
        return Err(one_way());
    };
    let sender_ok = sender.sock_type == unix::SockType::Dgram
        && (sender.queue.is_empty() || sender.name().is_bound());
    if !sender_ok || back != 0 || !receiver.name().is_bound() {
        return Err(one_way());
    }
    Ok(())
}

/// A [`SocketError::Restore`] of unix socket `desc` at `step`.
fn unix_err<'a, E>(desc: &'a FileDesc, step: &'static str) -> impl Fn(E) -> SocketError + 'a
where
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    move |e| restore_err(desc, step, e)
}

/// A unix socket without a peer: a listener bound and listening again (a stale socket file
/// at its path removed first), or a socket bound to its name (if any).
pub(super) fn open(desc: &FileDesc, u: &UnixSocketState) -> Result<OwnedFd, SocketError> {
    let (fd, file) = make(desc, u, u.backlog)?;
    let q = u.captured();
    finish(desc, u, &fd, file.as_ref(), &q)?;
    Ok(fd)
}

/// A unix socket whose peer is closed, or stayed outside the dump.
///
/// Closed peer: one end of a fresh socketpair whose other end is closed once the captured
/// queue went through it, as the original: a stream or seqpacket end reads its queue, then
/// EOF, and writes fail with EPIPE (a pending ECONNRESET made again by leaving a byte unread
/// in the closing end); a dgram end reads its datagrams, its first send fails ECONNREFUSED.
///
/// Peer outside the dump: a dgram socket connected to an absolute path or an abstract name
/// is bound to its own name and connected to that name again (a client of /dev/log). Any
/// other is restored broken, as a closed peer, a dgram socket shut both ways.
pub(super) fn open_broken(desc: &FileDesc, u: &UnixSocketState) -> Result<OwnedFd, SocketError> {
    let made = make_broken(desc, u)?;
    finish_broken(
        desc,
        u,
        &made.fd,
        made.file.as_ref(),
        made.closing,
        &u.captured(),
    )?;
    Ok(made.fd)
}

/// A socket [`make_broken`] made.
pub(super) struct Broken {
    /// The socket.
    pub fd: OwnedFd,
    /// Its socket file, open O_PATH, when that was unlinked at once.
    pub file: Option<OwnedFd>,
    /// The end its queue goes through and that then closes (none: reconnected by name).
    pub closing: Option<OwnedFd>,
}

/// The socket [`open_broken`] makes, before its queue: reconnected by name (no second end),
/// or one end of a fresh socketpair with the end that closes once the queue went through it.
pub(super) fn make_broken(desc: &FileDesc, u: &UnixSocketState) -> Result<Broken, SocketError> {
    if !u.peer_closed && u.reconnect_to().is_some() {
        let (fd, file) = make(desc, u, 0)?;
        return Ok(Broken {
            fd,
            file,
            closing: None,
        });
    }
    if u.name_shared {
        // Accepted from a listener gone since (a dumped one makes it in `groups`), the other
        // end transient.
        let gone = unix::restore::socket(u.sock_type).map_err(unix_err(desc, "socket"))?;
        let fd = unix::restore::accepted_by_name(u.sock_type, &u.name(), &gone).map_err(
            unix_err(desc, "accept from a transient listener of its name"),
        )?;
        return Ok(Broken {
            fd,
            file: None,
            closing: Some(gone),
        });
    }
    let (fd, gone) =
        unix::restore::socketpair(u.sock_type).map_err(unix_err(desc, "socketpair"))?;
    let file = bind_connected(desc, u, &fd)?;
    Ok(Broken {
        fd,
        file,
        closing: Some(gone),
    })
}

/// Completes a socket `fd` [`make_broken`] made (its socket file `file`): queue `q` refilled
/// (from `closing`, the end that then closes, or from itself by name), shutdown state,
/// options.
pub(super) fn finish_broken(
    desc: &FileDesc,
    u: &UnixSocketState,
    fd: &OwnedFd,
    file: Option<&OwnedFd>,
    closing: Option<OwnedFd>,
    q: &unix::CapturedQueue,
) -> Result<(), SocketError> {
    let ty = u.sock_type;
    let Some(gone) = closing else {
        let to = u.reconnect_to().ok_or_else(|| {
            restore_err(desc, "connect by name again", "no name to connect to again")
        })?;
        refill_own(desc, u, fd, file, q)?;
        unix::restore::connect(fd, &to).map_err(unix_err(desc, "connect by name again"))?;
        unix::restore::restore_shutdown(fd, u.shutdown()).map_err(unix_err(desc, "shutdown"))?;
        return u.apply_options(desc, fd);
    };
    peers::refill(&gone, None, &q.messages).map_err(unix_err(desc, "refill the queue"))?;
    if u.reset_pending {
        // Unread in the end that closes: the kernel gives the survivor ECONNRESET.
        let unread = unix::QueuedMessage {
            data: vec![0],
            fds: Vec::new(),
            creds: None,
            sender: unix::UnixName::Unnamed,
        };
        unix::restore::send_message(fd, None, &unread)
            .map_err(unix_err(desc, "leave a byte unread for the reset"))?;
    }
    drop(gone);
    let shutdown = if u.peer_closed {
        u.shutdown()
    } else if ty == unix::SockType::Dgram {
        // A datagram socket sees no EOF when its peer closes: shut it, as the peer did.
        unix::Shutdown {
            read: true,
            write: true,
        }
    } else {
        u.shutdown()
    };
    unix::restore::restore_shutdown(fd, shutdown).map_err(unix_err(desc, "shutdown"))?;
    u.apply_options(desc, fd)
}

/// Creates a unix socket without a peer: a listener (with `backlog`) or a socket bound to its
/// name (if any); with its socket file open O_PATH when that was unlinked at once ([`bind`]).
fn make(
    desc: &FileDesc,
    u: &UnixSocketState,
    backlog: u32,
) -> Result<(OwnedFd, Option<OwnedFd>), SocketError> {
    let fd = unix::restore::socket(u.sock_type).map_err(unix_err(desc, "socket"))?;
    let file = bind(desc, u, &fd)?;
    if u.listening {
        // Stamped with its dumped listen() caller's credentials (SO_PEERCRED of a listener).
        peers::issue(u.peer_cred.as_ref(), || {
            unix::restore::listen(&fd, backlog.max(1))
        })
        .map_err(unix_err(desc, "listen"))?;
    }
    Ok((fd, file))
}

/// Binds `fd` to its name (if any). A socket whose file was unlinked at dump is bound without
/// leaving a file, whatever took its path since: its socket file is returned, open O_PATH, for
/// the peers this task connects to it ([`UnixSocketState::reach`]).
pub(super) fn bind(
    desc: &FileDesc,
    u: &UnixSocketState,
    fd: &OwnedFd,
) -> Result<Option<OwnedFd>, SocketError> {
    if u.unlinked {
        return unix::unlinked::bind_unlinked(fd, &u.name())
            .map(Some)
            .map_err(unix_err(desc, "bind (its file unlinked)"));
    }
    let attrs = u.attrs();
    let (uid, gid) = u.file_attrs.map_or((0, 0), |(_, uid, gid)| (uid, gid));
    // Its file made as its owner can be given it (in a user namespace: userns::make_for).
    crate::task::userns::make_for(uid, gid, || {
        unix::restore::bind_name_in(fd, &u.name(), u.bind_dir(), attrs)
    })
    .map_err(unix_err(desc, "bind"))?;
    Ok(None)
}

/// Binds `fd`, a fresh socket standing for a connected one (an end of a socketpair, a client
/// about to connect), to its name (getsockname, its peer's getpeername; a stream or seqpacket
/// socket's path perhaps its listener's, bound without a file). An abstract name its listener
/// holds ([`UnixSocketState::name_shared`]) is not bound: an accept gives it
/// ([`unix::restore::accepted_by_name`], or the dumped listener's in `groups`).
pub(super) fn bind_connected(
    desc: &FileDesc,
    u: &UnixSocketState,
    fd: &OwnedFd,
) -> Result<Option<OwnedFd>, SocketError> {
    if u.name_shared {
        return Ok(None);
    }
    bind(desc, u, fd)
}

/// Refills the queue `q` of a bound dgram socket by name, each datagram from a socket of the
/// name it came from: itself, an unnamed one, or (a peer outside the dump) one bound to the
/// sender's name out of sight ([`unix::restore::sender_named`]); call before it connects (a
/// connected dgram socket takes datagrams from its peer only).
fn refill_own(
    desc: &FileDesc,
    u: &UnixSocketState,
    fd: &OwnedFd,
    file: Option<&OwnedFd>,
    q: &unix::CapturedQueue,
) -> Result<(), SocketError> {
    if q.is_empty() || q.sock_type != unix::SockType::Dgram {
        return Ok(());
    }
    if !u.name().is_bound() {
        return Err(restore_err(
            desc,
            "refill the queue",
            "datagrams queued on an unbound socket that is not one end of a pair",
        ));
    }
    let to = u.reach(file);
    // Runs of datagrams from one sender: an unnamed socket's from an unnamed socket (recvfrom
    // shows no name, as before), another named socket's from a socket bound to its name, the
    // rest from itself (the dump refused what cannot come back so). `q` was made from
    // `u.queue`, message for message.
    let mut unnamed = None;
    let mut at = 0;
    let sender = |m: &UnixMessage| (m.from_unnamed, m.from_name.clone());
    for run in u.queue.chunk_by(|a, b| sender(a) == sender(b)) {
        let messages = q.messages.get(at..at + run.len()).ok_or_else(|| {
            restore_err(
                desc,
                "refill the queue",
                "fewer messages than the image lists",
            )
        })?;
        at += run.len();
        let sent = if run[0].from_unnamed {
            if unnamed.is_none() {
                unnamed = Some(
                    std::os::unix::net::UnixDatagram::unbound()
                        .map_err(|e| restore_err(desc, "refill the queue", e.to_string()))?,
                );
            }
            let from = unnamed.as_ref().expect("made above");
            peers::refill(from, Some(&to), messages)
        } else if !run[0].from_name.is_empty() {
            let name = unix::UnixName::from_sun_path(&run[0].from_name);
            let from = unix::restore::sender_named(&name).map_err(unix_err(
                desc,
                "a sender bound to the name datagrams came from",
            ))?;
            peers::refill(&from, Some(&to), messages)
        } else {
            peers::refill(fd, Some(&to), messages)
        };
        sent.map_err(unix_err(desc, "refill the queue"))?;
    }
    Ok(())
}

/// Completes a socket made by [`make`] (its socket file `file`): its queue `q` refilled (a
/// bound dgram socket, from itself), shutdown state, options.
fn finish(
    desc: &FileDesc,
    u: &UnixSocketState,
    fd: &OwnedFd,
    file: Option<&OwnedFd>,
    q: &unix::CapturedQueue,
) -> Result<(), SocketError> {
    if !u.listening {
        if u.name().is_bound() {
            refill_own(desc, u, fd, file, q)?;
        }
        if u.connected_to_itself() {
            // After the refill, whose datagrams it sent itself from its name, as before.
            unix::restore::connect(fd, &u.reach(file))
                .map_err(unix_err(desc, "connect to its own name again"))?;
        }
        unix::restore::restore_shutdown(fd, u.shutdown()).map_err(unix_err(desc, "shutdown"))?;
    }
    u.apply_options(desc, fd)
}
