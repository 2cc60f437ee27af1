//! Mount namespaces: a process in one of its own, with a tmpfs holding its files (one open, one
//! mapped, its working directory there) and a read-only bind mount, comes back in a new one
//! made the same; the test's own namespace (cryo's) never sees those mounts. A mount of
//! another kind, and a namespace shared with a process outside the dump, are refused naming
//! them.
//!
//! Needs the engine: `cryo` must be built (`cargo build -p cryo`).

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use cryo_tests::{cryo_bin, Workload};

/// The mtime the workload gives its tmpfs files (tests/src/workload/mount_ns.rs).
const MTIME: i64 = 1_600_000_000;

/// The access time it gives the open file: ahead of now, so reads never move it (relatime).
const ATIME: i64 = 4_000_000_000;

/// What the workload observes through its fd, mapping, paths and mount table, one reply a line.
fn observe(w: &Workload) -> Vec<String> {
    let (tmp, ro) = (w.path("tmp"), w.path("ro"));
    let lines = [
        format!("stat {}/data.txt", tmp.display()),
        format!("stat {}/quiet.txt", tmp.display()),
        format!("stat {}", tmp.display()),
        "fd".to_string(),
        "map".to_string(),
        format!("read {}/data.txt", tmp.display()),
        format!("read {}/host.txt", ro.display()),
        format!("readlink {}/link", tmp.display()),
        "read ../link".to_string(),
        "cwd".to_string(),
        format!("mount {}", tmp.display()),
        format!("mount {}", ro.display()),
        format!("read {}/bound", tmp.display()),
        format!("mount {}/bound", tmp.display()),
    ];
    lines
        .iter()
        .map(|l| format!("{l} -> {}", w.cmd(l)))
        .collect()
}

/// Checks what the workload observes of its mounts, and that the test's namespace has none.
fn check_observed(w: &Workload, seen: &[String]) {
    let (tmp, ro) = (w.path("tmp"), w.path("ro"));
    let expected = [
        "fd -> 5 tmpfs file written before the dump".to_string(),
        "map -> mapped from tmpf".to_string(),
        format!(
            "read {}/data.txt -> tmpfs file written before the dump",
            tmp.display()
        ),
        format!("read {}/host.txt -> seen through the bind", ro.display()),
    ];
    assert_eq!(seen[3..7], expected, "{seen:#?}");
    let stat = |i: usize| seen[i].rsplit_once("-> ").unwrap().1.to_string();
    assert_eq!(
        stat(0),
        format!("640 1234 5678 {MTIME} {}", ATIME * 1_000_000_000),
        "{seen:#?}"
    );
    assert_eq!(
        stat(1),
        format!("644 0 0 {MTIME} {}", (MTIME - 100) * 1_000_000_000),
        "quiet.txt, never read: {seen:#?}"
    );
    assert!(
        stat(2).starts_with("1751 0 0 "),
        "the tmpfs root: {seen:#?}"
    );
    assert_eq!(stat(7), "data.txt");
    assert_eq!(stat(8), "tmpfs file written before the dump");
    assert_eq!(stat(9), format!("{}/sub", tmp.display()));
    assert_eq!(
        stat(10),
        "rw,nosuid,nodev,relatime rw,size=2048k,nr_inodes=400,mode=1751"
    );
    assert!(stat(11).starts_with("ro,nosuid,relatime "), "{seen:#?}");
    assert_eq!(
        stat(12),
        "seen through the bind",
        "a file bound on a tmpfs file"
    );
    assert!(stat(13).starts_with("ro,relatime "), "{seen:#?}");
    // Cryo's namespace (this test's) has none of it.
    assert!(
        !tmp.join("data.txt").exists(),
        "the tmpfs leaked into cryo's namespace"
    );
    assert_eq!(
        std::fs::read_dir(&ro).unwrap().count(),
        0,
        "the bind leaked"
    );
    let ours = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !ours.contains(&*w.dir().to_string_lossy()),
        "cryo's namespace shows the workload's mounts:\n{ours}"
    );
}

/// Writes through the mounts: the read-only bind refuses with EROFS, the tmpfs takes it.
fn check_writes(w: &Workload) {
    let (tmp, ro) = (w.path("tmp"), w.path("ro"));
    assert_eq!(w.cmd(&format!("write {}/new", ro.display())), "errno 30");
    assert_eq!(
        w.cmd(&format!("write {}/host.txt", ro.display())),
        "errno 30"
    );
    assert_eq!(w.cmd(&format!("write {}/bound", tmp.display())), "errno 30");
    assert_eq!(w.cmd(&format!("write {}/new.txt", tmp.display())), "ok");
    assert_eq!(w.cmd(&format!("read {}/new.txt", tmp.display())), "x");
    assert!(!tmp.join("new.txt").exists());
}

fn mnt_ns(pid: i32) -> std::path::PathBuf {
    std::fs::read_link(format!("/proc/{pid}/ns/mnt")).unwrap()
}

#[test]
fn a_process_in_its_own_mount_namespace_comes_back_with_its_tmpfs_and_bind_mounts() {
    cryo_bin();
    let _shared = cryo_tests::cryos_mounts_kept();
    let mut w = Workload::spawn("mount-ns", &[]);
    let before = observe(&w);
    check_observed(&w, &before);
    w.dump_and_restore();
    let after = observe(&w);
    assert_eq!(after, before, "what the restored process observes");
    check_observed(&w, &after);
    assert_ne!(mnt_ns(w.pid()), mnt_ns(std::process::id() as i32));
    check_writes(&w);
}

/// A file and a device opened before the process made its mount namespace (zdtm
/// mntns_open): their fds are on mounts of cryo's namespace, not of the process's own, and
/// come back so: reopened through the parent's /proc/PID/root, not by their paths in the
/// namespace made again.
#[test]
fn a_file_opened_before_the_namespace_was_made_comes_back_on_a_mount_of_cryos() {
    cryo_bin();
    let _shared = cryo_tests::cryos_mounts_kept();
    let mut w = Workload::spawn("mount-ns", &["held-before"]);
    let before = w.cmd("held-before");
    assert_eq!(
        before,
        "ours:false init's:true seen through the bind /dev/null ours:false init's:true"
    );
    w.dump(&w.path("left"), &["--leave-running"])
        .assert_success();
    assert_eq!(w.cmd("held-before"), before);
    w.dump_and_restore();
    assert_eq!(w.cmd("held-before"), before);
    assert_ne!(mnt_ns(w.pid()), mnt_ns(std::process::id() as i32));
    w.kill_restored();
}

/// A unix listener bound before the process made its mount namespace: bound again in the
/// namespace made again, where its path leads to the same file, a client in cryo's
/// namespace reaches it by that path; where a mount of the namespace's own covers the path
/// now, the restore would bind it on that mount instead (it did, silently): refused.
#[test]
fn a_unix_listener_bound_before_the_namespace_was_made_comes_back_at_its_path_or_is_refused() {
    cryo_bin();
    let _shared = cryo_tests::cryos_mounts_kept();
    let mut w = Workload::spawn("mount-ns", &["sock-before:src"]);
    let path = w.dir().join("src/before.sock");
    w.dump_and_restore();
    assert_listener_answers(&w, &path);
    w.kill_restored();

    let w = Workload::spawn("mount-ns", &["sock-before:tmp"]);
    w.assert_dump_refused("47", "before its mount namespace was made");
}

/// A unix listener bound inside a namespace with a root of its own, at a path that is not its
/// path in cryo's namespace (/d/inside.sock there, DIR/inside.sock here, as a container's
/// files are): it comes back bound at it, a client in cryo's namespace reaches it. Before,
/// the dump was refused ("whose socket file is not the file at that path as cryo sees it").
#[test]
fn a_unix_listener_bound_inside_a_pivoted_namespace_comes_back_at_its_path_there() {
    cryo_bin();
    let _shared = cryo_tests::cryos_mounts_kept();
    let mut w = Workload::spawn("mount-ns", &["pivot", "sock-inside"]);
    let path = w.dir().join("inside.sock");
    w.dump_and_restore();
    assert_listener_answers(&w, &path);
    w.kill_restored();
}

/// An inotify watch added inside a namespace with a root of its own, on a path that is not
/// the file's path in cryo's namespace (/d/watched there): added again there, its events
/// seen. Before, the dump was refused ("the inode ... is not reachable by path").
#[test]
fn an_inotify_watch_inside_a_pivoted_namespace_comes_back_on_its_path_there() {
    answers_the_same_after_restore(&["pivot", "inotify-inside"], "inotify-touch", "8 wd1");
}

/// An fd on the process's own network namespace opened through the namespace's own /proc (a
/// container's /proc/self/ns/net, zdtm proc-self in the ns flavour): reopened as
/// /proc/self/ns/net, whatever proc the process sees. Before, refused ("file /proc/N/ns/net of
/// cryo's /proc ... reopened by its path, it would be found on this mount").
#[test]
fn a_namespace_fd_of_its_own_through_the_namespaces_proc_comes_back() {
    answers_the_same_after_restore(&["pivot", "ns-fd"], "ns-fd", "same");
}

/// A pty of the namespace's own devpts instance on /dev/pts (a container's terminal): it comes
/// back in the new instance the restore mounts there, with its index and its unread input,
/// whatever cryo's /dev/pts holds (a pty of cryo's is held open meanwhile, perhaps with the
/// same index). Before, the dump was refused ("is a devpts instance of the namespace's own
/// holding ptys (0)").
#[test]
fn a_pty_of_the_namespaces_own_devpts_comes_back_in_the_new_instance() {
    cryo_bin();
    let _shared = cryo_tests::cryos_mounts_kept();
    let _one = cryo_tests::pty_turn();
    let mut w = Workload::spawn("mount-ns", &["pivot", "devpts-own"]);
    let before = w.cmd("pty");
    assert_eq!(before, "0 /dev/pts/0 same:true");
    let cryos = std::fs::metadata("/dev/pts").unwrap().dev().to_string();
    assert_ne!(w.cmd("pty-dev"), cryos, "of an instance of its own");
    let img = w.path("img");
    w.dump_ok(&img);
    let ours = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/ptmx")
        .unwrap();
    w.restore_background(&img);
    assert_eq!(w.cmd("pty"), before, "its index, name and instance");
    assert_ne!(w.cmd("pty-dev"), cryos, "of an instance of its own");
    assert_eq!(w.cmd("pty-read"), "typed before", "its unread input");
    assert_eq!(w.cmd("pty-write after"), "ok");
    assert_eq!(w.cmd("pty-read"), "after");
    drop(ours);
    w.kill_restored();
}

