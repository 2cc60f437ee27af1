//! The last phases of a restore: each stopped process reshaped into the dumped one (memory
//! through remote syscalls from its trampoline, threads, timers, registers, credentials),
//! then all let go at once, then told they were restored.
//!
//! ```text
//! Spawned --reshape--> Reshaped --run--> Running --notify, release--> (roots, init)
//!  stopped, fds open    whole, stopped    running (killed if a late hook fails)
//! ```

use std::time::Duration;

use cryo_proto::image::Inventory;
use nix::sys::ptrace;
use nix::unistd::Pid;
use tracing::{debug, info};

use super::load::TaskImage;
use super::spawn::Spawned;
use super::tree::Planned;
use crate::error::{Error, Result};
use crate::files;
use crate::memory::restore::{reshape, run_batch, PageSources};
use crate::memory::PAGE;
use crate::remote::{BatchSite, Remote, BATCH_LOOP_OFFSET};
use crate::sockets::peers::Probing;
use crate::sys::signal::KernelSigaction;
use crate::task::security::Threads;
use crate::task::signals::{self, StopNotice};
use crate::task::{attrs, threads, timers};

/// Every process whole and stopped, the tree's seals and terminal modes set: nothing runs
/// yet.
pub(crate) struct Reshaped {
    spawned: Spawned,
    /// Per process: its threads, main thread first.
    stopped: Vec<Vec<Pid>>,
}

/// The restored processes, running; still killed if dropped (a post-resume hook failed).
pub(crate) struct Running {
    spawned: Spawned,
}

impl Spawned {
    /// Finishes every process (children first; nobody runs before every process is whole).
    /// Then the seals of shared memory go on (every mapping of every process exists now) and
    /// the terminal gets its modes.
    pub fn reshape(self) -> Result<Reshaped> {
        let tree = &self.planned;
        // Every process exists now: the pidfds of one another point at their processes,
        // parents first (a description a child shares is taken from its first holder).
        let holders: Vec<files::pidfd::Holder<'_>> = self
            .pids
            .iter()
            .enumerate()
            .map(|(i, &pid)| files::pidfd::Holder {
                pid,
                image_pid: tree.loaded.tasks[i].entry.pid,
                fds: &tree.loaded.tasks[i].core.fds,
                site: tree.plan.tramps[i],
            })
            .collect();
        files::pidfd::point_at_processes(&tree.loaded.descs, &holders)?;
        // Epoll targets whose file another process holds: registered from a duplicate of it.
        files::epoll::register_held_elsewhere(&tree.loaded.descs, &holders)?;
        // The /proc files and namespace fds are opened by each process once it is whole
        // (children first): naming restored processes as cryo's /proc does.
        let image_pids: std::collections::HashMap<i32, Pid> = self
            .pids
            .iter()
            .enumerate()
            .map(|(i, &pid)| (tree.loaded.tasks[i].entry.pid, pid))
            .collect();
        let mut late = (image_pids, files::procfs::OpenedLate::new());
        // Per process (by position): its threads, main thread first.
        let mut threads: Vec<Vec<Pid>> = vec![Vec::new(); self.pids.len()];
        for (i, &pid) in self.pids.iter().enumerate().rev() {
            let made = finish(pid, tree, i, &mut late, &threads)?;
            threads[i] = made;
        }
        // Children first, as they were finished.
        let stopped: Vec<Vec<Pid>> = threads.into_iter().rev().collect();
        self.planned.before_run()?;
        let tables: Vec<(nix::unistd::Pid, &[cryo_proto::image::FdEntry])> = self
            .pids
            .iter()
            .copied()
            .zip(self.planned.fd_tables())
            .collect();
        crate::files::pty::refill_queues(&self.planned.loaded.descs, &tables)?;
        crate::files::pty::lock_slaves(&self.planned.loaded.descs, &tables)?;
        Ok(Reshaped {
            spawned: self,
            stopped,
        })
    }
}

impl Reshaped {
    /// The roots' pids as cryo sees them.
    pub fn roots(&self) -> Vec<Pid> {
        self.spawned.roots()
    }

