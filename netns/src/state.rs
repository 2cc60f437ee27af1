//! What a process can observe of its network namespace, read from the calling thread's one
//! over netlink, and the part of it a restore makes again: its interfaces, their addresses,
//! the routes, and the namespace's sysctls.
//!
//! ```text
//! observe()            links (crate::link: every attribute but counters and timers),
//!                      addresses, routes (every table), policy rules, permanent neighbours
//!                      (and proxies), nexthops, qdiscs, XFRM states and policies, nf_tables
//!                      tables, legacy iptables tables: each object as one line, kernel
//!                      order, volatile parts (statistics, cache info) left out
//! sysctls()            every readable file under /proc/sys/net, as (path, value)
//! make_interfaces()    the links (created, given masters; then up/down as dumped), then
//!                      sysctls, then the addresses: those the namespace should not have
//!                      removed, the missing ones added in order; then the routes the same
//!                      way (those the addresses and the links' state did not make). IPv6
//!                      duplicate address detection is held off while links come up and
//!                      addresses are added (accept_dad 0, then as it was): an address the
//!                      process saw ready is ready again at once, not tentative for a second
//! ```
//!
//! A dump compares what the process's namespace shows with a fresh namespace that
//! [`make_interfaces`] made the same way: whatever differs is not restored.

use std::fmt::Write as _;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::sys::socket::SockProtocol;

use crate::error::NetnsError;
use crate::link::{self, dump, push_attr, Link, OuterPeer};
use crate::netlink::{NlError, NlSocket};
use crate::nft::{self, NLM_F_ACK, NLM_F_REQUEST};

const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const RTM_GETADDR: u16 = 22;
const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const RTM_GETROUTE: u16 = 26;
const RTM_GETNEIGH: u16 = 30;
const RTM_GETRULE: u16 = 34;
const RTM_GETQDISC: u16 = 38;
const RTM_GETNEXTHOP: u16 = 106;
const XFRM_MSG_GETSA: u16 = 0x12;
const XFRM_MSG_GETPOLICY: u16 = 0x15;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_EXCL: u16 = 0x200;
const NTF_PROXY: u8 = 0x08;
const NUD_PERMANENT: u16 = 0x80;

const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_LABEL: u16 = 3;
const IFA_BROADCAST: u16 = 4;
const IFA_CACHEINFO: u16 = 6;
const IFA_FLAGS: u16 = 8;
/// Address flags RTM_NEWADDR takes (NODAD, HOMEADDRESS, MANAGETEMPADDR, NOPREFIXROUTE,
/// MCAUTOJOIN); the rest are the kernel's.
const SETTABLE_ADDR_FLAGS: u32 = 0x02 | 0x10 | 0x100 | 0x200 | 0x400;

const RTA_DST: u16 = 1;
const RTA_SRC: u16 = 2;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_PRIORITY: u16 = 6;
const RTA_PREFSRC: u16 = 7;
const RTA_CACHEINFO: u16 = 12;
const RTA_TABLE: u16 = 15;
/// Next hop flags RTM_NEWROUTE takes in `rtm_flags` (RTNH_F_ONLINK); the others (dead,
/// link down, offloaded...) are the kernel's.
const SETTABLE_ROUTE_FLAGS: u32 = 0x04;

const NDA_CACHEINFO: u16 = 3;
const NDA_PROBES: u16 = 4;
const TCA_KIND: u16 = 1;
const TCA_OPTIONS: u16 = 2;

/// One address of a link, as RTM_NEWADDR takes it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    /// The link's index.
    pub index: i32,
    /// AF_INET or AF_INET6.
    pub family: u8,
    /// The prefix length.
    pub prefix_len: u8,
    /// IFA_FLAGS (the kernel's and the settable ones).
    pub flags: u32,
    /// The scope (RT_SCOPE_*).
    pub scope: u8,
    /// IFA_LOCAL (empty when absent).
    pub local: Vec<u8>,
    /// IFA_ADDRESS (empty when absent).
    pub address: Vec<u8>,
    /// IFA_BROADCAST (empty when absent).
    pub broadcast: Vec<u8>,
    /// IFA_LABEL (IPv4; empty when absent).
    pub label: String,
}

impl Address {
    /// The address as `ip` shows it: `inet 10.9.9.9/32`.
    pub fn describe(&self) -> String {
        let addr = if self.local.is_empty() {
            &self.address
        } else {
            &self.local
        };
        format!(
            "{} {}/{}",
            family_name(self.family),
            ip_text(addr),
            self.prefix_len
        )
    }

    fn same_place(&self, other: &Address) -> bool {
        self.index == other.index
            && self.family == other.family
            && self.prefix_len == other.prefix_len
            && self.local == other.local
            && self.address == other.address
    }
}

/// One route of any table, as RTM_GETROUTE gave it and RTM_NEWROUTE takes it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// `struct rtmsg` (family, lengths, tos, table, protocol, scope, type, flags).
    pub header: Vec<u8>,
    /// Its attributes but the kernel's cache information.
    pub attrs: Vec<u8>,
    /// How [`observe`] shows it: what routes are compared by.
    pub line: String,
}

