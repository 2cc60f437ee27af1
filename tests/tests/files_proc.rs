//! fds on files of /proc and namespace fds: the restored process reads through each itself.
//! /proc/self/stat names it (pid and comm), /proc/self/status keeps its position, a
//! /proc/CHILD directory fd opens the child's files, /proc/meminfo reads, a network namespace
//! fd of cryo's and UTS namespace fds (cryo's and the process's own) can be entered. A
//! /proc/PID of a process outside the dump and a namespace no process of the dump is in are
//! refused at dump, naming pid and fd, the process left running.
//!
//! Needs the engine: `cryo` must be built (`cargo build -p cryo`).

use cryo_tests::{cryo_bin, Workload};

/// The bytes `from..from+len` of `/proc/PID/status`, escaped as the workload answers.
fn status_bytes(pid: i32, from: usize, len: usize) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text[from..from + len]
        .replace('\n', "\\n")
        .replace('\t', "\\t")
}

fn ns_ino(who: &str, kind: &str) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{who}/ns/{kind}"))
        .unwrap()
        .ino()
}

/// What the workload's fds read, as the test expects them from outside.
fn check_all(w: &Workload, when: &str) {
    let pid = w.pid();
    assert_eq!(
        w.cmd("stat"),
        format!("{pid} (cryo-workload)"),
        "{when}: /proc/self/stat"
    );
    assert_eq!(
        w.cmd("status-pos"),
        "20",
        "{when}: the position in /proc/self/status"
    );
    let child = w.cmd("child");
    assert_eq!(
        w.cmd("child-status"),
        child,
        "{when}: openat(/proc/CHILD, status)"
    );
    assert_eq!(w.cmd("meminfo"), "MemTotal:", "{when}: /proc/meminfo");
    assert_eq!(
        w.cmd("thread-comm"),
        "proc-thread",
        "{when}: /proc/self/task/TID/comm"
    );
    assert_eq!(
        w.cmd("epoll"),
        "ready 49",
        "{when}: an epoll watching /proc/self/mountinfo"
    );
    let host = ns_ino("self", "net");
    assert_eq!(
        w.cmd("ns 44 net"),
        format!("{host} {host}"),
        "{when}: cryo's network namespace, entered"
    );
}

#[test]
fn proc_files_of_the_process_its_child_and_proc_itself_come_back() {
    cryo_bin();
    let mut w = Workload::spawn("proc-files", &["all"]);
    check_all(&w, "before");
    w.dump(&w.path("left"), &["--leave-running"])
        .assert_success();
    check_all(&w, "--leave-running");
    w.dump_and_restore();
    check_all(&w, "restored");
    // The child inherited fds 40 and 41: one description each with its parent, as before.
    let child: i32 = w.cmd("child").parse().unwrap();
    for fd in [40, 41] {
        // SAFETY: kcmp takes numbers; KCMP_FILE (0) compares the two fds' descriptions.
        let same = unsafe { libc::syscall(libc::SYS_kcmp, w.pid(), child, 0, fd, fd) };
        assert_eq!(same, 0, "fd {fd} of the child is its parent's description");
    }
    // The rest of status read from the position kept (contents made anew).
    let next = w.cmd("status-next 10");
    assert_eq!(
        next,
        status_bytes(w.pid(), 20, 10),
        "status read on from 20"
    );
    w.kill_restored();
}

/// A file of /proc itself, not of a process.
#[test]
fn proc_meminfo_comes_back() {
    cryo_bin();
    let mut w = Workload::spawn("proc-files", &["meminfo"]);
    assert_eq!(w.cmd("meminfo"), "MemTotal:");
    w.dump_and_restore();
    assert_eq!(w.cmd("meminfo"), "MemTotal:", "restored");
    w.kill_restored();
}

#[test]
fn uts_namespace_fds_of_cryo_and_of_its_own_namespace_come_back() {
    cryo_bin();
    let mut w = Workload::spawn("proc-files", &["uts"]);
    let host = nix::unistd::gethostname()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let check = |w: &Workload, when: &str| {
        assert_eq!(
            w.cmd("hostname-in 45"),
            host,
            "{when}: cryo's UTS namespace"
        );
        assert_eq!(
            w.cmd("hostname-in 46"),
            "cryo-procfd-uts",
            "{when}: its own"
        );
        assert_eq!(w.cmd("hostname-in 45"), host, "{when}: cryo's again");
        assert_eq!(
            w.cmd("hostname-in 46"),
            "cryo-procfd-uts",
            "{when}: its own again"
        );
        assert_eq!(
            w.cmd("ns 46 uts").split(' ').nth(1).unwrap(),
            ns_ino(&w.pid().to_string(), "uts").to_string(),
            "{when}: fd 46 is the namespace it is in"
        );
    };
    check(&w, "before");
    w.dump(&w.path("left"), &["--leave-running"])
        .assert_success();
    check(&w, "--leave-running");
    w.dump_and_restore();
    check(&w, "restored");
    assert_ne!(ns_ino(&w.pid().to_string(), "uts"), ns_ino("self", "uts"));
    w.kill_restored();
}

