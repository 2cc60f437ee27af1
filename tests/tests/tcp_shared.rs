//! TCP sockets held by several processes of a dump (a listener and a connection inherited
//! across fork) and every option an application sets on a connection or a listener, read
//! with getsockopt from inside the restored process (and from inside the original after
//! `--leave-running`). The workload (`tcp` mode) is the server, the test the client.
//!
//! Needs the engine: `cryo` must be built (`cargo build -p cryo`).

use std::io::Write;
use std::net::TcpStream;

use cryo_tests::protocol::{len_and_checksum, pattern};
use cryo_tests::tcp_peer::{connect, lock_of, read_exactly};
use cryo_tests::{cryo_bin, Workload};

/// `n` bytes (pattern `seed`) sent on `client`, echoed by `who` (`""` the workload, `"kid "`
/// its child) through its connection `i`, and read back whole.
#[track_caller]
fn echo(w: &Workload, who: &str, i: usize, client: &mut TcpStream, n: usize, seed: u64) {
    let data = pattern(n, seed);
    client.write_all(&data).unwrap();
    assert_eq!(
        w.cmd(&format!("{who}echo {i} {n}")),
        len_and_checksum(&data),
        "{who}connection {i}"
    );
    assert!(
        read_exactly(client, n) == data,
        "{who}connection {i}: echo damaged"
    );
}

fn installed(id: &str) -> bool {
    cryo_netns::installed_locks()
        .expect("list locks")
        .iter()
        .any(|l| l == id)
}

#[test]
fn a_listener_and_a_connection_held_by_parent_and_child_come_back_as_one() {
    cryo_bin();
    let mut w = Workload::spawn("tcp", &["127.0.0.1:0"]);
    let mut shared = connect(&w, "127.0.0.1");
    assert_eq!(w.cmd("accept"), "0");
    let kid: i32 = w.cmd("fork").parse().expect("child pid");
    // Accepted by the child alone, from the listener both hold.
    let mut own = connect(&w, "127.0.0.1");
    assert_eq!(w.cmd("kid accept"), "1");
    echo(&w, "", 0, &mut shared, 1000, 1);
    echo(&w, "kid ", 0, &mut shared, 1000, 2);
    echo(&w, "kid ", 1, &mut own, 1000, 3);
    // What each process sees on the shared connection and listener.
    let opts = [w.cmd("opts 0"), w.cmd("opts listener")];
    let kid_opts = w.cmd("kid opts 1");

    let img = w.path("img");
    let out = w.dump(&img, &["--tcp-established"]);
    out.assert_success();
    w.wait_original();
    let lock = lock_of(&w, &img).expect("one network lock for the dump");
    assert!(installed(&lock), "lock {lock} not installed after the dump");

    w.restore_background(&img);
    assert!(cryo_tests::pid_exists(kid), "the child was not restored");
    // Before new traffic: the kernel recomputes a connection's window clamp as segments
    // arrive (its receive scaling ratio), on the original as on the restored one.
    assert_eq!([w.cmd("opts 0"), w.cmd("opts listener")], opts);
    assert_eq!(w.cmd("kid opts 1"), kid_opts);
    // The shared connection works from both processes, in turn.
    echo(&w, "", 0, &mut shared, 20_000, 4);
    echo(&w, "kid ", 0, &mut shared, 20_000, 5);
    echo(&w, "kid ", 1, &mut own, 20_000, 6);
    assert!(
        !installed(&lock),
        "lock {lock} still installed after restore"
    );
    // Both still accept on the listener they share.
    let _a = connect(&w, "127.0.0.1");
    assert_eq!(w.cmd("accept"), "1");
    let _b = connect(&w, "127.0.0.1");
    assert_eq!(w.cmd("kid accept"), "2");
    w.kill_restored();
}

#[test]
fn leave_running_with_a_connection_held_by_two_processes_changes_nothing() {
    cryo_bin();
    let mut w = Workload::spawn("tcp", &["127.0.0.1:0"]);
    let mut shared = connect(&w, "127.0.0.1");
    assert_eq!(w.cmd("accept"), "0");
    w.cmd("fork");
    let before = [w.cmd("opts 0"), w.cmd("kid opts 0"), w.cmd("opts listener")];
    let img = w.path("img");
    w.dump(&img, &["--tcp-established", "--leave-running"])
        .assert_success();
    assert!(w.original_alive());
    assert_eq!(lock_of(&w, &img), None);
    let after = [w.cmd("opts 0"), w.cmd("kid opts 0"), w.cmd("opts listener")];
    assert_eq!(
        after, before,
        "--leave-running changed the sockets' options"
    );
    echo(&w, "", 0, &mut shared, 5000, 7);
    echo(&w, "kid ", 0, &mut shared, 5000, 8);
    w.kill_original();
}

/// Every option set on a connection (and the listener's own on the listener) reads the same
/// inside the restored process; the connection without options keeps the kernel's (its
/// buffers still autotuned: no lock bits).
fn options_come_back(listen: &str, ip: &str) {
    cryo_bin();
    let mut w = Workload::spawn("tcp", &[listen]);
    let mut plain = connect(&w, ip);
    assert_eq!(w.cmd("accept"), "0");
    let mut tuned = connect(&w, ip);
    assert_eq!(w.cmd("accept"), "1");
    assert_eq!(w.cmd("setopts 1"), "ok");
    assert_eq!(w.cmd("setopts listener"), "ok");
    let before = [w.cmd("opts 0"), w.cmd("opts 1"), w.cmd("opts listener")];
    w.dump_and_restore_established();
    let after = [w.cmd("opts 0"), w.cmd("opts 1"), w.cmd("opts listener")];
    for (b, a) in before.iter().zip(&after) {
        let differ: Vec<(&str, &str)> = b
            .split(' ')
            .zip(a.split(' '))
            .filter(|(x, y)| x != y)
            .collect();
        assert!(
            differ.is_empty(),
            "options differ (before, after): {differ:?}"
        );
    }
    echo(&w, "", 0, &mut plain, 10_000, 1);
    echo(&w, "", 1, &mut tuned, 10_000, 2);
    w.kill_restored();
}

#[test]
fn every_option_of_an_ipv4_connection_and_listener_comes_back() {
    options_come_back("127.0.0.1:0", "127.0.0.1");
}

#[test]
fn every_option_of_an_ipv6_connection_and_listener_comes_back() {
    options_come_back("[::1]:0", "::1");
}

#[test]
fn leave_running_leaves_every_option_as_it_was() {
    cryo_bin();
    let mut w = Workload::spawn("tcp", &["127.0.0.1:0"]);
    let mut plain = connect(&w, "127.0.0.1");
    assert_eq!(w.cmd("accept"), "0");
    let mut tuned = connect(&w, "127.0.0.1");
    assert_eq!(w.cmd("accept"), "1");
    assert_eq!(w.cmd("setopts 1"), "ok");
    let before = [w.cmd("opts 0"), w.cmd("opts 1"), w.cmd("opts listener")];
    let img = w.path("img");
    w.dump(&img, &["--tcp-established", "--leave-running"])
        .assert_success();
    let after = [w.cmd("opts 0"), w.cmd("opts 1"), w.cmd("opts listener")];
    assert_eq!(
        after, before,
        "--leave-running changed the sockets' options"
    );
    echo(&w, "", 0, &mut plain, 5000, 3);
    echo(&w, "", 1, &mut tuned, 5000, 4);
    w.kill_original();
}
