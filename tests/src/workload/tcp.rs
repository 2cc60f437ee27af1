//! `tcp ADDR`: a TCP listener and the connections it accepts or makes, O_NONBLOCK: data in
//! flight both ways, handshakes and closing states.
//!
//! ```text
//! tcp ADDR                   listens on ADDR (e.g. 127.0.0.1:0, [::1]:0); connections O_NONBLOCK
//!                            port -> <port>   accept -> <index>   conns -> <count>
//!                            echo I N -> <len> <checksum> (reads N bytes of conn I, writes them back)
//!                            blast I N SEED -> <bytes> (writes pattern(N, SEED) without waiting)
//!                            blast-by I N SEED K -> the same in writes of K bytes each
//!                            peer I -> <peer address>
//!                            accept-n N -> <count> (accepts N more)   echo-all N -> <count>
//!                            (reads N bytes of every connection, in order, writes them back)
//!                            connect ADDR -> <index> (non-blocking connect, kept as connection I)
//!                            connected I -> ok | <error> (waits until the connect completes)
//!                            local I -> <local address>   fd I -> <fd>   state I -> <TCP state name> (TCP_INFO)
//!                            shutdown I -> ok (shuts the write side: sends a FIN)
//!                            retrans I -> <tcpi_total_retrans> (segments sent again)
//!                            take I N -> <len> <checksum> (reads N bytes, writes nothing)
//!                            write I N SEED -> <len> (writes all of pattern(N, SEED), waiting)
//!                            eof I -> eof | data <len> (waits for the peer's FIN)
//!                            close I -> ok (closes it: later indices shift down)
//!                            fork -> <pid> (a child holding the listener and every connection
//!                            so far, answering `kid LINE` over two pipes with this mode's
//!                            commands: both processes hold the same sockets)
//!                            kid LINE -> the child's answer to LINE
//!                            probe I -> read=<eof|data N|error> poll=<revents> write=<ok|error>
//!                            (one non-blocking read, a poll without waiting, a 1-byte write)
//!                            setopts I|listener -> ok   opts I|listener -> <name=value ...>
//!                            (tcp_opts.rs: every option an application sets, read back)
//!                            mss I -> <TCP_MAXSEG> (the segment size in use)
//!                            rcvbuf I N -> ok (SO_RCVBUF N: the receive window stops growing)
//!                            closed I -> poll=<revents> soerror=<n> state=<S> local=<addr>
//!                            peer=<SO_PEERNAME> read=<..> write=<..> connect=<errno name>
//!                            (what a closed connection shows, in that order: the poll before
//!                            the read, connect() again to the peer SO_PEERNAME gives)
//!                            wait-closed I -> CLOSE (waits, bounded, for TCP_INFO to say CLOSE:
//!                            the ACK of our FIN may still be on its way)
//!                            wait-fin I -> ok (waits for the peer's FIN: POLLRDHUP, nothing read)
//!                            linger0 I -> ok (SO_LINGER 0: closing it sends a RST)
//!                            soerror I -> <n> (SO_ERROR, read and so cleared)
//!                            reset-seen I -> poll=<revents> state=<S> outq=<SIOCOUTQ>
//!                            reads=<data N,ERRNO,...,eof> write=<..> soerror=<n> (what a
//!                            connection reset by its peer shows, its error read last)
//!                            pump I J N SEED -> <len> <checksum> <segments> (writes
//!                            pattern(N, SEED) into I while reading J; what J received, and
//!                            the data segments I sent for it: tcpi_data_segs_out)
//! ```

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::Path;

use super::kids::{answer_each, ChildPipes};
use super::{count, failed, io_err, parse_u64, sys, tcp_opts, unknown, Mode};
use crate::protocol;

