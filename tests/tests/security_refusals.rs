//! Security state a dump refuses (issue 12, docs/state-coverage.md): what a restore could not
//! bring back exactly is refused at dump, naming the process, the thread and the attribute,
//! and the original runs on untouched.
//!
//! Needs the engine: `cryo` must be built (`cargo build -p cryo`).

use cryo_tests::{cryo_bin, Workload};

/// Starts an `attrs` workload with `settings`, dumps it (with and without --leave-running:
/// a refusal is the same), and checks the refusal mentions `needle` and the pid, and that
/// the original still has `expect` (command, reply) afterwards.
#[track_caller]
fn refused(settings: &[&str], needle: &str, expect: &[(&str, &str)]) {
    cryo_bin();
    let w = Workload::spawn("attrs", settings);
    for extra in [&[][..], &["--leave-running"][..]] {
        let img = w.path(if extra.is_empty() { "img" } else { "img-lr" });
        w.dump(&img, extra)
            .assert_refused()
            .assert_stderr_mentions(needle)
            .assert_stderr_has_word(&w.pid().to_string());
        w.assert_untouched();
        for (command, want) in expect {
            assert_eq!(
                w.cmd(command),
                *want,
                "`{command}` after the refusal: {w:?}"
            );
        }
    }
}

/// A filter handing getcpu to a user-notification listener (held by the process itself):
/// the listener, its fd and the calls waiting on it cannot be re-created.
#[test]
fn user_notification_filter() {
    refused(
        &["seccomp-notify=1"],
        "user-notification",
        &[("get seccomp", "mode 2 filters 1")],
    );
}

/// A filter shared by two threads but not by a third (the strict one, started before it):
/// the kernel can share a filter between existing threads only with TSYNC, which puts it on
/// every thread (and a strict thread cannot even take it).
#[test]
fn filter_shared_by_some_threads_only() {
    refused(
        &["strict-thread", "seccomp=42", "thread"],
        "shared by some threads but not by all",
        &[
            ("get getcpu", "errno 42"),
            ("tget getcpu", "errno 42"),
            ("strict", "seccomp 1 alive"),
        ],
    );
}

/// A cryo without CAP_SYS_ADMIN (its bounding set cut by setpriv, util-linux) can neither
/// suspend a confined thread's filters for its own calls nor read them: the dump refuses
/// before its first remote call, and the target keeps its filter.
#[test]
fn confined_thread_when_cryo_lacks_cap_sys_admin() {
    let cryo = cryo_bin();
    let w = Workload::spawn("attrs", &["seccomp=42"]);
    let img = w.path("img");
    let out = std::process::Command::new("setpriv")
        .arg("--bounding-set=-sys_admin")
        .arg("--")
        .arg(&cryo)
        .args(["dump", "-t", &w.pid().to_string(), "-D"])
        .arg(&img)
        .arg("--leave-running")
        .output()
        .expect("run cryo under setpriv (util-linux)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the dump should fail: {stderr}");
    assert!(
        stderr.contains("seccomp cannot be suspended")
            && cryo_tests::has_word(&stderr, &w.pid().to_string()),
        "{stderr}"
    );
    w.assert_untouched();
    assert_eq!(w.cmd("get getcpu"), "errno 42");
    assert_eq!(w.cmd("get seccomp"), "mode 2 filters 1");
}

/// Landlock domains (landlock_restrict_self): their rules cannot be read back, so a thread in
/// one is refused at dump, naming pid, thread and "Landlock domain"; the target stays
/// confined. Each domain handles file reads, allowed beneath /proc, /usr, /lib, /etc only: a
/// file in the test's own directory reads EACCES (13) inside it, ok outside.
mod landlock {
    use cryo_tests::{cryo_bin, has_word, Workload};

    /// A file of the test's dir any uid may read, and the command that reads it.
    fn secret(w: &Workload) -> String {
        let path = w.path("secret");
        cryo_tests::write_file(&path, b"outside the domain");
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .expect("chmod the file");
        format!("read:{}", path.display())
    }

    /// Dumps `w` (killing and --leave-running: a refusal is the same) and checks the refusal
    /// names its pid, thread `tid` and the Landlock domain, and `w` runs on untouched.
    #[track_caller]
    fn refused(w: &Workload, tid: i32) {
        for extra in [&[][..], &["--leave-running"][..]] {
            let img = w.path(if extra.is_empty() { "img" } else { "img-lr" });
            let out = w.dump(&img, extra);
            out.assert_refused()
                .assert_stderr_has_word(&w.pid().to_string())
                .assert_stderr_mentions(&format!("thread {tid}:"))
                .assert_stderr_mentions("Landlock domain");
            w.assert_untouched();
        }
    }

    /// The workload's threads, the main one first.
    fn threads(w: &Workload) -> Vec<i32> {
        let mut tids: Vec<i32> = std::fs::read_dir(format!("/proc/{}/task", w.pid()))
            .expect("task dir")
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        tids.sort_by_key(|&t| (t != w.pid(), t));
        tids
    }

