//! `unix-peers NAME UID GID GROUPS LUID [WAIT]`: a server and its child client over a unix
//! stream connection, each with other credentials, and what each end shows as its peer.
//!
//! ```text
//! unix-peers NAME UID GID GROUPS LUID [WAIT]
//!                            a stream listener at fd 50 on NAME (a path, or @name: abstract),
//!                            listen() issued with effective uid and gid LUID (then back to
//!                            0); the socket file (a path) mode 0777; a child takes uid UID, gid GID and groups GROUPS (comma-
//!                            separated), connects and holds only its end; this process
//!                            accepts it at fd 51. With WAIT the connection is left waiting
//!                            in the accept queue (`accept` takes it): `silent` the child
//!                            sent nothing, `sent` it sent "early", `gone` it sent "bye" and
//!                            exited (reaped); a `-seqpacket` suffix (`sent-seqpacket`): the
//!                            listener and the child's socket are SOCK_SEQPACKET
//!   accept -> ok              (WAIT) the waiting connection accepted at fd 51
//!   kid -> <child pid>
//!   peercred -> "pid P uid U gid G groups A,B"   SO_PEERCRED + SO_PEERGROUPS of fd 51
//!   listener-peercred -> the same of the listener (fd 50)
//!   kid-peercred -> the same of the child's end, asked over the connection
//!   pair-as ID -> ok   a stream socketpair at fds 52 and 53, made with effective uid and
//!                      gid ID (then back to 0)
//!   pair-peercred -> the peer credentials of both ends, ' | '-joined
//!   pair-by-gone UID GID -> <the maker's pid>   a datagram socketpair at fds 52 and 53,
//!                      made by a child with uid UID and gid GID (no groups), which passes
//!                      both ends here (SCM_RIGHTS) and exits, reaped (zdtm sock_peercred)
//!   passcred -> ok            SO_PASSCRED on fd 51: the child's messages carry its credentials
//!   kid-queues TEXT -> ok     the child sends TEXT on its end; returns once it waits, unread,
//!                             in fd 51's queue
//!   kid-queues-and-exits TEXT -> ok   the same, then the child exits (its end closed) and
//!                             is reaped: the message names a process that is gone
//!   recv-creds -> "TEXT pid P uid U gid G"   one message of fd 51 with its SCM_CREDENTIALS
//! ```

use std::ffi::CString;
use std::io;
use std::path::Path;

use super::sys::{self, cvt};
use super::{failed, io_err, unknown, Mode};

/// The listener.
const LISTENER: i32 = 50;
/// The accepted end.
const CONN: i32 = 51;
/// The ends of the socketpair `pair-as` makes.
const PAIR: [i32; 2] = [52, 53];

struct UnixPeers {
    kid: i32,
}

/// `sockaddr_un` of NAME (`@name`: abstract).
fn address(name: &str) -> (libc::sockaddr_un, libc::socklen_t) {
    // SAFETY: a zeroed sockaddr_un is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes: Vec<u8> = match name.strip_prefix('@') {
        Some(abs) => std::iter::once(0).chain(abs.bytes()).collect(),
        None => name.as_bytes().to_vec(),
    };
    for (d, s) in addr.sun_path.iter_mut().zip(&bytes) {
        *d = *s as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len();
    (addr, len as libc::socklen_t)
}

