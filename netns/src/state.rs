//! What a process can observe of its network namespace, read from the calling thread's one
//! over netlink, and the part of it a restore makes again: loopback's state and addresses, the
//! routes, and the namespace's sysctls.
//!
//! ```text
//! observe()         links (lo's admin flags, MTU, queue length, group, alias, address;
//!                   any other by name and kind), addresses, routes (every table), policy
//!                   rules, neighbours (and proxies), nexthops, qdiscs, XFRM states and
//!                   policies, nf_tables tables, legacy iptables tables: each object as one
//!                   line, kernel order, volatile parts (statistics, cache info) left out
//! sysctls()         every readable file under /proc/sys/net, as (path, value)
//! make_loopback()   lo's MTU and up/down, then sysctls, then its addresses: those it
//!                   should not have removed, the missing ones added in order; then the
//!                   routes the same way (those the addresses and lo's state did not make)
//! ```
//!
//! A dump compares what the process's namespace shows with a fresh namespace that
//! [`make_loopback`] made the same way: whatever differs is not restored.

use std::fmt::Write as _;
use std::path::Path;

use nix::errno::Errno;
use nix::sys::socket::SockProtocol;

use crate::error::NetnsError;
use crate::netlink::{NlError, NlSocket};
use crate::nft::{self, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST};

const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
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
const NUD_NOARP: u16 = 0x40;

/// The index of loopback in every network namespace.
const LO_INDEX: i32 = 1;
const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_TXQLEN: u16 = 13;
const IFLA_LINKINFO: u16 = 18;
const IFLA_IFALIAS: u16 = 20;
const IFLA_GROUP: u16 = 27;
const IFLA_INFO_KIND: u16 = 1;
/// Link flags an administrator sets (the others follow them: RUNNING, LOWER_UP...).
const ADMIN_FLAGS: u32 = (libc::IFF_UP
    | libc::IFF_DEBUG
    | libc::IFF_NOARP
    | libc::IFF_PROMISC
    | libc::IFF_ALLMULTI
    | libc::IFF_MULTICAST
    | libc::IFF_DYNAMIC) as u32;

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

/// One address of loopback, as RTM_NEWADDR takes it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
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
        self.family == other.family
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

/// Loopback's state, and the routes over it: what a restore makes again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loopback {
    /// IFF_UP.
    pub up: bool,
    /// Its MTU.
    pub mtu: u32,
    /// Its addresses, in the kernel's order.
    pub addresses: Vec<Address>,
    /// The namespace's routes, in the kernel's order (those the addresses make among them).
    pub routes: Vec<Route>,
}

/// What the calling thread's network namespace shows.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// Loopback (None if it has none: never seen).
    pub loopback: Option<Loopback>,
    /// Every link other than lo: (name, kind).
    pub other_links: Vec<(String, String)>,
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
        NlError::Kernel { errno, message, .. } => NetnsError::Netlink {
            step: match message {
                Some(m) if !m.is_empty() => format!("{step} ({m})"),
                _ => step.clone(),
            },
            errno,
        },
        NlError::Protocol(what, detail) => NetnsError::Netlink {
            step: format!("{step}: {what}: {detail}"),
            errno: Errno::EPROTO,
        },
    }
}

/// A netlink request: header, the family's fixed struct, attributes.
fn request(ty: u16, flags: u16, seq: u32, fixed: &[u8], attrs: &[(u16, &[u8])]) -> Vec<u8> {
    let mut msg = vec![0u8; 16];
    msg[4..6].copy_from_slice(&ty.to_ne_bytes());
    msg[6..8].copy_from_slice(&flags.to_ne_bytes());
    msg[8..12].copy_from_slice(&seq.to_ne_bytes());
    msg.extend_from_slice(fixed);
    msg.resize(msg.len().next_multiple_of(4), 0);
    for (ty, value) in attrs {
        push_attr(&mut msg, *ty, value);
    }
    let len = msg.len() as u32;
    msg[0..4].copy_from_slice(&len.to_ne_bytes());
    msg
}