    /// Sends one probe per connection (`peer_timeout`; zero: none), with the network lock
    /// released and every process still stopped (the moment in repair mode goes unseen).
    pub fn probe(&self, peer_timeout: Duration) -> Probing {
        let tree = &self.spawned.planned;
        crate::sockets::peers::send_probes(
            &tree.loaded.descs,
            &tree.fd_tables(),
            &self.spawned.pids,
            peer_timeout,
        )
    }

    /// Releases the dump's lock in every network namespace the restore made (installed there
    /// before the sockets: netns::hold_connections); a failure fails the restore, which the
    /// namespaces do not outlive.
    pub fn release_namespace_locks(&self) -> Result<()> {
        let s = &self.spawned;
        crate::task::netns::release_locks(
            &s.planned.loaded.tasks,
            &s.pids,
            s.roots().first().copied().filter(|_| s.planned.netns_made),
            &s.planned.loaded.inventory.network_lock,
        )?;
        Ok(())
    }

    /// Binds each network namespace the restore made where the dumped one was bound (`ip
    /// netns` names): netns::bind_handles.
    pub fn bind_namespace_handles(&self) -> Result<()> {
        let s = &self.spawned;
        crate::task::netns::bind_handles(&s.planned.loaded.tasks, &s.pids)?;
        Ok(())
    }

    /// Makes the restore go forward from here even if cryo dies: every thread loses
    /// PTRACE_O_EXITKILL (cryo's death detaches them, and they run), and the guardian is told
    /// they are to run (it undoes only if one of them is dying) and that the lock goes.
    pub fn commit(&self) -> Result<()> {
        for &tid in self.stopped.iter().flatten() {
            ptrace::setoptions(tid, ptrace::Options::empty())
                .map_err(|e| Error::sys(tid, "let it outlive cryo (PTRACE_SETOPTIONS)", e))?;
        }
        // The named POSIX message queues made for the processes stay from here on.
        self.spawned.planned.shared.keep();
        if let Some(g) = self.spawned.guard.guardian() {
            g.unlocking();
            g.running(&self.spawned.pids);
        }
        Ok(())
    }

    /// Detaches every thread of every process ([`commit`](Self::commit) first): they run. The
    /// guardian lets go once they all do. A stopped process with stop signals pending when
    /// dumped gets them again as it is let go, once it has taken its stop; a running one
    /// with a SIGSTOP pending, before it is let go.
    pub fn run(mut self) -> Result<Running> {
        let tree = &self.spawned.planned;
        let in_stop = stopped_while_restored(tree);
        // Children first, as they were finished.
        let tasks = tree.loaded.tasks.iter().enumerate().rev();
        for ((i, task), tids) in tasks.zip(&self.stopped) {
            let stops = signals::PendingStops::of_entry(&task.entry, tids);
            let Some(&pid) = tids.first() else { continue };
            if stops.is_empty() {
                let_run(tids)?;
            } else if !task.entry.stopped || in_stop[i] {
                // Running: a SIGSTOP pending when it was frozen, taken (every thread is
                // traced) once it is let go; it stops, as it would have. In its stop already:
                // they wait there, as it stays stopped.
                stops.send_missing(pid, &signals::PendingStops::default())?;
                let_run(tids)?;
            } else {
                let_stop(
                    pid,
                    tids,
                    stop_signal(pid, task.entry.stop_signal)?,
                    &task.core,
                    &stops,
                )?;
            }
        }
        self.spawned.guard.guardian_done();
        Ok(Running {
            spawned: self.spawned,
        })
    }
}

impl Running {
    /// Tells every restored process it was restored (its resume channel, `signal` if it has
    /// broken connections), with the probes' verdicts.
    pub fn notify(&self, probing: Probing, signal: Option<i32>) {
        let tree = &self.spawned.planned;
        let verdicts = probing.verdict();
        let broken = crate::sockets::peers::broken_per_process(
            &tree.loaded.descs,
            &tree.fd_tables(),
            &verdicts,
            tree.tcp_close,
        );
        notify_restored(
            &tree.loaded.inventory,
            &tree.loaded.tasks,
            &self.spawned.pids,
            &broken,
            signal,
        );
    }

