//! What a pty pair holds that no end has read: output the slave wrote and the master has not
//! read, input the master wrote (or a terminal typed) that the slave has not read. Read out
//! at dump and written back at once, put back at restore before any process runs.
//!
//! ```text
//! output  the master's line discipline is always raw (its modes are the driver's: a mode
//!         change through the master reaches the slave): read the master (in packet mode each
//!         read starts with a status byte), then TIOCSTI each byte back into the master's
//!         input, where it was. A pending packet status byte (POLLPRI) is refused.
//! input   the slave's line discipline turned quiet for the moment (no echo, no signals, no
//!         input translation, ICANON as it was, IEXTEN for VLNEXT, IXON as it was, so no
//!         stopped output restarts): in canonical mode the complete lines read while the slave
//!         polls readable (each read is one line), then a newline TIOCSTI'd and read back to
//!         learn the partial line before it; in raw mode the FIONREAD bytes. Put back by
//!         TIOCSTI through the quiet modes, a byte the line discipline would act on behind a
//!         VLNEXT, each line with its end (VEOF for a line a VEOF ended: a read drops it), then
//!         the dumped modes set again (ICANON never changes: that would redraw the lines)
//! ```
//!
//! Raw input with IXON on holding a VSTART or VSTOP byte (typed before IXON was on, or before
//! the character was made one) has no VLNEXT to put it back behind: it is put back with the
//! two flow characters moved for the while to bytes the input does not hold (a change of
//! them restarts no output stopped with ^S, as turning IXON off would).
//!
//! Refused: input or output while a description of the receiving end has O_ASYNC (each byte
//! put back would send it SIGIO), input under EXTPROC, raw input with IXON on while the master
//! is in packet mode (a change of the flow characters may queue a status byte for it), a
//! queue of [`MAX_QUEUED`] bytes or more (more may wait in the pty's own buffer, which shows
//! nowhere).

use std::os::fd::BorrowedFd;

use nix::poll::{PollFd, PollFlags, PollTimeout};

use crate::sys;

/// The most a queue may hold: the line discipline's buffer is 4096 bytes, and once it is
/// near full the pty keeps what follows in a buffer of its own that nothing shows.
pub(super) const MAX_QUEUED: usize = 3072;

/// A failure to read or put back a pty's queue.
#[derive(Debug, thiserror::Error)]
pub(super) enum QueueError {
    /// A call failed.
    #[error("{op}: {source}")]
    Io {
        /// The call.
        op: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// The queue is one a restore would not put back as it was.
    #[error("{0}")]
    Refused(String),
}

fn io(op: &'static str) -> impl FnOnce(std::io::Error) -> QueueError {
    move |source| QueueError::Io { op, source }
}

fn errno(op: &'static str) -> impl FnOnce(nix::errno::Errno) -> QueueError {
    move |e| QueueError::Io {
        op,
        source: e.into(),
    }
}

/// Input the slave has not read: complete lines (canonical mode), then the rest.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Input {
    /// Each complete line as a read returns it.
    pub lines: Vec<Vec<u8>>,
    /// The partial line (canonical mode), or every byte (raw mode).
    pub tail: Vec<u8>,
}

impl Input {
    /// Bytes held.
    pub fn len(&self) -> usize {
        self.lines.iter().map(Vec::len).sum::<usize>() + self.tail.len()
    }

    /// True when nothing is held (an empty line a VEOF ended still counts).
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty() && self.tail.is_empty()
    }
}

/// True if `fd` polls with one of `events` now.
fn polls(fd: BorrowedFd<'_>, events: PollFlags) -> Result<bool, QueueError> {
    let mut fds = [PollFd::new(fd, events)];
    let n = nix::poll::poll(&mut fds, PollTimeout::ZERO).map_err(errno("poll"))?;
    Ok(n > 0 && fds[0].revents().is_some_and(|r| r.intersects(events)))
}

/// Reads exactly `n` bytes from terminal `fd` (they are there: no read blocks).
fn read_exact(fd: BorrowedFd<'_>, n: usize, packet: bool) -> Result<Vec<u8>, QueueError> {
    let mut out = Vec::with_capacity(n);
    let mut buf = vec![0u8; n + 1];
    while out.len() < n {
        let want = n - out.len() + usize::from(packet);
        let got = nix::unistd::read(fd, &mut buf[..want]).map_err(errno("read"))?;
        // In packet mode a read starts with its status byte (TIOCPKT_DATA).
        let skip = usize::from(packet).min(got);
        if got <= skip {
            return Err(QueueError::Refused(format!(
                "the queue shrank while read ({} of {n} bytes)",
                out.len()
            )));
        }
        out.extend_from_slice(&buf[skip..got]);
    }
    Ok(out)
}

