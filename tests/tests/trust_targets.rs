//! Targets refused up front with a clear reason (a pid given twice, pid 1, cryo's own
//! ancestors), and `cryo unlock` of a directory that does not exist.
//!
//! Needs the engine: `cryo` must be built (`cargo build -p cryo`).

use cryo_tests::{control_dir, cryo_bin, run_cryo, Workload};

#[test]
fn a_pid_given_twice_is_refused_as_such() {
    cryo_bin();
    let w = Workload::spawn("counter", &[]);
    let pid = w.pid().to_string();
    let img = w.path("img");
    let out = w.cryo(&[
        "dump",
        "-t",
        &format!("{pid},{pid}"),
        "-D",
        img.to_str().unwrap(),
    ]);
    out.assert_refused()
        .assert_stderr_has_word(&pid)
        .assert_stderr_mentions("given twice");
    assert!(w.original_alive());
    w.assert_untouched();
    assert_eq!(w.cmd("tick"), "1");
}

#[test]
fn pid_1_is_refused_up_front() {
    cryo_bin();
    let dir = control_dir();
    let img = dir.path().join("img");
    let out = run_cryo(
        dir.path(),
        "dump",
        ["dump", "-t", "1", "-D", img.to_str().unwrap()],
    );
    out.assert_refused()
        .assert_stderr_has_word("1")
        .assert_stderr_mentions("init");
    assert!(!img.exists(), "the refused dump made its image directory");
}

#[test]
fn an_ancestor_of_cryo_is_refused_up_front() {
    cryo_bin();
    let dir = control_dir();
    let img = dir.path().join("img");
    // This test process is cryo's parent.
    let me = std::process::id().to_string();
    let out = run_cryo(
        dir.path(),
        "dump",
        ["dump", "-t", &me, "-D", img.to_str().unwrap()],
    );
    out.assert_refused()
        .assert_stderr_has_word(&me)
        .assert_stderr_mentions("ancestor of cryo");
}

#[test]
fn unlock_of_a_missing_directory_fails_clearly() {
    cryo_bin();
    let dir = control_dir();
    let img = dir.path().join("no-such-dump");
    let out = run_cryo(
        dir.path(),
        "unlock",
        ["unlock", "-D", img.to_str().unwrap()],
    );
    out.assert_refused()
        .assert_stderr_mentions(img.to_str().unwrap())
        .assert_stderr_mentions("no such image directory");
}
