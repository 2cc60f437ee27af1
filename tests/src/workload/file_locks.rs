//! `locks KIND PATH`: one lock of kind KIND (posix, ofd, flock, lease) held on the file PATH;
//! `sigio`: a pipe whose read end signals this process (F_SETOWN_EX, F_SETSIG) when data
//! comes in. After a restore, another process must find the lock held by this pid, and the
//! signal must still come.
//!
//! ```text
//! locks posix PATH   write lock on bytes 5-14 and a read lock from 100 to EOF (F_SETLK)
//! locks ofd PATH     OFD write lock on bytes 0-99 (F_OFD_SETLK)
//! locks flock PATH   flock LOCK_EX
//! locks lease PATH   read lease (F_SETLEASE F_RDLCK), PATH opened read-only
//!                    lease  -> F_GETLEASE of it: 0 read, 1 write, 2 none
//! breaking PATH      three leases, each broken at once by an open O_NONBLOCK of this
//!                    process (EWOULDBLOCK), their break signal SIGRTMIN+4 (F_SETSIG):
//!                    PATH.0 read-only, read lease, broken by an open for writing;
//!                    PATH.1 read-write, write lease, broken by an open for reading;
//!                    PATH.2 read-only, write lease, broken by an open for writing
//!                    lease   -> F_GETLEASE of the three (2 0 2: being given up, downgraded)
//!                    breaks  -> <break signals received> fd <si_fd of the last>
//!                    owner   -> F_GETOWN of PATH.0's fd
//!                    release -> F_SETLEASE F_UNLCK on the three
//! sigio [parent]     (parent: the pipe signals the parent, which no dump holds)
//!                    owner  -> <owner type> <owner id> <signal>   (F_GETOWN_EX, F_GETSIG)
//!                    poke   -> <signals received> <si_fd of the last>   (after writing a byte
//!                              into the pipe and waiting, up to 5 s, for its signal)
//! ```

use std::path::Path;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::{failed, io_err, sys, unknown, Mode};

/// F_OFD_SETLK, F_SETSIG, F_GETSIG, F_SETOWN_EX, F_GETOWN_EX, F_OWNER_PID.
const F_OFD_SETLK: i32 = 37;
const F_SETSIG: i32 = 10;
const F_GETSIG: i32 = 11;
const F_SETOWN_EX: i32 = 15;
const F_GETOWN_EX: i32 = 16;
const F_OWNER_PID: i32 = 1;

/// The signal the pipe sends (F_SETSIG): SIGRTMIN + 4.
fn pipe_signal() -> i32 {
    libc::SIGRTMIN() + 4
}

static RECEIVED: AtomicU64 = AtomicU64::new(0);
static LAST_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_io(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler; for an F_SETSIG
    // signal its fields are those of SIGPOLL (si_band, then si_fd), read as two c_longs/ints
    // after the three leading ints.
    let fd = unsafe {
        let base = info as *const u8;
        // struct siginfo: si_signo, si_errno, si_code (3 ints), padding to 16, si_band (long),
        // si_fd (int).
        *(base.add(24) as *const libc::c_int)
    };
    LAST_FD.store(fd, Ordering::SeqCst);
    RECEIVED.fetch_add(1, Ordering::SeqCst);
}

fn cvt(r: libc::c_int) -> std::io::Result<libc::c_int> {
    sys::cvt(r)
}

/// fcntl with a `struct flock` for `cmd`: a lock of `kind` on `start..start+len`.
pub(super) fn set_lock(fd: i32, cmd: i32, kind: i32, start: i64, len: i64) -> std::io::Result<()> {
    // SAFETY: flock is plain data; zeroed is valid.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind as i16;
    fl.l_whence = libc::SEEK_SET as i16;
    fl.l_start = start;
    fl.l_len = len;
    // SAFETY: fl is a valid struct flock for the kernel to read.
    cvt(unsafe { libc::fcntl(fd, cmd, &fl as *const libc::flock) }).map(drop)
}

struct Locks {
    fd: i32,
}

/// `locks breaking PATH`: fds on PATH.0, PATH.1, PATH.2, each with a lease being broken.
struct Breaking {
    fds: [i32; 3],
}

struct Sigio {
    read: i32,
    write: i32,
}

