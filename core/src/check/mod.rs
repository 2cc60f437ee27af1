//! `cryo check`: probe every kernel feature the engine uses.
//!
//! Each probe exercises the feature for real (a ptrace stop on a throwaway child, a clone3
//! with a chosen PID, a PR_SET_MM_MAP applied by a child to itself, netlink dumps answered by
//! the kernel, ...) rather than reading a kernel config. A failure becomes
//! [`ProbeStatus::Missing`] carrying the step and the errno text; no probe panics, leaks an
//! fd or leaves a child behind (children are killed and reaped before [`run_all`] returns).
//!
//! All probes run on the calling thread (ptrace belongs to the thread that attached). The
//! whole run takes a few milliseconds; [`cached`] keeps its result in a 0600 JSON file keyed
//! by kernel release, boot id, cryo version, euid and effective capabilities, so dump and
//! restore can consult it for free:
//!
//! ```text
//! /run/cryo/check.json
//! { "key": { "kernel_release": "6.18.44", "boot_id": "...", "cryo_version": "0.1.0",
//!            "euid": 0, "cap_eff": "000001fffeffffff" },
//!   "probes": [ { "name": "ptrace", "required": true,
//!                 "status": { "state": "found", "detail": "..." } }, ... ] }
//! ```

mod sys;

use std::fmt::Write as _;
use std::fs;
use std::io::{self, Read as _, Write as _};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use libc::pid_t;
use nix::sys::signal::{kill, Signal};
use nix::sys::socket::{
    self, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType,
};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

/// Where `cryo check` keeps its cache by default: /run is cleared on reboot, like the key.
pub const DEFAULT_CACHE_PATH: &str = "/run/cryo/check.json";

/// The outcome of one probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ProbeStatus {
    /// The feature works; `detail` says what was seen.
    Found {
        /// What the probe observed (sizes, feature bits, ...).
        detail: String,
    },
    /// The feature is absent or refused; `reason` names the step and the error.
    Missing {
        /// The failing step and its error text.
        reason: String,
    },
}

/// One kernel feature and whether this machine has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Probe {
    /// Short feature name, e.g. `ptrace` or `clone3_set_tid`.
    pub name: &'static str,
    /// What in cryo needs it.
    pub needed_for: &'static str,
    /// Whether dump/restore cannot work at all without it.
    pub required: bool,
    /// Found or missing, with detail.
    pub status: ProbeStatus,
}

impl Probe {
    /// True when the feature was found.
    pub fn is_found(&self) -> bool {
        matches!(self.status, ProbeStatus::Found { .. })
    }
}

/// What a probe returns: the detail when found, the reason when missing.
type Outcome<T = String> = Result<T, String>;

/// One entry of the probe catalog.
struct Def {
    name: &'static str,
    needed_for: &'static str,
    required: bool,
    run: fn(&mut Ctx) -> Outcome,
}

/// Every probe, in the order they run and are shown.
const PROBES: &[Def] = &[
    Def {
        name: "ptrace",
        needed_for: "freezing tasks; registers, xstate, sigmask, pending signals, rseq (dump)",
        required: true,
        run: probe_ptrace,
    },
    Def {
        name: "process_vm_readv/writev",
        needed_for: "reading and writing task memory (dump, restore)",
        required: true,
        run: probe_process_vm,
    },
    Def {
        name: "pidfd_getfd",
        needed_for: "duplicating a task's fds to inspect files and sockets (dump)",
        required: true,
        run: probe_pidfd_getfd,
    },
    Def {
        name: "kcmp",
        needed_for: "telling shared open file descriptions apart (dump)",
        required: true,
        run: probe_kcmp,
    },
    Def {
        name: "clone3_set_tid",
        needed_for: "recreating tasks with their original PIDs and TIDs (restore)",
        required: true,
        run: probe_clone3_set_tid,
    },
    Def {
        name: "pr_set_mm_map",
        needed_for: "restoring brk, arg/env, auxv and exe of an address space (restore)",
        required: true,
        run: probe_pr_set_mm_map,
    },
    Def {
        name: "vdso_layout",
        needed_for: "moving [vvar]+[vvar_vclock]+[vdso] to the dumped addresses (restore)",
        required: true,
        run: probe_vdso,
    },
    Def {
        name: "tcp_repair",
        needed_for: "live TCP connections (dump and restore of TCP sockets)",
        required: false,
        run: probe_tcp_repair,
    },
    Def {
        name: "unix_diag",
        needed_for: "unix sockets and their peers (dump of unix sockets)",
        required: false,
        run: probe_unix_diag,
    },
    Def {
        name: "inet_diag",
        needed_for: "finding TCP connections and their state (dump of TCP sockets)",
        required: false,
        run: probe_inet_diag,
    },
    Def {
        name: "nftables",
        needed_for: "the network lock around TCP dumps (netlink, no nft binary)",
        required: false,
        run: probe_nftables,
    },
    Def {
        name: "net_namespace",
        needed_for: "network namespaces (netns dump/restore, migration)",
        required: false,
        run: probe_netns,
    },
    Def {
        name: "pid_namespace",
        needed_for: "restoring a tree into a fresh PID namespace",
        required: false,
        run: probe_pidns,
    },
    Def {
        name: "userfaultfd",
        needed_for: "lazy restore (pages served on fault) and write-protect tracking",
        required: false,
        run: probe_userfaultfd,
    },
    Def {
        name: "pagemap_scan",
        needed_for: "finding present pages in one ioctl (dump of memory)",
        required: false,
        run: probe_pagemap_scan,
    },
    Def {
        name: "dirty_tracking",
        needed_for: "iterative pre-dumps: uffd-wp async + PAGEMAP_SCAN written pages",
        required: false,
        run: probe_dirty_tracking,
    },
    Def {
        name: "soft_dirty",
        needed_for: "informational: CRIU-style dirty bits (cryo uses PAGEMAP_SCAN instead)",
        required: false,
        run: probe_soft_dirty,
    },
    Def {
        name: "memfd_create",
        needed_for: "shared anonymous memory and memfd files (dump, restore)",
        required: false,
        run: probe_memfd,
    },
    Def {
        name: "cap_checkpoint_restore",
        needed_for: "set_tid, PR_SET_MM_MAP, map_files without CAP_SYS_ADMIN",
        required: false,
        run: |_| capability(40),
    },
    Def {
        name: "cap_sys_admin",
        needed_for: "namespaces, and what CAP_CHECKPOINT_RESTORE does not cover",
        required: false,
        run: |_| capability(21),
    },
    Def {
        name: "cap_sys_ptrace",
        needed_for: "ptrace, pidfd_getfd and kcmp on other users' tasks",
        required: false,
        run: |_| capability(19),
    },
    Def {
        name: "cap_net_admin",
        needed_for: "TCP_REPAIR, the network lock, netns links and routes",
        required: false,
        run: |_| capability(12),
    },
    Def {
        name: "cap_sys_resource",
        needed_for: "informational: raising hard rlimits, pipes above pipe-max-size",
        required: false,
        run: probe_cap_sys_resource,
    },
];

