//! `cryo migrate` of a redis under a write load, downtime measured as issue 16 defines it:
//! from the final freeze to the first answer served by the restored process.
//!
//! Three network namespaces ([`cryo_tests::hosts`], as the migration tests use): A (the source: redis, `cryo
//! migrate`), B (the destination: `cryo serve` in a PID namespace of its own) and C (the
//! writing client), joined by veths; the service address is on `lo` of A and B, and the
//! source's action script flips C's route to B at migrate-restored.
//!
//! redis-server holds about SIZE_MIB of 4 KiB values (DEBUG POPULATE); a client on C writes
//! 4 KiB values to random keys at RATE a second over one connection, which moves with redis
//! (`--tcp-established`). A prober on B connects to the service address there again and
//! again (refused until the restored listener exists) and sends PING: its first +PONG is the
//! first answer served by the restored process. Printed per run:
//!
//! - downtime: the writer's last answer from the original (the freeze follows it within one
//!   request interval) to the first answer from the restored redis (the prober's first +PONG,
//!   or the writer's own answer when its retransmitted request got there first);
//! - writer gap: the writer's wait across the migration (its request sent during the freeze
//!   was dropped by the network lock: the gap can add its TCP retransmission timeout);
//! - cryo's own account (`cryo migrate`'s summary): frozen to running there, split into the
//!   image written, sent and restored there, script and go;
//! - as the reference, the same run's plain migrate (no `--pre-copy`).
//!
//! `cargo build --release -p cryo && cargo run --release -p cryo-examples --example
//! bench-migrate [-- SIZE_MIB [RATE [RUNS]]]` (defaults 1024 MiB, 1000/s, 3 runs; CRYO_BIN
//! overrides the cryo binary; CRYO_BENCH_LOG=PATH has both cryos log their stages, -vv and
//! timestamped, to PATH.migrate and PATH.serve; CRYO_BENCH_PLAIN=0 skips the plain migrate;
//! CRYO_BENCH_DEBUG=1 prints the writer's waits over 20 ms)

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cryo_examples::cryo_bin;
use cryo_examples::redis::{command, populate};
use cryo_tests::hosts::{Hosts, B_LISTEN, SERVICE};

const PORT: u16 = 6390;

/// The writer's record: when each answer came.
#[derive(Default)]
struct Answers {
    at: Vec<Instant>,
    error: Option<String>,
}

/// A client on C writing 4 KiB values to random keys at `rate` a second until told to stop.
fn writer(keys: u64, rate: u64, stop: Arc<AtomicBool>, done: Arc<AtomicU64>) -> Answers {
    let mut answers = Answers::default();
    let stream = match TcpStream::connect((SERVICE, PORT)) {
        Ok(s) => s,
        Err(e) => {
            answers.error = Some(format!("connect: {e}"));
            return answers;
        }
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(20)));
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
        match command(&mut s, &[b"SET", key.as_bytes(), &value]) {
            Ok(r) if r == "+OK" => {}
            Ok(r) => {
                answers.error = Some(format!("SET answered {r:?}"));
                break;
            }
            Err(e) => {
                answers.error = Some(format!("SET: {e}"));
                break;
            }
        }
        answers.at.push(Instant::now());
        n += 1;
        done.store(n, Ordering::Relaxed);
        // The write rate of the load, not a synchronisation.
        let due = started + Duration::from_secs_f64(n as f64 / rate as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    answers
}

