//! Signal handlers, masks and pending signals after a restore.
//!
//! Needs the engine: `cryo` must be built (`cargo build -p cryo`).

use std::time::Instant;

use cryo_tests::{cryo_bin, mask_has, Pidfd, Workload, CMD_TIMEOUT};

fn send(pid: i32, sig: i32) {
    Pidfd::open(pid).unwrap().signal(sig).unwrap();
}

/// Asks `count` until it reaches `want`: each ask is a round trip, no sleeps.
fn await_count(w: &Workload, want: u64) {
    let deadline = Instant::now() + CMD_TIMEOUT;
    loop {
        let n: u64 = w.cmd("count").parse().unwrap();
        if n >= want {
            assert_eq!(n, want);
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the SIGUSR1 handler ran {n} times, expected {want}\n{}",
            w.log()
        );
    }
}

#[test]
fn a_signal_handler_still_runs_after_restore() {
    cryo_bin();
    let mut w = Workload::spawn("signal", &[]);
    // One at a time: a second standard signal sent before the first is handled merges with it.
    send(w.pid(), libc::SIGUSR1);
    await_count(&w, 1);
    send(w.pid(), libc::SIGUSR1);
    await_count(&w, 2);
    w.dump_and_restore();
    assert_eq!(w.cmd("count"), "2");
    assert!(mask_has(&w.status("SigCgt"), libc::SIGUSR1));
    send(w.pid(), libc::SIGUSR1);
    await_count(&w, 3);
    // The handler interrupted the blocking read, which restarted (SA_RESTART).
    assert_eq!(w.cmd("tick"), "1");
    w.kill_restored();
}

#[test]
fn a_blocked_signal_stays_blocked_and_pending() {
    cryo_bin();
    let mut w = Workload::spawn("signal", &[]);
    send(w.pid(), libc::SIGUSR2);
    assert_eq!(w.cmd("pending"), "1");
    w.dump_and_restore();
    assert!(mask_has(&w.status("SigBlk"), libc::SIGUSR2));
    assert_eq!(w.cmd("pending"), "1", "the pending SIGUSR2 was lost");
    w.kill_restored();
}
