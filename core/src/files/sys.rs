//! The system calls of the files module, re-exported from the engine's one syscall backend
//! (`crate::sys`), where they now live; call sites move to `crate::sys::*` at merge.

pub(crate) use crate::sys::epoll::{epoll_add, epoll_create};
pub(crate) use crate::sys::eventfd::{eventfd, eventfd_add};
pub(crate) use crate::sys::fd::{
    borrow_raw, close_range, dup_at_least, dup_to, fd_is_open, fionread, raise_nofile,
};
pub(crate) use crate::sys::inotify::{
    inotify_add_watch, inotify_init, inotify_rm_watch, open_by_handle,
};
pub(crate) use crate::sys::kcmp::{kcmp_epoll_target, kcmp_same_file};
pub(crate) use crate::sys::memfd::{add_seals, get_seals, memfd_create, shmem_anon};
pub(crate) use crate::sys::pidfd::{pidfd_getfd, pidfd_open};
pub(crate) use crate::sys::signalfd::signalfd;
pub(crate) use crate::sys::timerfd::{
    clock_now_ns, timerfd_create, timerfd_set_ticks, timerfd_settime,
};
pub(crate) use crate::sys::tty::set_controlling_terminal;
