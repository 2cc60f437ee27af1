//! Probes on a parked child, through the engine's own code: the freezer (ptrace seize and
//! interrupt), the register, sigmask, siginfo and rseq reads of a dump, process_vm_readv and
//! writev, pidfd_getfd, kcmp, and PR_SET_MM_MAP installed by a remote call as a restore does.
//!
//! ```text
//! cryo check ── fork (SIGUSR1 blocked) ──> child: pause() forever, one SIGUSR1 pending
//!   ptrace          FrozenTask::freeze, sys::ptrace reads, drop = detach
//!   process_vm      sys::process::vm_read / vm_write of a word the child inherited
//!   pidfd_getfd     sys::pidfd of the pipe end the child inherited
//!   kcmp            sys::kcmp: the child's pipe ends against ours
//!   pr_set_mm_map   FrozenTask + Remote + Scratch, memory::restore::set_mm_map
//! dropping the Target kills and reaps the child
//! ```

use std::fs;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::error::{at, CheckError, Outcome};
use crate::freeze::FrozenTask;
use crate::remote::{Remote, Scratch};
use crate::sys::process::{self, Forked};
use crate::sys::{kcmp, pidfd, ptrace as pt};

/// A word the child inherits; process_vm_writev changes the child's copy only.
static PROBE_WORD: AtomicU64 = AtomicU64::new(0);
/// The value the child starts with.
const PROBE_MAGIC: u64 = 0x6372_796f_6368_6b31;

/// The child the ptrace-family probes share. It blocks SIGUSR1 (one is left pending for
/// PTRACE_PEEKSIGINFO) and holds copies of `pipe_r`/`pipe_w`. Dropping it kills and reaps it.
pub(super) struct Target {
    pid: Pid,
    pipe_r: OwnedFd,
    pipe_w: OwnedFd,
}

impl Target {
    pub(super) fn start() -> Outcome<Self> {
        PROBE_WORD.store(PROBE_MAGIC, Ordering::SeqCst);
        let (pipe_r, pipe_w) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(at("pipe2"))?;
        let parent = nix::unistd::getpid();
        // SIGUSR1 blocked in this thread around the fork: the child starts with it blocked,
        // and the one sent right after stays pending instead of killing it.
        let mut usr1 = SigSet::empty();
        usr1.add(Signal::SIGUSR1);
        let old = usr1
            .thread_swap_mask(SigmaskHow::SIG_BLOCK)
            .map_err(at("pthread_sigmask"))?;
        let forked = match process::fork() {
            Ok(Forked::Child) => process::park_child(parent),
            Ok(Forked::Parent(pid)) => Ok(pid),
            Err(e) => Err(e),
        };
        // Only the parent gets here: the child parked above, keeping SIGUSR1 blocked.
        let _ = old.thread_set_mask();
        let pid = forked.map_err(at("clone3"))?;
        let target = Self {
            pid,
            pipe_r,
            pipe_w,
        };
        kill(pid, Signal::SIGUSR1).map_err(at("kill SIGUSR1"))?;
        Ok(target)
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = kill(self.pid, Signal::SIGKILL);
        reap(self.pid);
    }
}

/// Waits until `pid` (our child) has exited; ECHILD means someone else reaped it.
pub(super) fn reap(pid: Pid) -> Option<WaitStatus> {
    loop {
        match waitpid(pid, Some(WaitPidFlag::__WALL)) {
            Ok(st @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => return Some(st),
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return None,
        }
    }
}

/// The freezer, then what a dump reads of a stopped thread.
pub(super) fn probe_ptrace(target: &Target) -> Outcome {
    let pid = target.pid;
    let frozen = FrozenTask::freeze(pid).map_err(at("freeze (PTRACE_SEIZE, PTRACE_INTERRUPT)"))?;
    pt::get_regs(pid).map_err(at("PTRACE_GETREGS"))?;
    let xstate = pt::get_xstate(pid).map_err(at("PTRACE_GETREGSET NT_X86_XSTATE"))?;
    let mask = pt::get_sigmask(pid).map_err(at("PTRACE_GETSIGMASK"))?;
    let usr1 = 1u64 << (libc::SIGUSR1 - 1);
    if mask & usr1 == 0 {
        return Err(CheckError::unexpected(
            "PTRACE_GETSIGMASK",
            format!("{mask:#x} lacks the blocked SIGUSR1"),
        ));
    }
    let queued = pt::peek_siginfo(pid, true).map_err(at("PTRACE_PEEKSIGINFO"))?;
    let signos: Vec<i32> = queued
        .iter()
        .map(|i| i32::from_ne_bytes([i[0], i[1], i[2], i[3]]))
        .collect();
    if !signos.contains(&libc::SIGUSR1) {
        return Err(CheckError::unexpected(
            "PTRACE_PEEKSIGINFO",
            format!("pending SIGUSR1 not seen ({signos:?})"),
        ));
    }
    let rseq = pt::get_rseq(pid).map_err(at("PTRACE_GET_RSEQ_CONFIGURATION"))?;
    let rseq = if rseq.abi_pointer == 0 {
        "no rseq registered".to_string()
    } else {
        format!(
            "rseq {} bytes, signature {:#x}",
            rseq.abi_size, rseq.signature
        )
    };
    drop(frozen);
    Ok(format!(
        "seize+interrupt stop; xstate {} bytes; sigmask and pending SIGUSR1 read; {rseq}",
        xstate.len()
    ))
}

/// The word of the child, read and written the way remote batches are.
pub(super) fn probe_process_vm(target: &Target) -> Outcome {
    let pid = target.pid;
    let addr = &PROBE_WORD as *const AtomicU64 as u64;
    let read = |what: &'static str| -> Outcome<u64> {
        let mut buf = [0u8; 8];
        let n = process::vm_read(pid, addr, &mut buf).map_err(at(what))?;
        if n != 8 {
            return Err(CheckError::unexpected(
                what,
                format!("short read of {n} bytes"),
            ));
        }
        Ok(u64::from_ne_bytes(buf))
    };
    let before = read("process_vm_readv")?;
    if before != PROBE_MAGIC {
        return Err(CheckError::unexpected(
            "process_vm_readv",
            format!("read {before:#x}, expected {PROBE_MAGIC:#x}"),
        ));
    }
    let new = !PROBE_MAGIC;
    let n = process::vm_write(pid, addr, &new.to_ne_bytes()).map_err(at("process_vm_writev"))?;
    if n != 8 {
        return Err(CheckError::unexpected(
            "process_vm_writev",
            format!("short write of {n} bytes"),
        ));
    }
    let after = read("process_vm_readv after write")?;
    if after != new {
        return Err(CheckError::unexpected(
            "process_vm_writev",
            format!("child holds {after:#x}, expected {new:#x}"),
        ));
    }
    Ok("read, wrote and read back a word of a child".to_string())
}

