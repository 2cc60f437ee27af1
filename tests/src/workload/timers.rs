//! `timers`: an interval timer and a POSIX timer running, their signals counted: both must
//! go on after a restore, the POSIX timer with its id and its value.
//!
//! ```text
//! timers                     ticks  -> alarm <SIGALRM count> rt <timer signals> id <timer id>
//!                            (setitimer ITIMER_REAL every 20 ms; a POSIX timer on
//!                            CLOCK_MONOTONIC every 15 ms signalling SIGRTMIN with value 0x1234)
//!                            orphan-timer -> <id>: a timer a thread made notifying itself
//!                            (SIGEV_THREAD_ID), armed an hour away, the thread ended since
//!                            realtime-timer abs|rel|none -> <id> <deadline ns>: a timer on
//!                            CLOCK_REALTIME an hour away (SIGRTMIN+4, a handler doing
//!                            nothing), armed with TIMER_ABSTIME at a whole second (abs),
//!                            relative (rel), or relative with SIGEV_NONE (none)
//!                            arm-once <ms> -> <id>: a one-shot CLOCK_MONOTONIC timer
//!                            (SIGRTMIN+8, blocked) armed ms milliseconds away
//!                            take-once <id> -> `<taken>; then <taken>; armed <bool>`: its
//!                            signal waited for (up to 10 s), then taken again (no wait), and
//!                            whether the timer is still armed
//!                            deadline <id> -> <ns>: the timer's deadline as the process sees
//!                            it: CLOCK_REALTIME now plus timer_gettime's time left
//!                            pending-timers -> <a> <b>: two one-shot CLOCK_MONOTONIC timers
//!                            expired at once, their signals (SIGRTMIN+5, +6) blocked and
//!                            pending
//!                            pending-periodic -> <id>: a periodic one (every second, on
//!                            SIGRTMIN+7) expired at once, its signal blocked and pending
//!                            take-periodic <id> -> `none` or `timer <id> overrun ...`: its
//!                            SIGRTMIN+7 taken (sigtimedwait, no wait)
//!                            rearm-take <a> <b> -> a <taken> b <taken>: timer a armed again
//!                            (an hour away), then SIGRTMIN+5 and +6 taken (sigtimedwait, no
//!                            wait): `none`, or `timer <si_timerid> overrun <si_overrun>
//!                            getoverrun <timer_getoverrun>`
//! ```

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{failed, io_err, sys, unknown, Mode};

static ALARMS: AtomicU64 = AtomicU64::new(0);
static RT_TICKS: AtomicU64 = AtomicU64::new(0);
static RT_BAD_VALUE: AtomicU64 = AtomicU64::new(0);
const TIMER_VALUE: usize = 0x1234;

extern "C" fn on_alarm(_sig: libc::c_int) {
    ALARMS.fetch_add(1, Ordering::SeqCst);
}

extern "C" fn on_timer(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    let value = unsafe { (*info).si_value().sival_ptr } as usize;
    if value == TIMER_VALUE {
        RT_TICKS.fetch_add(1, Ordering::SeqCst);
    } else {
        RT_BAD_VALUE.fetch_add(1, Ordering::SeqCst);
    }
}

struct Timers {
    id: i32,
}

/// `timers`
pub fn start(_args: &[String], _dir: &Path) -> Result<Box<dyn Mode>, String> {
    let id = sys::start_timers(on_alarm, on_timer, TIMER_VALUE).map_err(failed("timers"))?;
    Ok(Box::new(Timers { id }))
}

