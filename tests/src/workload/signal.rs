//! `signal`: a SIGUSR1 handler that counts, and SIGUSR2 and SIGRTMIN+1 blocked so they stay
//! pending. The SIGUSR1 counter and handler serve the children of other modes too.
//!
//! ```text
//! signal                     count  -> SIGUSR1 handler runs   pending -> 1|0 (SIGUSR2)
//!                            take-rt -> <si_value>:<si_pid> ... (every SIGRTMIN+1 pending,
//!                            taken in order: sigtimedwait, no wait), or `none`
//! ```

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{failed, sys, unknown, Mode};

/// SIGUSR1s handled so far.
static SIGUSR1_COUNT: AtomicU64 = AtomicU64::new(0);

/// The SIGUSR1 handler: counts.
pub extern "C" fn on_sigusr1(_sig: libc::c_int) {
    SIGUSR1_COUNT.fetch_add(1, Ordering::SeqCst);
}

struct Signal;

/// `signal`
pub fn start(_args: &[String], _dir: &Path) -> Result<Box<dyn Mode>, String> {
    sys::install_sigusr1(on_sigusr1).map_err(failed("sigaction"))?;
    sys::block_signal(libc::SIGUSR2).map_err(failed("sigprocmask"))?;
    sys::block_signal(libc::SIGRTMIN() + 1).map_err(failed("sigprocmask"))?;
    Ok(Box::new(Signal))
}

impl Mode for Signal {
    fn command(&mut self, verb: &str, args: &[&str]) -> Result<String, String> {
        match (verb, args) {
            ("count", []) => Ok(SIGUSR1_COUNT.load(Ordering::SeqCst).to_string()),
            ("pending", []) => Ok(u8::from(sys::sigusr2_pending()).to_string()),
            ("take-rt", []) => {
                let mut taken = Vec::new();
                while let Some(info) = sys::take_pending(libc::SIGRTMIN() + 1) {
                    // SAFETY: a siginfo sigtimedwait filled for a queued signal (sigqueue,
                    // kill): its si_value and si_pid are set (sival_int: the low half of the pointer).
                    let (value, pid) =
                        unsafe { (info.si_value().sival_ptr as usize as i32, info.si_pid()) };
                    taken.push(format!("{value}:{pid}"));
                }
                Ok(if taken.is_empty() {
                    "none".into()
                } else {
                    taken.join(" ")
                })
            }
            _ => unknown(verb),
        }
    }
}
