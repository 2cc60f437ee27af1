//! Why a file of a task could not be dumped or restored: every variant names the pid and
//! fd, or the description (id and what it is), and the step.

use std::io;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};

use cryo_proto::image::FileDesc;
use nix::unistd::Pid;

use crate::image::ImageDirError;

/// Why a file of a task could not be dumped or restored.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// A kind of file cryo does not dump.
    #[error("pid {pid} fd {fd}: {kind} is not supported ({link})")]
    Unsupported {
        /// The task.
        pid: Pid,
        /// The fd.
        fd: RawFd,
        /// What it is ("io_uring", "block device"...).
        kind: String,
        /// The link text of /proc/PID/fd/N.
        link: String,
    },
    /// A kind of file cryo does not dump yet.
    #[error("pid {pid} fd {fd}: {kind} is not supported yet ({link})")]
    NotYet {
        /// The task.
        pid: Pid,
        /// The fd.
        fd: RawFd,
        /// What it is ("socket", "memfd"...).
        kind: String,
        /// The link text of /proc/PID/fd/N.
        link: String,
    },
    /// A terminal, dumped only for a shell job.
    #[error("pid {pid} fd {fd}: terminal {path} is dumped only with --shell-job")]
    Terminal {
        /// The task.
        pid: Pid,
        /// The fd.
        fd: RawFd,
        /// The terminal device.
        path: String,
    },
    /// The image holds a shell job's terminal but `cryo restore` has none to give it.
    #[error(
        "pid {pid} fd {fd} was on terminal {path} (a shell job, dumped with --shell-job): cryo \
         restore needs a terminal on its stdin to attach it to"
    )]
    NoTerminal {
        /// The task.
        pid: Pid,
        /// The fd.
        fd: RawFd,
        /// The terminal at dump time.
        path: String,
    },
    /// The fds of a task cannot be listed.
    #[error("pid {pid}: list open fds: {source}")]
    ListFds {
        /// The task.
        pid: Pid,
        /// The kernel's answer.
        source: io::Error,
    },
    /// A lock or lease the process held could not be taken back, or its signal owner set.
    #[error("pid {pid} fd {fd}: {what}: {source}")]
    TakeBack {
        /// The restored process.
        pid: Pid,
        /// The fd it goes through.
        fd: RawFd,
        /// The lock or owner, in words.
        what: String,
        /// The kernel's answer.
        source: io::Error,
    },
    /// A system call inspecting an fd of a task failed.
    #[error("pid {pid} fd {fd}: {op} {path}: {source}", path = path.display())]
    Inspect {
        /// The task.
        pid: Pid,
        /// The fd.
        fd: RawFd,
        /// The step.
        op: &'static str,
        /// What it was applied to.
        path: PathBuf,
        /// The kernel's answer.
        source: io::Error,
    },
    /// An fd of a task cannot be dumped.
    #[error("pid {pid} fd {fd}: {detail}")]
    Dump {
        /// The task.
        pid: Pid,
        /// The fd.
        fd: RawFd,
        /// Why.
        detail: String,
    },
    /// A step reading a file mapped by a task (or its exe) failed.
    #[error("pid {pid}: mapped file {link}: {step}: {source}", link = link.display())]
    MappedStep {
        /// The task.
        pid: Pid,
        /// /proc/PID/map_files/START-END or /proc/PID/exe.
        link: PathBuf,
        /// The step ("stat", "readlink", "save the shared memory"...).
        step: &'static str,
        /// The kernel's answer.
        source: io::Error,
    },
    /// A file mapped by a task (or its exe) cannot be dumped.
    #[error("pid {pid}: mapped file {link}: {detail}", link = link.display())]
    Mapped {
        /// The task.
        pid: Pid,
        /// /proc/PID/map_files/START-END or /proc/PID/exe.
        link: PathBuf,
        /// Why.
        detail: String,
    },
    /// The contents image of a description (a deleted file, a memfd, shared memory) is
    /// missing or damaged.
    #[error("file {id}: contents image: {source}")]
    Contents {
        /// The description.
        id: u32,
        /// What the image directory said.
        source: Box<ImageDirError>,
    },
    /// The contents of a deleted file could not be saved.
    #[error("file {id}: save the contents of deleted file {path} into {image}: {source}")]
    SaveGhost {
        /// The description.
        id: u32,
        /// The deleted file.
        path: String,
        /// The ghost image.
        image: String,
        /// What went wrong.
        source: io::Error,
    },
    /// A SysV IPC object (a shared memory segment a process attaches) cannot be dumped or
    /// restored.
    #[error(transparent)]
    Ipc(#[from] crate::ipc::IpcError),
    /// A record of files.img is inconsistent.
    #[error("files.img: file {id}: {detail}")]
    Invalid {
        /// The description.
        id: u32,
        /// What is wrong.
        detail: String,
    },
    /// An fd refers to a description files.img does not hold.
    #[error("fd {fd} refers to file {file_id}, which files.img does not hold")]
    Dangling {
        /// The fd.
        fd: RawFd,
        /// The missing description.
        file_id: u32,
    },
    /// The file on this machine is not what was dumped (gone, truncated, another type).
    #[error("file {id} ({what}): {detail}")]
    Changed {
        /// The description.
        id: u32,
        /// The file, as [`describe`] tells it.
        what: String,
        /// What changed.
        detail: String,
    },
    /// A system call restoring a description failed.
    #[error("file {id} ({what}): {op}: {source}")]
    Restore {
        /// The description.
        id: u32,
        /// The file, as [`describe`] tells it.
        what: String,
        /// The step.
        op: String,
        /// The kernel's answer.
        source: io::Error,
    },
    /// A socket of a task or of the image.
    #[error(transparent)]
    Sockets(#[from] crate::sockets::SocketError),
    /// A session's line terminal could not be taken again as its controlling terminal.
    #[error("controlling terminal {path}: {op}: {source}")]
    ControllingTerminal {
        /// The terminal's node.
        path: String,
        /// The step.
        op: &'static str,
        /// The kernel's answer.
        source: io::Error,
    },
    /// An `--inherit-fd fd[N]:RESOURCE` the restore cannot use (files/inherit.rs).
    #[error("--inherit-fd {arg}: {detail}")]
    InheritFd {
        /// The argument, as `fd[N]:RESOURCE`.
        arg: String,
        /// Why.
        detail: String,
    },
    /// An fd could not be put at its number.
    #[error("fd {fd} (file {id}): {op}: {source}")]
    Place {
        /// The fd number.
        fd: RawFd,
        /// The description.
        id: u32,
        /// The step.
        op: &'static str,
        /// The kernel's answer.
        source: io::Error,
    },
}

/// A [`FileError::Restore`] for `desc`.
pub(crate) fn restore_err(desc: &FileDesc, op: impl Into<String>, source: io::Error) -> FileError {
    FileError::Restore {
        id: desc.id,
        what: super::describe(desc),
        op: op.into(),
        source,
    }
}

/// A [`FileError::Changed`] for `desc`: the file on this machine is not what was dumped.
pub(crate) fn changed(desc: &FileDesc, detail: impl Into<String>) -> FileError {
    FileError::Changed {
        id: desc.id,
        what: super::describe(desc),
        detail: detail.into(),
    }
}

/// The error of step `step` on mapping `link` (/proc/PID/map_files/START-END) of `pid`.
pub(crate) fn mapped_step(
    pid: Pid,
    link: &Path,
    step: &'static str,
) -> impl FnOnce(io::Error) -> FileError {
    let link = link.to_owned();
    move |source| FileError::MappedStep {
        pid,
        link,
        step,
        source,
    }
}
