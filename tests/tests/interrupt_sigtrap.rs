//! A process's own SIGTRAP across a dump: its handler, and one held pending, are neither eaten
//! nor reset by the remote calls (which never trap), after `--leave-running` in the original
//! and after restore in the restored process. A process traced by another tracer is refused,
//! naming the tracer.
//!
//! Needs the engine: `cryo` must be built (`cargo build -p cryo`).

use cryo_tests::{cryo_bin, Workload};

/// The handler ran once, and one SIGTRAP is held pending.
fn trapping() -> Workload {
    let w = Workload::spawn("sigtrap", &[]);
    assert_eq!(w.cmd("raise"), "1");
    assert_eq!(w.cmd("hold"), "1");
    w
}

/// The pending SIGTRAP reaches the handler once unblocked, and a new one too.
#[track_caller]
fn handler_and_pending_intact(w: &Workload, who: &str) {
    assert_eq!(w.cmd("count"), "1", "{who}: count");
    assert_eq!(w.cmd("release"), "2", "{who}: the pending SIGTRAP");
    assert_eq!(w.cmd("raise"), "3", "{who}: the handler");
}

#[test]
fn a_sigtrap_handler_and_a_pending_sigtrap_survive_leave_running() {
    cryo_bin();
    let w = trapping();
    w.dump(&w.path("img"), &["--leave-running"])
        .assert_success();
    handler_and_pending_intact(&w, "original after --leave-running");
}

#[test]
fn a_sigtrap_handler_and_a_pending_sigtrap_are_restored() {
    cryo_bin();
    let mut w = trapping();
    w.dump_and_restore();
    handler_and_pending_intact(&w, "restored");
}

#[test]
fn a_process_traced_by_another_tracer_is_refused_naming_it() {
    cryo_bin();
    let w = Workload::spawn("counter", &[]);
    let out = w.dump_while_traced();
    out.assert_refused()
        .assert_stderr_has_word(&w.pid().to_string())
        // TracerPid names the tracing thread: this test's.
        .assert_stderr_has_word(&nix::unistd::gettid().to_string())
        .assert_stderr_mentions("traced by");
}
