//! The network lock against the real kernel. Every test runs on a thread of its own inside a
//! fresh network namespace, so rules never touch the host and tests run in parallel.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use cryo_netns::{installed_locks, run_in_new, ConnTuple, NetworkLock, BYPASS_MARK};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{
    recv, setsockopt, socket, sockopt, AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType,
};

/// How long "nothing arrives while locked" is watched.
const SILENCE: Duration = Duration::from_millis(400);
/// Upper bound for anything that must happen (retransmission after release, a reset).
const BOUND: Duration = Duration::from_secs(15);

fn in_netns(f: impl FnOnce() + Send) {
    run_in_new(f).expect("new network namespace");
}

/// Polls `fd` for `events` up to `within`; returns the events seen (empty on timeout).
fn wait(fd: &impl AsFd, events: PollFlags, within: Duration) -> PollFlags {
    let mut fds = [PollFd::new(fd.as_fd(), events)];
    let n = poll(&mut fds, PollTimeout::try_from(within).unwrap()).unwrap();
    if n == 0 {
        PollFlags::empty()
    } else {
        fds[0].revents().unwrap()
    }
}

fn readable(fd: &impl AsFd, within: Duration) -> bool {
    !wait(fd, PollFlags::POLLIN, within).is_empty()
}

/// A connected (client, server-side) pair on `listener`.
fn connect(listener: &TcpListener) -> (TcpStream, TcpStream) {
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    (client, server)
}

fn tuple(s: &TcpStream) -> ConnTuple {
    ConnTuple::new(s.local_addr().unwrap(), s.peer_addr().unwrap())
}

fn read_exact_bounded(s: &mut TcpStream, want: &[u8]) {
    assert!(readable(s, BOUND), "nothing arrived within {BOUND:?}");
    let mut got = vec![0; want.len()];
    s.read_exact(&mut got)
        .expect("read after release (was the connection reset?)");
    assert_eq!(got, want);
}

fn unique_id(tag: &str) -> String {
    format!("test-{tag}-{}", std::process::id())
}

/// Lock one of two connections to the same server port: its data stops both ways, the other
/// flows; after release the held data arrives by retransmission and nothing was reset.
fn lock_one_of_two(listen: &str) {
    let listener = TcpListener::bind(listen).unwrap();
    let (mut c1, mut s1) = connect(&listener);
    let (mut c2, mut s2) = connect(&listener);
    let id = unique_id("one-of-two");

    let mut lock = NetworkLock::install(&id, &[tuple(&s1)]).unwrap();
    assert_eq!(lock.table_name(), format!("cryo-{id}"));
    assert_eq!(installed_locks().unwrap(), vec![id.clone()]);

    c1.write_all(b"to-locked").unwrap();
    s1.write_all(b"from-locked").unwrap();
    c2.write_all(b"to-free").unwrap();
    s2.write_all(b"from-free").unwrap();

    // the other connection, on the same server port, is untouched
    read_exact_bounded(&mut s2, b"to-free");
    read_exact_bounded(&mut c2, b"from-free");
    // the locked one is silent both ways
    assert!(
        !readable(&s1, SILENCE),
        "data of a locked connection arrived"
    );
    assert!(
        !readable(&c1, Duration::ZERO),
        "data of a locked connection arrived"
    );

    assert!(lock.release().unwrap(), "first release removes the table");
    assert!(!lock.release().unwrap(), "second release is a no-op");
    assert!(!NetworkLock::release_by_id(&id).unwrap());
    assert!(installed_locks().unwrap().is_empty());

    read_exact_bounded(&mut s1, b"to-locked");
    read_exact_bounded(&mut c1, b"from-locked");
    for s in [&c1, &s1, &c2, &s2] {
        assert!(s.take_error().unwrap().is_none());
    }
    // still a working connection
    c1.write_all(b"again").unwrap();
    read_exact_bounded(&mut s1, b"again");
}

#[test]
fn locks_one_ipv4_connection_and_not_the_other() {
    in_netns(|| lock_one_of_two("127.0.0.1:0"));
}

#[test]
fn locks_one_ipv6_connection_and_not_the_other() {
    in_netns(|| lock_one_of_two("[::1]:0"));
}

/// Packets marked BYPASS_MARK (cryo's injected segments) cross the lock, on output and, over
/// lo, on input; the same connection's unmarked packets are still dropped.
fn marked_packets_get_through(listen: &str) {
    let listener = TcpListener::bind(listen).unwrap();
    let (mut c, mut s) = connect(&listener);
    setsockopt(&c, sockopt::Mark, &BYPASS_MARK).unwrap();
    let mut lock = NetworkLock::install(&unique_id("mark"), &[tuple(&s)]).unwrap();

    c.write_all(b"marked").unwrap();
    read_exact_bounded(&mut s, b"marked");
    s.write_all(b"unmarked").unwrap();
    assert!(
        !readable(&c, SILENCE),
        "an unmarked packet of a locked connection arrived"
    );

    assert!(lock.release().unwrap());
    read_exact_bounded(&mut c, b"unmarked");
}

