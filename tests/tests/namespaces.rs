//! `cryo restore --pidns --netns`: a copy in new namespaces beside a still-running original.
//!
//! Needs the engine: `cryo` must be built (`cargo build -p cryo`).

use cryo_tests::{cryo_bin, status_field, Pidfd, Workload};

#[test]
fn a_copy_runs_in_its_own_namespaces_beside_the_original() {
    cryo_bin();
    let w = Workload::spawn("counter", &[]);
    w.cmd("tick");
    w.cmd("tick");
    let img = w.path("img");
    w.dump(&img, &["--leave-running"]).assert_success();
    assert_eq!(w.cmd("tick"), "3", "the original goes on");
    // The original keeps its pid; only a new PID namespace lets the copy have it too.
    let outside = w.restore_copy_in_namespaces(&img);
    let copy = Pidfd::open(outside).unwrap();
    assert_ne!(outside, w.pid());
    let nspid: Vec<i32> = status_field(outside, "NSpid")
        .unwrap_or_default()
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(
        nspid,
        [outside, w.pid()],
        "the copy has the original pid inside"
    );
    assert_ne!(
        std::fs::read_link(format!("/proc/{outside}/ns/net")).unwrap(),
        std::fs::read_link("/proc/self/ns/net").unwrap(),
        "the copy has a network namespace of its own"
    );
    // Both read the same command FIFO: stop the original while talking to the copy.
    let original = w.stop_original();
    assert_eq!(w.cmd("pid"), w.pid().to_string(), "getpid() in the copy");
    assert_eq!(
        w.cmd("ppid"),
        "1",
        "the copy's parent is its namespace's init"
    );
    assert_eq!(w.cmd("tick"), "3", "the copy goes on from the dumped state");
    copy.signal(libc::SIGKILL).unwrap();
    assert!(
        copy.wait_exit(cryo_tests::CMD_TIMEOUT),
        "the copy did not die"
    );
    original.signal(libc::SIGCONT).unwrap();
    assert_eq!(w.cmd("tick"), "4", "the original kept its own state");
}
