//! New PID and network namespaces for a restore: cryo forks a small init into them (PID 1 of
//! the new PID namespace), which forks the restored process with its original pid there, then
//! reaps whatever ends in the namespace and exits with the restored process's status.

use std::io::{Read, Write};
use std::os::fd::RawFd;

use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use tracing::debug;

use super::error::RestoreError;
use crate::error::{Error, Result};
use crate::sys::process::{
    close_from, fork_into_namespaces, fork_with_pid_sharing, loopback_up, Forked,
};

/// The new namespaces a restore creates for its process (`--pidns`, `--netns`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Namespaces {
    /// A new PID namespace: the process keeps its pids inside it.
    pub pid: bool,
    /// A new network namespace with loopback up.
    pub net: bool,
}

impl Namespaces {
    /// The namespaces asked for, or `None` when the process restores into cryo's own.
    pub fn new(pid: bool, net: bool) -> Option<Self> {
        (pid || net).then_some(Self { pid, net })
    }
}

/// The processes [`spawn_init`] created.
#[derive(Debug, Clone, Copy)]
pub struct InitSpawn {
    /// The init (cryo's child).
    pub init: Pid,
    /// The restored process, as cryo sees it (its pid outside the namespace).
    pub child: Pid,
}

/// Forks an init into new namespaces; it forks `pid` there, which runs `child_main`.
/// `child_main` does not return. `inherited` are fds of cryo meant for the restored process that the init must not keep.
/// `share`: the namespaces its clone makes (child::clone_namespaces: a user namespace, whose
/// maps cryo writes once it says hello, a network namespace whose interfaces cryo makes).
pub fn spawn_init(
    pid: Pid,
    ns: Namespaces,
    inherited: &[RawFd],
    share: u64,
    child_main: impl FnOnce(),
) -> Result<InitSpawn> {
    let mut flags = 0u64;
    if ns.pid {
        flags |= libc::CLONE_NEWPID as u64;
    }
    if ns.net {
        flags |= libc::CLONE_NEWNET as u64;
    }
    let (ready_rd, ready_wr) = nix::unistd::pipe().map_err(|e| Error::sys(pid, "pipe", e))?;
    let init = match fork_into_namespaces(flags) {
        Err(e) => return Err(Error::sys(pid, "create the new namespaces", e)),
        Ok(Forked::Child) => {
            drop(ready_rd);
            let mut ready = std::fs::File::from(ready_wr);
            let up = if ns.net { loopback_up() } else { Ok(()) };
            // The restored processes back in "cryo's" network namespace join this one's.
            crate::task::netns::outer_is_here();
            let child = up.and_then(|()| fork_with_pid_sharing(pid, share));
            match child {
                Ok(Forked::Child) => {
                    // cryo waits for this pipe's end: the restored process must not hold it.
                    drop(ready);
                    child_main();
                    crate::sys::process::exit_child(71)
                }
                Ok(Forked::Parent(child)) => {
                    let _ = ready.write_all(b"ok");
                    drop(ready);
                    // Not a restored process: back on every CPU cryo had.
                    crate::sys::sched::unpin_forked();
                    init_main(child, inherited)
                }
                Err(e) => {
                    let _ = write!(ready, "{e}");
                    crate::sys::process::exit_child(1)
                }
            }
        }
        Ok(Forked::Parent(init)) => init,
    };
    drop(ready_wr);
    let mut answer = String::new();
    let _ = std::fs::File::from(ready_rd).read_to_string(&mut answer);
    if answer != "ok" {
        let _ = waitpid(init, None);
        return Err(RestoreError::NamespaceInit { pid, answer }.into());
    }
    let children = crate::proc::children(init)?;
    let [child] = children[..] else {
        return Err(RestoreError::NamespaceChildren { pid, children }.into());
    };
    debug!(%init, %child, "restoring in new namespaces");
    Ok(InitSpawn { init, child })
}

/// The init's life: reap everything, exit with the status of `child` when it ends.
fn init_main(child: Pid, inherited: &[RawFd]) -> ! {
    // cryo held SIGINT and SIGTERM while it forked this: the init answers them as usual.
    let _ = crate::sys::signal::set_mask(0);
    // Nothing of cryo's stays open here: a pipe cryo's caller reads must see its end.
    for &fd in inherited {
        let _ = nix::unistd::close(fd);
    }
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for fd in 0..3 {
            let _ = crate::sys::fd::dup_to(std::os::fd::AsFd::as_fd(&null), fd, false);
        }
    }
    let _ = close_from(3);
    loop {
        let code = match waitpid(None, None) {
            Ok(WaitStatus::Exited(p, code)) if p == child => code,
            Ok(WaitStatus::Signaled(p, sig, _)) if p == child => 128 + sig as i32,
            Err(nix::errno::Errno::ECHILD) => 0,
            _ => continue,
        };
        // Ends the init (and so the namespace) with the restored process's status.
        crate::sys::process::exit_child(code)
    }
}