    /// The restore is done: the processes are left to themselves. Returns the roots' pids
    /// as cryo sees them and the init of the new namespaces.
    pub fn release(mut self) -> (Vec<Pid>, Option<Pid>) {
        self.spawned.guard.disarm();
        (self.spawned.roots(), self.spawned.init)
    }
}

/// Turns the stopped child into the dumped process, leaving it stopped: returns its threads,
/// main thread first, for [`Reshaped::run`].
fn finish(
    child: Pid,
    tree: &Planned,
    i: usize,
    late: &mut (
        std::collections::HashMap<i32, Pid>,
        files::procfs::OpenedLate,
    ),
    finished: &[Vec<Pid>],
) -> Result<Vec<Pid>> {
    let task = &tree.loaded.tasks[i];
    let tramp = tree.plan.tramps[i];
    let mapping = &tree.plan.mappings[i];
    let sys = |op: &'static str| move |e: std::io::Error| Error::sys(child, op, e);
    let remote = Remote::at_site(child, tramp).map_err(sys("take the new process"))?;
    let scratch = tramp + PAGE;
    // The trampoline's scratch page doubles as the batch table.
    let batch = BatchSite {
        code: tramp + BATCH_LOOP_OFFSET,
        table: scratch,
        table_len: PAGE,
    };
    let (sync_fd, err_fd) = tree.plan.ctl(i);
    reshape(
        child,
        &remote,
        (tramp, tramp + 2 * PAGE),
        batch,
        &task.mm,
        mapping,
        PageSources {
            mapped: task.pages.as_ref().map(|m| m.as_slice()),
            staged: &tree.staged[i],
        },
    )?;
    let control = [
        (libc::SYS_close, [sync_fd as u64, 0, 0, 0, 0, 0]),
        (libc::SYS_close, [err_fd as u64, 0, 0, 0, 0, 0]),
    ];
    run_batch(child, &remote, batch, &control, |_| {
        "close the control pipes".into()
    })?;
    // Its children finished already, each stopped as dumped once let go: those whose stop
    // it had collected, or whose SIGCHLD it would see again, stop now.
    stop_children_as_seen(child, &remote, scratch, tree, i, &late.0, finished)?;
    crate::task::process::set_late_limits(child, &task.core)?;
    // Every temporary fd is closed now: closing one would drop the process's POSIX locks.
    files::locks::take_back(child, &remote, scratch, &task.core.file_locks)?;

    // The other threads, created from the main one with their tids; each is stopped at birth
    // (PTRACE_O_TRACECLONE) and sets its own per-thread state by remote calls.
    ptrace::setoptions(
        child,
        ptrace::Options::PTRACE_O_EXITKILL | ptrace::Options::PTRACE_O_TRACECLONE,
    )
    .map_err(|e| Error::sys(child, "trace clones", e))?;
    let mut created = vec![child];
    // Kept until the security state, which goes on last, in every thread.
    let mut in_threads = Vec::with_capacity(task.core.threads.len() - 1);
    let others = task.core.threads.len() - 1;
    for (n, thread) in task.core.threads[1..].iter().enumerate() {
        // Made with its default timer slack as the main thread's slack then.
        let was = attrs::slack_for_thread(child, &remote, &task.core, thread)?;
        let tid = threads::create(&remote, scratch, Pid::from_raw(thread.tid))?;
        attrs::slack_after_thread(child, &remote, &task.core, was, n + 1 == others)?;
        created.push(tid);
        let moves = tree.cgroups[i]
            .threads
            .iter()
            .find(|(t, _)| *t == thread.tid);
        if let Some((_, files)) = moves {
            crate::task::cgroups::move_thread(tid, files).map_err(|(file, e)| {
                Error::sys(tid, format!("join its cgroup ({})", file.display()), e)
            })?;
        }
        let in_thread =
            Remote::at_site(tid, tramp).map_err(|e| Error::sys(tid, "take the thread", e))?;
        threads::restore_in_thread(
            &in_thread,
            scratch,
            thread,
            Some(Pid::from_raw(task.entry.pid)),
        )?;
        in_threads.push(in_thread);
    }
    timers::restore(
        &remote,
        scratch,
        &task.core.itimers,
        &task.core.posix_timers,
    )?;
    // Once its threads exist: the first one made a hash of the kernel's choosing.
    if let Some(p) = &task.core.attrs {
        attrs::restore_futex_hash(child, &remote, p)?;
    }
    let main = &task.core.threads[0];
    threads::restore_in_thread(&remote, scratch, main, None)?;
    // Its threads exist now, and every process of the restore; before the credentials (they
    // were opened with the rights the process had then, which may be more than its own).
    let holder = files::procfs::Late {
        pid: child,
        image_pid: task.entry.pid,
        fds: &task.core.fds,
        threads: task
            .core
            .threads
            .iter()
            .map(|t| t.tid)
            .zip(created.iter().copied())
            .collect(),
        pids: &late.0,
        scratch,
    };
    files::procfs::open_late(&tree.loaded.descs, &holder, &remote, &mut late.1)?;
    let core = &task.core;
    if core.cwd_gone_process > 0 && !core.cwd_gone_proc_mount.is_empty() && !core.fs_of_parent {
        files::procfs::enter_gone_dir(
            &remote,
            child,
            scratch,
            &core.cwd_gone_proc_mount,
            core.cwd_gone_process,
        )
        .map_err(|e| {
            Error::sys(
                child,
                format!("enter its working directory {}", core.cwd),
                e,
            )
        })?;
    }
    // Security state last, just before the registers (DESIGN choice 11): ids first, then
    // (after what an id change resets) filters, capabilities, no_new_privs, strict mode.
    let remotes = std::iter::once(&remote).chain(&in_threads);
    let mut security = Threads::new(
        child,
        task.core.threads.iter().zip(remotes).collect(),
        scratch,
    );
    security.set_ids(&task.core)?;
    // After the leases (F_SETLEASE makes the caller the owner), with the restored credentials
    // (the owner's credentials decide who may be signalled).
    files::locks::set_owners(child, &remote, scratch, &task.core.fd_owners)?;
    // After every thread's ids: an id change resets dumpable and the parent-death signal.
    let remotes = std::iter::once(&remote).chain(&in_threads);
    for (thread, in_thread) in task.core.threads.iter().zip(remotes) {
        attrs::restore_after_creds(child, in_thread, batch, &task.core, thread)?;
    }
    security.set_last()?;
    for in_thread in in_threads {
        in_thread.dismiss();
    }
    remote
        .call_last(libc::SYS_munmap, &[tramp, 2 * PAGE])
        .map_err(sys("unmap the trampoline"))?;
    remote.dismiss();

    for (thread, &tid) in task.core.threads.iter().zip(&created) {
        threads::set_final_state(tid, thread)?;
        attrs::restore_dispatch(child, tid, thread)?;
        attrs::restore_sched(child, tid, thread)?;
    }
    if task.entry.stopped {
        // Queued while the process is still under ptrace: it takes the stop as it is let go,
        // before running an instruction of its own, as it was when dumped; by the signal that
        // stopped it (its parent's waitid reads it). A SIGTSTP, SIGTTIN or SIGTTOU that
        // stopped it had its default action then, and its disposition could not change since.
        let sig = stop_signal(child, task.entry.stop_signal)?;
        nix::sys::signal::kill(child, sig)
            .map_err(|e| Error::sys(child, "stop it again (it was stopped when dumped)", e))?;
    }
    Ok(created)
}

