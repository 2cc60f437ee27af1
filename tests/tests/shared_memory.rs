//! Shared memory is ONE object behind every view after a restore: a memfd seen through its fd
//! and two shared mappings, a memfd whose fd was closed mapped twice, and shared anonymous
//! memory a parent and its child share after fork. The restored processes check it
//! themselves: a write through one view is read through the others, in both processes, both
//! ways; the kernel agrees (one inode in /proc/PID/maps).
//!
//! Needs the engine: `cryo` must be built (`cargo build -p cryo`).

use std::fs;
use std::os::fd::AsRawFd;

use cryo_tests::views::{read, write, KID, ME};
use cryo_tests::{cryo_bin, Workload};

const PAGE: usize = 4096;

/// `F_SEAL_*` of the workload's memfds.
const SEAL_SHRINK_GROW: u32 = 0x2 | 0x4;
const SEAL_FUTURE_WRITE: u32 = 0x10;

/// Writes through each view and reads through every other, in this process and the child,
/// with values from `v` on (so values of an earlier round cannot pass).
#[track_caller]
fn views_are_one(w: &Workload, v: u8) {
    // The memfd: fd, a (whole), b (from page 1: b[x] is a[PAGE + x]).
    write(w, ME, "a", PAGE + 5, v);
    assert_eq!(read(w, ME, "fd", PAGE + 5), v, "a -> fd");
    assert_eq!(read(w, ME, "b", 5), v, "a -> b");
    assert_eq!(read(w, KID, "a", PAGE + 5), v, "a -> the child's a");
    write(w, ME, "fd", PAGE + 6, v + 1);
    assert_eq!(read(w, ME, "a", PAGE + 6), v + 1, "fd -> a");
    assert_eq!(read(w, ME, "b", 6), v + 1, "fd -> b");
    assert_eq!(read(w, KID, "b", 6), v + 1, "fd -> the child's b");
    write(w, KID, "b", 7, v + 2);
    assert_eq!(read(w, ME, "fd", PAGE + 7), v + 2, "the child's b -> fd");
    assert_eq!(read(w, ME, "a", PAGE + 7), v + 2, "the child's b -> a");
    // The private mapping sees the file where it has no page of its own.
    write(w, ME, "fd", 9, v + 3);
    assert_eq!(read(w, ME, "p", 9), v + 3, "fd -> p (page not copied)");
    // The memfd without an fd.
    write(w, ME, "o1", 10, v + 4);
    assert_eq!(read(w, ME, "o2", 10), v + 4, "o1 -> o2");
    assert_eq!(read(w, KID, "o2", 10), v + 4, "o1 -> the child's o2");
    write(w, KID, "o1", 11, v + 5);
    assert_eq!(read(w, ME, "o2", 11), v + 5, "the child's o1 -> o2");
    // Shared anonymous memory, parent and child.
    write(w, ME, "anon", 20, v + 6);
    assert_eq!(read(w, KID, "anon", 20), v + 6, "anon -> the child's anon");
    write(w, KID, "anon", 3 * PAGE + 21, v + 7);
    assert_eq!(
        read(w, ME, "anon", 3 * PAGE + 21),
        v + 7,
        "the child's anon -> anon"
    );
}

/// Values left in every object before a dump, checked after the restore.
const MARKS: [(&str, usize, u8); 4] = [
    ("fd", 2 * PAGE + 1, 201),
    ("o1", PAGE + 1, 202),
    ("anon", 2 * PAGE + 1, 203),
    ("p", 3 * PAGE + 1, 204),
];

fn mark(w: &Workload) {
    for (view, off, byte) in MARKS {
        write(w, ME, view, off, byte);
    }
}

#[track_caller]
fn marks_kept(w: &Workload) {
    for (view, off, byte) in MARKS {
        assert_eq!(read(w, ME, view, off), byte, "{view} at {off}");
    }
    assert_eq!(read(w, ME, "a", 2 * PAGE + 1), 201, "mark through a");
    assert_eq!(
        read(w, KID, "o2", PAGE + 1),
        202,
        "mark through the child's o2"
    );
    assert_eq!(read(w, KID, "anon", 2 * PAGE + 1), 203, "mark in the child");
    // The private page written before the first dump, and the pattern elsewhere.
    assert_eq!(read(w, ME, "p", 3 * PAGE), 0xee, "private copy kept");
}

