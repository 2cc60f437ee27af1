//! `kin`: children in the states only their parent sees (issue 12): how their stops were
//! reported, which thread forked them, how they died.
//!
//! ```text
//! kin      stop-collected [SIG [THREADS]]
//!                                -> stopped PID (stopped by SIG, default SIGSTOP, with THREADS
//!                                   threads more; its stop taken by waitid WSTOPPED)
//!          stop-caught           -> stopped PID (stopped, stop not collected, its SIGCHLD
//!                                   taken by the handler this command installs)
//!          caught                -> N (how many times that handler ran)
//!          stop-uncollected      -> stopped PID (stopped, stop not collected, SIGCHLD SIG_DFL)
//!          stopped PID           -> stopped SIG | none (waitid WSTOPPED|WNOHANG|WNOWAIT)
//!          continued             -> continued PID (stopped, collected, then SIGCONT: the
//!                                   continue not collected)
//!          pdeath-thread         -> forked PID (forked by a second thread, which lives on,
//!                                   with PR_SET_PDEATHSIG SIGUSR2)
//!          core-zombie           -> zombie PID CODE (killed by SIGABRT with a core written in
//!                                   the control dir; CODE its waitid si_code, 3: CLD_DUMPED)
//! ```

use std::io;
use std::path::{Path, PathBuf};

use super::sys::{self, cvt};
use super::{io_err, unknown, Mode};

/// `kin`
pub fn start(_args: &[String], dir: &Path) -> Result<Box<dyn Mode>, String> {
    Ok(Box::new(Kin {
        dir: dir.to_path_buf(),
    }))
}

struct Kin {
    dir: PathBuf,
}

/// How many times the SIGCHLD handler of `stop-caught` ran.
static SIGCHLD_CAUGHT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// The SIGCHLD handler of `stop-caught`: counts.
extern "C" fn on_sigchld(_: libc::c_int) {
    SIGCHLD_CAUGHT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// waitid(P_PID, `pid`, `flags`): (si_pid, si_code, si_status), si_pid 0 when nothing is
/// reported.
fn wait_report(pid: i32, flags: libc::c_int) -> io::Result<(i32, i32, i32)> {
    // SAFETY: siginfo_t is plain data; waitid fills it.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: waitid writes into `info`, ours.
    cvt(unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, flags) })?;
    // SAFETY: waitid filled a SIGCHLD siginfo (or zeroes: si_pid 0).
    Ok(unsafe { (info.si_pid(), info.si_code, info.si_status()) })
}

/// Forks a child that pauses until killed, with `threads` threads more (started before this
/// returns), stops it with `sig` and waits (without taking it) until it is stopped.
fn stopped_child(threads: usize, sig: i32) -> io::Result<i32> {
    let (rd, wr) = sys::pipe()?;
    let child = sys::fork()?;
    if child == 0 {
        // A group of its own in this session, not orphaned: a SIGTSTP stops it too.
        // SAFETY: setpgid takes numbers.
        unsafe { libc::setpgid(0, 0) };
        for _ in 0..threads {
            std::thread::spawn(|| loop {
                std::thread::park();
            });
        }
        let _ = sys::write_all(wr, b"r");
        loop {
            // SAFETY: pause takes nothing.
            unsafe { libc::pause() };
        }
    }
    let mut ready = [0u8; 1];
    let got = sys::read(rd, &mut ready);
    sys::close(rd);
    sys::close(wr);
    got?;
    sys::signal(child, sig)?;
    wait_report(child, libc::WSTOPPED | libc::WNOWAIT)?;
    Ok(child)
}

/// `[SIG] [THREADS]` of a stop command: SIGSTOP and none by default.
fn stop_args(args: &[&str]) -> Result<(i32, usize), String> {
    let num = |k: usize, default: usize| {
        args.get(k).map_or(Ok(default), |a| {
            a.parse().map_err(|_| format!("bad number {a:?}"))
        })
    };
    Ok((num(0, libc::SIGSTOP as usize)? as i32, num(1, 0)?))
}

