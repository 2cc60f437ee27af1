//! Cgroup membership: a process in cgroups other than cryo's comes back in them (made again
//! when gone), in the v1 `pids` hierarchy and in the unified one (whichever of the two this
//! host mounts); a process in a cgroup namespace of its own comes back in one with the same
//! root; a thread in another cgroup than its process comes back in it (on a v1 hierarchy,
//! where a thread can be moved alone).
//! A cgroup below cryo's made again comes back with its limits (read by the process from its
//! own cgroup's files); a limit the restoring host refuses fails the restore naming the cgroup
//! and the file, leaving no cgroup behind.
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

/// `check` holds at start, after a --leave-running dump, and after a dump that killed the
/// process and a restore once the cgroups `made` were removed meanwhile (made again).
fn checked_across_dumps(w: &mut Workload, made: &Made, check: impl Fn(&Workload, &str)) {
    check(w, "at start");
    w.dump(&w.path("left"), &["--leave-running"])
        .assert_success();
    check(w, "after --leave-running");
    let img = w.path("img");
    w.dump_ok(&img);
    // Gone while the process is away: the restore makes them again.
    assert!(made.remove(), "the cgroups could not be removed");
    w.restore_background(&img);
    check(w, "after restore");
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
    checked_across_dumps(&mut w, &made, check);
}

/// A thread moved alone into another cgroup (v1 `tasks`) than its process comes back there,
/// the cgroup made again with its limit when gone; the process in its own.
#[test]
fn a_thread_in_another_cgroup_than_its_process_comes_back_in_it() {
    cryo_bin();
    let Some((_, pids)) = hierarchies().into_iter().find(|(n, _)| *n == "pids") else {
        eprintln!("no v1 pids hierarchy here: a thread cannot be moved alone; nothing to test");
        return;
    };
    let mut made = Made::new(&[&pids], "thread");
    made.below("apart");
    std::fs::write(made.0[1].join("pids.max"), "41").unwrap();
    let mut w = Workload::spawn(
        "attrs",
        &[
            &format!("cgroup={}", made.0[0].display()),
            "thread",
            &format!("t.cgroup-thread={}", made.0[1].display()),
        ],
    );
    let apart = format!("{}/apart", made.path(0));
    let check = |w: &Workload, when: &str| {
        assert_eq!(
            w.cmd("get cgroup:pids"),
            made.path(0),
            "{when}: the process"
        );
        assert_eq!(w.cmd("tget cgroup:pids"), apart, "{when}: the thread");
        assert_eq!(
            w.cmd("tget cgfile:pids:pids.max"),
            "41",
            "{when}: the thread's limit"
        );
    };
    checked_across_dumps(&mut w, &made, check);
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

/// The hierarchy of `controller` ("" for the unified one) as /proc/PID/cgroup names it, with
/// its mount and the test's own cgroup in it (cryo runs there: what the restore may make
/// again lies below it).
/// The test's own cgroup in the v1 `pids` hierarchy, else in the unified one: (the hierarchy
/// as /proc/PID/cgroup names it, the cgroup's directory).
fn pids_or_unified() -> (String, PathBuf) {
    own_cgroup("pids")
        .or_else(|| own_cgroup(""))
        .expect("neither a v1 pids nor a unified hierarchy")
}

fn own_cgroup(controller: &str) -> Option<(String, PathBuf)> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(sep) = fields.iter().position(|&f| f == "-") else {
            continue;
        };
        let (root, point) = (fields[3], fields[4]);
        let (fstype, options) = (fields[sep + 1], fields[sep + 3]);
        let fits = match controller {
            "" => fstype == "cgroup2",
            c => fstype == "cgroup" && options.split(',').any(|o| o == c),
        };
        if !fits || root != "/" {
            continue;
        }
        let name = match controller {
            "" => String::new(),
            c => options
                .split(',')
                .filter(|o| !matches!(*o, "rw" | "ro" | "relatime" | "noexec" | "nosuid" | "nodev"))
                .filter(|o| o.starts_with(c) || !o.contains('='))
                .collect::<Vec<_>>()
                .join(","),
        };
        let path = own.lines().find_map(|l| {
            let mut parts = l.splitn(3, ':').skip(1);
            (parts.next() == Some(name.as_str())).then(|| parts.next().unwrap_or("").to_string())
        })?;
        return Some((name, Path::new(point).join(path.trim_start_matches('/'))));
    }
    None
}

