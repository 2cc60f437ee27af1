//! Raw system calls: the only module with `unsafe`.
//!
//! Everything here takes `BorrowedFd` and returns `OwnedFd` or plain values;
//! the rest of the crate never touches raw pointers. Errors are plain
//! `io::Error`s: callers add the step and the fd.

use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// Offset of `sun_path` in `sockaddr_un`.
pub(crate) const SUN_PATH_OFFSET: usize = size_of::<libc::sa_family_t>();
/// Room for `sun_path`.
pub(crate) const SUN_PATH_MAX: usize = 108;
/// Control buffer large enough for SCM_MAX_FD (253) descriptors plus
/// credentials (and a pidfd, should the socket pass one).
const CMSG_BUF: usize = 2048;
/// `SCM_PIDFD` (include/uapi/asm-generic/socket.h), not in libc for Linux.
const SCM_PIDFD: i32 = 0x4c;

/// Credentials as carried by SCM_CREDENTIALS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RawCreds {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
}

/// Result of one `recvmsg`.
#[derive(Debug)]
pub(crate) struct Received {
    /// The return value of recvmsg (with MSG_TRUNC: the full datagram length).
    pub len: usize,
    /// `msg_flags` (MSG_TRUNC, MSG_CTRUNC).
    pub flags: i32,
    /// SCM_RIGHTS descriptors installed in this process.
    pub fds: Vec<OwnedFd>,
    /// SCM_CREDENTIALS, if any.
    pub creds: Option<RawCreds>,
    /// The sender's address bytes (`sun_path` part, `addrlen - 2` bytes),
    /// when asked for and the sender is bound.
    pub addr: Option<Vec<u8>>,
}

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// The one place that turns a fresh raw descriptor into an `OwnedFd`.
fn owned(fd: RawFd) -> OwnedFd {
    // SAFETY: callers pass a descriptor the kernel just returned to this
    // process (socket, socketpair, SCM_RIGHTS), owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// `getsockopt` of an int option.
pub(crate) fn get_int(fd: BorrowedFd<'_>, level: i32, opt: i32) -> io::Result<i32> {
    let mut val: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: val and len are valid for writes of the sizes given.
    cvt(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            (&mut val as *mut libc::c_int).cast(),
            &mut len,
        )
    })?;
    Ok(val)
}

/// SO_PEERCRED: (pid, uid, gid) of the socket's peer as the caller's namespaces name them.
pub(crate) fn peer_cred(fd: BorrowedFd<'_>) -> io::Result<RawCreds> {
    // SAFETY: a zeroed ucred is a valid value of the plain C struct.
    let mut cred: libc::ucred = unsafe { zeroed() };
    let mut len = size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: cred and len are valid for writes of the sizes given.
    cvt(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    })?;
    Ok(RawCreds {
        pid: cred.pid,
        uid: cred.uid,
        gid: cred.gid,
    })
}

/// SO_PEERGROUPS: the supplementary groups of the socket's peer (none without a peer).
pub(crate) fn peer_groups(fd: BorrowedFd<'_>) -> io::Result<Vec<u32>> {
    // NGROUPS_MAX is 65536; start small and grow to what the kernel says it needs.
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut len = (groups.len() * size_of::<libc::gid_t>()) as libc::socklen_t;
        // SAFETY: groups is valid for writes of len bytes, len for a write of its size.
        let r = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        if r == 0 {
            groups.truncate(len as usize / size_of::<libc::gid_t>());
            return Ok(groups);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            // Too small: len says how much it needs.
            Some(libc::ERANGE) if (len as usize) > groups.len() * size_of::<libc::gid_t>() => {
                groups.resize(len as usize / size_of::<libc::gid_t>(), 0);
            }
            // No peer credentials at all (a socket never connected).
            Some(libc::ENODATA) => return Ok(Vec::new()),
            _ => return Err(e),
        }
    }
}

/// `setsockopt` of an int option.
pub(crate) fn set_int(fd: BorrowedFd<'_>, level: i32, opt: i32, val: i32) -> io::Result<()> {
    // SAFETY: &val is valid for reads of size_of::<c_int>() bytes.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            (&val as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

/// `ioctl(SIOCINQ)`: bytes queued for reading (stream: whole queue; dgram:
/// the next datagram).
pub(crate) fn inq(fd: BorrowedFd<'_>) -> io::Result<i32> {
    let mut val: libc::c_int = 0;
    // SAFETY: FIONREAD (== SIOCINQ) writes one c_int to the pointer.
    cvt(unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut val) })?;
    Ok(val)
}

