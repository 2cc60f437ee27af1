//! Freezing a task: every thread seized and interrupted (PTRACE_SEIZE + PTRACE_INTERRUPT);
//! dropping the freeze detaches them, leaving the task running as before.

use std::os::fd::{AsFd, OwnedFd};

use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::ptrace;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tracing::debug;

use crate::dump::error::DumpError;
use crate::error::{Error, Result};
use crate::proc;
use crate::sys::pidfd;
use crate::sys::ptrace as pt;
use crate::task::signals::PendingStops;

/// The frozen tasks whose SIGSTOP a remote call takes (and holds back) is put back by their
/// release ([`FrozenTask::pending_stops`]), which the remote call's own sending it again (to
/// the process) would not put where it was.
static STOPS_PUT_BACK_BY_RELEASE: std::sync::Mutex<Vec<StopsPutBack>> =
    std::sync::Mutex::new(Vec::new());

/// One frozen task of [`STOPS_PUT_BACK_BY_RELEASE`].
#[derive(Debug)]
struct StopsPutBack {
    tids: Vec<Pid>,
    /// In a group stop: every SIGSTOP held back is put back (a stop signal sent to a stopped
    /// process only waits); whether one was.
    group_stopped: bool,
    held: bool,
    /// Running: the SIGSTOPs pending when it was frozen, not yet taken by a remote call (the
    /// shared one; the threads that had their own). One taken past those arrived during the
    /// dump: sent again by the remote call, judged as any signal that did.
    owed_shared: bool,
    owed_threads: Vec<Pid>,
}

/// Called by a remote call that held a SIGSTOP back from thread `tid`: true when the thread's
/// release puts its pending stop signals back (the SIGSTOP noted), false when the caller is
/// to send it again itself.
pub(crate) fn stop_put_back_by_release(tid: Pid) -> bool {
    let mut tasks = STOPS_PUT_BACK_BY_RELEASE
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let Some(task) = tasks.iter_mut().find(|t| t.tids.contains(&tid)) else {
        return false;
    };
    if task.group_stopped {
        task.held = true;
        return true;
    }
    // A thread takes its own before the process's.
    if let Some(at) = task.owed_threads.iter().position(|&t| t == tid) {
        task.owed_threads.remove(at);
        return true;
    }
    std::mem::replace(&mut task.owed_shared, false)
}

/// Forgets threads `tids` of the registry: whether a SIGSTOP was held back from any (of a
/// task in a group stop).
fn forget_held_stops(tids: &[Pid]) -> bool {
    let mut tasks = STOPS_PUT_BACK_BY_RELEASE
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let held = tasks
        .iter()
        .any(|t| t.held && t.tids.iter().any(|tid| tids.contains(tid)));
    tasks.retain(|t| !t.tids.iter().any(|tid| tids.contains(tid)));
    held
}

/// A task whose threads are all stopped under our ptrace.
#[derive(Debug)]
pub struct FrozenTask {
    pid: Pid,
    tids: Vec<Pid>,
    /// Set once the task has been killed: nothing left to detach.
    killed: bool,
    /// In a group stop (SIGSTOP, SIGTSTP) when seized: released, it goes back into it.
    group_stopped: bool,
    /// The signal of that group stop, as the seize reported it.
    stop_signal: Option<Signal>,
    /// In a group stop: the stop signals pending to it then, read before the seize (which
    /// lets cryo's remote calls take a pending SIGSTOP). Running: a SIGSTOP pending to it
    /// once every thread was seized (none: `None`), sent before the freeze and not yet
    /// taken. Put back by the release where a remote call took it.
    pending_stops: Option<PendingStops>,
    /// The threads whose syscall user dispatch was on, turned off while frozen: their
    /// configuration, put back on release.
    dispatch: Vec<(Pid, pt::SudConfig)>,
    /// When its freeze began (an attempt that froze the tree again carries it over).
    since: std::time::Instant,
}

