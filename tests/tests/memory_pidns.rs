//! `cryo restore --pidns --netns` of a whole tree: a pre-fork server (a parent and two
//! workers sharing private memory copy-on-write and one page of shared anonymous memory) is
//! dumped with `--leave-running` and restored as a copy beside its still running original.
//! The copy's processes check their memory themselves, and the shared page is one object in
//! the copy and another in the original.
//!
//! Needs the engine: `cryo` must be built (`cargo build -p cryo`).

use cryo_tests::{children_of, cryo_bin, status_field, Pidfd, Reaper, Workload};

/// The pid of `pid` in its innermost PID namespace.
fn inner_pid(pid: i32) -> i32 {
    status_field(pid, "NSpid")
        .and_then(|v| v.split_whitespace().last().and_then(|p| p.parse().ok()))
        .unwrap_or_else(|| panic!("no NSpid for {pid}"))
}

#[test]
fn a_tree_with_shared_memory_is_copied_into_new_namespaces() {
    cryo_bin();
    let w = Workload::spawn("cow-tree", &["16", "2"]);
    let workers = w.kids();
    let mut reaper = Reaper(workers.clone());
    assert_eq!(w.cmd("check"), "ok");
    assert_eq!(w.cmd("poke 0 5"), "5", "the shared page, before the dump");
    let img = w.path("img");
    w.dump(&img, &["--leave-running"]).assert_success();
    assert_eq!(w.cmd("poke 1 6"), "6", "the original goes on");

    let outside = w.restore_copy_in_namespaces(&img);
    reaper.0.push(outside);
    let copy = Pidfd::open(outside).unwrap();
    assert_eq!(
        inner_pid(outside),
        w.pid(),
        "the copy's root has the original pid inside"
    );
    let copy_workers = children_of(outside as u32);
    reaper.0.extend(&copy_workers);
    let mut inside: Vec<i32> = copy_workers.iter().map(|&p| inner_pid(p)).collect();
    inside.sort();
    let mut want = workers.clone();
    want.sort();
    assert_eq!(
        inside, want,
        "the copy's workers have the original pids inside"
    );

    // Both roots read the same command FIFO: stop the original while talking to the copy.
    let original = w.stop_original();
    assert_eq!(w.cmd("pid"), w.pid().to_string(), "getpid() in the copy");
    assert_eq!(
        w.cmd("check"),
        "ok",
        "the copy's memory, checked by its processes"
    );
    assert_eq!(w.cmd("peek 0"), "5", "the shared page as dumped");
    assert_eq!(
        w.cmd("peek 1"),
        "0",
        "the original's later write is not the copy's"
    );
    assert_eq!(
        w.cmd("poke 1 9"),
        "9",
        "a worker of the copy writes, its parent reads"
    );
    copy.signal(libc::SIGKILL).unwrap();
    assert!(
        copy.wait_exit(cryo_tests::CMD_TIMEOUT),
        "the copy did not die"
    );
    original.signal(libc::SIGCONT).unwrap();
    assert_eq!(
        w.cmd("peek 1"),
        "6",
        "the original's shared page is its own"
    );
    assert_eq!(w.cmd("check"), "ok", "the original's memory");
}
