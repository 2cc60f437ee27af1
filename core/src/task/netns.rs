//! The network namespace of a task when it is not cryo's: one with loopback only (a sandbox's:
//! `unshare -n`, PrivateNetwork=yes, bwrap --unshare-net) is made again in a new one; anything
//! else of it is refused, by name.
//!
//! ```text
//! dump     once per namespace, the processes frozen:
//!          refused: a process outside the dump in it (every thread of every process)
//!          read by a short-lived thread of cryo that joins it (setns): what it shows over
//!          netlink (cryo_netns::state::observe) and its sysctls (/proc/sys/net)
//!          refused: an interface other than lo (or the fallback ones every fresh namespace
//!          of this kernel has), an nftables or iptables table
//!          a replica: a short-lived thread unshares a fresh namespace, reads its sysctls,
//!          writes the ones that differ, makes lo again as dumped (MTU, up, addresses),
//!          then shows the same? each object (route, rule, neighbour, nexthop, qdisc, xfrm
//!          state or policy, address, lo's flags) and each sysctl compared: a difference
//!          is refused, naming it (a sysctl that cannot be written too)
//! restore  the topmost process of the dump in it, before its fds and its children:
//!          unshare(CLONE_NEWNET), the same steps as the replica's; its children inherit it;
//!          a process back in cryo's below a parent in another joins (setns) the namespace of
//!          the process the roots were forked from (cryo, or the `--netns` init)
//! ```

use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};

use cryo_netns::conntrack;
use cryo_netns::firewall::{self, Firewall};
use cryo_netns::ruleset::{self, Kind};
use cryo_netns::state::{self, Address, Loopback, Observed, Route};
use cryo_netns::xtables::{LegacyFamily, LegacyTable};
use cryo_netns::NetnsError;
use cryo_proto::image::{
    ConntrackEntry, NetAddress, NetNamespace, NetRoute, NetSysctl, NftObject, TaskCore, XtTable,
};
use nix::sched::CloneFlags;
use nix::unistd::Pid;

use crate::restore::error::{ChildError, ChildStep};
use crate::restore::load::TaskImage;

/// Why the network namespace of a process cannot come back.
#[derive(Debug, thiserror::Error)]
pub enum NetNamespaceError {
    /// Something of the namespace is not made again.
    #[error("pid {pid}: its network namespace (net:[{inode}]) {detail}")]
    Refused {
        /// The process.
        pid: Pid,
        /// The namespace's inode.
        inode: u64,
        /// What is not made again, and why.
        detail: String,
    },
    /// The namespace could not be read (or a fresh one made to compare).
    #[error("pid {pid}: its network namespace (net:[{inode}]): {step}: {source}")]
    Read {
        /// The process.
        pid: Pid,
        /// The namespace's inode.
        inode: u64,
        /// The step.
        step: &'static str,
        /// The failure.
        source: NetnsError,
    },
}

/// What a namespace shows: its objects, its sysctls and its firewall.
type Shown = (Observed, Vec<(String, String)>, Firewall);

fn observe_all() -> Result<Shown, NetnsError> {
    Ok((state::observe()?, state::sysctls()?, firewall::capture()?))
}

/// Sysctls that follow from what is made again, not written: the number of tracked
/// connections (the conntrack entries made again count themselves).
const FOLLOWING_SYSCTLS: [&str; 1] = ["net/netfilter/nf_conntrack_count"];

/// Writes `differing` into the calling thread's namespace, a fresh one, in order, then
/// whatever still reads otherwise than `theirs` says, appended to `differing` (the restore
/// writes the list in the same order): a value written to `conf/all` (or `default`) is
/// written to every device's too (disable_ipv6, forwarding), so a device's own value set
/// after it, though a fresh namespace's, has to be written again after it.
fn write_sysctls(
    theirs: &[(String, String)],
    differing: &mut Vec<(String, String)>,
) -> Result<(), NetnsError> {
    let mut written = 0;
    for _ in 0..4 {
        for (name, value) in &differing[written..] {
            state::write_sysctl(name, value)?;
        }
        written = differing.len();
        let now = state::sysctls()?;
        let again: Vec<_> = theirs
            .iter()
            .filter(|(name, value)| {
                !FOLLOWING_SYSCTLS.contains(&name.as_str())
                    && now.iter().any(|(n, v)| n == name && v != value)
            })
            .cloned()
            .collect();
        if again.is_empty() {
            break;
        }
        differing.extend(again);
    }
    Ok(())
}

