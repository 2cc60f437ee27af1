//! The state of memory beyond its bytes comes back as the process reads it in its own smaps
//! and maps: transparent huge pages (AnonHugePages), lazily freed pages (MADV_FREE: LazyFree,
//! the clean ones still clean; a VMA with clean ones and ones written since is refused),
//! VMAs the kernel kept apart (an area moved by mremap beside
//! another), a write-sealed memfd mapped shared read-only (VmFlags "sh" without "mw"), and
//! shared anonymous memory mapped again MAP_PRIVATE (still "/dev/zero (deleted)", its
//! unwritten pages still the shared ones). Checked by the restored process itself.
//!
//! Needs the engine: `cryo` must be built (`cargo build -p cryo`).

use cryo_tests::{cryo_bin, Workload};

/// The words of a VmFlags line, as a set.
fn flag_set(line: &str) -> std::collections::BTreeSet<String> {
    line.split_whitespace().map(String::from).collect()
}

#[test]
fn transparent_huge_pages_come_back_huge() {
    cryo_bin();
    let mut w = Workload::spawn("page-state", &["thp"]);
    assert_eq!(w.cmd("smaps"), "AnonHugePages=2048", "before the dump");
    w.dump_and_restore();
    assert_eq!(w.cmd("smaps"), "AnonHugePages=2048", "after restore");
    assert_eq!(w.cmd("data"), "intact");
    w.kill_restored();
}

#[test]
fn lazily_freed_pages_come_back_lazily_freed() {
    cryo_bin();
    let mut w = Workload::spawn("page-state", &["lazy"]);
    // LazyFree/Private_Clean of each area: a's 4 freed pages clean; b's 8 written since
    // they were freed, which the kernel keeps (and smaps counts as any other).
    let before = w.cmd("smaps");
    assert_eq!(before, "a=16/16 b=0/0", "before the dump");
    w.dump_and_restore();
    assert_eq!(w.cmd("smaps"), before, "after restore");
    assert_eq!(w.cmd("data"), "intact");
    w.kill_restored();
}

#[test]
fn lazily_freed_pages_some_written_since_are_refused_naming_the_mapping() {
    cryo_bin();
    let w = Workload::spawn("page-state", &["lazy-mixed"]);
    assert_eq!(w.cmd("smaps"), "a=8/8 b=0/0", "before the dump");
    let img = w.path("img");
    w.dump(&img, &[])
        .assert_refused()
        .assert_stderr_mentions(&format!("pid {}", w.pid()))
        .assert_stderr_mentions("lazily freed pages (MADV_FREE)");
    w.assert_untouched();
    assert_eq!(w.cmd("smaps"), "a=8/8 b=0/0", "after the refused dump");
}

#[test]
fn vmas_the_kernel_kept_apart_come_back_apart() {
    cryo_bin();
    let mut w = Workload::spawn("page-state", &["apart"]);
    let before = w.cmd("maps");
    assert_eq!(before.split(';').count(), 2, "before the dump: {before}");
    w.dump_and_restore();
    assert_eq!(w.cmd("maps"), before, "after restore");
    assert_eq!(w.cmd("data"), "intact");
    w.kill_restored();
}

#[test]
fn a_write_sealed_memfd_mapped_shared_read_only_comes_back_shared() {
    cryo_bin();
    let mut w = Workload::spawn("page-state", &["sealed"]);
    let before = w.cmd("flags");
    for area in before.split(';') {
        let flags = flag_set(area.split_once('=').unwrap().1);
        assert!(
            flags.contains("sh") && !flags.contains("mw"),
            "before the dump: {area}"
        );
    }
    let protect = w.cmd("protect");
    assert_eq!(protect, "w=EACCES f=EACCES", "before the dump");
    w.dump_and_restore();
    let after = w.cmd("flags");
    for (b, a) in before.split(';').zip(after.split(';')) {
        let (name, b) = b.split_once('=').unwrap();
        let (_, a) = a.split_once('=').unwrap();
        assert_eq!(flag_set(a), flag_set(b), "VmFlags of {name} after restore");
    }
    assert_eq!(w.cmd("protect"), protect, "after restore");
    assert_eq!(w.cmd("data"), "intact");
    w.kill_restored();
}

#[test]
fn shared_anonymous_memory_mapped_private_comes_back_a_private_mapping_of_it() {
    cryo_bin();
    let mut w = Workload::spawn("page-state", &["shmem-private"]);
    assert_eq!(w.cmd("name"), "/dev/zero (deleted)", "before the dump");
    assert_eq!(w.cmd("data"), "intact");
    w.dump_and_restore();
    assert_eq!(w.cmd("name"), "/dev/zero (deleted)", "after restore");
    assert_eq!(w.cmd("data"), "intact", "after restore");
    // The private mapping's unwritten page is still the shared memory's.
    let poked = w.cmd("poke");
    let (shared, seen) = poked.split_once(' ').unwrap();
    assert_eq!(
        shared, seen,
        "a write to the shared memory, seen through the private mapping"
    );
    w.kill_restored();
}

#[test]
fn private_file_mappings_keep_the_access_mode_of_their_files() {
    cryo_bin();
    let mut w = Workload::spawn("page-state", &["private-files"]);
    let before = w.cmd("modes");
    assert_eq!(before, "rw=600 ro=400 m=600", "before the dump");
    w.dump_and_restore();
    // zdtm's comparison of the maps (map_files' modes) saw 400 where 600 was dumped.
    assert_eq!(w.cmd("modes"), before, "after restore");
    assert_eq!(w.cmd("data"), "intact", "after restore");
    w.kill_restored();
}

#[test]
fn an_fd_on_shared_anonymous_memory_comes_back_on_the_mapped_object() {
    cryo_bin();
    let mut w = Workload::spawn("page-state", &["shmem-fd"]);
    let link = w.cmd("link");
    assert_eq!(link, "/dev/zero (deleted) 3", "before the dump");
    w.dump_and_restore();
    // Before: a deleted file named /dev/zero, apart from the memory it was opened on.
    assert_eq!(w.cmd("link"), link, "after restore");
    assert_eq!(w.cmd("data"), "intact", "after restore");
    let poked = w.cmd("poke");
    let (written, seen) = poked.split_once(' ').unwrap();
    assert_eq!(
        written, seen,
        "a byte written through the fd, seen in the mapping"
    );
    w.kill_restored();
}
