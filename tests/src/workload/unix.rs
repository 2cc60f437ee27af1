//! What the unix modes share: the socketpair at fds 50 and 51, sending, receiving every
//! message waiting, waiting for something to read, and the commands on end 50 of the modes
//! whose other end is in another process (`unix-tree`, `unix-split`).

use std::io;

use super::{io_err, sys};

/// The timeout error of [`wait_readable`] in the commands that wait for data.
pub const NOTHING: &str = "nothing to read after 10 s";

/// The fds of the unix modes: the first end of the pair (or the one socket).
pub const UNIX_A: i32 = 50;
/// The other end of the pair.
pub const UNIX_B: i32 = 51;

/// A socketpair of type `ty`, its ends moved to [`UNIX_A`] and [`UNIX_B`].
pub fn socketpair(ty: i32) -> io::Result<(i32, i32)> {
    let mut sv = [0i32; 2];
    // SAFETY: socketpair fills our two-int array.
    if unsafe { libc::socketpair(libc::AF_UNIX, ty, 0, sv.as_mut_ptr()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((sys::move_fd(sv[0], UNIX_A)?, sys::move_fd(sv[1], UNIX_B)?))
}

/// Every message waiting on `fd`, one non-blocking recv each, joined with '|'.
pub fn recv_all(fd: i32) -> io::Result<String> {
    let msgs = recv_all_raw(fd)?;
    Ok(if msgs.is_empty() {
        "empty".into()
    } else {
        msgs.join("|")
    })
}

/// Every message waiting on `fd`, one non-blocking recv each ("<eof>" for an end of stream).
pub fn recv_all_raw(fd: i32) -> io::Result<Vec<String>> {
    let mut msgs = Vec::new();
    loop {
        let mut buf = [0u8; 4096];
        match sys::recv_nowait(fd, &mut buf)? {
            None => break,
            Some(0) => {
                msgs.push("<eof>".to_string());
                break;
            }
            Some(n) => msgs.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
        }
    }
    Ok(msgs)
}

/// Waits up to 10 s for something to read on `fd`, reading nothing; the error says
/// `on_timeout` if nothing came.
pub fn wait_readable(fd: i32, on_timeout: &str) -> io::Result<()> {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll on our one pollfd.
    match unsafe { libc::poll(&mut p, 1, 10_000) } {
        n if n < 0 => Err(io::Error::last_os_error()),
        0 => Err(io::Error::new(io::ErrorKind::TimedOut, on_timeout)),
        _ => Ok(()),
    }
}

/// What `fd` holds once something is there (waits up to 10 s), as text.
pub fn read_when_readable(fd: i32) -> io::Result<String> {
    wait_readable(fd, NOTHING)?;
    let data = sys::read_available(fd, usize::MAX)?;
    Ok(String::from_utf8_lossy(&data).into_owned())
}

/// Sends `msg` as one message.
pub fn send(fd: i32, msg: &[u8]) -> io::Result<()> {
    send_flags(fd, msg, 0)
}

/// Sends `msg` as one message with `flags` (MSG_*).
pub fn send_flags(fd: i32, msg: &[u8], flags: i32) -> io::Result<()> {
    // SAFETY: send from our own buffer.
    let n = unsafe { libc::send(fd, msg.as_ptr().cast(), msg.len(), flags) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `push MSG`, `recv`, `recv-wait`, `ready` on end [`UNIX_A`]; `None` for another verb.
pub fn end_command(verb: &str, args: &[&str]) -> Option<Result<String, String>> {
    Some(match (verb, args) {
        ("push", [msg]) => send(UNIX_A, msg.as_bytes())
            .map(|()| "ok".into())
            .map_err(io_err),
        ("recv", []) => recv_all(UNIX_A).map_err(io_err),
        ("recv-wait", []) => wait_readable(UNIX_A, NOTHING)
            .and_then(|()| recv_all(UNIX_A))
            .map_err(io_err),
        ("ready", []) => wait_readable(UNIX_A, NOTHING)
            .map(|()| "ready".into())
            .map_err(io_err),
        _ => return None,
    })
}
