//! Working and root directories and /proc fds: a chrooted process comes back in the same
//! chroot and working directory; a removed working directory comes back removed (fds on /proc:
//! files_proc.rs).
//!
//! Needs the engine: `cryo` must be built (`cargo build -p cryo`).

use cryo_tests::{
    control_dir, cryo_bin, inode_flags_in, set_inode_flags, set_xattr, Unmount, Workload,
};

#[test]
fn a_chrooted_process_comes_back_in_its_chroot() {
    cryo_bin();
    let dir = control_dir();
    let jail = dir.path().to_path_buf();
    let mut w = Workload::spawn_in(dir, "places", &["chroot", jail.to_str().unwrap()]);
    assert_eq!(w.cmd("where"), "/inner");
    assert_eq!(w.cmd("root"), "true");
    w.dump_and_restore();
    assert_eq!(
        w.cmd("where"),
        "/inner",
        "the working directory inside the chroot"
    );
    assert_eq!(w.cmd("root"), "true", "the root is the chroot");
    w.kill_restored();
}

#[test]
fn a_removed_working_directory_comes_back_removed_with_its_mode_and_times() {
    cryo_bin();
    let dir = control_dir();
    let base = dir.path().join("base");
    std::fs::create_dir(&base).unwrap();
    let mut w = Workload::spawn_in(dir, "places", &["deleted-cwd", base.to_str().unwrap()]);
    let cwd = w.cmd("cwd");
    assert!(cwd.contains("/gone (deleted) "), "{cwd}");
    let create = w.cmd("create-here");
    assert_eq!(create, format!("errno {}", libc::ENOENT));
    w.dump_and_restore();
    assert_eq!(
        w.cmd("cwd"),
        cwd,
        "the same name, removed, mode, no link, mtime"
    );
    assert_eq!(w.cmd("create-here"), create, "nothing can be made in it");
    w.kill_restored();
}

/// A removed working directory the process also holds open: made again once, for the fd, and
/// entered, so the two are one directory as before.
#[test]
fn a_removed_working_directory_also_held_open_comes_back_one_with_its_fd() {
    cryo_bin();
    let dir = control_dir();
    let base = dir.path().join("base");
    std::fs::create_dir(&base).unwrap();
    let mut w = Workload::spawn_in(dir, "places", &["deleted-cwd-held", base.to_str().unwrap()]);
    let cwd = w.cmd("cwd");
    assert_eq!(w.cmd("same-as-41"), "true");
    w.dump_and_restore();
    assert_eq!(
        w.cmd("same-as-41"),
        "true",
        "the fd and the working directory"
    );
    assert_eq!(
        w.cmd("cwd"),
        cwd,
        "the same name, removed, mode, no link, mtime"
    );
    assert_eq!(w.cmd("create-here"), format!("errno {}", libc::ENOENT));
    w.kill_restored();
}

/// A removed directory's extended attributes and inode flags (chattr +A) come back, for one
/// held open (the fd reads them) and for a working directory only (an open of "." reads
/// them). Before: the directory made again had none.
#[test]
fn a_removed_directorys_extended_attributes_and_flags_come_back() {
    cryo_bin();
    for (how, link, probe) in [
        ("deleted-cwd-held", "fd/41", "inode 41"),
        ("deleted-cwd", "cwd", "cwd-inode"),
    ] {
        let dir = control_dir();
        let base = dir.path().join("base");
        std::fs::create_dir(&base).unwrap();
        let mut w = Workload::spawn_in(dir, "places", &[how, base.to_str().unwrap()]);
        let link = std::path::PathBuf::from(format!("/proc/{}/{link}", w.pid()));
        set_xattr(&link, "user.owner-app", b"cache");
        // FS_NOATIME_FL.
        set_inode_flags(&link, 0x80);
        let before = w.cmd(probe);
        let flags = inode_flags_in(&before);
        assert!(
            flags & 0x80 != 0 && before.contains(" user.owner-app="),
            "{how}: {before}"
        );
        w.dump_and_restore();
        assert_eq!(
            w.cmd(probe),
            before,
            "{how}: owner, mode, times, flags, attributes"
        );
        w.kill_restored();
    }
}

/// A removed working directory, or a removed directory held open, on a mount made read-only
/// since: a restore makes it again by its name, which the mount does not allow: refused at
/// dump, naming it, and the process runs on.
#[test]
fn a_removed_directory_on_a_read_only_mount_is_refused() {
    cryo_bin();
    for (how, needle) in [
        (
            "deleted-cwd-ro",
            "its working directory was removed, on a read-only mount",
        ),
        (
            "deleted-dir-fd-ro",
            "fd 41: removed directory on a read-only mount",
        ),
        (
            "deleted-fifo-ro",
            "fd 41: deleted FIFO on a read-only mount",
        ),
        (
            "deleted-symlink-ro",
            "fd 41: removed symbolic link on a read-only mount",
        ),
    ] {
        let dir = control_dir();
        let base = dir.path().join("base");
        std::fs::create_dir(&base).unwrap();
        let unmount = Unmount(base.clone());
        let w = Workload::spawn_in(dir, "places", &[how, base.to_str().unwrap()]);
        let out = w.dump(&w.path("img"), &[]);
        assert!(!out.status.success(), "{how}: {out:?}");
        out.assert_refused().assert_stderr_mentions(needle);
        w.assert_untouched();
        // Unmounted before the workload's directory is removed (with it).
        drop(unmount);
        drop(w);
    }
}