impl Mode for Timers {
    fn command(&mut self, verb: &str, args: &[&str]) -> Result<String, String> {
        match (verb, args) {
            ("ticks", []) => Ok(format!(
                "alarm {} rt {} id {} bad {}",
                ALARMS.load(Ordering::SeqCst),
                RT_TICKS.load(Ordering::SeqCst),
                self.id,
                RT_BAD_VALUE.load(Ordering::SeqCst)
            )),
            ("orphan-timer", []) => {
                // A thread makes a timer notifying itself (SIGEV_THREAD_ID), armed an hour
                // away, and ends: the timer stays, its thread gone.
                let made = std::thread::spawn(|| {
                    // SAFETY: sigevent is plain data; the fields set are the ones
                    // SIGEV_THREAD_ID reads.
                    let mut ev: libc::sigevent = unsafe { std::mem::zeroed() };
                    ev.sigev_notify = libc::SIGEV_THREAD_ID;
                    ev.sigev_signo = libc::SIGRTMIN() + 3;
                    // SAFETY: gettid takes nothing.
                    ev.sigev_notify_thread_id = unsafe { libc::gettid() };
                    let mut timer: libc::timer_t = std::ptr::null_mut();
                    // SAFETY: ev and timer are live for the calls; the itimerspec is ours.
                    unsafe {
                        if libc::timer_create(libc::CLOCK_MONOTONIC, &mut ev, &mut timer) < 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                        let mut when: libc::itimerspec = std::mem::zeroed();
                        when.it_value.tv_sec = 3600;
                        if libc::timer_settime(timer, 0, &when, std::ptr::null_mut()) < 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                    Ok(timer as usize)
                })
                .join()
                .map_err(|_| "the timer's thread panicked".to_string())?;
                made.map(|t| t.to_string()).map_err(io_err)
            }
            ("realtime-timer", [how]) => realtime_timer(how).map_err(io_err),
            ("pending-timers", []) => {
                let a = expired_timer(5, 0).map_err(io_err)?;
                let b = expired_timer(6, 0).map_err(io_err)?;
                Ok(format!("{a} {b}"))
            }
            ("pending-periodic", []) => expired_timer(7, 1).map(|c| c.to_string()).map_err(io_err),
            ("take-periodic", [id]) => {
                let id: usize = id.parse().map_err(|_| format!("bad timer id {id:?}"))?;
                take(libc::SIGRTMIN() + 7, id).map_err(io_err)
            }
            ("rearm-take", [a, b]) => {
                let a: usize = a.parse().map_err(|_| format!("bad timer id {a:?}"))?;
                let b: usize = b.parse().map_err(|_| format!("bad timer id {b:?}"))?;
                arm(a, 0, 3600, 0).map_err(io_err)?;
                Ok(format!(
                    "a {} b {}",
                    take(libc::SIGRTMIN() + 5, a).map_err(io_err)?,
                    take(libc::SIGRTMIN() + 6, b).map_err(io_err)?
                ))
            }
            ("arm-once", [ms]) => {
                let ms: i64 = ms.parse().map_err(|_| format!("bad delay {ms:?}"))?;
                once_timer(8, ms).map(|id| id.to_string()).map_err(io_err)
            }
            ("take-once", [id]) => {
                let id: usize = id.parse().map_err(|_| format!("bad timer id {id:?}"))?;
                let sig = libc::SIGRTMIN() + 8;
                let first = take_within(sig, id, 10).map_err(io_err)?;
                let then = take(sig, id).map_err(io_err)?;
                let left = deadline(id).map_err(io_err)? - realtime_now().map_err(io_err)?;
                Ok(format!("{first}; then {then}; armed {}", left > 0))
            }
            ("deadline", [id]) => {
                let id: usize = id.parse().map_err(|_| format!("bad timer id {id:?}"))?;
                deadline(id).map(|ns| ns.to_string()).map_err(io_err)
            }
            _ => unknown(verb),
        }
    }
}

extern "C" fn ignore(_sig: libc::c_int) {}

/// CLOCK_REALTIME now, in ns.
fn realtime_now() -> std::io::Result<i128> {
    // SAFETY: timespec is plain data; clock_gettime fills it.
    let mut now: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: a valid clock and a live timespec.
    if unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut now) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(now.tv_sec as i128 * 1_000_000_000 + now.tv_nsec as i128)
}

