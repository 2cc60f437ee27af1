//! Captured states: plain structs with public fields, serde-ready, so an
//! engine can convert them to its own image format.
//!
//! Sequence numbers follow the kernel's view of the queues:
//!
//! ```text
//!   send side (our data)                      receive side (peer's data)
//!   send_seq                                  recv_seq
//!   |<- send_queue_sent ->|<- send_queue_unsent ->|     |<- recv_queue ->|
//!   snd_una               snd_nxt           write_seq   copied_seq       rcv_nxt
//! ```
//!
//! `send_seq` and `recv_seq` are the sequence numbers of the FIRST byte of
//! each queue (what `TCP_QUEUE_SEQ` must be set to before the queues are
//! refilled), not what `TCP_QUEUE_SEQ` reports (the end of the queue). A FIN,
//! sent or received, is not counted in either: it is implied by `state`.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// TCP states a connection can be captured in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TcpState {
    /// Both directions open.
    Established,
    /// We sent a FIN that the peer has not acknowledged yet.
    FinWait1,
    /// We sent a FIN, the peer acknowledged it; the peer may still send.
    FinWait2,
    /// The peer sent a FIN (we received it); we may still send.
    CloseWait,
    /// The peer sent a FIN, then we sent ours, not acknowledged yet.
    LastAck,
    /// Both sent a FIN at the same time; ours is not acknowledged yet.
    Closing,
    /// Both FINs exchanged and ours acknowledged: the kernel closed the socket (TCP_CLOSE,
    /// out of the connection table, its peer address kept), which the process still holds.
    /// Restored through LAST_ACK: the peer's FIN injected, ours queued as sent, then the
    /// peer's ACK of it injected, which closes it the way the original was closed.
    Close,
}

impl TcpState {
    /// The kernel's TCP state number (`TCP_ESTABLISHED` ...).
    pub fn kernel_number(self) -> u8 {
        match self {
            TcpState::Established => 1,
            TcpState::FinWait1 => 4,
            TcpState::FinWait2 => 5,
            TcpState::CloseWait => 8,
            TcpState::LastAck => 9,
            TcpState::Closing => 11,
            TcpState::Close => 7,
        }
    }

    /// True when we sent (queued) a FIN.
    pub fn fin_sent(self) -> bool {
        matches!(
            self,
            TcpState::FinWait1
                | TcpState::FinWait2
                | TcpState::LastAck
                | TcpState::Closing
                | TcpState::Close
        )
    }

    /// True when the peer acknowledged our FIN.
    pub fn fin_acked(self) -> bool {
        matches!(self, TcpState::FinWait2 | TcpState::Close)
    }

    /// The state a connection was in when a reset that left error `err` (SO_ERROR) came:
    /// CLOSE_WAIT for EPIPE (the peer's FIN came first), else ESTABLISHED (the states our own
    /// FIN leads to give ECONNRESET too; the FIN, purged with the send queue, is counted there
    /// as one more byte).
    pub fn before_reset(err: i32) -> TcpState {
        if err == libc::EPIPE {
            TcpState::CloseWait
        } else {
            TcpState::Established
        }
    }

    /// True when we received the peer's FIN.
    pub fn fin_received(self) -> bool {
        matches!(
            self,
            TcpState::CloseWait | TcpState::LastAck | TcpState::Closing | TcpState::Close
        )
    }
}

/// The kernel's name of a TCP state number, for messages.
pub fn state_name(n: u8) -> &'static str {
    match n {
        1 => "ESTABLISHED",
        2 => "SYN_SENT",
        3 => "SYN_RECV",
        4 => "FIN_WAIT1",
        5 => "FIN_WAIT2",
        6 => "TIME_WAIT",
        7 => "CLOSE",
        8 => "CLOSE_WAIT",
        9 => "LAST_ACK",
        10 => "LISTEN",
        11 => "CLOSING",
        12 => "NEW_SYN_RECV",
        _ => "UNKNOWN",
    }
}

