//! TCP sockets in the states beside "live connection": `--tcp-close` (closed the CRIU way),
//! read from inside the restored process. The workload (`tcp` mode) is the server, the test
//! the client.
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
