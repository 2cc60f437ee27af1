//! Memory probes, through the engine's own code: the pagemap reader of a dump, userfaultfd as
//! a restore fills pages, memfds as files/ recreates them, the vdso blocks a restore moves;
//! and the kernel features cryo does not use yet (PAGEMAP_SCAN, uffd-wp dirty tracking,
//! soft-dirty bits), reported for what they would give.

use std::fs;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;

use cryo_proto::image::{Vma, VmaKind};

use super::error::{at, CheckError, Outcome};
use crate::memory::{self, PAGE};
use crate::sys::mmap::Mapping;
use crate::sys::pagemap::{self, PageRegion, Scan};
use crate::sys::uffd::{self, Userfault};

/// Names of the `UFFD_FEATURE_*` bits.
const UFFD_FEATURES: &[(u64, &str)] = &[
    (1 << 0, "PAGEFAULT_FLAG_WP"),
    (1 << 1, "EVENT_FORK"),
    (1 << 2, "EVENT_REMAP"),
    (1 << 3, "EVENT_REMOVE"),
    (1 << 4, "MISSING_HUGETLBFS"),
    (1 << 5, "MISSING_SHMEM"),
    (1 << 6, "EVENT_UNMAP"),
    (1 << 7, "SIGBUS"),
    (1 << 8, "THREAD_ID"),
    (1 << 9, "MINOR_HUGETLBFS"),
    (1 << 10, "MINOR_SHMEM"),
    (1 << 11, "EXACT_ADDRESS"),
    (1 << 12, "WP_HUGETLBFS_SHMEM"),
    (1 << 13, "WP_UNPOPULATED"),
    (1 << 14, "POISON"),
    (1 << 15, "WP_ASYNC"),
    (1 << 16, "MOVE"),
];
use crate::sys::uffd::UFFD_FEATURE_WP_ASYNC;

/// "NAME N page(s)".
fn pages(name: &str, n: u64) -> String {
    format!("{name} {n} page{}", if n == 1 { "" } else { "s" })
}

/// A private mapping of `n` fresh pages, the ones of `written` written to.
fn mapping_with(n: usize, written: &[usize]) -> Outcome<Mapping> {
    let mut map = Mapping::anonymous(n * PAGE as usize, false).map_err(at("mmap"))?;
    for &page in written {
        map.write_at(page * PAGE as usize, &[1])
            .map_err(at("write a page"))?;
    }
    Ok(map)
}

/// The kernel's [vvar]/[vvar_vclock]/[vdso] blocks, classified as a dump does.
pub(super) fn probe_vdso() -> Outcome {
    let me = nix::unistd::getpid();
    let maps = crate::proc::maps(me).map_err(at("/proc/self/maps"))?;
    let mut block: Vec<(&str, u64, u64)> = Vec::new();
    let mut parts = Vec::new();
    for m in &maps {
        let kind = memory::classify(m);
        if !memory::is_special(kind) {
            continue;
        }
        parts.push(pages(&m.name, (m.end - m.start) / PAGE));
        if kind != VmaKind::Vsyscall {
            block.push((&m.name, m.start, m.end));
        }
    }
    if !block.iter().any(|(n, ..)| *n == "[vdso]") {
        return Err(CheckError::unexpected(
            "/proc/self/maps",
            "no [vdso]".to_string(),
        ));
    }
    block.sort_by_key(|(_, s, _)| *s);
    let contiguous = block.windows(2).all(|w| w[0].2 == w[1].1);
    if let (Some(first), Some(last)) = (block.first(), block.last()) {
        parts.push(format!(
            "block of {} pages at {:#x}{}",
            (last.2 - first.1) / PAGE,
            first.1,
            if contiguous { "" } else { " NOT contiguous" }
        ));
    }
    Ok(parts.join(", "))
}

