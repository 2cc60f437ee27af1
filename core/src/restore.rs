//! The restore pipeline: read and check every image before anything starts, fork the process
//! with its original pid, let it open its fds while it still runs cryo code, reshape it into the
//! dumped one through remote syscalls, set its registers and let it go. A failure after the
//! fork kills what was created.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use cryo_proto::image::{FileDesc, Inventory, MmCore, ProcessEntry, TaskCore};
use cryo_proto::ImageKind;
use nix::sys::ptrace;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tracing::{debug, info, info_span};

use crate::error::{Error, Result};
use crate::hooks::{self, Hooks, Stage};
use crate::image::{names, ImageDir};
use crate::memory::restore::{reshape, run_batch};
use crate::memory::{self, PAGE};
use crate::remote::{BatchSite, Remote, BATCH_LOOP_OFFSET};
use crate::sys::ptrace as pt;
use crate::{files, spawn, threads, timers};

/// What `cryo restore` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// The image directory (-D).
    pub images_dir: PathBuf,
    /// Return once the processes run, instead of waiting for them.
    pub detach: bool,
    /// Restore into a new PID namespace (under a small init cryo forks): the process keeps
    /// its pids inside it, whatever runs outside.
    pub pidns: bool,
    /// Restore into a new network namespace with loopback up.
    pub netns: bool,
    /// Restore TCP connections reset (`--tcp-close`) instead of live.
    pub tcp_close: bool,
    /// The program run at pre-restore, post-restore, network-unlock and post-resume
    /// (`--action-script`).
    pub action_script: Option<crate::hooks::ActionScript>,
    /// How long a restored connection's peer has to answer the probe sent once the network
    /// lock is gone (`--peer-timeout`); `None`: [`DEFAULT_PEER_TIMEOUT`](crate::peers::DEFAULT_PEER_TIMEOUT);
    /// zero: no probe.
    pub peer_timeout: Option<Duration>,
    /// Signal queued (sigqueue, si_value = the count) to every restored process with broken
    /// connections (`--notify-signal`).
    pub notify_signal: Option<i32>,
}

/// The processes a restore created, running.
#[derive(Debug)]
pub struct Restored {
    /// The root pids, children of this process.
    pub roots: Vec<Pid>,
    /// How long the restore took until the processes ran.
    pub elapsed: Duration,
    /// The init of the new namespace(s), cryo's child, when restored with `pidns`/`netns`:
    /// it exits with the status of the root.
    pub init: Option<Pid>,
}

impl Restored {
    /// Waits for the first root to end and returns the exit code cryo should exit with:
    /// its status, or 128 + the signal that killed it.
    pub fn wait(self) -> Result<i32> {
        let Some(pid) = self.init.or(self.roots.first().copied()) else {
            return Ok(0);
        };
        loop {
            match waitpid(pid, None) {
                Ok(WaitStatus::Exited(_, code)) => return Ok(code),
                Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
                Ok(_) => continue,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(Error::sys(pid, "wait for the restored process", e)),
            }
        }
    }
}

/// One process of the image, read and checked.
pub(crate) struct TaskImage {
    pub(crate) entry: ProcessEntry,
    pub(crate) core: TaskCore,
    pub(crate) mm: MmCore,
    /// The pages image, mapped when it was checked; the fill copies from it.
    pub(crate) pages: Option<crate::sys::mmap::Mapping>,
}

/// What [`load`] read: the inventory, the live processes, the zombies, the descriptions.
type Loaded = (
    Inventory,
    Vec<TaskImage>,
    Vec<ProcessEntry>,
    Vec<FileDesc>,
    files::UnixLinks,
);

