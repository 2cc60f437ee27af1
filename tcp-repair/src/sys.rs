//! Raw socket calls: the only module with `unsafe`.
//!
//! Every function here takes a `BorrowedFd` and plain Rust values and returns
//! `Result<_, Errno>`; the callers attach the socket name and the step.

use std::mem::{size_of, MaybeUninit};
use std::os::fd::{AsRawFd, BorrowedFd};

use nix::errno::Errno;

/// `TCP_REPAIR` value: leave repair mode and send a window probe.
pub const TCP_REPAIR_OFF: libc::c_int = 0;
/// `TCP_REPAIR` value: enter repair mode.
pub const TCP_REPAIR_ON: libc::c_int = 1;
/// `TCP_REPAIR` value: leave repair mode without a window probe.
pub const TCP_REPAIR_OFF_NO_WP: libc::c_int = -1;

/// `TCP_REPAIR_QUEUE` values.
pub const TCP_NO_QUEUE: libc::c_int = 0;
/// The receive queue.
pub const TCP_RECV_QUEUE: libc::c_int = 1;
/// The send queue.
pub const TCP_SEND_QUEUE: libc::c_int = 2;

/// TCP option codes accepted by `TCP_REPAIR_OPTIONS`.
pub const TCPOPT_MAXSEG: u32 = 2;
/// Window scaling.
pub const TCPOPT_WINDOW: u32 = 3;
/// SACK permitted.
pub const TCPOPT_SACK_PERM: u32 = 4;
/// Timestamps.
pub const TCPOPT_TIMESTAMP: u32 = 8;

/// `struct tcp_repair_opt` from linux/tcp.h.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpRepairOpt {
    pub opt_code: u32,
    pub opt_val: u32,
}

/// `struct tcp_repair_window` from linux/tcp.h.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpRepairWindow {
    pub snd_wl1: u32,
    pub snd_wnd: u32,
    pub max_window: u32,
    pub rcv_wnd: u32,
    pub rcv_wup: u32,
}

fn cvt(ret: libc::c_int) -> Result<libc::c_int, Errno> {
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(ret)
    }
}

fn cvt_size(ret: libc::ssize_t) -> Result<usize, Errno> {
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(ret as usize)
    }
}

/// `setsockopt` with `values` (plain data: bytes, an int, an array of `repr(C)` structs) as
/// the option's value.
fn setsockopt_slice<T: Copy>(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    values: &[T],
) -> Result<(), Errno> {
    // SAFETY: `values` is a live slice; the length passed is exactly its size in bytes and
    // the kernel only reads it. The fd is borrowed, hence open.
    let ret = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            values.as_ptr().cast(),
            size_of_val(values) as libc::socklen_t,
        )
    };
    cvt(ret).map(drop)
}

/// `setsockopt` with a plain-old-data value.
fn setsockopt_pod<T: Copy>(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> Result<(), Errno> {
    setsockopt_slice(fd, level, name, std::slice::from_ref(value))
}

/// `getsockopt` into `out` (plain data, initialised: every byte pattern the kernel writes is
/// a valid value); returns the length the kernel reports, which may exceed `out`'s size
/// (NETLINK_LIST_MEMBERSHIPS reports the length it needs).
fn getsockopt_into<T: Copy>(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    out: &mut [T],
) -> Result<usize, Errno> {
    let mut len = size_of_val(out) as libc::socklen_t;
    // SAFETY: `out` is writable for `len` bytes; the kernel writes at most `len` bytes into
    // it and stores a length back in `len`.
    let ret = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            out.as_mut_ptr().cast(),
            &mut len,
        )
    };
    cvt(ret)?;
    Ok(len as usize)
}

/// `getsockopt` into a plain-old-data value; fails with `EINVAL` when the
/// kernel returns fewer bytes than `T` holds.
fn getsockopt_pod<T: Copy + Default>(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
) -> Result<T, Errno> {
    let mut value = [T::default()];
    let len = getsockopt_into(fd, level, name, &mut value)?;
    if len < size_of::<T>() && size_of::<T>() != size_of::<libc::c_int>() {
        return Err(Errno::EINVAL);
    }
    Ok(value[0])
}

