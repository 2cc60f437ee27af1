//! sock_diag/unix_diag queries, non-consuming queue capture and the graph of connected unix sockets.
//!
//! - [`diag`]: what the kernel says about unix sockets (one netlink dump,
//!   a `HashMap` by inode).
//! - [`queue`]: receive queues read with `MSG_PEEK` + `SO_PEEK_OFF`, with
//!   their SCM_RIGHTS descriptors and credentials, leaving them intact.
//! - [`restore`]: helpers the restored task calls to recreate sockets,
//!   names, listeners, pending connections and queues.
//! - [`graph`]: which dumped sockets are connected to which, and which
//!   have a peer outside the dump.
//! - [`unlinked`]: a path-bound socket whose file is gone, bound again
//!   under its name without leaving a file.
//! - [`family_diag`]: packet_diag and netlink_diag, for the packet and
//!   netlink sockets a process holds beside its unix ones.
#![warn(missing_docs)]

pub mod diag;
pub mod error;
pub mod family_diag;
pub mod graph;
pub mod queue;
pub mod restore;
mod sys;
pub mod unlinked;

pub use diag::{
    dump_all, query_inode, DiagSocket, Shutdown, SockState, SockType, UnixName, UnixSockInfo, VfsId,
};
pub use error::{Result, UnixSockError};
pub use queue::{
    accept_waiting, capture_queue, error_pending, recv_message, CapturedQueue, Creds, QueuedMessage,
};