/// The signal that stopped process `pid`, as its image gives it (`signo`; 0: SIGSTOP).
fn stop_signal(pid: Pid, signo: i32) -> Result<nix::sys::signal::Signal> {
    use nix::sys::signal::Signal::{self, *};
    match signo {
        0 => Ok(SIGSTOP),
        n => Signal::try_from(n)
            .ok()
            .filter(|s| matches!(s, SIGSTOP | SIGTSTP | SIGTTIN | SIGTTOU))
            .ok_or_else(|| {
                Error::target(
                    pid,
                    format!("the image gives stop signal {n}, which is not one"),
                )
            }),
    }
}

/// The children of task `i` (positions) whose stops it makes while it is restored
/// ([`stop_children_as_seen`]): stopped, their stop collected by it, or their SIGCHLD one it
/// would see again. Its other stopped children stop as they are let go.
fn stops_made_by(tree: &Planned, i: usize) -> Vec<usize> {
    let tasks = &tree.loaded.tasks;
    let notice = StopNotice::of(&tasks[i].core);
    tree.plan.children[i]
        .iter()
        .copied()
        .filter(|&c| {
            let e = &tasks[c].entry;
            e.stopped && (e.stop_collected || notice.seen)
        })
        .collect()
}

/// Per task (by position): whether its stop is made while its parent is restored
/// ([`stops_made_by`]).
fn stopped_while_restored(tree: &Planned) -> Vec<bool> {
    let mut made = vec![false; tree.loaded.tasks.len()];
    for i in 0..made.len() {
        for c in stops_made_by(tree, i) {
            made[c] = true;
        }
    }
    made
}

