//! Cgroup membership: where a process is in each hierarchy, kept at dump relative to the
//! dumping cryo's own cgroup when below it (the restore puts it below the restoring cryo's,
//! as a container manager would) and from the hierarchy's root otherwise; the restored
//! process joins it, made again if gone (below cryo's with its dumped settings:
//! [`crate::task::cgroup_settings`]), before it forks its children. A cgroup namespace is
//! kept as its root cgroups: the topmost process in it joins them, unshares, then joins its
//! own.

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};

use cryo_proto::image::{CgroupMembership, CgroupNamespace, CgroupRoot, CgroupSettings, TaskCore};
use nix::unistd::Pid;
use tracing::warn;

use crate::proc;
use crate::task::cgroup_roots;
use crate::task::cgroup_settings::{self, SettingError};

/// Why the cgroups of a process cannot be read or joined again.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// A process sits in a frozen cgroup: its freeze by ptrace would wait until it is thawed.
    #[error(
        "pid {pid}: is in a frozen cgroup ({}): thaw it to dump (a temporary state, retry)",
        .dir.display()
    )]
    Frozen {
        /// The process.
        pid: Pid,
        /// The cgroup's directory.
        dir: PathBuf,
    },
    /// /proc/PID/cgroup (or cryo's own) could not be read.
    #[error("pid {pid} thread {tid}: read its cgroups: {errno}")]
    Read {
        /// The process (cryo's own pid for cryo's cgroups).
        pid: Pid,
        /// The thread.
        tid: Pid,
        /// The kernel's answer (in the message, so not chained as a source).
        errno: io::Error,
    },
    /// The hierarchy is mounted nowhere cryo can reach the cgroup.
    #[error(
        "pid {pid}: in cgroup {path} of hierarchy {hierarchy:?}, which no cgroup mount of \
         cryo's shows: it could not be joined again"
    )]
    Unreachable {
        /// The process.
        pid: Pid,
        /// The hierarchy's controllers ("" for v2).
        hierarchy: String,
        /// The cgroup.
        path: String,
    },
    /// The process is in a cgroup outside its cgroup namespace's root.
    #[error(
        "pid {pid}: in cgroup {path} of hierarchy {hierarchy:?}, outside the root of its cgroup \
         namespace (it reads {relative}): it could not be made again there"
    )]
    OutsideNamespace {
        /// The process.
        pid: Pid,
        /// The hierarchy's controllers ("" for v2).
        hierarchy: String,
        /// The cgroup, from the hierarchy's root.
        path: String,
        /// The cgroup as the namespace shows it.
        relative: String,
    },
    /// The settings of a cgroup below cryo's could not be read at dump, or written into the
    /// cgroup made again at restore.
    #[error("pid {pid}: {error}")]
    Settings {
        /// The process.
        pid: i32,
        /// What failed (in the message, so not chained as a source).
        error: SettingError,
    },
    /// `--manage-cgroups=strict`: a cgroup of the image exists already on this host.
    #[error(
        "pid {pid}: cgroup {} exists already: --manage-cgroups=strict makes every cgroup of the \
         image anew (soft or full use an existing one)",
        .dir.display()
    )]
    Exists {
        /// The process.
        pid: i32,
        /// The cgroup's directory.
        dir: PathBuf,
    },
    /// `--manage-cgroups=none`: a cgroup of the image is missing on this host.
    #[error(
        "pid {pid}: cgroup {} is missing: --manage-cgroups=none makes no cgroup (soft, full \
         or strict make it again)",
        .dir.display()
    )]
    Missing {
        /// The process.
        pid: i32,
        /// The cgroup's directory.
        dir: PathBuf,
    },
    /// A cgroup outside the root `--cgroup-root` gives its hierarchy: a dump given that root
    /// refuses it; a restore given a new root cannot say where below it the cgroup goes.
    #[error(
        "pid {pid}: in cgroup {path} of hierarchy {hierarchy:?}, which is not below the cgroup \
         root {root} (--cgroup-root)"
    )]
    OutsideRoot {
        /// The process.
        pid: i32,
        /// The hierarchy's controllers ("" for v2).
        hierarchy: String,
        /// The cgroup, from the hierarchy's root.
        path: String,
        /// The root.
        root: String,
    },
    /// A cgroup could not be made again or opened at restore.
    #[error("pid {pid}: cgroup {dir}: {errno}")]
    Make {
        /// The process.
        pid: i32,
        /// The cgroup's directory.
        dir: PathBuf,
        /// The kernel's answer.
        errno: io::Error,
    },
}

