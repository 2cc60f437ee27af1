//! Task states a process can be dumped in: stopped by job control comes back stopped; threads
//! in waits a stop makes fail with EINTR (epoll_wait, sigwaitinfo) wait on, with no EINTR,
//! after a --leave-running dump and after a restore, and threads in nanosleep and in poll
//! without timeout sleep and poll on.
//!
//! Needs the engine: `cryo` must be built (`cargo build -p cryo`).

use std::time::Instant;

use cryo_tests::{cryo_bin, Pidfd, Workload, CMD_TIMEOUT};

/// The state letter of /proc/PID/stat (after the command name's closing parenthesis).
fn state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.chars().next()
}

/// Waits (bounded) until `pid` is in `want`: a stop reaches /proc only once the signal is
/// taken, and nothing else can say so.
fn await_state(pid: i32, want: char) {
    let deadline = Instant::now() + CMD_TIMEOUT;
    loop {
        let now = state(pid);
        if now == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "pid {pid} is in state {now:?}, expected {want:?}"
        );
        std::thread::yield_now();
    }
}

fn stop(pid: i32) {
    Pidfd::open(pid).unwrap().signal(libc::SIGSTOP).unwrap();
    await_state(pid, 'T');
}

#[test]
fn a_stopped_process_comes_back_stopped_and_continues_on_sigcont() {
    cryo_bin();
    let mut w = Workload::spawn("counter", &[]);
    assert_eq!(w.cmd("tick"), "1");
    stop(w.pid());
    let img = w.path("img");
    w.dump_ok(&img);
    w.start_restore(&img);
    // Restored, and stopped again as it was when dumped, before answering anything.
    await_state(w.pid(), 'T');
    assert_eq!(w.status("TracerPid"), "0", "left traced");
    Pidfd::open(w.pid()).unwrap().signal(libc::SIGCONT).unwrap();
    w.await_restored();
    assert_eq!(w.cmd("get"), "1");
    assert_eq!(w.cmd("tick"), "2");
    w.kill_restored();
}

/// A stopped process sent SIGSTOP again (pending: zdtm stopped01, stopped02, stopped12): a
/// killing dump takes it, the restored process is stopped and continues on SIGCONT. Before
/// the fix of 2026-12-07 the dump's last read of the signal queues found that SIGSTOP, which
/// the seize had taken into the stop it reported, and refused it as "sent during the dump".
#[test]
fn a_stopped_process_with_a_sigstop_pending_comes_back_stopped() {
    cryo_bin();
    let mut w = Workload::spawn("counter", &[]);
    assert_eq!(w.cmd("tick"), "1");
    stop(w.pid());
    Pidfd::open(w.pid()).unwrap().signal(libc::SIGSTOP).unwrap();
    let img = w.path("img");
    w.dump_ok(&img);
    w.start_restore(&img);
    await_state(w.pid(), 'T');
    Pidfd::open(w.pid()).unwrap().signal(libc::SIGCONT).unwrap();
    w.await_restored();
    assert_eq!(w.cmd("tick"), "2");
    w.kill_restored();
}

#[test]
fn a_stopped_process_stays_stopped_after_a_leave_running_dump() {
    cryo_bin();
    let w = Workload::spawn("counter", &[]);
    stop(w.pid());
    let img = w.path("img");
    w.dump(&img, &["--leave-running"]).assert_success();
    assert!(w.original_alive(), "--leave-running killed the target");
    assert_eq!(state(w.pid()), Some('T'), "the original no longer stopped");
    assert_eq!(w.status("TracerPid"), "0", "left traced");
    Pidfd::open(w.pid()).unwrap().signal(libc::SIGCONT).unwrap();
    assert_eq!(w.cmd("tick"), "1");
}

