//! Socket options: one table of reads and one of writes, shared by
//! connections, listeners and UDP sockets.

use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;

use crate::error::{Ctx, Operation, Result, SocketName};
use crate::state::{SocketOptions, TcpSocketOptions};
use crate::sys;

/// Reads the socket-level options of TCP socket `fd` and the options of more_options.rs's
/// table that differ from a fresh socket's (`listener`: the listener-only entries too, what a
/// later listen() or connect() of an unconnected socket uses).
pub(crate) fn capture_tcp_socket(
    fd: BorrowedFd<'_>,
    ipv6: bool,
    listener: bool,
    ctx: Ctx,
) -> Result<SocketOptions> {
    Ok(SocketOptions {
        more: crate::more_options::capture_tcp(fd, ipv6, listener, ctx)?,
        ..capture_socket(fd, ipv6, ctx)?
    })
}

/// Reads the socket-level options; `ipv6` selects `IPV6_TCLASS`/`IPV6_V6ONLY`
/// over `IP_TOS`.
pub(crate) fn capture_socket(fd: BorrowedFd<'_>, ipv6: bool, ctx: Ctx) -> Result<SocketOptions> {
    let int = |level, name, step| sys::get_int(fd, level, name).map_err(ctx.sys(step));
    let traffic_class = if ipv6 {
        int(libc::SOL_IPV6, libc::IPV6_TCLASS, "getsockopt IPV6_TCLASS")?
    } else {
        int(libc::SOL_IP, libc::IP_TOS, "getsockopt IP_TOS")?
    };
    Ok(SocketOptions {
        reuse_addr: int(
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            "getsockopt SO_REUSEADDR",
        )? != 0,
        reuse_port: int(
            libc::SOL_SOCKET,
            libc::SO_REUSEPORT,
            "getsockopt SO_REUSEPORT",
        )? != 0,
        send_buffer: int(libc::SOL_SOCKET, libc::SO_SNDBUF, "getsockopt SO_SNDBUF")?,
        recv_buffer: int(libc::SOL_SOCKET, libc::SO_RCVBUF, "getsockopt SO_RCVBUF")?,
        linger: sys::get_linger(fd).map_err(ctx.sys("getsockopt SO_LINGER"))?,
        mark: int(libc::SOL_SOCKET, libc::SO_MARK, "getsockopt SO_MARK")? as u32,
        traffic_class,
        v6_only: if ipv6 {
            Some(int(libc::SOL_IPV6, libc::IPV6_V6ONLY, "getsockopt IPV6_V6ONLY")? != 0)
        } else {
            None
        },
        broadcast: int(
            libc::SOL_SOCKET,
            libc::SO_BROADCAST,
            "getsockopt SO_BROADCAST",
        )? != 0,
        more: Vec::new(),
    })
}

/// TCP_SAVED_SYN (linux 4.2, not in libc for every target).
const TCP_SAVED_SYN: i32 = 28;

/// Refuses a connection holding a SYN saved for its owner (TCP_SAVE_SYN on the listener that
/// accepted it) and not read yet: no call puts a saved SYN back, and reading it (the whole
/// of it) frees it. A buffer shorter than the SYN is refused with EINVAL, the SYN kept
/// (do_tcp_getsockopt): that is the sign of one.
fn refuse_saved_syn(fd: BorrowedFd<'_>, ctx: Ctx) -> Result<()> {
    let mut one = [0u8; 1];
    match sys::get_bytes(fd, libc::SOL_TCP, TCP_SAVED_SYN, &mut one) {
        Err(Errno::EINVAL) => Err(ctx.invalid(
            "TCP_SAVED_SYN",
            "the SYN saved for the owner (TCP_SAVE_SYN) is not read yet: the kernel gives no \
             way to put it back, so it would be lost",
        )),
        _ => Ok(()),
    }
}