/// One setting the tests give a cgroup: hierarchy name, file, value.
type Setting = (String, &'static str, &'static str);

/// The limits set on the test's cgroups where this host has the file: memory, pids and cpu
/// (v2 names in the unified hierarchy, v1 ones in v1 hierarchies), cgroup.max.descendants, a
/// v1 cpuset's CPUs and memory nodes.
const WANTED: &[(&str, &str, &str)] = &[
    ("memory", "memory.max", "104857600"),
    ("memory", "memory.limit_in_bytes", "104857600"),
    ("pids", "pids.max", "77"),
    ("cpu", "cpu.max", "50000 100000"),
    ("cpu", "cpu.weight", "50"),
    ("cpu", "cpu.cfs_quota_us", "50000"),
    ("cpu", "cpu.shares", "512"),
    ("", "cgroup.max.descendants", "7"),
    // v1: a cpuset made again has no CPUs (nothing could join it) unless they are written.
    ("cpuset", "cpuset.cpus", "0"),
    ("cpuset", "cpuset.mems", "0"),
];

#[test]
fn a_cgroup_made_again_comes_back_with_its_limits() {
    cryo_bin();
    // Each hierarchy once: the unified one, then the v1 ones of the wanted controllers.
    let mut places: Vec<(String, PathBuf)> = Vec::new();
    for c in ["", "memory", "pids", "cpu", "cpuset"] {
        if let Some(p) = own_cgroup(c) {
            if !places.iter().any(|(n, _)| *n == p.0) {
                places.push(p);
            }
        }
    }
    let mounts: Vec<&Path> = places.iter().map(|(_, d)| d.as_path()).collect();
    let mut made = Made::new(&mounts, "limits");
    made.below("sub");
    let n = places.len();
    // The limits: on the parent (made.0[i]) and a tighter pids.max and memory on the child.
    let mut set: Vec<(usize, Setting)> = Vec::new();
    for (i, (name, _)) in places.iter().enumerate() {
        for &(c, file, value) in WANTED {
            let here = if c.is_empty() {
                name.is_empty()
            } else {
                name.is_empty() || name.split(',').any(|o| o == c)
            };
            if !here || !made.0[i].join(file).exists() {
                continue;
            }
            std::fs::write(made.0[i].join(file), value)
                .unwrap_or_else(|e| panic!("{}/{file} = {value}: {e}", made.0[i].display()));
            set.push((i, (name.clone(), file, value)));
            // The child: its own pids limit, and cgroup.max.descendants of the parent keeps it.
            let child = match file {
                "pids.max" => Some("33"),
                "memory.limit_in_bytes" | "memory.max" => Some("52428800"),
                // v1: a child's cpuset is empty until written.
                "cpuset.cpus" | "cpuset.mems" => Some(value),
                _ => None,
            };
            if let Some(value) = child {
                std::fs::write(made.0[n + i].join(file), value).unwrap();
                set.push((n + i, (name.clone(), file, value)));
            }
        }
    }
    assert!(
        set.iter().any(|(_, (_, f, _))| *f == "pids.max"),
        "no pids limit here: {set:?}"
    );
    let settings: Vec<String> = made.0[n..]
        .iter()
        .map(|d| format!("cgroup={}", d.display()))
        .collect();
    let settings: Vec<&str> = settings.iter().map(String::as_str).collect();
    let mut w = Workload::spawn("attrs", &settings);
    let check = |w: &Workload, when: &str| {
        // The process's own cgroup first: what it observes.
        let (own, parents): (Vec<_>, Vec<_>) = set.iter().partition(|(i, _)| *i >= n);
        for (i, (name, file, value)) in own.into_iter().chain(parents) {
            if *i >= n {
                assert_eq!(
                    w.cmd(&format!("get cgfile:{name}:{file}")),
                    *value,
                    "{when}: its own cgroup's {file} (hierarchy {name:?})"
                );
            } else {
                let read = std::fs::read_to_string(made.0[*i].join(file)).unwrap();
                assert_eq!(read.trim_end(), *value, "{when}: the parent's {file}");
            }
        }
    };
    check(&w, "at start");
    let img = w.path("img");
    w.dump_ok(&img);
    assert!(made.remove(), "the cgroups could not be removed");
    w.restore_background(&img);
    check(&w, "after restore");
    for (i, (name, _)) in places.iter().enumerate() {
        let path = w.cmd(&format!("get cgroup:{name}"));
        assert!(
            path.ends_with(&format!("{}/sub", made.path(i))),
            "hierarchy {name:?}: in {path}"
        );
    }
}

