//! The smaller kernel objects a process holds through fds: timerfds armed every way,
//! deleted-but-open files with their holes and times, pidfds, namespace fds and the deleted
//! files cryo refuses. Each is checked from inside the restored process, or refused at dump
//! naming pid, fd and the kind.
//!
//! Needs the engine: `cryo` must be built (`cargo build -p cryo`).

use std::time::{Duration, Instant};

use cryo_tests::{control_dir, cryo_bin, parse_fds, Workload, CMD_TIMEOUT};

const MS: u64 = 1_000_000;
const HOUR: u64 = 3_600_000 * MS;

/// The time of `clock` in nanoseconds.
fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `ts`.
    assert_eq!(unsafe { libc::clock_gettime(clock, &mut ts) }, 0);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A reply of numbers.
fn numbers(reply: &str) -> Vec<u64> {
    reply
        .split_whitespace()
        .map(|n| {
            n.parse()
                .unwrap_or_else(|_| panic!("not numbers: {reply:?}"))
        })
        .collect()
}

#[test]
fn periodic_timerfds_come_back_armed_and_periodic_with_their_unread_expirations() {
    cryo_bin();
    // The absolute timers (63, 64) are an hour away: not looked at here.
    let mut w = Workload::spawn("timerfds", &["3600000"]);
    // Fd 62 (every 10 ms, never read): 20 periods at least before the dump.
    let piled: u64 = w
        .await_reply("elapsed 62", |r| r.parse::<u64>().unwrap() >= 200)
        .parse::<u64>()
        .unwrap()
        / 10;
    w.dump_and_restore();

    // Fd 60 (every 20 ms) keeps firing: two expirations one after the other.
    assert!(numbers(&w.cmd("wait 60"))[0] >= 1, "fd 60 did not fire");
    assert!(
        numbers(&w.cmd("wait 60"))[0] >= 1,
        "fd 60 fired once after the restore, then no more: not periodic"
    );
    let got = numbers(&w.cmd("get 60"));
    assert_eq!(got[1], 20 * MS, "fd 60 interval: {got:?}");
    assert!(got[0] > 0 && got[0] <= 20 * MS, "fd 60 left: {got:?}");
    assert_eq!(w.cmd("info 60"), "1 00");

    // Fd 61 expired before the dump, unread: one expiration, and armed for the next hour.
    assert_eq!(w.cmd("read 61"), "1", "fd 61: its unread expiration");
    let got = numbers(&w.cmd("get 61"));
    assert_eq!(
        got[1], HOUR,
        "fd 61 came back without its interval: {got:?}"
    );
    assert!(
        got[0] > HOUR - 600_000 * MS && got[0] <= HOUR,
        "fd 61 is not armed for its next period: {got:?}"
    );

    // Fd 62: every expiration that happened before the dump is read now.
    let read = numbers(&w.cmd("read 62"))[0];
    assert!(
        read >= piled,
        "fd 62: {read} expirations read, {piled} had happened before the dump"
    );
    assert_eq!(numbers(&w.cmd("get 62"))[1], 10 * MS);
    w.kill_restored();
}

#[test]
fn absolute_timerfds_keep_their_deadline_on_both_clocks() {
    cryo_bin();
    let mut w = Workload::spawn("timerfds", &["800"]);
    let real: u64 = w.cmd("deadline 63").parse().unwrap();
    let mono: u64 = w.cmd("deadline 64").parse().unwrap();
    let img = w.path("img");
    w.dump_ok(&img);
    // Both deadlines pass while the process is away.
    let until = Instant::now() + CMD_TIMEOUT;
    while clock_ns(libc::CLOCK_REALTIME) <= real || clock_ns(libc::CLOCK_MONOTONIC) <= mono {
        assert!(Instant::now() < until, "the deadlines never passed");
        std::thread::sleep(Duration::from_millis(10));
    }
    w.restore_background(&img);
    // They expired at their deadline, not at the time left counted from the restore.
    assert_eq!(w.cmd("read 63"), "1", "CLOCK_REALTIME absolute timer");
    assert_eq!(w.cmd("read 64"), "1", "CLOCK_MONOTONIC absolute timer");
    for fd in [63, 64] {
        let got = numbers(&w.cmd(&format!("get {fd}")));
        assert_eq!(got[1], HOUR, "fd {fd}: {got:?}");
        assert!(
            got[0] > HOUR - 600_000 * MS && got[0] <= HOUR,
            "fd {fd} is not armed for the period after its deadline: {got:?}"
        );
    }
    assert_eq!(
        w.cmd("info 63"),
        "0 03",
        "CLOCK_REALTIME, ABSTIME|CANCEL_ON_SET"
    );
    assert_eq!(w.cmd("info 64"), "1 01", "CLOCK_MONOTONIC, ABSTIME");
    w.kill_restored();
}

