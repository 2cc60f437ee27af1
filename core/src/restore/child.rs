//! What runs in a forked process of the tree while it is still cryo: it says hello, waits
//! for cryo to trace it, joins its session, opens its mapping fds and its fds at their
//! original numbers (inheriting what it shares with its parent), forks its children and
//! zombies, installs its signal handlers and the trampoline, and stops itself. A failure is
//! reported to cryo as a [`ChildError`] on the err pipe.

use std::os::fd::{OwnedFd, RawFd};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::error::{ChildError, ChildFiles, ChildStep};
use super::tree::Planned;
use crate::files;
use crate::image::names;
use crate::remote::{BATCH_LOOP, BATCH_LOOP_OFFSET, SYSCALL_INT3};
use crate::sys::process::{fork_with_pid_sharing, Forked};
use crate::sys::spawn::{map_code_pages, move_to, read_raw, write_raw};
use crate::task::{attrs, namespaces, process, signals};

/// What a child sharing its parent's fd table or fs_struct writes on the parent's done pipe
/// at the end of its cryo phase, or when it failed.
const FORKED: &[u8] = b"d";
const FORK_FAILED: &[u8] = b"f";

/// Exit codes of a forked process that did not become the dumped one.
const EXIT_LET_GO: i32 = 71;
const EXIT_FAILED: i32 = 70;
const EXIT_NO_PIPE: i32 = 72;

/// A process of the tree in its cryo phase. Never returns: it stops itself for cryo to reshape
/// it, or reports why it could not and exits.
pub(super) fn child_main(tree: &Planned, i: usize) -> ! {
    let err_fd = tree.plan.ctl(i).1;
    match child_setup(tree, i) {
        Ok(()) => {
            let _ = nix::sys::signal::raise(Signal::SIGSTOP);
            // cryo rewrote this process; reaching here means it let go early.
            crate::sys::process::exit_child(EXIT_LET_GO)
        }
        Err(e) => {
            let _ = write_raw(err_fd, &e.encode());
            // A parent waiting for this child to fork its own (they share a table or
            // fs_struct) must not wait on.
            if let Some(p) = shares_with(tree, i) {
                let _ = write_raw(tree.plan.done_pipe(p).1, FORK_FAILED);
            }
            crate::sys::process::exit_child(EXIT_FAILED)
        }
    }
}

