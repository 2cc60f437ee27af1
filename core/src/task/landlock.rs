//! Landlock domains: a thread confined by one (or by any Linux security module's ptrace
//! rule) is refused at dump, naming pid and thread, since no interface reads a domain's
//! rules back to make it again, and a restored process would run unconfined.
//!
//! Nothing tells from outside that a thread is landlocked (no /proc field, no query call);
//! its one trace is Landlock's ptrace hook, which denies a landlocked thread any
//! ptrace_may_access towards a process outside its domain, whatever its capabilities. kcmp(2)
//! checks ptrace_may_access (PTRACE_MODE_READ_REALCREDS) on its pids, so a kcmp(P, P, KCMP_VM)
//! run in the thread, P a process outside any domain that the thread may otherwise access,
//! fails with EPERM exactly when an LSM confines the thread:
//!
//! ```text
//! the thread has CAP_SYS_PTRACE, in cryo's PID namespace    P = cryo itself: no probe
//!   and cryo's user namespace (in one of its own, its
//!   capabilities do not reach cryo)
//! otherwise                                                 P = a probe process (sys/probe.rs),
//!   real, effective, saved uid = the thread's real uid      made once per (uid, gid) and
//!   the same of gids; no capabilities; dumpable             dump, in the tree's PID namespace
//!                                                           (it must see P), killed after
//!                                                           (and the namespace's last pid
//!                                                           put back: its next pid unchanged)
//! the kcmp                                                  one more call in each thread's
//!                                                           batch (threads.rs): 0 (P's mm is
//!                                                           P's) free, EPERM refused
//! ```
//!
//! Landlock domains are per thread (landlock_restrict_self confines the calling thread), so
//! every thread is asked. The scoped domains (LANDLOCK_SCOPE_SIGNAL,
//! LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET) and the LANDLOCK_RESTRICT_SELF_* logging flags make
//! a domain all the same: found the same way. A seccomp filter in the thread does not see the
//! kcmp (cryo's calls run with PTRACE_O_SUSPEND_SECCOMP). The target is left as it was: the
//! probe lives outside it, and only the denial is seen (by audit, where Landlock logs it).

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, OwnedFd};

use cryo_proto::image::{Creds, UserNamespace};
use nix::unistd::Pid;

use crate::remote::BatchCall;
use crate::sys::{kcmp, probe};

/// `CAP_SYS_PTRACE` (linux/capability.h).
const CAP_SYS_PTRACE: u32 = 19;

/// Why a thread cannot be dumped for its confinement, or could not be checked.
#[derive(Debug, thiserror::Error)]
pub enum LandlockError {
    /// The thread may not look at a process outside its domain that it could otherwise.
    #[error(
        "pid {pid} thread {tid}: Landlock domain cannot be restored: the thread is confined by \
         a Linux security module (Landlock?): it is denied a process outside its domain that \
         it could otherwise look at, and no interface reads a domain's rules back to make it \
         again (a restored process would run unconfined)"
    )]
    Confined {
        /// The process.
        pid: Pid,
        /// The thread.
        tid: Pid,
    },
    /// The check itself failed.
    #[error("pid {pid} thread {tid}: check for a Landlock domain: {what}: {errno}")]
    Check {
        /// The process.
        pid: Pid,
        /// The thread.
        tid: Pid,
        /// The step.
        what: &'static str,
        /// The kernel's answer (in the message, so not chained as a source).
        errno: io::Error,
    },
}

/// The check of one thread: which process its kcmp names.
#[derive(Debug, Clone, Copy)]
pub struct Check {
    /// The process.
    pub pid: Pid,
    /// The thread.
    pub tid: Pid,
    /// The process outside any domain, by its pid as the thread sees it.
    target: i32,
}

impl Check {
    /// The call run in the thread (in its batch).
    pub fn call(&self) -> BatchCall {
        kcmp::may_access_call(self.target)
    }

    /// The verdict on the call's failure `errno`: EPERM is a confined thread.
    pub fn failed(&self, errno: io::Error) -> LandlockError {
        match errno.raw_os_error() {
            Some(libc::EPERM) => LandlockError::Confined {
                pid: self.pid,
                tid: self.tid,
            },
            _ => LandlockError::Check {
                pid: self.pid,
                tid: self.tid,
                what: "kcmp of a process outside any domain",
                errno,
            },
        }
    }
}

