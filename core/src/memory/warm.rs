//! Pages of a pre-copy migration written into the receiver's own memory as the rounds
//! arrive, so that the restore's processes inherit them at fork instead of copying them
//! while the processes are frozen (the copy of 1.3 GiB took 0.4 s of a 0.55 s downtime).
//!
//! ```text
//! rounds arrive (process running there)      restore (frozen), in cryo serve
//!  round 0: a region per private anonymous     plan: a VMA of a root lying in a region and
//!    VMA the sender tracks (its record's         mapped as it is (MAP_NORESERVE or not) is
//!    anon_vmas), mapped in cryo as it is, at     staged at its place there ("prebuilt":
//!    WARM_BASE and up; its pages read in         premap.rs)
//!  rounds 1..: pages inside a region read      fork: the root inherits the regions (page
//!    over the older copies                       tables copied, pages shared copy-on-write)
//!  final image: the frozen dump's pages too    root's cryo phase: unmaps what it does not
//!    (the latest copy of each page is there)     keep, zeroes what the image lacks, writes
//!                                                what the regions lack; reshape: mremap
//!                                              cryo: unmaps its regions once the roots exist
//! ```
//!
//! Nothing here is needed for a correct restore: a page outside the regions, a VMA not
//! wholly inside one, any failure while writing, and the pages come from the pages image as
//! in any restore. What the regions hold came from files checked as they arrived (their
//! checksum and the stream's authentication), the same bytes the pages image holds.

use std::collections::HashMap;
use std::fs::File;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};

use cryo_proto::image::{MmCore, PageRun, PreCopyRound, Vma, VmaKind};
use cryo_proto::ImageKind;
use tracing::debug;

use super::precopy::coalesce;
use super::PAGE;
use crate::image::{names, ImageDir};
use crate::sys::mmap;

/// Regions are mapped from here (32 TiB) up: above where the kernel places mappings and
/// above premap.rs's staging area's start, which keeps clear of them (they are cryo's).
const WARM_BASE: u64 = 1 << 45;
/// Below the top of the user address space (47 bits).
const WARM_TOP: u64 = (1 << 47) - (1 << 32);
/// Distance kept between regions.
const GUARD: u64 = 4 << 20;
/// The map flags a region may have (of a VMA's, as the image records them).
const REGION_FLAGS: u32 = (libc::MAP_PRIVATE | libc::MAP_NORESERVE) as u32;

/// One region: a VMA's image addresses `start..end` of a process, mirrored in cryo at `at`,
/// mapped private and anonymous with `map_flags`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// First image address it covers.
    pub start: u64,
    /// End of what it covers.
    pub end: u64,
    /// Where cryo maps it.
    pub at: u64,
    /// MAP_PRIVATE, and MAP_NORESERVE when the VMA had it.
    pub map_flags: u32,
}

/// The flags a region for VMA `v` is mapped with (its own, MAP_ANONYMOUS aside), if it may
/// have one: MAP_PRIVATE, with MAP_NORESERVE or not.
fn region_flags(v: &Vma) -> Option<u32> {
    let flags = v.map_flags & !(libc::MAP_ANONYMOUS as u32);
    (flags & !REGION_FLAGS == 0).then_some(flags)
}

impl Region {
    /// Where it is in cryo.
    fn in_cryo(&self) -> Range<u64> {
        self.at..self.at + (self.end - self.start)
    }

    /// Where image address `addr` (inside the region) is in cryo.
    fn place(&self, addr: u64) -> u64 {
        self.at + (addr - self.start)
    }
}

/// One process's regions and the image pages written into them.
#[derive(Debug, Default)]
struct WarmTask {
    regions: Vec<Region>,
    /// Image address ranges written, in the order written (coalesced by [`WarmMemory::finish`]).
    written: Vec<(u64, u64)>,
}

/// The receiver's warm memory for one image: per process (its pid in the image), its
/// regions. The regions are unmapped when it is dropped or released.
#[derive(Debug)]
pub struct WarmMemory {
    tasks: HashMap<i32, WarmTask>,
    /// The regions were unmapped from cryo already ([`WarmMemory::release`]).
    released: AtomicBool,
    /// Where the next region goes.
    next: u64,
}

/// A process's warm memory as the restore plans with it.
#[derive(Debug, Clone, Copy)]
pub struct WarmView<'a> {
    regions: &'a [Region],
    /// Image address ranges whose latest copy the regions hold, sorted and disjoint.
    pub written: &'a [(u64, u64)],
}

impl WarmView<'_> {
    /// Where VMA `v` lies in cryo, if it can be handed over from a region: private
    /// anonymous memory lying wholly inside one mapped as it is (the mremap that hands it
    /// over keeps the region's flags: MAP_NORESERVE must be the same).
    pub fn place_of(&self, v: &Vma) -> Option<u64> {
        let flags = region_flags(v)?;
        if !matches!(VmaKind::try_from(v.kind), Ok(VmaKind::Anon | VmaKind::Heap))
            || v.hugetlb_page_size != 0
        {
            return None;
        }
        self.regions
            .iter()
            .find(|c| c.start <= v.start && v.end <= c.end && c.map_flags == flags)
            .map(|c| c.place(v.start))
    }
}