/// The cgroups of /proc/PID/cgroup (`text`): hierarchy (controllers, "" for v2) to path.
fn parse(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (_id, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            Some((controllers.to_owned(), path.to_owned()))
        })
        .collect()
}

/// The cgroups of thread `tid` of `pid` (`tid` = `pid`: the process's; pid 0: cryo's own).
fn read(pid: Pid, tid: Pid) -> Result<HashMap<String, String>, CgroupError> {
    let path = if pid.as_raw() == 0 {
        PathBuf::from("/proc/self/cgroup")
    } else {
        proc::dir(pid).join(format!("task/{tid}/cgroup"))
    };
    std::fs::read_to_string(path)
        .map(|text| parse(&text))
        .map_err(|errno| CgroupError::Read { pid, tid, errno })
}

/// `path` below `base` ("" for `base` itself), when it is there.
fn below<'a>(path: &'a str, base: &str) -> Option<&'a str> {
    let rest = path.strip_prefix(base.trim_end_matches('/'))?;
    match rest {
        "" => Some(""),
        _ => rest.strip_prefix('/'),
    }
}

/// The cgroups on the way down to `path` from the first one below `mine` (cryo's cgroup in
/// the hierarchy), or from the hierarchy's root when `path` is not below it (or `mine` is
/// None): each as (its path from the hierarchy's root, its key in the image: its path below
/// cryo's, or from the root with a leading '/').
fn steps_down(path: &str, mine: Option<&str>) -> Vec<(String, String)> {
    let (base, steps, lead) = match mine.and_then(|m| Some((m, below(path, m)?))) {
        Some((mine, relative)) => (mine.trim_end_matches('/'), relative, ""),
        None => ("", path, "/"),
    };
    let mut at = String::new();
    steps
        .split('/')
        .filter(|p| !p.is_empty())
        .map(|part| {
            at = if at.is_empty() {
                part.to_owned()
            } else {
                format!("{at}/{part}")
            };
            (format!("{base}/{at}"), format!("{lead}{at}"))
        })
        .collect()
}

/// The directory of cgroup `path` of `hierarchy` in cryo's mounts: a cgroup mount of it
/// whose root holds the cgroup (`mountinfo`: /proc/self/mountinfo's text).
fn directory(mountinfo: &str, hierarchy: &str, path: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let sep = fields.iter().position(|&f| f == "-")?;
        let (root, point) = (fields.get(3)?, fields.get(4)?);
        let (fstype, options) = (fields.get(sep + 1)?, fields.get(sep + 3)?);
        let fits = match hierarchy {
            "" => *fstype == "cgroup2",
            _ => {
                let options: Vec<&str> = options.split(',').collect();
                *fstype == "cgroup" && hierarchy.split(',').all(|c| options.contains(&c))
            }
        };
        let rest = below(path, root).filter(|_| fits)?;
        Some(Path::new(&unescape(point)).join(rest))
    })
}

