//! Errors of the network lock and of namespace set-up.

use std::fmt;

use nix::errno::Errno;

/// A failure of the network lock, naming the lock's table and the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// The lock id cannot name an nftables table.
    #[error("lock {id:?}: invalid lock id: {reason}")]
    InvalidId {
        /// The id as given.
        id: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A connection tuple mixes IPv4 and IPv6.
    #[error("lock {table}: connection {local} -> {remote}: local and remote are of different address families")]
    MixedFamilies {
        /// The lock's table, `cryo-<id>`.
        table: String,
        /// Local end as given.
        local: std::net::SocketAddr,
        /// Remote end as given.
        remote: std::net::SocketAddr,
    },
    /// A netlink socket operation failed (open, setsockopt, send, receive).
    #[error("lock {table}: {step}: {errno}")]
    Socket {
        /// The lock's table, `cryo-<id>`, or `*` for an operation on every lock.
        table: String,
        /// The socket operation.
        step: &'static str,
        /// The error.
        errno: Errno,
    },
    /// The kernel refused a message of the batch.
    #[error("lock {table}: {step}: {}{}", errno.desc(), ExtAck(message))]
    Kernel {
        /// The lock's table, `cryo-<id>`, or `*` for an operation on every lock.
        table: String,
        /// The step the refused message carried out, e.g. `new set v4`.
        step: String,
        /// The error number the kernel answered with.
        errno: Errno,
        /// The kernel's extended-ack message, if it sent one.
        message: Option<String>,
    },
    /// The kernel's answer did not make sense, or did not come.
    #[error("lock {table}: {step}: {detail}")]
    Protocol {
        /// The lock's table, `cryo-<id>`, or `*` for an operation on every lock.
        table: String,
        /// The step.
        step: &'static str,
        /// What was wrong.
        detail: String,
    },
}

struct ExtAck<'a>(&'a Option<String>);

impl fmt::Display for ExtAck<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(m) if !m.is_empty() => write!(f, " ({m})"),
            _ => Ok(()),
        }
    }
}

impl LockError {
    /// The error number behind this error, if there is one.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            LockError::Socket { errno, .. } | LockError::Kernel { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

/// A failure to set up a network namespace.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// unshare(CLONE_NEWNET) failed.
    #[error("netns: unshare(CLONE_NEWNET): {0}")]
    Unshare(Errno),
    /// setns(CLONE_NEWNET) failed.
    #[error("netns: setns(CLONE_NEWNET): {0}")]
    Join(Errno),
    /// A link could not be found or brought up.
    #[error("netns: bring {link} up: {step}: {errno}")]
    LinkUp {
        /// The link's name.
        link: String,
        /// The step that failed.
        step: &'static str,
        /// The error.
        errno: Errno,
    },
    /// A netlink request about the namespace's links, addresses, routes... failed.
    #[error("netns: {step}: {errno}")]
    Netlink {
        /// The request (and the object it was about).
        step: String,
        /// The kernel's answer.
        errno: Errno,
    },
    /// A file of the namespace (/proc/sys/net, /proc/thread-self/net) could not be read.
    #[error("netns: read {}: {error}", path.display())]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// The error.
        error: std::io::Error,
    },
    /// A sysctl could not be written.
    #[error("netns: write {}: {error}", path.display())]
    Write {
        /// The sysctl's file.
        path: std::path::PathBuf,
        /// The error.
        error: std::io::Error,
    },
    /// The thread running in the new namespace could not be spawned.
    #[error("netns: spawn thread: {0}")]
    Spawn(std::io::Error),
    /// Something of the namespace cannot be made again as it is, or was not.
    #[error("netns: {what}: {why}")]
    Unrestorable {
        /// The object (a firewall table, rule, conntrack entry...).
        what: String,
        /// Why.
        why: String,
    },
}

impl NetnsError {
    /// The error number behind this error.
    pub fn errno(&self) -> Errno {
        match self {
            NetnsError::Unshare(errno)
            | NetnsError::Join(errno)
            | NetnsError::LinkUp { errno, .. }
            | NetnsError::Netlink { errno, .. } => *errno,
            NetnsError::Read { error, .. }
            | NetnsError::Write { error, .. }
            | NetnsError::Spawn(error) => {
                Errno::from_raw(error.raw_os_error().unwrap_or(libc::EIO))
            }
            NetnsError::Unrestorable { .. } => Errno::EOPNOTSUPP,
        }
    }
}
