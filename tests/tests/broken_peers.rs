//! Broken peers are signalled, not guessed: a server (`tcp` workload) is dumped with a client
//! connected and restored when that client is gone, silent, still there, or closed by policy;
//! a unix socket whose peer was outside the dump comes back broken. What the restored process
//! itself observes is checked: a thread blocked in read() on the old connection and how soon
//! it gets its error, the cryo-resume record it reads, the signal it gets.
//!
//! Every test uses its own ephemeral ports; the silent-peer test adds a network lock of its
//! own scoped to its connection.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use cryo_tests::protocol::{len_and_checksum, monotonic_ns};
use cryo_tests::tcp_peer::server_addr;
use cryo_tests::{cryo_bin, Workload};
use serde_json::Value;

/// How long a thread gets to reach its read() before the dump.
const SETTLE: Duration = Duration::from_secs(10);

/// A client connected to the workload's listener and accepted as connection `index`.
fn connect(w: &Workload, index: usize) -> TcpStream {
    let client = TcpStream::connect(server_addr(w, "127.0.0.1")).expect("connect");
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert_eq!(w.cmd("accept"), index.to_string());
    client
}

/// Bytes both ways over connection `index`: client -> server -> client.
#[track_caller]
fn echo(w: &Workload, client: &mut TcpStream, index: usize, what: &[u8]) {
    use std::io::{Read, Write};
    client.write_all(what).unwrap();
    assert_eq!(
        w.cmd(&format!("echo {index} {}", what.len())),
        len_and_checksum(what)
    );
    let mut back = vec![0u8; what.len()];
    client.read_exact(&mut back).unwrap();
    assert_eq!(back, what);
}

/// Starts a thread of the workload blocked in read() on its fd `fd`; returns once the kernel
/// shows it in that syscall.
fn start_reader(w: &Workload, fd: i32) {
    let tid = w.cmd(&format!("reader {fd}"));
    let path = format!("/proc/{}/task/{tid}/syscall", w.pid());
    let start = Instant::now();
    // Nothing tells when a thread has entered read(): the kernel's view of it is read until
    // it says so (syscall 0 on x86_64).
    while !std::fs::read_to_string(&path).is_ok_and(|s| s.starts_with("0 ")) {
        assert!(
            start.elapsed() < SETTLE,
            "thread {tid} never blocked in read"
        );
        std::thread::yield_now();
    }
}

/// What the reader thread on `fd` got: (outcome, CLOCK_MONOTONIC ns when read returned).
fn reader_result(w: &Workload, fd: i32) -> (String, u128) {
    let reply = w.cmd(&format!("reader-result {fd}"));
    let (head, end) = reply.rsplit_once(' ').expect("outcome, ms, end");
    let (outcome, _blocked_ms) = head.rsplit_once(' ').expect("outcome, ms");
    (outcome.to_string(), end.parse().expect("end ns"))
}

/// The next resume record the workload reads from its channel.
#[track_caller]
fn next_record(w: &Workload) -> Value {
    let line = w.cmd("resume-next");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("not a record ({e}): {line}"))
}

/// The one broken connection of a record.
#[track_caller]
fn only_broken(record: &Value) -> &Value {
    let broken = record["broken"].as_array().expect("broken: a list");
    assert_eq!(broken.len(), 1, "{record}");
    &broken[0]
}

fn ms(ns: u128) -> f64 {
    ns as f64 / 1e6
}

/// A `tcp` workload with its resume channel open (watching signal `signo` when given), and
/// a client accepted as its connection 0 that has echoed once.
fn server_with_a_client(signo: Option<i32>) -> (Workload, TcpStream) {
    cryo_bin();
    let w = Workload::spawn("tcp", &["127.0.0.1:0"]);
    if let Some(signo) = signo {
        assert_eq!(w.cmd(&format!("sigwatch {signo}")), "ok");
    }
    w.cmd("resume-open");
    let mut client = connect(&w, 0);
    echo(&w, &mut client, 0, b"before");
    (w, client)
}

