//! The lifecycle of a dump's connections, in one place: ONE network lock per dump installed
//! before any connection is captured, each connection held in repair mode, and the end of
//! the dump.
//!
//! ```text
//! DumpSockets::collect   every task's sockets identified (refusals first, nothing touched),
//!                        then one nftables batch over every connection of every task, each
//!                        4-tuple once (segments cryo injects at restore carry the bypass
//!                        mark), then each task's sockets captured; a TCP socket several
//!                        tasks hold (fork, SCM_RIGHTS) is captured once
//! capture                each connection left in repair mode (Held: its fd in the task)
//! finish_killed          the tasks were killed: their sockets closed in repair mode, nothing
//!                        sent; the lock stays installed, its id returned for the inventory
//!                        (the restore or `cryo unlock` removes it)
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

/// A connection captured and left in repair mode, known by its fd in the task: when the task
/// is killed, its socket closes in repair mode and sends nothing. No duplicate is kept (a
/// server with 10,000 connections would double cryo's fds); leaving repair mode (dump failed
/// or --leave-running) takes a fresh duplicate.
#[derive(Debug)]
pub(super) struct Held {
    pub fd: RawFd,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// SO_REUSEADDR as the task had it (leaving repair mode clears it).
    pub reuse_addr: bool,
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
            .map(|&pid| super::in_netns_of(pid, || SocketDump::identify_task(pid, opts)))
            .collect::<Result<Vec<_>, _>>()?;
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
    /// no lock).
    fn lock(
        &mut self,
        opts: &SocketDumpOptions,
        identified: &[super::Identified],
    ) -> Result<(), SocketError> {
        let mut seen = HashSet::new();
        let mut first_pid = None;
        let mut tuples: Vec<ConnTuple> = Vec::new();
        for ident in identified.iter().filter(|i| i.netns.is_none()) {
            for f in &ident.found {
                // A connect in progress too: the peer's answer must not reach the frozen
                // socket (the original would then be a connection the kill ends).
                if let Found::Connection(l, r)
                | Found::ClosedConnection(l, r, _)
                | Found::Connecting(l, r) = f.kind
                {
                    if seen.insert(f.ino) {
                        first_pid.get_or_insert(ident.pid);
                        tuples.push(ConnTuple::new(l, r));
                    }
                }
            }
        }
        let Some(pid) = first_pid else {
            return Ok(());
        };
        let lock = NetworkLock::install(&opts.lock_id, &tuples).map_err(|source| {
            match source.errno() {
                Some(nix::errno::Errno::EEXIST) => SocketError::NetworkLockTaken {
                    pid,
                    id: opts.lock_id.clone(),
                },
                _ => SocketError::NetworkLock { pid, source },
            }
        })?;
        debug!(
            id = opts.lock_id,
            conns = tuples.len(),
            "network lock installed"
        );
        self.lock = Some(lock);
        Ok(())
    }

    /// True when connections were captured (and the network lock installed).
    pub fn has_connections(&self) -> bool {
        self.lock.is_some()
    }

    /// The sockets of each task, in the order of the pids collected.
    pub fn tasks(&self) -> &[SocketDump] {
        &self.tasks
    }

    /// The same, to resolve what crosses tasks (descriptors in flight, accept queues).
    pub fn tasks_mut(&mut self) -> &mut Vec<SocketDump> {
        &mut self.tasks
    }

    /// The tasks were killed: close the held connections in repair mode (nothing reaches the
    /// peers) and leave the network lock installed for the restore to remove. Returns its id.
    pub fn finish_killed(mut self) -> Option<String> {
        for task in &mut self.tasks {
            // The task's sockets closed in repair mode: no FIN, no RST.
            task.held.clear();
        }
        self.tasks.clear();
        self.lock.take().map(NetworkLock::keep)
    }

    /// The tasks go on running: leave repair mode quietly (SO_REUSEADDR as it was) and
    /// release the lock: the packets flow again when this returns. Returns the released
    /// lock's handle, for the caller to drop once the tasks run: dropping it closes its
    /// netlink socket, and the kernel finishes tearing the table down then (an RCU grace
    /// period, 5-15 ms here), time the frozen tasks need not wait.
    pub fn finish_running(mut self) -> Result<Option<NetworkLock>, SocketError> {
        // Connections out of repair mode first, while the lock still drops their packets.
        self.tasks.clear();
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
        if let Some(mut lock) = self.lock.take() {
            if let Err(e) = lock.release() {
                warn!(lock = lock.id(), error = %e, "network lock not released");
            }
        }
    }
}

impl Drop for SocketDump {
    fn drop(&mut self) {
        for held in self.held.drain(..) {
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
