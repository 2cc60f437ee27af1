//! The restore side of the pre-migration checks: judges this host against a check image
//! without creating anything. Each finding is temporary (a retry later, or elsewhere on this
//! host, may pass: a pid or port taken, memory short now) or permanent (this host cannot
//! restore the image: a CPU or kernel feature missing, a file missing or different, a user
//! or group missing).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

use cryo_proto::image::{CheckedId, CheckedPort, Inventory, MigrationCheck, TaskCore};
use cryo_proto::ImageKind;
use serde::Serialize;

use super::cpu;
use crate::error::{Error, Result};
use crate::image::{names, ImageDir};

/// Whether a finding may pass later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// A retry may pass: the condition is of the moment (a pid or port taken, memory).
    Temporary,
    /// This host cannot restore the image as it is.
    Permanent,
}

/// One reason this host cannot restore the image now, or at all.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// Temporary or permanent.
    pub kind: FindingKind,
    /// What was judged: `pid`, `port`, `memory`, `huge pages`, `cpu`, `kernel`, `file`,
    /// `user`, `group`.
    pub what: &'static str,
    /// The object: the pid, `tcp 0.0.0.0:8080`, the path, the flag, the probe...
    pub subject: String,
    /// Why it fails here.
    pub reason: String,
    /// What to do about it.
    pub action: String,
}

/// Every finding of a check; none means the image can be restored here.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Verdict {
    /// The checkpoint judged.
    pub checkpoint_id: String,
    /// What stands in the way, temporary first.
    pub findings: Vec<Finding>,
}

impl Verdict {
    /// 0: nothing found; 2: temporary findings only; 3: a permanent finding.
    pub fn exit_code(&self) -> i32 {
        if self
            .findings
            .iter()
            .any(|f| f.kind == FindingKind::Permanent)
        {
            3
        } else if self.findings.is_empty() {
            0
        } else {
            2
        }
    }

    fn push(
        &mut self,
        kind: FindingKind,
        what: &'static str,
        subject: impl Into<String>,
        reason: impl Into<String>,
        action: impl Into<String>,
    ) {
        self.findings.push(Finding {
            kind,
            what,
            subject: subject.into(),
            reason: reason.into(),
            action: action.into(),
        });
    }
}

use FindingKind::{Permanent, Temporary};

/// How the restore would run, which makes some findings moot.
#[derive(Debug, Clone, Default)]
pub struct CheckOptions {
    /// `--pidns`: the processes get a PID namespace of their own, so no pid can be taken.
    pub pidns: bool,
    /// `--netns`: a network namespace of their own, so no port can be busy.
    pub netns: bool,
    /// `--accept-changed-files`: a file that differs is used anyway (a missing one is not).
    pub accept_changed_files: bool,
    /// `--detach`: cryo ends once the processes run, so a root's parent is gone at once.
    pub detach: bool,
    /// `--inherit-fd`: what the fds of cryo's caller stand for; a file an fd had open that
    /// one of them stands for is the caller's, not judged here.
    pub inherit_fds: Vec<crate::files::InheritFd>,
}

/// `cryo restore --check-only -D DIR`: judges this host against the check image in `dir`.
pub fn check_only(dir: &Path, opts: CheckOptions) -> Result<Verdict> {
    let images = ImageDir::open(dir)?;
    let inventory: Inventory = images.read_single(names::INVENTORY, ImageKind::Inventory)?;
    if !images.file(names::CHECK).exists() {
        return Err(Error::ImageDir {
            path: dir.to_path_buf(),
            detail: format!(
                "no {} (not a check image: make one with `cryo dump --check-only`)",
                names::CHECK
            ),
        });
    }
    let check: MigrationCheck = images.read_single(names::CHECK, ImageKind::MigrationCheck)?;
    let mut v = Verdict {
        checkpoint_id: inventory.checkpoint_id.clone(),
        ..Verdict::default()
    };
    // A tree in a PID namespace of its own gets a new one: no pid of it can be taken here.
    if !opts.pidns && inventory.pid_ns == 0 {
        pids(&check, &mut v);
    }
    for port in check.ports.iter().filter(|_| !opts.netns) {
        port_free(port, &mut v);
    }
    memory(&check, &mut v);
    huge_pages(&check, &mut v);
    cpu_features(&check, &mut v);
    kernel(&check, &inventory, &mut v);
    let given: Vec<&str> = opts
        .inherit_fds
        .iter()
        .filter_map(|i| match &i.resource {
            crate::files::InheritedResource::Path(path) => Some(path.as_str()),
            crate::files::InheritedResource::Pipe(_) => None,
        })
        .collect();
    files(&check, opts.accept_changed_files, &given, &mut v);
    ids(&check.uids, "user", &mut v);
    ids(&check.gids, "group", &mut v);
    aio_rings(&check, &mut v);
    let roots = root_cores(&images, &inventory.root_pids)?;
    session_keyrings(&roots, &mut v)?;
    let cores = live_cores(&images)?;
    mount_namespaces(&cores, &mut v);
    host_links(&cores, &mut v)?;
    namespace_names(&cores, &mut v);
    if opts.detach && !opts.pidns && !opts.netns {
        death_signals(&roots, &mut v);
    }
    if !opts.netns {
        abstract_names(&images, &mut v)?;
    }
    v.findings.sort_by_key(|f| f.kind == Permanent);
    Ok(v)
}

