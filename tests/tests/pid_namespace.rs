//! A process tree in a PID namespace of its own (issue 12): its init (pid 1 there), a child
//! in a process group of its own and a grandchild, dumped from outside and restored into a
//! new PID namespace the restore makes (the root forked with CLONE_NEWPID), each process
//! reporting from inside getpid, getppid, getpgid and getsid as before; the restored init
//! reaps an orphan and ignores its own SIGKILL as any init; two copies side by side, in two
//! namespaces with the same pids. Refused: a process of a namespace whose init is not dumped,
//! and one that made a PID namespace for its children without being in it.
//!
//! Needs the engine: `cryo` must be built (`cargo build -p cryo`).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use cryo_tests::{cryo_bin, status_field, Pidfd, Reaper, Workload, CMD_TIMEOUT};

/// What the three processes of the `pid-ns` workload report (pid ppid pgid sid each): the
/// init leads its session, its child a group of its own, the grandchild is in that group.
const IDS: &str = "1 0 1 1;2 1 2 1;3 2 2 1";

/// What the init reports of its pipe's owner (F_SETOWN) and its pidfd: both its child.
const REFS: &str = "owner=2 pidfd=2";

/// The SIGUSR1 the init's child sent it, pending in the init: its si_pid is the child's.
const PENDING: &str = "10 from 2";

/// The message the init queued to its child (SCM_CREDENTIALS: its pid there, uid and gid 0).
const CREDS: &str = "hi 1 0 0";

/// The processes of this test's workloads (our dir in their command line) that are in a PID
/// namespace one level below ours: namespace inode -> (pid there -> pid here).
fn namespaces_of(dir: &Path) -> BTreeMap<u64, BTreeMap<i32, i32>> {
    let dir = dir.as_os_str().as_encoded_bytes().to_vec();
    let mut out: BTreeMap<u64, BTreeMap<i32, i32>> = BTreeMap::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        if !cmdline.windows(dir.len()).any(|w| w == dir.as_slice()) {
            continue;
        }
        let levels: Vec<i32> = status_field(pid, "NSpid")
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        let Ok(link) = std::fs::read_link(format!("/proc/{pid}/ns/pid")) else {
            continue;
        };
        let inode: u64 = link
            .to_string_lossy()
            .trim_start_matches("pid:[")
            .trim_end_matches(']')
            .parse()
            .unwrap();
        if let [_, inside] = levels[..] {
            out.entry(inode).or_default().insert(inside, pid);
        }
    }
    out
}

/// The namespace (inode, pid there -> pid here) that `namespaces_of` lists and `known` does not.
fn new_namespace(dir: &Path, known: &[u64]) -> (u64, BTreeMap<i32, i32>) {
    let all = namespaces_of(dir);
    let mut new: Vec<_> = all
        .into_iter()
        .filter(|(i, _)| !known.contains(i))
        .collect();
    assert_eq!(new.len(), 1, "one new pid namespace: {new:?}");
    new.remove(0)
}

/// Every process of the namespace `pids` lists (pid there -> pid here), and the zombies
/// among their children, as the namespace names them: pid -> (parent, group, session, state:
/// Z, T, t, or - for running or asleep); the init's parent (outside) 0.
fn session_view(pids: &BTreeMap<i32, i32>) -> BTreeMap<i32, (i32, i32, i32, char)> {
    let last = |pid: i32, field: &str| -> i32 {
        status_field(pid, field)
            .and_then(|v| v.split_whitespace().last().and_then(|n| n.parse().ok()))
            .unwrap_or(-1)
    };
    let mut all: BTreeMap<i32, i32> = pids.clone();
    for &host in pids.values() {
        let kids = std::fs::read_to_string(format!("/proc/{host}/task/{host}/children"))
            .unwrap_or_default();
        for kid in kids
            .split_whitespace()
            .filter_map(|k| k.parse::<i32>().ok())
        {
            all.insert(last(kid, "NSpid"), kid);
        }
    }
    let inside: BTreeMap<i32, i32> = all.iter().map(|(&ns, &host)| (host, ns)).collect();
    all.iter()
        .map(|(&ns, &host)| {
            let ppid = status_field(host, "PPid")
                .and_then(|p| p.trim().parse::<i32>().ok())
                .and_then(|p| inside.get(&p).copied())
                .unwrap_or(0);
            // Zombie, stopped, or else running or asleep (which moves by itself).
            let state = match status_field(host, "State").and_then(|s| s.trim().chars().next()) {
                Some(c @ ('Z' | 'T' | 't')) => c,
                Some(_) => '-',
                None => '?',
            };
            (ns, (ppid, last(host, "NSpgid"), last(host, "NSsid"), state))
        })
        .collect()
}

