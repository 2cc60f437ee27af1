//! Memory a parent shares copy-on-write with its children stays shared through a restore.
//!
//! After `fork`, a child's private pages are the parent's until one of them writes: those of
//! private anonymous memory (the heap and the stack too), and the written pages of private
//! file mappings (anonymous copies in a file VMA; the unwritten ones are the file's). Filling
//! each process from its own pages would give every child a copy. Instead, as CRIU does, a
//! process with children maps those VMAs at staging addresses (with their own flags, of their
//! file at their offset) and fills them in its cryo phase, BEFORE it forks them; each child
//! inherits those regions, and keeps the ones whose VMA is its own too (same bounds,
//! protection, flags, file and offset), writing only the pages of its image that differ from
//! the inherited ones (equal pages stay shared) and dropping those its image does not have
//! (MADV_DONTNEED: zero in anonymous memory, the file's page again in a file mapping). In a
//! file mapping a page the child wrote where the parent's is still the file's is written even
//! when equal: it must be the child's copy, not the file's page. The reshaping then moves
//! every staged region to the VMA's address with mremap, which keeps the pages (and their
//! sharing) as they are.
//!
//! ```text
//!  parent (cryo phase)        child (cryo phase)          reshaping (each process)
//!  map at S, fill ----fork--> keeps S, writes what differs  mremap S -> the VMA's start
//!                             unmaps S' it has no VMA for
//! ```
//!
//! Staging addresses are chosen once for the tree ([`plan`]), away from cryo's mappings, the
//! trampolines and every VMA of every process, so no move lands on a region not yet moved.

use std::ops::Range;

use cryo_proto::image::{MmCore, PageRun, Vma, VmaKind};
use nix::unistd::Pid;

use super::error::MemoryError;
use super::restore::MappingFds;
use super::warm::WarmMemory;
use super::PAGE;
use crate::sys::mmap;

/// Staging regions start here (16 TiB), far below where the kernel puts mappings it chooses.
pub(crate) const STAGING_BASE: u64 = 1 << 44;
/// And end below the top of the user address space (47 bits).
const STAGING_TOP: u64 = (1 << 47) - (1 << 32);
/// Distance kept from every mapping to avoid.
const GUARD: u64 = 4 << 20;
/// Runs at least this long are populated in one call before they are filled (one fault per
/// page taken by the copy costs more).
const POPULATE_MIN: u64 = 64 << 10;

/// One VMA of a process filled in its cryo phase at a staging address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Staged {
    /// Where the image has the VMA.
    pub start: u64,
    /// Its end.
    pub end: u64,
    /// Where it is staged.
    pub at: u64,
    /// The parent staged it and the process inherits it: only the pages that differ are
    /// written.
    pub inherited: bool,
    /// cryo holds it already, filled as a pre-copy's rounds arrived (warm.rs), and the
    /// process inherits it: only the pages the warm copy lacks or has in excess are
    /// written or dropped.
    pub prebuilt: bool,
}

impl Staged {
    /// The region's length in bytes.
    pub fn size(&self) -> u64 {
        self.end - self.start
    }
}

/// Whether a VMA is memory a child may share with its parent copy-on-write: private
/// anonymous memory (the heap and the stack too) or a private file mapping, not hugetlb
/// (staged memory is of base pages), not droppable (a fork wipes it). Staging maps it with its
/// own flags (MAP_GROWSDOWN, MAP_NORESERVE: the commit charge stays as it was).
pub fn stageable(v: &Vma) -> bool {
    matches!(
        VmaKind::try_from(v.kind),
        Ok(VmaKind::Anon | VmaKind::Heap | VmaKind::Stack | VmaKind::FilePrivate)
    ) && v.map_flags & libc::MAP_SHARED as u32 == 0
        && !super::is_droppable(v)
        && v.hugetlb_page_size == 0
}

/// Whether a VMA is a private file mapping, whose unwritten pages are the file's.
fn of_file(v: &Vma) -> bool {
    v.kind == VmaKind::FilePrivate as i32
}

/// Whether `mm` stages its stageable VMA `v` for its children: a file mapping only when the
/// process wrote pages of it (its unwritten pages are shared through the file anyway).
fn worth_staging(mm: &MmCore, v: &Vma) -> bool {
    !of_file(v) || mm.pages.iter().any(|r| v.start <= r.addr && r.addr < v.end)
}

