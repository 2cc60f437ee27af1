//! The node.js REPL of examples/node-repl, checkpointed and restored again and again:
//! how long the REPL is frozen by `dump --tcp-established --leave-running`, and how long a
//! restore takes until the REPL answers a new client (each restore into fresh PID and network
//! namespaces, beside the running original). Images in /dev/shm; medians of 20 runs.
//!
//! `cargo run --release -p cryo-examples --example bench-node-repl [-- RUNS]`

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cryo_core::Pid;
use cryo_core::{dump, DumpOptions};
use cryo_core::{restore, RestoreOptions};

fn read_prompt(s: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.ends_with(b"> ") {
        let n = s.read(&mut buf).expect("REPL reply");
        assert!(n > 0, "the REPL closed the connection");
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got[..got.len() - 2])
        .trim()
        .to_string()
}

/// Sends `line` and returns the first line of the answer, without waiting for the prompt
/// after it: node writes the prompt separately, and Nagle holds it back until the client's
/// delayed ACK (about 40 ms here, on the original as on a copy).
fn answer(s: &mut TcpStream, line: &str) -> String {
    s.write_all(format!("{line}\n").as_bytes()).expect("send");
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\n") {
        let n = s.read(&mut byte).expect("REPL answer");
        assert!(n > 0, "the REPL closed the connection");
        got.push(byte[0]);
    }
    String::from_utf8_lossy(&got).trim().to_string()
}

fn eval(s: &mut TcpStream, line: &str) -> String {
    s.write_all(format!("{line}\n").as_bytes()).expect("send");
    read_prompt(s)
}

/// A client connected from inside the network namespace of `pid`.
fn connect_in(pid: Pid, port: u16) -> TcpStream {
    std::thread::spawn(move || {
        let ns = std::fs::File::open(format!("/proc/{pid}/ns/net")).expect("netns");
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        TcpStream::connect(("127.0.0.1", port)).expect("connect in the copy's namespace")
    })
    .join()
    .expect("connect thread")
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20);
    let server: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("node-repl/server.js");
    let mut node = Command::new("node");
    // A session of its own: a dump refuses a process whose session leader it lacks.
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut node, || {
            nix::unistd::setsid()
                .map(drop)
                .map_err(std::io::Error::from)
        });
    }
    let mut node = node
        .arg(&server)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start node");
    let mut line = String::new();
    BufReader::new(node.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("port");
    let port: u16 = line.trim().parse().expect("port number");
    let pid = Pid::from_raw(node.id() as i32);
    let mut client = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    read_prompt(&mut client);
    eval(
        &mut client,
        "var counter = 0; function bump() { return ++counter }",
    );

    let mut frozen = Vec::new();
    let mut dumps = Vec::new();
    let mut restores = Vec::new();
    let mut image_bytes = 0;
    for i in 0..runs {
        let want = eval(&mut client, "bump()");
        let dir = PathBuf::from(format!("/dev/shm/cryo-bench-node-{i}"));
        let _ = std::fs::remove_dir_all(&dir);
        let t = Instant::now();
        let mut opts = DumpOptions::new(vec![pid], dir.clone());
        opts.leave_running = true;
        opts.tcp_established = true;
        let summary = dump(&opts).unwrap_or_else(|e| panic!("dump: {e}"));
        dumps.push(t.elapsed());
        frozen.push(summary.frozen);
        image_bytes = summary.pages_bytes;

        let t = Instant::now();
        let mut opts = RestoreOptions::new(dir.clone());
        opts.detach = true;
        opts.pidns = true;
        opts.netns = true;
        let restored = restore(&opts).unwrap_or_else(|e| panic!("restore: {e}"));
        let copy = restored.roots[0];
        let mut inside = connect_in(copy, port);
        read_prompt(&mut inside);
        let got = answer(&mut inside, "counter");
        restores.push(t.elapsed());
        assert_eq!(
            got, want,
            "the copy answers with the state of its checkpoint"
        );
        if let Some(init) = restored.init {
            let _ = nix::sys::signal::kill(init, nix::sys::signal::Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(init, None);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    // The same question asked of the original by a new client, for reference.
    let mut reference = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let mut fresh = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        read_prompt(&mut fresh);
        answer(&mut fresh, "counter");
        reference.push(t.elapsed());
    }
    let rss = rss_kib(node.id());
    let _ = node.kill();
    let _ = node.wait();
    println!(
        "node REPL: RSS {:.1} MiB, {:.1} MiB of pages per image, {runs} runs",
        rss as f64 / 1024.0,
        image_bytes as f64 / 1048576.0
    );
    println!(
        "  dump --leave-running: frozen {:.1} ms (whole dump {:.1} ms)",
        median(frozen).as_secs_f64() * 1e3,
        median(dumps).as_secs_f64() * 1e3
    );
    println!(
        "  restore --pidns --netns until a new client gets an answer: {:.1} ms \
         (a new client of the running original: {:.1} ms)",
        median(restores).as_secs_f64() * 1e3,
        median(reference).as_secs_f64() * 1e3
    );
}
