//! Memory a parent shares copy-on-write with its forked children stays shared after a
//! restore: the tree's proportional set size (the sum of Pss) is what it was before the
//! dump, and every process still sees its own memory (the parent's data, and its own writes
//! where a worker wrote), checked by the processes themselves.
//!
//! Needs the engine: `cryo` must be built (`cargo build -p cryo`).

use std::time::Instant;

use cryo_tests::{cryo_bin, Reaper, Workload};

/// The Pss of `pid` in KiB, from /proc/PID/smaps_rollup.
fn pss_kib(pid: i32) -> u64 {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .unwrap_or_else(|e| panic!("smaps_rollup of {pid}: {e}"));
    rollup
        .lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no Pss in smaps_rollup of {pid}:\n{rollup}"))
}

/// The tree's pids: the workload and its workers.
fn tree(w: &Workload) -> Vec<i32> {
    let mut pids = vec![w.pid()];
    pids.extend(w.kids());
    pids
}

#[test]
fn a_forked_servers_copy_on_write_memory_stays_shared() {
    cryo_bin();
    const MIB: u64 = 256;
    let mut w = Workload::spawn("cow-tree", &[&MIB.to_string(), "8"]);
    let pids = tree(&w);
    let _reaper = Reaper(pids[1..].to_vec());
    assert_eq!(w.cmd("check"), "ok");
    let before: u64 = pids.iter().map(|&p| pss_kib(p)).sum();
    // One copy of the region, shared by nine processes, not nine.
    assert!(
        before < 2 * MIB * 1024,
        "the workload does not share its memory: Pss {before} KiB"
    );

    let img = w.path("img");
    let dumped = Instant::now();
    w.dump_ok(&img);
    let dump_ms = dumped.elapsed().as_secs_f64() * 1e3;
    let restored = Instant::now();
    w.restore_background(&img);
    let restore_ms = restored.elapsed().as_secs_f64() * 1e3;
    assert_eq!(tree(&w), pids, "the workers came back with other pids");
    assert_eq!(w.cmd("check"), "ok");
    let after: u64 = pids.iter().map(|&p| pss_kib(p)).sum();
    eprintln!(
        "cow tree of {MIB} MiB x 9: Pss {before} KiB before, {after} KiB after; dump {dump_ms:.0} ms, \
         restore {restore_ms:.0} ms"
    );
    let margin = (before / 50).max(4 << 10);
    assert!(
        after <= before + margin,
        "memory no longer shared after restore: Pss {before} KiB before, {after} KiB after"
    );
    // And still copy-on-write: a worker's write stays its own (checked again after the
    // workers ran a check each, which writes nothing).
    assert_eq!(w.cmd("check"), "ok");
    w.kill_restored();
}
