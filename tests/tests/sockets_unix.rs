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

/// A seqpacket end whose peer closed unread (ECONNRESET pending), its own queue empty: a
/// `--leave-running` dump leaves the error to the running process (its next read fails with
/// it, then EOF). Before, the dump's capture took it: the running process read EOF at once.
#[test]
fn a_seqpacket_reset_with_an_empty_queue_stays_pending_after_a_leave_running_dump() {
    cryo_bin();
    let w = Workload::spawn("socks", &[]);
    let (a, b) = pair(&w, "seqpacket");
    assert_eq!(w.cmd(&format!("send {a} unread")), "ok");
    assert_eq!(w.cmd(&format!("close {b}")), "ok");
    w.dump(&w.path("img"), &["--leave-running"])
        .assert_success();
    assert_eq!(w.cmd(&format!("recv {a}")), "<errno 104>");
    assert_eq!(w.cmd(&format!("recv {a}")), "<eof>");
}

/// The same end with records queued: capturing them would take the error from the running
/// process, so a `--leave-running` dump is refused (naming pid, fd and why) and the process
/// reads the error, then its record, as before.
#[test]
fn a_seqpacket_reset_before_queued_records_refuses_a_leave_running_dump() {
    cryo_bin();
    let w = Workload::spawn("socks", &[]);
    let (a, b) = pair(&w, "seqpacket");
    assert_eq!(w.cmd(&format!("send {b} one")), "ok");
    assert_eq!(w.cmd(&format!("send {a} unread")), "ok");
    assert_eq!(w.cmd(&format!("close {b}")), "ok");
    w.dump(&w.path("img"), &["--leave-running"])
        .assert_refused()
        .assert_stderr_has_word(&w.pid().to_string())
        .assert_stderr_mentions(&format!("fd {a}"))
        .assert_stderr_mentions("an ECONNRESET waits to be read before its queue");
    assert_eq!(w.cmd(&format!("recv {a}")), "<errno 104>");
    assert_eq!(w.cmd(&format!("recv {a}")), "one|<eof>");
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

/// Two listeners bound to one path (del_standalone_un's shape): the first's socket file moved
/// away while the second binds, then moved back over the second's. The second's name is its
/// own again, its accepted connection's and waiting client's peer names are that name, and
/// the path is still the first's.
#[test]
fn a_listener_whose_path_another_socket_took_keeps_its_name_and_its_clients() {
    cryo_bin();
    let mut w = Workload::spawn("socks", &[]);
    let dir = w.path("taken");
    std::fs::create_dir(&dir).unwrap();
    let path = dir.join("sock");
    let first = w.cmd("socket unix stream 0");
    assert_eq!(
        w.cmd(&format!("bind-unix {first} {}", path.display())),
        "ok"
    );
    assert_eq!(w.cmd(&format!("listen {first}")), "ok");
    std::fs::rename(&path, dir.join("aside")).unwrap();
    let second = w.cmd("socket unix stream 0");
    assert_eq!(
        w.cmd(&format!("bind-unix {second} {}", path.display())),
        "ok"
    );
    assert_eq!(w.cmd(&format!("listen {second}")), "ok");
    let client = w.cmd("socket unix stream 0");
    assert_eq!(
        w.cmd(&format!("connect-unix {client} {}", path.display())),
        "ok"
    );
    let accepted = w.cmd(&format!("accept {second}"));
    let waiting = w.cmd("socket unix stream 0");
    assert_eq!(
        w.cmd(&format!("connect-unix {waiting} {}", path.display())),
        "ok"
    );
    std::fs::rename(dir.join("aside"), &path).unwrap();
    w.dump_and_restore();
    let name = path.display().to_string();
    assert_eq!(w.cmd(&format!("name {second}")), name, "getsockname");
    assert_eq!(w.cmd(&format!("name {first}")), name);
    assert_eq!(
        w.cmd(&format!("peername {waiting}")),
        name,
        "the waiting client's peer name"
    );
    assert_eq!(w.cmd(&format!("name {accepted}")), name, "the accepted end");
    assert_eq!(
        w.cmd(&format!("peername {client}")),
        name,
        "its client's peer"
    );
    assert_eq!(w.cmd(&format!("send {client} one")), "ok");
    assert_eq!(w.cmd(&format!("recv-wait {accepted}")), "one");
    let later = w.cmd(&format!("accept {second}"));
    assert_eq!(w.cmd(&format!("send {waiting} hi")), "ok");
    assert_eq!(w.cmd(&format!("recv-wait {later}")), "hi");
    // The path still leads to the first listener, and nothing else was left beside it.
    let c = w.cmd("socket unix stream 0");
    assert_eq!(w.cmd(&format!("connect-unix {c} {}", path.display())), "ok");
    let from_first = w.cmd(&format!("accept {first}"));
    assert_eq!(w.cmd(&format!("send {c} again")), "ok");
    assert_eq!(w.cmd(&format!("recv-wait {from_first}")), "again");
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        left,
        ["sock"],
        "the directory holds the first's socket file only"
    );
    w.kill_restored();
}