/// The system call thread `tid` of `pid` is in (the first field of its /proc syscall file).
fn in_syscall(pid: i32, tid: i32) -> Option<i64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall")).ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// Waits until the threads of the `waits` workload are in epoll_wait, rt_sigtimedwait,
/// clock_nanosleep (glibc's nanosleep), poll (these two or their restart) and futex.
fn until_waiting(w: &Workload, tids: &[i32]) {
    let until = Instant::now() + CMD_TIMEOUT;
    while in_syscall(w.pid(), tids[0]) != Some(libc::SYS_epoll_wait)
        || in_syscall(w.pid(), tids[1]) != Some(libc::SYS_rt_sigtimedwait)
        // Resumed by the kernel after a stop, a sleep goes on in restart_syscall.
        || !matches!(
            in_syscall(w.pid(), tids[2]),
            Some(libc::SYS_clock_nanosleep | libc::SYS_restart_syscall)
        )
        || !matches!(
            in_syscall(w.pid(), tids[3]),
            Some(libc::SYS_poll | libc::SYS_restart_syscall)
        )
        || !matches!(
            in_syscall(w.pid(), tids[4]),
            Some(libc::SYS_futex | libc::SYS_restart_syscall)
        )
    {
        assert!(Instant::now() < until, "the threads never waited");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Asks `results` until it reads `want`.
fn until_results(w: &Workload, want: &str) {
    let until = Instant::now() + CMD_TIMEOUT;
    loop {
        let got = w.cmd("results");
        if got == want {
            return;
        }
        assert!(Instant::now() < until, "results: {got:?}, want {want:?}");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// The `waits` workload, its threads in their waits.
fn waiting() -> (Workload, Vec<i32>) {
    cryo_bin();
    let w = Workload::spawn("waits", &[]);
    let tids: Vec<i32> = w
        .cmd("tids")
        .split_whitespace()
        .map(|t| t.parse().unwrap())
        .collect();
    until_waiting(&w, &tids);
    (w, tids)
}

#[test]
fn waits_go_on_without_eintr_after_a_leave_running_dump() {
    let (w, _) = waiting();
    w.dump(&w.path("left"), &["--leave-running"])
        .assert_success();
    assert_eq!(
        w.cmd("results"),
        "epoll none sigwait none sleep none poll none sem none",
        "a wait came back (EINTR is errno 4)"
    );
    assert_eq!(w.cmd("wake"), "ok");
    until_results(&w, "epoll 1 sigwait 12 sleep none poll 1 sem 0");
}

#[test]
fn waits_go_on_without_eintr_after_a_restore() {
    let (mut w, tids) = waiting();
    w.dump_and_restore();
    until_waiting(&w, &tids);
    assert_eq!(
        w.cmd("results"),
        "epoll none sigwait none sleep none poll none sem none",
        "a wait came back (EINTR is errno 4)"
    );
    assert_eq!(w.cmd("wake"), "ok");
    until_results(&w, "epoll 1 sigwait 12 sleep none poll 1 sem 0");
    w.kill_restored();
}

/// A child stopped by SIGTSTP (a shell's ^Z) comes back stopped by SIGTSTP: its parent's
/// waitid reads that signal, as before the dump (zdtm's stopped03). Before: SIGSTOP (19).
#[test]
fn a_child_stopped_by_sigtstp_comes_back_stopped_by_it() {
    cryo_bin();
    let mut w = Workload::spawn("tree", &[]);
    let tstp = libc::SIGTSTP;
    assert_eq!(
        w.cmd(&format!("stop-child {tstp}")),
        format!("stopped {tstp}")
    );
    w.dump_and_restore();
    assert_eq!(
        w.cmd("stopped"),
        format!("stopped {tstp}"),
        "its parent's waitid"
    );
    w.kill_restored();
}

/// The passes of the `rseq` workload: (aborted, completed, completed unguarded).
fn rseq_passes(answer: &str) -> (u64, u64, u64) {
    let n: Vec<u64> = answer
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    assert_eq!(n.len(), 3, "{answer}");
    (n[0], n[1], n[2])
}

/// A thread inside a restartable sequence (a section spinning a few milliseconds, run over
/// and over: a freeze almost always lands inside it) leaves it by its abort handler, as the
/// kernel makes a stopped thread do: after a `--leave-running` dump and after a restore, no
/// section ever completes unguarded. Before, the dump's remote calls returned to user mode
/// outside the section, which made the kernel clear `rseq_cs` without the abort, and the
/// thread, put back inside, ran the section to its end unguarded (`unguarded 1`).
#[test]
fn a_thread_inside_a_restartable_sequence_leaves_it_by_its_abort_handler() {
    cryo_bin();
    let mut w = Workload::spawn("rseq", &[]);
    let before = rseq_passes(&w.cmd("wait 2"));
    w.dump(&w.path("running"), &["--leave-running"])
        .assert_success();
    let total = |p: (u64, u64, u64)| p.0 + p.1 + p.2;
    let after = rseq_passes(&w.cmd(&format!("wait {}", total(before) + 2)));
    assert_eq!(
        after.2, 0,
        "unguarded after a --leave-running dump: {after:?}"
    );
    w.dump_and_restore();
    let restored = rseq_passes(&w.cmd(&format!("wait {}", total(after) + 2)));
    assert_eq!(restored.2, 0, "unguarded after a restore: {restored:?}");
    w.kill_restored();
}

/// A process forking short-lived children over and over (each reaped at once), and one
/// starting short-lived threads: the tree a dump reads changes until it is frozen. Processes
/// already frozen stay frozen while the tree is read again (children that ended are zombies
/// then), a child or thread gone before it is seized is no longer in it: both dumps succeed
/// and the restored processes churn on. Before, a child or thread ending at the wrong moment
/// failed the dump ("pid N: no such process", "thread T exited while the tree was being
/// frozen" after every attempt).
#[test]
fn a_process_forking_or_starting_threads_all_the_time_is_dumped_and_restored() {
    cryo_bin();
    for what in ["forks", "threads"] {
        let mut w = Workload::spawn("churn", &[what]);
        let before: u64 = w.cmd("wait 100").parse().unwrap();
        w.dump(&w.path("running"), &["--leave-running"])
            .assert_success();
        let after: u64 = w.cmd(&format!("wait {}", before + 100)).parse().unwrap();
        w.dump_and_restore();
        let restored: u64 = w.cmd(&format!("wait {}", after + 100)).parse().unwrap();
        assert!(restored >= after + 100, "{what}: {restored}");
        w.kill_restored();
    }
}

/// The `kin` workload after `command`, which answers `WORD PID`: the workload and the child.
fn kin_child(command: &str) -> (Workload, i32) {
    let w = Workload::spawn("kin", &[]);
    let reply = w.cmd(command);
    let child = reply
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{command}: {reply}"));
    (w, child)
}

/// A stopped child whose stop its parent already collected (waitpid WUNTRACED) comes back
/// stopped with that stop still collected: its parent's waitid(WSTOPPED) reports nothing.
/// Before: the restored child stopped anew, and its parent saw the stop (19) reported again.
#[test]
fn a_stopped_child_whose_stop_its_parent_collected_comes_back_collected() {
    cryo_bin();
    let (mut w, child) = kin_child("stop-collected");
    w.dump_and_restore();
    await_state(child, 'T');
    assert_eq!(
        w.cmd(&format!("stopped {child}")),
        "none",
        "the parent's waitid"
    );
    // It still continues and stops as before.
    Pidfd::open(child).unwrap().signal(libc::SIGCONT).unwrap();
    stop(child);
    assert_eq!(
        w.cmd(&format!("stopped {child}")),
        format!("stopped {}", libc::SIGSTOP)
    );
    w.kill_restored();
}

/// The same with a child of three threads: each joins the stop made again at restore.
#[test]
fn a_stopped_threaded_child_whose_stop_its_parent_collected_comes_back_collected() {
    cryo_bin();
    let (mut w, child) = kin_child(&format!("stop-collected {} 2", libc::SIGSTOP));
    w.dump_and_restore();
    await_state(child, 'T');
    assert_eq!(
        w.cmd(&format!("stopped {child}")),
        "none",
        "the parent's waitid"
    );
    let tasks = std::fs::read_dir(format!("/proc/{child}/task")).unwrap();
    for t in tasks {
        let tid: i32 = t.unwrap().file_name().to_str().unwrap().parse().unwrap();
        let stat = std::fs::read_to_string(format!("/proc/{child}/task/{tid}/stat")).unwrap();
        let st = stat.rsplit_once(") ").unwrap().1.chars().next();
        assert_eq!(st, Some('T'), "thread {tid}");
    }
    w.kill_restored();
}

/// A collected stop by another signal than SIGSTOP (SIGTSTP): the restore makes such stops
/// again by SIGSTOP only. Refused, naming the child and the signal. Before: restored, the
/// stop reported again.
#[test]
fn a_collected_stop_by_sigtstp_is_refused() {
    cryo_bin();
    let (w, child) = kin_child(&format!("stop-collected {}", libc::SIGTSTP));
    let _reaper = cryo_tests::Reaper(vec![child]);
    w.dump(&w.path("img"), &[])
        .assert_refused()
        .assert_stderr_has_word(&child.to_string())
        .assert_stderr_mentions(&format!("stopped by signal {}, not SIGSTOP", libc::SIGTSTP));
    w.assert_untouched();
    assert_eq!(w.cmd(&format!("stopped {child}")), "none");
}

/// A child stopped and continued whose continue its parent has not collected (waitid
/// WCONTINUED would report CLD_CONTINUED): a restored child runs with no such report. Refused,
/// naming the child. Before: restored, and the parent's waitid(WCONTINUED) found nothing.
#[test]
fn a_continued_child_whose_continue_is_not_collected_is_refused() {
    cryo_bin();
    let (w, child) = kin_child("continued");
    let _reaper = cryo_tests::Reaper(vec![child]);
    w.dump(&w.path("img"), &[])
        .assert_refused()
        .assert_stderr_has_word(&child.to_string())
        .assert_stderr_mentions("has not collected the continue");
    w.assert_untouched();
}

/// A stopped child whose stop is not collected but whose SIGCHLD the parent's handler already
/// took: after the restore the handler does not run again, and the stop is reported once.
/// Before: the child's stop made again at restore ran the handler a second time.
#[test]
fn a_stopped_child_whose_sigchld_a_handler_took_signals_no_more() {
    cryo_bin();
    let (mut w, child) = kin_child("stop-caught");
    assert_eq!(w.cmd("caught"), "1");
    w.dump_and_restore();
    await_state(child, 'T');
    assert_eq!(w.cmd("caught"), "1", "the SIGCHLD handler ran again");
    assert_eq!(
        w.cmd(&format!("stopped {child}")),
        format!("stopped {}", libc::SIGSTOP)
    );
    w.kill_restored();
}

/// A stopped child whose stop is not collected, SIGCHLD left at SIG_DFL (zdtm's stopped):
/// not refused, and after the restore its parent's waitid reports the stop once.
#[test]
fn a_stopped_child_whose_stop_is_not_collected_is_restored_reported() {
    cryo_bin();
    let (mut w, child) = kin_child("stop-uncollected");
    w.dump_and_restore();
    await_state(child, 'T');
    assert_eq!(
        w.cmd(&format!("stopped {child}")),
        format!("stopped {}", libc::SIGSTOP)
    );
    w.kill_restored();
}

/// The pending sets of `pid`: its shared one (ShdPnd) and each thread's own (SigPnd), by tid,
/// as /proc shows them.
fn pending_sets(pid: i32) -> (String, Vec<(i32, String)>) {
    let mut tids: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .map(|t| t.unwrap().file_name().to_str().unwrap().parse().unwrap())
        .collect();
    tids.sort_unstable();
    let threads = tids
        .into_iter()
        .map(|tid| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).unwrap();
            let set = status
                .lines()
                .find_map(|l| l.strip_prefix("SigPnd:"))
                .unwrap()
                .trim()
                .to_string();
            (tid, set)
        })
        .collect();
    let shared = cryo_tests::status_field(pid, "ShdPnd").unwrap();
    (shared, threads)
}

/// The `threads 2` workload (three threads of its own besides the main one), stopped, then
/// sent SIGSTOP again to the process (kill: its shared set) and to its second thread alone
/// (tgkill), SIGTSTP to its third (zdtm stopped01, stopped02, stopped12): each waits there,
/// never taken. Returns the workload and its pending sets.
fn stopped_with_stops_pending() -> (Workload, (String, Vec<(i32, String)>)) {
    cryo_bin();
    let w = Workload::spawn("threads", &["2"]);
    assert!(w.cmd("counts").starts_with("ok"));
    stop(w.pid());
    let (_, threads) = pending_sets(w.pid());
    assert!(threads.len() >= 3, "threads: {threads:?}");
    Pidfd::open(w.pid()).unwrap().signal(libc::SIGSTOP).unwrap();
    tgkill(w.pid(), threads[1].0, libc::SIGSTOP);
    tgkill(w.pid(), threads[2].0, libc::SIGTSTP);
    let sets = pending_sets(w.pid());
    let bit = |sig: i32| format!("{:016x}", 1u64 << (sig - 1));
    assert_eq!(sets.0, bit(libc::SIGSTOP), "the shared set");
    assert_eq!(sets.1[1].1, bit(libc::SIGSTOP), "the second thread's");
    assert_eq!(sets.1[2].1, bit(libc::SIGTSTP), "the third thread's");
    assert_eq!(state(w.pid()), Some('T'));
    (w, sets)
}

/// A stopped process with stop signals pending, each in its place (its shared set, a thread's
/// own), comes back stopped with the same pending sets; SIGCONT discards them and it runs on.
/// Before: nothing pending after the restore (the dump's seize took the SIGSTOPs).
#[test]
fn stop_signals_pending_to_a_stopped_process_come_back_in_their_places() {
    let (mut w, before) = stopped_with_stops_pending();
    let img = w.path("img");
    w.dump_ok(&img);
    w.start_restore(&img);
    await_state(w.pid(), 'T');
    // The restore is over once cryo has let every thread go.
    let until = Instant::now() + CMD_TIMEOUT;
    while w.status("TracerPid") != "0" {
        assert!(Instant::now() < until, "left traced");
        std::thread::yield_now();
    }
    for (tid, _) in &before.1 {
        await_state_of(w.pid(), *tid, 'T');
    }
    assert_eq!(
        pending_sets(w.pid()),
        before,
        "pending sets after the restore"
    );
    Pidfd::open(w.pid()).unwrap().signal(libc::SIGCONT).unwrap();
    w.await_restored();
    assert!(w.cmd("counts").starts_with("ok"));
    let (shared, threads) = pending_sets(w.pid());
    assert_eq!(shared, "0000000000000000");
    assert!(
        threads.iter().all(|(_, s)| s == "0000000000000000"),
        "{threads:?}"
    );
    w.kill_restored();
}

/// The same with `--leave-running`: the original is left stopped with its stop signals pending
/// where they were. Before: the second thread's SIGSTOP gone, one in the shared set instead.
#[test]
fn stop_signals_pending_to_a_stopped_process_stay_in_their_places_after_a_leave_running_dump() {
    let (w, before) = stopped_with_stops_pending();
    w.dump(&w.path("img"), &["--leave-running"])
        .assert_success();
    assert!(w.original_alive(), "--leave-running killed the target");
    assert_eq!(w.status("TracerPid"), "0", "left traced");
    for (tid, _) in &before.1 {
        await_state_of(w.pid(), *tid, 'T');
    }
    assert_eq!(pending_sets(w.pid()), before, "pending sets after the dump");
    Pidfd::open(w.pid()).unwrap().signal(libc::SIGCONT).unwrap();
    assert!(w.cmd("counts").starts_with("ok"));
}

/// Waits (bounded) until thread `tid` of `pid` is in state `want`.
fn await_state_of(pid: i32, tid: i32, want: char) {
    let deadline = Instant::now() + CMD_TIMEOUT;
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).unwrap();
        let now = stat.rsplit_once(") ").and_then(|(_, s)| s.chars().next());
        if now == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "thread {tid} is in state {now:?}, expected {want:?}"
        );
        std::thread::yield_now();
    }
}

