//! CRIU's flags that `cryo dump` and `cryo restore` take as CRIU does, so a command line
//! written for `criu dump`/`criu restore` runs unchanged: the ones that change what cryo does
//! (`--ghost-limit`, `--manage-cgroups`) and the ones naming what cryo always does, accepted
//! as such. A flag whose CRIU meaning cryo cannot give is refused when parsed, never ignored.

use std::path::PathBuf;

use cryo_core::CgroupMode;

/// CRIU's flags, on dump and restore alike (as CRIU takes them on both).
#[derive(Debug, Clone, Default, clap::Args)]
#[command(next_help_heading = "CRIU's flags")]
pub struct CriuArgs {
    /// Dump: refuse a deleted file (open or mapped, its name removed) larger than SIZE
    /// (bytes, or with K, M, G) instead of copying its contents into the image (default: no
    /// limit). Restore: no effect
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    ghost_limit: Option<u64>,

    /// How a restore treats the processes' cgroups: soft (the default, and this flag without
    /// a mode): each joins its cgroups, a missing one made again with its dumped settings,
    /// an existing one used as it is; full: an existing one gets the dumped settings too;
    /// strict: a cgroup of the image that exists already refuses the restore; none: every
    /// cgroup must exist, none is made or written; ignore: no cgroup joined or made, the
    /// processes stay in cryo's. Dump: no effect (cgroups are always recorded)
    #[arg(
        long,
        value_name = "MODE",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "soft",
        value_parser = parse_cgroup_mode,
    )]
    manage_cgroups: Option<CgroupMode>,

    /// Dump: in the hierarchies CONTROLLER names (every other one without it), every process
    /// must be in PATH or below (refused otherwise); the restore takes its cgroups as below
    /// PATH. Restore: each cgroup goes below PATH as it was below the dump's root (without
    /// one, below the root process's cgroup). CONTROLLER: one of a hierarchy's ("cpu",
    /// "name=systemd", "unified" for v2). Repeatable
    #[arg(long, value_name = "[CONTROLLER:]PATH", value_parser = cryo_core::parse_cgroup_root)]
    cgroup_root: Vec<cryo_core::CgroupRoot>,

    /// Accepted as CRIU's: cryo always dumps and restores file locks (flock, POSIX and OFD
    /// locks, leases)
    #[arg(long)]
    file_locks: bool,

    /// Accepted as CRIU's: cryo always keeps a deleted file that is open or mapped (its
    /// contents copied into the image, see --ghost-limit; another link to it used when it has
    /// one)
    #[arg(long)]
    link_remap: bool,

    /// Accepted as CRIU's: cryo always copies only the data of a deleted file, skipping its
    /// holes (SEEK_DATA/SEEK_HOLE)
    #[arg(long, overrides_with = "no_ghost_fiemap")]
    ghost_fiemap: bool,

    /// Accepted as CRIU's (see --ghost-fiemap)
    #[arg(long)]
    no_ghost_fiemap: bool,

    /// Accepted as CRIU's: cryo finds the path of every inotify watch and fanotify mark
    /// itself (by file handle), without a scan
    #[arg(long)]
    force_irmap: bool,

    /// Accepted as CRIU's (see --force-irmap): no scan is made
    #[arg(long, value_name = "PATH")]
    irmap_scan_path: Vec<PathBuf>,

    /// Accepted as CRIU's: cryo reaches each cgroup hierarchy through the mounts the host
    /// has (it mounts none of its own), so it needs no yard of them; PATH must be a directory
    /// (a relative one taken from the image directory, CRIU's default work directory)
    #[arg(long, value_name = "PATH")]
    cgroup_yard: Option<PathBuf>,

    /// Accepted as CRIU's: cryo makes a mount namespace's mounts private, then sets their
    /// propagation with MOVE_MOUNT_SET_GROUP (as CRIU's mount engine v2 does), whichever
    /// engine this names
    #[arg(long, overrides_with = "no_mntns_compat_mode")]
    mntns_compat_mode: bool,

    /// Accepted as CRIU's (see --mntns-compat-mode)
    #[arg(long)]
    no_mntns_compat_mode: bool,

    /// The network lock: nftables, the only one cryo has (CRIU's iptables and skip are
    /// refused)
    #[arg(long, value_name = "METHOD", value_parser = parse_network_lock)]
    network_lock: Option<String>,

    /// Accepted as CRIU's (a bound on collecting and freezing the tasks): cryo's freeze of a
    /// tree that keeps changing gives up after five attempts, refused, and never waits on a
    /// task
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<u32>,

    /// Accepted as CRIU's: cryo has no pre-dump; its pre-copy (`--pre-copy`) reads memory
    /// as it does every dump
    #[arg(long, value_name = "MODE", value_parser = ["splice", "read"])]
    pre_dump_mode: Option<String>,

    /// An external mount. Dump: `mnt[POINT]:KEY`, the mount at POINT of the processes' mount
    /// namespace recorded as KEY, nothing of it held. Restore: `mnt[KEY]:PATH`, that mount
    /// bound from PATH (a relative one taken from /, as CRIU's). `mnt[]` (CRIU's automatic mode) is what cryo does without it: a bind
    /// of a path of cryo's namespace is recorded by that path. Restore:
    /// `veth[INNER]:OUTER[@BRIDGE]`, the peer of veth INNER, which was in cryo's namespace,
    /// made again named OUTER, on BRIDGE (without: on none); `macvlan[INNER]:OUTER`, macvlan
    /// INNER made over link OUTER of cryo's namespace; without them the peer comes back with
    /// the name and bridge it had, the macvlan over the link of its name. Other kinds are
    /// refused. Repeatable
    #[arg(long, value_name = "mnt[A]:B", value_parser = parse_external)]
    external: Vec<ExternalArg>,

    /// CRIU's older spelling of `--external mnt[A]:B`: `A:B`, and `auto` for `mnt[]`
    #[arg(long, value_name = "A:B", value_parser = parse_ext_mount_map)]
    ext_mount_map: Vec<ExternalArg>,

    /// Accepted as CRIU's (with `mnt[]`): cryo finds the peer groups of a namespace's
    /// mounts shared with, or slaves of, its own and joins them again
    #[arg(long)]
    enable_external_sharing: bool,

    /// Accepted as CRIU's (see --enable-external-sharing)
    #[arg(long)]
    enable_external_masters: bool,

    /// Restore: PATH (a path of cryo's namespace) is bound as the root of the restored mount
    /// namespace, which had a root of its own (pivot_root). Dump: no effect (as CRIU's)
    #[arg(long, value_name = "PATH")]
    root: Option<PathBuf>,
}

