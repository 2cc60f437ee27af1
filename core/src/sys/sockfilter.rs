//! Classic BPF socket filters: read back (SO_GET_FILTER) and attached (SO_ATTACH_FILTER),
//! and the filter lock (SO_LOCK_FILTER).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// What a socket filters its input with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Filter {
    /// No filter.
    None,
    /// A classic BPF program (SO_ATTACH_FILTER), as `struct sock_filter`s.
    Classic(Vec<libc::sock_filter>),
    /// An eBPF program (SO_ATTACH_BPF): SO_GET_FILTER cannot read it back (EACCES).
    Ebpf,
}

/// The filter of socket `fd`.
pub(crate) fn get(fd: BorrowedFd<'_>) -> io::Result<Filter> {
    // SO_GET_FILTER counts its length in instructions, not bytes: 0 asks for the count.
    let mut count: libc::socklen_t = 0;
    // SAFETY: a null buffer with length 0: the kernel only writes the count into `count`.
    let ret = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_GET_FILTER,
            std::ptr::null_mut(),
            &mut count,
        )
    };
    if ret < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EACCES) => Ok(Filter::Ebpf),
            _ => Err(e),
        };
    }
    if count == 0 {
        return Ok(Filter::None);
    }
    let zero = libc::sock_filter {
        code: 0,
        jt: 0,
        jf: 0,
        k: 0,
    };
    let mut prog = vec![zero; count as usize];
    let mut len = count;
    // SAFETY: `prog` holds `count` sock_filters; the kernel writes at most `len` of them.
    let ret = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_GET_FILTER,
            prog.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    prog.truncate(len as usize);
    Ok(Filter::Classic(prog))
}

/// Attaches classic BPF program `prog` to socket `fd`.
pub(crate) fn attach(fd: BorrowedFd<'_>, prog: &[libc::sock_filter]) -> io::Result<()> {
    let fprog = libc::sock_fprog {
        len: u16::try_from(prog.len()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?,
        filter: prog.as_ptr().cast_mut(),
    };
    // SAFETY: `fprog` points at `prog`, alive for the call; the kernel copies it.
    let ret = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&fprog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether the filter of socket `fd` is locked (SO_LOCK_FILTER: it can no longer change).
pub(crate) fn locked(fd: BorrowedFd<'_>) -> io::Result<bool> {
    Ok(super::sockopt::get_int(fd, libc::SOL_SOCKET, libc::SO_LOCK_FILTER)? != 0)
}

/// Locks the filter of socket `fd` (SO_LOCK_FILTER).
pub(crate) fn lock(fd: BorrowedFd<'_>) -> io::Result<()> {
    super::sockopt::set_int(fd, libc::SOL_SOCKET, libc::SO_LOCK_FILTER, 1)
}
