//! Semantic checks of decoded records, before anything is created: every number a restore
//! would hand to the kernel or use as an index lies within what this machine allows (page
//! aligned runs inside the pages file, canonical user addresses, fd numbers below the
//! restorer's limit, pids within pid_max, bounded counts and lengths). A record that passed
//! its checksum is still only as trustworthy as whoever wrote the file.
//!
//! Pure functions of the records and of [`Limits`] (which the restore reads from this
//! machine), so the fuzz target `image_checks` runs them too.

use crate::image::{AioRing, MmCore, ProcessEntry, TaskCore, VmaKind};

/// The page size of the images (x86_64).
pub const PAGE: u64 = 4096;

/// The end of the x86_64 user address space (47-bit, 4-level paging): the last user page
/// ends here.
const USER_END: u64 = 0x7fff_ffff_f000;
/// The legacy vsyscall page, the one mapping above [`USER_END`] a process shows.
const VSYSCALL: u64 = 0xffff_ffff_ff60_0000;
/// The longest path the kernel takes (PATH_MAX).
const PATH_MAX: usize = 4096;
/// The longest comm the kernel keeps (TASK_COMM_LEN with its NUL).
const COMM_MAX: usize = 16;

/// What this machine allows, read once per restore.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// /proc/sys/kernel/pid_max of the restorer's PID namespace; for the pids of a PID
    /// namespace the restore makes, the most any namespace may have (each has its own since
    /// Linux 6.14).
    pub pid_max: i64,
    /// The hard RLIMIT_NOFILE of the restorer: the highest fd number it can place, plus one.
    pub nofile: u64,
    /// /proc/sys/vm/max_map_count.
    pub max_map_count: usize,
}

/// Checks the pids of a pstree entry (the ppid, pgid and sid may be 0: outside the dump).
pub fn check_entry(e: &ProcessEntry, limits: &Limits) -> Result<(), String> {
    let pid_ok = |p: i32| p > 0 && i64::from(p) < limits.pid_max;
    if !pid_ok(e.pid) {
        return Err(format!(
            "pid {} is outside 1..{} (pid_max)",
            e.pid, limits.pid_max
        ));
    }
    for (what, p) in [("ppid", e.ppid), ("pgid", e.pgid), ("sid", e.sid)] {
        if p != 0 && !pid_ok(p) {
            return Err(format!(
                "pid {}: {what} {p} is outside 1..{} (pid_max)",
                e.pid, limits.pid_max
            ));
        }
    }
    if e.tids.len() as i64 >= limits.pid_max {
        return Err(format!("pid {}: {} threads", e.pid, e.tids.len()));
    }
    if let Some(t) = e.tids.iter().find(|&&t| !pid_ok(t)) {
        return Err(format!(
            "pid {}: tid {t} is outside 1..{} (pid_max)",
            e.pid, limits.pid_max
        ));
    }
    Ok(())
}

/// Checks the per-process state: fd numbers, thread ids, lengths.
pub fn check_core(core: &TaskCore, limits: &Limits) -> Result<(), String> {
    if core.comm.len() > COMM_MAX {
        return Err(format!("comm is {} bytes long", core.comm.len()));
    }
    for (what, path) in [("cwd", &core.cwd), ("root", &core.root)] {
        if path.len() > PATH_MAX {
            return Err(format!("{what} is longer than PATH_MAX"));
        }
    }
    if core.fds.len() as u64 > limits.nofile {
        return Err(format!(
            "{} fds, more than the restorer's limit ({})",
            core.fds.len(),
            limits.nofile
        ));
    }
    if let Some(e) = core
        .fds
        .iter()
        .find(|e| e.fd < 0 || e.fd as u64 >= limits.nofile)
    {
        return Err(format!(
            "fd {} is outside 0..{} (the restorer's RLIMIT_NOFILE)",
            e.fd, limits.nofile
        ));
    }
    if let Some(t) = core
        .threads
        .iter()
        .find(|t| t.tid <= 0 || i64::from(t.tid) >= limits.pid_max)
    {
        return Err(format!(
            "tid {} is outside 1..{} (pid_max)",
            t.tid, limits.pid_max
        ));
    }
    Ok(())
}

