//! The third phase of a restore: the trees forked with their original pids, each process
//! forked by its restored parent (so parentage, sessions and groups come out right) while it
//! still runs cryo code ([`child`](super::child)), then stopped, traced by cryo.
//!
//! Control fds: every process gets a `sync` pipe (cryo says "go" once it traces it) and an
//! `err` pipe (the process says "r" when it exists, or why it failed, a
//! [`ChildError`]). Their child ends sit at fixed numbers above every fd of the image
//! (`base + 2i`, `base + 2i + 1`), so each process keeps its descendants' ends open until it
//! has forked them.
//!
//! Objects of the whole tree: the shared memory objects (memfds, shared anonymous memory) and
//! the terminal of a shell job are made or opened by cryo before the first fork and held at
//! slot fds above all others, which every process inherits and keeps until its children are
//! forked: each fd and VMA of each process reopens them, so there is one object behind all.

use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::ptrace;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tracing::debug;

use super::child::child_main;
use super::error::{ChildError, ChildStep, RestoreError};
use super::guard::KillAll;
use super::guardian::RestoreGuardian;
use super::namespaces::Namespaces;
use super::plan::CryoSet;
use super::tree::Planned;
use crate::error::{Error, Result};
use crate::files;
use crate::sys::process::{fork_with_pid, fork_with_pid_sharing, Forked};
use crate::sys::spawn::move_to;

/// How long cryo waits for a process of the tree to show up or stop.
const STEP_TIMEOUT: Duration = Duration::from_secs(20);

/// The tree's processes, created and stopped, traced by cryo; killed if dropped before they
/// run.
pub(crate) struct Spawned {
    pub planned: Planned,
    /// Per task of the plan (same order): its pid as cryo sees it.
    pub pids: Vec<Pid>,
    /// The init of new namespaces, if the tree was restored under one.
    pub init: Option<Pid>,
    pub(super) guard: KillAll,
}

impl Spawned {
    /// The roots' pids as cryo sees them, in the inventory's order.
    pub fn roots(&self) -> Vec<Pid> {
        let tasks = &self.planned.loaded.tasks;
        self.planned
            .loaded
            .inventory
            .root_pids
            .iter()
            .filter_map(|r| tasks.iter().position(|t| t.entry.pid == *r))
            .map(|i| self.pids[i])
            .collect()
    }
}

/// cryo's ends of the control pipes of one task.
struct Ctl {
    sync: Option<OwnedFd>,
    err: OwnedFd,
}

