//! What can stop a dump or a `cryo kill`: every variant names the process or directory at
//! fault. A dump stopped by any of them leaves its targets running as before.

use std::path::PathBuf;

use nix::unistd::Pid;

/// Why a dump stopped.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    /// No root was given.
    #[error("dump: no pid given (-t PID)")]
    NoPid,
    /// A root was given twice, or inside another root's tree.
    #[error(
        "pid {pid}: lies inside the tree of another root (its parent chain reaches {ancestor}): \
         give only the roots of the trees"
    )]
    RootInsideTree {
        /// The root.
        pid: Pid,
        /// The process its parent chain reaches.
        ancestor: Pid,
    },
    /// The children of a process changed while the tree was frozen.
    #[error(
        "pid {pid}: its children changed while the tree was being frozen ({before:?} -> \
         {after:?}): retry"
    )]
    ChildrenChanged {
        /// The parent.
        pid: Pid,
        /// Its children when the tree was read.
        before: Vec<Pid>,
        /// Its children once frozen.
        after: Vec<Pid>,
    },
    /// A thread exited between the reading of the tree and its freeze (a server's worker
    /// ending, say): the tree is not the one read.
    #[error("pid {pid}: thread {tid} exited while the tree was being frozen: retry")]
    ExitedWhileFrozen {
        /// The process.
        pid: Pid,
        /// The thread.
        tid: Pid,
    },
    /// `--pre-copy` without a stream to send its rounds to (`--to`), or with `--check-only`.
    #[error("--pre-copy needs a stream (--to ADDR:PORT --name NAME) and a full dump")]
    PreCopyWithoutStream,
    /// The images were not confirmed where they were to go (`--to`): rolled back.
    #[error("{why}: rolled back, the processes run as before")]
    Commit {
        /// The step that failed, and why (in the message, so not chained as a source).
        why: super::CommitError,
    },
    /// A process's session is led by a process outside the dump, or in another root's tree:
    /// forked again, it would be in the session of `cryo restore`.
    #[error(
        "pid {pid}: its session {sid} is led by pid {sid}, which is not in the dump above it \
         (outside the dump, or another root's tree): forked again, it would come back in the \
         session of cryo restore; dump from the session leader, or use --shell-job for a shell's \
         job"
    )]
    SessionOutside {
        /// The process.
        pid: Pid,
        /// Its session (its leader's pid).
        sid: i32,
    },
    /// A process is in another session than its parent without leading it: no fork makes
    /// that again.
    #[error(
        "pid {pid}: its session {sid} is not its parent's (pid {ppid}, session {parent_sid}) \
         and it does not lead it: it cannot be made again"
    )]
    SessionNotInherited {
        /// The process.
        pid: Pid,
        /// Its session.
        sid: i32,
        /// Its parent.
        ppid: i32,
        /// The parent's session.
        parent_sid: i32,
    },
    /// A child of a PID namespace's init in a session another process started (its leader
    /// forks it at restore) shares its parent's fd table or filesystem context: the leader's
    /// fork would share the leader's instead.
    #[error(
        "pid {pid}: in session {sid}, whose leader forks it at restore, it shares its parent's \
         {what} (CLONE_FILES/CLONE_FS): not supported"
    )]
    SessionLeaderForkShares {
        /// The process.
        pid: Pid,
        /// Its session.
        sid: i32,
        /// What it shares: "fd table" or "working directory and root".
        what: &'static str,
    },
    /// A child of a PID namespace's init in a session another process started, with a child
    /// subreaper between that leader and the init: the orphan the leader's fork leaves at
    /// restore could go to it (its flag is set once it has forked its own children).
    #[error(
        "pid {pid}: in session {sid}, whose leader forks it at restore, below child subreaper \
         pid {subreaper}: not supported"
    )]
    SessionLeaderForkSubreaper {
        /// The process.
        pid: Pid,
        /// Its session.
        sid: i32,
        /// The subreaper.
        subreaper: i32,
    },
    /// A session leader has children in the session it was born in (forked before its
    /// setsid) while it has a controlling terminal: the restore takes the terminal before it
    /// forks, which needs the setsid first.
    #[error(
        "pid {pid}: leads session {pid} with a controlling terminal and has children in the \
         session {sid} it left (pid {child}): not supported"
    )]
    ChildrenBeforeSetsidWithTerminal {
        /// The session leader.
        pid: Pid,
        /// The session it was born in.
        sid: i32,
        /// One child in that session.
        child: i32,
    },
    /// A leader's session or group holds a process outside the dump, which keeps the
    /// leader's pid taken after the dump: the restore could not make the leader again.
    #[error(
        "pid {pid}: its {what} {pid} also holds pid {outside}, outside the dump (an orphan \
         of the tree, or a sibling in its group), which keeps pid {pid} taken once the dump \
         ends the tree: a restore could not make it again; dump that process's tree too, or \
         use --leave-running and restore with --pidns"
    )]
    LeaderHeldOutside {
        /// The leader.
        pid: Pid,
        /// "session" or "process group".
        what: &'static str,
        /// The process outside the dump.
        outside: i32,
    },
    /// A process's group is led by a process outside the dump (or of another session): the
    /// group cannot be joined at restore.
    #[error(
        "pid {pid}: its process group {pgid} is led by pid {pgid}, outside the dump: it would \
         come back in another group; dump from the group's leader, or use --shell-job for a \
         shell's job"
    )]
    GroupOutside {
        /// The process.
        pid: Pid,
        /// Its process group (its leader's pid).
        pgid: i32,
    },
    /// In a tree dumped in its own PID namespace, a process's group is led by a process that
    /// had exited (every process of the namespace is in the dump), a group that is not its
    /// session's, and the session's leader is gone or not the process's ancestor: no stand-in
    /// makes it there.
    #[error(
        "pid {pid}: its process group {pgid} (its PID namespace's number), in session {sid}, \
         outlives its leader, which had exited: inside a PID namespace such a group is made \
         again only by its session's leader, alive in the dump and an ancestor of each member \
         (or by the session's stand-in)"
    )]
    GroupLeaderGoneInPidns {
        /// The process.
        pid: Pid,
        /// Its process group.
        pgid: i32,
        /// Its session.
        sid: i32,
    },
    /// SIGINT or SIGTERM arrived before the dump's point of no return.
    #[error("dump {0}: rolled back, the processes run as before")]
    Interrupted(#[from] crate::interrupt::Interrupted),
}