/// Whether `[start, end)` is a page-aligned range of user addresses (or the vsyscall page).
fn user_range(start: u64, end: u64) -> bool {
    start.is_multiple_of(PAGE)
        && end.is_multiple_of(PAGE)
        && start < end
        && (end <= USER_END || (start == VSYSCALL && end == VSYSCALL + PAGE))
}

/// The header of an AIO ring (struct aio_ring in fs/aio.c, the ABI libaio reads too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AioHeader {
    /// The context's slot in the mm's table (the kernel finds the context by it).
    pub id: u32,
    /// The ring's io_event slots.
    pub nr: u32,
    /// The next completion the process reaps (written by the process, or by io_getevents).
    pub head: u32,
    /// Where the kernel writes the next completion.
    pub tail: u32,
    /// [`AIO_RING_MAGIC`].
    pub magic: u32,
    /// `AIO_RING_COMPAT_FEATURES` (1).
    pub compat_features: u32,
    /// `AIO_RING_INCOMPAT_FEATURES` (0).
    pub incompat_features: u32,
    /// The header's size, [`AIO_HEADER_LEN`].
    pub header_length: u32,
}

/// The magic number of an AIO ring's header.
pub const AIO_RING_MAGIC: u32 = 0xa10a_10a1;
/// The size of an AIO ring's header, and of one io_event.
pub const AIO_HEADER_LEN: u32 = 32;
/// The most slots of the mm's context table a ring may claim (the kernel grows the table by
/// four times; no process here holds that many contexts: aio-max-nr is 65536 events).
pub const AIO_MAX_ID: u32 = 1 << 16;

impl AioHeader {
    /// The header at the start of `ring`, if it is long enough.
    pub fn parse(ring: &[u8]) -> Option<Self> {
        let word = |i: usize| {
            let b = ring.get(4 * i..4 * i + 4)?;
            Some(u32::from_ne_bytes(b.try_into().ok()?))
        };
        Some(AioHeader {
            id: word(0)?,
            nr: word(1)?,
            head: word(2)?,
            tail: word(3)?,
            magic: word(4)?,
            compat_features: word(5)?,
            incompat_features: word(6)?,
            header_length: word(7)?,
        })
    }

    /// What is wrong with the header of a ring of `len` bytes, as the kernel made it: `None`
    /// when it is sound (magic, features and header length the kernel's, `nr` the slots
    /// that fit in `len`, head and tail inside the ring).
    pub fn fault(&self, len: u64) -> Option<String> {
        let nr = len.saturating_sub(AIO_HEADER_LEN as u64) / AIO_HEADER_LEN as u64;
        if self.magic != AIO_RING_MAGIC
            || self.compat_features != 1
            || self.incompat_features != 0
            || self.header_length != AIO_HEADER_LEN
        {
            return Some(format!(
                "its header is not the kernel's (magic {:#x}, features {}/{}, header length {})",
                self.magic, self.compat_features, self.incompat_features, self.header_length
            ));
        }
        if u64::from(self.nr) != nr {
            return Some(format!(
                "it says {} events, its {len} bytes hold {nr}",
                self.nr
            ));
        }
        if self.head >= self.nr || self.tail >= self.nr {
            return Some(format!(
                "its head {} or tail {} lies outside its {} events",
                self.head, self.tail, self.nr
            ));
        }
        if self.id >= AIO_MAX_ID {
            return Some(format!("its slot {} is out of range", self.id));
        }
        None
    }
}