/// `tcp ADDR`
pub fn start(args: &[String], _dir: &Path) -> Result<Box<dyn Mode>, String> {
    let addr = args.first().map(String::as_str).unwrap_or("127.0.0.1:0");
    let listener = TcpListener::bind(addr).map_err(failed(addr))?;
    Ok(Box::new(Tcp {
        listener,
        conns: Vec::new(),
        kid: None,
    }))
}

impl Mode for Tcp {
    fn command(&mut self, verb: &str, args: &[&str]) -> Result<String, String> {
        let t = self;
        match (verb, args) {
            ("port", []) => Ok(t.listener.local_addr().map_err(io_err)?.port().to_string()),
            ("conns", []) => Ok(t.conns.len().to_string()),
            ("accept", []) => {
                let (s, _) = t.listener.accept().map_err(io_err)?;
                s.set_nonblocking(true).map_err(io_err)?;
                t.conns.push(s);
                Ok((t.conns.len() - 1).to_string())
            }
            ("accept-n", [n]) => {
                let n = count(n)?;
                for _ in 0..n {
                    let (s, _) = t.listener.accept().map_err(io_err)?;
                    s.set_nonblocking(true).map_err(io_err)?;
                    t.conns.push(s);
                }
                Ok(t.conns.len().to_string())
            }
            ("echo-all", [n]) => {
                let n = count(n)?;
                for (i, s) in t.conns.iter_mut().enumerate() {
                    echo(s, n).map_err(|e| format!("connection {i}: {e}"))?;
                }
                Ok(t.conns.len().to_string())
            }
            ("peer", [i]) => Ok(t.conn(i)?.peer_addr().map_err(io_err)?.to_string()),
            ("echo", [i, n]) => {
                let n = count(n)?;
                echo(t.conn(i)?, n)
            }
            ("connect", [addr]) => {
                let addr: std::net::SocketAddr =
                    addr.parse().map_err(|_| format!("bad address {addr:?}"))?;
                let s = connect_nonblocking(addr).map_err(io_err)?;
                t.conns.push(s);
                Ok((t.conns.len() - 1).to_string())
            }
            ("connected", [i]) => {
                let s = t.conn(i)?;
                wait_for(s, libc::POLLOUT)?;
                match s.take_error().map_err(io_err)? {
                    None => Ok("ok".into()),
                    Some(e) => Ok(e.to_string()),
                }
            }
            ("local", [i]) => Ok(t.conn(i)?.local_addr().map_err(io_err)?.to_string()),
            ("fd", [i]) => {
                use std::os::fd::AsRawFd;
                Ok(t.conn(i)?.as_raw_fd().to_string())
            }
            ("state", [i]) => state(t.conn(i)?).map_err(io_err),
            ("retrans", [i]) => total_retrans(t.conn(i)?).map(|n| n.to_string()),
            ("shutdown", [i]) => {
                t.conn(i)?
                    .shutdown(std::net::Shutdown::Write)
                    .map_err(io_err)?;
                Ok("ok".into())
            }
            ("take", [i, n]) => {
                let n = count(n)?;
                take(t.conn(i)?, n)
            }
            ("write", [i, n, seed]) => {
                let n = count(n)?;
                let seed = parse_u64(seed)?;
                write_all(t.conn(i)?, &protocol::pattern(n, seed))?;
                Ok(n.to_string())
            }
            ("eof", [i]) => eof(t.conn(i)?),
            ("close", [i]) => {
                t.conn(i)?;
                let i: usize = i.parse().map_err(|_| format!("bad index {i:?}"))?;
                drop(t.conns.remove(i));
                Ok("ok".into())
            }
            ("fork", []) => t.fork().map_err(io_err),
            ("probe", [i]) => Ok(probe(t.conn(i)?)),
            ("closed", [i]) => Ok(closed(t.conn(i)?)),
            ("reset-seen", [i]) => Ok(reset_seen(t.conn(i)?)),
            ("wait-closed", [i]) => wait_closed(t.conn(i)?),
            ("wait-fin", [i]) => {
                wait_for(t.conn(i)?, libc::POLLRDHUP)?;
                Ok("ok".into())
            }
            ("linger0", [i]) => {
                let fd = t.conn(i)?.as_raw_fd();
                // struct linger: l_onoff 1, l_linger 0.
                let b = [1i32.to_ne_bytes(), 0i32.to_ne_bytes()].concat();
                sys::setsockopt_bytes(fd, libc::SOL_SOCKET, libc::SO_LINGER, &b).map_err(io_err)?;
                Ok("ok".into())
            }
            ("soerror", [i]) => Ok(so_error(t.conn(i)?.as_raw_fd()).to_string()),
            ("kid", line) => {
                let kid = t.kid.as_ref().ok_or("no child: fork first")?;
                // One answer, up to a pipe's atomic write (`opts` is long).
                sys::write_all(kid.to_child, line.join(" ").as_bytes()).map_err(io_err)?;
                let mut buf = vec![0u8; 4096];
                let n = sys::read(kid.from_child, &mut buf).map_err(io_err)?;
                Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
            }
            ("setopts", ["listener"]) => {
                tcp_opts::set_all(t.listener.as_raw_fd(), true).map(|()| "ok".into())
            }
            ("opts", ["listener"]) => tcp_opts::read_all(t.listener.as_raw_fd(), true),
            ("setopts", [i]) => {
                tcp_opts::set_all(t.conn(i)?.as_raw_fd(), false).map(|()| "ok".into())
            }
            ("opts", [i]) => tcp_opts::read_all(t.conn(i)?.as_raw_fd(), false),
            ("mss", [i]) => {
                let fd = t.conn(i)?.as_raw_fd();
                let v = sys::getsockopt_bytes(fd, libc::IPPROTO_TCP, libc::TCP_MAXSEG, 4)
                    .map_err(io_err)?;
                let v: [u8; 4] = v.as_slice().try_into().map_err(|_| "short TCP_MAXSEG")?;
                Ok(i32::from_ne_bytes(v).to_string())
            }
            ("rcvbuf", [i, n]) => {
                let fd = t.conn(i)?.as_raw_fd();
                let n: i32 = n.parse().map_err(|_| format!("bad size {n:?}"))?;
                sys::setsockopt_bytes(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, &n.to_ne_bytes())
                    .map_err(io_err)?;
                Ok("ok".into())
            }
            ("pump", [i, j, n, seed]) => {
                let n = count(n)?;
                let seed = parse_u64(seed)?;
                let (i, j) = (index(i)?, index(j)?);
                if i == j || i.max(j) >= t.conns.len() {
                    return Err(format!("bad pair {i} {j}"));
                }
                let (from, to) = if i < j {
                    let (a, b) = t.conns.split_at_mut(j);
                    (&mut a[i], &mut b[0])
                } else {
                    let (a, b) = t.conns.split_at_mut(i);
                    (&mut b[0], &mut a[j])
                };
                pump(from, to, &protocol::pattern(n, seed))
            }
            ("blast", [i, n, seed]) => {
                let n = count(n)?;
                let seed = parse_u64(seed)?;
                blast(t.conn(i)?, n, seed, n)
            }
            ("blast-by", [i, n, seed, k]) => {
                let n = count(n)?;
                let seed = parse_u64(seed)?;
                blast(t.conn(i)?, n, seed, count(k)?.max(1))
            }
            _ => unknown(verb),
        }
    }
}

