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
//!                             status byte, read alone when no data is there); a failed
//!                             read as its errno name
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
//!   fork-kid leader        -> pid of a child that leads a session of its own with the slave
//!                             as controlling terminal (TIOCSCTTY), holds /dev/tty at fd 62
//!                             and closes 60 and 61: the pair is this process's only
//!   fork-kid pair          -> pid of a child that keeps 60 and 61, while this process (the
//!                             leader of the terminal's session: take-ctty first) opens
//!                             /dev/tty at fd 62 and closes them: the pair is the child's only
//!   kid COMMAND...         -> the child's answer to COMMAND (the commands above)
//!   open-tty-at            -> ok: /dev/tty opened and kept at fd 62
//!   tty-state              -> ctty TTY_NR dev MAJOR:MINOR (TIOCGDEV of fd 62) leader yes|no
//!   tty-write BYTES        -> ok: BYTES written to fd 62 (/dev/tty)
//!   read-master N          -> read-master once the master has N bytes
//!   async                  -> ok: O_ASYNC on both ends (owner this process, SIGIO ignored)
//!   extproc                -> ok: EXTPROC set in the slave's c_lflag
//!   ixon                   -> ok: IXON set in the slave's c_iflag
//!   vstop HEX              -> ok: the slave's VSTOP character set to byte HEX
//!   flow-char stop|start   -> ok: the slave's VSTOP (VSTART) typed on the master, once the
//!                             line discipline has handled it (raw mode: a marker byte
//!                             typed behind it is read back; the input must be empty)
//!   tcflow slave|master off|on -> ok: tcflow(TCOOFF or TCOON) on that end
//!   flows                  -> slave yes|no master yes|no: whether each end polls writable
//! ```
//!
//! BYTES are escaped both ways as Rust's `escape_ascii` writes them (`\n`, `\r`, `\x04`...;
//! a space is `\x20`).

use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use super::kids::{self, ChildPipes};
use super::{failed, io_err, sys, unknown, Mode};

const MASTER_FD: i32 = 60;
const SLAVE_FD: i32 = 61;
/// Where /dev/tty is kept (fork-kid, open-tty-at).
const TTY_FD: i32 = 62;
/// How long the line discipline has to handle what was written.
const HANDLED_TIMEOUT: Duration = Duration::from_secs(8);

