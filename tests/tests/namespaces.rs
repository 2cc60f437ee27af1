//! Namespaces: `cryo restore --pidns --netns` makes a copy in new namespaces beside a still-running
//! original; a process in a UTS namespace of its own comes back in one with its names; any
//! other namespace than cryo's is refused at dump, naming pid, thread and kind.
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
    // The namespace's init (cryo's child, the copy's parent) runs on every CPU cryo may use,
    // as the copy does: the restore's pinning to one CPU is not left on them.
    let cpus = |pid: i32| status_field(pid, "Cpus_allowed_list");
    let init: i32 = status_field(outside, "PPid").unwrap().parse().unwrap();
    let ours = cpus(std::process::id() as i32);
    assert_eq!(cpus(init), ours, "the init's CPUs");
    assert_eq!(cpus(outside), ours, "the copy's CPUs");
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

/// The UTS namespace of `pid`, as its /proc link reads.
fn uts_ns(pid: impl std::fmt::Display) -> std::path::PathBuf {
    std::fs::read_link(format!("/proc/{pid}/ns/uts")).expect("uts link")
}

#[test]
fn a_process_in_a_uts_namespace_of_its_own_comes_back_in_one_with_its_names() {
    cryo_bin();
    let mut w = Workload::spawn("attrs", &["uts=cryo-uts-test:uts.cryo.test", "thread"]);
    let names = "cryo-uts-test uts.cryo.test";
    assert_eq!(w.cmd("get uts"), names);
    assert_ne!(uts_ns(w.pid()), uts_ns("self"));

    let img = w.path("left");
    w.dump(&img, &["--leave-running"]).assert_success();
    assert_eq!(w.cmd("get uts"), names, "--leave-running changed its names");

    let img = w.path("img");
    w.dump_ok(&img);
    w.restore_background(&img);
    assert_eq!(w.cmd("get uts"), names, "the main thread's names");
    assert_eq!(w.cmd("tget uts"), names, "the second thread's names");
    assert_ne!(
        uts_ns(w.pid()),
        uts_ns("self"),
        "restored into cryo's UTS namespace"
    );
    let ours = nix::sys::utsname::uname().unwrap();
    assert_ne!(ours.nodename().to_string_lossy(), "cryo-uts-test");
}

#[test]
fn a_process_in_another_namespace_than_cryos_is_refused_naming_pid_and_kind() {
    cryo_bin();
    for (kind, words) in [
        ("ipc", "an IPC namespace other than cryo's (ipc:["),
        ("net", "a network namespace other than cryo's (net:["),
        (
            "pid",
            "a PID (for its children) namespace other than cryo's",
        ),
    ] {
        let w = Workload::spawn("attrs", &[&format!("unshare={kind}")]);
        let out = w.dump(&w.path("img"), &[]);
        assert!(
            !out.status.success(),
            "{kind}: the dump should be refused\n{out}"
        );
        let pid = w.pid();
        assert!(
            out.stderr
                .contains(&format!("pid {pid} thread {pid}: in {words}")),
            "{kind}: {}",
            out.stderr
        );
        w.assert_untouched();
        assert_eq!(w.cmd("get umask").len(), 3, "{kind}: the target answers");
    }
}

#[test]
fn a_mount_namespace_with_cryos_mounts_is_dumped_and_one_with_others_is_refused() {
    cryo_bin();
    // Same mounts as cryo's: its view comes back in cryo's namespace.
    let mut w = Workload::spawn("attrs", &["unshare=mnt"]);
    let img = w.path("img");
    w.dump_ok(&img);
    w.restore_background(&img);
    assert_eq!(w.cmd("get umask").len(), 3);
    drop(w);

    // A tmpfs only it sees.
    let w = Workload::spawn("attrs", &["unshare=mnt", "tmpfs=mnt"]);
    let out = w.dump(&w.path("img"), &[]);
    assert!(!out.status.success(), "the dump should be refused\n{out}");
    let pid = w.pid();
    assert!(
        out.stderr.contains(&format!(
            "pid {pid}: in a mount namespace other than cryo's whose mounts differ"
        )) && out.stderr.contains("(tmpfs cryo-test-tmpfs")
            && out.stderr.contains("is its only"),
        "{}",
        out.stderr
    );
    w.assert_untouched();
}