/// The tcp mode: a listener and the connections it accepted.
struct Tcp {
    listener: TcpListener,
    conns: Vec<TcpStream>,
    /// The child `fork` made, asked over two pipes.
    kid: Option<ChildPipes>,
}

impl Tcp {
    /// Forks a child holding every socket of this process, answering this mode's commands
    /// (one message each way) until its pipe closes.
    fn fork(&mut self) -> io::Result<String> {
        let (a_rd, a_wr) = sys::pipe()?;
        let (b_rd, b_wr) = sys::pipe()?;
        // the workload is single-threaded here; the child goes on in its own loop.
        let child = sys::fork()?;
        if child == 0 {
            sys::close(a_wr);
            sys::close(b_rd);
            self.kid = None;
            answer_each(a_rd, b_wr, |line| {
                let mut words = line.split_whitespace();
                let verb = words.next().unwrap_or("");
                let args: Vec<&str> = words.collect();
                match self.command(verb, &args) {
                    Ok(r) => r,
                    Err(e) => format!("err {e}"),
                }
            });
            super::kids::exit_child("tcp child", Ok(()))
        }
        sys::close(a_rd);
        sys::close(b_wr);
        self.kid = Some(ChildPipes {
            to_child: a_wr,
            from_child: b_rd,
        });
        Ok(child.to_string())
    }

