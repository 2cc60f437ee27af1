//! hugetlb memory: which VMAs are hugetlb and of what huge page size, the contents of its
//! shared objects saved and written back without write(2), and the huge pages a restore
//! takes, checked against this host before anything is made.
//!
//! ```text
//! dump     VmFlags "ht" marks a hugetlb VMA; its huge page size is the f_bsize of its
//!          hugetlbfs inode (statfs of /proc/PID/map_files/START-END: HUGETLBFS_MAGIC)
//!          private anonymous ("/anon_hugepage (deleted)", private): an anonymous VMA, its
//!          present pages in the pages image (pagemap marks every 4 KiB of a huge page)
//!          shared anonymous (the same name, shared) and memfds (MFD_HUGETLB): ONE object,
//!          as their ordinary kinds (files/shmem.rs, memfd.rs); the huge pages holding other
//!          than zeros, or present in a shared mapping of the dumping process (pagemap), go to
//!          its contents image (hugetlbfs has no SEEK_DATA: all reads as data)
//!          SysV segments (SHM_HUGETLB): as the others (ipc/shm.rs), their contents so
//!          files on a hugetlbfs mount: by their path, as regular files (their pages stay in
//!          the filesystem), a private mapping's own pages in the pages image
//!          a private mapping of a hugetlb memfd: of the memfd, as a file's, its own pages
//!          (pagemap: not PM_FILE) in the pages image
//!          refused: deleted files on a hugetlbfs mount
//! restore  before anything is made: the huge pages of each size the image takes (each
//!          VMA's reservation, MAP_NORESERVE ones their present pages; each object's pages)
//!          against free_hugepages - resv_hugepages of /sys/kernel/mm/hugepages/hugepages-NkB
//!          objects: made by cryo without a reservation (MAP_NORESERVE, MFD_HUGETLB), their
//!          pages allocated (fallocate) and written through a mapping; the processes' own
//!          mappings reserve the rest, as the originals had
//!          private VMAs: mmap MAP_HUGETLB | log2(size) << MAP_HUGE_SHIFT at their address
//!          (of a file: of the file), filled by pread in the task (never staged for
//!          children, nor filled by userfaultfd: both work in base pages)
//! ```
//!
//! Never mremap a private hugetlb VMA: on this kernel (6.18) moving part of one and
//! unmapping the rest leaks the huge pages reserved for the rest (resv_hugepages stays up
//! after the process is gone; measured). So a piece of a split private mapping is mapped
//! afresh, its file offset in the maps 0.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;

use cryo_proto::image::{
    file_desc::Kind, FileDesc, FileExtent, MmCore, RawFileRef, SysvShm, VmaKind,
};
use nix::unistd::Pid;

use super::error::MemoryError;
use super::PAGE;
use crate::image::ImageDir;
use crate::proc::MapEntry;

/// How /proc/PID/maps names anonymous hugetlb memory, private or shared.
const ANON_NAME: &str = "/anon_hugepage (deleted)";

/// Where the kernel tells the huge pages of each size.
const SYSFS: &str = "/sys/kernel/mm/hugepages";

/// Reads and writes of hugetlb contents go in pieces of this size (a 1 GiB page too).
const CHUNK: usize = 4 << 20;

/// The huge page size of the file open as `file` if it lies on hugetlbfs.
pub fn page_size_of(file: &File) -> io::Result<Option<u64>> {
    let fs = nix::sys::statfs::fstatfs(file)?;
    Ok(of_statfs(&fs))
}

/// The huge page size of the file at `path` (a map_files link, say) if it lies on hugetlbfs.
pub fn page_size_at(path: &Path) -> io::Result<Option<u64>> {
    let fs = nix::sys::statfs::statfs(path)?;
    Ok(of_statfs(&fs))
}

fn of_statfs(fs: &nix::sys::statfs::Statfs) -> Option<u64> {
    (fs.filesystem_type() == nix::sys::statfs::HUGETLBFS_MAGIC).then(|| fs.block_size() as u64)
}

/// Whether VMA `entry` of `pid` is hugetlb memory: anonymous (by its name: the maps show no
/// flags) or of a file on hugetlbfs (statfs of its map_files link).
pub fn is_hugetlb(pid: Pid, entry: &MapEntry) -> bool {
    if entry.name == ANON_NAME {
        return true;
    }
    let link = crate::proc::dir(pid).join(format!("map_files/{:x}-{:x}", entry.start, entry.end));
    entry.ino != 0 && matches!(page_size_at(&link), Ok(Some(_)))
}

