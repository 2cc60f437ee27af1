//! What undoes a restore that stops half-way: every connection it re-created closed silently
//! (by the guardian, or here without one), then every process created killed and reaped; the
//! dump's network lock stays (the peers wait for a restore that succeeds, or `cryo unlock`).

use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tracing::debug;

use super::guardian::RestoreGuardian;

/// Releases the network lock of a dump (if any) when told. Dropped before that (a restore
/// that failed before its connections were live), it leaves the lock installed: the peers'
/// packets keep being dropped, not answered with a reset, so a retry finds them waiting.
///
/// Closing the netlink socket of a release waits for an RCU grace period (about 10 ms here)
/// after the table is already gone: [`release`](Self::release) keeps the socket, for
/// [`close_later`](Self::close_later) to hand to a thread that is not on the critical path.
pub(crate) struct Unlock {
    id: String,
    released: Option<cryo_netns::NetworkLock>,
    /// Installed by this restore (an image of another host): removed if it fails.
    here: bool,
}

impl Unlock {
    pub fn new(id: String) -> Self {
        Self {
            id,
            released: None,
            here: false,
        }
    }

    /// The lock was installed by this restore: a failure removes it (once the processes are
    /// gone) instead of keeping it for a retry.
    pub fn installed_here(&mut self) {
        self.here = true;
    }

    /// A lock installed here stays after a failure after all (logged with its table).
    pub fn keep_installed(&mut self) {
        if self.here && !self.id.is_empty() {
            self.here = false;
            tracing::warn!(
                lock = self.id,
                table = cryo_netns::table_name(&self.id),
                "network lock kept here: the connections' peers may be sending to this host; \
                 their packets are dropped rather than answered with resets"
            );
            // Said once: the drop stays silent.
            self.id.clear();
        }
    }

    /// Whether the image left a lock this restore has not released yet.
    pub fn holds(&self) -> bool {
        !self.id.is_empty()
    }

    /// Deletes the lock's table: the connections' packets flow from here on. True when the
    /// image left one.
    pub fn release(&mut self) -> bool {
        let id = std::mem::take(&mut self.id);
        if id.is_empty() {
            return false;
        }
        match cryo_netns::NetworkLock::open(&id) {
            Ok(Some(mut lock)) => {
                match lock.release() {
                    Ok(found) => debug!(lock = id, found, "network lock released"),
                    Err(e) => tracing::warn!(lock = id, error = %e, "network lock not released"),
                }
                self.released = Some(lock);
            }
            Ok(None) => debug!(lock = id, "network lock was not installed"),
            Err(e) => tracing::warn!(lock = id, error = %e, "network lock not released"),
        }
        true
    }

    /// The released lock, whose dropping closes its netlink socket (slowly).
    pub fn close_later(&mut self) -> Option<cryo_netns::NetworkLock> {
        self.released.take()
    }
}

impl Drop for Unlock {
    fn drop(&mut self) {
        if self.here && !self.id.is_empty() {
            // Dropped after the processes were killed (declared before them).
            match cryo_netns::NetworkLock::release_by_id(&self.id) {
                Ok(_) => debug!(lock = self.id, "network lock installed here removed"),
                Err(e) => tracing::warn!(lock = self.id, error = %e, "network lock not removed"),
            }
            return;
        }
        if !self.id.is_empty() {
            tracing::warn!(
                lock = self.id,
                "network lock kept: the connections wait for a restore that succeeds \
                 (or `cryo unlock -D DIR`)"
            );
        }
    }
}

/// Kills and reaps what a failed restore created (and the init of its namespaces), unless
/// [`disarm`](Self::disarm)ed; first its guardian undoes (the lock installed again if it was
/// released, every connection closed silently), so that nothing reaches a peer meanwhile.
pub(crate) struct KillAll {
    armed: Option<(Vec<Pid>, Option<Pid>)>,
    guardian: Option<RestoreGuardian>,
}

impl KillAll {
    /// Kills `pids` (and `init`) when dropped, after `guardian` has undone.
    pub fn new(pids: Vec<Pid>, init: Option<Pid>, guardian: Option<RestoreGuardian>) -> Self {
        Self {
            armed: Some((pids, init)),
            guardian,
        }
    }

    /// The restore's guardian, if it has one.
    pub fn guardian(&self) -> Option<&RestoreGuardian> {
        self.guardian.as_ref()
    }

    /// The processes run: the guardian lets go of the connections.
    pub fn guardian_done(&mut self) {
        if let Some(g) = self.guardian.take() {
            g.done();
        }
    }

    /// The restore succeeded: the processes are left alone.
    pub fn disarm(&mut self) {
        self.guardian_done();
        self.armed = None;
    }
}

impl Drop for KillAll {
    fn drop(&mut self) {
        // Undoes (waits for it) before anything is killed.
        let guarded = self.guardian.take().is_some();
        if let Some((pids, init)) = self.armed.take() {
            if !guarded {
                silence_connections(&pids);
            }
            for pid in pids.iter().rev() {
                let threads = crate::proc::tids(*pid).unwrap_or_default();
                let _ = nix::sys::signal::kill(*pid, Signal::SIGKILL);
                // Threads still traced by us stay our zombies until reaped, and until they
                // are the leader cannot be (a restore stopped before they ran).
                for &tid in threads.iter().filter(|&tid| tid != pid) {
                    reap(tid);
                }
                reap(*pid);
            }
            // Killing the init of a PID namespace kills everything in it.
            if let Some(init) = init {
                let _ = nix::sys::signal::kill(init, Signal::SIGKILL);
                let _ = waitpid(init, Some(WaitPidFlag::__WALL));
            }
        }
    }
}

/// Without a guardian: every TCP connection of `pids` closed silently (repair mode, then
/// disconnected), so that killing them sends nothing and leaves no socket closing on the port.
fn silence_connections(pids: &[Pid]) {
    for &pid in pids {
        let Ok(pidfd) = crate::sys::pidfd::pidfd_open(pid) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for entry in fds.flatten() {
            let Some(fd) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            let Ok(dup) = crate::sys::pidfd::pidfd_getfd(std::os::fd::AsFd::as_fd(&pidfd), fd)
            else {
                continue;
            };
            // Connected or closing; not a listener (10), nor a socket of another kind.
            if matches!(
                cryo_tcp_repair::kernel_tcp_state(&dup),
                Ok(1 | 4 | 5 | 8 | 9 | 11)
            ) {
                let _ = cryo_tcp_repair::close_silently(dup);
            }
        }
    }
}

/// Waits until `tid` (killed) is gone, if it is ours to wait for (a child, or traced).
fn reap(tid: Pid) {
    loop {
        match waitpid(tid, Some(WaitPidFlag::__WALL)) {
            Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) | Err(_) => return,
            // A stop reported before the kill took effect.
            Ok(_) => {}
        }
    }
}