/// A mountinfo field with its octal escapes (\040 for a space) decoded.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            let d = std::str::from_utf8(d).ok()?;
            u8::from_str_radix(d, 8).ok()
        });
        match (bytes[i], octal) {
            (b'\\', Some(b)) => {
                out.push(b);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroups of frozen process `pid`.
#[derive(Debug, Default)]
pub struct Memberships {
    /// The process's, where they are not cryo's.
    pub process: Vec<CgroupMembership>,
    /// Per thread other than the main one: its cgroups in the hierarchies where they are
    /// not its process's (none: not listed).
    pub threads: HashMap<Pid, Vec<CgroupMembership>>,
}

/// The cgroups of frozen `pid` (threads `tids`, the main one first) where they are not cryo's,
/// and of each other thread where they are not its process's; refuses a cgroup cryo could not
/// join again.
pub fn dump(pid: Pid, tids: &[Pid]) -> Result<Memberships, CgroupError> {
    let theirs = read(pid, pid)?;
    let (ours, mountinfo) = cryos_view()?;
    let mut threads = HashMap::new();
    for &tid in tids.iter().filter(|&&t| t != pid) {
        let mut own = read(pid, tid)?;
        own.retain(|hierarchy, path| theirs.get(hierarchy) != Some(path));
        let mut kept = own
            .into_iter()
            .map(|(hierarchy, path)| membership(pid, hierarchy, path, &ours, &mountinfo))
            .collect::<Result<Vec<_>, _>>()?;
        kept.sort_by(|a, b| a.controllers.cmp(&b.controllers));
        if !kept.is_empty() {
            threads.insert(tid, kept);
        }
    }
    let process = if theirs == ours {
        Vec::new()
    } else {
        memberships(pid, theirs, &ours, &mountinfo)?
    };
    Ok(Memberships { process, threads })
}

/// Refuses process `pid` (its core, cgroups collected) when its cgroups or a thread's lie
/// outside the root `roots` gives their hierarchy (`--cgroup-root` on dump).
pub fn check_roots(pid: Pid, core: &TaskCore, roots: &[CgroupRoot]) -> Result<(), CgroupError> {
    if roots.is_empty() {
        return Ok(());
    }
    let ours = read(Pid::from_raw(0), Pid::from_raw(0))?;
    for (hierarchy, mine) in &ours {
        let Some(root) = cgroup_roots::root_for(roots, hierarchy) else {
            continue;
        };
        let in_hierarchy = |m: &&CgroupMembership| &m.controllers == hierarchy;
        // A thread keeps only the cgroups it does not share with its process.
        let paths = std::iter::once(path_of(core.cgroups.iter().find(in_hierarchy), mine)).chain(
            core.threads
                .iter()
                .filter_map(|t| t.cgroups.iter().find(in_hierarchy))
                .map(|m| path_of(Some(m), mine)),
        );
        for path in paths {
            if !cgroup_roots::within(&path, root) {
                return Err(CgroupError::OutsideRoot {
                    pid: pid.as_raw(),
                    hierarchy: hierarchy.clone(),
                    path,
                    root: root.to_owned(),
                });
            }
        }
    }
    Ok(())
}

/// The path from the hierarchy's root of cgroup `kept` (None: cryo's, `mine`), where cryo is
/// in `mine`.
fn path_of(kept: Option<&CgroupMembership>, mine: &str) -> String {
    match kept {
        None => mine.to_owned(),
        Some(m) if m.below_cryo && m.path.is_empty() => mine.to_owned(),
        Some(m) if m.below_cryo => format!("{}/{}", mine.trim_end_matches('/'), m.path),
        Some(m) => m.path.clone(),
    }
}

/// The cgroup that holds process `pid` frozen, if one does: a v1 freezer cgroup whose
/// freezer.state is not THAWED (FROZEN, or FREEZING), or a v2 cgroup whose cgroup.events
/// says "frozen 1". A task frozen by a v1 freezer sleeps uninterruptibly (state D) until it
/// is thawed: its freeze by ptrace would wait as long. Read for processes in state D only.
pub(crate) fn frozen_cgroup(pid: Pid) -> Result<Option<PathBuf>, CgroupError> {
    let theirs = read(pid, pid)?;
    let mounts = cryos_mounts()?;
    for (hierarchy, path) in &theirs {
        let (file, frozen): (&str, fn(&str) -> bool) = if hierarchy.is_empty() {
            ("cgroup.events", |t| {
                t.lines().any(|l| l.trim() == "frozen 1")
            })
        } else if hierarchy.split(',').any(|c| c == "freezer") {
            ("freezer.state", |t| t.trim() != "THAWED")
        } else {
            continue;
        };
        let Some(dir) = directory(&mounts, hierarchy, path) else {
            continue;
        };
        if std::fs::read_to_string(dir.join(file)).is_ok_and(|t| frozen(&t)) {
            return Ok(Some(dir));
        }
    }
    Ok(None)
}

/// cryo's own cgroups (hierarchy to path) and its mount table, where cgroups are found.
fn cryos_view() -> Result<(HashMap<String, String>, String), CgroupError> {
    Ok((read(Pid::from_raw(0), Pid::from_raw(0))?, cryos_mounts()?))
}

/// cryo's mount table (/proc/self/mountinfo).
fn cryos_mounts() -> Result<String, CgroupError> {
    std::fs::read_to_string("/proc/self/mountinfo").map_err(|errno| CgroupError::Read {
        pid: Pid::from_raw(0),
        tid: Pid::from_raw(0),
        errno,
    })
}

/// The cgroups `theirs` of `pid` (hierarchy to path) that are not cryo's (`ours`), as the image
/// keeps them; refuses one no cgroup mount of cryo's shows.
fn memberships(
    pid: Pid,
    theirs: HashMap<String, String>,
    ours: &HashMap<String, String>,
    mountinfo: &str,
) -> Result<Vec<CgroupMembership>, CgroupError> {
    let mut out = theirs
        .into_iter()
        .filter(|(hierarchy, path)| ours.get(hierarchy) != Some(path))
        .map(|(hierarchy, path)| membership(pid, hierarchy, path, ours, mountinfo))
        .collect::<Result<Vec<_>, _>>()?;
    out.sort_by(|a, b| a.controllers.cmp(&b.controllers));
    Ok(out)
}

/// Cgroup `path` of `hierarchy` (of `pid`, or one of its threads) as the image keeps it:
/// below cryo's own (`ours`) when it is, with the settings of each cgroup on the way down;
/// refused when no cgroup mount of cryo's shows it.
fn membership(
    pid: Pid,
    hierarchy: String,
    path: String,
    ours: &HashMap<String, String>,
    mountinfo: &str,
) -> Result<CgroupMembership, CgroupError> {
    let mine = ours.get(&hierarchy).map(String::as_str);
    let Some(own_dir) = directory(mountinfo, &hierarchy, &path) else {
        return Err(CgroupError::Unreachable {
            pid,
            hierarchy,
            path,
        });
    };
    let relative = mine.and_then(|m| below(&path, m));
    // Each cgroup on the way down to this one: a restore may have to make any of them again.
    let mut settings = Vec::new();
    for (full, key) in steps_down(&path, mine) {
        let Some(dir) = directory(mountinfo, &hierarchy, &full) else {
            continue;
        };
        let read = cgroup_settings::read(&dir, &key).map_err(|error| CgroupError::Settings {
            pid: pid.as_raw(),
            error,
        })?;
        settings.push(read);
    }
    // The cgroups below it, empty ones too (only below cryo's: one elsewhere may hold a
    // host's whole subtree, which the restore does not own).
    let mut descendants = Vec::new();
    if let Some(relative) = relative {
        let mut below_it = Vec::new();
        subdirectories(&own_dir, "", &mut below_it);
        for sub in below_it {
            let key = match relative {
                "" => sub.clone(),
                _ => format!("{relative}/{sub}"),
            };
            let read = cgroup_settings::read(&own_dir.join(&sub), &key).map_err(|error| {
                CgroupError::Settings {
                    pid: pid.as_raw(),
                    error,
                }
            })?;
            settings.push(read);
            descendants.push(key);
        }
    }
    Ok(CgroupMembership {
        below_cryo: relative.is_some(),
        path: relative.map(str::to_owned).unwrap_or_else(|| path.clone()),
        controllers: hierarchy,
        settings,
        descendants,
    })
}

/// The cgroups below `dir` (`at`: the path of `dir` below the first one), parents first, as
/// paths below the first ("a", "a/b").
fn subdirectories(dir: &Path, at: &str, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in names {
        let path = match at {
            "" => name.clone(),
            _ => format!("{at}/{name}"),
        };
        out.push(path.clone());
        subdirectories(&dir.join(&name), &path, out);
    }
}

/// The cgroup namespace `inode` of frozen `pid`: its root in each hierarchy, found by reading
/// the process's cgroups from inside the namespace (paths shown from its root) and from cryo's.
pub fn namespace(pid: Pid, inode: u64) -> Result<CgroupNamespace, CgroupError> {
    let read_err = |errno| CgroupError::Read {
        pid,
        tid: pid,
        errno,
    };
    let ns = std::fs::File::open(proc::dir(pid).join("ns/cgroup")).map_err(read_err)?;
    let flag = nix::sched::CloneFlags::CLONE_NEWCGROUP;
    let inside = crate::sys::ns::run_in(&ns, flag, || {
        std::fs::read_to_string(proc::dir(pid).join("cgroup"))
    })
    .and_then(|read| read)
    .map_err(read_err)?;
    let inside = parse(&inside);
    let full = read(pid, pid)?;
    let mut roots = HashMap::new();
    for (hierarchy, path) in full {
        let relative = inside.get(&hierarchy).cloned().unwrap_or_default();
        let root = match relative.as_str() {
            "/" => Some(path.clone()),
            r if r.split('/').any(|part| part == "..") => None,
            r => path
                .strip_suffix(r)
                .map(|root| if root.is_empty() { "/" } else { root }.to_owned()),
        };
        let Some(root) = root else {
            return Err(CgroupError::OutsideNamespace {
                pid,
                hierarchy,
                path,
                relative,
            });
        };
        roots.insert(hierarchy, root);
    }
    let (ours, mountinfo) = cryos_view()?;
    Ok(CgroupNamespace {
        inode,
        roots: memberships(pid, roots, &ours, &mountinfo)?,
    })
}

/// Where a restored process goes before it forks its children: the cgroup.procs files it
/// writes itself into, in two steps around the making of its cgroup namespace.
#[derive(Debug, Default, Clone)]
pub struct Placement {
    /// Joined first: the roots of the cgroup namespace it makes, else its own cgroups.
    pub first: Vec<PathBuf>,
    /// Whether it makes a cgroup namespace (unshare) after `first`.
    pub unshare: bool,
    /// Joined last, inside the new namespace: its own cgroups where not the roots.
    pub then: Vec<PathBuf>,
    /// Its threads in other cgroups than its own: (image tid, the `tasks` or
    /// `cgroup.threads` files cryo writes the thread's tid into once it exists).
    pub threads: Vec<(i32, Vec<PathBuf>)>,
}

/// How a restore treats the cgroups of its processes (CRIU's `--manage-cgroups` modes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CgroupMode {
    /// Each process joins its cgroups; a missing one is made again with its dumped settings,
    /// an existing one is used as it is (its settings are the restoring host's; a warning
    /// names each that differs).
    #[default]
    Soft,
    /// As soft, and an existing cgroup gets the dumped settings written too.
    Full,
    /// As soft, but a cgroup of the image that exists already refuses the restore (before
    /// anything joins it).
    Strict,
    /// Each process joins its cgroups, which must all exist: none is made, no setting
    /// written.
    None,
    /// No cgroup is joined or made and no cgroup namespace made: the processes stay in
    /// `cryo restore`'s cgroups.
    Ignore,
}

/// Where each process (in `tasks` order: pid, parent pid, core) goes: into its cgroups where
/// they differ from the ones it is forked in (its parent's, cryo's for a root), through the
/// roots of its cgroup namespace when it makes one. Missing cgroups are made again here, with
/// their dumped settings (a warning when an existing one reads otherwise: it is the restoring
/// host's, kept); on failure the ones made are removed again.
pub fn plan(
    tasks: &[(i32, i32, &TaskCore)],
    mode: CgroupMode,
    roots: &Roots<'_>,
) -> Result<Vec<Placement>, CgroupError> {
    if mode == CgroupMode::Ignore {
        return Ok(vec![Placement::default(); tasks.len()]);
    }
    let (ours, mountinfo) = cryos_view()?;
    let moves = roots.moves(tasks, &ours, &mountinfo);
    let mut maker = Maker {
        mode,
        mountinfo: &mountinfo,
        ours: &ours,
        settings: HashMap::new(),
        made: Vec::new(),
        seen: HashSet::new(),
        moves: &moves,
    };
    for &(_, _, core) in tasks {
        let roots = core.cgroupns.iter().flat_map(|ns| &ns.roots);
        let threads = core.threads.iter().flat_map(|t| &t.cgroups);
        for m in core.cgroups.iter().chain(roots).chain(threads) {
            for set in &m.settings {
                maker
                    .settings
                    .insert((m.controllers.clone(), set.path.clone()), set);
            }
        }
    }
    let placed = places(tasks, &ours, &mut maker);
    if placed.is_err() {
        for dir in maker.made.iter().rev() {
            if let Err(e) = std::fs::remove_dir(dir) {
                warn!(dir = %dir.display(), "cgroup made for the restore not removed: {e}");
            }
        }
    }
    placed
}

/// [`plan`]'s work, the cgroups made through `maker`.
fn places(
    tasks: &[(i32, i32, &TaskCore)],
    ours: &HashMap<String, String>,
    maker: &mut Maker,
) -> Result<Vec<Placement>, CgroupError> {
    // The path of `kept` (None: cryo's) in the hierarchy where cryo is in `mine`, moved below
    // the new root `--cgroup-root` gives the hierarchy.
    let moves = maker.moves;
    let target = |kept: Option<&CgroupMembership>, hierarchy: &str, mine: &str, pid: i32| {
        moved_to_new_root(moves, hierarchy, path_of(kept, mine), pid)
    };
    let own = |core: &TaskCore, hierarchy: &str, mine: &str, pid: i32| {
        let kept = core.cgroups.iter().find(|m| m.controllers == hierarchy);
        target(kept, hierarchy, mine, pid)
    };
    let root = |ns: &CgroupNamespace, hierarchy: &str, mine: &str, pid: i32| {
        let kept = ns.roots.iter().find(|m| m.controllers == hierarchy);
        target(kept, hierarchy, mine, pid)
    };
    let mut hierarchies: Vec<(&String, &String)> = ours.iter().collect();
    hierarchies.sort();
    tasks
        .iter()
        .map(|&(pid, ppid, core)| {
            let parent = tasks.iter().find(|t| t.0 == ppid).map(|t| t.2);
            let parent_ns = parent.and_then(|p| p.cgroupns.as_ref()).map(|n| n.inode);
            let makes = core
                .cgroupns
                .as_ref()
                .filter(|ns| parent_ns != Some(ns.inode));
            let mut placement = Placement {
                unshare: makes.is_some(),
                ..Placement::default()
            };
            for &(hierarchy, mine) in &hierarchies {
                // A root is forked in cryo's cgroups, which stay where they are.
                let from = match parent {
                    Some(parent) => own(parent, hierarchy, mine, pid)?,
                    None => mine.to_owned(),
                };
                let to = own(core, hierarchy, mine, pid)?;
                let mut dir = |path: &str| maker.procs(hierarchy, path, pid);
                match makes {
                    Some(ns) => {
                        let at = root(ns, hierarchy, mine, pid)?;
                        if at != from {
                            placement.first.push(dir(&at)?);
                        }
                        if to != at {
                            placement.then.push(dir(&to)?);
                        }
                    }
                    None if to != from => placement.first.push(dir(&to)?),
                    None => {}
                }
                // The cgroups below its own, made again when gone (empty, with their
                // settings), after it.
                if let Some(kept) = core.cgroups.iter().find(|m| &m.controllers == hierarchy) {
                    for sub in &kept.descendants {
                        let below = CgroupMembership {
                            path: sub.clone(),
                            below_cryo: kept.below_cryo,
                            ..CgroupMembership::default()
                        };
                        let path = target(Some(&below), hierarchy, mine, pid)?;
                        maker.directory(hierarchy, &path, pid)?;
                    }
                }
            }
            // Its other threads, each moved alone where it is not in its process's cgroup.
            for thread in core.threads.iter().skip(1) {
                let mut files = Vec::new();
                for m in &thread.cgroups {
                    let mine = ours.get(&m.controllers).map_or("/", String::as_str);
                    let to = target(Some(m), &m.controllers, mine, pid)?;
                    let dir = maker.directory(&m.controllers, &to, pid)?;
                    // v1 moves a thread through `tasks`, v2 through `cgroup.threads`.
                    files.push(dir.join(match m.controllers.as_str() {
                        "" => "cgroup.threads",
                        _ => "tasks",
                    }));
                }
                if !files.is_empty() {
                    placement.threads.push((thread.tid, files));
                }
            }
            Ok(placement)
        })
        .collect()
}

/// The cgroup roots of a restore: the new ones it was given and the ones its dump was (CRIU's
/// `--cgroup-root` on each, [`cgroup_roots`]).
#[derive(Debug, Default, Clone, Copy)]
pub struct Roots<'a> {
    /// The restore's.
    pub new: &'a [CgroupRoot],
    /// The dump's (the inventory's).
    pub dumped: &'a [CgroupRoot],
}

