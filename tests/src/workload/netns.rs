//! `netns OPTION...`: a process in a network namespace of its own (unshare(CLONE_NEWNET)),
//! with a TCP listener, a connection to it whose client end a child holds (an echo loop), and
//! a UDP socket with a datagram waiting, all over lo.
//!
//! ```text
//! options (in order):  early (a UDP socket made before the unshare, in the namespace it
//!                      left)   back (a child that joins the namespace this process left)
//!                      down (lo left down: no sockets made)   mtu=N   addr=CIDR (ip addr add
//!                      CIDR dev lo)   sysctl=PATH=VALUE (below /proc/sys, `,` for a tab)
//!                      route=CIDR (ip route add CIDR dev lo, once lo is up; route=ARG+ARG...:
//!                      ip route add ARG..., `dev lo` added when no dev or via is given)   veth=NAME (a veth pair
//!                      NAME, NAME-p)   promisc (a packet socket with a promiscuous
//!                      membership of lo, kept)   ip=ARG+ARG... (ip ARG...)   settled (waits until
//!                      no IPv6 address is tentative: duplicate detection over)   nft=FILE (nft -f FILE)   ipt=ARG+ARG... and
//!                      ip6t=ARG+ARG... (iptables-legacy / ip6tables-legacy -w ARG...): rules in
//!                      place before the sockets are made
//! ns -> <inode of its network namespace>
//! ip ARGS... -> what `ip ARGS` prints, lines joined by `|`
//! run PROGRAM ARGS... -> what it prints, lines joined by `|` (nft, iptables-legacy-save...)
//! sysctl PATH -> <value>
//! talk N -> <len> (writes N bytes to the child, which echoes them: read back and compared)
//! accept-new -> ok (a new client connects to the listener, is accepted, a byte goes both ways)
//! udp-queued -> <the datagram queued before the dump>
//! udp -> ok (a datagram to itself, received)
//! settled -> ok (once no IPv6 address is tentative)
//! listen ADDR -> <port> (a TCP listener on ADDR, port chosen by the kernel, kept)
//! accept-one -> ok (accepts a client of that listener, kept)
//! serve N -> <N> (reads N bytes from the accepted client, writes them back)
//! kid -> <the child's pid>   early-fd -> <the fd of the early socket>
//! early-ns -> <net:[INODE] of the namespace the early socket is of (SIOCGSKNS)>
//! early-addr -> <its address>   early-recv -> <a datagram it got (waits up to 10 s)>
//! back-kid -> <the pid of the child back in the namespace left>
//! last-ack -> <port> (a connection over lo whose connecting end shuts first, then a rule
//!             dropping what comes to the listening port, then the accepted end shuts: it
//!             stays in LAST_ACK, its FIN never acknowledged, the other end closed; both held)
//! last-ack-seen -> accepted=<state> read=<eof|..> write=<ok|errno> connecting=<state>
//!             read=.. write=.. (the accepted end first)
//! full-last-ack -> <bytes> (zdtm socket-tcp-last-ack: a connection over lo whose connecting
//!             end a child holds and shuts first, reading nothing; this process fills the
//!             accepted end's send queue with pattern(16000000, 8) in 17-byte writes, then
//!             shuts it: LAST_ACK behind the bytes queued)
//! full-last-ack-drain -> <len> <checksum> (the child reads its end to the end of the stream:
//!             what it got)
//! full-last-ack-retrans -> <n> (the accepted end's tcpi_total_retrans: segments it sent again)
//! ```

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::path::Path;

use super::kids::{exit_child, fork_holding};
use super::tcp::state;
use super::{count, failed, io_err, unknown, Mode};