#[test]
fn a_limit_the_restoring_host_refuses_fails_the_restore_naming_cgroup_and_file() {
    cryo_bin();
    // v1 cpu: a child's CFS quota may not exceed its parent's (the kernel answers EINVAL).
    let Some((name, own)) = own_cgroup("cpu") else {
        eprintln!("no v1 cpu hierarchy here: nothing refuses a child's quota; nothing to test");
        return;
    };
    if !own.join("cpu.cfs_quota_us").exists() {
        eprintln!("no v1 CFS quota here; nothing to test");
        return;
    }
    let mut made = Made::new(&[&own], "refused");
    made.below("sub");
    let (parent, child) = (made.0[0].clone(), made.0[1].clone());
    std::fs::write(child.join("cpu.cfs_quota_us"), "50000").unwrap();
    let mut w = Workload::spawn("attrs", &[&format!("cgroup={}", child.display())]);
    assert_eq!(
        w.cmd(&format!("get cgfile:{name}:cpu.cfs_quota_us")),
        "50000"
    );
    let img = w.path("img");
    w.dump_ok(&img);
    // Both gone; the parent is there again (the restore keeps it), with a tighter quota than
    // the child's.
    assert!(made.remove(), "the cgroups could not be removed");
    std::fs::create_dir(&parent).unwrap();
    std::fs::write(parent.join("cpu.cfs_quota_us"), "20000").unwrap();
    let out = w.cryo(&["restore", "-D", img.to_str().unwrap(), "--detach"]);
    assert!(!out.status.success(), "the restore should fail\n{out}");
    let expected = format!(
        "cgroup {} (made again): write \"50000\" into cpu.cfs_quota_us",
        child.display()
    );
    assert!(out.stderr.contains(&expected), "{expected}\n{}", out.stderr);
    assert!(
        !child.exists(),
        "the cgroup made for the restore is left behind"
    );
    assert!(!cryo_tests::pid_exists(w.pid()), "a process was restored");
    // The image is kept: with the parent's quota lifted it restores.
    std::fs::write(parent.join("cpu.cfs_quota_us"), "-1").unwrap();
    w.restore_background(&img);
    assert_eq!(
        w.cmd(&format!("get cgfile:{name}:cpu.cfs_quota_us")),
        "50000"
    );
}

#[test]
fn a_cgroup_outside_cryos_made_again_comes_back_with_its_limits() {
    cryo_bin();
    // A hierarchy where cryo (the test's cgroup) is not at the root: a cgroup at the root is
    // outside cryo's, kept by its path from the root.
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let found = [
        ("memory", "memory.limit_in_bytes", "104857600"),
        ("pids", "pids.max", "55"),
    ]
    .into_iter()
    .find_map(|(c, file, value)| {
        let (name, own) = own_cgroup(c)?;
        let mount = text.lines().find_map(|l| {
            let point = l.split(' ').nth(4)?;
            (own.starts_with(point) && l.contains(" - cgroup ") && l.contains(c))
                .then(|| PathBuf::from(point))
        })?;
        (own != mount).then_some((name, mount, file, value))
    });
    let Some((name, mount, file, value)) = found else {
        eprintln!("cryo is at the root of the memory and pids hierarchies here; nothing to test");
        return;
    };
    let made = Made::new(&[&mount], "outside");
    std::fs::write(made.0[0].join(file), value).unwrap();
    let mut w = Workload::spawn("attrs", &[&format!("cgroup={}", made.0[0].display())]);
    assert_eq!(w.cmd(&format!("get cgfile:{name}:{file}")), value);
    let img = w.path("img");
    w.dump_ok(&img);
    assert!(made.remove(), "the cgroup could not be removed");
    w.restore_background(&img);
    assert_eq!(w.cmd(&format!("get cgroup:{name}")), made.path(0));
    assert_eq!(
        w.cmd(&format!("get cgfile:{name}:{file}")),
        value,
        "after restore: its own cgroup's {file}"
    );
}