/// Runs every probe on the calling thread and returns them in catalog order. Never panics:
/// a probe that fails (or panics) is reported as missing.
pub fn run_all() -> Vec<Probe> {
    let mut ctx = Ctx::default();
    let probes = PROBES
        .iter()
        .map(|def| {
            let start = std::time::Instant::now();
            let outcome =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (def.run)(&mut ctx)))
                    .unwrap_or_else(|_| Err("the probe panicked".to_string()));
            tracing::debug!(
                probe = def.name,
                found = outcome.is_ok(),
                elapsed_us = start.elapsed().as_micros() as u64,
                "probed"
            );
            Probe {
                name: def.name,
                needed_for: def.needed_for,
                required: def.required,
                status: match outcome {
                    Ok(detail) => ProbeStatus::Found { detail },
                    Err(reason) => ProbeStatus::Missing { reason },
                },
            }
        })
        .collect();
    drop(ctx);
    probes
}

/// True when every required probe was found.
pub fn all_required_found(probes: &[Probe]) -> bool {
    probes.iter().all(|p| !p.required || p.is_found())
}

/// An aligned text table: feature, status, needed for, detail (or the reason it is missing),
/// then a one-line summary. A required feature that is missing shows as `MISSING`.
pub fn render_table(probes: &[Probe]) -> String {
    let rows: Vec<[&str; 4]> = probes
        .iter()
        .map(|p| {
            let (status, text) = match &p.status {
                ProbeStatus::Found { detail } => ("found", detail.as_str()),
                ProbeStatus::Missing { reason } if p.required => ("MISSING", reason.as_str()),
                ProbeStatus::Missing { reason } => ("missing", reason.as_str()),
            };
            [p.name, status, p.needed_for, text]
        })
        .collect();
    let header = ["FEATURE", "STATUS", "NEEDED FOR", "DETAIL"];
    let mut width = header.map(str::len);
    for row in &rows {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(rows.iter()) {
        let _ = writeln!(
            out,
            "{:<w0$}  {:<w1$}  {:<w2$}  {}",
            row[0],
            row[1],
            row[2],
            row[3],
            w0 = width[0],
            w1 = width[1],
            w2 = width[2],
        );
    }
    let found = probes.iter().filter(|p| p.is_found()).count();
    let missing_required: Vec<&str> = probes
        .iter()
        .filter(|p| p.required && !p.is_found())
        .map(|p| p.name)
        .collect();
    let _ = write!(out, "{found} of {} features found; ", probes.len());
    if missing_required.is_empty() {
        out.push_str("every required feature is present\n");
    } else {
        let _ = writeln!(out, "required but missing: {}", missing_required.join(", "));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Cache

/// What a cached result is valid for: the same kernel, boot, cryo and privileges.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct CacheKey {
    kernel_release: String,
    boot_id: String,
    cryo_version: String,
    euid: u32,
    cap_eff: String,
}

impl CacheKey {
    fn current() -> io::Result<Self> {
        let uname = nix::sys::utsname::uname().map_err(io::Error::from)?;
        Ok(Self {
            kernel_release: uname.release().to_string_lossy().into_owned(),
            boot_id: fs::read_to_string("/proc/sys/kernel/random/boot_id")?
                .trim()
                .to_string(),
            cryo_version: env!("CARGO_PKG_VERSION").to_string(),
            euid: nix::unistd::geteuid().as_raw(),
            cap_eff: status_field("CapEff")?,
        })
    }
}

/// One probe as stored in the cache file (name, required and status; the rest comes from the
/// catalog of this build).
#[derive(Debug, Serialize, Deserialize)]
struct CachedProbe {
    name: String,
    required: bool,
    status: ProbeStatus,
}

#[derive(Debug, Serialize, Deserialize)]
struct CacheFile {
    key: CacheKey,
    probes: Vec<CachedProbe>,
}

/// The probe results for this kernel boot: read from `cache_path` when it holds a result for
/// the same kernel release, boot id, cryo version, euid and capabilities, otherwise probed
/// with [`run_all`] and stored there (only when every required feature was found, so a
/// transient failure is probed again next time rather than remembered). Cache I/O problems
/// never fail the call; they only cost a fresh probe.
pub fn cached(cache_path: &Path) -> Vec<Probe> {
    if let Some(probes) = load(cache_path) {
        return probes;
    }
    let probes = run_all();
    if all_required_found(&probes) {
        if let Err(err) = store(cache_path, &probes) {
            tracing::debug!(path = %cache_path.display(), %err, "could not store the check cache");
        }
    }
    probes
}

/// The cached probe results in `cache_path`, if it exists, parses, matches the current key
/// and lists exactly the probes of this build.
pub fn load(cache_path: &Path) -> Option<Vec<Probe>> {
    let key = CacheKey::current().ok()?;
    let mut text = String::new();
    fs::File::open(cache_path)
        .ok()?
        .read_to_string(&mut text)
        .ok()?;
    let file: CacheFile = serde_json::from_str(&text).ok()?;
    if file.key != key || file.probes.len() != PROBES.len() {
        return None;
    }
    PROBES
        .iter()
        .zip(file.probes)
        .map(|(def, cached)| {
            (def.name == cached.name && def.required == cached.required).then_some(Probe {
                name: def.name,
                needed_for: def.needed_for,
                required: def.required,
                status: cached.status,
            })
        })
        .collect()
}

/// Writes `probes` to `cache_path` (mode 0600, parent created 0700), atomically by rename.
pub fn store(cache_path: &Path, probes: &[Probe]) -> io::Result<()> {
    let file = CacheFile {
        key: CacheKey::current()?,
        probes: probes
            .iter()
            .map(|p| CachedProbe {
                name: p.name.to_string(),
                required: p.required,
                status: p.status.clone(),
            })
            .collect(),
    };
    let json = serde_json::to_vec_pretty(&file).map_err(io::Error::other)?;
    let dir = match cache_path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)?;
    let file_name = cache_path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
    let written = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&json)?;
        f.sync_all()?;
        fs::rename(&tmp, cache_path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

// ---------------------------------------------------------------------------------------------
// Shared state: one parked child for the ptrace, process_vm, pidfd and kcmp probes.

/// A word the child inherits; process_vm_writev changes the child's copy only.
static PROBE_WORD: AtomicU64 = AtomicU64::new(0);
/// The value the child starts with.
const PROBE_MAGIC: u64 = 0x6372_796f_6368_6b31;

/// The child the ptrace-family probes share. It blocks SIGUSR1 (one is left pending for
/// PTRACE_PEEKSIGINFO) and holds copies of `pipe_r`/`pipe_w`. Dropping it kills and reaps it.
struct Target {
    pid: pid_t,
    pipe_r: OwnedFd,
    pipe_w: OwnedFd,
}

impl Target {
    fn start() -> Outcome<Self> {
        PROBE_WORD.store(PROBE_MAGIC, Ordering::SeqCst);
        let (pipe_r, pipe_w) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe2: {e}"))?;
        let pid = sys::fork_parked_child().map_err(|e| format!("fork: {e}"))?;
        let target = Self {
            pid,
            pipe_r,
            pipe_w,
        };
        kill(Pid::from_raw(pid), Signal::SIGUSR1).map_err(|e| format!("kill SIGUSR1: {e}"))?;
        Ok(target)
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
        reap(self.pid);
    }
}

/// Waits until `pid` (our child) has exited; ECHILD means someone else reaped it.
fn reap(pid: pid_t) -> Option<WaitStatus> {
    loop {
        match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::__WALL)) {
            Ok(st @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => return Some(st),
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return None,
        }
    }
}

#[derive(Default)]
struct Ctx {
    target: Option<Outcome<Target>>,
}

impl Ctx {
    fn target(&mut self) -> Outcome<&Target> {
        self.target
            .get_or_insert_with(Target::start)
            .as_ref()
            .map_err(|e| format!("could not start the probe child: {e}"))
    }
}

/// Wraps an error with the step that failed.
fn at<E: std::fmt::Display>(step: &str) -> impl FnOnce(E) -> String + '_ {
    move |e| format!("{step}: {e}")
}