/// Whether a child's VMA `v` is its parent's `p`, inherited at fork and left whole.
fn same_vma(v: &Vma, p: &Vma) -> bool {
    v.start == p.start
        && v.end == p.end
        && v.prot == p.prot
        && v.map_flags == p.map_flags
        && v.kind == p.kind
        && (!of_file(v) || (v.file_id == p.file_id && v.pgoff == p.pgoff))
}

/// Chooses what each process stages and where. `mms` are the processes in creation order
/// (parents first), `children` their children by position, `avoid` what must stay clear
/// (cryo's mappings, the trampolines). A process stages its stageable VMAs when it has
/// children, and those equal to one its parent staged (at the parent's address).
pub fn plan(
    mms: &[&MmCore],
    children: &[Vec<usize>],
    avoid: &[Range<u64>],
    warm: Option<&WarmMemory>,
) -> Result<Vec<Vec<Staged>>, MemoryError> {
    let mut parent: Vec<Option<usize>> = vec![None; mms.len()];
    for (p, kids) in children.iter().enumerate() {
        for &c in kids {
            parent[c] = Some(p);
        }
    }
    let mut taken: Vec<Range<u64>> = avoid.to_vec();
    taken.extend(
        mms.iter()
            .flat_map(|mm| mm.vmas.iter().map(|v| v.start..v.end)),
    );
    // A warm region is cryo's own mapping: only the rest of what to avoid must stay clear
    // of the places it hands over.
    let warm_maps = warm.map(WarmMemory::mappings).unwrap_or_default();
    let clear_of_warm: Vec<Range<u64>> = taken
        .iter()
        .filter(|r| {
            !warm_maps
                .iter()
                .any(|w| w.start <= r.start && r.end <= w.end)
        })
        .cloned()
        .collect();
    let mut next = STAGING_BASE;
    let mut staged: Vec<Vec<Staged>> = Vec::with_capacity(mms.len());
    for (i, mm) in mms.iter().enumerate() {
        let mut mine = Vec::new();
        // Only a process cryo forks itself inherits cryo's warm memory.
        let warm = warm
            .filter(|_| parent[i].is_none())
            .and_then(|w| w.view(mm.pid));
        for v in mm.vmas.iter().filter(|v| stageable(v)) {
            let len = v.end - v.start;
            let prebuilt = warm.and_then(|w| w.place_of(v)).filter(|&at| {
                !clear_of_warm
                    .iter()
                    .any(|r| r.start < at + len && at < r.end)
            });
            if let Some(at) = prebuilt {
                mine.push(Staged {
                    start: v.start,
                    end: v.end,
                    at,
                    inherited: false,
                    prebuilt: true,
                });
                continue;
            }
            let from_parent = parent[i].and_then(|p| {
                let theirs = mms[p].vmas.iter().find(|pv| same_vma(v, pv))?;
                staged[p].iter().find(|s: &&Staged| s.start == theirs.start)
            });
            if let Some(s) = from_parent {
                mine.push(Staged {
                    inherited: true,
                    prebuilt: false,
                    ..*s
                });
            } else if !children[i].is_empty() && worth_staging(mm, v) {
                let at = place(next, v.end - v.start, v.start, &taken).ok_or(
                    MemoryError::NoStagingRoom {
                        pid: Pid::from_raw(mm.pid),
                        start: v.start,
                    },
                )?;
                next = at + (v.end - v.start) + PAGE;
                mine.push(Staged {
                    start: v.start,
                    end: v.end,
                    at,
                    inherited: false,
                    prebuilt: false,
                });
            }
        }
        if warm.is_some() {
            let (handed, bytes) = mine
                .iter()
                .filter(|s| s.prebuilt)
                .fold((0, 0), |(n, b), s| (n + 1, b + s.size()));
            tracing::debug!(pid = mm.pid, handed, bytes, "warm memory handed over");
        }
        staged.push(mine);
    }
    Ok(staged)
}

/// The span of a page-middle-directory entry on x86_64: the page tables of 2 MiB of memory.
const PMD_SPAN: u64 = 2 << 20;

/// The lowest address from `at` that lies as far into its 2 MiB as `like` does. A staged
/// region placed so moves to `like` with whole page tables: mremap then moves one PMD entry
/// per 2 MiB (move_normal_pmd) instead of 512 page table entries.
pub(crate) fn same_pmd_offset(at: u64, like: u64) -> u64 {
    let want = like % PMD_SPAN;
    let base = at - at % PMD_SPAN + want;
    if base >= at {
        base
    } else {
        base + PMD_SPAN
    }
}

