//! `socks`: sockets of any family made, bound, connected, shut, tuned and used on command, so
//! a test sets up exactly the socket state it checkpoints and then checks, from inside the
//! restored process, what that socket does.
//!
//! ```text
//! socks                       no socket at start
//!   pair TYPE                 -> <fd> <fd>  a unix socketpair (TYPE: stream|dgram|seqpacket)
//!   socket FAMILY TYPE PROTO  -> <fd>  (FAMILY: unix|inet|inet6|packet|netlink; TYPE also
//!                             raw, or packet: SOCK_PACKET; PROTO a number)
//!   bind-unix FD PATH         connect-unix FD PATH (PATH may be relative: this process's cwd;
//!                             @NAME: the abstract name NAME, which `name` shows as @NAME)
//!   bind-inet FD ADDR         connect-inet FD ADDR    name FD -> <local addr>
//!   listen FD   accept FD -> <fd>   close FD   chdir DIR
//!   send FD MSG               -> ok | err ... (MSG_DONTWAIT | MSG_NOSIGNAL)
//!   send-more FD MSG          the same with MSG_MORE
//!   sendto-inet FD ADDR MSG   sendto-unix FD PATH MSG
//!   take FD                   -> one message and its descriptors, each used (as unix-pair's)
//!   recv FD                   -> <msg>|<msg>|...|<eof> | empty (non-blocking reads, each
//!                             one message; <errno N> for a read that fails)
//!   recv-wait FD              the same once something is readable (up to 10 s)
//!   readable FD               -> ok once something is readable (up to 10 s), nothing read
//!   recvfrom FD               -> every datagram waiting (non-blocking reads), ' | '-joined,
//!                             each `<msg> from <source>` and what the cmsgs the socket asked
//!                             for show: ` to <IP_PKTINFO / IPV6_PKTINFO address> if <index>`,
//!                             ` ttl N` (IP_TTL / IPV6_HOPLIMIT), ` tos N` (IP_TOS /
//!                             IPV6_TCLASS); `empty` when none waits, `<empty>` for an
//!                             empty datagram
//!   sendto-inet-empty FD ADDR an empty datagram to ADDR
//!   peek FD                   -> the length of the first datagram waiting (MSG_PEEK), or
//!                             the error
//!   shut FD rd|wr|rdwr
//!   getopt FD LEVEL OPT       -> <int>        setopt FD LEVEL OPT VALUE
//!   getopt-raw FD LEVEL OPT LEN -> <hex>      setopt-raw FD LEVEL OPT HEX
//!   poll FD                   -> the revents of a zero-timeout poll (in|out|err|hup ...)
//!   filter-drop FD CHAR       a classic BPF filter dropping UDP datagrams whose first byte
//!                             is CHAR (SO_ATTACH_FILTER)
//!   filter-len FD             -> the instructions of its filter (SO_GET_FILTER count)
//!   bind-packet FD IFINDEX PROTO    bind a packet socket (PROTO host order, e.g. 2048)
//!   bind-spkt FD DEV          bind a SOCK_PACKET socket to device DEV by name
//!   spkt-name FD              -> the device a SOCK_PACKET socket is bound to (getsockname's
//!                             sa_data), `<none>` when not bound
//!   bind-netlink FD PID GROUPS      connect-netlink FD PID GROUPS (the 32-bit group mask)
//!   peer FD                   -> the connected netlink peer: <pid> <groups>
//!   sendto-netlink FD PID MSG  send MSG to netlink port PID
//!   frames FD                 -> once something is readable, every datagram waiting, each
//!                             <len>:<its bytes, '.' for what is not printable>, ' '-joined
//!   ping-echo FD ADDR         an ICMP (ICMPv6) echo request sent to ADDR (port 0) from a ping or raw
//!                             socket -> "reply seq N" once the reply is read (up to 10 s)
//!   ping-send FD ADDR         the request alone: its reply waits in the queue
//!   error FD                  -> SO_ERROR (reading it clears it)
//!   nonblock FD               O_NONBLOCK on (connect then returns EINPROGRESS)
//!   msfilter FD IFINDEX GROUP -> "include|exclude SRC,SRC..." (getsockopt MCAST_MSFILTER:
//!                             this socket's membership of GROUP on IFINDEX) or the error
//!   ring..., ring-...         a packet ring, mapped and used (rings.rs)
//! ```
//!
//! `name` of a packet socket is `ifindex N protocol 0xPPPP`, of a netlink one `pid N groups G`.

use std::ffi::CString;
use std::io;
use std::net::SocketAddr;
use std::path::Path;

use super::rings::Ring;
use super::sys::{cvt, getsockopt_bytes, recv_nowait, setsockopt_bytes, setsockopt_value};
use super::unix::{wait_readable, NOTHING};
use super::{io_err, unknown, Mode};

#[derive(Default)]
struct Socks {
    /// The packet rings set up, by socket fd.
    rings: std::collections::HashMap<i32, Ring>,
}