/// What hugetlb VMA `entry` of `pid` (`kind` by its maps line) is restored as, or why it is
/// refused.
pub fn vma_kind(pid: Pid, entry: &MapEntry, kind: VmaKind) -> Result<VmaKind, MemoryError> {
    let refuse = |why: &'static str| MemoryError::Hugetlb {
        pid,
        start: entry.start,
        end: entry.end,
        name: entry.name.clone(),
        why,
    };
    match kind {
        _ if entry.name == ANON_NAME && entry.shared => Ok(VmaKind::ShmemAnon),
        _ if entry.name == ANON_NAME => Ok(VmaKind::Anon),
        VmaKind::SysvShm => Ok(kind),
        VmaKind::FileShared | VmaKind::FilePrivate if entry.name.starts_with("/memfd:") => Ok(kind),
        // A file on a hugetlbfs mount: its pages live in the filesystem, as a tmpfs file's
        // do, and it is mapped again by its path (a private mapping's own pages from the
        // pages image).
        VmaKind::FileShared | VmaKind::FilePrivate if entry.name.ends_with(" (deleted)") => Err(
            refuse("a deleted file on a hugetlbfs mount (not supported yet)"),
        ),
        VmaKind::FileShared | VmaKind::FilePrivate => Ok(kind),
        _ => Err(refuse("of a kind cryo does not know (not supported)")),
    }
}

/// The offsets in hugetlbfs file `meta` (pages of `page` bytes) of the huge pages that the
/// shared mappings of it by `pid` have present (pagemap): pages of zeros that are there, not
/// holes. A page present in another process's mapping only is not seen.
pub fn present_pages(pid: Pid, meta: &std::fs::Metadata, page: u64) -> BTreeSet<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut out = BTreeSet::new();
    let dev = (libc::major(meta.dev()), libc::minor(meta.dev()));
    let (Ok(maps), Ok(pagemap)) = (
        crate::proc::maps(pid),
        File::open(crate::proc::dir(pid).join("pagemap")),
    ) else {
        return out;
    };
    for m in maps
        .iter()
        .filter(|m| m.shared && m.ino == meta.ino() && m.dev == dev)
    {
        let mut addr = m.start;
        while addr < m.end {
            let mut pm = [0u8; 8];
            if pagemap.read_exact_at(&mut pm, addr / PAGE * 8).is_ok()
                && u64::from_le_bytes(pm) & super::PM_PRESENT != 0
            {
                out.insert(m.pgoff + (addr - m.start));
            }
            addr += page;
        }
    }
    out
}

/// Saves the huge pages of `src` (a hugetlbfs file of `size` bytes, pages of `page` bytes)
/// that hold other than zeros, or are `present` (offsets), into raw image `name`, back to
/// back: hugetlbfs has no SEEK_DATA (every page reads as data, a hole as zeros), so a page
/// of zeros that no mapping of the dumping process had present comes back as a hole, which
/// reads the same. A check image (no contents written) only measures them.
pub fn save_contents(
    src: &File,
    size: u64,
    page: u64,
    present: &BTreeSet<u64>,
    name: String,
    images: &ImageDir,
) -> io::Result<(RawFileRef, Vec<FileExtent>)> {
    let writing = images.writes_contents();
    let mut out = if writing {
        Some(images.create_raw(&name).map_err(io::Error::other)?)
    } else {
        None
    };
    let mut extents: Vec<FileExtent> = Vec::new();
    let mut buf = vec![0u8; CHUNK.min(page as usize)];
    let mut total = 0u64;
    let mut at = 0u64;
    while at < size {
        let len = page.min(size - at);
        // The page piece by piece: its leading zeros are written only once a piece is not
        // (or at once, for a page that is there).
        let (mut zeros, mut kept) = (0u64, present.contains(&at));
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(buf.len() as u64) as usize;
            src.read_exact_at(&mut buf[..n], at + done)?;
            let blank = buf[..n].iter().all(|&b| b == 0);
            if !kept && blank {
                zeros += n as u64;
            } else {
                if let (false, Some(out)) = (kept, out.as_mut()) {
                    write_zeros(out, zeros)?;
                }
                kept = true;
                if let Some(out) = out.as_mut() {
                    io::Write::write_all(out, &buf[..n])?;
                }
            }
            done += n as u64;
        }
        if kept {
            match extents.last_mut() {
                Some(e) if e.offset + e.len == at => e.len += len,
                _ => extents.push(FileExtent { offset: at, len }),
            }
            total += len;
        }
        at += len;
    }
    let crc32c = match &out {
        Some(out) => crate::image::crc_of_file(out, total)?,
        None => 0,
    };
    Ok((
        RawFileRef {
            name,
            size: total,
            crc32c,
        },
        extents,
    ))
}