/// TIOCSTI of each byte of `bytes` into `fd`.
fn insert(fd: BorrowedFd<'_>, bytes: &[u8]) -> Result<(), QueueError> {
    for &b in bytes {
        sys::tty::insert_input(fd, b).map_err(io("TIOCSTI"))?;
    }
    Ok(())
}

/// Output the slave wrote that master `fd` has not read, read and put back at once.
/// `packet`: the master is in packet mode.
pub(super) fn take_output(fd: BorrowedFd<'_>, packet: bool) -> Result<Vec<u8>, QueueError> {
    if packet && polls(fd, PollFlags::POLLPRI)? {
        return Err(QueueError::Refused(
            "a packet-mode status byte the master has not read (not supported: the kernel \
             has no way to set one)"
                .into(),
        ));
    }
    let n = sys::fd::fionread(fd).map_err(io("FIONREAD"))?;
    if n == 0 {
        return Ok(Vec::new());
    }
    if n >= MAX_QUEUED {
        return Err(too_much("written by the slave", n));
    }
    let bytes = read_exact(fd, n, packet)?;
    insert(fd, &bytes)?;
    check_same(fd, n)?;
    Ok(bytes)
}

/// Puts `bytes` back where a read of master `fd` returns them.
pub(super) fn put_output(fd: BorrowedFd<'_>, bytes: &[u8]) -> Result<(), QueueError> {
    insert(fd, bytes)?;
    check_same(fd, bytes.len())
}

fn too_much(what: &str, n: usize) -> QueueError {
    QueueError::Refused(format!(
        "{n} bytes {what} not read yet (not supported from {MAX_QUEUED}: more may wait in the \
         pty's own buffer, which nothing shows)"
    ))
}

/// FIONREAD of `fd` must be `n` again.
fn check_same(fd: BorrowedFd<'_>, n: usize) -> Result<(), QueueError> {
    let now = sys::fd::fionread(fd).map_err(io("FIONREAD"))?;
    if now != n {
        return Err(QueueError::Refused(format!(
            "the queue holds {now} bytes once put back, not {n}"
        )));
    }
    Ok(())
}

/// The special characters the slave's line discipline acts on in the quiet modes of `t`
/// (canonical or not), but for the line ends a line may end with.
fn special(t: &libc::termios2, lnext: u8) -> Vec<u8> {
    let cc = |i: usize| t.c_cc[i];
    let mut s = Vec::new();
    if t.c_iflag & libc::IXON != 0 {
        s.extend([cc(libc::VSTART), cc(libc::VSTOP)]);
    }
    if t.c_lflag & libc::ICANON != 0 {
        s.extend([
            b'\n',
            cc(libc::VEOF),
            cc(libc::VEOL),
            cc(libc::VEOL2),
            cc(libc::VERASE),
            cc(libc::VKILL),
            cc(libc::VWERASE),
            lnext,
        ]);
    }
    s
}

/// The quiet modes for reading and putting back the input of a slave in modes `t`.
fn quiet(t: &libc::termios2) -> libc::termios2 {
    let mut q = *t;
    q.c_iflag = t.c_iflag & libc::IXON;
    q.c_lflag = (t.c_lflag & libc::ICANON) | libc::IEXTEN;
    if t.c_lflag & libc::ICANON != 0 {
        q.c_cc[libc::VLNEXT] = 0;
        let taken = special(&q, 0);
        let lnext = std::iter::once(t.c_cc[libc::VLNEXT])
            .chain(1..=u8::MAX)
            .find(|c| *c != 0 && !taken.contains(c))
            .unwrap_or(0x16);
        q.c_cc[libc::VLNEXT] = lnext;
    } else {
        q.c_lflag &= !libc::IEXTEN;
    }
    q
}

/// The terminal's modes are `t` (TCSETS2), checked (a locked termios keeps some).
fn set_modes(fd: BorrowedFd<'_>, t: &libc::termios2) -> Result<(), QueueError> {
    sys::tty::set_termios2(fd, t).map_err(io("TCSETS2"))?;
    let now = sys::tty::termios2(fd).map_err(io("TCGETS2"))?;
    let same = now.c_iflag == t.c_iflag
        && now.c_lflag == t.c_lflag
        && now.c_oflag == t.c_oflag
        && now.c_cc == t.c_cc;
    if !same {
        return Err(QueueError::Refused(
            "the slave's modes do not change (locked: TIOCSLCKTRMIOS)".into(),
        ));
    }
    Ok(())
}