/// `net/ipv4/ping_group_range` as sysctl(8) names it.
fn sysctl_name(path: &str) -> String {
    path.replace('/', ".")
}

/// Dumps network namespace `inode` of `pid` (frozen, as every process of `members`, the dump).
pub fn dump(pid: Pid, inode: u64, members: &[Pid]) -> Result<NetNamespace, NetNamespaceError> {
    let refuse = |detail: String| NetNamespaceError::Refused { pid, inode, detail };
    let failed = |step| {
        move |source| NetNamespaceError::Read {
            pid,
            inode,
            step,
            source,
        }
    };
    let io = |e: std::io::Error| NetnsError::Read {
        path: crate::proc::dir(pid).join("ns/net"),
        error: e,
    };
    if let Some(other) = crate::proc::outsider_in_namespace("net", inode, members) {
        return Err(refuse(format!(
            "is shared with pid {other}, which is not in the dump: the restored processes would \
             be in a new namespace without it"
        )));
    }
    let ns = File::open(crate::proc::dir(pid).join("ns/net"))
        .map_err(io)
        .map_err(failed("open it"))?;
    let (theirs, their_sysctls, their_firewall) =
        crate::sys::ns::run_in(&ns, CloneFlags::CLONE_NEWNET, observe_all)
            .map_err(io)
            .and_then(|r| r)
            .map_err(|e| match e {
                NetnsError::Unrestorable { what, why } => {
                    refuse(format!("has {what}, which cannot be made again: {why}"))
                }
                other => failed("read it (setns)")(other),
            })?;
    let Some(lo) = theirs.loopback.clone() else {
        return Err(refuse("has no loopback interface".into()));
    };
    // The replica: a fresh namespace made as a restore would make it.
    let replica = crate::sys::ns::run_in_new(CloneFlags::CLONE_NEWNET, || {
        let (fresh, fresh_sysctls, _) = observe_all()?;
        let mut differing = Vec::new();
        let mut missing = None;
        for (name, value) in &their_sysctls {
            match fresh_sysctls.iter().find(|(n, _)| n == name) {
                Some((_, v)) if v == value => {}
                Some(_) if FOLLOWING_SYSCTLS.contains(&name.as_str()) => {}
                Some(_) => differing.push((name.clone(), value.clone())),
                // One a fresh namespace refuses to read until it is set (stable_secret).
                None if Path::new("/proc/sys").join(name).exists() => {
                    differing.push((name.clone(), value.clone()))
                }
                None => {
                    missing.get_or_insert_with(|| name.clone());
                }
            }
        }
        let made = state::make_loopback_with(&lo, || write_sysctls(&their_sysctls, &mut differing))
            .and_then(|()| firewall::restore(&their_firewall));
        let after = observe_all()?;
        Ok::<_, NetnsError>((fresh, differing, missing, made, after))
    })
    .map_err(io)
    .and_then(|r| r)
    .map_err(failed("make a fresh one to compare"))?;
    let (fresh, differing, missing, made, (again, again_sysctls, again_firewall)) = replica;
    if let Some((name, kind)) = theirs
        .other_links
        .iter()
        .find(|l| !fresh.other_links.contains(l))
    {
        return Err(refuse(format!(
            "holds network interface {name} ({kind}): only lo is made again"
        )));
    }
    // Tables of kinds the firewall does not make again (arptables, ebtables).
    if let Some(table) = theirs.tables.iter().find(|t| !again.tables.contains(t)) {
        return Err(refuse(format!(
            "holds {table}, which a namespace made again would not have"
        )));
    }
    if let Some(name) = missing {
        return Err(refuse(format!(
            "has sysctl {}, which a fresh namespace has not",
            sysctl_name(&name)
        )));
    }
    if let Err(e) = made {
        let detail = match &e {
            NetnsError::Write { path, error } => format!(
                "sets sysctl {} ({}), which cannot be written: {error}",
                sysctl_name(
                    &path
                        .strip_prefix("/proc/sys")
                        .unwrap_or(path)
                        .to_string_lossy()
                ),
                their_sysctls
                    .iter()
                    .find(|(n, _)| path.ends_with(n))
                    .map_or("", |(_, v)| v.as_str())
            ),
            other => format!("cannot be made again: {other}"),
        };
        return Err(refuse(detail));
    }
    for ((name, value), (_, made)) in their_sysctls.iter().zip(&again_sysctls) {
        if value != made {
            return Err(refuse(format!(
                "reads sysctl {} as {value:?}, a namespace made again would read {made:?}",
                sysctl_name(name)
            )));
        }
    }
    if their_sysctls.len() != again_sysctls.len() {
        return Err(refuse(
            "shows other sysctls than a namespace made again would".into(),
        ));
    }
    if let Some(o) = theirs.objects.iter().find(|o| !again.objects.contains(o)) {
        return Err(refuse(format!(
            "has {o}, which a namespace made again would not have (not restored)"
        )));
    }
    if let Some(o) = again.objects.iter().find(|o| !theirs.objects.contains(o)) {
        return Err(refuse(format!(
            "lacks {o}, which a namespace made again would have"
        )));
    }
    if let Some(difference) = firewall::first_difference(&their_firewall, &again_firewall) {
        return Err(refuse(format!(
            "has a firewall that cannot be made again: {difference}"
        )));
    }
    if theirs.objects != again.objects {
        return Err(refuse(
            "lists its addresses or routes in another order than a namespace made again would"
                .into(),
        ));
    }
    Ok(NetNamespace {
        inode,
        lo_up: lo.up,
        lo_mtu: lo.mtu,
        lo_addresses: lo.addresses.iter().map(address_record).collect(),
        sysctls: differing
            .into_iter()
            .map(|(name, value)| NetSysctl { name, value })
            .collect(),
        nft: their_firewall
            .nft
            .iter()
            .map(|i| NftObject {
                kind: i.kind.code(),
                family: i.family.into(),
                attrs: i.attrs.clone(),
            })
            .collect(),
        routes: lo
            .routes
            .iter()
            .map(|r| NetRoute {
                header: r.header.clone(),
                attrs: r.attrs.clone(),
            })
            .collect(),
        xt_tables: their_firewall.legacy.iter().map(xt_record).collect(),
        conntrack: their_firewall
            .conntrack
            .iter()
            .map(|e| ConntrackEntry {
                family: e.family.into(),
                payload: e.payload.clone(),
            })
            .collect(),
    })
}

