//! The restore pipeline: read and check every image before anything starts, fork the process
//! with its original pid, let it open its fds while it still runs cryo code, reshape it into the
//! dumped one through remote syscalls, set its registers and let it go. A failure after the
//! fork kills what was created.
//!
//! Each phase is a type that consumes the one before, so the order cannot be broken:
//!
//! ```text
//! ImageDir -read-> Loaded -plan-> Planned -spawn-> Spawned -reshape-> Reshaped -run-> Running
//!   load.rs        tree.rs,       spawn.rs,         finish.rs          finish.rs
//!                  plan.rs (pure) child.rs (forked)
//! ```
//!
//! `guard.rs` undoes a failed restore (processes; the network lock stays), `guardian.rs` is
//! the process that closes the re-created connections silently whatever ends the restore
//! (cryo killed included), `namespaces.rs` creates the init of new namespaces,
//! `pid_broker.rs` gives pids to processes that may not choose them, `error.rs` says what
//! failed.

pub(crate) mod child;
pub mod error;
pub(crate) mod finish;
pub(crate) mod guard;
pub(crate) mod guardian;
pub(crate) mod load;
pub(crate) mod namespaces;
pub(crate) mod pid_broker;
pub(crate) mod plan;
pub(crate) mod spawn;
pub(crate) mod stand_in;
pub(crate) mod tree;

use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use tracing::{debug, info, info_span};

use self::guard::Unlock;
use self::guardian::RestoreGuardian;
use self::load::Loaded;
use self::namespaces::Namespaces;
use crate::error::{Error, Result};
use crate::hooks::{self, Hooks, Stage};
use crate::image::ImageDir;

/// What `cryo restore` was asked to do: [`RestoreOptions::new`], then set the fields that
/// differ from their defaults (more may come, so the struct cannot be built literally outside).
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
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
    /// Restore TCP connections closed (`--tcp-close`: TCP_CLOSE, shut both ways) instead of
    /// live.
    pub tcp_close: bool,
    /// The program run at pre-restore, post-restore, network-unlock and post-resume
    /// (`--action-script`).
    pub action_script: Option<crate::hooks::ActionScript>,
    /// How long a restored connection's peer has to answer the probe sent once the network
    /// lock is gone (`--peer-timeout`); `None`: [`DEFAULT_PEER_TIMEOUT`](crate::sockets::peers::DEFAULT_PEER_TIMEOUT);
    /// zero: no probe.
    pub peer_timeout: Option<Duration>,
    /// Signal queued (sigqueue, si_value = the count) to every restored process with broken
    /// connections (`--notify-signal`).
    pub notify_signal: Option<i32>,
    /// How the processes' cgroups are treated (`--manage-cgroups`): joined, made when
    /// missing, written, or left alone.
    pub cgroups: crate::task::cgroups::CgroupMode,
    /// New roots for the processes' cgroups (CRIU's `--cgroup-root`): in a hierarchy one
    /// names, each cgroup goes below it as it was below the dump's root.
    pub cgroup_roots: Vec<cryo_proto::image::CgroupRoot>,
    /// The paths external mounts are bound from (CRIU's `--external mnt[KEY]:PATH`), and a
    /// pivoted mount namespace's root (`--root`).
    pub external: crate::task::mount_ns::ExternalPaths,
    /// The names and bridges the peers of veths outside come back with (CRIU's `--external
    /// veth[INNER]:OUTER@BRIDGE`), instead of the dumped ones.
    pub external_links: Vec<crate::task::netns::ExternalLink>,
    /// Root restores an image directory another user owns, on purpose
    /// (`--trust-image-owner`); refused otherwise.
    pub trust_image_owner: bool,
    /// Use a file whose device, inode, size, mtime, mode or owner differ from what the dump
    /// saw (`--accept-changed-files`), with a warning, instead of refusing the restore.
    pub accept_changed_files: bool,
    /// The image comes from another host (a migration): install its network lock here over
    /// its connections before any socket is made, so that nothing reaches them, and nothing
    /// of them leaves, until the lock is released; a restore that fails removes it again
    /// (unless its gate failed with [`KeepLock`]).
    pub lock_here: bool,
    /// Called once every process is restored and stopped, with its connections still locked
    /// (after post-restore, before the lock goes): the restore goes on only when it returns
    /// Ok (the migration's "go"); its error fails the restore, which kills what it created.
    pub gate: Option<RestoreGate>,
    /// The raw files' checksums were checked by the caller as it wrote the image (the
    /// receiver of a migration, file by file as they arrived, and the merge of pre-copy
    /// rounds from those): the restore checks their sizes, not their checksums again.
    pub raw_checked: bool,
    /// cryo's warm memory for this image (a pre-copy migration's receiver,
    /// memory/warm.rs): the processes it forks inherit those pages instead of having them
    /// copied in.
    pub warm: Option<Arc<crate::memory::warm::WarmMemory>>,
    /// Descriptions taken from fds of cryo's caller instead of made (CRIU's `--inherit-fd
    /// fd[N]:RESOURCE`, files/inherit.rs): an anonymous pipe or a file shared with a process
    /// outside the dump comes back connected to fd N.
    pub inherit_fds: Vec<crate::files::InheritFd>,
}

