//! Memory a parent shares copy-on-write with its forked children stays shared after a
//! restore: the tree's proportional set size (the sum of Pss) is what it was before the
//! dump, and every process still sees its own memory (the parent's data, and its own writes
//! where a worker wrote), checked by the processes themselves.
//!
//! Needs the engine: `cryo` must be built (`cargo build -p cryo`).

use std::time::Instant;

use cryo_tests::{cryo_bin, Reaper, Workload};

/// The Pss of `pid` in KiB, from /proc/PID/smaps_rollup.
fn pss_kib(pid: i32) -> u64 {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .unwrap_or_else(|e| panic!("smaps_rollup of {pid}: {e}"));
    rollup
        .lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no Pss in smaps_rollup of {pid}:\n{rollup}"))
}

/// The tree's pids: the workload and its workers.
fn tree(w: &Workload) -> Vec<i32> {
    let mut pids = vec![w.pid()];
    pids.extend(w.kids());
    pids
}

#[test]
fn a_forked_servers_copy_on_write_memory_stays_shared() {
    cryo_bin();
    const MIB: u64 = 256;
    let mut w = Workload::spawn("cow-tree", &[&MIB.to_string(), "8"]);
    let pids = tree(&w);
    let _reaper = Reaper(pids[1..].to_vec());
    assert_eq!(w.cmd("check"), "ok");
    let before: u64 = pids.iter().map(|&p| pss_kib(p)).sum();
    // One copy of the region, shared by nine processes, not nine.
    assert!(
        before < 2 * MIB * 1024,
        "the workload does not share its memory: Pss {before} KiB"
    );

    let img = w.path("img");
    let dumped = Instant::now();
    w.dump_ok(&img);
    let dump_ms = dumped.elapsed().as_secs_f64() * 1e3;
    let restored = Instant::now();
    w.restore_background(&img);
    let restore_ms = restored.elapsed().as_secs_f64() * 1e3;
    assert_eq!(tree(&w), pids, "the workers came back with other pids");
    assert_eq!(w.cmd("check"), "ok");
    let after: u64 = pids.iter().map(|&p| pss_kib(p)).sum();
    eprintln!(
        "cow tree of {MIB} MiB x 9: Pss {before} KiB before, {after} KiB after; dump {dump_ms:.0} ms, \
         restore {restore_ms:.0} ms"
    );
    let margin = (before / 50).max(4 << 10);
    assert!(
        after <= before + margin,
        "memory no longer shared after restore: Pss {before} KiB before, {after} KiB after"
    );
    // And still copy-on-write: a worker's write stays its own (checked again after the
    // workers ran a check each, which writes nothing).
    assert_eq!(w.cmd("check"), "ok");
    w.kill_restored();
}

/// Entries of /proc/PID/pagemap for `pages` pages from `addr` (root sees the frame numbers).
fn pagemap(pid: i32, addr: u64, pages: u64) -> Vec<u64> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::open(format!("/proc/{pid}/pagemap"))
        .unwrap_or_else(|e| panic!("pagemap of {pid}: {e}"));
    let mut buf = vec![0u8; pages as usize * 8];
    file.read_exact_at(&mut buf, addr / 4096 * 8)
        .unwrap_or_else(|e| panic!("pagemap of {pid} at {addr:#x}: {e}"));
    buf.chunks_exact(8)
        .map(|c| u64::from_ne_bytes(c.try_into().expect("8 bytes")))
        .collect()
}

const PRESENT: u64 = 1 << 63;
const FILE_OR_SHARED: u64 = 1 << 61;
const PFN: u64 = (1 << 55) - 1;

/// Whether pagemap entry `e` is a private (anonymous) copy in memory.
fn is_copy(e: u64) -> bool {
    e & PRESENT != 0 && e & FILE_OR_SHARED == 0
}

/// Whether two pagemap entries are the same anonymous copy: one frame for both.
fn same_copy(a: u64, b: u64) -> bool {
    is_copy(a) && is_copy(b) && a & PFN == b & PFN && a & PFN != 0
}