fn child_setup(tree: &Planned, i: usize) -> Result<(), ChildError> {
    // Forked by its session's leader, which ends at once: its PID namespace's init, traced by
    // cryo, is its parent then, and its death (cryo's) ends the namespace with it.
    if !tree.loaded.tasks[i].entry.forked_by_session_leader {
        crate::sys::process::die_with_parent();
    }
    let plan = &tree.plan;
    crate::sys::signal::set_mask(!0).map_err(|e| ChildError::Sys {
        step: ChildStep::BlockSignals,
        errno: e.raw_os_error().unwrap_or(libc::EIO),
    })?;
    let (sync, err) = plan.ctl(i);
    if !matches!(write_raw(err, b"r"), Ok(1)) {
        crate::sys::process::exit_child(EXIT_NO_PIPE);
    }
    let mut go = [0u8; 1];
    if !matches!(read_raw(sync, &mut go), Ok(1)) {
        return Err(ChildError::CryoGone);
    }
    let t = &tree.loaded.tasks[i];
    crate::task::userns::set_own(t.core.userns.as_ref());
    // Before any namespace of its own: the root it inherited is its parent's. One sharing
    // its parent's fd table leaves the slot to it.
    if !t.core.files_of_parent {
        crate::files::open::hold_parent_root(plan.parent_root_slot).map_err(ChildError::sys_on(
            ChildStep::MountNamespace,
            "hold its parent's root",
        ))?;
    }
    let pid = Pid::from_raw(t.entry.pid);
    // A leader that forked children before its setsid forks them first, then leaves.
    let early = |entry: &cryo_proto::image::ProcessEntry| entry.forked_before_parent_setsid;
    let setsid_after_early = t.entry.sid == t.entry.pid
        && (plan.children[i]
            .iter()
            .any(|&c| early(&tree.loaded.tasks[c].entry))
            || plan.zombie_children[i]
                .iter()
                .any(|&z| early(&tree.loaded.zombies[z])));
    if !setsid_after_early {
        process::restore_session(&t.entry)?;
    }
    let parent = t.parent_core(&tree.loaded.tasks);
    namespaces::restore_in_child(&t.core, parent)?;
    let tuples = || tree.loaded.lock_tuples();
    let lock = (tree.loaded.inventory.network_lock.as_str(), &tuples as _);
    if tree.netns_made && parent.is_none() && t.core.netns.is_none() {
        crate::task::netns::hold_connections(lock)?;
    }
    crate::task::netns::restore_in_child(
        &t.core,
        parent,
        crate::task::netns::joined_ancestor(&tree.loaded.tasks, i),
        lock,
    )?;
    let mapping = &plan.mappings[i];
    let descendants = plan.descendants(i);
    let mut keep: Vec<RawFd> = vec![sync, err];
    // The pipe on which it tells its parent it forked its children.
    if let Some(p) = shares_with(tree, i) {
        let (r, w) = plan.done_pipe(p);
        keep.extend([r, w]);
    }
    for &d in &descendants {
        let (s, e) = plan.ctl(d);
        keep.extend([s, e]);
    }
    keep.extend(mapping.all().iter().map(|&fd| fd as RawFd));
    let object_slots: Vec<RawFd> = tree.object_slots().iter().map(|&(_, s)| s).collect();
    keep.extend(&object_slots);
    // A number above every fd it places and every slot it keeps: where what it holds for
    // itself alone goes (F_DUPFD: the first free one from there).
    let above = t
        .core
        .fds
        .iter()
        .map(|e| e.fd)
        .chain(keep.iter().copied())
        .chain(plan.extra[i].values().copied())
        .chain(plan.inherited[i].values().copied())
        .chain([plan.parent_root_slot, plan.images_slot, plan.ipc_slot])
        .max()
        .map_or(0, |m| m + 1);
    // The network namespaces it makes sockets of another namespace in (sockets/home.rs),
    // opened while /proc is still its parent's (the mount namespace it makes next may show
    // another), held above every fd it places.
    let homes = if t.core.files_of_parent {
        None
    } else {
        let homes =
            crate::task::netns::socket_homes(&tree.loaded.tasks, i, &tree.loaded.descs, above)
                .map_err(ChildError::sys_on(
                    ChildStep::NetNamespace,
                    "open the namespaces of its sockets",
                ))?;
        keep.extend(homes.fds());
        Some(std::sync::Arc::new(homes))
    };
    crate::task::mount_ns::restore_in_child(
        &t.core,
        parent,
        crate::task::mount_ns::joined_ancestor(&tree.loaded.tasks, i),
    )?;
    // What it took on removed objects its binds show: above every fd and slot, as the homes.
    files::raise_removed_bound(above).map_err(ChildError::sys_on(
        ChildStep::MountNamespace,
        "move the fds on removed objects its binds show",
    ))?;
    // Removed objects its mount namespace's binds show, for it and its children to open.
    keep.extend(files::removed_bound_fds());
    crate::task::keyrings::restore_in_child(&t.core, parent, tree.session_keyring)?;
    crate::task::cgroups::enter(&tree.cgroups[i])
        .map_err(|(file, e)| ChildError::sys_on(ChildStep::Cgroup, file.display())(e))?;
    // The IPC namespace cryo made again, entered by each process not in its parent's (a
    // root's parent is cryo, in cryo's: 0).
    // One in a user namespace the restore made was made by its clone, and filled by cryo.
    let parent_ipc = parent.map_or(0, |p| p.ipc_ns);
    if t.core.ipc_ns != parent_ipc && !ipc_made_by_clone(&t.core, parent) {
        tree.ipc
            .enter(t.core.ipc_ns, plan.ipc_slot)
            .map_err(io_error(ChildStep::IpcNamespace))?;
    }
    if let (Some((_, attach)), Some(slot)) = (&tree.terminal, plan.terminal_slot) {
        files::tty::attach(slot, &t.entry, attach);
    }

    let pages = tree
        .loaded
        .images
        .open_raw(&names::pages(pid))
        .map_err(|e| ChildError::Files {
            what: ChildFiles::Pages,
            message: e.to_string(),
        })?;
    place(OwnedFd::from(pages), mapping.pages)?;
    let files_error = |what| {
        move |e: files::FileError| ChildError::Files {
            what,
            message: e.to_string(),
        }
    };
    let exe = files::open_for_mapping_with(
        &tree.loaded.descs,
        t.mm.exe_file_id,
        false,
        &tree.loaded.images,
        &plan.shared_slots,
    )
    .map_err(files_error(ChildFiles::Executable))?;
    place(exe, mapping.exe)?;
    for &(id, writable, fd) in &mapping.files {
        let file = files::open_for_mapping_with(
            &tree.loaded.descs,
            id,
            writable,
            &tree.loaded.images,
            &plan.shared_slots,
        )
        .map_err(files_error(ChildFiles::MappedFile))?;
        place(file, fd)?;
    }
    // A session leader on a pty slave its parent made takes it as controlling terminal
    // before opening its fds (a /dev/tty among them reopens it) and before forking.
    let inherited = plan.inherited[i].iter().map(|(&id, &fd)| (id, fd));
    let has_ctty = files::pty::take_controlling(&tree.loaded.descs, &t.entry, inherited, false)
        .map_err(files_error(ChildFiles::Terminal))?;
    // The unix sockets it makes show the dumped peer credentials of itself and of the
    // processes it forks later (sockets::unix::peers); not in a user namespace of its own,
    // whose ids the dumped ones are not.
    if t.core.userns.is_none() {
        crate::sockets::unix::peers::set_issuers(
            t.entry.pid,
            descendants.iter().map(|&d| tree.loaded.tasks[d].entry.pid),
        );
    }
    // A process with its parent's fd table has its fds already: that table is complete.
    if !t.core.files_of_parent {
        files::restore_task_fds_with(
            &tree.loaded.descs,
            &t.core.fds,
            &tree.loaded.images,
            &keep,
            &files::FdRestoreOptions {
                tcp_close: tree.tcp_close,
                inherited: plan.inherited[i].clone(),
                extra: plan.extra[i].clone(),
                shared: plan.shared_slots.clone(),
                terminal: plan.terminal_slot,
                given: tree.loaded.given.at(|k| plan.given_slots[k]),
                homes: homes.clone(),
            },
            &tree.loaded.links,
        )
        .map_err(files_error(ChildFiles::Fds))?;
    }
    // Closed here: every socket is made.
    drop(homes);
    crate::interrupt::pause_point("child-fds");
    if !has_ctty {
        let own = t.core.fds.iter().map(|e| (e.file_id, e.fd));
        files::pty::take_controlling(&tree.loaded.descs, &t.entry, own, true)
            .map_err(files_error(ChildFiles::Terminal))?;
    }
    files::pty::take_foreground(&tree.loaded.descs, &t.entry)
        .map_err(files_error(ChildFiles::Terminal))?;

    // Memory shared with the children: filled before they are forked, so they inherit it.
    crate::memory::premap::stage(
        &t.mm,
        &tree.staged[i],
        tree.parents_staged(i),
        t.pages.as_ref().map(|m| m.as_slice()),
        mapping,
        tree.warm_inherited(i),
    )
    .map_err(|e| ChildError::sys_on(ChildStep::StageMemory, format!("{:#x}", e.start))(e.source))?;

    // Children, each forked by its parent with its pid (sharing its fd table or fs_struct as
    // the dumped one did); zombies die at once.
    let sharers: Vec<usize> = plan.children[i]
        .iter()
        .copied()
        .filter(|&c| shares_with(tree, c).is_some())
        .collect();
    if !sharers.is_empty() {
        let (r, w) = plan.done_pipe(i);
        let (pr, pw) = nix::unistd::pipe().map_err(ChildError::sys(ChildStep::DonePipe))?;
        place(pr, r as u64)?;
        place(pw, w as u64)?;
    }
    let (early_children, late_children): (Vec<usize>, Vec<usize>) = plan.children[i]
        .iter()
        .partition(|&&c| early(&tree.loaded.tasks[c].entry));
    // A zombie of a session whose leader had exited is forked by that session's stand-in.
    let (early_zombies, late_zombies): (Vec<usize>, Vec<usize>) = plan.zombie_children[i]
        .iter()
        .filter(|&&z| !tree.loaded.zombies[z].forked_by_session_leader)
        .partition(|&&z| early(&tree.loaded.zombies[z]));
    // Its children open its network namespace through /proc/PID/ns/net to make sockets of it
    // (sockets/home.rs): an access check that fails on a process not dumpable (as one in a
    // user namespace of the restore's may be here) for a child without CAP_SYS_PTRACE in
    // cryo's user namespace. Its dumped value is set by cryo when it is not 1.
    if !plan.children[i].is_empty() && tree.socket_homes {
        nix::sys::prctl::set_dumpable(true).map_err(|e| {
            ChildError::sys_on(
                ChildStep::NetNamespace,
                "PR_SET_DUMPABLE (for its children)",
            )(e.into())
        })?;
    }
    fork_children(tree, i, &early_children)?;
    fork_zombies(tree, i, &early_zombies)?;
    if setsid_after_early {
        process::restore_session(&t.entry)?;
    }
    // A leader of its session makes the groups of it whose leaders had exited, before any
    // process joins them (its early children, forked before its setsid, are not in it).
    let group_stand_ins = fork_group_stand_ins(tree, i)?;
    fork_children(tree, i, &late_children)?;
    fork_zombies(tree, i, &late_zombies)?;
    let stood_in = fork_session_stand_ins(tree, i)?;
    let helped = fork_through_helper(tree, i)?;
    end_group_stand_ins(tree, &group_stand_ins)?;
    if !plan.zombie_children[i].is_empty() || stood_in || helped || !group_stand_ins.is_empty() {
        // Their SIGCHLD belonged to the past the image already holds.
        crate::sys::signal::drain(libc::SIGCHLD).map_err(io_error(ChildStep::DrainSigchld))?;
    }
    // Children sharing the fd table or the fs_struct fork theirs from it and open files by
    // path: nothing of it is closed or changed before they are through.
    if !sharers.is_empty() {
        let (r, w) = plan.done_pipe(i);
        await_forked(r, &sharers, tree)?;
        let _ = nix::unistd::close(r);
        let _ = nix::unistd::close(w);
    }
    for d in plan.closes_ctl_of(i) {
        let (s, e) = plan.ctl(d);
        let _ = nix::unistd::close(s);
        let _ = nix::unistd::close(e);
    }
    // The unix ends and the objects kept for the children: they have them now. In a table
    // shared with the parent they are the parent's, closed by it.
    if !t.core.files_of_parent {
        for &fd in plan.extra[i].values().chain(&object_slots) {
            let _ = nix::unistd::close(fd);
        }
        files::close_removed_bound();
    }

    signals::restore_actions(&t.core.sigactions).map_err(io_error(ChildStep::SignalHandlers))?;
    signals::requeue(&t.core.shared_pending, &t.core.threads[0].pending)
        .map_err(io_error(ChildStep::PendingSignals))?;
    map_trampoline(plan.tramps[i]).map_err(io_error(ChildStep::Trampoline))?;
    // /proc/self first: a chroot (in process::restore_in_child) may hide /proc.
    attrs::restore_in_child(&t.core)?;
    process::restore_in_child(&t.core)?;
    // Last: from here the parent may close what it kept in a shared table, and change a
    // shared working directory or root (this process opens nothing by path any more).
    if let Some(p) = shares_with(tree, i) {
        let (r, w) = plan.done_pipe(p);
        if !matches!(write_raw(w, FORKED), Ok(1)) {
            return Err(ChildError::CryoGone);
        }
        // Its own copies, in a table of its own (the parent closes a shared table's).
        if !t.core.files_of_parent {
            let _ = nix::unistd::close(r);
            let _ = nix::unistd::close(w);
        }
    }
    Ok(())
}

