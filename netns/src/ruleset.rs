//! The nf_tables ruleset of a namespace: every table, chain, set with its elements, stateful
//! object, flowtable and rule, read over netlink as the kernel dumps them and made again in
//! another namespace in one transaction, with the same handles, rule order and counters.
//!
//! ```text
//! capture   GETTABLE, GETCHAIN, GETSET, GETOBJ, GETFLOWTABLE, GETRULE dumps (every family),
//!           GETSETELEM per set; all of one ruleset generation (else read again)
//! replay    one batch, per table in handle order: NEWTABLE, then its chains, sets, objects,
//!           flowtables and rules in handle order (the order they were made in, so what one
//!           refers to exists first), a gap in the handles filled by a chain made and
//!           deleted in the same batch (handles count per table, from 1 in a new one); an
//!           anonymous set's elements right after it (it is constant once a rule binds it),
//!           a named set's after the table's rules; each rule placed after the nearest rule
//!           before it in its chain that exists already (NFTA_RULE_POSITION), else first
//! compare   the dumps with each set's elements sorted (a hash set lists them in its own
//!           random order) and without their time left (EXPIRATION)
//! ```
//!
//! A table owned by a netlink socket (NFT_TABLE_F_OWNER: it goes with its owner) and a chain
//! bound to a rule (NFT_CHAIN_BINDING) are refused; whatever the kernel does not take back
//! (a rule whose x_tables match needs the protocol iptables-nft gave out of band) fails the
//! replay, which the dump tries on a replica first.

use std::collections::{HashMap, HashSet};

use nix::errno::Errno;
use nix::sys::socket::SockProtocol;

use crate::attr::{be32, be64, family_name, put as put_attr, text, without, NLA_F_NESTED};
use crate::error::NetnsError;
use crate::netlink::{NlError, NlSocket};
use crate::nft::{self, Batch, NFGENMSG_LEN};
use crate::state::nl;

const NFTA_TABLE_NAME: u16 = 1;
const NFTA_TABLE_FLAGS: u16 = 2;
const NFT_TABLE_F_OWNER: u32 = 0x2;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_FLAGS: u16 = 10;
const NFT_CHAIN_BINDING: u32 = 0x4;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_POSITION: u16 = 6;
const NFTA_SET_NAME: u16 = 2;
const NFTA_SET_FLAGS: u16 = 3;
const NFTA_SET_ID: u16 = 10;
const NFT_SET_ANONYMOUS: u32 = 0x1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_SET_ELEM_EXPIRATION: u16 = 5;
/// Every kind's table name is attribute 1 (a table's own name too).
const NFTA_ANY_TABLE: u16 = 1;
const NFTA_LIST_ELEM: u16 = 1;

/// How many times the dumps are read again when the ruleset changed while they were read.
const CAPTURE_ATTEMPTS: usize = 3;

/// The kind of an nf_tables object of a ruleset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// A table.
    Table,
    /// A chain.
    Chain,
    /// A set or map.
    Set,
    /// Elements of a set (one dump message's worth).
    Elements,
    /// A stateful object (named counter, quota, limit, ct helper...).
    Object,
    /// A flowtable.
    Flowtable,
    /// A rule.
    Rule,
}

impl Kind {
    const ALL: [Kind; 7] = [
        Kind::Table,
        Kind::Chain,
        Kind::Set,
        Kind::Elements,
        Kind::Object,
        Kind::Flowtable,
        Kind::Rule,
    ];

    /// Its number in an image (1 to 7).
    pub fn code(self) -> u32 {
        Kind::ALL
            .iter()
            .position(|k| *k == self)
            .expect("every kind is listed") as u32
            + 1
    }

    /// The kind of image number `code`.
    pub fn from_code(code: u32) -> Option<Kind> {
        Kind::ALL.get((code as usize).checked_sub(1)?).copied()
    }