/// Restores the image directory `opts.images_dir`; the processes run when this returns.
pub fn restore(opts: &RestoreOptions) -> Result<Restored> {
    let started = Instant::now();
    let _span = info_span!("restore", dir = %opts.images_dir.display()).entered();
    let images = ImageDir::open(&opts.images_dir)?;
    let (inventory, mut tasks, zombies, descs, links) = load(&images)?;
    if inventory.shell_job {
        let mut entries: Vec<&mut ProcessEntry> = tasks.iter_mut().map(|t| &mut t.entry).collect();
        crate::task::adopt_shell_job(&mut entries, &inventory.root_pids)?;
    }
    debug!(ms = started.elapsed().as_secs_f64() * 1e3, "images checked");
    let mut hooks = Hooks::new(opts.action_script.as_ref(), images.path());
    hooks.set(hooks::env::CHECKPOINT_ID, inventory.checkpoint_id.as_str());
    hooks.set(hooks::env::NETWORK_LOCK, inventory.network_lock.as_str());
    hooks.set(
        hooks::env::IMAGE_PIDS,
        crate::show::join(&inventory.root_pids),
    );
    // Before anything is touched: a refusal here leaves even the network lock in place.
    hooks.run(Stage::PreRestore, &[])?;
    // The dump's network lock goes once the restored sockets are live, or the restore failed.
    let mut unlock = Unlock::new(inventory.network_lock.clone());
    let ns = (opts.pidns || opts.netns).then_some((opts.pidns, opts.netns));
    if !opts.pidns {
        for t in &tasks {
            for thread in &t.core.threads {
                wait_pid_free(Pid::from_raw(thread.tid))?;
            }
        }
        for z in &zombies {
            wait_pid_free(Pid::from_raw(z.pid))?;
        }
    }
    let plan = spawn::TreePlan::new(
        &inventory.root_pids,
        &tasks,
        &zombies,
        &descs,
        links,
        &images,
        opts.tcp_close,
    )?;
    let spawned = spawn::spawn_tree(&plan, ns)?;
    let mut guard = KillAll(Some((spawned.pids.clone(), spawned.init)));
    debug!(
        ms = started.elapsed().as_secs_f64() * 1e3,
        processes = spawned.pids.len(),
        "processes created, fds open"
    );
    let roots: Vec<Pid> = inventory
        .root_pids
        .iter()
        .filter_map(|r| plan.tasks.iter().position(|t| t.entry.pid == *r))
        .map(|i| spawned.pids[i])
        .collect();
    // Every socket exists and left repair mode, its owner stopped: the connections may talk
    // again. Each is probed (which toggles repair mode: only a stopped owner does not notice)
    // on a thread of its own while the processes are rebuilt, and judged once they run.
    let had_lock = unlock.release();
    let fds: Vec<&[cryo_proto::image::FdEntry]> =
        plan.tasks.iter().map(|t| t.core.fds.as_slice()).collect();
    let timeout = match opts.peer_timeout {
        _ if opts.tcp_close => Duration::ZERO,
        Some(t) => t,
        None => crate::peers::DEFAULT_PEER_TIMEOUT,
    };
    let (stopped, probing) = finish_all(&plan, &spawned.pids, unlock.close_later(), || {
        crate::peers::send_probes(&descs, &fds, &spawned.pids, timeout)
    })?;
    // The seals of shared memory go on once every mapping of every process exists.
    plan.before_run()?;
    hooks.run(Stage::PostRestore, &roots)?;
    if had_lock {
        hooks.run(Stage::NetworkUnlock, &roots)?;
    }
    for tids in &stopped {
        let_run(tids)?;
    }
    let verdicts = probing.verdict();
    let broken = crate::peers::broken_per_process(&descs, &fds, &verdicts, opts.tcp_close);
    notify_restored(
        &inventory,
        &plan,
        &spawned.pids,
        &broken,
        opts.notify_signal,
    );
    // They run already; a failure here still kills them, as any failed restore does.
    hooks.run(Stage::PostResume, &roots)?;
    guard.0 = None;
    let elapsed = started.elapsed();
    info!(roots = ?roots, ms = elapsed.as_secs_f64() * 1e3, "restored");
    Ok(Restored {
        roots,
        elapsed,
        init: spawned.init,
    })
}

