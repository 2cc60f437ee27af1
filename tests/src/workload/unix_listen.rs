//! `unix-listen NAME`: a stream listener at fd 50 on a path or an abstract name, with a
//! client of its own (accepted or still waiting in the backlog).
//!
//! ```text
//! unix-listen NAME           a stream listener at fd 50 on NAME (a path, or @name: abstract)
//!                            accept -> got <first message of the accepted connection>
//!                            connect MSG -> ok (a client of its own listener at fd 52, MSG sent,
//!                            not accepted)   accept-keep -> got <first message> (kept at fd 53)
//!                            say client|conn MSG -> ok   hear client|conn -> <msgs> | empty
//!                            close-client -> ok (fd 52 closed: a waiting connection's client
//!                            gone)   fork-holder -> <pid> (a paused child holding the listener
//!                            and the client too)   accept-drain -> got <all it reads>|eof (until end of file)
//! ```

use std::io::{self, Read};
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener};
use std::path::Path;

use super::sys::{self, cvt};
use super::unix::{self, UNIX_A};
use super::{failed, io_err, unknown, Mode};

/// The client of its own listener.
const CLIENT: i32 = 52;
/// The connection accepted and kept.
const CONN: i32 = 53;

struct UnixListen(UnixListener);

/// `unix-listen NAME`
pub fn start(args: &[String], _dir: &Path) -> Result<Box<dyn Mode>, String> {
    let name = args.first().ok_or("unix-listen mode needs a NAME")?;
    let l = match name.strip_prefix('@') {
        Some(abs) => {
            let addr = SocketAddr::from_abstract_name(abs).map_err(failed(name))?;
            UnixListener::bind_addr(&addr)
        }
        None => UnixListener::bind(name),
    }
    .map_err(failed(name))?;
    let fd = sys::move_fd(l.into_raw_fd(), UNIX_A).map_err(failed("dup2"))?;
    // SAFETY: fd is the listener just moved there, owned by nobody else.
    Ok(Box::new(UnixListen(unsafe {
        UnixListener::from_raw_fd(fd)
    })))
}

impl Mode for UnixListen {
    fn command(&mut self, verb: &str, args: &[&str]) -> Result<String, String> {
        let listener = self.0.as_raw_fd();
        let end = |w: &str| if w == "client" { CLIENT } else { CONN };
        match (verb, args) {
            ("accept", []) => {
                let (mut c, _) = self.0.accept().map_err(io_err)?;
                let mut buf = [0u8; 256];
                let n = c.read(&mut buf).map_err(io_err)?;
                Ok(format!("got {}", String::from_utf8_lossy(&buf[..n])))
            }
            ("connect", [msg]) => connect_self(listener, msg.as_bytes())
                .map(|()| "ok".into())
                .map_err(io_err),
            ("accept-keep", []) => accept_keep(listener).map_err(io_err),
            ("fork-holder", []) => sys::fork_paused().map(|p| p.to_string()).map_err(io_err),
            ("close-client", []) => {
                sys::close(CLIENT);
                Ok("ok".into())
            }
            ("accept-drain", []) => {
                let (mut c, _) = self.0.accept().map_err(io_err)?;
                let mut all = Vec::new();
                c.read_to_end(&mut all).map_err(io_err)?;
                Ok(format!("got {}|eof", String::from_utf8_lossy(&all)))
            }
            ("say", [w, msg]) => unix::send(end(w), msg.as_bytes())
                .map(|()| "ok".into())
                .map_err(io_err),
            ("hear", [w]) => unix::recv_all(end(w)).map_err(io_err),
            _ => unknown(verb),
        }
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
    unix::send(c, msg)
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
