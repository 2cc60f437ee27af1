//! timerfd: its whole state is in fdinfo, once a periodic timer that expired unread is settled.
//!
//! ```text
//! dump     pidfd_getfd + timerfd_gettime   a periodic timer that expired unread is moved past
//!                                          now, its missed periods added to `ticks` (what the
//!                                          process's own read would do first): fdinfo then
//!                                          says "armed"; without it, 0 left = disarmed
//!          fdinfo clockid, ticks, settime flags, it_value (time LEFT), it_interval
//!          ABSTIME: the deadline on its clock (now + left), and the boot for boot clocks
//! restore  timerfd_create + settime:
//!            relative  the time left (the timer pauses while the process is not running)
//!            ABSTIME   the same deadline (on a boot clock: on the same boot only, else the
//!                      time left); a deadline passed meanwhile counts its expirations and
//!                      arms the next period; CANCEL_ON_SET kept
//!          + TFD_IOC_SET_TICKS for the unread expirations (refused at dump if the kernel
//!            lacks it)
//! ```
//!
//! O_NONBLOCK comes from the description's flags. A CANCEL_ON_SET timer with unread expirations
//! is refused (temporary): a clock change may have cancelled it (its read would then fail with
//! ECANCELED, and fdinfo counts the cancellation as one expiration, telling nothing more).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::OnceLock;

use cryo_proto::image::{file_desc::Kind, FileDesc, TimerFd};

use super::inspect::{fdinfo, required, OpenFd};
use super::kind::{task_pidfd, Dumping, FileKind, Opened, Opening};
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
        let pidfd = task_pidfd(fd.open, fd.pidfd)?;
        dump(fd.open, pidfd).map(Kind::Timerfd)
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

/// True for the clocks that count from boot: their readings mean nothing on another boot.
fn counts_from_boot(clockid: i32) -> bool {
    !matches!(
        clockid,
        libc::CLOCK_REALTIME | libc::CLOCK_REALTIME_ALARM | libc::CLOCK_TAI
    )
}

/// Whether this kernel sets a timerfd's unread expirations (TFD_IOC_SET_TICKS, present with
/// CONFIG_CHECKPOINT_RESTORE): tried once on a timerfd of cryo's own.
fn can_set_ticks() -> bool {
    static CAN: OnceLock<bool> = OnceLock::new();
    *CAN.get_or_init(|| {
        sys::timerfd::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_CLOEXEC)
            .and_then(|fd| sys::timerfd::timerfd_set_ticks(fd.as_fd(), 1))
            .is_ok()
    })
}

/// The state of the timerfd `open` of the task behind `pidfd`.
fn dump(open: &OpenFd, pidfd: BorrowedFd<'_>) -> Result<TimerFd, FileError> {
    // Settle first (see the module doc): the same description, so the same timer.
    let dup = sys::pidfd::pidfd_getfd(pidfd, open.fd)
        .map_err(|e| open.inspect_err("pidfd_getfd", open.proc_path(), e))?;
    sys::timerfd::timerfd_gettime(dup.as_fd())
        .map_err(|e| open.inspect_err("timerfd_gettime", open.proc_path(), e))?;
    let text = fdinfo(open)?;
    let mut t = TimerFd {
        clockid: required(open, &text, "clockid", |v| v.parse().ok())?,
        ticks: required(open, &text, "ticks", |v| v.parse().ok())?,
        settime_flags: required(open, &text, "settime flags", |v| {
            u32::from_str_radix(v, 8).ok()
        })?,
        value_ns: required(open, &text, "it_value", parse_timespec)?,
        interval_ns: required(open, &text, "it_interval", parse_timespec)?,
        deadline_ns: 0,
        boot_id: String::new(),
    };
    if t.settime_flags & libc::TFD_TIMER_ABSTIME as u32 != 0 && t.value_ns != 0 {
        // Read after fdinfo: the deadline comes out late by the time between, never early.
        let now = sys::timerfd::clock_now_ns(t.clockid)
            .map_err(|e| open.dump_err(format!("clock_gettime of clock {}: {e}", t.clockid)))?;
        t.deadline_ns = now.saturating_add(t.value_ns);
        if counts_from_boot(t.clockid) {
            t.boot_id = crate::proc::boot_id().map_err(|e| open.dump_err(format!("read the boot id: {e}")))?;
        }
    }
    if t.ticks != 0 && t.settime_flags & libc::TFD_TIMER_CANCEL_ON_SET as u32 != 0 {
        return Err(open.dump_err(format!(
            "timerfd (TFD_TIMER_CANCEL_ON_SET) with {} unread expirations: a clock change may \
             have cancelled it, which only its read tells (ECANCELED): a temporary state, retry \
             once the process has read it",
            t.ticks
        )));
    }
    if t.ticks != 0 && !can_set_ticks() {
        return Err(open.dump_err(format!(
            "timerfd with {} unread expirations: this kernel cannot set them back \
             (TFD_IOC_SET_TICKS needs CONFIG_CHECKPOINT_RESTORE)",
            t.ticks
        )));
    }
    Ok(t)
}

/// How a restored timerfd is armed: `settime` arguments and the unread expirations to set.
#[derive(Debug, PartialEq, Eq)]
struct Arming {
    flags: i32,
    value_ns: u64,
    interval_ns: u64,
    ticks: u64,
}

