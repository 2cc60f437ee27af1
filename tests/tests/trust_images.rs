//! The image directory is trusted no further than its owner: a directory or file another
//! user owns, a file others may write, a symlink, a FIFO or a device in place of an image
//! file are all refused at once, naming the path.
//!
//! Needs the engine: `cryo` must be built (`cargo build -p cryo`).

use std::fs;
use std::os::unix::fs::{chown, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cryo_tests::{cryo_bin, dumped_counter, pid_exists, Workload};

/// The uid and gid of a user that is not root (nobody).
const NOBODY: u32 = 65534;

/// `cryo restore --detach` of `img` with `extra`, which must be refused quickly (the images
/// are checked before anything is read), naming `named`, creating no process.
#[track_caller]
fn refused_at_once(w: &Workload, img: &Path, extra: &[&str], named: &str) -> String {
    let start = Instant::now();
    let mut args = vec!["restore", "-D", img.to_str().unwrap(), "--detach"];
    args.extend_from_slice(extra);
    let out = w.cryo(&args);
    let took = start.elapsed();
    out.assert_refused().assert_stderr_mentions(named);
    assert!(
        took < Duration::from_secs(10),
        "the refusal took {took:?}:\n{out}"
    );
    assert!(
        !pid_exists(w.pid()),
        "pid {} exists after the refused restore",
        w.pid()
    );
    out.stderr.clone()
}

fn pages_of(w: &Workload, img: &Path) -> PathBuf {
    img.join(format!("pages-{}.img", w.pid()))
}

#[test]
fn dump_into_a_directory_another_user_made_is_refused() {
    cryo_bin();
    let w = Workload::spawn("counter", &[]);
    assert_eq!(w.cmd("tick"), "1");
    let img = w.path("img");
    fs::create_dir(&img).unwrap();
    fs::set_permissions(&img, fs::Permissions::from_mode(0o755)).unwrap();
    chown(&img, Some(NOBODY), Some(NOBODY)).unwrap();
    let out = w.dump(&img, &[]);
    out.assert_refused()
        .assert_stderr_mentions(img.to_str().unwrap())
        .assert_stderr_mentions("uid 65534");
    assert!(w.original_alive(), "the refused dump killed the target");
    w.assert_untouched();
    assert_eq!(w.cmd("tick"), "2");
    let meta = fs::metadata(&img).unwrap();
    assert_eq!(
        meta.permissions().mode() & 0o7777,
        0o755,
        "cryo changed the mode of a directory it refused"
    );
    assert_eq!(fs::read_dir(&img).unwrap().count(), 0, "cryo wrote into it");
}

#[test]
fn dump_into_a_symlink_is_refused() {
    cryo_bin();
    let w = Workload::spawn("counter", &[]);
    let real = w.path("real");
    fs::create_dir(&real).unwrap();
    let link = w.path("img");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    w.dump(&link, &[])
        .assert_refused()
        .assert_stderr_mentions("symbolic link");
    assert!(w.original_alive());
    assert_eq!(fs::read_dir(&real).unwrap().count(), 0);
}

#[test]
fn restore_of_another_users_dump_needs_root_to_say_so() {
    cryo_bin();
    let (mut w, img) = dumped_counter();
    // As if user nobody had taken the dump: the directory and every file are its.
    chown(&img, Some(NOBODY), Some(NOBODY)).unwrap();
    for entry in fs::read_dir(&img).unwrap() {
        chown(entry.unwrap().path(), Some(NOBODY), Some(NOBODY)).unwrap();
    }
    let err = refused_at_once(&w, &img, &[], "uid 65534");
    assert!(err.contains("--trust-image-owner"), "{err}");
    w.restore_detached_with(&img, &["--trust-image-owner"]);
    assert_eq!(w.cmd("tick"), "2");
    w.kill_restored();
}

#[test]
fn an_image_file_another_user_owns_is_refused() {
    cryo_bin();
    let (w, img) = dumped_counter();
    let files = img.join("files.img");
    chown(&files, Some(NOBODY), Some(NOBODY)).unwrap();
    refused_at_once(&w, &img, &[], "files.img");
}

#[test]
fn an_image_file_others_may_write_is_refused() {
    cryo_bin();
    let (w, img) = dumped_counter();
    let core = img.join(format!("core-{}.img", w.pid()));
    fs::set_permissions(&core, fs::Permissions::from_mode(0o622)).unwrap();
    let err = refused_at_once(&w, &img, &[], "core-");
    assert!(err.contains("writable by"), "{err}");
}

#[test]
fn an_image_directory_others_may_write_is_refused() {
    cryo_bin();
    let (w, img) = dumped_counter();
    fs::set_permissions(&img, fs::Permissions::from_mode(0o777)).unwrap();
    let err = refused_at_once(&w, &img, &[], img.to_str().unwrap());
    assert!(err.contains("writable by"), "{err}");
}

#[test]
fn an_image_file_replaced_by_a_fifo_is_refused_without_blocking() {
    cryo_bin();
    let (w, img) = dumped_counter();
    for name in ["files.img".to_string(), format!("pages-{}.img", w.pid())] {
        let path = img.join(&name);
        let saved = fs::read(&path).unwrap();
        fs::remove_file(&path).unwrap();
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let err = refused_at_once(&w, &img, &[], &name);
        assert!(err.contains("FIFO"), "{err}");
        fs::remove_file(&path).unwrap();
        fs::write(&path, saved).unwrap();
    }
}

#[test]
fn an_image_file_replaced_by_a_symlink_to_dev_zero_is_refused() {
    cryo_bin();
    let (w, img) = dumped_counter();
    for path in [img.join(format!("mm-{}.img", w.pid())), pages_of(&w, &img)] {
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let saved = fs::read(&path).unwrap();
        fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink("/dev/zero", &path).unwrap();
        let err = refused_at_once(&w, &img, &[], &name);
        assert!(err.contains("symbolic link"), "{err}");
        fs::remove_file(&path).unwrap();
        fs::write(&path, saved).unwrap();
    }
}

#[test]
fn an_image_directory_given_as_a_symlink_is_refused() {
    cryo_bin();
    let (w, img) = dumped_counter();
    let link = w.path("link");
    std::os::unix::fs::symlink(&img, &link).unwrap();
    refused_at_once(&w, &link, &[], "symbolic link");
}

#[test]
fn a_damaged_pages_file_does_not_say_its_size_or_checksum() {
    cryo_bin();
    let (w, img) = dumped_counter();
    let pages = pages_of(&w, &img);
    let mut bytes = fs::read(&pages).unwrap();
    let len = bytes.len();
    bytes[len / 2] ^= 1;
    fs::write(&pages, &bytes).unwrap();
    let err = refused_at_once(&w, &img, &[], "pages-");
    let crc = crc32c::crc32c(&bytes);
    assert!(
        !err.contains(&format!("{crc:#010x}")) && !err.contains(&format!("{crc:#x}")),
        "the refusal prints the checksum of the file:\n{err}"
    );
    bytes.truncate(len - 4096);
    fs::write(&pages, &bytes).unwrap();
    let err = refused_at_once(&w, &img, &[], "pages-");
    assert!(
        !err.contains(&(len - 4096).to_string()),
        "the refusal prints the size of the file:\n{err}"
    );
}