// ---------------------------------------------------------------------------------------------
// Probes

fn probe_ptrace(ctx: &mut Ctx) -> Outcome {
    let pid = ctx.target()?.pid;
    sys::ptrace_seize(pid).map_err(at("PTRACE_SEIZE"))?;
    let res = ptrace_stopped(pid);
    let detached = sys::ptrace_detach(pid).map_err(at("PTRACE_DETACH"));
    let detail = res?;
    detached?;
    Ok(detail)
}

/// The part of the ptrace probe that runs while the child is seized.
fn ptrace_stopped(pid: pid_t) -> Outcome {
    sys::ptrace_interrupt(pid).map_err(at("PTRACE_INTERRUPT"))?;
    loop {
        match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::__WALL)) {
            Ok(WaitStatus::PtraceEvent(_, _, ev)) if ev == libc::PTRACE_EVENT_STOP => break,
            Ok(WaitStatus::Stopped(..)) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(other) => return Err(format!("waitpid: unexpected {other:?}")),
            Err(e) => return Err(format!("waitpid: {e}")),
        }
    }
    let mut regs = vec![0u8; sys::USER_REGS_SIZE];
    let n = sys::ptrace_getregset(pid, sys::NT_PRSTATUS, &mut regs)
        .map_err(at("PTRACE_GETREGSET NT_PRSTATUS"))?;
    if n != sys::USER_REGS_SIZE {
        return Err(format!(
            "PTRACE_GETREGSET NT_PRSTATUS: {n} bytes, expected {}",
            regs.len()
        ));
    }
    let mut xstate = vec![0u8; 64 * 1024];
    let xsize = sys::ptrace_getregset(pid, sys::NT_X86_XSTATE, &mut xstate)
        .map_err(at("PTRACE_GETREGSET NT_X86_XSTATE"))?;
    let mask = sys::ptrace_getsigmask(pid).map_err(at("PTRACE_GETSIGMASK"))?;
    let usr1 = 1u64 << (libc::SIGUSR1 - 1);
    if mask & usr1 == 0 {
        return Err(format!(
            "PTRACE_GETSIGMASK: {mask:#x} lacks the blocked SIGUSR1"
        ));
    }
    let mut signos = [0i32; 4];
    let n = sys::ptrace_peeksiginfo(pid, sys::PTRACE_PEEKSIGINFO_SHARED, &mut signos)
        .map_err(at("PTRACE_PEEKSIGINFO"))?;
    if !signos[..n].contains(&libc::SIGUSR1) {
        return Err(format!(
            "PTRACE_PEEKSIGINFO: pending SIGUSR1 not seen ({:?})",
            &signos[..n]
        ));
    }
    let rseq = sys::ptrace_rseq_config(pid).map_err(at("PTRACE_GET_RSEQ_CONFIGURATION"))?;
    let rseq = if rseq.rseq_abi_pointer == 0 {
        "no rseq registered".to_string()
    } else {
        format!(
            "rseq {} bytes, signature {:#x}",
            rseq.rseq_abi_size, rseq.signature
        )
    };
    Ok(format!(
        "seize+interrupt stop; xstate {xsize} bytes; sigmask and pending SIGUSR1 read; {rseq}"
    ))
}