/// Reads the TCP-level options; refuses a SYN saved and not read yet ([`refuse_saved_syn`]).
pub(crate) fn capture_tcp(fd: BorrowedFd<'_>, ctx: Ctx) -> Result<TcpSocketOptions> {
    refuse_saved_syn(fd, ctx)?;
    let int = |level, name, step| sys::get_int(fd, level, name).map_err(ctx.sys(step));
    let mut name = [0u8; 16];
    let n = sys::get_bytes(fd, libc::SOL_TCP, libc::TCP_CONGESTION, &mut name)
        .map_err(ctx.sys("getsockopt TCP_CONGESTION"))?;
    let end = name[..n].iter().position(|&b| b == 0).unwrap_or(n);
    Ok(TcpSocketOptions {
        keepalive: int(
            libc::SOL_SOCKET,
            libc::SO_KEEPALIVE,
            "getsockopt SO_KEEPALIVE",
        )? != 0,
        keep_idle: int(libc::SOL_TCP, libc::TCP_KEEPIDLE, "getsockopt TCP_KEEPIDLE")?,
        keep_interval: int(
            libc::SOL_TCP,
            libc::TCP_KEEPINTVL,
            "getsockopt TCP_KEEPINTVL",
        )?,
        keep_count: int(libc::SOL_TCP, libc::TCP_KEEPCNT, "getsockopt TCP_KEEPCNT")?,
        no_delay: int(libc::SOL_TCP, libc::TCP_NODELAY, "getsockopt TCP_NODELAY")? != 0,
        cork: int(libc::SOL_TCP, libc::TCP_CORK, "getsockopt TCP_CORK")? != 0,
        user_timeout: int(
            libc::SOL_TCP,
            libc::TCP_USER_TIMEOUT,
            "getsockopt TCP_USER_TIMEOUT",
        )? as u32,
        congestion: String::from_utf8_lossy(&name[..end]).into_owned(),
    })
}

/// Options that must be set before `bind()`: `SO_REUSEADDR`, `SO_REUSEPORT`,
/// `IPV6_V6ONLY`. For a TCP connection this also runs BEFORE `TCP_REPAIR`:
/// setting `SO_REUSEADDR` afterwards would undo the address reuse that repair
/// mode forces.
pub(crate) fn apply_pre_bind(fd: BorrowedFd<'_>, o: &SocketOptions, ctx: Ctx) -> Result<()> {
    sys::set_int(
        fd,
        libc::SOL_SOCKET,
        libc::SO_REUSEADDR,
        o.reuse_addr as i32,
    )
    .map_err(ctx.sys("setsockopt SO_REUSEADDR"))?;
    if o.reuse_port {
        sys::set_int(fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)
            .map_err(ctx.sys("setsockopt SO_REUSEPORT"))?;
    }
    if let Some(v6_only) = o.v6_only {
        // Set only when it differs from the fresh socket's (net.ipv6.bindv6only): a raw
        // socket has its port (the protocol) from socket() on, and then refuses any change.
        let fresh = sys::get_int(fd, libc::SOL_IPV6, libc::IPV6_V6ONLY)
            .map_err(ctx.sys("getsockopt IPV6_V6ONLY"))?;
        if (fresh != 0) != v6_only {
            sys::set_int(fd, libc::SOL_IPV6, libc::IPV6_V6ONLY, v6_only as i32)
                .map_err(ctx.sys("setsockopt IPV6_V6ONLY"))?;
        }
    }
    Ok(())
}

/// `IPV6_FREEBIND` (not in libc for every target): the same flag as `IP_FREEBIND`, which a
/// raw IPv6 socket does not take at level SOL_IP.
pub(crate) const IPV6_FREEBIND: i32 = 78;

/// Binds `fd` to `addr` with IP_FREEBIND on for the call, then puts the flag back as it was.
/// A socket bound while IP_FREEBIND or IP_TRANSPARENT was on may hold an address the host
/// lacks (or lacks now) with the flag cleared since: the dump cannot tell, and without the
/// flag the bind fails with EADDRNOTAVAIL. The flag changes nothing else of a bind.
pub(crate) fn bind_as_dumped(fd: BorrowedFd<'_>, addr: SocketAddr, ctx: Ctx) -> Result<()> {
    let (level, name, what) = if addr.is_ipv6() {
        (libc::SOL_IPV6, IPV6_FREEBIND, "IPV6_FREEBIND")
    } else {
        (libc::SOL_IP, libc::IP_FREEBIND, "IP_FREEBIND")
    };
    let was = sys::get_int(fd, level, name).map_err(ctx.sys(what))?;
    if was == 0 {
        sys::set_int(fd, level, name, 1).map_err(ctx.sys(what))?;
    }
    socket2::SockRef::from(&fd)
        .bind(&socket2::SockAddr::from(addr))
        .map_err(ctx.io("bind"))?;
    if was == 0 {
        sys::set_int(fd, level, name, 0).map_err(ctx.sys(what))?;
    }
    Ok(())
}

/// A socket buffer's options: (SO_*BUFFORCE, SO_*BUF, the read step, the write step).
pub(crate) type BufferOptions = (libc::c_int, libc::c_int, &'static str, &'static str);

/// The send buffer's options.
pub(crate) const SEND_BUFFER: BufferOptions = (
    libc::SO_SNDBUFFORCE,
    libc::SO_SNDBUF,
    "getsockopt SO_SNDBUF",
    "setsockopt SO_SNDBUF",
);

/// The receive buffer's options.
pub(crate) const RECV_BUFFER: BufferOptions = (
    libc::SO_RCVBUFFORCE,
    libc::SO_RCVBUF,
    "getsockopt SO_RCVBUF",
    "setsockopt SO_RCVBUF",
);

