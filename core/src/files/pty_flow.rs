//! Whether a pty's output is stopped, and by what: by the stop character (^S with IXON on,
//! restarted by the start character) or by tcflow(TCOOFF) (restarted only by TCOON, the
//! start character does nothing to it). Read at dump, made again at restore once the queues
//! are back.
//!
//! ```text
//! dump     after the queues are read out and put back (pty_queue.rs: what the master had
//!          not read is back in its read buffer, far below what would fill the pty), an end
//!          that does not poll POLLOUT has its output stopped (the pty's write room is 0
//!          only when stopped or full). TCOON on it then tells which: output a TCOOFF
//!          stopped starts (it polls POLLOUT, and TCOOFF stops it again as it was); output
//!          the stop character stopped stays stopped
//! restore  the stop character handed to the slave's input (TIOCSTI: the line discipline
//!          acts on it as on a typed one, and it is not queued); TCOOFF on the end
//! ```
//!
//! Refused: stopped output while the master is in packet mode (a stop or start queues a
//! status byte for the master's reader, which the probe would change); output the stop
//! character stopped that it no longer would (IXON off or VSTOP disabled since: a restore
//! has no other way to make that state).

use std::os::fd::BorrowedFd;

use nix::poll::{PollFd, PollFlags, PollTimeout};

use crate::sys;

/// How the output of one end of a pty is stopped (`Pty.output_stopped` in the image).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stopped {
    /// Not stopped.
    No,
    /// By the stop character (^S).
    ByStopChar,
    /// By tcflow(TCOOFF) (perhaps by the stop character too: TCOON restarts both).
    ByTcooff,
}

impl Stopped {
    /// The image's number for it.
    pub fn to_image(self) -> u32 {
        match self {
            Stopped::No => 0,
            Stopped::ByStopChar => 1,
            Stopped::ByTcooff => 2,
        }
    }

    /// From the image's number; `None` for a number no version writes.
    pub fn from_image(n: u32) -> Option<Self> {
        match n {
            0 => Some(Stopped::No),
            1 => Some(Stopped::ByStopChar),
            2 => Some(Stopped::ByTcooff),
            _ => None,
        }
    }
}

fn writable(fd: BorrowedFd<'_>) -> Result<bool, String> {
    let mut fds = [PollFd::new(fd, PollFlags::POLLOUT)];
    nix::poll::poll(&mut fds, PollTimeout::ZERO).map_err(|e| format!("poll: {e}"))?;
    Ok(fds[0]
        .revents()
        .is_some_and(|r| r.contains(PollFlags::POLLOUT)))
}

/// How the output of pty end `fd` is stopped; `slave`: the end is the slave (the master's
/// modes are the driver's: no IXON, so only TCOOFF stops it); `packet`: the master is in
/// packet mode. Leaves the end as it was.
pub(super) fn read(fd: BorrowedFd<'_>, slave: bool, packet: bool) -> Result<Stopped, String> {
    if writable(fd)? {
        return Ok(Stopped::No);
    }
    if packet {
        return Err("output stopped while the master is in packet mode: not supported (a \
                    restore would queue a status byte for its reader)"
            .into());
    }
    sys::tty::flow(fd, libc::TCOON).map_err(|e| format!("TCXONC TCOON: {e}"))?;
    if writable(fd)? {
        sys::tty::flow(fd, libc::TCOOFF).map_err(|e| format!("TCXONC TCOOFF: {e}"))?;
        return Ok(Stopped::ByTcooff);
    }
    let t = sys::tty::termios2(fd).map_err(|e| format!("TCGETS2: {e}"))?;
    let stop = t.c_cc[libc::VSTOP];
    if !slave || t.c_iflag & libc::IXON == 0 || stop == 0 {
        return Err("output stopped in a way a restore cannot make again (not by tcflow \
                    TCOOFF, and the stop character does not stop it now: IXON off or VSTOP \
                    disabled): not supported"
            .into());
    }
    Ok(Stopped::ByStopChar)
}

/// Stops the output of pty end `fd` as `how` says (nothing for [`Stopped::No`]); for
/// [`Stopped::ByStopChar`] `fd` is the slave, its modes already set.
pub(super) fn stop(fd: BorrowedFd<'_>, how: Stopped) -> Result<(), String> {
    match how {
        Stopped::No => Ok(()),
        Stopped::ByTcooff => {
            sys::tty::flow(fd, libc::TCOOFF).map_err(|e| format!("TCXONC TCOOFF: {e}"))
        }
        Stopped::ByStopChar => {
            let t = sys::tty::termios2(fd).map_err(|e| format!("TCGETS2: {e}"))?;
            sys::tty::insert_input(fd, t.c_cc[libc::VSTOP])
                .map_err(|e| format!("TIOCSTI (the stop character): {e}"))
        }
    }
}
