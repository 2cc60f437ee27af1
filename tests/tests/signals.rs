//! Signal handlers, masks and pending signals after a restore; signals queued to the process
//! while a dump holds it (sent at a fixed instant: cryo paused through its
//! `CRYO_TEST_PAUSE_AT` hook once the images are written).
//!
//! Needs the engine: `cryo` must be built (`cargo build -p cryo`).

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use cryo_tests::{cryo_bin, mask_has, status_field, Pidfd, Workload, CMD_TIMEOUT};

fn send(pid: i32, sig: i32) {
    Pidfd::open(pid).unwrap().signal(sig).unwrap();
}

/// Asks `count` until it reaches `want`: each ask is a round trip, no sleeps.
fn await_count(w: &Workload, want: u64) {
    let deadline = Instant::now() + CMD_TIMEOUT;
    loop {
        let n: u64 = w.cmd("count").parse().unwrap();
        if n >= want {
            assert_eq!(n, want);
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the SIGUSR1 handler ran {n} times, expected {want}\n{}",
            w.log()
        );
    }
}

#[test]
fn a_signal_handler_still_runs_after_restore() {
    cryo_bin();
    let mut w = Workload::spawn("signal", &[]);
    // One at a time: a second standard signal sent before the first is handled merges with it.
    send(w.pid(), libc::SIGUSR1);
    await_count(&w, 1);
    send(w.pid(), libc::SIGUSR1);
    await_count(&w, 2);
    w.dump_and_restore();
    assert_eq!(w.cmd("count"), "2");
    assert!(mask_has(&w.status("SigCgt"), libc::SIGUSR1));
    send(w.pid(), libc::SIGUSR1);
    await_count(&w, 3);
    // The handler interrupted the blocking read, which restarted (SA_RESTART).
    assert_eq!(w.cmd("tick"), "1");
    w.kill_restored();
}

#[test]
fn a_blocked_signal_stays_blocked_and_pending() {
    cryo_bin();
    let mut w = Workload::spawn("signal", &[]);
    send(w.pid(), libc::SIGUSR2);
    assert_eq!(w.cmd("pending"), "1");
    w.dump_and_restore();
    assert!(mask_has(&w.status("SigBlk"), libc::SIGUSR2));
    assert_eq!(w.cmd("pending"), "1", "the pending SIGUSR2 was lost");
    w.kill_restored();
}

/// sigqueue(2) of `sig` with `value` to process `pid` (its si_pid: ours).
fn queue(pid: i32, sig: i32, value: i32) {
    // SAFETY: sigval is plain data; its int is the low half of the pointer (x86-64).
    let r = unsafe {
        libc::sigqueue(
            pid,
            sig,
            libc::sigval {
                sival_ptr: value as usize as *mut libc::c_void,
            },
        )
    };
    assert_eq!(r, 0, "sigqueue: {}", std::io::Error::last_os_error());
}

/// rt_tgsigqueueinfo(2) of `sig` with `value` to thread `tid` of `pid` alone (its queue, not
/// the process's), as sigqueue would fill it (SI_QUEUE, our pid and uid).
fn queue_to_thread(pid: i32, tid: i32, sig: i32, value: i32) {
    // SAFETY: siginfo_t is plain data; the fields set below are those of SI_QUEUE.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    info.si_signo = sig;
    info.si_code = libc::SI_QUEUE;
    // The _rt fields after the 16-byte header: si_pid, si_uid, si_value.
    let raw = &mut info as *mut libc::siginfo_t as *mut u8;
    // SAFETY: offsets 16..32 are inside the 128-byte siginfo_t.
    unsafe {
        (raw.add(16) as *mut i32).write_unaligned(std::process::id() as i32);
        (raw.add(20) as *mut u32).write_unaligned(libc::getuid());
        (raw.add(24) as *mut u64).write_unaligned(value as u32 as u64);
    }
    // SAFETY: a live siginfo_t; the kernel copies it.
    let r = unsafe { libc::syscall(libc::SYS_rt_tgsigqueueinfo, pid, tid, sig, &info) };
    assert_eq!(
        r,
        0,
        "rt_tgsigqueueinfo: {}",
        std::io::Error::last_os_error()
    );
}

/// `cryo dump -t PID -D IMG EXTRA...` paused once its images are written (the process
/// frozen, the post-dump stage run): `at_pause` runs there, then the dump goes on. Whether
/// it succeeded, and its stderr.
fn dump_sending_when_written(
    w: &Workload,
    img: &Path,
    extra: &[&str],
    at_pause: impl FnOnce(),
) -> (bool, String) {
    let resume = w.path("resume-dump");
    let mut cryo = Command::new(cryo_bin())
        .args(["dump", "-t", &w.pid().to_string(), "-D"])
        .arg(img)
        .args(extra)
        .env("CRYO_TEST_PAUSE_AT", "written")
        .env("CRYO_TEST_RESUME_FILE", &resume)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cryo");
    let mut stderr = BufReader::new(cryo.stderr.take().expect("cryo's stderr"));
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        let n = stderr.read_line(&mut line).expect("cryo's stderr");
        seen.push_str(&line);
        assert!(n != 0, "cryo ended before pausing at written:\n{seen}");
        if line.contains("paused at written") {
            break;
        }
    }
    at_pause();
    std::fs::write(&resume, b"").expect("the resume file");
    let _ = stderr.read_to_string(&mut seen);
    let status = cryo.wait().expect("wait for cryo");
    (status.success(), seen)
}