/// How many signals the image queues that main thread of a process (`core`) may take
/// before its stop's: its own and the process's.
fn queued_to_main(core: &cryo_proto::image::TaskCore) -> usize {
    core.shared_pending.len() + core.threads.first().map_or(0, |t| t.pending.len())
}

/// In task `i` (`parent`, `remote` its main thread, `scratch` its scratch page), makes the
/// stops of its children (`finished`: their threads, by position; `pids`: theirs by image
/// pid) that it had collected (`stop_collected`), or whose SIGCHLD it would see again
/// ([`StopNotice`]), now, while it is still being restored: each child's SIGSTOP, queued by
/// its finish, is taken while traced ([`enter_group_stop`]); the parent's SIGCHLD disposition
/// has SA_NOCLDSTOP meanwhile (the kernel still records the stop and wakes its waiters, but
/// sends no SIGCHLD); then the parent collects the stops it had collected, by its own
/// waitid. Let go later, a child stays in that group stop and tells its parent nothing new.
/// Its other stopped children stop as they are let go, as before (their SIGCHLD, if any,
/// unseen).
fn stop_children_as_seen(
    parent: Pid,
    remote: &Remote,
    scratch: u64,
    tree: &Planned,
    i: usize,
    pids: &std::collections::HashMap<i32, Pid>,
    finished: &[Vec<Pid>],
) -> Result<()> {
    let core = &tree.loaded.tasks[i].core;
    let notice = StopNotice::of(core);
    let quiet = stops_made_by(tree, i);
    if quiet.is_empty() {
        return Ok(());
    }
    let sys = |op: String| move |e: std::io::Error| Error::sys(parent, op, e);
    let action = signals::sigchld_action(core);
    let set_action = |act: &KernelSigaction| -> Result<()> {
        let raw = [act.handler, act.flags, act.restorer, act.mask];
        let bytes: Vec<u8> = raw.iter().flat_map(|w| w.to_ne_bytes()).collect();
        crate::sys::process::vm_write(parent, scratch, &bytes)
            .map_err(sys("write a SIGCHLD disposition".into()))?;
        let args = [libc::SIGCHLD as u64, scratch, 0, 8];
        remote
            .call(libc::SYS_rt_sigaction, &args)
            .map_err(sys("set its SIGCHLD disposition".into()))?;
        Ok(())
    };
    let hold_back = notice.sent && notice.suppressible;
    if hold_back {
        let flags = action.flags | libc::SA_NOCLDSTOP as u64;
        set_action(&KernelSigaction { flags, ..action })?;
    }
    let stopped = quiet.iter().try_for_each(|&c| {
        let entry = &tree.loaded.tasks[c].entry;
        let pid = *pids
            .get(&entry.pid)
            .ok_or_else(|| Error::target(parent, format!("child {} not restored", entry.pid)))?;
        if !matches!(entry.stop_signal, 0 | libc::SIGSTOP) {
            return Err(Error::target(
                pid,
                format!(
                    "the image gives its stop (collected by its parent, or seen by it again) \
                     signal {}: only a SIGSTOP is made again so",
                    entry.stop_signal
                ),
            ));
        }
        enter_group_stop(
            pid,
            &finished[c],
            queued_to_main(&tree.loaded.tasks[c].core),
        )?;
        if entry.stop_collected {
            // Taken by the parent's own waitid, as the dumped one had taken it; the child named
            // as the parent sees it (the image's pid, its PID namespace's).
            let flags = (libc::WSTOPPED | libc::WNOHANG | libc::__WALL) as u32 as u64;
            let args = [libc::P_PID as u64, entry.pid as u64, scratch, flags, 0];
            remote
                .call(libc::SYS_waitid, &args)
                .map_err(sys(format!("collect the stop of its child {pid}")))?;
            let mut got = [0u8; 4];
            let si_pid = scratch + crate::sys::signal::SIGINFO_PID_OFFSET as u64;
            crate::sys::process::vm_read(parent, si_pid, &mut got)
                .map_err(sys(format!("read the stop of its child {pid}")))?;
            if i32::from_ne_bytes(got) != entry.pid {
                return Err(Error::target(
                    parent,
                    format!("its waitid did not report the stop of its child {pid}"),
                ));
            }
        }
        Ok(())
    });
    // Its own disposition back, whatever happened.
    let restored = if hold_back {
        set_action(&action)
    } else {
        Ok(())
    };
    stopped.and(restored)
}