/// The lowest address from `from` where `len` bytes keep [`GUARD`] away from every range of
/// `taken`, as far into its 2 MiB as `like` (where the region moves to at the end).
pub(crate) fn place(from: u64, len: u64, like: u64, taken: &[Range<u64>]) -> Option<u64> {
    let mut at = same_pmd_offset(from, like);
    while let Some(r) = taken
        .iter()
        .find(|r| r.start < at + len + GUARD && at < r.end + GUARD)
    {
        at = same_pmd_offset(r.end + GUARD, like);
    }
    (at + len <= STAGING_TOP).then_some(at)
}

/// Why staging failed: the VMA and the failed call.
#[derive(Debug, thiserror::Error)]
#[error("stage the VMA at {start:#x}: {source}")]
pub struct StageFailed {
    /// The VMA's start in the image.
    pub start: u64,
    /// The failed call's error.
    #[source]
    pub source: std::io::Error,
}

/// In the cryo phase of a process, before it forks its children: unmaps what its parent
/// staged that it does not keep (`parent`: its image and what it staged), then maps and fills
/// its own staged regions (`mine`) from its pages image `pages` (mapped by cryo; the files of
/// file mappings are open at the numbers `files` gives), writing into inherited regions only
/// what differs.
pub fn stage(
    mm: &MmCore,
    mine: &[Staged],
    parent: Option<(&MmCore, &[Staged])>,
    pages: Option<&[u8]>,
    files: &MappingFds,
    warm: Option<WarmInherited<'_>>,
) -> Result<usize, StageFailed> {
    let (parent_mm, parents) = parent.map_or((None, &[][..]), |(m, s)| (Some(m), s));
    let mut written = 0;
    if let Some(w) = &warm {
        written += hand_over_warm(mm, mine, w, pages)?;
    }
    for p in parents
        .iter()
        .filter(|p| !mine.iter().any(|s| s.at == p.at))
    {
        mmap::unmap_staged(p.at, p.size()).map_err(|source| StageFailed {
            start: p.start,
            source,
        })?;
    }
    for s in mine.iter().filter(|s| !s.prebuilt) {
        let failed = |source| StageFailed {
            start: s.start,
            source,
        };
        let einval = || failed(std::io::Error::from_raw_os_error(libc::EINVAL));
        let vma = mm
            .vmas
            .iter()
            .find(|v| v.start == s.start)
            .ok_or_else(einval)?;
        if !s.inherited {
            map_region(s, vma, files).map_err(failed)?;
        }
        // The pages of an inherited region that are the parent's copies: in a file mapping
        // those its image has (the others are the file's), in anonymous memory all of them
        // (where it has none they are zero: equal pages are left alone).
        let parents_copies: Vec<Range<u64>> = match parent_mm {
            Some(p) if of_file(vma) => copies_in(p, s),
            _ => std::iter::once(s.start..s.end).collect(),
        };
        let mut runs: Vec<_> = mm
            .pages
            .iter()
            .filter(|r| s.start <= r.addr && r.addr < s.end)
            .collect();
        runs.sort_by_key(|r| r.addr);
        // Where the image has no page the memory is zero, or the file's: an inherited page
        // there goes.
        let mut hole = s.start;
        for run in runs {
            let len = run.npages * PAGE;
            let at = s.at + (run.addr - s.start);
            let src = pages
                .and_then(|p| p.get(run.offset as usize..(run.offset + len) as usize))
                .ok_or_else(einval)?;
            if s.inherited {
                if run.addr > hole {
                    drop_pages(s, hole, run.addr).map_err(failed)?;
                }
                // Where the parent's page is a copy only what differs is written; where it
                // is the file's, every page is (this process's copy, even when equal).
                for (piece, theirs) in split_by(run.addr..run.addr + len, &parents_copies) {
                    let from = (piece.start - run.addr) as usize;
                    let src = &src[from..(piece.end - run.addr) as usize];
                    let at = at + from as u64;
                    if theirs {
                        written += mmap::merge_into_staged(at, src, PAGE as usize);
                    } else {
                        mmap::copy_into_staged(at, src);
                        written += src.len() / PAGE as usize;
                    }
                }
            } else {
                if len >= POPULATE_MIN {
                    mmap::advise_staged(at, len, libc::MADV_POPULATE_WRITE).map_err(failed)?;
                }
                mmap::copy_into_staged(at, src);
                written += run.npages as usize;
            }
            hole = run.addr + len;
        }
        if s.inherited && hole < s.end {
            drop_pages(s, hole, s.end).map_err(failed)?;
        }
    }
    Ok(written)
}

