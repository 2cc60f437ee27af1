//! `cryo check [--json] [--no-cache]`: probe the kernel features cryo needs.

use std::path::Path;

use cryo_core::check::{self, DEFAULT_CACHE_PATH};

/// Probe every kernel feature cryo uses (cached per boot); exit 1 if a required one is missing
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print a JSON array of probes instead of a table
    #[arg(long)]
    json: bool,

    /// Probe again even if this boot's result is cached (and refresh the cache)
    #[arg(long)]
    no_cache: bool,

    /// CRIU's `check --feature NAME`: whether cryo can checkpoint and restore what this
    /// feature of CRIU's list covers, on this host (exit 0: yes, 1: no or unknown name).
    /// Repeatable; `list` prints the names known
    #[arg(long, value_name = "NAME")]
    feature: Vec<String>,
}

/// Whether cryo can use a feature here.
type Answer = fn() -> bool;

/// CRIU's feature names, and whether cryo can use each here: a kernel interface cryo uses
/// (probed), or an object cryo restores or refuses (tun devices, veth links, autofs,
/// AppArmor stacks, the iptables network lock: refused, so "no").
const FEATURES: &[(&str, Answer)] = &[
    ("mnt_id", || has_fdinfo_field("mnt_id:")),
    ("tcp_half_closed", || true),
    ("fdinfo_lock", || true),
    ("seccomp_filters", || true),
    ("seccomp_suspend", || true),
    ("network_lock_nftables", nftables),
    ("nftables", nftables),
    // CRIU's name for "iptables-legacy is installed" (the tests that set legacy rules need
    // it); cryo dumps and restores a namespace's legacy tables itself (netns xtables.rs).
    ("has_ipt_legacy", || in_path("iptables-legacy")),
    ("move_mount_set_group", || true),
    ("cgroupns", || Path::new("/proc/self/ns/cgroup").exists()),
    ("timens", || Path::new("/proc/self/ns/time").exists()),
    ("ns_pid", || has_status_field("NSpid:")),
    ("ipv6_freebind", || true),
    ("aio_remap", || true),
    ("timerfd", || true),
    ("sockopt_buf_lock", || true),
    ("get_rseq_conf", || true),
    ("sk_unix_file", || true),
    ("net_diag_raw", || true),
    ("loginuid", || Path::new("/proc/self/loginuid").exists()),
    ("memfd_hugetlb", memfd_hugetlb),
    ("tun", || false),
    ("tun_ns", || false),
    ("newifindex", || false),
    ("link_nsid", || false),
    ("autofs", || false),
    ("apparmor_stacking", || false),
    ("pagemap_scan_guard_pages", check::pagemap_scan_guard_pages),
    // kcmp(KCMP_EPOLL_TFD), linux 4.13: how cryo finds an epoll's targets.
    ("kcmp_epoll", || true),
    // A process in a user namespace of its own, with the namespaces it made inside it
    // (task/userns.rs, zdtm's uns flavour).
    ("userns", || Path::new("/proc/self/ns/user").exists()),
];

/// Whether the fdinfo of a file cryo opens shows `field` (not fd 0's: it may be closed).
fn has_fdinfo_field(field: &str) -> bool {
    use std::os::fd::AsRawFd;
    std::fs::File::open("/").is_ok_and(|f| {
        std::fs::read_to_string(format!("/proc/self/fdinfo/{}", f.as_raw_fd()))
            .is_ok_and(|t| t.contains(field))
    })
}

/// Whether a program named `name` is in one of PATH's directories.
fn in_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(name).is_file()))
}

fn has_status_field(field: &str) -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|t| t.contains(field))
}

fn nftables() -> bool {
    check::cached(Path::new(DEFAULT_CACHE_PATH))
        .iter()
        .any(|p| p.name == "nftables" && p.is_found())
}

fn memfd_hugetlb() -> bool {
    let name = c"cryo-check";
    nix::sys::memfd::memfd_create(name, nix::sys::memfd::MFdFlags::MFD_HUGETLB).is_ok()
}

/// Answers `--feature` names: 0 when cryo can use every one here.
fn features(names: &[String]) -> i32 {
    let mut code = 0;
    for name in names {
        if name == "list" {
            for (known, _) in FEATURES {
                println!("{known}");
            }
            continue;
        }
        match FEATURES.iter().find(|(known, _)| known == name) {
            Some((_, probe)) if probe() => println!("{name}: yes"),
            Some(_) => {
                println!("{name}: no");
                code = 1;
            }
            None => {
                eprintln!("cryo: unknown feature {name:?} (`cryo check --feature list`)");
                code = 1;
            }
        }
    }
    code
}

/// Probes (or reads the cache), prints, and returns 1 when a required feature is missing.
pub fn run(args: Args) -> anyhow::Result<i32> {
    if !args.feature.is_empty() {
        return Ok(features(&args.feature));
    }
    let cache = Path::new(DEFAULT_CACHE_PATH);
    let probes = if args.no_cache {
        let probes = check::run_all();
        // Same rule as `cached`: a failed run is not remembered, it is probed again.
        if check::all_required_found(&probes) {
            if let Err(err) = check::store(cache, &probes) {
                tracing::warn!(path = %cache.display(), %err, "could not refresh the check cache");
            }
        }
        probes
    } else {
        check::cached(cache)
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&probes)?);
    } else {
        print!("{}", check::render_table(&probes));
    }
    Ok(if check::all_required_found(&probes) {
        0
    } else {
        1
    })
}
