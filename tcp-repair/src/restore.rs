//! Restore: a new socket that IS the captured connection.
//!
//! Order (each step depends on the previous ones):
//!
//! 1. `socket()`, `SO_REUSEADDR`/`SO_REUSEPORT`/`IPV6_V6ONLY` (BEFORE repair:
//!    `SO_REUSEADDR` set later undoes the address reuse repair mode forces);
//! 2. `TCP_REPAIR` on, buffer sizes (so the queues fit);
//! 3. `TCP_REPAIR_QUEUE` + `TCP_QUEUE_SEQ` for the receive and send queues
//!    (the sequence of the FIRST byte of each queue: refilling advances it);
//! 4. `bind()`, `connect()` (no handshake in repair mode: the socket becomes
//!    ESTABLISHED at once);
//! 5. `TCP_REPAIR_OPTIONS` (MSS, window scale, SACK, timestamps), then
//!    `TCP_TIMESTAMP` (the timestamp offset);
//! 6. the receive queue, written in repair mode into `TCP_RECV_QUEUE` (the
//!    send queue only in CLOSING, into `TCP_SEND_QUEUE`: see below);
//! 7. `TCP_REPAIR_WINDOW`, the MSS synced to it, then the other socket options;
//! 8. for half-closed states, the FINs (see below);
//! 9. leaving repair mode is a separate, explicit step on
//!    [`RestoredSocket`]: [`RestoredSocket::finish_quiet`] or
//!    [`RestoredSocket::finish_probe`]. The send queue is written then,
//!    normally, after repair mode is off, so the kernel sends it at once (as
//!    CRIU's libsoccr does for the not-yet-sent part, dropping repair mode
//!    for it).
//!
//! Half-closed states follow CRIU's libsoccr: a FIN of ours is re-queued with
//! `shutdown(SHUT_WR)` in repair mode (with `TCP_REPAIR_QUEUE` set to the
//! send queue when the peer had acknowledged it, so it counts as sent), and
//! the peer's FIN (or the peer's ACK of our FIN) is injected as a packet
//! through a raw socket, addressed to the restored socket with the right
//! sequence numbers. The send queue, sent or not, is written after repair mode is
//! off (step 9), so it goes out at once as new data; our FIN in FIN_WAIT1 and
//! LAST_ACK follows it there (the socket stays ESTABLISHED or CLOSE_WAIT in repair
//! mode). Only in CLOSING, where the peer's FIN came after ours, is the data queued
//! as sent in repair mode (delivered when the kernel retransmits).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use nix::errno::Errno;
use socket2::SockAddr;
use tracing::debug;

use crate::error::{Ctx, Operation, Result, SocketName};
use crate::inject;
use crate::options;
use crate::repair::{leave, tcp_socket};
use crate::state::{TcpConnectionState, TcpState, TcpWindow};
use crate::sys;

/// A restored connection, still in repair mode: nothing has been sent to the
/// peer yet. Choose how to leave repair mode with
/// [`finish_quiet`](Self::finish_quiet) or [`finish_probe`](Self::finish_probe).
/// Dropping it closes the socket in repair mode, which sends nothing.
#[derive(Debug)]
pub struct RestoredSocket {
    fd: OwnedFd,
    name: SocketName,
    unsent: Vec<u8>,
    /// Our FIN, behind `unsent`, still to queue (`shutdown(SHUT_WR)`) once it is written.
    fin_after_unsent: bool,
    /// SO_REUSEADDR as captured: leaving repair mode clears it, so it is set again then.
    reuse_addr: bool,
}

impl RestoredSocket {
    /// The socket's addresses.
    pub fn name(&self) -> SocketName {
        self.name
    }

    /// Data to be sent when repair mode is left: the captured send queue (but in CLOSING,
    /// where it is queued as sent).
    pub fn pending_unsent(&self) -> &[u8] {
        &self.unsent
    }

    /// Leaves repair mode without a window probe (`TCP_REPAIR_OFF_NO_WP`),
    /// then sends the not-yet-sent data. The connection resumes silently: the
    /// peer learns of it when either side next sends.
    pub fn finish_quiet(self) -> Result<OwnedFd> {
        self.finish(sys::TCP_REPAIR_OFF_NO_WP)
    }