/// A prober on B: connects to the service address there until a connection is accepted
/// (nothing listens there before the restore), sends PING and returns when +PONG came.
fn prober(stop: Arc<AtomicBool>) -> Option<Instant> {
    let addr = SocketAddr::from((SERVICE, PORT));
    while !stop.load(Ordering::Relaxed) {
        let Ok(stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(100)) else {
            std::thread::sleep(Duration::from_micros(200));
            continue;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
        let mut s = BufReader::new(stream);
        // Polled: a restored redis not yet running leaves the PING unanswered a while.
        let mut sent = false;
        while !stop.load(Ordering::Relaxed) {
            if !sent {
                if s.get_mut().write_all(b"*1\r\n$4\r\nPING\r\n").is_err() {
                    break;
                }
                sent = true;
            }
            let mut line = String::new();
            match s.read_line(&mut line) {
                Ok(0) => break,
                Ok(_) if line.starts_with("+PONG") => return Some(Instant::now()),
                Ok(_) => break,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => break,
            }
        }
    }
    None
}

struct Redis {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_redis(hosts: &Hosts, mib: u64) -> Redis {
    let dir = tempfile::tempdir().expect("tempdir");
    // A session of its own (setsid execs it in place: the pid is redis's).
    let mut cmd = Command::new("setsid");
    Hosts::enter(&mut cmd, &hosts.a);
    let child = cmd
        .arg("redis-server")
        .args(["--port", &PORT.to_string(), "--bind", "0.0.0.0"])
        .args(["--protected-mode", "no", "--save", "", "--appendonly", "no"])
        .args(["--enable-debug-command", "yes", "--daemonize", "no"])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server");
    Hosts::spawn_thread(&hosts.a, move || {
        populate(SocketAddr::from((SERVICE, PORT)), mib)
    })
    .join()
    .expect("populate");
    Redis { child, _dir: dir }
}

/// `cryo serve` on B as PID 1 of a PID namespace of its own; killed with what it restored.
struct Serve {
    child: Child,
    addr: String,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn log_args(what: &str) -> Vec<String> {
    std::env::var("CRYO_BENCH_LOG")
        .map(|p| vec!["-vv".into(), "--log-file".into(), format!("{p}.{what}")])
        .unwrap_or_default()
}

fn start_serve(hosts: &Hosts, root: &Path, key: &Path) -> Serve {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &hosts.b])
        .args(["unshare", "--pid", "--fork", "--kill-child", "--mount-proc"])
        .arg(cryo_bin())
        .args(log_args("serve"))
        .args(["serve", "--listen", &format!("{B_LISTEN}:0"), "-D"])
        .arg(root)
        .arg("--psk-file")
        .arg(key)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().expect("cryo serve in B");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line.trim().trim_start_matches("listening ").to_string();
    assert!(!addr.is_empty(), "cryo serve did not say where it listens");
    Serve { child, addr }
}

struct Outcome {
    /// The writer's last answer before the migration to the first answer served after it
    /// (the prober's first +PONG, or the writer's own if it came first).
    downtime: Duration,
    /// The writer's wait across the migration.
    gap: Duration,
    /// `cryo migrate`'s summary line.
    summary: String,
    total: Duration,
}

fn migrate_once(mib: u64, rate: u64, pre_copy: bool) -> Outcome {
    let hosts = Hosts::new("cryo-bm");
    let redis = start_redis(&hosts, mib);
    let root = tempfile::Builder::new()
        .prefix("bench-migrate-")
        .tempdir_in("/dev/shm")
        .expect("root in /dev/shm");
    let key = root.path().join("key");
    std::fs::write(&key, "bench-migrate-key-bench-migrate-key").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let serve = start_serve(&hosts, &root.path().join("root"), &key);
    let script = root.path().join("script");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ncase \"$CRYO_HOOK_STAGE\" in\nmigrate-restored) ip -n {c} route replace \
             {SERVICE} via 10.1.2.2 ;;\nmigrate-rollback) ip -n {c} route replace {SERVICE} via \
             10.1.1.2 ;;\nesac\n",
            c = hosts.c
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let keys = (mib << 20) / 4096;
    let load = {
        let (stop, done) = (stop.clone(), done.clone());
        Hosts::spawn_thread(&hosts.c, move || writer(keys, rate, stop, done))
    };
    let probe = {
        let stop = stop.clone();
        Hosts::spawn_thread(&hosts.b, move || prober(stop))
    };
    // The load runs before the migration starts.
    let until = Instant::now() + Duration::from_secs(10);
    while done.load(Ordering::Relaxed) < rate / 4 {
        assert!(Instant::now() < until, "the writer does not write");
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut cmd = Command::new(cryo_bin());
    Hosts::enter(&mut cmd, &hosts.a);
    cmd.args(log_args("migrate"))
        .args(["migrate", "-t", &redis.child.id().to_string(), "--to"])
        .arg(&serve.addr)
        .args(["--name", "r", "--psk-file"])
        .arg(&key)
        .arg("--tcp-established")
        .arg("--action-script")
        .arg(&script)
        .stdin(Stdio::null());
    if pre_copy {
        cmd.arg("--pre-copy");
    }
    let started = Instant::now();
    let out = cmd.output().expect("cryo migrate");
    let total = started.elapsed();
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "cryo migrate failed: {text}");
    // The writer goes on against the restored redis a moment, then stops.
    let shown = done.load(Ordering::Relaxed);
    let until = Instant::now() + Duration::from_secs(10);
    while done.load(Ordering::Relaxed) < shown + rate / 10 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::Relaxed);
    let answers = load.join().expect("writer");
    let pong = probe.join().expect("prober");
    if let Some(e) = &answers.error {
        panic!("the writer failed: {e}; cryo said: {text}");
    }
    let pong = pong.unwrap_or_else(|| panic!("the restored redis never answered: {text}"));
    let summary = text
        .lines()
        .find(|l| l.starts_with("cryo: migrated"))
        .unwrap_or_else(|| panic!("no summary: {text}"))
        .to_string();
    // The final freeze, on this clock, give or take: cryo killed the originals `killed`
    // after it, then removed its lock, ran migrate-done and exited (this estimate comes out
    // about 0.1 s late).
    let killed: f64 = field(&summary, "originals killed after ", " ms")
        .parse()
        .unwrap_or_else(|_| panic!("no freeze time in: {summary}"));
    let exited = started + total;
    let frozen = exited - Duration::from_secs_f64(killed / 1e3);
    // The writer's wait across it: the longest of its waits around that moment (its request
    // sent just before the freeze is answered by the restored redis).
    let (before, after) = answers
        .at
        .windows(2)
        .map(|w| (w[0], w[1]))
        .filter(|(a, b)| {
            *a < frozen + Duration::from_millis(50) && *b + Duration::from_millis(300) > frozen
        })
        .max_by_key(|(a, b)| *b - *a)
        .unwrap_or_else(|| panic!("no answers around the freeze: {summary}"));
    // The first answer from the restored redis: the writer's, or the prober's if earlier.
    let first = if pong > before {
        after.min(pong)
    } else {
        after
    };
    if std::env::var_os("CRYO_BENCH_DEBUG").is_some() {
        let rel = |t: Instant| t.saturating_duration_since(started).as_secs_f64() * 1e3;
        eprintln!(
            "debug: frozen {:.1} before {:.1} after {:.1} pong {:.1} ms (from the migrate's \
             start)",
            rel(frozen),
            rel(before),
            rel(after),
            rel(pong)
        );
        for w in answers.at.windows(2) {
            if w[1] - w[0] > Duration::from_millis(20) {
                eprintln!("debug: gap {:.1} -> {:.1}", rel(w[0]), rel(w[1]));
            }
        }
    }
    drop(serve);
    drop(redis);
    Outcome {
        downtime: first - before,
        gap: after - before,
        summary,
        total,
    }
}

