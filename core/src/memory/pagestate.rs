//! The state of anonymous pages beyond their contents, which a process reads in its smaps:
//! transparent huge pages (AnonHugePages) and lazily freed pages (MADV_FREE: LazyFree).
//!
//! ```text
//! dump     only the VMAs whose smaps counts any (the rest costs nothing more):
//!          huge pages    PAGEMAP_SCAN for PAGE_IS_HUGE (not the huge zero page)
//!          lazy pages    pagemap's frame of each present page, /proc/kpageflags: an
//!                        anonymous page without KPF_SWAPBACKED; smaps counts only the clean
//!                        ones, and no page's dirty bit is shown: a VMA with clean and
//!                        written ones is refused
//! restore  once the pages are in, before the madvise state (MADV_NOHUGEPAGE would refuse
//!          the collapse) and the mlocks (MADV_FREE refuses a locked VMA):
//!          MADV_COLLAPSE each huge range, MADV_FREE each lazy range
//! ```

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;

use cryo_proto::image::{HugeRange, LazyFreeRange, MmCore, PageRun, Vma, VmaKind};
use nix::unistd::Pid;
use tracing::warn;

use super::error::MemoryError;
use super::vmflags::Usage;
use super::PAGE;
use crate::error::{Error, Result};
use crate::proc;
use crate::remote::{BatchCall, BatchSite, Remote};
use crate::sys::pagemap::{self, PageRegion, Scan};

const MADV_FREE: u64 = 8;
const MADV_COLLAPSE: u64 = 25;
/// /proc/kpageflags bits (linux/kernel-page-flags.h).
const KPF_ANON: u64 = 1 << 12;
const KPF_SWAPBACKED: u64 = 1 << 14;
const KPF_KSM: u64 = 1 << 21;
/// Regions read per PAGEMAP_SCAN call.
const REGIONS_PER_CALL: usize = 512;

/// Whether `v` is private anonymous memory of base pages (where both states live).
fn anonymous(v: &Vma) -> bool {
    matches!(
        VmaKind::try_from(v.kind),
        Ok(VmaKind::Anon | VmaKind::Heap | VmaKind::Stack)
    ) && v.hugetlb_page_size == 0
        && v.map_flags & libc::MAP_SHARED as u32 == 0
}

/// The ranges of frozen task `pid`'s anonymous memory mapped by transparent huge pages, in
/// address order, looked for only in the VMAs whose smaps counts AnonHugePages (`usage`).
pub fn huge_pages(pid: Pid, vmas: &[Vma], usage: &HashMap<u64, Usage>) -> Result<Vec<HugeRange>> {
    let mut huge: Vec<HugeRange> = Vec::new();
    let with = vmas
        .iter()
        .filter(|v| anonymous(v) && usage.get(&v.start).is_some_and(|u| u.anon_huge_kb > 0));
    let mut pagemap: Option<File> = None;
    let mut out = vec![PageRegion::default(); REGIONS_PER_CALL];
    for v in with {
        let pm = match &pagemap {
            Some(f) => f,
            None => pagemap.insert(
                File::open(proc::dir(pid).join("pagemap"))
                    .map_err(|e| Error::sys(pid, "open pagemap", e))?,
            ),
        };
        let scan = Scan {
            start: v.start,
            end: v.end,
            category_mask: pagemap::PAGE_IS_HUGE
                | pagemap::PAGE_IS_PRESENT
                | pagemap::PAGE_IS_PFNZERO,
            category_inverted: pagemap::PAGE_IS_PFNZERO,
            return_mask: pagemap::PAGE_IS_HUGE,
            ..Scan::default()
        };
        let ranges = pagemap::matching_ranges(pm.as_fd(), scan, &mut out).map_err(|e| {
            Error::sys(
                pid,
                format!("PAGEMAP_SCAN huge pages from {:#x}", v.start),
                e,
            )
        })?;
        for r in ranges {
            match huge.last_mut() {
                Some(h) if h.end == r.start => h.end = r.end,
                _ => huge.push(HugeRange {
                    start: r.start,
                    end: r.end,
                }),
            }
        }
    }
    Ok(huge)
}

