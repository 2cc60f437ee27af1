//! `timers`: an interval timer and a POSIX timer running, their signals counted: both must
//! go on after a restore, the POSIX timer with its id and its value.
//!
//! ```text
//! timers                     ticks  -> alarm <SIGALRM count> rt <timer signals> id <timer id>
//!                            (setitimer ITIMER_REAL every 20 ms; a POSIX timer on
//!                            CLOCK_MONOTONIC every 15 ms signalling SIGRTMIN with value 0x1234)
//!                            orphan-timer -> <id>: a timer a thread made notifying itself
//!                            (SIGEV_THREAD_ID), armed an hour away, the thread ended since
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
            _ => unknown(verb),
        }
    }
}