/// `locks KIND PATH`
pub fn start(args: &[String], _dir: &Path) -> Result<Box<dyn Mode>, String> {
    let (Some(kind), Some(path)) = (args.first(), args.get(1)) else {
        return Err("locks mode needs KIND PATH".into());
    };
    let path = Path::new(path);
    if kind == "breaking" {
        return start_breaking(path);
    }
    let flags = if kind == "lease" {
        libc::O_RDONLY
    } else {
        libc::O_RDWR
    };
    let fd = sys::open(path, flags).map_err(failed("open"))?;
    let taken = match kind.as_str() {
        "posix" => set_lock(fd, libc::F_SETLK, libc::F_WRLCK, 5, 10)
            .and_then(|()| set_lock(fd, libc::F_SETLK, libc::F_RDLCK, 100, 0)),
        "ofd" => set_lock(fd, F_OFD_SETLK, libc::F_WRLCK, 0, 100),
        // SAFETY: flock takes an fd and flags.
        "flock" => cvt(unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) }).map(drop),
        // SAFETY: signal() with SIG_IGN; F_SETLEASE takes an int. The lease's break signal
        // (SIGIO) would otherwise end the process.
        "lease" => cvt(unsafe {
            libc::signal(libc::SIGIO, libc::SIG_IGN);
            libc::fcntl(fd, libc::F_SETLEASE, libc::F_RDLCK)
        })
        .map(drop),
        _ => return Err(format!("unknown lock kind {kind:?}")),
    };
    taken.map_err(failed("take the lock"))?;
    Ok(Box::new(Locks { fd }))
}

/// `locks breaking PATH`: takes the three leases and breaks each (see the module doc).
fn start_breaking(path: &Path) -> Result<Box<dyn Mode>, String> {
    // SAFETY: sigaction is plain data; zeroed is a valid starting value.
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    sa.sa_sigaction = on_io as *const () as usize;
    sa.sa_flags = libc::SA_RESTART | libc::SA_SIGINFO;
    // SAFETY: sa is initialised; the handler only touches atomics.
    cvt(unsafe { libc::sigaction(pipe_signal(), &sa, std::ptr::null_mut()) })
        .map_err(failed("sigaction"))?;
    let files = [
        (libc::O_RDONLY, libc::F_RDLCK, libc::O_WRONLY),
        (libc::O_RDWR, libc::F_WRLCK, libc::O_RDONLY),
        (libc::O_RDONLY, libc::F_WRLCK, libc::O_WRONLY),
    ];
    let mut fds = [-1; 3];
    for (i, (flags, lease, breaker)) in files.into_iter().enumerate() {
        let file = path.with_extension(i.to_string());
        let fd = sys::open_mode(&file, flags | libc::O_CREAT, 0o644).map_err(failed("open"))?;
        // SAFETY: F_SETLEASE and F_SETSIG take ints.
        cvt(unsafe {
            let taken = libc::fcntl(fd, libc::F_SETLEASE, lease);
            if taken < 0 {
                taken
            } else {
                libc::fcntl(fd, F_SETSIG, pipe_signal())
            }
        })
        .map_err(failed("take the lease"))?;
        match sys::open(&file, breaker | libc::O_NONBLOCK) {
            Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => {}
            Err(e) => return Err(format!("break the lease of {}: {e}", file.display())),
            Ok(_) => return Err(format!("the lease of {} did not break", file.display())),
        }
        fds[i] = fd;
    }
    Ok(Box::new(Breaking { fds }))
}