/// The interfaces of a namespace, their addresses and the routes: what a restore makes
/// again.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Interfaces {
    /// Its links (lo among them), in the kernel's order.
    pub links: Vec<Link>,
    /// The peer of each veth end whose peer is in the namespace the dump ran in, by the end's
    /// index (filled by the dump: observe() does not see there).
    pub peers: Vec<(i32, OuterPeer)>,
    /// Their addresses, in the kernel's order.
    pub addresses: Vec<Address>,
    /// The namespace's routes, in the kernel's order (those the addresses make among them).
    pub routes: Vec<Route>,
}

/// What the calling thread's network namespace shows.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// Its interfaces.
    pub interfaces: Interfaces,
    /// nf_tables tables (`FAMILY NAME`) and legacy iptables tables (`iptables NAME`).
    pub tables: Vec<String>,
    /// Every object, one line each, in the kernel's order per kind.
    pub objects: Vec<String>,
}

/// A netlink exchange of this module failed.
pub(crate) fn nl(step: impl Into<String>) -> impl Fn(NlError) -> NetnsError {
    let step: String = step.into();
    move |e| match e {
        NlError::Socket(what, errno) => NetnsError::Netlink {
            step: format!("{step}: {what}"),
            errno,
        },
        NlError::Kernel {
            errno,
            message,
            step: inner,
        } => {
            // The request's own step when it says more than a generic one.
            let step = if inner.is_empty() || ["dump", "request", "batch"].contains(&inner.as_str())
            {
                step.clone()
            } else {
                format!("{step}: {inner}")
            };
            NetnsError::Netlink {
                step: match message {
                    Some(m) if !m.is_empty() => format!("{step} ({m})"),
                    _ => step,
                },
                errno,
            }
        }
        NlError::Protocol(what, detail) => NetnsError::Netlink {
            step: format!("{step}: {what}: {detail}"),
            errno: Errno::EPROTO,
        },
    }
}

/// A netlink request: header, the family's fixed struct, attributes.
fn request(ty: u16, flags: u16, seq: u32, fixed: &[u8], attrs: &[(u16, &[u8])]) -> Vec<u8> {
    let encoded = attrs.iter().fold(Vec::new(), |mut out, (ty, value)| {
        push_attr(&mut out, *ty, value);
        out
    });
    link::message(ty, flags, seq, fixed, &encoded)
}

/// Sends one change and waits for its ACK.
fn change(
    sock: &NlSocket,
    ty: u16,
    flags: u16,
    fixed: &[u8],
    attrs: &[(u16, &[u8])],
    step: &str,
) -> Result<(), NlError> {
    let seq = sock.next_seq();
    let msg = request(ty, NLM_F_REQUEST | NLM_F_ACK | flags, seq, fixed, attrs);
    sock.transact(&msg, None, &[(seq, step.to_string())])
}

fn family_name(family: u8) -> String {
    match family as i32 {
        libc::AF_INET => "inet".into(),
        libc::AF_INET6 => "inet6".into(),
        other => format!("family {other}"),
    }
}

