//! The paths a restore reopens are trusted no further than the dump saw them: a file swapped
//! for a symlink (to a root-only file), a directory on the way swapped for a symlink, a file
//! replaced by another are refused, naming the path and what differs, unless
//! --accept-changed-files says to use them; a forged deleted-file record in an image another
//! user could write never yields a set-uid copy, and a deleted set-id file of root's comes
//! back from root's image as a copy by its deleted name that no one can link.
//!
//! Needs the engine: `cryo` must be built (`cargo build -p cryo`).

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use cryo_proto::image::{file_desc::Kind, FileDesc};
use cryo_proto::ImageKind;
use cryo_tests::protocol;
use cryo_tests::{control_dir, cryo_bin, parse_fds, pid_exists, write_file, Workload};

/// A "file" workload reading `data` (4096 pattern bytes at `rel` in its control dir), five
/// bytes read, dumped and killed; returns it, the data file and the bytes.
fn dumped_reader(rel: &str) -> (Workload, PathBuf, Vec<u8>) {
    cryo_bin();
    let dir = control_dir();
    let data = protocol::pattern(4096, 5);
    let path = dir.path().join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    write_file(&path, &data);
    let mut w = Workload::spawn_in(dir, "file", &[path.to_str().unwrap()]);
    for (off, b) in data.iter().enumerate().take(5) {
        assert_eq!(w.cmd("next"), format!("{off} {b}"));
    }
    let img = w.path("img");
    w.dump_ok(&img);
    (w, path, data)
}

/// `cryo restore --detach` refused naming each of `mentions`, no process created.
#[track_caller]
fn refused(w: &Workload, extra: &[&str], mentions: &[&str]) -> String {
    let img = w.path("img");
    let mut args = vec!["restore", "-D", img.to_str().unwrap(), "--detach"];
    args.extend_from_slice(extra);
    let out = w.cryo(&args);
    out.assert_refused();
    for m in mentions {
        out.assert_stderr_mentions(m);
    }
    assert!(
        !pid_exists(w.pid()),
        "the refused restore made pid {}",
        w.pid()
    );
    out.stderr.clone()
}

/// A root-only file with other contents.
fn secret(w: &Workload) -> PathBuf {
    let secret = w.path("secret");
    write_file(&secret, b"root only");
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
    secret
}

#[test]
fn a_file_swapped_for_a_symlink_after_the_dump_is_refused() {
    let (w, path, _) = dumped_reader("data");
    let secret = secret(&w);
    fs::remove_file(&path).unwrap();
    symlink(&secret, &path).unwrap();
    refused(&w, &[], &[path.to_str().unwrap(), "symbolic link"]);
    // Not even --accept-changed-files follows a symlink the dump did not see.
    refused(&w, &["--accept-changed-files"], &["symbolic link"]);
    assert_eq!(fs::read(&secret).unwrap(), b"root only");
}

#[test]
fn a_directory_on_the_path_swapped_for_a_symlink_is_refused() {
    let (w, path, data) = dumped_reader("sub/data");
    let sub = path.parent().unwrap().to_owned();
    let elsewhere = w.path("elsewhere");
    fs::rename(&sub, &elsewhere).unwrap();
    symlink(&elsewhere, &sub).unwrap();
    assert_eq!(
        fs::read(&path).unwrap(),
        data,
        "the symlink leads to the same bytes"
    );
    refused(&w, &[], &["symbolic link"]);
}

#[test]
fn a_file_replaced_by_another_is_refused_unless_accepted() {
    let (mut w, path, data) = dumped_reader("data");
    // Same path, same bytes, another file the process never had open (tmpfs may even give
    // it the same inode number: its times tell it apart).
    fs::remove_file(&path).unwrap();
    write_file(&path, &data);
    let err = refused(
        &w,
        &[],
        &[
            path.to_str().unwrap(),
            "not the file the dump saw",
            "--accept-changed-files",
        ],
    );
    assert!(!err.contains("4096"), "the refusal says the size:\n{err}");
    let img = w.path("img");
    w.restore_detached_with(&img, &["--accept-changed-files"]);
    assert_eq!(w.cmd("next"), format!("5 {}", data[5]));
    w.kill_restored();
}

#[test]
fn a_file_grown_since_the_dump_is_refused_naming_size() {
    let (w, path, mut data) = dumped_reader("data");
    data.extend_from_slice(b"more");
    let f = fs::OpenOptions::new().append(true).open(&path).unwrap();
    std::io::Write::write_all(&mut &f, b"more").unwrap();
    drop(f);
    refused(&w, &[], &[path.to_str().unwrap(), "size"]);
}

#[test]
fn an_untouched_file_is_restored() {
    let (mut w, _path, data) = dumped_reader("data");
    let img = w.path("img");
    w.restore_detached(&img);
    assert_eq!(w.cmd("next"), format!("5 {}", data[5]));
    w.kill_restored();
}

/// Rewrites files.img of `img` through `change` on each deleted regular file record.
fn forge_ghosts(img: &Path, change: fn(&mut cryo_proto::image::RegularFile)) {
    let path = img.join("files.img");
    let mut descs: Vec<FileDesc> = cryo_proto::frame::read_image(&path, ImageKind::Files).unwrap();
    let mut forged = 0;
    for d in &mut descs {
        if let Some(Kind::Regular(r)) = &mut d.kind {
            if r.deleted {
                change(r);
                forged += 1;
            }
        }
    }
    assert!(forged > 0, "no deleted file in the image");
    fs::remove_file(&path).unwrap();
    cryo_proto::frame::write_image(&path, ImageKind::Files, &descs).unwrap();
}

