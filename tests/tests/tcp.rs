//! TCP sockets across dump and restore: the workload (`tcp` mode) is the server; the test
//! itself is the client, a separate process that is never dumped. Every listener binds an
//! ephemeral port, so the tests run in parallel.
//!
//! Needs the engine: `cryo` must be built (`cargo build -p cryo`).

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{FromRawFd, IntoRawFd};
use std::path::PathBuf;
use std::thread;

use cryo_tests::protocol::{len_and_checksum, pattern};
use cryo_tests::tcp_peer::{lock_of, read_exactly, server_addr, IO_TIMEOUT};
use cryo_tests::{cryo_bin, has_word, Workload};

/// A client socket with a small receive buffer (so the server's send queue backs up),
/// connected to `addr`.
fn connect_small(addr: SocketAddr) -> TcpStream {
    use nix::sys::socket::{
        connect, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrStorage,
    };
    let family = if addr.is_ipv6() {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    let fd = socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None).expect("socket");
    setsockopt(&fd, sockopt::RcvBuf, &16384).expect("SO_RCVBUF");
    connect(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrStorage::from(addr),
    )
    .expect("connect");
    // SAFETY: a connected TCP socket we own, handed over whole.
    let s = unsafe { TcpStream::from_raw_fd(fd.into_raw_fd()) };
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s
}

/// The tcp workload listening on 127.0.0.1, with one client (a small receive buffer,
/// [`connect_small`]) whose connection it accepted (its connection 0).
fn server_with_a_client() -> (Workload, TcpStream) {
    let w = Workload::spawn("tcp", &["127.0.0.1:0"]);
    let client = connect_small(server_addr(&w, "127.0.0.1"));
    assert_eq!(w.cmd("accept"), "0");
    (w, client)
}

/// Dumps `w` with its connections (`--tcp-established`), killing it: the image.
fn dumped_and_killed(w: &mut Workload) -> PathBuf {
    let img = w.path("img");
    w.dump(&img, &["--tcp-established"]).assert_success();
    w.wait_original();
    img
}

fn installed(id: &str) -> bool {
    cryo_netns::installed_locks()
        .expect("list locks")
        .iter()
        .any(|l| l == id)
}

/// The whole story over one address family: data both ways before the dump, a full send
/// queue (with unsent data) and unread received data at dump time, the client writing
/// while the server is frozen and dead, then every byte exactly once and in order.
fn live_connection_survives(listen: &str, ip: &str) {
    cryo_bin();
    let mut w = Workload::spawn("tcp", &[listen]);
    let mut client = connect_small(server_addr(&w, ip));
    assert_eq!(w.cmd("accept"), "0");

    let a = pattern(50_000, 1);
    client.write_all(&a).unwrap();
    assert_eq!(w.cmd("echo 0 50000"), len_and_checksum(&a));
    assert_eq!(read_exactly(&mut client, a.len()), a);

    // The client does not read: the server's send queue fills, part of it unsent.
    let blasted: usize = w.cmd("blast 0 3000000 7").parse().unwrap();
    assert!(blasted > 100_000, "only {blasted} bytes queued");
    // Received, not read by the server.
    let b = pattern(30_000, 2);
    client.write_all(&b).unwrap();

    // The client keeps sending through the dump and the restore.
    let d = pattern(200_000, 3);
    let mut writer = client.try_clone().unwrap();
    let d2 = d.clone();
    let sending = thread::spawn(move || writer.write_all(&d2));

    let img = w.path("img");
    let out = w.dump(&img, &["--tcp-established"]);
    out.assert_success();
    w.wait_original();
    let lock = lock_of(&w, &img).expect("the dump left a network lock");
    assert!(installed(&lock), "lock {lock} not installed after the dump");

    w.restore_background(&img);

    let got = read_exactly(&mut client, blasted);
    assert!(
        got == pattern(3_000_000, 7)[..blasted],
        "the send queue came back damaged"
    );
    sending.join().unwrap().expect("the client's writes failed");
    let mut bd = b.clone();
    bd.extend_from_slice(&d);
    assert_eq!(
        w.cmd(&format!("echo 0 {}", bd.len())),
        len_and_checksum(&bd)
    );
    assert!(read_exactly(&mut client, bd.len()) == bd, "echo damaged");
    // Data flowed, so the lock is gone (cryo removes it once the process runs).
    assert!(
        !installed(&lock),
        "lock {lock} still installed after restore"
    );

    // Still a live connection both ways, and the listener still accepts.
    let e = pattern(10_000, 4);
    client.write_all(&e).unwrap();
    assert_eq!(w.cmd("echo 0 10000"), len_and_checksum(&e));
    assert_eq!(read_exactly(&mut client, e.len()), e);
    let _second = TcpStream::connect(server_addr(&w, ip)).unwrap();
    assert_eq!(w.cmd("accept"), "1");
    w.kill_restored();
}

