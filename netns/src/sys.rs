//! The crate's only raw system calls.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use nix::errno::Errno;

/// `NETLINK_CAP_ACK`: error replies carry only the header of the refused message.
pub(crate) const NETLINK_CAP_ACK: libc::c_int = 10;
/// `NETLINK_EXT_ACK`: error replies carry the kernel's explanation.
pub(crate) const NETLINK_EXT_ACK: libc::c_int = 11;

/// Turns a boolean `SOL_NETLINK` socket option on (nix has no wrapper for these).
pub(crate) fn netlink_flag_on(fd: BorrowedFd<'_>, opt: libc::c_int) -> Result<(), Errno> {
    let one: libc::c_int = 1;
    // SAFETY: `fd` is an open socket for the duration of the borrow; the option value points to
    // a live c_int and the length passed is exactly its size; the kernel only reads it.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_NETLINK,
            opt,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    Errno::result(r).map(drop)
}

/// A raw netlink socket of `protocol` (close-on-exec).
pub(crate) fn netlink_socket(protocol: libc::c_int) -> Result<OwnedFd, Errno> {
    // SAFETY: socket() takes plain integers and returns a new fd or -1.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            protocol,
        )
    };
    let fd = Errno::result(fd)?;
    // SAFETY: `fd` was just returned by socket() and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A raw IP socket of `domain` (`AF_INET` or `AF_INET6`), close-on-exec: the x_tables socket
/// options (IPT_SO_*, IP6T_SO_*) are read and set on one.
pub(crate) fn raw_ip_socket(domain: libc::c_int) -> Result<OwnedFd, Errno> {
    // SAFETY: socket() takes plain integers and returns a new fd or -1.
    let fd = unsafe {
        libc::socket(
            domain,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::IPPROTO_RAW,
        )
    };
    let fd = Errno::result(fd)?;
    // SAFETY: `fd` was just returned by socket() and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// getsockopt() with a buffer that carries the request in (x_tables reads the table's name
/// from it) and the answer out; returns the length the kernel reported.
pub(crate) fn getsockopt_inout(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    opt: libc::c_int,
    buf: &mut [u8],
) -> Result<usize, Errno> {
    let mut len = libc::socklen_t::try_from(buf.len()).map_err(|_| Errno::EINVAL)?;
    // SAFETY: `fd` is an open socket for the duration of the borrow; the kernel reads and
    // writes at most `len` bytes of `buf`, which is live, exclusively borrowed and exactly
    // `len` long; `len` points to a live socklen_t.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            buf.as_mut_ptr().cast(),
            &mut len,
        )
    };
    Errno::result(r)?;
    Ok(len as usize)
}

/// setsockopt() with a byte buffer the kernel only reads.
pub(crate) fn setsockopt_bytes(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    opt: libc::c_int,
    buf: &[u8],
) -> Result<(), Errno> {
    let len = libc::socklen_t::try_from(buf.len()).map_err(|_| Errno::EINVAL)?;
    // SAFETY: `fd` is an open socket for the duration of the borrow; the kernel reads at most
    // `len` bytes of `buf`, which is live and exactly `len` long.
    let r = unsafe { libc::setsockopt(fd.as_raw_fd(), level, opt, buf.as_ptr().cast(), len) };
    Errno::result(r).map(drop)
}

/// Size of `struct ipt_replace` / `struct ip6t_replace` (the same layout): the header before
/// the entries.
pub(crate) const XT_REPLACE_HEADER: usize = 96;
/// Offset of `num_counters` (u32) in `struct ipt_replace` / `struct ip6t_replace`.
pub(crate) const XT_REPLACE_NUM_COUNTERS_AT: usize = 84;
/// Offset of `counters` (a `struct xt_counters *`, 8-aligned on 64-bit) in the same.
const XT_REPLACE_COUNTERS_AT: usize = 88;
/// Size of `struct xt_counters` (u64 pcnt, u64 bcnt).
pub(crate) const XT_COUNTERS_SIZE: usize = 16;

/// IPT_SO_SET_REPLACE / IP6T_SO_SET_REPLACE: `replace` is a `struct ipt_replace` followed by
/// its entries. The kernel writes the replaced table's counters through the header's
/// `counters` pointer; this fills that pointer in with `old_counters`, which must hold the
/// `num_counters` the header names (checked here, since the kernel trusts the pointer).
pub(crate) fn xt_set_replace(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    opt: libc::c_int,
    replace: &mut [u8],
    old_counters: &mut [u8],
) -> Result<(), Errno> {
    if replace.len() < XT_REPLACE_HEADER {
        return Err(Errno::EINVAL);
    }
    let num = &replace[XT_REPLACE_NUM_COUNTERS_AT..XT_REPLACE_NUM_COUNTERS_AT + 4];
    let num = u32::from_ne_bytes(num.try_into().expect("4 bytes")) as usize;
    if num
        .checked_mul(XT_COUNTERS_SIZE)
        .is_none_or(|n| n > old_counters.len())
    {
        return Err(Errno::EINVAL);
    }
    let ptr = old_counters.as_mut_ptr() as usize as u64;
    replace[XT_REPLACE_COUNTERS_AT..XT_REPLACE_COUNTERS_AT + 8].copy_from_slice(&ptr.to_ne_bytes());
    let len = libc::socklen_t::try_from(replace.len()).map_err(|_| Errno::EINVAL)?;
    // SAFETY: `fd` is an open socket for the duration of the borrow; the kernel reads at most
    // `len` bytes of `replace`, which is live and exactly `len` long. Through the pointer just
    // written into it, it writes at most num_counters * sizeof(struct xt_counters) bytes,
    // which was checked above to fit in `old_counters`, exclusively borrowed until we return.
    let r = unsafe { libc::setsockopt(fd.as_raw_fd(), level, opt, replace.as_ptr().cast(), len) };
    Errno::result(r).map(drop)
}
