//! timerfd: its whole state is in fdinfo.
//!
//! ```text
//! timerfd   fdinfo clockid, ticks, settime flags, it_value     -> timerfd_create + settime
//!           (time LEFT to the next expiration), it_interval       with the time left (relative;
//!                                                                 absolute again for ABSTIME)
//!                                                               + TFD_IOC_SET_TICKS for ticks
//! ```
//!
//! O_NONBLOCK comes from the description's flags. Unread timer expirations (`ticks`) are put
//! back with TFD_IOC_SET_TICKS where the kernel has it (CONFIG_CHECKPOINT_RESTORE); elsewhere
//! they are lost (the timer keeps its schedule, the expirations that happened before the dump
//! but were not read are not reported).

use std::os::fd::{AsFd, OwnedFd};

use cryo_proto::image::{file_desc::Kind, FileDesc, TimerFd};

use super::inspect::{fdinfo, required, OpenFd};
use super::kind::{Dumping, FileKind, Opened, Opening};
use super::open::create_flags;
use super::{restore_err, FileError};
use crate::sys;

/// timerfd instances.
pub(super) struct TimerFds;

impl FileKind for TimerFds {
    type Record = TimerFd;

    fn record(kind: &Kind) -> Option<&TimerFd> {
        match kind {
            Kind::Timerfd(t) => Some(t),
            _ => None,
        }
    }

    fn claims(&self, fd: &Dumping<'_>) -> bool {
        fd.seen.is_anon("timerfd")
    }

    fn dump(&self, fd: &mut Dumping<'_>) -> Result<Kind, FileError> {
        dump(fd.open).map(Kind::Timerfd)
    }

    fn open(
        &self,
        desc: &FileDesc,
        t: &TimerFd,
        _cx: &mut Opening<'_>,
    ) -> Result<Opened, FileError> {
        open(desc, t).map(Opened::Now)
    }

    fn describe(&self, _desc: &FileDesc, t: &TimerFd) -> String {
        format!("timerfd (clock {})", t.clockid)
    }
}

/// `(SEC, NSEC)` of a timerfd fdinfo, in nanoseconds.
fn parse_timespec(v: &str) -> Option<u64> {
    let (sec, nsec) = v.strip_prefix('(')?.strip_suffix(')')?.split_once(',')?;
    let sec: u64 = sec.trim().parse().ok()?;
    let nsec: u64 = nsec.trim().parse().ok()?;
    sec.checked_mul(1_000_000_000)?.checked_add(nsec)
}

/// The state of a timerfd.
fn dump(open: &OpenFd) -> Result<TimerFd, FileError> {
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

/// Recreates a timerfd with the time that was left to its next expiration.
fn open(desc: &FileDesc, t: &TimerFd) -> Result<OwnedFd, FileError> {
    let fd = sys::timerfd::timerfd_create(t.clockid, create_flags(desc))
        .map_err(|e| restore_err(desc, format!("timerfd_create clock {}", t.clockid), e))?;
    if t.value_ns != 0 {
        let abstime = t.settime_flags & libc::TFD_TIMER_ABSTIME as u32 != 0;
        let (flags, value) = if abstime {
            // Same wall-clock deadline (CANCEL_ON_SET needs ABSTIME).
            let now =
                sys::timerfd::clock_now_ns(t.clockid).map_err(|e| restore_err(desc, "clock_gettime", e))?;
            (
                t.settime_flags as libc::c_int,
                now.saturating_add(t.value_ns),
            )
        } else {
            (0, t.value_ns)
        };
        sys::timerfd::timerfd_settime(fd.as_fd(), flags, value, t.interval_ns)
            .map_err(|e| restore_err(desc, "timerfd_settime", e))?;
    }
    if t.ticks != 0 {
        // ENOTTY without CONFIG_CHECKPOINT_RESTORE: the unread expirations are lost.
        let _ = sys::timerfd::timerfd_set_ticks(fd.as_fd(), t.ticks);
    }
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::inspect::field;

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
}
