//! eventfd, timerfd and signalfd: small anonymous-inode files whose whole state is in fdinfo.
//!
//! ```text
//! eventfd   fdinfo eventfd-count (hex), eventfd-semaphore     -> eventfd(0) + write(count)
//! timerfd   fdinfo clockid, ticks, settime flags, it_value     -> timerfd_create + settime
//!           (time LEFT to the next expiration), it_interval       with the time left (relative;
//!                                                                 absolute again for ABSTIME)
//!                                                               + TFD_IOC_SET_TICKS for ticks
//! signalfd  fdinfo sigmask (hex)                               -> signalfd(-1, mask)
//! ```
//!
//! O_NONBLOCK comes from the description's flags. Unread timer expirations (`ticks`) are put
//! back with TFD_IOC_SET_TICKS where the kernel has it (CONFIG_CHECKPOINT_RESTORE); elsewhere
//! they are lost (the timer keeps its schedule, the expirations that happened before the dump
//! but were not read are not reported). A signalfd has no state of its own: pending signals
//! belong to the task and are restored with it.

use std::fs;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;

use cryo_proto::image::{EventFd, FileDesc, SignalFd, TimerFd};

use super::inspect::OpenFd;
use super::{restore_err, sys, FileError};

/// The whole fdinfo text of the fd.
pub(super) fn fdinfo(open: &OpenFd) -> Result<String, FileError> {
    let path = PathBuf::from(format!("/proc/{}/fdinfo/{}", open.pid, open.fd));
    fs::read_to_string(&path).map_err(|e| open.inspect_err("read", path, e))
}

/// The value of the `key:` line of an fdinfo text, trimmed.
pub(super) fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        (k.trim() == key).then_some(v.trim())
    })
}

/// A required `key:` of the fdinfo, parsed by `parse`.
fn required<T>(
    open: &OpenFd,
    text: &str,
    key: &str,
    parse: impl FnOnce(&str) -> Option<T>,
) -> Result<T, FileError> {
    field(text, key)
        .and_then(parse)
        .ok_or_else(|| open.dump_err(format!("fdinfo has no valid `{key}:` line: {text:?}")))
}

/// `(SEC, NSEC)` of a timerfd fdinfo, in nanoseconds.
fn parse_timespec(v: &str) -> Option<u64> {
    let (sec, nsec) = v.strip_prefix('(')?.strip_suffix(')')?.split_once(',')?;
    let sec: u64 = sec.trim().parse().ok()?;
    let nsec: u64 = nsec.trim().parse().ok()?;
    sec.checked_mul(1_000_000_000)?.checked_add(nsec)
}

/// The state of an eventfd.
pub(super) fn dump_eventfd(open: &OpenFd) -> Result<EventFd, FileError> {
    let text = fdinfo(open)?;
    let count = required(open, &text, "eventfd-count", |v| {
        u64::from_str_radix(v, 16).ok()
    })?;
    // Older kernels do not print it; EFD_SEMAPHORE is not in the file flags either.
    let semaphore = field(&text, "eventfd-semaphore") == Some("1");
    Ok(EventFd { count, semaphore })
}

/// The state of a timerfd.
pub(super) fn dump_timerfd(open: &OpenFd) -> Result<TimerFd, FileError> {
    let text = fdinfo(open)?;
    Ok(TimerFd {
        clockid: required(open, &text, "clockid", |v| v.parse().ok())?,
        ticks: required(open, &text, "ticks", |v| v.parse().ok())?,
        settime_flags: required(open, &text, "settime flags", |v| {
            u32::from_str_radix(v, 8).ok()
        })?,
        value_ns: required(open, &text, "it_value", parse_timespec)?,
        interval_ns: required(open, &text, "it_interval", parse_timespec)?,
    })
}

/// The state of a signalfd.
pub(super) fn dump_signalfd(open: &OpenFd) -> Result<SignalFd, FileError> {
    let text = fdinfo(open)?;
    let sigmask = required(open, &text, "sigmask", |v| u64::from_str_radix(v, 16).ok())?;
    Ok(SignalFd { sigmask })
}

