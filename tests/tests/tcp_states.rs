//! TCP sockets in the states beside "live connection": `--tcp-close` (closed the CRIU way),
//! and connections closed at both ends before the dump (state CLOSE, both ends in the
//! process), read from inside the restored process. The workload (`tcp` mode) is the server
//! (and for closed connections its own client too), the test the client.
//!
//! Needs the engine: `cryo` must be built (`cargo build -p cryo`).

use std::io::{ErrorKind, Read, Write};

use cryo_tests::tcp_peer::connect;
use cryo_tests::{cryo_bin, Workload};

#[test]
fn tcp_close_restores_connections_closed_not_reset() {
    cryo_bin();
    let mut w = Workload::spawn("tcp", &["127.0.0.1:0"]);
    let mut client = connect(&w, "127.0.0.1");
    assert_eq!(w.cmd("accept"), "0");
    let local = w.cmd("local 0");
    let img = w.path("img");
    w.dump(&img, &["--tcp-established"]).assert_success();
    w.wait_original();
    w.restore_detached_with(&img, &["--tcp-close"]);
    // Inside the restored process: end of file, POLLHUP, writes refused; not ECONNRESET.
    let seen = w.cmd("probe 0");
    assert!(seen.starts_with("read=eof "), "read: {seen}");
    let poll = seen
        .split(' ')
        .find_map(|t| t.strip_prefix("poll="))
        .unwrap_or_default();
    assert!(poll.split('|').any(|f| f == "HUP"), "poll: {seen}");
    assert!(seen.ends_with("write=EPIPE"), "write: {seen}");
    assert_eq!(w.cmd("state 0"), "CLOSE");
    assert_eq!(w.cmd("local 0"), local, "the local address is kept");
    // The client learns of it when it next sends: a RST from a host without the connection.
    let _ = client.write_all(b"x");
    let mut buf = [0u8; 1];
    match client.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("client should see the connection gone: {other:?}"),
    }
    w.kill_restored();
}

#[test]
fn a_connection_restored_closed_is_dumped_and_restored_closed_again() {
    cryo_bin();
    let mut w = Workload::spawn("tcp", &["127.0.0.1:0"]);
    let _client = connect(&w, "127.0.0.1");
    assert_eq!(w.cmd("accept"), "0");
    let local = w.cmd("local 0");
    let img = w.path("img");
    w.dump(&img, &["--tcp-established"]).assert_success();
    w.wait_original();
    w.restore_detached_with(&img, &["--tcp-close"]);
    let closed = w.cmd("probe 0");
    assert!(closed.starts_with("read=eof "), "read: {closed}");
    // Dumped again as it is now: closed, shut both ways, its name kept (before: refused,
    // "TCP socket not connected but shut for reading (SHUT_RD) is not supported").
    let again = w.path("img-again");
    w.dump_ok(&again);
    w.restore_detached_with(&again, &[]);
    assert_eq!(w.cmd("probe 0"), closed, "after the second restore");
    assert_eq!(w.cmd("state 0"), "CLOSE");
    assert_eq!(w.cmd("local 0"), local, "the local address is kept");
    w.kill_restored();
}

#[test]
fn dump_with_tcp_close_takes_no_lock_and_brings_connections_back_closed() {
    cryo_bin();
    let mut w = Workload::spawn("tcp", &["127.0.0.1:0"]);
    // An accepted end (its port its listener's) and a connecting end (a port of its own).
    let mut client = connect(&w, "127.0.0.1");
    assert_eq!(w.cmd("accept"), "0");
    let outside = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    assert_eq!(
        w.cmd(&format!("connect {}", outside.local_addr().unwrap())),
        "1"
    );
    assert_eq!(w.cmd("connected 1"), "ok");
    let (mut served, _) = outside.accept().unwrap();
    served
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let locals = [w.cmd("local 0"), w.cmd("local 1")];
    let img = w.path("img");
    // Without --tcp-established: the connections are not captured, nothing is locked.
    w.dump(&img, &["--tcp-close"]).assert_success();
    w.wait_original();
    // Both peers learn at once that the original is gone.
    let mut buf = [0u8; 1];
    for (peer, s) in [("client", &mut client), ("served", &mut served)] {
        match s.read(&mut buf) {
            Ok(0) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            other => panic!("the {peer} end should see the connection end: {other:?}"),
        }
    }
    let shown = w.cryo(&["show".as_ref(), "-D".as_ref(), img.as_os_str()]);
    assert!(
        shown.stdout.contains("closed (--tcp-close)"),
        "cryo show: {}",
        shown.stdout
    );
    w.restore_detached(&img);
    for (i, local) in locals.iter().enumerate() {
        let seen = w.cmd(&format!("probe {i}"));
        assert!(seen.starts_with("read=eof "), "conn {i} read: {seen}");
        assert!(seen.ends_with("write=EPIPE"), "conn {i} write: {seen}");
        assert_eq!(w.cmd(&format!("state {i}")), "CLOSE", "conn {i}");
        assert_eq!(
            &w.cmd(&format!("local {i}")),
            local,
            "conn {i} keeps its name"
        );
    }
    // The listener still serves.
    let _again = connect(&w, "127.0.0.1");
    assert_eq!(w.cmd("accept"), "2");
    w.kill_restored();
}

