//! `timers`: an interval timer and a POSIX timer running, their signals counted: both must
//! go on after a restore, the POSIX timer with its id and its value.
//!
//! ```text
//! timers                     ticks  -> alarm <SIGALRM count> rt <timer signals> id <timer id>
//!                            (setitimer ITIMER_REAL every 20 ms; a POSIX timer on
//!                            CLOCK_MONOTONIC every 15 ms signalling SIGRTMIN with value 0x1234)
//! ```

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{failed, sys, unknown, Mode};

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
            _ => unknown(verb),
        }
    }
}
