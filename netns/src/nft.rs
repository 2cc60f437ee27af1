//! nf_tables netlink messages, built by hand.
//!
//! The layouts follow the kernel's `include/uapi/linux/netfilter/nf_tables.h` and
//! `nfnetlink.h`. Every write to nf_tables goes through one batch, which the kernel commits
//! as one transaction:
//!
//! ```text
//! nlmsghdr{NFNL_MSG_BATCH_BEGIN} nfgenmsg{res_id = NFNL_SUBSYS_NFTABLES}
//! nlmsghdr{NEWTABLE  | ACK} nfgenmsg{inet} NFTA_TABLE_NAME "cryo-<id>"
//! nlmsghdr{NEWCHAIN  | ACK} ... "input"  hook LOCAL_IN  prio INT_MIN policy accept
//! nlmsghdr{NEWCHAIN  | ACK} ... "output" hook LOCAL_OUT prio INT_MIN policy accept
//! nlmsghdr{NEWSET    | ACK} ... "v4" key ipv4_addr . inet_service . ipv4_addr . inet_service
//! nlmsghdr{NEWSET    | ACK} ... "v6" key ipv6_addr . inet_service . ipv6_addr . inet_service
//! nlmsghdr{NEWSETELEM| ACK} ... up to ELEMS_PER_MSG keys (as many messages as needed)
//! nlmsghdr{NEWRULE   | ACK} ... x8: {input, output} x {v4, v6} x {forward, reversed}
//! nlmsghdr{NFNL_MSG_BATCH_END}
//! ```
//!
//! A rule skips the packets that carry the bypass mark (cryo's own injected segments, see
//! [`BYPASS_MARK`](crate::BYPASS_MARK)), loads (saddr, sport, daddr, dport), or the
//! reversed tuple, into consecutive 32-bit registers and looks the concatenation up in the
//! set; a hit drops the packet:
//!
//! ```text
//! meta nfproto == ipv4; meta l4proto == tcp; meta mark != 0xc114;
//! [ip saddr]->r00 [th sport]->r01 [ip daddr]->r02 [th dport]->r03; lookup @v4 r00; drop
//! ```
//!
//! A 2-byte port fills a whole 32-bit register (the kernel zeroes the rest), so each field of
//! a set key is padded to 4 bytes: an IPv4 key is 16 bytes, an IPv6 key 40.

use std::net::{IpAddr, SocketAddr};

/// `struct nlmsghdr` size.
pub(crate) const NLMSG_HDRLEN: usize = 16;
/// `struct nfgenmsg` size.
pub(crate) const NFGENMSG_LEN: usize = 4;

pub(crate) const NLM_F_REQUEST: u16 = 0x1;
pub(crate) const NLM_F_ACK: u16 = 0x4;
pub(crate) const NLM_F_DUMP: u16 = 0x300;
pub(crate) const NLM_F_EXCL: u16 = 0x200;
pub(crate) const NLM_F_CREATE: u16 = 0x400;
pub(crate) const NLM_F_APPEND: u16 = 0x800;
/// In an error reply: the original message was capped to its header.
pub(crate) const NLM_F_CAPPED: u16 = 0x100;
/// In an error reply: extended-ack TLVs follow.
pub(crate) const NLM_F_ACK_TLVS: u16 = 0x200;

pub(crate) const NLMSG_ERROR: u16 = 2;
pub(crate) const NLMSG_DONE: u16 = 3;
pub(crate) const NLMSGERR_ATTR_MSG: u16 = 1;

pub(crate) use crate::attr::NLA_F_NESTED;
pub(crate) use crate::attr::NLA_TYPE_MASK;

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFNETLINK_V0: u8 = 0;

pub(crate) const NFT_MSG_NEWTABLE: u16 = 0;
pub(crate) const NFT_MSG_GETTABLE: u16 = 1;
pub(crate) const NFT_MSG_DELTABLE: u16 = 2;
pub(crate) const NFT_MSG_NEWCHAIN: u16 = 3;
pub(crate) const NFT_MSG_GETCHAIN: u16 = 4;
pub(crate) const NFT_MSG_DELCHAIN: u16 = 5;
pub(crate) const NFT_MSG_NEWRULE: u16 = 6;
pub(crate) const NFT_MSG_GETRULE: u16 = 7;
pub(crate) const NFT_MSG_NEWSET: u16 = 9;
pub(crate) const NFT_MSG_GETSET: u16 = 10;
pub(crate) const NFT_MSG_NEWSETELEM: u16 = 12;
pub(crate) const NFT_MSG_GETSETELEM: u16 = 13;
pub(crate) const NFT_MSG_NEWOBJ: u16 = 18;
pub(crate) const NFT_MSG_GETOBJ: u16 = 19;
pub(crate) const NFT_MSG_NEWFLOWTABLE: u16 = 22;
pub(crate) const NFT_MSG_GETFLOWTABLE: u16 = 23;

