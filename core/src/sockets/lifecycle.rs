//! The lifecycle of a dump's connections, in one place: ONE network lock per dump installed
//! before any connection is captured, each connection held in repair mode, and the end of
//! the dump.
//!
//! ```text
//! DumpSockets::collect   every task's sockets identified (refusals first, nothing touched),
//!                        then one nftables batch over every connection of every task, each
//!                        4-tuple once (segments cryo injects at restore carry the bypass
//!                        mark), in cryo's namespace and, over theirs, in each other network
//!                        namespace of the tasks; then each task's sockets captured; a TCP
//!                        socket several tasks hold (fork, SCM_RIGHTS) is captured once
//! capture                each connection captured in repair mode, then out of it at once,
//!                        quietly (Held: its fd in the task): a cryo that dies from here on
//!                        leaves the tasks' sockets as they were (but the lock, which its
//!                        guardian removes)
//! silence_before_kill    a killing dump, just before the kill: each held connection back in
//!                        repair mode, so that it closes silently with its process
//! finish_killed          the tasks were killed: their sockets closed in repair mode, nothing
//!                        sent; the lock stays installed in cryo's namespace, its id returned
//!                        for the inventory (the restore or `cryo unlock` removes it), and is
//!                        released in the tasks' own (the restore makes new ones)
//! finish_running         the tasks run on: repair left quietly (TCP_REPAIR_OFF_NO_WP) on a
//!  or a failed dump      fresh duplicate of each held fd, SO_REUSEADDR set back as the task
//!                        had it, then the lock released (Drop)
//! ```
//!
//! The lock itself is cryo-netns's [`NetworkLock`]: `install(id, tuples)` (one batch),
//! `keep()` (leave it for the restore), `release()`, `NetworkLock::release_by_id(id)` (what
//! `cryo unlock -D DIR` and the restore call), `installed_locks()`.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::os::fd::{AsFd, RawFd};

use cryo_netns::{ConnTuple, NetworkLock};
use nix::unistd::Pid;
use tracing::{debug, warn};

use super::{Found, SocketDump, SocketDumpOptions, SocketError};
use crate::files::FileError;
use crate::sys;

// The segments tcp-repair injects on restore (the peer's FIN of a half-closed connection)
// must get through the network lock, which is still held then.
const _: () = assert!(cryo_tcp_repair::INJECT_MARK == cryo_netns::BYPASS_MARK);

/// A connection captured, known by its fd in the task: put back in repair mode before the
/// task is killed, its socket closes and sends nothing. No duplicate is kept (a server with
/// 10,000 connections would double cryo's fds); entering and leaving repair mode take fresh
/// duplicates.
#[derive(Debug)]
pub(super) struct Held {
    pub fd: RawFd,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// SO_REUSEADDR as the task had it (leaving repair mode clears it).
    pub reuse_addr: bool,
    /// In repair mode now (silence_before_kill): a dump failing after leaves it again.
    pub in_repair: bool,
}

/// The sockets of every task of a dump, and the one network lock over their connections.
///
/// Dropped without [`finish_killed`](Self::finish_killed) (a failed dump), or through
/// [`finish_running`](Self::finish_running): every held connection leaves repair mode as it
/// was, then the lock is released.
#[derive(Debug, Default)]
pub struct DumpSockets {
    tasks: Vec<SocketDump>,
    lock: Option<NetworkLock>,
    /// The same lock in each other network namespace of the tasks, over the connections there
    /// (both ends of one between two tasks there: nothing of cryo's namespace sees them). Its
    /// netlink socket is that namespace's: released from here.
    ns_locks: Vec<NetworkLock>,
}