impl WarmMemory {
    /// No regions yet.
    pub fn new() -> Self {
        Self {
            tasks: HashMap::new(),
            released: AtomicBool::new(false),
            next: WARM_BASE,
        }
    }

    /// File `name` of the image being received arrived whole and checked: a pre-copy
    /// round's record (`precopy-R-PID.img`) has its pages (the file it names, received
    /// before it) written into the process's regions, which the first round lays out.
    /// Anything that fails leaves the process without warm memory (logged): the restore
    /// takes its pages from the image.
    pub fn received(&mut self, images: &ImageDir, name: &str) {
        let Some((round, pid)) = super::precopy::round_of(name) else {
            return;
        };
        let pid = pid.as_raw();
        let record: PreCopyRound = match images.read_single(name, ImageKind::PreCopyRound) {
            Ok(r) => r,
            Err(e) => return self.give_up(pid, &format!("read {name}: {e}")),
        };
        if record.pid != pid || record.round != round {
            return self.give_up(pid, &format!("{name} names another round"));
        }
        if round == 0 && !self.tasks.contains_key(&pid) {
            if let Err(e) = self.lay_out(pid, &record.anon_vmas, &record.runs) {
                return self.give_up(pid, &format!("map the regions: {e}"));
            }
        }
        if let Err(e) = self.write(images, pid, &record.pages_file, &record.runs) {
            self.give_up(pid, &format!("write the pages of {name}: {e}"));
        }
    }

    /// The whole image arrived, its rounds not merged yet: each process's final pages (the
    /// frozen dump's, its mm image's runs) are written over the rounds' copies, and what
    /// was written is coalesced. Returns how many bytes that wrote.
    pub fn finish(&mut self, images: &ImageDir) -> u64 {
        let pids: Vec<i32> = self.tasks.keys().copied().collect();
        let mut bytes = 0;
        for pid in pids {
            let mm: MmCore = match images
                .read_single(&names::mm(nix::unistd::Pid::from_raw(pid)), ImageKind::Mm)
            {
                Ok(mm) => mm,
                Err(e) => {
                    self.give_up(pid, &format!("read its mm image: {e}"));
                    continue;
                }
            };
            let Some(file) = &mm.pages_file else {
                continue;
            };
            match self.write(images, pid, &file.name, &mm.pages) {
                Ok(n) => bytes += n,
                Err(e) => {
                    self.give_up(pid, &format!("write its final pages: {e}"));
                    continue;
                }
            }
            if let Some(t) = self.tasks.get_mut(&pid) {
                t.written = coalesce(std::mem::take(&mut t.written));
            }
        }
        bytes
    }