fn xt_record(t: &LegacyTable) -> XtTable {
    XtTable {
        family: match t.family {
            LegacyFamily::Ipv4 => 4,
            LegacyFamily::Ipv6 => 6,
        },
        name: t.name.clone(),
        valid_hooks: t.valid_hooks,
        hook_entry: t.hook_entry.to_vec(),
        underflow: t.underflow.to_vec(),
        num_entries: t.num_entries,
        entries: t.entries.clone(),
        counters: t.counters.iter().flat_map(|(p, b)| [*p, *b]).collect(),
    }
}

/// The firewall an image describes; an image value out of range is an error naming it.
fn firewall_of(ns: &NetNamespace) -> Result<Firewall, String> {
    let nft = ns
        .nft
        .iter()
        .map(|o| {
            Ok(ruleset::Item {
                kind: Kind::from_code(o.kind).ok_or(format!("nftables object kind {}", o.kind))?,
                family: u8::try_from(o.family)
                    .map_err(|_| format!("nftables family {}", o.family))?,
                attrs: o.attrs.clone(),
            })
        })
        .collect::<Result<_, String>>()?;
    let legacy = ns
        .xt_tables
        .iter()
        .map(|t| {
            let five = |v: &[u32], what: &str| {
                <[u32; 5]>::try_from(v).map_err(|_| format!("{what} of legacy table {}", t.name))
            };
            if t.counters.len() % 2 != 0 {
                return Err(format!("counters of legacy table {}", t.name));
            }
            Ok(LegacyTable {
                family: match t.family {
                    4 => LegacyFamily::Ipv4,
                    6 => LegacyFamily::Ipv6,
                    f => return Err(format!("legacy table family {f}")),
                },
                name: t.name.clone(),
                valid_hooks: t.valid_hooks,
                hook_entry: five(&t.hook_entry, "hook entries")?,
                underflow: five(&t.underflow, "underflows")?,
                num_entries: t.num_entries,
                entries: t.entries.clone(),
                counters: t.counters.chunks(2).map(|c| (c[0], c[1])).collect(),
            })
        })
        .collect::<Result<_, String>>()?;
    let conntrack = ns
        .conntrack
        .iter()
        .map(|e| {
            Ok(conntrack::Entry {
                family: u8::try_from(e.family)
                    .map_err(|_| format!("conntrack family {}", e.family))?,
                payload: e.payload.clone(),
            })
        })
        .collect::<Result<_, String>>()?;
    Ok(Firewall {
        nft,
        legacy,
        conntrack,
    })
}

