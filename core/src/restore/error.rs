//! What can stop a restore, step by step: every variant names the process, thread, fd or
//! record at fault. [`ChildError`] is what a forked process of the tree reports to cryo over
//! its error pipe (serialised there, decoded by cryo).

use std::time::Duration;

use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

/// Why a restore stopped (the image itself is refused with an
/// [`ImageError`](cryo_proto::ImageError) before anything starts).
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// SIGINT or SIGTERM arrived before the restore's point of no return.
    #[error("restore {0}: rolled back, every process it created killed")]
    Interrupted(#[from] crate::interrupt::Interrupted),
    /// The gate (a migration's go) said no: every process restored was killed.
    #[error("{why}: rolled back, every process restored here killed")]
    Gate {
        /// The step that failed, and why (in the message, so not chained as a source).
        why: super::GateError,
    },
    /// The network lock of an image from another host could not be installed here.
    #[error("install network lock {lock} here: {why}")]
    LockHere {
        /// The lock id (the image's).
        lock: String,
        /// The netlink error.
        why: String,
    },
    /// A pid the image needs is held by another process.
    #[error(
        "pid {pid} is taken by {comm} (state {state}): it must be free to restore the process \
         with its original pid"
    )]
    PidTaken {
        /// The pid.
        pid: Pid,
        /// The command of the process holding it.
        comm: String,
        /// Its state letter in /proc/PID/stat.
        state: char,
    },
    /// A pid checked free was taken between the check and the clone.
    #[error(
        "pid {pid} is taken: a process created meanwhile holds it, or a dying one as its group id"
    )]
    PidRaced {
        /// The pid.
        pid: Pid,
    },
    /// The inventory names a root the process tree does not hold.
    #[error("root pid {pid} is not in the image")]
    RootNotInImage {
        /// The root.
        pid: i32,
    },
    /// A root (forked by cryo) said to share its parent's fd table or fs_struct.
    #[error(
        "pid {pid} is a root of the image but shares its parent's fd table or working directory"
    )]
    SharesWithoutParent {
        /// The root.
        pid: i32,
    },
    /// Processes of the image that no root's tree reaches.
    #[error(
        "{unreached} of the image's {total} processes are not in the trees of its roots {roots:?}"
    )]
    Unreached {
        /// How many.
        unreached: usize,
        /// How many processes the image holds.
        total: usize,
        /// The roots.
        roots: Vec<i32>,
    },
    /// A process of the image in a group whose leader had exited, in a session no stand-in
    /// and no root of the image leads (the dump does not make such images).
    #[error(
        "pid {pid}: its group {pgid} had lost its leader, in session {sid}, which nothing of the \
         restore makes: no stand-in can lead the group there"
    )]
    StandInOutsideTree {
        /// The process.
        pid: i32,
        /// Its group.
        pgid: i32,
        /// Its session.
        sid: i32,
    },
    /// A session or group whose leader had exited, named by a pid a process of the image has.
    #[error("the exited leader {pid} of a session or group is also a process of the image")]
    StandInPidTaken {
        /// The pid.
        pid: i32,
    },
    /// Stand-ins for exited leaders restored into a new PID namespace.
    #[error(
        "the image has sessions or groups whose leaders had exited ({pids:?}): a process with \
         each one's pid stands in for it, which a new PID namespace (--pidns) cannot hold \
         beside its init; restore without --pidns"
    )]
    StandInsInNewPidNamespace {
        /// The exited leaders.
        pids: Vec<i32>,
    },
    /// A zombie whose parent is not restored.
    #[error("zombie {pid} has no restored parent ({ppid})")]
    OrphanZombie {
        /// The zombie.
        pid: i32,
        /// Its parent in the image.
        ppid: i32,
    },
    /// Descriptions made together held across trees (only plain pairs and files can be).
    #[error(
        "descriptions made together (a pipe's ends, a listener and its clients, descriptors in \
         flight) are held by processes in different trees {pids:?}: not supported yet"
    )]
    SharedAcrossTrees {
        /// The processes holding them.
        pids: Vec<i32>,
    },
    /// No two free pages for the restore trampoline.
    #[error("pid {pid}: no free address for the restore trampoline")]
    NoTrampolineAddress {
        /// The process.
        pid: i32,
    },
    /// cryo could not put one of its fds at the number the tree expects.
    #[error("place {what} at fd {fd}: {source}")]
    PlaceFd {
        /// What the fd is.
        what: &'static str,
        /// The fd number.
        fd: i32,
        /// The kernel's answer.
        source: std::io::Error,
    },
    /// `--pidns` asked for an image whose tree has a PID namespace of its own.
    #[error(
        "the image's tree is in a pid namespace of its own (pid:[{inode}] at dump), made again \
         by the restore: --pidns does not apply to it"
    )]
    PidNamespaceImage {
        /// The namespace's inode at dump.
        inode: u64,
    },
    /// A root's session keyring cannot come back from this `cryo restore` (task/keyrings.rs).
    #[error("{why}")]
    SessionKeyring {
        /// Which root, which keyring and what to do.
        why: String,
    },
    /// `--detach` with a root that has a parent-death signal: cryo, its parent after the
    /// restore, would end at once and send it.
    #[error(
        "pid {pid} thread {tid}: a parent-death signal ({signal}) whose parent is cryo after \
         the restore: with --detach cryo ends at once, sending it (restore without --detach: \
         cryo stays its parent while it runs)"
    )]
    DetachedDeathSignal {
        /// The root.
        pid: i32,
        /// Its thread with the signal.
        tid: i32,
        /// PR_SET_PDEATHSIG's signal.
        signal: i32,
    },
    /// New namespaces hold one tree (one root) for now.
    #[error("--pidns/--netns restore a single tree (one root) for now")]
    NamespacesHoldOneProcess,
    /// The init of new namespaces could not create the process.
    #[error("pid {pid}: cannot be created in the new namespace: {answer}")]
    NamespaceInit {
        /// The process.
        pid: Pid,
        /// What the init answered.
        answer: String,
    },
    /// The init of new namespaces has not exactly one child.
    #[error("pid {pid}: the namespace's init has children {children:?}")]
    NamespaceChildren {
        /// The process.
        pid: Pid,
        /// The init's children.
        children: Vec<Pid>,
    },
    /// A process did not report within the step timeout.
    #[error("pid {pid} was not created within {timeout:?}")]
    NotCreated {
        /// The process.
        pid: Pid,
        /// How long cryo waited.
        timeout: Duration,
    },
    /// A process ended without a word on its error pipe.
    #[error("pid {pid}: died before it could say why")]
    DiedSilently {
        /// The process.
        pid: Pid,
    },
    /// A process of the tree failed in its cryo phase and said why.
    #[error("pid {pid}: {error}")]
    Child {
        /// The process.
        pid: Pid,
        /// What it reported.
        error: ChildError,
    },
    /// A process wrote something on its error pipe that is not a [`ChildError`].
    #[error("pid {pid}: unreadable report on the error pipe: {report:?}")]
    ChildReport {
        /// The process.
        pid: Pid,
        /// What it wrote.
        report: String,
    },
    /// A thread came out of clone3 with another tid than asked.
    #[error("pid {pid}: thread {tid} was created as {got}")]
    ThreadTid {
        /// The process.
        pid: Pid,
        /// The tid asked for.
        tid: Pid,
        /// The tid it got.
        got: u64,
    },
    /// A new thread reported something else than its birth stop.
    #[error("pid {pid}: new thread {tid}: unexpected {status}")]
    ThreadStatus {
        /// The process.
        pid: Pid,
        /// The thread.
        tid: Pid,
        /// What waitpid said.
        status: String,
    },
    /// A new thread is not among its process's threads.
    #[error("pid {pid}: the new thread {tid} is not among its threads")]
    ThreadMissing {
        /// The process.
        pid: Pid,
        /// The thread (its tid inside the process's namespace).
        tid: Pid,
    },
    /// A thread of the image without registers.
    #[error("thread {tid}: no registers in the image")]
    NoRegisters {
        /// The thread.
        tid: Pid,
    },
    /// A POSIX timer came back with another id.
    #[error("pid {pid}: timer {id} came back as {got}")]
    TimerId {
        /// The process.
        pid: Pid,
        /// The id in the image.
        id: i32,
        /// The id the kernel gave.
        got: i32,
    },
    /// A shell job cannot join cryo's process group: the image uses that number.
    #[error(
        "cryo runs in process group {group}, which pid {pid} of the image uses too: restore the \
         shell job from another process group"
    )]
    ShellJobGroup {
        /// cryo's process group.
        group: i32,
        /// The process of the image using it.
        pid: i32,
    },
    /// A helper thread of the restore could not be started.
    #[error("start the {name} thread: {source}")]
    HelperThread {
        /// The thread's job.
        name: &'static str,
        /// The kernel's answer.
        source: std::io::Error,
    },
    /// A helper thread of the restore panicked.
    #[error("the {name} thread panicked")]
    HelperPanicked {
        /// The thread's job.
        name: &'static str,
    },
}