/// `netns OPTION...`
pub fn start(args: &[String], _dir: &Path) -> Result<Box<dyn Mode>, String> {
    // A socket of cryo's namespace, made before the unshare and kept.
    let early = args
        .iter()
        .any(|a| a == "early")
        .then(|| UdpSocket::bind("127.0.0.1:0").map(IntoRawFd::into_raw_fd));
    let early = early.transpose().map_err(failed("early socket"))?;
    let original = std::fs::File::open("/proc/self/ns/net").map_err(failed("ns/net"))?;
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| format!("unshare: {e}"))?;
    // A child back in the namespace this process left, made before any socket (it holds none).
    let back = match args.iter().any(|a| a == "back") {
        false => None,
        true => match super::sys::fork().map_err(failed("fork"))? {
            0 => {
                let joined = nix::sched::setns(&original, nix::sched::CloneFlags::CLONE_NEWNET);
                // Not a namespace fd of its own (which no dump restores).
                drop(original);
                if joined.is_ok() {
                    loop {
                        // SAFETY: pause takes no arguments; the child waits to be killed.
                        unsafe { libc::pause() };
                    }
                }
                exit_child("netns back", joined.map_err(std::io::Error::from))
            }
            kid => Some(kid),
        },
    };
    drop(original);
    let mut up = true;
    let mut routes = Vec::new();
    let mut promisc = None;
    for arg in args {
        let (key, value) = arg.split_once('=').unwrap_or((arg, ""));
        match key {
            "down" => up = false,
            "early" | "back" => {}
            "promisc" => promisc = Some(promiscuous_on_lo()?),
            "mtu" => ip(&["link", "set", "lo", "mtu", value])?,
            "addr" => ip(&["addr", "add", value, "dev", "lo"])?,
            "sysctl" => {
                let (path, v) = value.split_once('=').ok_or("sysctl=PATH=VALUE")?;
                std::fs::write(format!("/proc/sys/{path}"), v.replace(',', "\t"))
                    .map_err(failed(path))?;
            }
            "route" => routes.push(value),
            "veth" => {
                let peer = format!("{value}-p");
                ip(&["link", "add", value, "type", "veth", "peer", "name", &peer])?
            }
            "ip" => ip(&value.split('+').collect::<Vec<_>>())?,
            "settled" => settled()?,
            "nft" => run("nft", &["-f", value]).map(drop)?,
            "ipt" | "ip6t" => {
                let tool = if key == "ipt" {
                    "iptables-legacy"
                } else {
                    "ip6tables-legacy"
                };
                let mut args = vec!["-w"];
                args.extend(value.split('+'));
                run(tool, &args).map(drop)?
            }
            other => return Err(format!("bad option {other:?}")),
        }
    }
    if !up {
        return Ok(Box::new(Netns {
            sockets: None,
            early,
            back,
            last_ack: None,
            full_last_ack: None,
            served: None,
            promisc,
        }));
    }
    ip(&["link", "set", "lo", "up"])?;
    for route in routes {
        let mut args = vec!["route", "add"];
        args.extend(route.split('+'));
        if !args.contains(&"dev") && !args.contains(&"via") {
            args.extend(["dev", "lo"]);
        }
        ip(&args)?;
    }
    let listener = TcpListener::bind("127.0.0.1:0").map_err(failed("listen"))?;
    let client = TcpStream::connect(listener.local_addr().map_err(io_err)?).map_err(io_err)?;
    let (server, _) = listener.accept().map_err(io_err)?;
    let server_fd = server.into_raw_fd();
    let kid = fork_holding(server_fd, client.into_raw_fd(), echo).map_err(failed("fork"))?;
    // SAFETY: fork_holding closed the client end here and left this process its own end.
    let server = unsafe { TcpStream::from_raw_fd(server_fd) };
    let udp = UdpSocket::bind("127.0.0.1:0").map_err(failed("udp"))?;
    udp.send_to(b"queued before the dump", udp.local_addr().map_err(io_err)?)
        .map_err(failed("udp send"))?;
    Ok(Box::new(Netns {
        sockets: Some(Sockets {
            listener,
            server,
            udp,
            kid,
        }),
        early,
        back,
        last_ack: None,
        full_last_ack: None,
        served: None,
        promisc,
    }))
}

/// A packet socket with a promiscuous membership of lo (index 1): lo's promiscuity count
/// goes up while it is held.
fn promiscuous_on_lo() -> Result<OwnedFd, String> {
    let protocol = (libc::ETH_P_ALL as u16).to_be() as libc::c_int;
    // SAFETY: socket(2) with constant arguments.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, protocol) };
    if fd < 0 {
        return Err(io_err(std::io::Error::last_os_error()));
    }
    // SAFETY: fd was just returned by socket(2); nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mreq = libc::packet_mreq {
        mr_ifindex: 1,
        mr_type: libc::PACKET_MR_PROMISC as libc::c_ushort,
        mr_alen: 0,
        mr_address: [0; 8],
    };
    // SAFETY: mreq is a packet_mreq, and its size is given.
    let set = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_ADD_MEMBERSHIP,
            (&mreq as *const libc::packet_mreq).cast(),
            std::mem::size_of::<libc::packet_mreq>() as libc::socklen_t,
        )
    };
    if set != 0 {
        return Err(io_err(std::io::Error::last_os_error()));
    }
    Ok(fd)
}