/// "pid P uid U gid G groups A,B" of `fd`'s peer.
fn peercred(fd: i32) -> io::Result<String> {
    // SAFETY: a zeroed ucred is a valid value.
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: cred and len are valid for writes of their sizes.
    cvt(unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    })?;
    let mut groups = [0 as libc::gid_t; 64];
    let mut glen = std::mem::size_of_val(&groups) as libc::socklen_t;
    // SAFETY: groups and glen are valid for writes of their sizes.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERGROUPS,
            groups.as_mut_ptr().cast(),
            &mut glen,
        )
    };
    let groups = if r < 0 {
        format!("<{}>", io::Error::last_os_error())
    } else {
        groups[..glen as usize / std::mem::size_of::<libc::gid_t>()]
            .iter()
            .map(|g| g.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    Ok(format!(
        "pid {} uid {} gid {} groups {groups}",
        cred.pid, cred.uid, cred.gid
    ))
}

/// "TEXT pid P uid U gid G": one message of `fd` and its SCM_CREDENTIALS ("none" without).
fn recv_creds(fd: i32) -> io::Result<String> {
    let mut data = [0u8; 256];
    let mut control = [0u8; 128];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    // SAFETY: a zeroed msghdr is a valid value; its buffers are set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = control.len();
    // SAFETY: msg points at live buffers of the lengths it gives.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let text = String::from_utf8_lossy(&data[..n as usize]).into_owned();
    let mut creds = "none".to_string();
    // SAFETY: the control buffer was filled by recvmsg; CMSG_* walk it within its length.
    unsafe {
        let mut cm = libc::CMSG_FIRSTHDR(&msg);
        while !cm.is_null() {
            if (*cm).cmsg_level == libc::SOL_SOCKET && (*cm).cmsg_type == libc::SCM_CREDENTIALS {
                let c = std::ptr::read_unaligned(libc::CMSG_DATA(cm).cast::<libc::ucred>());
                creds = format!("pid {} uid {} gid {}", c.pid, c.uid, c.gid);
            }
            cm = libc::CMSG_NXTHDR(&msg, cm);
        }
    }
    Ok(format!("{text} {creds}"))
}

/// Sets this process's effective uid and gid (real and saved kept).
fn set_effective(uid: u32, gid: u32) -> io::Result<()> {
    let keep = u32::MAX;
    // SAFETY: plain integers.
    cvt(unsafe { libc::setresgid(keep, gid, keep) })?;
    // SAFETY: plain integers.
    cvt(unsafe { libc::setresuid(keep, uid, keep) }).map(drop)
}

/// How the child's connection is left at start (`WAIT`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// Accepted at start.
    No,
    /// Waiting in the accept queue, nothing sent.
    Silent,
    /// Waiting, "early" sent.
    Sent,
    /// Waiting, "bye" sent, the child gone.
    Gone,
}

/// `unix-peers NAME UID GID GROUPS LUID [WAIT]`
pub fn start(args: &[String], _dir: &Path) -> Result<Box<dyn Mode>, String> {
    let (args, wait, ty) = match args {
        [rest @ .., w] if args.len() == 6 => {
            let (w, ty) = match w.strip_suffix("-seqpacket") {
                Some(w) => (w, libc::SOCK_SEQPACKET),
                None => (w.as_str(), libc::SOCK_STREAM),
            };
            let wait = match w {
                "silent" => Wait::Silent,
                "sent" => Wait::Sent,
                "gone" => Wait::Gone,
                other => return Err(format!("unix-peers: WAIT {other}?")),
            };
            (rest, wait, ty)
        }
        _ => (args, Wait::No, libc::SOCK_STREAM),
    };
    let [name, uid, gid, groups, luid] = args else {
        return Err("unix-peers needs NAME UID GID GROUPS LUID [WAIT]".into());
    };
    let num = |s: &str| s.parse::<u32>().map_err(|e| format!("{s}: {e}"));
    let (uid, gid, luid) = (num(uid)?, num(gid)?, num(luid)?);
    let groups: Vec<libc::gid_t> = groups.split(',').map(num).collect::<Result<_, _>>()?;
    // SAFETY: a plain socket call.
    let l = cvt(unsafe { libc::socket(libc::AF_UNIX, ty, 0) }).map_err(failed("socket"))?;
    let l = sys::move_fd(l, LISTENER).map_err(failed("dup2"))?;
    let (addr, len) = address(name);
    // SAFETY: addr is a valid sockaddr_un of len bytes.
    cvt(unsafe { libc::bind(l, (&addr as *const libc::sockaddr_un).cast(), len) })
        .map_err(failed(name))?;
    if !name.starts_with('@') {
        // The child, of another uid, connects: the socket writable by it (the test makes its
        // directory searchable).
        let sock = CString::new(name.as_bytes()).map_err(|e| e.to_string())?;
        // SAFETY: a NUL-terminated path.
        cvt(unsafe { libc::chmod(sock.as_ptr(), 0o777) }).map_err(failed("chmod"))?;
    }
    set_effective(luid, luid).map_err(failed("seteuid"))?;
    // SAFETY: a plain listen.
    let listened = cvt(unsafe { libc::listen(l, 8) });
    set_effective(0, 0).map_err(failed("seteuid back"))?;
    listened.map_err(failed("listen"))?;
    // The child tells through it that it connected (and sent).
    let (ready_r, ready_w) = sys::pipe().map_err(failed("pipe"))?;
    // The workload is single-threaded here; the child only makes syscalls.
    let kid = sys::fork().map_err(failed("fork"))?;
    if kid == 0 {
        sys::close(ready_r);
        client(l, addr, len, uid, gid, &groups, (wait, ty), ready_w);
    }
    sys::close(ready_w);
    let mut byte = [0u8; 1];
    let got = sys::read(ready_r, &mut byte).map_err(failed("read the child's word"))?;
    sys::close(ready_r);
    if got != 1 {
        return Err("the child did not connect".into());
    }
    match wait {
        Wait::No => accept(l)?,
        Wait::Gone => {
            let mut status = 0;
            // SAFETY: waits for our own child (it exits once it sent).
            cvt(unsafe { libc::waitpid(kid, &mut status, 0) }).map_err(failed("waitpid"))?;
        }
        Wait::Silent | Wait::Sent => {}
    }
    Ok(Box::new(UnixPeers { kid }))
}