/// A pty of the namespace's own devpts bound on /console, as a container's /dev/console (zdtm
/// pty-console): the bind comes back on the pty made again in the new instance, once the
/// process made it (cryo binds it late). Before: refused ("is a devpts instance mounted more
/// than once").
#[test]
fn a_pty_bound_on_the_console_comes_back_bound_to_the_new_instances_pty() {
    cryo_bin();
    let _shared = cryo_tests::cryos_mounts_kept();
    let _one = cryo_tests::pty_turn();
    let mut w = Workload::spawn("mount-ns", &["pivot", "devpts-own", "console"]);
    let seen = |w: &Workload| {
        let console = w.cmd("node /console");
        let slave = w.cmd("node /dev/pts/0");
        // Type and device: the same pty (inodes and times aside).
        let kind = |n: &str| n.split(' ').take(2).collect::<Vec<_>>().join(" ");
        (
            kind(&console),
            kind(&slave),
            w.cmd("root /console"),
            w.cmd("pty"),
        )
    };
    let before = seen(&w);
    assert_eq!(before.0, before.1, "/console is the pty: {before:?}");
    w.dump_and_restore();
    assert_eq!(seen(&w), before, "the restored process");
    assert_eq!(w.cmd("pty-read"), "typed before", "its unread input");
    w.kill_restored();
}

/// Files removed while held open in a namespace with a root of its own (zdtm rmdir_open,
/// fifo-ghost, deleted_dev in the ns flavour), each made again for an instant by its holder
/// in the namespace made again, then removed. A directory whose parent is gone too: in the
/// nearest directory still there, on the same filesystem; before, made on another (the
/// namespace's temporary directory), and with none there the restore failed after the dump
/// had killed the process ("no free temporary name"). A FIFO with its bytes and a device node:
/// before, refused ("found again in cryo's namespace, not in the one made").
#[test]
fn files_removed_in_a_pivoted_namespace_come_back_removed_on_their_filesystem() {
    cryo_bin();
    let _shared = cryo_tests::cryos_mounts_kept();
    let mut w = Workload::spawn("mount-ns", &["pivot", "removed"]);
    let null = w.cmd("removed-null");
    assert!(
        null.starts_with("1:3 0 ") && null.ends_with(" (deleted)"),
        "{null}"
    );
    let before = w.cmd("removed-dir");
    let dev = before.split(' ').next().unwrap().to_string();
    assert!(before.contains(" 0 "), "no link left: {before}");
    w.dump_and_restore();
    let after = w.cmd("removed-dir");
    assert!(
        after.starts_with(&format!("{dev} 0 ")),
        "{before} -> {after}"
    );
    assert!(after.ends_with(" (deleted)"), "{after}");
    assert!(
        !w.dir().join("gone").exists(),
        "the directory made again is gone"
    );
    assert_eq!(
        w.cmd("removed-fifo"),
        "0 queued",
        "the FIFO, removed, with its bytes"
    );
    assert_eq!(w.cmd("removed-null"), null, "the device node, removed");
    w.kill_restored();
}

/// The workload's unix listener at fd 47 (bound to `path`) accepts a client of cryo's
/// namespace connecting to `path`.
fn assert_listener_answers(w: &Workload, path: &std::path::Path) {
    let mut client = std::os::unix::net::UnixStream::connect(path)
        .unwrap_or_else(|e| panic!("connect to {}: {e}", path.display()));
    assert_eq!(w.cmd("accept-before"), "ok");
    let mut got = String::new();
    std::io::Read::read_to_string(&mut client, &mut got).unwrap();
    assert_eq!(got, "accepted", "the restored listener answers at its path");
}

/// The mount-ns workload with `extras` answers `cmd` with `want` before a dump and after its
/// restore.
fn answers_the_same_after_restore(extras: &[&str], cmd: &str, want: &str) {
    cryo_bin();
    let _shared = cryo_tests::cryos_mounts_kept();
    let mut w = Workload::spawn("mount-ns", extras);
    assert_eq!(w.cmd(cmd), want, "before the dump");
    w.dump_and_restore();
    assert_eq!(w.cmd(cmd), want, "after the restore");
    w.kill_restored();
}

/// A deleted name of a file with another link, on the namespace's own tmpfs, its directory
/// removed too (zdtm unlink_regular00): the inode comes back on the copy under its other name,
/// the fd naming the deleted name, a write through it read through that name, the directory
/// still gone. Before: refused at dump ("its inode is not found again on the copy").
#[test]
fn a_deleted_name_of_a_linked_file_on_the_namespaces_tmpfs_comes_back_the_same_inode() {
    deleted_name_of_a_linked_file(&["linked-deleted"], "tmp");
}

/// The same on a bind of cryo's path in a namespace with a root of its own (zdtm
/// unlink_fstat03 in the ns flavour): the inode found again by its handle. Before, refused
/// ("has another link, not found on the namespace's own tmpfs").
#[test]
fn a_deleted_name_of_a_linked_file_on_a_bind_in_a_pivoted_namespace_comes_back_the_same_inode() {
    deleted_name_of_a_linked_file(&["pivot", "linked-deleted-bind"], "");
}

/// A deleted name of a file with another link, its directory removed (`extras` of the
/// mount-ns workload put them in DIR/`under`): the fd names it, the inode is the other name's.
fn deleted_name_of_a_linked_file(extras: &[&str], under: &str) {
    cryo_bin();
    let _shared = cryo_tests::cryos_mounts_kept();
    let mut w = Workload::spawn("mount-ns", extras);
    let tmp = match under {
        "" => w.dir().to_path_buf(),
        under => w.dir().join(under),
    };
    let before = w.cmd("linked");
    assert_eq!(before, format!("{}/gone/f (deleted)", tmp.display()));
    let not_there = |w: &Workload| {
        let listed = w.cmd(&format!("ls {}", tmp.display()));
        assert!(
            !listed.split(' ').any(|n| n == "gone"),
            "the removed directory stays removed: {listed}"
        );
    };
    not_there(&w);
    w.dump_and_restore();
    assert_eq!(w.cmd("linked"), before);
    assert_eq!(w.cmd(&format!("read {}/other", tmp.display())), "linked");
    assert_eq!(w.cmd("linked-write LINKED"), "ok");
    assert_eq!(
        w.cmd(&format!("read {}/other", tmp.display())),
        "LINKED",
        "one inode under both names"
    );
    not_there(&w);
    w.kill_restored();
}

#[test]
fn a_mount_namespace_dumped_leaving_the_process_running_is_untouched_and_restores() {
    cryo_bin();
    let _shared = cryo_tests::cryos_mounts_kept();
    let mut w = Workload::spawn("mount-ns", &[]);
    let before = observe(&w);
    let mountinfo = std::fs::read_to_string(format!("/proc/{}/mountinfo", w.pid())).unwrap();
    let quiet = format!(
        "/proc/{}/root{}/quiet.txt",
        w.pid(),
        w.path("tmp").display()
    );
    let atime = std::fs::metadata(&quiet).unwrap().atime();
    assert_eq!(atime, MTIME - 100);
    let img = w.path("img");
    w.dump(&img, &["--leave-running"]).assert_success();
    w.assert_untouched();
    assert_eq!(observe(&w), before, "the original after the dump");
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{}/mountinfo", w.pid())).unwrap(),
        mountinfo,
        "the original's mounts"
    );
    assert_eq!(
        std::fs::metadata(&quiet).unwrap().atime(),
        atime,
        "the copy read its files without touching their access times"
    );
    w.kill_original();
    w.restore_background(&img);
    assert_eq!(observe(&w), before, "the restored process");
    check_writes(&w);
}

#[test]
fn a_child_in_a_mount_namespace_made_inside_its_parents_comes_back_sharing_its_parents_mounts() {
    child_in_a_namespace_inside_its_parents(&["nested"], |_, _| {});
}

/// The same inside a parent whose namespace has a root of its own (pivot_root), which the
/// child's shares (zdtm's ns flavour: a test that unshares inside its container). Before:
/// refused ("made inside its parent's namespace ..., one of the two with a root of its own").
#[test]
fn a_child_in_a_mount_namespace_made_inside_its_parents_pivoted_one_comes_back_in_it() {
    child_in_a_namespace_inside_its_parents(&["pivot", "nested"], |_, _| {});
}

/// The same with a grandchild the child forked before it made its namespace (zdtm
/// tempfs_subns): the grandchild comes back in the workload's namespace, not its parent's,
/// seeing the workload's tmpfs and not the child's. Before: refused ("shares its mount
/// namespace ... with pid N, which is not its ancestor in it").
#[test]
fn a_grandchild_left_in_its_grandparents_mount_namespace_comes_back_in_it() {
    child_in_a_namespace_inside_its_parents(&["nested", "nested-back"], |w, kid| {
        let children = std::fs::read_to_string(format!("/proc/{kid}/task/{kid}/children")).unwrap();
        let [grandchild] = children
            .split_whitespace()
            .map(|p| p.parse::<i32>().unwrap())
            .collect::<Vec<_>>()[..]
        else {
            panic!("one grandchild: {children:?}")
        };
        assert_eq!(mnt_ns(grandchild), mnt_ns(w.pid()));
        assert_ne!(mnt_ns(grandchild), mnt_ns(kid));
        let seen = |name: &str| {
            std::fs::read_to_string(format!(
                "/proc/{grandchild}/root{}",
                w.path("tmp").join(name).display()
            ))
        };
        assert_eq!(seen("after.txt").unwrap(), "x");
        assert!(
            seen("inner/f").is_err(),
            "the child's tmpfs is not the grandchild's"
        );
    });
}

/// What the workload's jailed child `kid` observes ("jailed"), its root checked to be the
/// one /proc shows for it (its inode taken off the answer).
fn jail_view(w: &Workload, kid: i32) -> String {
    let seen = w.cmd("jailed");
    let (ino, rest) = seen.split_once(' ').unwrap();
    let root = std::fs::metadata(format!("/proc/{kid}/root")).unwrap();
    assert_eq!(ino, format!("root-ino:{}", root.ino()), "{seen}");
    rest.to_string()
}

/// A child chrooted into a directory of its namespace's tmpfs (zdtm chroot and chroot-file
/// in a container: a jail that is no mount of its own, so its mountinfo is empty) comes back
/// in that jail: its root the jail of the namespace made again, its working directory, its
/// open file and the same file reopened by its path inside the jail. A `--leave-running`
/// dump leaves it as it was. Before: refused ("its root is ... (chroot) in a mount namespace
/// of its own: not restored").
#[test]
fn a_chrooted_child_in_the_namespace_comes_back_in_its_jail() {
    cryo_bin();
    let _shared = cryo_tests::cryos_mounts_kept();
    let mut w = Workload::spawn("mount-ns", &["jailed"]);
    let jail = w.path("tmp").join("jail");
    let view = |w: &Workload| {
        let seen = w.cmd("jailed");
        let (ino, rest) = seen.split_once(' ').unwrap();
        let node = w.cmd(&format!("node {}", jail.display()));
        assert_eq!(
            ino.strip_prefix("root-ino:"),
            node.rsplit(' ').next(),
            "its root is the jail: {seen} / {node}"
        );
        rest.to_string()
    };
    let before = view(&w);
    assert_eq!(
        before,
        "cwd:/sub fd:written in the jail open:written in the jail same:true"
    );
    w.dump(&w.path("left"), &["--leave-running"])
        .assert_success();
    assert_eq!(view(&w), before, "after a --leave-running dump");
    w.dump_and_restore();
    assert_eq!(view(&w), before, "the restored child");
    assert_ne!(mnt_ns(w.pid()), mnt_ns(std::process::id() as i32));
    w.kill_restored();
}

