//! Dump and restore of a server holding many established TCP connections, the clients in
//! another process (this one), printing the per-connection cost.
//!
//! The server is a fork of this process: it listens on 127.0.0.1 (ephemeral port), forks
//! PROCESSES - 1 workers sharing the listener (a pre-fork server), each process accepts its
//! share of N connections, reads the 16 bytes each client sent first, and pauses. The tree is
//! dumped with `--tcp-established` (and killed), restored, and every client is then checked:
//! still established, no reset, and the data it sends is acknowledged by the restored server.
//!
//! The dump and restore run the `cryo` binary built beside this example (`cargo build
//! --release -p cryo` first): it must not inherit the clients' fds. With `--base PATH`, the
//! same scenario runs first with the cryo binary at PATH (another build), and both figures
//! are printed.
//!
//! `cargo run --release -p cryo-examples --example bench-tcp [-- CONNECTIONS [PROCESSES]
//! [--base PATH]]` (default 10000 connections, 1 process)

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Instant;

use cryo_core::Pid;
use nix::sys::signal::{kill, Signal};
use nix::sys::socket::{listen, Backlog};
use nix::sys::wait::waitpid;
use nix::unistd::{fork, ForkResult};

/// Forks the server (`processes` processes sharing the listener, each accepting its share of
/// `n` connections); returns its pid and port once every connection is accepted.
fn spawn_server(n: usize, processes: usize) -> (Pid, SocketAddr, Vec<TcpStream>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listen(&listener, Backlog::new(4096).expect("backlog")).expect("listen");
    let addr = listener.local_addr().expect("local address");
    let (rd, wr): (OwnedFd, OwnedFd) = nix::unistd::pipe().expect("pipe");
    // SAFETY: this example is single-threaded; the child only forks, accepts, reads, writes
    // to a pipe and pauses.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            drop(rd);
            // A session and process group of its own: the whole tree is killed at the end,
            // and a dump refuses a process whose session leader it lacks.
            let _ = nix::unistd::setsid();
            let mut share = n / processes + n % processes;
            for _ in 1..processes {
                // SAFETY: as above, single-threaded.
                if let ForkResult::Child = unsafe { fork() }.expect("fork a worker") {
                    share = n / processes;
                    break;
                }
            }
            let mut conns = Vec::with_capacity(share);
            for _ in 0..share {
                let (mut s, _) = listener.accept().expect("accept");
                let mut hello = [0u8; 16];
                s.read_exact(&mut hello).expect("hello");
                conns.push(s);
            }
            let mut w = std::fs::File::from(wr);
            let _ = w.write_all(b"r");
            drop(w);
            loop {
                nix::unistd::pause();
                std::hint::black_box(&conns);
            }
        }
        ForkResult::Parent { child } => {
            drop(wr);
            drop(listener);
            let mut clients = Vec::with_capacity(n);
            for i in 0..n {
                let mut s = TcpStream::connect(addr).expect("connect");
                s.write_all(&(i as u128).to_le_bytes()).expect("hello");
                clients.push(s);
            }
            let mut ready = vec![0u8; processes];
            std::fs::File::from(rd)
                .read_exact(&mut ready)
                .expect("server ready");
            (child, addr, clients)
        }
    }
}

/// TCP_INFO state of a client socket (1 = ESTABLISHED) and its unacknowledged bytes.
fn client_state(s: &TcpStream) -> (u8, u32) {
    // SAFETY: tcp_info is plain old data; all-zero is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: the pointer and length describe `info`, which outlives the call.
    let r = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    assert_eq!(r, 0, "TCP_INFO: {}", std::io::Error::last_os_error());
    (info.tcpi_state, info.tcpi_unacked)
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let base = args.iter().position(|a| a == "--base").map(|i| {
        let path = args.get(i + 1).expect("--base PATH").clone();
        args.drain(i..i + 2);
        std::path::PathBuf::from(path)
    });
    let n: usize = args
        .first()
        .map(|a| a.parse().expect("CONNECTIONS"))
        .unwrap_or(10_000);
    let processes: usize = args
        .get(1)
        .map(|a| a.parse().expect("PROCESSES"))
        .unwrap_or(1)
        .max(1);
    let mut figures = Vec::new();
    if let Some(bin) = base {
        let label = format!("base {}", bin.display());
        figures.push((label, run(&cryo_examples::Cryo::at(bin), n, processes)));
    }
    let label = "this build".to_string();
    figures.push((
        label,
        run(&cryo_examples::Cryo::beside_this_example(), n, processes),
    ));
    for (label, (dump, restore)) in &figures {
        let total = *dump + *restore;
        println!(
            "{label}: {n} connections in {processes} process(es): dump {:.1} ms, restore {:.1} ms, together {:.1} ms ({:.1} us per connection)",
            dump.as_secs_f64() * 1e3,
            restore.as_secs_f64() * 1e3,
            total.as_secs_f64() * 1e3,
            total.as_secs_f64() * 1e6 / n as f64
        );
    }
}

/// One dump and restore of `n` connections over `processes` processes with `cryo`: the
/// time of each whole command, once every client was checked.
fn run(
    cryo: &cryo_examples::Cryo,
    n: usize,
    processes: usize,
) -> (std::time::Duration, std::time::Duration) {
    let dir = std::env::temp_dir().join(format!("cryo-bench-tcp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let t = Instant::now();
    let (pid, addr, mut clients) = spawn_server(n, processes);
    println!(
        "server {pid} on {addr}: {n} connections in {processes} process(es) in {:.0} ms",
        t.elapsed().as_secs_f64() * 1e3
    );

    let dir_s = dir.to_str().expect("utf-8 temp dir").to_string();
    let pid_s = pid.to_string();
    let t = Instant::now();
    cryo.run(&["dump", "-t", &pid_s, "-D", &dir_s, "--tcp-established"]);
    let dump_time = t.elapsed();
    let _ = waitpid(pid, None);
    // The clients talk while the server is dead: the lock holds their segments back.
    for s in &mut clients {
        s.write_all(b"while-dead").expect("client write");
    }
    let t = Instant::now();
    cryo.run(&["restore", "-D", &dir_s, "--detach"]);
    let restore_time = t.elapsed();

    // Every client: still established, never reset, and its bytes acknowledged by the
    // restored server (retransmitted after the lock went away).
    let deadline = Instant::now() + std::time::Duration::from_secs(30);
    let mut pending: Vec<usize> = (0..n).collect();
    while !pending.is_empty() && Instant::now() < deadline {
        pending.retain(|&i| {
            let (state, unacked) = client_state(&clients[i]);
            assert_eq!(
                state, 1,
                "client {i} is no longer established (state {state})"
            );
            unacked > 0
        });
        if !pending.is_empty() {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    assert!(
        pending.is_empty(),
        "{} clients still wait for an acknowledgement",
        pending.len()
    );
    for s in &clients {
        s.set_nonblocking(true).expect("nonblocking");
        let mut b = [0u8; 1];
        match (&*s).read(&mut b) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("client {} saw {other:?}", s.as_raw_fd()),
        }
    }
    println!("all {n} clients established, their data acknowledged, no reset");
    // The restored tree is in the server's process group.
    let _ = nix::sys::signal::killpg(pid, Signal::SIGKILL);
    let _ = kill(pid, Signal::SIGKILL);
    let _ = std::fs::remove_dir_all(&dir);
    (dump_time, restore_time)
}