#[test]
fn a_cancel_on_set_timerfd_with_unread_expirations_is_refused_until_read() {
    cryo_bin();
    // fd 63: CLOCK_REALTIME, ABSTIME|CANCEL_ON_SET, due 1 ms after the start.
    let mut w = Workload::spawn("timerfds", &["1"]);
    let real: u64 = w.cmd("deadline 63").parse().unwrap();
    let until = Instant::now() + CMD_TIMEOUT;
    while clock_ns(libc::CLOCK_REALTIME) <= real {
        assert!(Instant::now() < until, "the deadline never passed");
        std::thread::sleep(Duration::from_millis(1));
    }
    // Expired or cancelled by a clock change: only a read can tell, so the dump says retry.
    let check = w.dump(&w.path("check"), &["--check-only"]);
    assert_eq!(check.status.code(), Some(2), "a temporary refusal\n{check}");
    let out = w.dump(&w.path("img"), &[]);
    out.assert_refused()
        .assert_stderr_mentions(&format!("pid {} fd 63", w.pid()))
        .assert_stderr_mentions("TFD_TIMER_CANCEL_ON_SET")
        .assert_stderr_mentions("a temporary state");
    w.assert_untouched();
    assert_eq!(
        w.cmd("read 63"),
        "1",
        "the expiration is still there to read"
    );
    let img = w.path("img2");
    w.dump_ok(&img);
    w.restore_background(&img);
    assert_eq!(
        w.cmd("info 63"),
        "0 03",
        "CLOCK_REALTIME, ABSTIME|CANCEL_ON_SET"
    );
    assert_eq!(
        w.cmd("read 63"),
        "0",
        "no expiration came back from nowhere"
    );
    w.kill_restored();
}

/// The bytes the files of `dir` (recursively) take on disk.
fn allocated(dir: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let meta = entry.metadata().unwrap();
        total += if meta.is_dir() {
            allocated(&entry.path())
        } else {
            meta.blocks() * 512
        };
    }
    total
}

#[test]
fn a_deleted_sparse_file_keeps_its_holes_size_mode_and_times() {
    cryo_bin();
    let mut w = Workload::spawn("deleted-sparse", &[]);
    let map = w.cmd("map 70");
    let sum = w.cmd("sum 70");
    // After the reads, which moved the access time.
    let stat = w.cmd("stat 70");
    let st: Vec<&str> = stat.split(' ').collect();
    assert_eq!(st[0], ((1u64 << 30) + 123).to_string(), "{stat}");
    assert_eq!(
        map,
        format!("0+4096,{}+8192", 256u64 << 20),
        "the workload's holes"
    );
    let img = w.path("img");
    w.dump_ok(&img);
    let image_bytes = allocated(&img);
    assert!(
        image_bytes < 4 << 20,
        "a 1 GiB file holding 12 KiB of data took {image_bytes} bytes of image"
    );
    w.restore_background(&img);
    let after = w.cmd("stat 70");
    let a: Vec<&str> = after.split(' ').collect();
    let allocated_now: u64 = a[1].parse().unwrap();
    assert!(
        allocated_now < 1 << 20,
        "the restored file takes {allocated_now} bytes on disk: {after}"
    );
    // Size, mode, mtime, atime, nlink; not the blocks (the filesystem's business).
    assert_eq!(
        [a[0], a[2], a[3], a[4], a[5]],
        [st[0], st[2], st[3], st[4], st[5]],
        "stat before: {stat}, after: {after}"
    );
    assert_eq!(st[2], "640");
    assert_eq!(st[3], "1000000000.123456789");
    assert_eq!(w.cmd("map 70"), map, "holes");
    assert_eq!(w.cmd("sum 70"), sum, "data");
    let fds = parse_fds(&w.cmd("fds"));
    assert!(fds[&70].ends_with("/sparse (deleted)"), "{fds:?}");
    w.kill_restored();
}