/// Dumps the workload's PID namespace by its init (killing it): the image.
fn dump_killing_init(w: &Workload) -> std::path::PathBuf {
    let (_, original) = new_namespace(w.dir(), &[]);
    let init = Pidfd::open(original[&1]).unwrap();
    let init_arg = original[&1].to_string();
    let img = w.path("img");
    w.cryo(&[
        "dump".as_ref(),
        "-t".as_ref(),
        init_arg.as_ref(),
        "-D".as_ref(),
        img.as_os_str(),
    ])
    .assert_success();
    assert!(
        init.wait_exit(CMD_TIMEOUT),
        "the dumped init was not killed"
    );
    img
}

/// Stops (SIGSTOP) process `pid` and waits until it is: a copy restored beside it reads the
/// same command FIFO.
fn stop(pid: i32) -> Pidfd {
    let p = Pidfd::open(pid).unwrap();
    p.signal(libc::SIGSTOP).unwrap();
    let deadline = Instant::now() + CMD_TIMEOUT;
    while !status_field(pid, "State").is_some_and(|s| s.starts_with('T')) {
        assert!(Instant::now() < deadline, "{pid} did not stop");
        std::thread::yield_now();
    }
    p
}

/// `cryo restore -D IMG --detach EXTRA...`: the restored root's pid here.
fn restore_copy(w: &Workload, img: &Path, extra: &[&str]) -> i32 {
    let mut args = vec![
        "restore".as_ref(),
        "-D".as_ref(),
        img.as_os_str(),
        "--detach".as_ref(),
    ];
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    let out = w.cryo(&args);
    out.assert_success();
    out.stdout
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("no pid printed:\n{out}"))
}

#[test]
fn a_tree_in_its_own_pid_namespace_comes_back_in_a_new_one_with_its_pids() {
    cryo_bin();
    let w = Workload::spawn("pid-ns", &[]);
    assert_eq!(w.pid(), 1, "the workload answers from the namespace's init");
    assert_eq!(w.cmd("ids"), IDS, "before the dump");
    assert_eq!(w.cmd("refs"), REFS, "before the dump");
    assert_eq!(
        w.cmd("tid"),
        "5",
        "the init's second thread, before the dump"
    );
    let (original_ns, original) = new_namespace(w.dir(), &[]);
    let init = original[&1];
    let pending = status_field(init, "ShdPnd").unwrap();
    assert!(
        cryo_tests::mask_has(&pending, libc::SIGUSR1),
        "SIGUSR1 pending: {pending}"
    );
    let img = w.path("img");
    let init_arg = init.to_string();
    w.cryo(&[
        "dump".as_ref(),
        "-t".as_ref(),
        init_arg.as_ref(),
        "-D".as_ref(),
        img.as_os_str(),
        "--leave-running".as_ref(),
    ])
    .assert_success();
    assert_eq!(w.cmd("ids"), IDS, "--leave-running: the original runs on");
    assert_eq!(status_field(init, "TracerPid").as_deref(), Some("0"));

    // A copy beside the running original: a new namespace with the same pids inside.
    let a = restore_copy(&w, &img, &[]);
    let mut reaper = Reaper(vec![a]);
    let (a_ns, a_pids) = new_namespace(w.dir(), &[original_ns]);
    assert_eq!(
        a_pids[&1], a,
        "the copy's root is pid 1 of the new namespace"
    );
    assert_eq!(a_pids.keys().copied().collect::<Vec<_>>(), [1, 2, 3]);
    reaper.0.extend(a_pids.values());
    let original_init = stop(init);
    assert_eq!(w.cmd("ids"), IDS, "each process of the copy, from inside");
    assert_eq!(w.cmd("refs"), REFS, "the copy's fd owner and pidfd");
    assert_eq!(
        w.cmd("creds"),
        CREDS,
        "the queued message's credentials, in the copy"
    );
    assert_eq!(w.cmd("tid"), "5", "the copy's second thread");
    assert_eq!(w.cmd("pending"), PENDING, "the copy's pending signal");
    assert_eq!(
        w.cmd("timer"),
        "armed",
        "the copy's timer of its second thread"
    );

    // A second copy, in a new network namespace too: two PID namespaces side by side with
    // the same pids.
    let b = restore_copy(&w, &img, &["--netns"]);
    let net = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
    assert_ne!(
        net(&b.to_string()),
        net("self"),
        "--netns: the copy's network namespace"
    );
    assert_eq!(
        net(&a.to_string()),
        net("self"),
        "the first copy stayed in ours"
    );
    reaper.0.push(b);
    let (_, b_pids) = new_namespace(w.dir(), &[original_ns, a_ns]);
    assert_eq!(b_pids.keys().copied().collect::<Vec<_>>(), [1, 2, 3]);
    reaper.0.extend(b_pids.values());
    let _a_init = stop(a);
    assert_eq!(
        w.cmd("ids"),
        IDS,
        "each process of the second copy, from inside"
    );

    // The restored init reaps: its child killed, the grandchild goes to pid 1 there, which
    // collects both (the grandchild's status: its new parent's pid).
    Pidfd::open(b_pids[&2])
        .unwrap()
        .signal(libc::SIGKILL)
        .unwrap();
    assert_eq!(
        w.cmd("reap"),
        "2:signal 9 3:exit 1 4:exit 7",
        "the restored init reaps the orphan"
    );
    assert_eq!(
        w.cmd("kill-self"),
        "alive",
        "SIGKILL from inside does nothing to an init"
    );
    drop(original_init);
}

