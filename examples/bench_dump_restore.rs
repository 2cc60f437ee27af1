//! Dump and restore throughput beside a plain copy, images in /dev/shm.
//!
//! (a) a process with 1 GiB of touched anonymous memory, (b) a process of about 2 MiB RSS,
//! and, in the same run, `dd` copying 1 GiB into /dev/shm as the reference.
//!
//! `cargo run --release -p cryo-examples --example bench-dump-restore [-- BIG_MIB [ROUNDS]]`

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use cryo_core::Pid;
use cryo_core::{dump, DumpOptions};
use cryo_core::{restore, RestoreOptions};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::{fork, ForkResult};

/// Forks a child that touches `mib` MiB of anonymous memory, says so on a pipe, and waits.
fn spawn_workload(mib: usize) -> Pid {
    let (rd, wr): (OwnedFd, OwnedFd) = nix::unistd::pipe().expect("pipe");
    // SAFETY: this example is single-threaded; the child only maps memory, writes to a pipe
    // and pauses.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            drop(rd);
            // A session of its own: a dump refuses a process whose session leader it lacks.
            let _ = nix::unistd::setsid();
            let len = (mib << 20).max(4096);
            let mut mem = vec![0u8; len];
            for (i, page) in mem.chunks_mut(4096).enumerate() {
                page[0] = i as u8;
            }
            let mut w = std::fs::File::from(wr);
            let _ = w.write_all(b"r");
            drop(w);
            loop {
                nix::unistd::pause();
                std::hint::black_box(&mem);
            }
        }
        ForkResult::Parent { child } => {
            drop(wr);
            let mut byte = [0u8; 1];
            std::fs::File::from(rd)
                .read_exact(&mut byte)
                .expect("workload ready");
            child
        }
    }
}

struct Round {
    dump: Duration,
    frozen: Duration,
    restore: Duration,
    bytes: u64,
}

fn round(mib: usize, dir: &Path) -> Round {
    let pid = spawn_workload(mib);
    let _ = std::fs::remove_dir_all(dir);
    let t = Instant::now();
    let summary = dump(&DumpOptions::new(vec![pid], dir)).unwrap_or_else(|e| {
        // The workload holds this bench's stdout: left alive, it would keep a reader of the
        // output waiting forever.
        let _ = kill(pid, Signal::SIGKILL);
        panic!("dump: {e}")
    });
    let dump_time = t.elapsed();
    // The dump killed our child: reap it so its pid is free again.
    let _ = waitpid(pid, None);
    let t = Instant::now();
    let mut opts = RestoreOptions::new(dir);
    opts.detach = true;
    let restored = restore(&opts).unwrap_or_else(|e| panic!("restore: {e}"));
    let restore_time = t.elapsed();
    for p in &restored.roots {
        let _ = kill(*p, Signal::SIGKILL);
        let _ = waitpid(*p, None);
    }
    let _ = std::fs::remove_dir_all(dir);
    Round {
        dump: dump_time,
        frozen: summary.frozen,
        restore: restore_time,
        bytes: summary.pages_bytes,
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn copy_reference(mib: usize) -> Duration {
    let out = Path::new("/dev/shm/cryo-bench-copy");
    let t = Instant::now();
    let status = Command::new("dd")
        .args(["if=/dev/zero", &format!("of={}", out.display()), "bs=1M"])
        .arg(format!("count={mib}"))
        .arg("status=none")
        .status()
        .expect("run dd");
    let elapsed = t.elapsed();
    assert!(status.success(), "dd failed");
    let _ = std::fs::remove_file(out);
    elapsed
}

fn gbps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e9
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let big = args.first().copied().unwrap_or(1024);
    let rounds = args.get(1).copied().unwrap_or(3);
    let dir = Path::new("/dev/shm/cryo-bench-img");
    let _ = std::io::stdout().as_raw_fd();

    // The small process first, while this bench's own heap (which it inherits) is small.
    let small_rounds: Vec<Round> = (0..20).map(|_| round(2, dir)).collect();
    let sd = median(small_rounds.iter().map(|r| r.dump).collect());
    let sr = median(small_rounds.iter().map(|r| r.restore).collect());
    let sbytes = small_rounds[0].bytes;

    // The copy and the rounds alternate, so that both see the machine in the same mood.
    let (copies, big_rounds): (Vec<Duration>, Vec<Round>) = (0..rounds)
        .map(|_| (copy_reference(big), round(big, dir)))
        .unzip();
    let copy = median(copies);
    let copy_rate = gbps((big as u64) << 20, copy);

    let bytes = big_rounds[0].bytes;
    let d = median(big_rounds.iter().map(|r| r.dump).collect());
    let f = median(big_rounds.iter().map(|r| r.frozen).collect());
    let r = median(big_rounds.iter().map(|r| r.restore).collect());

    println!(
        "reference  dd {big} MiB into /dev/shm: {:.3} s, {copy_rate:.2} GB/s",
        copy.as_secs_f64()
    );
    println!(
        "big        {:.0} MiB of pages: dump {:.3} s ({:.2} GB/s, {:.0}% of copy; frozen {:.3} s), restore {:.3} s ({:.2} GB/s, {:.0}% of copy)",
        bytes as f64 / 1048576.0,
        d.as_secs_f64(),
        gbps(bytes, d),
        100.0 * gbps(bytes, d) / copy_rate,
        f.as_secs_f64(),
        r.as_secs_f64(),
        gbps(bytes, r),
        100.0 * gbps(bytes, r) / copy_rate,
    );
    println!(
        "small      {:.1} MiB of pages: dump {:.2} ms, restore {:.2} ms (medians of 20)",
        sbytes as f64 / 1048576.0,
        sd.as_secs_f64() * 1e3,
        sr.as_secs_f64() * 1e3,
    );
}
