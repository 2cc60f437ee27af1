//! Real sockets on loopback, the peer in another process.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use common::*;
use cryo_tcp_repair::*;
use socket2::{SockRef, TcpKeepalive};

/// Entry point of the peer process (does nothing in a normal test run).
#[test]
fn peer_child() {
    if let Ok(addr) = std::env::var(PEER_ENV) {
        run_peer(&addr);
    }
}

fn loopback(v6: bool) -> SocketAddr {
    if v6 {
        "[::1]:0".parse().unwrap()
    } else {
        "127.0.0.1:0".parse().unwrap()
    }
}

/// A connection whose other end lives in a peer process.
fn connection(v6: bool) -> (TcpStream, Peer) {
    let listener = TcpListener::bind(loopback(v6)).unwrap();
    let peer = Peer::connect(listener.local_addr().unwrap());
    let (stream, from) = listener.accept().unwrap();
    assert_eq!(from, peer.addr);
    (stream, peer)
}

fn read_checked(s: &mut impl Read, offset: &mut u64, n: usize) {
    let mut buf = vec![0u8; n];
    s.read_exact(&mut buf).unwrap();
    check_pattern(&buf, *offset, PEER_SALT).unwrap();
    *offset += n as u64;
}

fn write_pattern(s: &mut impl Write, offset: &mut u64, n: usize) {
    s.write_all(&pattern(*offset, n, LOCAL_SALT)).unwrap();
    *offset += n as u64;
}

/// Waits (no blind sleep) until `n` bytes are readable.
fn wait_readable(s: &TcpStream, n: usize) {
    let mut buf = vec![0u8; n];
    loop {
        if s.peek(&mut buf).unwrap() >= n {
            return;
        }
        let mut pfd = [nix::poll::PollFd::new(
            s.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        nix::poll::poll(&mut pfd, nix::poll::PollTimeout::from(100u8)).unwrap();
    }
}

/// Writes until the socket is full; returns how much was written.
fn fill(s: &mut TcpStream, offset: &mut u64) -> usize {
    s.set_nonblocking(true).unwrap();
    let mut total = 0;
    loop {
        let chunk = pattern(*offset, 16 * 1024, LOCAL_SALT);
        match s.write(&chunk) {
            Ok(n) => {
                *offset += n as u64;
                total += n;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => panic!("fill: {e}"),
        }
    }
    s.set_nonblocking(false).unwrap();
    total
}

fn wait_state(fd: impl AsFd, want: u8) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = kernel_tcp_state(fd.as_fd()).unwrap();
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "state stays {} instead of {}",
            state_name(got),
            state_name(want)
        );
        std::thread::yield_now();
    }
}

/// Captures a connection, closes the original in repair mode (so it sends
/// nothing), restores it.
fn migrate(s: TcpStream, probe: bool) -> (TcpConnectionState, TcpStream) {
    let repair = Repair::enter(s.as_fd()).unwrap();
    let state = repair.capture().unwrap();
    repair.abandon().unwrap();
    drop(s);
    // Round trip through the serialised form the engine would store.
    let json = serde_json::to_string(&state).unwrap();
    let state: TcpConnectionState = serde_json::from_str(&json).unwrap();
    if std::env::var("CRYO_DEBUG").is_ok() {
        eprintln!("state {} sent {} unsent {} recv {} send_seq {} recv_seq {} window {:?} hs {:?} sock {:?}", 
            state.local, state.send_queue_sent.len(), state.send_queue_unsent.len(), state.recv_queue.len(),
            state.send_seq, state.recv_seq, state.window, state.handshake, state.socket);
    }
    let restored = restore(&state).unwrap();
    let fd: OwnedFd = if probe {
        restored.finish_probe().unwrap()
    } else {
        restored.finish_quiet().unwrap()
    };
    (state, TcpStream::from(fd))
}

