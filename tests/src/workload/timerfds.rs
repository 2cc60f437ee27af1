//! `timerfds [DEADLINE_MS]`: a timerfd of each arming cryo must bring back, at known numbers,
//! none of them read before the dump.
//!
//! ```text
//! fd 60  CLOCK_MONOTONIC relative, first in 20 ms, then every 20 ms
//! fd 61  CLOCK_MONOTONIC relative, first in 1 ms, then every hour: expired (and unread)
//!        before the mode answers
//! fd 62  CLOCK_MONOTONIC relative, every 10 ms: its expirations pile up unread
//! fd 63  CLOCK_REALTIME  TFD_TIMER_ABSTIME|TFD_TIMER_CANCEL_ON_SET, at start + DEADLINE_MS
//!        (default 1000), then every hour
//! fd 64  CLOCK_MONOTONIC TFD_TIMER_ABSTIME, at start + DEADLINE_MS, then every hour
//!
//! timerfds   get FD      -> <ns left> <interval ns>        (timerfd_gettime)
//!            info FD     -> <clockid> <settime flags, octal> (its own /proc/self/fdinfo)
//!            read FD     -> <expirations read> (0 if none: non-blocking)
//!            wait FD     -> <expirations read> (after up to 5 s of poll; 0 if none came)
//!            elapsed FD  -> <ms since FD was armed, on its clock>
//!            deadline FD -> <its first expiration, ns on its clock>
//! ```

use std::path::Path;

use super::{arg, failed, io_err, sys, unknown, Mode};

const MS: u64 = 1_000_000;
const HOUR: u64 = 3_600_000 * MS;

/// One timerfd of the mode: its fd, clock, when it was armed and its first expiration.
struct Timer {
    fd: i32,
    clock: i32,
    armed_ns: u64,
    deadline_ns: u64,
}

struct TimerFds {
    timers: Vec<Timer>,
}

/// Arms a timerfd as given and moves it to `want`.
fn arm(want: i32, clock: i32, flags: i32, in_ns: u64, interval_ns: u64) -> std::io::Result<Timer> {
    let now = sys::clock_ns(clock)?;
    let absolute = flags & libc::TFD_TIMER_ABSTIME != 0;
    let value = if absolute { now + in_ns } else { in_ns };
    let fd = sys::timerfd_armed(clock, flags, value, interval_ns)?;
    Ok(Timer {
        fd: sys::move_fd(fd, want)?,
        clock,
        armed_ns: now,
        deadline_ns: now + in_ns,
    })
}

/// `timerfds [DEADLINE_MS]`
pub fn start(args: &[String], _dir: &Path) -> Result<Box<dyn Mode>, String> {
    let deadline_ms: u64 = arg(args, 0, 1000)?;
    let abs = libc::TFD_TIMER_ABSTIME;
    let (mono, real) = (libc::CLOCK_MONOTONIC, libc::CLOCK_REALTIME);
    let setup = || -> std::io::Result<Vec<Timer>> {
        let timers = vec![
            arm(60, mono, 0, 20 * MS, 20 * MS)?,
            arm(61, mono, 0, MS, HOUR)?,
            arm(62, mono, 0, 10 * MS, 10 * MS)?,
            arm(
                63,
                real,
                abs | libc::TFD_TIMER_CANCEL_ON_SET,
                deadline_ms * MS,
                HOUR,
            )?,
            arm(64, mono, abs, deadline_ms * MS, HOUR)?,
        ];
        // Fd 61 has expired (unread) before anyone asks.
        sys::poll_in(61, 5_000)?;
        Ok(timers)
    };
    let timers = setup().map_err(failed("timerfds"))?;
    Ok(Box::new(TimerFds { timers }))
}

impl TimerFds {
    fn timer(&self, fd: &str) -> Result<&Timer, String> {
        let fd: i32 = fd.parse().map_err(|_| format!("bad fd {fd:?}"))?;
        self.timers
            .iter()
            .find(|t| t.fd == fd)
            .ok_or_else(|| format!("no timerfd at {fd}"))
    }
}

/// The expirations a non-blocking read of timerfd `fd` returns (0 if none).
fn read_ticks(fd: i32) -> Result<u64, String> {
    let data = sys::read_available(fd, 8).map_err(io_err)?;
    Ok(match data.try_into() {
        Ok(bytes) => u64::from_ne_bytes(bytes),
        Err(_) => 0,
    })
}

impl Mode for TimerFds {
    fn command(&mut self, verb: &str, args: &[&str]) -> Result<String, String> {
        let [fd] = args else {
            return unknown(verb);
        };
        let t = self.timer(fd)?;
        match verb {
            "get" => {
                let (left, interval) = sys::timerfd_get(t.fd).map_err(io_err)?;
                Ok(format!("{left} {interval}"))
            }
            "info" => {
                let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", t.fd))
                    .map_err(io_err)?;
                let field = |key: &str| {
                    info.lines()
                        .find_map(|l| l.strip_prefix(key))
                        .map(|v| v.trim().to_string())
                        .ok_or_else(|| format!("no {key} in {info:?}"))
                };
                Ok(format!(
                    "{} {}",
                    field("clockid:")?,
                    field("settime flags:")?
                ))
            }
            "read" => read_ticks(t.fd).map(|n| n.to_string()),
            "wait" => {
                sys::poll_in(t.fd, 5_000).map_err(io_err)?;
                read_ticks(t.fd).map(|n| n.to_string())
            }
            "elapsed" => {
                let now = sys::clock_ns(t.clock).map_err(io_err)?;
                Ok(((now - t.armed_ns) / MS).to_string())
            }
            "deadline" => Ok(t.deadline_ns.to_string()),
            _ => unknown(verb),
        }
    }
}