fn write_zeros(out: &mut File, mut n: u64) -> io::Result<()> {
    let zeros = vec![0u8; (n as usize).min(CHUNK)];
    while n > 0 {
        let k = (n as usize).min(zeros.len());
        io::Write::write_all(out, &zeros[..k])?;
        n -= k as u64;
    }
    Ok(())
}

/// Writes the extents held back to back in `raw` into `dst`, a hugetlbfs file of `size`
/// bytes: their huge pages allocated first (fallocate, which fails cleanly where a fault
/// would SIGBUS), then written through a mapping of the file that reserves nothing.
pub fn write_contents(
    dst: &File,
    size: u64,
    raw: &RawFileRef,
    extents: &[FileExtent],
    images: &ImageDir,
) -> io::Result<()> {
    if extents.is_empty() {
        return Ok(());
    }
    use nix::fcntl::{fallocate, FallocateFlags};
    for e in extents {
        fallocate(
            dst,
            FallocateFlags::empty(),
            e.offset as libc::off_t,
            e.len as libc::off_t,
        )?;
    }
    // Whole huge pages (the file's size is, but for a SysV segment's: the caller rounds it).
    let len = usize::try_from(size).map_err(io::Error::other)?;
    let mut map = crate::sys::mmap::Mapping::map_file_noreserve(dst, len)?;
    let mut src = images.open_raw(&raw.name).map_err(io::Error::other)?;
    let bytes = map.as_mut_slice();
    for e in extents {
        let range = usize::try_from(e.offset)
            .ok()
            .zip(usize::try_from(e.offset + e.len).ok())
            .filter(|&(_, end)| end <= bytes.len())
            .ok_or_else(|| io::Error::other("extent beyond the object"))?;
        src.read_exact(&mut bytes[range.0..range.1])?;
    }
    Ok(())
}