/// The two buffers of `o`: (SO_*BUFFORCE, SO_*BUF, the size getsockopt reported, the read
/// step, the write step).
fn buffers(o: &SocketOptions) -> [(libc::c_int, libc::c_int, i32, &'static str, &'static str); 2] {
    let with = |(force, plain, read, write): BufferOptions, size| (force, plain, size, read, write);
    [
        with(SEND_BUFFER, o.send_buffer),
        with(RECV_BUFFER, o.recv_buffer),
    ]
}

/// A new TCP socket (not a connection: no repair mode) with the options of `o` that go before
/// `bind()` and the buffer sizes that differ from a fresh socket's.
pub(crate) fn new_socket(ipv6: bool, o: &SocketOptions, ctx: Ctx) -> Result<OwnedFd> {
    let fd = crate::repair::tcp_socket(ipv6, ctx)?;
    apply_pre_bind(fd.as_fd(), o, ctx)?;
    apply_buffers_if_changed(fd.as_fd(), o, ctx)?;
    Ok(fd)
}

/// Buffer sizes; set before queues are refilled so they fit.
pub(crate) fn apply_buffers(fd: BorrowedFd<'_>, o: &SocketOptions, ctx: Ctx) -> Result<()> {
    for (force, plain, size, _, step) in buffers(o) {
        set_buffer(fd, force, plain, size, ctx, step)?;
    }
    Ok(())
}

/// Buffer sizes, only where they differ from what the fresh socket has: a
/// socket whose sizes were never set keeps the kernel's autotuning (and so
/// do the connections a listener accepts).
pub(crate) fn apply_buffers_if_changed(
    fd: BorrowedFd<'_>,
    o: &SocketOptions,
    ctx: Ctx,
) -> Result<()> {
    for (force, plain, size, read, step) in buffers(o) {
        let now = sys::get_int(fd, libc::SOL_SOCKET, plain).map_err(ctx.sys(read))?;
        if now != size {
            set_buffer(fd, force, plain, size, ctx, step)?;
        }
    }
    Ok(())
}

fn set_buffer(
    fd: BorrowedFd<'_>,
    force: libc::c_int,
    plain: libc::c_int,
    reported: i32,
    ctx: Ctx,
    step: &'static str,
) -> Result<()> {
    if reported <= 0 {
        return Ok(());
    }
    // getsockopt reports twice what setsockopt takes.
    let value = reported / 2;
    match sys::set_int(fd, libc::SOL_SOCKET, force, value) {
        Err(Errno::EPERM) => {
            sys::set_int(fd, libc::SOL_SOCKET, plain, value).map_err(ctx.sys(step))
        }
        other => other.map_err(ctx.sys(step)),
    }
}

/// The other socket-level options (after `bind()`).
pub(crate) fn apply_socket(
    fd: BorrowedFd<'_>,
    o: &SocketOptions,
    ipv6: bool,
    ctx: Ctx,
) -> Result<()> {
    sys::set_linger(fd, o.linger).map_err(ctx.sys("setsockopt SO_LINGER"))?;
    if o.mark != 0 {
        sys::set_int(fd, libc::SOL_SOCKET, libc::SO_MARK, o.mark as i32)
            .map_err(ctx.sys("setsockopt SO_MARK"))?;
    }
    if o.traffic_class != 0 {
        if ipv6 {
            sys::set_int(fd, libc::SOL_IPV6, libc::IPV6_TCLASS, o.traffic_class)
                .map_err(ctx.sys("setsockopt IPV6_TCLASS"))?;
        } else {
            set_tos_keeping_priority(fd, &o.traffic_class.to_ne_bytes(), ctx)?;
        }
    }
    if o.broadcast {
        sys::set_int(fd, libc::SOL_SOCKET, libc::SO_BROADCAST, 1)
            .map_err(ctx.sys("setsockopt SO_BROADCAST"))?;
    }
    // After the buffer sizes: SO_BUF_LOCK among them puts the lock bits back as captured.
    crate::more_options::apply(fd, &o.more, ctx)
}

