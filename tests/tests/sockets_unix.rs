//! Unix socket states beyond connected pairs and listeners, checked from inside the restored
//! process (the `socks` workload): an end whose peer already closed (its unread data, then
//! EOF; a datagram end keeps its datagrams), a socket bound to a path relative to the
//! process's own cwd, datagram sockets connected one way (to a server socket of the dump, or
//! to a bound path outside it), unconnected seqpacket sockets.
//!
//! Needs the engine: `cryo` must be built (`cargo build -p cryo`).

use cryo_tests::{cryo_bin, Workload};

fn pair(w: &Workload, ty: &str) -> (String, String) {
    let fds = w.cmd(&format!("pair {ty}"));
    let (a, b) = fds.split_once(' ').expect("two fds");
    (a.to_string(), b.to_string())
}

fn peer_closed(ty: &str, expect: &str) {
    cryo_bin();
    let mut w = Workload::spawn("socks", &[]);
    let (a, b) = pair(&w, ty);
    assert_eq!(w.cmd(&format!("send {b} one")), "ok");
    assert_eq!(w.cmd(&format!("send {b} two")), "ok");
    assert_eq!(w.cmd(&format!("close {b}")), "ok");
    w.dump_and_restore();
    assert_eq!(w.cmd(&format!("recv {a}")), expect, "its data, then EOF");
    assert!(
        w.cmd(&format!("send {a} x")).contains("os error 32"),
        "writing to a closed peer: EPIPE"
    );
    w.kill_restored();
}

#[test]
fn a_stream_end_whose_peer_closed_reads_its_data_then_eof() {
    peer_closed("stream", "onetwo|<eof>");
}

#[test]
fn a_seqpacket_end_whose_peer_closed_reads_its_messages_then_eof() {
    peer_closed("seqpacket", "one|two|<eof>");
}

#[test]
fn a_dgram_end_whose_peer_closed_keeps_its_datagrams() {
    cryo_bin();
    let mut w = Workload::spawn("socks", &[]);
    let (a, b) = pair(&w, "dgram");
    assert_eq!(w.cmd(&format!("send {b} one")), "ok");
    assert_eq!(w.cmd(&format!("send {b} two")), "ok");
    assert_eq!(w.cmd(&format!("close {b}")), "ok");
    w.dump_and_restore();
    assert_eq!(w.cmd(&format!("recv {a}")), "one|two", "its datagrams");
    // As before the dump: the dead peer refuses the first send (ECONNREFUSED), then the
    // socket is unconnected (ENOTCONN).
    assert!(w.cmd(&format!("send {a} x")).contains("os error 111"));
    assert!(w.cmd(&format!("send {a} x")).contains("os error 107"));
    w.kill_restored();
}

#[test]
fn a_stream_end_whose_peer_closed_unread_reads_its_data_then_econnreset() {
    cryo_bin();
    let mut w = Workload::spawn("socks", &[]);
    let (a, b) = pair(&w, "stream");
    assert_eq!(w.cmd(&format!("send {b} one")), "ok");
    // b closes with unread data: a's next read after its data fails with ECONNRESET.
    assert_eq!(w.cmd(&format!("send {a} unread")), "ok");
    assert_eq!(w.cmd(&format!("close {b}")), "ok");
    w.dump_and_restore();
    // As before the dump: its data, then ECONNRESET once, then EOF.
    assert_eq!(w.cmd(&format!("recv {a}")), "one|<errno 104>");
    assert_eq!(w.cmd(&format!("recv {a}")), "<eof>");
    w.kill_restored();
}

#[test]
fn a_seqpacket_end_whose_peer_closed_unread_reads_econnreset_first() {
    cryo_bin();
    let mut w = Workload::spawn("socks", &[]);
    let (a, b) = pair(&w, "seqpacket");
    assert_eq!(w.cmd(&format!("send {b} one")), "ok");
    assert_eq!(w.cmd(&format!("send {a} unread")), "ok");
    assert_eq!(w.cmd(&format!("close {b}")), "ok");
    w.dump_and_restore();
    // As before the dump: a seqpacket read reports the error before its records.
    assert_eq!(w.cmd(&format!("recv {a}")), "<errno 104>");
    assert_eq!(w.cmd(&format!("recv {a}")), "one|<eof>");
    w.kill_restored();
}

