//! The network namespace of a task when it is not cryo's: a sandbox's (`unshare -n`,
//! PrivateNetwork=yes, bwrap --unshare-net) or a container's, its interfaces virtual ones
//! (bridge, veth, macvlan, ifb; a veth's peer in it or in cryo's namespace:
//! the host side of a container's link), is made again in a new one; anything else of it is
//! refused, by name.
//!
//! ```text
//! dump     once per namespace, the processes frozen:
//!          refused: a process outside the dump in it (every thread of every process)
//!          read by a short-lived thread of cryo that joins it (setns): what it shows over
//!          netlink (cryo_netns::state::observe), its sysctls (/proc/sys/net), and the
//!          number it gives cryo's namespace; the peer of a veth end in cryo's namespace
//!          read there (name, index, address, state, bridge)
//!          refused: an interface of another kind (or not one every fresh namespace of this
//!          kernel has), one over a link of another namespace but a veth's peer in cryo's,
//!          an nftables or iptables table of a kind not made again
//!          a replica: a short-lived thread unshares a fresh namespace (and one more, a
//!          stand-in for cryo's, where veth peers go), makes the links again as dumped,
//!          reads its sysctls, writes the ones that differ, makes the addresses and
//!          routes, then shows the same? each object (link, route, rule, neighbour,
//!          nexthop, qdisc, xfrm state or policy, address) and each sysctl compared: a
//!          difference is refused, naming it (a sysctl that cannot be written too)
//! restore  the topmost process of the dump in it, before its fds and its children:
//!          unshare(CLONE_NEWNET) (from the roots' namespace when a veth's peer goes back
//!          there, with its bridge), the same steps as the replica's; its children inherit it;
//!          a process back in cryo's below a parent in another joins (setns) the namespace of
//!          the process the roots were forked from (cryo, or the `--netns` init)
//!          in a user namespace, with a link across it and the roots' (a veth's peer, a
//!          macvlan's link): made by the process's clone (CLONE_NEWNET), its interfaces by a
//!          thread of cryo that joins it before the process goes on (make_from_outside): the
//!          process's capabilities end at its user namespace; the replica made so too
//! ```

use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};

