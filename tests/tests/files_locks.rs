//! File locks, leases and fd signal owners come back held by the restored process: another
//! process finds each lock held by the restored pid (F_GETLK, F_OFD_GETLK, flock), the
//! restored process finds its lease (F_GETLEASE), and its pipe still signals it. sqlite with
//! an open write transaction keeps other writers out across a dump and restore.
//!
//! Needs the engine: `cryo` must be built (`cargo build -p cryo`).

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::Command;

use cryo_tests::{control_dir, cryo_bin, set_inode_flags, write_file, Workload};

const F_OFD_GETLK: i32 = 36;

/// Who holds a lock of `cmd` (F_GETLK, F_OFD_GETLK) conflicting with a write lock on
/// `start..start+len` of `path`: (type, pid, start, len), type F_UNLCK if none.
fn conflicting(path: &Path, cmd: i32, start: i64, len: i64) -> (i32, i32, i64, i64) {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    // SAFETY: flock is plain data; zeroed is valid.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as i16;
    fl.l_whence = libc::SEEK_SET as i16;
    fl.l_start = start;
    fl.l_len = len;
    // SAFETY: fl is a valid struct flock the kernel reads and rewrites.
    let r = unsafe { libc::fcntl(file.as_raw_fd(), cmd, &mut fl as *mut libc::flock) };
    assert_eq!(r, 0, "fcntl: {}", std::io::Error::last_os_error());
    (fl.l_type as i32, fl.l_pid, fl.l_start, fl.l_len)
}

/// Whether flock(LOCK_EX|LOCK_NB) on `path` is refused with EWOULDBLOCK.
fn flock_refused(path: &Path) -> bool {
    let file = OpenOptions::new().read(true).open(path).unwrap();
    // SAFETY: flock takes an fd and flags.
    let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EWOULDBLOCK)
}

/// A workload holding a lock of `kind` on a fresh 4 KiB file, dumped and restored.
fn restored_with_lock(kind: &str) -> (Workload, std::path::PathBuf) {
    cryo_bin();
    let dir = control_dir();
    let path = dir.path().join("locked");
    write_file(&path, &[7u8; 4096]);
    let mut w = Workload::spawn_in(dir, "locks", &[kind, path.to_str().unwrap()]);
    w.dump_and_restore();
    assert_eq!(w.cmd("pid"), w.pid().to_string());
    (w, path)
}

#[test]
fn a_posix_lock_is_held_by_the_restored_process() {
    let (mut w, path) = restored_with_lock("posix");
    let pid = w.pid();
    assert_eq!(
        conflicting(&path, libc::F_GETLK, 0, 50),
        (libc::F_WRLCK, pid, 5, 10),
        "the write lock on bytes 5-14"
    );
    assert_eq!(
        conflicting(&path, libc::F_GETLK, 200, 1),
        (libc::F_RDLCK, pid, 100, 0),
        "the read lock from byte 100 to the end"
    );
    assert_eq!(conflicting(&path, libc::F_GETLK, 20, 10).0, libc::F_UNLCK);
    w.kill_restored();
}

#[test]
fn an_ofd_lock_is_held_by_the_restored_description() {
    let (mut w, path) = restored_with_lock("ofd");
    assert_eq!(
        conflicting(&path, F_OFD_GETLK, 0, 1000),
        (libc::F_WRLCK, -1, 0, 100)
    );
    w.kill_restored();
    assert_eq!(conflicting(&path, F_OFD_GETLK, 0, 1000).0, libc::F_UNLCK);
}

#[test]
fn a_flock_is_held_by_the_restored_description() {
    let (mut w, path) = restored_with_lock("flock");
    assert!(flock_refused(&path), "another process took the flock");
    w.kill_restored();
    assert!(!flock_refused(&path), "the flock outlived the process");
}

#[test]
fn a_lease_is_held_by_the_restored_process() {
    let (mut w, _path) = restored_with_lock("lease");
    assert_eq!(w.cmd("lease"), libc::F_RDLCK.to_string());
    w.kill_restored();
}

