//! What clone flags let processes share (an fd table, a working directory and umask, memory,
//! signal handlers) and what a thread may keep for itself (unshare). A child sharing its
//! parent's fd table or working directory comes back sharing it: what one opens, locks,
//! changes, the other sees. Everything else a restore would give each process apart, so the
//! dump refuses it, naming both tasks and the flag, and the processes run on as before. A
//! parent waiting in vfork is refused at once as a temporary state (its freeze would wait for
//! its child's exec).
//!
//! Needs the engine: `cryo` must be built (`cargo build -p cryo`).

use std::path::Path;

use cryo_tests::{cryo_bin, run_cryo, status_field, Workload};

#[test]
fn memory_or_handlers_a_child_shares_with_its_parent_are_refused_naming_both_and_the_flag() {
    cryo_bin();
    for (how, what, flag) in [
        ("vm", "address space", "CLONE_VM"),
        ("sighand", "address space", "CLONE_VM"),
    ] {
        let w = Workload::spawn("share", &[how]);
        let child = w.cmd("child");
        let out = w.dump(&w.path("img"), &[]);
        out.assert_refused()
            .assert_stderr_mentions(&format!("shares its {what}"))
            .assert_stderr_mentions(flag)
            .assert_stderr_has_word(&w.pid().to_string())
            .assert_stderr_has_word(&child);
        w.assert_untouched();
        assert!(
            std::path::Path::new(&format!("/proc/{child}")).exists(),
            "{how}: the child runs on"
        );
    }
}

#[test]
fn a_thread_with_a_table_or_fs_of_its_own_is_refused_naming_it() {
    cryo_bin();
    for (how, what, flag) in [
        ("thread-files", "fd table", "CLONE_FILES"),
        ("thread-fs", "working directory, root and umask", "CLONE_FS"),
    ] {
        let w = Workload::spawn("share", &[how]);
        let tid = w.cmd("tid");
        let out = w.dump(&w.path("img"), &["--leave-running"]);
        out.assert_refused()
            .assert_stderr_mentions(&format!("pid {} thread {tid}", w.pid()))
            .assert_stderr_mentions(&format!("has a {what}"))
            .assert_stderr_mentions("of its own")
            .assert_stderr_mentions(flag);
        w.assert_untouched();
    }
}

#[test]
fn a_parent_waiting_in_vfork_is_refused_at_once_as_temporary() {
    cryo_bin();
    let w = Workload::spawn("share", &["vfork"]);
    let child = w.cmd("child");
    // The child is in vfork once it sleeps uninterruptibly (it never leaves it).
    let state = |pid: &str| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rsplit_once(") ").map(|(_, r)| r.chars().next()))
            .flatten()
    };
    let waited = std::time::Instant::now();
    while state(&child) != Some('D') {
        assert!(
            waited.elapsed().as_secs() < 10,
            "child {child} never entered vfork"
        );
        std::thread::yield_now();
    }
    let out = w.dump(&w.path("img"), &["--check-only"]);
    assert_eq!(out.status.code(), Some(2), "{out}");
    out.assert_stderr_mentions("temporary")
        .assert_stderr_mentions(&format!("pid {child}: waits in vfork"));
    let out = w.dump(&w.path("img2"), &[]);
    out.assert_refused()
        .assert_stderr_mentions(&format!("pid {child}: waits in vfork"));
    w.assert_untouched();
}

#[test]
fn a_root_sharing_its_fd_table_with_its_parent_outside_the_dump_is_refused() {
    cryo_bin();
    let w = Workload::spawn("share", &["files"]);
    let child = w.cmd("child");
    let img = w.path("img");
    let out = run_cryo(
        &w.path(""),
        "dump-child",
        ["dump", "-t", child.as_str(), "-D", img.to_str().unwrap()],
    );
    out.assert_refused()
        .assert_stderr_mentions(&format!(
            "pid {child}: shares its fd table with pid {} (outside the dump)",
            w.pid()
        ))
        .assert_stderr_mentions("CLONE_FILES");
    w.assert_untouched();
    assert_eq!(
        status_field(child.parse().unwrap(), "TracerPid").as_deref(),
        Some("0"),
        "the child is let go"
    );
}

