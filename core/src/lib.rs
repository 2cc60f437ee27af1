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
#![warn(missing_docs)]

pub mod check;
pub mod dump;
pub mod error;
pub mod files;
pub mod freeze;
pub mod hooks;
pub mod image;
pub mod memory;
pub mod namespaces;
pub mod notify;
mod parallel;
pub mod proc;
pub mod remote;
pub mod restore;
pub mod retire;
pub mod show;
pub mod signals;
pub mod sockets;
pub(crate) mod spawn;
pub mod sys;
pub mod task;
pub mod threads;
pub mod timers;

pub use error::{Error, Result};
pub use nix::unistd::Pid;
