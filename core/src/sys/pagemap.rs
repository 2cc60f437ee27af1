//! PAGEMAP_SCAN (Linux 6.7): the pages of a range that match categories, found in one ioctl
//! on /proc/PID/pagemap instead of reading one 8-byte entry per page.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use super::check;

/// `PAGEMAP_SCAN`: `_IOWR('f', 16, struct pm_scan_arg)`.
const PAGEMAP_SCAN: libc::c_ulong = 0xC060_6610;

/// `PM_SCAN_WP_MATCHING`: write-protect the matching pages as they are reported.
pub const PM_SCAN_WP_MATCHING: u64 = 1 << 0;
/// `PM_SCAN_CHECK_WPASYNC`: fail unless the range is registered with uffd-wp async.
pub const PM_SCAN_CHECK_WPASYNC: u64 = 1 << 1;
/// `PAGE_IS_WPALLOWED`: in a VMA registered with uffd-wp async (its writes are tracked).
pub const PAGE_IS_WPALLOWED: u64 = 1 << 0;
/// `PAGE_IS_WRITTEN`: written since write-protected.
pub const PAGE_IS_WRITTEN: u64 = 1 << 1;
/// `PAGE_IS_FILE`: a page of a file (page cache), not an anonymous one.
pub const PAGE_IS_FILE: u64 = 1 << 2;
/// `PAGE_IS_PRESENT`: in RAM.
pub const PAGE_IS_PRESENT: u64 = 1 << 3;
/// `PAGE_IS_SWAPPED`: in swap.
pub const PAGE_IS_SWAPPED: u64 = 1 << 4;
/// `PAGE_IS_PFNZERO`: the shared zero page.
pub const PAGE_IS_PFNZERO: u64 = 1 << 5;
/// `PAGE_IS_HUGE`: mapped by a huge page (a PMD-mapped transparent huge page, or hugetlb).
pub const PAGE_IS_HUGE: u64 = 1 << 6;
/// `PAGE_IS_GUARD` (Linux 6.15): a guard page (madvise MADV_GUARD_INSTALL), which faults
/// with SIGSEGV; the kernel also counts it as swapped.
pub const PAGE_IS_GUARD: u64 = 1 << 8;

/// `struct page_region`, one answer of PAGEMAP_SCAN.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct PageRegion {
    /// First address of the region.
    pub start: u64,
    /// End of the region (exclusive).
    pub end: u64,
    /// `PAGE_IS_*` bits of the region (masked by `return_mask`).
    pub categories: u64,
}

/// Arguments of one PAGEMAP_SCAN call.
#[derive(Debug, Default, Clone, Copy)]
pub struct Scan {
    /// `PM_SCAN_*` flags.
    pub flags: u64,
    /// First address.
    pub start: u64,
    /// End address (exclusive).
    pub end: u64,
    /// Categories a page must have (after `category_inverted`).
    pub category_mask: u64,
    /// Categories inverted before matching (a bit here and in `category_mask`: must NOT have).
    pub category_inverted: u64,
    /// Categories of which a page must have at least one (0: no such condition).
    pub category_anyof_mask: u64,
    /// Categories reported back.
    pub return_mask: u64,
}

/// `struct pm_scan_arg`.
#[repr(C)]
struct PmScanArg {
    size: u64,
    flags: u64,
    start: u64,
    end: u64,
    walk_end: u64,
    vec: u64,
    vec_len: u64,
    max_pages: u64,
    category_inverted: u64,
    category_mask: u64,
    category_anyof_mask: u64,
    return_mask: u64,
}

/// Whether this kernel's PAGEMAP_SCAN knows [`PAGE_IS_GUARD`] (it refuses categories it does
/// not know): asked once, of cryo's own pagemap, over an empty range.
pub fn knows_guard() -> bool {
    static KNOWS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *KNOWS.get_or_init(|| {
        let Ok(pagemap) = std::fs::File::open("/proc/self/pagemap") else {
            return false;
        };
        let probe = Scan {
            category_mask: PAGE_IS_GUARD,
            return_mask: PAGE_IS_GUARD,
            ..Scan::default()
        };
        scan(pagemap.as_fd(), probe, &mut [PageRegion::default()]).is_ok()
    })
}

/// `ioctl(pagemap, PAGEMAP_SCAN)`: fills `out` and returns the number of regions.
pub fn scan(pagemap: BorrowedFd<'_>, scan: Scan, out: &mut [PageRegion]) -> io::Result<usize> {
    scan_part(pagemap, scan, out).map(|(n, _)| n)
}

/// `ioctl(pagemap, PAGEMAP_SCAN)` once: fills `out`, returns the number of regions and where
/// the walk stopped (`scan.end` when done; earlier when `out` filled up: go on from there).
/// With `PM_SCAN_WP_MATCHING`, only the pages reported were write-protected.
fn scan_part(
    pagemap: BorrowedFd<'_>,
    scan: Scan,
    out: &mut [PageRegion],
) -> io::Result<(usize, u64)> {
    let mut arg = PmScanArg {
        size: std::mem::size_of::<PmScanArg>() as u64,
        flags: scan.flags,
        start: scan.start,
        end: scan.end,
        walk_end: 0,
        vec: out.as_mut_ptr() as u64,
        vec_len: out.len() as u64,
        max_pages: 0,
        category_inverted: scan.category_inverted,
        category_mask: scan.category_mask,
        category_anyof_mask: scan.category_anyof_mask,
        return_mask: scan.return_mask,
    };
    // SAFETY: `arg` is a live pm_scan_arg whose `vec` points to `out`, `vec_len` entries long.
    let ret = unsafe {
        libc::ioctl(
            pagemap.as_raw_fd(),
            PAGEMAP_SCAN,
            &mut arg as *mut PmScanArg,
        )
    };
    let n = check(libc::c_long::from(ret))? as usize;
    Ok((n, arg.walk_end))
}

