//! memfds: anonymous shmem files, saved like deleted files.
//!
//! ```text
//! dump     /proc/PID/fd/N reads "/memfd:NAME (deleted)"
//!          contents copied through it into memfd-ID.img (once per inode), F_GET_SEALS
//! restore  memfd_create(NAME, MFD_ALLOW_SEALING) once per inode, contents written back,
//!          mode set, seals added last; every description is a reopen of it through
//!          /proc/self/fd (its own flags and offset)
//! ```
//!
//! A memfd without MFD_ALLOW_SEALING reads F_SEAL_SEAL, so it is recreated sealable and
//! sealed with F_SEAL_SEAL: the same thing. hugetlb memfds are refused. Mapped memfds are
//! refused by the memory dump.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use cryo_proto::image::{FileDesc, Memfd, RawFileRef};
use nix::sys::stat::Mode;
use nix::unistd::Whence;

use super::inspect::{InodeKey, OpenFd};
use super::{open_flags, restore_err, set_async, sys, FileError};
use crate::image::ImageDir;

/// `HUGETLBFS_MAGIC` from linux/magic.h.
const HUGETLBFS_MAGIC: i64 = 0x9584_58f6;

/// The contents image of the memfd first dumped as description `id`.
fn image_name(id: u32) -> String {
    format!("memfd-{id}.img")
}

/// NAME of "/memfd:NAME (deleted)".
fn name_of(link: &str) -> &str {
    let rest = link.strip_prefix("/memfd:").unwrap_or(link);
    rest.strip_suffix(" (deleted)").unwrap_or(rest)
}

/// Dumps memfd `open` (description `id`): name, seals, mode and contents; the contents image
/// is written once per inode (`saved` remembers them).
pub(super) fn dump(
    id: u32,
    open: &OpenFd,
    meta: &fs::Metadata,
    images: &ImageDir,
    saved: &mut HashMap<InodeKey, RawFileRef>,
) -> Result<Memfd, FileError> {
    let path = open.proc_path();
    let file = File::open(&path).map_err(|e| open.inspect_err("open", path.clone(), e))?;
    let fs_type = nix::sys::statfs::fstatfs(&file)
        .map_err(|e| open.inspect_err("fstatfs", path.clone(), e.into()))?;
    if fs_type.filesystem_type().0 as i64 == HUGETLBFS_MAGIC {
        return Err(open.refuse("hugetlb memfd", true));
    }
    let seals = sys::get_seals(file.as_fd())
        .map_err(|e| open.inspect_err("F_GET_SEALS", path.clone(), e))?;
    let key = InodeKey::of(meta);
    let contents = match saved.get(&key) {
        Some(raw) => raw.clone(),
        None => {
            let raw = save(id, file, meta.size(), images)
                .map_err(|e| open.dump_err(format!("save the memfd contents: {e}")))?;
            saved.insert(key, raw.clone());
            raw
        }
    };
    Ok(Memfd {
        name: name_of(&open.link).to_string(),
        size: meta.size(),
        seals,
        contents: Some(contents),
        ino: meta.ino(),
        mode: meta.mode(),
    })
}

/// Copies the contents into memfd-`id`.img.
fn save(id: u32, mut src: File, size: u64, images: &ImageDir) -> io::Result<RawFileRef> {
    let name = image_name(id);
    let mut out = images.create_raw(&name).map_err(io::Error::other)?;
    let copied = io::copy(&mut src, &mut out)?;
    if copied != size {
        return Err(io::Error::other(format!(
            "read {copied} bytes of {size} (the memfd changed size)"
        )));
    }
    let crc32c = crate::image::crc_of_file(&out, copied)?;
    Ok(RawFileRef {
        name,
        size: copied,
        crc32c,
    })
}

/// Restore side, before any process exists: the contents image is there, of the right size
/// and crc.
pub(super) fn validate(desc: &FileDesc, m: &Memfd, images: &ImageDir) -> Result<(), FileError> {
    let raw = m.contents.as_ref().ok_or_else(|| FileError::Invalid {
        id: desc.id,
        detail: format!("memfd:{} has no contents image", m.name),
    })?;
    if raw.size != m.size {
        return Err(FileError::Invalid {
            id: desc.id,
            detail: format!(
                "memfd:{} was {} bytes but its contents image {} holds {}",
                m.name, m.size, raw.name, raw.size
            ),
        });
    }
    images.check_raw(raw).map_err(|e| FileError::Ghost {
        id: desc.id,
        source: Box::new(e),
    })?;
    Ok(())
}

/// The memfds recreated by one restore call, by dumped inode number.
#[derive(Debug, Default)]
pub(super) struct Made {
    by_ino: HashMap<u64, OwnedFd>,
}

impl Made {
    /// A description of memfd `m`: the memfd recreated on first use, then reopened with the
    /// description's flags and offset.
    pub(super) fn open(
        &mut self,
        desc: &FileDesc,
        m: &Memfd,
        images: &ImageDir,
    ) -> Result<OwnedFd, FileError> {
        let holder = match self.by_ino.entry(m.ino) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => v.insert(recreate(desc, m, images)?),
        };
        let path = PathBuf::from(format!("/proc/self/fd/{}", holder.as_raw_fd()));
        let fd = nix::fcntl::open(Path::new(&path), open_flags(desc.flags), Mode::empty())
            .map_err(|e| restore_err(desc, "reopen the memfd", e.into()))?;
        if desc.pos != 0 {
            nix::unistd::lseek(&fd, desc.pos as i64, Whence::SeekSet)
                .map_err(|e| restore_err(desc, "lseek", e.into()))?;
        }
        set_async(desc, &fd)?;
        Ok(fd)
    }
}

/// memfd_create, contents, mode, seals.
fn recreate(desc: &FileDesc, m: &Memfd, images: &ImageDir) -> Result<OwnedFd, FileError> {
    let fd = sys::memfd_create(&m.name, libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING)
        .map_err(|e| restore_err(desc, "memfd_create", e))?;
    let raw = m.contents.as_ref().ok_or_else(|| FileError::Invalid {
        id: desc.id,
        detail: "memfd without contents".into(),
    })?;
    let mut file = File::from(fd);
    let mut src = File::open(images.file(&raw.name))
        .map_err(|e| restore_err(desc, format!("open {}", raw.name), e))?;
    let copied =
        io::copy(&mut src, &mut file).map_err(|e| restore_err(desc, "fill the memfd", e))?;
    if copied != m.size {
        return Err(FileError::Invalid {
            id: desc.id,
            detail: format!(
                "{} holds {copied} bytes, the image says {}",
                raw.name, m.size
            ),
        });
    }
    file.set_permissions(fs::Permissions::from_mode(m.mode & 0o7777))
        .map_err(|e| restore_err(desc, "fchmod", e))?;
    if m.seals != 0 {
        sys::add_seals(file.as_fd(), m.seals)
            .map_err(|e| restore_err(desc, format!("F_ADD_SEALS {:#x}", m.seals), e))?;
    }
    Ok(file.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_read_from_links() {
        assert_eq!(name_of("/memfd:hello (deleted)"), "hello");
        assert_eq!(name_of("/memfd: (deleted)"), "");
        assert_eq!(name_of("/memfd:a b (deleted) (deleted)"), "a b (deleted)");
    }
}
