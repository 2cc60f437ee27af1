//! What a dump collects of one frozen task: process attributes, threads, signal handlers,
//! timers, pending signals, the resume channel, fds and memory.

use nix::unistd::Pid;

use crate::error::{Error, Result};
use crate::files::locks::DumpMembers;
use crate::files::{FdDumpOptions, FileTable};
use crate::freeze::FrozenTask;
use crate::image::ImageDir;
use crate::remote::{Remote, Scratch};
use crate::sockets::SocketDump;
use crate::task::{
    attrs, landlock, namespaces, process as task, security, signals, threads, timers,
};
use crate::{memory, proc};


/// Everything of task `pid` but its memory (frozen, its main thread `remote` borrowed,
/// `scratch` mapped): its core with threads, signals, timers and fds; each thread checked for
/// a Landlock domain against `probes`; and the signal queues as read (for a killing dump's
/// last look at them, dump/late_signals.rs).
#[allow(clippy::too_many_arguments)]
pub(super) fn collect(
    pid: Pid,
    stat: &proc::Stat,
    images: &ImageDir,
    fd_opts: &FdDumpOptions,
    frozen: &FrozenTask,
    remote: &Remote,
    scratch: &Scratch,
    sockets: &SocketDump,
    files: &mut FileTable,
    members: &DumpMembers,
    pidns: Option<u64>,
    probes: &mut landlock::Probes,
    external_mounts: &[crate::task::mount_ns::ExternalMount],
    mount_namespaces: &mut MountNamespaces,
) -> Result<(cryo_proto::image::TaskCore, signals::Queued)> {
    // The stages' times in the debug log: all of this runs frozen (the downtime).
    let t = std::time::Instant::now();
    let stage = |name: &str| tracing::debug!(%pid, us = t.elapsed().as_micros() as u64, "collected {name}");
    let mut core = task::dump(pid, stat)?;
    let mut made = namespaces::dump(pid, frozen.tids(), pidns)?;
    (core.uts, core.time) = (made.uts.take(), made.time.take());
    core.time_for_children = made.time_for_children.take();
    core.userns = made.user.take();
    let mut cgroups = crate::task::cgroups::dump(pid, frozen.tids())?;
    core.cgroups = std::mem::take(&mut cgroups.process);
    core.cgroupns = made
        .cgroup
        .map(|inode| crate::task::cgroups::namespace(pid, inode))
        .transpose()?;
    core.ipc_ns = crate::ipc::namespace_of_task(pid)?;
    // Read whole once per namespace, across the tree (dump/mod.rs).
    core.netns = made.net.map(|inode| cryo_proto::image::NetNamespace {
        inode,
        ..Default::default()
    });
    core.mnt = match made.mnt {
        None => None,
        Some(inode) => Some(mount_namespaces.dump(pid, inode, external_mounts)?),
    };
    let mut process_attrs = attrs::dump_process(pid)?;
    stage("task, namespaces, cgroups, attributes");
    for &tid in frozen.tids() {
        let mut dump = |remote: &Remote, process: Option<&mut _>| -> Result<_> {
            // The security state first: its credentials say which process the Landlock
            // check names.
            let security = security::dump_thread(pid, remote)?;
            let creds = security.creds.clone().unwrap_or_default();
            let domain = probes.check(pid, tid, &creds, core.userns.as_ref())?;
            let mut thread = threads::dump_thread(tid, remote, scratch, process, &domain)?;
            if let Some(a) = thread.attrs.as_mut() {
                a.syscall_dispatch = frozen.syscall_dispatch(tid).map(attrs::dispatch_to_image);
            }
            thread.security = Some(security);
            Ok(thread)
        };
        if tid == pid {
            core.threads.push(dump(remote, Some(&mut process_attrs))?);
            continue;
        }
        // Other threads run their calls through the same code, not from their own.
        let thread = Remote::borrow_sibling(tid, remote, scratch.site())
            .map_err(|e| Error::sys(tid, "take the thread", e))?;
        let dumped = dump(&thread, None);
        thread
            .release()
            .map_err(|e| Error::sys(tid, "put the thread back", e))?;
        core.threads.push(dumped?);
    }
    for thread in &mut core.threads {
        if let Some(kept) = cgroups.threads.remove(&Pid::from_raw(thread.tid)) {
            thread.cgroups = kept;
        }
    }
    attrs::settle_membarrier(pid, remote, &mut process_attrs)?;
    attrs::dump_futex_hash(pid, remote, &mut process_attrs)?;
    attrs::dump_timer_restore_ids(pid, remote, &mut process_attrs)?;
    core.attrs = Some(process_attrs);
    stage("threads");
    // Whatever a restore would refuse, the dump refuses first.
    attrs::refuse_unrestorable(pid, &core)?;
    security::check_task(pid, &core.threads, core.userns.as_ref())?;
    core.sigactions = signals::dump_actions(pid, remote, scratch)?;
    core.itimers = timers::dump_itimers(pid, remote, scratch)?;
    core.posix_timers = timers::dump_posix(pid, remote, scratch)?;
    // After the timers: one a timer queues later is queued again by the restored timer.
    let queued = signals::read_queued(pid, frozen.tids())?;
    core.shared_pending = queued.shared.clone();
    for (thread, pending) in core.threads.iter_mut().zip(&queued.threads) {
        thread.pending = pending.clone();
    }
    // A timer's own signal goes back with the timer, not as a plain queued one.
    timers::tie_pending_signals(pid, &mut core);
    let listener = crate::notify::find_listeners_except(pid, |fd| sockets.is_socket_fd(fd))?;
    if let Some(listener) = listener.into_iter().next() {
        core.resume_channel = Some(crate::notify::channel_record(&listener));
    }
    stage("signals, timers");
    files.add_sockets(sockets);
    core.fds = files.dump_task_fds(pid, images, fd_opts)?;
    (core.file_locks, core.fd_owners) =
        files.take_locks_and_owners(pid, members)?;
    stage("fds");
    Ok((core, queued))
}