    /// The dump request's message and the create message.
    fn messages(self) -> (u16, u16) {
        match self {
            Kind::Table => (nft::NFT_MSG_GETTABLE, nft::NFT_MSG_NEWTABLE),
            Kind::Chain => (nft::NFT_MSG_GETCHAIN, nft::NFT_MSG_NEWCHAIN),
            Kind::Set => (nft::NFT_MSG_GETSET, nft::NFT_MSG_NEWSET),
            Kind::Elements => (nft::NFT_MSG_GETSETELEM, nft::NFT_MSG_NEWSETELEM),
            Kind::Object => (nft::NFT_MSG_GETOBJ, nft::NFT_MSG_NEWOBJ),
            Kind::Flowtable => (nft::NFT_MSG_GETFLOWTABLE, nft::NFT_MSG_NEWFLOWTABLE),
            Kind::Rule => (nft::NFT_MSG_GETRULE, nft::NFT_MSG_NEWRULE),
        }
    }

    /// Attribute numbers of its handle, and of what a create message must not carry: the
    /// handle (it would name an object to replace), use counts, positions, transaction ids.
    fn handle_and_dropped(self) -> (Option<u16>, &'static [u16]) {
        match self {
            // USE, HANDLE, PAD, OWNER.
            Kind::Table => (Some(4), &[3, 4, 5, 7]),
            // HANDLE, USE, PAD, ID.
            Kind::Chain => (Some(2), &[2, 6, 9, 11]),
            // ID, PAD, HANDLE, TYPE and COUNT (linux 6.18: the backend's name and the number
            // of elements, dump only).
            Kind::Set => (Some(16), &[10, 14, 16, 19, 20]),
            Kind::Elements => (None, &[]),
            // USE, HANDLE, PAD.
            Kind::Object => (Some(6), &[5, 6, 7]),
            // USE, HANDLE, PAD.
            Kind::Flowtable => (Some(5), &[4, 5, 6]),
            // HANDLE, POSITION, PAD, ID, POSITION_ID, CHAIN_ID.
            Kind::Rule => (Some(3), &[3, 6, 8, 9, 10, 11]),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Table => "table",
            Kind::Chain => "chain",
            Kind::Set => "set",
            Kind::Elements => "elements of set",
            Kind::Object => "object",
            Kind::Flowtable => "flowtable",
            Kind::Rule => "rule",
        }
    }
}

/// One object of a ruleset as the kernel's dump gave it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Item {
    /// What it is.
    pub kind: Kind,
    /// Its family (NFPROTO_*).
    pub family: u8,
    /// Its attributes, as dumped.
    pub attrs: Vec<u8>,
}

impl Item {
    fn attr(&self, ty: u16) -> Option<&[u8]> {
        nft::attrs(&self.attrs)
            .find(|(t, _)| *t == ty)
            .map(|(_, v)| v)
    }

    fn text_attr(&self, ty: u16) -> String {
        self.attr(ty).map(text).unwrap_or_default()
    }

    /// The table it is in (its own name for a table).
    pub fn table(&self) -> String {
        self.text_attr(NFTA_ANY_TABLE)
    }

    fn handle(&self) -> Option<u64> {
        self.kind
            .handle_and_dropped()
            .0
            .and_then(|ty| be64(self.attr(ty)?))
    }

    /// The set an Elements item belongs to, a set's own name.
    fn set_name(&self) -> String {
        match self.kind {
            Kind::Elements => self.text_attr(NFTA_SET_ELEM_LIST_SET),
            _ => self.text_attr(NFTA_SET_NAME),
        }
    }

    fn anonymous_set(&self) -> bool {
        self.kind == Kind::Set
            && self.attr(NFTA_SET_FLAGS).and_then(be32).unwrap_or(0) & NFT_SET_ANONYMOUS != 0
    }

