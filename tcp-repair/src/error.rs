//! One error type for every operation of the crate; each error names the
//! operation, the socket and the step that failed, e.g.
//! `restore 127.0.0.1:4000 -> 127.0.0.1:51234: TCP_REPAIR_WINDOW: Invalid argument`.

use std::fmt;
use std::net::SocketAddr;

use nix::errno::Errno;

/// What the crate was doing when it failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// Entering repair mode on a live socket.
    EnterRepair,
    /// Reading the state of a socket in repair mode.
    Capture,
    /// Re-creating a socket from a captured state.
    Restore,
    /// Leaving repair mode.
    LeaveRepair,
    /// Probing the peer of a live connection.
    Probe,
    /// Dissolving a connection (`connect(AF_UNSPEC)`).
    Disconnect,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operation::EnterRepair => "enter repair",
            Operation::Capture => "capture",
            Operation::Restore => "restore",
            Operation::LeaveRepair => "leave repair",
            Operation::Probe => "probe",
            Operation::Disconnect => "disconnect",
        })
    }
}

/// The socket an error is about: its addresses when known.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketName {
    /// Local address, if known.
    pub local: Option<SocketAddr>,
    /// Remote address, if known (connected sockets).
    pub remote: Option<SocketAddr>,
}

impl SocketName {
    /// A socket known by both addresses.
    pub fn new(local: Option<SocketAddr>, remote: Option<SocketAddr>) -> Self {
        SocketName { local, remote }
    }
}

impl fmt::Display for SocketName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.local, self.remote) {
            (Some(l), Some(r)) => write!(f, "{l} -> {r}"),
            (Some(l), None) => write!(f, "{l}"),
            (None, Some(r)) => write!(f, "? -> {r}"),
            (None, None) => f.write_str("unnamed socket"),
        }
    }
}

/// Errors of capture and restore.
#[derive(Debug, thiserror::Error)]
pub enum TcpRepairError {
    /// A system call failed.
    #[error("{op} {sock}: {step}: {}", errno.desc())]
    Sys {
        /// The operation.
        op: Operation,
        /// The socket.
        sock: SocketName,
        /// The step (usually the socket option or system call).
        step: &'static str,
        /// The error number.
        #[source]
        errno: Errno,
    },
    /// The socket is in a handshake state that passes by itself.
    #[error("{op} {sock}: state {state} is temporary (handshake in progress), retry later")]
    TemporaryState {
        /// The operation.
        op: Operation,
        /// The socket.
        sock: SocketName,
        /// The TCP state name.
        state: &'static str,
    },
    /// The socket is in a state this operation does not handle.
    #[error("{op} {sock}: unsupported state {state}: {why}")]
    UnsupportedState {
        /// The operation.
        op: Operation,
        /// The socket.
        sock: SocketName,
        /// The TCP state name.
        state: &'static str,
        /// Why, and what to use instead.
        why: &'static str,
    },
    /// A listening socket has connections in its accept queue.
    #[error(
        "{op} {sock}: {pending} connection(s) completed the handshake but were not accepted yet; \
         they cannot be put back in an accept queue (a temporary state: retry when the \
         application has accepted them; or skip them with InFlight::Skip, `cryo dump \
         --skip-in-flight`, and their clients are reset)"
    )]
    PendingConnections {
        /// The operation.
        op: Operation,
        /// The socket.
        sock: SocketName,
        /// Length of the accept queue.
        pending: u32,
    },
    /// A listener with TCP_DEFER_ACCEPT holds connections whose handshake completed and that
    /// wait for their first data, not in its accept queue yet (request sockets).
    #[error(
        "{op} {sock}: {waiting} connection(s) completed the handshake and wait for their first \
         data (TCP_DEFER_ACCEPT): not in the accept queue yet, a restored listener would not \
         know them and their clients' data would go unanswered (a temporary state: retry when \
         their data came and the application accepted them; or skip them with \
         `--skip-in-flight`)"
    )]
    DeferredConnections {
        /// The operation.
        op: Operation,
        /// The socket.
        sock: SocketName,
        /// How many.
        waiting: u32,
    },
    /// Datagrams wait in a receive queue in a state they cannot be captured or delivered
    /// again in; it passes once the application has read them.
    #[error("{op} {sock}: receive queue: {what}: a temporary state, retry once the process has read them")]
    QueueTemporary {
        /// The operation.
        op: Operation,
        /// The socket.
        sock: SocketName,
        /// What waits, and why it cannot be taken along.
        what: String,
    },
    /// What the kernel reported is inconsistent, or a state is invalid.
    #[error("{op} {sock}: {step}: {detail}")]
    Invalid {
        /// The operation.
        op: Operation,
        /// The socket.
        sock: SocketName,
        /// The step.
        step: &'static str,
        /// What was wrong.
        detail: String,
    },
}

impl TcpRepairError {
    /// The error number, for `Sys` errors.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            TcpRepairError::Sys { errno, .. } => Some(*errno),
            _ => None,
        }
    }

    /// True when retrying later can succeed (handshake in progress, accept
    /// queue not drained, data arriving during capture).
    pub fn is_temporary(&self) -> bool {
        matches!(
            self,
            TcpRepairError::TemporaryState { .. }
                | TcpRepairError::PendingConnections { .. }
                | TcpRepairError::DeferredConnections { .. }
                | TcpRepairError::QueueTemporary { .. }
        )
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = TcpRepairError> = std::result::Result<T, E>;

/// Builds errors for one operation on one socket.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ctx {
    pub op: Operation,
    pub sock: SocketName,
}

impl Ctx {
    pub fn new(op: Operation, sock: SocketName) -> Self {
        Ctx { op, sock }
    }

    /// A closure mapping an errno to a `Sys` error for `step`.
    pub fn sys(self, step: &'static str) -> impl FnOnce(Errno) -> TcpRepairError {
        move |errno| TcpRepairError::Sys {
            op: self.op,
            sock: self.sock,
            step,
            errno,
        }
    }

    /// A closure mapping an io error to a `Sys` error for `step`.
    pub fn io(self, step: &'static str) -> impl FnOnce(std::io::Error) -> TcpRepairError {
        move |e| TcpRepairError::Sys {
            op: self.op,
            sock: self.sock,
            step,
            errno: Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
        }
    }

    pub fn invalid(self, step: &'static str, detail: impl Into<String>) -> TcpRepairError {
        TcpRepairError::Invalid {
            op: self.op,
            sock: self.sock,
            step,
            detail: detail.into(),
        }
    }
}
