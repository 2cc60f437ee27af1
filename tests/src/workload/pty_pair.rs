//! `pty-pair`: a pty pair held in this one process, master at fd 60 and slave at fd 61 (not
//! its controlling terminal), with what each end has not read yet.
//!
//! ```text
//! pty-pair                 opens /dev/ptmx and /dev/pts/N (canonical mode, echo on)
//!   raw                    -> ok: the slave in raw mode (cfmakeraw)
//!   packet                 -> ok: the master in packet mode
//!   type BYTES ECHO        -> ok: BYTES written to the master, once the slave's line
//!                             discipline has echoed ECHO (read from the master; "-": raw
//!                             mode, once the slave has them all)
//!   print BYTES N          -> ok: BYTES written to the slave, once the master has N bytes
//!   flush                  -> ok: tcflush(TCIFLUSH) of the slave (in packet mode: a status
//!                             byte for the master)
//!   read-slave             -> each read of the slave while it polls readable, as [BYTES]
//!   read-master            -> what the master has, as BYTES (packet mode: without the
//!                             status byte); a failed read as its errno name
//!   close-slave            -> ok: fd 61 closed
//!   close-master           -> ok: fd 60 closed (the slave is hung up)
//!   slave-state            -> read N|ERRNO write N|ERRNO modes ok|ERRNO dev MAJOR:MINOR of
//!                             the slave (a hung-up one reads 0, fails the rest with EIO)
//!   open-slave             -> ok: /dev/pts/N opened again at fd 61
//!   take-ctty              -> ok: the slave made the controlling terminal (TIOCSCTTY; the
//!                             process must lead its session)
//!   ctty                   -> tty_nr of /proc/self/stat (0: none)
//!   open-tty               -> ok once /dev/tty opened (and closed), else the error
//!   pty                    -> /dev/pts/N
//! ```
//!
//! BYTES are escaped both ways as Rust's `escape_ascii` writes them (`\n`, `\r`, `\x04`...;
//! a space is `\x20`).

use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use super::{failed, io_err, sys, unknown, Mode};

const MASTER_FD: i32 = 60;
const SLAVE_FD: i32 = 61;
/// How long the line discipline has to handle what was written.
const HANDLED_TIMEOUT: Duration = Duration::from_secs(8);

struct PtyPair {
    index: i32,
    packet: bool,
}

/// `pty-pair`
pub fn start(_args: &[String], _dir: &Path) -> Result<Box<dyn Mode>, String> {
    let master = sys::open(Path::new("/dev/ptmx"), libc::O_RDWR | libc::O_NOCTTY)
        .map_err(failed("open /dev/ptmx"))?;
    sys::move_fd(master, MASTER_FD).map_err(failed("move the master"))?;
    let mut index: libc::c_int = 0;
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads and TIOCGPTN writes one c_int through a pointer to a local.
    unsafe {
        sys::cvt(libc::ioctl(MASTER_FD, libc::TIOCSPTLCK, &unlock))
            .map_err(failed("TIOCSPTLCK"))?;
        sys::cvt(libc::ioctl(MASTER_FD, libc::TIOCGPTN, &mut index)).map_err(failed("TIOCGPTN"))?;
    }
    let pair = PtyPair {
        index,
        packet: false,
    };
    pair.open_slave().map_err(failed("open the slave"))?;
    Ok(Box::new(pair))
}

/// The bytes `text` escapes (`\n`, `\r`, `\t`, `\\`, `\xHH`).
fn unescape(text: &str) -> io::Result<Vec<u8>> {
    let bad = || io::Error::other(format!("bad escape in {text:?}"));
    let mut out = Vec::new();
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match bytes.next().ok_or_else(bad)? {
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'\\' => out.push(b'\\'),
            b'x' => {
                let hex: Vec<u8> = bytes.by_ref().take(2).collect();
                let hex = std::str::from_utf8(&hex).map_err(|_| bad())?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            }
            _ => return Err(bad()),
        }
    }
    Ok(out)
}

