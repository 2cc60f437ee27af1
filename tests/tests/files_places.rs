//! Working and root directories and /proc fds: a chrooted process comes back in the same
//! chroot and working directory; a deleted working directory and an fd on /proc/PID are
//! refused by the dump, naming the pid (and fd), with the process left running.
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
fn a_deleted_working_directory_is_refused_at_dump() {
    cryo_bin();
    let dir = control_dir();
    let base = dir.path().join("base");
    std::fs::create_dir(&base).unwrap();
    let w = Workload::spawn_in(dir, "places", &["deleted-cwd", base.to_str().unwrap()]);
    let out = w.dump(&w.path("img"), &[]);
    out.assert_refused()
        .assert_stderr_mentions(&format!("pid {}", w.pid()))
        .assert_stderr_mentions("working directory");
    w.assert_untouched();
}

#[test]
fn an_fd_on_proc_pid_is_refused_at_dump() {
    cryo_bin();
    let w = Workload::spawn("places", &["proc-fd", "/"]);
    let out = w.dump(&w.path("img"), &[]);
    out.assert_refused()
        .assert_stderr_mentions(&format!("pid {} fd 40", w.pid()))
        .assert_stderr_mentions(&format!("/proc/{}", w.pid()));
    w.assert_untouched();
}