pub(crate) const NFPROTO_UNSPEC: u8 = 0;
pub(crate) const NFPROTO_INET: u8 = 1;
const NFPROTO_IPV4: u8 = 2;
const NFPROTO_IPV6: u8 = 10;

const NFTA_TABLE_NAME: u16 = 1;
const NFTA_TABLE_FLAGS: u16 = 2;

const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;

const NFTA_SET_TABLE: u16 = 1;
const NFTA_SET_NAME: u16 = 2;
const NFTA_SET_FLAGS: u16 = 3;
const NFTA_SET_KEY_TYPE: u16 = 4;
const NFTA_SET_KEY_LEN: u16 = 5;
const NFTA_SET_ID: u16 = 10;

const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_SET_ELEM_LIST_SET_ID: u16 = 4;
const NFTA_SET_ELEM_KEY: u16 = 1;

const NFTA_LIST_ELEM: u16 = 1;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;

const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;

const NFTA_META_DREG: u16 = 1;
const NFTA_META_KEY: u16 = 2;
const NFT_META_MARK: u32 = 3;
const NFT_META_NFPROTO: u32 = 15;
const NFT_META_L4PROTO: u32 = 16;

const NFTA_CMP_SREG: u16 = 1;
const NFTA_CMP_OP: u16 = 2;
const NFTA_CMP_DATA: u16 = 3;
const NFT_CMP_EQ: u32 = 0;
const NFT_CMP_NEQ: u32 = 1;

const NFTA_PAYLOAD_DREG: u16 = 1;
const NFTA_PAYLOAD_BASE: u16 = 2;
const NFTA_PAYLOAD_OFFSET: u16 = 3;
const NFTA_PAYLOAD_LEN: u16 = 4;
const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;

const NFTA_LOOKUP_SET: u16 = 1;
const NFTA_LOOKUP_SREG: u16 = 2;
const NFTA_LOOKUP_SET_ID: u16 = 4;

const NFTA_IMMEDIATE_DREG: u16 = 1;
const NFTA_IMMEDIATE_DATA: u16 = 2;

const NFT_REG_VERDICT: u32 = 0;
const NFT_REG_1: u32 = 1;
const NFT_REG32_00: u32 = 8;

const NF_DROP: u32 = 0;
const NF_ACCEPT: u32 = 1;
const NF_INET_LOCAL_IN: u32 = 1;
const NF_INET_LOCAL_OUT: u32 = 3;
/// NF_IP_PRI_FIRST: before conntrack, raw, mangle and every filter chain.
const PRIORITY_FIRST: i32 = i32::MIN;

const IPPROTO_TCP: u8 = 6;

/// nft's datatype ids, so that `nft list` (where it exists) prints the set keys readably.
const TYPE_IPADDR: u32 = 7;
const TYPE_IP6ADDR: u32 = 8;
const TYPE_INET_SERVICE: u32 = 13;
const TYPE_BITS: u32 = 6;

/// Set elements per NEWSETELEM message: the element list is one netlink attribute, whose
/// length is a u16, so a message holds at most 64 KiB of keys. 1,000 IPv6 keys take ~52 KB.
pub(crate) const ELEMS_PER_MSG: usize = 1000;

/// The lock's chains, with their hooks.
pub(crate) const CHAINS: [(&str, u32); 2] =
    [("input", NF_INET_LOCAL_IN), ("output", NF_INET_LOCAL_OUT)];

/// Address family of a set: its name, its key layout and the rule that matches it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Family {
    /// IPv4 tuples, set "v4".
    V4,
    /// IPv6 tuples, set "v6".
    V6,
}

impl Family {
    pub(crate) const ALL: [Family; 2] = [Family::V4, Family::V6];