#[test]
fn a_deleted_name_of_a_file_linked_elsewhere_comes_back_as_that_same_file() {
    cryo_bin();
    let mut w = Workload::spawn("deleted-sparse", &[]);
    let other = w.path("linked-other");
    let other = other.to_str().unwrap();
    let sum = w.cmd("sum 71");
    let stat = w.cmd("stat 71");
    assert!(stat.starts_with("3000 "), "{stat}");
    assert!(stat.ends_with(" 1"), "one link left: {stat}");
    assert_eq!(w.cmd(&format!("same 71 {other}")), "yes");
    w.dump_and_restore();
    let after = w.cmd("stat 71");
    assert_eq!(after, stat, "size, mode, times, one link");
    assert_eq!(w.cmd("sum 71"), sum, "contents");
    assert_eq!(
        w.cmd(&format!("same 71 {other}")),
        "yes",
        "the restored fd is a copy, not the file still linked at {other}"
    );
    assert_eq!(w.cmd("write 71 hello"), "ok");
    let seen = std::fs::read(other).unwrap();
    assert_eq!(
        &seen[..7],
        b"helloed",
        "a write through the fd reaches the other name"
    );
    let fds = parse_fds(&w.cmd("fds"));
    assert!(fds[&71].ends_with("/linked-orig (deleted)"), "{fds:?}");
    assert!(
        !w.path("linked-orig").exists(),
        "the restore left the original name behind"
    );
    w.kill_restored();
}

/// Dumps a `held KIND` workload: refused, naming the pid, fd 47 and `named`; the workload
/// runs on untouched.
fn refused_at_dump(kind: &str, named: &str) {
    cryo_bin();
    let w = Workload::spawn("held", &[kind]);
    w.assert_dump_refused("47", named);
    assert_eq!(w.cmd("fd"), "47");
}

#[test]
fn secret_memory_is_refused_at_dump_naming_pid_fd_and_kind() {
    refused_at_dump(
        "secretmem",
        "secret memory (memfd_secret) is not supported yet",
    );
}

/// `held KIND`, whose fd 47 is on a file removed while open and named NAME: `before` runs
/// in the original (its answer is returned), then the dump and the restore; fd 47 must name the
/// same path, "(deleted)", with the same stat (mode, owner, mtime, no link). Returns the
/// restored workload too.
fn comes_back_removed<T>(
    kind: &str,
    name: &str,
    before: impl FnOnce(&Workload) -> T,
) -> (Workload, T) {
    cryo_bin();
    let mut w = Workload::spawn("held", &[kind]);
    let seen = before(&w);
    let link = parse_fds(&w.cmd("fds"))[&47].clone();
    assert!(link.ends_with(&format!("/{name} (deleted)")), "{link}");
    let stat = w.cmd("stat 47");
    w.dump_and_restore();
    assert_eq!(
        parse_fds(&w.cmd("fds"))[&47],
        link,
        "the same name, removed"
    );
    assert_eq!(w.cmd("stat 47"), stat, "mode, owner, mtime, no link");
    (w, seen)
}

#[test]
fn a_deleted_fifo_comes_back_deleted_with_its_unread_data() {
    let (mut w, ()) = comes_back_removed("deleted-fifo", "fifo", |w| {
        assert_eq!(w.cmd("put 47 queued-before-the-dump"), "ok");
    });
    assert_eq!(w.cmd("take 47"), "queued-before-the-dump");
    assert_eq!(w.cmd("put 47 after"), "ok");
    assert_eq!(w.cmd("take 47"), "after", "still a fifo, both ways");
    w.kill_restored();
}