/// Why `cryo kill -D DIR` refused.
#[derive(Debug, thiserror::Error)]
pub enum KillError {
    /// The image's processes are not running.
    #[error("{}: not a --leave-running dump: its processes were killed by the dump", .dir.display())]
    NotLeftRunning {
        /// The image directory.
        dir: PathBuf,
    },
    /// The image's connections are held already.
    #[error(
        "{}: its connections are already held by network lock {lock} (killed before?)",
        .dir.display()
    )]
    AlreadyLocked {
        /// The image directory.
        dir: PathBuf,
        /// The lock's id.
        lock: String,
    },
    /// The running trees are not the image's.
    #[error(
        "{}: the running trees are not the image's any more (gone: {gone:?}, new: {new:?})",
        .dir.display()
    )]
    TreesChanged {
        /// The image directory.
        dir: PathBuf,
        /// Processes of the image that are gone.
        gone: Vec<i32>,
        /// Processes in the trees that the image does not hold.
        new: Vec<i32>,
    },
    /// Connections of the image closed since.
    #[error("{}: {closed} of the image's {total} connections are closed already", .dir.display())]
    ConnectionsClosed {
        /// The image directory.
        dir: PathBuf,
        /// How many are closed.
        closed: usize,
        /// How many the image holds.
        total: usize,
    },
    /// A connection made after the dump.
    #[error("pid {pid}: {connection} is not in the image: it was connected after the dump")]
    NewConnection {
        /// The process.
        pid: Pid,
        /// The connection, described.
        connection: String,
    },
    /// A connection that exchanged bytes since the dump.
    #[error(
        "pid {pid}: {connection} moved on since the dump ({moved}): the image cannot be \
         restored against it; dump again"
    )]
    ConnectionMoved {
        /// The process.
        pid: Pid,
        /// The connection, described.
        connection: String,
        /// What moved.
        moved: String,
    },
}
