//! The connection tracking entries of a namespace: read over ctnetlink (IPCTNL_MSG_CT_GET)
//! and made again in another namespace (IPCTNL_MSG_CT_NEW) with their state, timeout, mark
//! and TCP tracking data.
//!
//! ```text
//! capture()   EXP_GET dump    any expectation: refused
//!             CT_GET dump     per entry (nfgenmsg + CTA_*), in the kernel's order:
//!                               kept     TUPLE_ORIG, TUPLE_REPLY, ZONE, STATUS (the bits
//!                                        CT_NEW sets), TIMEOUT, MARK, LABELS, PROTOINFO (TCP
//!                                        flags given a mask), SYNPROXY (unless all zero)
//!                               dropped  ID, USE, TIMESTAMP, COUNTERS_* (when zero)
//!                               refused  HELP, NAT / SEQ_ADJUST, TUPLE_MASTER, SECCTX,
//!                                        offloaded, counters that are not zero, the unknown
//!                             a null NAT binding (both NAT_DONE bits, no NAT) is kept as an
//!                             empty CTA_NAT_SRC, from which CT_NEW makes it again
//! restore()   CT_NEW | CREATE | EXCL | ACK per entry, in order; on a failure the entries made
//!             are deleted again (CT_DELETE by original tuple and zone)
//! compare     first_difference: a capture of the namespace made again against the captured
//!             entries, paired by original tuple and zone, the time left aside
//! ```

use std::collections::HashMap;
use std::fmt::Write as _;

use nix::errno::Errno;
use nix::sys::socket::SockProtocol;

use crate::error::NetnsError;
use crate::netlink::{NlError, NlSocket};
use crate::nft::{NLA_TYPE_MASK, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST};
use crate::state::nl;

use crate::attr::{be16, be32, be64, put, text, NLA_F_NESTED};
use crate::nft::{NFGENMSG_LEN, NLMSG_HDRLEN, NLM_F_CREATE, NLM_F_EXCL};

/// `NFNL_SUBSYS_CTNETLINK` and `NFNL_SUBSYS_CTNETLINK_EXP`.
const SUBSYS_CT: u16 = 1;
const SUBSYS_EXP: u16 = 2;
const IPCTNL_MSG_CT_NEW: u16 = 0;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
const IPCTNL_MSG_EXP_GET: u16 = 1;

// enum ctattr_type (include/uapi/linux/netfilter/nfnetlink_conntrack.h)
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_STATUS: u16 = 3;
const CTA_PROTOINFO: u16 = 4;
const CTA_HELP: u16 = 5;
const CTA_NAT_SRC: u16 = 6;
const CTA_TIMEOUT: u16 = 7;
const CTA_MARK: u16 = 8;
const CTA_COUNTERS_ORIG: u16 = 9;
const CTA_COUNTERS_REPLY: u16 = 10;
const CTA_USE: u16 = 11;
const CTA_ID: u16 = 12;
const CTA_NAT_DST: u16 = 13;
const CTA_TUPLE_MASTER: u16 = 14;
const CTA_SEQ_ADJ_ORIG: u16 = 15;
const CTA_SEQ_ADJ_REPLY: u16 = 16;
const CTA_SECMARK: u16 = 17;
const CTA_ZONE: u16 = 18;
const CTA_SECCTX: u16 = 19;
const CTA_TIMESTAMP: u16 = 20;
const CTA_LABELS: u16 = 22;
const CTA_SYNPROXY: u16 = 24;
/// Only in event messages (never in a dump), and rejected by CT_NEW: a timestamp.
const CTA_TIMESTAMP_EVENT: u16 = 27;

const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_TUPLE_ZONE: u16 = 3;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;
const CTA_PROTO_ICMP_ID: u16 = 4;
const CTA_PROTO_ICMP_TYPE: u16 = 5;
const CTA_PROTO_ICMP_CODE: u16 = 6;
const CTA_PROTO_ICMPV6_ID: u16 = 7;
const CTA_PROTO_ICMPV6_TYPE: u16 = 8;
const CTA_PROTO_ICMPV6_CODE: u16 = 9;
const CTA_PROTOINFO_TCP: u16 = 1;
const CTA_PROTOINFO_TCP_STATE: u16 = 1;
const CTA_PROTOINFO_TCP_FLAGS_ORIGINAL: u16 = 4;
const CTA_PROTOINFO_TCP_FLAGS_REPLY: u16 = 5;
const CTA_COUNTERS_PACKETS: u16 = 1;
const CTA_COUNTERS_BYTES: u16 = 2;
const CTA_HELP_NAME: u16 = 1;
const CTA_SECCTX_NAME: u16 = 1;
const CTA_EXPECT_MASTER: u16 = 1;
const CTA_EXPECT_TUPLE: u16 = 2;
const CTA_EXPECT_HELP_NAME: u16 = 6;