/// Forks `children` of task `i` (indices into the tree's tasks), each with its pid, sharing
/// the fd table or fs_struct as the dumped one did; each goes on in [`child_main`].
fn fork_children(tree: &Planned, i: usize, children: &[usize]) -> Result<(), ChildError> {
    let t = &tree.loaded.tasks[i];
    // Those in a session another process started are forked by its leader.
    let own = children
        .iter()
        .filter(|&&c| !tree.loaded.tasks[c].entry.forked_by_session_leader);
    for &c in own {
        let core = &tree.loaded.tasks[c].core;
        let cpid = Pid::from_raw(tree.loaded.tasks[c].entry.pid);
        let mut share = 0;
        if core.files_of_parent {
            share |= libc::CLONE_FILES as u64;
        }
        if core.fs_of_parent {
            share |= libc::CLONE_FS as u64;
        }
        share |= clone_namespaces(core, Some(&t.core));
        match fork_child(tree, cpid, share, Some(core)) {
            Ok(Forked::Child) => child_main(tree, c),
            Ok(Forked::Parent(_)) => {
                // A group leader leads its group from here (as a shell does it for its jobs):
                // its siblings and zombies forked next may join it before it runs.
                let e = &tree.loaded.tasks[c].entry;
                if e.pgid == e.pid && e.sid != e.pid {
                    let _ = nix::unistd::setpgid(cpid, cpid);
                }
            }
            Err(e) => return Err(ChildError::sys_on(ChildStep::ForkChild, cpid)(e)),
        }
    }
    Ok(())
}