/// A dgram socket whose path a FIFO took since (fifo_upon_unix_socket00's shape): its name,
/// its queued datagram and its connected client come back, the FIFO stays.
#[test]
fn a_dgram_socket_whose_path_a_fifo_took_keeps_its_name_datagrams_and_client() {
    cryo_bin();
    let mut w = Workload::spawn("socks", &[]);
    let path = w.path("fifo.sock");
    let s = w.cmd("socket unix dgram 0");
    assert_eq!(w.cmd(&format!("bind-unix {s} {}", path.display())), "ok");
    let c = w.cmd("socket unix dgram 0");
    assert_eq!(w.cmd(&format!("connect-unix {c} {}", path.display())), "ok");
    assert_eq!(w.cmd(&format!("send {c} queued")), "ok");
    std::fs::remove_file(&path).unwrap();
    nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    w.dump_and_restore();
    let name = path.display().to_string();
    assert_eq!(w.cmd(&format!("name {s}")), name, "getsockname");
    assert_eq!(
        w.cmd(&format!("peername {c}")),
        name,
        "its client's peer name"
    );
    assert_eq!(w.cmd(&format!("recv {s}")), "queued");
    assert_eq!(w.cmd(&format!("send {c} after")), "ok", "still connected");
    assert_eq!(w.cmd(&format!("recv {s}")), "after");
    let md = std::fs::symlink_metadata(&path).unwrap();
    assert!(
        std::os::unix::fs::FileTypeExt::is_fifo(&md.file_type()),
        "the FIFO keeps the path"
    );
    w.kill_restored();
}

/// Two dgram sockets bound in turn to one path whose file and directory were then removed
/// (sk-unix01's shape), each with a client connected: names, clients, and no directory.
#[test]
fn dgram_sockets_whose_file_and_directory_were_removed_keep_their_name_and_clients() {
    cryo_bin();
    let mut w = Workload::spawn("socks", &[]);
    let dir = w.path("gone");
    std::fs::create_dir_all(dir.join("dg")).unwrap();
    let path = dir.join("dg").join("sock");
    let mut pairs = Vec::new();
    for _ in 0..2 {
        let s = w.cmd("socket unix dgram 0");
        assert_eq!(w.cmd(&format!("bind-unix {s} {}", path.display())), "ok");
        let c = w.cmd("socket unix dgram 0");
        assert_eq!(w.cmd(&format!("connect-unix {c} {}", path.display())), "ok");
        assert_eq!(w.cmd(&format!("send {c} queued-{s}")), "ok");
        std::fs::remove_file(&path).unwrap();
        pairs.push((s, c));
    }
    std::fs::remove_dir(dir.join("dg")).unwrap();
    w.dump_and_restore();
    let name = path.display().to_string();
    for (s, c) in &pairs {
        assert_eq!(w.cmd(&format!("name {s}")), name, "getsockname");
        assert_eq!(
            w.cmd(&format!("peername {c}")),
            name,
            "its client's peer name"
        );
        assert_eq!(w.cmd(&format!("recv {s}")), format!("queued-{s}"));
        assert_eq!(w.cmd(&format!("send {c} after")), "ok");
        assert_eq!(w.cmd(&format!("recv {s}")), "after", "its own client's");
    }
    assert!(
        !dir.join("dg").exists(),
        "the directory made for the bind was removed again"
    );
    w.kill_restored();
}

/// A dgram socket bound to a relative name whose file a FIFO took, the process then in
/// another directory (fifo_upon_unix_socket01's shape): its relative name and its client.
#[test]
fn a_relative_name_whose_file_was_replaced_after_a_chdir_keeps_its_name_and_client() {
    cryo_bin();
    let mut w = Workload::spawn("socks", &[]);
    let sub = w.path("rel");
    std::fs::create_dir(&sub).unwrap();
    assert_eq!(w.cmd(&format!("chdir {}", sub.display())), "ok");
    let s = w.cmd("socket unix dgram 0");
    assert_eq!(w.cmd(&format!("bind-unix {s} rel.sock")), "ok");
    let c = w.cmd("socket unix dgram 0");
    assert_eq!(w.cmd(&format!("connect-unix {c} rel.sock")), "ok");
    assert_eq!(w.cmd(&format!("send {c} queued")), "ok");
    let path = sub.join("rel.sock");
    std::fs::remove_file(&path).unwrap();
    nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    assert_eq!(w.cmd("chdir /"), "ok");
    w.dump_and_restore();
    assert_eq!(w.cmd(&format!("name {s}")), "rel.sock", "getsockname");
    assert_eq!(w.cmd(&format!("peername {c}")), "rel.sock");
    assert_eq!(w.cmd(&format!("recv {s}")), "queued");
    assert_eq!(w.cmd(&format!("send {c} after")), "ok");
    assert_eq!(w.cmd(&format!("recv {s}")), "after");
    assert!(std::os::unix::fs::FileTypeExt::is_fifo(
        &std::fs::symlink_metadata(&path).unwrap().file_type()
    ));
    w.kill_restored();
}

#[test]
fn a_listener_whose_socket_file_was_moved_is_refused_naming_pid_and_fd() {
    cryo_bin();
    let w = Workload::spawn("socks", &[]);
    let s = w.cmd("socket unix stream 0");
    let path = w.path("moved.sock");
    assert_eq!(w.cmd(&format!("bind-unix {s} {}", path.display())), "ok");
    assert_eq!(w.cmd(&format!("listen {s}")), "ok");
    std::fs::rename(&path, w.path("elsewhere.sock")).unwrap();
    let out = w.dump(&w.path("img"), &[]);
    out.assert_refused()
        .assert_stderr_mentions(&format!("pid {} fd {s}", w.pid()))
        .assert_stderr_mentions("whose socket file was moved to");
    w.assert_untouched();
}