    fn conn(&mut self, i: &str) -> Result<&mut TcpStream, String> {
        let i: usize = i.parse().map_err(|_| format!("bad index {i:?}"))?;
        self.conns.get_mut(i).ok_or(format!("no connection {i}"))
    }
}

fn index(i: &str) -> Result<usize, String> {
    i.parse().map_err(|_| format!("bad index {i:?}"))
}

/// `tcpi_data_segs_out` of `s`: the segments with data it sent (counted per segment of the
/// segment size, as they go on the wire, whatever the offloads).
fn data_segs_out(s: &TcpStream) -> Result<u32, String> {
    // Offset of tcpi_data_segs_out in struct tcp_info (linux/tcp.h, since Linux 4.6).
    tcp_info_u32(s, 156, "tcpi_data_segs_out")
}

/// `tcpi_total_retrans` of `s`: the segments it sent again (timeouts, loss probes, fast
/// retransmits), counted since the socket was made.
pub(super) fn total_retrans(s: &TcpStream) -> Result<u32, String> {
    tcp_info_u32(s, 100, "tcpi_total_retrans")
}

/// The u32 at `offset` of `s`'s struct tcp_info (linux/tcp.h), field `name`.
fn tcp_info_u32(s: &TcpStream, offset: usize, name: &str) -> Result<u32, String> {
    let info = sys::getsockopt_bytes(s.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_INFO, 256)
        .map_err(io_err)?;
    let b = info
        .get(offset..offset + 4)
        .ok_or(format!("TCP_INFO without {name}"))?;
    Ok(u32::from_ne_bytes(b.try_into().expect("4 bytes")))
}