/// Restores detached with `extra` flags; returns (start, end) in CLOCK_MONOTONIC ns.
fn restore(w: &mut Workload, extra: &[&str]) -> (u128, u128) {
    let img = w.path("img");
    let start = monotonic_ns();
    w.restore_detached_with(&img, extra);
    (start, monotonic_ns())
}

/// Dumps the workload with its connections (it is killed) and waits for it to be gone.
fn dump_killed(w: &mut Workload, extra: &[&str]) {
    let img = w.path("img");
    let mut args = vec!["--tcp-established"];
    args.extend(extra);
    w.dump(&img, &args).assert_success();
    w.wait_original();
}

#[test]
fn a_vanished_client_fails_fast_and_is_reported() {
    let signo = libc::SIGRTMIN() + 3;
    let (mut w, client) = server_with_a_client(Some(signo));
    let fd: i32 = w.cmd("fd 0").parse().unwrap();
    let server = server_addr(&w, "127.0.0.1");
    let client_addr = client.local_addr().unwrap();
    start_reader(&w, fd);

    dump_killed(&mut w, &[]);
    // The client goes away for good: its RST is dropped by the dump's network lock and its
    // socket is gone at once (linger 0), so the restored server's peer no longer exists.
    nix::sys::socket::setsockopt(
        &client,
        nix::sys::socket::sockopt::Linger,
        &libc::linger {
            l_onoff: 1,
            l_linger: 0,
        },
    )
    .unwrap();
    drop(client);

    let (start, end) = restore(&mut w, &["--notify-signal", "SIGRTMIN+3"]);
    let (outcome, failed_at) = reader_result(&w, fd);
    println!(
        "reset peer: the blocked reader got {outcome} {:.1} ms after `cryo restore` started \
         ({:.1} ms for the whole command)",
        ms(failed_at - start),
        ms(end - start)
    );
    assert_eq!(outcome, "err ECONNRESET");
    assert!(
        failed_at - start < 1_000_000_000,
        "the reader waited {:.1} ms",
        ms(failed_at - start)
    );

    let record = next_record(&w);
    let b = only_broken(&record);
    assert_eq!(b["fd"], fd, "{record}");
    assert_eq!(b["reason"], "reset", "{record}");
    assert_eq!(b["local"], server.to_string(), "{record}");
    assert_eq!(b["remote"], client_addr.to_string(), "{record}");
    assert_eq!(
        w.cmd("signext"),
        format!("signal {signo} 1 {}", libc::SI_QUEUE)
    );

    // The server goes on: a new client is served.
    let mut second = connect(&w, 1);
    echo(&w, &mut second, 1, b"after the restore");
    w.kill_restored();
}

#[test]
fn a_live_peer_is_not_reported_and_keeps_working() {
    let signo = libc::SIGRTMIN() + 4;
    let (mut w, mut client) = server_with_a_client(Some(signo));

    dump_killed(&mut w, &[]);
    let (start, end) = restore(&mut w, &["--notify-signal", &signo.to_string()]);
    println!("live peer: `cryo restore` took {:.1} ms", ms(end - start));

    let record = next_record(&w);
    assert_eq!(record["broken"], serde_json::json!([]), "{record}");
    // Queued before `cryo restore` returns, if at all.
    assert_eq!(w.cmd("signext 0"), "none");
    echo(&w, &mut client, 0, b"after the restore, both ways");
    // And the server writes first.
    assert_eq!(w.cmd("write 0 1000 5"), "1000");
    let mut got = vec![0u8; 1000];
    std::io::Read::read_exact(&mut client, &mut got).unwrap();
    assert_eq!(got, cryo_tests::protocol::pattern(1000, 5));
    w.kill_restored();
}

