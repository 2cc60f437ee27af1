//! The network lock: drop the packets of the connections being dumped, and nothing else.
//!
//! A lock is one nftables table of its own, `inet cryo-<id>`, installed in one transaction:
//!
//! ```text
//! table inet cryo-<id> {
//!   set v4 { type ipv4_addr . inet_service . ipv4_addr . inet_service }
//!   set v6 { type ipv6_addr . inet_service . ipv6_addr . inet_service }
//!   chain input  { type filter hook input  priority -2147483648; policy accept;
//!     meta nfproto ipv4 meta l4proto tcp meta mark != 0xc114
//!       ip saddr . th sport . ip daddr . th dport @v4 drop
//!     meta nfproto ipv4 meta l4proto tcp meta mark != 0xc114
//!       ip daddr . th dport . ip saddr . th sport @v4 drop
//!     (the same two for ip6 and @v6) }
//!   chain output { the same rules, hook output }
//! }
//! ```
//!
//! Packets marked [`BYPASS_MARK`] get through: the restore of a half-closed connection
//! injects the peer's FIN (or its ACK of our FIN) through a raw socket carrying that mark
//! (cryo-tcp-repair's `INJECT_MARK`, the same value), while the lock is still held. The mark
//! travels with the packet over lo, so it is seen on output and again on input. A connection
//! whose own socket carries that mark (`SO_MARK` 0xc114) is not held by the lock.
//!
//! Each connection is stored once (rules match both orientations), so the lock of a connection
//! whose two ends are both local covers both sockets. Releasing deletes the table, which
//! removes chains, rules and sets in one message. The table outlives the process that made it
//! (a crashed dump leaves it behind on purpose: the connections stay silent), and
//! [`NetworkLock::release_by_id`] removes it later from the id stored in the image.
//!
//! Everything acts on the network namespace of the calling thread (a [`NetworkLock`] handle
//! keeps acting on the namespace it was installed in).
//!
//! Scope: TCP over IPv4 and IPv6 on the input and output hooks, i.e. connections that end in
//! this namespace. Traffic routed through it (forward hook) is not matched.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use nix::errno::Errno;
use nix::sys::socket::SockProtocol;
use tracing::{debug, warn};

use crate::error::LockError;
use crate::netlink::{NlError, NlSocket};
use crate::nft::{self, Batch, Family, CHAINS};

/// Prefix of every lock table's name.
pub const TABLE_PREFIX: &str = "cryo-";
/// Packets with this mark (`SO_MARK` of the sending socket) are never dropped by a lock:
/// cryo's own segments, injected into a connection restored while its lock is held. The
/// value is CRIU's (`SOCCR_MARK`), so both tools leave each other's packets alone.
pub const BYPASS_MARK: u32 = 0xC114;
/// Longest lock id accepted (a table name may have 255 bytes).
pub const MAX_ID_LEN: usize = 128;

/// One TCP connection, seen from the side being dumped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnTuple {
    /// The local (dumped) end.
    pub local: SocketAddr,
    /// The peer.
    pub remote: SocketAddr,
}

impl ConnTuple {
    /// A connection from `local` to `remote`.
    pub fn new(local: SocketAddr, remote: SocketAddr) -> ConnTuple {
        ConnTuple { local, remote }
    }

    /// The same connection seen from the other end.
    pub fn reversed(&self) -> ConnTuple {
        ConnTuple {
            local: self.remote,
            remote: self.local,
        }
    }
}

/// The nftables table name of lock `lock_id`: `cryo-<id>`.
pub fn table_name(lock_id: &str) -> String {
    format!("{TABLE_PREFIX}{lock_id}")
}

fn check_id(lock_id: &str) -> Result<String, LockError> {
    let reason = if lock_id.is_empty() {
        Some("empty")
    } else if lock_id.len() > MAX_ID_LEN {
        Some("longer than 128 bytes")
    } else if !lock_id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        Some("only ASCII letters, digits, '-', '_' and '.' are allowed")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(LockError::InvalidId {
            id: lock_id.to_string(),
            reason,
        }),
        None => Ok(table_name(lock_id)),
    }
}

/// A v4-mapped IPv6 address (a dual-stack socket speaking IPv4) travels as IPv4.
fn unmap(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), addr.port()),
            None => addr,
        },
        IpAddr::V4(_) => addr,
    }
}

