//! System V shared memory comes back as SysV segments: the restored processes (a parent and
//! its child) attach the segment of the same id and key at the same addresses, read-only
//! where it was, see each other's writes, and shmctl(IPC_STAT) says what it said before
//! (key, id, mode, owner, creator, size, attachments); shmdt and IPC_RMID work. A segment
//! still on the host after the dump is reattached as it is; one that is gone is made again
//! with its id, key, owners and contents; a key held by another segment is refused before
//! anything is made.
//!
//! Needs the engine: `cryo` must be built (`cargo build -p cryo`).

use std::fs;

use cryo_tests::views::{read, write, KID, ME};
use cryo_tests::{cryo_bin, pid_exists, Workload};

const PAGE: usize = 4096;

/// A key of this test process's own: tests run in parallel.
fn key(n: i32) -> i32 {
    0x4300_0000 | ((std::process::id() as i32 & 0xffff) << 4) | n
}

/// `stat SEG` of the workload (or its child with `kid `).
#[track_caller]
fn stat(w: &Workload, who: &str, seg: &str) -> String {
    let reply = w.cmd(&format!("{who}stat {seg}"));
    assert!(!reply.starts_with("err"), "{who}stat {seg}: {reply}");
    reply
}

/// Writes of each process are read by the other, through every view, from value `v` on.
#[track_caller]
fn one_segment(w: &Workload, v: u8) {
    write(w, ME, "a", 10, v);
    assert_eq!(read(w, ME, "ro", 10), v, "a -> ro");
    assert_eq!(read(w, KID, "a2", 10), v, "a -> the child's a2");
    write(w, KID, "a2", 2 * PAGE + 11, v + 1);
    assert_eq!(
        read(w, ME, "a", 2 * PAGE + 11),
        v + 1,
        "the child's a2 -> a"
    );
    assert_eq!(
        read(w, ME, "ro", 2 * PAGE + 11),
        v + 1,
        "the child's a2 -> ro"
    );
    write(w, KID, "d", 12, v + 2);
    assert_eq!(read(w, ME, "d", 12), v + 2, "the child's d -> d");
}

/// The id of the keyed segment, from `stat s`.
fn id_of(stat: &str) -> i32 {
    stat.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("id")
}

/// Whether segment `id` is listed on this host.
fn listed(id: i32) -> bool {
    fs::read_to_string("/proc/sysvipc/shm")
        .expect("/proc/sysvipc/shm")
        .lines()
        .skip(1)
        .any(|l| l.split_whitespace().nth(1) == Some(&id.to_string()))
}

/// The segment of key `k` on this host.
fn by_key(k: i32) -> Option<i32> {
    fs::read_to_string("/proc/sysvipc/shm")
        .expect("/proc/sysvipc/shm")
        .lines()
        .skip(1)
        .map(|l| {
            l.split_whitespace()
                .map(|f| f.parse().unwrap_or(-1))
                .collect::<Vec<i32>>()
        })
        .find(|f| f.first() == Some(&k))
        .map(|f| f[1])
}

/// Removes segment `id` from this host (it has no attachment: it goes at once).
fn remove(id: i32) {
    // SAFETY: IPC_RMID reads no buffer.
    let r = unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) };
    assert_eq!(r, 0, "IPC_RMID {id}: {}", std::io::Error::last_os_error());
}

/// The workload's segments and their stats before any dump; checks the workload means what
/// the test thinks.
fn start(n: i32) -> (Workload, String, String, Vec<String>) {
    cryo_bin();
    let k = key(n);
    // What a failed run of this test may have left.
    if let Some(id) = by_key(k) {
        remove(id);
    }
    let w = Workload::spawn("sysv-shm", &[&k.to_string()]);
    let s = stat(&w, ME, "s");
    // key id mode uid gid cuid cgid size nattch: a and ro here, a, ro and a2 in the child.
    let f: Vec<&str> = s.split_whitespace().collect();
    assert_eq!(f[0], k.to_string(), "{s}");
    assert_eq!(
        &f[2..],
        [
            "640",
            "1001",
            "101",
            "1000",
            "100",
            &(3 * PAGE + 100).to_string(),
            "5"
        ]
    );
    let d = stat(&w, ME, "d");
    assert!(
        d.starts_with("0 ") && d.split_whitespace().nth(2) == Some("1600"),
        "{d}"
    );
    assert_eq!(
        read(&w, ME, "ro", 3 * PAGE + 99),
        read(&w, KID, "a2", 3 * PAGE + 99)
    );
    one_segment(&w, 10);
    let maps = attachments(&w);
    assert_eq!(maps.len(), 7, "{maps:?}");
    assert!(
        maps.iter().any(|l| l.contains(" r--s ")),
        "no read-only attachment: {maps:?}"
    );
    (w, s, d, maps)
}