#[test]
fn a_thread_in_another_namespace_than_its_process_is_refused_naming_pid_and_thread() {
    cryo_bin();
    // The second thread moves itself into a UTS namespace of its own.
    let w = Workload::spawn("attrs", &["thread", "t.uts=cryo-thread:thread.test"]);
    assert_eq!(w.cmd("tget uts"), "cryo-thread thread.test");
    let tid = std::fs::read_dir(format!("/proc/{}/task", w.pid()))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .find(|&t| t != w.pid())
        .expect("the second thread");
    let out = w.dump(&w.path("img"), &[]);
    assert!(!out.status.success(), "the dump should be refused\n{out}");
    assert!(
        out.stderr.contains(&format!(
            "pid {} thread {tid}: in another uts namespace than its process",
            w.pid()
        )),
        "{}",
        out.stderr
    );
    w.assert_untouched();
    assert!(!w.cmd("get uts").is_empty(), "the target answers");
}

/// The time namespace of `pid`, as its /proc link reads.
fn time_ns(pid: impl std::fmt::Display) -> std::path::PathBuf {
    std::fs::read_link(format!("/proc/{pid}/ns/time")).expect("time link")
}

/// The monotonic and boot clocks a thread of `w` reads (`get` or `tget`), in ns.
fn clocks(w: &Workload, get: &str) -> (i64, i64) {
    let reply = w.cmd(&format!("{get} clocks"));
    let mut words = reply.split_whitespace().map(|n| n.parse().expect(&reply));
    (words.next().unwrap(), words.next().unwrap())
}

#[test]
fn a_process_in_a_time_namespace_comes_back_in_one_whose_clocks_went_on_from_the_freeze() {
    cryo_bin();
    const AHEAD_S: i64 = 10 * 86_400;
    // Away for longer than the dump and restore take: the namespace's clocks must not count it.
    const AWAY: std::time::Duration = std::time::Duration::from_secs(3);
    let mut w = Workload::spawn("attrs", &[&format!("timens={AHEAD_S}"), "thread"]);
    assert_ne!(time_ns(w.pid()), time_ns("self"));
    let (mono, _) = clocks(&w, "get");
    let ours = cryo_tests::protocol::monotonic_ns() as i64;
    assert!(mono > ours + (AHEAD_S - 1) * 1_000_000_000, "not ahead");

    let img = w.path("left");
    let before = time_ns(w.pid());
    w.dump(&img, &["--leave-running"]).assert_success();
    assert_eq!(time_ns(w.pid()), before, "--leave-running moved it");
    let (left, _) = clocks(&w, "get");
    assert!(left > mono, "--leave-running: its clock went back");

    let img = w.path("img");
    let (mono, boot) = clocks(&w, "get");
    w.dump_ok(&img);
    std::thread::sleep(AWAY);
    w.restore_background(&img);
    assert_ne!(
        time_ns(w.pid()),
        time_ns("self"),
        "restored into cryo's time namespace"
    );
    for get in ["get", "tget"] {
        let (mono_after, boot_after) = clocks(&w, get);
        for (what, at_dump, after) in [("monotonic", mono, mono_after), ("boot", boot, boot_after)]
        {
            let went = after - at_dump;
            assert!(
                went > 0 && went < AWAY.as_nanos() as i64,
                "{get}: the {what} clock went {went} ns from before the dump to after the \
                 restore, {AWAY:?} apart: it must go on from the freeze"
            );
        }
    }
}

#[test]
fn a_time_namespace_made_for_children_only_is_refused_naming_pid() {
    cryo_bin();
    let w = Workload::spawn("attrs", &["timens-children=100"]);
    let out = w.dump(&w.path("img"), &[]);
    assert!(!out.status.success(), "the dump should be refused\n{out}");
    let pid = w.pid();
    assert!(
        out.stderr.contains(&format!(
            "pid {pid} thread {pid}: made a time namespace for its children (time:["
        )),
        "{}",
        out.stderr
    );
    w.assert_untouched();
    assert_eq!(w.cmd("get umask").len(), 3, "the target answers");
}