/// What the workload has queued of SIGRTMIN+1 before a dump (three from us), and what it
/// is sent while the dump holds it, images written (five more to the process, one to its
/// thread): every one is taken after the restore, with its value and sender, in the order
/// the kernel gives them (the thread's queue first). Before: the eight sent during the dump
/// were lost with the killed original (read early, never again).
#[test]
fn signals_queued_during_a_killing_dump_come_back_with_their_values() {
    cryo_bin();
    let mut w = Workload::spawn("signal", &[]);
    let (pid, rt1) = (w.pid(), libc::SIGRTMIN() + 1);
    for v in 1..=3 {
        queue(pid, rt1, v);
    }
    let img = w.path("img");
    let (ok, out) = dump_sending_when_written(&w, &img, &[], || {
        for v in 100..=104 {
            queue(pid, rt1, v);
        }
        queue_to_thread(pid, pid, rt1, 200);
    });
    assert!(ok, "the dump failed:\n{out}");
    w.wait_original();
    w.restore_background(&img);
    let me = std::process::id();
    let want: Vec<String> = [200, 1, 2, 3, 100, 101, 102, 103, 104]
        .iter()
        .map(|v| format!("{v}:{me}"))
        .collect();
    assert_eq!(
        w.cmd("take-rt"),
        want.join(" "),
        "the signals queued during the dump"
    );
    assert_eq!(w.cmd("take-rt"), "none");
    w.kill_restored();
}

/// The same with `--leave-running`: the process keeps what it was sent meanwhile.
#[test]
fn signals_queued_during_a_leave_running_dump_stay_queued() {
    cryo_bin();
    let mut w = Workload::spawn("signal", &[]);
    let (pid, rt1) = (w.pid(), libc::SIGRTMIN() + 1);
    queue(pid, rt1, 1);
    let img = w.path("img");
    let (ok, out) = dump_sending_when_written(&w, &img, &["--leave-running"], || {
        queue(pid, rt1, 100);
        queue_to_thread(pid, pid, rt1, 200);
    });
    assert!(ok, "the dump failed:\n{out}");
    let me = std::process::id();
    assert_eq!(w.cmd("take-rt"), format!("200:{me} 1:{me} 100:{me}"));
    w.kill_original();
}

/// A SIGSTOP sent while a killing dump holds the process would stop it, which the image,
/// read before, does not say: the dump is refused naming the pid and the signal, the
/// original runs on and takes it (stopped), and continues. Before: the dump succeeded and
/// the restored process ran, its stop lost.
#[test]
fn a_sigstop_sent_during_a_killing_dump_refuses_it() {
    cryo_bin();
    let mut w = Workload::spawn("signal", &[]);
    let pid = w.pid();
    let img = w.path("img");
    let (ok, out) = dump_sending_when_written(&w, &img, &[], || send(pid, libc::SIGSTOP));
    assert!(!ok, "the dump succeeded:\n{out}");
    assert!(
        out.contains(&format!("pid {pid}")) && out.contains("SIGSTOP"),
        "the refusal names neither the pid nor the signal:\n{out}"
    );
    assert!(w.original_alive(), "the original died:\n{out}");
    assert!(
        !img.join("inventory.img").exists(),
        "an image of a process that runs on"
    );
    let deadline = Instant::now() + CMD_TIMEOUT;
    while !status_field(pid, "State").is_some_and(|s| s.starts_with('T')) {
        assert!(Instant::now() < deadline, "the original never stopped");
        std::thread::yield_now();
    }
    send(pid, libc::SIGCONT);
    assert_eq!(w.cmd("pending"), "0");
    w.kill_original();
}

/// A one-shot timer expiring while a killing dump holds the process, after its state was read
/// (armed, its time left), queues its signal then: the dump's last read leaves it out, as the
/// restored timer, armed with the time it had left, queues it again: it comes once, the timer
/// spent. A late read that kept it would give it twice (the second from the timer still
/// armed after the first).
#[test]
fn a_timer_expiring_during_a_killing_dump_signals_once_after_restore() {
    cryo_bin();
    let mut w = Workload::spawn("timers", &[]);
    let id = w.cmd("arm-once 300");
    let (pid, rt8) = (w.pid(), libc::SIGRTMIN() + 8);
    let img = w.path("img");
    let (ok, out) = dump_sending_when_written(&w, &img, &[], || {
        // The process frozen, until the timer has queued its signal.
        let deadline = Instant::now() + CMD_TIMEOUT;
        while !status_field(pid, "ShdPnd").is_some_and(|m| mask_has(&m, rt8)) {
            assert!(Instant::now() < deadline, "the timer never expired");
            std::thread::yield_now();
        }
    });
    assert!(ok, "the dump failed:\n{out}");
    w.wait_original();
    w.restore_background(&img);
    assert_eq!(
        w.cmd(&format!("take-once {id}")),
        format!("timer {id} overrun 0 getoverrun 0; then none; armed false")
    );
    w.kill_restored();
}