#[test]
fn a_live_ipv4_connection_keeps_every_byte() {
    live_connection_survives("127.0.0.1:0", "127.0.0.1");
}

#[test]
fn a_live_ipv6_connection_keeps_every_byte() {
    live_connection_survives("[::1]:0", "::1");
}

#[test]
fn an_established_connection_is_refused_without_the_flag() {
    cryo_bin();
    let mut w = Workload::spawn("tcp", &["127.0.0.1:0"]);
    let server = server_addr(&w, "127.0.0.1");
    let mut client = connect_small(server);
    assert_eq!(w.cmd("accept"), "0");
    let img = w.path("img");
    let out = w.dump(&img, &[]);
    out.assert_refused();
    let local = client.local_addr().unwrap();
    out.assert_stderr_mentions(&format!("pid {}", w.pid()));
    out.assert_stderr_mentions(&format!("{server} -> {local}"));
    out.assert_stderr_mentions("--tcp-established");
    assert!(has_word(&out.stderr, "fd"), "{out}");
    // Untouched: the connection works.
    client.write_all(b"hello").unwrap();
    assert_eq!(w.cmd("echo 0 5"), len_and_checksum(b"hello"));
    assert_eq!(read_exactly(&mut client, 5), b"hello");
    w.kill_original();
}

#[test]
fn leave_running_keeps_the_connection_and_removes_the_lock() {
    cryo_bin();
    let (mut w, mut client) = server_with_a_client();
    let b = pattern(20_000, 9);
    client.write_all(&b).unwrap();
    let img = w.path("img");
    w.dump(&img, &["--tcp-established", "--leave-running"])
        .assert_success();
    assert!(w.original_alive());
    assert_eq!(lock_of(&w, &img), None);
    assert!(!cryo_netns::installed_locks()
        .unwrap()
        .iter()
        .any(|l| l == &cryo_core::lock_id_for(&img)));
    assert_eq!(w.cmd("echo 0 20000"), len_and_checksum(&b));
    assert_eq!(read_exactly(&mut client, b.len()), b);
    w.kill_original();
}

#[test]
fn tcp_close_restores_connections_reset() {
    cryo_bin();
    let (mut w, mut client) = server_with_a_client();
    let img = dumped_and_killed(&mut w);
    w.restore_detached_with(&img, &["--tcp-close"]);
    let reply = w.cmd("echo 0 1");
    assert!(
        reply.contains("reset") || reply.contains("eof"),
        "the server should see the connection gone: {reply}"
    );
    // The client learns it too, at once (the lock is gone: the RST or FIN gets through, or
    // its next segment is answered with a RST).
    let _ = client.write_all(b"x");
    let mut buf = [0u8; 1];
    match client.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("client should see the connection closed: {other:?}"),
    }
    w.kill_restored();
}

#[test]
fn a_listener_with_a_pending_connection_is_refused_as_temporary() {
    cryo_bin();
    let mut w = Workload::spawn("tcp", &["127.0.0.1:0"]);
    let addr = server_addr(&w, "127.0.0.1");
    let _pending = TcpStream::connect(addr).unwrap();
    let img = w.path("img");
    let out = w.dump(&img, &["--tcp-established"]);
    out.assert_refused();
    out.assert_stderr_mentions("retry");
    // Accepted, it dumps, and the listener comes back listening.
    assert_eq!(w.cmd("accept"), "0");
    w.dump(&img, &["--tcp-established"]).assert_success();
    w.wait_original();
    w.restore_background(&img);
    let mut next = TcpStream::connect(addr).unwrap();
    assert_eq!(w.cmd("accept"), "1");
    next.write_all(b"abc").unwrap();
    assert_eq!(w.cmd("echo 1 3"), len_and_checksum(b"abc"));
    w.kill_restored();
}

