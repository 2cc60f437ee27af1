//! Commands of every workload mode for the broken-peer tests: a thread blocked in read() on
//! an fd that reports what ended its wait, the cryo-resume channel, and a signal watched
//! through a signalfd.
//!
//! ```text
//! sigwatch SIGNO      -> ok        (blocks SIGNO, reads it through a signalfd: run it before
//!                                   `reader`, whose thread inherits the mask)
//! signext [MS]        -> signal <signo> <sival_int> <si_code> | none (waits up to MS
//!                                   milliseconds, 10 s by default)
//! resume-open         -> <channel fd>   (cryo_resume::Listener::open)
//! resume-next         -> <record as JSON> | none (waits up to 10 s)
//! reader FD           -> <tid>     (clears O_NONBLOCK on FD; a thread blocks in one read())
//! reader-result FD    -> <outcome> <blocked ms> <CLOCK_MONOTONIC ns when read returned>
//!                        outcome: eof | data <len> | err <ERRNO NAME>  (joins the thread)
//! poke FD             -> ok <len> | err <ERRNO NAME>  (sends one byte, MSG_NOSIGNAL)
//! ```

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::SigSet;
use nix::sys::signalfd::{SfdFlags, SignalFd};

/// How long `signext` and `resume-next` wait.
const WAIT: Duration = Duration::from_secs(10);

/// The state behind the commands.
#[derive(Default)]
pub struct Peers {
    readers: HashMap<i32, JoinHandle<String>>,
    listener: Option<cryo_resume::Listener>,
    sigfd: Option<SignalFd>,
}

/// Waits up to `wait` for `fd` to be readable.
fn readable(fd: BorrowedFd<'_>, wait: Duration) -> Result<bool, String> {
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    let ms = u16::try_from(wait.as_millis()).unwrap_or(u16::MAX);
    match poll(&mut fds, PollTimeout::from(ms)) {
        Ok(n) => Ok(n > 0),
        Err(e) => Err(format!("poll: {e}")),
    }
}

/// One blocking read() of `fd`, described with when it returned.
fn block_in_read(fd: i32) -> String {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    // SAFETY: reads into our own buffer; fd stays open in this process (the test's business).
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    let errno = Errno::last();
    let end = super::protocol::monotonic_ns();
    let outcome = match n {
        0 => "eof".to_string(),
        n if n > 0 => format!("data {n}"),
        _ => format!("err {errno:?}"),
    };
    format!("{outcome} {} {end}", started.elapsed().as_millis())
}

/// One byte sent on `fd`, without SIGPIPE.
fn poke(fd: i32) -> String {
    // SAFETY: sends one byte from a static buffer.
    let n = unsafe { libc::send(fd, b"!".as_ptr().cast(), 1, libc::MSG_NOSIGNAL) };
    if n < 0 {
        format!("err {:?}", Errno::last())
    } else {
        format!("ok {n}")
    }
}

impl Peers {
    /// Runs `verb` if it is one of these commands.
    pub fn command(&mut self, verb: &str, args: &[&str]) -> Option<Result<String, String>> {
        Some(match (verb, args) {
            ("sigwatch", [signo]) => self.sigwatch(signo),
            ("signext", []) => self.signext(WAIT),
            ("signext", [ms]) => ms
                .parse()
                .map_err(|_| format!("bad wait {ms:?}"))
                .and_then(|ms| self.signext(Duration::from_millis(ms))),
            ("poke", [fd]) => fd
                .parse::<i32>()
                .map_err(|_| format!("bad fd {fd:?}"))
                .map(poke),
            ("resume-open", []) => cryo_resume::Listener::open()
                .map(|l| {
                    let fd = l.as_raw_fd();
                    self.listener = Some(l);
                    fd.to_string()
                })
                .map_err(|e| format!("cryo_resume::Listener::open: {e}")),
            ("resume-next", []) => self.resume_next(),
            ("reader", [fd]) => self.reader(fd),
            ("reader-result", [fd]) => fd
                .parse::<i32>()
                .map_err(|_| format!("bad fd {fd:?}"))
                .and_then(|fd| self.readers.remove(&fd).ok_or(format!("no reader on {fd}")))
                .and_then(|h| h.join().map_err(|_| "the reader panicked".to_string())),
            _ => return None,
        })
    }

    fn sigwatch(&mut self, signo: &str) -> Result<String, String> {
        let signo: i32 = signo.parse().map_err(|_| format!("bad signal {signo:?}"))?;
        let mut raw = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigemptyset initialises the set we own; sigaddset then updates it.
        let raw = unsafe {
            libc::sigemptyset(raw.as_mut_ptr());
            if libc::sigaddset(raw.as_mut_ptr(), signo) != 0 {
                return Err(format!("signal {signo}"));
            }
            raw.assume_init()
        };
        // SAFETY: `raw` was initialised by sigemptyset/sigaddset.
        let set = unsafe { SigSet::from_sigset_t_unchecked(raw) };
        set.thread_block().map_err(|e| format!("block: {e}"))?;
        let fd = SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(|e| format!("signalfd: {e}"))?;
        self.sigfd = Some(fd);
        Ok("ok".into())
    }

    fn signext(&mut self, wait: Duration) -> Result<String, String> {
        let fd = self.sigfd.as_ref().ok_or("no sigwatch")?;
        if !readable(fd.as_fd(), wait)? {
            return Ok("none".into());
        }
        match fd.read_signal() {
            Ok(Some(i)) => Ok(format!(
                "signal {} {} {}",
                i.ssi_signo, i.ssi_int, i.ssi_code
            )),
            Ok(None) => Ok("none".into()),
            Err(e) => Err(format!("read signalfd: {e}")),
        }
    }

    fn resume_next(&mut self) -> Result<String, String> {
        let l = self.listener.as_mut().ok_or("no resume-open")?;
        match l.wait_event(Some(WAIT)) {
            Ok(Some(ev)) => serde_json::to_string(&ev).map_err(|e| e.to_string()),
            Ok(None) => Ok("none".into()),
            Err(e) => Err(format!("resume channel: {e}")),
        }
    }

    fn reader(&mut self, fd: &str) -> Result<String, String> {
        let fd: i32 = fd.parse().map_err(|_| format!("bad fd {fd:?}"))?;
        // SAFETY: F_GETFL/F_SETFL on an fd number; a bad one fails with EBADF.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        // SAFETY: as above.
        if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0 {
            return Err(format!("fcntl fd {fd}: {}", Errno::last()));
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let handle = std::thread::spawn(move || {
            let _ = tx.send(nix::unistd::gettid().as_raw());
            block_in_read(fd)
        });
        let tid = rx.recv().map_err(|_| "the reader died".to_string())?;
        self.readers.insert(fd, handle);
        Ok(tid.to_string())
    }
}
