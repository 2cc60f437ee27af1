//! Process and thread attributes a restore here could not set (issue 12,
//! docs/state-coverage.md): the dump refuses them, naming pid, thread and attribute, and the
//! target runs on untouched. cryo's lack of a capability is made with `setpriv` (dropped from
//! its bounding and inheritable sets, so the exec'd cryo runs without it).
//!
//! Needs the engine: `cryo` must be built (`cargo build -p cryo`).

use std::path::Path;
use std::process::Command;

use cryo_tests::{cryo_bin, has_word, Workload};

/// `cryo dump -t PID -D IMG` run without the capabilities `drop` (setpriv's names, comma
/// separated), bounded by `timeout`; returns (success, stderr).
fn dump_without(w: &Workload, img: &Path, drop: &str) -> (bool, String) {
    let caps: String = drop
        .split(',')
        .map(|c| format!("-{c}"))
        .collect::<Vec<_>>()
        .join(",");
    let out = Command::new("timeout")
        .arg("120")
        .arg("setpriv")
        .arg(format!("--inh-caps={caps}"))
        .arg(format!("--bounding-set={caps}"))
        .arg(cryo_bin())
        .args(["dump", "-t", &w.pid().to_string(), "-D"])
        .arg(img)
        .output()
        .expect("run setpriv cryo dump");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The dump failed naming the workload's pid, `thread` and every word of `needles`, and the
/// workload still runs as before.
#[track_caller]
fn assert_refused(w: &Workload, (ok, stderr): (bool, String), thread: i32, needles: &[&str]) {
    assert!(!ok, "the dump should have been refused:\n{stderr}");
    let pid = w.pid().to_string();
    assert!(has_word(&stderr, &pid), "no pid {pid} in:\n{stderr}");
    assert!(
        stderr.contains(&format!("thread {thread}")),
        "no thread {thread} in:\n{stderr}"
    );
    for n in needles {
        assert!(stderr.contains(n), "no {n:?} in:\n{stderr}");
    }
    w.assert_untouched();
}

/// A thread of the workload other than the main one (the `thread` setting's).
fn second_thread(w: &Workload) -> i32 {
    let tids: Vec<i32> = std::fs::read_dir(format!("/proc/{}/task", w.pid()))
        .expect("task dir")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&t| t != w.pid())
        .collect();
    *tids.first().expect("a second thread")
}

/// SCHED_RR in a second thread, dumped by a cryo without CAP_SYS_NICE (and RLIMIT_RTPRIO 0):
/// it could not set the policy back.
#[test]
fn a_realtime_policy_cryo_may_not_set_is_refused() {
    cryo_bin();
    let w = Workload::spawn("attrs", &["thread", "t.sched=rr:5"]);
    assert_eq!(w.cmd("tget sched"), "rr 5");
    let tid = second_thread(&w);
    let refused = dump_without(&w, &w.path("img"), "sys_nice");
    assert_refused(&w, refused, tid, &["scheduling policy", "SCHED_RR 5"]);
    assert_eq!(w.cmd("tget sched"), "rr 5");
}

/// A lower nice value than cryo's own, dumped by a cryo without CAP_SYS_NICE.
#[test]
fn a_nice_value_cryo_may_not_set_is_refused() {
    cryo_bin();
    let w = Workload::spawn("attrs", &["nice=-5"]);
    assert_eq!(w.cmd("get nice"), "-5");
    let refused = dump_without(&w, &w.path("img"), "sys_nice");
    assert_refused(&w, refused, w.pid(), &["nice -5"]);
}

/// A loginuid other than cryo's, dumped by a cryo without CAP_AUDIT_CONTROL (needed to write
/// it at restore).
#[test]
fn a_loginuid_cryo_may_not_write_is_refused() {
    cryo_bin();
    let w = Workload::spawn("attrs", &["loginuid=1000"]);
    assert_eq!(w.cmd("get loginuid"), "1000");
    let refused = dump_without(&w, &w.path("img"), "audit_control");
    assert_refused(
        &w,
        refused,
        w.pid(),
        &["loginuid 1000", "CAP_AUDIT_CONTROL"],
    );
}