/// `--skip-in-flight`: a listener is dumped without the connection waiting in its accept
/// queue. The accepted connection keeps carrying bytes both ways and the restored listener
/// accepts new clients; the skipped client, whose connect had succeeded (and which had sent
/// data), is reset when the dump kills the server: its read fails with ECONNRESET, its
/// writes fail after, and it never reaches the restored listener.
#[test]
fn skip_in_flight_dumps_a_listener_without_its_waiting_connection_whose_client_is_reset() {
    cryo_bin();
    let mut w = Workload::spawn("tcp", &["127.0.0.1:0"]);
    let addr = server_addr(&w, "127.0.0.1");
    let mut accepted = connect_small(addr);
    assert_eq!(w.cmd("accept"), "0");
    let mut skipped = TcpStream::connect(addr).unwrap();
    skipped.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    skipped.write_all(b"before accept").unwrap();
    let img = w.path("img");
    w.dump(&img, &["--tcp-established", "--skip-in-flight"])
        .assert_success();
    w.wait_original();
    let shown = w.show(&img, false);
    shown.assert_success();
    assert!(
        shown.stdout.contains(&format!(
            "tcp listening on {addr} (1 waiting connection(s) skipped"
        )),
        "{shown}"
    );
    let mut buf = [0u8; 16];
    match skipped.read(&mut buf) {
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("the skipped client should be reset: {other:?}"),
    }
    w.restore_background(&img);

    let a = pattern(30_000, 5);
    accepted.write_all(&a).unwrap();
    assert_eq!(w.cmd("echo 0 30000"), len_and_checksum(&a));
    assert_eq!(read_exactly(&mut accepted, a.len()), a);

    let mut next = TcpStream::connect(addr).unwrap();
    next.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    assert_eq!(w.cmd("accept"), "1");
    assert_eq!(w.cmd("peer 1"), next.local_addr().unwrap().to_string());
    next.write_all(b"abc").unwrap();
    assert_eq!(w.cmd("echo 1 3"), len_and_checksum(b"abc"));
    assert_eq!(read_exactly(&mut next, 3), b"abc");

    let write = skipped.write_all(b"after");
    assert!(write.is_err(), "a write of the reset client: {write:?}");
    w.kill_restored();
}

/// `--skip-in-flight --leave-running`: the waiting connection stays in the original's queue,
/// which accepts it and gets its data; `cryo kill` meanwhile refuses the listener (the image
/// does not have the connection) and leaves everything running.
#[test]
fn skip_in_flight_with_leave_running_leaves_the_waiting_connection_to_the_original() {
    cryo_bin();
    let mut w = Workload::spawn("tcp", &["127.0.0.1:0"]);
    let addr = server_addr(&w, "127.0.0.1");
    let mut waiting = TcpStream::connect(addr).unwrap();
    waiting.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    waiting.write_all(b"hello").unwrap();
    let img = w.path("img");
    w.dump(
        &img,
        &["--tcp-established", "--skip-in-flight", "--leave-running"],
    )
    .assert_success();
    let out = w.cryo(&["kill", "-D", img.to_str().unwrap()]);
    out.assert_refused()
        .assert_stderr_mentions("not accepted yet")
        .assert_stderr_has_word(&w.pid().to_string());
    assert!(w.original_alive());
    assert_eq!(w.cmd("accept"), "0");
    assert_eq!(w.cmd("echo 0 5"), len_and_checksum(b"hello"));
    assert_eq!(read_exactly(&mut waiting, 5), b"hello");
    w.kill_original();
}

#[test]
fn unlock_removes_a_lock_left_by_a_dump() {
    cryo_bin();
    let (mut w, _client) = server_with_a_client();
    let img = dumped_and_killed(&mut w);
    let lock = lock_of(&w, &img).expect("a lock");
    assert!(installed(&lock));
    let out = w.cryo(&["unlock", "-D", img.to_str().unwrap()]);
    out.assert_success();
    assert!(!installed(&lock), "{out}");
}