/// Runs `step` with slave `fd` in the quiet modes of `t` (its modes now), setting `t` again
/// after, also when the step fails.
fn quietly<R>(
    fd: BorrowedFd<'_>,
    t: &libc::termios2,
    step: impl FnOnce(&libc::termios2) -> Result<R, QueueError>,
) -> Result<R, QueueError> {
    let q = quiet(t);
    if let Err(e) = set_modes(fd, &q) {
        let _ = sys::tty::set_termios2(fd, t);
        return Err(e);
    }
    let out = step(&q);
    let back = set_modes(fd, t);
    let out = out?;
    back?;
    Ok(out)
}

/// Input slave `fd` (in modes `t`; `packet`: its master is in packet mode) has not read,
/// read and put back at once.
pub(super) fn take_input(
    fd: BorrowedFd<'_>,
    t: &libc::termios2,
    packet: bool,
) -> Result<Input, QueueError> {
    if t.c_lflag & libc::EXTPROC != 0 {
        let n = sys::fd::fionread(fd).map_err(io("FIONREAD"))?;
        if n > 0 {
            return Err(QueueError::Refused(format!(
                "{n} bytes of input not read yet in EXTPROC mode (not supported)"
            )));
        }
        return Ok(Input::default());
    }
    let canonical = t.c_lflag & libc::ICANON != 0;
    if !canonical {
        let n = sys::fd::fionread(fd).map_err(io("FIONREAD"))?;
        if n == 0 {
            return Ok(Input::default());
        }
        if n >= MAX_QUEUED {
            return Err(too_much("of input", n));
        }
        if packet && t.c_iflag & libc::IXON != 0 {
            return Err(QueueError::Refused(format!(
                "{n} bytes of raw input not read yet with IXON on while the master is in \
                 packet mode (not supported: putting back a VSTART or VSTOP byte may queue a \
                 status byte for the master)"
            )));
        }
    }
    let input = quietly(fd, t, |q| {
        let input = if canonical {
            read_lines(fd)?
        } else {
            let n = sys::fd::fionread(fd).map_err(io("FIONREAD"))?;
            Input {
                lines: Vec::new(),
                tail: read_exact(fd, n, false)?,
            }
        };
        insert_input(fd, q, &input)?;
        Ok(input)
    })?;
    if input.len() >= MAX_QUEUED {
        return Err(too_much("of input", input.len()));
    }
    Ok(input)
}

/// In canonical quiet modes: every complete line of slave `fd`, then its partial line (a
/// newline inserted ends it, and is read with it).
fn read_lines(fd: BorrowedFd<'_>) -> Result<Input, QueueError> {
    let mut input = Input::default();
    let mut buf = vec![0u8; 8192];
    while polls(fd, PollFlags::POLLIN)? {
        if input.lines.len() > 4096 {
            return Err(QueueError::Refused("the slave stays readable".into()));
        }
        let n = nix::unistd::read(fd, &mut buf).map_err(errno("read"))?;
        input.lines.push(buf[..n].to_vec());
    }
    sys::tty::insert_input(fd, b'\n').map_err(io("TIOCSTI"))?;
    let n = nix::unistd::read(fd, &mut buf).map_err(errno("read"))?;
    match buf[..n].split_last() {
        Some((b'\n', partial)) => input.tail = partial.to_vec(),
        _ => {
            return Err(QueueError::Refused(format!(
                "the partial line read back as {:?}",
                String::from_utf8_lossy(&buf[..n])
            )))
        }
    }
    Ok(input)
}

