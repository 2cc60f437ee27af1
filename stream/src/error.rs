//! What can stop a transfer: every variant says the step it stopped at.

/// Why a transfer, a handshake or the receiver stopped.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// A system call on the connection or a file failed.
    #[error("{step}: {source}")]
    Io {
        /// What was being done.
        step: String,
        /// The kernel's answer.
        source: std::io::Error,
    },
    /// The connection ended where more was expected.
    #[error("{step}: the connection was closed by the peer")]
    Closed {
        /// What was being done.
        step: String,
    },
    /// Nothing came in time.
    #[error("{step}: no answer within {secs} s")]
    TimedOut {
        /// What was being done.
        step: String,
        /// The timeout.
        secs: u64,
    },
    /// A frame was refused (bad magic, type, length, order, checksum, tag).
    #[error("{step}: {source}")]
    Frame {
        /// What was being done.
        step: String,
        /// What was wrong with the frame.
        source: crate::frame::FrameError,
    },
    /// The peer broke the protocol (a message out of place, undecodable, inconsistent).
    #[error("{step}: {what}")]
    Protocol {
        /// What was being done.
        step: String,
        /// What the peer did.
        what: String,
    },
    /// The two sides speak no common protocol version.
    #[error(
        "{peer} speaks protocol versions {theirs:?}, this cryo speaks {ours:?}: upgrade one \
         side"
    )]
    Version {
        /// The peer.
        peer: String,
        /// What the peer speaks.
        theirs: Vec<u32>,
        /// What we speak.
        ours: Vec<u32>,
    },
    /// The peer did not prove it holds the key.
    #[error("{step}: authentication failed: {why}")]
    Auth {
        /// What was being done.
        step: String,
        /// How.
        why: String,
    },
    /// The peer refused the request.
    #[error("{step}: refused by the peer: {reason}")]
    Refused {
        /// What was being done.
        step: String,
        /// The peer's reason.
        reason: String,
    },
    /// The peer failed (the receiver discarded the image).
    #[error("{step}: the peer failed: {why}")]
    PeerFailed {
        /// What was being done.
        step: String,
        /// The peer's reason.
        why: String,
    },
    /// The key file was refused.
    #[error(transparent)]
    Psk(#[from] crate::auth::PskError),
    /// An image directory or file was refused (cryo's image trust rules).
    #[error("{step}: {source}")]
    Images {
        /// What was being done.
        step: String,
        /// What the image rules say.
        source: cryo_core::ImageDirError,
    },
    /// A signal (SIGINT, SIGTERM) asked to stop.
    #[error("{step}: interrupted by a signal")]
    Interrupted {
        /// What was being done.
        step: String,
    },
}

impl StreamError {
    /// An I/O error at `step`, a timeout told as such.
    pub fn io(step: impl Into<String>, source: std::io::Error, timeout_secs: u64) -> Self {
        let step = step.into();
        match source.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => Self::TimedOut {
                step,
                secs: timeout_secs,
            },
            std::io::ErrorKind::UnexpectedEof => Self::Closed { step },
            _ => Self::Io { step, source },
        }
    }

    /// A protocol violation at `step`.
    pub fn protocol(step: impl Into<String>, what: impl Into<String>) -> Self {
        Self::Protocol {
            step: step.into(),
            what: what.into(),
        }
    }

    /// An image rule broken at `step`.
    pub fn images(step: impl Into<String>, source: cryo_core::ImageDirError) -> Self {
        Self::Images {
            step: step.into(),
            source,
        }
    }
}
