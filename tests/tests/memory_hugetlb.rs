//! hugetlb memory comes back in huge pages: a private and a shared anonymous MAP_HUGETLB
//! mapping, a hugetlb memfd and a SysV SHM_HUGETLB segment, each with a pattern the restored process reads itself, its
//! VMA of 2048 kB pages with the same VmFlags (read from its own smaps), the shared memory
//! still one object between the process and its child, and as many huge pages taken on the
//! host as before. A restore that would find too few free huge pages is refused before it
//! makes anything, naming the size and the counts (and `restore --check-only` says so).
//!
//! The host's pool starts empty (nr_hugepages 0): each test raises it to what the file needs
//! (never lowering it), and the tests using huge pages take turns (`huge_pages::turn`),
//! since one holds every free huge page for a while.
//!
//! Needs the engine: `cryo` must be built (`cargo build -p cryo`).

use cryo_tests::huge_pages::{self, Held};
use cryo_tests::views::{read, write, KID, ME};
use cryo_tests::{control_dir, cryo_bin, pid_exists, Mount, Workload};

/// One `hugetlb` workload takes 10 huge pages (each of its 4 reserving mappings 2, its SysV
/// segment 1, its MAP_NORESERVE mapping the 1 it wrote; 12 with `private-memfd`); a restore takes as many once the original is gone, and the refusal test
/// holds the rest.
const POOL: u64 = 24;

const VIEWS: [&str; 6] = ["priv", "shared", "memfd", "sysv", "nr", "zeros"];

/// What each view's process says of its VMA (KernelPageSize, VmFlags), and its pattern.
#[track_caller]
fn observed(w: &Workload) -> Vec<String> {
    VIEWS
        .iter()
        .map(|v| {
            assert_eq!(w.cmd(&format!("check {v}")), "ok", "the pattern of {v}");
            w.cmd(&format!("smaps {v}"))
        })
        .collect()
}

/// The shared views are one object for the process and its child, both ways.
#[track_caller]
fn shared_with_the_child(w: &Workload, v: u8) {
    let off = huge_pages::HUGE as usize + 17;
    write(w, ME, "shared", off, v);
    assert_eq!(
        read(w, KID, "shared", off),
        v,
        "shared -> the child's shared"
    );
    write(w, KID, "shared", off + 1, v + 1);
    assert_eq!(
        read(w, ME, "shared", off + 1),
        v + 1,
        "the child's -> shared"
    );
    write(w, KID, "memfd", 5, v + 2);
    assert_eq!(read(w, ME, "memfd", 5), v + 2, "the child's memfd -> memfd");
    // The segment is its pattern throughout: the byte goes back after.
    let was = read(w, KID, "sysv", 7);
    write(w, ME, "sysv", 7, !was);
    assert_eq!(read(w, KID, "sysv", 7), !was, "sysv -> the child's sysv");
    write(w, KID, "sysv", 7, was);
    assert_eq!(read(w, ME, "sysv", 7), was, "the child's sysv -> sysv");
}

#[test]
fn hugetlb_mappings_and_memfds_come_back_in_huge_pages() {
    cryo_bin();
    let _turn = huge_pages::turn(POOL);
    let mut w = Workload::spawn("hugetlb", &[]);
    let before = observed(&w);
    for seen in &before {
        assert!(
            seen.starts_with("KernelPageSize 2048 kB | VmFlags ") && seen.contains(" ht"),
            "not hugetlb before the dump: {seen}"
        );
    }
    assert!(
        before[4].contains(" nr "),
        "nr is MAP_NORESERVE: {}",
        before[4]
    );
    let kid_before = w.cmd("kid smaps shared");
    shared_with_the_child(&w, 10);
    let (taken, in_use) = (huge_pages::taken(), huge_pages::in_use());

    w.dump_and_restore();
    // As many hold data as before (the page of zeros too), before the process reads any:
    // a read of a hole in shared hugetlb memory would allocate it.
    assert_eq!(
        huge_pages::in_use(),
        in_use,
        "huge pages in use on the host"
    );
    let shown = w.show(&w.path("img"), false);
    assert!(
        shown
            .stdout
            .contains("[hugetlb 2048 kB] /anon_hugepage (deleted)"),
        "cryo show names the huge page size:\n{shown}"
    );
    assert_eq!(observed(&w), before, "hugetlb VMAs after the restore");
    assert_eq!(
        w.cmd("kid smaps shared"),
        kid_before,
        "the child's shared VMA"
    );
    assert_eq!(
        w.cmd("kid check shared"),
        "ok",
        "the child's shared pattern"
    );
    assert_eq!(w.cmd("fd-size"), (2 * huge_pages::HUGE).to_string());
    // Every mapping reserves again what it did, no more: the host counts the same.
    assert_eq!(huge_pages::taken(), taken, "huge pages taken on the host");
    // And as many hold data: the page of zeros too.
    assert_eq!(
        huge_pages::in_use(),
        in_use,
        "huge pages in use on the host"
    );
    shared_with_the_child(&w, 40);
    w.kill_restored();
}

