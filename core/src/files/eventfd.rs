//! eventfd: its whole state (the counter, semaphore mode) is in fdinfo.
//!
//! ```text
//! eventfd   fdinfo eventfd-count (hex), eventfd-semaphore     -> eventfd(0) + write(count)
//! ```
//!
//! O_NONBLOCK comes from the description's flags.

use std::os::fd::{AsFd, OwnedFd};

use cryo_proto::image::{file_desc::Kind, EventFd, FileDesc};

use super::inspect::{fdinfo, field, required, OpenFd};
use super::kind::{Dumping, FileKind, Opened, Opening};
use super::open::create_flags;
use super::{restore_err, FileError};
use crate::sys;

/// eventfd instances.
pub(super) struct EventFds;

impl FileKind for EventFds {
    type Record = EventFd;

    fn record(kind: &Kind) -> Option<&EventFd> {
        match kind {
            Kind::Eventfd(e) => Some(e),
            _ => None,
        }
    }

    fn claims(&self, fd: &Dumping<'_>) -> bool {
        fd.seen.is_anon("eventfd")
    }

    fn dump(&self, fd: &mut Dumping<'_>) -> Result<Kind, FileError> {
        dump(fd.open).map(Kind::Eventfd)
    }

    fn open(
        &self,
        desc: &FileDesc,
        ev: &EventFd,
        _cx: &mut Opening<'_>,
    ) -> Result<Opened, FileError> {
        open(desc, ev).map(Opened::Now)
    }

    fn describe(&self, _desc: &FileDesc, e: &EventFd) -> String {
        format!("eventfd (count {})", e.count)
    }
}

/// The state of an eventfd.
fn dump(open: &OpenFd) -> Result<EventFd, FileError> {
    let text = fdinfo(open)?;
    let count = required(open, &text, "eventfd-count", |v| {
        u64::from_str_radix(v, 16).ok()
    })?;
    // Older kernels do not print it; EFD_SEMAPHORE is not in the file flags either.
    let semaphore = field(&text, "eventfd-semaphore") == Some("1");
    Ok(EventFd { count, semaphore })
}

/// Recreates an eventfd.
fn open(desc: &FileDesc, ev: &EventFd) -> Result<OwnedFd, FileError> {
    let sem = if ev.semaphore { libc::EFD_SEMAPHORE } else { 0 };
    let fd = sys::eventfd::eventfd(create_flags(desc) | sem).map_err(|e| restore_err(desc, "eventfd", e))?;
    if ev.count != 0 {
        sys::eventfd::eventfd_add(fd.as_fd(), ev.count).map_err(|e| {
            restore_err(desc, format!("set the eventfd counter to {}", ev.count), e)
        })?;
    }
    Ok(fd)
}