    /// "nftables rule inet filter input handle 4": how errors name it.
    pub fn describe(&self) -> String {
        let family = family_name(self.family);
        let table = self.table();
        let handle = self
            .handle()
            .map_or(String::new(), |h| format!(" handle {h}"));
        let what = match self.kind {
            Kind::Table => format!("{family} {table}"),
            Kind::Chain => format!("{family} {table} {}", self.text_attr(NFTA_CHAIN_NAME)),
            Kind::Rule => format!("{family} {table} {}", self.text_attr(NFTA_RULE_CHAIN)),
            Kind::Set | Kind::Elements => format!("{family} {table} {}", self.set_name()),
            // Objects and flowtables: NAME is attribute 2.
            Kind::Object | Kind::Flowtable => format!("{family} {table} {}", self.text_attr(2)),
        };
        format!("nftables {} {what}{handle}", self.kind.name())
    }

    /// Its attributes for a create message: without what [`Kind::handle_and_dropped`] names.
    fn create_attrs(&self) -> Vec<u8> {
        without(&self.attrs, self.kind.handle_and_dropped().1)
    }
}

/// Every object of the nf_tables ruleset of the calling thread's network namespace, in the
/// order the dumps gave them: tables, chains, sets (each followed by its elements), objects,
/// flowtables, rules. Empty without nf_tables.
pub fn capture() -> Result<Vec<Item>, NetnsError> {
    let sock = match NlSocket::open(SockProtocol::NetlinkNetFilter) {
        Ok(s) => s,
        Err(NlError::Socket(_, Errno::EPROTONOSUPPORT)) => return Ok(Vec::new()),
        Err(e) => return Err(nl("open nfnetlink socket")(e)),
    };
    for _ in 0..CAPTURE_ATTEMPTS {
        if let Some(items) = capture_once(&sock)? {
            refuse_unrestorable(&items)?;
            return Ok(items);
        }
    }
    Err(NetnsError::Unrestorable {
        what: "nftables ruleset".into(),
        why: format!("changed while it was read, {CAPTURE_ATTEMPTS} times"),
    })
}

/// One reading of every dump; `None` when they are not all of one generation.
fn capture_once(sock: &NlSocket) -> Result<Option<Vec<Item>>, NetnsError> {
    let mut generation = None;
    let mut same_generation = true;
    let mut dump = |kind: Kind, family: u8, attrs: &[u8]| -> Result<Vec<Item>, NetnsError> {
        let seq = sock.next_seq();
        let request = nft::dump_request(kind.messages().0, family, seq, attrs);
        let answers = match sock.dump(&request, seq) {
            Ok(a) => a,
            // nf_tables not loaded: nothing.
            Err(NlError::Kernel { errno, .. })
                if errno == Errno::EOPNOTSUPP || errno == Errno::ENOENT =>
            {
                Vec::new()
            }
            Err(e) => return Err(nl(format!("dump nftables {}s", kind.name()))(e)),
        };
        let mut out = Vec::new();
        for (ty, payload) in answers {
            if nft::nft_msg(ty) != Some(kind.messages().1) || payload.len() < NFGENMSG_LEN {
                continue;
            }
            let gen = u16::from_be_bytes([payload[2], payload[3]]);
            let attrs = &payload[NFGENMSG_LEN..];
            // A dump of elements can end with a message that lists none.
            let no_elements = || {
                nft::attrs(attrs)
                    .find(|(t, _)| *t == NFTA_SET_ELEM_LIST_ELEMENTS)
                    .is_none_or(|(_, v)| v.is_empty())
            };
            if kind == Kind::Elements && no_elements() {
                continue;
            }
            same_generation &= *generation.get_or_insert(gen) == gen;
            out.push(Item {
                kind,
                family: payload[0],
                attrs: attrs.to_vec(),
            });
        }
        Ok(out)
    };
    let unspec = nft::NFPROTO_UNSPEC;
    let tables = dump(Kind::Table, unspec, &[])?;
    if tables.is_empty() {
        return Ok(Some(Vec::new()));
    }
    let mut items = tables;
    items.extend(dump(Kind::Chain, unspec, &[])?);
    for set in dump(Kind::Set, unspec, &[])? {
        let mut which = Vec::new();
        put_attr(
            &mut which,
            NFTA_ANY_TABLE,
            set.attr(NFTA_ANY_TABLE).unwrap_or(&[]),
        );
        put_attr(
            &mut which,
            NFTA_SET_ELEM_LIST_SET,
            set.attr(NFTA_SET_NAME).unwrap_or(&[]),
        );
        let elements = dump(Kind::Elements, set.family, &which)?;
        items.push(set);
        items.extend(elements);
    }
    items.extend(dump(Kind::Object, unspec, &[])?);
    items.extend(dump(Kind::Flowtable, unspec, &[])?);
    items.extend(dump(Kind::Rule, unspec, &[])?);
    Ok(same_generation.then_some(items))
}

