//! Guard regions (madvise MADV_GUARD_INSTALL, Linux 6.13): pages of a VMA that fault with
//! SIGSEGV on any access, without a VMA of their own. The dump finds them with PAGEMAP_SCAN
//! (PAGE_IS_GUARD, Linux 6.15) and keeps no data for them (reading one fails: pagemap shows it
//! swapped); the restore installs them again once the pages are in, before the mlocks (the
//! kernel installs no guard in a locked VMA).

use std::fs::File;
use std::os::fd::AsFd;

use cryo_proto::image::{GuardRegion, Vma};
use nix::unistd::Pid;

use crate::error::{Error, Result};
use crate::proc;
use crate::remote::{BatchCall, BatchSite, Remote};
use crate::sys::pagemap::{self, PageRegion, Scan};

/// `MADV_GUARD_INSTALL`.
const MADV_GUARD_INSTALL: u64 = 102;
/// Regions read per PAGEMAP_SCAN call.
const REGIONS_PER_CALL: usize = 512;

/// The guard regions of frozen task `pid` inside `vmas` (its VMAs, in address order). A
/// kernel that cannot report them (before 6.15) has none to report here: its guard pages
/// show as swapped pages, which the dump then fails to read, naming them.
pub fn find(pid: Pid, vmas: &[Vma]) -> Result<Vec<GuardRegion>> {
    let (Some(first), Some(last)) = (vmas.first(), vmas.last()) else {
        return Ok(Vec::new());
    };
    if !pagemap::knows_guard() {
        return Ok(Vec::new());
    }
    let pagemap = File::open(proc::dir(pid).join("pagemap"))
        .map_err(|e| Error::sys(pid, "open pagemap", e))?;
    let mut out = vec![PageRegion::default(); REGIONS_PER_CALL];
    let scan = Scan {
        start: first.start,
        end: last.end,
        category_mask: pagemap::PAGE_IS_GUARD,
        return_mask: pagemap::PAGE_IS_GUARD,
        ..Scan::default()
    };
    let ranges = pagemap::matching_ranges(pagemap.as_fd(), scan, &mut out).map_err(|e| {
        Error::sys(
            pid,
            format!("PAGEMAP_SCAN guard pages from {:#x}", first.start),
            e,
        )
    })?;
    Ok(ranges
        .into_iter()
        .map(|r| GuardRegion {
            start: r.start,
            end: r.end,
        })
        .collect())
}

/// Installs the guard regions `guards` again in the restore child, in as few stops as its
/// batch table allows.
pub fn install(
    child: Pid,
    remote: &Remote,
    batch: BatchSite,
    guards: &[GuardRegion],
) -> Result<()> {
    let calls: Vec<BatchCall> = guards
        .iter()
        .map(|g| {
            (
                libc::SYS_madvise,
                [g.start, g.end - g.start, MADV_GUARD_INSTALL, 0, 0, 0],
            )
        })
        .collect();
    super::restore::run_batch(child, remote, batch, &calls, |i| {
        format!(
            "install the guard pages {:#x}-{:#x} (MADV_GUARD_INSTALL)",
            guards[i].start, guards[i].end
        )
    })?;
    Ok(())
}