/// A hierarchy whose cgroups move: (its controllers, the old root, the new root).
type Move = (String, String, String);

impl Roots<'_> {
    /// Each hierarchy of cryo's (`ours`) a new root names, with where its cgroups were rooted
    /// (the dump's root, else the cgroup of the first process of `tasks` whose parent is
    /// not one of them). A hierarchy no mount of cryo's (`mountinfo`) shows the new root of
    /// is left out: cryo manages no cgroup there (a process of the image in one of its
    /// cgroups is refused by the dump).
    fn moves(
        &self,
        tasks: &[(i32, i32, &TaskCore)],
        ours: &HashMap<String, String>,
        mountinfo: &str,
    ) -> Vec<Move> {
        if self.new.is_empty() {
            return Vec::new();
        }
        let first_root = tasks.iter().find(|t| !tasks.iter().any(|p| p.0 == t.1));
        let mut moves = Vec::new();
        for (hierarchy, mine) in ours {
            let Some(new) = cgroup_roots::root_for(self.new, hierarchy)
                .filter(|new| directory(mountinfo, hierarchy, new).is_some())
            else {
                continue;
            };
            let old = match cgroup_roots::root_for(self.dumped, hierarchy) {
                Some(old) => old.to_owned(),
                None => path_of(
                    first_root
                        .and_then(|t| t.2.cgroups.iter().find(|m| &m.controllers == hierarchy)),
                    mine,
                ),
            };
            moves.push((hierarchy.clone(), old, new.to_owned()));
        }
        moves
    }
}

