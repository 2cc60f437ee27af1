//! Shared memory objects: memfds and shared anonymous memory. One object per inode, however
//! many fds and VMAs of however many processes use it; its contents are saved once, sparse,
//! and at restore it is made ONCE, by cryo, before the tree is forked.
//!
//! ```text
//! dump     the fd (/proc/PID/fd/N) or the VMA (/proc/PID/map_files/START-END) opens the
//!          shmem inode: its dev+ino is the object's identity (a memfd mapped and held by an
//!          fd, or a region shared by a parent and its child after fork, is one object)
//!          SEEK_DATA/SEEK_HOLE -> extents, their bytes back to back in memfd-ID.img or
//!          shmem-ID.img
//! restore  cryo: memfd_create (a memfd) or mmap MAP_SHARED|MAP_ANONYMOUS and an open of its
//!          /proc/self/map_files link (shared anonymous memory: "/dev/zero (deleted)" again,
//!          as the kernel names it), size set, extents written back, held at a slot fd that
//!          every process of the tree inherits while it is created
//!          each process: its fds reopen /proc/self/fd/SLOT with their own flags and offset;
//!          its VMAs map a reopen (O_RDWR if shared and writable, else O_RDONLY) at their offset
//!          cryo: the memfd seals go on once every process is mapped, before any of them runs
//!          (F_SEAL_FUTURE_WRITE would refuse the writable shared mappings made before it)
//! ```

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::{OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use cryo_proto::image::{file_desc::Kind, FileDesc, FileExtent, RawFileRef, Shmem};
use nix::sys::stat::Mode;

use super::kind::{Checking, Dumping, FileKind, MapOpen, Opened, Opening, Seen};
use super::inspect::InodeKey;
use super::open::open_flags;
use super::{describe, restore_err, FileError};
use crate::sys;
use crate::image::ImageDir;

/// Shared anonymous memory: mapped (dumped by `FileTable::add_shmem`), or held by an fd
/// opened through a mapping's /proc/PID/map_files link (zdtm shmemfd): each fd a description
/// of its own on the one object, made once with the mappings' ([`SharedObjects`]).
///
/// [`SharedObjects`]: super::shared::SharedObjects
pub(super) struct SharedAnon;

/// The shared anonymous memory objects the dump has saved, by inode (their contents once).
#[derive(Debug, Default)]
struct Saved(HashMap<InodeKey, Shmem>);

impl FileKind for SharedAnon {
    type Record = Shmem;

    fn record(kind: &Kind) -> Option<&Shmem> {
        match kind {
            Kind::Shmem(s) => Some(s),
            _ => None,
        }
    }

    fn claims(&self, fd: &Dumping<'_>) -> bool {
        matches!(fd.seen, Seen::SharedAnon)
    }

    fn dump(&self, fd: &mut Dumping<'_>) -> Result<Kind, FileError> {
        let Saved(saved) = fd.state.get::<Saved>();
        if let Some(s) = saved.get(&fd.key) {
            return Ok(Kind::Shmem(s.clone()));
        }
        let source = fd.open.proc_path();
        let s = dump(fd.id, fd.open.pid, &source, fd.images)
            .map_err(|e| fd.open.inspect_err("save the shared memory", source.clone(), e))?;
        saved.insert(fd.key, s.clone());
        Ok(Kind::Shmem(s))
    }

    fn validate(&self, desc: &FileDesc, s: &Shmem, cx: &mut Checking<'_>) -> Result<(), FileError> {
        validate(desc, s, cx.images)
    }

    fn open(&self, desc: &FileDesc, _s: &Shmem, cx: &mut Opening<'_>) -> Result<Opened, FileError> {
        let fd = reopen(desc, &cx.opts.shared, open_flags(desc.flags)).unwrap_or_else(|| {
            Err(FileError::Invalid {
                id: desc.id,
                detail: format!("{} is held but cryo did not make it", describe(desc)),
            })
        })?;
        if desc.pos != 0 {
            nix::unistd::lseek(&fd, desc.pos as i64, nix::unistd::Whence::SeekSet)
                .map_err(|e| restore_err(desc, "seek the shared memory", e.into()))?;
        }
        Ok(Opened::Now(fd))
    }

    fn open_for_mapping(
        &self,
        desc: &FileDesc,
        _s: &Shmem,
        to: &MapOpen<'_>,
    ) -> Result<OwnedFd, FileError> {
        open_for_mapping(desc, to.writable, to.shared)
    }

    fn describe(&self, _desc: &FileDesc, s: &Shmem) -> String {
        format!("shared anonymous memory ({} bytes)", s.size)
    }
}

/// Whether a file whose link reads `path` " (deleted)" is shared anonymous memory: named
/// "/dev/zero" by the kernel, a regular file of the internal shmem mount (whose device
/// memfds share), not a file some tmpfs /dev held under that name.
pub(super) fn is_shared_anon(path: &str, meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    path == "/dev/zero" && sys::memfd::internal_shmem_dev().is_some_and(|dev| dev == meta.dev())
}

/// The contents image of the shared anonymous memory first dumped as description `id`.
fn image_name(id: u32) -> String {
    format!("shmem-{id}.img")
}

/// The data extents of `src` (a shmem file of `size` bytes), in offset order.
fn extents(src: &File, size: u64) -> io::Result<Vec<FileExtent>> {
    use nix::unistd::{lseek, Whence};
    let seek = |off: u64, whence| lseek(src, off as libc::off_t, whence).map(|r| r as u64);
    let mut out = Vec::new();
    let mut off = 0;
    while off < size {
        let start = match seek(off, Whence::SeekData) {
            Ok(start) => start,
            Err(nix::errno::Errno::ENXIO) => break,
            Err(e) => return Err(e.into()),
        };
        let end = seek(start, Whence::SeekHole)?.min(size);
        if end > start {
            out.push(FileExtent {
                offset: start,
                len: end - start,
            });
        }
        off = end;
    }
    Ok(out)
}

/// Saves the data of `src` (a shmem file of `size` bytes) into the raw image `name`: its
/// extents back to back. Holes (pages never touched) take no room.
pub(crate) fn save_extents(
    src: &File,
    size: u64,
    name: String,
    images: &ImageDir,
) -> io::Result<(RawFileRef, Vec<FileExtent>)> {
    let extents = extents(src, size)?;
    if !images.writes_contents() {
        // A check image: what a full dump would write, not copied (no crc).
        let size = extents.iter().map(|e| e.len).sum();
        let raw = RawFileRef {
            name,
            size,
            crc32c: 0,
        };
        return Ok((raw, extents));
    }
    let mut out = images.create_raw(&name).map_err(io::Error::other)?;
    let mut total = 0;
    for e in &extents {
        let mut from = src.try_clone()?;
        from.seek(SeekFrom::Start(e.offset))?;
        // A kernel-side copy where it can (sendfile/splice): one copy.
        let copied = io::copy(&mut from.take(e.len), &mut out)?;
        if copied != e.len {
            return Err(io::Error::other(format!(
                "read {copied} bytes of the {} at offset {} (the object shrank)",
                e.len, e.offset
            )));
        }
        total += copied;
    }
    let crc32c = crate::image::crc_of_file(&out, total)?;
    Ok((
        RawFileRef {
            name,
            size: total,
            crc32c,
        },
        extents,
    ))
}

/// Checks that `extents` lie inside an object of `size` bytes, in order, and that their data
/// is what `raw` holds (size and crc32c).
pub(crate) fn check_extents(
    desc: &FileDesc,
    size: u64,
    raw: &RawFileRef,
    extents: &[FileExtent],
    images: &ImageDir,
) -> Result<(), FileError> {
    let invalid = |detail: String| FileError::Invalid {
        id: desc.id,
        detail: format!("{}: {detail}", describe(desc)),
    };
    let mut end = 0;
    let mut total = 0u64;
    for e in extents {
        let stop = e.offset.checked_add(e.len).filter(|&s| s <= size);
        match stop {
            Some(stop) if e.offset >= end && e.len > 0 => end = stop,
            _ => {
                return Err(invalid(format!(
                    "data extent {}+{} overlaps another or lies beyond its {size} bytes",
                    e.offset, e.len
                )))
            }
        }
        total += e.len;
    }
    if total != raw.size {
        return Err(invalid(format!(
            "its extents hold {total} bytes but {} holds {}",
            raw.name, raw.size
        )));
    }
    images.check_raw(raw).map_err(|e| FileError::Contents {
        id: desc.id,
        source: Box::new(e),
    })?;
    Ok(())
}

/// Writes the extents held back to back in `raw` into `dst` at their offsets.
pub(crate) fn write_extents(
    dst: &File,
    raw: &RawFileRef,
    extents: &[FileExtent],
    images: &ImageDir,
) -> io::Result<()> {
    let mut src = images.open_raw(&raw.name).map_err(io::Error::other)?;
    for e in extents {
        let mut to = dst.try_clone()?;
        to.seek(SeekFrom::Start(e.offset))?;
        let copied = io::copy(&mut (&mut src).take(e.len), &mut to)?;
        if copied != e.len {
            return Err(io::Error::other(format!(
                "{} ends inside the extent at offset {}",
                raw.name, e.offset
            )));
        }
    }
    Ok(())
}

/// Dumps the shared anonymous memory behind `link` (/proc/PID/map_files/START-END of one of
/// its VMAs, `pid`'s), first met as description `id`.
pub(super) fn dump(
    id: u32,
    pid: nix::unistd::Pid,
    link: &Path,
    images: &ImageDir,
) -> io::Result<Shmem> {
    let file = File::open(link)?;
    let meta = file.metadata()?;
    // Shared anonymous hugetlb memory: a hugetlbfs file (memory/hugetlb.rs).
    let huge = crate::memory::hugetlb::page_size_of(&file)?;
    let (contents, extents) = match huge {
        Some(page) => crate::memory::hugetlb::save_contents(
            &file,
            meta.len(),
            page,
            &crate::memory::hugetlb::present_pages(pid, &meta, page),
            image_name(id),
            images,
        )?,
        None => save_extents(&file, meta.len(), image_name(id), images)?,
    };
    Ok(Shmem {
        ino: std::os::unix::fs::MetadataExt::ino(&meta),
        size: meta.len(),
        contents: Some(contents),
        extents,
        hugetlb_page_size: huge.unwrap_or(0),
    })
}

/// Restore side, before any process exists: the contents are there and fit the object.
fn validate(desc: &FileDesc, s: &Shmem, images: &ImageDir) -> Result<(), FileError> {
    let raw = s.contents.as_ref().ok_or_else(|| FileError::Invalid {
        id: desc.id,
        detail: "shared anonymous memory without a contents image".into(),
    })?;
    if s.size == 0 {
        return Err(FileError::Invalid {
            id: desc.id,
            detail: "shared anonymous memory of 0 bytes".into(),
        });
    }
    check_extents(desc, s.size, raw, &s.extents, images)
}

/// New shared anonymous memory holding the contents of `s`: the shmem file of a fresh
/// MAP_SHARED|MAP_ANONYMOUS mapping, opened through /proc/self/map_files (the kernel names
/// it "/dev/zero (deleted)", as it did the original), then unmapped.
/// Shared anonymous hugetlb memory is made in huge pages of its size, its contents written
/// through a mapping (memory/hugetlb.rs).
pub(super) fn create_anon(s: &Shmem, images: &ImageDir) -> io::Result<OwnedFd> {
    let huge = s.hugetlb_page_size;
    let fd = if huge != 0 {
        sys::memfd::shmem_anon_hugetlb(s.size, huge)?
    } else {
        sys::memfd::shmem_anon(s.size)?
    };
    let file = File::from(fd);
    match &s.contents {
        Some(raw) if huge != 0 => {
            crate::memory::hugetlb::write_contents(&file, s.size, raw, &s.extents, images)?
        }
        Some(raw) => write_extents(&file, raw, &s.extents, images)?,
        None => {}
    }
    Ok(file.into())
}

/// The identity of a shared memory object in an image: the dumped inode number.
pub(crate) fn object_of(desc: &FileDesc) -> Option<u64> {
    match &desc.kind {
        Some(Kind::Memfd(m)) => Some(m.ino),
        Some(Kind::Shmem(s)) => Some(s.ino),
        _ => None,
    }
}

/// Where each process finds the objects: dumped inode -> slot fd (inherited from cryo).
pub type Slots = HashMap<u64, RawFd>;

/// The slot of the object of `desc`; None when `slots` does not hold it (a restore of one
/// task on its own makes its memfds itself).
pub(super) fn slot(desc: &FileDesc, slots: &Slots) -> Option<RawFd> {
    slots.get(&object_of(desc)?).copied()
}

/// Reopens the object of `desc` held at its slot, with open(2) `flags`; None when `slots`
/// does not hold it (a restore of one task on its own makes its memfds itself).
pub(super) fn reopen(
    desc: &FileDesc,
    slots: &Slots,
    flags: nix::fcntl::OFlag,
) -> Option<Result<OwnedFd, FileError>> {
    let slot = slot(desc, slots)?;
    let path = PathBuf::from(format!("/proc/self/fd/{slot}"));
    Some(
        nix::fcntl::open(&path, flags, Mode::empty())
            .map_err(|e| restore_err(desc, "reopen the shared memory object", e.into())),
    )
}

/// Opens the object of `desc` for a mapping (O_RDWR if `writable`, else O_RDONLY).
pub(super) fn open_for_mapping(
    desc: &FileDesc,
    writable: bool,
    slots: &Slots,
) -> Result<OwnedFd, FileError> {
    let access = if writable {
        libc::O_RDWR
    } else {
        libc::O_RDONLY
    };
    reopen(desc, slots, open_flags(access as u32)).unwrap_or_else(|| {
        Err(FileError::Invalid {
            id: desc.id,
            detail: format!(
                "{} is mapped but cryo did not make it before the processes",
                describe(desc)
            ),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn extents_skip_holes() {
        let fd = sys::memfd::memfd_create("extents", libc::MFD_CLOEXEC).unwrap();
        let file = File::from(fd);
        file.set_len(64 << 10).unwrap();
        file.write_all_at(b"a", 4096).unwrap();
        file.write_all_at(b"b", 40960 + 100).unwrap();
        let got = extents(&file, 64 << 10).unwrap();
        assert_eq!(
            got,
            vec![
                FileExtent {
                    offset: 4096,
                    len: 4096
                },
                FileExtent {
                    offset: 40960,
                    len: 4096
                }
            ]
        );
        let mut buf = [0u8; 1];
        file.read_exact_at(&mut buf, 40960 + 100).unwrap();
        assert_eq!(&buf, b"b");
    }
}
