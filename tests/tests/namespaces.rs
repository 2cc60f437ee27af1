//! Namespaces: `cryo restore --pidns --netns` makes a copy in new namespaces beside a still-running
//! original; a process in a UTS namespace of its own comes back in one with its names; a
//! process tree in an IPC namespace of its own comes back in a new one with its SysV objects
//! and sysctls (and what of it cannot come back is refused); a PID namespace made for its
//! children only is refused at dump, naming pid and kind (network namespaces:
//! network_namespace.rs; user namespaces: user_namespace.rs).
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
    // A PID namespace made for its children, none in it yet (user namespaces, once refused
    // here too, come back: user_namespace.rs).
    let w = Workload::spawn("attrs", &["unshare=pid"]);
    let out = w.dump(&w.path("img"), &[]);
    assert!(!out.status.success(), "the dump should be refused\n{out}");
    let words = "made a pid namespace for its children (pid_for_children, no process in it yet)";
    assert!(
        out.stderr.contains(&format!("pid {}: {words}", w.pid())),
        "{}",
        out.stderr
    );
    w.assert_untouched();
    assert_eq!(w.cmd("get umask").len(), 3, "the target answers");
}

#[test]
fn a_mount_namespace_with_cryos_mounts_or_a_tmpfs_of_its_own_comes_back_in_a_new_one() {
    cryo_bin();
    // Same mounts as cryo's, then a tmpfs only it sees (tests/tests/mount_namespace.rs has
    // the rest): each comes back in a mount namespace of its own.
    let _shared = cryo_tests::cryos_mounts_kept();
    for settings in [&["unshare=mnt"][..], &["unshare=mnt", "tmpfs=mnt"]] {
        let mut w = Workload::spawn("attrs", settings);
        let ns = |pid: i32| std::fs::read_link(format!("/proc/{pid}/ns/mnt")).unwrap();
        let img = w.path("img");
        w.dump_ok(&img);
        w.restore_background(&img);
        assert_eq!(w.cmd("get umask").len(), 3);
        assert_ne!(ns(w.pid()), ns(std::process::id() as i32), "{settings:?}");
        let mounts = std::fs::read_to_string(format!("/proc/{}/mountinfo", w.pid())).unwrap();
        assert_eq!(
            mounts.contains("cryo-test-tmpfs"),
            settings.len() == 2,
            "{settings:?}: {mounts}"
        );
    }
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

/// A time namespace made for the process's children only (unshare(CLONE_NEWTIME), not
/// entered: zdtm timens_for_kids, which CRIU refuses) comes back made for its children: the
/// process stays in cryo's, a child forked after the restore reads clocks 100 s ahead that went
/// on from the freeze. A `--leave-running` dump leaves it as it was. Before: refused ("made a
/// time namespace for its children ... not restored").
#[test]
fn a_time_namespace_made_for_children_only_comes_back_made_for_them() {
    cryo_bin();
    const AHEAD_S: i64 = 100;
    const AWAY: std::time::Duration = std::time::Duration::from_secs(2);
    let mut w = Workload::spawn("attrs", &[&format!("timens-children={AHEAD_S}")]);
    let for_kids =
        |pid: i32| std::fs::read_link(format!("/proc/{pid}/ns/time_for_children")).expect("link");
    let ahead = |w: &Workload| {
        let reply = w.cmd("get kid-clocks");
        let kid: i64 = reply.split(' ').next().unwrap().parse().expect(&reply);
        let (own, _) = clocks(w, "get");
        kid - own
    };
    assert_eq!(time_ns(w.pid()), time_ns("self"));
    assert_ne!(for_kids(w.pid()), time_ns("self"));
    let before = ahead(&w);
    assert!(
        (before - AHEAD_S * 1_000_000_000).abs() < 1_000_000_000,
        "a child is {before} ns ahead"
    );
    let kids_ns = for_kids(w.pid());
    w.dump(&w.path("left"), &["--leave-running"])
        .assert_success();
    assert_eq!(for_kids(w.pid()), kids_ns, "--leave-running changed it");
    w.dump_ok(&w.path("img"));
    std::thread::sleep(AWAY);
    w.restore_background(&w.path("img"));
    assert_eq!(
        time_ns(w.pid()),
        time_ns("self"),
        "the process stays in cryo's"
    );
    assert_ne!(
        for_kids(w.pid()),
        time_ns("self"),
        "made for its children again"
    );
    let after = ahead(&w);
    // The children's clocks went on from the freeze: the time away is not in them.
    let lost = before - after;
    assert!(
        lost > AWAY.as_nanos() as i64 / 2 && lost < AWAY.as_nanos() as i64 * 3,
        "a child is {after} ns ahead after the restore, {before} before, {AWAY:?} away"
    );
    w.kill_restored();
}

/// With threads (the namespace made by one thread for its children) the process could not
/// clone another (CLONE_VM across two time namespaces), nor could the restore: refused naming
/// pid, thread and the namespace.
#[test]
fn a_time_namespace_made_for_children_by_a_threaded_process_is_refused_naming_pid() {
    cryo_bin();
    let w = Workload::spawn("attrs", &["thread", "timens-children=100"]);
    let out = w.dump(&w.path("img"), &[]);
    assert!(!out.status.success(), "the dump should be refused\n{out}");
    let pid = w.pid();
    assert!(
        out.stderr.contains(&format!("pid {pid} thread "))
            && out.stderr.contains("time_for_children"),
        "{}",
        out.stderr
    );
    w.assert_untouched();
    assert_eq!(w.cmd("get umask").len(), 3, "the target answers");
}

/// A SysV key of this test process's own (keys KEY..KEY+2 are used): tests run in parallel.
fn ipc_key(n: i32) -> i32 {
    0x4500_0000 | ((std::process::id() as i32 & 0xffff) << 4) | (n << 2)
}

/// Whether cryo's (the test's) IPC namespace holds an object of key `key`.
fn host_has_key(key: i32) -> bool {
    ["shm", "sem", "msg"].iter().any(|kind| {
        std::fs::read_to_string(format!("/proc/sysvipc/{kind}"))
            .expect("sysvipc")
            .lines()
            .skip(1)
            .any(|l| l.split_whitespace().next() == Some(&key.to_string()))
    })
}

/// The IPC namespace of `pid`, as its /proc link reads.
fn ipc_ns(pid: impl std::fmt::Display) -> std::path::PathBuf {
    std::fs::read_link(format!("/proc/{pid}/ns/ipc")).expect("ipc link")
}

/// What the `sysv-ns` workload and its child see of their namespace's objects.
const VIEWS: &[&str] = &[
    "shm stat s",
    "shm stat d",
    "shm kid stat s",
    "ipc semstat",
    "ipc seminfo",
    "ipc msgstat",
    "ipc semvals",
    "u",
    "sysctl kernel/msgmax",
    "sysctl kernel/sem",
    "sysctl fs/mqueue/queues_max",
];

/// What the process sees of its IPC namespace ([`VIEWS`]).
#[track_caller]
fn views(w: &Workload) -> Vec<String> {
    replies(w, VIEWS)
}

/// `command: reply` for each of `commands`, none an error.
#[track_caller]
fn replies(w: &Workload, commands: &[&str]) -> Vec<String> {
    commands
        .iter()
        .map(|v| {
            let reply = w.cmd(v);
            assert!(!reply.starts_with("err"), "{v}: {reply}");
            format!("{v}: {reply}")
        })
        .collect()
}

#[test]
fn a_process_tree_in_an_ipc_namespace_of_its_own_comes_back_in_a_new_one_with_its_objects() {
    cryo_bin();
    let key = ipc_key(1);
    let mut w = Workload::spawn("sysv-ns", &[&key.to_string()]);
    let host_msgmax = std::fs::read_to_string("/proc/sys/kernel/msgmax").unwrap();
    assert_ne!(ipc_ns(w.pid()), ipc_ns("self"));
    assert_eq!(w.cmd("shm w a 10 77"), "ok");
    assert_eq!(w.cmd("shm kid w d 12 78"), "ok");
    let before = views(&w);
    assert_eq!(
        before[4],
        "ipc seminfo: 839246125 755136150 1604938492 16922"
    );
    assert_eq!(before[8], "sysctl kernel/msgmax: 12345");
    assert_eq!(before[10], "sysctl fs/mqueue/queues_max: 77");
    assert!(before[7].ends_with(" 4096 same"), "{}", before[7]);

    let img = w.path("left");
    w.dump(&img, &["--leave-running"]).assert_success();
    assert_eq!(views(&w), before, "--leave-running changed what it sees");

    let img = w.path("img");
    w.dump_ok(&img);
    w.restore_background(&img);
    assert_eq!(views(&w), before, "what the restored processes see");
    assert_eq!(w.cmd("shm r a 10"), "77", "the segment's contents");
    assert_eq!(w.cmd("shm kid r a2 10"), "77", "the child's view of it");
    assert_eq!(
        w.cmd("shm r d 12"),
        "78",
        "the destroyed segment's contents"
    );
    // Still one segment for both: a write of one is read by the other.
    assert_eq!(w.cmd("shm kid w a2 20 79"), "ok");
    assert_eq!(
        w.cmd("shm r ro 20"),
        "79",
        "the child's write, read by its parent"
    );
    assert_eq!(w.cmd("ipc msgrcv 2"), "2 two", "the queue's message");
    assert_eq!(w.cmd("ipc semop 1 -5"), "ok", "a semaphore's value");
    let ns = ipc_ns(w.pid());
    assert_ne!(ns, ipc_ns("self"), "restored into cryo's IPC namespace");
    let kid: i32 = w.cmd("shm kid pid").parse().unwrap();
    assert_eq!(ipc_ns(kid), ns, "the child is in its parent's namespace");
    for k in [key, key + 1, key + 2] {
        assert!(!host_has_key(k), "key {k:#x} is in cryo's namespace");
    }
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/msgmax").unwrap(),
        host_msgmax,
        "cryo's own msgmax changed"
    );
    w.kill_restored();
}

