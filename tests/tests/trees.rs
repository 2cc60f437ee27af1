//! Process trees: children, grandchildren, process groups, zombies and pipes shared between
//! parent and child come back as they were.
//!
//! Needs the engine: `cryo` must be built (`cargo build -p cryo`).

use cryo_tests::{control_dir, cryo_bin, Reaper, Workload};

/// (ppid, pgid, sid, state) of `pid` from /proc; the state only says zombie ('Z') or not
/// ('-'), running and sleeping being a matter of the moment.
fn identity(pid: i32) -> (i32, i32, i32, char) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|e| panic!("pid {pid}: {e}"));
    let rest: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    (
        rest[1].parse().unwrap(),
        rest[2].parse().unwrap(),
        rest[3].parse().unwrap(),
        if rest[0] == "Z" { 'Z' } else { '-' },
    )
}

#[test]
fn a_three_generation_tree_with_a_group_a_zombie_and_shared_pipes() {
    cryo_bin();
    let mut w = Workload::spawn("tree", &[]);
    let kids = w.kids();
    let _reaper = Reaper(kids[..2].to_vec());
    let (child, grandchild, zombie) = (kids[0], kids[1], kids[2]);
    assert_eq!(w.cmd("ask hello"), "got hello");
    // The zombie is one once its exit is visible.
    let deadline = std::time::Instant::now() + cryo_tests::CMD_TIMEOUT;
    while identity(zombie).3 != 'Z' {
        assert!(std::time::Instant::now() < deadline, "no zombie");
        std::thread::yield_now();
    }
    let before: Vec<_> = [w.pid(), child, grandchild, zombie]
        .iter()
        .map(|&p| identity(p))
        .collect();
    assert_eq!(before[1].1, child, "the child leads its own process group");
    assert_eq!(
        before[2].1, child,
        "the grandchild is in its parent's group"
    );
    assert_eq!(before[0].2, w.pid(), "the root leads the session");
    w.cmd("tick");
    // The zombie's name and ids (before 2026-12-07: the restorer's, "cryo-workload" and 0),
    // its groups, signal masks and CPU mask (before: the restorer's; zdtm transition/fork's
    // zombies, compared by tools/zdtm VIS=1).
    let named = |pid: i32| {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let shown = [
            "Name:",
            "Uid:",
            "Gid:",
            "Groups:",
            "SigBlk:",
            "SigIgn:",
            "SigCgt:",
            "Cpus_allowed_list:",
        ];
        status
            .lines()
            .filter(|l| shown.iter().any(|k| l.starts_with(k)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let zombie_named = named(zombie);
    assert!(
        zombie_named.starts_with("Name:\tzname Uid:\t1234"),
        "{zombie_named}"
    );
    for shown in ["Groups:\t555 4321", "SigBlk:\t0000000000000800"] {
        assert!(zombie_named.contains(shown), "{zombie_named}");
    }

    let img = w.path("img");
    w.dump_ok(&img);
    for p in [child, grandchild] {
        assert!(
            !std::path::Path::new(&format!("/proc/{p}")).exists() || identity(p).3 == 'Z',
            "the dump killed the whole tree"
        );
    }
    w.restore_background(&img);
    let after: Vec<_> = [w.pid(), child, grandchild, zombie]
        .iter()
        .map(|&p| identity(p))
        .collect();
    // The root's parent is now cryo; everything below is as it was.
    assert_eq!(
        &after[1..],
        &before[1..],
        "pids, parents, groups, sessions, states"
    );
    assert_eq!(after[0].1, before[0].1);
    assert_eq!(after[0].2, before[0].2);
    assert_eq!(
        named(zombie),
        zombie_named,
        "the zombie's name, ids, groups, signal masks and CPU mask"
    );
    assert_eq!(w.cmd("tick"), "2", "the root goes on");
    // Both pipes still connect root and child, in both directions.
    assert_eq!(w.cmd("ask again"), "got again");
    // The zombie is the child's to reap, with the status it exited with.
    assert_eq!(w.cmd("ask reap"), "reaped true 7");
    w.kill_restored();
}

#[test]
fn a_root_inside_another_tree_is_refused() {
    cryo_bin();
    let w = Workload::spawn("tree", &[]);
    let kids = w.kids();
    let _reaper = Reaper(kids[..2].to_vec());
    let both = format!("{},{}", w.pid(), kids[0]);
    let img = w.path("img");
    let out = w.cryo(&["dump", "-t", &both, "-D", img.to_str().unwrap()]);
    out.assert_refused()
        .assert_stderr_has_word(&kids[0].to_string())
        .assert_stderr_mentions("inside the tree");
    w.assert_untouched();
    assert_eq!(w.cmd("ask still"), "got still");
}

#[test]
fn a_pipe_whose_ends_parent_and_child_hold_apart_stays_one_pipe() {
    cryo_bin();
    let mut w = Workload::spawn("pipe-split", &[]);
    let kid: i32 = w.cmd("kid").parse().unwrap();
    let _reaper = Reaper(vec![kid]);
    // Unread at dump time: the child's "early" waits in the pipe.
    w.dump_and_restore();
    assert_eq!(w.cmd("read-wait"), "early", "the pipe's data came back");
    // SAFETY: kill takes plain integers.
    assert_eq!(unsafe { libc::kill(kid, libc::SIGUSR1) }, 0);
    assert_eq!(
        w.cmd("read-wait"),
        "late",
        "the child still writes into the same pipe"
    );
    w.kill_restored();
}

#[test]
fn a_root_in_a_session_led_outside_the_dump_is_refused_naming_pid_session_and_leader() {
    use std::os::unix::process::CommandExt;
    cryo_bin();
    // A group of its own (the workload's setsid then fails): its session is the test's.
    let w = Workload::spawn_configured(control_dir(), "counter", &[], |c| {
        c.process_group(0);
    });
    let (_, pgid, sid, _) = identity(w.pid());
    assert_eq!(pgid, w.pid());
    assert_ne!(sid, w.pid(), "the workload leads no session");
    let img = w.path("img");
    w.dump(&img, &[])
        .assert_refused()
        .assert_stderr_mentions(&format!(
            "pid {}: its session {sid} is led by pid {sid}, which is not in the dump above it",
            w.pid()
        ))
        .assert_stderr_mentions("--shell-job");
    w.assert_untouched();
    assert_eq!(identity(w.pid()).2, sid);
}

/// Waits until `pid` is a zombie (its exit visible).
fn await_zombie(pid: i32) {
    let deadline = std::time::Instant::now() + cryo_tests::CMD_TIMEOUT;
    while identity(pid).3 != 'Z' {
        assert!(std::time::Instant::now() < deadline, "{pid} is no zombie");
        std::thread::yield_now();
    }
}

#[test]
fn a_daemon_comes_back_in_the_session_and_group_its_exited_leaders_left_it() {
    cryo_bin();
    for runner in [&["counter"][..], &["group", "counter"][..]] {
        let mut w = Workload::spawn("daemon", runner);
        let (ppid, pgid, sid, _) = identity(w.pid());
        assert_ne!(sid, w.pid(), "{runner:?}: the daemon leads no session");
        // Exited; reaped by its parent a moment later (bounded wait: no event says so).
        let deadline = std::time::Instant::now() + cryo_tests::CMD_TIMEOUT;
        while cryo_tests::pid_exists(sid) || cryo_tests::pid_exists(pgid) {
            assert!(
                std::time::Instant::now() < deadline,
                "{runner:?}: its session leader {sid} and group leader {pgid} exited"
            );
            std::thread::yield_now();
        }
        assert_eq!(pgid == sid, runner.len() == 1, "{runner:?}");
        assert_eq!(w.cmd("session"), format!("{pgid} {sid}"));
        w.cmd("tick");
        let img = w.path("img");
        w.dump_ok(&img);
        w.restore_background(&img);
        // As the daemon sees it, and with no stand-in left behind.
        assert_eq!(w.cmd("session"), format!("{pgid} {sid}"), "{runner:?}");
        assert_eq!(w.cmd("tick"), "2");
        assert!(
            !cryo_tests::pid_exists(sid),
            "{runner:?}: the session's stand-in ended"
        );
        assert!(
            !cryo_tests::pid_exists(pgid),
            "{runner:?}: the group's stand-in ended"
        );
        assert_ne!(
            identity(w.pid()).0,
            ppid,
            "forked by cryo restore, as any root"
        );
        w.kill_restored();
    }
}

#[test]
fn a_group_whose_leader_exited_and_a_zombie_leading_its_session_come_back() {
    cryo_bin();
    let mut w = Workload::spawn("orphan-groups", &[]);
    let kids: Vec<i32> = w
        .cmd("kids")
        .split(' ')
        .map(|k| k.parse().expect("a pid"))
        .collect();
    let (member, zombie, session_zombie, leader) = (kids[0], kids[1], kids[2], kids[3]);
    let _reaper = Reaper(vec![member]);
    await_zombie(zombie);
    await_zombie(session_zombie);
    assert!(!cryo_tests::pid_exists(leader), "the group's leader exited");
    let before: Vec<_> = [member, zombie, session_zombie]
        .iter()
        .map(|&p| identity(p))
        .collect();
    assert_eq!((before[0].1, before[1].1), (leader, leader));
    assert_eq!((before[2].1, before[2].2), (session_zombie, session_zombie));
    let img = w.path("img");
    w.dump_ok(&img);
    w.restore_background(&img);
    let after: Vec<_> = [member, zombie, session_zombie]
        .iter()
        .map(|&p| identity(p))
        .collect();
    assert_eq!(after, before, "parents, groups, sessions, states");
    assert!(
        !cryo_tests::pid_exists(leader),
        "the group's stand-in ended"
    );
    w.kill_restored();
}

#[test]
fn a_group_whose_leader_exited_in_a_session_led_below_the_root_comes_back() {
    cryo_bin();
    let mut w = Workload::spawn("orphan-groups", &["below"]);
    let kids: Vec<i32> = w
        .cmd("kids")
        .split(' ')
        .map(|k| k.parse().expect("a pid"))
        .collect();
    let (member, zombie, session_leader, leader) = (kids[0], kids[1], kids[2], kids[3]);
    let _reaper = Reaper(vec![member, session_leader]);
    await_zombie(zombie);
    assert!(!cryo_tests::pid_exists(leader), "the group's leader exited");
    let identities = || {
        [member, zombie, session_leader]
            .iter()
            .map(|&p| identity(p))
            .collect::<Vec<_>>()
    };
    let before = identities();
    assert_eq!((before[0].1, before[1].1), (leader, leader), "in the group");
    assert_eq!(
        (before[0].2, before[2].1, before[2].2),
        (session_leader, session_leader, session_leader),
        "in the session of a child of the root"
    );
    let img = w.path("img");
    w.dump_ok(&img);
    w.restore_background(&img);
    assert_eq!(identities(), before, "parents, groups, sessions, states");
    assert!(
        !cryo_tests::pid_exists(leader),
        "the group's stand-in ended, reaped by the session's leader"
    );
    w.kill_restored();
}

#[test]
fn children_forked_before_their_parents_setsid_come_back_in_the_session_they_were_left_in() {
    cryo_bin();
    let mut w = Workload::spawn("setsid-after-fork", &[]);
    let kids: Vec<i32> = w
        .cmd("kids")
        .split(' ')
        .map(|k| k.parse().expect("a pid"))
        .collect();
    let _reaper = Reaper(kids.clone());
    let (a, a2, b, b1) = (kids[0], kids[2], kids[3], kids[4]);
    await_zombie(a2);
    let before: Vec<_> = kids.iter().map(|&p| identity(p)).collect();
    let root = w.pid();
    // a1, a2 and b2 in the root's session; a, b and b1 leading their own.
    assert_eq!(
        before.iter().map(|i| i.2).collect::<Vec<_>>(),
        [a, root, root, b, b1, root]
    );
    let img = w.path("img");
    w.dump_ok(&img);
    w.restore_background(&img);
    let after: Vec<_> = kids.iter().map(|&p| identity(p)).collect();
    assert_eq!(after, before, "parents, groups, sessions, states");
    w.kill_restored();
}

#[test]
fn a_zombie_leader_whose_session_holds_an_orphan_outside_the_dump_is_refused_and_left_running() {
    cryo_bin();
    let w = Workload::spawn("zombie-leader", &[]);
    let kids: Vec<i32> = w
        .cmd("kids")
        .split(' ')
        .map(|k| k.parse().expect("a pid"))
        .collect();
    let (zombie, orphan) = (kids[0], kids[1]);
    let _reaper = Reaper(vec![orphan]);
    await_zombie(zombie);
    // The orphan left the tree when the zombie exited, still in its session and group.
    let deadline = std::time::Instant::now() + cryo_tests::CMD_TIMEOUT;
    while identity(orphan).0 == zombie {
        assert!(
            std::time::Instant::now() < deadline,
            "the orphan was not reparented"
        );
        std::thread::yield_now();
    }
    assert_eq!(identity(orphan).2, zombie);
    w.dump(&w.path("img"), &[])
        .assert_refused()
        .assert_stderr_mentions(&format!(
            "pid {zombie}: its session {zombie} also holds pid {orphan}, outside the dump"
        ));
    assert_eq!(identity(zombie).3, 'Z', "the zombie is left as it was");
    assert_eq!(
        w.cmd("kids"),
        format!("{zombie} {orphan}"),
        "the tree runs on"
    );
}

/// A child made by clone with an exit signal other than SIGCHLD (SIGUSR2; or none): a restore
/// forks with SIGCHLD, and its parent would be told of its end with another signal (or could
/// wait for it with a plain waitpid). Refused, naming its pid and the signal; the tree left
/// running. Before: restored with SIGCHLD (exit signal 17 in its stat).
#[test]
fn a_child_cloned_with_another_exit_signal_is_refused_naming_it() {
    cryo_bin();
    for (sig, named) in [(libc::SIGUSR2, "SIGUSR2"), (0, "none")] {
        let w = Workload::spawn("socks", &[]);
        let child: i32 = w.cmd(&format!("clone-child {sig}")).parse().unwrap();
        let _reaper = Reaper(vec![child]);
        w.dump(&w.path("img"), &[])
            .assert_refused()
            .assert_stderr_has_word(&child.to_string())
            .assert_stderr_mentions(&format!(
                "its exit signal (clone's: what its parent gets when it ends) is {named}"
            ));
        w.assert_untouched();
    }
}

/// A child forked by a thread other than the main one, with a parent-death signal: the
/// kernel sends it when that thread exits, but a restore forks the child from the main
/// thread. Refused, naming the child and the thread; the tree runs on. Before: restored, and
/// the thread's exit no longer signalled the child.
#[test]
fn a_child_with_a_parent_death_signal_forked_by_a_thread_is_refused() {
    cryo_bin();
    let w = Workload::spawn("kin", &[]);
    let reply = w.cmd("pdeath-thread");
    let child: i32 = reply
        .strip_prefix("forked ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{reply}"));
    let _reaper = Reaper(vec![child]);
    w.dump(&w.path("img"), &[])
        .assert_refused()
        .assert_stderr_has_word(&child.to_string())
        .assert_stderr_mentions("has a parent-death signal");
    w.assert_untouched();
}

/// A zombie killed by a signal that dumped core (wait status 0x86: WCOREDUMP): made again
/// at restore it dies without a core, and its parent would read CLD_KILLED. Refused, naming
/// the zombie. Before: restored with status 0x6.
#[test]
fn a_zombie_that_dumped_core_is_refused_naming_it() {
    cryo_bin();
    let w = Workload::spawn("kin", &[]);
    let reply = w.cmd("core-zombie");
    let (zombie, code) = match reply.split_whitespace().collect::<Vec<_>>()[..] {
        ["zombie", z, c] => (z.to_string(), c.to_string()),
        _ => panic!("{reply}"),
    };
    // CLD_DUMPED only where this host writes the core (core_pattern, limits).
    if code != libc::CLD_DUMPED.to_string() {
        eprintln!("no core dumped here (si_code {code}): nothing to check");
        return;
    }
    w.dump(&w.path("img"), &[])
        .assert_refused()
        .assert_stderr_has_word(&zombie)
        .assert_stderr_mentions("shows a core dump");
    w.assert_untouched();
}
