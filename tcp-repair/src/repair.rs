//! Capture: a live socket put in repair mode, read without disturbing it.
//!
//! [`Repair::enter`] switches `TCP_REPAIR` on; the returned guard is the only
//! way to [`Repair::capture`]. Dropping the guard leaves repair mode with
//! `TCP_REPAIR_OFF_NO_WP` (no window probe), so a capture that is abandoned,
//! or one with `--leave-running` semantics, leaves the connection exactly as
//! it was: nothing is read from the queues, nothing is sent.
//!
//! When the dumped process is killed instead, its socket must be closed while
//! still in repair mode: closing a socket in repair mode sends neither FIN nor
//! RST, so the peer sees nothing. [`Repair::hold`] keeps repair mode on for
//! that.

use std::mem::size_of;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tracing::debug;

use crate::error::{Ctx, Operation, Result, SocketName, TcpRepairError};
use crate::options;
use crate::state::{
    state_name, HandshakeOptions, SocketOptions, TcpConnectionState, TcpState, TcpWindow,
    WindowScale,
};
use crate::sys;

const TCPI_OPT_TIMESTAMPS: u8 = 1;
const TCPI_OPT_SACK: u8 = 2;
const TCPI_OPT_WSCALE: u8 = 4;

/// How many times a capture re-reads the queues when data arrives meanwhile.
const CAPTURE_ATTEMPTS: usize = 4;

/// The local and remote address of a socket, as far as known.
/// Whether socket `fd` is of the IPv6 family (SO_DOMAIN), else IPv4.
pub(crate) fn is_ipv6(fd: BorrowedFd<'_>, ctx: Ctx) -> Result<bool> {
    let domain = sys::get_int(fd, libc::SOL_SOCKET, libc::SO_DOMAIN)
        .map_err(ctx.sys("getsockopt SO_DOMAIN"))?;
    Ok(domain == libc::AF_INET6)
}

/// The peer address SO_PEERNAME gives: unlike getpeername (ENOTCONN in CLOSE and SYN_SENT),
/// it answers for any socket that still has a destination port (inet_getname, peer 2). The
/// buffer must not be longer than the family's address (sock_getsockopt: EINVAL).
pub(crate) fn peer_address(fd: BorrowedFd<'_>) -> Option<SocketAddr> {
    let mut buf = [0u8; 28];
    let len = match sys::get_int(fd, libc::SOL_SOCKET, libc::SO_DOMAIN).ok()? {
        libc::AF_INET => size_of::<libc::sockaddr_in>(),
        _ => size_of::<libc::sockaddr_in6>(),
    };
    let n = sys::get_bytes(fd, libc::SOL_SOCKET, libc::SO_PEERNAME, &mut buf[..len]).ok()?;
    let buf = buf.get(..n)?;
    let family = i32::from(u16::from_ne_bytes([*buf.first()?, *buf.get(1)?]));
    let port = u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?]);
    let ip: std::net::IpAddr = match family {
        libc::AF_INET => <[u8; 4]>::try_from(buf.get(4..8)?).ok()?.into(),
        libc::AF_INET6 => <[u8; 16]>::try_from(buf.get(8..24)?).ok()?.into(),
        _ => return None,
    };
    (port != 0).then_some(SocketAddr::new(ip, port))
}

pub(crate) fn socket_name(fd: BorrowedFd<'_>) -> SocketName {
    let s = SockRef::from(&fd);
    let conv = |a: std::io::Result<socket2::SockAddr>| a.ok().and_then(|a| a.as_socket());
    SocketName::new(conv(s.local_addr()), conv(s.peer_addr()))
}

/// Maps a kernel TCP state number to a capturable state, or the error that
/// says why it is not.
pub(crate) fn classify_state(n: u8, op: Operation, sock: SocketName) -> Result<TcpState> {
    let state = state_name(n);
    match n {
        1 => Ok(TcpState::Established),
        4 => Ok(TcpState::FinWait1),
        5 => Ok(TcpState::FinWait2),
        8 => Ok(TcpState::CloseWait),
        9 => Ok(TcpState::LastAck),
        11 => Ok(TcpState::Closing),
        // Only through Repair::enter_closed, which checks the socket closed after a connection.
        7 => Ok(TcpState::Close),
        2 | 3 | 12 => Err(TcpRepairError::TemporaryState { op, sock, state }),
        10 => Err(TcpRepairError::UnsupportedState {
            op,
            sock,
            state,
            why: "a listening socket: use capture_listener",
        }),
        _ => Err(TcpRepairError::UnsupportedState {
            op,
            sock,
            state,
            why: "not a connection (closed or never connected): nothing to repair",
        }),
    }
}