#[test]
fn the_signal_owner_of_a_pipe_is_restored_and_signalled() {
    cryo_bin();
    let mut w = Workload::spawn("sigio", &[]);
    let fd = w.cmd("fd");
    let owner = w.cmd("owner");
    assert_eq!(owner, format!("1 {} rtmin+4", w.pid()));
    assert_eq!(w.cmd("poke"), format!("1 fd {fd}"));
    w.dump_and_restore();
    assert_eq!(w.cmd("owner"), owner);
    assert_eq!(
        w.cmd("poke"),
        format!("2 fd {fd}"),
        "the signal after restore"
    );
    w.kill_restored();
}

/// Runs one statement against `db` from a second python3 process (no busy timeout).
fn other_writer(db: &Path, sql: &str) -> String {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys\n\
             db=sqlite3.connect(sys.argv[1],isolation_level=None,timeout=0)\n\
             try:\n print('ok', db.execute(sys.argv[2]).fetchall())\n\
             except Exception as e:\n print('err', e)",
            db.to_str().unwrap(),
            sql,
        ])
        .output()
        .expect("python3");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn sqlite_keeps_its_write_transaction_across_a_restore() {
    cryo_bin();
    let dir = control_dir();
    let db = dir.path().join("test.db");
    let mut w = Workload::spawn_in(dir, "sqlite", &[db.to_str().unwrap()]);
    assert_eq!(w.cmd("sql CREATE TABLE t(x)"), "ok []");
    assert_eq!(w.cmd("sql INSERT INTO t VALUES(1)"), "ok []");
    assert_eq!(w.cmd("sql BEGIN IMMEDIATE"), "ok []");
    assert_eq!(w.cmd("sql INSERT INTO t VALUES(2)"), "ok []");
    assert_eq!(
        other_writer(&db, "INSERT INTO t VALUES(99)"),
        "err database is locked"
    );
    w.dump_and_restore();
    assert_eq!(
        other_writer(&db, "INSERT INTO t VALUES(99)"),
        "err database is locked",
        "another writer got in while the restored transaction is open"
    );
    assert_eq!(w.cmd("sql COMMIT"), "ok []");
    assert_eq!(other_writer(&db, "INSERT INTO t VALUES(3)"), "ok []");
    assert_eq!(
        w.cmd("sql SELECT x FROM t ORDER BY x"),
        "ok [(1,), (2,), (3,)]"
    );
    assert_eq!(other_writer(&db, "PRAGMA integrity_check"), "ok [('ok',)]");
    w.kill_restored();
}

/// The `lock:` lines of the fdinfo of every fd of `pid` that show a lease being broken.
fn breaking_leases(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.unwrap().path()).ok())
        .map(|text| text.matches("LEASE  BREAKING").count())
        .sum()
}

#[test]
fn leases_being_broken_come_back_being_broken_without_a_second_signal() {
    cryo_bin();
    let dir = control_dir();
    let path = dir.path().join("leased");
    let mut w = Workload::spawn_in(dir, "locks", &["breaking", path.to_str().unwrap()]);
    // A read lease being given up, a write lease being downgraded, a write lease (on a
    // read-only fd) being given up: F_GETLEASE answers what they are being broken to.
    assert_eq!(w.cmd("lease"), "2 0 2");
    let signals = w.cmd("breaks");
    assert!(signals.starts_with("3 fd "), "{signals}");
    w.dump_and_restore();
    assert_eq!(w.cmd("lease"), "2 0 2", "the leases after the restore");
    assert_eq!(
        breaking_leases(w.pid()),
        3,
        "fdinfo shows the three being broken"
    );
    assert_eq!(w.cmd("breaks"), signals, "no second break signal");
    assert_eq!(w.cmd("owner"), w.pid().to_string(), "the signal owner");
    // The lease on the read-only PATH.2 is still a write lease: an open for reading conflicts
    // with it (and not with PATH.0's read lease).
    let read_nonblock = |n: &str| {
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path.with_extension(n))
            .map(drop)
            .map_err(|e| e.raw_os_error())
    };
    assert_eq!(read_nonblock("0"), Ok(()));
    assert_eq!(read_nonblock("2"), Err(Some(libc::EWOULDBLOCK)));
    // An open for writing waits for the downgraded lease to go: the holder releases it.
    let opener = {
        let path = path.with_extension("1");
        std::thread::spawn(move || OpenOptions::new().write(true).open(path).map(drop))
    };
    assert_eq!(w.cmd("release"), "released");
    opener.join().unwrap().expect("the open after the release");
    assert_eq!(breaking_leases(w.pid()), 0);
    w.kill_restored();
}