/// Whether every abstract name the image's unix sockets bind is free here (the restore
/// refuses one another socket holds: sockets/unix/names.rs).
fn abstract_names(images: &ImageDir, v: &mut Verdict) -> Result<()> {
    let descs: Vec<cryo_proto::image::FileDesc> = images.read(names::FILES, ImageKind::Files)?;
    let links = crate::sockets::UnixLinks::build(&descs)?;
    for (_, ty, name) in links.bound_abstract_names() {
        let why = match cryo_unix_sockets::diag::abstract_name_held(ty, &name) {
            Ok(false) => continue,
            Ok(true) => format!("the abstract name {name} is held here by another socket"),
            Err(e) => format!("whether the abstract name {name} is free here: {e}"),
        };
        v.push(
            Temporary,
            "unix name",
            name.to_string(),
            why,
            "stop what holds it, or restore with --netns",
        );
    }
    Ok(())
}

/// The cores of the image's roots, with their pids.
fn root_cores(images: &ImageDir, roots: &[i32]) -> Result<Vec<(i32, TaskCore)>> {
    roots
        .iter()
        .map(|&root| {
            let core = images.read_single(
                &names::core(nix::unistd::Pid::from_raw(root)),
                ImageKind::Core,
            )?;
            Ok((root, core))
        })
        .collect()
}

/// The cores of the image's processes but zombies.
fn live_cores(images: &ImageDir) -> Result<Vec<cryo_proto::image::TaskCore>> {
    let pstree: Vec<cryo_proto::image::ProcessEntry> =
        images.read(names::PSTREE, ImageKind::Pstree)?;
    pstree
        .iter()
        .filter(|e| !e.zombie)
        .map(|entry| {
            Ok(images.read_single(
                &names::core(nix::unistd::Pid::from_raw(entry.pid)),
                ImageKind::Core,
            )?)
        })
        .collect()
}

/// Whether this host has what the image's network namespaces' links outside need
/// (task/netns.rs): a veth's peer's name free, its bridge there, a macvlan's link there.
fn host_links(cores: &[cryo_proto::image::TaskCore], v: &mut Verdict) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    for ns in cores
        .iter()
        .filter_map(|c| c.netns.as_ref())
        .filter(|ns| seen.insert(ns.inode))
    {
        let findings = crate::task::netns::missing_here(ns)
            .map_err(|e| Error::sys(nix::unistd::getpid(), "read this host's links", e.errno()))?;
        for (temporary, subject, why) in findings {
            let (kind, action) = if temporary {
                (
                    Temporary,
                    "remove the link of that name (the dumped process still runs?)",
                )
            } else {
                (Permanent, "make the link as the dumped host had it")
            };
            v.push(kind, "network link", subject, why, action);
        }
    }
    Ok(())
}

/// Whether the names (`ip netns`) the image's network namespaces had are free to go to the
/// restored ones (task/netns.rs bind_handles): not held by a namespace a process still runs in.
fn namespace_names(cores: &[cryo_proto::image::TaskCore], v: &mut Verdict) {
    let mut seen = std::collections::HashSet::new();
    for ns in cores
        .iter()
        .filter_map(|c| c.netns.as_ref())
        .filter(|ns| seen.insert(ns.inode))
    {
        for (handle, why) in crate::task::netns::handles_in_use(ns) {
            v.push(
                Temporary,
                "network namespace name",
                handle,
                format!("the namespace bound there is in use, {why}"),
                "end the process in it (the dumped one, left running?) or `ip netns delete` the name",
            );
        }
    }
}