/// Options negotiated in the handshake (restored with `TCP_REPAIR_OPTIONS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandshakeOptions {
    /// Maximum segment size (`TCP_MAXSEG` on the live socket: the current
    /// MSS, restored as the MSS clamp).
    pub mss: u32,
    /// Window scaling, when both ends agreed to it.
    pub window_scale: Option<WindowScale>,
    /// Selective acknowledgements permitted.
    pub sack: bool,
    /// Timestamps (RFC 7323) in use.
    pub timestamps: bool,
}

/// Window scale shifts, one per direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowScale {
    /// Shift applied to windows the peer announces (`tcpi_snd_wscale`).
    pub send: u8,
    /// Shift applied to windows we announce (`tcpi_rcv_wscale`).
    pub receive: u8,
}

/// The window state (`struct tcp_repair_window`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcpWindow {
    /// Sequence number of the segment that last updated the send window.
    pub snd_wl1: u32,
    /// The peer's receive window (our send window), in bytes.
    pub snd_wnd: u32,
    /// The largest window the peer ever announced.
    pub max_window: u32,
    /// Our current receive window, in bytes.
    pub rcv_wnd: u32,
    /// `rcv_nxt` when we last announced a window.
    pub rcv_wup: u32,
}

/// Socket-level options shared by TCP (connected and listening) and UDP.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocketOptions {
    /// `SO_REUSEADDR`.
    pub reuse_addr: bool,
    /// `SO_REUSEPORT`.
    pub reuse_port: bool,
    /// `SO_SNDBUF` as `getsockopt` reports it (the kernel doubles what was
    /// set; restore sets half of it, with `SO_SNDBUFFORCE` when allowed).
    /// Restoring it locks the size: the kernel's autotuning stays off.
    pub send_buffer: i32,
    /// `SO_RCVBUF`, same convention as `send_buffer`.
    pub recv_buffer: i32,
    /// `SO_LINGER`: `Some(seconds)` when lingering is on.
    pub linger: Option<i32>,
    /// `SO_MARK`.
    pub mark: u32,
    /// `IP_TOS` for IPv4 sockets, `IPV6_TCLASS` for IPv6 sockets.
    pub traffic_class: i32,
    /// `IPV6_V6ONLY` (IPv6 sockets only).
    pub v6_only: Option<bool>,
    /// `SO_BROADCAST` (meaningful for UDP).
    pub broadcast: bool,
    /// Every other option of the table (more_options.rs) that differs from a fresh
    /// socket's, as getsockopt returned it; set back at restore.
    pub more: Vec<crate::RawOption>,
}

/// TCP-level options a server or client sets.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcpSocketOptions {
    /// `SO_KEEPALIVE`.
    pub keepalive: bool,
    /// `TCP_KEEPIDLE`, seconds.
    pub keep_idle: i32,
    /// `TCP_KEEPINTVL`, seconds.
    pub keep_interval: i32,
    /// `TCP_KEEPCNT`.
    pub keep_count: i32,
    /// `TCP_NODELAY`.
    pub no_delay: bool,
    /// `TCP_CORK`.
    pub cork: bool,
    /// `TCP_USER_TIMEOUT`, milliseconds (0: system default).
    pub user_timeout: u32,
    /// `TCP_CONGESTION`, the congestion control algorithm's name.
    pub congestion: String,
}