#[test]
fn the_two_ends_of_a_deleted_fifo_come_back_on_one_fifo_with_its_owner_and_mode() {
    cryo_bin();
    let mut w = Workload::spawn("held", &["deleted-fifo-ends"]);
    assert_eq!(w.cmd("put 49 queued"), "ok");
    let stat = w.cmd("stat 47");
    assert!(stat.starts_with("640 1234 1235 "), "{stat}");
    assert_eq!(w.cmd("stat 49"), stat, "one fifo");
    let flags = [w.cmd("flags-of 47"), w.cmd("flags-of 49")];
    w.dump_and_restore();
    assert_eq!(w.cmd("stat 47"), stat, "mode, owner, mtime, no link");
    assert_eq!(w.cmd("stat 49"), stat, "one fifo");
    assert_eq!([w.cmd("flags-of 47"), w.cmd("flags-of 49")], flags);
    assert_eq!(w.cmd("take 47"), "queued");
    assert_eq!(w.cmd("take 47"), "empty");
    assert_eq!(w.cmd("put 49 more"), "ok");
    assert_eq!(w.cmd("take 47"), "more", "the write end feeds the read end");
    w.kill_restored();
}

/// The directory of a removed directory held open is gone too (zdtm rmdir_open): the restore
/// makes both again at their paths and removes them, so the fd reads the same name. Before:
/// the restore failed, after the dump had killed the process; then it was made under a hidden
/// name beside its removed directory.
#[test]
fn a_removed_directory_whose_parent_was_removed_too_comes_back_removed() {
    cryo_bin();
    let mut w = Workload::spawn("held", &["deleted-dir-in-deleted-dir"]);
    let stat = w.cmd("stat 47");
    assert!(stat.ends_with(" 0"), "no link left: {stat}");
    let link = parse_fds(&w.cmd("fds"))[&47].clone();
    assert!(link.ends_with("/parent/gone (deleted)"), "{link}");
    w.dump_and_restore();
    assert_eq!(w.cmd("stat 47"), stat, "mode, owner, mtime, no link");
    assert_eq!(
        parse_fds(&w.cmd("fds"))[&47],
        link,
        "the same name, made again with its removed directory (before: a hidden name beside it)"
    );
    assert!(
        !w.dir().join("parent").exists(),
        "the directory made again is gone"
    );
    assert_eq!(w.cmd("create-in 47"), format!("errno {}", libc::ENOENT));
    w.kill_restored();
}

/// A deleted file with two hard links, an fd opened by each name, both names unlinked (zdtm
/// link10): each fd reads its own name, "(deleted)", after the restore as before, and both
/// are still one file. Before: the second fd read the first one's name.
#[test]
fn the_fds_of_a_deleted_file_opened_by_two_hard_links_keep_their_own_names() {
    cryo_bin();
    let mut w = Workload::spawn("held", &["deleted-hard-links"]);
    let fds = parse_fds(&w.cmd("fds"));
    let names = [fds[&47].clone(), fds[&49].clone()];
    assert!(names[0].ends_with("/a (deleted)"), "{names:?}");
    assert!(names[1].ends_with("/a.lnk (deleted)"), "{names:?}");
    let ino = w.cmd("ino 47");
    assert_eq!(w.cmd("ino 49"), ino);
    let stat = w.cmd("stat 47");
    assert!(stat.ends_with(" 0"), "no link left: {stat}");
    w.dump(&w.path("left"), &["--leave-running"])
        .assert_success();
    let fds = parse_fds(&w.cmd("fds"));
    assert_eq!(
        [fds[&47].clone(), fds[&49].clone()],
        names,
        "the original, left running"
    );
    assert_eq!(w.cmd("stat 47"), stat, "the original, left running");
    w.dump_and_restore();
    let fds = parse_fds(&w.cmd("fds"));
    assert_eq!(
        [fds[&47].clone(), fds[&49].clone()],
        names,
        "each fd its own deleted name"
    );
    assert_eq!(w.cmd("ino 47"), w.cmd("ino 49"), "one file");
    assert_eq!(w.cmd("stat 47"), stat, "mode, owner, mtime, no link");
    assert_eq!(w.cmd("take 49"), "both", "its contents");
    for name in ["a", "a.lnk"] {
        assert!(
            !w.dir().join(name).exists(),
            "the restore left {name} behind"
        );
    }
    w.kill_restored();
}

