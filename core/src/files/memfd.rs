//! memfds: anonymous shmem files, saved like deleted files.
//!
//! ```text
//! dump     /proc/PID/fd/N reads "/memfd:NAME (deleted)" (a VMA: /proc/PID/map_files/S-E)
//!          data extents copied into memfd-ID.img (once per inode), F_GET_SEALS
//! restore  memfd_create(NAME, MFD_ALLOW_SEALING) once per inode (by cryo for a whole tree:
//!          shmem.rs), size set, contents written back, mode set, seals added last; the
//!          description standing for memfd_create's (made_by_memfd_create) is the made one's
//!          own (a reopen for writing would count as a writer: execveat fails ETXTBSY), every
//!          other description a reopen of it through /proc/self/fd (its own flags and offset)
//! ```
//!
//! A memfd without MFD_ALLOW_SEALING reads F_SEAL_SEAL, so it is recreated sealable and
//! sealed with F_SEAL_SEAL: the same thing. A hugetlb memfd (MFD_HUGETLB) is made again in
//! huge pages of its size, its contents saved and written back as memory/hugetlb.rs does.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use cryo_proto::image::{file_desc::Kind, FileDesc, Memfd};
use nix::fcntl::{FcntlArg, OFlag};
use nix::sys::stat::Mode;
use nix::unistd::{Pid, Whence};

use super::error::mapped_step;
use super::inspect::{InodeKey, OpenFd};
use super::kind::{Checking, Dumping, FileKind, KindState, MapOpen, Opened, Seen, Opening};
use super::open::{open_flags, set_async};
use super::{restore_err, shmem, FileError};
use crate::sys;
use crate::image::ImageDir;

/// memfds, hugetlb ones too.
pub(super) struct Memfds;

/// The memfds a dump has saved, by inode: their contents are saved once; and the inodes one
/// of whose descriptions already stands for memfd_create's.
#[derive(Debug, Default)]
struct Saved(HashMap<InodeKey, Memfd>, HashSet<InodeKey>);

impl FileKind for Memfds {
    type Record = Memfd;

    fn record(kind: &Kind) -> Option<&Memfd> {
        match kind {
            Kind::Memfd(m) => Some(m),
            _ => None,
        }
    }

    fn claims(&self, fd: &Dumping<'_>) -> bool {
        matches!(fd.seen, Seen::Memfd)
    }

    fn dump(&self, fd: &mut Dumping<'_>) -> Result<Kind, FileError> {
        let Saved(saved, creators) = fd.state.get::<Saved>();
        let mut m = dump(fd.id, fd.open, fd.meta, fd.images, saved)?;
        let read_write = fd.open.flags & libc::O_ACCMODE as u32 == libc::O_RDWR as u32;
        m.made_by_memfd_create = read_write && creators.insert(InodeKey::of(fd.meta));
        Ok(Kind::Memfd(m))
    }

    fn validate(&self, desc: &FileDesc, m: &Memfd, cx: &mut Checking<'_>) -> Result<(), FileError> {
        validate(desc, m, cx.images)
    }

    fn open(&self, desc: &FileDesc, m: &Memfd, cx: &mut Opening<'_>) -> Result<Opened, FileError> {
        let (images, shared) = (cx.images, &cx.opts.shared);
        cx.state
            .get::<Made>()
            .open(desc, m, images, shared)
            .map(Opened::Now)
    }

    fn open_for_mapping(
        &self,
        desc: &FileDesc,
        _m: &Memfd,
        to: &MapOpen<'_>,
    ) -> Result<OwnedFd, FileError> {
        shmem::open_for_mapping(desc, to.writable, to.shared)
    }

    fn describe(&self, _desc: &FileDesc, m: &Memfd) -> String {
        format!("memfd:{}", m.name)
    }
}

/// The contents image of the memfd first dumped as description `id`.
fn image_name(id: u32) -> String {
    format!("memfd-{id}.img")
}

/// NAME of "/memfd:NAME (deleted)".
fn name_of(link: &str) -> &str {
    let rest = link.strip_prefix("/memfd:").unwrap_or(link);
    rest.strip_suffix(" (deleted)").unwrap_or(rest)
}