/// Writes all of `data` into `from` while reading `to` (both non-blocking), so a transfer
/// larger than the buffers completes in one process; says what `to` received and how many
/// data segments `from` sent for it.
fn pump(from: &mut TcpStream, to: &mut TcpStream, data: &[u8]) -> Result<String, String> {
    let segs_before = data_segs_out(from)?;
    let mut got = Vec::with_capacity(data.len());
    let mut sent = 0;
    let mut buf = vec![0u8; 1 << 16];
    while got.len() < data.len() {
        let mut progress = false;
        if sent < data.len() {
            match from.write(&data[sent..]) {
                Ok(k) => {
                    sent += k;
                    progress = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("write after {sent} bytes: {e}")),
            }
        }
        match to.read(&mut buf) {
            Ok(0) => return Err(format!("eof after {} bytes", got.len())),
            Ok(k) => {
                got.extend_from_slice(&buf[..k]);
                progress = true;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("read after {} bytes: {e}", got.len())),
        }
        if !progress {
            let mut pfd = [
                libc::pollfd {
                    fd: from.as_raw_fd(),
                    events: if sent < data.len() { libc::POLLOUT } else { 0 },
                    revents: 0,
                },
                libc::pollfd {
                    fd: to.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // SAFETY: two pollfds, valid for the call.
            if unsafe { libc::poll(pfd.as_mut_ptr(), 2, 10_000) } == 0 {
                return Err(format!(
                    "stalled after {} of {} bytes",
                    got.len(),
                    data.len()
                ));
            }
        }
    }
    let segments = data_segs_out(from)?.wrapping_sub(segs_before);
    Ok(format!("{} {segments}", protocol::len_and_checksum(&got)))
}

/// What the process sees on `s` without waiting: one read, one poll, one write.
fn probe(s: &mut TcpStream) -> String {
    let mut buf = [0u8; 64];
    let read = match s.read(&mut buf) {
        Ok(0) => "eof".to_string(),
        Ok(n) => format!("data {n}"),
        Err(e) => kind_of(&e),
    };
    let poll = poll_mask(s.as_raw_fd());
    let write = match s.write(b"x") {
        Ok(_) => "ok".to_string(),
        Err(e) => kind_of(&e),
    };
    format!("read={read} poll={} write={write}", poll.join("|"))
}

/// An error by its errno name (ECONNRESET...).
fn kind_of(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ECONNRESET) => "ECONNRESET".into(),
        Some(libc::EPIPE) => "EPIPE".into(),
        Some(libc::ENOTCONN) => "ENOTCONN".into(),
        Some(libc::EAGAIN) => "EAGAIN".into(),
        Some(libc::EISCONN) => "EISCONN".into(),
        Some(libc::ECONNABORTED) => "ECONNABORTED".into(),
        Some(libc::EALREADY) => "EALREADY".into(),
        Some(libc::EINVAL) => "EINVAL".into(),
        _ => e.to_string(),
    }
}

/// SO_ERROR of `fd` (reading it clears it).
fn so_error(fd: i32) -> i32 {
    sys::getsockopt_bytes(fd, libc::SOL_SOCKET, libc::SO_ERROR, 4)
        .ok()
        .and_then(|v| <[u8; 4]>::try_from(v.as_slice()).ok())
        .map_or(-1, i32::from_ne_bytes)
}

/// The peer SO_PEERNAME gives (it answers in CLOSE, where getpeername says ENOTCONN).
fn so_peername(fd: i32, ipv6: bool) -> Option<SocketAddr> {
    // No longer than the family's address, or EINVAL.
    let len = if ipv6 {
        std::mem::size_of::<libc::sockaddr_in6>()
    } else {
        std::mem::size_of::<libc::sockaddr_in>()
    };
    let b = sys::getsockopt_bytes(fd, libc::SOL_SOCKET, libc::SO_PEERNAME, len).ok()?;
    let family = i32::from(u16::from_ne_bytes([*b.first()?, *b.get(1)?]));
    let port = u16::from_be_bytes([*b.get(2)?, *b.get(3)?]);
    let ip: std::net::IpAddr = match family {
        libc::AF_INET => <[u8; 4]>::try_from(b.get(4..8)?).ok()?.into(),
        libc::AF_INET6 => <[u8; 16]>::try_from(b.get(8..24)?).ok()?.into(),
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// What a closed connection shows its process, in an order that changes nothing seen later:
/// poll (before the read), SO_ERROR, TCP_INFO state, getsockname, SO_PEERNAME, then one
/// read, one write and connect() again to that peer.
fn closed(s: &mut TcpStream) -> String {
    let fd = s.as_raw_fd();
    let poll = poll_mask(fd);
    let soerror = so_error(fd);
    let state = state(s).unwrap_or_else(|e| e.to_string());
    let local = s
        .local_addr()
        .map_or_else(|e| kind_of(&e), |a| a.to_string());
    let peer = so_peername(fd, s.local_addr().is_ok_and(|a| a.is_ipv6()));
    let mut buf = [0u8; 64];
    let read = match s.read(&mut buf) {
        Ok(0) => "eof".to_string(),
        Ok(n) => format!("data {n}"),
        Err(e) => kind_of(&e),
    };
    let write = match s.write(b"x") {
        Ok(_) => "ok".to_string(),
        Err(e) => kind_of(&e),
    };
    let connect = match peer {
        Some(p) => {
            let (_, storage, len) = sockaddr(p);
            // SAFETY: storage holds a sockaddr of `len` bytes.
            let r = unsafe { libc::connect(fd, (&raw const storage).cast(), len) };
            if r == 0 {
                "ok".to_string()
            } else {
                kind_of(&io::Error::last_os_error())
            }
        }
        None => "-".into(),
    };
    format!(
        "poll={} soerror={soerror} state={state} local={local} peer={} read={read} \
         write={write} connect={connect}",
        poll.join("|"),
        peer.map_or("-".to_string(), |p| p.to_string())
    )
}

/// What a connection reset by its peer shows, its error not read before: poll, state,
/// SIOCOUTQ, then each read until an end-of-file (the data, then the error the reset left
/// pending, once), then a write and SO_ERROR.
fn reset_seen(s: &mut TcpStream) -> String {
    let fd = s.as_raw_fd();
    let poll = poll_mask(fd);
    let state = state(s).unwrap_or_else(|e| e.to_string());
    let mut outq: libc::c_int = -1;
    // SAFETY: SIOCOUTQ writes one int through the pointer, which outlives the call.
    unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut outq) };
    let mut reads = Vec::new();
    let mut buf = [0u8; 4096];
    for _ in 0..64 {
        match s.read(&mut buf) {
            Ok(0) => {
                reads.push("eof".to_string());
                break;
            }
            Ok(n) => reads.push(format!("data {n}")),
            Err(e) => reads.push(kind_of(&e)),
        }
    }
    let write = match s.write(b"x") {
        Ok(_) => "ok".to_string(),
        Err(e) => kind_of(&e),
    };
    format!(
        "poll={} state={state} outq={outq} reads={} write={write} soerror={}",
        poll.join("|"),
        reads.join(","),
        so_error(fd)
    )
}

