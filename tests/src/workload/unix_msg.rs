//! The workload's unix commands beyond plain bytes: descriptors passed with SCM_RIGHTS,
//! credentials, shutdown, and a listener's own clients (accepted or still waiting). Part of
//! `cryo-workload` (its top doc lists the commands).

use std::io;
use std::mem::{size_of, zeroed};
use std::path::Path;

use crate::sys;

/// Where `pass` keeps the pipe's write end.
const PIPE_WRITER: i32 = 60;
/// Where `pass` keeps the other end of the socketpair it passes one end of.
const SOCK_KEPT: i32 = 61;
/// Where `take` keeps a socket it received.
const SOCK_TAKEN: i32 = 62;
/// Where `take` keeps a pipe it received.
const PIPE_TAKEN: i32 = 63;
/// Where `take` keeps a file it received.
const FILE_TAKEN: i32 = 64;
/// The `unix-listen` client of its own listener.
const CLIENT: i32 = 52;
/// The `unix-listen` connection accepted and kept.
const CONN: i32 = 53;

/// Commands of `unix-pair` beyond send/recv; `None` for a verb it does not know.
pub fn pair_command(verb: &str, args: &[&str]) -> Option<Result<String, String>> {
    let io = |e: io::Error| e.to_string();
    let side = |s: &str| {
        if s == "0" {
            crate::UNIX_A
        } else {
            crate::UNIX_B
        }
    };
    Some(match (verb, args) {
        ("pass", [s, what @ ..]) => pass(side(s), what),
        ("take", [s]) => take(side(s)).map_err(io),
        ("pipe-write", [data]) => sys::write_all(PIPE_WRITER, data.as_bytes())
            .map(|()| "ok".into())
            .map_err(io),
        ("pipe-read", []) => sys::read_available(PIPE_TAKEN, 4096)
            .map(|d| String::from_utf8_lossy(&d).into_owned())
            .map_err(io),
        ("sock-send", [data]) => send_flags(SOCK_KEPT, data.as_bytes(), 0)
            .map(|()| "ok".into())
            .map_err(io),
        ("sock-recv", []) => crate::unix_recv_all(SOCK_TAKEN).map_err(io),
        ("shut", [s]) => {
            // SAFETY: shutdown takes no pointers.
            cvt(unsafe { libc::shutdown(side(s), libc::SHUT_WR) })
                .map(|_| "ok".into())
                .map_err(io)
        }
        ("send-nosig", [s, msg]) => send_flags(side(s), msg.as_bytes(), libc::MSG_NOSIGNAL)
            .map(|()| "ok".into())
            .map_err(io),
        ("send-creds", [s, msg, uid, gid, pid @ ..]) => {
            let num = |t: &str| t.parse::<u32>().map_err(|_| format!("bad number {t:?}"));
            let pid = match pid {
                [p] => num(p).map(|p| p as i32),
                _ => Ok(std::process::id() as i32),
            };
            match (num(uid), num(gid), pid) {
                (Ok(uid), Ok(gid), Ok(pid)) => {
                    let creds = libc::ucred { pid, uid, gid };
                    sendmsg(side(s), msg.as_bytes(), &[], Some(creds))
                        .map(|()| "ok".into())
                        .map_err(io)
                }
                (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => Err(e),
            }
        }
        ("passcred", [s]) => set_passcred(side(s)).map(|()| "ok".into()).map_err(io),
        ("recv-creds", [s]) => recv_creds(side(s)).map_err(io),
        _ => return None,
    })
}

/// Commands of `unix-listen` beyond accept; `None` for a verb it does not know.
pub fn listen_command(listener: i32, verb: &str, args: &[&str]) -> Option<Result<String, String>> {
    let io = |e: io::Error| e.to_string();
    let end = |w: &str| if w == "client" { CLIENT } else { CONN };
    Some(match (verb, args) {
        ("connect", [msg]) => connect_self(listener, msg.as_bytes())
            .map(|()| "ok".into())
            .map_err(io),
        ("accept-keep", []) => accept_keep(listener).map_err(io),
        ("say", [w, msg]) => send_flags(end(w), msg.as_bytes(), 0)
            .map(|()| "ok".into())
            .map_err(io),
        ("hear", [w]) => crate::unix_recv_all(end(w)).map_err(io),
        _ => return None,
    })
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn send_flags(fd: i32, msg: &[u8], flags: i32) -> io::Result<()> {
    // SAFETY: send from our own buffer.
    let n = unsafe { libc::send(fd, msg.as_ptr().cast(), msg.len(), flags) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `pass SIDE WHAT...`: one message "fds" carrying a descriptor per WHAT, closed here after.
fn pass(fd: i32, what: &[&str]) -> Result<String, String> {
    let io = |e: io::Error| e.to_string();
    let mut fds = Vec::new();
    for w in what {
        let (kind, rest) = w.split_once(':').ok_or(format!("bad item {w:?}"))?;
        let passed = match kind {
            "pipe" => {
                let (rd, wr) = sys::pipe().map_err(io)?;
                sys::write_all(wr, rest.as_bytes()).map_err(io)?;
                sys::move_fd(wr, PIPE_WRITER).map_err(io)?;
                rd
            }
            "file" => {
                let (path, off) = rest.rsplit_once(':').ok_or(format!("bad item {w:?}"))?;
                let off: i64 = off.parse().map_err(|_| format!("bad offset {off:?}"))?;
                let f = sys::open(Path::new(path), libc::O_RDONLY).map_err(io)?;
                // SAFETY: lseek takes no pointers.
                if unsafe { libc::lseek(f, off, libc::SEEK_SET) } < 0 {
                    return Err(io(io::Error::last_os_error()));
                }
                f
            }
            "sock" => {
                let mut sv = [0i32; 2];
                // SAFETY: socketpair fills our two-int array.
                cvt(unsafe {
                    libc::socketpair(
                        libc::AF_UNIX,
                        libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
                        0,
                        sv.as_mut_ptr(),
                    )
                })
                .map_err(io)?;
                send_flags(sv[1], rest.as_bytes(), 0).map_err(io)?;
                sys::move_fd(sv[1], SOCK_KEPT).map_err(io)?;
                sv[0]
            }
            other => return Err(format!("unknown item kind {other:?}")),
        };
        fds.push(passed);
    }
    let sent = sendmsg(fd, b"fds", &fds, None).map_err(io);
    for f in fds {
        sys::close(f);
    }
    sent.map(|()| "ok".into())
}

/// `take SIDE`: one message with its descriptors, each used and kept.
fn take(fd: i32) -> io::Result<String> {
    let (data, fds, _) = recvmsg(fd)?;
    let mut out = vec![String::from_utf8_lossy(&data).into_owned()];
    for f in fds {
        // SAFETY: stat is plain data, filled by fstat.
        let mut st: libc::stat = unsafe { zeroed() };
        // SAFETY: st is valid for writes.
        cvt(unsafe { libc::fstat(f, &mut st) })?;
        let item = match st.st_mode & libc::S_IFMT {
            libc::S_IFIFO => {
                let kept = sys::move_fd(f, PIPE_TAKEN)?;
                let d = sys::read_available(kept, 4096)?;
                format!("pipe:{}", String::from_utf8_lossy(&d))
            }
            libc::S_IFREG => {
                let kept = sys::move_fd(f, FILE_TAKEN)?;
                let off = sys::tell(kept)?;
                let mut rest = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    match sys::read(kept, &mut chunk)? {
                        0 => break,
                        n => rest.extend_from_slice(&chunk[..n]),
                    }
                }
                format!("file:{off}:{}", String::from_utf8_lossy(&rest))
            }
            libc::S_IFSOCK => {
                let kept = sys::move_fd(f, SOCK_TAKEN)?;
                format!("sock:{}", crate::unix_recv_all(kept)?)
            }
            other => {
                sys::close(f);
                format!("other:{other:o}")
            }
        };
        out.push(item);
    }
    Ok(out.join(" "))
}

fn set_passcred(fd: i32) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: the option value is one int that outlives the call.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PASSCRED,
            (&on as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
    .map(|_| ())
}

/// `recv-creds SIDE`: one message and its credentials, without blocking.
fn recv_creds(fd: i32) -> io::Result<String> {
    set_passcred(fd)?;
    match recvmsg_flags(fd, libc::MSG_DONTWAIT) {
        Ok((data, fds, creds)) => {
            for f in fds {
                sys::close(f);
            }
            let msg = String::from_utf8_lossy(&data);
            Ok(match creds.filter(|c| c.pid != 0) {
                Some(c) => format!("{msg} {} {} {}", c.pid, c.uid, c.gid),
                None => format!("{msg} none"),
            })
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok("empty".into()),
        Err(e) => Err(e),
    }
}

/// `connect MSG` (unix-listen): a client of the listener's own name at fd 52, MSG sent.
fn connect_self(listener: i32, msg: &[u8]) -> io::Result<()> {
    // SAFETY: sockaddr_un is plain data; all-zero is valid.
    let mut addr: libc::sockaddr_un = unsafe { zeroed() };
    let mut len = size_of::<libc::sockaddr_un>() as libc::socklen_t;
    // SAFETY: addr and len are valid for writes of the sizes given.
    cvt(unsafe {
        libc::getsockname(
            listener,
            (&mut addr as *mut libc::sockaddr_un).cast(),
            &mut len,
        )
    })?;
    // SAFETY: plain syscall.
    let c = cvt(unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: addr holds `len` valid bytes, as getsockname returned them.
    cvt(unsafe { libc::connect(c, (&addr as *const libc::sockaddr_un).cast(), len) })?;
    let c = sys::move_fd(c, CLIENT)?;
    send_flags(c, msg, 0)
}

/// `accept-keep` (unix-listen): one connection accepted, kept at fd 53, its first message read.
fn accept_keep(listener: i32) -> io::Result<String> {
    // SAFETY: null address pointers are allowed.
    let c = cvt(unsafe {
        libc::accept4(
            listener,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_CLOEXEC,
        )
    })?;
    let c = sys::move_fd(c, CONN)?;
    let mut buf = [0u8; 4096];
    // SAFETY: recv into our own buffer.
    let n = unsafe { libc::recv(c, buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(format!(
        "got {}",
        String::from_utf8_lossy(&buf[..n as usize])
    ))
}

/// Room for SCM_MAX_FD descriptors and credentials.
const CMSG_BUF: usize = 2048;

/// `sendmsg` of `data` with `fds` (SCM_RIGHTS) and `creds` (SCM_CREDENTIALS).
fn sendmsg(fd: i32, data: &[u8], fds: &[i32], creds: Option<libc::ucred>) -> io::Result<()> {
    let mut cbuf = [0u64; CMSG_BUF / 8];
    let fd_bytes = std::mem::size_of_val(fds);
    // SAFETY: CMSG_SPACE is arithmetic.
    let need = unsafe {
        (if fds.is_empty() {
            0
        } else {
            libc::CMSG_SPACE(fd_bytes as u32)
        }) + if creds.is_some() {
            libc::CMSG_SPACE(size_of::<libc::ucred>() as u32)
        } else {
            0
        }
    } as usize;
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: msghdr is plain data; all-zero is valid.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if need > 0 {
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = need;
    }
    // SAFETY: the control buffer holds `need` bytes sized with CMSG_SPACE for exactly the
    // headers written; CMSG_FIRSTHDR/NXTHDR stay within it; data written unaligned.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        if !fds.is_empty() {
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(fd_bytes as u32) as usize;
            let p = libc::CMSG_DATA(cmsg).cast::<i32>();
            for (i, f) in fds.iter().enumerate() {
                std::ptr::write_unaligned(p.add(i), *f);
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
        if let Some(c) = creds {
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_CREDENTIALS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<libc::ucred>() as u32) as usize;
            std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::ucred>(), c);
        }
    }
    // SAFETY: msg points to live buffers of the lengths it declares.
    let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

type Received = (Vec<u8>, Vec<i32>, Option<libc::ucred>);

fn recvmsg(fd: i32) -> io::Result<Received> {
    recvmsg_flags(fd, 0)
}

/// One `recvmsg`: the data, the descriptors (close-on-exec) and the credentials.
fn recvmsg_flags(fd: i32, flags: i32) -> io::Result<Received> {
    let mut buf = vec![0u8; 4096];
    let mut cbuf = [0u64; CMSG_BUF / 8];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain data; all-zero is valid.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = CMSG_BUF;
    // SAFETY: msg points to live buffers of the lengths it declares.
    let n = unsafe { libc::recvmsg(fd, &mut msg, flags | libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    let mut fds = Vec::new();
    let mut creds = None;
    // SAFETY: the kernel filled msg; CMSG_FIRSTHDR/NXTHDR walk within msg_controllen and
    // CMSG_DATA stays inside each header; data read unaligned.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            let len = (*cmsg).cmsg_len - libc::CMSG_LEN(0) as usize;
            let data = libc::CMSG_DATA(cmsg);
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                for i in 0..len / size_of::<i32>() {
                    fds.push(std::ptr::read_unaligned(data.cast::<i32>().add(i)));
                }
            } else if (*cmsg).cmsg_level == libc::SOL_SOCKET
                && (*cmsg).cmsg_type == libc::SCM_CREDENTIALS
                && len >= size_of::<libc::ucred>()
            {
                creds = Some(std::ptr::read_unaligned(data.cast::<libc::ucred>()));
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok((buf, fds, creds))
}

/// `unix-pass`: a stream socketpair at fds 50 and 51 and a child holding only 51 (this process
/// only 50), which takes one message (`take`) each time it gets SIGUSR1 and answers with what
/// it took. Returns the child's pid.
pub fn start_pass_child() -> io::Result<i32> {
    let (a, b) = crate::unix_socketpair(libc::SOCK_STREAM)?;
    // Blocked before the fork: a SIGUSR1 sent early waits for the child's sigsuspend.
    sys::install_sigusr1(crate::on_sigusr1)?;
    sys::block_signal(libc::SIGUSR1)?;
    // SAFETY: single-threaded here; the child only makes syscalls and small allocations.
    let kid = cvt(unsafe { libc::fork() })?;
    if kid == 0 {
        sys::close(a);
        crate::exit_child("unix-pass child", pass_child(b));
    }
    sys::close(b);
    Ok(kid)
}

fn pass_child(fd: i32) -> io::Result<()> {
    loop {
        sys::await_sigusr1();
        let took = take(fd)?;
        send_flags(fd, took.as_bytes(), 0)?;
    }
}

/// Commands of `unix-pass`; `None` for a verb it does not know.
pub fn pass_command(kid: i32, verb: &str, args: &[&str]) -> Option<Result<String, String>> {
    let io = |e: io::Error| e.to_string();
    Some(match (verb, args) {
        ("kid", []) => Ok(kid.to_string()),
        ("pass", what) => pass(crate::UNIX_A, what),
        ("pipe-write", [data]) => sys::write_all(PIPE_WRITER, data.as_bytes())
            .map(|()| "ok".into())
            .map_err(io),
        ("ask", []) => {
            // SAFETY: kill takes plain integers.
            if unsafe { libc::kill(kid, libc::SIGUSR1) } < 0 {
                return Some(Err(io(io::Error::last_os_error())));
            }
            wait_readable(crate::UNIX_A)
                .and_then(|()| crate::unix_recv_all(crate::UNIX_A))
                .map_err(io)
        }
        _ => return None,
    })
}

/// Waits up to 10 s for something to read on `fd`.
fn wait_readable(fd: i32) -> io::Result<()> {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll on our one pollfd.
    match cvt(unsafe { libc::poll(&mut p, 1, 10_000) })? {
        0 => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "no answer after 10 s",
        )),
        _ => Ok(()),
    }
}
