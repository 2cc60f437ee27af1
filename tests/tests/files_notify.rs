//! Notification fds and pidfds of other processes: a fanotify group with its inode, mount and
//! filesystem marks; inotify and fanotify with events queued (refused until read); an inotify
//! watch on an unlinked inode (refused); a pidfd of a child of the dump, which comes back on
//! the restored child. Each is checked from inside the restored process, or refused at dump
//! naming pid, fd and what.
//!
//! Needs the engine: `cryo` must be built (`cargo build -p cryo`).

use std::path::Path;

use cryo_tests::{children_of, cryo_bin, parse_fds, Reaper, Unmount, Workload};

/// The lines of an fdinfo starting with `kind` ("fanotify": the group, then its marks;
/// "inotify": one per watch, its wd, inode and mask with its flags).
fn notify_lines(pid: i32, fd: i32, kind: &str) -> Vec<String> {
    std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}"))
        .unwrap()
        .lines()
        .filter(|l| l.starts_with(kind))
        .map(str::to_string)
        .collect()
}

/// What the workload reports for a file it was told about: "<mask hex> <path>".
fn event(mask: u64, path: &Path) -> String {
    format!("{mask:x} {}", path.canonicalize().unwrap().display())
}

/// The events the workload reads for `path` until they make `want`: a write by the test may
/// be read between its FAN_MODIFY and its FAN_CLOSE_WRITE (not merged then). Stops at a
/// reply about another file, or after five reads.
fn await_events(w: &Workload, want: u64, path: &Path) -> String {
    let mut mask = 0;
    for _ in 0..5 {
        let reply = w.cmd("await 5000");
        let Some((m, p)) = reply.split_once(' ') else {
            return reply;
        };
        let (Ok(m), true) = (u64::from_str_radix(m, 16), p == &event(0, path)[2..]) else {
            return reply;
        };
        mask |= m;
        if mask & want == want {
            break;
        }
    }
    event(mask, path)
}

#[test]
fn a_fanotify_group_comes_back_with_its_inode_mount_and_filesystem_marks() {
    cryo_bin();
    let mut w = Workload::spawn("notify", &["fanotify"]);
    let _unmount = Unmount(w.path("fs"));
    let close_write = libc::FAN_CLOSE_WRITE;
    let both = libc::FAN_MODIFY | libc::FAN_CLOSE_WRITE;
    // The ignored FAN_MODIFY (surviving modification) leaves FAN_CLOSE_WRITE only.
    assert_eq!(w.cmd("touch marked"), event(close_write, &w.path("marked")));
    assert_eq!(w.cmd("touch fs/m"), event(both, &w.path("fs/m")));
    let before = notify_lines(w.pid(), 47, "fanotify");
    assert_eq!(before.len(), 4, "{before:?}");
    w.dump_and_restore();

    assert_eq!(
        notify_lines(w.pid(), 47, "fanotify"),
        before,
        "the group's flags and marks (fdinfo)"
    );
    // The inode mark, its ignored mask still there after a write: written by this test,
    // seen by the restored process.
    std::fs::write(w.path("marked"), b"from the test").unwrap();
    assert_eq!(
        await_events(&w, close_write, &w.path("marked")),
        event(close_write, &w.path("marked")),
        "inode mark"
    );
    assert_eq!(
        w.cmd("touch marked"),
        event(close_write, &w.path("marked")),
        "inode mark, second write (the ignored mask survives modification)"
    );
    // FAN_CLOSE_WRITE from the mount mark, FAN_MODIFY from the filesystem mark.
    std::fs::write(w.path("fs/t"), b"from the test").unwrap();
    assert_eq!(
        await_events(&w, both, &w.path("fs/t")),
        event(both, &w.path("fs/t")),
        "mount and filesystem marks, a write by the test"
    );
    assert_eq!(
        w.cmd("touch fs/m"),
        event(both, &w.path("fs/m")),
        "mount and filesystem marks"
    );
    assert_eq!(parse_fds(&w.cmd("fds"))[&47], "anon_inode:[fanotify]");
    w.kill_restored();
}