#[test]
fn a_hard_limit_above_cryos_own_is_refused_naming_both() {
    cryo_bin();
    let w = Workload::spawn("counter", &[]);
    let theirs = std::fs::read_to_string(format!("/proc/{}/limits", w.pid()))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(4).map(String::from))
        .expect("the workload's hard RLIMIT_NOFILE");
    assert_ne!(theirs, "64", "the workload's hard limit is above cryo's");
    // cryo runs with a hard RLIMIT_NOFILE of 64 (it may lower its own, never raise it back)
    // and without CAP_SYS_RESOURCE (these machines' root lacks it; a CI runner's may not).
    let img = w.path("img");
    let out = Command::new("timeout")
        .arg("120")
        .args(["setpriv", "--bounding-set=-sys_resource"])
        .args(["prlimit", "--nofile=64:64"])
        .arg(cryo_bin())
        .args(["dump", "-t", &w.pid().to_string(), "-D"])
        .arg(&img)
        .output()
        .expect("run prlimit cryo dump");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_refused(
        &w,
        (out.status.success(), stderr),
        w.pid(),
        &["RLIMIT_NOFILE", &format!("hard limit {theirs}"), "(64)"],
    );
}

/// Memory-deny-write-execute refuses the writable and executable page cryo's calls in the
/// process need: refused, named, and the process runs on.
#[test]
fn memory_deny_write_execute_is_refused_naming_pid_and_attribute() {
    cryo_bin();
    let w = Workload::spawn("attrs", &["mdwe=1"]);
    let out = w.dump(&w.path("img"), &[]);
    assert!(!out.status.success(), "the dump should be refused\n{out}");
    let pid = w.pid().to_string();
    assert!(
        has_word(&out.stderr, &pid),
        "no pid {pid} in:\n{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("memory-deny-write-execute (PR_SET_MDWE, flags 0x1)"),
        "{}",
        out.stderr
    );
    w.assert_untouched();
    assert_eq!(w.cmd("get umask").len(), 3, "the target answers");
}

/// A local descriptor table (modify_ldt): cryo does not write one back, so the dump refuses
/// it, naming pid and attribute, and the target runs on.
#[test]
fn a_local_descriptor_table_is_refused_naming_pid_and_attribute() {
    cryo_bin();
    let w = Workload::spawn("attrs", &["ldt=1"]);
    let out = w.dump(&w.path("img"), &[]);
    assert!(!out.status.success(), "the dump should be refused\n{out}");
    let pid = w.pid().to_string();
    assert!(
        out.stderr
            .contains(&format!("pid {pid} thread {pid}: local descriptor table")),
        "{}",
        out.stderr
    );
    w.assert_untouched();
    assert_eq!(w.cmd("get umask").len(), 3, "the target answers");
}

/// A thread's own NUMA memory policy (set_mempolicy MPOL_BIND), in a thread other than the
/// main one: refused, naming pid, thread and attribute.
#[test]
fn a_threads_numa_policy_is_refused_naming_pid_thread_and_attribute() {
    cryo_bin();
    let w = Workload::spawn("attrs", &["thread", "t.mempolicy=bind"]);
    let tid = second_thread(&w);
    let out = w.dump(&w.path("img"), &[]);
    let refused = (out.status.success(), out.stderr.clone());
    assert_refused(
        &w,
        refused,
        tid,
        &["numa memory policy (set_mempolicy)", "mode 0x2"],
    );
    assert_eq!(w.cmd("get umask").len(), 3, "the target answers");
}

/// A mapping with a NUMA memory policy of its own (mbind MPOL_BIND): refused, naming pid, the
/// mapping and its policy.
#[test]
fn a_mappings_numa_policy_is_refused_naming_pid_mapping_and_policy() {
    cryo_bin();
    let w = Workload::spawn("attrs", &["mbind=1"]);
    let out = w.dump(&w.path("img"), &[]);
    let pid = w.pid();
    let refused = (out.status.success(), out.stderr.clone());
    assert_refused(
        &w,
        refused,
        pid,
        &["numa memory policy bind:0 (mbind)", "mapping 0x"],
    );
    assert_eq!(w.cmd("get umask").len(), 3, "the target answers");
}

