//! Records that pass their checksums but say something no process could have: each is
//! refused by the semantic checks of a restore, naming the image file and what is wrong,
//! before any process is created.
//!
//! Needs the engine: `cryo` must be built (`cargo build -p cryo`).

use std::fs;
use std::path::{Path, PathBuf};

use cryo_proto::image::{MmCore, ProcessEntry, TaskCore};
use cryo_proto::ImageKind;
use cryo_tests::{cryo_bin, dumped_counter, pid_exists, Workload};

/// Rewrites the one record (of type `$ty`) of `$path` through `$change`, with valid framing
/// and checksums.
macro_rules! rewrite {
    ($path:expr, $kind:expr, $ty:ty, $change:expr) => {{
        let path: &Path = $path;
        let mut record: $ty = cryo_proto::frame::read_single(path, $kind).unwrap();
        let change: fn(&mut $ty) = $change;
        change(&mut record);
        fs::remove_file(path).unwrap();
        cryo_proto::frame::write_image(path, $kind, &[record]).unwrap();
    }};
}

/// Restores `img`: refused, naming `file` and `detail`, with no process created.
#[track_caller]
fn refused(w: &Workload, img: &Path, file: &str, detail: &str) {
    let out = w.cryo(&["restore", "-D", img.to_str().unwrap(), "--detach"]);
    out.assert_refused()
        .assert_stderr_mentions(file)
        .assert_stderr_mentions(detail);
    assert!(
        !pid_exists(w.pid()),
        "the refused restore made pid {}",
        w.pid()
    );
}

fn mm_of(w: &Workload, img: &Path) -> (PathBuf, String) {
    let name = format!("mm-{}.img", w.pid());
    (img.join(&name), name)
}

fn core_of(w: &Workload, img: &Path) -> (PathBuf, String) {
    let name = format!("core-{}.img", w.pid());
    (img.join(&name), name)
}

#[test]
fn a_page_run_at_an_unaligned_file_offset_is_refused() {
    cryo_bin();
    let (w, img) = dumped_counter();
    let (path, name) = mm_of(&w, &img);
    rewrite!(&path, ImageKind::Mm, MmCore, |mm| mm.pages[0].offset += 8);
    refused(&w, &img, &name, "not page aligned");
}

#[test]
fn a_page_run_whose_length_overflows_is_refused() {
    cryo_bin();
    let (w, img) = dumped_counter();
    let (path, name) = mm_of(&w, &img);
    rewrite!(&path, ImageKind::Mm, MmCore, |mm| {
        mm.pages[0].npages = u64::MAX / 4096 + 2
    });
    refused(&w, &img, &name, "overflows");
}

#[test]
fn a_vma_at_a_non_canonical_address_is_refused() {
    cryo_bin();
    let (w, img) = dumped_counter();
    let (path, name) = mm_of(&w, &img);
    rewrite!(&path, ImageKind::Mm, MmCore, |mm| {
        let v = mm.vmas.last_mut().unwrap();
        v.start = 0x0000_8000_0000_0000;
        v.end = 0x0000_8000_0001_0000;
    });
    refused(&w, &img, &name, "user addresses");
}

#[test]
fn a_vma_not_page_aligned_is_refused() {
    cryo_bin();
    let (w, img) = dumped_counter();
    let (path, name) = mm_of(&w, &img);
    rewrite!(&path, ImageKind::Mm, MmCore, |mm| mm.vmas[0].end += 1);
    refused(&w, &img, &name, "page-aligned");
}

#[test]
fn an_fd_beyond_the_restorers_limit_is_refused() {
    cryo_bin();
    let (w, img) = dumped_counter();
    let (path, name) = core_of(&w, &img);
    rewrite!(&path, ImageKind::Core, TaskCore, |core| {
        core.fds[0].fd = 1 << 30
    });
    refused(&w, &img, &name, "RLIMIT_NOFILE");
}

#[test]
fn a_negative_fd_is_refused() {
    cryo_bin();
    let (w, img) = dumped_counter();
    let (path, name) = core_of(&w, &img);
    rewrite!(&path, ImageKind::Core, TaskCore, |core| core.fds[0].fd = -5);
    refused(&w, &img, &name, "fd -5");
}

#[test]
fn a_comm_longer_than_the_kernel_keeps_is_refused() {
    cryo_bin();
    let (w, img) = dumped_counter();
    let (path, name) = core_of(&w, &img);
    rewrite!(&path, ImageKind::Core, TaskCore, |core| {
        core.comm = "x".repeat(4000)
    });
    refused(&w, &img, &name, "comm");
}

#[test]
fn a_pid_beyond_pid_max_is_refused() {
    cryo_bin();
    let (w, img) = dumped_counter();
    let path = img.join("pstree.img");
    let mut entries: Vec<ProcessEntry> =
        cryo_proto::frame::read_image(&path, ImageKind::Pstree).unwrap();
    entries[0].sid = i32::MAX;
    fs::remove_file(&path).unwrap();
    cryo_proto::frame::write_image(&path, ImageKind::Pstree, &entries).unwrap();
    refused(&w, &img, "pstree.img", "pid_max");
}

#[test]
fn a_tid_beyond_pid_max_is_refused() {
    cryo_bin();
    let (w, img) = dumped_counter();
    let (path, name) = core_of(&w, &img);
    rewrite!(&path, ImageKind::Core, TaskCore, |core| {
        let mut extra = core.threads[0].clone();
        extra.tid = i32::MAX;
        core.threads.push(extra);
    });
    refused(&w, &img, &name, "pid_max");
}