// enum ip_conntrack_status (nf_conntrack_common.h)
const IPS_EXPECTED: u32 = 1 << 0;
const IPS_SEEN_REPLY: u32 = 1 << 1;
const IPS_ASSURED: u32 = 1 << 2;
const IPS_CONFIRMED: u32 = 1 << 3;
const IPS_SRC_NAT: u32 = 1 << 4;
const IPS_DST_NAT: u32 = 1 << 5;
const IPS_SEQ_ADJUST: u32 = 1 << 6;
const IPS_SRC_NAT_DONE: u32 = 1 << 7;
const IPS_DST_NAT_DONE: u32 = 1 << 8;
const IPS_DYING: u32 = 1 << 9;
const IPS_FIXED_TIMEOUT: u32 = 1 << 10;
const IPS_HELPER: u32 = 1 << 13;
const IPS_OFFLOAD: u32 = 1 << 14;
const IPS_HW_OFFLOAD: u32 = 1 << 15;
const IPS_NAT_DONE: u32 = IPS_SRC_NAT_DONE | IPS_DST_NAT_DONE;
/// The bits CT_NEW takes: nf_ct_change_status_common ignores the unchangeable ones, and
/// CONFIRMED must be there since ctnetlink_create_conntrack sets it before comparing.
const IPS_KEPT: u32 = IPS_SEEN_REPLY | IPS_ASSURED | IPS_CONFIRMED | IPS_FIXED_TIMEOUT | IPS_HELPER;

/// `IP_CT_TCP_FLAG_MAXACK_SET`: says td_maxack holds the highest ACK seen, which ctnetlink
/// neither dumps nor sets. Left on over a td_maxack of 0 it would make valid RSTs look
/// out of window, so it is cleared, as the flowtable does when it hands a flow back.
const TCP_FLAG_MAXACK_SET: u8 = 0x20;
const TCP_STATES: [&str; 10] = [
    "NONE",
    "SYN_SENT",
    "SYN_RECV",
    "ESTABLISHED",
    "FIN_WAIT",
    "CLOSE_WAIT",
    "LAST_ACK",
    "TIME_WAIT",
    "CLOSE",
    "SYN_SENT2",
];

/// Answers meaning the namespace has no conntrack (or no ctnetlink) to ask: nothing tracked.
const NOT_LOADED: [Errno; 3] = [Errno::EPROTONOSUPPORT, Errno::ENOENT, Errno::EOPNOTSUPP];

/// One tracked connection, as an IPCTNL_MSG_CT_NEW payload (nfgenmsg header + the attributes
/// that make it again), built from the kernel's dump.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The address family (NFPROTO_IPV4 or NFPROTO_IPV6), as in the nfgenmsg header.
    pub family: u8,
    /// The nfgenmsg header and the attributes, as CT_NEW takes them.
    pub payload: Vec<u8>,
}

impl Entry {
    /// One line: "tcp 127.0.0.1:40000 -> 127.0.0.1:8080 ESTABLISHED" (proto, orig tuple, TCP
    /// state).
    pub fn describe(&self) -> String {
        describe_payload(&self.payload)
    }

    /// The same entry with what changes by itself over time taken out (the timeout), for
    /// comparing a capture with a capture of the namespace made again.
    pub fn comparable(&self) -> Entry {
        let mut payload = self.payload[..NFGENMSG_LEN.min(self.payload.len())].to_vec();
        for (raw, v) in crate::attr::raw(self.payload.get(NFGENMSG_LEN..).unwrap_or_default()) {
            if raw & NLA_TYPE_MASK != CTA_TIMEOUT {
                put(&mut payload, raw, v);
            }
        }
        Entry {
            family: self.family,
            payload,
        }
    }
}