fn ip_text(bytes: &[u8]) -> String {
    match bytes.len() {
        4 => std::net::Ipv4Addr::from(<[u8; 4]>::try_from(bytes).expect("4 bytes")).to_string(),
        16 => std::net::Ipv6Addr::from(<[u8; 16]>::try_from(bytes).expect("16 bytes")).to_string(),
        _ => hex(bytes),
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

pub(crate) fn u32_of(v: &[u8]) -> u32 {
    v.get(..4)
        .map(|b| u32::from_ne_bytes(b.try_into().expect("4 bytes")))
        .unwrap_or_default()
}

pub(crate) fn text_of(v: &[u8]) -> String {
    String::from_utf8_lossy(v.split(|b| *b == 0).next().unwrap_or_default()).into_owned()
}

/// The attributes of `payload` after its fixed struct of `fixed` bytes, but `skip`, in hex.
fn rest(payload: &[u8], fixed: usize, skip: &[u16]) -> String {
    let start = fixed.next_multiple_of(4).min(payload.len());
    nft::attrs(&payload[start..])
        .filter(|(ty, _)| !skip.contains(ty))
        .fold(String::new(), |mut s, (ty, v)| {
            let _ = write!(s, " attr{ty}={}", hex(v));
            s
        })
}

/// An rtnetlink socket of the calling thread's network namespace.
fn route_socket() -> Result<NlSocket, NetnsError> {
    NlSocket::open(SockProtocol::NetlinkRoute).map_err(nl("open rtnetlink socket"))
}

/// Reads what the calling thread's network namespace shows.
pub fn observe() -> Result<Observed, NetnsError> {
    let sock = route_socket()?;
    let mut out = Observed::default();
    let links = link::read_links(&sock).map_err(nl("dump links"))?;
    out.objects.extend(links.iter().map(|l| l.line.clone()));
    out.interfaces.links = links;
    for (a, line) in read_addresses(&sock)? {
        out.objects.push(line);
        out.interfaces.addresses.push(a);
    }
    let routes = read_routes(&sock)?;
    out.objects.extend(routes.iter().map(|r| r.line.clone()));
    for (_, p) in dump(&sock, RTM_GETRULE, &[0u8; 12]).map_err(nl("dump policy rules"))? {
        out.objects.push(format!(
            "policy rule {}{}",
            hex(&p[..p.len().min(12)]),
            rest(&p, 12, &[])
        ));
    }
    for proxy in [0, NTF_PROXY] {
        let mut fixed = [0u8; 12];
        fixed[10] = proxy;
        for (_, p) in dump(&sock, RTM_GETNEIGH, &fixed).map_err(nl("dump neighbours"))? {
            // Entries but permanent ones are the kernel's cache (traffic makes them, time
            // ages them, a restored namespace learns them again): nothing set.
            let state = p.get(8..10).map_or(0, |b| u16::from_ne_bytes([b[0], b[1]]));
            if state & NUD_PERMANENT == 0 && proxy == 0 {
                continue;
            }
            // Family, ifindex, flags and type: the state (reachable, stale...) moves by itself.
            let head = [&p[..p.len().min(8)], p.get(10..12).unwrap_or_default()].concat();
            out.objects.push(format!(
                "neighbour {}{}",
                hex(&head),
                rest(&p, 12, &[NDA_CACHEINFO, NDA_PROBES])
            ));
        }
    }
    match dump(&sock, RTM_GETNEXTHOP, &[0u8; 8]) {
        Ok(answers) => {
            for (_, p) in answers {
                out.objects.push(format!(
                    "nexthop {}{}",
                    hex(&p[..p.len().min(8)]),
                    rest(&p, 8, &[])
                ));
            }
        }
        // A kernel without nexthop objects has none.
        Err(NlError::Kernel { errno, .. })
            if errno == Errno::EOPNOTSUPP || errno == Errno::EINVAL => {}
        Err(e) => return Err(nl("dump nexthops")(e)),
    }
    for (_, p) in dump(&sock, RTM_GETQDISC, &[0u8; 20]).map_err(nl("dump qdiscs"))? {
        // Family, ifindex, handle and parent (not tcm_info: a reference count).
        let head = &p[..p.len().min(16)];
        let start = 20.min(p.len());
        let (mut kind, mut options) = (String::new(), String::new());
        for (ty, v) in nft::attrs(&p[start..]) {
            match ty {
                TCA_KIND => kind = text_of(v),
                TCA_OPTIONS => options = hex(v),
                _ => {}
            }
        }
        out.objects
            .push(format!("qdisc {kind} {} options {options}", hex(head)));
    }
    xfrm(&mut out)?;
    nf_tables(&mut out)?;
    legacy_tables(&mut out)?;
    out.interfaces.routes = routes;
    Ok(out)
}

/// The number the calling thread's network namespace gives network namespace `ns` (None:
/// none yet, so no link of it is over one there).
pub fn nsid_of(ns: std::os::fd::BorrowedFd<'_>) -> Result<Option<i32>, NetnsError> {
    let sock = route_socket()?;
    link::nsid_of(&sock, ns).map_err(nl("RTM_GETNSID"))
}

/// The links of the calling thread's network namespace.
pub fn links() -> Result<Vec<Link>, NetnsError> {
    let sock = route_socket()?;
    link::read_links(&sock).map_err(nl("dump links"))
}

/// The addresses of every link of the calling thread's namespace, in the kernel's order,
/// each with the line [`observe`] shows it as.
fn read_addresses(sock: &NlSocket) -> Result<Vec<(Address, String)>, NetnsError> {
    let mut out = Vec::new();
    for (_, p) in dump(sock, RTM_GETADDR, &[0u8; 8]).map_err(nl("dump addresses"))? {
        if p.len() < 8 {
            continue;
        }
        let index = i32::from_ne_bytes(p[4..8].try_into().expect("4 bytes"));
        let mut a = Address {
            index,
            family: p[0],
            prefix_len: p[1],
            flags: p[2] as u32,
            scope: p[3],
            local: Vec::new(),
            address: Vec::new(),
            broadcast: Vec::new(),
            label: String::new(),
        };
        for (ty, v) in nft::attrs(&p[8..]) {
            match ty {
                IFA_ADDRESS => a.address = v.to_vec(),
                IFA_LOCAL => a.local = v.to_vec(),
                IFA_BROADCAST => a.broadcast = v.to_vec(),
                IFA_LABEL => a.label = text_of(v),
                IFA_FLAGS => a.flags = u32_of(v),
                _ => {}
            }
        }
        let other = rest(
            &p,
            8,
            &[
                IFA_ADDRESS,
                IFA_LOCAL,
                IFA_BROADCAST,
                IFA_LABEL,
                IFA_FLAGS,
                IFA_CACHEINFO,
            ],
        );
        // Tentative is a moment of duplicate detection, which a restore holds off: the
        // address is ready at once, as it would have been shortly.
        let line = format!(
            "address {} dev {index} scope {} flags {:#x} peer {} broadcast {} label {:?}{other}",
            a.describe(),
            a.scope,
            a.flags & !IFA_F_TENTATIVE,
            ip_text(&a.address),
            ip_text(&a.broadcast),
            a.label
        );
        out.push((a, line));
    }
    Ok(out)
}

/// The routes of every table of the calling thread's namespace, in the kernel's order.
fn read_routes(sock: &NlSocket) -> Result<Vec<Route>, NetnsError> {
    let mut routes = Vec::new();
    for (_, p) in dump(sock, RTM_GETROUTE, &[0u8; 12]).map_err(nl("dump routes"))? {
        if p.len() < 12 {
            continue;
        }
        let attrs = nft::attrs(&p[12..])
            .filter(|(ty, _)| *ty != RTA_CACHEINFO)
            .fold(Vec::new(), |mut out, (ty, v)| {
                push_attr(&mut out, ty, v);
                out
            });
        routes.push(Route {
            line: route_line(&p[..12], &attrs),
            header: p[..12].to_vec(),
            attrs,
        });
    }
    Ok(routes)
}

/// A route as [`observe`] shows it, from its `struct rtmsg` (`p`, 12 bytes) and attributes.
pub fn route_line(p: &[u8], attrs: &[u8]) -> String {
    if p.len() < 12 {
        return format!("route {}", hex(p));
    }
    let (family, dst_len, src_len, tos, table, protocol, scope, kind) =
        (p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7]);
    let flags = u32_of(&p[8..12]);
    let mut table = table as u32;
    let mut line = String::new();
    let (mut dst, mut src) = (String::from("default"), String::new());
    for (ty, v) in nft::attrs(attrs) {
        match ty {
            RTA_TABLE => table = u32_of(v),
            RTA_DST => dst = ip_text(v),
            RTA_SRC => src = format!(" from {}/{src_len}", ip_text(v)),
            RTA_OIF => {
                let _ = write!(line, " dev {}", u32_of(v));
            }
            RTA_GATEWAY => {
                let _ = write!(line, " via {}", ip_text(v));
            }
            RTA_PREFSRC => {
                let _ = write!(line, " src {}", ip_text(v));
            }
            RTA_PRIORITY => {
                let _ = write!(line, " metric {}", u32_of(v));
            }
            _ => {}
        }
    }
    let other = rest(
        attrs,
        0,
        &[
            RTA_TABLE,
            RTA_DST,
            RTA_SRC,
            RTA_OIF,
            RTA_GATEWAY,
            RTA_PREFSRC,
            RTA_PRIORITY,
            RTA_CACHEINFO,
        ],
    );
    format!(
        "route {} type {kind} {dst}/{dst_len}{src} table {table} tos {tos}{line} proto {protocol} \
             scope {scope} flags {flags:#x}{other}",
        family_name(family)
    )
}

/// XFRM states and policies (IPsec): one line each.
fn xfrm(out: &mut Observed) -> Result<(), NetnsError> {
    let sock = match NlSocket::open_protocol(libc::NETLINK_XFRM) {
        Ok(s) => s,
        // No XFRM in this kernel: nothing of it to see.
        Err(NlError::Socket(_, Errno::EPROTONOSUPPORT)) => return Ok(()),
        Err(e) => return Err(nl("open xfrm socket")(e)),
    };
    // struct xfrm_usersa_id (24 bytes), struct xfrm_userpolicy_id (64).
    for (ty, fixed, what) in [
        (XFRM_MSG_GETSA, 24, "xfrm state"),
        (XFRM_MSG_GETPOLICY, 64, "xfrm policy"),
    ] {
        for (_, p) in dump(&sock, ty, &vec![0u8; fixed]).map_err(nl("dump xfrm"))? {
            out.objects
                .push(format!("{what} {}", hex(&p[..p.len().min(64)])));
        }
    }
    Ok(())
}

/// The nf_tables tables of every family.
fn nf_tables(out: &mut Observed) -> Result<(), NetnsError> {
    let sock = match NlSocket::open(SockProtocol::NetlinkNetFilter) {
        Ok(s) => s,
        Err(NlError::Socket(_, Errno::EPROTONOSUPPORT)) => return Ok(()),
        Err(e) => return Err(nl("open nfnetlink socket")(e)),
    };
    let seq = sock.next_seq();
    let answers = match sock.dump(&nft::get_tables(seq), seq) {
        Ok(a) => a,
        // nf_tables not loaded: no table.
        Err(NlError::Kernel { errno, .. })
            if errno == Errno::EOPNOTSUPP || errno == Errno::ENOENT =>
        {
            Vec::new()
        }
        Err(e) => return Err(nl("dump nf_tables tables")(e)),
    };
    for (family, name) in answers
        .iter()
        .filter_map(|(ty, p)| nft::parse_table(*ty, p))
    {
        let table = nft_table_listed(crate::attr::family_name(family), &name);
        out.objects.push(table.clone());
        out.tables.push(table);
    }
    Ok(())
}

/// How [`Observed::tables`] and [`Observed::objects`] list nf_tables table `name` of
/// `family` ("inet", "ip"...).
pub fn nft_table_listed(family: &str, name: &str) -> String {
    format!("nftables table {family} {name}")
}

/// The tables of the legacy iptables, ip6tables and arptables of the calling thread's
/// namespace (/proc/thread-self/net: /proc/self/net would be the main thread's).
fn legacy_tables(out: &mut Observed) -> Result<(), NetnsError> {
    for (file, tool) in [
        ("ip_tables_names", "iptables"),
        ("ip6_tables_names", "ip6tables"),
        ("arp_tables_names", "arptables"),
    ] {
        let path = Path::new("/proc/thread-self/net").join(file);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(NetnsError::Read { path, error: e }),
        };
        for name in text.lines().filter(|l| !l.is_empty()) {
            let table = format!("{tool} table {name}");
            out.objects.push(table.clone());
            out.tables.push(table);
        }
    }
    Ok(())
}

