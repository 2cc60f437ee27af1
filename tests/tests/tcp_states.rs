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
