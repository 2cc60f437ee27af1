//! The dump pipeline: check the target, freeze it, collect its state through /proc, ptrace and
//! remote syscalls, write the images, then kill it or let it run. A dump that fails leaves the
//! target running exactly as before and the image directory empty.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use cryo_proto::image::{FileDesc, Inventory, ProcessEntry};
use cryo_proto::ImageKind;
use nix::unistd::Pid;
use tracing::{info, info_span};

use crate::error::{Error, Result};
use crate::files::sockets::{SocketDump, SocketDumpOptions};
use crate::files::{FdDumpOptions, FileTable};
use crate::freeze::{check_target, FrozenTask};
use crate::image::{names, ImageDir};
use crate::remote::{Remote, Scratch};
use crate::{memory, proc, signals, task, threads, timers};

/// What `cryo dump` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct DumpOptions {
    /// The root pids (-t).
    pub pids: Vec<Pid>,
    /// The image directory (-D).
    pub images_dir: PathBuf,
    /// Leave the target running after the dump.
    pub leave_running: bool,
    /// Dump the controlling terminal too.
    pub shell_job: bool,
    /// Capture established TCP connections.
    pub tcp_established: bool,
}

/// What a dump did, for the command line to print.
#[derive(Debug, Clone, Default)]
pub struct DumpSummary {
    /// Every pid dumped.
    pub pids: Vec<Pid>,
    /// Bytes of pages written.
    pub pages_bytes: u64,
    /// How long the target was frozen.
    pub frozen: Duration,
    /// How long the whole dump took.
    pub total: Duration,
}

/// Dumps the trees rooted at `opts.pids` into `opts.images_dir`.
pub fn dump(opts: &DumpOptions) -> Result<DumpSummary> {
    let started = Instant::now();
    let _span = info_span!("dump", pids = ?opts.pids).entered();
    let [pid] = opts.pids[..] else {
        return Err(Error::Restore(format!(
            "dump of {} roots: one root pid per dump for now",
            opts.pids.len()
        )));
    };
    let stat = check_target(pid)?;
    let children = proc::children(pid)?;
    if !children.is_empty() {
        return Err(Error::target(
            pid,
            format!(
                "{} has children {children:?}: process trees are not supported yet",
                stat.comm
            ),
        ));
    }
    let images = ImageDir::create(&opts.images_dir)?;
    let result = dump_task(pid, &images, opts, started);
    if result.is_err() {
        clear_dir(&images);
    }
    result
}

fn dump_task(
    pid: Pid,
    images: &ImageDir,
    opts: &DumpOptions,
    started: Instant,
) -> Result<DumpSummary> {
    let frozen = FrozenTask::freeze(pid)?;
    let frozen_at = Instant::now();
    // Sockets first: the network lock goes on before any connection is captured. Dropped on
    // a failure below, it puts the connections back and releases the lock.
    let lock_id = lock_id_for(images.path());
    let sockets = SocketDump::collect(
        pid,
        &SocketDumpOptions {
            tcp_established: opts.tcp_established,
            lock_id: lock_id.clone(),
        },
    )?;
    // Read again now that it cannot change under us.
    let stat = proc::stat(pid)?;
    let mut remote = Remote::borrow(pid).map_err(|e| Error::sys(pid, "take the main thread", e))?;
    let scratch =
        Scratch::map(&mut remote).map_err(|e| Error::sys(pid, "map a scratch page", e))?;
    let collected = collect(
        pid, &stat, images, opts, &frozen, &remote, &scratch, &sockets,
    );
    // Whatever happened, the task gets its own state back before anything else.
    let unmapped = scratch.unmap(&remote);
    let released = remote.release();
    let (core, mm, descs) = collected?;
    unmapped.map_err(|e| Error::sys(pid, "unmap the scratch page", e))?;
    released.map_err(|e| Error::sys(pid, "put the main thread back", e))?;

    let pages_bytes = mm.pages_file.as_ref().map_or(0, |f| f.size);
    let entry: ProcessEntry = task::process_entry(pid, &stat, frozen.tids());
    let vdso = memory::vdso_identity(pid)?;
    images.write(&names::core(pid), ImageKind::Core, &[core])?;
    images.write(&names::mm(pid), ImageKind::Mm, &[mm])?;
    images.write(names::FILES, ImageKind::Files, &descs)?;
    images.write(names::PSTREE, ImageKind::Pstree, &[entry])?;
    // The inventory last: a directory without one is not an image.
    images.write(
        names::INVENTORY,
        ImageKind::Inventory,
        &[Inventory {
            checkpoint_id: checkpoint_id(),
            created_unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            kernel_release: nix::sys::utsname::uname()
                .map(|u| u.release().to_string_lossy().into_owned())
                .unwrap_or_default(),
            cryo_version: env!("CARGO_PKG_VERSION").into(),
            root_pids: vec![pid.as_raw()],
            vdso_size: vdso.0,
            vdso_crc32c: vdso.1,
            shell_job: opts.shell_job,
            tcp_established: opts.tcp_established,
            leave_running: opts.leave_running,
            network_lock: if !opts.leave_running && sockets.has_connections() {
                lock_id
            } else {
                String::new()
            },
        }],
    )?;
    if opts.leave_running {
        sockets.finish_running()?;
        drop(frozen);
    } else {
        frozen.kill()?;
        if let Some(id) = sockets.finish_killed() {
            info!(%pid, lock = id, "connections held silent by the network lock until restore");
        }
    }
    let summary = DumpSummary {
        pids: vec![pid],
        pages_bytes,
        frozen: frozen_at.elapsed(),
        total: started.elapsed(),
    };
    info!(%pid, pages_bytes, frozen_ms = summary.frozen.as_secs_f64() * 1e3, "dumped");
    Ok(summary)
}