/// The first segment of an IPC namespace has id 0, and so does the inode of its file, which
/// /proc/PID/maps shows: an attachment of it was taken for shared anonymous memory, restored
/// as such (its bytes there, but no SysV attachment: shmdt EINVAL; zdtm shm).
#[test]
fn an_attachment_of_the_first_segment_of_an_ipc_namespace_comes_back_a_sysv_attachment() {
    cryo_bin();
    let mut w = Workload::spawn("sysv-ns", &[&ipc_key(5).to_string(), "keepu"]);
    let u = w.cmd("u");
    assert!(u.starts_with("0 ") && u.ends_with(" same"), "{u}");
    w.dump_and_restore();
    assert_eq!(w.cmd("u"), u, "segment u as dumped");
    assert_eq!(
        w.cmd("u-dt"),
        "ok",
        "its attachment is a SysV one: shmdt takes it"
    );
}

#[test]
fn an_ipc_namespace_shared_outside_the_dump_with_an_unattached_segment_it_would_destroy_or_a_posix_queue_is_refused(
) {
    cryo_bin();
    let w = Workload::spawn("sysv-ns", &[&ipc_key(2).to_string()]);
    let before = views(&w);
    // Its child alone: its parent stays in the namespace.
    let kid: i32 = w.cmd("shm kid pid").parse().unwrap();
    let img = w.path("img");
    let args = ["dump", "-t", &kid.to_string(), "-D", img.to_str().unwrap()];
    // --shell-job: in its parent's session, as a shell's job would be.
    let out = w.cryo(&[&args[..], &["--shell-job"]].concat());
    assert!(!out.status.success(), "the dump should be refused\n{out}");
    assert!(
        out.stderr
            .contains(&format!("pid {kid}: its IPC namespace (ipc:["))
            && out.stderr.contains(&format!(
                "is shared with pid {}, which is not in the dump",
                w.pid()
            )),
        "{}",
        out.stderr
    );
    assert_eq!(status_field(kid, "TracerPid").as_deref(), Some("0"));
    assert_eq!(views(&w), before, "a refused dump changed what it sees");

    // Segment `u` is attached by no one: made again by cryo, it would be destroyed. (Not
    // looked at while the sysctl is set: its detach would destroy it.)
    let u = before[7].split(' ').nth(1).unwrap();
    assert_eq!(w.cmd("set kernel/shm_rmid_forced 1"), "ok");
    let out = w.dump(&w.path("img1"), &[]);
    assert!(!out.status.success(), "the dump should be refused\n{out}");
    assert!(
        out.stderr
            .contains(&format!("pid {}: its IPC namespace (ipc:[", w.pid()))
            && out.stderr.contains(&format!(
                "sets kernel.shm_rmid_forced and holds SysV shared memory segment {u} that no \
             process of the dump attaches"
            )),
        "{}",
        out.stderr
    );
    w.assert_untouched();
    assert_eq!(w.cmd("set kernel/shm_rmid_forced 0"), "ok");
    assert_eq!(views(&w), before, "a refused dump changed what it sees");

    assert_eq!(w.cmd("mq cryo-test-queue"), "ok");
    let out = w.dump(&w.path("img2"), &[]);
    assert!(!out.status.success(), "the dump should be refused\n{out}");
    assert!(
        out.stderr
            .contains(&format!("pid {}: its IPC namespace (ipc:[", w.pid()))
            && out.stderr.contains(
                "holds POSIX message queue /cryo-test-queue: POSIX message queues are not restored"
            ),
        "{}",
        out.stderr
    );
    w.assert_untouched();
    assert_eq!(views(&w), before, "a refused dump changed what it sees");
}