fn capture_then_leave(v6: bool) {
    let (mut s, mut peer) = connection(v6);
    let (mut out, mut inp) = (0u64, 0u64);
    peer.cmd("write 1000");
    wait_readable(&s, 1000);
    write_pattern(&mut s, &mut out, 500);

    let state = capture_and_leave(&s).unwrap();
    assert_eq!(state.state, TcpState::Established);
    assert_eq!(state.local, s.local_addr().unwrap());
    assert_eq!(state.remote, peer.addr);
    assert_eq!(state.recv_queue, pattern(0, 1000, PEER_SALT));
    assert!(state.handshake.mss > 0);
    assert!(state.window.is_some());

    // Nothing was consumed, and the connection works both ways.
    read_checked(&mut s, &mut inp, 1000);
    peer.cmd("read 500");
    peer.cmd("write 777");
    read_checked(&mut s, &mut inp, 777);
    write_pattern(&mut s, &mut out, 333);
    peer.cmd("read 333");
}

#[test]
fn capture_then_leave_ipv4() {
    capture_then_leave(false);
}

#[test]
fn capture_then_leave_ipv6() {
    capture_then_leave(true);
}

/// Receive queue and not-yet-sent data (the peer's window is closed) at
/// capture time; every byte arrives once, in order, both ways.
fn restore_with_queues(v6: bool, probe: bool) {
    let (mut s, mut peer) = connection(v6);
    let (mut out, mut inp) = (0u64, 0u64);
    peer.cmd("write 30000");
    wait_readable(&s, 30000);
    let written = fill(&mut s, &mut out);
    // The peer's window is closing; wait until it has acknowledged all it
    // received, so that no ACK reaches the closed original (this test has no
    // network lock: an ACK reaching no socket would make the kernel answer
    // with a RST).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st = capture_and_leave(&s).unwrap();
        if st.send_queue_sent.is_empty() || st.window.unwrap().snd_wnd == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "peer never acknowledged");
        std::thread::yield_now();
    }

    let (state, mut s) = migrate(s, probe);
    assert_eq!(state.recv_queue.len(), 30000);
    // Depending on timing the data the peer had no room for is unsent, or
    // sent and dropped by the peer (then retransmitted after restore).
    assert!(
        state.send_queue_len() > 0,
        "expected a full send queue, sent {} unsent {}",
        state.send_queue_sent.len(),
        state.send_queue_unsent.len()
    );

    read_checked(&mut s, &mut inp, 30000);
    peer.cmd(&format!("read {written}"));
    peer.cmd("write 5000");
    read_checked(&mut s, &mut inp, 5000);
    write_pattern(&mut s, &mut out, 5000);
    peer.cmd("read 5000");
}

#[test]
fn restore_with_queues_ipv4() {
    restore_with_queues(false, false);
}

#[test]
fn restore_with_queues_ipv6_probe() {
    restore_with_queues(true, true);
}

/// Sent-but-unacknowledged data: the state claims bytes were sent and lost
/// (as when the network drops them); the restored socket retransmits them,
/// followed by the unsent part, and the peer gets each byte once.
#[test]
fn restore_sent_unacked_is_retransmitted() {
    let (s, mut peer) = connection(false);
    let repair = Repair::enter(s.as_fd()).unwrap();
    let mut state = repair.capture().unwrap();
    repair.abandon().unwrap();
    drop(s);
    assert!(state.send_queue_sent.is_empty() && state.send_queue_unsent.is_empty());
    state.send_queue_sent = pattern(0, 3000, LOCAL_SALT);
    state.send_queue_unsent = pattern(3000, 2000, LOCAL_SALT);
    let mut s = TcpStream::from(restore(&state).unwrap().finish_probe().unwrap());
    peer.cmd("read 5000");
    let mut out = 5000;
    write_pattern(&mut s, &mut out, 100);
    peer.cmd("read 100");
    let mut inp = 0;
    peer.cmd("write 10");
    read_checked(&mut s, &mut inp, 10);
}

fn set_options(s: &TcpStream, v6: bool) {
    let r = SockRef::from(s);
    r.set_reuse_address(true).unwrap();
    r.set_reuse_port(true).unwrap();
    r.set_keepalive(true).unwrap();
    r.set_tcp_keepalive(
        &TcpKeepalive::new()
            .with_time(Duration::from_secs(30))
            .with_interval(Duration::from_secs(5))
            .with_retries(3),
    )
    .unwrap();
    r.set_tcp_nodelay(true).unwrap();
    r.set_send_buffer_size(96 * 1024).unwrap();
    r.set_recv_buffer_size(160 * 1024).unwrap();
    r.set_linger(Some(Duration::from_secs(7))).unwrap();
    r.set_mark(42).unwrap();
    if v6 {
        r.set_tclass_v6(0x20).unwrap();
    } else {
        r.set_tos_v4(0x10).unwrap();
    }
    r.set_tcp_user_timeout(Some(Duration::from_millis(4321)))
        .unwrap();
    r.set_tcp_congestion(b"reno").unwrap();
}