/// Whether a root has a parent-death signal, which a detached restore would send at once
/// (restore/mod.rs refuses it before making anything).
fn death_signals(roots: &[(i32, TaskCore)], v: &mut Verdict) {
    for (root, core) in roots {
        if let Some((tid, signal)) = crate::task::attrs::death_signal(core) {
            v.push(
                Permanent,
                "parent-death signal",
                format!("{root} thread {tid}"),
                format!(
                    "signal {signal} when its parent ends: with --detach its parent, cryo, ends at once"
                ),
                "restore without --detach (cryo stays its parent while it runs)",
            );
        }
    }
}

/// Whether this host has what the image's mount namespaces are made again from: the paths
/// of cryo's namespace their binds show, and cryo's mounts whose peer groups they join
/// (task/mount_ns.rs).
fn mount_namespaces(cores: &[cryo_proto::image::TaskCore], v: &mut Verdict) {
    let mut seen = std::collections::HashSet::new();
    for core in cores {
        let Some(ns) = core.mnt.as_ref().filter(|ns| seen.insert(ns.inode)) else {
            continue;
        };
        for (subject, why) in crate::task::mount_ns::missing_here(ns) {
            v.push(
                Permanent,
                "mount",
                subject,
                why,
                "make the path or mount as the dumped host had it",
            );
        }
    }
}

/// Whether each root can have its session keyring back from a `cryo restore` run as this
/// one is (task/keyrings.rs): a restore refuses what it cannot, before making anything.
fn session_keyrings(roots: &[(i32, TaskCore)], v: &mut Verdict) -> Result<()> {
    let own = crate::sys::keyctl::own_session_keyring()
        .map_err(|e| Error::sys(nix::unistd::getpid(), "read cryo's session keyring", e))?;
    for (root, core) in roots {
        if let Some(why) = crate::task::keyrings::refuse_root(core, own) {
            v.push(
                Temporary,
                "session keyring",
                root.to_string(),
                why,
                "run the restore from a session keyring as the dumped process had",
            );
        }
    }
    Ok(())
}

fn pids(check: &MigrationCheck, v: &mut Verdict) {
    for p in &check.processes {
        let mut ids = vec![p.pid];
        ids.extend(p.tids.iter().filter(|&&t| t != p.pid));
        for id in ids {
            let Ok(comm) = std::fs::read_to_string(format!("/proc/{id}/comm")) else {
                continue;
            };
            let role = if id == p.pid { "pid" } else { "tid" };
            v.push(
                Temporary,
                "pid",
                id.to_string(),
                format!(
                    "{role} {id} (of dumped pid {}) is taken here by {:?}",
                    p.pid,
                    comm.trim()
                ),
                "wait for that process to exit, or restore with --pidns",
            );
        }
    }
}

fn port_free(port: &CheckedPort, v: &mut Verdict) {
    let ip = match port.ip.len() {
        4 => IpAddr::V4(Ipv4Addr::from(
            <[u8; 4]>::try_from(&port.ip[..]).unwrap_or_default(),
        )),
        16 => IpAddr::V6(Ipv6Addr::from(
            <[u8; 16]>::try_from(&port.ip[..]).unwrap_or_default(),
        )),
        _ => return,
    };
    let addr = SocketAddr::new(ip, port.port as u16);
    let (ty, proto, name) = if port.protocol == libc::IPPROTO_TCP as u32 {
        (socket2::Type::STREAM, socket2::Protocol::TCP, "tcp")
    } else {
        (socket2::Type::DGRAM, socket2::Protocol::UDP, "udp")
    };
    let subject = format!("{name} {addr}");
    let bound =
        socket2::Socket::new(socket2::Domain::for_address(addr), ty, Some(proto)).and_then(|s| {
            if addr.is_ipv6() {
                s.set_only_v6(true)?;
            }
            // A TCP listener takes its port back over connections in TIME_WAIT.
            if name == "tcp" {
                s.set_reuse_address(true)?;
            }
            s.bind(&addr.into())
        });
    match bound {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) => v.push(
            Temporary,
            "port",
            subject,
            format!("{addr} ({name}, of pid {}) is in use here", port.pid),
            "stop what holds the port, or restore with --netns",
        ),
        Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => v.push(
            Temporary,
            "port",
            subject,
            format!("{ip} (of pid {}) is not an address of this host", port.pid),
            "add the address before the restore (the action script's pre-restore stage)",
        ),
        Err(e) => v.push(
            Temporary,
            "port",
            subject,
            format!(
                "binding {addr} ({name}, of pid {}) fails here: {e}",
                port.pid
            ),
            "see why the port cannot be bound",
        ),
    }
}

