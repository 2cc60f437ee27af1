//! The syscall backend: thin safe wrappers over every system call the engine makes itself,
//! one module per kernel family. Every `unsafe` block of the engine lives under this module,
//! each with its `SAFETY:` reason; everything else works with `BorrowedFd` / `OwnedFd` and
//! typed results. nix is used where it already covers a call the way the engine needs it.
//!
//! ```text
//! bpf       BPF maps: made, opened by id, described, read, filled, frozen; programs' maps
//! cpu       XCR0 of this host (xgetbv)
//! fcntl     signal owner and signal of a description, struct flock for remote locks
//! fd        dup, dup3 onto a chosen number, close_range, FIONREAD, RLIMIT_NOFILE
//! handle    file handles: an inode named without a path, opened again
//! pidfd     pidfd_open, pidfd_getfd (another process's fd, duplicated here)
//! kcmp      same open file description, epoll target identity; may a target look at a pid
//! probe     probe processes: chosen ids, nothing of cryo's in them (a memfd program)
//! process   clone3 (set_tid, new namespaces), robust lists, prlimit, process_vm_*
//! ptrace    register sets, sigmask, queued siginfo, rseq, /proc/PID/mem
//! signal    rt_sigaction / sigprocmask / sigqueueinfo in the kernel's layouts
//! prctl     PR_SET_MM_MAP size, parent-death signal, prctl options of the calling thread
//! sched     policy and parameters, nice, affinity, ioprio of a thread by its tid
//! uffd      userfaultfd: create, API handshake, register, UFFDIO_COPY
//! pagemap   PAGEMAP_SCAN
//! mmap      mappings owned by cryo (image windows, anonymous scratch)
//! ipc       System V shared memory: shmget, shmat/shmdt in cryo, shmctl; creator ids
//! termination  SIGINT/SIGTERM held pending while a dump or restore runs
//! repair    whether a TCP socket is in repair mode (the dump guardian)
//! scm       fds passed over a unix socket (the restore guardian)
//! sockfilter classic BPF socket filters: read back, attached
//! sockopt   options at any level, sockets of any family, packet bind (packet, netlink)
//! uts       host and domain names of another UTS namespace; a new one with given names
//! xattr     extended attributes: listed, read through a path, written
//! eventfd, timerfd, signalfd, epoll, inotify, fanotify, memfd, tty: the fd kinds files/ restores
//! ```

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

pub mod bpf;
pub mod cpu;
pub mod epoll;
pub mod eventfd;
pub mod fanotify;
pub mod fcntl;
pub mod fd;
pub mod handle;
pub mod inotify;
pub mod ipc;
pub mod kcmp;
pub mod keyctl;
pub mod memfd;
pub mod mmap;
pub mod mount;
pub mod ns;
pub mod pagemap;
pub mod pidfd;
pub mod pidns;
pub mod prctl;
pub mod probe;
pub mod process;
pub mod ptrace;
pub mod repair;
pub mod sched;
pub mod scm;
pub mod signal;
pub mod signalfd;
pub mod sockfilter;
pub mod sockopt;
pub mod spawn;
pub mod termination;
pub mod timens;
pub mod timerfd;
pub mod tty;
pub mod uffd;
pub mod uts;
pub mod xattr;

/// Checks a raw call's integer result: negative is the errno error.
pub(crate) fn check(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Turns a raw call's fd result into an [`OwnedFd`]: the one place that does.
pub(crate) fn owned_fd(ret: libc::c_long) -> io::Result<OwnedFd> {
    let fd = RawFd::try_from(check(ret)?).map_err(|_| io::Error::other("fd out of range"))?;
    // SAFETY: the kernel just returned `fd` as a new descriptor of this process; nothing else
    // owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
