//! The engine's error type: every variant names the thing at fault (pid, fd, path, record).

use std::path::PathBuf;

use nix::unistd::Pid;

use crate::dump::error::{DumpError, KillError};
use crate::files::FileError;
use crate::memory::error::MemoryError;
use crate::restore::error::RestoreError;

/// A `Result` whose error is the engine's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a dump, a restore or a show failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An image file was refused (bad magic, version, checksum, truncated, dangling reference).
    #[error(transparent)]
    Image(#[from] cryo_proto::ImageError),
    /// The image directory cannot be used.
    #[error("image directory {path}: {detail}")]
    ImageDir {
        /// The directory given with -D.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// The image directory, or a file in it, cannot be used.
    #[error(transparent)]
    Images(#[from] crate::image::ImageDirError),
    /// A file, pipe or device of a task.
    #[error(transparent)]
    Files(#[from] FileError),
    /// A process or thread attribute (nice, policy, affinity, oom_score_adj...).
    #[error(transparent)]
    Attrs(#[from] crate::task::attrs::AttrError),
    /// A namespace of a task that cannot come back.
    #[error(transparent)]
    Namespaces(#[from] crate::task::namespaces::NamespaceError),
    /// A network namespace that cannot come back.
    #[error(transparent)]
    NetNamespace(#[from] crate::task::netns::NetNamespaceError),
    /// A mount namespace that cannot come back.
    #[error(transparent)]
    MountNs(#[from] crate::task::mount_ns::MountNsError),
    /// A PID namespace that cannot come back, or a pid of the image outside it.
    #[error(transparent)]
    PidNs(#[from] crate::task::pidns::PidNsError),
    /// The pid_max or last pid of a restored PID namespace.
    #[error(transparent)]
    PidNsNumbers(#[from] crate::task::pidns::PidNsNumbersError),
    /// The cgroups of a task.
    #[error(transparent)]
    Cgroups(#[from] crate::task::cgroups::CgroupError),
    /// An AIO context (io_setup) that cannot be dumped or made again.
    #[error(transparent)]
    Aio(#[from] crate::files::aio::AioError),
    /// A SysV IPC object (segment, semaphore set, message queue).
    #[error(transparent)]
    Ipc(#[from] crate::ipc::IpcError),
    /// A socket of a task or of the image.
    #[error(transparent)]
    Sockets(#[from] crate::sockets::SocketError),
    /// The target process cannot be dumped at all.
    #[error("pid {pid}: {detail}")]
    Target {
        /// The process.
        pid: Pid,
        /// Why.
        detail: String,
    },
    /// A system call on a task failed.
    #[error("pid {pid}: {op}: {errno}")]
    Sys {
        /// The task.
        pid: Pid,
        /// The step that failed.
        op: String,
        /// The kernel's answer (printed in the message, so not chained as a source).
        errno: std::io::Error,
    },
    /// The action script failed at a stage; the dump or restore was undone.
    #[error(transparent)]
    Hook(#[from] crate::hooks::HookError),
    /// /proc could not tell about a task.
    #[error(transparent)]
    Proc(#[from] crate::proc::ProcError),
    /// The memory of a restored task.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// A dump stopped (the target runs on as before).
    #[error(transparent)]
    Dump(#[from] DumpError),
    /// A restore stopped (what it created is gone).
    ///
    /// (Not `#[from]`: that would chain the same error as its own source, printed twice.)
    #[error("restore: {0}")]
    Restore(RestoreError),
    /// The security state of a thread (capabilities, seccomp...) cannot be dumped or restored.
    #[error(transparent)]
    Security(#[from] crate::task::security::SecurityError),
    /// A thread in a Landlock domain (refused), or the check for one failed.
    #[error(transparent)]
    Landlock(#[from] crate::task::landlock::LandlockError),
    /// An fd table, fs_struct, address space or signal handler table shared between processes
    /// (or a thread's own): refused.
    #[error(transparent)]
    Sharing(#[from] crate::task::sharing::SharingError),
    /// `cryo kill` refused.
    #[error(transparent)]
    Kill(#[from] KillError),
}

impl From<RestoreError> for Error {
    fn from(e: RestoreError) -> Self {
        Self::Restore(e)
    }
}

impl Error {
    /// Whether the dump was refused for a state of the moment, which a retry may find gone:
    /// a TCP handshake in flight, data sent to a listener not accepted yet, unread netlink
    /// messages or notification events, an unread expiration of a timerfd a clock change may
    /// have cancelled, a tree that kept changing while it was frozen (`cryo dump --check-only`
    /// exits 2 on these, as `cryo restore --check-only` does on its temporary findings).
    pub fn is_temporary(&self) -> bool {
        use crate::sockets::SocketError;
        match self {
            Self::Sockets(e) | Self::Files(FileError::Sockets(e)) => match e {
                SocketError::TcpTemporary { .. } | SocketError::EmbryoData { .. } => true,
                // Datagrams waiting that cannot be taken along (raw or ping queues...).
                SocketError::Repair { source, .. } => source.is_temporary(),
                // Packet and netlink refusals say whether a retry may pass.
                SocketError::FamilyRefused { what, .. } => what.contains("a temporary state"),
                _ => false,
            },
            // The file kinds whose refusals say so (inotify, fanotify, timerfd).
            Self::Files(e) => e.to_string().contains("a temporary state"),
            Self::Dump(DumpError::ChildrenChanged { .. } | DumpError::ExitedWhileFrozen { .. }) => {
                true
            }
            Self::Sharing(crate::task::sharing::SharingError::Vfork { .. })
            | Self::Cgroups(crate::task::cgroups::CgroupError::Frozen { .. }) => true,
            _ => false,
        }
    }

    /// Whether the dump was refused for what no retry and no other host of this kind can
    /// restore: a thread in a Landlock domain (`cryo dump --check-only` exits 3 on it, as
    /// `cryo restore --check-only` does on its permanent findings).
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            Self::Landlock(crate::task::landlock::LandlockError::Confined { .. })
        )
    }

    /// A failed system call `op` on task `pid`.
    pub fn sys(pid: Pid, op: impl Into<String>, source: impl Into<std::io::Error>) -> Self {
        Self::Sys {
            pid,
            op: op.into(),
            errno: source.into(),
        }
    }

    /// A reason why task `pid` cannot be dumped.
    pub fn target(pid: Pid, detail: impl Into<String>) -> Self {
        Self::Target {
            pid,
            detail: detail.into(),
        }
    }
}