/// 1,200 connections: enough for the socket pass, the captures and the fdinfo reads of the
/// dump to spread over the cores.
#[test]
fn twelve_hundred_connections_keep_every_byte() {
    const N: usize = 1200;
    const BATCH: usize = 100;
    cryo_bin();
    // This process and the workload (which inherits the limit) each hold N sockets.
    let (soft, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .expect("RLIMIT_NOFILE");
    let want = soft.max((4 * N as u64).min(hard));
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, want, hard)
        .expect("raise RLIMIT_NOFILE");
    let mut w = Workload::spawn("tcp", &["127.0.0.1:0"]);
    let addr = server_addr(&w, "127.0.0.1");
    let mut clients = Vec::with_capacity(N);
    while clients.len() < N {
        for _ in 0..BATCH {
            let s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            clients.push(s);
        }
        assert_eq!(
            w.cmd(&format!("accept-n {BATCH}")),
            clients.len().to_string()
        );
    }
    let data = |i: usize, part: u64| pattern(100, (i as u64) << 8 | part);
    for (i, c) in clients.iter_mut().enumerate() {
        c.write_all(&data(i, 1)).unwrap();
    }
    let img = w.path("img");
    let started = std::time::Instant::now();
    w.dump(&img, &["--tcp-established"]).assert_success();
    let dumped = started.elapsed();
    w.wait_original();
    // Sent while the server is dead.
    for (i, c) in clients.iter_mut().enumerate() {
        c.write_all(&data(i, 2)).unwrap();
    }
    let started = std::time::Instant::now();
    w.restore_background(&img);
    let restored = started.elapsed();
    eprintln!(
        "{N} connections: dump {:.1} ms, restore {:.1} ms ({:.1} us per connection in all)",
        dumped.as_secs_f64() * 1e3,
        restored.as_secs_f64() * 1e3,
        (dumped + restored).as_secs_f64() * 1e6 / N as f64
    );
    assert_eq!(w.cmd("echo-all 200"), N.to_string());
    for (i, c) in clients.iter_mut().enumerate() {
        let mut want = data(i, 1);
        want.extend_from_slice(&data(i, 2));
        assert!(read_exactly(c, 200) == want, "connection {i} damaged");
    }
    w.kill_restored();
}

#[test]
fn a_udp_socket_comes_back_bound() {
    cryo_bin();
    let mut w = Workload::spawn("udp", &["127.0.0.1:0"]);
    let port: u16 = w.cmd("port").parse().unwrap();
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let me = client.local_addr().unwrap();
    client.send_to(b"before", ("127.0.0.1", port)).unwrap();
    assert_eq!(
        w.cmd("recv"),
        format!("{} {me}", len_and_checksum(b"before"))
    );
    w.dump_and_restore();
    assert_eq!(w.cmd("port"), port.to_string());
    client.send_to(b"after", ("127.0.0.1", port)).unwrap();
    assert_eq!(
        w.cmd("recv"),
        format!("{} {me}", len_and_checksum(b"after"))
    );
    w.kill_restored();
}

#[test]
fn kill_after_leave_running_keeps_the_client_connected_for_the_restore() {
    cryo_bin();
    let (mut w, mut client) = server_with_a_client();
    let a = pattern(20_000, 5);
    client.write_all(&a).unwrap();
    assert_eq!(w.cmd("echo 0 20000"), len_and_checksum(&a));
    assert_eq!(read_exactly(&mut client, a.len()), a);
    let img = w.path("img");
    w.dump(&img, &["--tcp-established", "--leave-running"])
        .assert_success();
    assert!(w.original_alive());
    let img_s = img.to_str().unwrap();
    w.cryo(&["kill", "-D", img_s]).assert_success();
    let status = w.wait_original();
    assert!(
        std::os::unix::process::ExitStatusExt::signal(&status).is_some(),
        "{status}"
    );
    // Nothing reached the client: no FIN (a read would return 0), no RST.
    client.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    match client.read(&mut byte) {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("the client saw the server go: {other:?}"),
    }
    client.set_nonblocking(false).unwrap();
    let lock = lock_of(&w, &img).expect("cryo kill recorded the network lock");
    assert!(installed(&lock));
    // The client talks on while no server runs; the restored one gets every byte.
    let b = pattern(30_000, 6);
    client.write_all(&b).unwrap();
    w.restore_background(&img);
    assert_eq!(w.cmd("echo 0 30000"), len_and_checksum(&b));
    assert_eq!(read_exactly(&mut client, b.len()), b);
    assert!(!installed(&lock), "the restore removed the lock");
    w.kill_restored();
}