/// A TCP socket in repair mode, captured without being disturbed.
///
/// Borrow-checked against the fd it was entered on, so the fd cannot be
/// closed while the guard lives.
#[derive(Debug)]
pub struct Repair<'fd> {
    fd: BorrowedFd<'fd>,
    name: SocketName,
    held: bool,
    /// SO_REUSEADDR before repair mode forced address reuse: what leaving repair mode
    /// (which clears it) puts back.
    reuse_addr: bool,
    /// A connection reset by its peer: the error the process had not read (ECONNRESET or
    /// EPIPE), taken by [`Repair::enter_reset`].
    reset_error: Option<i32>,
}

impl<'fd> Repair<'fd> {
    /// Puts a connected TCP socket in repair mode.
    ///
    /// Refuses handshake states (SYN_SENT, SYN_RECV: temporary, retry later),
    /// listening sockets (see [`crate::capture_listener`]) and closed ones.
    /// Needs CAP_NET_ADMIN in the socket's network namespace.
    pub fn enter(fd: BorrowedFd<'fd>) -> Result<Self> {
        Self::enter_named(fd, socket_name(fd))
    }

    /// As [`Repair::enter`], for a socket whose addresses the caller has read already.
    pub fn enter_named(fd: BorrowedFd<'fd>, name: SocketName) -> Result<Self> {
        let ctx = Ctx::new(Operation::EnterRepair, name);
        let info = sys::tcp_info(fd).map_err(ctx.sys("getsockopt TCP_INFO"))?;
        if classify_state(info.state, Operation::EnterRepair, name)? == TcpState::Close {
            return Err(TcpRepairError::UnsupportedState {
                op: Operation::EnterRepair,
                sock: name,
                state: state_name(info.state),
                why: "closed: see Repair::enter_closed",
            });
        }
        Self::enter_unchecked(fd, name)
    }

    /// Puts a TCP socket in state CLOSE that was closed after a connection (both FINs, or a
    /// reset whose error was read: [`crate::closed_history`] says
    /// [`crate::PastConnection::Closed`]) in repair mode, to be captured as a connection
    /// in [`TcpState::Close`]. `name` carries the peer (SO_PEERNAME: getpeername has none in
    /// CLOSE). Refuses any other closed socket, and one with a pending error.
    pub fn enter_closed(fd: BorrowedFd<'fd>, name: SocketName) -> Result<Self> {
        Self::enter_closed_after(fd, name, false)
    }

    /// As [`Repair::enter_closed`], for a connection reset by its peer whose error the process
    /// has not read: the error is taken (SO_ERROR: the socket no longer holds it, so only a
    /// dump that ends the process may call this) and must be one a reset of a connection
    /// leaves: ECONNRESET, or EPIPE (reset after the peer's FIN, in CLOSE_WAIT). Captured as
    /// [`TcpState::Close`] with [`TcpConnectionState::reset_error`]: the restore makes the
    /// connection as it was when the reset came and injects one.
    pub fn enter_reset(fd: BorrowedFd<'fd>, name: SocketName) -> Result<Self> {
        Self::enter_closed_after(fd, name, true)
    }

