//! The second phase of a restore: the tree planned ([`TreePlan`], pure) and the objects of
//! the whole tree made by cryo before the first fork (shared memory objects, the terminal
//! of a shell job), the processes in creation order.

use std::ops::Range;
use std::os::fd::RawFd;

use super::load::{Loaded, TaskImage};
use super::plan::{PlanInput, TreePlan};
use crate::error::Result;
use crate::files;
use crate::memory::premap::{self, Staged, WarmInherited};

/// A restore planned: what every process needs is known, the tree's shared objects exist,
/// no process does yet.
pub(crate) struct Planned {
    /// The images, the live processes now in creation order (parents before children): the
    /// plan's task positions index them.
    pub loaded: Loaded,
    pub plan: TreePlan,
    /// TCP connections restored reset (`--tcp-close`).
    pub tcp_close: bool,
    /// The shared memory objects, made by cryo.
    pub shared: files::SharedObjects,
    /// The SysV IPC objects (segments, semaphore sets, message queues), made or found again.
    pub ipc: crate::ipc::Restored,
    /// The terminal of a shell job (cryo's stdin) and what each process does with it.
    pub terminal: Option<(files::tty::Terminal, files::tty::Attach)>,
    /// Tasks (positions) that are to get the terminal as their controlling terminal.
    pub want_ctty: Vec<usize>,
    /// Per task (position): the VMAs it fills before forking its children, or keeps from
    /// its parent's (memory shared copy-on-write stays shared).
    pub staged: Vec<Vec<Staged>>,
    /// cryo's end of the restore guardian's channel, held at the plan's guardian slot by
    /// every process until its connections are restored and its children forked.
    pub guardian_channel: Option<RawFd>,
    /// Per task (position): the cgroups it joins (and the cgroup namespace it makes) before
    /// forking.
    pub cgroups: Vec<crate::task::cgroups::Placement>,
    /// The session keyring of `cryo restore`'s own, which its forks inherit (None: none).
    pub session_keyring: Option<i32>,
    /// cryo's warm memory (a pre-copy migration's pages, memory/warm.rs) that the processes
    /// it forks inherit.
    pub warm: Option<WarmPlan>,
    /// The roots are restored in a network namespace made for them (`--netns`): its root
    /// holds the dump's connections there (netns::hold_connections) as a process's own does.
    pub netns_made: bool,
    /// A process opens an ancestor's network namespace through /proc (a socket of it, or
    /// back in it): each parent is dumpable while it forks its children (child.rs).
    pub socket_homes: bool,
    /// The pid broker, for processes in a user namespace that may not choose their children's
    /// pids (a tree in cryo's PID namespace): its end held at the plan's broker slot by every
    /// process until its children are forked.
    pub pid_broker: Option<super::pid_broker::PidBroker>,
}

/// The warm memory the processes cryo forks inherit.
pub(crate) struct WarmPlan {
    /// cryo's warm regions, at their addresses in cryo.
    pub mappings: Vec<Range<u64>>,
    /// Per task (position): the image ranges whose latest copy they hold.
    pub written: Vec<Vec<(u64, u64)>>,
}