fn refuse_unrestorable(items: &[Item]) -> Result<(), NetnsError> {
    for item in items {
        let flags = |ty| item.attr(ty).and_then(be32).unwrap_or(0);
        let why = match item.kind {
            Kind::Table if flags(NFTA_TABLE_FLAGS) & NFT_TABLE_F_OWNER != 0 => {
                "owned by a netlink socket (NFT_TABLE_F_OWNER), which only its owner holds"
            }
            Kind::Chain if flags(NFTA_CHAIN_FLAGS) & NFT_CHAIN_BINDING != 0 => {
                "bound to a rule (NFT_CHAIN_BINDING)"
            }
            _ => continue,
        };
        return Err(NetnsError::Unrestorable {
            what: item.describe(),
            why: why.into(),
        });
    }
    Ok(())
}

/// Makes `items` (a [`capture`]) in the calling thread's network namespace, which holds no
/// nf_tables table yet, in one transaction (see the module's documentation for the order).
pub fn restore(items: &[Item]) -> Result<(), NetnsError> {
    apply(items, Phase::Whole)
}

/// [`restore`] in two steps: the tables alone first (their handles are the namespace's:
/// whatever is made in it after them takes the handles that follow), then
/// [`restore_members`] (handles of chains, sets and rules count per table).
pub fn restore_tables(items: &[Item]) -> Result<(), NetnsError> {
    apply(items, Phase::Tables)
}

/// The rest of [`restore`] once [`restore_tables`] made the tables.
pub fn restore_members(items: &[Item]) -> Result<(), NetnsError> {
    apply(items, Phase::Members)
}

/// What part of a ruleset a restore makes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Whole,
    Tables,
    Members,
}

fn apply(items: &[Item], phase: Phase) -> Result<(), NetnsError> {
    if items.is_empty() {
        return Ok(());
    }
    let sock =
        NlSocket::open(SockProtocol::NetlinkNetFilter).map_err(nl("open nfnetlink socket"))?;
    let mut batch = Batch::new(sock.next_seq());
    replay(items, &mut batch, phase)?;
    let encoded = batch.finish();
    sock.transact(&encoded.bytes, Some(encoded.begin_seq), &encoded.steps)
        .map_err(|e| match e {
            // The refused message names the object.
            NlError::Kernel {
                step,
                errno,
                message,
            } => NetnsError::Netlink {
                step: match message {
                    Some(m) if !m.is_empty() => format!("make {step} again ({m})"),
                    _ => format!("make {step} again"),
                },
                errno,
            },
            other => nl("make the nftables ruleset again")(other),
        })
}

/// What is not made again as it is: out of reach of a create message.
fn unreachable_handle(item: &Item, next: u64) -> NetnsError {
    NetnsError::Unrestorable {
        what: item.describe(),
        why: format!(
            "its handle comes before {next}, the next one the namespace gives (it is not new)"
        ),
    }
}

/// (family, table, name): a chain's or a set's key.
type Key = (u8, String, String);

/// Makes and deletes, in `batch`, one object per handle of `gap` (its attributes from
/// `attrs`), with create and delete messages `new` and `del`: handles count on, nothing is
/// left.
fn burn(
    batch: &mut Batch,
    gap: std::ops::Range<u64>,
    (new, del): (u16, u16),
    family: u8,
    attrs: impl Fn(u64) -> Vec<u8>,
) {
    use nft::{NLM_F_CREATE, NLM_F_EXCL};
    for n in gap {
        let gap = attrs(n);
        batch.raw(
            new,
            NLM_F_CREATE | NLM_F_EXCL,
            family,
            "handle gap".into(),
            &gap,
        );
        batch.raw(del, 0, family, "handle gap".into(), &gap);
    }
}

