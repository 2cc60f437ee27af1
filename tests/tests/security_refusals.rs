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