/// Checks the AIO rings of an address space: each one a sound ring filling exactly a VMA of
/// kind AIO ring, every such VMA with its ring, slots distinct.
fn check_aio_rings(mm: &MmCore) -> Result<(), String> {
    let ring_vmas = mm.vmas.iter().filter(|v| v.kind == VmaKind::AioRing as i32);
    if ring_vmas.count() != mm.aio_rings.len() {
        return Err(format!(
            "{} AIO rings for a different number of AIO ring VMAs",
            mm.aio_rings.len()
        ));
    }
    let mut ids = Vec::with_capacity(mm.aio_rings.len());
    for AioRing { start, ring } in &mm.aio_rings {
        let len = ring.len() as u64;
        let fits = mm.vmas.iter().any(|v| {
            v.kind == VmaKind::AioRing as i32 && v.start == *start && v.end - v.start == len
        });
        if !fits {
            return Err(format!(
                "AIO ring at {start:#x} ({len} bytes) fills no AIO ring VMA"
            ));
        }
        let header = AioHeader::parse(ring)
            .ok_or_else(|| format!("AIO ring at {start:#x}: shorter than its header"))?;
        if let Some(fault) = header.fault(len) {
            return Err(format!("AIO ring at {start:#x}: {fault}"));
        }
        if ids.contains(&header.id) {
            return Err(format!(
                "AIO ring at {start:#x}: slot {} taken twice",
                header.id
            ));
        }
        ids.push(header.id);
    }
    Ok(())
}