/// An `--external mnt[A]:B` or `--ext-mount-map A:B`: (A, B), read as (point, key) by a dump
/// and (key, path) by a restore; `Auto` for `mnt[]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExternalArg {
    /// `mnt[A]:B`.
    Mount(String, String),
    /// `mnt[]`, `mnt[]:FLAGS`, `--ext-mount-map auto`.
    Auto,
    /// `veth[INNER]:OUTER[@BRIDGE]` or `macvlan[INNER]:OUTER`.
    Link(cryo_core::ExternalLink),
}

/// `--external KIND[ID]:VALUE`: mnt and veth.
fn parse_external(text: &str) -> Result<ExternalArg, String> {
    let link = text
        .strip_prefix("veth[")
        .map(|rest| (rest, true))
        .or_else(|| text.strip_prefix("macvlan[").map(|rest| (rest, false)));
    if let Some((rest, veth)) = link {
        let form = if veth {
            "veth[INNER]:OUTER[@BRIDGE]"
        } else {
            "macvlan[INNER]:OUTER"
        };
        let (inner, value) = rest
            .split_once("]:")
            .filter(|(i, v)| !i.is_empty() && !v.is_empty())
            .ok_or_else(|| format!("{text}: not {form}"))?;
        let (outer, bridge) = match value.split_once('@') {
            Some((o, b)) if veth && !o.is_empty() && !b.is_empty() => (o, Some(b.to_owned())),
            Some(_) => return Err(format!("{text}: not {form}")),
            None => (value, None),
        };
        return Ok(ExternalArg::Link(cryo_core::ExternalLink {
            inner: inner.to_owned(),
            outer: outer.to_owned(),
            bridge,
        }));
    }
    let Some(rest) = text.strip_prefix("mnt[") else {
        let kind = text.split('[').next().unwrap_or(text);
        return Err(format!(
            "{text}: external {kind} resources are not supported: cryo takes mnt[...] and \
             veth[...] only"
        ));
    };
    let (inside, value) = rest
        .split_once(']')
        .ok_or_else(|| format!("{text}: no ']' closes mnt["))?;
    if inside.is_empty() {
        return Ok(ExternalArg::Auto);
    }
    let value = value
        .strip_prefix(':')
        .filter(|v| !v.is_empty())
        .ok_or_else(|| format!("{text}: mnt[{inside}] names no key or path (mnt[A]:B)"))?;
    Ok(ExternalArg::Mount(inside.to_owned(), value.to_owned()))
}