#[test]
fn a_process_in_a_pid_namespace_whose_init_is_not_dumped_is_refused() {
    cryo_bin();
    let w = Workload::spawn("pid-ns", &[]);
    assert_eq!(w.cmd("ids"), IDS);
    let (inode, pids) = new_namespace(w.dir(), &[]);
    let child = pids[&2];
    let child_arg = child.to_string();
    let img = w.path("img");
    let out = w.cryo(&[
        "dump".as_ref(),
        "-t".as_ref(),
        child_arg.as_ref(),
        "-D".as_ref(),
        img.as_os_str(),
    ]);
    out.assert_refused()
        .assert_stderr_has_word(&child_arg)
        .assert_stderr_mentions("pid namespace")
        .assert_stderr_mentions(&format!("pid:[{inode}]"))
        .assert_stderr_mentions("init");
    assert_eq!(status_field(child, "TracerPid").as_deref(), Some("0"));
    assert_eq!(w.cmd("ids"), IDS, "the tree runs on as before");

    // The process outside that made the namespace for its children (unshare) is not in it.
    let outside = std::fs::read_to_string(format!("/proc/{}/stat", pids[&1]))
        .unwrap()
        .rsplit(") ")
        .next()
        .and_then(|rest| rest.split_whitespace().nth(1).map(str::to_string))
        .unwrap();
    let out = w.cryo(&[
        "dump".as_ref(),
        "-t".as_ref(),
        outside.as_ref(),
        "-D".as_ref(),
        img.as_os_str(),
    ]);
    out.assert_refused()
        .assert_stderr_has_word(&outside)
        .assert_stderr_mentions("pid_for_children")
        .assert_stderr_mentions(&format!("[{inode}]"));
    assert_eq!(w.cmd("ids"), IDS, "the tree runs on as before");
}

#[test]
fn a_killed_tree_in_a_pid_namespace_comes_back_with_its_pids() {
    cryo_bin();
    let mut w = Workload::spawn("pid-ns", &[]);
    assert_eq!(w.cmd("ids"), IDS);
    let img = dump_killing_init(&w);
    // Its namespace is the restore's to make: no helper init under --pidns.
    w.cryo(&[
        "restore".as_ref(),
        "-D".as_ref(),
        img.as_os_str(),
        "--detach".as_ref(),
        "--pidns".as_ref(),
    ])
    .assert_refused()
    .assert_stderr_mentions("pid namespace of its own");
    let root = restore_copy(&w, &img, &[]);
    let _reaper = Reaper(vec![root]);
    let (_, restored) = new_namespace(w.dir(), &[]);
    assert_eq!(restored[&1], root);
    // The harness watches the restored root now (it answers `pid` with 1, as before).
    w.adopt_restored_at(root);
    assert_eq!(w.cmd("ids"), IDS, "each restored process, from inside");
    assert_eq!(
        w.cmd("refs"),
        REFS,
        "the fd owner and the pidfd, from inside"
    );
    assert_eq!(w.cmd("creds"), CREDS, "the queued message's credentials");
    assert_eq!(w.cmd("tid"), "5", "the init's second thread");
    assert_eq!(w.cmd("pending"), PENDING, "the init's pending signal");
    assert_eq!(
        w.cmd("timer"),
        "armed",
        "the init's timer of its second thread"
    );
    assert_eq!(
        w.cmd("procstat"),
        format!("{root} (cryo-workload)"),
        "the init's /proc/self/stat: its new pid here, as /proc/self names it"
    );
}