fn probe_process_vm(ctx: &mut Ctx) -> Outcome {
    let pid = Pid::from_raw(ctx.target()?.pid);
    let addr = &PROBE_WORD as *const AtomicU64 as usize;
    let read = |what: &str| -> Outcome<u64> {
        let mut buf = [0u8; 8];
        let remote = [nix::sys::uio::RemoteIoVec { base: addr, len: 8 }];
        let n = nix::sys::uio::process_vm_readv(pid, &mut [io::IoSliceMut::new(&mut buf)], &remote)
            .map_err(at(what))?;
        if n != 8 {
            return Err(format!("{what}: short read of {n} bytes"));
        }
        Ok(u64::from_ne_bytes(buf))
    };
    let before = read("process_vm_readv")?;
    if before != PROBE_MAGIC {
        return Err(format!(
            "process_vm_readv: read {before:#x}, expected {PROBE_MAGIC:#x}"
        ));
    }
    let new = !PROBE_MAGIC;
    let remote = [nix::sys::uio::RemoteIoVec { base: addr, len: 8 }];
    let n = nix::sys::uio::process_vm_writev(pid, &[io::IoSlice::new(&new.to_ne_bytes())], &remote)
        .map_err(at("process_vm_writev"))?;
    if n != 8 {
        return Err(format!("process_vm_writev: short write of {n} bytes"));
    }
    let after = read("process_vm_readv after write")?;
    if after != new {
        return Err(format!(
            "process_vm_writev: child holds {after:#x}, expected {new:#x}"
        ));
    }
    Ok("read, wrote and read back a word of a child".to_string())
}

fn probe_pidfd_getfd(ctx: &mut Ctx) -> Outcome {
    use std::os::unix::fs::MetadataExt;
    let target = ctx.target()?;
    let pidfd = sys::pidfd_open(target.pid).map_err(at("pidfd_open"))?;
    let fd = target.pipe_r.as_raw_fd();
    let dup = fs::File::from(sys::pidfd_getfd(pidfd.as_fd(), fd).map_err(at("pidfd_getfd"))?);
    let ours = fs::File::from(target.pipe_r.try_clone().map_err(at("dup"))?);
    let (a, b) = (
        dup.metadata().map_err(at("fstat"))?,
        ours.metadata().map_err(at("fstat"))?,
    );
    if (a.dev(), a.ino()) != (b.dev(), b.ino()) {
        return Err(format!(
            "pidfd_getfd: fd {fd} of the child is not the pipe it inherited"
        ));
    }
    Ok(format!(
        "pidfd_open, then the child's fd {fd} duplicated here"
    ))
}

fn probe_kcmp(ctx: &mut Ctx) -> Outcome {
    let target = ctx.target()?;
    let me = std::process::id() as pid_t;
    let (r, w) = (target.pipe_r.as_raw_fd(), target.pipe_w.as_raw_fd());
    let same = sys::kcmp_file(me, target.pid, r, r).map_err(at("kcmp KCMP_FILE"))?;
    let differ = sys::kcmp_file(me, target.pid, w, r).map_err(at("kcmp KCMP_FILE"))?;
    if same != 0 || differ == 0 {
        return Err(format!(
            "kcmp KCMP_FILE: same file gave {same}, different files gave {differ}"
        ));
    }
    Ok("KCMP_FILE tells a shared open file from a different one".to_string())
}

fn probe_clone3_set_tid(_: &mut Ctx) -> Outcome {
    let read_int = |path: &str| -> Outcome<i64> {
        fs::read_to_string(path)
            .map_err(at(path))?
            .trim()
            .parse()
            .map_err(at(path))
    };
    let last = read_int("/proc/sys/kernel/ns_last_pid")?;
    let max = read_int("/proc/sys/kernel/pid_max")?;
    let mut last_err = String::new();
    for attempt in 0..8i64 {
        let mut want = last + 1000 + attempt * 97;
        if want >= max {
            want = 2000 + attempt * 97;
        }
        match sys::clone3_exiting_child(Some(want as pid_t), false) {
            Ok(pid) => {
                reap(pid);
                if i64::from(pid) != want {
                    return Err(format!("clone3 set_tid: asked for {want}, got {pid}"));
                }
                return Ok(format!("child created with the chosen pid {want}"));
            }
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                last_err = format!("clone3 set_tid={want}: {e}");
            }
            Err(e) => return Err(format!("clone3 set_tid={want}: {e}")),
        }
    }
    Err(last_err)
}

fn probe_pr_set_mm_map(_: &mut Ctx) -> Outcome {
    let size = sys::prctl_mm_map_size().map_err(at("PR_SET_MM_MAP_SIZE"))?;
    if size as usize != sys::MM_MAP_SIZE {
        return Err(format!(
            "PR_SET_MM_MAP_SIZE: kernel struct is {size} bytes, cryo's is {}",
            sys::MM_MAP_SIZE
        ));
    }
    let stat = fs::read_to_string("/proc/self/stat").map_err(at("/proc/self/stat"))?;
    let after_comm = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    let fields: Vec<u64> = after_comm
        .split_whitespace()
        .map(|f| f.parse::<i64>().map(|v| v as u64).unwrap_or(0))
        .collect();
    // Field n of proc(5) (1-based) is fields[n - 3]: the list starts at field 3, the state.
    let field = |n: usize| fields.get(n - 3).copied().unwrap_or(0);
    let map = sys::MmMap {
        start_code: field(26),
        end_code: field(27),
        start_stack: field(28),
        start_data: field(45),
        end_data: field(46),
        start_brk: field(47),
        arg_start: field(48),
        arg_end: field(49),
        env_start: field(50),
        env_end: field(51),
        exe_fd: u32::MAX,
        ..sys::MmMap::default()
    };
    if map.start_code == 0 || map.env_end == 0 {
        return Err("/proc/self/stat: memory layout fields are hidden".to_string());
    }
    let auxv = fs::read("/proc/self/auxv").map_err(at("/proc/self/auxv"))?;
    let pid = sys::fork_set_mm_map(&map, &auxv).map_err(at("fork"))?;
    match reap(pid) {
        Some(WaitStatus::Exited(_, 0)) => Ok(format!(
            "struct {size} bytes; a child applied its own layout and {} bytes of auxv",
            auxv.len()
        )),
        Some(WaitStatus::Exited(_, errno)) => Err(format!(
            "PR_SET_MM_MAP in a child: {}",
            io::Error::from_raw_os_error(errno)
        )),
        other => Err(format!("PR_SET_MM_MAP child ended with {other:?}")),
    }
}