/// Keyrings cryo does not make again: a session keyring with a logon key (unreadable, so not
/// dumped), one with a key that expires (the kernel shows the time left only to the minute),
/// a named one, a process keyring, a thread keyring, a thread in a session keyring of its own;
/// each refused naming pid, thread and keyring, the target running on.
#[test]
fn keyrings_with_keys_or_of_a_thread_or_process_are_refused_naming_them() {
    cryo_bin();
    let cases: [(&[&str], bool, &[&str]); 6] = [
        (
            &["keyring=new", "key=a:b", "expiring-key=c:d:600"],
            false,
            &["session keyring", "expire (keyctl timeout)"],
        ),
        (
            &["keyring=new", "key=a:b", "logon-key=secret:abc"],
            false,
            &[
                "session keyring",
                "\"_ses\" with 2 keys, 1 of them user keys it may read",
            ],
        ),
        (
            &["keyring=name:cryo-test"],
            false,
            &["session keyring", "\"cryo-test\" with 0 keys"],
        ),
        (&["process-keyring=1"], false, &["process keyring"]),
        (&["thread", "t.thread-keyring=1"], true, &["thread keyring"]),
        (
            &["thread", "t.keyring=new"],
            true,
            &["session keyring", "a thread that joined"],
        ),
    ];
    for (settings, in_thread, needles) in cases {
        let w = Workload::spawn("attrs", settings);
        let tid = if in_thread {
            second_thread(&w)
        } else {
            w.pid()
        };
        let out = w.dump(&w.path("img"), &[]);
        let refused = (out.status.success(), out.stderr.clone());
        assert_refused(&w, refused, tid, needles);
        assert_eq!(w.cmd("get umask").len(), 3, "the target answers");
    }
}

/// A process without a session keyring of its own, restored by a `cryo restore` that has one
/// (a login shell's): it would inherit cryo's, so the restore refuses before making anything,
/// naming the pid; the image stays restorable, from a cryo without one.
#[test]
fn a_restore_from_a_session_keyring_of_its_own_is_refused_for_a_process_without_one() {
    cryo_bin();
    let mut w = Workload::spawn("attrs", &[]);
    assert_eq!(w.cmd("get session-keyring"), "user");
    let img = w.path("img");
    w.dump_ok(&img);
    let img_arg = img.to_str().unwrap();
    let out = cryo_tests::run_cryo_in_a_session_keyring(
        &w.path(""),
        "restore-keyring",
        &["restore", "-D", img_arg, "--detach"],
    );
    assert!(
        !out.status.success(),
        "the restore should be refused\n{out}"
    );
    let pid = w.pid();
    assert!(
        out.stderr
            .contains(&format!("pid {pid} had no session keyring of its own")),
        "{out}"
    );
    w.restore_detached(&img);
    assert_eq!(w.cmd("get session-keyring"), "user");
}

/// A root with a parent-death signal restored with --detach: cryo, its parent after the
/// restore, ends at once and would send it (SIGHUP ended the process as soon as `cryo
/// restore --detach` returned). Refused at restore before anything is made, naming pid,
/// thread and signal; the image stays, and a restore without --detach (cryo stays its
/// parent) brings it back with its signal. Before 2026-12-07 the detached restore succeeded
/// and the process died of its signal (probe prctl_misc PD=1).
#[test]
fn a_detached_restore_of_a_root_with_a_parent_death_signal_is_refused_naming_it() {
    cryo_bin();
    let mut w = Workload::spawn("attrs", &["pdeathsig=1"]);
    // `restore --check-only --detach` says so first, as a permanent finding (exit 3); the same
    // judge without --detach finds nothing of it. Before 2026-12-07 it said nothing.
    let check = w.path("check");
    w.dump(&check, &["--check-only"]).assert_success();
    let check_arg = check.to_str().unwrap();
    let judged = w.cryo(&["restore", "--check-only", "-D", check_arg, "--detach"]);
    assert_eq!(judged.status.code(), Some(3), "{judged}");
    assert!(
        judged.stdout.contains("parent-death signal")
            && judged.stdout.contains(&format!("{} thread", w.pid())),
        "{judged}"
    );
    let judged = w.cryo(&["restore", "--check-only", "-D", check_arg]);
    assert!(!judged.stdout.contains("parent-death"), "{judged}");
    let img = w.path("img");
    w.dump_ok(&img);
    let img_arg = img.to_str().unwrap();
    let out = w.cryo(&["restore", "-D", img_arg, "--detach"]);
    assert!(
        !out.status.success(),
        "the detached restore should be refused\n{out}"
    );
    assert!(
        out.stderr.contains(&format!("pid {}", w.pid()))
            && out.stderr.contains("parent-death signal (1)"),
        "{}",
        out.stderr
    );
    assert!(!cryo_tests::pid_exists(w.pid()), "nothing was made");
    w.restore_background(&img);
    assert_eq!(w.cmd("get pdeathsig"), "1");
    w.kill_restored();
}