/// `connect` with an `AF_UNSPEC` address: `tcp_disconnect`, which takes the
/// socket out of the connection table at once, whoever else holds its fd.
pub fn connect_unspec(fd: BorrowedFd<'_>) -> Result<(), Errno> {
    // SAFETY: an all-zero sockaddr is a valid value; its family is then AF_UNSPEC.
    let mut addr: libc::sockaddr = unsafe { std::mem::zeroed() };
    addr.sa_family = libc::AF_UNSPEC as libc::sa_family_t;
    // SAFETY: the pointer and length describe `addr`, which lives across the call.
    let ret = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            &addr,
            size_of::<libc::sockaddr>() as libc::socklen_t,
        )
    };
    cvt(ret).map(drop)
}

/// `setsockopt` of an `int` option.
pub fn set_int(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> Result<(), Errno> {
    setsockopt_pod(fd, level, name, &value)
}

/// `getsockopt` of an `int` option.
pub fn get_int(fd: BorrowedFd<'_>, level: libc::c_int, name: libc::c_int) -> Result<i32, Errno> {
    getsockopt_pod::<libc::c_int>(fd, level, name)
}

/// `setsockopt` of a byte-string option (`TCP_CONGESTION`).
pub fn set_bytes(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: &[u8],
) -> Result<(), Errno> {
    setsockopt_slice(fd, level, name, value)
}

/// `getsockopt` of a byte-string option; returns the length the kernel reports (the bytes
/// it wrote, or more for an option that reports the length it needs).
pub fn get_bytes(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    buf: &mut [u8],
) -> Result<usize, Errno> {
    getsockopt_into(fd, level, name, buf)
}

/// Attaches a classic BPF filter that drops every incoming segment with RST set (the byte
/// at offset 13 of the TCP header: a TCP socket's filter sees the segment from its TCP
/// header on), until [`detach_filter`].
pub fn attach_rst_drop_filter(fd: BorrowedFd<'_>) -> Result<(), Errno> {
    let insn = |code: u32, jt: u8, jf: u8, k: u32| libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    };
    let prog = [
        insn(libc::BPF_LD | libc::BPF_B | libc::BPF_ABS, 0, 0, 13),
        insn(libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K, 0, 1, 0x04),
        insn(libc::BPF_RET | libc::BPF_K, 0, 0, 0),
        insn(libc::BPF_RET | libc::BPF_K, 0, 0, u32::MAX),
    ];
    // The kernel copies the program the descriptor points at during the call, while `prog`
    // lives.
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr().cast_mut(),
    };
    setsockopt_pod(fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &fprog)
}

/// Removes the filter of socket `fd` (`SO_DETACH_FILTER`).
pub fn detach_filter(fd: BorrowedFd<'_>) -> Result<(), Errno> {
    set_int(fd, libc::SOL_SOCKET, libc::SO_DETACH_FILTER, 0)
}

/// `SO_LINGER` read: `Some(seconds)` when lingering is on.
pub fn get_linger(fd: BorrowedFd<'_>) -> Result<Option<i32>, Errno> {
    let mut l = [libc::linger {
        l_onoff: 0,
        l_linger: 0,
    }];
    getsockopt_into(fd, libc::SOL_SOCKET, libc::SO_LINGER, &mut l)?;
    Ok((l[0].l_onoff != 0).then_some(l[0].l_linger))
}

/// `SO_LINGER` write.
pub fn set_linger(fd: BorrowedFd<'_>, linger: Option<i32>) -> Result<(), Errno> {
    let l = libc::linger {
        l_onoff: linger.is_some() as libc::c_int,
        l_linger: linger.unwrap_or(0),
    };
    setsockopt_pod(fd, libc::SOL_SOCKET, libc::SO_LINGER, &l)
}

/// `TCP_REPAIR_WINDOW` read (repair mode only).
pub fn get_repair_window(fd: BorrowedFd<'_>) -> Result<TcpRepairWindow, Errno> {
    getsockopt_pod(fd, libc::SOL_TCP, libc::TCP_REPAIR_WINDOW)
}