/// Checks the address space: VMAs page aligned and canonical; page runs page
/// aligned, inside a VMA and inside the pages file of `pages_size` bytes; AIO rings sound.
pub fn check_mm(mm: &MmCore, pages_size: u64, limits: &Limits) -> Result<(), String> {
    if mm.vmas.len() > limits.max_map_count {
        return Err(format!(
            "{} VMAs, more than vm.max_map_count ({})",
            mm.vmas.len(),
            limits.max_map_count
        ));
    }
    for (i, v) in mm.vmas.iter().enumerate() {
        if !user_range(v.start, v.end) {
            return Err(format!(
                "VMA {i} [{:#x}, {:#x}) is not a page-aligned range of user addresses",
                v.start, v.end
            ));
        }
        if !v.pgoff.is_multiple_of(PAGE) {
            return Err(format!(
                "VMA {i}: file offset {:#x} is not page aligned",
                v.pgoff
            ));
        }
        if v.name.len() > PATH_MAX {
            return Err(format!("VMA {i}: name longer than PATH_MAX"));
        }
    }
    check_aio_rings(mm)?;
    if mm.pages.len() as u64 > pages_size / PAGE + 1 {
        return Err(format!(
            "{} page runs for a pages file that small",
            mm.pages.len()
        ));
    }
    for (i, run) in mm.pages.iter().enumerate() {
        let len = run.npages.checked_mul(PAGE);
        let end = len.and_then(|l| run.addr.checked_add(l));
        let file_end = len.and_then(|l| run.offset.checked_add(l));
        let (Some(end), Some(file_end)) = (end, file_end) else {
            return Err(format!("page run {i}: its length overflows"));
        };
        if run.npages == 0 || !run.addr.is_multiple_of(PAGE) || !run.offset.is_multiple_of(PAGE) {
            return Err(format!(
                "page run {i} at {:#x}: empty, or its address or file offset is not page aligned",
                run.addr
            ));
        }
        let inside = mm.vmas.iter().any(|v| v.start <= run.addr && end <= v.end);
        if !inside || file_end > pages_size {
            return Err(format!(
                "page run {i} at {:#x} lies outside its VMA or the pages file",
                run.addr
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::{PageRun, Vma};

    fn limits() -> Limits {
        Limits {
            pid_max: 4_194_304,
            nofile: 1024,
            max_map_count: 65530,
        }
    }

    fn mm(vmas: Vec<(u64, u64)>, runs: Vec<(u64, u64, u64)>) -> MmCore {
        MmCore {
            vmas: vmas
                .into_iter()
                .map(|(start, end)| Vma {
                    start,
                    end,
                    ..Default::default()
                })
                .collect(),
            pages: runs
                .into_iter()
                .map(|(addr, npages, offset)| PageRun {
                    addr,
                    npages,
                    offset,
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_sound_address_space_passes() {
        let m = mm(
            vec![(0x1000, 0x3000), (VSYSCALL, VSYSCALL + PAGE)],
            vec![(0x1000, 2, 0)],
        );
        check_mm(&m, 2 * PAGE, &limits()).unwrap();
    }

    #[test]
    fn each_bad_address_space_is_refused() {
        let l = limits();
        let cases = [
            mm(vec![(0x1000, 0x3000)], vec![(0x1000, 1, 100)]),
            mm(vec![(0x1001, 0x3000)], vec![]),
            mm(vec![(0x8000_0000_0000, 0x8000_0000_1000)], vec![]),
            mm(vec![(0x3000, 0x1000)], vec![]),
            mm(vec![(0x1000, 0x3000)], vec![(0x1000, u64::MAX / 2, 0)]),
            mm(vec![(0x1000, 0x3000)], vec![(0x1000, 0, 0)]),
            mm(vec![(0x1000, 0x3000)], vec![(0x1000, 2, PAGE)]),
        ];
        for (i, m) in cases.iter().enumerate() {
            assert!(check_mm(m, 2 * PAGE, &l).is_err(), "case {i} accepted");
        }
    }

    #[test]
    fn pids_and_fds_beyond_the_limits_are_refused() {
        let l = limits();
        let entry = |pid, tids: Vec<i32>| ProcessEntry {
            pid,
            tids,
            ..Default::default()
        };
        check_entry(&entry(100, vec![100]), &l).unwrap();
        assert!(check_entry(&entry(0, vec![]), &l).is_err());
        assert!(check_entry(&entry(5_000_000, vec![]), &l).is_err());
        assert!(check_entry(&entry(100, vec![100, -3]), &l).is_err());
        let core = |fd| TaskCore {
            fds: vec![crate::image::FdEntry {
                fd,
                file_id: 1,
                cloexec: false,
            }],
            ..Default::default()
        };
        check_core(&core(3), &l).unwrap();
        assert!(check_core(&core(1024), &l).is_err());
        assert!(check_core(&core(-1), &l).is_err());
    }

    /// A ring as the kernel makes it: `pages` pages, slot `id`, head and tail.
    fn ring(pages: u64, id: u32, head: u32, tail: u32) -> Vec<u8> {
        let nr = ((pages * PAGE - 32) / 32) as u32;
        let mut r = vec![0u8; (pages * PAGE) as usize];
        for (i, w) in [id, nr, head, tail, AIO_RING_MAGIC, 1, 0, 32]
            .iter()
            .enumerate()
        {
            r[4 * i..4 * i + 4].copy_from_slice(&w.to_ne_bytes());
        }
        r
    }

    #[test]
    fn aio_rings_must_be_sound_and_fill_their_vma() {
        let g = 1 << 30;
        let with = |rings: Vec<(u64, Vec<u8>)>, vmas: Vec<(u64, u64)>| MmCore {
            vmas: vmas
                .into_iter()
                .map(|(start, end)| Vma {
                    start,
                    end,
                    kind: VmaKind::AioRing as i32,
                    ..Default::default()
                })
                .collect(),
            aio_rings: rings
                .into_iter()
                .map(|(start, ring)| AioRing { start, ring })
                .collect(),
            ..Default::default()
        };
        let l = limits();
        let good = with(
            vec![(g, ring(1, 0, 3, 5)), (2 * g, ring(2, 1, 0, 0))],
            vec![(g, g + PAGE), (2 * g, 2 * g + 2 * PAGE)],
        );
        check_mm(&good, 0, &l).unwrap();
        let mut bad_magic = ring(1, 0, 0, 0);
        bad_magic[16] ^= 1;
        let cases = [
            // A ring VMA without its ring, a ring without its VMA.
            with(vec![], vec![(g, g + PAGE)]),
            with(vec![(g, ring(1, 0, 0, 0))], vec![]),
            // A ring of another size than its VMA.
            with(vec![(g, ring(1, 0, 0, 0))], vec![(g, g + 2 * PAGE)]),
            with(vec![(g, bad_magic)], vec![(g, g + PAGE)]),
            with(vec![(g, ring(1, 0, 127, 0))], vec![(g, g + PAGE)]),
            with(vec![(g, ring(1, AIO_MAX_ID, 0, 0))], vec![(g, g + PAGE)]),
            with(
                vec![(g, ring(1, 2, 0, 0)), (2 * g, ring(1, 2, 0, 0))],
                vec![(g, g + PAGE), (2 * g, 2 * g + PAGE)],
            ),
        ];
        for (i, m) in cases.iter().enumerate() {
            assert!(check_mm(m, 0, &l).is_err(), "case {i} accepted");
        }
    }
}