/// `recvmsg` into `buf`, collecting SCM_RIGHTS (installed close-on-exec) and
/// SCM_CREDENTIALS, and the sender address when `want_addr`.
pub(crate) fn recvmsg(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    flags: i32,
    want_addr: bool,
) -> io::Result<Received> {
    // u64 elements keep the control buffer aligned for cmsghdr.
    let mut cbuf = [0u64; CMSG_BUF / 8];
    // SAFETY: sockaddr_un is plain data; all-zero is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { zeroed() };
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain data; all-zero is a valid value.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    if want_addr {
        msg.msg_name = (&mut addr as *mut libc::sockaddr_un).cast();
        msg.msg_namelen = size_of::<libc::sockaddr_un>() as libc::socklen_t;
    }
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = CMSG_BUF;
    // SAFETY: msg points to live buffers (iov -> buf, name -> addr, control
    // -> cbuf) of the lengths it declares, all outliving the call.
    let ret = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut msg, flags | libc::MSG_CMSG_CLOEXEC) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Received {
        len: ret as usize,
        flags: msg.msg_flags,
        fds: Vec::new(),
        creds: None,
        addr: None,
    };
    if want_addr && msg.msg_namelen as usize > SUN_PATH_OFFSET {
        let n = (msg.msg_namelen as usize - SUN_PATH_OFFSET).min(SUN_PATH_MAX);
        out.addr = Some(addr.sun_path[..n].iter().map(|&c| c as u8).collect());
    }
    // SAFETY: msg was filled by the kernel; CMSG_FIRSTHDR/NXTHDR walk the
    // control buffer within msg_controllen, and CMSG_DATA points inside
    // each header's cmsg_len. Data is read unaligned.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            let hdr = &*cmsg;
            let data = libc::CMSG_DATA(cmsg);
            let data_len = hdr.cmsg_len - libc::CMSG_LEN(0) as usize;
            if hdr.cmsg_level == libc::SOL_SOCKET && hdr.cmsg_type == libc::SCM_RIGHTS {
                let n = data_len / size_of::<RawFd>();
                for i in 0..n {
                    let raw = std::ptr::read_unaligned(data.cast::<RawFd>().add(i));
                    out.fds.push(owned(raw));
                }
            } else if hdr.cmsg_level == libc::SOL_SOCKET
                && hdr.cmsg_type == libc::SCM_CREDENTIALS
                && data_len >= size_of::<libc::ucred>()
            {
                let c = std::ptr::read_unaligned(data.cast::<libc::ucred>());
                out.creds = Some(RawCreds {
                    pid: c.pid,
                    uid: c.uid,
                    gid: c.gid,
                });
            } else if hdr.cmsg_level == libc::SOL_SOCKET && hdr.cmsg_type == SCM_PIDFD {
                // SO_PASSPIDFD on the target: the kernel installed a pidfd
                // for us; close it, it is not part of the queue.
                if data_len >= size_of::<RawFd>() {
                    drop(owned(std::ptr::read_unaligned(data.cast::<RawFd>())));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok(out)
}

/// Builds a `sockaddr_un` from raw `sun_path` bytes (a path without its NUL,
/// or an abstract name starting with a NUL byte).
pub(crate) fn sockaddr(sun_path: &[u8]) -> io::Result<(libc::sockaddr_un, libc::socklen_t)> {
    if sun_path.len() > SUN_PATH_MAX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "unix socket address longer than sun_path",
        ));
    }
    // SAFETY: sockaddr_un is plain data; all-zero is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (dst, &src) in addr.sun_path.iter_mut().zip(sun_path) {
        *dst = src as libc::c_char;
    }
    let mut len = SUN_PATH_OFFSET + sun_path.len();
    // A path gets its terminating NUL when there is room; abstract names
    // are exactly as long as given.
    if sun_path.first() != Some(&0) && sun_path.len() < SUN_PATH_MAX {
        len += 1;
    }
    Ok((addr, len as libc::socklen_t))
}