impl Mode for Kin {
    fn command(&mut self, verb: &str, args: &[&str]) -> Result<String, String> {
        match (verb, args) {
            ("stop-collected", args) => {
                let (sig, threads) = stop_args(args)?;
                let child = stopped_child(threads, sig).map_err(io_err)?;
                wait_report(child, libc::WSTOPPED).map_err(io_err)?;
                Ok(format!("stopped {child}"))
            }
            ("stop-caught", []) => {
                // SAFETY: sigaction_t is plain data; the handler does nothing.
                let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
                sa.sa_sigaction = on_sigchld as *const () as usize;
                sa.sa_flags = libc::SA_RESTART;
                // SAFETY: sigaction reads `sa`; the old action is not asked for.
                cvt(unsafe { libc::sigaction(libc::SIGCHLD, &sa, std::ptr::null_mut()) })
                    .map_err(io_err)?;
                // The stop's SIGCHLD is sent before the waiter wakes: the handler has run
                // once this returns.
                let child = stopped_child(0, libc::SIGSTOP).map_err(io_err)?;
                Ok(format!("stopped {child}"))
            }
            ("caught", []) => Ok(SIGCHLD_CAUGHT
                .load(std::sync::atomic::Ordering::Relaxed)
                .to_string()),
            ("stop-uncollected", []) => {
                let child = stopped_child(0, libc::SIGSTOP).map_err(io_err)?;
                Ok(format!("stopped {child}"))
            }
            ("stopped", [pid]) => {
                let pid: i32 = pid.parse().map_err(|_| format!("bad pid {pid:?}"))?;
                let flags = libc::WSTOPPED | libc::WNOHANG | libc::WNOWAIT;
                Ok(match wait_report(pid, flags).map_err(io_err)? {
                    (0, _, _) => "none".into(),
                    (_, _, sig) => format!("stopped {sig}"),
                })
            }
            ("continued", []) => {
                let child = stopped_child(0, libc::SIGSTOP).map_err(io_err)?;
                wait_report(child, libc::WSTOPPED).map_err(io_err)?;
                sys::signal(child, libc::SIGCONT).map_err(io_err)?;
                wait_report(child, libc::WCONTINUED | libc::WNOWAIT).map_err(io_err)?;
                Ok(format!("continued {child}"))
            }
            ("pdeath-thread", []) => {
                let (rd, wr) = sys::pipe().map_err(io_err)?;
                std::thread::spawn(move || {
                    // The child only makes syscalls: fork from a thread is safe for it.
                    match sys::fork() {
                        Ok(0) => {
                            // SAFETY: prctl and pause take numbers; write our one byte.
                            unsafe {
                                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGUSR2);
                            }
                            let _ = sys::write_all(wr, b"r");
                            loop {
                                // SAFETY: pause takes nothing.
                                unsafe { libc::pause() };
                            }
                        }
                        Ok(child) => {
                            let _ = sys::write_all(wr, child.to_string().as_bytes());
                        }
                        Err(_) => {
                            let _ = sys::write_all(wr, b"-");
                        }
                    }
                    // This thread lives on: its exit would send the child its signal.
                    loop {
                        std::thread::park();
                    }
                });
                // The child's pid, then its "ready" (in either order: read both).
                let mut got = String::new();
                while got.chars().filter(|c| c.is_ascii_digit()).count() == 0 || !got.contains('r')
                {
                    let mut buf = [0u8; 32];
                    let n = sys::read(rd, &mut buf).map_err(io_err)?;
                    if n == 0 || buf[..n].contains(&b'-') {
                        return Err("the thread could not fork".into());
                    }
                    got.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
                sys::close(rd);
                sys::close(wr);
                let pid: String = got.chars().filter(|c| c.is_ascii_digit()).collect();
                Ok(format!("forked {pid}"))
            }
            ("core-zombie", []) => {
                let dir = std::ffi::CString::new(self.dir.as_os_str().as_encoded_bytes())
                    .map_err(|_| "NUL in the dir".to_string())?;
                let child = sys::fork().map_err(io_err)?;
                if child == 0 {
                    let unlimited = libc::rlimit {
                        rlim_cur: libc::RLIM_INFINITY,
                        rlim_max: libc::RLIM_INFINITY,
                    };
                    // SAFETY: plain calls in the forked child (a path of ours, a limit of
                    // ours), which then dies of SIGABRT, dumping core in the control dir.
                    unsafe {
                        libc::chdir(dir.as_ptr());
                        libc::setrlimit(libc::RLIMIT_CORE, &unlimited);
                        libc::prctl(libc::PR_SET_DUMPABLE, 1);
                        libc::signal(libc::SIGABRT, libc::SIG_DFL);
                        libc::kill(libc::getpid(), libc::SIGABRT);
                        libc::_exit(13)
                    }
                }
                let (_, code, _) =
                    wait_report(child, libc::WEXITED | libc::WNOWAIT).map_err(io_err)?;
                Ok(format!("zombie {child} {code}"))
            }
            _ => unknown(verb),
        }
    }
}