/// The processes outside any domain the threads of one dump are checked against: cryo, and
/// the probes made for them (killed on drop, when the dump's collection is over).
pub struct Probes {
    /// The init of the tree's PID namespace (host pid), when it is not cryo's.
    pidns_init: Option<Pid>,
    /// Its /proc/PID/ns/pid, opened with the first probe.
    pidns: Option<OwnedFd>,
    /// The probe program, written with the first probe.
    program: Option<OwnedFd>,
    /// The probes by (uid, gid, user namespace inode or 0: cryo's).
    running: HashMap<(u32, u32, u64), probe::Probe>,
    /// The pid the first probe took in the tree's PID namespace: the last pid handed out
    /// there is put back to the one before it once the probes are gone.
    first_inside: Option<i32>,
}

impl Probes {
    /// For a dump whose tree is in cryo's PID namespace (`pidns_init` None), or in the one
    /// whose init is `pidns_init`. Makes nothing yet.
    pub fn new(pidns_init: Option<Pid>) -> Self {
        Self {
            pidns_init,
            pidns: None,
            program: None,
            running: HashMap::new(),
            first_inside: None,
        }
    }

    /// The check of thread `tid` of `pid`, whose credentials are `creds` (in a user namespace
    /// of its own, `userns`: then the probe is in it too, since the thread's capabilities
    /// do not reach outside it).
    pub fn check(
        &mut self,
        pid: Pid,
        tid: Pid,
        creds: &Creds,
        userns: Option<&UserNamespace>,
    ) -> Result<Check, LandlockError> {
        let failed = |what| {
            move |errno: io::Error| LandlockError::Check {
                pid,
                tid,
                what,
                errno,
            }
        };
        let ptrace = creds.cap_eff & (1 << CAP_SYS_PTRACE) != 0 && userns.is_none();
        let target = match self.pidns_init {
            None if ptrace => nix::unistd::getpid().as_raw(),
            _ => {
                let key = (creds.uid, creds.gid, userns.map_or(0, |n| n.inode));
                if !self.running.contains_key(&key) {
                    let started = self
                        .start(pid, key, userns)
                        .map_err(failed("start a probe process"))?;
                    if self.pidns.is_some() && self.first_inside.is_none() {
                        self.first_inside = Some(started.inside);
                    }
                    self.running.insert(key, started);
                }
                self.running[&key].inside
            }
        };
        Ok(Check { pid, tid, target })
    }

    /// A new probe with ids `(uid, gid)` (cryo's view), in the tree's PID namespace, and in
    /// `userns`, the user namespace of `pid`, if given.
    fn start(
        &mut self,
        pid: Pid,
        (uid, gid, _): (u32, u32, u64),
        userns: Option<&UserNamespace>,
    ) -> io::Result<probe::Probe> {
        if self.program.is_none() {
            self.program = Some(probe::program_fd()?);
        }
        if let (Some(init), None) = (self.pidns_init, &self.pidns) {
            self.pidns = Some(nix::fcntl::open(
                &crate::proc::dir(init).join("ns/pid"),
                nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )?);
        }
        let program = self.program.as_ref().map(AsFd::as_fd);
        let program = program.ok_or_else(|| io::Error::other("no probe program"))?;
        let (user, uid, gid) = match userns {
            None => (None, uid, gid),
            Some(ns) => {
                let unmapped = || io::Error::other("its ids are not mapped in its user namespace");
                let uid = crate::task::userns::to_inside(&ns.uid_map, uid).ok_or_else(unmapped)?;
                let gid = crate::task::userns::to_inside(&ns.gid_map, gid).ok_or_else(unmapped)?;
                let fd = std::fs::File::open(crate::proc::dir(pid).join("ns/user"))?;
                (Some((OwnedFd::from(fd), !ns.setgroups_deny)), uid, gid)
            }
        };
        let ns = probe::ProbeNamespaces {
            pid: self.pidns.as_ref().map(AsFd::as_fd),
            user: user.as_ref().map(|(fd, allowed)| (fd.as_fd(), *allowed)),
        };
        probe::start(program, uid, gid, ns)
    }

    /// How many probe processes were made.
    pub fn made(&self) -> usize {
        self.running.len()
    }
}

impl Drop for Probes {
    /// Kills and reaps the probes; in the tree's PID namespace, puts its last pid back (the
    /// tree, frozen, made none meanwhile): a process it forks after a `--leave-running` (or
    /// failed) dump gets the pid it would have had.
    fn drop(&mut self) {
        self.running.clear();
        if let (Some(ns), Some(first)) = (&self.pidns, self.first_inside) {
            if let Err(e) = crate::sys::pidns::set_last_pid(ns.as_fd(), first - 1) {
                tracing::warn!(
                    "the last pid of the dumped PID namespace could not be put back to {} after \
                     the Landlock checks' probes: {e}",
                    first - 1
                );
            }
        }
    }
}
