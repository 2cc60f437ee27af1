//! AIO contexts (io_setup): their ring, mapped as "/[aio] (deleted)", is refused at dump with
//! the pid and the ring's address named, until contexts are restored (issue 13: io_setup in
//! the task, the ring moved to its address with mremap, its head and tail and the
//! completions not yet read put back, in-flight requests waited for at dump).

use std::path::PathBuf;

use nix::unistd::Pid;

use super::FileError;

/// Whether a VMA named `name` in /proc/PID/maps is an AIO ring.
pub(crate) fn is_ring(name: &str) -> bool {
    name.starts_with("/[aio]")
}

/// The refusal of the AIO ring of `pid` at `start`..`end`.
pub(crate) fn refuse(pid: Pid, start: u64, end: u64) -> FileError {
    FileError::Mapped {
        pid,
        link: PathBuf::from(format!("/proc/{pid}/map_files/{start:x}-{end:x}")),
        detail: format!(
            "an AIO context (io_setup, its ring at {start:#x}) is not supported yet: let its \
             requests complete and io_destroy it before the dump"
        ),
    }
}
