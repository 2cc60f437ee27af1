//! Pre-copy against a plain streamed dump, beside a plain TCP copy of the same bytes.
//!
//! redis-server with about SIZE_MIB of values (DEBUG POPULATE) and a client writing 4 KiB
//! values at RATE writes a second (a few MB/s), dumped `--to` a local `cryo serve --once`
//! (images under /dev/shm) with and without `--pre-copy`, `--leave-running --tcp-established`
//! (the client's connection is part of it; redis is killed by the bench afterwards): total
//! time, downtime (the freeze to the receiver's commit, as `cryo dump` reports it: no restore,
//! no resume; issue 16's downtime, the final freeze to the first answer served by the restored
//! process, is measured by bench-migrate), bytes per
//! pre-copy round; and, as the reference, the image's bytes sent over a plain TCP connection
//! on 127.0.0.1 in the same run.
//!
//! `cargo build -p cryo && cargo run -p cryo-examples --example bench-precopy [-- SIZE_MIB
//! [RATE [RUNS]]]` (CRYO_BIN overrides the cryo binary; defaults 1024 MiB, 1000/s, 2 runs;
//! CRYO_BENCH_LOG=PATH has both cryos log their stages, timestamped, to PATH.dump and
//! PATH.serve)

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cryo_examples::cryo_bin;
use cryo_examples::redis::{command, populate};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

struct Redis {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Redis {
    fn start(mib: u64) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        // A session of its own (setsid execs it in place: the pid is redis's): a dump refuses
        // a process whose session leader it lacks.
        let child = Command::new("setsid")
            .arg("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--enable-debug-command", "yes", "--daemonize", "no"])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server");
        populate(SocketAddr::from(([127, 0, 0, 1], port)), mib);
        Redis {
            child,
            port,
            _dir: dir,
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client writing 4 KiB values to random keys at `rate` a second until told to stop.
fn writer(port: u16, keys: u64, rate: u64, stop: Arc<AtomicBool>, done: Arc<AtomicU64>) {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to redis");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut s = BufReader::new(stream);
    let value = vec![b'v'; 4096];
    let started = Instant::now();
    let mut n: u64 = 0;
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    while !stop.load(Ordering::Relaxed) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let key = format!("key:{}", x % keys);
        if command(&mut s, &[b"SET", key.as_bytes(), &value]).is_err() {
            break;
        }
        n += 1;
        done.store(n, Ordering::Relaxed);
        // The write rate of the load, not a synchronisation.
        let due = started + Duration::from_secs_f64(n as f64 / rate as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
}

struct Outcome {
    total: Duration,
    frozen_ms: f64,
    final_mib: f64,
    rounds: String,
    image_bytes: u64,
}

fn dump_once(mib: u64, rate: u64, pre_copy: bool) -> Outcome {
    let redis = Redis::start(mib);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let keys = (mib << 20) / 4096;
    let load = {
        let (stop, done, port) = (stop.clone(), done.clone(), redis.port);
        std::thread::spawn(move || writer(port, keys, rate, stop, done))
    };
    // The load runs before the dump starts.
    while done.load(Ordering::Relaxed) < rate / 4 {
        std::thread::sleep(Duration::from_millis(10));
    }
    let root = tempfile::Builder::new()
        .prefix("bench-precopy-")
        .tempdir_in("/dev/shm")
        .expect("root in /dev/shm");
    let key = root.path().join("key");
    std::fs::write(&key, "bench-precopy-key-bench-precopy-key").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let images = root.path().join("root");
    // CRYO_BENCH_LOG=PATH: both cryos log their stages (-vv, with timestamps) to PATH.serve
    // and PATH.dump, appended run after run.
    let log = |what: &str| -> Vec<String> {
        std::env::var("CRYO_BENCH_LOG")
            .map(|p| vec!["-vv".into(), "--log-file".into(), format!("{p}.{what}")])
            .unwrap_or_default()
    };
    let mut serve = Command::new(cryo_bin())
        .args(log("serve"))
        .args(["serve", "--listen", "127.0.0.1:0", "--once", "-D"])
        .arg(&images)
        .arg("--psk-file")
        .arg(&key)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("cryo serve");
    let mut line = String::new();
    BufReader::new(serve.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line.trim().trim_start_matches("listening ").to_string();
    let mut cmd = Command::new(cryo_bin());
    cmd.args(log("dump"))
        .args(["dump", "-t", &redis.child.id().to_string(), "--to", &addr])
        .args(["--name", "r", "--psk-file"])
        .arg(&key)
        .args(["--leave-running", "--tcp-established"]);
    if pre_copy {
        cmd.arg("--pre-copy");
    }
    let started = Instant::now();
    let out = cmd.output().expect("cryo dump");
    let total = started.elapsed();
    if !out.status.success() {
        let _ = serve.kill();
    }
    let _ = serve.wait();
    stop.store(true, Ordering::Relaxed);
    let _ = load.join();
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "cryo dump failed: {text}");
    let summary = text
        .lines()
        .find(|l| l.starts_with("cryo: dumped"))
        .unwrap_or_else(|| panic!("no summary: {text}"))
        .to_string();
    let field = |after: &str, until: char| -> String {
        let at = summary.find(after).map(|i| i + after.len()).unwrap_or(0);
        summary[at..].split(until).next().unwrap_or("").to_string()
    };
    let frozen_ms: f64 = field("frozen ", ' ').parse().unwrap_or(f64::NAN);
    let final_mib: f64 = field(" as r: ", ' ').parse().unwrap_or(f64::NAN);
    let rounds = if pre_copy {
        field("rounds: ", ')')
    } else {
        String::new()
    };
    let image_bytes = std::fs::read_dir(images.join("r"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0);
    drop(redis);
    Outcome {
        total,
        frozen_ms,
        final_mib,
        rounds,
        image_bytes,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mib: u64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(1024);
    let rate: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let runs: u32 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(2);
    println!(
        "redis with {mib} MiB of 4 KiB values, a client writing {rate} of them a second \
         ({:.1} MB/s); images to /dev/shm through `cryo serve` on 127.0.0.1",
        rate as f64 * 4096.0 / 1e6
    );
    println!(
        "{:<10} {:>9} {:>11} {:>12} {:>11} {:>10} {:>10}  rounds (MiB)",
        "mode", "total", "downtime", "final pages", "image", "stream", "tcp copy"
    );
    for _ in 0..runs {
        for pre_copy in [false, true] {
            let o = dump_once(mib, rate, pre_copy);
            let reference = cryo_examples::tcp_copy(o.image_bytes);
            let mb = o.image_bytes as f64 / 1e6;
            println!(
                "{:<10} {:>7.0}ms {:>9.1}ms {:>8.1} MiB {:>7.0} MB {:>6.0} MB/s {:>5.0} MB/s  {}",
                if pre_copy { "pre-copy" } else { "plain" },
                o.total.as_secs_f64() * 1e3,
                o.frozen_ms,
                o.final_mib,
                mb,
                mb / o.total.as_secs_f64(),
                mb / reference.as_secs_f64(),
                o.rounds
            );
        }
    }
}