    pub(crate) fn set_name(self) -> &'static str {
        match self {
            Family::V4 => "v4",
            Family::V6 => "v6",
        }
    }

    /// Batch-local id of the set, so rules and elements in the same batch can name it.
    fn set_id(self) -> u32 {
        match self {
            Family::V4 => 1,
            Family::V6 => 2,
        }
    }

    fn addr_len(self) -> u32 {
        match self {
            Family::V4 => 4,
            Family::V6 => 16,
        }
    }

    /// Offsets of (saddr, daddr) in the network header.
    fn addr_offsets(self) -> (u32, u32) {
        match self {
            Family::V4 => (12, 16),
            Family::V6 => (8, 24),
        }
    }

    fn nfproto(self) -> u8 {
        match self {
            Family::V4 => NFPROTO_IPV4,
            Family::V6 => NFPROTO_IPV6,
        }
    }

    /// Key length in bytes: address, port, address, port, each padded to 4 bytes.
    pub(crate) fn key_len(self) -> usize {
        2 * (self.addr_len() as usize + 4)
    }

    fn key_type(self) -> u32 {
        let addr = match self {
            Family::V4 => TYPE_IPADDR,
            Family::V6 => TYPE_IP6ADDR,
        };
        [addr, TYPE_INET_SERVICE, addr, TYPE_INET_SERVICE]
            .iter()
            .fold(0, |acc, t| (acc << TYPE_BITS) | t)
    }
}

/// The set key of a (local, remote) pair, in the set's layout. Both must be of the same family
/// (the caller normalises v4-mapped addresses first).
pub(crate) fn key(local: &SocketAddr, remote: &SocketAddr) -> (Family, Vec<u8>) {
    fn push(key: &mut Vec<u8>, addr: &SocketAddr) {
        match addr.ip() {
            IpAddr::V4(ip) => key.extend_from_slice(&ip.octets()),
            IpAddr::V6(ip) => key.extend_from_slice(&ip.octets()),
        }
        key.extend_from_slice(&addr.port().to_be_bytes());
        key.extend_from_slice(&[0, 0]);
    }
    let family = if local.is_ipv4() {
        Family::V4
    } else {
        Family::V6
    };
    let mut k = Vec::with_capacity(family.key_len());
    push(&mut k, local);
    push(&mut k, remote);
    debug_assert_eq!(k.len(), family.key_len());
    (family, k)
}

/// Attribute writer over a message buffer.
pub(crate) struct Attrs<'a> {
    buf: &'a mut Vec<u8>,
}

fn pad(buf: &mut Vec<u8>) {
    buf.resize(buf.len().next_multiple_of(4), 0);
}

impl Attrs<'_> {
    fn bytes(&mut self, ty: u16, data: &[u8]) {
        let len = u16::try_from(4 + data.len()).expect("netlink attribute over 64 KiB");
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
        pad(self.buf);
    }

    fn be32(&mut self, ty: u16, v: u32) {
        self.bytes(ty, &v.to_be_bytes());
    }

    fn str(&mut self, ty: u16, s: &str) {
        let mut v = Vec::with_capacity(s.len() + 1);
        v.extend_from_slice(s.as_bytes());
        v.push(0);
        self.bytes(ty, &v);
    }

    fn nested(&mut self, ty: u16, f: impl FnOnce(&mut Attrs<'_>)) {
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0, 0]);
        self.buf
            .extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
        f(&mut Attrs { buf: self.buf });
        let len = u16::try_from(self.buf.len() - start).expect("netlink attribute over 64 KiB");
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    }

    /// One expression of a rule: `NFTA_LIST_ELEM { NAME, DATA { ... } }`.
    fn expr(&mut self, name: &str, f: impl FnOnce(&mut Attrs<'_>)) {
        self.nested(NFTA_LIST_ELEM, |e| {
            e.str(NFTA_EXPR_NAME, name);
            e.nested(NFTA_EXPR_DATA, f);
        });
    }
}