/// "NAME N page(s)".
fn pages(name: &str, n: u64) -> String {
    format!("{name} {n} page{}", if n == 1 { "" } else { "s" })
}

fn probe_vdso(_: &mut Ctx) -> Outcome {
    let maps = fs::read_to_string("/proc/self/maps").map_err(at("/proc/self/maps"))?;
    let page = sys::page_size() as u64;
    let mut found: Vec<(&str, u64, u64)> = Vec::new();
    for line in maps.lines() {
        let name = line.split_whitespace().nth(5).unwrap_or("");
        if !matches!(name, "[vvar]" | "[vvar_vclock]" | "[vdso]" | "[vsyscall]") {
            continue;
        }
        let range = line.split_whitespace().next().unwrap_or("");
        let (s, e) = range.split_once('-').unwrap_or(("", ""));
        let (Ok(s), Ok(e)) = (u64::from_str_radix(s, 16), u64::from_str_radix(e, 16)) else {
            return Err(format!("/proc/self/maps: cannot parse {line:?}"));
        };
        found.push((name, s, e));
    }
    if !found.iter().any(|(n, ..)| *n == "[vdso]") {
        return Err("/proc/self/maps has no [vdso]".to_string());
    }
    let mut parts: Vec<String> = found
        .iter()
        .map(|(n, s, e)| pages(n, (e - s) / page))
        .collect();
    let mut block: Vec<&(&str, u64, u64)> =
        found.iter().filter(|(n, ..)| *n != "[vsyscall]").collect();
    block.sort_by_key(|(_, s, _)| *s);
    let contiguous = block.windows(2).all(|w| w[0].2 == w[1].1);
    if let (Some(first), Some(last)) = (block.first(), block.last()) {
        parts.push(format!(
            "block of {} pages at {:#x}{}",
            (last.2 - first.1) / page,
            first.1,
            if contiguous { "" } else { " NOT contiguous" }
        ));
    }
    Ok(parts.join(", "))
}

/// A TCP socket, not yet connected.
fn tcp_socket() -> Outcome<OwnedFd> {
    socket::socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(at("socket AF_INET"))
}

fn probe_tcp_repair(_: &mut Ctx) -> Outcome {
    const TCP_REPAIR: i32 = 19;
    const TCP_REPAIR_QUEUE: i32 = 20;
    const TCP_QUEUE_SEQ: i32 = 21;
    const TCP_RECV_QUEUE: i32 = 1;
    const TCP_SEND_QUEUE: i32 = 2;
    let sock = tcp_socket()?;
    let fd = sock.as_fd();
    let set = |name: i32, val: i32, what: &str| {
        sys::setsockopt_int(fd, libc::IPPROTO_TCP, name, val).map_err(at(what))
    };
    sys::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1).map_err(at("SO_REUSEADDR"))?;
    set(TCP_REPAIR, 1, "TCP_REPAIR on")?;
    set(TCP_REPAIR_QUEUE, TCP_SEND_QUEUE, "TCP_REPAIR_QUEUE send")?;
    set(TCP_QUEUE_SEQ, 1_000_000, "TCP_QUEUE_SEQ send")?;
    set(TCP_REPAIR_QUEUE, TCP_RECV_QUEUE, "TCP_REPAIR_QUEUE recv")?;
    set(TCP_QUEUE_SEQ, 2_000_000, "TCP_QUEUE_SEQ recv")?;
    let local = socket::SockaddrIn::new(127, 0, 0, 1, 0);
    socket::bind(sock.as_raw_fd(), &local).map_err(at("bind 127.0.0.1"))?;
    // In repair mode connect() sends nothing: the socket is simply established.
    let peer = socket::SockaddrIn::new(127, 0, 0, 1, 9);
    socket::connect(sock.as_raw_fd(), &peer).map_err(at("connect in repair mode"))?;
    set(TCP_REPAIR_QUEUE, TCP_SEND_QUEUE, "TCP_REPAIR_QUEUE send")?;
    let seq =
        sys::getsockopt_int(fd, libc::IPPROTO_TCP, TCP_QUEUE_SEQ).map_err(at("TCP_QUEUE_SEQ"))?;
    if seq != 1_000_000 {
        return Err(format!("TCP_QUEUE_SEQ: read back {seq}, set 1000000"));
    }
    // Closed while still in repair mode: no FIN or RST goes out.
    Ok("established a socket in repair mode with chosen sequence numbers".to_string())
}

