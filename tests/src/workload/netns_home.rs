//! `netns-home [conn]`: sockets of another network namespace than their holder's (zdtm
//! netns_sub).
//! This process unshares a network namespace of its own (lo up), makes a TCP listener, a UDP
//! socket (both on 127.0.0.1, ports chosen by the kernel) and a unix datagram socket bound to
//! an abstract name there, then forks a child that unshares another namespace and keeps the
//! three; this process closes its copies. With `conn`, the child keeps the client end of a
//! TCP connection over lo there too (this process the accepted end).
//!
//! ```text
//! home-check -> ok | what is wrong: this process reaches the three through its namespace
//!               (connects to the listener and writes a byte, sends a datagram to the UDP
//!               socket and one to the unix name); the child, asked over a pipe, checks each
//!               socket's namespace (SIOCGSKNS) is its parent's and not its own, then gets
//!               each (accept and read, recv), waiting at most 10 s for each
//! kid -> <the child's pid>
//! ```

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;

use super::kids::exit_child;
use super::{failed, io_err, unknown, Mode};

/// `netns-home`
pub fn start(args: &[String], _dir: &Path) -> Result<Box<dyn Mode>, String> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| format!("unshare: {e}"))?;
    super::netns::ip(&["link", "set", "lo", "up"])?;
    let listener = TcpListener::bind("127.0.0.1:0").map_err(failed("listen"))?;
    let udp = UdpSocket::bind("127.0.0.1:0").map_err(failed("udp"))?;
    let name = format!("cryo-home-{}", std::process::id());
    let unix = UnixDatagram::bind_addr(
        &SocketAddr::from_abstract_name(name.as_bytes()).map_err(failed("abstract name"))?,
    )
    .map_err(failed("unix bind"))?;
    let conn = match args.iter().any(|a| a == "conn") {
        false => None,
        true => {
            let l = TcpListener::bind("127.0.0.1:0").map_err(failed("listen"))?;
            let client =
                TcpStream::connect(l.local_addr().map_err(io_err)?).map_err(failed("connect"))?;
            let (accepted, _) = l.accept().map_err(failed("accept"))?;
            Some((client, accepted))
        }
    };
    let (ask_r, ask_w) = nix::unistd::pipe().map_err(|e| format!("pipe: {e}"))?;
    let (reply_r, reply_w) = nix::unistd::pipe().map_err(|e| format!("pipe: {e}"))?;
    let ports = (
        listener.local_addr().map_err(io_err)?.port(),
        udp.local_addr().map_err(io_err)?.port(),
    );
    match super::sys::fork().map_err(failed("fork"))? {
        0 => {
            drop((ask_w, reply_r));
            let _client = conn.as_ref().map(|(c, _)| c);
            let result = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(std::io::Error::from)
                .and_then(|()| kid(&listener, &udp, &unix, ask_r, reply_w));
            exit_child("netns-home kid", result)
        }
        kid => Ok(Box::new(Home {
            kid,
            _accepted: conn.map(|(_, a)| a),
            ports,
            name,
            ask: std::fs::File::from(ask_w),
            reply: std::fs::File::from(reply_r),
        })),
    }
}

struct Home {
    kid: i32,
    /// The accepted end of option `conn`.
    _accepted: Option<TcpStream>,
    /// The listener's and the UDP socket's ports.
    ports: (u16, u16),
    /// The unix socket's abstract name.
    name: String,
    ask: std::fs::File,
    reply: std::fs::File,
}

/// The child: one answer per byte asked.
fn kid(
    listener: &TcpListener,
    udp: &UdpSocket,
    unix: &UnixDatagram,
    ask: OwnedFd,
    reply: OwnedFd,
) -> std::io::Result<()> {
    let mut ask = std::fs::File::from(ask);
    let mut reply = std::fs::File::from(reply);
    let mut byte = [0u8; 1];
    loop {
        if ask.read(&mut byte)? == 0 {
            return Ok(());
        }
        let answer = check(listener, udp, unix).unwrap_or_else(|e| e);
        reply.write_all(format!("{answer}\n").as_bytes())?;
    }
}

