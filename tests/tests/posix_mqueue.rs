//! POSIX message queues (mq_open) come back with their name, owner, mode, sizes and messages
//! (bytes, priorities, order), as the restored process sees them through mq_receive,
//! mq_getattr, fstat and F_GETFL; shared by two processes, they come back as one queue;
//! unlinked, they come back unlinked; a dump leaves the original's messages; a registered
//! notification (mq_notify) is refused at dump, the process left as it was.
//!
//! Needs the engine: `cryo` must be built (`cargo build -p cryo`).

use std::ffi::CString;

use cryo_tests::{cryo_bin, parse_fds, Workload};

/// A queue name of this test process's own: tests run in parallel.
fn name(n: u32) -> String {
    format!("cryo-mq-{}-{n}", std::process::id())
}

/// mq_unlink(NAME): true if it was there.
fn unlink(name: &str) -> bool {
    let c = CString::new(name).expect("name");
    // SAFETY: `c` is NUL-terminated, alive for the call.
    unsafe { libc::syscall(libc::SYS_mq_unlink, c.as_ptr()) == 0 }
}

/// Unlinks its queue name when dropped: a failing test leaves no queue on the host.
struct UnlinkAfter(String);

impl Drop for UnlinkAfter {
    fn drop(&mut self) {
        unlink(&self.0);
    }
}

#[track_caller]
fn ok(w: &Workload, line: &str) -> String {
    let reply = w.cmd(line);
    assert!(!reply.starts_with("err"), "{line}: {reply}");
    reply
}

/// `mqueue NAME OPTS...`, checked as made: 3 messages, owner 1001:101, mode 0640,
/// O_RDWR|O_NONBLOCK.
fn start(name: &str, opts: &[&str]) -> Workload {
    cryo_bin();
    unlink(name);
    let mut args = vec![name];
    args.extend_from_slice(opts);
    let w = Workload::spawn("mqueue", &args);
    assert_eq!(ok(&w, "attr"), "5 64 3 true");
    assert_eq!(ok(&w, "stat"), "640 1001 101");
    assert_eq!(ok(&w, "fl"), "4002", "O_RDWR|O_NONBLOCK");
    w
}

/// The three messages of the workload, in mq_receive's order, then an empty queue.
#[track_caller]
fn receives_the_three(w: &Workload) {
    assert_eq!(ok(w, "recv"), "2 two", "the highest priority first");
    assert_eq!(ok(w, "recv"), "1 one", "then the oldest of priority 1");
    assert_eq!(ok(w, "recv"), "1 three");
    let empty = w.cmd("recv");
    assert!(empty.contains("temporarily unavailable"), "{empty}");
}

#[test]
fn a_queue_comes_back_with_its_messages_priorities_sizes_owner_and_flags() {
    let name = name(1);
    let _gone = UnlinkAfter(name.clone());
    let mut w = start(&name, &[]);
    let img = w.path("img");
    w.dump_ok(&img);
    // A named queue outlives its process: the restore makes it again only where it is gone.
    assert!(
        unlink(&name),
        "the dumped process's queue stays on the host"
    );
    w.restore_background(&img);
    assert_eq!(ok(&w, "attr"), "5 64 3 true", "mq_getattr as dumped");
    assert_eq!(ok(&w, "stat"), "640 1001 101", "mode and owner");
    assert_eq!(ok(&w, "fl"), "4002", "O_RDWR|O_NONBLOCK");
    assert_eq!(parse_fds(&w.cmd("fds"))[&47], format!("/{name}"));
    receives_the_three(&w);
    assert_eq!(ok(&w, "send 3 again"), "ok", "the queue works");
    assert_eq!(ok(&w, "recv"), "3 again");
    w.kill_restored();
    assert!(unlink(&name), "the restored queue has its name");
}

#[test]
fn a_dump_leaves_the_messages_and_a_restore_is_refused_while_the_name_is_taken() {
    let name = name(2);
    let _gone = UnlinkAfter(name.clone());
    let mut w = start(&name, &[]);
    let img = w.path("img");
    w.dump(&img, &["--leave-running"]).assert_success();
    assert_eq!(
        ok(&w, "attr"),
        "5 64 3 true",
        "the original keeps its messages"
    );
    receives_the_three(&w);
    w.kill_original();
    // The name is still taken (the original's queue, empty now): refused before anything
    // is made.
    w.cryo(&["restore", "-D", img.to_str().expect("utf-8"), "--detach"])
        .assert_refused()
        .assert_stderr_mentions(&format!("/{name} exists already"));
    assert!(unlink(&name));
    w.restore_background(&img);
    receives_the_three(&w);
    w.kill_restored();
    assert!(unlink(&name));
}

/// A killing dump leaves a named queue where it is, with the messages it read and gave back
/// (a queue lives in its filesystem, as a file does): the restore takes that queue as it is.
/// Before: refused, "/NAME exists already ... remove it first", after the dump had killed the
/// process.
#[test]
fn a_named_queue_a_killing_dump_left_is_taken_back_as_it_is() {
    let name = name(8);
    let _gone = UnlinkAfter(name.clone());
    let mut w = start(&name, &[]);
    let img = w.path("img");
    w.dump_ok(&img);
    w.restore_background(&img);
    assert_eq!(ok(&w, "attr"), "5 64 3 true", "its messages, sizes");
    receives_the_three(&w);
    w.kill_restored();
    assert!(unlink(&name), "the queue still has its name");
}