/// The error a [`RestoreGate`] answers with: it says which step failed.
pub type GateError = Box<dyn std::error::Error + Send + Sync>;

/// A gate's error that leaves the lock installed here ([`RestoreOptions::lock_here`]) after the
/// restore failed: the gate heard nothing (a timeout, a lost connection), so the connections'
/// peers may be talking to this host already; dropping their packets keeps them alive for
/// the source, where a reset would end them.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct KeepLock(pub GateError);

/// What a restore calls between "every process whole, stopped, connections locked" and
/// "unlock, probe, run", with the root pids as cryo sees them.
#[derive(Clone)]
pub struct RestoreGate(Arc<GateFn>);

/// The function behind a [`RestoreGate`].
type GateFn = dyn Fn(&[Pid]) -> std::result::Result<(), GateError> + Send + Sync;

impl RestoreGate {
    /// A gate running `f(root_pids)`.
    pub fn new(
        f: impl Fn(&[Pid]) -> std::result::Result<(), GateError> + Send + Sync + 'static,
    ) -> Self {
        Self(Arc::new(f))
    }
}

impl std::fmt::Debug for RestoreGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RestoreGate")
    }
}

impl RestoreOptions {
    /// A restore of `images_dir`, every option at its default (waiting for the processes, in
    /// the host's namespaces, connections restored live, the default peer timeout).
    pub fn new(images_dir: impl Into<PathBuf>) -> Self {
        Self {
            images_dir: images_dir.into(),
            ..Self::default()
        }
    }
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

/// Restores the image directory `opts.images_dir`; the processes run when this returns.
/// The fds given with [`RestoreOptions::inherit_fds`] are released once it ends, whatever the
/// outcome (closed; 0, 1 and 2 made /dev/null), as CRIU closes its own: a pipe's reader sees
/// its end of file once the restored processes close their ends, not when cryo exits.
pub fn restore(opts: &RestoreOptions) -> Result<Restored> {
    let restored = restore_tree(opts);
    crate::files::inherit::release(&opts.inherit_fds);
    restored
}

/// [`restore`], but for the release of the fds given.
fn restore_tree(opts: &RestoreOptions) -> Result<Restored> {
    let started = Instant::now();
    // Answered between steps (`interrupted`), before the point of no return.
    let _held = crate::interrupt::Held::new();
    let _span = info_span!("restore", dir = %opts.images_dir.display()).entered();
    let mut images = ImageDir::open_trusting(
        &opts.images_dir,
        if opts.trust_image_owner {
            crate::image::OwnerTrust::Foreign
        } else {
            crate::image::OwnerTrust::RootOrSelf
        },
    )?;
    if opts.accept_changed_files {
        images.accept_changed_files();
    }
    match (opts.raw_checked, &opts.warm) {
        (true, Some(_)) => images.raw_checked_lazily(),
        (true, None) => images.raw_checked(),
        (false, _) => {}
    }
    let mut loaded = Loaded::read(images, &opts.inherit_fds)?;
    crate::task::pidns::check_numbers(&loaded.inventory)?;
    let loaded_inventory = loaded.inventory.clone();
    let highest_fd = loaded
        .tasks
        .iter()
        .flat_map(|t| t.core.fds.iter().map(|e| e.fd))
        .max();
    crate::sys::fd::make_room_above(
        highest_fd.unwrap_or(0).max(0) as u64,
        crate::sys::fd::restore_fd_room(loaded.tasks.len(), loaded.descs.len()),
    );
    loaded.adopt_shell_job()?;
    // A root cryo forks itself has cryo as its parent: gone at once with --detach.
    if opts.detach && !opts.pidns && !opts.netns {
        let roots = &loaded.inventory.root_pids;
        if let Some((pid, (tid, signal))) = loaded
            .tasks
            .iter()
            .filter(|t| roots.contains(&t.entry.pid))
            .find_map(|t| Some((t.entry.pid, crate::task::attrs::death_signal(&t.core)?)))
        {
            return Err(error::RestoreError::DetachedDeathSignal { pid, tid, signal }.into());
        }
    }
    crate::task::mount_ns::apply_externals(&mut loaded.tasks, &opts.external)?;
    crate::task::netns::apply_external_links(&mut loaded.tasks, &opts.external_links)?;
    debug!(ms = started.elapsed().as_secs_f64() * 1e3, "images checked");
    let inventory = &loaded.inventory;
    let mut hooks = Hooks::new(opts.action_script.as_ref(), loaded.images.path());
    hooks.set(hooks::env::CHECKPOINT_ID, inventory.checkpoint_id.as_str());
    hooks.set(hooks::env::NETWORK_LOCK, inventory.network_lock.as_str());
    hooks.set(
        hooks::env::IMAGE_PIDS,
        crate::proc::join(&inventory.root_pids),
    );
    // Before anything is touched: a refusal here leaves even the network lock in place.
    hooks.run(Stage::PreRestore, &[])?;
    interrupted("before creating the processes")?;
    if !opts.netns {
        crate::sockets::unix::names::check_abstract_names_free(&loaded.links, &loaded.descs)?;
    }
    // The dump's network lock goes only once every process is whole; a restore that fails or
    // is interrupted before keeps it (peers wait for a retry, or `cryo unlock`).
    let mut unlock = Unlock::new(inventory.network_lock.clone());
    if opts.lock_here && !inventory.network_lock.is_empty() {
        // An image of another host: its lock is installed here, and ours to remove if the
        // restore fails (nothing of these connections belongs to this host then).
        cryo_netns::NetworkLock::install(&inventory.network_lock, &loaded.lock_tuples())
            .map_err(|e| error::RestoreError::LockHere {
                lock: inventory.network_lock.clone(),
                why: e.to_string(),
            })?
            .keep();
        unlock.installed_here();
    }
    // Whatever ends the restore from here on, the connections it re-created close silently,
    // and before any process is killed (guardian.rs).
    let guardian = (!inventory.network_lock.is_empty())
        .then(|| RestoreGuardian::start(&inventory.network_lock, loaded.lock_tuples()))
        .flatten();
    // Every thread gets its dumped CPU mask back last (attrs::restore_sched): the processes
    // may inherit cryo's pinned one meanwhile. An image without masks keeps cryo unpinned.
    let every_mask = loaded.tasks.iter().all(|t| {
        t.core
            .threads
            .iter()
            .all(|th| th.attrs.as_ref().is_some_and(|a| !a.affinity.is_empty()))
    });
    let mut planned = loaded.plan(opts)?;
    if let Some(g) = &guardian {
        planned.guardian_channel = Some(g.channel_at(planned.plan.guardian_slot).as_raw_fd());
    }
    let _colocated = every_mask
        .then(crate::sys::sched::Colocated::here)
        .flatten();
    if let Some(warm) = opts.warm.as_ref().filter(|_| planned.warm.is_some()) {
        warm.inherit().map_err(|e| {
            Error::sys(
                nix::unistd::getpid(),
                "let the roots inherit warm memory",
                e,
            )
        })?;
    }
    let spawned = planned.spawn(Namespaces::new(opts.pidns, opts.netns), guardian)?;
    // The roots hold what they inherited of the warm memory: cryo's copy can go.
    if let Some(warm) = &opts.warm {
        warm.release();
    }
    debug!(
        ms = started.elapsed().as_secs_f64() * 1e3,
        processes = spawned.pids.len(),
        "processes created, fds open"
    );
    crate::task::netns::make_firewalls(
        &spawned.planned.loaded.tasks,
        &spawned.pids,
        &spawned.planned.loaded.inventory.network_lock,
    )?;
    crate::task::mount_ns::mount_procs_and_sysfs(&spawned.planned.loaded.tasks, &spawned.pids)?;
    crate::task::mount_ns::set_propagation(&spawned.planned.loaded.tasks, &spawned.pids)?;
    crate::interrupt::pause_point("spawned");
    interrupted("after creating the processes")?;
    let reshaped = spawned.reshape()?;
    let roots = reshaped.roots();
    // Every process and thread of a PID namespace of the image made: its pid_max and last pid.
    if let [root] = roots[..] {
        crate::task::pidns::restore_numbers(&loaded_inventory, root)?;
    }
    hooks.run(Stage::PostRestore, &roots)?;
    crate::interrupt::pause_point("reshaped");
    interrupted("after rebuilding the processes")?;
    if let Some(gate) = &opts.gate {
        // Whole, stopped, locked: the caller says whether they may run (a migration's go).
        (gate.0)(&roots).map_err(|why| {
            if why.is::<KeepLock>() {
                unlock.keep_installed();
            }
            error::RestoreError::Gate { why }
        })?;
        interrupted("after the go")?;
    }
    interrupted("before releasing the network lock")?;
    // The network-unlock script runs while the lock still holds: its failure undoes with
    // nothing lost.
    if unlock.holds() {
        hooks.run(Stage::NetworkUnlock, &roots)?;
    }
    reshaped.release_namespace_locks()?;
    // `ip netns` names the restored network namespaces as it named the dumped ones.
    reshaped.bind_namespace_handles()?;
    // The point of no return. Once the peers may talk to the restored sockets, going back
    // would drop what these acknowledged: from here on the restore goes forward whatever
    // happens to cryo (a SIGKILL leaves the processes to run, without their notifications).
    reshaped.commit()?;
    crate::interrupt::pause_point("committed");
    // Every process whole and stopped: the connections may talk again. Each is probed (which
    // toggles repair mode: only a stopped owner does not notice), and judged once they run.
    unlock.release();
    if let Some(lock) = unlock.close_later() {
        // Closing its netlink socket only waits for the kernel: off the critical path.
        let _ = std::thread::Builder::new()
            .name("cryo-unlock".into())
            .spawn(move || drop(lock));
    }
    let timeout = match opts.peer_timeout {
        _ if opts.tcp_close => Duration::ZERO,
        Some(t) => t,
        None => crate::sockets::peers::DEFAULT_PEER_TIMEOUT,
    };
    let probing = reshaped.probe(timeout);
    // A signal from here on waits for the end of the restore (and is then discarded).
    crate::interrupt::pause_point("unlocked");
    let running = reshaped.run()?;
    running.notify(probing, opts.notify_signal);
    // They run already; a failure here still kills them, as any failed restore does.
    hooks.run(Stage::PostResume, &roots)?;
    let (roots, init) = running.release();
    let restored = Restored {
        roots,
        elapsed: started.elapsed(),
        init,
    };
    info!(
        roots = ?restored.roots,
        ms = restored.elapsed.as_secs_f64() * 1e3,
        "restored"
    );
    Ok(restored)
}

/// Fails with [`RestoreError::Interrupted`] when SIGINT or SIGTERM is pending.
fn interrupted(stage: &'static str) -> Result<()> {
    crate::interrupt::check(stage)
        .map_err(error::RestoreError::from)
        .map_err(Error::from)
}
