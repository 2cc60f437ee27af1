//! The dump pipeline: check the target, freeze it, collect its state through /proc, ptrace and
//! remote syscalls, write the images, then kill it or let it run. A dump that fails leaves the
//! target running exactly as before and the image directory empty.
//!
//! ```text
//! tree.rs     roots -> trees (resolve_trees)
//! mod.rs      freeze, per task: sockets (network lock) -> collect.rs -> images; shared
//!             objects once; inventory last; kill or let run
//! guardian.rs the process that undoes repair mode and the lock if cryo dies mid-dump
//! late_signals.rs  a killing dump's last read of the signal queues, right before the kill
//! unlock.rs   the dump's network lock id, `cryo unlock`
//! retire.rs   `cryo kill` of a --leave-running dump
//! error.rs    DumpError, KillError
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cryo_proto::image::Inventory;
use cryo_proto::ImageKind;
use nix::unistd::Pid;
use tracing::{debug, info, info_span};

pub(crate) mod collect;
pub mod error;
pub(crate) mod guardian;
mod late_signals;
pub mod retire;
pub(crate) mod tree;
pub mod unlock;

use self::collect::{collect, collect_memory};
use crate::files::locks::DumpMembers;
use self::error::DumpError;
use self::guardian::Guardian;
pub(crate) use self::tree::{resolve_trees, Member};
pub use self::unlock::{lock_id_for, network_lock_installed, unlock};
use crate::error::{Error, Result};
use crate::files::{FdDumpOptions, FileTable};
use crate::freeze::FrozenTask;
use crate::hooks::{self, Hooks, Stage};
use crate::image::{names, ImageDir};
use crate::remote::{Remote, Scratch};
use crate::sockets::{DumpSockets, SocketDumpOptions};
use crate::task::process as task;
use crate::{memory, proc};

/// What `cryo dump` was asked to do: [`DumpOptions::new`], then set the fields that differ
/// from their defaults (more may come, so the struct cannot be built literally outside).
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
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
    /// `--skip-in-flight`: a TCP listener with connections that finished their handshake but
    /// were not accepted yet is dumped without them (otherwise refused, a temporary state);
    /// they are reset when the dump kills the listener's process.
    pub tcp_skip_in_flight: bool,
    /// `--tcp-close`: TCP connections (and sockets closed after one) are dumped without
    /// their connection, to come back closed, as CRIU's `dump --tcp-close` (no network lock;
    /// their peers see them closed when the dump kills the process).
    pub tcp_close: bool,
    /// The program run at pre-dump, network-lock and post-dump (`--action-script`).
    pub action_script: Option<crate::hooks::ActionScript>,
    /// The largest deleted file (open or mapped, its name removed) whose contents the dump
    /// copies into the image (`--ghost-limit`); a larger one refuses the dump. None: any.
    pub ghost_limit: Option<u64>,
    /// The roots of the processes' cgroups (CRIU's `--cgroup-root` on dump): a process
    /// outside the one of a hierarchy is refused; kept in the inventory for the restore.
    pub cgroup_roots: Vec<cryo_proto::image::CgroupRoot>,
    /// Mounts of the processes' mount namespaces recorded by a key, not held (CRIU's
    /// `--external mnt[POINT]:KEY`): a restore binds the path it is given for each key.
    pub external_mounts: Vec<crate::task::mount_ns::ExternalMount>,
    /// Accept unix sockets whose peer is outside the dump (`--ext-unix-sk`): they are
    /// restored as broken connections.
    pub ext_unix_sk: bool,
    /// Called once the images are complete and before the point of no return (`--to`: the
    /// images streamed to a receiver that must confirm them). Its error rolls the dump back
    /// as any other failure: the target runs on, the network lock is removed.
    pub commit: Option<CommitHook>,
    /// `--check-only`: no pages, the target always left running, and check.img written for
    /// `cryo restore --check-only` to judge a destination with (crate::precheck).
    pub check_only: bool,
    /// `--pre-copy` (with a stream): memory sent round after round while the processes run
    /// (to `pre_copy_sink`), the frozen dump then writing only what changed since
    /// (memory/precopy.rs).
    pub pre_copy: bool,
    /// Where the pre-copy rounds go (the stream the commit hook finishes).
    pub pre_copy_sink: Option<crate::memory::precopy::PreCopySink>,
    /// The checkpoint id to give the image (default: a fresh uuid); a stream opened before
    /// the dump announces it first.
    pub checkpoint_id: Option<String>,
}

/// The error a [`CommitHook`] answers with: it says which step failed.
pub type CommitError = Box<dyn std::error::Error + Send + Sync>;

/// What a dump calls between "images written" and "kill or let run": given the image
/// directory, the checkpoint id and the dump's [`Commitment`], it returns once the images are
/// safe elsewhere (or fails, and the dump is rolled back).
#[derive(Clone)]
pub struct CommitHook(Arc<CommitFn>);

/// The function behind a [`CommitHook`].
type CommitFn = dyn Fn(&Path, &str, &Commitment<'_>) -> Result<(), CommitError> + Send + Sync;

impl CommitHook {
    /// A hook running `f(images_dir, checkpoint_id, commitment)`.
    pub fn new(
        f: impl Fn(&Path, &str, &Commitment<'_>) -> Result<(), CommitError> + Send + Sync + 'static,
    ) -> Self {
        Self(Arc::new(f))
    }
}

/// What a commit hook decides for a cryo that dies during it: by default the frozen targets
/// are thawed (the dump rolled back by its guardian); armed, they are killed, as once the
/// hook returns (a migration's destination was told to run them: both must never run).
pub struct Commitment<'a> {
    guardian: Option<&'a guardian::Guardian>,
}

impl Commitment<'_> {
    /// From here a dead cryo's targets die rather than thaw.
    pub fn arm(&self) {
        if let Some(g) = self.guardian {
            g.commit();
        }
    }

    /// Back to thawing them (the hook is failing: the dump rolls back).
    pub fn disarm(&self) {
        if let Some(g) = self.guardian {
            g.cancel_commit();
        }
    }
}

impl std::fmt::Debug for CommitHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CommitHook")
    }
}

