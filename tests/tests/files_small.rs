//! The smaller kernel objects a process holds through fds: timerfds armed every way,
//! deleted-but-open files with their holes and times, pidfds, namespace fds and the deleted
//! files cryo refuses. Each is checked from inside the restored process, or refused at dump
//! naming pid, fd and the kind.
//!
//! Needs the engine: `cryo` must be built (`cargo build -p cryo`).

use std::time::{Duration, Instant};

use cryo_tests::{cryo_bin, Workload, CMD_TIMEOUT};

const MS: u64 = 1_000_000;
const HOUR: u64 = 3_600_000 * MS;

/// The time of `clock` in nanoseconds.
fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `ts`.
    assert_eq!(unsafe { libc::clock_gettime(clock, &mut ts) }, 0);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A reply of numbers.
fn numbers(reply: &str) -> Vec<u64> {
    reply
        .split_whitespace()
        .map(|n| {
            n.parse()
                .unwrap_or_else(|_| panic!("not numbers: {reply:?}"))
        })
        .collect()
}

/// Asks `verb` until `ok` accepts the reply (bounded).
fn await_reply(w: &Workload, verb: &str, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + CMD_TIMEOUT;
    loop {
        let r = w.cmd(verb);
        if ok(&r) {
            return r;
        }
        assert!(Instant::now() < deadline, "{verb}: last reply {r:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn periodic_timerfds_come_back_armed_and_periodic_with_their_unread_expirations() {
    cryo_bin();
    // The absolute timers (63, 64) are an hour away: not looked at here.
    let mut w = Workload::spawn("timerfds", &["3600000"]);
    // Fd 62 (every 10 ms, never read): 20 periods at least before the dump.
    let piled: u64 = await_reply(&w, "elapsed 62", |r| r.parse::<u64>().unwrap() >= 200)
        .parse::<u64>()
        .unwrap()
        / 10;
    let img = w.path("img");
    w.dump_ok(&img);
    w.restore_background(&img);

    // Fd 60 (every 20 ms) keeps firing: two expirations one after the other.
    assert!(numbers(&w.cmd("wait 60"))[0] >= 1, "fd 60 did not fire");
    assert!(
        numbers(&w.cmd("wait 60"))[0] >= 1,
        "fd 60 fired once after the restore, then no more: not periodic"
    );
    let got = numbers(&w.cmd("get 60"));
    assert_eq!(got[1], 20 * MS, "fd 60 interval: {got:?}");
    assert!(got[0] > 0 && got[0] <= 20 * MS, "fd 60 left: {got:?}");
    assert_eq!(w.cmd("info 60"), "1 00");

    // Fd 61 expired before the dump, unread: one expiration, and armed for the next hour.
    assert_eq!(w.cmd("read 61"), "1", "fd 61: its unread expiration");
    let got = numbers(&w.cmd("get 61"));
    assert_eq!(
        got[1], HOUR,
        "fd 61 came back without its interval: {got:?}"
    );
    assert!(
        got[0] > HOUR - 600_000 * MS && got[0] <= HOUR,
        "fd 61 is not armed for its next period: {got:?}"
    );

    // Fd 62: every expiration that happened before the dump is read now.
    let read = numbers(&w.cmd("read 62"))[0];
    assert!(
        read >= piled,
        "fd 62: {read} expirations read, {piled} had happened before the dump"
    );
    assert_eq!(numbers(&w.cmd("get 62"))[1], 10 * MS);
    w.kill_restored();
}

#[test]
fn absolute_timerfds_keep_their_deadline_on_both_clocks() {
    cryo_bin();
    let mut w = Workload::spawn("timerfds", &["800"]);
    let real: u64 = w.cmd("deadline 63").parse().unwrap();
    let mono: u64 = w.cmd("deadline 64").parse().unwrap();
    let img = w.path("img");
    w.dump_ok(&img);
    // Both deadlines pass while the process is away.
    let until = Instant::now() + CMD_TIMEOUT;
    while clock_ns(libc::CLOCK_REALTIME) <= real || clock_ns(libc::CLOCK_MONOTONIC) <= mono {
        assert!(Instant::now() < until, "the deadlines never passed");
        std::thread::sleep(Duration::from_millis(10));
    }
    w.restore_background(&img);
    // They expired at their deadline, not at the time left counted from the restore.
    assert_eq!(w.cmd("read 63"), "1", "CLOCK_REALTIME absolute timer");
    assert_eq!(w.cmd("read 64"), "1", "CLOCK_MONOTONIC absolute timer");
    for fd in [63, 64] {
        let got = numbers(&w.cmd(&format!("get {fd}")));
        assert_eq!(got[1], HOUR, "fd {fd}: {got:?}");
        assert!(
            got[0] > HOUR - 600_000 * MS && got[0] <= HOUR,
            "fd {fd} is not armed for the period after its deadline: {got:?}"
        );
    }
    assert_eq!(
        w.cmd("info 63"),
        "0 03",
        "CLOCK_REALTIME, ABSTIME|CANCEL_ON_SET"
    );
    assert_eq!(w.cmd("info 64"), "1 01", "CLOCK_MONOTONIC, ABSTIME");
    w.kill_restored();
}