/// Appends one netlink message with an nfgenmsg header.
fn put_msg(
    buf: &mut Vec<u8>,
    msg_type: u16,
    flags: u16,
    seq: u32,
    family: u8,
    res_id: u16,
    f: impl FnOnce(&mut Attrs<'_>),
) {
    let start = buf.len();
    buf.extend_from_slice(&[0; 4]); // nlmsg_len, patched below
    buf.extend_from_slice(&msg_type.to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_pid: the kernel
    buf.push(family);
    buf.push(NFNETLINK_V0);
    buf.extend_from_slice(&res_id.to_be_bytes());
    f(&mut Attrs { buf });
    let len = u32::try_from(buf.len() - start).expect("netlink message over 4 GiB");
    buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
    debug_assert!(buf.len() - start >= NLMSG_HDRLEN + NFGENMSG_LEN);
}

fn nft_type(msg: u16) -> u16 {
    (NFNL_SUBSYS_NFTABLES << 8) | msg
}

/// A transaction under construction: BATCH_BEGIN, messages each acked, BATCH_END.
pub(crate) struct Batch {
    buf: Vec<u8>,
    next_seq: u32,
    begin_seq: u32,
    /// (sequence number, step name) of every message that asked for an ACK.
    steps: Vec<(u32, String)>,
}

/// A finished batch, ready to send.
pub(crate) struct Encoded {
    /// The bytes of the whole batch, sent with one sendmsg.
    pub(crate) bytes: Vec<u8>,
    /// Sequence number of BATCH_BEGIN (batch-level errors come back with it).
    pub(crate) begin_seq: u32,
    /// (sequence number, step) of every message expecting an ACK.
    pub(crate) steps: Vec<(u32, String)>,
}

impl Batch {
    pub(crate) fn new(first_seq: u32) -> Batch {
        let mut buf = Vec::with_capacity(4096);
        put_msg(
            &mut buf,
            NFNL_MSG_BATCH_BEGIN,
            NLM_F_REQUEST,
            first_seq,
            NFPROTO_UNSPEC,
            NFNL_SUBSYS_NFTABLES,
            |_| {},
        );
        Batch {
            buf,
            next_seq: first_seq.wrapping_add(1),
            begin_seq: first_seq,
            steps: Vec::new(),
        }
    }

    /// Message `msg` (an `NFT_MSG_*`) of `family` with `flags` besides REQUEST and ACK, its
    /// attributes written by `f`; its ACK is step `step`.
    fn push(
        &mut self,
        msg: u16,
        flags: u16,
        family: u8,
        step: String,
        f: impl FnOnce(&mut Attrs<'_>),
    ) {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        put_msg(
            &mut self.buf,
            nft_type(msg),
            NLM_F_REQUEST | NLM_F_ACK | flags,
            seq,
            family,
            0,
            f,
        );
        self.steps.push((seq, step));
    }

    fn msg(&mut self, msg: u16, flags: u16, step: String, f: impl FnOnce(&mut Attrs<'_>)) {
        self.push(msg, flags, NFPROTO_INET, step, f);
    }

    /// Message `msg` (an `NFT_MSG_*`) of `family` with `flags` besides REQUEST and ACK, its
    /// attributes already encoded.
    pub(crate) fn raw(&mut self, msg: u16, flags: u16, family: u8, step: String, attrs: &[u8]) {
        self.push(msg, flags, family, step, |a| a.buf.extend_from_slice(attrs));
    }

    /// `add table inet <table>`, failing with EEXIST if it exists.
    pub(crate) fn new_table(&mut self, table: &str) {
        self.msg(
            NFT_MSG_NEWTABLE,
            NLM_F_CREATE | NLM_F_EXCL,
            "new table".into(),
            |a| {
                a.str(NFTA_TABLE_NAME, table);
                a.be32(NFTA_TABLE_FLAGS, 0);
            },
        );
    }

    /// `delete table inet <table>` (ENOENT if it does not exist).
    pub(crate) fn del_table(&mut self, table: &str) {
        self.msg(NFT_MSG_DELTABLE, 0, "delete table".into(), |a| {
            a.str(NFTA_TABLE_NAME, table);
        });
    }

    /// A base filter chain on `hook`, first of all chains, policy accept.
    pub(crate) fn new_chain(&mut self, table: &str, chain: &str, hook: u32) {
        self.msg(
            NFT_MSG_NEWCHAIN,
            NLM_F_CREATE | NLM_F_EXCL,
            format!("new chain {chain}"),
            |a| {
                a.str(NFTA_CHAIN_TABLE, table);
                a.str(NFTA_CHAIN_NAME, chain);
                a.nested(NFTA_CHAIN_HOOK, |h| {
                    h.be32(NFTA_HOOK_HOOKNUM, hook);
                    h.be32(NFTA_HOOK_PRIORITY, PRIORITY_FIRST as u32);
                });
                a.be32(NFTA_CHAIN_POLICY, NF_ACCEPT);
                a.str(NFTA_CHAIN_TYPE, "filter");
            },
        );
    }

    /// A hash set of concatenated 4-tuple keys.
    pub(crate) fn new_set(&mut self, table: &str, family: Family) {
        let step = format!("new set {}", family.set_name());
        self.msg(NFT_MSG_NEWSET, NLM_F_CREATE | NLM_F_EXCL, step, |a| {
            a.str(NFTA_SET_TABLE, table);
            a.str(NFTA_SET_NAME, family.set_name());
            a.be32(NFTA_SET_FLAGS, 0);
            a.be32(NFTA_SET_KEY_TYPE, family.key_type());
            a.be32(NFTA_SET_KEY_LEN, family.key_len() as u32);
            a.be32(NFTA_SET_ID, family.set_id());
        });
    }

    /// Adds `keys` to a set, in as many messages as needed. `same_batch` when the set is
    /// created in this batch (then the batch-local set id is passed too).
    pub(crate) fn new_elems(
        &mut self,
        table: &str,
        family: Family,
        keys: &[Vec<u8>],
        same_batch: bool,
    ) {
        let chunks = keys.len().div_ceil(ELEMS_PER_MSG);
        for (i, chunk) in keys.chunks(ELEMS_PER_MSG).enumerate() {
            let step = format!(
                "new set elements {} ({}/{chunks}, {} keys)",
                family.set_name(),
                i + 1,
                chunk.len()
            );
            self.msg(NFT_MSG_NEWSETELEM, NLM_F_CREATE, step, |a| {
                a.str(NFTA_SET_ELEM_LIST_TABLE, table);
                a.str(NFTA_SET_ELEM_LIST_SET, family.set_name());
                if same_batch {
                    a.be32(NFTA_SET_ELEM_LIST_SET_ID, family.set_id());
                }
                a.nested(NFTA_SET_ELEM_LIST_ELEMENTS, |l| {
                    for k in chunk {
                        l.nested(NFTA_LIST_ELEM, |e| {
                            e.nested(NFTA_SET_ELEM_KEY, |d| d.bytes(NFTA_DATA_VALUE, k));
                        });
                    }
                });
            });
        }
    }

    /// `meta nfproto <family> meta l4proto tcp meta mark != <bypass_mark>
    /// <tuple or reversed tuple> @set drop`.
    pub(crate) fn new_rule(
        &mut self,
        table: &str,
        chain: &str,
        family: Family,
        reversed: bool,
        bypass_mark: u32,
    ) {
        let dir = if reversed { "reversed" } else { "forward" };
        let step = format!("new rule {chain} {} {dir}", family.set_name());
        self.msg(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, step, |a| {
            a.str(NFTA_RULE_TABLE, table);
            a.str(NFTA_RULE_CHAIN, chain);
            a.nested(NFTA_RULE_EXPRESSIONS, |x| {
                meta_eq(x, NFT_META_NFPROTO, family.nfproto());
                meta_eq(x, NFT_META_L4PROTO, IPPROTO_TCP);
                // The mark is a host-order u32 in the register, as nft encodes it.
                meta_cmp(x, NFT_META_MARK, NFT_CMP_NEQ, &bypass_mark.to_ne_bytes());
                let (saddr, daddr) = family.addr_offsets();
                let (sport, dport) = (0, 2);
                let regs_per_addr = family.addr_len() / 4;
                let (first, second) = if reversed {
                    ((daddr, dport), (saddr, sport))
                } else {
                    ((saddr, sport), (daddr, dport))
                };
                let mut reg = NFT_REG32_00;
                for (addr, port) in [first, second] {
                    payload(x, reg, NFT_PAYLOAD_NETWORK_HEADER, addr, family.addr_len());
                    reg += regs_per_addr;
                    payload(x, reg, NFT_PAYLOAD_TRANSPORT_HEADER, port, 2);
                    reg += 1;
                }
                x.expr("lookup", |l| {
                    l.str(NFTA_LOOKUP_SET, family.set_name());
                    l.be32(NFTA_LOOKUP_SREG, NFT_REG32_00);
                    l.be32(NFTA_LOOKUP_SET_ID, family.set_id());
                });
                x.expr("immediate", |i| {
                    i.be32(NFTA_IMMEDIATE_DREG, NFT_REG_VERDICT);
                    i.nested(NFTA_IMMEDIATE_DATA, |d| {
                        d.nested(NFTA_DATA_VERDICT, |v| v.be32(NFTA_VERDICT_CODE, NF_DROP));
                    });
                });
            });
        });
    }

    pub(crate) fn finish(mut self) -> Encoded {
        put_msg(
            &mut self.buf,
            NFNL_MSG_BATCH_END,
            NLM_F_REQUEST,
            self.next_seq,
            NFPROTO_UNSPEC,
            NFNL_SUBSYS_NFTABLES,
            |_| {},
        );
        Encoded {
            bytes: self.buf,
            begin_seq: self.begin_seq,
            steps: self.steps,
        }
    }
}

fn meta_eq(x: &mut Attrs<'_>, key: u32, value: u8) {
    meta_cmp(x, key, NFT_CMP_EQ, &[value]);
}

/// `meta <key> <op> <value>`: the meta key loaded into register 1, then compared.
fn meta_cmp(x: &mut Attrs<'_>, key: u32, op: u32, value: &[u8]) {
    x.expr("meta", |m| {
        m.be32(NFTA_META_KEY, key);
        m.be32(NFTA_META_DREG, NFT_REG_1);
    });
    x.expr("cmp", |c| {
        c.be32(NFTA_CMP_SREG, NFT_REG_1);
        c.be32(NFTA_CMP_OP, op);
        c.nested(NFTA_CMP_DATA, |d| d.bytes(NFTA_DATA_VALUE, value));
    });
}

fn payload(x: &mut Attrs<'_>, dreg: u32, base: u32, offset: u32, len: u32) {
    x.expr("payload", |p| {
        p.be32(NFTA_PAYLOAD_DREG, dreg);
        p.be32(NFTA_PAYLOAD_BASE, base);
        p.be32(NFTA_PAYLOAD_OFFSET, offset);
        p.be32(NFTA_PAYLOAD_LEN, len);
    });
}

/// `GETTABLE` dump request for every family (not part of a batch).
pub(crate) fn get_tables(seq: u32) -> Vec<u8> {
    dump_request(NFT_MSG_GETTABLE, NFPROTO_UNSPEC, seq, &[])
}

/// A dump request of `msg` (an `NFT_MSG_GET*`) for `family` (NFPROTO_UNSPEC: every family),
/// with attributes already encoded (not part of a batch).
pub(crate) fn dump_request(msg: u16, family: u8, seq: u32, attrs: &[u8]) -> Vec<u8> {
    let mut buf = Vec::new();
    put_msg(
        &mut buf,
        nft_type(msg),
        NLM_F_REQUEST | NLM_F_DUMP,
        seq,
        family,
        0,
        |a| a.buf.extend_from_slice(attrs),
    );
    buf
}

/// The nf_tables message number of a netlink message type (`NFT_MSG_*`), or `None` for
/// another subsystem's.
pub(crate) fn nft_msg(msg_type: u16) -> Option<u16> {
    (msg_type >> 8 == NFNL_SUBSYS_NFTABLES).then_some(msg_type & 0xff)
}

/// A `NEWTABLE` answer of a GETTABLE dump, as (type, payload) from
/// [`parse_dump_part`](crate::netlink::parse_dump_part): its (family, name); `None` for any
/// other message or one without a name.
pub fn parse_table(msg_type: u16, payload: &[u8]) -> Option<(u8, String)> {
    if msg_type != nft_type(NFT_MSG_NEWTABLE) || payload.len() < NFGENMSG_LEN {
        return None;
    }
    let family = payload[0];
    attrs(&payload[NFGENMSG_LEN..])
        .find(|(ty, _)| *ty == NFTA_TABLE_NAME)
        .map(|(_, v)| {
            let v = v.split(|b| *b == 0).next().unwrap_or(&[]);
            (family, String::from_utf8_lossy(v).into_owned())
        })
}

/// Iterates the (type, value) attributes of a buffer; stops at the first malformed one.
pub(crate) fn attrs(buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    crate::attr::all(buf)
}

/// Iterates the (header fields, payload) messages of a receive buffer.
pub(crate) fn messages(mut buf: &[u8]) -> impl Iterator<Item = (MsgHdr, &[u8])> {
    std::iter::from_fn(move || {
        if buf.len() < NLMSG_HDRLEN {
            return None;
        }
        let hdr = MsgHdr::parse(buf);
        let len = hdr.len as usize;
        if len < NLMSG_HDRLEN || len > buf.len() {
            return None;
        }
        let payload = &buf[NLMSG_HDRLEN..len];
        buf = &buf[len.next_multiple_of(4).min(buf.len())..];
        Some((hdr, payload))
    })
}

/// The fields of a `struct nlmsghdr`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MsgHdr {
    pub(crate) len: u32,
    pub(crate) ty: u16,
    pub(crate) flags: u16,
    pub(crate) seq: u32,
}

impl MsgHdr {
    /// Parses the first 16 bytes of `b` (which must be at least that long).
    pub(crate) fn parse(b: &[u8]) -> MsgHdr {
        MsgHdr {
            len: u32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
            ty: u16::from_ne_bytes([b[4], b[5]]),
            flags: u16::from_ne_bytes([b[6], b[7]]),
            seq: u32::from_ne_bytes([b[8], b[9], b[10], b[11]]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_padded_per_field() {
        let l: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let r: SocketAddr = "10.0.0.2:40000".parse().unwrap();
        let (f, k) = key(&l, &r);
        assert_eq!(f, Family::V4);
        assert_eq!(k, [10, 0, 0, 1, 0, 80, 0, 0, 10, 0, 0, 2, 0x9c, 0x40, 0, 0]);
        let l: SocketAddr = "[::1]:1".parse().unwrap();
        let (f, k) = key(&l, &l);
        assert_eq!(f, Family::V6);
        assert_eq!(k.len(), 40);
        assert_eq!(&k[16..20], &[0, 1, 0, 0]);
    }

    #[test]
    fn key_type_is_nft_concat() {
        // nft: ipv4_addr . inet_service . ipv4_addr . inet_service
        assert_eq!(Family::V4.key_type(), (((7 << 6 | 13) << 6 | 7) << 6) | 13);
    }

    #[test]
    fn batch_is_well_formed() {
        let mut b = Batch::new(100);
        b.new_table("cryo-x");
        b.new_set("cryo-x", Family::V6);
        let keys: Vec<Vec<u8>> = (0..2500u32)
            .map(|i| [i.to_be_bytes(); 10].concat())
            .collect();
        b.new_elems("cryo-x", Family::V6, &keys, true);
        b.new_rule("cryo-x", "input", Family::V6, true, 0xc114);
        let e = b.finish();
        assert_eq!(e.begin_seq, 100);
        // table, set, 3 element messages, rule
        assert_eq!(e.steps.len(), 6);
        let msgs: Vec<_> = messages(&e.bytes).collect();
        assert_eq!(msgs.len(), 8);
        assert_eq!(msgs[0].0.ty, NFNL_MSG_BATCH_BEGIN);
        assert_eq!(msgs[7].0.ty, NFNL_MSG_BATCH_END);
        let total: usize = msgs.iter().map(|(h, _)| h.len as usize).sum();
        assert_eq!(total, e.bytes.len());
        for (h, _) in &msgs[1..7] {
            assert_eq!(h.flags & NLM_F_ACK, NLM_F_ACK);
        }
        // the element list of the first chunk holds 1,000 keys
        let (_, p) = msgs[3];
        let elems = attrs(&p[NFGENMSG_LEN..])
            .find(|(t, _)| *t == NFTA_SET_ELEM_LIST_ELEMENTS)
            .unwrap()
            .1;
        assert_eq!(attrs(elems).count(), ELEMS_PER_MSG);
    }

    #[test]
    fn parse_table_reply() {
        let mut buf = Vec::new();
        put_msg(
            &mut buf,
            nft_type(NFT_MSG_NEWTABLE),
            0,
            1,
            NFPROTO_INET,
            0,
            |a| {
                a.str(NFTA_TABLE_NAME, "cryo-7");
                a.be32(NFTA_TABLE_FLAGS, 0);
            },
        );
        let (h, p) = messages(&buf).next().unwrap();
        assert_eq!(
            parse_table(h.ty, p),
            Some((NFPROTO_INET, "cryo-7".to_string()))
        );
    }
}