/// A child that made a mount namespace of its own, a tmpfs in it, and chrooted into a directory
/// of that tmpfs: the namespace's only process is in a jail whose mountinfo shows no mount,
/// so the namespace is read through a view of its root, not through the process's; it comes
/// back in the jail of the namespace made again. Before: refused as above.
#[test]
fn a_namespace_whose_only_process_is_chrooted_comes_back_with_it_in_its_jail() {
    cryo_bin();
    let _shared = cryo_tests::cryos_mounts_kept();
    let mut w = Workload::spawn("mount-ns", &["jailed-maker"]);
    let [kid] = w.kids()[..] else {
        panic!("one child: {:?}", w.kids())
    };
    let view = |w: &Workload| jail_view(w, kid);
    let before = view(&w);
    assert_eq!(
        before,
        "cwd:/sub fd:written in the jail open:written in the jail same:true"
    );
    w.dump_and_restore();
    assert_eq!(view(&w), before, "the restored child");
    let mounts = std::fs::read_to_string(format!("/proc/{kid}/mountinfo")).unwrap();
    assert!(mounts.is_empty(), "its jail shows no mount: {mounts}");
    assert!(mnt_ns(kid) != mnt_ns(w.pid()) && mnt_ns(w.pid()) != mnt_ns(std::process::id() as i32));
    w.kill_restored();
}

/// A child that made a mount namespace of its own and pivoted into a tmpfs there, the old
/// root detached (zdtm mntns_pivot_root: a nested container's init): no proc in it, and its
/// executable and libraries are files of its parent's namespace it cannot reach by path. It
/// comes back so: its root a new tmpfs with its files, its executable mapped from its
/// parent's namespace (where the dump found it), nothing else mounted. Before: refused ("made
/// inside its parent's namespace, one of the two with a root of its own"; then "is no longer
/// at its path in the namespace").
#[test]
fn a_child_pivoted_into_a_tmpfs_of_its_own_comes_back_with_its_executable_from_outside() {
    cryo_bin();
    let _shared = cryo_tests::cryos_mounts_kept();
    let mut w = Workload::spawn("mount-ns", &["pivoted-kid"]);
    let [kid] = w.kids()[..] else {
        panic!("one child: {:?}", w.kids())
    };
    let view = |w: &Workload| jail_view(w, kid);
    let exe = || std::fs::read_link(format!("/proc/{kid}/exe")).unwrap();
    let mounts = || {
        std::fs::read_to_string(format!("/proc/{kid}/mountinfo"))
            .unwrap()
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                let sep = f.iter().position(|&x| x == "-").unwrap();
                format!("{} {} {}", f[4], f[sep + 1], f[sep + 2])
            })
            .collect::<Vec<_>>()
    };
    let before = (view(&w), exe(), mounts());
    assert_eq!(
        before.0,
        "cwd:/sub fd:written in the jail open:written in the jail same:true"
    );
    assert_eq!(before.2, ["/ tmpfs cryo-jail"]);
    w.dump_and_restore();
    assert_eq!((view(&w), exe(), mounts()), before, "the restored child");
    w.kill_restored();
}

/// Socket files on the namespace's own tmpfs (zdtm sk-unix-mntns): a listener bound there
/// answers at its path again, and a stale socket file (its socket closed) is still there, a
/// socket file nobody listens on. Before: refused ("holds /tmpfs.sock of a type not copied").
#[test]
fn socket_files_on_the_namespaces_tmpfs_come_back_bound_or_stale() {
    cryo_bin();
    let _shared = cryo_tests::cryos_mounts_kept();
    let mut w = Workload::spawn("mount-ns", &["sock-tmpfs"]);
    let tmp = w.path("tmp");
    let seen = |w: &Workload, name: &str| {
        std::path::PathBuf::from(format!("/proc/{}/root{}/{name}", w.pid(), tmp.display()))
    };
    let stale = |w: &Workload| {
        let path = seen(w, "stale.sock");
        let kind = std::fs::symlink_metadata(&path).map(|m| {
            use std::os::unix::fs::FileTypeExt;
            (m.file_type().is_socket(), m.mode() & 0o7777)
        });
        let refused = std::os::unix::net::UnixStream::connect(&path)
            .map_err(|e| e.raw_os_error())
            .err();
        (kind.ok(), refused)
    };
    let before = stale(&w);
    assert_eq!(before.1, Some(Some(libc::ECONNREFUSED)), "{before:?}");
    assert_listener_answers(&w, &seen(&w, "tmpfs.sock"));
    w.dump_and_restore();
    assert_eq!(stale(&w), before, "the stale socket file");
    assert_listener_answers(&w, &seen(&w, "tmpfs.sock"));
    w.kill_restored();
}

/// A mount of cryo's remounted read-only in the namespace (its root: a service of systemd's
/// with ProtectSystem=strict): it comes back read-only there, cryo's own still writable, the
/// namespace's own mounts as before. Before: refused (the root taken for one of its own, then
/// "a proc mount only the namespace has").
#[test]
fn a_mount_of_cryos_remounted_read_only_in_the_namespace_comes_back_read_only() {
    cryo_bin();
    let _shared = cryo_tests::cryos_mounts_kept();
    let mut w = Workload::spawn("mount-ns", &["remount-ro:/"]);
    let probe = w.path("probe");
    let seen = |w: &Workload| {
        let root = w.cmd("mount /");
        let options = root.split(' ').next().unwrap_or("").to_string();
        (options, w.cmd(&format!("write {}", probe.display())))
    };
    let before = seen(&w);
    assert!(before.0.starts_with("ro,"), "{before:?}");
    assert_eq!(before.1, "errno 30", "{before:?}");
    w.dump_and_restore();
    assert_eq!(seen(&w), before, "the restored process");
    check_writes(&w);
    std::fs::write(&probe, "x").expect("cryo's own root still writable");
    w.kill_restored();
}

/// Cryo's /proc/sys bound read-only on itself in the namespace (systemd's
/// ProtectKernelTunables=): it comes back so, a write there refused (EROFS). Before: refused
/// ("a proc mount only the namespace has").
#[test]
fn a_part_of_cryos_proc_bound_read_only_comes_back_bound_read_only() {
    cryo_bin();
    let _shared = cryo_tests::cryos_mounts_kept();
    let mut w = Workload::spawn("mount-ns", &["protect-kernel"]);
    let seen = |w: &Workload| {
        (
            w.cmd("mount /proc/sys"),
            w.cmd("root /proc/sys"),
            w.cmd("write /proc/sys/vm/drop_caches"),
        )
    };
    let before = seen(&w);
    assert!(before.0.starts_with("ro,"), "{before:?}");
    assert_eq!(before.1, "/sys", "{before:?}");
    assert_eq!(before.2, "errno 30", "{before:?}");
    w.dump_and_restore();
    assert_eq!(seen(&w), before, "the restored process");
    w.kill_restored();
}

/// Stacked mounts (zdtm tempfs_overmounted): two tmpfs on one point, a third on a directory
/// of the upper one. They come back stacked in the same order, each with its files: the
/// lower one's are read at dump from a private copy of the namespace with the upper one
/// unmounted (the namespace itself untouched), and found again once the process unmounts the
/// upper one. Before: refused ("stacked mounts are not made again").
#[test]
fn stacked_tmpfs_mounts_come_back_stacked_with_the_files_of_each() {
    cryo_bin();
    let _shared = cryo_tests::cryos_mounts_kept();
    let mut w = Workload::spawn("mount-ns", &["stacked"]);
    let stack = w.path("stack");
    let table = |w: &Workload| {
        std::fs::read_to_string(format!("/proc/{}/mountinfo", w.pid()))
            .unwrap()
            .lines()
            .filter(|l| l.contains("/stack"))
            .map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                let sep = f.iter().position(|&x| x == "-").unwrap();
                format!("{} {}", f[4], f[sep + 2])
            })
            .collect::<Vec<_>>()
    };
    let seen = |w: &Workload| {
        [
            format!("ls {}", stack.display()),
            format!("read {}/cryo-over.txt", stack.display()),
            format!("read {}/c/cryo-inner.txt", stack.display()),
        ]
        .map(|c| w.cmd(&c))
    };
    let before = (table(&w), seen(&w));
    assert_eq!(before.0.len(), 3, "{before:?}");
    w.dump(&w.path("left"), &["--leave-running"])
        .assert_success();
    assert_eq!(
        (table(&w), seen(&w)),
        before,
        "after a --leave-running dump"
    );
    w.dump_and_restore();
    assert_eq!((table(&w), seen(&w)), before, "the restored process");
    // The lower one, with its file, under the upper one (unmounted with what is on it).
    let inner = stack.join("c");
    assert_eq!(w.cmd(&format!("umount {}", inner.display())), "ok");
    assert_eq!(w.cmd(&format!("umount {}", stack.display())), "ok");
    assert_eq!(
        w.cmd(&format!("ls {}", stack.display())),
        "cryo-under.txt",
        "{:?}",
        table(&w)
    );
    assert_eq!(
        w.cmd(&format!("read {}/cryo-under.txt", stack.display())),
        "cryo-under"
    );
    w.kill_restored();
}

/// The mounts of pid's namespace below `below`, each as "POINT ROOT SOURCE on PARENT: PROP"
/// (its parent's point, root and source, "outside" for one not below it; its propagation,
/// the peer groups named g1, g2... in the order the sorted lines meet them), sorted: the tree
/// with the ids and group numbers left out.
fn mount_tree(pid: i32, below: &std::path::Path) -> Vec<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    let below = below.to_string_lossy();
    let mounts: Vec<(String, String, String, Vec<String>)> = text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let sep = f.iter().position(|&x| x == "-")?;
            let line = format!("{} {} {}", f[4], f[3], f[sep + 2]);
            let optional = f[6..sep].iter().map(|o| o.to_string()).collect();
            Some((f[0].to_string(), f[1].to_string(), line, optional))
        })
        .collect();
    let mut tree: Vec<(String, &Vec<String>)> = mounts
        .iter()
        .filter(|(_, _, line, _)| line.starts_with(&*below))
        .map(|(_, parent, line, optional)| {
            let on = mounts
                .iter()
                .find(|(id, _, l, _)| id == parent && l.starts_with(&*below))
                .map_or("outside", |(_, _, l, _)| l.as_str());
            (format!("{line} on {on}"), optional)
        })
        .collect();
    tree.sort();
    let mut groups: Vec<String> = Vec::new();
    tree.into_iter()
        .map(|(line, optional)| {
            let prop: Vec<String> = optional
                .iter()
                .map(|o| match o.split_once(':') {
                    Some((kind, n)) => {
                        if !groups.iter().any(|g| g == n) {
                            groups.push(n.to_string());
                        }
                        let g = groups.iter().position(|g| g == n).unwrap() + 1;
                        format!("{kind}:g{g}")
                    }
                    None => o.clone(),
                })
                .collect();
            format!("{line}: {}", prop.join(" "))
        })
        .collect()
}