/// Checks that `pid` is a user process we can dump, before anything touches it.
pub fn check_target(pid: Pid) -> Result<proc::Stat> {
    if pid.as_raw() <= 0 {
        return Err(Error::target(pid, "not a valid pid"));
    }
    let stat = proc::stat(pid)?;
    if stat.flags & proc::PF_KTHREAD != 0 {
        return Err(Error::target(
            pid,
            format!(
                "{} is a kernel thread: it has no user state to dump",
                stat.comm
            ),
        ));
    }
    if pid == nix::unistd::getpid() {
        return Err(Error::target(pid, "cryo cannot dump itself"));
    }
    if stat.state == 'Z' || stat.state == 'X' {
        // A zombie main thread with threads still running: the leader called pthread_exit.
        let threads = std::fs::read_dir(proc::dir(pid).join("task")).map_or(0, |d| d.count());
        if threads > 1 {
            return Err(Error::target(
                pid,
                format!(
                    "{}: its main thread has ended (pthread_exit) while {} other threads run: \
                     a process whose leader is gone is not supported",
                    stat.comm,
                    threads - 1
                ),
            ));
        }
        return Err(Error::target(pid, format!("{} is a zombie", stat.comm)));
    }
    Ok(stat)
}

impl FrozenTask {
    /// The signal that stopped the task (SIGSTOP, SIGTSTP, SIGTTIN, SIGTTOU) when it was in a
    /// group stop as it was seized.
    pub fn stop_signal(&self) -> Option<Signal> {
        self.stop_signal
    }

    /// Whether it was in a group stop as it was seized (entered since its state was read,
    /// if its main thread reported so).
    pub fn group_stopped(&self) -> bool {
        self.group_stopped
    }

    /// The stop signals pending to it when it was in a group stop as it was seized; running,
    /// the SIGSTOP pending to it once seized, if any.
    pub fn pending_stops(&self) -> Option<&PendingStops> {
        self.pending_stops.as_ref()
    }

    /// When its freeze began.
    pub fn frozen_since(&self) -> std::time::Instant {
        self.since
    }

