//! `pty-shell`: a pty pair of its own, the master held here and an interactive `sh` on the
//! slave as its controlling terminal (a terminal emulator or multiplexer in miniature).
//!
//! ```text
//! pty-shell [master-only]    opens /dev/ptmx (held at fd 60); the child: setsid, the slave as
//!                            controlling terminal and stdio, exec sh -i (master-only: no
//!                            child, the slave is left to whoever opens /dev/pts/N)
//!                            sh LINE... -> what the shell printed for LINE, one line ("\r\n"
//!                            and "\n" as "|"), read from the master up to an end mark
//!                            pty -> /dev/pts/N
//!                            pty-set [packet] [lock] -> ok (TIOCPKT on, slave locked)
//!                            pty-state -> packet 0|1 locked 0|1 (TIOCGPKT, TIOCGPTLCK)
//!                            child -> the shell's pid
//! ```

use std::ffi::CString;
use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use super::{failed, io_err, sys, unknown, Mode};

/// The master's fd number.
const MASTER_FD: i32 = 60;
/// How long the shell has to answer one line.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(8);
/// What the shell prints after each line: `echo END$((6*7))`, so the echo of the typed line
/// (which holds `$((6*7))`) never matches it.
const END_MARK: &str = "END42";

struct PtyShell {
    index: i32,
    child: i32,
    /// In packet mode every read of the master starts with a status byte.
    packet: bool,
}

/// `pty-shell [master-only]`
pub fn start(args: &[String], _dir: &Path) -> Result<Box<dyn Mode>, String> {
    let master = sys::open(Path::new("/dev/ptmx"), libc::O_RDWR | libc::O_NOCTTY)
        .map_err(failed("open /dev/ptmx"))?;
    let master = sys::move_fd(master, MASTER_FD).map_err(failed("move the master"))?;
    let mut index: libc::c_int = 0;
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads and TIOCGPTN writes one c_int through a pointer to a local.
    unsafe {
        sys::cvt(libc::ioctl(master, libc::TIOCSPTLCK, &unlock)).map_err(failed("TIOCSPTLCK"))?;
        sys::cvt(libc::ioctl(master, libc::TIOCGPTN, &mut index)).map_err(failed("TIOCGPTN"))?;
    }
    if args.first().map(String::as_str) == Some("master-only") {
        return Ok(Box::new(PtyShell {
            index,
            child: 0,
            packet: false,
        }));
    }
    let slave = CString::new(format!("/dev/pts/{index}")).expect("no NUL");
    let sh = CString::new("/bin/sh").expect("no NUL");
    let argv = [sh.as_ptr(), c"-i".as_ptr(), std::ptr::null()];
    let ps1 = CString::new("PS1=$ ").expect("no NUL");
    let path = CString::new("PATH=/usr/sbin:/usr/bin:/sbin:/bin").expect("no NUL");
    let envp = [
        ps1.as_ptr(),
        path.as_ptr(),
        c"TERM=dumb".as_ptr(),
        std::ptr::null(),
    ];
    // SAFETY: the workload is single-threaded here; the child makes plain syscalls, then
    // execs (argv and envp outlive the call).
    let child = unsafe { libc::fork() };
    if child < 0 {
        return Err(format!("fork: {}", io::Error::last_os_error()));
    }
    if child == 0 {
        // SAFETY: plain syscalls in the forked child, then exec.
        unsafe {
            libc::setsid();
            let fd = libc::open(slave.as_ptr(), libc::O_RDWR);
            if fd < 0 || libc::ioctl(fd, libc::TIOCSCTTY, 0) < 0 {
                libc::_exit(126);
            }
            for n in 0..3 {
                libc::dup2(fd, n);
            }
            libc::close_range(3, u32::MAX, 0);
            libc::execve(sh.as_ptr(), argv.as_ptr(), envp.as_ptr());
            libc::_exit(127);
        }
    }
    let mut shell = PtyShell {
        index,
        child,
        packet: false,
    };
    // The first prompt, so every later answer starts at its line.
    shell
        .run("true")
        .map_err(|e| format!("the shell did not start: {e}"))?;
    Ok(Box::new(shell))
}

impl PtyShell {
    /// Types `line` into the master; what the shell printed up to the end mark.
    fn run(&mut self, line: &str) -> io::Result<String> {
        sys::write_all(MASTER_FD, format!("{line}; echo END$((6*7))\n").as_bytes())?;
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        let mut seen = Vec::new();
        loop {
            let text = String::from_utf8_lossy(&seen).into_owned();
            // The echo of the typed line ends with "\r\n"; the answer follows it. The next
            // prompt is read too: nothing is left queued on the master.
            let done = text
                .find(END_MARK)
                .filter(|&end| text[end..].contains("\n$ "));
            if let Some(end) = done {
                let answer = &text[..end];
                let answer = answer.split_once('\n').map_or(answer, |(_, rest)| rest);
                return Ok(answer.replace("\r\n", "|").replace('\n', "|"));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::other(format!("no answer to {line:?}: {text:?}")));
            }
            let mut p = libc::pollfd {
                fd: MASTER_FD,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let r = unsafe { libc::poll(&mut p, 1, left.as_millis() as i32) };
            if r > 0 {
                let mut buf = [0u8; 4096];
                let n = sys::read(MASTER_FD, &mut buf)?;
                if n == 0 {
                    return Err(io::Error::other("the master read end of file"));
                }
                let skip = usize::from(self.packet && n > 0);
                seen.extend_from_slice(&buf[skip..n]);
            }
        }
    }
}

/// One int read from the master with `request` (TIOCGPKT, TIOCGPTLCK).
fn master_int(request: libc::Ioctl) -> io::Result<i32> {
    let mut v: libc::c_int = 0;
    // SAFETY: the request writes one c_int through the pointer, which points at `v`.
    sys::cvt(unsafe { libc::ioctl(MASTER_FD, request, &mut v) })?;
    Ok(v)
}

/// Sets one int on the master with `request` (TIOCPKT, TIOCSPTLCK).
fn set_master_int(request: libc::Ioctl, v: libc::c_int) -> io::Result<()> {
    // SAFETY: the request reads one c_int through the pointer, which points at `v`.
    sys::cvt(unsafe { libc::ioctl(MASTER_FD, request, &v) }).map(drop)
}

impl PtyShell {
    fn set(&mut self, what: &[&str]) -> io::Result<String> {
        for w in what {
            match *w {
                "packet" => {
                    set_master_int(libc::TIOCPKT, 1)?;
                    self.packet = true;
                }
                "lock" => set_master_int(libc::TIOCSPTLCK, 1)?,
                other => return Err(io::Error::other(format!("no such setting {other:?}"))),
            }
        }
        Ok("ok".into())
    }

    fn state(&self) -> io::Result<String> {
        // Not probed by opening the slave: a failed open of a locked slave hangs it up.
        let packet = master_int(libc::TIOCGPKT)?;
        let locked = master_int(libc::TIOCGPTLCK)?;
        Ok(format!("packet {packet} locked {locked}"))
    }
}

impl Mode for PtyShell {
    fn command(&mut self, verb: &str, args: &[&str]) -> Result<String, String> {
        match (verb, args) {
            ("sh", line) if !line.is_empty() => self.run(&line.join(" ")).map_err(io_err),
            ("pty", []) => Ok(format!("/dev/pts/{}", self.index)),
            ("pty-set", what) => self.set(what).map_err(io_err),
            ("pty-state", []) => self.state().map_err(io_err),
            ("child", []) => Ok(self.child.to_string()),
            _ => unknown(verb),
        }
    }
}