/// How to arm `t` again, `now` being its clock's time (`same_boot`: the restore runs on the
/// boot the dump saw).
fn arming(t: &TimerFd, now: u64, same_boot: bool) -> Arming {
    let flags = t.settime_flags as i32;
    let abstime = flags & libc::TFD_TIMER_ABSTIME != 0;
    let mut a = Arming {
        flags,
        value_ns: t.value_ns,
        interval_ns: t.interval_ns,
        ticks: t.ticks,
    };
    if t.value_ns == 0 {
        // Disarmed, with its flags (fdinfo shows them; CANCEL_ON_SET stays registered).
        a.interval_ns = 0;
        return a;
    }
    if !abstime {
        return a;
    }
    let keep_deadline = t.deadline_ns != 0 && (!counts_from_boot(t.clockid) || same_boot);
    if !keep_deadline {
        a.value_ns = now.saturating_add(t.value_ns);
        return a;
    }
    a.value_ns = t.deadline_ns;
    if t.deadline_ns <= now {
        // Passed while the process was away: it expired then, and every period since.
        a.ticks = a.ticks.saturating_add(1);
        match (now - t.deadline_ns).checked_div(t.interval_ns) {
            None => {
                a.value_ns = 0;
                a.interval_ns = 0;
            }
            Some(more) => {
                a.ticks = a.ticks.saturating_add(more);
                a.value_ns = t
                    .deadline_ns
                    .saturating_add((more + 1).saturating_mul(t.interval_ns));
            }
        }
    }
    a
}

/// Recreates a timerfd: armed as [`arming`] says, then its unread expirations set.
fn open(desc: &FileDesc, t: &TimerFd) -> Result<OwnedFd, FileError> {
    let fd = sys::timerfd::timerfd_create(t.clockid, create_flags(desc))
        .map_err(|e| restore_err(desc, format!("timerfd_create clock {}", t.clockid), e))?;
    let now = sys::timerfd::clock_now_ns(t.clockid)
        .map_err(|e| restore_err(desc, "clock_gettime", e))?;
    let same_boot = !t.boot_id.is_empty() && crate::proc::boot_id().is_ok_and(|b| b == t.boot_id);
    let a = arming(t, now, same_boot);
    if a.value_ns != 0 || a.flags != 0 {
        sys::timerfd::timerfd_settime(fd.as_fd(), a.flags, a.value_ns, a.interval_ns)
            .map_err(|e| restore_err(desc, "timerfd_settime", e))?;
    }
    if a.ticks != 0 {
        // After settime, which zeroes them. An expiration falling between the two calls
        // (microseconds) would be overwritten: the next one is at least a period away unless
        // the time left was that short.
        sys::timerfd::timerfd_set_ticks(fd.as_fd(), a.ticks)
            .map_err(|e| restore_err(desc, "TFD_IOC_SET_TICKS", e))?;
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

    fn timer(flags: i32, value_ns: u64, interval_ns: u64, deadline_ns: u64) -> TimerFd {
        TimerFd {
            clockid: libc::CLOCK_REALTIME,
            settime_flags: flags as u32,
            value_ns,
            interval_ns,
            ticks: 2,
            deadline_ns,
            boot_id: String::new(),
        }
    }

    #[test]
    fn a_relative_timer_gets_its_time_left() {
        let a = arming(&timer(0, 30, 100, 0), 1_000, true);
        assert_eq!((a.flags, a.value_ns, a.interval_ns, a.ticks), (0, 30, 100, 2));
    }

    #[test]
    fn an_absolute_timer_keeps_its_deadline_and_counts_the_periods_it_missed() {
        let abs = libc::TFD_TIMER_ABSTIME | libc::TFD_TIMER_CANCEL_ON_SET;
        let t = timer(abs, 30, 100, 1_030);
        assert_eq!(arming(&t, 1_010, true).value_ns, 1_030);
        // Passed 250 ns ago: expired at 1030, 1130, 1230; next at 1330.
        let a = arming(&t, 1_280, true);
        assert_eq!((a.flags, a.value_ns, a.ticks), (abs, 1_330, 5));
        // A one-shot that passed: one more expiration, disarmed.
        let a = arming(&timer(abs, 30, 0, 1_030), 2_000, true);
        assert_eq!((a.value_ns, a.interval_ns, a.ticks), (0, 0, 3));
    }

    #[test]
    fn a_boot_clock_deadline_holds_on_its_own_boot_only() {
        let mut t = timer(libc::TFD_TIMER_ABSTIME, 30, 100, 1_030);
        t.clockid = libc::CLOCK_MONOTONIC;
        assert_eq!(arming(&t, 1_010, true).value_ns, 1_030);
        assert_eq!(arming(&t, 5_000, false).value_ns, 5_030);
    }

    #[test]
    fn a_disarmed_timer_keeps_its_flags() {
        let a = arming(&timer(libc::TFD_TIMER_ABSTIME, 0, 100, 0), 1_000, true);
        assert_eq!((a.flags, a.value_ns, a.interval_ns), (libc::TFD_TIMER_ABSTIME, 0, 0));
    }
}
