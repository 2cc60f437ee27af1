//! Unix messages beyond plain bytes, for `unix-pair` and `unix-pass`: descriptors passed
//! with SCM_RIGHTS (`pass`, `take`) and credentials (SCM_CREDENTIALS).

use std::io;
use std::mem::{size_of, zeroed};
use std::path::Path;

use super::sys::{self, cvt};
use super::unix::{self, send_flags};

/// Where `pass` keeps the pipe's write end.
pub const PIPE_WRITER: i32 = 60;
/// Where `pass` keeps the other end of the socketpair it passes one end of.
pub const SOCK_KEPT: i32 = 61;
/// Where `take` keeps a socket it received.
pub const SOCK_TAKEN: i32 = 62;
/// Where `take` keeps a pipe it received.
pub const PIPE_TAKEN: i32 = 63;
/// Where `take` keeps a file it received.
pub const FILE_TAKEN: i32 = 64;

/// `pass SIDE WHAT...`: one message "fds" carrying a descriptor per WHAT, closed here after.
pub fn pass(fd: i32, what: &[&str]) -> Result<String, String> {
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
pub fn take(fd: i32) -> io::Result<String> {
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
                format!("sock:{}", unix::recv_all(kept)?)
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

pub fn set_passcred(fd: i32) -> io::Result<()> {
    sys::setsockopt_value(fd, libc::SOL_SOCKET, libc::SO_PASSCRED, &1i32).map(drop)
}

/// `recv-creds SIDE`: one message and its credentials, without blocking.
pub fn recv_creds(fd: i32) -> io::Result<String> {
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
/// Room for SCM_MAX_FD descriptors and credentials.
const CMSG_BUF: usize = 2048;

/// `sendmsg` of `data` with `fds` (SCM_RIGHTS) and `creds` (SCM_CREDENTIALS).
pub fn sendmsg(fd: i32, data: &[u8], fds: &[i32], creds: Option<libc::ucred>) -> io::Result<()> {
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

pub fn recvmsg(fd: i32) -> io::Result<Received> {
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
