//! Terminal calls: the controlling terminal, the modes and window size of a terminal, the
//! pty master's controls (index, slave lock, packet mode) and opening a slave from its master.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use super::{check, owned_fd};

/// Makes terminal `fd` the controlling terminal of the caller's session (TIOCSCTTY with 0:
/// never taken from another session).
pub(crate) fn set_controlling_terminal(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: TIOCSCTTY takes an int argument, no pointers.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSCTTY, 0) };
    check(libc::c_long::from(ret)).map(drop)
}

/// An ioctl that writes one int: TIOCGPTN, TIOCGPTLCK, TIOCGPKT, TIOCGEXCL, TIOCGDEV,
/// TIOCGETD, TIOCINQ.
pub(crate) fn get_int(fd: BorrowedFd<'_>, request: libc::Ioctl) -> io::Result<i32> {
    let mut v: libc::c_int = 0;
    // SAFETY: each of these requests writes one c_int through the pointer, which points at `v`.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), request, &mut v as *mut libc::c_int) };
    check(libc::c_long::from(ret))?;
    Ok(v)
}

/// An ioctl that reads one int through a pointer: TIOCSPTLCK, TIOCPKT.
pub(crate) fn set_int(fd: BorrowedFd<'_>, request: libc::Ioctl, value: i32) -> io::Result<()> {
    let v: libc::c_int = value;
    // SAFETY: each of these requests reads one c_int through the pointer, which points at `v`.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), request, &v as *const libc::c_int) };
    check(libc::c_long::from(ret)).map(drop)
}

/// VT_GETMODE of a virtual console: its switching mode (VT_AUTO 0, VT_PROCESS 1: the
/// switches wait for the signals of the process that set it).
pub(crate) fn vt_mode(fd: BorrowedFd<'_>) -> io::Result<u8> {
    /// struct vt_mode of linux/vt.h.
    #[repr(C)]
    #[derive(Default)]
    struct VtMode {
        mode: u8,
        waitv: u8,
        relsig: i16,
        acqsig: i16,
        frsig: i16,
    }
    const VT_GETMODE: libc::Ioctl = 0x5601;
    let mut m = VtMode::default();
    // SAFETY: VT_GETMODE writes one struct vt_mode through the pointer, which points at `m`
    // (laid out as the kernel's).
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), VT_GETMODE, &mut m as *mut VtMode) };
    check(libc::c_long::from(ret))?;
    Ok(m.mode)
}

/// TIOCEXCL: no further open of the terminal (but by CAP_SYS_ADMIN).
pub(crate) fn set_exclusive(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: TIOCEXCL takes no argument.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCEXCL) };
    check(libc::c_long::from(ret)).map(drop)
}

/// The terminal's modes with its speeds (TCGETS2; on a pty master: the slave's).
pub(crate) fn termios2(fd: BorrowedFd<'_>) -> io::Result<libc::termios2> {
    // SAFETY: termios2 is plain data; all zeroes is a valid value, overwritten just below.
    let mut t: libc::termios2 = unsafe { std::mem::zeroed() };
    // SAFETY: TCGETS2 writes one struct termios2 through the pointer, which points at `t`.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TCGETS2, &mut t as *mut libc::termios2) };
    check(libc::c_long::from(ret))?;
    Ok(t)
}

/// TCSETS2: sets the terminal's modes with its speeds, at once.
pub(crate) fn set_termios2(fd: BorrowedFd<'_>, t: &libc::termios2) -> io::Result<()> {
    // SAFETY: TCSETS2 reads one struct termios2 through the pointer, which points at `t`.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TCSETS2, t as *const libc::termios2) };
    check(libc::c_long::from(ret)).map(drop)
}

/// TIOCGWINSZ.
pub(crate) fn winsize(fd: BorrowedFd<'_>) -> io::Result<libc::winsize> {
    let mut w = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one struct winsize through the pointer, which points at `w`.
    let ret = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::TIOCGWINSZ,
            &mut w as *mut libc::winsize,
        )
    };
    check(libc::c_long::from(ret))?;
    Ok(w)
}

/// TIOCSWINSZ.
pub(crate) fn set_winsize(fd: BorrowedFd<'_>, w: &libc::winsize) -> io::Result<()> {
    // SAFETY: TIOCSWINSZ reads one struct winsize through the pointer, which points at `w`.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, w as *const libc::winsize) };
    check(libc::c_long::from(ret)).map(drop)
}

/// TIOCGPTPEER: a new open of the slave of pty master `fd`, with open flags `flags`.
pub(crate) fn open_peer(fd: BorrowedFd<'_>, flags: i32) -> io::Result<OwnedFd> {
    // SAFETY: TIOCGPTPEER takes the open flags as an int argument, no pointers; it returns a
    // new fd.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGPTPEER, flags) };
    owned_fd(libc::c_long::from(ret))
}

/// TCXONC: suspends (`TCOOFF`) or restarts (`TCOON`) output on terminal `fd`, as tcflow(3)
/// does; `TCOON` restarts only output a `TCOOFF` stopped.
pub(crate) fn flow(fd: BorrowedFd<'_>, action: libc::c_int) -> io::Result<()> {
    // SAFETY: TCXONC takes the action as an int argument, no pointers.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TCXONC, action) };
    check(libc::c_long::from(ret)).map(drop)
}

/// TIOCSTI: hands `byte` to the line discipline of terminal `fd` as if it had arrived on the
/// line (its input queue; on a pty master: what a read of the master returns). Needs
/// CAP_SYS_ADMIN on a terminal that is not the caller's controlling one.
pub(crate) fn insert_input(fd: BorrowedFd<'_>, byte: u8) -> io::Result<()> {
    // SAFETY: TIOCSTI reads one byte through the pointer, which points at `byte`.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSTI, &byte as *const u8) };
    check(libc::c_long::from(ret)).map(drop)
}