/// The SysV attachments (start-end perms offset dev inode name) of the workload and its
/// child in /proc/PID/maps.
fn attachments(w: &Workload) -> Vec<String> {
    let kid: i32 = w.cmd("kid pid").parse().expect("child pid");
    let mut lines = Vec::new();
    for pid in [w.pid(), kid] {
        let maps = fs::read_to_string(format!("/proc/{pid}/maps")).expect("maps");
        lines.extend(maps.lines().filter(|l| l.contains("/SYSV")).map(|l| {
            format!(
                "{pid} {}",
                l.split_whitespace().collect::<Vec<_>>().join(" ")
            )
        }));
    }
    lines
}

#[test]
fn segments_come_back_attached_as_segments() {
    let (mut w, s, d, maps) = start(1);
    let id = id_of(&s);
    // Marks left before the dump.
    write(&w, ME, "a", 3 * PAGE + 50, 201);
    write(&w, KID, "d", PAGE - 1, 202);

    // 1. The segment stays on the host when its processes are killed: reattached.
    let img = w.path("img1");
    w.dump_ok(&img);
    assert!(listed(id), "the keyed segment went with its processes");
    w.restore_background(&img);
    assert_eq!(stat(&w, ME, "s"), s, "IPC_STAT after reattaching");
    assert_eq!(stat(&w, KID, "s"), s, "IPC_STAT in the child");
    let d_now = stat(&w, ME, "d");
    assert_eq!(d_now, d, "the destroyed segment");
    assert_eq!(read(&w, ME, "ro", 3 * PAGE + 50), 201);
    assert_eq!(read(&w, ME, "d", PAGE - 1), 202);
    one_segment(&w, 30);
    assert_eq!(attachments(&w), maps, "the attachments in /proc/PID/maps");

    // 2. Detached views: shmdt works on restored attachments.
    assert_eq!(w.cmd("dt ro"), "ok");
    assert_eq!(w.cmd("kid dt a2"), "ok");
    let s = stat(&w, ME, "s");
    assert!(s.ends_with(" 3"), "nattch after two shmdt: {s}");

    // 3. The segment is gone from the host when restored: made again, same everything.
    let img = w.path("img2");
    w.dump_ok(&img);
    remove(id);
    assert!(!listed(id));
    w.restore_background(&img);
    assert_eq!(stat(&w, ME, "s"), s, "IPC_STAT of the segment made again");
    assert_eq!(
        read(&w, ME, "a", 3 * PAGE + 50),
        201,
        "contents of the segment made again"
    );
    assert_eq!(read(&w, KID, "a", 2 * PAGE + 11), 31);
    assert_eq!(stat(&w, ME, "d"), d_now, "the destroyed segment made again");
    write(&w, ME, "a", 7, 77);
    assert_eq!(read(&w, KID, "a", 7), 77, "a -> the child's a");

    // 4. The process removes its segment at shutdown without an error.
    assert_eq!(w.cmd("rmid s"), "ok");
    let gone = stat(&w, KID, "s");
    assert!(
        gone.starts_with(&format!("0 {id} 1640 ")),
        "after IPC_RMID: {gone}"
    );
    w.kill_restored();
}