    /// Seizes and interrupts every thread of `pid`. On failure every thread seized so far is
    /// released again.
    pub fn freeze(pid: Pid) -> Result<Self> {
        let mut frozen = FrozenTask {
            since: std::time::Instant::now(),
            pid,
            tids: Vec::new(),
            killed: false,
            group_stopped: match proc::stat(pid) {
                Ok(stat) => stat.state == 'T',
                Err(e) if e.vanished() => {
                    return Err(DumpError::ExitedWhileFrozen { pid, tid: pid }.into())
                }
                Err(e) => return Err(e.into()),
            },
            stop_signal: None,
            pending_stops: None,
            dispatch: Vec::new(),
        };
        if frozen.group_stopped {
            // Before any thread is seized: no thread of a stopped process is born or ends.
            frozen.pending_stops = Some(PendingStops::read(pid, &proc::tids(pid)?)?);
        }
        // Threads that took a SIGSTOP as they were seized.
        let mut sigstop_taken = Vec::new();
        // Threads may be born while we seize: loop until the set is stable.
        loop {
            let mut tids = proc::tids(pid)?;
            // The main thread first: images keep it as thread 0.
            tids.sort_by_key(|&t| (t != pid, t));
            let mut new = false;
            for tid in tids {
                if frozen.tids.contains(&tid) {
                    continue;
                }
                new = true;
                // A thread (not the main one) that ended before it was seized is gone: the
                // process goes on being frozen without it (a thread pool that comes and goes).
                let ended = || tid != pid && exited(pid, tid);
                match refuse_traced(pid, tid) {
                    Err(_) if ended() => continue,
                    other => other?,
                }
                let stop = match seize_one(tid) {
                    Err(nix::errno::Errno::ESRCH | nix::errno::Errno::EPERM) if ended() => continue,
                    other => other,
                };
                let stop = stop.map_err(|e| match e {
                    // The kernel refuses to attach to a task that is exiting (EPERM too).
                    nix::errno::Errno::ESRCH | nix::errno::Errno::EPERM if exited(pid, tid) => {
                        DumpError::ExitedWhileFrozen { pid, tid }.into()
                    }
                    nix::errno::Errno::EPERM => Error::target(
                        pid,
                        format!(
                            "cannot trace thread {tid}: permission denied (is it traced by another \
                             debugger, or protected by the yama ptrace scope?)"
                        ),
                    ),
                    e => Error::sys(pid, format!("freeze thread {tid}"), e),
                })?;
                frozen.tids.push(tid);
                match stop {
                    Seized::GroupStop(sig) if frozen.group_stopped => {
                        frozen.stop_signal.get_or_insert(sig);
                    }
                    // It took a stop signal between its state's read and the seize of its
                    // main thread (seized first): stopped, as the rest of the freeze sees it.
                    Seized::GroupStop(sig) if tid == pid => {
                        frozen.group_stopped = true;
                        frozen.stop_signal = Some(sig);
                        frozen.pending_stops = Some(PendingStops::read(pid, &proc::tids(pid)?)?);
                    }
                    // Taken between the seize and the interrupt: pending still, as far as the
                    // process goes (a SIGSTOP is kept as pending to that thread).
                    Seized::Delivering(Signal::SIGSTOP) => sigstop_taken.push(tid),
                    Seized::Delivering(sig) => {
                        tracing::warn!(%pid, %tid, ?sig, "signal taken as the thread was seized");
                    }
                    _ => {}
                }
                if !frozen.group_stopped {
                    resume_stopped_wait(pid, tid)?;
                }
            }
            if !new {
                break;
            }
        }
        if !frozen.group_stopped {
            // Once every thread is in its trap, before any remote call: a SIGSTOP pending
            // now was sent before the freeze, and the first remote call in a thread would
            // take it (the one signal its mask cannot block). The other stop signals stay
            // queued (blocked by the calls), dumped with the others.
            let mut stops = PendingStops::read(pid, &frozen.tids)?.only(libc::SIGSTOP);
            stops.add_to_threads(libc::SIGSTOP, &sigstop_taken);
            if !stops.is_empty() {
                frozen.pending_stops = Some(stops);
            }
        }
        if let Some(stops) = &frozen.pending_stops {
            // Before any remote call.
            let bit = 1u64 << (libc::SIGSTOP - 1);
            let mut tasks = STOPS_PUT_BACK_BY_RELEASE
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            tasks.push(StopsPutBack {
                tids: frozen.tids.clone(),
                group_stopped: frozen.group_stopped,
                held: false,
                owed_shared: stops.shared & bit != 0,
                owed_threads: stops
                    .threads
                    .iter()
                    .filter(|&&(_, set)| set & bit != 0)
                    .map(|&(tid, _)| tid)
                    .collect(),
            });
        }
        // Before any remote call: a thread inside a restartable sequence leaves it by its
        // abort handler, as the kernel would make it (cryo's calls would clear it unaborted).
        for &tid in &frozen.tids {
            let aborted = crate::task::threads::abort_rseq_critical_section(tid)
                .map_err(|e| Error::sys(pid, format!("abort the rseq section of thread {tid}"), e))?;
            if aborted {
                debug!(%pid, %tid, "thread in a restartable sequence: moved to its abort handler");
            }
        }
        // Before any remote call, and once no thread runs (a TSYNC could confine a thread
        // already stopped): a confined thread's filters must not see cryo's calls.
        for &tid in &frozen.tids {
            crate::task::security::suspend_seccomp(pid, tid)?;
        }
        // Likewise syscall user dispatch: with its selector on BLOCK, every call cryo makes in
        // the thread would be turned into a SIGSYS. Off while frozen, put back on release.
        for &tid in &frozen.tids {
            let conf = pt::get_sud(tid)
                .map_err(|e| Error::sys(pid, format!("read syscall user dispatch of thread {tid}"), e))?;
            if conf.mode != 0 {
                pt::set_sud(tid, &pt::SudConfig::default()).map_err(|e| {
                    Error::sys(pid, format!("suspend syscall user dispatch of thread {tid}"), e)
                })?;
                frozen.dispatch.push((tid, conf));
            }
        }
        debug!(%pid, threads = frozen.tids.len(), "frozen");
        Ok(frozen)
    }

