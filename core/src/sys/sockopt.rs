//! Socket calls of the packet and netlink sockets: integer and byte options at any level
//! (cryo-tcp-repair's socket-option backend, in this crate's io::Result), a new socket of any
//! family, bind of a packet socket to an interface.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use cryo_tcp_repair::sockopt;

use super::{check, owned_fd};

/// getsockopt of an integer option.
pub(crate) fn get_int(fd: BorrowedFd<'_>, level: i32, name: i32) -> io::Result<i32> {
    Ok(sockopt::get_int(fd, level, name)?)
}

/// setsockopt of an integer option.
pub(crate) fn set_int(fd: BorrowedFd<'_>, level: i32, name: i32, value: i32) -> io::Result<()> {
    Ok(sockopt::set_int(fd, level, name, value)?)
}

/// setsockopt with `value` as the option's bytes.
pub(crate) fn set_bytes(fd: BorrowedFd<'_>, level: i32, name: i32, value: &[u8]) -> io::Result<()> {
    Ok(sockopt::set_bytes(fd, level, name, value)?)
}

/// getsockopt of an option of up to `max` bytes: the bytes the kernel wrote.
pub(crate) fn get_bytes(
    fd: BorrowedFd<'_>,
    level: i32,
    name: i32,
    max: usize,
) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; max];
    let len = sockopt::get_bytes(fd, level, name, &mut buf)?;
    // NETLINK_LIST_MEMBERSHIPS reports the length it needs, which may exceed `max`.
    buf.truncate(len.min(max));
    Ok(buf)
}

/// A new close-on-exec socket.
pub(crate) fn socket(family: i32, ty: i32, protocol: i32) -> io::Result<OwnedFd> {
    // SAFETY: socket takes no pointers.
    let ret = unsafe { libc::socket(family, ty | libc::SOCK_CLOEXEC, protocol) };
    owned_fd(ret.into())
}

/// The network namespace socket `fd` was made in, as an nsfs fd (SIOCGSKNS, linux/sockios.h):
/// the namespace may be one no process is in, or another than its holder's.
pub(crate) fn netns_of(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    const SIOCGSKNS: libc::c_ulong = 0x894C;
    // SAFETY: SIOCGSKNS takes no argument and answers a new fd, owned by owned_fd.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), SIOCGSKNS) };
    owned_fd(ret.into())
}

/// The link-layer address of interface `ifindex` and protocol `protocol` (host order).
fn sockaddr_ll(ifindex: i32, protocol: u16) -> libc::sockaddr_ll {
    // SAFETY: sockaddr_ll is plain data; all zeroes is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = protocol.to_be();
    sll.sll_ifindex = ifindex;
    sll
}

/// Binds packet socket `fd` to interface `ifindex` (0: every one) and protocol `protocol`
/// (host order; 0 keeps the socket's).
pub(crate) fn bind_packet(fd: BorrowedFd<'_>, ifindex: i32, protocol: u16) -> io::Result<()> {
    let sll = sockaddr_ll(ifindex, protocol);
    // SAFETY: `sll` is a live sockaddr_ll of the length given.
    let ret = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    check(ret.into()).map(drop)
}

/// The device a SOCK_PACKET socket `fd` is bound to, by name ("" when not bound): getsockname
/// gives a struct sockaddr whose sa_data holds it.
pub(crate) fn packet_device(fd: BorrowedFd<'_>) -> io::Result<String> {
    // SAFETY: sockaddr is plain data; all zeroes is a valid value.
    let mut sa: libc::sockaddr = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr>() as libc::socklen_t;
    // SAFETY: getsockname writes at most `len` bytes into `sa`, a live sockaddr of that size.
    let ret = unsafe { libc::getsockname(fd.as_raw_fd(), &mut sa, &mut len) };
    check(ret.into())?;
    let name: Vec<u8> = sa
        .sa_data
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    Ok(String::from_utf8_lossy(&name).into_owned())
}

/// Binds SOCK_PACKET socket `fd` to device `name` (at most 13 bytes).
pub(crate) fn bind_packet_device(fd: BorrowedFd<'_>, name: &str) -> io::Result<()> {
    // SAFETY: sockaddr is plain data; all zeroes is a valid value.
    let mut sa: libc::sockaddr = unsafe { std::mem::zeroed() };
    sa.sa_family = libc::AF_PACKET as u16;
    if name.len() >= sa.sa_data.len() {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    for (d, s) in sa.sa_data.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    // SAFETY: `sa` is a live sockaddr of the length given.
    let ret = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            &sa,
            std::mem::size_of::<libc::sockaddr>() as libc::socklen_t,
        )
    };
    check(ret.into()).map(drop)
}

/// Sends `frame` (its link-layer header included) from packet socket `fd` out of interface
/// `ifindex` with protocol `protocol` (host order).
pub(crate) fn send_packet(
    fd: BorrowedFd<'_>,
    ifindex: i32,
    protocol: u16,
    frame: &[u8],
) -> io::Result<()> {
    let sll = sockaddr_ll(ifindex, protocol);
    // SAFETY: `frame` is a live buffer of the length given; `sll` a live sockaddr_ll.
    let ret = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    check(ret as libc::c_long).map(drop)
}

/// Reads and drops every datagram waiting on `fd` (non-blocking): how many there were.
pub(crate) fn drain(fd: BorrowedFd<'_>) -> io::Result<usize> {
    let mut n = 0;
    loop {
        // SAFETY: a zero-length read with MSG_TRUNC discards the datagram; no buffer is
        // written.
        let ret = unsafe {
            libc::recv(
                fd.as_raw_fd(),
                std::ptr::null_mut(),
                0,
                libc::MSG_DONTWAIT | libc::MSG_TRUNC,
            )
        };
        match check(ret as libc::c_long) {
            Ok(_) => n += 1,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(n),
            Err(e) => return Err(e),
        }
    }
}
