//! Open files of a task: dumped once per open file description, restored at their numbers.

/// Why a file of a task could not be dumped or restored.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// Placeholder until the files module lands.
    #[error("pid {pid} fd {fd}: {detail}")]
    Unsupported {
        /// The task.
        pid: i32,
        /// The fd.
        fd: i32,
        /// What it is and why it is refused.
        detail: String,
    },
}