impl DumpSockets {
    /// Finds, checks and captures the sockets of the frozen tasks `pids` (in order): every
    /// refusal first (nothing is touched if any socket of any task cannot be dumped), then
    /// one network lock over every connection, then the captures, task by task.
    /// `before_repair` hears, before any socket enters repair mode, the inodes of the
    /// connections that have SO_REUSEADDR set (repair mode loses it; see the dump guardian).
    pub fn collect(
        pids: &[Pid],
        opts: &SocketDumpOptions,
        before_repair: impl FnOnce(&[u64]),
    ) -> Result<DumpSockets, FileError> {
        let identified = pids
            .iter()
            .map(|&pid| {
                let mut ident = super::in_netns_of(pid, || SocketDump::identify_task(pid, opts))?;
                // Asked on cryo's own thread: the one that identified them joined the task's
                // namespace, where every task's looks like its own (before 2026-12-07 no
                // other namespace's connections were ever locked).
                ident.netns = super::foreign_netns(pid)?.map(|(inode, _)| inode);
                Ok(ident)
            })
            .collect::<Result<Vec<_>, FileError>>()?;
        let reusing: Vec<u64> = identified
            .iter()
            .flat_map(|ident| &ident.found)
            .filter(|f| f.reuse_addr)
            .map(|f| f.ino)
            .collect();
        super::tcp::refuse_md5_keys(&identified)?;
        before_repair(&reusing);
        let mut out = DumpSockets::default();
        out.lock(opts, &identified)?;
        let mut tcp_taken = HashSet::new();
        for ident in identified {
            let pid = ident.pid;
            let taken = &mut tcp_taken;
            let task =
                super::in_netns_of(pid, move || SocketDump::capture_task(ident, opts, taken))?;
            out.tasks.push(task);
        }
        super::udp::refuse_queues_others_would_hear(pids, &out.tasks)?;
        Ok(out)
    }

    /// Installs the network lock over the connections among `identified`, each once (none:
    /// no lock): in cryo's namespace over those of the tasks there, and in each other
    /// namespace of the tasks over theirs there. Without it there, the two ends of a
    /// connection between tasks of one namespace went on exchanging (the kernel acknowledges
    /// for a frozen process) while they were captured one after the other: the later one had
    /// bytes acknowledged that the earlier one's queue lacked, and the restored connection
    /// stalled on that hole (zdtm socket-tcpbuf-local in the namespace flavour).
    fn lock(
        &mut self,
        opts: &SocketDumpOptions,
        identified: &[super::Identified],
    ) -> Result<(), FileError> {
        // Per namespace (None: cryo's): the first task with a connection there, its tuples.
        let mut by_namespace: std::collections::BTreeMap<Option<u64>, (Pid, Vec<ConnTuple>)> =
            std::collections::BTreeMap::new();
        let mut seen = HashSet::new();
        for ident in identified {
            for f in &ident.found {
                if let Some(tuple) = locked_tuple(&f.kind) {
                    if seen.insert(f.ino) {
                        by_namespace
                            .entry(ident.netns)
                            .or_insert_with(|| (ident.pid, Vec::new()))
                            .1
                            .push(tuple);
                    }
                }
            }
        }
        for (ns, (pid, tuples)) in by_namespace {
            let install = || {
                NetworkLock::install(&opts.lock_id, &tuples)
                    .map_err(|source| install_error(pid, &opts.lock_id, source))
            };
            match ns {
                None => self.lock = Some(install()?),
                Some(_) => self.ns_locks.push(super::in_netns_of(pid, || {
                    install().map_err(FileError::from)
                })?),
            }
            debug!(
                id = opts.lock_id,
                %pid,
                in_namespace = ?ns,
                conns = tuples.len(),
                "network lock installed"
            );
        }
        Ok(())
    }

    /// True when connections were captured (and the network lock installed).
    pub fn has_connections(&self) -> bool {
        self.lock.is_some() || !self.ns_locks.is_empty()
    }

    /// The sockets of each task, in the order of the pids collected.
    pub fn tasks(&self) -> &[SocketDump] {
        &self.tasks
    }

    /// The same, to resolve what crosses tasks (descriptors in flight, accept queues).
    pub fn tasks_mut(&mut self) -> &mut Vec<SocketDump> {
        &mut self.tasks
    }

