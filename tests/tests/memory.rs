//! Anonymous memory comes back byte for byte, checked by the restored process itself.
//!
//! Needs the engine: `cryo` must be built (`cargo build -p cryo`).

use cryo_tests::{cryo_bin, Workload};

fn verified(w: &Workload) -> String {
    let reply = w.cmd("verify");
    assert!(reply.starts_with("ok "), "memory check failed: {reply}");
    reply
}

#[test]
fn patterned_256_mib_verified_by_the_restored_process() {
    cryo_bin();
    let mut w = Workload::spawn("memory", &["256", "0x5eed"]);
    let before = verified(&w);
    assert!(before.ends_with(" 65536"), "{before}");
    w.dump_and_restore();
    assert_eq!(verified(&w), before, "every word, holes included");
    // Still private, writable memory after the restore.
    w.cmd("touch");
    assert_ne!(verified(&w), before);
    w.kill_restored();
}

#[test]
fn pages_only_read_come_back_as_the_zero_page_without_a_copy() {
    cryo_bin();
    // 128 MiB of anonymous memory only read (calloc'd and scanned, say): the kernel's zero
    // page, no memory of the process's own. Before: 128 MiB in the image and in its VmRSS.
    let mut w = Workload::spawn("memory", &["4"]);
    let read = w.cmd("zero-read 128");
    let rss = |reply: &str| -> u64 { reply.rsplit(' ').next().unwrap().parse().unwrap() };
    assert!(read.starts_with("read 32768 rss "), "{read}");
    let img = w.path("img");
    w.dump_ok(&img);
    let image_bytes: u64 = std::fs::read_dir(&img)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(image_bytes < 32 << 20, "image of {image_bytes} bytes");
    w.restore_detached(&img).assert_success();
    let after = w.cmd("zero-check");
    assert!(after.starts_with("zeros yes rss "), "{after}");
    assert!(
        rss(&after) < rss(&read) + 16 * 1024,
        "VmRSS {} kB after the restore, {} kB before",
        rss(&after),
        rss(&read)
    );
    assert!(verified(&w).starts_with("ok "), "the written memory");
    w.kill_restored();
}

#[test]
fn rewritten_pages_come_back_as_last_written() {
    cryo_bin();
    let mut w = Workload::spawn("memory", &["32", "7"]);
    w.cmd("touch");
    w.cmd("touch");
    let before = verified(&w);
    w.dump_and_restore();
    assert_eq!(verified(&w), before);
    w.kill_restored();
}

#[test]
fn memory_survives_two_generations_of_dumps() {
    cryo_bin();
    let mut w = Workload::spawn("memory", &["16"]);
    let first = verified(&w);
    let img1 = w.path("img1");
    w.dump_ok(&img1);
    w.restore_background(&img1);
    assert_eq!(verified(&w), first);
    w.cmd("touch");
    let second = verified(&w);
    let img2 = w.path("img2");
    w.dump_ok(&img2);
    w.restore_background(&img2);
    assert_eq!(verified(&w), second);
    w.kill_restored();
}

#[test]
fn every_kind_of_mapping_comes_back() {
    cryo_bin();
    let mut w = Workload::spawn("mappings", &[]);
    assert_eq!(w.cmd("check"), "ok");
    let bumped: u8 = w.cmd("bump").parse().unwrap();
    w.dump_and_restore();
    // Shared anonymous memory, the private copy of a file page, a PROT_NONE region
    // (read through /proc/PID/mem at dump) and the shared file mapping.
    assert_eq!(w.cmd("check"), "ok");
    // The shared file mapping is the file again: a write reaches it on disk.
    let again = bumped.wrapping_add(1);
    assert_eq!(w.cmd("bump"), again.to_string());
    let on_disk = std::fs::read(w.path("shared.dat")).unwrap();
    assert_eq!(
        on_disk[0], again,
        "the restored shared mapping no longer writes to the file"
    );
    w.kill_restored();
}

/// A process that unmapped one of the kernel's vDSO blobs ([vvar_vclock] here; zdtm's vdso02
/// unmaps them all) comes back without it. Before: the restore failed (`the image's
/// VvarVclock differs from this kernel's`), after the dump had killed the process.
#[test]
fn a_vdso_blob_the_process_unmapped_stays_unmapped() {
    cryo_bin();
    let mut w = Workload::spawn("mappings", &[]);
    assert_eq!(w.cmd("special"), "[vvar] [vvar_vclock] [vdso]");
    assert_eq!(w.cmd("unmap-vclock"), "ok");
    assert_eq!(w.cmd("special"), "[vvar] [vdso]");
    w.dump_and_restore();
    assert_eq!(w.cmd("special"), "[vvar] [vdso]");
    assert_eq!(w.cmd("check"), "ok");
    w.kill_restored();
}
