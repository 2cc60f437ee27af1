//! Unix sockets: socketpairs (in one process, or split between a parent and its child) come
//! back connected with their unread data in both directions, seqpacket messages keep their
//! boundaries, and a socket whose peer is outside the dump is refused. What a queue carries
//! beyond bytes comes back too: descriptors in flight (SCM_RIGHTS) the receiver then uses,
//! credentials, shutdown state, and connections waiting in a listener's accept queue with
//! what their clients sent before being accepted.
//!
//! Needs the engine: `cryo` must be built (`cargo build -p cryo`).

use cryo_tests::{cryo_bin, Unmount, Workload};

/// Kills a process of the workload's that is no child of the test (the restored one's child).
struct Reaper(i32);

impl Drop for Reaper {
    fn drop(&mut self) {
        // SAFETY: kill takes plain integers.
        unsafe { libc::kill(self.0, libc::SIGKILL) };
    }
}

fn pair_round_trip(ty: &str) {
    cryo_bin();
    let mut w = Workload::spawn("unix-pair", &[ty]);
    // Unread both ways: 0 -> 1 twice, 1 -> 0 once.
    assert_eq!(w.cmd("send 0 one"), "ok");
    assert_eq!(w.cmd("send 0 two"), "ok");
    assert_eq!(w.cmd("send 1 back"), "ok");
    w.dump_and_restore();
    let boundaries = ty != "stream";
    let got1 = w.cmd("recv 1");
    if boundaries {
        assert_eq!(got1, "one|two", "messages and their boundaries");
    } else {
        assert_eq!(got1.replace('|', ""), "onetwo", "the stream's bytes");
    }
    assert_eq!(w.cmd("recv 0"), "back");
    assert_eq!(w.cmd("recv 0"), "empty", "nothing read twice");
    // Still connected to each other.
    assert_eq!(w.cmd("send 1 later"), "ok");
    assert_eq!(w.cmd("recv 0"), "later");
    assert_eq!(w.cmd("send 0 again"), "ok");
    assert_eq!(w.cmd("recv 1"), "again");
    w.kill_restored();
}

#[test]
fn a_stream_socketpair_in_one_process_keeps_its_data_both_ways() {
    pair_round_trip("stream");
}

#[test]
fn a_seqpacket_socketpair_keeps_message_boundaries() {
    pair_round_trip("seqpacket");
}

#[test]
fn a_dgram_socketpair_keeps_message_boundaries() {
    pair_round_trip("dgram");
}

#[test]
fn a_parent_and_its_child_talk_over_a_socketpair_across_restore() {
    cryo_bin();
    let mut w = Workload::spawn("unix-tree", &[]);
    let kid: i32 = w.cmd("kid").parse().unwrap();
    let _reaper = Reaper(kid);
    assert_eq!(w.cmd("push hello"), "ok");
    assert_eq!(w.cmd("recv-wait"), "got hello");
    // The child's next answer waits, unread, in the parent's end.
    assert_eq!(w.cmd("push unread"), "ok");
    assert_eq!(w.cmd("ready"), "ready");
    w.dump_and_restore();
    assert!(
        std::path::Path::new(&format!("/proc/{kid}")).exists(),
        "the child is back"
    );
    assert_eq!(w.cmd("recv"), "got unread", "the unread answer survived");
    assert_eq!(w.cmd("push after"), "ok");
    assert_eq!(
        w.cmd("recv-wait"),
        "got after",
        "parent and child still connected"
    );
    w.kill_restored();
}