fn relative_bind(ty: &str) {
    cryo_bin();
    let mut w = Workload::spawn("socks", &[]);
    let sub = w.path("cwd");
    std::fs::create_dir(&sub).unwrap();
    assert_eq!(w.cmd(&format!("chdir {}", sub.display())), "ok");
    let s = w.cmd(&format!("socket unix {ty} 0"));
    assert_eq!(w.cmd(&format!("bind-unix {s} rel.sock")), "ok");
    if ty != "dgram" {
        assert_eq!(w.cmd(&format!("listen {s}")), "ok");
    }
    w.dump_and_restore();
    let path = sub.join("rel.sock");
    assert!(path.exists(), "bound again in the process's own cwd");
    if ty == "dgram" {
        let c = std::os::unix::net::UnixDatagram::unbound().unwrap();
        c.send_to(b"hi", &path).unwrap();
        assert_eq!(w.cmd(&format!("recv-wait {s}")), "hi");
    } else {
        let mut c = std::os::unix::net::UnixStream::connect(&path).unwrap();
        std::io::Write::write_all(&mut c, b"hi").unwrap();
        let acc = w.cmd(&format!("accept {s}"));
        assert_eq!(w.cmd(&format!("recv-wait {acc}")), "hi");
    }
    w.kill_restored();
}

#[test]
fn a_listener_bound_to_a_relative_path_listens_in_its_own_cwd() {
    relative_bind("stream");
}

#[test]
fn a_dgram_socket_bound_to_a_relative_path_receives_in_its_own_cwd() {
    relative_bind("dgram");
}

#[test]
fn a_dgram_client_connected_one_way_to_a_server_of_the_dump_still_sends_to_it() {
    cryo_bin();
    let mut w = Workload::spawn("socks", &[]);
    let path = w.path("log.sock");
    let server = w.cmd("socket unix dgram 0");
    assert_eq!(
        w.cmd(&format!("bind-unix {server} {}", path.display())),
        "ok"
    );
    let client = w.cmd("socket unix dgram 0");
    assert_eq!(
        w.cmd(&format!("connect-unix {client} {}", path.display())),
        "ok"
    );
    assert_eq!(w.cmd(&format!("send {client} queued")), "ok");
    w.dump_and_restore();
    assert_eq!(
        w.cmd(&format!("recv {server}")),
        "queued",
        "the queued datagram"
    );
    assert_eq!(
        w.cmd(&format!("send {client} after")),
        "ok",
        "still connected"
    );
    assert_eq!(w.cmd(&format!("recv {server}")), "after");
    w.kill_restored();
}

#[test]
fn a_dgram_socket_connected_to_its_own_name_still_sends_to_itself() {
    cryo_bin();
    let mut w = Workload::spawn("socks", &[]);
    let path = w.path("self.sock");
    let s = w.cmd("socket unix dgram 0");
    assert_eq!(w.cmd(&format!("bind-unix {s} {}", path.display())), "ok");
    assert_eq!(w.cmd(&format!("connect-unix {s} {}", path.display())), "ok");
    assert_eq!(w.cmd(&format!("send {s} queued")), "ok");
    w.dump_and_restore();
    assert_eq!(w.cmd(&format!("recv {s}")), "queued", "the queued datagram");
    assert_eq!(
        w.cmd(&format!("send {s} after")),
        "ok",
        "still connected to itself"
    );
    assert_eq!(w.cmd(&format!("recv {s}")), "after");
    w.kill_restored();
}

