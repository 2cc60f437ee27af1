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

/// A timer's id and deadline (ns) from `realtime-timer HOW`.
fn realtime_timer(w: &Workload, how: &str) -> (String, i128) {
    let reply = w.cmd(&format!("realtime-timer {how}"));
    let (id, deadline) = reply.split_once(' ').expect(&reply);
    (id.to_string(), deadline.parse().expect(&reply))
}

/// The deadline of timer `id` as the workload sees it (CLOCK_REALTIME now + time left).
fn deadline(w: &Workload, id: &str) -> i128 {
    w.cmd(&format!("deadline {id}")).parse().unwrap()
}

/// A CLOCK_REALTIME timer armed with TIMER_ABSTIME keeps its deadline on the realtime clock
/// (the time the process was away counts), a relative one its time left (the time away does
/// not count), as a clock change would treat them. The kernel keeps no flag: a relative one
/// runs on the monotonic base, an absolute one on the realtime base (/proc/timer_list). Before:
/// the absolute one came back relative, its deadline later by the time away.
#[test]
fn an_absolute_realtime_timer_keeps_its_deadline_and_a_relative_one_its_time_left() {
    cryo_bin();
    let mut w = Workload::spawn("timers", &[]);
    let (abs, abs_deadline) = realtime_timer(&w, "abs");
    let (rel, _) = realtime_timer(&w, "rel");
    const MS: i128 = 1_000_000;
    let seen = deadline(&w, &abs);
    assert!((seen - abs_deadline).abs() < MS, "{seen} {abs_deadline}");
    let rel_before = deadline(&w, &rel);
    let timers = std::fs::read_to_string(format!("/proc/{}/timers", w.pid())).unwrap();
    let img = w.path("img");
    w.dump_ok(&img);
    // Time away (not a synchronisation): the relative timer must not count it.
    let away = std::time::Duration::from_millis(300);
    std::thread::sleep(away);
    w.restore_background(&img);
    let abs_after = deadline(&w, &abs);
    let rel_after = deadline(&w, &rel);
    assert!(
        (abs_after - abs_deadline).abs() < 2 * MS,
        "the absolute timer's deadline moved by {} ms",
        (abs_after - abs_deadline) / MS
    );
    assert!(
        rel_after - rel_before >= away.as_nanos() as i128,
        "the relative timer counted the time away: its deadline moved by {} ms only",
        (rel_after - rel_before) / MS
    );
    let restored = std::fs::read_to_string(format!("/proc/{}/timers", w.pid())).unwrap();
    assert_eq!(restored, timers);
    w.kill_restored();
}

/// An armed SIGEV_NONE timer on CLOCK_REALTIME is never queued on a clock base, so whether
/// it was armed with TIMER_ABSTIME cannot be told: refused at dump, naming pid and timer; the
/// process is left running. Before: dumped, and an absolute one came back relative.
#[test]
fn an_armed_sigev_none_realtime_timer_is_refused_at_dump() {
    cryo_bin();
    let w = Workload::spawn("timers", &[]);
    let (id, _) = realtime_timer(&w, "none");
    w.dump(&w.path("img"), &[])
        .assert_refused()
        .assert_stderr_has_word(&w.pid().to_string())
        .assert_stderr_mentions(&format!("POSIX timer {id} on CLOCK_REALTIME"));
    w.assert_untouched();
}

/// A timer's signal pending (blocked) stays tied to its timer: armed again, the timer drops
/// it (as the kernel does: the signal is never delivered); taken, it carries the timer's id
/// and overrun 0. The restore makes the timer expire at once so that the kernel queues its
/// own signal again. Before: it came back a plain queued signal, still delivered after the
/// timer was armed again (`a timer 1 overrun 0 ...`).
#[test]
fn a_pending_timer_signal_stays_tied_to_its_timer() {
    cryo_bin();
    let mut w = Workload::spawn("timers", &[]);
    let reply = w.cmd("pending-timers");
    let (a, b) = reply.split_once(' ').expect(&reply);
    w.dump_and_restore();
    assert_eq!(
        w.cmd(&format!("rearm-take {a} {b}")),
        format!("a none b timer {b} overrun 0 getoverrun 0")
    );
    w.kill_restored();
}

/// The signal of a periodic timer pending while blocked (glibc's SIGEV_THREAD timers, a
/// sigwaitinfo loop: a timer firing while the dump holds the process): the kernel keeps its
/// overrun count to itself until the signal is delivered, so it is not tied to the timer but
/// comes back a queued signal, as before (KNOWN GAP). A refusal (2026-12-07, briefly) refused
/// every such process (zdtm pthread_timers).
#[test]
fn a_blocked_pending_signal_of_a_periodic_timer_comes_back_pending() {
    cryo_bin();
    let mut w = Workload::spawn("timers", &[]);
    let id = w.cmd("pending-periodic");
    w.dump_and_restore();
    let taken = w.cmd(&format!("take-periodic {id}"));
    assert!(taken.starts_with(&format!("timer {id} ")), "{taken}");
    w.kill_restored();
}
