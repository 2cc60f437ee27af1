//! Event-loop fds after a restore: epoll, eventfd, timerfd, signalfd, memfd and inotify
//! (the `events` workload), and a real node.js process ticking through its event loop.
//!
//! Needs the engine: `cryo` must be built (`cargo build -p cryo`).

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cryo_tests::{
    children_of, control_dir, cryo_bin, run_cryo, Pidfd, Reaper, Workload, CMD_TIMEOUT,
};

/// The `tfd:` lines of an epoll fdinfo, as (fd, events, data) words.
fn epoll_targets(pid: i32, fd: i32) -> Vec<String> {
    let info = fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).unwrap();
    let mut t = info
        .lines()
        .filter(|l| l.starts_with("tfd:"))
        .map(|l| l.split_whitespace().take(6).collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>();
    // fdinfo lists them in kernel (file address) order.
    t.sort();
    t
}

/// The inode of the file registered as `tfd` in epoll `fd` of `pid` (its fdinfo's `ino:`).
fn target_ino(pid: i32, fd: i32, tfd: i32) -> u64 {
    let info = fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).unwrap();
    let line = info
        .lines()
        .find(|l| l.split_whitespace().take(2).eq(["tfd:", &tfd.to_string()]))
        .unwrap_or_else(|| panic!("no target {tfd} in {info}"));
    let ino = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("ino:"))
        .unwrap_or_else(|| panic!("no ino: in {line}"));
    u64::from_str_radix(ino, 16).unwrap()
}

/// The inode of the pipe fd `fd` of `pid` is on.
fn pipe_ino(pid: i32, fd: i32) -> u64 {
    let link = fs::read_link(format!("/proc/{pid}/fd/{fd}")).unwrap();
    let link = link.to_string_lossy();
    link.strip_prefix("pipe:[")
        .and_then(|l| l.strip_suffix(']'))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("fd {fd} of {pid} is not a pipe: {link}"))
}

