//! Open files, deleted files and pipes come back with their contents and offsets.
//!
//! Needs the engine: `cryo` must be built (`cargo build -p cryo`).

use cryo_tests::protocol::{self, DEFAULT_SEED};
use cryo_tests::{
    control_dir, cryo_bin, inode_flags_in, parse_fds, set_inode_flags, set_xattr, write_file,
    Unmount, Workload,
};

#[test]
fn a_regular_file_read_continues_at_the_next_byte() {
    cryo_bin();
    let dir = control_dir();
    let data = protocol::pattern(4096, 3);
    let path = dir.path().join("data");
    write_file(&path, &data);
    let mut w = Workload::spawn_in(dir, "file", &[path.to_str().unwrap()]);
    for (off, b) in data.iter().enumerate().take(5) {
        assert_eq!(w.cmd("next"), format!("{off} {b}"));
    }
    let fds = parse_fds(&w.cmd("fds"));
    w.dump_and_restore();
    assert_eq!(w.cmd("pos"), "5");
    assert_eq!(w.cmd("next"), format!("5 {}", data[5]));
    assert_eq!(w.cmd("next"), format!("6 {}", data[6]));
    assert_eq!(parse_fds(&w.cmd("fds")), fds);
    w.kill_restored();
}

#[test]
fn a_deleted_open_file_keeps_its_contents() {
    cryo_bin();
    let mut w = Workload::spawn("deleted-file", &["100000", "11"]);
    let want = protocol::len_and_checksum(&protocol::pattern(100_000, 11));
    assert_eq!(w.cmd("read"), want);
    w.dump_and_restore();
    assert_eq!(w.cmd("read"), want);
    assert_eq!(w.cmd("pos"), "100000");
    let fds = parse_fds(&w.cmd("fds"));
    assert!(
        fds.values().any(|t| t.ends_with(" (deleted)")),
        "the file should still be deleted: {fds:?}"
    );
    assert!(
        !w.path(protocol::DELETED_FILE).exists(),
        "the restore left the deleted file behind"
    );
    w.kill_restored();
}

/// A deleted file whose name another file took before the restore: made again unnamed, it
/// must stay a file no one can link (a removed file's fd: linkat ENOENT), as before. Before:
/// made with O_TMPFILE without O_EXCL, linkat of its fd gave it a name.
#[test]
fn a_deleted_file_whose_name_was_taken_comes_back_unlinkable() {
    cryo_bin();
    let mut w = Workload::spawn("deleted-file", &["5000", "21"]);
    let want = protocol::len_and_checksum(&protocol::pattern(5000, 21));
    let first = w.path("first-name");
    let relink = |w: &Workload| w.cmd(&format!("relink {}", first.display()));
    assert_eq!(relink(&w), "2", "a removed file has no way back (ENOENT)");
    let img = w.path("img");
    w.dump(&img, &[]).assert_success();
    w.wait_original();
    std::fs::write(w.path(protocol::DELETED_FILE), "another file").unwrap();
    w.restore_detached_with(&img, &[]);
    assert_eq!(w.cmd("read"), want);
    assert_eq!(relink(&w), "2", "still none");
    assert!(!first.exists());
    w.kill_restored();
}

/// The fd of the workload's file whose link reads " (deleted)".
fn deleted_fd(w: &Workload) -> i32 {
    let fds = parse_fds(&w.cmd("fds"));
    *fds.iter()
        .find(|(_, t)| t.ends_with(" (deleted)"))
        .unwrap_or_else(|| panic!("no deleted file among {fds:?}"))
        .0
}