/// Mounts over-mounted since they were made, so that their paths no longer lead to their
/// parents (zdtm tempfs_overmounted01): a bind moved onto a mount made after it, covered
/// mounts under binds of their own parts. They come back on the same parents, each showing
/// the same files, and once the process unmounts what covers them it finds them there.
/// Before: refused ("is mounted on a mount its path no longer leads to (over-mounted since)").
#[test]
fn over_mounted_mounts_come_back_on_their_parents_under_what_covers_them() {
    cryo_bin();
    let _shared = cryo_tests::cryos_mounts_kept();
    let mut w = Workload::spawn("mount-ns", &["overmounted"]);
    let om = w.path("om");
    let seen = |w: &Workload| {
        [
            format!("read {}/a/c/one.txt", om.display()),
            format!("read {}/a/two.txt", om.display()),
            format!("ls {}/a/c/b", om.display()),
            format!("ls {}/b/b", om.display()),
        ]
        .map(|c| w.cmd(&c))
    };
    let before = (mount_tree(w.pid(), &om), seen(&w));
    assert_eq!(before.0.len(), 7, "{before:#?}");
    assert_eq!(before.1, ["one", "two", "c two.txt", "z"].map(String::from));
    w.dump_and_restore();
    assert_eq!(
        (mount_tree(w.pid(), &om), seen(&w)),
        before,
        "the restored process"
    );
    // What covers them unmounted: the tmpfs cryo-om1 itself on om/a, cryo-om2's root on
    // om/b/b.
    for point in ["a/c", "a", "b/b"] {
        assert_eq!(w.cmd(&format!("umount {}/{point}", om.display())), "ok");
    }
    assert_eq!(w.cmd(&format!("ls {}/a", om.display())), "b one.txt");
    assert_eq!(w.cmd(&format!("ls {}/b/b", om.display())), "b");
    w.kill_restored();
}

/// The same, the child's root (its parent's, shared) remounted read-only in its namespace
/// alone (zdtm mntns_ro_root): it comes back read-only there, writable in the parent's.
/// Before: refused ("made inside its parent's namespace ..., one of the two with a root of its
/// own").
#[test]
fn a_child_sharing_its_parents_pivoted_root_remounted_read_only_comes_back_so() {
    let root_of = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
            .unwrap()
            .lines()
            .find(|l| l.split(' ').nth(4) == Some("/"))
            .map(|l| l.split(' ').nth(5).unwrap_or("").to_string())
            .unwrap()
    };
    child_in_a_namespace_inside_its_parents(&["pivot", "nested", "nested-ro-root"], |w, kid| {
        assert!(root_of(kid).starts_with("ro,"), "{}", root_of(kid));
        assert!(root_of(w.pid()).starts_with("rw,"), "{}", root_of(w.pid()));
    });
}

/// A child in a mount namespace made inside its parent's (`extras` of the mount-ns
/// workload) comes back in one made inside its parent's restored one: its own tmpfs, the
/// parent's shared (one superblock).
fn child_in_a_namespace_inside_its_parents(extras: &[&str], also: impl FnOnce(&Workload, i32)) {
    cryo_bin();
    let _shared = cryo_tests::cryos_mounts_kept();
    let mut w = Workload::spawn("mount-ns", extras);
    let [kid] = w.kids()[..] else {
        panic!("one child: {:?}", w.kids())
    };
    let inner = format!("/proc/{kid}/root{}/inner/f", w.path("tmp").display());
    let mounts = |pid: i32| std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    let has = |pid: i32, name: &str| mounts(pid).contains(name);
    assert!(has(kid, "cryo-mnt-inner") && !has(w.pid(), "cryo-mnt-inner"));
    w.dump_and_restore();
    assert_eq!(w.kids(), [kid]);
    let (ours, parent, child) = (
        mnt_ns(std::process::id() as i32),
        mnt_ns(w.pid()),
        mnt_ns(kid),
    );
    assert!(
        ours != parent && parent != child && ours != child,
        "{ours:?} {parent:?} {child:?}"
    );
    assert!(
        has(kid, "cryo-mnt-inner") && has(kid, "cryo-mnt-tmpfs"),
        "{}",
        mounts(kid)
    );
    assert!(!has(w.pid(), "cryo-mnt-inner"), "{}", mounts(w.pid()));
    assert_eq!(
        std::fs::read_to_string(&inner).unwrap(),
        "only the child sees this"
    );
    // The parent's tmpfs is the child's too (one superblock, as before the dump).
    let after = w.path("tmp").join("after.txt");
    assert_eq!(w.cmd(&format!("write {}", after.display())), "ok");
    let in_child = format!("/proc/{kid}/root{}", after.display());
    assert_eq!(std::fs::read_to_string(in_child).unwrap(), "x");
    assert_eq!(observe(&w)[3], "fd -> 5 tmpfs file written before the dump");
    also(&w, kid);
}

#[test]
fn a_mount_of_cryos_the_namespace_unmounted_stays_unmounted_in_the_restored_one() {
    cryo_bin();
    let _only = cryo_tests::cryos_mounts_changing();
    // Dropped in reverse: the workload, then the mount, then its directory.
    let host_dir = cryo_tests::control_dir();
    let host = cryo_tests::Mount::tmpfs(&host_dir.path().join("m"), "size=64k");
    cryo_tests::write_file(&host.path().join("f"), b"cryo's");
    let mut w = Workload::spawn("mount-ns", &[&format!("umount:{}", host.path().display())]);
    let read = format!("read {}/f", host.path().display());
    assert_eq!(w.cmd(&read), "errno 2", "unmounted in its namespace");
    w.dump_and_restore();
    assert_eq!(
        w.cmd(&read),
        "errno 2",
        "unmounted in the restored namespace"
    );
    assert_eq!(std::fs::read(host.path().join("f")).unwrap(), b"cryo's");
    assert_eq!(w.cmd("fd"), "5 tmpfs file written before the dump");
}

#[test]
fn a_proc_mounted_in_the_namespace_comes_back_showing_the_same_pid_namespace() {
    cryo_bin();
    let _shared = cryo_tests::cryos_mounts_kept();
    let mut w = Workload::spawn("mount-ns", &["proc"]);
    let point = w.path("proc");
    let mount = format!("mount {}", point.display());
    let before = w.cmd(&mount);
    let comm = format!("read {}/self/comm", point.display());
    assert_eq!(w.cmd(&comm).trim_end(), "cryo-workload");
    w.dump(&w.path("left"), &["--leave-running"])
        .assert_success();
    w.assert_untouched();
    assert_eq!(w.cmd(&mount), before, "--leave-running");
    w.dump_and_restore();
    assert_eq!(w.cmd(&mount), before, "its options");
    // Its own entry, by the pid it has in cryo's PID namespace (the one the proc shows).
    assert_eq!(w.cmd(&comm).trim_end(), "cryo-workload");
    let stat = w.cmd(&format!("read {}/self/stat", point.display()));
    assert_eq!(
        stat.split(' ').next(),
        Some(w.pid().to_string().as_str()),
        "the restored proc shows cryo's PID namespace: {stat}"
    );
    assert_eq!(w.cmd("fd"), "5 tmpfs file written before the dump");
}

#[test]
fn a_sysfs_mounted_in_the_namespace_comes_back_showing_the_same_network_namespace() {
    cryo_bin();
    let _shared = cryo_tests::cryos_mounts_kept();
    let mut w = Workload::spawn("mount-ns", &["sysfs"]);
    let point = w.path("sys");
    let mount = format!("mount {}", point.display());
    let before = w.cmd(&mount);
    let lo = format!("read {}/class/net/lo/ifindex", point.display());
    assert_eq!(w.cmd(&lo).trim_end(), "1");
    w.dump_and_restore();
    assert_eq!(w.cmd(&mount), before, "its options");
    assert_eq!(w.cmd(&lo).trim_end(), "1");
    assert_eq!(w.cmd("fd"), "5 tmpfs file written before the dump");
}

/// A binfmt_misc mounted in the namespace with formats registered (zdtm binfmt_misc,
/// mountpoints): it comes back mounted with its options, its status and every format as the
/// process reads them (one disabled, a magic with a mask, an extension with bytes that are no
/// UTF-8). Its formats end with the instance's last mount: here the only one is the
/// namespace's, so the restore mounts a new instance and registers them again. Then a second
/// process mounts the instance too (and registers two formats of its own): the instance
/// outlives the dump, the restore finds it holding the same formats, the same device. Before:
/// refused ("a binfmt_misc mount only the namespace has").
#[test]
fn a_binfmt_misc_mounted_in_the_namespace_comes_back_with_its_formats() {
    cryo_bin();
    let _shared = cryo_tests::cryos_mounts_kept();
    let mut w = Workload::spawn("mount-ns", &["binfmt"]);
    let point = w.path("binfmt");
    let seen = |w: &Workload| {
        let at = point.display();
        let mut seen = vec![
            w.cmd(&format!("mount {at}")),
            w.cmd(&format!("read {at}/status")),
            w.cmd(&format!("ls {at}")),
        ];
        let listed = seen[2].clone();
        for name in listed.split_whitespace().filter(|n| n.starts_with("cryo-")) {
            seen.push(w.cmd(&format!("bytes {at}/{name}")));
        }
        seen
    };
    let before = seen(&w);
    assert_eq!(before[1].trim_end(), "enabled", "{before:?}");
    let own = |suffix: &str| format!("cryo-{}-{suffix}", w.pid());
    assert!(
        before[2].contains(&own("magic")) && before[2].contains(&own("ext")),
        "{before:?}"
    );
    assert!(
        before.iter().any(|s| s.starts_with("disabled")),
        "{before:?}"
    );
    assert!(
        before.iter().any(|s| s.contains("extension .cr:yo\\xff")),
        "{before:?}"
    );
    w.dump_and_restore();
    assert_eq!(seen(&w), before, "registered again in a new instance");

    let holder = Workload::spawn("mount-ns", &["binfmt"]);
    let dev = |pid: i32| {
        std::fs::metadata(format!("/proc/{pid}/root{}", point.display()))
            .unwrap()
            .dev()
    };
    let (before, dev_before) = (seen(&w), dev(w.pid()));
    assert!(
        before[2].contains(&format!("cryo-{}-magic", holder.pid())),
        "{before:?}"
    );
    let again = w.path("img-again");
    w.dump_ok(&again);
    w.restore_background(&again);
    assert_eq!(
        seen(&w),
        before,
        "found in the instance that outlived the dump"
    );
    assert_eq!(dev(w.pid()), dev_before, "the same instance");
    assert_eq!(w.cmd("fd"), "5 tmpfs file written before the dump");
}

#[test]
fn a_mount_of_another_kind_only_the_namespace_has_is_refused_naming_it() {
    cryo_bin();
    let _shared = cryo_tests::cryos_mounts_kept();
    let w = Workload::spawn("mount-ns", &["ramfs"]);
    let out = w.dump(&w.path("img"), &[]);
    assert!(
        !out.status.success(),
        "ramfs: the dump should be refused\n{out}"
    );
    let inode = mnt_ns(w.pid()).to_string_lossy().into_owned();
    let inode = inode.trim_start_matches("mnt:");
    let want = format!(
        "pid {}: mount namespace mnt:{inode}: ramfs ramfs on {}: is a ramfs mount only the \
         namespace has",
        w.pid(),
        w.path("ram").display()
    );
    assert!(out.stderr.contains(&want), "want {want:?}\n{}", out.stderr);
    w.assert_untouched();
    assert_eq!(w.cmd("fd"), "5 tmpfs file written before the dump");
}