/// `TCP_REPAIR_WINDOW` write (repair mode only).
pub fn set_repair_window(fd: BorrowedFd<'_>, w: &TcpRepairWindow) -> Result<(), Errno> {
    setsockopt_pod(fd, libc::SOL_TCP, libc::TCP_REPAIR_WINDOW, w)
}

/// `TCP_REPAIR_OPTIONS` write: an array of `struct tcp_repair_opt`.
pub fn set_repair_options(fd: BorrowedFd<'_>, opts: &[TcpRepairOpt]) -> Result<(), Errno> {
    setsockopt_slice(fd, libc::SOL_TCP, libc::TCP_REPAIR_OPTIONS, opts)
}

/// The first bytes of `struct tcp_info` that repair needs.
#[derive(Clone, Copy, Debug)]
pub struct TcpInfoHead {
    /// `tcpi_state`.
    pub state: u8,
    /// `tcpi_options` (TCPI_OPT_* bits).
    pub options: u8,
    /// `tcpi_snd_wscale`.
    pub snd_wscale: u8,
    /// `tcpi_rcv_wscale`.
    pub rcv_wscale: u8,
}

/// `TCP_INFO`, reduced to what repair needs.
pub fn tcp_info(fd: BorrowedFd<'_>) -> Result<TcpInfoHead, Errno> {
    let mut buf = [0u8; 8];
    let n = get_bytes(fd, libc::SOL_TCP, libc::TCP_INFO, &mut buf)?;
    if n < 7 {
        return Err(Errno::EINVAL);
    }
    // Byte 6 holds the bitfields `tcpi_snd_wscale : 4, tcpi_rcv_wscale : 4`
    // (low nibble first on little- and big-endian Linux ABIs alike for GCC).
    Ok(TcpInfoHead {
        state: buf[0],
        options: buf[5],
        snd_wscale: buf[6] & 0x0f,
        rcv_wscale: buf[6] >> 4,
    })
}

/// The whole `TCP_INFO` (as far as this kernel fills it; the rest stays zero).
pub fn tcp_info_full(fd: BorrowedFd<'_>) -> Result<libc::tcp_info, Errno> {
    // SAFETY: tcp_info is plain integers: all-zero is a valid value.
    let mut info = [unsafe { MaybeUninit::<libc::tcp_info>::zeroed().assume_init() }];
    getsockopt_into(fd, libc::SOL_TCP, libc::TCP_INFO, &mut info)?;
    Ok(info[0])
}

/// An `ioctl` returning an `int` (SIOCINQ, SIOCOUTQ, SIOCOUTQNSD).
pub fn ioctl_int(fd: BorrowedFd<'_>, request: libc::c_ulong) -> Result<i32, Errno> {
    let mut value: libc::c_int = 0;
    // SAFETY: these socket ioctls write one `int` through the pointer, which
    // points to a live local.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), request as _, &mut value) };
    cvt(ret)?;
    Ok(value)
}

/// `recv(2)` into `buf` with `flags`.
pub fn recv(fd: BorrowedFd<'_>, buf: &mut [u8], flags: libc::c_int) -> Result<usize, Errno> {
    // SAFETY: `buf` is writable for its length; the kernel writes at most that.
    let ret = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), flags) };
    cvt_size(ret)
}

/// `send(2)` of `buf` with `flags` (MSG_NOSIGNAL is always added).
pub fn send(fd: BorrowedFd<'_>, buf: &[u8], flags: libc::c_int) -> Result<usize, Errno> {
    // SAFETY: `buf` is readable for its length; the kernel only reads it.
    let ret = unsafe {
        libc::send(
            fd.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            flags | libc::MSG_NOSIGNAL,
        )
    };
    cvt_size(ret)
}

/// The revents of a zero-timeout `poll(2)` of `fd` for `events`: what the socket reports
/// without anything being read or cleared (POLLERR says an error is pending, SO_ERROR would
/// take it).
pub fn poll_now(fd: BorrowedFd<'_>, events: libc::c_short) -> std::io::Result<libc::c_short> {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events,
        revents: 0,
    };
    // SAFETY: one pollfd, alive across the call; a zero timeout never blocks.
    let ret = unsafe { libc::poll(&mut p, 1, 0) };
    cvt(ret).map_err(std::io::Error::from)?;
    Ok(p.revents)
}