/// Forks a child with pid `pid` sharing what `share` says: with clone3 set_tid, or, where
/// this process may not choose pids (EPERM: it is in a user namespace of its own, in cryo's
/// PID namespace), through cryo's pid broker.
fn fork_child(
    tree: &Planned,
    pid: Pid,
    share: u64,
    task: Option<&cryo_proto::image::TaskCore>,
) -> std::io::Result<Forked> {
    // A task's main thread's default timer slack is this thread's slack at the fork (a
    // stand-in or a zombie, `task` None, has none of its own).
    let default = task.and_then(attrs::main_default_slack);
    attrs::fork_with_default_slack(default, || match fork_with_pid_sharing(pid, share) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) && tree.pid_broker.is_some() => {
            super::pid_broker::fork_asking(tree.plan.pid_broker_slot, pid, share)
        }
        forked => forked,
    })
}

/// The children of task `i` (its PID namespace's init) in session `sid`, which its leader
/// forks ([`fork_in_session`]).
fn forked_in_session(tree: &Planned, i: usize, sid: i32) -> Vec<usize> {
    tree.plan.children[i]
        .iter()
        .copied()
        .filter(|&c| {
            let e = &tree.loaded.tasks[c].entry;
            e.forked_by_session_leader && e.sid == sid
        })
        .collect()
}