/// Cgroup `path` of `hierarchy` (of process `pid`) where `moves` put it.
fn moved_to_new_root(
    moves: &[Move],
    hierarchy: &str,
    path: String,
    pid: i32,
) -> Result<String, CgroupError> {
    let Some((_, old, new)) = moves.iter().find(|m| m.0 == hierarchy) else {
        return Ok(path);
    };
    cgroup_roots::moved(&path, old, new).ok_or_else(|| CgroupError::OutsideRoot {
        pid,
        hierarchy: hierarchy.to_owned(),
        path,
        root: old.clone(),
    })
}

/// Finds and makes the cgroups of a restore.
struct Maker<'a> {
    /// What to make and write.
    mode: CgroupMode,
    /// cryo's mount table.
    mountinfo: &'a str,
    /// cryo's cgroups (hierarchy to path).
    ours: &'a HashMap<String, String>,
    /// The dumped settings by hierarchy and path (below cryo's, or from the root with a '/').
    settings: HashMap<(String, String), &'a CgroupSettings>,
    /// The cgroups made, parents first.
    made: Vec<PathBuf>,
    /// The cgroups found or made already.
    seen: HashSet<PathBuf>,
    /// The hierarchies whose cgroups move to a new root: a cgroup made below it gets the
    /// settings of the one it replaces.
    moves: &'a [Move],
}