/// The (inode, name) of the mapping that starts at `addr` in /proc/PID/maps.
fn mapping(pid: i32, addr: &str) -> (u64, String) {
    let start = addr.trim_start_matches("0x");
    let maps = fs::read_to_string(format!("/proc/{pid}/maps")).expect("maps");
    let line = maps
        .lines()
        .find(|l| l.split('-').next() == Some(start))
        .unwrap_or_else(|| panic!("no mapping at {addr} in pid {pid}:\n{maps}"));
    let f: Vec<&str> = line.split_whitespace().collect();
    (f[4].parse().expect("inode"), f[5..].join(" "))
}

/// The kernel agrees: one inode behind the views, in both processes.
#[track_caller]
fn one_inode_each(w: &Workload) {
    let kid: i32 = w.cmd("kid pid").parse().expect("child pid");
    let pid = w.pid();
    let memfd_ino = {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(format!("/proc/{pid}/fd/60"))
            .expect("fd 60")
            .ino()
    };
    for (view, name) in [
        ("a", "/memfd:cryo-shm (deleted)"),
        ("b", "/memfd:cryo-shm (deleted)"),
        ("o1", "/memfd:cryo-orphan (deleted)"),
        ("o2", "/memfd:cryo-orphan (deleted)"),
        ("anon", "/dev/zero (deleted)"),
    ] {
        let mine = mapping(pid, &w.cmd(&format!("addr {view}")));
        let theirs = mapping(kid, &w.cmd(&format!("kid addr {view}")));
        assert_eq!(mine.1, name, "{view}");
        assert_eq!(mine, theirs, "{view}: the child maps another object");
        if view == "a" || view == "b" {
            assert_eq!(mine.0, memfd_ino, "{view} is not the memfd of fd 60");
        }
    }
    let o1 = mapping(pid, &w.cmd("addr o1")).0;
    assert_ne!(o1, memfd_ino);
}

/// The seals of the memfd whose fd was closed, read through /proc/PID/map_files.
fn orphan_seals(w: &Workload) -> u32 {
    let addr = w.cmd("addr o1");
    let start = usize::from_str_radix(addr.trim_start_matches("0x"), 16).expect("address");
    let link = format!(
        "/proc/{}/map_files/{start:x}-{:x}",
        w.pid(),
        start + 2 * PAGE
    );
    let f = fs::File::open(&link).unwrap_or_else(|e| panic!("{link}: {e}"));
    // SAFETY: F_GET_SEALS takes an fd we hold, no pointers.
    let seals = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GET_SEALS) };
    assert!(
        seals >= 0,
        "F_GET_SEALS: {}",
        std::io::Error::last_os_error()
    );
    seals as u32
}

#[test]
fn memfds_and_shared_anonymous_memory_stay_one_object() {
    cryo_bin();
    let mut w = Workload::spawn("shared-memory", &[]);
    // The workload's views mean what the test thinks, before any dump.
    views_are_one(&w, 10);
    one_inode_each(&w);
    mark(&w);
    let seals = w.cmd("seals");
    assert_eq!(seals, SEAL_SHRINK_GROW.to_string());
    assert_eq!(w.cmd("size"), (4 * PAGE).to_string());
    assert_ne!(orphan_seals(&w) & SEAL_FUTURE_WRITE, 0);

    for generation in 1..=2u8 {
        let img = w.path(&format!("img{generation}"));
        w.dump_ok(&img);
        w.restore_background(&img);
        marks_kept(&w);
        assert_eq!(w.cmd("seals"), seals, "generation {generation}");
        assert_eq!(w.cmd("size"), (4 * PAGE).to_string());
        assert_ne!(
            orphan_seals(&w) & SEAL_FUTURE_WRITE,
            0,
            "the closed memfd lost F_SEAL_FUTURE_WRITE"
        );
        one_inode_each(&w);
        views_are_one(&w, 20 * generation + 30);
    }
    w.kill_restored();
}

/// A memfd holding a script runs with execveat after the restore as before: memfd_create's
/// own read-write description counts as no writer (a reopen for writing would, and the exec
/// would fail with ETXTBSY). Its read-only reopen stays read-only.
#[test]
fn a_memfd_made_by_memfd_create_stays_executable_after_a_restore() {
    cryo_bin();
    let mut w = Workload::spawn("held", &["memfd-script"]);
    assert_eq!(w.cmd("run"), "status 0", "execveat before the dump");
    let flags = w.cmd("flags");
    let reopened = w.cmd("flags-of 49");
    w.dump_and_restore();
    assert_eq!(w.cmd("run"), "status 0", "execveat after the restore");
    assert_eq!(w.cmd("flags"), flags, "F_GETFL of the memfd");
    assert_eq!(
        w.cmd("flags-of 49"),
        reopened,
        "F_GETFL of its read-only reopen"
    );
    w.kill_restored();
}