/// Thaws a v1 freezer cgroup when dropped (before its process is killed and it is removed).
struct Thaw(PathBuf);

impl Drop for Thaw {
    fn drop(&mut self) {
        let _ = std::fs::write(self.0.join("freezer.state"), "THAWED");
    }
}

/// A process a v1 cgroup freezer holds sleeps uninterruptibly until it is thawed: the dump
/// refuses it at once, before its freeze (which hung until killed), naming pid and cgroup, as
/// a temporary state; thawed, it dumps.
#[test]
fn a_process_in_a_frozen_cgroup_is_refused_at_once_and_dumps_once_thawed() {
    cryo_bin();
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let Some(mount) = text.lines().find_map(|l| {
        let fields: Vec<&str> = l.split(' ').collect();
        let sep = fields.iter().position(|&f| f == "-")?;
        let freezer = fields[sep + 1] == "cgroup"
            && fields[sep + 3].split(',').any(|o| o == "freezer")
            && fields[3] == "/";
        freezer.then(|| PathBuf::from(fields[4]))
    }) else {
        eprintln!("no v1 freezer hierarchy here; nothing to test");
        return;
    };
    let made = Made::new(&[&mount], "frozen");
    let w = Workload::spawn("attrs", &[&format!("cgroup={}", made.0[0].display())]);
    let _thaw = Thaw(made.0[0].clone());
    std::fs::write(made.0[0].join("freezer.state"), "FROZEN").unwrap();
    let state = || std::fs::read_to_string(made.0[0].join("freezer.state")).unwrap();
    let waited = std::time::Instant::now();
    while state().trim() != "FROZEN" {
        assert!(waited.elapsed().as_secs() < 10, "the cgroup never froze");
        std::thread::yield_now();
    }
    let out = w.dump(&w.path("check"), &["--check-only"]);
    assert_eq!(out.status.code(), Some(2), "{out}");
    out.assert_stderr_mentions(&format!("pid {}: is in a frozen cgroup", w.pid()))
        .assert_stderr_mentions("temporary");
    w.dump(&w.path("img"), &[])
        .assert_refused()
        .assert_stderr_mentions("frozen cgroup");
    std::fs::write(made.0[0].join("freezer.state"), "THAWED").unwrap();
    w.assert_untouched();
    w.dump(&w.path("img2"), &["--leave-running"])
        .assert_success();
    w.assert_untouched();
}

/// CRIU's `--manage-cgroups` modes: ignore leaves the process in cryo's cgroups; strict
/// refuses a cgroup that exists already, none one that is missing (nothing restored, the image
/// kept); full writes the dumped limit into the existing cgroup where soft (the default) keeps
/// the host's.
#[test]
fn manage_cgroups_modes_choose_what_a_restore_joins_makes_and_writes() {
    cryo_bin();
    let (name, own) = pids_or_unified();
    let made = Made::new(&[&own], "modes");
    let dir = made.0[0].clone();
    assert!(
        dir.join("pids.max").exists(),
        "no pids.max in {}",
        dir.display()
    );
    std::fs::write(dir.join("pids.max"), "77").unwrap();
    let mut w = Workload::spawn("attrs", &[&format!("cgroup={}", dir.display())]);
    let path = w.cmd(&format!("get cgroup:{name}"));
    assert!(path.ends_with(&made.path(0)), "in {path}");
    let img = w.path("img");
    let img_arg = img.to_str().unwrap().to_owned();
    w.dump_ok(&img);

    w.restore_detached_with(&img, &["--manage-cgroups=ignore"]);
    // cryo restore's (the test's own), where `ignore` leaves the process.
    let ours = cgroup_of(std::process::id() as i32, &name);
    assert_eq!(w.cmd(&format!("get cgroup:{name}")), ours);
    w.kill_restored();

    // The cgroup is still there.
    let refused = |w: &Workload, mode: &str, needle: &str| {
        let out = w.cryo(&["restore", "-D", &img_arg, "--detach", mode]);
        assert!(!out.status.success(), "{mode}: restored\n{out}");
        assert!(out.stderr.contains(needle), "{mode}: {needle}\n{out}");
        let state = cryo_tests::status_field(w.pid(), "State").unwrap_or_default();
        assert!(
            state.is_empty() || state.starts_with('Z'),
            "{mode}: a process was restored ({state})"
        );
    };
    refused(
        &w,
        "--manage-cgroups=strict",
        &format!("cgroup {} exists already", dir.display()),
    );

    std::fs::write(dir.join("pids.max"), "55").unwrap();
    w.restore_detached_with(&img, &["--manage-cgroups"]);
    assert_eq!(w.cmd(&format!("get cgfile:{name}:pids.max")), "55", "soft");
    w.kill_restored();
    w.restore_detached_with(&img, &["--manage-cgroups=full"]);
    assert_eq!(w.cmd(&format!("get cgfile:{name}:pids.max")), "77", "full");
    w.kill_restored();

    assert!(made.remove(), "the cgroup could not be removed");
    refused(
        &w,
        "--manage-cgroups=none",
        &format!("cgroup {} is missing", dir.display()),
    );
    assert!(!dir.exists(), "none made the cgroup");
    w.restore_detached_with(&img, &[]);
    assert!(w
        .cmd(&format!("get cgroup:{name}"))
        .ends_with(&made.path(0)));
    assert_eq!(w.cmd(&format!("get cgfile:{name}:pids.max")), "77");
}