/// Why a memfd could not be recorded.
enum Failure {
    Step(&'static str, io::Error),
    /// Its extended attributes or inode flags (inode_attrs.rs).
    Attrs(super::inode_attrs::ReadAttrsError),
}

/// The record of the memfd open at `source` (an fd or a map_files link of `pid` whose text is
/// `link`), first met as description `id`: name, seals, mode and contents, the contents image
/// written once per inode (`saved` remembers the records).
fn record(
    id: u32,
    pid: Pid,
    source: &Path,
    link: &str,
    meta: &fs::Metadata,
    images: &ImageDir,
    saved: &mut HashMap<InodeKey, Memfd>,
) -> Result<Memfd, Failure> {
    let key = InodeKey::of(meta);
    if let Some(m) = saved.get(&key) {
        return Ok(m.clone());
    }
    // O_NOATIME: the copy leaves the access time as the process left it (--leave-running).
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOATIME)
        .open(source)
        .map_err(|e| Failure::Step("open", e))?;
    let huge = crate::memory::hugetlb::page_size_of(&file).map_err(|e| Failure::Step("fstatfs", e))?;
    let seals = sys::memfd::get_seals(file.as_fd()).map_err(|e| Failure::Step("F_GET_SEALS", e))?;
    let (contents, extents) = match huge {
        Some(page) => crate::memory::hugetlb::save_contents(
            &file,
            meta.size(),
            page,
            &crate::memory::hugetlb::present_pages(pid, meta, page),
            image_name(id),
            images,
        ),
        None => shmem::save_extents(&file, meta.size(), image_name(id), images),
    }
    .map_err(|e| Failure::Step("save the memfd contents", e))?;
    let attrs = super::inode_attrs::read(source, true).map_err(Failure::Attrs)?;
    let (atime_ns, mtime_ns) = super::regular::times_ns(meta);
    let m = Memfd {
        uid: meta.uid(),
        gid: meta.gid(),
        atime_ns,
        mtime_ns,
        attrs: Some(attrs),
        name: name_of(link).to_string(),
        size: meta.size(),
        seals,
        contents: Some(contents),
        ino: meta.ino(),
        mode: meta.mode(),
        sparse: true,
        extents,
        hugetlb_page_size: huge.unwrap_or(0),
        made_by_memfd_create: false,
    };
    saved.insert(key, m.clone());
    Ok(m)
}

/// Dumps memfd fd `open` (description `id`).
fn dump(
    id: u32,
    open: &OpenFd,
    meta: &fs::Metadata,
    images: &ImageDir,
    saved: &mut HashMap<InodeKey, Memfd>,
) -> Result<Memfd, FileError> {
    let path = open.proc_path();
    record(id, open.pid, &path, &open.link, meta, images, saved).map_err(|f| match f {
        Failure::Step(op, e) => open.inspect_err(op, path.clone(), e),
        Failure::Attrs(e) => open.dump_err(format!("memfd {}: {e}", open.link)),
    })
}

/// Dumps the memfd a VMA of `pid` maps (`link`: its /proc/PID/map_files entry, reading
/// `text`), as description `id`.
pub(super) fn dump_mapped(
    id: u32,
    pid: Pid,
    link: &Path,
    text: &str,
    meta: &fs::Metadata,
    images: &ImageDir,
    state: &mut KindState,
) -> Result<Memfd, FileError> {
    let saved = &mut state.get::<Saved>().0;
    record(id, pid, link, text, meta, images, saved).map_err(|f| match f {
        Failure::Step(step, e) => mapped_step(pid, link, step)(e),
        Failure::Attrs(e) => FileError::Mapped {
            pid,
            link: link.to_owned(),
            detail: format!("memfd {text}: {e}"),
        },
    })
}

/// Restore side, before any process exists: the contents image is there, of the right size
/// and crc.
fn validate(desc: &FileDesc, m: &Memfd, images: &ImageDir) -> Result<(), FileError> {
    let raw = m.contents.as_ref().ok_or_else(|| FileError::Invalid {
        id: desc.id,
        detail: format!("memfd:{} has no contents image", m.name),
    })?;
    if m.sparse {
        return shmem::check_extents(desc, m.size, raw, &m.extents, images);
    }
    if raw.size != m.size {
        return Err(FileError::Invalid {
            id: desc.id,
            detail: format!(
                "memfd:{} was {} bytes but its contents image {} holds {}",
                m.name, m.size, raw.name, raw.size
            ),
        });
    }
    images.check_raw(raw).map_err(|e| FileError::Contents {
        id: desc.id,
        source: Box::new(e),
    })?;
    Ok(())
}

/// The memfds recreated by one restore call, by dumped inode number.
#[derive(Debug, Default)]
struct Made {
    by_ino: HashMap<u64, OwnedFd>,
}

