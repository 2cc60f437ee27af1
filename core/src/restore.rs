//! The restore pipeline: read and check every image before anything starts, fork the process
//! with its original pid, let it open its fds while it still runs cryo code, reshape it into the
//! dumped one through remote syscalls, set its registers and let it go. A failure after the
//! fork kills what was created.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use cryo_proto::image::{FileDesc, Inventory, MmCore, ProcessEntry, TaskCore, VmaKind};
use cryo_proto::ImageKind;
use nix::sys::ptrace;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tracing::{debug, info, info_span};

use crate::error::{Error, Result};
use crate::image::{names, ImageDir};
use crate::memory::restore::{needs_writable_file, reshape, MappingFds};
use crate::memory::{self, PAGE};
use crate::remote::{Remote, SYSCALL_INT3};
use crate::sys::process::{fork_with_pid, Forked};
use crate::sys::ptrace as pt;
use crate::{files, namespaces, signals, task, threads, timers};

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
struct TaskImage {
    entry: ProcessEntry,
    core: TaskCore,
    mm: MmCore,
    /// The pages image, mapped when it was checked; the fill copies from it.
    pages: Option<crate::sys::mmap::Mapping>,
}

/// Restores the image directory `opts.images_dir`; the processes run when this returns.
pub fn restore(opts: &RestoreOptions) -> Result<Restored> {
    let started = Instant::now();
    let _span = info_span!("restore", dir = %opts.images_dir.display()).entered();
    let images = ImageDir::open(&opts.images_dir)?;
    let (inventory, tasks, descs) = load(&images)?;
    debug!(ms = started.elapsed().as_secs_f64() * 1e3, "images checked");
    // The dump's network lock goes once the restored sockets are live, or the restore failed.
    let _unlock = Unlock(inventory.network_lock.clone());
    let [task] = &tasks[..] else {
        return Err(Error::Restore(format!(
            "{} processes in the image: one per image for now",
            tasks.len()
        )));
    };
    let pid = Pid::from_raw(task.entry.pid);
    let ns = Namespaces {
        pid: opts.pidns,
        net: opts.netns,
    };
    if !ns.pid {
        for thread in &task.core.threads {
            wait_pid_free(Pid::from_raw(thread.tid))?;
        }
    }
    let child = spawn(task, &descs, &images, ns, opts)?;
    let mut guard = KillOnDrop(Some(child));
    debug!(
        ms = started.elapsed().as_secs_f64() * 1e3,
        "process created, fds open"
    );
    finish(child.pid, task, child.tramp)?;
    guard.0 = None;
    let elapsed = started.elapsed();
    info!(%pid, outside = %child.pid, ms = elapsed.as_secs_f64() * 1e3, "restored");
    let restored = Restored {
        roots: vec![child.pid],
        elapsed,
        init: child.init,
    };
    Ok(restored)
}

