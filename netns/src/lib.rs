//! Network namespaces and the network lock.
//!
//! The network lock ([`NetworkLock`]) keeps the connections of a process being dumped silent
//! from the moment it is frozen until its sockets are live again: their packets are dropped in
//! both directions, so no peer ever receives a RST or FIN from the half-dead side, and the
//! peers' retransmissions get through once the lock is released. It talks to nf_tables over
//! netlink directly (no `nft` or `iptables` binary), scopes its rules to the exact 4-tuples
//! involved, and installs or releases in one transaction whatever the number of connections.
//!
//! [`ns`] creates fresh network namespaces with loopback up; [`state`] reads what a namespace
//! shows (links, addresses, routes, rules, tables, sysctls) and makes its interfaces, their
//! addresses and the routes again; [`link`] reads and makes the interfaces.
#![warn(missing_docs)]

mod attr;
pub mod conntrack;
mod error;
pub mod firewall;
pub mod link;
mod lock;
mod netlink;
mod nft;
pub mod ns;
pub mod ruleset;
pub mod state;
mod sys;
pub mod xtables;

pub use error::{LockError, NetnsError};
pub use lock::{
    installed_locks, table_name, ConnTuple, NetworkLock, BYPASS_MARK, MAX_ID_LEN, TABLE_PREFIX,
};
pub use ns::{enter_new, run_in_new};

/// The pure parsers of the kernel's netlink answers: bytes in, typed values or an error out,
/// no socket. Public for the fuzz targets (fuzz/); the lock and [`ns`] use them through their
/// sockets.
pub mod replies {
    pub use crate::netlink::{parse_acks, parse_dump_part, Ack, NlError};
    pub use crate::nft::parse_table;
}
