//! The kernel's flags of each VMA (the `VmFlags` line of /proc/PID/smaps): what the maps do
//! not show, such as whether a shared mapping may be made writable, its madvise state and
//! whether it is locked.
//!
//! ```text
//! madvise  dc wf hg nh dd mg sr rr   restored: madvise(advice) per VMA, after filling
//! mlock    lo [lf]                   restored: mlock2(0 | MLOCK_ONFAULT) per VMA
//! mmap     nr                        restored: MAP_NORESERVE in the VMA's mmap flags
//!          dp                        restored: MAP_DROPPABLE in the VMA's mmap flags, its
//!                                    pages dropped (its nr, wf, dd come with it; the
//!                                    process cannot clear them)
//! hugetlb  ht                        restored: MAP_HUGETLB and its page size (hugetlb.rs)
//! mm       lo/lf/mg on a FRESH page   the mm's default flags (mlockall(MCL_FUTURE), KSM
//!          (the dump's scratch page)   merge-any): mlockall restored, merge-any refused
//! refused  sl ss um uw ui            sealed, shadow stack, userfaultfd-registered
//! ```

use std::collections::HashMap;

use nix::unistd::Pid;

use crate::error::Result;

/// VmFlags of every VMA of `pid`, by start address (two-letter codes: "mw", "dc"...).
pub fn read(pid: Pid) -> Result<HashMap<u64, Vec<String>>> {
    Ok(parse(&crate::proc::read(pid, "smaps")?))
}

/// What smaps counts of a VMA's pages that the dump looks into page by page: its
/// transparent huge pages and its lazily freed pages.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// `AnonHugePages`, in kB: anonymous memory mapped by transparent huge pages.
    pub anon_huge_kb: u64,
    /// `LazyFree`, in kB: pages freed with MADV_FREE, not written since, that the kernel
    /// has not dropped yet.
    pub lazy_free_kb: u64,
}

/// The VmFlags codes of each VMA, by start address.
pub type FlagsByStart = HashMap<u64, Vec<String>>;

/// [`read`], and the [`Usage`] of each VMA that has transparent huge pages or lazily freed
/// pages, by start address, from the same smaps text.
pub fn read_with_usage(pid: Pid) -> Result<(FlagsByStart, HashMap<u64, Usage>)> {
    Ok(parse_with_usage(&crate::proc::read(pid, "smaps")?))
}

/// The start address of the VMA an smaps header line names (field lines start with
/// "Name:").
fn header_start(line: &str) -> Option<u64> {
    let (range, _) = line.split_once(' ')?;
    let (start, _) = range.split_once('-')?;
    u64::from_str_radix(start, 16).ok()
}