/// What a process forked by cryo inherits of cryo's warm memory (warm.rs).
#[derive(Debug, Clone, Copy)]
pub struct WarmInherited<'a> {
    /// Every warm region of cryo (its addresses there): what the process hands over none of
    /// is unmapped before it forks.
    pub mappings: &'a [Range<u64>],
    /// The image address ranges of this process whose latest copy is in them, sorted and
    /// disjoint.
    pub written: &'a [(u64, u64)],
}

/// In the cryo phase of a process forked by cryo: unmaps the warm memory it inherited and
/// keeps none of, then makes each of its prebuilt regions its image: pages the warm copy
/// holds and the image has not are dropped (zero again), pages of the image it lacks are
/// written from the pages image. Returns how many pages were written.
fn hand_over_warm(
    mm: &MmCore,
    mine: &[Staged],
    warm: &WarmInherited<'_>,
    pages: Option<&[u8]>,
) -> Result<usize, StageFailed> {
    let mut kept: Vec<Range<u64>> = mine
        .iter()
        .filter(|s| s.prebuilt)
        .map(|s| s.at..s.at + s.size())
        .collect();
    kept.sort_by_key(|r| r.start);
    for m in warm.mappings {
        for (piece, keep) in split_by(m.clone(), &kept) {
            if !keep {
                mmap::unmap_staged(piece.start, piece.end - piece.start).map_err(|source| {
                    StageFailed {
                        start: piece.start,
                        source,
                    }
                })?;
            }
        }
    }
    let warm_copies: Vec<Range<u64>> = warm.written.iter().map(|&(s, e)| s..e).collect();
    let mut written = 0;
    for s in mine.iter().filter(|s| s.prebuilt) {
        let failed = |source| StageFailed {
            start: s.start,
            source,
        };
        let mut runs: Vec<&PageRun> = mm
            .pages
            .iter()
            .filter(|r| s.start <= r.addr && r.addr < s.end)
            .collect();
        runs.sort_by_key(|r| r.addr);
        let image: Vec<Range<u64>> = runs
            .iter()
            .map(|r| r.addr..r.addr + r.npages * PAGE)
            .collect();
        for copy in warm_copies
            .iter()
            .filter(|c| c.start < s.end && s.start < c.end)
        {
            let copy = copy.start.max(s.start)..copy.end.min(s.end);
            for (piece, in_image) in split_by(copy, &image) {
                if !in_image {
                    drop_pages(s, piece.start, piece.end).map_err(failed)?;
                }
            }
        }
        for run in runs {
            let len = run.npages * PAGE;
            for (piece, warm_has) in split_by(run.addr..run.addr + len, &warm_copies) {
                if warm_has {
                    continue;
                }
                let from = run.offset + (piece.start - run.addr);
                let src = pages
                    .and_then(|p| p.get(from as usize..(from + piece.end - piece.start) as usize))
                    .ok_or_else(|| failed(std::io::Error::from_raw_os_error(libc::EINVAL)))?;
                mmap::copy_into_staged(s.at + (piece.start - s.start), src);
                written += src.len() / PAGE as usize;
            }
        }
    }
    Ok(written)
}

/// Maps staged region `s` of VMA `vma`: read-write for the filling (with its execute right:
/// the final protection is set only where it lacks read or write), with the VMA's flags, of
/// its file when it has one.
fn map_region(s: &Staged, vma: &Vma, files: &MappingFds) -> std::io::Result<()> {
    let prot = (vma.prot | (libc::PROT_READ | libc::PROT_WRITE) as u32) as libc::c_int;
    let fd = if of_file(vma) {
        let fd = files
            .file(vma.file_id, super::restore::needs_writable_file(vma))
            .ok_or_else(|| std::io::Error::from_raw_os_error(libc::EBADF))?;
        Some(fd as std::os::fd::RawFd)
    } else {
        None
    };
    mmap::map_staged(
        s.at,
        s.size(),
        prot,
        vma.map_flags as libc::c_int,
        fd,
        vma.pgoff,
    )
}