/// Whether `a` and `b` have one `object` (kcmp KCMP_FILES 2, KCMP_FS 3).
fn same(a: i32, b: i32, object: i32) -> bool {
    // SAFETY: kcmp takes numbers only.
    let r = unsafe { libc::syscall(libc::SYS_kcmp, a, b, object, 0, 0) };
    assert!(r >= 0, "kcmp {a} {b}: {}", std::io::Error::last_os_error());
    r == 0
}

/// Who holds a POSIX lock conflicting with a write lock on bytes 0-9 of `path` (F_GETLK).
fn posix_holder(path: &Path) -> i32 {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path).expect("open the locked file");
    // SAFETY: flock is plain data; zeroed is valid.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as i16;
    fl.l_whence = libc::SEEK_SET as i16;
    fl.l_len = 10;
    // SAFETY: fl is a valid struct flock the kernel writes into.
    let r = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETLK, &mut fl as *mut libc::flock) };
    assert_eq!(r, 0, "F_GETLK: {}", std::io::Error::last_os_error());
    assert_eq!(
        fl.l_type,
        libc::F_WRLCK as i16,
        "a write lock on {}",
        path.display()
    );
    fl.l_pid
}

#[test]
fn a_child_sharing_its_parents_fd_table_comes_back_sharing_it() {
    cryo_bin();
    let mut w = Workload::spawn("share", &["talk-files"]);
    let child: i32 = w.cmd("child").parse().unwrap();
    // Before: a file opened by each, a POSIX lock the child took on the parent's file.
    let (a, b) = (w.path("a"), w.path("b"));
    std::fs::write(&a, "from the parent").unwrap();
    std::fs::write(&b, "from the child").unwrap();
    let fa = w.cmd(&format!("open {}", a.display()));
    let fb = w.cmd(&format!("child-open {}", b.display()));
    assert_eq!(w.cmd(&format!("child-lock {fa}")), "ok");
    w.dump_and_restore();
    let img = w.path("img");
    let shown = run_cryo(&w.path(""), "show", ["show", "-D", img.to_str().unwrap()]);
    assert!(
        shown
            .stdout
            .contains("shares its parent's fd table (CLONE_FILES)"),
        "{shown}"
    );
    let pid = w.pid();
    assert!(
        same(pid, child, 2),
        "parent {pid} and child {child}: one fd table again"
    );
    // Each reads what the other opened before the dump, at the same number.
    assert_eq!(w.cmd(&format!("child-read {fa}")), "from the parent");
    assert_eq!(w.cmd(&format!("read {fb}")), "from the child");
    // What one opens now, the other has.
    let (c, d) = (w.path("c"), w.path("d"));
    std::fs::write(&c, "opened by the parent after").unwrap();
    std::fs::write(&d, "opened by the child after").unwrap();
    let fc = w.cmd(&format!("open {}", c.display()));
    assert_eq!(
        w.cmd(&format!("child-read {fc}")),
        "opened by the parent after"
    );
    let fd = w.cmd(&format!("child-open {}", d.display()));
    assert_eq!(w.cmd(&format!("read {fd}")), "opened by the child after");
    // The lock is the table's, and names the child that took it.
    assert_eq!(
        posix_holder(&a),
        child,
        "the child's POSIX lock, by its pid"
    );
}

#[test]
fn a_childs_posix_lock_on_a_file_its_parent_maps_in_their_shared_table_is_refused() {
    cryo_bin();
    let w = Workload::spawn("share", &["talk-files"]);
    let child = w.cmd("child");
    let file = w.path("mapped");
    std::fs::write(&file, "mapped by the parent, locked by the child").unwrap();
    w.cmd(&format!("map {}", file.display()));
    let fd = w.cmd(&format!("child-open {}", file.display()));
    assert_eq!(w.cmd(&format!("child-lock {fd}")), "ok");
    let out = w.dump(&w.path("img"), &[]);
    out.assert_refused()
        .assert_stderr_mentions(&format!("pid {child} fd {fd}"))
        .assert_stderr_mentions(&format!("is on a file pid {} maps", w.pid()))
        .assert_stderr_mentions("would drop the lock");
    w.assert_untouched();
}