/// Every readable sysctl of the calling thread's network namespace (/proc/sys/net, which
/// shows the opening thread's), as (path below /proc/sys, value), sorted by path.
pub fn sysctls() -> Result<Vec<(String, String)>, NetnsError> {
    let mut out = Vec::new();
    let mut dirs = vec![std::path::PathBuf::from("/proc/sys/net")];
    while let Some(dir) = dirs.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|error| NetnsError::Read {
            path: dir.clone(),
            error,
        })?;
        for entry in entries.flatten() {
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                dirs.push(path);
                continue;
            }
            // Write-only ones (route/flush) and those that refuse a read (stable_secret unset)
            // show nothing.
            if let Ok(value) = read_sysctl(&path) {
                let name = path
                    .strip_prefix("/proc/sys")
                    .expect("below /proc/sys")
                    .to_string_lossy()
                    .into_owned();
                out.push((name, value.trim_end_matches('\n').to_string()));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The whole value of sysctl file `path` (below /proc/sys), read in one read(2): the
/// kernel's handlers of numbers (proc_dointvec, proc_do_large_bitmap...) answer a read at any
/// offset but 0 with end of file, so a value read in pieces comes back cut (std's
/// read_to_string reads 32 bytes first: kernel.sem's four numbers lost their last digits).
pub fn read_sysctl(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut size = 64 << 10;
    loop {
        let mut buf = vec![0u8; size];
        let n = file.read(&mut buf)?;
        // A value that filled the buffer may have been cut: read again, from the start, with
        // a larger one (a reserved ports bitmap can be long).
        if n == size && size < (4 << 20) {
            size *= 4;
            file = std::fs::File::open(path)?;
            continue;
        }
        buf.truncate(n);
        return String::from_utf8(buf)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e));
    }
}