/// Binds on the namespace's own proc, as container runtimes make them: /dev/null over a file
/// of it, and its sys bound on itself read-only. Cryo makes them after that proc. Before, the
/// dump was refused (a proc bound elsewhere), or succeeded and the restore failed comparing
/// the table (/dev/null over a proc file).
#[test]
fn binds_on_the_namespaces_own_proc_come_back_over_it() {
    cryo_bin();
    let _shared = cryo_tests::cryos_mounts_kept();
    let mut w = Workload::spawn("mount-ns", &["masked-proc"]);
    let proc = w.path("proc");
    let probe = |w: &Workload| {
        [
            w.cmd(&format!("read {}/uptime", proc.display())),
            w.cmd(&format!("write {}/sys/vm/drop_caches", proc.display())),
            w.cmd(&format!("mount {}/sys", proc.display())),
            w.cmd(&format!("mount {}/uptime", proc.display())),
        ]
    };
    let before = probe(&w);
    assert_eq!(before[0], "", "/dev/null over uptime");
    assert_eq!(before[1], format!("errno {}", libc::EROFS), "sys read-only");
    w.dump_and_restore();
    assert_eq!(probe(&w), before);
    assert_eq!(w.cmd("fd"), "5 tmpfs file written before the dump");
    w.kill_restored();
}

/// The peer group of the mount on `point` in this process's (cryo's) namespace.
fn shared_group_of(point: &std::path::Path) -> String {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let want = point.to_string_lossy().replace(' ', "\\040");
    let line = text
        .lines()
        .rev()
        .find(|l| l.split(' ').nth(4) == Some(want.as_str()))
        .unwrap_or_else(|| panic!("no mount on {}", point.display()));
    line.split(' ')
        .find_map(|f| f.strip_prefix("shared:"))
        .unwrap_or_else(|| panic!("{line}: not shared"))
        .to_string()
}

/// Whether this process's (cryo's) namespace has a mount on `point`.
fn mounted_here(point: &std::path::Path) -> bool {
    let want = point.to_string_lossy().replace(' ', "\\040");
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(want.as_str()))
}