impl Maker<'_> {
    /// The cgroup.procs file of cgroup `path` of `hierarchy` among cryo's mounts, the cgroup
    /// made again when gone (for process `pid`): each missing one from cryo's (or the
    /// hierarchy's root) down is made and given its dumped settings before anything joins it.
    fn procs(&mut self, hierarchy: &str, path: &str, pid: i32) -> Result<PathBuf, CgroupError> {
        Ok(self.directory(hierarchy, path, pid)?.join("cgroup.procs"))
    }

    /// The directory of cgroup `path` of `hierarchy`, made again as [`Maker::procs`] says.
    fn directory(&mut self, hierarchy: &str, path: &str, pid: i32) -> Result<PathBuf, CgroupError> {
        let make_err = |dir: PathBuf| move |errno| CgroupError::Make { pid, dir, errno };
        let Some(dir) = directory(self.mountinfo, hierarchy, path) else {
            return Err(make_err(PathBuf::from(path))(io::Error::from_raw_os_error(
                libc::ENOENT,
            )));
        };
        let mine = self.ours.get(hierarchy).map(String::as_str).unwrap_or("/");
        for (full, key) in steps_down(path, Some(mine)) {
            let Some(step) = directory(self.mountinfo, hierarchy, &full) else {
                continue;
            };
            if !self.seen.insert(step.clone()) {
                continue;
            }
            // Below a new root, the settings of the cgroup it stands for.
            let key = match self.moves.iter().find(|m| m.0 == hierarchy) {
                Some((_, old, new)) => cgroup_roots::moved(&full, new, old)
                    .and_then(|was| steps_down(&was, Some(mine)).pop())
                    .map(|(_, key)| key),
                None => Some(key),
            };
            let settings = key
                .and_then(|key| self.settings.get(&(hierarchy.to_owned(), key)))
                .copied();
            if step.is_dir() {
                match (self.mode, settings) {
                    (CgroupMode::Strict, _) => return Err(CgroupError::Exists { pid, dir: step }),
                    (CgroupMode::Full, Some(settings)) => {
                        cgroup_settings::write(&step, settings)
                            .map_err(|error| CgroupError::Settings { pid, error })?;
                    }
                    // Kept as it is: the restoring host (or its container manager) owns it.
                    (_, settings) => {
                        for (file, dumped, now) in settings
                            .map(|s| cgroup_settings::differences(&step, s))
                            .unwrap_or_default()
                        {
                            warn!(pid, dir = %step.display(), file, dumped, now,
                                "existing cgroup kept with a setting other than the dumped one");
                        }
                    }
                }
                continue;
            }
            if self.mode == CgroupMode::None {
                return Err(CgroupError::Missing { pid, dir: step });
            }
            std::fs::create_dir(&step).map_err(make_err(step.clone()))?;
            self.made.push(step.clone());
            match settings {
                Some(settings) => cgroup_settings::write(&step, settings)
                    .map_err(|error| CgroupError::Settings { pid, error })?,
                None => {
                    warn!(pid, dir = %step.display(),
                        "cgroup gone: made again, with default limits (no settings in the image)");
                    // A v1 cpuset starts without CPUs or memory nodes, which nothing can join:
                    // its parent's, as cgroup.clone_children would give it.
                    if hierarchy.split(',').any(|c| c == "cpuset") {
                        inherit_cpuset(&step).map_err(make_err(step.clone()))?;
                    }
                }
            }
        }
        Ok(dir)
    }
}