/// Sends one netlink dump request and counts the answers until NLMSG_DONE.
fn netlink_dump(proto: SockProtocol, msg_type: u16, payload: &[u8]) -> Outcome<usize> {
    const NLM_F_REQUEST: u16 = 1;
    const NLM_F_DUMP: u16 = 0x300;
    const NLMSG_ERROR: u16 = 2;
    const NLMSG_DONE: u16 = 3;
    let sock = socket::socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        proto,
    )
    .map_err(at("netlink socket"))?;
    let tv = nix::sys::time::TimeVal::new(1, 0);
    socket::setsockopt(&sock, socket::sockopt::ReceiveTimeout, &tv).map_err(at("SO_RCVTIMEO"))?;
    let mut msg = Vec::with_capacity(16 + payload.len());
    msg.extend_from_slice(&((16 + payload.len()) as u32).to_ne_bytes());
    msg.extend_from_slice(&msg_type.to_ne_bytes());
    msg.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(payload);
    socket::sendto(
        sock.as_raw_fd(),
        &msg,
        &NetlinkAddr::new(0, 0),
        MsgFlags::empty(),
    )
    .map_err(at("netlink send"))?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut count = 0;
    loop {
        let n = socket::recv(sock.as_raw_fd(), &mut buf, MsgFlags::empty())
            .map_err(at("netlink recv"))?;
        if n == 0 {
            return Err("netlink recv: end of stream before NLMSG_DONE".to_string());
        }
        let mut off = 0;
        while off + 16 <= n {
            let len = u32::from_ne_bytes(buf[off..off + 4].try_into().unwrap_or_default()) as usize;
            let ty = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
            if len < 16 || off + len > n {
                return Err(format!("netlink recv: malformed message of length {len}"));
            }
            let err = || {
                buf.get(off + 16..off + 20)
                    .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                    .unwrap_or(0)
            };
            match ty {
                NLMSG_DONE if err() < 0 => {
                    return Err(format!("dump: {}", io::Error::from_raw_os_error(-err())))
                }
                NLMSG_DONE => return Ok(count),
                NLMSG_ERROR if err() < 0 => {
                    return Err(format!("dump: {}", io::Error::from_raw_os_error(-err())))
                }
                NLMSG_ERROR => {}
                _ => count += 1,
            }
            off += (len + 3) & !3;
        }
    }
}

/// `SOCK_DIAG_BY_FAMILY`.
const SOCK_DIAG_BY_FAMILY: u16 = 20;

fn probe_unix_diag(_: &mut Ctx) -> Outcome {
    // A pair of our own so the dump has something to show.
    let _pair = std::os::unix::net::UnixStream::pair().map_err(at("socketpair"))?;
    let mut req = vec![libc::AF_UNIX as u8, 0, 0, 0];
    req.extend_from_slice(&u32::MAX.to_ne_bytes()); // all states
    req.extend_from_slice(&0u32.to_ne_bytes()); // inode
    req.extend_from_slice(&(1u32 | 4).to_ne_bytes()); // UDIAG_SHOW_NAME | UDIAG_SHOW_PEER
    req.extend_from_slice(&[0xff; 8]); // cookie
    let n = netlink_dump(SockProtocol::NetlinkSockDiag, SOCK_DIAG_BY_FAMILY, &req)
        .map_err(|e| format!("unix_diag {e}"))?;
    if n < 2 {
        return Err(format!(
            "unix_diag dump: {n} sockets listed, our own pair missing"
        ));
    }
    Ok(format!("dump answered: {n} unix sockets"))
}

fn probe_inet_diag(_: &mut Ctx) -> Outcome {
    // A listener of our own so the dump has something to show.
    let _listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(at("listen"))?;
    let mut req = vec![libc::AF_INET as u8, libc::IPPROTO_TCP as u8, 0, 0];
    req.extend_from_slice(&u32::MAX.to_ne_bytes()); // all states
    req.extend_from_slice(&[0u8; 48]); // inet_diag_sockid: any
    let n = netlink_dump(SockProtocol::NetlinkSockDiag, SOCK_DIAG_BY_FAMILY, &req)
        .map_err(|e| format!("inet_diag {e}"))?;
    if n == 0 {
        return Err("inet_diag dump: our own listener is missing".to_string());
    }
    Ok(format!("dump answered: {n} IPv4 TCP sockets"))
}