/// An accepted connection of a listener bound to a path, its client bound to a name of its
/// own: each end's name and its peer's name come back (the accepted end shares its
/// listener's name, whose file it does not own).
#[test]
fn an_accepted_connection_keeps_both_names() {
    cryo_bin();
    let mut w = Workload::spawn("socks", &[]);
    let path = w.path("listen.sock");
    let own = w.path("client.sock");
    let l = w.cmd("socket unix stream 0");
    assert_eq!(w.cmd(&format!("bind-unix {l} {}", path.display())), "ok");
    assert_eq!(w.cmd(&format!("listen {l}")), "ok");
    let c = w.cmd("socket unix stream 0");
    assert_eq!(w.cmd(&format!("bind-unix {c} {}", own.display())), "ok");
    assert_eq!(w.cmd(&format!("connect-unix {c} {}", path.display())), "ok");
    let a = w.cmd(&format!("accept {l}"));
    let before: Vec<String> = [
        format!("name {a}"),
        format!("peername {a}"),
        format!("name {c}"),
        format!("peername {c}"),
    ]
    .iter()
    .map(|q| w.cmd(q))
    .collect();
    w.dump_and_restore();
    for (q, was) in ["name a", "peername a", "name c", "peername c"]
        .iter()
        .zip(&before)
    {
        let fd = if q.ends_with('a') { &a } else { &c };
        let verb = q.split(' ').next().unwrap();
        assert_eq!(&w.cmd(&format!("{verb} {fd}")), was, "{q}");
    }
    assert_eq!(w.cmd(&format!("send {c} hi")), "ok");
    assert_eq!(w.cmd(&format!("recv-wait {a}")), "hi");
    w.kill_restored();
}

/// Sends `one` from the unnamed socket `u`, `two` from `s` itself and `three` from `u` to the
/// bound dgram socket `s` at `path`.
fn queue_from_unnamed_and_itself(w: &Workload, s: &str, u: &str, path: &std::path::Path) {
    for (from, msg) in [(u, "one"), (s, "two"), (u, "three")] {
        assert_eq!(
            w.cmd(&format!("sendto-unix {from} {} {msg}", path.display())),
            "ok"
        );
    }
}

/// A bound dgram socket with datagrams queued from an unnamed socket and from itself: each
/// comes back with the sender recvfrom showed (a twin socket, read before the dump, shows
/// what). Before, every one came back from its own name.
#[test]
fn datagrams_queued_from_an_unnamed_socket_come_back_from_no_name() {
    cryo_bin();
    let mut w = Workload::spawn("socks", &[]);
    let (path, twin_path) = (w.path("dg.sock"), w.path("twin.sock"));
    let s = w.cmd("socket unix dgram 0");
    let twin = w.cmd("socket unix dgram 0");
    let u = w.cmd("socket unix dgram 0");
    assert_eq!(w.cmd(&format!("bind-unix {s} {}", path.display())), "ok");
    assert_eq!(
        w.cmd(&format!("bind-unix {twin} {}", twin_path.display())),
        "ok"
    );
    queue_from_unnamed_and_itself(&w, &s, &u, &path);
    queue_from_unnamed_and_itself(&w, &twin, &u, &twin_path);
    let expected = w.cmd(&format!("recvfrom-unix {twin}")).replace(
        &twin_path.display().to_string(),
        &path.display().to_string(),
    );
    assert!(expected.contains("one"), "{expected}");
    w.dump_and_restore();
    assert_eq!(w.cmd(&format!("recvfrom-unix {s}")), expected);
    w.kill_restored();
}

/// A datagram another named socket sent to an unconnected bound one: refused at dump, naming
/// pid and fd (its sender's name would not come back), the process untouched.
#[test]
fn a_datagram_queued_from_another_named_socket_is_refused_naming_pid_and_fd() {
    cryo_bin();
    let w = Workload::spawn("socks", &[]);
    let path = w.path("dg.sock");
    let s = w.cmd("socket unix dgram 0");
    let named = w.cmd("socket unix dgram 0");
    assert_eq!(w.cmd(&format!("bind-unix {s} {}", path.display())), "ok");
    assert_eq!(
        w.cmd(&format!(
            "bind-unix {named} {}",
            w.path("other.sock").display()
        )),
        "ok"
    );
    assert_eq!(
        w.cmd(&format!("sendto-unix {named} {} hi", path.display())),
        "ok"
    );
    let out = w.dump(&w.path("img"), &[]);
    out.assert_refused()
        .assert_stderr_mentions(&format!("pid {} fd {s}", w.pid()))
        .assert_stderr_mentions("datagrams queued from another named socket");
    w.assert_untouched();
}

/// getsockname and getpeername of each of `fds`, as the process reads them.
fn names_of(w: &Workload, fds: &[&str]) -> Vec<String> {
    fds.iter()
        .flat_map(|fd| [format!("name {fd}"), format!("peername {fd}")])
        .map(|q| format!("{q}: {}", w.cmd(&q)))
        .collect()
}