/// The mount namespaces of a dump's processes, each read once (by the first process of the
/// tree in it, from the namespace's root) and given to every process in it.
#[derive(Default)]
pub(super) struct MountNamespaces(
    std::collections::HashMap<(u64, bool), cryo_proto::image::MountNamespace>,
);

impl MountNamespaces {
    /// Namespace `inode` of `pid`, read now unless read for another process (with the same
    /// external mounts, which only the roots' namespaces have).
    fn dump(
        &mut self,
        pid: Pid,
        inode: u64,
        external_mounts: &[crate::task::mount_ns::ExternalMount],
    ) -> Result<cryo_proto::image::MountNamespace> {
        let key = (inode, external_mounts.is_empty());
        if let Some(ns) = self.0.get(&key) {
            return Ok(ns.clone());
        }
        let ns = crate::task::mount_ns::dump(pid, inode, external_mounts)?;
        self.0.insert(key, ns.clone());
        Ok(ns)
    }
}

/// The memory of task `pid` (frozen, as for [`collect`]): without its pages when `pages` is
/// false (`dump --check-only`); the pages in `earlier` a pre-copy round sent are listed, not
/// written.
#[allow(clippy::too_many_arguments)]
pub(super) fn collect_memory(
    pid: Pid,
    stat: &proc::Stat,
    images: &ImageDir,
    remote: &Remote,
    scratch: &Scratch,
    files: &mut FileTable,
    pages: bool,
    earlier: Option<&memory::precopy::Earlier>,
    views: memory::dump::VmaViews,
) -> Result<cryo_proto::image::MmCore> {
    let t = std::time::Instant::now();
    let maps: Vec<_> = proc::maps(pid)?
        .into_iter()
        .filter(|m| !scratch.contains(m.start))
        .collect();
    let mm = memory::dump::dump(
        pid, stat, &maps, files, images, remote, scratch, pages, earlier, views,
    )?;
    tracing::debug!(%pid, us = t.elapsed().as_micros() as u64, "collected memory");
    Ok(mm)
}
