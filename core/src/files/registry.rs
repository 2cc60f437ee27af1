//! The registry of kinds: every [`FileKind`](super::kind::FileKind), and the lookups that
//! map each `FileDesc.kind` variant, and each fd met at dump, to its implementation (the one
//! file that names every kind; the orchestrators table.rs, validate.rs and place.rs dispatch
//! through it).

use cryo_proto::image::{file_desc::Kind, FileDesc};

use super::kind::{AnyKind, Dumping};
use super::{
    bpf_map, devices, epoll, eventfd, fanotify, inotify, memfd, mqueue, pidfd, pipes, procfs, pty, regular, removed_nodes, shmem,
    signalfd, timerfd, tty, FileError,
};

/// Every kind of file cryo dumps and restores. Order matters at dump only: the first kind
/// that claims an fd gets it (pty ends, then the shell job's terminal, before other
/// character devices).
pub(crate) static KINDS: &[&dyn AnyKind] = &[
    &regular::Regular,
    &regular::Directory,
    &pipes::Pipes,
    &pty::Ptys,
    &tty::ShellJobTerminal,
    &devices::CharDevice,
    &removed_nodes::RemovedNodes,
    &eventfd::EventFds,
    &timerfd::TimerFds,
    &signalfd::SignalFds,
    &epoll::Epolls,
    &inotify::Inotifies,
    &fanotify::Fanotifies,
    &pidfd::Pidfds,
    &procfs::ProcFiles,
    &memfd::Memfds,
    &shmem::SharedAnon,
    &mqueue::Mqueues,
    &bpf_map::BpfMaps,
    &crate::ipc::shm::Segments,
    &crate::sockets::kind::Sockets,
];

/// The place in [`KINDS`] of the kind of a record's variant.
fn position(kind: &Kind) -> usize {
    KINDS
        .iter()
        .position(|k| k.owns(kind))
        .expect("every variant of FileDesc.kind has a line in KINDS")
}

/// The kind of a record's variant.
pub(crate) fn of(kind: &Kind) -> &'static dyn AnyKind {
    KINDS[position(kind)]
}

/// The kind of description `desc`; a record without a kind (a newer cryo's) is refused.
pub(crate) fn of_desc(desc: &FileDesc) -> Result<&'static dyn AnyKind, FileError> {
    position_of(desc).map(|(_, k)| k)
}

/// The kind of description `desc` and its place in [`KINDS`] (the order in which kinds that
/// open their descriptions together do so); a record without a kind is refused.
pub(crate) fn position_of(desc: &FileDesc) -> Result<(usize, &'static dyn AnyKind), FileError> {
    let kind = desc.kind.as_ref().ok_or_else(|| FileError::Invalid {
        id: desc.id,
        detail: "record without a kind (written by a newer cryo?)".into(),
    })?;
    let at = position(kind);
    Ok((at, KINDS[at]))
}

/// The sets of descriptions of `descs` that one process makes together, kind by kind.
pub(crate) fn made_together(descs: &[FileDesc]) -> Vec<Vec<u32>> {
    KINDS.iter().flat_map(|k| k.made_together(descs)).collect()
}

/// The processes besides their holders that need descriptions `set` made before they go on,
/// kind by kind ([`FileKind::needed_by`](super::kind::FileKind::needed_by)).
pub(crate) fn needed_by(descs: &[FileDesc], set: &[u32]) -> Vec<i32> {
    KINDS.iter().flat_map(|k| k.needed_by(descs, set)).collect()
}

/// The kind that claims the fd `fd` is about, if one does.
pub(crate) fn claiming(fd: &Dumping<'_>) -> Option<&'static dyn AnyKind> {
    KINDS.iter().copied().find(|k| k.claims(fd))
}

/// A description in words, for messages: "regular file /x", "pipe:[123]"...
pub fn describe(desc: &FileDesc) -> String {
    match &desc.kind {
        Some(kind) => of(kind).describe(desc),
        None => "no kind".into(),
    }
}

/// The line of `cryo show` for description `desc` opened with `flags` (in words).
pub fn show_line(desc: &FileDesc, flags: &str) -> String {
    match &desc.kind {
        Some(kind) => of(kind).show(desc, flags),
        None => format!("(file {} of unknown kind)  flags {flags}", desc.id),
    }
}

/// What a mapping or the exe of a process names description `desc` by in `cryo show`.
pub fn name(desc: &FileDesc) -> String {
    match &desc.kind {
        Some(kind) => of(kind).name(desc),
        None => format!("file {} of unknown kind", desc.id),
    }
}

#[cfg(test)]
mod tests {
    use cryo_proto::image::{
        BpfMap, Epoll, EventFd, Fanotify, Inotify, Memfd, Pidfd, Pipe, PosixMqueue, ProcFile, Pty, RegularFile, RemovedNode, Shmem, SignalFd,
        Socket, SysvShm, TimerFd, Tty,
    };

    use super::*;

    #[test]
    fn every_variant_has_its_own_kind() {
        let variants = [
            Kind::Regular(RegularFile::default()),
            Kind::Directory(RegularFile::default()),
            Kind::Pipe(Pipe::default()),
            Kind::Tty(Tty::default()),
            Kind::Pty(Pty::default()),
            Kind::CharDevice(String::new()),
            Kind::RemovedNode(RemovedNode::default()),
            Kind::Eventfd(EventFd::default()),
            Kind::Timerfd(TimerFd::default()),
            Kind::Signalfd(SignalFd::default()),
            Kind::Epoll(Epoll::default()),
            Kind::Inotify(Inotify::default()),
            Kind::Fanotify(Fanotify::default()),
            Kind::Pidfd(Pidfd::default()),
            Kind::ProcFile(ProcFile::default()),
            Kind::Memfd(Memfd::default()),
            Kind::Shmem(Shmem::default()),
            Kind::SysvShm(SysvShm::default()),
            Kind::PosixMqueue(PosixMqueue::default()),
            Kind::BpfMap(BpfMap::default()),
            Kind::Socket(Socket::default()),
        ];
        for v in &variants {
            let owners = KINDS.iter().filter(|k| k.owns(v)).count();
            assert_eq!(owners, 1, "{v:?}");
        }
    }
}