#[test]
fn a_silent_peer_times_out_after_peer_timeout() {
    let (mut w, client) = server_with_a_client(None);
    let fd: i32 = w.cmd("fd 0").parse().unwrap();
    let tuple =
        cryo_netns::ConnTuple::new(server_addr(&w, "127.0.0.1"), client.local_addr().unwrap());
    start_reader(&w, fd);

    dump_killed(&mut w, &[]);
    // The peer goes silent: a lock of our own keeps dropping this connection's packets after
    // the dump's is released (dropped at the end of the test, whatever happens).
    let _silence = cryo_netns::NetworkLock::install(&format!("test-silent-{}", w.pid()), &[tuple])
        .expect("install a lock of our own");

    let timeout = Duration::from_millis(300);
    let (start, end) = restore(&mut w, &["--peer-timeout", "300ms"]);
    let (outcome, failed_at) = reader_result(&w, fd);
    println!(
        "silent peer: the blocked reader got {outcome} {:.1} ms after `cryo restore` started \
         ({:.1} ms for the whole command, --peer-timeout 300ms)",
        ms(failed_at - start),
        ms(end - start)
    );
    assert!(outcome.starts_with("err ") || outcome == "eof", "{outcome}");
    let waited = Duration::from_nanos((failed_at - start) as u64);
    assert!(
        waited >= timeout,
        "failed after {waited:?}, before the timeout"
    );
    assert!(
        waited < timeout + Duration::from_secs(1),
        "failed after {waited:?}"
    );
    let record = next_record(&w);
    let b = only_broken(&record);
    assert_eq!(b["fd"], fd, "{record}");
    assert_eq!(b["reason"], "timeout", "{record}");
    w.kill_restored();
}

#[test]
fn tcp_close_connections_are_reported_closed_by_policy() {
    let (mut w, _client) = server_with_a_client(None);
    let fd: i32 = w.cmd("fd 0").parse().unwrap();

    dump_killed(&mut w, &[]);
    restore(&mut w, &["--tcp-close"]);
    let record = next_record(&w);
    let b = only_broken(&record);
    assert_eq!(b["fd"], fd, "{record}");
    assert_eq!(b["reason"], "closed-by-policy", "{record}");
    assert_eq!(
        b["local"],
        server_addr(&w, "127.0.0.1").to_string(),
        "{record}"
    );
    // Closed as CRIU closes it: end of file, not a reset.
    start_reader_or_result(&w, fd, "eof");
    w.kill_restored();
}

/// A read on `fd` now returns `want` at once (the thread may return before it is seen
/// blocking).
fn start_reader_or_result(w: &Workload, fd: i32, want: &str) {
    w.cmd(&format!("reader {fd}"));
    assert_eq!(reader_result(w, fd).0, want);
}

#[test]
fn an_external_unix_peer_comes_back_broken() {
    use std::io::Write;
    cryo_bin();
    let signo = libc::SIGRTMIN() + 5;
    let dir = cryo_tests::control_dir();
    let path = dir.path().join("ext.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let mut w = Workload::spawn_in(dir, "unix-ext", &[path.to_str().unwrap()]);
    let (mut peer, _) = listener.accept().unwrap();
    assert_eq!(w.cmd(&format!("sigwatch {signo}")), "ok");
    w.cmd("resume-open");
    // Sent before the dump, unread: it comes back, then the end.
    peer.write_all(b"queued").unwrap();
    assert_eq!(w.cmd("ping"), "pong");

    let img = w.path("img");
    w.dump(&img, &["--ext-unix-sk"]).assert_success();
    w.wait_original();
    let show = w.show(&img, false);
    assert!(show.stdout.contains("outside the dump"), "{show}");

    restore(&mut w, &["--notify-signal", &signo.to_string()]);
    let record = next_record(&w);
    let b = only_broken(&record);
    assert_eq!(b["fd"], 50, "{record}");
    assert_eq!(b["reason"], "external-peer", "{record}");
    assert_eq!(b["remote"], path.to_str().unwrap(), "{record}");
    assert_eq!(b["local"], "", "{record}");
    assert_eq!(
        w.cmd("signext"),
        format!("signal {signo} 1 {}", libc::SI_QUEUE)
    );
    start_reader_or_result(&w, 50, "data 6");
    let started = monotonic_ns();
    start_reader_or_result(&w, 50, "eof");
    println!(
        "external unix peer: EOF {:.1} ms after the read was asked for",
        ms(monotonic_ns() - started)
    );
    assert_eq!(w.cmd("poke 50"), "err EPIPE");
    w.kill_restored();
}
