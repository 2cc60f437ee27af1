//! Everything cryo must refuse, cleanly: a clear message naming what is at
//! fault, a non-zero exit, and the target (or the machine) left as it was.
//!
//! Needs the engine: `cryo` must be built (`cargo build -p cryo`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use cryo_tests::{
    control_dir, cryo_bin, pid_exists, run_cryo, status_field, write_file, Mount, Workload,
};

// ---- dump: bad targets -------------------------------------------------

#[test]
fn dump_of_a_pid_that_does_not_exist() {
    cryo_bin();
    let dir = control_dir();
    let mut child = Command::new("/bin/true").spawn().unwrap();
    let pid = child.id() as i32;
    child.wait().unwrap();
    assert!(!pid_exists(pid), "pid {pid} was reused already");
    let img = dir.path().join("img");
    let out = run_cryo(
        dir.path(),
        "dump",
        ["dump", "-t", &pid.to_string(), "-D", img.to_str().unwrap()],
    );
    out.assert_refused()
        .assert_stderr_has_word(&pid.to_string());
}

#[test]
fn dump_of_a_kernel_thread() {
    cryo_bin();
    assert_eq!(status_field(2, "Name").as_deref(), Some("kthreadd"));
    let dir = control_dir();
    let img = dir.path().join("img");
    let out = run_cryo(
        dir.path(),
        "dump",
        ["dump", "-t", "2", "-D", img.to_str().unwrap()],
    );
    out.assert_refused()
        .assert_stderr_has_word("2")
        .assert_stderr_mentions("kernel");
    assert_eq!(status_field(2, "TracerPid").as_deref(), Some("0"));
    let state = status_field(2, "State").unwrap();
    assert!(
        !state.starts_with('t') && !state.starts_with('T'),
        "kthreadd {state}"
    );
}

// ---- dump: bad image directories ---------------------------------------

/// A counter workload at 2, and its check after a refused dump.
fn counter_at_two() -> Workload {
    let w = Workload::spawn("counter", &[]);
    w.cmd("tick");
    w.cmd("tick");
    w
}

#[track_caller]
fn assert_counter_untouched(w: &Workload) {
    assert!(w.original_alive(), "the refused dump killed the target");
    w.assert_untouched();
    assert_eq!(w.cmd("tick"), "3", "the target's state changed");
}

#[test]
fn dump_into_a_dir_holding_an_image() {
    cryo_bin();
    let w = counter_at_two();
    let img = w.path("img");
    fs::create_dir(&img).unwrap();
    write_file(&img.join("core-1.img"), b"keep me");
    let out = w.dump(&img, &[]);
    out.assert_refused()
        .assert_stderr_mentions(img.to_str().unwrap())
        .assert_stderr_mentions("holds an image already (core-1.img)");
    assert_counter_untouched(&w);
    let names: Vec<_> = fs::read_dir(&img)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names,
        ["core-1.img"],
        "cryo wrote into a dir holding an image"
    );
    assert_eq!(fs::read(img.join("core-1.img")).unwrap(), b"keep me");
}

/// As CRIU does, a dump goes into a directory holding other files (its own log, CRIU's
/// dump.cropt), leaves them as they were, and a failed one removes only what it wrote.
#[test]
fn dump_beside_files_that_are_not_an_image_keeps_them() {
    cryo_bin();
    let mut w = counter_at_two();
    let img = w.path("img");
    fs::create_dir(&img).unwrap();
    write_file(&img.join("dump.cropt"), b"keep me");
    // Refused (no such process), after the directory was taken: nothing of it is left.
    let out = w.cryo(&["dump", "-t", "999999999", "-D", img.to_str().unwrap()]);
    out.assert_refused();
    let names = |dir: &std::path::Path| -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(&img), ["dump.cropt"]);
    let log = img.join("dump.log");
    let out = w.dump(&img, &["-o", log.to_str().unwrap()]);
    out.assert_success();
    w.wait_original();
    let all = names(&img);
    assert!(
        all.contains(&"dump.log".into()) && all.contains(&"inventory.img".into()),
        "{all:?}"
    );
    assert_eq!(fs::read(img.join("dump.cropt")).unwrap(), b"keep me");
    w.restore_background(&img);
    assert_eq!(w.cmd("tick"), "3", "restored from beside the other files");
    w.kill_restored();
}