    /// The process.
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// Its threads, the main one first.
    pub fn tids(&self) -> &[Pid] {
        &self.tids
    }

    /// The syscall user dispatch thread `tid` had (off while it is frozen), if it was on.
    pub fn syscall_dispatch(&self, tid: Pid) -> Option<pt::SudConfig> {
        self.dispatch
            .iter()
            .find(|(t, _)| *t == tid)
            .map(|(_, conf)| *conf)
    }

    /// Kills the task while it is still frozen (the end of a dump without --leave-running).
    /// The task is still dying on return: [`Dying::wait_gone`] waits for its end, so that
    /// several tasks can be killed at once and their exits overlap.
    pub fn kill(mut self) -> Result<Dying> {
        nix::sys::signal::kill(self.pid, Signal::SIGKILL)
            .map_err(|e| Error::sys(self.pid, "kill", e))?;
        self.killed = true;
        forget_held_stops(&self.tids);
        Ok(Dying {
            pid: self.pid,
            tids: std::mem::take(&mut self.tids),
        })
    }
}

/// Kills a frozen tree, given parents first, so that it leaves no zombie holding a pid the
/// restore needs: children first, level by level. cryo, their tracer, collects each level's
/// exits, which hands every zombie back to its parent, still frozen, and the parent reaps it
/// by a remote wait4 before it is killed in turn (its own zombie children of the image too).
/// Killed together with their parent, the children would go to init, which reaps orphans
/// only every second or two on some hosts. No parent runs again, so none sees a child die.
/// The roots (whose parents are not the dump's) are returned dying, for their parents.
pub fn kill_tree(frozen: Vec<FrozenTask>) -> Result<Vec<Dying>> {
    let pids: Vec<Pid> = frozen.iter().map(|f| f.pid).collect();
    let parent_of: Vec<Option<usize>> = pids
        .iter()
        .map(|&p| {
            let ppid = proc::stat(p).ok()?.ppid;
            pids.iter().position(|q| q.as_raw() == ppid)
        })
        .collect();
    let mut left: Vec<Option<FrozenTask>> = frozen.into_iter().map(Some).collect();
    loop {
        let alive = |i: usize, left: &[Option<FrozenTask>]| left[i].is_some();
        let level: Vec<usize> = (0..left.len())
            .filter(|&i| alive(i, &left))
            .filter(|&i| !(0..left.len()).any(|c| parent_of[c] == Some(i) && alive(c, &left)))
            .collect();
        let last = level.len() == left.iter().filter(|t| t.is_some()).count();
        let mut dying = Vec::with_capacity(level.len());
        for i in level {
            let Some(task) = left[i].take() else { continue };
            reap_children(task.pid);
            dying.push(task.kill()?);
        }
        if last {
            return Ok(dying);
        }
        dying.into_iter().for_each(Dying::wait_gone);
    }
}

/// Reaps, by a remote wait4 in frozen `pid`, its children that are zombies now (killed and
/// collected by cryo, or zombies already). A failure only leaves them to init: logged.
fn reap_children(pid: Pid) {
    let children = match proc::children(pid) {
        Ok(c) if !c.is_empty() => c,
        Ok(_) => return,
        Err(e) => {
            debug!(%pid, "cannot list the killed children: {e}");
            return;
        }
    };
    let remote = match crate::remote::Remote::borrow(pid) {
        Ok(r) => r,
        Err(e) => {
            debug!(%pid, "cannot reap the killed children: {e}");
            return;
        }
    };
    let flags = (libc::WNOHANG | libc::__WALL) as u32 as u64;
    for child in children {
        let got = remote.syscall(libc::SYS_wait4, &[child.as_raw() as u64, 0, flags, 0]);
        debug!(%pid, %child, ?got, "reaped by its parent before it is killed");
    }
    if let Err(e) = remote.release() {
        debug!(%pid, "release after reaping: {e}");
    }
}

