//! `job-shell MODE [ARGS...]`: not a mode but a tiny shell that runs one as a foreground
//! job on the terminal of its stdin (it never reads the FIFOs).
//!
//! ```text
//! job-shell MODE [ARGS...]   a tiny shell (not a mode: it never reads the FIFOs): the
//!                            controlling terminal is its stdin, it runs `cryo-workload DIR MODE
//!                            ARGS` as a job in a group of its own in the foreground, waits for
//!                            it and dies the way it died
//! ```

use std::io;

use super::control::fatal;
use super::sys;

/// `job-shell`: runs `cryo-workload DIR MODE ARGS` the way a shell runs a foreground job, on
/// the terminal of its stdin, and dies the way the job died. Never returns.
pub fn run(dir: &str, job: &[String]) -> ! {
    if let Err(e) = sys::set_ctty(0) {
        fatal(&format!("job-shell: TIOCSCTTY: {e}"));
    }
    let argv = super::kids::workload_argv(dir, job);
    let (go_rd, go_wr) = sys::pipe().unwrap_or_else(|e| fatal(&format!("pipe: {e}")));
    // SAFETY: single-threaded; the child only makes syscalls before exec.
    let kid = unsafe { libc::fork() };
    if kid == 0 {
        let mut b = [0u8; 1];
        // SAFETY: plain syscalls in the forked child.
        unsafe {
            libc::setpgid(0, 0);
            // Wait until the shell has made this group the foreground one.
            libc::read(go_rd, b.as_mut_ptr().cast(), 1);
        }
        super::kids::exec(&argv);
    }
    if kid < 0 {
        fatal(&format!("fork: {}", io::Error::last_os_error()));
    }
    // SAFETY: plain syscalls on our own child and terminal; SIGTTOU ignored so a shell in the
    // background may still hand over the terminal.
    let status = unsafe {
        libc::setpgid(kid, kid);
        libc::signal(libc::SIGTTOU, libc::SIG_IGN);
        libc::tcsetpgrp(0, kid);
        libc::write(go_wr, b"g".as_ptr().cast(), 1);
        let mut status = 0;
        while libc::waitpid(kid, &mut status, 0) < 0 {}
        status
    };
    super::kids::die_like(status)
}