#[test]
fn a_signal_owner_outside_the_dump_is_refused() {
    cryo_bin();
    let w = Workload::spawn("sigio", &["parent"]);
    let fd = w.cmd("fd");
    let out = w.dump(&w.path("img"), &[]);
    out.assert_refused()
        .assert_stderr_mentions(&format!("pid {} fd {fd}", w.pid()))
        .assert_stderr_mentions("signal owner");
    w.assert_untouched();
}

#[test]
fn a_lock_on_a_description_also_held_outside_the_dump_is_refused() {
    cryo_bin();
    for (kind, words) in [("flock", "flock write lock"), ("ofd", "OFD write lock")] {
        let dir = control_dir();
        let path = dir.path().join("locked");
        write_file(&path, &[7u8; 4096]);
        let w = Workload::spawn_in(dir, "locks", &[kind, path.to_str().unwrap()]);
        // The fd on the locked file, and a duplicate of its description in the test (a
        // process outside the dump), as a forked helper or a passed fd would hold it.
        let fd: i32 = std::fs::read_dir(format!("/proc/{}/fd", w.pid()))
            .unwrap()
            .flatten()
            .find(|e| std::fs::read_link(e.path()).is_ok_and(|l| l == path))
            .and_then(|e| e.file_name().to_str()?.parse().ok())
            .expect("the workload's fd on the locked file");
        // SAFETY: pidfd_open and pidfd_getfd take integers; the fds they return are ours.
        let held = unsafe {
            let pidfd = libc::syscall(libc::SYS_pidfd_open, w.pid(), 0) as i32;
            assert!(pidfd >= 0, "pidfd_open");
            let dup = libc::syscall(libc::SYS_pidfd_getfd, pidfd, fd, 0) as i32;
            libc::close(pidfd);
            assert!(dup >= 0, "pidfd_getfd");
            dup
        };
        let me = std::process::id();
        w.dump(&w.path("img"), &[])
            .assert_refused()
            .assert_stderr_mentions(&format!("pid {} fd {fd}", w.pid()))
            .assert_stderr_mentions(words)
            .assert_stderr_mentions(&format!("also held by pid {me} (fd {held})"));
        w.assert_untouched();
        // SAFETY: closes the duplicate taken above.
        unsafe { libc::close(held) };
        assert!(
            flock_refused(&path) || kind == "ofd",
            "{kind}: the lock is still held"
        );
    }
}

/// A file open for writing made immutable since (chattr +i), or append-only (+a) with the fd
/// not O_APPEND: the restore could not open it again (EPERM, even as root). Refused at dump,
/// naming pid and the attribute, the process left running as it was. Before: dumped, the
/// process killed, then the restore failed ("open: Operation not permitted").
#[test]
fn a_write_fd_on_a_file_made_immutable_or_append_only_since_is_refused_at_dump() {
    cryo_bin();
    let dir = control_dir();
    let path = dir.path().join("locked");
    write_file(&path, &[7u8; 4096]);
    let w = Workload::spawn_in(dir, "locks", &["flock", path.to_str().unwrap()]);
    assert_eq!(w.cmd("pid"), w.pid().to_string());
    for (flags, attribute) in [(0x10, "immutable"), (0x20, "append-only")] {
        set_inode_flags(&path, flags);
        let dumped = w.dump(&w.path("img"), &[]);
        set_inode_flags(&path, 0);
        dumped
            .assert_refused()
            .assert_stderr_has_word(&w.pid().to_string())
            .assert_stderr_mentions(attribute);
        w.assert_untouched();
    }
    assert!(flock_refused(&path), "its lock still held");
}