/// A frozen task sent SIGKILL whose threads may not have exited yet.
#[derive(Debug)]
pub struct Dying {
    pid: Pid,
    tids: Vec<Pid>,
}

impl Dying {
    /// Waits, as their tracer, until every thread has exited: once a dump returns, what it
    /// killed is dead (at most a zombie for its parent to reap), never still running.
    ///
    /// The other threads first, in whatever order they end (each reaped as it does: a pidfd
    /// of each, polled), then the main one, whose exit waits for theirs. Not one by one: the
    /// last thread of the init of a PID namespace to exit waits there for every other task of
    /// the namespace to be reaped, its sibling threads that cryo traces included, so waiting
    /// for it first never ended (a namespace whose init forked in a thread of its own).
    pub fn wait_gone(self) {
        let Some((&main, others)) = self.tids.split_first() else {
            return;
        };
        let mut left: Vec<Pid> = others.to_vec();
        loop {
            left.retain(|&tid| !reaped(self.pid, tid, WaitPidFlag::WNOHANG));
            if left.is_empty() {
                break;
            }
            let pidfds: Vec<OwnedFd> = left
                .iter()
                .filter_map(|&tid| pidfd::pidfd_open_flags(tid, PIDFD_THREAD).ok())
                .collect();
            if pidfds.is_empty() {
                // No thread pidfds here: the old order, each waited for in turn.
                for &tid in left.iter().rev() {
                    reaped(self.pid, tid, WaitPidFlag::empty());
                }
                break;
            }
            if pidfds.len() < left.len() {
                // One gone meanwhile: reaped on the next pass.
                continue;
            }
            let mut polled: Vec<PollFd<'_>> = pidfds
                .iter()
                .map(|fd| PollFd::new(fd.as_fd(), PollFlags::POLLIN))
                .collect();
            // Bounded: a wakeup missed costs a tenth of a second, not the dump.
            if let Err(e) = nix::poll::poll(&mut polled, PollTimeout::from(100u16)) {
                if e != nix::errno::Errno::EINTR {
                    debug!(pid = %self.pid, "poll the killed threads' pidfds: {e}");
                }
            }
        }
        reaped(self.pid, main, WaitPidFlag::empty());
    }
}

/// PIDFD_THREAD (linux/pidfd.h): a pidfd of one thread, readable once that thread exits.
const PIDFD_THREAD: u32 = libc::O_EXCL as u32;

/// Reaps killed thread `tid` of `pid` as its tracer (waiting for it unless `flags` says
/// WNOHANG): true once it is gone (exited, or no longer cryo's to wait for).
fn reaped(pid: Pid, tid: Pid, flags: WaitPidFlag) -> bool {
    loop {
        match waitpid(tid, Some(WaitPidFlag::__WALL | flags)) {
            Ok(WaitStatus::Exited(..)) | Ok(WaitStatus::Signaled(..)) => return true,
            Ok(WaitStatus::StillAlive) => return false,
            // A stop reported before the kill landed: the exit follows.
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            // ECHILD: already reaped or no longer ours to wait for.
            Err(e) => {
                debug!(%pid, %tid, "wait for the killed thread: {e}");
                return true;
            }
        }
    }
}

/// Whether thread `tid` of `pid` is gone or exiting (a zombie, or dead and not yet reaped).
fn exited(pid: Pid, tid: Pid) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")) {
        Err(_) => true,
        // The state follows the command name's closing parenthesis.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| matches!(state, "Z" | "X" | "x")),
    }
}