/// Every conntrack entry of the calling THREAD's network namespace (ctnetlink dump of every
/// family; none when nf_conntrack is not loaded: EPROTONOSUPPORT/ENOENT/EOPNOTSUPP mean none).
/// An entry that cannot be made again exactly is an error naming it (describe()): a NAT
/// binding (CTA_NAT_SRC/DST, CTA_SEQ_ADJ_*), a helper (CTA_HELP), a security context, an
/// expectation (also dump IPCTNL_MSG_EXP_GET: any expectation is refused), anything else
/// ctnetlink would not take back.
pub fn capture() -> Result<Vec<Entry>, NetnsError> {
    // A dump walks the host's whole table (every namespace's entries: about 5 ms on these
    // machines, empty or not): a namespace that tracks nothing, whose count reads 0 (an
    // expectation needs an entry), or that has no conntrack at all, is not dumped.
    let count = std::path::Path::new("/proc/sys/net/netfilter/nf_conntrack_count");
    match std::fs::read_to_string(count) {
        Ok(n) if n.trim() == "0" => return Ok(Vec::new()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Ok(_) => {}
        Err(error) => {
            return Err(NetnsError::Read {
                path: count.to_path_buf(),
                error,
            })
        }
    }
    let sock = match NlSocket::open(SockProtocol::NetlinkNetFilter) {
        Ok(s) => s,
        Err(NlError::Socket(_, errno)) if NOT_LOADED.contains(&errno) => return Ok(Vec::new()),
        Err(e) => return Err(nl("conntrack: open nfnetlink socket")(e)),
    };
    // Expectations first: an entry with a helper is refused too, and the expectation is the
    // more precise reason.
    let expectations = dump(
        &sock,
        msg_type(SUBSYS_EXP, IPCTNL_MSG_EXP_GET),
        "conntrack: dump expectations",
    )?;
    if let Some((_, p)) = expectations.first() {
        return Err(refused(
            describe_expectation(p),
            "an expectation of a helper cannot be made again",
        ));
    }
    let mut entries = Vec::new();
    for (ty, p) in dump(
        &sock,
        msg_type(SUBSYS_CT, IPCTNL_MSG_CT_GET),
        "conntrack: dump entries",
    )? {
        if ty != msg_type(SUBSYS_CT, IPCTNL_MSG_CT_NEW) {
            continue;
        }
        match from_dump(&p) {
            Ok(Some(entry)) => entries.push(entry),
            Ok(None) => {}
            Err(reason) => return Err(refused(describe_payload(&p), reason)),
        }
    }
    tracing::debug!(entries = entries.len(), "captured conntrack entries");
    Ok(entries)
}

/// Makes `entries` in the calling thread's namespace (CT_NEW, NLM_F_CREATE|NLM_F_EXCL, acked).
///
/// Each entry is sent on its own, so that a refusal names it and the entries made before it
/// are known; those are deleted again before the error is returned. The caller reads the
/// namespace back to compare (firewall::first_difference: CT_NEW drops labels without a word
/// when the namespace has no label storage, for one).
pub fn restore(entries: &[Entry]) -> Result<(), NetnsError> {
    if entries.is_empty() {
        return Ok(());
    }
    let sock = NlSocket::open(SockProtocol::NetlinkNetFilter)
        .map_err(nl("conntrack: open nfnetlink socket"))?;
    let mut made: Vec<&Entry> = Vec::new();
    for entry in entries {
        if let Err(e) = make(&sock, entry) {
            return Err(undo(&sock, &made, e));
        }
        made.push(entry);
    }
    Ok(())
}

/// Sends one entry's CT_NEW and waits for its ACK.
fn make(sock: &NlSocket, entry: &Entry) -> Result<(), NetnsError> {
    let what = entry.describe();
    if entry.payload.len() < NFGENMSG_LEN || entry.payload[0] != entry.family {
        return Err(NetnsError::Netlink {
            step: format!(
                "conntrack: make {what}: the payload does not start with an nfgenmsg of family {}",
                entry.family
            ),
            errno: Errno::EINVAL,
        });
    }
    let seq = sock.next_seq();
    let msg = message(
        msg_type(SUBSYS_CT, IPCTNL_MSG_CT_NEW),
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        seq,
        &entry.payload,
    );
    sock.transact(&msg, None, &[(seq, what.clone())])
        .map_err(nl(format!("conntrack: make {what}")))
}

/// Deletes the entries `made` (newest first) after `failure`, and returns `failure`, naming
/// the deletions that failed too.
fn undo(sock: &NlSocket, made: &[&Entry], failure: NetnsError) -> NetnsError {
    let mut failed = String::new();
    for entry in made.iter().rev() {
        // Without its original tuple a CT_DELETE would flush the whole table.
        let Some(tuple) = attr(&entry.payload, CTA_TUPLE_ORIG) else {
            continue;
        };
        let mut payload = vec![entry.family, 0, 0, 0];
        put(&mut payload, CTA_TUPLE_ORIG | NLA_F_NESTED, tuple);
        if let Some(zone) = attr(&entry.payload, CTA_ZONE) {
            put(&mut payload, CTA_ZONE, zone);
        }
        let seq = sock.next_seq();
        let msg = message(
            msg_type(SUBSYS_CT, IPCTNL_MSG_CT_DELETE),
            NLM_F_REQUEST | NLM_F_ACK,
            seq,
            &payload,
        );
        if let Err(e) = sock.transact(&msg, None, &[(seq, String::new())]) {
            let why = match e {
                NlError::Socket(_, errno) | NlError::Kernel { errno, .. } => errno.to_string(),
                NlError::Protocol(step, detail) => format!("{step}: {detail}"),
            };
            let _ = write!(failed, "; undo: delete {}: {why}", entry.describe());
        }
    }
    match failure {
        _ if failed.is_empty() => failure,
        NetnsError::Netlink { step, errno } => NetnsError::Netlink {
            step: format!("{step}{failed}"),
            errno,
        },
        NetnsError::Unrestorable { what, why } => NetnsError::Unrestorable {
            what,
            why: format!("{why}{failed}"),
        },
        other => other,
    }
}

/// The CT_NEW payload that makes a dumped entry again; `None` for a dying entry (it is on
/// its way out: the namespace shows it no more once the kernel is done with it), or why it
/// cannot be made again exactly.
fn from_dump(p: &[u8]) -> Result<Option<Entry>, String> {
    if p.len() < NFGENMSG_LEN {
        return Err(format!("a message of {} bytes", p.len()));
    }
    let family = p[0];
    let attrs = &p[NFGENMSG_LEN..];
    let status = attr(p, CTA_STATUS).and_then(be32).ok_or("no status")?;
    if status & IPS_DYING != 0 {
        return Ok(None);
    }
    check_status(status)?;
    let mut out = vec![family, 0, 0, 0];
    let mut timeout = false;
    for (raw, v) in crate::attr::raw(attrs) {
        match raw & NLA_TYPE_MASK {
            CTA_TUPLE_ORIG | CTA_TUPLE_REPLY | CTA_ZONE | CTA_MARK | CTA_LABELS => {
                put(&mut out, raw, v)
            }
            CTA_TIMEOUT => {
                timeout = true;
                put(&mut out, raw, v);
            }
            CTA_STATUS => put(&mut out, raw, &(status & IPS_KEPT).to_be_bytes()),
            CTA_PROTOINFO => put(&mut out, raw, &protoinfo(v)),
            // ctnetlink gives a zeroed SYNPROXY extension to every entry it makes: all zero
            // is the same as none.
            CTA_SYNPROXY => {
                if crate::attr::raw(v).any(|(_, x)| x.iter().any(|b| *b != 0)) {
                    put(&mut out, raw, v);
                }
            }
            // Bookkeeping of this kernel (id, references) and start/stop times: nothing a
            // packet or a rule of the namespace sees.
            CTA_ID | CTA_USE | CTA_TIMESTAMP | CTA_TIMESTAMP_EVENT => {}
            ty @ (CTA_COUNTERS_ORIG | CTA_COUNTERS_REPLY) => counters(ty, v)?,
            CTA_HELP => {
                let name = nested(v, CTA_HELP_NAME).map(text).unwrap_or_default();
                return Err(format!(
                    "helper {name:?} is attached, and an entry made by ctnetlink cannot take \
                     over a helper's state"
                ));
            }
            CTA_NAT_SRC | CTA_NAT_DST => return Err("a NAT binding cannot be made again".into()),
            CTA_SEQ_ADJ_ORIG | CTA_SEQ_ADJ_REPLY => {
                return Err("sequence adjustment (of a NAT helper) cannot be made again".into())
            }
            CTA_TUPLE_MASTER => {
                return Err("an expected connection (of a helper) cannot be made again".into())
            }
            CTA_SECCTX => {
                let name = nested(v, CTA_SECCTX_NAME).map(text).unwrap_or_default();
                return Err(format!(
                    "security context {name:?}: ctnetlink cannot set a security context"
                ));
            }
            CTA_SECMARK => return Err("a security mark cannot be made again".into()),
            other => {
                return Err(format!(
                    "attribute {other} ({} bytes), which ctnetlink does not take back",
                    v.len()
                ))
            }
        }
    }
    for (ty, name) in [
        (CTA_TUPLE_ORIG, "original tuple"),
        (CTA_TUPLE_REPLY, "reply tuple"),
    ] {
        if attr(p, ty).is_none() {
            return Err(format!("no {name}"));
        }
    }
    if !timeout {
        return Err("no timeout (CT_NEW needs one)".into());
    }
    if status & IPS_NAT_DONE == IPS_NAT_DONE {
        // CT_NEW with a NAT attribute sets both manips up, and an empty one (no address, no
        // port) is a null binding: what the NAT hooks of the namespace gave the entry.
        put(&mut out, CTA_NAT_SRC | NLA_F_NESTED, &[]);
    }
    Ok(Some(Entry {
        family,
        payload: out,
    }))
}

/// Why an entry of status `status` cannot be made again, if it cannot.
fn check_status(status: u32) -> Result<(), String> {
    let why = if status & IPS_EXPECTED != 0 {
        "an expected connection (of a helper) cannot be made again"
    } else if status & (IPS_SRC_NAT | IPS_DST_NAT) != 0 {
        "a NAT binding cannot be made again"
    } else if status & IPS_SEQ_ADJUST != 0 {
        "sequence adjustment (of a NAT helper) cannot be made again"
    } else if status & (IPS_OFFLOAD | IPS_HW_OFFLOAD) != 0 {
        "offloaded to a flowtable: no timeout or protocol state to read"
    } else if status & IPS_CONFIRMED == 0 {
        "not confirmed"
    } else if status & IPS_NAT_DONE != 0 && status & IPS_NAT_DONE != IPS_NAT_DONE {
        "half a null NAT binding: CT_NEW makes both halves or none"
    } else if status & !(IPS_KEPT | IPS_NAT_DONE) != 0 {
        "status bits that CT_NEW cannot set"
    } else {
        return Ok(());
    };
    Err(format!("{why} (status {status:#x})"))
}

/// Refuses counters that are not zero: the entry made again would count from 0.
fn counters(ty: u16, v: &[u8]) -> Result<(), String> {
    let value = |t| nested(v, t).and_then(be64).unwrap_or_default();
    let (packets, bytes) = (value(CTA_COUNTERS_PACKETS), value(CTA_COUNTERS_BYTES));
    if packets == 0 && bytes == 0 {
        return Ok(());
    }
    let dir = if ty == CTA_COUNTERS_ORIG {
        "original"
    } else {
        "reply"
    };
    Err(format!(
        "counted {packets} packets, {bytes} bytes in the {dir} direction \
         (net.netfilter.nf_conntrack_acct is on), and an entry made again counts from 0"
    ))
}

/// CTA_PROTOINFO as CT_NEW applies it: TCP flags come out of a dump with a mask of 0, which
/// would set none of them; they go back with a full mask (MAXACK_SET cleared, see there).
fn protoinfo(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len());
    for (raw, inner) in crate::attr::raw(v) {
        if raw & NLA_TYPE_MASK != CTA_PROTOINFO_TCP {
            put(&mut out, raw, inner);
            continue;
        }
        let mut tcp = Vec::with_capacity(inner.len());
        for (raw, x) in crate::attr::raw(inner) {
            match (raw & NLA_TYPE_MASK, x.first()) {
                (CTA_PROTOINFO_TCP_FLAGS_ORIGINAL | CTA_PROTOINFO_TCP_FLAGS_REPLY, Some(f)) => {
                    put(&mut tcp, raw, &[f & !TCP_FLAG_MAXACK_SET, 0xff])
                }
                _ => put(&mut tcp, raw, x),
            }
        }
        put(&mut out, raw, &tcp);
    }
    out
}