impl DumpOptions {
    /// A dump of the trees rooted at `pids` into `images_dir`, every option at its default
    /// (the processes killed once dumped, no terminal, no TCP connections, no script).
    pub fn new(pids: Vec<Pid>, images_dir: impl Into<PathBuf>) -> Self {
        Self {
            pids,
            images_dir: images_dir.into(),
            ..Self::default()
        }
    }
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
    /// When the last process was frozen (for a caller timing what its commit hook did).
    pub frozen_at: Option<Instant>,
    /// With `--pre-copy`: bytes of pages sent in each round while the processes ran.
    pub pre_copy_rounds: Vec<u64>,
}

/// Dumps the trees rooted at `opts.pids` into `opts.images_dir`.
pub fn dump(opts: &DumpOptions) -> Result<DumpSummary> {
    let started = Instant::now();
    // Answered between steps (`interrupted`), before the point of no return.
    let _held = crate::interrupt::Held::new();
    let _span = info_span!("dump", pids = ?opts.pids).entered();
    if opts.pids.is_empty() {
        return Err(DumpError::NoPid.into());
    }
    let tree = resolve_trees(&opts.pids)?;
    let mut images = ImageDir::create(&opts.images_dir)?;
    if opts.check_only {
        images.without_contents();
    }
    let mut hooks = Hooks::new(opts.action_script.as_ref(), images.path());
    // Dropped at the end whatever happened: the processes keep no tracking of cryo's.
    let mut precopy: Option<memory::precopy::PreCopy> = None;
    // What a failed attempt froze, for the next one (dump_tree).
    let mut carry: Vec<FrozenTask> = Vec::new();
    let mut result = hooks
        .run(Stage::PreDump, &opts.pids)
        .map_err(Error::from)
        // The script may have changed the trees (stopped a worker, say): look again.
        .and_then(|()| match opts.action_script {
            Some(_) => resolve_trees(&opts.pids),
            None => Ok(tree),
        })
        .and_then(|tree| {
            if opts.pre_copy {
                precopy = Some(start_pre_copy(&tree, opts)?);
            }
            dump_tree(&tree, &images, opts, &mut hooks, started, precopy.as_mut(), &mut carry)
        });
    // A server's tree changes on its own (a worker forked for a client, one ending): a tree
    // that changed while it was being frozen was let go as it was, so it is read and frozen
    // again, a few times.
    for attempt in 2..=FREEZE_ATTEMPTS {
        match &result {
            Err(Error::Dump(e @ (DumpError::ChildrenChanged { .. }
            | DumpError::ExitedWhileFrozen { .. }))) => {
                debug!(attempt, "tree changed while being frozen ({e}): freezing again");
            }
            _ => break,
        }
        result = resolve_trees(&opts.pids).and_then(|tree| {
            dump_tree(&tree, &images, opts, &mut hooks, started, precopy.as_mut(), &mut carry)
        });
    }
    // Frozen by an attempt, in no tree of the last one (killed meanwhile by someone else).
    drop(carry);
    drop(precopy);
    if result.is_err() {
        clear_dir(&images);
    }
    result
}

/// Tracks the writes of every live process of `tree` and sends the pre-copy rounds.
fn start_pre_copy(tree: &[Member], opts: &DumpOptions) -> Result<memory::precopy::PreCopy> {
    let Some(sink) = &opts.pre_copy_sink else {
        return Err(DumpError::PreCopyWithoutStream.into());
    };
    if opts.check_only {
        return Err(DumpError::PreCopyWithoutStream.into());
    }
    let pids: Vec<Pid> = tree
        .iter()
        .filter(|m| !m.is_zombie())
        .map(|m| m.pid)
        .collect();
    memory::precopy::PreCopy::run(&pids, sink)
}

/// How many times a dump reads and freezes a tree that keeps changing meanwhile.
const FREEZE_ATTEMPTS: u32 = 10;