/// The huge pages of each size (in bytes) that restoring `mms` and the objects of `descs`
/// takes: a VMA's reservation (its length; a MAP_NORESERVE one: its present pages), an
/// object's pages holding data or, if more, those its largest reserving VMA reserves.
/// SysV segments count unless `reattached` says the restore finds them again.
pub fn needs<'a>(
    mms: impl IntoIterator<Item = &'a MmCore>,
    descs: &[FileDesc],
    reattached: impl Fn(&SysvShm) -> bool,
) -> BTreeMap<u64, u64> {
    let mut need: BTreeMap<u64, u64> = BTreeMap::new();
    // Per object (dumped inode): its page size and the most one VMA of it reserves.
    let mut objects: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    let object = |id: u32| {
        descs
            .iter()
            .find(|d| d.id == id)
            .and_then(crate::files::shmem_object_of)
    };
    for mm in mms {
        for vma in mm.vmas.iter().filter(|v| v.hugetlb_page_size != 0) {
            let page = vma.hugetlb_page_size;
            let reserves = vma.map_flags & libc::MAP_NORESERVE as u32 == 0;
            let len = vma.end - vma.start;
            // Private memory reserves its own pages (a file's private mapping too); a file
            // on a hugetlbfs mount holds its pages already.
            if vma.kind == VmaKind::Anon as i32 || vma.kind == VmaKind::FilePrivate as i32 {
                let pages = if reserves {
                    len / page
                } else {
                    let present: u64 = mm
                        .pages
                        .iter()
                        .filter(|r| vma.start <= r.addr && r.addr < vma.end)
                        .map(|r| r.npages * PAGE)
                        .sum();
                    present.div_ceil(page)
                };
                *need.entry(page).or_default() += pages;
            } else if let Some(ino) = object(vma.file_id) {
                let o = objects.entry(ino).or_insert((page, 0));
                if reserves {
                    o.1 = o.1.max(len / page);
                }
            }
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    for desc in descs {
        // A SysV segment made again reserves its whole size (shmget without SHM_NORESERVE);
        // one found again takes nothing more.
        if let Some(Kind::SysvShm(s)) = &desc.kind {
            if s.hugetlb_page_size != 0 && !reattached(s) {
                *need.entry(s.hugetlb_page_size).or_default() +=
                    s.size.div_ceil(s.hugetlb_page_size);
            }
            continue;
        }
        let (page, extents) = match &desc.kind {
            Some(Kind::Memfd(m)) if m.hugetlb_page_size != 0 => (m.hugetlb_page_size, &m.extents),
            Some(Kind::Shmem(s)) if s.hugetlb_page_size != 0 => (s.hugetlb_page_size, &s.extents),
            _ => continue,
        };
        let Some(ino) = crate::files::shmem_object_of(desc) else {
            continue;
        };
        if !seen.insert(ino) {
            continue;
        }
        let held: u64 = extents.iter().map(|e| e.len.div_ceil(page)).sum();
        let reserved = objects.get(&ino).map_or(0, |o| o.1);
        *need.entry(page).or_default() += held.max(reserved);
    }
    need
}

/// Why this host cannot give `pages` huge pages of `page_size` bytes now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shortfall {
    /// It has no huge pages of that size at all (no /sys/kernel/mm/hugepages/hugepages-NkB).
    Missing,
    /// Fewer are free and unreserved than needed.
    Short {
        /// free_hugepages.
        free: u64,
        /// resv_hugepages: free pages promised to mappings already.
        reserved: u64,
    },
}

/// Whether this host can give `pages` huge pages of `page_size` bytes now.
pub fn shortfall(page_size: u64, pages: u64) -> Option<Shortfall> {
    let dir = Path::new(SYSFS).join(format!("hugepages-{}kB", page_size >> 10));
    if !dir.is_dir() {
        return Some(Shortfall::Missing);
    }
    let read = |name: &str| -> u64 {
        std::fs::read_to_string(dir.join(name))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    };
    let (free, reserved) = (read("free_hugepages"), read("resv_hugepages"));
    (free.saturating_sub(reserved) < pages).then_some(Shortfall::Short { free, reserved })
}

/// Refuses, before anything is made, a restore whose hugetlb memory this host cannot hold.
pub fn check_host<'a>(
    mms: impl IntoIterator<Item = &'a MmCore>,
    descs: &[FileDesc],
) -> Result<(), MemoryError> {
    for (page_size, pages) in needs(mms, descs, crate::ipc::shm::still_there) {
        match shortfall(page_size, pages) {
            None => {}
            Some(Shortfall::Missing) => {
                return Err(MemoryError::HugePageSizeMissing { page_size, pages })
            }
            Some(Shortfall::Short { free, reserved }) => {
                return Err(MemoryError::HugePagesShort {
                    page_size,
                    pages,
                    free,
                    reserved,
                })
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cryo_proto::image::{Memfd, PageRun, Vma};

    const HUGE: u64 = 2 << 20;

    #[test]
    fn needs_count_reservations_and_held_pages() {
        let vma = |start: u64, pages: u64, kind: VmaKind, flags: i32, file_id: u32| Vma {
            start,
            end: start + pages * HUGE,
            kind: kind as i32,
            map_flags: flags as u32,
            file_id,
            hugetlb_page_size: HUGE,
            ..Vma::default()
        };
        let base = 1 << 30;
        let mm = MmCore {
            vmas: vec![
                // Private, reserving 3 pages.
                vma(base, 3, VmaKind::Anon, libc::MAP_PRIVATE, 0),
                // Private MAP_NORESERVE, 1 page present of 4.
                vma(
                    base + 8 * HUGE,
                    4,
                    VmaKind::Anon,
                    libc::MAP_PRIVATE | libc::MAP_NORESERVE,
                    0,
                ),
                // A memfd of 2 pages, mapped whole (reserving 2), one page held.
                vma(
                    base + 16 * HUGE,
                    2,
                    VmaKind::FileShared,
                    libc::MAP_SHARED,
                    7,
                ),
            ],
            pages: vec![PageRun {
                addr: base + 9 * HUGE,
                npages: HUGE / PAGE,
                offset: 0,
            }],
            ..MmCore::default()
        };
        let memfd = |id: u32| FileDesc {
            id,
            kind: Some(Kind::Memfd(Memfd {
                ino: 42,
                size: 2 * HUGE,
                hugetlb_page_size: HUGE,
                extents: vec![FileExtent {
                    offset: 0,
                    len: HUGE,
                }],
                ..Memfd::default()
            })),
            ..FileDesc::default()
        };
        // Two descriptions of one memfd count once.
        let got = needs([&mm, &mm], &[memfd(7), memfd(8)], |_| false);
        assert_eq!(got, BTreeMap::from([(HUGE, 2 * (3 + 1) + 2)]));
    }

    #[test]
    fn a_size_this_host_lacks_is_missing() {
        assert_eq!(shortfall(3 << 20, 1), Some(Shortfall::Missing));
    }
}