impl Planned {
    /// Creates every process of the plan and waits until each one has stopped itself, ready
    /// for reshaping. With `ns`, the (single) root is created by an init in new namespaces;
    /// without, every pid must be free first (a zombie holding one is waited for, bounded).
    /// On failure every process created so far is killed.
    /// `guardian` (placed in the tree already) undoes before the processes are killed.
    pub fn spawn(
        mut self,
        ns: Option<Namespaces>,
        guardian: Option<RestoreGuardian>,
    ) -> Result<Spawned> {
        self.netns_made = ns.is_some_and(|ns| ns.net);
        let own_pidns = self.loaded.inventory.pid_ns;
        // Its own PID namespace is made by the restore; a new network namespace may be asked.
        if own_pidns != 0 && ns.is_some_and(|ns| ns.pid) {
            return Err(RestoreError::PidNamespaceImage { inode: own_pidns }.into());
        }
        // (A group's stand-in forked by a leader of the tree is made in its namespace.)
        let of_cryo: Vec<i32> = self.plan.stand_ins.of_cryo().collect();
        if !of_cryo.is_empty() && (own_pidns != 0 || ns.is_some_and(|ns| ns.pid)) {
            return Err(RestoreError::StandInsInNewPidNamespace { pids: of_cryo }.into());
        }
        let stand_ins: Vec<i32> = self.plan.stand_ins.pids().collect();
        // In a namespace made for the tree, every pid is free.
        if own_pidns == 0 && ns.is_none_or(|ns| !ns.pid) {
            for &pid in &stand_ins {
                wait_pid_free(Pid::from_raw(pid))?;
            }
            for t in &self.loaded.tasks {
                for thread in &t.core.threads {
                    wait_pid_free(Pid::from_raw(thread.tid))?;
                }
            }
            for z in &self.loaded.zombies {
                wait_pid_free(Pid::from_raw(z.pid))?;
            }
        }
        let (pids, init) = spawn_tree(&self, ns)?;
        Ok(Spawned {
            guard: KillAll::new(pids.clone(), init, guardian),
            planned: self,
            pids,
            init,
        })
    }
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
            return Err(RestoreError::PidTaken {
                pid,
                comm: stat.comm,
                state: stat.state,
            }
            .into());
        }
        if !logged {
            debug!(%pid, "pid held by a zombie; waiting for it to be reaped");
            logged = true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Creates the processes of `tree`: their pids as cryo sees them, and the init of the new
/// namespaces.
fn spawn_tree(tree: &Planned, ns: Option<Namespaces>) -> Result<(Vec<Pid>, Option<Pid>)> {
    let plan = &tree.plan;
    let n = tree.loaded.tasks.len();
    let mut ours: Vec<Ctl> = Vec::with_capacity(n);
    let mut theirs: Vec<RawFd> = Vec::with_capacity(2 * n);
    for i in 0..n {
        let pid = Pid::from_raw(tree.loaded.tasks[i].entry.pid);
        let (sync_rd, sync_wr) = nix::unistd::pipe().map_err(|e| Error::sys(pid, "pipe", e))?;
        let (err_rd, err_wr) = nix::unistd::pipe().map_err(|e| Error::sys(pid, "pipe", e))?;
        let (s, e) = plan.ctl(i);
        for (fd, at) in [(sync_rd, s), (err_wr, e)] {
            move_to(fd, at).map_err(|e| Error::sys(pid, "place a control pipe", e))?;
            theirs.push(at);
        }
        ours.push(Ctl {
            sync: Some(sync_wr),
            err: err_rd,
        });
    }
    let mut created: Vec<Option<Pid>> = vec![None; n];
    // The session stand-ins cryo forked (sessions whose leaders had exited).
    let mut stand_ins_made: Vec<i32> = Vec::new();
    crate::task::netns::outer_is_here();
    // The tree's own PID namespace (the dump's), made again by forking its root, its init.
    let own_pidns = tree.loaded.inventory.pid_ns != 0;
    let in_pidns = own_pidns || ns.is_some_and(|ns| ns.pid);
    let mut init = None;
    // The objects at their slots while the roots are forked; closed then (or on a failure).
    let mut object_slots = Slots(Vec::new());
    for (fd, slot) in tree.object_slots() {
        crate::sys::fd::dup_to(crate::sys::fd::borrow_raw(fd), slot, false).map_err(|source| {
            RestoreError::PlaceFd {
                what: "a shared object",
                fd: slot,
                source,
            }
        })?;
        object_slots.0.push(slot);
    }
    // A tree with its own PID namespace needs no helper init: its root is the init, made in
    // the network namespace asked for too.
    let new_net = own_pidns && ns.is_some_and(|ns| ns.net);
    let helper_ns = ns.filter(|_| !own_pidns);
    let result = (|| -> Result<()> {
        match helper_ns {
            Some(ns) => {
                // One init per namespace: one root, whose descendants it forks inside.
                let [r] = plan.roots[..] else {
                    return Err(RestoreError::NamespacesHoldOneProcess.into());
                };
                let pid = Pid::from_raw(tree.loaded.tasks[r].entry.pid);
                let core = &tree.loaded.tasks[r].core;
                // The process in a user namespace of its own is cloned into a new one (and
                // a network namespace whose interfaces cryo makes).
                let mut share = 0;
                if super::child::starts_user_namespace(core, None) {
                    share |= libc::CLONE_NEWUSER as u64;
                }
                if crate::task::netns::made_by_clone(core, None) {
                    share |= libc::CLONE_NEWNET as u64;
                }
                // The init is born with cryo's slack, which it gives the process as its main
                // thread's default timer slack.
                let default = crate::task::attrs::main_default_slack(&tree.loaded.tasks[r].core);
                let creator = crate::task::attrs::slack_for_creation(default).map_err(|e| {
                    Error::sys(pid, "set the default timer slack to fork it with", e)
                })?;
                let spawned =
                    super::namespaces::spawn_init(pid, ns, &theirs, share, || child_main(tree, r));
                creator
                    .put_back()
                    .map_err(|e| Error::sys(pid, "put cryo's timer slack back", e))?;
                let spawned = spawned?;
                init = Some(spawned.init);
                created[r] = Some(spawned.child);
            }
            None => {
                for set in &plan.cryo_sets {
                    let made = match set {
                        CryoSet::UnixPair(a, b) => {
                            let open = || {
                                files::open_unix_pair_by_ids(
                                    &tree.loaded.descs,
                                    &tree.loaded.links,
                                    *a,
                                    *b,
                                )
                            };
                            // The pair of two trees: its ends show the processes of the dump
                            // that stamped them (stand-ins with their pids, cryo forking the
                            // trees after), where cryo can fork safely and names pids as
                            // the dump did.
                            let alone = crate::proc::tids(nix::unistd::getpid())
                                .is_ok_and(|t| t.len() == 1);
                            let (fa, fb) = if alone && !in_pidns {
                                crate::sockets::unix::peers::with_issuers(
                                    tree.loaded.tasks.iter().map(|t| t.entry.pid),
                                    open,
                                )?
                            } else {
                                open()?
                            };
                            vec![(*a, fa), (*b, fb)]
                        }
                        CryoSet::Plain(ids) => files::open_in_cryo(
                            &tree.loaded.descs,
                            ids,
                            &tree.loaded.images,
                            &tree.loaded.given,
                        )?,
                    };
                    for (id, fd) in made {
                        if let Some(&at) = plan.cryo_slots.get(&id) {
                            move_to(fd, at).map_err(|source| RestoreError::PlaceFd {
                                what: "a description shared by two trees",
                                fd: at,
                                source,
                            })?;
                        }
                    }
                }
                for &r in &plan.roots {
                    // A root in a session whose leader had exited is forked by its stand-in.
                    if let Some(session) = plan.stand_ins.session_of(r) {
                        if !stand_ins_made.contains(&session.sid) {
                            let sid = Pid::from_raw(session.sid);
                            match fork_with_pid(sid) {
                                Ok(Forked::Child) => session_stand_in(tree, session),
                                Ok(Forked::Parent(_)) => stand_ins_made.push(session.sid),
                                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                                    return Err(RestoreError::PidRaced { pid: sid }.into())
                                }
                                Err(e) => {
                                    return Err(Error::sys(sid, "clone3 with set_tid", e));
                                }
                            }
                        }
                        continue;
                    }
                    let pid = Pid::from_raw(tree.loaded.tasks[r].entry.pid);
                    let made = super::child::clone_namespaces(&tree.loaded.tasks[r].core, None);
                    // Its main thread's default timer slack is cryo's at the fork (through
                    // the init of a new PID namespace: the init is born with it as its own).
                    let default =
                        crate::task::attrs::main_default_slack(&tree.loaded.tasks[r].core);
                    let forked = crate::task::attrs::fork_with_default_slack(default, || {
                        if own_pidns {
                            new_pid_namespace(pid, plan.roots.len(), new_net, made)
                        } else if made != 0 {
                            fork_with_pid_sharing(pid, made)
                        } else {
                            fork_with_pid(pid)
                        }
                    });
                    match forked {
                        Ok(Forked::Child) => {
                            if new_net {
                                crate::task::netns::outer_unknown();
                                if let Err(e) = crate::sys::process::loopback_up() {
                                    let why = format!(
                                        "bring loopback up in the new network namespace: {e}"
                                    );
                                    let _ =
                                        crate::sys::spawn::write_raw(plan.ctl(r).1, why.as_bytes());
                                    crate::sys::process::exit_child(70);
                                }
                            }
                            child_main(tree, r)
                        }
                        Ok(Forked::Parent(child)) => created[r] = Some(child),
                        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                            return Err(RestoreError::PidRaced { pid }.into())
                        }
                        Err(e) => return Err(Error::sys(pid, "clone3 with set_tid", e)),
                    }
                }
            }
        }
        for fd in theirs.iter().chain(plan.cryo_slots.values()) {
            let _ = nix::unistd::close(*fd);
        }
        object_slots.close();
        // Parents first: each is told to go once traced, then creates its children.
        for i in 0..n {
            let pid = Pid::from_raw(tree.loaded.tasks[i].entry.pid);
            if let Err(e) = await_hello(&ours[i].err, pid) {
                // A process never says hello when its parent failed before forking it: the
                // parent's report says why.
                let parent = plan.children.iter().position(|k| k.contains(&i));
                return Err(parent
                    .and_then(|p| {
                        let ppid = Pid::from_raw(tree.loaded.tasks[p].entry.pid);
                        pending_report(ppid, &ours[p].err)
                    })
                    .unwrap_or(e));
            }
            let seen = match created[i] {
                Some(p) => p,
                None => {
                    // Created by its restored parent; outside a new PID namespace the pid is
                    // the image's, inside it the parent's child with that pid there.
                    let seen = match plan.children.iter().position(|k| k.contains(&i)) {
                        Some(p) if in_pidns => {
                            let entry = &tree.loaded.tasks[i].entry;
                            if entry.forked_by_session_leader {
                                // Its parent is the init, whose child it becomes.
                                let init = tree
                                    .loaded
                                    .tasks
                                    .iter()
                                    .position(|t| t.entry.pid == entry.ppid)
                                    .and_then(|k| created[k])
                                    .unwrap_or(pid);
                                inherited_pid(init, pid)?
                            } else {
                                outside_pid(created[p].unwrap_or(pid), pid)?
                            }
                        }
                        _ => pid,
                    };
                    created[i] = Some(seen);
                    seen
                }
            };
            // A new user namespace gets its maps before its process does anything in it.
            let core = &tree.loaded.tasks[i].core;
            let parent = plan.parent[i].map(|p| &tree.loaded.tasks[p].core);
            if let (Some(ns), true) = (
                &core.userns,
                super::child::starts_user_namespace(core, parent),
            ) {
                crate::task::userns::write_maps(seen, ns)
                    .map_err(|e| Error::sys(seen, "write the maps of its user namespace", e))?;
            }
            // An IPC namespace its clone made in its user namespace: filled before it goes.
            if super::child::ipc_made_by_clone(core, parent) {
                let root = crate::task::userns::root_outside(core.userns.as_ref());
                tree.ipc
                    .fill(core.ipc_ns, seen, root, &tree.loaded.images)
                    .map_err(Error::from)?;
            }
            // A network namespace its clone made: its interfaces made before it goes on, the
            // other ends of its links where the roots are (the `--netns` init's namespace).
            if crate::task::netns::made_by_clone(core, parent) {
                let roots_ns = helper_ns.filter(|ns| ns.net).and(init);
                crate::task::netns::make_from_outside(core, seen, roots_ns).map_err(Error::from)?;
            }
            ptrace::seize(seen, ptrace::Options::PTRACE_O_EXITKILL)
                .map_err(|e| Error::sys(seen, "seize the new process", e))?;
            let sync = ours[i].sync.take().map(std::fs::File::from);
            if let Some(mut sync) = sync {
                std::io::Write::write_all(&mut sync, b"g")
                    .map_err(|e| Error::sys(seen, "start the new process", e))?;
            }
        }
        for i in 0..n {
            let pid = created[i].unwrap_or(Pid::from_raw(tree.loaded.tasks[i].entry.pid));
            if let Err(e) = wait_stopped(pid, &ours[i].err) {
                // A parent that waited for a child sharing its fd table or working
                // directory reports that child's failure; the child's report says why.
                return Err(plan.children[i]
                    .iter()
                    .find_map(|&c| {
                        let cpid =
                            created[c].unwrap_or(Pid::from_raw(tree.loaded.tasks[c].entry.pid));
                        pending_report(cpid, &ours[c].err)
                    })
                    .unwrap_or(e));
            }
        }
        // Every process is in its session and group: their stand-ins are done.
        super::stand_in::end(plan.stand_ins.of_cryo());
        if let Some((t, _)) = &tree.terminal {
            for &i in &tree.want_ctty {
                let seen = created[i].unwrap_or(Pid::from_raw(tree.loaded.tasks[i].entry.pid));
                t.check_controlling(tree.loaded.tasks[i].entry.pid, seen);
            }
        }
        Ok(())
    })();
    if let Err(e) = result {
        super::stand_in::end(plan.stand_ins.of_cryo());
        for pid in created.iter().flatten().rev() {
            let _ = nix::sys::signal::kill(*pid, Signal::SIGKILL);
            let _ = waitpid(*pid, Some(WaitPidFlag::__WALL));
        }
        if let Some(init) = init {
            let _ = nix::sys::signal::kill(init, Signal::SIGKILL);
            let _ = waitpid(init, None);
        }
        return Err(e);
    }
    Ok((created.into_iter().flatten().collect(), init))
}