#[test]
fn a_child_in_another_ipc_namespace_than_its_parent_comes_back_in_its_own() {
    cryo_bin();
    let key = ipc_key(3);
    let mut w = Workload::spawn("sysv-ns", &[&key.to_string(), "kidns"]);
    let kid_views = |w: &Workload| {
        replies(
            w,
            &[
                "nskid ipc semstat",
                "nskid ipc msgstat",
                "nskid u",
                "nskid sysctl kernel/msgmax",
            ],
        )
    };
    // The keyed segment marked destroyed while attached: its key reads private since.
    assert_eq!(w.cmd("shm rmid s"), "ok");
    let before = views(&w);
    let kid_before = kid_views(&w);
    assert_eq!(kid_before[3], "nskid sysctl kernel/msgmax: 23456");
    assert!(
        kid_before[2].starts_with("nskid u: 1 "),
        "{}",
        kid_before[2]
    );
    assert!(
        before[0].starts_with("shm stat s: 0 1 1640 "),
        "{}",
        before[0]
    );
    let ours = ipc_ns("self").to_string_lossy().into_owned();
    assert_ne!(w.cmd("ns"), w.cmd("nskid ns"));

    let img = w.path("img");
    w.dump_ok(&img);
    w.restore_background(&img);
    assert_eq!(views(&w), before, "what the parent and its first child see");
    assert_eq!(
        kid_views(&w),
        kid_before,
        "what the child in its own namespace sees"
    );
    let (parent, kid) = (w.cmd("ns"), w.cmd("nskid ns"));
    assert_ne!(parent, kid, "the child came back in its parent's namespace");
    assert_ne!(parent, ours, "the parent came back in cryo's namespace");
    assert_ne!(kid, ours, "the child came back in cryo's namespace");
    for k in [key, key + 1, key + 2] {
        assert!(!host_has_key(k), "key {k:#x} is in cryo's namespace");
    }
    w.kill_restored();
}

#[test]
fn a_child_back_in_cryos_ipc_namespace_below_a_parent_in_another_comes_back_in_cryos() {
    cryo_bin();
    let mut w = Workload::spawn("sysv-ns", &[&ipc_key(4).to_string(), "kidback"]);
    let ours = ipc_ns("self").to_string_lossy().into_owned();
    assert_eq!(w.cmd("nskid ns"), ours);
    let before = views(&w);
    let img = w.path("img");
    w.dump_ok(&img);
    w.restore_background(&img);
    assert_eq!(views(&w), before, "what the parent and its first child see");
    assert_ne!(
        w.cmd("ns"),
        ours,
        "the parent came back in cryo's namespace"
    );
    assert_eq!(
        w.cmd("nskid ns"),
        ours,
        "the child is not back in cryo's namespace"
    );
    w.kill_restored();
}