/// A removed working directory shared with a child, or held open by another process: a
/// restore makes each process's again on its own (the fd's too), so they would no longer be
/// one directory: refused at dump, naming the pid, and the process runs on.
#[test]
fn a_removed_working_directory_shared_or_held_open_elsewhere_is_refused() {
    cryo_bin();
    for (how, needle) in [
        ("deleted-cwd-child", "'s too"),
        (
            "deleted-cwd-held-by-child",
            "another process of the dump (pid",
        ),
    ] {
        let dir = control_dir();
        let base = dir.path().join("base");
        std::fs::create_dir(&base).unwrap();
        let w = Workload::spawn_in(dir, "places", &[how, base.to_str().unwrap()]);
        let cwd = w.cmd("cwd");
        let out = w.dump(&w.path("img"), &[]);
        out.assert_refused()
            .assert_stderr_mentions("its working directory")
            .assert_stderr_mentions(needle);
        w.assert_untouched();
        assert_eq!(w.cmd("cwd"), cwd, "{how}: the process runs on");
    }
}

/// A working directory in the /proc directory of a process that has gone (zdtm's
/// unhashed_proc) comes back the same: readlink reads "/proc/N (deleted)", getcwd fails
/// ENOENT, nothing can be made in it (a helper with pid N exits at once, its directory is
/// entered and it is reaped). Before 2026-12-03: dumped, killed, and the restore failed
/// (`chdir /proc/N: No such file or directory`); then refused at dump.
#[test]
fn a_working_directory_in_a_gone_processs_proc_directory_comes_back_unhashed() {
    cryo_bin();
    let mut w = Workload::spawn("places", &["proc-cwd", "/"]);
    let cwd = w.cmd("cwd");
    let link = cwd.split(' ').next().unwrap().to_string();
    assert!(link.starts_with("/proc/"), "{cwd}");
    assert_eq!(cwd.split(' ').nth(1), Some("(deleted)"), "{cwd}");
    let (where_, create) = (w.cmd("where"), w.cmd("create-here"));
    assert!(where_.contains("No such file"), "getcwd: {where_}");
    w.dump(&w.path("left"), &["--leave-running"])
        .assert_success();
    assert_eq!(w.cmd("cwd").split(' ').next(), Some(link.as_str()));
    let pending = (w.status("ShdPnd"), w.status("SigPnd"));
    w.dump_and_restore();
    assert_eq!(
        (w.status("ShdPnd"), w.status("SigPnd")),
        pending,
        "no SIGCHLD of the helper"
    );
    let back = w.cmd("cwd");
    assert_eq!(
        back.split(' ').take(2).collect::<Vec<_>>(),
        [link.as_str(), "(deleted)"],
        "{back}"
    );
    assert_eq!(w.cmd("where"), where_);
    assert_eq!(w.cmd("create-here"), create);
    let n = link.trim_start_matches("/proc/");
    assert!(
        !std::path::Path::new(&format!("/proc/{n}")).exists(),
        "the helper is gone"
    );
    w.kill_restored();
}

/// An fd on /proc/N of a child N killed and reaped (zdtm's remap_dead_pid_root): restored as
/// an fd on the directory of a process that has ended, as the original's: its link reads
/// "/proc/N (deleted)", with its flags, and nothing can be opened below it.
#[test]
fn an_fd_on_a_gone_processs_proc_directory_comes_back_unhashed() {
    cryo_bin();
    let mut w = Workload::spawn("places", &["proc-fd", "/"]);
    let before = w.cmd("fd41");
    let link = before.split(' ').next().unwrap().to_string();
    assert!(link.starts_with("/proc/"), "{before}");
    assert_eq!(before.split(' ').nth(1), Some("(deleted)"), "{before}");
    assert!(before.contains(" errno "), "openat below it: {before}");
    w.dump(&w.path("left"), &["--leave-running"])
        .assert_success();
    assert_eq!(w.cmd("fd41"), before);
    let pending = (w.status("ShdPnd"), w.status("SigPnd"));
    w.dump_and_restore();
    assert_eq!(w.cmd("fd41"), before);
    assert_eq!(
        (w.status("ShdPnd"), w.status("SigPnd")),
        pending,
        "no SIGCHLD of the helper"
    );
    let n = link.trim_start_matches("/proc/");
    assert!(
        !std::path::Path::new(&format!("/proc/{n}")).exists(),
        "the helper is gone"
    );
    w.kill_restored();
}
