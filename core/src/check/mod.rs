//! `cryo check`: probe every kernel feature the engine uses, through the engine's own code.
//!
//! Each probe runs the function the engine itself calls (the freezer and remote calls on a
//! throwaway child, the clone3 wrappers, the pagemap reader, userfaultfd as a restore fills
//! pages, the sock_diag queries, TCP_REPAIR and the network lock of the socket crates), so
//! a probe cannot pass where a dump or restore would fail. A failure becomes
//! [`ProbeStatus::Missing`] carrying the step and the error ([`CheckError`]); no probe panics,
//! leaks an fd or leaves a child behind (children are killed and reaped before [`run_all`]
//! returns). Each probe's `needed_for` says what the engine does with the feature; features
//! this cryo does not use yet are listed as such.
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
//!
//! ```text
//! mod.rs         the catalog, run_all
//! ptrace.rs      a parked child: freezer, register reads, process_vm, pidfd, kcmp, mm map
//! namespaces.rs  clone3 with set_tid, new PID and network namespaces
//! memory.rs      pagemap, userfaultfd, memfd, vdso; PAGEMAP_SCAN and dirty tracking
//! network.rs     TCP_REPAIR, inet and unix sock_diag, the nftables lock
//! caps.rs        capabilities
//! cache.rs       /run/cryo/check.json
//! table.rs       the text table
//! ```

mod cache;
mod caps;
mod error;
mod memory;
mod namespaces;
mod network;
mod ptrace;
mod table;

use serde::{Deserialize, Serialize};

pub use cache::{cached, load, store};
pub use error::{Cause, CheckError};
pub use table::render_table;

use error::Outcome;
use ptrace::Target;

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
    /// What the engine does with it ("not used by this cryo yet" for the others).
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

/// One entry of the probe catalog.
struct Def {
    name: &'static str,
    needed_for: &'static str,
    required: bool,
    run: fn(&mut Ctx) -> Outcome,
}

/// What the probes share: the parked child of the ptrace family, started on first use.
#[derive(Default)]
struct Ctx {
    target: Option<Result<Target, CheckError>>,
}

impl Ctx {
    fn target(&mut self) -> Result<&Target, CheckError> {
        match self.target.get_or_insert_with(Target::start) {
            Ok(target) => Ok(target),
            Err(e) => Err(CheckError::unexpected(
                "start the probe child",
                e.to_string(),
            )),
        }
    }
}

/// The names of the probes every dump and restore needs (`required`).
pub fn required_names() -> impl Iterator<Item = &'static str> {
    PROBES.iter().filter(|d| d.required).map(|d| d.name)
}