impl Loaded {
    /// Makes the tree's shared objects and plans the tree around them and around cryo's own
    /// fds and mappings.
    pub fn plan(self, opts: &super::RestoreOptions) -> Result<Planned> {
        let (tcp_close, warm) = (opts.tcp_close, opts.warm.as_deref());
        // Before anything is made: whether the roots can have their session keyrings back.
        let session_keyring = crate::sys::keyctl::own_session_keyring().map_err(|e| {
            crate::error::Error::sys(nix::unistd::getpid(), "read cryo's session keyring", e)
        })?;
        let roots = &self.inventory.root_pids;
        for t in self.tasks.iter().filter(|t| roots.contains(&t.entry.pid)) {
            if let Some(why) = crate::task::keyrings::refuse_root(&t.core, session_keyring) {
                return Err(super::error::RestoreError::SessionKeyring { why }.into());
            }
        }
        let used: std::collections::BTreeSet<u32> = self
            .tasks
            .iter()
            .flat_map(|t| {
                let fds = t.core.fds.iter().map(|e| e.file_id);
                fds.chain(t.mm.vmas.iter().map(|v| v.file_id))
                    .chain([t.mm.exe_file_id])
            })
            .collect();
        // Memfds mapped shared read-only through a writable fd after a write seal: sealed
        // before they are mapped, so the mapping cannot be made writable, as it could not;
        // unless a shared mapping of theirs may write (made before an F_SEAL_FUTURE_WRITE),
        // which a sealed memfd would refuse (EPERM).
        let vmas = || self.tasks.iter().flat_map(|t| t.mm.vmas.iter());
        let ids = |f: &dyn Fn(&cryo_proto::image::Vma) -> bool| -> std::collections::BTreeSet<u32> {
            vmas().filter(|v| f(v)).map(|v| v.file_id).collect()
        };
        let seal_first =
            ids(&|v| v.map_flags & libc::MAP_SHARED as u32 != 0 && v.file_writable && !v.may_write);
        let mapped_writable = ids(&|v| {
            v.map_flags & libc::MAP_SHARED as u32 != 0
                && (v.may_write || v.prot & libc::PROT_WRITE as u32 != 0)
        });
        let shared = files::SharedObjects::create(
            &self.descs,
            &used,
            &seal_first,
            &mapped_writable,
            &self.images,
        )?;
        let ipc_namespaces = self.tasks.iter().map(|t| t.core.ipc_ns).collect();
        // Those a user namespace of the restore owns: made by a clone, filled then.
        let in_user_namespaces = self
            .tasks
            .iter()
            .filter_map(|t| crate::task::namespaces::ipc_in_user_namespace(&t.core))
            .collect();
        let ipc = crate::ipc::Restored::create(
            &self.descs,
            &used,
            &self.ipc,
            &self.images,
            &ipc_namespaces,
            &in_user_namespaces,
        )?;
        let fds_of: Vec<(i32, &[cryo_proto::image::FdEntry])> = self
            .tasks
            .iter()
            .map(|t| (t.entry.pid, t.core.fds.as_slice()))
            .collect();
        let terminal = files::tty::Terminal::open(&self.descs, &fds_of)?;
        let cryo_max_fd = std::fs::read_dir("/proc/self/fd")
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<RawFd>().ok()))
                    .max()
                    .unwrap_or(2)
            })
            .unwrap_or(2);
        let cryo_maps: Vec<Range<u64>> = crate::proc::maps(nix::unistd::getpid())?
            .iter()
            .map(|m| m.start..m.end)
            .collect();
        let shared_inodes: Vec<u64> = shared.fds().map(|(ino, _)| ino).collect();
        let plan = TreePlan::new(&PlanInput {
            roots: &self.inventory.root_pids,
            tasks: &self.tasks,
            zombies: &self.zombies,
            descs: &self.descs,
            links: &self.links,
            cryo_max_fd,
            cryo_maps: &cryo_maps,
            shared_inodes: &shared_inodes,
            terminal: terminal.is_some(),
            given: &self.given,
        })?;
        // The processes in creation order: the plan's positions index them from here on.
        let mut position = vec![0; plan.order.len()];
        for (k, &i) in plan.order.iter().enumerate() {
            position[i] = k;
        }
        let mut tasks: Vec<(usize, TaskImage)> = position.into_iter().zip(self.tasks).collect();
        tasks.sort_by_key(|&(k, _)| k);
        let tasks: Vec<TaskImage> = tasks.into_iter().map(|(_, t)| t).collect();
        let mut loaded = Loaded { tasks, ..self };
        if !opts.cgroup_roots.is_empty() {
            crate::task::mount_ns::refuse_cgroup_binds_moved(&loaded.tasks)?;
        }
        let cgroups = crate::task::cgroups::plan(
            &loaded
                .tasks
                .iter()
                .map(|t| (t.entry.pid, super::load::forked_by(&t.entry), &t.core))
                .collect::<Vec<_>>(),
            opts.cgroups,
            &crate::task::cgroups::Roots {
                new: &opts.cgroup_roots,
                dumped: &loaded.inventory.cgroup_roots,
            },
        )?;
        let mut avoid = cryo_maps;
        avoid.extend(plan.tramps.iter().map(|&t| t..t + 2 * crate::memory::PAGE));
        let mms: Vec<&cryo_proto::image::MmCore> = loaded.tasks.iter().map(|t| &t.mm).collect();
        // Warm pages are charged to cryo's memory cgroup, where they were written: handed
        // over only to roots that stay in cryo's cgroups, which the process's own charges
        // then are too.
        let warm = warm.filter(|_| {
            let stay = (0..mms.len())
                .filter(|&i| !plan.children.iter().any(|kids| kids.contains(&i)))
                .all(|i| {
                    let p = &cgroups[i];
                    p.first.is_empty() && p.then.is_empty() && !p.unshare
                });
            if !stay {
                tracing::debug!("warm memory not handed over: a root joins other cgroups");
            }
            stay
        });
        let staged = premap::plan(&mms, &plan.children, &avoid, warm)?;
        let warm = warm.map(|w| WarmPlan {
            mappings: w.mappings(),
            written: mms
                .iter()
                .map(|mm| {
                    w.view(mm.pid)
                        .map(|v| v.written.to_vec())
                        .unwrap_or_default()
                })
                .collect(),
        });
        // In cryo's PID namespace a process in a user namespace of its own forks its
        // children through the broker (clone3 set_tid needs a capability it lacks there).
        // KNOWN GAP: under `--pidns` the broker would set the last pid of cryo's namespace,
        // not the new one's: such a fork fails (EPERM), naming the child.
        let in_user_namespace = loaded.tasks.iter().any(|t| t.core.userns.is_some());
        let pid_broker = (in_user_namespace && loaded.inventory.pid_ns == 0 && !opts.pidns)
            .then(super::pid_broker::PidBroker::start)
            .transpose()
            .map_err(|e| crate::Error::sys(nix::unistd::getpid(), "start the pid broker", e))?;
        let want_ctty = match &terminal {
            Some(t) => (0..loaded.tasks.len())
                .filter(|&i| t.wants_controlling(&loaded.tasks[i].entry))
                .collect(),
            None => Vec::new(),
        };
        let terminal = terminal.map(|t| {
            let attach = t.attach_plan();
            (t, attach)
        });
        loaded.images.keep_at(plan.images_slot);
        let socket_homes = !crate::sockets::home::wanted(&loaded.descs).is_empty()
            || (0..loaded.tasks.len())
                .any(|i| crate::task::netns::joined_ancestor(&loaded.tasks, i).is_some());
        Ok(Planned {
            loaded,
            plan,
            tcp_close,
            shared,
            ipc,
            terminal,
            want_ctty,
            staged,
            guardian_channel: None,
            cgroups,
            session_keyring,
            warm,
            pid_broker,
            netns_made: false,
            socket_homes,
        })
    }
}