fn replay(items: &[Item], batch: &mut Batch, phase: Phase) -> Result<(), NetnsError> {
    use nft::{NLM_F_CREATE, NLM_F_EXCL};
    let create = NLM_F_CREATE | NLM_F_EXCL;
    // Each chain's rule handles in chain order, each set's elements: gathered once.
    let mut chains: HashMap<Key, Vec<u64>> = HashMap::new();
    let mut elements: HashMap<Key, Vec<&Item>> = HashMap::new();
    for i in items {
        match i.kind {
            Kind::Rule => chains
                .entry((i.family, i.table(), i.text_attr(NFTA_RULE_CHAIN)))
                .or_default()
                .extend(i.handle()),
            Kind::Elements => elements
                .entry((i.family, i.table(), i.set_name()))
                .or_default()
                .push(i),
            _ => {}
        }
    }
    let add_elements = |batch: &mut Batch, set: &Item| {
        let key = (set.family, set.table(), set.set_name());
        for e in elements.get(&key).into_iter().flatten() {
            batch.raw(
                nft::NFT_MSG_NEWSETELEM,
                create,
                set.family,
                e.describe(),
                &e.attrs,
            );
        }
    };
    let mut tables: Vec<&Item> = items.iter().filter(|i| i.kind == Kind::Table).collect();
    tables.sort_by_key(|t| t.handle());
    let mut next_table = 1;
    for table in tables {
        let name = table.table();
        let handle = table.handle().unwrap_or(next_table);
        if handle < next_table {
            return Err(unreachable_handle(table, next_table));
        }
        let gap = next_table..handle;
        next_table = handle + 1;
        if phase != Phase::Members {
            // Table handles count per namespace.
            let tables_msgs = (nft::NFT_MSG_NEWTABLE, nft::NFT_MSG_DELTABLE);
            burn(batch, gap, tables_msgs, table.family, |n| {
                let mut gap = Vec::new();
                put_attr(
                    &mut gap,
                    NFTA_TABLE_NAME,
                    format!("cryo-gap-{n}\0").as_bytes(),
                );
                gap
            });
            batch.raw(
                nft::NFT_MSG_NEWTABLE,
                create,
                table.family,
                table.describe(),
                &table.create_attrs(),
            );
        }
        if phase == Phase::Tables {
            continue;
        }

        let mut members: Vec<&Item> = items
            .iter()
            .filter(|i| i.family == table.family && i.table() == name)
            .filter(|i| !matches!(i.kind, Kind::Table | Kind::Elements))
            .collect();
        members.sort_by_key(|i| i.handle());
        let mut next = 1;
        let mut named_sets = Vec::new();
        for item in members {
            let Some(handle) = item.handle() else {
                return Err(NetnsError::Unrestorable {
                    what: item.describe(),
                    why: "dumped without a handle".into(),
                });
            };
            if handle < next {
                return Err(unreachable_handle(item, next));
            }
            // Handles of chains, sets, objects, flowtables and rules count per table.
            let chains_msgs = (nft::NFT_MSG_NEWCHAIN, nft::NFT_MSG_DELCHAIN);
            burn(batch, next..handle, chains_msgs, table.family, |n| {
                let mut gap = Vec::new();
                put_attr(&mut gap, NFTA_ANY_TABLE, format!("{name}\0").as_bytes());
                put_attr(
                    &mut gap,
                    NFTA_CHAIN_NAME,
                    format!("cryo-gap-{n}\0").as_bytes(),
                );
                gap
            });
            next = handle + 1;
            let (flags, attrs) = match item.kind {
                Kind::Rule => {
                    let key = (item.family, name.clone(), item.text_attr(NFTA_RULE_CHAIN));
                    let in_chain = chains.get(&key).map_or(&[][..], Vec::as_slice);
                    let (flags, attrs) = rule_placement(item, in_chain, handle);
                    (NLM_F_CREATE | flags, attrs)
                }
                Kind::Set => {
                    // NEWSET requires a transaction id, which nothing here refers to.
                    let mut attrs = item.create_attrs();
                    put_attr(&mut attrs, NFTA_SET_ID, &(handle as u32).to_be_bytes());
                    (create, attrs)
                }
                _ => (create, item.create_attrs()),
            };
            let (_, new) = item.kind.messages();
            batch.raw(new, flags, item.family, item.describe(), &attrs);
            if item.anonymous_set() {
                add_elements(batch, item);
            } else if item.kind == Kind::Set {
                named_sets.push(item);
            }
        }
        for set in named_sets {
            add_elements(batch, set);
        }
    }
    Ok(())
}