#[test]
fn dump_into_a_read_only_dir() {
    cryo_bin();
    let w = counter_at_two();
    let ro = Mount::tmpfs(&w.path("ro"), "ro,size=1M");
    let out = w.dump(ro.path(), &[]);
    out.assert_refused()
        .assert_stderr_mentions(ro.path().to_str().unwrap());
    assert_counter_untouched(&w);
}

#[test]
fn dump_into_a_dir_that_cannot_be_created() {
    cryo_bin();
    let w = counter_at_two();
    let file = w.path("a-file");
    write_file(&file, b"not a dir");
    let img = file.join("img");
    let out = w.dump(&img, &[]);
    out.assert_refused()
        .assert_stderr_mentions(img.to_str().unwrap());
    assert_counter_untouched(&w);
}

#[test]
fn a_dump_that_fails_midway_leaves_the_target_running() {
    cryo_bin();
    let w = Workload::spawn("memory", &["64"]);
    let before = w.cmd("verify");
    assert!(before.starts_with("ok "), "{before}");
    w.cmd("tick");
    let small = Mount::tmpfs(&w.path("small"), "size=1M");
    let img = small.path().join("img");
    let out = w.dump(&img, &[]);
    out.assert_refused();
    assert!(
        out.stderr.contains(small.path().to_str().unwrap()) || out.stderr.contains(".img"),
        "the error should name the image file or dir that filled up:\n{out}"
    );
    assert!(w.original_alive(), "the failed dump killed the target");
    w.assert_untouched();
    assert_eq!(w.cmd("tick"), "2");
    assert_eq!(w.cmd("verify"), before, "the failed dump changed memory");
    drop(small);
}

#[test]
fn a_dump_failing_on_a_full_disk_leaves_no_fd_to_its_image_in_the_target() {
    cryo_bin();
    let w = Workload::spawn("memory", &["64"]);
    let before = w.cmd("verify");
    let small = Mount::tmpfs(&w.path("full"), "size=4M");
    let img = small.path().join("img");
    let out = w.dump(&img, &[]);
    out.assert_refused();
    assert!(w.original_alive(), "the failed dump killed the target");
    w.assert_untouched();
    // No fd of the target on anything under the image dir (the pages image, deleted, would
    // keep the disk full).
    let mount = small.path().to_string_lossy().into_owned();
    let held: Vec<String> = fs::read_dir(format!("/proc/{}/fd", w.pid()))
        .unwrap()
        .flatten()
        .filter_map(|e| fs::read_link(e.path()).ok())
        .map(|l| l.to_string_lossy().into_owned())
        .filter(|l| l.starts_with(&mount))
        .collect();
    assert!(held.is_empty(), "the target still holds {held:?}\n{out}");
    let stat = nix::sys::statvfs::statvfs(small.path()).unwrap();
    assert_eq!(
        stat.blocks_free(),
        stat.blocks(),
        "the image's disk is not empty again after the failed dump"
    );
    assert_eq!(w.cmd("verify"), before, "the failed dump changed memory");
    drop(small);
}

// ---- dump: unsupported objects -----------------------------------------

fn refuses_unsupported(kind: &str, named: &str) {
    cryo_bin();
    let w = Workload::spawn("unsupported", &[kind, "47"]);
    w.cmd("tick");
    w.assert_dump_refused("47", named);
    assert_eq!(w.cmd("tick"), "2");
    assert_eq!(w.cmd("fd"), "47");
}

#[test]
fn an_io_uring_fd_is_refused_naming_pid_fd_and_kind() {
    refuses_unsupported("io_uring", "io_uring");
}

// ---- restore: damaged images -------------------------------------------

/// A counter workload dumped (and so killed, reaped) into `img`.
fn dumped() -> (Workload, PathBuf) {
    let mut w = Workload::spawn("counter", &[]);
    w.cmd("tick");
    let img = w.path("img");
    w.dump_ok(&img);
    (w, img)
}