/// The set keys of `conns`, each connection once whatever its orientation, grouped by family.
fn keys(table: &str, conns: &[ConnTuple]) -> Result<[Vec<Vec<u8>>; 2], LockError> {
    let mut seen = HashSet::with_capacity(conns.len());
    let mut out: [Vec<Vec<u8>>; 2] = [Vec::new(), Vec::new()];
    for c in conns {
        let (local, remote) = (unmap(c.local), unmap(c.remote));
        if local.is_ipv4() != remote.is_ipv4() {
            return Err(LockError::MixedFamilies {
                table: table.to_string(),
                local: c.local,
                remote: c.remote,
            });
        }
        let (family, fwd) = nft::key(&local, &remote);
        let (_, rev) = nft::key(&remote, &local);
        let canonical = fwd.min(rev);
        if seen.insert(canonical.clone()) {
            out[(family == Family::V6) as usize].push(canonical);
        }
    }
    Ok(out)
}

fn nl_err(table: &str, e: NlError) -> LockError {
    let table = table.to_string();
    match e {
        NlError::Socket(step, errno) => LockError::Socket { table, step, errno },
        NlError::Kernel {
            step,
            errno,
            message,
        } => LockError::Kernel {
            table,
            step,
            errno,
            message,
        },
        NlError::Protocol(step, detail) => LockError::Protocol {
            table,
            step,
            detail,
        },
    }
}

fn open_socket(table: &str) -> Result<NlSocket, LockError> {
    NlSocket::open(SockProtocol::NetlinkNetFilter).map_err(|e| nl_err(table, e))
}

/// Sends one batch and waits for every ACK.
fn commit(table: &str, sock: &NlSocket, build: impl FnOnce(&mut Batch)) -> Result<(), LockError> {
    let mut b = Batch::new(sock.next_seq());
    build(&mut b);
    let enc = b.finish();
    sock.transact(&enc.bytes, Some(enc.begin_seq), &enc.steps)
        .map_err(|e| nl_err(table, e))
}

/// An installed network lock. Dropping it releases it (errors are logged); [`keep`] leaves it
/// installed on purpose, for another process to release by id.
///
/// The handle holds the netlink socket it was installed through, so it acts on the network
/// namespace it was installed in, whichever thread uses it later. The kernel finishes
/// tearing a released table down (an RCU grace period, 5-15 ms here) when that socket is
/// closed, that is when the handle is dropped: [`release`] itself returns as soon as the
/// packets flow again, well under a millisecond.
///
/// [`keep`]: NetworkLock::keep
/// [`release`]: NetworkLock::release
#[must_use = "dropping the lock releases it at once"]
pub struct NetworkLock {
    id: String,
    table: String,
    sock: NlSocket,
    released: bool,
}

impl std::fmt::Debug for NetworkLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetworkLock")
            .field("table", &self.table)
            .field("released", &self.released)
            .finish()
    }
}

impl NetworkLock {
    /// Installs lock `lock_id` over `conns` in one transaction: table `inet cryo-<id>`, its
    /// input and output chains, both sets filled, and the rules. Fails with EEXIST if a lock of
    /// that id is already installed; on any failure nothing is left behind.
    pub fn install(lock_id: &str, conns: &[ConnTuple]) -> Result<NetworkLock, LockError> {
        let table = check_id(lock_id)?;
        let start = Instant::now();
        let keys = keys(&table, conns)?;
        let sock = open_socket(&table)?;
        commit(&table, &sock, |b| {
            b.new_table(&table);
            for (chain, hook) in CHAINS {
                b.new_chain(&table, chain, hook);
            }
            for family in Family::ALL {
                b.new_set(&table, family);
            }
            for family in Family::ALL {
                b.new_elems(&table, family, &keys[family as usize], true);
            }
            for (chain, _) in CHAINS {
                for family in Family::ALL {
                    for reversed in [false, true] {
                        b.new_rule(&table, chain, family, reversed, BYPASS_MARK);
                    }
                }
            }
        })?;
        debug!(
            table,
            v4 = keys[0].len(),
            v6 = keys[1].len(),
            us = start.elapsed().as_micros() as u64,
            "network lock installed"
        );
        Ok(NetworkLock {
            id: lock_id.to_string(),
            table,
            sock,
            released: false,
        })
    }

    /// A handle on lock `lock_id` installed earlier (by this process or another), to extend or
    /// release it; `None` if no such lock is installed.
    pub fn open(lock_id: &str) -> Result<Option<NetworkLock>, LockError> {
        let table = check_id(lock_id)?;
        let sock = open_socket(&table)?;
        let found = list_locks(&sock)?.iter().any(|id| id == lock_id);
        Ok(found.then(|| NetworkLock {
            id: lock_id.to_string(),
            table,
            sock,
            released: false,
        }))
    }

