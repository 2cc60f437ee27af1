//! `job-shell MODE [ARGS...]`: not a mode but a tiny shell that runs one as a foreground
//! job on the terminal of its stdin (it never reads the FIFOs).
//!
//! ```text
//! job-shell MODE [ARGS...]   a tiny shell (not a mode: it never reads the FIFOs): the
//!                            controlling terminal is its stdin, it runs `cryo-workload DIR MODE
//!                            ARGS` as a job in a group of its own in the foreground, waits for
//!                            it and dies the way it died
//! ```

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;

use super::control::fatal;
use super::sys;

/// `job-shell`: runs `cryo-workload DIR MODE ARGS` the way a shell runs a foreground job, on
/// the terminal of its stdin, and dies the way the job died. Never returns.
pub fn run(dir: &str, job: &[String]) -> ! {
    if let Err(e) = sys::set_ctty(0) {
        fatal(&format!("job-shell: TIOCSCTTY: {e}"));
    }
    let exe = std::env::current_exe().unwrap_or_else(|e| fatal(&format!("current_exe: {e}")));
    let mut argv: Vec<CString> = vec![CString::new(exe.as_os_str().as_bytes()).expect("no NUL")];
    argv.push(CString::new(dir).expect("no NUL"));
    argv.extend(
        job.iter()
            .map(|a| CString::new(a.as_str()).expect("no NUL")),
    );
    let (go_rd, go_wr) = sys::pipe().unwrap_or_else(|e| fatal(&format!("pipe: {e}")));
    // SAFETY: single-threaded; the child only makes syscalls before exec.
    let kid = unsafe { libc::fork() };
    if kid == 0 {
        let mut b = [0u8; 1];
        // SAFETY: plain syscalls in the forked child; argv outlives execv.
        unsafe {
            libc::setpgid(0, 0);
            // Wait until the shell has made this group the foreground one.
            libc::read(go_rd, b.as_mut_ptr().cast(), 1);
            let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
            ptrs.push(std::ptr::null());
            libc::execv(ptrs[0], ptrs.as_ptr());
            libc::_exit(127);
        }
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
    if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        // SAFETY: dying by the job's signal, with its default action.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
            libc::raise(sig);
        }
    }
    std::process::exit(libc::WEXITSTATUS(status));
}
