//! System V semaphore sets and message queues a process uses come back with their id, key,
//! creator, owner, mode, values and messages (types and order), as the restored process
//! sees them through semctl/msgctl(IPC_STAT), GETALL and msgrcv; the very objects still on
//! the host are left as they are; a semaphore undo list (SEM_UNDO) is refused at dump,
//! the process left running.
//!
//! Needs the engine: `cryo` must be built (`cargo build -p cryo`).

use std::fs;

use cryo_tests::{cryo_bin, Workload};

/// Held by each test: a set another test operates on would count against the threaded
/// process of `a_threaded_process_is_dumped_beside_a_set_not_operated_on_since_it_started`.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// A key of this test process's own: tests run in parallel.
fn key(n: i32) -> i32 {
    0x4400_0000 | ((std::process::id() as i32 & 0xffff) << 4) | (n << 1)
}

/// The (id, key) of every object of /proc/sysvipc/`kind` (sem, msg).
fn objects(kind: &str) -> Vec<(i32, i32)> {
    fs::read_to_string(format!("/proc/sysvipc/{kind}"))
        .expect("sysvipc")
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<i32> = l
                .split_whitespace()
                .map(|f| f.parse().unwrap_or(-1))
                .collect();
            (f[1], f[0])
        })
        .collect()
}

/// Removes the semaphore set and queue of the keys of test `n` from this host.
fn remove(n: i32) {
    for (id, k) in objects("sem") {
        if k == key(n) {
            // SAFETY: IPC_RMID reads no argument.
            let r = unsafe { libc::semctl(id, 0, libc::IPC_RMID) };
            assert_eq!(r, 0, "semctl IPC_RMID");
        }
    }
    for (id, k) in objects("msg") {
        if k == key(n) + 1 {
            // SAFETY: IPC_RMID reads no buffer.
            let r = unsafe { libc::msgctl(id, libc::IPC_RMID, std::ptr::null_mut()) };
            assert_eq!(r, 0, "msgctl IPC_RMID");
        }
    }
}

#[track_caller]
fn ok(w: &Workload, line: &str) -> String {
    let reply = w.cmd(line);
    assert!(!reply.starts_with("err"), "{line}: {reply}");
    reply
}

fn start(n: i32) -> Workload {
    cryo_bin();
    remove(n);
    let w = Workload::spawn("sysv-ipc", &[&key(n).to_string()]);
    let sem = ok(&w, "semstat");
    assert!(sem.starts_with(&format!("{} ", key(n))), "{sem}");
    assert!(sem.ends_with(" 640 1001 101 1000 100 3"), "{sem}");
    let msg = ok(&w, "msgstat");
    assert!(msg.ends_with(" 620 1001 101 1000 100 4000 3"), "{msg}");
    w
}

#[test]
fn semaphores_and_queues_come_back() {
    let _serial = one_at_a_time();
    let mut w = start(1);
    let sem = ok(&w, "semstat");
    let msg = ok(&w, "msgstat");
    assert_eq!(ok(&w, "semvals"), "1 5 0");

    // 1. Gone from the host when restored: made again.
    let img = w.path("img1");
    w.dump_ok(&img);
    remove(1);
    w.restore_background(&img);
    assert_eq!(ok(&w, "semstat"), sem, "the semaphore set made again");
    assert_eq!(ok(&w, "msgstat"), msg, "the queue made again");
    assert_eq!(ok(&w, "semvals"), "1 5 0");
    assert_eq!(ok(&w, "msgrcv 2"), "2 two", "by type");
    assert_eq!(ok(&w, "msgrcv 0"), "1 one", "in order");
    assert_eq!(ok(&w, "semop 1 -2"), "ok");
    assert_eq!(ok(&w, "semvals"), "1 3 0");
    assert_eq!(ok(&w, "msgsnd 3 four"), "ok");

    // 2. Still on the host: left as it is, live state included.
    let img = w.path("img2");
    w.dump_ok(&img);
    w.restore_background(&img);
    assert_eq!(ok(&w, "semvals"), "1 3 0");
    assert_eq!(ok(&w, "msgrcv 0"), "1 three");
    assert_eq!(ok(&w, "msgrcv 0"), "3 four");
    assert!(
        w.cmd("msgrcv 0").contains("No message"),
        "the queue should be empty"
    );
    assert_eq!(ok(&w, "rm"), "ok");
    w.kill_restored();
}

#[test]
fn a_semaphore_undo_list_is_refused_and_the_process_kept() {
    let _serial = one_at_a_time();
    let mut w = start(2);
    assert_eq!(ok(&w, "undo"), "ok");
    let out = w.dump(&w.path("img"), &[]);
    out.assert_refused().assert_stderr_mentions("SEM_UNDO");
    assert!(w.original_alive(), "a refused dump killed the process");
    assert_eq!(ok(&w, "semvals"), "1 5 1", "the process runs on");
    assert_eq!(ok(&w, "rm"), "ok");
    w.kill_original();
}

/// A threaded process has an undo list (pthread_create passes CLONE_SYSVSEM) that the
/// kernel does not show; a set no one operated on since the process started cannot hold an
/// adjustment of it: the process is dumped while that set exists, and comes back whole.
#[test]
fn a_threaded_process_is_dumped_beside_a_set_not_operated_on_since_it_started() {
    let _serial = one_at_a_time();
    cryo_bin();
    remove(4);
    // Made and given values with SETALL (no semop: its otime stays 0).
    // SAFETY: semget takes no pointer.
    let id = unsafe { libc::semget(key(4), 2, libc::IPC_CREAT | libc::IPC_EXCL | 0o600) };
    assert!(id >= 0, "semget: {}", std::io::Error::last_os_error());
    let values = [3u16, 4];
    // SAFETY: SETALL reads 2 unsigned shorts, the set's size, from `values`.
    let r = unsafe { libc::semctl(id, 0, libc::SETALL, values.as_ptr()) };
    assert_eq!(r, 0, "SETALL: {}", std::io::Error::last_os_error());

    let mut w = Workload::spawn("threads", &["3"]);
    assert!(w.cmd("counts").starts_with("ok "));
    let threads = |pid: i32| fs::read_dir(format!("/proc/{pid}/task")).unwrap().count();
    let before = threads(w.pid());
    assert!(before > 1, "{before} threads");
    w.dump_and_restore();
    assert_eq!(threads(w.pid()), before, "every thread came back");
    assert!(w.cmd("counts").starts_with("ok "));
    w.kill_restored();
    remove(4);
}
