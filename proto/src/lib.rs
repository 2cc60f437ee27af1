//! The cryo image: schema (generated from proto/image.proto) and file framing.
//!
//! An image directory (0700) holds framed record files and raw files (0600):
//!
//! ```text
//! inventory.img   Inventory          one record: checkpoint id, kernel, vdso identity, roots
//! pstree.img      ProcessEntry       one record per process
//! files.img       FileDesc           one record per open file description (shared by fds)
//! core-PID.img    TaskCore           per-process state and its threads
//! mm-PID.img      MmCore             address space: VMAs, page runs
//! pages-PID.img   raw                dumped pages, page-aligned, in PageRun order
//! ghost-ID.img    raw                contents of a deleted-but-open file
//! check.img       MigrationCheck     `dump --check-only`: files, CPU, kernel, ports, ids to judge
//! precopy-R-PID.img PreCopyRound    `dump --to --pre-copy`: a round's page runs (merged by the receiver)
//! ```
#![warn(missing_docs)]

pub mod frame;
#[cfg(test)]
mod round_trip;
pub mod sanity;

/// Generated protobuf types of the image schema.
#[allow(missing_docs, clippy::all)]
pub mod image {
    include!(concat!(env!("OUT_DIR"), "/cryo.image.rs"));
}

pub use frame::{ImageError, ImageKind, FORMAT_MAJOR, FORMAT_MINOR};