/// The child's pipe end duplicated here, as files/ takes a task's fds.
pub(super) fn probe_pidfd_getfd(target: &Target) -> Outcome {
    use std::os::unix::fs::MetadataExt;
    let pidfd = pidfd::pidfd_open(target.pid).map_err(at("pidfd_open"))?;
    let fd = target.pipe_r.as_raw_fd();
    let dup = fs::File::from(pidfd::pidfd_getfd(pidfd.as_fd(), fd).map_err(at("pidfd_getfd"))?);
    let ours = fs::File::from(target.pipe_r.try_clone().map_err(at("dup"))?);
    let (a, b) = (
        dup.metadata().map_err(at("fstat"))?,
        ours.metadata().map_err(at("fstat"))?,
    );
    if (a.dev(), a.ino()) != (b.dev(), b.ino()) {
        return Err(CheckError::unexpected(
            "pidfd_getfd",
            format!("fd {fd} of the child is not the pipe it inherited"),
        ));
    }
    Ok(format!(
        "pidfd_open, then the child's fd {fd} duplicated here"
    ))
}

/// The child's pipe ends against ours, as files/ tells shared descriptions apart.
pub(super) fn probe_kcmp(target: &Target) -> Outcome {
    let me = nix::unistd::getpid();
    let (r, w) = (target.pipe_r.as_raw_fd(), target.pipe_w.as_raw_fd());
    let same = kcmp::kcmp_same_file(me, r, target.pid, r).map_err(at("kcmp KCMP_FILE"))?;
    let differ = kcmp::kcmp_same_file(me, w, target.pid, r).map_err(at("kcmp KCMP_FILE"))?;
    if !same || differ {
        return Err(CheckError::unexpected(
            "kcmp KCMP_FILE",
            format!("same file compared equal: {same}, different files compared equal: {differ}"),
        ));
    }
    Ok("KCMP_FILE tells a shared open file from a different one".to_string())
}

/// The child's own layout installed again through a remote PR_SET_MM_MAP, by the function a
/// restore uses.
pub(super) fn probe_pr_set_mm_map(target: &Target) -> Outcome {
    let size = crate::sys::prctl::mm_map_size().map_err(at("PR_SET_MM_MAP_SIZE"))?;
    if size as usize != crate::sys::prctl::MM_MAP_LEN {
        return Err(CheckError::unexpected(
            "PR_SET_MM_MAP_SIZE",
            format!(
                "kernel struct is {size} bytes, cryo writes {}",
                crate::sys::prctl::MM_MAP_LEN
            ),
        ));
    }
    let pid = target.pid;
    let frozen = FrozenTask::freeze(pid).map_err(at("freeze"))?;
    let mut remote = Remote::borrow(pid).map_err(at("take the thread for remote calls"))?;
    let scratch = Scratch::map(&mut remote).map_err(at("map the scratch page"))?;
    let installed = (|| -> Outcome<usize> {
        let stat = crate::proc::stat(pid).map_err(at("/proc/PID/stat"))?;
        let brk = remote
            .call(libc::SYS_brk, &[0])
            .map_err(at("remote brk(0)"))?;
        let auxv = crate::proc::auxv(pid).map_err(at("/proc/PID/auxv"))?;
        let mm = crate::memory::dump::mm_layout(&stat, brk, auxv);
        crate::memory::restore::set_mm_map(pid, &remote, scratch.addr, &mm, u64::MAX)
            .map_err(at("remote PR_SET_MM_MAP"))?;
        Ok(mm.auxv.len() * 8)
    })();
    let unmapped = scratch.unmap(&remote).map_err(at("unmap the scratch page"));
    let released = remote.release().map_err(at("put the thread back"));
    drop(frozen);
    let auxv = installed?;
    unmapped?;
    released?;
    Ok(format!(
        "struct {size} bytes; a frozen child was given its own layout and {auxv} bytes of \
         auxv by a remote call"
    ))
}