/// `sendmsg` of one buffer with optional SCM_RIGHTS, SCM_CREDENTIALS and
/// destination address. Returns the number of bytes sent.
pub(crate) fn sendmsg(
    fd: BorrowedFd<'_>,
    data: &[u8],
    fds: &[BorrowedFd<'_>],
    creds: Option<RawCreds>,
    dest: Option<&[u8]>,
    flags: i32,
) -> io::Result<usize> {
    let mut cbuf = [0u64; CMSG_BUF / 8];
    let fd_bytes = std::mem::size_of_val(fds);
    // SAFETY: CMSG_SPACE is pure arithmetic.
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
    if need > CMSG_BUF {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "too many descriptors for one message",
        ));
    }
    let dest = dest.map(sockaddr).transpose()?;
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: msghdr is plain data; all-zero is a valid value.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    if let Some((addr, len)) = dest.as_ref() {
        msg.msg_name = (addr as *const libc::sockaddr_un) as *mut libc::c_void;
        msg.msg_namelen = *len;
    }
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if need > 0 {
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = need;
    }
    // SAFETY: the control buffer holds `need` bytes, computed with
    // CMSG_SPACE for exactly the headers written below; CMSG_FIRSTHDR/NXTHDR
    // stay within msg_controllen; data is written unaligned.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        if !fds.is_empty() {
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(fd_bytes as u32) as usize;
            let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
            for (i, f) in fds.iter().enumerate() {
                std::ptr::write_unaligned(data.add(i), f.as_raw_fd());
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
        if let Some(c) = creds {
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_CREDENTIALS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<libc::ucred>() as u32) as usize;
            let uc = libc::ucred {
                pid: c.pid,
                uid: c.uid,
                gid: c.gid,
            };
            std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::ucred>(), uc);
        }
    }
    // SAFETY: msg points to live buffers (iov -> data, name -> dest,
    // control -> cbuf) of the lengths it declares; the kernel only reads.
    let ret = unsafe { libc::sendmsg(fd.as_raw_fd(), &msg, flags | libc::MSG_NOSIGNAL) };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

/// `socketpair(AF_UNIX, ty | SOCK_CLOEXEC)`.
pub(crate) fn socketpair(ty: i32) -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: fds is valid for writes of two ints.
    cvt(unsafe { libc::socketpair(libc::AF_UNIX, ty | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) })?;
    Ok((owned(fds[0]), owned(fds[1])))
}

/// `socket(AF_UNIX, ty | SOCK_CLOEXEC)`.
pub(crate) fn socket(ty: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall without pointers.
    let fd = cvt(unsafe { libc::socket(libc::AF_UNIX, ty | libc::SOCK_CLOEXEC, 0) })?;
    Ok(owned(fd))
}

/// `bind` to raw `sun_path` bytes.
pub(crate) fn bind(fd: BorrowedFd<'_>, sun_path: &[u8]) -> io::Result<()> {
    let (addr, len) = sockaddr(sun_path)?;
    // SAFETY: addr is a valid sockaddr_un of at least `len` bytes.
    cvt(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast(),
            len,
        )
    })?;
    Ok(())
}

/// `connect` to raw `sun_path` bytes.
pub(crate) fn connect(fd: BorrowedFd<'_>, sun_path: &[u8]) -> io::Result<()> {
    let (addr, len) = sockaddr(sun_path)?;
    // SAFETY: addr is a valid sockaddr_un of at least `len` bytes.
    cvt(unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast(),
            len,
        )
    })?;
    Ok(())
}

/// `listen`.
pub(crate) fn listen(fd: BorrowedFd<'_>, backlog: i32) -> io::Result<()> {
    // SAFETY: plain syscall without pointers.
    cvt(unsafe { libc::listen(fd.as_raw_fd(), backlog) })?;
    Ok(())
}

/// `shutdown`.
pub(crate) fn shutdown(fd: BorrowedFd<'_>, how: i32) -> io::Result<()> {
    // SAFETY: plain syscall without pointers.
    cvt(unsafe { libc::shutdown(fd.as_raw_fd(), how) })?;
    Ok(())
}

