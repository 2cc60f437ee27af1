//! The raw system calls of the library; every `unsafe` block of the crate lives here.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// -1 into the errno it stands for.
fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Takes ownership of a fd the kernel just returned.
fn owned(fd: libc::c_int) -> OwnedFd {
    // SAFETY: `fd` was just returned by a successful syscall of ours; nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// pipe2(2): `(read end, write end)`.
pub(crate) fn pipe2(flags: libc::c_int) -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [-1 as libc::c_int; 2];
    // SAFETY: the kernel writes two ints into our local array.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), flags) })?;
    Ok((owned(fds[0]), owned(fds[1])))
}

/// open(2) of `path`.
pub(crate) fn open(path: &str, flags: libc::c_int) -> io::Result<OwnedFd> {
    let path = CString::new(path).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `path` is a NUL-terminated string that outlives the call; no mode is read
    // because O_CREAT is never passed.
    let fd = cvt(unsafe { libc::open(path.as_ptr(), flags) })?;
    Ok(owned(fd))
}

/// memfd_create(2) with `name`.
pub(crate) fn memfd_create(name: &str, flags: libc::c_uint) -> io::Result<OwnedFd> {
    let name = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `name` is a NUL-terminated string that outlives the call.
    let fd = cvt(unsafe { libc::memfd_create(name.as_ptr(), flags) })?;
    Ok(owned(fd))
}

/// read(2) into `buf`.
pub(crate) fn read(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`, which we borrow mutably.
    let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// poll(2) for POLLIN on `fd`; true if readable before `timeout_ms` (-1: no timeout).
pub(crate) fn poll_in(fd: BorrowedFd<'_>, timeout_ms: libc::c_int) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one pollfd, our local, for the duration of the call.
    let n = cvt(unsafe { libc::poll(&mut pfd, 1, timeout_ms) })?;
    Ok(n > 0)
}

/// A borrow of a raw fd the caller vouches for (the C API's argument).
///
/// # Safety
/// `fd` must be open for the lifetime of the borrow.
pub(crate) unsafe fn borrow_raw<'a>(fd: RawFd) -> BorrowedFd<'a> {
    // SAFETY: the caller guarantees `fd` stays open while borrowed.
    unsafe { BorrowedFd::borrow_raw(fd) }
}

/// Takes ownership of a raw fd handed over by C code.
///
/// # Safety
/// `fd` must be an open fd that nothing else will close.
pub(crate) unsafe fn own_raw(fd: RawFd) -> OwnedFd {
    // SAFETY: the caller hands over ownership of an open fd.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Sets errno, for the C API's `-1` returns.
pub(crate) fn set_errno(err: &io::Error) {
    let code = err.raw_os_error().unwrap_or(libc::EIO);
    // SAFETY: __errno_location returns the calling thread's errno slot, always valid.
    unsafe { *libc::__errno_location() = code };
}