/// In workload `w` (tcp mode, listening), a connection to its own listener at `to` (an IP
/// address) closed at both ends, both kept open: the connecting end (first index) sends 100
/// bytes and shuts down first (its address pair stays in TIME_WAIT), the accepted end
/// (second) leaves them unread, sends 50, which are read, and shuts down last. Both end in
/// CLOSE.
fn closed_at_both_ends(w: &Workload, to: &str) -> (String, String) {
    let port = w.cmd("port");
    let addr = match to.parse::<std::net::IpAddr>().unwrap() {
        std::net::IpAddr::V4(ip) => format!("{ip}:{port}"),
        std::net::IpAddr::V6(ip) => format!("[{ip}]:{port}"),
    };
    let c = w.cmd(&format!("connect {addr}"));
    assert_eq!(w.cmd(&format!("connected {c}")), "ok");
    let a = w.cmd("accept");
    assert_eq!(w.cmd(&format!("write {c} 100 1")), "100");
    assert_eq!(w.cmd(&format!("shutdown {c}")), "ok");
    assert_eq!(w.cmd(&format!("wait-fin {a}")), "ok");
    assert_eq!(w.cmd(&format!("write {a} 50 2")), "50");
    assert_eq!(w.cmd(&format!("shutdown {a}")), "ok");
    assert_eq!(w.cmd(&format!("eof {c}")), "data 50");
    assert_eq!(w.cmd(&format!("wait-closed {c}")), "CLOSE");
    assert_eq!(w.cmd(&format!("wait-closed {a}")), "CLOSE");
    (c, a)
}

/// The TIME_WAIT entries of this network namespace whose local address is `local`.
fn time_wait_from(local: &str) -> usize {
    let out = std::process::Command::new("ss")
        .args(["-Htan", "state", "time-wait"])
        .output()
        .expect("run ss");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.split_whitespace().any(|f| f == local))
        .count()
}

