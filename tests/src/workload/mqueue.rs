//! `mqueue NAME [OPTION...]`: a POSIX message queue this process holds.
//!
//! ```text
//! mqueue NAME     fd 47: mq_open(/NAME, O_RDWR|O_CREAT|O_EXCL|O_NONBLOCK, 0640, maxmsg 5,
//!                 msgsize 64), given to uid 1001 gid 101, holding (1 "one"), (2 "two"),
//!                 (1 "three")
//!   unlinked      then mq_unlink(/NAME)
//!   notify        then mq_notify(SIGEV_NONE) on fd 47
//!   child         a child forked holding fd 48: /NAME opened again O_WRONLY (its own
//!                 description), asked over two pipes ("send PRIO TEXT")
//!   waiter        a second queue /NAME-w (empty) held at fd 50 (O_WRONLY), and a child
//!                 blocked in mq_receive on it (fd 49, O_RDONLY, blocking) that reports each
//!                 message it gets on a pipe
//! recv -> PRIO TEXT (fd 47, O_NONBLOCK: EAGAIN when empty)    send PRIO TEXT -> ok
//! attr -> maxmsg msgsize curmsgs nonblock (mq_getattr of fd 47)
//! stat -> mode uid gid (fstat of fd 47, mode in octal)
//! fl -> the access mode and O_NONBLOCK of fd 47 (F_GETFL, octal)
//! child send PRIO TEXT -> ok (sent by the child through its fd 48)
//! waiter-pid -> the waiting child's pid     wake PRIO TEXT -> PRIO TEXT (sent on fd 50,
//!                 as the waiting child received it)
//! ```

use std::io;
use std::path::Path;

use super::kids::{answer_each, ChildPipes};
use super::{failed, sys, Mode};

const FD: i32 = 47;
const CHILD_FD: i32 = 48;

/// `mqueue NAME [unlinked] [notify] [child]`
pub fn start(args: &[String], _dir: &Path) -> Result<Box<dyn Mode>, String> {
    let (name, opts) = args.split_first().ok_or("mqueue: NAME expected")?;
    Ok(Box::new(
        Mqueue::start(name, opts).map_err(failed("mqueue"))?,
    ))
}

/// The `mqueue` mode (see the module doc).
struct Mqueue {
    child: Option<ChildPipes>,
    /// The waiting child's pid and the pipe it reports on.
    waiter: Option<(i32, i32)>,
}

fn mq_send(fd: i32, prio: u32, text: &[u8]) -> io::Result<()> {
    // SAFETY: `text` is readable for its length; a null timeout is allowed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mq_timedsend,
            fd,
            text.as_ptr(),
            text.len(),
            prio,
            std::ptr::null::<libc::timespec>(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn send_words(fd: i32, args: &[&str]) -> io::Result<String> {
    let [prio, text] = args else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "PRIO TEXT expected",
        ));
    };
    let prio = prio
        .parse()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "PRIO"))?;
    mq_send(fd, prio, text.as_bytes())?;
    Ok("ok".into())
}