/// `socks`
pub fn start(_args: &[String], _dir: &Path) -> Result<Box<dyn Mode>, String> {
    Ok(Box::<Socks>::default())
}

fn num<T: std::str::FromStr>(s: &str) -> Result<T, String> {
    s.parse().map_err(|_| format!("bad number {s:?}"))
}

fn sock_type(s: &str) -> Result<i32, String> {
    Ok(match s {
        "stream" => libc::SOCK_STREAM,
        "dgram" => libc::SOCK_DGRAM,
        "seqpacket" => libc::SOCK_SEQPACKET,
        "raw" => libc::SOCK_RAW,
        // SOCK_PACKET, the obsolete packet type (deprecated in libc).
        "packet" => 10,
        other => return Err(format!("unknown socket type {other:?}")),
    })
}

fn family(s: &str) -> Result<i32, String> {
    Ok(match s {
        "unix" => libc::AF_UNIX,
        "inet" => libc::AF_INET,
        "inet6" => libc::AF_INET6,
        "packet" => libc::AF_PACKET,
        "netlink" => libc::AF_NETLINK,
        other => return Err(format!("unknown family {other:?}")),
    })
}

/// A `sockaddr_un` for `path` and its length.
fn unix_addr(path: &str) -> Result<(libc::sockaddr_un, libc::socklen_t), String> {
    // SAFETY: sockaddr_un is plain data; all zeroes is a valid value.
    let mut sa: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    sa.sun_family = libc::AF_UNIX as libc::sa_family_t;
    // "@name": the abstract name "\0name" (no trailing NUL in its length).
    let (bytes, nul): (Vec<u8>, usize) = match path.strip_prefix('@') {
        Some(name) => ([&[0u8][..], name.as_bytes()].concat(), 0),
        None => (path.as_bytes().to_vec(), 1),
    };
    if bytes.len() >= sa.sun_path.len() {
        return Err(format!("path too long: {path}"));
    }
    for (d, &b) in sa.sun_path.iter_mut().zip(&bytes) {
        *d = b as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + nul;
    Ok((sa, len as libc::socklen_t))
}

/// A `sockaddr_storage` for `addr` and its length.
fn inet_addr(addr: &str) -> Result<(libc::sockaddr_storage, libc::socklen_t), String> {
    let addr: SocketAddr = addr.parse().map_err(|_| format!("bad address {addr:?}"))?;
    // SAFETY: sockaddr_storage is plain data; all zeroes is a valid value.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            let sin = unsafe {
                &mut *(&mut ss as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>()
            };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            let sin6 = unsafe {
                &mut *(&mut ss as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr.s6_addr = a.ip().octets();
            sin6.sin6_scope_id = a.scope_id();
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    Ok((ss, len as libc::socklen_t))
}

/// The local name of socket `fd` (`peer`: its peer's name), as text.
fn local_name(fd: i32, peer: bool) -> io::Result<String> {
    // SAFETY: sockaddr_storage is plain data; all zeroes is a valid value.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let get = if peer {
        libc::getpeername
    } else {
        libc::getsockname
    };
    // SAFETY: ss has len bytes; the kernel writes at most len.
    cvt(unsafe {
        get(
            fd,
            (&mut ss as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    })?;
    let p = (&ss as *const libc::sockaddr_storage).cast::<u8>();
    Ok(match i32::from(ss.ss_family) {
        libc::AF_INET => {
            // SAFETY: the kernel wrote a sockaddr_in.
            let sin = unsafe { &*p.cast::<libc::sockaddr_in>() };
            let ip = std::net::Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            SocketAddr::from((ip, u16::from_be(sin.sin_port))).to_string()
        }
        libc::AF_INET6 => {
            // SAFETY: the kernel wrote a sockaddr_in6.
            let sin6 = unsafe { &*p.cast::<libc::sockaddr_in6>() };
            let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            SocketAddr::from((ip, u16::from_be(sin6.sin6_port))).to_string()
        }
        libc::AF_UNIX => {
            // SAFETY: the kernel wrote a sockaddr_un.
            let sun = unsafe { &*p.cast::<libc::sockaddr_un>() };
            let n = (len as usize).saturating_sub(2).min(sun.sun_path.len());
            let raw: Vec<u8> = sun.sun_path[..n].iter().map(|&c| c as u8).collect();
            if let Some((0, name)) = raw.split_first() {
                return Ok(format!("@{}", String::from_utf8_lossy(name)));
            }
            let bytes: Vec<u8> = raw.into_iter().take_while(|&b| b != 0).collect();
            if bytes.is_empty() {
                "unnamed".into()
            } else {
                String::from_utf8_lossy(&bytes).into_owned()
            }
        }
        libc::AF_PACKET => {
            // SAFETY: the kernel wrote a sockaddr_ll.
            let sll = unsafe { &*p.cast::<libc::sockaddr_ll>() };
            format!(
                "ifindex {} protocol 0x{:04x}",
                sll.sll_ifindex,
                u16::from_be(sll.sll_protocol)
            )
        }
        libc::AF_NETLINK => {
            // SAFETY: the kernel wrote a sockaddr_nl.
            let nl = unsafe { &*p.cast::<libc::sockaddr_nl>() };
            format!("pid {} groups {}", nl.nl_pid, nl.nl_groups)
        }
        other => format!("family {other}"),
    })
}

/// A `sockaddr_nl` for (pid, groups).
fn netlink_addr(pid: &str, groups: &str) -> Result<libc::sockaddr_nl, String> {
    // SAFETY: sockaddr_nl is plain data; all zeroes is a valid value.
    let mut nl: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    nl.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    nl.nl_pid = num(pid)?;
    nl.nl_groups = num(groups)?;
    Ok(nl)
}

/// Every datagram waiting on `fd` once one is, as `frames` replies.
fn frames(fd: i32) -> io::Result<String> {
    wait_readable(fd, NOTHING)?;
    let mut out = Vec::new();
    loop {
        let mut buf = [0u8; 65536];
        let Some(n) = recv_nowait(fd, &mut buf)? else {
            break;
        };
        let bytes = &buf[..n];
        let text: String = bytes
            .iter()
            .map(|&b| if b.is_ascii_graphic() { b as char } else { '.' })
            .collect();
        out.push(format!("{}:{text}", bytes.len()));
    }
    Ok(out.join(" "))
}

fn ok(r: io::Result<libc::c_int>) -> Result<String, String> {
    r.map(|_| "ok".into()).map_err(io_err)
}

fn send_to(fd: i32, msg: &str, flags: i32, to: Option<(*const libc::sockaddr, u32)>) -> String {
    let (addr, len) = to.unwrap_or((std::ptr::null(), 0));
    // SAFETY: msg is our buffer; addr (if any) points at a live sockaddr of len bytes.
    let n = unsafe {
        libc::sendto(
            fd,
            msg.as_ptr().cast(),
            msg.len(),
            flags | libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            addr,
            len,
        )
    };
    if n < 0 {
        format!("err {}", io::Error::last_os_error())
    } else {
        "ok".into()
    }
}

/// The internet checksum of `data`.
fn inet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Sends an echo request from ping or raw socket `fd` to `addr` and waits for its reply.
fn ping_echo(fd: i32, addr: &str) -> Result<String, String> {
    let v6 = ping_send(fd, addr)?;
    let reply = if v6 { 129u8 } else { 0 };
    let raw = getsockopt_bytes(fd, libc::SOL_SOCKET, libc::SO_TYPE, 4)
        .map_err(io_err)?
        .first()
        .copied()
        == Some(libc::SOCK_RAW as u8);
    loop {
        wait_readable(fd, "no echo reply").map_err(io_err)?;
        let mut buf = [0u8; 2048];
        // SAFETY: recv into our own buffer.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
        let n = cvt(n as i32).map_err(io_err)? as usize;
        // A raw IPv4 socket reads the IP header too.
        let at = if raw && !v6 {
            usize::from(buf[0] & 0x0f) * 4
        } else {
            0
        };
        if n >= at + 8 && buf[at] == reply {
            let got = u16::from_be_bytes([buf[at + 6], buf[at + 7]]);
            return Ok(format!("reply seq {got}"));
        }
    }
}

/// Sends an echo request (sequence 7) from ping or raw socket `fd` to `addr`; whether it
/// went over IPv6.
fn ping_send(fd: i32, addr: &str) -> Result<bool, String> {
    let (ss, len) = inet_addr(addr)?;
    let v6 = i32::from(ss.ss_family) == libc::AF_INET6;
    let request = if v6 { 128u8 } else { 8 };
    let seq: u16 = 7;
    let mut msg = vec![request, 0, 0, 0, 0x12, 0x34];
    msg.extend_from_slice(&seq.to_be_bytes());
    msg.extend_from_slice(b"cryo ping");
    // ICMPv6's checksum covers a pseudo-header: the kernel fills it in.
    if !v6 {
        let sum = inet_checksum(&msg);
        msg[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    // SAFETY: msg is our buffer; ss is a live sockaddr of len bytes.
    cvt(unsafe {
        libc::sendto(
            fd,
            msg.as_ptr().cast(),
            msg.len(),
            0,
            (&ss as *const libc::sockaddr_storage).cast(),
            len,
        ) as i32
    })
    .map_err(io_err)?;
    Ok(v6)
}

/// This socket's membership of `group` on interface `ifindex`: its source filter.
fn msfilter(fd: i32, ifindex: u32, group: &str) -> Result<String, String> {
    // struct group_filter: interface, group (sockaddr_storage at 8), mode (136), number of
    // sources (140), sources (144, 128 bytes each).
    let (ss, _) = inet_addr(&if group.contains(':') {
        format!("[{group}]:0")
    } else {
        format!("{group}:0")
    })?;
    let level = if group.contains(':') {
        libc::IPPROTO_IPV6
    } else {
        libc::IPPROTO_IP
    };
    const ROOM: usize = 16;
    let mut buf = vec![0u8; 144 + 128 * ROOM];
    buf[..4].copy_from_slice(&ifindex.to_ne_bytes());
    // SAFETY: sockaddr_storage is plain data, 128 bytes; we copy its bytes.
    let raw = unsafe {
        std::slice::from_raw_parts((&ss as *const libc::sockaddr_storage).cast::<u8>(), 128)
    };
    buf[8..136].copy_from_slice(raw);
    buf[140..144].copy_from_slice(&(ROOM as u32).to_ne_bytes());
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: buf has len bytes; the kernel reads the request from it and writes at most len.
    cvt(unsafe {
        libc::getsockopt(
            fd,
            level,
            libc::MCAST_MSFILTER,
            buf.as_mut_ptr().cast(),
            &mut len,
        )
    })
    .map_err(io_err)?;
    let word = |at: usize| u32::from_ne_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]);
    let mode = if word(136) == 1 { "include" } else { "exclude" };
    let n = (word(140) as usize).min(ROOM);
    let sources: Vec<String> = (0..n)
        .map(|i| {
            let at = 144 + 128 * i;
            let family = i32::from(u16::from_ne_bytes([buf[at], buf[at + 1]]));
            if family == libc::AF_INET6 {
                let b: [u8; 16] = buf[at + 8..at + 24].try_into().unwrap_or([0; 16]);
                std::net::Ipv6Addr::from(b).to_string()
            } else {
                let b: [u8; 4] = buf[at + 4..at + 8].try_into().unwrap_or([0; 4]);
                std::net::Ipv4Addr::from(b).to_string()
            }
        })
        .collect();
    Ok(format!("{mode} {}", sources.join(",")).trim().to_string())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Result<Vec<u8>, String> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2).unwrap_or("?"), 16))
        .collect::<Result<_, _>>()
        .map_err(|_| format!("bad hex {s:?}"))
}

/// Every datagram waiting on `fd` with its source and the header fields its cmsgs show, as
/// `recvfrom` replies.
fn recvfrom_all(fd: i32) -> Result<String, String> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, SockaddrStorage};
    let mut out = Vec::new();
    loop {
        let mut buf = [0u8; 65536];
        let mut cmsg = [0u8; 512];
        let mut iov = [io::IoSliceMut::new(&mut buf)];
        let msg =
            match recvmsg::<SockaddrStorage>(fd, &mut iov, Some(&mut cmsg), MsgFlags::MSG_DONTWAIT)
            {
                Ok(m) => m,
                Err(nix::errno::Errno::EAGAIN) => break,
                Err(e) => return Err(e.to_string()),
            };
        let from = msg.address.map_or("?".to_string(), |a| a.to_string());
        let mut line = String::new();
        for c in msg.cmsgs().map_err(|e| e.to_string())? {
            match c {
                ControlMessageOwned::Ipv4PacketInfo(p) => {
                    let ip = std::net::Ipv4Addr::from(u32::from_be(p.ipi_addr.s_addr));
                    line += &format!(" to {ip} if {}", p.ipi_ifindex);
                }
                ControlMessageOwned::Ipv6PacketInfo(p) => {
                    let ip = std::net::Ipv6Addr::from(p.ipi6_addr.s6_addr);
                    line += &format!(" to {ip} if {}", p.ipi6_ifindex);
                }
                ControlMessageOwned::Ipv4Ttl(t) | ControlMessageOwned::Ipv6HopLimit(t) => {
                    line += &format!(" ttl {t}");
                }
                ControlMessageOwned::Ipv4Tos(t) => line += &format!(" tos {t}"),
                ControlMessageOwned::Ipv6TClass(t) => line += &format!(" tos {t}"),
                _ => {}
            }
        }
        let n = msg.bytes;
        let text = if n == 0 {
            "<empty>".into()
        } else {
            String::from_utf8_lossy(&buf[..n])
        };
        out.push(format!("{text} from {from}{line}"));
    }
    Ok(if out.is_empty() {
        "empty".into()
    } else {
        out.join(" | ")
    })
}