/// The first difference between captured `dumped` and `made`, a capture of a namespace made
/// again from it, described; `None` when the entries are the same but for their time left.
pub fn first_difference(dumped: &[Entry], made: &[Entry]) -> Option<String> {
    let by_key = |entries: &[Entry]| -> HashMap<_, Entry> {
        entries
            .iter()
            .filter_map(|e| Some((key(&e.payload)?, e.comparable())))
            .collect()
    };
    let (want, got) = (by_key(dumped), by_key(made));
    for e in dumped {
        let entry = || format!("conntrack entry {}", e.describe());
        let Some(k) = key(&e.payload) else {
            return Some(format!("{} has no original tuple", entry()));
        };
        let w = &want[&k];
        match got.get(&k) {
            None => return Some(format!("{} is not there once made again", entry())),
            Some(g) if g != w => {
                return Some(format!(
                    "{} reads otherwise once made again: its {}",
                    entry(),
                    differing(&w.payload, &g.payload)
                ))
            }
            Some(_) => {}
        }
    }
    made.iter()
        .find(|e| key(&e.payload).is_none_or(|k| !want.contains_key(&k)))
        .map(|e| format!("conntrack entry {} appears once made again", e.describe()))
}

/// What identifies an entry in a namespace: family, original tuple, zone.
fn key(p: &[u8]) -> Option<(u8, Vec<u8>, Vec<u8>)> {
    Some((
        *p.first()?,
        attr(p, CTA_TUPLE_ORIG)?.to_vec(),
        attr(p, CTA_ZONE).unwrap_or_default().to_vec(),
    ))
}