/// The pagemap reader of a dump on a mapping of ours with pages 0 and 2 written.
pub(super) fn probe_pagemap() -> Outcome {
    let map = mapping_with(4, &[0, 2])?;
    let vma = Vma {
        start: map.start(),
        end: map.start() + map.len() as u64,
        kind: VmaKind::Anon as i32,
        ..Vma::default()
    };
    let runs = memory::dump::page_runs(nix::unistd::getpid(), &[vma])
        .map_err(at("read /proc/self/pagemap"))?;
    let found: Vec<u64> = runs.iter().map(|r| (r.addr - map.start()) / PAGE).collect();
    if found != [0, 2] || runs.iter().any(|r| r.npages != 1) {
        return Err(CheckError::unexpected(
            "pagemap",
            format!("runs {runs:?} of a 4-page mapping with pages 0 and 2 written"),
        ));
    }
    Ok("the 2 written pages of a 4-page mapping found, as a dump finds them".to_string())
}

/// A page copied into a registered range of ours, as a restore fills a task's memory.
pub(super) fn probe_userfaultfd() -> Outcome {
    let fd = uffd::userfaultfd(libc::O_CLOEXEC).map_err(at("userfaultfd"))?;
    let (uffd, features) = Userfault::with_features(fd, 0).map_err(at("UFFDIO_API"))?;
    let map = mapping_with(1, &[])?;
    let len = map.len() as u64;
    uffd.register(map.start(), len)
        .map_err(at("UFFDIO_REGISTER missing"))?;
    let page = vec![0xa5u8; map.len()];
    uffd.copy(map.start(), &page).map_err(at("UFFDIO_COPY"))?;
    uffd.unregister(map.start(), len)
        .map_err(at("UFFDIO_UNREGISTER"))?;
    if map.as_slice() != page.as_slice() {
        return Err(CheckError::unexpected(
            "UFFDIO_COPY",
            "the page does not hold what was copied".to_string(),
        ));
    }
    let names: Vec<&str> = UFFD_FEATURES
        .iter()
        .filter(|(bit, _)| features & bit != 0)
        .map(|(_, n)| *n)
        .collect();
    Ok(format!(
        "a page copied in with UFFDIO_COPY; features {features:#x}: {}",
        names.join(" ")
    ))
}

/// Opens /proc/self/pagemap.
fn open_pagemap() -> Outcome<fs::File> {
    fs::File::open("/proc/self/pagemap").map_err(at("/proc/self/pagemap"))
}

/// Pages covered by the regions, and the page index of the first one relative to `base`.
fn pages_in(regions: &[PageRegion], base: u64) -> (u64, Option<u64>) {
    let total = regions.iter().map(|r| (r.end - r.start) / PAGE).sum();
    (total, regions.first().map(|r| (r.start - base) / PAGE))
}

/// PAGEMAP_SCAN finding present pages (cryo reads pagemap entries instead).
pub(super) fn probe_pagemap_scan() -> Outcome {
    let pm = open_pagemap()?;
    let map = mapping_with(4, &[0, 2])?;
    let mut regions = [PageRegion::default(); 4];
    let scan = Scan {
        start: map.start(),
        end: map.start() + map.len() as u64,
        category_mask: pagemap::PAGE_IS_PRESENT,
        return_mask: pagemap::PAGE_IS_PRESENT,
        ..Scan::default()
    };
    let n = pagemap::scan(pm.as_fd(), scan, &mut regions).map_err(at("PAGEMAP_SCAN"))?;
    let (found, _) = pages_in(&regions[..n], map.start());
    if n != 2 || found != 2 {
        return Err(CheckError::unexpected(
            "PAGEMAP_SCAN",
            format!("{n} regions, {found} pages present; expected 2 and 2"),
        ));
    }
    Ok("present pages of a 4-page mapping found in one ioctl".to_string())
}