/// In a session leader (a zombie, or a stand-in) just forked by the init `i`, after its
/// setsid: forks the init's `children` of its session, each then inherited by the init when
/// the leader ends. False if one could not be forked.
fn fork_in_session(tree: &Planned, children: &[usize]) -> bool {
    children.iter().all(|&c| {
        let cpid = Pid::from_raw(tree.loaded.tasks[c].entry.pid);
        match fork_child(tree, cpid, 0, Some(&tree.loaded.tasks[c].core)) {
            Ok(Forked::Child) => child_main(tree, c),
            Ok(Forked::Parent(_)) => true,
            Err(_) => false,
        }
    })
}

/// In task `i`, a session leader: forks a helper that forks the init's children in its
/// session (`fork_parent` this task) and ends, reaped here at once; the init inherits them.
/// Whether there were any.
fn fork_through_helper(tree: &Planned, i: usize) -> Result<bool, ChildError> {
    let sid = tree.loaded.tasks[i].entry.pid;
    let members = forked_in_session(tree, i, sid);
    if members.is_empty() {
        return Ok(false);
    }
    let failed = |e: std::io::Error| ChildError::sys_on(ChildStep::SessionStandIn, sid)(e);
    let helper = match crate::sys::process::fork_sharing(0).map_err(failed)? {
        Forked::Child => {
            let forked = fork_in_session(tree, &members);
            crate::sys::process::exit_child(if forked { 0 } else { 70 })
        }
        Forked::Parent(helper) => helper,
    };
    reap_forker(helper).map_err(failed)?;
    Ok(true)
}

/// Forks, as children of task `i` (a leader of its session), the stand-ins of the groups of
/// its session whose leaders had exited, each with the leader's pid and made leader of its
/// group here (before any member can look for it).
fn fork_group_stand_ins(tree: &Planned, i: usize) -> Result<Vec<Pid>, ChildError> {
    let me = nix::unistd::getpid();
    let mut made = Vec::new();
    for &pgid in &tree.plan.stand_ins.groups_of_task[i] {
        let failed = |e: std::io::Error| ChildError::sys_on(ChildStep::GroupStandIn, pgid)(e);
        let stand_in = match fork_child(tree, Pid::from_raw(pgid), 0, None).map_err(failed)? {
            Forked::Child => super::stand_in::stand_in_for_group(me),
            Forked::Parent(p) => p,
        };
        made.push(stand_in);
        nix::unistd::setpgid(stand_in, stand_in).map_err(|e| failed(e.into()))?;
    }
    Ok(made)
}

/// Ends the group stand-ins this task forked ([`fork_group_stand_ins`]) once every member of
/// their groups (the image's processes and zombies) joined.
fn end_group_stand_ins(tree: &Planned, stand_ins: &[Pid]) -> Result<(), ChildError> {
    for &stand_in in stand_ins {
        let members: Vec<i32> = tree
            .loaded
            .tasks
            .iter()
            .map(|t| &t.entry)
            .chain(&tree.loaded.zombies)
            .filter(|e| e.pgid == stand_in.as_raw())
            .map(|e| e.pid)
            .collect();
        super::stand_in::end_own_group(stand_in, &members)
            .map_err(|e| ChildError::sys_on(ChildStep::GroupStandIn, stand_in.as_raw())(e))?;
    }
    Ok(())
}