#[test]
fn a_restore_short_of_huge_pages_is_refused_before_anything_is_made() {
    cryo_bin();
    let _turn = huge_pages::turn(POOL);
    let mut w = Workload::spawn("hugetlb", &[]);
    let check = w.path("check");
    w.dump(&check, &["--check-only"]).assert_success();
    let img = w.path("img");
    w.dump_ok(&img);

    // Every free huge page but 9 held here: the image needs 10.
    let held = Held::reserve(huge_pages::available().saturating_sub(9)).expect("hold huge pages");
    assert_eq!(huge_pages::available(), 9);
    let out = w.cryo(&["restore".as_ref(), "-D".as_ref(), img.as_os_str()]);
    out.assert_refused()
        .assert_stderr_mentions("10 huge pages of 2048 kB")
        .assert_stderr_mentions("9 available");
    assert!(
        !pid_exists(w.pid()),
        "the refused restore made pid {}",
        w.pid()
    );
    let judged = w.cryo(&[
        "restore".as_ref(),
        "--check-only".as_ref(),
        "--pidns".as_ref(),
        "-D".as_ref(),
        check.as_os_str(),
    ]);
    assert_eq!(
        judged.status.code(),
        Some(2),
        "a temporary finding:\n{judged}"
    );
    assert!(
        judged.stdout.contains("10 huge pages of 2048 kB"),
        "the finding names the huge pages:\n{judged}"
    );

    // Given back, the same image restores.
    drop(held);
    w.restore_background(&img);
    observed(&w);
    w.kill_restored();
}

/// A private mapping of a hugetlb memfd (zdtm memfd02-hugetlb) comes back mapped from the
/// restored memfd: its page written before the dump is its own copy (a write to the memfd
/// does not show there), its page only read is still the memfd's (a write to the memfd
/// after the restore shows there), in 2 MiB pages. It was refused.
#[test]
fn a_private_mapping_of_a_hugetlb_memfd_keeps_its_copies_and_the_memfds_pages() {
    cryo_bin();
    let _turn = huge_pages::turn(POOL);
    let mut w = Workload::spawn("hugetlb", &["private-memfd"]);
    let smaps = w.cmd("smaps mpriv");
    w.dump_and_restore();
    assert_eq!(w.cmd("check mpriv"), "ok", "its own copy of page 0");
    assert_eq!(w.cmd("smaps mpriv"), smaps);
    observed(&w);
    let huge = huge_pages::HUGE as usize;
    assert_eq!(
        read(&w, ME, "mpriv", huge + 9),
        read(&w, ME, "memfd", huge + 9),
        "page 1 is the memfd's"
    );
    write(&w, ME, "memfd", huge + 7, 77);
    assert_eq!(
        read(&w, ME, "mpriv", huge + 7),
        77,
        "page 1 still maps the memfd"
    );
    let own = read(&w, ME, "mpriv", 3);
    write(&w, ME, "memfd", 3, own.wrapping_add(1));
    assert_eq!(read(&w, ME, "mpriv", 3), own, "page 0 is a private copy");
    w.kill_restored();
}

/// A file on a hugetlbfs mount, still there at restore: mapped again by its path (its pages
/// stay in the filesystem), shared and private (the private copy from the pages image).
#[test]
fn a_file_on_a_hugetlbfs_mount_is_mapped_again_by_its_path() {
    cryo_bin();
    let _turn = huge_pages::turn(POOL);
    let base = control_dir();
    let mount = Mount::hugetlbfs(&base.path().join("huge"), "pagesize=2M");
    let file = mount.path().join("data");
    let mut w = Workload::spawn("hugetlb-file", &[file.to_str().expect("utf-8")]);
    let views = ["fshared", "fpriv"];
    let seen = |w: &Workload| -> Vec<String> {
        views
            .iter()
            .map(|v| {
                assert_eq!(w.cmd(&format!("check {v}")), "ok", "the pattern of {v}");
                w.cmd(&format!("smaps {v}"))
            })
            .collect()
    };
    let before = seen(&w);
    for s in &before {
        assert!(s.starts_with("KernelPageSize 2048 kB"), "{s}");
    }
    let taken = huge_pages::taken();

    w.dump_and_restore();
    assert_eq!(seen(&w), before, "the file's VMAs after the restore");
    assert_eq!(w.cmd("fd-size"), (2 * huge_pages::HUGE).to_string());
    assert_eq!(huge_pages::taken(), taken, "huge pages taken on the host");
    // Still the file: a write through the shared mapping shows in the private mapping's page
    // it never wrote, and in the file.
    write(&w, ME, "fshared", 100, 77);
    assert_eq!(
        read(&w, ME, "fpriv", 100),
        77,
        "fshared -> fpriv's file page"
    );
    assert_eq!(
        std::fs::read(&file).expect("the file")[100],
        77,
        "fshared -> the file"
    );
    w.kill_restored();
}

/// A deleted file on a hugetlbfs mount has no path to map again, and a copy elsewhere would
/// not be in huge pages: refused, the fd open on it named.
#[test]
fn a_deleted_file_on_a_hugetlbfs_mount_is_refused_naming_pid_and_fd() {
    cryo_bin();
    let _turn = huge_pages::turn(POOL);
    let base = control_dir();
    let mount = Mount::hugetlbfs(&base.path().join("huge"), "pagesize=2M");
    let file = mount.path().join("data");
    let w = Workload::spawn("hugetlb-file", &[file.to_str().expect("utf-8")]);
    std::fs::remove_file(&file).expect("unlink the file");
    w.assert_dump_refused("62", "on a hugetlbfs mount");
    assert_eq!(w.cmd("check fshared"), "ok");
}
