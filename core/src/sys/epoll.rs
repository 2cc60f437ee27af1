//! epoll: a new instance, and registering a target by fd number.

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
    let mut ev = libc::epoll_event { events, u64: data };
    // SAFETY: epoll_ctl reads one epoll_event through the pointer, which points at `ev`.
    let ret = unsafe { libc::epoll_ctl(epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, target, &mut ev) };
    check(libc::c_long::from(ret)).map(drop)
}