/// Writes the resume record into the channel of every restored process that opened one
/// (with cryo-resume): the checkpoint id, how long it was down and its broken connections
/// (`broken`, per process). Then queues `signal` to every process with broken connections.
/// A process that never read its channel (full pipe) is logged, not failed: it runs already.
fn notify_restored(
    inventory: &Inventory,
    plan: &spawn::TreePlan,
    pids: &[Pid],
    broken: &[Vec<crate::notify::BrokenConnection>],
    signal: Option<i32>,
) {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    for ((task, &pid), broken) in plan.tasks.iter().zip(pids).zip(broken) {
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
    if task.core.resume_listener.is_empty() {
        return;
    }
    let Ok(listener) =
        serde_json::from_str::<crate::notify::ListenerRef>(&task.core.resume_listener)
    else {
        tracing::warn!(%pid, "unreadable resume channel in the image");
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

/// Reads every image and checks it against the others and this machine, before anything
/// is created.
fn load(images: &ImageDir) -> Result<Loaded> {
    let inventory: Inventory = images.read_single(names::INVENTORY, ImageKind::Inventory)?;
    let pstree: Vec<ProcessEntry> = images.read(names::PSTREE, ImageKind::Pstree)?;
    let descs: Vec<FileDesc> = images.read(names::FILES, ImageKind::Files)?;
    let invalid = |name: &str, detail: String| {
        Error::Image(cryo_proto::ImageError::Invalid {
            path: images.file(name),
            index: 0,
            detail,
        })
    };
    let mut tasks = Vec::new();
    let mut zombies = Vec::new();
    for entry in pstree {
        if entry.zombie {
            zombies.push(entry);
            continue;
        }
        let pid = Pid::from_raw(entry.pid);
        let core: TaskCore = images.read_single(&names::core(pid), ImageKind::Core)?;
        let mm: MmCore = images.read_single(&names::mm(pid), ImageKind::Mm)?;
        if core.pid != entry.pid || mm.pid != entry.pid {
            return Err(invalid(
                &names::core(pid),
                format!("belongs to pid {}, not {pid}", core.pid),
            ));
        }
        if core.threads.first().map(|t| t.tid) != Some(entry.pid) {
            return Err(invalid(
                &names::core(pid),
                "the first thread is not the main thread".into(),
            ));
        }
        let Some(pages) = &mm.pages_file else {
            return Err(invalid(&names::mm(pid), "no pages file".into()));
        };
        if pages.name != names::pages(pid) {
            return Err(invalid(
                &names::mm(pid),
                format!("pages file {:?} is not this pid's", pages.name),
            ));
        }
        for (i, run) in mm.pages.iter().enumerate() {
            let inside = mm
                .vmas
                .iter()
                .any(|v| v.start <= run.addr && run.addr + run.npages * PAGE <= v.end);
            if !inside || run.offset + run.npages * PAGE > pages.size || run.addr % PAGE != 0 {
                return Err(Error::Image(cryo_proto::ImageError::Invalid {
                    path: images.file(&names::mm(pid)),
                    index: 0,
                    detail: format!(
                        "page run {i} at {:#x} lies outside its VMA or the pages file",
                        run.addr
                    ),
                }));
            }
        }
        let known = |id: u32| descs.iter().any(|d| d.id == id);
        for vma in &mm.vmas {
            if vma.file_id != 0 && !known(vma.file_id) {
                return Err(invalid(
                    &names::mm(pid),
                    format!("VMA {:#x} maps unknown file {}", vma.start, vma.file_id),
                ));
            }
        }
        if !known(mm.exe_file_id) {
            return Err(invalid(
                &names::mm(pid),
                format!("unknown exe file {}", mm.exe_file_id),
            ));
        }
        let pages = images.map_raw(pages)?;
        tasks.push(TaskImage {
            entry,
            core,
            mm,
            pages,
        });
    }
    let fds: Vec<&[cryo_proto::image::FdEntry]> =
        tasks.iter().map(|t| t.core.fds.as_slice()).collect();
    let links = files::validate(&descs, &fds, images)?;
    let ours = memory::vdso_identity(nix::unistd::getpid())?;
    if (inventory.vdso_size, inventory.vdso_crc32c) != ours {
        return Err(invalid(
            names::INVENTORY,
            format!(
                "the image was taken with another vdso ({} bytes, crc {:#x}; this kernel's: {} bytes, \
                 crc {:#x}): restore on the kernel it was dumped on ({})",
                inventory.vdso_size, inventory.vdso_crc32c, ours.0, ours.1, inventory.kernel_release
            ),
        ));
    }
    Ok((inventory, tasks, zombies, descs, links))
}

/// Waits (bounded) for `pid` to be free: a process killed by a dump may linger as a zombie
/// until its parent (often init, which reaps slowly here) collects it.
fn wait_pid_free(pid: Pid) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut logged = false;
    loop {
        let stat = match crate::proc::stat(pid) {
            Err(_) => return Ok(()),
            Ok(stat) => stat,
        };
        if stat.state != 'Z' && stat.state != 'X' || Instant::now() > deadline {
            return Err(Error::Restore(format!(
                "pid {pid} is taken by {} (state {}): it must be free to restore the process with \
                 its original pid",
                stat.comm, stat.state
            )));
        }
        if !logged {
            debug!(%pid, "pid held by a zombie; waiting for it to be reaped");
            logged = true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Releases the network lock of a dump (if any) when told or when dropped.
///
/// Closing the netlink socket of a release waits for an RCU grace period (about 10 ms here)
/// after the table is already gone: [`release`](Self::release) keeps the socket, for
/// [`close_later`](Self::close_later) to hand to a thread that is not on the critical path.
struct Unlock {
    id: String,
    released: Option<cryo_netns::NetworkLock>,
}

impl Unlock {
    fn new(id: String) -> Self {
        Self { id, released: None }
    }

    /// Deletes the lock's table: the connections' packets flow from here on. True when the
    /// image left one.
    fn release(&mut self) -> bool {
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
    fn close_later(&mut self) -> Option<cryo_netns::NetworkLock> {
        self.released.take()
    }
}

impl Drop for Unlock {
    fn drop(&mut self) {
        self.release();
    }
}

/// Kills and reaps what a failed restore created (and the init of its namespaces).
struct KillAll(Option<(Vec<Pid>, Option<Pid>)>);

impl Drop for KillAll {
    fn drop(&mut self) {
        if let Some((pids, init)) = self.0.take() {
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

/// [`finish`]es every process (children first; nobody runs before every process is whole),
/// while `probe` runs on a thread of its own and the socket of the `released` network lock
/// closes on another (that close only waits for the kernel). Returns the threads of each
/// process, for [`let_run`], and what `probe` returned.
fn finish_all<T: Send>(
    plan: &spawn::TreePlan,
    pids: &[Pid],
    released: Option<cryo_netns::NetworkLock>,
    probe: impl FnOnce() -> T + Send,
) -> Result<(Vec<Vec<Pid>>, T)> {
    std::thread::scope(|scope| {
        if let Some(lock) = released {
            let _ = std::thread::Builder::new()
                .name("cryo-unlock".into())
                .spawn_scoped(scope, move || drop(lock));
        }
        let prober = std::thread::Builder::new()
            .name("cryo-probe".into())
            .spawn_scoped(scope, probe)
            .map_err(|e| Error::Restore(format!("start the probe thread: {e}")))?;
        let mut stopped = Vec::with_capacity(pids.len());
        for (i, &pid) in pids.iter().enumerate().rev() {
            stopped.push(finish(pid, plan, i)?);
        }
        let probed = prober
            .join()
            .map_err(|_| Error::Restore("the probe thread panicked".into()))?;
        Ok((stopped, probed))
    })
}

/// Turns the stopped child into the dumped process, leaving it stopped: returns its threads,
/// main thread first, for [`let_run`].
fn finish(child: Pid, plan: &spawn::TreePlan, i: usize) -> Result<Vec<Pid>> {
    let task = plan.tasks[i];
    let tramp = plan.tramps[i];
    let mapping = &plan.mappings[i];
    let sys = |op: &'static str| move |e: std::io::Error| Error::sys(child, op, e);
    let remote = Remote::at_site(child, tramp).map_err(sys("take the new process"))?;
    let scratch = tramp + PAGE;
    // The trampoline's scratch page doubles as the batch table.
    let batch = BatchSite {
        code: tramp + BATCH_LOOP_OFFSET,
        table: scratch,
        table_len: PAGE,
    };
    let (sync_fd, err_fd) = plan.ctl(i);
    reshape(
        child,
        &remote,
        (tramp, tramp + 2 * PAGE),
        batch,
        &task.mm,
        mapping,
        task.pages.as_ref().map(|m| m.as_slice()),
    )?;
    let control = [
        (libc::SYS_close, [sync_fd as u64, 0, 0, 0, 0, 0]),
        (libc::SYS_close, [err_fd as u64, 0, 0, 0, 0, 0]),
    ];
    run_batch(child, &remote, batch, &control, |_| {
        "close the control pipes".into()
    })?;

    // The other threads, created from the main one with their tids; each is stopped at birth
    // (PTRACE_O_TRACECLONE) and sets its own per-thread state by remote calls.
    ptrace::setoptions(
        child,
        ptrace::Options::PTRACE_O_EXITKILL | ptrace::Options::PTRACE_O_TRACECLONE,
    )
    .map_err(|e| Error::sys(child, "trace clones", e))?;
    let mut created = vec![child];
    for thread in &task.core.threads[1..] {
        let tid = threads::create(&remote, scratch, Pid::from_raw(thread.tid))?;
        created.push(tid);
        let in_thread =
            Remote::at_site(tid, tramp).map_err(|e| Error::sys(tid, "take the thread", e))?;
        threads::restore_in_thread(
            &in_thread,
            scratch,
            thread,
            Some(Pid::from_raw(task.entry.pid)),
        )?;
        if let Some(creds) = &task.core.creds {
            restore_creds(tid, &in_thread, scratch, creds)?;
        }
        in_thread.dismiss();
    }
    timers::restore(
        &remote,
        scratch,
        &task.core.itimers,
        &task.core.posix_timers,
    )?;
    let main = &task.core.threads[0];
    threads::restore_in_thread(&remote, scratch, main, None)?;
    if let Some(creds) = &task.core.creds {
        restore_creds(child, &remote, scratch, creds)?;
    }
    remote
        .call_last(libc::SYS_munmap, &[tramp, 2 * PAGE])
        .map_err(sys("unmap the trampoline"))?;
    remote.dismiss();

    for (thread, &tid) in task.core.threads.iter().zip(&created) {
        threads::set_final_state(tid, thread)?;
    }
    Ok(created)
}

/// Detaches the threads `tids` of a process [`finish`] made whole, so it runs.
fn let_run(tids: &[Pid]) -> Result<()> {
    // The main thread last: the process as a whole runs once it does.
    for &tid in tids.iter().rev() {
        ptrace::detach(tid, None).map_err(|e| Error::sys(tid, "detach", e))?;
    }
    Ok(())
}

fn restore_creds(
    child: Pid,
    remote: &Remote,
    scratch: u64,
    creds: &cryo_proto::image::Creds,
) -> Result<()> {
    let sys = |op: &'static str| move |e: std::io::Error| Error::sys(child, op, e);
    let root = [
        creds.uid, creds.euid, creds.suid, creds.gid, creds.egid, creds.sgid,
    ]
    .iter()
    .all(|&id| id == 0);
    if root && creds.groups.iter().all(|&g| g == 0) {
        return Ok(());
    }
    let groups: Vec<u8> = creds.groups.iter().flat_map(|g| g.to_ne_bytes()).collect();
    pt::write_mem(child, scratch, &groups).map_err(sys("setgroups"))?;
    remote
        .call(libc::SYS_setgroups, &[creds.groups.len() as u64, scratch])
        .map_err(sys("setgroups"))?;
    remote
        .call(
            libc::SYS_setresgid,
            &[creds.gid as u64, creds.egid as u64, creds.sgid as u64],
        )
        .map_err(sys("setresgid"))?;
    remote
        .call(
            libc::SYS_setresuid,
            &[creds.uid as u64, creds.euid as u64, creds.suid as u64],
        )
        .map_err(sys("setresuid"))?;
    Ok(())
}