/// Writes sysctl `name` (a path below /proc/sys) of the calling thread's namespace.
pub fn write_sysctl(name: &str, value: &str) -> Result<(), NetnsError> {
    let path = Path::new("/proc/sys").join(name);
    std::fs::write(&path, value).map_err(|error| NetnsError::Write { path, error })
}

/// Sets link `index` up or down (and its MTU) with one RTM_NEWLINK request.
pub(crate) fn set_link(
    sock: &NlSocket,
    index: i32,
    up: bool,
    mtu: Option<u32>,
) -> Result<(), NlError> {
    let mut ifinfo = [0u8; 16];
    ifinfo[4..8].copy_from_slice(&index.to_ne_bytes());
    let flags = if up { libc::IFF_UP as u32 } else { 0 };
    ifinfo[8..12].copy_from_slice(&flags.to_ne_bytes());
    ifinfo[12..16].copy_from_slice(&(libc::IFF_UP as u32).to_ne_bytes());
    let mtu = mtu.map(u32::to_ne_bytes);
    let attrs: Vec<(u16, &[u8])> = mtu.iter().map(|m| (link::IFLA_MTU, &m[..])).collect();
    change(sock, link::RTM_NEWLINK, 0, &ifinfo, &attrs, "RTM_NEWLINK")
}

/// The namespace a restore runs in, where the peer of a veth end that was there at dump is
/// made again (with its bridge), or a dump's stand-in for it (without).
pub struct OuterSide {
    ns: OwnedFd,
    sock: NlSocket,
    with_master: bool,
}

impl OuterSide {
    /// The calling thread's network namespace becomes the outer side, and the thread moves to
    /// a fresh one (the one to make). `with_master`: a peer is attached to its bridge there
    /// (a restore), or not (a dump's stand-in, which has none).
    pub fn here_then_unshare(with_master: bool) -> Result<OuterSide, NetnsError> {
        Self::here_then(with_master, || {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).map_err(NetnsError::Unshare)
        })
    }

    /// The calling thread's network namespace becomes the outer side, and the thread joins
    /// network namespace `ns` (an open /proc/PID/ns/net), where the links are made: one
    /// owned by a user namespace, whose processes could not make a link across the two
    /// (their capabilities end at their own), made by cryo from outside.
    pub fn here_then_join(ns: impl AsFd, with_master: bool) -> Result<OuterSide, NetnsError> {
        Self::here_then(with_master, || {
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(NetnsError::Join)
        })
    }

    /// The calling thread's network namespace (and a route socket there) as the outer side,
    /// then `enter` moves the thread to the namespace to make.
    fn here_then(
        with_master: bool,
        enter: impl FnOnce() -> Result<(), NetnsError>,
    ) -> Result<OuterSide, NetnsError> {
        let path = Path::new("/proc/thread-self/ns/net");
        let ns: OwnedFd = std::fs::File::open(path)
            .map_err(|error| NetnsError::Read {
                path: path.into(),
                error,
            })?
            .into();
        let sock = route_socket()?;
        enter()?;
        Ok(OuterSide {
            ns,
            sock,
            with_master,
        })
    }
}

/// Makes the calling thread's namespace, a fresh one, show `sysctls` (those that differ from
/// a fresh namespace's, written in order) and `interfaces`.
pub fn make_interfaces(
    interfaces: &Interfaces,
    outer: Option<&OuterSide>,
    sysctls: &[(String, String)],
) -> Result<(), NetnsError> {
    make_interfaces_with(interfaces, outer, || {
        sysctls
            .iter()
            .try_for_each(|(name, value)| write_sysctl(name, value))
    })
}

/// IPv6 duplicate address detection held off (accept_dad 0 for all and for each link) while
/// links come up and addresses are added, then each value written back as it was.
struct DadHeldOff(Vec<(String, String)>);