/// Every probe, in the order they run and are shown.
const PROBES: &[Def] = &[
    Def {
        name: "ptrace",
        needed_for: "dump: freezing every thread (seize+interrupt); registers, xstate, sigmask, \
                     pending signals and rseq of each; remote syscalls in the target",
        required: true,
        run: |ctx| ptrace::probe_ptrace(ctx.target()?),
    },
    Def {
        name: "process_vm_readv/writev",
        needed_for: "dump and restore: the tables of batched remote syscalls",
        required: true,
        run: |ctx| ptrace::probe_process_vm(ctx.target()?),
    },
    Def {
        name: "pidfd_getfd",
        needed_for: "dump: taking each task's fds to inspect files and sockets; restore: \
                     taking the userfaultfd a restored task created",
        required: true,
        run: |ctx| ptrace::probe_pidfd_getfd(ctx.target()?),
    },
    Def {
        name: "kcmp",
        needed_for: "dump: telling shared open file descriptions apart",
        required: true,
        run: |ctx| ptrace::probe_kcmp(ctx.target()?),
    },
    Def {
        name: "clone3_set_tid",
        needed_for: "restore: recreating tasks with their original pids and tids",
        required: true,
        run: |_| namespaces::probe_clone3_set_tid(),
    },
    Def {
        name: "pr_set_mm_map",
        needed_for: "restore: brk, arg/env, auxv and exe of each address space (remote prctl)",
        required: true,
        run: |ctx| ptrace::probe_pr_set_mm_map(ctx.target()?),
    },
    Def {
        name: "vdso_layout",
        needed_for: "restore: moving [vvar]+[vvar_vclock]+[vdso] to the dumped addresses",
        required: true,
        run: |_| memory::probe_vdso(),
    },
    Def {
        name: "pagemap",
        needed_for: "dump: finding the pages to save (one pagemap entry per page)",
        required: true,
        run: |_| memory::probe_pagemap(),
    },
    Def {
        name: "tcp_repair",
        needed_for: "dump and restore of established TCP connections (--tcp-established)",
        required: false,
        run: |_| network::probe_tcp_repair(),
    },
    Def {
        name: "unix_diag",
        needed_for: "dump: unix sockets, their peers, names and accept queues",
        required: false,
        run: |_| network::probe_unix_diag(),
    },
    Def {
        name: "inet_diag",
        needed_for: "dump: the backlog and accept queue of TCP listeners",
        required: false,
        run: |_| network::probe_inet_diag(),
    },
    Def {
        name: "nftables",
        needed_for: "dump: the network lock silencing dumped TCP connections (netlink, no \
                     nft binary)",
        required: false,
        run: |_| network::probe_nftables(),
    },
    Def {
        name: "netns_firewall",
        needed_for: "restore of a network namespace's firewall (its nftables ruleset, legacy \
                     iptables tables and tracked connections, made again over netlink)",
        required: false,
        run: |_| network::probe_netns_firewall(),
    },
    Def {
        name: "net_namespace",
        needed_for: "restore into a new network namespace (its lo brought up)",
        required: false,
        run: |_| namespaces::probe_netns(),
    },
    Def {
        name: "pid_namespace",
        needed_for: "restore of a tree into a new PID namespace",
        required: false,
        run: |_| namespaces::probe_pidns(),
    },
    Def {
        name: "userfaultfd",
        needed_for: "restore: copying anonymous pages in (UFFDIO_COPY; without it, slower \
                     reads by the task itself)",
        required: false,
        run: |_| memory::probe_userfaultfd(),
    },
    Def {
        name: "pagemap_scan",
        needed_for: "unused: dump reads present pages from pagemap, one entry a page",
        required: false,
        run: |_| memory::probe_pagemap_scan(),
    },
    Def {
        name: "dirty_tracking",
        needed_for: "unused: cryo has no pre-dump command; nothing tracks written pages",
        required: false,
        run: |_| memory::probe_dirty_tracking(),
    },
    Def {
        name: "soft_dirty",
        needed_for: "not used by this cryo: CRIU-style dirty bits",
        required: false,
        run: |_| memory::probe_soft_dirty(),
    },
    Def {
        name: "memfd_create",
        needed_for: "restore: memfds and shared anonymous memory; dump: their seals",
        required: false,
        run: |_| memory::probe_memfd(),
    },
    Def {
        name: "cap_checkpoint_restore",
        needed_for: "set_tid, PR_SET_MM_MAP, map_files without CAP_SYS_ADMIN",
        required: false,
        run: |_| caps::capability(40),
    },
    Def {
        name: "cap_sys_admin",
        needed_for: "namespaces, and what CAP_CHECKPOINT_RESTORE does not cover",
        required: false,
        run: |_| caps::capability(21),
    },
    Def {
        name: "cap_sys_ptrace",
        needed_for: "ptrace, pidfd_getfd and kcmp on other users' tasks",
        required: false,
        run: |_| caps::capability(19),
    },
    Def {
        name: "cap_net_admin",
        needed_for: "TCP_REPAIR, the network lock, netns links and routes",
        required: false,
        run: |_| caps::capability(12),
    },
    Def {
        name: "cap_sys_resource",
        needed_for: "restore, when missing: a task of another uid, a hard rlimit above cryo's \
                     or a pipe above pipe-max-size cannot be restored",
        required: false,
        run: |_| caps::cap_sys_resource(),
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
                    .unwrap_or_else(|_| Err(CheckError::new("run", Cause::Panicked)));
            let status = match outcome {
                Ok(detail) => ProbeStatus::Found { detail },
                Err(mut err) => {
                    err.probe = def.name;
                    tracing::debug!(probe = err.probe, step = %err.step, errno = err.errno(), %err.cause, "probe failed");
                    ProbeStatus::Missing {
                        reason: err.to_string(),
                    }
                }
            };
            tracing::debug!(
                probe = def.name,
                found = matches!(status, ProbeStatus::Found { .. }),
                elapsed_us = start.elapsed().as_micros() as u64,
                "probed"
            );
            Probe {
                name: def.name,
                needed_for: def.needed_for,
                required: def.required,
                status,
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

/// Whether this kernel's PAGEMAP_SCAN reports guard regions (PAGE_IS_GUARD, linux 6.15), which
/// the dump needs to keep them (CRIU's feature pagemap_scan_guard_pages).
pub fn pagemap_scan_guard_pages() -> bool {
    crate::sys::pagemap::knows_guard()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
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
        let mut file: cache::CacheFile = serde_json::from_str(&text).expect("parse");
        file.key.boot_id = "another-boot".into();
        fs::write(&path, serde_json::to_vec(&file).expect("json")).expect("write");
        assert!(load(&path).is_none());
        // Garbage is a miss, not an error.
        fs::write(&path, b"not json").expect("write");
        assert!(load(&path).is_none());
        let _ = fs::remove_dir_all(&dir);
    }
}