/// Sets IP_TOS to `value` (as getsockopt gave it) and puts SO_PRIORITY back as it was: the
/// kernel sets the priority from the TOS (rt_tos2priority, IPv4 and IPv6 sockets alike),
/// so without this a restored socket would have the TOS's priority, not the one dumped (a
/// priority set after the TOS, or an accepted connection's, which inherits the listener's
/// TOS but not the priority it gave the listener). The priority dumped, when it differs
/// from a fresh socket's, is set anyway: before (udp.rs's integer table) or after (the
/// table of more_options.rs).
pub(crate) fn set_tos_keeping_priority(fd: BorrowedFd<'_>, value: &[u8], ctx: Ctx) -> Result<()> {
    let priority = sys::get_int(fd, libc::SOL_SOCKET, libc::SO_PRIORITY)
        .map_err(ctx.sys("getsockopt SO_PRIORITY"))?;
    sys::set_bytes(fd, libc::SOL_IP, libc::IP_TOS, value).map_err(ctx.sys("setsockopt IP_TOS"))?;
    let now = sys::get_int(fd, libc::SOL_SOCKET, libc::SO_PRIORITY)
        .map_err(ctx.sys("getsockopt SO_PRIORITY"))?;
    if now != priority {
        sys::set_int(fd, libc::SOL_SOCKET, libc::SO_PRIORITY, priority)
            .map_err(ctx.sys("setsockopt SO_PRIORITY (after IP_TOS)"))?;
    }
    Ok(())
}

/// The TCP-level options.
pub(crate) fn apply_tcp(fd: BorrowedFd<'_>, o: &TcpSocketOptions, ctx: Ctx) -> Result<()> {
    let set =
        |level, name, value, step| sys::set_int(fd, level, name, value).map_err(ctx.sys(step));
    if !o.congestion.is_empty() {
        sys::set_bytes(
            fd,
            libc::SOL_TCP,
            libc::TCP_CONGESTION,
            o.congestion.as_bytes(),
        )
        .map_err(ctx.sys("setsockopt TCP_CONGESTION"))?;
    }
    if o.keep_idle > 0 {
        set(
            libc::SOL_TCP,
            libc::TCP_KEEPIDLE,
            o.keep_idle,
            "setsockopt TCP_KEEPIDLE",
        )?;
    }
    if o.keep_interval > 0 {
        set(
            libc::SOL_TCP,
            libc::TCP_KEEPINTVL,
            o.keep_interval,
            "setsockopt TCP_KEEPINTVL",
        )?;
    }
    if o.keep_count > 0 {
        set(
            libc::SOL_TCP,
            libc::TCP_KEEPCNT,
            o.keep_count,
            "setsockopt TCP_KEEPCNT",
        )?;
    }
    set(
        libc::SOL_SOCKET,
        libc::SO_KEEPALIVE,
        o.keepalive as i32,
        "setsockopt SO_KEEPALIVE",
    )?;
    set(
        libc::SOL_TCP,
        libc::TCP_NODELAY,
        o.no_delay as i32,
        "setsockopt TCP_NODELAY",
    )?;
    set(
        libc::SOL_TCP,
        libc::TCP_USER_TIMEOUT,
        o.user_timeout as i32,
        "setsockopt TCP_USER_TIMEOUT",
    )?;
    if o.cork {
        set(libc::SOL_TCP, libc::TCP_CORK, 1, "setsockopt TCP_CORK")?;
    }
    Ok(())
}

/// Reads the socket-level options of a socket of any family (packet, netlink...): the named
/// fields that are not IP options, and the table's `SOL_SOCKET` entries that differ from a
/// fresh socket's.
pub fn capture_socket_level(fd: impl AsFd) -> Result<SocketOptions> {
    let fd = fd.as_fd();
    let ctx = Ctx::new(Operation::Capture, SocketName::default());
    let int = |name, step| sys::get_int(fd, libc::SOL_SOCKET, name).map_err(ctx.sys(step));
    let mut more = crate::more_options::capture(fd, false, false, ctx)?;
    more.retain(|o| o.level == libc::SOL_SOCKET);
    Ok(SocketOptions {
        reuse_addr: int(libc::SO_REUSEADDR, "getsockopt SO_REUSEADDR")? != 0,
        reuse_port: int(libc::SO_REUSEPORT, "getsockopt SO_REUSEPORT")? != 0,
        send_buffer: int(libc::SO_SNDBUF, "getsockopt SO_SNDBUF")?,
        recv_buffer: int(libc::SO_RCVBUF, "getsockopt SO_RCVBUF")?,
        linger: sys::get_linger(fd).map_err(ctx.sys("getsockopt SO_LINGER"))?,
        mark: int(libc::SO_MARK, "getsockopt SO_MARK")? as u32,
        traffic_class: 0,
        v6_only: None,
        broadcast: int(libc::SO_BROADCAST, "getsockopt SO_BROADCAST")? != 0,
        more,
    })
}

/// Sets the options [`capture_socket_level`] read on a new socket of any family: the buffer
/// sizes only where they differ from the fresh socket's (so autotuning stays where it was).
pub fn apply_socket_level(fd: impl AsFd, o: &SocketOptions) -> Result<()> {
    let fd = fd.as_fd();
    let ctx = Ctx::new(Operation::Restore, SocketName::default());
    apply_pre_bind(fd, o, ctx)?;
    apply_buffers_if_changed(fd, o, ctx)?;
    apply_socket(fd, o, false, ctx)
}