/// `realtime-timer HOW`: a CLOCK_REALTIME timer an hour away; its id and deadline.
fn realtime_timer(how: &str) -> std::io::Result<String> {
    let sig = libc::SIGRTMIN() + 4;
    // SAFETY: sigaction is plain data; zeroed is a valid starting value.
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    sa.sa_sigaction = ignore as extern "C" fn(libc::c_int) as usize;
    sa.sa_flags = libc::SA_RESTART;
    // SAFETY: sa is fully initialised; the handler does nothing.
    if unsafe { libc::sigaction(sig, &sa, std::ptr::null_mut()) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: sigevent is plain data; zeroed is a valid starting value.
    let mut ev: libc::sigevent = unsafe { std::mem::zeroed() };
    ev.sigev_notify = if how == "none" {
        libc::SIGEV_NONE
    } else {
        libc::SIGEV_SIGNAL
    };
    ev.sigev_signo = sig;
    let mut timer: libc::timer_t = std::ptr::null_mut();
    // SAFETY: ev and timer are live for the call.
    if unsafe { libc::timer_create(libc::CLOCK_REALTIME, &mut ev, &mut timer) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let now = realtime_now()?;
    let (flags, value, deadline) = if how == "abs" {
        let at = (now / 1_000_000_000 + 3600) as libc::time_t;
        (libc::TIMER_ABSTIME, at, at as i128 * 1_000_000_000)
    } else {
        (0, 3600, now + 3600 * 1_000_000_000)
    };
    // SAFETY: itimerspec is plain data.
    let mut when: libc::itimerspec = unsafe { std::mem::zeroed() };
    when.it_value.tv_sec = value;
    // SAFETY: a timer of ours and a live itimerspec; no old value wanted.
    if unsafe { libc::timer_settime(timer, flags, &when, std::ptr::null_mut()) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(format!("{} {deadline}", timer as usize))
}

/// `deadline ID`: CLOCK_REALTIME now plus the time left of timer ID.
fn deadline(id: usize) -> std::io::Result<i128> {
    // SAFETY: itimerspec is plain data; timer_gettime fills it.
    let mut left: libc::itimerspec = unsafe { std::mem::zeroed() };
    // SAFETY: the id of a timer of this process, and a live itimerspec.
    if unsafe { libc::timer_gettime(id as libc::timer_t, &mut left) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let now = realtime_now()?;
    Ok(now + left.it_value.tv_sec as i128 * 1_000_000_000 + left.it_value.tv_nsec as i128)
}

/// timer_settime of timer `id`: `flags`, first expiry `secs` s + `nsecs` ns, no period.
fn arm(id: usize, flags: i32, secs: i64, nsecs: i64) -> std::io::Result<()> {
    // SAFETY: itimerspec is plain data.
    let mut when: libc::itimerspec = unsafe { std::mem::zeroed() };
    when.it_value.tv_sec = secs as libc::time_t;
    when.it_value.tv_nsec = nsecs;
    // SAFETY: a timer of this process and a live itimerspec; no old value wanted.
    if unsafe { libc::timer_settime(id as libc::timer_t, flags, &when, std::ptr::null_mut()) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// A CLOCK_MONOTONIC timer on SIGRTMIN+`n` (blocked), every `period` seconds (0: once),
/// expired at once; returned once its signal is pending.
fn expired_timer(n: i32, period: i64) -> std::io::Result<usize> {
    let sig = libc::SIGRTMIN() + n;
    super::sys::block_signal(sig)?;
    // SAFETY: sigevent is plain data; zeroed is a valid starting value.
    let mut ev: libc::sigevent = unsafe { std::mem::zeroed() };
    ev.sigev_notify = libc::SIGEV_SIGNAL;
    ev.sigev_signo = sig;
    let mut timer: libc::timer_t = std::ptr::null_mut();
    // SAFETY: ev and timer are live for the call.
    if unsafe { libc::timer_create(libc::CLOCK_MONOTONIC, &mut ev, &mut timer) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: itimerspec is plain data.
    let mut when: libc::itimerspec = unsafe { std::mem::zeroed() };
    when.it_value.tv_nsec = 1;
    when.it_interval.tv_sec = period as libc::time_t;
    // SAFETY: our timer and a live itimerspec; no old value wanted.
    if unsafe { libc::timer_settime(timer, 0, &when, std::ptr::null_mut()) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        // SAFETY: sigset_t is plain data that sigpending fills.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: a live sigset_t.
        if unsafe { libc::sigpending(&mut set) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a sigset_t sigpending filled.
        if unsafe { libc::sigismember(&set, sig) } == 1 {
            return Ok(timer as usize);
        }
        if std::time::Instant::now() > deadline {
            return Err(std::io::Error::other("the timer's signal never came"));
        }
        std::thread::yield_now();
    }
}

/// A one-shot CLOCK_MONOTONIC timer on SIGRTMIN+`n` (blocked), armed `ms` milliseconds away.
fn once_timer(n: i32, ms: i64) -> std::io::Result<usize> {
    super::sys::block_signal(libc::SIGRTMIN() + n)?;
    // SAFETY: sigevent is plain data; zeroed is a valid starting value.
    let mut ev: libc::sigevent = unsafe { std::mem::zeroed() };
    ev.sigev_notify = libc::SIGEV_SIGNAL;
    ev.sigev_signo = libc::SIGRTMIN() + n;
    let mut timer: libc::timer_t = std::ptr::null_mut();
    // SAFETY: ev and timer are live for the call.
    if unsafe { libc::timer_create(libc::CLOCK_MONOTONIC, &mut ev, &mut timer) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    arm(timer as usize, 0, ms / 1000, ms % 1000 * 1_000_000)?;
    Ok(timer as usize)
}

/// Takes `sig` if pending (no wait): `none`, or what its siginfo and timer `id` say.
fn take(sig: i32, id: usize) -> std::io::Result<String> {
    take_within(sig, id, 0)
}

/// [`take`], waiting up to `secs` seconds for it.
fn take_within(sig: i32, id: usize, secs: i64) -> std::io::Result<String> {
    // SAFETY: sigset_t is plain data, emptied by sigemptyset before use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: a live sigset_t and a valid signal number.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
    }
    // SAFETY: siginfo_t is plain data that sigtimedwait fills.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let wait = libc::timespec {
        tv_sec: secs as libc::time_t,
        tv_nsec: 0,
    };
    let until = std::time::Instant::now() + std::time::Duration::from_secs(secs as u64);
    loop {
        // SAFETY: a live set, siginfo and timespec.
        if unsafe { libc::sigtimedwait(&set, &mut info, &wait) } >= 0 {
            break;
        }
        let e = std::io::Error::last_os_error();
        // The mode's handlers (its interval timers) interrupt a wait.
        if e.raw_os_error() == Some(libc::EINTR) && std::time::Instant::now() < until {
            continue;
        }
        return if e.raw_os_error() == Some(libc::EAGAIN) {
            Ok("none".into())
        } else {
            Err(e)
        };
    }
    // SIGEV_SIGNAL's siginfo (_timer): si_timerid then si_overrun after the header.
    // SAFETY: siginfo_t is at least 128 bytes; the two ints are read from its bytes.
    let raw: [u8; 128] = unsafe { std::mem::transmute(info) };
    let word = |at: usize| i32::from_ne_bytes([raw[at], raw[at + 1], raw[at + 2], raw[at + 3]]);
    // SAFETY: the id of a timer of this process.
    let getoverrun = unsafe { libc::timer_getoverrun(id as libc::timer_t) };
    Ok(format!(
        "timer {} overrun {} getoverrun {getoverrun}",
        word(16),
        word(20)
    ))
}