/// O_NONBLOCK of the description, as the *_NONBLOCK flag of the creating call (they are all
/// O_NONBLOCK), plus close-on-exec for the temporary.
fn create_flags(desc: &FileDesc) -> libc::c_int {
    let nonblock = desc.flags & libc::O_NONBLOCK as u32 != 0;
    libc::O_CLOEXEC | if nonblock { libc::O_NONBLOCK } else { 0 }
}

/// Recreates an eventfd.
pub(super) fn open_eventfd(desc: &FileDesc, ev: &EventFd) -> Result<OwnedFd, FileError> {
    let sem = if ev.semaphore { libc::EFD_SEMAPHORE } else { 0 };
    let fd = sys::eventfd(create_flags(desc) | sem).map_err(|e| restore_err(desc, "eventfd", e))?;
    if ev.count != 0 {
        sys::eventfd_add(fd.as_fd(), ev.count).map_err(|e| {
            restore_err(desc, format!("set the eventfd counter to {}", ev.count), e)
        })?;
    }
    Ok(fd)
}

/// Recreates a timerfd with the time that was left to its next expiration.
pub(super) fn open_timerfd(desc: &FileDesc, t: &TimerFd) -> Result<OwnedFd, FileError> {
    let fd = sys::timerfd_create(t.clockid, create_flags(desc))
        .map_err(|e| restore_err(desc, format!("timerfd_create clock {}", t.clockid), e))?;
    if t.value_ns != 0 {
        let abstime = t.settime_flags & libc::TFD_TIMER_ABSTIME as u32 != 0;
        let (flags, value) = if abstime {
            // Same wall-clock deadline (CANCEL_ON_SET needs ABSTIME).
            let now =
                sys::clock_now_ns(t.clockid).map_err(|e| restore_err(desc, "clock_gettime", e))?;
            (
                t.settime_flags as libc::c_int,
                now.saturating_add(t.value_ns),
            )
        } else {
            (0, t.value_ns)
        };
        sys::timerfd_settime(fd.as_fd(), flags, value, t.interval_ns)
            .map_err(|e| restore_err(desc, "timerfd_settime", e))?;
    }
    if t.ticks != 0 {
        // ENOTTY without CONFIG_CHECKPOINT_RESTORE: the unread expirations are lost.
        let _ = sys::timerfd_set_ticks(fd.as_fd(), t.ticks);
    }
    Ok(fd)
}

/// Recreates a signalfd.
pub(super) fn open_signalfd(desc: &FileDesc, s: &SignalFd) -> Result<OwnedFd, FileError> {
    sys::signalfd(s.sigmask, create_flags(desc)).map_err(|e| restore_err(desc, "signalfd", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timerfd_fdinfo_is_parsed() {
        let text = "pos:\t0\nflags:\t02004002\nmnt_id:\t15\nino:\t1057\nclockid: 1\nticks: 3\n\
                    settime flags: 01\nit_value: (0, 49406829)\nit_interval: (1, 5)\n";
        assert_eq!(field(text, "settime flags"), Some("01"));
        assert_eq!(field(text, "clockid"), Some("1"));
        assert_eq!(
            parse_timespec(field(text, "it_value").unwrap()),
            Some(49406829)
        );
        assert_eq!(
            parse_timespec(field(text, "it_interval").unwrap()),
            Some(1_000_000_005)
        );
        assert_eq!(parse_timespec("(x, 1)"), None);
    }

    #[test]
    fn eventfd_fdinfo_is_parsed() {
        let text = "pos:\t0\nflags:\t04002\neventfd-count:                5\neventfd-id: 1\n\
                    eventfd-semaphore: 1\n";
        assert_eq!(field(text, "eventfd-count"), Some("5"));
        assert_eq!(field(text, "eventfd-semaphore"), Some("1"));
        assert_eq!(field(text, "sigmask"), None);
    }
}