/// The names of the attributes in which `want` and `got` (CT_NEW payloads) differ.
fn differing(want: &[u8], got: &[u8]) -> String {
    let all = |p: &[u8]| -> Vec<(u16, Vec<u8>)> {
        crate::attr::raw(p.get(NFGENMSG_LEN..).unwrap_or_default())
            .map(|(raw, v)| (raw & NLA_TYPE_MASK, v.to_vec()))
            .collect()
    };
    let (want, got) = (all(want), all(got));
    let mut types: Vec<u16> = want
        .iter()
        .filter(|a| !got.contains(a))
        .chain(got.iter().filter(|a| !want.contains(a)))
        .map(|(ty, _)| *ty)
        .collect();
    types.sort_unstable();
    types.dedup();
    let names: Vec<String> = types.iter().map(|t| attr_name(*t)).collect();
    names.join(", ")
}

fn attr_name(ty: u16) -> String {
    match ty {
        CTA_TUPLE_ORIG => "original tuple".into(),
        CTA_TUPLE_REPLY => "reply tuple".into(),
        CTA_STATUS => "status".into(),
        CTA_PROTOINFO => "protocol state".into(),
        CTA_NAT_SRC => "null NAT binding".into(),
        CTA_MARK => "mark".into(),
        CTA_ZONE => "zone".into(),
        CTA_LABELS => "labels".into(),
        CTA_SYNPROXY => "synproxy state".into(),
        other => format!("attribute {other}"),
    }
}

/// A refusal of capture(): the entry (or expectation) and why.
fn refused(what: String, why: impl Into<String>) -> NetnsError {
    NetnsError::Unrestorable {
        what: format!("conntrack: {what}"),
        why: why.into(),
    }
}

/// Dumps message type `ty` of every family; nothing when conntrack is not there to ask.
fn dump(sock: &NlSocket, ty: u16, step: &str) -> Result<Vec<(u16, Vec<u8>)>, NetnsError> {
    let seq = sock.next_seq();
    // AF_UNSPEC: ctnetlink filters on nothing and dumps every family.
    let request = message(ty, NLM_F_REQUEST | NLM_F_DUMP, seq, &[0, 0, 0, 0]);
    match sock.dump(&request, seq) {
        Ok(answers) => Ok(answers),
        Err(NlError::Kernel { errno, .. }) if NOT_LOADED.contains(&errno) => Ok(Vec::new()),
        Err(e) => Err(nl(step)(e)),
    }
}

fn msg_type(subsys: u16, msg: u16) -> u16 {
    (subsys << 8) | msg
}