/// The huge pages of each size the hugetlb memory takes: a size this host lacks is
/// permanent, too few free now temporary (memory/hugetlb.rs, as the restore judges them).
fn huge_pages(check: &MigrationCheck, v: &mut Verdict) {
    use crate::memory::hugetlb::{shortfall, Shortfall};
    for need in &check.huge_pages {
        let (kb, pages) = (need.page_size >> 10, need.pages);
        let subject = format!("{pages} huge pages of {kb} kB");
        match shortfall(need.page_size, pages) {
            None => {}
            Some(Shortfall::Missing) => v.push(
                Permanent,
                "huge pages",
                subject,
                format!("this host has no huge pages of {kb} kB"),
                "restore on a host with that huge page size",
            ),
            Some(Shortfall::Short { free, reserved }) => v.push(
                Temporary,
                "huge pages",
                subject,
                format!(
                    "{} huge pages of {kb} kB available here ({free} free, {reserved} of \
                     them reserved), {pages} needed",
                    free.saturating_sub(reserved)
                ),
                "free huge pages or raise /proc/sys/vm/nr_hugepages",
            ),
        }
    }
}

/// MemAvailable of /proc/meminfo in bytes.
fn mem_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb = text.lines().find_map(|l| l.strip_prefix("MemAvailable:"))?;
    kb.trim()
        .trim_end_matches("kB")
        .trim()
        .parse::<u64>()
        .ok()
        .map(|k| k * 1024)
}

fn memory(check: &MigrationCheck, v: &mut Verdict) {
    let Some(available) = mem_available() else {
        return;
    };
    if check.memory_bytes > available {
        v.push(
            Temporary,
            "memory",
            format!("{} bytes", check.memory_bytes),
            format!(
                "the processes hold {} MiB of pages; {} MiB are available here now",
                check.memory_bytes >> 20,
                available >> 20
            ),
            "free memory on this host (or pick another one)",
        );
    }
}

fn cpu_features(check: &MigrationCheck, v: &mut Verdict) {
    let here = cpu::host_flags();
    for flag in check.cpu_flags.iter().filter(|f| !here.contains(f)) {
        v.push(
            Permanent,
            "cpu",
            flag.clone(),
            format!("the CPU of this host lacks {flag:?}, which the dumping host offered"),
            "restore on a host whose CPU has it (the process may have chosen code that uses it)",
        );
    }
    let xcr0 = crate::sys::cpu::xcr0().unwrap_or(0);
    let missing = check.xcr0 & !xcr0;
    if missing != 0 {
        let in_use = check.xfeatures & missing;
        v.push(
            Permanent,
            "cpu",
            format!("xsave {}", cpu::xfeature_names(missing)),
            format!(
                "XSAVE features {:#x} ({}) are enabled on the dumping host but not here \
                 (XCR0 {xcr0:#x}){}",
                missing,
                cpu::xfeature_names(missing),
                if in_use != 0 {
                    format!("; the process's state uses {}", cpu::xfeature_names(in_use))
                } else {
                    String::new()
                }
            ),
            "restore on a host whose CPU and kernel enable them",
        );
    }
}

fn aio_rings(check: &MigrationCheck, v: &mut Verdict) {
    for ring in &check.aio_rings {
        if let Some(why) = crate::files::aio::unmakeable_here(ring.nr) {
            v.push(
                Permanent,
                "aio",
                format!("pid {} AIO ring at {:#x}", ring.pid, ring.start),
                why,
                "restore on a host with fewer possible CPUs (the kernel sizes rings by them)",
            );
        }
    }
}