/// Checks the propagation the `mount-ns propagation shared` workload observes, from its
/// mount table and from what mounting does: DIR/outer a slave of cryo's DIR/outer (peer
/// group `outer`), DIR/ro and DIR/peer one peer group, DIR/slave its slave, DIR/unbind
/// unbindable, the tmpfs shared in a group of its own.
fn check_propagation(w: &Workload, outer: &str) {
    let at = |p: &str| w.path(p).display().to_string();
    let seen = |p: &str| w.cmd(&format!("propagation {}", at(p)));
    assert_eq!(seen("outer"), format!("master:{outer}"), "DIR/outer");
    let ro = seen("ro");
    let group = ro
        .strip_prefix("shared:")
        .unwrap_or_else(|| panic!("DIR/ro: {ro}"));
    assert_eq!(seen("peer"), ro, "DIR/peer: a peer of DIR/ro");
    assert_eq!(seen("slave"), format!("master:{group}"), "DIR/slave");
    assert_eq!(seen("unbind"), "unbindable", "DIR/unbind");
    let tmp = seen("tmp");
    assert!(
        tmp.starts_with("shared:") && tmp != ro && !tmp.contains(' '),
        "the tmpfs: {tmp} (DIR/ro: {ro})"
    );
    // What cryo's namespace mounts on DIR/outer reaches the process...
    let x = w.path("outer/x");
    std::fs::create_dir_all(&x).unwrap();
    let dot_x = x.to_string_lossy().into_owned();
    nix::mount::mount(
        Some("cryo-x"),
        &x,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    let reached = w.cmd(&format!("mounted {dot_x}"));
    nix::mount::umount2(&x, nix::mount::MntFlags::MNT_DETACH).unwrap();
    assert_eq!(
        reached, "yes",
        "a mount of cryo's on DIR/outer/x reaches the slave"
    );
    // ...and not the reverse.
    std::fs::create_dir_all(w.path("outer/y")).unwrap();
    let y = at("outer/y");
    assert_eq!(w.cmd(&format!("mount-tmpfs {y}")), "ok");
    assert!(
        !mounted_here(&w.path("outer/y")),
        "the slave's mount reached cryo's"
    );
    assert_eq!(w.cmd(&format!("umount {y}")), "ok");
    // A mount on DIR/ro/d reaches its peer and its slave; one on the slave, neither.
    assert_eq!(w.cmd(&format!("mount-tmpfs {}", at("ro/d"))), "ok");
    assert_eq!(
        w.cmd(&format!("mounted {}", at("peer/d"))),
        "yes",
        "the peer"
    );
    assert_eq!(
        w.cmd(&format!("mounted {}", at("slave/d"))),
        "yes",
        "the slave"
    );
    assert_eq!(w.cmd(&format!("umount {}", at("ro/d"))), "ok");
    assert_eq!(
        w.cmd(&format!("mounted {}", at("slave/d"))),
        "no",
        "unmounted with it"
    );
    assert_eq!(w.cmd(&format!("mount-tmpfs {}", at("slave/d"))), "ok");
    assert_eq!(
        w.cmd(&format!("mounted {}", at("ro/d"))),
        "no",
        "from the slave"
    );
    assert_eq!(w.cmd(&format!("umount {}", at("slave/d"))), "ok");
    // An unbindable mount cannot be bound.
    assert_eq!(
        w.cmd(&format!("bind {} {}", at("unbind"), at("tmp/sub"))),
        format!("errno {}", libc::EINVAL)
    );
}

/// A process whose mount namespace was made a slave of cryo's (as systemd makes a service's),
/// with a peer group of its own (a mount and its bind), a slave of it and an unbindable mount:
/// each comes back in the same relation, to cryo's DIR/outer too (the restored mount joins
/// the peer group of cryo's, found again), as the process finds by mounting. Before, the dump
/// was refused ("only private mounts are made again").
#[test]
fn shared_slave_and_unbindable_mounts_come_back_in_their_peer_groups() {
    cryo_bin();
    let _mounting = cryo_tests::cryos_mounts_changing();
    let mut w = Workload::spawn("mount-ns", &["propagation", "shared"]);
    let _outer = cryo_tests::Unmount(w.path("outer"));
    let outer = shared_group_of(&w.path("outer"));
    check_propagation(&w, &outer);
    let before = observe(&w);
    w.dump(&w.path("left"), &["--leave-running"])
        .assert_success();
    check_propagation(&w, &outer);
    w.dump_and_restore();
    assert_eq!(observe(&w), before, "the restored process");
    check_propagation(&w, &outer);
    assert_eq!(shared_group_of(&w.path("outer")), outer, "cryo's DIR/outer");
    w.kill_restored();
}

/// A FIFO on the namespace's own tmpfs, held open with bytes queued: the holder opens it again
/// by its path in the namespace made again (the copy's FIFO), refilled. Before, the dump was
/// refused ("found again in cryo's namespace, not in the one made").
#[test]
fn a_fifo_on_the_namespaces_own_tmpfs_comes_back_open_with_its_bytes() {
    cryo_bin();
    let _shared = cryo_tests::cryos_mounts_kept();
    let mut w = Workload::spawn("mount-ns", &["fifo"]);
    assert_eq!(w.cmd("fifo"), "same:true queued in the fifo");
    w.dump_and_restore();
    assert_eq!(w.cmd("fifo"), "same:true queued in the fifo");
    assert_eq!(w.cmd("fd"), "5 tmpfs file written before the dump");
    w.kill_restored();
}

/// A fanotify group with a mount mark (FAN_MARK_MOUNT) on the namespace's own tmpfs and an
/// inode mark on a file there ignoring FAN_MODIFY (as zdtm fanotify00 in its ns flavour): the
/// holder adds them again by their paths in the namespace made again (the copy's mount and
/// file). After a `--leave-running` dump and after a restore, a write to that file shows only
/// its close (the inode mark, FAN_MODIFY ignored), a write to another file of the tmpfs its
/// FAN_MODIFY (the mount mark), a write elsewhere nothing. Before, the dump was refused
/// ("found again in cryo's namespace, not in the one made").
#[test]
fn fanotify_marks_on_the_namespaces_own_tmpfs_come_back_reporting_its_events() {
    cryo_bin();
    let _shared = cryo_tests::cryos_mounts_kept();
    let mut w = Workload::spawn("mount-ns", &["fanotify"]);
    let tmp = w.path("tmp");
    let events = |w: &Workload| w.cmd("fan-write tmp/fan.txt tmp/other.txt outside.txt");
    let expected = format!("8 {}/fan.txt,2 {}/other.txt", tmp.display(), tmp.display());
    // The group's fdinfo lines but what a new tmpfs and mount change (inode numbers,
    // device, file handle, mount id): its flags, then each mark's flags, mask and ignored
    // mask, newest first.
    let marks = |w: &Workload| -> Vec<String> {
        let text = std::fs::read_to_string(format!("/proc/{}/fdinfo/57", w.pid())).unwrap();
        text.lines()
            .filter(|l| l.starts_with("fanotify"))
            .map(|l| {
                let kept = [
                    "flags:",
                    "event-flags:",
                    "mflags:",
                    "mask:",
                    "ignored_mask:",
                ];
                let words = l.split_whitespace().skip(1);
                let words = words.filter(|w| kept.iter().any(|k| w.starts_with(k)));
                words.collect::<Vec<_>>().join(" ")
            })
            .collect()
    };
    let before = marks(&w);
    assert_eq!(before.len(), 3, "the group and its two marks: {before:?}");
    // The events of the workload's setting up its tmpfs after the marks: read.
    w.cmd("fan-write");
    assert_eq!(events(&w), expected, "before the dump");
    w.dump(&w.path("left"), &["--leave-running"])
        .assert_success();
    assert_eq!(events(&w), expected, "after a --leave-running dump");
    w.dump_and_restore();
    assert_eq!(marks(&w), before, "the restored group's fdinfo");
    assert_eq!(events(&w), expected, "the restored group");
    assert_eq!(w.cmd("fd"), "5 tmpfs file written before the dump");
    w.kill_restored();
}

/// A fanotify mount mark on the namespace's own proc: cryo makes that proc after the holder
/// added its marks again, so the dump is refused naming the mark and the mount (not a mark on
/// whatever is at that path meanwhile).
#[test]
fn a_fanotify_mark_on_the_namespaces_own_proc_is_refused_naming_it() {
    cryo_bin();
    let _shared = cryo_tests::cryos_mounts_kept();
    let w = Workload::spawn("mount-ns", &["proc", "fanotify-proc"]);
    let out = w.dump(&w.path("img"), &[]);
    assert!(!out.status.success(), "the dump should be refused\n{out}");
    let proc = w.path("proc");
    let want = format!(
        "proc on {}: fanotify mark on {} (description ",
        proc.display(),
        proc.display()
    );
    assert!(out.stderr.contains(&want), "want {want:?}\n{}", out.stderr);
    assert!(
        out.stderr
            .contains("made after the marks are added again, so not restored"),
        "{}",
        out.stderr
    );
    w.assert_untouched();
    assert_eq!(w.cmd("fd"), "5 tmpfs file written before the dump");
}

/// Device nodes on the namespace's own tmpfs (as systemd's PrivateDevices makes /dev): the
/// copy has them with their type, device number, mode, owner and second name. Before, the dump
/// was refused ("a socket or a device node"). One held open comes back open on the copy's
/// node (before: refused, "found again in cryo's namespace, not in the one made"); a file of
/// the tmpfs that a mount over its directory hides is there once that is unmounted (before:
/// lost, the restore succeeding).
#[test]
fn device_nodes_on_the_namespaces_own_tmpfs_come_back_with_their_numbers_and_links() {
    cryo_bin();
    let _shared = cryo_tests::cryos_mounts_kept();
    let mut w = Workload::spawn("mount-ns", &["devnode"]);
    let tmp = w.path("tmp");
    let node = |w: &Workload, name: &str| w.cmd(&format!("node {}/{name}", tmp.display()));
    let without_ino = |s: String| s.rsplit_once(' ').map(|(a, _)| a.to_string()).unwrap();
    assert_eq!(without_ino(node(&w, "null")), "c 1:3 640 1234:5678 2");
    assert_eq!(without_ino(node(&w, "loop")), "b 7:0 640 0:0 1");
    let held = format!("{}/null 1:3 wrote:true", w.path("devs").display());
    assert_eq!(w.cmd("fd-device"), held);
    w.dump_and_restore();
    let (null, null2) = (node(&w, "null"), node(&w, "null2"));
    assert_eq!(without_ino(null.clone()), "c 1:3 640 1234:5678 2");
    assert_eq!(null, null2, "one inode with two names");
    assert_eq!(without_ino(node(&w, "loop")), "b 7:0 640 0:0 1");
    assert_eq!(w.cmd("fd"), "5 tmpfs file written before the dump");
    assert_eq!(w.cmd("fd-device"), held, "the device held open");
    let under = tmp.join("under");
    assert_eq!(w.cmd(&format!("umount {}", under.display())), "ok");
    assert_eq!(
        w.cmd(&format!("read {}/f", under.display())),
        "hidden",
        "the file the mount hid"
    );
    w.kill_restored();
}

/// A bind of a directory of the namespace's own tmpfs: it comes back as a bind of the same
/// directory of the copy (one filesystem: a file written through one name is read through the
/// other), with an fd open through it. Before, the dump was refused ("a tmpfs mounted more
/// than once, or part of one").
#[test]
fn a_bind_of_a_part_of_the_namespaces_own_tmpfs_comes_back_on_the_copy() {
    cryo_bin();
    let _shared = cryo_tests::cryos_mounts_kept();
    let mut w = Workload::spawn("mount-ns", &["tmpfs-bind"]);
    let (part, tbind) = (w.path("tmp/part"), w.path("tbind"));
    let check = |w: &Workload, name: &str| {
        assert_eq!(w.cmd(&format!("read {}/f", tbind.display())), "in part");
        assert_eq!(w.cmd(&format!("write {}/{name}", tbind.display())), "ok");
        assert_eq!(
            w.cmd(&format!("read {}/{name}", part.display())),
            "x",
            "one filesystem"
        );
        assert_eq!(
            w.cmd(&format!("node {}/f", part.display())),
            w.cmd(&format!("node {}/f", tbind.display())),
            "one inode"
        );
    };
    check(&w, "before");
    w.dump_and_restore();
    check(&w, "after");
    assert_eq!(w.cmd("read /proc/self/fd/44"), "in part");
    assert_eq!(w.cmd("fd"), "5 tmpfs file written before the dump");
    w.kill_restored();
}

/// An mqueue mounted in the namespace, of cryo's IPC namespace: it comes back showing it (a
/// queue cryo's namespace makes after the restore is listed there); and one of an IPC namespace
/// of the process's own: it comes back showing the new one (a queue the process makes is
/// listed there, not in cryo's). Before, the dump was refused ("a mqueue mount only the
/// namespace has").
#[test]
fn an_mqueue_mounted_in_the_namespace_comes_back_showing_the_same_ipc_namespace() {
    cryo_bin();
    let _shared = cryo_tests::cryos_mounts_kept();
    let mut w = Workload::spawn("mount-ns", &["mqueue"]);
    let ls = format!("ls {}", w.path("mq").display());
    let name = format!("cryo-test-mq-{}", std::process::id());
    // A queue of cryo's IPC namespace while `f` runs.
    let with_host_queue = |f: &dyn Fn() -> String| {
        let c = std::ffi::CString::new(name.clone()).unwrap();
        // SAFETY: `c` is a NUL-terminated name; a null attr asks for the defaults.
        let q = unsafe {
            libc::syscall(
                libc::SYS_mq_open,
                c.as_ptr(),
                libc::O_CREAT | libc::O_RDWR,
                0o600,
                std::ptr::null::<libc::c_void>(),
            )
        };
        assert!(q >= 0, "mq_open: {}", std::io::Error::last_os_error());
        let seen = f();
        // SAFETY: as above; the fd is this test's.
        unsafe {
            libc::close(q as i32);
            libc::syscall(libc::SYS_mq_unlink, c.as_ptr());
        }
        seen
    };
    let seen = with_host_queue(&|| w.cmd(&ls));
    assert!(seen.split(' ').any(|n| n == name), "before: {seen}");
    w.dump_and_restore();
    let seen = with_host_queue(&|| w.cmd(&ls));
    assert!(
        seen.split(' ').any(|n| n == name),
        "cryo's queue, after: {seen}"
    );
    w.kill_restored();

    let mut w = Workload::spawn("mount-ns", &["mqueue-own"]);
    let ls = format!("ls {}", w.path("mq").display());
    let own = format!("cryo-own-queue-{}", std::process::id());
    assert_eq!(w.cmd(&ls), "", "a fresh IPC namespace's mqueue");
    w.dump_and_restore();
    assert_eq!(w.cmd(&format!("mq-create {own}")), "ok");
    assert_eq!(w.cmd(&ls), own, "the restored process's own");
    let c = std::ffi::CString::new(own.clone()).unwrap();
    // SAFETY: `c` is a NUL-terminated name.
    let q = unsafe { libc::syscall(libc::SYS_mq_open, c.as_ptr(), libc::O_RDONLY, 0, 0) };
    assert!(q < 0, "the process's queue reached cryo's IPC namespace");
    assert_eq!(w.cmd(&format!("mq-unlink {own}")), "ok");
    w.kill_restored();
}

/// A process whose namespace's root is a tmpfs of its own (pivot_root, as a sandbox makes
/// one), holding binds of cryo's paths, a proc, and the usual tmpfs and binds below: it comes
/// back in a namespace with the same root and mounts, its files, mapping and working directory
/// on them, cryo's old root nowhere in it. Before, the dump was refused ("is mounted on a
/// mount its path no longer leads to").
#[test]
fn a_namespace_with_a_root_of_its_own_comes_back_pivoted() {
    cryo_bin();
    let _shared = cryo_tests::cryos_mounts_kept();
    let mut w = Workload::spawn("mount-ns", &["pivot"]);
    let before = observe(&w);
    check_observed(&w, &before);
    let root = w.cmd("mount /");
    assert!(root.contains("mode=755"), "its root: {root}");
    let table = |w: &Workload| {
        let mut points: Vec<String> =
            std::fs::read_to_string(format!("/proc/{}/mountinfo", w.pid()))
                .unwrap()
                .lines()
                .map(|l| l.split(' ').skip(4).take(1).collect::<String>())
                .collect();
        points.sort();
        points
    };
    let mounts = table(&w);
    assert!(
        !mounts.contains(&"/sys".to_string()),
        "cryo's old root detached: {mounts:?}"
    );
    w.dump(&w.path("left"), &["--leave-running"])
        .assert_success();
    assert_eq!(
        observe(&w),
        before,
        "the original after a --leave-running dump"
    );
    w.dump_and_restore();
    assert_eq!(observe(&w), before, "the restored process");
    assert_eq!(w.cmd("mount /"), root, "its root");
    assert_eq!(table(&w), mounts, "its mount points");
    check_writes(&w);
    w.kill_restored();
}

/// A namespace pivoted into a tmpfs root with no proc and no /proc directory (zdtm
/// mntns_pivot_root: a nested container that never mounted its proc), the root tmpfs
/// read-only too (mntns_pivot_root_ro): it comes back with the same root, no /proc in it (the
/// directory cryo makes for its own /proc meanwhile is gone, the root's times as dumped),
/// read-only as dumped, the process's files and mapping there. Before: refused ("which has no
/// proc on /proc").
#[test]
fn a_pivoted_namespace_without_a_proc_comes_back_without_one() {
    for extras in [&["pivot", "no-proc"][..], &["pivot", "no-proc", "ro-root"]] {
        cryo_bin();
        let _shared = cryo_tests::cryos_mounts_kept();
        let mut w = Workload::spawn("mount-ns", extras);
        let tmp = w.path("tmp");
        let seen = |w: &Workload| {
            // The root's times first: a read of a directory made again moves its access time
            // (relatime: its change time is the restore's).
            [
                "stat /".to_string(),
                "ls /".to_string(),
                "fd".to_string(),
                "map".to_string(),
                format!("read {}/data.txt", tmp.display()),
                "cwd".to_string(),
            ]
            .map(|c| format!("{c} -> {}", w.cmd(&c)))
        };
        w.cmd("ls /");
        let before = seen(&w);
        assert!(!before[1].contains("proc"), "{before:?}");
        w.dump_and_restore();
        let after = seen(&w);
        assert_eq!(after, before, "{extras:?}");
        let ro = extras.contains(&"ro-root");
        let wrote = w.cmd("write /new");
        assert_eq!(wrote == "errno 30", ro, "{wrote}");
        let table = std::fs::read_to_string(format!("/proc/{}/mountinfo", w.pid())).unwrap();
        assert!(
            !table.lines().any(|l| l.split(' ').nth(4) == Some("/proc")),
            "no proc on /proc: {table}"
        );
        w.kill_restored();
    }
}

/// A devpts instance of the namespace's own, holding no pty (a sandbox's /dev/pts): it comes
/// back as a new instance with the same options, whose ptmx makes pty 0. One holding a pty,
/// mounted elsewhere than on /dev/pts, is refused naming it (no restore would open the pty
/// in it). Before, both were refused
/// ("a devpts mount only the namespace has").
#[test]
fn a_devpts_instance_of_the_namespace_comes_back_new_and_one_with_ptys_is_refused() {
    cryo_bin();
    let _shared = cryo_tests::cryos_mounts_kept();
    let mut w = Workload::spawn("mount-ns", &["devpts"]);
    let pts = w.path("pts");
    let mount = format!("mount {}", pts.display());
    let options = w.cmd(&mount);
    assert_eq!(w.cmd(&format!("ls {}", pts.display())), "ptmx");
    w.dump_and_restore();
    assert_eq!(w.cmd(&mount), options, "its options");
    assert_eq!(w.cmd(&format!("ls {}", pts.display())), "ptmx");
    assert_eq!(w.cmd(&format!("open-ptmx {}/ptmx", pts.display())), "pty 0");
    w.kill_restored();

    let w = Workload::spawn("mount-ns", &["devpts-busy"]);
    let out = w.dump(&w.path("img"), &[]);
    assert!(!out.status.success(), "the dump should be refused\n{out}");
    let want = "fd 45: pty master of /dev/pts/0: no dumped process holds its slave";
    assert!(out.stderr.contains(want), "want {want:?}\n{}", out.stderr);
    w.assert_untouched();
}

/// The cgroup2 hierarchy mounted in a cgroup namespace of the process's own (a container's
/// /sys/fs/cgroup): it comes back showing the same cgroup, the root of its namespace (its
/// mountinfo says "/"), with the same files. Before, the dump was refused ("a cgroup2 mount only the
/// namespace has").
#[test]
fn a_cgroup2_mount_of_its_cgroup_namespace_comes_back_showing_the_same_cgroup() {
    cryo_bin();
    let _shared = cryo_tests::cryos_mounts_kept();
    let mut w = Workload::spawn("mount-ns", &["cgroup2"]);
    let cg = w.path("cg");
    let probe = |w: &Workload| {
        [
            w.cmd(&format!("root {}", cg.display())),
            w.cmd(&format!("mount {}", cg.display())),
            w.cmd(&format!("ls {}", cg.display())),
        ]
    };
    let before = probe(&w);
    assert_eq!(before[0], "/", "the root of its cgroup namespace");
    assert!(before[2].contains("cgroup.procs"), "{}", before[2]);
    let img = w.path("img");
    w.dump_ok(&img);
    // Moving the cgroups would leave it showing the dumped one: refused, nothing made.
    let out = w.cryo(&[
        "restore".as_ref(),
        "-D".as_ref(),
        img.as_os_str(),
        "--detach".as_ref(),
        "--cgroup-root".as_ref(),
        "/".as_ref(),
    ]);
    assert!(!out.status.success(), "--cgroup-root: {out}");
    assert!(
        out.stderr.contains("not with --cgroup-root"),
        "{}",
        out.stderr
    );
    w.restore_background(&img);
    assert_eq!(probe(&w), before);
    w.kill_restored();
}

/// A sandbox as container runtimes make one, all at once: a root of its own (pivot_root) with
/// a proc, binds on its own proc (/dev/null over a file, its sys read-only), a devpts instance,
/// an mqueue of its own IPC namespace, the cgroup2 hierarchy of its own cgroup namespace, a
/// sysfs, device nodes and a FIFO on its tmpfs, a bind of a part of that tmpfs: every mount
/// comes back, the table the same.
#[test]
fn a_sandbox_with_every_kind_of_mount_comes_back_whole() {
    cryo_bin();
    let _shared = cryo_tests::cryos_mounts_kept();
    let extras = [
        "pivot",
        "masked-proc",
        "devpts",
        "mqueue-own",
        "cgroup2",
        "sysfs",
        "devnode",
        "fifo",
        "tmpfs-bind",
    ];
    let mut w = Workload::spawn("mount-ns", &extras);
    let table = |w: &Workload| {
        let mut lines: Vec<String> =
            std::fs::read_to_string(format!("/proc/{}/mountinfo", w.pid()))
                .unwrap()
                .lines()
                // Without ids, devices and propagation: point, root, options, type, source.
                .map(|l| {
                    let f: Vec<&str> = l.split(' ').collect();
                    let sep = f.iter().position(|x| *x == "-").unwrap();
                    format!("{} {} {} {}", f[4], f[3], f[5], f[sep + 1..].join(" "))
                })
                .collect();
        lines.sort();
        lines
    };
    let before = (table(&w), observe(&w), w.cmd("fifo"));
    assert_eq!(before.2, "same:true queued in the fifo");
    w.dump_and_restore();
    let after = (table(&w), observe(&w), w.cmd("fifo"));
    assert_eq!(after, before);
    assert_eq!(
        w.cmd(&format!("open-ptmx {}/ptmx", w.path("pts").display())),
        "pty 0"
    );
    w.kill_restored();
}

/// A shared mount covered by another mount on its point (a tmpfs, shared too: mounted on a
/// shared one) comes back shared under it, the two in peer groups of their own: its maker
/// sets it through the fd it made it with. Before: refused ("propagation \"shared:N\": its
/// mount point leads to another mount (covered): its propagation could not be set again").
#[test]
fn a_covered_shared_mount_comes_back_shared_under_what_covers_it() {
    cryo_bin();
    let _shared = cryo_tests::cryos_mounts_kept();
    let mut w = Workload::spawn("mount-ns", &["covered"]);
    let cov = w.path("cov");
    let before = mount_tree(w.pid(), &cov);
    assert_eq!(before.len(), 2, "{before:#?}");
    assert!(
        before[0].ends_with(": shared:g1") && before[1].ends_with(": shared:g2"),
        "{before:#?}"
    );
    w.dump_and_restore();
    assert_eq!(mount_tree(w.pid(), &cov), before, "the restored process");
    let prop = format!("propagation {}", cov.display());
    assert!(w.cmd(&prop).starts_with("shared:"), "{}", w.cmd(&prop));
    // The bind under it, shared, once the tmpfs is unmounted.
    assert_eq!(w.cmd(&format!("umount {}", cov.display())), "ok");
    assert!(w.cmd(&prop).starts_with("shared:"), "{}", w.cmd(&prop));
    assert_eq!(mount_tree(w.pid(), &cov).len(), 1);
    w.kill_restored();
}

#[test]
fn a_mount_namespace_shared_with_a_process_outside_the_dump_is_refused_naming_it() {
    cryo_bin();
    let _shared = cryo_tests::cryos_mounts_kept();
    let w = Workload::spawn("mount-ns", &[]);
    let ns = std::fs::File::open(format!("/proc/{}/ns/mnt", w.pid())).unwrap();
    let mut command = Command::new("sleep");
    command
        .arg("600")
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    // SAFETY: setns is async-signal-safe; the child only joins the namespace, then execs.
    unsafe {
        use std::os::fd::AsRawFd;
        let fd = ns.as_raw_fd();
        command.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNS) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut other = command.spawn().unwrap();
    assert_eq!(
        mnt_ns(other.id() as i32),
        mnt_ns(w.pid()),
        "the other joined it"
    );
    let out = w.dump(&w.path("img"), &[]);
    let _ = other.kill();
    let _ = other.wait();
    assert!(!out.status.success(), "the dump should be refused\n{out}");
    let want = format!(
        "pid {}: mount namespace {} is shared with pid {}, which is not in the dump",
        w.pid(),
        mnt_ns(w.pid()).display(),
        other.id()
    );
    assert!(out.stderr.contains(&want), "want {want:?}\n{}", out.stderr);
    w.assert_untouched();
}

#[test]
fn a_bind_source_gone_at_restore_fails_it_naming_the_mount_and_a_retry_works() {
    cryo_bin();
    let _shared = cryo_tests::cryos_mounts_kept();
    let mut w = Workload::spawn("mount-ns", &[]);
    let img = w.path("img");
    w.dump_ok(&img);
    let (src, away) = (w.path("src"), w.path("src-away"));
    std::fs::rename(&src, &away).unwrap();
    let out = w.cryo(&[
        "restore".as_ref(),
        "-D".as_ref(),
        img.as_os_str(),
        "--detach".as_ref(),
    ]);
    assert!(!out.status.success(), "the restore should fail\n{out}");
    let want = format!(
        "make its mount namespace bind {} on {}: No such file or directory",
        src.display(),
        w.path("ro").display()
    );
    assert!(out.stderr.contains(&want), "want {want:?}\n{}", out.stderr);
    std::fs::rename(&away, &src).unwrap();
    w.restore_background(&img);
    assert_eq!(w.cmd("fd"), "5 tmpfs file written before the dump");
    assert_eq!(
        w.cmd(&format!("read {}/host.txt", w.path("ro").display())),
        "seen through the bind"
    );
}

/// Reads FIFO `path` to its end (its writer's close), waiting at most 10 s for it.
fn read_fifo(path: &std::path::Path) -> String {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .unwrap();
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut writer_seen = false;
    loop {
        let mut pfd = libc::pollfd {
            fd: std::os::fd::AsRawFd::as_raw_fd(&f),
            events: libc::POLLIN,
            revents: 0,
        };
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        assert!(!left.is_zero(), "no answer on {}", path.display());
        // SAFETY: one pollfd we own.
        unsafe { libc::poll(&mut pfd, 1, left.as_millis() as i32) };
        let mut buf = [0u8; 4096];
        match f.read(&mut buf) {
            Ok(0) if writer_seen => return String::from_utf8_lossy(&out).into_owned(),
            Ok(0) => {
                // No writer yet (POLLHUP before the first open for writing): wait for it.
                std::thread::yield_now();
            }
            Ok(n) => {
                writer_seen = true;
                out.extend_from_slice(&buf[..n]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("read {}: {e}", path.display()),
        }
    }
}

/// A sandbox as a user makes one with util-linux's `unshare`: a shell that, each time a line
/// comes on FIFO `ask`, writes what `report` prints to FIFO `answer`.
struct Sandbox {
    dir: cryo_tests::TempDir,
    ask: std::path::PathBuf,
    answer: std::path::PathBuf,
    outer: std::process::Child,
    /// The shell, then the restored one: killed (with its namespaces) at the end.
    shell: std::cell::Cell<i32>,
}

impl Sandbox {
    /// `unshare ARGS sh -c LOOP`, `setup` run by the shell first.
    fn start(unshare: &[&str], setup: &str, report: &str) -> Sandbox {
        let dir = cryo_tests::control_dir();
        let (ask, answer) = (dir.path().join("ask"), dir.path().join("answer"));
        for fifo in [&ask, &answer] {
            nix::unistd::mkfifo(fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        }
        let script = format!(
            "{setup} while read x < {ask}; do {{ {report}; }} > {answer}; done",
            ask = ask.display(),
            answer = answer.display()
        );
        let outer = Command::new("unshare")
            .args(unshare)
            .args(["sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("unshare (util-linux)");
        let sandbox = Sandbox {
            dir,
            ask,
            answer,
            outer,
            shell: std::cell::Cell::new(0),
        };
        // Its first answer says the shell is there; it is the sh whose command line names
        // this sandbox's FIFO.
        let _ = sandbox.ask();
        let marker = sandbox.ask.display().to_string();
        let shell = std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .find(|p| {
                std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c == "sh\n")
                    && std::fs::read_to_string(format!("/proc/{p}/cmdline"))
                        .is_ok_and(|c| c.contains(&marker))
            })
            .expect("the sandbox's shell");
        sandbox.shell.set(shell);
        sandbox
    }

    fn ask(&self) -> String {
        std::fs::write(&self.ask, "x\n").unwrap();
        read_fifo(&self.answer)
    }

    /// Dumps the shell (killing it), restores it detached: the restored shell's pid.
    fn dump_and_restore(&mut self) -> i32 {
        let img = self.dir.path().join("img");
        let img = img.to_str().unwrap();
        let shell = self.shell.get().to_string();
        let out = cryo_tests::run_cryo(self.dir.path(), "dump", ["dump", "-t", &shell, "-D", img]);
        assert!(out.status.success(), "{out}");
        // The shell killed by the dump, unshare ends.
        let _ = self.outer.wait();
        let out = cryo_tests::run_cryo(self.dir.path(), "restore", ["restore", "-d", "-D", img]);
        assert!(out.status.success(), "{out}");
        let restored: i32 = out
            .stdout
            .trim()
            .parse()
            .expect("restore -d prints the root's pid");
        self.shell.set(restored);
        restored
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // SAFETY: kill takes plain integers.
        unsafe { libc::kill(self.shell.get(), libc::SIGKILL) };
        let _ = self.outer.kill();
        let _ = self.outer.wait();
    }
}

/// The mounts of `fstype` in an answer holding mountinfo lines: point and options onwards.
fn mounts_of(answer: &str, fstype: &str) -> Vec<String> {
    answer
        .lines()
        .filter(|l| l.contains(&format!(" - {fstype} ")))
        .map(|l| l.split(' ').skip(4).collect::<Vec<_>>().join(" "))
        .collect()
}

#[test]
fn a_proc_of_the_pid_namespace_the_process_is_init_of_comes_back_showing_the_new_one() {
    cryo_bin();
    let _shared = cryo_tests::cryos_mounts_kept();
    // A PID namespace, then (in its init) a mount namespace with a proc of that PID namespace
    // over /proc.
    let mut sandbox = Sandbox::start(
        &[
            "--fork",
            "--pid",
            "setsid",
            "unshare",
            "--mount",
            "--mount-proc",
        ],
        "",
        "ls /proc; grep ' /proc ' /proc/self/mountinfo",
    );
    let pids =
        |answer: &str| -> Vec<u32> { answer.lines().filter_map(|l| l.parse().ok()).collect() };
    let before = sandbox.ask();
    assert!(pids(&before).contains(&1), "{before}");
    assert!(
        pids(&before).iter().all(|p| *p < 100),
        "only its namespace's pids: {before}"
    );
    assert_eq!(
        mounts_of(&before, "proc").len(),
        2,
        "cryo's /proc and its own over it: {before}"
    );
    let init = sandbox.shell.get();
    let restored = sandbox.dump_and_restore();
    assert_ne!(restored, init);
    let after = sandbox.ask();
    assert!(pids(&after).contains(&1), "{after}");
    assert!(
        pids(&after).iter().all(|p| *p < 100),
        "only its new namespace's pids: {after}"
    );
    assert_eq!(
        mounts_of(&after, "proc"),
        mounts_of(&before, "proc"),
        "the same two procs"
    );
}

#[test]
fn a_sysfs_of_the_network_namespace_of_its_own_comes_back_showing_the_new_one() {
    cryo_bin();
    let _shared = cryo_tests::cryos_mounts_kept();
    // A network namespace with a dummy interface and a mount namespace with its sysfs on /sys.
    let mut sandbox = Sandbox::start(
        &["--net", "--mount", "--propagation", "private", "setsid"],
        "ip link set lo up && mount -t sysfs sysfs /sys &&",
        "ls /sys/class/net; cat /sys/class/net/lo/operstate; grep ' /sys ' /proc/self/mountinfo",
    );
    let before = sandbox.ask();
    assert!(before.starts_with("lo\nunknown\n"), "only lo, up: {before}");
    assert_eq!(
        mounts_of(&before, "sysfs").len(),
        2,
        "cryo's /sys and its own: {before}"
    );
    sandbox.dump_and_restore();
    let after = sandbox.ask();
    assert!(
        after.starts_with("lo\nunknown\n"),
        "only its new namespace's lo: {after}"
    );
    assert_eq!(mounts_of(&after, "sysfs"), mounts_of(&before, "sysfs"));
}

/// CRIU's external mounts: dumped with `--external mnt[DIR/ro]:SRC`, the namespace's bind of
/// DIR/src is recorded as SRC; the restore binds the path `--external mnt[SRC]:PATH` gives,
/// another directory here, which the restored process reads at DIR/ro (read-only as dumped).
/// A restore without that path is refused naming the mount and the flag, the image kept; a
/// dump naming a point where the namespace has no mount is refused naming it. Before, cryo
/// refused the flag itself ("unexpected argument '--external'").
#[test]
fn an_external_mount_comes_back_bound_from_the_path_the_restore_gives() {
    cryo_bin();
    let _shared = cryo_tests::cryos_mounts_kept();
    let mut w = Workload::spawn("mount-ns", &[]);
    let ro = w.path("ro");
    let read = |w: &Workload| w.cmd(&format!("read {}/host.txt", ro.display()));
    assert_eq!(read(&w), "seen through the bind");
    let out = w.dump(&w.path("none"), &["--external", "mnt[/nowhere/at/all]:X"]);
    assert!(!out.status.success(), "the dump should be refused\n{out}");
    assert!(
        out.stderr
            .contains("--external mnt[/nowhere/at/all]:X: the namespace has no mount at"),
        "{out}"
    );
    assert_eq!(
        read(&w),
        "seen through the bind",
        "a refused dump left it running"
    );

    let img = w.path("img");
    let external = format!("mnt[{}]:SRC", ro.display());
    w.dump(&img, &["--external", &external]).assert_success();
    w.wait_original();
    let elsewhere = w.path("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::write(elsewhere.join("host.txt"), "bound from elsewhere").unwrap();

    let out = w.cryo(&["restore", "-D", img.to_str().unwrap(), "--detach"]);
    assert!(
        !out.status.success(),
        "the restore should be refused\n{out}"
    );
    assert!(
        out.stderr
            .contains(&format!("external mount SRC on {}", ro.display()))
            && out.stderr.contains("--external mnt[SRC]:PATH"),
        "{out}"
    );
    let given = format!("mnt[SRC]:{}", elsewhere.display());
    w.restore_detached_with(&img, &["--external", &given]);
    assert_eq!(read(&w), "bound from elsewhere");
    let line = w.cmd(&format!("mount {}", ro.display()));
    assert!(line.starts_with("ro,"), "read-only as dumped: {line}");
    w.kill_restored();
}

/// Binds of a directory and a file of the namespace's tmpfs, both removed since (zdtm's
/// mntns_deleted): they come back bound, their roots shown removed ("/rdir//deleted") at the
/// same paths, the file's contents and both modes as they were, writable through the bind;
/// neither name is in the tmpfs, whose directory times are those of the dump. Before: refused,
/// "whose path no longer leads to it".
#[test]
fn binds_of_a_removed_file_and_directory_come_back_bound_and_removed() {
    cryo_bin();
    let _shared = cryo_tests::cryos_mounts_kept();
    let mut w = Workload::spawn("mount-ns", &["removed-binds"]);
    let (tmp, rdir, rfile) = (
        w.path("tmp"),
        w.path("tmp/rdir-bound"),
        w.path("tmp/rfile-bound"),
    );
    // Times first: a restored file's ctime is the restore's, so under relatime its next read
    // moves its access time (LOST, as in CRIU). Taken twice before: the first reads move them.
    let seen = |w: &Workload| {
        [
            w.cmd(&format!("stat {}", rdir.display())),
            w.cmd(&format!("stat {}", rfile.display())),
            w.cmd(&format!("stat {}", tmp.display())),
            w.cmd(&format!("root {}", rdir.display())),
            w.cmd(&format!("root {}", rfile.display())),
            w.cmd(&format!("read {}", rfile.display())),
            w.cmd(&format!("ls {}", tmp.display())),
        ]
    };
    seen(&w);
    let before = seen(&w);
    assert_eq!(before[3], "/rdir//deleted");
    assert_eq!(before[4], "/rfile//deleted");
    w.dump_and_restore();
    assert_eq!(seen(&w), before);
    assert_eq!(w.cmd(&format!("write {}", rfile.display())), "ok");
    assert_eq!(w.cmd(&format!("read {}", rfile.display())), "x");
    assert_eq!(w.cmd(&format!("write {}/f", rdir.display())), "errno 2");
    w.kill_restored();
}

/// The same held by a child of the namespace's maker alone (zdtm mntns_deleted: its daemon):
/// the maker's fd on the file made again is inherited by the child, which opens fd 55
/// through it. Seen through the child's /proc: fd 55 and the bind in its namespace one inode,
/// the fd on the tmpfs's mount, named "PATH (deleted)", with the contents. Before: refused.
#[test]
fn a_removed_file_bound_and_held_by_a_child_comes_back_one_inode_with_its_bind() {
    cryo_bin();
    let _shared = cryo_tests::cryos_mounts_kept();
    let mut w = Workload::spawn("mount-ns", &["removed-bind-held-kid"]);
    let kid: i32 = w.cmd("kids").parse().unwrap();
    let seen = |w: &Workload| {
        let fd = format!("/proc/{kid}/fd/55");
        let held = std::fs::metadata(&fd).unwrap();
        let bound = format!("/proc/{kid}/root{}", w.path("tmp/rfile-bound").display());
        let shown = std::fs::metadata(&bound).unwrap();
        let fdinfo = std::fs::read_to_string(format!("/proc/{kid}/fdinfo/55")).unwrap();
        let mnt_id = fdinfo
            .lines()
            .find_map(|l| l.strip_prefix("mnt_id:"))
            .unwrap()
            .trim()
            .to_string();
        let table = std::fs::read_to_string(format!("/proc/{kid}/mountinfo")).unwrap();
        let on = table
            .lines()
            .find(|l| l.split(' ').next() == Some(mnt_id.as_str()))
            .and_then(|l| l.split(' ').nth(4))
            .unwrap_or("?")
            .to_string();
        format!(
            "same:{} {} on:{on} {} {}",
            (held.dev(), held.ino()) == (shown.dev(), shown.ino()),
            held.nlink(),
            std::fs::read_link(&fd).unwrap().display(),
            std::fs::read_to_string(&fd).unwrap()
        )
    };
    let before = seen(&w);
    assert_eq!(
        before,
        format!(
            "same:true 0 on:{} {} (deleted) removed but bound",
            w.path("tmp").display(),
            w.path("tmp/rfile").display()
        )
    );
    w.dump_and_restore();
    assert_eq!(seen(&w), before);
    w.kill_restored();
}

/// A removed file bound and held open too (zdtm's mntns_deleted, its fd): the process making
/// the namespace takes its fd again on the file made again for the bind, where it was opened,
/// so after the restore fd 55 and the bind are one inode (fstat of both), the fd on the
/// tmpfs's mount as before and named "PATH (deleted)", with the contents, and a write through
/// the bind is read through the fd. Before: refused ("the process holds too: a bind of it made
/// again would be another file").
#[test]
fn a_removed_file_bound_and_held_open_comes_back_one_inode_with_its_bind() {
    cryo_bin();
    let _shared = cryo_tests::cryos_mounts_kept();
    let mut w = Workload::spawn("mount-ns", &["removed-bind-held"]);
    let bound = w.path("tmp/rfile-bound");
    let ask = format!("removed-bound {}", bound.display());
    let before = w.cmd(&ask);
    assert_eq!(
        before,
        format!(
            "same:true 0 on:{} {} (deleted) removed but bound",
            w.path("tmp").display(),
            w.path("tmp/rfile").display()
        )
    );
    w.dump_and_restore();
    assert_eq!(w.cmd(&ask), before);
    assert_eq!(w.cmd(&format!("write {}", bound.display())), "ok");
    let after = w.cmd(&ask);
    assert!(
        after.starts_with("same:true ") && after.ends_with(" (deleted) x"),
        "a write through the bind is read through fd 55: {after}"
    );
    w.kill_restored();
}