/// Makes `pid` (every thread, `tids`, main first, traced and stopped, a SIGSTOP queued)
/// enter its group stop while still traced, as it would once let go: the main thread runs
/// until it takes the SIGSTOP (each of the `pending` signals its image queued that it takes
/// first is handed back to it, as a release would: no instruction of its own runs
/// meanwhile), which starts the group stop;
/// each thread then traps in it (PTRACE_EVENT_STOP). The last one completes the stop, which
/// its parent's waitid then reports. Detached later, the threads stay in that stop.
fn enter_group_stop(pid: Pid, tids: &[Pid], pending: usize) -> Result<()> {
    use nix::sys::signal::Signal;
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    let (&main, others) = tids
        .split_first()
        .ok_or_else(|| Error::target(pid, "no threads to stop"))?;
    let sys = |tid: Pid, op: &'static str| move |e: nix::errno::Errno| Error::sys(tid, op, e);
    let trapped = |tid: Pid| -> Result<()> {
        match waitpid(tid, Some(WaitPidFlag::__WALL)).map_err(sys(tid, "wait for its stop"))? {
            WaitStatus::PtraceEvent(_, _, libc::PTRACE_EVENT_STOP) => Ok(()),
            other => Err(Error::target(
                pid,
                format!("thread {tid} did not enter the group stop: {other:?}"),
            )),
        }
    };
    take_stop_signal(pid, main, Signal::SIGSTOP, pending)?;
    ptrace::cont(main, Signal::SIGSTOP).map_err(sys(main, "stop it"))?;
    trapped(main)?;
    for &tid in others {
        ptrace::cont(tid, None).map_err(sys(tid, "let it join the stop"))?;
        trapped(tid)?;
    }
    Ok(())
}

/// Runs main thread `main` of `pid` (traced and stopped, `sig` queued) until it takes `sig`,
/// and leaves it in that signal's delivery stop: each of the `pending` signals its image
/// queued that it takes first is handed back to it, as a release would (no instruction of
/// its own runs meanwhile: the kernel looks at the queues again before it returns).
fn take_stop_signal(
    pid: Pid,
    main: Pid,
    sig: nix::sys::signal::Signal,
    pending: usize,
) -> Result<()> {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    let sys = |op: &'static str| move |e: nix::errno::Errno| Error::sys(main, op, e);
    let mut handed = None;
    // Bounded: each pending signal is taken once, then the stop's.
    for _ in 0..=pending {
        ptrace::cont(main, handed).map_err(sys("let it take its stop"))?;
        match waitpid(main, Some(WaitPidFlag::__WALL)).map_err(sys("wait for its stop"))? {
            WaitStatus::Stopped(_, s) if s == sig => return Ok(()),
            WaitStatus::Stopped(_, other) => handed = Some(other),
            other => {
                return Err(Error::target(
                    pid,
                    format!("it did not take its {sig}: {other:?}"),
                ))
            }
        }
    }
    Err(Error::target(pid, format!("it did not take its {sig}")))
}