/// `--ext-mount-map A:B` or `auto`.
fn parse_ext_mount_map(text: &str) -> Result<ExternalArg, String> {
    if text == "auto" {
        return Ok(ExternalArg::Auto);
    }
    match text.split_once(':') {
        Some((a, b)) if !a.is_empty() && !b.is_empty() => {
            Ok(ExternalArg::Mount(a.to_owned(), b.to_owned()))
        }
        _ => Err(format!("{text}: not A:B nor auto")),
    }
}

impl CriuArgs {
    /// Checks `--cgroup-yard` names a directory: a relative path is taken from `work_dir`
    /// (the image directory), as CRIU, which changes into its work directory first.
    pub fn check_yard(&self, work_dir: Option<&std::path::Path>) -> anyhow::Result<()> {
        let Some(yard) = &self.cgroup_yard else {
            return Ok(());
        };
        let path = match work_dir {
            Some(dir) if yard.is_relative() => dir.join(yard),
            _ => yard.clone(),
        };
        match std::fs::metadata(&path) {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => anyhow::bail!("--cgroup-yard {}: not a directory", path.display()),
            Err(e) => anyhow::bail!("--cgroup-yard {}: {e}", path.display()),
        }
    }

    /// Sets what these flags change in a dump.
    pub fn apply_to_dump(&self, opts: &mut cryo_core::DumpOptions) {
        opts.ghost_limit = self.ghost_limit;
        opts.cgroup_roots = self.cgroup_root.clone();
        opts.external_mounts = self
            .external_mounts()
            .map(|(point, key)| cryo_core::ExternalMount {
                point: point.clone(),
                key: key.clone(),
            })
            .collect();
    }

    /// Sets what these flags change in a restore.
    pub fn apply_to_restore(&self, opts: &mut cryo_core::RestoreOptions) {
        opts.cgroups = self.manage_cgroups.unwrap_or_default();
        opts.cgroup_roots = self.cgroup_root.clone();
        opts.external = cryo_core::ExternalPaths {
            mounts: self
                .external_mounts()
                .map(|(key, path)| (key.clone(), PathBuf::from(path)))
                .collect(),
            root: self.root.clone(),
        };
        opts.external_links = self
            .external
            .iter()
            .filter_map(|e| match e {
                ExternalArg::Link(peer) => Some(peer.clone()),
                _ => None,
            })
            .collect();
    }

    /// The (A, B) of every `--external mnt[A]:B` and `--ext-mount-map A:B`.
    fn external_mounts(&self) -> impl Iterator<Item = (&String, &String)> {
        self.external
            .iter()
            .chain(&self.ext_mount_map)
            .filter_map(|e| match e {
                ExternalArg::Mount(a, b) => Some((a, b)),
                ExternalArg::Auto | ExternalArg::Link(_) => None,
            })
    }
}

/// `8M`, `1G`, `4096`, `16K` (powers of 1024, as CRIU's `--ghost-limit`).
fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let bad = || format!("{text:?} is not a size (bytes, or a number with K, M or G)");
    let (digits, shift) = match text.char_indices().last().ok_or_else(bad)? {
        (at, 'k' | 'K') => (&text[..at], 10),
        (at, 'm' | 'M') => (&text[..at], 20),
        (at, 'g' | 'G') => (&text[..at], 30),
        _ => (text, 0),
    };
    let n: u64 = digits.parse().map_err(|_| bad())?;
    n.checked_mul(1 << shift).ok_or_else(bad)
}

/// CRIU's `--manage-cgroups` modes that cryo has.
fn parse_cgroup_mode(text: &str) -> Result<CgroupMode, String> {
    match text {
        "soft" => Ok(CgroupMode::Soft),
        "full" => Ok(CgroupMode::Full),
        "strict" => Ok(CgroupMode::Strict),
        "none" => Ok(CgroupMode::None),
        "ignore" => Ok(CgroupMode::Ignore),
        "props" => Err(
            "props (settings written, no cgroup joined) is not supported: \
                        soft, full, strict, none or ignore"
                .into(),
        ),
        _ => Err(format!(
            "{text:?} is not a mode: soft, full, strict, none or ignore"
        )),
    }
}