fn tgkill(pid: i32, tid: i32, sig: i32) {
    // SAFETY: tgkill takes plain values.
    let r = unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, sig) };
    assert_eq!(r, 0, "tgkill {pid} {tid} {sig}");
}

/// Waits (bounded) until every thread of `pid` is in its stop, no longer traced: the restore
/// let it go.
fn await_let_go_stopped(pid: i32) {
    let (_, threads) = pending_sets(pid);
    for (tid, _) in threads {
        await_state_of(pid, tid, 'T');
    }
}

/// A stopped child whose stop its parent collected (made again while the parent is restored)
/// and sent SIGSTOP again, and SIGTTIN to its second thread: both come back pending where they
/// were, the stop still collected. Before: nothing pending.
#[test]
fn stop_signals_pending_to_a_child_whose_stop_was_collected_come_back() {
    cryo_bin();
    let (mut w, child) = kin_child(&format!("stop-collected {} 1", libc::SIGSTOP));
    let (_, threads) = pending_sets(child);
    Pidfd::open(child).unwrap().signal(libc::SIGSTOP).unwrap();
    tgkill(child, threads[1].0, libc::SIGTTIN);
    let before = pending_sets(child);
    w.dump_and_restore();
    await_let_go_stopped(child);
    assert_eq!(
        pending_sets(child),
        before,
        "pending sets after the restore"
    );
    assert_eq!(
        w.cmd(&format!("stopped {child}")),
        "none",
        "the parent's waitid"
    );
    Pidfd::open(child).unwrap().signal(libc::SIGCONT).unwrap();
    let until = Instant::now() + CMD_TIMEOUT;
    while state(child) == Some('T') {
        assert!(Instant::now() < until, "SIGCONT did not wake it");
        std::thread::yield_now();
    }
    assert_eq!(
        cryo_tests::status_field(child, "ShdPnd").unwrap(),
        "0000000000000000"
    );
    w.kill_restored();
}