/// Bytes queued for reading on `fd` (FIONREAD).
fn queued(fd: i32) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer, which points at `n`.
    sys::cvt(unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) })?;
    Ok(n as usize)
}

/// Waits (bounded) until `done` says yes.
fn wait_until(what: &str, mut done: impl FnMut() -> io::Result<bool>) -> io::Result<()> {
    let deadline = Instant::now() + HANDLED_TIMEOUT;
    while !done()? {
        if Instant::now() >= deadline {
            return Err(io::Error::other(format!("timed out waiting for {what}")));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}

impl PtyPair {
    fn open_slave(&self) -> io::Result<()> {
        let path = format!("/dev/pts/{}", self.index);
        let slave = sys::open(Path::new(&path), libc::O_RDWR | libc::O_NOCTTY)?;
        sys::move_fd(slave, SLAVE_FD).map(drop)
    }

    fn raw(&self) -> io::Result<()> {
        // SAFETY: termios is plain data, filled by tcgetattr before use.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: tcgetattr and tcsetattr read and write one termios, `t`.
        unsafe {
            sys::cvt(libc::tcgetattr(SLAVE_FD, &mut t))?;
            libc::cfmakeraw(&mut t);
            sys::cvt(libc::tcsetattr(SLAVE_FD, libc::TCSANOW, &t))?;
        }
        Ok(())
    }

    fn type_in(&self, bytes: &[u8], echo: &[u8]) -> io::Result<()> {
        let before = queued(SLAVE_FD)?;
        sys::write_all(MASTER_FD, bytes)?;
        if echo.is_empty() {
            // Raw mode: every byte counts as soon as the line discipline has it.
            return wait_until(
                "the input",
                || Ok(queued(SLAVE_FD)? >= before + bytes.len()),
            );
        }
        let mut seen = Vec::new();
        wait_until("the echo", || {
            if sys::poll_in(MASTER_FD, 0)? {
                let mut buf = [0u8; 4096];
                let n = sys::read(MASTER_FD, &mut buf)?;
                seen.extend_from_slice(&buf[usize::from(self.packet).min(n)..n]);
            }
            if !echo.starts_with(&seen) {
                return Err(io::Error::other(format!(
                    "echo {:?}, not {:?}",
                    seen.escape_ascii().to_string(),
                    echo.escape_ascii().to_string()
                )));
            }
            Ok(seen.len() == echo.len())
        })
    }

    fn read_slave(&self) -> io::Result<String> {
        let mut out = String::new();
        while sys::poll_in(SLAVE_FD, 0)? {
            let mut buf = [0u8; 8192];
            let n = sys::read(SLAVE_FD, &mut buf)?;
            out.push_str(&format!("[{}]", buf[..n].escape_ascii()));
        }
        Ok(out)
    }

    fn read_master(&self) -> io::Result<String> {
        let n = queued(MASTER_FD)?;
        let mut buf = vec![0u8; n + 1];
        if n == 0 {
            // An empty master reads EIO once its slave was closed (EAGAIN without O_NONBLOCK
            // is not tried: it would block).
            let mut p = libc::pollfd {
                fd: MASTER_FD,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: poll reads and writes one pollfd, `p`.
            sys::cvt(unsafe { libc::poll(&mut p, 1, 0) })?;
            if p.revents & libc::POLLHUP == 0 {
                return Ok(String::new());
            }
        }
        match sys::read(MASTER_FD, &mut buf) {
            Ok(got) => {
                let skip = usize::from(self.packet).min(got);
                Ok(buf[skip..got].escape_ascii().to_string())
            }
            Err(e) if e.raw_os_error() == Some(libc::EIO) => Ok("EIO".into()),
            Err(e) => Err(e),
        }
    }
}

/// What a call's result shows: its count, or its errno's name.
fn outcome(r: io::Result<usize>) -> String {
    match r {
        Ok(n) => n.to_string(),
        Err(e) if e.raw_os_error() == Some(libc::EIO) => "EIO".into(),
        Err(e) => e.to_string(),
    }
}

fn slave_state() -> io::Result<String> {
    let mut buf = [0u8; 16];
    // Only once it polls readable: a live slave would block.
    let read = if sys::poll_in(SLAVE_FD, 0)? {
        outcome(sys::read(SLAVE_FD, &mut buf))
    } else {
        "blocks".into()
    };
    // SAFETY: write reads 0 bytes from a valid pointer.
    let written = unsafe { libc::write(SLAVE_FD, buf.as_ptr().cast(), 0) };
    let write = outcome(if written < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(written as usize)
    });
    // SAFETY: termios is plain data; tcgetattr writes one termios, `t`.
    let modes = outcome(
        sys::cvt(unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            libc::tcgetattr(SLAVE_FD, &mut t)
        })
        .map(|n| n as usize),
    );
    let st = sys::fstat(SLAVE_FD)?;
    Ok(format!(
        "read {read} write {write} modes {modes} dev {}:{}",
        libc::major(st.st_rdev),
        libc::minor(st.st_rdev)
    ))
}

impl Mode for PtyPair {
    fn command(&mut self, verb: &str, args: &[&str]) -> Result<String, String> {
        let ok = |r: io::Result<()>| r.map(|()| "ok".to_string()).map_err(io_err);
        match (verb, args) {
            ("raw", []) => ok(self.raw()),
            ("packet", []) => {
                let on: libc::c_int = 1;
                // SAFETY: TIOCPKT reads one c_int through the pointer, which points at `on`.
                ok(sys::cvt(unsafe { libc::ioctl(MASTER_FD, libc::TIOCPKT, &on) }).map(drop))?;
                self.packet = true;
                Ok("ok".into())
            }
            ("type", [bytes, echo]) => {
                let echo = if *echo == "-" {
                    Vec::new()
                } else {
                    unescape(echo).map_err(io_err)?
                };
                ok(unescape(bytes).and_then(|b| self.type_in(&b, &echo)))
            }
            ("print", [bytes, n]) => {
                let n: usize = n.parse().map_err(|_| format!("bad count {n:?}"))?;
                ok(unescape(bytes).and_then(|b| {
                    sys::write_all(SLAVE_FD, &b)?;
                    wait_until("the output", || Ok(queued(MASTER_FD)? >= n))
                }))
            }
            ("flush", []) => {
                // SAFETY: tcflush on our own fd, no pointers.
                ok(sys::cvt(unsafe { libc::tcflush(SLAVE_FD, libc::TCIFLUSH) }).map(drop))
            }
            ("read-slave", []) => self.read_slave().map_err(io_err),
            ("read-master", []) => self.read_master().map_err(io_err),
            ("close-slave", []) => {
                sys::close(SLAVE_FD);
                Ok("ok".into())
            }
            ("open-slave", []) => ok(self.open_slave()),
            ("close-master", []) => {
                sys::close(MASTER_FD);
                Ok("ok".into())
            }
            ("slave-state", []) => slave_state().map_err(io_err),
            ("take-ctty", []) => {
                // SAFETY: TIOCSCTTY takes an int argument, no pointers.
                ok(sys::cvt(unsafe { libc::ioctl(SLAVE_FD, libc::TIOCSCTTY, 0) }).map(drop))
            }
            ("ctty", []) => {
                let stat = std::fs::read_to_string("/proc/self/stat").map_err(io_err)?;
                let after = &stat[stat.rfind(')').map_or(0, |i| i + 2)..];
                Ok(after.split(' ').nth(4).unwrap_or("?").to_string())
            }
            ("open-tty", []) => {
                let fd = sys::open(Path::new("/dev/tty"), libc::O_RDWR | libc::O_NOCTTY)
                    .map_err(io_err)?;
                sys::close(fd);
                Ok("ok".into())
            }
            ("pty", []) => Ok(format!("/dev/pts/{}", self.index)),
            _ => unknown(verb),
        }
    }
}
