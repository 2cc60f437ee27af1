//! Listening TCP sockets and UDP sockets.

use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsFd;

use cryo_tcp_repair::*;
use socket2::{Domain, SockAddr, SockRef, Socket, Type};

fn listener(addr: &str, backlog: i32) -> Socket {
    let addr: SocketAddr = addr.parse().unwrap();
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None).unwrap();
    s.set_reuse_address(true).unwrap();
    s.bind(&addr.into()).unwrap();
    s.listen(backlog).unwrap();
    s
}

fn wait_pending(l: &Socket) {
    let mut pfd = [nix::poll::PollFd::new(
        l.as_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    nix::poll::poll(&mut pfd, nix::poll::PollTimeout::from(5000u16)).unwrap();
}

fn listener_round_trip(addr: &str) {
    let l = listener(addr, 77);
    SockRef::from(&l).set_tcp_nodelay(true).unwrap();
    let state = capture_listener(&l, InFlight::Refuse).unwrap();
    assert_eq!(state.backlog, Some(77));
    assert!(state.socket.reuse_addr && state.tcp.no_delay);
    let local = state.local;
    drop(l);
    let restored = restore_listener(&state, 128).unwrap();
    let again = capture_listener(&restored, InFlight::Refuse).unwrap();
    assert_eq!(again, state);
    let _c = TcpStream::connect(local).unwrap();
    let l = Socket::from(restored);
    let (a, _) = l.accept().unwrap();
    assert_eq!(a.local_addr().unwrap().as_socket(), Some(local));
}

#[test]
fn listener_ipv4() {
    listener_round_trip("127.0.0.1:0");
}

#[test]
fn listener_ipv6() {
    listener_round_trip("[::1]:0");
}

#[test]
fn listener_with_pending_connection() {
    let l = listener("127.0.0.1:0", 8);
    let local = l.local_addr().unwrap().as_socket().unwrap();
    let _c = TcpStream::connect(local).unwrap();
    wait_pending(&l);
    let err = capture_listener(&l, InFlight::Refuse).unwrap_err();
    assert!(err.is_temporary(), "{err}");
    assert!(err.to_string().contains("not accepted yet"), "{err}");
    let state = capture_listener(&l, InFlight::Skip).unwrap();
    assert_eq!(state.dropped_pending, 1);
}

fn udp_round_trip(a: &str, b: &str, connected: bool) {
    let us = UdpSocket::bind(a).unwrap();
    let them = UdpSocket::bind(b).unwrap();
    SockRef::from(&us).set_mark(7).unwrap();
    SockRef::from(&us).set_broadcast(true).unwrap();
    if connected {
        us.connect(them.local_addr().unwrap()).unwrap();
    }
    let state = capture_udp(&us).unwrap();
    assert_eq!(state.local, us.local_addr().unwrap());
    assert_eq!(state.remote.is_some(), connected);
    drop(us);
    let us = UdpSocket::from(restore_udp(&state).unwrap());
    assert_eq!(capture_udp(&us).unwrap(), state);
    them.send_to(b"ping", state.local).unwrap();
    let mut buf = [0u8; 8];
    let (n, from) = us.recv_from(&mut buf).unwrap();
    assert_eq!(
        (&buf[..n], from),
        (&b"ping"[..], them.local_addr().unwrap())
    );
    if connected {
        us.send(b"pong").unwrap();
    } else {
        us.send_to(b"pong", from).unwrap();
    }
    let (n, _) = them.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"pong");
}

#[test]
fn udp_ipv4_bound() {
    udp_round_trip("127.0.0.1:0", "127.0.0.1:0", false);
}

#[test]
fn udp_ipv4_connected() {
    udp_round_trip("127.0.0.1:0", "127.0.0.1:0", true);
}

#[test]
fn udp_ipv6_connected() {
    udp_round_trip("[::1]:0", "[::1]:0", true);
}

#[test]
fn udp_unbound_is_captured() {
    let s = Socket::new(Domain::IPV6, Type::DGRAM, None).unwrap();
    let state = capture_udp(&s).unwrap();
    assert_eq!(state.local.port(), 0);
    let r = restore_udp(&state).unwrap();
    let _ = SockAddr::from(state.local);
    assert_eq!(capture_udp(&r).unwrap().local.port(), 0);
}