/// A child stopped by SIGTSTP and sent SIGSTOP again comes back stopped by SIGTSTP (its
/// parent's waitid) with the SIGSTOP pending; SIGCONT wakes it and it answers. Before: the
/// SIGSTOP gone.
#[test]
fn a_sigstop_pending_to_a_child_stopped_by_sigtstp_comes_back() {
    cryo_bin();
    let mut w = Workload::spawn("tree", &[]);
    let tstp = libc::SIGTSTP;
    assert_eq!(
        w.cmd(&format!("stop-child {tstp}")),
        format!("stopped {tstp}")
    );
    let child = w.kids()[0];
    await_state(child, 'T');
    Pidfd::open(child).unwrap().signal(libc::SIGSTOP).unwrap();
    let before = pending_sets(child);
    assert_eq!(before.0, format!("{:016x}", 1u64 << (libc::SIGSTOP - 1)));
    w.dump_and_restore();
    await_let_go_stopped(child);
    assert_eq!(
        pending_sets(child),
        before,
        "pending sets after the restore"
    );
    assert_eq!(
        w.cmd("stopped"),
        format!("stopped {tstp}"),
        "its parent's waitid"
    );
    Pidfd::open(child).unwrap().signal(libc::SIGCONT).unwrap();
    assert_eq!(w.cmd("ask hi"), "got hi");
    w.kill_restored();
}