/// Connections closed at both ends, both ends in the workload, come back closed as they were:
/// the restored process reads its unread bytes then end-of-file, gets EPIPE from a write,
/// the same getsockname and SO_PEERNAME, EISCONN from connect(), the same poll mask, SO_ERROR
/// 0, TCP_INFO state CLOSE. The end that closed first is restored while its pair's TIME_WAIT
/// entry still exists here. A `--leave-running` dump leaves the original as it was (it is
/// read only after it, and must show what the restored copy shows). With `retire`, the
/// original is ended by `cryo kill`, which checks its connections against the image: the
/// accepted end (whose unread bytes a read would take) is then read only once restored.
fn closed_connections_come_back_closed(listen: &str, to: &str, retire: bool) {
    cryo_bin();
    let mut w = Workload::spawn("tcp", &[listen]);
    let (c, a) = closed_at_both_ends(&w, to);
    assert_eq!(w.cmd(&format!("setopts {a}")), "ok");
    let opts = w.cmd(&format!("opts {a}"));
    let local_c = w.cmd(&format!("local {c}"));
    let img = w.path("img");
    w.dump(&img, &["--leave-running"]).assert_success();
    let shown = w.cryo(&["show".as_ref(), "-D".as_ref(), img.as_os_str()]);
    assert!(
        shown.stdout.contains("closed at both ends"),
        "cryo show: {}",
        shown.stdout
    );
    // What each end must show: the connecting end has read everything, the accepted one
    // reads 64 of its 100 unread bytes.
    let local_a = w.cmd(&format!("local {a}"));
    let expected = |local: &str, peer: &str, read: &str| {
        format!(
            "poll=IN|OUT|RDHUP|HUP soerror=0 state=CLOSE local={local} peer={peer} \
             read={read} write=EPIPE connect=EISCONN"
        )
    };
    // An IPv6 end sees an IPv4 peer v4-mapped, an IPv4 end an IPv6 one unmapped.
    let (seen_by_c, seen_by_a) = match (
        local_c.parse::<std::net::SocketAddr>().unwrap(),
        local_a.parse::<std::net::SocketAddr>().unwrap(),
    ) {
        (std::net::SocketAddr::V4(c4), std::net::SocketAddr::V6(a6)) => (
            format!("{}:{}", a6.ip().to_ipv4_mapped().unwrap(), a6.port()),
            format!("[::ffff:{}]:{}", c4.ip(), c4.port()),
        ),
        _ => (local_a.clone(), local_c.clone()),
    };
    let shapes = [
        expected(&local_c, &seen_by_c, "eof"),
        expected(&local_a, &seen_by_a, "data 64"),
    ];
    // The original, read after the dump; with `retire` the accepted end is not read: `cryo
    // kill` would find its queue moved on.
    let before_c = w.cmd(&format!("closed {c}"));
    assert_eq!(before_c, shapes[0], "the original's connecting end");
    if retire {
        w.cryo(&["kill".as_ref(), "-D".as_ref(), img.as_os_str()])
            .assert_success();
        w.wait_original();
    } else {
        let before_a = w.cmd(&format!("closed {a}"));
        assert_eq!(before_a, shapes[1], "the original's accepted end");
        w.kill_original();
    }
    assert!(
        time_wait_from(&local_c) > 0,
        "the pair of the end that closed first should be in TIME_WAIT here"
    );
    w.restore_detached(&img);
    let after = [w.cmd(&format!("closed {c}")), w.cmd(&format!("closed {a}"))];
    assert_eq!(after, shapes, "what the restored process sees");
    // The rest of the unread bytes, then the end.
    assert!(
        w.cmd(&format!("closed {a}"))
            .ends_with(" read=data 36 write=EPIPE connect=EISCONN"),
        "the accepted end's last bytes"
    );
    assert!(w.cmd(&format!("probe {a}")).starts_with("read=eof "));
    assert_eq!(w.cmd(&format!("opts {a}")), opts, "the options set");
    // The listener still serves.
    let _again = connect(&w, to);
    w.cmd("accept");
    w.kill_restored();
}

#[test]
fn connections_closed_at_both_ends_come_back_closed_ipv4() {
    closed_connections_come_back_closed("127.0.0.1:0", "127.0.0.1", false);
}

#[test]
fn connections_closed_at_both_ends_come_back_closed_ipv6_after_cryo_kill() {
    closed_connections_come_back_closed("[::1]:0", "::1", true);
}

#[test]
fn connections_closed_at_both_ends_come_back_closed_v4_mapped() {
    // An IPv6 listener on every address: the accepted end is IPv6 with v4-mapped addresses,
    // the connecting end IPv4.
    closed_connections_come_back_closed("[::]:0", "127.0.0.1", false);
}