/// A file still linked elsewhere, opened by two names since unlinked: each fd reads its own
/// deleted name after the restore, on the very same file. Before: the second fd read the first
/// one's name.
#[test]
fn the_fds_of_a_file_linked_elsewhere_opened_by_two_deleted_names_keep_their_own_names() {
    cryo_bin();
    let mut w = Workload::spawn("held", &["linked-two-names"]);
    let fds = parse_fds(&w.cmd("fds"));
    let names = [fds[&47].clone(), fds[&49].clone()];
    assert!(names[0].ends_with("/f (deleted)"), "{names:?}");
    assert!(names[1].ends_with("/g (deleted)"), "{names:?}");
    let ino = w.cmd("ino 47");
    w.dump_and_restore();
    let fds = parse_fds(&w.cmd("fds"));
    assert_eq!(
        [fds[&47].clone(), fds[&49].clone()],
        names,
        "each fd its own deleted name"
    );
    assert_eq!(
        [w.cmd("ino 47"), w.cmd("ino 49")],
        [ino.clone(), ino],
        "the same file"
    );
    assert_eq!(w.cmd("take 49"), "kept");
    for name in ["f", "g"] {
        assert!(
            !w.dir().join(name).exists(),
            "the restore left {name} behind"
        );
    }
    w.kill_restored();
}

/// A file open through a name since deleted, with its directory, and linked elsewhere: its
/// name made again for an instant through a directory made again for it, both removed (zdtm
/// unlink_regular00). Before: refused, "directory .../sub: ENOENT".
#[test]
fn a_file_linked_elsewhere_whose_deleted_name_s_directory_was_removed_comes_back_the_same_file() {
    cryo_bin();
    let mut w = Workload::spawn("held", &["linked-in-removed-dir"]);
    let stat = w.cmd("stat 47");
    assert!(stat.ends_with(" 1"), "one link left: {stat}");
    let ino = w.cmd("ino 47");
    let link = parse_fds(&w.cmd("fds"))[&47].clone();
    assert!(link.ends_with("/sub/f (deleted)"), "{link}");
    w.dump_and_restore();
    assert_eq!(w.cmd("stat 47"), stat);
    assert_eq!(w.cmd("ino 47"), ino, "the same file");
    assert_eq!(parse_fds(&w.cmd("fds"))[&47], link, "its deleted name");
    assert_eq!(w.cmd("put 47 after"), "ok");
    assert_eq!(
        std::fs::read_to_string(w.dir().join("other")).unwrap(),
        "aftere",
        "written through the fd, read through its other link"
    );
    assert!(
        !w.dir().join("sub").exists(),
        "the directory made again is gone"
    );
    w.kill_restored();
}

#[test]
fn a_removed_directory_held_open_comes_back_removed_with_its_mode_and_times() {
    let (mut w, create) = comes_back_removed("deleted-dir", "gone", |w| {
        let stat = w.cmd("stat 47");
        assert!(stat.ends_with(" 0"), "no link left: {stat}");
        let create = w.cmd("create-in 47");
        assert_eq!(create, format!("errno {}", libc::ENOENT));
        create
    });
    assert_eq!(w.cmd("create-in 47"), create, "nothing can be made in it");
    w.kill_restored();
}

#[test]
fn a_removed_device_node_held_open_comes_back_removed_on_the_same_device() {
    let (mut w, ()) = comes_back_removed("deleted-dev", "null", |_| ());
    assert_eq!(
        w.cmd("put 47 into-the-void"),
        "ok",
        "still /dev/null's device"
    );
    assert_eq!(w.cmd("take 47"), "empty");
    w.kill_restored();
}