/// How many times the SIGSTOP-then-dump tests below try.
const STOP_RACE_ROUNDS: usize = 20;

/// Sends `pid` SIGSTOP while it cannot take it, then runs `dump`: `pid` is put on one CPU
/// with policy SCHED_IDLE while a thread of the test spins there at normal priority (an idle
/// task preempts no other, and gets a slice about once a second), until a tracer seizes it
/// (TracerPid, the dump's freeze) or `dump` returns. So the freeze catches it with the
/// SIGSTOP pending, not yet taken, nearly every time.
fn sigstop_held_off_cpu<T>(pid: i32, dump: impl FnOnce() -> T) -> T {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    // SAFETY: plain values and a cpu_set_t of our own.
    let cpu = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        assert_eq!(
            libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set),
            0
        );
        (0..libc::CPU_SETSIZE as usize)
            .rev()
            .find(|&c| libc::CPU_ISSET(c, &set))
            .unwrap()
    };
    let pin = move |who: i32| {
        // SAFETY: as above.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            assert_eq!(
                libc::sched_setaffinity(who, std::mem::size_of_val(&set), &set),
                0
            );
        }
    };
    pin(pid);
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: plain values and a sched_param of our own.
    let r = unsafe { libc::sched_setscheduler(pid, libc::SCHED_IDLE, &param) };
    assert_eq!(r, 0, "sched_setscheduler");
    let done = Arc::new(AtomicBool::new(false));
    let spinning = Arc::new(AtomicBool::new(false));
    let spinner = {
        let (done, spinning) = (done.clone(), spinning.clone());
        std::thread::spawn(move || {
            pin(0);
            spinning.store(true, Ordering::SeqCst);
            while !done.load(Ordering::SeqCst)
                && cryo_tests::status_field(pid, "TracerPid").is_some_and(|t| t == "0")
            {
                std::hint::spin_loop();
            }
        })
    };
    while !spinning.load(Ordering::SeqCst) {
        std::thread::yield_now();
    }
    Pidfd::open(pid).unwrap().signal(libc::SIGSTOP).unwrap();
    let out = dump();
    done.store(true, Ordering::SeqCst);
    spinner.join().unwrap();
    out
}