/// Reads every image and checks it against the others and this machine, before anything
/// is created.
fn load(images: &ImageDir) -> Result<(Inventory, Vec<TaskImage>, Vec<FileDesc>)> {
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
    for entry in pstree {
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
    files::validate(&descs, &fds, images)?;
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
    Ok((inventory, tasks, descs))
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

/// Releases the network lock of a dump (if any) when dropped.
struct Unlock(String);

impl Drop for Unlock {
    fn drop(&mut self) {
        if self.0.is_empty() {
            return;
        }
        match cryo_netns::NetworkLock::release_by_id(&self.0) {
            Ok(found) => debug!(lock = self.0, found, "network lock released"),
            Err(e) => tracing::warn!(lock = self.0, error = %e, "network lock not released"),
        }
    }
}

/// Kills and reaps a half-restored process.
struct KillOnDrop(Option<Spawned>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = self.0.take() {
            let _ = nix::sys::signal::kill(child.pid, Signal::SIGKILL);
            let _ = waitpid(child.pid, Some(WaitPidFlag::__WALL));
            // Killing the init of a PID namespace kills everything in it.
            if let Some(init) = child.init {
                let _ = nix::sys::signal::kill(init, Signal::SIGKILL);
                let _ = waitpid(init, Some(WaitPidFlag::__WALL));
            }
        }
    }
}

/// Which new namespaces to restore into.
#[derive(Debug, Clone, Copy, Default)]
struct Namespaces {
    pid: bool,
    net: bool,
}

#[derive(Clone, Copy)]
struct Spawned {
    /// The restored process as cryo sees it (its pid outside any new namespace).
    pid: Pid,
    tramp: u64,
    /// The init of the new namespaces, if any.
    init: Option<Pid>,
}

/// Where the trampoline goes: two pages used neither by the image nor by cryo.
fn pick_trampoline(mm: &MmCore) -> Result<u64> {
    const GUARD: u64 = 4 << 20;
    let ours = crate::proc::maps(nix::unistd::getpid())?;
    let free = |a: u64| {
        let b = a + 2 * PAGE;
        !mm.vmas
            .iter()
            .any(|v| v.start < b + GUARD && a < v.end + GUARD)
            && !ours
                .iter()
                .any(|m| m.start < b + GUARD && a < m.end + GUARD)
    };
    (1u64..1 << 16)
        .map(|i| i << 30)
        .find(|&a| free(a))
        .ok_or_else(|| Error::Restore("no free address for the restore trampoline".into()))
}

/// The fd numbers of the restore child's own fds, above every fd of the task: the two control
/// pipes at the returned base, then the pages image, the executable and the mapped files.
fn fd_plan(task: &TaskImage) -> (RawFd, MappingFds) {
    let max_fd = task.core.fds.iter().map(|f| f.fd).max().unwrap_or(2).max(2);
    let ctl_base = max_fd + 1;
    let first = (ctl_base + 2) as u64;
    let wanted: BTreeSet<(u32, bool)> = task
        .mm
        .vmas
        .iter()
        .filter(|v| {
            matches!(
                VmaKind::try_from(v.kind),
                Ok(VmaKind::FilePrivate | VmaKind::FileShared)
            )
        })
        .map(|v| (v.file_id, needs_writable_file(v)))
        .collect();
    let files = wanted
        .into_iter()
        .zip(first + 2..)
        .map(|((id, writable), fd)| (id, writable, fd))
        .collect();
    (
        ctl_base,
        MappingFds {
            pages: first,
            exe: first + 1,
            files,
        },
    )
}

/// Forks the process with its pid; the child opens its fds and stops itself.
fn spawn(
    task: &TaskImage,
    descs: &[FileDesc],
    images: &ImageDir,
    ns: Namespaces,
    opts: &RestoreOptions,
) -> Result<Spawned> {
    let pid = Pid::from_raw(task.entry.pid);
    let tramp = pick_trampoline(&task.mm)?;
    let (ctl_base, mapping) = fd_plan(task);
    let (sync_rd, sync_wr) = nix::unistd::pipe().map_err(|e| Error::sys(pid, "pipe", e))?;
    let (err_rd, err_wr) = nix::unistd::pipe().map_err(|e| Error::sys(pid, "pipe", e))?;
    let plan = ChildPlan {
        task,
        descs,
        images,
        sync: (sync_rd.as_raw_fd(), ctl_base),
        err: (err_wr.as_raw_fd(), ctl_base + 1),
        mapping: &mapping,
        tramp,
        fd_opts: files::FdRestoreOptions {
            tcp_close: opts.tcp_close,
        },
    };
    let (child, init) = if ns.pid || ns.net {
        let init = namespaces::spawn_init(
            pid,
            ns.pid,
            ns.net,
            &[sync_rd.as_raw_fd(), err_wr.as_raw_fd()],
            || child_main(&plan),
        )?;
        (init.child, Some(init.init))
    } else {
        let child = match fork_with_pid(pid) {
            Ok(Forked::Child) => child_main(&plan),
            Ok(Forked::Parent(child)) => child,
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                return Err(Error::Restore(format!(
                    "pid {pid} is taken: it was created meanwhile"
                )))
            }
            Err(e) => return Err(Error::sys(pid, "clone3 with set_tid", e)),
        };
        (child, None)
    };
    let spawned = Spawned {
        pid: child,
        tramp,
        init,
    };
    let guard = KillOnDrop(Some(spawned));
    drop(sync_rd);
    drop(err_wr);
    ptrace::seize(child, ptrace::Options::PTRACE_O_EXITKILL)
        .map_err(|e| Error::sys(child, "seize the new process", e))?;
    let mut sync = std::fs::File::from(sync_wr);
    sync.write_all(b"g")
        .map_err(|e| Error::sys(child, "start the new process", e))?;
    drop(sync);
    loop {
        match waitpid(child, Some(WaitPidFlag::__WALL)) {
            Ok(WaitStatus::Stopped(_, Signal::SIGSTOP)) => break,
            Ok(WaitStatus::Exited(..)) | Ok(WaitStatus::Signaled(..)) => {
                let mut msg = String::new();
                let _ = std::fs::File::from(err_rd).read_to_string(&mut msg);
                // The process is gone already (a kill could hit a recycled pid); its init not.
                std::mem::forget(guard);
                if let Some(init) = init {
                    let _ = nix::sys::signal::kill(init, Signal::SIGKILL);
                    let _ = waitpid(init, None);
                }
                if msg.is_empty() {
                    msg = "died while opening its files".into();
                }
                return Err(Error::Restore(format!("pid {pid}: {msg}")));
            }
            Ok(WaitStatus::Stopped(_, sig)) => {
                ptrace::cont(child, sig).map_err(|e| Error::sys(child, "continue", e))?;
            }
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(Error::sys(child, "wait for the new process", e)),
        }
    }
    std::mem::forget(guard);
    Ok(spawned)
}