#[test]
fn a_removed_symlink_held_open_comes_back_removed_with_its_target() {
    let (mut w, ()) = comes_back_removed("deleted-symlink", "link", |w| {
        assert_eq!(w.cmd("readlink"), "some/target");
    });
    assert_eq!(w.cmd("readlink"), "some/target");
    w.kill_restored();
}

/// An O_PATH fd on a unix socket's file names the file, not a socket: it comes back on the
/// same path, a socket file still. Before 2026-12-07 the dump took it for a socket and
/// failed on its first socket call ("getsockopt SO_DOMAIN ... Bad file descriptor").
#[test]
fn an_o_path_fd_on_a_unix_sockets_file_comes_back_on_it() {
    cryo_bin();
    let mut w = Workload::spawn("held", &["o-path-socket"]);
    let before = w.cmd("stat 47");
    let flags = w.cmd("flags");
    w.dump_and_restore();
    let fds = parse_fds(&w.cmd("fds"));
    assert!(fds[&47].ends_with("/sock"), "{fds:?}");
    assert_eq!(
        w.cmd("stat 47").split(' ').next(),
        before.split(' ').next(),
        "a socket file"
    );
    assert_eq!(w.cmd("flags"), flags, "O_PATH kept");
    w.kill_restored();
}

/// A file held open on a tmpfs unmounted lazily since (MNT_DETACH): no path leads to it,
/// its mount is in no table: refused naming the fd and the mount. Before 2026-12-07 refused
/// with "find it by its path /f: No such file or directory" (probe lazyumount).
#[test]
fn a_file_on_a_lazily_unmounted_mount_is_refused_naming_the_mount() {
    refused_at_dump(
        "lazy-unmounted",
        "which is not in its mount namespace (unmounted lazily",
    );
}

/// An O_PATH fd on a removed FIFO: no name leads to it, and no FIFO of it can be opened:
/// refused naming the fd and what it holds. Before 2026-12-07 refused with the raw error of
/// a pipe call ("F_GETPIPE_SZ ... Bad file descriptor").
#[test]
fn an_o_path_fd_on_a_removed_fifo_is_refused_naming_it() {
    refused_at_dump("o-path-deleted-fifo", "an O_PATH fd on a removed fifo");
}

#[test]
fn a_symlink_held_open_by_o_path_comes_back_as_the_link_itself() {
    cryo_bin();
    let mut w = Workload::spawn("held", &["symlink"]);
    assert_eq!(w.cmd("readlink"), "some/target");
    w.dump_and_restore();
    assert_eq!(w.cmd("readlink"), "some/target");
    let fds = parse_fds(&w.cmd("fds"));
    assert!(fds[&47].ends_with("/link"), "{fds:?}");
    w.kill_restored();
}

#[test]
fn a_pidfd_of_the_process_itself_comes_back_on_the_restored_process() {
    cryo_bin();
    let mut w = Workload::spawn("held", &["pidfd-self"]);
    assert_eq!(w.cmd("pidfd"), "self");
    w.dump_and_restore();
    assert_eq!(w.cmd("pidfd"), "self", "fdinfo Pid: of the restored pidfd");
    assert_eq!(w.cmd("signal0"), "ok");
    let fds = parse_fds(&w.cmd("fds"));
    assert_eq!(fds[&47], "anon_inode:[pidfd]", "{fds:?}");
    w.kill_restored();
}

#[test]
fn a_pidfd_of_a_process_outside_the_dump_is_refused_at_dump_naming_its_pid() {
    refused_at_dump("pidfd-init", "pidfd of pid 1 outside the dump");
}

/// What the pidfds of `held pidfd-dead-two` show: (fdinfo Pid, exit status, inode,
/// pidfd_send_signal) of 47, 49 and 50, and the flags of 49.
fn dead_pidfds(w: &Workload) -> (Vec<String>, Vec<String>, Vec<String>, String) {
    let fds = ["47", "49", "50"];
    let of = |verb: &str| -> Vec<String> {
        fds.iter()
            .map(|fd| w.cmd(&format!("{verb} {fd}")))
            .collect()
    };
    let facts = fds
        .iter()
        .map(|fd| {
            format!(
                "fd {fd}: Pid {} {} signal0 {}",
                w.cmd(&format!("pidfd-of {fd}")),
                w.cmd(&format!("exit-info {fd}")),
                w.cmd(&format!("signal0-of {fd}")).starts_with("err"),
            )
        })
        .collect();
    (facts, of("ino"), of("flags-of"), w.cmd("exited 0"))
}

