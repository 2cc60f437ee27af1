//! signalfd: its whole state (the mask) is in fdinfo.
//!
//! ```text
//! signalfd  fdinfo sigmask (hex)                               -> signalfd(-1, mask)
//! ```
//!
//! A signalfd has no state of its own beyond its mask: pending signals belong to the task and
//! are restored with it.

use std::os::fd::OwnedFd;

use cryo_proto::image::{file_desc::Kind, FileDesc, SignalFd};

use super::inspect::{fdinfo, required, OpenFd};
use super::kind::{Dumping, FileKind, Opened, Opening};
use super::open::create_flags;
use super::{restore_err, FileError};
use crate::sys;

/// signalfd instances.
pub(super) struct SignalFds;

impl FileKind for SignalFds {
    type Record = SignalFd;

    fn record(kind: &Kind) -> Option<&SignalFd> {
        match kind {
            Kind::Signalfd(s) => Some(s),
            _ => None,
        }
    }

    fn claims(&self, fd: &Dumping<'_>) -> bool {
        fd.seen.is_anon("signalfd")
    }

    fn dump(&self, fd: &mut Dumping<'_>) -> Result<Kind, FileError> {
        dump(fd.open).map(Kind::Signalfd)
    }

    fn open(
        &self,
        desc: &FileDesc,
        s: &SignalFd,
        _cx: &mut Opening<'_>,
    ) -> Result<Opened, FileError> {
        open(desc, s).map(Opened::Now)
    }

    fn describe(&self, _desc: &FileDesc, s: &SignalFd) -> String {
        format!("signalfd (mask {:#x})", s.sigmask)
    }
}

/// The state of a signalfd.
fn dump(open: &OpenFd) -> Result<SignalFd, FileError> {
    let text = fdinfo(open)?;
    let sigmask = required(open, &text, "sigmask", |v| u64::from_str_radix(v, 16).ok())?;
    Ok(SignalFd { sigmask })
}

/// Recreates a signalfd.
fn open(desc: &FileDesc, s: &SignalFd) -> Result<OwnedFd, FileError> {
    sys::signalfd::signalfd(s.sigmask, create_flags(desc)).map_err(|e| restore_err(desc, "signalfd", e))
}