    /// Adds connections to the installed lock, in one transaction.
    pub fn add(&mut self, conns: &[ConnTuple]) -> Result<(), LockError> {
        let keys = keys(&self.table, conns)?;
        if keys.iter().all(Vec::is_empty) {
            return Ok(());
        }
        if self.released {
            return Err(LockError::Protocol {
                table: self.table.clone(),
                step: "add",
                detail: "the lock was released".into(),
            });
        }
        commit(&self.table, &self.sock, |b| {
            for family in Family::ALL {
                b.new_elems(&self.table, family, &keys[family as usize], false);
            }
        })
    }

    /// Removes the lock: packets of its connections flow again. Returns `false` if the lock
    /// was not installed any more (released already, here or by someone else).
    pub fn release(&mut self) -> Result<bool, LockError> {
        if self.released {
            return Ok(false);
        }
        let removed = delete_table(&self.table, &self.sock)?;
        self.released = true;
        Ok(removed)
    }

    /// Removes lock `lock_id`, installed by whoever (e.g. a dump that crashed; the id is in
    /// the image). Returns `false`, and does nothing, if no such lock is installed.
    pub fn release_by_id(lock_id: &str) -> Result<bool, LockError> {
        let table = check_id(lock_id)?;
        delete_table(&table, &open_socket(&table)?)
    }

    /// Forgets the handle and leaves the lock installed (a dump that killed its tree keeps
    /// the connections silent until restore). Returns the lock id.
    pub fn keep(mut self) -> String {
        self.released = true;
        std::mem::take(&mut self.id)
    }

    /// The lock id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The nftables table holding the lock, `cryo-<id>`.
    pub fn table_name(&self) -> &str {
        &self.table
    }
}

impl Drop for NetworkLock {
    fn drop(&mut self) {
        if !self.released {
            if let Err(e) = self.release() {
                warn!(table = self.table, error = %e, "network lock not released on drop");
            }
        }
    }
}

fn delete_table(table: &str, sock: &NlSocket) -> Result<bool, LockError> {
    let start = Instant::now();
    match commit(table, sock, |b| b.del_table(table)) {
        Ok(()) => {
            debug!(
                table,
                us = start.elapsed().as_micros() as u64,
                "network lock released"
            );
            Ok(true)
        }
        Err(LockError::Kernel {
            errno: Errno::ENOENT,
            ..
        }) => {
            debug!(table, "network lock was not installed");
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// The ids of every network lock installed in the caller's network namespace.
pub fn installed_locks() -> Result<Vec<String>, LockError> {
    list_locks(&open_socket("*")?)
}

fn list_locks(sock: &NlSocket) -> Result<Vec<String>, LockError> {
    let seq = sock.next_seq();
    let answers = sock
        .dump(&nft::get_tables(seq), seq)
        .map_err(|e| nl_err("*", e))?;
    Ok(answers
        .iter()
        .filter_map(|(ty, payload)| nft::parse_table(*ty, payload))
        .filter(|(family, _)| *family == nft::NFPROTO_INET)
        .filter_map(|(_, name)| name.strip_prefix(TABLE_PREFIX).map(str::to_string))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked() {
        assert!(check_id("1234").is_ok());
        assert!(check_id("dump-2024.01_x").is_ok());
        for bad in ["", "a b", "a/b", "é", &"x".repeat(129)] {
            let e = check_id(bad).unwrap_err();
            assert!(e.to_string().starts_with("lock "), "{e}");
        }
    }

    #[test]
    fn keys_dedupe_both_orientations_and_unmap_v4() {
        let a: SocketAddr = "127.0.0.1:80".parse().unwrap();
        let b: SocketAddr = "[::ffff:127.0.0.1]:5000".parse().unwrap();
        let c: SocketAddr = "[::1]:5000".parse().unwrap();
        let conns = [
            ConnTuple::new(a, b),
            ConnTuple::new(a, b).reversed(),
            ConnTuple::new(c, c),
        ];
        let [v4, v6] = keys("t", &conns).unwrap();
        assert_eq!(v4.len(), 1);
        assert_eq!(v6.len(), 1);
        let e = keys("cryo-t", &[ConnTuple::new(a, c)]).unwrap_err();
        assert!(e.to_string().contains("different address families"), "{e}");
    }
}