/// `--network-lock`: cryo's lock is an nftables table. CRIU's `iptables` (rules dropping each
/// connection's packets) is taken for it: the same packets are dropped, at the same hooks, by
/// a table of its own (a drop in any table is final), so a script written for CRIU gets what
/// it asked for; the rules are listed by `nft list ruleset`, not `iptables -L`. No lock at all
/// (`skip`) would be another behaviour: refused.
fn parse_network_lock(text: &str) -> Result<String, String> {
    match text {
        "nftables" | "iptables" => Ok("nftables".to_owned()),
        "skip" => Err(format!(
            "{text}: not supported: cryo always locks the connections it dumps"
        )),
        _ => Err(format!(
            "{text:?} is not a network lock method (nftables, or iptables: the same lock)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn criu_network_lock_methods_are_the_nftables_lock_or_refused() {
        assert_eq!(parse_network_lock("nftables"), Ok("nftables".into()));
        assert_eq!(parse_network_lock("iptables"), Ok("nftables".into()));
        assert!(parse_network_lock("skip")
            .unwrap_err()
            .contains("always locks"));
        assert!(parse_network_lock("ebtables").is_err());
    }

    #[test]
    fn externals_read_as_criu_writes_them() {
        let m = |a: &str, b: &str| Ok(ExternalArg::Mount(a.into(), b.into()));
        assert_eq!(parse_external("mnt[/dev]:ZDTM_DEV"), m("/dev", "ZDTM_DEV"));
        assert_eq!(
            parse_external("mnt[ZDTM_DEV]:/a/b:c"),
            m("ZDTM_DEV", "/a/b:c")
        );
        assert_eq!(parse_external("mnt[]"), Ok(ExternalArg::Auto));
        assert_eq!(parse_external("mnt[]:s"), Ok(ExternalArg::Auto));
        assert_eq!(parse_ext_mount_map("auto"), Ok(ExternalArg::Auto));
        assert_eq!(parse_ext_mount_map("/mnt:K"), m("/mnt", "K"));
        let veth = |outer: &str, bridge: Option<&str>| {
            Ok(ExternalArg::Link(cryo_core::ExternalLink {
                inner: "eth0".into(),
                outer: outer.into(),
                bridge: bridge.map(Into::into),
            }))
        };
        assert_eq!(
            parse_external("veth[eth0]:vh0@br0"),
            veth("vh0", Some("br0"))
        );
        assert_eq!(parse_external("veth[eth0]:vh0"), veth("vh0", None));
        assert_eq!(parse_external("macvlan[eth0]:vh0"), veth("vh0", None));
        for bad in [
            "veth[a]",
            "veth[]:b",
            "veth[a]:b@",
            "macvlan[a]:b@c",
            "tun[x]",
            "mnt[/x]",
            "mnt[/x]:",
            "mnt[/x",
            "unix[1]",
        ] {
            assert!(parse_external(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn a_relative_cgroup_yard_is_taken_from_the_image_directory() {
        use clap::Parser;
        #[derive(Parser)]
        struct Probe {
            #[command(flatten)]
            criu: CriuArgs,
        }
        let yard = |path: &str| Probe::try_parse_from(["p", "--cgroup-yard", path]).unwrap();
        let work = std::env::temp_dir();
        let work = work.as_path();
        assert!(yard("..").criu.check_yard(Some(work)).is_ok());
        assert!(yard("/").criu.check_yard(Some(work)).is_ok());
        let err = yard("/proc/self/exe").criu.check_yard(None).unwrap_err();
        assert!(err.to_string().contains("not a directory"), "{err}");
        let err = yard("no-such-yard")
            .criu
            .check_yard(Some(work))
            .unwrap_err();
        assert!(err.to_string().contains("no-such-yard"), "{err}");
    }

    #[test]
    fn sizes_read_as_criu_reads_them() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("16K"), Ok(16 << 10));
        assert_eq!(parse_size("8M"), Ok(8 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        for bad in ["", "M", "1T", "-1", "x8M", "99999999999999G"] {
            assert!(parse_size(bad).is_err(), "{bad:?} accepted");
        }
    }
}
