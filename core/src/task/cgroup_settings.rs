//! The settings of a cgroup below cryo's (limits, weights, cpusets, enabled controllers): read
//! at dump for every cgroup a restore may have to make again, written into the cgroup the
//! restore makes, before any process joins it.
//!
//! [`TABLE`] lists the interface files kept, in the order they are written: a cgroup's type
//! and enabled controllers first (its children's files exist only then; parents are made and
//! set before their children), a cpuset's cpus and mems before its partition, a v1 memory
//! limit before the memory+swap one (which may not be below it), a CFS period before its
//! quota. At restore only the files whose value differs from the fresh cgroup's are written,
//! each read back: the defaults are the restoring kernel's, and a value it stores otherwise
//! fails the restore as a refused write would.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use cryo_proto::image::{CgroupFile, CgroupFileOwner, CgroupSettings};

/// How a file is read and written.
#[derive(Clone, Copy, Debug, PartialEq)]
enum How {
    /// Its whole value, written as read.
    Whole,
    /// One entry a line (a device, an interface): each line written alone.
    Lines,
    /// v2 cgroup.subtree_control: "cpu memory" read, "+cpu +memory" written.
    Controllers,
    /// v2 cgroup.type: only "threaded" is written ("domain threaded" and "domain invalid"
    /// follow from the children's types).
    Type,
    /// v1 memory.oom_control: its "oom_kill_disable N" line, N written.
    OomKillDisable,
    /// v1 devices.list: written as "a" into devices.deny, then each line into devices.allow.
    Devices,
    /// v2 cgroup.freeze, v1 freezer.state: a frozen cgroup is refused at dump (its process
    /// could not run again in it), never written.
    Frozen,
}

/// One interface file: its name ('*' matches any part of a name, for hugetlb's page sizes),
/// how it is kept, and what it means.
struct Setting {
    name: &'static str,
    how: How,
    #[allow(dead_code)]
    meaning: &'static str,
}

const fn s(name: &'static str, how: How, meaning: &'static str) -> Setting {
    Setting { name, how, meaning }
}

