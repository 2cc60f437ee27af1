//! Open files of a task: dumped once per open file description, restored at their numbers.
//!
//! ```text
//! dump (target frozen, read from outside):
//!   /proc/PID/fd/N      readlink -> kind (path, pipe:[INO], socket:[INO], anon_inode:[KIND])
//!   /proc/PID/fdinfo/N  pos, flags (O_CLOEXEC -> FdEntry.cloexec)
//!   stat of the fd      dev+ino: descriptions of one inode are compared with
//!                       kcmp(KCMP_FILE), across pids too -> one FileDesc per description
//!   pidfd_getfd         a duplicate to tee(2) unread pipe data without consuming it
//!   ghost-ID.img        contents of a deleted-but-open (or mapped) file
//!
//! restore (in the forked child, before it is reshaped):
//!   validate()          every record and raw file checked before any process exists
//!   open every description, each moved above the highest target fd (F_DUPFD_CLOEXEC)
//!   dup3 onto the target numbers (FD_CLOEXEC as dumped), close the temporaries
//!   close_range every other fd except `keep`
//! ```
//!
//! ```text
//! top: the registry and the orchestrators that dispatch through it
//!   registry.rs  every kind (KINDS) and the lookups by record variant or fd; describe
//!   table.rs     dump: FileTable, the classification of an fd
//!   validate.rs  restore, before any process exists: every record checked
//!   place.rs     restore, in the child: descriptions opened and put at their numbers
//!   shared.rs    restore, in cryo: the shared memory objects of the tree (SharedObjects)
//! middle: one kind each (FileKind), importing only the bottom (and devices.rs -> tty.rs)
//!   regular.rs devices.rs removed_nodes.rs pipes.rs pty.rs tty.rs eventfd.rs timerfd.rs
//!   signalfd.rs epoll.rs pidfd.rs procfs.rs
//!   inotify.rs fanotify.rs memfd.rs shmem.rs mqueue.rs bpf_map.rs; sockets: crate::sockets::kind
//! bottom: what the kinds are given and use
//!   kind.rs      the contract of one kind (FileKind) and the contexts it receives
//!   open.rs      restore toolkit: Opening, FdRestoreOptions, open/create flags, fd moves
//!   error.rs     FileError
//!   inspect.rs   reading one fd of a task from outside (link, fdinfo, inode)
//!   locks.rs     file locks, leases and signal owners: fdinfo at dump, remote calls at restore
//!   outside.rs   a process outside the dump holding the same inode or description (locks, ptys)
//!   mount_views.rs the mount namespace a description was opened in (its holder's, its parent's)
//!   inode_attrs.rs extended attributes and inode flags of an inode made again (ghosts, memfds)
//!   write_hint.rs the write life hint of an inode (F_SET_RW_HINT), kept in memory only
//! ```
//!
//! eventfd, timerfd, signalfd (a module each), epoll (epoll.rs: restored last, once its targets
//! are at their numbers), inotify (inotify.rs), fanotify (fanotify.rs), pidfds (pidfd.rs: one of
//! another process of the dump is pointed at it once every process exists), files of /proc
//! and namespace fds (procfs.rs: reopened by their holder once it is whole), memfd (memfd.rs) and the terminal of a shell
//! job (tty.rs), pty pairs with both ends in the dump (pty.rs) and POSIX message queues
//! (mqueue.rs: made by cryo before the tree, as the shared memory objects) and BPF maps
//! (bpf_map.rs: the same) have a module each; memfds
//! and shared anonymous memory are one object per inode for every fd and VMA of the tree
//! (shmem.rs; hugetlb ones too: memory/hugetlb.rs). Other anonymous inodes (io_uring, bpf-prog, bpf_link, btf...), ptys with an end outside
//! the dump and block devices are refused with the pid, the fd and the kind named.
//! Descriptions shared between processes get one id at dump (the table compares across pids); restoring them shared (inherited across
//! fork) is the restore pipeline's business: [`restore_task_fds`] works on one task.

pub(crate) mod aio;
mod bpf_map;
mod devices;
pub(crate) mod epoll;
mod error;
mod eventfd;
mod fanotify;
pub(crate) mod inode_attrs;
mod inotify;
pub(crate) mod inherit;
mod quiet_reads;
pub(crate) mod locks;
pub(crate) mod inspect;
pub(crate) mod kind;
mod memfd;
pub(crate) mod mount_views;
mod mqueue;
pub(crate) mod open;
mod outside;
mod pipes;
mod place;
pub(crate) mod procfs;
pub mod pty;
mod pty_flow;
mod pty_queue;
mod regular;
mod registry;
mod removed_nodes;
mod shared;
pub(crate) mod shmem;
mod signalfd;
mod table;
pub(crate) mod pidfd;
mod timerfd;
pub mod tty;
mod validate;
mod write_hint;

pub use crate::sockets::UnixLinks;
pub(crate) use error::restore_err;
pub use error::FileError;
pub use inherit::{parse_inherit_fd, InheritFd, Resource as InheritedResource};
pub use inspect::InodeKey;
pub(crate) use open::above;
pub(crate) use regular::{
    close_removed_bound, hold_removed_bound, make_dir_again, raise_removed_bound, removed_bound_fds, removed_dir_made, set_owner_mode_times, times_ns, timespec_of_ns,
};
pub use open::FdRestoreOptions;
pub(crate) use place::{
    can_hand_down, made_together, needed_by, open_in_cryo, open_unix_pair_by_ids, restore_task_fds_with,
};
#[cfg(any(test, feature = "internals"))]
pub use place::{open_for_mapping, restore_task_fds};
pub use place::open_for_mapping_with;
pub use registry::{describe, name, show_line};
pub use shared::SharedObjects;
pub(crate) use shmem::object_of as shmem_object_of;
#[cfg(any(test, feature = "internals"))]
pub use table::same_description;
pub use table::{FdDumpOptions, FileTable};
#[cfg(any(test, feature = "internals"))]
pub use validate::validate;
pub(crate) use validate::validate_except;
