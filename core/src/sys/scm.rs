//! Descriptors passed over a unix socket (SCM_RIGHTS): how a restored process hands its TCP
//! connections to the restore guardian, one at a time, each in a datagram of its own.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

use super::owned_fd;

/// Sends `fd` over the unix datagram socket at fd number `sock` (a slot the caller holds open).
pub(crate) fn send_fd(sock: RawFd, fd: BorrowedFd<'_>) -> io::Result<()> {
    send_with_fd(sock, &[0], fd)
}

/// Sends `data` with `fd` in one message over the unix datagram or seqpacket socket at fd
/// number `sock`.
pub(crate) fn send_with_fd(sock: RawFd, data: &[u8], fd: BorrowedFd<'_>) -> io::Result<()> {
    let raw = [fd.as_raw_fd()];
    let cmsg = [ControlMessage::ScmRights(&raw)];
    let iov = [io::IoSlice::new(data)];
    loop {
        match sendmsg::<()>(sock, &iov, &cmsg, MsgFlags::empty(), None) {
            Err(nix::errno::Errno::EINTR) => continue,
            r => return r.map(drop).map_err(io::Error::from),
        }
    }
}

/// One message of unix datagram or seqpacket socket `sock` into `buf`, waiting for it, with
/// the fd it carries if any: (its length, the fd). A length of 0 without an fd: the peer is
/// gone, or the socket was shut down.
pub(crate) fn recv_with_fd(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
) -> io::Result<(usize, Option<OwnedFd>)> {
    loop {
        let mut iov = [io::IoSliceMut::new(buf)];
        let mut space = nix::cmsg_space!([RawFd; 1]);
        let msg = match recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(msg) => msg,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        };
        let mut fd = None;
        for cmsg in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(fds) = cmsg {
                for raw in fds {
                    // A second fd is closed: the protocol passes one.
                    let owned = owned_fd(libc::c_long::from(raw))?;
                    fd.get_or_insert(owned);
                }
            }
        }
        return Ok((msg.bytes, fd));
    }
}

/// Every fd waiting on unix socket `sock`, without blocking.
pub(crate) fn recv_fds(sock: BorrowedFd<'_>) -> io::Result<Vec<OwnedFd>> {
    let mut out = Vec::new();
    loop {
        let mut byte = [0u8; 1];
        let mut iov = [io::IoSliceMut::new(&mut byte)];
        let mut space = nix::cmsg_space!([RawFd; 8]);
        let msg = match recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(msg) => msg,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(nix::errno::Errno::EAGAIN) => return Ok(out),
            Err(e) => return Err(e.into()),
        };
        if msg.bytes == 0 && msg.cmsgs().map_or(true, |mut c| c.next().is_none()) {
            return Ok(out);
        }
        for cmsg in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(fds) = cmsg {
                for fd in fds {
                    out.push(owned_fd(libc::c_long::from(fd))?);
                }
            }
        }
    }
}