#[test]
fn a_dgram_client_of_a_bound_path_outside_the_dump_is_reconnected_by_path() {
    cryo_bin();
    let dir = cryo_tests::control_dir();
    let path = dir.path().join("devlog.sock");
    let server = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    let mut w = Workload::spawn_in(dir, "socks", &[]);
    let client = w.cmd("socket unix dgram 0");
    assert_eq!(
        w.cmd(&format!("connect-unix {client} {}", path.display())),
        "ok"
    );
    let img = w.path("img");
    // Without --ext-unix-sk the peer outside the dump is refused, naming it.
    w.dump(&img, &[])
        .assert_refused()
        .assert_stderr_mentions(&format!("fd {client}"));
    std::fs::remove_dir_all(&img).ok();
    w.dump(&img, &["--ext-unix-sk"]).assert_success();
    w.wait_original();
    w.restore_background(&img);
    assert_eq!(w.cmd(&format!("send {client} logged")), "ok");
    let mut buf = [0u8; 64];
    server
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let n = server.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"logged", "sent to the same path");
    w.kill_restored();
}

#[test]
fn unconnected_seqpacket_sockets_come_back_unbound_and_bound() {
    cryo_bin();
    let mut w = Workload::spawn("socks", &[]);
    let fresh = w.cmd("socket unix seqpacket 0");
    let bound = w.cmd("socket unix seqpacket 0");
    let path = w.path("sp.sock");
    assert_eq!(
        w.cmd(&format!("bind-unix {bound} {}", path.display())),
        "ok"
    );
    w.dump_and_restore();
    assert_eq!(w.cmd(&format!("name {fresh}")), "unnamed");
    assert_eq!(w.cmd(&format!("name {bound}")), path.display().to_string());
    // Both usable as before: the bound one listens, the fresh one connects to it.
    assert_eq!(w.cmd(&format!("listen {bound}")), "ok");
    assert_eq!(
        w.cmd(&format!("connect-unix {fresh} {}", path.display())),
        "ok"
    );
    let acc = w.cmd(&format!("accept {bound}"));
    assert_eq!(w.cmd(&format!("send {fresh} hi")), "ok");
    assert_eq!(w.cmd(&format!("recv {acc}")), "hi");
    w.kill_restored();
}

#[test]
fn a_listener_whose_socket_file_was_unlinked_keeps_its_name_and_no_file() {
    cryo_bin();
    let mut w = Workload::spawn("socks", &[]);
    let s = w.cmd("socket unix stream 0");
    let path = w.path("gone.sock");
    assert_eq!(w.cmd(&format!("bind-unix {s} {}", path.display())), "ok");
    assert_eq!(w.cmd(&format!("listen {s}")), "ok");
    std::fs::remove_file(&path).unwrap();
    let name = w.cmd(&format!("name {s}"));
    w.dump_and_restore();
    assert_eq!(w.cmd(&format!("name {s}")), name, "getsockname");
    assert!(
        !path.exists(),
        "the restore left a socket file at {}: anyone can connect to it now",
        path.display()
    );
    let c = w.cmd("socket unix stream 0");
    assert!(
        w.cmd(&format!("connect-unix {c} {}", path.display()))
            .contains("os error 2"),
        "connecting by the unlinked name must fail (ENOENT)"
    );
    w.kill_restored();
}

#[test]
fn a_listener_whose_path_another_file_took_is_refused_naming_pid_and_fd() {
    cryo_bin();
    let w = Workload::spawn("socks", &[]);
    let s = w.cmd("socket unix stream 0");
    let path = w.path("taken.sock");
    assert_eq!(w.cmd(&format!("bind-unix {s} {}", path.display())), "ok");
    assert_eq!(w.cmd(&format!("listen {s}")), "ok");
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, b"someone else's").unwrap();
    let out = w.dump(&w.path("img"), &[]);
    out.assert_refused()
        .assert_stderr_mentions(&format!("pid {} fd {s}", w.pid()))
        .assert_stderr_mentions("the path taken by another file");
    w.assert_untouched();
    assert_eq!(std::fs::read(&path).unwrap(), b"someone else's");
}