fn address_record(a: &Address) -> NetAddress {
    NetAddress {
        family: a.family.into(),
        prefix_len: a.prefix_len.into(),
        flags: a.flags,
        scope: a.scope.into(),
        local: a.local.clone(),
        address: a.address.clone(),
        broadcast: a.broadcast.clone(),
        label: a.label.clone(),
    }
}

/// Loopback as the image describes it.
fn loopback(ns: &NetNamespace) -> Loopback {
    Loopback {
        up: ns.lo_up,
        mtu: ns.lo_mtu,
        addresses: ns
            .lo_addresses
            .iter()
            .map(|a| Address {
                family: a.family as u8,
                prefix_len: a.prefix_len as u8,
                flags: a.flags,
                scope: a.scope as u8,
                local: a.local.clone(),
                address: a.address.clone(),
                broadcast: a.broadcast.clone(),
                label: a.label.clone(),
            })
            .collect(),
        routes: ns
            .routes
            .iter()
            .map(|r| Route {
                line: state::route_line(&r.header, &r.attrs),
                header: r.header.clone(),
                attrs: r.attrs.clone(),
            })
            .collect(),
    }
}

/// The pid (in cryo's /proc) of a process that stays, for the whole restore, in the network
/// namespace the roots are forked into ("cryo's" for the tree: cryo's own, or the `--netns`
/// one's init); 0 when none does (a tree's own PID namespace restored with `--netns`). A
/// process back in it below a parent in another joins it again.
static OUTER: AtomicI32 = AtomicI32::new(0);

/// The calling process (cryo, or the `--netns` init before it forks the root) stays in the
/// network namespace the roots are forked into.
pub(crate) fn outer_is_here() {
    let here = std::fs::read_link("/proc/self")
        .ok()
        .and_then(|p| p.to_str()?.parse().ok())
        .unwrap_or(0);
    OUTER.store(here, Ordering::Relaxed);
}

/// No process stays in the namespace the root was forked into (it is the only one there).
pub(crate) fn outer_unknown() {
    OUTER.store(0, Ordering::Relaxed);
}

