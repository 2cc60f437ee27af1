//! Working and root directories and /proc fds: a chrooted process comes back in the same
//! chroot and working directory; a removed working directory comes back removed (fds on /proc:
//! files_proc.rs).
//!
//! Needs the engine: `cryo` must be built (`cargo build -p cryo`).

use cryo_tests::{control_dir, cryo_bin, Workload};

#[test]
fn a_chrooted_process_comes_back_in_its_chroot() {
    cryo_bin();
    let dir = control_dir();
    let jail = dir.path().to_path_buf();
    let mut w = Workload::spawn_in(dir, "places", &["chroot", jail.to_str().unwrap()]);
    assert_eq!(w.cmd("where"), "/inner");
    assert_eq!(w.cmd("root"), "true");
    w.dump_and_restore();
    assert_eq!(
        w.cmd("where"),
        "/inner",
        "the working directory inside the chroot"
    );
    assert_eq!(w.cmd("root"), "true", "the root is the chroot");
    w.kill_restored();
}

#[test]
fn a_removed_working_directory_comes_back_removed_with_its_mode_and_times() {
    cryo_bin();
    let dir = control_dir();
    let base = dir.path().join("base");
    std::fs::create_dir(&base).unwrap();
    let mut w = Workload::spawn_in(dir, "places", &["deleted-cwd", base.to_str().unwrap()]);
    let cwd = w.cmd("cwd");
    assert!(cwd.contains("/gone (deleted) "), "{cwd}");
    let create = w.cmd("create-here");
    assert_eq!(create, format!("errno {}", libc::ENOENT));
    w.dump_and_restore();
    assert_eq!(
        w.cmd("cwd"),
        cwd,
        "the same name, removed, mode, no link, mtime"
    );
    assert_eq!(w.cmd("create-here"), create, "nothing can be made in it");
    w.kill_restored();
}

/// A removed working directory the process also holds open: made again once, for the fd, and
/// entered, so the two are one directory as before.
#[test]
fn a_removed_working_directory_also_held_open_comes_back_one_with_its_fd() {
    cryo_bin();
    let dir = control_dir();
    let base = dir.path().join("base");
    std::fs::create_dir(&base).unwrap();
    let mut w = Workload::spawn_in(dir, "places", &["deleted-cwd-held", base.to_str().unwrap()]);
    let cwd = w.cmd("cwd");
    assert_eq!(w.cmd("same-as-41"), "true");
    w.dump_and_restore();
    assert_eq!(
        w.cmd("same-as-41"),
        "true",
        "the fd and the working directory"
    );
    assert_eq!(
        w.cmd("cwd"),
        cwd,
        "the same name, removed, mode, no link, mtime"
    );
    assert_eq!(w.cmd("create-here"), format!("errno {}", libc::ENOENT));
    w.kill_restored();
}

/// A removed working directory shared with a child, or held open by another process: a
/// restore makes each process's again on its own (the fd's too), so they would no longer be
/// one directory: refused at dump, naming the pid, and the process runs on.
#[test]
fn a_removed_working_directory_shared_or_held_open_elsewhere_is_refused() {
    cryo_bin();
    for (how, needle) in [
        ("deleted-cwd-child", "'s too"),
        (
            "deleted-cwd-held-by-child",
            "another process of the dump (pid",
        ),
    ] {
        let dir = control_dir();
        let base = dir.path().join("base");
        std::fs::create_dir(&base).unwrap();
        let w = Workload::spawn_in(dir, "places", &[how, base.to_str().unwrap()]);
        let cwd = w.cmd("cwd");
        let out = w.dump(&w.path("img"), &[]);
        out.assert_refused()
            .assert_stderr_mentions("its working directory")
            .assert_stderr_mentions(needle);
        w.assert_untouched();
        assert_eq!(w.cmd("cwd"), cwd, "{how}: the process runs on");
    }
}

/// A working directory in the /proc directory of a process that has gone (zdtm's
/// unhashed_proc): nothing at restore can be it. Before: dumped, killed, and the restore
/// failed (`chdir /proc/N: No such file or directory`).
#[test]
fn a_working_directory_in_a_processs_proc_directory_is_refused_at_dump() {
    cryo_bin();
    let w = Workload::spawn("places", &["proc-cwd", "/"]);
    let out = w.dump(&w.path("img"), &[]);
    out.assert_refused()
        .assert_stderr_mentions(&format!("pid {}: its working directory /proc/", w.pid()))
        .assert_stderr_mentions("a process's directory of /proc");
    w.assert_untouched();
}