/// The child's life: echoes what comes on `fd` until its end.
fn echo(fd: i32) -> ! {
    // SAFETY: fork_holding hands the child this fd, its own.
    let mut s = unsafe { TcpStream::from_raw_fd(fd) };
    let mut buf = [0u8; 4096];
    let result = loop {
        match s.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => {
                if let Err(e) = s.write_all(&buf[..n]) {
                    break Err(e);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => break Err(e),
        }
    };
    exit_child("netns echo", result)
}

/// Waits until no IPv6 address is tentative: duplicate detection over.
pub(super) fn settled() -> Result<(), String> {
    // Bounded poll: the kernel tells the end of duplicate detection by no event a process
    // can wait on without a netlink listener.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while run_ip(&["-o", "addr"])?.contains("tentative") {
        if std::time::Instant::now() > deadline {
            return Err("IPv6 addresses still tentative after 10 s".into());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Ok(())
}

/// Runs `ip ARGS` in this process's namespace (its child inherits it): its output.
pub(super) fn ip(args: &[&str]) -> Result<(), String> {
    run_ip(args).map(drop)
}

pub(super) fn run_ip(args: &[&str]) -> Result<String, String> {
    run("ip", args)
}

/// Runs `program ARGS` in this process's namespace: its output, lines joined by `|`.
fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .map_err(failed(program))?;
    if !out.status.success() {
        return Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .map(str::trim_end)
        .collect::<Vec<_>>()
        .join("|"))
}

struct Sockets {
    listener: TcpListener,
    server: TcpStream,
    udp: UdpSocket,
    kid: i32,
}

struct Netns {
    sockets: Option<Sockets>,
    /// The fd of the socket made before the unshare (option `early`).
    early: Option<i32>,
    /// The child back in the namespace this process left (option `back`).
    back: Option<i32>,
    /// The accepted and connecting ends of `last-ack`.
    last_ack: Option<(TcpStream, TcpStream)>,
    full_last_ack: Option<FullLastAck>,
    /// The listener of `listen` and the client it accepted.
    served: Option<(TcpListener, Option<TcpStream>)>,
    /// The packet socket of option `promisc`.
    #[allow(dead_code)]
    promisc: Option<OwnedFd>,
}

/// `last-ack`: the accepted end in LAST_ACK, its FIN dropped on the way back; the port.
fn last_ack() -> Result<(TcpStream, TcpStream, u16), String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(failed("listen"))?;
    let port = listener.local_addr().map_err(io_err)?.port();
    let connecting = TcpStream::connect(("127.0.0.1", port)).map_err(failed("connect"))?;
    let (accepted, _) = listener.accept().map_err(failed("accept"))?;
    connecting
        .shutdown(std::net::Shutdown::Write)
        .map_err(io_err)?;
    run(
        "nft",
        &[&format!(
            "add table inet lastack; add chain inet lastack in {{ type filter hook input \
             priority 0; }}; add rule inet lastack in tcp dport {port} drop"
        )],
    )?;
    accepted
        .shutdown(std::net::Shutdown::Write)
        .map_err(io_err)?;
    // The accepted end's FIN reaches the connecting end, whose ACK the rule drops: bounded
    // wait for the kernel's softirq to have moved both (no event tells it).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let states = (
            state(&accepted).map_err(io_err)?,
            state(&connecting).map_err(io_err)?,
        );
        if states.0 == "LAST_ACK" && states.1 == "CLOSE" {
            return Ok((accepted, connecting, port));
        }
        if std::time::Instant::now() > deadline {
            return Err(format!("states {states:?}, not LAST_ACK and CLOSE"));
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// `full-last-ack`: the accepted end (kept), the child's pipes, and the bytes queued.
struct FullLastAck {
    #[allow(dead_code)]
    accepted: TcpStream,
    /// A byte here tells the child to read its end.
    go: OwnedFd,
    /// What the child read: "<len> <checksum>".
    result: OwnedFd,
}

/// Polls (bounded) until `s` is in `wanted`: the kernel moves it on a packet already sent.
fn wait_state(s: &TcpStream, wanted: &str) -> Result<(), String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let now = state(s).map_err(io_err)?;
        if now == wanted {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(format!("state {now}, not {wanted}"));
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

fn full_last_ack() -> Result<(FullLastAck, usize), String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(failed("listen"))?;
    let connecting =
        TcpStream::connect(listener.local_addr().map_err(io_err)?).map_err(failed("connect"))?;
    let (accepted, _) = listener.accept().map_err(failed("accept"))?;
    let (go_rd, go) = nix::unistd::pipe().map_err(|e| format!("pipe: {e}"))?;
    let (result, result_wr) = nix::unistd::pipe().map_err(|e| format!("pipe: {e}"))?;
    if super::sys::fork().map_err(failed("fork"))? == 0 {
        drop((accepted, go, result, listener));
        let drained = (|| -> std::io::Result<()> {
            let mut connecting = connecting;
            connecting.shutdown(std::net::Shutdown::Write)?;
            let mut byte = [0u8; 1];
            std::fs::File::from(go_rd).read_exact(&mut byte)?;
            let mut got = Vec::new();
            connecting.read_to_end(&mut got)?;
            std::fs::File::from(result_wr)
                .write_all(crate::protocol::len_and_checksum(&got).as_bytes())
        })();
        exit_child("full-last-ack child", drained)
    }
    drop((connecting, go_rd, result_wr));
    wait_state(&accepted, "CLOSE_WAIT")?;
    accepted.set_nonblocking(true).map_err(io_err)?;
    let data = crate::protocol::pattern(16_000_000, 8);
    let mut sent = 0;
    for chunk in data.chunks(17) {
        match (&accepted).write(chunk) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e.to_string()),
        }
        if sent % 17 != 0 {
            break;
        }
    }
    accepted.set_nonblocking(false).map_err(io_err)?;
    accepted
        .shutdown(std::net::Shutdown::Write)
        .map_err(io_err)?;
    wait_state(&accepted, "LAST_ACK")?;
    Ok((
        FullLastAck {
            accepted,
            go,
            result,
        },
        sent,
    ))
}

