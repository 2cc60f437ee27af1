//! The resume record and the channel's naming convention: the ONE definition, shared by
//! the application (this crate) and the engine (`cryo-core` writes what this module reads).
//!
//! ```text
//! engine (cryo-core notify)                      application (Listener)
//! ResumeEvent::to_line()  -- one JSON line -->  parse_record(line) -> ResumeEvent
//! marker_channel(readlink of a marker)           memfd "cryo-resume:v1:fd=N" (MARKER_PREFIX)
//! is_fifo_channel_path(readlink of a FIFO)       FIFO named cryo-resume* (FIFO_PREFIX)
//! ListenerRef { fd, marker_fd } (in the image)
//! ```
//!
//! The wire format is version 1 (resume/README.md): readers ignore unknown fields and read an
//! unknown reason as [`BrokenReason::Other`], so fields and reasons can be added without a
//! new version.

use std::os::fd::RawFd;

use serde::{Deserialize, Serialize};

use crate::Error;

/// The version of the channel convention and record format (`v1` in the marker name).
pub const FORMAT_VERSION: u32 = 1;

/// The prefix of the marker memfd's name (as readlink shows it, after `/memfd:`); the
/// channel's fd number follows it.
pub const MARKER_PREFIX: &str = "cryo-resume:v1:fd=";

/// The file name prefix of a FIFO that is a channel by itself, with no marker (the convention
/// for runtimes that cannot create memfds, such as node.js; see README.md).
pub const FIFO_PREFIX: &str = "cryo-resume";

/// One restore, as cryo reports it: one JSON line on the channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumeEvent {
    /// The id of the checkpoint the process was restored from.
    pub checkpoint_id: String,
    /// Milliseconds between the freeze at dump time and the resume.
    pub downtime_ms: u64,
    /// The connections that did not survive the restore (empty when all did; still written).
    #[serde(default)]
    pub broken: Vec<BrokenConnection>,
}

/// A restored connection that cryo failed on purpose.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokenConnection {
    /// The connection's fd in the restored process.
    pub fd: RawFd,
    /// Local address: `ip:port`, `[v6]:port` or a unix socket path; empty if unknown.
    #[serde(default)]
    pub local: String,
    /// Remote address, same forms.
    #[serde(default)]
    pub remote: String,
    /// Why it is broken.
    pub reason: BrokenReason,
}

/// Why a restored connection is broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BrokenReason {
    /// The peer answered the probe with a reset.
    Reset,
    /// The peer did not answer within `--peer-timeout`.
    Timeout,
    /// The peer was outside the dump (`--ext-unix-sk`) and is gone.
    ExternalPeer,
    /// cryo closed it on purpose (`--tcp-close`).
    ClosedByPolicy,
    /// A reason this version of the library does not know (read only: the engine never
    /// writes it).
    #[serde(other)]
    Other,
}

impl ResumeEvent {
    /// The record as written on the channel: compact JSON and a newline.
    pub fn to_line(&self) -> Result<Vec<u8>, serde_json::Error> {
        let mut line = serde_json::to_vec(self)?;
        line.push(b'\n');
        Ok(line)
    }
}

/// Parses one record: a line of the channel without its newline.
pub fn parse_record(line: &[u8]) -> Result<ResumeEvent, Error> {
    serde_json::from_slice(line).map_err(|source| Error::Record {
        line: String::from_utf8_lossy(line).into_owned(),
        source,
    })
}

/// How the engine finds a process's channel again after restore (fds come back at their
/// numbers); it stores this with the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerRef {
    /// The channel's fd number.
    pub fd: RawFd,
    /// The marker memfd's fd number; `None` for a FIFO channel (found by its name).
    #[serde(default)]
    pub marker_fd: Option<RawFd>,
}

/// The channel fd a marker names, from the marker's readlink
/// (`/memfd:cryo-resume:v1:fd=N (deleted)`); `None` if the link is not a marker.
pub fn marker_channel(link: &str) -> Option<RawFd> {
    let name = link.strip_prefix("/memfd:")?;
    let name = name.strip_suffix(" (deleted)").unwrap_or(name);
    name.strip_prefix(MARKER_PREFIX)?.parse().ok()
}

/// True if `link` (a readlink of an fd) is the path of a FIFO channel: an absolute path whose
/// file name starts with [`FIFO_PREFIX`].
pub fn is_fifo_channel_path(link: &str) -> bool {
    link.starts_with('/')
        && link
            .rsplit('/')
            .next()
            .is_some_and(|name| name.starts_with(FIFO_PREFIX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_engine_line_is_what_applications_read() {
        let ev = ResumeEvent {
            checkpoint_id: "ck-1".into(),
            downtime_ms: 42,
            broken: vec![],
        };
        assert_eq!(
            ev.to_line().unwrap(),
            b"{\"checkpoint_id\":\"ck-1\",\"downtime_ms\":42,\"broken\":[]}\n"
        );
        let line = ev.to_line().unwrap();
        assert_eq!(parse_record(&line[..line.len() - 1]).unwrap(), ev);
    }

    #[test]
    fn marker_and_fifo_names() {
        assert_eq!(
            marker_channel("/memfd:cryo-resume:v1:fd=7 (deleted)"),
            Some(7)
        );
        assert_eq!(marker_channel("/memfd:cryo-resume:v1:fd=7"), Some(7));
        assert_eq!(marker_channel("/memfd:cryo-resume:v2:fd=7 (deleted)"), None);
        assert_eq!(marker_channel("/tmp/cryo-resume:v1:fd=7"), None);
        assert_eq!(marker_channel("pipe:[123]"), None);
        assert!(is_fifo_channel_path("/tmp/cryo-resume-42"));
        assert!(!is_fifo_channel_path("/tmp/cryo-resume-dir/fifo"));
        assert!(!is_fifo_channel_path("pipe:[1]"));
    }

    #[test]
    fn listener_ref_stored_form() {
        let l = ListenerRef {
            fd: 5,
            marker_fd: None,
        };
        let text = serde_json::to_string(&l).unwrap();
        assert_eq!(text, r#"{"fd":5,"marker_fd":null}"#);
        assert_eq!(
            serde_json::from_str::<ListenerRef>(r#"{"fd":5}"#).unwrap(),
            l
        );
    }
}
