//! A shared file mapping comes back backed by its file opened as the process had it: a
//! read-only mapping of a file opened for writing can still be made writable with mprotect
//! (and writes reach the file), one of a file opened read-only still cannot. Each VMA keeps
//! its madvise and mlock state and MAP_NORESERVE (the VmFlags the process reads in its own
//! smaps; a fork of the restored process finds the WIPEONFORK area zeroed and the DONTFORK
//! area absent), and mlockall(MCL_FUTURE) still locks what the process maps after the restore.
//! A sealed mapping (mseal) is refused. MAP_DROPPABLE memory comes back droppable, with its
//! protection, its contents dropped; guard pages (MADV_GUARD_INSTALL) come back guards, in anonymous
//! and file mappings, the pages around them intact. Checked by the restored process itself.
//!
//! Needs the engine: `cryo` must be built (`cargo build -p cryo`).

use cryo_tests::{cryo_bin, Workload};

#[test]
fn mprotect_write_on_a_shared_file_mapping_works_exactly_when_it_did() {
    cryo_bin();
    // What the kernel does before any dump.
    let w = Workload::spawn("mapping-access", &[]);
    assert_eq!(w.cmd("protect rw"), "ok");
    assert_eq!(w.cmd("protect ro"), "EACCES");
    drop(w);

    let mut w = Workload::spawn("mapping-access", &[]);
    w.dump_and_restore();
    assert_eq!(w.cmd("protect rw"), "ok", "the file opened for writing");
    assert_eq!(w.cmd("write rw 10 77"), "ok");
    let data = std::fs::read(w.path("rw.dat")).expect("rw.dat");
    assert_eq!(data[10], 77, "the write did not reach the file");
    assert_eq!(w.cmd("protect ro"), "EACCES", "the file opened read-only");
    w.kill_restored();
}

/// The words of a VmFlags line, as a set (the kernel's order is fixed, but say so anyway).
fn flag_set(line: &str) -> std::collections::BTreeSet<String> {
    line.split_whitespace().map(String::from).collect()
}

#[test]
fn madvise_and_mlock_states_come_back_as_the_process_sees_them() {
    cryo_bin();
    let mut w = Workload::spawn("advised", &[]);
    let before = w.cmd("flags");
    for (area, flag) in [
        ("dc", "dc"),
        ("wf", "wf"),
        ("hg", "hg"),
        ("nh", "nh"),
        ("dd", "dd"),
        ("mg", "mg"),
        ("sr", "sr"),
        ("rr", "rr"),
        ("lo", "lo"),
        ("lf", "lf"),
        ("nr", "nr"),
    ] {
        let line = before
            .split(';')
            .find_map(|a| a.strip_prefix(&format!("{area}=")))
            .unwrap_or_else(|| panic!("no area {area} in {before}"));
        assert!(flag_set(line).contains(flag), "{area}: {line}");
    }
    assert_eq!(w.cmd("fork"), "dc=absent wf=zero rest=intact");
    let locked = w.cmd("lock");
    assert_ne!(locked, "0 kB");

    w.dump_and_restore();
    let after = w.cmd("flags");
    for (b, a) in before.split(';').zip(after.split(';')) {
        let (name, b) = b.split_once('=').unwrap();
        let (_, a) = a.split_once('=').unwrap();
        assert_eq!(
            flag_set(a),
            flag_set(b),
            "VmFlags of area {name} after restore"
        );
    }
    assert_eq!(
        w.cmd("fork"),
        "dc=absent wf=zero rest=intact",
        "what a fork of the restored process sees"
    );
    assert_eq!(w.cmd("lock"), locked, "VmLck after restore");
    assert!(
        !flag_set(&w.cmd("fresh")).contains("lo"),
        "no mlockall was made"
    );
    w.kill_restored();
}

#[test]
fn mlockall_future_comes_back_for_the_mappings_made_after_restore() {
    cryo_bin();
    for (arg, want) in [
        ("future", &["lo"][..]),
        ("future-onfault", &["lo", "lf"][..]),
    ] {
        let mut w = Workload::spawn("advised", &[arg]);
        let fresh = flag_set(&w.cmd("fresh"));
        for f in want {
            assert!(
                fresh.contains(*f),
                "{arg}: a page mapped before the dump: {fresh:?}"
            );
        }
        w.dump_and_restore();
        let after = flag_set(&w.cmd("fresh"));
        assert_eq!(after, fresh, "{arg}: a page mapped after restore");
        w.kill_restored();
    }
}

#[test]
fn a_sealed_mapping_is_refused_naming_pid_and_flag() {
    cryo_bin();
    let w = Workload::spawn("advised", &["sealed"]);
    let img = w.path("img");
    w.dump(&img, &[])
        .assert_refused()
        .assert_stderr_mentions(&format!("pid {}", w.pid()))
        .assert_stderr_mentions("sealed (mseal)");
    w.assert_untouched();
    assert_eq!(w.cmd("fork"), "dc=absent wf=zero rest=intact");
}

#[test]
fn droppable_memory_comes_back_droppable_and_dropped() {
    cryo_bin();
    let mut w = Workload::spawn("special-maps", &["droppable"]);
    let flags = w.cmd("flags");
    for area in flags.split(';') {
        assert!(flag_set(area).contains("dp"), "before the dump: {area}");
    }
    let perms = w.cmd("perms");
    assert_eq!(w.cmd("data"), "d=intact r=intact");
    assert_eq!(w.cmd("fork"), "d=zero r=zero");

    w.dump_and_restore();
    let after = w.cmd("flags");
    for (b, a) in flags.split(';').zip(after.split(';')) {
        assert_eq!(flag_set(a), flag_set(b), "VmFlags after restore");
    }
    assert_eq!(w.cmd("perms"), perms, "protections after restore");
    // Dropped, as the kernel may drop it at any time (and CRIU does at a restore).
    assert_eq!(w.cmd("data"), "d=zero r=zero", "contents after restore");
    assert_eq!(w.cmd("fork"), "d=zero r=zero", "a fork after restore");
    w.kill_restored();
}

#[test]
fn guard_pages_come_back_guards_around_intact_pages() {
    cryo_bin();
    let mut w = Workload::spawn("special-maps", &["guarded"]);
    let want = "anon=.GG.G. file=G.G.";
    assert_eq!(w.cmd("probe"), want, "before the dump");
    w.dump_and_restore();
    assert_eq!(w.cmd("probe"), want, "after restore");
    w.kill_restored();
}

#[test]
fn a_growsdown_mapping_comes_back_growing_down() {
    cryo_bin();
    let mut w = Workload::spawn("special-maps", &["growsdown"]);
    let flags = w.cmd("flags");
    assert!(flag_set(&flags).contains("gd"), "before the dump: {flags}");
    w.dump_and_restore();
    let after = w.cmd("flags");
    assert_eq!(flag_set(&after), flag_set(&flags), "VmFlags after restore");
    assert_eq!(w.cmd("grow"), "grew", "a write below it after restore");
    w.kill_restored();
}