/// A parent holding the UTS namespace of its child (the restore makes it again for the child):
/// the fd names the child's new namespace.
#[test]
fn a_namespace_fd_of_a_childs_own_namespace_names_the_restored_one() {
    cryo_bin();
    let mut w = Workload::spawn("proc-files", &["kid-uts"]);
    let child = w.cmd("child");
    w.dump_and_restore();
    assert_eq!(w.cmd("child"), child);
    let kid_ns = ns_ino(&child, "uts");
    assert_ne!(
        kid_ns,
        ns_ino("self", "uts"),
        "the child in a UTS namespace of its own"
    );
    assert_eq!(
        w.cmd("ns 46 uts"),
        format!("{kid_ns} {kid_ns}"),
        "fd 46 is the child's namespace, entered"
    );
    assert_eq!(w.cmd("hostname-in 46"), "cryo-procfd-kid");
    w.kill_restored();
}

/// /proc/1/status, pid 1 of cryo's PID namespace being outside the dump: the same process at
/// a restore on this boot (in a new PID namespace too), reopened there.
#[test]
fn a_proc_file_of_pid_1_outside_the_dump_comes_back_on_pid_1() {
    cryo_bin();
    let mut w = Workload::spawn("proc-files", &["outside"]);
    let first = w.cmd("first-line");
    assert!(first.starts_with("Name: "), "{first}");
    let img = w.path("img");
    w.dump_ok(&img);
    // Restored into a new PID namespace too, the process reads cryo's /proc: pid 1 there is
    // still this one.
    let root = w.restore_copy_in_namespaces(&img);
    let _reaper = cryo_tests::Reaper(vec![root]);
    w.adopt_restored_at(root);
    assert_eq!(
        w.cmd("first-line"),
        first,
        "pid 1's status, in a new PID namespace"
    );
    assert_eq!(w.cmd("same-inode"), "true", "fd 40 is /proc/1/status");
    w.kill_restored();
}

/// The image's pid 1 was another process (another boot or host): refused at restore, naming
/// the file.
#[test]
fn a_proc_file_of_pid_1_is_refused_where_pid_1_is_another_process() {
    use cryo_proto::image::file_desc::Kind;
    cryo_bin();
    let mut w = Workload::spawn("proc-files", &["outside"]);
    let img = w.path("img");
    w.dump_ok(&img);
    let path = img.join("files.img");
    let mut descs: Vec<cryo_proto::image::FileDesc> =
        cryo_proto::frame::read_image(&path, cryo_proto::ImageKind::Files).unwrap();
    let mut forged = 0;
    for d in &mut descs {
        if let Some(Kind::ProcFile(p)) = &mut d.kind {
            if !p.init.is_empty() {
                p.init = "00000000-0000-0000-0000-000000000000 1".into();
                forged += 1;
            }
        }
    }
    assert_eq!(forged, 1, "the /proc/1 file in the image");
    std::fs::remove_file(&path).unwrap();
    cryo_proto::frame::write_image(&path, cryo_proto::ImageKind::Files, &descs).unwrap();
    let out = w.cryo(&["restore", "-D", img.to_str().unwrap(), "--detach"]);
    out.assert_refused()
        .assert_stderr_mentions("/proc/1/status named pid 1")
        .assert_stderr_mentions("another process");
    assert!(
        !cryo_tests::pid_exists(w.pid()),
        "the refused restore made the process"
    );
}

/// A file of another process outside the dump, or of a thread of pid 1, is refused.
#[test]
fn a_proc_file_of_a_process_outside_the_dump_is_refused_naming_pid_fd_and_path() {
    cryo_bin();
    let w = Workload::spawn("proc-files", &["outside-parent"]);
    w.assert_dump_refused("40", "a process outside the dump");
    let w = Workload::spawn("proc-files", &["outside-task"]);
    w.assert_dump_refused(
        "40",
        "/proc/1/task/1/status (a thread of pid 1, outside the dump",
    );
}

#[test]
fn an_fd_on_proc_pid_mem_is_refused_naming_pid_fd_and_path() {
    cryo_bin();
    let w = Workload::spawn("proc-files", &["mem"]);
    w.assert_dump_refused("40", "/mem (a process's memory");
}

#[test]
fn a_namespace_fd_no_process_of_the_dump_is_in_is_refused_naming_pid_fd_and_namespace() {
    cryo_bin();
    let w = Workload::spawn("proc-files", &["lost-ns"]);
    w.assert_dump_refused("46", "uts namespace uts:[");
    w.dump(&w.path("img"), &[])
        .assert_stderr_mentions("no process of the dump is in");
}

/// Restored with `--pidns` into a new PID namespace: its /proc files name the process as
/// cryo's /proc does now (its new pid here), as /proc/self does.
#[test]
fn proc_files_restored_into_a_new_pid_namespace_name_the_restored_process() {
    cryo_bin();
    let mut w = Workload::spawn("proc-files", &["all"]);
    let img = w.path("img");
    w.dump_ok(&img);
    let out = w.cryo(&[
        "restore".as_ref(),
        "-D".as_ref(),
        img.as_os_str(),
        "--detach".as_ref(),
        "--pidns".as_ref(),
    ]);
    out.assert_success();
    let root: i32 = out.stdout.trim().parse().expect("the restored root's pid");
    let _reaper = cryo_tests::Reaper(vec![root]);
    assert_ne!(root, w.pid(), "a new pid here");
    w.adopt_restored_at(root);
    assert_eq!(
        w.cmd("stat"),
        format!("{root} (cryo-workload)"),
        "/proc/self/stat"
    );
    assert_eq!(w.cmd("status-pos"), "20");
    assert_eq!(w.cmd("thread-comm"), "proc-thread");
    assert_eq!(w.cmd("meminfo"), "MemTotal:");
    assert_eq!(w.cmd("epoll"), "ready 49");
}
