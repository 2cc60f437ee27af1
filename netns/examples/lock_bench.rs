//! Times installing and releasing a network lock (median of 7 rounds) of 1 to 10,000 connections, each in one
//! transaction, inside a fresh network namespace (the host's rules are never touched).
//! "release" is until the kernel acked the deletion (packets flow again); "teardown" is the
//! close of the handle's netlink socket, where the kernel waits out its deferred destruction.
//!
//! `cargo run --release -p cryo-netns --example lock_bench [EXTRA_SIZE...]`

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cryo_netns::{run_in_new, ConnTuple, NetworkLock};

const ROUNDS: usize = 7;

fn tuples(n: u32, v6: bool) -> Vec<ConnTuple> {
    (0..n)
        .map(|i| {
            let (local, remote): (SocketAddr, SocketAddr) = if v6 {
                (
                    format!(
                        "[fd00::{:x}:{:x}]:{}",
                        i >> 16,
                        i & 0xffff,
                        1024 + i % 60000
                    )
                    .parse()
                    .unwrap(),
                    "[fd00::1]:443".parse().unwrap(),
                )
            } else {
                (
                    SocketAddr::from((
                        [10, (i >> 16) as u8, (i >> 8) as u8, i as u8],
                        (1024 + i % 60000) as u16,
                    )),
                    "10.255.0.1:443".parse().unwrap(),
                )
            };
            ConnTuple::new(local, remote)
        })
        .collect()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    // extra sizes may be given on the command line: `lock_bench 100000`
    let mut sizes = vec![1u32, 100, 1_000, 10_000];
    sizes.extend(
        std::env::args()
            .skip(1)
            .map(|a| a.parse::<u32>().expect("a tuple count")),
    );
    run_in_new(|| {
        println!(
            "{:>7} {:>6} {:>11} {:>11} {:>11} {:>9}",
            "tuples", "family", "install ms", "release ms", "teardown ms", "us/tuple"
        );
        for v6 in [false, true] {
            for &n in &sizes {
                let conns = tuples(n, v6);
                let (mut inst, mut rel, mut down) = (Vec::new(), Vec::new(), Vec::new());
                for round in 0..ROUNDS {
                    let id = format!("bench-{n}-{round}");
                    let t = Instant::now();
                    let mut lock = NetworkLock::install(&id, &conns).expect("install");
                    inst.push(t.elapsed());
                    let t = Instant::now();
                    assert!(lock.release().expect("release"));
                    rel.push(t.elapsed());
                    // closing the handle's socket waits for the kernel's deferred teardown
                    let t = Instant::now();
                    drop(lock);
                    down.push(t.elapsed());
                }
                let (i, r, d) = (median(inst), median(rel), median(down));
                println!(
                    "{n:>7} {:>6} {:>11.3} {:>11.3} {:>11.3} {:>9.2}",
                    if v6 { "ipv6" } else { "ipv4" },
                    ms(i),
                    ms(r),
                    ms(d),
                    i.as_secs_f64() * 1e6 / f64::from(n)
                );
            }
        }
    })
    .expect("new network namespace");
}