/// Where rule `rule` (handle `handle`) goes in its chain, whose rules' handles in chain order
/// are `in_chain`, the rules made in handle order: after the nearest rule before it in the
/// chain whose handle is lower (made already), else first. The create flags and attributes.
fn rule_placement(rule: &Item, in_chain: &[u64], handle: u64) -> (u16, Vec<u8>) {
    let at = in_chain.iter().position(|h| *h == handle).unwrap_or(0);
    let before = in_chain[..at].iter().rev().find(|h| **h < handle);
    let mut attrs = rule.create_attrs();
    match before {
        Some(after) => {
            put_attr(&mut attrs, NFTA_RULE_POSITION, &after.to_be_bytes());
            (nft::NLM_F_APPEND, attrs)
        }
        None => (0, attrs),
    }
}

/// A ruleset in a form two captures can be compared in: each set's elements gathered, sorted
/// and without their time left; everything else as dumped.
pub fn comparable(items: &[Item]) -> Vec<Item> {
    let mut out: Vec<Item> = Vec::with_capacity(items.len());
    // (family, table, set) -> its elements' attributes.
    type SetKey = (u8, String, String);
    let mut elements: Vec<(SetKey, Vec<Vec<u8>>)> = Vec::new();
    for item in items {
        if item.kind != Kind::Elements {
            out.push(item.clone());
            continue;
        }
        let key = (item.family, item.table(), item.set_name());
        let list = match elements.iter_mut().find(|(k, _)| *k == key) {
            Some((_, l)) => l,
            None => {
                elements.push((key, Vec::new()));
                &mut elements.last_mut().expect("just pushed").1
            }
        };
        for (ty, element) in nft::attrs(item.attr(NFTA_SET_ELEM_LIST_ELEMENTS).unwrap_or(&[])) {
            if ty != NFTA_LIST_ELEM {
                continue;
            }
            list.push(without(element, &[NFTA_SET_ELEM_EXPIRATION]));
        }
    }
    for ((family, table, set), mut list) in elements {
        list.sort();
        let mut attrs = Vec::new();
        put_attr(&mut attrs, NFTA_ANY_TABLE, format!("{table}\0").as_bytes());
        put_attr(
            &mut attrs,
            NFTA_SET_ELEM_LIST_SET,
            format!("{set}\0").as_bytes(),
        );
        for element in list {
            put_attr(&mut attrs, NFTA_LIST_ELEM | NLA_F_NESTED, &element);
        }
        out.push(Item {
            kind: Kind::Elements,
            family,
            attrs,
        });
    }
    out
}