impl DadHeldOff {
    fn begin(links: &[Link]) -> Result<DadHeldOff, NetnsError> {
        let mut held = Vec::new();
        let names = std::iter::once("all").chain(links.iter().map(|l| l.name.as_str()));
        for name in names {
            let sysctl = format!("net/ipv6/conf/{name}/accept_dad");
            // No IPv6 on the link (or in the kernel): no detection either.
            let Ok(value) = read_sysctl(&Path::new("/proc/sys").join(&sysctl)) else {
                continue;
            };
            write_sysctl(&sysctl, "0")?;
            held.push((sysctl, value.trim_end().to_string()));
        }
        Ok(DadHeldOff(held))
    }

    /// Runs `write_sysctls` with detection as the namespace had it (it may set accept_dad),
    /// then holds it off again until [`DadHeldOff::end`] writes back what it set.
    fn during(
        &mut self,
        write_sysctls: impl FnOnce() -> Result<(), NetnsError>,
    ) -> Result<(), NetnsError> {
        for (name, value) in &self.0 {
            write_sysctl(name, value)?;
        }
        write_sysctls()?;
        for (name, value) in &mut self.0 {
            *value = read_sysctl(&Path::new("/proc/sys").join(&*name))
                .map_err(|error| NetnsError::Read {
                    path: Path::new("/proc/sys").join(&*name),
                    error,
                })?
                .trim_end()
                .to_string();
            write_sysctl(name, "0")?;
        }
        Ok(())
    }

    fn end(self) -> Result<(), NetnsError> {
        self.0
            .iter()
            .try_for_each(|(name, value)| write_sysctl(name, value))
    }
}

/// [`make_interfaces`], the sysctls written by `write_sysctls`, called once the links are
/// made and up or down as dumped: a change of a link's MTU or state sets some of its own
/// sysctls (its IPv6 MTU follows its MTU), which the namespace may have set since, and a
/// link's sysctls exist once it does. `outer`: where the outside peers are made (needed
/// when `interfaces` has any).
pub fn make_interfaces_with(
    interfaces: &Interfaces,
    outer: Option<&OuterSide>,
    write_sysctls: impl FnOnce() -> Result<(), NetnsError>,
) -> Result<(), NetnsError> {
    let sock = route_socket()?;
    let outer = outer.map(|o| link::Outer {
        ns: o.ns.as_fd(),
        sock: &o.sock,
        with_master: o.with_master,
    });
    link::make_links(&sock, &interfaces.links, &interfaces.peers, outer.as_ref())
        .map_err(nl("make the links"))?;
    let mut held = DadHeldOff::begin(&interfaces.links)?;
    bring_up(&sock, interfaces)?;
    // The carrier changes that followed (a bridge's once its port is up) are the link
    // watch's work, and so are the link-local addresses they make.
    link::wait_operstates(&sock, &interfaces.links).map_err(nl("settle the links"))?;
    // Their link-local addresses ready (detection held off, a worker of the kernel's still
    // marks them) before the sysctls may set detection on again.
    wait_addresses_ready(&sock, &interfaces.addresses)?;
    held.during(write_sysctls)?;
    make_addresses(&sock, &interfaces.addresses)?;
    wait_addresses_ready(&sock, &interfaces.addresses)?;
    make_routes(&sock, &interfaces.routes)?;
    held.end()
}

/// Makes the calling thread's namespace have `addresses`: those it has and should not
/// deleted, the missing ones added, in order.
fn make_addresses(sock: &NlSocket, addresses: &[Address]) -> Result<(), NetnsError> {
    let now = read_addresses(sock)?
        .into_iter()
        .map(|(a, _)| a)
        .collect::<Vec<_>>();
    let fixed = |a: &Address| {
        let mut f = [0u8; 8];
        (f[0], f[1], f[2], f[3]) = (a.family, a.prefix_len, a.flags as u8, a.scope);
        f[4..8].copy_from_slice(&a.index.to_ne_bytes());
        f
    };
    for gone in now
        .iter()
        .filter(|a| !addresses.iter().any(|d| d.same_place(a)))
    {
        let mut attrs: Vec<(u16, &[u8])> = vec![(IFA_LOCAL, &gone.local)];
        if !gone.address.is_empty() {
            attrs.push((IFA_ADDRESS, &gone.address));
        }
        attrs.retain(|(_, v)| !v.is_empty());
        change(sock, RTM_DELADDR, 0, &fixed(gone), &attrs, "delete address").map_err(nl(
            format!("RTM_DELADDR {} on link {}", gone.describe(), gone.index),
        ))?;
    }
    for add in addresses
        .iter()
        .filter(|d| !now.iter().any(|a| a.same_place(d)))
    {
        let flags = (add.flags & SETTABLE_ADDR_FLAGS).to_ne_bytes();
        let label = [add.label.as_bytes(), &[0]].concat();
        let mut attrs: Vec<(u16, &[u8])> = vec![
            (IFA_LOCAL, &add.local),
            (IFA_ADDRESS, &add.address),
            (IFA_BROADCAST, &add.broadcast),
            (IFA_FLAGS, &flags),
        ];
        if !add.label.is_empty() {
            attrs.push((IFA_LABEL, &label));
        }
        attrs.retain(|(_, v)| !v.is_empty());
        let mut f = fixed(add);
        f[2] = (add.flags & SETTABLE_ADDR_FLAGS) as u8;
        change(
            sock,
            RTM_NEWADDR,
            NLM_F_CREATE | NLM_F_EXCL,
            &f,
            &attrs,
            "add address",
        )
        .map_err(nl(format!(
            "RTM_NEWADDR {} on link {}",
            add.describe(),
            add.index
        )))?;
    }
    Ok(())
}