/// The bounds of the [stack] VMA of `pid`.
fn stack_of(pid: i32) -> (u64, u64) {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("maps");
    let line = maps
        .lines()
        .find(|l| l.ends_with("[stack]"))
        .unwrap_or_else(|| panic!("no [stack] in the maps of {pid}:\n{maps}"));
    let (start, end) = line
        .split(' ')
        .next()
        .and_then(|r| r.split_once('-'))
        .expect("a range");
    let hex = |s: &str| u64::from_str_radix(s, 16).expect("hex");
    (hex(start), hex(end))
}

/// How many pages of the stack `parent` and `child` share (one frame for both).
fn shared_stack_pages(parent: i32, child: i32) -> usize {
    let (start, end) = stack_of(parent);
    assert_eq!(stack_of(child), (start, end), "the stacks differ in bounds");
    let pages = (end - start) / 4096;
    let (p, c) = (pagemap(parent, start, pages), pagemap(child, start, pages));
    p.iter()
        .zip(&c)
        .filter(|(a, b)| same_copy(**a, **b))
        .count()
}

#[test]
fn written_pages_of_a_private_file_mapping_and_the_stack_stay_shared() {
    cryo_bin();
    let mut w = Workload::spawn("cow-file", &[]);
    let child: i32 = w.cmd("kids").parse().expect("a pid");
    let _reaper = Reaper(vec![child]);
    let addr = u64::from_str_radix(w.cmd("addr").trim_start_matches("0x"), 16).expect("hex");
    assert_eq!(w.cmd("check"), "ok");
    let shared_before = shared_stack_pages(w.pid(), child);
    let (p, c) = (pagemap(w.pid(), addr, 8), pagemap(child, addr, 8));
    assert!(
        same_copy(p[0], c[0]),
        "page 0 is not shared before the dump"
    );
    let maps = |pid: i32| std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("maps");
    let maps_before = (maps(w.pid()), maps(child));

    let img = w.path("img");
    w.dump_ok(&img);
    w.restore_background(&img);
    assert_eq!(w.cmd("kids"), child.to_string());
    assert_eq!(w.cmd("check"), "ok");
    // Every VMA as it was (the read-write-execute one too), in both.
    assert_eq!(maps(w.pid()), maps_before.0, "the parent's maps");
    assert_eq!(maps(child), maps_before.1, "the child's maps");
    let (p, c) = (pagemap(w.pid(), addr, 8), pagemap(child, addr, 8));
    assert!(
        same_copy(p[0], c[0]),
        "page 0, written by the parent before the fork, is no longer shared: \
         parent {:#x}, child {:#x}",
        p[0],
        c[0]
    );
    // Each wrote its own copy of pages 1 and 2 after the fork.
    assert!(is_copy(p[1]) && is_copy(c[1]) && p[1] & PFN != c[1] & PFN);
    assert!(is_copy(p[2]) && is_copy(c[2]) && p[2] & PFN != c[2] & PFN);
    // Pages the other wrote are the file's: no copy.
    assert!(!is_copy(c[5]), "child's page 5 is a copy: {:#x}", c[5]);
    assert!(!is_copy(p[4]), "parent's page 4 is a copy: {:#x}", p[4]);
    let shared_after = shared_stack_pages(w.pid(), child);
    eprintln!("stack pages shared: {shared_before} before, {shared_after} after");
    assert!(shared_after > 0, "no stack page shared after the restore");

    // The pages that are the file's follow it; the copies (the child's page 6, equal to the
    // file's page when it was written) do not.
    let data = std::fs::OpenOptions::new()
        .write(true)
        .open(w.path("cow-file.data"))
        .expect("the mapped file");
    for page in [3u64, 4, 5, 6] {
        use std::os::unix::fs::FileExt;
        data.write_all_at(&[0x5a; 4096], page * 4096)
            .expect("write the file");
    }
    assert_eq!(w.cmd("check"), "ok");
    // Copy-on-write still: a write by one is not seen by the other.
    assert_eq!(w.cmd("write child 0"), "ok");
    assert_eq!(w.cmd("write parent 3"), "ok");
    assert_eq!(w.cmd("check"), "ok");
    w.kill_restored();
}