/// A SIGSTOP sent to a running process right before a `--leave-running` dump, not yet taken
/// when the freeze catches it (held off its CPU): the dump succeeds and leaves it to stop, as
/// it would have (no SIGSTOP left pending once it is stopped); SIGCONT wakes it and it
/// answers. Before: passed as well (the remote call that took the SIGSTOP sent it again).
#[test]
fn a_sigstop_sent_right_before_a_leave_running_dump_stops_the_process() {
    cryo_bin();
    let w = Workload::spawn("counter", &[]);
    for round in 1..=STOP_RACE_ROUNDS {
        assert_eq!(w.cmd("tick"), round.to_string(), "round {round}");
        let img = w.path(&format!("img{round}"));
        sigstop_held_off_cpu(w.pid(), || w.dump(&img, &["--leave-running"])).assert_success();
        await_state(w.pid(), 'T');
        assert_eq!(w.status("TracerPid"), "0", "round {round}: left traced");
        assert_eq!(
            pending_sets(w.pid()).0,
            "0000000000000000",
            "round {round}: a SIGSTOP left pending"
        );
        Pidfd::open(w.pid()).unwrap().signal(libc::SIGCONT).unwrap();
    }
    assert_eq!(w.cmd("tick"), (STOP_RACE_ROUNDS + 1).to_string());
}

