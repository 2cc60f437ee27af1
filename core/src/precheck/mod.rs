//! Pre-migration checks: `cryo dump --check-only` records what a destination needs to judge
//! (check.img), `cryo restore --check-only` judges this host against it without creating
//! anything.
//!
//! ```text
//! record.rs  the dump side: files with their hashes, CPU and kernel features, memory, pids,
//!            ports, ids, from what the dump pipeline collected (no pages)
//! judge.rs   the restore side: findings, each temporary (a retry may pass) or permanent
//! cpu.rs     user-space CPU flags (/proc/cpuinfo), XSAVE features (xstate header, XCR0)
//! elf.rs     the ELF build-id note of a file
//! ```

mod cpu;
mod elf;
mod judge;
mod record;

pub use judge::{check_only, CheckOptions, Finding, FindingKind, Verdict};
pub(crate) use record::record;