#[test]
fn a_forged_set_uid_deleted_file_record_in_another_users_image_is_refused() {
    cryo_bin();
    let mut w = Workload::spawn("deleted-file", &["8192", "3"]);
    w.cmd("read");
    let img = w.path("img");
    w.dump_ok(&img);
    forge_ghosts(&img, |r| {
        r.mode = (r.mode & !0o7777) | 0o4755;
        r.uid = 0;
    });
    // As if user nobody had written it: root trusts its owner, not a set-uid root file.
    let nobody = 65534;
    std::os::unix::fs::chown(&img, Some(nobody), Some(nobody)).unwrap();
    for entry in fs::read_dir(&img).unwrap() {
        std::os::unix::fs::chown(entry.unwrap().path(), Some(nobody), Some(nobody)).unwrap();
    }
    refused(&w, &["--trust-image-owner"], &["set-uid"]);
}

#[test]
fn a_deleted_set_id_file_of_roots_comes_back_by_its_deleted_name_with_its_mode() {
    deleted_set_id_file_comes_back("setid", "6755 0 0 0");
}

/// The same, owned by another user (zdtm file_attr's): before, refused at dump ("done only for
/// a file of root's").
#[test]
fn a_deleted_set_id_file_of_another_users_comes_back_by_its_deleted_name_with_its_mode_and_owner() {
    deleted_set_id_file_comes_back("setid-other", "6755 18943 18943 0");
}

/// A `deleted-file` workload with set-id file `kind`, whose `stat` reads `stat`, dumped and
/// restored by root from an image only root writes.
#[track_caller]
fn deleted_set_id_file_comes_back(kind: &str, stat: &str) {
    cryo_bin();
    let mut w = Workload::spawn("deleted-file", &["8192", "3", kind]);
    let contents = w.cmd("read");
    assert_eq!(w.cmd("stat"), stat);
    let relink = w.path("relinked").display().to_string();
    // Unlinked, it cannot be given a name again.
    assert_eq!(w.cmd(&format!("relink {relink}")), libc::ENOENT.to_string());
    let names = deleted_names(&w);
    assert_eq!(names.len(), 1, "{names:?}");
    w.dump_and_restore();
    assert_eq!(w.cmd("read"), contents);
    assert_eq!(w.cmd("stat"), stat);
    // Made at its path, unlinked before it was made set-id (before: unnamed, "DIR/#INO").
    assert_eq!(deleted_names(&w), names, "the fd's deleted name");
    // Nor can its copy (unlinked before it was set-id): no name ever leads to a set-id copy.
    assert_eq!(w.cmd(&format!("relink {relink}")), libc::ENOENT.to_string());
    assert!(!Path::new(&relink).exists());
    w.kill_restored();
}

/// What the fds of `w` that read "... (deleted)" read.
fn deleted_names(w: &Workload) -> Vec<String> {
    parse_fds(&w.cmd("fds"))
        .into_values()
        .filter(|t| t.ends_with(" (deleted)"))
        .collect()
}

/// A "unix-listen" workload bound to `sub/l.sock` in a temp dir, dumped (its socket file
/// left behind, stale); returns it, the temp dir and the socket path.
fn dumped_listener() -> (Workload, tempfile::TempDir, PathBuf) {
    cryo_bin();
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("sub")).unwrap();
    let path = dir.path().join("sub/l.sock");
    let mut w = Workload::spawn("unix-listen", &[path.to_str().unwrap()]);
    assert_eq!(w.cmd("ping"), "pong");
    let img = w.path("img");
    w.dump_ok(&img);
    (w, dir, path)
}

/// Whether a connection to `path` reaches `service` (the live socket is still the one bound).
#[track_caller]
fn still_served(path: &Path, service: &std::os::unix::net::UnixListener) {
    let _c = std::os::unix::net::UnixStream::connect(path).expect("the live socket is gone");
    service.set_nonblocking(true).unwrap();
    service
        .accept()
        .expect("the connection reached another socket");
}

#[test]
fn a_socket_directory_swapped_for_a_symlink_is_refused_and_nothing_deleted() {
    let (w, dir, path) = dumped_listener();
    // Another service's live socket, in a directory the symlink leads to.
    let service_dir = dir.path().join("service");
    fs::create_dir(&service_dir).unwrap();
    let service = std::os::unix::net::UnixListener::bind(service_dir.join("l.sock")).unwrap();
    fs::rename(dir.path().join("sub"), dir.path().join("sub-old")).unwrap();
    symlink(&service_dir, dir.path().join("sub")).unwrap();
    refused(&w, &[], &["no symlinks"]);
    still_served(&path, &service);
}

#[test]
fn a_live_socket_bound_where_the_dump_was_is_left_alone() {
    let (w, _dir, path) = dumped_listener();
    fs::remove_file(&path).unwrap();
    let service = std::os::unix::net::UnixListener::bind(&path).unwrap();
    refused(&w, &[], &["another socket is bound there"]);
    still_served(&path, &service);
}