#[test]
fn a_peer_outside_the_dump_is_refused() {
    cryo_bin();
    let dir = cryo_tests::control_dir();
    let path = dir.path().join("ext.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let w = Workload::spawn_in(dir, "unix-ext", &[path.to_str().unwrap()]);
    let (_peer, _) = listener.accept().unwrap();
    assert_eq!(w.cmd("ping"), "pong");
    use std::os::unix::fs::MetadataExt;
    let ino = std::fs::metadata(format!("/proc/{}/fd/50", w.pid()))
        .unwrap()
        .ino();
    let img = w.path("img");
    let out = w.dump(&img, &[]);
    out.assert_refused()
        .assert_stderr_has_word(&w.pid().to_string())
        .assert_stderr_mentions("fd 50")
        .assert_stderr_mentions(&format!("socket:[{ino}]"))
        .assert_stderr_mentions("no dumped process holds");
    w.assert_untouched();
    assert_eq!(w.cmd("ping"), "pong");
}

fn listener_round_trip(name: &str, connect: impl Fn() -> std::os::unix::net::UnixStream) {
    let mut w = Workload::spawn("unix-listen", &[name]);
    assert_eq!(w.cmd("ping"), "pong");
    w.dump_and_restore();
    let mut c = connect();
    std::io::Write::write_all(&mut c, b"hi").unwrap();
    assert_eq!(w.cmd("accept"), "got hi", "listening again on its name");
    w.kill_restored();
}

#[test]
fn a_listener_bound_to_a_path_listens_again() {
    cryo_bin();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.sock");
    let p = path.clone();
    listener_round_trip(path.to_str().unwrap(), move || {
        std::os::unix::net::UnixStream::connect(&p).unwrap()
    });
}

/// A listener whose socket file is on a mount made read-only since (a bind remount): a restore
/// binds it again, making its socket file, which the mount refuses: refused at dump, naming
/// the name and the mount, and the process runs on.
#[test]
fn a_listener_bound_on_a_read_only_mount_is_refused() {
    use nix::mount::{mount, MsFlags};
    cryo_bin();
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("m");
    std::fs::create_dir(&m).unwrap();
    mount(
        Some("tmpfs"),
        &m,
        Some("tmpfs"),
        MsFlags::empty(),
        Some("size=1m"),
    )
    .unwrap();
    let _unmount = Unmount(m.clone());
    let path = m.join("l.sock");
    let w = Workload::spawn("unix-listen", &[path.to_str().unwrap()]);
    assert_eq!(w.cmd("ping"), "pong");
    let ro = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY;
    mount(None::<&str>, &m, None::<&str>, ro, None::<&str>).unwrap();
    let out = w.dump(&w.path("img"), &[]);
    out.assert_refused()
        .assert_stderr_mentions("fd 50")
        .assert_stderr_mentions(&format!(
            "bound to {}, on a read-only mount",
            path.display()
        ));
    w.assert_untouched();
    assert_eq!(w.cmd("ping"), "pong");
}

#[test]
fn a_listener_bound_to_an_abstract_name_listens_again() {
    use std::os::linux::net::SocketAddrExt;
    cryo_bin();
    let name = format!("cryo-test-{}", std::process::id());
    let n = name.clone();
    listener_round_trip(&format!("@{name}"), move || {
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(&n).unwrap();
        std::os::unix::net::UnixStream::connect_addr(&addr).unwrap()
    });
}

#[test]
fn a_pair_a_pipe_and_a_file_shared_by_two_trees_dumped_together_stay_shared() {
    cryo_bin();
    let mut w = Workload::spawn("unix-split", &[]);
    let d: i32 = w.cmd("kid").parse().unwrap();
    let _reaper = Reaper(d);
    let ppid = cryo_tests::status_field(d, "PPid").unwrap();
    assert_ne!(ppid, w.pid().to_string(), "D is not in the root's tree");
    // The pair's maker (socketpair in the root) is each end's peer.
    assert_eq!(w.cmd("peer-pid"), w.pid().to_string());
    // Unread both ways: D's hello waits at the root, the root's message waits at D.
    assert_eq!(w.cmd("push one"), "ok");
    let both = format!("{},{d}", w.pid());
    let img = w.path("img");
    w.cryo(&["dump", "-t", &both, "-D", img.to_str().unwrap()])
        .assert_success();
    w.wait_original();
    let gone = cryo_tests::Pidfd::open(d).map_or(true, |p| p.wait_exit(cryo_tests::CMD_TIMEOUT));
    assert!(gone, "the dump killed D too");
    w.restore_background(&img);
    assert!(cryo_tests::pid_exists(d), "D is back with its pid");
    // Made by cryo for the two trees, by a stand-in with the root's pid (before 2026-12-07:
    // cryo's own pid, gone once the restore ended).
    assert_eq!(
        w.cmd("peer-pid"),
        w.pid().to_string(),
        "SO_PEERCRED of the root's end after the restore"
    );
    assert_eq!(w.cmd("recv"), "hello-from-D", "D's unread hello survived");
    // SAFETY: kill takes plain integers.
    assert_eq!(unsafe { libc::kill(d, libc::SIGUSR1) }, 0);
    assert_eq!(
        w.cmd("recv-wait"),
        "got one",
        "the root's unread message reached D"
    );
    // The pipe and the file the two trees share came back shared.
    assert_eq!(w.cmd("pipe-read"), "p", "D writes into the root's pipe");
    assert_eq!(
        w.cmd("file-pos"),
        "1",
        "D's read moved the root's offset: one file"
    );
    assert_eq!(w.cmd("push two"), "ok");
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(d, libc::SIGUSR1) }, 0);
    assert_eq!(w.cmd("recv-wait"), "got two", "still connected");
    assert_eq!(w.cmd("pipe-read"), "p");
    assert_eq!(w.cmd("file-pos"), "2");
    assert_eq!(w.cmd("recv"), "empty", "nothing read twice");
    w.kill_restored();
}