/// The `wd:` and `mask:` of every inotify watch in an fdinfo.
fn inotify_watches(pid: i32, fd: i32) -> Vec<String> {
    let info = fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).unwrap();
    info.lines()
        .filter(|l| l.starts_with("inotify"))
        .map(|l| {
            l.split_whitespace()
                .filter(|w| w.starts_with("wd:") || w.starts_with("mask:"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

#[test]
fn event_loop_fds_work_after_restore() {
    cryo_bin();
    let mut w = Workload::spawn("events", &[]);
    assert_eq!(w.cmd("count"), "5");
    assert_eq!(w.cmd("add 2"), "ok");
    assert_eq!(w.cmd("count"), "7");
    w.await_reply("wait", |r| r == "ready 41,42");
    let before: u64 = w.await_reply("timer", |r| r != "0").parse().unwrap();
    assert_eq!(w.cmd("sig"), "none");
    let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW;
    assert_eq!(w.cmd("memfd"), format!("memfd-contents {seals}"));
    // Events of wd 3 (DIR/w/watched); wd 1 (DIR/w) sees them as its child's.
    let of_wd3 = |r: String| {
        let mut e: Vec<String> = r
            .split(',')
            .filter(|e| e.starts_with("3:"))
            .map(str::to_string)
            .collect();
        e.sort();
        e.dedup();
        e.join(",")
    };
    let touched = of_wd3(w.cmd("touch"));
    assert_eq!(touched, "3:2,3:8");
    let targets = epoll_targets(w.pid(), 40);
    assert_eq!(targets.len(), 3, "{targets:?}");
    let watches = inotify_watches(w.pid(), 45);
    assert_eq!(watches.len(), 2, "{watches:?}");

    w.dump_and_restore();

    assert_eq!(epoll_targets(w.pid(), 40), targets);
    assert_eq!(inotify_watches(w.pid(), 45), watches);
    assert_eq!(w.cmd("count"), "7");
    // The semaphore flag survived: one read takes 1.
    assert_eq!(w.cmd("add 1"), "ok");
    assert_eq!(w.cmd("count"), "8");
    w.await_reply("wait", |r| r == "ready 41,42");
    let after: u64 = w
        .await_reply("timer", |r| r.parse::<u64>().unwrap() > before)
        .parse()
        .unwrap();
    assert!(after > before);
    assert_eq!(w.cmd("sig"), "none");
    Pidfd::open(w.pid()).unwrap().signal(libc::SIGUSR1).unwrap();
    w.await_reply("wait", |r| r.contains("43"));
    assert_eq!(w.cmd("sig"), libc::SIGUSR1.to_string());
    assert_eq!(w.cmd("memfd"), format!("memfd-contents {seals}"));
    assert_eq!(of_wd3(w.cmd("touch")), touched);
    // A second dump of the restored process: the restored fds dump again.
    let img2 = w.path("img2");
    w.dump_ok(&img2);
    w.restore_background(&img2);
    assert_eq!(epoll_targets(w.pid(), 40), targets);
    assert_eq!(w.cmd("count"), "8");
    w.kill_restored();
}

/// An epoll whose ready list holds less than what is ready (`epoll-edges`): an EPOLLET pipe
/// (data e1) whose edge epoll_wait reported, its byte not read; a level-triggered pipe (1f);
/// an EPOLLET eventfd (e2, registered under a number closed since) and an EPOLLONESHOT pipe
/// (5) registered ready, not reported yet: the ready list is [1f, e2, 5]. After a
/// `--leave-running` dump the original's epoll_wait reports 1f, e2 and 5 (the dump's
/// epoll_wait took e2 and 5, and put them back), then 1f alone; restored from that image,
/// the same: e1's edge is not reported again (before: `ready 1f,e1,e2,5` or so, in fdinfo
/// order); dumped again with every edge taken, only 1f.
#[test]
fn an_epoll_edge_already_reported_is_not_reported_again_after_restore() {
    cryo_bin();
    let mut w = Workload::spawn("epoll-edges", &[]);
    let targets = epoll_targets(w.pid(), 70);
    assert_eq!(targets.len(), 4, "{targets:?}");
    let left = w.path("left");
    w.dump(&left, &["--leave-running"]).assert_success();
    assert_eq!(epoll_targets(w.pid(), 70), targets);
    assert_eq!(
        w.cmd("wait"),
        "ready 1f,e2,5",
        "the original after --leave-running"
    );
    assert_eq!(w.cmd("wait"), "ready 1f");

    w.kill_original();
    w.restore_background(&left);
    assert_eq!(epoll_targets(w.pid(), 70), targets);
    assert_eq!(w.cmd("wait"), "ready 1f,e2,5", "restored");
    assert_eq!(w.cmd("wait"), "ready 1f");

    w.dump_and_restore();
    assert_eq!(
        w.cmd("wait"),
        "ready 1f",
        "restored again, every edge taken"
    );
    w.kill_restored();
}

/// An epoll whose target fd was closed after the registration, another fd keeping the file
/// (a pipe registered as 60, fd 60 closed, the pipe's read end at 50): after restore fd 60 is
/// still closed, the epoll lists target 60 with its data, and reports it when the pipe fills.
#[test]
fn an_epoll_target_whose_fd_was_closed_comes_back_under_its_number() {
    cryo_bin();
    let mut w = Workload::spawn("epoll-stale", &["closed"]);
    let targets = epoll_targets(w.pid(), 70);
    assert_eq!(targets, ["tfd: 60 events: 19 data: a60"]);
    assert_eq!(w.cmd("fd 60"), "closed");

    w.dump_and_restore();

    assert_eq!(epoll_targets(w.pid(), 70), targets);
    assert_eq!(w.cmd("fd 60"), "closed");
    assert_eq!(w.cmd("wait"), "ready ");
    assert_eq!(w.cmd("fill a"), "ok");
    assert_eq!(w.cmd("wait"), "ready a60");
    assert_eq!(w.cmd("drain a"), "ok");
    assert_eq!(w.cmd("wait"), "ready ");
    w.kill_restored();
}

/// An epoll with two files registered under one number (pipe B as 61, fd 61 closed, pipe C
/// then registered as 61) and a target whose number an unregistered file took (pipe D as
/// 62, fd 62 now an eventfd): after restore the epoll lists the same targets, fds 61 and 62
/// hold what they held, and each pipe filling reports its own data.
#[test]
fn an_epoll_target_whose_number_was_reused_comes_back_with_its_own_file() {
    cryo_bin();
    let mut w = Workload::spawn("epoll-stale", &["reused"]);
    let targets = epoll_targets(w.pid(), 70);
    assert_eq!(targets.len(), 3, "{targets:?}");
    let (fd61, fd62) = (w.cmd("fd 61"), w.cmd("fd 62"));
    assert_eq!(fd61, w.cmd("fd 54"));
    assert_eq!(fd62, "anon_inode:[eventfd]");

    w.dump_and_restore();

    assert_eq!(epoll_targets(w.pid(), 70), targets);
    assert_eq!(w.cmd("fd 61"), w.cmd("fd 54"));
    assert_eq!(w.cmd("fd 62"), fd62);
    assert_eq!(w.cmd("wait"), "ready ");
    for (pipe, data) in [("b", "b61"), ("c", "c61"), ("d", "d62")] {
        assert_eq!(w.cmd(&format!("fill {pipe}")), "ok");
        assert_eq!(w.cmd("wait"), format!("ready {data}"));
        assert_eq!(w.cmd(&format!("drain {pipe}")), "ok");
    }
    assert_eq!(w.cmd("wait"), "ready ");
    w.kill_restored();
}

/// An epoll whose registered file no fd of its process holds any more (pipe E registered as
/// 63, then 63 and the read end closed, a child keeping the read end): after a
/// `--leave-running` dump and after a restore the epoll lists the same target, fds 63 and 58
/// stay closed, and it reports the pipe when it fills.
#[test]
fn an_epoll_target_held_only_by_another_process_comes_back() {
    cryo_bin();
    let mut w = Workload::spawn("epoll-stale", &["elsewhere"]);
    let targets = epoll_targets(w.pid(), 70);
    assert_eq!(targets, ["tfd: 63 events: 19 data: e63"]);
    let closed = |w: &Workload| {
        assert_eq!(w.cmd("fd 63"), "closed");
        assert_eq!(w.cmd("fd 58"), "closed");
    };
    let reports = |w: &Workload| {
        assert_eq!(w.cmd("wait"), "ready ");
        assert_eq!(w.cmd("fill e"), "ok");
        assert_eq!(w.cmd("wait"), "ready e63");
    };
    closed(&w);
    w.dump(&w.path("left"), &["--leave-running"])
        .assert_success();
    assert_eq!(epoll_targets(w.pid(), 70), targets);
    closed(&w);
    w.dump_and_restore();
    assert_eq!(epoll_targets(w.pid(), 70), targets);
    closed(&w);
    reports(&w);
    w.kill_restored();
}

/// The common shape: a parent registers pipe F's read end as 68 in an epoll and forks; the
/// child keeps the epoll, closes its fds on pipe F and opens an eventfd at 68; the parent
/// closes the epoll and keeps the read end (66) and write end. After a `--leave-running`
/// dump, in a copy of that image restored in new PID and network namespaces beside it, and
/// after a restore, the child's epoll lists the same target (tfd 68, events, data, and the
/// inode of the parent's pipe), its fd 68 is still its eventfd, and epoll_wait in the child
/// reports 0xf68 once the parent (the holder) writes into the pipe, and nothing once it
/// drained it.
#[test]
fn an_epoll_target_held_only_by_the_parent_comes_back_in_the_child() {
    cryo_bin();
    let mut w = Workload::spawn("epoll-stale", &["kept-by-parent"]);
    // The child answers once its fds are set.
    assert_eq!(w.cmd("kid fd 68"), "anon_inode:[eventfd]");
    let [kid] = w.kids()[..] else {
        panic!("not one child")
    };
    let targets = epoll_targets(kid, 70);
    assert_eq!(targets, ["tfd: 68 events: 19 data: f68"]);
    let shape = |w: &Workload| {
        assert_eq!(w.cmd("fd 70"), "closed");
        assert_eq!(w.cmd("kid fd 68"), "anon_inode:[eventfd]");
        assert_eq!(w.cmd("kid fd 66"), "closed");
        assert_eq!(w.cmd("kid fd 67"), "closed");
        assert_eq!(w.cmd("kid wait"), "ready ");
    };
    // The registered file is the parent's pipe (the fdinfo names its inode).
    let same_file = |parent: i32, kid: i32| {
        assert_eq!(target_ino(kid, 70, 68), pipe_ino(parent, 66));
    };
    same_file(w.pid(), kid);
    shape(&w);
    let left = w.path("left");
    w.dump(&left, &["--leave-running"]).assert_success();
    assert_eq!(epoll_targets(kid, 70), targets);
    shape(&w);

    // A copy in new PID and network namespaces beside the original: the holder is named by
    // its pid inside. Both parents read the same command FIFO: the original stops meanwhile.
    let outside = w.restore_copy_in_namespaces(&left);
    let copy = Pidfd::open(outside).unwrap();
    let mut reaper = Reaper(vec![outside]);
    let copy_kids = children_of(outside as u32);
    reaper.0.extend(&copy_kids);
    let [copy_kid] = copy_kids[..] else {
        panic!("the copy has not one child: {copy_kids:?}")
    };
    assert_eq!(epoll_targets(copy_kid, 70), targets);
    same_file(outside, copy_kid);
    let original = w.stop_original();
    shape(&w);
    assert_eq!(w.cmd("fill f"), "ok");
    assert_eq!(w.cmd("kid wait"), "ready f68");
    copy.signal(libc::SIGKILL).unwrap();
    assert!(copy.wait_exit(CMD_TIMEOUT), "the copy did not die");
    original.signal(libc::SIGCONT).unwrap();
    assert_eq!(
        w.cmd("kid wait"),
        "ready ",
        "the original's pipe is its own"
    );

    w.dump_and_restore();
    assert_eq!(w.kids(), [kid]);
    assert_eq!(epoll_targets(kid, 70), targets);
    same_file(w.pid(), kid);
    shape(&w);
    assert_eq!(w.cmd("fill f"), "ok");
    assert_eq!(w.cmd("kid wait"), "ready f68");
    assert_eq!(w.cmd("drain f"), "ok");
    assert_eq!(w.cmd("kid wait"), "ready ");
    w.kill_restored();
}

/// An epoll whose registered file is only in flight (sent on a unix socket, never received,
/// every fd on it closed): refused, naming the epoll's pid and fd and the number, the
/// process left as it was.
#[test]
fn an_epoll_target_only_in_flight_is_refused() {
    cryo_bin();
    let w = Workload::spawn("epoll-stale", &["in-flight"]);
    let targets = epoll_targets(w.pid(), 70);
    assert_eq!(targets, ["tfd: 63 events: 19 data: e63"]);
    w.assert_dump_refused(
        "70",
        "no fd of the task or of another process of the dump holds the file registered as fd 63",
    );
    assert_eq!(epoll_targets(w.pid(), 70), targets);
    assert_eq!(w.cmd("wait"), "ready ");
}

/// An epoll whose registered file only a child holds, and as a /proc file
/// (/proc/PARENT/mountinfo, which the restore opens after registering the targets): refused,
/// naming the epoll's pid and fd, the number, and the child's pid and fd; the process and its
/// child left as they were.
#[test]
fn an_epoll_target_held_only_by_a_proc_file_of_another_process_is_refused() {
    cryo_bin();
    let w = Workload::spawn("epoll-stale", &["proc-elsewhere"]);
    let targets = epoll_targets(w.pid(), 70);
    assert_eq!(targets, ["tfd: 63 events: 19 data: e63"]);
    assert_eq!(w.cmd("fd 58"), "closed");
    let kid = children_of(w.pid() as u32);
    assert_eq!(kid.len(), 1, "{kid:?}");
    w.assert_dump_refused(
        "70",
        &format!(
            "the file registered as fd 63 is held only by fd 58 of pid {}, a /proc file",
            kid[0]
        ),
    );
    assert_eq!(epoll_targets(w.pid(), 70), targets);
}

/// How many ticks node wrote so far.
fn ticks(path: &Path) -> u64 {
    fs::read_to_string(path)
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn await_ticks(path: &Path, above: u64) -> u64 {
    let deadline = Instant::now() + CMD_TIMEOUT;
    loop {
        let n = ticks(path);
        if n > above {
            return n;
        }
        assert!(Instant::now() < deadline, "node stuck at tick {n}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_node_process_keeps_ticking_after_restore() {
    cryo_bin();
    if Command::new("node").arg("--version").output().is_err() {
        eprintln!("node is not installed: skipped");
        return;
    }
    let dir = control_dir();
    let tick_file = dir.path().join("ticks");
    let watched = dir.path().join("watched");
    fs::create_dir(&watched).unwrap();
    let script = format!(
        "const fs = require('fs'); let n = 0; let seen = 0;\n\
         fs.watch({watched:?}, () => {{ seen++; }});\n\
         setInterval(() => fs.writeFileSync({tick:?} + '.tmp', `${{++n}} ${{seen}}`) ||\n\
           fs.renameSync({tick:?} + '.tmp', {tick:?}), 20);",
        watched = watched.display().to_string(),
        tick = tick_file.display().to_string(),
    );
    let mut node = cryo_tests::own_session(&mut Command::new("node"))
        .arg("-e")
        .arg(&script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(dir.path().join("node.log")).unwrap())
        .spawn()
        .unwrap();
    let pid = node.id() as i32;
    let n = await_ticks(&tick_file, 3);
    let img = dir.path().join("img");
    let out = run_cryo(
        dir.path(),
        "dump",
        ["dump", "-t", &pid.to_string(), "-D", img.to_str().unwrap()],
    );
    if !out.success() {
        let _ = node.kill();
        let _ = node.wait();
        panic!("node dump failed\n{out}");
    }
    // The dump killed node.
    let _ = node.wait();
    let stopped = ticks(&tick_file);
    assert!(stopped >= n);
    let out = run_cryo(
        dir.path(),
        "restore",
        ["restore", "-D", img.to_str().unwrap(), "--detach"],
    );
    out.assert_success();
    let restored = Pidfd::open(pid).expect("node restored with its pid");
    let later = await_ticks(&tick_file, stopped + 5);
    // fs.watch still reports: a file created in the watched dir is seen.
    fs::write(watched.join("new"), b"x").unwrap();
    let deadline = Instant::now() + CMD_TIMEOUT;
    loop {
        let text = fs::read_to_string(&tick_file).unwrap_or_default();
        let seen: u64 = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if seen > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "fs.watch saw nothing: {text:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(later > stopped);
    restored.signal(libc::SIGKILL).unwrap();
    assert!(restored.wait_exit(CMD_TIMEOUT));
}

/// An epoll only in flight (sent on a unix socket to itself, its fd closed), its targets
/// registered under a number still open and under one closed since: received after a
/// restore, it holds both registrations and reports each pipe as it fills.
#[test]
fn an_epoll_only_in_flight_comes_back_with_its_registrations() {
    cryo_bin();
    let mut w = Workload::spawn("epoll-stale", &["sent"]);
    assert_eq!(w.cmd("fd 70"), "closed");
    w.dump_and_restore();
    assert_eq!(w.cmd("fd 70"), "closed");
    assert_eq!(w.cmd("recv"), "ok");
    assert_eq!(
        epoll_targets(w.pid(), 70),
        [
            "tfd: 60 events: 19 data: a60",
            "tfd: 61 events: 19 data: b61"
        ]
    );
    assert_eq!(w.cmd("fd 61"), "closed");
    assert_eq!(w.cmd("wait"), "ready ");
    assert_eq!(w.cmd("fill b"), "ok");
    assert_eq!(w.cmd("wait"), "ready b61");
    assert_eq!(w.cmd("fill a"), "ok");
    assert_eq!(w.cmd("wait"), "ready a60,b61");
    w.kill_restored();
}

/// An epoll in flight whose registered file only a child holds: the restore would register
/// it in the process making the socket that carries it, which does not hold the file:
/// refused at dump naming the socket's pid and fd and both processes, the process left as it
/// was (it receives the epoll, registration intact).
#[test]
fn an_epoll_in_flight_whose_target_another_process_holds_is_refused() {
    cryo_bin();
    let w = Workload::spawn("epoll-stale", &["sent-elsewhere"]);
    w.assert_dump_refused("64", "held by several processes");
    assert_eq!(w.cmd("recv"), "ok");
    assert_eq!(epoll_targets(w.pid(), 70), ["tfd: 63 events: 19 data: e63"]);
}