/// Gives v1 cpuset `dir`, just made, its parent's CPUs and memory nodes.
fn inherit_cpuset(dir: &Path) -> io::Result<()> {
    let parent = dir.parent().unwrap_or(dir);
    for file in ["cpuset.cpus", "cpuset.mems"] {
        std::fs::write(dir.join(file), std::fs::read(parent.join(file))?)?;
    }
    Ok(())
}

/// Moves thread `tid` (as cryo sees it), just made, into `files` (its `tasks` or
/// `cgroup.threads`): the cgroups it was in apart from its process.
pub fn move_thread(tid: Pid, files: &[PathBuf]) -> Result<(), (PathBuf, io::Error)> {
    files
        .iter()
        .try_for_each(|file| std::fs::write(file, tid.to_string()).map_err(|e| (file.clone(), e)))
}

/// In a forked process of the restore, before its children: goes where [`plan`] chose.
pub fn enter(placement: &Placement) -> Result<(), (PathBuf, io::Error)> {
    // "0": the writer itself (v1 and v2 alike).
    let join = |file: &PathBuf| std::fs::write(file, b"0").map_err(|e| (file.clone(), e));
    placement.first.iter().try_for_each(join)?;
    if placement.unshare {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWCGROUP)
            .map_err(|e| (PathBuf::from("/proc/self/ns/cgroup"), e.into()))?;
    }
    placement.then.iter().try_for_each(join)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_steps_down_to_a_cgroup_are_keyed_below_cryos_or_from_the_root() {
        let own = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        assert_eq!(
            steps_down("/a/b/c", Some("/a")),
            own(&[("/a/b", "b"), ("/a/b/c", "b/c")])
        );
        assert_eq!(
            steps_down("/x/y", Some("/a")),
            own(&[("/x", "/x"), ("/x/y", "/x/y")])
        );
        assert_eq!(steps_down("/a", Some("/a")), own(&[]));
        assert_eq!(steps_down("/x", None), own(&[("/x", "/x")]));
        assert_eq!(
            steps_down("/a/b", Some("/")),
            own(&[("/a", "a"), ("/a/b", "a/b")])
        );
    }

    const MOUNTINFO: &str = "\
30 25 0:26 / /sys/fs/cgroup/cpu rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct\n\
31 25 0:27 / /sys/fs/cgroup/memory rw,relatime shared:10 - cgroup cgroup rw,memory\n\
32 25 0:28 /sub /sys/fs/cgroup/my\\040unified rw - cgroup2 cgroup2 rw\n";

    #[test]
    fn a_cgroup_is_found_in_the_mount_of_its_hierarchy() {
        assert_eq!(
            directory(MOUNTINFO, "cpu,cpuacct", "/a/b"),
            Some(PathBuf::from("/sys/fs/cgroup/cpu/a/b"))
        );
        assert_eq!(directory(MOUNTINFO, "pids", "/a"), None);
        assert_eq!(
            directory(MOUNTINFO, "", "/sub/x"),
            Some(PathBuf::from("/sys/fs/cgroup/my unified/x"))
        );
        assert_eq!(
            directory(MOUNTINFO, "", "/other"),
            None,
            "not below the root"
        );
        assert_eq!(directory(MOUNTINFO, "", "/subway"), None);
    }

    #[test]
    fn paths_below_a_base() {
        assert_eq!(below("/a/b", "/a"), Some("b"));
        assert_eq!(below("/a", "/a"), Some(""));
        assert_eq!(below("/ab", "/a"), None);
        assert_eq!(below("/a/b", "/"), Some("a/b"));
        let lines = parse("4:memory:/x/y\n0::/\n1:name=systemd:/\n");
        assert_eq!(lines["memory"], "/x/y");
        assert_eq!(lines[""], "/");
        assert_eq!(lines["name=systemd"], "/");
    }
}