/// Accepts a connection of `listener` at fd 51.
fn accept(listener: i32) -> Result<(), String> {
    // SAFETY: a plain accept (blocks until a client connected).
    let c = cvt(unsafe { libc::accept(listener, std::ptr::null_mut(), std::ptr::null_mut()) })
        .map_err(failed("accept"))?;
    sys::move_fd(c, CONN).map_err(failed("dup2"))?;
    Ok(())
}

/// The child: takes its ids, connects with a socket of type `ty` (and sends as `wait` says),
/// says so on `ready`, then answers "cred" with its end's peer.
#[allow(clippy::too_many_arguments)]
fn client(
    listener: i32,
    addr: libc::sockaddr_un,
    len: libc::socklen_t,
    uid: u32,
    gid: u32,
    groups: &[libc::gid_t],
    (wait, ty): (Wait, i32),
    ready: i32,
) -> ! {
    sys::close(listener);
    let run = || -> io::Result<()> {
        // SAFETY: groups is a live slice of gids.
        cvt(unsafe { libc::setgroups(groups.len(), groups.as_ptr()) })?;
        // SAFETY: plain integers.
        cvt(unsafe { libc::setresgid(gid, gid, gid) })?;
        // SAFETY: plain integers.
        cvt(unsafe { libc::setresuid(uid, uid, uid) })?;
        // SAFETY: a plain socket call.
        let s = cvt(unsafe { libc::socket(libc::AF_UNIX, ty, 0) })?;
        // SAFETY: addr is a valid sockaddr_un of len bytes.
        cvt(unsafe { libc::connect(s, (&addr as *const libc::sockaddr_un).cast(), len) })?;
        match wait {
            Wait::Sent => super::unix::send(s, b"early")?,
            Wait::Gone => super::unix::send(s, b"bye")?,
            Wait::No | Wait::Silent => {}
        }
        sys::write_all(ready, b"c")?;
        sys::close(ready);
        if wait == Wait::Gone {
            return Ok(());
        }
        let mut buf = [0u8; 64];
        loop {
            // SAFETY: recv into our own buffer.
            let n = unsafe { libc::recv(s, buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            if n <= 0 {
                return Ok(());
            }
            if let Some(text) = buf[..n as usize].strip_prefix(b"bye:") {
                super::unix::send(s, text)?;
                return Ok(());
            }
            let reply = match buf[..n as usize].strip_prefix(b"say:") {
                Some(text) => text.to_vec(),
                None => peercred(s)
                    .unwrap_or_else(|e| format!("<{e}>"))
                    .into_bytes(),
            };
            super::unix::send(s, &reply)?;
        }
    };
    super::kids::exit_child("unix-peers client", run())
}

impl Mode for UnixPeers {
    fn command(&mut self, verb: &str, args: &[&str]) -> Result<String, String> {
        match (verb, args) {
            ("kid", []) => Ok(self.kid.to_string()),
            ("accept", []) => accept(LISTENER).map(|()| "ok".into()),
            ("peercred", []) => peercred(CONN).map_err(io_err),
            ("listener-peercred", []) => peercred(LISTENER).map_err(io_err),
            ("pair-as", [id]) => {
                let id: u32 = id.parse().map_err(|e| format!("{id}: {e}"))?;
                let mut fds = [0; 2];
                set_effective(id, id).map_err(failed("seteuid"))?;
                // SAFETY: fds is valid for two ints.
                let made = cvt(unsafe {
                    libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, fds.as_mut_ptr())
                });
                set_effective(0, 0).map_err(failed("seteuid back"))?;
                made.map_err(failed("socketpair"))?;
                for (fd, at) in fds.into_iter().zip(PAIR) {
                    sys::move_fd(fd, at).map_err(failed("dup2"))?;
                }
                Ok("ok".into())
            }
            ("pair-by-gone", [uid, gid]) => {
                let num = |s: &str| s.parse::<u32>().map_err(|e| format!("{s}: {e}"));
                let (uid, gid) = (num(uid)?, num(gid)?);
                let mut channel = [0; 2];
                // SAFETY: channel is valid for two ints.
                cvt(unsafe {
                    libc::socketpair(libc::AF_UNIX, libc::SOCK_DGRAM, 0, channel.as_mut_ptr())
                })
                .map_err(failed("socketpair"))?;
                let maker = sys::fork().map_err(failed("fork"))?;
                if maker == 0 {
                    let run = || -> io::Result<()> {
                        // SAFETY: an empty group list.
                        cvt(unsafe { libc::setgroups(0, std::ptr::null()) })?;
                        // SAFETY: plain integers.
                        cvt(unsafe { libc::setresgid(gid, gid, gid) })?;
                        // SAFETY: plain integers.
                        cvt(unsafe { libc::setresuid(uid, uid, uid) })?;
                        let mut ends = [0; 2];
                        // SAFETY: ends is valid for two ints.
                        cvt(unsafe {
                            libc::socketpair(
                                libc::AF_UNIX,
                                libc::SOCK_DGRAM | libc::SOCK_NONBLOCK,
                                0,
                                ends.as_mut_ptr(),
                            )
                        })?;
                        super::unix_msg::sendmsg(channel[1], b"ends", &ends, None)
                    };
                    super::kids::exit_child("unix-peers pair maker", run());
                }
                let got = super::unix_msg::recvmsg(channel[0]);
                let mut status = 0;
                // SAFETY: waits for our own child (it exits once the ends are sent).
                cvt(unsafe { libc::waitpid(maker, &mut status, 0) }).map_err(failed("waitpid"))?;
                channel.into_iter().for_each(sys::close);
                let (_, ends, _) = got.map_err(failed("recvmsg"))?;
                let [a, b] = ends[..] else {
                    return Err(format!("the maker passed {} fds", ends.len()));
                };
                for (fd, at) in [a, b].into_iter().zip(PAIR) {
                    sys::move_fd(fd, at).map_err(failed("dup2"))?;
                }
                Ok(maker.to_string())
            }
            ("pair-peercred", []) => {
                let ends = PAIR.map(|fd| peercred(fd).unwrap_or_else(|e| format!("<{e}>")));
                Ok(ends.join(" | "))
            }
            ("passcred", []) => {
                sys::setsockopt_value(CONN, libc::SOL_SOCKET, libc::SO_PASSCRED, &1i32)
                    .map_err(failed("SO_PASSCRED"))?;
                Ok("ok".into())
            }
            ("kid-queues", [text]) => {
                super::unix::send(CONN, format!("say:{text}").as_bytes()).map_err(io_err)?;
                let mut pfd = libc::pollfd {
                    fd: CONN,
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd; waits until the child's message is queued.
                cvt(unsafe { libc::poll(&mut pfd, 1, -1) }).map_err(failed("poll"))?;
                Ok("ok".into())
            }
            ("kid-queues-and-exits", [text]) => {
                super::unix::send(CONN, format!("bye:{text}").as_bytes()).map_err(io_err)?;
                let mut status = 0;
                // SAFETY: waits for our own child (it exits once its message is sent).
                cvt(unsafe { libc::waitpid(self.kid, &mut status, 0) })
                    .map_err(failed("waitpid"))?;
                Ok("ok".into())
            }
            ("recv-creds", []) => recv_creds(CONN).map_err(io_err),
            ("kid-peercred", []) => {
                super::unix::send(CONN, b"cred").map_err(io_err)?;
                let mut buf = [0u8; 256];
                loop {
                    // SAFETY: recv into our own buffer (blocking: the child answers).
                    let n = unsafe { libc::recv(CONN, buf.as_mut_ptr().cast(), buf.len(), 0) };
                    if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    if n <= 0 {
                        return Err(format!("the child answered nothing ({n})"));
                    }
                    return Ok(String::from_utf8_lossy(&buf[..n as usize]).into_owned());
                }
            }
            _ => unknown(verb),
        }
    }
}
