//! Why a socket could not be dumped or restored: [`SocketError`], each variant naming the
//! task, fd, socket inode (or image record) and the step.

use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;

use cryo_tcp_repair::TcpRepairError;
use cryo_unix_sockets::UnixSockError;
use nix::unistd::Pid;

/// A failure of the socket subsystem. Reaches the engine's error through
/// [`FileError`](crate::files::FileError) (sockets are fds of a task).
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// A system call on a socket fd of a task (or on cryo's duplicate of it) failed.
    #[error("pid {pid} fd {fd}: {step}: {source}")]
    Sys {
        /// The task.
        pid: Pid,
        /// The fd.
        fd: RawFd,
        /// The step.
        step: &'static str,
        /// The kernel's answer.
        source: io::Error,
    },
    /// The network namespace of a task could not be joined to read its sockets there.
    #[error("pid {pid}: {step} (its network namespace, where its sockets are listed): {source}")]
    NetNamespace {
        /// The task.
        pid: Pid,
        /// The step.
        step: &'static str,
        /// The kernel's answer.
        source: io::Error,
    },
    /// A TCP or UDP capture failed (the addresses are in the repair error).
    #[error("pid {pid} fd {fd}: {source}")]
    Repair {
        /// The task.
        pid: Pid,
        /// The fd.
        fd: RawFd,
        /// What cryo-tcp-repair said.
        source: TcpRepairError,
    },
    /// A step on a unix socket (sock_diag, queue capture, options) failed.
    #[error("pid {pid} fd {fd}: unix socket socket:[{ino}]: {step}: {source}")]
    Unix {
        /// The task.
        pid: Pid,
        /// The fd.
        fd: RawFd,
        /// The socket.
        ino: u64,
        /// The step.
        step: &'static str,
        /// What cryo-unix-sockets said.
        source: UnixSockError,
    },
    /// A unix socket in a state cryo cannot capture yet.
    #[error("pid {pid} fd {fd}: unix socket socket:[{ino}]: {what}: not supported yet")]
    UnixNotYet {
        /// The task.
        pid: Pid,
        /// The fd.
        fd: RawFd,
        /// The socket.
        ino: u64,
        /// What it is doing.
        what: &'static str,
    },
    /// An abstract name a unix socket of the image binds is taken here (unix/names.rs).
    #[error(
        "unix socket socket:[{ino}] of the image: its abstract name {name} is not free here: \
         {why}; nothing was made"
    )]
    AbstractNameTaken {
        /// The dumped socket.
        ino: u64,
        /// The name.
        name: String,
        /// Who holds it.
        why: String,
    },
    /// A unix socket in a state that cannot be restored as it is.
    #[error("pid {pid} fd {fd}: unix socket socket:[{ino}]: {what}")]
    UnixRefused {
        /// The task.
        pid: Pid,
        /// The fd.
        fd: RawFd,
        /// The socket.
        ino: u64,
        /// What it is and why it cannot come back.
        what: String,
    },
    /// An established TCP connection met by a dump without `--tcp-established`.
    #[error(
        "pid {pid} fd {fd}: established TCP connection {local} -> {remote} ({state}): dump \
         with --tcp-established to capture it"
    )]
    TcpEstablished {
        /// The task.
        pid: Pid,
        /// The fd.
        fd: RawFd,
        /// The local end.
        local: SocketAddr,
        /// The peer.
        remote: SocketAddr,
        /// The TCP state.
        state: &'static str,
    },
    /// A TCP connection in the middle of its handshake: temporary.
    #[error(
        "pid {pid} fd {fd}: TCP connection {local} -> {remote} is in {state} (handshake in \
         progress): a temporary state, retry later"
    )]
    TcpTemporary {
        /// The task.
        pid: Pid,
        /// The fd.
        fd: RawFd,
        /// The local end ("?" when unknown).
        local: String,
        /// The peer it is connecting to (the kernel does not tell a connect in progress's).
        remote: String,
        /// The TCP state.
        state: &'static str,
    },
    /// A socket made in another network namespace than its holder's that cannot be made
    /// there again (home.rs).
    #[error("pid {pid} fd {fd}: socket:[{ino}] of network namespace net:[{netns}], not its process's: {what}")]
    ForeignNamespace {
        /// The task.
        pid: Pid,
        /// The fd.
        fd: RawFd,
        /// The socket.
        ino: u64,
        /// The namespace it was made in.
        netns: u64,
        /// What is not made again, and why.
        what: String,
    },
    /// A socket record to be made in a network namespace the restoring process cannot reach.
    #[error("{what} (description {id}): made in network namespace {home} at dump, which {why}")]
    HomeUnreachable {
        /// The description.
        id: u32,
        /// The socket in words.
        what: String,
        /// The namespace ("net:[INODE]", or the roots').
        home: String,
        /// Why it cannot be reached.
        why: String,
    },
    /// The network lock over the connections of a task could not be installed.
    #[error("pid {pid}: network lock: {source}")]
    NetworkLock {
        /// The task.
        pid: Pid,
        /// What went wrong.
        source: cryo_netns::LockError,
    },
    /// The lock this dump's directory names is installed already: an earlier dump into the
    /// same directory left it, holding its connections for a restore that never came.
    #[error(
        "pid {pid}: network lock {id}: installed already by an earlier dump into this \
         directory, holding that dump's connections: restore it, or release them with `cryo \
         unlock -D DIR`"
    )]
    NetworkLockTaken {
        /// The task.
        pid: Pid,
        /// The lock's id.
        id: String,
    },
    /// A thread of a capture pass panicked.
    #[error("pid {pid}: a thread {pass} panicked")]
    Panicked {
        /// The task.
        pid: Pid,
        /// The pass ("identifying sockets", "capturing connections").
        pass: &'static str,
    },
    /// A unix socket sends to a peer that is not connected back to it, and cannot be
    /// connected to it again by name (a stream, an unbound or connected receiver, datagrams
    /// queued on an unbound sender).
    #[error(
        "pid {pid} fd {fd}: unix socket socket:[{ino}] sends to socket:[{peer}], which is not \
         connected back, and cannot be connected to again by name (a one-way dgram link needs \
         the receiver bound and unconnected, and the sender bound if datagrams wait for it): \
         not supported yet"
    )]
    OneWayPeer {
        /// The task.
        pid: Pid,
        /// The fd.
        fd: RawFd,
        /// The socket.
        ino: u64,
        /// Its peer.
        peer: u64,
    },
    /// A unix socket's peer is outside the dump and `--ext-unix-sk` was not given.
    #[error(
        "pid {pid} fd {fd}: unix socket socket:[{ino}] is connected to socket:[{peer}] {name}, \
         which no dumped process holds (external peer: dump with --ext-unix-sk to restore it as \
         a broken connection)"
    )]
    ExternalPeer {
        /// The task.
        pid: Pid,
        /// The fd.
        fd: RawFd,
        /// The socket.
        ino: u64,
        /// Its peer.
        peer: u64,
        /// The peer's name as sock_diag tells it ("(unknown)" when it does not).
        name: String,
    },
    /// A connection waits in a listener's accept queue with data its client sent, and the
    /// dump leaves the targets running (capturing the data takes accept()).
    #[error(
        "pid {pid} fd {fd}: unix listener socket:[{ino}]: the connection from \
         socket:[{client}] waiting in its accept queue carries {sent} bytes sent before accept; \
         capturing them takes accept(), which a --leave-running dump cannot undo: a temporary \
         state, retry once it is accepted"
    )]
    EmbryoData {
        /// The task.
        pid: Pid,
        /// The listener's fd.
        fd: RawFd,
        /// The listener.
        ino: u64,
        /// The waiting client.
        client: u64,
        /// Bytes it sent.
        sent: u32,
    },
    /// A connection waits in a listener's accept queue from a client closed since, and the
    /// dump leaves the targets running (what it sent is only seen by accept()).
    #[error(
        "pid {pid} fd {fd}: unix listener socket:[{ino}]: a connection from a client closed \
         since waits in its accept queue; what it sent is seen only by accept(), which a \
         --leave-running dump cannot undo: a temporary state, retry once it is accepted"
    )]
    EmbryoOfClosedClient {
        /// The task.
        pid: Pid,
        /// The listener's fd.
        fd: RawFd,
        /// The listener.
        ino: u64,
    },
    /// Taking a listener's waiting connections (to capture what their clients sent) failed.
    #[error("pid {pid} fd {fd}: unix listener socket:[{ino}]: {problem}")]
    AcceptQueue {
        /// The task.
        pid: Pid,
        /// The listener's fd.
        fd: RawFd,
        /// The listener.
        ino: u64,
        /// What went wrong.
        problem: AcceptProblem,
    },
    /// A client waits in a dumped listener's accept queue but no dumped process holds it.
    #[error(
        "pid {pid} fd {fd}: unix listener socket:[{ino}] has a connection waiting in its accept \
         queue from socket:[{client}] {name}, which no dumped process holds (external client): \
         not supported yet"
    )]
    ExternalClient {
        /// The task.
        pid: Pid,
        /// The listener's fd.
        fd: RawFd,
        /// The listener.
        ino: u64,
        /// The client.
        client: u64,
        /// The client's name as sock_diag tells it.
        name: String,
    },
    /// A dumped client waits in the accept queue of a listener no dumped process holds.
    #[error(
        "pid {pid} fd {fd}: unix socket socket:[{ino}] waits in the accept queue of {listener}, \
         which no dumped process holds (external listener): not supported yet"
    )]
    ExternalListener {
        /// The task.
        pid: Pid,
        /// The fd.
        fd: RawFd,
        /// The waiting client.
        ino: u64,
        /// The listener, as sock_diag tells it.
        listener: String,
    },
    /// A descriptor in flight (SCM_RIGHTS) in a unix socket's queue cannot be dumped.
    #[error("pid {pid} fd {fd}: a descriptor in flight on socket:[{ino}]: {refusal}")]
    InFlight {
        /// The task holding the socket.
        pid: Pid,
        /// Its fd there.
        fd: RawFd,
        /// The socket whose queue carries the descriptor.
        ino: u64,
        /// Why.
        refusal: InFlightRefusal,
    },
    /// A socket's queue was noted as carrying descriptors in flight, but it has no record.
    #[error("socket:[{ino}] carries descriptors in flight but has no record")]
    NoRecord {
        /// The socket.
        ino: u64,
    },
    /// A packet or netlink socket in a state cryo cannot restore exactly (`what` says which,
    /// and whether a retry later may succeed).
    #[error("pid {pid} fd {fd}: {family} socket socket:[{ino}]: {what}")]
    FamilyRefused {
        /// The task.
        pid: Pid,
        /// The fd.
        fd: RawFd,
        /// "packet" or "netlink".
        family: &'static str,
        /// The socket.
        ino: u64,
        /// What it is doing.
        what: String,
    },
    /// A socket record of the image is inconsistent.
    #[error("socket:[{ino}] ({record}): {problem}")]
    Record {
        /// The socket.
        ino: u64,
        /// The record ("tcp connection", "unix socket"...).
        record: &'static str,
        /// What is wrong.
        problem: RecordProblem,
    },
    /// A step re-creating a socket failed.
    #[error("file {id} ({what}): {step}: {source}")]
    Restore {
        /// The description.
        id: u32,
        /// The socket, as [`describe`](super::describe) tells it.
        what: String,
        /// The step.
        step: &'static str,
        /// What the kernel or the socket library said.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Why taking the connections waiting in a listener's accept queue failed.
#[derive(Debug, thiserror::Error)]
pub enum AcceptProblem {
    /// A system call failed.
    #[error("{step}: {source}")]
    Sys {
        /// The step.
        step: &'static str,
        /// The kernel's answer.
        source: io::Error,
    },
    /// A unix socket step failed (sock_diag, accept, the queue's capture).
    #[error("{step}: {source}")]
    Unix {
        /// The step.
        step: &'static str,
        /// What cryo-unix-sockets said.
        source: UnixSockError,
    },
    /// A connection left the queue while the dump held the listener's owner frozen.
    #[error("the connection from socket:[{client}] left the accept queue during the dump")]
    Left {
        /// The client.
        client: u64,
    },
    /// accept() gave another connection than the queue named.
    #[error(
        "accept() returned the connection of socket:[{found}] where the accept queue named \
         socket:[{client}]"
    )]
    OutOfOrder {
        /// The client sock_diag named.
        client: u64,
        /// The client accept() gave (0: unknown).
        found: u64,
    },
    /// The record does not list as many waiting connections as were accepted.
    #[error("{recorded} waiting connections recorded, {accepted} accepted")]
    Count {
        /// In the record.
        recorded: usize,
        /// Accepted.
        accepted: usize,
    },
    /// The listener's record is gone.
    #[error("its record is gone")]
    NoRecord,
    /// A connection whose client closed carries descriptors in flight, or its client was
    /// bound to a name: a transient client would not send them again so.
    #[error(
        "the connection waiting in its accept queue from a client closed since {0}: not \
         supported"
    )]
    ClosedClient(&'static str),
    /// The listener is itself in flight in what a client sent before being accepted.
    #[error(
        "in flight in what a client sent before being accepted, it has connections waiting \
         with data: not supported"
    )]
    InFlightWithData,
}

