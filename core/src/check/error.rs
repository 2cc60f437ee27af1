//! Why a probe failed: the probe, the step that failed and the error the engine's own code
//! returned there (its errno when it has one).

use std::borrow::Cow;
use std::io;

/// A failed probe: shown as the reason of a [`super::ProbeStatus::Missing`] (`step: cause`).
#[derive(Debug, thiserror::Error)]
#[error("{step}: {cause}")]
pub struct CheckError {
    /// The probe, as named in the catalog.
    pub probe: &'static str,
    /// The step that failed (a system call, an engine function).
    pub step: Cow<'static, str>,
    /// What it returned.
    pub cause: Cause,
}

/// What a failed step returned.
#[derive(Debug, thiserror::Error)]
pub enum Cause {
    /// A system call of the backend failed.
    #[error("{0}")]
    Sys(#[from] io::Error),
    /// An engine function (freezer, /proc reader, memory restore) failed.
    #[error("{0}")]
    Engine(Box<crate::error::Error>),
    /// cryo-tcp-repair failed.
    #[error("{0}")]
    TcpRepair(Box<cryo_tcp_repair::TcpRepairError>),
    /// The unix sock_diag query of cryo-unix-sockets failed.
    #[error("{0}")]
    UnixDiag(Box<cryo_unix_sockets::UnixSockError>),
    /// The network lock of cryo-netns failed.
    #[error("{0}")]
    Lock(Box<cryo_netns::LockError>),
    /// A network namespace of cryo-netns (made, read, its firewall made) failed.
    #[error("{0}")]
    Netns(Box<cryo_netns::NetnsError>),
    /// The call succeeded but the kernel's answer is not what the engine relies on.
    #[error("{0}")]
    Unexpected(String),
    /// A child the probe forked ended otherwise than it should.
    #[error("child ended with {0}")]
    Child(String),
    /// The probe panicked (a bug of the probe, reported rather than propagated).
    #[error("the probe panicked")]
    Panicked,
}

impl From<crate::error::Error> for Cause {
    fn from(e: crate::error::Error) -> Self {
        Cause::Engine(Box::new(e))
    }
}

impl From<cryo_netns::NetnsError> for Cause {
    fn from(e: cryo_netns::NetnsError) -> Self {
        Cause::Netns(Box::new(e))
    }
}

impl From<crate::proc::ProcError> for Cause {
    fn from(e: crate::proc::ProcError) -> Self {
        Cause::Engine(Box::new(e.into()))
    }
}

impl From<cryo_tcp_repair::TcpRepairError> for Cause {
    fn from(e: cryo_tcp_repair::TcpRepairError) -> Self {
        Cause::TcpRepair(Box::new(e))
    }
}

impl From<cryo_unix_sockets::UnixSockError> for Cause {
    fn from(e: cryo_unix_sockets::UnixSockError) -> Self {
        Cause::UnixDiag(Box::new(e))
    }
}

impl From<cryo_netns::LockError> for Cause {
    fn from(e: cryo_netns::LockError) -> Self {
        Cause::Lock(Box::new(e))
    }
}

impl From<nix::errno::Errno> for Cause {
    fn from(e: nix::errno::Errno) -> Self {
        Cause::Sys(e.into())
    }
}

impl CheckError {
    /// A failure of `step` (the probe's name is filled in by the runner).
    pub(super) fn new(step: impl Into<Cow<'static, str>>, cause: impl Into<Cause>) -> Self {
        Self {
            probe: "",
            step: step.into(),
            cause: cause.into(),
        }
    }

    /// `step` worked but answered `what`, which is not what the engine relies on.
    pub(super) fn unexpected(step: impl Into<Cow<'static, str>>, what: String) -> Self {
        Self::new(step, Cause::Unexpected(what))
    }

    /// The errno of the failed call, when the failure was one.
    pub fn errno(&self) -> Option<i32> {
        match &self.cause {
            Cause::Sys(e) => e.raw_os_error(),
            Cause::TcpRepair(e) => e.errno().map(|e| e as i32),
            Cause::Lock(e) => e.errno().map(|e| e as i32),
            _ => None,
        }
    }
}

/// Wraps an error with the step that failed: `.map_err(at("PTRACE_SEIZE"))`.
pub(super) fn at<E: Into<Cause>>(
    step: impl Into<Cow<'static, str>>,
) -> impl FnOnce(E) -> CheckError {
    let step = step.into();
    move |e| CheckError::new(step, e)
}

/// What a probe returns: what it saw when the feature works.
pub(super) type Outcome<T = String> = Result<T, CheckError>;