/// In a forked process of the restore, before its fds and children: a new network namespace
/// made as dumped, where its process was in one other than its parent's (`parent`: the
/// parent's core, None for a root); back in the roots' one where it was in cryo's below a
/// parent in another.
pub fn restore_in_child(core: &TaskCore, parent: Option<&TaskCore>) -> Result<(), ChildError> {
    let parent_ns = parent.and_then(|p| p.netns.as_ref());
    let Some(ns) = &core.netns else {
        if parent_ns.is_some() {
            let outer = OUTER.load(Ordering::Relaxed);
            let path = format!("/proc/{outer}/ns/net");
            let back = || -> std::io::Result<()> {
                if outer == 0 {
                    return Err(std::io::Error::from_raw_os_error(libc::ENOENT));
                }
                let ns = File::open(&path)?;
                nix::sched::setns(ns, CloneFlags::CLONE_NEWNET)?;
                Ok(())
            };
            back().map_err(ChildError::sys_on(ChildStep::NetNamespace, path.clone()))?;
        }
        return Ok(());
    };
    if parent_ns.map(|n| n.inode) == Some(ns.inode) {
        return Ok(());
    }
    nix::sched::unshare(CloneFlags::CLONE_NEWNET)
        .map_err(ChildError::sys(ChildStep::NetNamespace))?;
    let sysctls: Vec<(String, String)> = ns
        .sysctls
        .iter()
        .map(|s| (s.name.clone(), s.value.clone()))
        .collect();
    state::make_loopback(&loopback(ns), &sysctls).map_err(|e| ChildError::SysOn {
        step: ChildStep::NetNamespace,
        object: e.to_string(),
        errno: e.errno() as i32,
    })
}

/// Once every process of the restore has made its sockets and refilled their queues (a
/// datagram put back goes through the namespace's hooks: counted, or dropped by a rule), the
/// firewall of each network namespace made again, by a thread of cryo that joins it through
/// the topmost process in it (`tasks` and `pids`: the plan's tasks and their pids). What the
/// kernel made is read back and compared: the dump's replica showed the same, this host may
/// not. Until then the namespace has no rule: only the kernel's own segments (a
/// retransmission) can pass, untracked and uncounted, as after the restore.
pub(crate) fn make_firewalls(tasks: &[TaskImage], pids: &[Pid]) -> Result<(), NetNamespaceError> {
    for (i, task) in tasks.iter().enumerate() {
        let Some(ns) = &task.core.netns else { continue };
        let parent_ns = task.parent_core(tasks).and_then(|p| p.netns.as_ref());
        if parent_ns.map(|n| n.inode) == Some(ns.inode) {
            continue;
        }
        let pid = pids[i];
        let refuse = |detail: String| NetNamespaceError::Refused {
            pid,
            inode: ns.inode,
            detail,
        };
        let wanted = firewall_of(ns)
            .map_err(|what| refuse(format!("has a firewall the image describes wrong: {what}")))?;
        if wanted.is_empty() {
            continue;
        }
        let path = crate::proc::dir(pid).join("ns/net");
        let made = File::open(&path)
            .and_then(|handle| {
                crate::sys::ns::run_in(&handle, CloneFlags::CLONE_NEWNET, || {
                    firewall::restore(&wanted)?;
                    firewall::capture()
                })
            })
            .map_err(|error| NetNamespaceError::Read {
                pid,
                inode: ns.inode,
                step: "join it to make its firewall",
                source: NetnsError::Read {
                    path: path.clone(),
                    error,
                },
            })?
            .map_err(|source| NetNamespaceError::Read {
                pid,
                inode: ns.inode,
                step: "make its firewall",
                source,
            })?;
        if let Some(difference) = firewall::first_difference(&wanted, &made) {
            return Err(refuse(format!(
                "has a firewall this host made otherwise: {difference}"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_goes_through_the_image_unchanged() {
        let a = Address {
            family: libc::AF_INET as u8,
            prefix_len: 32,
            flags: 0x80,
            scope: 254,
            local: vec![10, 9, 9, 9],
            address: vec![10, 9, 9, 9],
            broadcast: Vec::new(),
            label: "lo".into(),
        };
        let ns = NetNamespace {
            inode: 1,
            lo_up: true,
            lo_mtu: 65536,
            lo_addresses: vec![address_record(&a)],
            sysctls: Vec::new(),
            ..Default::default()
        };
        assert_eq!(loopback(&ns).addresses, [a]);
        assert_eq!(
            sysctl_name("net/ipv4/ping_group_range"),
            "net.ipv4.ping_group_range"
        );
    }
}