/// The workload's pid as its replies print it.
fn pid_of(w: &Workload) -> String {
    w.pid().to_string()
}

#[test]
fn a_pipe_a_file_and_a_socket_in_flight_come_back_usable() {
    cryo_bin();
    let mut w = Workload::spawn("unix-pair", &["stream"]);
    let file = w.path("passed.txt");
    cryo_tests::write_file(&file, b"0123456789");
    let items = format!("pipe:piped file:{}:3 sock:inner", file.display());
    assert_eq!(w.cmd(&format!("pass 0 {items}")), "ok");
    w.dump_and_restore();
    assert_eq!(
        w.cmd("take 1"),
        "fds pipe:piped file:3:3456789 sock:inner",
        "each descriptor received with its data, the file at its offset"
    );
    // The pipe in flight is the one whose write end the workload kept.
    assert_eq!(w.cmd("pipe-write more"), "ok");
    assert_eq!(w.cmd("pipe-read"), "more");
    // The socket in flight is still connected to the end the workload kept.
    assert_eq!(w.cmd("sock-send hello"), "ok");
    assert_eq!(w.cmd("sock-recv"), "hello");
    assert_eq!(w.cmd("recv 1"), "empty", "nothing read twice");
    w.kill_restored();
}

#[test]
fn a_pipe_in_flight_to_a_dgram_socket_whose_sender_closed_comes_back_usable() {
    cryo_bin();
    let mut w = Workload::spawn("unix-pair", &["dgram"]);
    assert_eq!(w.cmd("pass 0 pipe:piped"), "ok");
    assert_eq!(w.cmd("close 0"), "ok");
    w.dump_and_restore();
    assert_eq!(
        w.cmd("take 1"),
        "fds pipe:piped",
        "the pipe with its message"
    );
    assert_eq!(w.cmd("pipe-write more"), "ok");
    assert_eq!(w.cmd("pipe-read"), "more");
    w.kill_restored();
}

fn descriptor_between_messages(ty: &str) {
    cryo_bin();
    let mut w = Workload::spawn("unix-pair", &[ty]);
    assert_eq!(w.cmd("send 0 first"), "ok");
    assert_eq!(w.cmd("pass 0 pipe:x"), "ok");
    assert_eq!(w.cmd("send 0 last"), "ok");
    w.dump_and_restore();
    assert_eq!(w.cmd("take 1"), "first", "no descriptor before its message");
    assert_eq!(
        w.cmd("take 1"),
        "fds pipe:x",
        "the descriptor with its message"
    );
    assert_eq!(w.cmd("take 1"), "last");
    w.kill_restored();
}

#[test]
fn a_descriptor_in_flight_keeps_its_message_in_a_seqpacket_queue() {
    descriptor_between_messages("seqpacket");
}

#[test]
fn a_descriptor_in_flight_keeps_its_message_in_a_dgram_queue() {
    descriptor_between_messages("dgram");
}

#[test]
fn credentials_stay_with_their_messages() {
    cryo_bin();
    let mut w = Workload::spawn("unix-pair", &["dgram"]);
    // Sent while neither end asked for credentials: none.
    assert_eq!(w.cmd("send 0 plain"), "ok");
    // The receiver asks: the kernel attaches the sender's.
    assert_eq!(w.cmd("passcred 1"), "ok");
    assert_eq!(w.cmd("send 0 auto"), "ok");
    // Explicit ones, other than the sender's own uid and gid.
    assert_eq!(w.cmd("send-creds 0 explicit 1234 5678"), "ok");
    w.dump_and_restore();
    let pid = pid_of(&w);
    assert_eq!(w.cmd("recv-creds 1"), "plain none");
    assert_eq!(w.cmd("recv-creds 1"), format!("auto {pid} 0 0"));
    assert_eq!(w.cmd("recv-creds 1"), format!("explicit {pid} 1234 5678"));
    assert_eq!(w.cmd("recv-creds 1"), "empty");
    w.kill_restored();
}