/// Waits (10 s at most) until TCP_INFO says CLOSE.
fn wait_closed(s: &TcpStream) -> Result<String, String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let now = state(s).map_err(io_err)?;
        if now == "CLOSE" {
            return Ok(now);
        }
        if std::time::Instant::now() > deadline {
            return Err(format!("still {now}"));
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Waits until `s` is readable (`events` POLLIN) or writable (POLLOUT).
fn wait_for(s: &TcpStream, events: libc::c_short) -> Result<(), String> {
    let mut pfd = libc::pollfd {
        fd: s.as_raw_fd(),
        events,
        revents: 0,
    };
    // SAFETY: one pollfd, valid for the call.
    let r = unsafe { libc::poll(&mut pfd, 1, -1) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(format!("poll: {e}"));
        }
    }
    Ok(())
}

/// Writes as much of pattern(`n`, `seed`) as fits without waiting; says how much.
fn blast(s: &mut TcpStream, n: usize, seed: u64, each: usize) -> Result<String, String> {
    let data = protocol::pattern(n, seed);
    let mut sent = 0;
    while sent < n {
        match s.write(&data[sent..n.min(sent + each)]) {
            Ok(k) => sent += k,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("write after {sent} bytes: {e}")),
        }
    }
    Ok(sent.to_string())
}

/// A TCP socket whose connect to `addr` was started, not waited for.
fn connect_nonblocking(addr: SocketAddr) -> io::Result<TcpStream> {
    let (family, storage, len) = sockaddr(addr);
    // SAFETY: socket takes no pointers.
    let fd = unsafe {
        libc::socket(
            family,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh socket we own, handed over whole (closed on error).
    let s = unsafe { TcpStream::from_raw_fd(fd) };
    // SAFETY: storage holds a sockaddr of `len` bytes.
    let r = unsafe { libc::connect(fd, (&raw const storage).cast(), len) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(e);
        }
    }
    Ok(s)
}

fn sockaddr(addr: SocketAddr) -> (i32, libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*a.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in fits in sockaddr_storage.
            unsafe { std::ptr::write((&raw mut storage).cast(), sin) };
            (
                libc::AF_INET,
                storage,
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_in6 fits in sockaddr_storage.
            unsafe { std::ptr::write((&raw mut storage).cast(), sin6) };
            (
                libc::AF_INET6,
                storage,
                std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
            )
        }
    }
}

