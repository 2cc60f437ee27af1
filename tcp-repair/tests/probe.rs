//! Probing the peer of a live connection on loopback: a live peer answers, a vanished one
//! resets the connection, a socket that is not established is not probed.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use cryo_tcp_repair::{restore, send_probe, PeerAnswer, PeerProbe, Repair};

/// A connected pair on loopback: (accepted end, client end).
fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    (server, client)
}

/// The answer once it is not `Waiting` (loopback answers within the probe's own syscall;
/// the loop only covers a softirq run late).
fn answer(s: &TcpStream, probe: PeerProbe) -> PeerAnswer {
    let start = Instant::now();
    loop {
        let a = probe.answer(s.as_fd()).unwrap();
        if a != PeerAnswer::Waiting || start.elapsed() > Duration::from_secs(5) {
            return a;
        }
        std::thread::yield_now();
    }
}

#[test]
fn a_live_peer_answers_and_the_connection_goes_on() {
    let (mut server, client) = pair();
    let probe = send_probe(server.as_fd())
        .unwrap()
        .expect("established: probed");
    assert_eq!(answer(&server, probe), PeerAnswer::Alive);
    std::io::Write::write_all(&mut &client, b"still here").unwrap();
    let mut buf = [0u8; 10];
    server.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"still here");
}

#[test]
fn a_vanished_peer_resets_the_connection() {
    let (server, client) = pair();
    // The server's socket leaves silently (closed in repair mode), then the client vanishes
    // without a trace: its reset finds nobody.
    let repair = Repair::enter(server.as_fd()).unwrap();
    let state = repair.capture().unwrap();
    repair.abandon().unwrap();
    drop(server);
    socket2::SockRef::from(&client)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(client);

    let mut restored = TcpStream::from(restore(&state).unwrap().finish_quiet().unwrap());
    let probe = send_probe(restored.as_fd()).unwrap().expect("probed");
    assert_eq!(answer(&restored, probe), PeerAnswer::Reset);
    let err = restored.read(&mut [0u8; 1]).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
    // Closed now: nothing more to probe.
    assert!(send_probe(restored.as_fd()).unwrap().is_none());
}

#[test]
fn a_listener_is_not_probed() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    assert!(send_probe(listener.as_fd()).unwrap().is_none());
}
