//! `daemon [group] MODE [ARGS...]`: not a mode but a runner that starts one the way a daemon
//! starts, in a session (and group) whose leader has exited.
//!
//! ```text
//! daemon [group] MODE [ARGS...]
//!                            not a mode: a subreaper whose child starts a session (setsid)
//!                            and forks `cryo-workload DIR daemonized MODE ARGS`, then exits
//!                            (with `group`: the session leader's child leads a group of its
//!                            own, forks the mode and exits too); the mode runs in the session
//!                            and group of exited leaders. The runner reaps them, then waits
//!                            for the mode's process and dies the way it died.
//! ```

use super::control::fatal;
use super::kids;
use super::sys;

/// `daemon`: never returns.
pub fn run(dir: &str, args: &[String]) -> ! {
    let (group, job) = match args.split_first() {
        Some((first, rest)) if first == "group" => (true, rest),
        _ => (false, args),
    };
    let mut argv_args = vec!["daemonized".to_string()];
    argv_args.extend_from_slice(job);
    let argv = kids::workload_argv(dir, &argv_args);
    // SAFETY: prctl takes integers; the orphaned daemon comes back to this process.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } < 0 {
        fatal("daemon: PR_SET_CHILD_SUBREAPER failed");
    }
    let (rd, wr) = sys::pipe().unwrap_or_else(|e| fatal(&format!("daemon: pipe: {e}")));
    let leader = sys::fork().unwrap_or_else(|e| fatal(&format!("daemon: fork: {e}")));
    if leader == 0 {
        // The session leader (and the group leader) fork, tell the daemon's pid, then exit:
        // only their session and group are left to it.
        let _ = sys::setsid();
        if group {
            match sys::fork() {
                // SAFETY: setpgid takes integers.
                Ok(0) => unsafe { libc::setpgid(0, 0) },
                // SAFETY: ends the forked session leader.
                _ => unsafe { libc::_exit(0) },
            };
        }
        match sys::fork() {
            Ok(0) => {
                sys::close(rd);
                sys::close(wr);
                kids::exec(&argv)
            }
            Ok(daemon) => {
                let _ = sys::write_all(wr, daemon.to_string().as_bytes());
                // SAFETY: ends the forked leader.
                unsafe { libc::_exit(0) }
            }
            // SAFETY: ends the forked leader.
            Err(_) => unsafe { libc::_exit(1) },
        }
    }
    sys::close(wr);
    let mut buf = [0u8; 16];
    let n = sys::read(rd, &mut buf).unwrap_or(0);
    let daemon: i32 = std::str::from_utf8(&buf[..n])
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fatal("daemon: the leader forked no daemon"));
    sys::close(rd);
    // Reaps the exited leaders; the daemon's end is this process's.
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes the status into `status`.
        let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
        if pid < 0 {
            fatal("daemon: waitpid: the daemon is gone");
        }
        if pid == daemon {
            kids::die_like(status);
        }
    }
}
