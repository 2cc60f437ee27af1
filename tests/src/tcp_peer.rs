//! The test's end of TCP connections to a `tcp` workload: its listener's address, a client
//! connected to it, exact reads, and the network lock a dump left (tcp*.rs, broken_peers.rs).

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

use crate::Workload;

/// Generous: a client retransmits on its own backoff timer after the lock is released.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// The address of the workload's listener on `ip`.
pub fn server_addr(w: &Workload, ip: &str) -> SocketAddr {
    let port: u16 = w.cmd("port").parse().expect("port");
    SocketAddr::new(ip.parse::<IpAddr>().unwrap(), port)
}

/// A client connected to the workload's listener on `ip`, its reads bounded by
/// [`IO_TIMEOUT`].
pub fn connect(w: &Workload, ip: &str) -> TcpStream {
    let s = TcpStream::connect(server_addr(w, ip)).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s
}

/// Exactly `n` bytes read from `s`; panics on the end of the stream or an error.
#[track_caller]
pub fn read_exactly(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    let mut got = 0;
    while got < n {
        match s.read(&mut buf[got..]) {
            Ok(0) => panic!("eof after {got} of {n} bytes"),
            Ok(k) => got += k,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("read after {got} of {n} bytes: {e}"),
        }
    }
    buf
}

/// The network lock a dump into `img` left, as `cryo show` prints it.
pub fn lock_of(w: &Workload, img: &Path) -> Option<String> {
    let out = w.show(img, false);
    out.assert_success();
    out.stdout
        .split(|c: char| c.is_whitespace() || c == ',')
        .find_map(|t| t.strip_prefix("network-lock="))
        .map(str::to_string)
}

/// A listener with backlog 0 whose accept queue is full (one connection waiting): it drops
/// the SYNs of the next connects, which stay in SYN_SENT. Returns it and the connection
/// filling it.
pub fn full_listener() -> (TcpListener, TcpStream) {
    use nix::sys::socket::{
        bind, listen, socket, AddressFamily, Backlog, SockFlag, SockType, SockaddrIn,
    };
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    bind(fd.as_raw_fd(), &SockaddrIn::new(127, 0, 0, 1, 0)).unwrap();
    listen(&fd, Backlog::new(0).unwrap()).unwrap();
    let listener = TcpListener::from(fd);
    let filler = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let mut pfd = libc::pollfd {
        fd: listener.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one pollfd, valid for the call.
    let ready = unsafe { libc::poll(&mut pfd, 1, 10_000) };
    assert_eq!(ready, 1, "filler queued");
    (listener, filler)
}

/// Connection 0 of a `tcp` workload: a connect in progress (SYN_SENT) to a [`full_listener`].
pub struct ConnectInProgress {
    /// The full listener it connects to.
    pub listener: TcpListener,
    filler: TcpStream,
    /// The listener's address.
    pub target: SocketAddr,
    /// The address the connect came from (`local 0`).
    pub local: String,
}

impl ConnectInProgress {
    /// Workload `w` connects to a new full listener; its connection 0 stays in SYN_SENT.
    #[track_caller]
    pub fn start(w: &Workload) -> Self {
        let (listener, filler) = full_listener();
        let target = listener.local_addr().unwrap();
        assert_eq!(w.cmd(&format!("connect {target}")), "0");
        assert_eq!(w.cmd("state 0"), "SYN_SENT");
        let local = w.cmd("local 0");
        ConnectInProgress {
            listener,
            filler,
            target,
            local,
        }
    }

    /// Makes room in the listener's queue (the filler accepted and closed): workload `w`'s
    /// connect completes (on its next SYN); returns the accepted end, checked to come from the
    /// same address, its reads bounded by [`IO_TIMEOUT`].
    #[track_caller]
    pub fn complete(self, w: &Workload) -> TcpStream {
        let (_first, _) = self.listener.accept().unwrap();
        drop(self.filler);
        assert_eq!(w.cmd("connected 0"), "ok", "the connect completes");
        let (accepted, peer) = self.listener.accept().unwrap();
        assert_eq!(peer.to_string(), self.local, "from the same port");
        accepted.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        accepted
    }
}

/// Clients connected to a `tcp` workload's listener on 127.0.0.1 and accepted by it
/// (`accept-n`), sending numbered rounds of 8 bytes that the workload echoes back
/// (`echo-all 8`): what the interrupted dumps and restores check every connection with.
pub struct EchoClients {
    clients: Vec<TcpStream>,
    round: u8,
}

impl EchoClients {
    /// `n` clients of workload `w`, each read bounded by `read_timeout`.
    pub fn connect(w: &Workload, n: usize, read_timeout: Duration) -> Self {
        let addr = server_addr(w, "127.0.0.1");
        let clients: Vec<TcpStream> = (0..n)
            .map(|_| {
                let s = TcpStream::connect(addr).expect("connect");
                s.set_read_timeout(Some(read_timeout)).unwrap();
                s
            })
            .collect();
        assert_eq!(w.cmd(&format!("accept-n {n}")), n.to_string());
        EchoClients { clients, round: 0 }
    }

    fn message(&self, i: usize) -> [u8; 8] {
        [self.round, i as u8, 1, 2, 3, 4, 5, 6]
    }

    /// Every client sends the next round's 8 bytes (the server may be down: they wait in
    /// its send queue).
    #[track_caller]
    pub fn send(&mut self, when: &str) {
        self.round += 1;
        for i in 0..self.clients.len() {
            let msg = self.message(i);
            self.clients[i]
                .write_all(&msg)
                .unwrap_or_else(|e| panic!("client {i} write {when}: {e}"));
        }
    }

    /// Workload `w` echoes every client's last 8 bytes (within `timeout`); every client
    /// reads them back.
    #[track_caller]
    pub fn echo(&mut self, w: &Workload, timeout: Duration, when: &str) {
        let n = self.clients.len();
        let echoed = w.try_cmd("echo-all 8", timeout);
        assert_eq!(
            echoed.as_deref(),
            Ok(n.to_string().as_str()),
            "server echo {when}"
        );
        let mut lost = Vec::new();
        for i in 0..n {
            let want = self.message(i);
            let mut got = [0u8; 8];
            match self.clients[i].read_exact(&mut got) {
                Ok(()) if got == want => {}
                other => lost.push((i, format!("{other:?} {got:?}"))),
            }
        }
        assert!(
            lost.is_empty(),
            "{} connections lost {when}: {:?}",
            lost.len(),
            &lost[..lost.len().min(3)]
        );
    }
}
