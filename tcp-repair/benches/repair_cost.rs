//! Per-connection cost of capture, restore and leaving repair mode, on N
//! established loopback connections (default 10,000; `CRYO_BENCH_N` to
//! change). The clients live in a child process so that each process holds
//! at most N sockets. Run: `cargo bench -p cryo-tcp-repair`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::process::{Command, Stdio};
use std::time::Instant;

use cryo_tcp_repair::{close_silently, restore, Repair};
use nix::sys::resource::{getrlimit, setrlimit, Resource};

const CLIENT_ENV: &str = "CRYO_BENCH_CLIENT";

fn raise_nofile() -> u64 {
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("setrlimit");
    hard
}

fn client(addr: &str, n: usize) {
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        let mut c = TcpStream::connect(addr).expect("connect");
        c.write_all(&[7u8; 64]).expect("write");
        conns.push(c);
    }
    println!("connected");
    std::io::stdout().flush().unwrap();
    // Keep the connections until the parent closes our stdin.
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
}

fn main() {
    let hard = raise_nofile();
    if let Ok(spec) = std::env::var(CLIENT_ENV) {
        let (addr, n) = spec.split_once(',').unwrap();
        client(addr, n.parse().unwrap());
        return;
    }
    let n: usize = std::env::var("CRYO_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    assert!(
        (n as u64) + 64 < hard,
        "RLIMIT_NOFILE hard limit {hard} is too low for {n} connections"
    );
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(CLIENT_ENV, format!("{addr},{n}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        conns.push(listener.accept().unwrap().0);
    }
    let mut line = [0u8; 10];
    child
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut line)
        .unwrap();
    // Each connection has 64 bytes in its receive queue.
    for c in &conns {
        let mut b = [0u8; 64];
        while c.peek(&mut b).unwrap() < 64 {}
    }

    let t = Instant::now();
    let mut states = Vec::with_capacity(n);
    for c in &conns {
        let r = Repair::enter(c.as_fd()).unwrap();
        states.push(r.capture().unwrap());
        r.hold();
    }
    let capture = t.elapsed();

    for c in conns {
        close_silently(c.into()).unwrap();
    }

    let t = Instant::now();
    let mut restored = Vec::with_capacity(n);
    for s in &states {
        restored.push(restore(s).unwrap());
    }
    let restore_time = t.elapsed();

    let t = Instant::now();
    let mut live = Vec::with_capacity(n);
    for r in restored {
        live.push(r.finish_quiet().unwrap());
    }
    let leave = t.elapsed();

    // The restored connections work: each still has its 64 bytes.
    for fd in live.iter().take(100) {
        let s = TcpStream::from(fd.try_clone().unwrap());
        let mut b = [0u8; 64];
        s.peek(&mut b).unwrap();
        assert_eq!(b, [7u8; 64]);
    }

    let per = |d: std::time::Duration| d.as_secs_f64() * 1e6 / n as f64;
    println!("{n} established loopback connections (64 bytes queued each):");
    println!(
        "  capture (enter repair + capture):  {:8.2} us/conn",
        per(capture)
    );
    println!(
        "  restore (in repair mode):          {:8.2} us/conn",
        per(restore_time)
    );
    println!(
        "  leave repair (TCP_REPAIR_OFF_NO_WP): {:6.2} us/conn",
        per(leave)
    );
    drop(live);
    drop(child.stdin.take());
    child.wait().unwrap();
}
