//! `sigtrap`: a process with its own SIGTRAP handler, and a SIGTRAP it can hold pending, as
//! a debugger-aware runtime has: a dump's remote calls must neither eat nor reset them.
//!
//! ```text
//! sigtrap      raise -> <count> (raises SIGTRAP; the handler counts)   count -> <count>
//!              hold -> <pending 1|0> (blocks SIGTRAP, raises one: pending)
//!              release -> <count> (unblocks: the pending one reaches the handler)
//! ```

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{failed, sys, unknown, Mode};

/// SIGTRAPs handled so far.
static COUNT: AtomicU64 = AtomicU64::new(0);

extern "C" fn on_sigtrap(_sig: libc::c_int) {
    COUNT.fetch_add(1, Ordering::SeqCst);
}

struct Sigtrap;

/// `sigtrap`
pub fn start(_args: &[String], _dir: &Path) -> Result<Box<dyn Mode>, String> {
    sys::install_handler(libc::SIGTRAP, on_sigtrap).map_err(failed("sigaction"))?;
    Ok(Box::new(Sigtrap))
}

fn count() -> String {
    COUNT.load(Ordering::SeqCst).to_string()
}

impl Mode for Sigtrap {
    fn command(&mut self, verb: &str, args: &[&str]) -> Result<String, String> {
        match (verb, args) {
            ("count", []) => Ok(count()),
            ("raise", []) => {
                sys::raise(libc::SIGTRAP).map_err(failed("raise"))?;
                Ok(count())
            }
            ("hold", []) => {
                sys::block_signal(libc::SIGTRAP).map_err(failed("sigprocmask"))?;
                sys::raise(libc::SIGTRAP).map_err(failed("raise"))?;
                Ok(u8::from(sys::signal_pending(libc::SIGTRAP)).to_string())
            }
            ("release", []) => {
                sys::unblock_signal(libc::SIGTRAP).map_err(failed("sigprocmask"))?;
                Ok(count())
            }
            _ => unknown(verb),
        }
    }
}