/// Waits up to 10 s for `fd` to be readable.
fn ready(fd: impl AsFd, what: &str) -> Result<(), String> {
    let mut fds = [nix::poll::PollFd::new(
        fd.as_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    match nix::poll::poll(&mut fds, 10_000u16) {
        Ok(1) => Ok(()),
        other => Err(format!("{what}: nothing came ({other:?})")),
    }
}

/// The child's checks of its three sockets.
fn check(listener: &TcpListener, udp: &UdpSocket, unix: &UnixDatagram) -> Result<String, String> {
    let ino = |path: String| {
        std::fs::metadata(&path)
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .map_err(|e| format!("{path}: {e}"))
    };
    let parent = ino(format!("/proc/{}/ns/net", nix::unistd::getppid()))?;
    let own = ino("/proc/self/ns/net".into())?;
    if own == parent {
        return Err(format!(
            "the child is in its parent's namespace net:[{own}]"
        ));
    }
    for (what, fd) in [
        ("listener", listener.as_raw_fd()),
        ("udp", udp.as_raw_fd()),
        ("unix", unix.as_raw_fd()),
    ] {
        let its = super::sys::socket_netns(fd).map_err(|e| format!("{what}: SIOCGSKNS: {e}"))?;
        if its != parent {
            return Err(format!(
                "{what} is in net:[{its}], not its parent's net:[{parent}] (its own: net:[{own}])"
            ));
        }
    }
    ready(listener, "listener")?;
    let (mut accepted, _) = listener.accept().map_err(|e| format!("accept: {e}"))?;
    let mut b = [0u8; 1];
    accepted
        .read_exact(&mut b)
        .map_err(|e| format!("read: {e}"))?;
    if &b != b"t" {
        return Err(format!("tcp: read {b:?}"));
    }
    ready(udp, "udp")?;
    let n = udp.recv(&mut b).map_err(|e| format!("udp recv: {e}"))?;
    if &b[..n] != b"d" {
        return Err(format!("udp: got {:?}", &b[..n]));
    }
    ready(unix, "unix")?;
    let n = unix.recv(&mut b).map_err(|e| format!("unix recv: {e}"))?;
    if &b[..n] != b"u" {
        return Err(format!("unix: got {:?}", &b[..n]));
    }
    Ok("ok".into())
}

impl Home {
    /// `home-check`: see the module doc.
    fn home_check(&mut self) -> Result<String, String> {
        let (tcp, udp) = self.ports;
        let mut client =
            TcpStream::connect(("127.0.0.1", tcp)).map_err(|e| format!("connect: {e}"))?;
        client.write_all(b"t").map_err(io_err)?;
        let sender = UdpSocket::bind("127.0.0.1:0").map_err(io_err)?;
        sender
            .send_to(b"d", ("127.0.0.1", udp))
            .map_err(|e| format!("udp send: {e}"))?;
        let to = SocketAddr::from_abstract_name(self.name.as_bytes()).map_err(io_err)?;
        UnixDatagram::unbound()
            .and_then(|u| u.send_to_addr(b"u", &to))
            .map_err(|e| format!("unix send: {e}"))?;
        self.ask.write_all(b"c").map_err(io_err)?;
        let mut line = Vec::new();
        let mut b = [0u8; 1];
        while b[0] != b'\n' {
            if self.reply.read(&mut b).map_err(io_err)? == 0 {
                return Err("the child is gone".into());
            }
            line.push(b[0]);
        }
        drop(client);
        Ok(String::from_utf8_lossy(&line).trim_end().to_string())
    }
}

impl Mode for Home {
    fn command(&mut self, verb: &str, args: &[&str]) -> Result<String, String> {
        match (verb, args) {
            ("home-check", []) => self.home_check(),
            ("kid", []) => Ok(self.kid.to_string()),
            _ => unknown(verb),
        }
    }
}
