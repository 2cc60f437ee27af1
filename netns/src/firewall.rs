//! The firewall of a namespace as one object: its nf_tables ruleset ([`crate::ruleset`]), its
//! legacy iptables and ip6tables tables ([`crate::xtables`]) and the connections its
//! connection tracking follows ([`crate::conntrack`]), captured together. Made again entries
//! first: a rule's `ct` expression (or a `state` match) is what makes a namespace track, and
//! once it does, a segment of a connection whose entry is not there yet makes one of its own
//! (the entry made again would then be refused: it exists).

use crate::conntrack;
use crate::error::NetnsError;
use crate::ruleset;
use crate::xtables::{self, LegacyTable};

/// Everything of a namespace's firewall.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Firewall {
    /// The nf_tables ruleset.
    pub nft: Vec<ruleset::Item>,
    /// The legacy tables.
    pub legacy: Vec<LegacyTable>,
    /// The connection tracking entries.
    pub conntrack: Vec<conntrack::Entry>,
}

impl Firewall {
    /// Nothing to make again.
    pub fn is_empty(&self) -> bool {
        self.nft.is_empty() && self.legacy.is_empty() && self.conntrack.is_empty()
    }
}

/// The firewall of the calling thread's network namespace.
pub fn capture() -> Result<Firewall, NetnsError> {
    Ok(Firewall {
        nft: ruleset::capture()?,
        legacy: xtables::capture()?,
        conntrack: conntrack::capture()?,
    })
}

/// Makes `firewall` in the calling thread's network namespace, a new one.
pub fn restore(firewall: &Firewall) -> Result<(), NetnsError> {
    conntrack::restore(&firewall.conntrack)?;
    ruleset::restore(&firewall.nft)?;
    xtables::restore(&firewall.legacy)
}

/// [`restore`] in a namespace whose nf_tables tables [`ruleset::restore_tables`] made
/// already (empty: they hold no chain yet, nothing is filtered or counted).
pub fn restore_in_tables(firewall: &Firewall) -> Result<(), NetnsError> {
    conntrack::restore(&firewall.conntrack)?;
    ruleset::restore_members(&firewall.nft)?;
    xtables::restore(&firewall.legacy)
}

/// The first difference between a captured firewall and the one a namespace made again from
/// it shows, described; `None` when they are the same (what changes by itself left out: a
/// set element's or a tracked connection's time left).
pub fn first_difference(dumped: &Firewall, made: &Firewall) -> Option<String> {
    if let Some(d) = ruleset::first_difference(&dumped.nft, &made.nft) {
        return Some(d);
    }
    for table in &dumped.legacy {
        match made
            .legacy
            .iter()
            .find(|t| t.describe() == table.describe())
        {
            Some(t) if t == table => {}
            Some(_) => {
                return Some(format!(
                    "{} reads otherwise once made again",
                    table.describe()
                ))
            }
            None => return Some(format!("{} is not there once made again", table.describe())),
        }
    }
    if let Some(t) = made
        .legacy
        .iter()
        .find(|t| !dumped.legacy.iter().any(|d| d.describe() == t.describe()))
    {
        return Some(format!("{} appears once made again", t.describe()));
    }
    conntrack::first_difference(&dumped.conntrack, &made.conntrack)
}