/// Every datagram waiting on unix socket `fd` with its sender's name as recvfrom shows it
/// ("unnamed", "@abstract" or the path), joined with " | ".
fn recvfrom_unix(fd: i32) -> Result<String, String> {
    let mut out = Vec::new();
    loop {
        let mut buf = [0u8; 4096];
        // SAFETY: sockaddr_un is plain data; zero is a valid value.
        let mut from: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
        // SAFETY: buf and from are ours and as long as the lengths given.
        let n = unsafe {
            libc::recvfrom(
                fd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
                (&mut from as *mut libc::sockaddr_un).cast(),
                &mut len,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::WouldBlock {
                break;
            }
            return Err(e.to_string());
        }
        let path: Vec<u8> = from.sun_path[..(len as usize).saturating_sub(2)]
            .iter()
            .map(|&c| c as u8)
            .collect();
        let name = match path.split_first() {
            None => "unnamed".to_string(),
            Some((0, rest)) => format!("@{}", String::from_utf8_lossy(rest)),
            Some(_) => {
                let end = path.iter().position(|&c| c == 0).unwrap_or(path.len());
                String::from_utf8_lossy(&path[..end]).into_owned()
            }
        };
        out.push(format!(
            "{} from {name}",
            String::from_utf8_lossy(&buf[..n as usize])
        ));
    }
    Ok(if out.is_empty() {
        "empty".into()
    } else {
        out.join(" | ")
    })
}

/// Every message waiting on `fd`, one non-blocking recv each, joined with '|': `<eof>` for
/// an end of stream, `<errno N>` for a read that failed (both end the list).
fn recv_line(fd: i32) -> String {
    let mut msgs = Vec::new();
    loop {
        let mut buf = [0u8; 4096];
        match recv_nowait(fd, &mut buf) {
            Ok(None) => break,
            Err(e) => {
                msgs.push(format!("<errno {}>", e.raw_os_error().unwrap_or(0)));
                break;
            }
            Ok(Some(0)) => {
                msgs.push("<eof>".to_string());
                break;
            }
            Ok(Some(n)) => msgs.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
        }
    }
    if msgs.is_empty() {
        "empty".into()
    } else {
        msgs.join("|")
    }
}

impl Mode for Socks {
    fn command(&mut self, verb: &str, args: &[&str]) -> Result<String, String> {
        match (verb, args) {
            ("pair", [ty]) => {
                let mut sv = [0i32; 2];
                // SAFETY: socketpair fills our two-int array.
                cvt(unsafe { libc::socketpair(libc::AF_UNIX, sock_type(ty)?, 0, sv.as_mut_ptr()) })
                    .map_err(io_err)?;
                Ok(format!("{} {}", sv[0], sv[1]))
            }
            ("socket", [fam, ty, proto]) => {
                // SAFETY: socket takes no pointers.
                let fd = cvt(unsafe { libc::socket(family(fam)?, sock_type(ty)?, num(proto)?) })
                    .map_err(io_err)?;
                Ok(fd.to_string())
            }
            ("bind-unix", [fd, path]) => {
                let (sa, len) = unix_addr(path)?;
                // SAFETY: sa is a live sockaddr_un of len bytes.
                ok(cvt(unsafe {
                    libc::bind(num(fd)?, (&sa as *const libc::sockaddr_un).cast(), len)
                }))
            }
            ("connect-unix", [fd, path]) => {
                let (sa, len) = unix_addr(path)?;
                // SAFETY: sa is a live sockaddr_un of len bytes.
                ok(cvt(unsafe {
                    libc::connect(num(fd)?, (&sa as *const libc::sockaddr_un).cast(), len)
                }))
            }
            ("bind-inet", [fd, addr]) => {
                let (ss, len) = inet_addr(addr)?;
                // SAFETY: ss is a live sockaddr of len bytes.
                ok(cvt(unsafe {
                    libc::bind(num(fd)?, (&ss as *const libc::sockaddr_storage).cast(), len)
                }))
            }
            ("connect-inet", [fd, addr]) => {
                let (ss, len) = inet_addr(addr)?;
                // SAFETY: ss is a live sockaddr of len bytes.
                ok(cvt(unsafe {
                    libc::connect(num(fd)?, (&ss as *const libc::sockaddr_storage).cast(), len)
                }))
            }
            ("name", [fd]) => local_name(num(fd)?, false).map_err(io_err),
            ("peername", [fd]) => local_name(num(fd)?, true).map_err(io_err),
            ("bind-packet", [fd, ifindex, proto]) => {
                // SAFETY: sockaddr_ll is plain data; all zeroes is a valid value.
                let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
                sll.sll_family = libc::AF_PACKET as u16;
                sll.sll_ifindex = num(ifindex)?;
                sll.sll_protocol = num::<u16>(proto)?.to_be();
                let len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
                // SAFETY: sll is a live sockaddr_ll of len bytes.
                ok(cvt(unsafe {
                    libc::bind(num(fd)?, (&sll as *const libc::sockaddr_ll).cast(), len)
                }))
            }
            ("bind-spkt", [fd, dev]) => {
                // SAFETY: sockaddr is plain data; all zeroes is a valid value.
                let mut sa: libc::sockaddr = unsafe { std::mem::zeroed() };
                sa.sa_family = libc::AF_PACKET as u16;
                for (d, c) in sa.sa_data.iter_mut().zip(dev.bytes().take(13)) {
                    *d = c as libc::c_char;
                }
                let len = std::mem::size_of::<libc::sockaddr>() as libc::socklen_t;
                // SAFETY: sa is a live sockaddr of len bytes.
                ok(cvt(unsafe { libc::bind(num(fd)?, &sa, len) }))
            }
            ("spkt-name", [fd]) => {
                // SAFETY: sockaddr is plain data; all zeroes is a valid value.
                let mut sa: libc::sockaddr = unsafe { std::mem::zeroed() };
                let mut len = std::mem::size_of::<libc::sockaddr>() as libc::socklen_t;
                // SAFETY: getsockname writes at most len bytes into sa.
                cvt(unsafe { libc::getsockname(num(fd)?, &mut sa, &mut len) }).map_err(io_err)?;
                let name: String = sa
                    .sa_data
                    .iter()
                    .take_while(|&&c| c != 0)
                    .map(|&c| c as u8 as char)
                    .collect();
                Ok(if name.is_empty() {
                    "<none>".into()
                } else {
                    name
                })
            }
            ("bind-netlink", [fd, pid, groups]) | ("connect-netlink", [fd, pid, groups]) => {
                let nl = netlink_addr(pid, groups)?;
                let len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
                let addr = (&nl as *const libc::sockaddr_nl).cast();
                let fd = num(fd)?;
                // SAFETY: nl is a live sockaddr_nl of len bytes.
                ok(cvt(unsafe {
                    if verb == "bind-netlink" {
                        libc::bind(fd, addr, len)
                    } else {
                        libc::connect(fd, addr, len)
                    }
                }))
            }
            ("sendto-netlink", [fd, pid, msg]) => {
                let nl = netlink_addr(pid, "0")?;
                let len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
                let to = (&nl as *const libc::sockaddr_nl).cast();
                Ok(send_to(num(fd)?, msg, 0, Some((to, len))))
            }
            ("peer", [fd]) => {
                // SAFETY: sockaddr_nl is plain data; all zeroes is a valid value.
                let mut nl: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
                let mut len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
                // SAFETY: nl has len bytes; the kernel writes at most len.
                cvt(unsafe {
                    libc::getpeername(
                        num(fd)?,
                        (&mut nl as *mut libc::sockaddr_nl).cast(),
                        &mut len,
                    )
                })
                .map_err(io_err)?;
                Ok(format!("{} {}", nl.nl_pid, nl.nl_groups))
            }
            ("frames", [fd]) => frames(num(fd)?).map_err(io_err),
            ("listen", [fd]) => {
                // SAFETY: listen takes no pointers.
                ok(cvt(unsafe { libc::listen(num(fd)?, 16) }))
            }
            ("accept", [fd]) => {
                // SAFETY: accept with null address pointers.
                let s = cvt(unsafe {
                    libc::accept(num(fd)?, std::ptr::null_mut(), std::ptr::null_mut())
                })
                .map_err(io_err)?;
                Ok(s.to_string())
            }
            ("close", [fd]) => {
                // SAFETY: close takes no pointers.
                ok(cvt(unsafe { libc::close(num(fd)?) }))
            }
            ("chdir", [dir]) => {
                let c = CString::new(*dir).map_err(|_| "NUL in path".to_string())?;
                // SAFETY: c is a NUL-terminated string.
                ok(cvt(unsafe { libc::chdir(c.as_ptr()) }))
            }
            ("send", [fd, msg]) => Ok(send_to(num(fd)?, msg, 0, None)),
            ("send-more", [fd, msg]) => Ok(send_to(num(fd)?, msg, libc::MSG_MORE, None)),
            ("dup-near-limit", [below]) => {
                // /dev/null at fd (hard RLIMIT_NOFILE - BELOW), the soft limit raised to it.
                let mut lim = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                // SAFETY: getrlimit fills our rlimit; setrlimit reads it.
                cvt(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }).map_err(io_err)?;
                lim.rlim_cur = lim.rlim_max;
                // SAFETY: as above.
                cvt(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }).map_err(io_err)?;
                let at = lim.rlim_max as i32 - num::<i32>(below)?;
                // SAFETY: dup2 of our own stdin (/dev/null) to a free number.
                cvt(unsafe { libc::dup2(0, at) })
                    .map(|fd| fd.to_string())
                    .map_err(io_err)
            }
            ("clone-child", [sig]) => {
                // A child of clone with exit signal SIG (0: none), not fork's SIGCHLD; it
                // pauses until killed.
                let sig: libc::c_long = num(sig)?;
                // SAFETY: clone without CLONE_VM is a fork: the child gets a copy of this
                // address space and only pauses (async-signal-safe) until killed.
                let pid = unsafe { libc::syscall(libc::SYS_clone, sig, 0, 0, 0, 0) };
                if pid == 0 {
                    loop {
                        // SAFETY: pause takes nothing.
                        unsafe { libc::pause() };
                    }
                }
                cvt(pid as i32).map(|p| p.to_string()).map_err(io_err)
            }
            ("open", [path, mode]) => {
                let flags = match *mode {
                    "r" => libc::O_RDONLY,
                    "w" => libc::O_WRONLY,
                    "rw" => libc::O_RDWR,
                    other => return Err(format!("bad mode {other:?}")),
                };
                let c = CString::new(*path).map_err(|_| "NUL in path".to_string())?;
                // SAFETY: c is a NUL-terminated path.
                let fd = cvt(unsafe { libc::open(c.as_ptr(), flags | libc::O_NONBLOCK) })
                    .map_err(io_err)?;
                Ok(fd.to_string())
            }
            ("error-wait", [fd]) => {
                let mut pfd = libc::pollfd {
                    fd: num(fd)?,
                    events: 0,
                    revents: 0,
                };
                // SAFETY: poll of our one pollfd; POLLERR is reported without being asked for.
                cvt(unsafe { libc::poll(&mut pfd, 1, -1) }).map_err(io_err)?;
                Ok(format!("{:#x}", pfd.revents))
            }
            ("send-oob", [fd, msg]) => Ok(send_to(num(fd)?, msg, libc::MSG_OOB, None)),
            ("recv-oob", [fd]) => {
                let mut byte = [0u8; 1];
                // SAFETY: recv into our own one-byte buffer.
                let n = unsafe {
                    libc::recv(
                        num(fd)?,
                        byte.as_mut_ptr().cast(),
                        1,
                        libc::MSG_OOB | libc::MSG_DONTWAIT,
                    )
                };
                cvt(n as i32)
                    .map(|n| String::from_utf8_lossy(&byte[..n as usize]).into_owned())
                    .map_err(io_err)
            }
            ("sendto-inet", [fd, addr, msg]) => {
                let (ss, len) = inet_addr(addr)?;
                let to = (&ss as *const libc::sockaddr_storage).cast();
                Ok(send_to(num(fd)?, msg, 0, Some((to, len))))
            }
            ("sendto-inet-empty", [fd, addr]) => {
                let (ss, len) = inet_addr(addr)?;
                let to = (&ss as *const libc::sockaddr_storage).cast();
                Ok(send_to(num(fd)?, "", 0, Some((to, len))))
            }
            ("peek", [fd]) => {
                let mut buf = [0u8; 65536];
                // SAFETY: recv into our own buffer, at most its length.
                let n = unsafe {
                    libc::recv(
                        num(fd)?,
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        libc::MSG_PEEK | libc::MSG_DONTWAIT,
                    )
                };
                cvt(n as i32).map(|n| n.to_string()).map_err(io_err)
            }
            ("peek-n", [fd, n]) => {
                // MSG_PEEK of at most N bytes, which SO_PEEK_OFF (when set) reads from and
                // moves on: the bytes as text.
                let mut buf = vec![0u8; num(n)?];
                // SAFETY: recv into our own buffer, at most its length.
                let got = unsafe {
                    libc::recv(
                        num(fd)?,
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        libc::MSG_PEEK | libc::MSG_DONTWAIT,
                    )
                };
                cvt(got as i32)
                    .map(|got| String::from_utf8_lossy(&buf[..got as usize]).into_owned())
                    .map_err(io_err)
            }
            ("sendto-unix", [fd, path, msg]) => {
                let (sa, len) = unix_addr(path)?;
                let to = (&sa as *const libc::sockaddr_un).cast();
                Ok(send_to(num(fd)?, msg, 0, Some((to, len))))
            }
            ("recv", [fd]) => Ok(recv_line(num(fd)?)),
            ("take", [fd]) => super::unix_msg::take(num(fd)?).map_err(io_err),
            ("recvfrom", [fd]) => recvfrom_all(num(fd)?),
            ("recvfrom-unix", [fd]) => recvfrom_unix(num(fd)?),
            ("readable", [fd]) => wait_readable(num(fd)?, NOTHING)
                .map(|()| "ok".into())
                .map_err(io_err),
            ("recv-wait", [fd]) => {
                let fd = num(fd)?;
                wait_readable(fd, NOTHING).map_err(io_err)?;
                Ok(recv_line(fd))
            }
            ("shut", [fd, how]) => {
                let how = match *how {
                    "rd" => libc::SHUT_RD,
                    "wr" => libc::SHUT_WR,
                    "rdwr" => libc::SHUT_RDWR,
                    other => return Err(format!("bad shutdown {other:?}")),
                };
                // SAFETY: shutdown takes no pointers.
                ok(cvt(unsafe { libc::shutdown(num(fd)?, how) }))
            }
            ("getopt", [fd, level, opt]) => {
                let raw = getsockopt_bytes(num(fd)?, num(level)?, num(opt)?, 4).map_err(io_err)?;
                let mut v = [0u8; 4];
                v[..raw.len().min(4)].copy_from_slice(&raw[..raw.len().min(4)]);
                Ok(match raw.len() {
                    1 => raw[0].to_string(),
                    _ => i32::from_ne_bytes(v).to_string(),
                })
            }
            ("setopt", [fd, level, opt, value]) => {
                let v: i32 = num(value)?;
                ok(setsockopt_bytes(
                    num(fd)?,
                    num(level)?,
                    num(opt)?,
                    &v.to_ne_bytes(),
                ))
            }
            ("getopt-raw", [fd, level, opt, len]) => {
                getsockopt_bytes(num(fd)?, num(level)?, num(opt)?, num(len)?)
                    .map(|b| hex(&b))
                    .map_err(io_err)
            }
            ("setopt-raw", [fd, level, opt, value]) => ok(setsockopt_bytes(
                num(fd)?,
                num(level)?,
                num(opt)?,
                &unhex(value)?,
            )),
            ("filter-drop", [fd, ch]) => {
                let byte = u32::from(*ch.as_bytes().first().ok_or("no CHAR")?);
                let ins = |code: u16, jt: u8, jf: u8, k: u32| libc::sock_filter { code, jt, jf, k };
                // ldb [8] (past the UDP header); jeq CHAR ? drop : accept
                let prog = [
                    ins(0x30, 0, 0, 8),
                    ins(0x15, 0, 1, byte),
                    ins(0x06, 0, 0, 0),
                    ins(0x06, 0, 0, 0xffff),
                ];
                let fprog = libc::sock_fprog {
                    len: prog.len() as u16,
                    filter: prog.as_ptr().cast_mut(),
                };
                // fprog points at prog, alive for the call.
                ok(setsockopt_value(
                    num(fd)?,
                    libc::SOL_SOCKET,
                    libc::SO_ATTACH_FILTER,
                    &fprog,
                ))
            }
            ("ping-echo", [fd, addr]) => ping_echo(num(fd)?, addr),
            ("ping-send", [fd, addr]) => ping_send(num(fd)?, addr).map(|_| "ok".into()),
            ("msfilter", [fd, ifindex, group]) => msfilter(num(fd)?, num(ifindex)?, group),
            ("nonblock", [fd]) => {
                let fd = num(fd)?;
                // SAFETY: fcntl on an int fd, no pointers.
                let flags = cvt(unsafe { libc::fcntl(fd, libc::F_GETFL) }).map_err(io_err)?;
                // SAFETY: as above.
                ok(cvt(unsafe {
                    libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK)
                }))
            }
            ("error", [fd]) => {
                let raw = getsockopt_bytes(num(fd)?, libc::SOL_SOCKET, libc::SO_ERROR, 4)
                    .map_err(io_err)?;
                let mut v = [0u8; 4];
                v[..raw.len().min(4)].copy_from_slice(&raw[..raw.len().min(4)]);
                Ok(i32::from_ne_bytes(v).to_string())
            }
            ("filter-len", [fd]) => {
                let mut len: libc::socklen_t = 0;
                // SAFETY: null buffer of length 0: the kernel writes the count into len.
                cvt(unsafe {
                    libc::getsockopt(
                        num(fd)?,
                        libc::SOL_SOCKET,
                        libc::SO_GET_FILTER,
                        std::ptr::null_mut(),
                        &mut len,
                    )
                })
                .map_err(io_err)?;
                Ok(len.to_string())
            }
            ("poll", [fd]) => {
                let mut p = libc::pollfd {
                    fd: num(fd)?,
                    events: libc::POLLIN | libc::POLLOUT | libc::POLLRDHUP,
                    revents: 0,
                };
                // SAFETY: poll on our one pollfd.
                cvt(unsafe { libc::poll(&mut p, 1, 0) }).map_err(io_err)?;
                let names = [
                    (libc::POLLIN, "in"),
                    (libc::POLLOUT, "out"),
                    (libc::POLLERR, "err"),
                    (libc::POLLHUP, "hup"),
                    (libc::POLLRDHUP, "rdhup"),
                ];
                let set: Vec<&str> = names
                    .iter()
                    .filter(|(bit, _)| p.revents & bit != 0)
                    .map(|(_, n)| *n)
                    .collect();
                Ok(if set.is_empty() {
                    "none".into()
                } else {
                    set.join(" ")
                })
            }
            ("ring", [fd, version, bs, bn, fs, fnr, which]) => {
                let fd = num(fd)?;
                let args = [num(version)?, num(bs)?, num(bn)?, num(fs)?, num(fnr)?];
                let ring = Ring::setup(fd, &args, which)?;
                let at = ring.address();
                self.rings.insert(fd, ring);
                Ok(format!("{at:#x}"))
            }
            (verb, [fd, rest @ ..]) if verb.starts_with("ring-") => {
                let ring = self
                    .rings
                    .get_mut(&num(fd)?)
                    .ok_or_else(|| format!("no ring on fd {fd}"))?;
                match (verb, rest) {
                    ("ring-read", [marker]) => ring.read(marker),
                    ("ring-state", []) => Ok(ring.state()),
                    ("ring-send", [marker]) => ring.send(marker, true),
                    ("ring-queue", [marker]) => ring.send(marker, false),
                    ("ring-restamp", []) => {
                        ring.restamp();
                        Ok("ok".into())
                    }
                    ("ring-map", []) => ring.mapping(),
                    ("ring-unmap-tail", []) => ring.unmap_tail(),
                    ("ring-private", []) => ring.map_private(),
                    ("ring-private-state", []) => ring.private_state(),
                    _ => unknown(verb),
                }
            }
            _ => unknown(verb),
        }
    }
}