/// The lazily freed pages of frozen task `pid` that the dump keeps (in `runs`), in address
/// order, looked for only in the VMAs whose smaps counts LazyFree (`usage`). smaps counts
/// only the clean ones (the kernel drops those under memory pressure; a page written since
/// it was freed is kept, and counts as any other); /proc/kpageflags shows them all (no
/// KPF_SWAPBACKED), but no page's dirty bit. A VMA whose lazily freed pages are all clean is
/// recorded; one with clean and written ones is refused, naming it.
pub fn lazy_free(
    pid: Pid,
    vmas: &[Vma],
    usage: &HashMap<u64, Usage>,
    runs: &[PageRun],
) -> Result<Vec<LazyFreeRange>> {
    let with: Vec<(&Vma, Usage)> = vmas
        .iter()
        .filter(|v| anonymous(v))
        .filter_map(|v| usage.get(&v.start).map(|u| (v, *u)))
        .filter(|(_, u)| u.lazy_free_kb > 0)
        .collect();
    if with.is_empty() {
        return Ok(Vec::new());
    }
    let pagemap = File::open(proc::dir(pid).join("pagemap"))
        .map_err(|e| Error::sys(pid, "open pagemap", e))?;
    let kpageflags =
        File::open("/proc/kpageflags").map_err(|e| Error::sys(pid, "open /proc/kpageflags", e))?;
    let zero = pagemap::zero_pages();
    let mut all = Vec::new();
    for (v, u) in with {
        let pages = ((v.end - v.start) / PAGE) as usize;
        let mut entries = vec![0u8; pages * 8];
        pagemap
            .read_exact_at(&mut entries, v.start / PAGE * 8)
            .map_err(|e| Error::sys(pid, format!("read pagemap at {:#x}", v.start), e))?;
        // (address, frame) of each present page of its own.
        let present: Vec<(u64, u64)> = entries
            .chunks_exact(8)
            .enumerate()
            .filter_map(|(i, pm)| {
                let pm = u64::from_le_bytes(pm.try_into().unwrap_or([0; 8]));
                let pfn = pm & pagemap::PM_PFN_MASK;
                (pm & super::PM_PRESENT != 0 && pfn != 0 && !zero.holds(pfn))
                    .then_some((v.start + i as u64 * PAGE, pfn))
            })
            .collect();
        let flags = page_flags(&kpageflags, &present)
            .map_err(|e| Error::sys(pid, format!("read /proc/kpageflags for {:#x}", v.start), e))?;
        let mut lazy: Vec<LazyFreeRange> = Vec::new();
        for (&(addr, _), &f) in present.iter().zip(&flags) {
            if f & KPF_ANON == 0 || f & (KPF_SWAPBACKED | KPF_KSM) != 0 {
                continue;
            }
            match lazy.last_mut() {
                Some(l) if l.end == addr => l.end += PAGE,
                _ => lazy.push(LazyFreeRange {
                    start: addr,
                    end: addr + PAGE,
                }),
            }
        }
        let freed_kb: u64 = lazy.iter().map(|l| (l.end - l.start) / 1024).sum();
        if freed_kb != u.lazy_free_kb {
            return Err(MemoryError::LazyFreeMixed {
                pid,
                start: v.start,
                end: v.end,
                clean_kb: u.lazy_free_kb,
                freed_kb,
            }
            .into());
        }
        // Only pages the dump keeps: the others come back unmapped.
        for l in lazy {
            for (start, end, _) in clipped(runs, l.start, l.end) {
                all.push(LazyFreeRange { start, end });
            }
        }
        tracing::debug!(%pid, start = v.start, freed_kb, "lazily freed pages");
    }
    Ok(all)
}