/// uffd-wp async + PAGEMAP_SCAN written pages: what iterative pre-dumps would track.
pub(super) fn probe_dirty_tracking() -> Outcome {
    let pm = open_pagemap()?;
    let fd = uffd::userfaultfd(libc::O_CLOEXEC | libc::O_NONBLOCK).map_err(at("userfaultfd"))?;
    let (uffd, _) =
        Userfault::with_features(fd, UFFD_FEATURE_WP_ASYNC).map_err(at("UFFDIO_API WP_ASYNC"))?;
    let mut map = mapping_with(4, &[0, 1, 2, 3])?;
    uffd.register_write_protect(map.start(), map.len() as u64)
        .map_err(at("UFFDIO_REGISTER WP"))?;
    let mut regions = [PageRegion::default(); 4];
    let mut scan = Scan {
        flags: pagemap::PM_SCAN_WP_MATCHING | pagemap::PM_SCAN_CHECK_WPASYNC,
        start: map.start(),
        end: map.start() + map.len() as u64,
        category_mask: pagemap::PAGE_IS_WRITTEN,
        return_mask: pagemap::PAGE_IS_WRITTEN,
        ..Scan::default()
    };
    pagemap::scan(pm.as_fd(), scan, &mut regions).map_err(at("PAGEMAP_SCAN write-protect"))?;
    map.write_at(2 * PAGE as usize, &[2])
        .map_err(at("write a page"))?;
    scan.flags = 0;
    let n = pagemap::scan(pm.as_fd(), scan, &mut regions).map_err(at("PAGEMAP_SCAN"))?;
    match pages_in(&regions[..n], map.start()) {
        (1, Some(2)) => Ok("after write-protecting 4 pages, the 1 written page is reported".into()),
        (found, first) => Err(CheckError::unexpected(
            "PAGEMAP_SCAN",
            format!("{found} pages written from page {first:?}, expected page 2 only"),
        )),
    }
}

/// The soft-dirty bit of pagemap (CRIU's tracking; cryo does not use it).
pub(super) fn probe_soft_dirty() -> Outcome {
    let pm = open_pagemap()?;
    let map = mapping_with(1, &[0])?;
    let mut entry = [0u8; 8];
    pm.read_exact_at(&mut entry, map.start() / PAGE * 8)
        .map_err(at("read /proc/self/pagemap"))?;
    let entry = u64::from_ne_bytes(entry);
    if entry & (1 << 63) == 0 {
        return Err(CheckError::unexpected(
            "pagemap",
            "a written page is not present".to_string(),
        ));
    }
    if entry & (1 << 55) == 0 {
        return Err(CheckError::unexpected(
            "pagemap",
            "bit 55 clear on a freshly written page: kernel without CONFIG_MEM_SOFT_DIRTY"
                .to_string(),
        ));
    }
    Ok("pagemap bit 55 set on a freshly written page".to_string())
}

/// A sealable memfd created, sized, written and sealed the way files/ restores one.
pub(super) fn probe_memfd() -> Outcome {
    use crate::sys::memfd;
    let fd = memfd::memfd_create("cryo-check", libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING)
        .map_err(at("memfd_create"))?;
    nix::unistd::ftruncate(&fd, 8192).map_err(at("ftruncate"))?;
    memfd::add_seals(fd.as_fd(), libc::F_SEAL_SHRINK as u32).map_err(at("F_ADD_SEALS"))?;
    let seals = memfd::get_seals(fd.as_fd()).map_err(at("F_GET_SEALS"))?;
    let f = fs::File::from(fd);
    f.write_all_at(b"cryo", 4096).map_err(at("pwrite"))?;
    let size = f.metadata().map_err(at("fstat"))?.len();
    if size != 8192 || seals & libc::F_SEAL_SHRINK as u32 == 0 {
        return Err(CheckError::unexpected(
            "memfd",
            format!("size {size}, seals {seals:#x}; expected 8192 and F_SEAL_SHRINK"),
        ));
    }
    Ok("created, sized, sealed and written a memfd".to_string())
}