/// The first difference between two captures, described; `None` when they are the same
/// (as [`comparable`] sees them).
pub fn first_difference(dumped: &[Item], made: &[Item]) -> Option<String> {
    let (a, b) = (comparable(dumped), comparable(made));
    let (in_a, in_b): (HashSet<&Item>, HashSet<&Item>) = (a.iter().collect(), b.iter().collect());
    for x in &a {
        if !in_b.contains(x) {
            return Some(
                match b
                    .iter()
                    .find(|y| y.kind == x.kind && y.describe() == x.describe())
                {
                    Some(_) => format!("{} reads otherwise once made again", x.describe()),
                    None => format!("{} is not there once made again", x.describe()),
                },
            );
        }
    }
    if let Some(y) = b.iter().find(|y| !in_a.contains(y)) {
        return Some(format!("{} appears once made again", y.describe()));
    }
    (a != b).then(|| "the nftables objects are listed in another order once made again".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// Runs `nft` with `args` in the calling thread's namespace (a child forked from this
    /// thread is in it); its standard output.
    fn nft(args: &[&str]) -> String {
        let out = Command::new("nft")
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("run nft (package nftables): {e}"));
        assert!(
            out.status.success(),
            "nft {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    const RULESET: &str = r#"
table ip gone { }
table inet filter {
    counter seen { packets 7 bytes 700 }
    quota q { over 10 mbytes used 1 mbytes }
    set allowed { type ipv4_addr; elements = { 127.0.0.2, 127.0.0.3, 10.1.2.3 } }
    set ranges { type ipv4_addr; flags interval; elements = { 10.0.0.0/8, 192.168.1.1-192.168.1.9 } }
    map ports { type inet_service : verdict; elements = { 22 : accept, 23 : drop } }
    chain extra { udp dport 9 counter return; }
    chain input {
        type filter hook input priority 0; policy accept;
        iifname "lo" ip protocol tcp ct state new,established counter accept
        tcp dport { 80, 443, 8080 } counter accept comment "web"
        ip saddr @allowed counter name seen
        ip daddr @ranges counter
        tcp dport vmap @ports
        udp dport 9 jump extra
    }
    chain output { type filter hook output priority 0; policy accept; counter; }
}
table ip6 six { chain c { type filter hook input priority -5; policy drop; }; }
"#;

    /// The handle of the rule of chain inet filter `chain` whose listing holds `needle`.
    fn handle_of(chain: &str, needle: &str) -> String {
        let listing = nft(&["-a", "list", "chain", "inet", "filter", chain]);
        listing
            .lines()
            .find(|l| l.contains(needle))
            .and_then(|l| l.rsplit("handle ").next())
            .unwrap_or_else(|| panic!("no rule with {needle} in {listing}"))
            .trim()
            .to_string()
    }

    fn build(path: &std::path::Path) {
        nft(&["-f", path.to_str().unwrap()]);
        // Handle gaps, rules out of handle order, a table made and removed.
        nft(&["delete", "table", "ip", "gone"]);
        nft(&[
            "insert", "rule", "inet", "filter", "input", "meta", "mark", "7", "counter", "drop",
        ]);
        let web = handle_of("input", "\"web\"");
        nft(&[
            "add", "rule", "inet", "filter", "input", "position", &web, "meta", "mark", "8",
            "accept",
        ]);
        nft(&[
            "add", "rule", "inet", "filter", "output", "meta", "mark", "9", "drop",
        ]);
        let nine = handle_of("output", "mark 0x00000009");
        nft(&[
            "delete", "rule", "inet", "filter", "output", "handle", &nine,
        ]);
        // Traffic, so that the counters are not all zero.
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.send_to(b"x", "127.0.0.1:9").unwrap();
    }

    #[test]
    fn a_ruleset_comes_back_with_its_handles_order_sets_and_counters() {
        let dir = std::env::temp_dir().join(format!("cryo-ruleset-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("rules.nft");
        std::fs::write(&file, RULESET).unwrap();
        let (captured, listed) = crate::ns::run_in_new(|| {
            build(&file);
            (capture().unwrap(), nft(&["-a", "list", "ruleset"]))
        })
        .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            listed.contains("counter packets 1"),
            "no traffic counted:\n{listed}"
        );
        assert!(captured.iter().any(|i| i.kind == Kind::Elements));
        let (again, listed_again) = crate::ns::run_in_new(|| {
            restore(&captured).unwrap();
            (capture().unwrap(), nft(&["-a", "list", "ruleset"]))
        })
        .unwrap();
        assert_eq!(listed, listed_again);
        assert_eq!(first_difference(&captured, &again), None);
    }

    #[test]
    fn a_namespace_without_tables_captures_nothing() {
        assert_eq!(crate::ns::run_in_new(capture).unwrap().unwrap(), Vec::new());
    }
}
