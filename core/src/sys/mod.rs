//! Thin safe wrappers over the system calls the engine needs; every `unsafe` block of the
//! engine lives under this module.

pub mod mmap;
pub mod process;
pub mod ptrace;
pub mod signal;
pub mod spawn;
pub mod uffd;