/// The text after `after` in `s`, up to `until`.
fn field<'a>(s: &'a str, after: &str, until: &str) -> &'a str {
    s.find(after)
        .map(|i| &s[i + after.len()..])
        .and_then(|r| r.split(until).next())
        .unwrap_or("?")
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn stats(v: &mut [f64]) -> String {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return "-".into();
    }
    format!(
        "min {:.0} / median {:.0} / max {:.0} ms",
        v[0],
        v[v.len() / 2],
        v[v.len() - 1]
    )
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mib: u64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(1024);
    let rate: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let runs: u32 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(3);
    let plain = std::env::var("CRYO_BENCH_PLAIN").map_or(true, |v| v != "0");
    println!(
        "redis with {mib} MiB of 4 KiB values, a client writing {rate} of them a second \
         ({:.1} MB/s); `cryo migrate` A -> B over veths, images under /dev/shm",
        rate as f64 * 4096.0 / 1e6
    );
    println!(
        "{:<9} {:>8} {:>9} {:>9}  cryo: running there after the freeze (image written, \
         sent and restored, script and go), pages",
        "mode", "total", "downtime", "wr. gap"
    );
    let mut downtimes = [Vec::new(), Vec::new()];
    for _ in 0..runs {
        for pre_copy in [false, true] {
            if !pre_copy && !plain {
                continue;
            }
            let o = migrate_once(mib, rate, pre_copy);
            downtimes[usize::from(pre_copy)].push(ms(o.downtime));
            let s = &o.summary;
            println!(
                "{:<9} {:>6.0}ms {:>7.1}ms {:>7.1}ms  {} ({}, {}, {}), {}{}",
                if pre_copy { "pre-copy" } else { "plain" },
                ms(o.total),
                ms(o.downtime),
                ms(o.gap),
                field(s, "running there ", " after"),
                field(s, "(image written ", ","),
                field(s, "sent and restored there ", ","),
                field(s, "script and go ", ")"),
                field(s, "): ", " of pages"),
                if pre_copy {
                    format!(" (rounds {})", field(s, "rounds: ", ")"))
                } else {
                    String::new()
                },
            );
        }
    }
    println!("downtime, plain:    {}", stats(&mut downtimes[0]));
    println!("downtime, pre-copy: {}", stats(&mut downtimes[1]));
}