/// Credentials naming a process outside the dump that is gone by the restore keep its pid:
/// a stand-in with that pid sends the message. Before 2026-12-07 the kernel refused the dead
/// pid (ESRCH) and the restored process's own was sent instead, with a warning.
#[test]
fn credentials_naming_a_process_gone_at_restore_keep_its_pid() {
    cryo_bin();
    let mut w = Workload::spawn("unix-pair", &["dgram"]);
    let mut other = std::process::Command::new("sleep")
        .arg("1000")
        .spawn()
        .unwrap();
    let gone = other.id();
    assert_eq!(w.cmd(&format!("send-creds 0 other 1234 5678 {gone}")), "ok");
    let img = w.path("img");
    w.dump_ok(&img);
    other.kill().unwrap();
    other.wait().unwrap();
    w.restore_background(&img);
    assert_eq!(w.cmd("recv-creds 1"), format!("other {gone} 1234 5678"));
    w.kill_restored();
}

#[test]
fn a_pair_shut_for_writing_on_one_end_stays_shut() {
    cryo_bin();
    let mut w = Workload::spawn("unix-pair", &["stream"]);
    assert_eq!(w.cmd("send 0 last-words"), "ok");
    assert_eq!(w.cmd("shut 0"), "ok");
    w.dump_and_restore();
    assert_eq!(
        w.cmd("recv 1"),
        "last-words|<eof>",
        "the reader gets the data, then end of file"
    );
    let refused = w.cmd("send-nosig 0 more");
    assert!(
        refused.contains("os error 32"),
        "the shut end cannot write (EPIPE): {refused}"
    );
    // The other direction still works.
    assert_eq!(w.cmd("send 1 back"), "ok");
    assert_eq!(w.cmd("recv 0"), "back");
    w.kill_restored();
}

#[test]
fn a_connection_waiting_in_a_listeners_accept_queue_comes_back_with_what_it_sent() {
    cryo_bin();
    let dir = cryo_tests::control_dir();
    let path = dir.path().join("l.sock");
    let mut w = Workload::spawn_in(dir, "unix-listen", &[path.to_str().unwrap()]);
    assert_eq!(w.cmd("connect early"), "ok");
    w.dump_and_restore();
    assert_eq!(
        w.cmd("accept-keep"),
        "got early",
        "the waiting connection, with what its client sent before accept"
    );
    assert_eq!(w.cmd("say client ping"), "ok");
    assert_eq!(w.cmd("hear conn"), "ping");
    assert_eq!(w.cmd("say conn pong"), "ok");
    assert_eq!(w.cmd("hear client"), "pong");
    // And the listener takes new clients at its path.
    let mut c = std::os::unix::net::UnixStream::connect(&path).unwrap();
    std::io::Write::write_all(&mut c, b"hi").unwrap();
    assert_eq!(w.cmd("accept"), "got hi");
    w.kill_restored();
}

/// The same with the listener and the client held by a child too (forked after listen and
/// connect): the queue is taken once for both holders. Before 2026-12-07 the killing dump
/// took the connection through the parent's listener, found the queue empty through the
/// child's and was refused ("left the accept queue during the dump"), the waiting connection
/// gone from the running original.
#[test]
fn a_waiting_connection_of_a_listener_a_child_holds_too_comes_back_with_what_it_sent() {
    cryo_bin();
    let dir = cryo_tests::control_dir();
    let path = dir.path().join("l.sock");
    let mut w = Workload::spawn_in(dir, "unix-listen", &[path.to_str().unwrap()]);
    assert_eq!(w.cmd("connect early"), "ok");
    let holder: i32 = w.cmd("fork-holder").parse().unwrap();
    assert!(holder > 0);
    w.dump_and_restore();
    assert!(
        std::path::Path::new(&format!("/proc/{holder}")).exists(),
        "the child holding the listener too is back"
    );
    assert_eq!(
        w.cmd("accept-keep"),
        "got early",
        "the waiting connection, with what its client sent before accept"
    );
    assert_eq!(w.cmd("say client ping"), "ok");
    assert_eq!(w.cmd("hear conn"), "ping");
    w.kill_restored();
}

/// A connection waiting in the accept queue whose client sent data and closed (zdtm
/// sk-unix-listen02..04, which CRIU refuses): it comes back in its place in the queue, the
/// accept reading what was sent, then end of file; the connection behind it still has its
/// live client. Before: refused ("sock_diag query of a waiting client: ... inode 0").
#[test]
fn a_waiting_connection_whose_client_closed_comes_back_with_its_data_and_end_of_file() {
    waiting_connection_whose_client_closed(false);
}

