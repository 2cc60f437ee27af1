//! Cgroup membership: a process in cgroups other than cryo's comes back in them (made again
//! when gone), in the v1 `pids` hierarchy and in the unified one (whichever of the two this
//! host mounts); a process in a cgroup namespace of its own comes back in one with the same
//! root; a thread in another cgroup than its process is refused at dump, naming pid and
//! thread (on a v1 hierarchy, where a thread can be moved alone).
//!
//! Needs the engine: `cryo` must be built (`cargo build -p cryo`).

use std::path::{Path, PathBuf};

use cryo_tests::{cryo_bin, Workload};

/// The hierarchies the tests use, as /proc/PID/cgroup names them ("pids", "" for the unified
/// one), with where cryo's mount table has them; at least one.
fn hierarchies() -> Vec<(&'static str, PathBuf)> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mut found = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(sep) = fields.iter().position(|&f| f == "-") else {
            continue;
        };
        let (root, point) = (fields[3], PathBuf::from(fields[4]));
        let (fstype, options) = (fields[sep + 1], fields[sep + 3]);
        let name = match fstype {
            "cgroup2" => "",
            "cgroup" if options.split(',').any(|o| o == "pids") => "pids",
            _ => continue,
        };
        if root == "/" && !found.iter().any(|(n, _)| *n == name) {
            found.push((name, point));
        }
    }
    assert!(
        !found.is_empty(),
        "neither a pids nor a unified cgroup mount:\n{text}"
    );
    found
}

/// Cgroups the test made, removed when it ends (declared before the workload, so dropped after
/// it: a cgroup with a process in it cannot go).
struct Made(Vec<PathBuf>);

impl Made {
    /// A new cgroup named after this test in each hierarchy mounted at `mounts`.
    fn new(mounts: &[&Path], name: &str) -> Self {
        let dirs = mounts
            .iter()
            .map(|m| m.join(format!("cryo-test-{}-{name}", std::process::id())))
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

#[test]
fn a_process_comes_back_in_its_cgroups_made_again_when_gone() {
    cryo_bin();
    let hier = hierarchies();
    let mounts: Vec<&Path> = hier.iter().map(|(_, m)| m.as_path()).collect();
    let made = Made::new(&mounts, "back");
    let mut settings: Vec<String> = made
        .0
        .iter()
        .map(|d| format!("cgroup={}", d.display()))
        .collect();
    settings.push("thread".into());
    let settings: Vec<&str> = settings.iter().map(String::as_str).collect();
    let mut w = Workload::spawn("attrs", &settings);
    let check = |w: &Workload, when: &str| {
        for get in ["get", "tget"] {
            for (i, (name, _)) in hier.iter().enumerate() {
                assert_eq!(
                    w.cmd(&format!("{get} cgroup:{name}")),
                    made.path(i),
                    "{when} {get}, hierarchy {name:?}"
                );
            }
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
    let Some((_, pids)) = hierarchies().into_iter().find(|(n, _)| *n == "pids") else {
        eprintln!("no v1 pids hierarchy here: a thread cannot be moved alone; nothing to test");
        return;
    };
    let made = Made::new(&[&pids], "thread");
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
    let hier = hierarchies();
    let mounts: Vec<&Path> = hier.iter().map(|(_, m)| m.as_path()).collect();
    let mut made = Made::new(&mounts, "ns");
    let roots: Vec<String> = made.0.iter().map(|d| d.display().to_string()).collect();
    made.below("sub");
    let mut settings: Vec<String> = roots.iter().map(|r| format!("cgroup={r}")).collect();
    settings.push("unshare=cgroup".into());
    settings.extend(roots.iter().map(|r| format!("cgroup={r}/sub")));
    settings.push("thread".into());
    let settings: Vec<&str> = settings.iter().map(String::as_str).collect();
    let mut w = Workload::spawn("attrs", &settings);
    let ns = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/cgroup")).unwrap();
    let check = |w: &Workload, when: &str| {
        assert_ne!(
            ns(&w.pid().to_string()),
            ns("self"),
            "{when}: cryo's namespace"
        );
        for (i, (name, _)) in hier.iter().enumerate() {
            for get in ["get", "tget"] {
                // From inside, paths start at the namespace's root.
                assert_eq!(
                    w.cmd(&format!("{get} cgroup:{name}")),
                    "/sub",
                    "{when} {get}, hierarchy {name:?}"
                );
            }
            assert_eq!(
                cgroup_of(w.pid(), name),
                format!("{}/sub", made.path(i)),
                "{when}: from outside, hierarchy {name:?}"
            );
        }
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