/// The head of the route line of a link's IPv6 link-local prefix, which the kernel adds when
/// the link is ready (up, its carrier on).
const LINK_LOCAL_ROUTE: &str = "route inet6 type 1 fe80::/64 table 254 ";

/// RFC 2863's "up", as IFLA_OPERSTATE gives it.
const IF_OPER_UP: u8 = 6;

/// The index of the link of `route` (0: none).
fn route_dev(route: &str) -> i32 {
    route
        .split(" dev ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next()?.parse().ok())
        .unwrap_or(0)
}

/// Sets the links' admin flags as dumped, in an order that makes them ready for IPv6 in the
/// order they were (the order of their link-local routes, which the kernel lists in the
/// order it made them): bridges first (one is ready when a port is), then each link in that
/// order once the one before is ready (a veth end is ready when both are up: its peer is
/// brought up first), then the others.
fn bring_up(sock: &NlSocket, interfaces: &Interfaces) -> Result<(), NetnsError> {
    let links = &interfaces.links;
    let set = |l: &Link| link::set_flags(sock, l).map_err(nl(format!("set {}'s flags", l.name)));
    let mut done = Vec::new();
    for bridge in links
        .iter()
        .filter(|l| links.iter().any(|port| port.master == l.index))
    {
        set(bridge)?;
        done.push(bridge.index);
    }
    let order = interfaces
        .routes
        .iter()
        .filter(|r| r.line.starts_with(LINK_LOCAL_ROUTE))
        .map(|r| route_dev(&r.line));
    for index in order {
        let Some(l) = links.iter().find(|l| l.index == index) else {
            continue;
        };
        if !done.contains(&index) {
            let peer = links
                .iter()
                .find(|p| l.kind == "veth" && l.link_netnsid.is_none() && p.index == l.link);
            if let Some(peer) = peer.filter(|p| !done.contains(&p.index)) {
                set(peer)?;
                done.push(peer.index);
            }
            set(l)?;
            done.push(index);
        }
        // Its link-local prefix may be an address's (a bridge without ports has one, never
        // ready): waited for only on a link that was operationally up.
        if l.operstate == IF_OPER_UP {
            wait_ready(sock, l)?;
        }
    }
    for l in links.iter().filter(|l| !done.contains(&l.index)) {
        set(l)?;
    }
    Ok(())
}

/// Waits until `link` has its link-local route (the kernel's link watch makes it ready).
fn wait_ready(sock: &NlSocket, link: &Link) -> Result<(), NetnsError> {
    let not_ready = link::poll(READY_TIMEOUT, || {
        let ready = read_routes(sock)?
            .iter()
            .any(|r| r.line.starts_with(LINK_LOCAL_ROUTE) && route_dev(&r.line) == link.index);
        Ok::<_, NetnsError>((!ready).then_some(()))
    })?;
    match not_ready {
        None => Ok(()),
        Some(()) => Err(NetnsError::Netlink {
            step: format!("wait for link {} to be ready as dumped", link.name),
            errno: Errno::ETIMEDOUT,
        }),
    }
}

/// How long a restore waits for the kernel's workers to make a link or an address ready.
const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// IFA_F_TENTATIVE: duplicate address detection not over.
const IFA_F_TENTATIVE: u32 = 0x40;

/// Waits until each address of `wanted` the calling thread's namespace has that was ready
/// (not tentative) is ready, and has its local route when IPv6: the kernel's workers finish
/// duplicate detection (held off, it ends at once) and add the route after the request that
/// added the address (or brought its link up) was answered.
fn wait_addresses_ready(sock: &NlSocket, wanted: &[Address]) -> Result<(), NetnsError> {
    let unready = link::poll(READY_TIMEOUT, || {
        let addresses = read_addresses(sock)?;
        let routes = read_routes(sock)?;
        let missing = addresses.into_iter().map(|(a, _)| a).find(|a| {
            let Some(w) = wanted.iter().find(|w| w.same_place(a)) else {
                return false;
            };
            let ip = if a.local.is_empty() {
                &a.address
            } else {
                &a.local
            };
            let head = format!("route inet6 type 2 {}/128 table 255 ", ip_text(ip));
            let dev = format!(" dev {} ", a.index);
            // One still tentative at dump may be ready: its detection would have ended.
            w.flags & IFA_F_TENTATIVE == 0
                && (a.flags & IFA_F_TENTATIVE != 0
                    || (a.family == libc::AF_INET6 as u8
                        && !routes
                            .iter()
                            .any(|r| r.line.starts_with(&head) && r.line.contains(&dev))))
        });
        Ok::<_, NetnsError>(missing)
    })?;
    match unready {
        None => Ok(()),
        Some(address) => Err(NetnsError::Netlink {
            step: format!(
                "wait for {} on link {} to be ready as dumped",
                address.describe(),
                address.index
            ),
            errno: Errno::ETIMEDOUT,
        }),
    }
}

/// Makes the calling thread's namespace have `routes`: those it has and should not deleted,
/// the missing ones added, in order; a route whose gateway or source another one makes
/// reachable is tried again once that one is there.
fn make_routes(sock: &NlSocket, routes: &[Route]) -> Result<(), NetnsError> {
    // Those the addresses and lo's state made: routes only (not all observe() reads).
    let now = read_routes(sock)?;
    let send = |r: &Route, ty: u16, flags: u16, step: &str| {
        let mut header = r.header.clone();
        if ty == RTM_NEWROUTE && header.len() >= 12 {
            let settable = u32_of(&header[8..12]) & SETTABLE_ROUTE_FLAGS;
            header[8..12].copy_from_slice(&settable.to_ne_bytes());
        }
        let seq = sock.next_seq();
        let mut msg = request(ty, NLM_F_REQUEST | NLM_F_ACK | flags, seq, &header, &[]);
        msg.extend_from_slice(&r.attrs);
        let len = msg.len() as u32;
        msg[0..4].copy_from_slice(&len.to_ne_bytes());
        sock.transact(&msg, None, &[(seq, step.to_string())])
            .map_err(nl(format!("{step} {}", r.line)))
    };
    for gone in now
        .iter()
        .filter(|r| !routes.iter().any(|w| w.line == r.line))
    {
        send(gone, RTM_DELROUTE, 0, "RTM_DELROUTE")?;
    }
    let mut pending: Vec<&Route> = routes
        .iter()
        .filter(|w| !now.iter().any(|r| r.line == w.line))
        .collect();
    while !pending.is_empty() {
        let mut failed = Vec::new();
        let mut first_error = None;
        for route in &pending {
            if let Err(e) = send(
                route,
                RTM_NEWROUTE,
                NLM_F_CREATE | NLM_F_EXCL,
                "RTM_NEWROUTE",
            ) {
                first_error.get_or_insert(e);
                failed.push(*route);
            }
        }
        if failed.len() == pending.len() {
            return Err(first_error.expect("a route failed"));
        }
        pending = failed;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The index of loopback in every network namespace.
    const LO_INDEX: i32 = 1;

    #[test]
    fn a_request_is_padded_and_sized() {
        let msg = request(
            RTM_NEWADDR,
            NLM_F_REQUEST,
            7,
            &[1, 2, 3, 4, 5, 6, 7, 8],
            &[(IFA_LABEL, b"lo\0")],
        );
        assert_eq!(msg.len(), 16 + 8 + 8);
        assert_eq!(u32::from_ne_bytes(msg[0..4].try_into().unwrap()), 32);
        let attrs: Vec<_> = nft::attrs(&msg[24..]).collect();
        assert_eq!(attrs, [(IFA_LABEL, &b"lo\0"[..])]);
        assert_eq!(rest(&msg[16..], 8, &[]), " attr3=6c6f00");
        assert_eq!(rest(&msg[16..], 8, &[IFA_LABEL]), "");
    }

    /// Runs `f` on a thread in a fresh network namespace (lo down).
    fn in_fresh<T: Send>(f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|s| {
            s.spawn(|| {
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
                f()
            })
            .join()
            .unwrap()
        })
    }

    #[test]
    fn loopback_made_again_shows_the_same_objects() {
        let (original, fresh_sysctls) = in_fresh(|| {
            let fresh = sysctls().unwrap();
            let mut seen = observe().unwrap().interfaces;
            let lo = &mut seen.links[0];
            assert_eq!(lo.flags & libc::IFF_UP as u32, 0, "a fresh lo is down");
            lo.flags |= libc::IFF_UP as u32;
            lo.mtu = 9000;
            // An up loopback's operational state: unknown (it has no carrier to follow).
            lo.operstate = 0;
            make_interfaces(
                &seen,
                None,
                &[("net/ipv4/ping_group_range".into(), "0\t100".into())],
            )
            .unwrap();
            let sock = NlSocket::open(SockProtocol::NetlinkRoute).unwrap();
            let mut f = [0u8; 8];
            (f[0], f[1], f[2], f[3]) = (libc::AF_INET as u8, 32, 0, 254);
            f[4..8].copy_from_slice(&LO_INDEX.to_ne_bytes());
            change(
                &sock,
                RTM_NEWADDR,
                NLM_F_CREATE,
                &f,
                &[(IFA_LOCAL, &[10, 9, 9, 9])],
                "add",
            )
            .unwrap();
            (observe().unwrap(), fresh)
        });
        let interfaces = original.interfaces.clone();
        let lo = &interfaces.links[0];
        assert_ne!(lo.flags & libc::IFF_UP as u32, 0);
        assert_eq!(lo.mtu, 9000);
        assert!(
            interfaces
                .addresses
                .iter()
                .any(|a| a.index == LO_INDEX && a.describe() == "inet 10.9.9.9/32"),
            "{interfaces:?}"
        );
        let again = in_fresh(|| {
            let diff: Vec<_> = fresh_sysctls
                .iter()
                .filter(|s| s.0.contains("ping_group"))
                .map(|(n, _)| (n.clone(), "0\t100".to_string()))
                .collect();
            make_interfaces(&interfaces, None, &diff).unwrap();
            assert_eq!(
                sysctls()
                    .unwrap()
                    .iter()
                    .find(|s| s.0 == "net/ipv4/ping_group_range")
                    .unwrap()
                    .1,
                "0\t100"
            );
            observe().unwrap()
        });
        assert_eq!(original.objects, again.objects);
        assert!(
            original
                .objects
                .iter()
                .any(|o| o.starts_with("route inet type 2 10.9.9.9/32")),
            "{:#?}",
            original.objects
        );
    }
}