/// Connections of a stream listener bound to an abstract name, which it still holds: an
/// accepted end shares the listener's name (a second bind of it would fail), its client is
/// bound to an abstract name of its own or unnamed, or closed since. Each end's name and its
/// peer's name come back, data flows both ways, the listener takes new connections and the
/// client still holds its name.
#[test]
fn connections_of_an_abstract_listener_keep_their_names() {
    cryo_bin();
    let mut w = Workload::spawn("socks", &[]);
    let listener_name = format!("@cryo-{}-listener", w.pid());
    let own = format!("@cryo-{}-client", w.pid());
    let l = w.cmd("socket unix stream 0");
    assert_eq!(w.cmd(&format!("bind-unix {l} {listener_name}")), "ok");
    assert_eq!(w.cmd(&format!("listen {l}")), "ok");
    let named = w.cmd("socket unix stream 0");
    assert_eq!(w.cmd(&format!("bind-unix {named} {own}")), "ok");
    assert_eq!(
        w.cmd(&format!("connect-unix {named} {listener_name}")),
        "ok"
    );
    let a_named = w.cmd(&format!("accept {l}"));
    let anon = w.cmd("socket unix stream 0");
    assert_eq!(w.cmd(&format!("connect-unix {anon} {listener_name}")), "ok");
    let a_anon = w.cmd(&format!("accept {l}"));
    let gone = w.cmd("socket unix stream 0");
    assert_eq!(w.cmd(&format!("connect-unix {gone} {listener_name}")), "ok");
    let a_gone = w.cmd(&format!("accept {l}"));
    assert_eq!(w.cmd(&format!("send {gone} bye")), "ok");
    assert_eq!(w.cmd(&format!("close {gone}")), "ok");
    let fds = [
        a_named.as_str(),
        named.as_str(),
        a_anon.as_str(),
        anon.as_str(),
    ];
    let before = names_of(&w, &fds);
    let gone_name_before = w.cmd(&format!("name {a_gone}"));
    assert_eq!(before[0], format!("name {a_named}: {listener_name}"));
    w.dump_and_restore();
    assert_eq!(names_of(&w, &fds), before);
    assert_eq!(w.cmd(&format!("name {a_gone}")), gone_name_before);
    assert_eq!(w.cmd(&format!("recv {a_gone}")), "bye|<eof>");
    for (from, to) in [(&named, &a_named), (&a_named, &named), (&anon, &a_anon)] {
        assert_eq!(w.cmd(&format!("send {from} hi-{from}")), "ok");
        assert_eq!(w.cmd(&format!("recv-wait {to}")), format!("hi-{from}"));
    }
    let c = w.cmd("socket unix stream 0");
    assert_eq!(w.cmd(&format!("connect-unix {c} {listener_name}")), "ok");
    let a_c = w.cmd(&format!("accept {l}"));
    assert_eq!(w.cmd(&format!("name {a_c}")), listener_name);
    let again = w.cmd("socket unix stream 0");
    assert!(
        w.cmd(&format!("bind-unix {again} {own}"))
            .contains("os error 98"),
        "the client still holds its own name (EADDRINUSE)"
    );
    w.kill_restored();
}

/// A seqpacket connection accepted from a listener bound to an abstract name, the listener
/// closed since: the accepted end keeps the name, which nothing holds (a new socket can bind
/// it, as before the dump).
#[test]
fn a_seqpacket_connection_whose_abstract_listener_closed_keeps_its_names() {
    cryo_bin();
    let mut w = Workload::spawn("socks", &[]);
    let listener_name = format!("@cryo-{}-seqpacket", w.pid());
    let l = w.cmd("socket unix seqpacket 0");
    assert_eq!(w.cmd(&format!("bind-unix {l} {listener_name}")), "ok");
    assert_eq!(w.cmd(&format!("listen {l}")), "ok");
    let c = w.cmd("socket unix seqpacket 0");
    assert_eq!(w.cmd(&format!("connect-unix {c} {listener_name}")), "ok");
    let a = w.cmd(&format!("accept {l}"));
    assert_eq!(w.cmd(&format!("close {l}")), "ok");
    assert_eq!(w.cmd(&format!("send {c} queued")), "ok");
    let before = names_of(&w, &[&a, &c]);
    assert_eq!(before[0], format!("name {a}: {listener_name}"));
    w.dump_and_restore();
    assert_eq!(names_of(&w, &[&a, &c]), before);
    assert_eq!(w.cmd(&format!("recv {a}")), "queued");
    assert_eq!(w.cmd(&format!("send {a} back")), "ok");
    assert_eq!(w.cmd(&format!("recv-wait {c}")), "back");
    let fresh = w.cmd("socket unix seqpacket 0");
    assert_eq!(
        w.cmd(&format!("bind-unix {fresh} {listener_name}")),
        "ok",
        "the name is free, as before the dump"
    );
    w.kill_restored();
}

/// Dgram sockets connected to sockets outside the dump (`--ext-unix-sk`), one bound to a path,
/// one to an abstract name, each with datagrams queued from that peer and, sent before it
/// connected, from an unnamed socket: recvfrom shows each sender as before.
#[test]
fn datagrams_from_a_peer_outside_the_dump_come_back_from_its_name() {
    use std::os::linux::net::SocketAddrExt;
    cryo_bin();
    let dir = cryo_tests::control_dir();
    let x_path = dir.path().join("x.sock");
    let x = std::os::unix::net::UnixDatagram::bind(&x_path).unwrap();
    let x_abstract = format!("cryo-{}-outside", std::process::id());
    let y = std::os::unix::net::UnixDatagram::bind_addr(
        &std::os::unix::net::SocketAddr::from_abstract_name(&x_abstract).unwrap(),
    )
    .unwrap();
    let mut w = Workload::spawn_in(dir, "socks", &[]);
    let mut expected = Vec::new();
    let mut socks = Vec::new();
    for (peer, peer_name, sock) in [
        (&x, x_path.display().to_string(), "s.sock"),
        (&y, format!("@{x_abstract}"), "t.sock"),
    ] {
        let path = w.path(sock);
        let s = w.cmd("socket unix dgram 0");
        assert_eq!(w.cmd(&format!("bind-unix {s} {}", path.display())), "ok");
        let u = w.cmd("socket unix dgram 0");
        assert_eq!(
            w.cmd(&format!("sendto-unix {u} {} one", path.display())),
            "ok"
        );
        assert_eq!(w.cmd(&format!("connect-unix {s} {peer_name}")), "ok");
        peer.send_to(b"two", &path).unwrap();
        peer.send_to(b"three", &path).unwrap();
        expected.push(format!(
            "one from unnamed | two from {peer_name} | three from {peer_name}"
        ));
        socks.push(s);
    }
    let img = w.path("img");
    w.dump(&img, &["--ext-unix-sk"]).assert_success();
    w.wait_original();
    w.restore_background(&img);
    for (s, expected) in socks.iter().zip(&expected) {
        assert_eq!(&w.cmd(&format!("recvfrom-unix {s}")), expected);
    }
    assert_eq!(w.cmd(&format!("send {} after", socks[0])), "ok");
    let mut buf = [0u8; 16];
    x.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let n = x.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"after", "still connected to its peer");
    w.kill_restored();
}