/// Reaps `forker`, a helper or stand-in that forked processes in a session and ended: an
/// error unless it exited 0 (all forked).
fn reap_forker(forker: Pid) -> std::io::Result<()> {
    match nix::sys::wait::waitpid(forker, Some(nix::sys::wait::WaitPidFlag::__WALL)) {
        Ok(nix::sys::wait::WaitStatus::Exited(_, 0)) => Ok(()),
        Ok(_) => Err(std::io::Error::from_raw_os_error(libc::ECHILD)),
        Err(e) => Err(e.into()),
    }
}

/// Forks, for each session of the children of task `i` (its PID namespace's init) whose
/// leader had exited (a daemon's double fork), a stand-in with the leader's pid that starts
/// the session, forks them in it and ends; reaped here at once. Whether it made any.
fn fork_session_stand_ins(tree: &Planned, i: usize) -> Result<bool, ChildError> {
    let plan = &tree.plan;
    let zombies_in = |sid: i32| -> Vec<usize> {
        plan.zombie_children[i]
            .iter()
            .copied()
            .filter(|&z| {
                let e = &tree.loaded.zombies[z];
                e.forked_by_session_leader && e.sid == sid
            })
            .collect()
    };
    let mut sids: Vec<i32> = plan.children[i]
        .iter()
        .map(|&c| &tree.loaded.tasks[c].entry)
        .chain(
            plan.zombie_children[i]
                .iter()
                .map(|&z| &tree.loaded.zombies[z]),
        )
        .filter(|e| e.forked_by_session_leader)
        .map(|e| e.sid)
        // This task's own session's: forked through a helper (fork_through_helper).
        .filter(|&sid| sid != tree.loaded.tasks[i].entry.pid)
        .filter(|&sid| {
            !plan.zombie_children[i]
                .iter()
                .any(|&z| tree.loaded.zombies[z].pid == sid)
        })
        .collect();
    sids.sort_unstable();
    sids.dedup();
    for &sid in &sids {
        let spid = Pid::from_raw(sid);
        let failed = |e: std::io::Error| ChildError::sys_on(ChildStep::SessionStandIn, sid)(e);
        match fork_child(tree, spid, 0, None).map_err(failed)? {
            Forked::Child => {
                let forked = nix::unistd::setsid().is_ok()
                    && fork_in_session(tree, &forked_in_session(tree, i, sid))
                    && fork_zombies(tree, i, &zombies_in(sid)).is_ok();
                crate::sys::process::exit_child(if forked { 0 } else { 70 })
            }
            Forked::Parent(_) => {}
        }
        reap_forker(spid).map_err(failed)?;
        // Its zombies are this task's now, dead and left unreaped as they were.
        for z in zombies_in(sid) {
            let zpid = Pid::from_raw(tree.loaded.zombies[z].pid);
            nix::sys::wait::waitid(
                nix::sys::wait::Id::Pid(zpid),
                nix::sys::wait::WaitPidFlag::WEXITED | nix::sys::wait::WaitPidFlag::WNOWAIT,
            )
            .map_err(|e| ChildError::sys_on(ChildStep::WaitZombie, zpid)(e.into()))?;
        }
    }
    Ok(!sids.is_empty())
}

/// The handler a made-again zombie's caught signals point at: it dies with every signal
/// blocked but its own death's, so none is delivered.
extern "C" fn zombie_handler_never_run(_: libc::c_int) {}

/// The groups, CPU mask and signal dispositions a zombie's /proc showed, given to the one
/// made again before it dies (its blocked mask as it dies: exit_as_blocking); every signal
/// blocked meanwhile.
fn give_zombie_status(entry: &cryo_proto::image::ProcessEntry) -> std::io::Result<()> {
    use crate::sys::signal::{set_action, set_mask, KernelSigaction};
    set_mask(!0)?;
    // Only when they differ: a process of a user namespace whose setgroups is denied (or
    // without CAP_SETGID there) may not set even the groups it has.
    let now: Vec<u32> = nix::unistd::getgroups()
        .map(|g| g.into_iter().map(|g| g.as_raw()).collect())
        .unwrap_or_default();
    if now != entry.zombie_groups {
        crate::sys::process::set_thread_groups(&entry.zombie_groups)?;
    }
    if !entry.zombie_affinity.is_empty() {
        crate::sys::sched::set_affinity(Pid::from_raw(0), &entry.zombie_affinity)?;
    }
    let caught = zombie_handler_never_run as extern "C" fn(libc::c_int) as usize as u64;
    for signo in (1..=64u32).filter(|&s| s != libc::SIGKILL as u32 && s != libc::SIGSTOP as u32) {
        let bit = 1u64 << (signo - 1);
        let handler = if entry.zombie_sig_ignored & bit != 0 {
            libc::SIG_IGN as u64
        } else if entry.zombie_sig_caught & bit != 0 {
            caught
        } else {
            libc::SIG_DFL as u64
        };
        set_action(
            signo,
            &KernelSigaction {
                handler,
                ..Default::default()
            },
        )?;
    }
    Ok(())
}

