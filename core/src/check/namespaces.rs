//! Process-creation probes, through the engine's clone3 wrappers: a child with a chosen pid
//! (`fork_with_pid`, as a restore recreates each task), and children that are the first
//! process of a new PID or network namespace (`fork_into_namespaces`, as a restore into
//! fresh namespaces starts), the latter bringing its loopback up as that restore does.
//! Every child makes raw system calls only, then exits: the caller may be multi-threaded.

use std::fs;
use std::io;

use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;

use super::error::{at, Cause, CheckError, Outcome};
use super::ptrace::reap;
use crate::sys::process::{self, Forked};

/// Reaps `child` and maps its exit: 0 is success, any other code the errno it failed with.
fn child_outcome(step: &'static str, child: Pid) -> Outcome<()> {
    match reap(child) {
        Some(WaitStatus::Exited(_, 0)) => Ok(()),
        Some(WaitStatus::Exited(_, errno)) => {
            Err(CheckError::new(step, io::Error::from_raw_os_error(errno)))
        }
        other => Err(CheckError::new(step, Cause::Child(format!("{other:?}")))),
    }
}

/// A child created with a pid of our choosing, as a restore recreates every task.
pub(super) fn probe_clone3_set_tid() -> Outcome {
    let read_int = |path: &'static str| -> Outcome<i32> {
        let text = fs::read_to_string(path).map_err(at(path))?;
        text.trim()
            .parse()
            .map_err(|e| CheckError::unexpected(path, format!("{text:?}: {e}")))
    };
    let last = read_int("/proc/sys/kernel/ns_last_pid")?;
    let max = read_int("/proc/sys/kernel/pid_max")?;
    // A number nothing uses: fork_with_pid waits on EEXIST for a pid being freed.
    let want = (0..64)
        .map(|attempt| {
            let want = last.saturating_add(1000 + attempt * 97);
            if want >= max {
                2000 + attempt * 97
            } else {
                want
            }
        })
        .find(|want| fs::metadata(format!("/proc/{want}")).is_err())
        .ok_or_else(|| {
            CheckError::unexpected("choose a pid", "no free pid number found".to_string())
        })?;
    let step = "clone3 set_tid";
    let child = match process::fork_with_pid(Pid::from_raw(want)).map_err(at(step))? {
        Forked::Child => process::exit_child(0),
        Forked::Parent(child) => child,
    };
    child_outcome(step, child)?;
    if child.as_raw() != want {
        return Err(CheckError::unexpected(
            step,
            format!("asked for {want}, got {child}"),
        ));
    }
    Ok(format!("child created with the chosen pid {want}"))
}

/// A child that is pid 1 of a new PID namespace.
pub(super) fn probe_pidns() -> Outcome {
    let step = "clone3(CLONE_NEWPID)";
    let child = match process::fork_into_namespaces(libc::CLONE_NEWPID as u64).map_err(at(step))? {
        Forked::Child => {
            let code = if nix::unistd::getpid().as_raw() == 1 {
                0
            } else {
                libc::ESRCH
            };
            process::exit_child(code)
        }
        Forked::Parent(child) => child,
    };
    child_outcome(step, child)?;
    Ok(format!(
        "a child in a new PID namespace is pid 1 there, {child} here"
    ))
}

/// A child in a new network namespace that brings its loopback up.
pub(super) fn probe_netns() -> Outcome {
    let step = "clone3(CLONE_NEWNET), then lo up";
    let child = match process::fork_into_namespaces(libc::CLONE_NEWNET as u64).map_err(at(step))? {
        Forked::Child => {
            let code = match process::loopback_up() {
                Ok(()) => 0,
                Err(e) => e.raw_os_error().unwrap_or(libc::EIO),
            };
            process::exit_child(code)
        }
        Forked::Parent(child) => child,
    };
    child_outcome(step, child)?;
    Ok("a child in a new network namespace brought its lo up".to_string())
}