#[test]
fn children_sharing_the_fd_table_with_children_of_their_own_come_back_in_one_tree() {
    cryo_bin();
    let mut w = Workload::spawn("share", &["tree-files"]);
    let pid = |verb: &str| -> i32 { w.cmd(verb).parse().unwrap() };
    let (b, c, d, e) = (pid("child"), pid("grandchild"), pid("second"), pid("plain"));
    let f = pid("plain-grandchild");
    // The workload opens its reply FIFO for each reply, and may not have closed it yet.
    let reply_fifo = w.path("out");
    let fds = |p: i32| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(format!("/proc/{p}/fd"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|fd| std::fs::read_link(fd).ok().as_ref() != Some(&reply_fifo))
            .map(|fd| fd.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let before: Vec<Vec<String>> = [b, e, f].into_iter().map(fds).collect();
    w.dump_and_restore();
    let a = w.pid();
    for (x, what) in [(b, "B"), (c, "C, B's child"), (d, "D")] {
        assert!(same(a, x, 2), "A {a} and {what} {x}: one fd table again");
    }
    assert!(!same(a, e, 2), "E {e}, forked by A: its own");
    assert!(!same(b, f, 2), "F {f}, forked by B: its own");
    let ppid = |p: i32| status_field(p, "PPid").unwrap();
    assert_eq!(
        (ppid(c), ppid(f)),
        (b.to_string(), b.to_string()),
        "C and F: B's children"
    );
    // Nothing of the restore's left in the tables: each holds the fds it had.
    let after: Vec<Vec<String>> = [b, e, f].into_iter().map(fds).collect();
    assert_eq!(after, before, "the fds of B (A's table), E and F");
}

#[test]
fn a_child_sharing_its_parents_working_directory_comes_back_sharing_it() {
    cryo_bin();
    let mut w = Workload::spawn("share", &["talk-fs"]);
    let child: i32 = w.cmd("child").parse().unwrap();
    let (one, two) = (w.path("one"), w.path("two"));
    std::fs::create_dir(&one).unwrap();
    std::fs::create_dir(&two).unwrap();
    assert_eq!(w.cmd(&format!("child-chdir {}", one.display())), "ok");
    w.cmd("umask 027");
    w.dump_and_restore();
    let pid = w.pid();
    assert!(
        same(pid, child, 3),
        "parent {pid} and child {child}: one fs_struct again"
    );
    assert!(!same(pid, child, 2), "but each its own fd table");
    assert_eq!(
        w.cmd("cwd"),
        one.display().to_string(),
        "the directory the child chose"
    );
    assert_eq!(w.cmd("child-umask 022"), "27", "the umask the parent set");
    assert_eq!(w.cmd("umask 027"), "22", "the umask the child set");
    assert_eq!(w.cmd(&format!("chdir {}", two.display())), "ok");
    assert_eq!(
        w.cmd("child-cwd"),
        two.display().to_string(),
        "the parent's chdir, seen"
    );
}

#[test]
fn children_sharing_a_table_their_parent_left_are_refused_naming_both() {
    cryo_bin();
    let w = Workload::spawn("share", &["siblings-files"]);
    let (first, second) = (w.cmd("child"), w.cmd("second"));
    let out = w.dump(&w.path("img"), &[]);
    out.assert_refused()
        .assert_stderr_mentions("shares its fd table with pid")
        .assert_stderr_mentions("CLONE_FILES")
        .assert_stderr_has_word(&first)
        .assert_stderr_has_word(&second);
    w.assert_untouched();
}

#[test]
fn a_child_sharing_its_parents_table_that_fails_at_restore_fails_it_at_once_naming_why() {
    cryo_bin();
    let mut w = Workload::spawn("share", &["talk-files"]);
    let child = w.cmd("child");
    let gone = w.path("gone");
    std::fs::create_dir(&gone).unwrap();
    assert_eq!(w.cmd(&format!("child-chdir {}", gone.display())), "ok");
    let img = w.path("img");
    w.dump_ok(&img);
    // The child's working directory is gone at restore: its chdir fails in its cryo phase,
    // while its parent waits for it.
    std::fs::remove_dir(&gone).unwrap();
    let started = std::time::Instant::now();
    let out = w.cryo(&["restore", "-D", img.to_str().unwrap(), "--detach"]);
    out.assert_refused().assert_stderr_mentions(&format!(
        "pid {child}: chdir {}: No such file",
        gone.display()
    ));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "the parent did not wait out its patience: {:?}",
        started.elapsed()
    );
    assert!(
        !std::path::Path::new(&format!("/proc/{}", w.pid())).exists(),
        "nothing left"
    );
    // The image is still good: with the directory back, the restore goes through.
    std::fs::create_dir(&gone).unwrap();
    w.restore_background(&img);
    assert_eq!(w.cmd("child-cwd"), gone.display().to_string());
}