/// A PID namespace whose init forks without pause a child that exits at once (zdtm
/// transition/fork2): ten `--leave-running` dumps, then a killing one, each succeeds; restored,
/// the init forks on. Before, the killing dump hung (cryo killed after 120 s): the init's
/// forking thread, the last of its threads to exit, waits in its exit for every other task of
/// the namespace to be reaped, its sibling threads included, and cryo, their tracer, waited
/// for it before reaping them. (zdtm transition/fork2 was also refused now and then, "holds
/// pid N, which is not in the dump": a child forked after the tree was read; now the freeze
/// reads the tree again.)
#[test]
fn a_pid_namespace_whose_init_forks_without_pause_dumps_and_comes_back() {
    cryo_bin();
    let mut w = Workload::spawn("pid-ns", &["forking"]);
    let (_, original) = new_namespace(w.dir(), &[]);
    let init = original[&1].to_string();
    for round in 0..10 {
        let img = w.path(&format!("left-{round}"));
        w.cryo(&[
            "dump".as_ref(),
            "-t".as_ref(),
            init.as_ref(),
            "-D".as_ref(),
            img.as_os_str(),
            "--leave-running".as_ref(),
        ])
        .assert_success();
    }
    let forked: u64 = w.cmd("forks").parse().unwrap();
    assert!(forked > 0, "the init forked nothing");
    let img = dump_killing_init(&w);
    let root = restore_copy(&w, &img, &[]);
    let _reaper = Reaper(vec![root]);
    w.adopt_restored_at(root);
    let at_restore: u64 = w.cmd("forks").parse().unwrap();
    assert!(at_restore >= forked, "{at_restore} < {forked}");
    let deadline = Instant::now() + CMD_TIMEOUT;
    while w.cmd("forks").parse::<u64>().unwrap() == at_restore {
        assert!(Instant::now() < deadline, "the restored init forks no more");
        std::thread::yield_now();
    }
    assert_eq!(w.cmd("ids"), IDS, "each restored process, from inside");
}

/// A process in a mount namespace of its own holding a file of its PID namespace's proc (a
/// container's /proc/self/maps, zdtm shm): reopened on the proc the restore mounts there, at
/// its offset (refused before: "file of a proc mount other than cryo's /proc"); and a file of
/// that proc itself (its sys/fs/nr_open, zdtm fd01 in the ns flavour): reopened there too
/// (refused before: "not a file of a process (/PID/...) is not supported yet").
#[test]
fn a_file_of_the_namespaces_own_proc_comes_back_on_it_at_its_offset() {
    cryo_bin();
    let _shared = cryo_tests::cryos_mounts_kept();
    let mut w = Workload::spawn("pid-ns", &["ownproc"]);
    let nsproc = w.dir().join("nsproc");
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open").unwrap();
    let sys_before = w.cmd("nssys");
    assert_eq!(
        sys_before,
        format!(
            "{}/sys/fs/nr_open on-nsproc {}",
            nsproc.display(),
            nr_open.trim()
        )
    );
    let before = w.cmd("nsmaps");
    assert_eq!(
        before,
        format!("{}/1/maps pos=200 on-nsproc same", nsproc.display())
    );
    let img = dump_killing_init(&w);
    let root = restore_copy(&w, &img, &[]);
    let _reaper = Reaper(vec![root]);
    w.adopt_restored_at(root);
    assert_eq!(w.cmd("ids"), IDS, "each restored process, from inside");
    assert_eq!(
        w.cmd("nssys"),
        sys_before,
        "the file of that proc itself, on it"
    );
    assert_eq!(w.cmd("nsmaps"), before, "the fd, from inside");
}

