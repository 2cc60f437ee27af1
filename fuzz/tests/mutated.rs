//! Every fuzz target under stable: its seeds, then a fixed number of deterministic mutations
//! of them (`CRYO_FUZZ_RUNS`, default 200,000 per target), each input under a time limit.
//! A failure prints the input in hex, to add as a regression test beside the parser.
//!
//! With `CRYO_FUZZ_CORPUS=DIR` the seeds are also written to `DIR/<target>/` (the corpus
//! directories `cargo fuzz run` starts from).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cryo_fuzz::{mutate::Mutator, seeds, TARGETS};

/// The most one input may take, even in a debug build on a busy machine.
const PER_INPUT: Duration = Duration::from_secs(5);

fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}

fn runs() -> usize {
    std::env::var("CRYO_FUZZ_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000)
}

fn write_corpus(name: &str, seeds: &[Vec<u8>]) {
    let Ok(dir) = std::env::var("CRYO_FUZZ_CORPUS") else {
        return;
    };
    let dir = std::path::Path::new(&dir).join(name);
    std::fs::create_dir_all(&dir).unwrap();
    for (i, s) in seeds.iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i}")), s).unwrap();
    }
}

/// Runs `target` on its seeds and `runs()` mutations in a worker thread; the input being
/// worked on when the time runs out is reported as a hang.
fn run(name: &'static str, target: fn(&[u8])) {
    let seeds = seeds::of(name);
    assert!(!seeds.is_empty(), "target {name} has no seeds");
    write_corpus(name, &seeds);
    let (tx, rx) = mpsc::channel::<Option<Vec<u8>>>();
    let worker = std::thread::spawn(move || {
        let mut m = Mutator::new(0x5eed ^ name.len() as u64);
        let inputs = seeds
            .clone()
            .into_iter()
            .chain((0..runs()).map(|_| m.mutate(&seeds)));
        for input in inputs {
            tx.send(Some(input.clone())).unwrap();
            if let Err(p) = catch_unwind(AssertUnwindSafe(|| target(&input))) {
                eprintln!("target {name} panicked on input {}", hex(&input));
                std::panic::resume_unwind(p);
            }
        }
        tx.send(None).unwrap();
    });
    let mut current = Vec::new();
    let mut since = Instant::now();
    loop {
        match rx.recv_timeout(PER_INPUT.saturating_sub(since.elapsed())) {
            Ok(Some(input)) => {
                current = input;
                since = Instant::now();
            }
            Ok(None) => break,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!(
                    "target {name} hangs (over {PER_INPUT:?}) on input {}",
                    hex(&current)
                )
            }
        }
    }
    if let Err(p) = worker.join() {
        std::panic::resume_unwind(p);
    }
}

#[test]
fn every_target_has_a_test_below() {
    let names: Vec<&str> = TARGETS.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        names,
        [
            "image_frame",
            "image_checks",
            "unix_diag",
            "inet_diag",
            "netlink_acks",
            "nft_dump",
            "resume_record",
            "family_diag",
            "stream_frame"
        ]
    );
}

#[test]
fn image_frame() {
    run("image_frame", cryo_fuzz::targets::image_frame);
}

#[test]
fn image_checks() {
    run("image_checks", cryo_fuzz::targets::image_checks);
}

#[test]
fn unix_diag() {
    run("unix_diag", cryo_fuzz::targets::unix_diag);
}

#[test]
fn inet_diag() {
    run("inet_diag", cryo_fuzz::targets::inet_diag);
}

#[test]
fn netlink_acks() {
    run("netlink_acks", cryo_fuzz::targets::netlink_acks);
}

#[test]
fn nft_dump() {
    run("nft_dump", cryo_fuzz::targets::nft_dump);
}

#[test]
fn resume_record() {
    run("resume_record", cryo_fuzz::targets::resume_record);
}

#[test]
fn family_diag() {
    run("family_diag", cryo_fuzz::targets::family_diag);
}

#[test]
fn stream_frame() {
    run("stream_frame", cryo_fuzz::targets::stream_frame);
}
