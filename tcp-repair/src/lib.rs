//! Capture and restore of one TCP connection with TCP_REPAIR, as a safe
//! library useful on its own (as libsoccr is for CRIU); plus the listening
//! TCP and UDP sockets an engine meets beside them: TCP sockets not connected
//! or connecting (unconnected.rs), UDP, UDP-lite, ping and raw sockets
//! (udp.rs), the datagrams waiting in UDP queues (udp_queue.rs) and their multicast
//! memberships (multicast.rs).
//!
//! ```text
//!  live socket ──Repair::enter──▶ Repair ──capture()──▶ TcpConnectionState
//!                                   │ drop / leave_quiet(): connection goes on untouched
//!                                   │ hold(): stay in repair, close the fd: peer sees nothing
//!                                   │ abandon(): disconnect in repair: peer sees nothing, address pair free at once
//!                                   ▼
//!  TcpConnectionState ──restore()──▶ RestoredSocket (repair mode, nothing sent yet)
//!                                   │ finish_quiet(): TCP_REPAIR_OFF_NO_WP
//!                                   │ finish_probe(): TCP_REPAIR_OFF (window probe: dead peer found at once)
//!                                   ▼
//!                                 OwnedFd, the same connection
//!
//!  live connection ──send_probe()──▶ PeerProbe ──answer()──▶ Waiting | Alive | Reset
//! ```
//!
//! A socket in state CLOSE that [`closed_history`] finds closed after a connection
//! ([`PastConnection::Closed`]) is entered with [`Repair::enter_closed`] and captured in
//! [`TcpState::Close`]; [`restore`] brings it back through LAST_ACK, the peer's FIN and ACK
//! injected, destroying a TIME_WAIT entry of its own pair that stands in the way.
//!
//! The engine calls [`Repair::enter`] on a duplicate of the target's socket
//! obtained with `pidfd_getfd`: it is the same socket, so repair mode set on
//! the duplicate applies to the target's socket. Everything needs
//! CAP_NET_ADMIN (repair mode), and half-closed restores need CAP_NET_RAW.
//! The segments injected for half-closed restores carry `SO_MARK` [`INJECT_MARK`], for a
//! firewall holding the connection's packets back to let through.
//! The fd's flags (O_NONBLOCK) are the caller's business: restored sockets
//! are blocking and close-on-exec.
//!
//! Order on restore: listeners first (their address is then shared by the
//! restored connections, whose repair mode forces address reuse), then
//! connections.
#![warn(missing_docs)]

mod diag;
mod error;
mod inject;
mod listen;
mod more_options;
mod multicast;
mod options;
mod probe;
mod repair;
mod restore;
mod state;
mod sys;
mod udp;
mod udp_queue;
mod unconnected;

/// Integer and byte socket options at any level, for an engine inspecting sockets beside the
/// ones this crate captures: the one socket-option backend of the workspace.
pub mod sockopt {
    pub use crate::sys::{get_bytes, get_int, set_bytes, set_int};
}

pub use diag::md5_keyed_sockets;
pub use error::{Operation, Result, SocketName, TcpRepairError};
pub use inject::INJECT_MARK;
pub use listen::{
    capture_listener, listener_diag, parse_listener_answer, restore_listener, InFlight,
    ListenerDiag,
};
pub use more_options::{is_known as is_known_option, RawOption};
pub use multicast::{join as multicast_join, membership as multicast_membership, Membership};
pub use options::{apply_socket_level, capture_socket_level};
pub use probe::{send_probe, PeerAnswer, PeerProbe};
pub use repair::{capture_and_leave, disconnect, kernel_tcp_state, Repair};
pub use restore::{close_silently, enter_repair_to_close, leave_repair, restore, RestoredSocket};
pub use state::{
    state_name, HandshakeOptions, ListenerState, QueuedDatagram, SocketOptions, TcpConnectionState,
    TcpSocketOptions, TcpState, TcpWindow, UdpSocketState, WindowScale,
};
pub use udp::{
    capture_udp, capture_udp_extras, is_datagram_kind, restore_udp, restore_udp_with, UdpExtras,
    INT_OPTIONS,
};
pub use unconnected::{
    capture_closed, capture_connecting, capture_unconnected, closed_history, restore_connecting,
    restore_unconnected, ClosedHistory, ConnectingState, PastConnection, UnconnectedState,
};