#[test]
fn kill_refuses_a_connection_that_moved_on_since_the_dump() {
    cryo_bin();
    let (mut w, mut client) = server_with_a_client();
    let img = w.path("img");
    w.dump(&img, &["--tcp-established", "--leave-running"])
        .assert_success();
    // Bytes both ways after the dump: the image no longer matches the connection.
    client.write_all(b"later").unwrap();
    assert_eq!(w.cmd("echo 0 5"), len_and_checksum(b"later"));
    assert_eq!(read_exactly(&mut client, 5), b"later");
    let out = w.cryo(&["kill", "-D", img.to_str().unwrap()]);
    out.assert_refused()
        .assert_stderr_mentions("moved on since the dump")
        .assert_stderr_has_word(&w.pid().to_string());
    // Left as it was: running, connected, no lock.
    assert!(w.original_alive());
    assert_eq!(lock_of(&w, &img), None);
    assert!(!installed(&cryo_core::lock_id_for(&img)));
    client.write_all(b"still").unwrap();
    assert_eq!(w.cmd("echo 0 5"), len_and_checksum(b"still"));
    assert_eq!(read_exactly(&mut client, 5), b"still");
    w.kill_original();
}

/// The send MSS (TCP_MAXSEG) of both ends of a connection inside the dump comes back as it
/// was: restored with the default 524 bytes instead of the loopback's, a connection with
/// full buffers filled its peer's receive memory long before its window and stalled (zdtm
/// socket-tcpbuf-local). The connecting end's is bounded by half the SYN-ACK's window, below
/// what the path allows, until the peer's first segment after the handshake brings a larger
/// window (the kernel computes it again then): a twin connection that had one shows the
/// value. A restore with its probe (the default) makes the peer answer at once, so the
/// connecting end comes back with the twin's value; without (`--peer-timeout 0`, the
/// *_at_both_ends tests) with its own.
#[test]
fn a_connection_keeps_its_segment_size() {
    cryo_bin();
    let mut w = Workload::spawn("socks", &[]);
    let l = w.cmd("socket inet stream 6");
    assert_eq!(w.cmd(&format!("bind-inet {l} 127.0.0.1:0")), "ok");
    assert_eq!(w.cmd(&format!("listen {l}")), "ok");
    let to = w.cmd(&format!("name {l}"));
    let pair = || {
        let c = w.cmd("socket inet stream 6");
        assert_eq!(w.cmd(&format!("connect-inet {c} {to}")), "ok");
        let a = w.cmd(&format!("accept {l}"));
        (c, a)
    };
    let (c, a) = pair();
    let (twin_c, twin_a) = pair();
    assert_eq!(w.cmd(&format!("send {twin_a} x")), "ok");
    assert_eq!(w.cmd(&format!("recv-wait {twin_c}")), "x");
    let maxseg = format!("{} {}", libc::IPPROTO_TCP, libc::TCP_MAXSEG);
    let mss =
        |w: &Workload| [&c, &a, &twin_c, &twin_a].map(|s| w.cmd(&format!("getopt {s} {maxseg}")));
    let before = mss(&w);
    let img = dumped_and_killed(&mut w);
    w.restore_background(&img);
    let after = mss(&w);
    eprintln!("TCP_MAXSEG (connecting, accepted, twin's) {before:?} -> {after:?}");
    assert_eq!(after[1..], before[1..], "TCP_MAXSEG of the other ends");
    assert_eq!(
        after[0], before[2],
        "TCP_MAXSEG of the connecting end, once its peer answered the probe"
    );
    w.kill_restored();
}