impl Planned {
    /// The slot fds of the tree's objects: (cryo's fd, the slot's number).
    pub fn object_slots(&self) -> Vec<(RawFd, RawFd)> {
        let mut v: Vec<(RawFd, RawFd)> = self
            .shared
            .fds()
            .map(|(ino, fd)| (fd, self.plan.shared_slots[&ino]))
            .collect();
        if let (Some((t, _)), Some(slot)) = (&self.terminal, self.plan.terminal_slot) {
            v.push((t.fd(), slot));
        }
        v.extend(
            self.loaded
                .given
                .fds()
                .iter()
                .copied()
                .zip(self.plan.given_slots.iter().copied()),
        );
        if let Some(fd) = self.guardian_channel {
            v.push((fd, self.plan.guardian_slot));
        }
        if let Some(broker) = &self.pid_broker {
            v.push((broker.tree_end(), self.plan.pid_broker_slot));
        }
        v.push((self.loaded.images.dir_fd(), self.plan.images_slot));
        v.extend(self.ipc.fds().into_iter().zip(self.plan.ipc_slot..));
        v
    }

    /// The last step before the processes run, once every one is whole: the memfd seals go
    /// on (every mapping exists now), destroyed SysV segments are marked again, and the
    /// terminal gets the dumped modes.
    pub fn before_run(&self) -> Result<()> {
        self.shared.seal()?;
        self.ipc.finish()?;
        if let Some((t, _)) = &self.terminal {
            t.set_modes()?;
        }
        Ok(())
    }

    /// The image of the parent of task `i` and what it staged (none for a root).
    pub fn parents_staged(&self, i: usize) -> Option<(&cryo_proto::image::MmCore, &[Staged])> {
        self.plan
            .children
            .iter()
            .position(|kids| kids.contains(&i))
            .map(|p| (&self.loaded.tasks[p].mm, self.staged[p].as_slice()))
    }

    /// What task `i` inherits of cryo's warm memory: a root (forked by cryo) all of it,
    /// which it keeps only what it hands over of; another process none (its root unmapped
    /// it before forking).
    pub fn warm_inherited(&self, i: usize) -> Option<WarmInherited<'_>> {
        let warm = self.warm.as_ref()?;
        if self.plan.children.iter().any(|kids| kids.contains(&i)) {
            return None;
        }
        Some(WarmInherited {
            mappings: &warm.mappings,
            written: &warm.written[i],
        })
    }

    /// The fd tables of the processes, in creation order.
    pub fn fd_tables(&self) -> Vec<&[cryo_proto::image::FdEntry]> {
        self.loaded
            .tasks
            .iter()
            .map(|t| t.core.fds.as_slice())
            .collect()
    }
}