    /// Just before the tasks are killed: every held connection back in repair mode (through a
    /// fresh duplicate), so that it closes with its process without a word to the peer and
    /// frees its address pair at once. A failure fails the dump (the tasks then run on, the
    /// connections out of repair mode again).
    pub fn silence_before_kill(&mut self) -> Result<(), SocketError> {
        for task in &mut self.tasks {
            let (Some(pidfd), Some(pid)) = (&task.pidfd, task.pid) else {
                continue;
            };
            for held in &mut task.held {
                let dup = super::socket_dup(pid, pidfd.as_fd(), held.fd)?;
                cryo_tcp_repair::enter_repair_to_close(dup.as_fd()).map_err(|source| {
                    SocketError::Repair {
                        pid,
                        fd: held.fd,
                        source,
                    }
                })?;
                held.in_repair = true;
            }
        }
        Ok(())
    }

    /// The tasks were killed: close the held connections in repair mode (nothing reaches the
    /// peers) and leave the network lock installed for the restore to remove. Returns its id.
    pub fn finish_killed(mut self) -> Option<String> {
        for task in &mut self.tasks {
            // The task's sockets closed in repair mode: no FIN, no RST.
            task.held.clear();
        }
        self.tasks.clear();
        // Those of the tasks' own namespaces go: the restore makes new ones.
        self.release_namespace_locks();
        self.lock.take().map(NetworkLock::keep)
    }

    /// Releases the lock in the tasks' other namespaces.
    fn release_namespace_locks(&mut self) {
        for mut lock in self.ns_locks.drain(..) {
            if let Err(e) = lock.release() {
                warn!(lock = lock.id(), error = %e, "network lock not released in its namespace");
            }
        }
    }

    /// The tasks go on running: leave repair mode quietly (SO_REUSEADDR as it was) and
    /// release the lock: the packets flow again when this returns. Returns the released
    /// lock's handle, for the caller to drop once the tasks run: dropping it closes its
    /// netlink socket, and the kernel finishes tearing the table down then (an RCU grace
    /// period, 5-15 ms here), time the frozen tasks need not wait.
    pub fn finish_running(mut self) -> Result<Option<NetworkLock>, SocketError> {
        // Connections out of repair mode first, while the lock still drops their packets.
        self.tasks.clear();
        self.release_namespace_locks();
        let mut lock = self.lock.take();
        if let Some(lock) = &mut lock {
            if let Err(e) = lock.release() {
                warn!(lock = lock.id(), error = %e, "network lock not released");
            }
        }
        Ok(lock)
    }
}

impl Drop for DumpSockets {
    fn drop(&mut self) {
        // Connections out of repair mode first, while the lock still drops their packets.
        self.tasks.clear();
        self.release_namespace_locks();
        if let Some(mut lock) = self.lock.take() {
            if let Err(e) = lock.release() {
                warn!(lock = lock.id(), error = %e, "network lock not released");
            }
        }
    }
}

impl Drop for SocketDump {
    fn drop(&mut self) {
        for held in self.held.drain(..).filter(|h| h.in_repair) {
            let Some(pidfd) = &self.pidfd else { break };
            let left = sys::pidfd::pidfd_getfd(pidfd.as_fd(), held.fd)
                .map_err(|e| e.to_string())
                .and_then(|dup| {
                    cryo_tcp_repair::leave_repair(dup.as_fd(), false, held.reuse_addr)
                        .map_err(|e| e.to_string())
                });
            if let Err(e) = left {
                warn!(
                    fd = held.fd,
                    local = %held.local,
                    remote = %held.remote,
                    error = %e,
                    "connection left in repair mode"
                );
            }
        }
    }
}

/// The address pair the network lock holds for a socket found at dump: a connection (closed
/// ones too), and a connect in progress, whose peer's answer must not reach the frozen socket
/// (the original would then be a connection the kill ends).
fn locked_tuple(kind: &Found) -> Option<ConnTuple> {
    match *kind {
        Found::Connection(l, r) | Found::ClosedConnection(l, r, _) | Found::Connecting(l, r) => {
            Some(ConnTuple::new(l, r))
        }
        _ => None,
    }
}

/// The error of installing lock `id` for the connections of `pid`.
fn install_error(pid: Pid, id: &str, source: cryo_netns::LockError) -> SocketError {
    match source.errno() {
        Some(nix::errno::Errno::EEXIST) => SocketError::NetworkLockTaken {
            pid,
            id: id.to_string(),
        },
        _ => SocketError::NetworkLock { pid, source },
    }
}