/// Forks the init of the tree's own PID namespace (`pid`: 1, the only one of `roots` roots)
/// into a new one (and a new network namespace with `net`, a new user namespace with
/// `user`): it is PID 1 there, the
/// namespace's reaper, and unkillable from inside.
fn new_pid_namespace(pid: Pid, roots: usize, net: bool, made: u64) -> std::io::Result<Forked> {
    if pid.as_raw() != 1 || roots != 1 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("the image's pid namespace has {roots} roots, the first pid {pid}, not one init (pid 1)"),
        ));
    }
    let net = if net { libc::CLONE_NEWNET as u64 } else { 0 };
    // In a new user namespace too (`made`: child::clone_namespaces), which then owns the PID
    // namespace: its processes and threads get their pids inside it.
    crate::sys::process::fork_into_namespaces(libc::CLONE_NEWPID as u64 | net | made)
}

/// The pid, as cryo sees it, of the child of `parent` whose pid in its own PID namespace is
/// `inside` (the last NSpid field).
fn outside_pid(parent: Pid, inside: Pid) -> Result<Pid> {
    let children = crate::proc::children(parent)?;
    for &child in &children {
        // A child that ended since it was listed (a session's stand-in leader, forked by the
        // init for its orphans) is not the one.
        let status = match crate::proc::status(child) {
            Err(e) if e.vanished() => continue,
            status => status?,
        };
        let last = crate::proc::status_field(&status, "NSpid")
            .and_then(|v| v.split_whitespace().last())
            .and_then(|v| v.parse::<i32>().ok());
        if last == Some(inside.as_raw()) {
            return Ok(child);
        }
    }
    Err(RestoreError::NamespaceChildren {
        pid: inside,
        children,
    }
    .into())
}

