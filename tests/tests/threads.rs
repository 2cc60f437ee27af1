//! Multi-threaded processes: every thread comes back with its tid and goes on.
//!
//! Needs the engine: `cryo` must be built (`cargo build -p cryo`).

use std::time::Instant;

use cryo_tests::{cryo_bin, Workload, CMD_TIMEOUT};

/// `ok <shared> <wakeups>` as numbers, or a panic with the reply.
fn counts(w: &Workload) -> (u64, u64) {
    let reply = w.cmd("counts");
    let parts: Vec<&str> = reply.split(' ').collect();
    assert_eq!(parts.first(), Some(&"ok"), "counters inconsistent: {reply}");
    (parts[1].parse().unwrap(), parts[2].parse().unwrap())
}

fn tids(pid: i32) -> Vec<(i32, String)> {
    let mut v: Vec<(i32, String)> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .map(|e| {
            let tid: i32 = e.unwrap().file_name().to_str().unwrap().parse().unwrap();
            let comm = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm")).unwrap();
            (tid, comm.trim().to_string())
        })
        .collect();
    v.sort();
    v
}

#[test]
fn eight_counting_threads_go_on_after_restore() {
    cryo_bin();
    let mut w = Workload::spawn("threads", &["8"]);
    let (before, _) = counts(&w);
    // Make sure they are counting before the dump.
    let deadline = Instant::now() + CMD_TIMEOUT;
    while counts(&w).0 < before + 100 {
        assert!(Instant::now() < deadline, "the threads do not count");
    }
    let threads = tids(w.pid());
    assert_eq!(
        threads.len(),
        10,
        "main, 8 counters and the waiter: {threads:?}"
    );
    w.dump_and_restore();
    assert_eq!(tids(w.pid()), threads, "the same tids with the same names");
    let (at_restore, wakeups) = counts(&w);
    // Every thread runs again: the shared counter moves, the waiter wakes up.
    let deadline = Instant::now() + CMD_TIMEOUT;
    loop {
        let (now, woken) = counts(&w);
        if now > at_restore + 100 && woken > wakeups {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after restore: {now} counted (was {at_restore}), {woken} wakeups (was {wakeups})\n{}",
            w.log()
        );
    }
    w.kill_restored();
}
