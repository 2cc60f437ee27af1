//! epoll: a new instance, registering or changing a target by fd number, and taking the
//! ready list without waiting.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};

use super::{check, owned_fd};

/// A new epoll instance (close-on-exec).
pub(crate) fn epoll_create() -> io::Result<OwnedFd> {
    // SAFETY: epoll_create1 takes flags, no pointers.
    owned_fd(libc::c_long::from(unsafe {
        libc::epoll_create1(libc::EPOLL_CLOEXEC)
    }))
}

/// Registers fd NUMBER `target` of this process in `epoll` with `events` and `data`. The
/// number is used as is: the epoll remembers it (fdinfo `tfd:`, EPOLL_CTL_MOD/DEL by number),
/// which is why nix's `Epoll::add` (taking an `AsFd`) does not fit.
pub(crate) fn epoll_add(
    epoll: BorrowedFd<'_>,
    target: RawFd,
    events: u32,
    data: u64,
) -> io::Result<()> {
    epoll_ctl(epoll, libc::EPOLL_CTL_ADD, target, events, data)
}

/// Sets the events and data of the target registered in `epoll` as fd NUMBER `target` of
/// this process, holding the file it was registered with (EPOLL_CTL_MOD): re-arms an
/// EPOLLONESHOT target, and queues the target on the ready list if it is ready and not there.
pub(crate) fn epoll_modify(
    epoll: BorrowedFd<'_>,
    target: RawFd,
    events: u32,
    data: u64,
) -> io::Result<()> {
    epoll_ctl(epoll, libc::EPOLL_CTL_MOD, target, events, data)
}

fn epoll_ctl(
    epoll: BorrowedFd<'_>,
    op: i32,
    target: RawFd,
    events: u32,
    data: u64,
) -> io::Result<()> {
    let mut ev = libc::epoll_event { events, u64: data };
    // SAFETY: epoll_ctl reads one epoll_event through the pointer, which points at `ev`.
    let ret = unsafe { libc::epoll_ctl(epoll.as_raw_fd(), op, target, &mut ev) };
    check(libc::c_long::from(ret)).map(drop)
}

/// epoll_wait without waiting, for at most `max` events: the (data, revents) of the targets
/// on the ready list that are ready now, in list order. Takes EPOLLET targets off the list,
/// disarms EPOLLONESHOT ones and queues level-triggered ones again at its tail.
pub(crate) fn epoll_wait_now(epoll: BorrowedFd<'_>, max: usize) -> io::Result<Vec<(u64, u32)>> {
    let mut buf = vec![libc::epoll_event { events: 0, u64: 0 }; max.max(1)];
    let n = loop {
        let len = libc::c_int::try_from(buf.len()).unwrap_or(libc::c_int::MAX);
        // SAFETY: epoll_wait writes at most `len` epoll_events into `buf`, which holds that many.
        let ret = unsafe { libc::epoll_wait(epoll.as_raw_fd(), buf.as_mut_ptr(), len, 0) };
        match check(libc::c_long::from(ret)) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => break r?,
        }
    };
    Ok(buf[..n as usize]
        .iter()
        .map(|e| (e.u64, e.events))
        .collect())
}