    fn enter_closed_after(fd: BorrowedFd<'fd>, name: SocketName, reset: bool) -> Result<Self> {
        let ctx = Ctx::new(Operation::EnterRepair, name);
        let h = crate::unconnected::closed_history(fd)?;
        let why = match h.past {
            _ if reset && !h.pending_error => Some("no error is pending (SO_ERROR)"),
            _ if !reset && h.pending_error => Some("an error is pending (SO_ERROR)"),
            crate::PastConnection::Closed { .. } if h.peer.is_some() && h.peer == name.remote => {
                None
            }
            crate::PastConnection::Closed { .. } => Some("its peer is not the one named"),
            crate::PastConnection::Refused(why) => Some(why),
            crate::PastConnection::Nothing | crate::PastConnection::ConnectFailed => {
                Some("not closed after a connection")
            }
        };
        if let Some(why) = why {
            return Err(ctx.invalid("closed connection", why));
        }
        require_state(fd, ctx, name, 7, "not a TCP socket in state CLOSE")?;
        let reset_error = if reset {
            let err = sys::get_int(fd, libc::SOL_SOCKET, libc::SO_ERROR)
                .map_err(ctx.sys("getsockopt SO_ERROR"))?;
            if err != libc::ECONNRESET && err != libc::EPIPE {
                return Err(ctx.invalid(
                    "closed connection",
                    format!(
                        "its pending error is {} (not a reset: a timeout or an abort), which \
                         cannot be made again; the dump took it",
                        std::io::Error::from_raw_os_error(err)
                    ),
                ));
            }
            Some(err)
        } else {
            None
        };
        let mut repair = Self::enter_unchecked(fd, name)?;
        repair.reset_error = reset_error;
        Ok(repair)
    }

    fn enter_unchecked(fd: BorrowedFd<'fd>, name: SocketName) -> Result<Self> {
        let ctx = Ctx::new(Operation::EnterRepair, name);
        // Read before repair mode: it forces reuse (getsockopt then reads 2), and leaving it
        // clears the flag whatever the application had set.
        let reuse_addr = sys::get_int(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR)
            .map_err(ctx.sys("getsockopt SO_REUSEADDR"))?
            != 0;
        sys::set_int(fd, libc::SOL_TCP, libc::TCP_REPAIR, sys::TCP_REPAIR_ON)
            .map_err(ctx.sys("setsockopt TCP_REPAIR"))?;
        debug!(sock = %name, "entered repair mode");
        Ok(Repair {
            fd,
            name,
            held: false,
            reuse_addr,
            reset_error: None,
        })
    }

    /// The socket's addresses.
    pub fn name(&self) -> SocketName {
        self.name
    }

