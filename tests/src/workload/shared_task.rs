//! `share HOW`: a process sharing with a child (or a thread keeping for itself) what clone
//! flags share: its fd table, its working directory and umask, its memory, its signal
//! handlers; or a child waiting in vfork for its own child.
//!
//! ```text
//! share files|fs|vm|sighand   a child cloned with CLONE_FILES, CLONE_FS, CLONE_VM or
//!                             CLONE_VM|CLONE_SIGHAND, paused
//! share vfork                 a forked child waiting in vfork for its child, which pauses
//! share thread-files|thread-fs  a thread that unshared its fd table (or fs), parked
//!     child -> <the child's pid>      tid -> <the thread's id>
//! ```

use std::path::Path;
use std::sync::mpsc;

use super::{failed, sys, unknown, Mode};

struct Share {
    child: i32,
    tid: i32,
}

/// `share HOW`
pub fn start(args: &[String], _dir: &Path) -> Result<Box<dyn Mode>, String> {
    let how = args.first().map(String::as_str).unwrap_or("");
    let mut share = Share { child: 0, tid: 0 };
    match how {
        "files" | "fs" | "vm" | "sighand" => {
            let flags = match how {
                "files" => libc::CLONE_FILES,
                "fs" => libc::CLONE_FS,
                "vm" => libc::CLONE_VM,
                _ => libc::CLONE_VM | libc::CLONE_SIGHAND,
            };
            share.child = sys::clone_paused(flags).map_err(failed("clone"))?;
        }
        "vfork" => {
            share.child = match sys::fork().map_err(failed("fork"))? {
                0 => {
                    // The child waits in vfork as long as its own child pauses.
                    let _ = sys::clone_paused(libc::CLONE_VM | libc::CLONE_VFORK);
                    // SAFETY: ends the forked process.
                    unsafe { libc::_exit(0) }
                }
                pid => pid,
            };
        }
        "thread-files" | "thread-fs" => {
            let flag = if how == "thread-files" {
                libc::CLONE_FILES
            } else {
                libc::CLONE_FS
            };
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                // SAFETY: unshare takes a flag word.
                let r = unsafe { libc::unshare(flag) };
                let _ = tx.send(if r == 0 {
                    Ok(sys::gettid())
                } else {
                    Err(std::io::Error::last_os_error())
                });
                loop {
                    std::thread::park();
                }
            });
            share.tid = rx
                .recv()
                .map_err(|e| e.to_string())?
                .map_err(failed("unshare"))?;
        }
        other => return Err(format!("share: unknown HOW {other:?}")),
    }
    Ok(Box::new(share))
}

impl Mode for Share {
    fn command(&mut self, verb: &str, _args: &[&str]) -> Result<String, String> {
        match verb {
            "child" => Ok(self.child.to_string()),
            "tid" => Ok(self.tid.to_string()),
            other => unknown(other),
        }
    }
}