/// A descriptor in flight on a stream socket whose peer is outside the dump (`--ext-unix-sk`):
/// sent by that peer, not received yet, it comes back with its message.
#[test]
fn a_descriptor_in_flight_from_a_peer_outside_the_dump_comes_back() {
    use std::os::fd::AsRawFd;
    cryo_bin();
    let dir = cryo_tests::control_dir();
    let path = dir.path().join("ext.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let mut w = Workload::spawn_in(dir, "socks", &[]);
    let s = w.cmd("socket unix stream 0");
    assert_eq!(w.cmd(&format!("connect-unix {s} {}", path.display())), "ok");
    let (ext, _) = listener.accept().unwrap();
    let passed = w.path("passed.txt");
    std::fs::write(&passed, "passed").unwrap();
    let f = std::fs::File::open(&passed).unwrap();
    nix::sys::socket::sendmsg::<()>(
        ext.as_raw_fd(),
        &[std::io::IoSlice::new(b"fds")],
        &[nix::sys::socket::ControlMessage::ScmRights(
            &[f.as_raw_fd()],
        )],
        nix::sys::socket::MsgFlags::empty(),
        None,
    )
    .unwrap();
    drop(f);
    let img = w.path("img");
    w.dump(&img, &["--ext-unix-sk"]).assert_success();
    w.wait_original();
    w.restore_background(&img);
    assert_eq!(w.cmd(&format!("take {s}")), "fds file:0:passed");
    drop(ext);
    w.kill_restored();
}

/// A connection accepted from a listener bound to an abstract name, its client in another
/// tree of the same dump: the restore would make the listener, the accepted end and the
/// client in one process, so the dump refuses it, naming pid and fd, and leaves both trees.
#[test]
fn an_abstract_listeners_connection_to_another_tree_is_refused_naming_pid_and_fd() {
    cryo_bin();
    let w = Workload::spawn("socks", &[]);
    let other = Workload::spawn("socks", &[]);
    let name = format!("@cryo-{}-trees", w.pid());
    let l = w.cmd("socket unix stream 0");
    assert_eq!(w.cmd(&format!("bind-unix {l} {name}")), "ok");
    assert_eq!(w.cmd(&format!("listen {l}")), "ok");
    let c = other.cmd("socket unix stream 0");
    assert_eq!(other.cmd(&format!("connect-unix {c} {name}")), "ok");
    let a = w.cmd(&format!("accept {l}"));
    let both = format!("{},{}", w.pid(), other.pid());
    let img = w.path("img");
    w.cryo(&["dump", "-t", &both, "-D", img.to_str().unwrap()])
        .assert_refused()
        .assert_stderr_mentions(&format!("pid {} fd {a}", w.pid()))
        .assert_stderr_mentions("different trees");
    w.assert_untouched();
    other.assert_untouched();
}

/// A dgram socket whose peer closed, with a datagram it had sent itself (its own name) before
/// it connected: restored as one end of a socketpair, its queue would come back from an
/// unnamed socket, so the dump refuses it, naming pid and fd.
#[test]
fn a_datagram_a_socket_sent_itself_before_its_peer_closed_is_refused_naming_pid_and_fd() {
    cryo_bin();
    let w = Workload::spawn("socks", &[]);
    let (path, peer_path) = (w.path("s.sock"), w.path("peer.sock"));
    let s = w.cmd("socket unix dgram 0");
    assert_eq!(w.cmd(&format!("bind-unix {s} {}", path.display())), "ok");
    let peer = w.cmd("socket unix dgram 0");
    assert_eq!(
        w.cmd(&format!("bind-unix {peer} {}", peer_path.display())),
        "ok"
    );
    assert_eq!(
        w.cmd(&format!("sendto-unix {s} {} hi", path.display())),
        "ok"
    );
    assert_eq!(
        w.cmd(&format!("connect-unix {s} {}", peer_path.display())),
        "ok"
    );
    assert_eq!(w.cmd(&format!("close {peer}")), "ok");
    w.assert_dump_refused(&s, "datagrams queued from a named socket");
}

/// Two datagram sockets bound to abstract names, only in flight in each other's queues
/// (zdtm scm06): once the killing dump ends their process, the kernel keeps them, names
/// held, until its unix garbage collector runs, which only the release of another unix socket
/// starts. The restore starts it and waits: the restored sockets hold the names again (a
/// datagram to either is refused with EPERM, as to a connected socket, not ECONNREFUSED).
/// Before, the restore failed: "bind abstract name on fd 5: Address already in use".
#[test]
fn abstract_names_of_sockets_only_in_flight_are_bound_again_right_after_the_dump() {
    cryo_bin();
    let tag = std::process::id().to_string();
    let mut w = Workload::spawn("unix-cycle", &[&tag]);
    assert_eq!(
        w.cmd("reach"),
        "1 1",
        "both names held, by connected sockets"
    );
    w.dump_and_restore();
    assert_eq!(w.cmd("reach"), "1 1");
    w.kill_restored();
}

/// A restore beside the running original (dumped with `--leave-running`, restored with
/// `--pidns` in the same network namespace): the original's sockets hold the abstract names,
/// so once it waited for them the restore is refused before anything is made, naming the
/// socket, the name and why; the original runs on with its names.
#[test]
fn abstract_names_the_running_original_holds_refuse_the_restore_before_anything_is_made() {
    cryo_bin();
    let tag = format!("{}-beside", std::process::id());
    let w = Workload::spawn("unix-cycle", &[&tag]);
    let img = w.path("img");
    w.dump(&img, &["--leave-running"]).assert_success();
    let out = w.cryo(&[
        "restore".as_ref(),
        "-D".as_ref(),
        img.as_os_str(),
        "--pidns".as_ref(),
    ]);
    out.assert_refused()
        .assert_stderr_mentions(&format!("its abstract name @cryo-cycle-{tag}-"))
        .assert_stderr_mentions("is not free here")
        .assert_stderr_mentions("still holds it")
        .assert_stderr_mentions("nothing was made");
    assert_eq!(w.cmd("reach"), "1 1");
}

/// The socket-level options a program may set on any socket, each to a value other than a
/// fresh socket's: (level, option, value) as `setopt` takes it. SO_PASSRIGHTS (linux 6.16)
/// off makes a unix socket refuse descriptors; the PASS options exist on unix sockets only.
const SOCKET_LEVEL: &[(i32, i32, i32)] = &[
    (libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1),
    (libc::SOL_SOCKET, libc::SO_PRIORITY, 5),
    (libc::SOL_SOCKET, libc::SO_MARK, 7),
    (libc::SOL_SOCKET, libc::SO_RCVLOWAT, 3),
    (libc::SOL_SOCKET, libc::SO_OOBINLINE, 1),
    (libc::SOL_SOCKET, libc::SO_DONTROUTE, 1),
    (libc::SOL_SOCKET, libc::SO_BROADCAST, 1),
    (libc::SOL_SOCKET, libc::SO_NO_CHECK, 1),
    (libc::SOL_SOCKET, libc::SO_TIMESTAMP, 1),
    (libc::SOL_SOCKET, libc::SO_REUSEADDR, 1),
    (libc::SOL_SOCKET, libc::SO_RXQ_OVFL, 1),
    (libc::SOL_SOCKET, libc::SO_SELECT_ERR_QUEUE, 1),
    (libc::SOL_SOCKET, libc::SO_INCOMING_CPU, 1),
    (libc::SOL_SOCKET, libc::SO_WIFI_STATUS, 1),
    (libc::SOL_SOCKET, libc::SO_NOFCS, 1),
    (libc::SOL_SOCKET, libc::SO_PASSCRED, 1),
    (libc::SOL_SOCKET, 34, 1), // SO_PASSSEC
    (libc::SOL_SOCKET, 76, 1), // SO_PASSPIDFD
    (libc::SOL_SOCKET, 83, 0), // SO_PASSRIGHTS
];

/// Sets every option of [`SOCKET_LEVEL`] that socket `s` takes, and the timeouts and linger
/// (struct options) as hex; returns what the socket reads for each, as the process sees it.
fn set_socket_level(w: &Workload, s: &str) -> Vec<String> {
    let mut read = Vec::new();
    for &(level, opt, value) in SOCKET_LEVEL {
        // Not every option applies to every family (EOPNOTSUPP): what applies is checked.
        let _ = w.cmd(&format!("setopt {s} {level} {opt} {value}"));
        read.push(format!(
            "{opt}: {}",
            w.cmd(&format!("getopt {s} {level} {opt}"))
        ));
    }
    // struct timeval {3 s, 500000 us}, {4 s, 0}; struct linger {1, 7}.
    for (opt, hex) in [
        (libc::SO_RCVTIMEO, "030000000000000020a1070000000000"),
        (libc::SO_SNDTIMEO, "04000000000000000000000000000000"),
        (libc::SO_LINGER, "0100000007000000"),
    ] {
        let option = format!("{} {opt}", libc::SOL_SOCKET);
        assert_eq!(w.cmd(&format!("setopt-raw {s} {option} {hex}")), "ok");
        read.push(format!(
            "{opt}: {}",
            w.cmd(&format!("getopt-raw {s} {option} 16"))
        ));
    }
    read
}

/// What socket `s` reads for each option [`set_socket_level`] set.
fn socket_level(w: &Workload, s: &str) -> Vec<String> {
    let mut read: Vec<String> = SOCKET_LEVEL
        .iter()
        .map(|&(level, opt, _)| format!("{opt}: {}", w.cmd(&format!("getopt {s} {level} {opt}"))))
        .collect();
    for opt in [libc::SO_RCVTIMEO, libc::SO_SNDTIMEO, libc::SO_LINGER] {
        let option = format!("{} {opt}", libc::SOL_SOCKET);
        read.push(format!(
            "{opt}: {}",
            w.cmd(&format!("getopt-raw {s} {option} 16"))
        ));
    }
    read
}

/// Every socket-level option of unix sockets of each type (both ends of a pair, a listener)
/// and of a UDP socket and a TCP listener comes back as the process set it, checked from
/// inside; after a `--leave-running` dump the original reads the same. Before: every one of
/// them read as a fresh socket's on the unix sockets (zdtm sock_opts00: SO_PASSSEC), and the
/// UDP socket lost SO_RCVTIMEO, SO_SNDTIMEO, SO_KEEPALIVE, SO_OOBINLINE.
#[test]
fn socket_level_options_of_every_kind_of_socket_come_back_as_set() {
    cryo_bin();
    let mut w = Workload::spawn("socks", &[]);
    let mut sockets = Vec::new();
    for ty in ["stream", "dgram", "seqpacket"] {
        let (a, b) = pair(&w, ty);
        sockets.push((format!("unix {ty}"), a));
        sockets.push((format!("unix {ty} peer"), b));
    }
    let l = w.cmd("socket unix stream 0");
    assert_eq!(
        w.cmd(&format!("bind-unix {l} @cryo-sockopts-{}", w.pid())),
        "ok"
    );
    assert_eq!(w.cmd(&format!("listen {l}")), "ok");
    sockets.push(("unix listener".into(), l));
    let udp = w.cmd("socket inet dgram 17");
    assert_eq!(w.cmd(&format!("bind-inet {udp} 127.0.0.1:0")), "ok");
    sockets.push(("udp".into(), udp));
    let tcp = w.cmd("socket inet stream 6");
    assert_eq!(w.cmd(&format!("bind-inet {tcp} 127.0.0.1:0")), "ok");
    assert_eq!(w.cmd(&format!("listen {tcp}")), "ok");
    sockets.push(("tcp listener".into(), tcp));
    let set: Vec<(String, Vec<String>)> = sockets
        .iter()
        .map(|(what, s)| (what.clone(), set_socket_level(&w, s)))
        .collect();
    let unix_stream = &set[0].1;
    assert!(
        unix_stream.contains(&"34: 1".to_string()) && unix_stream.contains(&"83: 0".to_string()),
        "SO_PASSSEC on, SO_PASSRIGHTS off: {unix_stream:?}"
    );
    let img = w.path("img-left");
    w.dump(&img, &["--leave-running"]).assert_success();
    for ((what, s), (_, before)) in sockets.iter().zip(&set) {
        assert_eq!(&socket_level(&w, s), before, "{what}: left running");
    }
    w.dump_and_restore();
    for ((what, s), (_, before)) in sockets.iter().zip(&set) {
        assert_eq!(&socket_level(&w, s), before, "{what}: restored");
    }
    w.kill_restored();
}

/// A server (root, its listen() issued as euid 3000) and its child client (uid 1000, gid
/// 1000, groups 1000 and 2000) connected through a listener on `name`: what each restored
/// end shows as its peer (SO_PEERCRED, SO_PEERGROUPS) is what it showed at dump: the server's
/// accepted end its client's connect(), the client's end the server's listen(), the listener
/// its own listen(); and both ends of a socketpair the server made as euid 4000.
fn peers_of_a_server_and_its_client(name: &str) {
    cryo_bin();
    let mut w = Workload::spawn("unix-peers", &[name, "1000", "1000", "1000,2000", "3000"]);
    let (kid, server) = (w.cmd("kid"), w.pid());
    assert_eq!(w.cmd("pair-as 4000"), "ok");
    let ask = |w: &Workload| {
        [
            "peercred",
            "kid-peercred",
            "listener-peercred",
            "pair-peercred",
        ]
        .map(|q| format!("{q}: {}", w.cmd(q)))
    };
    let before = ask(&w);
    let listener = format!("pid {server} uid 3000 gid 3000 groups ");
    assert_eq!(
        before[0],
        format!("peercred: pid {kid} uid 1000 gid 1000 groups 1000,2000")
    );
    assert!(
        before[1].starts_with(&format!("kid-peercred: {listener}")),
        "{before:?}"
    );
    assert!(
        before[2].starts_with(&format!("listener-peercred: {listener}")),
        "{before:?}"
    );
    let made = format!("pair-peercred: pid {server} uid 4000 gid 4000 groups ");
    assert!(before[3].starts_with(&made), "{before:?}");
    w.dump_and_restore();
    assert_eq!(ask(&w), before, "after the restore");
    w.kill_restored();
}

/// A directory the workload's child, of another uid, can reach a socket file in.
fn reachable_by_other_uids() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o711),
    )
    .unwrap();
    dir
}