/// A workload of `notify KIND` with an event queued on fd 47 is refused (temporary), runs on,
/// reads the event (`first`), and is then dumped and restored; its next event is `again`.
fn refused_while_events_are_queued(kind: &str, first: &str, again: &str) {
    cryo_bin();
    let mut w = Workload::spawn("notify", &[kind]);
    assert_eq!(w.cmd("write marked"), "ok");
    w.assert_dump_refused("47", "events queued, not read yet");
    assert_eq!(w.cmd("events"), first, "the queued event is still there");
    // Read: a retry succeeds.
    w.dump_and_restore();
    assert_eq!(w.cmd("touch marked"), again);
    w.kill_restored();
}

#[test]
fn a_fanotify_group_with_unread_events_is_refused_until_they_are_read() {
    cryo_bin();
    let mut w = Workload::spawn("notify", &["fanotify"]);
    let _unmount = Unmount(w.path("fs"));
    let marked = event(libc::FAN_CLOSE_WRITE, &w.path("marked"));
    assert_eq!(w.cmd("write marked"), "ok");
    w.assert_dump_refused("47", "events queued, not read yet");
    assert_eq!(w.cmd("events"), marked, "the queued event is still there");
    w.dump_and_restore();
    assert_eq!(w.cmd("touch marked"), marked);
    w.kill_restored();
}

#[test]
fn a_fanotify_mark_asking_for_permission_events_is_refused_naming_it() {
    cryo_bin();
    let w = Workload::spawn("notify", &["fanotify-perm"]);
    w.assert_dump_refused("47", "asks for permission events (mask 0x10000)");
}

/// A dnotify watch (fcntl F_NOTIFY on a directory fd): its events mask cannot be read back,
/// the directory's owner (F_GETOWN, set by F_NOTIFY) shows it is there. Refused at dump,
/// naming pid, fd and dnotify, the process left as it was. Before 2026-12-07 it came back
/// without the watch: no signal for a file made in the directory (probe dnotify).
#[test]
fn a_dnotify_watch_is_refused_naming_it() {
    cryo_bin();
    let w = Workload::spawn("notify", &["dnotify"]);
    w.assert_dump_refused("47", "dnotify watch (fcntl F_NOTIFY)");
}

#[test]
fn an_inotify_instance_with_unread_events_is_refused_until_they_are_read() {
    refused_while_events_are_queued("inotify", "8 wd1", "8 wd1");
}