#[test]
fn pidfds_of_exited_processes_come_back_exited_with_their_status_and_identity() {
    cryo_bin();
    let mut w = Workload::spawn("held", &["pidfd-dead-two"]);
    let (facts, inos, flags, exited) = dead_pidfds(&w);
    assert_eq!(
        facts,
        [
            "fd 47: Pid -1 status 0x700 signal0 true",
            "fd 49: Pid -1 status 0x700 signal0 true",
            "fd 50: Pid -1 status 0xf signal0 true",
        ],
        "before the dump"
    );
    assert_eq!(inos[0], inos[1], "two pidfds of one process");
    assert_ne!(inos[0], inos[2], "pidfds of two processes");
    assert_eq!(exited, "yes", "poll: exited");
    w.dump_and_restore();
    let (facts_after, inos_after, flags_after, exited_after) = dead_pidfds(&w);
    assert_eq!(facts_after, facts, "after restore");
    assert_eq!(
        inos_after[0], inos_after[1],
        "two pidfds of one process, restored"
    );
    assert_ne!(
        inos_after[0], inos_after[2],
        "pidfds of two processes, restored"
    );
    assert_eq!(
        flags_after, flags,
        "flags (49: PIDFD_NONBLOCK), one description each"
    );
    assert_eq!(exited_after, "yes", "poll after restore: exited");
    let fds = parse_fds(&w.cmd("fds"));
    assert_eq!(fds[&50], "anon_inode:[pidfd]", "{fds:?}");
    w.kill_restored();
}

#[test]
fn a_pidfd_of_a_zombie_child_comes_back_on_the_restored_zombie_and_reaps_it() {
    cryo_bin();
    let mut w = Workload::spawn("held", &["pidfd-zombie"]);
    let zombie = w.cmd("pidfd-of 47");
    assert_ne!(zombie, "-1");
    w.dump_and_restore();
    assert_eq!(w.cmd("pidfd-of 47"), zombie, "the same pid");
    assert_eq!(w.cmd("exited 0"), "yes");
    assert_eq!(
        w.cmd("wait 47"),
        "status 0x500",
        "its status, reaped through the pidfd"
    );
    assert_eq!(w.cmd("pidfd-of 47"), "-1", "reaped");
    w.kill_restored();
}

/// A line terminal held open (virtual console 5 through a node made like zdtm's vt test, and
/// the first serial port, neither the process's controlling terminal) comes back without
/// `--shell-job`, reopened by its path: the same device, node and flags, still not its
/// controlling terminal (before: "terminal .../vt is dumped only with --shell-job").
#[test]
fn a_virtual_console_or_serial_port_held_open_comes_back_on_the_same_device() {
    cryo_bin();
    for (kind, rdev) in [("vt", "4:5"), ("serial", "4:64")] {
        let mut w = Workload::spawn("held", &[kind]);
        let before = (w.cmd("rdev 47"), w.cmd("ino 47"), w.cmd("flags"));
        assert_eq!(before.0, rdev, "{kind}");
        w.dump_and_restore();
        assert_eq!(
            (w.cmd("rdev 47"), w.cmd("ino 47"), w.cmd("flags")),
            before,
            "{kind}"
        );
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", w.pid())).unwrap();
        let tty_nr = stat[stat.rfind(')').unwrap() + 2..]
            .split(' ')
            .nth(4)
            .unwrap();
        assert_eq!(tty_nr, "0", "{kind}: not its controlling terminal");
        w.kill_restored();
    }
}

/// The fields of /proc/PID/stat after the command: (tty_nr, tpgid).
fn terminal_of(pid: i32) -> (String, String) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    (fields[4].to_string(), fields[5].to_string())
}

