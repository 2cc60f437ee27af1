//! The cryo engine: dump a running process tree into an image directory and restore it.
//!
//! The layout follows the two pipelines (see shared/DESIGN.md):
//!
//! ```text
//! dump:    proc (read /proc) -> freeze (ptrace seize) -> remote (syscalls in the target)
//!          -> threads, signals, task, memory, files -> image dir -> kill or release
//! restore: image dir (validate all) -> spawn (clone3 set_tid, fork of cryo)
//!          -> files (child opens fds) -> memory (reshaped through remote syscalls)
//!          -> threads (registers) -> detach, wait
//! ```
//!
//! `dump/` and `restore/` hold the two pipelines (the restore as a chain of phase types);
//! `task/` the per-task kernel objects both use (process attributes, threads, signals,
//! timers), each with its dump and restore side by side.
#![warn(missing_docs)]

pub mod check;
pub mod dump;
pub mod error;
pub mod files;
pub mod freeze;
pub mod hooks;
pub mod image;
pub mod memory;
pub mod notify;
mod parallel;
pub mod proc;
pub mod remote;
pub mod restore;
pub mod show;
pub mod sockets;
pub mod sys;
pub(crate) mod task;

pub use dump::error::{DumpError, KillError};
pub use dump::retire;
pub use dump::{dump, unlock, DumpOptions, DumpSummary};
pub use error::{Error, Result};
pub use nix::unistd::Pid;
pub use restore::error::{ChildError, RestoreError};
pub use restore::{restore, RestoreOptions, Restored};
pub use retire::{kill_left_running, Retired};