/// The step of a forked process's cryo phase that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[allow(missing_docs)]
pub enum ChildStep {
    #[error("block signals")]
    BlockSignals,
    #[error("wait for cryo")]
    AwaitGo,
    #[error("setsid")]
    Setsid,
    #[error("setpgid")]
    Setpgid,
    #[error("place an fd")]
    PlaceFd,
    #[error("fork a child")]
    ForkChild,
    #[error("fork a zombie")]
    ForkZombie,
    #[error("wait for a zombie")]
    WaitZombie,
    #[error("drain SIGCHLD")]
    DrainSigchld,
    #[error("signal handlers")]
    SignalHandlers,
    #[error("pending signals")]
    PendingSignals,
    #[error("trampoline")]
    Trampoline,
    #[error("chroot")]
    Chroot,
    #[error("chdir")]
    Chdir,
    #[error("prlimit")]
    Prlimit,
    #[error("personality")]
    Personality,
    #[error("set comm")]
    SetComm,
    #[error("set")]
    Attribute,
    #[error("stage memory shared with the children")]
    StageMemory,
    #[error("make its UTS namespace")]
    UtsNamespace,
    #[error("make its time namespace")]
    TimeNamespace,
    #[error("make its network namespace")]
    NetNamespace,
    #[error("make its mount namespace")]
    MountNamespace,
    #[error("join its cgroup")]
    Cgroup,
    #[error("enter its IPC namespace")]
    IpcNamespace,
    #[error("the pipe its children sharing its fd table or working directory answer on")]
    DonePipe,
    #[error("make the stand-in for the exited leader of its session")]
    SessionStandIn,
    #[error("make the stand-in for the exited leader of group")]
    GroupStandIn,
    #[error("put in its session and group the zombie")]
    ZombieSession,
}