type Collected = (
    cryo_proto::image::TaskCore,
    cryo_proto::image::MmCore,
    Vec<FileDesc>,
);

#[allow(clippy::too_many_arguments)]
fn collect(
    pid: Pid,
    stat: &proc::Stat,
    images: &ImageDir,
    opts: &DumpOptions,
    frozen: &FrozenTask,
    remote: &Remote,
    scratch: &Scratch,
    sockets: &SocketDump,
) -> Result<Collected> {
    let mut core = task::dump(pid, stat)?;
    for &tid in frozen.tids() {
        if tid == pid {
            core.threads
                .push(threads::dump_thread(tid, remote, scratch)?);
            continue;
        }
        // Other threads run their calls from the scratch page, not from their own code.
        let thread = Remote::at_site(tid, scratch.site())
            .map_err(|e| Error::sys(tid, "take the thread", e))?;
        let dumped = threads::dump_thread(tid, &thread, scratch);
        thread
            .release()
            .map_err(|e| Error::sys(tid, "put the thread back", e))?;
        core.threads.push(dumped?);
    }
    core.sigactions = signals::dump_actions(pid, remote, scratch)?;
    core.itimers = timers::dump_itimers(pid, remote, scratch.addr)?;
    core.posix_timers = timers::dump_posix(pid, remote, scratch.addr)?;
    core.shared_pending = threads::shared_pending(pid)?;
    let mut files = FileTable::new();
    files.add_sockets(sockets);
    core.fds = files.dump_task_fds(
        pid,
        images,
        &FdDumpOptions {
            shell_job: opts.shell_job,
        },
    )?;
    let maps: Vec<_> = proc::maps(pid)?
        .into_iter()
        .filter(|m| !scratch.contains(m.start))
        .collect();
    let mm = memory::dump::dump(pid, stat, &maps, &mut files, images, remote, scratch)?;
    Ok((core, mm, files.into_descs()))
}

/// The id of the network lock of a dump into `dir`: derived from the directory's absolute
/// path, so that `cryo unlock -D DIR` finds it even when the dump died before writing its
/// inventory.
pub fn lock_id_for(dir: &std::path::Path) -> String {
    let abs = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let bytes = abs.as_os_str().as_encoded_bytes();
    format!("dump-{:08x}-{:x}", crc32c::crc32c(bytes), bytes.len())
}

fn checkpoint_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| format!("{:x}", std::process::id()))
}

/// Removes what a failed dump wrote (the directory was empty before).
fn clear_dir(images: &ImageDir) {
    if let Ok(entries) = std::fs::read_dir(images.path()) {
        for entry in entries.flatten() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Removes the network lock a dump into `dir` left installed (`cryo unlock -D DIR`): the one
/// named in its inventory, else the one derived from the directory (a dump that died before
/// writing its inventory). Returns the lock id and whether it was installed.
pub fn unlock(dir: &std::path::Path) -> Result<(String, bool)> {
    let from_inventory = ImageDir::open(dir)
        .ok()
        .and_then(|images| {
            images
                .read_single::<Inventory>(names::INVENTORY, ImageKind::Inventory)
                .ok()
        })
        .map(|inv| inv.network_lock)
        .filter(|id| !id.is_empty());
    let id = from_inventory.unwrap_or_else(|| lock_id_for(dir));
    let found = cryo_netns::NetworkLock::release_by_id(&id).map_err(|e| Error::ImageDir {
        path: dir.to_path_buf(),
        detail: format!("remove network lock {id}: {e}"),
    })?;
    Ok((id, found))
}