/// The image addresses of staged region `s` where `parent` has pages, sorted.
fn copies_in(parent: &MmCore, s: &Staged) -> Vec<Range<u64>> {
    let mut copies: Vec<Range<u64>> = parent
        .pages
        .iter()
        .map(|r| r.addr.max(s.start)..(r.addr + r.npages * PAGE).min(s.end))
        .filter(|r| r.start < r.end)
        .collect();
    copies.sort_by_key(|r| r.start);
    copies
}

/// Splits `range` where the sorted, disjoint `copies` begin and end: each piece, and whether
/// it lies in one of them.
pub(crate) fn split_by(range: Range<u64>, copies: &[Range<u64>]) -> Vec<(Range<u64>, bool)> {
    let mut pieces = Vec::new();
    let mut at = range.start;
    for c in copies
        .iter()
        .filter(|c| c.start < range.end && c.end > range.start)
    {
        if c.start > at {
            pieces.push((at..c.start, false));
        }
        let end = c.end.min(range.end);
        pieces.push((c.start.max(at)..end, true));
        at = end;
    }
    if at < range.end {
        pieces.push((at..range.end, false));
    }
    pieces
}

/// Drops the pages of staged region `s` for image addresses `from..to`.
fn drop_pages(s: &Staged, from: u64, to: u64) -> std::io::Result<()> {
    mmap::advise_staged(s.at + (from - s.start), to - from, libc::MADV_DONTNEED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_staged_place_lies_as_far_into_its_2_mib_as_the_vma() {
        let mib = 1 << 20;
        assert_eq!(same_pmd_offset(0x4000_0000, 0x7f00_0012_3000), 0x4012_3000);
        for (at, like) in [
            (0x4000_0000, 0x7f00_0012_3000u64),
            (0x4010_0000, 0x7f00_0000_1000),
            (0x4000_1000, 0x7f00_0000_1000),
        ] {
            let got = same_pmd_offset(at, like);
            assert!(
                got >= at && got < at + 2 * mib,
                "{at:#x} {like:#x} -> {got:#x}"
            );
            assert_eq!(got % (2 * mib), like % (2 * mib));
        }
    }

    fn vma(start: u64, end: u64, kind: VmaKind) -> Vma {
        Vma {
            start,
            end,
            prot: 3,
            map_flags: libc::MAP_PRIVATE as u32,
            kind: kind as i32,
            ..Default::default()
        }
    }

    fn mm(pid: i32, vmas: Vec<Vma>) -> MmCore {
        MmCore {
            pid,
            vmas,
            ..Default::default()
        }
    }

    #[test]
    fn children_keep_what_their_parent_staged_and_nothing_else() {
        let g = 1 << 30;
        let parent = mm(
            1,
            vec![
                vma(g, 2 * g, VmaKind::Anon),
                vma(3 * g, 4 * g, VmaKind::Heap),
            ],
        );
        let mut moved = vma(g, 2 * g, VmaKind::Anon);
        moved.prot = 1;
        let child = mm(
            2,
            vec![
                moved,
                vma(3 * g, 4 * g, VmaKind::Heap),
                vma(5 * g, 6 * g, VmaKind::Anon),
            ],
        );
        let leaf = mm(3, vec![vma(g, 2 * g, VmaKind::Anon)]);
        let cryo: Vec<Range<u64>> = std::iter::once(STAGING_BASE..STAGING_BASE + 4096).collect();
        let staged = plan(
            &[&parent, &child, &leaf],
            &[vec![1, 2], vec![], vec![]],
            &cryo,
            None,
        )
        .expect("room");
        assert_eq!(staged[0].len(), 2);
        assert!(staged[0].iter().all(|s| !s.inherited));
        assert!(staged[0][0].at >= STAGING_BASE + 4096 + GUARD);
        assert!(staged[0][1].at >= staged[0][0].at + g + PAGE);
        // The child changed the protection of the first: only the heap is kept; it has no
        // children, so its own VMA is not staged.
        assert_eq!(
            staged[1],
            vec![Staged {
                inherited: true,
                ..staged[0][1]
            }]
        );
        assert_eq!(
            staged[2],
            vec![Staged {
                inherited: true,
                ..staged[0][0]
            }]
        );
    }

    #[test]
    fn staging_keeps_clear_of_the_image() {
        let image = mm(
            1,
            vec![vma(STAGING_BASE, STAGING_BASE + 8192, VmaKind::Anon)],
        );
        let staged = plan(&[&image, &mm(2, vec![])], &[vec![1], vec![]], &[], None).expect("room");
        assert!(staged[0][0].at >= STAGING_BASE + 8192 + GUARD);
        assert!(!stageable(&Vma {
            map_flags: libc::MAP_SHARED as u32,
            ..vma(0, 4096, VmaKind::Anon)
        }));
        assert!(stageable(&vma(0, 4096, VmaKind::Stack)));
        assert!(!stageable(&Vma {
            map_flags: super::super::MAP_DROPPABLE | libc::MAP_NORESERVE as u32,
            ..vma(0, 4096, VmaKind::Anon)
        }));
    }

    #[test]
    fn file_mappings_are_staged_where_written_and_kept_for_the_same_file_and_offset() {
        let g = 1 << 30;
        let file = |id, pgoff| Vma {
            file_id: id,
            pgoff,
            ..vma(g, g + 8 * PAGE, VmaKind::FilePrivate)
        };
        let run = cryo_proto::image::PageRun {
            addr: g + PAGE,
            npages: 1,
            offset: 0,
        };
        let mut parent = mm(1, vec![file(7, 0)]);
        let same = mm(2, vec![file(7, 0)]);
        let moved = mm(3, vec![file(7, PAGE)]);
        let other = mm(4, vec![file(8, 0)]);
        let kids = [vec![1, 2, 3], vec![], vec![], vec![]];
        // Nothing written: the file's pages are shared anyway, nothing is staged.
        let staged = plan(&[&parent, &same, &moved, &other], &kids, &[], None).expect("room");
        assert!(staged.iter().all(|s| s.is_empty()));
        parent.pages.push(run);
        let staged = plan(&[&parent, &same, &moved, &other], &kids, &[], None).expect("room");
        assert_eq!(staged[0].len(), 1);
        assert!(staged[1][0].inherited);
        assert!(staged[2].is_empty() && staged[3].is_empty());
    }

    #[test]
    fn a_run_splits_where_the_parents_copies_begin_and_end() {
        let copies = [2..4, 6..7];
        assert_eq!(
            split_by(1..8, &copies),
            vec![
                (1..2, false),
                (2..4, true),
                (4..6, false),
                (6..7, true),
                (7..8, false)
            ]
        );
        assert_eq!(split_by(3..5, &copies), vec![(3..4, true), (4..5, false)]);
        assert_eq!(split_by(4..6, &copies), vec![(4..6, false)]);
    }

    #[test]
    fn a_root_takes_its_vmas_from_warm_memory_its_children_from_it() {
        let g = 1u64 << 30;
        let plain = |start, end| Vma {
            map_flags: libc::MAP_PRIVATE as u32,
            ..vma(start, end, VmaKind::Anon)
        };
        let root = mm(1, vec![plain(g, 2 * g), plain(3 * g, 4 * g)]);
        let child = mm(2, vec![plain(g, 2 * g)]);
        let warm_at = 1u64 << 45;
        // The first VMA lies in a region; the second only half.
        let warm = WarmMemory::with_regions(
            1,
            &[(g, 2 * g, warm_at), (3 * g, 3 * g + g / 2, warm_at + 2 * g)],
        );
        let cryo: Vec<Range<u64>> = vec![warm_at..warm_at + g, warm_at + 2 * g..warm_at + 3 * g];
        let staged = plan(&[&root, &child], &[vec![1], vec![]], &cryo, Some(&warm)).expect("room");
        let prebuilt: Vec<&Staged> = staged[0].iter().filter(|s| s.prebuilt).collect();
        assert_eq!(prebuilt.len(), 1, "{staged:?}");
        assert_eq!((prebuilt[0].start, prebuilt[0].at), (g, warm_at));
        // The other is staged as any memory shared with a child, clear of the warm regions.
        let other = staged[0].iter().find(|s| s.start == 3 * g).unwrap();
        assert!(
            !other.prebuilt
                && !cryo
                    .iter()
                    .any(|r| r.start < other.at + g && other.at < r.end)
        );
        // The child inherits the root's copy of the first, as from any parent.
        assert_eq!(
            staged[1],
            vec![Staged {
                inherited: true,
                prebuilt: false,
                ..*prebuilt[0]
            }]
        );
    }
}
