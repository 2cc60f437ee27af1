//! The C API (`include/cryo_resume.h`): for C, and for Python (ctypes) or any runtime that
//! can call a C function and then read lines from an fd.
//!
//! ```c
//! int fd = cryo_resume_open();          /* -1 and errno on failure */
//! /* poll/epoll fd for POLLIN, then read: each record is one JSON line ending in '\n' */
//! cryo_resume_close(fd);                /* closes the channel and its marker */
//! ```

use std::os::fd::{AsFd, RawFd};

use crate::{markers_of, sys, Listener, FORMAT_VERSION};

/// Opens a notification channel; returns its fd (O_RDWR, O_NONBLOCK, O_CLOEXEC), or -1 with
/// errno set. Read JSON lines from it (see README.md); do not write to it.
#[no_mangle]
pub extern "C" fn cryo_resume_open() -> libc::c_int {
    match Listener::open() {
        Ok(listener) => listener.into_raw_fd(),
        Err(e) => {
            sys::set_errno(&e);
            -1
        }
    }
}

/// Closes a channel opened by [`cryo_resume_open`] and its marker. Returns 0, or -1 with errno
/// set (EBADF if `fd` is not such a channel).
#[no_mangle]
pub extern "C" fn cryo_resume_close(fd: libc::c_int) -> libc::c_int {
    let markers = markers_of(fd);
    if fd < 0 || markers.is_empty() {
        sys::set_errno(&std::io::Error::from_raw_os_error(libc::EBADF));
        return -1;
    }
    for marker in markers.into_iter().chain(std::iter::once(fd)) {
        // SAFETY: `marker` is a marker memfd of this process (its name says so) and `fd` the
        // channel it names; the caller gives both up by calling this function.
        drop(unsafe { sys::own_raw(marker) });
    }
    0
}

/// Waits up to `timeout_ms` (-1: forever) for the channel to be readable: 1 if it is, 0 on
/// timeout, -1 with errno set on error. A convenience for callers without an event loop.
#[no_mangle]
pub extern "C" fn cryo_resume_wait(fd: libc::c_int, timeout_ms: libc::c_int) -> libc::c_int {
    let fd: RawFd = fd;
    if fd < 0 {
        sys::set_errno(&std::io::Error::from_raw_os_error(libc::EBADF));
        return -1;
    }
    // SAFETY: the caller passes an fd it keeps open for the duration of the call.
    let borrowed = unsafe { sys::borrow_raw(fd) };
    match sys::poll_in(borrowed.as_fd(), timeout_ms) {
        Ok(ready) => libc::c_int::from(ready),
        Err(e) => {
            sys::set_errno(&e);
            -1
        }
    }
}

/// The version of the channel convention and record format (1).
#[no_mangle]
pub extern "C" fn cryo_resume_format_version() -> libc::c_int {
    FORMAT_VERSION as libc::c_int
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_then_close() {
        let fd = cryo_resume_open();
        assert!(fd >= 0);
        assert_eq!(cryo_resume_wait(fd, 0), 0);
        assert_eq!(markers_of(fd).len(), 1);
        assert_eq!(cryo_resume_close(fd), 0);
        assert_eq!(cryo_resume_close(-1), -1);
        let not_a_channel = std::fs::File::open("/dev/null").unwrap();
        use std::os::fd::AsRawFd;
        assert_eq!(cryo_resume_close(not_a_channel.as_raw_fd()), -1);
        assert_eq!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::EBADF)
        );
        assert_eq!(cryo_resume_format_version(), 1);
    }
}