/// A deleted file's extended attributes (user and trusted namespaces, a binary value) and
/// inode flags (chattr +d +A: no dump, no access time) come back on its copy with its owner,
/// mode and times, as the process reads them through its fd. Before: the copy had none
/// (`flags=0x0`, no attribute), silently.
#[test]
fn a_deleted_files_extended_attributes_and_inode_flags_come_back() {
    cryo_bin();
    let mut w = Workload::spawn("deleted-file", &["5000", "31"]);
    let fd = deleted_fd(&w);
    let link = std::path::PathBuf::from(format!("/proc/{}/fd/{fd}", w.pid()));
    set_xattr(&link, "user.color", b"blue");
    set_xattr(&link, "trusted.cryo", b"\0\x01\xff");
    // FS_NODUMP_FL | FS_NOATIME_FL.
    set_inode_flags(&link, 0x40 | 0x80);
    let before = w.cmd(&format!("inode {fd}"));
    let flags = inode_flags_in(&before);
    assert!(
        before.contains(" user.color=626c7565") && flags & 0xc0 == 0xc0,
        "{before}"
    );
    w.dump_and_restore();
    assert_eq!(
        w.cmd(&format!("inode {fd}")),
        before,
        "owner, mode, times, flags, attributes"
    );
    assert_eq!(
        w.cmd("read"),
        protocol::len_and_checksum(&protocol::pattern(5000, 31))
    );
    w.kill_restored();
}

/// A deleted file open for writing, made immutable since (chattr +i): its copy gets the flag
/// before its descriptions are opened, which no open for writing then passes (EPERM): refused
/// at dump, naming pid, fd and the attribute, the process left as it was. Before: the dump
/// did not look (the copy came back without the flag, writable).
#[test]
fn a_deleted_file_open_for_writing_and_made_immutable_is_refused() {
    cryo_bin();
    let w = Workload::spawn("deleted-file", &["5000", "32"]);
    let fd = deleted_fd(&w);
    let link = std::path::PathBuf::from(format!("/proc/{}/fd/{fd}", w.pid()));
    set_inode_flags(&link, 0x10);
    let dumped = w.dump(&w.path("img"), &[]);
    set_inode_flags(&link, 0);
    dumped
        .assert_refused()
        .assert_stderr_has_word(&w.pid().to_string())
        .assert_stderr_has_word(&format!("fd {fd}"))
        .assert_stderr_mentions("immutable");
    w.assert_untouched();
}

/// A memfd's owner (chowned to ids of no user here), times, extended attribute and its seals
/// come back: fstat and fgetxattr through its fd read what they read before; a
/// `--leave-running` dump leaves its access time as it was (the dump reads it O_NOATIME).
/// Before: owned by root, the restore's times, no attribute; the dump's read set the access
/// time of the original.
#[test]
fn a_memfds_owner_times_and_extended_attributes_come_back() {
    cryo_bin();
    let mut w = Workload::spawn("events", &[]);
    let link = std::path::PathBuf::from(format!("/proc/{}/fd/44", w.pid()));
    std::os::unix::fs::chown(&link, Some(18944), Some(18945)).unwrap();
    set_xattr(&link, "user.kind", b"cache");
    // Read first: its read moves the access time (the chown moved the change time past it).
    let memfd = w.cmd("memfd");
    let before = w.cmd("inode 44");
    assert!(
        before.starts_with("18944 18945 ") && before.contains(" user.kind=6361636865"),
        "{before}"
    );
    w.dump(&w.path("img-running"), &["--leave-running"])
        .assert_success();
    assert_eq!(w.cmd("inode 44"), before, "left running");
    w.dump_and_restore();
    assert_eq!(w.cmd("inode 44"), before, "owner, mode, times, attributes");
    assert_eq!(w.cmd("memfd"), memfd, "contents and seals");
    w.kill_restored();
}