impl Mqueue {
    fn start(name: &str, opts: &[String]) -> io::Result<Self> {
        let has = |o: &str| opts.iter().any(|x| x == o);
        // SAFETY: mq_attr is plain data; all-zero is valid.
        let mut attr: libc::mq_attr = unsafe { std::mem::zeroed() };
        attr.mq_maxmsg = 5;
        attr.mq_msgsize = 64;
        let flags = libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_NONBLOCK;
        let fd = sys::move_fd(sys::mq_open(name, flags, Some(&attr))?, FD)?;
        // SAFETY: fchown takes no pointers.
        sys::cvt(unsafe { libc::fchown(fd, 1001, 101) })?;
        // umask may have taken bits of the mode off.
        // SAFETY: fchmod takes no pointers.
        sys::cvt(unsafe { libc::fchmod(fd, 0o640) })?;
        for (prio, text) in [(1, "one"), (2, "two"), (1, "three")] {
            mq_send(fd, prio, text.as_bytes())?;
        }
        let mut child = None;
        if has("child") {
            let theirs = sys::move_fd(sys::mq_open(name, libc::O_WRONLY, None)?, CHILD_FD)?;
            let (a_rd, a_wr) = sys::pipe()?;
            let (b_rd, b_wr) = sys::pipe()?;
            // the workload is single-threaded here; the child only makes syscalls.
            let kid = sys::fork()?;
            if kid == 0 {
                sys::close(FD);
                answer_each(a_rd, b_wr, |msg| {
                    let words: Vec<&str> = msg.split_whitespace().collect();
                    match words.split_first() {
                        Some((&"send", args)) => {
                            send_words(CHILD_FD, args).unwrap_or_else(|e| format!("err {e}"))
                        }
                        _ => "err unknown".into(),
                    }
                });
                std::process::exit(3)
            }
            sys::close(theirs);
            child = Some(ChildPipes {
                to_child: a_wr,
                from_child: b_rd,
            });
        }
        if has("unlinked") {
            sys::mq_unlink(name)?;
        }
        if has("notify") {
            // SAFETY: sigevent is plain data; all-zero is valid.
            let mut ev: libc::sigevent = unsafe { std::mem::zeroed() };
            ev.sigev_notify = libc::SIGEV_NONE;
            // SAFETY: `ev` is a valid sigevent alive for the call.
            if unsafe { libc::syscall(libc::SYS_mq_notify, fd, &ev as *const libc::sigevent) } < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        let mut waiter = None;
        if has("waiter") {
            // SAFETY: mq_attr is plain data; all-zero is valid.
            let mut attr: libc::mq_attr = unsafe { std::mem::zeroed() };
            attr.mq_maxmsg = 1;
            attr.mq_msgsize = 64;
            let w_name = format!("{name}-w");
            let flags = libc::O_RDONLY | libc::O_CREAT | libc::O_EXCL;
            let theirs = sys::move_fd(sys::mq_open(&w_name, flags, Some(&attr))?, 49)?;
            sys::move_fd(sys::mq_open(&w_name, libc::O_WRONLY, None)?, 50)?;
            let (rd, wr) = sys::pipe()?;
            // the workload is single-threaded here; the child only makes syscalls.
            let kid = sys::fork()?;
            if kid == 0 {
                sys::close(FD);
                let mut buf = [0u8; 64];
                loop {
                    let mut prio: libc::c_uint = 0;
                    // SAFETY: `buf` is writable for 64 bytes (the msgsize), `prio` for a
                    // c_uint; a null timeout waits for ever.
                    let n = unsafe {
                        libc::syscall(
                            libc::SYS_mq_timedreceive,
                            theirs,
                            buf.as_mut_ptr(),
                            buf.len(),
                            &mut prio as *mut libc::c_uint,
                            std::ptr::null::<libc::timespec>(),
                        )
                    };
                    let report = if n < 0 {
                        format!("err {}", io::Error::last_os_error())
                    } else {
                        format!("{prio} {}", String::from_utf8_lossy(&buf[..n as usize]))
                    };
                    if sys::write_all(wr, report.as_bytes()).is_err() {
                        std::process::exit(3)
                    }
                }
            }
            sys::close(theirs);
            sys::close(wr);
            waiter = Some((kid, rd));
        }
        Ok(Self { child, waiter })
    }

    fn answer(&mut self, verb: &str, args: &[&str]) -> io::Result<String> {
        match (verb, args) {
            ("recv", []) => {
                let mut buf = [0u8; 64];
                let mut prio: libc::c_uint = 0;
                // SAFETY: `buf` is writable for 64 bytes (the queue's msgsize), `prio` for a
                // c_uint; a null timeout is allowed.
                let n = unsafe {
                    libc::syscall(
                        libc::SYS_mq_timedreceive,
                        FD,
                        buf.as_mut_ptr(),
                        buf.len(),
                        &mut prio as *mut libc::c_uint,
                        std::ptr::null::<libc::timespec>(),
                    )
                };
                if n < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(format!(
                    "{prio} {}",
                    String::from_utf8_lossy(&buf[..n as usize])
                ))
            }
            ("send", args) => send_words(FD, args),
            ("attr", []) => {
                // SAFETY: mq_attr is plain data; all-zero is valid.
                let mut a: libc::mq_attr = unsafe { std::mem::zeroed() };
                // SAFETY: a null new value; `a` is writable, alive for the call.
                let r = unsafe {
                    libc::syscall(
                        libc::SYS_mq_getsetattr,
                        FD,
                        std::ptr::null::<libc::mq_attr>(),
                        &mut a as *mut libc::mq_attr,
                    )
                };
                if r < 0 {
                    return Err(io::Error::last_os_error());
                }
                let nonblock = a.mq_flags & libc::O_NONBLOCK as libc::c_long != 0;
                Ok(format!(
                    "{} {} {} {nonblock}",
                    a.mq_maxmsg, a.mq_msgsize, a.mq_curmsgs
                ))
            }
            ("stat", []) => {
                // SAFETY: stat is plain data; fstat fills it.
                let mut st: libc::stat = unsafe { std::mem::zeroed() };
                // SAFETY: `st` is writable, alive for the call.
                sys::cvt(unsafe { libc::fstat(FD, &mut st) })?;
                Ok(format!(
                    "{:o} {} {}",
                    st.st_mode & 0o7777,
                    st.st_uid,
                    st.st_gid
                ))
            }
            ("fl", []) => {
                // SAFETY: F_GETFL takes no argument.
                let fl = sys::cvt(unsafe { libc::fcntl(FD, libc::F_GETFL) })?;
                Ok(format!("{:o}", fl & (libc::O_ACCMODE | libc::O_NONBLOCK)))
            }
            ("child", ["send", prio, text]) => {
                let pipes = self
                    .child
                    .as_ref()
                    .ok_or_else(|| io::Error::other("no child"))?;
                pipes.ask(&format!("send {prio} {text}"))
            }
            ("waiter-pid", []) => {
                let (pid, _) = self.waiter.ok_or_else(|| io::Error::other("no waiter"))?;
                Ok(pid.to_string())
            }
            ("wake", args) => {
                let (_, rd) = self.waiter.ok_or_else(|| io::Error::other("no waiter"))?;
                send_words(50, args)?;
                let mut buf = [0u8; 128];
                let n = sys::read(rd, &mut buf)?;
                Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
            }
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("unknown command {verb:?}"),
            )),
        }
    }
}

impl Mode for Mqueue {
    fn command(&mut self, verb: &str, args: &[&str]) -> Result<String, String> {
        self.answer(verb, args).map_err(|e| e.to_string())
    }
}