/// The two ends of a fresh connection the workload made to its own listener (`listen`,
/// reached on `ip`), with their receive buffers set: TCP_MAXSEG of each, read by the restored
/// process before it sends anything, is what it was (the connecting end's bounded by the
/// SYN-ACK's window, below what the path allows), and a large write each way then arrives
/// whole, in segments of about that size (the sender's tcpi_data_segs_out), not of the few
/// hundred bytes a connect in repair mode starts with (IPv6 before: 880 segments of 1208
/// bytes for 1 MiB; v4-mapped: 2006 of 524).
fn both_ends_keep_their_segment_size(listen: &str, ip: &str) {
    cryo_bin();
    let mut w = Workload::spawn("tcp", &[listen]);
    let to = server_addr(&w, ip);
    assert_eq!(w.cmd(&format!("connect {to}")), "0");
    assert_eq!(w.cmd("connected 0"), "ok");
    assert_eq!(w.cmd("accept"), "1");
    // Receive buffers set by the application: the windows never grow past the dumped ones,
    // which would make the kernel compute the MSS again by itself (at the first ACK
    // announcing a larger window), so the segments go out at the MSS restored.
    for i in 0..2 {
        assert_eq!(w.cmd(&format!("rcvbuf {i} 32768")), "ok");
    }
    let mss = |w: &Workload| [w.cmd("mss 0"), w.cmd("mss 1")];
    let before = mss(&w);
    let img = dumped_and_killed(&mut w);
    // No probe: the peer's answer to one would carry its current window, a larger one
    // than the connecting end had seen, and the kernel recomputes the MSS from it (as the
    // original does at the peer's next segment; a_connection_keeps_its_segment_size).
    w.restore_detached_with(&img, &["--peer-timeout", "0"]);
    let after = mss(&w);
    eprintln!("TCP_MAXSEG (connecting, accepted end) {before:?} -> {after:?}");
    assert_eq!(
        after, before,
        "TCP_MAXSEG of the connecting and the accepted end"
    );

    const N: usize = 1 << 20;
    for (from, to) in [(0, 1), (1, 0)] {
        let reply = w.cmd(&format!("pump {from} {to} {N} 7"));
        let (sum, segs) = reply.rsplit_once(' ').expect("<len> <checksum> <segments>");
        assert_eq!(sum, len_and_checksum(&pattern(N, 7)), "{from} -> {to}");
        let segs: usize = segs.parse().expect("segments");
        let mss: usize = before[from].parse().expect("TCP_MAXSEG");
        eprintln!("{N} bytes from end {from}: {segs} segments");
        assert!(
            segs <= 2 * N / mss + 4,
            "{segs} segments for {N} bytes from end {from} (TCP_MAXSEG {mss})"
        );
    }
    w.kill_restored();
}

#[test]
fn an_ipv6_connection_keeps_its_segment_size_at_both_ends() {
    both_ends_keep_their_segment_size("[::1]:0", "::1");
}

#[test]
fn a_v4_mapped_connection_keeps_its_segment_size_at_both_ends() {
    both_ends_keep_their_segment_size("[::]:0", "::ffff:127.0.0.1");
}

#[test]
fn an_ipv4_connection_keeps_its_segment_size_at_both_ends() {
    both_ends_keep_their_segment_size("127.0.0.1:0", "127.0.0.1");
}

/// A dump into the directory of an earlier dump whose network lock still waits for its
/// restore (the image removed by hand) is refused naming the lock and `cryo unlock`, the
/// target untouched; once unlocked as told, it dumps (before: `network lock: lock
/// cryo-dump-...: new table: File exists`).
#[test]
fn a_dump_where_an_earlier_dumps_lock_waits_names_it_and_the_way_out() {
    cryo_bin();
    let (mut first, _first_client) = server_with_a_client();
    let img = dumped_and_killed(&mut first);
    let id = cryo_core::lock_id_for(&img);
    assert!(installed(&id), "the lock waits for the restore");
    std::fs::remove_dir_all(&img).unwrap();

    let (second, _second_client) = server_with_a_client();
    second
        .dump(&img, &["--tcp-established", "--leave-running"])
        .assert_refused()
        .assert_stderr_mentions(&format!("network lock {id}: installed already"))
        .assert_stderr_mentions("cryo unlock -D");
    second.assert_untouched();
    second
        .cryo(&["unlock".as_ref(), "-D".as_ref(), img.as_os_str()])
        .assert_success();
    assert!(!installed(&id));
    second
        .dump(&img, &["--tcp-established", "--leave-running"])
        .assert_success();
    assert!(!installed(&id), "a --leave-running dump leaves no lock");
}
