//! Fresh network namespaces, for tests and for restoring into a namespace of its own.
//!
//! A network namespace belongs to a thread: [`enter_new`] moves only the calling thread, and
//! [`run_in_new`] runs a closure on a thread of its own so the caller stays where it was.

use nix::errno::Errno;
use nix::net::if_::if_nametoindex;
use nix::sched::{unshare, CloneFlags};
use nix::sys::socket::SockProtocol;

use crate::error::NetnsError;
use crate::netlink::{NlError, NlSocket};

/// Moves the calling thread into a new, empty network namespace and brings its loopback up.
pub fn enter_new() -> Result<(), NetnsError> {
    unshare(CloneFlags::CLONE_NEWNET).map_err(NetnsError::Unshare)?;
    set_up("lo")
}

/// Runs `f` on a new thread inside a new network namespace with loopback up, and returns its
/// result. A panic in `f` is resumed in the caller.
pub fn run_in_new<T: Send>(f: impl FnOnce() -> T + Send) -> Result<T, NetnsError> {
    std::thread::scope(|s| {
        let handle = std::thread::Builder::new()
            .name("cryo-netns".into())
            .spawn_scoped(s, || -> Result<T, NetnsError> {
                enter_new()?;
                Ok(f())
            })
            .map_err(NetnsError::Spawn)?;
        match handle.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Brings link `name` up with an RTM_NEWLINK request (no `ip` binary needed).
pub fn set_up(name: &str) -> Result<(), NetnsError> {
    let index = if_nametoindex(name).map_err(|errno| NetnsError::LinkUp {
        link: name.to_string(),
        step: "find link",
        errno,
    })?;
    let err = |e: NlError| match e {
        NlError::Socket(step, errno) => NetnsError::LinkUp {
            link: name.to_string(),
            step,
            errno,
        },
        NlError::Kernel { errno, .. } => NetnsError::LinkUp {
            link: name.to_string(),
            step: "RTM_NEWLINK",
            errno,
        },
        NlError::Protocol(step, _) => NetnsError::LinkUp {
            link: name.to_string(),
            step,
            errno: Errno::EPROTO,
        },
    };
    let sock = NlSocket::open(SockProtocol::NetlinkRoute).map_err(err)?;
    crate::state::set_link(&sock, index as i32, true, None).map_err(err)
}