/// The object a failed file step of a forked process was opening.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[allow(missing_docs)]
pub enum ChildFiles {
    #[error("pages image")]
    Pages,
    #[error("executable")]
    Executable,
    #[error("mapped file")]
    MappedFile,
    #[error("fds")]
    Fds,
    #[error("controlling terminal")]
    Terminal,
}

/// What a forked process of the tree reports on its error pipe when its cryo phase fails.
/// It crosses the pipe as JSON: the kernel's errno as a number, the engine's file errors
/// (whose sources cannot cross a process boundary) as their message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ChildError {
    /// A system call failed.
    #[error("{step}: {}", std::io::Error::from_raw_os_error(*errno))]
    Sys {
        /// The step.
        step: ChildStep,
        /// The errno.
        errno: i32,
    },
    /// A system call on a numbered object failed (the fd placed, the pid forked, the
    /// rlimit resource set, the path opened).
    #[error("{step} {object}: {}", std::io::Error::from_raw_os_error(*errno))]
    SysOn {
        /// The step.
        step: ChildStep,
        /// The fd, pid, resource or path.
        object: String,
        /// The errno.
        errno: i32,
    },
    /// A step on a numbered object failed for a reason no errno tells (the pid broker's:
    /// the pid taken, by whom).
    #[error("{step} {object}: {message}")]
    StepOn {
        /// The step.
        step: ChildStep,
        /// The fd, pid or path.
        object: String,
        /// Why.
        message: String,
    },
    /// Opening or placing the process's files failed.
    #[error("{what}: {message}")]
    Files {
        /// What was being opened.
        what: ChildFiles,
        /// The file error, as the engine words it.
        message: String,
    },
    /// The mount namespace made differs from the dumped one.
    #[error("its mount namespace came out otherwise than dumped: {detail}")]
    Mounts {
        /// The first difference.
        detail: String,
    },
    /// cryo closed the sync pipe before saying go.
    #[error("cryo went away")]
    CryoGone,
    /// A child sharing its fd table or fs_struct failed before forking its own children.
    #[error("its child {child}, which shares its fd table or working directory, failed")]
    SharerFailed {
        /// The child.
        child: i32,
    },
    /// A child sharing its fd table or fs_struct did not say it forked its own in time.
    #[error(
        "its child {child}, which shares its fd table or working directory, did not fork its \
         children in time"
    )]
    SharerSilent {
        /// The child.
        child: i32,
    },
}