/// Watch descriptors past 9, which fdinfo shows in hex ("wd:a"), with a gap below them: each
/// watch comes back with its descriptor, an event read names it. Before, the dump was refused
/// ("cannot parse fdinfo line"), and one shown as "10" (16) would have been taken for 10.
#[test]
fn inotify_watches_past_nine_come_back_with_their_descriptors() {
    cryo_bin();
    let mut w = Workload::spawn("notify", &["inotify-many"]);
    let watches = |pid: i32| -> Vec<String> {
        std::fs::read_to_string(format!("/proc/{pid}/fdinfo/47"))
            .unwrap()
            .lines()
            .filter(|l| l.starts_with("inotify"))
            .map(|l| {
                l.split(' ')
                    .take(5)
                    .filter(|f| !f.starts_with("ino:"))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect()
    };
    let before = watches(w.pid());
    assert_eq!(before.len(), 12, "{before:?}");
    assert!(before.iter().any(|l| l.contains("wd:10 ")), "{before:?}");
    w.dump_and_restore();
    assert_eq!(watches(w.pid()), before);
    assert_eq!(w.cmd("touch w16"), "8 wd16");
    assert_eq!(w.cmd("touch w10"), "8 wd10");
    assert_eq!(w.cmd("touch w1"), "8 wd1");
    w.kill_restored();
}

/// Closes fd 48, the last holder of the unlinked inode watch 1 is on: its close is seen,
/// then the inode goes (IN_CLOSE_WRITE, IN_DELETE_SELF, IN_IGNORED).
fn closing_the_held_fd_ends_watch_1(w: &Workload) {
    assert_eq!(w.cmd("close-held"), "closed");
    let (close_write, delete_self, ignored) = (0x8, 0x400, 0x8000);
    assert_eq!(
        w.cmd("events"),
        format!("{:x} wd1", close_write | delete_self | ignored)
    );
}

#[test]
fn an_inotify_watch_on_an_unlinked_inode_comes_back_on_the_inode_its_fd_holds() {
    cryo_bin();
    let mut w = Workload::spawn("notify", &["inotify-unlinked"]);
    let held = w.path("watched/marked").display().to_string() + " (deleted)";
    assert_eq!(w.cmd("events"), "");
    w.dump_and_restore();
    assert_eq!(parse_fds(&w.cmd("fds"))[&48], held);
    // Nothing of the restore's own doing (the file made again and unlinked in the watched
    // directory) is queued.
    assert_eq!(w.cmd("events"), "");
    // The watch is on the inode fd 48 holds: its close is seen, then the inode goes.
    closing_the_held_fd_ends_watch_1(&w);
    // The directory's watch sees a file made there.
    assert_eq!(w.cmd("touch watched/new"), "100 wd2");
    w.kill_restored();
}

#[test]
fn a_dump_reading_a_watched_fifo_and_deleted_file_queues_no_inotify_event() {
    cryo_bin();
    let mut w = Workload::spawn("notify", &["inotify-reads"]);
    assert_eq!(w.cmd("events"), "");
    let watches = notify_lines(w.pid(), 47, "inotify");
    assert_eq!(watches.len(), 2, "{watches:?}");
    // The dump reads the FIFO's bytes (tee) and the deleted file's contents: the process,
    // left running, has no event of it, and its watches are as they were (their flags too).
    let out = w.dump(&w.path("left"), &["--leave-running"]);
    assert!(out.status.success(), "{out}");
    assert_eq!(w.cmd("events"), "", "events of the dump's own reads");
    assert_eq!(notify_lines(w.pid(), 47, "inotify"), watches);
    // A killing dump: they come back watched, on what fds 48 and 49 hold.
    w.dump_and_restore();
    assert_eq!(w.cmd("events"), "");
    closing_the_held_fd_ends_watch_1(&w);
    w.kill_restored();
}

#[test]
fn an_inotify_watch_on_an_unlinked_inode_no_fd_of_the_process_holds_is_refused() {
    cryo_bin();
    let w = Workload::spawn("notify", &["inotify-unlinked-mapped"]);
    w.assert_dump_refused("47", "inotify watch 1: its inode");
    w.assert_dump_refused("47", "no fd of the process holds it");
}

#[test]
fn a_pidfd_of_a_child_comes_back_on_the_restored_child_with_its_flags() {
    cryo_bin();
    let mut w = Workload::spawn("held", &["pidfd-child-nonblock"]);
    let reply = w.cmd("pidfd");
    let child: i32 = reply
        .strip_prefix("other ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("pidfd: {reply:?}"));
    let flags = w.cmd("flags");
    assert_ne!(
        i32::from_str_radix(&flags, 8).unwrap() & libc::O_NONBLOCK,
        0,
        "PIDFD_NONBLOCK: {flags}"
    );
    w.dump_and_restore();

    assert_eq!(w.cmd("pidfd"), reply, "fdinfo Pid: of the restored pidfd");
    assert_eq!(w.cmd("flags"), flags, "its file flags");
    assert_eq!(w.cmd("signal0"), "ok");
    assert_eq!(w.cmd("exited 0"), "no", "the child runs");
    assert_eq!(parse_fds(&w.cmd("fds"))[&47], "anon_inode:[pidfd]");
    // SAFETY: kill takes numbers; the child is the restored workload's own.
    assert_eq!(unsafe { libc::kill(child, libc::SIGKILL) }, 0);
    assert_eq!(
        w.cmd("exited 10000"),
        "yes",
        "the restored pidfd does not see its child's exit"
    );
    w.kill_restored();
}

/// The pid an fdinfo's `Pid:` names.
fn pidfd_target(pid: i32, fd: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Pid:"))
        .map(|p| p.trim().to_string())
        .unwrap_or_default()
}

#[test]
fn a_pidfd_shared_by_a_parent_and_its_second_child_comes_back_as_one_description() {
    cryo_bin();
    let mut w = Workload::spawn("held", &["pidfd-child-shared"]);
    let reply = w.cmd("pidfd");
    let first: i32 = reply
        .strip_prefix("other ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("pidfd: {reply:?}"));
    let second = *children_of(w.pid() as u32)
        .iter()
        .find(|&&c| c != first)
        .expect("the second child");
    assert_eq!(pidfd_target(second, 47), first.to_string());
    w.dump_and_restore();

    assert_eq!(w.cmd("pidfd"), reply, "the parent's pidfd");
    assert_eq!(
        pidfd_target(second, 47),
        first.to_string(),
        "the second child's fd 47"
    );
    // SAFETY: kcmp takes numbers; KCMP_FILE (0) compares the two fds' descriptions.
    let same = unsafe { libc::syscall(libc::SYS_kcmp, w.pid(), second, 0, 47, 47) };
    assert_eq!(
        same, 0,
        "the parent and its second child hold two descriptions"
    );
    // SAFETY: kill takes numbers; the child is the restored workload's own.
    assert_eq!(unsafe { libc::kill(first, libc::SIGKILL) }, 0);
    assert_eq!(w.cmd("exited 10000"), "yes");
    w.kill_restored();
}

#[test]
fn an_epoll_watching_a_pidfd_of_a_child_reports_its_exit_after_restore() {
    cryo_bin();
    let mut w = Workload::spawn("held", &["pidfd-child-epoll"]);
    let reply = w.cmd("pidfd");
    let child: i32 = reply
        .strip_prefix("other ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("pidfd: {reply:?}"));
    assert_eq!(w.cmd("epoll 0"), "none");
    w.dump_and_restore();

    assert_eq!(w.cmd("pidfd"), reply);
    assert_eq!(w.cmd("epoll 0"), "none", "the child runs");
    // SAFETY: kill takes numbers; the child is the restored workload's own.
    assert_eq!(unsafe { libc::kill(child, libc::SIGKILL) }, 0);
    assert_eq!(
        w.cmd("epoll 10000"),
        "ready 47",
        "the epoll does not watch the restored pidfd"
    );
    w.kill_restored();
}

/// The `tfd:` numbers, events and data of epoll `fd` of `pid`.
fn epoll_targets(pid: i32, fd: i32) -> Vec<String> {
    let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).unwrap();
    info.lines()
        .filter(|l| l.starts_with("tfd:"))
        .map(|l| l.split_whitespace().take(6).collect::<Vec<_>>().join(" "))
        .collect()
}

#[test]
fn an_epoll_watching_a_pidfd_under_a_closed_number_reports_its_exit_after_restore() {
    cryo_bin();
    let mut w = Workload::spawn("held", &["pidfd-child-epoll-closed"]);
    let reply = w.cmd("pidfd");
    let child: i32 = reply
        .strip_prefix("other ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("pidfd: {reply:?}"));
    let targets = epoll_targets(w.pid(), 48);
    assert_eq!(targets, ["tfd: 46 events: 19 data: 2e"]);
    w.dump_and_restore();

    assert_eq!(w.cmd("pidfd"), reply);
    assert_eq!(epoll_targets(w.pid(), 48), targets);
    assert!(!Path::new(&format!("/proc/{}/fd/46", w.pid())).exists());
    assert_eq!(w.cmd("epoll 0"), "none", "the child runs");
    // SAFETY: kill takes numbers; the child is the restored workload's own.
    assert_eq!(unsafe { libc::kill(child, libc::SIGKILL) }, 0);
    assert_eq!(
        w.cmd("epoll 10000"),
        "ready 46",
        "the epoll does not watch the restored pidfd under 46"
    );
    w.kill_restored();
}

#[test]
fn a_pidfd_of_a_child_in_a_copy_restored_in_a_new_pid_namespace_is_of_the_copys_child() {
    cryo_bin();
    let w = Workload::spawn("held", &["pidfd-child"]);
    let reply = w.cmd("pidfd");
    let img = w.path("img");
    w.dump(&img, &["--leave-running"]).assert_success();
    let outside = w.restore_copy_in_namespaces(&img);
    let mut reaper = Reaper(vec![outside]);
    let kids = children_of(outside as u32);
    reaper.0.extend(&kids);
    assert_eq!(kids.len(), 1, "the copy's child: {kids:?}");
    // Seen from here: the copy's own child, not the original's (which has the image's pid).
    assert_eq!(pidfd_target(outside, 47), kids[0].to_string());
    assert_eq!(reply, format!("other {}", pidfd_target(w.pid(), 47)));
    drop(reaper);
}

#[test]
fn a_pidfd_of_a_thread_that_is_not_a_main_one_is_refused_naming_it() {
    cryo_bin();
    let w = Workload::spawn("held", &["pidfd-thread"]);
    w.assert_dump_refused("47", "pidfd of thread ");
    assert_eq!(w.cmd("signal0"), "ok");
}