/// Every interface file kept, v2 and v1, in writing order (a file a cgroup lacks is skipped:
/// its controller is not enabled there or not built into the kernel).
const TABLE: &[Setting] = &[
    // cgroup v2 core
    s("cgroup.type", How::Type, "domain or threaded"),
    s("cgroup.freeze", How::Frozen, "1: the cgroup is frozen"),
    s(
        "cgroup.subtree_control",
        How::Controllers,
        "controllers enabled for the children",
    ),
    s("cgroup.max.depth", How::Whole, "deepest descendant allowed"),
    s(
        "cgroup.max.descendants",
        How::Whole,
        "number of descendants allowed",
    ),
    // cpuset (v2 and v1): cpus and mems before a partition or exclusivity
    s("cpuset.cpus", How::Whole, "CPUs the tasks may run on"),
    s("cpuset.mems", How::Whole, "memory nodes the tasks may use"),
    s(
        "cpuset.cpus.exclusive",
        How::Whole,
        "v2: CPUs for an exclusive partition",
    ),
    s(
        "cpuset.cpus.partition",
        How::Whole,
        "v2: member, root or isolated",
    ),
    s(
        "cpuset.cpu_exclusive",
        How::Whole,
        "v1: CPUs not shared with siblings",
    ),
    s(
        "cpuset.mem_exclusive",
        How::Whole,
        "v1: nodes not shared with siblings",
    ),
    s(
        "cpuset.mem_hardwall",
        How::Whole,
        "v1: kernel allocations kept to the nodes",
    ),
    s(
        "cpuset.memory_migrate",
        How::Whole,
        "v1: pages follow a change of mems",
    ),
    s(
        "cpuset.memory_spread_page",
        How::Whole,
        "v1: page cache spread over the nodes",
    ),
    s(
        "cpuset.memory_spread_slab",
        How::Whole,
        "v1: slab caches spread over the nodes",
    ),
    s(
        "cpuset.sched_load_balance",
        How::Whole,
        "v1: load balancing within the CPUs",
    ),
    s(
        "cpuset.sched_relax_domain_level",
        How::Whole,
        "v1: search range when balancing",
    ),
    // cpu v2
    s(
        "cpu.weight",
        How::Whole,
        "v2: CPU share (cpu.weight.nice follows from it)",
    ),
    s("cpu.max", How::Whole, "v2: CFS quota and period"),
    s("cpu.max.burst", How::Whole, "v2: CFS burst"),
    s(
        "cpu.idle",
        How::Whole,
        "SCHED_IDLE for the group (v2 and v1)",
    ),
    s(
        "cpu.uclamp.min",
        How::Whole,
        "utilization clamp, low (v2 and v1)",
    ),
    s(
        "cpu.uclamp.max",
        How::Whole,
        "utilization clamp, high (v2 and v1)",
    ),
    // cpu v1: periods before quotas and runtimes
    s("cpu.shares", How::Whole, "v1: CPU share"),
    s("cpu.cfs_period_us", How::Whole, "v1: CFS period"),
    s("cpu.cfs_quota_us", How::Whole, "v1: CFS quota"),
    s("cpu.cfs_burst_us", How::Whole, "v1: CFS burst"),
    s("cpu.rt_period_us", How::Whole, "v1: real-time period"),
    s("cpu.rt_runtime_us", How::Whole, "v1: real-time budget"),
    // memory v2: protections below limits
    s("memory.min", How::Whole, "v2: hard protection"),
    s("memory.low", How::Whole, "v2: best-effort protection"),
    s("memory.high", How::Whole, "v2: throttling limit"),
    s("memory.max", How::Whole, "v2: hard limit (OOM beyond)"),
    s("memory.swap.high", How::Whole, "v2: swap throttling limit"),
    s("memory.swap.max", How::Whole, "v2: swap limit"),
    s("memory.zswap.max", How::Whole, "v2: zswap limit"),
    s(
        "memory.zswap.writeback",
        How::Whole,
        "v2: zswap writeback allowed",
    ),
    s(
        "memory.oom.group",
        How::Whole,
        "v2: OOM kills the whole group",
    ),
    // memory v1: the limit before memory+swap
    s("memory.limit_in_bytes", How::Whole, "v1: hard limit"),
    s(
        "memory.memsw.limit_in_bytes",
        How::Whole,
        "v1: memory+swap limit",
    ),
    s("memory.soft_limit_in_bytes", How::Whole, "v1: soft limit"),
    s("memory.swappiness", How::Whole, "v1: swappiness"),
    s(
        "memory.oom_control",
        How::OomKillDisable,
        "v1: OOM killer disabled",
    ),
    s(
        "memory.move_charge_at_immigrate",
        How::Whole,
        "v1: charges move with a task",
    ),
    // pids (v2 and v1)
    s("pids.max", How::Whole, "number of tasks allowed"),
    // io v2: one device a line
    s(
        "io.weight",
        How::Lines,
        "v2: default and per-device weights",
    ),
    s(
        "io.bfq.weight",
        How::Lines,
        "v2: BFQ default and per-device weights",
    ),
    s(
        "io.max",
        How::Lines,
        "v2: per-device bandwidth and IOPS limits",
    ),
    s("io.latency", How::Lines, "v2: per-device latency targets"),
    s("io.prio.class", How::Whole, "v2: I/O priority class policy"),
    // blkio v1
    s("blkio.weight", How::Whole, "v1: weight"),
    s("blkio.weight_device", How::Lines, "v1: per-device weights"),
    s("blkio.bfq.weight", How::Whole, "v1: BFQ weight"),
    s(
        "blkio.throttle.read_bps_device",
        How::Lines,
        "v1: read bandwidth limits",
    ),
    s(
        "blkio.throttle.write_bps_device",
        How::Lines,
        "v1: write bandwidth limits",
    ),
    s(
        "blkio.throttle.read_iops_device",
        How::Lines,
        "v1: read IOPS limits",
    ),
    s(
        "blkio.throttle.write_iops_device",
        How::Lines,
        "v1: write IOPS limits",
    ),
    // hugetlb (v2 .max, v1 .limit_in_bytes), per page size
    s("hugetlb.*.max", How::Whole, "v2: huge page limit"),
    s(
        "hugetlb.*.rsvd.max",
        How::Whole,
        "v2: huge page reservation limit",
    ),
    s(
        "hugetlb.*.limit_in_bytes",
        How::Whole,
        "v1: huge page limit",
    ),
    s(
        "hugetlb.*.rsvd.limit_in_bytes",
        How::Whole,
        "v1: huge page reservation limit",
    ),
    // others
    s(
        "rdma.max",
        How::Lines,
        "per-device RDMA handle and object limits",
    ),
    s("misc.max", How::Lines, "per-resource limits (sev, tdx...)"),
    s(
        "net_cls.classid",
        How::Whole,
        "v1: traffic class id of the sockets",
    ),
    s(
        "net_prio.ifpriomap",
        How::Lines,
        "v1: per-interface priority",
    ),
    s(
        "devices.list",
        How::Devices,
        "v1: devices the tasks may use",
    ),
    s(
        "freezer.state",
        How::Frozen,
        "v1: FROZEN: the cgroup is frozen",
    ),
];