/// Why a descriptor in flight cannot be dumped.
#[derive(Debug, thiserror::Error)]
pub enum InFlightRefusal {
    /// A socket of another family than unix.
    #[error("{family} socket socket:[{ino}]: only unix sockets are supported in flight for now")]
    NotUnix {
        /// "an inet", "an inet6", "a family N", "a".
        family: String,
        /// The socket in flight.
        ino: u64,
    },
    /// A unix socket in flight that carries descriptors in flight itself.
    #[error(
        "unix socket socket:[{ino}] is in flight and carries descriptors in flight itself: not \
         supported"
    )]
    Nested {
        /// The socket in flight.
        ino: u64,
    },
    /// The file table refused the description (its message, said in the terms of the task
    /// that holds the socket; kept as text so that the two error types do not nest).
    #[error("{0}")]
    File(String),
}

/// What is wrong with a socket record of the image.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordProblem {
    /// The record has no state (written by a newer cryo?).
    #[error("no state (written by a newer cryo?)")]
    NoState,
    /// A field that must be present is absent.
    #[error("{field} is missing")]
    Missing {
        /// The field.
        field: &'static str,
    },
    /// An IP address that is neither 4 nor 16 bytes long.
    #[error("{field}: an IP address of {len} bytes")]
    Address {
        /// The field.
        field: &'static str,
        /// Its length.
        len: usize,
    },
    /// A number out of the range its field allows.
    #[error("{field}: {value} is out of range")]
    Range {
        /// The field.
        field: &'static str,
        /// Its value.
        value: i64,
    },
    /// The two ends of a connection are of different families.
    #[error("its local and remote addresses are of different families")]
    Families,
}