use cryo_netns::conntrack;
use cryo_netns::firewall::{self, Firewall};
use cryo_netns::link::{outer_peer, Link, OuterPeer, MADE_KINDS};
use cryo_netns::ruleset::{self, Kind};
use cryo_netns::state::{self, Address, Interfaces, Observed, OuterSide, Route};
use cryo_netns::xtables::{LegacyFamily, LegacyTable};
use cryo_netns::ConnTuple;
use cryo_netns::NetnsError;
use cryo_proto::image::{
    ConntrackEntry, NetAddress, NetLink, NetLinkPeer, NetNamespace, NetRoute, NetSysctl, NftObject,
    TaskCore, XtTable,
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
    /// `--external veth[INNER]:...` names no veth whose peer was outside.
    #[error(
        "--external veth[{inner}] or macvlan[{inner}]: the image has no veth or macvlan \
         {inner} whose peer or link was in the namespace the dump ran in"
    )]
    NoSuchExternalLink {
        /// The name given.
        inner: String,
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

/// Dumps network namespace `inode` of `pid` (frozen, as every process of `members`, the dump);
/// `lock_id` the dump's network lock, installed there too over its connections (no part of
/// its firewall).
pub fn dump(
    pid: Pid,
    inode: u64,
    members: &[Pid],
    lock_id: &str,
) -> Result<NetNamespace, NetNamespaceError> {
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
    let ours = File::open("/proc/thread-self/ns/net")
        .map_err(io)
        .map_err(failed("open cryo's"))?;
    let ((mut theirs, their_sysctls, mut their_firewall), ours_there) =
        crate::sys::ns::run_in(&ns, CloneFlags::CLONE_NEWNET, || {
            Ok((observe_all()?, state::nsid_of(ours.as_fd())?))
        })
        .map_err(io)
        .and_then(|r| r)
        .map_err(|e| match e {
            NetnsError::Unrestorable { what, why } => {
                refuse(format!("has {what}, which cannot be made again: {why}"))
            }
            other => failed("read it (setns)")(other),
        })?;
    // The dump's own lock there (sockets/lifecycle.rs) is no part of the namespace's.
    let lock_table = cryo_netns::table_name(lock_id);
    their_firewall.nft.retain(|item| item.table() != lock_table);
    let lock_listed = state::nft_table_listed("inet", &lock_table);
    theirs.tables.retain(|t| *t != lock_listed);
    theirs.objects.retain(|o| *o != lock_listed);
    if !theirs.interfaces.links.iter().any(|l| l.name == "lo") {
        return Err(refuse("has no loopback interface".into()));
    }
    let links = &theirs.interfaces.links;
    // A bridge's carrier is on from its creation until the kernel first chooses its ports'
    // states (br_port_state_selection): then it is on only while a port forwards. That choice
    // follows a new address (at creation too: IFLA_ADDRESS), a port leaving, the bridge's
    // ports going down; nothing turns the carrier of a bridge without a port on again. Its
    // address then is the random one the kernel gave it, which no request sets: made again
    // with it, the bridge would have no carrier (its IPv6 link-local address, routes and
    // operational state with it).
    if let Some(bridge) = links
        .iter()
        .find(|b| b.kind == "bridge" && b.carrier && !links.iter().any(|p| p.master == b.index))
    {
        let up = if bridge.flags & libc::IFF_UP as u32 != 0 {
            "up"
        } else {
            "down"
        };
        return Err(refuse(format!(
            "holds bridge {} ({up}), without a port and its carrier on, as a new bridge's \
             with the random address the kernel gave it: a bridge made again with its \
             address has its carrier off until a port forwards",
            bridge.name
        )));
    }
    theirs.interfaces.peers = outer_peers(&theirs.interfaces.links, ours_there)
        .map_err(|e| e.either(refuse, failed("read a veth's peer in cryo's")))?;
    let interfaces = theirs.interfaces.clone();
    // The replica: a fresh namespace made as a restore would make it.
    // Owned by another user namespace than cryo's, it is made again in one there: the
    // replica too (such a namespace hides some sysctls and makes others read-only).
    let in_user_ns = crate::sys::ns::owner_inode(&ns)
        .and_then(|owner| {
            Ok(owner != crate::task::namespaces::inode(Path::new("/proc/self/ns/user"))?)
        })
        .map_err(io)
        .map_err(failed("read its owner"))?;
    let fresh_ns = in_user_ns
        .then(|| crate::sys::ns::new_in_user_namespace(CloneFlags::CLONE_NEWNET, "net"))
        .transpose()
        .map_err(io)
        .map_err(failed("make a fresh one in a user namespace"))?;
    let replica_in = |stand_in: Option<OuterSide>| {
        let fresh = state::observe()?;
        let mut differing = Vec::new();
        let mut missing = None;
        let made = state::make_interfaces_with(&interfaces, stand_in.as_ref(), || {
            // The sysctls of a fresh namespace with these links, as the restore will have.
            let fresh_sysctls = state::sysctls()?;
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
            write_sysctls(&their_sysctls, &mut differing)
        })
        .and_then(|()| firewall::restore(&their_firewall));
        let after = observe_all()?;
        Ok::<_, NetnsError>((fresh, differing, missing, made, after))
    };
    // With links across it and cryo's, in a user namespace: made from outside, as the
    // restore makes it (make_from_outside), the stand-in for cryo's the thread's own.
    let replica = match fresh_ns {
        Some(fresh_ns) if !interfaces.peers.is_empty() => {
            crate::sys::ns::run_in_new(CloneFlags::CLONE_NEWNET, || {
                replica_in(Some(OuterSide::here_then_join(&fresh_ns, false)?))
            })
        }
        fresh_ns => crate::sys::ns::run_in_or_new(fresh_ns, CloneFlags::CLONE_NEWNET, || {
            let stand_in = if interfaces.peers.is_empty() {
                None
            } else {
                Some(OuterSide::here_then_unshare(false)?)
            };
            replica_in(stand_in)
        }),
    }
    .map_err(io)
    .and_then(|r| r)
    .map_err(failed("make a fresh one to compare"))?;
    let (fresh, differing, missing, made, (again, again_sysctls, again_firewall)) = replica;
    let in_every_fresh = |l: &Link| {
        fresh
            .interfaces
            .links
            .iter()
            .any(|f| (f.index, &f.name, &f.kind) == (l.index, &l.name, &l.kind))
    };
    if let Some(link) = theirs
        .interfaces
        .links
        .iter()
        .find(|l| !in_every_fresh(l) && !MADE_KINDS.contains(&l.kind.as_str()))
    {
        let kind = if link.kind.is_empty() {
            "a device"
        } else {
            &link.kind
        };
        return Err(refuse(format!(
            "holds network interface {} ({kind}): only those of kinds {} are made again",
            link.name,
            MADE_KINDS.join(", ")
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
    if let Some((theirs, again)) = in_kernel_order(&theirs.objects)
        .iter()
        .zip(&in_kernel_order(&again.objects))
        .find(|(t, a)| t != a)
    {
        return Err(refuse(format!(
            "lists its objects in another order than a namespace made again would: {theirs} \
             where that would list {again}"
        )));
    }
    Ok(NetNamespace {
        inode,
        handles: handles_of(inode)
            .map_err(io)
            .map_err(failed("find its nsfs mounts"))?,
        links: theirs
            .interfaces
            .links
            .iter()
            .map(|l| link_record(l, &theirs.interfaces.peers))
            .collect(),
        addresses: theirs
            .interfaces
            .addresses
            .iter()
            .map(address_record)
            .collect(),
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
        routes: theirs
            .interfaces
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

/// `objects` with each run of routes to one destination in one table over several links
/// sorted: the kernel lists them in the order it made them, which is a race between its
/// workers (a link's link-local and multicast routes when its carrier comes on, which a
/// bridge's does from its port's; a local route when duplicate detection ends, after a
/// random delay). The restore brings links up in the order they became ready, which most
/// often gives the same order, but does not promise it.
fn in_kernel_order(objects: &[String]) -> Vec<String> {
    let key = |o: &String| {
        o.starts_with("route ")
            .then(|| o.split(" tos ").next().unwrap_or(o).to_string())
    };
    let mut out: Vec<String> = Vec::with_capacity(objects.len());
    let mut run_start = 0;
    for (i, o) in objects.iter().enumerate() {
        if i > 0 && (key(o).is_none() || key(o) != key(&objects[i - 1])) {
            out[run_start..].sort();
            run_start = i;
        }
        out.push(o.clone());
    }
    out[run_start..].sort();
    out
}

/// Why a veth's peer outside cannot be recorded: the namespace is refused, or it could not
/// be read.
enum PeerError {
    Refused(String),
    Read(NetnsError),
}

impl PeerError {
    fn either<E>(self, refused: impl FnOnce(String) -> E, read: impl FnOnce(NetnsError) -> E) -> E {
        match self {
            PeerError::Refused(detail) => refused(detail),
            PeerError::Read(e) => read(e),
        }
    }
}

/// The peer, in cryo's namespace (which the dumped one numbers `ours_there`), of each veth
/// end of `links` whose peer is outside; a link over one of another namespace is refused.
fn outer_peers(
    links: &[Link],
    ours_there: Option<i32>,
) -> Result<Vec<(i32, OuterPeer)>, PeerError> {
    let mut peers = Vec::new();
    // cryo's links, read once for all the links over one of them.
    let mut ours: Option<Vec<Link>> = None;
    for link in links {
        let Some(nsid) = link.link_netnsid else {
            continue;
        };
        if !["veth", "macvlan"].contains(&link.kind.as_str()) || Some(nsid) != ours_there {
            let whose = if Some(nsid) == ours_there {
                ", cryo's"
            } else {
                ""
            };
            return Err(PeerError::Refused(format!(
                "holds network interface {} ({}), over link {} of another network namespace \
                 (nsid {nsid}){whose}: only a veth's peer and a macvlan's link in cryo's are \
                 made again",
                link.name, link.kind, link.link,
            )));
        }
        let ours = match &mut ours {
            Some(read) => read,
            empty => empty.insert(state::links().map_err(PeerError::Read)?),
        };
        let peer = outer_peer(ours, link.link).ok_or_else(|| {
            PeerError::Refused(format!(
                "holds {} {}, whose link (index {}) is not in cryo's namespace",
                link.kind, link.name, link.link
            ))
        })?;
        peers.push((link.index, peer));
    }
    Ok(peers)
}

fn link_record(l: &Link, peers: &[(i32, OuterPeer)]) -> NetLink {
    NetLink {
        index: l.index,
        name: l.name.clone(),
        kind: l.kind.clone(),
        flags: l.flags,
        mtu: l.mtu,
        create_attrs: l.create_attrs.clone(),
        alias: l.alias.clone(),
        info_data: l.info_data.clone(),
        master: l.master,
        port_data: l.port_data.clone(),
        link: l.link,
        link_outside: l.link_netnsid.is_some(),
        link_netnsid: l.link_netnsid.unwrap_or_default(),
        operstate: l.operstate.into(),
        outer_peer: peers
            .iter()
            .find(|(i, _)| *i == l.index)
            .map(|(_, p)| NetLinkPeer {
                name: p.name.clone(),
                index: p.index,
                create_attrs: p.create_attrs.clone(),
                flags: p.flags,
                master: p.master.clone(),
            }),
    }
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
        index: a.index,
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

/// The interfaces the image describes.
fn interfaces(ns: &NetNamespace) -> Interfaces {
    Interfaces {
        links: ns
            .links
            .iter()
            .map(|l| Link {
                index: l.index,
                name: l.name.clone(),
                kind: l.kind.clone(),
                flags: l.flags,
                mtu: l.mtu,
                create_attrs: l.create_attrs.clone(),
                alias: l.alias.clone(),
                info_data: l.info_data.clone(),
                master: l.master,
                port_data: l.port_data.clone(),
                link: l.link,
                link_netnsid: l.link_outside.then_some(l.link_netnsid),
                operstate: l.operstate as u8,
                carrier: false,
                line: String::new(),
            })
            .collect(),
        peers: ns
            .links
            .iter()
            .filter_map(|l| {
                let p = l.outer_peer.as_ref()?;
                Some((
                    l.index,
                    OuterPeer {
                        name: p.name.clone(),
                        index: p.index,
                        create_attrs: p.create_attrs.clone(),
                        flags: p.flags,
                        master: p.master.clone(),
                    },
                ))
            })
            .collect(),
        addresses: ns
            .addresses
            .iter()
            .map(|a| Address {
                // An image of before links were recorded has lo's only.
                index: if a.index == 0 { 1 } else { a.index },
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

/// CRIU's `--external veth[INNER]:OUTER[@BRIDGE]` at restore: the peer of veth INNER, which
/// was outside, comes back named OUTER, attached to BRIDGE (to no bridge without one), in
/// place of the name and bridge the dump saw; `macvlan[INNER]:OUTER`: macvlan INNER comes
/// back over link OUTER outside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalLink {
    /// The veth end or macvlan in the namespace.
    pub inner: String,
    /// Its peer's (or the macvlan's link's) name outside.
    pub outer: String,
    /// The bridge the peer is attached to.
    pub bridge: Option<String>,
}

/// Before a restore makes anything: the peers `peers` names given their names and bridges
/// in every task's network namespace; one that names no veth with its peer outside refused.
pub(crate) fn apply_external_links(
    tasks: &mut [TaskImage],
    peers: &[ExternalLink],
) -> Result<(), NetNamespaceError> {
    for wanted in peers {
        let mut found = false;
        for task in tasks.iter_mut() {
            let Some(ns) = task.core.netns.as_mut() else {
                continue;
            };
            for link in ns.links.iter_mut().filter(|l| l.name == wanted.inner) {
                if let Some(peer) = link.outer_peer.as_mut() {
                    peer.name = wanted.outer.clone();
                    peer.master = wanted.bridge.clone().unwrap_or_default();
                    found = true;
                }
            }
        }
        if !found {
            return Err(NetNamespaceError::NoSuchExternalLink {
                inner: wanted.inner.clone(),
            });
        }
    }
    Ok(())
}

/// What this host (cryo's network namespace) lacks for the links of `ns` that are over one
/// of it, as (temporary, subject, why): a veth's peer's name taken (temporary: the dumped
/// process may still run), the peer's bridge or a macvlan's link missing.
pub(crate) fn missing_here(ns: &NetNamespace) -> Result<Vec<(bool, String, String)>, NetnsError> {
    let here = state::links()?;
    let has = |name: &str| here.iter().any(|l| l.name == name);
    let mut missing = Vec::new();
    for link in &ns.links {
        let Some(outer) = &link.outer_peer else {
            continue;
        };
        if link.kind == "veth" {
            if has(&outer.name) {
                missing.push((
                    true,
                    outer.name.clone(),
                    format!(
                        "the peer of veth {} goes back here, and this host has a link of its name",
                        link.name
                    ),
                ));
            }
            if !outer.master.is_empty() && !has(&outer.master) {
                missing.push((
                    false,
                    outer.master.clone(),
                    format!(
                        "the peer of veth {} goes back on this bridge, which this host has not",
                        link.name
                    ),
                ));
            }
        } else if !has(&outer.name) {
            missing.push((
                false,
                outer.name.clone(),
                format!(
                    "{} {} is made over this link, which this host has not",
                    link.kind, link.name
                ),
            ));
        }
    }
    Ok(missing)
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

/// Moves the calling process into the network namespace the roots are forked into
/// ([`OUTER`]'s).
fn join_outer() -> Result<(), ChildError> {
    let outer = OUTER.load(Ordering::Relaxed);
    let path = format!("/proc/{outer}/ns/net");
    let join = || -> std::io::Result<()> {
        if outer == 0 {
            return Err(std::io::Error::from_raw_os_error(libc::ENOENT));
        }
        nix::sched::setns(File::open(&path)?, CloneFlags::CLONE_NEWNET)?;
        Ok(())
    };
    join().map_err(ChildError::sys_on(ChildStep::NetNamespace, path))
}

/// Sysctl `name`'s dumped `value` as the restored process writes it: ping_group_range holds
/// group ids, read by cryo in its own view and written by a process in a user namespace of
/// its own in that namespace's (an unmapped one as the overflow gid: the write then fails).
fn as_written_here(name: &str, value: &str) -> String {
    if name != "net/ipv4/ping_group_range" {
        return value.to_owned();
    }
    let ids = crate::task::userns::own_ids();
    value
        .split_whitespace()
        .map(|g| match g.parse::<u32>() {
            Ok(g) => ids
                .gid(g)
                .unwrap_or(crate::task::userns::OVERFLOW_ID)
                .to_string(),
            Err(_) => g.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\t")
}

/// Whether the network namespace of a process (`core`) below `parent` (None: a root) is made
/// by its clone (CLONE_NEWNET, with its user namespace when it starts one) and its interfaces
/// by cryo ([`make_from_outside`]) before it goes on: one other than its parent's, owned by
/// the user namespace the process is in (the dump refuses any other owner), with a link
/// across it and the namespace the roots are forked into (a veth's peer, a macvlan's link
/// there). The process could not make that link: its capabilities end at its user namespace,
/// and the link's other end is in a namespace the initial one owns.
pub(crate) fn made_by_clone(core: &TaskCore, parent: Option<&TaskCore>) -> bool {
    let Some(ns) = &core.netns else {
        return false;
    };
    core.userns.is_some()
        && parent.and_then(|p| p.netns.as_ref()).map(|n| n.inode) != Some(ns.inode)
        && ns.links.iter().any(|l| l.outer_peer.is_some())
}

/// Before a process whose clone made its network namespace ([`made_by_clone`]; `pid`, as cryo
/// sees it) goes on: its interfaces, sysctls, addresses and routes made by a thread of cryo
/// that joins it, as the dump's replica made them; the veth peers made and the macvlans'
/// links found in the namespace the roots are forked into: cryo's, or that of `outer` (the
/// init of `--netns`).
pub(crate) fn make_from_outside(
    core: &TaskCore,
    pid: Pid,
    outer: Option<Pid>,
) -> Result<(), NetNamespaceError> {
    let Some(ns) = &core.netns else {
        return Ok(());
    };
    let failed = |step| {
        move |source| NetNamespaceError::Read {
            pid,
            inode: ns.inode,
            step,
            source,
        }
    };
    let open = |p: Pid| {
        let path = crate::proc::dir(p).join("ns/net");
        File::open(&path).map_err(|error| NetnsError::Read { path, error })
    };
    let theirs = open(pid).map_err(failed("open it"))?;
    let roots = open(outer.unwrap_or_else(nix::unistd::getpid))
        .map_err(failed("open the one the roots are forked into"))?;
    let interfaces = interfaces(ns);
    // Written by cryo, as read at dump: in its own view (ping_group_range's groups).
    let sysctls: Vec<(String, String)> = ns
        .sysctls
        .iter()
        .map(|s| (s.name.clone(), s.value.clone()))
        .collect();
    crate::sys::ns::run_in(roots, CloneFlags::CLONE_NEWNET, || {
        let outer = OuterSide::here_then_join(&theirs, true)?;
        state::make_interfaces(&interfaces, Some(&outer), &sysctls)
    })
    .map_err(|error| NetnsError::Read {
        path: crate::proc::dir(pid).join("ns/net"),
        error,
    })
    .and_then(|made| made)
    .map_err(failed("make its interfaces from cryo's"))
}

/// In a forked process of the restore, before its fds and children: a new network namespace
/// made as dumped, where its process was in one other than its parent's (`parent`: the
/// parent's core, None for a root); back in the roots' one where it was in cryo's below a
/// parent in another.
/// `lock`: the dump's network lock id and the connections it holds; in the namespace made, a
/// lock of that id over them is installed before any socket is (see [`release_locks`]).
pub fn restore_in_child(
    core: &TaskCore,
    parent: Option<&TaskCore>,
    joined: Option<usize>,
    lock: (&str, &dyn Fn() -> Vec<ConnTuple>),
) -> Result<(), ChildError> {
    let parent_ns = parent.and_then(|p| p.netns.as_ref());
    let Some(ns) = &core.netns else {
        if parent_ns.is_some() {
            join_outer()?;
        }
        return Ok(());
    };
    if parent_ns.map(|n| n.inode) == Some(ns.inode) {
        return Ok(());
    }
    // Back in an ancestor's, made (and locked) by it: joined.
    if let Some(generations) = joined {
        let handle = crate::sockets::home::open_ancestors(generations).map_err(
            ChildError::sys_on(ChildStep::NetNamespace, "an ancestor's namespace"),
        )?;
        return nix::sched::setns(handle, CloneFlags::CLONE_NEWNET).map_err(|e| {
            ChildError::sys_on(ChildStep::NetNamespace, "join an ancestor's namespace")(e.into())
        });
    }
    let failed = |e: NetnsError| ChildError::SysOn {
        step: ChildStep::NetNamespace,
        object: e.to_string(),
        errno: e.errno() as i32,
    };
    // One its clone made has its interfaces from cryo already (make_from_outside).
    if !made_by_clone(core, parent) {
        let interfaces = interfaces(ns);
        let outer = if interfaces.peers.is_empty() {
            nix::sched::unshare(CloneFlags::CLONE_NEWNET)
                .map_err(ChildError::sys(ChildStep::NetNamespace))?;
            None
        } else {
            // The veth peers go back to the roots' namespace: made from a socket opened there.
            join_outer()?;
            Some(OuterSide::here_then_unshare(true).map_err(failed)?)
        };
        let sysctls: Vec<(String, String)> = ns
            .sysctls
            .iter()
            .map(|s| (s.name.clone(), as_written_here(&s.name, &s.value)))
            .collect();
        state::make_interfaces(&interfaces, outer.as_ref(), &sysctls).map_err(failed)?;
    }
    if !lock.0.is_empty() {
        // Its nf_tables tables before the lock's, which would take the first table handle
        // (the rest of its firewall comes once the sockets are made: make_firewalls).
        if let Ok(wanted) = firewall_of(ns) {
            ruleset::restore_tables(&wanted.nft).map_err(failed)?;
        }
    }
    hold_connections(lock)
}

/// In a network namespace the restore just made (a process's, or `--netns`'s), before any
/// socket: a network lock of id `lock.0` over the dump's connections `lock.1()`, as the dump's
/// holds them in cryo's. Connections with both ends in the namespace (a server and its clients
/// in one container) would otherwise talk as soon as one end leaves repair mode, before the
/// other exists: a segment to a port not bound yet is answered with a reset, which ends the
/// restored connection (zdtm socket-tcp-last-ack in the namespace flavour, one run in two).
/// Released by cryo with the dump's lock ([`release_locks`]); gone with the namespace if the
/// restore fails. Nothing without a lock (a dump without connections, --tcp-close).
pub(crate) fn hold_connections(
    lock: (&str, &dyn Fn() -> Vec<ConnTuple>),
) -> Result<(), ChildError> {
    let (id, tuples) = lock;
    if id.is_empty() {
        return Ok(());
    }
    cryo_netns::NetworkLock::install(id, &tuples())
        .map(|held| {
            held.keep();
        })
        .map_err(|e| ChildError::SysOn {
            step: ChildStep::NetNamespace,
            object: format!("install network lock {id} in the namespace made: {e}"),
            errno: e.errno().map_or(libc::EIO, |n| n as i32),
        })
}

/// Releases lock `id` in every network namespace the restore made ([`hold_connections`]):
/// each process's not in its parent's (`tasks` and `pids`: the plan's tasks and their pids),
/// and `root`'s (`--netns`), by a thread of cryo that joins it.
pub(crate) fn release_locks(
    tasks: &[TaskImage],
    pids: &[Pid],
    root: Option<Pid>,
    id: &str,
) -> Result<(), NetNamespaceError> {
    if id.is_empty() {
        return Ok(());
    }
    let made = made_namespaces(tasks, pids).map(|(pid, ns)| (pid, ns.inode));
    for (pid, inode) in made.chain(root.map(|p| (p, 0))) {
        let path = crate::proc::dir(pid).join("ns/net");
        File::open(&path)
            .and_then(|handle| {
                crate::sys::ns::run_in(&handle, CloneFlags::CLONE_NEWNET, || {
                    cryo_netns::NetworkLock::release_by_id(id)
                        .map_err(|e| std::io::Error::other(e.to_string()))
                })
            })
            .and_then(|released| released)
            .map_err(|error| NetNamespaceError::Read {
                pid,
                inode,
                step: "release the network lock in it",
                source: NetnsError::Read {
                    path: path.clone(),
                    error,
                },
            })?;
    }
    Ok(())
}

/// Each network namespace the restore made, with the pid of the process that made it (one
/// not in its parent's nor back in an ancestor's; `tasks` and `pids`: the plan's tasks and
/// their pids).
fn made_namespaces<'a>(
    tasks: &'a [TaskImage],
    pids: &'a [Pid],
) -> impl Iterator<Item = (Pid, &'a NetNamespace)> + 'a {
    tasks
        .iter()
        .zip(pids)
        .enumerate()
        .filter_map(|(i, (task, &pid))| {
            let ns = task.core.netns.as_ref()?;
            let parent_ns = task.parent_core(tasks).and_then(|p| p.netns.as_ref());
            (parent_ns.map(|n| n.inode) != Some(ns.inode) && joined_ancestor(tasks, i).is_none())
                .then_some((pid, ns))
        })
}

/// How many generations up (more than one) is the ancestor of task `i` (of `tasks`) whose
/// network namespace it is back in, below a parent in another (zdtm netns_sub): it joins that
/// one instead of making one.
pub(crate) fn joined_ancestor(tasks: &[TaskImage], i: usize) -> Option<usize> {
    let ns = tasks[i].core.netns.as_ref()?.inode;
    ancestor_generations(tasks, crate::restore::load::forked_by(&tasks[i].entry), ns)
        .filter(|&generations| generations > 1)
}

/// How many generations up from the child of `forker` (1: `forker` itself) the nearest
/// process in network namespace `ns` of `tasks` is.
fn ancestor_generations(tasks: &[TaskImage], forker: i32, ns: u64) -> Option<usize> {
    crate::task::namespaces::task_ancestor_in(
        tasks,
        forker,
        |core| core.netns.as_ref().map(|n| n.inode),
        ns,
    )
}

/// In restored process `i` of `tasks`, before its fds: an fd of each network namespace a
/// socket of `descs` is made in (sockets/home.rs) that it reaches besides its own (an
/// ancestor's, the roots'), at or above fd `min`.
pub(crate) fn socket_homes(
    tasks: &[TaskImage],
    i: usize,
    descs: &[cryo_proto::image::FileDesc],
    min: i32,
) -> std::io::Result<crate::sockets::home::Homes> {
    use crate::sockets::home::{self, Home};
    let own = match &tasks[i].core.netns {
        Some(ns) => Home::Dumped(ns.inode),
        None => Home::Roots,
    };
    let forker = crate::restore::load::forked_by(&tasks[i].entry);
    home::Homes::open(
        own,
        &home::wanted(descs),
        |ns| ancestor_generations(tasks, forker, ns),
        || {
            let outer = OUTER.load(Ordering::Relaxed);
            if outer == 0 {
                return Err(std::io::Error::from_raw_os_error(libc::ENOENT));
            }
            File::open(format!("/proc/{outer}/ns/net"))
        },
        min,
    )
}

/// The paths where cryo's mount namespace binds network namespace `inode` (nsfs mounts whose
/// root is `net:[INODE]`: `ip netns add NAME` makes /run/netns/NAME).
fn handles_of(inode: u64) -> std::io::Result<Vec<String>> {
    let root = format!("net:[{inode}]");
    Ok(
        crate::task::mount_ns::mountinfo::parse_with_nsfs(&std::fs::read_to_string(
            "/proc/self/mountinfo",
        )?)
        .into_iter()
        .filter(|m| m.fstype == "nsfs" && m.root == root)
        .map(|m| m.point)
        .collect(),
    )
}

/// Why the name `handle` (a path where cryo's mount namespace binds a network namespace, in
/// `mounts`) cannot go to a restored namespace: the namespace bound there now has a process
/// in it (a `--leave-running` original). None when nothing is bound there or no one is in it.
fn handle_in_use(
    mounts: &[crate::task::mount_ns::mountinfo::Mount],
    handle: &str,
) -> Option<String> {
    let bound = mounts
        .iter()
        .rev()
        .find(|m| m.point == handle)
        .filter(|m| m.fstype == "nsfs")?;
    let inode = bound
        .root
        .strip_prefix("net:[")
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|r| r.parse::<u64>().ok())?;
    let user = crate::proc::outsider_in_namespace("net", inode, &[])?;
    Some(format!(
        "where {} still is, with pid {user} in it: its name cannot go to the restored one",
        bound.root
    ))
}

/// The names (`ip netns` handles) network namespace `ns` of an image was bound at that this
/// host's namespaces in use hold, each with why (`restore --check-only`: the restore would
/// fail on them, bind_handles).
pub(crate) fn handles_in_use(ns: &NetNamespace) -> Vec<(String, String)> {
    if ns.handles.is_empty() {
        return Vec::new();
    }
    let mounts = crate::task::mount_ns::mountinfo::parse_with_nsfs(
        &std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default(),
    );
    ns.handles
        .iter()
        .filter_map(|h| Some((h.clone(), handle_in_use(&mounts, h)?)))
        .collect()
}

/// Binds each network namespace the restore made where the dumped one was bound (its
/// `handles`: `ip netns` names it again), in place of what is bound there: the dumped
/// namespace itself (kept alive by its handle after a dump that ended its processes) or one a
/// failed restore left, each given up once no process is in it. A namespace some process
/// still runs in (a `--leave-running` original) keeps its name: the restore fails, naming it.
/// A handle missing on this host is made (an empty file, its directory 0755).
pub(crate) fn bind_handles(tasks: &[TaskImage], pids: &[Pid]) -> Result<(), NetNamespaceError> {
    let bound: Vec<(Pid, u64, &String)> = made_namespaces(tasks, pids)
        .flat_map(|(pid, ns)| ns.handles.iter().map(move |h| (pid, ns.inode, h)))
        .collect();
    if bound.is_empty() {
        return Ok(());
    }
    let mounts = crate::task::mount_ns::mountinfo::parse_with_nsfs(
        &std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default(),
    );
    for &(pid, inode, handle) in &bound {
        let failed = |step: &'static str| {
            move |error: std::io::Error| NetNamespaceError::Read {
                pid,
                inode,
                step,
                source: NetnsError::Read {
                    path: handle.into(),
                    error,
                },
            }
        };
        let path = Path::new(handle);
        let covered = mounts.iter().rev().find(|m| m.point == *handle);
        if covered.is_some_and(|m| m.fstype == "nsfs") {
            if let Some(why) = handle_in_use(&mounts, handle) {
                return Err(NetNamespaceError::Refused {
                    pid,
                    inode,
                    detail: format!("was bound at {handle}, {why}"),
                });
            }
            crate::sys::mount::detach(path).map_err(failed("unmount the namespace bound there"))?;
        } else if covered.is_none() && !path.exists() {
            if let Some(dir) = path.parent() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(dir)
                    .map_err(failed("make the directory of its handle"))?;
            }
            File::create(path).map_err(failed("make its handle"))?;
        }
        crate::sys::mount::bind(&crate::proc::dir(pid).join("ns/net"), path)
            .map_err(failed("bind the restored namespace there"))?;
    }
    Ok(())
}

/// Once every process of the restore has made its sockets and refilled their queues (a
/// datagram put back goes through the namespace's hooks: counted, or dropped by a rule), the
/// firewall of each network namespace made again, by a thread of cryo that joins it through
/// the topmost process in it (`tasks` and `pids`: the plan's tasks and their pids). What the
/// kernel made is read back and compared: the dump's replica showed the same, this host may
/// not. Until then the namespace has no rule: only the kernel's own segments (a
/// retransmission) can pass, untracked and uncounted, as after the restore.
pub(crate) fn make_firewalls(
    tasks: &[TaskImage],
    pids: &[Pid],
    lock_id: &str,
) -> Result<(), NetNamespaceError> {
    // The restore's own lock there (hold_connections) is no part of the namespace's.
    let lock_table = (!lock_id.is_empty()).then(|| cryo_netns::table_name(lock_id));
    for (pid, ns) in made_namespaces(tasks, pids) {
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
        let mut made = File::open(&path)
            .and_then(|handle| {
                crate::sys::ns::run_in(&handle, CloneFlags::CLONE_NEWNET, || {
                    // Its tables made already where a lock was installed (hold_connections).
                    if lock_table.is_some() {
                        firewall::restore_in_tables(&wanted)?;
                    } else {
                        firewall::restore(&wanted)?;
                    }
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
        made.nft.retain(|item| Some(item.table()) != lock_table);
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
            index: 1,
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
            addresses: vec![address_record(&a)],
            sysctls: Vec::new(),
            ..Default::default()
        };
        assert_eq!(interfaces(&ns).addresses, [a]);
        assert_eq!(
            sysctl_name("net/ipv4/ping_group_range"),
            "net.ipv4.ping_group_range"
        );
    }

    #[test]
    fn cryo_makes_the_links_of_a_namespace_across_to_its_own_inside_a_user_namespace() {
        let across = NetLink {
            name: "eth0".into(),
            outer_peer: Some(NetLinkPeer::default()),
            ..Default::default()
        };
        let core = |user: bool, inode: u64, links: Vec<NetLink>| TaskCore {
            userns: user.then(Default::default),
            netns: Some(NetNamespace {
                inode,
                links,
                ..Default::default()
            }),
            ..Default::default()
        };
        let root = core(true, 7, vec![across.clone()]);
        assert!(made_by_clone(&root, None));
        // Its children inherit it.
        assert!(!made_by_clone(
            &core(true, 7, vec![across.clone()]),
            Some(&root)
        ));
        // Made by the process itself: cryo's user namespace, or no link across.
        assert!(!made_by_clone(&core(false, 7, vec![across]), None));
        assert!(!made_by_clone(
            &core(true, 7, vec![NetLink::default()]),
            None
        ));
    }
}