#[test]
fn a_key_taken_at_restore_is_refused_before_anything_is_made() {
    let (mut w, s, _, _) = start(2);
    let id = id_of(&s);
    let img = w.path("img");
    w.dump_ok(&img);
    remove(id);
    // Another segment takes the key meanwhile.
    // SAFETY: shmget takes no pointers.
    let other = unsafe { libc::shmget(key(2), PAGE, libc::IPC_CREAT | 0o600) };
    assert!(other >= 0, "shmget: {}", std::io::Error::last_os_error());
    let out = w.cryo(&["restore", "-D", img.to_str().unwrap(), "--detach"]);
    remove(other);
    out.assert_refused()
        .assert_stderr_mentions("its key is held here");
    assert!(!listed(id), "a refused restore left the segment behind");
    assert!(!pid_exists(w.pid()), "a refused restore left a process");
    // Free again: the restore goes through.
    w.restore_background(&img);
    assert_eq!(stat(&w, ME, "s"), s);
    assert_eq!(w.cmd("rmid s"), "ok");
    w.kill_restored();
}

#[test]
fn an_attachment_reprotected_in_part_comes_back_in_the_same_pieces_and_may_be_made_writable() {
    let (mut w, s, _, _) = start(3);
    let id = id_of(&s);
    // View a (read-write): its first page read-only, its third none; view ro (SHM_RDONLY)
    // may never be made writable.
    assert_eq!(w.cmd("mprotect a 0 r"), "ok");
    assert_eq!(w.cmd("mprotect a 2 none"), "ok");
    assert_eq!(w.cmd("mprotect ro 0 rw"), "EACCES");
    write(&w, ME, "a", PAGE + 5, 55);
    // The child's view a2 (read-write) made read-only whole (in VMAs the kernel may not
    // merge again).
    for page in 0..4 {
        assert_eq!(w.cmd(&format!("kid mprotect a2 {page} r")), "ok");
    }
    let a2 = w.cmd("kid prots a2");
    assert!(a2.split(',').all(|p| p.contains(":r--s:")), "{a2}");
    let pieces = w.cmd("prots a");
    assert_eq!(
        pieces,
        "0:r--s:00000000,1:rw-s:00001000,2:---s:00002000,3:rw-s:00003000"
    );
    let stat_before = stat(&w, ME, "s");
    let maps = attachments(&w);

    let img = w.path("img");
    w.dump_ok(&img);
    remove(id);
    w.restore_background(&img);

    assert_eq!(w.cmd("prots a"), pieces, "the pieces and their protections");
    assert_eq!(attachments(&w), maps, "the attachments in /proc/PID/maps");
    assert_eq!(
        stat(&w, ME, "s"),
        stat_before,
        "IPC_STAT (nattch counts the pieces)"
    );
    assert_eq!(read(&w, ME, "a", PAGE + 5), 55);
    assert_eq!(read(&w, ME, "a", 0), read(&w, ME, "ro", 0));
    // The read-only piece of a read-write attachment may be made writable again; the
    // SHM_RDONLY attachment may not.
    assert_eq!(w.cmd("mprotect a 0 rw"), "ok");
    write(&w, ME, "a", 3, 33);
    assert_eq!(read(&w, ME, "ro", 3), 33);
    assert_eq!(w.cmd("mprotect ro 0 rw"), "EACCES");
    assert_eq!(w.cmd("kid prots a2"), a2);
    assert_eq!(
        w.cmd("kid mprotect a2 0 rw"),
        "ok",
        "a read-write attachment made read-only may be made writable again"
    );
    assert_eq!(w.cmd("rmid s"), "ok");
    w.kill_restored();
}

#[test]
fn a_private_mapping_of_a_segment_is_refused_naming_it() {
    // The segment mapped again MAP_PRIVATE through /proc/self/map_files: its pages not written
    // since follow the segment. Before: dumped as a deleted file, it came back a copy of it
    // (a write through the attachment no longer showed there).
    let (w, s, _, _) = start(9);
    let at = w.cmd("map-private a");
    let out = w.dump(&w.path("img"), &[]);
    assert!(!out.status.success(), "the dump should be refused\n{out}");
    assert!(
        out.stderr.contains(&format!("pid {}", w.pid()))
            && out.stderr.contains(&format!("the mapping {at}-"))
            && out
                .stderr
                .contains("private mapping of a SysV shared memory segment"),
        "{}",
        out.stderr
    );
    w.assert_untouched();
    assert_eq!(stat(&w, ME, "s"), s, "the segment as it was");
}