/// The VmFlags of each VMA of an smaps text, and the [`Usage`] of those with huge or lazily
/// freed pages, by start address: one pass.
fn parse_with_usage(smaps: &str) -> (FlagsByStart, HashMap<u64, Usage>) {
    let mut flags = HashMap::new();
    let mut usage = HashMap::new();
    let mut at: Option<(u64, Usage)> = None;
    let kb = |v: &str| -> u64 {
        v.split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    for line in smaps.lines() {
        if let Some(codes) = line.strip_prefix("VmFlags:") {
            if let Some((start, u)) = at.take() {
                flags.insert(start, codes.split_whitespace().map(String::from).collect());
                if u.anon_huge_kb != 0 || u.lazy_free_kb != 0 {
                    usage.insert(start, u);
                }
            }
        } else if let Some(start) = header_start(line) {
            at = Some((start, Usage::default()));
        } else if let (Some((_, u)), Some((field, value))) = (at.as_mut(), line.split_once(':')) {
            match field {
                "AnonHugePages" => u.anon_huge_kb = kb(value),
                "LazyFree" => u.lazy_free_kb = kb(value),
                _ => {}
            }
        }
    }
    (flags, usage)
}

/// The VmFlags of each VMA of an smaps text, by start address.
fn parse(smaps: &str) -> FlagsByStart {
    parse_with_usage(smaps).0
}

/// The VmFlags a process sets with madvise, each with the advice that sets it again.
pub const ADVISED: [(&str, u32); 8] = [
    ("dc", 10), // MADV_DONTFORK
    ("wf", 18), // MADV_WIPEONFORK
    ("hg", 14), // MADV_HUGEPAGE
    ("nh", 15), // MADV_NOHUGEPAGE
    ("dd", 16), // MADV_DONTDUMP
    ("mg", 12), // MADV_MERGEABLE
    ("sr", 2),  // MADV_SEQUENTIAL
    ("rr", 1),  // MADV_RANDOM
];

/// The VmFlags no call can give a mapping again here, with what they mean (for the refusal).
pub const UNRESTORABLE: [(&str, &str); 5] = [
    ("sl", "sealed (mseal)"),
    ("ss", "a shadow stack"),
    ("um", "registered with a userfaultfd (missing pages)"),
    ("uw", "registered with a userfaultfd (write-protect)"),
    ("ui", "registered with a userfaultfd (minor faults)"),
];

/// `Vma.mlock`: locked (mlock), locked on fault (mlock2 MLOCK_ONFAULT).
pub const LOCKED: u32 = 1;
/// See [`LOCKED`].
pub const LOCKED_ON_FAULT: u32 = 2;

fn has(flags: Option<&Vec<String>>, code: &str) -> bool {
    flags.is_some_and(|f| f.iter().any(|c| c == code))
}

/// The madvise state of a VMA: bit N for advice N (the `Vma.madvise` field).
pub fn advised(flags: Option<&Vec<String>>) -> u64 {
    ADVISED
        .iter()
        .filter(|(code, _)| has(flags, code))
        .fold(0, |bits, (_, advice)| bits | 1 << advice)
}

/// The advice calls that give a VMA the madvise state `bits` again, in [`ADVISED`] order.
pub fn advice_of(bits: u64) -> impl Iterator<Item = u32> {
    ADVISED
        .iter()
        .map(|(_, advice)| *advice)
        .filter(move |advice| bits & 1 << advice != 0)
}

/// The mlock state of a VMA (the `Vma.mlock` field).
pub fn mlock(flags: Option<&Vec<String>>) -> u32 {
    match (has(flags, "lo"), has(flags, "lf")) {
        (false, _) => 0,
        (true, false) => LOCKED,
        (true, true) => LOCKED_ON_FAULT,
    }
}

/// Whether the VMA was mapped with MAP_NORESERVE (VM_NORESERVE: no commit charge).
pub fn no_reserve(flags: Option<&Vec<String>>) -> bool {
    has(flags, "nr")
}

/// The first flag of a VMA that cannot be restored, with its meaning.
pub fn unrestorable(flags: Option<&Vec<String>>) -> Option<(&'static str, &'static str)> {
    UNRESTORABLE
        .iter()
        .find(|(code, _)| has(flags, code))
        .copied()
}

/// The mm's default flags, from those of a fresh private anonymous page mapped in it (the
/// dump's scratch page): the mlockall flags in force (MCL_FUTURE, MCL_ONFAULT), and whether
/// KSM merges every mapping (prctl PR_SET_MEMORY_MERGE).
pub fn mm_defaults(fresh: Option<&Vec<String>>) -> (u32, bool) {
    let mlockall = match mlock(fresh) {
        0 => 0,
        LOCKED => libc::MCL_FUTURE,
        _ => libc::MCL_FUTURE | libc::MCL_ONFAULT,
    };
    (mlockall as u32, has(fresh, "mg"))
}

/// Whether the VMA grows down on a fault below it (VM_GROWSDOWN: mapped with MAP_GROWSDOWN,
/// the main thread's stack or any other).
pub fn grows_down(flags: Option<&Vec<String>>) -> bool {
    has(flags, "gd")
}

/// Whether the VMA was mapped with MAP_DROPPABLE (VM_DROPPABLE: the kernel may free its
/// pages at any time instead of swapping them out).
pub fn droppable(flags: Option<&Vec<String>>) -> bool {
    has(flags, "dp")
}

/// Whether the VMA is hugetlb memory (VM_HUGETLB).
pub fn hugetlb(flags: Option<&Vec<String>>) -> bool {
    has(flags, "ht")
}

/// Whether a shared mapping's file was opened for writing (VM_SHARED, "sh": mmap clears it
/// for a file opened read-only), whether or not it may be made writable.
pub fn shared_writable(flags: Option<&Vec<String>>) -> bool {
    has(flags, "sh")
}

/// Whether the flags say the mapping may be made writable (VM_MAYWRITE).
pub fn may_write(flags: Option<&Vec<String>>) -> bool {
    flags.is_some_and(|f| f.iter().any(|c| c == "mw"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_each_vmas_flags() {
        let smaps = "\
7f00000000-7f00001000 r--s 00000000 08:01 12 /data
Size:                  4 kB
VmFlags: rd sh mr mw me ms
7f00002000-7f00003000 r--s 00000000 08:01 13 /ro
Size:                  4 kB
VmFlags: rd sh mr me ms
";
        let flags = parse(smaps);
        assert!(may_write(flags.get(&0x7f00000000)));
        assert!(!may_write(flags.get(&0x7f00002000)));
        assert!(!may_write(flags.get(&0x1000)));
    }

    #[test]
    fn huge_and_lazily_freed_pages_are_counted_per_vma() {
        let smaps = "\
7f00000000-7f00400000 rw-p 00000000 00:00 0
Size:               4096 kB
Shared_Clean:          4 kB
Private_Clean:        16 kB
LazyFree:             16 kB
AnonHugePages:      2048 kB
VmFlags: rd wr mr mw me ac hg
7f00400000-7f00401000 rw-p 00000000 00:00 0
LazyFree:              0 kB
AnonHugePages:         0 kB
VmFlags: rd wr mr mw me ac
";
        let all = parse_with_usage(smaps).1;
        assert_eq!(all.len(), 1);
        assert_eq!(
            all[&0x7f00000000],
            Usage {
                anon_huge_kb: 2048,
                lazy_free_kb: 16,
            }
        );
    }

    #[test]
    fn madvise_and_mlock_states() {
        let smaps = "\
7f00000000-7f00001000 rw-p 00000000 00:00 0
VmFlags: rd wr mr mw me dc wf lo lf ac
7f00002000-7f00003000 rw-p 00000000 00:00 0
VmFlags: rd wr mr mw me hg ac sl
7f00004000-7f00005000 rw-p 00000000 00:00 0
VmFlags: rd wr mr mw me nr wf dd dp
";
        let flags = parse(smaps);
        let a = flags.get(&0x7f00000000);
        assert_eq!(advised(a), 1 << 10 | 1 << 18);
        assert_eq!(advice_of(advised(a)).collect::<Vec<_>>(), [10, 18]);
        assert_eq!(mlock(a), LOCKED_ON_FAULT);
        assert_eq!(
            mm_defaults(a),
            ((libc::MCL_FUTURE | libc::MCL_ONFAULT) as u32, false)
        );
        assert_eq!(unrestorable(a), None);
        let b = flags.get(&0x7f00002000);
        assert_eq!(advised(b), 1 << 14);
        assert_eq!(mlock(b), 0);
        assert_eq!(unrestorable(b).map(|u| u.0), Some("sl"));
        assert!(!droppable(b));
        let c = flags.get(&0x7f00004000);
        assert!(droppable(c));
        assert!(no_reserve(c));
        assert_eq!(unrestorable(c), None);
    }
}