/// `sigio [parent]`: the owner is this process, or its parent (outside any dump).
pub fn start_sigio(args: &[String], _dir: &Path) -> Result<Box<dyn Mode>, String> {
    // SAFETY: sigaction is plain data; zeroed is a valid starting value.
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    sa.sa_sigaction = on_io as *const () as usize;
    sa.sa_flags = libc::SA_RESTART | libc::SA_SIGINFO;
    // SAFETY: sa is initialised; the handler only touches atomics.
    cvt(unsafe { libc::sigaction(pipe_signal(), &sa, std::ptr::null_mut()) })
        .map_err(failed("sigaction"))?;
    let (read, write) = sys::pipe().map_err(failed("pipe"))?;
    let owner = match args.first().map(String::as_str) {
        Some("parent") => sys::getppid(),
        _ => std::process::id() as i32,
    };
    let own = [F_OWNER_PID, owner];
    // SAFETY: F_SETOWN_EX reads one struct f_owner_ex (two ints) from `own`.
    cvt(unsafe { libc::fcntl(read, F_SETOWN_EX, own.as_ptr()) }).map_err(failed("owner"))?;
    // SAFETY: F_SETSIG takes an int.
    cvt(unsafe { libc::fcntl(read, F_SETSIG, pipe_signal()) }).map_err(failed("F_SETSIG"))?;
    if owner != std::process::id() as i32 {
        // No O_ASYNC: the parent would get the signal when this process closes the pipe.
        return Ok(Box::new(Sigio { read, write }));
    }
    // SAFETY: F_GETFL / F_SETFL take ints.
    cvt(unsafe {
        let fl = libc::fcntl(read, libc::F_GETFL);
        libc::fcntl(read, libc::F_SETFL, fl | libc::O_ASYNC | libc::O_NONBLOCK)
    })
    .map_err(failed("O_ASYNC"))?;
    Ok(Box::new(Sigio { read, write }))
}

impl Mode for Locks {
    fn command(&mut self, verb: &str, args: &[&str]) -> Result<String, String> {
        match (verb, args) {
            ("lease", []) => {
                // SAFETY: F_GETLEASE takes no argument.
                let l = cvt(unsafe { libc::fcntl(self.fd, libc::F_GETLEASE) }).map_err(io_err)?;
                Ok(l.to_string())
            }
            _ => unknown(verb),
        }
    }
}

impl Mode for Breaking {
    fn command(&mut self, verb: &str, args: &[&str]) -> Result<String, String> {
        match (verb, args) {
            ("lease", []) => {
                let mut types = Vec::new();
                for fd in self.fds {
                    // SAFETY: F_GETLEASE takes no argument.
                    let l = cvt(unsafe { libc::fcntl(fd, libc::F_GETLEASE) }).map_err(io_err)?;
                    types.push(l.to_string());
                }
                Ok(types.join(" "))
            }
            ("breaks", []) => Ok(format!(
                "{} fd {}",
                RECEIVED.load(Ordering::SeqCst),
                LAST_FD.load(Ordering::SeqCst)
            )),
            // SAFETY: F_GETOWN takes no argument.
            ("owner", []) => cvt(unsafe { libc::fcntl(self.fds[0], libc::F_GETOWN) })
                .map(|o| o.to_string())
                .map_err(io_err),
            ("release", []) => {
                for fd in self.fds {
                    // SAFETY: F_SETLEASE takes an int.
                    cvt(unsafe { libc::fcntl(fd, libc::F_SETLEASE, libc::F_UNLCK) })
                        .map_err(io_err)?;
                }
                Ok("released".into())
            }
            _ => unknown(verb),
        }
    }
}

impl Mode for Sigio {
    fn command(&mut self, verb: &str, args: &[&str]) -> Result<String, String> {
        match (verb, args) {
            ("owner", []) => {
                let mut own = [0i32; 2];
                // SAFETY: F_GETOWN_EX writes two ints into `own`; F_GETSIG takes nothing.
                let sig = unsafe {
                    cvt(libc::fcntl(self.read, F_GETOWN_EX, own.as_mut_ptr()))
                        .and_then(|_| cvt(libc::fcntl(self.read, F_GETSIG)))
                }
                .map_err(io_err)?;
                let sig = if sig == 0 { 0 } else { sig - libc::SIGRTMIN() };
                Ok(format!("{} {} rtmin+{sig}", own[0], own[1]))
            }
            ("poke", []) => {
                let before = RECEIVED.load(Ordering::SeqCst);
                sys::write_all(self.write, b"x").map_err(io_err)?;
                let deadline = Instant::now() + Duration::from_secs(5);
                while RECEIVED.load(Ordering::SeqCst) == before && Instant::now() < deadline {
                    // The signal is asynchronous: wait for the handler, bounded.
                    std::thread::sleep(Duration::from_millis(1));
                }
                let mut buf = [0u8; 16];
                let _ = sys::read(self.read, &mut buf);
                Ok(format!(
                    "{} fd {}",
                    RECEIVED.load(Ordering::SeqCst),
                    LAST_FD.load(Ordering::SeqCst)
                ))
            }
            ("fd", []) => Ok(self.read.to_string()),
            _ => unknown(verb),
        }
    }
}