    /// Leaves repair mode with a window probe (`TCP_REPAIR_OFF`), then sends
    /// the not-yet-sent data. The probe makes the peer answer at once: an ACK
    /// if it is alive, a RST if it forgot the connection, so a dead peer is
    /// found in one round trip instead of at the next write or keepalive.
    pub fn finish_probe(self) -> Result<OwnedFd> {
        self.finish(sys::TCP_REPAIR_OFF)
    }

    /// Ends the connection here as CRIU's `--tcp-close` does: disconnected in repair mode
    /// (nothing sent, the queues dropped, the socket in TCP_CLOSE with its local address
    /// kept), out of repair mode, then shut down both ways. Its owner's reads return EOF,
    /// its writes fail with EPIPE, poll reports POLLHUP; the peer learns of it when its next
    /// segment is answered with a RST.
    pub fn finish_closed(self) -> Result<OwnedFd> {
        let ctx = Ctx::new(Operation::LeaveRepair, self.name);
        let fd = self.fd.as_fd();
        crate::repair::disconnect_named(fd, self.name)?;
        // A disconnect in repair mode leaves ECONNABORTED pending (the first read would
        // return it): reading SO_ERROR takes it away.
        sys::get_int(fd, libc::SOL_SOCKET, libc::SO_ERROR)
            .map_err(ctx.sys("getsockopt SO_ERROR"))?;
        leave(fd, sys::TCP_REPAIR_OFF_NO_WP, self.name, self.reuse_addr)?;
        // On a closed socket shutdown() only marks both directions shut (and says ENOTCONN).
        match nix::sys::socket::shutdown(fd.as_raw_fd(), nix::sys::socket::Shutdown::Both) {
            Ok(()) | Err(Errno::ENOTCONN) => {}
            Err(e) => return Err(ctx.sys("shutdown")(e)),
        }
        Ok(self.fd)
    }

    /// Keeps repair mode on and hands the socket over; the caller leaves
    /// repair mode itself later (setting `TCP_REPAIR` to 0 or -1) and must
    /// then send [`pending_unsent`](Self::pending_unsent) itself, then shut the socket
    /// for writing when the third value says our FIN follows it, and set SO_REUSEADDR
    /// again if the state had it (see [`leave_repair`](crate::leave_repair)).
    pub fn into_held(self) -> (OwnedFd, Vec<u8>, bool) {
        (self.fd, self.unsent, self.fin_after_unsent)
    }

    fn finish(self, how: libc::c_int) -> Result<OwnedFd> {
        let ctx = Ctx::new(Operation::LeaveRepair, self.name);
        let fd = self.fd.as_fd();
        leave(fd, how, self.name, self.reuse_addr)?;
        if !self.unsent.is_empty() {
            // The unsent data fitted in the original socket's buffer, but the
            // sent data restored in repair mode and a different packing into
            // buffers may not leave room for all of it: widen the buffer for
            // this write so it never waits for the peer, then put it back.
            let widened = widen_buffer(fd, sys::TCP_SEND_QUEUE, self.unsent.len(), ctx)?;
            write_all_blocking(fd, &self.unsent).map_err(ctx.sys("send (unsent data)"))?;
            narrow_buffer(fd, sys::TCP_SEND_QUEUE, widened, ctx)?;
        }
        if self.fin_after_unsent {
            socket2::SockRef::from(&fd)
                .shutdown(std::net::Shutdown::Write)
                .map_err(ctx.io("shutdown(SHUT_WR) after the unsent data"))?;
        }
        Ok(self.fd)
    }
}