#[test]
fn a_failed_restore_leaves_no_queue_and_a_retry_makes_it() {
    let name = name(7);
    let _gone = UnlinkAfter(name.clone());
    let mut w = start(&name, &[]);
    let img = w.path("img");
    w.dump_ok(&img);
    assert!(unlink(&name));
    // Fails once every process is whole, before the point of no return.
    let script = w.path("refuse.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\n[ \"$CRYO_HOOK_STAGE\" = post-restore ] && exit 1\nexit 0\n",
    )
    .expect("write the script");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .expect("chmod the script");
    let script = script.to_str().expect("utf-8");
    w.cryo(&[
        "restore",
        "-D",
        img.to_str().expect("utf-8"),
        "--action-script",
        script,
    ])
    .assert_refused()
    .assert_stderr_mentions("post-restore");
    assert!(!unlink(&name), "the failed restore left its queue behind");
    w.restore_background(&img);
    receives_the_three(&w);
    w.kill_restored();
}

#[test]
fn two_processes_with_their_own_descriptions_share_one_queue_after_restore() {
    let name = name(3);
    let _gone = UnlinkAfter(name.clone());
    let mut w = start(&name, &["child"]);
    assert_eq!(ok(&w, "child send 9 early"), "ok");
    assert_eq!(ok(&w, "recv"), "9 early", "one queue before");
    let img = w.path("img");
    w.dump_ok(&img);
    assert!(unlink(&name));
    w.restore_background(&img);
    assert_eq!(ok(&w, "attr"), "5 64 3 true");
    assert_eq!(ok(&w, "child send 7 seven"), "ok");
    assert_eq!(
        ok(&w, "recv"),
        "7 seven",
        "the child's message in the parent's queue"
    );
    receives_the_three(&w);
    w.kill_restored();
    assert!(unlink(&name));
}

#[test]
fn an_unlinked_queue_comes_back_unlinked_with_its_messages() {
    let name = name(4);
    let _gone = UnlinkAfter(name.clone());
    let mut w = start(&name, &["unlinked"]);
    let link = parse_fds(&w.cmd("fds"))[&47].clone();
    assert_eq!(link, format!("/{name} (deleted)"));
    w.dump_and_restore();
    assert_eq!(parse_fds(&w.cmd("fds"))[&47], link, "unlinked again");
    assert!(!unlink(&name), "no queue of that name");
    assert_eq!(ok(&w, "attr"), "5 64 3 true");
    assert_eq!(ok(&w, "stat"), "640 1001 101");
    receives_the_three(&w);

    // Its name taken by another queue at restore: made under a name of cryo's, unlinked.
    assert_eq!(ok(&w, "send 4 four"), "ok");
    let img = w.path("img2");
    w.dump_ok(&img);
    let c = CString::new(name.as_str()).expect("name");
    // SAFETY: `c` is NUL-terminated; a null attr asks for the defaults.
    let other = unsafe {
        libc::syscall(
            libc::SYS_mq_open,
            c.as_ptr(),
            libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC,
            0o600,
            std::ptr::null::<libc::c_void>(),
        )
    };
    assert!(other >= 0, "mq_open: {}", std::io::Error::last_os_error());
    w.restore_background(&img);
    let link = &parse_fds(&w.cmd("fds"))[&47];
    assert!(
        link.starts_with("/cryo-") && link.ends_with(" (deleted)"),
        "{link}"
    );
    assert_eq!(ok(&w, "recv"), "4 four");
    assert_eq!(ok(&w, "stat"), "640 1001 101");
    // SAFETY: `other` is our fd, closed once.
    unsafe { libc::close(other as i32) };
    assert!(unlink(&name), "the other queue is left as it was");
    w.kill_restored();
}

/// Whether `pid` sits in mq_timedreceive (its /proc/PID/syscall starts with that number).
fn in_mq_receive(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/syscall"))
        .is_ok_and(|s| s.split_whitespace().next() == Some(&libc::SYS_mq_timedreceive.to_string()))
}

#[test]
fn a_child_blocked_in_mq_receive_waits_on_after_restore_and_gets_the_next_message() {
    let name = name(6);
    let _gone = UnlinkAfter(name.clone());
    let _gone_w = UnlinkAfter(format!("{name}-w"));
    unlink(&format!("{name}-w"));
    let mut w = start(&name, &["waiter"]);
    let waiter = ok(&w, "waiter-pid");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !in_mq_receive(&waiter) {
        assert!(
            std::time::Instant::now() < deadline,
            "the child never waited"
        );
        std::thread::yield_now();
    }
    let img = w.path("img");
    w.dump_ok(&img);
    assert!(unlink(&name) && unlink(&format!("{name}-w")));
    w.restore_background(&img);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !in_mq_receive(&waiter) {
        assert!(
            std::time::Instant::now() < deadline,
            "the restored child does not wait"
        );
        std::thread::yield_now();
    }
    assert_eq!(
        ok(&w, "wake 3 hello"),
        "3 hello",
        "the restarted wait gets it"
    );
    receives_the_three(&w);
    w.kill_restored();
}

#[test]
fn a_queue_with_a_notification_registered_is_refused_naming_pid_fd_and_queue() {
    let name = name(5);
    let _gone = UnlinkAfter(name.clone());
    let mut w = start(&name, &["notify"]);
    w.assert_dump_refused("47", "mq_notify");
    w.dump(&w.path("img2"), &[])
        .assert_refused()
        .assert_stderr_mentions(&format!("POSIX message queue /{name}"));
    receives_the_three(&w);
    w.kill_original();
    assert!(unlink(&name));
}
