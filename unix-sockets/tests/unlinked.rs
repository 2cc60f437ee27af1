//! Binding a socket whose file is gone (cryo_unix_sockets::unlinked), as root, each test in
//! its own temp dir: the name comes back, no file is left, whatever was at the path stays,
//! also when the bind fails; and what the dump checks.

use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixDatagram, UnixListener};

use cryo_unix_sockets::restore;
use cryo_unix_sockets::unlinked::{bind_unlinked, check_rebind, reach, socket_file};
use cryo_unix_sockets::{SockType, UnixName};

fn names_in(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn socket_file_tells_linked_from_unlinked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let l = UnixListener::bind(&path).unwrap();
    let f = socket_file(&l).unwrap().expect("bound to a path");
    assert_eq!(f.path, path);
    assert!(!f.unlinked);
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, b"other").unwrap();
    let f = socket_file(&l).unwrap().unwrap();
    assert!(f.unlinked, "its file is gone though a file has its path");
    let unbound = UnixDatagram::unbound().unwrap();
    assert_eq!(socket_file(&unbound).unwrap(), None);
}

#[test]
fn a_taken_path_keeps_its_file_and_the_socket_its_name_through_the_kept_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    std::fs::write(&path, b"someone else's").unwrap();
    let s = restore::socket(SockType::Dgram).unwrap();
    let file = bind_unlinked(&s, &UnixName::Path(path.clone())).unwrap();
    assert_eq!(
        restore::local_name(&s).unwrap(),
        UnixName::Path(path.clone())
    );
    assert_eq!(std::fs::read(&path).unwrap(), b"someone else's");
    assert_eq!(names_in(dir.path()), ["s"], "nothing left beside it");
    // Reached through the kept file: the datagram arrives.
    let c = UnixDatagram::unbound().unwrap();
    let UnixName::Path(via) = reach(&file) else {
        panic!("a path")
    };
    c.send_to(b"hi", via).unwrap();
    let mut buf = [0u8; 4];
    let n = nix::sys::socket::recv(
        std::os::fd::AsRawFd::as_raw_fd(&s),
        &mut buf,
        nix::sys::socket::MsgFlags::MSG_DONTWAIT,
    )
    .unwrap();
    assert_eq!(&buf[..n], b"hi");
}

#[test]
fn a_failed_bind_puts_the_other_file_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    // Already bound: the second bind fails (EINVAL) after the FIFO was moved aside.
    let s = restore::socket(SockType::Stream).unwrap();
    let elsewhere = dir.path().join("first");
    restore::bind_name(&s, &UnixName::Path(elsewhere.clone()), None).unwrap();
    let e = bind_unlinked(&s, &UnixName::Path(path.clone()));
    assert!(e.is_err());
    assert!(std::fs::symlink_metadata(&path)
        .unwrap()
        .file_type()
        .is_fifo());
    assert_eq!(names_in(dir.path()), ["first", "s"]);
}

#[test]
fn missing_directories_are_made_and_removed_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a/b/s");
    let s = restore::socket(SockType::Dgram).unwrap();
    let _file = bind_unlinked(&s, &UnixName::Path(path.clone())).unwrap();
    assert_eq!(restore::local_name(&s).unwrap(), UnixName::Path(path));
    assert!(names_in(dir.path()).is_empty(), "a and a/b removed");
}

#[test]
fn a_relative_name_is_bound_elsewhere_and_stays_relative() {
    let s = restore::socket(SockType::Dgram).unwrap();
    let name = UnixName::Path("rel-cryo-test.sock".into());
    let cwd = std::env::current_dir().unwrap();
    let _file = bind_unlinked(&s, &name).unwrap();
    assert_eq!(restore::local_name(&s).unwrap(), name);
    assert_eq!(std::env::current_dir().unwrap(), cwd, "the process's cwd");
    assert!(!cwd.join("rel-cryo-test.sock").exists());
}

#[test]
fn check_rebind_refuses_what_the_restore_could_not_do() {
    let dir = tempfile::tempdir().unwrap();
    assert!(check_rebind(&dir.path().join("gone/deeper/s")).is_ok());
    std::fs::write(dir.path().join("file"), b"").unwrap();
    let e = check_rebind(&dir.path().join("file/s")).unwrap_err();
    assert!(e.contains("not a directory"), "{e}");
    // A read-only filesystem, in a mount namespace of a thread's own.
    let ro = dir.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    let ro2 = ro.clone();
    let e = std::thread::spawn(move || {
        use nix::mount::{mount, MsFlags};
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).unwrap();
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .unwrap();
        mount(
            Some("tmpfs"),
            &ro2,
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .unwrap();
        check_rebind(&ro2.join("s"))
    })
    .join()
    .unwrap()
    .unwrap_err();
    assert!(e.contains("read-only"), "{e}");
}