fn dump_tree(
    tree: &[Member],
    images: &ImageDir,
    opts: &DumpOptions,
    hooks: &mut Hooks,
    started: Instant,
    mut precopy: Option<&mut memory::precopy::PreCopy>,
    carry: &mut Vec<FrozenTask>,
) -> Result<DumpSummary> {
    let live: Vec<&Member> = tree.iter().filter(|m| !m.is_zombie()).collect();
    // A check-only dump never kills: it is a --leave-running dump without pages.
    let leave_running = opts.leave_running || opts.check_only;
    let lock_id = lock_id_for(images.path());
    // Before anything is changed, and dropped last: if cryo dies from here on, it takes the
    // connections out of repair mode and removes the lock.
    let guardian = opts.tcp_established.then(|| {
        let pids: Vec<Pid> = live.iter().map(|m| m.pid).collect();
        let inventory = images.path().join(names::INVENTORY);
        Guardian::start(&pids, &lock_id, (!leave_running).then_some(&*inventory))
    });
    let mut guardian = guardian.flatten();
    // A tree in a PID namespace of its own: refused before anything is touched unless it is
    // the whole namespace under its init.
    let members: Vec<(Pid, bool)> = tree.iter().map(|m| (m.pid, m.is_zombie())).collect();
    let mut pidns = crate::task::pidns::find(&members, &opts.pids).map_err(|e| match e.gone() {
        // A worker that ended since the tree was read: read it again (below, in `dump`).
        Some(pid) => Error::Dump(DumpError::ExitedWhileFrozen { pid, tid: pid }),
        None => e.into(),
    })?;
    if let (Some(ns), Some(_)) = (&pidns, &precopy) {
        return Err(Error::target(
            opts.pids[0],
            format!(
                "is the init of pid namespace pid:[{}]: --pre-copy does not take a pid \
                 namespace yet; refused",
                ns.inode
            ),
        ));
    }
    // A parent in vfork would hold its freeze until its child execs.
    let states: Vec<(Pid, Pid, char)> = live
        .iter()
        .map(|m| (m.pid, Pid::from_raw(m.stat.ppid), m.stat.state))
        .collect();
    crate::task::sharing::refuse_vfork(&states)?;
    // So would a process a cgroup freezer holds (it sleeps in state D too).
    for &(pid, _, state) in &states {
        if state == 'D' {
            if let Some(dir) = crate::task::cgroups::frozen_cgroup(pid)? {
                return Err(crate::task::cgroups::CgroupError::Frozen { pid, dir }.into());
            }
        }
    }
    // Parents first: a child forked meanwhile is seen as a change of the tree below. The
    // processes an earlier attempt froze (`carry`) stay frozen: the tree below them can
    // only have turned children into zombies, so each attempt gets further down a tree that
    // forks and exits all the time.
    let mut frozen = Vec::with_capacity(live.len());
    // A process that exited before it was frozen is a zombie of a frozen parent now: the
    // others are frozen all the same, for the next attempt.
    let mut exited = None;
    for m in &live {
        let task = match carry.iter().position(|f| f.pid() == m.pid) {
            Some(i) => carry.swap_remove(i),
            None => match FrozenTask::freeze(m.pid) {
                Ok(task) => task,
                Err(e @ Error::Dump(DumpError::ExitedWhileFrozen { .. })) => {
                    exited.get_or_insert(e);
                    continue;
                }
                Err(e) => {
                    carry.append(&mut frozen);
                    return Err(e);
                }
            },
        };
        frozen.push(task);
    }
    if let Some(e) = exited {
        carry.append(&mut frozen);
        return Err(e);
    }
    // From the first freeze: a process carried over from an earlier attempt, or frozen
    // before the rest of the tree, has been frozen since then.
    let frozen_at = frozen
        .iter()
        .map(FrozenTask::frozen_since)
        .min()
        .unwrap_or_else(Instant::now);
    interrupted("while freezing")?;
    crate::interrupt::pause_point("frozen");
    for m in &live {
        let now: Vec<Pid> = proc::children(m.pid)?;
        let before: Vec<Pid> = tree
            .iter()
            .filter(|c| c.stat.ppid == m.pid.as_raw() && !opts.pids.contains(&c.pid))
            .map(|c| c.pid)
            .collect();
        let (mut a, mut b) = (now.clone(), before);
        a.sort();
        b.sort();
        if a != b {
            carry.append(&mut frozen);
            return Err(DumpError::ChildrenChanged {
                pid: m.pid,
                before: b,
                after: a,
            }
            .into());
        }
    }
    // What clone flags made shared: a child's fd table or fs_struct shared with its parent
    // is cloned so at restore, the rest refused.
    let threads: Vec<(Pid, Pid, &[Pid])> = live
        .iter()
        .zip(&frozen)
        .map(|(m, f)| (m.pid, Pid::from_raw(m.stat.ppid), f.tids()))
        .collect();
    let roots: Vec<(Pid, Pid)> = live
        .iter()
        .filter(|m| opts.pids.contains(&m.pid))
        .map(|m| (m.pid, Pid::from_raw(m.stat.ppid)))
        .collect();
    let shared_with_parent = crate::task::sharing::judge_shared(&threads, &roots)?;
    if let Some(ns) = &mut pidns {
        for (m, f) in live.iter().zip(&frozen) {
            ns.add_threads(m.pid, f.tids())?;
        }
        // Before the Landlock checks' probes fork there (they put back the last pid they
        // find).
        ns.read_numbers()?;
    }
    let fd_opts = FdDumpOptions {
        shell_job: opts.shell_job,
    };
    let mut files = FileTable::new();
    if let Some(limit) = opts.ghost_limit {
        files.limit_ghosts(limit);
    }
    let mut cores = Vec::new();
    let mut pstree = Vec::new();
    // Per live task: its controlling terminal and that terminal's foreground group.
    let mut ttys: Vec<(u32, i32)> = Vec::new();
    let mut pages_bytes = 0;
    // Sockets first, of every task: one network lock over every connection goes on before
    // any is captured. Dropped on a failure below, it puts the connections back and
    // releases the lock.
    let live_pids: Vec<Pid> = live.iter().map(|m| m.pid).collect();
    let mut sockets_held = DumpSockets::collect(
        &live_pids,
        &SocketDumpOptions {
            tcp_established: opts.tcp_established,
            skip_in_flight: opts.tcp_skip_in_flight,
            tcp_close: opts.tcp_close,
            lock_id: lock_id.clone(),
            leave_running,
        },
        |reusing| {
            if let Some(guardian) = &guardian {
                guardian.note_reuse_addr(reusing);
            }
        },
    )?;
    if sockets_held.has_connections() {
        crate::interrupt::pause_point("locked");
        hooks.set(hooks::env::NETWORK_LOCK, lock_id.as_str());
        hooks.run(Stage::NetworkLock, &opts.pids)?;
    }
    interrupted("while capturing sockets")?;
    // The signal owners an fd may name: any process, thread or group of the dump.
    let mut members = DumpMembers::default();
    for (m, frozen) in live.iter().zip(&frozen) {
        members.add(m.pid, m.stat.pgid, frozen.tids());
        if shared_with_parent.files.contains(&m.pid) {
            members.add_table_of_parent(m.pid, Pid::from_raw(m.stat.ppid));
        }
    }
    // The processes a pidfd may name and come back on: zombies too (each is made again, left
    // unreaped, before the pidfds are pointed).
    files.add_processes(
        tree.iter().map(|m| m.pid),
        frozen.iter().flat_map(|f| f.tids().iter().copied()),
    );
    // The processes the threads' Landlock checks name, made as needed (none for threads with
    // CAP_SYS_PTRACE in cryo's PID namespace), gone once every task is collected.
    let mut probes = crate::task::landlock::Probes::new(pidns.as_ref().and_then(|n| n.init()));
    let mut mount_namespaces = collect::MountNamespaces::default();
    // The stopped children whose stop their parent collected, and what a stop made again at
    // restore would do to each parent's SIGCHLD.
    let mut collected_stops: Vec<Pid> = Vec::new();
    let mut stop_notices: std::collections::HashMap<Pid, crate::task::signals::StopNotice> =
        Default::default();
    // Each live task's signal queues as its state was collected (in `live`'s order).
    let mut signals_read = Vec::with_capacity(live.len());
    for ((m, frozen), sockets) in live.iter().zip(&frozen).zip(sockets_held.tasks()) {
        let pid = m.pid;
        let _span = info_span!("task", %pid).entered();
        // Read again now that it cannot change under us.
        let stat = proc::stat(pid)?;
        let mut remote =
            Remote::borrow(pid).map_err(|e| Error::sys(pid, "take the main thread", e))?;
        let scratch =
            Scratch::map(&mut remote).map_err(|e| Error::sys(pid, "map a scratch page", e))?;
        // The pre-copy's last scan (the pages it sent unchanged, and which "uw" VmFlags are
        // cryo's), then the task's state but its memory, beside the reading of smaps: its
        // walk of the page tables takes a GiB's process 10-15 ms, the task's calls (two
        // ptrace stops each) as long, while the CPUs wait for the other.
        let overlap = precopy.is_some();
        let mut collected_here = Vec::new();
        let (views, state) = memory::dump::VmaViews::read_beside(pid, overlap, || {
            let earlier = precopy.as_deref_mut().map(|p| p.finish(pid)).transpose()?;
            let (core, queued) = collect(
                pid, &stat, images, &fd_opts, frozen, &remote, &scratch, sockets, &mut files,
                &members,
                pidns.as_ref().map(|n| n.inode),
                &mut probes,
                // CRIU's external mounts are the root's namespace's (a namespace a process
                // made inside it has its own mounts at those points, or copies of them).
                if opts.pids.contains(&pid) {
                    &opts.external_mounts
                } else {
                    &[]
                },
                &mut mount_namespaces,
            )?;
            // What its parent's waitid reads of its children's stops, asked of it while its
            // main thread is borrowed (the children are frozen too), each child named as it
            // sees it (in its PID namespace: NSpid at its depth).
            let kids: Vec<_> = tree
                .iter()
                .filter(|c| c.stat.ppid == pid.as_raw() && !c.is_zombie())
                .collect();
            // Its NSpid read only for a parent (one /proc read per task otherwise).
            let depth = if kids.is_empty() {
                0
            } else {
                crate::task::pidns::nspid(pid)?.len()
            };
            let children = kids
                .into_iter()
                .map(|c| {
                    let seen_as = crate::task::pidns::nspid(c.pid)?
                        .get(depth.wrapping_sub(1))
                        .copied()
                        .unwrap_or(c.pid.as_raw());
                    Ok((c.pid, seen_as, c.stat.state == 'T'))
                })
                .collect::<Result<Vec<_>>>()?;
            collected_here = tree::collected_stops(pid, &remote, &scratch, &children)?;
            if !opts.pids.contains(&pid) {
                tree::refuse_pdeath_of_thread_child(pid, Pid::from_raw(m.stat.ppid), &core)?;
            }
            Ok::<_, Error>((earlier.flatten(), core, queued))
        });
        debug!(%pid, us = frozen_at.elapsed().as_micros() as u64, "frozen: VMA views, pre-copy's last scan and the task's state read");
        let collected = state.and_then(|(earlier, core, queued)| {
            let mm = collect_memory(
                pid,
                &stat,
                images,
                &remote,
                &scratch,
                &mut files,
                !opts.check_only,
                earlier.as_ref(),
                views?,
            )?;
            Ok((core, mm, queued))
        });
        // Whatever happened, the task gets its own state back before anything else.
        let unmapped = scratch.unmap(&remote);
        let released = remote.release();
        let (mut core, mm, queued) = collected?;
        signals_read.push(queued);
        collected_stops.extend(collected_here);
        stop_notices.insert(pid, crate::task::signals::StopNotice::of(&core));
        crate::task::cgroups::check_roots(pid, &core, &opts.cgroup_roots)?;
        core.files_of_parent = shared_with_parent.files.contains(&pid);
        core.fs_of_parent = shared_with_parent.fs.contains(&pid);
        unmapped.map_err(|e| Error::sys(pid, "unmap the scratch page", e))?;
        released.map_err(|e| Error::sys(pid, "put the main thread back", e))?;
        pages_bytes += mm.pages_file.as_ref().map_or(0, |f| f.size);
        if opts.check_only {
            // What a full dump would write.
            pages_bytes += mm.pages.iter().map(|r| r.npages * memory::PAGE).sum::<u64>();
        }
        crate::interrupt::pause_point("collected");
        interrupted("while collecting process state")?;
        let mut entry = task::process_entry(pid, &stat, frozen.tids());
        // The state before the freeze (the frozen task reads as traced now).
        entry.stopped = m.stat.state == 'T' || frozen.group_stopped();
        entry.stop_signal = frozen
            .stop_signal()
            .filter(|_| entry.stopped)
            .map_or(0, |sig| sig as i32);
        // The stop signals pending to it while stopped, as /proc showed them before the
        // freeze, apart from its queues (the restore sends them again once it is stopped).
        // Running, a SIGSTOP pending to it as it was frozen (sent before, not yet taken: a
        // remote call may have taken it since) is recorded so too: the restore sends it again
        // before it lets the process go, which takes it and stops.
        match (entry.stopped, frozen.pending_stops()) {
            (true, Some(stops)) => {
                stops.record(&mut entry);
                crate::task::signals::leave_out_stops(&mut core);
            }
            (false, Some(stops)) => {
                stops.record(&mut entry);
                crate::task::signals::leave_out_recorded(&mut core, stops);
            }
            (_, None) => {}
        }
        // A stop its parent collected, or whose SIGCHLD the parent would see again, is made
        // again at restore while the parent is restored (its parent's notice read first:
        // parents come before children).
        let notice = stop_notices.get(&Pid::from_raw(m.stat.ppid));
        if let (true, Some(&notice)) = (entry.stopped, notice) {
            let collected = collected_stops.contains(&pid);
            let signal = frozen.stop_signal().map_or(libc::SIGSTOP, |s| s as i32);
            tree::refuse_unrepeatable_stop(pid, signal, collected, notice)?;
            entry.stop_collected = collected;
        }
        pstree.push(entry);
        ttys.push((stat.tty_nr, stat.tpgid));
        cores.push((core, mm));
    }
    if probes.made() > 0 {
        debug!(probes = probes.made(), "Landlock checks: probe processes made and ended");
    }
    drop(probes);
    // Each network namespace other than cryo's, read whole once (the first process in it).
    let mut net_namespaces: std::collections::HashMap<u64, cryo_proto::image::NetNamespace> =
        std::collections::HashMap::new();
    for (m, (core, _)) in live.iter().zip(cores.iter_mut()) {
        let Some(inode) = core.netns.as_ref().map(|n| n.inode) else {
            continue;
        };
        let ns = match net_namespaces.entry(inode) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(crate::task::netns::dump(m.pid, inode, &live_pids, &lock_id)?)
            }
        };
        core.netns = Some(ns.clone());
    }
    // Sockets made in another network namespace than their holder's: made there again, or
    // refused (sockets/home.rs).
    let socket_homes = {
        use crate::sockets::home;
        use std::os::unix::fs::MetadataExt;
        let holders: Vec<home::Holder<'_>> = pstree
            .iter()
            .zip(&cores)
            .map(|(e, (core, _))| home::Holder {
                pid: e.pid,
                forker: e.ppid,
                netns: core.netns.as_ref().map(|n| n.inode),
                fds: &core.fds,
            })
            .collect();
        let homes = crate::sockets::foreign_homes(sockets_held.tasks());
        let cryo_netns = match homes.is_empty() {
            true => 0,
            false => std::fs::metadata("/proc/self/ns/net")
                .map_err(|e| Error::target(live[0].pid, format!("stat /proc/self/ns/net: {e}")))?
                .ino(),
        };
        home::place(files.descs(), &holders, &homes, cryo_netns).map_err(crate::files::FileError::from)?
    };
    // The restore places fds of its own above each process's highest: room for them where
    // cryo may number fds (a restore elsewhere checks again, failing before anything is made).
    let ceiling = crate::sys::fd::fd_ceiling();
    let room = crate::sys::fd::restore_fd_room(cores.len(), files.descs().len());
    for (core, _) in &cores {
        if let Some(high) = core.fds.iter().map(|e| e.fd).max() {
            if high as u64 + room > ceiling {
                return Err(Error::target(
                    Pid::from_raw(core.pid),
                    format!(
                        "fd {high} is within {room} of the highest fd number a restore here can \
                         use ({ceiling}: the hard RLIMIT_NOFILE, raised only with \
                         CAP_SYS_RESOURCE up to fs.nr_open): the restore's own fds would find no \
                         room"
                    ),
                ));
            }
        }
    }
    // A lock on a description also held outside the dump would conflict with the restored one.
    let member_pids: std::collections::HashSet<i32> =
        live.iter().map(|m| m.pid.as_raw()).collect();
    let held: Vec<(Pid, &[cryo_proto::image::FileLock])> = cores
        .iter()
        .map(|(core, _)| (Pid::from_raw(core.pid), core.file_locks.as_slice()))
        .collect();
    crate::files::locks::refuse_held_outside(&held, &member_pids)?;
    let tables: Vec<_> = pstree
        .iter()
        .zip(&cores)
        .map(|(e, (core, mm))| (e.ppid, core, mm))
        .collect();
    crate::files::locks::refuse_dropped_in_shared_tables(&tables, files.descs())?;
    drop(tables);
    drop(held);
    // Pty pairs whole, controlling terminals in the dump (or a shell job's).
    let terminals: Vec<crate::files::pty::TtyProcess> = pstree
        .iter()
        .zip(&ttys)
        .map(|(e, &(tty_nr, tpgid))| crate::files::pty::TtyProcess {
            pid: e.pid,
            sid: e.sid,
            pgid: e.pgid,
            tty_nr,
            tpgid,
        })
        .collect();
    let line_terminals = files.finish_terminals(&terminals, &fd_opts)?;
    drop(terminals);
    for e in &mut pstree {
        e.controlling_terminal = line_terminals.get(&e.sid).cloned();
    }
    // Descriptors in flight become descriptions; accept queues checked.
    crate::sockets::resolve(sockets_held.tasks_mut(), &mut files, images, leave_running)?;
    // Both ends of every unix connection must be in the dump (or be let go: --ext-unix-sk).
    let external = crate::sockets::check_unix_peers(sockets_held.tasks(), opts.ext_unix_sk)?;
    files.mark_external_peers(&external);
    // Every end is known now, those in flight too.
    files.warn_pipes_shared_outside();
    {
        let parent: std::collections::HashMap<Pid, Pid> = live
            .iter()
            .map(|m| (m.pid, Pid::from_raw(m.stat.ppid)))
            .collect();
        let tree_of = |mut pid: Pid| {
            for _ in 0..parent.len() + 1 {
                if opts.pids.contains(&pid) {
                    return Some(pid);
                }
                pid = *parent.get(&pid)?;
            }
            None
        };
        let pids: Vec<Pid> = live.iter().map(|m| m.pid).collect();
        crate::sockets::check_accepted_in_one_tree(sockets_held.tasks(), &pids, tree_of)?;
    }
    for m in tree.iter().filter(|m| m.is_zombie()) {
        let mut entry = task::process_entry(m.pid, &m.stat, &[]);
        entry.zombie = true;
        entry.exit_status = m.stat.exit_code;
        entry.zombie_comm = m.stat.comm.clone();
        if let Ok(status) = crate::proc::status(m.pid) {
            // As its user namespace names them (the one the restore forks it in): cryo's view
            // through the zombie's maps; none where one is not mapped.
            let c = crate::task::security::creds_from_status(&status);
            let inside = |host: [u32; 3], map: &str| -> Vec<u32> {
                let map = std::fs::read_to_string(proc::dir(m.pid).join(map)).unwrap_or_default();
                let inside: Option<Vec<u32>> = host
                    .iter()
                    .map(|&id| crate::task::userns::to_inside(&map, id))
                    .collect();
                inside.unwrap_or_default()
            };
            entry.zombie_uids = inside([c.uid, c.euid, c.suid], "uid_map");
            entry.zombie_gids = inside([c.gid, c.egid, c.sgid], "gid_map");
            // The rest of what its /proc/PID/status shows.
            let gid_map =
                std::fs::read_to_string(proc::dir(m.pid).join("gid_map")).unwrap_or_default();
            let groups: Option<Vec<u32>> = c
                .groups
                .iter()
                .map(|&g| crate::task::userns::to_inside(&gid_map, g))
                .collect();
            let mask = |key: &str| crate::proc::status_mask(&status, key).unwrap_or(0);
            if let Some(groups) = groups {
                entry.zombie_status = true;
                entry.zombie_groups = groups;
                entry.zombie_sig_blocked = mask("SigBlk");
                entry.zombie_sig_ignored = mask("SigIgn");
                entry.zombie_sig_caught = mask("SigCgt");
                entry.zombie_affinity = crate::sys::sched::get_affinity(m.pid).unwrap_or_default();
            }
        }
        pstree.push(entry);
    }
    // From here the images name processes as their PID namespace does (the host's pids stay
    // cryo's, in `live`).
    let roots: Vec<Pid> = match &pidns {
        Some(ns) => ns.translate_tree(&opts.pids, &mut pstree, &mut cores, images.path())?,
        None => opts.pids.clone(),
    };
    // A leader that exited has a free pid (in cryo's PID namespace: a tree in one of its own
    // names no process outside it).
    let gone = |pid: i32| pidns.is_none() && !crate::sys::process::exists(pid);
    let with_ctty: std::collections::HashSet<i32> = pstree
        .iter()
        .zip(&ttys)
        .filter(|(_, &(tty_nr, _))| tty_nr != 0)
        .map(|(e, _)| e.pid)
        .collect();
    if pidns.is_none() && !leave_running {
        tree::refuse_leaders_held_outside(tree, &opts.pids)?;
    }
    tree::refuse_other_exit_signals(tree, &opts.pids)?;
    tree::refuse_core_dumped_zombies(tree)?;
    tree::check_sessions(
        &mut pstree,
        &roots,
        opts.shell_job,
        gone,
        |pid| with_ctty.contains(&pid),
        pidns.is_some(),
    )?;
    // A process its session's leader forks at restore (pstree's live processes are `cores`'):
    // what the fork would share is the leader's; a child subreaper between its forker and the
    // init would be the orphan's new parent (the restore sets that flag once it has forked
    // its own children, which may be before the leader's helper ends).
    for (k, e) in pstree.iter().enumerate().filter(|(_, e)| e.forked_by_session_leader) {
        let core = cores.get(k).map(|(c, _)| c);
        let shares = [
            (core.is_some_and(|c| c.files_of_parent), "fd table"),
            (core.is_some_and(|c| c.fs_of_parent), "working directory and root"),
        ];
        if let Some(&(_, what)) = shares.iter().find(|(s, _)| *s) {
            return Err(DumpError::SessionLeaderForkShares {
                pid: Pid::from_raw(e.pid),
                sid: e.sid,
                what,
            }
            .into());
        }
        // The forker's ancestors below the root (whose ppid is 0 in the image).
        let mut at = pstree
            .iter()
            .find(|x| x.pid == crate::restore::load::forked_by(e))
            .map(|x| x.ppid);
        for _ in 0..pstree.len() {
            let Some(k) = at.and_then(|p| pstree.iter().position(|x| x.pid == p && x.ppid != 0))
            else {
                break;
            };
            let subreaper = cores
                .get(k)
                .and_then(|(c, _)| c.attrs.as_ref())
                .is_some_and(|a| a.child_subreaper);
            if subreaper {
                return Err(DumpError::SessionLeaderForkSubreaper {
                    pid: Pid::from_raw(e.pid),
                    sid: e.sid,
                    subreaper: pstree[k].pid,
                }
                .into());
            }
            at = Some(pstree[k].ppid);
        }
    }
    {
        use crate::task::namespaces::{
            check_tree, check_tree_given, CGROUP, IPC_IN_USER, MNT, NET, SESSION_KEYRING, TIME,
            USER, UTS,
        };
        let made = |inode: fn(&cryo_proto::image::TaskCore) -> Option<u64>| -> Vec<(i32, i32, Option<u64>)> {
            let tasks = pstree.iter().zip(&cores);
            tasks.map(|(e, (core, _))| (e.pid, e.ppid, inode(core))).collect()
        };
        check_tree(UTS, &made(|c| c.uts.as_ref().map(|u| u.inode)))?;
        // Children get the time namespace made for them, if their parent made one.
        let time_given = |pid: i32| {
            let (_, (core, _)) = pstree.iter().zip(&cores).find(|(e, _)| e.pid == pid)?;
            Some(crate::task::namespaces::children_time(core))
        };
        check_tree_given(TIME, &made(|c| c.time.as_ref().map(|t| t.inode)), time_given)?;
        check_tree(CGROUP, &made(|c| c.cgroupns.as_ref().map(|n| n.inode)))?;
        check_tree(NET, &made(|c| c.netns.as_ref().map(|n| n.inode)))?;
        check_tree(SESSION_KEYRING, &made(|c| crate::task::keyrings::serial(c).map(|s| s as u64)))?;
        let mounts = made(|c| c.mnt.as_ref().map(|n| n.inode));
        check_tree(MNT, &mounts)?;
        crate::task::mount_ns::refuse_rejoined_in_user_namespace(&mounts, |pid| {
            pstree
                .iter()
                .zip(&cores)
                .any(|(e, (core, _))| e.pid == pid && core.userns.is_some())
        })?;
        check_tree(USER, &made(|c| c.userns.as_ref().map(|n| n.inode)))?;
        check_tree(
            IPC_IN_USER,
            &made(crate::task::namespaces::ipc_in_user_namespace),
        )?;
    }
    // A zombie still shows its user namespace (its credentials hold it): one of the dump's is
    // a member.
    let dumped_pids: Vec<Pid> = tree.iter().map(|m| m.pid).collect();
    crate::task::userns::refuse_outsiders(
        &live
            .iter()
            .zip(&cores)
            .filter_map(|(m, (core, _))| Some((m.pid, core.userns.as_ref()?.inode)))
            .collect::<Vec<_>>(),
        &dumped_pids,
    )?;
    crate::task::mount_ns::refuse_outsiders(
        &live
            .iter()
            .zip(&cores)
            .filter_map(|(m, (core, _))| Some((m.pid, core.mnt.as_ref()?.inode)))
            .collect::<Vec<_>>(),
        &live_pids,
    )?;
    crate::task::mount_ns::bind_below_shared_roots(
        &mut pstree
            .iter()
            .zip(cores.iter_mut())
            .map(|(e, (core, _))| {
                (Pid::from_raw(e.pid), Pid::from_raw(e.ppid), core.mnt.as_mut())
            })
            .collect::<Vec<_>>(),
    )?;
    crate::task::mount_ns::refuse_nested_pivoted(
        &pstree
            .iter()
            .zip(&cores)
            .map(|(e, (core, _))| {
                (Pid::from_raw(e.pid), Pid::from_raw(e.ppid), core.mnt.as_ref())
            })
            .collect::<Vec<_>>(),
    )?;
    crate::task::mount_ns::check_propagation(
        &live
            .iter()
            .zip(&cores)
            .filter_map(|(m, (core, _))| Some((m.pid, core.mnt.as_ref()?)))
            .collect::<Vec<_>>(),
    )?;
    // SysV semaphore sets and message queues, and what of the processes' IPC state cannot
    // come back (refused here, before anything is killed).
    let attached: Vec<(u64, i32)> = cores
        .iter()
        .flat_map(|(core, mm)| {
            mm.vmas
                .iter()
                .filter(|v| v.kind == cryo_proto::image::VmaKind::SysvShm as i32)
                .map(|v| (core.ipc_ns, v.sysv_shmid))
        })
        .collect();
    crate::ipc::dump(&live_pids, &attached, images)?;
    let vdso = memory::vdso_identity(live[0].pid)?;
    let mut aio_watch = crate::files::aio::Watch::default();
    for (m, (_, mm)) in live.iter().zip(&cores) {
        aio_watch.add(m.pid, mm);
    }
    if !leave_running {
        // What clients sent before being accepted: reached by accept(), so only now.
        crate::sockets::capture_accept_queues(sockets_held.tasks_mut(), &mut files, images)?;
    }
    let mut descs = files.into_descs();
    crate::sockets::home::apply(&mut descs, &socket_homes);
    // Files on the mounts a mount namespace has of its own are found there at restore.
    let mut held_through_binds = Vec::new();
    for (m, (core, mm)) in live.iter().zip(&cores) {
        if let Some(ns) = &core.mnt {
            let parent = Some(Pid::from_raw(m.stat.ppid)).filter(|p| live_pids.contains(p));
            // What it shares with its parent it inherits (restore/plan.rs): opened there.
            let parents_fds: std::collections::HashSet<u32> = live
                .iter()
                .zip(&cores)
                .find(|(p, _)| Some(p.pid) == parent)
                .map(|(_, (c, _))| c.fds.iter().map(|f| f.file_id).collect())
                .unwrap_or_default();
            let ids = core.fds.iter().map(|f| f.file_id);
            let ids = ids.filter(|id| !parents_fds.contains(id));
            let ids = ids.chain(mm.vmas.iter().map(|v| v.file_id)).chain([mm.exe_file_id]);
            let held =
                crate::task::mount_ns::mark_files(m.pid, parent, ns, &ids.collect(), &mut descs)?;
            if !held.is_empty() {
                held_through_binds.push((m.pid, held));
            }
        }
    }
    // The paths where the process making a namespace again holds removed objects its binds
    // show: it opens them there while it makes them again for the binds.
    for (pid, held) in held_through_binds {
        // The process making its namespace: its topmost ancestor in it (itself, or the first
        // one up whose parent is in another namespace or not in the dump).
        let ns_of = |pid: i32| {
            let at = live.iter().position(|m| m.pid.as_raw() == pid)?;
            Some((at, cores[at].0.mnt.as_ref().map(|n| n.inode)))
        };
        let mut maker = ns_of(pid.as_raw()).map(|(at, _)| at);
        while let Some(at) = maker {
            let inode = cores[at].0.mnt.as_ref().map(|n| n.inode);
            match ns_of(live[at].stat.ppid) {
                Some((up, theirs)) if theirs == inode => maker = Some(up),
                _ => break,
            }
        }
        // A bind its parent's namespace has too is found there, not made: refused.
        let parents_keys: Vec<String> = maker
            .and_then(|at| ns_of(live[at].stat.ppid))
            .and_then(|(up, _)| cores[up].0.mnt.as_ref())
            .map(|n| n.mounts.iter().map(|m| m.key.clone()).collect())
            .unwrap_or_default();
        let core = maker.map(|at| &mut cores[at]);
        if let Some(ns) = core.and_then(|(c, _)| c.mnt.as_mut()) {
            if let Some(&(index, ref path)) = held
                .iter()
                .find(|(i, _)| parents_keys.contains(&ns.mounts[*i].key))
            {
                let b = &ns.mounts[index];
                return Err(crate::task::mount_ns::MountNsError::Refused {
                    pid,
                    inode: ns.inode,
                    mount: format!("bind {} on {}", b.bind_source, b.point),
                    detail: format!(
                        "shows removed {path} the process holds too, and is its parent's \
                         namespace's bind, found there at restore, not made again with it: not \
                         made again"
                    ),
                }
                .into());
            }
            for (index, path) in held {
                ns.mounts[index].removed_held_at.push(path);
            }
        }
    }
    for (core, mm) in &cores {
        let pid = Pid::from_raw(core.pid);
        images.write(&names::core(pid), ImageKind::Core, std::slice::from_ref(core))?;
        images.write(&names::mm(pid), ImageKind::Mm, std::slice::from_ref(mm))?;
    }
    {
        use cryo_proto::image::file_desc::Kind;
        let removed_dirs: std::collections::HashMap<u32, (u64, u64)> = descs
            .iter()
            .filter_map(|d| match &d.kind {
                Some(Kind::Directory(r)) if r.deleted => Some((d.id, (r.dev, r.ino))),
                _ => None,
            })
            .collect();
        let open_removed: Vec<(i32, u64, u64)> = cores
            .iter()
            .flat_map(|(c, _)| {
                c.fds
                    .iter()
                    .filter_map(|f| removed_dirs.get(&f.file_id))
                    .map(|&(dev, ino)| (c.pid, dev, ino))
            })
            .collect();
        let all: Vec<&cryo_proto::image::TaskCore> = cores.iter().map(|(c, _)| c).collect();
        crate::task::process::refuse_shared_removed_cwd(&all, &open_removed)?;
    }
    if let Some(ns) = &pidns {
        let holders: std::collections::HashMap<u32, i32> = live
            .iter()
            .zip(&cores)
            .flat_map(|(m, (core, _))| core.fds.iter().map(move |f| (f.file_id, m.pid.as_raw())))
            .collect();
        ns.translate_descs(&mut descs, |id| holders.get(&id).copied().unwrap_or(0))?;
    }
    // An epoll in flight the restore could not make is refused before the target is touched
    // (the pids of the image on both sides: its holders' and its targets').
    if descs.iter().any(|d| matches!(d.kind, Some(cryo_proto::image::file_desc::Kind::Epoll(_)))) {
        let links = crate::sockets::UnixLinks::build(&descs)?;
        let held: Vec<(i32, &[cryo_proto::image::FdEntry])> =
            cores.iter().map(|(c, _)| (c.pid, c.fds.as_slice())).collect();
        crate::files::epoll::check_in_flight(&descs, &held, &links)?;
    }
    images.write(names::FILES, ImageKind::Files, &descs)?;
    images.write(names::PSTREE, ImageKind::Pstree, &pstree)?;
    let has_connections = sockets_held.has_connections();
    // --check-only: the target is let go before its files are hashed (that takes longer
    // than reading its state), then check.img goes before the inventory.
    let mut sockets_held = Some(sockets_held);
    let mut frozen = Some(frozen);
    let mut released_after = None;
    if opts.check_only {
        let released_lock = match sockets_held.take() {
            Some(held) => held.finish_running()?,
            None => None,
        };
        drop(frozen.take());
        drop(released_lock);
        released_after = Some(frozen_at.elapsed());
        if let Some(guardian) = guardian.take() {
            guardian.done();
        }
        let check = crate::precheck::record(&cores, &pstree, &descs);
        images.write(names::CHECK, ImageKind::MigrationCheck, &[check])?;
    }
    // A killing dump reads the signal queues once more right before its kill.
    let mut late_signals = match (&frozen, leave_running) {
        // `live`'s order: cores, queues, frozen tasks, and the first entries of pstree.
        (Some(frozen), false) => Some(late_signals::LateSignals::new(
            cores
                .into_iter()
                .zip(signals_read)
                .zip(frozen)
                .zip(&pstree)
                .map(|((((core, _), seen), f), entry)| {
                    (f.pid(), f.tids().to_vec(), entry, core, seen)
                }),
        )),
        _ => {
            drop(cores);
            None
        }
    };
    drop(descs);
    let checkpoint_id = opts.checkpoint_id.clone().unwrap_or_else(checkpoint_id);
    // The inventory last: a directory without one is not an image.
    images.write(
        names::INVENTORY,
        ImageKind::Inventory,
        &[Inventory {
            checkpoint_id: checkpoint_id.clone(),
            created_unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            kernel_release: nix::sys::utsname::uname()
                .map(|u| u.release().to_string_lossy().into_owned())
                .unwrap_or_default(),
            cryo_version: env!("CARGO_PKG_VERSION").into(),
            root_pids: roots.iter().map(|p| p.as_raw()).collect(),
            pid_ns: pidns.as_ref().map_or(0, |n| n.inode),
            pid_ns_pid_max: pidns.as_ref().map_or(0, |n| n.pid_max),
            pid_ns_last_pid: pidns.as_ref().map_or(0, |n| n.last_pid),
            cgroup_roots: opts.cgroup_roots.clone(),
            vdso_size: vdso.0,
            vdso_crc32c: vdso.1,
            shell_job: opts.shell_job,
            tcp_established: opts.tcp_established,
            leave_running,
            check_only: opts.check_only,
            network_lock: if !leave_running && has_connections {
                lock_id
            } else {
                String::new()
            },
        }],
    )?;
    hooks.set(hooks::env::CHECKPOINT_ID, checkpoint_id.as_str());
    hooks.run(Stage::PostDump, &opts.pids)?;
    debug!(us = frozen_at.elapsed().as_micros() as u64, "frozen: images written");
    crate::interrupt::pause_point("written");
    interrupted("after writing the images")?;
    // A completion that reached an AIO ring after it was read is missing from the image:
    // its request was in flight. Checked as late as a failure still rolls back.
    if frozen.is_some() {
        aio_watch.check()?;
    }
    // The signals queued since the processes' state was read, into the image (before it
    // leaves), as late as a refusal still rolls back.
    if let Some(late) = &mut late_signals {
        let t = Instant::now();
        late.take(images)?;
        debug!(us = t.elapsed().as_micros() as u64, "frozen: signal queues read again");
    }
    // The images leave (a stream to a receiver): until it confirms them, any failure rolls
    // the dump back here like every other (the guards below drop in order).
    if let Some(commit) = &opts.commit {
        let commitment = Commitment {
            guardian: guardian.as_ref(),
        };
        (commit.0)(images.path(), &checkpoint_id, &commitment)
            .map_err(|why| DumpError::Commit { why })?;
        if let Some(late) = &late_signals {
            late.warn_lost();
        }
        debug!(us = frozen_at.elapsed().as_micros() as u64, "frozen: images committed");
    }
    // The point of no return (the receiver holds the images): a signal from here on waits
    // for the end of the dump.
    // Frozen until released or killed; the wait for the killed to exit is not freezing.
    let frozen_for = match (released_after, frozen, sockets_held) {
        // --check-only: let go before the files were hashed.
        (Some(after), _, _) => after,
        (None, Some(frozen), Some(mut sockets_held)) if !leave_running => {
            // Back in repair mode to close silently with their processes; a failure lets the
            // tree run on (the connections out of repair mode again).
            sockets_held.silence_before_kill()?;
            // The point of no return: the guardian kills the tree too if cryo dies now.
            if let Some(guardian) = &guardian {
                guardian.commit();
            }
            let dying = crate::freeze::kill_tree(frozen)?;
            let frozen_for = frozen_at.elapsed();
            if let Some(id) = sockets_held.finish_killed() {
                info!(
                    lock = id,
                    "connections held silent by the network lock until restore"
                );
            }
            dying.into_iter().for_each(crate::freeze::Dying::wait_gone);
            // Closed: the guardian kills what is left (nothing) and exits.
            drop(guardian);
            frozen_for
        }
        (None, frozen, sockets_held) => {
            let released_lock = match sockets_held {
                Some(held) => held.finish_running()?,
                None => None,
            };
            drop(frozen);
            // The downtime ends here: the processes run and their packets flow. The lock's
            // socket closing (an RCU grace period, see finish_running) and the guardian's
            // exit, waited for next, happen while they run.
            let frozen_for = frozen_at.elapsed();
            drop(released_lock);
            if let Some(guardian) = guardian {
                guardian.done();
            }
            frozen_for
        }
    };
    let summary = DumpSummary {
        pids: tree.iter().map(|m| m.pid).collect(),
        pages_bytes,
        frozen: frozen_for,
        total: started.elapsed(),
        frozen_at: Some(frozen_at),
        pre_copy_rounds: precopy.map(|p| p.rounds.bytes.clone()).unwrap_or_default(),
    };
    info!(
        processes = tree.len(),
        pages_bytes,
        frozen_ms = summary.frozen.as_secs_f64() * 1e3,
        "dumped"
    );
    Ok(summary)
}

/// Fails with [`DumpError::Interrupted`] when SIGINT or SIGTERM is pending.
fn interrupted(stage: &'static str) -> Result<()> {
    crate::interrupt::check(stage)
        .map_err(DumpError::from)
        .map_err(Error::from)
}

fn checkpoint_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| format!("{:x}", std::process::id()))
}

/// Removes what a failed dump wrote: its image files (the directory held none before; any
/// other file, a log, was there before or is not the image's).
fn clear_dir(images: &ImageDir) {
    if let Ok(entries) = std::fs::read_dir(images.path()) {
        for entry in entries.flatten() {
            if crate::image::is_image_file(&entry.file_name()) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}