/// Why a cgroup's settings could not be read or written again.
#[derive(Debug, thiserror::Error)]
pub enum SettingError {
    /// An interface file could not be read.
    #[error("cgroup {dir}: read {file}: {errno}")]
    Read {
        /// The cgroup's directory.
        dir: String,
        /// The file.
        file: String,
        /// The kernel's answer.
        errno: io::Error,
    },
    /// The cgroup is frozen.
    #[error(
        "cgroup {dir} is frozen ({file} reads {value:?}): its processes could not run again \
         in it"
    )]
    Frozen {
        /// The cgroup's directory.
        dir: String,
        /// cgroup.freeze or freezer.state.
        file: String,
        /// What it reads.
        value: String,
    },
    /// A value was refused by the kernel at restore.
    #[error("cgroup {dir} (made again): write {value:?} into {file}: {errno}")]
    Write {
        /// The cgroup's directory.
        dir: String,
        /// The file.
        file: String,
        /// The value written.
        value: String,
        /// The kernel's answer.
        errno: io::Error,
    },
    /// A value was taken but reads back otherwise.
    #[error("cgroup {dir} (made again): {file} reads {reads:?} after {value:?} was written")]
    Differs {
        /// The cgroup's directory.
        dir: String,
        /// The file.
        file: String,
        /// The dumped value.
        value: String,
        /// What it reads now.
        reads: String,
    },
}

/// The names in the cgroup directory `dir` that the table's `pattern` names, sorted.
fn names(dir: &Path, pattern: &str) -> Vec<String> {
    match pattern.split_once('*') {
        None => vec![pattern.to_owned()]
            .into_iter()
            .filter(|n| dir.join(n).exists())
            .collect(),
        Some((head, tail)) => {
            let mut found: Vec<String> = std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| {
                    n.len() > head.len() + tail.len()
                        && n.starts_with(head)
                        && n.ends_with(tail)
                        && !n[head.len()..n.len() - tail.len()].contains('.')
                })
                .collect();
            found.sort();
            found
        }
    }
}

/// What `file` of `dir` reads, as kept: trailing newline dropped, the "oom_kill_disable" line
/// of memory.oom_control.
fn value(dir: &Path, file: &str, how: How) -> Result<String, SettingError> {
    let text = std::fs::read_to_string(dir.join(file)).map_err(|errno| SettingError::Read {
        dir: dir.display().to_string(),
        file: file.to_owned(),
        errno,
    })?;
    let text = text.trim_end_matches('\n');
    Ok(match how {
        How::OomKillDisable => text
            .lines()
            .find_map(|l| l.strip_prefix("oom_kill_disable "))
            .unwrap_or("")
            .to_owned(),
        _ => text.to_owned(),
    })
}

/// The settings of the cgroup at `dir` (`path` below cryo's): every file of the table it has;
/// refuses a frozen one.
pub fn read(dir: &Path, path: &str) -> Result<CgroupSettings, SettingError> {
    let mut files = Vec::new();
    for setting in TABLE {
        for name in names(dir, setting.name) {
            let value = value(dir, &name, setting.how)?;
            let frozen = matches!(value.as_str(), "1" | "FROZEN" | "FREEZING");
            if setting.how == How::Frozen && frozen {
                return Err(SettingError::Frozen {
                    dir: dir.display().to_string(),
                    file: name,
                    value,
                });
            }
            files.push(CgroupFile { name, value });
        }
    }
    let stat = |p: &Path| {
        std::fs::metadata(p).map_err(|errno| SettingError::Read {
            dir: dir.display().to_string(),
            file: p
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
            errno,
        })
    };
    let own = stat(dir)?;
    let mut owners = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|errno| SettingError::Read {
        dir: dir.display().to_string(),
        file: String::new(),
        errno,
    })? {
        let Ok(entry) = entry else { continue };
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_file() {
            owners.push(CgroupFileOwner {
                name: entry.file_name().to_string_lossy().into_owned(),
                mode: meta.mode(),
                uid: meta.uid(),
                gid: meta.gid(),
            });
        }
    }
    owners.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(CgroupSettings {
        path: path.to_owned(),
        files,
        mode: own.mode(),
        uid: own.uid(),
        gid: own.gid(),
        owners,
    })
}