/// [`outside_pid`] of a process its session's leader forked for the init `parent`: the
/// init's child once the leader has ended (at once after the fork; bounded).
fn inherited_pid(parent: Pid, inside: Pid) -> Result<Pid> {
    let started = std::time::Instant::now();
    loop {
        match outside_pid(parent, inside) {
            Err(_) if started.elapsed() < std::time::Duration::from_secs(2) => {
                std::thread::sleep(std::time::Duration::from_millis(1))
            }
            found => return found,
        }
    }
}

/// Slot fds cryo placed for the tree, closed once (explicitly, or when dropped).
struct Slots(Vec<RawFd>);

impl Slots {
    fn close(&mut self) {
        for fd in self.0.drain(..) {
            let _ = nix::unistd::close(fd);
        }
    }
}

impl Drop for Slots {
    fn drop(&mut self) {
        self.close();
    }
}

/// Waits until `fd` (an err pipe) is readable, at most [`STEP_TIMEOUT`].
fn await_readable(fd: &OwnedFd, pid: Pid) -> Result<()> {
    let timeout = PollTimeout::try_from(STEP_TIMEOUT).unwrap_or(PollTimeout::MAX);
    let mut pfd = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    loop {
        match poll(&mut pfd, timeout) {
            Ok(0) => {
                return Err(RestoreError::NotCreated {
                    pid,
                    timeout: STEP_TIMEOUT,
                }
                .into())
            }
            Ok(_) => return Ok(()),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(Error::sys(pid, "poll the error pipe", e)),
        }
    }
}