fn options_come_back(v6: bool) {
    let (s, mut peer) = connection(v6);
    set_options(&s, v6);
    let (state, mut s) = migrate(s, false);
    assert_eq!(state.tcp.congestion, "reno");
    assert_eq!(state.socket.linger, Some(7));
    let again = capture_and_leave(&s).unwrap();
    assert_eq!(again.socket, state.socket);
    assert_eq!(again.tcp, state.tcp);
    assert_eq!(again.handshake, state.handshake);
    let r = SockRef::from(&s);
    assert_eq!(r.mark().unwrap(), 42);
    assert!(r.tcp_congestion().unwrap().starts_with(b"reno\0"));
    assert_eq!(r.linger().unwrap(), Some(Duration::from_secs(7)));
    assert!(r.tcp_nodelay().unwrap());
    assert_eq!(r.tcp_keepalive_time().unwrap(), Duration::from_secs(30));
    let mut out = 0;
    write_pattern(&mut s, &mut out, 10);
    peer.cmd("read 10");
}

#[test]
fn options_come_back_ipv4() {
    options_come_back(false);
}

#[test]
fn options_come_back_ipv6() {
    options_come_back(true);
}

#[test]
fn syn_sent_is_refused_as_temporary() {
    // A listener with backlog 0 holds one connection in its accept queue and
    // drops the SYNs of the next ones: the second client stays in SYN_SENT.
    let listener =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    listener
        .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    listener.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let first = TcpStream::connect(addr.as_socket().unwrap()).unwrap();
    let mut pfd = [nix::poll::PollFd::new(
        listener.as_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    nix::poll::poll(&mut pfd, nix::poll::PollTimeout::from(5000u16)).unwrap();
    let second = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    second.set_nonblocking(true).unwrap();
    let _ = second.connect(&addr);
    wait_state(&second, 2);
    let err = Repair::enter(second.as_fd()).unwrap_err();
    assert!(err.is_temporary(), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("SYN_SENT") && msg.contains("retry later"),
        "{msg}"
    );
    drop(first);
}

#[test]
fn close_wait_is_restored() {
    let (s, mut peer) = connection(false);
    peer.cmd("write 100");
    peer.cmd("shutdown");
    wait_state(&s, 8);
    let (state, mut s) = migrate(s, true);
    assert_eq!(state.state, TcpState::CloseWait);
    assert_eq!(state.recv_queue.len(), 100);
    let mut inp = 0;
    read_checked(&mut s, &mut inp, 100);
    let mut b = [0u8; 1];
    assert_eq!(s.read(&mut b).unwrap(), 0, "the peer's FIN came back");
    let mut out = 0;
    write_pattern(&mut s, &mut out, 4000);
    peer.cmd("read 4000");
    s.shutdown(Shutdown::Write).unwrap();
    peer.cmd("eof");
}

#[test]
fn fin_wait2_is_restored() {
    let (mut s, mut peer) = connection(false);
    let mut out = 0;
    write_pattern(&mut s, &mut out, 100);
    s.shutdown(Shutdown::Write).unwrap();
    peer.cmd("read 100");
    peer.cmd("eof");
    wait_state(&s, 5);
    let (state, mut s) = migrate(s, false);
    assert_eq!(state.state, TcpState::FinWait2);
    peer.cmd("write 2000");
    let mut inp = 0;
    read_checked(&mut s, &mut inp, 2000);
    peer.cmd("shutdown");
    let mut b = [0u8; 1];
    assert_eq!(s.read(&mut b).unwrap(), 0);
}

#[test]
fn error_names_socket_and_step() {
    let (s, _peer) = connection(false);
    let repair = Repair::enter(s.as_fd()).unwrap();
    let mut state = repair.capture().unwrap();
    drop(repair);
    // The original still holds the address: bind fails, and says so.
    state.socket.reuse_addr = false;
    let err = restore(&state).unwrap_err().to_string();
    let want = format!("restore {} -> {}: ", state.local, state.remote);
    assert!(err.starts_with(&want), "{err}");
}

/// A copy of the fd elsewhere (here a dup; in a test run, a child another thread forked
/// and has not exec'd yet) keeps a closed socket alive and its address pair taken;
/// `abandon` frees the pair anyway, silently, and the restore gets it.
#[test]
fn abandon_frees_the_address_pair_while_a_copy_of_the_fd_lives() {
    let (s, mut peer) = connection(false);
    peer.cmd("write 100");
    wait_readable(&s, 100);
    let copy = s.try_clone().unwrap();
    let repair = Repair::enter(s.as_fd()).unwrap();
    let state = repair.capture().unwrap();
    repair.hold();
    drop(s);
    let err = restore(&state).unwrap_err();
    assert_eq!(err.errno(), Some(nix::errno::Errno::EADDRNOTAVAIL), "{err}");

    Repair::enter(copy.as_fd()).unwrap().abandon().unwrap();
    let mut s = TcpStream::from(restore(&state).unwrap().finish_probe().unwrap());
    drop(copy);
    let mut inp = 0;
    read_checked(&mut s, &mut inp, 100);
    let mut out = 0;
    write_pattern(&mut s, &mut out, 3000);
    peer.cmd("read 3000");
}

/// A connection closed at both ends, both ends here, in a network namespace of this thread's
/// own with timestamps off: a repair connect then cannot reuse the TIME_WAIT entry the end
/// that closed first left (EADDRNOTAVAIL), so the restore destroys that entry. Both ends come
/// back in CLOSE, their peers kept, reading the unread bytes then end-of-file, writes EPIPE.
#[test]
fn closed_at_both_ends_is_restored_beside_its_time_wait() {
    std::thread::spawn(|| {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        // A child forked from this thread is in its namespace.
        let up = std::process::Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status()
            .unwrap();
        assert!(up.success());
        std::fs::write("/proc/sys/net/ipv4/tcp_timestamps", "0").unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut first = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (last, _) = listener.accept().unwrap();
        let mut out = 0;
        write_pattern(&mut first, &mut out, 100);
        first.shutdown(Shutdown::Write).unwrap();
        wait_state(&last, 8);
        last.shutdown(Shutdown::Write).unwrap();
        let mut b = [0u8; 1];
        assert_eq!(first.read(&mut b).unwrap(), 0);
        wait_state(&first, 7);
        wait_state(&last, 7);
        let mut states = Vec::new();
        for s in [&first, &last] {
            let h = closed_history(s).unwrap();
            assert!(matches!(h.past, PastConnection::Closed { .. }), "{h:?}");
            let name = SocketName::new(s.local_addr().ok(), h.peer);
            let repair = Repair::enter_closed(s.as_fd(), name).unwrap();
            let state = repair.capture().unwrap();
            repair.hold();
            assert_eq!(state.state, TcpState::Close);
            states.push(state);
        }
        assert_eq!(states[1].recv_queue.len(), 100);
        drop((first, last));
        // `ss` forked from this thread lists this namespace's entries.
        let time_waits = || {
            let out = std::process::Command::new("ss")
                .args(["-Htan", "state", "time-wait"])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).lines().count()
        };
        assert_eq!(time_waits(), 1, "the pair of the end that closed first");
        for state in &states {
            let fd = restore(state).unwrap().finish_quiet().unwrap();
            assert_eq!(kernel_tcp_state(&fd).unwrap(), 7);
            let h = closed_history(&fd).unwrap();
            assert_eq!(h.peer, Some(state.remote));
            assert!(!h.pending_error);
            let mut s = TcpStream::from(fd);
            let mut buf = vec![0u8; state.recv_queue.len()];
            s.read_exact(&mut buf).unwrap();
            check_pattern(&buf, 0, LOCAL_SALT).unwrap();
            assert_eq!(s.read(&mut b).unwrap(), 0);
            assert_eq!(s.write(b"x").unwrap_err().raw_os_error(), Some(libc::EPIPE));
        }
        assert_eq!(time_waits(), 0, "destroyed to make room");
    })
    .join()
    .unwrap();
}
