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
//!
//! This file is the whole public surface: the operations `cryo` offers ([`dump`], [`restore`],
//! [`show`], [`kill`], [`unlock`], [`check`], [`precheck`]), their options and summaries, and the errors.
//! Every module behind them is crate-private; the `internals` feature opens a few of them to
//! the engine's own integration tests (core/tests, tests/).
#![warn(missing_docs)]

/// Declares modules that are crate-private, and public with the `internals` feature (for the
/// engine's own integration tests only: nothing outside this workspace may rely on them).
macro_rules! internal_modules {
    ($($name:ident),* $(,)?) => {$(
        #[cfg(feature = "internals")]
        pub mod $name;
        #[cfg(not(feature = "internals"))]
        mod $name;
    )*};
}

internal_modules!(dump, files, freeze, image, notify, remote);

pub mod check;
mod error;
mod hooks;
pub mod interrupt;
mod ipc;
mod memory;
mod parallel;
pub mod precheck;
mod proc;
mod restore;
pub mod show;
mod sockets;
mod sys;
mod task;

pub use cryo_proto::image::CgroupRoot;
pub use dump::error::{DumpError, KillError};
pub use dump::retire::{kill_left_running as kill, Retired};
pub use dump::{
    dump, lock_id_for, network_lock_installed, unlock, CommitError, CommitHook, Commitment,
    DumpOptions, DumpSummary,
};
pub use error::{Error, Result};
pub use files::{parse_inherit_fd, InheritFd};
pub use hooks::{
    env as hook_env, ActionScript, HookError, HookStatus, Hooks, Stage,
    DEFAULT_TIMEOUT as DEFAULT_HOOK_TIMEOUT,
};
pub use image::{ImageDir, ImageDirError};
pub use ipc::IpcError;
pub use memory::precopy::{
    merge as merge_pre_copy, merge_with as merge_pre_copy_with, round_of as precopy_round_of,
    Appended as PreCopyAppended, PreCopySink,
};
pub use memory::warm::WarmMemory;
pub use nix::unistd::Pid;
pub use restore::error::{ChildError, RestoreError};
pub use restore::{restore, GateError, KeepLock, RestoreGate, RestoreOptions, Restored};
pub use task::cgroup_roots::parse as parse_cgroup_root;
pub use task::cgroups::CgroupMode;
pub use task::mount_ns::{ExternalMount, ExternalPaths};
pub use task::netns::ExternalLink;