/// One TCP connection, captured in repair mode.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcpConnectionState {
    /// Local address (IPv4, or IPv6, possibly v4-mapped).
    pub local: SocketAddr,
    /// Remote address.
    pub remote: SocketAddr,
    /// TCP state.
    pub state: TcpState,
    /// Sequence number of the first byte of the send queue (`snd_una`).
    pub send_seq: u32,
    /// Sequence number of the first byte of the receive queue (the next byte
    /// the application would read).
    pub recv_seq: u32,
    /// Data sent but not acknowledged yet (first part of the send queue,
    /// `SIOCOUTQ - SIOCOUTQNSD` bytes). Restored as sent: the kernel
    /// retransmits it when its timer fires.
    pub send_queue_sent: Vec<u8>,
    /// Data written by the application but not sent yet (the tail of the
    /// send queue, `SIOCOUTQNSD` bytes). Sent normally after repair mode is
    /// left.
    pub send_queue_unsent: Vec<u8>,
    /// Data received and acknowledged but not read yet by the application.
    pub recv_queue: Vec<u8>,
    /// Options negotiated in the handshake.
    pub handshake: HandshakeOptions,
    /// `TCP_TIMESTAMP`: the current timestamp value (clock plus the
    /// connection's offset) when timestamps are in use; restoring it keeps
    /// the peer's PAWS check happy.
    pub timestamp: Option<u32>,
    /// The window state; `None` on kernels without `TCP_REPAIR_WINDOW`.
    pub window: Option<TcpWindow>,
    /// Socket-level options.
    pub socket: SocketOptions,
    /// TCP-level options.
    pub tcp: TcpSocketOptions,
    /// A connection reset by its peer whose error the process had not read (taken by the
    /// dump, [`crate::Repair::enter_reset`]): ECONNRESET, or EPIPE (reset after the peer's
    /// FIN); 0: none. `state` is then [`TcpState::Close`] and the queues are as they were
    /// when the reset came ([`TcpState::before_reset`]).
    pub reset_error: i32,
    /// Shut for reading by its owner (`shutdown(SHUT_RD)`) while the peer's FIN had not come:
    /// reads return EOF, poll reports POLLRDHUP. (A FIN received shuts it the same way, and
    /// comes back with `state`.)
    #[serde(default)]
    pub shut_read: bool,
}

impl TcpConnectionState {
    /// Total bytes in the send queue.
    pub fn send_queue_len(&self) -> usize {
        self.send_queue_sent.len() + self.send_queue_unsent.len()
    }
}

/// A listening TCP socket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerState {
    /// The bound address.
    pub local: SocketAddr,
    /// The `listen()` backlog (`sk_max_ack_backlog`, read with sock_diag as
    /// `idiag_wqueue`); `None` when sock_diag could not see the socket (it
    /// lives in another network namespace than the caller).
    pub backlog: Option<u32>,
    /// Connections in the accept queue at capture time that were dropped
    /// (only with [`crate::InFlight::Skip`]; 0 otherwise).
    pub dropped_pending: u32,
    /// Socket-level options.
    pub socket: SocketOptions,
    /// TCP-level options (inherited by accepted connections).
    pub tcp: TcpSocketOptions,
    /// `SO_REUSEPORT` is off, but another listener shares the address and port: only a
    /// `SO_REUSEPORT` group lets two listen there, so this one was bound and listening with
    /// the option on, cleared since. The restore does the same (without, its bind fails
    /// EADDRINUSE beside the others).
    #[serde(default)]
    pub bound_with_reuseport: bool,
}

/// A UDP socket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UdpSocketState {
    /// The bound address (port 0 when never bound nor used).
    pub local: SocketAddr,
    /// The connected peer, if `connect()` was called.
    pub remote: Option<SocketAddr>,
    /// Socket-level options.
    pub socket: SocketOptions,
    /// Bytes of the receive queue left behind at capture (images of older versions, which
    /// did not carry the queue); 0 now: the queue is carried in
    /// [`crate::UdpExtras::queue`] or the capture refuses it.
    pub dropped_recv_bytes: u32,
}

/// A datagram waiting in a UDP or UDP-lite socket's receive queue, with what its headers
/// show the receiver.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedDatagram {
    /// Its bytes.
    pub payload: Vec<u8>,
    /// Its source address and port (an IPv4 one for an IPv4 datagram an IPv6 socket holds,
    /// which shows it v4-mapped).
    pub source: SocketAddr,
    /// The destination address and port of its headers (IP_ORIGDSTADDR).
    pub destination: SocketAddr,
    /// The TTL (IPv4) or hop limit (IPv6) of its IP header.
    pub ttl: u8,
    /// The TOS (IPv4) or traffic class (IPv6) of its IP header.
    pub tos: u8,
    /// The interface IP_PKTINFO / IPV6_PKTINFO showed (0: none noted on arrival).
    pub ifindex: u32,
}