/// A connecting end that connected non-blocking and was reset before it sent a FIN (its
/// error read) is refused, naming it: its next connect() answers ECONNABORTED where a
/// blocking connect's would answer EISCONN, and no call tells which. The accepted end of a
/// connection reset by its peer (its error read) is "connected" (accept made it so): it comes
/// back as the original shows it, end-of-file and EPIPE.
#[test]
fn a_reset_connection_comes_back_closed_unless_its_connect_answer_is_unknown() {
    cryo_bin();
    let mut w = Workload::spawn("tcp", &["127.0.0.1:0"]);
    let port = w.cmd("port");
    // 0 connects, 1 is accepted; 1 resets it.
    assert_eq!(w.cmd(&format!("connect 127.0.0.1:{port}")), "0");
    assert_eq!(w.cmd("connected 0"), "ok");
    assert_eq!(w.cmd("accept"), "1");
    assert_eq!(w.cmd("linger0 1"), "ok");
    assert_eq!(w.cmd("close 1"), "ok");
    assert_eq!(w.cmd("wait-closed 0"), "CLOSE");
    assert_eq!(w.cmd("soerror 0"), libc::ECONNRESET.to_string());
    let fd = w.cmd("fd 0");
    w.dump(&w.path("img"), &[])
        .assert_refused()
        .assert_stderr_has_word(&w.pid().to_string())
        .assert_stderr_mentions(&format!("fd {fd}"))
        .assert_stderr_mentions("ECONNABORTED");
    w.assert_untouched();
    assert_eq!(w.cmd("close 0"), "ok");
    // Now the other way: 0 connects and resets, 1 (accepted) is reset.
    assert_eq!(w.cmd(&format!("connect 127.0.0.1:{port}")), "0");
    assert_eq!(w.cmd("connected 0"), "ok");
    assert_eq!(w.cmd("accept"), "1");
    assert_eq!(w.cmd("write 0 10 3"), "10");
    assert_eq!(w.cmd("take 1 10").split(' ').next(), Some("10"));
    assert_eq!(w.cmd("linger0 0"), "ok");
    assert_eq!(w.cmd("close 0"), "ok");
    assert_eq!(w.cmd("wait-closed 0"), "CLOSE");
    assert_eq!(w.cmd("soerror 0"), libc::ECONNRESET.to_string());
    let img = w.path("img2");
    w.dump(&img, &["--leave-running"]).assert_success();
    let before = w.cmd("closed 0");
    assert!(
        before.starts_with("poll=IN|OUT|RDHUP|HUP soerror=0 state=CLOSE ")
            && before.ends_with(" read=eof write=EPIPE connect=EISCONN"),
        "the original: {before}"
    );
    w.kill_original();
    w.restore_detached(&img);
    assert_eq!(w.cmd("closed 0"), before, "what the restored process sees");
    w.kill_restored();
}

/// The accepted end of a connection its peer reset (SO_LINGER 0), the error not read yet: a
/// killing dump takes it and the restore resets the connection again, so the restored process
/// reads what the original would have: its unread data, then ECONNRESET once, then end of
/// file (or, reset after the peer's FIN: the data, end of file, and EPIPE at the next write).
/// Each case is compared with a twin connection reset the same way and read before the
/// dump. A `--leave-running` dump cannot read the error without taking it: refused as
/// temporary, the error left pending.
#[test]
fn a_reset_connection_whose_error_is_unread_comes_back_reset() {
    cryo_bin();
    for fin_first in [false, true] {
        let mut w = Workload::spawn("tcp", &["127.0.0.1:0"]);
        let port = w.cmd("port");
        // Twice: a client (index 1 after the first round) resets the connection it made;
        // the accepted ends stay at 0 and 1.
        for client in [0, 1] {
            assert_eq!(
                w.cmd(&format!("connect 127.0.0.1:{port}")),
                client.to_string()
            );
            assert_eq!(w.cmd(&format!("connected {client}")), "ok");
            let accepted = client + 1;
            assert_eq!(w.cmd("accept"), accepted.to_string());
            assert_eq!(w.cmd(&format!("write {client} 10 3")), "10");
            if fin_first {
                assert_eq!(w.cmd(&format!("shutdown {client}")), "ok");
                assert_eq!(w.cmd(&format!("wait-fin {accepted}")), "ok");
            }
            assert_eq!(w.cmd(&format!("linger0 {client}")), "ok");
            assert_eq!(w.cmd(&format!("close {client}")), "ok");
            assert_eq!(w.cmd(&format!("wait-closed {client}")), "CLOSE");
        }
        // The twin (0), read now; 1 keeps its error pending.
        let twin = w.cmd("reset-seen 0");
        let want = if fin_first {
            "reads=data 10,eof write=EPIPE soerror=0"
        } else {
            "reads=data 10,ECONNRESET,eof write=EPIPE soerror=0"
        };
        assert!(
            twin.starts_with("poll=IN|OUT|RDHUP|ERR|HUP state=CLOSE outq=0 "),
            "{twin}"
        );
        assert!(twin.ends_with(want), "{twin}");
        let fd = w.cmd("fd 1");
        w.dump(&w.path("left"), &["--leave-running"])
            .assert_refused()
            .assert_stderr_mentions(&format!("fd {fd}"))
            .assert_stderr_mentions("has not read yet");
        w.assert_untouched();
        w.dump_and_restore();
        assert_eq!(w.cmd("reset-seen 1"), twin, "fin first: {fin_first}");
        w.kill_restored();
    }
}