fn image_file(img: &Path, name: &str, pid: i32) -> PathBuf {
    img.join(name.replace("PID", &pid.to_string()))
}

/// Restores the damaged `img`; it must be refused naming `file`, before any
/// process was created.
#[track_caller]
fn assert_restore_refused(w: &Workload, img: &Path, file: &Path) -> cryo_tests::CryoOutput {
    // --detach so that a wrongly accepted image fails the test at once.
    let out = w.cryo(&["restore", "-D", img.to_str().unwrap(), "--detach"]);
    out.assert_refused();
    let name = file.file_name().unwrap().to_str().unwrap();
    out.assert_stderr_mentions(name);
    assert!(
        !w.pid_is_ours(),
        "the refused restore left a process with pid {}",
        w.pid()
    );
    assert!(
        !pid_exists(w.pid()),
        "pid {} exists after the refused restore: {:?}",
        w.pid(),
        status_field(w.pid(), "Name")
    );
    out
}

fn header_crc(h: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&h[..20]), &h[24..32])
}

/// Rewrites the header's version fields and fixes its checksum, so only the version is wrong.
fn set_version(path: &Path, major: Option<u16>, minor_delta: u16) {
    let mut b = fs::read(path).unwrap();
    assert_eq!(&b[..8], b"CRYOIMG\0");
    if let Some(m) = major {
        b[8..10].copy_from_slice(&m.to_le_bytes());
    }
    let minor = u16::from_le_bytes([b[10], b[11]]) + minor_delta;
    b[10..12].copy_from_slice(&minor.to_le_bytes());
    let crc = header_crc(&b[..32]);
    b[20..24].copy_from_slice(&crc.to_le_bytes());
    fs::write(path, b).unwrap();
}

fn flip_bit(path: &Path, offset: usize) {
    let mut b = fs::read(path).unwrap();
    b[offset] ^= 0x10;
    fs::write(path, b).unwrap();
}

fn truncate(path: &Path, len: u64) {
    let f = fs::OpenOptions::new().write(true).open(path).unwrap();
    assert!(
        f.metadata().unwrap().len() > len,
        "{} is too short",
        path.display()
    );
    f.set_len(len).unwrap();
}

#[test]
fn a_truncated_record_file_is_refused() {
    cryo_bin();
    let (w, img) = dumped();
    let core = image_file(&img, "core-PID.img", w.pid());
    let len = fs::metadata(&core).unwrap().len();
    truncate(&core, 32 + (len - 32) / 2);
    assert_restore_refused(&w, &img, &core);
}

#[test]
fn a_file_shorter_than_its_header_is_refused() {
    cryo_bin();
    let (w, img) = dumped();
    let mm = image_file(&img, "mm-PID.img", w.pid());
    truncate(&mm, 20);
    assert_restore_refused(&w, &img, &mm);
}

#[test]
fn a_truncated_pages_file_is_refused() {
    cryo_bin();
    let (w, img) = dumped();
    let pages = image_file(&img, "pages-PID.img", w.pid());
    let len = fs::metadata(&pages).unwrap().len();
    truncate(&pages, len - 4096);
    assert_restore_refused(&w, &img, &pages);
}

#[test]
fn a_bit_flipped_record_is_refused_naming_file_and_record() {
    cryo_bin();
    let (w, img) = dumped();
    let mm = image_file(&img, "mm-PID.img", w.pid());
    let b = fs::read(&mm).unwrap();
    assert!(
        u32::from_le_bytes(b[16..20].try_into().unwrap()) >= 1,
        "no records"
    );
    let rec_len = u32::from_le_bytes(b[32..36].try_into().unwrap()) as usize;
    assert!(rec_len > 0);
    flip_bit(&mm, 40 + rec_len / 2);
    let out = assert_restore_refused(&w, &img, &mm);
    out.assert_stderr_mentions("record");
    // show reads the same images and must refuse them the same way.
    let show = w.show(&img, false);
    show.assert_refused().assert_stderr_mentions("mm-");
}

#[test]
fn a_bit_flipped_header_is_refused() {
    cryo_bin();
    let (w, img) = dumped();
    let inventory = img.join("inventory.img");
    flip_bit(&inventory, 16);
    assert_restore_refused(&w, &img, &inventory);
}