impl AsFd for RestoredSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for RestoredSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Writes all of `data`, waiting for room when the socket is full.
fn write_all_blocking(fd: BorrowedFd<'_>, mut data: &[u8]) -> std::result::Result<(), Errno> {
    while !data.is_empty() {
        match sys::send(fd, data, 0) {
            Ok(n) => data = &data[n..],
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => {
                let mut pfd = [nix::poll::PollFd::new(fd, nix::poll::PollFlags::POLLOUT)];
                nix::poll::poll(&mut pfd, nix::poll::PollTimeout::NONE)?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Writes `data` into the selected repair queue, in chunks that halve when
/// the kernel cannot allocate a buffer that large (the receive queue is
/// refilled with one linear buffer per call).
fn fill_queue(fd: BorrowedFd<'_>, queue: libc::c_int, mut data: &[u8], ctx: Ctx) -> Result<()> {
    if data.is_empty() {
        return Ok(());
    }
    sys::set_int(fd, libc::SOL_TCP, libc::TCP_REPAIR_QUEUE, queue)
        .map_err(ctx.sys("setsockopt TCP_REPAIR_QUEUE"))?;
    let step = if queue == sys::TCP_RECV_QUEUE {
        "send (receive queue refill)"
    } else {
        "send (send queue refill)"
    };
    // A queue is charged by its buffers' true size, more than the bytes: a queue the
    // original's (autotuned) buffer held may not fit a buffer of the size it reported (the
    // receive queue's refill then fails with ENOBUFS). Widen it for the refill and put the
    // dumped size back after.
    let widened = widen_buffer(fd, queue, data.len(), ctx)?;
    let mut chunk = data.len();
    while !data.is_empty() {
        let n = chunk.min(data.len());
        match sys::send(fd, &data[..n], libc::MSG_DONTWAIT) {
            Ok(0) => return Err(ctx.invalid(step, "the kernel took no data")),
            Ok(sent) => data = &data[sent..],
            Err(Errno::EINTR) => {}
            Err(Errno::ENOMEM | Errno::EAGAIN) if chunk > 1024 => chunk /= 2,
            Err(e) => return Err(ctx.sys(step)(e)),
        }
    }
    narrow_buffer(fd, queue, widened, ctx)
}

/// The buffer the refill of `queue` is charged to.
fn buffer_of(queue: libc::c_int) -> options::BufferOptions {
    if queue == sys::TCP_RECV_QUEUE {
        options::RECV_BUFFER
    } else {
        options::SEND_BUFFER
    }
}

/// Widens the buffer `queue` is charged to by room for `len` more bytes (SO_*BUFFORCE), so a
/// refill of them never waits nor fails. Returns the size getsockopt reported before and the
/// lock bits (SO_BUF_LOCK: forcing a size sets its bit), for [`narrow_buffer`]; None when the
/// widening was not allowed (no CAP_NET_ADMIN).
fn widen_buffer(
    fd: BorrowedFd<'_>,
    queue: libc::c_int,
    len: usize,
    ctx: Ctx,
) -> Result<Option<(i32, Option<i32>)>> {
    let (force, plain, read, _) = buffer_of(queue);
    let now = sys::get_int(fd, libc::SOL_SOCKET, plain).map_err(ctx.sys(read))?;
    // None before Linux 5.14, which has no SO_BUF_LOCK.
    let locks = sys::get_int(fd, libc::SOL_SOCKET, SO_BUF_LOCK).ok();
    let widened = (now / 2).saturating_add(len.min(i32::MAX as usize / 4) as i32 * 2);
    Ok(sys::set_int(fd, libc::SOL_SOCKET, force, widened)
        .is_ok()
        .then_some((now, locks)))
}

/// Gives `fd` back the buffer and lock bits [`widen_buffer`] found (getsockopt reports twice
/// what setsockopt takes).
fn narrow_buffer(
    fd: BorrowedFd<'_>,
    queue: libc::c_int,
    widened: Option<(i32, Option<i32>)>,
    ctx: Ctx,
) -> Result<()> {
    if let Some((before, locks)) = widened {
        let (force, _, _, write) = buffer_of(queue);
        sys::set_int(fd, libc::SOL_SOCKET, force, before / 2).map_err(ctx.sys(write))?;
        if let Some(locks) = locks {
            sys::set_int(fd, libc::SOL_SOCKET, SO_BUF_LOCK, locks)
                .map_err(ctx.sys("setsockopt SO_BUF_LOCK"))?;
        }
    }
    Ok(())
}

/// SO_BUF_LOCK (linux 5.14): the SOCK_SNDBUF_LOCK/SOCK_RCVBUF_LOCK bits.
const SO_BUF_LOCK: libc::c_int = 72;

fn set_queue_seq(fd: BorrowedFd<'_>, queue: libc::c_int, seq: u32, ctx: Ctx) -> Result<()> {
    sys::set_int(fd, libc::SOL_TCP, libc::TCP_REPAIR_QUEUE, queue)
        .map_err(ctx.sys("setsockopt TCP_REPAIR_QUEUE"))?;
    sys::set_int(fd, libc::SOL_TCP, libc::TCP_QUEUE_SEQ, seq as i32)
        .map_err(ctx.sys("setsockopt TCP_QUEUE_SEQ"))
}

fn check(state: &TcpConnectionState, ctx: Ctx) -> Result<()> {
    if state.local.is_ipv4() != state.remote.is_ipv4() {
        return Err(ctx.invalid("addresses", "local and remote address families differ"));
    }
    if state.local.port() == 0 || state.remote.port() == 0 {
        return Err(ctx.invalid("addresses", "port 0"));
    }
    if state.send_queue_len() > u32::MAX as usize / 2
        || state.recv_queue.len() > u32::MAX as usize / 2
    {
        return Err(ctx.invalid("queues", "queue larger than half the sequence space"));
    }
    if state.state.fin_acked() && state.send_queue_len() != 0 {
        return Err(ctx.invalid(
            "queues",
            format!(
                "{:?} with data in the send queue (our FIN was acknowledged, so was all data)",
                state.state
            ),
        ));
    }
    if let Some(ws) = state.handshake.window_scale {
        if ws.send > 14 || ws.receive > 14 {
            return Err(ctx.invalid("TCP_REPAIR_OPTIONS", "window scale above 14"));
        }
    }
    Ok(())
}

/// Whether sequence number `a` comes after `b` (modulo 2^32, as the kernel's `after()`).
fn seq_after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

/// The window to give TCP_REPAIR_WINDOW for a connection whose receive queue ends at
/// `recv_end` (rcv_nxt once refilled), from the captured `w`, within what the kernel accepts
/// (rcv_wup not after rcv_nxt; snd_wl1 not after rcv_nxt + rcv_wnd).
fn window_to_set(w: &TcpWindow, recv_end: u32) -> sys::TcpRepairWindow {
    let mut win = sys::TcpRepairWindow {
        snd_wl1: w.snd_wl1,
        snd_wnd: w.snd_wnd,
        max_window: w.max_window,
        rcv_wnd: w.rcv_wnd,
        rcv_wup: w.rcv_wup,
    };
    // The captured rcv_wup may count the peer's FIN, which is injected
    // only later: the kernel refuses a rcv_wup beyond rcv_nxt.
    if seq_after(win.rcv_wup, recv_end) {
        let over = win.rcv_wup.wrapping_sub(recv_end);
        win.rcv_wup = recv_end;
        win.rcv_wnd = win.rcv_wnd.wrapping_add(over);
    }
    // snd_wl1 is the sequence of the segment whose ACK last moved the send window, which may
    // be one held out of order beyond rcv_nxt (not captured: the peer sends it again). Seen
    // 654830 bytes beyond, with a 131072-byte window (zdtm socket-tcpbuf). Any later segment
    // may then move the window, as the resent ones would have.
    if seq_after(win.snd_wl1, recv_end.wrapping_add(win.rcv_wnd)) {
        win.snd_wl1 = recv_end;
    }
    win
}

/// Re-creates a captured connection in repair mode. See the module docs for
/// the order of the steps; leave repair mode with
/// [`RestoredSocket::finish_quiet`] or [`RestoredSocket::finish_probe`].
///
/// The local address must be available: the original socket is closed (in
/// repair mode, so it sent nothing), or the restore happens in another
/// network namespace or host. Listening sockets on the same port should be
/// restored first.
pub fn restore(state: &TcpConnectionState) -> Result<RestoredSocket> {
    let name = SocketName::new(Some(state.local), Some(state.remote));
    let ctx = Ctx::new(Operation::Restore, name);
    // A connection reset by its peer: made as it was when the reset came, then reset.
    let before_reset;
    let state = if state.reset_error != 0 {
        before_reset = TcpConnectionState {
            state: TcpState::before_reset(state.reset_error),
            ..state.clone()
        };
        &before_reset
    } else {
        state
    };
    check(state, ctx)?;
    let ipv6 = state.local.is_ipv6();
    let fd = tcp_socket(ipv6, ctx)?;
    let b = fd.as_fd();

    options::apply_pre_bind(b, &state.socket, ctx)?;
    sys::set_int(b, libc::SOL_TCP, libc::TCP_REPAIR, sys::TCP_REPAIR_ON)
        .map_err(ctx.sys("setsockopt TCP_REPAIR"))?;
    options::apply_buffers(b, &state.socket, ctx)?;

    set_queue_seq(b, sys::TCP_RECV_QUEUE, state.recv_seq, ctx)?;
    set_queue_seq(b, sys::TCP_SEND_QUEUE, state.send_seq, ctx)?;

    let sref = socket2::SockRef::from(&b);
    options::bind_as_dumped(b, state.local, ctx)?;
    connect_in_repair(&sref, state, ctx)?;

    let mut opts = Vec::with_capacity(4);
    if state.handshake.sack {
        opts.push(sys::TcpRepairOpt {
            opt_code: sys::TCPOPT_SACK_PERM,
            opt_val: 0,
        });
    }
    if let Some(ws) = state.handshake.window_scale {
        opts.push(sys::TcpRepairOpt {
            opt_code: sys::TCPOPT_WINDOW,
            opt_val: ws.send as u32 | ((ws.receive as u32) << 16),
        });
    }
    if state.handshake.timestamps {
        opts.push(sys::TcpRepairOpt {
            opt_code: sys::TCPOPT_TIMESTAMP,
            opt_val: 0,
        });
    }
    opts.push(sys::TcpRepairOpt {
        opt_code: sys::TCPOPT_MAXSEG,
        opt_val: state.handshake.mss,
    });
    sys::set_repair_options(b, &opts).map_err(ctx.sys("setsockopt TCP_REPAIR_OPTIONS"))?;
    if let (true, Some(ts)) = (state.handshake.timestamps, state.timestamp) {
        sys::set_int(b, libc::SOL_TCP, libc::TCP_TIMESTAMP, ts as i32)
            .map_err(ctx.sys("setsockopt TCP_TIMESTAMP"))?;
    }

    fill_queue(b, sys::TCP_RECV_QUEUE, &state.recv_queue, ctx)?;
    // The send queue, sent or not, is written normally once repair mode is off (our FIN in
    // FIN_WAIT1 and LAST_ACK after it): the kernel sends it at once, as new data, from the
    // first byte the peer has not acknowledged (what the peer had already received it drops
    // and acknowledges). Queued as sent in repair mode, what was in flight went out only when
    // the retransmission timer fired: without an RTT sample, 1 s, backed off; and the unsent
    // data sent meanwhile reached a peer restored beside it (a namespace's) as a hole followed
    // by segments out of order, which waited for that timer too (zdtm socket-tcpbuf-local:
    // seconds). In CLOSING the peer's FIN came after ours, which must be in place before it:
    // the data is queued as sent there (FIN_WAIT2 and CLOSE have none).
    let queued_as_sent = matches!(
        state.state,
        TcpState::Closing | TcpState::FinWait2 | TcpState::Close
    );
    let fin_after_unsent = state.send_queue_len() != 0
        && matches!(state.state, TcpState::FinWait1 | TcpState::LastAck);
    let unsent = if queued_as_sent {
        fill_queue(b, sys::TCP_SEND_QUEUE, &state.send_queue_sent, ctx)?;
        fill_queue(b, sys::TCP_SEND_QUEUE, &state.send_queue_unsent, ctx)?;
        Vec::new()
    } else {
        [&state.send_queue_sent[..], &state.send_queue_unsent[..]].concat()
    };
    sys::set_int(b, libc::SOL_TCP, libc::TCP_REPAIR_QUEUE, sys::TCP_NO_QUEUE)
        .map_err(ctx.sys("setsockopt TCP_REPAIR_QUEUE"))?;

    if let Some(w) = state.window {
        let recv_end = state.recv_seq.wrapping_add(state.recv_queue.len() as u32);
        let win = window_to_set(&w, recv_end);
        sys::set_repair_window(b, &win).map_err(|e| {
            // The kernel says only EINVAL: the values tell which of its checks refused them.
            tracing::warn!(
                sock = %name,
                snd_wl1 = win.snd_wl1,
                snd_wnd = win.snd_wnd,
                max_window = win.max_window,
                rcv_wnd = win.rcv_wnd,
                rcv_wup = win.rcv_wup,
                recv_end,
                "TCP_REPAIR_WINDOW refused"
            );
            ctx.sys("setsockopt TCP_REPAIR_WINDOW")(e)
        })?;
    }
    // After the window: the MSS is bounded by half the largest window the peer offered.
    resync_mss(b, ipv6, ctx)?;

    options::apply_socket(b, &state.socket, ipv6, ctx)?;
    options::apply_tcp(b, &state.tcp, ctx)?;

    restore_fins(b, state, fin_after_unsent, ctx)?;
    if state.reset_error != 0 {
        inject_reset(b, state, ctx)?;
    }
    if state.shut_read {
        // Only marks the socket (inet_shutdown: RCV_SHUTDOWN; tcp_shutdown sends nothing for
        // it), in repair mode as out of it.
        socket2::SockRef::from(&b)
            .shutdown(std::net::Shutdown::Read)
            .map_err(ctx.io("shutdown(SHUT_RD)"))?;
    }

    debug!(sock = %name, state = ?state.state, "restored in repair mode");
    Ok(RestoredSocket {
        fd,
        name,
        unsent,
        fin_after_unsent,
        reuse_addr: state.socket.reuse_addr,
    })
}

/// Connects `sref` (in repair mode: no handshake) to `state.remote`. The address pair may be
/// held by a TIME_WAIT entry of this network namespace, the remains of this very connection
/// when its end that closed first is restored beside them (the original's, for 60 s):
/// connect() then says EADDRNOTAVAIL (repair mode may reuse a TIME_WAIT pair only a second
/// after its last timestamp, and never without timestamps). That entry, and only it, is
/// destroyed (sock_diag SOCK_DESTROY by its cookie), then connect() is tried again.
fn connect_in_repair(
    sref: &socket2::SockRef<'_>,
    state: &TcpConnectionState,
    ctx: Ctx,
) -> Result<()> {
    let to = SockAddr::from(state.remote);
    match sref.connect(&to) {
        Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => {
            let destroyed = crate::diag::destroy_time_wait(state.local, state.remote)
                .map_err(ctx.io("sock_diag SOCK_DESTROY (TIME_WAIT of the same pair)"))?;
            if !destroyed {
                return Err(ctx.io("connect")(e));
            }
            debug!(local = %state.local, remote = %state.remote, "TIME_WAIT of the pair destroyed");
            sref.connect(&to).map_err(ctx.io("connect"))
        }
        other => other.map_err(ctx.io("connect")),
    }
}

/// Puts the FINs of a half-closed connection back (libsoccr's order); ours left for after
/// the unsent data when `fin_after_unsent` (the socket is then in the state before it).
fn restore_fins(
    fd: BorrowedFd<'_>,
    state: &TcpConnectionState,
    fin_after_unsent: bool,
    ctx: Ctx,
) -> Result<()> {
    let s = state.state;
    if s == TcpState::Established {
        return Ok(());
    }
    let send_end = state.send_seq.wrapping_add(state.send_queue_len() as u32);
    let recv_end = state.recv_seq.wrapping_add(state.recv_queue.len() as u32);
    let peer_window = match (state.window, state.handshake.window_scale) {
        (Some(w), Some(ws)) => (w.snd_wnd >> ws.send).min(65535) as u16,
        (Some(w), None) => w.snd_wnd.min(65535) as u16,
        (None, _) => 65535,
    };
    let packet = |flags: u8, seq: u32, ack: u32| inject::Segment {
        src: state.remote,
        dst: state.local,
        seq,
        ack,
        flags,
        window: peer_window,
    };
    // The peer's FIN injected makes the socket ACK it, at once or when a delayed-ACK timer
    // fires (a thread preempted 40 ms). A peer that is gone (closed at both ends; or an end
    // left to the kernel, not in the dump, whose answers the namespace's firewall drops in the
    // original, made again only once every socket is: zdtm socket-tcp-closed-last-ack)
    // answers with an RST that, in CLOSE_WAIT, CLOSING or LAST_ACK, would reset the socket
    // the original kept (an error pending, or no state to reach). The socket hears no RST
    // until its FINs are back.
    let hears_no_reset = s.fin_received();
    if hears_no_reset {
        sys::attach_rst_drop_filter(fd)
            .map_err(ctx.sys("setsockopt SO_ATTACH_FILTER (RST drop)"))?;
    }
    // Our FIN first, when it went out before the peer's.
    if matches!(
        s,
        TcpState::FinWait1 | TcpState::FinWait2 | TcpState::Closing
    ) && !fin_after_unsent
    {
        shutdown_in_repair(fd, s.fin_acked(), ctx)?;
    }
    if s.fin_received() {
        inject::send(
            &packet(inject::FIN | inject::ACK, recv_end, state.send_seq),
            ctx,
        )?;
    }
    // Ours after the peer's. Closed at both ends: queued as sent (nothing goes out), so the
    // ACK injected next takes the socket from LAST_ACK to CLOSE as the peer's ACK took the
    // original (tcp_done: no RST, no error, both directions shut, the peer address kept).
    if matches!(s, TcpState::LastAck | TcpState::Close) && !fin_after_unsent {
        shutdown_in_repair(fd, s == TcpState::Close, ctx)?;
    }
    if s.fin_acked() {
        let seq = recv_end.wrapping_add(s.fin_received() as u32);
        inject::send(&packet(inject::ACK, seq, send_end.wrapping_add(1)), ctx)?;
    }
    let got = sys::tcp_info(fd)
        .map_err(ctx.sys("getsockopt TCP_INFO"))?
        .state;
    if hears_no_reset {
        sys::detach_filter(fd).map_err(ctx.sys("setsockopt SO_DETACH_FILTER"))?;
    }
    let expected = match s {
        TcpState::FinWait1 if fin_after_unsent => TcpState::Established,
        TcpState::LastAck if fin_after_unsent => TcpState::CloseWait,
        s => s,
    };
    if got != expected.kernel_number() {
        return Err(ctx.invalid(
            "FIN restore",
            format!(
                "state is {} instead of {}",
                crate::state::state_name(got),
                crate::state::state_name(expected.kernel_number())
            ),
        ));
    }
    Ok(())
}

/// Resets the connection restored as it was before its peer's reset came (`state`): that
/// reset injected, at the next sequence number the socket expects. The kernel closes it as it
/// closed the original (tcp_reset: the error pending, ECONNRESET, or EPIPE in CLOSE_WAIT; the
/// send queue purged, the receive queue kept; nothing sent).
fn inject_reset(fd: BorrowedFd<'_>, state: &TcpConnectionState, ctx: Ctx) -> Result<()> {
    let recv_end = state
        .recv_seq
        .wrapping_add(state.recv_queue.len() as u32)
        .wrapping_add(state.state.fin_received() as u32);
    inject::send(
        &inject::Segment {
            src: state.remote,
            dst: state.local,
            seq: recv_end,
            ack: 0,
            flags: inject::RST,
            window: 0,
        },
        ctx,
    )?;
    let got = sys::tcp_info(fd)
        .map_err(ctx.sys("getsockopt TCP_INFO"))?
        .state;
    if got != TcpState::Close.kernel_number() {
        return Err(ctx.invalid(
            "reset restore",
            format!(
                "state is {} instead of CLOSE after the injected reset",
                crate::state::state_name(got)
            ),
        ));
    }
    Ok(())
}

fn shutdown_in_repair(fd: BorrowedFd<'_>, acked: bool, ctx: Ctx) -> Result<()> {
    if acked {
        sys::set_int(
            fd,
            libc::SOL_TCP,
            libc::TCP_REPAIR_QUEUE,
            sys::TCP_SEND_QUEUE,
        )
        .map_err(ctx.sys("setsockopt TCP_REPAIR_QUEUE"))?;
    }
    socket2::SockRef::from(&fd)
        .shutdown(std::net::Shutdown::Write)
        .map_err(ctx.io("shutdown(SHUT_WR)"))?;
    if acked {
        sys::set_int(fd, libc::SOL_TCP, libc::TCP_REPAIR_QUEUE, sys::TCP_NO_QUEUE)
            .map_err(ctx.sys("setsockopt TCP_REPAIR_QUEUE"))?;
    }
    Ok(())
}

/// Leaves repair mode on a socket restored and handed over with
/// [`RestoredSocket::into_held`] (or held after capture), with or without a
/// window probe, setting SO_REUSEADDR back to `reuse_addr` (what the socket had before
/// repair mode: leaving it clears the flag). The caller still owns any unsent data.
pub fn leave_repair(fd: impl AsFd, probe: bool, reuse_addr: bool) -> Result<()> {
    let fd = fd.as_fd();
    let name = crate::repair::socket_name(fd);
    leave(
        fd,
        if probe {
            sys::TCP_REPAIR_OFF
        } else {
            sys::TCP_REPAIR_OFF_NO_WP
        },
        name,
        reuse_addr,
    )
}

/// Puts a connection captured earlier (and let out of repair mode since) back in repair mode,
/// so that the death of its process, next, closes it without a word to the peer and frees
/// its address pair at once.
pub fn enter_repair_to_close(fd: impl AsFd) -> Result<()> {
    let fd = fd.as_fd();
    sys::set_int(fd, libc::SOL_TCP, libc::TCP_REPAIR, sys::TCP_REPAIR_ON).map_err(
        Ctx::new(Operation::EnterRepair, crate::repair::socket_name(fd))
            .sys("setsockopt TCP_REPAIR"),
    )
}

/// Closes a connection while keeping it in repair mode (or putting it there
/// first), so the kernel sends neither FIN nor RST to the peer, and frees its
/// address pair at once even if another process holds a copy of the fd (see
/// [`crate::Repair::abandon`]).
pub fn close_silently(fd: OwnedFd) -> Result<()> {
    let name = crate::repair::socket_name(fd.as_fd());
    sys::set_int(
        fd.as_fd(),
        libc::SOL_TCP,
        libc::TCP_REPAIR,
        sys::TCP_REPAIR_ON,
    )
    .map_err(Ctx::new(Operation::EnterRepair, name).sys("setsockopt TCP_REPAIR"))?;
    crate::repair::disconnect_named(fd.as_fd(), name)
}
/// Recomputes the send MSS from the MSS clamp `TCPOPT_MAXSEG` just set: connect() in repair
/// mode computed it against the default clamp (536 bytes, 524 with timestamps; IPv6: 1220,
/// 1208), and nothing else recomputes it until the peer announces a window larger than the
/// largest dumped, which a peer with a fixed SO_RCVBUF may never do: TCP_MAXSEG shows that
/// value, and the segments go out that small (1 MiB in 880 segments over IPv6 loopback). With
/// 524-byte segments a queue takes many times more receive memory than the advertised window
/// was reckoned for: a connection with full buffers (zdtm socket-tcpbuf-local) dropped every
/// segment and stalled.
///
/// The kernel syncs the MSS when the IP options change. IPv4: setting IP_OPTIONS, empty here
/// (the dumped ones are set later). IPv6 (v4-mapped included): IPV6_2292PKTOPTIONS with a
/// buffer shorter than one cmsghdr installs an empty set of options (ipv6_update_options
/// syncs for any non-NULL set; an empty IPV6_HOPOPTS or IPV6_DSTOPTS makes none, so no
/// sync); setting it again with length 0 removes the set, without a second sync. The
/// extension header length the MSS is computed with stays 0, as without options.
fn resync_mss(fd: BorrowedFd<'_>, ipv6: bool, ctx: Ctx) -> Result<()> {
    if !ipv6 {
        return sys::set_bytes(fd, libc::SOL_IP, libc::IP_OPTIONS, &[])
            .map_err(ctx.sys("setsockopt IP_OPTIONS (sync the MSS)"));
    }
    let step = "setsockopt IPV6_2292PKTOPTIONS (sync the MSS)";
    sys::set_bytes(fd, libc::SOL_IPV6, libc::IPV6_2292PKTOPTIONS, &[0; 8])
        .map_err(ctx.sys(step))?;
    sys::set_bytes(fd, libc::SOL_IPV6, libc::IPV6_2292PKTOPTIONS, &[]).map_err(ctx.sys(step))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel's checks of TCP_REPAIR_WINDOW (tcp_repair_set_window) against rcv_nxt.
    fn kernel_accepts(w: &sys::TcpRepairWindow, rcv_nxt: u32) -> bool {
        w.max_window >= w.snd_wnd
            && !seq_after(w.snd_wl1, rcv_nxt.wrapping_add(w.rcv_wnd))
            && !seq_after(w.rcv_wup, rcv_nxt)
    }

    /// The window zdtm socket-tcpbuf captured once (snd_wl1 654830 bytes beyond the captured
    /// queue's end, from a segment held out of order): refused with EINVAL as captured.
    #[test]
    fn a_window_moved_by_a_segment_beyond_the_queue_is_set_within_what_the_kernel_takes() {
        let captured = TcpWindow {
            snd_wl1: 3_155_810_096,
            snd_wnd: 24_576,
            max_window: 65_536,
            rcv_wnd: 131_072,
            rcv_wup: 3_155_155_266,
        };
        let recv_end = 3_155_155_266;
        let win = window_to_set(&captured, recv_end);
        assert!(kernel_accepts(&win, recv_end), "{win:?}");
        assert_eq!(win.snd_wl1, recv_end);
        assert_eq!((win.rcv_wup, win.rcv_wnd), (recv_end, 131_072));
    }

    /// A window the kernel takes as captured is set as captured.
    #[test]
    fn a_window_within_what_the_kernel_takes_is_set_as_captured() {
        let captured = TcpWindow {
            snd_wl1: 1_000,
            snd_wnd: 500,
            max_window: 800,
            rcv_wnd: 4_000,
            rcv_wup: 1_500,
        };
        let win = window_to_set(&captured, 2_000);
        assert_eq!(
            (
                win.snd_wl1,
                win.snd_wnd,
                win.max_window,
                win.rcv_wnd,
                win.rcv_wup
            ),
            (1_000, 500, 800, 4_000, 1_500)
        );
    }
}
