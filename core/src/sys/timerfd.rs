//! timerfd: create, arm, read back, set the unread expirations; and the clock they count on.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use super::{check, owned_fd};

/// `TFD_IOC_SET_TICKS` (`_IOW('T', 0, u64)`): sets the expirations a timerfd reports unread.
const TFD_IOC_SET_TICKS: libc::c_ulong = 0x4008_5400;

/// A new timerfd on `clockid` (`flags`: TFD_*).
pub(crate) fn timerfd_create(clockid: libc::c_int, flags: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: timerfd_create takes a clock id and flags, no pointers.
    owned_fd(libc::c_long::from(unsafe {
        libc::timerfd_create(clockid, flags)
    }))
}

/// A timespec of `ns` nanoseconds.
fn timespec(ns: u64) -> libc::timespec {
    libc::timespec {
        tv_sec: (ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (ns % 1_000_000_000) as libc::c_long,
    }
}

/// Arms (or disarms, `value_ns` 0) a timerfd: first expiration at `value_ns` (relative, or
/// absolute on its clock with TFD_TIMER_ABSTIME in `flags`), then every `interval_ns`.
pub(crate) fn timerfd_settime(
    fd: BorrowedFd<'_>,
    flags: libc::c_int,
    value_ns: u64,
    interval_ns: u64,
) -> io::Result<()> {
    let new = libc::itimerspec {
        it_interval: timespec(interval_ns),
        it_value: timespec(value_ns),
    };
    // SAFETY: timerfd_settime reads one itimerspec through `&new` and writes nothing (old
    // value pointer is null).
    let ret = unsafe { libc::timerfd_settime(fd.as_raw_fd(), flags, &new, std::ptr::null_mut()) };
    check(libc::c_long::from(ret)).map(drop)
}

/// The time left to the next expiration and the interval of a timerfd, in nanoseconds. On a
/// periodic timer that expired unread, the kernel first moves the expiration forward past now
/// and adds the expirations missed meanwhile to the unread count (what a read would do before
/// returning it): the count stays what the process will read, the timer armed.
pub(crate) fn timerfd_gettime(fd: BorrowedFd<'_>) -> io::Result<(u64, u64)> {
    let mut cur = libc::itimerspec {
        it_interval: timespec(0),
        it_value: timespec(0),
    };
    // SAFETY: timerfd_gettime writes one itimerspec through the pointer, which points at `cur`.
    let ret = unsafe { libc::timerfd_gettime(fd.as_raw_fd(), &mut cur) };
    check(libc::c_long::from(ret))?;
    Ok((nanos(&cur.it_value), nanos(&cur.it_interval)))
}

/// A timespec in nanoseconds (negative fields, which the kernel never returns here, as 0).
fn nanos(ts: &libc::timespec) -> u64 {
    let sec = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nsec = u64::try_from(ts.tv_nsec).unwrap_or(0);
    sec.saturating_mul(1_000_000_000).saturating_add(nsec)
}

/// Sets the unread expirations of a timerfd (kernels with CONFIG_CHECKPOINT_RESTORE).
pub(crate) fn timerfd_set_ticks(fd: BorrowedFd<'_>, ticks: u64) -> io::Result<()> {
    // SAFETY: TFD_IOC_SET_TICKS reads one u64 through the pointer, which points at `ticks`.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), TFD_IOC_SET_TICKS, &ticks as *const u64) };
    check(libc::c_long::from(ret)).map(drop)
}

/// The current time of `clockid` in nanoseconds. An alarm clock reads as the clock it wakes
/// on (clock_gettime of it needs an RTC to wake the system, which a timer on it does not).
pub(crate) fn clock_now_ns(clockid: libc::c_int) -> io::Result<u64> {
    let clockid = match clockid {
        libc::CLOCK_REALTIME_ALARM => libc::CLOCK_REALTIME,
        libc::CLOCK_BOOTTIME_ALARM => libc::CLOCK_BOOTTIME,
        other => other,
    };
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through the pointer, which points at `ts`.
    check(libc::c_long::from(unsafe {
        libc::clock_gettime(clockid, &mut ts)
    }))?;
    Ok(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}
