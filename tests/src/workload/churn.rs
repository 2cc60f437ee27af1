//! `churn`: a thread that forks short-lived children (`churn forks`) or starts short-lived
//! threads (`churn threads`) over and over, as a busy pre-fork server or a thread pool does:
//! the tree a dump reads keeps changing until it is frozen.
//!
//! ```text
//! churn forks|threads
//!   wait N -> <children or threads ended so far>   (once at least N)
//! ```

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{unknown, wait_for_count, Mode};

/// Children reaped or threads joined so far.
static ENDED: AtomicU64 = AtomicU64::new(0);

fn forks() -> ! {
    loop {
        // SAFETY: the child only calls _exit.
        let kid = unsafe { libc::fork() };
        if kid == 0 {
            // SAFETY: ends the child at once.
            unsafe { libc::_exit(0) };
        }
        if kid > 0 {
            let mut status = 0;
            // SAFETY: waits for our own child; status is a live int.
            unsafe { libc::waitpid(kid, &mut status, 0) };
            ENDED.fetch_add(1, Ordering::SeqCst);
        }
    }
}

fn threads() -> ! {
    loop {
        if std::thread::spawn(|| ()).join().is_ok() {
            ENDED.fetch_add(1, Ordering::SeqCst);
        }
    }
}

struct Churn;

/// `churn forks|threads`
pub fn start(args: &[String], _dir: &Path) -> Result<Box<dyn Mode>, String> {
    let body: fn() -> ! = match args {
        [what] if what == "forks" => forks,
        [what] if what == "threads" => threads,
        _ => return Err("usage: churn forks|threads".into()),
    };
    std::thread::spawn(move || body());
    Ok(Box::new(Churn))
}

impl Mode for Churn {
    fn command(&mut self, verb: &str, args: &[&str]) -> Result<String, String> {
        match (verb, args) {
            ("wait", [n]) => wait_for_count(
                n,
                || ENDED.load(Ordering::SeqCst),
                || ENDED.load(Ordering::SeqCst).to_string(),
            ),
            _ => unknown(verb),
        }
    }
}