/// A thread traced by someone else (gdb, strace) cannot be ours: said with the tracer's pid.
fn refuse_traced(pid: Pid, tid: Pid) -> Result<()> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status"));
    let tracer = status.ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("TracerPid:"))
            .and_then(|v| v.trim().parse::<i32>().ok())
    });
    match tracer {
        Some(tracer) if tracer != 0 => {
            let comm = std::fs::read_to_string(format!("/proc/{tracer}/comm"))
                .map(|c| c.trim_end().to_string())
                .unwrap_or_default();
            Err(Error::target(
                pid,
                format!(
                    "thread {tid} is traced by pid {tracer} ({comm}): detach that tracer first"
                ),
            ))
        }
        _ => Ok(()),
    }
}

/// Puts thread `tid`, just interrupted, back into a wait without timeout that the interrupt
/// made fail with EINTR (epoll_wait, semop...): resumed, by cryo or on its own when cryo dies,
/// it waits on as if never stopped. Not when a signal is pending for it: that one's handler
/// is owed the EINTR.
fn resume_stopped_wait(pid: Pid, tid: Pid) -> Result<()> {
    let regs = crate::sys::ptrace::get_regs(tid)
        .map_err(|e| Error::sys(pid, format!("registers of thread {tid}"), e))?;
    let Some(restarted) = crate::task::threads::restart_stopped_wait(&regs) else {
        return Ok(());
    };
    let status = proc::read(pid, &format!("task/{tid}/status"))?;
    let mask = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(0)
    };
    if (mask("SigPnd:") | mask("ShdPnd:")) & !mask("SigBlk:") != 0 {
        return Ok(());
    }
    // The instruction before is the `syscall` the thread goes back to.
    let mut code = [0u8; 2];
    if crate::sys::ptrace::read_mem(tid, restarted.rip, &mut code).is_err() || code != [0x0f, 0x05]
    {
        return Ok(());
    }
    crate::sys::ptrace::set_regs(tid, &restarted)
        .map_err(|e| Error::sys(pid, format!("restart the wait of thread {tid}"), e))?;
    debug!(%tid, syscall = regs.orig_rax, "wait failed by the freeze restarted");
    Ok(())
}

/// How a thread seized stopped first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seized {
    /// In the group stop of this signal (PTRACE_EVENT_STOP with the stopping signal).
    GroupStop(Signal),
    /// Interrupted (PTRACE_EVENT_STOP with SIGTRAP).
    Interrupted,
    /// In the delivery stop of a signal it had just taken from its queues, between the seize
    /// and the interrupt: the first remote call, resuming it without, discards it.
    Delivering(Signal),
}

/// Seizes and interrupts thread `tid`; says how it stopped ([`Seized`]).
fn seize_one(tid: Pid) -> nix::Result<Seized> {
    // Remote calls take the thread back at syscall stops, told from signal stops by the 0x80.
    ptrace::seize(tid, ptrace::Options::PTRACE_O_TRACESYSGOOD)?;
    if let Err(e) = ptrace::interrupt(tid) {
        let _ = ptrace::detach(tid, None);
        return Err(e);
    }
    loop {
        match waitpid(tid, Some(WaitPidFlag::__WALL)) {
            Ok(WaitStatus::PtraceEvent(_, sig, libc::PTRACE_EVENT_STOP))
                if sig != Signal::SIGTRAP =>
            {
                return Ok(Seized::GroupStop(sig))
            }
            Ok(WaitStatus::Stopped(_, sig)) => return Ok(Seized::Delivering(sig)),
            Ok(WaitStatus::PtraceEvent(..)) => return Ok(Seized::Interrupted),
            Ok(WaitStatus::Exited(..)) | Ok(WaitStatus::Signaled(..)) => {
                return Err(nix::errno::Errno::ESRCH)
            }
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                let _ = ptrace::detach(tid, None);
                return Err(e);
            }
        }
    }
}