/// Puts `input` back into slave `fd`, which is in quiet modes `q` (the caller sets the
/// modes again after).
fn insert_input(fd: BorrowedFd<'_>, q: &libc::termios2, input: &Input) -> Result<(), QueueError> {
    if q.c_lflag & libc::ICANON == 0 {
        if let Some(moved) = flow_moved(q, &input.tail)? {
            set_modes(fd, &moved)?;
        }
        return insert(fd, &input.tail);
    }
    let lnext = q.c_cc[libc::VLNEXT];
    let special = special(q, lnext);
    let mut bytes = Vec::with_capacity(input.len() * 2 + input.lines.len());
    let escaped = |data: &[u8], bytes: &mut Vec<u8>| {
        for &b in data {
            if special.contains(&b) {
                bytes.push(lnext);
            }
            bytes.push(b);
        }
    };
    for line in &input.lines {
        let ends = [b'\n', q.c_cc[libc::VEOL], q.c_cc[libc::VEOL2]];
        match line.split_last() {
            // A line end a read returns: '\n', VEOL, VEOL2 (a NUL one is dropped as VEOF is).
            Some((&end, body)) if end != 0 && ends.contains(&end) => {
                escaped(body, &mut bytes);
                bytes.push(end);
            }
            // A line VEOF ended: a read returns it without its end.
            _ => {
                escaped(line, &mut bytes);
                bytes.push(q.c_cc[libc::VEOF]);
            }
        }
    }
    escaped(&input.tail, &mut bytes);
    insert(fd, &bytes)
}

/// Raw quiet modes `q` with the flow characters moved to two bytes `raw` does not hold, when
/// IXON is on and `raw` holds one of them (raw mode has no VLNEXT to put it back behind).
fn flow_moved(q: &libc::termios2, raw: &[u8]) -> Result<Option<libc::termios2>, QueueError> {
    let flow = [q.c_cc[libc::VSTART], q.c_cc[libc::VSTOP]];
    if q.c_iflag & libc::IXON == 0 || !raw.iter().any(|b| flow.contains(b)) {
        return Ok(None);
    }
    let mut free = (1..=u8::MAX).filter(|c| !raw.contains(c));
    let (Some(start), Some(stop)) = (free.next(), free.next()) else {
        return Err(QueueError::Refused(
            "raw input holding every byte value while IXON is on (not supported)".into(),
        ));
    };
    let mut moved = *q;
    moved.c_cc[libc::VSTART] = start;
    moved.c_cc[libc::VSTOP] = stop;
    Ok(Some(moved))
}

/// Puts `input` back into slave `fd`, whose modes are the dumped `t` (a restore).
pub(super) fn put_input(
    fd: BorrowedFd<'_>,
    t: &libc::termios2,
    input: &Input,
) -> Result<(), QueueError> {
    quietly(fd, t, |q| insert_input(fd, q, input))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical() -> libc::termios2 {
        // SAFETY: termios2 is plain data; all zeroes is a valid value.
        let mut t: libc::termios2 = unsafe { std::mem::zeroed() };
        t.c_iflag = libc::ICRNL | libc::IXON;
        t.c_lflag = libc::ICANON | libc::ECHO | libc::ISIG | libc::IEXTEN;
        t.c_cc[libc::VEOF] = 4;
        t.c_cc[libc::VERASE] = 0x7f;
        t.c_cc[libc::VKILL] = 0x15;
        t.c_cc[libc::VWERASE] = 0x17;
        t.c_cc[libc::VLNEXT] = 0x16;
        t.c_cc[libc::VSTART] = 0x11;
        t.c_cc[libc::VSTOP] = 0x13;
        t
    }

    #[test]
    fn quiet_modes_keep_icanon_and_ixon_and_find_a_free_lnext() {
        let mut t = canonical();
        let q = quiet(&t);
        assert_eq!(q.c_iflag, libc::IXON);
        assert_eq!(q.c_lflag, libc::ICANON | libc::IEXTEN);
        assert_eq!(q.c_cc[libc::VLNEXT], 0x16);
        // VLNEXT disabled, or taken by another character: another byte.
        t.c_cc[libc::VLNEXT] = 0;
        assert_eq!(quiet(&t).c_cc[libc::VLNEXT], 1);
        t.c_cc[libc::VLNEXT] = 0x7f;
        assert_eq!(quiet(&t).c_cc[libc::VLNEXT], 1);
        t.c_lflag &= !libc::ICANON;
        assert_eq!(quiet(&t).c_lflag, 0);
    }

    #[test]
    fn raw_flow_characters_move_off_the_bytes_put_back() {
        let mut t = canonical();
        t.c_lflag = 0;
        let q = quiet(&t);
        assert!(flow_moved(&q, b"ab").unwrap().is_none());
        let moved = flow_moved(&q, b"\x01a\x13").unwrap().expect("VSTOP held");
        assert_eq!((moved.c_cc[libc::VSTART], moved.c_cc[libc::VSTOP]), (2, 3));
        t.c_iflag = 0;
        assert!(flow_moved(&quiet(&t), b"\x13").unwrap().is_none());
        let every: Vec<u8> = (0..=u8::MAX).collect();
        assert!(flow_moved(&q, &every).is_err());
    }
}