fn kernel(check: &MigrationCheck, inventory: &Inventory, v: &mut Verdict) {
    let probes = crate::check::cached(Path::new(crate::check::DEFAULT_CACHE_PATH));
    for name in &check.kernel_features {
        match probes.iter().find(|p| p.name == name) {
            Some(p) if p.is_found() => {}
            Some(p) => v.push(
                Permanent,
                "kernel",
                name.clone(),
                format!(
                    "kernel feature {name} is missing here ({})",
                    match &p.status {
                        crate::check::ProbeStatus::Missing { reason } => reason.as_str(),
                        crate::check::ProbeStatus::Found { .. } => "",
                    }
                ),
                format!("restore on a kernel with {name} ({})", p.needed_for),
            ),
            None => v.push(
                Permanent,
                "kernel",
                name.clone(),
                format!("this cryo does not know the kernel feature {name}"),
                "restore with a cryo as recent as the dumping one",
            ),
        }
    }
    // The restore moves the dumped vdso's block only onto the same vdso.
    if inventory.vdso_size != 0 {
        if let Ok(here) = crate::memory::vdso_identity(nix::unistd::Pid::this()) {
            if here != (inventory.vdso_size, inventory.vdso_crc32c) {
                v.push(
                    Permanent,
                    "kernel",
                    "vdso",
                    format!(
                        "this kernel's vdso differs from the dumping host's ({}: {} bytes, \
                         crc32c {:#x}; here {} bytes, crc32c {:#x})",
                        inventory.kernel_release,
                        inventory.vdso_size,
                        inventory.vdso_crc32c,
                        here.0,
                        here.1
                    ),
                    format!(
                        "restore on a host running kernel {}",
                        inventory.kernel_release
                    ),
                );
            }
        }
    }
}

fn files(check: &MigrationCheck, accept_changed: bool, given: &[&str], v: &mut Verdict) {
    // A file an fd had open that an --inherit-fd stands for: the restore takes the fd given.
    let taken = |f: &cryo_proto::image::CheckedFile| {
        f.used_as.starts_with("fd ") && given.contains(&f.path.as_str())
    };
    for f in check.files.iter().filter(|f| !taken(f)) {
        let used = format!("(pid {}, {})", f.pid, f.used_as);
        let Some((size, sha256, build_id)) = super::record::hash_file(&f.path) else {
            v.push(
                Permanent,
                "file",
                f.path.clone(),
                format!(
                    "{} {used} is missing here (or not a readable regular file)",
                    f.path
                ),
                "install the same file at that path",
            );
            continue;
        };
        if accept_changed || f.sha256.is_empty() || (size == f.size && sha256 == f.sha256) {
            continue;
        }
        let ids = if !f.build_id.is_empty() && build_id != f.build_id {
            format!(
                ", build-id {} here, {} dumped",
                hex(&build_id),
                hex(&f.build_id)
            )
        } else {
            String::new()
        };
        v.push(
            Permanent,
            "file",
            f.path.clone(),
            format!(
                "{} {used} differs here: {size} bytes, sha256 {}; dumped {} bytes, sha256 {}{ids}",
                f.path,
                hex(&sha256),
                f.size,
                hex(&f.sha256)
            ),
            "install the same version of the file (the restored process maps or reads it)",
        );
    }
}

fn ids(ids: &[CheckedId], what: &'static str, v: &mut Verdict) {
    for id in ids.iter().filter(|i| !i.name.is_empty()) {
        let here = if what == "user" {
            nix::unistd::User::from_uid(id.id.into())
                .ok()
                .flatten()
                .map(|u| u.name)
        } else {
            nix::unistd::Group::from_gid(id.id.into())
                .ok()
                .flatten()
                .map(|g| g.name)
        };
        match here {
            Some(name) if name == id.name => {}
            Some(name) => v.push(
                Permanent,
                what,
                id.id.to_string(),
                format!(
                    "{what} id {} is {name:?} here but was {:?} on the dumping host",
                    id.id, id.name
                ),
                format!("give {:?} the id {} on this host", id.name, id.id),
            ),
            None => v.push(
                Permanent,
                what,
                id.id.to_string(),
                format!("{what} {:?} (id {}) does not exist here", id.name, id.id),
                format!("create {what} {:?} with id {} on this host", id.name, id.id),
            ),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