/// A netlink message: header, then `payload` (nfgenmsg and attributes) as is.
fn message(ty: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(NLMSG_HDRLEN + payload.len()).expect("netlink message over 4 GiB");
    let mut msg = Vec::with_capacity(len as usize);
    msg.extend_from_slice(&len.to_ne_bytes());
    msg.extend_from_slice(&ty.to_ne_bytes());
    msg.extend_from_slice(&flags.to_ne_bytes());
    msg.extend_from_slice(&seq.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(payload);
    msg
}

/// Top-level attribute `ty` of a payload (nfgenmsg first).
fn attr(p: &[u8], ty: u16) -> Option<&[u8]> {
    nested(p.get(NFGENMSG_LEN..)?, ty)
}

/// Attribute `ty` among `attrs`.
fn nested(attrs: &[u8], ty: u16) -> Option<&[u8]> {
    crate::attr::find(attrs, ty)
}

/// "tcp 127.0.0.1:40000 -> 127.0.0.1:8080 ESTABLISHED" for a payload (dumped or CT_NEW).
fn describe_payload(p: &[u8]) -> String {
    let mut line = match attr(p, CTA_TUPLE_ORIG) {
        Some(t) => tuple_text(t),
        None => "entry without an original tuple".into(),
    };
    let tcp_state = attr(p, CTA_PROTOINFO)
        .and_then(|v| nested(v, CTA_PROTOINFO_TCP))
        .and_then(|v| nested(v, CTA_PROTOINFO_TCP_STATE))
        .and_then(|v| v.first());
    if let Some(state) = tcp_state {
        match TCP_STATES.get(*state as usize) {
            Some(name) => {
                let _ = write!(line, " {name}");
            }
            None => {
                let _ = write!(line, " state {state}");
            }
        }
    }
    if let Some(zone) = attr(p, CTA_ZONE).and_then(be16) {
        let _ = write!(line, " zone {zone}");
    }
    line
}

/// "expectation tcp 127.0.0.1 -> 127.0.0.1:10000 of tcp ... (helper "ftp")".
fn describe_expectation(p: &[u8]) -> String {
    let tuple = |ty| attr(p, ty).map(tuple_text).unwrap_or_else(|| "?".into());
    let helper = attr(p, CTA_EXPECT_HELP_NAME).map(text).unwrap_or_default();
    format!(
        "expectation {} of {} (helper {helper:?})",
        tuple(CTA_EXPECT_TUPLE),
        tuple(CTA_EXPECT_MASTER)
    )
}

/// A tuple (CTA_TUPLE_IP, CTA_TUPLE_PROTO, CTA_TUPLE_ZONE) as "proto src:port -> dst:port".
fn tuple_text(t: &[u8]) -> String {
    let ip = nested(t, CTA_TUPLE_IP).unwrap_or_default();
    let proto = nested(t, CTA_TUPLE_PROTO).unwrap_or_default();
    let addr = |v4, v6| -> String {
        if let Some(a) = nested(ip, v4).and_then(|v| <[u8; 4]>::try_from(v).ok()) {
            std::net::Ipv4Addr::from(a).to_string()
        } else if let Some(a) = nested(ip, v6).and_then(|v| <[u8; 16]>::try_from(v).ok()) {
            format!("[{}]", std::net::Ipv6Addr::from(a))
        } else {
            "?".into()
        }
    };
    let (src, dst) = (
        addr(CTA_IP_V4_SRC, CTA_IP_V6_SRC),
        addr(CTA_IP_V4_DST, CTA_IP_V6_DST),
    );
    let num = nested(proto, CTA_PROTO_NUM).and_then(|v| v.first().copied());
    let name = match num {
        Some(1) => "icmp".to_string(),
        Some(6) => "tcp".into(),
        Some(17) => "udp".into(),
        Some(33) => "dccp".into(),
        Some(47) => "gre".into(),
        Some(58) => "icmpv6".into(),
        Some(132) => "sctp".into(),
        Some(136) => "udplite".into(),
        Some(n) => format!("proto {n}"),
        None => "proto ?".into(),
    };
    let port = |ty| nested(proto, ty).and_then(be16);
    let mut line = match (port(CTA_PROTO_SRC_PORT), port(CTA_PROTO_DST_PORT)) {
        (Some(sp), Some(dp)) => format!("{name} {src}:{sp} -> {dst}:{dp}"),
        _ => format!("{name} {src} -> {dst}"),
    };
    for (ty, code, id) in [
        (CTA_PROTO_ICMP_TYPE, CTA_PROTO_ICMP_CODE, CTA_PROTO_ICMP_ID),
        (
            CTA_PROTO_ICMPV6_TYPE,
            CTA_PROTO_ICMPV6_CODE,
            CTA_PROTO_ICMPV6_ID,
        ),
    ] {
        if let Some(t) = nested(proto, ty).and_then(|v| v.first()) {
            let c = nested(proto, code).and_then(|v| v.first()).unwrap_or(&0);
            let i = nested(proto, id).and_then(be16).unwrap_or_default();
            let _ = write!(line, " type {t} code {c} id {i}");
        }
    }
    if let Some(zone) = nested(t, CTA_TUPLE_ZONE).and_then(be16) {
        let _ = write!(line, " zone {zone}");
    }
    line
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream, UdpSocket};
    use std::process::{Command, Stdio};

    use super::*;
    use crate::ns::run_in_new;

    /// A rule that needs conntrack: without one a namespace tracks nothing.
    const TRACK: &str = "table inet cryo_ct {
        chain in { type filter hook input priority 0; ct state new,established counter accept; }
    }";

    /// NAT chains with no rule: every entry gets a null binding (both NAT_DONE bits).
    const NULL_NAT: &str = "table ip cryo_nat {
        chain out { type nat hook output priority -100; }
        chain post { type nat hook postrouting priority 100; }
    }";

    /// Loads `ruleset` with `nft -f -` into the calling thread's namespace: a child spawned
    /// by this thread starts in it.
    fn nft(ruleset: &str) {
        let mut child = Command::new("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("this test needs the nft binary (nftables): {e}"));
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(ruleset.as_bytes())
            .expect("write the ruleset to nft");
        let out = child.wait_with_output().expect("wait for nft");
        assert!(
            out.status.success(),
            "nft -f - refused:\n{ruleset}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// nf_conntrack_count of the calling thread's namespace (/proc/sys shows the namespace of
    /// the task that opens it).
    fn count() -> usize {
        std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_count")
            .expect("read nf_conntrack_count")
            .trim()
            .parse()
            .expect("a number")
    }

    /// A TCP connection (data both ways) and a UDP exchange over 127.0.0.1, open while alive.
    struct Traffic {
        tcp: (TcpStream, TcpStream),
        udp: (UdpSocket, UdpSocket),
    }

    impl Traffic {
        fn open() -> Traffic {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let tcp = connect(&listener);
            let a = UdpSocket::bind("127.0.0.1:0").unwrap();
            let b = UdpSocket::bind("127.0.0.1:0").unwrap();
            let mut buf = [0u8; 4];
            a.send_to(b"ping", b.local_addr().unwrap()).unwrap();
            let (_, from) = b.recv_from(&mut buf).unwrap();
            b.send_to(b"pong", from).unwrap();
            a.recv_from(&mut buf).unwrap();
            Traffic { tcp, udp: (a, b) }
        }

        fn tcp_line(&self) -> String {
            tcp_line(&self.tcp.0)
        }

        fn udp_line(&self) -> String {
            let (a, b) = &self.udp;
            format!(
                "udp {} -> {}",
                a.local_addr().unwrap(),
                b.local_addr().unwrap()
            )
        }
    }

    /// Connects to `listener` and exchanges a few bytes: (client, server).
    fn connect(listener: &TcpListener) -> (TcpStream, TcpStream) {
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        let mut buf = [0u8; 4];
        client.write_all(b"ping").unwrap();
        server.read_exact(&mut buf).unwrap();
        server.write_all(b"pong").unwrap();
        client.read_exact(&mut buf).unwrap();
        (client, server)
    }

    fn tcp_line(client: &TcpStream) -> String {
        format!(
            "tcp {} -> {} ESTABLISHED",
            client.local_addr().unwrap(),
            client.peer_addr().unwrap()
        )
    }

    fn sorted(entries: &[Entry]) -> Vec<Entry> {
        let mut v: Vec<Entry> = entries.iter().map(Entry::comparable).collect();
        v.sort_by(|a, b| a.payload.cmp(&b.payload));
        v
    }

    fn lines(entries: &[Entry]) -> Vec<String> {
        entries.iter().map(Entry::describe).collect()
    }

    fn find<'e>(entries: &'e [Entry], line: &str) -> &'e Entry {
        entries
            .iter()
            .find(|e| e.describe() == line)
            .unwrap_or_else(|| panic!("no entry {line:?} in {:?}", lines(entries)))
    }

    /// Captures namespace A (rules `ruleset`, traffic open), makes it again in a fresh B and
    /// checks that B's capture and count are A's. Returns (A's TCP entry, B's).
    fn round_trip(ruleset: &str) -> (Entry, Entry) {
        let (a, a_count, tcp, udp) = run_in_new(|| {
            nft(ruleset);
            let traffic = Traffic::open();
            let entries = capture().expect("capture A");
            (entries, count(), traffic.tcp_line(), traffic.udp_line())
        })
        .unwrap();
        let a_tcp = find(&a, &tcp).clone();
        assert!(
            a.iter().any(|e| e.describe().starts_with(&udp)),
            "no {udp:?} in {:?}",
            lines(&a)
        );
        assert_eq!(a_count, a.len(), "A's count against its capture");
        let (b, b_count) = run_in_new(|| {
            restore(&a).expect("restore into B");
            (capture().expect("capture B"), count())
        })
        .unwrap();
        // The TCP state came back: a mid-stream packet matches `ct state established`.
        let b_tcp = find(&b, &tcp).clone();
        assert_eq!(sorted(&a), sorted(&b));
        assert_eq!(a_count, b_count, "nf_conntrack_count of A and of B");
        (a_tcp, b_tcp)
    }

    #[test]
    fn conntrack_entries_are_made_again_in_another_namespace() {
        let (a, b) = round_trip(TRACK);
        assert!(attr(&a.payload, CTA_PROTOINFO).is_some());
        assert!(
            attr(&b.payload, CTA_NAT_SRC).is_none(),
            "no NAT, no binding"
        );
    }

    #[test]
    fn conntrack_null_nat_bindings_are_made_again() {
        let (a, b) = round_trip(&format!("{TRACK}\n{NULL_NAT}"));
        let status = |e: &Entry| attr(&e.payload, CTA_STATUS).and_then(be32).unwrap();
        assert!(
            attr(&a.payload, CTA_NAT_SRC).is_some(),
            "A's entry has no null binding: status {:#x}",
            status(&a)
        );
        assert!(attr(&b.payload, CTA_NAT_SRC).is_some());
    }

    #[test]
    fn conntrack_of_a_fresh_namespace_is_empty() {
        let (bare, tracking) = run_in_new(|| {
            let bare = capture().expect("capture");
            nft(TRACK);
            (bare, capture().expect("capture with a ct rule"))
        })
        .unwrap();
        assert_eq!(bare, []);
        assert_eq!(tracking, []);
    }

    #[test]
    fn conntrack_restore_of_an_existing_entry_names_it_and_undoes() {
        let (a, tcp, udp) = run_in_new(|| {
            nft(TRACK);
            let traffic = Traffic::open();
            (capture().unwrap(), traffic.tcp_line(), traffic.udp_line())
        })
        .unwrap();
        let tcp = find(&a, &tcp).clone();
        let udp = a
            .iter()
            .find(|e| e.describe().starts_with(&udp))
            .unwrap()
            .clone();
        let (err, left) = run_in_new(|| {
            restore(std::slice::from_ref(&tcp)).expect("restore the TCP entry");
            let err = restore(&[udp.clone(), tcp.clone()]).expect_err("made twice");
            (err, capture().unwrap())
        })
        .unwrap();
        assert_eq!(err.errno(), Errno::EEXIST, "{err}");
        let message = err.to_string();
        assert!(message.contains(&tcp.describe()), "{message}");
        // The UDP entry made before the refusal was deleted again.
        assert_eq!(sorted(&left), [tcp.comparable()]);
    }

    #[test]
    fn conntrack_describe_and_comparable_of_a_captured_entry() {
        let (entries, line) = run_in_new(|| {
            nft(TRACK);
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let (client, _server) = connect(&listener);
            (capture().unwrap(), tcp_line(&client))
        })
        .unwrap();
        let entry = find(&entries, &line);
        assert!(line.starts_with("tcp 127.0.0.1:") && line.ends_with(" ESTABLISHED"));
        assert!(attr(&entry.payload, CTA_TIMEOUT).is_some());
        let comparable = entry.comparable();
        assert!(attr(&comparable.payload, CTA_TIMEOUT).is_none());
        assert_eq!(comparable.describe(), line);
        assert_eq!(comparable.comparable(), comparable);
        // An entry that only ran down its timeout compares equal; another mark does not.
        let with = |ty: u16, value: &[u8]| {
            let mut payload = entry.payload[..NFGENMSG_LEN].to_vec();
            for (raw, v) in crate::attr::raw(&entry.payload[NFGENMSG_LEN..]) {
                put(
                    &mut payload,
                    raw,
                    if raw & NLA_TYPE_MASK == ty { value } else { v },
                );
            }
            Entry {
                family: entry.family,
                payload,
            }
        };
        let later = with(CTA_TIMEOUT, &7u32.to_be_bytes());
        assert_ne!(&later, entry);
        assert_eq!(later.comparable(), comparable);
        assert_ne!(with(CTA_MARK, &7u32.to_be_bytes()).comparable(), comparable);
    }

    #[test]
    fn conntrack_helpers_and_expectations_are_refused() {
        let (helped, expected, line) = run_in_new(|| {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            nft(&format!(
                "table inet cryo_ct {{
                    ct helper ftp-h {{ type \"ftp\" protocol tcp; }}
                    chain in {{ type filter hook input priority 0; ct state new,established accept; }}
                    chain out {{ type filter hook output priority 0; tcp dport {port} ct helper set \"ftp-h\"; }}
                }}"
            ));
            let (mut client, mut server) = connect(&listener);
            let helped = capture().expect_err("an entry with a helper");
            // An active-mode FTP command: the helper expects the data connection it announces.
            // It reads commands only where a line starts, and a line ends first.
            for line in ["NOOP\r\n", "PORT 127,0,0,1,39,16\r\n"] {
                client.write_all(line.as_bytes()).unwrap();
                server.read_exact(&mut vec![0u8; line.len()]).unwrap();
            }
            let expected = capture().expect_err("an expectation");
            (helped, expected, tcp_line(&client))
        })
        .unwrap();
        for err in [&helped, &expected] {
            assert!(matches!(err, NetnsError::Unrestorable { .. }), "{err:?}");
        }
        let (helped, expected) = (helped.to_string(), expected.to_string());
        assert!(
            helped.contains(&line) && helped.contains("helper \"ftp\""),
            "{helped}"
        );
        assert!(expected.contains("expectation tcp"), "{expected}");
        assert!(
            expected.contains("10000") && expected.contains("\"ftp\""),
            "{expected}"
        );
    }

    #[test]
    fn conntrack_entries_with_counters_are_refused() {
        let (err, line) = run_in_new(|| {
            nft(TRACK);
            std::fs::write("/proc/sys/net/netfilter/nf_conntrack_acct", "1")
                .expect("turn accounting on in the namespace");
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let (client, _server) = connect(&listener);
            (capture().expect_err("counted entries"), tcp_line(&client))
        })
        .unwrap();
        assert!(matches!(err, NetnsError::Unrestorable { .. }), "{err:?}");
        let message = err.to_string();
        assert!(
            message.contains(&line) && message.contains("nf_conntrack_acct"),
            "{message}"
        );
    }
}