/// Waits for the hello ("r") of `pid` on its err pipe; anything else is its error report.
fn await_hello(err: &OwnedFd, pid: Pid) -> Result<()> {
    await_readable(err, pid)?;
    // The hello is read alone, so an error report written right after it stays in the pipe.
    let mut hello = [0u8; 1];
    match nix::unistd::read(err, &mut hello) {
        Ok(1) if hello == *b"r" => Ok(()),
        Ok(1) => Err(child_failed(pid, err, &hello)),
        _ => Err(RestoreError::DiedSilently { pid }.into()),
    }
}

/// The error `pid` reported on its err pipe, `read` of it already read. The report is one
/// write of less than a pipe buffer, so one read takes the rest: a process of the tree that
/// still holds the pipe's end cannot make this wait.
fn child_failed(pid: Pid, err: &OwnedFd, read: &[u8]) -> Error {
    let mut report = read.to_vec();
    let mut buf = [0u8; 4096];
    if let Ok(n) = nix::unistd::read(err, &mut buf) {
        report.extend_from_slice(&buf[..n]);
    }
    if report.is_empty() {
        return RestoreError::DiedSilently { pid }.into();
    }
    match ChildError::decode(&report) {
        Some(error) => RestoreError::Child { pid, error }.into(),
        None => RestoreError::ChildReport {
            pid,
            report: String::from_utf8_lossy(&report).into_owned(),
        }
        .into(),
    }
}

