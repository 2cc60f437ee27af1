//! Interval timers and POSIX timers: the same ids, still firing after restore.
//!
//! Needs the engine: `cryo` must be built (`cargo build -p cryo`).

use std::time::Instant;

use cryo_tests::{cryo_bin, Workload, CMD_TIMEOUT};

/// (alarms, timer signals, timer id), asserting no timer signal came with a wrong value.
fn ticks(w: &Workload) -> (u64, u64, String) {
    let reply = w.cmd("ticks");
    let f: Vec<&str> = reply.split(' ').collect();
    assert_eq!(
        f.get(7),
        Some(&"0"),
        "a timer signal carried a wrong value: {reply}"
    );
    (
        f[1].parse().unwrap(),
        f[3].parse().unwrap(),
        f[5].to_string(),
    )
}

/// Waits until both timers fired a few times more than `since`.
fn await_more(w: &Workload, since: (u64, u64)) -> (u64, u64) {
    let deadline = Instant::now() + CMD_TIMEOUT;
    loop {
        let (a, r, _) = ticks(w);
        if a >= since.0 + 3 && r >= since.1 + 3 {
            return (a, r);
        }
        assert!(
            Instant::now() < deadline,
            "timers stalled: alarm {a} rt {r}, from {since:?}\n{}",
            w.log()
        );
    }
}

#[test]
fn both_kinds_of_timers_keep_firing_after_restore() {
    cryo_bin();
    let mut w = Workload::spawn("timers", &[]);
    let (_, _, id) = ticks(&w);
    let before = await_more(&w, (0, 0));
    let timers = std::fs::read_to_string(format!("/proc/{}/timers", w.pid())).unwrap();
    w.dump_and_restore();
    let (a, r, id_after) = ticks(&w);
    assert_eq!(id_after, id);
    assert!(a >= before.0 && r >= before.1, "counters went back");
    await_more(&w, (a, r));
    let restored = std::fs::read_to_string(format!("/proc/{}/timers", w.pid())).unwrap();
    assert_eq!(
        restored, timers,
        "the same POSIX timer (id, signal, value, clock)"
    );
    w.kill_restored();
}

/// A POSIX timer notifying a thread that has ended since (SIGEV_THREAD_ID: the timer stays
/// with the process): timer_create refuses such a target, so a restore could not make it
/// again. Refused at dump, naming pid, the timer and the thread; the process left running
/// with it. Before: dumped and killed, then the restore failed ("timer_create (id 1):
/// Invalid argument").
#[test]
fn a_timer_notifying_a_thread_that_ended_is_refused_at_dump() {
    cryo_bin();
    let w = Workload::spawn("timers", &[]);
    let id = w.cmd("orphan-timer");
    let timers = std::fs::read_to_string(format!("/proc/{}/timers", w.pid())).unwrap();
    assert!(timers.contains(&format!("ID: {id}\n")), "{timers}");
    w.dump(&w.path("img"), &[])
        .assert_refused()
        .assert_stderr_has_word(&w.pid().to_string())
        .assert_stderr_mentions(&format!("POSIX timer {id} notifies thread"));
    w.assert_untouched();
    let after = std::fs::read_to_string(format!("/proc/{}/timers", w.pid())).unwrap();
    assert_eq!(after, timers, "still there");
}