/// fds on the directory of a process of the namespace's own proc that ended since, and on
/// its mountinfo (zdtm remap_dead_pid, remap_dead_pid_root in the ns flavour), and the
/// working directory in another such directory (zdtm unhashed_proc): the restore makes that
/// pid again in the holder's mount namespace for the open, then ends it; the
/// directory is unhashed (listing it: ESRCH) and its mountinfo the init's namespace's, as before. Before:
/// refused, "pid N there is no process of the dump in the holder's PID namespace" and
/// "neither a file of a process (/PID/...) nor of that proc itself".
#[test]
fn files_and_cwd_in_a_process_of_the_namespaces_proc_that_ended_come_back_as_they_read() {
    cryo_bin();
    let _shared = cryo_tests::cryos_mounts_kept();
    let mut w = Workload::spawn("pid-ns", &["ownproc"]);
    let nsproc = w.dir().join("nsproc");
    let n = w.cmd("gone-open");
    let before = w.cmd("gone");
    assert_eq!(
        before,
        format!(
            "{p}/{n} (deleted) lists errno 3; {p}/{n}/mountinfo same as the init's",
            p = nsproc.display()
        )
    );
    let m = w.cmd("gone-cwd");
    let cwd = w.cmd("cwd");
    assert_eq!(
        cwd,
        format!(
            "{}/{m} (deleted) statfs errno 3 getcwd errno 2",
            nsproc.display()
        )
    );
    let img = dump_killing_init(&w);
    let root = restore_copy(&w, &img, &[]);
    let _reaper = Reaper(vec![root]);
    w.adopt_restored_at(root);
    assert_eq!(w.cmd("ids"), IDS, "each restored process, from inside");
    assert_eq!(w.cmd("gone"), before, "from inside");
    assert_eq!(w.cmd("cwd"), cwd, "from inside");
}

/// The init's orphans in sessions other processes started (a daemon whose session's leader
/// exited; the child of a zombie leader; the grandchild of a live leader; a zombie whose
/// leader exited): each comes back the init's child in its session and group, the zombie
/// leader a zombie, as the kernel shows them (zdtm zombie_leader, session00,
/// helper_zombie_child, child_subreaper_and_reparent), and one in a group whose leader, its
/// parent, exited (zdtm sk-unix-restore-fs-share: refused before 2026-12-06). Before: refused,
/// "its session S is not its parent's (pid 1, session 1) and it does not lead it".
#[test]
fn orphans_of_the_init_in_sessions_others_started_come_back_in_them() {
    cryo_bin();
    let mut w = Workload::spawn("pid-ns", &["sessions"]);
    assert_eq!(w.cmd("ids"), IDS, "before the dump");
    let (_, original) = new_namespace(w.dir(), &[]);
    let before = session_view(&original);
    let orphans: Vec<_> = before
        .iter()
        .filter(|(&pid, &(ppid, _, sid, _))| ppid == 1 && sid != 1 && sid != pid)
        .collect();
    assert_eq!(
        orphans.len(),
        5,
        "five orphans in others' sessions: {before:?}"
    );
    assert!(
        before.values().filter(|v| v.3 == 'Z').count() >= 3,
        "the zombies (pid 4, the leader, the orphan zombie): {before:?}"
    );
    assert!(
        before.iter().any(|(&pid, &(_, pgid, sid, _))| pgid != pid
            && pgid != sid
            && !before.contains_key(&pgid)),
        "a process in a group whose leader exited, not its session's: {before:?}"
    );
    let img = dump_killing_init(&w);
    let root = restore_copy(&w, &img, &[]);
    let _reaper = Reaper(vec![root]);
    let (_, restored) = new_namespace(w.dir(), &[]);
    w.adopt_restored_at(root);
    assert_eq!(w.cmd("ids"), IDS, "each restored process, from inside");
    assert_eq!(
        session_view(&restored),
        before,
        "parents, groups, sessions, states"
    );
}