impl ChildError {
    /// A failed system call at `step`.
    pub fn sys(step: ChildStep) -> impl Fn(nix::errno::Errno) -> Self {
        move |e| Self::Sys {
            step,
            errno: e as i32,
        }
    }

    /// A failed system call at `step` on `object` (an fd, a pid, a path).
    pub fn sys_on(step: ChildStep, object: impl ToString) -> impl FnOnce(std::io::Error) -> Self {
        move |e| match e.raw_os_error() {
            Some(errno) => Self::SysOn {
                step,
                object: object.to_string(),
                errno,
            },
            None => Self::StepOn {
                step,
                object: object.to_string(),
                message: e.to_string(),
            },
        }
    }

    /// The error as it crosses the pipe.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_else(|_| b"{}".to_vec())
    }

    /// The error a process wrote on its pipe.
    pub fn decode(report: &[u8]) -> Option<Self> {
        serde_json::from_slice(report).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_error_crosses_the_pipe_whole() {
        let errors = [
            ChildError::Sys {
                step: ChildStep::BlockSignals,
                errno: libc::EPERM,
            },
            ChildError::SysOn {
                step: ChildStep::ForkChild,
                object: "4242".into(),
                errno: libc::EEXIST,
            },
            ChildError::Files {
                what: ChildFiles::Fds,
                message: "fd 3: gone".into(),
            },
            ChildError::CryoGone,
        ];
        for e in errors {
            assert_eq!(ChildError::decode(&e.encode()), Some(e));
        }
        assert_eq!(ChildError::decode(b"partial {"), None);
        let shown = ChildError::SysOn {
            step: ChildStep::ForkChild,
            object: "4242".into(),
            errno: libc::EEXIST,
        }
        .to_string();
        assert!(
            shown.starts_with("fork a child 4242: File exists"),
            "{shown}"
        );
        // A reason with no errno (the pid broker's) crosses whole, not as EIO.
        let said = ChildError::sys_on(ChildStep::ForkZombie, 4243)(std::io::Error::other(
            "cryo's pid broker could not set the last pid: pid 4243 is taken by timeout",
        ));
        assert_eq!(
            said.to_string(),
            "fork a zombie 4243: cryo's pid broker could not set the last pid: pid 4243 is \
             taken by timeout"
        );
        assert_eq!(ChildError::decode(&said.encode()), Some(said));
    }
}