/// Character devices whose open holds state a reopen by path would not have: /dev/kmsg
/// open for reading (its place in the kernel log, which restarted: every record read again),
/// a misc device (/dev/cpu_dma_latency: its latency request; /dev/net/tun, /dev/fuse...), and
/// /proc/pressure/* open for writing (a PSI trigger lives with the description). Refused,
/// naming pid, fd and the device or file; /dev/kmsg open only for writing and /dev/null come
/// back. Before: reopened by path, the state lost.
#[test]
fn devices_and_pressure_files_with_state_of_their_own_are_refused_naming_them() {
    cryo_bin();
    let mut w = Workload::spawn("socks", &[]);
    for (path, mode, why) in [
        ("/dev/kmsg", "r", "kernel log"),
        ("/dev/cpu_dma_latency", "rw", "misc device"),
        ("/proc/pressure/memory", "rw", "PSI trigger"),
    ] {
        if !std::path::Path::new(path).exists() {
            continue;
        }
        let fd = w.cmd(&format!("open {path} {mode}"));
        assert!(fd.parse::<i32>().is_ok(), "{path}: {fd}");
        w.assert_dump_refused(&fd, why);
        assert_eq!(w.cmd(&format!("close {fd}")), "ok");
    }
    let null = w.cmd("open /dev/null rw");
    let kmsg_writer = w.cmd("open /dev/kmsg w");
    w.dump_and_restore();
    let fds = parse_fds(&w.cmd("fds"));
    assert_eq!(
        fds.get(&null.parse::<i32>().unwrap()).map(String::as_str),
        Some("/dev/null")
    );
    if let Ok(fd) = kmsg_writer.parse::<i32>() {
        assert_eq!(fds.get(&fd).map(String::as_str), Some("/dev/kmsg"));
    }
    w.kill_restored();
}

/// An fd just below the hard RLIMIT_NOFILE: the restore places fds of its own above a
/// process's highest, so where cryo cannot go above that limit (no CAP_SYS_RESOURCE, as on
/// these machines) the dump refuses, naming pid and fd, and the process runs on; where it can
/// (raising its hard limit to fs.nr_open), the process comes back with the fd. Before: dumped,
/// then the restore failed ("place a control pipe: Bad file descriptor") after the kill.
#[test]
fn an_fd_just_below_the_hard_nofile_limit_is_refused_or_comes_back() {
    cryo_bin();
    let mut w = Workload::spawn("socks", &[]);
    let fd: i32 = w.cmd("dup-near-limit 5").parse().unwrap();
    let out = w.dump(&w.path("img"), &[]);
    if out.status.success() {
        w.wait_original();
        w.restore_detached_with(&w.path("img"), &[]);
        let fds = parse_fds(&w.cmd("fds"));
        assert_eq!(
            fds.get(&fd).map(String::as_str),
            Some("/dev/null"),
            "{fds:?}"
        );
        w.kill_restored();
    } else {
        out.assert_refused()
            .assert_stderr_has_word(&w.pid().to_string())
            .assert_stderr_mentions(&format!("fd {fd} is within"));
        w.assert_untouched();
        assert_eq!(w.cmd("pid"), w.pid().to_string());
    }
}

/// A deleted file on a mount made read-only after it was opened (a bind remount: the tmpfs
/// itself stays writable; zdtm ghost_on_rofs): made again through a writable copy of the
/// mount, its fd back on the read-only mount itself, contents and position as before.
#[test]
fn a_deleted_file_on_a_read_only_mount_comes_back_on_that_mount() {
    cryo_bin();
    let mut w = Workload::spawn("deleted-file", &["70000", "17", "ro-mount"]);
    let _unmount = Unmount(w.path("m"));
    let want = protocol::len_and_checksum(&protocol::pattern(70_000, 17));
    let before = (
        w.cmd("read"),
        w.cmd("mount"),
        w.cmd("reopen-rw"),
        w.cmd("stat"),
    );
    assert_eq!(before.0, want);
    assert!(
        before
            .1
            .starts_with(&format!("{} ro,", w.path("m").display())),
        "{}",
        before.1
    );
    assert_eq!(before.2, libc::EROFS.to_string());
    w.dump_and_restore();
    let after = (
        w.cmd("read"),
        w.cmd("mount"),
        w.cmd("reopen-rw"),
        w.cmd("stat"),
    );
    assert_eq!(after, before);
    let fds = parse_fds(&w.cmd("fds"));
    assert!(
        fds.values().any(|t| t.ends_with(" (deleted)")),
        "the file should still be deleted: {fds:?}"
    );
    let left: Vec<_> = std::fs::read_dir(w.path("m")).unwrap().flatten().collect();
    assert!(left.is_empty(), "the restore left {left:?} on the mount");
    w.kill_restored();
}

