//! `unix-cycle`: two datagram sockets bound to abstract names, each sent in flight through
//! both (zdtm scm06), kept at fds 66 and 67. Once their process ends they are in a cycle no
//! fd reaches, and keep their names until the kernel's unix garbage collector frees them.
//!
//! ```text
//! unix-cycle TAG     a dgram socketpair at 66 and 67 bound to "\0cryo-cycle-TAG-0" and "-1",
//!                    each end sent on each end (four messages)
//!   reach -> <per name: ok, or the errno of a sendto to it>, space separated
//! ```

use std::io;
use std::mem::{size_of, zeroed};
use std::path::Path;

use super::sys::{self, cvt};
use super::unix_msg::sendmsg;
use super::{failed, unknown, Mode};

struct UnixCycle {
    names: [Vec<u8>; 2],
}

/// The sun_path of abstract name `name` (its leading NUL included) and its length.
fn abstract_addr(name: &[u8]) -> (libc::sockaddr_un, libc::socklen_t) {
    // SAFETY: sockaddr_un is plain data; all-zero is valid.
    let mut addr: libc::sockaddr_un = unsafe { zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, &s) in addr.sun_path.iter_mut().zip(name) {
        *d = s as libc::c_char;
    }
    let len = size_of::<libc::sa_family_t>() + name.len();
    (addr, len as libc::socklen_t)
}

fn setup(names: &[Vec<u8>; 2]) -> io::Result<()> {
    let mut sv = [0i32; 2];
    // SAFETY: socketpair fills our two-int array.
    cvt(unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_DGRAM, 0, sv.as_mut_ptr()) })?;
    for (fd, name) in sv.iter().zip(names) {
        let (addr, len) = abstract_addr(name);
        // SAFETY: addr is a sockaddr_un of `len` bytes.
        cvt(unsafe { libc::bind(*fd, (&addr as *const libc::sockaddr_un).cast(), len) })?;
    }
    for &from in &sv {
        for &passed in &sv {
            sendmsg(from, b"s", &[passed], None)?;
        }
    }
    sys::move_fd(sv[0], 66)?;
    sys::move_fd(sv[1], 67)?;
    Ok(())
}

/// `unix-cycle TAG`
pub fn start(args: &[String], _dir: &Path) -> Result<Box<dyn Mode>, String> {
    let [tag] = args else {
        return Err("usage: unix-cycle TAG".into());
    };
    let names = [0, 1].map(|i| format!("\0cryo-cycle-{tag}-{i}").into_bytes());
    setup(&names).map_err(failed("unix-cycle"))?;
    Ok(Box::new(UnixCycle { names }))
}

/// A datagram sent to abstract name `name` from a fresh socket: "ok" or the errno.
fn reach(name: &[u8]) -> String {
    let (addr, len) = abstract_addr(name);
    // SAFETY: socket takes no pointers.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return io::Error::last_os_error().to_string();
    }
    // SAFETY: the buffer and addr are live for the call, of the lengths given.
    let sent = unsafe {
        libc::sendto(
            fd,
            b"r".as_ptr().cast(),
            1,
            0,
            (&addr as *const libc::sockaddr_un).cast(),
            len,
        )
    };
    let out = if sent == 1 {
        "ok".to_string()
    } else {
        io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(0)
            .to_string()
    };
    sys::close(fd);
    out
}

impl Mode for UnixCycle {
    fn command(&mut self, verb: &str, args: &[&str]) -> Result<String, String> {
        match (verb, args) {
            ("reach", []) => Ok(self
                .names
                .iter()
                .map(|n| reach(n))
                .collect::<Vec<_>>()
                .join(" ")),
            _ => unknown(verb),
        }
    }
}