#[test]
fn marked_packets_cross_the_lock_ipv4() {
    in_netns(|| marked_packets_get_through("127.0.0.1:0"));
}

#[test]
fn marked_packets_cross_the_lock_ipv6() {
    in_netns(|| marked_packets_get_through("[::1]:0"));
}

#[test]
fn dual_stack_socket_locked_by_its_v4_mapped_tuple() {
    in_netns(|| {
        // a v6 listener accepting an IPv4 client sees ::ffff:127.0.0.1
        let listener = TcpListener::bind("[::]:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (mut s, peer) = listener.accept().unwrap();
        assert!(matches!(peer, SocketAddr::V6(_)));
        let mut lock = NetworkLock::install(&unique_id("mapped"), &[tuple(&s)]).unwrap();
        c.write_all(b"x").unwrap();
        assert!(!readable(&s, SILENCE));
        assert!(lock.release().unwrap());
        read_exact_bounded(&mut s, b"x");
    });
}

#[test]
fn release_by_id_removes_a_forgotten_lock() {
    in_netns(|| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let (mut c, mut s) = connect(&listener);
        let id = unique_id("forgotten");
        std::mem::forget(NetworkLock::install(&id, &[tuple(&c)]).unwrap());
        assert_eq!(installed_locks().unwrap(), vec![id.clone()]);
        c.write_all(b"held").unwrap();
        assert!(!readable(&s, SILENCE));

        assert!(NetworkLock::release_by_id(&id).unwrap());
        assert!(!NetworkLock::release_by_id(&id).unwrap());
        assert!(installed_locks().unwrap().is_empty());
        read_exact_bounded(&mut s, b"held");
    });
}

#[test]
fn keep_leaves_the_lock_and_open_finds_it() {
    in_netns(|| {
        let id = unique_id("keep");
        let kept = NetworkLock::install(&id, &[]).unwrap().keep();
        assert_eq!(kept, id);
        assert_eq!(installed_locks().unwrap(), vec![id.clone()]);
        assert!(NetworkLock::open("absent").unwrap().is_none());
        let mut lock = NetworkLock::open(&id)
            .unwrap()
            .expect("kept lock is installed");
        assert!(lock.release().unwrap());
        assert!(installed_locks().unwrap().is_empty());
    });
}

#[test]
fn drop_releases() {
    in_netns(|| {
        {
            let _lock = NetworkLock::install(&unique_id("drop"), &[]).unwrap();
            assert_eq!(installed_locks().unwrap().len(), 1);
        }
        assert!(installed_locks().unwrap().is_empty());
    });
}

#[test]
fn add_extends_an_installed_lock() {
    in_netns(|| {
        let listener = TcpListener::bind("[::1]:0").unwrap();
        let (mut c, mut s) = connect(&listener);
        let mut lock = NetworkLock::install(&unique_id("add"), &[]).unwrap();
        c.write_all(b"a").unwrap();
        read_exact_bounded(&mut s, b"a");

        lock.add(&[tuple(&s)]).unwrap();
        lock.add(&[tuple(&c)]).unwrap(); // the same connection seen from the client: no error
        c.write_all(b"b").unwrap();
        assert!(!readable(&s, SILENCE));
        drop(lock);
        read_exact_bounded(&mut s, b"b");
    });
}

#[test]
fn second_install_of_an_id_fails_and_names_the_step() {
    in_netns(|| {
        let id = unique_id("twice");
        let _lock = NetworkLock::install(&id, &[]).unwrap();
        let e = NetworkLock::install(&id, &[]).unwrap_err();
        assert_eq!(e.errno(), Some(Errno::EEXIST));
        assert!(
            e.to_string()
                .starts_with(&format!("lock cryo-{id}: new table: ")),
            "{e}"
        );
        // the failed transaction left the first lock as it was
        assert_eq!(installed_locks().unwrap(), vec![id]);
    });
}

#[test]
fn bad_ids_are_refused_before_the_kernel() {
    for id in ["", "a b", "../x"] {
        assert!(matches!(
            NetworkLock::install(id, &[]),
            Err(cryo_netns::LockError::InvalidId { .. })
        ));
    }
}

#[test]
fn ten_thousand_tuples_in_one_transaction() {
    in_netns(|| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let (mut c, mut s) = connect(&listener);
        let mut conns: Vec<ConnTuple> = (0..5_000u32)
            .map(|i| {
                let a =
                    SocketAddr::from(([10, 1, (i >> 8) as u8, i as u8], 1000 + (i % 50) as u16));
                ConnTuple::new(a, "10.9.9.9:443".parse().unwrap())
            })
            .collect();
        conns.extend((0..5_000u32).map(|i| {
            let a: SocketAddr = format!("[fd00::{i:x}]:{}", 2000 + i % 7).parse().unwrap();
            ConnTuple::new(a, "[fd00::1:1]:443".parse().unwrap())
        }));
        conns.push(tuple(&s)); // the real one, last
        let mut lock = NetworkLock::install(&unique_id("10k"), &conns).unwrap();
        c.write_all(b"z").unwrap();
        assert!(!readable(&s, SILENCE));
        assert!(lock.release().unwrap());
        read_exact_bounded(&mut s, b"z");
    });
}