/// A listener bound to a path: the accepted connection is restored as a pair of its own.
/// Before 2026-12-07 every end showed the server with uid 0 and no groups after the restore.
#[test]
fn a_server_and_its_client_of_other_uids_keep_their_peer_credentials() {
    let dir = reachable_by_other_uids();
    let path = dir.path().join("peers.sock");
    peers_of_a_server_and_its_client(path.to_str().unwrap());
}

/// The same through a listener bound to an abstract name (the accepted end shares it: made
/// by an accept from the restored listener).
#[test]
fn a_server_and_its_client_on_an_abstract_name_keep_their_peer_credentials() {
    let name = format!(
        "@cryo-peers-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    );
    peers_of_a_server_and_its_client(&name.replace(['(', ')'], ""));
}

/// A connection a child client (uid 1000, gid 1000, groups 1000 and 2000) made to its
/// server's listener, still waiting in the accept queue at the dump, its client having sent
/// nothing: once the restored server accepts it, the accepted end shows the child's pid and
/// ids as its peer, as it would have before the dump (the killing dump accepts it on a
/// duplicate and reads them; the restore's connect is issued by a stand-in with the child's
/// pid). Before: the server's pid with uid 0 (`"pid <server> uid 0 gid 0 groups "`).
#[test]
fn a_waiting_connection_of_a_child_of_another_uid_shows_it_once_accepted() {
    waiting_connection_shows_its_client("silent");
}

/// The same with what the child sent before being accepted: read after the accept.
#[test]
fn a_waiting_connection_with_data_of_a_child_of_another_uid_shows_it_once_accepted() {
    waiting_connection_shows_its_client("sent");
}

/// The same through a seqpacket listener.
#[test]
fn a_waiting_seqpacket_connection_with_data_of_a_child_of_another_uid_shows_it_once_accepted() {
    waiting_connection_shows_its_client("sent-seqpacket");
}

/// The same whose client sent data, then exited (reaped, its end closed): the accepted end
/// shows the gone child's pid and ids (the restore's transient client connects from a
/// stand-in with that pid), reads what was sent, then end of file.
#[test]
fn a_waiting_connection_whose_child_client_is_gone_shows_it_once_accepted() {
    waiting_connection_shows_its_client("gone");
}

/// The unix-peers child connects to its server as uid 1000 and is left waiting in the accept
/// queue (`wait`: silent, sent, sent-seqpacket, gone); after the restore the server accepts it and reads its
/// peer credentials.
fn waiting_connection_shows_its_client(wait: &str) {
    cryo_bin();
    let dir = reachable_by_other_uids();
    let path = dir.path().join("waiting.sock");
    let name = path.to_str().unwrap();
    let mut w = Workload::spawn(
        "unix-peers",
        &[name, "1000", "1000", "1000,2000", "3000", wait],
    );
    let (kid, server) = (w.cmd("kid"), w.pid());
    w.dump_and_restore();
    assert_eq!(w.cmd("accept"), "ok");
    assert_eq!(
        w.cmd("peercred"),
        format!("pid {kid} uid 1000 gid 1000 groups 1000,2000"),
        "the accepted end's peer: the child that connected"
    );
    match wait {
        "silent" => {
            let kid_sees = w.cmd("kid-peercred");
            assert!(
                kid_sees.starts_with(&format!("pid {server} uid 3000 gid 3000 groups ")),
                "the child's end still shows the listen() caller: {kid_sees}"
            );
        }
        "sent" | "sent-seqpacket" => assert_eq!(w.cmd("recv-creds"), "early none"),
        _ => assert_eq!(w.cmd("recv-creds"), "bye none"),
    }
    w.kill_restored();
}

/// A message the child (uid 1000) wrote to its parent, unread at the dump in a queue whose
/// reader has SO_PASSCRED, comes back with its SCM_CREDENTIALS: the child's pid, uid and gid
/// (sent at restore by a stand-in with the child's pid, before the child is made). Before
/// 2026-12-07 it read the parent's pid.
#[test]
fn a_message_queued_by_a_child_keeps_its_credentials() {
    queued_by_the_child_keeps_its_credentials("kid-queues", "hello");
}

/// A message a child queued on its parent's connection before it exited (reaped since, its
/// end closed), unread, keeps the child's credentials: a stand-in with the gone child's pid
/// sends it at restore. Before 2026-12-07 it read the parent's pid (the kernel refused the
/// dead pid, ESRCH, and the refill sent it as the refilling process, with a warning).
#[test]
fn a_message_queued_by_a_child_gone_since_keeps_its_credentials() {
    queued_by_the_child_keeps_its_credentials("kid-queues-and-exits", "bye");
}

/// The unix-peers child (uid and gid 1000) queues `text` on its connection to the parent
/// (SO_PASSCRED on) by `verb`; after the restore the parent reads it with the child's
/// credentials.
fn queued_by_the_child_keeps_its_credentials(verb: &str, text: &str) {
    cryo_bin();
    let dir = reachable_by_other_uids();
    let path = dir.path().join("creds.sock");
    let name = path.to_str().unwrap();
    let mut w = Workload::spawn("unix-peers", &[name, "1000", "1000", "1000", "0"]);
    let kid = w.cmd("kid");
    assert_eq!(w.cmd("passcred"), "ok");
    assert_eq!(w.cmd(&format!("{verb} {text}")), "ok");
    w.dump_and_restore();
    assert_eq!(
        w.cmd("recv-creds"),
        format!("{text} pid {kid} uid 1000 gid 1000"),
        "the queued message's credentials after the restore"
    );
    w.kill_restored();
}

/// A socketpair made by a child of another uid and gid that passed both ends to its parent and
/// exited (reaped: its pid free), as zdtm sock_peercred's: both ends still show the child's
/// pid, uid and gid after the restore (a stand-in with the gone pid makes the pair), and after
/// a `--leave-running` dump in the original. Before 2026-12-07 they showed the restored
/// process's pid and uid 0.
#[test]
fn a_socketpair_whose_maker_is_gone_keeps_its_makers_credentials() {
    cryo_bin();
    let dir = reachable_by_other_uids();
    let path = dir.path().join("gone-pair.sock");
    let name = path.to_str().unwrap();
    let mut w = Workload::spawn("unix-peers", &[name, "1000", "1000", "1000", "0"]);
    let maker = w.cmd("pair-by-gone 1001 1002");
    let want = format!("pid {maker} uid 1001 gid 1002 groups ");
    let want = format!("{want} | {want}");
    assert_eq!(w.cmd("pair-peercred"), want);
    let img = w.path("left");
    w.dump(&img, &["--leave-running"]).assert_success();
    assert_eq!(
        w.cmd("pair-peercred"),
        want,
        "the original after --leave-running"
    );
    w.kill_original();
    w.restore_background(&img);
    assert_eq!(w.cmd("pair-peercred"), want, "restored");
    w.kill_restored();
}

/// Two datagram sockets bound to paths and connected to each other by name show no peer
/// (SO_PEERCRED pid 0: connect() stamps none on a datagram socket) and still exchange
/// datagrams after the restore. Before 2026-12-07 they came back as a socketpair, showing the
/// restored process as their peer.
#[test]
fn dgram_sockets_connected_to_each_other_by_name_still_show_no_peer() {
    cryo_bin();
    let mut w = Workload::spawn("socks", &[]);
    let (pa, pb) = (w.path("a.sock"), w.path("b.sock"));
    let a = w.cmd("socket unix dgram 0");
    let b = w.cmd("socket unix dgram 0");
    assert_eq!(w.cmd(&format!("bind-unix {a} {}", pa.display())), "ok");
    assert_eq!(w.cmd(&format!("bind-unix {b} {}", pb.display())), "ok");
    assert_eq!(w.cmd(&format!("connect-unix {a} {}", pb.display())), "ok");
    assert_eq!(w.cmd(&format!("connect-unix {b} {}", pa.display())), "ok");
    // SOL_SOCKET 1, SO_PEERCRED 17: its first int is the pid.
    let peers = |w: &Workload| [&a, &b].map(|fd| w.cmd(&format!("getopt {fd} 1 17")));
    assert_eq!(peers(&w), ["0", "0"]);
    w.dump_and_restore();
    assert_eq!(peers(&w), ["0", "0"], "SO_PEERCRED's pid after the restore");
    assert_eq!(w.cmd(&format!("send {a} one")), "ok");
    assert_eq!(w.cmd(&format!("recv-wait {b}")), "one");
    assert_eq!(w.cmd(&format!("send {b} two")), "ok");
    assert_eq!(w.cmd(&format!("recv-wait {a}")), "two");
    w.kill_restored();
}
