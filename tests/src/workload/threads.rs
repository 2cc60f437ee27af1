//! `threads N`: N threads counting under one mutex and a waiter on a condition variable:
//! every thread, lock and count must come back.
//!
//! ```text
//! threads N                  counts -> ok <shared> <wakeups> | bad <shared> <sum>
//!                            (N threads each counting under one mutex, notifying a
//!                            condition variable a waiter thread sleeps on)
//! ```

use std::path::Path;

use super::{arg, unknown, Mode};

/// `threads N`
pub fn start(args: &[String], _dir: &Path) -> Result<Box<dyn Mode>, String> {
    Ok(Box::new(Threads(Counters::start(arg(args, 0, 8)?))))
}

struct Threads(std::sync::Arc<Counters>);

impl Mode for Threads {
    fn command(&mut self, verb: &str, args: &[&str]) -> Result<String, String> {
        match (verb, args) {
            ("counts", []) => Ok(self.0.counts()),
            _ => unknown(verb),
        }
    }
}

/// What the counting threads share: every increment of `shared` is matched by one of a
/// thread's own counter, under the same lock.
#[derive(Default)]
struct Counters {
    state: std::sync::Mutex<(u64, Vec<u64>, u64)>,
    changed: std::sync::Condvar,
}

impl Counters {
    fn start(n: usize) -> std::sync::Arc<Self> {
        let c = std::sync::Arc::new(Counters {
            state: std::sync::Mutex::new((0, vec![0; n], 0)),
            changed: std::sync::Condvar::new(),
        });
        for i in 0..n {
            let c = c.clone();
            std::thread::Builder::new()
                .name(format!("counter-{i}"))
                .spawn(move || loop {
                    if let Ok(mut s) = c.state.lock() {
                        s.0 += 1;
                        s.1[i] += 1;
                    }
                    c.changed.notify_all();
                    std::thread::sleep(std::time::Duration::from_millis(1));
                })
                .expect("spawn a counting thread");
        }
        let waiter = c.clone();
        std::thread::Builder::new()
            .name("waiter".into())
            .spawn(move || {
                let Ok(mut s) = waiter.state.lock() else {
                    return;
                };
                loop {
                    s.2 += 1;
                    s = match waiter.changed.wait(s) {
                        Ok(s) => s,
                        Err(_) => return,
                    };
                }
            })
            .expect("spawn the waiter thread");
        c
    }

    fn counts(&self) -> String {
        match self.state.lock() {
            Ok(s) => {
                let sum: u64 = s.1.iter().sum();
                if sum == s.0 {
                    format!("ok {} {}", s.0, s.2)
                } else {
                    format!("bad {} {sum}", s.0)
                }
            }
            Err(_) => "bad poisoned".into(),
        }
    }
}