/// The /proc/kpageflags word of each frame of `pages` ((address, frame) each), consecutive
/// frames read in one call.
fn page_flags(kpageflags: &File, pages: &[(u64, u64)]) -> std::io::Result<Vec<u64>> {
    let mut flags = Vec::with_capacity(pages.len());
    let mut i = 0;
    while i < pages.len() {
        let mut n = 1;
        while i + n < pages.len() && pages[i + n].1 == pages[i].1 + n as u64 && n < 4096 {
            n += 1;
        }
        let mut buf = vec![0u8; n * 8];
        kpageflags.read_exact_at(&mut buf, pages[i].1 * 8)?;
        flags.extend(
            buf.chunks_exact(8)
                .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8]))),
        );
        i += n;
    }
    Ok(flags)
}

/// In the restore child, once every page is in: collapses the huge ranges into transparent
/// huge pages and frees the lazy ranges again.
pub fn restore(child: Pid, remote: &Remote, batch: BatchSite, mm: &MmCore) -> Result<()> {
    let collapses: Vec<BatchCall> = mm
        .huge_pages
        .iter()
        .map(|h| {
            (
                libc::SYS_madvise,
                [h.start, h.end - h.start, MADV_COLLAPSE, 0, 0, 0],
            )
        })
        .collect();
    // Best effort, as the kernel's own: a range it cannot collapse now (no free huge page
    // on this host: EAGAIN, ENOMEM) comes back in base pages, as after a split under memory
    // pressure, which the process could not tell from a dump; khugepaged may collapse it
    // later. The rest of the batch goes on past it.
    let mut next = 0;
    while next < collapses.len() {
        match remote.batch(batch, &collapses[next..]) {
            Ok(_) => break,
            Err(e) => {
                let h = &mm.huge_pages[next + e.index];
                warn!(pid = %child, start = h.start, end = h.end, error = %e.error, "transparent huge pages not collapsed again (MADV_COLLAPSE): base pages there");
                next += e.index + 1;
            }
        }
    }
    let frees: Vec<BatchCall> = mm
        .lazy_free
        .iter()
        .map(|l| {
            (
                libc::SYS_madvise,
                [l.start, l.end - l.start, MADV_FREE, 0, 0, 0],
            )
        })
        .collect();
    super::restore::run_batch(child, remote, batch, &frees, |i| {
        let l = &mm.lazy_free[i];
        format!("free {:#x}-{:#x} lazily (MADV_FREE)", l.start, l.end)
    })?;
    if !mm.lazy_free.is_empty() {
        // The pages are lazily freed once the CPUs' LRU batches are drained.
        crate::sys::mmap::drain_lru_batches()
            .map_err(|e| Error::sys(child, "drain the LRU batches (mlock)", e))?;
    }
    Ok(())
}

/// The parts of `start..end` inside runs of `runs` (in address order), each with its run.
fn clipped(runs: &[PageRun], start: u64, end: u64) -> impl Iterator<Item = (u64, u64, &PageRun)> {
    let first = runs.partition_point(|r| r.addr + r.npages * PAGE <= start);
    runs[first..]
        .iter()
        .take_while(move |r| r.addr < end)
        .filter_map(move |r| {
            let (s, e) = (start.max(r.addr), end.min(r.addr + r.npages * PAGE));
            (s < e).then_some((s, e, r))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_clipped_to_the_runs_kept() {
        let run = |addr, npages| PageRun {
            addr,
            npages,
            offset: 0,
        };
        let runs = [run(0x10000, 4), run(0x20000, 2), run(0x30000, 1)];
        let got: Vec<(u64, u64)> = clipped(&runs, 0x12000, 0x21000)
            .map(|(s, e, _)| (s, e))
            .collect();
        assert_eq!(got, [(0x12000, 0x14000), (0x20000, 0x21000)]);
        assert_eq!(clipped(&runs, 0x14000, 0x20000).count(), 0);
    }
}