    /// Reads the whole connection: addresses, state, sequence numbers, both
    /// queues (peeked, not consumed), handshake options, timestamp, window
    /// and socket options.
    ///
    /// The queues must not change meanwhile: freeze the owner and lock the
    /// network first. Data arriving during the capture is detected; the
    /// capture is retried a few times and then fails.
    pub fn capture(&self) -> Result<TcpConnectionState> {
        let ctx = Ctx::new(Operation::Capture, self.name);
        let (local, remote) = match (self.name.local, self.name.remote) {
            (Some(l), Some(r)) => (l, r),
            _ => return Err(ctx.invalid("getsockname/getpeername", "socket has no addresses")),
        };
        let mut last_err = None;
        for _ in 0..CAPTURE_ATTEMPTS {
            match self.capture_once(ctx, local, remote) {
                Ok(Some(state)) => return Ok(state),
                Ok(None) => {
                    last_err = Some(ctx.invalid(
                        "queues",
                        "the queues changed during capture (freeze the owner and lock the network first)",
                    ))
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_err.expect("at least one attempt"))
    }

    /// One capture attempt; `Ok(None)` when the queues moved meanwhile.
    fn capture_once(
        &self,
        ctx: Ctx,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> Result<Option<TcpConnectionState>> {
        let fd = self.fd;
        // Off while the queues are peeked (from their first byte, the offset left where the
        // owner had it), back on before the options are read.
        let peek_offset = PeekOffsetOff::new(fd, ctx)?;
        let info = sys::tcp_info(fd).map_err(ctx.sys("getsockopt TCP_INFO"))?;
        let closed = classify_state(info.state, Operation::Capture, self.name)?;
        // A reset connection's queues are read as they were when the reset came.
        let state = match self.reset_error {
            Some(err) => TcpState::before_reset(err),
            None => closed,
        };

        let outq = sys::ioctl_int(fd, libc::TIOCOUTQ as _).map_err(ctx.sys("ioctl SIOCOUTQ"))?;
        let unsent =
            sys::ioctl_int(fd, libc::SIOCOUTQNSD as _).map_err(ctx.sys("ioctl SIOCOUTQNSD"))?;
        let inq = sys::ioctl_int(fd, libc::FIONREAD as _).map_err(ctx.sys("ioctl SIOCINQ"))?;
        let Some(urgent) = urgent_data_queued(fd, inq, ctx)? else {
            return Ok(None);
        };
        if urgent {
            return Err(ctx.invalid(
                "receive queue",
                "urgent data (MSG_OOB) is queued, read or not: a peek stops at its mark and a \
                 restored queue would hold it as ordinary bytes (SO_OOBINLINE, the urgent mark)",
            ));
        }
        let (mut outq, mut unsent, inq) = (outq as u32, unsent as u32, inq as u32);
        if state.fin_sent() {
            // The FIN takes a sequence number and is counted by SIOCOUTQ (and
            // by SIOCOUTQNSD while unsent) until acknowledged; it carries no data.
            if !state.fin_acked() {
                outq = outq.saturating_sub(1);
            }
            unsent = unsent.saturating_sub(1);
        }
        if unsent > outq {
            return Ok(None);
        }

        let (recv_end, recv_queue) = self.read_queue(ctx, sys::TCP_RECV_QUEUE, inq)?;
        let (send_end, send_queue) = if self.reset_error.is_some() {
            // The reset purged the send queue, its sequence numbers still counted by
            // SIOCOUTQ: as many bytes of nothing, restored as sent and purged again.
            let end = self.queue_seq(ctx, sys::TCP_SEND_QUEUE)?;
            (end, Some(vec![0u8; outq as usize]))
        } else {
            self.read_queue(ctx, sys::TCP_SEND_QUEUE, outq)?
        };
        sys::set_int(fd, libc::SOL_TCP, libc::TCP_REPAIR_QUEUE, sys::TCP_NO_QUEUE)
            .map_err(ctx.sys("setsockopt TCP_REPAIR_QUEUE"))?;
        let (Some(recv_queue), Some(mut send_queue)) = (recv_queue, send_queue) else {
            return Ok(None);
        };
        // Inside the re-check: a segment taken in meanwhile moves the window with the queue.
        let window = match sys::get_repair_window(fd) {
            Ok(w) => Some(TcpWindow {
                snd_wl1: w.snd_wl1,
                snd_wnd: w.snd_wnd,
                max_window: w.max_window,
                rcv_wnd: w.rcv_wnd,
                rcv_wup: w.rcv_wup,
            }),
            Err(nix::errno::Errno::ENOPROTOOPT) => None,
            Err(e) => return Err(ctx.sys("getsockopt TCP_REPAIR_WINDOW")(e)),
        };
        // Re-check that nothing moved while we peeked.
        let inq2 = sys::ioctl_int(fd, libc::FIONREAD as _).map_err(ctx.sys("ioctl SIOCINQ"))?;
        let recv_end2 = self.queue_seq(ctx, sys::TCP_RECV_QUEUE)?;
        sys::set_int(fd, libc::SOL_TCP, libc::TCP_REPAIR_QUEUE, sys::TCP_NO_QUEUE)
            .map_err(ctx.sys("setsockopt TCP_REPAIR_QUEUE"))?;
        if inq2 as u32 != inq || recv_end2 != recv_end {
            return Ok(None);
        }
        peek_offset.put_back()?;

        // TCP_QUEUE_SEQ reports the END of each queue (write_seq, rcv_nxt),
        // FIN included: turn them into the sequence of the first byte.
        let send_data_end = send_end.wrapping_sub(state.fin_sent() as u32);
        let recv_data_end = recv_end.wrapping_sub(state.fin_received() as u32);
        let send_seq = send_data_end.wrapping_sub(outq);
        let recv_seq = recv_data_end.wrapping_sub(inq);

        let unsent = if self.reset_error.is_some() {
            0
        } else {
            unsent
        };
        let send_queue_unsent = send_queue.split_off((outq - unsent) as usize);
        let send_queue_sent = send_queue;

        let mss = sys::get_int(fd, libc::SOL_TCP, libc::TCP_MAXSEG)
            .map_err(ctx.sys("getsockopt TCP_MAXSEG"))? as u32;
        let timestamps = info.options & TCPI_OPT_TIMESTAMPS != 0;
        let timestamp = if timestamps {
            Some(
                sys::get_int(fd, libc::SOL_TCP, libc::TCP_TIMESTAMP)
                    .map_err(ctx.sys("getsockopt TCP_TIMESTAMP"))? as u32,
            )
        } else {
            None
        };
        let ipv6 = local.is_ipv6();
        // RCV_SHUTDOWN before the peer's FIN came: the owner's shutdown(SHUT_RD) (tcp_poll
        // reports POLLRDHUP for either). A reset shut it both ways, made again by the reset.
        let shut_read = self.reset_error.is_none()
            && !state.fin_received()
            && sys::poll_now(fd, libc::POLLRDHUP).map_err(ctx.io("poll (shutdown state)"))?
                & libc::POLLRDHUP
                != 0;
        let state = TcpConnectionState {
            local,
            remote,
            state: if self.reset_error.is_some() {
                closed
            } else {
                state
            },
            reset_error: self.reset_error.unwrap_or(0),
            send_seq,
            recv_seq,
            send_queue_sent,
            send_queue_unsent,
            recv_queue,
            handshake: HandshakeOptions {
                mss,
                window_scale: (info.options & TCPI_OPT_WSCALE != 0).then_some(WindowScale {
                    send: info.snd_wscale,
                    receive: info.rcv_wscale,
                }),
                sack: info.options & TCPI_OPT_SACK != 0,
                timestamps,
            },
            timestamp,
            window,
            socket: SocketOptions {
                // What the application set, not repair mode's forced reuse.
                reuse_addr: self.reuse_addr,
                ..options::capture_tcp_socket(fd, ipv6, false, ctx)?
            },
            tcp: options::capture_tcp(fd, ctx)?,
            shut_read,
        };
        debug!(
            sock = %self.name,
            state = ?state.state,
            sent = state.send_queue_sent.len(),
            unsent = state.send_queue_unsent.len(),
            recv = state.recv_queue.len(),
            "captured"
        );
        Ok(Some(state))
    }

    fn queue_seq(&self, ctx: Ctx, queue: libc::c_int) -> Result<u32> {
        sys::set_int(self.fd, libc::SOL_TCP, libc::TCP_REPAIR_QUEUE, queue)
            .map_err(ctx.sys("setsockopt TCP_REPAIR_QUEUE"))?;
        Ok(sys::get_int(self.fd, libc::SOL_TCP, libc::TCP_QUEUE_SEQ)
            .map_err(ctx.sys("getsockopt TCP_QUEUE_SEQ"))? as u32)
    }

    /// Selects `queue`, reads its end sequence and peeks `len` bytes of it;
    /// `None` for the data when the queue does not hold exactly `len` bytes.
    fn read_queue(&self, ctx: Ctx, queue: libc::c_int, len: u32) -> Result<(u32, Option<Vec<u8>>)> {
        let end = self.queue_seq(ctx, queue)?;
        if len == 0 {
            return Ok((end, Some(Vec::new())));
        }
        // One byte more than expected, to notice a queue that grew.
        let mut buf = vec![0u8; len as usize + 1];
        let step = if queue == sys::TCP_RECV_QUEUE {
            "recv MSG_PEEK (receive queue)"
        } else {
            "recv MSG_PEEK (send queue)"
        };
        let n = match sys::recv(self.fd, &mut buf, libc::MSG_PEEK | libc::MSG_DONTWAIT) {
            Ok(n) => n,
            Err(nix::errno::Errno::EAGAIN) => 0,
            Err(e) => return Err(ctx.sys(step)(e)),
        };
        if n != len as usize {
            return Ok((end, None));
        }
        buf.truncate(n);
        Ok((end, Some(buf)))
    }

    /// Leaves repair mode without a window probe (`TCP_REPAIR_OFF_NO_WP`):
    /// the connection goes on as if nothing happened. Same as dropping the
    /// guard, but reports a failure.
    pub fn leave_quiet(mut self) -> Result<()> {
        self.held = true;
        leave(
            self.fd,
            sys::TCP_REPAIR_OFF_NO_WP,
            self.name,
            self.reuse_addr,
        )
    }

    /// Leaves repair mode with a window probe (`TCP_REPAIR_OFF`).
    pub fn leave_probe(mut self) -> Result<()> {
        self.held = true;
        leave(self.fd, sys::TCP_REPAIR_OFF, self.name, self.reuse_addr)
    }

    /// Keeps repair mode on: the caller is about to close the socket (or kill
    /// its owner), and a socket closed in repair mode sends nothing to the
    /// peer (no FIN, no RST). The socket stays in repair mode until closed or
    /// until someone sets `TCP_REPAIR` off.
    pub fn hold(mut self) {
        self.held = true;
    }

    /// Ends the connection here without a word to the peer: in repair mode
    /// a disconnect (`connect(AF_UNSPEC)`) sends neither FIN nor RST, and it
    /// takes the socket out of the connection table at once. Unlike closing
    /// the fd, this holds while another process still has a copy of the fd
    /// (a child between fork and exec), so the address pair is free for a
    /// restore the moment this returns. The fd stays open, on a closed socket.
    pub fn abandon(mut self) -> Result<()> {
        self.held = true;
        disconnect_named(self.fd, self.name)
    }
}

/// Whether the receive queue of `fd` holds urgent data (the byte a MSG_OOB send marks, still
/// to be read or read out of band already, with bytes after it): SIOCINQ counts the bytes up
/// to the mark without SO_OOBINLINE, all of them with it (tcp_inq). `inq` is SIOCINQ with the
/// owner's SO_OOBINLINE; it is read again with the other, then the owner's put back (the owner
/// is frozen meanwhile). None when bytes arrived meanwhile (SIOCINQ with the owner's setting
/// reads more after): the two counts then tell nothing, and the capture is made again.
fn urgent_data_queued(fd: BorrowedFd<'_>, inq: i32, ctx: Ctx) -> Result<Option<bool>> {
    let inline = sys::get_int(fd, libc::SOL_SOCKET, libc::SO_OOBINLINE)
        .map_err(ctx.sys("getsockopt SO_OOBINLINE"))?;
    let set = |on: i32| {
        sys::set_int(fd, libc::SOL_SOCKET, libc::SO_OOBINLINE, on)
            .map_err(ctx.sys("setsockopt SO_OOBINLINE"))
    };
    set(i32::from(inline == 0))?;
    let other = sys::ioctl_int(fd, libc::FIONREAD as _).map_err(ctx.sys("ioctl SIOCINQ"));
    set(inline)?;
    let other = other?;
    let again = sys::ioctl_int(fd, libc::FIONREAD as _).map_err(ctx.sys("ioctl SIOCINQ"))?;
    Ok((again == inq).then_some(other != inq))
}

/// SO_PEEK_OFF of a connection switched off (-1) for a capture, put back by
/// [`PeekOffsetOff::put_back`] or when dropped. With an offset set (0 or more), a MSG_PEEK
/// reads from it and moves it on: the capture would read the queue from there and leave the
/// owner's offset at the end of what it peeked.
struct PeekOffsetOff<'fd> {
    fd: BorrowedFd<'fd>,
    /// The owner's offset, when there is one to put back.
    saved: Option<i32>,
    ctx: Ctx,
}

impl<'fd> PeekOffsetOff<'fd> {
    fn new(fd: BorrowedFd<'fd>, ctx: Ctx) -> Result<Self> {
        let saved = match sys::get_int(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF) {
            Ok(off) if off >= 0 => Some(off),
            Ok(_) => None,
            // No SO_PEEK_OFF on TCP before linux 6.10: nothing to switch off.
            Err(nix::errno::Errno::EOPNOTSUPP | nix::errno::Errno::ENOPROTOOPT) => None,
            Err(e) => return Err(ctx.sys("getsockopt SO_PEEK_OFF")(e)),
        };
        if saved.is_some() {
            sys::set_int(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF, -1)
                .map_err(ctx.sys("setsockopt SO_PEEK_OFF (off for the capture)"))?;
        }
        Ok(PeekOffsetOff { fd, saved, ctx })
    }

    fn put_back(mut self) -> Result<()> {
        match self.saved.take() {
            Some(off) => sys::set_int(self.fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF, off)
                .map_err(self.ctx.sys("setsockopt SO_PEEK_OFF (put back)")),
            None => Ok(()),
        }
    }
}

impl Drop for PeekOffsetOff<'_> {
    fn drop(&mut self) {
        if let Some(off) = self.saved.take() {
            if let Err(e) = sys::set_int(self.fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF, off) {
                tracing::warn!(sock = %self.ctx.sock, %e, "SO_PEEK_OFF not put back");
            }
        }
    }
}

/// Dissolves a connection (`connect(AF_UNSPEC)`: tcp_disconnect). Outside repair mode the
/// peer gets a RST and the owner's next read or write fails with ECONNRESET; in repair mode
/// nothing is sent. Either way the socket leaves the connection table at once, whoever else
/// holds its fd.
pub fn disconnect(fd: impl AsFd) -> Result<()> {
    let fd = fd.as_fd();
    disconnect_named(fd, socket_name(fd))
}

pub(crate) fn disconnect_named(fd: BorrowedFd<'_>, name: SocketName) -> Result<()> {
    sys::connect_unspec(fd).map_err(Ctx::new(Operation::Disconnect, name).sys("connect AF_UNSPEC"))
}

impl Drop for Repair<'_> {
    fn drop(&mut self) {
        if !self.held {
            if let Err(e) = leave(
                self.fd,
                sys::TCP_REPAIR_OFF_NO_WP,
                self.name,
                self.reuse_addr,
            ) {
                tracing::warn!("{e}");
            }
        }
    }
}