#[test]
fn a_pid_namespace_holding_a_process_outside_the_dump_is_refused() {
    cryo_bin();
    let w = Workload::spawn("pid-ns", &[]);
    assert_eq!(w.cmd("ids"), IDS);
    let (inode, pids) = new_namespace(w.dir(), &[]);
    let init = pids[&1];
    // A process that entered the namespace from outside (setns, then fork): not below its
    // init, so not in the dump of its tree (killed by the reaper, nsenter then ends).
    let mut nsenter = std::process::Command::new("nsenter")
        .arg(format!("--pid=/proc/{init}/ns/pid"))
        .args(["--", "sleep", "600"])
        .spawn()
        .expect("nsenter");
    let deadline = Instant::now() + CMD_TIMEOUT;
    let stranger = loop {
        if let Some(&p) = cryo_tests::children_of(nsenter.id()).first() {
            if status_field(p, "NSpid").is_some_and(|v| v.split_whitespace().count() == 2) {
                break p;
            }
        }
        assert!(Instant::now() < deadline, "nsenter's child did not show up");
        std::thread::yield_now();
    };
    let _reaper = Reaper(vec![stranger]);
    let init_arg = init.to_string();
    let img = w.path("img");
    let out = w.cryo(&[
        "dump".as_ref(),
        "-t".as_ref(),
        init_arg.as_ref(),
        "-D".as_ref(),
        img.as_os_str(),
    ]);
    out.assert_refused()
        .assert_stderr_has_word(&init_arg)
        .assert_stderr_mentions(&format!("pid namespace pid:[{inode}]"))
        .assert_stderr_has_word(&stranger.to_string())
        .assert_stderr_mentions("not in the dump");
    assert_eq!(status_field(init, "TracerPid").as_deref(), Some("0"));
    assert_eq!(w.cmd("ids"), IDS, "the tree runs on as before");
    // SAFETY: kill takes plain integers.
    unsafe { libc::kill(stranger, libc::SIGKILL) };
    let _ = nsenter.wait();
}

#[test]
fn a_nested_pid_namespace_is_refused() {
    cryo_bin();
    let w = Workload::spawn("pid-ns", &["nested"]);
    assert_eq!(w.cmd("ids"), IDS);
    let (_, pids) = new_namespace(w.dir(), &[]);
    let init_arg = pids[&1].to_string();
    // The grandchild's child, two levels below us.
    let deadline = Instant::now() + CMD_TIMEOUT;
    let nested = loop {
        if let Some(&p) = cryo_tests::children_of(pids[&3] as u32).first() {
            break p;
        }
        assert!(
            Instant::now() < deadline,
            "the nested child did not show up"
        );
        std::thread::yield_now();
    };
    let img = w.path("img");
    w.cryo(&[
        "dump".as_ref(),
        "-t".as_ref(),
        init_arg.as_ref(),
        "-D".as_ref(),
        img.as_os_str(),
    ])
    .assert_refused()
    .assert_stderr_has_word(&nested.to_string())
    .assert_stderr_mentions("nested pid namespaces are not restored");
    assert_eq!(status_field(pids[&1], "TracerPid").as_deref(), Some("0"));
    assert_eq!(w.cmd("ids"), IDS, "the tree runs on as before");
}