    /// Whether no process has warm memory (no pre-copy rounds came, or none could be kept).
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Process `pid`'s warm memory, if it has any.
    pub fn view(&self, pid: i32) -> Option<WarmView<'_>> {
        self.tasks.get(&pid).map(|t| WarmView {
            regions: &t.regions,
            written: &t.written,
        })
    }

    /// Warm memory of process `pid` in `regions` (start, end, at), nothing mapped: for the
    /// planning's tests.
    #[cfg(test)]
    pub(crate) fn with_regions(pid: i32, regions: &[(u64, u64, u64)]) -> Self {
        let mut warm = Self::new();
        // Nothing to unmap.
        warm.released = AtomicBool::new(true);
        warm.tasks.insert(
            pid,
            WarmTask {
                regions: regions
                    .iter()
                    .map(|&(start, end, at)| Region {
                        start,
                        end,
                        at,
                        map_flags: libc::MAP_PRIVATE as u32,
                    })
                    .collect(),
                written: regions.iter().map(|&(s, e, _)| (s, e)).collect(),
            },
        );
        warm
    }

    /// Every region mapped in cryo (`at..at + len`): a forked process's own memory that
    /// is not its image's.
    pub fn mappings(&self) -> Vec<Range<u64>> {
        self.tasks
            .values()
            .flat_map(|t| t.regions.iter().map(Region::in_cryo))
            .collect()
    }

    /// Lets the processes cryo forks from now on inherit the regions (they are kept from its
    /// other forks until then: copying the page tables of 1.3 GiB takes 20 ms).
    pub fn inherit(&self) -> std::io::Result<()> {
        for r in self.mappings() {
            mmap::advise_staged(r.start, r.end - r.start, libc::MADV_DOFORK)?;
        }
        Ok(())
    }

    /// Unmaps the regions from cryo, in a thread of their own (taking a large address
    /// space apart takes a while): the forked processes keep what they inherited.
    pub fn release(&self) {
        if self.released.swap(true, Ordering::SeqCst) {
            return;
        }
        let mapped = self.mappings();
        let _ = std::thread::Builder::new()
            .name("cryo-warm-unmap".into())
            .spawn(move || unmap_all(mapped));
    }

    /// Maps a region for each VMA of `vmas` (the first round's) that has pages in `runs`.
    fn lay_out(&mut self, pid: i32, vmas: &[Vma], runs: &[PageRun]) -> std::io::Result<()> {
        let mut regions = Vec::new();
        for v in vmas {
            let has_pages = runs.iter().any(|r| v.start <= r.addr && r.addr < v.end);
            let Some(flags) = region_flags(v).filter(|_| v.start < v.end && has_pages) else {
                continue;
            };
            let at = match self.map_region(v.start, v.end - v.start, flags) {
                Ok(at) => at,
                Err(e) => {
                    unmap_all(regions.iter().map(Region::in_cryo));
                    return Err(e);
                }
            };
            regions.push(Region {
                start: v.start,
                end: v.end,
                at,
                map_flags: flags,
            });
        }
        debug!(pid, regions = regions.len(), "warm memory laid out");
        self.tasks.insert(
            pid,
            WarmTask {
                regions,
                written: Vec::new(),
            },
        );
        Ok(())
    }

    /// Maps `len` bytes of private anonymous memory at the next free place from
    /// [`WARM_BASE`] up, as far into its 2 MiB as `start`, where the restore moves it
    /// (premap::same_pmd_offset).
    fn map_region(&mut self, start: u64, len: u64, flags: u32) -> std::io::Result<u64> {
        let mut at = super::premap::same_pmd_offset(self.next, start);
        loop {
            if at + len > WARM_TOP {
                return Err(std::io::Error::from_raw_os_error(libc::ENOMEM));
            }
            let rw = libc::PROT_READ | libc::PROT_WRITE;
            match mmap::map_staged(at, len, rw, flags as libc::c_int, None, 0) {
                Ok(()) => {
                    // Not copied into cryo's other forks (a guardian, a session's stand-in)
                    // until the roots are forked: [`WarmMemory::inherit`].
                    mmap::advise_staged(at, len, libc::MADV_DONTFORK)?;
                    break;
                }
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                    at = super::premap::same_pmd_offset(at + len + GUARD, start);
                }
                Err(e) => return Err(e),
            }
        }
        self.next = (at + len + GUARD).next_multiple_of(PAGE);
        Ok(at)
    }

    /// Reads the pages of `runs` (in pages file `file` of the image) that lie in `pid`'s
    /// regions into them. Returns the bytes written.
    fn write(
        &mut self,
        images: &ImageDir,
        pid: i32,
        file: &str,
        runs: &[PageRun],
    ) -> std::io::Result<u64> {
        let Some(task) = self.tasks.get_mut(&pid) else {
            return Ok(0);
        };
        if runs.is_empty() {
            return Ok(0);
        }
        let pages: File = images
            .open_raw(file)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let mut bytes = 0;
        for run in runs {
            let end = run.addr + run.npages * PAGE;
            let Some(c) = task
                .regions
                .iter()
                .find(|c| c.start <= run.addr && end <= c.end)
            else {
                continue;
            };
            mmap::read_into_staged(&pages, c.place(run.addr), end - run.addr, run.offset)?;
            task.written.push((run.addr, end));
            bytes += end - run.addr;
        }
        Ok(bytes)
    }

    /// Drops `pid`'s warm memory (its regions unmapped), saying why.
    fn give_up(&mut self, pid: i32, why: &str) {
        debug!(pid, "no warm memory: {why}");
        let Some(task) = self.tasks.remove(&pid) else {
            return;
        };
        unmap_all(task.regions.iter().map(Region::in_cryo));
    }
}

impl Default for WarmMemory {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for WarmMemory {
    fn drop(&mut self) {
        if !*self.released.get_mut() {
            unmap_all(self.mappings());
        }
    }
}

/// Unmaps the regions `at..at + len` from cryo.
fn unmap_all(mapped: impl IntoIterator<Item = Range<u64>>) {
    for r in mapped {
        let _ = mmap::unmap_staged(r.start, r.end - r.start);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vma(start: u64, end: u64, kind: VmaKind, flags: i32) -> Vma {
        Vma {
            start,
            end,
            kind: kind as i32,
            map_flags: flags as u32,
            ..Default::default()
        }
    }

    #[test]
    fn a_vma_is_handed_over_only_whole_inside_a_region_and_mapped_as_one() {
        let regions = [Region {
            start: 0x10000,
            end: 0x50000,
            at: WARM_BASE,
            map_flags: libc::MAP_PRIVATE as u32,
        }];
        let view = WarmView {
            regions: &regions,
            written: &[],
        };
        let plain = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
        assert_eq!(
            view.place_of(&vma(0x20000, 0x30000, VmaKind::Anon, plain)),
            Some(WARM_BASE + 0x10000)
        );
        assert_eq!(
            view.place_of(&vma(0x40000, 0x60000, VmaKind::Anon, plain)),
            None
        );
        assert_eq!(
            view.place_of(&vma(0x20000, 0x30000, VmaKind::Stack, plain)),
            None
        );
        assert_eq!(
            view.place_of(&vma(
                0x20000,
                0x30000,
                VmaKind::Anon,
                plain | libc::MAP_NORESERVE
            )),
            None
        );
    }
}