impl FrozenTask {
    /// Sends the task, still traced and stopped, its stop signals pending before the freeze
    /// (`stops`) that its queues lack now (a SIGSTOP a remote call took); `held` (in a group
    /// stop): a remote call held one back, sent again (to the process) when `stops` had none,
    /// one that arrived during the dump. Running, it takes them once let go, as it would
    /// have. A failure is logged: the release goes on.
    fn put_back_stops(&self, stops: &PendingStops, held: bool) {
        let now = match PendingStops::read(self.pid, &self.tids) {
            Ok(now) => now,
            Err(e) => {
                tracing::warn!(pid = %self.pid, "cannot read its pending stop signals: {e}");
                return;
            }
        };
        if let Err(e) = stops.send_missing(self.pid, &now) {
            tracing::warn!(pid = %self.pid, "cannot put its pending stop signals back: {e}");
        }
        if held && !stops.has_sigstop() && !now.has_sigstop() {
            if let Err(e) = nix::sys::signal::kill(self.pid, Signal::SIGSTOP) {
                tracing::warn!(pid = %self.pid, "cannot send a SIGSTOP held back again: {e}");
            }
        }
        debug!(pid = %self.pid, ?stops, ?now, "pending stop signals put back");
    }
}

impl Drop for FrozenTask {
    fn drop(&mut self) {
        if self.killed {
            return;
        }
        let held = forget_held_stops(&self.tids);
        if let Some(stops) = &self.pending_stops {
            self.put_back_stops(stops, held);
        }
        for (tid, conf) in &self.dispatch {
            if let Err(e) = pt::set_sud(*tid, conf) {
                tracing::warn!(%tid, "cannot put its syscall user dispatch back: {e}");
            }
        }
        for &tid in &self.tids {
            if let Err(e) = ptrace::detach(tid, None) {
                tracing::warn!(%tid, "detach: {e}");
            }
        }
        if self.group_stopped {
            // A detached thread re-enters the group stop on its own, a moment later: the
            // caller gets the task back as it was, stopped, not on its way there.
            let deadline = std::time::Instant::now() + std::time::Duration::from_millis(500);
            while proc::stat(self.pid).is_ok_and(|st| st.state != 'T')
                && std::time::Instant::now() < deadline
            {
                std::thread::yield_now();
            }
        }
        debug!(pid = %self.pid, "released");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A running task's SIGSTOPs pending at its freeze are put back by its release, one per
    /// SIGSTOP (a thread's own first, then the shared one); a further one is the remote call's
    /// to send again. A stopped task's are all put back by the release.
    #[test]
    fn only_the_sigstops_pending_at_the_freeze_are_left_to_the_release() {
        // Tids no test process has (above PID_MAX_LIMIT).
        let [a, b, c, d] = [5_000_001, 5_000_002, 5_000_003, 5_000_004].map(Pid::from_raw);
        STOPS_PUT_BACK_BY_RELEASE
            .lock()
            .unwrap()
            .extend([
                StopsPutBack {
                    tids: vec![a, b],
                    group_stopped: false,
                    held: false,
                    owed_shared: true,
                    owed_threads: vec![b],
                },
                StopsPutBack {
                    tids: vec![c],
                    group_stopped: true,
                    held: false,
                    owed_shared: false,
                    owed_threads: Vec::new(),
                },
            ]);
        assert!(stop_put_back_by_release(b), "b's own");
        assert!(stop_put_back_by_release(b), "the shared one");
        assert!(!stop_put_back_by_release(a), "arrived during the dump");
        assert!(!stop_put_back_by_release(d), "not registered");
        assert!(!forget_held_stops(&[a, b]));
        assert!(!stop_put_back_by_release(a), "forgotten");
        assert!(stop_put_back_by_release(c) && stop_put_back_by_release(c));
        assert!(forget_held_stops(&[c]), "held back from a stopped task");
    }
}