/// Walks `scan` from `scan.start` to `scan.end`, as many PAGEMAP_SCAN calls as it takes
/// (each resumed where the last one's walk ended), handing `each` the regions of every call
/// in address order; `out` holds them.
pub fn scan_all(
    pagemap: BorrowedFd<'_>,
    scan: Scan,
    out: &mut [PageRegion],
    mut each: impl FnMut(&[PageRegion]),
) -> io::Result<()> {
    let mut at = scan.start;
    while at < scan.end {
        let (n, walk_end) = scan_part(pagemap, Scan { start: at, ..scan }, out)?;
        each(&out[..n]);
        if walk_end <= at {
            break;
        }
        at = walk_end;
    }
    Ok(())
}

/// The address ranges `scan` matches (from `scan.start` to `scan.end`), the regions of
/// every PAGEMAP_SCAN call it takes joined where they touch, in address order; `out` holds
/// each call's regions.
pub fn matching_ranges(
    pagemap: BorrowedFd<'_>,
    scan: Scan,
    out: &mut [PageRegion],
) -> io::Result<Vec<std::ops::Range<u64>>> {
    let mut ranges: Vec<std::ops::Range<u64>> = Vec::new();
    scan_all(pagemap, scan, out, |regions| {
        for r in regions {
            match ranges.last_mut() {
                Some(last) if last.end == r.start => last.end = r.end,
                _ => ranges.push(r.start..r.end),
            }
        }
    })?;
    Ok(ranges)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This kernel (6.18) reports guard pages.
    #[test]
    fn this_kernel_knows_guard_pages() {
        assert!(knows_guard());
    }
}

/// The page frame numbers of the kernel's zero pages: a private anonymous page that was only
/// read maps the shared zero page (or, where transparent huge pages are on, 512 pages of the
/// huge zero page), which holds no data of the process's own.
#[derive(Debug, Clone, Copy, Default)]
pub struct ZeroPages {
    /// The zero page's frame (0: not known).
    small: u64,
    /// The first frame of the huge zero page, and how many it has (0: not known).
    huge: (u64, u64),
}

impl ZeroPages {
    /// Whether frame `pfn` is a zero page's (never for 0: pagemap shows 0 to a reader without
    /// CAP_SYS_ADMIN, and cryo then knows none).
    pub fn holds(&self, pfn: u64) -> bool {
        pfn != 0 && (pfn == self.small || (self.huge.0..self.huge.0 + self.huge.1).contains(&pfn))
    }
}

/// The frame number field of a pagemap entry (bits 0-54).
pub const PM_PFN_MASK: u64 = (1 << 55) - 1;

/// The zero pages of this kernel, found once by reading pages of cryo's own and asking
/// /proc/self/pagemap where they are.
pub fn zero_pages() -> ZeroPages {
    static FOUND: std::sync::OnceLock<ZeroPages> = std::sync::OnceLock::new();
    *FOUND.get_or_init(|| find_zero_pages().unwrap_or_default())
}

fn find_zero_pages() -> io::Result<ZeroPages> {
    use std::os::unix::fs::FileExt;
    const PAGE: usize = 4096;
    const HUGE: usize = 2 << 20;
    let pagemap = std::fs::File::open("/proc/self/pagemap")?;
    let entry = |addr: usize| -> io::Result<u64> {
        let mut bytes = [0u8; 8];
        pagemap.read_exact_at(&mut bytes, (addr / PAGE * 8) as u64)?;
        let pm = u64::from_le_bytes(bytes);
        Ok(if pm & (1 << 63) != 0 {
            pm & PM_PFN_MASK
        } else {
            0
        })
    };
    // SAFETY: new private anonymous mappings of our own, read (never written) within their
    // lengths, their entries looked up, then unmapped; nothing else knows their addresses.
    let map = |len: usize| unsafe {
        let at = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if at == libc::MAP_FAILED {
            Err(io::Error::last_os_error())
        } else {
            Ok(at)
        }
    };
    // SAFETY: as above: `at` and `len` are the mapping just made.
    let unmap = |at: *mut libc::c_void, len: usize| unsafe { libc::munmap(at, len) };
    let at = map(PAGE)?;
    // SAFETY: as above; a page of our own mapping, read.
    let small = unsafe {
        libc::madvise(at, PAGE, libc::MADV_NOHUGEPAGE);
        std::ptr::read_volatile(at as *const u8);
        let small = entry(at as usize);
        unmap(at, PAGE);
        small?
    };
    let at = map(2 * HUGE)?;
    let aligned = (at as usize + HUGE - 1) & !(HUGE - 1);
    // SAFETY: as above; the aligned 2 MiB lie inside the 4 MiB mapping.
    let huge = unsafe {
        libc::madvise(aligned as *mut libc::c_void, HUGE, libc::MADV_HUGEPAGE);
        std::ptr::read_volatile(aligned as *const u8);
        let found = entry(aligned).and_then(|first| Ok((first, entry(aligned + PAGE)?)));
        unmap(at, 2 * HUGE);
        found?
    };
    // The huge zero page: consecutive frames under the aligned range, not the small one's.
    let huge = match huge {
        (first, second) if first != 0 && first != small && second == first + 1 => {
            (first, (HUGE / PAGE) as u64)
        }
        _ => (0, 0),
    };
    Ok(ZeroPages { small, huge })
}