impl Made {
    /// A description of memfd `m`: a reopen of the object cryo made for the tree (`slots`),
    /// else of the memfd recreated here on first use; with the description's flags and offset.
    pub(super) fn open(
        &mut self,
        desc: &FileDesc,
        m: &Memfd,
        images: &ImageDir,
        slots: &shmem::Slots,
    ) -> Result<OwnedFd, FileError> {
        let fd = match (m.made_by_memfd_create, shmem::slot(desc, slots)) {
            (true, Some(slot)) => own_description(desc, slot)?,
            (false, Some(_)) => shmem::reopen(desc, slots, open_flags(desc.flags))
                .expect("the slot is there")?,
            (own, None) => {
                let holder = match self.by_ino.entry(m.ino) {
                    std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::hash_map::Entry::Vacant(v) => {
                        v.insert(recreate(desc, m, images, true)?)
                    }
                };
                if own {
                    own_description(desc, holder.as_raw_fd())?
                } else {
                    let path = PathBuf::from(format!("/proc/self/fd/{}", holder.as_raw_fd()));
                    nix::fcntl::open(Path::new(&path), open_flags(desc.flags), Mode::empty())
                        .map_err(|e| restore_err(desc, "reopen the memfd", e.into()))?
                }
            }
        };
        if desc.pos != 0 || m.made_by_memfd_create {
            nix::unistd::lseek(&fd, desc.pos as i64, Whence::SeekSet)
                .map_err(|e| restore_err(desc, "lseek", e.into()))?;
        }
        set_async(desc, &fd)?;
        Ok(fd)
    }
}

/// Description `desc` as the description of the memfd made again at `made` (memfd_create's
/// own, which is read-write and counts as no writer), with the status flags `desc` had (its
/// offset is the caller's).
fn own_description(desc: &FileDesc, made: RawFd) -> Result<OwnedFd, FileError> {
    let fd = sys::fd::dup_at_least(sys::fd::borrow_raw(made), 0)
        .map_err(|e| restore_err(desc, "F_DUPFD_CLOEXEC of the memfd", e))?;
    let settable = libc::O_APPEND | libc::O_NONBLOCK | libc::O_NOATIME | libc::O_DIRECT;
    let status = desc.flags as i32 & settable;
    if status != 0 {
        nix::fcntl::fcntl(&fd, FcntlArg::F_SETFL(OFlag::from_bits_retain(status)))
            .map_err(|e| restore_err(desc, "F_SETFL", e.into()))?;
    }
    Ok(fd)
}

/// memfd_create, size, contents, mode, and the seals if `seal` (else the caller adds them
/// once every mapping of it exists).
pub(super) fn recreate(
    desc: &FileDesc,
    m: &Memfd,
    images: &ImageDir,
    seal: bool,
) -> Result<OwnedFd, FileError> {
    let mut flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    if m.hugetlb_page_size != 0 {
        flags |= libc::MFD_HUGETLB
            | sys::mmap::hugetlb_size_flag(m.hugetlb_page_size) as libc::c_uint;
    }
    let fd = sys::memfd::memfd_create(&m.name, flags)
        .map_err(|e| restore_err(desc, "memfd_create", e))?;
    let raw = m.contents.as_ref().ok_or_else(|| FileError::Invalid {
        id: desc.id,
        detail: "memfd without contents".into(),
    })?;
    let mut file = File::from(fd);
    if m.sparse {
        file.set_len(m.size)
            .map_err(|e| restore_err(desc, "ftruncate", e))?;
        // hugetlbfs has no write(2): its pages are written through a mapping.
        if m.hugetlb_page_size != 0 {
            crate::memory::hugetlb::write_contents(&file, m.size, raw, &m.extents, images)
        } else {
            shmem::write_extents(&file, raw, &m.extents, images)
        }
        .map_err(|e| restore_err(desc, "fill the memfd", e))?;
    } else {
        let mut src = images
            .open_raw(&raw.name)
            .map_err(io::Error::other)
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
    }
    // Owner first: chown clears set-id bits.
    crate::task::userns::chown_as_dumped(file.as_fd(), m.uid, m.gid)
        .map_err(|e| restore_err(desc, format!("give it its owner {}:{}", m.uid, m.gid), e.into()))?;
    file.set_permissions(fs::Permissions::from_mode(m.mode & 0o7777))
        .map_err(|e| restore_err(desc, "fchmod", e))?;
    // Its times once written (an older image has none: the restore's then).
    if m.mtime_ns != 0 {
        nix::sys::stat::futimens(
            file.as_fd(),
            &super::regular::timespec_of_ns(m.atime_ns),
            &super::regular::timespec_of_ns(m.mtime_ns),
        )
        .map_err(|e| restore_err(desc, "give it its times", e.into()))?;
    }
    if let Some(attrs) = &m.attrs {
        super::inode_attrs::give(file.as_fd(), attrs)
            .map_err(|e| restore_err(desc, "give it its extended attributes and inode flags", e))?;
    }
    if seal && m.seals != 0 {
        sys::memfd::add_seals(file.as_fd(), m.seals)
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