/// The same in a network namespace of its own (zdtm's ns flavour): the accepted connections
/// are told apart by a sock_diag of that namespace. Before: refused after taking the waiting
/// connections ("accept() returned the connection of socket:[0] where the accept queue named
/// ..."), which left the process without them.
#[test]
fn a_waiting_connection_whose_client_closed_in_a_network_namespace_comes_back() {
    waiting_connection_whose_client_closed(true);
}

/// A unix listener (in a network namespace of its own when `own_netns`) with a waiting
/// connection whose client closed, then one whose client is still there: both come back in
/// order, the first read to its end.
fn waiting_connection_whose_client_closed(own_netns: bool) {
    use std::os::unix::process::CommandExt;
    cryo_bin();
    let dir = cryo_tests::control_dir();
    let path = dir.path().join("l.sock");
    let mut w = Workload::spawn_configured(dir, "unix-listen", &[path.to_str().unwrap()], |c| {
        if own_netns {
            // SAFETY: unshare is async-signal-safe; nothing else runs between fork and exec.
            unsafe {
                c.pre_exec(|| {
                    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                        .map_err(std::io::Error::from)
                });
            }
        }
    });
    let ns = |pid: i32| std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
    assert_eq!(ns(w.pid()) != ns(std::process::id() as i32), own_netns);
    assert_eq!(w.cmd("connect gone-before"), "ok");
    assert_eq!(w.cmd("close-client"), "ok");
    assert_eq!(w.cmd("connect still-here"), "ok");
    w.dump_and_restore();
    assert_eq!(w.cmd("accept-drain"), "got gone-before|eof");
    assert_eq!(w.cmd("accept-keep"), "got still-here");
    assert_eq!(w.cmd("say client ping"), "ok");
    assert_eq!(w.cmd("hear conn"), "ping");
    w.kill_restored();
}

/// The same left running: what the closed client sent is seen only by accept(), so the dump
/// refuses, as a temporary state, and the connection still waits with its data.
#[test]
fn a_waiting_connection_whose_client_closed_is_refused_by_a_dump_that_leaves_it_running() {
    cryo_bin();
    let dir = cryo_tests::control_dir();
    let path = dir.path().join("l.sock");
    let w = Workload::spawn_in(dir, "unix-listen", &[path.to_str().unwrap()]);
    assert_eq!(w.cmd("connect gone-before"), "ok");
    assert_eq!(w.cmd("close-client"), "ok");
    w.dump(&w.path("img"), &["--leave-running"])
        .assert_refused()
        .assert_stderr_mentions("closed since")
        .assert_stderr_mentions("retry");
    w.assert_untouched();
    assert_eq!(w.cmd("accept-drain"), "got gone-before|eof");
}

#[test]
fn a_waiting_connection_with_data_is_refused_by_a_dump_that_leaves_it_running() {
    cryo_bin();
    let dir = cryo_tests::control_dir();
    let path = dir.path().join("l.sock");
    let w = Workload::spawn_in(dir, "unix-listen", &[path.to_str().unwrap()]);
    assert_eq!(w.cmd("connect early"), "ok");
    let img = w.path("img");
    w.dump(&img, &["--leave-running"])
        .assert_refused()
        .assert_stderr_mentions("accept queue")
        .assert_stderr_mentions("retry");
    w.assert_untouched();
    assert_eq!(
        w.cmd("accept-keep"),
        "got early",
        "the connection still waits"
    );
}

/// A listener the process and its child hold, with a connection waiting from a client outside
/// the dump that sent data: the killing dump is refused (an external client), and the
/// running target still has the connection, with what was sent, and its client.
#[test]
fn a_refused_dump_of_a_shared_listener_leaves_its_waiting_connection_to_the_target() {
    cryo_bin();
    let dir = cryo_tests::control_dir();
    let path = dir.path().join("l.sock");
    let w = Workload::spawn_in(dir, "unix-listen", &[path.to_str().unwrap()]);
    let holder: i32 = w.cmd("fork-holder").parse().unwrap();
    let _reaper = Reaper(holder);
    let mut outside = std::os::unix::net::UnixStream::connect(&path).unwrap();
    std::io::Write::write_all(&mut outside, b"outside").unwrap();
    w.dump(&w.path("img"), &[])
        .assert_refused()
        .assert_stderr_mentions("external client");
    w.assert_untouched();
    assert_eq!(
        w.cmd("accept-keep"),
        "got outside",
        "the connection still waits, with what its client sent"
    );
    assert_eq!(w.cmd("say conn pong"), "ok");
    let mut got = [0u8; 4];
    std::io::Read::read_exact(&mut outside, &mut got).unwrap();
    assert_eq!(&got, b"pong", "its client is still connected");
}

