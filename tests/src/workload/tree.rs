//! `tree`: a process tree to rebuild: a child in a process group of its own, its own child,
//! and a zombie child of it.
//!
//! ```text
//! tree                       kids -> <child> <grandchild> <zombie>   ask MSG -> got MSG
//!                            ask reap -> reaped <status of the zombie>
//!                            stop-child SIG -> stopped <signal> (kill(child, SIG), then waits
//!                            for the stop without taking it: waitid WNOWAIT)
//!                            stopped -> stopped <signal> | running (waitid WNOHANG|WNOWAIT)
//!                            (a child in a process group of its own, talking to this
//!                            process over two inherited pipes; its own child; a zombie
//!                            child of it that exited with 7, named zname, uid 1234 gid 4321,
//!                            groups 555 4321, SIGUSR2 blocked, SIGHUP ignored, SIGUSR1
//!                            caught, on CPU 0 only)
//! ```

use std::io;
use std::path::Path;

use super::kids::{answer_each, ChildPipes};
use super::{failed, io_err, sys, unknown, Mode};

/// The zombie's SIGUSR1 handler (never run: it exits at once).
extern "C" fn zombie_handler(_: libc::c_int) {}

/// `tree`
pub fn start(_args: &[String], _dir: &Path) -> Result<Box<dyn Mode>, String> {
    Ok(Box::new(Tree::start().map_err(failed("tree"))?))
}

impl Mode for Tree {
    fn command(&mut self, verb: &str, args: &[&str]) -> Result<String, String> {
        match (verb, args) {
            ("kids", []) => Ok(format!(
                "{} {} {}",
                self.kids[0], self.kids[1], self.kids[2]
            )),
            ("ask", [msg]) => self.pipes.ask(msg).map_err(io_err),
            ("stop-child", [sig]) => {
                let sig: i32 = sig.parse().map_err(|_| format!("bad signal {sig:?}"))?;
                sys::tgkill(self.kids[0], self.kids[0], sig).map_err(io_err)?;
                loop {
                    if let Some(got) = sys::stop_signal_of(self.kids[0]).map_err(io_err)? {
                        return Ok(format!("stopped {got}"));
                    }
                    std::thread::yield_now();
                }
            }
            ("stopped", []) => Ok(match sys::stop_signal_of(self.kids[0]).map_err(io_err)? {
                Some(sig) => format!("stopped {sig}"),
                None => "running".into(),
            }),
            _ => unknown(verb),
        }
    }
}

/// The `tree` mode: a child (its own process group) with a child and a zombie of its own,
/// answering this process over two pipes both inherited.
struct Tree {
    pipes: ChildPipes,
    kids: [i32; 3],
}

impl Tree {
    fn start() -> io::Result<Self> {
        let (a_rd, a_wr) = sys::pipe()?;
        let (b_rd, b_wr) = sys::pipe()?;
        // the workload is single-threaded here; the child only makes syscalls.
        let child = sys::fork()?;
        if child == 0 {
            Self::child(a_rd, b_wr);
        }
        let mut buf = [0u8; 64];
        let n = sys::read(b_rd, &mut buf)?;
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        let mut it = text
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok());
        let (g, z) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
        Ok(Tree {
            pipes: ChildPipes {
                to_child: a_wr,
                from_child: b_rd,
            },
            kids: [child, g, z],
        })
    }

    /// The child: a group of its own, a grandchild, a zombie, then answers forever.
    fn child(rd: i32, wr: i32) -> ! {
        // SAFETY: plain syscalls in the forked child.
        unsafe {
            libc::setpgid(0, 0);
            let g = libc::fork();
            if g == 0 {
                loop {
                    libc::pause();
                }
            }
            let z = libc::fork();
            if z == 0 {
                // A name and ids of its own, which its parent's waitid and /proc show; groups,
                // signal masks and a CPU mask of its own, which /proc shows.
                libc::prctl(libc::PR_SET_NAME, c"zname".as_ptr());
                let groups: [libc::gid_t; 2] = [4321, 555];
                libc::setgroups(2, groups.as_ptr());
                libc::signal(libc::SIGHUP, libc::SIG_IGN);
                libc::signal(
                    libc::SIGUSR1,
                    zombie_handler as extern "C" fn(libc::c_int) as usize,
                );
                let mut blocked: libc::sigset_t = std::mem::zeroed();
                libc::sigaddset(&mut blocked, libc::SIGUSR2);
                libc::sigprocmask(libc::SIG_BLOCK, &blocked, std::ptr::null_mut());
                let mut cpus: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(0, &mut cpus);
                libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &cpus);
                libc::setresgid(4321, 4321, 4321);
                libc::setresuid(1234, 1234, 1234);
                libc::_exit(7);
            }
            let _ = sys::write_all(wr, format!("{g} {z}").as_bytes());
            answer_each(rd, wr, |msg| {
                if msg == "reap" {
                    let mut status = 0;
                    let r = libc::waitpid(z, &mut status, 0);
                    format!("reaped {} {}", r == z, libc::WEXITSTATUS(status))
                } else {
                    format!("got {msg}")
                }
            });
            libc::_exit(3)
        }
    }
}