/// Forks `zombies` (indices into the tree's zombies) of task `i`, each with its pid, in the
/// session and group it died in (a leader first forks the children of `i` in its session);
/// each dies at once and is left unreaped for the restored parent.
fn fork_zombies(tree: &Planned, i: usize, zombies: &[usize]) -> Result<(), ChildError> {
    for &z in zombies {
        let entry = &tree.loaded.zombies[z];
        let zpid = Pid::from_raw(entry.pid);
        match fork_child(tree, zpid, 0, None) {
            Ok(Forked::Child) => {
                // In the session and group it died in (it may have left its parent's): a
                // failure shows in the check below.
                let _ = process::restore_session(entry);
                let members = forked_in_session(tree, i, entry.pid);
                if entry.sid == entry.pid && !fork_in_session(tree, &members) {
                    crate::sys::process::exit_child(70)
                }
                // Its name and ids, as its parent's waitid and /proc show them.
                if !entry.zombie_comm.is_empty() {
                    let _ = nix::sys::prctl::set_name(
                        &std::ffi::CString::new(entry.zombie_comm.as_str()).unwrap_or_default(),
                    );
                }
                if entry.zombie_status && give_zombie_status(entry).is_err() {
                    crate::sys::process::exit_child(70)
                }
                if let (&[rg, eg, sg], &[ru, eu, su]) =
                    (&entry.zombie_gids[..], &entry.zombie_uids[..])
                {
                    if crate::sys::process::set_own_ids([rg, eg, sg], [ru, eu, su]).is_err() {
                        crate::sys::process::exit_child(70)
                    }
                }
                if entry.zombie_status {
                    crate::sys::process::exit_as_blocking(
                        entry.exit_status,
                        entry.zombie_sig_blocked,
                    )
                }
                crate::sys::process::exit_as(entry.exit_status)
            }
            Ok(Forked::Parent(_)) => {}
            Err(e) => return Err(ChildError::sys_on(ChildStep::ForkZombie, zpid)(e)),
        }
        // Dead, left unreaped for the restored parent.
        let id = nix::sys::wait::Id::Pid(zpid);
        let died = nix::sys::wait::waitid(
            id,
            nix::sys::wait::WaitPidFlag::WEXITED | nix::sys::wait::WaitPidFlag::WNOWAIT,
        )
        .map_err(|e| ChildError::sys_on(ChildStep::WaitZombie, zpid)(e.into()))?;
        // As it died (its core-dump flag aside: no core is made); else a step before failed.
        let status = match died {
            nix::sys::wait::WaitStatus::Exited(_, code) => code << 8,
            nix::sys::wait::WaitStatus::Signaled(_, sig, _) => sig as i32,
            _ => -1,
        };
        if status != entry.exit_status & !0x80 {
            let e = std::io::Error::other(format!(
                "it died with status {status:#x}, not {:#x} (its session, name or ids could not \
                 be given back)",
                entry.exit_status & !0x80
            ));
            return Err(ChildError::sys_on(ChildStep::WaitZombie, zpid)(e));
        }
        let in_group = nix::unistd::getpgid(Some(zpid)).is_ok_and(|g| g.as_raw() == entry.pgid);
        let leads =
            entry.sid != entry.pid || nix::unistd::getsid(Some(zpid)).is_ok_and(|s| s == zpid);
        if !(in_group && leads) {
            let e = std::io::Error::from_raw_os_error(libc::EPERM);
            return Err(ChildError::sys_on(ChildStep::ZombieSession, zpid)(e));
        }
    }
    Ok(())
}

/// Whether a process (`core`) below `parent` (None: a root) starts a user namespace: it is
/// in one, and its parent is not in the same.
pub(super) fn starts_user_namespace(
    core: &cryo_proto::image::TaskCore,
    parent: Option<&cryo_proto::image::TaskCore>,
) -> bool {
    let inode = |c: &cryo_proto::image::TaskCore| c.userns.as_ref().map(|n| n.inode);
    inode(core).is_some() && parent.and_then(inode) != inode(core)
}