struct PtyPair {
    index: i32,
    packet: bool,
    /// The child of fork-kid.
    kid: Option<ChildPipes>,
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
        kid: None,
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
            // An empty master reads EIO once its slave was closed, and in packet mode a
            // pending status byte alone (POLLPRI) (EAGAIN without O_NONBLOCK is not tried: it
            // would block).
            let mut p = libc::pollfd {
                fd: MASTER_FD,
                events: libc::POLLIN | libc::POLLPRI,
                revents: 0,
            };
            // SAFETY: poll reads and writes one pollfd, `p`.
            sys::cvt(unsafe { libc::poll(&mut p, 1, 0) })?;
            if p.revents & (libc::POLLHUP | libc::POLLPRI) == 0 {
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

/// Opens /dev/tty (the controlling terminal) at [`TTY_FD`].
fn open_tty_at() -> io::Result<()> {
    let fd = sys::open(Path::new("/dev/tty"), libc::O_RDWR)?;
    sys::move_fd(fd, TTY_FD).map(drop)
}

/// The process's controlling terminal and its /dev/tty fd: tty_nr of /proc/self/stat, the
/// device TIOCGDEV of [`TTY_FD`] names, whether it leads its session.
fn tty_state() -> io::Result<String> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let after = &stat[stat.rfind(')').map_or(0, |i| i + 2)..];
    let tty_nr = after.split(' ').nth(4).unwrap_or("?").to_string();
    let mut dev: libc::c_uint = 0;
    // SAFETY: TIOCGDEV writes one unsigned int through the pointer, which points at `dev`.
    sys::cvt(unsafe { libc::ioctl(TTY_FD, libc::TIOCGDEV, &mut dev) })?;
    let (major, minor) = ((dev >> 8) & 0xfff, (dev & 0xff) | ((dev >> 12) & 0xfff00));
    // SAFETY: getsid and getpid take no pointers.
    let leader = unsafe { libc::getsid(0) == libc::getpid() };
    Ok(format!(
        "ctty {tty_nr} dev {major}:{minor} leader {}",
        if leader { "yes" } else { "no" }
    ))
}

/// The slave's termios changed by `change`.
fn change_modes(change: impl FnOnce(&mut libc::termios)) -> io::Result<()> {
    // SAFETY: termios is plain data, filled by tcgetattr before use.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: tcgetattr and tcsetattr read and write one termios, `t`.
    unsafe { sys::cvt(libc::tcgetattr(SLAVE_FD, &mut t))? };
    change(&mut t);
    // SAFETY: as above.
    unsafe { sys::cvt(libc::tcsetattr(SLAVE_FD, libc::TCSANOW, &t))? };
    Ok(())
}

/// O_ASYNC on `fd`, owned by this process.
fn set_async(fd: i32) -> io::Result<()> {
    // SAFETY: fcntl on our own fd with integer arguments.
    unsafe {
        sys::cvt(libc::fcntl(fd, libc::F_SETOWN, libc::getpid()))?;
        let flags = sys::cvt(libc::fcntl(fd, libc::F_GETFL))?;
        sys::cvt(libc::fcntl(fd, libc::F_SETFL, flags | libc::O_ASYNC))?;
    }
    Ok(())
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

impl PtyPair {
    /// `fork-kid leader|pair`: the child's pid.
    fn fork_kid(&mut self, role: &str) -> io::Result<String> {
        let leader = match role {
            "leader" => true,
            "pair" => false,
            _ => return Err(io::Error::other(format!("no role {role:?}"))),
        };
        let mut copy = PtyPair {
            index: self.index,
            packet: self.packet,
            kid: None,
        };
        // A result the child reports before it answers: "ok" or the error.
        let (pid, pipes) = kids::fork_asked(move |rd, wr| {
            let setup = || -> io::Result<()> {
                if leader {
                    sys::setsid()?;
                    // SAFETY: TIOCSCTTY takes an int argument, no pointers.
                    sys::cvt(unsafe { libc::ioctl(SLAVE_FD, libc::TIOCSCTTY, 0) })?;
                    open_tty_at()?;
                    sys::close(MASTER_FD);
                    sys::close(SLAVE_FD);
                }
                Ok(())
            };
            let said = setup().map_or_else(|e| e.to_string(), |()| "ok".into());
            let _ = sys::write_all(wr, said.as_bytes());
            kids::answer_each(rd, wr, |msg| {
                let words: Vec<&str> = msg.split(' ').collect();
                copy.command(words[0], &words[1..])
                    .unwrap_or_else(|e| format!("error: {e}"))
            });
            kids::exit_child("pty-pair kid", Ok(()))
        })?;
        let mut said = [0u8; 256];
        let n = sys::read(pipes.from_child, &mut said)?;
        let said = String::from_utf8_lossy(&said[..n]).into_owned();
        if said != "ok" {
            return Err(io::Error::other(format!("the child: {said}")));
        }
        self.kid = Some(pipes);
        if !leader {
            open_tty_at()?;
            sys::close(MASTER_FD);
            sys::close(SLAVE_FD);
        }
        Ok(pid.to_string())
    }
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
            ("fork-kid", [role]) => self.fork_kid(role).map_err(io_err),
            ("kid", line) if !line.is_empty() => {
                let kid = self.kid.as_ref().ok_or("no child")?;
                kid.ask(&line.join(" ")).map_err(io_err)
            }
            ("open-tty-at", []) => ok(open_tty_at()),
            ("tty-state", []) => tty_state().map_err(io_err),
            ("tty-write", [bytes]) => ok(unescape(bytes).and_then(|b| sys::write_all(TTY_FD, &b))),
            ("read-master", [n]) => {
                let n: usize = n.parse().map_err(|_| format!("bad count {n:?}"))?;
                wait_until("the output", || Ok(queued(MASTER_FD)? >= n)).map_err(io_err)?;
                self.read_master().map_err(io_err)
            }
            ("async", []) => {
                // SAFETY: SIG_IGN for SIGIO, no handler code.
                unsafe { libc::signal(libc::SIGIO, libc::SIG_IGN) };
                ok(set_async(MASTER_FD).and_then(|()| set_async(SLAVE_FD)))
            }
            ("extproc", []) => ok(change_modes(|t| t.c_lflag |= libc::EXTPROC)),
            ("ixon", []) => ok(change_modes(|t| t.c_iflag |= libc::IXON)),
            ("vstop", [hex]) => {
                let c = u8::from_str_radix(hex, 16).map_err(|_| format!("bad byte {hex:?}"))?;
                ok(change_modes(|t| t.c_cc[libc::VSTOP] = c))
            }
            ("flow-char", [which]) => {
                let index = match *which {
                    "stop" => libc::VSTOP,
                    "start" => libc::VSTART,
                    _ => return Err(format!("flow-char stop|start, not {which:?}")),
                };
                ok(flow_char(index))
            }
            ("tcflow", [end, action]) => {
                let fd = if *end == "master" {
                    MASTER_FD
                } else {
                    SLAVE_FD
                };
                let action = if *action == "off" {
                    libc::TCOOFF
                } else {
                    libc::TCOON
                };
                // SAFETY: tcflow on our own fd, no pointers.
                ok(sys::cvt(unsafe { libc::tcflow(fd, action) }).map(drop))
            }
            ("flows", []) => {
                let word = |fd| sys::poll_out_now(fd).map(|w| if w { "yes" } else { "no" });
                Ok(format!(
                    "slave {} master {}",
                    word(SLAVE_FD).map_err(io_err)?,
                    word(MASTER_FD).map_err(io_err)?
                ))
            }
            _ => unknown(verb),
        }
    }
}

/// The slave's flow character `index` (VSTOP, VSTART) typed on the master, then a marker byte
/// the slave (in raw mode) reads once the line discipline has handled both.
fn flow_char(index: usize) -> io::Result<()> {
    // SAFETY: termios is plain data, filled by tcgetattr before use.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: tcgetattr writes one termios, `t`.
    unsafe { sys::cvt(libc::tcgetattr(SLAVE_FD, &mut t))? };
    let before = queued(SLAVE_FD)?;
    sys::write_all(MASTER_FD, &[t.c_cc[index], b'z'])?;
    wait_until("the marker", || Ok(queued(SLAVE_FD)? > before))?;
    let mut rest = vec![0u8; before + 1];
    let n = sys::read(SLAVE_FD, &mut rest)?;
    if rest[..n].last() != Some(&b'z') {
        return Err(io::Error::other(format!(
            "read {:?} after the flow character",
            rest[..n].escape_ascii().to_string()
        )));
    }
    Ok(())
}