#[test]
fn a_bad_magic_is_refused() {
    cryo_bin();
    let (w, img) = dumped();
    let core = image_file(&img, "core-PID.img", w.pid());
    flip_bit(&core, 0);
    assert_restore_refused(&w, &img, &core);
}

#[test]
fn a_foreign_major_version_is_refused() {
    cryo_bin();
    let (w, img) = dumped();
    let pstree = img.join("pstree.img");
    let major = u16::from_le_bytes(fs::read(&pstree).unwrap()[8..10].try_into().unwrap());
    set_version(&pstree, Some(major + 1), 0);
    assert_restore_refused(&w, &img, &pstree).assert_stderr_mentions("version");
}

#[test]
fn a_newer_minor_version_is_refused() {
    cryo_bin();
    let (w, img) = dumped();
    let files = img.join("files.img");
    set_version(&files, None, 1);
    assert_restore_refused(&w, &img, &files).assert_stderr_mentions("version");
}

#[test]
fn a_missing_image_file_is_refused() {
    cryo_bin();
    let (w, img) = dumped();
    let files = img.join("files.img");
    fs::remove_file(&files).unwrap();
    assert_restore_refused(&w, &img, &files);
}

#[test]
fn restore_from_a_dir_that_does_not_exist() {
    cryo_bin();
    let dir = control_dir();
    let img = dir.path().join("nothing-here");
    let out = run_cryo(
        dir.path(),
        "restore",
        ["restore", "-D", img.to_str().unwrap(), "--detach"],
    );
    out.assert_refused()
        .assert_stderr_mentions(img.to_str().unwrap());
}

// ---- dump: a process already traced, restore: a pid taken, a failure midway --

#[test]
fn dump_of_a_process_traced_by_someone_else() {
    cryo_bin();
    let w = counter_at_two();
    // This test thread becomes the target's tracer; cryo must not steal it.
    let out = w.dump_while_traced();
    out.assert_refused()
        .assert_stderr_has_word(&w.pid().to_string())
        .assert_stderr_mentions("trace");
    assert_counter_untouched(&w);
}

#[test]
fn restore_while_the_pid_is_taken_is_refused() {
    cryo_bin();
    let w = counter_at_two();
    let img = w.path("img");
    w.dump(&img, &["--leave-running"]).assert_success();
    let out = w.cryo(&["restore", "-D", img.to_str().unwrap(), "--detach"]);
    out.assert_refused()
        .assert_stderr_has_word(&w.pid().to_string())
        .assert_stderr_mentions("taken");
    assert_counter_untouched(&w);
}

#[test]
fn a_restore_that_fails_after_creating_the_process_kills_it() {
    use cryo_proto::image::MmCore;
    use cryo_proto::ImageKind;
    cryo_bin();
    let (w, img) = dumped();
    // A well-formed image whose second-to-last VMA overlaps the last: it passes every check
    // before the fork, and mmap refuses it only inside the created process.
    let mm_path = image_file(&img, "mm-PID.img", w.pid());
    let mut mm: MmCore = cryo_proto::frame::read_single(&mm_path, ImageKind::Mm).unwrap();
    let n = mm.vmas.len();
    let last = mm.vmas[n - 1].clone();
    let mut overlap = last.clone();
    overlap.kind = cryo_proto::image::VmaKind::Anon as i32;
    overlap.file_id = 0;
    overlap.name = String::new();
    mm.vmas.insert(n - 1, overlap);
    fs::remove_file(&mm_path).unwrap();
    cryo_proto::frame::write_image(&mm_path, ImageKind::Mm, &[mm]).unwrap();
    let out = w.cryo(&["restore", "-D", img.to_str().unwrap(), "--detach"]);
    out.assert_refused()
        .assert_stderr_has_word(&w.pid().to_string())
        .assert_stderr_mentions("mmap");
    assert!(
        !pid_exists(w.pid()),
        "the failed restore left pid {} behind: {:?}",
        w.pid(),
        status_field(w.pid(), "State")
    );
}