fn probe_nftables(_: &mut Ctx) -> Outcome {
    const NFNL_SUBSYS_NFTABLES: u16 = 10;
    const NFT_MSG_GETTABLE: u16 = 1;
    // struct nfgenmsg: family NFPROTO_UNSPEC, version NFNETLINK_V0, res_id 0.
    let n = netlink_dump(
        SockProtocol::NetlinkNetFilter,
        (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETTABLE,
        &[0, 0, 0, 0],
    )
    .map_err(|e| format!("NFT_MSG_GETTABLE {e}"))?;
    Ok(format!("NFT_MSG_GETTABLE dump answered: {n} tables"))
}

fn probe_netns(_: &mut Ctx) -> Outcome {
    let handle = std::thread::Builder::new()
        .name("cryo-check-netns".into())
        .spawn(|| -> Outcome {
            let before = fs::read_link("/proc/thread-self/ns/net").map_err(at("ns/net"))?;
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(at("unshare(CLONE_NEWNET)"))?;
            let after = fs::read_link("/proc/thread-self/ns/net").map_err(at("ns/net"))?;
            if before == after {
                return Err("unshare(CLONE_NEWNET): namespace unchanged".to_string());
            }
            let lo = nix::net::if_::if_nametoindex("lo").map_err(at("lo in the new netns"))?;
            Ok(format!(
                "unshare in a thread gave {} with lo as ifindex {lo}",
                after.display()
            ))
        })
        .map_err(at("spawn thread"))?;
    handle
        .join()
        .unwrap_or_else(|_| Err("the netns thread panicked".to_string()))
}

fn probe_pidns(_: &mut Ctx) -> Outcome {
    let pid = sys::clone3_exiting_child(None, true).map_err(at("clone3(CLONE_NEWPID)"))?;
    match reap(pid) {
        Some(WaitStatus::Exited(_, 0)) => Ok(format!(
            "a child in a new PID namespace is pid 1 there, {pid} here"
        )),
        other => Err(format!(
            "child in a new PID namespace: not pid 1 ({other:?})"
        )),
    }
}

/// Names of the `UFFD_FEATURE_*` bits.
const UFFD_FEATURES: &[(u64, &str)] = &[
    (1 << 0, "PAGEFAULT_FLAG_WP"),
    (1 << 1, "EVENT_FORK"),
    (1 << 2, "EVENT_REMAP"),
    (1 << 3, "EVENT_REMOVE"),
    (1 << 4, "MISSING_HUGETLBFS"),
    (1 << 5, "MISSING_SHMEM"),
    (1 << 6, "EVENT_UNMAP"),
    (1 << 7, "SIGBUS"),
    (1 << 8, "THREAD_ID"),
    (1 << 9, "MINOR_HUGETLBFS"),
    (1 << 10, "MINOR_SHMEM"),
    (1 << 11, "EXACT_ADDRESS"),
    (1 << 12, "WP_HUGETLBFS_SHMEM"),
    (1 << 13, "WP_UNPOPULATED"),
    (1 << 14, "POISON"),
    (1 << 15, "WP_ASYNC"),
    (1 << 16, "MOVE"),
];
/// `UFFD_FEATURE_WP_ASYNC`.
const UFFD_FEATURE_WP_ASYNC: u64 = 1 << 15;

fn probe_userfaultfd(_: &mut Ctx) -> Outcome {
    let uffd = sys::userfaultfd().map_err(at("userfaultfd"))?;
    let (features, _ioctls) = sys::uffdio_api(uffd.as_fd(), 0).map_err(at("UFFDIO_API"))?;
    let names: Vec<&str> = UFFD_FEATURES
        .iter()
        .filter(|(bit, _)| features & bit != 0)
        .map(|(_, n)| *n)
        .collect();
    Ok(format!("features {features:#x}: {}", names.join(" ")))
}

/// `PAGE_IS_WRITTEN`.
const PAGE_IS_WRITTEN: u64 = 1 << 1;
/// `PAGE_IS_PRESENT`.
const PAGE_IS_PRESENT: u64 = 1 << 3;

/// Opens /proc/self/pagemap.
fn pagemap() -> Outcome<fs::File> {
    fs::File::open("/proc/self/pagemap").map_err(at("/proc/self/pagemap"))
}

/// Pages covered by the regions, and the page index of the first one relative to `base`.
fn pages_in(regions: &[sys::PageRegion], base: u64) -> (u64, Option<u64>) {
    let page = sys::page_size() as u64;
    let total = regions.iter().map(|r| (r.end - r.start) / page).sum();
    (total, regions.first().map(|r| (r.start - base) / page))
}

fn probe_pagemap_scan(_: &mut Ctx) -> Outcome {
    let pm = pagemap()?;
    let map = sys::AnonMap::new(4).map_err(at("mmap"))?;
    map.touch(0, 1);
    map.touch(2, 1);
    let mut regions = [sys::PageRegion::default(); 4];
    let scan = sys::Scan {
        start: map.start(),
        end: map.start() + map.byte_len() as u64,
        category_mask: PAGE_IS_PRESENT,
        return_mask: PAGE_IS_PRESENT,
        ..sys::Scan::default()
    };
    let n = sys::pagemap_scan(pm.as_fd(), scan, &mut regions).map_err(at("PAGEMAP_SCAN"))?;
    let (pages, _) = pages_in(&regions[..n], map.start());
    if n != 2 || pages != 2 {
        return Err(format!(
            "PAGEMAP_SCAN: {n} regions, {pages} pages present; expected 2 and 2"
        ));
    }
    Ok("present pages of a 4-page mapping found in one ioctl".to_string())
}

fn probe_dirty_tracking(_: &mut Ctx) -> Outcome {
    const PM_SCAN_WP_MATCHING: u64 = 1 << 0;
    const PM_SCAN_CHECK_WPASYNC: u64 = 1 << 1;
    let pm = pagemap()?;
    let uffd = sys::userfaultfd().map_err(at("userfaultfd"))?;
    sys::uffdio_api(uffd.as_fd(), UFFD_FEATURE_WP_ASYNC).map_err(at("UFFDIO_API WP_ASYNC"))?;
    let map = sys::AnonMap::new(4).map_err(at("mmap"))?;
    for page in 0..4 {
        map.touch(page, 1);
    }
    sys::uffdio_register_wp(uffd.as_fd(), map.start(), map.byte_len() as u64)
        .map_err(at("UFFDIO_REGISTER WP"))?;
    let mut regions = [sys::PageRegion::default(); 4];
    let mut scan = sys::Scan {
        flags: PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC,
        start: map.start(),
        end: map.start() + map.byte_len() as u64,
        category_mask: PAGE_IS_WRITTEN,
        return_mask: PAGE_IS_WRITTEN,
    };
    sys::pagemap_scan(pm.as_fd(), scan, &mut regions).map_err(at("PAGEMAP_SCAN write-protect"))?;
    map.touch(2, 2);
    scan.flags = 0;
    let n = sys::pagemap_scan(pm.as_fd(), scan, &mut regions).map_err(at("PAGEMAP_SCAN"))?;
    match pages_in(&regions[..n], map.start()) {
        (1, Some(2)) => Ok("after write-protecting 4 pages, the 1 written page is reported".into()),
        (pages, first) => Err(format!(
            "PAGEMAP_SCAN: {pages} pages written from page {first:?}, expected page 2 only"
        )),
    }
}

fn probe_soft_dirty(_: &mut Ctx) -> Outcome {
    let pm = pagemap()?;
    let map = sys::AnonMap::new(1).map_err(at("mmap"))?;
    map.touch(0, 1);
    let mut entry = [0u8; 8];
    let index = map.start() / sys::page_size() as u64;
    pm.read_exact_at(&mut entry, index * 8)
        .map_err(at("read /proc/self/pagemap"))?;
    let entry = u64::from_ne_bytes(entry);
    if entry & (1 << 63) == 0 {
        return Err("pagemap: a written page is not present".to_string());
    }
    if entry & (1 << 55) == 0 {
        return Err(
            "pagemap bit 55 clear on a freshly written page: kernel without \
                    CONFIG_MEM_SOFT_DIRTY (not needed: cryo tracks with PAGEMAP_SCAN)"
                .to_string(),
        );
    }
    Ok("pagemap bit 55 set on a freshly written page".to_string())
}

fn probe_memfd(_: &mut Ctx) -> Outcome {
    use nix::sys::memfd::{memfd_create, MFdFlags};
    let fd = memfd_create(c"cryo-check", MFdFlags::MFD_CLOEXEC).map_err(at("memfd_create"))?;
    nix::unistd::ftruncate(&fd, 8192).map_err(at("ftruncate"))?;
    let f = fs::File::from(fd);
    f.write_all_at(b"cryo", 4096).map_err(at("pwrite"))?;
    let size = f.metadata().map_err(at("fstat"))?.len();
    if size != 8192 {
        return Err(format!("memfd: size {size}, expected 8192"));
    }
    Ok("created, sized and written a memfd".to_string())
}

/// A field of /proc/self/status.
fn status_field(name: &str) -> io::Result<String> {
    let status = fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| {
            l.strip_prefix(name)?
                .strip_prefix(':')
                .map(|v| v.trim().to_string())
        })
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no {name} in status")))
}

