//! Open files, deleted files and pipes come back with their contents and offsets.
//!
//! Needs the engine: `cryo` must be built (`cargo build -p cryo`).

use cryo_tests::protocol::{self, DEFAULT_SEED};
use cryo_tests::{control_dir, cryo_bin, parse_fds, write_file, Unmount, Workload};

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