/// The last pid the namespace handed out, read from inside by a `cat` that nsenter forks there
/// (util-linux): it reads its own pid, one more than the last before it.
fn last_pid_in(init: i32) -> i32 {
    let out = std::process::Command::new("nsenter")
        .args([
            "-t",
            &init.to_string(),
            "-p",
            "cat",
            "/proc/sys/kernel/ns_last_pid",
        ])
        .output()
        .expect("run nsenter (util-linux)");
    assert!(out.status.success(), "nsenter: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// A --leave-running dump leaves the namespace as it was, down to the pid its next process
/// gets: the Landlock checks' probe forked there (task/landlock.rs) puts the last pid back.
#[test]
fn a_leave_running_dump_leaves_the_next_pid_of_the_namespace() {
    cryo_bin();
    let w = Workload::spawn("pid-ns", &[]);
    assert_eq!(w.cmd("ids"), IDS, "before the dump");
    let (_, pids) = new_namespace(w.dir(), &[]);
    let init = pids[&1];
    let before = last_pid_in(init);
    let img = w.path("img");
    let init_arg = init.to_string();
    w.cryo(&[
        "dump".as_ref(),
        "-t".as_ref(),
        init_arg.as_ref(),
        "-D".as_ref(),
        img.as_os_str(),
        "--leave-running".as_ref(),
    ])
    .assert_success();
    assert_eq!(
        last_pid_in(init),
        before + 1,
        "the next pid after the dump (only the reader's own taken since)"
    );
    assert_eq!(w.cmd("ids"), IDS, "the original runs on");
}

/// A landlocked init (root, CAP_SYS_PTRACE: checked against a probe forked into its
/// namespace, where cryo is not seen): refused naming it, and the namespace left as it was,
/// down to its next pid.
#[test]
fn a_landlocked_init_is_refused_and_its_namespace_left_as_it_was() {
    cryo_bin();
    let w = Workload::spawn("pid-ns", &["landlock"]);
    assert_eq!(w.cmd("ids"), IDS, "before the dump");
    let (_, pids) = new_namespace(w.dir(), &[]);
    let init = pids[&1];
    let before = last_pid_in(init);
    let img = w.path("img");
    let init_arg = init.to_string();
    w.cryo(&[
        "dump".as_ref(),
        "-t".as_ref(),
        init_arg.as_ref(),
        "-D".as_ref(),
        img.as_os_str(),
    ])
    .assert_refused()
    .assert_stderr_mentions(&format!("pid {init} thread {init}: Landlock domain"));
    assert_eq!(last_pid_in(init), before + 1, "the next pid after the dump");
    assert_eq!(status_field(init, "TracerPid").as_deref(), Some("0"));
    assert_eq!(w.cmd("ids"), IDS, "the original runs on");
}

/// An epoll only in flight on a unix socket of a process in a PID namespace of its own (zdtm
/// scm05 in the ns flavour): its registration comes back with it. Before, the dump was
/// refused ("its target fd ... is held by fd N of pid P, not an fd of a process of the
/// image": the target's holder named by its pid in cryo's namespace, the holders by theirs
/// in the image's).
#[test]
fn an_epoll_in_flight_in_a_pid_namespace_comes_back_with_its_registration() {
    cryo_bin();
    let mut w = Workload::spawn("pid-ns", &["epoll-sent"]);
    let img = dump_killing_init(&w);
    let root = restore_copy(&w, &img, &[]);
    let _reaper = Reaper(vec![root]);
    w.adopt_restored_at(root);
    assert_eq!(w.cmd("ids"), IDS, "each restored process, from inside");
    assert_eq!(w.cmd("epoll-recv"), "ready e1");
}

/// Whether this kernel keeps a pid_max per PID namespace (Linux 6.14).
fn pid_max_per_namespace() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release
        .split(['.', '-'])
        .map(|p| p.trim().parse::<u32>().ok());
    matches!(
        (parts.next().flatten(), parts.next().flatten()),
        (Some(major), Some(minor)) if (major, minor) >= (6, 14)
    )
}

/// A PID namespace whose init has a child with a pid above the pid_max of cryo's namespace
/// (a new namespace's own starts at 4194304 since Linux 6.14: zdtm transition/thread-bomb in
/// the ns flavour had tids past 32768), and whose own pid_max was set (to that pid + 10):
/// restored, the child has its pid, the namespace its pid_max and its last pid. Before: the
/// restore refused the image ("pid N is outside 1..32768 (pid_max)"); the namespace came
/// back with 4194304 and the next pid of a fresh one.
#[test]
fn a_pid_namespace_comes_back_with_its_pid_max_last_pid_and_pids_above_cryos_pid_max() {
    cryo_bin();
    if !pid_max_per_namespace() {
        eprintln!("skipped: this kernel has one pid_max for every namespace (before 6.14)");
        return;
    }
    let ours: i32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // Above ours where it can be (4194304 is the most any namespace may have).
    let high = (ours + 1000).min(4_194_304 - 20);
    let mut w = Workload::spawn("pid-ns", &[&format!("highpid={high}")]);
    let numbers = format!("pid_max={} last={high} kid={high} alive", high + 10);
    assert_eq!(w.cmd("numbers"), numbers, "before the dump");
    let img = dump_killing_init(&w);
    let root = restore_copy(&w, &img, &[]);
    let _reaper = Reaper(vec![root]);
    w.adopt_restored_at(root);
    assert_eq!(
        w.cmd("numbers"),
        numbers,
        "the namespace's pid_max, last pid and the child, from inside the restored init"
    );
    assert_eq!(w.cmd("ids"), IDS, "each restored process, from inside");
}