/// Whether the IPC namespace of a process (`core`) below `parent` (None: a root) is made by
/// its clone (CLONE_NEWIPC), empty, for cryo to fill ([`crate::ipc::Restored::fill`]): one
/// other than its parent's, owned by the user namespace it is in, which the restore makes.
pub(super) fn ipc_made_by_clone(
    core: &cryo_proto::image::TaskCore,
    parent: Option<&cryo_proto::image::TaskCore>,
) -> bool {
    crate::task::namespaces::ipc_in_user_namespace(core)
        .is_some_and(|ns| parent.map_or(0, |p| p.ipc_ns) != ns)
}

/// The namespaces the clone of a process (`core`) below `parent` (None: a root) makes:
/// CLONE_NEWUSER for the topmost process of a user namespace (cryo writes its maps before it
/// goes on), CLONE_NEWIPC for an IPC namespace that user namespace owns
/// ([`ipc_made_by_clone`]), CLONE_NEWNET for a network namespace whose interfaces cryo makes
/// (crate::task::netns::made_by_clone).
pub(super) fn clone_namespaces(
    core: &cryo_proto::image::TaskCore,
    parent: Option<&cryo_proto::image::TaskCore>,
) -> u64 {
    let mut flags = 0;
    if starts_user_namespace(core, parent) {
        flags |= libc::CLONE_NEWUSER as u64;
    }
    if ipc_made_by_clone(core, parent) {
        flags |= libc::CLONE_NEWIPC as u64;
    }
    if crate::task::netns::made_by_clone(core, parent) {
        flags |= libc::CLONE_NEWNET as u64;
    }
    flags
}

/// The parent whose fd table or fs_struct task `i` shares, if it does.
fn shares_with(tree: &Planned, i: usize) -> Option<usize> {
    let core = &tree.loaded.tasks[i].core;
    (core.files_of_parent || core.fs_of_parent)
        .then(|| tree.plan.parent[i])
        .flatten()
}

/// Waits on done pipe `r` until each of `sharers` (children sharing this process's fd table
/// or fs_struct) is through its cryo phase, at most 20 s for each.
fn await_forked(r: RawFd, sharers: &[usize], tree: &Planned) -> Result<(), ChildError> {
    const FORK_PATIENCE_MS: u16 = 20_000;
    let child_pid = |k: usize| {
        tree.loaded.tasks[sharers[k.min(sharers.len() - 1)]]
            .entry
            .pid
    };
    let mut forked = 0;
    while forked < sharers.len() {
        let timeout = nix::poll::PollTimeout::from(FORK_PATIENCE_MS);
        let fd = crate::sys::fd::borrow_raw(r);
        let mut pfd = [nix::poll::PollFd::new(fd, nix::poll::PollFlags::POLLIN)];
        match nix::poll::poll(&mut pfd, timeout) {
            Ok(0) => {
                return Err(ChildError::SharerSilent {
                    child: child_pid(forked),
                })
            }
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(ChildError::sys(ChildStep::DonePipe)(e)),
        }
        let mut said = [0u8; 1];
        match read_raw(r, &mut said) {
            Ok(1) if said == *FORKED => forked += 1,
            _ => {
                return Err(ChildError::SharerFailed {
                    child: child_pid(forked),
                })
            }
        }
    }
    Ok(())
}

/// A failed system call at `step`, from its `io::Error`.
fn io_error(step: ChildStep) -> impl Fn(std::io::Error) -> ChildError {
    move |e| ChildError::Sys {
        step,
        errno: e.raw_os_error().unwrap_or(libc::EIO),
    }
}

/// Puts `fd` at number `at` of this process, where the dumped process had it.
fn place(fd: OwnedFd, at: u64) -> Result<(), ChildError> {
    move_to(fd, at as RawFd).map_err(ChildError::sys_on(ChildStep::PlaceFd, at))
}

/// Two pages at `addr`: `syscall; int3` and the batch loop (read-execute), then a writable
/// scratch page.
fn map_trampoline(addr: u64) -> std::io::Result<()> {
    map_code_pages(
        addr,
        2,
        &[
            (0, SYSCALL_INT3.as_slice()),
            (BATCH_LOOP_OFFSET as usize, BATCH_LOOP.as_slice()),
        ],
    )
}