/// Turns the stopped child into the dumped process and lets it run.
fn finish(child: Pid, task: &TaskImage, tramp: u64) -> Result<()> {
    let sys = |op: &'static str| move |e: std::io::Error| Error::sys(child, op, e);
    let remote = Remote::at_site(child, tramp).map_err(sys("take the new process"))?;
    let scratch = tramp + PAGE;
    let (ctl_base, mapping) = fd_plan(task);
    reshape(
        child,
        &remote,
        (tramp, tramp + 2 * PAGE),
        scratch,
        &task.mm,
        &mapping,
        task.pages.as_ref().map(|m| m.as_slice()),
    )?;
    for fd in [ctl_base as u64, ctl_base as u64 + 1] {
        remote
            .call(libc::SYS_close, &[fd])
            .map_err(sys("close the control pipes"))?;
    }

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
    // The main thread last: the process as a whole runs once it does.
    for &tid in created.iter().rev() {
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

/// What the restore child needs, prepared by the parent before the fork.
struct ChildPlan<'a> {
    task: &'a TaskImage,
    descs: &'a [FileDesc],
    images: &'a ImageDir,
    /// (inherited fd, number it must move to).
    sync: (RawFd, i32),
    err: (RawFd, i32),
    mapping: &'a MappingFds,
    tramp: u64,
    fd_opts: files::FdRestoreOptions,
}

/// The restore child: a single-threaded fork of cryo. Never returns: it stops itself for the
/// parent to reshape it, or reports why it could not and exits.
fn child_main(plan: &ChildPlan) -> ! {
    let result = child_setup(plan);
    let err_fd = plan.err.1;
    match result {
        Ok(()) => {
            let _ = nix::sys::signal::raise(Signal::SIGSTOP);
            // The parent rewrote this process; reaching here means it let go of us early.
            // SAFETY: _exit ends the process without running anything else.
            unsafe { libc::_exit(71) }
        }
        Err(msg) => {
            let msg = msg.into_bytes();
            // SAFETY: writing our own buffer to the error pipe, then ending the process.
            unsafe {
                libc::write(err_fd, msg.as_ptr().cast(), msg.len());
                libc::_exit(70)
            }
        }
    }
}

fn child_setup(plan: &ChildPlan) -> std::result::Result<(), String> {
    crate::sys::signal::set_mask(!0).map_err(|e| format!("block signals: {e}"))?;
    for (from, to) in [plan.err, plan.sync] {
        move_fd(from, to).map_err(|e| format!("control fd {to}: {e}"))?;
    }
    let mut go = [0u8; 1];
    // SAFETY: reading one byte into a local buffer from our control pipe.
    if unsafe { libc::read(plan.sync.1, go.as_mut_ptr().cast(), 1) } != 1 {
        return Err("the parent went away".into());
    }
    let task = plan.task;
    let pid = Pid::from_raw(task.entry.pid);

    let pages = std::fs::File::open(plan.images.file(&names::pages(pid)))
        .map_err(|e| format!("open {}: {e}", names::pages(pid)))?;
    place(OwnedFd::from(pages), plan.mapping.pages)?;
    let exe = files::open_for_mapping(plan.descs, task.mm.exe_file_id, false, plan.images)
        .map_err(|e| format!("executable: {e}"))?;
    place(exe, plan.mapping.exe)?;
    for &(id, writable, fd) in &plan.mapping.files {
        let file = files::open_for_mapping(plan.descs, id, writable, plan.images)
            .map_err(|e| format!("mapped file: {e}"))?;
        place(file, fd)?;
    }
    let mut keep: Vec<RawFd> = vec![plan.sync.1, plan.err.1];
    keep.extend(plan.mapping.all().iter().map(|&fd| fd as RawFd));
    files::restore_task_fds_with(
        plan.descs,
        &task.core.fds,
        plan.images,
        &keep,
        &plan.fd_opts,
    )
    .map_err(|e| e.to_string())?;

    signals::restore_actions(&task.core.sigactions).map_err(|e| format!("signal handlers: {e}"))?;
    let thread_pending = &task.core.threads[0].pending;
    signals::requeue(&task.core.shared_pending, thread_pending)
        .map_err(|e| format!("pending signals: {e}"))?;
    map_trampoline(plan.tramp).map_err(|e| format!("trampoline: {e}"))?;
    task::restore_in_child(&task.core, &task.entry)?;
    Ok(())
}

fn move_fd(from: RawFd, to: RawFd) -> std::io::Result<()> {
    if from == to {
        return Ok(());
    }
    // SAFETY: dup2/close on fd numbers this child inherited and owns; no OwnedFd refers to
    // them in the child.
    unsafe {
        if libc::dup2(from, to) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        libc::close(from);
    }
    Ok(())
}

fn place(fd: OwnedFd, at: u64) -> std::result::Result<(), String> {
    let raw = std::os::fd::IntoRawFd::into_raw_fd(fd);
    move_fd(raw, at as RawFd).map_err(|e| format!("fd {at}: {e}"))
}

/// Two pages at `addr`: `syscall; int3` (read-execute), then a writable scratch page.
fn map_trampoline(addr: u64) -> std::io::Result<()> {
    use nix::sys::mman::{mmap_anonymous, mprotect, MapFlags, ProtFlags};
    let len =
        std::num::NonZeroUsize::new(2 * PAGE as usize).ok_or(std::io::ErrorKind::InvalidInput)?;
    let at = std::num::NonZeroUsize::new(addr as usize);
    // SAFETY: a fixed mapping at an address the parent checked is unused in this process
    // (MAP_FIXED_NOREPLACE fails rather than replace anything).
    let ptr = unsafe {
        mmap_anonymous(
            at,
            len,
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            MapFlags::MAP_PRIVATE | MapFlags::MAP_FIXED_NOREPLACE,
        )
    }?;
    // SAFETY: the first bytes of the page we just mapped, owned by nobody else.
    unsafe {
        std::ptr::copy_nonoverlapping(
            SYSCALL_INT3.as_ptr(),
            ptr.as_ptr().cast(),
            SYSCALL_INT3.len(),
        );
        mprotect(
            ptr,
            PAGE as usize,
            ProtFlags::PROT_READ | ProtFlags::PROT_EXEC,
        )?;
    }
    Ok(())
}