/// The error report `pid` left on its err pipe, if there is one already (no wait).
fn pending_report(pid: Pid, err: &OwnedFd) -> Option<Error> {
    let mut pfd = [PollFd::new(err.as_fd(), PollFlags::POLLIN)];
    match poll(&mut pfd, PollTimeout::ZERO) {
        Ok(n) if n > 0 => {}
        _ => return None,
    }
    let mut buf = [0u8; 4096];
    match nix::unistd::read(err, &mut buf) {
        Ok(n) if n > 0 => Some(child_failed(pid, err, &buf[..n])),
        _ => None,
    }
}

/// Waits until traced `pid` stops itself (SIGSTOP); if it died instead, its err pipe says why.
fn wait_stopped(pid: Pid, err: &OwnedFd) -> Result<()> {
    loop {
        match waitpid(pid, Some(WaitPidFlag::__WALL)) {
            Ok(WaitStatus::Stopped(_, Signal::SIGSTOP)) => return Ok(()),
            Ok(WaitStatus::Exited(..)) | Ok(WaitStatus::Signaled(..)) => {
                return Err(match await_readable(err, pid) {
                    Ok(()) => child_failed(pid, err, &[]),
                    Err(e) => e,
                });
            }
            Ok(WaitStatus::Stopped(_, sig)) => {
                ptrace::cont(pid, sig).map_err(|e| Error::sys(pid, "continue", e))?;
            }
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(Error::sys(pid, "wait for the new process", e)),
        }
    }
}

/// The stand-in for the exited leader of `session`, forked from cryo with its pid: starts the
/// session, its groups, and forks its roots (children of cryo). Never returns: it waits for
/// cryo to end it, or tells the roots it did not fork why, and exits.
fn session_stand_in(tree: &Planned, session: &super::stand_in::SessionStandIn) -> ! {
    crate::sys::process::die_with_parent();
    let cryo = nix::unistd::getppid();
    let mut forked = 0;
    let result = super::stand_in::start_session(session, cryo, |r| {
        let pid = Pid::from_raw(tree.loaded.tasks[r].entry.pid);
        let flags = libc::CLONE_PARENT as u64
            | super::child::clone_namespaces(&tree.loaded.tasks[r].core, None);
        let default = crate::task::attrs::main_default_slack(&tree.loaded.tasks[r].core);
        let made = crate::task::attrs::fork_with_default_slack(default, || {
            fork_with_pid_sharing(pid, flags)
        });
        match made? {
            Forked::Child => child_main(tree, r),
            Forked::Parent(_) => forked += 1,
        }
        Ok(())
    });
    let e = result
        .err()
        .unwrap_or_else(|| std::io::Error::from_raw_os_error(libc::EIO));
    let report = ChildError::sys_on(ChildStep::SessionStandIn, session.sid)(e).encode();
    for &r in &session.roots[forked..] {
        let _ = crate::sys::spawn::write_raw(tree.plan.ctl(r).1, &report);
    }
    crate::sys::process::exit_child(70)
}