/// `--ghost-limit` (CRIU's): a deleted file above the limit refuses the dump, naming pid, fd,
/// the file and both sizes, and leaves the process running untouched; at the limit it is
/// copied (and `--pidfile` names the restored process).
#[test]
fn a_deleted_file_above_the_ghost_limit_refuses_the_dump() {
    cryo_bin();
    let mut w = Workload::spawn("deleted-file", &["100000", "13"]);
    let want = protocol::len_and_checksum(&protocol::pattern(100_000, 13));
    assert_eq!(w.cmd("read"), want);
    let out = w.dump(&w.path("over"), &["--ghost-limit", "64K"]);
    out.assert_refused()
        .assert_stderr_mentions(&format!("pid {}", w.pid()))
        .assert_stderr_mentions("holds 100000 bytes, above --ghost-limit 65536");
    w.assert_untouched();
    assert_eq!(w.cmd("pos"), "100000");
    let img = w.path("img");
    w.dump(&img, &["--ghost-limit", "100000"]).assert_success();
    w.wait_original();
    // CRIU's --pidfile too: the root's pid, written once it runs.
    let pidfile = w.path("restored.pid");
    w.restore_detached_with(&img, &["--pidfile", pidfile.to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(&pidfile).unwrap(),
        format!("{}\n", w.pid())
    );
    assert_eq!(w.cmd("read"), want);
    w.kill_restored();
}

/// glibc's tmpfile() makes its file with open(O_TMPFILE): the description's flags keep
/// O_TMPFILE (and O_DIRECTORY, part of it), which no reopen of the file may pass.
#[test]
fn a_file_made_by_o_tmpfile_comes_back_with_its_contents_and_flags() {
    cryo_bin();
    let mut w = Workload::spawn("deleted-file", &["100000", "12", "tmpfile"]);
    let want = protocol::len_and_checksum(&protocol::pattern(100_000, 12));
    assert_eq!(w.cmd("read"), want);
    let flags = w.cmd("flags");
    let tmpfile = format!("{:o}", libc::O_TMPFILE);
    assert!(
        i32::from_str_radix(&flags, 8).unwrap() & libc::O_TMPFILE == libc::O_TMPFILE,
        "F_GETFL {flags} lacks O_TMPFILE {tmpfile}"
    );
    w.dump_and_restore();
    assert_eq!(w.cmd("read"), want);
    assert_eq!(w.cmd("pos"), "100000");
    assert_eq!(w.cmd("flags"), flags, "F_GETFL");
    let fds = parse_fds(&w.cmd("fds"));
    assert!(
        fds.values()
            .any(|t| t.ends_with(" (deleted)") && t.contains("/#")),
        "an unnamed file of the control directory: {fds:?}"
    );
    w.kill_restored();
}

#[test]
fn unread_pipe_data_survives() {
    cryo_bin();
    let mut w = Workload::spawn("pipe", &["40000"]);
    let data = protocol::pattern(40_000, DEFAULT_SEED);
    assert_eq!(
        w.cmd("take 1000"),
        protocol::len_and_checksum(&data[..1000])
    );
    w.dump_and_restore();
    assert_eq!(w.cmd("drain"), protocol::len_and_checksum(&data[1000..]));
    assert_eq!(w.cmd("drain"), protocol::len_and_checksum(&[]));
    let fds = parse_fds(&w.cmd("fds"));
    let pipes: Vec<&String> = fds.values().filter(|t| t.starts_with("pipe:")).collect();
    assert_eq!(pipes.len(), 2, "{fds:?}");
    assert_eq!(pipes[0], pipes[1], "both ends of one pipe: {fds:?}");
    w.kill_restored();
}

#[test]
fn an_empty_pipe_stays_empty_and_works() {
    cryo_bin();
    let mut w = Workload::spawn("pipe", &["0"]);
    w.dump_and_restore();
    assert_eq!(w.cmd("drain"), protocol::len_and_checksum(&[]));
    w.kill_restored();
}

/// The packets sent into the pipe in packet mode: `packets` and `stream` commands of the
/// pipe mode, and the read(2) lengths they give, one packet per read at most. Packets 50
/// and 3900 follow a stream that the kernel merges the first into; 10000 bytes in packet
/// mode are a merged tail and two page packets. The buffers: 7P 5P 4000 250 3900P 1P 1811
/// 4096P 4096P 2P.
const PACKETS: &[&str] = &[
    "packets 7 5",
    "stream 4000",
    "stream 200",
    "packets 50 3900 1",
    "stream 3",
    "packets 10000 2",
];
const PACKET_READS: &str = "7 5 8150 1 5907 4096 2";

/// A packet-mode pipe (O_DIRECT, pipe(7)) with packets and stream bytes queued: each read(2)
/// returns at most one packet, before the dump, in the original after a `--leave-running`
/// dump, and in the restored process, which writes packets still. Before: the restored pipe
/// returned the 18168 bytes in one read.
#[test]
fn a_packet_mode_pipe_comes_back_with_its_packets_one_read_each() {
    cryo_bin();
    let mut w = Workload::spawn("pipe", &["0"]);
    for line in PACKETS {
        assert_eq!(w.cmd(line), "ok", "{line}");
    }
    let img = w.path("left");
    w.dump(&img, &["--leave-running"]).assert_success();
    assert_eq!(
        w.cmd("reads 65536"),
        PACKET_READS,
        "the original's queue as it was"
    );
    w.kill_original();
    w.restore_background(&img);
    assert_eq!(w.cmd("reads 65536"), PACKET_READS, "the restored queue");
    assert_eq!(w.cmd("packets 3 4"), "ok");
    assert_eq!(w.cmd("stream 6"), "ok");
    assert_eq!(w.cmd("reads 65536"), "3 4 6", "packet mode still");
    w.kill_restored();
}

/// POLLHUP on read ends as the process sees it: a FIFO read end opened O_NONBLOCK with no
/// writer and none since shows none (the kernel remembers the writers it saw), one whose
/// writer came and went shows it, one with a writer open shows it once that one closes; an
/// anonymous pipe shows it once its write end is closed, before or after a restore. Before:
/// the FIFO ends that never saw a writer came back with POLLHUP.
#[test]
fn pipe_and_fifo_read_ends_come_back_with_pollhup_as_they_had_it() {
    cryo_bin();
    let mut w = Workload::spawn("pipe", &["0"]);
    for f in ["never", "gone", "held", "both"] {
        assert_eq!(w.cmd(&format!("fifo {f}")), "ok");
    }
    let never = w.cmd("open-fifo never r");
    let gone = w.cmd("open-fifo gone r");
    let gone_w = w.cmd("open-fifo gone w");
    assert_eq!(w.cmd(&format!("close {gone_w}")), "ok");
    let held = w.cmd("open-fifo held r");
    let held_w = w.cmd("open-fifo held w");
    // "both": one end that saw the writer, one opened after it left, 5 bytes queued.
    let saw = w.cmd("open-fifo both r");
    let both_w = w.cmd("open-fifo both w");
    assert_eq!(w.cmd(&format!("put {both_w} 5")), "ok");
    assert_eq!(w.cmd(&format!("close {both_w}")), "ok");
    let after = w.cmd("open-fifo both r");
    let polls = |w: &Workload| {
        [&never, &gone, &held, &held_w, &saw, &after]
            .map(|fd| w.cmd(&format!("poll {fd}")))
            .join(" ")
    };
    // POLLIN 1, POLLOUT 4, POLLHUP 10; the anonymous pipe, empty, its writer open: 0.
    let want = "0 10 0 4 11 1";
    assert_eq!(polls(&w), want, "never gone held held_w saw after");
    assert_eq!(w.cmd("poll"), "0");
    let img = w.path("left");
    w.dump(&img, &["--leave-running"]).assert_success();
    assert_eq!(polls(&w), want, "the original after a --leave-running dump");
    w.kill_original();
    w.restore_background(&img);
    assert_eq!(polls(&w), want, "restored");
    assert_eq!(w.cmd("poll"), "0", "restored: the pipe's writer open");
    assert_eq!(w.cmd(&format!("close {held_w}")), "ok");
    assert_eq!(w.cmd(&format!("poll {held}")), "10", "its writer gone");
    assert_eq!(w.cmd("close-writer"), "ok");
    assert_eq!(w.cmd("poll"), "10", "the pipe's writer closed");
    w.dump_and_restore();
    assert_eq!(w.cmd("poll"), "10", "restored with its writer closed");
    assert_eq!(w.cmd(&format!("poll {never}")), "0");
    assert_eq!(w.cmd(&format!("poll {held}")), "10");
    w.kill_restored();
}

/// A FIFO holding unread bytes keeps its node's access and modification times: the restore's
/// refill writes them again, which moved the modification time to the restore's (before
/// 2026-12-07: probe fifotimes). A FIFO the restore does not write keeps them too.
#[test]
fn a_fifo_with_unread_bytes_keeps_its_times() {
    use std::os::unix::fs::MetadataExt;
    cryo_bin();
    let mut w = Workload::spawn("pipe", &["0"]);
    assert_eq!(w.cmd("fifo timed"), "ok");
    assert_eq!(w.cmd("fifo empty"), "ok");
    let timed = w.cmd("open-fifo timed r");
    let writer = w.cmd("open-fifo timed w");
    assert_eq!(w.cmd(&format!("put {writer} 7")), "ok");
    let _empty = w.cmd("open-fifo empty r");
    let (atime, mtime) = (
        nix::sys::time::TimeSpec::new(1_500_000_000, 123),
        nix::sys::time::TimeSpec::new(1_600_000_000, 456),
    );
    let dir = w.path("");
    let times = |name: &str| {
        let m = std::fs::metadata(dir.join(name)).unwrap();
        (m.atime(), m.atime_nsec(), m.mtime(), m.mtime_nsec())
    };
    for name in ["timed", "empty"] {
        nix::sys::stat::utimensat(
            nix::fcntl::AT_FDCWD,
            &w.path(name),
            &atime,
            &mtime,
            nix::sys::stat::UtimensatFlags::FollowSymlink,
        )
        .unwrap();
    }
    let before = (times("timed"), times("empty"));
    assert_eq!(before.0, (1_500_000_000, 123, 1_600_000_000, 456));
    w.dump_and_restore();
    assert_eq!((times("timed"), times("empty")), before, "the nodes' times");
    assert_eq!(
        w.cmd(&format!("poll {timed}")),
        "1",
        "the bytes are back, a writer open"
    );
    w.kill_restored();
}

/// The ends of one FIFO held apart by a parent and its child: the child's opened before a
/// writer came and went (POLLHUP), the parent's opened after, with no writer since (none).
/// They are made by one process, in that order, and the child's handed down to it. Before:
/// the parent's came back with POLLHUP.
#[test]
fn fifo_ends_held_apart_by_a_parent_and_its_child_keep_their_pollhup() {
    cryo_bin();
    let mut w = Workload::spawn("pipe", &["0"]);
    assert_eq!(w.cmd("fifo shared"), "ok");
    assert_eq!(
        w.cmd("kid-fifo shared"),
        "10",
        "the child's end saw a writer"
    );
    let mine = w.cmd("open-fifo shared r");
    assert_eq!(w.cmd(&format!("poll {mine}")), "0");
    w.dump_and_restore();
    assert_eq!(
        w.cmd(&format!("poll {mine}")),
        "0",
        "restored: the parent's end"
    );
    assert_eq!(w.cmd("kid-poll"), "10", "restored: the child's end");
    w.kill_restored();
}