/// Leaves repair mode (`how`: TCP_REPAIR_OFF or TCP_REPAIR_OFF_NO_WP), then sets
/// SO_REUSEADDR back to `reuse_addr`: the kernel resets it on the way out (sk_reuse =
/// SK_NO_REUSE), so an application that had set it would silently lose it.
pub(crate) fn leave(
    fd: BorrowedFd<'_>,
    how: libc::c_int,
    name: SocketName,
    reuse_addr: bool,
) -> Result<()> {
    let ctx = Ctx::new(Operation::LeaveRepair, name);
    sys::set_int(fd, libc::SOL_TCP, libc::TCP_REPAIR, how)
        .map_err(ctx.sys("setsockopt TCP_REPAIR"))?;
    if reuse_addr {
        sys::set_int(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)
            .map_err(ctx.sys("setsockopt SO_REUSEADDR"))?;
    }
    Ok(())
}

/// Enters repair mode, captures, and leaves repair mode without a probe:
/// a snapshot of a live connection that leaves it running.
pub fn capture_and_leave(fd: impl AsFd) -> Result<TcpConnectionState> {
    let repair = Repair::enter(fd.as_fd())?;
    let state = repair.capture()?;
    repair.leave_quiet()?;
    Ok(state)
}

/// The kernel's TCP state number of a socket (`TCP_INFO`'s `tcpi_state`);
/// see [`crate::state_name`].
pub fn kernel_tcp_state(fd: impl AsFd) -> Result<u8> {
    let fd = fd.as_fd();
    sys::tcp_info(fd)
        .map(|i| i.state)
        .map_err(Ctx::new(Operation::Capture, socket_name(fd)).sys("getsockopt TCP_INFO"))
}

/// Refuses a capture unless socket `fd` is in kernel TCP state `want` (`why` says what it
/// is not, naming `sock`); `ctx` names the socket in an error of TCP_INFO itself.
pub(crate) fn require_state(
    fd: BorrowedFd<'_>,
    ctx: Ctx,
    sock: SocketName,
    want: u8,
    why: &'static str,
) -> Result<()> {
    let info = sys::tcp_info(fd).map_err(ctx.sys("getsockopt TCP_INFO"))?;
    if info.state != want {
        return Err(TcpRepairError::UnsupportedState {
            op: Operation::Capture,
            sock,
            state: state_name(info.state),
            why,
        });
    }
    Ok(())
}

/// A new blocking, close-on-exec TCP socket of the family of `ipv6`: what every restore
/// starts from.
pub(crate) fn tcp_socket(ipv6: bool, ctx: Ctx) -> Result<OwnedFd> {
    let domain = if ipv6 { Domain::IPV6 } else { Domain::IPV4 };
    let socket = Socket::new(domain, Type::STREAM.cloexec(), Some(Protocol::TCP))
        .map_err(ctx.io("socket"))?;
    Ok(OwnedFd::from(socket))
}