/// An AF_PACKET socket capturing every frame in the namespace (only lo exists).
fn capture() -> OwnedFd {
    let fd = socket(
        AddressFamily::Packet,
        SockType::Raw,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        SockProtocol::EthAll,
    )
    .unwrap();
    setsockopt(&fd, sockopt::RcvBuf, &(4 << 20)).unwrap();
    fd
}

/// RST segments captured so far that involve `port`, draining the capture socket.
fn resets(cap: &OwnedFd, ports: &[u16]) -> Vec<usize> {
    use std::os::fd::AsRawFd;
    let mut counts = vec![0; ports.len()];
    let mut buf = [0u8; 65536];
    loop {
        let n = match recv(cap.as_raw_fd(), &mut buf, MsgFlags::empty()) {
            Ok(n) => n,
            Err(Errno::EAGAIN) => return counts,
            Err(e) => panic!("capture: {e}"),
        };
        let frame = &buf[..n];
        // lo frames carry a 14-byte ethernet header
        if frame.len() < 14 + 20 {
            continue;
        }
        let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
        let ip = &frame[14..];
        let tcp = match ethertype {
            0x0800 if ip[9] == 6 => &ip[(ip[0] & 0xf) as usize * 4..],
            0x86dd if ip.len() >= 40 && ip[6] == 6 => &ip[40..],
            _ => continue,
        };
        if tcp.len() < 14 || tcp[13] & 0x04 == 0 {
            continue;
        }
        let (sport, dport) = (
            u16::from_be_bytes([tcp[0], tcp[1]]),
            u16::from_be_bytes([tcp[2], tcp[3]]),
        );
        for (i, p) in ports.iter().enumerate() {
            if sport == *p || dport == *p {
                counts[i] += 1;
            }
        }
    }
}

/// Abort a socket: close with SO_LINGER 0 sends a RST.
fn abort(s: TcpStream) {
    setsockopt(
        &s,
        sockopt::Linger,
        &libc::linger {
            l_onoff: 1,
            l_linger: 0,
        },
    )
    .unwrap();
    drop(s);
}

#[test]
fn no_reset_leaves_a_locked_connection() {
    in_netns(|| {
        let cap = capture();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let (locked_c, locked_s) = connect(&listener);
        let (free_c, free_s) = connect(&listener);
        let ports = [
            locked_c.local_addr().unwrap().port(),
            free_c.local_addr().unwrap().port(),
        ];
        let _lock = NetworkLock::install(&unique_id("rst"), &[tuple(&locked_s)]).unwrap();

        // the dumped side dies: its kernel answers with a RST, which the lock must swallow
        abort(locked_s);
        abort(free_s);

        // control: the unlocked client learns of the reset, and the capture saw it
        let ev = wait(&free_c, PollFlags::POLLIN, BOUND);
        assert!(!ev.is_empty(), "unlocked connection was not reset");
        let mut b = [0u8; 1];
        assert_eq!(
            (&free_c).read(&mut b).unwrap_err().kind(),
            ErrorKind::ConnectionReset
        );

        // the locked client hears nothing
        assert!(
            wait(&locked_c, PollFlags::POLLIN, SILENCE).is_empty(),
            "locked client saw an event"
        );
        assert!(locked_c.take_error().unwrap().is_none());
        let counts = resets(&cap, &ports);
        assert_eq!(
            counts[0], 0,
            "a RST of the locked connection reached the wire"
        );
        assert!(counts[1] > 0, "capture missed the control RST");
    });
}

#[test]
fn handle_acts_on_the_namespace_it_was_installed_in() {
    let id = unique_id("moved");
    // installed in a test namespace, released from this (the host's) thread after the
    // namespace's own thread is gone: the handle's socket still points at the test namespace
    let mut lock = run_in_new(|| NetworkLock::install(&id, &[]).unwrap()).unwrap();
    assert!(
        !installed_locks().unwrap().contains(&id),
        "lock leaked into the caller's netns"
    );
    assert!(
        lock.release().unwrap(),
        "release did not find the table in its namespace"
    );
    assert!(!lock.release().unwrap());
}

#[test]
fn refused_step_is_named_with_its_errno() {
    in_netns(|| {
        let id = unique_id("gone");
        let mut lock = NetworkLock::install(&id, &[]).unwrap();
        assert!(NetworkLock::release_by_id(&id).unwrap());
        let conn = ConnTuple::new(
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
        );
        let e = lock.add(&[conn]).unwrap_err();
        eprintln!("{e}");
        assert_eq!(e.errno(), Some(Errno::ENOENT));
        let prefix =
            format!("lock cryo-{id}: new set elements v4 (1/1, 1 keys): No such file or directory");
        assert!(e.to_string().starts_with(&prefix), "{e}");
        // the table is gone: release says so, and dropping the handle does not panic
        assert!(!lock.release().unwrap());
    });
}
