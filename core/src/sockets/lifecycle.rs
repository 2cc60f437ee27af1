//! The lifecycle of a dump's connections, in one place: the network lock installed before
//! they are captured, each connection held in repair mode, and the end of the dump.
//!
//! ```text
//! lock_connections   one nftables batch over every connection's 4-tuple (segments cryo
//!                    injects at restore carry the bypass mark)
//! capture            each connection left in repair mode (Held: its fd in the task)
//! finish_killed      the task was killed: its sockets closed in repair mode, nothing sent;
//!                    the lock stays installed, its id returned for the inventory (the
//!                    restore or `cryo unlock` removes it)
//! finish_running     the task runs on: repair left quietly (TCP_REPAIR_OFF_NO_WP) on a
//!  or a failed dump  fresh duplicate of each held fd, the lock released (Drop)
//! ```

use std::net::SocketAddr;
use std::os::fd::{AsFd, RawFd};

use cryo_netns::{ConnTuple, NetworkLock};
use nix::unistd::Pid;
use tracing::{debug, warn};

use super::{Found, FoundSocket, SocketDump, SocketDumpOptions, SocketError};
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
}

impl SocketDump {
    /// Installs the network lock over the connections among `found` (none: no lock).
    pub(super) fn lock_connections(
        &mut self,
        pid: Pid,
        opts: &SocketDumpOptions,
        found: &[FoundSocket],
    ) -> Result<(), SocketError> {
        let tuples: Vec<ConnTuple> = found
            .iter()
            .filter_map(|f| match f.kind {
                Found::Connection(l, r) => Some(ConnTuple::new(l, r)),
                _ => None,
            })
            .collect();
        if tuples.is_empty() {
            return Ok(());
        }
        let lock = NetworkLock::install(&opts.lock_id, &tuples)
            .map_err(|source| SocketError::NetworkLock { pid, source })?;
        debug!(
            id = opts.lock_id,
            conns = tuples.len(),
            "network lock installed"
        );
        self.lock = Some(lock);
        self.held.reserve(tuples.len());
        Ok(())
    }

    /// True when connections were captured (and the network lock installed).
    pub fn has_connections(&self) -> bool {
        !self.held.is_empty()
    }

    /// The task was killed: close the held connections in repair mode (nothing reaches the
    /// peers) and leave the network lock installed for the restore to remove. Returns its id.
    pub fn finish_killed(mut self) -> Option<String> {
        // The task's sockets closed in repair mode: no FIN, no RST.
        self.held.clear();
        self.lock.take().map(NetworkLock::keep)
    }

    /// The task goes on running: leave repair mode quietly and release the lock.
    pub fn finish_running(self) -> Result<(), SocketError> {
        drop(self);
        Ok(())
    }
}

impl Drop for SocketDump {
    fn drop(&mut self) {
        for held in self.held.drain(..) {
            let Some(pidfd) = &self.pidfd else { break };
            let left = sys::pidfd::pidfd_getfd(pidfd.as_fd(), held.fd)
                .map_err(|e| e.to_string())
                .and_then(|dup| {
                    cryo_tcp_repair::leave_repair(dup.as_fd(), false).map_err(|e| e.to_string())
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
        if let Some(mut lock) = self.lock.take() {
            if let Err(e) = lock.release() {
                warn!(lock = lock.id(), error = %e, "network lock not released");
            }
        }
    }
}