/// The socket's TCP state, by its kernel name.
pub(crate) fn state(s: &TcpStream) -> io::Result<String> {
    // tcpi_state is the first byte of struct tcp_info.
    let info = sys::getsockopt_bytes(s.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_INFO, 1)?;
    let state = info.first().copied().unwrap_or(0);
    let names = [
        "0",
        "ESTABLISHED",
        "SYN_SENT",
        "SYN_RECV",
        "FIN_WAIT1",
        "FIN_WAIT2",
        "TIME_WAIT",
        "CLOSE",
        "CLOSE_WAIT",
        "LAST_ACK",
        "LISTEN",
        "CLOSING",
    ];
    Ok(names
        .get(usize::from(state))
        .map_or_else(|| state.to_string(), |n| (*n).to_string()))
}

/// Reads exactly `n` bytes, waiting for them.
fn read_n(s: &mut TcpStream, n: usize) -> Result<Vec<u8>, String> {
    let mut data = vec![0u8; n];
    let mut got = 0;
    while got < n {
        match s.read(&mut data[got..]) {
            Ok(0) => return Err(format!("eof after {got} bytes")),
            Ok(k) => got += k,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => wait_for(s, libc::POLLIN)?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("read after {got} bytes: {e}")),
        }
    }
    Ok(data)
}

/// Reads exactly `n` bytes (waiting for them) and sums them up.
fn take(s: &mut TcpStream, n: usize) -> Result<String, String> {
    Ok(protocol::len_and_checksum(&read_n(s, n)?))
}

/// Reads exactly `n` bytes (waiting for them), writes them back, and sums them up.
fn echo(s: &mut TcpStream, n: usize) -> Result<String, String> {
    let data = read_n(s, n)?;
    write_all(s, &data)?;
    Ok(protocol::len_and_checksum(&data))
}

/// Writes all of `data`, waiting whenever the send queue is full.
fn write_all(s: &mut TcpStream, data: &[u8]) -> Result<(), String> {
    let mut sent = 0;
    while sent < data.len() {
        match s.write(&data[sent..]) {
            Ok(k) => sent += k,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => wait_for(s, libc::POLLOUT)?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("write after {sent} bytes: {e}")),
        }
    }
    Ok(())
}

/// Waits for the end of the stream: `eof`, or `data N` if N bytes came first.
fn eof(s: &mut TcpStream) -> Result<String, String> {
    let mut buf = [0u8; 4096];
    let mut extra = 0usize;
    loop {
        match s.read(&mut buf) {
            Ok(0) if extra == 0 => return Ok("eof".into()),
            Ok(0) => return Ok(format!("data {extra}")),
            Ok(k) => extra += k,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => wait_for(s, libc::POLLIN)?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("read: {e}")),
        }
    }
}

/// What a zero-timeout poll of `fd` for IN, OUT and RDHUP reports, by name.
fn poll_mask(fd: i32) -> Vec<&'static str> {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN | libc::POLLOUT | libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: one pollfd, valid for the call.
    unsafe { libc::poll(&mut pfd, 1, 0) };
    let names = [
        (libc::POLLIN, "IN"),
        (libc::POLLOUT, "OUT"),
        (libc::POLLRDHUP, "RDHUP"),
        (libc::POLLERR, "ERR"),
        (libc::POLLHUP, "HUP"),
    ];
    names
        .iter()
        .filter(|(bit, _)| pfd.revents & bit != 0)
        .map(|(_, n)| *n)
        .collect()
}