#[test]
fn a_connection_accepted_from_a_listener_keeps_its_data_both_ways() {
    cryo_bin();
    let dir = cryo_tests::control_dir();
    let path = dir.path().join("l.sock");
    let mut w = Workload::spawn_in(dir, "unix-listen", &[path.to_str().unwrap()]);
    assert_eq!(w.cmd("connect hello"), "ok");
    assert_eq!(w.cmd("accept-keep"), "got hello");
    assert_eq!(w.cmd("say client to-conn"), "ok");
    assert_eq!(w.cmd("say conn to-client"), "ok");
    w.dump_and_restore();
    assert_eq!(w.cmd("hear conn"), "to-conn");
    assert_eq!(w.cmd("hear client"), "to-client");
    assert_eq!(w.cmd("say client again"), "ok");
    assert_eq!(w.cmd("hear conn"), "again");
    w.kill_restored();
}

#[test]
fn a_pipe_a_parent_passed_to_its_child_comes_back_in_flight() {
    cryo_bin();
    let mut w = Workload::spawn("unix-pass", &[]);
    let kid: i32 = w.cmd("kid").parse().unwrap();
    let _reaper = Reaper(kid);
    assert_eq!(w.cmd("pass pipe:for-the-child"), "ok");
    w.dump_and_restore();
    assert!(cryo_tests::pid_exists(kid), "the child is back");
    assert_eq!(
        w.cmd("ask"),
        "fds pipe:for-the-child",
        "the child receives the pipe its parent passed, with the data in it"
    );
    w.kill_restored();
}

/// A MSG_OOB byte not read yet in a unix stream socket's queue: a peek reads it as an
/// ordinary byte, restored it would be one. Refused, naming pid, fd and MSG_OOB, the queue
/// left as it was (the byte still out of band). Before: dumped, the byte came back inline
/// ("abcde" in one read where the process read "ab", then "de") and recv(MSG_OOB) EINVAL.
#[test]
fn a_unix_stream_msg_oob_byte_not_read_yet_is_refused_naming_it() {
    cryo_bin();
    let w = Workload::spawn("socks", &[]);
    let pair = w.cmd("pair stream");
    let (a, b) = pair.split_once(' ').unwrap();
    assert_eq!(w.cmd(&format!("send {a} ab")), "ok");
    assert_eq!(w.cmd(&format!("send-oob {a} c")), "ok");
    assert_eq!(w.cmd(&format!("send {a} de")), "ok");
    w.dump(&w.path("img"), &[])
        .assert_refused()
        .assert_stderr_has_word(&w.pid().to_string())
        .assert_stderr_mentions(&format!("fd {b}"))
        .assert_stderr_mentions("MSG_OOB");
    w.assert_untouched();
    assert_eq!(w.cmd(&format!("recv-oob {b}")), "c", "still out of band");
    assert_eq!(w.cmd(&format!("recv {b}")), "ab|de", "the bytes around it");
}

/// A unix datagram socket whose peer connected elsewhere, ECONNRESET pending (the kernel
/// purges the peer's queue and marks this one): refused, and the refusal leaves the error to
/// the process (recv: ECONNRESET). Before: the capture took it to peek the queue before the
/// refusal, so a refused killing dump left the process without it (recv: EAGAIN).
#[test]
fn a_refused_dump_leaves_a_datagram_sockets_pending_reset_to_the_process() {
    cryo_bin();
    let w = Workload::spawn("socks", &[]);
    let pair = w.cmd("pair dgram");
    let (a, b) = pair.split_once(' ').unwrap();
    let c = w.cmd("socket unix dgram 0");
    let at = w.path("c.sock");
    assert_eq!(w.cmd(&format!("bind-unix {c} {}", at.display())), "ok");
    assert_eq!(w.cmd(&format!("send {b} toA")), "ok");
    assert_eq!(w.cmd(&format!("connect-unix {a} {}", at.display())), "ok");
    w.dump(&w.path("img"), &[])
        .assert_refused()
        .assert_stderr_has_word(&w.pid().to_string())
        .assert_stderr_mentions("a pending socket error");
    w.assert_untouched();
    assert_eq!(
        w.cmd(&format!("recv {b}")),
        "<errno 104>",
        "ECONNRESET still pending"
    );
}