/// What an end of `last-ack` shows: its state, a non-blocking read, a 1-byte write.
fn end_seen(mut s: &TcpStream) -> String {
    let state = state(s).unwrap_or_else(|e| e.to_string());
    let _ = s.set_nonblocking(true);
    let errno = |e: std::io::Error| {
        e.raw_os_error().map_or(e.to_string(), |n| {
            nix::errno::Errno::from_raw(n).to_string()
        })
    };
    let mut b = [0u8; 1];
    let read = match s.read(&mut b) {
        Ok(0) => "eof".to_string(),
        Ok(n) => format!("data {n}"),
        Err(e) => errno(e),
    };
    let write = match s.write(b"x") {
        Ok(_) => "ok".to_string(),
        Err(e) => errno(e),
    };
    format!("{state} read={read} write={write}")
}

impl Mode for Netns {
    fn command(&mut self, verb: &str, args: &[&str]) -> Result<String, String> {
        let sockets = || self.sockets.as_ref().ok_or("lo was left down: no sockets");
        match (verb, args) {
            ("ns", []) => {
                let link = std::fs::read_link("/proc/self/ns/net").map_err(io_err)?;
                Ok(link.to_string_lossy().into_owned())
            }
            ("ip", args) => run_ip(args),
            ("last-ack", []) => {
                let (accepted, connecting, port) = last_ack()?;
                self.last_ack = Some((accepted, connecting));
                Ok(port.to_string())
            }
            ("full-last-ack", []) => {
                let (held, sent) = full_last_ack()?;
                self.full_last_ack = Some(held);
                Ok(sent.to_string())
            }
            ("full-last-ack-drain", []) => {
                let held = self.full_last_ack.as_ref().ok_or("no full-last-ack")?;
                let mut go = std::fs::File::from(held.go.try_clone().map_err(io_err)?);
                go.write_all(b"g").map_err(io_err)?;
                let mut got = String::new();
                std::fs::File::from(held.result.try_clone().map_err(io_err)?)
                    .read_to_string(&mut got)
                    .map_err(io_err)?;
                Ok(got)
            }
            ("full-last-ack-retrans", []) => {
                let held = self.full_last_ack.as_ref().ok_or("no full-last-ack")?;
                super::tcp::total_retrans(&held.accepted).map(|n| n.to_string())
            }
            ("last-ack-seen", []) => {
                let (accepted, connecting) = self.last_ack.as_ref().ok_or("no last-ack")?;
                Ok(format!(
                    "accepted={} connecting={}",
                    end_seen(accepted),
                    end_seen(connecting)
                ))
            }
            ("run", [program, args @ ..]) => run(program, args),
            ("settled", []) => settled().map(|()| "ok".into()),
            ("listen", [addr]) => {
                let ip: std::net::IpAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
                let listener = TcpListener::bind((ip, 0)).map_err(failed("listen"))?;
                let port = listener.local_addr().map_err(io_err)?.port();
                self.served = Some((listener, None));
                Ok(port.to_string())
            }
            ("accept-one", []) => {
                let (listener, client) = self.served.as_mut().ok_or("no listener")?;
                *client = Some(listener.accept().map_err(failed("accept"))?.0);
                Ok("ok".into())
            }
            ("serve", [n]) => {
                let n = count(n)?;
                let mut s = self
                    .served
                    .as_ref()
                    .and_then(|(_, c)| c.as_ref())
                    .ok_or("no client accepted")?;
                let mut data = vec![0u8; n];
                s.read_exact(&mut data).map_err(io_err)?;
                s.write_all(&data).map_err(io_err)?;
                Ok(n.to_string())
            }
            ("sysctl", [path]) => std::fs::read_to_string(format!("/proc/sys/{path}"))
                .map(|v| v.trim_end().to_string())
                .map_err(io_err),
            ("kid", []) => Ok(sockets()?.kid.to_string()),
            ("back-kid", []) => self
                .back
                .map(|p| p.to_string())
                .ok_or("no back child".into()),
            ("early-fd", []) => self
                .early
                .map(|fd| fd.to_string())
                .ok_or("no early socket".into()),
            ("early-ns", []) => {
                let fd = self.early.ok_or("no early socket")?;
                let ino = super::sys::socket_netns(fd).map_err(io_err)?;
                Ok(format!("net:[{ino}]"))
            }
            ("early-addr", []) => {
                let fd = self.early.ok_or("no early socket")?;
                let addr: nix::sys::socket::SockaddrIn =
                    nix::sys::socket::getsockname(fd).map_err(|e| e.to_string())?;
                Ok(addr.to_string())
            }
            ("early-recv", []) => {
                let fd = self.early.ok_or("no early socket")?;
                // SAFETY: the early socket stays open (this borrow ends here).
                let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
                let mut fds = [nix::poll::PollFd::new(fd, nix::poll::PollFlags::POLLIN)];
                if !matches!(nix::poll::poll(&mut fds, 10_000u16), Ok(1)) {
                    return Err("nothing came to the early socket".into());
                }
                let mut buf = [0u8; 64];
                let n = nix::sys::socket::recv(
                    fd.as_raw_fd(),
                    &mut buf,
                    nix::sys::socket::MsgFlags::empty(),
                )
                .map_err(|e| e.to_string())?;
                Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
            }
            ("talk", [n]) => {
                let n = count(n)?;
                let data: Vec<u8> = (0..n).map(|i| (i * 7 % 251) as u8).collect();
                let mut s = &sockets()?.server;
                s.write_all(&data).map_err(io_err)?;
                let mut back = vec![0u8; n];
                s.read_exact(&mut back).map_err(io_err)?;
                if back != data {
                    return Err("the echo differs".into());
                }
                Ok(n.to_string())
            }
            ("accept-new", []) => {
                let s = sockets()?;
                let mut c = TcpStream::connect(s.listener.local_addr().map_err(io_err)?)
                    .map_err(failed("connect"))?;
                let (mut a, _) = s.listener.accept().map_err(failed("accept"))?;
                c.write_all(b"x").map_err(io_err)?;
                let mut b = [0u8; 1];
                a.read_exact(&mut b).map_err(io_err)?;
                a.write_all(b"y").map_err(io_err)?;
                c.read_exact(&mut b).map_err(io_err)?;
                Ok(if &b == b"y" { "ok" } else { "bad" }.into())
            }
            ("udp-queued", []) => {
                let mut buf = [0u8; 256];
                let n = sockets()?.udp.recv(&mut buf).map_err(io_err)?;
                Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
            }
            ("udp", []) => {
                let u = &sockets()?.udp;
                u.send_to(b"again", u.local_addr().map_err(io_err)?)
                    .map_err(io_err)?;
                let mut buf = [0u8; 16];
                let n = u.recv(&mut buf).map_err(io_err)?;
                Ok(if &buf[..n] == b"again" { "ok" } else { "bad" }.into())
            }
            _ => unknown(verb),
        }
    }
}
