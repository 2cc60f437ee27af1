//! Restore side, before any process is created: every description checked against the image
//! and this machine (by its kind, kind.rs: FileKind::validate), ids unique, every fd of every
//! task referring to a known description.

use std::collections::{HashMap, HashSet};

use cryo_proto::image::{FdEntry, FileDesc};

use super::kind::Checking;
use super::registry;
use super::{FileError, UnixLinks};
use crate::image::ImageDir;

/// Indexes descriptions by id, refusing a duplicate or zero id and a record without kind.
pub(crate) fn index(descs: &[FileDesc]) -> Result<HashMap<u32, &FileDesc>, FileError> {
    let mut by_id = HashMap::with_capacity(descs.len());
    for desc in descs {
        if desc.id == 0 {
            return Err(FileError::Invalid {
                id: 0,
                detail: "id 0 is reserved (no file)".into(),
            });
        }
        registry::of_desc(desc)?;
        if by_id.insert(desc.id, desc).is_some() {
            return Err(FileError::Invalid {
                id: desc.id,
                detail: "two records have this id".into(),
            });
        }
    }
    Ok(by_id)
}

/// Checks the fds of one task against the descriptions: numbers valid and unique, every
/// file id known.
pub(crate) fn check_fds(by_id: &HashMap<u32, &FileDesc>, fds: &[FdEntry]) -> Result<(), FileError> {
    let mut seen = HashSet::with_capacity(fds.len());
    for e in fds {
        if !by_id.contains_key(&e.file_id) {
            return Err(FileError::Dangling {
                fd: e.fd,
                file_id: e.file_id,
            });
        }
        if e.fd < 0 || !seen.insert(e.fd) {
            return Err(FileError::Invalid {
                id: e.file_id,
                detail: format!("fd {} is negative or listed twice", e.fd),
            });
        }
    }
    Ok(())
}

/// Restore side, before any process is created: checks every description (ghost images
/// present with the right size and crc32c, referenced files present and of the right type,
/// ids unique) and that every fd of every task refers to a known description. Returns the
/// unix sockets grouped as the restore makes them (each decoded once here).
pub fn validate(
    descs: &[FileDesc],
    fds_of_tasks: &[&[FdEntry]],
    images: &ImageDir,
) -> Result<UnixLinks, FileError> {
    let by_id = index(descs)?;
    let mut cx = Checking::new(images);
    for desc in descs {
        registry::of_desc(desc)?.validate(desc, &mut cx)?;
    }
    for fds in fds_of_tasks {
        check_fds(&by_id, fds)?;
    }
    // Peers, waiting clients and descriptions in flight all in the image.
    UnixLinks::build(descs)
}
