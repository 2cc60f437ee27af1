//! The crate's error type: every variant names the step that failed and the
//! object it was working on (socket inode, file descriptor or path).

use std::io;
use std::os::fd::RawFd;
use std::path::PathBuf;

/// Errors of sock_diag queries, queue capture, restore helpers and the graph.
#[derive(Debug, thiserror::Error)]
pub enum UnixSockError {
    /// A netlink socket operation (open, send, receive) failed.
    #[error("sock_diag: {step}: {source}")]
    Netlink {
        /// What was being done.
        step: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The kernel answered something this crate could not decode.
    #[error("sock_diag: decode {step}: {detail}")]
    Decode {
        /// What was being decoded.
        step: &'static str,
        /// What was wrong with it.
        detail: String,
    },
    /// The kernel reported an error for a query about one inode.
    #[error("sock_diag: query of unix socket inode {inode}: {source}")]
    Query {
        /// The socket inode asked about.
        inode: u32,
        /// The kernel's error (ENOENT when no such socket exists).
        #[source]
        source: io::Error,
    },
    /// A system call on a socket file descriptor failed.
    #[error("{step} on fd {fd}: {source}")]
    Fd {
        /// The operation (for example "setsockopt SO_PEEK_OFF").
        step: &'static str,
        /// The file descriptor operated on.
        fd: RawFd,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A system call on a path (bind, unlink, chmod, chown) failed.
    #[error("{step} {path:?}: {source}")]
    Path {
        /// The operation.
        step: &'static str,
        /// The path it was applied to.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A file exists where a socket must be bound, and it is not a socket:
    /// it is left alone.
    #[error("bind: {path:?} exists and is not a socket, refusing to unlink it")]
    NotASocket {
        /// The path that was to be bound.
        path: PathBuf,
    },
    /// A captured or requested value is inconsistent with what the kernel
    /// or the socket allows.
    #[error("{step} on fd {fd}: {detail}")]
    Invalid {
        /// The operation.
        step: &'static str,
        /// The file descriptor operated on (-1 when none).
        fd: RawFd,
        /// What was wrong.
        detail: String,
    },
}

/// Shorthand for results of this crate.
pub type Result<T, E = UnixSockError> = std::result::Result<T, E>;

impl UnixSockError {
    pub(crate) fn fd(step: &'static str, fd: RawFd, source: io::Error) -> Self {
        Self::Fd { step, fd, source }
    }

    /// The errno of the system call that failed, when one did.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Self::Netlink { source, .. }
            | Self::Query { source, .. }
            | Self::Fd { source, .. }
            | Self::Path { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }

    pub(crate) fn path(step: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Path {
            step,
            path: path.into(),
            source,
        }
    }
}