/// A SIGSTOP sent to a running process right before a killing dump, not yet taken when the
/// freeze catches it (held off its CPU): the dump succeeds (it was sent before the freeze,
/// not during the dump), the restored process stops, and SIGCONT wakes it; it answers with
/// its count. Before: refused ("SIGSTOP ... was sent during the dump": the remote call that
/// took it sent it again, which the last read took for a new one), the notify test's flake.
#[test]
fn a_sigstop_sent_right_before_a_dump_stops_the_restored_process() {
    cryo_bin();
    let mut w = Workload::spawn("counter", &[]);
    for round in 1..=STOP_RACE_ROUNDS {
        assert_eq!(w.cmd("tick"), round.to_string(), "round {round}");
        let img = w.path(&format!("img{round}"));
        let out = sigstop_held_off_cpu(w.pid(), || w.dump(&img, &[]));
        out.assert_success();
        w.reap_dumped(&out);
        w.start_restore(&img);
        await_state(w.pid(), 'T');
        let until = Instant::now() + CMD_TIMEOUT;
        while w.status("TracerPid") != "0" {
            assert!(Instant::now() < until, "round {round}: left traced");
            std::thread::yield_now();
        }
        Pidfd::open(w.pid()).unwrap().signal(libc::SIGCONT).unwrap();
        w.await_restored();
    }
    assert_eq!(w.cmd("tick"), (STOP_RACE_ROUNDS + 1).to_string());
    w.kill_restored();
}