/// Whether capability `bit` is in CapEff.
fn has_capability(bit: u32) -> Outcome<bool> {
    let eff = status_field("CapEff").map_err(at("/proc/self/status"))?;
    let eff = u64::from_str_radix(&eff, 16).map_err(at("CapEff"))?;
    Ok(eff & (1u64 << bit) != 0)
}

fn capability(bit: u32) -> Outcome {
    if has_capability(bit)? {
        Ok(format!("in CapEff (bit {bit})"))
    } else {
        Err(format!("not in CapEff (bit {bit})"))
    }
}

fn probe_cap_sys_resource(_: &mut Ctx) -> Outcome {
    const CAP_SYS_RESOURCE: u32 = 24;
    if has_capability(CAP_SYS_RESOURCE)? {
        return Ok(format!("in CapEff (bit {CAP_SYS_RESOURCE})"));
    }
    let max = fs::read_to_string("/proc/sys/fs/pipe-max-size")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".to_string());
    Err(format!(
        "not in CapEff: hard rlimits cannot be raised, F_SETPIPE_SZ limited to {max} bytes"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn every_required_probe_is_found_here() {
        let start = Instant::now();
        let probes = run_all();
        let took = start.elapsed();
        print!("{}", render_table(&probes));
        println!("run_all took {took:?}");
        assert_eq!(probes.len(), PROBES.len());
        for p in &probes {
            assert!(!p.required || p.is_found(), "{}: {:?}", p.name, p.status);
        }
        assert!(all_required_found(&probes));
        // About 7 ms alone here; the bound only catches an order-of-magnitude regression on a
        // loaded shared machine.
        assert!(took < Duration::from_millis(500), "run_all took {took:?}");
    }

    #[test]
    fn optional_probes_match_this_machine() {
        let probes = run_all();
        let status = |name: &str| probes.iter().find(|p| p.name == name).map(Probe::is_found);
        for name in [
            "tcp_repair",
            "unix_diag",
            "inet_diag",
            "nftables",
            "net_namespace",
        ] {
            assert_eq!(status(name), Some(true), "{name}");
        }
        for name in [
            "pid_namespace",
            "userfaultfd",
            "pagemap_scan",
            "memfd_create",
        ] {
            assert_eq!(status(name), Some(true), "{name}");
        }
    }

    #[test]
    fn no_child_or_fd_is_left_behind() {
        let fds = || {
            fs::read_dir("/proc/self/fd")
                .map(|d| d.count())
                .unwrap_or(0)
        };
        let before = fds();
        let _ = run_all();
        // Other tests may open fds concurrently; allow a little slack but no per-probe leak.
        assert!(fds() <= before + 4, "fds before {before}, after {}", fds());
        // Every child this thread forked has been reaped (zombies would still be listed).
        let children = fs::read_to_string("/proc/thread-self/children").expect("children");
        assert_eq!(children.trim(), "", "children left behind");
    }

    #[test]
    fn table_names_every_probe() {
        let probes = run_all();
        let table = render_table(&probes);
        for p in &probes {
            assert!(table.contains(p.name), "{} missing from the table", p.name);
        }
        assert!(table.starts_with("FEATURE"));
    }

    fn fake(required: bool, found: bool) -> Probe {
        Probe {
            name: "x",
            needed_for: "y",
            required,
            status: if found {
                ProbeStatus::Found { detail: "d".into() }
            } else {
                ProbeStatus::Missing { reason: "r".into() }
            },
        }
    }

    #[test]
    fn required_missing_is_reported() {
        assert!(all_required_found(&[fake(true, true), fake(false, false)]));
        assert!(!all_required_found(&[fake(true, false)]));
        assert!(render_table(&[fake(true, false)]).contains("MISSING"));
        assert!(render_table(&[fake(true, false)]).contains("required but missing: x"));
    }

    #[test]
    fn json_serialization() {
        let json = serde_json::to_value(run_all()).expect("serialize");
        let first = &json[0];
        assert_eq!(first["name"], "ptrace");
        assert_eq!(first["required"], true);
        assert_eq!(first["status"]["state"], "found");
        assert!(first["status"]["detail"].is_string());
        let missing = serde_json::to_value(fake(false, false)).expect("serialize");
        assert_eq!(missing["status"]["state"], "missing");
        assert_eq!(missing["status"]["reason"], "r");
    }

    #[test]
    fn cache_round_trip() {
        let dir = std::env::temp_dir().join(format!("cryo-check-test-{}", std::process::id()));
        let path = dir.join("sub").join("check.json");
        let _ = fs::remove_dir_all(&dir);
        let first = cached(&path);
        let meta = fs::metadata(&path).expect("cache written");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let start = std::time::Instant::now();
        let second = load(&path).expect("cache hit");
        assert!(start.elapsed() < Duration::from_millis(20));
        assert_eq!(first, second);
        assert_eq!(cached(&path), first);
        // A different key (another boot) is a miss.
        let text = fs::read_to_string(&path).expect("read");
        let mut file: CacheFile = serde_json::from_str(&text).expect("parse");
        file.key.boot_id = "another-boot".into();
        fs::write(&path, serde_json::to_vec(&file).expect("json")).expect("write");
        assert!(load(&path).is_none());
        // Garbage is a miss, not an error.
        fs::write(&path, b"not json").expect("write");
        assert!(load(&path).is_none());
        let _ = fs::remove_dir_all(&dir);
    }
}