/// Appends attribute `ty` of `value` to `msg`, padded to 4 bytes.
fn push_attr(msg: &mut Vec<u8>, ty: u16, value: &[u8]) {
    msg.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
    msg.extend_from_slice(&ty.to_ne_bytes());
    msg.extend_from_slice(value);
    msg.resize(msg.len().next_multiple_of(4), 0);
}

/// Dumps `ty` with fixed struct `fixed`: the payloads answered.
fn dump(sock: &NlSocket, ty: u16, fixed: &[u8]) -> Result<Vec<(u16, Vec<u8>)>, NlError> {
    let seq = sock.next_seq();
    sock.dump(
        &request(ty, NLM_F_REQUEST | NLM_F_DUMP, seq, fixed, &[]),
        seq,
    )
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

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn u32_of(v: &[u8]) -> u32 {
    v.get(..4)
        .map(|b| u32::from_ne_bytes(b.try_into().expect("4 bytes")))
        .unwrap_or_default()
}

fn text_of(v: &[u8]) -> String {
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

/// Reads what the calling thread's network namespace shows.
pub fn observe() -> Result<Observed, NetnsError> {
    let sock = NlSocket::open(SockProtocol::NetlinkRoute).map_err(nl("open rtnetlink socket"))?;
    let mut out = Observed::default();
    let mut lo_addresses = Vec::new();
    let mut lo_state = None;
    for (_, p) in dump(&sock, RTM_GETLINK, &[0u8; 16]).map_err(nl("dump links"))? {
        if p.len() < 16 {
            continue;
        }
        let index = i32::from_ne_bytes(p[4..8].try_into().expect("4 bytes"));
        let flags = u32_of(&p[8..12]);
        let (mut name, mut kind, mut mtu) = (String::new(), String::new(), 0);
        let mut line = String::new();
        for (ty, v) in nft::attrs(&p[16..]) {
            match ty {
                IFLA_IFNAME => name = text_of(v),
                IFLA_MTU => mtu = u32_of(v),
                IFLA_LINKINFO => {
                    if let Some((_, k)) = nft::attrs(v).find(|(t, _)| *t == IFLA_INFO_KIND) {
                        kind = text_of(k);
                    }
                }
                IFLA_TXQLEN => {
                    let _ = write!(line, " txqlen {}", u32_of(v));
                }
                IFLA_GROUP => {
                    let _ = write!(line, " group {}", u32_of(v));
                }
                IFLA_IFALIAS => {
                    let _ = write!(line, " alias {:?}", text_of(v));
                }
                IFLA_ADDRESS => {
                    let _ = write!(line, " address {}", hex(v));
                }
                _ => {}
            }
        }
        if index == LO_INDEX {
            lo_state = Some((flags & libc::IFF_UP as u32 != 0, mtu));
            out.objects.push(format!(
                "interface {name} flags {:#x} mtu {mtu}{line}",
                flags & ADMIN_FLAGS
            ));
        } else {
            let kind = if kind.is_empty() { "?".into() } else { kind };
            out.objects.push(format!("interface {name} ({kind})"));
            out.other_links.push((name, kind));
        }
    }
    for (_, p) in dump(&sock, RTM_GETADDR, &[0u8; 8]).map_err(nl("dump addresses"))? {
        if p.len() < 8 {
            continue;
        }
        let index = i32::from_ne_bytes(p[4..8].try_into().expect("4 bytes"));
        let mut a = Address {
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
        out.objects.push(format!(
            "address {} dev {index} scope {} flags {:#x} peer {} broadcast {} label {:?}{other}",
            a.describe(),
            a.scope,
            a.flags,
            ip_text(&a.address),
            ip_text(&a.broadcast),
            a.label
        ));
        if index == LO_INDEX {
            lo_addresses.push(a);
        }
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
            // A NOARP entry is the kernel's cache for a device without neighbours (lo's
            // traffic makes them): nothing set, nothing to see.
            let state = p.get(8..10).map_or(0, |b| u16::from_ne_bytes([b[0], b[1]]));
            if state == NUD_NOARP && proxy == 0 {
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
    let (up, mtu) = lo_state.unwrap_or_default();
    out.loopback = lo_state.map(|_| Loopback {
        up,
        mtu,
        addresses: lo_addresses,
        routes,
    });
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
        let family = crate::attr::family_name(family);
        let table = format!("nftables table {family} {name}");
        out.objects.push(table.clone());
        out.tables.push(table);
    }
    Ok(())
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
    let attrs: Vec<(u16, &[u8])> = mtu.iter().map(|m| (IFLA_MTU, &m[..])).collect();
    change(sock, RTM_NEWLINK, 0, &ifinfo, &attrs, "RTM_NEWLINK")
}

/// Makes the calling thread's namespace, a fresh one, show `sysctls` (those that differ from
/// a fresh namespace's, written in order) and loopback `lo`.
pub fn make_loopback(lo: &Loopback, sysctls: &[(String, String)]) -> Result<(), NetnsError> {
    make_loopback_with(lo, || {
        sysctls
            .iter()
            .try_for_each(|(name, value)| write_sysctl(name, value))
    })
}

/// [`make_loopback`], the sysctls written by `write_sysctls`, called once lo has its MTU and
/// state: a change of either sets some of lo's own sysctls (its IPv6 MTU follows its MTU),
/// which the namespace may have set since.
pub fn make_loopback_with(
    lo: &Loopback,
    write_sysctls: impl FnOnce() -> Result<(), NetnsError>,
) -> Result<(), NetnsError> {
    let sock = NlSocket::open(SockProtocol::NetlinkRoute).map_err(nl("open rtnetlink socket"))?;
    set_link(&sock, LO_INDEX, lo.up, Some(lo.mtu)).map_err(nl("RTM_NEWLINK lo"))?;
    write_sysctls()?;
    let now = observe()?.loopback.map(|l| l.addresses).unwrap_or_default();
    let fixed = |a: &Address| {
        let mut f = [0u8; 8];
        (f[0], f[1], f[2], f[3]) = (a.family, a.prefix_len, a.flags as u8, a.scope);
        f[4..8].copy_from_slice(&LO_INDEX.to_ne_bytes());
        f
    };
    for gone in now
        .iter()
        .filter(|a| !lo.addresses.iter().any(|d| d.same_place(a)))
    {
        let mut attrs: Vec<(u16, &[u8])> = vec![(IFA_LOCAL, &gone.local)];
        if !gone.address.is_empty() {
            attrs.push((IFA_ADDRESS, &gone.address));
        }
        attrs.retain(|(_, v)| !v.is_empty());
        change(
            &sock,
            RTM_DELADDR,
            0,
            &fixed(gone),
            &attrs,
            "delete address",
        )
        .map_err(nl("RTM_DELADDR on lo"))?;
    }
    for add in lo
        .addresses
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
            &sock,
            RTM_NEWADDR,
            NLM_F_CREATE | NLM_F_EXCL,
            &f,
            &attrs,
            "add address",
        )
        .map_err(nl(format!("RTM_NEWADDR {} on lo", add.describe())))?;
    }
    make_routes(&sock, &lo.routes)
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
            let seen = observe().unwrap();
            assert!(!seen.loopback.as_ref().unwrap().up, "a fresh lo is down");
            let mut lo = seen.loopback.unwrap();
            lo.up = true;
            lo.mtu = 9000;
            make_loopback(
                &lo,
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
        let lo = original.loopback.clone().unwrap();
        assert!(lo.up);
        assert_eq!(lo.mtu, 9000);
        assert!(
            lo.addresses
                .iter()
                .any(|a| a.describe() == "inet 10.9.9.9/32"),
            "{lo:?}"
        );
        let again = in_fresh(|| {
            let diff: Vec<_> = fresh_sysctls
                .iter()
                .filter(|s| s.0.contains("ping_group"))
                .map(|(n, _)| (n.clone(), "0\t100".to_string()))
                .collect();
            make_loopback(&lo, &diff).unwrap();
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