/// Gives the cgroup at `dir`, just made (or written in full), the mode and owner its
/// directory and each interface file had (kept since 2026-12-05: none in older images).
fn set_owners(dir: &Path, settings: &CgroupSettings) -> Result<(), SettingError> {
    use std::os::unix::fs::PermissionsExt;
    if settings.mode == 0 {
        return Ok(());
    }
    let own = std::iter::once((dir.to_path_buf(), settings.mode, settings.uid, settings.gid));
    let files = settings
        .owners
        .iter()
        .map(|f| (dir.join(&f.name), f.mode, f.uid, f.gid));
    for (path, mode, uid, gid) in own.chain(files) {
        let err = |errno| SettingError::Write {
            dir: dir.display().to_string(),
            file: path
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
            value: format!("mode {:o} owner {uid}:{gid}", mode & 0o7777),
            errno,
        };
        // A file this host's cgroup lacks (another kernel, a controller off): its value
        // was refused above if it mattered.
        let Ok(now) = std::fs::metadata(&path) else {
            continue;
        };
        if (now.uid(), now.gid()) != (uid, gid) {
            std::os::unix::fs::chown(&path, Some(uid), Some(gid)).map_err(err)?;
        }
        if now.mode() & 0o7777 != mode & 0o7777 {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode & 0o7777))
                .map_err(err)?;
        }
    }
    Ok(())
}

/// The kept setting of the table that names `file`.
fn how_of(file: &str) -> Option<How> {
    TABLE
        .iter()
        .find(|s| match s.name.split_once('*') {
            None => s.name == file,
            Some((head, tail)) => file.starts_with(head) && file.ends_with(tail),
        })
        .map(|s| s.how)
}

/// Writes `settings` into the cgroup at `dir`, just made: each file whose value differs from
/// the fresh cgroup's, in the order of the table, read back.
pub fn write(dir: &Path, settings: &CgroupSettings) -> Result<(), SettingError> {
    for file in &settings.files {
        let Some(how) = how_of(&file.name) else {
            continue;
        };
        let err = |value: &str, errno| SettingError::Write {
            dir: dir.display().to_string(),
            file: file.name.clone(),
            value: value.to_owned(),
            errno,
        };
        let put = |name: &str, value: &str| {
            std::fs::write(dir.join(name), value).map_err(|errno| err(value, errno))
        };
        // A file the fresh cgroup lacks: its controller is not enabled here.
        let fresh = match value(dir, &file.name, how) {
            Ok(v) => v,
            Err(SettingError::Read { errno, .. }) => return Err(err(&file.value, errno)),
            Err(e) => return Err(e),
        };
        if fresh == file.value {
            continue;
        }
        match how {
            How::Whole | How::OomKillDisable => put(&file.name, &file.value)?,
            How::Lines => {
                let fresh: Vec<&str> = fresh.lines().collect();
                for line in file.value.lines().filter(|l| !fresh.contains(l)) {
                    put(&file.name, line)?;
                }
            }
            How::Controllers => {
                let on: Vec<&str> = file.value.split_whitespace().collect();
                let mut change: Vec<String> = fresh
                    .split_whitespace()
                    .filter(|c| !on.contains(c))
                    .map(|c| format!("-{c}"))
                    .collect();
                change.extend(on.iter().map(|c| format!("+{c}")));
                put(&file.name, &change.join(" "))?;
            }
            How::Type if file.value == "threaded" => put(&file.name, "threaded")?,
            // Follows from the children; checked once they are made.
            How::Type => continue,
            How::Devices => {
                put("devices.deny", "a")?;
                for line in file.value.lines() {
                    put("devices.allow", line)?;
                }
            }
            How::Frozen => continue,
        }
        let reads = value(dir, &file.name, how)?;
        if reads != file.value {
            return Err(SettingError::Differs {
                dir: dir.display().to_string(),
                file: file.name.clone(),
                value: file.value.clone(),
                reads,
            });
        }
    }
    set_owners(dir, settings)
}

/// The files of `settings` the existing cgroup at `dir` reads otherwise: (file, dumped, now).
pub fn differences(dir: &Path, settings: &CgroupSettings) -> Vec<(String, String, String)> {
    settings
        .files
        .iter()
        .filter_map(|f| {
            let how = how_of(&f.name)?;
            let now = value(dir, &f.name, how).unwrap_or_else(|e| e.to_string());
            (now != f.value).then(|| (f.name.clone(), f.value.clone(), now))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pattern_finds_its_own_setting() {
        for s in TABLE {
            let name = s.name.replace('*', "2MB");
            assert_eq!(how_of(&name), Some(s.how), "{name}");
        }
        assert_eq!(how_of("memory.stat"), None);
    }
}