/// `getsockname`: the raw `sun_path` bytes (empty when unbound).
pub(crate) fn getsockname(fd: BorrowedFd<'_>) -> io::Result<Vec<u8>> {
    // SAFETY: sockaddr_un is plain data; all-zero is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { zeroed() };
    let mut len = size_of::<libc::sockaddr_un>() as libc::socklen_t;
    // SAFETY: addr and len are valid for writes of the sizes given.
    cvt(unsafe {
        libc::getsockname(
            fd.as_raw_fd(),
            (&mut addr as *mut libc::sockaddr_un).cast(),
            &mut len,
        )
    })?;
    let n = (len as usize)
        .saturating_sub(SUN_PATH_OFFSET)
        .min(SUN_PATH_MAX);
    Ok(addr.sun_path[..n].iter().map(|&c| c as u8).collect())
}

/// `accept4(SOCK_CLOEXEC)`.
pub(crate) fn accept(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    // SAFETY: null address pointers are allowed by accept4.
    let fd = cvt(unsafe {
        libc::accept4(
            fd.as_raw_fd(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_CLOEXEC,
        )
    })?;
    Ok(owned(fd))
}

/// Whether `poll` reports POLLERR (a pending `sk_err`) without consuming it.
pub(crate) fn poll_err(fd: BorrowedFd<'_>) -> io::Result<bool> {
    Ok(poll_now(fd, 0)? & libc::POLLERR != 0)
}

/// Whether `poll` reports POLLPRI: a stream socket's MSG_OOB byte not read yet.
pub(crate) fn poll_pri(fd: BorrowedFd<'_>) -> io::Result<bool> {
    Ok(poll_now(fd, libc::POLLPRI)? & libc::POLLPRI != 0)
}

/// Whether `poll` reports POLLIN (for a listener: a connection to accept).
pub(crate) fn poll_in(fd: BorrowedFd<'_>) -> io::Result<bool> {
    Ok(poll_now(fd, libc::POLLIN)? & libc::POLLIN != 0)
}

/// Whether `poll` reports the read side shut (POLLRDHUP) and nothing to read but EOF.
pub(crate) fn read_hup(fd: BorrowedFd<'_>) -> io::Result<bool> {
    Ok(poll_now(fd, libc::POLLRDHUP)? & libc::POLLRDHUP != 0)
}

/// `poll` of one fd for `events`, without waiting: its `revents`.
fn poll_now(fd: BorrowedFd<'_>, events: libc::c_short) -> io::Result<libc::c_short> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events,
        revents: 0,
    };
    // SAFETY: pfd is one valid pollfd; a zero timeout never blocks.
    cvt(unsafe { libc::poll(&mut pfd, 1, 0) })?;
    Ok(pfd.revents)
}

/// `SIOCUNIXFILE` (include/uapi/linux/un.h: `SIOCPROTOPRIVATE + 0`), not in libc.
const SIOCUNIXFILE: libc::c_ulong = 0x89E0;

/// The file a path-bound unix socket was bound to, opened `O_PATH` (ioctl `SIOCUNIXFILE`,
/// added to Linux for CRIU; CAP_NET_ADMIN): it may have been unlinked or moved since. ENOENT for a socket
/// without a file.
pub(crate) fn socket_file(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    // SAFETY: SIOCUNIXFILE takes no argument and returns a new descriptor.
    let file = cvt(unsafe { libc::ioctl(fd.as_raw_fd(), SIOCUNIXFILE as _) })?;
    Ok(owned(file))
}

/// `statx(dir, name, AT_SYMLINK_NOFOLLOW)`'s `stx_attributes` (STATX_ATTR_IMMUTABLE,
/// STATX_ATTR_APPEND, STATX_ATTR_MOUNT_ROOT...), masked by what the filesystem reports.
pub(crate) fn statx_attributes(dir: BorrowedFd<'_>, name: &std::ffi::CStr) -> io::Result<u64> {
    // SAFETY: statx is plain data; all zeroes is a valid value.
    let mut stx: libc::statx = unsafe { zeroed() };
    // SAFETY: name is NUL-terminated; stx is valid for writes of its size.
    cvt(unsafe {
        libc::statx(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW | libc::AT_EMPTY_PATH,
            0,
            &mut stx,
        )
    })?;
    Ok(stx.stx_attributes & stx.stx_attributes_mask)
}