/// Lets go stopped process `pid` (threads `tids`, main first, traced and stopped, the
/// signal `sig` of its stop queued by its finish) in its stop with the stop signals that
/// were pending to it (`stops`): its main thread takes `sig` while traced; then they are
/// sent (taken by no thread: every one is traced); then the main thread is let go with
/// `sig`, which starts the group stop; each other thread, let go, joins it before it looks
/// at its queues. Sent before, they would be taken first, or join `sig` in its set.
fn let_stop(
    pid: Pid,
    tids: &[Pid],
    sig: nix::sys::signal::Signal,
    core: &cryo_proto::image::TaskCore,
    stops: &signals::PendingStops,
) -> Result<()> {
    let (&main, others) = tids
        .split_first()
        .ok_or_else(|| Error::target(pid, "no threads to stop"))?;
    take_stop_signal(pid, main, sig, queued_to_main(core))?;
    stops.send_missing(pid, &signals::PendingStops::default())?;
    ptrace::detach(main, sig).map_err(|e| Error::sys(main, "let it go into its stop", e))?;
    for &tid in others.iter().rev() {
        ptrace::detach(tid, None).map_err(|e| Error::sys(tid, "detach", e))?;
    }
    Ok(())
}

/// Detaches the threads `tids` of a process [`finish`] made whole, so it runs.
fn let_run(tids: &[Pid]) -> Result<()> {
    // The main thread last: the process as a whole runs once it does.
    for &tid in tids.iter().rev() {
        ptrace::detach(tid, None).map_err(|e| Error::sys(tid, "detach", e))?;
    }
    Ok(())
}

/// Writes the resume record into the channel of every restored process that opened one
/// (with cryo-resume): the checkpoint id, how long it was down and its broken connections
/// (`broken`, per process). Then queues `signal` to every process with broken connections.
/// A process that never read its channel (full pipe) is logged, not failed: it runs already.
fn notify_restored(
    inventory: &Inventory,
    tasks: &[TaskImage],
    pids: &[Pid],
    broken: &[Vec<crate::notify::BrokenConnection>],
    signal: Option<i32>,
) {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    for ((task, &pid), broken) in tasks.iter().zip(pids).zip(broken) {
        if !broken.is_empty() {
            info!(%pid, broken = broken.len(), "restored with broken connections");
        }
        notify_one(inventory, task, pid, broken, now_ms);
        if let (Some(signo), false) = (signal, broken.is_empty()) {
            let count = i32::try_from(broken.len()).unwrap_or(i32::MAX);
            match crate::notify::queue_signal(pid, signo, count) {
                Ok(()) => debug!(%pid, signo, count, "notify signal queued"),
                Err(e) => tracing::warn!(%pid, "notify signal not queued: {e}"),
            }
        }
    }
}

/// The resume record of one process, if it opened a channel.
fn notify_one(
    inventory: &Inventory,
    task: &TaskImage,
    pid: Pid,
    broken: &[crate::notify::BrokenConnection],
    now_ms: u64,
) {
    let Some(listener) = task
        .core
        .resume_channel
        .as_ref()
        .map(crate::notify::channel_from_record)
    else {
        return;
    };
    let record = crate::notify::ResumeEvent {
        checkpoint_id: inventory.checkpoint_id.clone(),
        downtime_ms: now_ms.saturating_sub(inventory.created_unix_ms),
        broken: broken.to_vec(),
    };
    match crate::notify::notify(pid, &listener, &record) {
        Ok(()) => debug!(%pid, fd = listener.fd, "resume record written"),
        Err(e) => tracing::warn!(%pid, "resume record not written: {e}"),
    }
}