/// CRIU's `--cgroup-root`: a dump given a root refuses a process outside it and records it; a
/// restore given a new root puts each cgroup below the new one as it was below the old (made
/// again there with the dumped limits of the one it stands for).
#[test]
fn a_cgroup_root_moves_the_processes_cgroups_below_a_new_one() {
    cryo_bin();
    let (name, own) = pids_or_unified();
    let controller = if name.is_empty() { "unified" } else { "pids" };
    let ours = cgroup_of(std::process::id() as i32, &name);
    let of_ours = |leaf: &str| format!("{}/{leaf}", ours.trim_end_matches('/'));
    let new_leaf = format!("cryo-test-{}-root-new", std::process::id());
    // Made by the restore; removed when the test ends (after the workload).
    let moved_to = Made(vec![own.join(&new_leaf), own.join(&new_leaf).join("child")]);
    let mut made = Made::new(&[&own], "root-old");
    made.below("child");
    let old_root = of_ours(&made.0[0].file_name().unwrap().to_string_lossy());
    let pids_max = made.0[1].join("pids.max");
    if pids_max.exists() {
        std::fs::write(&pids_max, "77").unwrap();
    }
    let mut w = Workload::spawn("attrs", &[&format!("cgroup={}", made.0[1].display())]);
    assert_eq!(
        w.cmd(&format!("get cgroup:{name}")),
        format!("{old_root}/child")
    );

    // A root below the process: refused, the process untouched.
    let inside = format!("{controller}:{old_root}/child/deeper");
    let out = w.dump(&w.path("refused"), &["--cgroup-root", &inside]);
    assert!(!out.status.success(), "dumped outside its root\n{out}");
    assert!(
        out.stderr.contains(&format!("{old_root}/child"))
            && out.stderr.contains("not below the cgroup root"),
        "{out}"
    );
    assert_eq!(
        w.cmd(&format!("get cgroup:{name}")),
        format!("{old_root}/child")
    );

    let img = w.path("img");
    w.dump(
        &img,
        &["--cgroup-root", &format!("{controller}:{old_root}")],
    )
    .assert_success();
    w.wait_original();
    let shown = w.show(&img, false);
    assert!(
        shown
            .stdout
            .contains(&format!("cgroup-root={controller}:{old_root}")),
        "{shown}"
    );
    let new_root = of_ours(&new_leaf);
    w.restore_detached_with(
        &img,
        &["--cgroup-root", &format!("{controller}:{new_root}")],
    );
    assert_eq!(
        w.cmd(&format!("get cgroup:{name}")),
        format!("{new_root}/child"),
        "not moved below the new root"
    );
    if pids_max.exists() {
        assert_eq!(w.cmd(&format!("get cgfile:{name}:pids.max")), "77");
    }
    w.kill_restored();
    assert!(moved_to.remove(), "the new cgroups could not be removed");
}