    /// A landlocked process of root (with CAP_SYS_PTRACE: checked against cryo itself).
    #[test]
    fn a_landlocked_process_is_refused_and_stays_confined() {
        cryo_bin();
        let w = Workload::spawn("attrs", &["landlock=0:0"]);
        let read = secret(&w);
        assert_eq!(w.cmd(&format!("get {read}")), "errno 13", "confined");
        refused(&w, w.pid());
        assert_eq!(w.cmd(&format!("get {read}")), "errno 13", "still confined");
        assert_eq!(w.cmd("get read:/proc/self/status"), "ok");
    }

    /// Only the second thread landlocked itself: the refusal names that thread.
    #[test]
    fn only_a_second_thread_landlocked_is_refused_naming_it() {
        cryo_bin();
        let w = Workload::spawn("attrs", &["thread", "t.landlock=0:0"]);
        let read = secret(&w);
        assert_eq!(
            w.cmd(&format!("get {read}")),
            "ok",
            "the main thread is free"
        );
        assert_eq!(
            w.cmd(&format!("tget {read}")),
            "errno 13",
            "the second is not"
        );
        let second = threads(&w)[1];
        refused(&w, second);
        assert_eq!(w.cmd(&format!("tget {read}")), "errno 13", "still confined");
        assert_eq!(w.cmd(&format!("get {read}")), "ok");
    }

    /// A domain with scopes (signals, abstract unix sockets) and logging flags
    /// (LANDLOCK_RESTRICT_SELF_LOG_SAME_EXEC_OFF | LOG_NEW_EXEC_ON) is a domain all the same.
    #[test]
    fn a_scoped_domain_with_logging_flags_is_refused() {
        cryo_bin();
        let w = Workload::spawn("attrs", &["landlock=0x3:0x3"]);
        let read = secret(&w);
        assert_eq!(w.cmd(&format!("get {read}")), "errno 13", "confined");
        refused(&w, w.pid());
    }

    /// A seccomp filter in the landlocked thread: the check runs unfiltered (cryo's calls are
    /// suspended from seccomp) and finds the domain; the filter is kept.
    #[test]
    fn a_landlocked_thread_with_a_seccomp_filter_is_refused_for_its_domain() {
        cryo_bin();
        let w = Workload::spawn("attrs", &["seccomp=42", "landlock=0:0"]);
        let read = secret(&w);
        assert_eq!(w.cmd(&format!("get {read}")), "errno 13", "confined");
        refused(&w, w.pid());
        assert_eq!(w.cmd("get getcpu"), "errno 42", "the filter kept");
        assert_eq!(w.cmd(&format!("get {read}")), "errno 13", "still confined");
    }

    /// A landlocked process of another uid, without capabilities: checked against a probe
    /// process of its uid (cryo's own pid would be denied it anyway).
    #[test]
    fn a_landlocked_process_of_another_uid_is_refused() {
        cryo_bin();
        let w = Workload::spawn("attrs", &["thread", "user=4321", "landlock=0:0"]);
        let read = secret(&w);
        assert_eq!(
            w.cmd("get ids").split(" gid").next(),
            Some("uid 4321 4321 4321 4321")
        );
        assert_eq!(w.cmd(&format!("get {read}")), "errno 13", "confined");
        assert_eq!(
            w.cmd(&format!("tget {read}")),
            "ok",
            "the second thread is free"
        );
        refused(&w, w.pid());
        assert_eq!(w.cmd(&format!("get {read}")), "errno 13", "still confined");
        assert!(
            !std::fs::read_dir("/proc").unwrap().any(|e| {
                let exe = e.map(|e| e.path().join("exe")).ok();
                exe.and_then(|x| std::fs::read_link(x).ok())
                    .is_some_and(|x| x.to_string_lossy().contains("memfd:cryo-probe"))
            }),
            "a probe process outlived the dump"
        );
    }

    /// The same process unconfined: the probe says so, and it dumps and restores as before,
    /// reading the file from inside the restored process.
    #[test]
    fn an_unconfined_process_of_another_uid_dumps_and_restores() {
        cryo_bin();
        let mut w = Workload::spawn("attrs", &["thread", "user=4321"]);
        let read = secret(&w);
        let ids = "uid 4321 4321 4321 4321 gid 4321 4321 4321 4321 groups none";
        assert_eq!(w.cmd("get ids"), ids);
        assert_eq!(w.cmd(&format!("get {read}")), "ok");
        w.dump_and_restore();
        assert_eq!(w.cmd("get ids"), ids);
        assert_eq!(w.cmd("tget ids"), ids);
        assert_eq!(w.cmd(&format!("get {read}")), "ok");
        assert_eq!(w.cmd(&format!("tget {read}")), "ok");
    }

    /// `dump --check-only`: no restore anywhere can bring a domain back, a permanent finding
    /// (exit 3), and the process runs on confined.
    #[test]
    fn check_only_reports_a_landlocked_process_as_permanent() {
        cryo_bin();
        let w = Workload::spawn("attrs", &["landlock=0:0"]);
        let read = secret(&w);
        let out = w.dump(&w.path("check"), &["--check-only"]);
        assert_eq!(out.status.code(), Some(3), "a permanent finding\n{out}");
        assert!(
            has_word(&out.stderr, &w.pid().to_string()) && out.stderr.contains("Landlock domain"),
            "{out}"
        );
        w.assert_untouched();
        assert_eq!(w.cmd(&format!("get {read}")), "errno 13", "still confined");
    }
}
