//! Cgroup membership: a process in cgroups other than cryo's comes back in them (made again
//! when gone), in a v1 hierarchy and in the unified one; a process in a cgroup namespace of
//! its own comes back in one with the same root; a thread in another cgroup than its process
//! is refused at dump, naming pid and thread.
//!
//! Needs the engine: `cryo` must be built (`cargo build -p cryo`).

use std::path::{Path, PathBuf};

use cryo_tests::{cryo_bin, Workload};

/// Cgroups the test made, removed when it ends (declared before the workload, so dropped after
/// it: a cgroup with a process in it cannot go).
struct Made(Vec<PathBuf>);

impl Made {
    /// A new cgroup named after this test in the hierarchy mounted at `mount`.
    fn new(mounts: &[&str], name: &str) -> Self {
        let dirs = mounts
            .iter()
            .map(|m| Path::new(m).join(format!("cryo-test-{}-{name}", std::process::id())))
            .collect::<Vec<_>>();
        for d in &dirs {
            std::fs::create_dir_all(d).unwrap_or_else(|e| panic!("mkdir {}: {e}", d.display()));
        }
        Self(dirs)
    }

    /// The cgroup's path as /proc/PID/cgroup names it.
    fn path(&self, i: usize) -> String {
        format!("/{}", self.0[i].file_name().unwrap().to_string_lossy())
    }

    /// Makes cgroup `name` below each made one.
    fn below(&mut self, name: &str) {
        let dirs: Vec<PathBuf> = self.0.iter().map(|d| d.join(name)).collect();
        for d in &dirs {
            std::fs::create_dir(d).unwrap_or_else(|e| panic!("mkdir {}: {e}", d.display()));
        }
        self.0.extend(dirs);
    }

    /// Removes the cgroups (their processes gone), the last made first; true when they all
    /// went.
    fn remove(&self) -> bool {
        // A process killed a moment ago may still be leaving its cgroup: a few tries.
        self.0.iter().rev().all(|d| {
            (0..200).any(|_| {
                let gone = std::fs::remove_dir(d).is_ok() || !d.exists();
                if !gone {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                gone
            })
        })
    }
}

impl Drop for Made {
    fn drop(&mut self) {
        self.remove();
    }
}

const PIDS: &str = "/sys/fs/cgroup/pids";
const UNIFIED: &str = "/sys/fs/cgroup/unified";

#[test]
fn a_process_comes_back_in_its_cgroups_made_again_when_gone() {
    cryo_bin();
    let made = Made::new(&[PIDS, UNIFIED], "back");
    let (v1, v2) = (made.0[0].display(), made.0[1].display());
    let mut w = Workload::spawn(
        "attrs",
        &[&format!("cgroup={v1}"), &format!("cgroup={v2}"), "thread"],
    );
    let (pids, unified) = (made.path(0), made.path(1));
    let check = |w: &Workload, when: &str| {
        for get in ["get", "tget"] {
            assert_eq!(w.cmd(&format!("{get} cgroup:pids")), pids, "{when} {get}");
            assert_eq!(
                w.cmd(&format!("{get} cgroup:")),
                unified,
                "{when} {get} (v2)"
            );
        }
    };
    check(&w, "at start");

    w.dump(&w.path("left"), &["--leave-running"])
        .assert_success();
    check(&w, "after --leave-running");

    let img = w.path("img");
    w.dump_ok(&img);
    // Gone while the process is away: the restore makes them again.
    assert!(made.remove(), "the cgroups could not be removed");
    w.restore_background(&img);
    check(&w, "after restore");
}

#[test]
fn a_thread_in_another_cgroup_than_its_process_is_refused_naming_pid_and_thread() {
    cryo_bin();
    let made = Made::new(&[PIDS], "thread");
    let w = Workload::spawn(
        "attrs",
        &[
            "thread",
            &format!("t.cgroup-thread={}", made.0[0].display()),
        ],
    );
    assert_eq!(w.cmd("tget cgroup:pids"), made.path(0));
    let out = w.dump(&w.path("img"), &[]);
    assert!(!out.status.success(), "the dump should be refused\n{out}");
    let pid = w.pid();
    assert!(
        out.stderr.contains(&format!("pid {pid} thread "))
            && out.stderr.contains(&format!(
                "in cgroup {} of hierarchy \"pids\", its process in",
                made.path(0)
            )),
        "{}",
        out.stderr
    );
    w.assert_untouched();
    assert_eq!(w.cmd("tget cgroup:pids"), made.path(0), "the thread stays");
}

/// The cgroup of `pid` in `hierarchy` as the test (in the host's cgroup namespace) sees it.
fn cgroup_of(pid: i32, hierarchy: &str) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("cgroup file");
    text.lines()
        .find_map(|l| {
            let mut parts = l.splitn(3, ':').skip(1);
            (parts.next() == Some(hierarchy)).then(|| parts.next().unwrap_or("").to_string())
        })
        .expect("hierarchy")
}

#[test]
fn a_process_in_a_cgroup_namespace_comes_back_in_one_with_the_same_root() {
    cryo_bin();
    let mut made = Made::new(&[PIDS, UNIFIED], "ns");
    let roots: Vec<String> = made.0.iter().map(|d| d.display().to_string()).collect();
    made.below("sub");
    let mut w = Workload::spawn(
        "attrs",
        &[
            &format!("cgroup={}", roots[0]),
            &format!("cgroup={}", roots[1]),
            "unshare=cgroup",
            &format!("cgroup={}/sub", roots[0]),
            &format!("cgroup={}/sub", roots[1]),
            "thread",
        ],
    );
    let ns = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/cgroup")).unwrap();
    let full = (
        format!("{}/sub", made.path(0)),
        format!("{}/sub", made.path(1)),
    );
    let check = |w: &Workload, when: &str| {
        assert_ne!(
            ns(&w.pid().to_string()),
            ns("self"),
            "{when}: cryo's namespace"
        );
        for get in ["get", "tget"] {
            // From inside, paths start at the namespace's root.
            assert_eq!(w.cmd(&format!("{get} cgroup:pids")), "/sub", "{when} {get}");
            assert_eq!(
                w.cmd(&format!("{get} cgroup:")),
                "/sub",
                "{when} {get} (v2)"
            );
        }
        assert_eq!(cgroup_of(w.pid(), "pids"), full.0, "{when}: from outside");
        assert_eq!(cgroup_of(w.pid(), ""), full.1, "{when}: from outside (v2)");
    };
    check(&w, "at start");
    w.dump(&w.path("left"), &["--leave-running"])
        .assert_success();
    check(&w, "after --leave-running");
    let img = w.path("img");
    w.dump_ok(&img);
    w.restore_background(&img);
    check(&w, "after restore");
}
