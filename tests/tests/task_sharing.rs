//! What clone flags let processes share (an fd table, a working directory and umask, memory,
//! signal handlers) and what a thread may keep for itself (unshare): a restore gives each
//! process its own, so the dump refuses them, naming both tasks and the flag, and the
//! processes run on as before. A parent waiting in vfork is refused at once as a temporary
//! state (its freeze would wait for its child's exec).
//!
//! Needs the engine: `cryo` must be built (`cargo build -p cryo`).

use cryo_tests::{cryo_bin, run_cryo, status_field, Workload};

#[test]
fn objects_a_child_shares_with_its_parent_are_refused_naming_both_and_the_flag() {
    cryo_bin();
    for (how, what, flag) in [
        ("files", "fd table", "CLONE_FILES"),
        ("fs", "working directory, root and umask", "CLONE_FS"),
        ("vm", "address space", "CLONE_VM"),
        ("sighand", "address space", "CLONE_VM"),
    ] {
        let w = Workload::spawn("share", &[how]);
        let child = w.cmd("child");
        let out = w.dump(&w.path("img"), &[]);
        out.assert_refused()
            .assert_stderr_mentions(&format!("shares its {what}"))
            .assert_stderr_mentions(flag)
            .assert_stderr_has_word(&w.pid().to_string())
            .assert_stderr_has_word(&child);
        w.assert_untouched();
        assert!(
            std::path::Path::new(&format!("/proc/{child}")).exists(),
            "{how}: the child runs on"
        );
    }
}

#[test]
fn a_thread_with_a_table_or_fs_of_its_own_is_refused_naming_it() {
    cryo_bin();
    for (how, what, flag) in [
        ("thread-files", "fd table", "CLONE_FILES"),
        ("thread-fs", "working directory, root and umask", "CLONE_FS"),
    ] {
        let w = Workload::spawn("share", &[how]);
        let tid = w.cmd("tid");
        let out = w.dump(&w.path("img"), &["--leave-running"]);
        out.assert_refused()
            .assert_stderr_mentions(&format!("pid {} thread {tid}", w.pid()))
            .assert_stderr_mentions(&format!("has a {what}"))
            .assert_stderr_mentions("of its own")
            .assert_stderr_mentions(flag);
        w.assert_untouched();
    }
}

#[test]
fn a_parent_waiting_in_vfork_is_refused_at_once_as_temporary() {
    cryo_bin();
    let w = Workload::spawn("share", &["vfork"]);
    let child = w.cmd("child");
    // The child is in vfork once it sleeps uninterruptibly (it never leaves it).
    let state = |pid: &str| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rsplit_once(") ").map(|(_, r)| r.chars().next()))
            .flatten()
    };
    let waited = std::time::Instant::now();
    while state(&child) != Some('D') {
        assert!(
            waited.elapsed().as_secs() < 10,
            "child {child} never entered vfork"
        );
        std::thread::yield_now();
    }
    let out = w.dump(&w.path("img"), &["--check-only"]);
    assert_eq!(out.status.code(), Some(2), "{out}");
    out.assert_stderr_mentions("temporary")
        .assert_stderr_mentions(&format!("pid {child}: waits in vfork"));
    let out = w.dump(&w.path("img2"), &[]);
    out.assert_refused()
        .assert_stderr_mentions(&format!("pid {child}: waits in vfork"));
    w.assert_untouched();
}

#[test]
fn a_root_sharing_its_fd_table_with_its_parent_outside_the_dump_is_refused() {
    cryo_bin();
    let w = Workload::spawn("share", &["files"]);
    let child = w.cmd("child");
    let img = w.path("img");
    let out = run_cryo(
        &w.path(""),
        "dump-child",
        ["dump", "-t", child.as_str(), "-D", img.to_str().unwrap()],
    );
    out.assert_refused()
        .assert_stderr_mentions(&format!(
            "pid {child}: shares its fd table with pid {} (outside the dump)",
            w.pid()
        ))
        .assert_stderr_mentions("CLONE_FILES");
    w.assert_untouched();
    assert_eq!(
        status_field(child.parse().unwrap(), "TracerPid").as_deref(),
        Some("0"),
        "the child is let go"
    );
}