/// (mode bits, uid, gid) of `path`.
fn owner(path: &Path) -> (u32, u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (m.mode() & 0o7777, m.uid(), m.gid())
}

/// The cgroups below a process's own, empty ones too, come back with their settings when
/// the restore makes them again, and the process's cgroup and those below keep the modes and
/// owners of their directories and interface files (a cgroup delegated to a user). Before:
/// the empty cgroups were not made again and every mode and owner was the fresh cgroup's
/// (zdtm cgroup01, cgroup03, cgroup04).
#[test]
fn empty_cgroups_below_a_process_come_back_with_their_settings_modes_and_owners() {
    cryo_bin();
    let Some((name, mount)) = own_cgroup("pids") else {
        panic!("no v1 pids hierarchy here");
    };
    let mut made = Made::new(&[mount.as_path()], "below");
    let own = made.0[0].clone();
    let empty = own.join("empty");
    let deeper = empty.join("deeper");
    for d in [&empty, &deeper] {
        std::fs::create_dir(d).unwrap();
        made.0.push(d.clone());
    }
    std::fs::write(deeper.join("pids.max"), "17").unwrap();
    let chown = |p: &Path, mode: u32| {
        use std::os::unix::fs::PermissionsExt;
        std::os::unix::fs::chown(p, Some(1000), Some(1001)).unwrap();
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    chown(&own, 0o777);
    chown(&own.join("cgroup.procs"), 0o666);
    chown(&own.join("notify_on_release"), 0o660);
    chown(&empty, 0o700);
    let owners = |when: &str| {
        let all = [
            own.clone(),
            own.join("cgroup.procs"),
            own.join("notify_on_release"),
            own.join("tasks"),
            empty.clone(),
            deeper.clone(),
        ];
        let read: Vec<(u32, u32, u32)> = all.iter().map(|p| owner(p)).collect();
        assert_eq!(
            read,
            [
                (0o777, 1000, 1001),
                (0o666, 1000, 1001),
                (0o660, 1000, 1001),
                owner(&deeper.join("tasks")),
                (0o700, 1000, 1001),
                owner(&deeper),
            ],
            "{when}: modes and owners"
        );
        assert_eq!(
            std::fs::read_to_string(deeper.join("pids.max"))
                .unwrap()
                .trim(),
            "17",
            "{when}: the empty cgroup's limit"
        );
    };
    owners("at start");
    let setting = format!("cgroup={}", own.display());
    let mut w = Workload::spawn("attrs", &[setting.as_str()]);
    let img = w.path("img");
    w.dump_ok(&img);
    assert!(made.remove(), "the cgroups could not be removed");
    w.restore_background(&img);
    assert!(
        w.cmd(&format!("get cgroup:{name}"))
            .ends_with(&made.path(0)),
        "back in its cgroup"
    );
    owners("after restore");
    w.kill_restored();
}

/// A process holding its cgroup's parent directory open (zdtm cgroup02): the restore makes
/// the cgroups again (the parent with its mode, 0777 here) before the process opens its files,
/// and the fd comes back on the new directory at the same path, its mode and owner as dumped.
/// Before: the restore failed, "the file is gone" (or, kept, "inode differs").
#[test]
fn a_cgroup_directory_held_open_comes_back_open_on_the_cgroup_made_again() {
    cryo_bin();
    let (_, parent) = pids_or_unified();
    let mut made = Made::new(&[parent.as_path()], "held");
    made.below("inner");
    let (outer, inner) = (made.0[0].clone(), made.0[1].clone());
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&outer, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let settings = [
        format!("cgroup={}", inner.display()),
        format!("opendir={}", outer.display()),
    ];
    let settings: Vec<&str> = settings.iter().map(String::as_str).collect();
    let mut w = Workload::spawn("attrs", &settings);
    let before = w.cmd("get fd61");
    assert_eq!(before, format!("{} 777 0 0", outer.display()));
    let img = w.path("img");
    w.dump_ok(&img);
    assert!(made.remove(), "the cgroups could not be removed");
    w.restore_background(&img);
    assert_eq!(w.cmd("get fd61"), before, "fd 61 on the cgroup made again");
    w.kill_restored();
}