/// A virtual console that is the controlling terminal of the process's session (zdtm's vt
/// test: a session leader opening a node of console 7 without O_NOCTTY) comes back as it,
/// without `--shell-job`: the restored leader takes it again (TIOCSCTTY through the node its
/// fd holds), the foreground group its own (before: "terminal .../vt (its controlling
/// terminal) is dumped only with --shell-job").
#[test]
fn a_virtual_console_as_controlling_terminal_comes_back_as_it() {
    cryo_bin();
    let mut w = Workload::spawn_configured(control_dir(), "held", &["vt-ctty"], |c| {
        cryo_tests::own_session(c);
    });
    let pid = w.pid().to_string();
    let ctty = ((4 << 8) | 7).to_string();
    assert_eq!(
        terminal_of(w.pid()),
        (ctty.clone(), pid.clone()),
        "at start"
    );
    let before = (w.cmd("rdev 47"), w.cmd("ino 47"), w.cmd("flags"));
    w.dump(&w.path("left"), &["--leave-running"])
        .assert_success();
    assert_eq!(
        terminal_of(w.pid()),
        (ctty.clone(), pid.clone()),
        "left running"
    );
    w.dump_and_restore();
    assert_eq!(terminal_of(w.pid()), (ctty, pid), "restored");
    assert_eq!((w.cmd("rdev 47"), w.cmd("ino 47"), w.cmd("flags")), before);
    w.kill_restored();
}

/// A virtual console in exclusive mode (TIOCEXCL, which its last close clears) is refused,
/// naming pid and fd, and left as it was.
#[test]
fn a_virtual_console_in_exclusive_mode_is_refused() {
    cryo_bin();
    let w = Workload::spawn("held", &["vt-excl"]);
    let out = w.dump(&w.path("img"), &[]);
    out.assert_refused()
        .assert_stderr_mentions(&format!("pid {} fd 47", w.pid()))
        .assert_stderr_mentions("exclusive mode (TIOCEXCL)");
    w.assert_untouched();
    assert_eq!(w.cmd("rdev 47"), "4:6");
}

/// The system console held open through a node of its own (5:1, zdtm's console test): a
/// terminal no open makes a controlling terminal, with the system's modes: reopened by its
/// path, the same device, node and flags.
#[test]
fn a_console_node_held_open_comes_back_on_the_console() {
    cryo_bin();
    let mut w = Workload::spawn("held", &["console"]);
    let before = (w.cmd("rdev 47"), w.cmd("ino 47"), w.cmd("flags"));
    assert_eq!(before.0, "5:1");
    w.dump_and_restore();
    assert_eq!((w.cmd("rdev 47"), w.cmd("ino 47"), w.cmd("flags")), before);
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", w.pid())).unwrap();
    let tty_nr = stat[stat.rfind(')').unwrap() + 2..]
        .split(' ')
        .nth(4)
        .unwrap();
    assert_eq!(tty_nr, "0", "not its controlling terminal");
    w.kill_restored();
}

/// The write life hint of an inode (F_SET_RW_HINT), which the kernel keeps in the inode in
/// memory only: on a memfd, a deleted file and a pipe (new inodes after a restore) and on a
/// file at its path (whose inode may be dropped once the dump kills the process). Before: 0
/// on the memfd, the deleted file and the pipe after the restore.
#[test]
fn write_life_hints_come_back_on_memfds_deleted_files_pipes_and_files() {
    cryo_bin();
    let mut w = Workload::spawn("write-hints", &[]);
    let want = [("60", "2"), ("61", "3"), ("62", "4"), ("63", "5")];
    let hints = |w: &Workload| -> Vec<(String, String)> {
        want.iter()
            .map(|(fd, _)| (fd.to_string(), w.cmd(&format!("hint {fd}"))))
            .collect()
    };
    let as_set: Vec<(String, String)> = want
        .iter()
        .map(|(fd, h)| (fd.to_string(), h.to_string()))
        .collect();
    assert_eq!(hints(&w), as_set, "as set");
    w.dump_and_restore();
    assert_eq!(hints(&w), as_set, "after the restore");
    w.kill_restored();
}
